//! A fleet's past as the history import files (issue 23): `demo` starts with about two
//! simulated years of history, written to the store through the product's own history
//! import, ending at the demo's "now", after which the same fleet goes on live.
//!
//! [`history_files`] runs a fresh [`Fleet`] hour by hour from `end − days` to `end` and
//! writes what a service company's systems would hold about that time:
//!
//! - **devices** (`serial, model, status, criticality, region, address, commissioned_at,
//!   runtime_hours_at_registration, observed_from`): each device observed from the
//!   history's start, with the runtime meter it had then; commissioned as long before as
//!   its meter took at its mean usage. Regions, addresses, statuses and criticalities are
//!   drawn from the seed (most devices at a customer; a few in repair or in stock; some
//!   oxygen concentrators of high criticality);
//! - **maintenance** replacements of parts fitted before the history (the 30 % of devices
//!   whose parts are not all original), at the meter reading the part's age gives;
//! - **meters**: the runtime meter once a day per device until the last
//!   [`TELEMETRY_DAYS`] (the exposure the statistics fold from it);
//! - **telemetry** every [`TELEMETRY_EVERY_H`] hours per device in the last
//!   [`TELEMETRY_DAYS`] (one file per set of fields, since models report different
//!   fields), which the store keeps as hourly rollups: the predictors' features and the
//!   runtime meter;
//! - **failures** from the ground truth (time, meter, alarm code, failure mode), and the
//!   **repairs** (replacements of the failed part) and **consumable changes** as
//!   maintenance;
//! - **alarms**: every alarm episode the hourly samples show, with its start and end.
//!
//! What is still going on at `end` is left to the live fleet, which reports it within
//! its first readings: an alarm active at the end (its episode opens live, and a failure
//! alarm then records its failure and raises its repair order the way a live one does),
//! and a failure not yet repaired. Nothing is stated twice.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use chrono::{DateTime, Duration, SecondsFormat, Utc};
use fleetpulse_domain::AlarmCode;
use fleetpulse_domain::catalog::Catalog;
use fleetpulse_domain::device::Criticality;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::fleet::Fleet;
use crate::truth::TruthEvent;

/// Hours between two telemetry rows of one device in the history's last
/// [`TELEMETRY_DAYS`] (the store keeps hourly rollups; the predictors read daily
/// summaries, which two rows a day fill).
pub const TELEMETRY_EVERY_H: u32 = 12;
/// Days at the end of the history with full telemetry: what the predictors read
/// (`analytics.history_days`, 365). Before them the history has the runtime meter once a
/// day (the exposure of the statistics), imported as meter history.
pub const TELEMETRY_DAYS: u32 = 365;
/// Hours between two meter rows of one device before the telemetry days.
pub const METER_EVERY_H: u32 = 24;
/// Rows per telemetry file: each file is one import (one transaction).
pub const TELEMETRY_ROWS_PER_FILE: usize = 50_000;

/// Regions of the demo fleet and a few streets in each, for addresses.
const REGIONS: &[(&str, &str, &[&str])] = &[
    (
        "north",
        "Leeds",
        &["Harbour Street", "Mill Lane", "Kirkgate"],
    ),
    (
        "south",
        "Brighton",
        &["Marine Parade", "Church Road", "Queens Road"],
    ),
    (
        "east",
        "Norwich",
        &["Elm Hill", "Prince of Wales Road", "Magdalen Street"],
    ),
    (
        "west",
        "Bristol",
        &["Park Street", "Gloucester Road", "Whiteladies Road"],
    ),
    (
        "central",
        "Birmingham",
        &["Broad Street", "Corporation Street", "Digbeth"],
    ),
];

/// The import files of a fleet's history, in the order they are imported.
#[derive(Clone, Debug, Default)]
pub struct HistoryFiles {
    pub devices: String,
    /// Replacements of parts fitted before the history, repairs and consumable changes.
    pub maintenance: String,
    pub meters: String,
    pub telemetry: Vec<String>,
    pub failures: String,
    pub alarms: String,
    pub counts: HistoryCounts,
    /// The simulator's ground truth of the history, every event (what the files state
    /// and what they leave to the live fleet).
    pub truth: Vec<TruthEvent>,
}

/// What the history holds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct HistoryCounts {
    pub devices: usize,
    pub days: u32,
    pub meter_rows: usize,
    pub telemetry_rows: usize,
    pub failures: usize,
    pub repairs: usize,
    pub consumable_changes: usize,
    pub earlier_replacements: usize,
    pub alarm_episodes: usize,
}

fn ts(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

fn hours(h: f64) -> Duration {
    Duration::seconds((h * 3600.0).round() as i64)
}

/// Runs `fleet` (fresh: no simulated hour yet) for `days` days ending at `end`, in steps
/// of one simulated hour, and returns its history as import files. The fleet is left at
/// `end`, ready to go on live. `seed` draws regions, addresses, statuses and
/// criticalities (the fleet's own seed keeps them stable across runs).
pub fn history_files(
    fleet: &mut Fleet,
    catalog: &Catalog,
    end: DateTime<Utc>,
    days: u32,
    seed: u64,
) -> HistoryFiles {
    let start = end - Duration::days(i64::from(days));
    let mut files = HistoryFiles {
        counts: HistoryCounts {
            devices: fleet.len(),
            days,
            ..HistoryCounts::default()
        },
        ..HistoryFiles::default()
    };
    let mut draw = ChaCha8Rng::seed_from_u64(seed ^ 0x005e_ed0f_de30);
    let mut devices = String::from(
        "serial,model,status,criticality,region,address,commissioned_at,runtime_hours_at_registration,observed_from\n",
    );
    let mut maintenance = String::from("serial,at,runtime_hours,kind,component,notes\n");
    for (i, info) in fleet.devices().enumerate() {
        let runtime = fleet.runtime_hours(i).unwrap_or(0.0);
        let usage = fleet.usage_fraction(i).unwrap_or(1.0).max(0.01);
        let commissioned = start - hours(runtime / usage);
        let (region, city, streets) = REGIONS[draw.random_range(0..REGIONS.len())];
        let street = streets[draw.random_range(0..streets.len())];
        let number = draw.random_range(1..200);
        let status = match draw.random::<f64>() {
            x if x < 0.03 => "in_repair",
            x if x < 0.05 => "in_stock",
            _ => "at_customer",
        };
        let default = catalog
            .model(&info.model)
            .map_or(Criticality::Standard, |m| m.default_criticality);
        let criticality = if default == Criticality::Standard && draw.random::<f64>() < 0.2 {
            Criticality::High
        } else {
            default
        };
        let _ = writeln!(
            devices,
            "{},{},{status},{},{region},\"{number} {street}, {city}\",{},{runtime:.2},{}",
            info.serial,
            info.model,
            criticality.as_str(),
            ts(commissioned),
            ts(start),
        );
        for (mode, age) in fleet.component_ages(i).unwrap_or_default() {
            if age + 1e-6 >= runtime {
                continue; // the original part
            }
            let Some((component, _)) = catalog.failure_mode(&info.model, &mode) else {
                continue;
            };
            let fitted_meter = runtime - age;
            let at = start - hours(age / usage);
            let _ = writeln!(
                maintenance,
                "{},{},{fitted_meter:.2},replacement,{},fitted before the history",
                info.serial,
                ts(at),
                component.id
            );
            files.counts.earlier_replacements += 1;
        }
    }
    files.devices = devices;

    let mut telemetry: BTreeMap<Vec<String>, (String, usize)> = BTreeMap::new();
    let names: Vec<Vec<String>> = (0..fleet.len())
        .map(|i| fleet.field_names(i).unwrap_or_default())
        .collect();
    let mut failures = String::from("serial,at,runtime_hours,fault_code,failure_mode\n");
    let mut alarms = String::from("serial,started_at,ended_at,code\n");
    // per device: active code -> when its episode started
    let mut active: Vec<BTreeMap<AlarmCode, DateTime<Utc>>> = vec![BTreeMap::new(); fleet.len()];
    let mut pending_failures: BTreeMap<(String, String), String> = BTreeMap::new();
    let mut meters = String::from("serial,at,runtime_hours\n");
    let steps = days * 24;
    let telemetry_from = steps.saturating_sub(TELEMETRY_DAYS * 24);
    for step in 0..steps {
        let t = start + Duration::hours(i64::from(step) + 1) - Duration::minutes(1);
        let samples = fleet.step_samples(1.0, t);
        let full = step >= telemetry_from;
        let row_due = full && (step + 1) % TELEMETRY_EVERY_H == 0;
        let meter_due = !full && (step + 1) % METER_EVERY_H == 0;
        for (i, sample) in samples.iter().enumerate() {
            let Some(sample) = sample else { continue };
            let serial = fleet
                .device(i)
                .map(|d| d.serial.to_string())
                .unwrap_or_default();
            let now: BTreeSet<&AlarmCode> = sample.alarms.iter().collect();
            let ended: Vec<AlarmCode> = active[i]
                .keys()
                .filter(|c| !now.contains(c))
                .cloned()
                .collect();
            for code in ended {
                if let Some(from) = active[i].remove(&code) {
                    let _ = writeln!(alarms, "{serial},{},{},{code}", ts(from), ts(t));
                    files.counts.alarm_episodes += 1;
                }
            }
            for code in now {
                active[i].entry(code.clone()).or_insert(t);
            }
            if meter_due && let Some(runtime) = sample.values.first() {
                // runtime_hours is every device's first value
                let _ = writeln!(meters, "{serial},{},{runtime}", ts(t));
                files.counts.meter_rows += 1;
            }
            if row_due {
                let (text, rows) = telemetry
                    .entry(names[i].clone())
                    .or_insert_with(|| (String::new(), 0));
                let _ = write!(text, "{serial},{}", ts(t));
                for v in &sample.values {
                    let _ = write!(text, ",{v}");
                }
                text.push('\n');
                *rows += 1;
                files.counts.telemetry_rows += 1;
                if *rows >= TELEMETRY_ROWS_PER_FILE {
                    let (body, _) = telemetry.remove(&names[i]).unwrap_or_default();
                    files.telemetry.push(with_header(&names[i], &body));
                }
            }
        }
        let events = fleet.take_ground_truth();
        for event in &events {
            match event {
                TruthEvent::Failure {
                    serial,
                    failure_mode,
                    alarm_code,
                    runtime_hours,
                    ts: at,
                    ..
                } => {
                    // written once repaired within the history; an open one goes live
                    pending_failures.insert(
                        (serial.to_string(), failure_mode.clone()),
                        format!(
                            "{serial},{},{runtime_hours:.2},{alarm_code},{failure_mode}\n",
                            ts(*at)
                        ),
                    );
                }
                TruthEvent::Repair {
                    serial,
                    model,
                    failure_mode,
                    runtime_hours,
                    ts: at,
                    ..
                } => {
                    if let Some(row) =
                        pending_failures.remove(&(serial.to_string(), failure_mode.clone()))
                    {
                        failures.push_str(&row);
                        files.counts.failures += 1;
                    }
                    if let Some((component, _)) = catalog.failure_mode(model, failure_mode) {
                        let _ = writeln!(
                            maintenance,
                            "{serial},{},{runtime_hours:.2},replacement,{},repair of {failure_mode}",
                            ts(*at),
                            component.id
                        );
                        files.counts.repairs += 1;
                    }
                }
                TruthEvent::ConsumableReplaced {
                    serial,
                    consumable,
                    runtime_hours,
                    ts: at,
                    ..
                } => {
                    let _ = writeln!(
                        maintenance,
                        "{serial},{},{runtime_hours:.2},consumable,{consumable},",
                        ts(*at)
                    );
                    files.counts.consumable_changes += 1;
                }
                TruthEvent::ScheduledReplacement {
                    serial,
                    model,
                    failure_mode,
                    runtime_hours,
                    ts: at,
                    ..
                } => {
                    if let Some((component, _)) = catalog.failure_mode(model, failure_mode) {
                        let _ = writeln!(
                            maintenance,
                            "{serial},{},{runtime_hours:.2},replacement,{},scheduled",
                            ts(*at),
                            component.id
                        );
                    }
                }
            }
        }
        files.truth.extend(events);
    }
    for (fields, (body, rows)) in telemetry {
        if rows > 0 {
            files.telemetry.push(with_header(&fields, &body));
        }
    }
    files.maintenance = maintenance;
    files.meters = meters;
    files.failures = failures;
    files.alarms = alarms;
    files
}

fn with_header(fields: &[String], body: &str) -> String {
    let mut text = String::with_capacity(body.len() + 200);
    text.push_str("serial,at");
    for f in fields {
        text.push(',');
        text.push_str(f);
    }
    text.push('\n');
    text.push_str(body);
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fleet::FleetConfig;

    fn catalog() -> Catalog {
        Catalog::from_toml_str(include_str!("../../config/catalog.toml")).expect("catalog")
    }

    #[test]
    fn a_history_ends_at_its_end_and_states_each_fact_once() {
        let catalog = catalog();
        let mut fleet = Fleet::new(
            &FleetConfig {
                devices: 40,
                seed: 7,
                serial_prefix: "SIM".into(),
                untidy: None,
            },
            &catalog,
        )
        .expect("test data");
        let end = DateTime::parse_from_rfc3339("2026-06-01T00:00:00Z")
            .expect("test data")
            .with_timezone(&Utc);
        let files = history_files(&mut fleet, &catalog, end, 365, 7);
        assert!((fleet.sim_hours() - 365.0 * 24.0).abs() < 1e-9);
        let c = files.counts;
        assert_eq!(c.devices, 40);
        assert_eq!(files.devices.lines().count(), 41);
        // two telemetry rows a day per device in the last year, a meter row a day before
        assert_eq!(c.telemetry_rows, 40 * 365 * 2);
        assert_eq!(c.meter_rows, 0);
        let telemetry_lines: usize = files.telemetry.iter().map(|f| f.lines().count() - 1).sum();
        assert_eq!(telemetry_lines, c.telemetry_rows);
        assert!(c.failures > 0 && c.repairs >= c.failures, "{c:?}");
        assert!(c.alarm_episodes > 0 && c.consumable_changes > 0, "{c:?}");
        assert_eq!(files.failures.lines().count(), c.failures + 1);
        // nothing at or after the end
        for file in [
            &files.failures,
            &files.alarms,
            &files.maintenance,
            &files.meters,
        ] {
            for line in file.lines().skip(1) {
                let at = line.split(',').nth(1).expect("test data");
                let at = DateTime::parse_from_rfc3339(at).expect("test data");
                assert!(at < end, "{line}");
            }
        }
        // every device is observed from the start, with a meter and a commissioning
        for line in files.devices.lines().skip(1) {
            assert!(line.contains(",2025-06-01T00:00:00Z"), "{line}");
        }
        // the same seed, the same history
        let mut again = Fleet::new(
            &FleetConfig {
                devices: 40,
                seed: 7,
                serial_prefix: "SIM".into(),
                untidy: None,
            },
            &catalog,
        )
        .expect("test data");
        let twice = history_files(&mut again, &catalog, end, 365, 7);
        assert_eq!(twice.failures, files.failures);
        assert_eq!(twice.devices, files.devices);
    }
}
