//! Wiring: build every role from the configuration, run them, stop them in order.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use anyhow::Context;
use chrono::Utc;
use fleetpulse_api::{AppState, IngestStatus};
use fleetpulse_domain::Serial;
use fleetpulse_domain::credentials::DeviceCredentials;
use fleetpulse_domain::reliability::ReliabilitySource;
use fleetpulse_domain::store::Store;
use fleetpulse_domain::{Catalog, Clock, Policy};
use fleetpulse_ingest::credentials::DeviceToken;
use fleetpulse_ingest::{
    AuthMode, EndpointConfig, InfluxSink, IngestStats, Journal, MqttEndpoint, Pipeline,
    PipelineHandle, SinkStats, SinkWorker,
};
use fleetpulse_rules::CatalogRules;
use fleetpulse_simulator::{SimConfig, SimReport};
use fleetpulse_store::{Durability, SqliteStore, StoreOptions};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::cli::{
    Cli, Command, CommonArgs, CredentialArgs, DeviceCommand, FleetArgs, StoreArgs, TokenCommand,
};
use crate::config::{Config, DurabilitySetting, LogFormat};

/// Runs the command line's command to its end.
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve(args) => {
            let cfg = load(&args.common)?;
            let stop = shutdown_on_signal();
            serve(cfg, stop, None).await
        }
        Command::Demo(args) => {
            let cfg = load(&args.common)?;
            anyhow::ensure!(
                cfg.broker.is_none(),
                "demo runs its fleet against the built-in device endpoint; drop --mqtt-url (use `simulate` against a broker)"
            );
            anyhow::ensure!(
                cfg.mqtt.tls.is_none() && cfg.mqtt.auth_mode() != AuthMode::DeviceCredentials,
                "demo's simulated devices speak plain MQTT with no per-device token: run it without [mqtt.tls] and with mqtt.auth = \"none\" or \"shared_password\""
            );
            let stop = shutdown_on_signal();
            serve(
                cfg,
                stop,
                Some(Demo {
                    fleet: args.fleet,
                    modbus_devices: args.modbus_devices,
                    history_days: args.history_days,
                }),
            )
            .await
        }
        Command::Bridge(args) => crate::bridge::run_bridge(args).await,
        Command::SimulateModbus(args) => crate::bridge::simulate_modbus(args).await,
        Command::Simulate(args) => {
            init_logging("info", LogFormat::Text);
            let catalog = match &args.catalog {
                Some(p) => Catalog::from_toml_str(
                    &std::fs::read_to_string(p)
                        .with_context(|| format!("reading catalog {}", p.display()))?,
                )?,
                None => Catalog::from_toml_str(crate::config::EMBEDDED_CATALOG)?,
            };
            let stop = shutdown_on_signal();
            let report = run_simulator(
                sim_config(
                    &args.fleet,
                    args.mqtt_url.clone(),
                    args.device_password.clone(),
                ),
                None,
                Arc::new(catalog),
                stop,
            )
            .await?;
            println!(
                "fleetpulse: simulator finished: {}",
                serde_json::to_string(&report)?
            );
            Ok(())
        }
        Command::Device(DeviceCommand::Credential(args)) => device_credential(&args).await,
        Command::Token(cmd) => api_token(cmd).await,
        Command::Import(cmd) => crate::report::import(cmd).await,
        Command::Report(cmd) => crate::report::report(cmd).await,
        Command::Predict(args) => {
            let (worker, store) = analytics_worker(&args.store).await?;
            let report = worker.predict("cli", args.as_of).await;
            drop(worker);
            let closed = close_store(store).await;
            let report = report?;
            if let Some(note) = &report.note {
                eprintln!("fleetpulse: {note}; the run is not stored");
            }
            println!("{}", serde_json::to_string(&report)?);
            closed
        }
        Command::Train(args) => {
            let (worker, store) = analytics_worker(&args.store).await?;
            let reports = worker.train("cli", args.as_of).await;
            drop(worker);
            let closed = close_store(store).await;
            println!("{}", serde_json::to_string(&reports?)?);
            closed
        }
        Command::Backtest(args) => crate::backtest::backtest(args).await,
        Command::CheckConfig(common) => {
            let cfg = load(&common)?;
            cfg.load_catalog()?;
            cfg.load_policy()?;
            cfg.analytics.check()?;
            cfg.http.check_transport()?;
            cfg.http.auth_mode(false)?;
            cfg.http.serve_limits(None)?;
            cfg.webhooks.settings()?;
            api_tls_config(&cfg)?;
            // TLS files are read as a start would read them.
            match &cfg.broker {
                Some(broker) => drop(fleetpulse_ingest::ExternalSource::new(broker.clone())?),
                None => MqttEndpoint::check(&cfg.mqtt)?,
            }
            print!("{}", crate::config::to_redacted_toml(&cfg)?);
            Ok(())
        }
    }
}

/// The analytics worker of `fleetpulse predict` and `fleetpulse train`, straight on the
/// store (returned too, to be closed after the run).
async fn analytics_worker(
    args: &StoreArgs,
) -> anyhow::Result<(crate::predict::AnalyticsWorker, Arc<SqliteStore>)> {
    let cfg = Config::load(args.config.as_deref(), &args.overrides())?;
    init_logging("warn", cfg.log.format);
    cfg.analytics.check()?;
    let catalog = Arc::new(cfg.load_catalog()?);
    let policy = Arc::new(cfg.load_policy()?);
    let store = open_store(&cfg, catalog.clone(), policy.clone()).await?;
    let worker = crate::predict::AnalyticsWorker::new(
        store.clone(),
        crate::predict::forecasters(&catalog, &policy, &cfg.analytics.model),
        Arc::new(fleetpulse_rules::predicted::PredictionOrders::new(
            catalog, policy,
        )),
        cfg.analytics.clone(),
    );
    Ok((worker, store))
}

/// Closes a command's store: its write-ahead log is copied into the database and
/// removed, so repeated commands do not grow it (issue 21). Other handles of the store
/// must be dropped first for the connections to close here.
pub(crate) async fn close_store(store: Arc<SqliteStore>) -> anyhow::Result<()> {
    let path = store.path().to_owned();
    let cp = Arc::unwrap_or_clone(store)
        .close()
        .await
        .with_context(|| format!("closing the store at {}", path.display()))?;
    if cp.busy {
        warn!(
            wal_bytes = cp.wal_bytes,
            "the store's WAL could not be checkpointed at close: another process is using it"
        );
    }
    Ok(())
}

/// `fleetpulse token create|list|revoke`: API tokens, straight in the store.
async fn api_token(cmd: TokenCommand) -> anyhow::Result<()> {
    use fleetpulse_domain::dispatch::Actor;
    let store_args: &StoreArgs = match &cmd {
        TokenCommand::Create(a) => &a.store,
        TokenCommand::List(a) => a,
        TokenCommand::Revoke(a) => &a.store,
    };
    let cfg = Config::load(store_args.config.as_deref(), &store_args.overrides())?;
    init_logging("warn", cfg.log.format);
    let catalog = Arc::new(cfg.load_catalog()?);
    let store = open_store(&cfg, catalog, Arc::new(cfg.load_policy()?)).await?;
    let actor = Actor("cli".into());
    let result = api_token_on(&store, cmd, actor).await;
    close_store(store).await?;
    result
}

async fn api_token_on(
    store: &SqliteStore,
    cmd: TokenCommand,
    actor: fleetpulse_domain::dispatch::Actor,
) -> anyhow::Result<()> {
    use fleetpulse_domain::dispatch::{Dispatch, Role};
    match cmd {
        TokenCommand::Create(a) => {
            let role: Role = a.role.parse().map_err(|e| anyhow::anyhow!("--role: {e}"))?;
            let (secret, digest) =
                fleetpulse_api::auth::new_token().map_err(|e| anyhow::anyhow!("{e}"))?;
            let t = store.create_api_token(&a.name, role, digest, actor).await?;
            eprintln!(
                "fleetpulse: token {} ({}, role {}) created. It is shown only now; send it as \
                 `Authorization: Bearer <token>`:",
                t.id, t.name, t.role
            );
            println!("{secret}");
        }
        TokenCommand::List(_) => {
            for t in store.list_api_tokens().await? {
                println!("{}", serde_json::to_string(&t)?);
            }
        }
        TokenCommand::Revoke(a) => {
            let t = store.revoke_api_token(a.id, actor).await?;
            eprintln!("fleetpulse: token {} ({}) is revoked", t.id, t.name);
        }
    }
    Ok(())
}

/// `fleetpulse device credential SERIAL [--revoke]`: issue (or rotate) a device's token
/// and print it once, or revoke it.
async fn device_credential(args: &CredentialArgs) -> anyhow::Result<()> {
    let cfg = Config::load(args.config.as_deref(), &args.overrides())?;
    init_logging("warn", cfg.log.format);
    let serial = Serial::parse(&args.serial)
        .with_context(|| format!("{:?} is not a valid serial", args.serial))?;
    let catalog = Arc::new(cfg.load_catalog()?);
    let store = open_store(&cfg, catalog, Arc::new(cfg.load_policy()?)).await?;
    let result = device_credential_on(&store, args, &cfg, serial).await;
    close_store(store).await?;
    result
}

async fn device_credential_on(
    store: &SqliteStore,
    args: &CredentialArgs,
    cfg: &Config,
    serial: Serial,
) -> anyhow::Result<()> {
    if args.revoke {
        let had = store.revoke_token(&serial).await?;
        eprintln!(
            "fleetpulse: {}",
            if had {
                format!(
                    "the token of {serial} is revoked; its connections with it are refused from now on"
                )
            } else {
                format!("{serial} had no token")
            }
        );
        return Ok(());
    }
    let token = DeviceToken::generate()?;
    store
        .set_token_digest(&serial, token.digest(), Utc::now())
        .await?;
    if cfg.mqtt.auth_mode() != AuthMode::DeviceCredentials {
        eprintln!(
            "fleetpulse: note: mqtt.auth is \"{}\"; the endpoint checks tokens only with mqtt.auth = \"device_credentials\"",
            cfg.mqtt.auth_mode().as_str()
        );
    }
    eprintln!(
        "fleetpulse: new token for {serial} (MQTT user name = {serial}, password = the token). \
         It is shown only now and replaces any earlier token:"
    );
    println!("{}", token.expose());
    Ok(())
}

fn load(common: &CommonArgs) -> anyhow::Result<Config> {
    let cfg = Config::load(common.config.as_deref(), &common.overrides())?;
    init_logging(&cfg.log.filter, cfg.log.format);
    Ok(cfg)
}

pub(crate) fn init_logging(filter: &str, format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(filter));
    // Colour codes only on a terminal: a file or a log shipper gets plain text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        // A log line that cannot be written (stderr on a full disk, a closed pipe) is
        // dropped. With internal errors on, tracing reports the failure with `eprint!`,
        // which panics when stderr fails, inside whichever task was logging: the ingest
        // pipeline died that way in the soak (docs/soak.md).
        .log_internal_errors(false)
        .with_writer(std::io::stderr);
    let result = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
    if let Err(e) = result {
        eprintln!("fleetpulse: logging already initialised: {e}");
    }
}

/// A token cancelled on Ctrl-C (SIGINT) or SIGTERM.
pub(crate) fn shutdown_on_signal() -> CancellationToken {
    let token = CancellationToken::new();
    let t = token.clone();
    tokio::spawn(async move {
        wait_for_signal().await;
        info!("shutdown requested");
        t.cancel();
    });
    token
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(e) => {
                warn!(error = %e, "cannot listen for SIGTERM; only Ctrl-C stops the process");
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// Prints a line scripts and tests wait for, and flushes it.
pub(crate) fn announce(line: &str) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "fleetpulse: {line}");
    let _ = out.flush();
}

/// What `demo` adds to `serve`: a simulated fleet, its history and its clock.
struct Demo {
    fleet: FleetArgs,
    modbus_devices: usize,
    history_days: u32,
}

/// Every role in one process; with `demo`, also a simulated fleet against the built-in
/// endpoint, its history and a simulated clock. Returns after an orderly shutdown once
/// `stop` is cancelled.
async fn serve(cfg: Config, stop: CancellationToken, demo: Option<Demo>) -> anyhow::Result<()> {
    // Before anything reads or writes the directory: a second server on it would mark
    // the first one's devices offline and append to the same journal.
    let _data_lock =
        crate::datalock::DataDirLock::acquire(&cfg.data.dir, &crate::datalock::this_command())?;
    let open_files = raise_open_file_limit();
    let catalog = Arc::new(cfg.load_catalog()?);
    let policy: Arc<Policy> = Arc::new(cfg.load_policy()?);
    let auth = cfg.http.auth_mode(demo.is_some())?;
    cfg.http.check_transport()?;
    let api_tls = api_tls_config(&cfg)?;
    let push_settings = cfg.webhooks.settings()?;
    // the API's port before anything is written or announced: a clash stops the start
    // before any listener says "listening"
    let http_listener = bind_http(&cfg).await?;
    let http_addr = http_listener.local_addr()?;
    let (clock, history_fleet) = match &demo {
        Some(d) => {
            std::fs::create_dir_all(&cfg.data.dir).with_context(|| {
                format!(
                    "data.dir = {}: cannot create the directory",
                    cfg.data.dir.display()
                )
            })?;
            let start = crate::demo::prepare(
                &cfg.data.dir.join("fleetpulse.db"),
                async |clock| open_store_on(&cfg, catalog.clone(), policy.clone(), clock).await,
                &d.fleet,
                d.history_days,
                &catalog,
            )
            .await?;
            (start.clock, start.fleet)
        }
        None => (Clock::Wall, None),
    };
    let (fleet, modbus_devices) = match demo {
        Some(d) => (Some(d.fleet), d.modbus_devices),
        None => (None, 0),
    };
    let sqlite = open_store_on(&cfg, catalog.clone(), policy.clone(), clock).await?;
    let wal = sqlite.clone();
    let dispatch: Arc<dyn fleetpulse_domain::dispatch::Dispatch> = sqlite.clone();
    let webhooks: Arc<dyn fleetpulse_domain::webhook::Webhooks> = sqlite.clone();
    let credentials: Arc<dyn DeviceCredentials> = sqlite.clone();
    let reliability: Arc<dyn ReliabilitySource> = sqlite.clone();
    let predictions: Arc<dyn fleetpulse_domain::store::PredictionStore> = sqlite.clone();
    let store: Arc<dyn Store> = sqlite;
    cfg.analytics.check()?;
    // order streams, woken by the API, the pipeline's commits and the prediction runs
    cfg.http.streams.check()?;
    let streams = fleetpulse_api::StreamStop::with_limits(cfg.http.streams.max_per_token);
    let analytics = crate::predict::AnalyticsWorker::new(
        predictions.clone(),
        crate::predict::forecasters(&catalog, &policy, &cfg.analytics.model),
        Arc::new(fleetpulse_rules::predicted::PredictionOrders::new(
            catalog.clone(),
            policy.clone(),
        )),
        cfg.analytics.clone(),
    )
    .with_stream_wake(streams.clone())
    .with_wal_checkpoint(wal.clone())
    .with_backtests(catalog.clone())
    .with_clock(clock);
    let marked = store.mark_all_offline(clock.now()).await?;
    info!(
        devices = marked,
        "every device marked offline until it reconnects"
    );

    let (pipeline, mut pipeline_handle) = Pipeline::new(store.clone(), cfg.ingest.clone());
    pipeline_handle.set_clock(clock);
    let pipeline = attach_journal(&cfg, &store, pipeline, &mut pipeline_handle).await?;
    let sink_stop = CancellationToken::new();
    let (pipeline, sink) = match &cfg.sink {
        Some(sink_cfg) => {
            let influx = InfluxSink::new(sink_cfg)?;
            info!(target = %fleetpulse_ingest::TelemetrySink::target(&influx), "time-series sink configured");
            let worker = SinkWorker::new(store.clone(), Arc::new(influx), sink_cfg.clone())
                .await
                .context("reading the time-series sink spool")?
                .with_clock(clock);
            let pipeline = pipeline.with_spool_gate(worker.gate());
            let stats = worker.stats();
            let stop = sink_stop.clone();
            let task = tokio::spawn(async move { worker.run(stop.cancelled_owned()).await });
            (pipeline, Some((task, stats)))
        }
        None => {
            let spooled = store.spool_stats().await.map(|s| s.readings).unwrap_or(0);
            if spooled > 0 {
                warn!(
                    readings = spooled,
                    "the time-series sink spool holds readings but no sink is configured; they wait until [sink] is configured again"
                );
            }
            (pipeline, None)
        }
    };
    let failed: Arc<OnceLock<String>> = Arc::default();
    let pipeline_task = critical(
        "ingest pipeline",
        tokio::spawn(pipeline.run()),
        stop.clone(),
        failed.clone(),
    );
    let pipeline = pipeline_handle;
    let stats = pipeline.stats().clone();
    let sink_stats = sink.as_ref().map(|(_, s)| s.clone());

    // What the journal acknowledged before a restart is in the store before anything new.
    pipeline.recovered().await;

    // Sources stop first; the pipeline drains after them.
    let sources_stop = CancellationToken::new();
    let (source_task, device_addr) = start_source(
        &cfg,
        pipeline.clone(),
        credentials,
        open_files,
        sources_stop.clone(),
    )
    .await?;
    let source_task = critical("device source", source_task, stop.clone(), failed.clone());

    let api_stop = CancellationToken::new();
    let api_task = start_api(
        &cfg,
        ApiParts {
            streams: streams.clone(),
            store: store.clone(),
            dispatch: dispatch.clone(),
            webhooks: webhooks.clone(),
            reliability: reliability.clone(),
            predictions,
            predictor: Arc::new(analytics.clone()),
            policy,
            auth,
            tls: api_tls,
            open_files,
            listener: http_listener,
            clock,
        },
        catalog.clone(),
        PipelineStatus {
            ingest: stats,
            sink: sink_stats,
        },
        api_stop.clone(),
    )
    .await?;
    let dispatch_for_sla = dispatch;
    let retention_task =
        spawn_retention(store.clone(), cfg.data.retention_days, clock, stop.clone());
    let sla_task = spawn_sla_escalation(dispatch_for_sla, streams.clone(), clock, stop.clone());
    let exposure_task = spawn_exposure_consolidation(reliability, wal.clone(), clock, stop.clone());
    let analytics_task = cfg
        .analytics
        .enabled
        .then(|| tokio::spawn(analytics.clone().run(stop.clone())));
    let push_stop = CancellationToken::new();
    let push_worker = fleetpulse_api::push::PushWorker::new(webhooks, store.clone(), push_settings)
        .map_err(|e| anyhow::anyhow!("webhook HTTP client: {e}"))?
        .with_clock(clock);
    let push_task = tokio::spawn(push_worker.run(push_stop.clone().cancelled_owned()));

    if fleet.is_some() {
        let docs = match http_addr.ip().is_unspecified() {
            true => format!("127.0.0.1:{}", http_addr.port()),
            false => http_addr.to_string(),
        };
        announce(&format!(
            "demo: open http://{docs}/ (the fleet, planner, quality, dispatch and operations pages)"
        ));
        announce(&format!(
            "demo: API documentation at http://{docs}/api/docs; API authentication is {} (demo only; `serve` needs tokens)",
            match auth {
                fleetpulse_api::AuthMode::Disabled => "OFF",
                _ => "on",
            }
        ));
        if cfg.analytics.enabled {
            tokio::spawn(demo_first_runs(analytics.clone()));
        }
    }
    let modbus_task = match (&fleet, device_addr) {
        (Some(fleet), Some(addr)) if modbus_devices > 0 => Some(
            crate::bridge::start_demo_bridge(
                modbus_devices,
                fleet,
                format!("mqtt://{addr}"),
                &cfg,
                &catalog,
                clock,
                stop.clone(),
            )
            .await?,
        ),
        _ => None,
    };
    let sim_task = match (fleet, device_addr) {
        (Some(fleet), Some(addr)) => {
            let mut sim_cfg =
                sim_config(&fleet, format!("mqtt://{addr}"), cfg.mqtt.password.clone());
            sim_cfg.clock = clock;
            let sim_stop = stop.clone();
            let duration_stop = stop.clone();
            if let Some(secs) = fleet.duration {
                tokio::spawn(async move {
                    tokio::time::sleep(Duration::from_secs(secs)).await;
                    info!(seconds = secs, "demo duration reached");
                    duration_stop.cancel();
                });
            }
            Some(tokio::spawn(run_simulator(
                sim_cfg,
                history_fleet,
                catalog.clone(),
                sim_stop,
            )))
        }
        _ => None,
    };

    stop.cancelled().await;
    info!("stopping: simulator, sources, pipeline drain, sink flush, then the API");
    if let Some(task) = sim_task {
        match task.await {
            Ok(Ok(report)) => announce(&format!(
                "simulator finished: {}",
                serde_json::to_string(&report)?
            )),
            Ok(Err(e)) => warn!(error = %e, "simulator ended with an error"),
            Err(e) => warn!(error = %e, "simulator task failed"),
        }
    }
    if let Some(task) = modbus_task {
        join_logged(task, "firmware bridge").await;
    }
    sources_stop.cancel();
    drain_within(
        source_task,
        &pipeline,
        pipeline_task,
        cfg.ingest.drain_timeout_s,
    )
    .await;
    if let Some((task, _)) = sink {
        sink_stop.cancel();
        join_logged(task, "time-series sink").await;
    }
    retention_task.abort();
    sla_task.abort();
    exposure_task.abort();
    if let Some(task) = analytics_task {
        // the schedule stops; a run it started goes on as its own task, waited for below
        task.abort();
    }
    // runs in progress (scheduled or asked for through the API, whose caller may be gone)
    // finish and are stored within the drain bound, or are cancelled with a warning; a
    // run commits or rolls back as a whole
    analytics
        .finish(Duration::from_secs(cfg.ingest.drain_timeout_s))
        .await;
    // the pipeline has committed its last orders; deliveries in flight finish, the rest
    // wait in the outbox for the next start
    push_stop.cancel();
    join_logged(push_task, "webhook delivery").await;
    api_stop.cancel();
    join_logged(api_task, "HTTP API").await;
    // a short WAL for the next start (the connections close as the process ends)
    match wal.checkpoint().await {
        Ok(cp) if cp.busy => warn!(
            wal_bytes = cp.wal_bytes,
            "the store's WAL could not be checkpointed at shutdown: another process is using it"
        ),
        Ok(_) => {}
        Err(e) => warn!(error = %e, "WAL checkpoint at shutdown failed"),
    }
    if let Some(why) = failed.get() {
        anyhow::bail!("{why}");
    }
    announce("stopped cleanly");
    Ok(())
}

/// The demo's first analytics runs, right after its start rather than at the schedule's
/// first tick: the risk models are trained on the history, then the fleet is scored and
/// the predictions raise their orders.
async fn demo_first_runs(analytics: crate::predict::AnalyticsWorker) {
    let t0 = std::time::Instant::now();
    match analytics.spawn_train("demo", None).await {
        Ok(reports) => {
            let deployed = reports.iter().filter(|r| r.deployed).count();
            announce(&format!(
                "demo: risk models trained on the history in {:.1} s: {deployed} of {} failure modes deployed (GET /api/v1/models says why for each)",
                t0.elapsed().as_secs_f64(),
                reports.len()
            ));
        }
        Err(e) => warn!(error = %e, "demo: training at start failed; the schedule retries"),
    }
    let t1 = std::time::Instant::now();
    match analytics.spawn_predict("demo", None).await {
        Ok(run) => announce(&format!(
            "demo: fleet scored in {:.1} s: {} predictions, {} orders raised, {} bundled, {} held by storm control",
            t1.elapsed().as_secs_f64(),
            run.predictions,
            run.raised,
            run.bundled,
            run.held
        )),
        Err(e) => warn!(error = %e, "demo: prediction run at start failed; the schedule retries"),
    }
}

/// Watches a task the process cannot work without (the device source, the ingest
/// pipeline). If it ends before `stop` is cancelled, which only a panic or a bug does, the
/// process logs it and stops with an error (exit status 1) so that its supervisor starts
/// it again, instead of running on with the line stopped: devices keep what was not
/// acknowledged, and the journal keeps what was. Aborting the returned handle aborts the
/// task; a panic after `stop` is passed on to whoever joins the handle.
fn critical(
    what: &'static str,
    task: JoinHandle<()>,
    stop: CancellationToken,
    failed: Arc<OnceLock<String>>,
) -> JoinHandle<()> {
    struct AbortOnDrop(tokio::task::AbortHandle);
    impl Drop for AbortOnDrop {
        fn drop(&mut self) {
            self.0.abort();
        }
    }
    // Made outside the future, so that aborting the watcher before its first poll still
    // drops it (and aborts the task).
    let abort = AbortOnDrop(task.abort_handle());
    tokio::spawn(async move {
        let _abort = abort;
        let result = task.await;
        if stop.is_cancelled() {
            if let Err(e) = result
                && e.is_panic()
            {
                std::panic::resume_unwind(e.into_panic());
            }
            return;
        }
        let why = match result {
            Ok(()) => format!("the {what} task ended while the process was running"),
            Err(e) => format!("the {what} task failed: {e}"),
        };
        tracing::error!("{why}; stopping so that the process can be started again");
        let _ = failed.set(why);
        stop.cancel();
    })
}

/// Opens the ingest journal in `<data.dir>/journal` (unless `ingest.journal.enabled` is
/// false) and gives it to the pipeline. With the journal off, a journal still holding
/// records the store has not applied stops the start: they were acknowledged, so
/// ignoring them would lose them.
async fn attach_journal(
    cfg: &Config,
    store: &Arc<dyn Store>,
    pipeline: Pipeline,
    handle: &mut PipelineHandle,
) -> anyhow::Result<Pipeline> {
    let dir = cfg.data.dir.join("journal");
    let applied = store
        .journal_applied()
        .await
        .context("reading the ingest journal position from the store")?;
    let journal_cfg = cfg.ingest.journal.clone();
    let enabled = journal_cfg.enabled;
    if !enabled && !dir.exists() {
        return Ok(pipeline);
    }
    let open_dir = dir.clone();
    let journal =
        tokio::task::spawn_blocking(move || Journal::open(&open_dir, applied, journal_cfg))
            .await
            .context("ingest journal open task")?
            .with_context(|| format!("opening the ingest journal in {}", dir.display()))?;
    if !enabled {
        let pending = journal.unapplied_bytes();
        anyhow::ensure!(
            pending == 0,
            "ingest.journal.enabled = false, but {} holds {pending} bytes of acknowledged readings \
             the store has not applied yet: start once with the journal enabled to apply them",
            dir.display()
        );
        return Ok(pipeline);
    }
    info!(dir = %dir.display(), "ingest journal open");
    Ok(pipeline.with_journal(journal, handle))
}

pub(crate) async fn open_store(
    cfg: &Config,
    catalog: Arc<Catalog>,
    policy: Arc<Policy>,
) -> anyhow::Result<Arc<SqliteStore>> {
    open_store_on(cfg, catalog, policy, Clock::Wall).await
}

/// [`open_store`] on `clock` (the process's).
pub(crate) async fn open_store_on(
    cfg: &Config,
    catalog: Arc<Catalog>,
    policy: Arc<Policy>,
    clock: Clock,
) -> anyhow::Result<Arc<SqliteStore>> {
    std::fs::create_dir_all(&cfg.data.dir).with_context(|| {
        format!(
            "data.dir = {}: cannot create the directory",
            cfg.data.dir.display()
        )
    })?;
    let path = cfg.data.dir.join("fleetpulse.db");
    let opts = StoreOptions {
        clock,
        catalog,
        rules: Arc::new(CatalogRules::new(policy)),
        unknown_device: cfg.registry.unknown_device,
        sink_spool: cfg.sink.is_some(),
        cache_mib: cfg.data.cache_mib,
        durability: match cfg.data.durability {
            DurabilitySetting::Full => Durability::Full,
            DurabilitySetting::Normal => Durability::Normal,
        },
    };
    let store = SqliteStore::open(&path, opts)
        .await
        .with_context(|| format!("opening the store at {}", path.display()))?;
    info!(path = %path.display(), "store open");
    Ok(Arc::new(store))
}

/// Binds the HTTP API's port (before any listener is announced).
async fn bind_http(cfg: &Config) -> anyhow::Result<TcpListener> {
    TcpListener::bind(cfg.http.listen).await.with_context(|| {
        format!(
            "http.listen = {}: cannot listen (is the port in use? pass --http)",
            cfg.http.listen
        )
    })
}

/// Starts the built-in endpoint or the external-broker source. Returns the endpoint's
/// address when there is one. The endpoint's connection cap fits in `open_files` (the
/// soft open-file limit in effect) beside the API's.
async fn start_source(
    cfg: &Config,
    pipeline: PipelineHandle,
    credentials: Arc<dyn DeviceCredentials>,
    open_files: Option<u64>,
    stop: CancellationToken,
) -> anyhow::Result<(JoinHandle<()>, Option<std::net::SocketAddr>)> {
    if let Some(broker) = &cfg.broker {
        let source = fleetpulse_ingest::ExternalSource::new(broker.clone())?;
        info!(url = %broker.url, client_id = %broker.client_id, "subscribing to the external broker");
        announce(&format!("ingesting from broker {}", broker.url));
        let task = tokio::spawn(async move { source.run(pipeline, stop.cancelled_owned()).await });
        return Ok((task, None));
    }
    let (max_connections, lowered) = cfg.device_connection_cap(open_files)?;
    // The default is a ceiling, fitted to the open-file limit without a warning; a value
    // the operator chose that does not fit is worth one.
    if lowered && cfg.mqtt.max_connections == EndpointConfig::default().max_connections {
        info!(
            max_connections,
            open_file_limit = open_files.unwrap_or_default(),
            "device connection cap fitted to the open-file limit beside the HTTP connections"
        );
    } else if lowered {
        warn!(
            max_connections,
            configured = cfg.mqtt.max_connections,
            open_file_limit = open_files.unwrap_or_default(),
            "mqtt.max_connections lowered to fit the open-file limit beside the HTTP connections (raise it with ulimit -n or LimitNOFILE=)"
        );
    }
    let endpoint_cfg = EndpointConfig {
        max_connections,
        ..cfg.mqtt.clone()
    };
    let endpoint = MqttEndpoint::bind_with_credentials(endpoint_cfg, Some(credentials)).await?;
    let addr = endpoint.local_addr();
    announce(&format!(
        "mqtt device endpoint listening on {}",
        endpoint.url()
    ));
    let task = tokio::spawn(async move { endpoint.run(pipeline, stop.cancelled_owned()).await });
    Ok((task, Some(addr)))
}

/// `/health` and `/metrics` show the pipeline's counters, and the sink's when there is one.
struct PipelineStatus {
    ingest: IngestStats,
    sink: Option<SinkStats>,
}

impl IngestStatus for PipelineStatus {
    fn snapshot(&self) -> serde_json::Value {
        let mut v = serde_json::to_value(self.ingest.snapshot()).unwrap_or_default();
        if let (Some(sink), Some(obj)) = (&self.sink, v.as_object_mut()) {
            obj.insert(
                "sink".into(),
                serde_json::to_value(sink.snapshot()).unwrap_or_default(),
            );
        }
        v
    }

    fn write_prometheus(&self, out: &mut String) {
        self.ingest.write_prometheus(out);
        if let Some(sink) = &self.sink {
            sink.write_prometheus(out);
        }
    }

    fn problems(&self) -> Vec<String> {
        let health = self.ingest.health();
        health.held.into_iter().chain(health.refused).collect()
    }
}

/// What the API serves from, besides the catalog and the ingest counters.
struct ApiParts {
    /// Order streams (created before the API so other roles can wake them).
    streams: fleetpulse_api::StreamStop,
    store: Arc<dyn Store>,
    dispatch: Arc<dyn fleetpulse_domain::dispatch::Dispatch>,
    webhooks: Arc<dyn fleetpulse_domain::webhook::Webhooks>,
    reliability: Arc<dyn ReliabilitySource>,
    predictions: Arc<dyn fleetpulse_domain::store::PredictionStore>,
    predictor: Arc<dyn fleetpulse_api::PredictionRunner>,
    policy: Arc<Policy>,
    auth: fleetpulse_api::AuthMode,
    /// HTTPS when set.
    tls: Option<Arc<rustls::ServerConfig>>,
    /// The soft open-file limit in effect, which the HTTP connection cap must fit in.
    open_files: Option<u64>,
    /// Bound before any listener announced itself, so that a port clash stops the start
    /// before anything says "listening".
    listener: TcpListener,
    clock: Clock,
}

/// Raises the soft open-file limit to the hard one and logs both; the soft limit in
/// effect.
fn raise_open_file_limit() -> Option<u64> {
    let (limit, error) = crate::fdlimit::raise_to_hard();
    let show = |v: Option<u64>| v.map_or_else(|| "unlimited".to_owned(), |n| n.to_string());
    match error {
        None => info!(
            soft_before = %show(limit.soft_before),
            soft = %show(limit.soft),
            hard = %show(limit.hard),
            "open-file limit"
        ),
        Some(error) => warn!(
            %error,
            soft = %show(limit.soft),
            hard = %show(limit.hard),
            "cannot raise the soft open-file limit to the hard one; keeping it"
        ),
    }
    limit.soft
}

/// The API's rustls server configuration from `[http.tls]` (ring provider).
fn api_tls_config(cfg: &Config) -> anyhow::Result<Option<Arc<rustls::ServerConfig>>> {
    let Some(tls) = &cfg.http.tls else {
        return Ok(None);
    };
    let certs = fleetpulse_ingest::tls::load_certs("http.tls.cert_file", &tls.cert_file)?;
    let key = fleetpulse_ingest::tls::load_key("http.tls.key_file", &tls.key_file)?;
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .context("http.tls: the certificate and key do not form a usable pair")?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Some(Arc::new(config)))
}

async fn start_api(
    cfg: &Config,
    parts: ApiParts,
    catalog: Arc<Catalog>,
    status: PipelineStatus,
    stop: CancellationToken,
) -> anyhow::Result<JoinHandle<()>> {
    let listener = parts.listener;
    let addr = listener.local_addr()?;
    let (limits, lowered) = cfg.http.serve_limits(parts.open_files)?;
    if lowered {
        warn!(
            max_connections = limits.max_connections,
            configured = cfg.http.max_connections,
            open_file_limit = parts.open_files.unwrap_or_default(),
            reserved_fds = cfg.http.reserved_fds,
            "http.max_connections lowered to fit the open-file limit (raise it with ulimit -n or LimitNOFILE=)"
        );
    }
    let streams = parts.streams;
    // orders the pipeline's commits raise wake the order streams at once
    let mut order_changes = status.ingest.order_changes();
    let woken = streams.clone();
    tokio::spawn(async move {
        while order_changes.changed().await.is_ok() {
            woken.order_changed();
        }
    });
    // writers in other processes (a second instance, `fleetpulse token revoke`): one
    // shared look at the store while streams are open, not one per stream
    let watcher = streams.clone();
    let dispatch = parts.dispatch.clone();
    let period = Duration::from_millis(cfg.http.streams.store_poll_ms);
    tokio::spawn(async move { watcher.watch_store(dispatch, period).await });
    let app = AppState {
        store: parts.store,
        catalog,
        ingest: Arc::new(status),
        dispatch: parts.dispatch,
        webhooks: parts.webhooks,
        reliability: parts.reliability,
        predictions: parts.predictions,
        predictor: parts.predictor,
        policy: parts.policy,
        auth: parts.auth,
        streams: streams.clone(),
        clock: parts.clock,
    };
    // the pages beside the API, on the same listener, reading through the same traits
    let pages = fleetpulse_dashboards::router(
        app.clone(),
        fleetpulse_dashboards::UiOptions {
            secure_cookies: parts.tls.is_some(),
            ..Default::default()
        },
    );
    let router = fleetpulse_api::router(app).merge(pages);
    let shutdown = async move {
        stop.cancelled().await;
        // open order streams end, so the graceful shutdown does not wait for their clients
        streams.stop();
    };
    let scheme = if parts.tls.is_some() { "https" } else { "http" };
    let task = tokio::spawn(async move {
        let served = match parts.tls {
            Some(tls) => {
                fleetpulse_api::tls::serve_tls(listener, tls, router, limits, shutdown).await
            }
            None => fleetpulse_api::serve_with(listener, router, limits, None, shutdown).await,
        };
        if let Err(e) = served {
            tracing::error!(error = %e, "HTTP API failed");
        }
    });
    announce(&format!("api listening on {scheme}://{addr}"));
    Ok(task)
}

/// How often breached SLA deadlines are looked for (each escalates once, as an
/// `order.sla_breached` event on the stream and to webhooks).
const SLA_CHECK: Duration = Duration::from_secs(5);

fn spawn_sla_escalation(
    dispatch: Arc<dyn fleetpulse_domain::dispatch::Dispatch>,
    streams: fleetpulse_api::StreamStop,
    clock: Clock,
    stop: CancellationToken,
) -> JoinHandle<()> {
    let every = crate::predict::schedule_period(clock, SLA_CHECK, Duration::from_millis(500));
    tokio::spawn(async move {
        loop {
            if let Err(e) = dispatch.escalate_sla_breaches(clock.now()).await {
                warn!(error = %e, "SLA escalation failed; retrying");
            }
            // orders whose condition cleared and that need no visit ([resolution])
            match dispatch.cancel_cleared_orders(clock.now()).await {
                Ok(0) => {}
                Ok(n) => {
                    info!(orders = n, "orders cancelled: their condition stayed clear");
                    streams.order_changed();
                }
                Err(e) => warn!(error = %e, "cancelling cleared orders failed; retrying"),
            }
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(every) => {}
            }
        }
    })
}

/// How often the operating hours of device-months whose meter rollups changed are
/// refolded (every reliability read refolds first too, so this only keeps reads quick).
const EXPOSURE_FOLD: Duration = Duration::from_secs(900);

/// Device-months refolded per pass at most; the rest wait for the next pass.
const EXPOSURE_FOLD_PAIRS: usize = 200_000;

fn spawn_exposure_consolidation(
    reliability: Arc<dyn ReliabilitySource>,
    wal: Arc<SqliteStore>,
    clock: Clock,
    stop: CancellationToken,
) -> JoinHandle<()> {
    let every = crate::predict::schedule_period(clock, EXPOSURE_FOLD, Duration::from_secs(30));
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tick.tick() => {}
            }
            match reliability.consolidate_exposure(EXPOSURE_FOLD_PAIRS).await {
                Ok(r) if r.pairs > 0 => tracing::debug!(
                    pairs = r.pairs,
                    rollup_rows = r.rollup_rows,
                    remaining = r.remaining,
                    "operating hours refolded"
                ),
                Ok(_) => {}
                Err(e) => warn!(error = %e, "exposure consolidation failed; will retry"),
            }
            // the one periodic look at the WAL: a reader that held it while the
            // autocheckpoints ran may have left it over its limit
            crate::predict::checkpoint_if_large(&wal, "exposure consolidation").await;
        }
    })
}

/// Deletes raw readings past the retention once an hour.
fn spawn_retention(
    store: Arc<dyn Store>,
    days: u32,
    clock: Clock,
    stop: CancellationToken,
) -> JoinHandle<()> {
    let every =
        crate::predict::schedule_period(clock, Duration::from_secs(3600), Duration::from_secs(60));
    tokio::spawn(async move {
        if days == 0 {
            return;
        }
        let mut tick = tokio::time::interval(every);
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tick.tick() => {}
            }
            let before = clock.now() - chrono::Duration::days(i64::from(days));
            match store.delete_readings_before(before).await {
                Ok(0) => {}
                Ok(n) => info!(
                    deleted = n,
                    retention_days = days,
                    "old raw readings deleted"
                ),
                Err(e) => warn!(error = %e, "retention pass failed; will retry in an hour"),
            }
        }
    })
}

fn sim_config(fleet: &FleetArgs, mqtt_url: String, password: Option<String>) -> SimConfig {
    SimConfig {
        mqtt_url,
        devices: fleet.devices,
        seed: fleet.seed,
        speed: fleet.speed,
        publish_interval: Duration::from_millis(fleet.interval_ms.max(1)),
        serial_prefix: fleet.serial_prefix.clone(),
        password,
        ground_truth_path: fleet.ground_truth.clone(),
        max_duration: fleet.duration.map(Duration::from_secs),
        clock: Clock::Wall,
    }
}

async fn run_simulator(
    cfg: SimConfig,
    fleet: Option<fleetpulse_simulator::Fleet>,
    catalog: Arc<Catalog>,
    stop: CancellationToken,
) -> anyhow::Result<SimReport> {
    announce(&format!(
        "simulating {} devices against {}",
        cfg.devices, cfg.mqtt_url
    ));
    Ok(match fleet {
        // the fleet its history ran goes on live from where the history ended
        Some(fleet) => {
            fleetpulse_simulator::run_fleet(
                fleet,
                cfg,
                fleetpulse_simulator::LinkOptions::default(),
                stop.cancelled_owned(),
            )
            .await?
        }
        None => fleetpulse_simulator::run(cfg, catalog, stop.cancelled_owned()).await?,
    })
}

/// Stops the device sources (a connection ends once the acks of what it handed on are
/// written) and drains the pipeline (commit and ack what it accepted; with the journal,
/// apply every record), all within `timeout_s`: while the disk is full or the store does
/// not answer that could take for ever, and stopping without it loses nothing
/// (acknowledged records are in the journal, unacknowledged messages are sent again).
async fn drain_within(
    source_task: JoinHandle<()>,
    pipeline: &PipelineHandle,
    pipeline_task: JoinHandle<()>,
    timeout_s: u64,
) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(timeout_s);
    let source_abort = source_task.abort_handle();
    let drained = tokio::time::timeout_at(deadline, async {
        join_logged(source_task, "device source").await;
        pipeline.close();
        pipeline.drained().await;
    })
    .await;
    if drained.is_ok() {
        join_logged(pipeline_task, "ingest pipeline").await;
        return;
    }
    let left = pipeline.stats().snapshot();
    warn!(
        drain_timeout_s = timeout_s,
        journal_unapplied_records = left.journal_unapplied_records,
        "ingest did not drain in time; stopping without it: acknowledged records stay in the journal for the next start, unacknowledged messages are sent again"
    );
    source_abort.abort();
    pipeline.close();
    pipeline_task.abort();
}

async fn join_logged(task: JoinHandle<()>, what: &str) {
    if let Err(e) = task.await {
        warn!(error = %e, "{what} task ended abnormally");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_critical_task_that_dies_while_running_stops_the_process_with_its_reason() {
        let stop = CancellationToken::new();
        let failed: Arc<OnceLock<String>> = Arc::default();
        let task = tokio::spawn(async { panic!("boom") });
        let watched = critical("ingest pipeline", task, stop.clone(), failed.clone());
        tokio::time::timeout(Duration::from_secs(5), stop.cancelled())
            .await
            .expect("stop is cancelled");
        watched.await.expect("the watcher itself ends normally");
        let why = failed.get().expect("the reason is kept");
        assert!(
            why.contains("ingest pipeline") && why.contains("boom"),
            "{why}"
        );
    }

    #[tokio::test]
    async fn aborting_the_watcher_aborts_the_task_and_a_stop_is_not_a_failure() {
        let stop = CancellationToken::new();
        let failed: Arc<OnceLock<String>> = Arc::default();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let _tx = tx; // dropped when the task is aborted
            std::future::pending::<()>().await;
        });
        let watched = critical("device source", task, stop.clone(), failed.clone());
        stop.cancel();
        watched.abort();
        let aborted = watched.await.expect_err("the watcher was aborted");
        assert!(aborted.is_cancelled());
        tokio::time::timeout(Duration::from_secs(5), rx)
            .await
            .expect("the task was aborted")
            .expect_err("the sender is dropped, never used");
        assert!(failed.get().is_none());
    }
}
