//! The fleet's history as the predictors read it ([`PredictionData`]), built in process
//! from [`Fleet::step_samples`] and the ground truth the way the store builds it from
//! readings: each reading goes into its hour's rollup (count, sum, min, max, last), and the
//! hourly rollups are folded into one [`FieldDay`] per UTC day (count and sum added, min
//! and max taken, `last` of the latest hour); alarm codes that appear and disappear
//! between readings are alarm episodes; failures (`source = "alarm"`, as the failure
//! alarm's episode gives them) and repairs and consumable replacements (as their
//! completed orders give them) come from the ground truth.
//!
//! A device that logs nothing in a step (the untidy profile's rhythms, offline stretches
//! and late joiners) adds nothing: its days have fewer readings, or none. A device is
//! registered when it joins the fleet and appears in snapshots from then on; it is
//! offline (`connection`, `last_seen_at`) when it has not reported for more than
//! [`OFFLINE_AFTER_H`] hours, and otherwise online and seen at the snapshot's time.
//!
//! Hourly points ([`DeviceHistory::recent_hourly`]) are not kept: a two-year history of
//! thousands of devices would not fit in memory, and the daily summaries carry what the
//! predictors need.

use std::collections::BTreeMap;

use chrono::{DateTime, Duration, Utc};
use fleetpulse_domain::AlarmCode;
use fleetpulse_domain::catalog::Catalog;
use fleetpulse_domain::device::{ConnectionState, Criticality, LifecycleStatus};
use fleetpulse_domain::prediction::{
    AlarmSpan, DeviceHistory, FailureLabel, FieldDay, PredictionData, Replacement,
};

use crate::device::DeviceSample;
use crate::fleet::Fleet;
use crate::truth::TruthEvent;

/// Hours without a reading after which a device counts as offline: a day and an hour,
/// so that the slowest rhythm (one reading a day) stays online.
pub const OFFLINE_AFTER_H: i64 = 25;

#[derive(Clone, Copy, Debug)]
struct Acc {
    count: u32,
    sum: f64,
    min: f64,
    max: f64,
    last: f64,
}

impl Acc {
    fn new(v: f64) -> Self {
        Acc {
            count: 1,
            sum: v,
            min: v,
            max: v,
            last: v,
        }
    }
    fn add(&mut self, v: f64) {
        self.count += 1;
        self.sum += v;
        self.min = self.min.min(v);
        self.max = self.max.max(v);
        self.last = v;
    }
    /// Folds a finished hour into the day.
    fn fold(&mut self, hour: &Acc) {
        self.count += hour.count;
        self.sum += hour.sum;
        self.min = self.min.min(hour.min);
        self.max = self.max.max(hour.max);
        self.last = hour.last;
    }
}

struct DeviceRec {
    fields: Vec<String>,
    hour: Option<i64>,
    hour_acc: Vec<Option<Acc>>,
    day: Option<i64>,
    day_acc: Vec<Option<Acc>>,
    daily: Vec<Vec<FieldDay>>,
    active: BTreeMap<AlarmCode, usize>,
    alarms: Vec<AlarmSpan>,
    failures: Vec<FailureLabel>,
    replacements: Vec<Replacement>,
    last_runtime: f64,
    /// The latest reading's time.
    last_ts: Option<DateTime<Utc>>,
    /// (last reading before, first reading after) of each silence longer than
    /// [`OFFLINE_AFTER_H`].
    silences: Vec<(DateTime<Utc>, DateTime<Utc>)>,
}

/// Records a fleet's readings and ground truth into [`DeviceHistory`] rows.
pub struct HistoryRecorder {
    start: DateTime<Utc>,
    devices: Vec<DeviceRec>,
    models: Vec<Option<String>>,
    kinds: Vec<String>,
    criticality: Vec<Criticality>,
    registered: Vec<DateTime<Utc>>,
    serials: Vec<fleetpulse_domain::Serial>,
    index: BTreeMap<String, usize>,
    /// Failure alarm code → failure mode, per model.
    failure_codes: BTreeMap<(String, String), String>,
}

fn hour_of(t: DateTime<Utc>) -> i64 {
    t.timestamp().div_euclid(3600)
}

fn at_hour(h: i64) -> DateTime<Utc> {
    DateTime::from_timestamp(h * 3600, 0).unwrap_or_default()
}

impl HistoryRecorder {
    /// A recorder for `fleet` started at `start`: its devices are registered then, or
    /// when they join ([`Fleet::joins_at_hours`]).
    pub fn new(fleet: &Fleet, catalog: &Catalog, start: DateTime<Utc>) -> Self {
        let mut devices = Vec::with_capacity(fleet.len());
        let (mut models, mut kinds, mut criticality, mut serials, mut registered) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
        let mut index = BTreeMap::new();
        for (i, info) in fleet.devices().enumerate() {
            let fields = fleet.field_names(i).unwrap_or_default();
            let n = fields.len();
            devices.push(DeviceRec {
                fields,
                hour: None,
                hour_acc: vec![None; n],
                day: None,
                day_acc: vec![None; n],
                daily: vec![Vec::new(); n],
                active: BTreeMap::new(),
                alarms: Vec::new(),
                failures: Vec::new(),
                replacements: Vec::new(),
                last_runtime: 0.0,
                last_ts: None,
                silences: Vec::new(),
            });
            let joins = fleet.joins_at_hours(i).unwrap_or(0.0);
            registered.push(start + Duration::seconds((joins * 3600.0).round() as i64));
            let spec = catalog.model(&info.model);
            criticality.push(spec.map_or(Criticality::Standard, |m| m.default_criticality));
            kinds.push(info.kind.as_str().to_owned());
            models.push(Some(info.model.clone()));
            index.insert(info.serial.to_string(), i);
            serials.push(info.serial);
        }
        let mut failure_codes = BTreeMap::new();
        for m in catalog.models() {
            for a in &m.alarms {
                if let (true, Some(mode)) = (a.counts_as_failure, &a.failure_mode) {
                    failure_codes.insert((m.id.to_string(), a.code.to_string()), mode.clone());
                }
            }
        }
        HistoryRecorder {
            start,
            devices,
            models,
            kinds,
            criticality,
            registered,
            serials,
            index,
            failure_codes,
        }
    }

    /// Takes one step's readings, all stamped `ts`, in device order (`None`: the device
    /// logged nothing). Hours and days that `ts` has passed are closed for every device.
    pub fn record(&mut self, samples: &[Option<DeviceSample>], ts: DateTime<Utc>) {
        let hour = hour_of(ts);
        let day = hour.div_euclid(24);
        for (d, s) in self.devices.iter_mut().zip(samples) {
            if d.hour.is_some_and(|h| h != hour) {
                d.close_hour();
                d.hour = None;
            }
            if d.day.is_some_and(|x| x != day) {
                d.close_day();
                d.day = None;
            }
            let Some(s) = s else { continue };
            d.hour = Some(hour);
            d.day = Some(day);
            if let Some(prev) = d.last_ts
                && ts - prev > Duration::hours(OFFLINE_AFTER_H)
            {
                d.silences.push((prev, ts));
            }
            d.last_ts = Some(ts);
            for (acc, &v) in d.hour_acc.iter_mut().zip(&s.values) {
                match acc {
                    Some(a) => a.add(v),
                    None => *acc = Some(Acc::new(v)),
                }
            }
            d.last_runtime = s.values.first().copied().unwrap_or(d.last_runtime);
            // alarm episodes
            let ended: Vec<AlarmCode> = d
                .active
                .keys()
                .filter(|c| !s.alarms.contains(c))
                .cloned()
                .collect();
            for c in ended {
                if let Some(i) = d.active.remove(&c) {
                    d.alarms[i].ended_at = Some(ts);
                }
            }
            for c in &s.alarms {
                if !d.active.contains_key(c) {
                    d.active.insert(c.clone(), d.alarms.len());
                    d.alarms.push(AlarmSpan {
                        code: c.to_string(),
                        started_at: ts,
                        ended_at: None,
                        runtime_hours_at_start: Some(d.last_runtime),
                    });
                }
            }
        }
    }

    /// Takes ground-truth events: failures, repairs (the failed part replaced),
    /// consumable replacements and scheduled replacements.
    pub fn record_truth(&mut self, events: &[TruthEvent]) {
        for e in events {
            let Some(&i) = self.index.get(e.serial().as_str()) else {
                continue;
            };
            let d = &mut self.devices[i];
            match e {
                TruthEvent::Failure {
                    failure_mode,
                    alarm_code,
                    ts,
                    runtime_hours,
                    ..
                } => d.failures.push(FailureLabel {
                    at: *ts,
                    runtime_hours: Some(*runtime_hours),
                    failure_mode: Some(failure_mode.clone()),
                    code: Some(alarm_code.to_string()),
                    source: "alarm".into(),
                    retracted: false,
                }),
                // a repair and a preventive replacement both put a new part in
                TruthEvent::Repair {
                    failure_mode,
                    ts,
                    runtime_hours,
                    ..
                }
                | TruthEvent::ScheduledReplacement {
                    failure_mode,
                    ts,
                    runtime_hours,
                    ..
                } => d.replacements.push(Replacement {
                    part: failure_mode.clone(),
                    at: *ts,
                    runtime_hours: Some(*runtime_hours),
                    component: None,
                }),
                TruthEvent::ConsumableReplaced {
                    consumable,
                    ts,
                    runtime_hours,
                    ..
                } => d.replacements.push(Replacement {
                    part: consumable.clone(),
                    at: *ts,
                    runtime_hours: Some(*runtime_hours),
                    component: Some(consumable.clone()),
                }),
            }
        }
    }

    /// The failure mode of a failure alarm code of a model.
    pub fn failure_mode(&self, model: &str, code: &str) -> Option<&str> {
        self.failure_codes
            .get(&(model.to_owned(), code.to_owned()))
            .map(String::as_str)
    }

    /// Every device's history so far (complete days only: the current day is left out),
    /// as of `as_of`; a device that joins the fleet after `as_of` is not in it.
    pub fn snapshot(&self, as_of: DateTime<Utc>) -> PredictionData {
        let devices = (0..self.devices.len())
            .filter(|&i| self.registered[i] <= as_of)
            .map(|i| {
                let d = &self.devices[i];
                let (connection, last_seen_at) = d.seen(as_of);
                let daily = d
                    .fields
                    .iter()
                    .zip(&d.daily)
                    .map(|(f, v)| {
                        let n = v.partition_point(|x| x.day < as_of);
                        (f.clone(), v[..n].to_vec())
                    })
                    .collect();
                DeviceHistory {
                    serial: self.serials[i].clone(),
                    model: self.models[i].clone(),
                    kind: Some(self.kinds[i].clone()),
                    region: None,
                    status: LifecycleStatus::AtCustomer,
                    criticality: self.criticality[i],
                    registered_at: self.registered[i],
                    commissioned_at: None,
                    connection,
                    last_seen_at: Some(last_seen_at),
                    last_disconnect: None,
                    daily,
                    recent_hourly: BTreeMap::new(),
                    alarms: d
                        .alarms
                        .iter()
                        .filter(|a| a.started_at < as_of)
                        .map(|a| AlarmSpan {
                            ended_at: a.ended_at.filter(|e| *e < as_of),
                            ..a.clone()
                        })
                        .collect(),
                    failures: d
                        .failures
                        .iter()
                        .filter(|f| f.at < as_of)
                        .cloned()
                        .collect(),
                    replacements: d
                        .replacements
                        .iter()
                        .filter(|r| r.at < as_of)
                        .cloned()
                        .collect(),
                    outcomes: Vec::new(),
                }
            })
            .collect();
        let days = (as_of - self.start).num_days().max(0) as u32;
        PredictionData {
            as_of: Some(as_of),
            history_days: days,
            recent_days: 0,
            devices,
        }
    }
}

impl DeviceRec {
    /// Connection state at `as_of`: offline, last seen at its last reading, when that
    /// was more than [`OFFLINE_AFTER_H`] before; else online, seen at `as_of`.
    fn seen(&self, as_of: DateTime<Utc>) -> (ConnectionState, DateTime<Utc>) {
        let silent_since = self
            .silences
            .iter()
            .find(|(from, to)| *from < as_of && as_of <= *to)
            .map(|s| s.0)
            .or(self.last_ts.filter(|t| *t < as_of));
        match silent_since {
            Some(t) if as_of - t > Duration::hours(OFFLINE_AFTER_H) => {
                (ConnectionState::Offline, t)
            }
            _ => (ConnectionState::Online, as_of),
        }
    }

    fn close_hour(&mut self) {
        for (day, hour) in self.day_acc.iter_mut().zip(self.hour_acc.iter_mut()) {
            if let Some(h) = hour.take() {
                match day {
                    Some(d) => d.fold(&h),
                    None => *day = Some(h),
                }
            }
        }
    }

    fn close_day(&mut self) {
        self.close_hour();
        let Some(day) = self.day else { return };
        for (series, acc) in self.daily.iter_mut().zip(self.day_acc.iter_mut()) {
            if let Some(a) = acc.take() {
                series.push(FieldDay {
                    day: at_hour(day * 24),
                    count: a.count,
                    mean: a.sum / f64::from(a.count),
                    min: a.min,
                    max: a.max,
                    last: a.last,
                });
            }
        }
    }
}

/// Runs `fleet` for `days` simulated days in steps of one hour, stamping readings and
/// ground truth with simulated time (`start` + simulated hours − 1 minute, so a step's
/// reading falls in the hour it simulated), and returns the recorder and the truth.
pub fn simulate(
    fleet: &mut Fleet,
    catalog: &Catalog,
    start: DateTime<Utc>,
    days: u32,
) -> (HistoryRecorder, Vec<TruthEvent>) {
    let mut rec = HistoryRecorder::new(fleet, catalog, start);
    let mut truth = Vec::new();
    for _ in 0..days * 24 {
        let ts = start + Duration::minutes(((fleet.sim_hours() + 1.0) * 60.0) as i64 - 1);
        let samples = fleet.step_samples(1.0, ts);
        rec.record(&samples, ts);
        let events = fleet.take_ground_truth();
        rec.record_truth(&events);
        truth.extend(events);
    }
    (rec, truth)
}
