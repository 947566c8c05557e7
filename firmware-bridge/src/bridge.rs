//! The running bridge: pollers → outbox (disk) → one MQTT link per device → PUBACK →
//! removed from the outbox.
//!
//! One publisher task owns the outbox and the links. It takes the pollers' readings in
//! batches, gives each its device's next `seq`, commits the batch to disk, and only then
//! hands the readings to the links (QoS 1, in order, resent after reconnects). Every
//! 50 ms it looks at which readings the links have seen acknowledged (a link releases a
//! reading once it and every earlier one are acknowledged) and deletes those from disk.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use fleetpulse_simulator::{
    DeviceLink, Endpoint, LinkIdentity, LinkOptions, LinkState, LinkStats, LinkTls,
};
use serde::Serialize;
use serde_json::Value;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use std::collections::BTreeMap;

use crate::config::{BridgeConfig, Device, RtuConfig, Transport};
use crate::metrics::{FailureKind, Metrics};
use crate::outbox::{DiskOutbox, OutboxError, Row};
use crate::poller::{self, Event};

/// How long the readings held at shutdown may take to be published and acknowledged
/// (what is not acknowledged by then stays in the outbox for the next start).
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(3);
const ACK_SWEEP: Duration = Duration::from_millis(50);
const REPORT_EVERY: Duration = Duration::from_secs(60);
const MAX_BATCH: usize = 2048;
/// While connects to the MQTT side fail, the first failure is logged at once and then at
/// most one WARN per this period (with the failures counted since the last line), so an
/// outage is visible without flooding the log of a gateway.
pub const UNREACHABLE_WARN_EVERY: Duration = Duration::from_secs(60);

/// The bridge could not start.
#[derive(Debug, thiserror::Error)]
pub enum BridgeError {
    #[error(transparent)]
    Outbox(#[from] OutboxError),
    #[error("mqtt.url: {0}")]
    Url(String),
    #[error(transparent)]
    Tls(#[from] crate::tls::TlsError),
    #[error("metrics_listen = {addr}: cannot listen: {source}")]
    Metrics {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("the outbox task failed: {0}")]
    Join(String),
}

/// What a run did.
#[derive(Clone, Debug, Default, Serialize)]
pub struct BridgeReport {
    pub devices: usize,
    pub polls: u64,
    pub polls_failed: u64,
    pub published: u64,
    pub acked: u64,
    /// Readings still in the outbox (published again at the next start).
    pub outbox_readings: u64,
}

struct DeviceOut {
    serial: String,
    link: DeviceLink,
    next_seq: u64,
    /// `seq`s handed to the link, not yet released.
    pending: VecDeque<u64>,
    /// Readings the link had released at the last sweep.
    released: u64,
}

/// Tells the operator when the MQTT side cannot be reached: the links retry with
/// backoff and only count their failed connects, so without this an outage leaves no
/// line in the log.
struct Reachability {
    url: String,
    /// Sum of the links' `connect_failures` at the last look.
    failures_seen: u64,
    /// Failures since the last WARN, and when that was (None: not warned in this outage).
    unreported: u64,
    last_warn: Option<tokio::time::Instant>,
}

impl Reachability {
    fn new(url: String) -> Self {
        Reachability {
            url,
            failures_seen: 0,
            unreported: 0,
            last_warn: None,
        }
    }

    /// Looks at the links' counters after a sweep.
    fn observe(&mut self, outs: &[DeviceOut], stats: &[LinkStats]) {
        let failures: u64 = stats.iter().map(|s| s.connect_failures).sum();
        let new = failures.saturating_sub(self.failures_seen);
        self.failures_seen = failures;
        let down: Vec<&str> = outs
            .iter()
            .filter(|o| !matches!(o.link.state(), LinkState::Connected))
            .map(|o| o.serial.as_str())
            .collect();
        if new == 0 {
            if down.is_empty() && self.last_warn.take().is_some() {
                info!(mqtt = %self.url, "the MQTT side is reachable again; every device is connected");
                self.unreported = 0;
            }
            return;
        }
        self.unreported += new;
        let now = tokio::time::Instant::now();
        if self
            .last_warn
            .is_some_and(|t| now.duration_since(t) < UNREACHABLE_WARN_EVERY)
        {
            return;
        }
        warn!(
            mqtt = %self.url,
            failed_connects = self.unreported,
            devices_not_connected = down.len(),
            first = down.first().copied().unwrap_or(""),
            every_s = UNREACHABLE_WARN_EVERY.as_secs(),
            "cannot connect to the MQTT side; readings stay in the outbox and connects are retried with backoff"
        );
        self.unreported = 0;
        self.last_warn = Some(now);
    }
}

/// A bridge ready to run.
pub struct Bridge {
    cfg: BridgeConfig,
    outbox: Arc<Mutex<DiskOutbox>>,
    recovered: std::collections::BTreeMap<String, crate::outbox::DeviceBacklog>,
    metrics: Arc<Metrics>,
    metrics_listener: Option<TcpListener>,
    /// TLS of an `mqtts://` MQTT side, read at start so that a bad file stops the start.
    tls: Option<LinkTls>,
}

fn now_ms() -> u64 {
    u64::try_from(chrono::Utc::now().timestamp_millis()).unwrap_or(0)
}

impl Bridge {
    /// Opens the outbox and binds the metrics listener.
    pub async fn start(cfg: BridgeConfig) -> Result<Self, BridgeError> {
        let endpoint =
            Endpoint::parse(&cfg.mqtt.url).map_err(|e| BridgeError::Url(e.to_string()))?;
        let tls = if endpoint.tls {
            Some(LinkTls(crate::tls::client_config(cfg.mqtt.tls.as_ref())?))
        } else {
            None
        };
        let dir = cfg.outbox.dir.clone();
        let (outbox, recovered) = tokio::task::spawn_blocking(move || {
            let o = DiskOutbox::open(&dir)?;
            let r = o.recover()?;
            Ok::<_, OutboxError>((o, r))
        })
        .await
        .map_err(|e| BridgeError::Join(e.to_string()))??;
        let metrics_listener = match cfg.metrics_listen {
            Some(addr) => Some(
                TcpListener::bind(addr)
                    .await
                    .map_err(|source| BridgeError::Metrics { addr, source })?,
            ),
            None => None,
        };
        let metrics = Arc::new(Metrics::new(
            cfg.devices.iter().map(|d| d.serial.to_string()).collect(),
        ));
        Ok(Bridge {
            cfg,
            outbox: Arc::new(Mutex::new(outbox)),
            recovered,
            metrics,
            metrics_listener,
            tls,
        })
    }

    /// Where `/metrics` is served, if anywhere.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_listener
            .as_ref()
            .and_then(|l| l.local_addr().ok())
    }

    pub fn metrics(&self) -> Arc<Metrics> {
        self.metrics.clone()
    }

    /// Polls and publishes until `stop`; then stops the pollers, stores what they took,
    /// gives in-flight readings [`SHUTDOWN_GRACE`] for their PUBACKs and disconnects.
    pub async fn run(self, stop: CancellationToken) -> Result<BridgeReport, BridgeError> {
        let Bridge {
            cfg,
            outbox,
            mut recovered,
            metrics,
            metrics_listener,
            tls,
        } = self;
        let endpoint =
            Endpoint::parse(&cfg.mqtt.url).map_err(|e| BridgeError::Url(e.to_string()))?;
        let http_stop = CancellationToken::new();
        if let Some(listener) = metrics_listener {
            tokio::spawn(serve_metrics(listener, metrics.clone(), http_stop.clone()));
        }

        let options = LinkOptions {
            keep_alive: Duration::from_secs(cfg.mqtt.keep_alive_s.max(1)),
            inflight_window: cfg.mqtt.inflight_window.max(1),
            queue_capacity: cfg.outbox.max_readings_per_device + 1,
            backoff_initial: Duration::from_millis(cfg.mqtt.reconnect_initial_ms.max(1)),
            backoff_max: Duration::from_millis(cfg.mqtt.reconnect_max_ms.max(1)),
            connect_timeout: Duration::from_secs(10),
            tls,
        };
        let mut outs: Vec<DeviceOut> = Vec::with_capacity(cfg.devices.len());
        let mut resent = 0usize;
        for (i, d) in cfg.devices.iter().enumerate() {
            let link = DeviceLink::spawn(
                endpoint.clone(),
                LinkIdentity {
                    serial: d.serial.clone(),
                    password: d.password.as_ref().map(|p| p.expose().to_owned()),
                    model: Some(d.model.clone()),
                    firmware: d.fw.clone(),
                },
                options.clone(),
                Duration::from_micros(500 * i as u64).min(Duration::from_secs(5)),
            );
            let backlog = recovered.remove(d.serial.as_str()).unwrap_or_default();
            let mut pending = VecDeque::with_capacity(backlog.pending.len());
            for (seq, payload) in backlog.pending {
                if link.try_push(seq, Bytes::from(payload)).is_ok() {
                    pending.push_back(seq);
                    resent += 1;
                }
            }
            metrics.devices[i]
                .outbox_depth
                .store(pending.len() as u64, Ordering::Relaxed);
            outs.push(DeviceOut {
                serial: d.serial.to_string(),
                link,
                next_seq: backlog.next_seq.unwrap_or_else(now_ms),
                pending,
                released: 0,
            });
        }
        if resent > 0 {
            info!(
                readings = resent,
                "outbox holds readings from the last run; publishing them first"
            );
        }
        for (serial, backlog) in &recovered {
            if !backlog.pending.is_empty() {
                warn!(%serial, readings = backlog.pending.len(), "the outbox holds readings of a device no longer configured; they stay on disk until it is configured again");
            }
        }

        let (tx, mut rx) = mpsc::channel::<Event>(4096);
        let poll_stop = CancellationToken::new();
        let mut pollers = JoinSet::new();
        let n = cfg.devices.len().max(1) as u32;
        let mut buses: BTreeMap<String, (RtuConfig, Vec<(usize, Device)>)> = BTreeMap::new();
        for (i, d) in cfg.devices.iter().enumerate() {
            match &d.transport {
                Transport::Tcp(_) => {
                    let offset = d.interval.mul_f64(f64::from(i as u32 % n) / f64::from(n));
                    pollers.spawn(poller::run_tcp(
                        i,
                        d.clone(),
                        tx.clone(),
                        metrics.clone(),
                        offset,
                        poll_stop.clone(),
                    ));
                }
                Transport::Rtu(line) => buses
                    .entry(line.port.clone())
                    .or_insert_with(|| (line.clone(), Vec::new()))
                    .1
                    .push((i, d.clone())),
            }
        }
        for (_, (line, devices)) in buses {
            pollers.spawn(poller::run_rtu_bus(
                line,
                devices,
                tx.clone(),
                metrics.clone(),
                poll_stop.clone(),
            ));
        }
        drop(tx);
        info!(
            devices = cfg.devices.len(),
            mqtt = %cfg.mqtt.url,
            outbox = %cfg.outbox.dir.display(),
            "bridge polling"
        );

        let max_pending = cfg.outbox.max_readings_per_device;
        let mut sweep = tokio::time::interval(ACK_SWEEP);
        let mut report = tokio::time::interval(REPORT_EVERY);
        report.tick().await;
        let mut last_polls = 0u64;
        let mut batch = Vec::with_capacity(MAX_BATCH);
        let mut reachability = Reachability::new(cfg.mqtt.url.clone());
        loop {
            tokio::select! {
                _ = stop.cancelled() => break,
                got = rx.recv_many(&mut batch, MAX_BATCH) => {
                    if got == 0 { break; }
                    store_and_publish(&mut outs, std::mem::take(&mut batch), &outbox, &metrics, max_pending).await;
                }
                _ = sweep.tick() => {
                    let stats = release_acked(&mut outs, &outbox, &metrics).await;
                    reachability.observe(&outs, &stats);
                }
                _ = report.tick() => {
                    let polls = metrics.polls_total();
                    info!(
                        polls_per_s = (polls - last_polls) as f64 / REPORT_EVERY.as_secs_f64(),
                        p99_ms = metrics.latency_quantile(0.99).map(|s| s * 1000.0),
                        outbox = metrics.outbox_depth(),
                        "bridge figures"
                    );
                    last_polls = polls;
                }
            }
        }

        info!("stopping: pollers, outbox, then the MQTT links");
        poll_stop.cancel();
        while pollers.join_next().await.is_some() {}
        while let Some(e) = rx.recv().await {
            batch.push(e);
        }
        store_and_publish(&mut outs, batch, &outbox, &metrics, max_pending).await;
        // a link that is draining sends nothing new: let the links send (and get
        // acknowledged) what they hold first, within the grace
        let deadline = tokio::time::Instant::now() + SHUTDOWN_GRACE;
        loop {
            release_acked(&mut outs, &outbox, &metrics).await;
            let all_acked = outs.iter().all(|o| o.link.stats().queued == 0);
            if all_acked || tokio::time::Instant::now() >= deadline {
                break;
            }
            tokio::time::sleep(ACK_SWEEP).await;
        }
        let grace = deadline
            .saturating_duration_since(tokio::time::Instant::now())
            .max(Duration::from_millis(200));
        for o in &outs {
            o.link.begin_shutdown(grace);
        }
        let mut finals = Vec::with_capacity(outs.len());
        let mut links = Vec::with_capacity(outs.len());
        for o in outs {
            let DeviceOut {
                serial,
                link,
                pending,
                released,
                ..
            } = o;
            finals.push(link.join().await);
            links.push(DeviceOutFinal {
                serial,
                pending,
                released,
            });
        }
        final_release(&mut links, &finals, &outbox).await;
        http_stop.cancel();
        let mut total = LinkStats::default();
        for f in &finals {
            total += *f;
        }
        let failed: u64 = metrics
            .devices
            .iter()
            .map(|d| FailureKind::ALL.iter().map(|k| d.failures(*k)).sum::<u64>())
            .sum();
        let left: u64 = links.iter().map(|l| l.pending.len() as u64).sum();
        if left > 0 {
            info!(
                readings = left,
                "readings not yet acknowledged stay in the outbox for the next start"
            );
        }
        Ok(BridgeReport {
            devices: cfg.devices.len(),
            polls: metrics.polls_total(),
            polls_failed: failed,
            published: total.published,
            acked: total.acked,
            outbox_readings: left,
        })
    }
}

struct DeviceOutFinal {
    serial: String,
    pending: VecDeque<u64>,
    released: u64,
}

/// Gives readings their `seq`, commits them, then hands them to the links.
async fn store_and_publish(
    outs: &mut [DeviceOut],
    events: Vec<Event>,
    outbox: &Arc<Mutex<DiskOutbox>>,
    metrics: &Metrics,
    max_pending: usize,
) {
    let mut rows = Vec::new();
    let mut targets = Vec::new();
    // readings of this batch per device, not yet in `pending`
    let mut batched: std::collections::HashMap<usize, usize> = std::collections::HashMap::new();
    for e in events {
        match e {
            Event::Status { device, payload } => {
                outs[device]
                    .link
                    .set_status(Bytes::from(payload.to_string()));
            }
            Event::Reading { device, mut fields } => {
                let o = &mut outs[device];
                let in_batch = batched.entry(device).or_default();
                if o.pending.len() + *in_batch >= max_pending {
                    let before = metrics.devices[device]
                        .outbox_full
                        .fetch_add(1, Ordering::Relaxed);
                    if before == 0 {
                        warn!(serial = %o.serial, max = max_pending, "outbox full for this device: new polls are not stored until the MQTT side acknowledges");
                    }
                    continue;
                }
                *in_batch += 1;
                let seq = o.next_seq;
                o.next_seq += 1;
                fields.insert("seq".into(), Value::from(seq));
                let payload = Value::Object(fields).to_string().into_bytes();
                targets.push((device, seq));
                rows.push(Row {
                    serial: o.serial.clone(),
                    seq,
                    payload,
                });
            }
        }
    }
    if rows.is_empty() {
        return;
    }
    let outbox = outbox.clone();
    let (rows, result) = match tokio::task::spawn_blocking(move || {
        let r = outbox
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .append(&rows);
        (rows, r)
    })
    .await
    {
        Ok(v) => v,
        Err(e) => {
            error!(error = %e, "outbox write task failed; readings of this batch are lost");
            return;
        }
    };
    if let Err(e) = result {
        metrics
            .outbox_write_errors
            .fetch_add(rows.len() as u64, Ordering::Relaxed);
        error!(error = %e, readings = rows.len(), "cannot write the outbox; publishing these readings from memory only (a crash now loses them)");
    }
    for ((device, seq), row) in targets.into_iter().zip(rows) {
        let o = &mut outs[device];
        if o.link.try_push(seq, Bytes::from(row.payload)).is_ok() {
            o.pending.push_back(seq);
        }
        metrics.devices[device]
            .outbox_depth
            .store(o.pending.len() as u64, Ordering::Relaxed);
    }
}

/// Deletes from disk what the links have released since the last sweep; returns the
/// links' counters it looked at.
async fn release_acked(
    outs: &mut [DeviceOut],
    outbox: &Arc<Mutex<DiskOutbox>>,
    metrics: &Metrics,
) -> Vec<LinkStats> {
    let mut acked = Vec::new();
    let mut stats = Vec::with_capacity(outs.len());
    for (i, o) in outs.iter_mut().enumerate() {
        let s = o.link.stats();
        stats.push(s);
        let released = s.produced - s.queued;
        if released > o.released {
            let mut last = None;
            for _ in 0..(released - o.released) {
                last = o.pending.pop_front().or(last);
            }
            o.released = released;
            if let Some(seq) = last {
                acked.push((o.serial.clone(), seq));
            }
            metrics.devices[i]
                .outbox_depth
                .store(o.pending.len() as u64, Ordering::Relaxed);
        }
    }
    metrics.set_links(stats.clone());
    remove(outbox, acked).await;
    stats
}

async fn final_release(
    links: &mut [DeviceOutFinal],
    finals: &[LinkStats],
    outbox: &Arc<Mutex<DiskOutbox>>,
) {
    let mut acked = Vec::new();
    for (o, s) in links.iter_mut().zip(finals) {
        let released = s.produced - s.queued;
        let mut last = None;
        for _ in o.released..released {
            last = o.pending.pop_front().or(last);
        }
        o.released = released;
        if let Some(seq) = last {
            acked.push((o.serial.clone(), seq));
        }
    }
    remove(outbox, acked).await;
}

async fn remove(outbox: &Arc<Mutex<DiskOutbox>>, acked: Vec<(String, u64)>) {
    if acked.is_empty() {
        return;
    }
    let outbox = outbox.clone();
    let result = tokio::task::spawn_blocking(move || {
        outbox
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove_acked(&acked)
    })
    .await;
    match result {
        Ok(Ok(())) => {}
        // harmless for delivery: the readings are resent at the next start and deduplicated
        Ok(Err(e)) => warn!(error = %e, "cannot delete acknowledged readings from the outbox"),
        Err(e) => warn!(error = %e, "outbox delete task failed"),
    }
}

async fn serve_metrics(listener: TcpListener, metrics: Arc<Metrics>, stop: CancellationToken) {
    use axum::routing::get;
    let health_metrics = metrics.clone();
    let app = axum::Router::new()
        .route(
            "/metrics",
            get(move || {
                let m = metrics.clone();
                async move { ([("content-type", "text/plain; version=0.0.4")], m.render()) }
            }),
        )
        .route(
            "/health",
            get(move || {
                let m = health_metrics.clone();
                async move {
                    let up = m
                        .devices
                        .iter()
                        .filter(|d| d.up.load(Ordering::Relaxed) == 1)
                        .count();
                    axum::Json(serde_json::json!({
                        "status": "ok",
                        "devices": m.devices.len(),
                        "devices_up": up,
                        "polls": m.polls_total(),
                        "outbox_readings": m.outbox_depth(),
                    }))
                }
            }),
        );
    if let Err(e) = axum::serve(listener, app)
        .with_graceful_shutdown(stop.cancelled_owned())
        .await
    {
        warn!(error = %e, "bridge metrics endpoint failed");
    }
}
