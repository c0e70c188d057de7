//! Group comparison: two groups of matched spans (each a TraceQL query: version A against B,
//! before and after a deploy, one region against another), aligned by the path of calls below
//! the matched span. Per path: calls per matched span, latency and errors in each group, and
//! the change in time spent there per matched span, which ranks what explains a difference
//! (an N+1 loop shows as more calls on one path; a slow dependency as more time per call).

use std::collections::BTreeMap;

use clew_query::{GroupNode, GroupSummary, GroupTree};
use serde::Serialize;

use crate::render::{cell, table};

/// One side of a path.
#[derive(Debug, Clone, Serialize, PartialEq, Default)]
pub struct PathSide {
    /// Calls per matched span of the group.
    pub calls_per_match: f64,
    /// Share of the matched spans below which the path occurs.
    pub reach: f64,
    pub mean_ms: f64,
    pub p50_ms: f64,
    pub p95_ms: f64,
    pub error_share: f64,
    /// Time spent on this path per matched span (calls × mean latency, not exclusive).
    pub ms_per_match: f64,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct PathChange {
    /// `service: operation` from below the matched span down; empty for the matched spans.
    pub path: Vec<String>,
    pub service: String,
    pub operation: String,
    pub depth: usize,
    pub a: Option<PathSide>,
    pub b: Option<PathSide>,
    /// B's calls per matched span divided by A's (absent where either has none).
    pub calls_ratio: Option<f64>,
    /// B minus A: time on this path per matched span (ms).
    pub ms_per_match_change: f64,
    /// B minus A: mean latency of a call (ms), where both have calls.
    pub latency_change_ms: Option<f64>,
    /// `added`, `removed`, `more calls`, `fewer calls`, `slower`, `faster` or `same`.
    pub change: String,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct GroupComparison {
    pub a: GroupSummary,
    pub b: GroupSummary,
    pub start_unix_nano: u64,
    pub end_unix_nano: u64,
    /// The matched spans themselves: latency in each group.
    pub matched_a: Option<PathSide>,
    pub matched_b: Option<PathSide>,
    /// Paths below the matched spans, the largest change in time per matched span first.
    pub changes: Vec<PathChange>,
    pub warnings: Vec<String>,
}

fn side(node: &GroupNode, matched: u64) -> PathSide {
    let matched = matched.max(1) as f64;
    let mean_ms = node.total_nanos as f64 / node.calls.max(1) as f64 / 1e6;
    PathSide {
        calls_per_match: node.calls as f64 / matched,
        reach: node.reached as f64 / matched,
        mean_ms,
        p50_ms: node.latency.quantile(0.5) / 1e6,
        p95_ms: node.latency.quantile(0.95) / 1e6,
        error_share: node.errors as f64 / node.calls.max(1) as f64,
        ms_per_match: node.calls as f64 * mean_ms / matched,
    }
}

/// Calls per matched span must change by this factor, or latency by this share (and 1 ms), to
/// count as a change.
const CALLS_CHANGE: f64 = 1.2;
const LATENCY_CHANGE: f64 = 0.2;

pub fn compare_groups(a: (String, GroupTree), b: (String, GroupTree), window: (u64, u64)) -> GroupComparison {
    let (query_a, tree_a) = a;
    let (query_b, tree_b) = b;
    let mut warnings = Vec::new();
    for (name, query, tree) in [("A", &query_a, &tree_a), ("B", &query_b, &tree_b)] {
        if tree.matched == 0 {
            warnings.push(format!("group {name} ({query}) matched no span in the window"));
        }
        if tree.partial {
            warnings.push(format!("group {name} matched more traces than are read: the newest {} were compared", tree.traces));
        }
        if tree.paths_left_out {
            warnings
                .push(format!("group {name} has more than {} distinct call paths: the rest were left out", clew_query::MAX_GROUP_PATHS));
        }
    }
    // Aligned below the matched span: its own (service, operation) may differ between groups.
    let mut paths: BTreeMap<Vec<String>, (Option<&GroupNode>, Option<&GroupNode>)> = BTreeMap::new();
    let key = |node: &GroupNode| node.path[1..].iter().map(|(s, o)| format!("{s}: {o}")).collect::<Vec<_>>();
    for node in &tree_a.nodes {
        paths.entry(key(node)).or_default().0 = Some(node);
    }
    for node in &tree_b.nodes {
        paths.entry(key(node)).or_default().1 = Some(node);
    }
    let (mut matched_a, mut matched_b) = (None, None);
    let mut changes = Vec::new();
    for (path, (node_a, node_b)) in paths {
        let sa = node_a.map(|n| side(n, tree_a.matched));
        let sb = node_b.map(|n| side(n, tree_b.matched));
        if path.is_empty() {
            (matched_a, matched_b) = (sa, sb);
            continue;
        }
        let (service, operation) = node_a.or(node_b).and_then(|n| n.path.last().cloned()).unwrap_or_default();
        let calls = |s: &Option<PathSide>| s.as_ref().map_or(0.0, |s| s.calls_per_match);
        let time = |s: &Option<PathSide>| s.as_ref().map_or(0.0, |s| s.ms_per_match);
        let calls_ratio = (calls(&sa) > 0.0 && calls(&sb) > 0.0).then(|| calls(&sb) / calls(&sa));
        let latency_change_ms = match (&sa, &sb) {
            (Some(x), Some(y)) => Some(y.mean_ms - x.mean_ms),
            _ => None,
        };
        let change = match (&sa, &sb, calls_ratio, latency_change_ms) {
            (None, Some(_), ..) => "added",
            (Some(_), None, ..) => "removed",
            (_, _, Some(r), _) if r >= CALLS_CHANGE => "more calls",
            (_, _, Some(r), _) if r <= 1.0 / CALLS_CHANGE => "fewer calls",
            (Some(x), Some(_), _, Some(d)) if d.abs() >= 1.0 && d.abs() >= LATENCY_CHANGE * x.mean_ms => {
                if d > 0.0 {
                    "slower"
                } else {
                    "faster"
                }
            }
            _ => "same",
        };
        changes.push(PathChange {
            depth: path.len(),
            path,
            service,
            operation,
            ms_per_match_change: time(&sb) - time(&sa),
            calls_ratio,
            latency_change_ms,
            change: change.into(),
            a: sa,
            b: sb,
        });
    }
    changes.sort_by(|x, y| y.ms_per_match_change.abs().total_cmp(&x.ms_per_match_change.abs()).then_with(|| x.path.cmp(&y.path)));
    let summary =
        |query: String, tree: &GroupTree| GroupSummary { query, matched: tree.matched, traces: tree.traces, partial: tree.partial };
    GroupComparison {
        a: summary(query_a, &tree_a),
        b: summary(query_b, &tree_b),
        start_unix_nano: window.0,
        end_unix_nano: window.1,
        matched_a,
        matched_b,
        changes,
        warnings,
    }
}

impl GroupComparison {
    fn rows(&self) -> Vec<[String; 6]> {
        let ms = |s: &Option<PathSide>, f: fn(&PathSide) -> f64| s.as_ref().map_or("—".to_string(), |s| format!("{:.2}", f(s)));
        self.changes
            .iter()
            .filter(|c| c.change != "same")
            .take(25)
            .map(|c| {
                [
                    c.path.join(" › "),
                    c.change.clone(),
                    format!("{} → {}", ms(&c.a, |s| s.calls_per_match), ms(&c.b, |s| s.calls_per_match)),
                    format!("{} → {}", ms(&c.a, |s| s.mean_ms), ms(&c.b, |s| s.mean_ms)),
                    format!("{:+.2}", c.ms_per_match_change),
                    format!("{} → {}", ms(&c.a, |s| 100.0 * s.error_share), ms(&c.b, |s| 100.0 * s.error_share)),
                ]
            })
            .collect()
    }

    fn headline(&self) -> String {
        let latency =
            |s: &Option<PathSide>| s.as_ref().map_or("—".to_string(), |s| format!("p50 {:.1} ms, p95 {:.1} ms", s.p50_ms, s.p95_ms));
        format!(
            "A: {} ({} spans in {} traces; {})\nB: {} ({} spans in {} traces; {})",
            self.a.query,
            self.a.matched,
            self.a.traces,
            latency(&self.matched_a),
            self.b.query,
            self.b.matched,
            self.b.traces,
            latency(&self.matched_b)
        )
    }

    pub fn to_markdown(&self) -> String {
        let mut out = format!("## Group comparison\n\n{}\n\n", self.headline().replace('\n', "  \n"));
        out.push_str("| Path below the matched span | Change | Calls per match A → B | Mean ms A → B | Δ ms per match | Error % A → B |\n|---|---|---|---|---|---|\n");
        for row in self.rows() {
            out.push_str(&format!("| {} |\n", row.iter().map(|c| cell(c)).collect::<Vec<_>>().join(" | ")));
        }
        out
    }

    pub fn to_table(&self) -> String {
        let mut rows = vec![[
            "PATH".to_string(),
            "CHANGE".into(),
            "CALLS/MATCH A→B".into(),
            "MEAN MS A→B".into(),
            "Δ MS/MATCH".into(),
            "ERROR % A→B".into(),
        ]];
        rows.extend(self.rows());
        format!("{}\n{}", self.headline(), table(&rows))
    }
}

#[cfg(test)]
mod tests {
    use clew_model::LatencyHistogram;

    use super::*;

    fn node(path: &[(&str, &str)], calls: u64, reached: u64, each_ms: u64) -> GroupNode {
        let mut latency = LatencyHistogram::default();
        for _ in 0..calls {
            latency.record((each_ms * 1_000_000) as i64);
        }
        GroupNode {
            path: path.iter().map(|(s, o)| (s.to_string(), o.to_string())).collect(),
            calls,
            errors: 0,
            reached,
            latency,
            total_nanos: calls * each_ms * 1_000_000,
        }
    }

    #[test]
    fn an_n_plus_one_loop_ranks_first_as_more_calls() {
        let root_a = ("catalog", "GET /product");
        let root_b = ("catalog", "GET /product v2");
        let a = GroupTree {
            matched: 100,
            traces: 100,
            nodes: vec![
                node(&[root_a], 100, 100, 20),
                node(&[root_a, ("pricing", "GET /price")], 100, 100, 3),
                node(&[root_a, ("db", "SELECT")], 100, 100, 5),
            ],
            ..Default::default()
        };
        let b = GroupTree {
            matched: 50,
            traces: 50,
            nodes: vec![
                node(&[root_b], 50, 50, 32),
                node(&[root_b, ("pricing", "GET /price")], 250, 50, 3),
                node(&[root_b, ("db", "SELECT")], 50, 50, 5),
                node(&[root_b, ("cache", "GET")], 10, 10, 1),
            ],
            ..Default::default()
        };
        let report = compare_groups(("a".into(), a), ("b".into(), b), (0, 1));
        // Matched spans align although their names differ.
        assert_eq!(report.matched_a.as_ref().unwrap().mean_ms, 20.0);
        assert_eq!(report.matched_b.as_ref().unwrap().mean_ms, 32.0);
        let first = &report.changes[0];
        assert_eq!(first.path, vec!["pricing: GET /price".to_string()]);
        assert_eq!(first.change, "more calls");
        assert!((first.calls_ratio.unwrap() - 5.0).abs() < 1e-9);
        assert!((first.ms_per_match_change - 12.0).abs() < 1e-9, "3 ms × (5 − 1) calls");
        let db = report.changes.iter().find(|c| c.service == "db").unwrap();
        assert_eq!(db.change, "same");
        assert_eq!(db.ms_per_match_change, 0.0);
        let cache = report.changes.iter().find(|c| c.service == "cache").unwrap();
        assert_eq!(cache.change, "added");
        assert!((cache.b.as_ref().unwrap().reach - 0.2).abs() < 1e-9);
        assert!(report.to_table().contains("more calls"));
    }

    #[test]
    fn an_empty_group_is_said() {
        let report = compare_groups(("{ a }".into(), GroupTree::default()), ("{ b }".into(), GroupTree::default()), (0, 1));
        assert_eq!(report.warnings.len(), 2);
        assert!(report.changes.is_empty());
    }
}
