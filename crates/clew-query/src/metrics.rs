//! Aggregates over spans for pictures: the service map (nodes and edges with rate, errors and
//! latency) and a service's RED series (rate, errors, duration percentiles over time).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use clew_model::LatencyHistogram;
use clew_store::{EdgeKind, EdgeRow, OVERFLOW_PATH, REQUEST_PATH, ROLLUP_BUCKET_NANOS, in_minutes};
use serde::{Deserialize, Serialize};

use crate::{QueryEngine, QueryError, batches_to_json};

/// The name a call to an uninstrumented peer goes by: `peer.service`, then `server.address`,
/// then `db.system`, then (for a message nobody instrumented consumes) the destination.
pub(crate) const VIRTUAL_PEER: &str = "coalesce(peer_service, server_address, db_system, attributes['messaging.destination.name'])";

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

pub(crate) const ERROR: &str = "CASE WHEN status_code = 'error' THEN 1 ELSE 0 END";

pub(crate) fn percentiles(column: &str, levels: &[(f64, &str)]) -> String {
    levels
        .iter()
        .map(|(level, name)| format!("coalesce(approx_percentile_cont({column}, {level}), 0.0) AS {name}"))
        .collect::<Vec<_>>()
        .join(", ")
}

pub(crate) fn rows<T: serde::de::DeserializeOwned>(batches: &[datafusion::arrow::array::RecordBatch]) -> Result<Vec<T>, QueryError> {
    serde_json::from_value(batches_to_json(batches)?).map_err(|e| QueryError::Encode(e.to_string()))
}

/// Calls, errors and latency gathered from rollup rows.
#[derive(Default)]
pub(crate) struct Gathered {
    calls: u64,
    errors: u64,
    histogram: LatencyHistogram,
}

impl Gathered {
    fn add(&mut self, row: &EdgeRow) {
        self.calls += row.calls;
        self.errors += row.errors;
        self.histogram.merge(&row.histogram);
    }

    fn stats(&self) -> CallStats {
        CallStats {
            calls: self.calls as i64,
            errors: self.errors as i64,
            p50_nanos: self.histogram.quantile(0.5),
            p95_nanos: self.histogram.quantile(0.95),
        }
    }
}

/// The first minute of the rollups a window [start, end] reads.
pub(crate) fn first_minute(start_unix_nano: u64) -> i64 {
    (start_unix_nano.min(i64::MAX as u64) as i64).div_euclid(ROLLUP_BUCKET_NANOS) * ROLLUP_BUCKET_NANOS
}

impl QueryEngine {
    /// Visits the rollup rows of the minutes that overlap [start, end] (Unix ns), in traces of
    /// the entry point `entry` when it names one.
    pub(crate) async fn visit_edges(
        &self,
        start_unix_nano: u64,
        end_unix_nano: u64,
        entry: &EntryFilter,
        mut visit: impl FnMut(&EdgeRow),
    ) -> Result<(), QueryError> {
        let (first, last) = (first_minute(start_unix_nano), end_unix_nano.min(i64::MAX as u64) as i64);
        for part in self.storage.rollups(first, last, clew_store::RollupRows::Merged).await? {
            for row in in_minutes(&part.for_window(first, last).edges, first, last, |row| row.minute_unix_nano) {
                if entry.service.as_deref().is_some_and(|s| s != &*row.entry_service)
                    || entry.operation.as_deref().is_some_and(|o| o != &*row.entry_operation)
                {
                    continue;
                }
                visit(row);
            }
        }
        Ok(())
    }

    /// The service map of calls that started within [start, end] (Unix ns), counted in whole
    /// minutes, from the call rollups.
    pub async fn service_graph(&self, start_unix_nano: u64, end_unix_nano: u64, entry: &EntryFilter) -> Result<ServiceGraph, QueryError> {
        // (parent, child, into a virtual node) → calls; (name, kind) → calls into the node.
        let mut edge_calls: BTreeMap<(Arc<str>, Arc<str>, bool), Gathered> = BTreeMap::new();
        let mut node_calls: BTreeMap<(Arc<str>, bool), Gathered> = BTreeMap::new();
        let mut user = Gathered::default();
        let mut present: BTreeSet<Arc<str>> = BTreeSet::new();
        let user_name: Arc<str> = Arc::from("user");
        self.visit_edges(start_unix_nano, end_unix_nano, entry, |row| {
            let (parent, is_virtual) = match row.kind {
                EdgeKind::Present => {
                    present.insert(Arc::clone(&row.child));
                    return;
                }
                EdgeKind::Root => {
                    user.add(row);
                    (Arc::clone(&user_name), false)
                }
                EdgeKind::Call => (row.parent.clone().unwrap_or_else(|| Arc::clone(&user_name)), false),
                EdgeKind::Virtual => (row.parent.clone().unwrap_or_else(|| Arc::clone(&user_name)), true),
            };
            edge_calls.entry((parent, Arc::clone(&row.child), is_virtual)).or_default().add(row);
            node_calls.entry((Arc::clone(&row.child), is_virtual)).or_default().add(row);
        })
        .await?;
        let edges = edge_calls
            .iter()
            .map(|((parent, child, _), gathered)| GraphEdge {
                parent: parent.to_string(),
                child: child.to_string(),
                stats: gathered.stats(),
            })
            .collect();
        let mut nodes: Vec<GraphNode> = Vec::new();
        for name in &present {
            let stats = node_calls.get(&(Arc::clone(name), false)).map(Gathered::stats).unwrap_or_else(|| Gathered::default().stats());
            nodes.push(GraphNode { name: name.to_string(), kind: NodeKind::Service, stats });
        }
        // A peer named like an instrumented service is that service, not a second node.
        for ((name, is_virtual), gathered) in &node_calls {
            if *is_virtual && !present.contains(name) {
                nodes.push(GraphNode { name: name.to_string(), kind: NodeKind::Virtual, stats: gathered.stats() });
            }
        }
        if user.calls > 0 {
            nodes.push(GraphNode { name: "user".into(), kind: NodeKind::User, stats: user.stats() });
        }
        nodes.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(ServiceGraph { start_unix_nano, end_unix_nano, nodes, edges })
    }

    /// Rate, errors and duration of a service over [start, end], in buckets of `step` (rounded up
    /// to whole minutes), from the calling-context rollups: spans are counted in the minute
    /// their trace started.
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
        // The rollups count spans per minute: a step is whole minutes.
        let minute = ROLLUP_BUCKET_NANOS as u64;
        let step = step_nanos.div_ceil(minute).max(1) * minute;
        let (first, last) = (first_minute(start_unix_nano), end_unix_nano.min(i64::MAX as u64) as i64);
        // Per (minute, operation, kind): calls, errors, critical-path time and latency.
        type Key = (i64, Arc<str>, Arc<str>);
        let mut minutes: HashMap<Key, (i64, i64, i64, LatencyHistogram)> = HashMap::new();
        for part in self.storage.rollups(first, last, clew_store::RollupRows::PathsPerMinute).await? {
            for row in in_minutes(&part.paths, first, last, |row| row.minute_unix_nano) {
                if &*row.service != service || row.path == REQUEST_PATH || row.path == OVERFLOW_PATH {
                    continue;
                }
                let totals = minutes.entry((row.minute_unix_nano, Arc::clone(&row.operation), Arc::clone(&row.kind))).or_default();
                totals.0 += row.spans as i64;
                totals.1 += row.errors as i64;
                totals.2 = totals.2.saturating_add(row.critical_path_nanos);
                totals.3.merge(&row.latency);
            }
        }
        let mut per_operation: BTreeMap<(Arc<str>, Arc<str>), (i64, i64, i64, LatencyHistogram)> = BTreeMap::new();
        for ((_, name, kind), (calls, errors, critical, histogram)) in &minutes {
            let totals = per_operation.entry((Arc::clone(name), Arc::clone(kind))).or_default();
            totals.0 += calls;
            totals.1 += errors;
            totals.2 = totals.2.saturating_add(*critical);
            totals.3.merge(histogram);
        }
        let mut operations: Vec<OperationStats> = per_operation
            .into_iter()
            .map(|((name, kind), (calls, errors, critical, histogram))| OperationStats {
                name: name.to_string(),
                kind: kind.to_string(),
                calls,
                errors,
                p50_nanos: histogram.quantile(0.5),
                p95_nanos: histogram.quantile(0.95),
                p99_nanos: histogram.quantile(0.99),
                critical_path_nanos: critical,
            })
            .collect();
        operations.sort_by(|a, b| b.calls.cmp(&a.calls).then_with(|| a.name.cmp(&b.name)));
        operations.truncate(500);
        let has_entry_spans = operations.iter().any(|o| o.kind == "server" || o.kind == "consumer");
        let kinds: Vec<String> = if has_entry_spans {
            vec!["server".into(), "consumer".into()]
        } else {
            let mut all: Vec<String> = operations.iter().map(|o| o.kind.clone()).collect();
            all.sort();
            all.dedup();
            all
        };
        let mut buckets: BTreeMap<i64, (i64, i64, LatencyHistogram)> = BTreeMap::new();
        for ((minute, name, kind), (calls, errors, _, histogram)) in &minutes {
            let wanted = match operation {
                Some(operation) => &**name == operation,
                None => kinds.iter().any(|k| k == &**kind),
            };
            if !wanted {
                continue;
            }
            let time = first + (minute - first).div_euclid(step as i64) * step as i64;
            let bucket = buckets.entry(time).or_default();
            bucket.0 += calls;
            bucket.1 += errors;
            bucket.2.merge(histogram);
        }
        let series = buckets
            .into_iter()
            .map(|(time, (calls, errors, histogram))| RedPoint {
                time_unix_nano: time,
                calls,
                errors,
                p50_nanos: histogram.quantile(0.5),
                p95_nanos: histogram.quantile(0.95),
                p99_nanos: histogram.quantile(0.99),
            })
            .collect();
        Ok(ServiceRed { service: service.to_string(), start_unix_nano, end_unix_nano, step_nanos: step, kinds, series, operations })
    }
}

fn millis(nanos: f64) -> String {
    let ms = nanos / 1e6;
    if ms >= 100.0 {
        format!("{ms:.0} ms")
    } else if ms >= 1.0 {
        format!("{ms:.1} ms")
    } else {
        format!("{ms:.2} ms")
    }
}

fn per_second(calls: i64, window_nanos: u64) -> String {
    let rate = calls as f64 / (window_nanos.max(1) as f64 / 1e9);
    if rate >= 10.0 {
        format!("{rate:.0}/s")
    } else if rate >= 0.1 {
        format!("{rate:.2}/s")
    } else {
        format!("{:.2}/min", rate * 60.0)
    }
}

fn error_share(stats: &CallStats) -> String {
    if stats.calls == 0 { "0%".into() } else { format!("{:.1}%", 100.0 * stats.errors as f64 / stats.calls as f64) }
}

impl ServiceGraph {
    fn window(&self) -> u64 {
        self.end_unix_nano.saturating_sub(self.start_unix_nano)
    }

    fn edge_label(&self, edge: &GraphEdge) -> String {
        format!("{} · {} err · p95 {}", per_second(edge.stats.calls, self.window()), error_share(&edge.stats), millis(edge.stats.p95_nanos))
    }

    /// Graphviz DOT: services as boxes, uninstrumented peers dashed, the user as a diamond.
    pub fn to_dot(&self) -> String {
        let quote = |text: &str| format!("\"{}\"", text.replace('\\', "\\\\").replace('"', "\\\""));
        let mut out = String::from("digraph services {\n  rankdir=LR;\n  node [shape=box, style=rounded, fontname=\"Helvetica\"];\n");
        for node in &self.nodes {
            let style = match node.kind {
                NodeKind::Service => "",
                NodeKind::Virtual => ", style=\"rounded,dashed\", color=gray40",
                NodeKind::User => ", shape=diamond",
            };
            let label = match node.kind {
                NodeKind::User => format!("user\\n{}", per_second(node.stats.calls, self.window())),
                _ => format!(
                    "{}\\n{} · {} err · p95 {}",
                    node.name.replace('"', "\\\""),
                    per_second(node.stats.calls, self.window()),
                    error_share(&node.stats),
                    millis(node.stats.p95_nanos)
                ),
            };
            out.push_str(&format!("  {} [label=\"{label}\"{style}];\n", quote(&node.name)));
        }
        for edge in &self.edges {
            out.push_str(&format!("  {} -> {} [label={}];\n", quote(&edge.parent), quote(&edge.child), quote(&self.edge_label(edge))));
        }
        out.push_str("}\n");
        out
    }

    /// A Mermaid flowchart (renders on GitHub and in most wikis).
    pub fn to_mermaid(&self) -> String {
        let ids: std::collections::HashMap<&str, String> =
            self.nodes.iter().enumerate().map(|(i, node)| (node.name.as_str(), format!("n{i}"))).collect();
        let text = |s: &str| s.replace('"', "#quot;");
        let mut out = String::from("flowchart LR\n");
        for node in &self.nodes {
            let id = &ids[node.name.as_str()];
            let label =
                format!("{}<br/>{} · {} err", text(&node.name), per_second(node.stats.calls, self.window()), error_share(&node.stats));
            out.push_str(&match node.kind {
                NodeKind::Service => format!("  {id}[\"{label}\"]\n"),
                NodeKind::Virtual => format!("  {id}[/\"{label}\"/]\n"),
                NodeKind::User => format!("  {id}{{\"{label}\"}}\n"),
            });
        }
        for edge in &self.edges {
            if let (Some(from), Some(to)) = (ids.get(edge.parent.as_str()), ids.get(edge.child.as_str())) {
                out.push_str(&format!("  {from} -->|\"{}\"| {to}\n", text(&self.edge_label(edge))));
            }
        }
        let virtual_ids: Vec<&str> =
            self.nodes.iter().filter(|n| n.kind == NodeKind::Virtual).map(|n| ids[n.name.as_str()].as_str()).collect();
        if !virtual_ids.is_empty() {
            out.push_str("  classDef uninstrumented stroke-dasharray: 5 5\n");
            out.push_str(&format!("  class {} uninstrumented\n", virtual_ids.join(",")));
        }
        out
    }

    /// A Markdown table of the edges, for sharing.
    pub fn to_markdown(&self) -> String {
        let kind = |name: &str| self.nodes.iter().find(|n| n.name == name).map(|n| n.kind);
        let mut out = String::from("| caller | callee | rate | errors | p50 | p95 |\n| --- | --- | ---: | ---: | ---: | ---: |\n");
        for edge in &self.edges {
            let child = if kind(&edge.child) == Some(NodeKind::Virtual) {
                format!("{} (not instrumented)", edge.child)
            } else {
                edge.child.clone()
            };
            out.push_str(&format!(
                "| {} | {child} | {} | {} | {} | {} |\n",
                edge.parent,
                per_second(edge.stats.calls, self.window()),
                error_share(&edge.stats),
                millis(edge.stats.p50_nanos),
                millis(edge.stats.p95_nanos)
            ));
        }
        out
    }

    /// A plain-text table of the edges, for a terminal.
    pub fn to_table(&self) -> String {
        let mut out = format!("{:<28} {:<32} {:>10} {:>7} {:>10} {:>10}\n", "CALLER", "CALLEE", "RATE", "ERRORS", "P50", "P95");
        let kind = |name: &str| self.nodes.iter().find(|n| n.name == name).map(|n| n.kind);
        for edge in &self.edges {
            let child = if kind(&edge.child) == Some(NodeKind::Virtual) { format!("{} (virtual)", edge.child) } else { edge.child.clone() };
            out.push_str(&format!(
                "{:<28} {:<32} {:>10} {:>7} {:>10} {:>10}\n",
                edge.parent,
                child,
                per_second(edge.stats.calls, self.window()),
                error_share(&edge.stats),
                millis(edge.stats.p50_nanos),
                millis(edge.stats.p95_nanos)
            ));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn graph() -> ServiceGraph {
        let stats = |calls, errors, p95: f64| CallStats { calls, errors, p50_nanos: p95 / 2.0, p95_nanos: p95 };
        ServiceGraph {
            start_unix_nano: 0,
            end_unix_nano: 60_000_000_000,
            nodes: vec![
                GraphNode { name: "frontend".into(), kind: NodeKind::Service, stats: stats(600, 6, 120e6) },
                GraphNode { name: "pay \"v2\"".into(), kind: NodeKind::Virtual, stats: stats(60, 0, 300e6) },
                GraphNode { name: "user".into(), kind: NodeKind::User, stats: stats(600, 6, 120e6) },
            ],
            edges: vec![
                GraphEdge { parent: "user".into(), child: "frontend".into(), stats: stats(600, 6, 120e6) },
                GraphEdge { parent: "frontend".into(), child: "pay \"v2\"".into(), stats: stats(60, 0, 300e6) },
            ],
        }
    }

    #[test]
    fn dot_draws_kinds_and_escapes_names() {
        let dot = graph().to_dot();
        assert!(dot.starts_with("digraph services {"), "{dot}");
        assert!(dot.contains("\"user\" -> \"frontend\" [label=\"10/s · 1.0% err · p95 120 ms\"];"), "{dot}");
        assert!(
            dot.contains("\"pay \\\"v2\\\"\" [label=\"pay \\\"v2\\\"\\n1.00/s · 0.0% err · p95 300 ms\", style=\"rounded,dashed\""),
            "{dot}"
        );
        assert!(dot.contains("\"user\" [label=\"user\\n10/s\", shape=diamond]"), "{dot}");
    }

    #[test]
    fn mermaid_marks_uninstrumented_peers() {
        let mermaid = graph().to_mermaid();
        assert!(mermaid.starts_with("flowchart LR\n"));
        assert!(mermaid.contains("n1[/\"pay #quot;v2#quot;<br/>1.00/s · 0.0% err\"/]"), "{mermaid}");
        assert!(mermaid.contains("n2{\"user<br/>10/s · 1.0% err\"}"), "{mermaid}");
        assert!(mermaid.contains("n2 -->|\"10/s · 1.0% err · p95 120 ms\"| n0"), "{mermaid}");
        assert!(mermaid.contains("class n1 uninstrumented"), "{mermaid}");
    }

    #[test]
    fn markdown_and_table_list_every_edge() {
        let markdown = graph().to_markdown();
        assert_eq!(markdown.lines().count(), 4);
        assert!(markdown.contains("| frontend | pay \"v2\" (not instrumented) | 1.00/s | 0.0% | 150 ms | 300 ms |"), "{markdown}");
        assert!(graph().to_table().contains("(virtual)"));
    }
}
