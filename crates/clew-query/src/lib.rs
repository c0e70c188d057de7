//! Questions asked of stored spans: one trace, a search, the lists behind the pickers, and
//! read-only SQL. Everything runs on DataFusion over the store's `spans` table, so a span
//! answers the same wherever it lives (pending, freshly assembled, or in a block).

mod adoption;
mod correlations;
mod flows;
mod graph;
mod groups;
mod metrics;
mod paths;
mod search;
mod trace;
pub mod traceql;
mod udf;

use std::sync::Arc;

use clew_store::{SpanFilter, Storage, StoreError};
use datafusion::arrow::array::RecordBatch;
use datafusion::execution::context::SQLOptions;
use datafusion::prelude::{SessionConfig, SessionContext};

pub use adoption::{
    AdoptionFacts, DEPRECATED_ATTRIBUTES, DeprecatedUse, DirectoryEntry, EntryPredicate, OperationFacts, OperationGap, ReachedService,
    RequestPoint, RequestStats, RootOperation, ServiceCall, ServiceFacts, UnansweredCalls,
};
pub use clew_store::{OTHER_SOURCE, OVERFLOW_KIND, OVERFLOW_PATH, PathRow, REQUEST_KIND, REQUEST_PATH, TrafficFilter};
pub use correlations::{CorrelationFacts, CorrelationScope, DEFAULT_SAMPLE_SPANS, HeatCell, NumericValues, Selection, ValueCounts};
pub use flows::{EntryOperation, FlowCount, FlowFacts, FlowSpans};
pub use graph::Dependency;
pub use groups::{GroupNode, GroupSummary, GroupTree, MAX_PATHS as MAX_GROUP_PATHS};
pub use metrics::{CallStats, EntryFilter, GraphEdge, GraphNode, NodeKind, OperationStats, RedPoint, ServiceGraph, ServiceRed};
pub use search::{AttributeFilter, AttributeScope, CompareOp, SearchRequest, SortOrder, TraceSummary};
pub use trace::{TraceView, TraceWarning};

/// Why a query failed. `Invalid` is the caller's fault (HTTP 400); the rest are Clew's.
#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("query failed: {0}")]
    Engine(#[from] datafusion::error::DataFusionError),
    #[error("query failed: {0}")]
    Arrow(#[from] datafusion::arrow::error::ArrowError),
    #[error("could not encode the result: {0}")]
    Encode(String),
}

/// The query side of Clew. Cheap to clone.
#[derive(Clone)]
pub struct QueryEngine {
    storage: Arc<dyn Storage>,
    context: SessionContext,
}

impl std::fmt::Debug for QueryEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QueryEngine").field("storage", &self.storage).finish_non_exhaustive()
    }
}

impl QueryEngine {
    pub async fn new(storage: Arc<dyn Storage>) -> Result<Self, QueryError> {
        let table = storage.spans_table();
        Self::over(storage, table).await
    }

    /// An engine whose every query sees the spans stored now: for answers assembled from
    /// several queries that must agree with each other.
    pub async fn pinned(&self) -> Result<Self, QueryError> {
        self.pinned_where(SpanFilter::default()).await
    }

    /// Pinned, for queries that read only span rows meeting `filter`.
    pub async fn pinned_where(&self, filter: SpanFilter) -> Result<Self, QueryError> {
        // Pinning converts the pending spans, which takes a while under load: not on a
        // runtime thread.
        let storage = Arc::clone(&self.storage);
        let table = tokio::task::spawn_blocking(move || storage.pinned_spans_table(&filter))
            .await
            .map_err(|e| QueryError::Store(StoreError::Unavailable(format!("pinning the span table failed: {e}"))))??;
        Self::over(Arc::clone(&self.storage), table).await
    }

    async fn over(storage: Arc<dyn Storage>, table: Arc<dyn datafusion::catalog::TableProvider>) -> Result<Self, QueryError> {
        let config = SessionConfig::new()
            .with_information_schema(true)
            .set_bool("datafusion.execution.parquet.pushdown_filters", true)
            .set_bool("datafusion.execution.parquet.bloom_filter_on_read", true);
        let context = SessionContext::new_with_config(config);
        context.register_udf(udf::resource_attributes());
        context.register_table("span_columns", table)?;
        context.sql(&spans_view("spans", false)).await?;
        context.sql(&spans_view("span_rows", true)).await?;
        Ok(Self { storage, context })
    }

    pub fn storage(&self) -> &Arc<dyn Storage> {
        &self.storage
    }

    pub fn context(&self) -> &SessionContext {
        &self.context
    }

    /// Runs read-only SQL over the `spans` view (and `span_rows`, `span_columns`; DDL, DML and
    /// `SET` are refused).
    pub async fn sql(&self, query: &str) -> Result<Vec<RecordBatch>, QueryError> {
        let options = SQLOptions::new().with_allow_ddl(false).with_allow_dml(false).with_allow_statements(false);
        let frame = self.context.sql_with_options(query, options).await.map_err(|error| match error {
            datafusion::error::DataFusionError::SQL(..)
            | datafusion::error::DataFusionError::Plan(..)
            | datafusion::error::DataFusionError::SchemaError(..) => QueryError::Invalid(error.to_string()),
            other => QueryError::Engine(other),
        })?;
        Ok(frame.collect().await?)
    }

    /// Runs SQL that Clew itself built (the inputs are quoted by [`quote`]).
    pub(crate) async fn internal_sql(&self, query: &str) -> Result<Vec<RecordBatch>, QueryError> {
        Ok(self.context.sql(query).await?.collect().await?)
    }
}

/// Batches as a JSON array of row objects (binary columns as hex).
pub fn batches_to_json(batches: &[RecordBatch]) -> Result<serde_json::Value, QueryError> {
    let mut writer = datafusion::arrow::json::ArrayWriter::new(Vec::new());
    let refs: Vec<&RecordBatch> = batches.iter().collect();
    writer.write_batches(&refs).map_err(|e| QueryError::Encode(e.to_string()))?;
    writer.finish().map_err(|e| QueryError::Encode(e.to_string()))?;
    let bytes = writer.into_inner();
    if bytes.is_empty() {
        return Ok(serde_json::Value::Array(vec![]));
    }
    serde_json::from_slice(&bytes).map_err(|e| QueryError::Encode(e.to_string()))
}

/// The table SQL sees, derived from the stored schema: absolute start and end times in place
/// of the stored offset, and without the encoded blobs. `span_rows`, for analyses, keeps each
/// span's encoded resource: a dictionary column, so that a resource's attributes are read
/// once per resource and not once per span.
fn spans_view(name: &str, with_resource: bool) -> String {
    let columns: Vec<String> = clew_store::SCHEMA
        .fields()
        .iter()
        .filter_map(|field| match field.name().as_str() {
            "start_offset_nanos" => Some(
                "trace_start_unix_nano + start_offset_nanos AS start_time_unix_nano, \
                 trace_start_unix_nano + start_offset_nanos + duration_nanos AS end_time_unix_nano"
                    .to_string(),
            ),
            // A resource's attributes are decoded from the resource, once per distinct one.
            "resource" if with_resource => Some("resource, resource_attributes(resource) AS resource_attributes".to_string()),
            "resource" => Some("resource_attributes(resource) AS resource_attributes".to_string()),
            // Blocks written before traces had an adjusted count stand for themselves.
            "trace_adjusted_count" => Some("COALESCE(trace_adjusted_count, CAST(1 AS INT)) AS trace_adjusted_count".to_string()),
            "detail" => None,
            name => Some(name.to_string()),
        })
        .collect();
    format!("CREATE VIEW {name} AS SELECT {} FROM span_columns", columns.join(", "))
}

/// A SQL string literal.
pub(crate) fn quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}
