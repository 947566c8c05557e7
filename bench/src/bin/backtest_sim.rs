//! Backtest on a simulated fleet (issue 22): a fleet with the simulator's untidy profile
//! (mixed reporting rhythms, offline stretches, parts replaced on schedule, devices
//! joining mid-life, warning leads from hours to weeks; `--tidy` for the default fleet)
//! is simulated in process for `--days`, its history folded as the store folds it
//! (`fleetpulse_simulator::history`). The failure-risk models are trained on the history
//! as known at day `--train-days` (the recorder's snapshot then) and replayed to the end
//! (the snapshot at the end) with `fleetpulse_analytics::predict::backtest` at a
//! `--step-hours` step, as `fleetpulse backtest` does on a store. Prints what the fleet
//! looked like, the backtest table and the time taken; `--out DIR` also writes
//! `backtest_{untidy,tidy}.csv` and `.json`.
//!
//! ```sh
//! CARGO_TARGET_DIR=/var/tmp/target-rel cargo run --release -p fleetpulse-bench --bin backtest_sim -- --out /tmp/bt
//! CARGO_TARGET_DIR=/var/tmp/target-rel cargo run --release -p fleetpulse-bench --bin backtest_sim -- --tidy --out /tmp/bt
//! ```

use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context;
use chrono::{Duration, TimeZone, Utc};
use clap::Parser;
use fleetpulse_analytics::predict::PredictOptions;
use fleetpulse_analytics::predict::backtest::backtest;
use fleetpulse_domain::Catalog;
use fleetpulse_domain::prediction::PredictionData;
use fleetpulse_simulator::{Fleet, FleetConfig, TruthEvent, Untidy, simulate};

#[derive(Parser, Debug)]
#[command(about = "Backtest of the failure-risk models on a simulated fleet (untidy or tidy)")]
struct Args {
    /// Simulated devices.
    #[arg(long, default_value_t = 600)]
    devices: usize,
    /// Simulated days in all.
    #[arg(long, default_value_t = 540)]
    days: u32,
    /// The models are trained as of this day (T1); the rest is replayed.
    #[arg(long, default_value_t = 360)]
    train_days: u32,
    /// Hours between two replayed forecasts.
    #[arg(long, default_value_t = 24)]
    step_hours: i64,
    #[arg(long, default_value_t = 7)]
    seed: u64,
    /// The default fleet (hourly readings from day 0, no gaps, …) instead of the untidy
    /// profile.
    #[arg(long)]
    tidy: bool,
    /// Directory for `backtest_<profile>.csv` and `.json`.
    #[arg(long)]
    out: Option<PathBuf>,
    /// The failure-risk learner: `logistic_regression` or `gradient_boosting` (default:
    /// the product's).
    #[arg(long)]
    learner: Option<String>,
}

fn quantile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((p * sorted.len() as f64) as usize).min(sorted.len() - 1)]
}

/// What the simulated fleet looked like: rhythms, joiners, readings per day, silent
/// days, and the ground truth's events and precursor leads.
fn describe(fleet: &Fleet, data: &PredictionData, truth: &[TruthEvent]) {
    let mut rhythms = std::collections::BTreeMap::<u32, usize>::new();
    let mut joiners = 0;
    for i in 0..fleet.len() {
        *rhythms
            .entry(fleet.report_every_hours(i).unwrap_or(1.0) as u32)
            .or_default() += 1;
        joiners += usize::from(fleet.joins_at_hours(i).is_some_and(|h| h > 0.0));
    }
    let (mut readings, mut reported_days, mut silent_days) = (0u64, 0u64, 0i64);
    for d in &data.devices {
        let Some(days) = d.daily.get("runtime_hours") else {
            continue;
        };
        readings += days.iter().map(|x| u64::from(x.count)).sum::<u64>();
        reported_days += days.len() as u64;
        if let (Some(first), Some(last)) = (days.first(), days.last()) {
            silent_days += (last.day - first.day).num_days() + 1 - days.len() as i64;
        }
    }
    let count = |f: fn(&TruthEvent) -> bool| truth.iter().filter(|e| f(e)).count();
    let mut leads: Vec<f64> = truth
        .iter()
        .filter_map(|e| match e {
            TruthEvent::Failure {
                ts,
                precursor_start: Some(p),
                precursor_strength,
                ..
            } if *precursor_strength >= 1.0 => Some((*ts - p.ts).num_minutes() as f64 / 60.0),
            _ => None,
        })
        .collect();
    leads.sort_by(f64::total_cmp);
    let failures = count(|e| matches!(e, TruthEvent::Failure { .. }));
    // the ceiling of any precursor-reading scorer's recall at 3 days
    let visible_3d = count(|e| {
        matches!(e, TruthEvent::Failure { ts, precursor_start: Some(p), .. }
            if *ts - p.ts >= Duration::days(3))
    });
    println!(
        "fleet: rhythms (h: devices) {rhythms:?}, {joiners} joined after the start; \
         {:.2} readings per reported device-day, {silent_days} silent days between \
         reported ones ({:.1} %)",
        readings as f64 / reported_days.max(1) as f64,
        100.0 * silent_days as f64 / (reported_days as f64 + silent_days as f64).max(1.0)
    );
    println!(
        "truth: {failures} failures ({} with a full precursor, {:.1} % with a precursor \
         (any) started >= 3 d before), {} repairs, {} scheduled replacements, {} \
         consumable replacements; full precursor leads (h) p10 {:.1}, median {:.1}, p90 {:.1}",
        leads.len(),
        100.0 * visible_3d as f64 / failures.max(1) as f64,
        count(|e| matches!(e, TruthEvent::Repair { .. })),
        count(|e| matches!(e, TruthEvent::ScheduledReplacement { .. })),
        count(|e| matches!(e, TruthEvent::ConsumableReplaced { .. })),
        quantile(&leads, 0.1),
        quantile(&leads, 0.5),
        quantile(&leads, 0.9),
    );
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    anyhow::ensure!(
        args.train_days < args.days,
        "--train-days must be before --days"
    );
    let wall = Instant::now();
    let profile = if args.tidy { "tidy" } else { "untidy" };
    let catalog = Catalog::from_toml_str(include_str!("../../../config/catalog.toml"))
        .context("built-in catalog")?;
    let start = Utc
        .with_ymd_and_hms(2024, 1, 1, 0, 0, 0)
        .single()
        .context("start")?; // a Monday, as the simulator's day 0
    let mut fleet = Fleet::new(
        &FleetConfig {
            devices: args.devices,
            seed: args.seed,
            serial_prefix: "BT".into(),
            untidy: (!args.tidy).then(Untidy::default),
        },
        &catalog,
    )?;
    let t = Instant::now();
    let (rec, truth) = simulate(&mut fleet, &catalog, start, args.days);
    println!(
        "simulated {} devices x {} days ({profile}) in {:.1} s",
        args.devices,
        args.days,
        t.elapsed().as_secs_f64()
    );
    let t1 = start + Duration::days(i64::from(args.train_days));
    let t2 = start + Duration::days(i64::from(args.days));
    let train = rec.snapshot(t1);
    let replay = rec.snapshot(t2);
    describe(&fleet, &replay, &truth);
    println!(
        "training data as of day {}: {} devices; replay data as of day {}: {} devices",
        args.train_days,
        train.devices.len(),
        args.days,
        replay.devices.len()
    );

    let mut options = PredictOptions::default();
    if let Some(l) = &args.learner {
        options.learner = serde_json::from_value(serde_json::Value::String(l.clone()))
            .with_context(|| format!("--learner {l}: logistic_regression or gradient_boosting"))?;
    }
    println!("learner: {}", options.learner.as_str());
    let t = Instant::now();
    let report = backtest(
        &catalog,
        &options,
        &train,
        &replay,
        Duration::hours(args.step_hours),
        &|what| eprintln!("backtest: {what} ({:.0} s)", t.elapsed().as_secs_f64()),
    )
    .map_err(|e| anyhow::anyhow!(e))
    .context("backtest")?;
    let backtest_s = t.elapsed().as_secs_f64();
    println!("\n{}", report.table());
    println!(
        "backtest (train + replay) {backtest_s:.1} s; elapsed in all {:.1} s",
        wall.elapsed().as_secs_f64()
    );
    if let Some(dir) = &args.out {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let csv = dir.join(format!("backtest_{profile}.csv"));
        std::fs::write(&csv, report.csv()).with_context(|| format!("writing {}", csv.display()))?;
        let json = dir.join(format!("backtest_{profile}.json"));
        std::fs::write(&json, serde_json::to_string_pretty(&report)?)
            .with_context(|| format!("writing {}", json.display()))?;
        println!("wrote {} and {}", csv.display(), json.display());
    }
    Ok(())
}
