//! The write-ahead log: checksummed records in numbered segment files, made durable by group
//! commit.
//!
//! A record is `[length: u32][crc32c of payload: u32][payload]`, little-endian. One writer
//! thread takes every pending append, writes them together, calls `fdatasync` once, and only
//! then answers each caller: many concurrent requests share one sync. Each segment counts the
//! spans it holds that are not yet in a block; a closed segment whose count reaches zero is
//! deleted. Replay reads segments in order and stops a segment at its first bad record (a torn
//! write from a crash), truncating the file there.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::mpsc;

use parking_lot::Mutex;

use crate::StoreError;

const HEADER: usize = 8;
/// A record larger than this is corrupt by definition (requests are capped far lower).
const MAX_RECORD: usize = 256 << 20;

/// Identifies a segment file; increases monotonically.
pub type SegmentId = u64;

struct Append {
    payload: bytes::Bytes,
    spans: u64,
    done: tokio::sync::oneshot::Sender<Result<SegmentId, StoreError>>,
}

/// Shared state between the writer thread and callers releasing spans.
struct Segments {
    dir: PathBuf,
    /// Spans not yet in a block, per segment.
    outstanding: BTreeMap<SegmentId, u64>,
    active: SegmentId,
}

impl Segments {
    fn path(&self, id: SegmentId) -> PathBuf {
        segment_path(&self.dir, id)
    }

    fn delete_finished(&mut self) {
        let finished: Vec<SegmentId> =
            self.outstanding.iter().filter(|(id, count)| **count == 0 && **id != self.active).map(|(id, _)| *id).collect();
        for id in finished {
            self.outstanding.remove(&id);
            if let Err(error) = fs::remove_file(self.path(id)) {
                tracing::warn!(message = "could not delete finished WAL segment", segment = id, %error);
            }
        }
    }
}

fn segment_path(dir: &Path, id: SegmentId) -> PathBuf {
    dir.join(format!("{id:020}.wal"))
}

/// The log. Cheap to clone.
#[derive(Clone)]
pub struct Wal {
    sender: mpsc::SyncSender<Append>,
    segments: Arc<Mutex<Segments>>,
    stats: Arc<WalStats>,
}

#[derive(Default, Debug)]
pub struct WalStats {
    pub bytes_written: std::sync::atomic::AtomicU64,
    pub syncs: std::sync::atomic::AtomicU64,
}

/// One record read back at start-up.
pub struct Replayed {
    pub segment: SegmentId,
    pub payload: Vec<u8>,
}

impl std::fmt::Debug for Wal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Wal").finish_non_exhaustive()
    }
}

impl Wal {
    /// Opens the log in `dir`, returning it with every intact record of earlier runs. The
    /// caller must `register` the spans of each replayed record.
    pub fn open(dir: &Path, segment_bytes: u64, sync: bool) -> Result<(Wal, Vec<Replayed>), StoreError> {
        fs::create_dir_all(dir)?;
        let mut ids: Vec<SegmentId> = fs::read_dir(dir)?
            .filter_map(|entry| entry.ok())
            .filter_map(|entry| entry.file_name().to_str()?.strip_suffix(".wal")?.parse().ok())
            .collect();
        ids.sort_unstable();
        let mut replayed = Vec::new();
        for &id in &ids {
            read_segment(&segment_path(dir, id), id, &mut replayed)?;
        }
        let active = ids.last().map(|id| id + 1).unwrap_or(1);
        let mut outstanding: BTreeMap<SegmentId, u64> = ids.iter().map(|id| (*id, 0)).collect();
        outstanding.insert(active, 0);
        let segments = Arc::new(Mutex::new(Segments { dir: dir.to_path_buf(), outstanding, active }));
        let file = create_segment(dir, active)?;
        let (sender, receiver) = mpsc::sync_channel::<Append>(4096);
        let stats = Arc::new(WalStats::default());
        let writer = Writer { file, written: 0, segment_bytes, sync, segments: Arc::clone(&segments), stats: Arc::clone(&stats) };
        std::thread::Builder::new().name("clew-wal".into()).spawn(move || writer.run(receiver))?;
        Ok((Wal { sender, segments, stats }, replayed))
    }

    /// Appends one record holding `spans` spans; returns once it is on disk.
    pub async fn append(&self, payload: bytes::Bytes, spans: u64) -> Result<SegmentId, StoreError> {
        if payload.len() > MAX_RECORD {
            return Err(StoreError::Invalid(format!("WAL record of {} bytes exceeds {MAX_RECORD}", payload.len())));
        }
        let (done, wait) = tokio::sync::oneshot::channel();
        match self.sender.try_send(Append { payload, spans, done }) {
            Ok(()) => {}
            // The channel is bounded: when the disk cannot keep up, callers wait here, off the
            // async threads.
            Err(mpsc::TrySendError::Full(append)) => {
                let sender = self.sender.clone();
                tokio::task::spawn_blocking(move || sender.send(append))
                    .await
                    .map_err(|_| StoreError::Unavailable("WAL writer is gone".into()))?
                    .map_err(|_| StoreError::Unavailable("WAL writer is gone".into()))?;
            }
            Err(mpsc::TrySendError::Disconnected(_)) => return Err(StoreError::Unavailable("WAL writer is gone".into())),
        }
        wait.await.map_err(|_| StoreError::Unavailable("WAL writer stopped before answering".into()))?
    }

    /// Counts `spans` replayed spans as held by `segment`.
    pub fn register(&self, segment: SegmentId, spans: u64) {
        *self.segments.lock().outstanding.entry(segment).or_insert(0) += spans;
    }

    /// `spans` spans of `segment` are now safe elsewhere (in a block, or dropped as duplicates).
    pub fn release(&self, segment: SegmentId, spans: u64) {
        let mut segments = self.segments.lock();
        if let Some(count) = segments.outstanding.get_mut(&segment) {
            *count = count.saturating_sub(spans);
            if *count == 0 && segment != segments.active {
                segments.delete_finished();
            }
        }
    }

    /// Total size of the segment files on disk.
    pub fn disk_bytes(&self) -> u64 {
        let segments = self.segments.lock();
        segments.outstanding.keys().filter_map(|id| fs::metadata(segments.path(*id)).ok()).map(|m| m.len()).sum()
    }

    pub fn stats(&self) -> &WalStats {
        &self.stats
    }
}

fn create_segment(dir: &Path, id: SegmentId) -> Result<File, StoreError> {
    let file = OpenOptions::new().create(true).append(true).open(segment_path(dir, id))?;
    // Make the new file's name durable too.
    if let Ok(handle) = File::open(dir) {
        let _ = handle.sync_all();
    }
    Ok(file)
}

fn read_segment(path: &Path, id: SegmentId, out: &mut Vec<Replayed>) -> Result<(), StoreError> {
    let mut reader = BufReader::with_capacity(1 << 20, File::open(path)?);
    let mut good_until: u64 = 0;
    loop {
        let mut header = [0u8; HEADER];
        match read_full(&mut reader, &mut header)? {
            0 => break,
            n if n < HEADER => {
                tracing::warn!(message = "WAL segment ends in a torn header; truncating", segment = id);
                break;
            }
            _ => {}
        }
        let length = u32::from_le_bytes(header[0..4].try_into().expect("4 bytes")) as usize;
        let checksum = u32::from_le_bytes(header[4..8].try_into().expect("4 bytes"));
        if length > MAX_RECORD {
            tracing::warn!(message = "WAL record has an impossible length; truncating", segment = id, length);
            break;
        }
        let mut payload = vec![0u8; length];
        if read_full(&mut reader, &mut payload)? < length || crc32fast::hash(&payload) != checksum {
            tracing::warn!(message = "WAL record is torn or corrupt; truncating the segment there", segment = id);
            break;
        }
        good_until += (HEADER + length) as u64;
        out.push(Replayed { segment: id, payload });
    }
    let file_len = fs::metadata(path)?.len();
    if good_until < file_len {
        let file = OpenOptions::new().write(true).open(path)?;
        file.set_len(good_until)?;
        file.sync_all()?;
    }
    Ok(())
}

fn read_full(reader: &mut impl Read, buffer: &mut [u8]) -> std::io::Result<usize> {
    let mut filled = 0;
    while filled < buffer.len() {
        match reader.read(&mut buffer[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(error) if error.kind() == std::io::ErrorKind::Interrupted => {}
            Err(error) => return Err(error),
        }
    }
    Ok(filled)
}

struct Writer {
    file: File,
    written: u64,
    segment_bytes: u64,
    sync: bool,
    segments: Arc<Mutex<Segments>>,
    stats: Arc<WalStats>,
}

impl Writer {
    fn run(mut self, receiver: mpsc::Receiver<Append>) {
        let mut batch: Vec<Append> = Vec::new();
        let mut buffer: Vec<u8> = Vec::with_capacity(8 << 20);
        // After a write or sync error the log can no longer promise durability: it refuses
        // every later append instead of acknowledging blind.
        let mut broken: Option<String> = None;
        while let Ok(first) = receiver.recv() {
            batch.push(first);
            while batch.len() < 4096 {
                match receiver.try_recv() {
                    Ok(next) => batch.push(next),
                    Err(_) => break,
                }
            }
            if let Some(reason) = &broken {
                for append in batch.drain(..) {
                    let _ = append.done.send(Err(StoreError::Unavailable(reason.clone())));
                }
                continue;
            }
            buffer.clear();
            let mut spans = 0;
            for append in &batch {
                buffer.extend_from_slice(&(append.payload.len() as u32).to_le_bytes());
                buffer.extend_from_slice(&crc32fast::hash(&append.payload).to_le_bytes());
                buffer.extend_from_slice(&append.payload);
                spans += append.spans;
            }
            let segment = self.segments.lock().active;
            // Count the spans before anyone can learn the segment id, so it cannot be deleted early.
            *self.segments.lock().outstanding.entry(segment).or_insert(0) += spans;
            let result = self.file.write_all(&buffer).and_then(|_| if self.sync { self.file.sync_data() } else { Ok(()) });
            match result {
                Ok(()) => {
                    self.written += buffer.len() as u64;
                    self.stats.bytes_written.fetch_add(buffer.len() as u64, std::sync::atomic::Ordering::Relaxed);
                    self.stats.syncs.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    for append in batch.drain(..) {
                        let _ = append.done.send(Ok(segment));
                    }
                }
                Err(error) => {
                    let reason = format!("write-ahead log failed ({error}); refusing writes until restart");
                    tracing::error!(message = "write-ahead log failed", %error);
                    broken = Some(reason.clone());
                    for append in batch.drain(..) {
                        let _ = append.done.send(Err(StoreError::Unavailable(reason.clone())));
                    }
                    continue;
                }
            }
            if self.written >= self.segment_bytes {
                self.roll();
            }
        }
    }

    fn roll(&mut self) {
        let mut segments = self.segments.lock();
        let next = segments.active + 1;
        match create_segment(&segments.dir, next) {
            Ok(file) => {
                self.file = file;
                self.written = 0;
                segments.active = next;
                segments.outstanding.entry(next).or_insert(0);
                segments.delete_finished();
            }
            Err(error) => {
                tracing::warn!(message = "could not start a new WAL segment; continuing in the current one", %error)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn append_replay_and_torn_tail() {
        let dir = tempdir();
        {
            let (wal, replayed) = Wal::open(&dir, 1 << 20, true).unwrap();
            assert!(replayed.is_empty());
            for i in 0..10u8 {
                wal.append(vec![i; 100].into(), 1).await.unwrap();
            }
        }
        // Tear the last record in half, as a crash mid-write would.
        let path = segment_path(&dir, 1);
        let len = fs::metadata(&path).unwrap().len();
        OpenOptions::new().write(true).open(&path).unwrap().set_len(len - 50).unwrap();
        let (_wal, replayed) = Wal::open(&dir, 1 << 20, true).unwrap();
        assert_eq!(replayed.len(), 9);
        assert!(replayed.iter().enumerate().all(|(i, r)| r.payload == vec![i as u8; 100]));
        assert_eq!(fs::metadata(&path).unwrap().len(), 9 * 108);
    }

    #[tokio::test]
    async fn segments_are_deleted_once_released() {
        let dir = tempdir();
        let (wal, _) = Wal::open(&dir, 200, true).unwrap();
        let first = wal.append(vec![1; 300].into(), 3).await.unwrap();
        let second = wal.append(vec![2; 10].into(), 1).await.unwrap();
        assert_ne!(first, second, "the first record filled its segment");
        assert!(segment_path(&dir, first).exists());
        wal.release(first, 2);
        assert!(segment_path(&dir, first).exists());
        wal.release(first, 1);
        assert!(!segment_path(&dir, first).exists());
    }

    pub(crate) fn tempdir() -> PathBuf {
        let dir = std::env::temp_dir().join(format!("clew-wal-test-{}-{}", std::process::id(), rand_suffix()));
        fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn rand_suffix() -> u64 {
        use std::sync::atomic::{AtomicU64, Ordering};
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        COUNTER.fetch_add(1, Ordering::Relaxed) * 1000
            + std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_nanos() as u64
    }
}
