//! Prediction benchmark (issue 7): a simulated fleet over two years, in process (no MQTT,
//! no database). The fleet's readings are folded into daily summaries as the store folds
//! its hourly rollups (`fleetpulse_simulator::history`), with alarm episodes, failures and
//! replacements. The failure-risk models are trained on the first `--train-days` only
//! (a truncated copy of the history), then every device is forecast at every midnight of
//! the rest with the model and both baselines, and the forecasts are scored against the
//! ground truth.
//!
//! ```sh
//! CARGO_TARGET_DIR=/var/tmp/target-predict-rel cargo run --release -p fleetpulse-bench --bin predict
//! ```

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use chrono::{DateTime, Duration, TimeZone, Utc};
use clap::Parser;
use fleetpulse_analytics::predict::{
    CatalogForecaster, PredictOptions, RiskParameters, SCORERS, Scorer, failure_modes,
};
use fleetpulse_domain::Catalog;
use fleetpulse_domain::prediction::{Forecaster, PredictionKind};
use fleetpulse_simulator::{Fleet, FleetConfig, TruthEvent, simulate};

#[derive(Parser, Debug)]
#[command(about = "Prediction benchmark: simulated fleet, train then rolling daily forecasts")]
struct Args {
    /// Simulated devices.
    #[arg(long, default_value_t = 2000)]
    devices: usize,
    /// Simulated days in all.
    #[arg(long, default_value_t = 730)]
    days: u32,
    /// Days of history the models are trained on (the rest is scored).
    #[arg(long, default_value_t = 400)]
    train_days: u32,
    #[arg(long, default_value_t = 7)]
    seed: u64,
    /// Warning precision the operating thresholds aim at on the training window
    /// (`PredictOptions::target_precision`; the default is the product's).
    #[arg(long)]
    target_precision: Option<f64>,
    /// Days between two training samples of one device (`PredictOptions::sample_every_days`).
    #[arg(long)]
    sample_every_days: Option<u32>,
    /// Choose each mode's operating threshold on its own (`fleet_thresholds = false`)
    /// instead of all deployed modes' together.
    #[arg(long)]
    per_mode_thresholds: bool,
    /// With fleet thresholds, the precision every mode keeps (`min_mode_precision`).
    #[arg(long)]
    min_mode_precision: Option<f64>,
}

/// The warning state of one (device, mode, scorer).
#[derive(Default)]
struct Tally {
    warnings: u64,
    true_warnings: u64,
    no_fault_found: u64,
    failures: u64,
    warned_3d: u64,
    leads: Vec<f64>,
}

fn median(v: &mut [f64]) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    Some(v[v.len() / 2])
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let wall = Instant::now();
    let catalog = Arc::new(
        Catalog::from_toml_str(include_str!("../../../config/catalog.toml"))
            .context("built-in catalog")?,
    );
    let start = Utc
        .with_ymd_and_hms(2024, 1, 1, 0, 0, 0)
        .single()
        .context("start")?; // a Monday, as the simulator's day 0
    let mut fleet = Fleet::new(
        &FleetConfig {
            devices: args.devices,
            seed: args.seed,
            serial_prefix: "PB".into(),
            untidy: None,
        },
        &catalog,
    )?;
    let t = Instant::now();
    let (rec, truth) = simulate(&mut fleet, &catalog, start, args.days);
    println!(
        "simulated {} devices x {} days in {:.1} s ({} truth events)",
        args.devices,
        args.days,
        t.elapsed().as_secs_f64(),
        truth.len()
    );
    let train_end = start + Duration::days(i64::from(args.train_days));
    let end = start + Duration::days(i64::from(args.days));
    let mut options = PredictOptions::default();
    if let Some(p) = args.target_precision {
        options.target_precision = p;
    }
    if let Some(d) = args.sample_every_days {
        options.sample_every_days = d;
    }
    options.fleet_thresholds = !args.per_mode_thresholds;
    if let Some(p) = args.min_mode_precision {
        options.min_mode_precision = p;
    }
    let horizon = Duration::days(options.horizon_days as i64);
    let forecaster = CatalogForecaster::new(catalog.clone(), options.clone());

    // train on the first part only
    let t = Instant::now();
    let train_data = rec.snapshot(train_end);
    let models = forecaster.train(&train_data, &[]);
    drop(train_data);
    println!(
        "trained {} failure-mode models on days 0..{} in {:.1} s",
        models.len(),
        args.train_days,
        t.elapsed().as_secs_f64()
    );
    println!("\nvalidation inside the training window (ModelReport):");
    println!(
        "{:<16} {:>6} {:>6} | {:>8} {:>8} {:>8} | {:>7} {:>7} {:>7} | serving",
        "mode", "pos", "neg", "PR-AUC", "weibull", "alarms", "prec", "recall", "brier"
    );
    for m in &models {
        let r = &m.report;
        let b = |k: &str| r.baselines.get(k).map_or(f64::NAN, |x| x.pr_auc);
        println!(
            "{:<16} {:>6} {:>6} | {:>8.3} {:>8.3} {:>8.3} | {:>7.3} {:>7.3} {:>7.4} | {}",
            r.failure_mode,
            r.metrics.positives,
            r.metrics.negatives,
            r.metrics.pr_auc,
            b("weibull_age"),
            b("alarm_count"),
            r.metrics.precision.unwrap_or(f64::NAN),
            r.metrics.recall,
            r.metrics.brier.unwrap_or(f64::NAN),
            r.serving.as_deref().unwrap_or("none")
        );
        let w = |m: &fleetpulse_domain::prediction::ValidationMetrics| {
            m.warnings.as_ref().map_or("-".to_owned(), |w| {
                format!(
                    "{} warnings, precision {:.3}, recall (>= 3 d) {:.3}",
                    w.warnings,
                    w.precision.unwrap_or(f64::NAN),
                    w.recall
                )
            })
        };
        println!(
            "    warnings replayed on validation: model {}",
            w(&r.metrics)
        );
        for (name, b) in &r.baselines {
            println!("    warnings replayed on validation: {name} {}", w(b));
        }
        println!("    {}", r.decision);
    }

    // rolling daily forecasts over the rest, on the full history (a forecast at as_of
    // reads nothing after it: the leakage test in fleetpulse-analytics)
    let t = Instant::now();
    let data = rec.snapshot(end);
    // (mode, the scorer serving it, parameters)
    let params: Vec<(String, Option<Scorer>, RiskParameters)> = models
        .iter()
        .filter_map(|m| {
            RiskParameters::from_trained(m).map(|p| {
                let served = m.report.deployed.then_some(p.serving);
                (m.report.failure_mode.clone(), served, p)
            })
        })
        .collect();
    let scorers = SCORERS;
    // how long a warning of each model stays open: its horizon
    let holds: Vec<Duration> = params
        .iter()
        .map(|(_, _, p)| Duration::seconds((p.horizon_days * 86_400.0) as i64))
        .collect();
    // (device, mode, scorer) → warning issued at
    let mut active: BTreeMap<(usize, usize, usize), DateTime<Utc>> = BTreeMap::new();
    let mut tallies: BTreeMap<(usize, usize), Tally> = BTreeMap::new();
    // (device, mode, scorer) → when its last warning expired
    let mut expired: BTreeMap<(usize, usize, usize), DateTime<Utc>> = BTreeMap::new();
    // the model's failures by what happened before them: per mode, [strong precursor
    // visible, weak precursor visible, not visible] ×
    // [warned >= 3 d, warned < 3 d, a warning expired within the horizon before, none]
    let mut outcomes: BTreeMap<usize, [[u64; 4]; 3]> = BTreeMap::new();
    // failures per device, for closing warnings
    let mut failures: BTreeMap<usize, Vec<(DateTime<Utc>, String)>> = BTreeMap::new();
    // failures in the scored window whose precursor started at least 3 days before them
    // (what any scorer could see in time), per mode
    let mut visible: BTreeMap<String, (u64, u64)> = BTreeMap::new();
    // (device, failure time) → its row of `outcomes` (a full-strength precursor that
    // started at least 3 days before it: 0, a weak one: 1, neither: 2) and the days from
    // its precursor's start to the failure
    let mut precursor_row: BTreeMap<(usize, DateTime<Utc>), (usize, Option<f64>)> = BTreeMap::new();
    // the model's failures with a visible precursor, per mode and precursor length
    // (3–5, 5–8, 8–12, 12+ days): [warned >= 3 d, all]
    let mut by_length: BTreeMap<usize, [[u64; 2]; 4]> = BTreeMap::new();
    let index: BTreeMap<String, usize> = data
        .devices
        .iter()
        .enumerate()
        .map(|(i, d)| (d.serial.to_string(), i))
        .collect();
    for e in &truth {
        if let TruthEvent::Failure {
            serial,
            failure_mode,
            ts,
            precursor_start,
            precursor_strength,
            ..
        } = e
            && let Some(&i) = index.get(serial.as_str())
        {
            let seen = *precursor_strength > 0.0
                && precursor_start
                    .as_ref()
                    .is_some_and(|p| *ts - p.ts >= Duration::days(3));
            let row = match (seen, *precursor_strength >= 1.0) {
                (true, true) => 0,
                (true, false) => 1,
                (false, _) => 2,
            };
            let days =
                (precursor_start.as_ref()).map(|p| (*ts - p.ts).num_minutes() as f64 / 1440.0);
            precursor_row.insert((i, *ts), (row, days));
            if *ts >= train_end && *ts < end - horizon {
                let v = visible.entry(failure_mode.clone()).or_default();
                v.1 += 1;
                if seen {
                    v.0 += 1;
                }
            }
            failures
                .entry(i)
                .or_default()
                .push((*ts, failure_mode.clone()));
        }
    }
    // depletion forecasts: (device, consumable, as_of day) → due
    let mut depletion: BTreeMap<(usize, String, i64), DateTime<Utc>> = BTreeMap::new();
    let mut service_orders = 0u64;
    let score_from = train_end;
    let score_to = end - horizon;
    let mut day = score_from;
    while day < end {
        for (i, d) in data.devices.iter().enumerate() {
            for p in forecaster.due_dates(d, day) {
                if let (PredictionKind::ConsumableDepletion, Some(due)) = (p.kind, p.due_at) {
                    depletion.insert((i, p.target.clone(), day.timestamp() / 86_400), due);
                }
                if p.kind == PredictionKind::ServiceInterval
                    && let Some(due) = p.due_at
                    && due >= day
                    && due < day + Duration::days(1)
                    && day < score_to
                {
                    service_orders += 1;
                }
            }
            if day >= score_to {
                continue;
            }
            for (k, (_, _, p)) in params.iter().enumerate() {
                for (s, scorer) in scorers.iter().enumerate() {
                    let key = (i, k, s);
                    // close an expired warning
                    if let Some(&w) = active.get(&key)
                        && day >= w + holds[k]
                    {
                        active.remove(&key);
                        expired.insert(key, w + holds[k]);
                        tallies.entry((k, s)).or_default().no_fault_found += 1;
                    }
                    if active.contains_key(&key) {
                        continue;
                    }
                    if let Some((prob, threshold)) = p.score(*scorer, d, day)
                        && prob >= threshold
                    {
                        active.insert(key, day);
                        tallies.entry((k, s)).or_default().warnings += 1;
                    }
                }
            }
        }
        // failures of this day close the warnings that announced them
        let next = day + Duration::days(1);
        if day < score_to {
            for (i, fs) in &failures {
                for (at, mode) in fs.iter().filter(|(at, _)| *at >= day && *at < next) {
                    for (k, (m, _, _)) in params.iter().enumerate() {
                        if m != mode {
                            continue;
                        }
                        for (s, scorer) in scorers.iter().enumerate() {
                            let tally = tallies.entry((k, s)).or_default();
                            tally.failures += 1;
                            let outcome = if let Some(w) = active.remove(&(*i, k, s)) {
                                tally.true_warnings += 1;
                                let lead = (*at - w).num_minutes() as f64 / 1440.0;
                                tally.leads.push(lead);
                                if lead >= 3.0 {
                                    tally.warned_3d += 1;
                                    0
                                } else {
                                    1
                                }
                            } else if expired
                                .get(&(*i, k, s))
                                .is_some_and(|e| *at - *e <= holds[k])
                            {
                                2
                            } else {
                                3
                            };
                            if *scorer == Scorer::Model {
                                let (row, days) =
                                    precursor_row.get(&(*i, *at)).copied().unwrap_or((2, None));
                                outcomes.entry(k).or_default()[row][outcome] += 1;
                                if let (true, Some(len)) = (row < 2, days) {
                                    let b = match len {
                                        l if l < 5.0 => 0,
                                        l if l < 8.0 => 1,
                                        l if l < 12.0 => 2,
                                        _ => 3,
                                    };
                                    let cell = &mut by_length.entry(k).or_default()[b];
                                    cell[0] += u64::from(outcome == 0);
                                    cell[1] += 1;
                                }
                            }
                        }
                    }
                }
            }
        }
        day = next;
    }
    // warnings still open at the end are neither confirmed nor closed: left out
    println!(
        "\nrolling daily forecasts over days {}..{} ({} devices) in {:.1} s",
        args.train_days,
        args.days,
        args.devices,
        t.elapsed().as_secs_f64()
    );
    let months = (score_to - score_from).num_days() as f64 / 30.44;
    let per_k = |n: u64| n as f64 / (args.devices as f64 / 1000.0) / months;
    println!(
        "\nfailure warnings, scored on days {}..{} (horizon {} d unless the catalog gives the mode one; recall = failures warned >= 3 d ahead):",
        args.train_days,
        args.days - options.horizon_days as u32,
        options.horizon_days
    );
    println!(
        "{:<16} {:<12} {:>8} {:>9} {:>7} {:>7} {:>8} {:>12} {:>9} {:>12}",
        "mode",
        "scorer",
        "failures",
        "warnings",
        "prec",
        "recall",
        "lead_d",
        "orders/1k/mo",
        "NFF share",
        "precursor>=3d"
    );
    let mut risk_orders = 0u64;
    // every mode together, per scorer: a mode its model does not serve warns nothing
    let mut all: Vec<Tally> = scorers.iter().map(|_| Tally::default()).collect();
    for (k, (_, served, _)) in params.iter().enumerate() {
        let deployed = *served == Some(Scorer::Model);
        for (s, scorer) in scorers.iter().enumerate() {
            let Some(t) = tallies.get(&(k, s)) else {
                continue;
            };
            let a = &mut all[s];
            a.failures += t.failures;
            if *scorer != Scorer::Model || deployed {
                a.warnings += t.warnings;
                a.true_warnings += t.true_warnings;
                a.no_fault_found += t.no_fault_found;
                a.warned_3d += t.warned_3d;
                a.leads.extend(&t.leads);
            }
        }
    }
    let all_visible = visible.values().fold((0, 0), |a, v| (a.0 + v.0, a.1 + v.1));
    let rows = params
        .iter()
        .enumerate()
        .flat_map(|(k, (mode, served, _))| {
            scorers
                .iter()
                .enumerate()
                .map(move |(s, scorer)| (Some(k), mode.as_str(), *served, s, *scorer))
        })
        .chain(
            scorers
                .iter()
                .enumerate()
                .map(|(s, scorer)| (None, "all modes", Some(*scorer), s, *scorer)),
        )
        .collect::<Vec<_>>();
    for (k, mode, served, s, scorer) in rows {
        let t = match k {
            Some(k) => match tallies.get_mut(&(k, s)) {
                Some(t) => t,
                None => continue,
            },
            None => &mut all[s],
        };
        let (seen, total) = match k {
            Some(_) => visible.get(mode).copied().unwrap_or((0, 0)),
            None => all_visible,
        };
        let closed = t.true_warnings + t.no_fault_found;
        let precision = if closed > 0 {
            t.true_warnings as f64 / closed as f64
        } else {
            f64::NAN
        };
        let recall = if t.failures > 0 {
            t.warned_3d as f64 / t.failures as f64
        } else {
            f64::NAN
        };
        let nff = if closed > 0 {
            t.no_fault_found as f64 / closed as f64
        } else {
            f64::NAN
        };
        if served == Some(scorer) && k.is_some() {
            risk_orders += t.warnings;
        }
        let name = if scorer == Scorer::Model && served != Some(Scorer::Model) {
            "model (not serving)".to_owned()
        } else if served == Some(scorer) && k.is_some() {
            format!("{} (serving)", scorer.as_str())
        } else {
            scorer.as_str().to_owned()
        };
        println!(
            "{:<16} {:<12} {:>8} {:>9} {:>7.3} {:>7.3} {:>8.1} {:>12.2} {:>9.3} {:>12.3}",
            mode,
            name,
            t.failures,
            t.warnings,
            precision,
            recall,
            median(&mut t.leads).unwrap_or(f64::NAN),
            per_k(t.warnings),
            nff,
            seen as f64 / total.max(1) as f64
        );
    }
    println!(
        "\nthe model's failures by what came before them (strong or weak precursor that started >= 3 d before, or not visible):"
    );
    println!(
        "{:<16} {:<11} {:>10} {:>9} {:>10} {:>7}",
        "mode", "precursor", "warned>=3d", "warned<3d", "expired", "none"
    );
    for (k, rows) in &outcomes {
        for (v, row) in rows.iter().enumerate() {
            println!(
                "{:<16} {:<11} {:>10} {:>9} {:>10} {:>7}",
                params[*k].0,
                ["strong", "weak", "not visible"][v],
                row[0],
                row[1],
                row[2],
                row[3]
            );
        }
    }
    println!(
        "\nthe model's failures with a visible precursor by its length (warned >= 3 d ahead / failures):"
    );
    println!(
        "{:<16} {:>10} {:>10} {:>10} {:>10}",
        "mode", "3-5 d", "5-8 d", "8-12 d", ">=12 d"
    );
    for (k, cells) in &by_length {
        let c: Vec<String> = cells.iter().map(|[a, n]| format!("{a}/{n}")).collect();
        println!(
            "{:<16} {:>10} {:>10} {:>10} {:>10}",
            params[*k].0, c[0], c[1], c[2], c[3]
        );
    }
    // depletion MAE at 7 and 30 days ahead of the true threshold crossing
    let mut errors: BTreeMap<i64, Vec<f64>> = BTreeMap::new();
    let mut consumable_orders = 0u64;
    for e in &truth {
        let TruthEvent::ConsumableReplaced {
            serial,
            consumable,
            crossed_threshold_ts,
            ..
        } = e
        else {
            continue;
        };
        let Some(&i) = index.get(serial.as_str()) else {
            continue;
        };
        if *crossed_threshold_ts >= score_from && *crossed_threshold_ts < score_to {
            consumable_orders += 1;
        }
        for ahead in [7i64, 30] {
            let as_of = *crossed_threshold_ts - Duration::days(ahead);
            if as_of < score_from {
                continue;
            }
            let day = as_of.timestamp().div_euclid(86_400);
            if let Some(due) = depletion.get(&(i, consumable.clone(), day)) {
                let err = (*due - *crossed_threshold_ts).num_minutes() as f64 / 1440.0;
                errors.entry(ahead).or_default().push(err.abs());
            }
        }
    }
    println!("\nconsumable depletion (the field reaching order_at_pct), forecast at midnight:");
    for (ahead, errs) in &mut errors {
        let mae = errs.iter().sum::<f64>() / errs.len().max(1) as f64;
        let med = median(errs).unwrap_or(f64::NAN);
        let p90 = errs[(errs.len() * 9 / 10).min(errs.len().saturating_sub(1))];
        println!(
            "  {ahead:>2} days ahead: MAE {mae:.2} days, median {med:.2}, p90 {p90:.2} (n = {})",
            errs.len()
        );
    }
    println!(
        "\norders per 1000 devices per month: failure risk (deployed models) {:.2}, consumables {:.2}, service {:.2}; total {:.2}",
        per_k(risk_orders),
        per_k(consumable_orders),
        per_k(service_orders),
        per_k(risk_orders + consumable_orders + service_orders)
    );
    let modes = failure_modes(&catalog);
    println!("failure modes in the catalog: {}", modes.join(", "));
    println!(
        "\nwall time {:.1} s; command: CARGO_TARGET_DIR=/var/tmp/target-predict-rel cargo run --release -p fleetpulse-bench --bin predict -- --devices {} --days {} --train-days {} --seed {}{}",
        wall.elapsed().as_secs_f64(),
        args.devices,
        args.days,
        args.train_days,
        args.seed,
        args.target_precision
            .map_or(String::new(), |p| format!(" --target-precision {p}"))
            + &args
                .sample_every_days
                .map_or(String::new(), |d| format!(" --sample-every-days {d}"))
            + if args.per_mode_thresholds {
                " --per-mode-thresholds"
            } else {
                ""
            }
            + &args
                .min_mode_precision
                .map_or(String::new(), |p| format!(" --min-mode-precision {p}"))
    );
    Ok(())
}
