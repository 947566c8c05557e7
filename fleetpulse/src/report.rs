//! `fleetpulse import failures|maintenance FILE.csv`: history into the store, straight
//! (works while `serve` runs: SQLite serialises the writers).

use std::sync::Arc;

use anyhow::Context;
use fleetpulse_domain::reliability::{ImportKind, ImportReport, ReliabilitySource};

use crate::app::{init_logging, open_store};
use crate::cli::{ImportArgs, ImportCommand};
use crate::config::Config;

/// Loads the file; prints what happened. Fails (after loading the good rows) when a row
/// was refused, so a script notices.
pub async fn import(cmd: ImportCommand) -> anyhow::Result<()> {
    let (kind, args): (ImportKind, ImportArgs) = match cmd {
        ImportCommand::Failures(a) => (ImportKind::Failures, a),
        ImportCommand::Maintenance(a) => (ImportKind::Maintenance, a),
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
