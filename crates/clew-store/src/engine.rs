//! The embedded storage engine: a local data directory with `wal/` and `blocks/`.

use std::cell::Cell;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use clew_ingest::Limits;
use clew_model::{Span, TraceId, assemble_borrowed, trace_flags};
use cpu_time::ThreadTime;
use datafusion::arrow::array::{Array, ArrayRef, AsArray, BooleanArray, RecordBatch};
use datafusion::arrow::compute::filter_record_batch;
use datafusion::arrow::datatypes::Int64Type;
use datafusion::catalog::TableProvider;
use datafusion::parquet::arrow::ProjectionMask;
use datafusion::parquet::arrow::arrow_reader::{
    ArrowPredicateFn, ArrowReaderMetadata, ArrowReaderOptions, ParquetRecordBatchReaderBuilder, RowFilter, RowSelection, RowSelector,
};
use datafusion::parquet::basic::{Compression, Encoding, ZstdLevel};
use datafusion::parquet::bloom_filter::Sbbf;
use datafusion::parquet::file::metadata::PageIndexPolicy;
use datafusion::parquet::file::metadata::SortingColumn;
use datafusion::parquet::file::properties::{EnabledStatistics, WriterProperties};
use datafusion::parquet::file::statistics::Statistics;
use datafusion::parquet::schema::types::ColumnPath;
use futures::future::BoxFuture;
use parking_lot::{Mutex, RwLock};
use prost::Message;
use serde::{Deserialize, Serialize};

use crate::block::{
    BatchBuilder, DEDICATED, SCHEMA, SPAN_COLUMNS, StoredSpan, block_metadata, known_columns, open_block, spans_from_batches, upgrade,
};
use crate::head::{Head, PendingSpan};
use crate::paths::{read_paths, write_paths};
use crate::rollup::{AdoptionRollup, Rollup, RollupBuilder, read_adoption, read_rollup, write_adoption, write_rollup};
use crate::rollup_cache::{RollupCache, Whole};
use crate::span_metrics::SpanMetrics;
use crate::table::SpansTable;
use crate::wal::{SegmentId, Wal};
use crate::writer::{BlockWriter, interleave_columns, spread};
use crate::{Appended, RollupRows, SpanFilter, Storage, StoreConfig, StoreError, StoreStats, WritePathSeconds};

/// What is known of a block without opening it; stored beside it as JSON.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BlockMeta {
    pub id: String,
    pub span_count: u64,
    pub trace_count: u64,
    pub file_bytes: u64,
    pub min_start_unix_nano: i64,
    pub max_end_unix_nano: i64,
    pub services: Vec<String>,
    pub compaction_level: u32,
    pub created_unix_seconds: u64,
    /// Blocks this one was compacted from: if they are still on disk after a crash, they are
    /// deleted at start-up instead of being read twice.
    #[serde(default)]
    pub replaces: Vec<String>,
    #[serde(skip)]
    pub path: PathBuf,
}

#[derive(Default)]
struct AssembledBuffer {
    batches: Vec<RecordBatch>,
    /// The call rollup of each batch, computed when it was assembled.
    rollups: Vec<Arc<Rollup>>,
    /// The time window each batch's traces start in.
    windows: Vec<i64>,
    /// Those rollups as one (made on first read, dropped when they change): calls and the
    /// roots they started in other batches pair up, as they will in the block.
    combined: Option<Arc<Rollup>>,
    rows: usize,
    /// Memory the batches hold.
    bytes: usize,
    /// Memory the last assembled chunk added: the next is expected to add as much.
    last_chunk_bytes: usize,
    /// Rows and memory of the cut being written (still in the buffer until it is).
    cutting: (usize, usize),
    /// Spans held per log segment, by the time window their traces start in.
    segments: BTreeMap<i64, HashMap<SegmentId, u64>>,
    oldest: Option<Instant>,
}

/// What a query copies of the pending traces while they cannot move.
enum PendingCopy {
    /// Their rows, made by an earlier query of the same pending spans.
    Rows(Vec<RecordBatch>),
    /// Their spans, packed; with the head's generation and the filter that chose them when
    /// they are all the head's (their rows can then serve the next query whose filter that
    /// one covers, until the head changes).
    Spans { traces: Vec<(TraceId, Vec<PendingSpan>)>, cache_key: Option<(u64, SpanFilter)> },
}

/// The rows of a cut: batches of the buffer's first `taken` in the chosen windows, with the
/// log segments' counts of those windows at the time.
struct Cut {
    taken: usize,
    chosen: BTreeMap<i64, HashMap<SegmentId, u64>>,
    parts: BTreeMap<i64, (Vec<RecordBatch>, Vec<Arc<Rollup>>)>,
}

/// Trace IDs assembled lately, in two generations, so that a late span is recognised as a
/// fragment without remembering every trace forever.
#[derive(Default)]
struct Recent {
    current: HashSet<TraceId>,
    previous: HashSet<TraceId>,
    /// The adjusted counts above 1 of those traces (sampled ones), in the same generations:
    /// a fragment lacks the root that says how it was sampled.
    current_weights: HashMap<TraceId, u32>,
    previous_weights: HashMap<TraceId, u32>,
    rotated: Option<Instant>,
}

impl Recent {
    const PERIOD: Duration = Duration::from_secs(600);
    const MAX: usize = 2_000_000;

    fn contains(&self, id: &TraceId) -> bool {
        self.current.contains(id) || self.previous.contains(id)
    }

    fn insert(&mut self, id: TraceId, now: Instant) {
        let rotated = *self.rotated.get_or_insert(now);
        if now.duration_since(rotated) > Self::PERIOD || self.current.len() >= Self::MAX {
            self.previous = std::mem::take(&mut self.current);
            self.previous_weights = std::mem::take(&mut self.current_weights);
            self.rotated = Some(now);
        }
        self.current.insert(id);
    }

    /// Remembers the adjusted count of a trace just assembled.
    fn weigh(&mut self, id: TraceId, weight: u32) {
        if weight > 1 && self.current.contains(&id) {
            self.current_weights.insert(id, weight);
        }
    }

    fn weight(&self, id: &TraceId) -> Option<u32> {
        self.current_weights.get(id).or_else(|| self.previous_weights.get(id)).copied()
    }
}

#[derive(Default)]
struct Counters {
    appended: AtomicU64,
    duplicates: AtomicU64,
    traces_assembled: AtomicU64,
    fragments: AtomicU64,
    /// CPU time spent computing rollups, summed over threads.
    rollup_nanos: AtomicU64,
    /// Wall time of the write path's stages: taking ready traces from the head, assembling
    /// them (on several threads), writing blocks, compacting them.
    take_nanos: AtomicU64,
    assembly_nanos: AtomicU64,
    block_write_nanos: AtomicU64,
    /// Assembly's waits for the previous block write before cutting the next.
    block_wait_nanos: AtomicU64,
    compaction_nanos: AtomicU64,
    /// Compaction rounds left for later because ingest was behind.
    compactions_deferred: AtomicU64,
}

/// Adds the time since `started` to `counter`.
fn add_elapsed(counter: &AtomicU64, started: Instant) {
    counter.fetch_add(started.elapsed().as_nanos() as u64, Ordering::Relaxed);
}

/// `work` over `items` split into contiguous parts, one per core (at most `max_threads`
/// parts): each part's result, in order.
fn on_cores<T: Sync, R: Send>(items: &[T], max_threads: usize, work: impl Fn(&[T]) -> R + Sync) -> Vec<R> {
    let threads = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1).clamp(1, max_threads.max(1)).min(items.len());
    if threads <= 1 {
        return vec![work(items)];
    }
    let work = &work;
    std::thread::scope(|scope| {
        let workers: Vec<_> = items.chunks(items.len().div_ceil(threads)).map(|part| scope.spawn(move || work(part))).collect();
        workers.into_iter().map(|worker| worker.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic))).collect()
    })
}

/// Adds the CPU time this thread spent since `started` (not its waits for a core).
fn add_cpu(counter: &AtomicU64, started: ThreadTime) {
    counter.fetch_add(started.elapsed().as_nanos() as u64, Ordering::Relaxed);
}

/// The embedded store. Create with [`EmbeddedStore::open`], then [`EmbeddedStore::start`].
pub struct EmbeddedStore {
    config: StoreConfig,
    wal: Wal,
    head: Head,
    /// Traces taken from the head and being assembled: still visible to queries.
    in_flight: Mutex<Vec<(TraceId, Arc<Vec<PendingSpan>>)>>,
    assembled: Mutex<AssembledBuffer>,
    blocks: RwLock<Vec<Arc<BlockMeta>>>,
    /// Held for writing while data moves from one stage to the next, so that a snapshot sees
    /// every span exactly once.
    stages: RwLock<()>,
    /// One maintenance pass (assembly, block cuts) at a time.
    maintenance: Mutex<()>,
    /// One compaction or retention pass at a time; taken after `maintenance` when both are.
    compaction: Mutex<()>,
    recent: Mutex<Recent>,
    pending_cache: Mutex<Option<(u64, SpanFilter, Vec<RecordBatch>)>>,
    /// Replaced blocks, deleted a while later so that running queries can finish reading them.
    graveyard: Mutex<Vec<(PathBuf, Instant)>>,
    counters: Counters,
    blocks_dir: PathBuf,
    /// Footer, page index and bloom filters of each block, read once.
    readers: Mutex<HashMap<String, Arc<BlockReader>>>,
    /// The blocks' rollups: merged across minutes for every block, per minute for the most
    /// recently read.
    rollups: RollupCache,
    /// Counted from each assembled batch's rollup.
    span_metrics: Mutex<SpanMetrics>,
}

/// What a trace-by-ID lookup needs of a block, kept in memory.
struct BlockReader {
    metadata: ArrowReaderMetadata,
    /// Per row group: (min trace ID, max trace ID, bloom filter).
    row_groups: Vec<(Vec<u8>, Vec<u8>, Option<Sbbf>)>,
    /// Per row group, its pages' trace-ID ranges (from the page index; empty without one).
    pages: Vec<Vec<TracePage>>,
}

/// The trace IDs one page of a row group holds, and its length in rows.
struct TracePage {
    min: Vec<u8>,
    max: Vec<u8>,
    rows: usize,
}

impl std::fmt::Debug for EmbeddedStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbeddedStore").field("data_dir", &self.config.data_dir).finish_non_exhaustive()
    }
}

/// What queries see at one moment.
#[derive(Clone, Debug)]
pub(crate) struct Snapshot {
    pub memory: Vec<RecordBatch>,
    pub blocks: Vec<Arc<BlockMeta>>,
}

/// Rows are sorted, merged and written this many at a time, and a page holds at most this
/// many (fewer when [`PAGE_BYTES`] is reached first).
const ROW_GROUP_ROWS: usize = 8 * 1024;
/// Small blocks compaction leaves for later while ingest is behind: beyond, it merges anyway.
const MAX_DEFERRED_BLOCKS: usize = 64;
/// Rows per row group: larger groups cost scans fewer column chunks to open and decompressor
/// contexts to make; lookups select pages within them by the page index.
const ROW_GROUP_MAX_ROWS: usize = 64 * 1024;

/// The uncompressed size a data page is cut at, checked every [`PAGE_CHECK_ROWS`] rows.
const PAGE_BYTES: usize = 32 * 1024;
const PAGE_CHECK_ROWS: usize = 512;

/// Columns compressed with LZ4 rather than zstd. The Parquet reader makes a zstd compressor
/// and decompressor for every column chunk it opens, which costs a trace lookup more than
/// the decompression itself; LZ4 needs neither. These are the columns of few distinct values
/// (short dictionary indices), and the two that every lookup reads where zstd saves little:
/// trace IDs (sorted, so repeated in runs) and each span's resource (a dictionary index).
const LZ4_COLUMNS: &[&str] = &[
    "trace_id",
    "resource",
    "name",
    "kind",
    "status_code",
    "status_message",
    "parent_service",
    "parent_name",
    "depth",
    "span_flags",
    "trace_start_unix_nano",
    "trace_flags",
];

/// How a block is written: zstd at `zstd_level` but for the [`LZ4_COLUMNS`], page limits,
/// the trace-ID bloom filter and page index, and per-column encodings.
fn block_properties(zstd_level: i32) -> Result<WriterProperties, StoreError> {
    let properties = WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::try_new(zstd_level)?))
        .set_max_row_group_row_count(Some(ROW_GROUP_MAX_ROWS))
        .set_data_page_row_count_limit(ROW_GROUP_ROWS)
        // A trace lookup decompresses every page its rows fall in, one per column: small
        // pages keep that work small. The limit is checked every `write_batch_size` rows.
        .set_write_batch_size(PAGE_CHECK_ROWS)
        .set_data_page_size_limit(PAGE_BYTES)
        .set_column_bloom_filter_max_ndv(ColumnPath::from("trace_id"), (ROW_GROUP_MAX_ROWS / 4) as u64)
        // A false positive costs a lookup one page of trace IDs per block.
        .set_column_bloom_filter_fpp(ColumnPath::from("trace_id"), 0.005)
        .set_column_bloom_filter_enabled(ColumnPath::from("trace_id"), true)
        // Rows are in trace-ID order, so only trace-ID pages have narrow ranges worth an
        // index entry; durations keep theirs for minimum-duration searches.
        .set_statistics_enabled(EnabledStatistics::None)
        .set_column_statistics_enabled(ColumnPath::from("trace_id"), EnabledStatistics::Page)
        .set_column_statistics_enabled(ColumnPath::from("duration_nanos"), EnabledStatistics::Page)
        .set_column_dictionary_enabled(ColumnPath::from("trace_id"), false)
        .set_column_dictionary_enabled(ColumnPath::from("span_id"), false)
        // Random bytes: compression gains nothing, and every zstd column chunk a lookup
        // opens costs it a compression and a decompression context.
        .set_column_compression(ColumnPath::from("span_id"), Compression::UNCOMPRESSED)
        // Random-looking integers: byte-stream split leaves their high bytes to zstd.
        .set_column_dictionary_enabled(ColumnPath::from("start_offset_nanos"), false)
        .set_column_encoding(ColumnPath::from("start_offset_nanos"), Encoding::BYTE_STREAM_SPLIT)
        .set_column_dictionary_enabled(ColumnPath::from("duration_nanos"), false)
        .set_column_encoding(ColumnPath::from("duration_nanos"), Encoding::BYTE_STREAM_SPLIT)
        .set_column_dictionary_enabled(ColumnPath::from("self_nanos"), false)
        .set_column_encoding(ColumnPath::from("self_nanos"), Encoding::BYTE_STREAM_SPLIT)
        .set_column_dictionary_enabled(ColumnPath::from("critical_path_nanos"), false)
        .set_column_encoding(ColumnPath::from("critical_path_nanos"), Encoding::BYTE_STREAM_SPLIT)
        .set_sorting_columns(Some(vec![SortingColumn { column_idx: 0, descending: false, nulls_first: false }]));
    // Integer columns keep their range per row group (times, durations, counts, the HTTP
    // status: what searches prune on), and so do the span status (few short values: a row
    // group without errors is skipped by a search for them) and the dedicated attribute
    // columns (mostly null: their null counts skip row groups without the attribute). Other
    // string and binary columns keep none: their range over thousands of rows of many traces
    // covers nearly every value, while comparing every value to keep it cost a fifth of the
    // writing.
    let kept = |field: &&datafusion::arrow::datatypes::FieldRef| {
        let name = field.name().as_str();
        (field.data_type().is_integer() && name != "duration_nanos")
            || name == "status_code"
            || DEDICATED.iter().any(|(_, column)| *column == name)
    };
    let properties =
        SCHEMA.fields().iter().filter(kept).fold(properties, |p, field| {
            p.set_column_statistics_enabled(ColumnPath::from(field.name().as_str()), EnabledStatistics::Chunk)
        });
    Ok(LZ4_COLUMNS.iter().fold(properties, |p, column| p.set_column_compression(ColumnPath::from(*column), Compression::LZ4_RAW)).build())
}

fn now_unix_seconds() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

impl EmbeddedStore {
    /// Opens (or creates) the data directory and replays the log: every span acknowledged
    /// before a crash is pending again.
    pub fn open(config: StoreConfig) -> Result<Arc<Self>, StoreError> {
        let started = Instant::now();
        let blocks_dir = config.data_dir.join("blocks");
        fs::create_dir_all(&blocks_dir)?;
        let (wal, replayed) = Wal::open(&config.data_dir.join("wal"), config.wal_segment_bytes, config.wal_sync)?;
        let blocks = load_blocks(&blocks_dir)?;
        let rollup_cache_bytes = config.rollup_cache_bytes;
        let store = Arc::new(Self {
            config,
            wal,
            head: Head::default(),
            in_flight: Mutex::new(Vec::new()),
            assembled: Mutex::new(AssembledBuffer::default()),
            blocks: RwLock::new(blocks),
            stages: RwLock::new(()),
            maintenance: Mutex::new(()),
            compaction: Mutex::new(()),
            recent: Mutex::new(Recent::default()),
            pending_cache: Mutex::new(None),
            graveyard: Mutex::new(Vec::new()),
            counters: Counters::default(),
            blocks_dir,
            readers: Mutex::new(HashMap::new()),
            rollups: RollupCache::new(rollup_cache_bytes),
            span_metrics: Mutex::new(SpanMetrics::default()),
        });
        // Replayed spans were checked when they were first accepted.
        let lenient = Limits { min_start_unix_seconds: 0, max_future_seconds: u64::MAX / 2_000_000_000, ..Limits::default() };
        let mut records = Vec::with_capacity(replayed.len());
        for record in replayed {
            let request = clew_ingest::collector::ExportTraceServiceRequest::decode(record.payload.as_slice())
                .map_err(|e| StoreError::Corrupt(format!("WAL record with a valid checksum did not decode: {e}")))?;
            let spans = clew_ingest::from_otlp(request, &lenient, u64::MAX / 2).spans;
            store.wal.register(record.segment, spans.len() as u64);
            records.push((record.segment, spans));
        }
        // A segment outlives the blocks that took some of its spans (it is deleted only when
        // all of them are written), so spans already in a block are skipped, not stored twice.
        let earliest = records.iter().flat_map(|(_, spans)| spans.iter()).map(|s| s.start_time_unix_nano as i64).min();
        let in_blocks = match earliest {
            Some(earliest) => store.block_span_ids_since(earliest)?,
            None => HashSet::new(),
        };
        let mut replayed_spans = 0u64;
        let now = Instant::now();
        for (segment, spans) in records {
            let before = spans.len() as u64;
            let fresh: Vec<Span> = spans.into_iter().filter(|s| !in_blocks.contains(&(s.trace_id, s.span_id))).collect();
            let skipped = before - fresh.len() as u64;
            let inserted = store.head.insert(fresh, segment, now);
            store.wal.release(segment, inserted.duplicates + skipped);
            replayed_spans += inserted.added;
        }
        tracing::info!(
            message = "store opened",
            data_dir = %store.config.data_dir.display(),
            replayed_spans,
            blocks = store.blocks.read().len(),
            elapsed_ms = started.elapsed().as_millis() as u64
        );
        Ok(store)
    }

    /// Runs assembly and block cutting (every 250 ms) and compaction and retention (every
    /// 10 s) in the background. They take separate locks: merging blocks for seconds does not
    /// hold up assembly, which would fill the head and push clients back.
    pub fn start(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        let store = Arc::clone(self);
        tokio::spawn(async move {
            tokio::join!(
                Self::every(Arc::clone(&store), Duration::from_millis(250), "store maintenance", |s| s.maintain(false)),
                Self::every(store, Duration::from_secs(10), "store compaction", |s| s.compact_and_expire(Duration::from_secs(5), true)),
            );
        })
    }

    async fn every(store: Arc<Self>, period: Duration, what: &'static str, work: fn(&Self) -> Result<(), StoreError>) {
        let mut interval = tokio::time::interval(period);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // The first tick is immediate: compaction waits a period after start.
        interval.tick().await;
        loop {
            interval.tick().await;
            let worker = Arc::clone(&store);
            match tokio::task::spawn_blocking(move || work(&worker)).await {
                Ok(Ok(())) => {}
                Ok(Err(error)) => tracing::error!(message = "store background work failed", task = what, %error),
                // At shutdown the runtime cancels this task; that is not a failure.
                Err(error) if error.is_cancelled() => break,
                Err(error) => tracing::error!(message = "store background work panicked", task = what, %error),
            }
        }
    }

    pub fn config(&self) -> &StoreConfig {
        &self.config
    }

    /// One maintenance pass: assemble quiet traces, cut a block when due. With `flush_all`,
    /// everything pending is assembled and written now, then blocks are compacted and expired.
    ///
    /// A block is written on a thread of its own while the next traces are assembled, one
    /// block at a time: a block write uses about one core, and assembly the rest. So that the
    /// rows being written and those assembled meanwhile stay within `block_max_bytes`
    /// together, a block is cut at half of it.
    pub fn maintain(&self, flush_all: bool) -> Result<(), StoreError> {
        let _one_at_a_time = self.maintenance.lock();
        std::thread::scope(|scope| {
            let mut writing: Option<std::thread::ScopedJoinHandle<'_, Result<(), StoreError>>> = None;
            let finish = |writing: &mut Option<std::thread::ScopedJoinHandle<'_, Result<(), StoreError>>>| match writing.take() {
                Some(writer) => writer.join().expect("a block write does not panic"),
                None => Ok(()),
            };
            let assembled = loop {
                let assembled_some = self.assemble_chunk(flush_all);
                // Everything is written at a flush and when the oldest rows have waited long
                // enough; a full buffer may keep its newest window.
                let (full, all) = {
                    let buffer = self.assembled.lock();
                    let (rows, bytes) = (buffer.rows.saturating_sub(buffer.cutting.0), buffer.bytes.saturating_sub(buffer.cutting.1));
                    let aged = buffer.oldest.is_some_and(|t| t.elapsed().as_secs_f64() >= self.config.block_max_age_seconds);
                    // Cut before the next chunk would cross the limit, not after.
                    let expected = (bytes + buffer.last_chunk_bytes) as u64;
                    let too_big = self.config.block_max_bytes > 0 && rows > 0 && expected >= self.config.block_max_bytes / 2;
                    let full = rows >= self.config.block_max_spans || too_big;
                    (full, rows > 0 && ((flush_all && !assembled_some) || aged))
                };
                if all || full {
                    // The previous block is written first: its rows leave the buffer.
                    let waited = Instant::now();
                    let written = finish(&mut writing);
                    add_elapsed(&self.counters.block_wait_nanos, waited);
                    if let Err(error) = written {
                        break Err(error);
                    }
                    let cut = self.begin_cut(all);
                    writing = Some(scope.spawn(move || {
                        let started = Instant::now();
                        let written = self.finish_cut(cut);
                        add_elapsed(&self.counters.block_write_nanos, started);
                        written
                    }));
                }
                if !assembled_some {
                    break Ok(());
                }
            };
            assembled.and(finish(&mut writing))
        })?;
        if flush_all {
            self.compact_and_expire(Duration::from_secs(2), false)?;
        }
        Ok(())
    }

    /// Merges small blocks for up to `budget`, then applies retention. With `yielding`,
    /// compaction waits while the write path is behind ([`Self::write_path_behind`]) and
    /// fewer than [`MAX_DEFERRED_BLOCKS`] small blocks wait: a burst of ingest gets the CPU,
    /// and the blocks it leaves are merged once it has passed.
    fn compact_and_expire(&self, budget: Duration, yielding: bool) -> Result<(), StoreError> {
        let _one_at_a_time = self.compaction.lock();
        if yielding && self.write_path_behind() && self.mergeable_blocks() < MAX_DEFERRED_BLOCKS {
            self.counters.compactions_deferred.fetch_add(1, Ordering::Relaxed);
        } else {
            let started = Instant::now();
            let compacted = self.compact_for(budget);
            add_elapsed(&self.counters.compaction_nanos, started);
            compacted?;
        }
        self.expire()?;
        self.bury();
        Ok(())
    }

    /// Assembles a bounded chunk of ready traces (so that memory stays flat); false when
    /// nothing was ready.
    fn assemble_chunk(&self, flush_all: bool) -> bool {
        const CHUNK_SPANS: usize = 50_000;
        let now = Instant::now();
        let idle = Duration::from_secs_f64(self.config.trace_idle_seconds.max(0.0));
        let max_age = Duration::from_secs_f64(self.config.trace_max_age_seconds.max(0.0));
        let ready = {
            let _moving = self.stages.write();
            let ready = self.head.take_ready(now, idle, max_age, flush_all, CHUNK_SPANS);
            let mut in_flight = self.in_flight.lock();
            let mut out = Vec::with_capacity(ready.len());
            for trace in ready {
                let spans = Arc::new(trace.spans);
                in_flight.push((trace.trace_id, Arc::clone(&spans)));
                out.push((trace.trace_id, spans, trace.segments));
            }
            out
        };
        add_elapsed(&self.counters.take_nanos, now);
        if ready.is_empty() {
            return false;
        }
        let assembly_started = Instant::now();
        let mut fragment_flags = Vec::with_capacity(ready.len());
        {
            let mut recent = self.recent.lock();
            for (trace_id, _, _) in &ready {
                let fragment = if recent.contains(trace_id) { trace_flags::FRAGMENT } else { 0 };
                let mut known_weight = None;
                if fragment != 0 {
                    self.counters.fragments.fetch_add(1, Ordering::Relaxed);
                    known_weight = recent.weight(trace_id);
                }
                recent.insert(*trace_id, now);
                fragment_flags.push((fragment, known_weight));
            }
        }
        // Traces assembled with an adjusted count above 1, for their late fragments.
        let sampled: Mutex<Vec<(TraceId, u32)>> = Mutex::new(Vec::new());
        let sampled = &sampled;
        // Traces are batched by the time window they start in, so that a block holds one
        // window's traces even when a backlog or an import brings many hours at once.
        let window = self.window_nanos();
        type Assembled = (i64, RecordBatch, Rollup, HashMap<SegmentId, u64>);
        // Assembly is the costliest step of the write path: the chunk is split across threads.
        let work: Vec<_> = ready.iter().zip(&fragment_flags).collect();
        let batches: Vec<Assembled> = on_cores(&work, 8, |traces| {
            let mut builders: BTreeMap<i64, (BatchBuilder, HashMap<SegmentId, u64>)> = BTreeMap::new();
            // Nearly always one window: the first builder is sized for them all.
            let rows = traces.iter().map(|((_, spans, _), _)| spans.len()).sum();
            let bytes = traces.iter().flat_map(|((_, spans, _), _)| spans.iter()).map(PendingSpan::heap_bytes).sum();
            let mut size = Some((rows, bytes));
            for ((trace_id, spans, trace_segments), (fragment, known_weight)) in traces.iter().copied() {
                let spans = self.head.unpack(*trace_id, spans);
                let mut trace = assemble_borrowed(&spans);
                // A late fragment without the root's sampling marks counts as its trace did.
                match known_weight {
                    Some(weight) if trace.facts.adjusted_count <= 1 => trace.facts.adjusted_count = *weight,
                    _ if trace.facts.adjusted_count > 1 => sampled.lock().push((*trace_id, trace.facts.adjusted_count)),
                    _ => {}
                }
                let slot = (trace.facts.start_unix_nano as i64).div_euclid(window);
                let (builder, segments) = builders.entry(slot).or_insert_with(|| {
                    let (rows, bytes) = size.take().unwrap_or_default();
                    (BatchBuilder::with_capacity(rows, bytes), HashMap::new())
                });
                builder.push_trace(&trace, *fragment);
                for (segment, count) in trace_segments {
                    *segments.entry(*segment).or_insert(0) += count;
                }
            }
            builders
                .into_iter()
                .map(|(slot, (builder, segments))| {
                    let batch = builder.finish();
                    let started = ThreadTime::now();
                    let rollup = RollupBuilder::from_batches(&self.config.traffic_source_attribute, [&batch]);
                    add_cpu(&self.counters.rollup_nanos, started);
                    (slot, batch, rollup, segments)
                })
                .collect::<Vec<_>>()
        })
        .into_iter()
        .flatten()
        .collect();
        self.counters.traces_assembled.fetch_add(ready.len() as u64, Ordering::Relaxed);
        {
            let mut recent = self.recent.lock();
            for (trace_id, weight) in sampled.lock().drain(..) {
                recent.weigh(trace_id, weight);
            }
        }
        {
            let mut metrics = self.span_metrics.lock();
            for (_, _, rollup, _) in &batches {
                metrics.add(rollup);
            }
        }
        let _moving = self.stages.write();
        let mut buffer = self.assembled.lock();
        buffer.last_chunk_bytes = 0;
        for (slot, batch, rollup, segments) in batches {
            buffer.rows += batch.num_rows();
            buffer.bytes += batch.get_array_memory_size();
            buffer.last_chunk_bytes += batch.get_array_memory_size();
            buffer.batches.push(batch);
            buffer.rollups.push(Arc::new(rollup));
            buffer.windows.push(slot);
            buffer.combined = None;
            let held = buffer.segments.entry(slot).or_default();
            for (segment, count) in segments {
                *held.entry(segment).or_insert(0) += count;
            }
        }
        buffer.oldest.get_or_insert(now);
        self.in_flight.lock().clear();
        add_elapsed(&self.counters.assembly_nanos, assembly_started);
        true
    }

    /// The compaction window in nanoseconds: blocks hold traces that start in one window.
    fn window_nanos(&self) -> i64 {
        let window = (self.config.compaction_window_seconds * 1e9) as i64;
        if window > 0 { window } else { i64::MAX }
    }

    /// Writes the assembled buffer as blocks ([`Self::begin_cut`], [`Self::finish_cut`]).
    #[cfg(test)]
    fn cut_block(&self, all: bool) -> Result<(), StoreError> {
        let cut = self.begin_cut(all);
        self.finish_cut(cut)
    }

    /// Chooses the rows of a cut: the assembled buffer is
    /// written as one block per time window ([`Self::finish_cut`]). With `all` false (the
    /// buffer is full), the newest window stays in memory unless it holds more than half the
    /// rows: a backlog arrives in time order, and the newest window is still filling, so each
    /// window is written once instead of in pieces that compaction would merge again.
    fn begin_cut(&self, all: bool) -> Cut {
        let mut buffer = self.assembled.lock();
        let mut rows_by_window: BTreeMap<i64, usize> = BTreeMap::new();
        for (batch, slot) in buffer.batches.iter().zip(&buffer.windows) {
            *rows_by_window.entry(*slot).or_insert(0) += batch.num_rows();
        }
        let keep = match rows_by_window.last_key_value() {
            Some((&newest, &rows)) if !all && rows_by_window.len() > 1 && rows * 2 <= buffer.rows => Some(newest),
            _ => None,
        };
        let chosen: BTreeMap<i64, HashMap<SegmentId, u64>> =
            buffer.segments.iter().filter(|(slot, _)| Some(**slot) != keep).map(|(slot, segments)| (*slot, segments.clone())).collect();
        let mut parts: BTreeMap<i64, (Vec<RecordBatch>, Vec<Arc<Rollup>>)> = BTreeMap::new();
        for ((batch, rollup), slot) in buffer.batches.iter().zip(&buffer.rollups).zip(&buffer.windows) {
            if Some(*slot) != keep {
                let entry = parts.entry(*slot).or_default();
                entry.0.push(batch.clone());
                entry.1.push(Arc::clone(rollup));
            }
        }
        let batches = parts.values().flat_map(|(batches, _)| batches);
        buffer.cutting = batches.fold((0, 0), |(rows, bytes), b| (rows + b.num_rows(), bytes + b.get_array_memory_size()));
        // The rows assembled while these are written are aged from their own arrival.
        if keep.is_none() {
            buffer.oldest = None;
        }
        Cut { taken: buffer.batches.len(), chosen, parts }
    }

    /// Writes a cut's blocks, then drops its rows from memory and lets the log forget them.
    /// Should rows have been added meanwhile, to the same windows too, only the rows and log
    /// counts taken at the start of the cut are dropped.
    fn finish_cut(&self, cut: Cut) -> Result<(), StoreError> {
        let Cut { taken, chosen, parts } = cut;
        let mut metas = Vec::new();
        for (batches, rollups) in parts.into_values() {
            // On failure nothing is dropped: the rows stay in memory and the log.
            match self.write_block(&batches, rollups, 0, Vec::new()) {
                Ok(meta) => metas.push(Arc::new(meta)),
                Err(error) => {
                    self.assembled.lock().cutting = (0, 0);
                    return Err(error);
                }
            }
        }
        {
            let _moving = self.stages.write();
            let mut buffer = self.assembled.lock();
            let written: Vec<bool> =
                buffer.windows.iter().enumerate().map(|(index, slot)| index < taken && chosen.contains_key(slot)).collect();
            drop_written(&mut buffer.batches, &written);
            drop_written(&mut buffer.rollups, &written);
            drop_written(&mut buffer.windows, &written);
            buffer.combined = None;
            buffer.rows = buffer.batches.iter().map(RecordBatch::num_rows).sum();
            buffer.bytes = buffer.batches.iter().map(RecordBatch::get_array_memory_size).sum();
            buffer.cutting = (0, 0);
            for (slot, segments) in &chosen {
                let Some(held) = buffer.segments.get_mut(slot) else { continue };
                for (segment, count) in segments {
                    if let Some(left) = held.get_mut(segment) {
                        *left = left.saturating_sub(*count);
                    }
                }
                held.retain(|_, count| *count > 0);
                if held.is_empty() {
                    buffer.segments.remove(slot);
                }
            }
            buffer.oldest = if buffer.rows > 0 { Some(Instant::now()) } else { None };
            self.blocks.write().extend(metas);
        }
        // Only the segments counted at the time of the copy were written.
        for segments in chosen.into_values() {
            for (segment, count) in segments {
                self.wal.release(segment, count);
            }
        }
        Ok(())
    }

    /// Sorts rows by (trace ID, span ID), drops duplicate spans, writes a Parquet block. Rows
    /// are gathered one row group at a time, so writing costs memory for one row group only.
    /// The block's rollup is the sum of the batches' (computed at assembly) when each trace
    /// lies in one batch and no span was dropped as a duplicate; otherwise it is computed anew.
    fn write_block(
        &self,
        batches: &[RecordBatch],
        parts: Vec<Arc<Rollup>>,
        level: u32,
        replaces: Vec<String>,
    ) -> Result<BlockMeta, StoreError> {
        let order = sorted_unique_rows(batches);
        let rows: usize = batches.iter().map(RecordBatch::num_rows).sum();
        let whole_traces = order.windows(2).all(|pair| {
            let ((a, i), (b, j)) = (pair[0], pair[1]);
            a == b || batches[a].column(0).as_fixed_size_binary().value(i) != batches[b].column(0).as_fixed_size_binary().value(j)
        });
        let reuse = (parts.len() == batches.len() && order.len() == rows && whole_traces).then(|| (parts, Rc::new(Cell::new(false))));
        let sources: Vec<&RecordBatch> = batches.iter().collect();
        let chunks = order.chunks(ROW_GROUP_ROWS).map(|chunk| Ok(interleave_columns(&sources, chunk)?));
        self.write_sorted(chunks, level, replaces, reuse)
    }

    /// Writes rows already sorted by (trace ID, span ID) and free of duplicates, one chunk
    /// (row group) at a time. `reuse`: the rollups of the parts the rows come from, to be added
    /// up unless the flag says their traces or spans overlapped.
    fn write_sorted(
        &self,
        chunks: impl Iterator<Item = Result<RecordBatch, StoreError>>,
        level: u32,
        replaces: Vec<String>,
        reuse: Option<(Vec<Arc<Rollup>>, Rc<Cell<bool>>)>,
    ) -> Result<BlockMeta, StoreError> {
        let mut summary = BlockSummary::default();
        let mut rollup = RollupBuilder::new(&self.config.traffic_source_attribute);
        let created = now_unix_seconds();
        let id = format!("{:020}-{:08x}", SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0), rand_u32());
        let path = self.blocks_dir.join(format!("{id}.parquet"));
        let temporary = self.blocks_dir.join(format!("{id}.parquet.tmp"));
        // Blocks cut from memory are small and nearly all merged again by compaction: they are
        // written fast (zstd 1 costs a third less than 9, for 3% more bytes), and compacted
        // blocks small.
        let properties = block_properties(if level == 0 { 1 } else { 9 })?;
        {
            let file = fs::File::create(&temporary)?;
            let mut writer = BlockWriter::try_new(file, Arc::clone(&SCHEMA), properties)?;
            for batch in chunks {
                let batch = batch?;
                summary.add(&batch);
                if reuse.is_none() {
                    let started = ThreadTime::now();
                    rollup.add(&batch);
                    add_cpu(&self.counters.rollup_nanos, started);
                }
                writer.write(&batch)?;
            }
            let file = writer.finish()?;
            file.sync_all()?;
        }
        fs::rename(&temporary, &path)?;
        // The rollup is in place before the metadata: a block with metadata always has one.
        let started = ThreadTime::now();
        let rollup = match reuse {
            None => rollup.finish(),
            Some((parts, mixed)) if !mixed.get() => Rollup::combine(parts.iter().map(|p| &**p), None),
            // Traces or spans were shared between the parts: counted again from the rows.
            Some(_) => self.rollup_of_file(&path)?,
        };
        add_cpu(&self.counters.rollup_nanos, started);
        write_rollup(&rollup_path(&self.blocks_dir, &id), &rollup.edges)?;
        write_adoption(&adoption_path(&self.blocks_dir, &id), &rollup.adoption)?;
        write_paths(&paths_path(&self.blocks_dir, &id), &rollup.paths)?;
        self.rollups.insert_minutes(&id, Arc::new(rollup));
        let BlockSummary { min_start, max_end, services, traces, rows, .. } = summary;
        let meta = BlockMeta {
            id: id.clone(),
            span_count: rows,
            trace_count: traces,
            file_bytes: fs::metadata(&path)?.len(),
            min_start_unix_nano: min_start,
            max_end_unix_nano: max_end,
            services: services.into_iter().collect(),
            compaction_level: level,
            created_unix_seconds: created,
            replaces,
            path: path.clone(),
        };
        fs::write(self.blocks_dir.join(format!("{id}.json")), serde_json::to_vec_pretty(&meta).expect("serialisable"))?;
        if let Ok(dir) = fs::File::open(&self.blocks_dir) {
            let _ = dir.sync_all();
        }
        tracing::debug!(message = "block written", id, spans = meta.span_count, bytes = meta.file_bytes);
        Ok(meta)
    }

    /// Blocks under half the compaction target, oldest first.
    fn small_blocks(&self) -> Vec<Arc<BlockMeta>> {
        let blocks = self.blocks.read();
        let target = self.config.compaction_target_spans as u64;
        let mut small: Vec<_> = blocks.iter().filter(|b| b.span_count < target / 2).cloned().collect();
        small.sort_by_key(|b| b.min_start_unix_nano);
        small
    }

    /// The compaction window a block's spans start in, or `None` when they reach past the
    /// next one: such a block is merged with no other.
    fn window_slot(&self, block: &BlockMeta) -> Option<i64> {
        let window = self.window_nanos();
        let slot = block.min_start_unix_nano.div_euclid(window);
        (block.max_end_unix_nano.div_euclid(window) <= slot.saturating_add(1)).then_some(slot)
    }

    /// Small blocks that share their time window with another: what compaction would merge.
    fn mergeable_blocks(&self) -> usize {
        let mut per_window: HashMap<i64, usize> = HashMap::new();
        for slot in self.small_blocks().iter().filter_map(|block| self.window_slot(block)) {
            *per_window.entry(slot).or_insert(0) += 1;
        }
        per_window.values().filter(|count| **count > 1).sum()
    }

    /// Whether spans wait for assembly in more than three quarters of the head's room: ingest
    /// is about to be pushed back, and every core is needed to move spans into blocks.
    fn write_path_behind(&self) -> bool {
        let (pending, bytes) = (self.head.span_count(), self.head.bytes());
        pending > self.config.max_pending_spans / 4 * 3
            || (self.config.max_pending_bytes > 0 && bytes > self.config.max_pending_bytes / 4 * 3)
    }

    /// Merges small blocks, oldest first, into blocks of about the target size that cover at
    /// most the compaction window of time.
    fn compact(&self) -> Result<(), StoreError> {
        let chosen = self.next_compaction_run();
        if chosen.is_empty() {
            return Ok(());
        }
        self.merge_blocks(chosen)
    }

    /// The blocks the next compaction round merges: none until four small blocks wait, nor
    /// when the run would be a single block.
    fn next_compaction_run(&self) -> Vec<Arc<BlockMeta>> {
        let small = self.small_blocks();
        if small.len() < 4 {
            return Vec::new();
        }
        let chosen = self.compaction_run(&small);
        if chosen.len() < 2 { Vec::new() } else { chosen }
    }

    /// Merges runs of small blocks for up to a few seconds: a backlog (hours of traces
    /// arriving at once) leaves many small blocks.
    fn compact_for(&self, budget: Duration) -> Result<(), StoreError> {
        let started = Instant::now();
        while started.elapsed() < budget {
            let before = self.blocks.read().len();
            self.compact()?;
            if self.blocks.read().len() == before {
                break;
            }
        }
        Ok(())
    }

    fn merge_blocks(&self, chosen: Vec<Arc<BlockMeta>>) -> Result<(), StoreError> {
        let mut cursors = Vec::new();
        for block in &chosen {
            let reader = open_block(&block.path, ArrowReaderOptions::new())?.with_batch_size(8 * 1024).build()?;
            cursors.push(Cursor::new(reader)?);
        }
        let level = chosen.iter().map(|b| b.compaction_level).max().unwrap_or(0) + 1;
        // The merged block's rollup is the sum of the blocks' unless traces or spans are shared.
        let parts = chosen.iter().map(|b| self.block_rollup(b)).collect::<Result<Vec<_>, _>>()?;
        let mixed = Rc::new(Cell::new(false));
        let merge = Merge { cursors, last: None, last_cursor: 0, mixed: Rc::clone(&mixed) };
        let merged = self.write_sorted(merge, level, chosen.iter().map(|b| b.id.clone()).collect(), Some((parts, mixed)))?;
        tracing::info!(message = "blocks compacted", merged = chosen.len(), spans = merged.span_count, bytes = merged.file_bytes);
        let chosen_ids: HashSet<&str> = chosen.iter().map(|b| b.id.as_str()).collect();
        {
            let _moving = self.stages.write();
            let mut blocks = self.blocks.write();
            blocks.retain(|b| !chosen_ids.contains(b.id.as_str()));
            blocks.push(Arc::new(merged));
        }
        self.retire(&chosen);
        Ok(())
    }

    /// The first run of small blocks (sorted by start) of one time window that merges into a
    /// block of at most the target size. A block reaching past the window after its own (one
    /// written before blocks were cut by window) is left as it is.
    fn compaction_run(&self, small: &[Arc<BlockMeta>]) -> Vec<Arc<BlockMeta>> {
        let target = self.config.compaction_target_spans as u64;
        let slot = |block: &BlockMeta| self.window_slot(block);
        let mut chosen: Vec<Arc<BlockMeta>> = Vec::new();
        let mut spans = 0;
        for block in small {
            let Some(here) = slot(block) else { continue };
            let fits = chosen.first().is_some_and(|first| slot(first) == Some(here)) && spans + block.span_count <= target;
            if !fits {
                if chosen.len() >= 2 {
                    break;
                }
                chosen.clear();
                spans = 0;
            }
            spans += block.span_count;
            chosen.push(Arc::clone(block));
        }
        if chosen.len() >= 2 { chosen } else { Vec::new() }
    }

    /// Deletes blocks past the retention age, then the oldest beyond the size limit.
    fn expire(&self) -> Result<(), StoreError> {
        let mut expired = Vec::new();
        {
            let _moving = self.stages.write();
            let mut blocks = self.blocks.write();
            if self.config.retention_hours > 0.0 {
                let horizon = SystemTime::now()
                    .checked_sub(Duration::from_secs_f64(self.config.retention_hours * 3600.0))
                    .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
                    .map(|d| d.as_nanos() as i64)
                    .unwrap_or(0);
                blocks.retain(|b| {
                    let keep = b.max_end_unix_nano >= horizon;
                    if !keep {
                        expired.push(Arc::clone(b));
                    }
                    keep
                });
            }
            if self.config.retention_max_bytes > 0 {
                blocks.sort_by_key(|b| b.max_end_unix_nano);
                let mut total: u64 = blocks.iter().map(|b| b.file_bytes).sum();
                while total > self.config.retention_max_bytes && !blocks.is_empty() {
                    let oldest = blocks.remove(0);
                    total -= oldest.file_bytes;
                    expired.push(oldest);
                }
            }
        }
        if !expired.is_empty() {
            tracing::info!(message = "blocks expired by retention", blocks = expired.len());
            self.retire(&expired);
        }
        Ok(())
    }

    fn retire(&self, blocks: &[Arc<BlockMeta>]) {
        let mut graveyard = self.graveyard.lock();
        let mut readers = self.readers.lock();
        for block in blocks {
            readers.remove(&block.id);
            self.rollups.remove(&block.id);
            let _ = fs::remove_file(rollup_path(&self.blocks_dir, &block.id));
            let _ = fs::remove_file(adoption_path(&self.blocks_dir, &block.id));
            let _ = fs::remove_file(paths_path(&self.blocks_dir, &block.id));
            let _ = fs::remove_file(self.blocks_dir.join(format!("{}.json", block.id)));
            graveyard.push((block.path.clone(), Instant::now()));
        }
    }

    fn bury(&self) {
        self.graveyard.lock().retain(|(path, since)| {
            if since.elapsed() < Duration::from_secs(60) {
                return true;
            }
            let _ = fs::remove_file(path);
            false
        });
    }

    /// Everything a query must see, each span once.
    #[cfg(test)]
    pub(crate) fn snapshot(&self) -> Result<Snapshot, StoreError> {
        self.snapshot_where(&SpanFilter::default())
    }

    /// A snapshot whose pending part holds only the traces with a span that meets `filter`
    /// (whole, so that their trace-level columns are right).
    pub(crate) fn snapshot_where(&self, filter: &SpanFilter) -> Result<Snapshot, StoreError> {
        let (mut snapshot, pending) = self.snapshot_with(|| self.copy_pending(filter));
        snapshot.memory.extend(self.convert_pending(pending));
        Ok(snapshot)
    }

    /// The assembled rows and blocks, with what `pending` takes of the pending traces, all
    /// taken while no trace moves between the stages.
    fn snapshot_with<T>(&self, pending: impl FnOnce() -> T) -> (Snapshot, T) {
        let _steady = self.stages.read();
        let memory = self.assembled.lock().batches.clone();
        let pending = pending();
        (Snapshot { memory, blocks: self.blocks.read().clone() }, pending)
    }

    /// Pending and in-flight traces as they are now, those with a span that meets `filter`:
    /// their rows from the last query if the head has not changed since (and that query's
    /// filter kept every span this one's does), else their packed spans. Called with the stage lock
    /// held; [`Self::convert_pending`] then makes rows of them without it.
    fn copy_pending(&self, filter: &SpanFilter) -> PendingCopy {
        let generation = self.head.generation();
        let in_flight = self.in_flight.lock().clone();
        if in_flight.is_empty() {
            if let Some((cached_generation, cached_filter, batches)) = self.pending_cache.lock().as_ref() {
                if *cached_generation == generation && cached_filter.covers(filter) {
                    return PendingCopy::Rows(batches.clone());
                }
            }
        }
        let wanted = |spans: &[PendingSpan]| filter.is_empty() || spans.iter().any(|span| span.meets(filter));
        let mut traces = self.head.copy_where(wanted);
        let head_only = in_flight.is_empty() && !traces.is_empty();
        traces.extend(in_flight.iter().filter(|(_, spans)| wanted(spans)).map(|(id, spans)| (*id, spans.to_vec())));
        PendingCopy::Spans { traces, cache_key: head_only.then(|| (generation, filter.clone())) }
    }

    /// Pending traces provisionally assembled so that they have every column, on several
    /// threads (a burst of ingest leaves a million spans or more pending).
    fn convert_pending(&self, pending: PendingCopy) -> Vec<RecordBatch> {
        let (traces, cache_key) = match pending {
            PendingCopy::Rows(batches) => return batches,
            PendingCopy::Spans { traces, cache_key } => (traces, cache_key),
        };
        if traces.is_empty() {
            return Vec::new();
        }
        let convert = |traces: &[(TraceId, Vec<PendingSpan>)]| {
            let mut builder = BatchBuilder::default();
            for (trace_id, spans) in traces {
                builder.push_trace(&assemble_borrowed(&self.head.unpack(*trace_id, spans)), 0);
            }
            builder.finish()
        };
        let batches = if traces.len() >= 1_000 { on_cores(&traces, 4, convert) } else { vec![convert(&traces)] };
        if let Some((generation, filter)) = cache_key {
            *self.pending_cache.lock() = Some((generation, filter, batches.clone()));
        }
        batches
    }

    /// The pending and in-flight spans of the traces in `trace_ids`, provisionally assembled.
    fn pending_batches_of(&self, trace_ids: &[TraceId]) -> Vec<RecordBatch> {
        let mut builder = BatchBuilder::default();
        self.head.visit_traces(trace_ids, |spans| builder.push_trace(&assemble_borrowed(spans), 0));
        let in_flight = self.in_flight.lock().clone();
        for (trace_id, spans) in in_flight.iter().filter(|(id, _)| trace_ids.contains(id)) {
            builder.push_trace(&assemble_borrowed(&self.head.unpack(*trace_id, spans)), 0);
        }
        if builder.rows() == 0 { Vec::new() } else { vec![builder.finish()] }
    }

    /// (trace, span) IDs of every block holding spans that ended at or after `since`.
    fn block_span_ids_since(&self, since: i64) -> Result<HashSet<(TraceId, clew_model::SpanId)>, StoreError> {
        let mut ids = HashSet::new();
        for block in self.blocks.read().iter().filter(|b| b.max_end_unix_nano >= since) {
            let builder = open_block(&block.path, ArrowReaderOptions::new())?;
            let mask = datafusion::parquet::arrow::ProjectionMask::roots(builder.parquet_schema(), [0, 1]);
            for batch in builder.with_projection(mask).build()? {
                let batch = batch?;
                let trace_ids = batch.column(0).as_fixed_size_binary();
                let span_ids = batch.column(1).as_fixed_size_binary();
                for row in 0..batch.num_rows() {
                    if let (Ok(trace), Ok(span)) =
                        (TraceId::from_slice(trace_ids.value(row)), clew_model::SpanId::from_slice(span_ids.value(row)))
                    {
                        ids.insert((trace, span));
                    }
                }
            }
        }
        Ok(ids)
    }

    pub fn blocks(&self) -> Vec<Arc<BlockMeta>> {
        self.blocks.read().clone()
    }

    /// The call rollups of everything stored that may hold spans started within [start, end]:
    /// memory (assembled and pending traces) and each block. Rows are per minute, except a
    /// block's that the window covers when `rows` allows them merged across its minutes; the
    /// caller picks the minutes it wants.
    fn rollups_blocking(&self, start: i64, end: i64, rows: RollupRows) -> Result<Vec<Arc<Rollup>>, StoreError> {
        let per_minute = rows != RollupRows::Merged;
        // Taken while no trace moves between the stages; combined and converted after.
        let (assembled, pending, blocks) = {
            let _steady = self.stages.read();
            let assembled = {
                let buffer = self.assembled.lock();
                match &buffer.combined {
                    Some(combined) => vec![Arc::clone(combined)],
                    None => buffer.rollups.clone(),
                }
            };
            (assembled, self.copy_pending(&SpanFilter::default()), self.blocks.read().clone())
        };
        let mut parts = if assembled.len() > 1 {
            let combined = Arc::new(Rollup::combine(assembled.iter().map(|r| &**r), None));
            // Kept for the next read unless the buffer changed meanwhile.
            let mut buffer = self.assembled.lock();
            if buffer.rollups.len() == assembled.len() && buffer.rollups.iter().zip(&assembled).all(|(a, b)| Arc::ptr_eq(a, b)) {
                buffer.combined = Some(Arc::clone(&combined));
            }
            vec![combined]
        } else {
            assembled
        };
        let pending = self.convert_pending(pending);
        if !pending.is_empty() {
            parts.push(Arc::new(RollupBuilder::from_batches(&self.config.traffic_source_attribute, &pending)));
        }
        let covered = |whole: &Whole| !per_minute && start <= whole.first && whole.last <= end;
        let in_window: Vec<&Arc<BlockMeta>> =
            blocks.iter().filter(|b| b.max_end_unix_nano >= start && b.min_start_unix_nano <= end).collect();
        let mut found: Vec<Option<Result<Arc<Rollup>, StoreError>>> =
            in_window.iter().map(|b| self.rollups.whole(&b.id).filter(covered).map(|whole| Ok(whole.rollup))).collect();
        // A block's rows for this window: per minute, or merged when the window covers it.
        let read = |block: &Arc<BlockMeta>| -> Result<Arc<Rollup>, StoreError> {
            if rows == RollupRows::PathsPerMinute {
                return self.block_paths(block);
            }
            let rollup = self.block_rollup(block)?;
            let whole = match self.rollups.whole(&block.id) {
                Some(whole) => {
                    rollup.share_merged(&whole.rollup, whole.first, whole.last);
                    whole
                }
                None => {
                    let (first, last, merged) = rollup.merged_form();
                    let whole = Whole { rollup: merged, first, last };
                    let blocks = self.blocks.read();
                    if blocks.iter().any(|b| b.id == block.id) {
                        self.rollups.insert_whole(&block.id, whole.clone());
                    }
                    whole
                }
            };
            Ok(if covered(&whole) { whole.rollup } else { rollup })
        };
        // Rollups read from their files (most of a long window's, beyond the cache) are read
        // on several threads; parts stay in the order of the block list.
        let unread: Vec<usize> = (0..found.len()).filter(|&i| found[i].is_none()).collect();
        for (i, rollup) in spread(&unread, |i| read(in_window[i])) {
            found[i] = Some(rollup);
        }
        for rollup in found.into_iter().flatten() {
            parts.push(rollup?);
        }
        Ok(parts)
    }

    /// The rollup of a block file's rows.
    fn rollup_of_file(&self, path: &Path) -> Result<Rollup, StoreError> {
        let mut builder = RollupBuilder::new(&self.config.traffic_source_attribute);
        for batch in open_block(path, ArrowReaderOptions::new())?.with_batch_size(8 * 1024).build()? {
            builder.add(&upgrade(batch?)?);
        }
        Ok(builder.finish())
    }

    /// A block's rollup: from memory, from its file, or (for a block written before rollups
    /// existed) computed from its rows once and saved.
    fn block_rollup(&self, block: &BlockMeta) -> Result<Arc<Rollup>, StoreError> {
        if let Some(rollup) = self.rollups.minutes(&block.id) {
            return Ok(rollup);
        }
        let (path, adoption) = (rollup_path(&self.blocks_dir, &block.id), adoption_path(&self.blocks_dir, &block.id));
        let paths = paths_path(&self.blocks_dir, &block.id);
        let rows = match (read_rollup(&path), read_adoption(&adoption), read_paths(&paths)) {
            (Ok(edges), Ok(adoption), Ok(paths)) => Rollup::new(edges, adoption, paths),
            // A block retired since the caller listed it (its rollup files go at once, its rows
            // a minute later) is counted from its rows, and nothing is saved for it.
            _ if !self.is_live(&block.id) => self.rollup_of_file(&block.path)?,
            _ => {
                let rollup = self.rollup_of_file(&block.path)?;
                write_rollup(&path, &rollup.edges)?;
                write_adoption(&adoption, &rollup.adoption)?;
                write_paths(&paths, &rollup.paths)?;
                rollup
            }
        };
        let rows = Arc::new(rows);
        // A block retired meanwhile is not cached again: the block list is held while it is
        // added, and blocks are retired after they leave the list.
        let blocks = self.blocks.read();
        if blocks.iter().any(|b| b.id == block.id) {
            self.rollups.insert_minutes(&block.id, Arc::clone(&rows));
        }
        Ok(rows)
    }

    /// A block's calling-context rows per minute: from memory with the rest of its rollup, or
    /// alone from their file (a third of the reading; nothing is kept).
    fn block_paths(&self, block: &BlockMeta) -> Result<Arc<Rollup>, StoreError> {
        if let Some(rollup) = self.rollups.minutes(&block.id) {
            return Ok(rollup);
        }
        match read_paths(&paths_path(&self.blocks_dir, &block.id)) {
            Ok(paths) => {
                let rollup = Rollup::new(Vec::new(), AdoptionRollup::default(), paths);
                // Its calling contexts merged are those the cache holds for the block: a caller
                // that merges them over a window covering the block does not merge them again.
                if let Some(whole) = self.rollups.whole(&block.id) {
                    rollup.share_merged(&whole.rollup, whole.first, whole.last);
                }
                Ok(Arc::new(rollup))
            }
            // A block without its rollup files is counted (and its files saved) the long way.
            Err(_) => self.block_rollup(block),
        }
    }

    fn is_live(&self, id: &str) -> bool {
        self.blocks.read().iter().any(|b| b.id == id)
    }

    fn busy_reason(&self) -> Option<String> {
        let (pending, bytes) = (self.head.span_count(), self.head.bytes());
        if pending > self.config.max_pending_spans {
            return Some(format!("{pending} spans are waiting for assembly (limit {})", self.config.max_pending_spans));
        }
        (self.config.max_pending_bytes > 0 && bytes > self.config.max_pending_bytes).then(|| {
            let mib = |bytes: u64| bytes as f64 / f64::from(1 << 20);
            format!("{pending} spans waiting for assembly hold {:.1} MiB (limit {:.1} MiB)", mib(bytes), mib(self.config.max_pending_bytes))
        })
    }

    async fn append_inner(&self, spans: Vec<Span>, encoded: Option<bytes::Bytes>) -> Result<Appended, StoreError> {
        if spans.is_empty() {
            return Ok(Appended::default());
        }
        if let Some(reason) = self.busy_reason() {
            return Err(StoreError::Unavailable(reason));
        }
        let count = spans.len() as u64;
        let payload = encoded.unwrap_or_else(|| clew_ingest::to_otlp(&spans).encode_to_vec().into());
        let segment = self.wal.append(payload, count).await?;
        let inserted = {
            let _moving = self.stages.read();
            self.head.insert(spans, segment, Instant::now())
        };
        if inserted.duplicates > 0 {
            self.wal.release(segment, inserted.duplicates);
        }
        self.counters.appended.fetch_add(inserted.added, Ordering::Relaxed);
        self.counters.duplicates.fetch_add(inserted.duplicates, Ordering::Relaxed);
        Ok(Appended { accepted: inserted.added, duplicates: inserted.duplicates })
    }

    async fn traces_inner(self: Arc<Self>, trace_ids: Vec<TraceId>) -> Result<Vec<Vec<StoredSpan>>, StoreError> {
        tokio::task::spawn_blocking(move || self.traces_blocking(&trace_ids))
            .await
            .map_err(|e| StoreError::Unavailable(format!("trace lookup failed: {e}")))?
    }

    /// Traces by ID without a query plan: memory is filtered directly; in blocks, row groups
    /// are skipped unless some wanted ID falls in their trace-ID range and passes their bloom
    /// filter, and within a row group only the rows of wanted traces are decoded (a row filter
    /// on `trace_id`). Each block is read once for all the IDs. Returns the spans of each ID
    /// that has any, in the order asked, duplicates removed.
    fn traces_blocking(&self, trace_ids: &[TraceId]) -> Result<Vec<Vec<StoredSpan>>, StoreError> {
        // Of the spans still pending, only the wanted traces' are decoded: under heavy ingest
        // the head holds a million spans or more, which a whole snapshot would convert.
        let (mut snapshot, pending) = self.snapshot_with(|| self.pending_batches_of(trace_ids));
        snapshot.memory.extend(pending);
        let mut sorted: Vec<[u8; 16]> = trace_ids.iter().map(|id| id.0).collect();
        sorted.sort_unstable();
        sorted.dedup();
        // A binary search of the few wanted IDs: cheaper than hashing every row's.
        let wanted: Arc<Vec<[u8; 16]>> = Arc::new(sorted.clone());
        let mask = |column: &ArrayRef, wanted: &[[u8; 16]]| -> BooleanArray {
            let ids = column.as_fixed_size_binary();
            (0..ids.len()).map(|row| Some(wanted.binary_search_by(|w| w.as_slice().cmp(ids.value(row))).is_ok())).collect()
        };
        let mut batches = Vec::new();
        for batch in &snapshot.memory {
            let keep = mask(batch.column(0), &wanted);
            if keep.true_count() > 0 {
                batches.push(filter_record_batch(batch, &keep)?);
            }
        }
        for block in &snapshot.blocks {
            let reader = self.block_reader(block)?;
            let groups: Vec<usize> = reader
                .row_groups
                .iter()
                .enumerate()
                .filter(|(_, (min, max, bloom))| {
                    let first = sorted.partition_point(|id| id.as_slice() < min.as_slice());
                    sorted[first..]
                        .iter()
                        .take_while(|id| id.as_slice() <= max.as_slice())
                        .any(|id| bloom.as_ref().is_none_or(|b| b.check(&id[..])))
                })
                .map(|(i, _)| i)
                .collect();
            if groups.is_empty() {
                continue;
            }
            let builder = ParquetRecordBatchReaderBuilder::new_with_metadata(fs::File::open(&block.path)?, reader.metadata.clone());
            // Only the columns a span is rebuilt from: not the search maps and copies.
            let needed = known_columns(builder.schema(), |name| SPAN_COLUMNS.contains(&name));
            let projection = ProjectionMask::roots(builder.parquet_schema(), needed);
            let wanted = Arc::clone(&wanted);
            let predicate = ArrowPredicateFn::new(ProjectionMask::roots(builder.parquet_schema(), [0]), move |batch| {
                Ok(mask(batch.column(0), &wanted))
            });
            // Within the row groups, only the pages whose trace-ID range holds a wanted ID.
            let mut selectors = Vec::new();
            for &group in &groups {
                match reader.pages.get(group).filter(|pages| !pages.is_empty()) {
                    Some(pages) => {
                        for page in pages {
                            let first = sorted.partition_point(|id| id.as_slice() < page.min.as_slice());
                            let hit = sorted.get(first).is_some_and(|id| id.as_slice() <= page.max.as_slice());
                            selectors.push(if hit { RowSelector::select(page.rows) } else { RowSelector::skip(page.rows) });
                        }
                    }
                    None => selectors.push(RowSelector::select(reader.metadata.metadata().row_group(group).num_rows() as usize)),
                }
            }
            let rows = builder
                .with_row_groups(groups)
                .with_row_selection(RowSelection::from(selectors))
                .with_projection(projection)
                .with_row_filter(RowFilter::new(vec![Box::new(predicate)]))
                .build()?;
            for batch in rows {
                batches.push(batch?);
            }
        }
        let mut by_trace: HashMap<TraceId, Vec<StoredSpan>> = HashMap::new();
        for span in spans_from_batches(&batches)? {
            by_trace.entry(span.span.trace_id).or_default().push(span);
        }
        Ok(trace_ids
            .iter()
            .filter_map(|id| {
                let mut spans = by_trace.remove(id)?;
                let mut seen = HashSet::new();
                spans.retain(|s| seen.insert(s.span.span_id));
                Some(spans)
            })
            .collect())
    }

    fn block_reader(&self, block: &BlockMeta) -> Result<Arc<BlockReader>, StoreError> {
        if let Some(reader) = self.readers.lock().get(&block.id) {
            return Ok(Arc::clone(reader));
        }
        let file = fs::File::open(&block.path)?;
        let metadata = block_metadata(&file, ArrowReaderOptions::new().with_page_index_policy(PageIndexPolicy::Optional))?;
        let builder = ParquetRecordBatchReaderBuilder::new_with_metadata(file, metadata.clone());
        let mut row_groups = Vec::new();
        for (index, group) in builder.metadata().row_groups().iter().enumerate() {
            let (min, max) = match group.column(0).statistics() {
                Some(Statistics::FixedLenByteArray(stats)) => (
                    stats.min_bytes_opt().map(<[u8]>::to_vec).unwrap_or_default(),
                    stats.max_bytes_opt().map(<[u8]>::to_vec).unwrap_or_else(|| vec![0xff; 16]),
                ),
                _ => (Vec::new(), vec![0xff; 16]),
            };
            row_groups.push((min, max, builder.get_row_group_column_bloom_filter(index, 0)?));
        }
        let pages = trace_pages(builder.metadata());
        let reader = Arc::new(BlockReader { metadata, row_groups, pages });
        self.readers.lock().insert(block.id.clone(), Arc::clone(&reader));
        Ok(reader)
    }
}

/// Each row group's pages of trace IDs, from the page index (none for a file without one).
fn trace_pages(metadata: &datafusion::parquet::file::metadata::ParquetMetaData) -> Vec<Vec<TracePage>> {
    use datafusion::parquet::file::page_index::column_index::ColumnIndexMetaData;
    let (Some(columns), Some(offsets)) = (metadata.column_index(), metadata.offset_index()) else {
        return Vec::new();
    };
    metadata
        .row_groups()
        .iter()
        .enumerate()
        .map(|(group, meta)| {
            let (Some(ColumnIndexMetaData::FIXED_LEN_BYTE_ARRAY(index)), Some(offsets)) =
                (columns.get(group).and_then(|c| c.first()), offsets.get(group).and_then(|o| o.first()))
            else {
                return Vec::new();
            };
            let locations = offsets.page_locations();
            let mut pages = Vec::with_capacity(locations.len());
            for (page, location) in locations.iter().enumerate() {
                let next = locations.get(page + 1).map_or(meta.num_rows(), |l| l.first_row_index);
                let (Some(min), Some(max)) = (index.min_value(page), index.max_value(page)) else {
                    return Vec::new();
                };
                pages.push(TracePage { min: min.to_vec(), max: max.to_vec(), rows: (next - location.first_row_index) as usize });
            }
            pages
        })
        .collect()
}

impl Storage for Arc<EmbeddedStore> {
    fn append_encoded(&self, spans: Vec<Span>, encoded: Option<bytes::Bytes>) -> BoxFuture<'_, Result<Appended, StoreError>> {
        Box::pin(self.append_inner(spans, encoded))
    }

    fn busy(&self) -> Option<String> {
        self.busy_reason()
    }

    fn pinned_spans_table(&self, filter: &SpanFilter) -> Result<Arc<dyn TableProvider>, StoreError> {
        Ok(Arc::new(SpansTable::pinned(Arc::clone(self), filter)?))
    }

    fn spans_table(&self) -> Arc<dyn TableProvider> {
        Arc::new(SpansTable::new(Arc::clone(self)))
    }

    fn trace(&self, trace_id: TraceId) -> BoxFuture<'_, Result<Vec<StoredSpan>, StoreError>> {
        let store = Arc::clone(self);
        Box::pin(async move { Ok(store.traces_inner(vec![trace_id]).await?.pop().unwrap_or_default()) })
    }

    fn traces(&self, trace_ids: Vec<TraceId>) -> BoxFuture<'_, Result<Vec<Vec<StoredSpan>>, StoreError>> {
        Box::pin(Arc::clone(self).traces_inner(trace_ids))
    }

    fn span_metrics(&self) -> SpanMetrics {
        self.span_metrics.lock().clone()
    }

    fn stats(&self) -> StoreStats {
        let compactable_blocks = self.next_compaction_run().len();
        // The buffer's lock is taken before the block list's, as block cutting takes them:
        // the other order deadlocks with a cut.
        let (assembled_unflushed_spans, assembled_bytes) = {
            let buffer = self.assembled.lock();
            (buffer.rows as u64, buffer.bytes as u64)
        };
        let blocks = self.blocks.read();
        StoreStats {
            pending_spans: self.head.span_count(),
            pending_bytes: self.head.bytes(),
            assembled_unflushed_spans,
            assembled_bytes,
            blocks: blocks.len(),
            block_spans: blocks.iter().map(|b| b.span_count).sum(),
            block_bytes: blocks.iter().map(|b| b.file_bytes).sum(),
            wal_bytes: self.wal.disk_bytes(),
            wal_syncs: self.wal.stats().syncs.load(Ordering::Relaxed),
            spans_appended: self.counters.appended.load(Ordering::Relaxed),
            duplicate_spans: self.counters.duplicates.load(Ordering::Relaxed),
            traces_assembled: self.counters.traces_assembled.load(Ordering::Relaxed),
            fragments: self.counters.fragments.load(Ordering::Relaxed),
            rollup_cpu_nanos: self.counters.rollup_nanos.load(Ordering::Relaxed),
            rollup_cache_bytes: self.rollups.held().0,
            compactions_deferred: self.counters.compactions_deferred.load(Ordering::Relaxed),
            compactable_blocks,
            write_path_seconds: WritePathSeconds {
                take_ready: seconds(&self.counters.take_nanos),
                assembly: seconds(&self.counters.assembly_nanos),
                block_write_waits: seconds(&self.counters.block_wait_nanos),
                block_writes: seconds(&self.counters.block_write_nanos),
                compaction: seconds(&self.counters.compaction_nanos),
            },
            assembly_lag_seconds: self.head.assembly_lag().as_secs_f64(),
        }
    }

    fn rollups(&self, start_unix_nano: i64, end_unix_nano: i64, rows: RollupRows) -> BoxFuture<'_, Result<Vec<Arc<Rollup>>, StoreError>> {
        let store = Arc::clone(self);
        Box::pin(async move {
            tokio::task::spawn_blocking(move || store.rollups_blocking(start_unix_nano, end_unix_nano, rows))
                .await
                .map_err(|e| StoreError::Unavailable(format!("rollup read failed: {e}")))?
        })
    }

    fn flush(&self) -> BoxFuture<'_, Result<(), StoreError>> {
        let store = Arc::clone(self);
        Box::pin(async move {
            tokio::task::spawn_blocking(move || store.maintain(true))
                .await
                .map_err(|e| StoreError::Unavailable(format!("flush task failed: {e}")))?
        })
    }
}

fn seconds(counter: &AtomicU64) -> f64 {
    counter.load(Ordering::Relaxed) as f64 / 1e9
}

/// Removes the items whose flag is set.
fn drop_written<T>(items: &mut Vec<T>, written: &[bool]) {
    let mut flags = written.iter();
    items.retain(|_| !flags.next().copied().unwrap_or(false));
}

fn rand_u32() -> u32 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u128(SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0));
    hasher.finish() as u32
}

const ROLLUP_SUFFIX: &str = ".rollup.parquet";
const ADOPTION_SUFFIX: &str = ".adoption.json";
const PATHS_SUFFIX: &str = ".paths.parquet";

fn rollup_path(dir: &Path, id: &str) -> PathBuf {
    dir.join(format!("{id}{ROLLUP_SUFFIX}"))
}

fn adoption_path(dir: &Path, id: &str) -> PathBuf {
    dir.join(format!("{id}{ADOPTION_SUFFIX}"))
}

fn paths_path(dir: &Path, id: &str) -> PathBuf {
    dir.join(format!("{id}{PATHS_SUFFIX}"))
}

fn load_blocks(dir: &Path) -> Result<Vec<Arc<BlockMeta>>, StoreError> {
    let mut blocks = Vec::new();
    for entry in fs::read_dir(dir)? {
        let path = entry?.path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("").to_string();
        if name.ends_with(".tmp") {
            let _ = fs::remove_file(&path); // a block that was never finished
            continue;
        }
        if name.ends_with(ADOPTION_SUFFIX) {
            continue;
        }
        let Some(id) = name.strip_suffix(".json") else {
            continue;
        };
        let parquet = dir.join(format!("{id}.parquet"));
        if !parquet.exists() {
            let _ = fs::remove_file(&path);
            continue;
        }
        let mut meta: BlockMeta = serde_json::from_slice(&fs::read(&path)?)
            .map_err(|e| StoreError::Corrupt(format!("block metadata {}: {e}", path.display())))?;
        meta.path = parquet;
        blocks.push(Arc::new(meta));
    }
    let replaced: HashSet<String> = blocks.iter().flat_map(|b| b.replaces.iter().cloned()).collect();
    blocks.retain(|b| {
        if replaced.contains(&b.id) {
            let _ = fs::remove_file(dir.join(format!("{}.json", b.id)));
            return false;
        }
        true
    });
    // A Parquet file without metadata was replaced by compaction before a crash: its spans
    // live in the compacted block, so it is deleted.
    for entry in fs::read_dir(dir)? {
        let path = entry?.path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        let rollup_of = name.strip_suffix(ROLLUP_SUFFIX).or_else(|| name.strip_suffix(PATHS_SUFFIX));
        if let Some(id) = rollup_of.or_else(|| name.strip_suffix(ADOPTION_SUFFIX)) {
            if !blocks.iter().any(|b| b.id == id) {
                let _ = fs::remove_file(&path);
            }
        } else if path.extension().is_some_and(|e| e == "parquet") && !blocks.iter().any(|b| b.path == path) {
            let _ = fs::remove_file(&path);
        }
    }
    blocks.sort_by_key(|b| b.min_start_unix_nano);
    Ok(blocks)
}

/// (batch, row) positions ordered by (trace ID, span ID), keeping the first of equal pairs.
fn sorted_unique_rows(batches: &[RecordBatch]) -> Vec<(usize, usize)> {
    // Sorted as integers (big-endian, so in byte order) with the row's place last: equal spans
    // keep the order of their batches, and the first of them is kept.
    let mut keys: Vec<(u128, u64, u32, u32)> = Vec::with_capacity(batches.iter().map(RecordBatch::num_rows).sum());
    for (b, batch) in batches.iter().enumerate() {
        let (traces, spans) = (batch.column(0).as_fixed_size_binary(), batch.column(1).as_fixed_size_binary());
        for row in 0..batch.num_rows() {
            let trace = u128::from_be_bytes(traces.value(row).try_into().expect("16-byte trace IDs"));
            let span = u64::from_be_bytes(spans.value(row).try_into().expect("8-byte span IDs"));
            keys.push((trace, span, b as u32, row as u32));
        }
    }
    keys.sort_unstable();
    keys.dedup_by(|a, b| (a.0, a.1) == (b.0, b.1));
    keys.into_iter().map(|(_, _, b, row)| (b as usize, row as usize)).collect()
}

/// A block read in order, one batch in memory at a time.
struct Cursor {
    reader: datafusion::parquet::arrow::arrow_reader::ParquetRecordBatchReader,
    batch: Option<RecordBatch>,
    row: usize,
}

impl Cursor {
    fn new(reader: datafusion::parquet::arrow::arrow_reader::ParquetRecordBatchReader) -> Result<Self, StoreError> {
        let mut cursor = Self { reader, batch: None, row: 0 };
        cursor.batch = cursor.next_batch()?;
        Ok(cursor)
    }

    /// The reader's next batch, with every column of the span table.
    fn next_batch(&mut self) -> Result<Option<RecordBatch>, StoreError> {
        self.reader.next().transpose()?.map(upgrade).transpose()
    }

    fn key(&self) -> Option<([u8; 16], [u8; 8])> {
        let batch = self.batch.as_ref()?;
        let trace: [u8; 16] = batch.column(0).as_fixed_size_binary().value(self.row).try_into().ok()?;
        let span: [u8; 8] = batch.column(1).as_fixed_size_binary().value(self.row).try_into().ok()?;
        Some((trace, span))
    }

    fn advance(&mut self) -> Result<(), StoreError> {
        self.row += 1;
        if self.batch.as_ref().is_some_and(|b| self.row >= b.num_rows()) {
            self.batch = self.next_batch()?;
            self.row = 0;
        }
        Ok(())
    }
}

/// A k-way merge of sorted blocks into sorted, duplicate-free row groups: compaction holds
/// one batch per input block and one row group of output, whatever the blocks' size.
struct Merge {
    cursors: Vec<Cursor>,
    last: Option<([u8; 16], [u8; 8])>,
    /// The cursor the last row came from.
    last_cursor: usize,
    /// Set when a duplicate was dropped or a trace continued from another block: then the
    /// blocks' rollups do not simply add up to the merged block's.
    mixed: Rc<Cell<bool>>,
}

impl Merge {
    fn next_chunk(&mut self) -> Result<Option<RecordBatch>, StoreError> {
        let mut pool: Vec<RecordBatch> = Vec::new();
        let mut pooled: Vec<Option<usize>> = vec![None; self.cursors.len()];
        let mut indices: Vec<(usize, usize)> = Vec::with_capacity(ROW_GROUP_ROWS);
        while indices.len() < ROW_GROUP_ROWS {
            let Some((smallest, key)) =
                self.cursors.iter().enumerate().filter_map(|(i, c)| c.key().map(|k| (i, k))).min_by(|a, b| a.1.cmp(&b.1))
            else {
                break;
            };
            if self.last == Some(key) {
                self.mixed.set(true);
            } else {
                if self.last.is_some_and(|(trace, _)| trace == key.0) && self.last_cursor != smallest {
                    self.mixed.set(true);
                }
                self.last_cursor = smallest;
                let cursor = &self.cursors[smallest];
                let slot = *pooled[smallest].get_or_insert_with(|| {
                    pool.push(cursor.batch.clone().expect("a cursor with a key has a batch"));
                    pool.len() - 1
                });
                indices.push((slot, cursor.row));
                self.last = Some(key);
            }
            let before = self.cursors[smallest].batch.as_ref().map(RecordBatch::num_rows);
            self.cursors[smallest].advance()?;
            if self.cursors[smallest].row == 0 && before.is_some() {
                pooled[smallest] = None; // moved on to the next batch
            }
        }
        if indices.is_empty() {
            return Ok(None);
        }
        let sources: Vec<&RecordBatch> = pool.iter().collect();
        Ok(Some(interleave_columns(&sources, &indices)?))
    }
}

impl Iterator for Merge {
    type Item = Result<RecordBatch, StoreError>;

    fn next(&mut self) -> Option<Self::Item> {
        self.next_chunk().transpose()
    }
}

/// What a block's metadata says, gathered while its rows are written.
#[derive(Default)]
struct BlockSummary {
    min_start: i64,
    max_end: i64,
    services: std::collections::BTreeSet<String>,
    traces: u64,
    rows: u64,
    last_trace: Option<Vec<u8>>,
}

impl BlockSummary {
    fn add(&mut self, batch: &RecordBatch) {
        let start = batch.column_by_name("trace_start_unix_nano").expect("schema").as_primitive::<Int64Type>();
        let duration = batch.column_by_name("trace_duration_nanos").expect("schema").as_primitive::<Int64Type>();
        let service = batch.column_by_name("service_name").expect("schema").as_string::<i32>();
        let trace_ids = batch.column(0).as_fixed_size_binary();
        for row in 0..batch.num_rows() {
            let (s, e) = (start.value(row), start.value(row) + duration.value(row));
            self.min_start = if self.rows == 0 { s } else { self.min_start.min(s) };
            self.max_end = self.max_end.max(e);
            self.rows += 1;
            if !self.services.contains(service.value(row)) {
                self.services.insert(service.value(row).to_string());
            }
            if self.last_trace.as_deref() != Some(trace_ids.value(row)) {
                self.traces += 1;
                self.last_trace = Some(trace_ids.value(row).to_vec());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use clew_model::{Attribute, InstrumentationScope, Resource, Span, SpanId, SpanKind, TraceId, Value};

    use super::*;

    fn spans(traces: u32, per_trace: u32) -> Vec<Span> {
        let resource =
            Arc::new(Resource { attributes: vec![Attribute::new("service.name", Value::Str("svc".into()))], ..Default::default() });
        let scope = Arc::new(InstrumentationScope::default());
        // Recent timestamps: older data would be deleted by retention at the first flush.
        let base = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_nanos() as u64 - 3_600_000_000_000;
        let mut out = Vec::new();
        for t in 0..traces {
            let mut trace_id = [0u8; 16];
            trace_id[..4].copy_from_slice(&(t.wrapping_mul(2_654_435_761)).to_be_bytes());
            trace_id[15] = 1;
            for s in 0..per_trace {
                let mut span_id = [0u8; 8];
                span_id[..4].copy_from_slice(&(s + 1).to_be_bytes());
                out.push(Span {
                    trace_id: TraceId(trace_id),
                    span_id: SpanId(span_id),
                    parent_span_id: (s > 0).then(|| SpanId([0, 0, 0, 1, 0, 0, 0, 0])),
                    name: format!("op{s}"),
                    kind: SpanKind::Server,
                    start_time_unix_nano: base + u64::from(t) * 1000 + u64::from(s),
                    end_time_unix_nano: base + u64::from(t) * 1000 + 100,
                    attributes: vec![Attribute::new("n", Value::Int(i64::from(s)))],
                    resource: Arc::clone(&resource),
                    scope: Arc::clone(&scope),
                    ..Span::default()
                });
            }
        }
        out
    }

    fn temp_config() -> StoreConfig {
        let dir = std::env::temp_dir().join(format!("clew-engine-test-{}-{}", std::process::id(), rand_u32()));
        StoreConfig { data_dir: dir, trace_idle_seconds: 3600.0, ..StoreConfig::default() }
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn blocks_prune_row_groups_by_range_and_bloom_filter() {
        let store = EmbeddedStore::open(temp_config()).unwrap();
        let storage: &dyn Storage = &store;
        let all = spans(20_000, 10);
        let some_trace = all[155_555].trace_id;
        storage.append(all).await.unwrap();
        storage.flush().await.unwrap();
        let blocks = store.blocks();
        assert_eq!(blocks.len(), 1);
        let reader = store.block_reader(&blocks[0]).unwrap();
        assert!(reader.row_groups.len() >= 3, "{} row groups", reader.row_groups.len());
        // Lookups select pages: each full row group has several, with narrow trace-ID ranges.
        assert!(reader.pages[0].len() >= 4, "{} pages", reader.pages[0].len());
        assert!(reader.pages[0].windows(2).all(|p| p[0].max <= p[1].min), "pages in trace-ID order");
        let candidates = |id: &[u8; 16]| {
            reader
                .row_groups
                .iter()
                .filter(|(min, max, bloom)| {
                    min.as_slice() <= &id[..] && &id[..] <= max.as_slice() && bloom.as_ref().is_none_or(|b| b.check(&id[..]))
                })
                .count()
        };
        assert_eq!(candidates(&some_trace.0), 1);
        let missing = (0..200u32)
            .map(|i| {
                let mut id = [7u8; 16];
                id[..4].copy_from_slice(&i.to_be_bytes());
                candidates(&id)
            })
            .sum::<usize>();
        assert!(missing <= 10, "{missing} false candidates for 200 missing IDs");
        let found = storage.trace(some_trace).await.unwrap();
        assert_eq!(found.len(), 10);
        assert!(found.iter().all(|s| s.span.trace_id == some_trace));
    }

    #[test]
    fn rows_are_ordered_by_trace_and_span_and_the_first_copy_is_kept() {
        use datafusion::arrow::array::FixedSizeBinaryArray;
        use datafusion::arrow::datatypes::{DataType, Field, Schema};
        let schema = Arc::new(Schema::new(vec![
            Field::new("trace_id", DataType::FixedSizeBinary(16), false),
            Field::new("span_id", DataType::FixedSizeBinary(8), false),
        ]));
        let batch = |rows: &[(u8, u8, u8)]| {
            // (first byte of the trace ID, its last byte, the span ID's last byte)
            let traces: Vec<[u8; 16]> = rows
                .iter()
                .map(|&(high, low, _)| {
                    let mut id = [0; 16];
                    (id[0], id[15]) = (high, low);
                    id
                })
                .collect();
            let spans: Vec<[u8; 8]> = rows.iter().map(|&(_, _, span)| [0, 0, 0, 0, 0, 0, 0, span]).collect();
            RecordBatch::try_new(
                Arc::clone(&schema),
                vec![
                    Arc::new(FixedSizeBinaryArray::try_from_iter(traces.into_iter()).unwrap()),
                    Arc::new(FixedSizeBinaryArray::try_from_iter(spans.into_iter()).unwrap()),
                ],
            )
            .unwrap()
        };
        // A trace ID's first byte weighs most; the same span in both batches is kept once, from
        // the first batch.
        let first = batch(&[(2, 0, 1), (0, 9, 2), (0, 9, 1)]);
        let second = batch(&[(1, 0, 1), (0, 9, 1), (0, 255, 0)]);
        assert_eq!(sorted_unique_rows(&[first, second]), vec![(0, 2), (0, 1), (1, 2), (1, 0), (0, 0)]);
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn compaction_merges_sorted_and_drops_duplicates() {
        let config = StoreConfig { compaction_target_spans: 1_000_000, ..temp_config() };
        let store = EmbeddedStore::open(config).unwrap();
        let storage: &dyn Storage = &store;
        let all = spans(3_000, 10);
        // Four blocks; the last repeats a slice of the first (a replayed log after a crash).
        for part in [&all[..9_000], &all[9_000..18_000], &all[18_000..], &all[..1_000]] {
            storage.append(part.to_vec()).await.unwrap();
            storage.flush().await.unwrap();
            store.recent.lock().current.clear();
        }
        // The flush after the fourth append compacts the four small blocks into one.
        let blocks = store.blocks();
        assert_eq!(blocks.len(), 1, "{blocks:?}");
        assert_eq!(blocks[0].span_count, 30_000);
        assert_eq!(blocks[0].trace_count, 3_000);
        assert_eq!(blocks[0].replaces.len(), 4);
        let file = fs::File::open(&blocks[0].path).unwrap();
        let mut previous: Option<Vec<u8>> = None;
        for batch in ParquetRecordBatchReaderBuilder::try_new(file).unwrap().build().unwrap() {
            let batch = batch.unwrap();
            let (traces, spans) = (batch.column(0).as_fixed_size_binary(), batch.column(1).as_fixed_size_binary());
            for row in 0..batch.num_rows() {
                let key = [traces.value(row), spans.value(row)].concat();
                assert!(previous.as_ref().is_none_or(|p| p < &key), "rows sorted and unique");
                previous = Some(key);
            }
        }
    }

    /// Blocks written while the service lists and resources were plain columns (one copy per
    /// row) are still found, read and merged with new ones.
    #[tokio::test(flavor = "multi_thread")]
    async fn blocks_with_plain_columns_are_read_and_merged() {
        use datafusion::arrow::compute::cast;
        use datafusion::arrow::datatypes::{DataType, Field, Int32Type, Schema};
        let config = StoreConfig { compaction_target_spans: 1_000_000, ..temp_config() };
        let all = spans(400, 5);
        let old = {
            let store = EmbeddedStore::open(config.clone()).unwrap();
            let storage: &dyn Storage = &store;
            storage.append(all[..500].to_vec()).await.unwrap();
            storage.flush().await.unwrap();
            let blocks = store.blocks();
            assert_eq!(blocks.len(), 1);
            Arc::clone(&blocks[0])
        };
        // Rewrite the block as it used to be written.
        let batches: Vec<RecordBatch> = ParquetRecordBatchReaderBuilder::try_new(fs::File::open(&old.path).unwrap())
            .unwrap()
            .build()
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert!(matches!(batches[0].column_by_name("resource").unwrap().data_type(), DataType::Dictionary(..)));
        let plain = |field: &Field| match field.name().as_str() {
            "trace_services" => Field::new(field.name(), DataType::Utf8, false),
            "resource" => Field::new(field.name(), DataType::Binary, false),
            _ => field.clone(),
        };
        // Before the adjusted count, whose column is the last, and when each row had its
        // resource's attributes in a map after its own: as many columns as now, other ones.
        let mut fields: Vec<Field> = SCHEMA.fields()[..SCHEMA.fields().len() - 1].iter().map(|f| plain(f)).collect();
        let at = fields.iter().position(|f| f.name() == "attributes").unwrap() + 1;
        fields.insert(at, Field::new("resource_attributes", crate::block::map_type(), true));
        assert_eq!(fields.len(), SCHEMA.fields().len());
        let schema = Arc::new(Schema::new(fields));
        let mut writer =
            datafusion::parquet::arrow::ArrowWriter::try_new(fs::File::create(&old.path).unwrap(), Arc::clone(&schema), None).unwrap();
        for batch in &batches {
            let columns = schema
                .fields()
                .iter()
                .map(|field| match field.name().as_str() {
                    "resource_attributes" => crate::block::resource_attribute_maps(batch.column_by_name("resource").unwrap()).unwrap(),
                    name => cast(batch.column_by_name(name).unwrap(), field.data_type()).unwrap(),
                })
                .collect::<Vec<_>>();
            writer.write(&RecordBatch::try_new(Arc::clone(&schema), columns).unwrap()).unwrap();
        }
        writer.close().unwrap();

        // Without its rollups, which are then counted from the old block's rows.
        for suffix in [ROLLUP_SUFFIX, ADOPTION_SUFFIX, PATHS_SUFFIX] {
            fs::remove_file(old.path.with_file_name(format!("{}{suffix}", old.id))).unwrap();
        }
        let store = EmbeddedStore::open(config).unwrap();
        let storage: &dyn Storage = &store;
        let rollup = store.block_rollup(&store.blocks()[0]).unwrap();
        let services = &rollup.adoption.services;
        assert_eq!(services.iter().map(|s| s.counts.spans).sum::<u64>(), 500);
        let resource = ("service.name".to_string(), "svc".to_string());
        assert!(services.iter().all(|s| s.service == "svc" && s.resource == [resource.clone()]), "{services:?}");
        let found = storage.trace(all[7].trace_id).await.unwrap();
        assert_eq!(found.len(), 5);
        assert!(found.iter().all(|s| s.span.service_name() == "svc"), "the resource is decoded");
        // SQL reads the old block through DataFusion, which casts it to the table's schema.
        let context = datafusion::prelude::SessionContext::new();
        context.register_table("span_columns", storage.spans_table()).unwrap();
        let sql = "SELECT arrow_cast(max(trace_services), 'Utf8') AS services, count(DISTINCT resource) AS resources, \
                   count(*) AS spans, count(trace_adjusted_count) AS weighed FROM span_columns WHERE trace_services LIKE 's%'";
        let rows = context.sql(sql).await.unwrap().collect().await.unwrap();
        assert_eq!(rows[0].column(0).as_string::<i32>().value(0), "svc");
        assert_eq!(rows[0].column(1).as_primitive::<datafusion::arrow::datatypes::Int64Type>().value(0), 1);
        assert_eq!(rows[0].column(2).as_primitive::<datafusion::arrow::datatypes::Int64Type>().value(0), 500);
        assert_eq!(rows[0].column(3).as_primitive::<datafusion::arrow::datatypes::Int64Type>().value(0), 0, "no adjusted count: null");
        // Three new blocks: the flush after the last merges them with the old one.
        for part in all[500..].chunks(500) {
            storage.append(part.to_vec()).await.unwrap();
            storage.flush().await.unwrap();
        }
        let blocks = store.blocks();
        assert_eq!(blocks.len(), 1, "{blocks:?}");
        assert_eq!((blocks[0].span_count, blocks[0].replaces.len()), (2_000, 4));
        for batch in ParquetRecordBatchReaderBuilder::try_new(fs::File::open(&blocks[0].path).unwrap()).unwrap().build().unwrap() {
            let batch = batch.unwrap();
            let services = batch.column_by_name("trace_services").unwrap().as_dictionary::<Int32Type>();
            assert_eq!(services.values().as_string::<i32>().value(services.keys().value(0) as usize), "svc");
            let weights = batch.column_by_name(crate::block::ADJUSTED_COUNT).unwrap().as_primitive::<Int32Type>();
            assert!(weights.null_count() == 0 && weights.values().iter().all(|w| *w == 1), "old rows count once");
        }
        for id in [all[7].trace_id, all[1_777].trace_id] {
            assert_eq!(storage.trace(id).await.unwrap().len(), 5);
        }
    }

    #[tokio::test]
    async fn compaction_waits_while_ingest_is_behind_and_merges_once_it_is_not() {
        let config = StoreConfig { compaction_target_spans: 1_000_000, max_pending_spans: 100, ..temp_config() };
        let store = EmbeddedStore::open(config).unwrap();
        let storage: &dyn Storage = &store;
        let all = spans(400, 5);
        for part in all[..1_600].chunks(400) {
            storage.append(part.to_vec()).await.unwrap();
            while store.assemble_chunk(true) {}
            store.cut_block(true).unwrap();
        }
        assert_eq!(store.blocks().len(), 4);
        // 400 spans wait for assembly: more than three quarters of the head's room.
        storage.append(all[1_600..].to_vec()).await.unwrap();
        store.compact_and_expire(Duration::from_secs(5), true).unwrap();
        assert_eq!((store.blocks().len(), storage.stats().compactions_deferred), (4, 1), "compaction waits");
        // Once they are assembled, the next round merges.
        while store.assemble_chunk(true) {}
        store.cut_block(true).unwrap();
        assert_eq!(store.blocks().len(), 5);
        store.compact_and_expire(Duration::from_secs(5), true).unwrap();
        let blocks = store.blocks();
        assert_eq!((blocks.len(), blocks[0].span_count), (1, 2_000), "{blocks:?}");
        assert_eq!(storage.stats().compactions_deferred, 1);
        // Too many small blocks are merged even while ingest is behind.
        let many = StoreConfig { compaction_target_spans: 1_000_000, max_pending_spans: 100, ..temp_config() };
        let store = EmbeddedStore::open(many).unwrap();
        let storage: &dyn Storage = &store;
        for part in all.chunks(2_000 / MAX_DEFERRED_BLOCKS).take(MAX_DEFERRED_BLOCKS) {
            storage.append(part.to_vec()).await.unwrap();
            while store.assemble_chunk(true) {}
            store.cut_block(true).unwrap();
        }
        assert_eq!(store.blocks().len(), MAX_DEFERRED_BLOCKS);
        storage.append(spans(100, 1)).await.unwrap();
        store.compact_and_expire(Duration::from_secs(30), true).unwrap();
        assert_eq!((store.blocks().len(), storage.stats().compactions_deferred), (1, 0));
    }

    fn rollup_totals(parts: Vec<Arc<Rollup>>) -> (u64, u64) {
        let spans: u64 = parts.iter().flat_map(|part| &part.adoption.services).map(|s| s.counts.spans).sum();
        let traces: u64 = parts.iter().flat_map(|part| &part.adoption.traces).map(|t| t.traces).sum();
        let rows: Vec<&crate::EdgeRow> = parts.iter().flat_map(|part| part.edges.iter()).collect();
        let present: u64 = rows.iter().filter(|r| r.kind == crate::EdgeKind::Present).map(|r| r.calls).sum();
        assert_eq!((present, present / 10), (spans, traces), "the adoption facts count the same spans and traces");
        let requests = parts.iter().flat_map(|part| &part.paths).filter(|p| p.path == crate::REQUEST_PATH);
        let (path_traces, path_spans) = requests.fold((0, 0), |(t, s), p| (t + p.traces, s + p.spans));
        let context_spans: u64 = parts.iter().flat_map(|part| &part.paths).filter(|p| p.path != crate::REQUEST_PATH).map(|p| p.spans).sum();
        assert_eq!((path_spans, context_spans, path_traces), (spans, spans, traces), "the calling contexts count the same");
        let rows = rows.into_iter();
        rows.fold((0, 0), |(present, roots), row| match row.kind {
            crate::EdgeKind::Present => (present + row.calls, roots),
            crate::EdgeKind::Root => (present, roots + row.calls),
            _ => (present, roots),
        })
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn a_late_fragment_counts_as_its_sampled_trace() {
        // Jaeger clients mark only the root span: kept with probability 1/100.
        let mut all = spans(2, 3);
        for span in all.iter_mut().filter(|s| s.parent_span_id.is_none()) {
            span.attributes.push(Attribute::new("sampler.type", Value::Str("probabilistic".into())));
            span.attributes.push(Attribute::new("sampler.param", Value::Double(0.01)));
        }
        let late = all.remove(2);
        let store = EmbeddedStore::open(temp_config()).unwrap();
        let storage: &dyn Storage = &store;
        storage.append(all).await.unwrap();
        storage.flush().await.unwrap();
        storage.append(vec![late]).await.unwrap();
        storage.flush().await.unwrap();
        let context = datafusion::prelude::SessionContext::new();
        context.register_table("span_columns", storage.spans_table()).unwrap();
        let sql = "SELECT (trace_flags & 16) <> 0 AS fragment, min(trace_adjusted_count) AS low, max(trace_adjusted_count) AS high, \
                   count(*) AS spans FROM span_columns GROUP BY 1 ORDER BY 1";
        let rows = context.sql(sql).await.unwrap().collect().await.unwrap();
        let batch = datafusion::arrow::compute::concat_batches(&rows[0].schema(), &rows).unwrap();
        let column = |i: usize| batch.column(i).as_primitive::<datafusion::arrow::datatypes::Int32Type>().values().to_vec();
        assert_eq!(batch.column(0).as_boolean().iter().collect::<Vec<_>>(), vec![Some(false), Some(true)]);
        assert_eq!((column(1), column(2)), (vec![100, 100], vec![100, 100]), "the fragment of the sampled trace counts 100 too");
        assert_eq!(batch.column(3).as_primitive::<datafusion::arrow::datatypes::Int64Type>().values().to_vec(), vec![5, 1]);
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn call_rollups_count_each_span_once_wherever_it_lives() {
        let config = StoreConfig { compaction_target_spans: 1_000_000, ..temp_config() };
        let all = spans(3_000, 10);
        {
            let store = EmbeddedStore::open(config.clone()).unwrap();
            let storage: &dyn Storage = &store;
            storage.append(all[..9_000].to_vec()).await.unwrap();
            assert_eq!(rollup_totals(storage.rollups(0, i64::MAX, RollupRows::Merged).await.unwrap()), (9_000, 900), "pending traces");
            storage.flush().await.unwrap();
            assert_eq!(rollup_totals(storage.rollups(0, i64::MAX, RollupRows::PerMinute).await.unwrap()), (9_000, 900), "one block");
            // The last part repeats spans already in a block: compaction drops them, and the
            // merged block's rollup is computed from what it keeps.
            for part in [&all[9_000..18_000], &all[18_000..], &all[..1_000]] {
                storage.append(part.to_vec()).await.unwrap();
                storage.flush().await.unwrap();
                store.recent.lock().current.clear();
            }
            assert_eq!(store.blocks().len(), 1);
            assert_eq!(rollup_totals(storage.rollups(0, i64::MAX, RollupRows::Merged).await.unwrap()), (30_000, 3_000), "compacted");
            let start = store.blocks()[0].min_start_unix_nano;
            assert!(storage.rollups(0, start - 1, RollupRows::Merged).await.unwrap().is_empty(), "a window before the data reads no block");
        }
        let rollup_files = |dir: &Path| {
            fs::read_dir(dir).unwrap().filter(|e| e.as_ref().unwrap().file_name().to_string_lossy().ends_with(ROLLUP_SUFFIX)).count()
        };
        let blocks_dir = config.data_dir.join("blocks");
        assert_eq!(rollup_files(&blocks_dir), 1, "replaced blocks' rollups are deleted");
        let paths_files =
            fs::read_dir(&blocks_dir).unwrap().filter(|e| e.as_ref().unwrap().file_name().to_string_lossy().ends_with(PATHS_SUFFIX));
        assert_eq!(paths_files.count(), 1, "replaced blocks' calling contexts are deleted");
        assert_eq!(
            fs::read_dir(&blocks_dir)
                .unwrap()
                .filter(|e| e.as_ref().unwrap().file_name().to_string_lossy().ends_with(ADOPTION_SUFFIX))
                .count(),
            1
        );
        // After a restart the rollup is read from its file; without the file it is rebuilt.
        let store = EmbeddedStore::open(config.clone()).unwrap();
        assert_eq!(rollup_totals((&store as &dyn Storage).rollups(0, i64::MAX, RollupRows::PerMinute).await.unwrap()), (30_000, 3_000));
        drop(store);
        fs::remove_file(rollup_path(&blocks_dir, &load_blocks(&blocks_dir).unwrap()[0].id)).unwrap();
        let store = EmbeddedStore::open(config).unwrap();
        assert_eq!(rollup_totals((&store as &dyn Storage).rollups(0, i64::MAX, RollupRows::Merged).await.unwrap()), (30_000, 3_000));
        assert_eq!(rollup_files(&blocks_dir), 1, "the rebuilt rollup is saved");
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn a_window_covering_a_block_reads_its_rollup_merged_and_per_minute_rows_come_from_a_bounded_cache() {
        // Two blocks of 300 traces, one started every 2 s: ten minutes each (in one block
        // whatever hour they fall in).
        let config = StoreConfig { compaction_target_spans: 0, compaction_window_seconds: 0.0, rollup_cache_bytes: 1, ..temp_config() };
        let mut all = spans(600, 10);
        for (i, span) in all.iter_mut().enumerate() {
            let trace = i as u64 / 10;
            span.start_time_unix_nano += trace * 2_000_000_000;
            span.end_time_unix_nano += trace * 2_000_000_000;
        }
        let store = EmbeddedStore::open(config).unwrap();
        let storage: &dyn Storage = &store;
        for half in all.chunks(3_000) {
            storage.append(half.to_vec()).await.unwrap();
            storage.flush().await.unwrap();
        }
        let blocks = store.blocks();
        assert_eq!(blocks.len(), 2);
        let minutes = |part: &Rollup| part.edges.iter().map(|r| r.minute_unix_nano).collect::<HashSet<_>>().len();

        let merged = storage.rollups(0, i64::MAX, RollupRows::Merged).await.unwrap();
        assert_eq!(rollup_totals(merged.clone()), (6_000, 600));
        assert!(merged.iter().all(|part| minutes(part) == 1 && std::ptr::eq(part.for_window(0, i64::MAX), &**part)));
        let per_minute = storage.rollups(0, i64::MAX, RollupRows::PerMinute).await.unwrap();
        assert_eq!(rollup_totals(per_minute.clone()), (6_000, 600));
        assert!(per_minute.iter().all(|part| minutes(part) >= 10), "{:?}", per_minute.iter().map(|p| minutes(p)).collect::<Vec<_>>());
        // A window over part of a block reads its minutes.
        let (first, last) = (blocks[0].min_start_unix_nano, blocks[0].min_start_unix_nano + 180_000_000_000);
        let part = storage.rollups(first, last, RollupRows::Merged).await.unwrap();
        assert_eq!(part.len(), 1);
        assert!(minutes(&part[0]) >= 10);
        // With a budget of one byte only the block read last keeps its minutes in memory; the
        // other's are read from their file again.
        assert_eq!(store.rollups.held().1, 1);
        assert!(store.rollups.minutes(&blocks[1].id).is_none());
        assert_eq!(rollup_totals(storage.rollups(0, i64::MAX, RollupRows::PerMinute).await.unwrap()), (6_000, 600));
        // Calling contexts alone are read alone from the file of a block not in memory, and
        // kept nowhere.
        let held = store.rollups.held();
        let paths = storage.rollups(0, i64::MAX, RollupRows::PathsPerMinute).await.unwrap();
        assert_eq!(paths.iter().filter(|part| part.edges.is_empty()).count(), 1, "the block not in memory");
        let contexts = |parts: &[Arc<Rollup>]| {
            let rows = parts.iter().flat_map(|part| &part.paths);
            let mut rows: Vec<_> =
                rows.map(|row| (row.minute_unix_nano, row.path.to_string(), row.service.to_string(), row.spans)).collect();
            rows.sort();
            rows
        };
        assert_eq!(contexts(&paths), contexts(&per_minute));
        assert_eq!(store.rollups.held(), held);
        let wholes: Vec<Arc<Rollup>> = blocks.iter().map(|block| store.rollups.whole(&block.id).unwrap().rollup).collect();
        let shared = paths.iter().zip(&wholes).all(|(part, whole)| std::ptr::eq(part.for_window(0, i64::MAX), &**whole));
        assert!(shared, "merged over a covering window, each is the form the cache holds");
        // Retired blocks are forgotten.
        store.retire(&blocks);
        assert_eq!(store.rollups.held(), (0, 0));
        assert!(store.rollups.whole(&blocks[0].id).is_none());
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn a_blocks_rollup_added_up_from_its_parts_is_the_one_counted_from_its_rows() {
        let config = StoreConfig { compaction_target_spans: 1_000_000, ..temp_config() };
        let store = EmbeddedStore::open(config).unwrap();
        let storage: &dyn Storage = &store;
        let mut all = spans(4_000, 10);
        // A third of the traces come from a load test, said on their root spans.
        for span in all.iter_mut().filter(|s| s.parent_span_id.is_none() && s.trace_id.0[0] % 3 == 0) {
            span.attributes.push(Attribute::new("traffic.source", Value::Str("load_test".into())));
        }
        // Four blocks of whole traces, compacted into one: each rollup is the sum of its parts'.
        for part in all.chunks(10_000) {
            storage.append(part.to_vec()).await.unwrap();
            storage.flush().await.unwrap();
            store.recent.lock().current.clear();
        }
        let blocks = store.blocks();
        assert_eq!((blocks.len(), blocks[0].replaces.len()), (1, 4));
        let (added, counted) = (store.block_rollup(&blocks[0]).unwrap(), store.rollup_of_file(&blocks[0].path).unwrap());
        fn sorted<T: std::fmt::Debug>(rows: &[T]) -> Vec<String> {
            let mut out: Vec<String> = rows.iter().map(|r| format!("{r:?}")).collect();
            out.sort();
            out
        }
        assert_eq!(sorted(&added.edges), sorted(&counted.edges));
        assert_eq!(sorted(&added.paths), sorted(&counted.paths));
        let (a, c) = (&added.adoption, &counted.adoption);
        assert_eq!(sorted(&a.services), sorted(&c.services));
        assert_eq!(sorted(&a.traces), sorted(&c.traces));
        assert_eq!(sorted(&a.roots), sorted(&c.roots));
        let tested: u64 = added.paths.iter().filter(|p| p.path == crate::REQUEST_PATH && &*p.source == "load_test").map(|p| p.traces).sum();
        assert!(tested > 1_000 && tested < 1_700, "{tested} load-test traces");
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn retention_deletes_blocks_past_their_age_and_the_oldest_past_the_size_limit() {
        // The spans of `spans()` ended about an hour ago.
        let config = StoreConfig { retention_hours: 0.5, ..temp_config() };
        let store = EmbeddedStore::open(config).unwrap();
        let storage: &dyn Storage = &store;
        storage.append(spans(50, 4)).await.unwrap();
        storage.flush().await.unwrap();
        assert!(store.blocks().is_empty(), "an hour-old block is past a half-hour retention");

        let config = StoreConfig { retention_hours: 2.0, retention_max_bytes: 1, compaction_target_spans: 10, ..temp_config() };
        let store = EmbeddedStore::open(config).unwrap();
        let storage: &dyn Storage = &store;
        storage.append(spans(50, 4)).await.unwrap();
        storage.flush().await.unwrap();
        assert!(store.blocks().is_empty(), "any block is over a one-byte size limit");
        assert_eq!(storage.stats().block_bytes, 0);
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn a_trace_is_found_whole_across_blocks_and_pending_spans() {
        let store = EmbeddedStore::open(temp_config()).unwrap();
        let storage: &dyn Storage = &store;
        let all = spans(3, 6);
        let (first, second, third) = (all[0].trace_id, all[6].trace_id, all[12].trace_id);
        // The first trace's early spans in a block, its late ones pending; the second pending
        // only; the third in a block only.
        let early: Vec<Span> =
            all.iter().filter(|s| s.trace_id != second && !(s.trace_id == first && s.span_id.0[3] > 3)).cloned().collect();
        storage.append(early).await.unwrap();
        storage.flush().await.unwrap();
        let late: Vec<Span> = all.iter().filter(|s| s.trace_id == second || (s.trace_id == first && s.span_id.0[3] > 3)).cloned().collect();
        storage.append(late).await.unwrap();
        assert_eq!(storage.stats().pending_spans, 9);
        let found = storage.traces(vec![first, second, third, TraceId([9; 16])]).await.unwrap();
        let sizes: Vec<usize> = found.iter().map(Vec::len).collect();
        assert_eq!(sizes, vec![6, 6, 6], "every wanted trace whole, the unknown one absent");
        assert!(found[1].iter().all(|s| s.span.trace_id == second));
        let names: HashSet<&str> = found[0].iter().map(|s| s.span.name.as_str()).collect();
        assert_eq!(names.len(), 6, "block and pending spans of one trace together, none twice");
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn a_filtered_snapshot_converts_only_the_pending_traces_with_a_span_that_meets_the_filter() {
        let store = EmbeddedStore::open(temp_config()).unwrap();
        let mut all = spans(6, 3);
        // The third span of the first three traces is the database's.
        let db = Arc::new(Resource { attributes: vec![Attribute::new("service.name", Value::Str("db".into()))], ..Default::default() });
        for span in all.iter_mut().take(9).filter(|span| span.name == "op2") {
            span.resource = Arc::clone(&db);
        }
        let trace_ids = |spans: &[Span]| spans.iter().map(|span| span.trace_id.0.to_vec()).collect::<HashSet<_>>();
        let (with_db, without_db) = (trace_ids(&all[..9]), trace_ids(&all[9..]));
        store.append(all).await.unwrap();
        let rows = |filter: SpanFilter| {
            let snapshot = store.snapshot_where(&filter).unwrap();
            let mut traces = HashSet::new();
            let mut count = 0;
            for batch in &snapshot.memory {
                count += batch.num_rows();
                traces.extend((0..batch.num_rows()).map(|row| batch.column(0).as_fixed_size_binary().value(row).to_vec()));
            }
            (traces, count)
        };
        let filter =
            |service: Option<&str>, name: Option<&str>| SpanFilter { service_name: service.map(Into::into), name: name.map(Into::into) };
        // Whole traces: their spans of other services too.
        assert_eq!(rows(filter(Some("db"), None)), (with_db.clone(), 9));
        assert_eq!(rows(filter(Some("svc"), Some("op2"))), (without_db, 9), "service and name of one span");
        assert_eq!(rows(filter(Some("svc"), Some("op1"))).1, 18);
        assert_eq!(rows(filter(None, Some("op9"))).1, 0);
        // The rows of a filtered snapshot serve any narrower filter until the head changes,
        // and those of every pending span serve any filter.
        let first = store.snapshot_where(&filter(Some("db"), None)).unwrap();
        let again = store.snapshot_where(&filter(Some("db"), Some("op2"))).unwrap();
        assert!(first.memory.iter().zip(&again.memory).all(|(a, b)| a.column(0).to_data().ptr_eq(&b.column(0).to_data())));
        assert_eq!(rows(filter(Some("svc"), None)).1, 18, "not from rows of another service's traces");
        assert_eq!(rows(SpanFilter::default()).1, 18);
        assert_eq!(rows(filter(Some("db"), None)).1, 18, "the rows of every pending span serve any filter");
        // Through SQL the filter comes from the query, and the answer is the same as without.
        let context = datafusion::prelude::SessionContext::new();
        context.register_table("span_columns", store.spans_table()).unwrap();
        let sql = "SELECT count(*) FROM span_columns WHERE service_name = 'db' AND name = 'op2'";
        let rows = context.sql(sql).await.unwrap().collect().await.unwrap();
        assert_eq!(rows[0].column(0).as_primitive::<datafusion::arrow::datatypes::Int64Type>().value(0), 3);
        assert_eq!(with_db.len(), 3);
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn a_snapshot_converts_every_pending_span_once_and_reuses_the_rows_until_the_head_changes() {
        let store = EmbeddedStore::open(temp_config()).unwrap();
        let all = spans(3_000, 4);
        store.append(all[..8_000].to_vec()).await.unwrap();
        let ids = |snapshot: &Snapshot| {
            let mut ids = HashSet::new();
            for batch in &snapshot.memory {
                let (traces, spans) = (batch.column(0).as_fixed_size_binary(), batch.column(1).as_fixed_size_binary());
                for row in 0..batch.num_rows() {
                    assert!(ids.insert((traces.value(row).to_vec(), spans.value(row).to_vec())), "a span twice");
                }
            }
            ids.len()
        };
        let first = store.snapshot().unwrap();
        assert_eq!(ids(&first), 8_000);
        let again = store.snapshot().unwrap();
        assert!(again.memory.iter().zip(&first.memory).all(|(a, b)| a.column(0).to_data().ptr_eq(&b.column(0).to_data())));
        // New spans, some of traces already pending: the next snapshot has them all.
        store.append(all[8_000..].to_vec()).await.unwrap();
        assert_eq!(ids(&store.snapshot().unwrap()), 12_000);
        // Assembled now: each span still once.
        store.assemble_chunk(true);
        let (assembled, snapshot) = (store.stats().assembled_unflushed_spans, store.snapshot().unwrap());
        assert!(assembled > 0);
        assert_eq!(ids(&snapshot), 12_000);
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn rows_assembled_while_a_block_is_written_stay_in_memory_and_the_log() {
        let config = StoreConfig { wal_segment_bytes: 1, ..temp_config() };
        let all = spans(200, 5);
        {
            let store = EmbeddedStore::open(config.clone()).unwrap();
            let storage: &dyn Storage = &store;
            storage.append(all[..500].to_vec()).await.unwrap();
            while store.assemble_chunk(true) {}
            let cut = store.begin_cut(true);
            let cutting = store.assembled.lock().cutting;
            assert_eq!((cutting.0, cutting.1 > 0), (500, true), "the rows being written are not counted towards the next cut");
            // Assembled while the block is written: the same time window, another log segment.
            storage.append(all[500..].to_vec()).await.unwrap();
            while store.assemble_chunk(true) {}
            store.finish_cut(cut).unwrap();
            assert_eq!(store.assembled.lock().cutting, (0, 0));
            let stats = storage.stats();
            assert_eq!((stats.block_spans, stats.assembled_unflushed_spans), (500, 500));
            let held: u64 = store.assembled.lock().segments.values().flat_map(HashMap::values).sum();
            assert_eq!(held, 500, "the log keeps the spans not written yet");
        }
        // A crash: the spans not in a block come back from the log, once.
        let store = EmbeddedStore::open(config).unwrap();
        let storage: &dyn Storage = &store;
        assert_eq!(storage.stats().pending_spans, 500);
        storage.flush().await.unwrap();
        assert_eq!(storage.stats().block_spans, 1_000);
        for span in [&all[0], &all[999]] {
            assert_eq!(storage.trace(span.trace_id).await.unwrap().len(), 5);
        }
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn replay_after_a_crash_skips_what_blocks_hold() {
        let config = temp_config();
        {
            let store = EmbeddedStore::open(config.clone()).unwrap();
            let storage: &dyn Storage = &store;
            storage.append(spans(100, 5)).await.unwrap();
            storage.flush().await.unwrap();
            // The active segment still holds those spans; a crash now must not double them.
            storage.append(spans(101, 5)[500..].to_vec()).await.unwrap();
        }
        let store = EmbeddedStore::open(config).unwrap();
        let storage: &dyn Storage = &store;
        assert_eq!(storage.stats().pending_spans, 5, "only the span-set not in a block is replayed");
        storage.flush().await.unwrap();
        assert_eq!(storage.stats().block_spans, 505);
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn memory_limits_push_back_and_cut_blocks() {
        let config = StoreConfig { max_pending_bytes: 200_000, ..temp_config() };
        let store = EmbeddedStore::open(config).unwrap();
        let storage: &dyn Storage = &store;
        storage.append(spans(100, 5)).await.unwrap();
        let held = storage.stats().pending_bytes;
        assert!((20_000..200_000).contains(&held), "500 small spans hold {held} bytes");
        // The request that crosses the limit is taken; the next one is refused, and nothing
        // of it is logged or kept.
        storage.append(spans(2_000, 5)[500..].to_vec()).await.unwrap();
        let over = storage.stats();
        assert!(over.pending_bytes > 200_000);
        match storage.append(spans(2_001, 5)[10_000..].to_vec()).await {
            Err(StoreError::Unavailable(message)) => assert!(message.contains("MiB (limit 0.2 MiB)"), "{message}"),
            other => panic!("expected a push-back, got {other:?}"),
        }
        assert_eq!(storage.stats().pending_spans, over.pending_spans);
        // Assembled spans are written to a block once they take more memory than allowed,
        // long before the span count would cut one. First, what 100 spans take:
        let assembled = |block_max_bytes: u64| async move {
            let config = StoreConfig { trace_idle_seconds: 0.0, block_max_bytes, block_max_age_seconds: 3600.0, ..temp_config() };
            let store = EmbeddedStore::open(config).unwrap();
            store.append(spans(20, 5)).await.unwrap();
            store.maintain(false).unwrap();
            store
        };
        let small = assembled(u64::MAX).await.stats();
        assert_eq!((small.blocks, small.assembled_unflushed_spans, small.pending_bytes), (0, 100, 0));
        assert!(small.assembled_bytes > 0);
        // A block is cut when the next chunk, as large as the last, would cross half the limit
        // (the other half is for the spans assembled while it is written).
        let store = assembled(4 * small.assembled_bytes).await;
        assert_eq!(store.stats().blocks, 1, "a second chunk of 100 spans would cross the limit");
        let store = assembled(4 * small.assembled_bytes + 2).await;
        assert_eq!(store.stats().blocks, 0, "a buffer with room for another chunk waits");
        store.append(spans(100, 5)[100..].to_vec()).await.unwrap();
        store.maintain(false).unwrap();
        let cut = store.stats();
        assert_eq!((cut.blocks, cut.block_spans, cut.assembled_unflushed_spans, cut.assembled_bytes), (1, 500, 0, 0));
    }

    /// Status requests take the assembled buffer's lock and the block list's; a block cut
    /// takes both too. Taken in different orders they deadlocked the server.
    #[test]
    fn status_requests_during_block_cuts_do_not_deadlock() {
        use std::sync::atomic::AtomicBool;
        use std::sync::mpsc;
        let config = StoreConfig { trace_idle_seconds: 0.0, block_max_spans: 200, ..temp_config() };
        let store = EmbeddedStore::open(config.clone()).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let (done, finished) = mpsc::channel::<(&str, usize)>();
        let status = {
            let (store, stop, done) = (Arc::clone(&store), Arc::clone(&stop), done.clone());
            std::thread::spawn(move || {
                let storage: &dyn Storage = &store;
                let mut asked = 0;
                while !stop.load(Ordering::Relaxed) {
                    let _ = storage.stats();
                    asked += 1;
                }
                let _ = done.send(("status", asked));
            })
        };
        let cuts = {
            let (store, stop) = (Arc::clone(&store), Arc::clone(&stop));
            std::thread::spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
                let storage: &dyn Storage = &store;
                for round in 0..150u32 {
                    let mut batch = spans(50, 4);
                    for span in &mut batch {
                        span.trace_id.0[4..8].copy_from_slice(&round.to_be_bytes());
                    }
                    runtime.block_on(storage.append(batch)).unwrap();
                    store.maintain(false).unwrap();
                }
                stop.store(true, Ordering::Relaxed);
                let _ = done.send(("cuts", store.blocks().len()));
            })
        };
        let mut results = HashMap::new();
        for _ in 0..2 {
            match finished.recv_timeout(Duration::from_secs(60)) {
                Ok((what, count)) => {
                    results.insert(what, count);
                }
                // A failed append or cut ends its thread without a word: report its panic.
                Err(_) if cuts.is_finished() => {
                    stop.store(true, Ordering::Relaxed);
                    match cuts.join() {
                        Err(panic) => std::panic::resume_unwind(panic),
                        Ok(()) => panic!("the appending thread ended without reporting"),
                    }
                }
                Err(_) => panic!("status requests and block cuts deadlocked: {results:?}"),
            }
        }
        status.join().unwrap();
        cuts.join().unwrap();
        assert!(results["cuts"] >= 100, "a block per round: {results:?}");
        assert!(results["status"] > 0, "{results:?}");
        let _ = fs::remove_dir_all(&config.data_dir);
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn a_full_buffer_keeps_its_newest_window_and_each_window_becomes_one_block() {
        // Windows of 1 ms: 100 traces start in one, the 50 after them in the next.
        let window = 1_000_000u64;
        let config =
            StoreConfig { trace_idle_seconds: 0.0, compaction_window_seconds: window as f64 / 1e9, block_max_spans: 500, ..temp_config() };
        let mut batch = spans(150, 4);
        let aligned = batch[0].start_time_unix_nano / window * window;
        for (index, span) in batch.iter_mut().enumerate() {
            let trace = (index / 4) as u64;
            let start = aligned + trace * 100 + if trace >= 100 { window } else { 0 } + (index % 4) as u64;
            span.start_time_unix_nano = start;
            span.end_time_unix_nano = start + 50;
        }
        {
            let store = EmbeddedStore::open(config.clone()).unwrap();
            let storage: &dyn Storage = &store;
            storage.append(batch).await.unwrap();
            store.maintain(false).unwrap();
            let stats = storage.stats();
            assert_eq!((stats.blocks, stats.block_spans), (1, 400), "the older window is written: {stats:?}");
            assert_eq!(stats.assembled_unflushed_spans, 200, "the newest window waits in memory");
            // A crash now: the log must still give back the newest window, and only it.
        }
        let store = EmbeddedStore::open(config.clone()).unwrap();
        let storage: &dyn Storage = &store;
        assert_eq!(storage.stats().pending_spans, 200);
        storage.flush().await.unwrap();
        let blocks = store.blocks();
        assert_eq!(blocks.len(), 2, "one block per window: {blocks:?}");
        assert_eq!(blocks.iter().map(|b| b.span_count).sum::<u64>(), 600);
        for block in &blocks {
            assert_eq!(block.min_start_unix_nano as u64 / window, block.max_end_unix_nano as u64 / window, "{block:?}");
        }
        let _ = fs::remove_dir_all(&config.data_dir);
    }
}
