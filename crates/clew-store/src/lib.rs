//! Durable storage of spans: the write-ahead log, the head of pending and freshly assembled
//! traces, and immutable Parquet blocks.
//!
//! The life of a span here: [`EmbeddedStore::append`] writes it to the [`wal`] and waits for
//! the sync, then puts it in the [`head`], where it waits with the rest of its trace. When the
//! trace has been quiet for `trace_idle_seconds` it is assembled once
//! ([`clew_model::assemble`]) into rows of the span table ([`block`]). Rows collect in memory
//! until a block is cut (by size or age): the block is written and synced, and only then are
//! the spans released from the log. Small blocks are compacted into larger ones; retention
//! deletes the oldest. Queries see all of it through one DataFusion table ([`table`]).
//!
//! Another engine can take this one's place behind the [`Storage`] trait.

pub mod block;
mod engine;
pub mod head;
pub mod paths;
pub mod rollup;
mod rollup_cache;
pub mod span_metrics;
mod table;
pub mod wal;
mod writer;

use std::path::PathBuf;
use std::sync::Arc;

use clew_model::{Span, TraceId};
use datafusion::catalog::TableProvider;
use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};

pub use block::{SCHEMA, StoredSpan, map_type, resource_attribute_maps, resource_attribute_pairs};
pub use engine::EmbeddedStore;
pub use paths::{OTHER_SOURCE, OVERFLOW_KIND, OVERFLOW_PATH, PathRow, REQUEST_KIND, REQUEST_PATH, TrafficFilter, merge_paths};
pub use rollup::{
    AdoptionRollup, DeprecatedMinute, EdgeKind, EdgeRow, ROLLUP_BUCKET_NANOS, Rollup, RootMinute, ServiceCounts, ServiceMinute, TraceClass,
    UnansweredMinute, in_minutes,
};
pub use table::SpansTable;

/// Why the store refused or failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The store cannot take writes now; the client should retry later.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    #[error("invalid: {0}")]
    Invalid(String),
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
    #[error("query engine: {0}")]
    DataFusion(#[from] datafusion::error::DataFusionError),
    #[error("parquet: {0}")]
    Parquet(#[from] datafusion::parquet::errors::ParquetError),
    #[error("arrow: {0}")]
    Arrow(#[from] datafusion::arrow::error::ArrowError),
}

/// Conditions every span row a query reads must meet, as far as they are known: a backend
/// may leave out spans that cannot meet them, so long as it keeps every one that can (the
/// query still applies its own conditions). The embedded store converts only the pending
/// traces with a span that meets them, which spares a search during a burst of ingest most
/// of that work. `None` allows any value.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SpanFilter {
    pub service_name: Option<String>,
    pub name: Option<String>,
}

impl SpanFilter {
    pub fn is_empty(&self) -> bool {
        self.service_name.is_none() && self.name.is_none()
    }

    /// Whether every span that meets `other` meets this filter too.
    pub fn covers(&self, other: &SpanFilter) -> bool {
        let field = |mine: &Option<String>, theirs: &Option<String>| mine.is_none() || mine == theirs;
        field(&self.service_name, &other.service_name) && field(&self.name, &other.name)
    }
}

/// Which rows of the rollups a reader wants.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RollupRows {
    /// Any form: a part whose minutes the window covers may come with its rows merged across
    /// them (see [`Rollup::for_window`](rollup::Rollup::for_window)).
    Merged,
    /// Every part's rows, per minute.
    PerMinute,
    /// Every part's calling-context rows (`paths`), per minute; its other rows may be absent
    /// (a block whose rows are not in memory is read for these only).
    PathsPerMinute,
}

/// What an append did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Appended {
    pub accepted: u64,
    /// Spans already stored with the same trace and span ID (a retried delivery).
    pub duplicates: u64,
}

/// A storage engine. The contract of `append`: when it returns `Ok`, the spans are durable and
/// visible to every later scan of `spans_table`.
pub trait Storage: Send + Sync + std::fmt::Debug + 'static {
    fn append(&self, spans: Vec<Span>) -> BoxFuture<'_, Result<Appended, StoreError>> {
        self.append_encoded(spans, None)
    }
    /// Like `append`, with the spans already encoded as one OTLP `ExportTraceServiceRequest`
    /// holding exactly these spans (the request as received, when nothing was refused or
    /// cut): the log stores those bytes instead of encoding the spans again.
    fn append_encoded(&self, spans: Vec<Span>, encoded: Option<bytes::Bytes>) -> BoxFuture<'_, Result<Appended, StoreError>>;
    /// Why an append would be refused now (the store is behind), if it would: receivers ask
    /// before decoding a request, so that pushing back costs little.
    fn busy(&self) -> Option<String> {
        None
    }
    /// The span table over everything stored.
    fn spans_table(&self) -> Arc<dyn TableProvider>;
    /// The span table over what is stored now: every scan of it sees the same spans. Its
    /// queries read only rows that meet `filter`.
    fn pinned_spans_table(&self, filter: &SpanFilter) -> Result<Arc<dyn TableProvider>, StoreError>;
    /// The spans of one trace wherever they are, duplicates removed, or empty.
    fn trace(&self, trace_id: TraceId) -> BoxFuture<'_, Result<Vec<StoredSpan>, StoreError>>;
    /// The spans of many traces, one list per ID that has any, in the order asked. A backend
    /// that can read them together should: queries that evaluate thousands of traces ask this.
    fn traces(&self, trace_ids: Vec<TraceId>) -> BoxFuture<'_, Result<Vec<Vec<StoredSpan>>, StoreError>> {
        Box::pin(async move {
            let mut out = Vec::new();
            for id in trace_ids {
                let spans = self.trace(id).await?;
                if !spans.is_empty() {
                    out.push(spans);
                }
            }
            Ok(out)
        })
    }
    fn stats(&self) -> StoreStats;
    /// Span and service-graph metrics counted as traces were assembled since the store opened.
    fn span_metrics(&self) -> span_metrics::SpanMetrics {
        span_metrics::SpanMetrics::default()
    }
    /// The rollups (calls per minute, entry point and edge; the coverage report's facts per
    /// minute; calling contexts per minute) of everything that may hold spans started within
    /// [start, end] (Unix ns), in parts; rows outside the window may be included. `rows` says
    /// which rows the caller reads, and in what form.
    fn rollups(
        &self,
        start_unix_nano: i64,
        end_unix_nano: i64,
        rows: RollupRows,
    ) -> BoxFuture<'_, Result<Vec<Arc<rollup::Rollup>>, StoreError>>;
    /// Assembles everything pending and writes it to blocks (for shutdown and tests).
    fn flush(&self) -> BoxFuture<'_, Result<(), StoreError>>;
}

/// Numbers for `/api/v1/status`, metrics and benchmarks.
#[derive(Debug, Clone, Default, Serialize)]
pub struct StoreStats {
    pub pending_spans: u64,
    /// Memory the pending spans hold.
    pub pending_bytes: u64,
    pub assembled_unflushed_spans: u64,
    /// Memory the assembled spans not yet in a block hold.
    pub assembled_bytes: u64,
    pub blocks: usize,
    pub block_spans: u64,
    pub block_bytes: u64,
    pub wal_bytes: u64,
    pub wal_syncs: u64,
    pub spans_appended: u64,
    pub duplicate_spans: u64,
    pub traces_assembled: u64,
    pub fragments: u64,
    /// CPU time spent computing rollups (at assembly and when blocks are written), summed over threads.
    pub rollup_cpu_nanos: u64,
    /// Memory the per-minute rollups of recently read blocks take (estimated).
    pub rollup_cache_bytes: u64,
    /// Compaction rounds left for later because ingest was behind (the head nearly full).
    pub compactions_deferred: u64,
    /// Blocks the next compaction round would merge: 0 when compaction has nothing to do.
    pub compactable_blocks: usize,
    /// How long quiet traces waited for assembly beyond their quiet time, at the last sweep.
    pub assembly_lag_seconds: f64,
    /// Where the write path's time went since start.
    pub write_path_seconds: WritePathSeconds,
}

/// Wall time of the write path's stages since start, in seconds. Taking traces, assembly and
/// its waits for the previous block write run one after another; a block is written beside
/// them, and compaction beside all.
/// Each includes its waits for the lock that queries reading pending spans hold.
#[derive(Debug, Clone, Default, Serialize)]
pub struct WritePathSeconds {
    /// Finding quiet traces in the head and taking them out.
    pub take_ready: f64,
    /// Assembling them into rows (on several threads) and computing their rollups.
    pub assembly: f64,
    /// Writing assembled rows as blocks.
    pub block_writes: f64,
    /// Assembly waiting for a block write to finish before it cuts the next block (the rows
    /// being written and those assembled since fill the buffer).
    pub block_write_waits: f64,
    /// Merging small blocks.
    pub compaction: f64,
}

/// The attribute that names a trace's traffic source unless configured otherwise.
pub const DEFAULT_TRAFFIC_SOURCE_ATTRIBUTE: &str = "traffic.source";

/// Settings of the embedded store.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct StoreConfig {
    /// Where the log and the blocks live.
    pub data_dir: PathBuf,
    /// A trace is assembled after this long without a new span.
    pub trace_idle_seconds: f64,
    /// A trace is assembled at this age even if spans keep coming.
    pub trace_max_age_seconds: f64,
    /// `fdatasync` before acknowledging (turn off only for throwaway data).
    pub wal_sync: bool,
    /// A new log segment is started past this size.
    pub wal_segment_bytes: u64,
    /// A block is cut when this many assembled spans wait in memory (besides those of the
    /// block being written)...
    pub block_max_spans: usize,
    /// ...or when they take half this many bytes of memory: the other half holds the spans
    /// assembled while the block is written (assembled spans carry every column their block
    /// will have, about 0.6 KB each in the demo; 0: no limit)...
    pub block_max_bytes: u64,
    /// ...or when the oldest has waited this long.
    pub block_max_age_seconds: f64,
    /// Blocks smaller than this many spans are merged together.
    pub compaction_target_spans: usize,
    /// Blocks are merged only while the merged block covers at most this many seconds of
    /// span time, so that a search of recent traces reads few blocks (0: no limit).
    pub compaction_window_seconds: f64,
    /// Blocks whose newest span is older than this are deleted (0 keeps everything).
    pub retention_hours: f64,
    /// The oldest blocks are deleted while the blocks take more than this (0: no limit).
    pub retention_max_bytes: u64,
    /// Beyond this many spans waiting in memory for their trace to go quiet, writes are
    /// refused with "retry later"...
    pub max_pending_spans: u64,
    /// ...and beyond this many bytes of them (a pending span takes about 150 bytes in the
    /// demo, its attributes and events included; 0: no limit). With `trace_idle_seconds`,
    /// these bound the rate the store can take in: about limit / idle time (the default, 1.3
    /// million of the demo's spans, allows 130,000 spans/s with traces quiet after 10 s).
    pub max_pending_bytes: u64,
    /// The per-minute rollups of the most recently read blocks are kept in memory up to about
    /// this many bytes (about 13 MiB per hour of the demo's traffic); each block's rollup
    /// merged across its minutes, what a window covering the block reads, is always kept.
    pub rollup_cache_bytes: u64,
    /// The attribute naming a trace's traffic source (`web`, `app`, `load_test`…), read from
    /// its root span (span, then resource attributes) or the first span that has it.
    pub traffic_source_attribute: String,
    /// Traffic sources that are load tests: left out of traffic estimates' baselines, and
    /// measured against what production's fan-out expects of them.
    pub load_test_sources: Vec<String>,
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self {
            data_dir: PathBuf::from("./clew-data"),
            trace_idle_seconds: 10.0,
            trace_max_age_seconds: 300.0,
            wal_sync: true,
            wal_segment_bytes: 64 << 20,
            block_max_spans: 500_000,
            block_max_bytes: 256 << 20,
            block_max_age_seconds: 60.0,
            compaction_target_spans: 2_000_000,
            compaction_window_seconds: 3600.0,
            retention_hours: 7.0 * 24.0,
            retention_max_bytes: 0,
            max_pending_spans: 2_000_000,
            max_pending_bytes: 192 << 20,
            rollup_cache_bytes: 64 << 20,
            traffic_source_attribute: DEFAULT_TRAFFIC_SOURCE_ATTRIBUTE.into(),
            load_test_sources: vec!["load_test".into(), "load-test".into(), "loadtest".into()],
        }
    }
}
