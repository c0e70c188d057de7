//! Groups of requests to compare (before/after a deploy, version A against B, one region
//! against another): the spans a TraceQL query matches, each with the subtree of calls below
//! it, aggregated by path. A path is the chain of (service, operation) from the matched span
//! down, so two groups align whatever their traces' roots are, and a loop that calls one
//! dependency five times instead of once shows as five calls per matched span on one path.

use std::collections::HashMap;

use clew_model::{LatencyHistogram, SpanId, StatusCode};
use serde::Serialize;

use crate::traceql::Query;
use crate::{QueryEngine, QueryError};

/// Paths deeper than this below a matched span are cut.
pub const MAX_DEPTH: usize = 32;
/// Distinct paths per group at most; calls on further paths are left out and said.
pub const MAX_PATHS: usize = 5_000;

/// One path below the matched spans of a group.
#[derive(Debug, Clone, Default)]
pub struct GroupNode {
    /// (service, operation) from the matched span (first) down to this node.
    pub path: Vec<(String, String)>,
    pub calls: u64,
    pub errors: u64,
    /// Matched spans below which the path occurs at least once.
    pub reached: u64,
    pub latency: LatencyHistogram,
    pub total_nanos: u64,
}

/// A group: its matched spans and the calls below them.
#[derive(Debug, Clone, Default)]
pub struct GroupTree {
    pub matched: u64,
    pub traces: usize,
    /// More traces matched than were read.
    pub partial: bool,
    /// Indexed by path; the matched spans themselves are the path of length one (their own
    /// (service, operation) may differ between groups: see [`GroupTree::nodes`]).
    pub nodes: Vec<GroupNode>,
    pub paths_left_out: bool,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct GroupSummary {
    pub query: String,
    pub matched: u64,
    pub traces: usize,
    pub partial: bool,
}

impl QueryEngine {
    /// The spans `query` matches among those started within [start, end) (newest traces first,
    /// at most [`crate::traceql::MAX_TRACES`]), each with the calls below it by path.
    pub async fn group_tree(&self, query: &Query, start_unix_nano: u64, end_unix_nano: u64) -> Result<GroupTree, QueryError> {
        if query.metrics.is_some() {
            return Err(QueryError::Invalid("a group is a spanset query, without a metrics function".into()));
        }
        let mut tree = GroupTree::default();
        let mut index: HashMap<Vec<(String, String)>, usize> = HashMap::new();
        let (_, partial) = self
            .evaluate_candidates(query, start_unix_nano, end_unix_nano, |view, _, matched| {
                let spans = &view.trace.spans;
                tree.traces += 1;
                let mut children: HashMap<SpanId, Vec<usize>> = HashMap::new();
                for (i, span) in spans.iter().enumerate() {
                    if let Some(parent) = span.parent_span_id {
                        children.entry(parent).or_default().push(i);
                    }
                }
                for &top in matched {
                    tree.matched += 1;
                    let mut seen_paths: Vec<usize> = Vec::new();
                    // Depth-first below the matched span, carrying the path.
                    let mut stack = vec![(top, vec![(spans[top].service_name().to_string(), spans[top].name.clone())])];
                    let mut visited = 0usize;
                    while let Some((i, path)) = stack.pop() {
                        visited += 1;
                        if visited > spans.len() {
                            break; // a parent cycle
                        }
                        let span = &spans[i];
                        let slot = match index.get(&path) {
                            Some(&slot) => Some(slot),
                            None if tree.nodes.len() < MAX_PATHS => {
                                tree.nodes.push(GroupNode { path: path.clone(), ..Default::default() });
                                index.insert(path.clone(), tree.nodes.len() - 1);
                                Some(tree.nodes.len() - 1)
                            }
                            None => {
                                tree.paths_left_out = true;
                                None
                            }
                        };
                        if let Some(slot) = slot {
                            let node = &mut tree.nodes[slot];
                            node.calls += 1;
                            node.errors += u64::from(span.status_code == StatusCode::Error);
                            node.latency.record(span.duration_nanos() as i64);
                            node.total_nanos += span.duration_nanos();
                            seen_paths.push(slot);
                        }
                        if path.len() >= MAX_DEPTH {
                            continue;
                        }
                        for &child in children.get(&span.span_id).map(Vec::as_slice).unwrap_or(&[]) {
                            let mut next = path.clone();
                            next.push((spans[child].service_name().to_string(), spans[child].name.clone()));
                            stack.push((child, next));
                        }
                    }
                    seen_paths.sort_unstable();
                    seen_paths.dedup();
                    for slot in seen_paths {
                        tree.nodes[slot].reached += 1;
                    }
                }
            })
            .await?;
        tree.partial = partial;
        Ok(tree)
    }
}
