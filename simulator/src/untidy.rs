//! The untidy profile (issue 22): an opt-in fleet that is less convenient for the
//! predictors than the default one, where every device reports hourly from day 0 without
//! a gap, parts are replaced only when they fail, and warnings precede failures by a few
//! days of the table's lead.
//!
//! With [`FleetConfig::untidy`](crate::FleetConfig::untidy) set, each device draws, from
//! its own random stream (independent of its physics and noise streams, so a device still
//! does not depend on the fleet size):
//! - **a reporting rhythm**: a reading every 1, 2, 6 or 24 simulated hours (weights
//!   [`Untidy::rhythm_mix_pct`]), at a random phase; between two it logs nothing;
//! - **offline stretches**: starting on average every [`Untidy::gap_mean_interval_days`]
//!   simulated days, lasting log-uniformly [`Untidy::gap_hours`]; the device keeps
//!   running and wearing but reports nothing, and does not upload what it missed;
//! - **scheduled replacements**: on [`Untidy::scheduled_share_pct`] of the devices (those
//!   under a maintenance contract), the wear parts of [`SCHEDULED_PARTS`] are replaced
//!   preventively every share of η of their runtime, ± [`SCHEDULE_JITTER`]; the ground
//!   truth records each ([`TruthEvent::ScheduledReplacement`](crate::TruthEvent)), the
//!   part's age and life start again, and a precursor under way ends without a failure;
//! - **joining mid-life**: [`Untidy::joining_share_pct`] of the devices enter the fleet on
//!   a whole day drawn uniformly in `0..join_within_days`, with each part already aged
//!   uniformly up to [`JOIN_MAX_AGE_SHARE`] of its η (and a runtime meter at least that
//!   old); before that day they do not exist for the fleet (no physics, readings or
//!   truth), and their history begins then (registered that day, commissioning unknown);
//! - **alarm leads from hours to weeks**: a precursor's lead (runtime before the failure)
//!   is drawn log-uniformly in [`Untidy::alarm_lead_hours`] of simulated time, and a full
//!   precursor raises its warning alarm as it starts, so the first warning comes that
//!   long before the failure; false precursors raise it as they start too. As in the
//!   default fleet, 15 % of failures come without a precursor and 15 % with a weak one
//!   (whose warnings rarely rise), so some failures have no warning at all, and random
//!   warning episodes and false precursors give warnings that no failure follows.
//!
//! Without the profile none of this is drawn and the fleet is, byte for byte, the default
//! one (`tests/tidy_unchanged.rs`).

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

/// The reporting rhythms, in simulated hours, that [`Untidy::rhythm_mix_pct`] weighs.
pub const RHYTHMS_H: [f64; 4] = [1.0, 2.0, 6.0, 24.0];
/// Wear parts replaced on schedule on contract devices, with the interval as a share of
/// the mode's η (a sieve bed every ~9 000 h, a battery every ~6 000 h of runtime).
pub const SCHEDULED_PARTS: &[(&str, f64)] = &[("sieve_bed", 0.6), ("battery", 0.5)];
/// A scheduled interval varies by ± this share from one replacement to the next.
pub const SCHEDULE_JITTER: f64 = 0.2;
/// A joining device's parts are aged uniformly up to this share of their η.
pub const JOIN_MAX_AGE_SHARE: f64 = 0.8;
/// Random stream of the profile for device `i`: `PROFILE_STREAM + i` (the physics and
/// noise streams are `2i` and `2i + 1`).
const PROFILE_STREAM: u64 = 1 << 62;

/// The untidy profile of a fleet (see the module documentation). Every field has a
/// default; `{}` in a config file is the profile as described.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Untidy {
    /// Weights (in %) of the reporting rhythms 1 h, 2 h, 6 h and 24 h.
    pub rhythm_mix_pct: [u32; 4],
    /// Mean simulated days from the end of one offline stretch of a device to the start of
    /// the next (0: no offline stretches).
    pub gap_mean_interval_days: u32,
    /// Shortest and longest offline stretch, in simulated hours (log-uniform between).
    pub gap_hours: [u32; 2],
    /// Share (%) of devices whose [`SCHEDULED_PARTS`] are replaced on schedule.
    pub scheduled_share_pct: u32,
    /// Share (%) of devices that join the fleet after its start, with aged parts.
    pub joining_share_pct: u32,
    /// A joining device enters on a day drawn uniformly in `0..join_within_days`.
    pub join_within_days: u32,
    /// Shortest and longest precursor lead (its first warning before the failure), in
    /// simulated hours (log-uniform between).
    pub alarm_lead_hours: [u32; 2],
}

const fn default_rhythm_mix_pct() -> [u32; 4] {
    [50, 20, 20, 10]
}

impl Default for Untidy {
    fn default() -> Self {
        Untidy {
            rhythm_mix_pct: default_rhythm_mix_pct(),
            gap_mean_interval_days: 45,
            gap_hours: [2, 14 * 24],
            scheduled_share_pct: 50,
            joining_share_pct: 30,
            join_within_days: 360,
            alarm_lead_hours: [2, 21 * 24],
        }
    }
}

fn log_uniform(rng: &mut ChaCha8Rng, [lo, hi]: [u32; 2]) -> f64 {
    let (lo, hi) = (f64::from(lo.max(1)), f64::from(hi.max(lo.max(1))));
    (lo.ln() + (hi.ln() - lo.ln()) * rng.random::<f64>()).exp()
}

fn exponential(rng: &mut ChaCha8Rng, mean: f64) -> f64 {
    -mean * (1.0 - rng.random::<f64>()).ln()
}

/// One device's draw of the profile and its reporting state.
#[derive(Clone, Debug)]
pub(crate) struct DeviceVariety {
    rng: ChaCha8Rng,
    profile: Untidy,
    /// Simulated hours between two readings.
    pub(crate) every_h: f64,
    phase_h: f64,
    /// Simulated hour the device joins the fleet (0: from the start).
    pub(crate) joins_at_sim: f64,
    /// Whether it joins with aged parts.
    pub(crate) aged: bool,
    /// Whether its wear parts are replaced on schedule.
    pub(crate) scheduled: bool,
    /// The current or next offline stretch, `[from, to)` in simulated hours.
    gap: Option<(f64, f64)>,
    /// Whether the device logs a reading in the step just lived.
    reports: bool,
}

impl DeviceVariety {
    pub(crate) fn new(profile: &Untidy, seed: u64, index: usize) -> Self {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        rng.set_stream(PROFILE_STREAM + index as u64);
        let total: u32 = profile.rhythm_mix_pct.iter().sum();
        let pick = rng.random::<f64>() * f64::from(total);
        let mut every_h = RHYTHMS_H[0];
        let mut cumulative = 0.0;
        for (w, h) in profile.rhythm_mix_pct.iter().zip(RHYTHMS_H) {
            cumulative += f64::from(*w);
            if pick < cumulative {
                every_h = h;
                break;
            }
        }
        let phase_h = f64::from(rng.random_range(0..every_h as u32));
        let aged = rng.random::<f64>() * 100.0 < f64::from(profile.joining_share_pct);
        let joins_at_sim = if aged {
            24.0 * f64::from(rng.random_range(0..profile.join_within_days.max(1)))
        } else {
            0.0
        };
        let scheduled = rng.random::<f64>() * 100.0 < f64::from(profile.scheduled_share_pct);
        let mut v = DeviceVariety {
            rng,
            profile: profile.clone(),
            every_h,
            phase_h,
            joins_at_sim,
            aged,
            scheduled,
            gap: None,
            reports: false,
        };
        v.gap = v.next_gap(joins_at_sim);
        v
    }

    /// The first offline stretch after `from`.
    fn next_gap(&mut self, from: f64) -> Option<(f64, f64)> {
        let mean_days = self.profile.gap_mean_interval_days;
        if mean_days == 0 {
            return None;
        }
        let start = from + exponential(&mut self.rng, 24.0 * f64::from(mean_days));
        Some((
            start,
            start + log_uniform(&mut self.rng, self.profile.gap_hours),
        ))
    }

    /// Whether the device is part of the fleet in a step ending at `sim_end`.
    pub(crate) fn joined(&self, sim_end: f64) -> bool {
        sim_end > self.joins_at_sim || self.joins_at_sim == 0.0
    }

    /// Whether the device is in an offline stretch at `sim`.
    pub(crate) fn offline(&self, sim: f64) -> bool {
        self.gap.is_some_and(|(from, to)| sim >= from && sim < to)
    }

    /// Moves to the step `(sim_start, sim_end]`: passes the offline stretches that ended
    /// and decides whether the device logs a reading at its end (joined, online, and a
    /// beat of its rhythm fell in the step).
    pub(crate) fn step(&mut self, sim_start: f64, sim_end: f64) {
        while let Some((_, to)) = self.gap
            && sim_end >= to
        {
            self.gap = self.next_gap(to);
        }
        let beat = |t: f64| ((t + self.phase_h) / self.every_h).floor();
        self.reports =
            self.joined(sim_end) && !self.offline(sim_end) && beat(sim_end) > beat(sim_start);
    }

    /// Whether the device logs a reading at the end of the step just lived.
    pub(crate) fn reports(&self) -> bool {
        self.reports
    }

    /// A joining device's part of scale `eta_hours`: its age when it joins.
    pub(crate) fn aged_part_hours(&mut self, eta_hours: f64) -> f64 {
        JOIN_MAX_AGE_SHARE * eta_hours * self.rng.random::<f64>()
    }

    /// The scheduled replacement interval of a part of `mode` (scale `eta_hours`) on this
    /// device, if it has one.
    pub(crate) fn schedule_hours(&self, mode: &str, eta_hours: f64) -> Option<f64> {
        if !self.scheduled {
            return None;
        }
        SCHEDULED_PARTS
            .iter()
            .find(|(m, _)| *m == mode)
            .map(|(_, share)| share * eta_hours)
    }

    /// The part age at which a part replaced on schedule every `every` hours is next
    /// replaced, when it is `age` hours old now: at one jittered interval, or, for a part
    /// already past it (fitted before the fleet's start or before the device joined),
    /// somewhere in the next half interval.
    pub(crate) fn next_due_age(&mut self, age: f64, every: f64) -> f64 {
        let u = self.rng.random::<f64>();
        let due = every * (1.0 - SCHEDULE_JITTER + 2.0 * SCHEDULE_JITTER * u);
        if due > age {
            due
        } else {
            age + 0.5 * every * u
        }
    }

    /// A precursor lead in simulated hours, log-uniform in the profile's range.
    pub(crate) fn lead_hours(&mut self) -> f64 {
        log_uniform(&mut self.rng, self.profile.alarm_lead_hours)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::sync::OnceLock;

    use chrono::{DateTime, Duration, TimeZone, Utc};
    use fleetpulse_domain::device::ConnectionState;
    use fleetpulse_domain::{Catalog, Severity};

    use super::*;
    use crate::failure::failure_mode_spec;
    use crate::{Fleet, FleetConfig, HistoryRecorder, TruthEvent};

    fn catalog() -> &'static Catalog {
        static CATALOG: OnceLock<Catalog> = OnceLock::new();
        CATALOG.get_or_init(|| {
            Catalog::from_toml_str(include_str!("../../config/catalog.toml"))
                .expect("shipped catalog")
        })
    }

    fn start() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2024, 1, 1, 0, 0, 0)
            .single()
            .expect("valid time")
    }

    fn at(sim_hours: f64) -> DateTime<Utc> {
        start() + Duration::minutes((sim_hours * 60.0) as i64)
    }

    fn fleet(devices: usize, seed: u64, profile: Untidy) -> Fleet {
        let cfg = FleetConfig {
            devices,
            seed,
            serial_prefix: "UT".into(),
            untidy: Some(profile),
        };
        Fleet::new(&cfg, catalog()).expect("fleet")
    }

    fn severity(model: &str, code: &str) -> Option<Severity> {
        catalog()
            .model(model)?
            .alarms
            .iter()
            .find(|a| a.code.as_str() == code)
            .map(|a| a.severity)
    }

    /// An untidy fleet lived hour by hour and recorded as `history::simulate` does, with
    /// what the profile's state said at each step.
    struct Run {
        fleet: Fleet,
        rec: HistoryRecorder,
        truth: Vec<TruthEvent>,
        /// Per device, its offline stretches: (first, last) simulated hour of the steps
        /// that ended offline.
        offline: Vec<Vec<(f64, f64)>>,
        /// Readings logged in a step that ended offline or before the device joined.
        stray_readings: usize,
        days: u32,
    }

    fn run(devices: usize, days: u32, profile: Untidy) -> Run {
        let mut f = fleet(devices, 3, profile);
        let mut rec = HistoryRecorder::new(&f, catalog(), start());
        let (mut truth, mut offline, mut stray_readings) =
            (Vec::new(), vec![Vec::<(f64, f64)>::new(); devices], 0);
        for _ in 0..days * 24 {
            let ts = at(f.sim_hours() + 1.0) - Duration::minutes(1);
            let samples = f.step_samples(1.0, ts);
            let sim = f.sim_hours();
            for (i, s) in samples.iter().enumerate() {
                let v = f.sim_device(i).variety().expect("an untidy device");
                if v.offline(sim) {
                    match offline[i].last_mut() {
                        Some(last) if last.1 == sim - 1.0 => last.1 = sim,
                        _ => offline[i].push((sim, sim)),
                    }
                }
                if s.is_some() && (v.offline(sim) || !v.joined(sim)) {
                    stray_readings += 1;
                }
            }
            rec.record(&samples, ts);
            let events = f.take_ground_truth();
            rec.record_truth(&events);
            truth.extend(events);
        }
        Run {
            fleet: f,
            rec,
            truth,
            offline,
            stray_readings,
            days,
        }
    }

    /// 150 devices of the shipped catalog for 200 days with the default profile.
    fn untidy_run() -> &'static Run {
        static RUN: OnceLock<Run> = OnceLock::new();
        RUN.get_or_init(|| run(150, 200, Untidy::default()))
    }

    #[test]
    fn devices_draw_rhythms_joining_and_schedules_in_the_configured_shares() {
        let f = fleet(4000, 1, Untidy::default());
        let n = f.len() as f64;
        let share = |pred: &dyn Fn(&DeviceVariety) -> bool| {
            (0..f.len())
                .filter(|&i| pred(f.sim_device(i).variety().expect("untidy")))
                .count() as f64
                / n
        };
        for (h, pct) in RHYTHMS_H.into_iter().zip([50.0, 20.0, 20.0, 10.0]) {
            let s = share(&|v| v.every_h == h);
            assert!(
                (s * 100.0 - pct).abs() < 2.5,
                "{h} h: {s:.3}, expected {pct} %"
            );
        }
        let joining = share(&|v| v.aged);
        assert!((joining - 0.3).abs() < 0.025, "joining {joining:.3}");
        let joined_late = share(&|v| v.joins_at_sim > 0.0);
        assert!(
            joined_late > 0.28,
            "joining on day 0 is rare: {joined_late:.3}"
        );
        assert!(share(&|v| v.joins_at_sim >= 24.0 * 360.0) == 0.0);
        let scheduled = share(&|v| v.scheduled);
        assert!((scheduled - 0.5).abs() < 0.025, "scheduled {scheduled:.3}");
    }

    #[test]
    fn a_device_logs_at_most_one_reading_per_beat_of_its_rhythm() {
        let r = untidy_run();
        let data = r.rec.snapshot(start() + Duration::days(i64::from(r.days)));
        let index: BTreeMap<_, _> = r
            .fleet
            .devices()
            .enumerate()
            .map(|(i, d)| (d.serial, i))
            .collect();
        let mut full_days = BTreeMap::<u32, usize>::new();
        for d in &data.devices {
            let i = index[&d.serial];
            let every = r.fleet.report_every_hours(i).expect("device");
            let per_day = (24.0 / every) as u32;
            let days = &d.daily["runtime_hours"];
            assert!(
                days.iter().all(|x| x.count <= per_day),
                "{}: a {every} h device logged {:?} readings in a day",
                d.serial,
                days.iter().map(|x| x.count).max()
            );
            *full_days.entry(per_day).or_default() +=
                days.iter().filter(|x| x.count == per_day).count();
        }
        // every rhythm shows its full days (a 6 h device: 4 readings)
        for per_day in [24, 12, 4, 1] {
            assert!(
                full_days.get(&per_day).is_some_and(|&n| n > 100),
                "{full_days:?}"
            );
        }
    }

    #[test]
    fn offline_stretches_leave_no_readings_and_the_device_shows_offline() {
        let r = untidy_run();
        assert_eq!(r.stray_readings, 0);
        let stretches: Vec<(usize, f64, f64)> = r
            .offline
            .iter()
            .enumerate()
            .flat_map(|(i, s)| s.iter().map(move |&(a, b)| (i, a, b)))
            .collect();
        let hours = |&(_, a, b): &(usize, f64, f64)| b - a + 1.0;
        let total: f64 = stretches.iter().map(hours).sum();
        let share = total / (r.offline.len() as f64 * f64::from(r.days) * 24.0);
        assert!((0.02..0.12).contains(&share), "offline share {share:.3}");
        let longest = stretches.iter().map(hours).fold(0.0, f64::max);
        let shortest = stretches.iter().map(hours).fold(f64::INFINITY, f64::min);
        assert!(
            longest > 7.0 * 24.0 && shortest < 12.0,
            "{shortest} h .. {longest} h"
        );

        // two days into a stretch of at least three, the device is offline, last seen
        // before it began
        let &(i, from, _) = stretches
            .iter()
            .find(|s| hours(s) >= 72.0 && s.1 > r.fleet.joins_at_hours(s.0).unwrap_or(0.0) + 48.0)
            .expect("a stretch of three days");
        let as_of = at(from + 48.0);
        let serial = r.fleet.device(i).expect("device").serial;
        let data = r.rec.snapshot(as_of);
        let d = data
            .devices
            .iter()
            .find(|d| d.serial == serial)
            .expect("in the snapshot");
        assert_eq!(d.connection, ConnectionState::Offline);
        assert!(
            d.last_seen_at.is_some_and(|t| t < at(from)),
            "{:?}",
            d.last_seen_at
        );
    }

    #[test]
    fn scheduled_replacements_are_in_the_truth_and_restart_the_part() {
        let r = untidy_run();
        let data = r.rec.snapshot(start() + Duration::days(i64::from(r.days)));
        let mut by_mode = BTreeMap::<&str, usize>::new();
        for e in &r.truth {
            let TruthEvent::ScheduledReplacement {
                serial,
                failure_mode,
                ts,
                component_hours,
                ..
            } = e
            else {
                continue;
            };
            *by_mode.entry(failure_mode.as_str()).or_default() += 1;
            let (_, share) = SCHEDULED_PARTS
                .iter()
                .find(|(m, _)| m == failure_mode)
                .expect("only scheduled parts");
            let every = share * failure_mode_spec(failure_mode).eta_hours;
            assert!(
                *component_hours >= (1.0 - SCHEDULE_JITTER) * every - 1.0,
                "{serial} {failure_mode}: replaced at {component_hours} h"
            );
            let d = data
                .devices
                .iter()
                .find(|d| d.serial == *serial)
                .expect("device");
            assert!(
                d.replacements
                    .iter()
                    .any(|x| x.part == *failure_mode && x.at == *ts),
                "{serial}: the history shows the replacement"
            );
            if failure_mode == "sieve_bed" {
                // the part's hour meter starts again
                let day = d.daily["sieve_bed_hours"]
                    .iter()
                    .find(|x| x.day + Duration::days(1) > *ts);
                // (none when the replacement came on the last, open, day)
                if let Some(day) = day {
                    assert!(
                        day.min < 0.5 * component_hours,
                        "{serial}: sieve_bed_hours {} after replacing a {component_hours} h part",
                        day.min
                    );
                }
            }
            // the next failure of the part, if any, is a new part's
            for f in r
                .truth
                .iter()
                .filter(|f| f.serial() == serial && f.ts() > *ts)
            {
                if let TruthEvent::Failure {
                    failure_mode: m,
                    component_fitted_in_sim,
                    ..
                } = f
                    && m == failure_mode
                {
                    assert!(component_fitted_in_sim);
                }
            }
        }
        assert!(
            by_mode.get("sieve_bed").is_some_and(|&n| n >= 5)
                && by_mode.get("battery").is_some_and(|&n| n >= 5),
            "{by_mode:?}"
        );
    }

    #[test]
    fn late_joiners_start_then_with_aged_parts() {
        let r = untidy_run();
        let mut meters = Vec::new();
        for i in 0..r.fleet.len() {
            let joins = r.fleet.joins_at_hours(i).expect("device");
            if joins == 0.0 || joins >= 24.0 * f64::from(r.days) {
                continue; // from the start, or after the run
            }
            let serial = r.fleet.device(i).expect("device").serial;
            assert!(
                r.truth
                    .iter()
                    .all(|e| e.serial() != &serial || e.ts() > at(joins)),
                "{serial}: nothing happens before it joins"
            );
            let before = r.rec.snapshot(at(joins) - Duration::hours(1));
            assert!(before.devices.iter().all(|d| d.serial != serial));
            let after = r.rec.snapshot(start() + Duration::days(i64::from(r.days)));
            let d = after
                .devices
                .iter()
                .find(|d| d.serial == serial)
                .expect("in the fleet once joined");
            assert_eq!(d.registered_at, at(joins));
            assert!(d.daily.values().flatten().all(|x| x.day >= at(joins)));
            let field = ["sieve_bed_hours", "blower_hours"]
                .into_iter()
                .find(|f| d.daily.contains_key(*f))
                .expect("a part meter");
            if let Some(first) = d.daily[field].first() {
                meters.push(first.min);
            }
        }
        meters.sort_by(f64::total_cmp);
        assert!(meters.len() >= 20, "{} joiners", meters.len());
        // parts aged uniformly up to 0.8 η (15 000–18 000 h): median near 6 000 h
        let median = meters[meters.len() / 2];
        assert!(
            (3_000.0..10_000.0).contains(&median),
            "median part age {median}"
        );
    }

    #[test]
    fn warnings_lead_failures_by_hours_to_weeks_and_some_failures_have_none() {
        // hourly readings without gaps, parts aged from day 0: every alarm is seen
        let r = run(
            150,
            200,
            Untidy {
                rhythm_mix_pct: [100, 0, 0, 0],
                gap_mean_interval_days: 0,
                scheduled_share_pct: 0,
                joining_share_pct: 100,
                join_within_days: 1,
                ..Untidy::default()
            },
        );
        let data = r.rec.snapshot(start() + Duration::days(i64::from(r.days)));
        let devices: BTreeMap<_, _> = data.devices.iter().map(|d| (d.serial.clone(), d)).collect();
        let is_warning = |model: &Option<String>, code: &str| {
            model
                .as_deref()
                .and_then(|m| severity(m, code))
                .is_some_and(|s| s == Severity::Warning)
        };
        let (mut leads, mut unwarned, mut failures) = (Vec::new(), 0, 0);
        for e in &r.truth {
            let TruthEvent::Failure {
                serial,
                ts,
                precursor_start,
                precursor_strength,
                ..
            } = e
            else {
                continue;
            };
            failures += 1;
            let d = devices[serial];
            let warnings = || d.alarms.iter().filter(|a| is_warning(&d.model, &a.code));
            if !warnings().any(|a| a.started_at <= *ts && *ts - a.started_at < Duration::days(21)) {
                unwarned += 1;
            }
            let (Some(p), true) = (precursor_start, *precursor_strength >= 1.0) else {
                continue;
            };
            assert!(
                warnings().any(|a| a.started_at <= p.ts && a.ended_at.is_none_or(|e| e > p.ts)),
                "{serial}: no warning as the precursor of the failure at {ts} began"
            );
            leads.push((*ts - p.ts).num_minutes() as f64 / 60.0);
        }
        let n = leads.len() as f64;
        let below_12h = leads.iter().filter(|&&h| h < 12.0).count() as f64 / n;
        let above_7d = leads.iter().filter(|&&h| h > 7.0 * 24.0).count() as f64 / n;
        assert!(
            leads.len() >= 20 && below_12h > 0.1 && above_7d > 0.05,
            "{} leads, {below_12h:.2} below 12 h, {above_7d:.2} above 7 days",
            leads.len()
        );
        assert!(
            unwarned > 0 && unwarned < failures,
            "{unwarned} of {failures} failures without a warning"
        );
        // and warnings that no failure follows
        let false_alarms = data
            .devices
            .iter()
            .flat_map(|d| {
                d.alarms
                    .iter()
                    .filter(|a| is_warning(&d.model, &a.code))
                    .filter(|a| {
                        !d.failures.iter().any(|f| {
                            f.at >= a.started_at && f.at - a.started_at < Duration::days(21)
                        })
                    })
            })
            .count();
        assert!(
            false_alarms > 50,
            "{false_alarms} warnings without a failure"
        );
    }

    #[test]
    fn an_untidy_device_does_not_depend_on_the_fleet_size() {
        let (mut small, mut large) = (
            fleet(10, 4, Untidy::default()),
            fleet(25, 4, Untidy::default()),
        );
        for k in 0..30 * 24 {
            let ts = at(f64::from(k));
            let (s, l) = (small.step_samples(1.0, ts), large.step_samples(1.0, ts));
            assert_eq!(s[..], l[..10]);
        }
        let first_ten = |f: &Fleet| -> Vec<TruthEvent> {
            f.ground_truth()
                .iter()
                .filter(|e| e.serial().as_str() <= "UT-000010")
                .cloned()
                .collect()
        };
        assert_eq!(first_ten(&small), first_ten(&large));
    }
}
