//! The `spans` table that DataFusion queries: the in-memory head and every block, as one.

use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::catalog::{MemTable, Session, TableProvider};
use datafusion::datasource::file_format::parquet::ParquetFormat;
use datafusion::datasource::listing::{ListingOptions, ListingTable, ListingTableConfig, ListingTableUrl};
use datafusion::error::Result;
use datafusion::logical_expr::{BinaryExpr, Expr, Operator, TableProviderFilterPushDown, TableType};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::union::UnionExec;
use datafusion::scalar::ScalarValue;

use crate::block::SCHEMA;
use crate::engine::Snapshot;
use crate::{EmbeddedStore, SpanFilter};

/// Every scan takes a fresh snapshot: spans acknowledged before the query started are in it,
/// wherever they are at that moment. A pinned table scans one snapshot taken when it was made,
/// so that several queries (or several scans in one query) see the same spans.
#[derive(Debug)]
pub struct SpansTable {
    store: Arc<EmbeddedStore>,
    pinned: Option<Snapshot>,
}

impl SpansTable {
    pub fn new(store: Arc<EmbeddedStore>) -> Self {
        Self { store, pinned: None }
    }

    /// Pinned, with only the pending traces that have a span meeting `filter`.
    pub fn pinned(store: Arc<EmbeddedStore>, filter: &SpanFilter) -> std::result::Result<Self, crate::StoreError> {
        let snapshot = store.snapshot_where(filter)?;
        Ok(Self { store, pinned: Some(snapshot) })
    }
}

#[async_trait]
impl TableProvider for SpansTable {
    fn schema(&self) -> SchemaRef {
        Arc::clone(&SCHEMA)
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    fn supports_filters_pushdown(&self, filters: &[&Expr]) -> Result<Vec<TableProviderFilterPushDown>> {
        // Both parts prune with the filters (row groups, pages, bloom filters) and DataFusion
        // applies them again on top.
        Ok(vec![TableProviderFilterPushDown::Inexact; filters.len()])
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let snapshot = match &self.pinned {
            Some(snapshot) => snapshot.clone(),
            // Converting the pending spans takes a while under load: not on a runtime thread.
            None => {
                let store = Arc::clone(&self.store);
                let filter = span_filter(filters);
                tokio::task::spawn_blocking(move || store.snapshot_where(&filter))
                    .await
                    .map_err(|e| datafusion::error::DataFusionError::External(Box::new(e)))?
                    .map_err(|e| datafusion::error::DataFusionError::External(Box::new(e)))?
            }
        };
        let mut plans: Vec<Arc<dyn ExecutionPlan>> = Vec::new();
        let memory = MemTable::try_new(Arc::clone(&SCHEMA), vec![snapshot.memory])?;
        plans.push(memory.scan(state, projection, filters, limit).await?);
        // Blocks outside the trace start times asked for are not even opened.
        let (earliest, latest) = trace_start_bounds(filters);
        let blocks: Vec<_> =
            snapshot.blocks.iter().filter(|block| block.max_end_unix_nano >= earliest && block.min_start_unix_nano <= latest).collect();
        if !blocks.is_empty() {
            let urls = blocks.iter().map(|block| ListingTableUrl::parse(block.path.to_string_lossy())).collect::<Result<Vec<_>>>()?;
            let options = ListingOptions::new(Arc::new(ParquetFormat::default())).with_file_extension(".parquet");
            let config = ListingTableConfig::new_with_multi_paths(urls).with_listing_options(options).with_schema(Arc::clone(&SCHEMA));
            let blocks = ListingTable::try_new(config)?;
            plans.push(blocks.scan(state, projection, filters, limit).await?);
        }
        UnionExec::try_new(plans)
    }
}

/// A pushed-down filter of the form `column <op> literal`: the column's name, the operator
/// and the literal.
fn comparison(filter: &Expr) -> Option<(&str, Operator, &ScalarValue)> {
    let Expr::BinaryExpr(BinaryExpr { left, op, right }) = filter else { return None };
    let (Expr::Column(column), Expr::Literal(value, _)) = (left.as_ref(), right.as_ref()) else { return None };
    Some((column.name.as_str(), *op, value))
}

/// The span filter that conjunctive filters `service_name = '…'` and `name = '…'` make.
fn span_filter(filters: &[Expr]) -> SpanFilter {
    let mut filter = SpanFilter::default();
    for (column, op, value) in filters.iter().filter_map(comparison) {
        let (Operator::Eq, ScalarValue::Utf8(Some(value)) | ScalarValue::Utf8View(Some(value))) = (op, value) else { continue };
        match column {
            "service_name" => filter.service_name = Some(value.clone()),
            "name" => filter.name = Some(value.clone()),
            _ => {}
        }
    }
    filter
}

/// The range of trace start times that conjunctive filters such as
/// `trace_start_unix_nano >= X` allow. A trace starts no later than any of its spans, and a
/// block's earliest span starts its earliest trace, so a block whose spans all end before the
/// range, or that starts after it, holds no row of it.
fn trace_start_bounds(filters: &[Expr]) -> (i64, i64) {
    let (mut earliest, mut latest) = (i64::MIN, i64::MAX);
    for (column, op, value) in filters.iter().filter_map(comparison) {
        let ("trace_start_unix_nano", ScalarValue::Int64(Some(value))) = (column, value) else { continue };
        match op {
            Operator::Gt => earliest = earliest.max(value.saturating_add(1)),
            Operator::GtEq => earliest = earliest.max(*value),
            Operator::Lt => latest = latest.min(value.saturating_sub(1)),
            Operator::LtEq => latest = latest.min(*value),
            Operator::Eq => {
                earliest = earliest.max(*value);
                latest = latest.min(*value);
            }
            _ => {}
        }
    }
    (earliest, latest)
}

#[cfg(test)]
mod tests {
    use datafusion::prelude::{col, lit};

    use super::*;

    #[test]
    fn equalities_on_service_and_name_make_the_span_filter() {
        let filters = [
            col("service_name").eq(lit("db")),
            col("kind").eq(lit("server")),
            col("name").eq(lit("SELECT")),
            col("duration_nanos").gt(lit(5i64)),
        ];
        assert_eq!(span_filter(&filters), SpanFilter { service_name: Some("db".into()), name: Some("SELECT".into()) });
        // Anything but a plain equality allows every span.
        assert!(span_filter(&[col("service_name").not_eq(lit("db"))]).is_empty());
        assert!(span_filter(&[col("service_name").eq(lit("a")).or(col("service_name").eq(lit("b")))]).is_empty());
    }
}
