//! The service dependency graph, as the peers' dependency APIs want it: calls between services
//! over a time window, from the parent service each span was given at assembly, plus calls to
//! services that send no spans (client spans with no server child, named by their peer).

use std::collections::BTreeMap;
use std::sync::Arc;

use clew_store::EdgeKind;
use datafusion::arrow::array::{Array, AsArray};
use serde::Serialize;

use crate::metrics::{EntryFilter, VIRTUAL_PEER};
use crate::{QueryEngine, QueryError, quote};

/// One caller → callee edge.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Dependency {
    pub parent: String,
    pub child: String,
    pub call_count: i64,
    pub error_count: i64,
}

impl QueryEngine {
    /// Edges between services whose calls started within [start, end] (Unix ns), counted in
    /// whole minutes from the call rollups.
    pub async fn dependencies(&self, start_unix_nano: u64, end_unix_nano: u64) -> Result<Vec<Dependency>, QueryError> {
        let mut edges: BTreeMap<(Arc<str>, Arc<str>), (i64, i64)> = BTreeMap::new();
        self.visit_edges(start_unix_nano, end_unix_nano, &EntryFilter::default(), |row| {
            if let (EdgeKind::Call | EdgeKind::Virtual, Some(parent)) = (row.kind, &row.parent) {
                let totals = edges.entry((Arc::clone(parent), Arc::clone(&row.child))).or_default();
                totals.0 += row.calls as i64;
                totals.1 += row.errors as i64;
            }
        })
        .await?;
        Ok(edges
            .into_iter()
            .map(|((parent, child), (call_count, error_count))| Dependency {
                parent: parent.to_string(),
                child: child.to_string(),
                call_count,
                error_count,
            })
            .collect())
    }

    /// Services a service calls: instrumented callees and the peers its client spans name.
    pub async fn remote_services(&self, service: &str) -> Result<Vec<String>, QueryError> {
        let service = quote(service);
        let query = format!(
            "SELECT DISTINCT name FROM ( \
               SELECT service_name AS name FROM spans WHERE parent_service = {service} AND service_name <> {service} \
               UNION ALL \
               SELECT {VIRTUAL_PEER} AS name FROM spans WHERE service_name = {service} AND kind IN ('client', 'producer') \
             ) WHERE name IS NOT NULL ORDER BY name"
        );
        let batches = self.internal_sql(&query).await?;
        let mut out = Vec::new();
        for batch in &batches {
            let names = batch.column(0).as_string::<i32>();
            out.extend((0..batch.num_rows()).filter(|row| !names.is_null(*row)).map(|row| names.value(row).to_string()));
        }
        Ok(out)
    }
}
