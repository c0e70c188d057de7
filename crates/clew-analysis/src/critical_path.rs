//! The critical path across traces (CRISP): per entry operation, the calling-context tree of
//! (service, operation) with each context's time on the critical path, as a top-down flame
//! graph; the operations ranked by their critical-path time (bottom-up, over one entry operation
//! or all of them); what would be saved if one of them were faster; and what got slower on the
//! critical path between two windows.
//!
//! Each span's critical-path time is computed when its trace is assembled (the time of the span
//! itself on the path, its critical children excluded) and summed per calling context into the
//! rollups, so these reports never read spans.

use std::collections::{BTreeMap, HashMap};

use clew_query::{OVERFLOW_PATH, PathRow, REQUEST_PATH};
use serde::Serialize;

use crate::render::{cell, millis as ms, table};

/// One calling context: a (service, operation, kind) reached along one chain of calls.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct CriticalPathNode {
    /// The context's hash, in hex; the request itself is `0`.
    pub id: String,
    pub parent: Option<String>,
    pub service: String,
    pub operation: String,
    pub kind: String,
    /// 0 for the request, 1 for root spans.
    pub depth: u32,
    /// Requests in which it runs.
    pub traces: u64,
    /// Share of requests in which it runs.
    pub reach: f64,
    pub calls_per_request: f64,
    /// Its own time on the critical path (its critical children excluded), mean per request.
    pub self_per_request_nanos: f64,
    /// Its own and its callees' time on the critical path, mean per request: the flame graph's width.
    pub total_per_request_nanos: f64,
    /// `total_per_request_nanos` as a share of the mean end-to-end latency.
    pub share: f64,
    /// `self_per_request_nanos` as a share of the mean end-to-end latency.
    pub self_share: f64,
    /// Percentiles of its own critical-path time per request, over the requests in which it runs.
    pub self_p50_nanos: f64,
    pub self_p95_nanos: f64,
    pub self_p99_nanos: f64,
    /// Latency of its spans.
    pub latency_p50_nanos: f64,
    pub latency_p95_nanos: f64,
    pub error_share: f64,
}

/// An operation ranked by its time on the critical path.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Bottleneck {
    pub service: String,
    pub operation: String,
    pub kind: String,
    /// Its critical-path time summed over the window's requests.
    pub critical_path_nanos: i64,
    /// Mean per request (of the entry operation; of all entry operations in the bottom-up report).
    pub per_request_nanos: f64,
    /// Share of the summed end-to-end latency of those requests.
    pub share: f64,
    /// p95 of its critical-path time per request, over the requests in which it runs.
    pub p95_nanos: f64,
    /// Entry operations whose critical path it is on, busiest contribution first.
    pub entry_operations: Vec<String>,
    /// End-to-end time saved per request if it were `faster_percent` faster: an upper bound,
    /// reached when no parallel branch takes over the critical path.
    pub saved_per_request_nanos: f64,
    /// The same as a share of the end-to-end latency.
    pub saved_share: f64,
}

/// An operation whose critical-path time per request changed between two windows.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Change {
    pub service: String,
    pub operation: String,
    pub kind: String,
    pub before_per_request_nanos: f64,
    pub after_per_request_nanos: f64,
    pub change_nanos: f64,
    pub before_p95_nanos: f64,
    pub after_p95_nanos: f64,
    pub before_calls_per_request: f64,
    pub after_calls_per_request: f64,
}

#[derive(Debug, Clone, Serialize, PartialEq, Default)]
pub struct Latency {
    pub requests: u64,
    pub errors: u64,
    pub mean_nanos: f64,
    pub p50_nanos: f64,
    pub p95_nanos: f64,
    pub p99_nanos: f64,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Baseline {
    pub start_unix_nano: u64,
    pub end_unix_nano: u64,
    pub latency: Latency,
    /// Every operation whose critical-path time per request changed, the largest increase first.
    pub changes: Vec<Change>,
}

/// The critical path of one entry operation across its requests.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct CriticalPathReport {
    pub service: String,
    pub operation: String,
    pub start_unix_nano: u64,
    pub end_unix_nano: u64,
    pub latency: Latency,
    pub faster_percent: f64,
    /// The calling-context tree, depth first, the widest child first; the request first.
    pub nodes: Vec<CriticalPathNode>,
    /// Its operations ranked by critical-path time.
    pub bottlenecks: Vec<Bottleneck>,
    pub baseline: Option<Baseline>,
}

/// The operations ranked by critical-path time over every entry operation.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct BottleneckReport {
    pub start_unix_nano: u64,
    pub end_unix_nano: u64,
    pub requests: u64,
    pub faster_percent: f64,
    pub bottlenecks: Vec<Bottleneck>,
}

fn is_request(row: &PathRow) -> bool {
    row.path == REQUEST_PATH
}

fn latency_of<'a>(rows: impl Iterator<Item = &'a PathRow>) -> Latency {
    let mut histogram = clew_model::LatencyHistogram::default();
    let (mut requests, mut errors, mut total) = (0u64, 0u64, 0i64);
    for row in rows.filter(|r| is_request(r)) {
        requests += row.traces;
        errors += row.errors;
        total = total.saturating_add(row.duration_nanos);
        histogram.merge(&row.latency);
    }
    Latency {
        requests,
        errors,
        mean_nanos: if requests > 0 { total as f64 / requests as f64 } else { 0.0 },
        p50_nanos: histogram.quantile(0.5),
        p95_nanos: histogram.quantile(0.95),
        p99_nanos: histogram.quantile(0.99),
    }
}

/// The rows of one entry operation.
fn of_entry<'a>(rows: &'a [PathRow], service: &'a str, operation: &'a str) -> impl Iterator<Item = &'a PathRow> + 'a {
    rows.iter().filter(move |r| &*r.entry_service == service && &*r.entry_operation == operation)
}

/// Per (service, operation, kind): summed critical-path time, spans, the merged per-request
/// histogram, and critical-path time per entry operation.
#[derive(Default)]
struct OperationTotals {
    critical: i64,
    spans: u64,
    histogram: clew_model::LatencyHistogram,
    per_entry: BTreeMap<String, i64>,
}

fn operation_totals<'a>(rows: impl Iterator<Item = &'a PathRow>) -> BTreeMap<(String, String, String), OperationTotals> {
    let mut out: BTreeMap<(String, String, String), OperationTotals> = BTreeMap::new();
    for row in rows.filter(|r| !is_request(r)) {
        let totals = out.entry((row.service.to_string(), row.operation.to_string(), row.kind.to_string())).or_default();
        totals.critical = totals.critical.saturating_add(row.critical_path_nanos);
        totals.spans += row.spans;
        totals.histogram.merge(&row.per_trace_critical);
        *totals.per_entry.entry(format!("{} {}", row.entry_service, row.entry_operation)).or_default() += row.critical_path_nanos;
    }
    out
}

fn ranked(totals: BTreeMap<(String, String, String), OperationTotals>, latency: &Latency, faster_percent: f64) -> Vec<Bottleneck> {
    let requests = latency.requests.max(1) as f64;
    let end_to_end = latency.mean_nanos * requests;
    let mut out: Vec<Bottleneck> = totals
        .into_iter()
        .filter(|(_, t)| t.critical > 0)
        .map(|((service, operation, kind), t)| {
            let mut entries: Vec<(String, i64)> = t.per_entry.into_iter().filter(|(_, c)| *c > 0).collect();
            entries.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
            let per_request = t.critical as f64 / requests;
            let saved = per_request * faster_percent / 100.0;
            Bottleneck {
                service,
                operation,
                kind,
                critical_path_nanos: t.critical,
                per_request_nanos: per_request,
                share: if end_to_end > 0.0 { t.critical as f64 / end_to_end } else { 0.0 },
                p95_nanos: t.histogram.quantile(0.95),
                entry_operations: entries.into_iter().map(|(e, _)| e).collect(),
                saved_per_request_nanos: saved,
                saved_share: if latency.mean_nanos > 0.0 { saved / latency.mean_nanos } else { 0.0 },
            }
        })
        .collect();
    out.sort_by(|a, b| {
        b.critical_path_nanos.cmp(&a.critical_path_nanos).then_with(|| (&a.service, &a.operation).cmp(&(&b.service, &b.operation)))
    });
    out
}

/// The critical path of the entry operation `service` `operation` from the merged calling-context
/// rows of the window (`rows` may hold other entry operations too), and optionally its changes
/// against a baseline window.
pub fn critical_path(
    service: &str,
    operation: &str,
    window: (u64, u64),
    rows: &[PathRow],
    faster_percent: f64,
    baseline: Option<((u64, u64), &[PathRow])>,
) -> CriticalPathReport {
    let latency = latency_of(of_entry(rows, service, operation));
    let requests = latency.requests.max(1) as f64;
    let mean = latency.mean_nanos;
    let share = |nanos: f64| if mean > 0.0 { nanos / mean } else { 0.0 };
    let contexts: Vec<&PathRow> = of_entry(rows, service, operation).collect();
    // Inclusive time: each context's own time plus its callees', deepest first.
    let mut total: HashMap<u64, f64> = contexts.iter().map(|r| (r.path, r.critical_path_nanos as f64)).collect();
    let mut by_depth: Vec<&PathRow> = contexts.iter().copied().filter(|r| !is_request(r)).collect();
    by_depth.sort_by(|a, b| b.depth.cmp(&a.depth));
    for row in &by_depth {
        let own = total[&row.path];
        // The request's time is the trace's duration, its root spans' paths included.
        if row.parent != REQUEST_PATH
            && row.parent != row.path
            && let Some(parent) = total.get_mut(&row.parent)
        {
            *parent += own;
        }
    }
    // The request's own time is what no span accounts for: the trace's duration beyond its root
    // spans' critical paths.
    let children_of_request: f64 = contexts.iter().filter(|r| !is_request(r) && r.parent == REQUEST_PATH).map(|r| total[&r.path]).sum();
    let request_total = total.get(&REQUEST_PATH).copied().unwrap_or(0.0);
    let mut children: HashMap<u64, Vec<&PathRow>> = HashMap::new();
    for row in contexts.iter().filter(|r| !is_request(r)) {
        children.entry(row.parent).or_default().push(row);
    }
    for list in children.values_mut() {
        list.sort_by(|a, b| {
            total[&b.path].total_cmp(&total[&a.path]).then_with(|| (&a.service, &a.operation).cmp(&(&b.service, &b.operation)))
        });
    }
    let node = |row: &PathRow, own: f64, inclusive: f64| CriticalPathNode {
        id: format!("{:x}", row.path),
        parent: (!is_request(row)).then(|| format!("{:x}", row.parent)),
        service: row.service.to_string(),
        operation: row.operation.to_string(),
        kind: row.kind.to_string(),
        depth: row.depth,
        traces: row.traces,
        reach: row.traces as f64 / requests,
        calls_per_request: if is_request(row) { 1.0 } else { row.spans as f64 / requests },
        self_per_request_nanos: own / requests,
        total_per_request_nanos: inclusive / requests,
        share: share(inclusive / requests),
        self_share: share(own / requests),
        self_p50_nanos: row.per_trace_critical.quantile(0.5),
        self_p95_nanos: row.per_trace_critical.quantile(0.95),
        self_p99_nanos: row.per_trace_critical.quantile(0.99),
        latency_p50_nanos: row.latency.quantile(0.5),
        latency_p95_nanos: row.latency.quantile(0.95),
        error_share: if row.spans > 0 { row.errors as f64 / row.spans as f64 } else { 0.0 },
    };
    let mut nodes = Vec::with_capacity(contexts.len());
    if let Some(request) = contexts.iter().find(|r| is_request(r)) {
        nodes.push(node(request, (request_total - children_of_request).max(0.0), request_total));
        let mut stack: Vec<&PathRow> = children.get(&REQUEST_PATH).map(|c| c.iter().rev().copied().collect()).unwrap_or_default();
        let mut seen = std::collections::HashSet::new();
        while let Some(row) = stack.pop() {
            if !seen.insert(row.path) {
                continue;
            }
            nodes.push(node(row, row.critical_path_nanos as f64, total[&row.path]));
            if row.path != OVERFLOW_PATH
                && let Some(list) = children.get(&row.path)
            {
                stack.extend(list.iter().rev().copied());
            }
        }
    }
    let bottlenecks = ranked(operation_totals(contexts.iter().copied()), &latency, faster_percent);
    let baseline = baseline.map(|((start, end), before)| {
        let before_latency = latency_of(of_entry(before, service, operation));
        let after = operation_totals(contexts.iter().copied());
        let earlier = operation_totals(of_entry(before, service, operation));
        let before_requests = before_latency.requests.max(1) as f64;
        let mut keys: Vec<&(String, String, String)> = after.keys().chain(earlier.keys()).collect();
        keys.sort();
        keys.dedup();
        let mut changes: Vec<Change> = keys
            .into_iter()
            .map(|key| {
                let (now, then) = (after.get(key), earlier.get(key));
                let after_per = now.map_or(0.0, |t| t.critical as f64 / requests);
                let before_per = then.map_or(0.0, |t| t.critical as f64 / before_requests);
                Change {
                    service: key.0.clone(),
                    operation: key.1.clone(),
                    kind: key.2.clone(),
                    before_per_request_nanos: before_per,
                    after_per_request_nanos: after_per,
                    change_nanos: after_per - before_per,
                    before_p95_nanos: then.map_or(0.0, |t| t.histogram.quantile(0.95)),
                    after_p95_nanos: now.map_or(0.0, |t| t.histogram.quantile(0.95)),
                    before_calls_per_request: then.map_or(0, |t| t.spans) as f64 / before_requests,
                    after_calls_per_request: now.map_or(0, |t| t.spans) as f64 / requests,
                }
            })
            .filter(|c| c.change_nanos != 0.0 || c.before_calls_per_request != c.after_calls_per_request)
            .collect();
        changes.sort_by(|a, b| b.change_nanos.total_cmp(&a.change_nanos));
        Baseline { start_unix_nano: start, end_unix_nano: end, latency: before_latency, changes }
    });
    CriticalPathReport {
        service: service.to_string(),
        operation: operation.to_string(),
        start_unix_nano: window.0,
        end_unix_nano: window.1,
        latency,
        faster_percent,
        nodes,
        bottlenecks,
        baseline,
    }
}

/// The operations ranked by critical-path time over every entry operation of the rows.
pub fn bottlenecks(window: (u64, u64), rows: &[PathRow], faster_percent: f64) -> BottleneckReport {
    let latency = latency_of(rows.iter());
    BottleneckReport {
        start_unix_nano: window.0,
        end_unix_nano: window.1,
        requests: latency.requests,
        faster_percent,
        bottlenecks: ranked(operation_totals(rows.iter()), &latency, faster_percent),
    }
}

fn label(service: &str, operation: &str) -> String {
    format!("{service} {operation}")
}

fn percent(share: f64) -> String {
    format!("{:.1}%", 100.0 * share)
}

impl CriticalPathReport {
    /// The tree as folded stacks (`frame;frame;frame value`, value in microseconds of own
    /// critical-path time summed over the window), the input of flamegraph.pl and speedscope.
    pub fn to_folded(&self) -> String {
        let mut stacks: HashMap<&str, String> = HashMap::new();
        let mut out = String::new();
        for node in &self.nodes {
            let frame = if node.parent.is_none() {
                "request".to_string()
            } else {
                format!("{}:{}", node.service, node.operation).replace(';', ",")
            };
            let stack = match node.parent.as_deref().and_then(|p| stacks.get(p)) {
                Some(parent) => format!("{parent};{frame}"),
                None => frame,
            };
            let micros = (node.self_per_request_nanos * self.latency.requests as f64 / 1_000.0).round() as u64;
            if micros > 0 {
                out.push_str(&format!("{stack} {micros}\n"));
            }
            stacks.insert(&node.id, stack);
        }
        out
    }

    pub fn to_markdown(&self) -> String {
        let l = &self.latency;
        let mut out = format!(
            "## Critical path of {} {}\n\n{} requests, mean {}, p50 {}, p95 {}, p99 {}.\n\n",
            self.service,
            self.operation,
            l.requests,
            ms(l.mean_nanos),
            ms(l.p50_nanos),
            ms(l.p95_nanos),
            ms(l.p99_nanos)
        );
        out.push_str("| Calling context | Kind | Per request | On the critical path (self / with callees) | Share | Self p95 |\n|---|---|---|---|---|---|\n");
        for n in &self.nodes {
            out.push_str(&format!(
                "| {}{} | {} | {:.2} | {} / {} | {} | {} |\n",
                "&nbsp;&nbsp;".repeat(n.depth as usize),
                cell(&label(&n.service, &n.operation)),
                n.kind,
                n.calls_per_request,
                ms(n.self_per_request_nanos),
                ms(n.total_per_request_nanos),
                percent(n.share),
                ms(n.self_p95_nanos)
            ));
        }
        out.push_str(&format!(
            "\n### Where the time goes\n\n| Operation | Kind | Per request | Share | p95 | Saved if {:.0}% faster |\n|---|---|---|---|---|---|\n",
            self.faster_percent
        ));
        for b in self.bottlenecks.iter().take(15) {
            out.push_str(&format!(
                "| {} | {} | {} | {} | {} | {} ({}) |\n",
                cell(&label(&b.service, &b.operation)),
                b.kind,
                ms(b.per_request_nanos),
                percent(b.share),
                ms(b.p95_nanos),
                ms(b.saved_per_request_nanos),
                percent(b.saved_share)
            ));
        }
        if let Some(baseline) = &self.baseline {
            out.push_str(&format!(
                "\n### Against the baseline\n\np95 {} → {}; {} → {} requests.\n\n| Operation | Before | After | Change | Calls per request |\n|---|---|---|---|---|\n",
                ms(baseline.latency.p95_nanos),
                ms(l.p95_nanos),
                baseline.latency.requests,
                l.requests
            ));
            for c in baseline.changes.iter().take(15) {
                out.push_str(&format!(
                    "| {} | {} | {} | {:+.1} ms | {:.2} → {:.2} |\n",
                    cell(&label(&c.service, &c.operation)),
                    ms(c.before_per_request_nanos),
                    ms(c.after_per_request_nanos),
                    c.change_nanos / 1e6,
                    c.before_calls_per_request,
                    c.after_calls_per_request
                ));
            }
        }
        out
    }

    pub fn to_table(&self) -> String {
        let mut rows = vec![[
            "CALLING CONTEXT".to_string(),
            "KIND".into(),
            "PER REQ".into(),
            "SELF".into(),
            "WITH CALLEES".into(),
            "SHARE".into(),
            "SELF P95".into(),
        ]];
        for n in &self.nodes {
            rows.push([
                format!("{}{}", "  ".repeat(n.depth as usize), label(&n.service, &n.operation)),
                n.kind.clone(),
                format!("{:.2}", n.calls_per_request),
                ms(n.self_per_request_nanos),
                ms(n.total_per_request_nanos),
                percent(n.share),
                ms(n.self_p95_nanos),
            ]);
        }
        let mut out = format!(
            "{} {}: {} requests, p50 {}, p95 {}\n{}",
            self.service,
            self.operation,
            self.latency.requests,
            ms(self.latency.p50_nanos),
            ms(self.latency.p95_nanos),
            table(&rows)
        );
        out.push('\n');
        out.push_str(&bottleneck_table(&self.bottlenecks, self.faster_percent));
        if let Some(baseline) = &self.baseline {
            let mut rows = vec![["OPERATION".to_string(), "BEFORE".into(), "AFTER".into(), "CHANGE".into(), "CALLS/REQ".into()]];
            for c in baseline.changes.iter().take(15) {
                rows.push([
                    label(&c.service, &c.operation),
                    ms(c.before_per_request_nanos),
                    ms(c.after_per_request_nanos),
                    format!("{:+.1} ms", c.change_nanos / 1e6),
                    format!("{:.2} -> {:.2}", c.before_calls_per_request, c.after_calls_per_request),
                ]);
            }
            out.push_str(&format!(
                "\nagainst the baseline (p95 {} -> {}):\n{}",
                ms(baseline.latency.p95_nanos),
                ms(self.latency.p95_nanos),
                table(&rows)
            ));
        }
        out
    }
}

fn bottleneck_table(bottlenecks: &[Bottleneck], faster_percent: f64) -> String {
    let mut rows = vec![[
        "OPERATION".to_string(),
        "KIND".into(),
        "PER REQ".into(),
        "SHARE".into(),
        "P95".into(),
        format!("SAVED IF {faster_percent:.0}% FASTER"),
    ]];
    for b in bottlenecks.iter().take(20) {
        rows.push([
            label(&b.service, &b.operation),
            b.kind.clone(),
            ms(b.per_request_nanos),
            percent(b.share),
            ms(b.p95_nanos),
            format!("{} ({})", ms(b.saved_per_request_nanos), percent(b.saved_share)),
        ]);
    }
    table(&rows)
}

impl BottleneckReport {
    pub fn to_markdown(&self) -> String {
        let mut out = format!(
            "## Critical-path bottlenecks\n\n{} requests over every entry operation. Saved: the end-to-end time per request if the operation were {:.0}% faster (an upper bound).\n\n| Operation | Kind | Per request | Share | p95 | Saved | Entry operations |\n|---|---|---|---|---|---|---|\n",
            self.requests, self.faster_percent
        );
        for b in self.bottlenecks.iter().take(30) {
            out.push_str(&format!(
                "| {} | {} | {} | {} | {} | {} | {} |\n",
                cell(&label(&b.service, &b.operation)),
                b.kind,
                ms(b.per_request_nanos),
                percent(b.share),
                ms(b.p95_nanos),
                ms(b.saved_per_request_nanos),
                cell(&b.entry_operations.iter().take(3).cloned().collect::<Vec<_>>().join(", "))
            ));
        }
        out
    }

    pub fn to_table(&self) -> String {
        format!("{} requests over every entry operation\n{}", self.requests, bottleneck_table(&self.bottlenecks, self.faster_percent))
    }
}
