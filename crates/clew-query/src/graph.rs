//! The service dependency graph, as the peers' dependency APIs want it: calls between services
//! over a time window, from the parent service each span was given at assembly, plus calls to
//! services that send no spans (client spans with no server child, named by their peer).

use clew_model::span_flags;
use datafusion::arrow::array::{Array, AsArray};
use datafusion::arrow::datatypes::{DataType, Int64Type};
use serde::Serialize;

use crate::metrics::VIRTUAL_PEER;
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
    /// Edges between services whose calls started within [start, end] (Unix ns).
    pub async fn dependencies(&self, start_unix_nano: u64, end_unix_nano: u64) -> Result<Vec<Dependency>, QueryError> {
        let window = format!("start_time_unix_nano >= {start_unix_nano} AND start_time_unix_nano <= {end_unix_nano}");
        let query = format!(
            "SELECT parent, child, sum(calls) AS calls, sum(errors) AS errors FROM ( \
               SELECT parent_service AS parent, service_name AS child, count(*) AS calls, \
                      sum(CASE WHEN status_code = 'error' THEN 1 ELSE 0 END) AS errors \
               FROM spans WHERE {window} AND parent_service IS NOT NULL AND parent_service <> service_name \
                 AND kind IN ('server', 'consumer') \
               GROUP BY parent_service, service_name \
               UNION ALL \
               SELECT service_name AS parent, {VIRTUAL_PEER} AS child, count(*) AS calls, \
                      sum(CASE WHEN status_code = 'error' THEN 1 ELSE 0 END) AS errors \
               FROM spans WHERE {window} AND (span_flags & {unmatched}) <> 0 AND {VIRTUAL_PEER} IS NOT NULL \
               GROUP BY service_name, {VIRTUAL_PEER} \
             ) GROUP BY parent, child ORDER BY parent, child",
            unmatched = span_flags::UNMATCHED_CLIENT,
        );
        let batches = self.internal_sql(&query).await?;
        let mut out = Vec::new();
        for batch in &batches {
            let parent = batch.column(0).as_string::<i32>();
            let child = batch.column(1).as_string::<i32>();
            let calls = datafusion::arrow::compute::cast(batch.column(2), &DataType::Int64)?;
            let errors = datafusion::arrow::compute::cast(batch.column(3), &DataType::Int64)?;
            let (calls, errors) = (calls.as_primitive::<Int64Type>(), errors.as_primitive::<Int64Type>());
            for row in 0..batch.num_rows() {
                if parent.is_null(row) || child.is_null(row) {
                    continue;
                }
                out.push(Dependency {
                    parent: parent.value(row).to_string(),
                    child: child.value(row).to_string(),
                    call_count: calls.value(row),
                    error_count: if errors.is_null(row) { 0 } else { errors.value(row) },
                });
            }
        }
        Ok(out)
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
