//! Counters of the ingest pipeline: cheap atomics behind a cloneable handle.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

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
    acked: AtomicU64,
    batches: AtomicU64,
    commit_errors: AtomicU64,
    connected: AtomicBool,
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
    /// Dead letters committed (including the store's unknown-device refusals).
    pub dead_lettered: u64,
    /// Acks run after their batch committed.
    pub acked: u64,
    /// Batches committed.
    pub batches: u64,
    /// Failed commit attempts (each one retried).
    pub commit_errors: u64,
    /// Whether the source is taking deliveries: the built-in endpoint is listening, or
    /// the external source is connected to its broker with its subscriptions granted.
    pub connected: bool,
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
            acked: get(&c.acked),
            batches: get(&c.batches),
            commit_errors: get(&c.commit_errors),
            connected: c.connected.load(Ordering::Relaxed),
        }
    }

    pub(crate) fn message_received(&self) {
        self.counters
            .received_messages
            .fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn batch_committed(&self, stored: usize, duplicates: usize, dead_lettered: usize) {
        let c = &self.counters;
        c.readings_stored
            .fetch_add(as_u64(stored), Ordering::Relaxed);
        c.duplicates
            .fetch_add(as_u64(duplicates), Ordering::Relaxed);
        c.dead_lettered
            .fetch_add(as_u64(dead_lettered), Ordering::Relaxed);
        c.batches.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn acked(&self, n: usize) {
        self.counters.acked.fetch_add(as_u64(n), Ordering::Relaxed);
    }

    pub(crate) fn set_connected(&self, connected: bool) {
        self.counters.connected.store(connected, Ordering::Relaxed);
    }

    pub(crate) fn commit_failed(&self) {
        self.counters.commit_errors.fetch_add(1, Ordering::Relaxed);
    }
}

fn as_u64(n: usize) -> u64 {
    u64::try_from(n).unwrap_or(u64::MAX)
}
