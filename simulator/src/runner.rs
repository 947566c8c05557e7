//! The runner: a fleet stepped by one central ticker, one device link task per device.
//!
//! Every `publish_interval` (wall clock) the ticker advances the fleet by
//! `speed × publish_interval` of simulated time, stamps the readings with the wall clock,
//! and hands each one to its device's store. A device whose store is full produces no
//! reading in that step (see [`crate::outbox`]). The simulated step is fixed, so the
//! readings and the ground truth depend on the seed and the number of ticks only; if the
//! host cannot keep up, ticks are delayed and simulated time runs slower than `speed`.
//!
//! Shutdown (the `shutdown` future completes, or `max_duration` passes): stop producing,
//! give in-flight readings a short grace for their PUBACKs, say goodbye, report what is
//! still unacknowledged.

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use fleetpulse_domain::Catalog;
use serde::Serialize;
use tokio::io::AsyncWriteExt;
use tokio::time::{Instant, MissedTickBehavior};
use tracing::{error, info};

use crate::device_link::{DeviceLink, LinkIdentity, LinkOptions, LinkStats};
use crate::endpoint::{Endpoint, EndpointError};
use crate::fleet::{Fleet, FleetConfig, FleetError};
use crate::truth::TruthEvent;

/// How long in-flight readings may wait for their PUBACKs at shutdown.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(3);
/// Spacing of the devices' first connects, and the longest ramp it may add up to.
const CONNECT_SPACING: Duration = Duration::from_micros(500);
const CONNECT_RAMP_MAX: Duration = Duration::from_secs(10);
/// How often progress is logged.
const PROGRESS_EVERY: Duration = Duration::from_secs(30);

/// What to simulate and where to publish.
#[derive(Clone, Debug, PartialEq)]
pub struct SimConfig {
    /// `mqtt://host:port`: fleetpulse's device endpoint or a broker.
    pub mqtt_url: String,
    /// Number of devices.
    pub devices: usize,
    /// Seed of the fleet (same seed, same fleet and failures).
    pub seed: u64,
    /// Simulated seconds per wall-clock second (device physics only; timestamps stay
    /// wall-clock).
    pub speed: f64,
    /// Wall-clock time between two readings of one device.
    pub publish_interval: Duration,
    /// Serial prefix: device `i` is `{prefix}-{i + 1:06}`.
    pub serial_prefix: String,
    /// Password the devices present (user name = serial), if the endpoint wants one.
    pub password: Option<String>,
    /// Append the ground truth as JSON lines to this file.
    pub ground_truth_path: Option<PathBuf>,
    /// Stop after this long (default: until `shutdown`).
    pub max_duration: Option<Duration>,
    /// The clock readings are stamped with. On the wall clock (`simulate`), each tick
    /// advances the devices by `speed × publish_interval`. On a simulated clock (`demo`,
    /// the process's clock), each tick advances them by the clock's time since the last
    /// tick (from the clock's start on the first), so device timestamps, runtime hours
    /// and wear stay in step with the clock even when ticks are late.
    pub clock: fleetpulse_domain::Clock,
}

/// What a run did.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct SimReport {
    pub devices: usize,
    /// Ticks of the central ticker (one reading per device per tick).
    pub ticks: u64,
    /// Simulated hours that passed.
    pub sim_hours: f64,
    /// Wall-clock seconds the run took.
    pub wall_seconds: f64,
    /// Readings taken into the devices' stores.
    pub produced: u64,
    /// Readings not produced because a device's store was full.
    pub skipped_store_full: u64,
    /// Readings sent for the first time.
    pub published: u64,
    /// Readings acknowledged (PUBACK).
    pub acked: u64,
    /// Readings sent again (DUP) after a reconnect.
    pub resent: u64,
    /// Connections re-established after a device's first one.
    pub reconnects: u64,
    /// Connection attempts that failed.
    pub connect_failures: u64,
    /// Readings still unacknowledged at the end (lost with the process).
    pub unacked_at_shutdown: u64,
    /// Ground truth: failures injected, repairs done, consumables replaced, parts
    /// replaced on schedule (untidy profile only).
    pub failures_injected: u64,
    pub repairs: u64,
    pub consumables_replaced: u64,
    pub scheduled_replacements: u64,
    /// Where the ground truth went, and whether every event got there.
    pub ground_truth_path: Option<PathBuf>,
    pub ground_truth_complete: bool,
}

/// Why a run could not start.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    #[error("simulator: {0}")]
    Config(String),
    #[error("simulator: {0}")]
    Url(#[from] EndpointError),
    #[error("simulator: {0}")]
    Fleet(#[from] FleetError),
    #[error("simulator: cannot open the ground-truth file {path}: {source}")]
    GroundTruth {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Runs a simulated fleet with the default [`LinkOptions`] until `shutdown` completes or
/// `max_duration` passes.
pub async fn run(
    cfg: SimConfig,
    catalog: Arc<Catalog>,
    shutdown: impl Future<Output = ()>,
) -> Result<SimReport, SimError> {
    run_with(cfg, LinkOptions::default(), catalog, shutdown).await
}

/// [`run`] with explicit device-link options (window, store size, backoff, keepalive).
pub async fn run_with(
    cfg: SimConfig,
    link_options: LinkOptions,
    catalog: Arc<Catalog>,
    shutdown: impl Future<Output = ()>,
) -> Result<SimReport, SimError> {
    step_hours(&cfg)?;
    let fleet = Fleet::new(
        &FleetConfig {
            devices: cfg.devices,
            seed: cfg.seed,
            serial_prefix: cfg.serial_prefix.clone(),
            untidy: None,
        },
        &catalog,
    )?;
    run_fleet(fleet, cfg, link_options, shutdown).await
}

/// [`run_with`] for a fleet built (and perhaps run through a history) by the caller;
/// `cfg.devices` and `cfg.seed` are the fleet's own.
pub async fn run_fleet(
    mut fleet: Fleet,
    cfg: SimConfig,
    link_options: LinkOptions,
    shutdown: impl Future<Output = ()>,
) -> Result<SimReport, SimError> {
    let sim_dt_hours = step_hours(&cfg)?;
    let endpoint =
        Endpoint::parse(&cfg.mqtt_url)?.require_tls_config(link_options.tls.is_some())?;
    let mut steps = FleetClock::new(cfg.clock, sim_dt_hours);
    if let fleetpulse_domain::Clock::Simulated { start, .. } = cfg.clock {
        // the fleet stands at the clock's start (where its history ended)
        steps.last = start;
    }
    let mut truth = TruthSink::open(cfg.ground_truth_path.clone()).await?;

    let spacing =
        CONNECT_SPACING.min(CONNECT_RAMP_MAX / u32::try_from(cfg.devices).unwrap_or(u32::MAX));
    let links: Vec<DeviceLink> = fleet
        .devices()
        .enumerate()
        .map(|(i, d)| {
            DeviceLink::spawn(
                endpoint.clone(),
                LinkIdentity {
                    serial: d.serial,
                    password: cfg.password.clone(),
                    model: Some(d.model),
                    firmware: Some(d.firmware),
                },
                link_options.clone(),
                spacing * u32::try_from(i).unwrap_or(u32::MAX),
            )
        })
        .collect();
    info!(devices = links.len(), endpoint = %endpoint, speed = cfg.speed, sim_step_hours = sim_dt_hours, "simulated fleet started");

    let started = Instant::now();
    let mut report = SimReport {
        devices: links.len(),
        ground_truth_path: cfg.ground_truth_path.clone(),
        ..SimReport::default()
    };
    let mut ticker = tokio::time::interval(cfg.publish_interval);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let end = cfg.max_duration.map(|d| started + d);
    let mut next_progress = started + PROGRESS_EVERY;
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            biased;
            _ = &mut shutdown => break,
            _ = sleep_until_opt(end) => break,
            _ = ticker.tick() => {}
        }
        let (dt_hours, now) = steps.tick();
        let messages = fleet.step_where(dt_hours, now, |i| links[i].has_room());
        report.ticks += 1;
        report.skipped_store_full += (links.len() - messages.len()) as u64;
        for m in messages {
            // has_room was checked in this same task just before: the push cannot fail
            let _ = links[m.device].try_push(m.seq, m.payload);
        }
        truth.record(fleet.take_ground_truth(), &mut report).await;
        if Instant::now() >= next_progress {
            next_progress += PROGRESS_EVERY;
            let s = sum_stats(&links);
            info!(
                sim_hours = fleet.sim_hours(),
                produced = s.produced,
                acked = s.acked,
                queued = s.queued,
                reconnects = s.reconnects,
                failures = report.failures_injected,
                "simulated fleet progress"
            );
        }
    }

    for link in &links {
        link.begin_shutdown(SHUTDOWN_GRACE);
    }
    let mut total = LinkStats::default();
    for link in links {
        total += link.join().await;
    }
    truth.finish(&mut report).await;
    report.sim_hours = fleet.sim_hours();
    report.wall_seconds = started.elapsed().as_secs_f64();
    report.produced = total.produced;
    report.published = total.published;
    report.acked = total.acked;
    report.resent = total.resent;
    report.reconnects = total.reconnects;
    report.connect_failures = total.connect_failures;
    report.unacked_at_shutdown = total.queued;
    info!(?report, "simulated fleet stopped");
    Ok(report)
}

/// How far each tick moves a fleet, and the time it stamps: on the wall clock a fixed
/// step of simulated hours, stamped with the wall time; on a simulated clock the clock's
/// time since the previous tick, stamped with the clock's time, so that the devices'
/// runtime hours and wear keep pace with the clock even when ticks are late.
#[derive(Clone, Copy, Debug)]
pub struct FleetClock {
    clock: fleetpulse_domain::Clock,
    fixed_hours: f64,
    /// The previous tick's stamp.
    pub last: DateTime<Utc>,
}

impl FleetClock {
    /// Starts at `clock`'s time now.
    pub fn new(clock: fleetpulse_domain::Clock, fixed_hours: f64) -> Self {
        FleetClock {
            clock,
            fixed_hours,
            last: clock.now(),
        }
    }

    /// The next tick: simulated hours to advance and the time to stamp.
    pub fn tick(&mut self) -> (f64, DateTime<Utc>) {
        let now = self.clock.now();
        let hours = if self.clock.is_simulated() {
            ((now - self.last).num_milliseconds().max(0) as f64) / 3_600_000.0
        } else {
            self.fixed_hours
        };
        self.last = now.max(self.last);
        (hours, now)
    }
}

fn step_hours(cfg: &SimConfig) -> Result<f64, SimError> {
    if !(cfg.speed.is_finite() && cfg.speed > 0.0) {
        return Err(SimError::Config(format!(
            "speed = {} must be a positive number",
            cfg.speed
        )));
    }
    if cfg.publish_interval.is_zero() {
        return Err(SimError::Config(
            "publish_interval must be longer than 0".into(),
        ));
    }
    if cfg.devices == 0 {
        return Err(SimError::Config("a fleet needs at least one device".into()));
    }
    Ok(cfg.publish_interval.as_secs_f64() * cfg.speed / 3600.0)
}

async fn sleep_until_opt(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

fn sum_stats(links: &[DeviceLink]) -> LinkStats {
    let mut total = LinkStats::default();
    for l in links {
        total += l.stats();
    }
    total
}

/// Counts ground truth and appends it to the file, if any.
struct TruthSink {
    file: Option<tokio::fs::File>,
    path: Option<PathBuf>,
    complete: bool,
}

impl TruthSink {
    async fn open(path: Option<PathBuf>) -> Result<Self, SimError> {
        let file = match &path {
            None => None,
            Some(p) => Some(
                tokio::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(p)
                    .await
                    .map_err(|source| SimError::GroundTruth {
                        path: p.clone(),
                        source,
                    })?,
            ),
        };
        Ok(TruthSink {
            file,
            path,
            complete: true,
        })
    }

    async fn record(&mut self, events: Vec<TruthEvent>, report: &mut SimReport) {
        if events.is_empty() {
            return;
        }
        let mut lines = String::new();
        for e in &events {
            match e {
                TruthEvent::Failure { .. } => report.failures_injected += 1,
                TruthEvent::Repair { .. } => report.repairs += 1,
                TruthEvent::ConsumableReplaced { .. } => report.consumables_replaced += 1,
                TruthEvent::ScheduledReplacement { .. } => report.scheduled_replacements += 1,
            }
            lines.push_str(&e.to_json_line());
        }
        if let Some(file) = &mut self.file
            && let Err(e) = file.write_all(lines.as_bytes()).await
        {
            error!(path = ?self.path, error = %e, "cannot write ground truth; the rest of this run's ground truth is lost");
            self.file = None;
            self.complete = false;
        }
    }

    async fn finish(mut self, report: &mut SimReport) {
        if let Some(file) = &mut self.file
            && let Err(e) = file.flush().await
        {
            error!(path = ?self.path, error = %e, "cannot flush ground truth");
            self.complete = false;
        }
        report.ground_truth_complete = self.complete;
    }
}
