//! The raw facts behind the adoption reports (coverage, propagation health, instrumentation
//! quality, the rollout plan) and the client directory: grouped counts over stored spans.
//! Turning them into findings and advice is the analysis layer's work.

use clew_model::{span_flags, trace_flags};
use serde::{Deserialize, Serialize};

use crate::metrics::{ERROR, VIRTUAL_PEER, rows};
use crate::{QueryEngine, QueryError, quote};

/// Attribute names that newer semantic conventions replaced: (old, new).
pub const DEPRECATED_ATTRIBUTES: &[(&str, &str)] = &[
    ("http.method", "http.request.method"),
    ("http.status_code", "http.response.status_code"),
    ("http.url", "url.full"),
    ("http.target", "url.path and url.query"),
    ("http.scheme", "url.scheme"),
    ("http.host", "server.address"),
    ("http.client_ip", "client.address"),
    ("http.user_agent", "user_agent.original"),
    ("http.flavor", "network.protocol.version"),
    ("http.request_content_length", "http.request.body.size"),
    ("http.response_content_length", "http.response.body.size"),
    ("net.peer.name", "server.address"),
    ("net.peer.port", "server.port"),
    ("net.host.name", "server.address"),
    ("net.host.port", "server.port"),
    ("net.sock.peer.addr", "network.peer.address"),
    ("db.statement", "db.query.text"),
    ("db.name", "db.namespace"),
    ("db.operation", "db.operation.name"),
    ("messaging.destination", "messaging.destination.name"),
];

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
    /// The adoption facts of spans that started within [start, end]. `owner_attributes` are the
    /// resource attributes that name a service's team, in order of preference.
    pub async fn adoption_facts(
        &self,
        start_unix_nano: u64,
        end_unix_nano: u64,
        owner_attributes: &[String],
    ) -> Result<AdoptionFacts, QueryError> {
        let window = format!("start_time_unix_nano >= {start_unix_nano} AND start_time_unix_nano <= {end_unix_nano}");
        let unmatched = span_flags::UNMATCHED_CLIENT;
        let broken_shape = trace_flags::MULTIPLE_ROOTS | trace_flags::HAS_ORPHANS | trace_flags::NO_ROOT;
        let owner = owner_column(owner_attributes, "");
        let http_failed = "(http_status_code >= 500 OR (kind = 'client' AND http_status_code >= 400))";
        let services_sql = format!(
            "WITH instrumented AS (SELECT DISTINCT service_name AS name FROM spans WHERE {window}), \
             unanswered AS ( \
               SELECT trace_id, {VIRTUAL_PEER} AS peer, db_system IS NULL AS not_database FROM spans \
               WHERE {window} AND (span_flags & {unmatched}) <> 0), \
             gaps AS ( \
               SELECT u.trace_id, max(CASE WHEN i.name IS NOT NULL THEN 1 ELSE 0 END) AS broken, \
                 max(CASE WHEN u.not_database THEN 1 ELSE 0 END) AS uncovered \
               FROM unanswered u LEFT JOIN instrumented i ON u.peer = i.name GROUP BY u.trace_id), \
             per_service AS ( \
               SELECT service_name, trace_id, count(*) AS spans, \
                 sum(CASE WHEN kind IN ('server', 'consumer') THEN 1 ELSE 0 END) AS entry_spans, \
                 sum(CASE WHEN kind IN ('server', 'consumer') AND parent_span_id IS NULL THEN 1 ELSE 0 END) AS root_entry_spans, \
                 sum(CASE WHEN (span_flags & {orphan}) <> 0 THEN 1 ELSE 0 END) AS orphan_spans, \
                 sum(CASE WHEN kind IN ('client', 'producer') THEN 1 ELSE 0 END) AS exit_spans, \
                 sum(CASE WHEN (span_flags & {unmatched}) <> 0 THEN 1 ELSE 0 END) AS unmatched_exit_spans, \
                 sum(CASE WHEN status_code = 'error' THEN 1 ELSE 0 END) AS error_spans, \
                 sum(CASE WHEN resource_attributes['service.version'] IS NULL THEN 1 ELSE 0 END) AS missing_version, \
                 sum(CASE WHEN resource_attributes['deployment.environment.name'] IS NULL \
                          AND resource_attributes['deployment.environment'] IS NULL THEN 1 ELSE 0 END) AS missing_environment, \
                 sum(CASE WHEN {http_failed} AND status_code <> 'error' THEN 1 ELSE 0 END) AS errors_without_status, \
                 sum(CASE WHEN kind = 'server' AND http_method IS NOT NULL AND http_route IS NULL THEN 1 ELSE 0 END) AS server_without_route, \
                 sum(CASE WHEN kind = 'internal' AND http_method IS NOT NULL AND http_route IS NOT NULL THEN 1 ELSE 0 END) AS internal_like_server, \
                 sum(CASE WHEN kind = 'internal' AND (peer_service IS NOT NULL OR server_address IS NOT NULL OR db_system IS NOT NULL) \
                          THEN 1 ELSE 0 END) AS internal_like_client, \
                 max({owner}) AS owner, max(trace_flags & {broken_shape}) AS shape, \
                 min(start_time_unix_nano) AS first_seen, max(start_time_unix_nano) AS last_seen \
               FROM spans WHERE {window} GROUP BY service_name, trace_id) \
             SELECT s.service_name AS service, max(s.owner) AS owner, sum(s.spans) AS spans, count(*) AS traces, \
               sum(CASE WHEN coalesce(g.broken, 0) = 0 AND s.shape = 0 THEN 1 ELSE 0 END) AS whole_traces, \
               sum(CASE WHEN coalesce(g.broken, 0) = 0 AND s.shape = 0 AND coalesce(g.uncovered, 0) = 0 THEN 1 ELSE 0 END) AS covered_traces, \
               sum(s.entry_spans) AS entry_spans, sum(s.root_entry_spans) AS root_entry_spans, sum(s.orphan_spans) AS orphan_spans, \
               sum(s.exit_spans) AS exit_spans, sum(s.unmatched_exit_spans) AS unmatched_exit_spans, sum(s.error_spans) AS error_spans, \
               sum(s.missing_version) AS missing_version, sum(s.missing_environment) AS missing_environment, \
               sum(s.errors_without_status) AS errors_without_status, sum(s.server_without_route) AS server_without_route, \
               sum(s.internal_like_server) AS internal_like_server, sum(s.internal_like_client) AS internal_like_client, \
               min(s.first_seen) AS first_seen_unix_nano, max(s.last_seen) AS last_seen_unix_nano \
             FROM per_service s LEFT JOIN gaps g ON s.trace_id = g.trace_id \
             GROUP BY s.service_name ORDER BY s.service_name",
            orphan = span_flags::ORPHAN,
        );
        let keys: Vec<String> = DEPRECATED_ATTRIBUTES.iter().map(|(old, _)| quote(old)).collect();
        let deprecated_sql = format!(
            "SELECT service_name AS service, key, count(*) AS spans FROM \
               (SELECT service_name, unnest(map_keys(attributes)) AS key FROM spans WHERE {window}) \
             WHERE key IN ({}) GROUP BY service_name, key ORDER BY service_name, key",
            keys.join(", ")
        );
        let unanswered_sql = format!(
            "WITH calls AS ( \
               SELECT service_name AS caller, name AS operation, {VIRTUAL_PEER} AS peer, db_system IS NOT NULL AS is_database, \
                 start_time_unix_nano AS s, end_time_unix_nano AS e, status_code, duration_nanos, critical_path_nanos, span_id, \
                 trace_id, trace_root_service, trace_root_name \
               FROM spans WHERE {window} AND (span_flags & {unmatched}) <> 0 AND {VIRTUAL_PEER} IS NOT NULL), \
             roots AS ( \
               SELECT service_name, start_time_unix_nano AS s FROM spans \
               WHERE {window} AND parent_span_id IS NULL AND kind IN ('server', 'consumer')), \
             contained AS ( \
               SELECT c.span_id, count(*) AS roots FROM calls c JOIN roots r ON r.service_name = c.peer AND r.s >= c.s AND r.s <= c.e \
               GROUP BY c.span_id) \
             SELECT c.caller, c.operation, c.peer, bool_or(c.is_database) AS is_database, \
               c.trace_root_service AS entry_service, c.trace_root_name AS entry_operation, count(*) AS calls, \
               sum(CASE WHEN c.status_code = 'error' THEN 1 ELSE 0 END) AS errors, count(DISTINCT c.trace_id) AS traces, \
               sum(c.duration_nanos) AS duration_nanos, sum(c.critical_path_nanos) AS critical_path_nanos, \
               coalesce(sum(k.roots), 0) AS roots_in_peer \
             FROM calls c LEFT JOIN contained k ON c.span_id = k.span_id \
             GROUP BY c.caller, c.operation, c.peer, c.trace_root_service, c.trace_root_name \
             ORDER BY c.caller, c.operation, c.peer, entry_service, entry_operation"
        );
        let roots_sql = format!(
            "SELECT service_name AS service, name AS operation, kind, count(*) AS spans, \
               sum(CASE WHEN status_code = 'error' THEN 1 ELSE 0 END) AS errors, sum(duration_nanos) AS duration_nanos \
             FROM spans WHERE {window} AND parent_span_id IS NULL GROUP BY service_name, name, kind ORDER BY service_name, name"
        );
        let calls_sql = format!(
            "SELECT parent_service AS caller, service_name AS callee, count(*) AS calls, \
               sum(CASE WHEN status_code = 'error' THEN 1 ELSE 0 END) AS errors, sum(critical_path_nanos) AS critical_path_nanos \
             FROM spans WHERE {window} AND parent_service IS NOT NULL AND parent_service <> service_name AND kind IN ('server', 'consumer') \
             GROUP BY parent_service, service_name ORDER BY caller, callee"
        );
        let (services, deprecated, unanswered, calls, roots) = tokio::try_join!(
            self.internal_sql(&services_sql),
            self.internal_sql(&deprecated_sql),
            self.internal_sql(&unanswered_sql),
            self.internal_sql(&calls_sql),
            self.internal_sql(&roots_sql)
        )?;
        Ok(AdoptionFacts {
            start_unix_nano,
            end_unix_nano,
            services: rows(&services)?,
            deprecated: rows(&deprecated)?,
            unanswered: rows(&unanswered)?,
            calls: rows(&calls)?,
            roots: rows(&roots)?,
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
/// with `http.route` = `route`.
#[derive(Debug, Clone, Default)]
pub struct EntryPredicate {
    pub service: String,
    pub operation: Option<String>,
    pub route: Option<String>,
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
        let (stats, previous, series, services, gaps, whole, instrumented) = tokio::try_join!(
            self.internal_sql(&stats_sql),
            self.internal_sql(&previous_sql),
            self.internal_sql(&series_sql),
            self.internal_sql(&services_sql),
            self.internal_sql(&gaps_sql),
            self.internal_sql(&whole_sql),
            self.internal_sql(&instrumented_sql)
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
