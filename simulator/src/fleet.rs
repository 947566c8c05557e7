//! The simulated fleet: devices spread over the catalog's models, stepped together.
//! Pure: no I/O, no clock.
//!
//! # Determinism
//! Device `i` is drawn from `ChaCha8Rng` seeded with the fleet seed on streams `2i`
//! (physics) and `2i + 1` (reading noise), and gets model `i mod (number of models)` in
//! catalog order. The same seed, catalog and sequence of `step` arguments give
//! byte-identical payloads and ground truth; a device's life does not depend on how many
//! other devices there are, nor on whether its readings were produced.
//!
//! # Time
//! `step(sim_dt_hours, wall_ts)` advances every device's physics (runtime, wear,
//! failures, repairs) by `sim_dt_hours` of simulated time, while the readings carry the
//! wall-clock `wall_ts`: the service validates device timestamps like real ones
//! (skew, age), and the speed factor only accelerates what happens to the devices.
//! Consequently "10 days of precursor" in simulated time may pass in a few wall minutes.

use bytes::Bytes;
use chrono::{DateTime, SubsecRound, Utc};
use fleetpulse_domain::telemetry::telemetry_topic;
use fleetpulse_domain::{Catalog, Serial};
use serde::{Deserialize, Serialize};

use crate::device::{DeviceInfo, DeviceSample, SimDevice};
use crate::truth::TruthEvent;
use crate::untidy::Untidy;

/// The shape of a simulated fleet.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FleetConfig {
    /// Number of devices.
    pub devices: usize,
    /// Seed: the same seed gives the same fleet, readings and failures.
    pub seed: u64,
    /// Serial prefix: device `i` is `{prefix}-{i + 1:06}`.
    pub serial_prefix: String,
    /// The untidy profile (mixed reporting rhythms, offline stretches, scheduled
    /// replacements, devices joining mid-life, alarm leads from hours to weeks; see
    /// [`Untidy`]). Absent (the default): every device reports at every step from the
    /// start, as the fleet always did.
    #[serde(default)]
    pub untidy: Option<Untidy>,
}

/// Why a fleet cannot be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FleetError {
    #[error("serial prefix {prefix:?} does not make valid serials ({example:?}): {reason}")]
    BadSerialPrefix {
        prefix: String,
        example: String,
        reason: String,
    },
}

/// One reading ready to publish.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message {
    /// Index of the device in the fleet.
    pub device: usize,
    pub serial: Serial,
    /// The reading's `seq` (also inside the payload).
    pub seq: u64,
    /// The v1 JSON payload.
    pub payload: Bytes,
}

impl Message {
    /// The topic the reading is published to.
    pub fn topic(&self) -> String {
        telemetry_topic(&self.serial)
    }
}

/// A deterministic fleet of simulated devices with ground truth.
#[derive(Clone, Debug)]
pub struct Fleet {
    devices: Vec<SimDevice>,
    sim_hours: f64,
    truth: Vec<TruthEvent>,
}

/// The serial of device `index`.
pub fn serial_for(prefix: &str, index: usize) -> String {
    format!("{prefix}-{:06}", index + 1)
}

impl Fleet {
    /// Builds the fleet: device `i` gets model `i mod n` of the catalog's models (in id
    /// order) and its own random life (see the module documentation).
    pub fn new(cfg: &FleetConfig, catalog: &Catalog) -> Result<Self, FleetError> {
        let models: Vec<_> = catalog.models().collect();
        let mut devices = Vec::with_capacity(cfg.devices);
        for i in 0..cfg.devices {
            let text = serial_for(&cfg.serial_prefix, i);
            let serial = Serial::parse(&text).map_err(|e| FleetError::BadSerialPrefix {
                prefix: cfg.serial_prefix.clone(),
                example: text.clone(),
                reason: e.to_string(),
            })?;
            let model = models[i % models.len()];
            devices.push(SimDevice::new(
                cfg.seed,
                i,
                serial,
                model,
                cfg.untidy.as_ref(),
            ));
        }
        Ok(Fleet {
            devices,
            sim_hours: 0.0,
            truth: Vec::new(),
        })
    }

    pub fn len(&self) -> usize {
        self.devices.len()
    }

    pub fn is_empty(&self) -> bool {
        self.devices.is_empty()
    }

    /// Simulated hours since the fleet started.
    pub fn sim_hours(&self) -> f64 {
        self.sim_hours
    }

    /// Serial, model, kind and firmware of device `index`.
    pub fn device(&self, index: usize) -> Option<DeviceInfo> {
        self.devices.get(index).map(SimDevice::info)
    }

    /// The runtime meter of device `index` now.
    pub fn runtime_hours(&self, index: usize) -> Option<f64> {
        self.devices.get(index).map(SimDevice::runtime_hours)
    }

    /// Mean share of the day device `index` runs (its runtime meter advances this many
    /// hours per hour, on average).
    pub fn usage_fraction(&self, index: usize) -> Option<f64> {
        self.devices.get(index).map(SimDevice::usage_fraction)
    }

    /// Device `index`'s failure-mode components and their ages in runtime hours now: at
    /// the start, an original part's age is the runtime meter, a part replaced before the
    /// simulation is younger.
    pub fn component_ages(&self, index: usize) -> Option<Vec<(String, f64)>> {
        self.devices.get(index).map(SimDevice::component_ages)
    }

    /// Simulated hour at which device `index` joins the fleet: 0 unless the untidy
    /// profile has it join later (it reports nothing before).
    pub fn joins_at_hours(&self, index: usize) -> Option<f64> {
        self.devices.get(index).map(SimDevice::joins_at_hours)
    }

    /// Simulated hours between two readings of device `index`: 1 unless the untidy
    /// profile gave it a slower rhythm.
    pub fn report_every_hours(&self, index: usize) -> Option<f64> {
        self.devices.get(index).map(SimDevice::report_every_hours)
    }

    /// Every device's static facts, in index order.
    pub fn devices(&self) -> impl Iterator<Item = DeviceInfo> + '_ {
        self.devices.iter().map(SimDevice::info)
    }

    /// Advances every device by `sim_dt_hours` of simulated time and returns one
    /// reading per device, timestamped `wall_ts`.
    pub fn step(&mut self, sim_dt_hours: f64, wall_ts: DateTime<Utc>) -> Vec<Message> {
        self.step_where(sim_dt_hours, wall_ts, |_| true)
    }

    /// Like [`Fleet::step`], but device `i` produces a reading only when `produce(i)`:
    /// a device whose firmware cannot store another reading lives on without logging
    /// one (no `seq` is used up, so the service sees a gap in time, not in `seq`). With
    /// the untidy profile, a device also logs nothing between the beats of its rhythm,
    /// in its offline stretches and before it joins.
    pub fn step_where(
        &mut self,
        sim_dt_hours: f64,
        wall_ts: DateTime<Utc>,
        mut produce: impl FnMut(usize) -> bool,
    ) -> Vec<Message> {
        let (dt, wall_ts) = self.tick(sim_dt_hours, wall_ts);
        let mut out = Vec::with_capacity(self.devices.len());
        for (i, d) in self.devices.iter_mut().enumerate() {
            d.advance(dt, self.sim_hours, wall_ts, &mut self.truth);
            if d.reports() && produce(i) {
                let (seq, payload) = d.reading(wall_ts);
                out.push(Message {
                    device: i,
                    serial: d.serial.clone(),
                    seq,
                    payload,
                });
            }
        }
        out
    }

    /// The names of device `index`'s sample values, in order (`runtime_hours` first).
    pub fn field_names(&self, index: usize) -> Option<Vec<String>> {
        self.devices.get(index).map(SimDevice::field_names)
    }

    /// Like [`Fleet::step`], but each device's reading comes as numbers (the values and
    /// alarms its payload would carry, without JSON), in device order, `None` for a
    /// device that logs nothing this step (untidy profile only): for in-process
    /// consumers such as the prediction benchmark. `wall_ts` stamps the ground truth.
    pub fn step_samples(
        &mut self,
        sim_dt_hours: f64,
        wall_ts: DateTime<Utc>,
    ) -> Vec<Option<DeviceSample>> {
        let (dt, wall_ts) = self.tick(sim_dt_hours, wall_ts);
        let mut out = Vec::with_capacity(self.devices.len());
        for d in &mut self.devices {
            d.advance(dt, self.sim_hours, wall_ts, &mut self.truth);
            out.push(d.reports().then(|| d.sample()));
        }
        out
    }

    /// Device `index` itself, for the profile's tests.
    #[cfg(test)]
    pub(crate) fn sim_device(&self, index: usize) -> &SimDevice {
        &self.devices[index]
    }

    /// Moves the simulated clock by `sim_dt_hours` (0 when negative or not finite) and
    /// gives that step and `wall_ts` to the millisecond: readings carry milliseconds, and
    /// the ground truth names the same instant.
    fn tick(&mut self, sim_dt_hours: f64, wall_ts: DateTime<Utc>) -> (f64, DateTime<Utc>) {
        let dt = if sim_dt_hours.is_finite() {
            sim_dt_hours.max(0.0)
        } else {
            0.0
        };
        self.sim_hours += dt;
        (dt, wall_ts.trunc_subsecs(3))
    }

    /// Advances every device without producing readings (fast-forward; the devices'
    /// lives are the same as with [`Fleet::step`]).
    pub fn advance(&mut self, sim_dt_hours: f64, wall_ts: DateTime<Utc>) {
        self.step_where(sim_dt_hours, wall_ts, |_| false);
    }

    /// The ground truth recorded so far and not yet taken.
    pub fn ground_truth(&self) -> &[TruthEvent] {
        &self.truth
    }

    /// Takes the ground truth recorded since the last take (the runner writes it out as
    /// it goes, so a long run does not hold it all in memory).
    pub fn take_ground_truth(&mut self) -> Vec<TruthEvent> {
        std::mem::take(&mut self.truth)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};
    use std::sync::OnceLock;

    use chrono::{Duration, TimeZone};
    use fleetpulse_domain::telemetry::{TelemetryLimits, parse_telemetry};

    use super::*;
    use crate::failure::failure_mode_spec;

    /// Two concentrator and two ventilator models; every failure mode of the table plus
    /// one the table does not know; warnings, infos and a consumable alarm.
    const CATALOG: &str = r#"
[[model]]
id = "OC-A"
name = "Concentrator A"
kind = "oxygen_concentrator"
default_criticality = "high"
service_interval_hours = 5000
service_skill = "concentrator_service"
service_labour_minutes = 60
[[model.consumable]]
id = "filter"
name = "Inlet filter"
field = "filter_life_pct"
order_at_pct = 15
rated_life_hours = 2000
skill = "basic_maintenance"
labour_minutes = 15
[[model.alarm]]
code = "E101"
title = "Compressor failure"
severity = "critical"
category = "hardware"
counts_as_failure = true
failure_mode = "compressor"
solution = "Replace the compressor"
labour_minutes = 120
skill = "concentrator_repair"
[[model.alarm]]
code = "E102"
title = "Low purity"
severity = "critical"
category = "hardware"
counts_as_failure = true
failure_mode = "sieve_bed"
solution = "Replace the sieve beds"
labour_minutes = 90
skill = "concentrator_repair"
[[model.alarm]]
code = "E103"
title = "Over-temperature"
severity = "critical"
category = "hardware"
counts_as_failure = true
failure_mode = "cooling"
solution = "Replace the fan"
labour_minutes = 60
skill = "concentrator_repair"
[[model.alarm]]
code = "W201"
title = "Low flow"
severity = "warning"
category = "operation"
counts_as_failure = false
solution = "Check the tubing"
labour_minutes = 0
skill = "basic_maintenance"
[[model.alarm]]
code = "W203"
title = "Filter life low"
severity = "info"
category = "consumable"
counts_as_failure = false
solution = "An order follows"
labour_minutes = 0
skill = "basic_maintenance"

[[model]]
id = "OC-B"
name = "Concentrator B"
kind = "oxygen_concentrator"
default_criticality = "high"
service_interval_hours = 4000
service_skill = "concentrator_service"
service_labour_minutes = 60
[[model.consumable]]
id = "filter"
name = "Inlet filter"
field = "filter_life_pct"
order_at_pct = 20
rated_life_hours = 1500
skill = "basic_maintenance"
labour_minutes = 15
[[model.alarm]]
code = "E101"
title = "Compressor failure"
severity = "critical"
category = "hardware"
counts_as_failure = true
failure_mode = "compressor"
solution = "Replace the compressor"
labour_minutes = 120
skill = "concentrator_repair"
[[model.alarm]]
code = "E102"
title = "Low purity"
severity = "critical"
category = "hardware"
counts_as_failure = true
failure_mode = "sieve_bed"
solution = "Replace the sieve beds"
labour_minutes = 90
skill = "concentrator_repair"
[[model.alarm]]
code = "E104"
title = "Rotary valve"
severity = "critical"
category = "hardware"
counts_as_failure = true
failure_mode = "rotary_valve"
solution = "Replace the valve"
labour_minutes = 90
skill = "concentrator_repair"
[[model.alarm]]
code = "P301"
title = "Mains lost"
severity = "warning"
category = "power"
counts_as_failure = false
solution = "Nothing to do"
labour_minutes = 0
skill = "basic_maintenance"

[[model]]
id = "V-A"
name = "Ventilator A"
kind = "ventilator"
default_criticality = "life_supporting"
service_interval_hours = 10000
service_skill = "ventilator_service"
service_labour_minutes = 90
[[model.consumable]]
id = "filter"
name = "Air filter"
field = "filter_life_pct"
order_at_pct = 20
rated_life_hours = 720
skill = "basic_maintenance"
labour_minutes = 10
[[model.alarm]]
code = "V101"
title = "Blower failure"
severity = "critical"
category = "hardware"
counts_as_failure = true
failure_mode = "blower"
solution = "Replace the blower"
labour_minutes = 120
skill = "ventilator_repair"
[[model.alarm]]
code = "V102"
title = "Battery failure"
severity = "critical"
category = "power"
counts_as_failure = true
failure_mode = "battery"
solution = "Replace the battery"
labour_minutes = 45
skill = "ventilator_repair"
[[model.alarm]]
code = "V103"
title = "Pressure sensor fault"
severity = "critical"
category = "sensor"
counts_as_failure = true
failure_mode = "pressure_sensor"
solution = "Replace the sensor"
labour_minutes = 60
skill = "ventilator_repair"
[[model.alarm]]
code = "V201"
title = "High leak"
severity = "warning"
category = "operation"
counts_as_failure = false
solution = "Check the mask"
labour_minutes = 0
skill = "basic_maintenance"
[[model.alarm]]
code = "V401"
title = "Watchdog restart"
severity = "info"
category = "software"
counts_as_failure = false
solution = "None"
labour_minutes = 0
skill = "ventilator_service"

[[model]]
id = "V-B"
name = "Ventilator B"
kind = "ventilator"
default_criticality = "life_supporting"
service_interval_hours = 8000
service_skill = "ventilator_service"
service_labour_minutes = 90
[[model.consumable]]
id = "filter"
name = "Air filter"
field = "filter_life_pct"
order_at_pct = 20
rated_life_hours = 1000
skill = "basic_maintenance"
labour_minutes = 10
[[model.alarm]]
code = "V101"
title = "Blower failure"
severity = "critical"
category = "hardware"
counts_as_failure = true
failure_mode = "blower"
solution = "Replace the blower"
labour_minutes = 120
skill = "ventilator_repair"
[[model.alarm]]
code = "V102"
title = "Battery failure"
severity = "critical"
category = "power"
counts_as_failure = true
failure_mode = "battery"
solution = "Replace the battery"
labour_minutes = 45
skill = "ventilator_repair"
[[model.alarm]]
code = "V109"
title = "Exhalation valve"
severity = "critical"
category = "hardware"
counts_as_failure = true
failure_mode = "exhalation_valve"
solution = "Replace the valve"
labour_minutes = 45
skill = "ventilator_repair"
[[model.alarm]]
code = "V202"
title = "Low battery"
severity = "warning"
category = "power"
counts_as_failure = false
solution = "Plug in"
labour_minutes = 0
skill = "basic_maintenance"
"#;

    const FAILURE_CODES: &[&str] = &[
        "E101", "E102", "E103", "E104", "V101", "V102", "V103", "V109",
    ];

    fn catalog() -> Catalog {
        Catalog::from_toml_str(CATALOG).expect("the test catalog is valid")
    }

    fn fleet(devices: usize, seed: u64) -> Fleet {
        let cfg = FleetConfig {
            devices,
            seed,
            serial_prefix: "SIM".into(),
            untidy: None,
        };
        Fleet::new(&cfg, &catalog()).expect("valid fleet")
    }

    fn t0() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 23, 12, 0, 0)
            .single()
            .expect("valid time")
    }

    fn run_payloads(f: &mut Fleet, steps: usize, dt: f64) -> Vec<Bytes> {
        (0..steps)
            .flat_map(|k| f.step(dt, t0() + Duration::seconds(2 * k as i64)))
            .map(|m| m.payload)
            .collect()
    }

    #[test]
    fn the_same_seed_gives_the_same_payloads_and_truth_and_another_seed_does_not() {
        let (mut a, mut b, mut c) = (fleet(40, 7), fleet(40, 7), fleet(40, 8));
        let (pa, pb, pc) = (
            run_payloads(&mut a, 300, 6.0),
            run_payloads(&mut b, 300, 6.0),
            run_payloads(&mut c, 300, 6.0),
        );
        assert_eq!(pa, pb);
        assert_eq!(a.ground_truth(), b.ground_truth());
        assert!(
            !a.ground_truth().is_empty(),
            "300 steps of 6 h show some events"
        );
        assert_ne!(pa, pc);
        assert_ne!(a.ground_truth(), c.ground_truth());
    }

    #[test]
    fn a_device_does_not_depend_on_the_fleet_size_or_on_skipped_readings() {
        let (mut small, mut large, mut gappy) = (fleet(8, 3), fleet(20, 3), fleet(8, 3));
        for k in 0..200 {
            let ts = t0() + Duration::seconds(k);
            let s = small.step(12.0, ts);
            let l = large.step(12.0, ts);
            assert_eq!(s[..], l[..8]);
            // a device that skips readings lives the same life
            gappy.step_where(12.0, ts, |i| i != 0 || k % 3 == 0);
        }
        let truth_of = |f: &Fleet, n: usize| -> Vec<TruthEvent> {
            f.ground_truth()
                .iter()
                .filter(|e| e.serial().as_str() <= serial_for("SIM", n - 1).as_str())
                .cloned()
                .collect()
        };
        assert_eq!(truth_of(&small, 8), truth_of(&large, 8));
        assert_eq!(small.ground_truth(), gappy.ground_truth());
    }

    #[test]
    fn devices_spread_over_every_model_with_prefixed_serials() {
        let f = fleet(8, 1);
        let models: Vec<String> = f.devices().map(|d| d.model).collect();
        assert_eq!(
            models,
            ["OC-A", "OC-B", "V-A", "V-B", "OC-A", "OC-B", "V-A", "V-B"]
        );
        assert_eq!(
            f.device(0).map(|d| d.serial.to_string()),
            Some("SIM-000001".into())
        );
        let bad = FleetConfig {
            devices: 1,
            seed: 1,
            serial_prefix: "no/slash".into(),
            untidy: None,
        };
        assert!(matches!(
            Fleet::new(&bad, &catalog()),
            Err(FleetError::BadSerialPrefix { .. })
        ));
    }

    /// What the long run kept of each reading.
    struct Kept {
        seq: u64,
        ts: DateTime<Utc>,
        runtime_hours: f64,
        values: BTreeMap<String, f64>,
        alarms: Vec<String>,
    }

    impl Kept {
        fn failed(&self) -> bool {
            self.alarms
                .iter()
                .any(|a| FAILURE_CODES.contains(&a.as_str()))
        }
    }

    struct LongRun {
        by_serial: BTreeMap<String, Vec<Kept>>,
        truth: Vec<TruthEvent>,
        rejections: Vec<String>,
        readings: usize,
    }

    const LONG_DEVICES: usize = 200;
    const LONG_STEPS: usize = 1000;
    const LONG_DT_HOURS: f64 = 4.0;
    const LONG_WALL_STEP_S: i64 = 2;

    /// 200 devices for 4000 simulated hours, every reading parsed by the contract.
    fn long_run() -> &'static LongRun {
        static RUN: OnceLock<LongRun> = OnceLock::new();
        RUN.get_or_init(|| {
            let mut f = fleet(LONG_DEVICES, 42);
            let limits = TelemetryLimits::default();
            let mut run = LongRun {
                by_serial: BTreeMap::new(),
                truth: Vec::new(),
                rejections: Vec::new(),
                readings: 0,
            };
            for k in 0..LONG_STEPS {
                let ts = t0() + Duration::seconds(LONG_WALL_STEP_S * k as i64);
                for m in f.step(LONG_DT_HOURS, ts) {
                    run.readings += 1;
                    for parsed in parse_telemetry(&m.serial, &m.payload, ts, &limits) {
                        match parsed {
                            Ok(r) => {
                                run.by_serial
                                    .entry(m.serial.to_string())
                                    .or_default()
                                    .push(Kept {
                                        seq: r.seq,
                                        ts: r.ts,
                                        runtime_hours: r.runtime_hours().unwrap_or(f64::NAN),
                                        alarms: r
                                            .alarms
                                            .unwrap_or_default()
                                            .iter()
                                            .map(|a| a.to_string())
                                            .collect(),
                                        values: r.values,
                                    })
                            }
                            Err(e) => run
                                .rejections
                                .push(format!("{}: {e}", String::from_utf8_lossy(&m.payload))),
                        }
                    }
                }
            }
            run.truth = f.take_ground_truth();
            run
        })
    }

    #[test]
    fn every_payload_of_a_long_run_passes_the_v1_contract() {
        let run = long_run();
        assert_eq!(run.readings, LONG_DEVICES * LONG_STEPS);
        assert!(
            run.rejections.is_empty(),
            "{} rejected, first: {:?}",
            run.rejections.len(),
            run.rejections.first()
        );
        for (serial, readings) in &run.by_serial {
            let r0 = &readings[0];
            assert!(
                r0.values.contains_key("filter_life_pct")
                    && r0.values.contains_key("runtime_hours")
            );
            let kind_fields: &[&str] = if serial_index(serial) % 4 < 2 {
                &[
                    "o2_purity_pct",
                    "flow_lpm",
                    "outlet_pressure_kpa",
                    "sieve_bed_hours",
                    "temperature_c",
                ]
            } else {
                &[
                    "blower_hours",
                    "tidal_volume_ml",
                    "resp_rate_bpm",
                    "peak_pressure_cmh2o",
                    "leak_lpm",
                    "battery_pct",
                ]
            };
            for field in kind_fields {
                assert!(r0.values.contains_key(*field), "{serial} lacks {field}");
            }
            for (k, pair) in readings.windows(2).enumerate() {
                assert_eq!(pair[0].seq, k as u64 + 1);
                assert_eq!(
                    pair[1].seq,
                    pair[0].seq + 1,
                    "{serial}: seq is monotonic from 1"
                );
                assert!(
                    pair[1].runtime_hours >= pair[0].runtime_hours,
                    "{serial}: the runtime meter never goes back"
                );
            }
        }
    }

    fn serial_index(serial: &str) -> usize {
        let n: usize = serial
            .rsplit('-')
            .next()
            .and_then(|n| n.parse().ok())
            .expect("numbered serial");
        n - 1
    }

    #[test]
    fn a_failure_raises_its_critical_alarm_until_the_repair() {
        let run = long_run();
        let failures: Vec<_> = run
            .truth
            .iter()
            .filter(|e| matches!(e, TruthEvent::Failure { .. }))
            .collect();
        assert!(failures.len() >= 30, "only {} failures", failures.len());
        let mut repaired = 0;
        for f in failures {
            let TruthEvent::Failure {
                serial,
                alarm_code,
                ts,
                ..
            } = f
            else {
                unreachable!()
            };
            let readings = &run.by_serial[serial.as_str()];
            let repair_ts = run.truth.iter().find_map(|e| match e {
                TruthEvent::Repair {
                    serial: s,
                    alarm_code: a,
                    ts: t,
                    ..
                } if s == serial && a == alarm_code && t > ts => Some(*t),
                _ => None,
            });
            let before = readings
                .iter()
                .rfind(|r| r.ts < *ts)
                .expect("a reading before the failure");
            assert!(!before.alarms.contains(&alarm_code.to_string()));
            for r in readings
                .iter()
                .filter(|r| r.ts >= *ts && repair_ts.is_none_or(|rt| r.ts < rt))
            {
                assert!(
                    r.alarms.contains(&alarm_code.to_string()),
                    "{serial}: {alarm_code} active from {ts}"
                );
            }
            if let Some(rt) = repair_ts {
                repaired += 1;
                let after = readings
                    .iter()
                    .find(|r| r.ts >= rt)
                    .expect("the repair's reading");
                assert!(
                    !after.alarms.contains(&alarm_code.to_string()),
                    "{serial}: {alarm_code} cleared at repair"
                );
            }
        }
        assert!(repaired > 0);
    }

    #[test]
    fn a_precursor_visibly_deviates_before_each_failure() {
        let run = long_run();
        let mut checked = BTreeMap::<String, usize>::new();
        for e in &run.truth {
            let TruthEvent::Failure {
                serial,
                failure_mode,
                ts,
                precursor_start,
                precursor_strength,
                ..
            } = e
            else {
                continue;
            };
            let spec = failure_mode_spec(failure_mode);
            let Some(start) = precursor_start else {
                assert!(
                    spec.precursor.is_empty() || *precursor_strength == 0.0,
                    "{failure_mode} has a precursor of strength {precursor_strength} but none was recorded"
                );
                continue;
            };
            if *precursor_strength < 1.0 {
                continue; // a weak precursor may hide in the noise
            }
            let readings = &run.by_serial[serial.as_str()];
            let baseline: Vec<&Kept> = readings
                .iter()
                .filter(|r| r.ts < start.ts && !r.failed())
                .collect();
            if baseline.len() < 3 {
                continue; // the precursor was already running when the simulation began
            }
            let baseline = &baseline[baseline.len() - 3..];
            let last = readings
                .iter()
                .rfind(|r| r.ts < *ts)
                .expect("a reading before the failure");
            for field in &start.fields {
                let shift = spec.shift(field, 1.0);
                let base = baseline.iter().map(|r| r.values[field]).sum::<f64>() / 3.0;
                let deviation = last.values[field] - base;
                assert!(
                    deviation * shift.signum() > 0.5 * shift.abs(),
                    "{serial} {failure_mode}: {field} moved {deviation:+.1} (expected towards {shift:+.1}) before {ts}"
                );
            }
            *checked.entry(failure_mode.clone()).or_default() += 1;
        }
        let total: usize = checked.values().sum();
        assert!(
            total >= 20 && checked.len() >= 4,
            "too few precursors checked: {checked:?}"
        );
    }

    #[test]
    fn a_consumable_is_replaced_some_days_after_its_order_threshold() {
        let run = long_run();
        let mut replaced = 0;
        for e in &run.truth {
            let TruthEvent::ConsumableReplaced {
                serial,
                field,
                ts,
                level_before_pct,
                crossed_threshold_ts,
                ..
            } = e
            else {
                continue;
            };
            replaced += 1;
            assert!(
                *level_before_pct <= 20.0,
                "{serial}: replaced at {level_before_pct} %"
            );
            let steps = (*ts - *crossed_threshold_ts).num_seconds() / LONG_WALL_STEP_S;
            let sim_hours = steps as f64 * LONG_DT_HOURS;
            assert!(
                (48.0..=240.0 + LONG_DT_HOURS).contains(&sim_hours),
                "{serial}: replaced {sim_hours} h after the threshold"
            );
            let after = run.by_serial[serial.as_str()]
                .iter()
                .find(|r| r.ts == *ts)
                .expect("the replacement's reading");
            assert!(
                after.values[field] >= 99.0,
                "{serial}: {field} = {} after replacement",
                after.values[field]
            );
        }
        assert!(replaced >= LONG_DEVICES, "only {replaced} replacements");
    }

    #[test]
    fn warning_and_info_alarms_come_and_go() {
        let run = long_run();
        let mut seen = BTreeSet::new();
        for readings in run.by_serial.values() {
            for pair in readings.windows(2) {
                for code in &pair[0].alarms {
                    if !FAILURE_CODES.contains(&code.as_str()) && !pair[1].alarms.contains(code) {
                        seen.insert(code.clone());
                    }
                }
            }
        }
        for code in ["W201", "W203", "P301", "V201", "V401", "V202"] {
            assert!(
                seen.contains(code),
                "{code} never raised and cleared; seen {seen:?}"
            );
        }
    }

    /// Lifetimes of components fitted new during the simulation are plain Weibull draws:
    /// over a horizon long enough that (practically) every one of them is observed, their
    /// median and shape match the table.
    #[test]
    fn failure_times_of_new_components_follow_the_configured_weibull() {
        const DEVICES: usize = 3000;
        const DT: f64 = 240.0;
        const STEPS: usize = 2600;
        let mut f = fleet(DEVICES, 11);
        for k in 0..STEPS {
            f.advance(DT, t0() + Duration::seconds(k as i64));
        }
        let truth = f.take_ground_truth();
        let end_runtime: BTreeMap<String, f64> = (0..DEVICES)
            .map(|i| (serial_for("SIM", i), f.runtime_hours(i).expect("device")))
            .collect();
        for mode in ["compressor", "sieve_bed", "blower"] {
            let w = failure_mode_spec(mode).weibull();
            let mut lifetimes = Vec::new();
            let mut seen = BTreeSet::new();
            for e in &truth {
                let TruthEvent::Repair {
                    serial,
                    failure_mode,
                    runtime_hours,
                    ..
                } = e
                else {
                    continue;
                };
                if failure_mode != mode || !seen.insert(serial.clone()) {
                    continue;
                }
                // only where the horizon covers 4 η after the first repair
                if end_runtime[serial.as_str()] - runtime_hours < 4.0 * w.eta {
                    continue;
                }
                let second = truth.iter().find_map(|e| match e {
                    TruthEvent::Failure {
                        serial: s,
                        failure_mode: m,
                        component_hours,
                        component_fitted_in_sim: true,
                        ..
                    } if s == serial && m == mode => Some(*component_hours),
                    _ => None,
                });
                lifetimes.push(second.expect("the new component failed within 4 η"));
            }
            lifetimes.sort_by(f64::total_cmp);
            let n = lifetimes.len();
            assert!(n >= 600, "{mode}: only {n} lifetimes");
            let q = |p: f64| lifetimes[(p * n as f64) as usize];
            let median = q(0.5);
            assert!(
                (median / w.median() - 1.0).abs() < 0.05,
                "{mode}: median {median:.0} h vs {:.0} h (n = {n})",
                w.median()
            );
            // β from the quartiles: ln(ln 4 / ln(4/3)) / ln(q75 / q25)
            let beta = ((4f64).ln() / (4f64 / 3.0).ln()).ln() / (q(0.75) / q(0.25)).ln();
            assert!(
                (beta / w.beta - 1.0).abs() < 0.12,
                "{mode}: β ≈ {beta:.2} vs {} (n = {n})",
                w.beta
            );
        }
    }
}
