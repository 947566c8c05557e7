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
use std::io::{self, Write};
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
            let file = OpenOptions::new().read(true).write(true).open(&path)?;
            let len = file.metadata()?.len();
            let mut offset = 0u64;
            let mut expected = first;
            let mut bad = None;
            while offset < len {
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

fn checksum(number: u64, payload: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(&number.to_le_bytes());
    h.update(payload);
    h.finalize()
}

/// Appends records; used by one task at a time (the committer), on the blocking pool.
pub(crate) struct JournalWriter {
    dir: PathBuf,
    /// The open segment and its size.
    active: Option<(File, u64)>,
    next: u64,
    segment_bytes: u64,
}

impl JournalWriter {
    /// Writes `batch` as the next record and syncs it. Returns its number and size.
    pub(crate) fn append(&mut self, batch: &IngestBatch) -> io::Result<(u64, u64)> {
        let payload = serde_json::to_vec(batch).map_err(io::Error::other)?;
        if payload.len() > MAX_RECORD {
            return Err(io::Error::other(format!(
                "a batch of {} bytes is over the journal's record limit",
                payload.len()
            )));
        }
        let number = self.next;
        if self
            .active
            .as_ref()
            .is_none_or(|(_, size)| *size >= self.segment_bytes)
        {
            let path = segment_path(&self.dir, number);
            let file = OpenOptions::new()
                .create(true)
                .write(true)
                .truncate(true)
                .open(&path)?;
            // The new name must survive a crash as well as its contents.
            File::open(&self.dir)?.sync_all()?;
            self.active = Some((file, 0));
        }
        let mut record = Vec::with_capacity(HEADER + payload.len());
        record.extend_from_slice(&(payload.len() as u32).to_le_bytes());
        record.extend_from_slice(&checksum(number, &payload).to_le_bytes());
        record.extend_from_slice(&number.to_le_bytes());
        record.extend_from_slice(&payload);
        let (file, size) = self
            .active
            .as_mut()
            .expect("a segment was opened just above");
        file.write_all(&record)?;
        file.sync_data()?;
        *size += record.len() as u64;
        self.next += 1;
        Ok((number, record.len() as u64))
    }
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
            if self.current.is_none() {
                self.open_segment(self.next)?;
            }
            let (file, _, _) = self.current.as_ref().expect("opened just above");
            let mut header = [0u8; HEADER];
            if !read_full(file, &mut header, self.offset)? {
                // The end of this segment: the record is in the next one.
                self.close_segment();
                continue;
            }
            let (len, crc, number) = parse_header(&header);
            if number != self.next || len > MAX_RECORD {
                return Err(io::Error::other(format!(
                    "ingest journal: record {} expected, found {number} (length {len})",
                    self.next
                )));
            }
            let mut payload = vec![0u8; len];
            if !read_full(file, &mut payload, self.offset + HEADER as u64)?
                || checksum(number, &payload) != crc
            {
                return Err(io::Error::other(format!(
                    "ingest journal: record {number} is short or fails its checksum"
                )));
            }
            let batch: IngestBatch = serde_json::from_slice(&payload).map_err(io::Error::other)?;
            let size = (HEADER + len) as u64;
            self.offset += size;
            self.next += 1;
            return Ok((batch, size));
        }
    }

    fn open_segment(&mut self, first: u64) -> io::Result<()> {
        let path = segment_path(&self.dir, first);
        let file = File::open(&path).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!(
                    "ingest journal: segment {} for record {first}: {e}",
                    path.display()
                ),
            )
        })?;
        self.current = Some((file, path, first));
        self.offset = 0;
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
