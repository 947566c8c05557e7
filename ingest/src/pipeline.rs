//! The pipeline between the sources and the store: batch, commit, then ack.
//!
//! Sources [`PipelineHandle::submit`] one [`Inbound`] per PUBLISH over a bounded channel:
//! when the pipeline is behind, `submit` waits, and a waiting source stops reading its
//! socket, so backpressure reaches the device (or the broker) through TCP instead of
//! growing a queue here. The pipeline gathers items into a batch until the
//! [`BatchPolicy`] says it is full (entries, bytes) or old enough (linger), commits it
//! with one [`Store::commit_batch`] call, and only after that call returned `Ok` runs the
//! batch's acks, in arrival order. A failed commit keeps the batch and retries with
//! exponential backoff, forever: nothing is acked that is not stored, so a crash at any
//! point means redelivery, which (serial, seq) dedupe makes harmless.
//!
//! With a time-series sink the same commit also appends the batch's new readings to the
//! sink spool ([`crate::sink`]), so an ack means "stored and spooled"; while the spool is
//! full, no commit starts.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use fleetpulse_domain::store::{CommitReport, IngestBatch, NewDeadLetter, Store, StoreError};
use fleetpulse_domain::telemetry::{RejectReason, TelemetryLimits, status_topic, telemetry_topic};
use serde::{Deserialize, Serialize};
use tokio::sync::{OwnedSemaphorePermit, mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::{debug, error, warn};

use crate::decode::Decoded;
use crate::journal::{
    Journal, JournalConfig, JournalReader, JournalWriter, Shared as JournalShared,
};
use crate::sink::SpoolGate;
use crate::stats::IngestStats;

/// Runs once the message it belongs to is durably stored: queues a PUBACK, acks a
/// broker delivery. It runs on the pipeline task, so it must not block or wait: hand
/// the work to another task (a channel send, an [`AckQueue`]) and return.
pub struct Ack(AckKind);

enum AckKind {
    Run(Box<dyn FnOnce() + Send>),
    Queued(Arc<dyn AckQueue>, QueuedAck),
}

impl Ack {
    pub fn new(f: impl FnOnce() + Send + 'static) -> Self {
        Self(AckKind::Run(Box::new(f)))
    }

    /// An ack for a consumer that is cheaper in bulk (the built-in endpoint's PUBACK
    /// writer: one socket write for all of a connection's PUBACKs in a batch). The
    /// pipeline stages every queued ack of a batch first and flushes each queue once.
    pub fn queued(queue: Arc<dyn AckQueue>, ack: QueuedAck) -> Self {
        Self(AckKind::Queued(queue, ack))
    }
}

/// Where [`Ack::queued`] acks go: staged one by one without waking the consumer, then
/// flushed once per batch. Both run on the pipeline task: they must not block.
pub trait AckQueue: Send + Sync {
    /// Takes one ack. `true` when the queue held none before, i.e. it needs a
    /// [`flush`](Self::flush) for this one.
    fn stage(&self, ack: QueuedAck) -> bool;
    /// Wakes the consumer for what was staged.
    fn flush(&self);
}

/// A queued ack: the packet id it acknowledges, and the flow-control permit the
/// message held (returned once the ack is out, or when the ack is dropped unrun).
#[derive(Debug)]
pub struct QueuedAck {
    pub packet_id: u16,
    pub permit: OwnedSemaphorePermit,
}

/// Runs a batch's acks in arrival order: direct ones at once, queued ones staged and
/// each queue flushed once at the end.
fn run_acks(acks: Vec<Ack>) {
    let mut to_flush: Vec<Arc<dyn AckQueue>> = Vec::new();
    for ack in acks {
        match ack.0 {
            AckKind::Run(f) => f(),
            AckKind::Queued(queue, ack) => {
                if queue.stage(ack) {
                    to_flush.push(queue);
                }
            }
        }
    }
    for queue in to_flush {
        queue.flush();
    }
}

impl fmt::Debug for Ack {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Ack(..)")
    }
}

/// One PUBLISH for the pipeline: its decoded contents and, when the sender waits for
/// one, its ack. An item without ack (QoS 0, a last will) is stored all the same.
#[derive(Debug)]
pub struct Inbound {
    pub decoded: Decoded,
    pub ack: Option<Ack>,
}

impl Inbound {
    pub fn new(decoded: Decoded, ack: Option<Ack>) -> Self {
        Self { decoded, ack }
    }
}

/// One entry of the queue between the sources and the pipeline.
#[derive(Debug)]
enum Submission {
    /// Boxed so that a queue slot stays small.
    One(Box<Inbound>),
    /// Kept together, in order, in one batch.
    Many(Vec<Inbound>),
}

/// When a batch is committed: whichever limit is reached first. Bigger batches mean fewer
/// transactions (higher throughput) and more memory; a longer linger means fewer, fuller
/// batches at low rates and a later PUBACK for every message.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BatchPolicy {
    /// Commit once the batch holds this many entries (readings, dead letters and status
    /// updates together). Default 8 000: with thousands of devices each batch rewrites
    /// the pages of their latest state and rollups, so fewer, larger batches write far
    /// less (see `docs/benchmarks.md`). One message is never split, so a batch can
    /// exceed this by less than one backlog.
    #[serde(default = "default_max_readings")]
    pub max_readings: usize,
    /// Commit once the batch's payloads add up to this many bytes. Default 4 MiB.
    #[serde(default = "default_max_bytes")]
    pub max_bytes: usize,
    /// Commit at the latest this long after the batch's first message arrived, in
    /// milliseconds (`linger_ms`). Default 20 ms: the most a PUBACK waits for company.
    #[serde(
        rename = "linger_ms",
        with = "crate::duration::millis",
        default = "default_linger"
    )]
    pub linger: Duration,
}

const fn default_max_readings() -> usize {
    8_000
}
const fn default_max_bytes() -> usize {
    4 * 1024 * 1024
}
const fn default_linger() -> Duration {
    Duration::from_millis(20)
}

impl Default for BatchPolicy {
    fn default() -> Self {
        Self {
            max_readings: default_max_readings(),
            max_bytes: default_max_bytes(),
            linger: default_linger(),
        }
    }
}

/// How a failed commit is retried: the same batch again after a pause that doubles each
/// time up to a cap, for as long as it takes. Nothing is acked meanwhile, and the full
/// queue holds the sources back.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetryPolicy {
    /// Pause before the first retry, in milliseconds (`initial_backoff_ms`). Default 100.
    #[serde(
        rename = "initial_backoff_ms",
        with = "crate::duration::millis",
        default = "default_initial_backoff"
    )]
    pub initial_backoff: Duration,
    /// Longest pause between retries, in milliseconds (`max_backoff_ms`). Default 5 000.
    #[serde(
        rename = "max_backoff_ms",
        with = "crate::duration::millis",
        default = "default_max_backoff"
    )]
    pub max_backoff: Duration,
}

const fn default_initial_backoff() -> Duration {
    Duration::from_millis(100)
}
const fn default_max_backoff() -> Duration {
    Duration::from_secs(5)
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            initial_backoff: default_initial_backoff(),
            max_backoff: default_max_backoff(),
        }
    }
}

/// Configuration of the ingest pipeline (section `ingest`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PipelineConfig {
    /// When a batch is committed.
    #[serde(default)]
    pub batch: BatchPolicy,
    /// How a failed commit is retried.
    #[serde(default)]
    pub retry: RetryPolicy,
    /// Entries the queue between sources and pipeline holds before `submit` waits: one
    /// message, or what one socket read of a built-in endpoint connection brought
    /// (bounded by the connection's in-flight limit for QoS 1). Default 4 096 (enough
    /// to gather the next batch while one commits).
    #[serde(default = "default_queue_capacity")]
    pub queue_capacity: usize,
    /// What a message must satisfy to be stored (telemetry contract v1); both sources
    /// decode with these.
    #[serde(default)]
    pub limits: TelemetryLimits,
    /// The ingest journal (`[ingest.journal]`): acks once a batch is synced there, the
    /// store takes it in large transactions.
    #[serde(default)]
    pub journal: JournalConfig,
    /// Seconds a shutdown waits for the pipeline to commit and ack what it accepted (and,
    /// with the journal, for the store to take every journal record) before it stops
    /// without them. Default 30. Stopping then loses nothing: what was acked is in the
    /// journal (applied at the next start), and what was not acked is sent again by the
    /// devices or the broker. It bounds a shutdown while the disk is full or the store
    /// does not answer, when the drain would otherwise wait for as long as that lasts.
    #[serde(default = "default_drain_timeout_s")]
    pub drain_timeout_s: u64,
}

const fn default_queue_capacity() -> usize {
    4_096
}
const fn default_drain_timeout_s() -> u64 {
    30
}

impl Default for PipelineConfig {
    fn default() -> Self {
        Self {
            batch: BatchPolicy::default(),
            retry: RetryPolicy::default(),
            queue_capacity: default_queue_capacity(),
            limits: TelemetryLimits::default(),
            journal: JournalConfig::default(),
            drain_timeout_s: default_drain_timeout_s(),
        }
    }
}

/// The pipeline no longer accepts items (it was closed). The item was dropped unacked:
/// its sender redelivers it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the ingest pipeline is closed")]
pub struct PipelineClosed;

/// The sources' side of the pipeline. Cheap to clone.
#[derive(Clone, Debug)]
pub struct PipelineHandle {
    tx: mpsc::Sender<Submission>,
    close: Arc<watch::Sender<bool>>,
    done: watch::Receiver<bool>,
    stats: IngestStats,
    limits: Arc<TelemetryLimits>,
    /// The last journal record the store committed (`None` without a journal).
    applied: Option<watch::Receiver<u64>>,
    /// The last record on disk when the journal was opened: applied before sources start.
    recovered_through: u64,
    /// The process's clock: sources stamp and check readings with its time.
    clock: fleetpulse_domain::Clock,
}

impl PipelineHandle {
    /// Hands one message to the pipeline, waiting while the queue is full
    /// (backpressure). `Err` once the pipeline is closed.
    pub async fn submit(&self, item: Inbound) -> Result<(), PipelineClosed> {
        self.tx
            .send(Submission::One(Box::new(item)))
            .await
            .map_err(|_| PipelineClosed)
    }

    /// Hands several messages to the pipeline as one queue entry, kept together and in
    /// order in one batch: what one socket read of a device connection brought, so that
    /// its acks are written together. Waits while the queue is full, like
    /// [`submit`](Self::submit).
    pub async fn submit_all(&self, items: Vec<Inbound>) -> Result<(), PipelineClosed> {
        if items.is_empty() {
            return Ok(());
        }
        self.tx
            .send(Submission::Many(items))
            .await
            .map_err(|_| PipelineClosed)
    }

    /// Stops accepting items. Everything accepted before is still committed and acked;
    /// [`drained`](Self::drained) says when that is done.
    pub fn close(&self) {
        self.close.send_replace(true);
    }

    /// Waits until the pipeline task has committed and acked everything it accepted and
    /// ended (after [`close`](Self::close), or once every handle is dropped).
    pub async fn drained(&self) {
        let mut done = self.done.clone();
        // An error means the task is gone without saying so (dropped before it ran):
        // nothing more will be committed either way.
        let _ = done.wait_for(|done| *done).await;
    }

    pub fn stats(&self) -> &IngestStats {
        &self.stats
    }

    /// Waits until every record the journal held when it was opened is in the store
    /// (at once without a journal): a restarted process applies what it acked before
    /// the crash before its sources take anything new.
    pub async fn recovered(&self) {
        let through = self.recovered_through;
        if let Some(mut applied) = self.applied.clone() {
            let _ = applied.wait_for(|a| *a >= through).await;
        }
    }

    /// The limits both sources decode with.
    pub fn limits(&self) -> &TelemetryLimits {
        &self.limits
    }

    /// The clock's current time: when a message was received, and what its timestamp is
    /// checked against.
    pub fn now(&self) -> chrono::DateTime<chrono::Utc> {
        self.clock.now()
    }

    /// Runs the sources on `clock` (the process's); set before the handle is cloned.
    pub fn set_clock(&mut self, clock: fleetpulse_domain::Clock) {
        self.clock = clock;
    }
}

/// The pipeline task. Build it with [`Pipeline::new`] and drive it with
/// [`Pipeline::run`] (or use [`Pipeline::spawn`]).
pub struct Pipeline {
    rx: mpsc::Receiver<Submission>,
    store: Arc<dyn Store>,
    batch: BatchPolicy,
    retry: RetryPolicy,
    stats: IngestStats,
    close: watch::Receiver<bool>,
    done: watch::Sender<bool>,
    spool: Option<SpoolGate>,
    journal: Option<Journal>,
}

impl Pipeline {
    pub fn new(store: Arc<dyn Store>, config: PipelineConfig) -> (Pipeline, PipelineHandle) {
        let (tx, rx) = mpsc::channel(config.queue_capacity.max(1));
        let (close_tx, close_rx) = watch::channel(false);
        let (done_tx, done_rx) = watch::channel(false);
        let stats = IngestStats::default();
        let handle = PipelineHandle {
            tx,
            close: Arc::new(close_tx),
            done: done_rx,
            stats: stats.clone(),
            limits: Arc::new(config.limits),
            applied: None,
            recovered_through: 0,
            clock: fleetpulse_domain::Clock::Wall,
        };
        let pipeline = Pipeline {
            rx,
            store,
            batch: config.batch,
            retry: config.retry,
            stats,
            close: close_rx,
            done: done_tx,
            spool: None,
            journal: None,
        };
        (pipeline, handle)
    }

    /// With the ingest journal: a batch is acked once its record is synced to the
    /// journal, and an applier moves records into the store in large transactions
    /// (see [`crate::journal`]). Records left from before a restart are applied first;
    /// `handle` learns to wait for that ([`PipelineHandle::recovered`]).
    pub fn with_journal(mut self, journal: Journal, handle: &mut PipelineHandle) -> Self {
        handle.recovered_through = journal.shared.durable_through();
        handle.applied = Some(journal.shared.subscribe_applied());
        self.stats.journal_attached(journal.shared.clone());
        self.journal = Some(journal);
        self
    }

    /// With a time-series sink: every commit reports what it spooled to `gate`, and no
    /// commit starts while the spool is full (the queue fills and the sources stop
    /// reading: backpressure instead of a dropped reading).
    pub fn with_spool_gate(mut self, gate: SpoolGate) -> Self {
        self.spool = Some(gate);
        self
    }

    /// Builds the pipeline and spawns its task on the current runtime.
    pub fn spawn(
        store: Arc<dyn Store>,
        config: PipelineConfig,
    ) -> (PipelineHandle, JoinHandle<()>) {
        let (pipeline, handle) = Pipeline::new(store, config);
        (handle, tokio::spawn(pipeline.run()))
    }

    /// Runs until the pipeline is closed and everything it accepted is committed and
    /// acked.
    pub async fn run(mut self) {
        // The committer commits batch N (and runs its acks) while this task gathers
        // batch N + 1: decoding, socket reads and the next batch's linger overlap the
        // commit instead of waiting for it. Batches are committed and acked in the order
        // they were cut, so acks stay in arrival order. At most three batches are held:
        // one committing, one waiting for the committer, one being gathered.
        let (to_commit, mut committing) = mpsc::channel::<PendingBatch>(1);
        let (journal_parts, applier) = match self.journal.take() {
            Some(journal) => {
                let (finished_tx, finished_rx) = watch::channel(false);
                let applier = Applier {
                    store: self.store.clone(),
                    retry: self.retry.clone(),
                    stats: self.stats.clone(),
                    spool: self.spool.clone(),
                    shared: journal.shared.clone(),
                    max_entries: journal.config.apply_max_entries.max(1),
                };
                let task = tokio::spawn(applier.run(journal.reader, finished_rx));
                (
                    Some((journal.writer, journal.shared, finished_tx)),
                    Some(task),
                )
            }
            None => (None, None),
        };
        let (writer, journal, finished) = match journal_parts {
            Some((writer, shared, finished)) => (Some(writer), Some(shared), Some(finished)),
            None => (None, None, None),
        };
        let mut committer = Committer {
            store: self.store.clone(),
            retry: self.retry.clone(),
            stats: self.stats.clone(),
            spool: self.spool.clone(),
            journal,
            writer,
        };
        let committer = tokio::spawn(async move {
            while let Some(pending) = committing.recv().await {
                committer.commit(pending).await;
            }
            // Everything accepted is in the journal: the applier may finish once it
            // applied the last record.
            if let Some(finished) = finished {
                finished.send_replace(true);
            }
        });
        let mut closing = false;
        loop {
            let first = tokio::select! {
                item = self.rx.recv() => item,
                changed = self.close.changed(), if !closing => {
                    closing = true;
                    self.stop_accepting(changed.is_err());
                    continue;
                }
            };
            let Some(first) = first else { break };
            let mut pending = PendingBatch::default();
            self.accept(&mut pending, first);
            let deadline = Instant::now() + self.batch.linger;
            while !pending.is_full(&self.batch) {
                tokio::select! {
                    biased;
                    item = self.rx.recv() => match item {
                        Some(item) => self.accept(&mut pending, item),
                        None => break,
                    },
                    changed = self.close.changed(), if !closing => {
                        closing = true;
                        self.stop_accepting(changed.is_err());
                    }
                    () = tokio::time::sleep_until(deadline) => break,
                }
            }
            if to_commit.send(pending).await.is_err() {
                error!(
                    "the ingest committer stopped; the batch is not acked and will be redelivered"
                );
                break;
            }
        }
        drop(to_commit);
        if let Err(err) = committer.await {
            error!(error = %err, "the ingest committer failed; unacked messages will be redelivered");
        }
        if let Some(applier) = applier
            && let Err(err) = applier.await
        {
            error!(error = %err, "the ingest journal applier failed; the journal is applied at the next start");
        }
        debug!("ingest pipeline drained");
        self.done.send_replace(true);
    }

    fn stop_accepting(&mut self, handles_gone: bool) {
        if !handles_gone {
            debug!("ingest pipeline closing: draining what was accepted");
        }
        self.rx.close();
    }

    fn accept(&self, pending: &mut PendingBatch, submission: Submission) {
        let mut take = |item| {
            self.stats.message_received();
            pending.push(item);
        };
        match submission {
            Submission::One(item) => take(*item),
            Submission::Many(items) => items.into_iter().for_each(take),
        }
    }
}

/// Commits cut batches one at a time, in order, on its own task: to the journal when
/// there is one, else to the store.
struct Committer {
    store: Arc<dyn Store>,
    retry: RetryPolicy,
    stats: IngestStats,
    spool: Option<SpoolGate>,
    journal: Option<Arc<JournalShared>>,
    writer: Option<JournalWriter>,
}

impl Committer {
    /// Makes the batch durable (retrying until it is), then runs its acks in arrival
    /// order.
    async fn commit(&mut self, pending: PendingBatch) {
        if self.journal.is_some() {
            return self.journal_and_ack(pending).await;
        }
        let PendingBatch {
            batch,
            acks,
            entries,
            ..
        } = pending;
        if !batch.is_empty() {
            StoreCommit {
                store: self.store.as_ref(),
                retry: &self.retry,
                stats: &self.stats,
                spool: self.spool.as_ref(),
                held: "the batch is held and nothing is acked until it is stored",
            }
            .store(Arc::new(batch), entries)
            .await;
        }
        self.run_acks(acks);
    }

    /// Runs the acks; the sources count them once they are written (`acked_total`).
    fn run_acks(&self, acks: Vec<Ack>) {
        run_acks(acks);
    }

    /// Appends the batch to the journal and syncs it (retrying until that works), then
    /// acks. Waits first while the journal holds its limit of unapplied records.
    async fn journal_and_ack(&mut self, pending: PendingBatch) {
        let PendingBatch {
            batch,
            acks,
            entries,
            ..
        } = pending;
        let Some(shared) = self.journal.clone() else {
            return;
        };
        if !batch.is_empty() {
            shared.wait_for_room().await;
            let batch = Arc::new(batch);
            let mut backoff = self.retry.initial_backoff;
            loop {
                let Some(mut writer) = self.writer.take() else {
                    error!("the ingest journal writer is gone; nothing more is acked");
                    return;
                };
                let shared_batch = batch.clone();
                let joined = tokio::task::spawn_blocking(move || {
                    let result = writer.append(&shared_batch);
                    (writer, result)
                })
                .await;
                let (writer, result) = match joined {
                    Ok(done) => done,
                    Err(err) => {
                        error!(error = %err, "the ingest journal append task failed; nothing more is acked");
                        return;
                    }
                };
                self.writer = Some(writer);
                match result {
                    Ok((number, record_bytes)) => {
                        shared.written(number, record_bytes);
                        self.stats.journal_written();
                        self.stats.journal_held(None);
                        break;
                    }
                    Err(err) => {
                        self.stats.commit_failed();
                        self.stats.journal_held(Some(format!(
                            "ingest journal appends fail ({err}); nothing is acknowledged until one succeeds"
                        )));
                        let retry_in_ms = u64::try_from(backoff.as_millis()).unwrap_or(u64::MAX);
                        error!(error = %err, entries, retry_in_ms,
                            "ingest journal append failed; the batch is held and nothing is acked until it is written");
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(self.retry.max_backoff);
                    }
                }
            }
        }
        self.run_acks(acks);
    }
}

/// Moves journal records into the store in large transactions, in order, recording the
/// last applied record in the same transaction.
struct Applier {
    store: Arc<dyn Store>,
    retry: RetryPolicy,
    stats: IngestStats,
    spool: Option<SpoolGate>,
    shared: Arc<JournalShared>,
    max_entries: usize,
}

impl Applier {
    /// Runs until `finished` says no more records come and every record is applied.
    /// Reading and decoding the next records overlaps the commit of the previous ones.
    async fn run(self, reader: JournalReader, finished: watch::Receiver<bool>) {
        let (to_apply, mut applying) = mpsc::channel::<(IngestBatch, u64, u64)>(1);
        let read_task = tokio::spawn(read_records(
            reader,
            self.shared.clone(),
            self.max_entries,
            finished,
            to_apply,
        ));
        while let Some((batch, last, bytes)) = applying.recv().await {
            self.apply(batch).await;
            self.shared.applied(last, bytes);
        }
        if let Err(err) = read_task.await {
            error!(error = %err, "the ingest journal reader task failed; the journal is applied at the next start");
        }
        debug!("ingest journal applied");
    }

    /// Commits one batch of records, retrying until it is stored; an entry the store
    /// refuses for good is dead-lettered instead of holding the rest.
    async fn apply(&self, batch: IngestBatch) {
        let entries = batch.readings.len() + batch.dead_letters.len() + batch.statuses.len();
        StoreCommit {
            store: self.store.as_ref(),
            retry: &self.retry,
            stats: &self.stats,
            spool: self.spool.as_ref(),
            held: "the journal holds the records and ingest stops once it is full",
        }
        .store(Arc::new(batch), entries)
        .await;
    }
}

/// One entry of a batch the store may refuse on its own: a status message or a reading
/// (by index). Dead letters and connection ends are the store's own bookkeeping.
#[derive(Clone, Copy, Debug)]
enum Entry {
    Status(usize),
    Reading(usize),
}

/// Commits batches to the store: retries what may pass later (busy, disk full) for as
/// long as it takes, and isolates what never will.
struct StoreCommit<'a> {
    store: &'a dyn Store,
    retry: &'a RetryPolicy,
    stats: &'a IngestStats,
    spool: Option<&'a SpoolGate>,
    /// What waits meanwhile, for the operator (log and `/health`).
    held: &'static str,
}

impl StoreCommit<'_> {
    /// Stores `batch`. When the store refuses it for good (an error retrying cannot
    /// fix), the batch's entries are committed in smaller and smaller parts until the
    /// refused ones are found; those are dead-lettered with the store's error (reason
    /// `store_rejected`) and the rest is stored, so one bad entry never blocks the ones
    /// behind it.
    async fn store(&self, batch: Arc<IngestBatch>, entries: usize) {
        let Err(err) = self.commit(batch.clone(), entries).await else {
            return;
        };
        error!(error = %err, entries,
            "the store refuses a batch for good; committing its entries in smaller parts to find the ones it cannot take");
        self.isolate(&batch).await;
    }

    /// Commits `batch`, retrying with exponential backoff while the error is retriable
    /// (waiting for room in the sink spool first), and counts it. Returns the first
    /// error retrying cannot fix.
    async fn commit(&self, batch: Arc<IngestBatch>, entries: usize) -> Result<(), StoreError> {
        if let Some(gate) = self.spool {
            gate.room().await;
        }
        let mut backoff = self.retry.initial_backoff;
        let started = Instant::now();
        loop {
            // Shared, not moved: a retry needs the batch again.
            match self.store.commit_shared(batch.clone()).await {
                Ok(report) => {
                    self.stats.store_held(None);
                    self.committed(&report, entries, &batch, started);
                    return Ok(());
                }
                Err(err) if err.retriable() => {
                    self.stats.commit_failed();
                    self.stats.store_held(Some(format!(
                        "store commits fail ({err}) and are retried; {}",
                        self.held
                    )));
                    let retry_in_ms = u64::try_from(backoff.as_millis()).unwrap_or(u64::MAX);
                    warn!(error = %err, entries, retry_in_ms, "batch commit failed; retrying");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(self.retry.max_backoff);
                }
                Err(err) => {
                    self.stats.commit_failed();
                    return Err(err);
                }
            }
        }
    }

    fn committed(
        &self,
        report: &CommitReport,
        entries: usize,
        batch: &IngestBatch,
        started: Instant,
    ) {
        if let Some(gate) = self.spool {
            gate.added(report.spooled_bytes);
        }
        self.stats.batch_committed(
            entries,
            report.stored,
            report.duplicates,
            &report.dead_letter_reasons,
            report.dead_letter_repeats,
            started.elapsed(),
        );
        self.stats.orders_changed(report.orders.len());
        debug!(
            entries,
            stored = report.stored,
            duplicates = report.duplicates,
            dead_lettered = report.dead_lettered,
            dead_letter_repeats = report.dead_letter_repeats,
            orders = report.orders.len(),
            journal_through = ?batch.journal_through,
            "batch committed"
        );
    }

    /// Finds the entries the store refuses by committing parts of the batch (halving a
    /// refused part down to single entries), then commits the batch's dead letters,
    /// the refused entries as dead letters, its connection ends and its journal
    /// position together, last: a crash before that commit applies the batch again,
    /// which the (serial, seq) dedupe makes harmless and which dead-letters nothing
    /// twice. When the store refuses even that commit, the fault is not in the entries:
    /// the whole batch is tried again after a pause, for as long as it takes.
    async fn isolate(&self, batch: &IngestBatch) {
        let all: Vec<Entry> = (0..batch.statuses.len())
            .map(Entry::Status)
            .chain((0..batch.readings.len()).map(Entry::Reading))
            .collect();
        loop {
            let mut refused: Vec<(Entry, StoreError)> = Vec::new();
            let mut parts = vec![all.as_slice()];
            while let Some(part) = parts.pop() {
                if part.is_empty() {
                    continue;
                }
                let Err(err) = self
                    .commit(Arc::new(part_of(batch, part)), part.len())
                    .await
                else {
                    continue;
                };
                if let [entry] = part {
                    warn!(error = %err, entry = ?entry, "the store refuses a journal entry; it is dead-lettered");
                    refused.push((*entry, err));
                } else {
                    let (first, second) = part.split_at(part.len() / 2);
                    parts.push(second);
                    parts.push(first);
                }
            }
            let last = batch_end(batch, &refused);
            let closing = last.dead_letters.len() + batch.connection_ends.len();
            match self.commit(Arc::new(last), closing).await {
                Ok(()) => {
                    if let Some((_, err)) = refused.last() {
                        self.stats.store_refused(refused.len(), err.to_string());
                        error!(refused = refused.len(), entries = all.len(), last_error = %err,
                            "journal entries the store refuses were dead-lettered (reason store_rejected); the rest is stored");
                    }
                    return;
                }
                Err(err) => {
                    let retry_in_ms =
                        u64::try_from(self.retry.max_backoff.as_millis()).unwrap_or(u64::MAX);
                    self.stats.store_held(Some(format!(
                        "the store refuses even dead letters ({err}); {}",
                        self.held
                    )));
                    error!(error = %err, retry_in_ms,
                        "the store refuses even the batch's dead letters and journal position: the fault is not in the entries; the batch is tried again");
                    tokio::time::sleep(self.retry.max_backoff).await;
                }
            }
        }
    }
}

/// The entries `part` of `batch`, alone: no dead letters, connection ends or journal
/// position (those go with the last commit of an isolation).
fn part_of(batch: &IngestBatch, part: &[Entry]) -> IngestBatch {
    let mut out = IngestBatch::default();
    for entry in part {
        match *entry {
            Entry::Status(i) => out.statuses.extend(batch.statuses.get(i).cloned()),
            Entry::Reading(i) => out.readings.extend(batch.readings.get(i).cloned()),
        }
    }
    out
}

/// The last commit of an isolation: the batch's dead letters and the refused entries as
/// dead letters, its connection ends (after every reading, as in one commit) and its
/// journal position.
fn batch_end(batch: &IngestBatch, refused: &[(Entry, StoreError)]) -> IngestBatch {
    let mut dead_letters = batch.dead_letters.clone();
    dead_letters.extend(
        refused
            .iter()
            .filter_map(|(entry, err)| refused_entry(batch, *entry, err)),
    );
    IngestBatch {
        dead_letters,
        connection_ends: batch.connection_ends.clone(),
        journal_through: batch.journal_through,
        ..IngestBatch::default()
    }
}

/// The dead letter for an entry the store refused, with the store's error.
fn refused_entry(batch: &IngestBatch, entry: Entry, err: &StoreError) -> Option<NewDeadLetter> {
    match entry {
        Entry::Reading(i) => batch.readings.get(i).map(|r| NewDeadLetter {
            received_at: r.received_at,
            topic: telemetry_topic(&r.serial),
            client_id: r.serial.to_string(),
            reason: RejectReason::StoreRejected,
            detail: format!(
                "the store refused this reading (serial {}, seq {}): {err}",
                r.serial, r.seq
            ),
            payload: r.refused_payload(),
        }),
        Entry::Status(i) => batch.statuses.get(i).map(|st| NewDeadLetter {
            received_at: st.at,
            topic: status_topic(&st.serial),
            client_id: st.serial.to_string(),
            reason: RejectReason::StoreRejected,
            detail: format!(
                "the store refused this status message (serial {}): {err}",
                st.serial
            ),
            payload: st.refused_payload(),
        }),
    }
}

/// Reads durable journal records in order and hands them on in batches of at most
/// `max_entries`, until `finished` says no more records come and all are read. Deletes
/// segments once the store applied them.
async fn read_records(
    mut reader: JournalReader,
    shared: Arc<JournalShared>,
    max_entries: usize,
    mut finished: watch::Receiver<bool>,
    to_apply: mpsc::Sender<(IngestBatch, u64, u64)>,
) {
    let mut durable = shared.subscribe_durable();
    loop {
        let through = *durable.borrow_and_update();
        if reader.position() > through {
            if *finished.borrow() && shared.durable_through() < reader.position() {
                break;
            }
            tokio::select! {
                changed = durable.changed() => if changed.is_err() { break },
                changed = finished.changed() => {
                    // The committer is gone without saying it finished (it failed):
                    // nothing more will be written.
                    if changed.is_err() && !*finished.borrow() {
                        break;
                    }
                }
            }
            continue;
        }
        // Room in the hand-over first: at most one batch waits while one is applied
        // (each is `apply_max_entries` readings in memory).
        let Ok(permit) = to_apply.reserve().await else {
            return;
        };
        let applied_through = shared.applied_through();
        let read = tokio::task::spawn_blocking(move || {
            reader.forget_applied(applied_through);
            let batch = reader.read_batch(through, max_entries);
            (reader, batch)
        })
        .await;
        let (back, batch) = match read {
            Ok(done) => done,
            Err(err) => {
                error!(error = %err, "the ingest journal reader task failed; the journal is applied at the next start");
                return;
            }
        };
        reader = back;
        match batch {
            Ok(Some(read)) => permit.send(read),
            Ok(None) => drop(permit),
            Err(err) => {
                error!(error = %err, "cannot read the ingest journal; applying stops until the next start");
                return;
            }
        }
    }
}

/// A batch being gathered, with the acks of its messages in arrival order.
#[derive(Default)]
struct PendingBatch {
    batch: IngestBatch,
    acks: Vec<Ack>,
    entries: usize,
    bytes: usize,
}

impl PendingBatch {
    fn push(&mut self, item: Inbound) {
        let Inbound { decoded, ack } = item;
        self.entries += decoded.entries();
        self.bytes += decoded.payload_bytes;
        self.batch.readings.extend(decoded.readings);
        self.batch.dead_letters.extend(decoded.dead_letters);
        self.batch.statuses.extend(decoded.status);
        self.batch.connection_ends.extend(decoded.connection_end);
        self.acks.extend(ack);
    }

    fn is_full(&self, policy: &BatchPolicy) -> bool {
        self.entries >= policy.max_readings || self.bytes >= policy.max_bytes
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use chrono::{DateTime, Utc};
    use fleetpulse_domain::Serial;
    use fleetpulse_domain::store::*;
    use fleetpulse_domain::{AlarmEpisode, Order, Reading};
    use tokio::sync::Semaphore;

    use super::*;

    /// A store whose commits can be held back (no permits) or made to fail, and which
    /// records what happened in one log shared with the test's acks.
    struct ControlledStore {
        gate: Semaphore,
        fail_next: AtomicUsize,
        log: Arc<Mutex<Vec<String>>>,
        batch_sizes: Mutex<Vec<usize>>,
    }

    impl ControlledStore {
        fn new(open: bool) -> Arc<Self> {
            Arc::new(Self {
                gate: Semaphore::new(if open { 1_000 } else { 0 }),
                fail_next: AtomicUsize::new(0),
                log: Arc::default(),
                batch_sizes: Mutex::default(),
            })
        }

        fn log(&self) -> Vec<String> {
            self.log.lock().expect("log").clone()
        }

        fn batch_sizes(&self) -> Vec<usize> {
            self.batch_sizes.lock().expect("sizes").clone()
        }

        fn ack(&self, name: &str) -> Option<Ack> {
            let log = Arc::clone(&self.log);
            let name = format!("ack {name}");
            Some(Ack::new(move || log.lock().expect("log").push(name)))
        }
    }

    fn unused<T>() -> Result<T, StoreError> {
        Err(StoreError::Internal("not used by the pipeline".into()))
    }

    #[async_trait::async_trait]
    impl Store for ControlledStore {
        async fn commit_batch(&self, batch: IngestBatch) -> Result<CommitReport, StoreError> {
            self.gate.acquire().await.expect("gate open").forget();
            if self
                .fail_next
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_ok()
            {
                self.log.lock().expect("log").push("commit failed".into());
                return Err(StoreError::Unavailable("disk on fire".into()));
            }
            let n = batch.readings.len() + batch.dead_letters.len() + batch.statuses.len();
            self.batch_sizes.lock().expect("sizes").push(n);
            self.log.lock().expect("log").push(format!("commit {n}"));
            Ok(CommitReport {
                stored: batch.readings.len(),
                dead_lettered: batch.dead_letters.len(),
                ..CommitReport::default()
            })
        }
        async fn register_device(&self, _: NewDevice) -> Result<Device, StoreError> {
            unused()
        }
        async fn device(&self, _: &Serial) -> Result<Option<DeviceDetail>, StoreError> {
            unused()
        }
        async fn list_devices(&self, _: DeviceQuery) -> Result<Page<DeviceSummary>, StoreError> {
            unused()
        }
        async fn readings(&self, _: ReadingQuery) -> Result<Page<StoredReading>, StoreError> {
            unused()
        }
        async fn rollups(
            &self,
            _: &Serial,
            _: DateTime<Utc>,
            _: DateTime<Utc>,
        ) -> Result<Vec<Rollup>, StoreError> {
            unused()
        }
        async fn alarm_episodes(
            &self,
            _: fleetpulse_domain::store::AlarmQuery,
        ) -> Result<Page<AlarmEpisode>, StoreError> {
            unused()
        }
        async fn list_orders(&self, _: OrderQuery) -> Result<Page<Order>, StoreError> {
            unused()
        }
        async fn order(&self, _: i64) -> Result<Option<Order>, StoreError> {
            unused()
        }
        async fn dead_letters(&self, _: DeadLetterQuery) -> Result<Page<DeadLetter>, StoreError> {
            unused()
        }
        async fn delete_readings_before(&self, _: DateTime<Utc>) -> Result<u64, StoreError> {
            unused()
        }
        async fn mark_all_offline(&self, _: DateTime<Utc>) -> Result<u64, StoreError> {
            unused()
        }
        async fn stats(&self) -> Result<StoreStats, StoreError> {
            unused()
        }
        async fn fleet_overview(
            &self,
            _: DateTime<Utc>,
            _: chrono::Duration,
        ) -> Result<FleetOverview, StoreError> {
            unused()
        }
        async fn order_counts_by_day(
            &self,
            _: DateTime<Utc>,
            _: DateTime<Utc>,
        ) -> Result<Vec<DayCount>, StoreError> {
            unused()
        }
    }

    fn reading(seq: u64) -> Reading {
        Reading {
            serial: Serial::parse("OC5-000001").expect("valid"),
            seq,
            ts: Utc::now(),
            received_at: Utc::now(),
            model: None,
            firmware: None,
            alarms: None,
            values: Default::default(),
        }
    }

    fn one_reading(seq: u64, payload_bytes: usize) -> Decoded {
        Decoded {
            readings: vec![reading(seq)],
            payload_bytes,
            ..Decoded::default()
        }
    }

    fn config(max_readings: usize, max_bytes: usize, linger: Duration) -> PipelineConfig {
        PipelineConfig {
            batch: BatchPolicy {
                max_readings,
                max_bytes,
                linger,
            },
            retry: RetryPolicy {
                initial_backoff: Duration::from_millis(5),
                max_backoff: Duration::from_millis(20),
            },
            ..PipelineConfig::default()
        }
    }

    async fn submit(handle: &PipelineHandle, decoded: Decoded, ack: Option<Ack>) {
        handle
            .submit(Inbound::new(decoded, ack))
            .await
            .expect("pipeline open");
    }

    async fn close_and_drain(handle: &PipelineHandle) {
        handle.close();
        tokio::time::timeout(Duration::from_secs(10), handle.drained())
            .await
            .expect("pipeline drains");
    }

    #[tokio::test]
    async fn acks_run_only_after_the_commit_and_in_arrival_order() {
        let store = ControlledStore::new(false);
        let (handle, _task) = Pipeline::spawn(
            store.clone(),
            config(100, 1 << 20, Duration::from_millis(10)),
        );
        for (seq, name) in [(1, "a"), (2, "b"), (3, "c")] {
            submit(&handle, one_reading(seq, 10), store.ack(name)).await;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(
            store.log().is_empty(),
            "nothing may be acked while the commit is held: {:?}",
            store.log()
        );

        store.gate.add_permits(1);
        close_and_drain(&handle).await;

        assert_eq!(store.log(), ["commit 3", "ack a", "ack b", "ack c"]);
        let stats = handle.stats().snapshot();
        assert_eq!((stats.batches, stats.readings_stored), (1, 3));
    }

    /// An [`AckQueue`] that records what was staged and each flush in one log.
    struct LoggingQueue {
        name: &'static str,
        staged: Mutex<Vec<u16>>,
        log: Arc<Mutex<Vec<String>>>,
    }

    impl AckQueue for LoggingQueue {
        fn stage(&self, ack: QueuedAck) -> bool {
            let mut staged = self.staged.lock().expect("staged");
            staged.push(ack.packet_id);
            staged.len() == 1
        }

        fn flush(&self) {
            let staged = std::mem::take(&mut *self.staged.lock().expect("staged"));
            self.log
                .lock()
                .expect("log")
                .push(format!("flush {} {staged:?}", self.name));
        }
    }

    #[tokio::test]
    async fn queued_acks_are_staged_in_order_and_each_queue_flushed_once_per_batch() {
        let log = Arc::new(Mutex::new(Vec::new()));
        let queue = |name| {
            Arc::new(LoggingQueue {
                name,
                staged: Mutex::new(Vec::new()),
                log: log.clone(),
            })
        };
        let (a, b) = (queue("a"), queue("b"));
        let permits = Arc::new(Semaphore::new(10));
        let queued = |queue: &Arc<LoggingQueue>, packet_id| {
            let permit = permits.clone().try_acquire_owned().expect("a permit");
            Ack::queued(queue.clone(), QueuedAck { packet_id, permit })
        };
        let direct = {
            let log = log.clone();
            Ack::new(move || log.lock().expect("log").push("direct".to_owned()))
        };
        run_acks(vec![
            queued(&a, 1),
            queued(&b, 7),
            direct,
            queued(&a, 2),
            queued(&a, 3),
        ]);
        assert_eq!(
            *log.lock().expect("log"),
            ["direct", "flush a [1, 2, 3]", "flush b [7]"]
        );
        // the permits went with the staged acks and were dropped with them
        assert_eq!(permits.available_permits(), 10);
    }

    #[tokio::test]
    async fn a_failed_commit_is_retried_and_nothing_is_acked_until_it_succeeds() {
        let store = ControlledStore::new(true);
        store.fail_next.store(2, Ordering::SeqCst);
        let (handle, _task) = Pipeline::spawn(
            store.clone(),
            config(100, 1 << 20, Duration::from_millis(1)),
        );
        submit(&handle, one_reading(1, 10), store.ack("a")).await;
        close_and_drain(&handle).await;

        assert_eq!(
            store.log(),
            ["commit failed", "commit failed", "commit 1", "ack a"]
        );
        let stats = handle.stats().snapshot();
        // `acked` is counted by the sources, once an ack is written.
        assert_eq!((stats.commit_errors, stats.batches), (2, 1));
    }

    #[tokio::test]
    async fn a_batch_is_cut_at_the_entry_count() {
        let store = ControlledStore::new(false);
        let (handle, _task) =
            Pipeline::spawn(store.clone(), config(3, 1 << 20, Duration::from_secs(3600)));
        for seq in 0..7 {
            submit(&handle, one_reading(seq, 1), None).await;
        }
        store.gate.add_permits(1_000);
        close_and_drain(&handle).await;
        assert_eq!(store.batch_sizes(), [3, 3, 1]);
        assert_eq!(handle.stats().snapshot().received_messages, 7);
    }

    #[tokio::test]
    async fn messages_submitted_together_are_never_split_across_batches() {
        let store = ControlledStore::new(false);
        let (handle, _task) =
            Pipeline::spawn(store.clone(), config(3, 1 << 20, Duration::from_secs(3600)));
        submit(&handle, one_reading(0, 1), store.ack("a")).await;
        let together: Vec<Inbound> = (1..5)
            .zip(["b", "c", "d", "e"])
            .map(|(seq, name)| Inbound::new(one_reading(seq, 1), store.ack(name)))
            .collect();
        handle.submit_all(together).await.expect("pipeline open");
        handle
            .submit_all(Vec::new())
            .await
            .expect("nothing to submit");
        submit(&handle, one_reading(5, 1), store.ack("f")).await;
        store.gate.add_permits(1_000);
        close_and_drain(&handle).await;
        // the batch that reached 3 entries with the group's first ones took the whole group
        assert_eq!(store.batch_sizes(), [5, 1]);
        assert_eq!(
            store.log(),
            [
                "commit 5", "ack a", "ack b", "ack c", "ack d", "ack e", "commit 1", "ack f"
            ]
        );
        assert_eq!(handle.stats().snapshot().received_messages, 6);
    }

    #[tokio::test]
    async fn a_batch_is_cut_at_the_byte_count() {
        let store = ControlledStore::new(false);
        let (handle, _task) =
            Pipeline::spawn(store.clone(), config(1000, 100, Duration::from_secs(3600)));
        for seq in 0..5 {
            submit(&handle, one_reading(seq, 60), None).await;
        }
        store.gate.add_permits(1_000);
        close_and_drain(&handle).await;
        assert_eq!(store.batch_sizes(), [2, 2, 1]);
    }

    #[tokio::test]
    async fn a_lone_message_is_committed_after_the_linger_time() {
        let linger = Duration::from_millis(300);
        let store = ControlledStore::new(true);
        let (handle, _task) = Pipeline::spawn(store.clone(), config(1000, 1 << 20, linger));
        let start = std::time::Instant::now();
        submit(&handle, one_reading(1, 10), store.ack("a")).await;

        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(store.log().is_empty(), "committed before the linger time");
        while store.log().is_empty() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert!(start.elapsed() >= linger);
        assert_eq!(store.log(), ["commit 1", "ack a"]);
    }

    #[tokio::test]
    async fn after_close_nothing_is_accepted_and_everything_accepted_is_committed() {
        let store = ControlledStore::new(true);
        let (handle, task) = Pipeline::spawn(
            store.clone(),
            config(1000, 1 << 20, Duration::from_secs(3600)),
        );
        submit(&handle, one_reading(1, 10), store.ack("a")).await;
        handle.close();
        tokio::time::timeout(Duration::from_secs(10), task)
            .await
            .expect("drains without waiting for the linger time")
            .expect("task ok");
        assert_eq!(store.log(), ["commit 1", "ack a"]);
        let refused = handle.submit(Inbound::new(one_reading(2, 10), None)).await;
        assert_eq!(refused, Err(PipelineClosed));
    }

    #[test]
    fn policy_defaults_and_config_keys() {
        let p = BatchPolicy::default();
        assert_eq!(
            (p.max_readings, p.max_bytes, p.linger),
            (8_000, 4 << 20, Duration::from_millis(20))
        );
        let c: PipelineConfig =
            serde_json::from_str(r#"{"batch":{"linger_ms":5}}"#).expect("valid");
        assert_eq!(c.batch.linger, Duration::from_millis(5));
        assert_eq!(c.batch.max_readings, 8_000);
        assert!(serde_json::from_str::<PipelineConfig>(r#"{"batch":{"linger":5}}"#).is_err());
        assert_eq!(
            PipelineConfig::default(),
            serde_json::from_str("{}").expect("valid")
        );
    }
}
