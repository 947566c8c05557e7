//! Backtests of the failure-risk predictions (docs/predictions.md, "Backtests"):
//! `fleetpulse backtest` and `POST /api/v1/models/backtest`. Read-only on the store.

use std::sync::Arc;

use anyhow::Context;
use chrono::{DateTime, Duration, Utc};
use fleetpulse_analytics::predict::backtest::BacktestReport;
use fleetpulse_domain::catalog::Catalog;
use fleetpulse_domain::store::{PredictionStore, StoreError};

use crate::config::AnalyticsConfig;

/// Most replayed instants per device (the replay's length over its step).
pub const MAX_STEPS: i64 = 20_000;

/// What a backtest is asked for, checked: names are the caller's (`--until`, `until`).
pub struct Window {
    pub train_until: DateTime<Utc>,
    pub until: DateTime<Utc>,
    pub step: Duration,
}

impl Window {
    /// `names`: how the caller calls the three parameters, for the error text.
    pub fn check(
        train_until: DateTime<Utc>,
        until: Option<DateTime<Utc>>,
        step_hours: f64,
        now: DateTime<Utc>,
        names: [&str; 3],
    ) -> Result<Self, String> {
        let [t1_name, t2_name, step_name] = names;
        let until = until.unwrap_or(now);
        if until > now {
            return Err(format!(
                "{t2_name} ({}) is in the future",
                until.to_rfc3339()
            ));
        }
        if train_until >= until {
            return Err(format!(
                "{t1_name} ({}) must be before {t2_name} ({})",
                train_until.to_rfc3339(),
                until.to_rfc3339()
            ));
        }
        if !(step_hours.is_finite() && (1.0 / 60.0..=24.0 * 366.0).contains(&step_hours)) {
            return Err(format!(
                "{step_name} must be between one minute (0.0167) and a year, got {step_hours}"
            ));
        }
        let step = Duration::seconds((step_hours * 3600.0).round() as i64);
        let steps = (until - train_until).num_seconds() / step.num_seconds().max(1);
        if steps > MAX_STEPS {
            return Err(format!(
                "{t1_name} to {t2_name} is {steps} steps of {step_hours} h; at most {MAX_STEPS}: a longer {step_name} or a shorter window"
            ));
        }
        Ok(Window {
            train_until,
            until,
            step,
        })
    }
}

/// Reads the data as of the window's two ends and runs the backtest off the async
/// workers; `progress` hears each stage.
pub async fn run(
    store: &dyn PredictionStore,
    catalog: Arc<Catalog>,
    cfg: &AnalyticsConfig,
    window: &Window,
    progress: Arc<dyn Fn(&str) + Send + Sync>,
) -> Result<BacktestReport, StoreError> {
    let (t1, t2) = (window.train_until, window.until);
    progress(&format!(
        "reading the data as of {t1} (training) and as of {t2} (replay)"
    ));
    let train = store
        .prediction_data(t1, cfg.history_days, cfg.recent_days)
        .await?;
    // the replay reads back to the training window's start, so every instant after T1
    // has the history a live forecast then would have had
    let replay_days = u32::try_from((t2 - t1).num_days() + 1)
        .unwrap_or(u32::MAX)
        .saturating_add(cfg.history_days);
    let replay = store
        .prediction_data(t2, replay_days, cfg.recent_days)
        .await?;
    let options = cfg.model.clone();
    let step = window.step;
    tokio::task::spawn_blocking(move || {
        fleetpulse_analytics::predict::backtest::backtest(
            &catalog,
            &options,
            &train,
            &replay,
            step,
            &|what| progress(what),
        )
    })
    .await
    .map_err(|e| StoreError::Internal(format!("backtest task failed: {e}")))?
    .map_err(StoreError::Invalid)
}

/// `fleetpulse backtest`: [`run`] with progress on stderr, the table on stdout,
/// `backtest.csv` and `backtest.json` in `--out`.
pub async fn backtest(args: crate::cli::BacktestArgs) -> anyhow::Result<()> {
    let cfg = crate::config::Config::load(args.store.config.as_deref(), &args.store.overrides())?;
    crate::app::init_logging("warn", cfg.log.format);
    cfg.analytics.check()?;
    let window = Window::check(
        args.train_until,
        args.until,
        args.step_hours,
        Utc::now(),
        ["--train-until", "--until", "--step-hours"],
    )
    .map_err(|e| anyhow::anyhow!(e))?;
    let catalog = Arc::new(cfg.load_catalog()?);
    let policy = Arc::new(cfg.load_policy()?);
    let store = crate::app::open_store(&cfg, catalog.clone(), policy).await?;
    let started = std::time::Instant::now();
    let report = run(
        store.as_ref(),
        catalog,
        &cfg.analytics,
        &window,
        Arc::new(move |what: &str| {
            eprintln!(
                "fleetpulse backtest: {what} ({:.0} s)",
                started.elapsed().as_secs_f64()
            );
        }),
    )
    .await
    .context("backtest")?;
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
