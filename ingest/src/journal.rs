//! The ingest journal: an append-only, checksummed log of accepted batches on local disk,
//! between the sources and the store.
//!
//! Why: with thousands of devices each appearing about once per batch, a SQLite commit
//! costs a few pages per reading (every device's own leaf pages, latest state and
//! rollups), and the batch size is capped by how many PUBLISHes the devices keep in
//! flight. Writing the accepted batch sequentially to a journal and fsyncing it costs a
//! fraction of that and lets the acks go out at once; the store then takes the journal
//! in much larger transactions, where each device's pages are written once for many
//! readings (see `docs/benchmarks.md`).
//!
//! Guarantees:
//! - A record is acknowledged (PUBACK, broker ack) only after it was written and
//!   `fdatasync`ed: an acked reading survives a process crash and power loss, as with
//!   `data.durability = "full"`.
//! - Records are numbered from 1 without gaps. The store records the number of the last
//!   record it applied in the same transaction as that record's readings
//!   ([`fleetpulse_domain::store::Store::journal_applied`]); at start every record after
//!   it is applied before any source starts. A record is applied at most once and
//!   never skipped; readings in a record applied twice (a crash between the store commit
//!   and the journal bookkeeping cannot cause that, but a restored backup could) are
//!   deduplicated by `(serial, seq)` anyway.
//! - A record cut short by a crash (its append never completed, so it was never acked)
//!   is found by its length and CRC-32 at start and truncated away.
//! - The journal holds at most `max_unapplied_mib` of records the store has not taken;
//!   beyond that appends wait, the pipeline fills and the sources stop reading
//!   (backpressure, never a drop).
//!
//! On disk: `<data.dir>/journal/<first record number, 20 digits>.journal` segments of
//! records `[len u32 LE][crc32 u32 LE][number u64 LE][payload: the batch as JSON]`,
//! the CRC covering number and payload. Segments whose every record is applied are
//! deleted.

use std::collections::VecDeque;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use fleetpulse_domain::store::IngestBatch;
use serde::{Deserialize, Serialize};
use tokio::sync::{Notify, watch};
use tracing::{error, info, warn};

const HEADER: usize = 16;
/// A record larger than this is corruption, not a batch.
const MAX_RECORD: usize = 1 << 30;
const SUFFIX: &str = "journal";

/// The `[ingest.journal]` section.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JournalConfig {
    /// Keep the journal (default `true`). `false`: every batch is committed to the store
    /// before its acks, in batches no larger than what the devices keep in flight.
    #[serde(default = "default_enabled")]
    pub enabled: bool,
    /// A segment file is closed once it holds this many MiB. Default 64.
    #[serde(default = "default_segment_mib")]
    pub segment_mib: u64,
    /// Records not yet taken by the store, in MiB, before appends wait (backpressure).
    /// Default 256.
    #[serde(default = "default_max_unapplied_mib")]
    pub max_unapplied_mib: u64,
    /// The most entries (readings, dead letters, status messages) the store takes from
    /// the journal in one transaction. Default 5 000. Larger saves store work per
    /// reading (at 10 000 devices, 50 000 applies 52 000 readings/s instead of 37 000)
    /// and costs memory: about 1 KiB per reading, twice (the transaction and the one read
    /// ahead; peak RSS of the ingest benchmark 280 → 390 MiB, `docs/benchmarks.md`).
    #[serde(default = "default_apply_max_entries")]
    pub apply_max_entries: usize,
}

const fn default_enabled() -> bool {
    true
}
const fn default_segment_mib() -> u64 {
    64
}
const fn default_max_unapplied_mib() -> u64 {
    256
}
const fn default_apply_max_entries() -> usize {
    5_000
}

impl Default for JournalConfig {
    fn default() -> Self {
        Self {
            enabled: default_enabled(),
            segment_mib: default_segment_mib(),
            max_unapplied_mib: default_max_unapplied_mib(),
            apply_max_entries: default_apply_max_entries(),
        }
    }
}

/// What the writer and the applier share.
#[derive(Debug)]
pub(crate) struct Shared {
    /// The last record written and synced.
    durable: watch::Sender<u64>,
    /// Bytes of records written but not yet applied.
    unapplied_bytes: AtomicU64,
    /// The last record the store committed.
    applied: watch::Sender<u64>,
    /// Woken when the store took records (room for appends).
    room: Notify,
    max_unapplied_bytes: u64,
}

impl Shared {
    pub(crate) fn durable_through(&self) -> u64 {
        *self.durable.borrow()
    }

    pub(crate) fn subscribe_durable(&self) -> watch::Receiver<u64> {
        self.durable.subscribe()
    }

    pub(crate) fn unapplied_bytes(&self) -> u64 {
        self.unapplied_bytes.load(Ordering::Relaxed)
    }

    /// Waits until the unapplied records leave room under the bound.
    pub(crate) async fn wait_for_room(&self) {
        loop {
            let notified = self.room.notified();
            if self.unapplied_bytes() < self.max_unapplied_bytes {
                return;
            }
            // A timeout as well: the bound is a soft limit, re-checked now and then.
            let _ = tokio::time::timeout(Duration::from_millis(100), notified).await;
        }
    }

    pub(crate) fn applied_through(&self) -> u64 {
        *self.applied.borrow()
    }

    pub(crate) fn subscribe_applied(&self) -> watch::Receiver<u64> {
        self.applied.subscribe()
    }

    /// The store committed the records through `through`, `bytes` of them new.
    pub(crate) fn applied(&self, through: u64, bytes: u64) {
        let _ = self
            .unapplied_bytes
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |b| {
                Some(b.saturating_sub(bytes))
            });
        self.applied.send_replace(through);
        self.room.notify_waiters();
    }
}

/// An opened journal: its writer (for the committer) and its reader (for the applier).
pub struct Journal {
    pub(crate) writer: JournalWriter,
    pub(crate) reader: JournalReader,
    pub(crate) shared: Arc<Shared>,
    pub(crate) config: JournalConfig,
}

impl Journal {
    /// Opens (creating) the journal in `dir`. `applied_through`: the last record the
    /// store committed. Segments wholly applied are deleted, a torn tail is truncated,
    /// and the reader starts at the record after `applied_through`.
    pub fn open(
        dir: &Path,
        applied_through: Option<u64>,
        config: JournalConfig,
    ) -> io::Result<Journal> {
        fs::create_dir_all(dir)?;
        let applied = applied_through.unwrap_or(0);
        let mut segments = list_segments(dir)?;

        // Delete segments wholly applied: each one ends where the next one starts.
        while segments.len() > 1 && segments[1].0 <= applied.saturating_add(1) {
            let (_, path) = segments.remove(0);
            fs::remove_file(&path)?;
        }

        // Scan what is left for the last good record; cut a torn or corrupt tail.
        let mut last_good = applied;
        let mut unapplied_bytes = 0u64;
        let mut idx = 0;
        while idx < segments.len() {
            let (first, path) = segments[idx].clone();
            // A segment started after a failed append that could not be cut back takes
            // over from the record it is named by.
            let taken_over_at = segments.get(idx + 1).map(|(next_first, _)| *next_first);
            let file = OpenOptions::new().read(true).write(true).open(&path)?;
            let len = file.metadata()?.len();
            let mut offset = 0u64;
            let mut expected = first;
            let mut bad = None;
            while offset < len {
                if taken_over_at == Some(expected) {
                    bad = Some(format!("a later segment holds record {expected}"));
                    break;
                }
                match read_record(&file, offset)? {
                    Some((number, payload_len)) if number == expected => {
                        let size = (HEADER + payload_len) as u64;
                        if number > applied {
                            unapplied_bytes += size;
                        }
                        last_good = last_good.max(number);
                        expected += 1;
                        offset += size;
                    }
                    Some((number, _)) => {
                        bad = Some(format!("record number {number} where {expected} was due"));
                        break;
                    }
                    None => {
                        bad = Some("short or failed checksum".to_string());
                        break;
                    }
                }
            }
            if let Some(why) = bad {
                let tail = len - offset;
                let later = segments.len() - idx - 1;
                if taken_over_at == Some(expected) {
                    warn!(segment = %path.display(), offset, bytes = tail, reason = %why,
                        "ingest journal: the leftovers of a failed append (never acknowledged) are truncated");
                    file.set_len(offset)?;
                    file.sync_all()?;
                    idx += 1;
                    continue;
                }
                if later == 0 && tail < (MAX_RECORD as u64) {
                    warn!(segment = %path.display(), offset, bytes = tail, reason = %why,
                        "ingest journal: an append cut short by a crash (never acknowledged) is truncated");
                } else {
                    error!(segment = %path.display(), offset, bytes = tail, later_segments = later, reason = %why,
                        "ingest journal corrupt: the rest of the journal is discarded; acknowledged readings after this point are lost");
                }
                file.set_len(offset)?;
                file.sync_all()?;
                for (_, later_path) in segments.drain(idx + 1..) {
                    fs::remove_file(later_path)?;
                }
            }
            idx += 1;
        }
        if last_good > applied {
            info!(
                records = last_good - applied,
                bytes = unapplied_bytes,
                "ingest journal: records not yet in the store will be applied before ingest starts"
            );
        }
        let next = last_good.max(applied) + 1;
        let reader = JournalReader::new(dir, &segments, applied)?;
        let writer = JournalWriter {
            dir: dir.to_owned(),
            active: None,
            next,
            segment_bytes: config.segment_mib.max(1) << 20,
        };
        let (durable, _) = watch::channel(last_good.max(applied));
        let (applied_tx, _) = watch::channel(applied);
        let shared = Arc::new(Shared {
            durable,
            applied: applied_tx,
            unapplied_bytes: AtomicU64::new(unapplied_bytes),
            room: Notify::new(),
            max_unapplied_bytes: config.max_unapplied_mib.max(1) << 20,
        });
        Ok(Journal {
            writer,
            reader,
            shared,
            config,
        })
    }

    /// Bytes of records the store has not taken yet.
    pub fn unapplied_bytes(&self) -> u64 {
        self.shared.unapplied_bytes()
    }

    /// Appends and syncs one record outside a pipeline (tools and tests; a running
    /// pipeline owns its journal). Returns the record's number.
    pub fn append(&mut self, batch: &IngestBatch) -> io::Result<u64> {
        let (number, bytes) = self.writer.append(batch)?;
        self.shared.written(number, bytes);
        Ok(number)
    }
}

fn segment_path(dir: &Path, first: u64) -> PathBuf {
    dir.join(format!("{first:020}.{SUFFIX}"))
}

/// Segments in `dir`, oldest first.
fn list_segments(dir: &Path) -> io::Result<Vec<(u64, PathBuf)>> {
    let mut segments = Vec::new();
    for entry in fs::read_dir(dir)? {
        let path = entry?.path();
        if path.extension().and_then(|e| e.to_str()) != Some(SUFFIX) {
            continue;
        }
        match path
            .file_stem()
            .and_then(|s| s.to_str())
            .and_then(|s| s.parse::<u64>().ok())
        {
            Some(first) => segments.push((first, path)),
            None => {
                warn!(file = %path.display(), "ingest journal: a file that is not a segment is ignored")
            }
        }
    }
    segments.sort();
    Ok(segments)
}

/// Reads the record at `offset`: `Some((number, payload length))` when it is whole and
/// its checksum matches, `None` when it is short or corrupt.
fn read_record(file: &File, offset: u64) -> io::Result<Option<(u64, usize)>> {
    let mut header = [0u8; HEADER];
    if !read_full(file, &mut header, offset)? {
        return Ok(None);
    }
    let (len, crc, number) = parse_header(&header);
    if len > MAX_RECORD {
        return Ok(None);
    }
    let mut payload = vec![0u8; len];
    if !read_full(file, &mut payload, offset + HEADER as u64)? {
        return Ok(None);
    }
    Ok((checksum(number, &payload) == crc).then_some((number, len)))
}

fn parse_header(header: &[u8; HEADER]) -> (usize, u32, u64) {
    let word =
        |i: usize| u32::from_le_bytes([header[i], header[i + 1], header[i + 2], header[i + 3]]);
    let mut number = [0u8; 8];
    number.copy_from_slice(&header[8..16]);
    (word(0) as usize, word(4), u64::from_le_bytes(number))
}

/// `false` when the file ends before `buf` is full.
fn read_full(file: &File, buf: &mut [u8], offset: u64) -> io::Result<bool> {
    let mut done = 0;
    while done < buf.len() {
        match file.read_at(&mut buf[done..], offset + done as u64) {
            Ok(0) => return Ok(false),
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(true)
}

/// What the reader finds where it expects record `expected`.
enum Slot {
    /// Not even a whole header: the segment ends here.
    End,
    Record(IngestBatch, u64),
    /// A header, but not the expected record whole.
    Bad(String),
}

fn read_at(file: &File, offset: u64, expected: u64) -> io::Result<Slot> {
    let mut header = [0u8; HEADER];
    if !read_full(file, &mut header, offset)? {
        return Ok(Slot::End);
    }
    let (len, crc, number) = parse_header(&header);
    if number != expected || len > MAX_RECORD {
        return Ok(Slot::Bad(format!(
            "record {expected} expected, found {number} (length {len})"
        )));
    }
    let mut payload = vec![0u8; len];
    if !read_full(file, &mut payload, offset + HEADER as u64)? || checksum(number, &payload) != crc
    {
        return Ok(Slot::Bad(format!(
            "record {number} is short or fails its checksum"
        )));
    }
    let batch: IngestBatch = serde_json::from_slice(&payload).map_err(io::Error::other)?;
    Ok(Slot::Record(batch, (HEADER + len) as u64))
}

fn checksum(number: u64, payload: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(&number.to_le_bytes());
    h.update(payload);
    h.finalize()
}

/// Appends records; used by one task at a time (the committer), on the blocking pool.
pub(crate) struct JournalWriter {
    dir: PathBuf,
    /// The open segment and the end of its last whole, synced record.
    active: Option<(File, u64)>,
    next: u64,
    segment_bytes: u64,
}

impl JournalWriter {
    /// Writes `batch` as the next record and syncs it. Returns its number and size.
    ///
    /// A failed append (a full disk, an I/O error) leaves the journal as it was: the
    /// record is written at the known end of the segment, not through the file cursor,
    /// and on any failure the segment is cut back to that end and synced, so a retry
    /// starts from whole records. When even that fails, the segment is left behind and
    /// the next append starts a fresh one; the reader and [`Journal::open`] skip the
    /// leftovers (the fresh segment holds the record).
    pub(crate) fn append(&mut self, batch: &IngestBatch) -> io::Result<(u64, u64)> {
        let payload = serde_json::to_vec(batch).map_err(io::Error::other)?;
        if payload.len() > MAX_RECORD {
            return Err(io::Error::other(format!(
                "a batch of {} bytes is over the journal's record limit",
                payload.len()
            )));
        }
        let number = self.next;
        let record = encode_record(number, &payload);
        let (file, end) = self.segment_for(number)?;
        if let Err(err) = write_synced(&file, &record, end) {
            self.cut_back(file, end, number, &err);
            return Err(err);
        }
        let size = record.len() as u64;
        self.active = Some((file, end + size));
        self.next += 1;
        Ok((number, size))
    }

    /// The open segment and its end, opening a fresh one (named by `number`) when there
    /// is none or the open one is full.
    fn segment_for(&mut self, number: u64) -> io::Result<(File, u64)> {
        if let Some((file, end)) = self.active.take()
            && end < self.segment_bytes
        {
            return Ok((file, end));
        }
        let path = segment_path(&self.dir, number);
        let file = OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(true)
            .open(&path)?;
        // The new name must survive a crash as well as its contents.
        File::open(&self.dir)?.sync_all()?;
        Ok((file, 0))
    }

    /// After a failed append at `end`: cuts the partial record away and syncs that. If
    /// that fails too, the segment is abandoned with its leftovers (the next append
    /// opens a fresh segment named by the same record number).
    fn cut_back(&mut self, file: File, end: u64, number: u64, cause: &io::Error) {
        match file.set_len(end).and_then(|()| file.sync_data()) {
            Ok(()) => {
                warn!(record = number, error = %cause,
                    "ingest journal append failed; the segment is cut back to its last whole record and nothing of it is acknowledged");
                self.active = Some((file, end));
            }
            Err(error) => {
                error!(record = number, error = %cause, cut_error = %error,
                    "ingest journal append failed and the segment cannot be cut back; the next append starts a fresh segment");
                self.active = None;
            }
        }
    }

    /// Leaves the open segment as it is: the next append starts a fresh segment.
    #[cfg(test)]
    fn abandon_segment(&mut self) {
        self.active = None;
    }
}

fn encode_record(number: u64, payload: &[u8]) -> Vec<u8> {
    let mut record = Vec::with_capacity(HEADER + payload.len());
    record.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    record.extend_from_slice(&checksum(number, payload).to_le_bytes());
    record.extend_from_slice(&number.to_le_bytes());
    record.extend_from_slice(payload);
    record
}

/// Writes `record` at `offset` (positional: a failed earlier attempt cannot move where
/// this one lands) and syncs it.
fn write_synced(file: &File, record: &[u8], offset: u64) -> io::Result<()> {
    file.write_all_at(record, offset)?;
    file.sync_data()
}

/// Reads records in order for the applier; deletes segments once they are applied.
pub(crate) struct JournalReader {
    dir: PathBuf,
    /// The segment being read, where, and its first record.
    current: Option<(File, PathBuf, u64)>,
    offset: u64,
    /// The next record to read.
    next: u64,
    /// Segments read to their end, with their last record: deleted once applied.
    finished: VecDeque<(PathBuf, u64)>,
}

impl JournalReader {
    fn new(dir: &Path, segments: &[(u64, PathBuf)], applied: u64) -> io::Result<Self> {
        let mut reader = JournalReader {
            dir: dir.to_owned(),
            current: None,
            offset: 0,
            next: applied + 1,
            finished: VecDeque::new(),
        };
        // Start in the last segment that begins at or before the next record, and skip
        // what is applied.
        if let Some((first, path)) = segments.iter().rev().find(|(f, _)| *f <= applied + 1) {
            let file = File::open(path)?;
            let mut offset = 0u64;
            let mut number = *first;
            while number <= applied {
                match read_record(&file, offset)? {
                    Some((_, len)) => {
                        offset += (HEADER + len) as u64;
                        number += 1;
                    }
                    None => break,
                }
            }
            reader.current = Some((file, path.clone(), *first));
            reader.offset = offset;
        }
        Ok(reader)
    }

    /// The next record to read.
    pub(crate) fn position(&self) -> u64 {
        self.next
    }

    /// Reads the records from the next one through at most `through`, until `max_entries`
    /// entries are gathered, as one batch. Returns the batch, the last record it holds
    /// and the records' bytes; `None` when there is nothing to read.
    pub(crate) fn read_batch(
        &mut self,
        through: u64,
        max_entries: usize,
    ) -> io::Result<Option<(IngestBatch, u64, u64)>> {
        let mut batch = IngestBatch::default();
        let mut last = None;
        let mut bytes = 0u64;
        while self.next <= through {
            let (record, size) = self.read_next()?;
            batch.readings.extend(record.readings);
            batch.dead_letters.extend(record.dead_letters);
            batch.statuses.extend(record.statuses);
            batch.connection_ends.extend(record.connection_ends);
            bytes += size;
            last = Some(self.next - 1);
            let total = batch.readings.len() + batch.dead_letters.len() + batch.statuses.len();
            if total >= max_entries {
                break;
            }
        }
        Ok(last.map(|last| {
            batch.journal_through = Some(last);
            (batch, last, bytes)
        }))
    }

    /// Reads record `self.next`, which is durable (written and synced).
    fn read_next(&mut self) -> io::Result<(IngestBatch, u64)> {
        loop {
            let Some((file, path, first)) = &self.current else {
                self.open_segment_after(None)?;
                continue;
            };
            let (path, first) = (path.clone(), *first);
            match read_at(file, self.offset, self.next)? {
                Slot::End => {
                    // The end of this segment: the record is in a later one.
                    self.close_segment();
                    self.open_segment_after(Some(first))?;
                }
                Slot::Record(batch, size) => {
                    self.offset += size;
                    self.next += 1;
                    return Ok((batch, size));
                }
                Slot::Bad(why) => {
                    // What a failed append could not cut back, when a later segment
                    // took the record over; anything else is damage.
                    if self.later_segment(Some(first))?.is_none() {
                        return Err(io::Error::other(format!("ingest journal: {why}")));
                    }
                    warn!(segment = %path.display(), offset = self.offset, reason = %why,
                        "ingest journal: the leftovers of a failed append are skipped; the record continues in a later segment");
                    self.close_segment();
                    self.open_segment_after(Some(first))?;
                }
            }
        }
    }

    /// The latest segment that starts after `after` (`None`: any) and at or before the
    /// next record.
    fn later_segment(&self, after: Option<u64>) -> io::Result<Option<(u64, PathBuf)>> {
        Ok(list_segments(&self.dir)?
            .into_iter()
            .rfind(|(first, _)| after.is_none_or(|a| *first > a) && *first <= self.next))
    }

    /// Opens the segment holding the next record (the latest one starting after
    /// `after`, `None`: any) and moves to the record in it.
    fn open_segment_after(&mut self, after: Option<u64>) -> io::Result<()> {
        let next = self.next;
        let Some((first, path)) = self.later_segment(after)? else {
            return Err(io::Error::other(format!(
                "ingest journal: no segment holds record {next} (expected {})",
                segment_path(&self.dir, next).display()
            )));
        };
        let file = File::open(&path).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!(
                    "ingest journal: segment {} for record {next}: {e}",
                    path.display()
                ),
            )
        })?;
        // A segment opened after a failed append may begin before the next record.
        let mut offset = 0u64;
        let mut number = first;
        while number < next {
            match read_record(&file, offset)? {
                Some((n, len)) if n == number => {
                    offset += (HEADER + len) as u64;
                    number += 1;
                }
                _ => {
                    return Err(io::Error::other(format!(
                        "ingest journal: segment {} does not hold record {next}",
                        path.display()
                    )));
                }
            }
        }
        self.current = Some((file, path, first));
        self.offset = offset;
        Ok(())
    }

    fn close_segment(&mut self) {
        if let Some((_, path, _)) = self.current.take() {
            self.finished.push_back((path, self.next - 1));
        }
        self.offset = 0;
    }

    /// Deletes the segments whose records are all applied (`through` included).
    pub(crate) fn forget_applied(&mut self, through: u64) {
        while self
            .finished
            .front()
            .is_some_and(|(_, last)| *last <= through)
        {
            if let Some((path, _)) = self.finished.pop_front()
                && let Err(error) = fs::remove_file(&path)
            {
                warn!(segment = %path.display(), %error, "ingest journal: cannot delete an applied segment");
            }
        }
    }
}

impl Shared {
    /// Publishes that records through `number` are durable, adding `bytes` unapplied.
    pub(crate) fn written(&self, number: u64, bytes: u64) {
        self.unapplied_bytes.fetch_add(bytes, Ordering::Relaxed);
        self.durable.send_replace(number);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Utc;
    use fleetpulse_domain::Serial;
    use fleetpulse_domain::telemetry::Reading;
    use std::io::Write;

    fn reading(serial: &str, seq: u64) -> Reading {
        Reading {
            serial: Serial::parse(serial).expect("serial"),
            seq,
            ts: Utc::now(),
            received_at: Utc::now(),
            model: None,
            firmware: None,
            alarms: None,
            values: [("runtime_hours".to_string(), seq as f64)]
                .into_iter()
                .collect(),
        }
    }

    fn batch(seqs: std::ops::Range<u64>) -> IngestBatch {
        IngestBatch {
            readings: seqs.map(|s| reading("J1", s)).collect(),
            ..IngestBatch::default()
        }
    }

    fn small() -> JournalConfig {
        JournalConfig {
            segment_mib: 1,
            ..JournalConfig::default()
        }
    }

    fn seqs(b: &IngestBatch) -> Vec<u64> {
        b.readings.iter().map(|r| r.seq).collect()
    }

    #[test]
    fn records_are_read_back_in_order_across_segments_and_applied_segments_go() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut j = Journal::open(dir.path(), None, small()).expect("open");
        // ~40 KiB records: a 1 MiB segment fills after about 25 of them.
        for i in 0..100u64 {
            let (n, bytes) = j
                .writer
                .append(&batch(i * 400..(i + 1) * 400))
                .expect("append");
            j.shared.written(n, bytes);
            assert_eq!(n, i + 1);
        }
        assert!(
            list_segments(dir.path()).expect("list").len() > 2,
            "rotated"
        );
        let (b, last, _) = j
            .reader
            .read_batch(100, 10_000)
            .expect("read")
            .expect("some");
        assert_eq!(last, 25, "stops once 10 000 readings are gathered");
        assert_eq!(seqs(&b), (0..10_000).collect::<Vec<_>>());
        assert_eq!(b.journal_through, Some(25));
        let (b, last, _) = j
            .reader
            .read_batch(100, 1_000_000)
            .expect("read")
            .expect("some");
        assert_eq!(last, 100);
        assert_eq!(seqs(&b), (10_000..40_000).collect::<Vec<_>>());
        assert!(j.reader.read_batch(100, 10).expect("read").is_none());
        let before = list_segments(dir.path()).expect("list").len();
        j.reader.forget_applied(100);
        let after = list_segments(dir.path()).expect("list").len();
        assert!(after < before && after >= 1, "{before} → {after}");
    }

    #[test]
    fn reopening_resumes_after_the_applied_record_and_numbers_go_on() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let mut j = Journal::open(dir.path(), None, small()).expect("open");
            for i in 0..10u64 {
                j.writer
                    .append(&batch(i * 10..(i + 1) * 10))
                    .expect("append");
            }
        }
        let mut j = Journal::open(dir.path(), Some(4), small()).expect("reopen");
        assert_eq!(j.shared.durable_through(), 10);
        assert_eq!(j.reader.position(), 5);
        let (b, last, _) = j.reader.read_batch(10, 1_000).expect("read").expect("some");
        assert_eq!((last, seqs(&b)), (10, (40..100).collect::<Vec<_>>()));
        let (n, _) = j.writer.append(&batch(100..101)).expect("append");
        assert_eq!(n, 11, "numbering continues after the last record on disk");
    }

    #[test]
    fn a_torn_tail_is_truncated_and_the_good_records_stay() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let mut j = Journal::open(dir.path(), None, small()).expect("open");
            for i in 0..3u64 {
                j.writer.append(&batch(i..i + 1)).expect("append");
            }
        }
        let (_, path) = list_segments(dir.path()).expect("list").remove(0);
        let len = fs::metadata(&path).expect("meta").len();
        // Half a record more, as a crash in the middle of an append leaves it.
        let mut f = OpenOptions::new().append(true).open(&path).expect("open");
        f.write_all(&[7u8; 9]).expect("write");
        drop(f);
        let mut j = Journal::open(dir.path(), None, small()).expect("reopen");
        assert_eq!(fs::metadata(&path).expect("meta").len(), len, "tail cut");
        assert_eq!(j.shared.durable_through(), 3);
        let (b, last, _) = j.reader.read_batch(3, 100).expect("read").expect("some");
        assert_eq!((last, seqs(&b)), (3, vec![0, 1, 2]));
        let (n, _) = j.writer.append(&batch(3..4)).expect("append");
        assert_eq!(n, 4);
    }

    /// A small tmpfs of its own (real ENOSPC, a real partial write), unmounted on drop.
    /// `None` (with the reason printed) where mounting is not allowed (not root).
    struct Tmpfs {
        dir: tempfile::TempDir,
    }

    impl Tmpfs {
        fn mount(size: &str) -> Option<Tmpfs> {
            let dir = tempfile::tempdir().expect("tempdir");
            let out = std::process::Command::new("mount")
                .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
                .arg(dir.path())
                .output();
            match out {
                Ok(o) if o.status.success() => Some(Tmpfs { dir }),
                Ok(o) => {
                    eprintln!(
                        "SKIPPED: cannot mount a tmpfs (needs root): {}",
                        String::from_utf8_lossy(&o.stderr).trim()
                    );
                    None
                }
                Err(e) => {
                    eprintln!("SKIPPED: cannot run mount: {e}");
                    None
                }
            }
        }

        fn resize(&self, size: &str) {
            let status = std::process::Command::new("mount")
                .args(["-o", &format!("remount,size={size}")])
                .arg(self.dir.path())
                .status()
                .expect("mount -o remount");
            assert!(status.success(), "remount to {size}");
        }

        fn path(&self) -> &Path {
            self.dir.path()
        }
    }

    impl Drop for Tmpfs {
        fn drop(&mut self) {
            let _ = std::process::Command::new("umount")
                .arg(self.dir.path())
                .status();
        }
    }

    fn all_seqs(j: &mut Journal) -> Vec<u64> {
        let through = j.shared.durable_through();
        let mut out = Vec::new();
        while let Some((b, _, _)) = j.reader.read_batch(through, 1_000).expect("read back") {
            out.extend(seqs(&b));
        }
        out
    }

    #[test]
    fn an_append_that_fails_part_way_on_a_full_disk_leaves_the_journal_as_it_was() {
        let Some(fs) = Tmpfs::mount("64k") else {
            return;
        };
        let dir = fs.path().join("journal");
        let mut j = Journal::open(&dir, None, small()).expect("open");
        // ~15 KiB records: the 64 KiB filesystem takes a few, then one is cut short.
        let mut written = 0u64;
        let err = loop {
            match j.append(&batch(written * 100..(written + 1) * 100)) {
                Ok(n) => {
                    written += 1;
                    assert_eq!(n, written);
                }
                Err(err) => break err,
            }
            assert!(written < 100, "the filesystem never filled");
        };
        assert_eq!(err.kind(), io::ErrorKind::StorageFull, "{err}");
        assert!(written >= 1, "at least one record fits");
        // The failed record is not durable and left no bytes behind.
        assert_eq!(j.shared.durable_through(), written);
        let (_, segment) = list_segments(&dir).expect("list").remove(0);
        let on_disk = fs::metadata(&segment).expect("meta").len();
        assert_eq!(on_disk, j.unapplied_bytes(), "only whole records on disk");

        // Room again: the same batch is appended (as the committer retries it) and more.
        fs.resize("4m");
        for k in written..written + 3 {
            let n = j.append(&batch(k * 100..(k + 1) * 100)).expect("append");
            assert_eq!(n, k + 1);
        }
        let total = written + 3;
        let want: Vec<u64> = (0..total * 100).collect();
        assert_eq!(all_seqs(&mut j), want, "every record reads back");
        drop(j);
        let mut j = Journal::open(&dir, None, small()).expect("reopen");
        assert_eq!(
            j.shared.durable_through(),
            total,
            "nothing cut at the start"
        );
        assert_eq!(
            all_seqs(&mut j),
            want,
            "every record reads back after a restart"
        );
    }

    #[test]
    fn leftovers_a_failed_append_could_not_cut_are_skipped_for_the_fresh_segment() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut j = Journal::open(dir.path(), None, small()).expect("open");
        for i in 0..3u64 {
            j.append(&batch(i * 10..(i + 1) * 10)).expect("append");
        }
        // What an append that failed part-way leaves when the cut back fails as well:
        // the first bytes of record 4, and the writer moving on to a fresh segment.
        let (_, first_segment) = list_segments(dir.path()).expect("list").remove(0);
        let leftovers = encode_record(4, &serde_json::to_vec(&batch(30..40)).expect("json"));
        let mut f = OpenOptions::new()
            .append(true)
            .open(&first_segment)
            .expect("open");
        f.write_all(&leftovers[..leftovers.len() / 2])
            .expect("write");
        drop(f);
        j.writer.abandon_segment();
        for i in 3..5u64 {
            let n = j.append(&batch(i * 10..(i + 1) * 10)).expect("append");
            assert_eq!(n, i + 1);
        }
        assert_eq!(list_segments(dir.path()).expect("list").len(), 2);
        let want: Vec<u64> = (0..50).collect();
        assert_eq!(all_seqs(&mut j), want, "the reader skips the leftovers");
        drop(j);

        let mut j = Journal::open(dir.path(), None, small()).expect("reopen");
        assert_eq!(j.shared.durable_through(), 5, "no record is discarded");
        assert_eq!(all_seqs(&mut j), want, "and all read back after a restart");
        let mut j = Journal::open(dir.path(), Some(2), small()).expect("reopen");
        assert_eq!(all_seqs(&mut j), (20..50).collect::<Vec<_>>());
        let mut j = Journal::open(dir.path(), Some(3), small()).expect("reopen");
        assert_eq!(all_seqs(&mut j), (30..50).collect::<Vec<_>>());
    }

    #[test]
    fn a_flipped_byte_fails_the_checksum() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let mut j = Journal::open(dir.path(), None, small()).expect("open");
            for i in 0..3u64 {
                j.writer.append(&batch(i..i + 1)).expect("append");
            }
        }
        let (_, path) = list_segments(dir.path()).expect("list").remove(0);
        let mut bytes = fs::read(&path).expect("read");
        let last = bytes.len() - 3;
        bytes[last] ^= 0x55;
        fs::write(&path, bytes).expect("write");
        let j = Journal::open(dir.path(), None, small()).expect("reopen");
        assert_eq!(
            j.shared.durable_through(),
            2,
            "the damaged last record is cut"
        );
    }
}
