//! Failure modes: Weibull lifetimes in component runtime hours, and the precursor signal
//! each mode shows before it fails.
//!
//! # The failure model
//! Every failure mode a model's catalog names (an alarm with `counts_as_failure = true`)
//! is one component of the simulated device. The component's lifetime, in runtime hours
//! of that component, is drawn from a two-parameter Weibull distribution by inverse CDF:
//! `T = η · (−ln U)^(1/β)`. A component that has already run `a` hours (an original part
//! of a device that enters the simulation used) draws from the conditional distribution
//! `T | T > a`: `T = η · ((a/η)^β − ln U)^(1/β)`. A repaired component starts at age 0.
//!
//! | mode              |   β | η (runtime h) | precursor (shift at failure)              | lead (days) |
//! |-------------------|----:|--------------:|-------------------------------------------|------------:|
//! | `compressor`      | 2.5 |        20 000 | `temperature_c` +22 °C                    |          10 |
//! | `sieve_bed`       | 3.0 |        15 000 | `o2_purity_pct` −14 %                     |          14 |
//! | `cooling`         | 1.8 |        30 000 | `temperature_c` +30 °C                    |           5 |
//! | `rotary_valve`    | 2.0 |        25 000 | `outlet_pressure_kpa` −20, `o2_purity_pct` −4 |       7 |
//! | `blower`          | 2.2 |        18 000 | `leak_lpm` +35, `peak_pressure_cmh2o` −7  |          10 |
//! | `battery`         | 1.5 |        12 000 | `battery_pct` −90 %                       |           7 |
//! | `pressure_sensor` | 1.0 |        40 000 | `peak_pressure_cmh2o` +12 (sensor drift)  |           3 |
//! | any other mode    | 1.2 |        30 000 | none                                      |           – |
//!
//! β > 1 is wear-out, β = 1 a constant hazard (random failures of electronics).
//!
//! A failure of `compressor`, `cooling`, `rotary_valve`, `blower` or an unknown mode
//! takes the device out of therapy until the repair (flow, tidal volume, rate, pressure
//! and leak read 0); `sieve_bed` (low purity), `battery` and `pressure_sensor` do not.
//!
//! # Precursors
//! A precursor starts `lead` days of operation before the failure (the lead in runtime
//! hours is `lead × 24 × the device's daily usage fraction`) and grows as `s^1.5`, where
//! `s` goes from 0 at the start of the window to 1 at the failure; a field shows
//! `baseline + shift · s^1.5` plus reading noise. A field the device kind does not report
//! carries no precursor.
//!
//! Not every life shows its precursor (see `device.rs`): 15 % of lives fail without one,
//! 15 % with a weak one (a third of the shift), and the lead varies by × 0.6–1.4. False
//! precursors (transient excursions of the same fields, 1–4 days, 30–80 % of the shift)
//! come and go without a failure, and precursors above 30 % raise the model's warning
//! alarms. The ground truth's `precursor_strength` says which kind a failure had.

use std::f64::consts::LN_2;

use serde::Serialize;

/// One failure mode's lifetime distribution and precursor.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct FailureModeSpec {
    /// The catalog's `failure_mode` text (`"other"` for the fallback).
    pub mode: &'static str,
    /// Weibull shape β.
    pub beta: f64,
    /// Weibull scale η in runtime hours of the component.
    pub eta_hours: f64,
    /// Days of operation before the failure at which the precursor starts.
    pub precursor_days: f64,
    /// The fields that drift, and by how much at the moment of failure.
    pub precursor: &'static [Drift],
    /// Whether the failure takes the device out of therapy (flow, ventilation read 0
    /// until the repair).
    pub stops_therapy: bool,
}

/// A field's drift during a precursor: `shift` is its deviation at the failure.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Drift {
    pub field: &'static str,
    pub shift: f64,
}

/// The failure-mode table (see the module documentation).
pub const FAILURE_MODES: &[FailureModeSpec] = &[
    FailureModeSpec {
        mode: "compressor",
        beta: 2.5,
        eta_hours: 20_000.0,
        stops_therapy: true,
        precursor_days: 10.0,
        precursor: &[Drift {
            field: "temperature_c",
            shift: 22.0,
        }],
    },
    FailureModeSpec {
        mode: "sieve_bed",
        beta: 3.0,
        eta_hours: 15_000.0,
        stops_therapy: false,
        precursor_days: 14.0,
        precursor: &[Drift {
            field: "o2_purity_pct",
            shift: -14.0,
        }],
    },
    FailureModeSpec {
        mode: "cooling",
        beta: 1.8,
        eta_hours: 30_000.0,
        stops_therapy: true,
        precursor_days: 5.0,
        precursor: &[Drift {
            field: "temperature_c",
            shift: 30.0,
        }],
    },
    FailureModeSpec {
        mode: "rotary_valve",
        beta: 2.0,
        eta_hours: 25_000.0,
        stops_therapy: true,
        precursor_days: 7.0,
        precursor: &[
            Drift {
                field: "outlet_pressure_kpa",
                shift: -20.0,
            },
            Drift {
                field: "o2_purity_pct",
                shift: -4.0,
            },
        ],
    },
    FailureModeSpec {
        mode: "blower",
        beta: 2.2,
        eta_hours: 18_000.0,
        stops_therapy: true,
        precursor_days: 10.0,
        precursor: &[
            Drift {
                field: "leak_lpm",
                shift: 35.0,
            },
            Drift {
                field: "peak_pressure_cmh2o",
                shift: -7.0,
            },
        ],
    },
    FailureModeSpec {
        mode: "battery",
        beta: 1.5,
        eta_hours: 12_000.0,
        stops_therapy: false,
        precursor_days: 7.0,
        precursor: &[Drift {
            field: "battery_pct",
            shift: -90.0,
        }],
    },
    FailureModeSpec {
        mode: "pressure_sensor",
        beta: 1.0,
        eta_hours: 40_000.0,
        stops_therapy: false,
        precursor_days: 3.0,
        precursor: &[Drift {
            field: "peak_pressure_cmh2o",
            shift: 12.0,
        }],
    },
];

/// The spec used for a failure mode the table does not name.
pub const OTHER_MODE: FailureModeSpec = FailureModeSpec {
    mode: "other",
    beta: 1.2,
    eta_hours: 30_000.0,
    stops_therapy: true,
    precursor_days: 0.0,
    precursor: &[],
};

/// The spec of a catalog failure mode (the fallback [`OTHER_MODE`] when the table does
/// not name it).
pub fn failure_mode_spec(mode: &str) -> &'static FailureModeSpec {
    FAILURE_MODES
        .iter()
        .find(|m| m.mode == mode)
        .unwrap_or(&OTHER_MODE)
}

impl FailureModeSpec {
    pub fn weibull(&self) -> Weibull {
        Weibull {
            beta: self.beta,
            eta: self.eta_hours,
        }
    }

    /// How much a precursor shifts `field` at progress `s` (0 at the window's start, 1 at
    /// the failure).
    pub fn shift(&self, field: &str, s: f64) -> f64 {
        let s = s.clamp(0.0, 1.0);
        self.precursor
            .iter()
            .filter(|d| d.field == field)
            .map(|d| d.shift * s.powf(1.5))
            .sum()
    }
}

/// A two-parameter Weibull distribution (shape β, scale η).
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Weibull {
    pub beta: f64,
    pub eta: f64,
}

impl Weibull {
    /// The `p` quantile: `η · (−ln(1 − p))^(1/β)`.
    pub fn quantile(&self, p: f64) -> f64 {
        self.eta * (-(1.0 - p).ln()).powf(1.0 / self.beta)
    }

    /// The median: `η · (ln 2)^(1/β)`.
    pub fn median(&self) -> f64 {
        self.eta * LN_2.powf(1.0 / self.beta)
    }

    /// Survival function `S(t) = exp(−(t/η)^β)`.
    pub fn survival(&self, t: f64) -> f64 {
        (-(t.max(0.0) / self.eta).powf(self.beta)).exp()
    }

    /// A lifetime for a component that has survived to `age`, by inverse CDF of
    /// `T | T > age` with `u` uniform in (0, 1]: `η · ((age/η)^β − ln u)^(1/β)`.
    /// With `age = 0` this is the plain inverse CDF `η · (−ln u)^(1/β)`.
    pub fn lifetime_given_age(&self, age: f64, u: f64) -> f64 {
        let u = u.clamp(f64::MIN_POSITIVE, 1.0);
        let age = age.max(0.0);
        self.eta * ((age / self.eta).powf(self.beta) - u.ln()).powf(1.0 / self.beta)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    fn draws(w: Weibull, age: f64, n: usize) -> Vec<f64> {
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        let mut v: Vec<f64> = (0..n)
            .map(|_| w.lifetime_given_age(age, 1.0 - rng.random::<f64>()))
            .collect();
        v.sort_by(f64::total_cmp);
        v
    }

    #[test]
    fn inverse_cdf_draws_match_the_quantiles() {
        for spec in FAILURE_MODES {
            let w = spec.weibull();
            let v = draws(w, 0.0, 100_000);
            for p in [0.1, 0.5, 0.9] {
                let empirical = v[(p * v.len() as f64) as usize];
                let expected = w.quantile(p);
                assert!(
                    (empirical / expected - 1.0).abs() < 0.02,
                    "{}: q{p} = {empirical}, expected {expected}",
                    spec.mode
                );
            }
            assert!((w.median() / w.quantile(0.5) - 1.0).abs() < 1e-12);
        }
    }

    #[test]
    fn a_used_component_lives_past_its_age_with_the_conditional_distribution() {
        let w = Weibull {
            beta: 2.5,
            eta: 20_000.0,
        };
        let age = 15_000.0;
        let v = draws(w, age, 50_000);
        assert!(v.iter().all(|&t| t >= age));
        // median of T | T > a: S(t) = S(a) / 2
        let target = w.survival(age) / 2.0;
        let median = v[v.len() / 2];
        assert!(
            (w.survival(median) / target - 1.0).abs() < 0.03,
            "median {median}"
        );
    }

    #[test]
    fn unknown_modes_fall_back_and_precursors_grow_to_their_shift() {
        assert_eq!(failure_mode_spec("flux_capacitor").mode, "other");
        let c = failure_mode_spec("compressor");
        assert_eq!(c.shift("temperature_c", 0.0), 0.0);
        assert_eq!(c.shift("temperature_c", 1.0), 22.0);
        assert_eq!(c.shift("temperature_c", 7.0), 22.0);
        assert_eq!(c.shift("o2_purity_pct", 1.0), 0.0);
    }
}
