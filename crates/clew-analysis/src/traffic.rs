//! Traffic estimation (the throughput calculator used to prepare load tests and peak events):
//! from the fan-out of each entry operation (how many times each operation runs per request,
//! counted per trace) and a planned peak rate per entry operation, the rate every operation
//! should expect, against the peak it has already handled. Operations that would have to take
//! more than they ever have are the ones to scale or load-test first.

use std::collections::{BTreeMap, HashMap};

use clew_query::{OVERFLOW_PATH, PathRow, REQUEST_PATH};
use serde::Serialize;

use crate::render::{cell, table};

/// How many times an operation runs per request of an entry operation.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct FanOut {
    pub service: String,
    pub operation: String,
    pub kind: String,
    /// Mean over every request of the entry operation.
    pub mean_per_request: f64,
    /// 95% of requests run it at most this many times (summed over its calling contexts when it
    /// has several, so an upper bound then).
    pub p95_per_request: f64,
    pub max_per_request: f64,
    /// Share of requests that run it at least once (at least this share when it has several
    /// calling contexts).
    pub reach: f64,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct EntryFanOut {
    pub service: String,
    pub operation: String,
    pub requests: u64,
    pub observed_mean_per_second: f64,
    pub observed_peak_per_second: f64,
    /// Server and consumer operations its requests run, the most called first.
    pub fan_out: Vec<FanOut>,
}

/// A planned rate for an entry operation.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct PlannedRate {
    pub service: String,
    pub operation: String,
    pub per_second: f64,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Contribution {
    /// `service operation` of the entry operation.
    pub entry_operation: String,
    pub mean_per_request: f64,
    pub per_second: f64,
}

/// What one operation should expect.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct TrafficTarget {
    pub service: String,
    pub operation: String,
    pub kind: String,
    pub observed_mean_per_second: f64,
    /// The busiest minute of the window.
    pub observed_peak_per_second: f64,
    /// From the planned entry operations, through their fan-out.
    pub planned_per_second: f64,
    /// From entry operations the plan does not name, at their observed mean rate.
    pub background_per_second: f64,
    pub expected_per_second: f64,
    /// Observed peak over expected: below 1 it must take more than it ever has in the window.
    pub headroom: f64,
    pub scale: bool,
    pub contributions: Vec<Contribution>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct TrafficEstimate {
    pub start_unix_nano: u64,
    pub end_unix_nano: u64,
    /// The minutes of the window that hold requests (from the first to the last): mean rates
    /// are over this time, so that a window reaching back before the data began does not dilute them.
    pub observed_seconds: f64,
    pub plan: Vec<PlannedRate>,
    /// The factor applied to the observed mean rate of entry operations the plan does not name.
    pub others_factor: f64,
    pub entries: Vec<EntryFanOut>,
    /// Every server and consumer operation, the least headroom first.
    pub targets: Vec<TrafficTarget>,
    /// Services with at least one operation short of headroom.
    pub scale_services: Vec<String>,
    pub warnings: Vec<String>,
}

type OperationKey = (String, String, String);

/// The per-minute rows an estimate reads: requests, and server and consumer spans (a reader may
/// leave the rest out before merging).
pub fn read_per_minute(row: &PathRow) -> bool {
    row.path == REQUEST_PATH || takes_load(row)
}

fn takes_load(row: &PathRow) -> bool {
    row.path != REQUEST_PATH && row.path != OVERFLOW_PATH && (&*row.kind == "server" || &*row.kind == "consumer")
}

fn key(row: &PathRow) -> OperationKey {
    (row.service.to_string(), row.operation.to_string(), row.kind.to_string())
}

/// From the first to the last minute that holds a request, in seconds.
fn observed_seconds(per_minute: &[PathRow]) -> f64 {
    let minutes = per_minute.iter().filter(|r| r.path == REQUEST_PATH).map(|r| r.minute_unix_nano);
    let (first, last) = minutes.fold((i64::MAX, i64::MIN), |(lo, hi), m| (lo.min(m), hi.max(m)));
    if first > last { 0.0 } else { (last - first) as f64 / 1e9 + 60.0 }
}

/// The fan-out of every entry operation in `rows` (merged over the window; one row per entry
/// operation and calling context), with their observed rates from `per_minute` rows.
fn fan_out(rows: &[PathRow], per_minute: &[PathRow], window_seconds: f64) -> Vec<EntryFanOut> {
    let mut entries: BTreeMap<(String, String), (u64, BTreeMap<OperationKey, Vec<&PathRow>>)> = BTreeMap::new();
    for row in rows {
        let entry = entries.entry((row.entry_service.to_string(), row.entry_operation.to_string())).or_default();
        if row.path == REQUEST_PATH {
            entry.0 += row.traces;
        } else if takes_load(row) {
            entry.1.entry(key(row)).or_default().push(row);
        }
    }
    let mut peaks: HashMap<(String, String), HashMap<i64, u64>> = HashMap::new();
    for row in per_minute.iter().filter(|r| r.path == REQUEST_PATH) {
        *peaks
            .entry((row.entry_service.to_string(), row.entry_operation.to_string()))
            .or_default()
            .entry(row.minute_unix_nano)
            .or_default() += row.traces;
    }
    let mut out: Vec<EntryFanOut> = entries
        .into_iter()
        .map(|((service, operation), (requests, operations))| {
            let per = |n: u64| if requests > 0 { n as f64 / requests as f64 } else { 0.0 };
            let mut fan_out: Vec<FanOut> = operations
                .into_iter()
                .map(|((s, o, k), contexts)| FanOut {
                    service: s,
                    operation: o,
                    kind: k,
                    mean_per_request: per(contexts.iter().map(|c| c.spans).sum()),
                    p95_per_request: contexts.iter().map(|c| c.per_trace_spans.quantile(0.95).round()).sum(),
                    max_per_request: contexts.iter().map(|c| c.per_trace_spans.quantile(1.0).round()).sum(),
                    reach: per(contexts.iter().map(|c| c.traces).max().unwrap_or(0)),
                })
                .collect();
            fan_out.sort_by(|a, b| b.mean_per_request.total_cmp(&a.mean_per_request).then_with(|| a.service.cmp(&b.service)));
            let peak = peaks.get(&(service.clone(), operation.clone())).and_then(|m| m.values().max().copied()).unwrap_or(0);
            EntryFanOut {
                observed_mean_per_second: if window_seconds > 0.0 { requests as f64 / window_seconds } else { 0.0 },
                observed_peak_per_second: peak as f64 / 60.0,
                service,
                operation,
                requests,
                fan_out,
            }
        })
        .collect();
    out.sort_by(|a, b| b.requests.cmp(&a.requests).then_with(|| (&a.service, &a.operation).cmp(&(&b.service, &b.operation))));
    out
}

/// The rate every server and consumer operation should expect under `plan`.
/// Entry operations the plan does not name run at their observed mean rate times `others_factor`.
pub fn estimate(
    window: (u64, u64),
    rows: &[PathRow],
    per_minute: &[PathRow],
    plan: Vec<PlannedRate>,
    others_factor: f64,
) -> TrafficEstimate {
    let window_seconds = observed_seconds(per_minute);
    let entries = fan_out(rows, per_minute, window_seconds);
    let mut warnings = Vec::new();
    for planned in &plan {
        if !entries.iter().any(|e| e.service == planned.service && e.operation == planned.operation) {
            warnings.push(format!(
                "no request of {} {} was seen in the window: its planned rate adds nothing (see /api/v1/flows for the entry operations)",
                planned.service, planned.operation
            ));
        }
    }
    let mut observed: HashMap<OperationKey, (u64, HashMap<i64, u64>)> = HashMap::new();
    for row in per_minute.iter().filter(|r| takes_load(r)) {
        let totals = observed.entry(key(row)).or_default();
        totals.0 += row.spans;
        *totals.1.entry(row.minute_unix_nano).or_default() += row.spans;
    }
    let mut targets: BTreeMap<OperationKey, TrafficTarget> = BTreeMap::new();
    for entry in &entries {
        let planned = plan.iter().find(|p| p.service == entry.service && p.operation == entry.operation);
        let rate = planned.map_or(entry.observed_mean_per_second * others_factor, |p| p.per_second);
        for f in &entry.fan_out {
            let target = targets.entry((f.service.clone(), f.operation.clone(), f.kind.clone())).or_insert_with(|| TrafficTarget {
                service: f.service.clone(),
                operation: f.operation.clone(),
                kind: f.kind.clone(),
                observed_mean_per_second: 0.0,
                observed_peak_per_second: 0.0,
                planned_per_second: 0.0,
                background_per_second: 0.0,
                expected_per_second: 0.0,
                headroom: 0.0,
                scale: false,
                contributions: Vec::new(),
            });
            let per_second = rate * f.mean_per_request;
            if planned.is_some() {
                target.planned_per_second += per_second;
            } else {
                target.background_per_second += per_second;
            }
            target.contributions.push(Contribution {
                entry_operation: format!("{} {}", entry.service, entry.operation),
                mean_per_request: f.mean_per_request,
                per_second,
            });
        }
    }
    let mut targets: Vec<TrafficTarget> = targets
        .into_iter()
        .map(|(key, mut t)| {
            let (spans, minutes) = observed.remove(&key).unwrap_or_default();
            t.observed_mean_per_second = if window_seconds > 0.0 { spans as f64 / window_seconds } else { 0.0 };
            t.observed_peak_per_second = minutes.values().max().copied().unwrap_or(0) as f64 / 60.0;
            t.expected_per_second = t.planned_per_second + t.background_per_second;
            t.headroom = if t.expected_per_second > 0.0 { t.observed_peak_per_second / t.expected_per_second } else { f64::INFINITY };
            t.scale = t.expected_per_second > t.observed_peak_per_second;
            t.contributions.sort_by(|a, b| b.per_second.total_cmp(&a.per_second));
            t
        })
        .collect();
    targets.sort_by(|a, b| a.headroom.total_cmp(&b.headroom).then_with(|| (&a.service, &a.operation).cmp(&(&b.service, &b.operation))));
    let mut scale_services: Vec<String> = Vec::new();
    for t in targets.iter().filter(|t| t.scale) {
        if !scale_services.contains(&t.service) {
            scale_services.push(t.service.clone());
        }
    }
    TrafficEstimate {
        start_unix_nano: window.0,
        end_unix_nano: window.1,
        observed_seconds: window_seconds,
        plan,
        others_factor,
        entries,
        targets,
        scale_services,
        warnings,
    }
}

fn rate(per_second: f64) -> String {
    if per_second >= 100.0 { format!("{per_second:.0}/s") } else { format!("{per_second:.2}/s") }
}

fn headroom(t: &TrafficTarget) -> String {
    if t.headroom.is_finite() { format!("{:.2}x", t.headroom) } else { "-".into() }
}

impl TrafficEstimate {
    fn plan_line(&self) -> String {
        if self.plan.is_empty() {
            return format!("No planned rates: every entry operation at {:.2}x its observed mean rate.", self.others_factor);
        }
        let items: Vec<String> = self.plan.iter().map(|p| format!("{} {} at {}", p.service, p.operation, rate(p.per_second))).collect();
        format!("Planned: {}; other entry operations at {:.2}x their observed mean rate.", items.join(", "), self.others_factor)
    }

    pub fn to_markdown(&self) -> String {
        let mut out = format!("## Traffic estimate\n\n{}\n\n", self.plan_line());
        if self.scale_services.is_empty() {
            out.push_str("Every operation has handled at least its expected rate in the window.\n\n");
        } else {
            out.push_str(&format!("**To scale or load-test first:** {}.\n\n", self.scale_services.join(", ")));
        }
        out.push_str(
            "| Operation | Kind | Expected | Observed peak | Observed mean | Headroom | Largest source |\n|---|---|---|---|---|---|---|\n",
        );
        for t in &self.targets {
            let source =
                t.contributions.first().map(|c| format!("{} ({:.2}/request)", c.entry_operation, c.mean_per_request)).unwrap_or_default();
            out.push_str(&format!(
                "| {}{} {} | {} | {} | {} | {} | {} | {} |\n",
                if t.scale { "**scale** " } else { "" },
                cell(&t.service),
                cell(&t.operation),
                t.kind,
                rate(t.expected_per_second),
                rate(t.observed_peak_per_second),
                rate(t.observed_mean_per_second),
                headroom(t),
                cell(&source)
            ));
        }
        out
    }

    pub fn to_table(&self) -> String {
        let mut rows = vec![[
            "OPERATION".to_string(),
            "KIND".into(),
            "EXPECTED".into(),
            "PEAK".into(),
            "MEAN".into(),
            "HEADROOM".into(),
            "SCALE".into(),
        ]];
        for t in &self.targets {
            rows.push([
                format!("{} {}", t.service, t.operation),
                t.kind.clone(),
                rate(t.expected_per_second),
                rate(t.observed_peak_per_second),
                rate(t.observed_mean_per_second),
                headroom(t),
                if t.scale { "yes".into() } else { String::new() },
            ]);
        }
        format!("{}\n{}", self.plan_line(), table(&rows))
    }

    /// One line per operation, for spreadsheets.
    pub fn to_csv(&self) -> String {
        let quote = |s: &str| format!("\"{}\"", s.replace('"', "\"\""));
        let mut out = String::from(
            "service,operation,kind,expected_per_second,planned_per_second,background_per_second,observed_peak_per_second,observed_mean_per_second,headroom,scale\n",
        );
        for t in &self.targets {
            out.push_str(&format!(
                "{},{},{},{:.4},{:.4},{:.4},{:.4},{:.4},{},{}\n",
                quote(&t.service),
                quote(&t.operation),
                t.kind,
                t.expected_per_second,
                t.planned_per_second,
                t.background_per_second,
                t.observed_peak_per_second,
                t.observed_mean_per_second,
                if t.headroom.is_finite() { format!("{:.4}", t.headroom) } else { String::new() },
                t.scale
            ));
        }
        out
    }
}
