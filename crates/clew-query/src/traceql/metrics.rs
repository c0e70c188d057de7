//! TraceQL metrics: `{ filter } | rate() by (field)` and the other `*_over_time` functions, as
//! time series over a window cut into steps.
//!
//! Two ways to the same answer. A query that is one spanset filter SQL can state exactly, with
//! `by()` fields and an aggregated field that are columns, is one grouped DataFusion scan: the
//! spans never leave the engine. Anything else (structural operators, pipelines, `!~`, fields
//! SQL cannot read) takes the candidate traces the search prefilter finds, assembles them and
//! evaluates the query on each, counting the spans of every matching spanset; that path reads
//! at most [`MAX_TRACES`] traces and says so when it stops early.
//!
//! Quantiles and histograms come from buckets eight to a power of two (at most 9% wide), so a
//! quantile is interpolated within a bucket and clamped to the values seen: within about 4%
//! of the exact value, where Tempo's own buckets are a power of two wide.

use std::collections::{BTreeMap, HashMap};

use datafusion::arrow::array::{Array, AsArray};
use datafusion::arrow::datatypes::{Float64Type, Int64Type};
use futures::StreamExt;
use serde::Serialize;

use super::{AttrScope, Field, Intrinsic, Metrics, MetricsFunction, Query, Rank, field_values};
use crate::{QueryEngine, QueryError};

/// Sample points per series at most (as Prometheus allows).
pub const MAX_POINTS: u64 = 11_000;
/// Distinct `by()` groups at most; spans of further groups are left out and the answer says so.
pub const MAX_SERIES: usize = 1_000;
/// Traces evaluated at most by a query SQL cannot answer alone.
pub const MAX_TRACES: usize = 20_000;
/// Sub-buckets per power of two.
const SUB_BUCKETS: f64 = 8.0;

#[derive(Debug, Clone)]
pub struct MetricsRequest {
    /// Spans starting within [start, end) (Unix ns) are counted.
    pub start_unix_nano: u64,
    pub end_unix_nano: u64,
    pub step_nanos: u64,
    /// Evaluate every candidate trace even where one SQL scan could answer: slower, for
    /// checking the scan against the evaluation.
    pub evaluate_traces: bool,
}

/// A label's value.
#[derive(Debug, Clone, PartialEq, PartialOrd, Serialize)]
#[serde(untagged)]
pub enum LabelValue {
    /// The span has no value for the field.
    Nil,
    Str(String),
    Float(f64),
}

impl LabelValue {
    pub fn text(&self) -> String {
        match self {
            LabelValue::Nil => "nil".into(),
            LabelValue::Str(s) => s.clone(),
            LabelValue::Float(f) => f.to_string(),
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Series {
    /// (field as written, value); `p` for a quantile, `__bucket` for a histogram bucket (its
    /// upper bound, in seconds for durations).
    pub labels: Vec<(String, LabelValue)>,
    /// (Unix ms at the start of the step, value).
    pub samples: Vec<(u64, f64)>,
}

#[derive(Debug, Clone, Serialize)]
pub struct MetricsResult {
    pub function: String,
    /// What the values count or measure: `spans/s`, `spans`, `seconds`, or the attribute's own
    /// unit (empty).
    pub unit: &'static str,
    pub start_unix_nano: u64,
    pub end_unix_nano: u64,
    pub step_nanos: u64,
    pub series: Vec<Series>,
    /// Spans counted.
    pub matched_spans: u64,
    /// `sql` (one grouped scan) or `traces` (each candidate trace evaluated).
    pub path: &'static str,
    pub inspected_traces: usize,
    /// Why the answer may be incomplete (too many groups or traces).
    pub partial: Option<String>,
}

/// What one step of one group holds.
#[derive(Debug, Clone, Default)]
struct Cell {
    count: u64,
    values: u64,
    min: f64,
    max: f64,
    sum: f64,
    /// Sub-bucket index → count; `i64::MIN` holds values ≤ 0.
    buckets: BTreeMap<i64, u64>,
}

impl Cell {
    fn add_values(&mut self, n: u64, min: f64, max: f64, sum: f64) {
        if n == 0 {
            return;
        }
        if self.values == 0 {
            (self.min, self.max) = (min, max);
        } else {
            self.min = self.min.min(min);
            self.max = self.max.max(max);
        }
        self.values += n;
        self.sum += sum;
    }

    /// The q-quantile, interpolated geometrically within its bucket.
    fn quantile(&self, q: f64) -> Option<f64> {
        let total: u64 = self.buckets.values().sum();
        if total == 0 {
            return None;
        }
        let rank = q * total as f64;
        let mut below = 0u64;
        for (&bucket, &count) in &self.buckets {
            if (below + count) as f64 >= rank {
                if bucket == i64::MIN {
                    return Some(self.min.min(0.0));
                }
                let upper = (bucket as f64 / SUB_BUCKETS).exp2();
                let lower = ((bucket - 1) as f64 / SUB_BUCKETS).exp2();
                let fraction = ((rank - below as f64) / count as f64).clamp(0.0, 1.0);
                return Some((lower * (upper / lower).powf(fraction)).clamp(self.min, self.max));
            }
            below += count;
        }
        Some(self.max)
    }
}

/// The sub-bucket of a value: ⌈8·log2 v⌉, the same formula as the SQL path's.
fn bucket_of(value: f64) -> i64 {
    if value > 0.0 { (value.log2() * SUB_BUCKETS).ceil() as i64 } else { i64::MIN }
}

struct Accumulator {
    steps: usize,
    groups: HashMap<Vec<LabelValue>, Vec<Cell>>,
    dropped_groups: bool,
    matched: u64,
}

impl Accumulator {
    fn cells(&mut self, group: Vec<LabelValue>) -> Option<&mut Vec<Cell>> {
        if !self.groups.contains_key(&group) {
            if self.groups.len() >= MAX_SERIES {
                self.dropped_groups = true;
                return None;
            }
            self.groups.insert(group.clone(), vec![Cell::default(); self.steps]);
        }
        self.groups.get_mut(&group)
    }
}

// LabelValue holds f64 only for `p` and `__bucket`, never in a group key read from spans, so
// equality is total there.
impl Eq for LabelValue {}
impl std::hash::Hash for LabelValue {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        match self {
            LabelValue::Nil => 0u8.hash(state),
            LabelValue::Str(s) => s.hash(state),
            LabelValue::Float(f) => f.to_bits().hash(state),
        }
    }
}

/// Whether a field holds durations (reported in seconds, as Tempo does).
fn is_duration(field: &Field) -> bool {
    matches!(field, Field::Intrinsic(Intrinsic::Duration | Intrinsic::TraceDuration | Intrinsic::EventTimeSinceStart))
}

/// The SQL for a field's value as text, where a column holds it.
fn text_column(field: &Field) -> Option<String> {
    Some(match field {
        Field::Intrinsic(intrinsic) => match intrinsic {
            Intrinsic::Name => "name".into(),
            Intrinsic::Status => "status_code".into(),
            Intrinsic::StatusMessage => "status_message".into(),
            Intrinsic::Kind => "kind".into(),
            Intrinsic::RootName => "trace_root_name".into(),
            Intrinsic::RootService => "trace_root_service".into(),
            Intrinsic::ScopeName => "scope_name".into(),
            Intrinsic::ScopeVersion => "scope_version".into(),
            _ => return None,
        },
        Field::Attribute { scope, key } => super::attribute_column(*scope, key)?,
    })
}

/// The SQL for a field's value as a number.
fn number_column(field: &Field) -> Option<String> {
    Some(match field {
        Field::Intrinsic(Intrinsic::Duration) => "CAST(duration_nanos AS DOUBLE)".into(),
        Field::Intrinsic(Intrinsic::TraceDuration) => "CAST(trace_duration_nanos AS DOUBLE)".into(),
        Field::Intrinsic(Intrinsic::ChildCount) | Field::Intrinsic(_) => return None,
        Field::Attribute { scope: AttrScope::Span, key } if key == "http.response.status_code" || key == "http.status_code" => {
            "CAST(http_status_code AS DOUBLE)".into()
        }
        Field::Attribute { scope, key } => format!("try_cast({} AS DOUBLE)", super::attribute_column(*scope, key)?),
    })
}

/// The step when none is asked for: the window in 240 steps, rounded down to a multiple of 5 s
/// (whole seconds under 5 s), at least 1 s; as Tempo chooses it.
pub fn default_step(start_unix_nano: u64, end_unix_nano: u64) -> u64 {
    let raw = end_unix_nano.saturating_sub(start_unix_nano) / 240;
    let rounded = if raw >= 5_000_000_000 { raw / 5_000_000_000 * 5_000_000_000 } else { raw / 1_000_000_000 * 1_000_000_000 };
    rounded.max(1_000_000_000)
}

impl QueryEngine {
    /// Evaluates a TraceQL metrics query over a window.
    pub async fn traceql_metrics(&self, text: &str, request: &MetricsRequest) -> Result<MetricsResult, QueryError> {
        let query = super::parse(text).map_err(|e| QueryError::Invalid(e.to_string()))?;
        self.run_traceql_metrics(&query, request).await
    }

    pub async fn run_traceql_metrics(&self, query: &Query, request: &MetricsRequest) -> Result<MetricsResult, QueryError> {
        let Some(metrics) = &query.metrics else {
            return Err(QueryError::Invalid(
                "not a metrics query: end it with a metrics function, e.g. { status = error } | rate() by (resource.service.name)".into(),
            ));
        };
        if request.step_nanos == 0 {
            return Err(QueryError::Invalid("step must be positive".into()));
        }
        if request.end_unix_nano <= request.start_unix_nano {
            return Err(QueryError::Invalid("end must be after start".into()));
        }
        // Steps of a range are aligned to multiples of the step, so that the same step always
        // covers the same spans whatever window asked for it; one step (an instant query) is
        // the window itself.
        let step = request.step_nanos;
        let aligned;
        let request = if request.end_unix_nano - request.start_unix_nano > step {
            aligned = MetricsRequest {
                start_unix_nano: request.start_unix_nano / step * step,
                end_unix_nano: request.end_unix_nano.div_ceil(step).saturating_mul(step),
                step_nanos: step,
                evaluate_traces: request.evaluate_traces,
            };
            &aligned
        } else {
            request
        };
        let steps = (request.end_unix_nano - request.start_unix_nano) / step;
        if steps > MAX_POINTS {
            return Err(QueryError::Invalid(format!(
                "{steps} steps exceed the limit of {MAX_POINTS} points per series: choose a larger step or a shorter window"
            )));
        }
        let mut accumulator = Accumulator { steps: steps as usize, groups: HashMap::new(), dropped_groups: false, matched: 0 };
        let plan = if request.evaluate_traces { None } else { sql_plan(query, metrics) };
        let (path, inspected, partial_traces) = match plan {
            Some(plan) => {
                self.metrics_by_sql(&plan, metrics, request, &mut accumulator).await?;
                ("sql", 0, false)
            }
            None => {
                let (inspected, partial) = self.metrics_by_traces(query, metrics, request, &mut accumulator).await?;
                ("traces", inspected, partial)
            }
        };
        let mut partial = Vec::new();
        if accumulator.dropped_groups {
            partial.push(format!("more than {MAX_SERIES} groups: spans of the others are left out"));
        }
        if partial_traces {
            partial.push(format!("the query needed every trace evaluated; only the newest {MAX_TRACES} candidate traces were"));
        }
        let series = series(metrics, request, &accumulator);
        let unit = match &metrics.function {
            MetricsFunction::Rate => "spans/s",
            MetricsFunction::CountOverTime | MetricsFunction::HistogramOverTime(_) => "spans",
            other if other.field().is_some_and(is_duration) => "seconds",
            _ => "",
        };
        Ok(MetricsResult {
            function: metrics.function.name().into(),
            unit,
            start_unix_nano: request.start_unix_nano,
            end_unix_nano: request.end_unix_nano,
            step_nanos: request.step_nanos,
            series,
            matched_spans: accumulator.matched,
            path,
            inspected_traces: inspected,
            partial: (!partial.is_empty()).then(|| partial.join("; ")),
        })
    }

    async fn metrics_by_sql(
        &self,
        plan: &SqlPlan,
        metrics: &Metrics,
        request: &MetricsRequest,
        accumulator: &mut Accumulator,
    ) -> Result<(), QueryError> {
        let (start, end, step) = (request.start_unix_nano, request.end_unix_nano, request.step_nanos);
        let mut select = vec![format!("CAST((start_time_unix_nano - {start}) / {step} AS BIGINT) AS step_index")];
        let mut group = vec!["step_index".to_string()];
        for (i, column) in plan.groups.iter().enumerate() {
            select.push(format!("CAST({column} AS VARCHAR) AS g{i}"));
            group.push(format!("g{i}"));
        }
        let histogram = matches!(metrics.function, MetricsFunction::QuantileOverTime(..) | MetricsFunction::HistogramOverTime(_));
        if let Some(value) = &plan.value {
            if histogram {
                select.push(format!("CASE WHEN {value} > 0 THEN CAST(ceil(log2({value}) * {SUB_BUCKETS}) AS BIGINT) END AS bucket"));
                group.push("bucket".into());
            }
            select.push(format!("count(*) AS n, count({value}) AS nv, min({value}) AS lo, max({value}) AS hi, sum({value}) AS total"));
        } else {
            select.push("count(*) AS n".into());
        }
        let sql = format!(
            "SELECT {} FROM spans WHERE start_time_unix_nano >= {start} AND start_time_unix_nano < {end} AND ({}) GROUP BY {}",
            select.join(", "),
            plan.condition,
            group.join(", ")
        );
        let mut stream = self.context.sql(&sql).await?.execute_stream().await?;
        let groups = plan.groups.len();
        while let Some(batch) = stream.next().await {
            let batch = batch?;
            let index = batch.column(0).as_primitive::<Int64Type>();
            // Text may come back as Utf8 or Utf8View depending on the plan.
            let text: Vec<_> = (0..groups)
                .map(|i| datafusion::arrow::compute::cast(batch.column(1 + i), &datafusion::arrow::datatypes::DataType::Utf8))
                .collect::<Result<_, _>>()?;
            let labels: Vec<_> = text.iter().map(|column| column.as_string::<i32>()).collect();
            let mut next = 1 + groups;
            let bucket = histogram.then(|| {
                next += 1;
                batch.column(next - 1).as_primitive::<Int64Type>()
            });
            let count = batch.column(next).as_primitive::<Int64Type>();
            let values = plan.value.as_ref().map(|_| {
                (
                    batch.column(next + 1).as_primitive::<Int64Type>(),
                    batch.column(next + 2).as_primitive::<Float64Type>(),
                    batch.column(next + 3).as_primitive::<Float64Type>(),
                    batch.column(next + 4).as_primitive::<Float64Type>(),
                )
            });
            for row in 0..batch.num_rows() {
                let step_index = index.value(row) as usize;
                let key: Vec<LabelValue> = labels
                    .iter()
                    .map(|column| if column.is_null(row) { LabelValue::Nil } else { LabelValue::Str(column.value(row).to_string()) })
                    .collect();
                accumulator.matched += count.value(row) as u64;
                let Some(cells) = accumulator.cells(key) else { continue };
                let Some(cell) = cells.get_mut(step_index) else { continue };
                cell.count += count.value(row) as u64;
                if let Some((n, lo, hi, total)) = &values {
                    let n = n.value(row) as u64;
                    if n > 0 {
                        cell.add_values(n, lo.value(row), hi.value(row), total.value(row));
                        if let Some(bucket) = &bucket {
                            let b = if bucket.is_null(row) { i64::MIN } else { bucket.value(row) };
                            *cell.buckets.entry(b).or_default() += n;
                        }
                    }
                }
            }
        }
        Ok(())
    }

    /// Evaluates the query on each candidate trace. Returns the traces inspected and whether
    /// the cap stopped the search.
    async fn metrics_by_traces(
        &self,
        query: &Query,
        metrics: &Metrics,
        request: &MetricsRequest,
        accumulator: &mut Accumulator,
    ) -> Result<(usize, bool), QueryError> {
        let (start, end, step) = (request.start_unix_nano, request.end_unix_nano, request.step_nanos);
        let field = metrics.function.field();
        self.evaluate_candidates(query, start, end, |view, context, matched| {
            for &index in matched {
                let span_start = view.trace.spans[index].start_time_unix_nano;
                let key: Vec<LabelValue> = metrics
                    .by
                    .iter()
                    .map(|by| {
                        field_values(by, index, context).first().map(|v| LabelValue::Str(super::value_text(v))).unwrap_or(LabelValue::Nil)
                    })
                    .collect();
                accumulator.matched += 1;
                let Some(cells) = accumulator.cells(key) else { continue };
                let cell = &mut cells[((span_start - start) / step) as usize];
                cell.count += 1;
                let value = field.and_then(|f| field_values(f, index, context).first().and_then(super::eval::number));
                if let Some(value) = value {
                    cell.add_values(1, value, value, value);
                    *cell.buckets.entry(bucket_of(value)).or_default() += 1;
                }
            }
        })
        .await
    }
}

/// A query one grouped SQL scan answers exactly.
#[derive(Debug, Clone, PartialEq)]
struct SqlPlan {
    condition: String,
    groups: Vec<String>,
    value: Option<String>,
}

fn sql_plan(query: &Query, metrics: &Metrics) -> Option<SqlPlan> {
    let condition = super::exact_filter(query)?;
    let groups = metrics.by.iter().map(text_column).collect::<Option<Vec<_>>>()?;
    let value = match metrics.function.field() {
        Some(field) => Some(number_column(field)?),
        None => None,
    };
    Some(SqlPlan { condition, groups, value })
}

/// A field as written in a query, scope included (`resource.service.name`), as Tempo labels
/// series.
fn written(field: &Field) -> String {
    match field {
        Field::Attribute { scope, key } => {
            let prefix = match scope {
                AttrScope::Span => "span.",
                AttrScope::Resource => "resource.",
                AttrScope::Any => ".",
                AttrScope::Event => "event.",
                AttrScope::Link => "link.",
                AttrScope::Instrumentation => "instrumentation.",
            };
            format!("{prefix}{key}")
        }
        intrinsic => super::field_name(intrinsic),
    }
}

/// The accumulated cells as series, with `topk`/`bottomk` applied.
fn series(metrics: &Metrics, request: &MetricsRequest, accumulator: &Accumulator) -> Vec<Series> {
    let step_seconds = request.step_nanos as f64 / 1e9;
    let timestamp = |i: usize| (request.start_unix_nano + i as u64 * request.step_nanos) / 1_000_000;
    let unit = if metrics.function.field().is_some_and(is_duration) { 1e9 } else { 1.0 };
    let names: Vec<String> = metrics.by.iter().map(written).collect();
    let mut out = Vec::new();
    let mut groups: Vec<_> = accumulator.groups.iter().collect();
    groups.sort_by(|a, b| a.0.partial_cmp(b.0).unwrap_or(std::cmp::Ordering::Equal));
    for (key, cells) in groups {
        let labels: Vec<(String, LabelValue)> = names.iter().cloned().zip(key.iter().cloned()).collect();
        let mut push = |extra: Option<(&str, f64)>, samples: Vec<(u64, f64)>| {
            let mut labels = labels.clone();
            if let Some((name, value)) = extra {
                labels.push((name.to_string(), LabelValue::Float(value)));
            }
            out.push(Series { labels, samples });
        };
        let each = |value: &dyn Fn(&Cell) -> Option<f64>| -> Vec<(u64, f64)> {
            cells.iter().enumerate().filter_map(|(i, cell)| value(cell).map(|v| (timestamp(i), v))).collect()
        };
        match &metrics.function {
            MetricsFunction::Rate => push(None, each(&|c| Some(c.count as f64 / step_seconds))),
            MetricsFunction::CountOverTime => push(None, each(&|c| Some(c.count as f64))),
            MetricsFunction::MinOverTime(_) => push(None, each(&|c| (c.values > 0).then(|| c.min / unit))),
            MetricsFunction::MaxOverTime(_) => push(None, each(&|c| (c.values > 0).then(|| c.max / unit))),
            MetricsFunction::AvgOverTime(_) => push(None, each(&|c| (c.values > 0).then(|| c.sum / c.values as f64 / unit))),
            MetricsFunction::SumOverTime(_) => push(None, each(&|c| (c.values > 0).then(|| c.sum / unit))),
            MetricsFunction::QuantileOverTime(_, quantiles) => {
                for &q in quantiles {
                    push(Some(("p", q)), each(&|c| c.quantile(q).map(|v| v / unit)));
                }
            }
            MetricsFunction::HistogramOverTime(_) => {
                // Sub-buckets folded into powers of two: ⌈b/8⌉ = ⌈log2 v⌉.
                let mut powers: BTreeMap<i64, Vec<u64>> = BTreeMap::new();
                for (i, cell) in cells.iter().enumerate() {
                    for (&bucket, &count) in &cell.buckets {
                        let power = if bucket == i64::MIN { i64::MIN } else { (bucket as f64 / SUB_BUCKETS).ceil() as i64 };
                        powers.entry(power).or_insert_with(|| vec![0; cells.len()])[i] += count;
                    }
                }
                for (power, counts) in powers {
                    let upper = if power == i64::MIN { 0.0 } else { (power as f64).exp2() / unit };
                    push(Some(("__bucket", upper)), counts.iter().enumerate().map(|(i, &n)| (timestamp(i), n as f64)).collect());
                }
            }
        }
    }
    if let Some(rank) = metrics.rank {
        rank_series(&mut out, rank);
    }
    out
}

/// Keeps, at each timestamp, the samples of the n highest (lowest) series; series left with no
/// sample are dropped.
fn rank_series(series: &mut Vec<Series>, rank: Rank) {
    let mut at: BTreeMap<u64, Vec<(f64, usize)>> = BTreeMap::new();
    for (i, s) in series.iter().enumerate() {
        for &(t, v) in &s.samples {
            if !v.is_nan() {
                at.entry(t).or_default().push((v, i));
            }
        }
    }
    let mut keep: std::collections::HashSet<(usize, u64)> = std::collections::HashSet::new();
    for (t, mut values) in at {
        let n = match rank {
            Rank::Top(n) => {
                values.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
                n
            }
            Rank::Bottom(n) => {
                values.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
                n
            }
        };
        keep.extend(values.into_iter().take(n).map(|(_, i)| (i, t)));
    }
    for (i, s) in series.iter_mut().enumerate() {
        s.samples.retain(|(t, _)| keep.contains(&(i, *t)));
    }
    series.retain(|s| !s.samples.is_empty());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_come_within_five_percent() {
        let mut cell = Cell::default();
        let values: Vec<f64> = (1..=10_000).map(|i| i as f64 * 1_000.0).collect();
        for &v in &values {
            cell.add_values(1, v, v, v);
            *cell.buckets.entry(bucket_of(v)).or_default() += 1;
        }
        for q in [0.5, 0.9, 0.99] {
            let exact = values[(q * values.len() as f64) as usize - 1];
            let estimate = cell.quantile(q).unwrap();
            assert!((estimate - exact).abs() / exact < 0.05, "q{q}: {estimate} vs {exact}");
        }
        assert_eq!(cell.quantile(1.0), Some(10_000_000.0));
        assert!(cell.quantile(0.0).unwrap() >= 1_000.0);
    }

    #[test]
    fn buckets_fold_into_powers_of_two() {
        for v in [1.0f64, 2.0, 3.0, 1000.0, 1024.0, 1025.0, 0.3] {
            let fine = bucket_of(v);
            assert_eq!((fine as f64 / SUB_BUCKETS).ceil() as i64, v.log2().ceil() as i64, "{v}");
        }
        assert_eq!(bucket_of(0.0), i64::MIN);
    }

    #[test]
    fn topk_keeps_the_highest_at_each_timestamp() {
        let make = |name: &str, samples: Vec<(u64, f64)>| Series { labels: vec![("s".into(), LabelValue::Str(name.into()))], samples };
        let mut series =
            vec![make("a", vec![(0, 1.0), (1, 9.0)]), make("b", vec![(0, 5.0), (1, 2.0)]), make("c", vec![(0, 3.0), (1, 1.0)])];
        rank_series(&mut series, Rank::Top(1));
        let names: Vec<_> = series.iter().map(|s| (s.labels[0].1.text(), s.samples.clone())).collect();
        assert_eq!(names, vec![("a".to_string(), vec![(1, 9.0)]), ("b".to_string(), vec![(0, 5.0)])]);
        let mut series = vec![make("a", vec![(0, 1.0)]), make("b", vec![(0, 5.0)])];
        rank_series(&mut series, Rank::Bottom(1));
        assert_eq!(series.len(), 1);
        assert_eq!(series[0].labels[0].1, LabelValue::Str("a".into()));
    }

    #[test]
    fn plans_sql_only_for_exact_filters() {
        let plan = |text: &str| {
            let query = super::super::parse(text).unwrap();
            sql_plan(&query, query.metrics.as_ref().unwrap())
        };
        let simple = plan("{ resource.service.name = \"api\" && status = error } | rate() by (span.http.route)").unwrap();
        assert!(simple.condition.contains("service_name = 'api'"), "{simple:?}");
        assert_eq!(simple.groups, vec!["http_route".to_string()]);
        assert_eq!(
            plan("{ } | quantile_over_time(duration, .5) by (name)").unwrap().value.as_deref(),
            Some("CAST(duration_nanos AS DOUBLE)")
        );
        assert!(plan("{ .a = 1 } >> { .b = 2 } | rate()").is_none());
        assert!(plan("{ .a = 1 } | count() > 2 | rate()").is_none());
        assert!(plan("{ .a !~ \"x.*\" } | rate()").is_none());
        assert!(plan("{ } | rate() by (span:id)").is_none());
    }
}
