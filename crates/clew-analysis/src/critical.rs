//! Critical user operations: the few requests the business lives on (checkout, login), each
//! defined in the catalog by where it enters. For each, how it behaves (rate, errors, latency,
//! and against the window before) and how much of its call tree is traced end to end: which
//! services it reaches, which of them send no spans, and which team owns each gap.

use std::collections::{BTreeMap, BTreeSet};

use clew_query::{OperationFacts, RequestPoint};
use serde::Serialize;

use crate::catalog::{Catalog, CriticalOperation};
use crate::coverage::{OwnerSource, owner_of, share as ratio};
use crate::render::{cell, millis as ms, table};

/// How a service in the operation's call tree is seen.
#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq, PartialOrd, Ord)]
#[serde(rename_all = "snake_case")]
pub enum NodeStatus {
    Instrumented,
    /// Called, sends no spans: a gap.
    NotInstrumented,
    /// Sends spans, but not in these requests' traces when called from them: context is lost.
    ContextLost,
    Database,
    /// A third party, per the catalog.
    External,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct OperationNode {
    pub service: String,
    pub team: Option<String>,
    pub owner_source: OwnerSource,
    pub status: NodeStatus,
    /// Share of the operation's requests that reach it.
    pub reach: f64,
    /// For a gap: the instrumented services that call it, and how often.
    pub callers: Vec<String>,
    pub calls: i64,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Trend {
    pub previous_requests: i64,
    pub previous_error_ratio: f64,
    pub previous_p95_nanos: f64,
    /// Relative change of the request count (0.1 = 10% more); absent without a previous window's requests.
    pub requests_change: Option<f64>,
    pub p95_change: Option<f64>,
    /// Difference of the error ratios, in points (0.01 = one percentage point more).
    pub error_ratio_change: f64,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct CriticalOperationReport {
    #[serde(flatten)]
    pub definition: CriticalOperation,
    /// The team owning the service the requests enter.
    pub team: Option<String>,
    pub start_unix_nano: u64,
    pub end_unix_nano: u64,
    pub step_nanos: u64,
    pub requests: i64,
    /// Over the window from its first request on.
    pub requests_per_second: f64,
    pub errors: i64,
    pub error_ratio: f64,
    pub p50_nanos: f64,
    pub p95_nanos: f64,
    pub p99_nanos: f64,
    pub trend: Trend,
    pub series: Vec<RequestPoint>,
    /// Instrumented services over the services of the call tree that could send spans
    /// (databases and third parties left out).
    pub coverage: f64,
    /// Share of requests traced end to end: one root, no orphan, no call unanswered but by databases.
    pub whole_share: f64,
    /// Every service the requests reach, the most reached first.
    pub services: Vec<OperationNode>,
    /// The nodes to fix, in order of reach, with their teams.
    pub gaps: Vec<OperationNode>,
}

fn change(now: f64, before: f64) -> Option<f64> {
    (before > 0.0).then(|| (now - before) / before)
}

/// The report of one critical operation from its facts.
pub fn critical_operation(definition: &CriticalOperation, facts: &OperationFacts, catalog: &Catalog) -> CriticalOperationReport {
    let requests = facts.stats.requests;
    let instrumented: BTreeSet<&str> = facts.instrumented.iter().map(String::as_str).collect();
    let mut nodes: BTreeMap<String, OperationNode> = BTreeMap::new();
    let attribute_owner: BTreeMap<&str, Option<&str>> = facts.services.iter().map(|s| (s.service.as_str(), s.owner.as_deref())).collect();
    for s in &facts.services {
        let (team, owner_source) = owner_of(catalog, &s.service, s.owner.as_deref());
        nodes.insert(
            s.service.clone(),
            OperationNode {
                service: s.service.clone(),
                team,
                owner_source,
                status: NodeStatus::Instrumented,
                reach: ratio(s.traces, requests),
                callers: Vec::new(),
                calls: s.spans,
            },
        );
    }
    let mut gap_traces: BTreeMap<String, i64> = BTreeMap::new();
    let mut gap_callers: BTreeMap<String, BTreeMap<String, i64>> = BTreeMap::new();
    for gap in &facts.gaps {
        let peer = catalog.canonical(&gap.peer).to_string();
        if peer == gap.caller {
            continue;
        }
        let status = if gap.is_database {
            NodeStatus::Database
        } else if catalog.get(&peer).is_some_and(|e| e.external) {
            NodeStatus::External
        } else if instrumented.contains(peer.as_str()) {
            NodeStatus::ContextLost
        } else {
            NodeStatus::NotInstrumented
        };
        // Requests reaching it: at least those of its busiest caller (traces are counted per caller).
        let traces = gap_traces.entry(peer.clone()).or_default();
        *traces = (*traces).max(gap.traces);
        *gap_callers.entry(peer.clone()).or_default().entry(gap.caller.clone()).or_default() += gap.calls;
        match nodes.get_mut(&peer) {
            // Reached through its own spans and also called without context: the break is the news.
            Some(node) if status == NodeStatus::ContextLost => {
                node.status = NodeStatus::ContextLost;
            }
            Some(_) => {}
            None => {
                let caller_team = attribute_owner.get(gap.caller.as_str()).copied().flatten();
                let (team, owner_source) = match owner_of(catalog, &peer, None) {
                    (None, _) if status == NodeStatus::NotInstrumented => {
                        // Nobody claims it: its caller's team is the one that knows it.
                        (owner_of(catalog, &gap.caller, caller_team).0, OwnerSource::Caller)
                    }
                    found => found,
                };
                nodes.insert(
                    peer.clone(),
                    OperationNode { service: peer.clone(), team, owner_source, status, reach: 0.0, callers: Vec::new(), calls: 0 },
                );
            }
        }
    }
    for (peer, callers) in gap_callers {
        let node = nodes.get_mut(&peer).expect("every gap has a node");
        if node.status != NodeStatus::Instrumented {
            node.calls = callers.values().sum();
            node.reach = node.reach.max(ratio(gap_traces[&peer], requests));
            let mut callers: Vec<(String, i64)> = callers.into_iter().collect();
            callers.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
            node.callers = callers.into_iter().map(|(c, _)| c).collect();
        }
    }
    let mut services: Vec<OperationNode> = nodes.into_values().collect();
    services.sort_by(|a, b| b.reach.total_cmp(&a.reach).then(a.service.cmp(&b.service)));
    let countable = services.iter().filter(|n| !matches!(n.status, NodeStatus::Database | NodeStatus::External)).count();
    let traced = services.iter().filter(|n| n.status == NodeStatus::Instrumented).count();
    let gaps: Vec<OperationNode> =
        services.iter().filter(|n| matches!(n.status, NodeStatus::NotInstrumented | NodeStatus::ContextLost)).cloned().collect();
    // The rate over the part of the window that has requests: a window reaching back before
    // the first one would understate it.
    let first = facts.series.first().map_or(facts.start_unix_nano, |p| p.time_unix_nano.max(0) as u64);
    let window_seconds = (facts.end_unix_nano.saturating_sub(first.max(facts.start_unix_nano))).max(facts.step_nanos) as f64 / 1e9;
    let error_ratio = ratio(facts.stats.errors, requests);
    let previous_error_ratio = ratio(facts.previous.errors, facts.previous.requests);
    let (team, _) = owner_of(catalog, &definition.service, attribute_owner.get(definition.service.as_str()).copied().flatten());
    CriticalOperationReport {
        definition: definition.clone(),
        team,
        start_unix_nano: facts.start_unix_nano,
        end_unix_nano: facts.end_unix_nano,
        step_nanos: facts.step_nanos,
        requests,
        requests_per_second: if window_seconds > 0.0 { requests as f64 / window_seconds } else { 0.0 },
        errors: facts.stats.errors,
        error_ratio,
        p50_nanos: facts.stats.p50_nanos,
        p95_nanos: facts.stats.p95_nanos,
        p99_nanos: facts.stats.p99_nanos,
        trend: Trend {
            previous_requests: facts.previous.requests,
            previous_error_ratio,
            previous_p95_nanos: facts.previous.p95_nanos,
            requests_change: change(requests as f64, facts.previous.requests as f64),
            p95_change: change(facts.stats.p95_nanos, facts.previous.p95_nanos),
            error_ratio_change: error_ratio - previous_error_ratio,
        },
        series: facts.series.clone(),
        coverage: if countable == 0 { 0.0 } else { traced as f64 / countable as f64 },
        whole_share: ratio(facts.whole_requests, requests),
        services,
        gaps,
    }
}

fn pct(x: f64) -> String {
    format!("{:.1}%", 100.0 * x)
}

fn signed(x: Option<f64>) -> String {
    x.map_or("–".into(), |x| format!("{}{:.0}%", if x >= 0.0 { "+" } else { "" }, 100.0 * x))
}

fn entry_text(d: &CriticalOperation) -> String {
    let entry = match (&d.operation, &d.route) {
        (Some(operation), _) => format!("{} {operation}", d.service),
        (None, Some(route)) => format!("{} route {route}", d.service),
        (None, None) => d.service.clone(),
    };
    match &d.traceql {
        Some(filter) => format!("{entry} where {filter}"),
        None => entry,
    }
}

impl NodeStatus {
    pub fn label(self) -> &'static str {
        match self {
            Self::Instrumented => "traced",
            Self::NotInstrumented => "not instrumented",
            Self::ContextLost => "context lost",
            Self::Database => "database",
            Self::External => "third party",
        }
    }
}

impl CriticalOperationReport {
    pub fn to_markdown(&self) -> String {
        let d = &self.definition;
        let mut out = format!("## {}\n\n", d.name);
        if !d.description.is_empty() {
            out.push_str(&format!("{}\n\n", d.description));
        }
        out.push_str(&format!(
            "Requests entering {}{}: {} ({:.2}/s), {} failed ({}), p50 {}, p95 {}, p99 {}. Against the window before: requests {}, p95 {}, errors {:+.1} points.\n\n",
            entry_text(d),
            self.team.as_ref().map_or(String::new(), |t| format!(" (team {t})")),
            self.requests,
            self.requests_per_second,
            self.errors,
            pct(self.error_ratio),
            ms(self.p50_nanos),
            ms(self.p95_nanos),
            ms(self.p99_nanos),
            signed(self.trend.requests_change),
            signed(self.trend.p95_change),
            100.0 * self.trend.error_ratio_change,
        ));
        out.push_str(&format!(
            "End-to-end coverage: {} of the services it reaches send spans; {} of its requests are traced whole.\n\n",
            pct(self.coverage),
            pct(self.whole_share)
        ));
        if self.gaps.is_empty() {
            out.push_str("No gap: every service it reaches sends spans with the trace's context.\n");
        } else {
            out.push_str("| Gap | Team | Why | Reached by | Called from |\n|---|---|---|---|---|\n");
            for g in &self.gaps {
                out.push_str(&format!(
                    "| {} | {} | {} | {} of requests | {} |\n",
                    cell(&g.service),
                    cell(g.team.as_deref().unwrap_or("unknown")),
                    g.status.label(),
                    pct(g.reach),
                    cell(&g.callers.join(", "))
                ));
            }
        }
        out
    }

    pub fn to_table(&self) -> String {
        let mut rows = vec![["SERVICE".to_string(), "TEAM".into(), "STATUS".into(), "REACH".into(), "CALLED FROM".into()]];
        for n in &self.services {
            rows.push([n.service.clone(), n.team.clone().unwrap_or_default(), n.status.label().into(), pct(n.reach), n.callers.join(",")]);
        }
        format!(
            "{}: {} requests, errors {}, p95 {}, coverage {}, traced whole {}\n{}",
            self.definition.name,
            self.requests,
            pct(self.error_ratio),
            ms(self.p95_nanos),
            pct(self.coverage),
            pct(self.whole_share),
            table(&rows)
        )
    }
}

/// Several critical operations at once, as one document.
pub fn to_markdown(reports: &[CriticalOperationReport]) -> String {
    let mut out = String::from("# Critical user operations\n\n");
    if reports.is_empty() {
        out.push_str("None is defined: list them under `critical_operations` in the service catalog.\n");
        return out;
    }
    out.push_str("| Operation | Entry | Requests/s | Errors | p95 | Coverage | Traced whole | Gaps |\n|---|---|---|---|---|---|---|---|\n");
    for r in reports {
        out.push_str(&format!(
            "| {} | {} | {:.2} | {} | {} | {} | {} | {} |\n",
            cell(&r.definition.name),
            cell(&entry_text(&r.definition)),
            r.requests_per_second,
            pct(r.error_ratio),
            ms(r.p95_nanos),
            pct(r.coverage),
            pct(r.whole_share),
            cell(&r.gaps.iter().map(|g| g.service.as_str()).collect::<Vec<_>>().join(", "))
        ));
    }
    for r in reports {
        out.push('\n');
        out.push_str(&r.to_markdown());
    }
    out
}

pub fn to_table(reports: &[CriticalOperationReport]) -> String {
    let mut rows =
        vec![["OPERATION".to_string(), "REQ/S".into(), "ERRORS".into(), "P95".into(), "COVERAGE".into(), "WHOLE".into(), "GAPS".into()]];
    for r in reports {
        rows.push([
            r.definition.name.clone(),
            format!("{:.2}", r.requests_per_second),
            pct(r.error_ratio),
            ms(r.p95_nanos),
            pct(r.coverage),
            pct(r.whole_share),
            r.gaps.iter().map(|g| g.service.as_str()).collect::<Vec<_>>().join(","),
        ]);
    }
    table(&rows)
}

#[cfg(test)]
mod tests {
    use clew_query::{OperationGap, ReachedService, RequestStats};

    use super::*;

    fn facts() -> OperationFacts {
        let reached = |service: &str, traces| ReachedService { service: service.into(), owner: Some("web".into()), traces, spans: traces };
        let gap = |caller: &str, peer: &str, is_database, traces| OperationGap {
            caller: caller.into(),
            peer: peer.into(),
            is_database,
            calls: traces,
            traces,
            critical_path_nanos: 0,
        };
        OperationFacts {
            start_unix_nano: 0,
            end_unix_nano: 100_000_000_000,
            step_nanos: 10_000_000_000,
            stats: RequestStats { requests: 100, errors: 5, p50_nanos: 1e6, p95_nanos: 4e6, p99_nanos: 9e6 },
            previous: RequestStats { requests: 50, errors: 0, p50_nanos: 1e6, p95_nanos: 2e6, p99_nanos: 3e6 },
            series: vec![RequestPoint { time_unix_nano: 0, requests: 100, errors: 5, p95_nanos: 4e6 }],
            services: vec![reached("gateway", 100), reached("cart", 60)],
            gaps: vec![
                gap("cart", "redis", true, 60),
                gap("cart", "stock.internal", false, 30),
                gap("gateway", "billing", false, 10),
                gap("gateway", "psp", false, 5),
            ],
            whole_requests: 65,
            instrumented: vec!["gateway".into(), "cart".into(), "billing".into()],
        }
    }

    #[test]
    fn gaps_are_named_owned_and_ranked_by_reach() {
        let catalog = Catalog::parse(
            "services:\n  - service: stock\n    team: warehouse\n    aliases: [stock.internal]\n  - service: psp\n    team: payments\n    external: true\n",
        )
        .unwrap();
        let definition =
            CriticalOperation { name: "Buy".into(), service: "gateway".into(), operation: Some("POST /buy".into()), ..Default::default() };
        let report = critical_operation(&definition, &facts(), &catalog);
        let gaps: Vec<(&str, NodeStatus, Option<&str>)> =
            report.gaps.iter().map(|g| (g.service.as_str(), g.status, g.team.as_deref())).collect();
        // The alias resolves to the catalog's service and team; billing sends spans elsewhere, so
        // the call lost its context (and nothing here says who owns it); the database and the
        // third party are not gaps.
        assert_eq!(gaps, vec![("stock", NodeStatus::NotInstrumented, Some("warehouse")), ("billing", NodeStatus::ContextLost, None)]);
        assert!((report.gaps[0].reach - 0.3).abs() < 1e-9);
        // gateway and cart traced; stock and billing not: databases and third parties do not count.
        assert!((report.coverage - 0.5).abs() < 1e-9);
        assert!((report.whole_share - 0.65).abs() < 1e-9);
        assert!((report.error_ratio - 0.05).abs() < 1e-9);
        assert_eq!(report.trend.requests_change, Some(1.0));
        assert_eq!(report.trend.p95_change, Some(1.0));
        assert_eq!(report.team.as_deref(), Some("web"));
        assert!(report.to_markdown().contains("| stock | warehouse | not instrumented | 30.0% of requests | cart |"));
    }
}
