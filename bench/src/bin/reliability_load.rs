//! Store-side load of the reliability statistics (prints figures; asserts nothing):
//!
//! 1. Fills a SQLite store with `--devices` devices (default 100 000) × `--months`
//!    (default 24) consolidated device-months of exposure, `--events` (default 200 000)
//!    failure and maintenance events (half each; a quarter of the failures with their
//!    completed repair order, a quarter with their alarm episode), then times
//!    `reliability_data` for the whole period and reports the peak RSS.
//! 2. Fills a second store with `--fold-devices` (default 1 000) × the same months of
//!    hourly `runtime_hours` rollups, marks every (month, serial) dirty and times the
//!    consolidation fold (rollup rows/s).
//!
//! `cargo run --release -p fleetpulse-bench --bin reliability_load -- [--devices N] …`

use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use chrono::{Datelike, TimeZone, Utc};
use clap::Parser;
use fleetpulse_domain::reliability::{Period, ReliabilitySource};
use fleetpulse_domain::store::UnknownDevicePolicy;
use fleetpulse_domain::{Catalog, Policy};
use fleetpulse_rules::CatalogRules;
use fleetpulse_store::{Durability, SqliteStore, StoreOptions};
use rand::{Rng, SeedableRng};
use rusqlite::params;

const CATALOG: &str = include_str!("../../../config/catalog.toml");
const POLICY: &str = include_str!("../../../config/policy.toml");
const MODELS: [(&str, &str); 4] = [
    ("OC-5A", "oxygen_concentrator"),
    ("OC-10", "oxygen_concentrator"),
    ("HV-200", "ventilator"),
    ("HV-150", "ventilator"),
];
const CODES: [&str; 4] = ["E101", "E102", "E103", "E104"];
const HOUR: i64 = 3_600_000;

#[derive(Parser)]
struct Args {
    #[arg(long, default_value_t = 100_000)]
    devices: usize,
    #[arg(long, default_value_t = 24)]
    months: usize,
    #[arg(long, default_value_t = 200_000)]
    events: usize,
    #[arg(long, default_value_t = 1_000)]
    fold_devices: usize,
    /// Skip the fold measurement.
    #[arg(long)]
    no_fold: bool,
}

fn month_starts(n: usize) -> Vec<i64> {
    let (mut y, mut m) = (2024, 1);
    (0..=n)
        .map(|_| {
            let t = Utc
                .with_ymd_and_hms(y, m, 1, 0, 0, 0)
                .single()
                .expect("valid month")
                .timestamp_millis();
            (y, m) = if m == 12 { (y + 1, 1) } else { (y, m + 1) };
            t
        })
        .collect()
}

fn serial(i: usize) -> String {
    format!("BN-{i:07}")
}

async fn open(path: &std::path::Path) -> anyhow::Result<SqliteStore> {
    let catalog = Arc::new(Catalog::from_toml_str(CATALOG)?);
    let policy = Arc::new(Policy::from_toml_str(POLICY)?);
    Ok(SqliteStore::open(
        path,
        StoreOptions {
            clock: Default::default(),
            catalog,
            rules: Arc::new(CatalogRules::new(policy)),
            unknown_device: UnknownDevicePolicy::AutoRegister,
            durability: Durability::Normal,
            sink_spool: false,
            cache_mib: fleetpulse_store::DEFAULT_CACHE_MIB,
        },
    )
    .await?)
}

fn peak_rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

fn fill_population(
    conn: &mut rusqlite::Connection,
    a: &Args,
    months: &[i64],
) -> anyhow::Result<()> {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(6);
    let tx = conn.transaction()?;
    {
        let mut dev = tx.prepare(
            "INSERT INTO devices (serial, model, kind, status, criticality, region, connection, registered_at) \
             VALUES (?1, ?2, ?3, 'at_customer', 'high', ?4, 'offline', ?5)",
        )?;
        let mut exp = tx.prepare(
            "INSERT INTO exposure_months (month, serial, hours, resets, gaps, gap_hours, samples, baseline_hour, \
             baseline_value, first_hour, first_value, last_hour, last_value, folded_at) \
             VALUES (?1, ?2, ?3, 0, 0, 0, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
        )?;
        // month-major, as the commit path writes them
        let mut meters: Vec<f64> = (0..a.devices)
            .map(|_| rng.random_range(0.0..20_000.0))
            .collect();
        for i in 0..a.devices {
            let (model, kind) = MODELS[i % MODELS.len()];
            dev.execute(params![
                serial(i),
                model,
                kind,
                format!("region-{}", i % 7),
                months[0]
            ])?;
        }
        for w in months.windows(2) {
            let (start, end) = (w[0], w[1]);
            let samples = (end - start) / HOUR;
            for (i, meter) in meters.iter_mut().enumerate() {
                let hours: f64 = rng.random_range(200.0..(samples as f64 * 0.95));
                let before = *meter;
                *meter += hours;
                exp.execute(params![
                    start,
                    serial(i),
                    hours,
                    samples,
                    start - HOUR,
                    before,
                    start,
                    before,
                    end - HOUR,
                    *meter,
                    end
                ])?;
            }
        }
    }
    {
        let span = months[months.len() - 1] - months[0];
        let failures = a.events / 2;
        let mut order = tx.prepare(
            "INSERT INTO orders (serial, cause, kind, priority, status, title, solution, skills, parts, labour_minutes, \
             evidence, respond_by, arrive_by, complete_by, created_at, updated_at, trigger_count, last_triggered_at, \
             version, started_at, closed_at, outcome) \
             VALUES (?1, ?2, 'repair', 'P2', 'completed', 't', 's', '[]', '[]', 60, '{}', ?3, ?3, ?3, ?3, ?4, 1, ?3, 5, ?5, ?4, ?6)",
        )?;
        let mut episode = tx.prepare(
            "INSERT INTO alarm_episodes (serial, code, severity, started_at, started_seq, ended_at, ended_seq, duration_s, \
             runtime_hours_at_start) VALUES (?1, ?2, 'critical', ?3, 1, ?4, 2, ?5, ?6)",
        )?;
        let mut failure = tx.prepare(
            "INSERT INTO failure_events (serial, at, runtime_hours, source, order_id, fault_code, failure_mode, \
             alarm_episode_id, model, kind, updated_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?2)",
        )?;
        let mut maint = tx.prepare(
            "INSERT INTO maintenance_records (serial, at, runtime_hours, kind, consumable, source, import_key) \
             VALUES (?1, ?2, ?3, ?4, ?5, 'import', ?6)",
        )?;
        for n in 0..failures {
            let i = rng.random_range(0..a.devices);
            let at = months[0] + rng.random_range(0..span);
            let age: f64 = rng.random_range(100.0..30_000.0);
            let code = CODES[n % CODES.len()];
            let (model, kind) = MODELS[i % MODELS.len()];
            let (source, order_id, episode_id) = match n % 4 {
                0 => {
                    order.execute(params![
                        serial(i),
                        format!("critical_alarm:{code}"),
                        at,
                        at + 30 * HOUR,
                        at + 20 * HOUR,
                        format!("{{\"failure_confirmed\":true,\"fault_code\":\"{code}\",\"labour_minutes\":90}}")
                    ])?;
                    ("repair_order", Some(tx.last_insert_rowid()), None)
                }
                1 => {
                    episode.execute(params![serial(i), code, at, at + 2 * HOUR, 7200.0, age])?;
                    ("alarm", None, Some(tx.last_insert_rowid()))
                }
                _ => ("import", None, None),
            };
            failure.execute(params![
                serial(i),
                at,
                age,
                source,
                order_id,
                code,
                "compressor",
                episode_id,
                model,
                kind
            ])?;
        }
        for n in 0..(a.events - failures) {
            let i = rng.random_range(0..a.devices);
            let at = months[0] + rng.random_range(0..span);
            let (kind, consumable) = if n % 2 == 0 {
                ("service", None)
            } else {
                ("consumable", Some("filter"))
            };
            maint.execute(params![
                serial(i),
                at,
                rng.random_range(100.0..30_000.0),
                kind,
                consumable,
                format!("bench|{n}")
            ])?;
        }
    }
    tx.commit()?;
    Ok(())
}

fn fill_rollups(
    conn: &mut rusqlite::Connection,
    devices: usize,
    months: &[i64],
) -> anyhow::Result<usize> {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
    let tx = conn.transaction()?;
    let mut rows = 0usize;
    {
        let mut dev = tx.prepare(
            "INSERT INTO devices (serial, model, kind, status, criticality, connection, registered_at) \
             VALUES (?1, 'OC-5A', 'oxygen_concentrator', 'at_customer', 'high', 'offline', ?2)",
        )?;
        let mut roll = tx.prepare(
            "INSERT INTO rollups (serial, hour, field, count, sum, min, max, last, last_seq) \
             VALUES (?1, ?2, 'runtime_hours', 6, ?3, ?3, ?3, ?3, ?4)",
        )?;
        let mut dirty =
            tx.prepare("INSERT OR IGNORE INTO exposure_dirty (month, serial) VALUES (?1, ?2)")?;
        let (start, end) = (months[0], months[months.len() - 1]);
        for i in 0..devices {
            let s = serial(i);
            dev.execute(params![s, start])?;
            let mut meter: f64 = rng.random_range(0.0..20_000.0);
            let mut hour = start;
            let mut seq = 0i64;
            while hour < end {
                meter += rng.random_range(0.0..1.0);
                seq += 6;
                roll.execute(params![s, hour, meter, seq])?;
                rows += 1;
                hour += HOUR;
            }
            for m in &months[..months.len() - 1] {
                dirty.execute(params![m, s])?;
            }
        }
    }
    tx.commit()?;
    Ok(rows)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let a = Args::parse();
    let months = month_starts(a.months);
    let dir = tempfile::tempdir()?;

    let path = dir.path().join("population.db");
    let store = open(&path).await?;
    let mut conn = rusqlite::Connection::open(&path)?;
    conn.execute_batch(
        "PRAGMA journal_mode = WAL; PRAGMA synchronous = OFF; PRAGMA busy_timeout = 5000;",
    )?;
    let t = Instant::now();
    fill_population(&mut conn, &a, &months)?;
    drop(conn);
    println!(
        "fill: {} devices x {} months of exposure, {} failure + maintenance events in {:.1} s; db {:.0} MiB",
        a.devices,
        a.months,
        a.events,
        t.elapsed().as_secs_f64(),
        std::fs::metadata(&path)
            .map(|m| m.len() as f64 / 1048576.0)
            .unwrap_or(0.0)
    );
    let rss_before = peak_rss_mib();
    let period = Period {
        from: Utc
            .timestamp_millis_opt(months[0])
            .single()
            .context("from")?,
        to: Utc
            .timestamp_millis_opt(months[a.months])
            .single()
            .context("to")?,
    };
    for run in 1..=2 {
        let t = Instant::now();
        let data = store.reliability_data(period).await?;
        println!(
            "reliability_data {} to {} (run {run}): {:.2} s; {} devices, {} exposure rows, {} failures, {} repairs, {} alarms, {} findings; peak RSS {:.0} MiB (before the reads {:.0} MiB)",
            period.from.format("%Y-%m"),
            period.to.format("%Y-%m"),
            t.elapsed().as_secs_f64(),
            data.devices.len(),
            data.exposure.len(),
            data.failures.len(),
            data.repairs.len(),
            data.alarms.len(),
            data.quality.len(),
            peak_rss_mib(),
            rss_before
        );
    }
    drop(store);

    if !a.no_fold {
        let path = dir.path().join("fold.db");
        let store = open(&path).await?;
        let mut conn = rusqlite::Connection::open(&path)?;
        conn.execute_batch(
            "PRAGMA journal_mode = WAL; PRAGMA synchronous = OFF; PRAGMA busy_timeout = 5000;",
        )?;
        let t = Instant::now();
        let rows = fill_rollups(&mut conn, a.fold_devices, &months)?;
        drop(conn);
        println!(
            "fill: {} devices x {} months of hourly runtime_hours rollups = {rows} rows in {:.1} s",
            a.fold_devices,
            a.months,
            t.elapsed().as_secs_f64()
        );
        let t = Instant::now();
        let r = store.consolidate_exposure(usize::MAX).await?;
        let secs = t.elapsed().as_secs_f64();
        println!(
            "fold: {} device-months, {} rollup rows in {secs:.2} s = {:.0} rollup rows/s, {:.0} device-months/s; {} left",
            r.pairs,
            r.rollup_rows,
            r.rollup_rows as f64 / secs,
            r.pairs as f64 / secs,
            r.remaining
        );
        let first_month = Utc
            .timestamp_millis_opt(months[0])
            .single()
            .context("month")?;
        println!(
            "(months from {}-{:02})",
            first_month.year(),
            first_month.month()
        );
    }
    Ok(())
}
