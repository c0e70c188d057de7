//! Instrumentation coverage and propagation health: which services send spans, which are only
//! seen from their callers, where trace context is lost, and what each service should fix.

use std::collections::{BTreeMap, BTreeSet};

use clew_query::{AdoptionFacts, DEPRECATED_ATTRIBUTES, ServiceFacts};
use serde::Serialize;

use crate::catalog::Catalog;

/// Where a service's team came from.
#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum OwnerSource {
    Catalog,
    /// A resource attribute on the service's spans.
    Attribute,
    /// Nobody claims it; a virtual service is attributed to its busiest caller's team.
    Caller,
    Unknown,
}

#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq, PartialOrd, Ord)]
#[serde(rename_all = "snake_case")]
pub enum ServiceStatus {
    /// Sends spans.
    Instrumented,
    /// Called by instrumented services, sends none.
    NotInstrumented,
    /// A database: seen from its clients' spans, as it should be.
    Database,
    /// Listed in the catalog, seen nowhere in the window.
    Unseen,
    /// Run by someone else (the catalog says so): seen from its callers, never expected to send spans.
    External,
}

#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq, PartialOrd, Ord)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    High,
    Medium,
    Low,
}

/// One thing to fix in a service's instrumentation.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Finding {
    /// A stable name for the rule.
    pub rule: &'static str,
    pub severity: Severity,
    /// Spans (or calls) affected.
    pub count: i64,
    /// Share of the service's spans affected, 0–1.
    pub share: f64,
    pub message: String,
    pub advice: String,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ServiceCoverage {
    pub service: String,
    pub team: Option<String>,
    pub owner_source: OwnerSource,
    pub status: ServiceStatus,
    pub tier: Option<u8>,
    pub customer_facing: bool,
    pub spans: i64,
    pub traces: i64,
    /// Share of its traces with one root, no orphan and no lost context (instrumented only).
    pub whole_share: Option<f64>,
    /// Share of its traces whose every call reaches an instrumented service or a database.
    pub covered_share: Option<f64>,
    pub orphan_spans: i64,
    /// SERVER/CONSUMER spans without a parent outside the entry points: context lost upstream.
    pub unexpected_roots: i64,
    /// For a service that sends no spans: calls into it seen from its callers.
    pub calls_in: i64,
    pub callers: Vec<String>,
    /// 0–100; instrumented services only.
    pub quality_score: Option<u32>,
    pub quality_band: Option<&'static str>,
    pub findings: Vec<Finding>,
}

/// Calls that should have continued a trace in an instrumented service, and did not.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct PropagationBreak {
    pub caller: String,
    pub caller_team: Option<String>,
    /// The caller's CLIENT/PRODUCER span name.
    pub operation: String,
    pub callee: String,
    pub callee_team: Option<String>,
    /// Calls with no answering span in the callee's trace.
    pub broken_calls: i64,
    /// Calls from the same caller to the callee that did continue the trace.
    pub answered_calls: i64,
    /// Root spans in the callee that started while a broken call was in flight.
    pub callee_roots_during_calls: i64,
    /// `callee_does_not_extract`, `caller_does_not_inject` or `unknown`.
    pub diagnosis: &'static str,
    pub explanation: String,
    pub fix: String,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct TeamCoverage {
    pub team: String,
    pub services: usize,
    pub instrumented: usize,
    pub not_instrumented: Vec<String>,
    pub spans: i64,
    /// Span-weighted mean of its instrumented services' quality scores.
    pub quality_score: Option<u32>,
    pub breaks: usize,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct CoverageSummary {
    pub instrumented: usize,
    pub not_instrumented: usize,
    pub databases: usize,
    pub unseen: usize,
    pub external: usize,
    /// Instrumented services over all non-database services known.
    pub coverage: f64,
    pub traces: i64,
    pub breaks: usize,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct CoverageReport {
    pub start_unix_nano: u64,
    pub end_unix_nano: u64,
    pub summary: CoverageSummary,
    pub services: Vec<ServiceCoverage>,
    pub teams: Vec<TeamCoverage>,
    pub breaks: Vec<PropagationBreak>,
}

/// Team of a service: the catalog, then the owner attribute its spans carry.
pub fn owner_of(catalog: &Catalog, service: &str, attribute: Option<&str>) -> (Option<String>, OwnerSource) {
    if let Some(entry) = catalog.get(service) {
        return (Some(entry.team.clone()), OwnerSource::Catalog);
    }
    match attribute {
        Some(team) if !team.is_empty() => (Some(team.to_string()), OwnerSource::Attribute),
        _ => (None, OwnerSource::Unknown),
    }
}

/// `part` over `whole`, 0 for an empty whole.
pub(crate) fn share(part: i64, whole: i64) -> f64 {
    if whole <= 0 { 0.0 } else { part as f64 / whole as f64 }
}

fn percent(part: i64, whole: i64) -> String {
    format!("{:.1}%", 100.0 * share(part, whole))
}

/// The convention rules, applied to one instrumented service.
fn findings(facts: &ServiceFacts, deprecated: &[(&str, i64)]) -> Vec<Finding> {
    let spans = facts.spans;
    let mut out = Vec::new();
    let mut add = |rule, severity, count: i64, message: String, advice: String| {
        if count > 0 {
            out.push(Finding { rule, severity, count, share: share(count, spans), message, advice });
        }
    };
    add(
        "missing_service_version",
        Severity::Medium,
        facts.missing_version,
        format!("{} of its spans have no service.version", percent(facts.missing_version, spans)),
        "Set service.version on the resource (OTEL_RESOURCE_ATTRIBUTES=service.version=…) so that deploys can be compared.".into(),
    );
    add(
        "missing_environment",
        Severity::Low,
        facts.missing_environment,
        format!("{} of its spans have no deployment.environment.name", percent(facts.missing_environment, spans)),
        "Set deployment.environment.name on the resource so that production traffic can be told from staging.".into(),
    );
    add(
        "error_without_status",
        Severity::High,
        facts.errors_without_status,
        format!("{} failed HTTP spans (5xx, or 4xx on a client) do not have an error status", facts.errors_without_status),
        "Set the span status to ERROR when a request fails; error rates, alerts and the error search read the status.".into(),
    );
    add(
        "server_span_without_route",
        Severity::Medium,
        facts.server_without_route,
        format!("{} SERVER spans have an HTTP method but no http.route", facts.server_without_route),
        "Record http.route (the route template, such as /users/{id}) on server spans: operations are grouped by it.".into(),
    );
    add(
        "internal_span_for_incoming_request",
        Severity::Medium,
        facts.internal_like_server,
        format!("{} INTERNAL spans describe an incoming HTTP request", facts.internal_like_server),
        "Give spans that handle an incoming request the kind SERVER, so that callers are paired with them.".into(),
    );
    add(
        "internal_span_for_outgoing_call",
        Severity::Medium,
        facts.internal_like_client,
        format!("{} INTERNAL spans describe a call to another service or a database", facts.internal_like_client),
        "Give spans of outgoing calls the kind CLIENT (PRODUCER for messages), so that the service map sees the dependency.".into(),
    );
    add(
        "orphan_spans",
        Severity::High,
        facts.orphan_spans,
        format!("{} spans name a parent that never arrived", facts.orphan_spans),
        "Spans of one trace are lost before they reach Clew, or sampled apart: check that every service exports (and flushes on shutdown) and that sampling decisions follow the parent.".into(),
    );
    for (key, count) in deprecated {
        let replacement = DEPRECATED_ATTRIBUTES.iter().find(|(old, _)| old == key).map_or("", |(_, new)| new);
        add(
            "deprecated_attribute",
            Severity::Low,
            *count,
            format!("{count} spans use the deprecated attribute {key}"),
            format!("Use {replacement} instead of {key} (a newer instrumentation library does it)."),
        );
    }
    out
}

/// 100 minus penalties: each finding costs its weight times the share of spans affected (at
/// least a quarter of the weight), plus a whole-service penalty for lost context.
fn score(findings: &[Finding]) -> u32 {
    let mut penalty = 0.0;
    for finding in findings {
        let weight = match finding.severity {
            Severity::High => 25.0,
            Severity::Medium => 12.0,
            Severity::Low => 5.0,
        };
        penalty += weight * finding.share.clamp(0.25, 1.0);
    }
    (100.0 - penalty).clamp(0.0, 100.0).round() as u32
}

fn band(score: u32) -> &'static str {
    match score {
        80.. => "high",
        50..80 => "medium",
        _ => "low",
    }
}

/// The coverage report of one window.
pub fn coverage(facts: &AdoptionFacts, catalog: &Catalog) -> CoverageReport {
    let instrumented: BTreeSet<&str> = facts.services.iter().map(|s| s.service.as_str()).collect();
    let mut deprecated: BTreeMap<&str, Vec<(&str, i64)>> = BTreeMap::new();
    for use_ in &facts.deprecated {
        deprecated.entry(use_.service.as_str()).or_default().push((use_.key.as_str(), use_.spans));
    }
    // Entry points: catalog says customer-facing, or nobody instrumented calls them.
    let called: BTreeSet<&str> =
        facts.calls.iter().map(|c| c.callee.as_str()).chain(facts.unanswered.iter().map(|u| catalog.canonical(&u.peer))).collect();
    let is_entry = |service: &str| catalog.get(service).map_or(!called.contains(service), |e| e.customer_facing);

    // Propagation breaks: unanswered calls into an instrumented service.
    let mut grouped: BTreeMap<(String, String, String), (i64, i64)> = BTreeMap::new();
    for call in &facts.unanswered {
        let callee = catalog.canonical(&call.peer);
        if call.is_database || !instrumented.contains(callee) || callee == call.caller {
            continue;
        }
        let entry = grouped.entry((call.caller.clone(), call.operation.clone(), callee.to_string())).or_default();
        entry.0 += call.calls;
        entry.1 += call.roots_in_peer;
    }
    let owner_attr: BTreeMap<&str, Option<&str>> = facts.services.iter().map(|s| (s.service.as_str(), s.owner.as_deref())).collect();
    let team = |service: &str| owner_of(catalog, service, owner_attr.get(service).copied().flatten()).0;
    let answered =
        |caller: &str, callee: &str| facts.calls.iter().filter(|c| c.caller == caller && c.callee == callee).map(|c| c.calls).sum::<i64>();
    let mut breaks = Vec::new();
    for ((caller, operation, callee), (broken_calls, roots)) in grouped {
        let answered_calls = answered(&caller, &callee);
        let callee_extracts_elsewhere = facts.calls.iter().any(|c| c.callee == callee && c.caller != caller && c.calls > 0);
        let caller_injects_elsewhere = facts.calls.iter().any(|c| c.caller == caller && c.callee != callee && c.calls > 0);
        let (diagnosis, explanation, fix) = if callee_extracts_elsewhere || answered_calls > 0 {
            (
                "caller_does_not_inject",
                format!(
                    "{callee} continues traces from other calls ({} answered), so its server side extracts context; \
                     the {broken_calls} `{operation}` calls from {caller} arrive without it.",
                    facts.calls.iter().filter(|c| c.callee == callee).map(|c| c.calls).sum::<i64>()
                ),
                format!(
                    "In {caller}, make the HTTP client used for `{operation}` inject the trace context (traceparent): use the instrumented client or call the propagator's inject."
                ),
            )
        } else if caller_injects_elsewhere {
            (
                "callee_does_not_extract",
                format!(
                    "{caller} propagates context to other services, but {callee} never continues a trace from it: \
                     its server spans start new traces{}.",
                    if roots > 0 { format!(" ({roots} root spans started while these calls were in flight)") } else { String::new() }
                ),
                format!(
                    "In {callee}, extract the incoming trace context before starting the server span: instrument its HTTP server (or framework) so that it reads traceparent."
                ),
            )
        } else {
            (
                "unknown",
                format!("{caller} calls {callee} {broken_calls} times and no call continues the trace on either side."),
                format!("Check that {caller} injects and {callee} extracts the same propagation format (W3C traceparent or B3)."),
            )
        };
        breaks.push(PropagationBreak {
            caller_team: team(&caller),
            callee_team: team(&callee),
            caller,
            operation,
            callee,
            broken_calls,
            answered_calls,
            callee_roots_during_calls: roots,
            diagnosis,
            explanation,
            fix,
        });
    }
    breaks.sort_by(|a, b| b.broken_calls.cmp(&a.broken_calls).then_with(|| a.caller.cmp(&b.caller)));

    let mut services: Vec<ServiceCoverage> = Vec::new();
    for s in &facts.services {
        let (team, owner_source) = owner_of(catalog, &s.service, s.owner.as_deref());
        let entry = catalog.get(&s.service);
        let unexpected_roots = if is_entry(&s.service) { 0 } else { s.root_entry_spans };
        let mut found = findings(s, deprecated.get(s.service.as_str()).map_or(&[], Vec::as_slice));
        let break_calls: i64 = breaks.iter().filter(|b| b.callee == s.service).map(|b| b.broken_calls).sum();
        if unexpected_roots > 0 {
            found.push(Finding {
                rule: "context_lost_upstream",
                severity: Severity::High,
                count: unexpected_roots,
                share: share(unexpected_roots, s.entry_spans),
                message: format!(
                    "{} of its {} SERVER/CONSUMER spans start a new trace although it is not an entry point{}",
                    unexpected_roots,
                    s.entry_spans,
                    if break_calls > 0 { format!(" ({break_calls} calls from instrumented callers lost their context)") } else { String::new() }
                ),
                advice: "See the propagation breaks below; if it is called by something not instrumented yet, instrumenting that caller joins these traces up.".into(),
            });
        }
        let quality = score(&found);
        services.push(ServiceCoverage {
            service: s.service.clone(),
            team,
            owner_source,
            status: ServiceStatus::Instrumented,
            tier: entry.and_then(|e| e.tier),
            customer_facing: entry.is_some_and(|e| e.customer_facing) || (entry.is_none() && is_entry(&s.service)),
            spans: s.spans,
            traces: s.traces,
            whole_share: Some(share(s.whole_traces, s.traces)),
            covered_share: Some(share(s.covered_traces, s.traces)),
            orphan_spans: s.orphan_spans,
            unexpected_roots,
            calls_in: facts.calls.iter().filter(|c| c.callee == s.service).map(|c| c.calls).sum(),
            callers: facts.calls.iter().filter(|c| c.callee == s.service).map(|c| c.caller.clone()).collect(),
            quality_score: Some(quality),
            quality_band: Some(band(quality)),
            findings: found,
        });
    }

    // Services seen only from their callers.
    let mut peers: BTreeMap<String, (bool, i64, BTreeMap<String, i64>)> = BTreeMap::new();
    for call in &facts.unanswered {
        let name = catalog.canonical(&call.peer);
        if instrumented.contains(name) {
            continue;
        }
        let entry = peers.entry(name.to_string()).or_default();
        entry.0 |= call.is_database && catalog.get(name).is_none();
        entry.1 += call.calls;
        *entry.2.entry(call.caller.clone()).or_default() += call.calls;
    }
    for (name, (is_database, calls, callers)) in peers {
        let (mut team, mut owner_source) = owner_of(catalog, &name, None);
        if team.is_none() && !is_database {
            let busiest = callers.iter().max_by_key(|(_, n)| **n).map(|(c, _)| c.clone());
            if let Some(caller_team) = busiest.and_then(|c| owner_of(catalog, &c, owner_attr.get(c.as_str()).copied().flatten()).0) {
                team = Some(caller_team);
                owner_source = OwnerSource::Caller;
            }
        }
        let entry = catalog.get(&name);
        services.push(ServiceCoverage {
            service: name.clone(),
            team,
            owner_source,
            status: if is_database {
                ServiceStatus::Database
            } else if entry.is_some_and(|e| e.external) {
                ServiceStatus::External
            } else {
                ServiceStatus::NotInstrumented
            },
            tier: entry.and_then(|e| e.tier),
            customer_facing: entry.is_some_and(|e| e.customer_facing),
            spans: 0,
            traces: 0,
            whole_share: None,
            covered_share: None,
            orphan_spans: 0,
            unexpected_roots: 0,
            calls_in: calls,
            callers: callers.into_keys().collect(),
            quality_score: None,
            quality_band: None,
            findings: Vec::new(),
        });
    }
    for entry in &catalog.services {
        if services.iter().any(|s| s.service == entry.service) {
            continue;
        }
        services.push(ServiceCoverage {
            service: entry.service.clone(),
            team: Some(entry.team.clone()),
            owner_source: OwnerSource::Catalog,
            status: if entry.external { ServiceStatus::External } else { ServiceStatus::Unseen },
            tier: entry.tier,
            customer_facing: entry.customer_facing,
            spans: 0,
            traces: 0,
            whole_share: None,
            covered_share: None,
            orphan_spans: 0,
            unexpected_roots: 0,
            calls_in: 0,
            callers: Vec::new(),
            quality_score: None,
            quality_band: None,
            findings: Vec::new(),
        });
    }
    services.sort_by(|a, b| a.status.cmp(&b.status).then_with(|| a.service.cmp(&b.service)));

    let mut teams: BTreeMap<String, TeamCoverage> = BTreeMap::new();
    let mut weighted: BTreeMap<String, (f64, i64)> = BTreeMap::new();
    for s in services.iter().filter(|s| !matches!(s.status, ServiceStatus::Database | ServiceStatus::External)) {
        let name = s.team.clone().unwrap_or_else(|| "(no team)".into());
        let team = teams.entry(name.clone()).or_insert_with(|| TeamCoverage {
            team: name.clone(),
            services: 0,
            instrumented: 0,
            not_instrumented: Vec::new(),
            spans: 0,
            quality_score: None,
            breaks: 0,
        });
        team.services += 1;
        team.spans += s.spans;
        if s.status == ServiceStatus::Instrumented {
            team.instrumented += 1;
            let w = weighted.entry(name).or_default();
            w.0 += s.quality_score.unwrap_or(0) as f64 * s.spans as f64;
            w.1 += s.spans;
        } else {
            team.not_instrumented.push(s.service.clone());
        }
    }
    for (name, team) in teams.iter_mut() {
        if let Some((sum, spans)) = weighted.get(name).filter(|(_, n)| *n > 0) {
            team.quality_score = Some((sum / *spans as f64).round() as u32);
        }
        team.breaks = breaks.iter().filter(|b| b.caller_team.as_deref() == Some(name) || b.callee_team.as_deref() == Some(name)).count();
    }

    let count = |status| services.iter().filter(|s| s.status == status).count();
    let (inst, not_inst, dbs, unseen) = (
        count(ServiceStatus::Instrumented),
        count(ServiceStatus::NotInstrumented),
        count(ServiceStatus::Database),
        count(ServiceStatus::Unseen),
    );
    let roots: i64 = facts.roots.iter().map(|r| r.spans).sum();
    CoverageReport {
        start_unix_nano: facts.start_unix_nano,
        end_unix_nano: facts.end_unix_nano,
        summary: CoverageSummary {
            instrumented: inst,
            not_instrumented: not_inst,
            databases: dbs,
            unseen,
            external: count(ServiceStatus::External),
            coverage: share(inst as i64, (inst + not_inst + unseen) as i64),
            traces: roots,
            breaks: breaks.len(),
        },
        services,
        teams: teams.into_values().collect(),
        breaks,
    }
}

fn share_text(share: Option<f64>) -> String {
    share.map_or("—".into(), |s| format!("{:.1}%", 100.0 * s))
}

fn status_text(status: ServiceStatus) -> &'static str {
    match status {
        ServiceStatus::Instrumented => "instrumented",
        ServiceStatus::NotInstrumented => "not instrumented",
        ServiceStatus::Database => "database",
        ServiceStatus::Unseen => "catalog only",
        ServiceStatus::External => "external",
    }
}

impl CoverageReport {
    pub fn to_table(&self) -> String {
        let mut rows = vec![[
            "SERVICE".to_string(),
            "TEAM".into(),
            "STATUS".into(),
            "SPANS".into(),
            "WHOLE".into(),
            "COVERED".into(),
            "SCORE".into(),
            "TOP FINDING".into(),
        ]];
        for s in &self.services {
            rows.push([
                s.service.clone(),
                s.team.clone().unwrap_or_else(|| "—".into()),
                status_text(s.status).into(),
                if s.status == ServiceStatus::Instrumented { s.spans.to_string() } else { format!("{} calls in", s.calls_in) },
                share_text(s.whole_share),
                share_text(s.covered_share),
                s.quality_score.map_or("—".into(), |q| q.to_string()),
                s.findings.iter().min_by_key(|f| f.severity).map_or(String::new(), |f| f.message.clone()),
            ]);
        }
        let mut out = crate::render::table(&rows);
        for b in &self.breaks {
            out.push_str(&format!(
                "\nbroken: {} → {} ({} calls, {}): {}\n  fix: {}\n",
                b.caller, b.callee, b.broken_calls, b.diagnosis, b.explanation, b.fix
            ));
        }
        out
    }

    pub fn to_markdown(&self) -> String {
        use crate::render::cell;
        let s = &self.summary;
        let mut out = format!(
            "# Instrumentation coverage\n\n{} services send spans, {} are called but send none, {} are known only from the catalog \
             ({:.0}% coverage); {} databases and {} external services. {} propagation breaks.\n",
            s.instrumented,
            s.not_instrumented,
            s.unseen,
            100.0 * s.coverage,
            s.databases,
            s.external,
            s.breaks
        );
        out.push_str("\n## Teams\n\n| Team | Services | Instrumented | Not yet | Quality | Breaks |\n|---|---|---|---|---|---|\n");
        for t in &self.teams {
            out.push_str(&format!(
                "| {} | {} | {} | {} | {} | {} |\n",
                cell(&t.team),
                t.services,
                t.instrumented,
                cell(&t.not_instrumented.join(", ")),
                t.quality_score.map_or("—".into(), |q| q.to_string()),
                t.breaks
            ));
        }
        if !self.breaks.is_empty() {
            out.push_str("\n## Propagation breaks\n");
            for b in &self.breaks {
                out.push_str(&format!(
                    "\n### {} → {} (`{}`)\n\n{} broken calls, {} answered. {}\n\n**Fix:** {}\n",
                    b.caller, b.callee, b.operation, b.broken_calls, b.answered_calls, b.explanation, b.fix
                ));
            }
        }
        out.push_str("\n## Services\n\n| Service | Team | Status | Whole traces | Covered traces | Quality |\n|---|---|---|---|---|---|\n");
        for s in &self.services {
            out.push_str(&format!(
                "| {} | {} | {} | {} | {} | {} |\n",
                cell(&s.service),
                cell(s.team.as_deref().unwrap_or("—")),
                status_text(s.status),
                share_text(s.whole_share),
                share_text(s.covered_share),
                s.quality_score.map_or("—".into(), |q| format!("{q} ({})", s.quality_band.unwrap_or(""))),
            ));
        }
        let with_findings: Vec<&ServiceCoverage> = self.services.iter().filter(|s| !s.findings.is_empty()).collect();
        if !with_findings.is_empty() {
            out.push_str("\n## What to fix\n");
            for s in with_findings {
                out.push_str(&format!("\n### {}\n\n", s.service));
                for f in &s.findings {
                    out.push_str(&format!("- **{}**: {}. {}\n", f.rule, f.message, f.advice));
                }
            }
        }
        out
    }
}
