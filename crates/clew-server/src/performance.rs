//! Performance analytics on the query port: the critical path across traces of an entry
//! operation (a flame graph, its bottlenecks, what changed against a baseline), the bottlenecks
//! over every entry operation, and traffic estimation from fan-out.

use axum::extract::{RawQuery, State};
use axum::response::Response;
use clew_analysis::traffic::PlannedRate;
use clew_query::{EntryFilter, TrafficFilter};

use crate::adoption::{format_param, respond, text};
use crate::api::{ApiError, ApiState, load_trace, only_params, pairs, param, parse_duration_nanos, window};

/// `faster`: the percentage in "time saved if it were N% faster" (20 by default).
fn faster_param(pairs: &[(String, String)]) -> Result<f64, ApiError> {
    match param(pairs, "faster") {
        None => Ok(20.0),
        Some(text) => match text.trim_end_matches('%').parse::<f64>() {
            Ok(value) if (0.0..=100.0).contains(&value) => Ok(value),
            _ => Err(ApiError::bad_request(format!("faster is a percentage between 0 and 100, not {text:?}"))),
        },
    }
}

/// `baseline`: `previous` (the window of the same length just before) or a duration to shift
/// the window back by (`1d`: the same hours yesterday).
fn baseline_window(pairs: &[(String, String)], start: u64, end: u64) -> Result<Option<(u64, u64)>, ApiError> {
    let Some(baseline) = param(pairs, "baseline") else {
        return Ok(None);
    };
    let shift = if baseline == "previous" {
        end - start
    } else {
        parse_duration_nanos(baseline)
            .map_err(|e| ApiError::bad_request(format!("baseline is `previous` or a duration to shift the window back by: {e}")))?
    };
    if shift == 0 || shift > start {
        return Err(ApiError::bad_request("the baseline window must start after 1970"));
    }
    Ok(Some((start - shift, end - shift)))
}

/// `traffic`: which traffic sources to read. `production` (every source but load tests),
/// `load-test`, `all`, or `source:<name>` (`source:` alone: traffic that names none).
fn traffic_param(state: &ApiState, pairs: &[(String, String)], default: &str) -> Result<(String, TrafficFilter), ApiError> {
    let load_tests = state.store.config().load_test_sources.clone();
    let value = param(pairs, "traffic").unwrap_or(default);
    let filter = match value {
        "production" => TrafficFilter::Except(load_tests),
        "load-test" => TrafficFilter::Only(load_tests),
        "all" => TrafficFilter::All,
        other => match other.strip_prefix("source:") {
            Some(source) => TrafficFilter::Only(vec![source.to_string()]),
            None => {
                return Err(ApiError::bad_request(format!("traffic is production, load-test, all or source:<name>, not {value:?}")));
            }
        },
    };
    Ok((value.to_string(), filter))
}

/// `GET /api/v1/critical-path?service=&operation=`: the calling-context tree of an entry
/// operation with each context's time on the critical path, its bottlenecks and, with
/// `baseline`, what changed. `start`/`end`/`lookback`, `faster`, `traffic` (all by default),
/// `format=json|markdown|table|folded`.
pub(crate) async fn critical_path(State(state): State<ApiState>, RawQuery(raw): RawQuery) -> Result<Response, ApiError> {
    let pairs = pairs(raw)?;
    only_params(&pairs, &["start", "end", "lookback", "service", "operation", "faster", "baseline", "traffic", "format"])?;
    let format = format_param(&pairs, &["json", "markdown", "table", "folded"])?;
    let (Some(service), Some(operation)) = (param(&pairs, "service"), param(&pairs, "operation")) else {
        return Err(ApiError::bad_request("service and operation name the entry operation (see /api/v1/flows)"));
    };
    let (start, end) = window(&pairs)?;
    let faster = faster_param(&pairs)?;
    let baseline = baseline_window(&pairs, start, end)?;
    let (_, traffic) = traffic_param(&state, &pairs, "all")?;
    let entry = EntryFilter { service: Some(service.into()), operation: Some(operation.into()) };
    let rows = state.query.calling_contexts(start, end, &entry, &traffic, false).await?;
    let before = match baseline {
        Some((from, to)) => Some(((from, to), state.query.calling_contexts(from, to, &entry, &traffic, false).await?)),
        None => None,
    };
    let report = clew_analysis::critical_path::critical_path(
        service,
        operation,
        (start, end),
        &rows,
        faster,
        before.as_ref().map(|(window, rows)| (*window, rows.as_slice())),
    );
    if format == "folded" {
        return Ok(text("text/plain; charset=utf-8", report.to_folded()));
    }
    Ok(respond(&report, format, &[], || report.to_markdown(), || report.to_table()))
}

/// `GET /api/v1/bottlenecks`: operations ranked by their time on the critical path over every
/// entry operation. `start`/`end`/`lookback`, `faster`, `traffic` (all by default: `load-test`
/// shows what a load test is held up by), `format=json|markdown|table`.
pub(crate) async fn bottlenecks(State(state): State<ApiState>, RawQuery(raw): RawQuery) -> Result<Response, ApiError> {
    let pairs = pairs(raw)?;
    only_params(&pairs, &["start", "end", "lookback", "faster", "traffic", "format"])?;
    let format = format_param(&pairs, &["json", "markdown", "table"])?;
    let (start, end) = window(&pairs)?;
    let faster = faster_param(&pairs)?;
    let (_, traffic) = traffic_param(&state, &pairs, "all")?;
    let rows = state.query.calling_contexts(start, end, &EntryFilter::default(), &traffic, false).await?;
    let report = clew_analysis::critical_path::bottlenecks((start, end), &rows, faster);
    Ok(respond(&report, format, &[], || report.to_markdown(), || report.to_table()))
}

/// A planned rate: `<rate> <service> <operation>`, the rate per second (`50`, `50/s`) or per
/// minute (`3000/m`).
fn planned_rate(text: &str) -> Result<PlannedRate, ApiError> {
    let invalid =
        || ApiError::bad_request(format!("plan is `<rate> <service> <operation>` (e.g. `50/s web-gateway POST /checkout`), not {text:?}"));
    let mut parts = text.trim().splitn(3, ' ');
    let (Some(rate), Some(service), Some(operation)) = (parts.next(), parts.next(), parts.next()) else {
        return Err(invalid());
    };
    let (number, per) = match rate.split_once('/') {
        Some((number, "s")) => (number, 1.0),
        Some((number, "m")) => (number, 60.0),
        Some((number, "h")) => (number, 3600.0),
        Some(_) => return Err(invalid()),
        None => (rate, 1.0),
    };
    let per_second = number.parse::<f64>().ok().filter(|r| r.is_finite() && *r >= 0.0).ok_or_else(invalid)? / per;
    Ok(PlannedRate { service: service.to_string(), operation: operation.trim().to_string(), per_second })
}

/// `GET /api/v1/traffic-estimate?plan=50/s web-gateway POST /checkout`: the rate every server
/// and consumer operation should expect under the planned rates (other entry operations at
/// `others` times their observed mean rate), against the busiest minute it has handled.
/// `start`/`end`/`lookback` (the baseline window), `traffic` (production by default: load
/// tests left out), `format=json|markdown|table|csv`.
///
/// With `measure=load-test`, the plan is the load test's own entry rates in the window and
/// each operation shows what the test measured against what the fan-out of `traffic` expects
/// (in the same window, or the `baseline` one: `previous` or a shift such as `1d`).
pub(crate) async fn traffic_estimate(State(state): State<ApiState>, RawQuery(raw): RawQuery) -> Result<Response, ApiError> {
    let pairs = pairs(raw)?;
    only_params(&pairs, &["start", "end", "lookback", "plan", "others", "traffic", "measure", "baseline", "format"])?;
    let format = format_param(&pairs, &["json", "markdown", "table", "csv"])?;
    let (start, end) = window(&pairs)?;
    let plan = pairs.iter().filter(|(k, v)| k == "plan" && !v.is_empty()).map(|(_, v)| planned_rate(v)).collect::<Result<Vec<_>, _>>()?;
    let others = match param(&pairs, "others") {
        None => 1.0,
        Some(text) => text
            .trim_end_matches('x')
            .parse::<f64>()
            .ok()
            .filter(|f| f.is_finite() && *f >= 0.0)
            .ok_or_else(|| ApiError::bad_request(format!("others is a factor such as 1 or 2.5, not {text:?}")))?,
    };
    let (traffic_name, traffic) = traffic_param(&state, &pairs, "production")?;
    let measure = match param(&pairs, "measure") {
        None | Some("") => false,
        Some("load-test") => true,
        Some(other) => return Err(ApiError::bad_request(format!("measure is load-test, not {other:?}"))),
    };
    if measure && !plan.is_empty() {
        return Err(ApiError::bad_request("measure=load-test takes its plan from the load test's measured entry rates: leave plan out"));
    }
    if !measure && param(&pairs, "baseline").is_some() {
        return Err(ApiError::bad_request("baseline goes with measure=load-test"));
    }
    let (base_start, base_end) = baseline_window(&pairs, start, end)?.unwrap_or((start, end));
    let entry = EntryFilter::default();
    let read_per_minute = clew_analysis::traffic::read_per_minute;
    let (rows, per_minute) = state.query.calling_contexts_and_minutes(base_start, base_end, &entry, &traffic, read_per_minute).await?;
    let load_tests = state.store.config().load_test_sources.clone();
    let mut estimate = if measure {
        let tests = TrafficFilter::Only(load_tests.clone());
        let (test_rows, test_per_minute) = state.query.calling_contexts_and_minutes(start, end, &entry, &tests, read_per_minute).await?;
        clew_analysis::traffic::measure_load_test((start, end), (&rows, &per_minute), (&test_rows, &test_per_minute))
    } else {
        clew_analysis::traffic::estimate((start, end), &rows, &per_minute, plan, others)
    };
    estimate.traffic = traffic_name;
    estimate.sources = state
        .query
        .traffic_sources(start, end)
        .await?
        .into_iter()
        .map(|(source, requests)| clew_analysis::traffic::TrafficSource { load_test: load_tests.contains(&source), source, requests })
        .collect();
    if format == "csv" {
        return Ok(text("text/csv; charset=utf-8", estimate.to_csv()));
    }
    Ok(respond(&estimate, format, &estimate.warnings, || estimate.to_markdown(), || estimate.to_table()))
}

/// A time parameter in Unix nanoseconds, when given.
fn unix_nanos_param(pairs: &[(String, String)], key: &str) -> Result<Option<u64>, ApiError> {
    param(pairs, key)
        .map(|text| text.parse::<u64>().map_err(|_| ApiError::bad_request(format!("{key} is a time in Unix nanoseconds, not {text:?}"))))
        .transpose()
}

/// `GET /api/v1/correlations?service=&operation=`: which attribute values set a selection of
/// spans apart from the rest of the scope (`service`, `operation`, `kind`; every span when
/// none is given). The selection is a latency range (`min_duration`/`max_duration`, e.g.
/// `250ms`), optionally within a time range (`from`/`to`, Unix ns: a region of the heatmap);
/// `errors=true`; or `q`, a TraceQL spanset query. Over a scope of more than `sample` spans
/// (200,000 by default; `all` for none) attribute values are counted on a uniform sample of
/// traces. `start`/`end`/`lookback`, `format=json|markdown|table`.
pub(crate) async fn correlations(State(state): State<ApiState>, RawQuery(raw): RawQuery) -> Result<Response, ApiError> {
    let pairs = pairs(raw)?;
    only_params(
        &pairs,
        &[
            "start",
            "end",
            "lookback",
            "service",
            "operation",
            "kind",
            "min_duration",
            "max_duration",
            "from",
            "to",
            "errors",
            "q",
            "sample",
            "format",
        ],
    )?;
    let format = format_param(&pairs, &["json", "markdown", "table"])?;
    let (start, end) = window(&pairs)?;
    let duration = |key: &str| -> Result<Option<i64>, ApiError> {
        param(&pairs, key)
            .map(|text| {
                parse_duration_nanos(text).map(|n| n.min(i64::MAX as u64) as i64).map_err(|e| ApiError::bad_request(format!("{key}: {e}")))
            })
            .transpose()
    };
    let (min, max) = (duration("min_duration")?, duration("max_duration")?);
    let (from, to) = (unix_nanos_param(&pairs, "from")?, unix_nanos_param(&pairs, "to")?);
    let errors = match param(&pairs, "errors") {
        None | Some("false") => false,
        Some("true") => true,
        Some(other) => return Err(ApiError::bad_request(format!("errors is true or false, not {other:?}"))),
    };
    let query = param(&pairs, "q");
    let latency = min.is_some() || max.is_some() || from.is_some() || to.is_some();
    let (selection, described) = match (errors, query, latency) {
        (true, None, false) => (clew_query::Selection::Errors, "failed spans".to_string()),
        (false, Some(q), false) => {
            let parsed = clew_query::traceql::parse(q).map_err(|e| ApiError::bad_request(format!("q: {e}")))?;
            (clew_query::Selection::TraceQl(Box::new(parsed)), format!("spans matching {q}"))
        }
        (false, None, true) => {
            if let (Some(a), Some(b)) = (min, max)
                && a >= b
            {
                return Err(ApiError::bad_request("min_duration must be below max_duration"));
            }
            if let (Some(a), Some(b)) = (from, to)
                && a >= b
            {
                return Err(ApiError::bad_request("from must be before to"));
            }
            let text = |n: i64| format!("{:.1} ms", n as f64 / 1e6);
            let mut described = match (min, max) {
                (Some(a), Some(b)) => format!("spans from {} to {}", text(a), text(b)),
                (Some(a), None) => format!("spans of {} or more", text(a)),
                (None, Some(b)) => format!("spans under {}", text(b)),
                (None, None) => "spans".to_string(),
            };
            if from.is_some() || to.is_some() {
                described.push_str(" started in the chosen time range");
            }
            (clew_query::Selection::Latency { min_nanos: min, max_nanos: max, from_unix_nano: from, to_unix_nano: to }, described)
        }
        (false, None, false) => {
            return Err(ApiError::bad_request(
                "choose the selection: min_duration and/or max_duration (a latency range, with from/to for a region of time), errors=true, or q (a TraceQL query)",
            ));
        }
        _ => return Err(ApiError::bad_request("the selection is one of a latency range, errors=true or q, not several")),
    };
    let sample = match param(&pairs, "sample") {
        None => Some(clew_query::DEFAULT_SAMPLE_SPANS),
        Some("all") => None,
        Some(text) => match text.parse::<u64>() {
            Ok(n) if n >= 1_000 => Some(n),
            _ => return Err(ApiError::bad_request(format!("sample is a number of spans of at least 1000, or all; not {text:?}"))),
        },
    };
    let scope = clew_query::CorrelationScope {
        service: param(&pairs, "service").map(str::to_string),
        operation: param(&pairs, "operation").map(str::to_string),
        kind: param(&pairs, "kind").map(str::to_string),
    };
    if scope.service.is_none() && scope.operation.is_some() {
        return Err(ApiError::bad_request("operation needs its service"));
    }
    let facts = state.query.correlation_facts(&scope, &selection, start, end, sample).await?;
    let report =
        clew_analysis::correlations::correlations(scope.service.as_deref(), scope.operation.as_deref(), described, (start, end), facts);
    Ok(respond(&report, format, &report.warnings, || report.to_markdown(), || report.to_table()))
}

/// `GET /api/v1/compare-groups?a=&b=`: two groups of spans, each a TraceQL spanset query
/// (`{ resource.service.name = "catalog" && resource.service.version = "4.4.0" }` against
/// `… "4.5.0"`), compared by the calls below their matched spans, path by path.
/// `start`/`end`/`lookback` for both, or `a_start`/`a_end` and `b_start`/`b_end` (Unix ns) to
/// compare one query across two windows. `format=json|markdown|table`.
pub(crate) async fn compare_groups(State(state): State<ApiState>, RawQuery(raw): RawQuery) -> Result<Response, ApiError> {
    let pairs = pairs(raw)?;
    only_params(&pairs, &["a", "b", "start", "end", "lookback", "a_start", "a_end", "b_start", "b_end", "format"])?;
    let format = format_param(&pairs, &["json", "markdown", "table"])?;
    let (start, end) = window(&pairs)?;
    let mut groups = Vec::new();
    for name in ["a", "b"] {
        let text = param(&pairs, name).ok_or_else(|| {
            ApiError::bad_request(format!("{name} is required: a TraceQL spanset query, e.g. {{ resource.service.version = \"1.2.0\" }}"))
        })?;
        let query = clew_query::traceql::parse(text).map_err(|e| ApiError::bad_request(format!("{name}: {e}")))?;
        let from = unix_nanos_param(&pairs, &format!("{name}_start"))?.unwrap_or(start);
        let to = unix_nanos_param(&pairs, &format!("{name}_end"))?.unwrap_or(end);
        if from >= to {
            return Err(ApiError::bad_request(format!("{name}_start must be before {name}_end")));
        }
        let tree = state.query.group_tree(&query, from, to).await?;
        groups.push((text.to_string(), tree));
    }
    let b = groups.pop().expect("two groups");
    let a = groups.pop().expect("two groups");
    let report = clew_analysis::groups::compare_groups(a, b, (start, end));
    Ok(respond(&report, format, &report.warnings, || report.to_markdown(), || report.to_table()))
}

/// `GET /api/v1/compare-traces?a=&b=`: two traces (IDs in hex) aligned by the path of
/// (service, operation) from the root: per path, calls, errors, time and critical-path time in
/// each, and what changed. `raw=true` compares the spans as received, without clock-skew
/// adjustment. `format=json|markdown|table`.
pub(crate) async fn compare_traces(State(state): State<ApiState>, RawQuery(raw): RawQuery) -> Result<Response, ApiError> {
    let pairs = pairs(raw)?;
    only_params(&pairs, &["a", "b", "raw", "format"])?;
    let format = format_param(&pairs, &["json", "markdown", "table"])?;
    let adjust_skew = match param(&pairs, "raw") {
        None | Some("false") => true,
        Some("true") => false,
        Some(other) => return Err(ApiError::bad_request(format!("raw is true or false, not {other:?}"))),
    };
    let mut views = Vec::new();
    let mut warnings = Vec::new();
    for name in ["a", "b"] {
        let id = param(&pairs, name).ok_or_else(|| ApiError::bad_request(format!("{name} is required: a trace ID in hex")))?;
        let view = load_trace(&state, id, adjust_skew)
            .await
            .map_err(|ApiError(status, code, message)| ApiError(status, code, format!("{name}: {message}")))?;
        warnings.extend(view.warnings.iter().map(|w| format!("{}: {}", name.to_uppercase(), w.message)));
        views.push(view);
    }
    // Up to a few thousand paths of two large traces: off the async workers.
    let b = views.pop().expect("two traces");
    let a = views.pop().expect("two traces");
    let report = tokio::task::spawn_blocking(move || clew_analysis::trace_diff::compare_traces(&a.trace, &b.trace, warnings))
        .await
        .map_err(|e| ApiError(axum::http::StatusCode::INTERNAL_SERVER_ERROR, "internal", format!("the comparison failed: {e}")))?;
    Ok(respond(&report, format, &report.warnings, || report.to_markdown(), || report.to_table()))
}

/// `GET /api/v1/metrics/query_range?q=`: a TraceQL metrics query (`{ … } | rate() by (…)`,
/// `count_over_time`, `min/max/avg/sum_over_time`, `quantile_over_time`,
/// `histogram_over_time`, `| topk(n)`) as series. `start`/`end`/`lookback`, `step` (the window
/// in 240 steps by default). `instant=true` answers one value per series over the window.
/// `format=json|markdown|table|csv`.
pub(crate) async fn traceql_metrics(State(state): State<ApiState>, RawQuery(raw): RawQuery) -> Result<Response, ApiError> {
    let pairs = pairs(raw)?;
    only_params(&pairs, &["q", "start", "end", "lookback", "step", "instant", "format"])?;
    let format = format_param(&pairs, &["json", "markdown", "table", "csv"])?;
    let q = param(&pairs, "q")
        .ok_or_else(|| ApiError::bad_request("q is required: a TraceQL metrics query such as { } | rate() by (resource.service.name)"))?;
    let (start, end) = window(&pairs)?;
    let instant = match param(&pairs, "instant") {
        None | Some("false") => false,
        Some("true") => true,
        Some(other) => return Err(ApiError::bad_request(format!("instant is true or false, not {other:?}"))),
    };
    let step = match (instant, param(&pairs, "step")) {
        (true, Some(_)) => return Err(ApiError::bad_request("an instant query has no step")),
        (true, None) => end - start,
        (false, Some(step)) => parse_duration_nanos(step).map_err(|e| ApiError::bad_request(format!("step: {e}")))?,
        (false, None) => clew_query::traceql::default_step(start, end),
    };
    let request =
        clew_query::traceql::MetricsRequest { start_unix_nano: start, end_unix_nano: end, step_nanos: step, evaluate_traces: false };
    let result = state.query.traceql_metrics(q, &request).await?;
    use clew_analysis::series;
    if format == "csv" {
        return Ok(text("text/csv; charset=utf-8", series::to_csv(&result)));
    }
    let warnings: Vec<String> = result.partial.iter().cloned().collect();
    Ok(respond(&result, format, &warnings, || series::to_markdown(&result), || series::to_table(&result)))
}
