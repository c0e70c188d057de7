//! Two traces side by side (a slow request against a fast one of the same operation, one before
//! a deploy against one after), aligned by the path of (service, operation) from the root to
//! each span. Per path: calls, errors, time and critical-path time in each trace, and what
//! changed. Critical-path times add up to each trace's end-to-end latency, so the changes on
//! the critical path say where the difference in latency comes from.

use std::collections::HashMap;

use clew_model::{AssembledTrace, SpanId};
use serde::Serialize;

use crate::render::{cell, table};

/// One trace of the two.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct TraceSummary {
    pub trace_id: String,
    pub root_service: String,
    pub root_name: String,
    pub duration_ms: f64,
    pub spans: usize,
    pub errors: usize,
    /// Sum of every span's critical-path time: the end-to-end latency the critical path
    /// covers (less than the duration where the root is missing or several spans are tops).
    pub critical_path_ms: f64,
}

/// What one trace spends on one path.
#[derive(Debug, Clone, Serialize, PartialEq, Default)]
pub struct TracePathSide {
    pub calls: u64,
    pub errors: u64,
    /// Summed duration of the path's spans (overlapping calls count each).
    pub total_ms: f64,
    /// Summed time of the path's spans not covered by a child.
    pub self_ms: f64,
    /// Summed time of the path's spans on the trace's critical path.
    pub critical_ms: f64,
    pub max_ms: f64,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct TracePathChange {
    /// `service: operation` from the root (the roots align even when their names differ).
    pub path: Vec<String>,
    pub service: String,
    pub operation: String,
    /// 0 for the root.
    pub depth: usize,
    pub a: Option<TracePathSide>,
    pub b: Option<TracePathSide>,
    /// B minus A.
    pub calls_change: i64,
    pub errors_change: i64,
    pub total_ms_change: f64,
    pub critical_ms_change: f64,
    /// `added`, `removed`, `more calls`, `fewer calls`, `more errors`, `fewer errors`,
    /// `slower`, `faster` or `same`.
    pub change: String,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct TraceComparison {
    pub a: TraceSummary,
    pub b: TraceSummary,
    /// B's duration minus A's.
    pub duration_change_ms: f64,
    /// Every path, a parent before its children.
    pub paths: Vec<TracePathChange>,
    /// Indexes into `paths`, the largest change in critical-path time first; paths whose
    /// critical-path time did not change are left out.
    pub critical_changes: Vec<usize>,
    pub warnings: Vec<String>,
}

/// The total time on a path must change by this share of the larger side, and by 1 ms, to count
/// as slower or faster.
const TIME_CHANGE: f64 = 0.2;
const MIN_TIME_CHANGE_MS: f64 = 1.0;

/// Levels of calls kept, the top being the first: spans this many calls or more below the top
/// are left out, and said.
pub const MAX_DEPTH: usize = 64;
/// Distinct paths at most; spans on further paths are left out and said.
pub const MAX_PATHS: usize = 5_000;

fn label(service: &str, operation: &str) -> String {
    format!("{service}: {operation}")
}

/// One path of the merged tree of both traces.
struct Node {
    parent: Option<usize>,
    service: String,
    operation: String,
    depth: usize,
    /// Where it sorts among its siblings: (A's visiting order, 0) for the paths A has, (the
    /// previous sibling B visited, a sequence number) for those only B has.
    order: (i64, u64),
    sides: [Option<TracePathSide>; 2],
}

/// Both traces' paths in one tree: a path is its parent path and a (service, operation).
#[derive(Default)]
struct Tree {
    nodes: Vec<Node>,
    index: HashMap<(Option<usize>, String, String), usize>,
    sequence: u64,
    left_out: u64,
    cut: u64,
    unreached: u64,
}

impl Tree {
    /// Adds one trace's spans as `side` (0 for A, 1 for B). The root goes on `root` when given
    /// (B's root on A's, so that traces whose roots are named differently align below them).
    fn add(&mut self, trace: &AssembledTrace, side: usize, root: Option<usize>) {
        let spans = &trace.spans;
        let index: HashMap<SpanId, usize> = spans.iter().enumerate().map(|(i, s)| (s.span_id, i)).collect();
        let mut children: Vec<Vec<usize>> = vec![Vec::new(); spans.len()];
        let mut tops = Vec::new();
        for (i, span) in spans.iter().enumerate() {
            match span.parent_span_id.and_then(|p| index.get(&p)).filter(|&&p| p != i) {
                Some(&parent) => children[parent].push(i),
                None => tops.push(i),
            }
        }
        // The root first, then other tops (orphaned subtrees) in start order.
        if let Some(at) = trace.facts.root_index.and_then(|r| tops.iter().position(|&t| t == r)) {
            let root_span = tops.remove(at);
            tops.insert(0, root_span);
        }
        let mut visited = vec![false; spans.len()];
        // The last child of each node this trace visited, for where B's own paths sort.
        let mut previous: HashMap<Option<usize>, usize> = HashMap::new();
        for (n, &top) in tops.iter().enumerate() {
            let is_root = n == 0 && Some(top) == trace.facts.root_index;
            let mut stack: Vec<(usize, Option<usize>, usize)> = vec![(top, None, 0)];
            while let Some((i, parent, depth)) = stack.pop() {
                if std::mem::replace(&mut visited[i], true) {
                    continue;
                }
                let span = &spans[i];
                if depth >= MAX_DEPTH {
                    // The whole subtree is left out: marked visited, counted once each.
                    self.cut += 1;
                    stack.extend(children[i].iter().map(|&child| (child, parent, depth)));
                    continue;
                }
                let node = match (is_root && depth == 0, root) {
                    (true, Some(root)) => {
                        previous.insert(None, root);
                        Some(root)
                    }
                    _ => self.node(parent, span.service_name(), &span.name, depth, side, &mut previous),
                };
                let Some(node) = node else {
                    // No room for another path: the subtree is left out, each span counted once.
                    let mut below = vec![i];
                    while let Some(j) = below.pop() {
                        self.left_out += 1;
                        below.extend(children[j].iter().copied().filter(|&c| !std::mem::replace(&mut visited[c], true)));
                    }
                    continue;
                };
                let facts = &trace.span_facts[i];
                let ms = span.duration_nanos() as f64 / 1e6;
                let counted = self.nodes[node].sides[side].get_or_insert_with(TracePathSide::default);
                counted.calls += 1;
                counted.errors += u64::from(span.is_error());
                counted.total_ms += ms;
                counted.self_ms += facts.self_nanos as f64 / 1e6;
                counted.critical_ms += facts.critical_path_nanos as f64 / 1e6;
                counted.max_ms = counted.max_ms.max(ms);
                for &child in children[i].iter().rev() {
                    stack.push((child, Some(node), depth + 1));
                }
            }
        }
        self.unreached += visited.iter().filter(|v| !**v).count() as u64;
    }

    /// The node of (service, operation) below `parent`, made when new (None past [`MAX_PATHS`]).
    fn node(
        &mut self,
        parent: Option<usize>,
        service: &str,
        operation: &str,
        depth: usize,
        side: usize,
        previous: &mut HashMap<Option<usize>, usize>,
    ) -> Option<usize> {
        let key = (parent, service.to_string(), operation.to_string());
        let node = match self.index.get(&key) {
            Some(&node) => node,
            None if self.nodes.len() >= MAX_PATHS => return None,
            None => {
                self.sequence += 1;
                let order = match (side, previous.get(&parent)) {
                    (0, _) => (self.sequence as i64, 0),
                    (_, Some(&sibling)) => (self.nodes[sibling].order.0, self.sequence),
                    (_, None) => (-1, self.sequence),
                };
                self.nodes.push(Node { parent, service: key.1.clone(), operation: key.2.clone(), depth, order, sides: [None, None] });
                self.index.insert(key, self.nodes.len() - 1);
                self.nodes.len() - 1
            }
        };
        previous.insert(parent, node);
        Some(node)
    }

    /// Every node once, a parent before its children, siblings in their order.
    fn depth_first(&self) -> Vec<usize> {
        let mut children: Vec<Vec<usize>> = vec![Vec::new(); self.nodes.len()];
        let mut tops = Vec::new();
        for (i, node) in self.nodes.iter().enumerate() {
            match node.parent {
                Some(parent) => children[parent].push(i),
                None => tops.push(i),
            }
        }
        let by_order = |list: &mut Vec<usize>| list.sort_by_key(|&i| self.nodes[i].order);
        by_order(&mut tops);
        let mut out = Vec::with_capacity(self.nodes.len());
        let mut stack: Vec<usize> = tops.into_iter().rev().collect();
        while let Some(i) = stack.pop() {
            out.push(i);
            let mut below = std::mem::take(&mut children[i]);
            by_order(&mut below);
            stack.extend(below.into_iter().rev());
        }
        out
    }

    /// `service: operation` from the top down to `node`.
    fn path(&self, mut node: usize) -> Vec<String> {
        let mut path = vec![label(&self.nodes[node].service, &self.nodes[node].operation)];
        while let Some(parent) = self.nodes[node].parent {
            path.push(label(&self.nodes[parent].service, &self.nodes[parent].operation));
            node = parent;
        }
        path.reverse();
        path
    }
}

fn summary(trace: &AssembledTrace) -> TraceSummary {
    TraceSummary {
        trace_id: trace.spans.first().map(|s| s.trace_id.to_hex()).unwrap_or_default(),
        root_service: trace.facts.root_service.clone(),
        root_name: trace.facts.root_name.clone(),
        duration_ms: trace.facts.duration_nanos() as f64 / 1e6,
        spans: trace.spans.len(),
        errors: trace.facts.error_count as usize,
        critical_path_ms: trace.span_facts.iter().map(|f| f.critical_path_nanos as f64).sum::<f64>() / 1e6,
    }
}

fn change(a: &Option<TracePathSide>, b: &Option<TracePathSide>) -> &'static str {
    let (a, b) = match (a, b) {
        (None, Some(_)) => return "added",
        (Some(_), None) => return "removed",
        (Some(a), Some(b)) => (a, b),
        (None, None) => return "same",
    };
    let time = b.total_ms - a.total_ms;
    if b.calls > a.calls {
        "more calls"
    } else if b.calls < a.calls {
        "fewer calls"
    } else if b.errors > a.errors {
        "more errors"
    } else if b.errors < a.errors {
        "fewer errors"
    } else if time.abs() >= MIN_TIME_CHANGE_MS && time.abs() >= TIME_CHANGE * a.total_ms.max(b.total_ms) {
        if time > 0.0 { "slower" } else { "faster" }
    } else {
        "same"
    }
}

/// Compares trace B with trace A. `warnings` are what reading each trace said (clock skew
/// adjusted, fragments merged), prefixed with its side.
pub fn compare_traces(a: &AssembledTrace, b: &AssembledTrace, warnings: Vec<String>) -> TraceComparison {
    let (summary_a, summary_b) = (summary(a), summary(b));
    let mut warnings = warnings;
    let root_label = label(&summary_a.root_service, &summary_a.root_name);
    if (&summary_a.root_service, &summary_a.root_name) != (&summary_b.root_service, &summary_b.root_name) {
        warnings.push(format!(
            "the traces start at different operations (A at {root_label}, B at {}); they are aligned below their roots",
            label(&summary_b.root_service, &summary_b.root_name)
        ));
    }
    if summary_a.trace_id == summary_b.trace_id {
        warnings.push("A and B are the same trace".into());
    }
    let mut tree = Tree::default();
    tree.add(a, 0, None);
    let root =
        a.facts.root_index.and_then(|r| tree.index.get(&(None, a.spans[r].service_name().to_string(), a.spans[r].name.clone())).copied());
    tree.add(b, 1, root);
    if tree.left_out > 0 {
        warnings.push(format!(
            "the traces have more than {MAX_PATHS} distinct call paths: {} spans (of both traces) on the rest were left out",
            tree.left_out
        ));
    }
    if tree.cut > 0 {
        warnings.push(format!("{} spans (of both traces) {MAX_DEPTH} or more calls below the top were left out", tree.cut));
    }
    if tree.unreached > 0 {
        warnings.push(format!("{} spans (of both traces) are in a cycle of parents, or below one, and were left out", tree.unreached));
    }
    let get = |s: &Option<TracePathSide>, f: fn(&TracePathSide) -> f64| s.as_ref().map_or(0.0, f);
    let count = |s: &Option<TracePathSide>, f: fn(&TracePathSide) -> u64| s.as_ref().map_or(0, f) as i64;
    let mut paths = Vec::with_capacity(tree.nodes.len());
    for i in tree.depth_first() {
        let node = &tree.nodes[i];
        let [sa, sb] = node.sides.clone();
        // The root of B aligned on A's: named as B names it when only B's name differs.
        let (service, operation) = if node.parent.is_none() && i == root.unwrap_or(usize::MAX) && b.facts.root_index.is_some() {
            (summary_b.root_service.clone(), summary_b.root_name.clone())
        } else {
            (node.service.clone(), node.operation.clone())
        };
        paths.push(TracePathChange {
            depth: node.depth,
            path: tree.path(i),
            service,
            operation,
            calls_change: count(&sb, |s| s.calls) - count(&sa, |s| s.calls),
            errors_change: count(&sb, |s| s.errors) - count(&sa, |s| s.errors),
            total_ms_change: get(&sb, |s| s.total_ms) - get(&sa, |s| s.total_ms),
            critical_ms_change: get(&sb, |s| s.critical_ms) - get(&sa, |s| s.critical_ms),
            change: change(&sa, &sb).into(),
            a: sa,
            b: sb,
        });
    }
    let mut critical_changes: Vec<usize> = (0..paths.len()).filter(|&i| paths[i].critical_ms_change.abs() >= 0.0005).collect();
    critical_changes
        .sort_by(|&x, &y| paths[y].critical_ms_change.abs().total_cmp(&paths[x].critical_ms_change.abs()).then_with(|| x.cmp(&y)));
    TraceComparison {
        duration_change_ms: summary_b.duration_ms - summary_a.duration_ms,
        a: summary_a,
        b: summary_b,
        paths,
        critical_changes,
        warnings,
    }
}

fn ms(value: f64) -> String {
    format!("{value:.2}")
}

fn signed(value: f64) -> String {
    format!("{value:+.2}")
}

impl TraceComparison {
    fn headline(&self) -> String {
        let line = |name: &str, s: &TraceSummary| {
            format!(
                "{name}: {} {} ({:.2} ms, {} spans, {} errors)",
                s.trace_id,
                label(&s.root_service, &s.root_name),
                s.duration_ms,
                s.spans,
                s.errors
            )
        };
        let mut out = format!("{}\n{}\nB − A: {} ms end to end", line("A", &self.a), line("B", &self.b), signed(self.duration_change_ms));
        let top: Vec<String> = self
            .critical_changes
            .iter()
            .take(3)
            .map(|&i| {
                let p = &self.paths[i];
                format!("{} {} ms ({})", label(&p.service, &p.operation), signed(p.critical_ms_change), p.change)
            })
            .collect();
        if !top.is_empty() {
            out.push_str(&format!("; on the critical path: {}", top.join(", ")));
        }
        out
    }

    /// The paths that changed (or moved time on the critical path), indented by depth.
    fn rows(&self, indent: &str) -> Vec<[String; 6]> {
        let side = |s: &Option<TracePathSide>, f: fn(&TracePathSide) -> String| s.as_ref().map_or("—".to_string(), f);
        self.paths
            .iter()
            .filter(|p| p.change != "same" || p.critical_ms_change.abs() >= MIN_TIME_CHANGE_MS)
            .map(|p| {
                [
                    format!("{}{}", indent.repeat(p.depth), label(&p.service, &p.operation)),
                    p.change.clone(),
                    format!("{} → {}", side(&p.a, |s| s.calls.to_string()), side(&p.b, |s| s.calls.to_string())),
                    format!("{} → {}", side(&p.a, |s| ms(s.total_ms)), side(&p.b, |s| ms(s.total_ms))),
                    signed(p.total_ms_change),
                    signed(p.critical_ms_change),
                ]
            })
            .collect()
    }

    pub fn to_markdown(&self) -> String {
        let mut out = format!("## Trace comparison\n\n{}\n\n", self.headline().replace('\n', "  \n"));
        out.push_str(
            "| Path from the root | Change | Calls A → B | Time ms A → B | Δ time ms | Δ critical-path ms |\n|---|---|---|---|---|---|\n",
        );
        let rows = self.rows("· ");
        for row in &rows {
            out.push_str(&format!("| {} |\n", row.iter().map(|c| cell(c)).collect::<Vec<_>>().join(" | ")));
        }
        if rows.is_empty() {
            out.push_str("\nThe two traces have the same shape and timing.\n");
        }
        out
    }

    pub fn to_table(&self) -> String {
        let mut rows = vec![[
            "PATH FROM THE ROOT".to_string(),
            "CHANGE".into(),
            "CALLS A→B".into(),
            "TIME MS A→B".into(),
            "Δ TIME MS".into(),
            "Δ CRITICAL MS".into(),
        ]];
        let changed = self.rows("  ");
        let same = changed.is_empty();
        rows.extend(changed);
        let mut out = format!("{}\n{}", self.headline(), table(&rows));
        if same {
            out.push_str("The two traces have the same shape and timing.\n");
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use clew_model::{Attribute, Resource, Span, SpanId, StatusCode, TraceId, Value, assemble};

    use super::*;

    const MS: u64 = 1_000_000;

    fn span(trace: u8, id: u8, parent: Option<u8>, service: &str, name: &str, start_ms: u64, end_ms: u64) -> Span {
        Span {
            trace_id: TraceId([trace; 16]),
            span_id: SpanId([id; 8]),
            parent_span_id: parent.map(|p| SpanId([p; 8])),
            name: name.into(),
            start_time_unix_nano: start_ms * MS,
            end_time_unix_nano: end_ms * MS,
            resource: Arc::new(Resource {
                attributes: vec![Attribute::new("service.name", Value::Str(service.into()))],
                ..Resource::default()
            }),
            ..Span::default()
        }
    }

    /// A: the checkout prices once and queries the database for 40 ms.
    fn before() -> AssembledTrace {
        assemble(vec![
            span(1, 1, None, "frontend", "GET /checkout", 0, 100),
            span(1, 2, Some(1), "checkout", "POST /order", 10, 90),
            span(1, 3, Some(2), "pricing", "GET /price", 20, 30),
            span(1, 4, Some(2), "db", "SELECT", 40, 80),
        ])
    }

    /// B: prices three times in a row (N+1), reads a cache, and the database takes 70 ms.
    fn after() -> AssembledTrace {
        assemble(vec![
            span(2, 1, None, "frontend", "GET /checkout", 0, 150),
            span(2, 2, Some(1), "checkout", "POST /order", 10, 140),
            span(2, 3, Some(2), "pricing", "GET /price", 20, 30),
            span(2, 5, Some(2), "pricing", "GET /price", 30, 40),
            span(2, 6, Some(2), "pricing", "GET /price", 40, 50),
            span(2, 7, Some(2), "cache", "GET", 52, 56),
            span(2, 4, Some(2), "db", "SELECT", 60, 130),
        ])
    }

    fn find<'a>(report: &'a TraceComparison, service: &str) -> &'a TracePathChange {
        report.paths.iter().find(|p| p.service == service).unwrap()
    }

    #[test]
    fn the_critical_path_says_where_the_extra_latency_comes_from() {
        let report = compare_traces(&before(), &after(), vec![]);
        assert_eq!(report.duration_change_ms, 50.0);
        assert_eq!((report.a.critical_path_ms, report.b.critical_path_ms), (100.0, 150.0));
        // The critical-path changes add up to the change end to end.
        let explained: f64 = report.paths.iter().map(|p| p.critical_ms_change).sum();
        assert!((explained - 50.0).abs() < 1e-9, "{explained}");

        let pricing = find(&report, "pricing");
        assert_eq!(pricing.change, "more calls");
        assert_eq!((pricing.a.as_ref().unwrap().calls, pricing.b.as_ref().unwrap().calls), (1, 3));
        assert_eq!(pricing.calls_change, 2);
        assert_eq!(pricing.critical_ms_change, 20.0);
        let db = find(&report, "db");
        assert_eq!(db.change, "slower");
        assert_eq!(db.total_ms_change, 30.0);
        let cache = find(&report, "cache");
        assert_eq!(cache.change, "added");
        assert!(cache.a.is_none());
        assert_eq!(cache.path, vec!["frontend: GET /checkout", "checkout: POST /order", "cache: GET"]);
        let checkout = find(&report, "checkout");
        assert_eq!(checkout.change, "slower");
        assert_eq!(checkout.critical_ms_change, -4.0, "its own gaps shrank from 30 to 26 ms");

        // The largest changes on the critical path first: the database, then the N+1 loop.
        let ranked: Vec<&str> = report.critical_changes.iter().map(|&i| report.paths[i].service.as_str()).collect();
        assert_eq!(&ranked[..2], ["db", "pricing"]);
        // A parent before its children; B's new call after the sibling B made before it.
        let order: Vec<&str> = report.paths.iter().map(|p| p.service.as_str()).collect();
        assert_eq!(order, ["frontend", "checkout", "pricing", "cache", "db"]);
        assert_eq!(report.paths.iter().map(|p| p.depth).collect::<Vec<_>>(), [0, 1, 2, 2, 2]);

        let text = report.to_table();
        assert!(text.contains("on the critical path: db: SELECT +30.00 ms (slower), pricing: GET /price +20.00 ms (more calls)"), "{text}");
        assert!(text.contains("    pricing: GET /price"), "indented by depth: {text}");
        assert!(report.to_markdown().contains("| · · pricing: GET /price | more calls | 1 → 3 |"));
    }

    #[test]
    fn reversed_the_changes_are_mirrored() {
        let report = compare_traces(&after(), &before(), vec![]);
        assert_eq!(find(&report, "pricing").change, "fewer calls");
        assert_eq!(find(&report, "db").change, "faster");
        assert_eq!(find(&report, "cache").change, "removed");
        assert_eq!(report.duration_change_ms, -50.0);
    }

    #[test]
    fn traces_with_differently_named_roots_align_below_them_and_say_so() {
        let mut b = before().spans;
        b[0].name = "GET /checkout/v2".into();
        for s in &mut b {
            s.trace_id = TraceId([3; 16]);
        }
        b[3].status_code = StatusCode::Error;
        let report = compare_traces(&before(), &assemble(b), vec![]);
        assert!(report.warnings.iter().any(|w| w.contains("start at different operations")), "{:?}", report.warnings);
        assert_eq!(report.paths.len(), 4);
        assert_eq!(find(&report, "frontend").change, "same");
        assert_eq!(find(&report, "frontend").operation, "GET /checkout/v2");
        assert_eq!(find(&report, "db").change, "more errors");
        assert_eq!(find(&report, "pricing").change, "same");
        assert!(report.critical_changes.is_empty());
        let same = compare_traces(&before(), &before(), vec![]);
        assert!(same.to_table().contains("the same shape and timing"));
        assert!(same.warnings.iter().any(|w| w.contains("same trace")));
    }

    #[test]
    fn deep_wide_and_ambiguous_traces_are_bounded_and_said() {
        // A chain 100 calls deep: the spans below MAX_DEPTH are left out, and said.
        let chain: Vec<Span> = (0..100u64)
            .map(|i| span(4, 0, None, "svc", &format!("op{i}"), i, 200 - i))
            .enumerate()
            .map(|(i, mut s)| {
                s.span_id = SpanId((i as u64 + 1).to_be_bytes());
                s.parent_span_id = (i > 0).then(|| SpanId((i as u64).to_be_bytes()));
                s
            })
            .collect();
        let report = compare_traces(&assemble(chain.clone()), &assemble(chain), vec![]);
        assert_eq!(report.paths.len(), MAX_DEPTH);
        assert!(
            report
                .warnings
                .iter()
                .any(|w| w.starts_with(&format!("{} spans (of both traces) {MAX_DEPTH} or more calls below", 2 * (100 - MAX_DEPTH)))),
            "{:?}",
            report.warnings
        );
        // Six thousand distinct calls under one root: at most MAX_PATHS paths.
        let mut wide = vec![span(5, 0, None, "svc", "root", 0, 10_000)];
        wide[0].span_id = SpanId(u64::MAX.to_be_bytes());
        for i in 0..6_000u64 {
            let mut s = span(5, 0, None, "db", &format!("SELECT {i}"), 1, 2);
            s.span_id = SpanId((i + 1).to_be_bytes());
            s.parent_span_id = Some(SpanId(u64::MAX.to_be_bytes()));
            wide.push(s);
        }
        let wide = assemble(wide);
        let report = compare_traces(&wide, &wide, vec![]);
        assert_eq!(report.paths.len(), MAX_PATHS);
        assert!(
            report.warnings.iter().any(|w| w.contains("2002 spans (of both traces) on the rest were left out")),
            "{:?}",
            report.warnings
        );
        // Labels that read alike are still different paths.
        let odd = assemble(vec![
            span(6, 1, None, "gateway", "GET /", 0, 10),
            span(6, 2, Some(1), "a: b", "c", 1, 2),
            span(6, 3, Some(1), "a", "b: c", 3, 4),
        ]);
        assert_eq!(compare_traces(&odd, &odd, vec![]).paths.len(), 3);
    }

    #[test]
    fn an_orphaned_subtree_only_b_has_comes_after_the_root() {
        let mut b = before().spans;
        let mut orphan = span(1, 9, Some(42), "mailer", "send", 5, 8);
        orphan.trace_id = b[0].trace_id;
        b.push(orphan);
        let report = compare_traces(&before(), &assemble(b), vec![]);
        let order: Vec<&str> = report.paths.iter().map(|p| p.service.as_str()).collect();
        assert_eq!(order, ["frontend", "checkout", "pricing", "db", "mailer"]);
        assert_eq!(report.paths[4].change, "added");
        assert_eq!(report.paths[4].depth, 0);
    }
}
