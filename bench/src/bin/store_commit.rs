//! Store commit benchmark: the SQLite batch commit alone, without MQTT or decoding.
//!
//! Builds realistic concentrator readings (the simulator's nine fields, an alarm list)
//! for `--devices` serials, commits them in batches of `--batch` with the round-robin
//! arrival order a fleet of equal devices produces, and prints readings per second,
//! commit latency, CPU seconds per 100 000 readings and the WAL bytes written. This is
//! the inner loop of the ingest throughput work: the same store code the pipeline calls.
//!
//! ```sh
//! cargo run --release -p fleetpulse-bench --bin store_commit -- --devices 10000 --batch 8000
//! ```

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use chrono::{DateTime, Duration, TimeZone, Utc};
use clap::Parser;
use fleetpulse_domain::catalog::Catalog;
use fleetpulse_domain::policy::Policy;
use fleetpulse_domain::serial::Serial;
use fleetpulse_domain::store::{IngestBatch, Store, UnknownDevicePolicy};
use fleetpulse_domain::telemetry::Reading;
use fleetpulse_rules::CatalogRules;
use fleetpulse_store::{Durability, SqliteStore, StoreOptions};

#[derive(Parser)]
#[command(about = "SQLite batch commit throughput, without MQTT")]
struct Args {
    /// Distinct serials; each batch holds readings of `batch / devices` rounds.
    #[arg(long, default_value_t = 10_000)]
    devices: usize,
    /// Readings per commit.
    #[arg(long, default_value_t = 8_000)]
    batch: usize,
    /// Readings per device in the measured part (after one warm-up reading each).
    #[arg(long, default_value_t = 30)]
    per_device: usize,
    /// `normal` instead of the default `full` (survives a process crash only).
    #[arg(long)]
    normal: bool,
}

const FIELDS: [(&str, f64); 8] = [
    ("filter_life_pct", 80.0),
    ("o2_purity_pct", 94.0),
    ("flow_lpm", 2.0),
    ("outlet_pressure_kpa", 55.0),
    ("temperature_c", 31.0),
    ("sieve_bed_hours", 1200.0),
    ("compressor_hours", 1300.0),
    ("battery_pct", 100.0),
];

fn reading(serial: &Serial, seq: u64, ts: DateTime<Utc>) -> Reading {
    let mut values = BTreeMap::new();
    values.insert("runtime_hours".to_string(), 1000.0 + seq as f64 / 60.0);
    for (i, (field, base)) in FIELDS.iter().enumerate() {
        let wiggle = ((seq as f64) * 0.37 + i as f64).sin();
        values.insert((*field).to_string(), (base + wiggle).max(0.0));
    }
    Reading {
        serial: serial.clone(),
        seq,
        ts,
        received_at: Utc::now(),
        model: Some("OC-5A".into()),
        firmware: Some("2.4.1".into()),
        alarms: Some(Vec::new()),
        values,
    }
}

fn wal_bytes(path: &std::path::Path) -> u64 {
    std::fs::metadata(path.with_extension("db-wal")).map_or(0, |m| m.len())
}

/// Bytes this process caused to be written to storage (`/proc/self/io`).
fn written_bytes() -> u64 {
    let io = std::fs::read_to_string("/proc/self/io").unwrap_or_default();
    io.lines()
        .find_map(|l| l.strip_prefix("write_bytes: "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map_or(Vec::new(), |(_, rest)| rest.split_whitespace().collect());
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // utime and stime are fields 14 and 15 of stat; index 11 and 12 after the ')'.
    (ticks(11) + ticks(12)) / 100.0
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("fleetpulse.db");
    let catalog = Catalog::from_toml_str(include_str!("../../../config/catalog.toml"))
        .context("the shipped catalog")?;
    let policy = Policy::from_toml_str(include_str!("../../../config/policy.toml"))
        .context("the shipped policy")?;
    let opts = StoreOptions {
        clock: Default::default(),
        catalog: Arc::new(catalog),
        rules: Arc::new(CatalogRules::new(Arc::new(policy))),
        unknown_device: UnknownDevicePolicy::AutoRegister,
        durability: if args.normal {
            Durability::Normal
        } else {
            Durability::Full
        },
        sink_spool: false,
        cache_mib: fleetpulse_store::DEFAULT_CACHE_MIB,
    };
    let store = SqliteStore::open(&path, opts).await?;
    let serials: Vec<Serial> = (0..args.devices)
        .map(|i| Serial::parse(&format!("BENCH{i:06}")))
        .collect::<Result<_, _>>()?;
    let start_ts = Utc
        .with_ymd_and_hms(2026, 11, 1, 0, 0, 0)
        .single()
        .context("a valid start time")?;

    // Warm-up: registers every device, one reading each.
    for chunk in serials.chunks(args.batch.max(1)) {
        let readings = chunk.iter().map(|s| reading(s, 1, start_ts)).collect();
        store
            .commit_batch(IngestBatch {
                readings,
                ..IngestBatch::default()
            })
            .await?;
    }

    // Round-robin arrival: every device's next reading, then the next round.
    let total = args.devices * args.per_device;
    let mut all = Vec::with_capacity(total);
    for round in 0..args.per_device {
        let seq = round as u64 + 2;
        let ts = start_ts + Duration::seconds(60 * (round as i64 + 1));
        all.extend(serials.iter().map(|s| reading(s, seq, ts)));
    }
    let wal_before = wal_bytes(&path);
    let cpu_before = cpu_seconds();
    let written_before = written_bytes();
    let started = Instant::now();
    let mut latencies = Vec::new();
    let mut stored = 0usize;
    let mut it = all.into_iter().peekable();
    while it.peek().is_some() {
        let readings: Vec<Reading> = it.by_ref().take(args.batch).collect();
        let t = Instant::now();
        let report = store
            .commit_batch(IngestBatch {
                readings,
                ..IngestBatch::default()
            })
            .await?;
        latencies.push(t.elapsed().as_secs_f64() * 1000.0);
        stored += report.stored;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let cpu = cpu_seconds() - cpu_before;
    let written = written_bytes().saturating_sub(written_before);
    latencies.sort_by(f64::total_cmp);
    let pct = |p: f64| latencies[((latencies.len() - 1) as f64 * p).round() as usize];
    println!(
        "store_commit devices={} batch={} readings={} durability={}",
        args.devices,
        args.batch,
        stored,
        if args.normal { "normal" } else { "full" }
    );
    println!(
        "  {:.0} readings/s, {} commits, commit p50 {:.1} ms p99 {:.1} ms, {:.2} CPU s per 100k, {:.0} bytes written per reading, WAL file {} MiB",
        stored as f64 / elapsed,
        latencies.len(),
        pct(0.5),
        pct(0.99),
        cpu * 100_000.0 / stored.max(1) as f64,
        written as f64 / stored.max(1) as f64,
        wal_bytes(&path).max(wal_before) / (1 << 20)
    );
    anyhow::ensure!(stored == total, "stored {stored} of {total} readings");
    Ok(())
}
