//! Counters of the ingest pipeline: cheap atomics behind a cloneable handle, readable as
//! a JSON snapshot (`/health`) or as Prometheus text (`/metrics`).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use fleetpulse_domain::telemetry::RejectReason;
use serde::Serialize;

/// A cloneable handle on the pipeline's counters. Every clone sees the same numbers.
#[derive(Clone, Debug, Default)]
pub struct IngestStats {
    counters: Arc<Counters>,
}

#[derive(Debug, Default)]
struct Counters {
    received_messages: AtomicU64,
    readings_stored: AtomicU64,
    duplicates: AtomicU64,
    dead_lettered: AtomicU64,
    dead_letter_repeats: AtomicU64,
    acked: AtomicU64,
    batches: AtomicU64,
    commit_errors: AtomicU64,
    connected: AtomicBool,
    connections: AtomicU64,
    connections_max: AtomicU64,
    connections_refused: AtomicU64,
    reconnects: AtomicU64,
    broker_oversized: AtomicU64,
    journal_records: AtomicU64,
    /// Orders created or updated by commits so far: the order stream waits on it.
    order_changes: tokio::sync::watch::Sender<u64>,
    /// The journal's positions and unapplied bytes, read at each snapshot.
    journal: std::sync::OnceLock<Arc<crate::journal::Shared>>,
    /// Why journal appends fail right now (acks held), `None` once one succeeds.
    journal_held: Mutex<Option<String>>,
    /// Why store commits fail right now (records wait), `None` once one succeeds.
    store_held: Mutex<Option<String>>,
    /// Entries the store refused for good, dead-lettered by the pipeline, and the last
    /// refusal.
    store_refused: AtomicU64,
    last_refusal: Mutex<Option<String>>,
    /// Indexed like `RejectReason::ALL`.
    rejected: RejectCounters,
    batch_entries: Histogram<BATCH_BUCKETS>,
    commit_seconds: Histogram<LATENCY_BUCKETS>,
}

/// The counters at one moment (each counter read on its own: not a transaction).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct IngestStatsSnapshot {
    /// Messages the pipeline accepted from its sources.
    pub received_messages: u64,
    /// New readings committed.
    pub readings_stored: u64,
    /// Readings the store already had (same serial and seq): ignored.
    pub duplicates: u64,
    /// Refused entries committed as dead letters (including the store's unknown-device
    /// refusals), those counted on an existing row included.
    pub dead_lettered: u64,
    /// Of `dead_lettered`, messages already dead-lettered and received again (a resend
    /// after a lost acknowledgement, a broker's redelivery): counted on their row's
    /// `repeats`, no new row.
    pub dead_letter_repeats: u64,
    /// Acknowledgements written once their batch was durable: PUBACKs and PUBRECs
    /// written to device sockets, acks the external broker client sent.
    pub acked: u64,
    /// Batches committed.
    pub batches: u64,
    /// Failed commit attempts (each one retried).
    pub commit_errors: u64,
    /// Whether the source is taking deliveries: the built-in endpoint is listening, or
    /// the external source is connected to its broker with its subscriptions granted.
    pub connected: bool,
    /// Device connections open on the built-in endpoint.
    pub device_connections: u64,
    /// The most it keeps open at once (`mqtt.max_connections` as in effect; 0 without
    /// the built-in endpoint).
    pub device_connections_max: u64,
    /// Device connections closed as soon as they were accepted because
    /// `device_connections_max` were open.
    pub device_connections_refused: u64,
    /// Times the external source lost its broker connection.
    pub broker_reconnects: u64,
    /// Deliveries from the external broker over `broker.max_packet_bytes`: each cost a
    /// reconnect and comes again (see docs/operations.md).
    pub broker_oversized_packets: u64,
    /// Records written (and synced) to the ingest journal.
    pub journal_records: u64,
    /// Journal records written but not yet applied to the store, and their bytes.
    pub journal_unapplied_records: u64,
    pub journal_unapplied_bytes: u64,
    /// Entries (readings, status messages) the store refused for good: dead-lettered
    /// with reason `store_rejected` so that the entries behind them could be stored.
    pub store_refused: u64,
    /// Whether ingest is held: journal appends or store commits fail and are retried.
    pub held: bool,
}

/// What `/health` reports as degraded about ingest.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct IngestHealth {
    /// Why ingest makes no progress right now (journal appends or store commits fail
    /// and are retried); empty when it does.
    pub held: Vec<String>,
    /// The store refused entries for good since the start (dead-lettered): how many and
    /// the last one's error.
    pub refused: Option<String>,
}

impl IngestStats {
    pub fn snapshot(&self) -> IngestStatsSnapshot {
        let c = &self.counters;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        IngestStatsSnapshot {
            received_messages: get(&c.received_messages),
            readings_stored: get(&c.readings_stored),
            duplicates: get(&c.duplicates),
            dead_lettered: get(&c.dead_lettered),
            dead_letter_repeats: get(&c.dead_letter_repeats),
            acked: get(&c.acked),
            batches: get(&c.batches),
            commit_errors: get(&c.commit_errors),
            connected: c.connected.load(Ordering::Relaxed),
            device_connections: get(&c.connections),
            device_connections_max: get(&c.connections_max),
            device_connections_refused: get(&c.connections_refused),
            broker_reconnects: get(&c.reconnects),
            broker_oversized_packets: get(&c.broker_oversized),
            journal_records: get(&c.journal_records),
            journal_unapplied_records: c.journal.get().map_or(0, |j| {
                j.durable_through().saturating_sub(j.applied_through())
            }),
            journal_unapplied_bytes: c.journal.get().map_or(0, |j| j.unapplied_bytes()),
            store_refused: get(&c.store_refused),
            held: held(&c.journal_held).is_some() || held(&c.store_held).is_some(),
        }
    }

    /// Whether ingest is held and why, and what the store refused.
    pub fn health(&self) -> IngestHealth {
        let c = &self.counters;
        let refused = get_u64(&c.store_refused);
        IngestHealth {
            held: [held(&c.journal_held), held(&c.store_held)]
                .into_iter()
                .flatten()
                .collect(),
            refused: (refused > 0).then(|| {
                format!(
                    "the store refused {refused} journal entr{} since the start; dead-lettered as store_rejected (last: {})",
                    if refused == 1 { "y" } else { "ies" },
                    held(&c.last_refusal).unwrap_or_default()
                )
            }),
        }
    }

    /// Journal appends fail (`Some(why)`, acks held) or work again (`None`).
    pub(crate) fn journal_held(&self, why: Option<String>) {
        set_held(&self.counters.journal_held, why);
    }

    /// Store commits fail (`Some(why)`, retried) or work again (`None`).
    pub(crate) fn store_held(&self, why: Option<String>) {
        set_held(&self.counters.store_held, why);
    }

    /// The store refused `n` entries for good; `last` says why the last one.
    pub(crate) fn store_refused(&self, n: usize, last: String) {
        self.counters
            .store_refused
            .fetch_add(as_u64(n), Ordering::Relaxed);
        set_held(&self.counters.last_refusal, Some(last));
    }

    /// Dead letters committed so far, by reason (reasons never seen are left out).
    pub fn rejected_by_reason(&self) -> BTreeMap<RejectReason, u64> {
        self.counters.rejected.snapshot()
    }

    /// Appends the counters in the Prometheus text exposition format (version 0.0.4),
    /// every metric prefixed `fleetpulse_ingest_`.
    pub fn write_prometheus(&self, out: &mut String) {
        let s = self.snapshot();
        let counters: [(&str, &str, u64); 13] = [
            (
                "received_messages_total",
                "MQTT messages accepted by the pipeline.",
                s.received_messages,
            ),
            (
                "readings_stored_total",
                "New readings committed to the store.",
                s.readings_stored,
            ),
            (
                "duplicates_total",
                "Readings already stored (same serial and seq), ignored.",
                s.duplicates,
            ),
            (
                "acked_total",
                "Acknowledgements written (PUBACK, PUBREC, broker acks) once their batch was durable.",
                s.acked,
            ),
            ("batches_total", "Batches committed.", s.batches),
            (
                "commit_errors_total",
                "Failed commit attempts (each retried; nothing acked meanwhile).",
                s.commit_errors,
            ),
            (
                "device_connections_refused_total",
                "Device connections closed at once: mqtt.max_connections were open.",
                s.device_connections_refused,
            ),
            (
                "broker_reconnects_total",
                "Lost connections to the external broker.",
                s.broker_reconnects,
            ),
            (
                "broker_oversized_packets_total",
                "Deliveries over broker.max_packet_bytes (each breaks the broker connection).",
                s.broker_oversized_packets,
            ),
            (
                "dead_lettered_total",
                "Refused entries committed as dead letters, any reason (repeats included).",
                s.dead_lettered,
            ),
            (
                "dead_letter_repeats_total",
                "Refused messages received again (resent, redelivered): counted on their dead letter, no new row.",
                s.dead_letter_repeats,
            ),
            (
                "journal_records_total",
                "Records written and synced to the ingest journal (each acks its messages).",
                s.journal_records,
            ),
            (
                "store_refused_total",
                "Entries the store refused for good, dead-lettered so the rest could be stored.",
                s.store_refused,
            ),
        ];
        for (name, help, value) in counters {
            metric_header(out, name, help, "counter");
            let _ = writeln!(out, "fleetpulse_ingest_{name} {value}");
        }
        metric_header(
            out,
            "rejected_total",
            "Dead letters committed, by rejection reason.",
            "counter",
        );
        let rejected = self.rejected_by_reason();
        for reason in RejectReason::ALL {
            let n = rejected.get(reason).copied().unwrap_or(0);
            let _ = writeln!(
                out,
                "fleetpulse_ingest_rejected_total{{reason=\"{reason}\"}} {n}"
            );
        }
        metric_header(
            out,
            "connected",
            "1 while the source takes deliveries.",
            "gauge",
        );
        let _ = writeln!(out, "fleetpulse_ingest_connected {}", u8::from(s.connected));
        metric_header(
            out,
            "held",
            "1 while journal appends or store commits fail and are retried.",
            "gauge",
        );
        let _ = writeln!(out, "fleetpulse_ingest_held {}", u8::from(s.held));
        metric_header(
            out,
            "device_connections",
            "Device connections open on the built-in endpoint.",
            "gauge",
        );
        let _ = writeln!(
            out,
            "fleetpulse_ingest_device_connections {}",
            s.device_connections
        );
        for (name, help, value) in [
            (
                "device_connections_max",
                "Most device connections open at once (mqtt.max_connections in effect).",
                s.device_connections_max,
            ),
            (
                "journal_unapplied_records",
                "Ingest journal records not yet applied to the store.",
                s.journal_unapplied_records,
            ),
            (
                "journal_unapplied_bytes",
                "Bytes of ingest journal records not yet applied to the store.",
                s.journal_unapplied_bytes,
            ),
        ] {
            metric_header(out, name, help, "gauge");
            let _ = writeln!(out, "fleetpulse_ingest_{name} {value}");
        }
        self.counters.batch_entries.write(
            out,
            "batch_entries",
            "Readings, dead letters and status updates per committed batch.",
            &BATCH_BOUNDS,
            1,
        );
        self.counters.commit_seconds.write(
            out,
            "commit_seconds",
            "Time from a batch's first commit attempt to its commit, retries included.",
            &LATENCY_BOUNDS_US,
            MICROS_PER_SECOND,
        );
    }

    /// The journal whose positions the snapshots report.
    pub(crate) fn journal_attached(&self, journal: Arc<crate::journal::Shared>) {
        let _ = self.counters.journal.set(journal);
    }

    /// A journal record was written and synced.
    pub(crate) fn journal_written(&self) {
        self.counters
            .journal_records
            .fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn message_received(&self) {
        self.counters
            .received_messages
            .fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn batch_committed(
        &self,
        entries: usize,
        stored: usize,
        duplicates: usize,
        reasons: &BTreeMap<RejectReason, usize>,
        repeats: usize,
        took: Duration,
    ) {
        let c = &self.counters;
        c.readings_stored
            .fetch_add(as_u64(stored), Ordering::Relaxed);
        c.duplicates
            .fetch_add(as_u64(duplicates), Ordering::Relaxed);
        let dead: usize = reasons.values().sum();
        c.dead_lettered.fetch_add(as_u64(dead), Ordering::Relaxed);
        c.dead_letter_repeats
            .fetch_add(as_u64(repeats), Ordering::Relaxed);
        for (&reason, &n) in reasons {
            c.rejected.add(reason, as_u64(n));
        }
        c.batches.fetch_add(1, Ordering::Relaxed);
        c.batch_entries.observe(as_u64(entries), &BATCH_BOUNDS);
        let micros = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
        c.commit_seconds.observe(micros, &LATENCY_BOUNDS_US);
    }

    /// Commits created or updated `n` orders: wakes whoever waits for order changes.
    pub(crate) fn orders_changed(&self, n: usize) {
        if n > 0 {
            self.counters
                .order_changes
                .send_modify(|total| *total += as_u64(n));
        }
    }

    /// Changes whenever a commit created or updated orders (the value counts them), so an
    /// order stream can look at once instead of at its next poll.
    pub fn order_changes(&self) -> tokio::sync::watch::Receiver<u64> {
        self.counters.order_changes.subscribe()
    }

    pub(crate) fn acked(&self, n: usize) {
        self.counters.acked.fetch_add(as_u64(n), Ordering::Relaxed);
    }

    pub(crate) fn set_connected(&self, connected: bool) {
        self.counters.connected.store(connected, Ordering::Relaxed);
    }

    /// The external source lost its broker: not connected any more, and one reconnect
    /// counted when it had been connected.
    pub(crate) fn broker_connection_lost(&self) {
        if self.counters.connected.swap(false, Ordering::Relaxed) {
            self.counters.reconnects.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The external source met a delivery over its packet limit.
    pub(crate) fn broker_oversized_packet(&self) {
        self.counters
            .broker_oversized
            .fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn connection_opened(&self) {
        self.counters.connections.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn connection_closed(&self) {
        self.counters.connections.fetch_sub(1, Ordering::Relaxed);
    }

    /// The built-in endpoint keeps at most `n` device connections open.
    pub(crate) fn set_connection_cap(&self, n: usize) {
        self.counters
            .connections_max
            .store(as_u64(n), Ordering::Relaxed);
    }

    /// A device connection was closed at once: the cap was reached.
    pub(crate) fn connection_refused(&self) {
        self.counters
            .connections_refused
            .fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn commit_failed(&self) {
        self.counters.commit_errors.fetch_add(1, Ordering::Relaxed);
    }
}

fn get_u64(a: &AtomicU64) -> u64 {
    a.load(Ordering::Relaxed)
}

/// A reason slot's value (a poisoned lock only means a writer panicked mid-copy).
fn held(slot: &Mutex<Option<String>>) -> Option<String> {
    slot.lock().unwrap_or_else(|e| e.into_inner()).clone()
}

fn set_held(slot: &Mutex<Option<String>>, why: Option<String>) {
    *slot.lock().unwrap_or_else(|e| e.into_inner()) = why;
}

pub(crate) fn metric_header(out: &mut String, name: &str, help: &str, kind: &str) {
    let _ = writeln!(out, "# HELP fleetpulse_ingest_{name} {help}");
    let _ = writeln!(out, "# TYPE fleetpulse_ingest_{name} {kind}");
}

fn as_u64(n: usize) -> u64 {
    u64::try_from(n).unwrap_or(u64::MAX)
}

/// One counter per rejection reason.
#[derive(Debug)]
struct RejectCounters(Vec<AtomicU64>);

impl Default for RejectCounters {
    fn default() -> Self {
        Self(
            RejectReason::ALL
                .iter()
                .map(|_| AtomicU64::new(0))
                .collect(),
        )
    }
}

impl RejectCounters {
    fn add(&self, reason: RejectReason, n: u64) {
        if let Some(i) = RejectReason::ALL.iter().position(|r| *r == reason) {
            self.0[i].fetch_add(n, Ordering::Relaxed);
        }
    }

    fn snapshot(&self) -> BTreeMap<RejectReason, u64> {
        RejectReason::ALL
            .iter()
            .zip(&self.0)
            .map(|(r, c)| (*r, c.load(Ordering::Relaxed)))
            .filter(|(_, n)| *n > 0)
            .collect()
    }
}

const BATCH_BUCKETS: usize = 7;
const BATCH_BOUNDS: [u64; BATCH_BUCKETS] = [1, 10, 50, 100, 500, 1_000, 5_000];
const LATENCY_BUCKETS: usize = 12;
const MICROS_PER_SECOND: u64 = 1_000_000;
/// Commit latency bucket bounds in microseconds (1 ms … 10 s).
const LATENCY_BOUNDS_US: [u64; LATENCY_BUCKETS] = [
    1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000, 1_000_000, 2_500_000,
    10_000_000,
];

/// A fixed-bucket histogram of integer observations (cumulative when rendered).
#[derive(Debug)]
struct Histogram<const N: usize> {
    /// Observations at or below each bound and above the previous one; what lies above
    /// the last bound is only in `count` (the `+Inf` bucket).
    buckets: [AtomicU64; N],
    count: AtomicU64,
    sum: AtomicU64,
}

impl<const N: usize> Default for Histogram<N> {
    fn default() -> Self {
        Self {
            buckets: std::array::from_fn(|_| AtomicU64::new(0)),
            count: AtomicU64::new(0),
            sum: AtomicU64::new(0),
        }
    }
}

impl<const N: usize> Histogram<N> {
    fn observe(&self, value: u64, bounds: &[u64; N]) {
        if let Some(i) = bounds.iter().position(|b| value <= *b) {
            self.buckets[i].fetch_add(1, Ordering::Relaxed);
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum.fetch_add(value, Ordering::Relaxed);
    }

    /// Renders the bounds and the sum divided by `per_unit`, so a histogram kept in
    /// microseconds is shown in seconds (`per_unit` 1 000 000) and a count as it is (1).
    fn write(&self, out: &mut String, name: &str, help: &str, bounds: &[u64; N], per_unit: u64) {
        let scaled = |v: u64| v as f64 / per_unit as f64;
        metric_header(out, name, help, "histogram");
        let mut cumulative = 0;
        for (bucket, bound) in self.buckets.iter().zip(bounds) {
            cumulative += bucket.load(Ordering::Relaxed);
            let le = scaled(*bound);
            let _ = writeln!(
                out,
                "fleetpulse_ingest_{name}_bucket{{le=\"{le}\"}} {cumulative}"
            );
        }
        let count = self.count.load(Ordering::Relaxed);
        let _ = writeln!(
            out,
            "fleetpulse_ingest_{name}_bucket{{le=\"+Inf\"}} {count}"
        );
        let sum = scaled(self.sum.load(Ordering::Relaxed));
        let _ = writeln!(out, "fleetpulse_ingest_{name}_sum {sum}");
        let _ = writeln!(out, "fleetpulse_ingest_{name}_count {count}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prometheus_text_has_cumulative_buckets_and_every_reason() {
        let stats = IngestStats::default();
        let reasons: BTreeMap<RejectReason, usize> = [
            (RejectReason::MalformedJson, 2),
            (RejectReason::UnknownDevice, 1),
        ]
        .into_iter()
        .collect();
        stats.batch_committed(12, 9, 1, &reasons, 1, Duration::from_millis(3));
        stats.batch_committed(1, 1, 0, &BTreeMap::new(), 0, Duration::from_secs(20));
        stats.message_received();
        let mut out = String::new();
        stats.write_prometheus(&mut out);
        for line in [
            "fleetpulse_ingest_readings_stored_total 10",
            "fleetpulse_ingest_dead_lettered_total 3",
            "fleetpulse_ingest_dead_letter_repeats_total 1",
            "fleetpulse_ingest_rejected_total{reason=\"malformed_json\"} 2",
            "fleetpulse_ingest_rejected_total{reason=\"unknown_device\"} 1",
            "fleetpulse_ingest_rejected_total{reason=\"timestamp_skew\"} 0",
            "fleetpulse_ingest_batch_entries_bucket{le=\"1\"} 1",
            "fleetpulse_ingest_batch_entries_bucket{le=\"10\"} 1",
            "fleetpulse_ingest_batch_entries_bucket{le=\"50\"} 2",
            "fleetpulse_ingest_batch_entries_bucket{le=\"+Inf\"} 2",
            "fleetpulse_ingest_batch_entries_sum 13",
            "fleetpulse_ingest_commit_seconds_bucket{le=\"0.0025\"} 0",
            "fleetpulse_ingest_commit_seconds_bucket{le=\"0.005\"} 1",
            "fleetpulse_ingest_commit_seconds_bucket{le=\"10\"} 1",
            "fleetpulse_ingest_commit_seconds_bucket{le=\"+Inf\"} 2",
            "fleetpulse_ingest_commit_seconds_sum 20.003",
            "fleetpulse_ingest_received_messages_total 1",
            "# TYPE fleetpulse_ingest_commit_seconds histogram",
        ] {
            assert!(out.lines().any(|l| l == line), "missing {line:?} in\n{out}");
        }
        assert_eq!(
            out.lines()
                .filter(|l| l.starts_with("fleetpulse_ingest_rejected_total{"))
                .count(),
            RejectReason::ALL.len()
        );
    }
}
