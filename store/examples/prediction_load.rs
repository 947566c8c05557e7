//! Measures `prediction_data` over a fleet written by real commits.
//!
//! `cargo run --release -p fleetpulse-store --example prediction_load -- [DEVICES] [DAYS]`
//! (defaults 2000 devices, 60 days): every device reports `runtime_hours`,
//! `filter_life_pct` and `o2_purity_pct` every 3 hours; the readings are committed in
//! batches like ingest does, then the prediction data (history = DAYS, recent = 14 days)
//! is read three times and the wall time of each read is printed.

use std::sync::Arc;
use std::time::Instant;

use chrono::{Duration, Utc};
use fleetpulse_domain::prediction::PredictionData;
use fleetpulse_domain::store::{IngestBatch, PredictionStore, Store, UnknownDevicePolicy};
use fleetpulse_domain::telemetry::{TelemetryLimits, parse_telemetry};
use fleetpulse_domain::{Catalog, Policy, Serial};
use fleetpulse_rules::CatalogRules;
use fleetpulse_store::{Durability, SqliteStore, StoreOptions};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let devices: usize = args.next().map_or(Ok(2000), |a| a.parse())?;
    let days: i64 = args.next().map_or(Ok(60), |a| a.parse())?;
    let dir = tempfile::tempdir()?;
    let catalog = Arc::new(Catalog::from_toml_str(include_str!(
        "../../config/catalog.toml"
    ))?);
    let policy = Arc::new(Policy::from_toml_str(include_str!(
        "../../config/policy.toml"
    ))?);
    let store = SqliteStore::open(
        &dir.path().join("load.db"),
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
    .await?;
    let start = Utc::now() - Duration::days(days);
    let steps = days * 8;
    let limits = TelemetryLimits::default();
    let t = Instant::now();
    let mut readings = Vec::new();
    let mut stored = 0usize;
    for step in 0..steps {
        let ts = start + Duration::hours(3 * step);
        for d in 0..devices {
            let serial = Serial::parse(&format!("OC5-{d:06}"))?;
            let body = serde_json::json!({
                "seq": step + 1, "ts": ts.to_rfc3339(), "model": "OC-5A",
                "runtime_hours": 3.0 * step as f64,
                "filter_life_pct": 100.0 - (step % 400) as f64 * 0.2,
                "o2_purity_pct": 94.0 + (d % 5) as f64 * 0.1,
            });
            if let Some(Ok(r)) =
                parse_telemetry(&serial, body.to_string().as_bytes(), Utc::now(), &limits).pop()
            {
                readings.push(r);
            }
        }
        if readings.len() >= 20_000 || step + 1 == steps {
            stored += store
                .commit_batch(IngestBatch {
                    readings: std::mem::take(&mut readings),
                    ..IngestBatch::default()
                })
                .await?
                .stored;
        }
    }
    println!(
        "wrote {stored} readings ({devices} devices x {days} days, 3 fields, every 3 h) in {:.1} s",
        t.elapsed().as_secs_f64()
    );
    for _ in 0..3 {
        let t = Instant::now();
        let data: PredictionData = store.prediction_data(Utc::now(), days as u32, 14).await?;
        let days_read: usize = data
            .devices
            .iter()
            .flat_map(|d| d.daily.values())
            .map(Vec::len)
            .sum();
        println!(
            "prediction_data: {} devices, {days_read} field-days in {:.0} ms",
            data.devices.len(),
            t.elapsed().as_secs_f64() * 1000.0
        );
    }
    Ok(())
}
