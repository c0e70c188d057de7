//! Trace search, and the lists behind the search pickers.

use clew_model::{SpanKind, StatusCode};
use clew_store::SpanFilter;
use clew_store::block::DEDICATED;
use datafusion::arrow::array::{Array, AsArray, RecordBatch};
use datafusion::arrow::datatypes::Int64Type;
use serde::Serialize;

use crate::{QueryEngine, QueryError, quote};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CompareOp {
    Eq,
    Ne,
    Gt,
    Ge,
    Lt,
    Le,
    Regex,
    /// The attribute is present, whatever its value.
    Exists,
}

impl CompareOp {
    fn sql(self) -> &'static str {
        match self {
            Self::Eq => "=",
            Self::Ne => "<>",
            Self::Gt => ">",
            Self::Ge => ">=",
            Self::Lt => "<",
            Self::Le => "<=",
            Self::Regex => "~",
            Self::Exists => "IS NOT NULL",
        }
    }
}

/// Where an attribute is looked up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttributeScope {
    Span,
    Resource,
    /// The span's attributes, else its resource's.
    Any,
}

/// `key op value`, e.g. `http.response.status_code>=500`, `resource.service.version=1.2`,
/// `http.route=~/api/.*`.
#[derive(Debug, Clone, PartialEq)]
pub struct AttributeFilter {
    pub scope: AttributeScope,
    pub key: String,
    pub op: CompareOp,
    pub value: String,
}

impl AttributeFilter {
    /// Parses `key op value`; a `span.` or `resource.` prefix picks the scope.
    pub fn parse(text: &str) -> Result<Self, QueryError> {
        let operators = [
            ("=~", CompareOp::Regex),
            ("!=", CompareOp::Ne),
            (">=", CompareOp::Ge),
            ("<=", CompareOp::Le),
            ("=", CompareOp::Eq),
            (">", CompareOp::Gt),
            ("<", CompareOp::Lt),
        ];
        // The first operator character in the text splits key from value.
        let position = text.find(['=', '!', '>', '<']).ok_or_else(|| {
            QueryError::Invalid(format!(
                "attribute filter {text:?} has no operator: use key=value, key!=value, key>N, key>=N, key<N, key<=N or key=~regex"
            ))
        })?;
        let (key, rest) = text.split_at(position);
        let (symbol, op) = operators
            .iter()
            .find(|(symbol, _)| rest.starts_with(symbol))
            .ok_or_else(|| QueryError::Invalid(format!("attribute filter {text:?}: unknown operator")))?;
        let key = key.trim();
        let value = rest[symbol.len()..].trim().trim_matches('"').to_string();
        if key.is_empty() {
            return Err(QueryError::Invalid(format!("attribute filter {text:?} has no key")));
        }
        let (scope, key) = if let Some(stripped) = key.strip_prefix("resource.") {
            (AttributeScope::Resource, stripped)
        } else if let Some(stripped) = key.strip_prefix("span.") {
            (AttributeScope::Span, stripped)
        } else {
            (AttributeScope::Any, key)
        };
        if matches!(op, CompareOp::Gt | CompareOp::Ge | CompareOp::Lt | CompareOp::Le) && value.parse::<f64>().is_err() {
            return Err(QueryError::Invalid(format!("attribute filter {text:?}: {symbol} needs a number")));
        }
        if *op == CompareOp::Regex {
            regex_check(&value)?;
        }
        Ok(Self { scope, key: key.to_string(), op: *op, value })
    }

    /// `key = value` on the span's attributes, else its resource's.
    pub fn equals(key: impl Into<String>, value: impl Into<String>) -> Self {
        Self { scope: AttributeScope::Any, key: key.into(), op: CompareOp::Eq, value: value.into() }
    }

    /// The span (or its resource) has the attribute.
    pub fn exists(key: impl Into<String>) -> Self {
        Self { scope: AttributeScope::Any, key: key.into(), op: CompareOp::Exists, value: String::new() }
    }

    fn sql(&self) -> String {
        // The HTTP status code (a span attribute, under its new or legacy name) has a numeric
        // column of its own: far cheaper to compare than the attribute maps.
        if matches!(self.key.as_str(), "http.response.status_code" | "http.status_code")
            && self.scope != AttributeScope::Resource
            && !matches!(self.op, CompareOp::Regex | CompareOp::Exists)
            && let Ok(number) = self.value.parse::<f64>()
        {
            return match self.op {
                CompareOp::Ne => format!("(http_status_code IS NULL OR http_status_code <> {number})"),
                op => format!("http_status_code {} {number}", op.sql()),
            };
        }
        let key = quote(&self.key);
        let dedicated = DEDICATED.iter().find(|(name, _)| *name == self.key).map(|(_, column)| column.to_string());
        let accessor = match (self.scope, dedicated) {
            (AttributeScope::Span, Some(column)) => column,
            (AttributeScope::Span, None) => format!("attributes[{key}]"),
            (AttributeScope::Resource, _) => format!("resource_attributes[{key}]"),
            (AttributeScope::Any, Some(column)) => {
                format!("coalesce({column}, resource_attributes[{key}])")
            }
            (AttributeScope::Any, None) => {
                format!("coalesce(attributes[{key}], resource_attributes[{key}])")
            }
        };
        let numeric = self.value.parse::<f64>().is_ok();
        match self.op {
            CompareOp::Exists => format!("{accessor} IS NOT NULL"),
            CompareOp::Regex => format!("regexp_like({accessor}, {})", quote(&format!("^(?:{})$", self.value))),
            op if numeric => format!("try_cast({accessor} AS DOUBLE) {} {}", op.sql(), self.value.parse::<f64>().expect("checked")),
            CompareOp::Ne => format!("({accessor} IS NULL OR {accessor} <> {})", quote(&self.value)),
            op => format!("{accessor} {} {}", op.sql(), quote(&self.value)),
        }
    }
}

fn regex_check(pattern: &str) -> Result<(), QueryError> {
    if pattern.len() > 1024 {
        return Err(QueryError::Invalid("regular expression longer than 1024 bytes".into()));
    }
    Ok(())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SortOrder {
    #[default]
    Newest,
    Longest,
}

/// A trace search. Span conditions must all hold on one span of the trace.
#[derive(Debug, Clone, Default)]
pub struct SearchRequest {
    pub service: Option<String>,
    pub operation: Option<String>,
    pub kind: Option<SpanKind>,
    pub status: Option<StatusCode>,
    pub attributes: Vec<AttributeFilter>,
    /// Bounds on the matching span's duration.
    pub min_duration_nanos: Option<u64>,
    pub max_duration_nanos: Option<u64>,
    /// Bounds on the whole trace's duration.
    pub min_trace_duration_nanos: Option<u64>,
    pub max_trace_duration_nanos: Option<u64>,
    /// The matching span starts within [start, end].
    pub start_unix_nano: Option<u64>,
    pub end_unix_nano: Option<u64>,
    pub limit: usize,
    pub sort: SortOrder,
}

/// One row of search results.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct TraceSummary {
    pub trace_id: String,
    pub root_service: String,
    pub root_name: String,
    pub start_unix_nano: i64,
    pub duration_nanos: i64,
    pub span_count: i64,
    pub error_count: i64,
    pub services: Vec<String>,
    /// Spans in the trace that matched the conditions.
    pub matched_spans: i64,
}

impl SearchRequest {
    fn conditions(&self) -> Vec<String> {
        let mut conditions = Vec::new();
        if let Some(service) = &self.service {
            conditions.push(format!("service_name = {}", quote(service)));
        }
        if let Some(operation) = &self.operation {
            conditions.push(format!("name = {}", quote(operation)));
        }
        if let Some(kind) = self.kind {
            conditions.push(format!("kind = {}", quote(kind.as_str())));
        }
        if let Some(status) = self.status {
            conditions.push(format!("status_code = {}", quote(status.as_str())));
        }
        for filter in &self.attributes {
            conditions.push(filter.sql());
        }
        if let Some(min) = self.min_duration_nanos {
            conditions.push(format!("duration_nanos >= {min}"));
        }
        if let Some(max) = self.max_duration_nanos {
            conditions.push(format!("duration_nanos <= {max}"));
        }
        if let Some(min) = self.min_trace_duration_nanos {
            conditions.push(format!("trace_duration_nanos >= {min}"));
        }
        if let Some(max) = self.max_trace_duration_nanos {
            conditions.push(format!("trace_duration_nanos <= {max}"));
        }
        if let Some(start) = self.start_unix_nano {
            conditions.push(format!("start_time_unix_nano >= {start}"));
        }
        if let Some(end) = self.end_unix_nano {
            // A span that starts by the end is in a trace that does: the trace-level bound lets
            // blocks that start later be skipped unread.
            conditions.push(format!("trace_start_unix_nano <= {end}"));
            conditions.push(format!("start_time_unix_nano <= {end}"));
        }
        conditions
    }
}

/// The newest traces are looked for in slices of trace start time, newest first, from this
/// width; each next slice is sized from the matches found so far (at least twice, at most 64
/// times what was read), so a search whose matches are common reads only the last minutes'
/// blocks, and a rare one few slices.
const FIRST_SLICE_NANOS: i64 = 5 * 60 * 1_000_000_000;
/// The slices stop at this width (or at the search's start): the last reaches back to the beginning.
const WIDEST_SLICE_NANOS: i64 = 8 * 24 * 3_600 * 1_000_000_000;

/// How much wider the searched span of time must grow, to find `wanted` more traces where
/// `found` were found so far.
fn growth(found: usize, wanted: usize) -> i64 {
    if found == 0 {
        return 16;
    }
    (((found + wanted) as f64 / found as f64) * 1.5).ceil().clamp(2.0, 64.0) as i64
}

/// Slices of trace start time read newest first: from the end of a search back, each next
/// slice older than the last and sized from the matches found so far. Every trace of an
/// older slice starts earlier, so a newest-first answer can stop at the first slice that
/// completes it.
pub(crate) struct StartSlices {
    end: i64,
    earliest: Option<i64>,
    /// The start of the slice read before, which bounds the next from above.
    upper: Option<i64>,
    /// The span of time read so far, back from the end.
    width: i64,
}

impl StartSlices {
    /// Slices of the search's range: up to `end_unix_nano` (now when absent), back to
    /// `start_unix_nano` (as far back as the widest slice when absent).
    pub(crate) fn new(start_unix_nano: Option<u64>, end_unix_nano: Option<u64>) -> Self {
        Self {
            end: end_unix_nano.map(|e| e.min(i64::MAX as u64) as i64).unwrap_or_else(now_unix_nano),
            earliest: start_unix_nano.map(|s| s.min(i64::MAX as u64) as i64),
            upper: None,
            width: FIRST_SLICE_NANOS,
        }
    }

    /// The conditions that bound the current slice, and whether it is the last. The last is
    /// open below: a trace may start before the search does.
    pub(crate) fn current(&self) -> (Vec<String>, bool) {
        let lower = self.end.saturating_sub(self.width);
        let last = self.width >= WIDEST_SLICE_NANOS || self.earliest.is_some_and(|earliest| lower <= earliest);
        let mut conditions = Vec::new();
        if !last {
            conditions.push(format!("trace_start_unix_nano >= {lower}"));
        }
        if let Some(upper) = self.upper {
            conditions.push(format!("trace_start_unix_nano < {upper}"));
        }
        (conditions, last)
    }

    /// Moves to the next older slice, wide enough to turn the `found` matches so far into
    /// `found + wanted` at the rate they were found.
    pub(crate) fn advance(&mut self, found: usize, wanted: usize) {
        self.upper = Some(self.end.saturating_sub(self.width));
        self.width = self.width.saturating_mul(growth(found, wanted)).min(WIDEST_SLICE_NANOS);
    }

    /// The start of the first (newest) slice.
    fn first_lower(&self) -> i64 {
        self.end.saturating_sub(FIRST_SLICE_NANOS)
    }
}

fn now_unix_nano() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos().min(i64::MAX as u128) as i64)
}

impl QueryEngine {
    /// Traces with a span that meets every condition, newest (by trace start) or longest first.
    ///
    /// Newest first reads slices of trace start time from the end of the search back and stops
    /// once it has `limit` traces: every trace of an older slice starts earlier. Longest first
    /// takes the longest of the newest slice's matches as a floor, so that the full read
    /// tests the trace duration before anything else.
    pub async fn search(&self, request: &SearchRequest) -> Result<Vec<TraceSummary>, QueryError> {
        let limit = request.limit.clamp(1, 10_000);
        // Every condition holds on one span row: pending traces without a span of the service
        // and operation asked for need not be converted.
        let filter = SpanFilter { service_name: request.service.clone(), name: request.operation.clone() };
        let engine = self.pinned_where(filter).await?;
        let conditions = request.conditions();
        let mut slices = StartSlices::new(request.start_unix_nano, request.end_unix_nano);
        match request.sort {
            SortOrder::Newest => {
                let mut out: Vec<TraceSummary> = Vec::new();
                loop {
                    let (mut slice, last) = slices.current();
                    slice.extend(conditions.iter().cloned());
                    let found = engine.summaries(&slice, "start_unix_nano DESC", limit - out.len()).await?;
                    out.extend(found);
                    if out.len() >= limit || last {
                        return Ok(out);
                    }
                    slices.advance(out.len(), limit - out.len());
                }
            }
            SortOrder::Longest => {
                let order = "duration_nanos DESC";
                let recent = [format!("trace_start_unix_nano >= {}", slices.first_lower())]
                    .into_iter()
                    .chain(conditions.iter().cloned())
                    .collect::<Vec<_>>();
                let mut all = Vec::new();
                let floor = engine.summaries(&recent, order, limit).await?;
                if floor.len() == limit {
                    // The `limit` longest overall are at least as long as these.
                    all.push(format!("trace_duration_nanos >= {}", floor[limit - 1].duration_nanos));
                }
                all.extend(conditions);
                engine.summaries(&all, order, limit).await
            }
        }
    }

    /// One row per trace with a span meeting every condition (tested in the order given).
    async fn summaries(&self, conditions: &[String], order: &str, limit: usize) -> Result<Vec<TraceSummary>, QueryError> {
        let filter = if conditions.is_empty() { String::new() } else { format!("WHERE {}", conditions.join(" AND ")) };
        let query = format!(
            "SELECT encode(trace_id, 'hex') AS trace_id, max(trace_root_service) AS root_service, max(trace_root_name) AS root_name, \
             min(trace_start_unix_nano) AS start_unix_nano, max(trace_duration_nanos) AS duration_nanos, \
             max(trace_span_count) AS span_count, max(trace_error_count) AS error_count, max(trace_services) AS services, \
             count(*) AS matched_spans FROM spans {filter} GROUP BY trace_id ORDER BY {order}, trace_id LIMIT {limit}"
        );
        let batches = self.internal_sql(&query).await?;
        let mut out = Vec::new();
        for batch in &batches {
            // Whatever text type the plan gives (the service lists are stored as a dictionary).
            let strings = |name: &str| {
                datafusion::arrow::compute::cast(
                    batch.column_by_name(name).expect("selected"),
                    &datafusion::arrow::datatypes::DataType::Utf8,
                )
                .map(|a| a.as_string::<i32>().clone())
            };
            let numbers = |name: &str| {
                datafusion::arrow::compute::cast(
                    batch.column_by_name(name).expect("selected"),
                    &datafusion::arrow::datatypes::DataType::Int64,
                )
                .map(|a| a.as_primitive::<Int64Type>().clone())
            };
            let trace_id = strings("trace_id")?;
            let root_service = strings("root_service")?;
            let root_name = strings("root_name")?;
            let services = strings("services")?;
            let start = numbers("start_unix_nano")?;
            let duration = numbers("duration_nanos")?;
            let span_count = numbers("span_count")?;
            let error_count = numbers("error_count")?;
            let matched = numbers("matched_spans")?;
            for row in 0..batch.num_rows() {
                out.push(TraceSummary {
                    trace_id: trace_id.value(row).to_string(),
                    root_service: root_service.value(row).to_string(),
                    root_name: root_name.value(row).to_string(),
                    start_unix_nano: start.value(row),
                    duration_nanos: duration.value(row),
                    span_count: span_count.value(row),
                    error_count: error_count.value(row),
                    services: services.value(row).split(',').filter(|s| !s.is_empty()).map(str::to_string).collect(),
                    matched_spans: matched.value(row),
                });
            }
        }
        Ok(out)
    }

    /// Service names with their span counts.
    pub async fn services(&self) -> Result<Vec<(String, i64)>, QueryError> {
        let batches =
            self.internal_sql("SELECT service_name, count(*) AS spans FROM spans GROUP BY service_name ORDER BY service_name").await?;
        pairs(&batches)
    }

    /// Operations (span names) of a service, with span kind and count.
    pub async fn operations(&self, service: &str) -> Result<Vec<(String, String, i64)>, QueryError> {
        let query = format!(
            "SELECT name, kind, count(*) AS spans FROM spans WHERE service_name = {} GROUP BY name, kind ORDER BY name, kind",
            quote(service)
        );
        let batches = self.internal_sql(&query).await?;
        let mut out = Vec::new();
        for batch in &batches {
            let name = batch.column(0).as_string::<i32>();
            let kind = batch.column(1).as_string::<i32>();
            let count = batch.column(2).as_primitive::<Int64Type>();
            for row in 0..batch.num_rows() {
                out.push((name.value(row).to_string(), kind.value(row).to_string(), count.value(row)));
            }
        }
        Ok(out)
    }

    /// The most common values of a span column that pickers offer: `name`, `service_name`,
    /// `kind` or `status_code`.
    pub async fn column_values(&self, column: &str, limit: usize) -> Result<Vec<(String, i64)>, QueryError> {
        self.column_values_where(column, None, limit).await
    }

    /// [`Self::column_values`] of the spans an SQL condition over the span table keeps.
    pub async fn column_values_where(
        &self,
        column: &str,
        filter_sql: Option<&str>,
        limit: usize,
    ) -> Result<Vec<(String, i64)>, QueryError> {
        if !["name", "service_name", "kind", "status_code", "status_message", "trace_root_name", "trace_root_service"].contains(&column) {
            return Err(QueryError::Invalid(format!("no values are listed for {column}")));
        }
        let query = format!(
            "SELECT {column}, count(*) AS spans FROM spans WHERE {column} IS NOT NULL AND {column} <> '' AND ({}) \
             GROUP BY {column} ORDER BY spans DESC, {column} LIMIT {}",
            filter_sql.unwrap_or("TRUE"),
            limit.clamp(1, 10_000)
        );
        pairs(&self.internal_sql(&query).await?)
    }

    /// Attribute keys (span or resource) with the number of spans carrying each.
    pub async fn attribute_keys(&self, scope: AttributeScope) -> Result<Vec<(String, i64)>, QueryError> {
        let column = if scope == AttributeScope::Resource { "resource_attributes" } else { "attributes" };
        let query = format!(
            "SELECT key, count(*) AS spans FROM (SELECT unnest(map_keys({column})) AS key FROM spans) GROUP BY key ORDER BY spans DESC, key LIMIT 1000"
        );
        pairs(&self.internal_sql(&query).await?)
    }

    /// The most common values of an attribute, with counts.
    pub async fn attribute_values(&self, scope: AttributeScope, key: &str, limit: usize) -> Result<Vec<(String, i64)>, QueryError> {
        self.attribute_values_where(scope, key, None, limit).await
    }

    /// [`Self::attribute_values`] on the spans an SQL condition over the span table keeps.
    pub async fn attribute_values_where(
        &self,
        scope: AttributeScope,
        key: &str,
        filter_sql: Option<&str>,
        limit: usize,
    ) -> Result<Vec<(String, i64)>, QueryError> {
        let column = if scope == AttributeScope::Resource { "resource_attributes" } else { "attributes" };
        let query = format!(
            "SELECT value, count(*) AS spans FROM (SELECT {column}[{}] AS value FROM spans WHERE {}) WHERE value IS NOT NULL \
             GROUP BY value ORDER BY spans DESC, value LIMIT {}",
            quote(key),
            filter_sql.unwrap_or("TRUE"),
            limit.clamp(1, 10_000)
        );
        pairs(&self.internal_sql(&query).await?)
    }
}

fn pairs(batches: &[RecordBatch]) -> Result<Vec<(String, i64)>, QueryError> {
    let mut out = Vec::new();
    for batch in batches {
        let text = datafusion::arrow::compute::cast(batch.column(0), &datafusion::arrow::datatypes::DataType::Utf8)?;
        let text = text.as_string::<i32>();
        let count = batch.column(1).as_primitive::<Int64Type>();
        for row in 0..batch.num_rows() {
            if !text.is_null(row) {
                out.push((text.value(row).to_string(), count.value(row)));
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_filters() {
        let f = AttributeFilter::parse("http.response.status_code>=500").unwrap();
        assert_eq!(
            (f.key.as_str(), f.op, f.value.as_str(), f.scope),
            ("http.response.status_code", CompareOp::Ge, "500", AttributeScope::Any)
        );
        let f = AttributeFilter::parse("resource.service.version=1.2.0").unwrap();
        assert_eq!((f.key.as_str(), f.op, f.scope), ("service.version", CompareOp::Eq, AttributeScope::Resource));
        let f = AttributeFilter::parse("http.route=~/api/.*").unwrap();
        assert_eq!(f.op, CompareOp::Regex);
        assert!(AttributeFilter::parse("novalue").is_err());
        assert!(AttributeFilter::parse("a>abc").is_err());
        let f = AttributeFilter::parse("http.response.status_code>=500").unwrap();
        assert_eq!(f.sql(), "http_status_code >= 500");
        let f = AttributeFilter::parse("resource.http.response.status_code>=500").unwrap();
        assert!(f.sql().contains("resource_attributes"), "{}", f.sql());
        let f = AttributeFilter::parse("user.name!=o'brien").unwrap();
        assert!(f.sql().contains("'o''brien'"), "{}", f.sql());
    }
}
