//! One simulated device: usage, wear, failures, repairs, alarms and the readings it
//! reports. Pure: no I/O, no clock; the fleet passes simulated hours and wall timestamps.
//!
//! Two random streams per device keep the physics independent of the readings: the
//! `physics` stream draws usage, lifetimes, delays and alarm episodes; the `noise` stream
//! draws reading noise. A device that produces no reading in a step (its queue is full)
//! still lives exactly the same life.
//!
//! Realism for the predictors: a day's use is the device's base use × its weekday factor
//! (day 0 of the simulation is a Monday) × a seasonal factor (peak near day 0 of the
//! year) × a daily log-normal variation; consumable readings carry noise and rare stray
//! values; failures come with full, weak or no precursors, false precursors come and go,
//! and precursors raise warning alarms (constants below).
//!
//! With the untidy profile (`untidy.rs`), a third random stream per device draws its
//! reporting rhythm, offline stretches, joining day, aged parts, scheduled replacements
//! and wide precursor leads; without it none of this is drawn and the device is exactly
//! the default one.

use std::f64::consts::TAU;

use bytes::Bytes;
use chrono::{DateTime, SecondsFormat, Utc};
use fleetpulse_domain::catalog::ModelSpec;
use fleetpulse_domain::telemetry::known_field;
use fleetpulse_domain::{AlarmCode, Category, DeviceKind, Serial, Severity};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::{Map, Value, json};

use crate::failure::{FailureModeSpec, failure_mode_spec};
use crate::truth::{PrecursorStart, TruthEvent};
use crate::untidy::{DeviceVariety, Untidy};

/// Firmware versions a simulated device may run.
const FIRMWARE: &[&str] = &["2.3.1", "2.4.0", "3.0.2"];
/// Daily usage: hours of operation per day, uniform in this range.
const USAGE_HOURS_PER_DAY: (f64, f64) = (6.0, 24.0);
/// Runtime meter of a device when the simulation starts, uniform in this range.
const INITIAL_RUNTIME_HOURS: (f64, f64) = (100.0, 15_000.0);
/// Share of devices whose components are all original (age = runtime meter).
const ORIGINAL_PARTS_SHARE: f64 = 0.7;
/// A consumable's life on this device, relative to the catalog's rated life.
const CONSUMABLE_LIFE_FACTOR: (f64, f64) = (0.7, 1.3);
/// Consumable level when the simulation starts, uniform in this range (%).
const INITIAL_CONSUMABLE_PCT: (f64, f64) = (10.0, 100.0);
/// Simulated hours from crossing `order_at_pct` to the replacement.
const CONSUMABLE_REPLACEMENT_DELAY_H: (f64, f64) = (48.0, 240.0);
/// Simulated hours from a failure to its repair.
const REPAIR_DELAY_H: (f64, f64) = (12.0, 96.0);
/// Mean simulated hours between two episodes of one warning code on one device.
const WARNING_MEAN_INTERVAL_H: f64 = 120.0 * 24.0;
/// Mean simulated hours between two episodes of one info code on one device.
const INFO_MEAN_INTERVAL_H: f64 = 60.0 * 24.0;
/// How long a random warning/info episode lasts, in simulated hours.
const EPISODE_DURATION_H: (f64, f64) = (0.5, 12.0);
/// Standard deviation of the reading noise on consumable levels (%).
const CONSUMABLE_NOISE_PCT: f64 = 0.15;
/// Chance that one consumable reading is a stray value (a sensor glitch) 5 to 30 points low.
const CONSUMABLE_GLITCH_P: f64 = 0.001;
/// Weekday usage factor of a device, uniform in this range per weekday.
const WEEKDAY_FACTOR: (f64, f64) = (0.75, 1.25);
/// Seasonal usage amplitude (share of the mean) of a device; peak in winter (day 0 ± the
/// device's phase).
const SEASONAL_AMPLITUDE: (f64, f64) = (0.0, 0.3);
/// Day-to-day usage variation: standard deviation of a day's log usage factor.
const DAILY_USAGE_SD: f64 = 0.15;
/// Share of failures without a precursor, and with a weak one (a third of the shift).
const NO_PRECURSOR_SHARE: f64 = 0.15;
const WEAK_PRECURSOR_SHARE: f64 = 0.15;
/// A precursor's lead relative to the table's, uniform in this range.
const LEAD_FACTOR: (f64, f64) = (0.6, 1.4);
/// Mean runtime hours between two false precursors (transient excursions of a
/// component's precursor fields that end without a failure).
const EXCURSION_MEAN_INTERVAL_H: f64 = 2500.0;
/// A false precursor's duration in simulated hours and its peak share of the shift.
const EXCURSION_DURATION_H: (f64, f64) = (24.0, 96.0);
const EXCURSION_PEAK: (f64, f64) = (0.3, 0.8);
/// Mean simulated hours between the warning episodes a strong precursor (or a false
/// one at its peak) raises.
const PRECURSOR_WARNING_INTERVAL_H: f64 = 36.0;

/// A measured field: its baseline, noise and whether it drops to 0 while a failure
/// keeps the device out of therapy.
#[derive(Clone, Debug)]
struct Gauge {
    field: &'static str,
    baseline: f64,
    noise_sd: f64,
    decimals: i32,
    therapy: bool,
}

/// An hour meter of a part (sieve bed, blower): the part's component age when the
/// model has that failure mode, else a meter that runs with the device.
#[derive(Clone, Debug)]
struct Counter {
    field: &'static str,
    component: Option<usize>,
    hours: f64,
}

#[derive(Clone, Debug)]
struct Consumable {
    id: String,
    field: String,
    order_at_pct: f64,
    life_hours: f64,
    level_pct: f64,
    crossed_at: Option<DateTime<Utc>>,
    replace_due_sim: Option<f64>,
}

#[derive(Clone, Debug)]
struct Component {
    mode: String,
    spec: &'static FailureModeSpec,
    alarm: AlarmCode,
    age_hours: f64,
    lifetime_hours: f64,
    fitted_in_sim: bool,
    /// Runtime hours before the failure at which the precursor starts (0: none).
    lead_hours: f64,
    /// Strength of this life's precursor: 1 full, below 1 weak, 0 none.
    strength: f64,
    precursor_fields: Vec<String>,
    precursor_started: Option<PrecursorStart>,
    /// A false precursor under way: (start, duration in simulated hours, peak share).
    excursion: Option<(f64, f64, f64)>,
    /// The random (warning) alarm this component's precursors raise, if any.
    warning: Option<usize>,
    /// Replaced on schedule (untidy profile): (interval, part age of the next
    /// replacement), in runtime hours.
    schedule: Option<(f64, f64)>,
}

impl Component {
    fn precursor_progress(&self) -> f64 {
        if self.lead_hours <= 0.0 {
            return 0.0;
        }
        ((self.age_hours - (self.lifetime_hours - self.lead_hours)) / self.lead_hours)
            .clamp(0.0, 1.0)
    }

    fn in_precursor(&self) -> bool {
        self.lead_hours > 0.0 && self.age_hours >= self.lifetime_hours - self.lead_hours
    }

    /// Draws the next life: lifetime from `age`, precursor strength and lead (the
    /// untidy profile draws the lead from its own wide range).
    fn draw_life(
        &mut self,
        age: f64,
        usage_fraction: f64,
        rng: &mut ChaCha8Rng,
        variety: Option<&mut DeviceVariety>,
    ) {
        self.lifetime_hours = self
            .spec
            .weibull()
            .lifetime_given_age(age, 1.0 - rng.random::<f64>());
        let u = rng.random::<f64>();
        self.strength = if self.precursor_fields.is_empty() || u < NO_PRECURSOR_SHARE {
            0.0
        } else if u < NO_PRECURSOR_SHARE + WEAK_PRECURSOR_SHARE {
            1.0 / 3.0
        } else {
            1.0
        };
        self.lead_hours = match variety {
            _ if self.strength == 0.0 => 0.0,
            Some(v) => v.lead_hours() * usage_fraction,
            None => self.spec.precursor_days * 24.0 * usage_fraction * uniform(rng, LEAD_FACTOR),
        };
    }

    /// Progress of a false precursor at `sim` (0..1..0 over its duration), times its peak.
    fn excursion_level(&self, sim: f64) -> f64 {
        match self.excursion {
            Some((start, dur, peak)) if sim >= start && sim < start + dur => {
                peak * (std::f64::consts::PI * (sim - start) / dur).sin()
            }
            _ => 0.0,
        }
    }
}

#[derive(Clone, Debug)]
struct RandomAlarm {
    code: AlarmCode,
    mean_interval_h: f64,
    active_until_sim: Option<f64>,
}

impl RandomAlarm {
    /// Starts an episode at `sim` unless one is under way.
    fn raise(&mut self, sim: f64, rng: &mut ChaCha8Rng) {
        if self.active_until_sim.is_none() {
            self.active_until_sim = Some(sim + uniform(rng, EPISODE_DURATION_H));
        }
    }
}

#[derive(Clone, Copy, Debug)]
struct Failed {
    component: usize,
    since_sim: f64,
    repair_due_sim: f64,
}

/// One reading as numbers: what a payload carries, without the JSON.
#[derive(Clone, Debug, PartialEq)]
pub struct DeviceSample {
    pub seq: u64,
    /// Values in the order of [`Fleet::field_names`](crate::Fleet::field_names).
    pub values: Vec<f64>,
    /// Active alarm codes, sorted.
    pub alarms: Vec<AlarmCode>,
}

/// Static facts about a simulated device.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeviceInfo {
    pub serial: Serial,
    pub model: String,
    pub kind: DeviceKind,
    pub firmware: String,
}

#[derive(Clone, Debug)]
pub(crate) struct SimDevice {
    pub(crate) serial: Serial,
    pub(crate) model: String,
    pub(crate) kind: DeviceKind,
    pub(crate) firmware: &'static str,
    physics: ChaCha8Rng,
    noise: ChaCha8Rng,
    usage_fraction: f64,
    runtime_hours: f64,
    seq: u64,
    consumables: Vec<Consumable>,
    components: Vec<Component>,
    gauges: Vec<Gauge>,
    counters: Vec<Counter>,
    random_alarms: Vec<RandomAlarm>,
    consumable_alarm: Option<AlarmCode>,
    failed: Option<Failed>,
    /// Usage factor per weekday (day 0 of the simulation is a Monday).
    weekday: [f64; 7],
    seasonal_amplitude: f64,
    seasonal_phase_days: f64,
    /// (simulated day, that day's usage factor).
    today: (i64, f64),
    sim_now: f64,
    /// The untidy profile's draw for this device (`None`: the default fleet).
    variety: Option<DeviceVariety>,
}

fn uniform(rng: &mut ChaCha8Rng, (lo, hi): (f64, f64)) -> f64 {
    lo + (hi - lo) * rng.random::<f64>()
}

/// A standard normal draw (Box–Muller).
fn normal(rng: &mut ChaCha8Rng) -> f64 {
    let u1 = 1.0 - rng.random::<f64>();
    let u2 = rng.random::<f64>();
    (-2.0 * u1.ln()).sqrt() * (TAU * u2).cos()
}

fn round_to(x: f64, decimals: i32) -> f64 {
    let f = 10f64.powi(decimals);
    (x * f).round() / f
}

fn clamp_to_contract(field: &str, x: f64) -> f64 {
    match known_field(field) {
        Some(f) => x.clamp(f.min, f.max),
        None => x,
    }
}

/// The measured fields of a device kind, drawn for one device.
fn gauges_for(kind: DeviceKind, rng: &mut ChaCha8Rng) -> Vec<Gauge> {
    let mut g = |field, range, noise_sd, decimals, therapy| Gauge {
        field,
        baseline: uniform(rng, range),
        noise_sd,
        decimals,
        therapy,
    };
    match kind {
        DeviceKind::OxygenConcentrator => {
            let mut flow = g("flow_lpm", (1.0, 5.0), 0.05, 2, true);
            // a prescription is set in half litres
            flow.baseline = (flow.baseline * 2.0).round() / 2.0;
            vec![
                g("o2_purity_pct", (92.5, 95.5), 0.25, 1, false),
                flow,
                g("outlet_pressure_kpa", (40.0, 60.0), 1.0, 1, false),
                g("temperature_c", (35.0, 45.0), 0.5, 1, false),
            ]
        }
        DeviceKind::Ventilator => vec![
            g("tidal_volume_ml", (350.0, 600.0), 12.0, 0, true),
            g("resp_rate_bpm", (12.0, 20.0), 0.6, 1, true),
            g("peak_pressure_cmh2o", (15.0, 25.0), 0.7, 1, true),
            g("leak_lpm", (5.0, 25.0), 1.5, 1, true),
            g("battery_pct", (97.0, 100.0), 0.4, 0, false),
        ],
        _ => Vec::new(),
    }
}

fn counter_fields(kind: DeviceKind) -> &'static [(&'static str, &'static str)] {
    match kind {
        DeviceKind::OxygenConcentrator => &[("sieve_bed_hours", "sieve_bed")],
        DeviceKind::Ventilator => &[("blower_hours", "blower")],
        _ => &[],
    }
}

impl SimDevice {
    /// Draws device `index` of a fleet with `seed`, with the `untidy` profile if any. The
    /// draw depends only on (seed, index, model, profile): never on the fleet size or on
    /// timing.
    pub(crate) fn new(
        seed: u64,
        index: usize,
        serial: Serial,
        model: &ModelSpec,
        untidy: Option<&Untidy>,
    ) -> Self {
        let mut physics = ChaCha8Rng::seed_from_u64(seed);
        physics.set_stream(2 * index as u64);
        let mut noise = ChaCha8Rng::seed_from_u64(seed);
        noise.set_stream(2 * index as u64 + 1);
        let rng = &mut physics;
        let mut variety = untidy.map(|p| DeviceVariety::new(p, seed, index));

        let firmware = FIRMWARE[rng.random_range(0..FIRMWARE.len())];
        let usage_fraction = uniform(rng, USAGE_HOURS_PER_DAY) / 24.0;
        let mut runtime_hours = uniform(rng, INITIAL_RUNTIME_HOURS);
        let original_parts = rng.random::<f64>() < ORIGINAL_PARTS_SHARE;

        let mut consumables: Vec<Consumable> = Vec::new();
        for c in &model.consumables {
            if consumables.iter().any(|x| x.field == c.field) {
                continue;
            }
            consumables.push(Consumable {
                id: c.id.clone(),
                field: c.field.clone(),
                order_at_pct: c.order_at_pct,
                life_hours: c.rated_life_hours * uniform(rng, CONSUMABLE_LIFE_FACTOR),
                level_pct: uniform(rng, INITIAL_CONSUMABLE_PCT),
                crossed_at: None,
                replace_due_sim: None,
            });
        }

        let gauges: Vec<Gauge> = gauges_for(model.kind, rng)
            .into_iter()
            .filter(|g| !consumables.iter().any(|c| c.field == g.field))
            .collect();
        let reports = |field: &str| gauges.iter().any(|g| g.field == field);

        let mut components: Vec<Component> = Vec::new();
        for alarm in model.alarms.iter().filter(|a| a.counts_as_failure) {
            let Some(mode) = alarm.failure_mode.as_deref() else {
                continue;
            };
            if components.iter().any(|c| c.mode == mode) {
                continue;
            }
            let spec = failure_mode_spec(mode);
            let age_hours = match variety.as_mut().filter(|v| v.aged) {
                Some(v) => v.aged_part_hours(spec.eta_hours),
                None if original_parts => runtime_hours,
                None => runtime_hours * rng.random::<f64>(),
            };
            let schedule = variety.as_mut().and_then(|v| {
                let every = v.schedule_hours(mode, spec.eta_hours)?;
                Some((every, v.next_due_age(age_hours, every)))
            });
            let precursor_fields: Vec<String> = spec
                .precursor
                .iter()
                .filter(|d| reports(d.field))
                .map(|d| d.field.to_owned())
                .collect();
            let mut c = Component {
                mode: mode.to_owned(),
                spec,
                alarm: alarm.code.clone(),
                age_hours,
                lifetime_hours: 0.0,
                fitted_in_sim: false,
                lead_hours: 0.0,
                strength: 0.0,
                precursor_fields,
                precursor_started: None,
                excursion: None,
                warning: None,
                schedule,
            };
            c.draw_life(age_hours, usage_fraction, rng, variety.as_mut());
            components.push(c);
        }
        if variety.as_ref().is_some_and(|v| v.aged) {
            // the meter has run at least as long as its oldest part
            runtime_hours = components
                .iter()
                .map(|c| c.age_hours)
                .fold(runtime_hours, f64::max);
        }

        let counters = counter_fields(model.kind)
            .iter()
            .filter(|(field, _)| !consumables.iter().any(|c| c.field == *field))
            .map(|&(field, mode)| {
                let component = components.iter().position(|c| c.mode == mode);
                let meter = runtime_hours * rng.random::<f64>();
                Counter {
                    field,
                    component,
                    hours: component.map_or(meter, |c| components[c].age_hours),
                }
            })
            .collect();

        let consumable_alarm = model
            .alarms
            .iter()
            .find(|a| !a.counts_as_failure && a.category == Category::Consumable)
            .map(|a| a.code.clone());
        let random_alarms: Vec<RandomAlarm> = model
            .alarms
            .iter()
            .filter(|a| !a.counts_as_failure && Some(&a.code) != consumable_alarm.as_ref())
            .filter_map(|a| {
                let mean_interval_h = match a.severity {
                    Severity::Warning => WARNING_MEAN_INTERVAL_H,
                    Severity::Info => INFO_MEAN_INTERVAL_H,
                    // a critical alarm that is not a failure is never raised at random
                    Severity::Critical => return None,
                };
                Some(RandomAlarm {
                    code: a.code.clone(),
                    mean_interval_h,
                    active_until_sim: None,
                })
            })
            .collect();

        // precursors raise the model's warning alarms: component k the (k mod n)-th one
        let warnings: Vec<usize> = random_alarms
            .iter()
            .enumerate()
            .filter(|(_, a)| a.mean_interval_h == WARNING_MEAN_INTERVAL_H)
            .map(|(i, _)| i)
            .collect();
        for (k, c) in components.iter_mut().enumerate() {
            if !warnings.is_empty() && !c.precursor_fields.is_empty() {
                c.warning = Some(warnings[k % warnings.len()]);
            }
        }
        let mut weekday = [1.0; 7];
        for w in &mut weekday {
            *w = uniform(rng, WEEKDAY_FACTOR);
        }
        let mean_w = weekday.iter().sum::<f64>() / 7.0;
        for w in &mut weekday {
            *w /= mean_w;
        }
        let seasonal_amplitude = uniform(rng, SEASONAL_AMPLITUDE);
        let seasonal_phase_days = uniform(rng, (-30.0, 30.0));

        SimDevice {
            serial,
            model: model.id.to_string(),
            kind: model.kind,
            firmware,
            physics,
            noise,
            usage_fraction,
            runtime_hours,
            seq: 0,
            consumables,
            components,
            gauges,
            counters,
            random_alarms,
            consumable_alarm,
            failed: None,
            weekday,
            seasonal_amplitude,
            seasonal_phase_days,
            today: (-1, 1.0),
            sim_now: 0.0,
            variety,
        }
    }

    /// Whether the device logs a reading at the end of the step just lived (always,
    /// without the untidy profile).
    pub(crate) fn reports(&self) -> bool {
        self.variety.as_ref().is_none_or(DeviceVariety::reports)
    }

    /// Simulated hour the device joins the fleet (0 unless the untidy profile has it join
    /// later).
    pub(crate) fn joins_at_hours(&self) -> f64 {
        self.variety.as_ref().map_or(0.0, |v| v.joins_at_sim)
    }

    /// Simulated hours between two readings (1 without the untidy profile; steps longer
    /// than that still give one reading each).
    pub(crate) fn report_every_hours(&self) -> f64 {
        self.variety.as_ref().map_or(1.0, |v| v.every_h)
    }

    /// The untidy profile's draw, for the tests.
    #[cfg(test)]
    pub(crate) fn variety(&self) -> Option<&DeviceVariety> {
        self.variety.as_ref()
    }

    /// The usage factor of the simulated day containing `sim` (weekday × season × that
    /// day's own variation); drawn once per day from the physics stream.
    fn day_factor(&mut self, sim: f64) -> f64 {
        let day = (sim / 24.0).floor() as i64;
        if self.today.0 != day {
            let noise = (DAILY_USAGE_SD * normal(&mut self.physics)).exp();
            let doy = day.rem_euclid(365) as f64;
            let season = 1.0
                + self.seasonal_amplitude * (TAU * (doy - self.seasonal_phase_days) / 365.0).cos();
            let f = self.weekday[day.rem_euclid(7) as usize] * season * noise;
            self.today = (day, f);
        }
        self.today.1
    }

    /// The device's runtime meter now.
    pub(crate) fn runtime_hours(&self) -> f64 {
        self.runtime_hours
    }

    /// Mean share of the day the device runs.
    pub(crate) fn usage_fraction(&self) -> f64 {
        self.usage_fraction
    }

    /// Each failure-mode component's age in runtime hours now, in catalog order.
    pub(crate) fn component_ages(&self) -> Vec<(String, f64)> {
        self.components
            .iter()
            .map(|c| (c.mode.clone(), c.age_hours))
            .collect()
    }

    pub(crate) fn info(&self) -> DeviceInfo {
        DeviceInfo {
            serial: self.serial.clone(),
            model: self.model.clone(),
            kind: self.kind,
            firmware: self.firmware.to_owned(),
        }
    }

    /// Lives through `dt` simulated hours ending at `sim_end`; `ts` is the wall time of
    /// the reading that follows. Events go to `truth`.
    pub(crate) fn advance(
        &mut self,
        dt: f64,
        sim_end: f64,
        ts: DateTime<Utc>,
        truth: &mut Vec<TruthEvent>,
    ) {
        self.sim_now = sim_end;
        if let Some(v) = &mut self.variety {
            v.step(sim_end - dt, sim_end);
            if !v.joined(sim_end) {
                return; // not in the fleet yet: its life here has not begun
            }
        }
        self.repair_if_due(sim_end, ts, truth);
        self.replace_consumables_if_due(sim_end, ts, truth);
        self.replace_on_schedule(sim_end, ts, truth);
        let jitter = uniform(&mut self.physics, (0.85, 1.15));
        let day = self.day_factor(sim_end - dt.min(24.0) / 2.0);
        if self.failed.is_none() {
            let fraction = (self.usage_fraction * jitter * day).min(1.0);
            self.operate(dt * fraction, sim_end, ts, truth);
        }
        self.false_precursors(dt, sim_end);
        self.random_alarm_episodes(dt, sim_end);
    }

    fn repair_if_due(&mut self, sim_end: f64, ts: DateTime<Utc>, truth: &mut Vec<TruthEvent>) {
        let Some(failed) = self.failed else { return };
        if sim_end < failed.repair_due_sim {
            return;
        }
        self.failed = None;
        let usage_fraction = self.usage_fraction;
        let c = &mut self.components[failed.component];
        c.age_hours = 0.0;
        c.draw_life(
            0.0,
            usage_fraction,
            &mut self.physics,
            self.variety.as_mut(),
        );
        c.fitted_in_sim = true;
        c.precursor_started = None;
        truth.push(TruthEvent::Repair {
            serial: self.serial.clone(),
            model: self.model.clone(),
            failure_mode: c.mode.clone(),
            alarm_code: c.alarm.clone(),
            ts,
            sim_hours: sim_end,
            runtime_hours: self.runtime_hours,
            downtime_hours: sim_end - failed.since_sim,
        });
    }

    fn replace_consumables_if_due(
        &mut self,
        sim_end: f64,
        ts: DateTime<Utc>,
        truth: &mut Vec<TruthEvent>,
    ) {
        for c in &mut self.consumables {
            let (Some(due), Some(crossed)) = (c.replace_due_sim, c.crossed_at) else {
                continue;
            };
            if sim_end < due {
                continue;
            }
            truth.push(TruthEvent::ConsumableReplaced {
                serial: self.serial.clone(),
                model: self.model.clone(),
                consumable: c.id.clone(),
                field: c.field.clone(),
                ts,
                sim_hours: sim_end,
                runtime_hours: self.runtime_hours,
                level_before_pct: c.level_pct,
                crossed_threshold_ts: crossed,
            });
            c.level_pct = 100.0;
            c.crossed_at = None;
            c.replace_due_sim = None;
        }
    }

    /// Replaces the parts whose scheduled age has come (untidy profile), unless the
    /// device is down: the part starts a new life, and a precursor under way ends.
    fn replace_on_schedule(
        &mut self,
        sim_end: f64,
        ts: DateTime<Utc>,
        truth: &mut Vec<TruthEvent>,
    ) {
        if self.failed.is_some() {
            return;
        }
        let Some(v) = self.variety.as_mut() else {
            return;
        };
        for c in &mut self.components {
            let Some((every, due)) = c.schedule else {
                continue;
            };
            if c.age_hours < due {
                continue;
            }
            truth.push(TruthEvent::ScheduledReplacement {
                serial: self.serial.clone(),
                model: self.model.clone(),
                failure_mode: c.mode.clone(),
                ts,
                sim_hours: sim_end,
                runtime_hours: self.runtime_hours,
                component_hours: c.age_hours,
            });
            c.age_hours = 0.0;
            c.draw_life(0.0, self.usage_fraction, &mut self.physics, Some(&mut *v));
            c.fitted_in_sim = true;
            c.precursor_started = None;
            c.schedule = Some((every, v.next_due_age(0.0, every)));
        }
    }

    /// Runs for `hours` of runtime, or until the first component fails within them.
    fn operate(
        &mut self,
        hours: f64,
        sim_end: f64,
        ts: DateTime<Utc>,
        truth: &mut Vec<TruthEvent>,
    ) {
        let first_failure = self
            .components
            .iter()
            .enumerate()
            .map(|(i, c)| (i, (c.lifetime_hours - c.age_hours).max(0.0)))
            .filter(|&(_, left)| left <= hours)
            .min_by(|a, b| a.1.total_cmp(&b.1));
        let run = first_failure.map_or(hours, |(_, left)| left);

        self.runtime_hours += run;
        for c in &mut self.components {
            c.age_hours += run;
        }
        for k in &mut self.counters {
            k.hours = match k.component {
                Some(c) => self.components[c].age_hours,
                None => k.hours + run,
            };
        }
        for c in &mut self.components {
            if c.precursor_started.is_none() && c.in_precursor() {
                c.precursor_started = Some(PrecursorStart {
                    ts,
                    sim_hours: sim_end,
                    runtime_hours: self.runtime_hours,
                    fields: c.precursor_fields.clone(),
                });
                // untidy: a full precursor's warning comes as it starts
                if let Some(w) = c
                    .warning
                    .filter(|_| self.variety.is_some() && c.strength >= 1.0)
                {
                    self.random_alarms[w].raise(sim_end, &mut self.physics);
                }
            }
        }
        for c in &mut self.consumables {
            c.level_pct = (c.level_pct - 100.0 * run / c.life_hours).max(0.0);
            if c.crossed_at.is_none() && c.level_pct <= c.order_at_pct {
                c.crossed_at = Some(ts);
                c.replace_due_sim =
                    Some(sim_end + uniform(&mut self.physics, CONSUMABLE_REPLACEMENT_DELAY_H));
            }
        }
        if let Some((i, _)) = first_failure {
            self.fail(i, sim_end, ts, truth);
        }
    }

    fn fail(
        &mut self,
        component: usize,
        sim_end: f64,
        ts: DateTime<Utc>,
        truth: &mut Vec<TruthEvent>,
    ) {
        let repair_due_sim = sim_end + uniform(&mut self.physics, REPAIR_DELAY_H);
        self.failed = Some(Failed {
            component,
            since_sim: sim_end,
            repair_due_sim,
        });
        let c = &mut self.components[component];
        truth.push(TruthEvent::Failure {
            serial: self.serial.clone(),
            model: self.model.clone(),
            failure_mode: c.mode.clone(),
            alarm_code: c.alarm.clone(),
            ts,
            sim_hours: sim_end,
            runtime_hours: self.runtime_hours,
            component_hours: c.lifetime_hours,
            component_fitted_in_sim: c.fitted_in_sim,
            precursor_start: c.precursor_started.take(),
            precursor_strength: c.strength,
        });
    }

    /// Starts false precursors (transient excursions) on the components that show
    /// precursors; they end by themselves.
    fn false_precursors(&mut self, dt: f64, sim_end: f64) {
        if self.failed.is_some() {
            return;
        }
        let run = dt * self.usage_fraction;
        for c in &mut self.components {
            if c.excursion.is_some_and(|(s, d, _)| sim_end >= s + d) {
                c.excursion = None;
            }
            if c.precursor_fields.is_empty() || c.excursion.is_some() || c.in_precursor() {
                continue;
            }
            if self.physics.random::<f64>() < 1.0 - (-run / EXCURSION_MEAN_INTERVAL_H).exp() {
                c.excursion = Some((
                    sim_end,
                    uniform(&mut self.physics, EXCURSION_DURATION_H),
                    uniform(&mut self.physics, EXCURSION_PEAK),
                ));
                // untidy: a false precursor raises its warning as it starts, as a real one
                if let Some(w) = c.warning.filter(|_| self.variety.is_some()) {
                    self.random_alarms[w].raise(sim_end, &mut self.physics);
                }
            }
        }
    }

    /// Extra warning rate per random alarm from precursors and false precursors.
    fn precursor_warning_rate(&self, alarm: usize, sim: f64) -> f64 {
        self.components
            .iter()
            .filter(|c| c.warning == Some(alarm))
            .map(|c| {
                let s = c.precursor_progress() * c.strength + c.excursion_level(sim);
                if s > 0.3 {
                    s / PRECURSOR_WARNING_INTERVAL_H
                } else {
                    0.0
                }
            })
            .sum()
    }

    fn random_alarm_episodes(&mut self, dt: f64, sim_end: f64) {
        let down = self.failed.is_some();
        let extra: Vec<f64> = (0..self.random_alarms.len())
            .map(|i| self.precursor_warning_rate(i, sim_end))
            .collect();
        for (i, a) in self.random_alarms.iter_mut().enumerate() {
            if a.active_until_sim.is_some_and(|until| sim_end >= until) {
                a.active_until_sim = None;
            }
            let rate = 1.0 / a.mean_interval_h + extra[i];
            let raise = self.physics.random::<f64>() < 1.0 - (-dt * rate).exp();
            if raise && !down {
                a.raise(sim_end, &mut self.physics);
            }
        }
    }

    /// The active alarm set, sorted.
    fn active_alarms(&self) -> Vec<&AlarmCode> {
        let mut codes: Vec<&AlarmCode> = Vec::new();
        if let Some(f) = self.failed {
            codes.push(&self.components[f.component].alarm);
        }
        codes.extend(
            self.random_alarms
                .iter()
                .filter(|a| a.active_until_sim.is_some())
                .map(|a| &a.code),
        );
        if let Some(code) = &self.consumable_alarm
            && self
                .consumables
                .iter()
                .any(|c| c.level_pct <= c.order_at_pct)
        {
            codes.push(code);
        }
        codes.sort();
        codes.dedup();
        codes
    }

    /// The value a gauge shows now, before noise.
    fn out_of_therapy(&self) -> bool {
        self.failed
            .is_some_and(|f| self.components[f.component].spec.stops_therapy)
    }

    fn gauge_value(&self, g: &Gauge) -> f64 {
        let drift: f64 = self
            .components
            .iter()
            .enumerate()
            .map(|(i, c)| {
                if self.failed.is_some_and(|f| f.component == i) {
                    // the failure itself shows the full shift
                    return c.spec.shift(g.field, 1.0);
                }
                // a precursor grows as s^1.5 times its strength; a false one rises and
                // falls as a sine of its duration, peaking at a share of the shift
                let precursor = c.strength * c.spec.shift(g.field, c.precursor_progress());
                let excursion = c.excursion_level(self.sim_now) * c.spec.shift(g.field, 1.0);
                precursor + excursion
            })
            .sum();
        g.baseline + drift
    }

    /// The names of the values of [`SimDevice::sample`], in order.
    pub(crate) fn field_names(&self) -> Vec<String> {
        let mut v = vec!["runtime_hours".to_owned()];
        v.extend(self.consumables.iter().map(|c| c.field.clone()));
        v.extend(self.gauges.iter().map(|g| g.field.to_owned()));
        v.extend(self.counters.iter().map(|k| k.field.to_owned()));
        v
    }

    /// The next reading as values (in [`SimDevice::field_names`] order) and the active
    /// alarms, with the next `seq`: what [`SimDevice::reading`] serialises.
    pub(crate) fn sample(&mut self) -> DeviceSample {
        self.seq += 1;
        let mut values = Vec::with_capacity(1 + self.consumables.len() + self.gauges.len() + 2);
        values.push(round_to(self.runtime_hours, 2));
        for i in 0..self.consumables.len() {
            let noise = CONSUMABLE_NOISE_PCT * normal(&mut self.noise);
            let glitch = if self.noise.random::<f64>() < CONSUMABLE_GLITCH_P {
                uniform(&mut self.noise, (5.0, 30.0))
            } else {
                0.0
            };
            let c = &self.consumables[i];
            values.push(round_to(
                (c.level_pct + noise - glitch).clamp(0.0, 100.0),
                1,
            ));
        }
        for i in 0..self.gauges.len() {
            let noise = normal(&mut self.noise);
            let g = &self.gauges[i];
            let value = if g.therapy && self.out_of_therapy() {
                0.0
            } else {
                self.gauge_value(g) + g.noise_sd * noise
            };
            values.push(round_to(clamp_to_contract(g.field, value), g.decimals));
        }
        for k in &self.counters {
            values.push(round_to(clamp_to_contract(k.field, k.hours), 1));
        }
        DeviceSample {
            seq: self.seq,
            values,
            alarms: self.active_alarms().into_iter().cloned().collect(),
        }
    }

    /// The next reading (v1 payload), with the next `seq`.
    pub(crate) fn reading(&mut self, ts: DateTime<Utc>) -> (u64, Bytes) {
        let names = self.field_names();
        let sample = self.sample();
        let mut m = Map::new();
        m.insert("seq".into(), json!(sample.seq));
        m.insert(
            "ts".into(),
            json!(ts.to_rfc3339_opts(SecondsFormat::Millis, true)),
        );
        m.insert("model".into(), json!(self.model));
        m.insert("fw".into(), json!(self.firmware));
        for (name, value) in names.into_iter().zip(&sample.values) {
            m.insert(name, json!(value));
        }
        let alarms: Vec<&str> = sample.alarms.iter().map(AlarmCode::as_str).collect();
        m.insert("alarms".into(), json!(alarms));
        let payload = serde_json::to_vec(&Value::Object(m))
            .expect("a reading holds only finite numbers and strings: it always serializes");
        (sample.seq, Bytes::from(payload))
    }
}
