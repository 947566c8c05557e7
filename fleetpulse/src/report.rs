//! `fleetpulse import <kind> FILE.csv` (devices, failures, maintenance, …): history into the store, straight
//! (works while `serve` runs: SQLite serialises the writers); and `fleetpulse report
//! reliability`: the reliability tables of a period as CSV files and one JSON.

use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use chrono::{DateTime, Duration, Utc};
use fleetpulse_analytics::{GroupKey, ReportQuery};
use fleetpulse_domain::reliability::{
    ComponentLifeRecord, DataRequest, ImportKind, ImportReport, Period, ReliabilitySource,
};

use crate::app::{init_logging, open_store};
use crate::cli::{ImportArgs, ImportCommand, ReliabilityReportArgs, ReportCommand};
use crate::config::Config;

/// Loads the file; prints what happened. Fails (after loading the good rows) when a row
/// was refused, so a script notices.
pub async fn import(cmd: ImportCommand) -> anyhow::Result<()> {
    let (kind, args): (ImportKind, ImportArgs) = match cmd {
        ImportCommand::Devices(a) => (ImportKind::Devices, a),
        ImportCommand::Failures(a) => (ImportKind::Failures, a),
        ImportCommand::Maintenance(a) => (ImportKind::Maintenance, a),
        ImportCommand::Meters(a) => (ImportKind::Meters, a),
        ImportCommand::Telemetry(a) => (ImportKind::Telemetry, a),
        ImportCommand::Alarms(a) => (ImportKind::Alarms, a),
    };
    let cfg = Config::load(args.store.config.as_deref(), &args.store.overrides())?;
    init_logging("warn", cfg.log.format);
    let text = std::fs::read_to_string(&args.file)
        .with_context(|| format!("reading {}", args.file.display()))?;
    let catalog = Arc::new(cfg.load_catalog()?);
    let store = open_store(&cfg, catalog, Arc::new(cfg.load_policy()?)).await?;
    let report = store
        .import_history(kind, text)
        .await
        .with_context(|| format!("{} cannot be imported", args.file.display()))?;
    print_report(&args.file.display().to_string(), &report);
    anyhow::ensure!(
        report.errors.is_empty(),
        "{} of {} rows refused (listed above); the other rows are loaded",
        report.errors.len(),
        report.rows
    );
    Ok(())
}

fn print_report(file: &str, r: &ImportReport) {
    for e in &r.errors {
        println!("{file}:{}: refused: {}", e.line, e.reason);
    }
    for e in &r.same_incident {
        println!("{file}:{}: not loaded: {}", e.line, e.reason);
    }
    println!(
        "fleetpulse: imported {} of {} rows from {file} ({} already imported, {} same incident as a recorded event, {} refused)",
        r.imported,
        r.rows,
        r.duplicates,
        r.same_incident.len(),
        r.errors.len()
    );
}

fn time_arg(flag: &str, raw: Option<&str>) -> anyhow::Result<Option<DateTime<Utc>>> {
    raw.map(|r| {
        DateTime::parse_from_rfc3339(r.trim())
            .map(|t| t.with_timezone(&Utc))
            .with_context(|| {
                format!("{flag} {r:?} is not an RFC 3339 time such as 2026-01-31T00:00:00Z")
            })
    })
    .transpose()
}

fn group_keys(raw: &str) -> anyhow::Result<Vec<GroupKey>> {
    let mut keys = Vec::new();
    for name in raw.split(',').map(str::trim).filter(|n| !n.is_empty()) {
        let key = match name {
            "fleet" => GroupKey::Fleet,
            "model" => GroupKey::Model,
            "kind" => GroupKey::Kind,
            "region" => GroupKey::Region,
            "failure_mode" => GroupKey::FailureMode,
            "code" => GroupKey::Code,
            "component" => GroupKey::Component,
            other => anyhow::bail!(
                "--group-by: {other:?} is not one of fleet, model, kind, region, failure_mode, code, component"
            ),
        };
        if !keys.contains(&key) {
            keys.push(key);
        }
    }
    Ok(keys)
}

/// `fleetpulse report reliability`: reads the period from the store (refolding changed
/// device-months first), computes every table and writes `DIR/<table>.csv` and
/// `DIR/reliability.json`; prints each file it wrote.
pub async fn report(cmd: ReportCommand) -> anyhow::Result<()> {
    let ReportCommand::Reliability(args) = cmd;
    reliability(args).await
}

async fn reliability(args: ReliabilityReportArgs) -> anyhow::Result<()> {
    let to = time_arg("--to", args.to.as_deref())?.unwrap_or_else(Utc::now);
    let from = time_arg("--from", args.from.as_deref())?.unwrap_or(to - Duration::days(365));
    anyhow::ensure!(from < to, "--from ({from}) must be before --to ({to})");
    let as_of = time_arg("--as-of", args.as_of.as_deref())?;
    if let Some(t) = as_of {
        anyhow::ensure!(t <= Utc::now(), "--as-of ({t}) is in the future");
        anyhow::ensure!(t > from, "--as-of ({t}) must be after --from ({from})");
    }
    let query = ReportQuery {
        group_by: group_keys(&args.group_by)?,
        confidence: args.confidence,
        ..ReportQuery::default()
    };
    query.validate().map_err(|e| anyhow::anyhow!("{e}"))?;
    let cfg = Config::load(args.store.config.as_deref(), &args.store.overrides())?;
    init_logging("warn", cfg.log.format);
    let catalog = Arc::new(cfg.load_catalog()?);
    let store = open_store(&cfg, catalog, Arc::new(cfg.load_policy()?)).await?;
    let request = DataRequest {
        period: Period { from, to },
        as_of,
        component_lives: query.keys().iter().any(|k| k.fits_component_lives()),
    };
    let data = store
        .reliability_data_for(request)
        .await
        .context("reading the reliability data")?;
    let lives = lives_csv(&data.component_lives);
    let to = data.period.map_or(to, |p| p.to);
    let report = tokio::task::spawn_blocking(move || fleetpulse_analytics::compute(&data, &query))
        .await
        .context("report task")?
        .map_err(|e| anyhow::anyhow!("computing the report: {e}"))?;
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("--out {}: cannot create the directory", args.out.display()))?;
    for (name, text) in report.tables_csv() {
        write(&args.out.join(format!("{name}.csv")), text.as_bytes())?;
    }
    if let Some(text) = lives {
        write(&args.out.join("component_lives.csv"), text.as_bytes())?;
    }
    write(
        &args.out.join("reliability.json"),
        serde_json::to_string_pretty(&report)?.as_bytes(),
    )?;
    println!(
        "fleetpulse: reliability report {} to {}: {} MTBF rows, {} Weibull fits, {} warnings",
        from.to_rfc3339(),
        to.to_rfc3339(),
        report.mtbf.len(),
        report.weibull.len(),
        report.warnings.len()
    );
    Ok(())
}

/// The component lives as CSV (`None` when none were read).
fn lives_csv(lives: &[ComponentLifeRecord]) -> Option<String> {
    if lives.is_empty() {
        return None;
    }
    let mut out = String::from("serial,component,ages_on,installed_at,entry,exit,failure_mode\r\n");
    for l in lives {
        out.push_str(&format!(
            "{},{},{},{},{},{},{}\r\n",
            l.serial.as_str(),
            l.component,
            l.ages_on,
            l.installed_at
                .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
                .unwrap_or_default(),
            l.entry,
            l.exit,
            l.failure_mode.as_deref().unwrap_or("")
        ));
    }
    Some(out)
}

fn write(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    std::fs::write(path, bytes).with_context(|| format!("writing {}", path.display()))?;
    println!(
        "fleetpulse: wrote {} ({} bytes)",
        path.display(),
        bytes.len()
    );
    Ok(())
}
