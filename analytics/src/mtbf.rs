//! MTBF = operating hours / failures, with chi-square confidence bounds, and the failure
//! rate per 1000 device-hours with the matching bounds.
//!
//! With `T` operating hours, `r` failures and confidence `c` (`α = 1 − c`), and
//! `χ²(p; ν)` the chi-square quantile (inverse CDF) at probability `p` with `ν` degrees of
//! freedom:
//!
//! | bound | formula | ν (time-terminated) | ν (failure-terminated) |
//! | --- | --- | --- | --- |
//! | one-sided lower | `2T / χ²(c; ν)` | `2r + 2` | `2r` |
//! | one-sided upper | `2T / χ²(1 − c; ν)` | `2r` | `2r` |
//! | two-sided lower | `2T / χ²(1 − α/2; ν)` | `2r + 2` | `2r` |
//! | two-sided upper | `2T / χ²(α/2; ν)` | `2r` | `2r` |
//!
//! Zero failures: no point estimate and no upper bound (both infinite); the lower bound is
//! the one-sided `2T / χ²(c; 2)` whatever the sides and termination asked for (a
//! failure-terminated test cannot end with zero failures), and the method string says so.
//! The rate per 1000 h is `1000 r / T`; its lower bound is `1000 / MTBF upper` and its upper
//! bound `1000 / MTBF lower`.

use serde::{Deserialize, Serialize};
use statrs::distribution::{ChiSquared, ContinuousCDF};

use crate::{AnalyticsError, check_confidence};

/// Which confidence bounds to compute.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Sides {
    /// Lower and upper bound, `α/2` in each tail.
    #[default]
    TwoSided,
    /// One-sided lower bound only (`α` in the lower tail).
    Lower,
    /// One-sided upper bound only (`α` in the upper tail).
    Upper,
}

impl Sides {
    /// Whether a lower bound is wanted.
    pub fn lower(self) -> bool {
        matches!(self, Sides::TwoSided | Sides::Lower)
    }
    /// Whether an upper bound is wanted.
    pub fn upper(self) -> bool {
        matches!(self, Sides::TwoSided | Sides::Upper)
    }
    /// `two-sided`, `one-sided lower`, `one-sided upper`.
    pub fn label(self) -> &'static str {
        match self {
            Sides::TwoSided => "two-sided",
            Sides::Lower => "one-sided lower",
            Sides::Upper => "one-sided upper",
        }
    }
}

/// How the observation ended, which sets the degrees of freedom of the lower MTBF bound.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Termination {
    /// The period ended at a fixed time (field data): lower bound with `2r + 2` dof.
    #[default]
    Time,
    /// Observation stopped at the r-th failure: lower bound with `2r` dof.
    Failure,
}

impl Termination {
    /// `time-terminated` or `failure-terminated`.
    pub fn label(self) -> &'static str {
        match self {
            Termination::Time => "time-terminated",
            Termination::Failure => "failure-terminated",
        }
    }
}

/// MTBF and failure rate of one population with their bounds. Every undefined figure is
/// `None`, never NaN or infinite.
#[derive(Clone, Debug, PartialEq, Serialize, utoipa::ToSchema)]
pub struct MtbfEstimate {
    /// Operating hours `T`.
    pub operating_hours: f64,
    /// Failures `r`.
    pub failures: u64,
    /// `T / r`; `None` with zero failures or zero hours.
    pub mtbf_hours: Option<f64>,
    /// Lower confidence bound on MTBF.
    pub mtbf_lower: Option<f64>,
    /// Upper confidence bound on MTBF.
    pub mtbf_upper: Option<f64>,
    /// `1000 r / T`; `None` with zero hours.
    pub rate_per_1000h: Option<f64>,
    /// Lower bound on the rate (`1000 / mtbf_upper`).
    pub rate_lower: Option<f64>,
    /// Upper bound on the rate (`1000 / mtbf_lower`).
    pub rate_upper: Option<f64>,
    /// Confidence level `c`.
    pub confidence: f64,
    /// How the bounds were computed, e.g. `chi-square, time-terminated, two-sided 90 %`.
    pub method: String,
}

/// A percentage for method strings: 0.9 → `90`, 0.995 → `99.5`.
pub(crate) fn percent(confidence: f64) -> String {
    let p = (confidence * 100.0 * 1e6).round() / 1e6;
    format!("{p}")
}

fn chi2_quantile(p: f64, dof: f64) -> Result<f64, AnalyticsError> {
    let dist = ChiSquared::new(dof)
        .map_err(|e| AnalyticsError::InvalidInput(format!("chi-square with {dof} dof: {e}")))?;
    Ok(dist.inverse_cdf(p))
}

/// `2T / χ²(p; ν)`, `None` when the quotient is not a finite positive number.
fn bound(hours: f64, p: f64, dof: f64) -> Result<Option<f64>, AnalyticsError> {
    let q = chi2_quantile(p, dof)?;
    let b = 2.0 * hours / q;
    Ok((b.is_finite() && b > 0.0).then_some(b))
}

fn finite(x: f64) -> Option<f64> {
    x.is_finite().then_some(x)
}

/// MTBF of `failures` over `operating_hours` with chi-square bounds at `confidence`
/// (strictly between 0 and 1). Errors on an invalid confidence or on hours that are
/// negative, NaN or infinite.
pub fn mtbf(
    operating_hours: f64,
    failures: u64,
    confidence: f64,
    sides: Sides,
    termination: Termination,
) -> Result<MtbfEstimate, AnalyticsError> {
    check_confidence(confidence)?;
    if !operating_hours.is_finite() || operating_hours < 0.0 {
        return Err(AnalyticsError::InvalidInput(format!(
            "operating hours must be finite and non-negative, got {operating_hours}"
        )));
    }
    let pct = percent(confidence);
    let mut est = MtbfEstimate {
        operating_hours,
        failures,
        mtbf_hours: None,
        mtbf_lower: None,
        mtbf_upper: None,
        rate_per_1000h: None,
        rate_lower: None,
        rate_upper: None,
        confidence,
        method: String::new(),
    };
    if operating_hours == 0.0 {
        est.method = "no operating hours: MTBF and rate undefined".to_owned();
        return Ok(est);
    }
    let t = operating_hours;
    let r = failures as f64;
    est.rate_per_1000h = finite(1000.0 * r / t);
    if failures == 0 {
        est.mtbf_lower = bound(t, confidence, 2.0)?;
        est.rate_upper = est.mtbf_lower.and_then(|l| finite(1000.0 / l));
        est.method = format!(
            "chi-square, zero failures: one-sided lower {pct} % (2 dof, time-terminated); no point estimate or upper bound"
        );
        return Ok(est);
    }
    est.mtbf_hours = finite(t / r);
    let alpha = 1.0 - confidence;
    let dof_lower = match termination {
        Termination::Time => 2.0 * r + 2.0,
        Termination::Failure => 2.0 * r,
    };
    let dof_upper = 2.0 * r;
    let (p_lower, p_upper) = match sides {
        Sides::TwoSided => (1.0 - alpha / 2.0, alpha / 2.0),
        Sides::Lower | Sides::Upper => (confidence, alpha),
    };
    if sides.lower() {
        est.mtbf_lower = bound(t, p_lower, dof_lower)?;
    }
    if sides.upper() {
        est.mtbf_upper = bound(t, p_upper, dof_upper)?;
    }
    est.rate_lower = est.mtbf_upper.and_then(|u| finite(1000.0 / u));
    est.rate_upper = est.mtbf_lower.and_then(|l| finite(1000.0 / l));
    est.method = format!(
        "chi-square, {}, {} {pct} %",
        termination.label(),
        sides.label()
    );
    Ok(est)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_is_trimmed() {
        assert_eq!(percent(0.9), "90");
        assert_eq!(percent(0.995), "99.5");
    }

    #[test]
    fn one_sided_lower_at_c_is_the_two_sided_lower_at_2c_minus_1() {
        let one = mtbf(1000.0, 3, 0.95, Sides::Lower, Termination::Time).expect("valid");
        let two = mtbf(1000.0, 3, 0.90, Sides::TwoSided, Termination::Time).expect("valid");
        let (a, b) = (
            one.mtbf_lower.expect("lower"),
            two.mtbf_lower.expect("lower"),
        );
        assert!((a - b).abs() < 1e-9 * a);
        assert!(one.mtbf_upper.is_none());
    }
}
