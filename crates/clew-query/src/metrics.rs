//! Aggregates over spans for pictures: the service map (nodes and edges with rate, errors and
//! latency) and a service's RED series (rate, errors, duration percentiles over time).

use clew_model::span_flags;
use serde::{Deserialize, Serialize};

use crate::{QueryEngine, QueryError, batches_to_json, quote};

/// The name a call to an uninstrumented peer goes by (the precedence of the topology issue:
/// `peer.service`, then `server.address`, then `db.system`).
pub(crate) const VIRTUAL_PEER: &str = "coalesce(peer_service, server_address, db_system)";

/// What a node of the service map stands for.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum NodeKind {
    /// A service that sends spans.
    Service,
    /// Called, but sends no spans: named from its callers' client spans.
    Virtual,
    /// Where root spans come from.
    User,
}

/// Latency and outcome of a set of calls.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct CallStats {
    pub calls: i64,
    pub errors: i64,
    pub p50_nanos: f64,
    pub p95_nanos: f64,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct GraphNode {
    pub name: String,
    pub kind: NodeKind,
    /// Calls into the node: its SERVER/CONSUMER and root spans, or for a virtual node the
    /// client spans that call it.
    #[serde(flatten)]
    pub stats: CallStats,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct GraphEdge {
    pub parent: String,
    pub child: String,
    /// Calls measured on the callee's side (its SERVER/CONSUMER spans), or on the caller's
    /// side when the callee is virtual.
    #[serde(flatten)]
    pub stats: CallStats,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ServiceGraph {
    pub start_unix_nano: u64,
    pub end_unix_nano: u64,
    pub nodes: Vec<GraphNode>,
    pub edges: Vec<GraphEdge>,
}

/// One time bucket of a RED series.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RedPoint {
    pub time_unix_nano: i64,
    pub calls: i64,
    pub errors: i64,
    pub p50_nanos: f64,
    pub p95_nanos: f64,
    pub p99_nanos: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct OperationStats {
    pub name: String,
    pub kind: String,
    pub calls: i64,
    pub errors: i64,
    pub p50_nanos: f64,
    pub p95_nanos: f64,
    pub p99_nanos: f64,
    /// Time spent on traces' critical paths, summed.
    pub critical_path_nanos: i64,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ServiceRed {
    pub service: String,
    pub start_unix_nano: u64,
    pub end_unix_nano: u64,
    pub step_nanos: u64,
    /// The span kinds the series counts: SERVER and CONSUMER when the service has such spans
    /// in the window, otherwise every span.
    pub kinds: Vec<String>,
    pub series: Vec<RedPoint>,
    pub operations: Vec<OperationStats>,
}

/// Which traces the map is drawn from: all, or those of one entry point.
#[derive(Debug, Clone, Default)]
pub struct EntryFilter {
    pub service: Option<String>,
    pub operation: Option<String>,
}

const ERROR: &str = "CASE WHEN status_code = 'error' THEN 1 ELSE 0 END";

fn percentiles(column: &str, levels: &[(f64, &str)]) -> String {
    levels
        .iter()
        .map(|(level, name)| format!("coalesce(approx_percentile_cont({column}, {level}), 0.0) AS {name}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn rows<T: serde::de::DeserializeOwned>(batches: &[datafusion::arrow::array::RecordBatch]) -> Result<Vec<T>, QueryError> {
    serde_json::from_value(batches_to_json(batches)?).map_err(|e| QueryError::Encode(e.to_string()))
}

#[derive(Deserialize)]
struct EdgeRow {
    parent: Option<String>,
    child: Option<String>,
    #[serde(rename = "virtual")]
    is_virtual: i64,
    #[serde(flatten)]
    stats: CallStats,
}

impl QueryEngine {
    /// The service map of calls that started within [start, end] (Unix ns).
    pub async fn service_graph(&self, start_unix_nano: u64, end_unix_nano: u64, entry: &EntryFilter) -> Result<ServiceGraph, QueryError> {
        let mut window = format!("start_time_unix_nano >= {start_unix_nano} AND start_time_unix_nano <= {end_unix_nano}");
        if let Some(service) = &entry.service {
            window.push_str(&format!(" AND trace_root_service = {}", quote(service)));
        }
        if let Some(operation) = &entry.operation {
            window.push_str(&format!(" AND trace_root_name = {}", quote(operation)));
        }
        let unmatched = span_flags::UNMATCHED_CLIENT;
        let stats =
            format!("count(*) AS calls, sum(err) AS errors, {}", percentiles("duration_nanos", &[(0.5, "p50_nanos"), (0.95, "p95_nanos")]));
        // Every call into something, once: a SERVER/CONSUMER span from another service, a
        // root span (called by the user), or a client span whose callee sends no spans.
        let calls = format!(
            "SELECT parent_service AS parent, service_name AS child, 0 AS virtual, {ERROR} AS err, duration_nanos FROM spans \
               WHERE {window} AND parent_service IS NOT NULL AND parent_service <> service_name AND kind IN ('server', 'consumer') \
             UNION ALL \
             SELECT 'user' AS parent, service_name AS child, 0 AS virtual, {ERROR} AS err, duration_nanos FROM spans \
               WHERE {window} AND parent_span_id IS NULL \
             UNION ALL \
             SELECT service_name AS parent, {VIRTUAL_PEER} AS child, 1 AS virtual, {ERROR} AS err, duration_nanos FROM spans \
               WHERE {window} AND (span_flags & {unmatched}) <> 0 AND {VIRTUAL_PEER} IS NOT NULL"
        );
        let edges_sql =
            format!("SELECT parent, child, virtual, {stats} FROM ({calls}) GROUP BY parent, child, virtual ORDER BY parent, child");
        let nodes_sql = format!("SELECT child, max(virtual) AS virtual, {stats} FROM ({calls}) GROUP BY child ORDER BY child");
        // Services that send spans but are never called (batch jobs, or only internal spans).
        let services_sql = format!("SELECT DISTINCT service_name FROM spans WHERE {window} ORDER BY service_name");
        let (edge_batches, node_batches, service_batches) =
            tokio::try_join!(self.internal_sql(&edges_sql), self.internal_sql(&nodes_sql), self.internal_sql(&services_sql))?;
        let mut edges = Vec::new();
        let mut user_calls: Option<CallStats> = None;
        for row in rows::<EdgeRow>(&edge_batches)? {
            let (Some(parent), Some(child)) = (row.parent, row.child) else { continue };
            if parent == "user" && row.is_virtual == 0 {
                let total = user_calls.get_or_insert(CallStats { calls: 0, errors: 0, p50_nanos: 0.0, p95_nanos: 0.0 });
                total.calls += row.stats.calls;
                total.errors += row.stats.errors;
                total.p95_nanos = total.p95_nanos.max(row.stats.p95_nanos);
                total.p50_nanos = total.p50_nanos.max(row.stats.p50_nanos);
            }
            edges.push(GraphEdge { parent, child, stats: row.stats });
        }
        let mut nodes: Vec<GraphNode> = Vec::new();
        for row in rows::<EdgeRow>(&node_batches)? {
            let Some(name) = row.child else { continue };
            nodes.push(GraphNode { name, kind: if row.is_virtual == 1 { NodeKind::Virtual } else { NodeKind::Service }, stats: row.stats });
        }
        #[derive(Deserialize)]
        struct ServiceRow {
            service_name: String,
        }
        for row in rows::<ServiceRow>(&service_batches)? {
            if !nodes.iter().any(|n| n.name == row.service_name && n.kind == NodeKind::Service) {
                let stats = CallStats { calls: 0, errors: 0, p50_nanos: 0.0, p95_nanos: 0.0 };
                nodes.push(GraphNode { name: row.service_name, kind: NodeKind::Service, stats });
            }
        }
        // A peer named like an instrumented service is that service, not a second node.
        let instrumented: std::collections::HashSet<String> =
            nodes.iter().filter(|n| n.kind == NodeKind::Service).map(|n| n.name.clone()).collect();
        nodes.retain(|n| n.kind != NodeKind::Virtual || !instrumented.contains(&n.name));
        if let Some(stats) = user_calls {
            nodes.push(GraphNode { name: "user".into(), kind: NodeKind::User, stats });
        }
        nodes.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(ServiceGraph { start_unix_nano, end_unix_nano, nodes, edges })
    }

    /// Rate, errors and duration of a service over [start, end], in buckets of `step`.
    pub async fn service_red(
        &self,
        service: &str,
        operation: Option<&str>,
        start_unix_nano: u64,
        end_unix_nano: u64,
        step_nanos: u64,
    ) -> Result<ServiceRed, QueryError> {
        if step_nanos == 0 || end_unix_nano <= start_unix_nano {
            return Err(QueryError::Invalid("the window must end after it starts, and the step must be positive".into()));
        }
        if (end_unix_nano - start_unix_nano) / step_nanos > 2_000 {
            return Err(QueryError::Invalid("at most 2000 points per series: choose a larger step".into()));
        }
        let window = format!(
            "service_name = {} AND start_time_unix_nano >= {start_unix_nano} AND start_time_unix_nano < {end_unix_nano}",
            quote(service)
        );
        let levels = [(0.5, "p50_nanos"), (0.95, "p95_nanos"), (0.99, "p99_nanos")];
        let operations_sql = format!(
            "SELECT name, kind, count(*) AS calls, sum({ERROR}) AS errors, {}, sum(critical_path_nanos) AS critical_path_nanos \
             FROM spans WHERE {window} GROUP BY name, kind ORDER BY calls DESC, name LIMIT 500",
            percentiles("duration_nanos", &levels)
        );
        let operations: Vec<OperationStats> = rows(&self.internal_sql(&operations_sql).await?)?;
        let has_entry_spans = operations.iter().any(|o| o.kind == "server" || o.kind == "consumer");
        let kinds: Vec<String> = if has_entry_spans {
            vec!["server".into(), "consumer".into()]
        } else {
            let mut all: Vec<String> = operations.iter().map(|o| o.kind.clone()).collect();
            all.sort();
            all.dedup();
            all
        };
        let mut filter = format!("{window} AND kind IN ({})", kinds.iter().map(|k| quote(k)).collect::<Vec<_>>().join(", "));
        if let Some(operation) = operation {
            filter = format!("{window} AND name = {}", quote(operation));
        }
        let series_sql = format!(
            "SELECT {start_unix_nano} + ((start_time_unix_nano - {start_unix_nano}) / {step_nanos}) * {step_nanos} AS time_unix_nano, \
                    count(*) AS calls, sum({ERROR}) AS errors, {} \
             FROM spans WHERE {filter} GROUP BY 1 ORDER BY 1",
            percentiles("duration_nanos", &levels)
        );
        let series = if kinds.is_empty() { Vec::new() } else { rows(&self.internal_sql(&series_sql).await?)? };
        Ok(ServiceRed { service: service.to_string(), start_unix_nano, end_unix_nano, step_nanos, kinds, series, operations })
    }
}
