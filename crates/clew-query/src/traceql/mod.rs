//! TraceQL: parsing ([`parse`]), evaluation per trace ([`eval`]) and search. A search first
//! asks DataFusion for candidate traces, newest first, using a condition every match must meet
//! (some span satisfies one of the query's filters, as far as SQL can express it); then each
//! candidate is re-assembled and the query is evaluated on it exactly, until enough match.

mod ast;
mod eval;
mod metrics;
mod parse;
mod select;

use clew_model::TraceId;
use serde::Serialize;

pub use ast::*;
pub use eval::{Spanset, TraceContext, evaluate, field_values};
pub use metrics::{LabelValue, MAX_POINTS, MAX_SERIES, MAX_TRACES, MetricsRequest, MetricsResult, Series, default_step};
pub use parse::{ParseError, field, parse, unit_nanos};
pub use select::{SpanSelection, exact_filter};

use crate::search::StartSlices;
use crate::{QueryEngine, QueryError, quote};
use clew_store::SpanFilter;
use clew_store::block::DEDICATED;

/// A TraceQL search.
#[derive(Debug, Clone)]
pub struct TraceQlRequest {
    pub query: String,
    /// Spans starting within [start, end] (Unix ns).
    pub start_unix_nano: Option<u64>,
    pub end_unix_nano: Option<u64>,
    pub limit: usize,
    /// Spans returned per spanset.
    pub spans_per_spanset: usize,
}

/// One matching trace.
#[derive(Debug, Clone, Serialize)]
pub struct TraceQlMatch {
    pub trace_id: TraceId,
    pub root_service: String,
    pub root_name: String,
    pub start_unix_nano: u64,
    pub duration_nanos: u64,
    pub span_count: u32,
    pub error_count: u32,
    pub services: Vec<String>,
    pub spansets: Vec<SpansetResult>,
}

#[derive(Debug, Clone, Serialize)]
pub struct SpansetResult {
    pub matched: usize,
    pub spans: Vec<SpanResult>,
    /// `by()` values, as (field as written, value as text).
    pub group: Vec<(String, String)>,
}

#[derive(Debug, Clone, Serialize)]
pub struct SpanResult {
    pub span_id: String,
    pub name: String,
    pub service: String,
    pub start_unix_nano: u64,
    pub duration_nanos: u64,
    /// The attributes the query looked at or selected, as text.
    pub attributes: Vec<(String, String)>,
}

/// What a search looked at.
#[derive(Debug, Clone, Default, Serialize)]
pub struct TraceQlMetrics {
    pub inspected_traces: usize,
}

/// Candidate traces fetched per round, and at most this many inspected per search.
const CANDIDATE_PAGE: usize = 200;
const MAX_INSPECTED: usize = 5_000;

impl QueryEngine {
    pub async fn traceql(&self, request: &TraceQlRequest) -> Result<(Vec<TraceQlMatch>, TraceQlMetrics), QueryError> {
        let query = parse(&request.query).map_err(|e| QueryError::Invalid(e.to_string()))?;
        self.run_traceql(&query, request).await
    }

    /// Runs a parsed query; `request.query` is not read.
    pub async fn run_traceql(&self, query: &Query, request: &TraceQlRequest) -> Result<(Vec<TraceQlMatch>, TraceQlMetrics), QueryError> {
        self.run_traceql_with_progress(query, request, |_, _| {}).await
    }

    /// Runs a parsed query and reports progress as it goes: after each page of candidate
    /// traces, `progress` gets the matches that page found (perhaps none) and the counts so
    /// far. The result is the same as [`Self::run_traceql`]'s.
    pub async fn run_traceql_with_progress(
        &self,
        query: &Query,
        request: &TraceQlRequest,
        mut progress: impl FnMut(&[TraceQlMatch], &TraceQlMetrics) + Send,
    ) -> Result<(Vec<TraceQlMatch>, TraceQlMetrics), QueryError> {
        if let Some(metrics) = &query.metrics {
            return Err(QueryError::Invalid(format!(
                "{}() makes this a TraceQL metrics query: ask /api/metrics/query_range (Tempo API) or /api/v1/metrics/query_range, not search",
                metrics.function.name()
            )));
        }
        let limit = request.limit.clamp(1, 10_000);
        let mut conditions = Vec::new();
        if let Some(start) = request.start_unix_nano {
            conditions.push(format!("start_time_unix_nano >= {start}"));
        }
        if let Some(end) = request.end_unix_nano {
            conditions.push(format!("start_time_unix_nano <= {end}"));
        }
        let mut having = String::new();
        if let Some((spans, trace)) = windowed_prefilter(query, request.start_unix_nano, request.end_unix_nano) {
            conditions.push(format!("({spans})"));
            having = format!("HAVING {trace}");
        }
        let fields = referenced_fields(query);
        let mut matches = Vec::new();
        let mut metrics = TraceQlMetrics::default();
        // Every slice is read from one snapshot of the store.
        let engine = self.pinned_where(span_filter(query)).await?;
        // Newest first, as search does: slices of trace start time from the end back, each
        // sized from the matches so far, so that a common match reads the last minutes only.
        let mut slices = StartSlices::new(request.start_unix_nano, request.end_unix_nano);
        let mut inspected = 0;
        loop {
            let (bounds, last) = slices.current();
            let mut slice = conditions.clone();
            slice.extend(bounds);
            let filter = if slice.is_empty() { String::new() } else { format!("WHERE {}", slice.join(" AND ")) };
            let mut offset = 0;
            while matches.len() < limit && inspected < MAX_INSPECTED {
                let sql = format!(
                    "SELECT trace_id, max(trace_start_unix_nano) AS started FROM spans {filter} \
                     GROUP BY trace_id {having} ORDER BY started DESC, trace_id LIMIT {CANDIDATE_PAGE} OFFSET {offset}"
                );
                let batches = engine.internal_sql(&sql).await?;
                let mut ids = Vec::new();
                for batch in &batches {
                    use datafusion::arrow::array::AsArray;
                    let column = batch.column(0).as_fixed_size_binary();
                    ids.extend((0..batch.num_rows()).filter_map(|row| TraceId::from_slice(column.value(row)).ok()));
                }
                if ids.is_empty() {
                    break;
                }
                offset += ids.len();
                inspected += ids.len();
                let before = matches.len();
                // Candidates are loaded a few at a time, so a search that is soon satisfied
                // reads no more traces than it needs.
                'page: for chunk in ids.chunks(16) {
                    for view in engine.traces(chunk, true).await? {
                        metrics.inspected_traces += 1;
                        let context = TraceContext::new(&view.trace);
                        let sets = evaluate(query, &context);
                        if sets.is_empty() {
                            continue;
                        }
                        matches.push(describe(&view.trace, &context, sets, &fields, request.spans_per_spanset));
                        if matches.len() >= limit {
                            break 'page;
                        }
                    }
                }
                progress(&matches[before..], &metrics);
            }
            if matches.len() >= limit || last || inspected >= MAX_INSPECTED {
                break;
            }
            slices.advance(matches.len(), limit - matches.len());
        }
        Ok((matches, metrics))
    }
}

fn describe(
    trace: &clew_model::AssembledTrace,
    context: &TraceContext<'_>,
    sets: Vec<Spanset>,
    fields: &[Field],
    per_set: usize,
) -> TraceQlMatch {
    let spansets = sets
        .into_iter()
        .map(|set| {
            let mut shown: Vec<Field> = fields.to_vec();
            shown.extend(set.selected.iter().cloned());
            let spans = set
                .spans
                .iter()
                .take(per_set.max(1))
                .map(|&index| {
                    let span = &trace.spans[index];
                    let mut attributes = vec![("service.name".to_string(), span.service_name().to_string())];
                    for field in &shown {
                        if let Some(value) = field_values(field, index, context).into_iter().next() {
                            let name = field_name(field);
                            if !attributes.iter().any(|(n, _)| *n == name) {
                                attributes.push((name, value_text(&value)));
                            }
                        }
                    }
                    SpanResult {
                        span_id: span.span_id.to_hex(),
                        name: span.name.clone(),
                        service: span.service_name().to_string(),
                        start_unix_nano: span.start_time_unix_nano,
                        duration_nanos: span.duration_nanos(),
                        attributes,
                    }
                })
                .collect();
            SpansetResult {
                matched: set.spans.len(),
                spans,
                group: set.group.iter().map(|(field, value)| (field_name(field), value_text(value))).collect(),
            }
        })
        .collect();
    TraceQlMatch {
        trace_id: trace.spans[0].trace_id,
        root_service: trace.facts.root_service.clone(),
        root_name: trace.facts.root_name.clone(),
        start_unix_nano: trace.facts.start_unix_nano,
        duration_nanos: trace.facts.duration_nanos(),
        span_count: trace.facts.span_count,
        error_count: trace.facts.error_count,
        services: trace.facts.services.clone(),
        spansets,
    }
}

/// How a field is written in TraceQL.
pub fn field_name(field: &Field) -> String {
    match field {
        Field::Attribute { key, .. } => key.clone(),
        Field::Intrinsic(intrinsic) => match intrinsic {
            Intrinsic::Name => "name",
            Intrinsic::Status => "status",
            Intrinsic::StatusMessage => "statusMessage",
            Intrinsic::Kind => "kind",
            Intrinsic::Duration => "duration",
            Intrinsic::SpanId => "span:id",
            Intrinsic::ParentId => "span:parentID",
            Intrinsic::ChildCount => "span:childCount",
            Intrinsic::TraceDuration => "trace:duration",
            Intrinsic::RootName => "trace:rootName",
            Intrinsic::RootService => "trace:rootService",
            Intrinsic::TraceId => "trace:id",
            Intrinsic::EventName => "event:name",
            Intrinsic::EventTimeSinceStart => "event:timeSinceStart",
            Intrinsic::LinkTraceId => "link:traceID",
            Intrinsic::LinkSpanId => "link:spanID",
            Intrinsic::ScopeName => "instrumentation:name",
            Intrinsic::ScopeVersion => "instrumentation:version",
        }
        .to_string(),
    }
}

pub fn value_text(value: &Value) -> String {
    match value {
        Value::Nil => "nil".into(),
        Value::Bool(b) => b.to_string(),
        Value::Int(i) => i.to_string(),
        Value::Float(f) => f.to_string(),
        Value::Duration(d) => d.to_string(),
        Value::Str(s) => s.clone(),
        Value::Status(s) => s.as_str().into(),
        Value::Kind(k) => k.as_str().into(),
    }
}

/// The attribute fields a query compares (shown with each matching span, as Tempo does).
fn referenced_fields(query: &Query) -> Vec<Field> {
    fn expr(e: &Expr, out: &mut Vec<Field>) {
        match e {
            Expr::Field(field @ Field::Attribute { .. }) if !out.contains(field) => out.push(field.clone()),
            Expr::Compare(_, a, b) | Expr::Arith(_, a, b) | Expr::And(a, b) | Expr::Or(a, b) => {
                expr(a, out);
                expr(b, out);
            }
            Expr::Not(a) => expr(a, out),
            _ => {}
        }
    }
    fn spanset(s: &SpansetExpr, out: &mut Vec<Field>) {
        match s {
            SpansetExpr::Filter(e) => expr(e, out),
            SpansetExpr::And(a, b) | SpansetExpr::Or(a, b) | SpansetExpr::Structural { left: a, right: b, .. } => {
                spanset(a, out);
                spanset(b, out);
            }
            SpansetExpr::Pipeline(q) => query_fields(q, out),
        }
    }
    fn query_fields(q: &Query, out: &mut Vec<Field>) {
        spanset(&q.first, out);
        for stage in &q.stages {
            if let Stage::Filter(s) = stage {
                spanset(s, out);
            }
        }
    }
    let mut out = Vec::new();
    query_fields(query, &mut out);
    out
}

// ---- the SQL prefilter ----

/// What a matching trace must contain, as far as SQL can tell: spans meeting conditions,
/// combined per trace.
#[derive(Debug, Clone, PartialEq)]
enum TraceCondition {
    /// Some span meets this SQL condition.
    Has(String),
    All(Vec<TraceCondition>),
    Any(Vec<TraceCondition>),
}

/// The SQL that narrows a search to candidate traces: a `WHERE` on spans (the spans that can
/// play a part) and a `HAVING` on each trace's group (the parts it must have). When a query
/// needs several parts, the `WHERE` keeps only the most selective one (the others are checked
/// when the candidates are evaluated), so the scan groups few rows. `None` when nothing
/// narrower than "any trace" can be said.
pub fn prefilter(query: &Query) -> Option<(String, String)> {
    let condition = most_selective(trace_condition(&query.first)?);
    let mut leaves = Vec::new();
    collect_leaves(&condition, &mut leaves);
    leaves.sort();
    leaves.dedup();
    let having = render_having(&condition);
    Some((leaves.iter().map(|leaf| format!("({leaf})")).collect::<Vec<_>>().join(" OR "), having))
}

/// The equalities on the service (`resource.service.name`) and span name that every row a
/// one-spanset query's `WHERE` keeps must meet (its SQL holds every such equality), so that
/// the store converts only the pending traces with a span that does. Empty for other queries:
/// their candidates may be found by the rows of another part.
pub fn span_filter(query: &Query) -> SpanFilter {
    fn equalities(expr: &Expr, filter: &mut SpanFilter) {
        match expr {
            Expr::And(a, b) => {
                equalities(a, filter);
                equalities(b, filter);
            }
            Expr::Compare(CompareOp::Eq, left, right) => {
                let ((Expr::Field(field), Expr::Literal(Value::Str(text))) | (Expr::Literal(Value::Str(text)), Expr::Field(field))) =
                    (&**left, &**right)
                else {
                    return;
                };
                match field {
                    Field::Attribute { scope: AttrScope::Resource, key } if key == "service.name" => {
                        filter.service_name = Some(text.clone());
                    }
                    Field::Intrinsic(Intrinsic::Name) => filter.name = Some(text.clone()),
                    _ => {}
                }
            }
            _ => {}
        }
    }
    let mut filter = SpanFilter::default();
    if let SpansetExpr::Filter(condition) = &query.first {
        equalities(condition, &mut filter);
    }
    filter
}

/// [`prefilter`] for a search over spans started within a window. When a trace must have
/// several parts (a structural query, `&&` of spansets), the part the prefilter looks for
/// may lie outside the window (a parent started before it, a child after it) while the
/// matching spans are in it: a trace that reaches over either edge is then a candidate
/// whatever its rows in the window are. One spanset filter needs no such care: its matches
/// are the spans it looks for.
///
/// The edges are those of the trace piece a row was assembled with: a late fragment of a
/// trace has its own start and duration, so a part that lies in an earlier piece outside
/// the window is not seen.
pub fn windowed_prefilter(query: &Query, start_unix_nano: Option<u64>, end_unix_nano: Option<u64>) -> Option<(String, String)> {
    let (spans, trace) = prefilter(query)?;
    if matches!(query.first, SpansetExpr::Filter(_)) {
        return Some((spans, trace));
    }
    let mut edges = Vec::new();
    if let Some(start) = start_unix_nano {
        edges.push(format!("trace_start_unix_nano < {start}"));
    }
    if let Some(end) = end_unix_nano {
        edges.push(format!("trace_start_unix_nano + trace_duration_nanos >= {end}"));
    }
    if edges.is_empty() {
        return Some((spans, trace));
    }
    let over_an_edge = edges.join(" OR ");
    Some((format!("({spans}) OR {over_an_edge}"), format!("({trace}) OR bool_or({over_an_edge})")))
}

/// Of the parts a trace must all have, the one likely to match the fewest spans: the most
/// conditions joined by AND, equality first.
fn most_selective(condition: TraceCondition) -> TraceCondition {
    fn weight(condition: &TraceCondition) -> (usize, usize) {
        match condition {
            TraceCondition::Has(sql) => (sql.matches(" AND ").count() + 1, sql.matches(" = ").count()),
            TraceCondition::All(parts) => parts.iter().map(weight).max().unwrap_or((0, 0)),
            // Any part may be the one present: as selective as the weakest.
            TraceCondition::Any(parts) => parts.iter().map(weight).min().unwrap_or((0, 0)),
        }
    }
    match condition {
        TraceCondition::All(parts) => {
            // On a tie, the first part (max_by_key keeps the last of equals).
            let best = parts.into_iter().rev().max_by_key(weight).expect("All has parts");
            most_selective(best)
        }
        other => other,
    }
}

fn collect_leaves(condition: &TraceCondition, out: &mut Vec<String>) {
    match condition {
        TraceCondition::Has(sql) => out.push(sql.clone()),
        TraceCondition::All(parts) | TraceCondition::Any(parts) => parts.iter().for_each(|p| collect_leaves(p, out)),
    }
}

fn render_having(condition: &TraceCondition) -> String {
    match condition {
        TraceCondition::Has(sql) => format!("bool_or({sql})"),
        TraceCondition::All(parts) => format!("({})", parts.iter().map(render_having).collect::<Vec<_>>().join(" AND ")),
        TraceCondition::Any(parts) => format!("({})", parts.iter().map(render_having).collect::<Vec<_>>().join(" OR ")),
    }
}

/// `None` means "no condition": any trace may match.
fn trace_condition(expr: &SpansetExpr) -> Option<TraceCondition> {
    let both = |a: &SpansetExpr, b: &SpansetExpr| match (trace_condition(a), trace_condition(b)) {
        (Some(a), Some(b)) => Some(TraceCondition::All(vec![a, b])),
        (one, other) => one.or(other),
    };
    match expr {
        SpansetExpr::Filter(condition) => condition_sql(condition).map(TraceCondition::Has),
        // Both sides must be present.
        SpansetExpr::And(a, b) => both(a, b),
        // A negated structural operator may match with no left-hand span at all.
        SpansetExpr::Structural { mode: Mode::Not, right, .. } => trace_condition(right),
        SpansetExpr::Structural { left, right, .. } => both(left, right),
        SpansetExpr::Or(a, b) => Some(TraceCondition::Any(vec![trace_condition(a)?, trace_condition(b)?])),
        SpansetExpr::Pipeline(query) => trace_condition(&query.first),
    }
}

/// The SQL for a span-level condition; `None` where SQL cannot say it exactly enough (the
/// evaluation then decides).
fn condition_sql(expr: &Expr) -> Option<String> {
    match expr {
        Expr::And(a, b) => match (condition_sql(a), condition_sql(b)) {
            (Some(a), Some(b)) => Some(format!("({a} AND {b})")),
            (one, other) => one.or(other),
        },
        Expr::Or(a, b) => Some(format!("({} OR {})", condition_sql(a)?, condition_sql(b)?)),
        Expr::Compare(op, left, right) => {
            let (field, value, op) = match (&**left, &**right) {
                (Expr::Field(field), Expr::Literal(value)) => (field, value, *op),
                (Expr::Literal(value), Expr::Field(field)) => (field, value, flip(*op)?),
                _ => return None,
            };
            compare_sql(field, value, op)
        }
        _ => None,
    }
}

/// The SQL for an attribute's value as text: its dedicated column, else the attribute maps.
/// `None` for scopes the span table has no column for.
pub(crate) fn attribute_column(scope: AttrScope, key: &str) -> Option<String> {
    let dedicated = DEDICATED.iter().find(|(name, _)| *name == key).map(|(_, column)| column.to_string());
    let key = quote(key);
    Some(match (scope, dedicated) {
        (AttrScope::Span, Some(column)) => column,
        (AttrScope::Span, None) => format!("attributes[{key}]"),
        (AttrScope::Resource, _) if key == "'service.name'" => "service_name".to_string(),
        (AttrScope::Resource, _) => format!("resource_attributes[{key}]"),
        (AttrScope::Any, Some(column)) => format!("coalesce({column}, resource_attributes[{key}])"),
        (AttrScope::Any, None) if key == "'service.name'" => format!("coalesce(attributes[{key}], service_name)"),
        (AttrScope::Any, None) => format!("coalesce(attributes[{key}], resource_attributes[{key}])"),
        _ => return None,
    })
}

/// The SQL that holds for exactly the spans a filter condition selects; `None` when any part
/// of it cannot be said in SQL. Attribute values are compared as the span table stores them
/// (text, numbers by `try_cast`), which is how the evaluation compares them too, except for
/// array attributes (an element must match in TraceQL, the rendered array in SQL).
pub(crate) fn exact_sql(expr: &Expr) -> Option<String> {
    match expr {
        Expr::Literal(Value::Bool(true)) => Some("TRUE".into()),
        Expr::And(a, b) => Some(format!("({} AND {})", exact_sql(a)?, exact_sql(b)?)),
        Expr::Or(a, b) => Some(format!("({} OR {})", exact_sql(a)?, exact_sql(b)?)),
        Expr::Compare(CompareOp::Ne, left, right) => {
            // "Present and different": the equality is false, not unknown.
            Some(format!("({}) IS FALSE", exact_sql(&Expr::Compare(CompareOp::Eq, left.clone(), right.clone()))?))
        }
        Expr::Compare(..) => condition_sql(expr),
        _ => None,
    }
}

fn flip(op: CompareOp) -> Option<CompareOp> {
    Some(match op {
        CompareOp::Eq => CompareOp::Eq,
        CompareOp::Gt => CompareOp::Lt,
        CompareOp::Ge => CompareOp::Le,
        CompareOp::Lt => CompareOp::Gt,
        CompareOp::Le => CompareOp::Ge,
        _ => return None,
    })
}

fn compare_sql(field: &Field, value: &Value, op: CompareOp) -> Option<String> {
    // `!=`, `!~` and `nil` comparisons are left to the evaluation.
    if matches!(op, CompareOp::Ne | CompareOp::NotRegex) || *value == Value::Nil {
        return None;
    }
    let symbol = match op {
        CompareOp::Eq => "=",
        CompareOp::Gt => ">",
        CompareOp::Ge => ">=",
        CompareOp::Lt => "<",
        CompareOp::Le => "<=",
        _ => "",
    };
    let numeric_value = matches!(value, Value::Int(_) | Value::Float(_) | Value::Duration(_));
    // The HTTP status code has a numeric column of its own (the new or the legacy name).
    if let Field::Attribute { scope: AttrScope::Span, key } = field
        && numeric_value
        && (key == "http.response.status_code" || key == "http.status_code")
        && op != CompareOp::Regex
    {
        let literal = match value {
            Value::Int(i) => i.to_string(),
            Value::Float(f) if f.is_finite() => f.to_string(),
            _ => return None,
        };
        return Some(format!("http_status_code {symbol} {literal}"));
    }
    let (column, numeric_column) = match field {
        Field::Intrinsic(intrinsic) => match intrinsic {
            Intrinsic::Name => ("name".to_string(), false),
            Intrinsic::Status => ("status_code".to_string(), false),
            Intrinsic::StatusMessage => ("status_message".to_string(), false),
            Intrinsic::Kind => ("kind".to_string(), false),
            Intrinsic::Duration => ("duration_nanos".to_string(), true),
            Intrinsic::TraceDuration => ("trace_duration_nanos".to_string(), true),
            Intrinsic::RootName => ("trace_root_name".to_string(), false),
            Intrinsic::RootService => ("trace_root_service".to_string(), false),
            _ => return None,
        },
        Field::Attribute { scope, key } => (attribute_column(*scope, key)?, false),
    };
    let literal = match value {
        Value::Str(text) => quote(text),
        Value::Status(status) => quote(status.as_str()),
        Value::Kind(kind) => quote(kind.as_str()),
        Value::Bool(b) => quote(&b.to_string()),
        Value::Int(i) => i.to_string(),
        Value::Float(f) if f.is_finite() => f.to_string(),
        Value::Duration(d) => d.to_string(),
        _ => return None,
    };
    Some(match op {
        CompareOp::Regex => {
            let Value::Str(pattern) = value else { return None };
            format!("regexp_like({column}, {})", quote(&format!("^(?:{pattern})$")))
        }
        _ if numeric_value && !numeric_column => format!("try_cast({column} AS DOUBLE) {symbol} {literal}"),
        _ if numeric_value == numeric_column => format!("{column} {symbol} {literal}"),
        // A string compared with a number column (or the reverse): leave it to the evaluation.
        _ => return None,
    })
}

#[cfg(test)]
mod conformance;
#[cfg(test)]
mod tests;
