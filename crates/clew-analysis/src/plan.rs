//! The rollout planner: in which order teams should adopt tracing, and why.
//!
//! First the team owning the customer-facing entry point with the most user-visible traffic;
//! second the team owning that entry point's largest dependency; then, one team at a time, the
//! team most depended upon by the teams already traced (or planned), scored half by the share
//! of their outgoing calls it receives and half by the share of user-visible request time
//! spent in its services. Teams only the catalog knows come last. Each step says why, in
//! numbers, and what it unlocks.

use std::collections::{BTreeMap, BTreeSet};

use clew_query::AdoptionFacts;
use serde::Serialize;

use crate::catalog::Catalog;
use crate::coverage::{CoverageReport, ServiceStatus};

#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum StepReason {
    /// Owns the customer-facing entry point with the most user traffic.
    EntryPoint,
    /// Owns the first team's largest dependency.
    LargestDependency,
    /// Most depended upon by the teams traced so far.
    DependencyOrder,
    /// Known from the catalog only: no traced service calls it yet.
    CatalogOnly,
}

impl StepReason {
    /// A few words for tables.
    pub fn label(self) -> &'static str {
        match self {
            Self::EntryPoint => "owns the busiest entry point",
            Self::LargestDependency => "largest dependency of the entry team",
            Self::DependencyOrder => "most depended upon",
            Self::CatalogOnly => "catalog only",
        }
    }
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct TeamProgress {
    pub team: String,
    pub traced: Vec<String>,
    pub not_traced: Vec<String>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct PlanStep {
    pub step: usize,
    pub team: String,
    /// The team's services that do not send spans yet.
    pub services: Vec<String>,
    pub reason: StepReason,
    pub rationale: String,
    /// Calls into the team's services from teams traced or planned before it.
    pub calls_from_earlier_teams: i64,
    /// Share of user-visible request time spent in calls into the team's untraced services, 0–1.
    pub request_time_share: f64,
    pub score: f64,
    pub unlocks: Vec<String>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct RolloutPlan {
    pub start_unix_nano: u64,
    pub end_unix_nano: u64,
    pub teams: usize,
    /// Teams whose every known service sends spans.
    pub adopted: Vec<TeamProgress>,
    /// Teams with some services traced and some not (they also appear in the steps).
    pub partial: Vec<TeamProgress>,
    pub steps: Vec<PlanStep>,
}

fn pct(x: f64) -> String {
    if x > 0.0 && x < 0.001 { "<0.1%".into() } else { format!("{:.1}%", 100.0 * x) }
}

fn list(items: &[String]) -> String {
    match items.len() {
        0 => String::new(),
        1 => items[0].clone(),
        n => format!("{} and {}", items[..n - 1].join(", "), items[n - 1]),
    }
}

struct Graph {
    /// Team of each non-database service.
    team_of: BTreeMap<String, String>,
    traced: BTreeSet<String>,
    /// (caller, callee) → calls; callee canonical, databases left out.
    calls: BTreeMap<(String, String), i64>,
    /// Critical-path time of calls into services that send no spans, per callee.
    blind_time: BTreeMap<String, i64>,
    /// Entry point → requests (root SERVER/CONSUMER spans).
    entry_traffic: BTreeMap<String, i64>,
    total_request_time: i64,
    /// Entry operation → the untraced services its traces call.
    entry_gaps: BTreeMap<String, BTreeSet<String>>,
}

impl Graph {
    fn new(report: &CoverageReport, facts: &AdoptionFacts, catalog: &Catalog) -> Self {
        let mut team_of = BTreeMap::new();
        let mut traced = BTreeSet::new();
        for s in report.services.iter().filter(|s| !matches!(s.status, ServiceStatus::Database | ServiceStatus::External)) {
            let team = s.team.clone().unwrap_or_else(|| format!("(owner of {})", s.service));
            team_of.insert(s.service.clone(), team);
            if s.status == ServiceStatus::Instrumented {
                traced.insert(s.service.clone());
            }
        }
        let mut calls: BTreeMap<(String, String), i64> = BTreeMap::new();
        for c in &facts.calls {
            *calls.entry((c.caller.clone(), c.callee.clone())).or_default() += c.calls;
        }
        let mut blind_time: BTreeMap<String, i64> = BTreeMap::new();
        let mut entry_gaps: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for u in facts.unanswered.iter().filter(|u| !u.is_database) {
            let callee = catalog.canonical(&u.peer).to_string();
            if !team_of.contains_key(&callee) || u.caller == callee {
                continue;
            }
            *calls.entry((u.caller.clone(), callee.clone())).or_default() += u.calls;
            if !traced.contains(&callee) {
                *blind_time.entry(callee.clone()).or_default() += u.critical_path_nanos;
                entry_gaps.entry(format!("{} {}", u.entry_service, u.entry_operation)).or_default().insert(callee);
            }
        }
        let entries: BTreeSet<&str> = report.services.iter().filter(|s| s.customer_facing).map(|s| s.service.as_str()).collect();
        let mut entry_traffic: BTreeMap<String, i64> = BTreeMap::new();
        let mut total_request_time = 0;
        for r in facts.roots.iter().filter(|r| (r.kind == "server" || r.kind == "consumer") && entries.contains(r.service.as_str())) {
            *entry_traffic.entry(r.service.clone()).or_default() += r.spans;
            total_request_time += r.duration_nanos;
            entry_gaps.entry(format!("{} {}", r.service, r.operation)).or_default();
        }
        // A customer-facing service that sends no spans still is an entry point: its traffic is what its callers see.
        for s in report.services.iter().filter(|s| s.customer_facing && s.status != ServiceStatus::Instrumented) {
            entry_traffic.entry(s.service.clone()).or_insert(s.calls_in);
        }
        Self { team_of, traced, calls, blind_time, entry_traffic, total_request_time, entry_gaps }
    }

    fn services_of(&self, team: &str) -> Vec<String> {
        self.team_of.iter().filter(|(_, t)| *t == team).map(|(s, _)| s.clone()).collect()
    }

    fn untraced_of(&self, team: &str) -> Vec<String> {
        self.services_of(team).into_iter().filter(|s| !self.traced.contains(s)).collect()
    }

    /// Calls from traced services of `from` teams (and of the team itself when `own`) into
    /// the untraced services of `team`, per callee.
    fn calls_into(&self, team: &str, from: &BTreeSet<String>, own: bool) -> BTreeMap<String, i64> {
        let mut out = BTreeMap::new();
        for ((caller, callee), n) in &self.calls {
            let caller_team = self.team_of.get(caller);
            if self.team_of.get(callee).map(String::as_str) == Some(team)
                && !self.traced.contains(callee)
                && self.traced.contains(caller)
                && caller_team.is_some_and(|t| (from.contains(t) && t != team) || (own && t == team))
            {
                *out.entry(callee.clone()).or_default() += n;
            }
        }
        out
    }

    fn time_share(&self, services: &[String]) -> f64 {
        if self.total_request_time <= 0 {
            return 0.0;
        }
        let blind: i64 = services.iter().filter_map(|s| self.blind_time.get(s)).sum();
        blind as f64 / self.total_request_time as f64
    }
}

/// The plan for the window the report and facts describe.
pub fn rollout_plan(report: &CoverageReport, facts: &AdoptionFacts, catalog: &Catalog) -> RolloutPlan {
    let graph = Graph::new(report, facts, catalog);
    let teams: BTreeSet<String> = graph.team_of.values().cloned().collect();
    let mut adopted = Vec::new();
    let mut partial = Vec::new();
    let mut covered: BTreeSet<String> = BTreeSet::new();
    for team in &teams {
        let services = graph.services_of(team);
        let (traced, not_traced): (Vec<String>, Vec<String>) = services.into_iter().partition(|s| graph.traced.contains(s));
        let progress = TeamProgress { team: team.clone(), traced, not_traced };
        if progress.not_traced.is_empty() {
            covered.insert(team.clone());
            adopted.push(progress);
        } else if !progress.traced.is_empty() {
            partial.push(progress);
        }
    }
    let total_traffic: i64 = graph.entry_traffic.values().sum();
    let mut steps: Vec<PlanStep> = Vec::new();
    let mut remaining: BTreeSet<String> = teams.difference(&covered).cloned().collect();
    let mut done_entries: BTreeSet<String> =
        graph.entry_gaps.iter().filter(|(_, gaps)| gaps.is_empty()).map(|(entry, _)| entry.clone()).collect();
    let mut push = |steps: &mut Vec<PlanStep>,
                    covered: &mut BTreeSet<String>,
                    team: String,
                    reason,
                    rationale: String,
                    calls: i64,
                    share: f64,
                    score: f64| {
        let services = graph.untraced_of(&team);
        covered.insert(team.clone());
        let mut unlocks = Vec::new();
        if calls > 0 {
            unlocks.push(format!(
                "{calls} calls from traced services into {} continue as spans instead of ending at a client span",
                list(&services)
            ));
        }
        if share > 0.0 {
            unlocks.push(format!("{} of user-visible request time stops being a blind spot", pct(share)));
        }
        let newly: Vec<String> = graph
            .entry_gaps
            .iter()
            .filter(|(entry, gaps)| {
                !done_entries.contains(*entry) && gaps.iter().all(|g| graph.team_of.get(g).is_none_or(|t| covered.contains(t)))
            })
            .map(|(entry, _)| entry.clone())
            .collect();
        if !newly.is_empty() {
            unlocks.push(format!("fully traced, as far as today's traces reach: {}", list(&newly)));
            done_entries.extend(newly);
        }
        let unlocked_breaks: Vec<String> = report
            .breaks
            .iter()
            .filter(|b| b.callee_team.as_deref() == Some(&team) || b.caller_team.as_deref() == Some(&team))
            .map(|b| format!("{} → {} ({} calls)", b.caller, b.callee, b.broken_calls))
            .collect();
        if !unlocked_breaks.is_empty() {
            unlocks.push(format!("its propagation breaks to fix on the way: {}", list(&unlocked_breaks)));
        }
        steps.push(PlanStep {
            step: steps.len() + 1,
            team,
            services,
            reason,
            rationale,
            calls_from_earlier_teams: calls,
            request_time_share: share,
            score,
            unlocks,
        });
    };

    // 1. The entry point with the most user traffic.
    let mut entries: Vec<(&String, &i64)> = graph.entry_traffic.iter().collect();
    entries.sort_by(|a, b| {
        let tier = |s: &str| catalog.get(s).and_then(|e| e.tier).unwrap_or(u8::MAX);
        b.1.cmp(a.1).then(tier(a.0).cmp(&tier(b.0))).then(a.0.cmp(b.0))
    });
    let first = entries.first().map(|(service, requests)| ((*service).clone(), **requests));
    let first_team = first.as_ref().and_then(|(service, _)| graph.team_of.get(service).cloned());
    if let (Some((service, requests)), Some(team)) = (&first, &first_team) {
        if remaining.remove(team) {
            let others: Vec<String> = entries.iter().skip(1).take(3).map(|(s, n)| format!("{s} ({n})")).collect();
            let rationale = format!(
                "{team} owns {service}, the customer-facing entry point with the most user traffic: {requests} requests, {} of all \
                 requests entering the system{}. Its latency and errors are what users feel, and its traces pay off before any other \
                 team joins.",
                pct(*requests as f64 / total_traffic.max(1) as f64),
                if others.is_empty() { String::new() } else { format!(" (next: {})", others.join(", ")) }
            );
            let services = graph.untraced_of(team);
            let share = graph.time_share(&services);
            let calls = graph.calls_into(team, &covered, true).values().sum();
            push(&mut steps, &mut covered, team.clone(), StepReason::EntryPoint, rationale, calls, share, 1.0);
        }
    }

    // 2. The largest dependency of the first team.
    if let Some(first_team) = &first_team {
        let from: BTreeSet<String> = [first_team.clone()].into();
        let mut best: Option<(String, String, i64)> = None;
        for team in &remaining {
            for (service, calls) in graph.calls_into(team, &from, false) {
                if best.as_ref().is_none_or(|(_, s, n)| calls > *n || (calls == *n && service < *s)) {
                    best = Some((team.clone(), service, calls));
                }
            }
        }
        if let Some((team, service, calls)) = best {
            remaining.remove(&team);
            let first_calls: i64 = graph
                .calls
                .iter()
                .filter(|((caller, callee), _)| {
                    graph.team_of.get(caller) == Some(first_team) && graph.team_of.get(callee).is_some_and(|t| t != first_team)
                })
                .map(|(_, n)| n)
                .sum();
            let share = graph.time_share(&graph.untraced_of(&team));
            let rationale = format!(
                "{team} owns {service}, the largest dependency of {first_team}: {calls} of {first_team}'s {first_calls} calls to other \
                 teams ({}) go to it{}. With {team} traced, {first_team} can follow a slow or failing request into the next layer.",
                pct(calls as f64 / first_calls.max(1) as f64),
                if share > 0.0 {
                    format!(", and {} of user-visible request time is spent waiting on it", pct(share))
                } else {
                    String::new()
                }
            );
            push(
                &mut steps,
                &mut covered,
                team,
                StepReason::LargestDependency,
                rationale,
                calls,
                share,
                calls as f64 / first_calls.max(1) as f64,
            );
        }
    }

    // 3. Then in dependency order.
    while !remaining.is_empty() {
        let outgoing: i64 = remaining.iter().map(|t| graph.calls_into(t, &covered, true).values().sum::<i64>()).sum();
        let mut best: Option<(f64, String, BTreeMap<String, i64>, f64)> = None;
        for team in &remaining {
            let into = graph.calls_into(team, &covered, true);
            let calls: i64 = into.values().sum();
            if calls == 0 {
                continue;
            }
            let share = graph.time_share(&graph.untraced_of(team));
            let score = 0.5 * calls as f64 / outgoing.max(1) as f64 + 0.5 * share;
            if best.as_ref().is_none_or(|(s, t, _, _)| score > *s + 1e-12 || ((score - *s).abs() <= 1e-12 && team < t)) {
                best = Some((score, team.clone(), into, share));
            }
        }
        let Some((score, team, into, share)) = best else { break };
        remaining.remove(&team);
        let calls: i64 = into.values().sum();
        let mut callers: BTreeMap<String, i64> = BTreeMap::new();
        for ((caller, callee), n) in &graph.calls {
            if into.contains_key(callee)
                && graph.traced.contains(caller)
                && graph.team_of.get(caller).is_some_and(|t| covered.contains(t) || *t == team)
            {
                *callers.entry(graph.team_of[caller].clone()).or_default() += n;
            }
        }
        let callers: Vec<String> = callers.into_iter().map(|(t, n)| format!("{t} ({n})")).collect();
        let targets: Vec<String> = into.iter().map(|(s, n)| format!("{s} ({n} calls)")).collect();
        let rationale = format!(
            "{team} is the most depended upon of the teams left: {calls} calls from traced services go to {} ({} of all calls \
             into services not traced yet), from {}{}. Score {:.2} = ½·call share + ½·request-time share.",
            list(&targets),
            pct(calls as f64 / outgoing.max(1) as f64),
            list(&callers),
            if share > 0.0 { format!("; {} of user-visible request time is spent in it", pct(share)) } else { String::new() },
            score
        );
        push(&mut steps, &mut covered, team, StepReason::DependencyOrder, rationale, calls, share, score);
    }

    // 4. Teams no traced service reaches yet.
    for team in std::mem::take(&mut remaining) {
        let services = graph.untraced_of(&team);
        let tiers: Vec<String> =
            services.iter().filter_map(|s| catalog.get(s).and_then(|e| e.tier).map(|t| format!("{s}: tier {t}"))).collect();
        let rationale = format!(
            "No traced service calls {} yet, so its place cannot be read from traces: it is known from the catalog{}. \
             Its position will sharpen as the teams before it adopt tracing.",
            list(&services),
            if tiers.is_empty() { String::new() } else { format!(" ({})", tiers.join(", ")) }
        );
        push(&mut steps, &mut covered, team, StepReason::CatalogOnly, rationale, 0, 0.0, 0.0);
    }

    RolloutPlan { start_unix_nano: facts.start_unix_nano, end_unix_nano: facts.end_unix_nano, teams: teams.len(), adopted, partial, steps }
}

impl RolloutPlan {
    /// The plan as a Markdown document to share with the teams being scheduled.
    pub fn to_markdown(&self) -> String {
        let mut out = String::from("# Tracing rollout plan\n\n");
        let adopted: Vec<String> = self.adopted.iter().map(|t| t.team.clone()).collect();
        out.push_str(&format!("{} of {} teams trace all their services", self.adopted.len(), self.teams));
        if adopted.is_empty() {
            out.push_str(".\n");
        } else {
            out.push_str(&format!(": {}.\n", list(&adopted)));
        }
        for team in &self.partial {
            out.push_str(&format!("- {} has started: {} traced; not yet {}.\n", team.team, list(&team.traced), list(&team.not_traced)));
        }
        if self.steps.is_empty() {
            out.push_str("\nEvery team known to Clew traces its services: nothing left to plan.\n");
            return out;
        }
        out.push_str("\n## Order\n\n| Step | Team | Services to instrument | Why |\n|---|---|---|---|\n");
        for step in &self.steps {
            out.push_str(&format!("| {} | {} | {} | {} |\n", step.step, step.team, step.services.join(", "), step.reason.label()));
        }
        for step in &self.steps {
            out.push_str(&format!("\n## {}. {}\n\n{}\n", step.step, step.team, step.rationale));
            if !step.unlocks.is_empty() {
                out.push_str("\nWhat it unlocks:\n");
                for unlock in &step.unlocks {
                    out.push_str(&format!("- {unlock}\n"));
                }
            }
        }
        out
    }

    pub fn to_table(&self) -> String {
        let mut rows = vec![["STEP".to_string(), "TEAM".into(), "SERVICES".into(), "CALLS IN".into(), "TIME SHARE".into(), "WHY".into()]];
        for step in &self.steps {
            rows.push([
                step.step.to_string(),
                step.team.clone(),
                step.services.join(","),
                step.calls_from_earlier_teams.to_string(),
                pct(step.request_time_share),
                step.reason.label().into(),
            ]);
        }
        crate::render::table(&rows)
    }
}
