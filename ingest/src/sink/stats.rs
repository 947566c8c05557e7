//! Counters and gauges of the time-series sink, for `/health` and `/metrics`.

use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};

use fleetpulse_domain::store::SpoolStats;
use serde::Serialize;

use crate::stats::metric_header;

/// Shared, cheap to clone.
#[derive(Clone, Debug, Default)]
pub struct SinkStats(Arc<Inner>);

#[derive(Debug, Default)]
struct Inner {
    written_readings: AtomicU64,
    write_requests: AtomicU64,
    errors_unavailable: AtomicU64,
    errors_configuration: AtomicU64,
    errors_rejected: AtomicU64,
    rejected_readings: AtomicU64,
    spool_chunks: AtomicU64,
    spool_readings: AtomicU64,
    spool_bytes: AtomicU64,
    /// Commit time (ms) of the oldest spooled chunk; `i64::MIN` when the spool is empty.
    spool_oldest_ms: AtomicI64,
    /// The last write attempt succeeded (or none was needed yet).
    healthy: AtomicBool,
    spool_full_waits: AtomicU64,
    /// The process's clock, which stamps the spool's chunks (the wall clock until set).
    clock: std::sync::OnceLock<fleetpulse_domain::Clock>,
}

/// A point-in-time copy of the sink's counters.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct SinkStatsSnapshot {
    /// Readings the time-series server accepted.
    pub written_readings: u64,
    /// Successful write requests.
    pub write_requests: u64,
    /// Failed write attempts, by kind: `unavailable` (retried), `configuration` (held
    /// until the setting or the server is fixed), `rejected` (the points were refused).
    pub errors_unavailable: u64,
    pub errors_configuration: u64,
    pub errors_rejected: u64,
    /// Readings the server refused for good, now in the dead letters.
    pub rejected_readings: u64,
    pub spool_chunks: u64,
    pub spool_readings: u64,
    pub spool_bytes: u64,
    /// Age of the oldest spooled reading's commit, in seconds (0 when the spool is empty).
    pub spool_oldest_age_seconds: f64,
    /// Whether the last write attempt succeeded.
    pub healthy: bool,
    /// Times ingest waited because the spool was full.
    pub spool_full_waits: u64,
}

impl SinkStats {
    pub fn new() -> Self {
        let s = Self::default();
        s.0.healthy.store(true, Ordering::Relaxed);
        s.0.spool_oldest_ms.store(i64::MIN, Ordering::Relaxed);
        s
    }

    /// Reads the spool's ages on `clock` (the one its chunks are stamped with); only the
    /// first call counts.
    pub fn set_clock(&self, clock: fleetpulse_domain::Clock) {
        let _ = self.0.clock.set(clock);
    }

    pub(crate) fn now(&self) -> chrono::DateTime<chrono::Utc> {
        self.0.clock.get().copied().unwrap_or_default().now()
    }

    pub fn snapshot(&self) -> SinkStatsSnapshot {
        let i = &self.0;
        let oldest = i.spool_oldest_ms.load(Ordering::Relaxed);
        let age = if oldest == i64::MIN {
            0.0
        } else {
            ((self.now().timestamp_millis() - oldest).max(0)) as f64 / 1000.0
        };
        SinkStatsSnapshot {
            written_readings: i.written_readings.load(Ordering::Relaxed),
            write_requests: i.write_requests.load(Ordering::Relaxed),
            errors_unavailable: i.errors_unavailable.load(Ordering::Relaxed),
            errors_configuration: i.errors_configuration.load(Ordering::Relaxed),
            errors_rejected: i.errors_rejected.load(Ordering::Relaxed),
            rejected_readings: i.rejected_readings.load(Ordering::Relaxed),
            spool_chunks: i.spool_chunks.load(Ordering::Relaxed),
            spool_readings: i.spool_readings.load(Ordering::Relaxed),
            spool_bytes: i.spool_bytes.load(Ordering::Relaxed),
            spool_oldest_age_seconds: age,
            healthy: i.healthy.load(Ordering::Relaxed),
            spool_full_waits: i.spool_full_waits.load(Ordering::Relaxed),
        }
    }

    /// Appends the sink's metrics in the Prometheus text format.
    pub fn write_prometheus(&self, out: &mut String) {
        let s = self.snapshot();
        let counters = [
            (
                "sink_written_readings_total",
                "Readings the time-series server accepted.",
                s.written_readings,
            ),
            (
                "sink_write_requests_total",
                "Successful write requests to the time-series server.",
                s.write_requests,
            ),
            (
                "sink_rejected_readings_total",
                "Readings the time-series server refused for good (dead-lettered).",
                s.rejected_readings,
            ),
            (
                "sink_spool_full_waits_total",
                "Times ingest stopped committing because the sink spool was full.",
                s.spool_full_waits,
            ),
        ];
        for (name, help, value) in counters {
            metric_header(out, name, help, "counter");
            let _ = writeln!(out, "fleetpulse_ingest_{name} {value}");
        }
        metric_header(
            out,
            "sink_errors_total",
            "Failed write attempts to the time-series server, by kind.",
            "counter",
        );
        for (kind, n) in [
            ("unavailable", s.errors_unavailable),
            ("configuration", s.errors_configuration),
            ("rejected", s.errors_rejected),
        ] {
            let _ = writeln!(
                out,
                "fleetpulse_ingest_sink_errors_total{{kind=\"{kind}\"}} {n}"
            );
        }
        let gauges = [
            (
                "sink_spool_readings",
                "Readings waiting in the sink spool.",
                s.spool_readings as f64,
            ),
            (
                "sink_spool_bytes",
                "Bytes of line protocol waiting in the sink spool.",
                s.spool_bytes as f64,
            ),
            (
                "sink_spool_oldest_age_seconds",
                "Age of the oldest reading waiting in the sink spool (0 when empty).",
                s.spool_oldest_age_seconds,
            ),
            (
                "sink_up",
                "1 when the last write to the time-series server succeeded.",
                if s.healthy { 1.0 } else { 0.0 },
            ),
        ];
        for (name, help, value) in gauges {
            metric_header(out, name, help, "gauge");
            let _ = writeln!(out, "fleetpulse_ingest_{name} {value}");
        }
    }

    pub(crate) fn spool(&self, s: &SpoolStats) {
        let i = &self.0;
        i.spool_chunks.store(s.chunks, Ordering::Relaxed);
        i.spool_readings.store(s.readings, Ordering::Relaxed);
        i.spool_bytes.store(s.bytes, Ordering::Relaxed);
        i.spool_oldest_ms.store(
            s.oldest.map_or(i64::MIN, |t| t.timestamp_millis()),
            Ordering::Relaxed,
        );
    }

    pub(crate) fn written(&self, readings: usize) {
        self.0
            .written_readings
            .fetch_add(readings as u64, Ordering::Relaxed);
        self.0.write_requests.fetch_add(1, Ordering::Relaxed);
        self.0.healthy.store(true, Ordering::Relaxed);
    }

    pub(crate) fn failed(&self, err: &super::SinkError) {
        let counter = match err {
            super::SinkError::Unavailable(_) => &self.0.errors_unavailable,
            super::SinkError::Configuration { .. } => &self.0.errors_configuration,
            super::SinkError::Rejected { .. } => &self.0.errors_rejected,
        };
        counter.fetch_add(1, Ordering::Relaxed);
        if !matches!(err, super::SinkError::Rejected { .. }) {
            self.0.healthy.store(false, Ordering::Relaxed);
        }
    }

    pub(crate) fn rejected(&self, readings: usize) {
        self.0
            .rejected_readings
            .fetch_add(readings as u64, Ordering::Relaxed);
    }

    pub(crate) fn spool_full_wait(&self) {
        self.0.spool_full_waits.fetch_add(1, Ordering::Relaxed);
    }
}
