//! The flow of an entry operation, aggregated over its requests: the call tree of (service,
//! operation) with how many times per request each runs (mean and p95), the share of requests
//! that reach it, its errors and latency. What a system does, read from its traces.

use std::collections::{BTreeMap, BTreeSet};

use clew_query::{FlowFacts, RequestStats};
use serde::Serialize;

use crate::render::{cell, millis as ms, table};

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct FlowNode {
    /// `service|operation|kind`: unique within the flow.
    pub id: String,
    pub service: String,
    pub operation: String,
    pub kind: String,
    /// For a CLIENT/PRODUCER span: what it calls.
    pub peer: Option<String>,
    /// Steps from the entry along the shortest call path (0 for the entry).
    pub depth: usize,
    /// Runs per request, over every request of the entry operation.
    pub calls_per_request: f64,
    /// 95% of requests run it at most this many times.
    pub p95_per_request: i64,
    /// Share of requests that run it at least once (at least this share when it has several callers).
    pub reach: f64,
    pub error_share: f64,
    pub p50_nanos: f64,
    pub p95_nanos: f64,
    /// Mean time per request it spends on the critical path.
    pub critical_path_per_request_nanos: f64,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct FlowEdge {
    pub from: String,
    pub to: String,
    pub calls_per_request: f64,
    pub p95_per_request: i64,
    pub reach: f64,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Flow {
    pub service: String,
    pub operation: String,
    pub start_unix_nano: u64,
    pub end_unix_nano: u64,
    pub stats: RequestStats,
    /// In call order: each node after its callers, the root first.
    pub nodes: Vec<FlowNode>,
    pub edges: Vec<FlowEdge>,
}

fn key(service: &str, name: &str, kind: &str) -> String {
    format!("{service}|{name}|{kind}")
}

/// The p95 of a distribution of counts given as (count, requests), with `zeros` requests at 0.
fn p95(counts: &BTreeMap<i64, i64>, total: i64) -> i64 {
    if total <= 0 {
        return 0;
    }
    let rank = (0.95 * total as f64).ceil() as i64;
    let zeros = total - counts.values().sum::<i64>();
    if zeros >= rank {
        return 0;
    }
    let mut seen = zeros.max(0);
    for (&count, &requests) in counts {
        seen += requests;
        if seen >= rank {
            return count;
        }
    }
    counts.keys().next_back().copied().unwrap_or(0)
}

fn ratio(part: f64, whole: i64) -> f64 {
    if whole <= 0 { 0.0 } else { part / whole as f64 }
}

/// The flow of `service operation` from its facts.
pub fn flow(service: &str, operation: &str, facts: &FlowFacts) -> Flow {
    let requests = facts.stats.requests;
    // Per edge and per node: requests by how many times they ran it.
    let mut edge_counts: BTreeMap<(String, String), BTreeMap<i64, i64>> = BTreeMap::new();
    let mut node_counts: BTreeMap<String, BTreeMap<i64, i64>> = BTreeMap::new();
    let mut by_name: BTreeMap<(String, String), String> = BTreeMap::new();
    for s in &facts.spans {
        by_name.entry((s.service.clone(), s.name.clone())).or_insert_with(|| key(&s.service, &s.name, &s.kind));
    }
    let parent_key = |service: &Option<String>, name: &Option<String>| match (service, name) {
        (Some(service), Some(name)) => by_name.get(&(service.clone(), name.clone())).cloned(),
        _ => None,
    };
    for c in &facts.counts {
        let to = key(&c.service, &c.name, &c.kind);
        *node_counts.entry(to.clone()).or_default().entry(c.per_request).or_default() += c.traces;
        if let Some(from) = parent_key(&c.parent_service, &c.parent_name) {
            *edge_counts.entry((from, to)).or_default().entry(c.per_request).or_default() += c.traces;
        }
    }
    // A node reached through several callers: its per-request counts are the sums over them;
    // the per-(caller) distributions are what the query can give, so the node's p95 is the
    // largest of its callers' and its reach the largest share.
    let mut nodes: BTreeMap<String, FlowNode> = BTreeMap::new();
    for s in &facts.spans {
        let id = key(&s.service, &s.name, &s.kind);
        let node = nodes.entry(id.clone()).or_insert_with(|| FlowNode {
            id: id.clone(),
            service: s.service.clone(),
            operation: s.name.clone(),
            kind: s.kind.clone(),
            peer: s.peer.clone(),
            depth: 0,
            calls_per_request: 0.0,
            p95_per_request: 0,
            reach: 0.0,
            error_share: 0.0,
            p50_nanos: s.p50_nanos,
            p95_nanos: s.p95_nanos,
            critical_path_per_request_nanos: 0.0,
        });
        node.calls_per_request += ratio(s.spans as f64, requests);
        node.error_share += s.errors as f64; // divided below
        node.critical_path_per_request_nanos += ratio(s.critical_path_nanos as f64, requests);
        node.p50_nanos = node.p50_nanos.max(s.p50_nanos);
        node.p95_nanos = node.p95_nanos.max(s.p95_nanos);
    }
    for (id, node) in nodes.iter_mut() {
        let spans = node.calls_per_request * requests as f64;
        node.error_share = if spans > 0.0 { node.error_share / spans } else { 0.0 };
        let edges: Vec<&BTreeMap<i64, i64>> = edge_counts.iter().filter(|((_, to), _)| to == id).map(|(_, c)| c).collect();
        let own = node_counts.get(id);
        let per_caller: Vec<&BTreeMap<i64, i64>> = if edges.is_empty() { own.into_iter().collect() } else { edges };
        node.p95_per_request = per_caller.iter().map(|c| p95(c, requests)).max().unwrap_or(0);
        node.reach = per_caller.iter().map(|c| ratio(c.values().sum::<i64>() as f64, requests)).fold(0.0, f64::max);
    }
    let edges: Vec<FlowEdge> = edge_counts
        .iter()
        .map(|((from, to), counts)| FlowEdge {
            from: from.clone(),
            to: to.clone(),
            calls_per_request: ratio(counts.iter().map(|(c, n)| (c * n) as f64).sum(), requests),
            p95_per_request: p95(counts, requests),
            reach: ratio(counts.values().sum::<i64>() as f64, requests),
        })
        .collect();
    // Call order: depth-first from the roots, callees by how often they run.
    let mut children: BTreeMap<&str, Vec<&FlowEdge>> = BTreeMap::new();
    for e in &edges {
        children.entry(e.from.as_str()).or_default().push(e);
    }
    for list in children.values_mut() {
        list.sort_by(|a, b| b.reach.total_cmp(&a.reach).then(a.to.cmp(&b.to)));
    }
    let called: BTreeSet<&str> = edges.iter().map(|e| e.to.as_str()).collect();
    let mut roots: Vec<&FlowNode> = nodes.values().filter(|n| !called.contains(n.id.as_str())).collect();
    roots.sort_by(|a, b| (a.service != service || a.operation != operation).cmp(&(b.service != service || b.operation != operation)));
    let mut order: Vec<String> = Vec::new();
    let mut seen: BTreeSet<String> = BTreeSet::new();
    let mut stack: Vec<String> = roots.iter().rev().map(|n| n.id.clone()).collect();
    while let Some(id) = stack.pop() {
        if !seen.insert(id.clone()) {
            continue;
        }
        for e in children.get(id.as_str()).into_iter().flatten().rev() {
            stack.push(e.to.clone());
        }
        order.push(id);
    }
    for id in nodes.keys() {
        if !seen.contains(id) {
            order.push(id.clone());
        }
    }
    let mut nodes: Vec<FlowNode> = order.into_iter().filter_map(|id| nodes.remove(&id)).collect();
    // In call order every caller comes first, so one pass finds each node's shortest depth.
    let mut depth: BTreeMap<String, usize> = BTreeMap::new();
    for n in &mut nodes {
        n.depth = edges.iter().filter(|e| e.to == n.id).filter_map(|e| depth.get(&e.from)).min().map_or(0, |d| d + 1);
        depth.insert(n.id.clone(), n.depth);
    }
    Flow {
        service: service.into(),
        operation: operation.into(),
        start_unix_nano: facts.start_unix_nano,
        end_unix_nano: facts.end_unix_nano,
        stats: facts.stats.clone(),
        nodes,
        edges,
    }
}

fn label(n: &FlowNode) -> String {
    match &n.peer {
        Some(peer) if n.kind == "client" || n.kind == "producer" => format!("{} → {peer}: {}", n.service, n.operation),
        _ => format!("{}: {}", n.service, n.operation),
    }
}

impl Flow {
    pub fn to_markdown(&self) -> String {
        let s = &self.stats;
        let mut out = format!(
            "## {} {}\n\n{} requests, {} failed; p50 {}, p95 {}, p99 {}. {} distinct operations in its call tree.\n\n",
            self.service,
            self.operation,
            s.requests,
            s.errors,
            ms(s.p50_nanos),
            ms(s.p95_nanos),
            ms(s.p99_nanos),
            self.nodes.len()
        );
        out.push_str(&format!("```mermaid\n{}```\n\n", self.to_mermaid()));
        out.push_str("| Operation | Kind | Per request (mean / p95) | Reached by | Errors | p95 |\n|---|---|---|---|---|---|\n");
        for n in &self.nodes {
            out.push_str(&format!(
                "| {}{} | {} | {:.2} / {} | {:.0}% | {:.1}% | {} |\n",
                "&nbsp;&nbsp;".repeat(n.depth),
                cell(&label(n)),
                n.kind,
                n.calls_per_request,
                n.p95_per_request,
                100.0 * n.reach,
                100.0 * n.error_share,
                ms(n.p95_nanos)
            ));
        }
        out
    }

    pub fn to_table(&self) -> String {
        let mut rows = vec![[
            "OPERATION".to_string(),
            "KIND".into(),
            "PER REQUEST".into(),
            "P95/REQ".into(),
            "REACH".into(),
            "ERRORS".into(),
            "P95".into(),
        ]];
        for n in &self.nodes {
            rows.push([
                format!("{}{}", "  ".repeat(n.depth), label(n)),
                n.kind.clone(),
                format!("{:.2}", n.calls_per_request),
                n.p95_per_request.to_string(),
                format!("{:.0}%", 100.0 * n.reach),
                format!("{:.1}%", 100.0 * n.error_share),
                ms(n.p95_nanos),
            ]);
        }
        format!("{} {}: {} requests\n{}", self.service, self.operation, self.stats.requests, table(&rows))
    }

    /// A Mermaid flowchart of the services' operations (client spans folded into their edges).
    pub fn to_mermaid(&self) -> String {
        let ids: BTreeMap<&str, String> = self.nodes.iter().enumerate().map(|(i, n)| (n.id.as_str(), format!("n{i}"))).collect();
        let quote = |text: &str| text.replace('"', "#quot;");
        let mut out = String::from("flowchart LR\n");
        for n in &self.nodes {
            out.push_str(&format!("  {}[\"{}<br/>{}\"]\n", ids[n.id.as_str()], quote(&n.service), quote(&n.operation)));
        }
        for e in &self.edges {
            out.push_str(&format!("  {} -->|\"×{:.2}\"| {}\n", ids[e.from.as_str()], e.calls_per_request, ids[e.to.as_str()]));
        }
        out
    }

    pub fn to_dot(&self) -> String {
        let ids: BTreeMap<&str, String> = self.nodes.iter().enumerate().map(|(i, n)| (n.id.as_str(), format!("n{i}"))).collect();
        let quote = |text: &str| text.replace('\\', "\\\\").replace('"', "\\\"");
        let mut out = String::from("digraph flow {\n  rankdir=LR;\n  node [shape=box];\n");
        for n in &self.nodes {
            out.push_str(&format!("  {} [label=\"{}\\n{}\"];\n", ids[n.id.as_str()], quote(&n.service), quote(&n.operation)));
        }
        for e in &self.edges {
            out.push_str(&format!("  {} -> {} [label=\"x{:.2}\"];\n", ids[e.from.as_str()], ids[e.to.as_str()], e.calls_per_request));
        }
        out.push_str("}\n");
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn p95_counts_requests_that_never_run_it() {
        // 100 requests: 90 never, 8 once, 2 three times.
        let counts = BTreeMap::from([(1, 8), (3, 2)]);
        assert_eq!(p95(&counts, 100), 1);
        let counts = BTreeMap::from([(1, 4)]);
        assert_eq!(p95(&counts, 100), 0);
        let counts = BTreeMap::from([(2, 50), (5, 50)]);
        assert_eq!(p95(&counts, 100), 5);
    }
}
