//! Traffic estimation (the throughput calculator used to prepare load tests and peak events):
//! from the fan-out of each entry operation (how many times each operation runs per request,
//! counted per trace) and a planned peak rate per entry operation, the rate every operation
//! should expect, against the peak it has already handled. Operations that would have to take
//! more than they ever have are the ones to scale or load-test first.
//!
//! Traffic is told apart by its source (the trace's `traffic.source`, or the attribute
//! configured instead): the fan-out is read from production traffic by default, leaving load
//! tests out. During a load test, the same estimate takes the load test's measured entry rates
//! as its plan and sets what each operation measured beside what production's fan-out expects:
//! an operation the test never reaches (a mocked dependency, a missing scenario), one it
//! loads more or less than production would, and one that slows down under the load.

use std::collections::{BTreeMap, HashMap};

use clew_model::LatencyHistogram;
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
    /// During a load test: what the test measured of this operation.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub measured: Option<Measured>,
}

/// What a load test measured of one operation, against what production's fan-out expects.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Measured {
    /// Spans of load-test traffic per second, over the minutes the test ran.
    pub per_second: f64,
    /// Measured over expected (none when nothing was expected).
    pub ratio: Option<f64>,
    /// `as expected`, `less than expected`, `more than expected`, `not reached` (expected but
    /// never measured: a mocked dependency or a missing scenario) or `not expected`.
    pub verdict: String,
    /// 95th-percentile latency of its spans under the load test, and in the baseline.
    pub p95_ms: f64,
    pub baseline_p95_ms: Option<f64>,
    /// Its p95 under load is more than 1.5 times the baseline's (and 5 ms more): a bottleneck.
    pub slower: bool,
}

/// A traffic source seen in the window.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct TrafficSource {
    /// The value of the traffic-source attribute ("" for traffic naming none).
    pub source: String,
    pub requests: u64,
    pub load_test: bool,
}

/// The load test an estimate measured.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct LoadTest {
    /// From the first to the last minute holding one of its requests.
    pub seconds: f64,
    pub requests: u64,
    /// Its entry operations at their measured rates (the estimate's plan).
    pub entries: Vec<PlannedRate>,
    /// Operations production's fan-out expects that the test never reached.
    pub not_reached: Vec<String>,
    /// Operations measured outside the tolerance (more, less or not expected).
    pub off_expectation: Vec<String>,
    /// Operations whose p95 latency grew under the load.
    pub slower: Vec<String>,
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
    /// The traffic the fan-out and observed rates are read from: `production` (every source
    /// but load tests), `load-test`, `all` or `source:<name>`.
    pub traffic: String,
    /// Every traffic source in the window, the most requests first.
    pub sources: Vec<TrafficSource>,
    /// When a load test is measured against the estimate.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub load_test: Option<LoadTest>,
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

/// Per operation that takes load: Σw and Σw² of its spans' adjusted counts.
fn weighted_spans(rows: &[PathRow]) -> HashMap<OperationKey, (u64, u64)> {
    let mut out: HashMap<OperationKey, (u64, u64)> = HashMap::new();
    for row in rows.iter().filter(|r| takes_load(r)) {
        let slot = out.entry(key(row)).or_default();
        (slot.0, slot.1) = (slot.0 + row.spans, slot.1.saturating_add(row.weight_squares));
    }
    out
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
    estimate_warning_of_unseen(window, rows, per_minute, plan, others_factor, |planned| {
        format!(
            "no request of {} {} was seen in the window: its planned rate adds nothing (see /api/v1/flows for the entry operations)",
            planned.service, planned.operation
        )
    })
}

/// [`estimate`], with the warning for a planned entry operation that the rows never saw.
fn estimate_warning_of_unseen(
    window: (u64, u64),
    rows: &[PathRow],
    per_minute: &[PathRow],
    plan: Vec<PlannedRate>,
    others_factor: f64,
    unseen: impl Fn(&PlannedRate) -> String,
) -> TrafficEstimate {
    let window_seconds = observed_seconds(per_minute);
    let entries = fan_out(rows, per_minute, window_seconds);
    let mut warnings = Vec::new();
    for planned in &plan {
        if !entries.iter().any(|e| e.service == planned.service && e.operation == planned.operation) {
            warnings.push(unseen(planned));
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
                measured: None,
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
        traffic: "all".into(),
        sources: Vec::new(),
        load_test: None,
        warnings,
    }
}

/// The latency of an operation's spans, over its calling contexts in `rows`.
fn latency_by_operation(rows: &[PathRow]) -> HashMap<OperationKey, LatencyHistogram> {
    let mut out: HashMap<OperationKey, LatencyHistogram> = HashMap::new();
    for row in rows.iter().filter(|r| takes_load(r)) {
        out.entry(key(row)).or_default().merge(&row.latency);
    }
    out
}

/// A p95 this much slower under load (and at least [`SLOWER_NANOS`] more) marks a bottleneck.
const SLOWER_FACTOR: f64 = 1.5;
const SLOWER_NANOS: f64 = 5e6;

/// The estimate of `baseline` traffic's fan-out under the load test's measured entry rates,
/// with what the test measured of every operation (`test` rows, merged and per minute).
pub fn measure_load_test(window: (u64, u64), baseline: (&[PathRow], &[PathRow]), test: (&[PathRow], &[PathRow])) -> TrafficEstimate {
    let (test_rows, test_per_minute) = test;
    let test_seconds = observed_seconds(test_per_minute);
    let test_entries = fan_out(test_rows, test_per_minute, test_seconds);
    let plan: Vec<PlannedRate> = test_entries
        .iter()
        .map(|e| PlannedRate { service: e.service.clone(), operation: e.operation.clone(), per_second: e.observed_mean_per_second })
        .collect();
    let mut estimate = estimate_warning_of_unseen(window, baseline.0, baseline.1, plan.clone(), 0.0, |planned| {
        format!(
            "no request of {} {} was seen in the baseline: what the load test sends it cannot be compared (see /api/v1/flows for the entry operations)",
            planned.service, planned.operation
        )
    });
    if test_entries.is_empty() {
        estimate.warnings.push("no load-test traffic in the window: nothing to measure".into());
    }
    // What the test measured of each operation, and the baseline's: Σw (the spans, weighted)
    // and Σw² of the spans' adjusted counts.
    let (measured, baseline_weight) = (weighted_spans(test_per_minute), weighted_spans(baseline.0));
    // A weighted count of sampled spans has a relative variance of Σw²/Σw², Σw²/Σw times an
    // unsampled count's.
    let variance_factor = |weights: &HashMap<OperationKey, (u64, u64)>, k: &OperationKey| match weights.get(k) {
        Some(&(weighted, squares)) if weighted > 0 => (squares as f64 / weighted as f64).max(1.0),
        _ => 1.0,
    };
    let (test_latency, base_latency) = (latency_by_operation(test_rows), latency_by_operation(baseline.0));
    let mut targets: Vec<TrafficTarget> =
        std::mem::take(&mut estimate.targets).into_iter().filter(|t| t.expected_per_second > 0.0).collect();
    for (k, _) in &measured {
        if !targets.iter().any(|t| (&t.service, &t.operation, &t.kind) == (&k.0, &k.1, &k.2)) {
            targets.push(TrafficTarget {
                service: k.0.clone(),
                operation: k.1.clone(),
                kind: k.2.clone(),
                observed_mean_per_second: 0.0,
                observed_peak_per_second: 0.0,
                planned_per_second: 0.0,
                background_per_second: 0.0,
                expected_per_second: 0.0,
                headroom: f64::INFINITY,
                scale: false,
                contributions: Vec::new(),
                measured: None,
            });
        }
    }
    let mut summary = LoadTest {
        seconds: test_seconds,
        requests: test_entries.iter().map(|e| e.requests).sum(),
        entries: plan,
        not_reached: Vec::new(),
        off_expectation: Vec::new(),
        slower: Vec::new(),
    };
    for t in &mut targets {
        let k = (t.service.clone(), t.operation.clone(), t.kind.clone());
        let spans = measured.get(&k).map_or(0, |(spans, _)| *spans);
        let per_second = if test_seconds > 0.0 { spans as f64 / test_seconds } else { 0.0 };
        let ratio = (t.expected_per_second > 0.0).then(|| per_second / t.expected_per_second);
        // Within 10%, or four standard errors when the counts are small: of the spans the
        // test should send it, and of the baseline's spans its fan-out was learnt from (a
        // count of sampled spans varies Σw²/Σw times as much as an unsampled one).
        let expected_spans = t.expected_per_second * test_seconds;
        let baseline_spans = t.observed_mean_per_second * estimate.observed_seconds;
        let tolerance = if expected_spans > 0.0 && baseline_spans > 0.0 {
            let (w_test, w_base) = (variance_factor(&measured, &k), variance_factor(&baseline_weight, &k));
            (4.0 * (w_test / expected_spans + w_base / baseline_spans).sqrt()).max(0.1)
        } else {
            0.1
        };
        let verdict = match ratio {
            None => "not expected",
            Some(_) if spans == 0 => "not reached",
            Some(r) if r < 1.0 - tolerance => "less than expected",
            Some(r) if r > 1.0 + tolerance => "more than expected",
            Some(_) => "as expected",
        };
        let quantile = |h: Option<&LatencyHistogram>| h.filter(|h| h.count() > 0).map(|h| h.quantile(0.95));
        let (p95, baseline_p95) = (quantile(test_latency.get(&k)), quantile(base_latency.get(&k)));
        let slower = matches!((p95, baseline_p95), (Some(p), Some(b)) if p > b * SLOWER_FACTOR && p - b > SLOWER_NANOS);
        let name = format!("{} {}", t.service, t.operation);
        match verdict {
            "not reached" => summary.not_reached.push(name.clone()),
            "as expected" => {}
            _ => summary.off_expectation.push(name.clone()),
        }
        if slower {
            summary.slower.push(name);
        }
        t.measured = Some(Measured {
            per_second,
            ratio,
            verdict: verdict.into(),
            p95_ms: p95.unwrap_or(0.0) / 1e6,
            baseline_p95_ms: baseline_p95.map(|b| b / 1e6),
            slower,
        });
    }
    // The furthest from expectation first: never reached, then by how far off.
    let distance = |t: &TrafficTarget| {
        let m = t.measured.as_ref().expect("set above");
        match (m.verdict.as_str(), m.ratio) {
            ("not reached", _) => f64::INFINITY,
            (_, Some(r)) if r > 0.0 => r.ln().abs(),
            _ => f64::MAX,
        }
    };
    targets.sort_by(|a, b| distance(b).total_cmp(&distance(a)).then_with(|| (&a.service, &a.operation).cmp(&(&b.service, &b.operation))));
    estimate.targets = targets;
    estimate.load_test = Some(summary);
    estimate
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

    fn traffic_line(&self) -> String {
        let sources: Vec<String> = self
            .sources
            .iter()
            .map(|s| {
                let name = if s.source.is_empty() { "untagged".to_string() } else { s.source.clone() };
                format!("{name} {}{}", s.requests, if s.load_test { " (load test)" } else { "" })
            })
            .collect();
        let traffic = match self.traffic.as_str() {
            "production" => "production traffic (load tests left out)".to_string(),
            "load-test" => "load-test traffic only".to_string(),
            "all" => "all traffic".to_string(),
            other => format!("traffic of {other}"),
        };
        if sources.is_empty() {
            format!("Fan-out from {traffic}.")
        } else {
            format!("Fan-out from {traffic}; requests by source: {}.", sources.join(", "))
        }
    }

    fn measured_markdown(&self, test: &LoadTest) -> String {
        let mut out = format!(
            "## Load test: measured against expected\n\n{}\n\nThe load test sent {} requests over {:.0} s; each operation's expected rate is what production's fan-out makes of its entry rates.\n\n",
            self.traffic_line(),
            test.requests,
            test.seconds
        );
        let list = |title: &str, items: &[String]| {
            if items.is_empty() { String::new() } else { format!("**{title}:** {}.\n\n", items.join(", ")) }
        };
        out.push_str(&list("Never reached (mocked, or a missing scenario)", &test.not_reached));
        out.push_str(&list("Loaded differently from production", &test.off_expectation));
        out.push_str(&list("Slower under the load", &test.slower));
        out.push_str(
            "| Operation | Kind | Expected | Measured | Ratio | Verdict | p95 baseline → load test |\n|---|---|---|---|---|---|---|\n",
        );
        for t in &self.targets {
            let Some(m) = &t.measured else { continue };
            out.push_str(&format!(
                "| {} {} | {} | {} | {} | {} | {}{} | {} → {:.1} ms |\n",
                cell(&t.service),
                cell(&t.operation),
                t.kind,
                rate(t.expected_per_second),
                rate(m.per_second),
                m.ratio.map_or("-".into(), |r| format!("{r:.2}")),
                m.verdict,
                if m.slower { ", **slower**" } else { "" },
                m.baseline_p95_ms.map_or("-".into(), |b| format!("{b:.1}")),
                m.p95_ms
            ));
        }
        out
    }

    pub fn to_markdown(&self) -> String {
        if let Some(test) = &self.load_test {
            return self.measured_markdown(test);
        }
        let mut out = format!("## Traffic estimate\n\n{}\n\n{}\n\n", self.plan_line(), self.traffic_line());
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
        if self.load_test.is_some() {
            let mut rows = vec![[
                "OPERATION".to_string(),
                "KIND".into(),
                "EXPECTED".into(),
                "MEASURED".into(),
                "RATIO".into(),
                "VERDICT".into(),
                "P95 MS".into(),
            ]];
            for t in &self.targets {
                let Some(m) = &t.measured else { continue };
                rows.push([
                    format!("{} {}", t.service, t.operation),
                    t.kind.clone(),
                    rate(t.expected_per_second),
                    rate(m.per_second),
                    m.ratio.map_or("-".into(), |r| format!("{r:.2}")),
                    format!("{}{}", m.verdict, if m.slower { ", slower" } else { "" }),
                    format!("{} -> {:.1}", m.baseline_p95_ms.map_or("-".into(), |b| format!("{b:.1}")), m.p95_ms),
                ]);
            }
            return format!("Load test measured against expected. {}\n{}", self.traffic_line(), table(&rows));
        }
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
        format!("{} {}\n{}", self.plan_line(), self.traffic_line(), table(&rows))
    }

    /// One line per operation, for spreadsheets.
    pub fn to_csv(&self) -> String {
        let quote = |s: &str| format!("\"{}\"", s.replace('"', "\"\""));
        let mut out = String::from(
            "service,operation,kind,expected_per_second,planned_per_second,background_per_second,observed_peak_per_second,observed_mean_per_second,headroom,scale,measured_per_second,measured_ratio,verdict,measured_p95_ms,baseline_p95_ms\n",
        );
        for t in &self.targets {
            out.push_str(&format!(
                "{},{},{},{:.4},{:.4},{:.4},{:.4},{:.4},{},{},{}\n",
                quote(&t.service),
                quote(&t.operation),
                t.kind,
                t.expected_per_second,
                t.planned_per_second,
                t.background_per_second,
                t.observed_peak_per_second,
                t.observed_mean_per_second,
                if t.headroom.is_finite() { format!("{:.4}", t.headroom) } else { String::new() },
                t.scale,
                match &t.measured {
                    Some(m) => format!(
                        "{:.4},{},{},{:.3},{}",
                        m.per_second,
                        m.ratio.map_or(String::new(), |r| format!("{r:.4}")),
                        m.verdict,
                        m.p95_ms,
                        m.baseline_p95_ms.map_or(String::new(), |b| format!("{b:.3}"))
                    ),
                    None => ",,,,".into(),
                }
            ));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    /// A calling-context row of the gateway's checkout: `spans` spans of `service` over
    /// `traces` traces, each taking `millis`.
    fn row(minute: i64, path: u64, service: &str, kind: &str, traces: u64, spans: u64, millis: i64) -> PathRow {
        let mut latency = LatencyHistogram::default();
        for _ in 0..spans {
            latency.record(millis * 1_000_000);
        }
        PathRow {
            minute_unix_nano: minute * 60_000_000_000,
            entry_service: Arc::from("gateway"),
            entry_operation: Arc::from("POST /checkout"),
            source: Arc::from(""),
            path,
            parent: REQUEST_PATH,
            service: Arc::from(service),
            operation: Arc::from("op"),
            kind: Arc::from(kind),
            depth: if path == REQUEST_PATH { 0 } else { 1 },
            traces,
            spans,
            weight_squares: spans,
            errors: 0,
            duration_nanos: 0,
            critical_path_nanos: 0,
            latency,
            per_trace_spans: LatencyHistogram::default(),
            per_trace_critical: LatencyHistogram::default(),
        }
    }

    /// Rows of `requests` checkouts per minute over `minutes` minutes, each calling payments
    /// `payments` times and carts once.
    fn traffic(minutes: i64, requests: u64, payments: u64, carts: u64, cart_millis: i64) -> Vec<PathRow> {
        (0..minutes)
            .flat_map(|m| {
                let mut rows = vec![row(m, REQUEST_PATH, "gateway", "request", requests, requests * 5, 50)];
                if payments > 0 {
                    rows.push(row(m, 10, "payments", "server", requests, requests * payments, 20));
                }
                if carts > 0 {
                    rows.push(row(m, 11, "cart", "server", requests, requests * carts, cart_millis));
                }
                rows
            })
            .collect()
    }

    fn merged(rows: &[PathRow]) -> Vec<PathRow> {
        clew_store::merge_paths(rows, Some(0), false)
    }

    #[test]
    fn a_load_test_is_measured_against_the_fan_out_of_production() {
        // Production: 60 checkouts a minute, each paying twice and reading the cart once.
        let production = traffic(10, 60, 2, 1, 5);
        // The load test: 600 a minute for 3 minutes, payments mocked, the cart 40 ms slower.
        let test = traffic(3, 600, 0, 1, 45);
        let estimate = measure_load_test((0, 600_000_000_000), (&merged(&production), &production), (&merged(&test), &test));
        let load = estimate.load_test.as_ref().unwrap();
        assert_eq!((load.requests, load.seconds), (1_800, 180.0));
        assert_eq!(load.entries, vec![PlannedRate { service: "gateway".into(), operation: "POST /checkout".into(), per_second: 10.0 }]);
        let target = |service: &str| estimate.targets.iter().find(|t| t.service == service).unwrap();
        let payments = target("payments");
        assert!((payments.expected_per_second - 20.0).abs() < 1e-9, "10 checkouts/s × 2 payments each");
        let m = payments.measured.as_ref().unwrap();
        assert_eq!((m.per_second, m.verdict.as_str()), (0.0, "not reached"));
        let cart = target("cart").measured.as_ref().unwrap();
        assert_eq!((cart.ratio, cart.verdict.as_str(), cart.slower), (Some(1.0), "as expected", true));
        assert_eq!(load.not_reached, vec!["payments op"]);
        assert_eq!(load.slower, vec!["cart op"]);
        assert_eq!(estimate.targets[0].service, "payments", "the furthest from expectation first");
        assert!(estimate.to_markdown().contains("Never reached"));
        assert!(estimate.to_csv().lines().any(|l| l.starts_with("\"payments\"") && l.contains(",0.0000,0.0000,not reached,")));

        // A test that loads the cart three times as often as production does.
        let heavy = traffic(3, 600, 2, 3, 5);
        let estimate = measure_load_test((0, 1), (&merged(&production), &production), (&merged(&heavy), &heavy));
        let cart = estimate.targets.iter().find(|t| t.service == "cart").unwrap().measured.clone().unwrap();
        assert_eq!((cart.verdict.as_str(), cart.slower), ("more than expected", false));
        assert!((cart.ratio.unwrap() - 3.0).abs() < 1e-9);

        // The cart at 1.3 times production's rate is more than expected; but not when each
        // of the test's spans stands for a hundred (sampled at 1%): few spans, a wide error.
        let mut more = traffic(3, 600, 2, 1, 5);
        for row in more.iter_mut().filter(|r| &*r.service == "cart") {
            row.spans = 780;
        }
        let verdict = |test: &[PathRow]| {
            let estimate = measure_load_test((0, 1), (&merged(&production), &production), (&merged(test), test));
            estimate.targets.iter().find(|t| t.service == "cart").unwrap().measured.clone().unwrap().verdict
        };
        assert_eq!(
            verdict(&more.iter().map(|r| PathRow { weight_squares: r.spans, ..r.clone() }).collect::<Vec<_>>()),
            "more than expected"
        );
        for row in more.iter_mut().filter(|r| &*r.service == "cart") {
            row.weight_squares = 78_000;
        }
        assert_eq!(verdict(&more), "as expected");

        // No load test in the window: said so.
        let none = measure_load_test((0, 1), (&merged(&production), &production), (&[], &[]));
        assert!(none.warnings.iter().any(|w| w.contains("no load-test traffic")));
    }
}
