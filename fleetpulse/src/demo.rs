//! `demo`'s start (issue 23): one simulated clock for the whole process, and a past.
//!
//! The clock starts at the wall clock's time, or just after the latest time the data
//! directory already holds (a demo run before this one ran its clock ahead), and runs
//! `--speed` times faster than the wall clock. On a fresh data directory the demo first
//! writes `--history-days` of its fleet's history (default 730) through the history
//! import, ending at the clock's start; the same fleet then goes on live from there, so
//! the statistics, the models and the orders have a past from the first minute.

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use chrono::{DateTime, DurationRound, Utc};
use fleetpulse_domain::reliability::{ImportKind, ImportReport, ReliabilitySource};
use fleetpulse_domain::{Catalog, Clock};
use fleetpulse_simulator::backlog::{HistoryCounts, history_files};
use fleetpulse_simulator::{Fleet, FleetConfig};
use fleetpulse_store::SqliteStore;
use serde::Serialize;

use crate::cli::FleetArgs;

/// The demo's clock and, after a history was loaded, the fleet at the clock's start.
pub struct DemoStart {
    pub clock: Clock,
    /// The fleet the history ran (`None`: the runner builds a fresh one).
    pub fleet: Option<Fleet>,
}

/// What the demo loaded before it started, and how long it took.
#[derive(Clone, Debug, Serialize)]
pub struct LoadedHistory {
    #[serde(flatten)]
    pub counts: HistoryCounts,
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
    /// Rows the import refused (each logged with its reason); 0 on a sound history.
    pub refused_rows: usize,
    pub simulate_seconds: f64,
    pub import_seconds: f64,
}

/// Chooses the clock and loads the history into the store at `db` when it has no
/// device yet. The store is opened here with a clock standing at the history's end (the
/// import's "now") and closed again before the process opens it on the running clock.
pub async fn prepare(
    db: &Path,
    open: impl AsyncFnOnce(Clock) -> anyhow::Result<Arc<SqliteStore>>,
    fleet_args: &FleetArgs,
    history_days: u32,
    catalog: &Catalog,
) -> anyhow::Result<DemoStart> {
    anyhow::ensure!(
        fleet_args.speed.is_finite() && fleet_args.speed > 0.0 && fleet_args.speed <= 1e7,
        "--speed {} must be a number above 0 and at most 10 000 000",
        fleet_args.speed
    );
    let (latest, has_devices) =
        SqliteStore::latest_instant(db).with_context(|| format!("reading {}", db.display()))?;
    let wall = Utc::now()
        .duration_trunc(chrono::Duration::minutes(1))
        .unwrap_or_else(|_| Utc::now());
    let start = match latest {
        Some(t) if t >= wall => (t + chrono::Duration::minutes(1))
            .duration_trunc(chrono::Duration::minutes(1))
            .unwrap_or(t),
        _ => wall,
    };
    let mut fleet = None;
    if history_days > 0 && !has_devices {
        let mut f = Fleet::new(
            &FleetConfig {
                devices: fleet_args.devices,
                seed: fleet_args.seed,
                serial_prefix: fleet_args.serial_prefix.clone(),
                untidy: None,
            },
            catalog,
        )?;
        crate::app::announce(&format!(
            "writing {history_days} days of history for {} devices, ending {start}",
            fleet_args.devices
        ));
        let t0 = Instant::now();
        let files = history_files(&mut f, catalog, start, history_days, fleet_args.seed);
        let simulate_seconds = t0.elapsed().as_secs_f64();
        if let Some(path) = &fleet_args.ground_truth {
            // the history's truth first; the live fleet appends its own after it
            let lines: String = files.truth.iter().map(|e| e.to_json_line()).collect();
            std::fs::write(path, lines)
                .with_context(|| format!("writing the ground truth to {}", path.display()))?;
        }
        let t1 = Instant::now();
        let store = open(Clock::Fixed(start)).await?;
        let mut refused = 0;
        let mut import = async |kind: ImportKind, text: String| -> anyhow::Result<()> {
            let report: ImportReport = store
                .import_history(kind, text)
                .await
                .with_context(|| format!("importing the demo's {} history", kind.as_str()))?;
            for e in report.errors.iter().take(5) {
                tracing::warn!(kind = kind.as_str(), line = e.line, reason = %e.reason, "demo history row refused");
            }
            refused += report.errors.len();
            Ok(())
        };
        import(ImportKind::Devices, files.devices).await?;
        if files.counts.meter_rows > 0 {
            import(ImportKind::Meters, files.meters).await?;
        }
        for text in files.telemetry {
            import(ImportKind::Telemetry, text).await?;
        }
        import(ImportKind::Failures, files.failures).await?;
        import(ImportKind::Maintenance, files.maintenance).await?;
        import(ImportKind::Alarms, files.alarms).await?;
        // the operating hours of every device-month, folded once now rather than by the
        // first statistics read
        store.consolidate_exposure(usize::MAX).await?;
        crate::app::close_store(store).await?;
        let report = LoadedHistory {
            counts: files.counts,
            from: start - chrono::Duration::days(i64::from(history_days)),
            to: start,
            refused_rows: refused,
            simulate_seconds,
            import_seconds: t1.elapsed().as_secs_f64(),
        };
        crate::app::announce(&format!(
            "history loaded: {}",
            serde_json::to_string(&report)?
        ));
        fleet = Some(f);
    } else if history_days > 0 {
        crate::app::announce("the data directory already holds devices: no history written");
    }
    let clock = Clock::simulated(start, fleet_args.speed).map_err(|e| anyhow::anyhow!(e))?;
    crate::app::announce(&format!(
        "clock: simulated, starting {start}, {} times faster than the wall clock",
        fleet_args.speed
    ));
    Ok(DemoStart { clock, fleet })
}
