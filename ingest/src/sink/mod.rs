//! The time-series sink: every stored reading, once, to a server speaking the InfluxDB v2
//! write API, surviving that server's outages.
//!
//! # Spool
//! The spool is a transactional outbox in the store: with a sink configured,
//! [`Store::commit_batch`] appends a batch's *new* readings, as line protocol
//! ([`fleetpulse_domain::line_protocol`]), in the same transaction that stores them. So
//! when the pipeline acks a message, its readings are durable in the store *and* in the
//! spool; a crash at any point either loses nothing or makes the device resend, and a
//! resent reading is a duplicate the store does not spool again. (A spool file written
//! beside the store could not promise that: a crash between the two writes would leave
//! a reading stored but never spooled, or spooled twice.)
//!
//! The [`SinkWorker`] sends the oldest chunks first, gathered up to
//! [`SinkBatchPolicy`] limits, and deletes them from the spool once the server answered
//! 2xx. The spool is bounded ([`SinkConfig::spool_max_bytes`]): when it is full, the
//! pipeline waits before its next commit ([`SpoolGate`]), its queue fills, and the
//! sources stop reading: backpressure, never a dropped reading.
//!
//! # Failures
//! - Connection errors, timeouts, HTTP 429 and 5xx: retried with exponential backoff and
//!   jitter, for as long as it takes; the spool holds the readings meanwhile.
//! - HTTP 401, 403, 404 (token, org or bucket wrong): nothing a retry of the same request
//!   can fix, but nothing wrong with the readings either: held in the spool and retried
//!   at the longest backoff, with an error in the log, until the configuration or the
//!   server is fixed.
//! - Any other 4xx: the server refuses these points. The request is split in halves until
//!   the refused lines are isolated; each goes to the dead letters (reason
//!   `sink_rejected`) with the server's message, and the rest is written.
//!
//! # Delivery guarantee
//! At least once: a crash after the server accepted a request but before its chunks left
//! the spool sends them again. InfluxDB overwrites identical points (same series and
//! timestamp), so this is harmless there; VictoriaMetrics keeps duplicates unless it runs
//! with `-dedup.minScrapeInterval`.

mod config;
mod influx;
mod stats;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use fleetpulse_domain::store::{IngestBatch, NewDeadLetter, SpoolChunk, Store};
use fleetpulse_domain::telemetry::RejectReason;
use futures::FutureExt;
use tokio::sync::watch;
use tokio::time::Instant;
use tracing::{debug, error, info, warn};

pub use config::{SinkBatchPolicy, SinkConfig};
pub use influx::{InfluxSink, InfluxSinkError};
pub use stats::{SinkStats, SinkStatsSnapshot};

/// A write to a time-series server failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SinkError {
    /// The server is down, overloaded or failing: retry later.
    #[error("time-series server unavailable: {0}")]
    Unavailable(String),
    /// The server refuses the request as configured (credentials, org, bucket).
    #[error(
        "time-series server refused the request (HTTP {status}); check sink.url, sink.org, sink.bucket and sink.token: {message}"
    )]
    Configuration { status: u16, message: String },
    /// The server refuses these points; sending them again will not help.
    #[error("time-series server rejected the points (HTTP {status}): {message}")]
    Rejected { status: u16, message: String },
}

/// A time-series server. `write` returns `Ok` only once the server accepted every line.
#[async_trait]
pub trait TelemetrySink: Send + Sync + 'static {
    /// Writes line protocol (millisecond timestamps, one point per line).
    async fn write(&self, body: String) -> Result<(), SinkError>;
    /// Where the sink writes, for logs (no secrets).
    fn target(&self) -> &str;
}

/// How full the spool is, shared between the pipeline (which adds what each commit
/// spooled and waits while the spool is full) and the sink worker (which removes what
/// the server accepted, and wakes when something was added). Cheap to clone.
#[derive(Clone, Debug)]
pub struct SpoolGate {
    bytes: Arc<watch::Sender<u64>>,
    max_bytes: u64,
    stats: SinkStats,
}

impl SpoolGate {
    fn new(bytes: u64, max_bytes: u64, stats: SinkStats) -> Self {
        Self {
            bytes: Arc::new(watch::Sender::new(bytes)),
            max_bytes: max_bytes.max(1),
            stats,
        }
    }

    /// Bytes of line protocol in the spool.
    pub fn bytes(&self) -> u64 {
        *self.bytes.borrow()
    }

    pub fn is_full(&self) -> bool {
        self.bytes() >= self.max_bytes
    }

    /// Waits until the spool has room (returns at once when it has).
    pub async fn room(&self) {
        if !self.is_full() {
            return;
        }
        self.stats.spool_full_wait();
        warn!(
            spool_bytes = self.bytes(),
            spool_max_bytes = self.max_bytes,
            "the time-series sink spool is full: ingest waits (devices and broker are held back) until the sink catches up"
        );
        let mut rx = self.bytes.subscribe();
        let max = self.max_bytes;
        // The sender lives as long as this gate.
        let _ = rx.wait_for(|b| *b < max).await;
        info!("the time-series sink spool has room again: ingest resumes");
    }

    pub(crate) fn added(&self, n: usize) {
        if n > 0 {
            self.bytes.send_modify(|b| *b = b.saturating_add(n as u64));
        }
    }

    fn removed(&self, n: u64) {
        self.bytes.send_modify(|b| *b = b.saturating_sub(n));
    }

    fn subscribe(&self) -> watch::Receiver<u64> {
        self.bytes.subscribe()
    }
}

/// Sends the spool to the time-series server. Build with [`SinkWorker::new`], hand the
/// [`SpoolGate`] to the pipeline, then [`run`](SinkWorker::run) it.
pub struct SinkWorker {
    store: Arc<dyn Store>,
    sink: Arc<dyn TelemetrySink>,
    config: SinkConfig,
    gate: SpoolGate,
    stats: SinkStats,
}

/// How often the spool gauges are refreshed while nothing happens.
const IDLE_REFRESH: Duration = Duration::from_secs(5);
/// Longest silence in the log while the server stays unreachable.
const LOG_EVERY: Duration = Duration::from_secs(30);

impl SinkWorker {
    /// Reads what the spool already holds (from before a restart) so the gate starts
    /// from the truth.
    pub async fn new(
        store: Arc<dyn Store>,
        sink: Arc<dyn TelemetrySink>,
        config: SinkConfig,
    ) -> Result<Self, fleetpulse_domain::store::StoreError> {
        let spooled = store.spool_stats().await?;
        let stats = SinkStats::new();
        stats.spool(&spooled);
        if spooled.readings > 0 {
            info!(
                readings = spooled.readings,
                bytes = spooled.bytes,
                "the time-series sink spool holds readings from before the restart; sending them first"
            );
        }
        let gate = SpoolGate::new(spooled.bytes, config.spool_max_bytes, stats.clone());
        Ok(Self {
            store,
            sink,
            config,
            gate,
            stats,
        })
    }

    /// Runs on `clock` (the process's, which stamps the spool's chunks): how long a chunk
    /// has lingered, and when a refused line was dead-lettered.
    pub fn with_clock(self, clock: fleetpulse_domain::Clock) -> Self {
        self.stats.set_clock(clock);
        self
    }

    /// The gate the pipeline must wait on and report spooled bytes to.
    pub fn gate(&self) -> SpoolGate {
        self.gate.clone()
    }

    pub fn stats(&self) -> SinkStats {
        self.stats.clone()
    }

    /// Sends spooled readings until `stop` resolves; then keeps sending for at most
    /// `shutdown_flush` (stop the pipeline first, so nothing new arrives), and returns.
    /// What is left stays in the spool for the next start.
    pub async fn run(self, stop: impl Future<Output = ()> + Send) {
        info!(target = self.sink.target(), "time-series sink started");
        let mut stop = std::pin::pin!(stop.fuse());
        let mut deadline: Option<Instant> = None;
        let mut changes = self.gate.subscribe();
        loop {
            if deadline.is_some_and(|d| Instant::now() >= d) {
                break;
            }
            self.refresh_gauges().await;
            let chunks = match self
                .store
                .spool_peek(self.config.batch.max_readings, self.config.batch.max_bytes)
                .await
            {
                Ok(chunks) => chunks,
                Err(e) => {
                    warn!(error = %e, "cannot read the sink spool; retrying in 1 s");
                    if self
                        .pause(Duration::from_secs(1), &mut stop, &mut deadline)
                        .await
                    {
                        break;
                    }
                    continue;
                }
            };
            if chunks.is_empty() {
                if deadline.is_some() {
                    break;
                }
                changes.mark_unchanged();
                tokio::select! {
                    _ = changes.changed() => {}
                    () = &mut stop => deadline = Some(Instant::now() + self.config.shutdown_flush),
                    () = tokio::time::sleep(IDLE_REFRESH) => {}
                }
                continue;
            }
            if deadline.is_none()
                && let Some(wait) = self.linger_left(&chunks)
            {
                if self.pause(wait, &mut stop, &mut deadline).await {
                    break;
                }
                continue;
            }
            if !self.deliver(&chunks, &mut stop, &mut deadline).await {
                break;
            }
            self.remove(&chunks, &mut stop, &mut deadline).await;
        }
        self.refresh_gauges().await;
        let left = self.stats.snapshot().spool_readings;
        if left > 0 {
            warn!(
                readings = left,
                "time-series sink stopped with readings still spooled; they are sent after the next start"
            );
        } else {
            info!("time-series sink stopped; spool empty");
        }
    }

    /// How much longer to wait for a fuller request: none when a limit is reached or the
    /// oldest chunk waited the linger time.
    fn linger_left(&self, chunks: &[SpoolChunk]) -> Option<Duration> {
        let readings: usize = chunks.iter().map(|c| c.readings).sum();
        let bytes: usize = chunks.iter().map(|c| c.body.len()).sum();
        let policy = &self.config.batch;
        if readings >= policy.max_readings || bytes >= policy.max_bytes {
            return None;
        }
        let waited = (self.stats.now() - chunks[0].created_at)
            .to_std()
            .unwrap_or_default();
        policy.linger.checked_sub(waited).filter(|d| !d.is_zero())
    }

    /// Sleeps `d`, or less when stop is requested (which starts the flush deadline).
    /// Returns `true` when the flush deadline has passed.
    async fn pause(
        &self,
        d: Duration,
        stop: &mut std::pin::Pin<&mut futures::future::Fuse<impl Future<Output = ()>>>,
        deadline: &mut Option<Instant>,
    ) -> bool {
        let until = match *deadline {
            Some(dl) => (Instant::now() + d).min(dl),
            None => Instant::now() + d,
        };
        tokio::select! {
            () = tokio::time::sleep_until(until) => {}
            () = stop.as_mut(), if deadline.is_none() => {
                *deadline = Some(Instant::now() + self.config.shutdown_flush);
            }
        }
        deadline.is_some_and(|dl| Instant::now() >= dl)
    }

    /// Writes the chunks' lines, retrying what can be retried and dead-lettering lines
    /// the server refuses. `false`: the flush deadline passed before everything was
    /// written (the chunks stay spooled).
    async fn deliver(
        &self,
        chunks: &[SpoolChunk],
        stop: &mut std::pin::Pin<&mut futures::future::Fuse<impl Future<Output = ()>>>,
        deadline: &mut Option<Instant>,
    ) -> bool {
        let body: String = chunks.iter().map(|c| c.body.as_str()).collect();
        let lines: Vec<&str> = body.lines().collect();
        // Spans of lines still to write; the last is next. Starts as one span: the whole
        // request; a refused span is split in halves until the refused lines stand alone.
        let mut todo: Vec<(usize, usize)> = vec![(0, lines.len())];
        let mut backoff = self.config.retry.initial_backoff;
        // An outage logs a warning when it starts, then at most every LOG_EVERY, and a
        // line when it ends: not one line per retry.
        let mut outage: Option<(Instant, u64, Instant)> = None;
        while let Some(&(from, to)) = todo.last() {
            let part = if (from, to) == (0, lines.len()) {
                body.clone()
            } else {
                let mut s = lines[from..to].join("\n");
                s.push('\n');
                s
            };
            let started = Instant::now();
            match self.sink.write(part).await {
                Ok(()) => {
                    todo.pop();
                    self.stats.written(to - from);
                    backoff = self.config.retry.initial_backoff;
                    if let Some((since, failures, _)) = outage.take() {
                        info!(
                            failed_attempts = failures,
                            outage_s = since.elapsed().as_secs(),
                            target = self.sink.target(),
                            "time-series server reachable again; sending the spool"
                        );
                    }
                    debug!(
                        readings = to - from,
                        ms = started.elapsed().as_millis() as u64,
                        "readings written to the time-series server"
                    );
                }
                Err(SinkError::Rejected { status, message }) if to - from > 1 => {
                    self.stats.failed(&SinkError::Rejected {
                        status,
                        message: String::new(),
                    });
                    warn!(
                        status,
                        readings = to - from,
                        server_says = %message,
                        "the time-series server refused a request; splitting it to find the refused points"
                    );
                    todo.pop();
                    let mid = from + (to - from) / 2;
                    todo.push((mid, to));
                    todo.push((from, mid));
                }
                Err(err @ SinkError::Rejected { .. }) => {
                    self.stats.failed(&err);
                    todo.pop();
                    self.dead_letter(lines[from], &err).await;
                }
                Err(err) => {
                    self.stats.failed(&err);
                    let now = Instant::now();
                    let (_, failures, last_log) = outage.get_or_insert((now, 0, now - LOG_EVERY));
                    *failures += 1;
                    let log = now.duration_since(*last_log) >= LOG_EVERY;
                    if log {
                        *last_log = now;
                    }
                    let wait = match &err {
                        SinkError::Configuration { .. } => {
                            if log {
                                error!(error = %err, target = self.sink.target(), "time-series sink misconfigured; readings stay spooled");
                            }
                            self.config.retry.max_backoff
                        }
                        _ => {
                            if log {
                                warn!(error = %err, failed_attempts = *failures, "time-series write failed; readings stay spooled and are retried with backoff");
                            } else {
                                debug!(error = %err, retry_in_ms = backoff.as_millis() as u64, "time-series write failed again");
                            }
                            with_jitter(backoff)
                        }
                    };
                    self.refresh_gauges().await;
                    backoff = (backoff * 2).min(self.config.retry.max_backoff);
                    if self.pause(wait, stop, deadline).await {
                        return false;
                    }
                }
            }
        }
        true
    }

    /// A refused line goes to the dead letters, with the server's answer and the
    /// device's serial (read back from the line's tag).
    async fn dead_letter(&self, line: &str, err: &SinkError) {
        let serial = serial_of(line).unwrap_or("unknown");
        let letter = NewDeadLetter {
            received_at: self.stats.now(),
            topic: format!("fleetpulse/v1/devices/{serial}/telemetry"),
            client_id: serial.to_owned(),
            reason: RejectReason::SinkRejected,
            detail: err.to_string(),
            payload: line.as_bytes().to_vec(),
        };
        warn!(serial, error = %err, "a reading was refused by the time-series server; dead-lettered");
        let batch = IngestBatch {
            dead_letters: vec![letter],
            ..IngestBatch::default()
        };
        let mut backoff = Duration::from_millis(100);
        loop {
            match self.store.commit_batch(batch.clone()).await {
                Ok(_) => break,
                Err(e) => {
                    warn!(error = %e, "cannot store a sink dead letter; retrying");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }
        }
        self.stats.rejected(1);
    }

    /// Deletes delivered chunks from the spool (retrying: until they are gone, a
    /// restart would send them again).
    async fn remove(
        &self,
        chunks: &[SpoolChunk],
        stop: &mut std::pin::Pin<&mut futures::future::Fuse<impl Future<Output = ()>>>,
        deadline: &mut Option<Instant>,
    ) {
        let Some(last) = chunks.last() else { return };
        let bytes: u64 = chunks.iter().map(|c| c.body.len() as u64).sum();
        loop {
            match self.store.spool_remove(last.id).await {
                Ok(_) => {
                    self.gate.removed(bytes);
                    return;
                }
                Err(e) => {
                    warn!(error = %e, "cannot remove delivered readings from the sink spool; retrying");
                    if self.pause(Duration::from_millis(500), stop, deadline).await {
                        return;
                    }
                }
            }
        }
    }

    async fn refresh_gauges(&self) {
        if let Ok(s) = self.store.spool_stats().await {
            self.stats.spool(&s);
        }
    }
}

/// Between half and all of `d`, so many instances do not retry in step.
fn with_jitter(d: Duration) -> Duration {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |t| t.subsec_nanos());
    let fraction = 0.5 + f64::from(nanos % 1_000) / 2_000.0;
    d.mul_f64(fraction)
}

/// The `serial` tag of a line written by [`fleetpulse_domain::line_protocol`].
fn serial_of(line: &str) -> Option<&str> {
    let rest = line.split_once(",serial=")?.1;
    let end = rest.find([',', ' ']).unwrap_or(rest.len());
    Some(&rest[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_serial_is_read_back_from_a_line() {
        assert_eq!(
            serial_of("telemetry,serial=OC5-1,model=X seq=1i 5"),
            Some("OC5-1")
        );
        assert_eq!(serial_of("telemetry,serial=OC5-2 seq=1i 5"), Some("OC5-2"));
        assert_eq!(serial_of("garbage"), None);
    }

    #[test]
    fn jitter_stays_within_half_and_all() {
        for _ in 0..100 {
            let d = with_jitter(Duration::from_millis(1000));
            assert!(d >= Duration::from_millis(500) && d <= Duration::from_millis(1000));
        }
    }

    #[tokio::test]
    async fn the_gate_holds_while_full_and_opens_when_the_sink_catches_up() {
        let gate = SpoolGate::new(0, 100, SinkStats::new());
        gate.added(150);
        assert!(gate.is_full());
        let waiter = tokio::spawn({
            let gate = gate.clone();
            async move { gate.room().await }
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!waiter.is_finished(), "must wait while full");
        gate.removed(100);
        tokio::time::timeout(Duration::from_secs(5), waiter)
            .await
            .expect("opens")
            .expect("task");
        assert_eq!(gate.bytes(), 50);
        assert_eq!(gate.stats.snapshot().spool_full_waits, 1);
    }
}
