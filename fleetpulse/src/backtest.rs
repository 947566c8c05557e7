//! `fleetpulse backtest` (docs/predictions.md, "Backtests"): read-only on the store.

use std::sync::Arc;

use anyhow::Context;
use chrono::Utc;
use fleetpulse_domain::store::PredictionStore;

/// `fleetpulse backtest`: the data as of `--train-until` and as of `--until` from the
/// store, [`fleetpulse_analytics::predict::backtest::backtest`] on them (progress on
/// stderr), the table on stdout, `backtest.csv` and `backtest.json` in `--out`. Nothing is
/// written to the store.
pub async fn backtest(args: crate::cli::BacktestArgs) -> anyhow::Result<()> {
    let cfg = crate::config::Config::load(args.store.config.as_deref(), &args.store.overrides())?;
    crate::app::init_logging("warn", cfg.log.format);
    cfg.analytics.check()?;
    let now = Utc::now();
    let t1 = args.train_until;
    let t2 = args.until.unwrap_or(now);
    anyhow::ensure!(t2 <= now, "--until ({t2}) is in the future");
    anyhow::ensure!(
        t1 < t2,
        "--train-until ({t1}) must be before --until ({t2})"
    );
    anyhow::ensure!(
        args.step_hours.is_finite()
            && args.step_hours >= 1.0 / 60.0
            && args.step_hours <= 24.0 * 366.0,
        "--step-hours must be between one minute (0.0167) and a year, got {}",
        args.step_hours
    );
    let step = chrono::Duration::seconds((args.step_hours * 3600.0).round() as i64);
    let catalog = Arc::new(cfg.load_catalog()?);
    let policy = Arc::new(cfg.load_policy()?);
    let store = crate::app::open_store(&cfg, catalog.clone(), policy).await?;
    let a = &cfg.analytics;
    eprintln!(
        "fleetpulse backtest: reading the data as of {t1} (training) and as of {t2} (replay)"
    );
    let train = store
        .prediction_data(t1, a.history_days, a.recent_days)
        .await
        .context("reading the training data")?;
    // the replay reads back to the training window's start, so every instant after T1
    // has the history a live forecast then would have had
    let replay_days = u32::try_from((t2 - t1).num_days() + 1)
        .unwrap_or(u32::MAX)
        .saturating_add(a.history_days);
    let replay = store
        .prediction_data(t2, replay_days, a.recent_days)
        .await
        .context("reading the replay data")?;
    let options = a.model.clone();
    let started = std::time::Instant::now();
    let report = tokio::task::spawn_blocking(move || {
        fleetpulse_analytics::predict::backtest::backtest(
            &catalog,
            &options,
            &train,
            &replay,
            step,
            &|what| {
                eprintln!(
                    "fleetpulse backtest: {what} ({:.0} s)",
                    started.elapsed().as_secs_f64()
                );
            },
        )
    })
    .await
    .context("backtest task")?
    .map_err(|e| anyhow::anyhow!("backtest: {e}"))?;
    eprintln!(
        "fleetpulse backtest: done in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    crate::app::close_store(store).await?;
    print!("{}", report.table());
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("--out {}: cannot create the directory", args.out.display()))?;
    for (name, text) in [
        ("backtest.csv", report.csv()),
        ("backtest.json", serde_json::to_string_pretty(&report)?),
    ] {
        let path = args.out.join(name);
        std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
        eprintln!("fleetpulse backtest: wrote {}", path.display());
    }
    Ok(())
}
