//! The raw facts behind the adoption reports (coverage, propagation health, instrumentation
//! quality, the rollout plan) and the client directory: grouped counts over stored spans.
//! Turning them into findings and advice is the analysis layer's work.

use std::collections::{BTreeMap, BTreeSet};

use clew_model::{span_flags, trace_flags};
use clew_store::{EdgeKind, RootMinute, ServiceCounts, UnansweredMinute, in_minutes};
use serde::{Deserialize, Serialize};

use crate::metrics::{ERROR, VIRTUAL_PEER, first_minute, rows};
use crate::{QueryEngine, QueryError, quote};

pub use clew_model::DEPRECATED_ATTRIBUTES;

/// Per instrumented service: volumes, trace health and convention gaps, over a window.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
pub struct ServiceFacts {
    pub service: String,
    /// The first owner attribute found on its resources (most common value).
    pub owner: Option<String>,
    pub spans: i64,
    pub traces: i64,
    /// Traces with one root, no orphan and no call into an instrumented service that lost its context.
    pub whole_traces: i64,
    /// Whole traces whose every call reaches an instrumented service or a database.
    pub covered_traces: i64,
    /// SERVER and CONSUMER spans.
    pub entry_spans: i64,
    /// SERVER and CONSUMER spans without a parent.
    pub root_entry_spans: i64,
    pub orphan_spans: i64,
    /// CLIENT and PRODUCER spans.
    pub exit_spans: i64,
    pub unmatched_exit_spans: i64,
    pub error_spans: i64,
    /// Spans whose resource has no `service.version`.
    pub missing_version: i64,
    /// Spans whose resource has neither `deployment.environment.name` nor `deployment.environment`.
    pub missing_environment: i64,
    /// HTTP spans that failed (5xx; 4xx too on the client side) without an error status.
    pub errors_without_status: i64,
    /// SERVER spans with an HTTP method but no `http.route`.
    pub server_without_route: i64,
    /// INTERNAL spans that describe an incoming HTTP request (method and route): should be SERVER.
    pub internal_like_server: i64,
    /// INTERNAL spans that describe an outgoing call (peer, address or database): should be CLIENT.
    pub internal_like_client: i64,
    pub first_seen_unix_nano: i64,
    pub last_seen_unix_nano: i64,
}

/// Spans of a service that carry a deprecated attribute name.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct DeprecatedUse {
    pub service: String,
    pub key: String,
    pub spans: i64,
}

/// CLIENT/PRODUCER spans that no SERVER/CONSUMER span answered, grouped by caller, operation and the peer they name.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct UnansweredCalls {
    pub caller: String,
    pub operation: String,
    pub peer: String,
    pub is_database: bool,
    /// The entry point (root service and operation) of the traces these calls are in.
    pub entry_service: String,
    pub entry_operation: String,
    pub calls: i64,
    pub errors: i64,
    pub traces: i64,
    pub duration_nanos: i64,
    pub critical_path_nanos: i64,
    /// Root SERVER/CONSUMER spans of the peer (when it is instrumented) that started while one of these calls was in flight.
    pub roots_in_peer: i64,
}

/// Answered calls between instrumented services: SERVER/CONSUMER spans whose parent is in another service.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ServiceCall {
    pub caller: String,
    pub callee: String,
    pub calls: i64,
    pub errors: i64,
    pub critical_path_nanos: i64,
}

/// Spans without a parent, by service and operation.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RootOperation {
    pub service: String,
    pub operation: String,
    pub kind: String,
    pub spans: i64,
    pub errors: i64,
    pub duration_nanos: i64,
}

/// Everything the adoption reports read, for one window.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
pub struct AdoptionFacts {
    pub start_unix_nano: u64,
    pub end_unix_nano: u64,
    pub services: Vec<ServiceFacts>,
    pub deprecated: Vec<DeprecatedUse>,
    pub unanswered: Vec<UnansweredCalls>,
    pub calls: Vec<ServiceCall>,
    pub roots: Vec<RootOperation>,
}

/// One value of an attribute in one service.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct DirectoryEntry {
    pub service: String,
    pub value: String,
    pub spans: i64,
    pub first_seen_unix_nano: i64,
    pub last_seen_unix_nano: i64,
}

/// Where the client directory reads a key from.
fn directory_value(key: &str) -> String {
    match key {
        "scope.name" | "otel.scope.name" | "otel.library.name" => "scope_name".into(),
        "scope.version" | "otel.scope.version" | "otel.library.version" => "scope_version".into(),
        "service.name" => "service_name".into(),
        _ => format!("coalesce(attributes[{k}], resource_attributes[{k}])", k = quote(key)),
    }
}

/// The SQL for a span's team: the first of `owner_attributes` its resource has, read from the
/// table named by `prefix` (`""` or `"s."`).
fn owner_column(owner_attributes: &[String], prefix: &str) -> String {
    let keys: Vec<String> = owner_attributes.iter().map(|k| format!("{prefix}resource_attributes[{}]", quote(k))).collect();
    match keys.len() {
        0 => "CAST(NULL AS VARCHAR)".to_string(),
        1 => keys[0].clone(),
        _ => format!("coalesce({})", keys.join(", ")),
    }
}

impl QueryEngine {
    /// The adoption facts of spans that started within [start, end] (Unix ns), counted in
    /// whole minutes from the store's rollups. `owner_attributes` are the resource attributes
    /// that name a service's team, in order of preference.
    pub async fn adoption_facts(
        &self,
        start_unix_nano: u64,
        end_unix_nano: u64,
        owner_attributes: &[String],
    ) -> Result<AdoptionFacts, QueryError> {
        let (first, last) = (first_minute(start_unix_nano), end_unix_nano.min(i64::MAX as u64) as i64);
        let stored = self.storage().rollups(first, last, clew_store::RollupRows::Merged).await?;
        // A part whose every minute is in the window is read merged across its minutes.
        let parts: Vec<&clew_store::Rollup> = stored.iter().map(|part| part.for_window(first, last)).collect();
        // Per service: span counts and the owner attributes' values.
        let mut counts: BTreeMap<&str, (ServiceCounts, BTreeMap<&str, BTreeSet<&str>>)> = BTreeMap::new();
        for part in &parts {
            for row in in_minutes(&part.adoption.services, first, last, |s| s.minute_unix_nano) {
                let (total, owners) = counts.entry(row.service.as_str()).or_default();
                total.merge(&row.counts);
                for (key, value) in &row.resource {
                    if owner_attributes.iter().any(|k| k == key) {
                        owners.entry(key.as_str()).or_default().insert(value.as_str());
                    }
                }
            }
        }
        // Per service: its traces, whole (one root, no orphan, no call into an instrumented
        // service that lost its context) and covered (whole, and every call reaches an
        // instrumented service or a database).
        let mut traces: BTreeMap<&str, (i64, i64, i64)> = BTreeMap::new();
        for part in &parts {
            for class in in_minutes(&part.adoption.traces, first, last, |t| t.minute_unix_nano) {
                let broken = class.unanswered_peers.iter().any(|peer| counts.contains_key(peer.as_str()));
                let whole = class.whole_shape && !broken;
                let entry = traces.entry(class.service.as_str()).or_default();
                entry.0 += class.traces as i64;
                entry.1 += if whole { class.traces as i64 } else { 0 };
                entry.2 += if whole && !class.uncovered { class.traces as i64 } else { 0 };
            }
        }
        let services = counts
            .iter()
            .map(|(service, (c, owners))| {
                let owner = owner_attributes
                    .iter()
                    .find_map(|key| owners.get(key.as_str()).and_then(|values| values.iter().next_back()))
                    .map(|v| v.to_string());
                let (traces, whole_traces, covered_traces) = traces.get(service).copied().unwrap_or_default();
                ServiceFacts {
                    service: service.to_string(),
                    owner,
                    spans: c.spans as i64,
                    traces,
                    whole_traces,
                    covered_traces,
                    entry_spans: c.entry_spans as i64,
                    root_entry_spans: c.root_entry_spans as i64,
                    orphan_spans: c.orphan_spans as i64,
                    exit_spans: c.exit_spans as i64,
                    unmatched_exit_spans: c.unmatched_exit_spans as i64,
                    error_spans: c.error_spans as i64,
                    missing_version: c.missing_version as i64,
                    missing_environment: c.missing_environment as i64,
                    errors_without_status: c.errors_without_status as i64,
                    server_without_route: c.server_without_route as i64,
                    internal_like_server: c.internal_like_server as i64,
                    internal_like_client: c.internal_like_client as i64,
                    first_seen_unix_nano: c.first_seen_unix_nano,
                    last_seen_unix_nano: c.last_seen_unix_nano,
                }
            })
            .collect::<Vec<_>>();
        let mut deprecated: BTreeMap<(&str, &str), i64> = BTreeMap::new();
        let mut unanswered: BTreeMap<(&str, &str, &str, &str, &str), UnansweredMinute> = BTreeMap::new();
        let mut calls: BTreeMap<(&str, &str), ServiceCall> = BTreeMap::new();
        let mut roots: BTreeMap<(&str, &str, &str), RootMinute> = BTreeMap::new();
        for part in &parts {
            for row in in_minutes(&part.adoption.deprecated, first, last, |d| d.minute_unix_nano) {
                *deprecated.entry((row.service.as_str(), row.key.as_str())).or_default() += row.spans as i64;
            }
            for row in in_minutes(&part.adoption.unanswered, first, last, |u| u.minute_unix_nano) {
                match unanswered.get_mut(&row.key()) {
                    Some(total) => total.add(row),
                    None => {
                        unanswered.insert(row.key(), row.clone());
                    }
                }
            }
            for row in in_minutes(&part.adoption.roots, first, last, |r| r.minute_unix_nano) {
                match roots.get_mut(&row.key()) {
                    Some(total) => total.add(row),
                    None => {
                        roots.insert(row.key(), row.clone());
                    }
                }
            }
            for row in in_minutes(&part.edges, first, last, |e| e.minute_unix_nano) {
                let (EdgeKind::Call, Some(caller)) = (row.kind, row.parent.as_deref()) else { continue };
                let call = calls.entry((caller, &*row.child)).or_insert_with(|| ServiceCall {
                    caller: caller.to_string(),
                    callee: row.child.to_string(),
                    calls: 0,
                    errors: 0,
                    critical_path_nanos: 0,
                });
                call.calls += row.calls as i64;
                call.errors += row.errors as i64;
                call.critical_path_nanos = call.critical_path_nanos.saturating_add(row.critical_path_nanos);
            }
        }
        let unanswered: Vec<UnansweredCalls> = unanswered
            .into_values()
            .map(|u| UnansweredCalls {
                caller: u.caller,
                operation: u.operation,
                peer: u.peer,
                is_database: u.is_database,
                entry_service: u.entry_service,
                entry_operation: u.entry_operation,
                calls: u.calls as i64,
                errors: u.errors as i64,
                traces: u.traces as i64,
                duration_nanos: u.duration_nanos,
                critical_path_nanos: u.critical_path_nanos,
                roots_in_peer: u.roots_in_peer as i64,
            })
            .collect();
        let roots = roots
            .into_values()
            .map(|r| RootOperation {
                service: r.service,
                operation: r.operation,
                kind: r.kind,
                spans: r.spans as i64,
                errors: r.errors as i64,
                duration_nanos: r.duration_nanos,
            })
            .collect();
        Ok(AdoptionFacts {
            start_unix_nano,
            end_unix_nano,
            deprecated: deprecated
                .into_iter()
                .map(|((service, key), spans)| DeprecatedUse { service: service.to_string(), key: key.to_string(), spans })
                .collect(),
            services,
            unanswered,
            calls: calls.into_values().collect(),
            roots,
        })
    }

    /// The values of `key` per service, with counts and when each was first and last seen:
    /// "who still runs SDK 1.24", "which services talk to postgresql".
    pub async fn attribute_directory(
        &self,
        key: &str,
        start_unix_nano: u64,
        end_unix_nano: u64,
    ) -> Result<Vec<DirectoryEntry>, QueryError> {
        if key.is_empty() || key.len() > 256 {
            return Err(QueryError::Invalid("the attribute key must have 1 to 256 characters".into()));
        }
        let window = format!("start_time_unix_nano >= {start_unix_nano} AND start_time_unix_nano <= {end_unix_nano}");
        let value = directory_value(key);
        let sql = format!(
            "SELECT service_name AS service, CAST({value} AS VARCHAR) AS value, count(*) AS spans, \
               min(start_time_unix_nano) AS first_seen_unix_nano, max(start_time_unix_nano) AS last_seen_unix_nano \
             FROM spans WHERE {window} AND {value} IS NOT NULL AND {value} <> '' \
             GROUP BY service_name, {value} ORDER BY service_name, spans DESC, value LIMIT 10000"
        );
        rows(&self.internal_sql(&sql).await?)
    }
}

/// Which requests a critical operation is: root spans of `service` named `operation`, or
/// with `http.route` = `route`, that also satisfy `filter_sql` (a TraceQL filter as SQL, see
/// [`crate::traceql::exact_filter`]).
#[derive(Debug, Clone, Default)]
pub struct EntryPredicate {
    pub service: String,
    pub operation: Option<String>,
    pub route: Option<String>,
    pub filter_sql: Option<String>,
}

impl EntryPredicate {
    pub(crate) fn sql(&self) -> String {
        let mut out = format!("parent_span_id IS NULL AND service_name = {}", quote(&self.service));
        if let Some(operation) = &self.operation {
            out.push_str(&format!(" AND name = {}", quote(operation)));
        }
        if let Some(route) = &self.route {
            out.push_str(&format!(" AND http_route = {}", quote(route)));
        }
        if let Some(filter) = &self.filter_sql {
            out.push_str(&format!(" AND ({filter})"));
        }
        out
    }
}

/// Requests, errors and duration percentiles of a set of requests.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
pub struct RequestStats {
    pub requests: i64,
    pub errors: i64,
    pub p50_nanos: f64,
    pub p95_nanos: f64,
    pub p99_nanos: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RequestPoint {
    pub time_unix_nano: i64,
    pub requests: i64,
    pub errors: i64,
    pub p95_nanos: f64,
}

/// A service reached by the operation's requests.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ReachedService {
    pub service: String,
    pub owner: Option<String>,
    /// Requests whose trace has a span of it.
    pub traces: i64,
    pub spans: i64,
}

/// Calls made within the operation's requests that no span answered.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct OperationGap {
    pub caller: String,
    pub peer: String,
    pub is_database: bool,
    pub calls: i64,
    pub traces: i64,
    pub critical_path_nanos: i64,
}

/// What the reports of a critical operation read, for one window and the one before it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
pub struct OperationFacts {
    pub start_unix_nano: u64,
    pub end_unix_nano: u64,
    pub step_nanos: u64,
    pub stats: RequestStats,
    /// The same length of time just before `start`.
    pub previous: RequestStats,
    pub series: Vec<RequestPoint>,
    pub services: Vec<ReachedService>,
    pub gaps: Vec<OperationGap>,
    /// Requests whose trace has one root, no orphan and no call left unanswered but by databases.
    pub whole_requests: i64,
    /// Every service that sent spans in the window: a peer among them that left a call
    /// unanswered lost the context, it is not uninstrumented.
    pub instrumented: Vec<String>,
}

impl QueryEngine {
    /// The facts of one critical operation over [start, end] in buckets of `step`.
    pub async fn operation_facts(
        &self,
        predicate: &EntryPredicate,
        start_unix_nano: u64,
        end_unix_nano: u64,
        step_nanos: u64,
        owner_attributes: &[String],
    ) -> Result<OperationFacts, QueryError> {
        if step_nanos == 0 || end_unix_nano <= start_unix_nano || (end_unix_nano - start_unix_nano) / step_nanos > 2_000 {
            return Err(QueryError::Invalid("the window must end after it starts, in at most 2000 steps".into()));
        }
        let entry = predicate.sql();
        let levels = [(0.5, "p50_nanos"), (0.95, "p95_nanos"), (0.99, "p99_nanos")];
        let stats_in = |start: u64, end: u64| {
            format!(
                "SELECT count(*) AS requests, coalesce(sum({ERROR}), 0) AS errors, {} FROM spans \
                 WHERE {entry} AND start_time_unix_nano >= {start} AND start_time_unix_nano < {end}",
                crate::metrics::percentiles("duration_nanos", &levels)
            )
        };
        let previous_start = start_unix_nano.saturating_sub(end_unix_nano - start_unix_nano);
        let window = format!("start_time_unix_nano >= {start_unix_nano} AND start_time_unix_nano < {end_unix_nano}");
        let series_sql = format!(
            "SELECT {start_unix_nano} + ((start_time_unix_nano - {start_unix_nano}) / {step_nanos}) * {step_nanos} AS time_unix_nano, \
               count(*) AS requests, sum({ERROR}) AS errors, coalesce(approx_percentile_cont(duration_nanos, 0.95), 0.0) AS p95_nanos \
             FROM spans WHERE {entry} AND {window} GROUP BY 1 ORDER BY 1"
        );
        let owner = owner_column(owner_attributes, "s.");
        // The requests' traces, whole: a span of a matched trace counts wherever its own start falls.
        let matched = format!("matched AS (SELECT DISTINCT trace_id FROM spans WHERE {entry} AND {window})");
        let services_sql = format!(
            "WITH {matched} SELECT s.service_name AS service, max({owner}) AS owner, count(DISTINCT s.trace_id) AS traces, count(*) AS spans \
             FROM spans s JOIN matched m ON s.trace_id = m.trace_id GROUP BY s.service_name ORDER BY traces DESC, service"
        );
        let unmatched = span_flags::UNMATCHED_CLIENT;
        let gaps_sql = format!(
            "WITH {matched} SELECT s.service_name AS caller, {peer} AS peer, bool_or(s.db_system IS NOT NULL) AS is_database, \
               count(*) AS calls, count(DISTINCT s.trace_id) AS traces, sum(s.critical_path_nanos) AS critical_path_nanos \
             FROM spans s JOIN matched m ON s.trace_id = m.trace_id \
             WHERE (s.span_flags & {unmatched}) <> 0 AND {peer} IS NOT NULL GROUP BY 1, 2 ORDER BY traces DESC, caller, peer",
            peer = VIRTUAL_PEER
        );
        let broken = trace_flags::MULTIPLE_ROOTS | trace_flags::HAS_ORPHANS | trace_flags::NO_ROOT;
        let whole_sql = format!(
            "WITH {matched}, holes AS (SELECT DISTINCT s.trace_id FROM spans s JOIN matched m ON s.trace_id = m.trace_id \
               WHERE ((s.span_flags & {unmatched}) <> 0 AND s.db_system IS NULL) OR (s.trace_flags & {broken}) <> 0) \
             SELECT (SELECT count(*) FROM matched) - (SELECT count(*) FROM holes) AS whole_requests"
        );
        let instrumented_sql = format!("SELECT DISTINCT service_name AS name FROM spans WHERE {window} ORDER BY name");
        let (stats_sql, previous_sql) = (stats_in(start_unix_nano, end_unix_nano), stats_in(previous_start, start_unix_nano));
        // The totals, the series and the shares are read from the same spans.
        let pinned = self.pinned().await?;
        let (stats, previous, series, services, gaps, whole, instrumented) = tokio::try_join!(
            pinned.internal_sql(&stats_sql),
            pinned.internal_sql(&previous_sql),
            pinned.internal_sql(&series_sql),
            pinned.internal_sql(&services_sql),
            pinned.internal_sql(&gaps_sql),
            pinned.internal_sql(&whole_sql),
            pinned.internal_sql(&instrumented_sql)
        )?;
        #[derive(Deserialize)]
        struct Whole {
            whole_requests: i64,
        }
        #[derive(Deserialize)]
        struct Name {
            name: String,
        }
        Ok(OperationFacts {
            start_unix_nano,
            end_unix_nano,
            step_nanos,
            stats: rows::<RequestStats>(&stats)?.pop().unwrap_or_default(),
            previous: rows::<RequestStats>(&previous)?.pop().unwrap_or_default(),
            series: rows(&series)?,
            services: rows(&services)?,
            gaps: rows(&gaps)?,
            whole_requests: rows::<Whole>(&whole)?.pop().map_or(0, |w| w.whole_requests),
            instrumented: rows::<Name>(&instrumented)?.into_iter().map(|n| n.name).collect(),
        })
    }
}
