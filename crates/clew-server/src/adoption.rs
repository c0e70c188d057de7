//! The adoption reports on the query port: instrumentation coverage and propagation health,
//! the rollout plan, the catalog as Clew reads it, and the attribute directory.

use axum::extract::{Path, RawQuery, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use clew_analysis::{Catalog, CoverageReport};
use serde_json::{Value as Json, json};

use crate::api::{ApiError, ApiState, only_params, pairs, param, step_param, window};
use crate::registry::RegistryError;

/// The configured catalog file, read now. A broken file does not stop the reports: they are
/// made without it and say why.
fn read_catalog_file(state: &ApiState) -> (Catalog, Vec<String>) {
    let path = &state.adoption.catalog_file;
    if path.is_empty() {
        return (Catalog::default(), Vec::new());
    }
    match Catalog::load(std::path::Path::new(path)) {
        Ok(catalog) => (catalog, Vec::new()),
        Err(error) => (Catalog::default(), vec![format!("the catalog {path} was not used: {error}")]),
    }
}

/// The catalog file with the critical operations registered over the API after its own.
fn read_catalog(state: &ApiState) -> (Catalog, Vec<String>) {
    let (mut catalog, mut warnings) = read_catalog_file(state);
    match state.operations.read_usable() {
        Ok((registered, unusable)) => {
            warnings.extend(unusable);
            for operation in registered {
                if catalog.critical_operation(&operation.name).is_some() {
                    warnings.push(format!(
                        "the registered critical operation {:?} is not used: the catalog defines one of that name",
                        operation.name
                    ));
                } else {
                    catalog.critical_operations.push(operation);
                }
            }
        }
        Err(error) => warnings.push(error.to_string()),
    }
    (catalog, warnings)
}

/// The body of `PUT /api/v1/critical-operations/{name}`.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Registration {
    #[serde(default)]
    name: Option<String>,
    service: String,
    #[serde(default)]
    operation: Option<String>,
    #[serde(default)]
    route: Option<String>,
    #[serde(default)]
    traceql: Option<String>,
    #[serde(default)]
    description: String,
    /// What the server answers with: accepted so that an answer can be sent back, and ignored.
    #[serde(default, rename = "source")]
    _source: Option<String>,
}

fn registry_error(error: RegistryError) -> ApiError {
    use axum::http::StatusCode;
    match error {
        RegistryError::Invalid(message) => ApiError::bad_request(message),
        RegistryError::Full(_) => ApiError(StatusCode::CONFLICT, "limit", error.to_string()),
        RegistryError::Unreadable { .. } | RegistryError::Io { .. } => {
            tracing::error!(message = "critical operations registry", error = %error);
            ApiError(StatusCode::INTERNAL_SERVER_ERROR, "internal", error.to_string())
        }
    }
}

/// A name the catalog file defines can only be changed there.
fn defined_in_catalog(state: &ApiState, name: &str) -> Result<(), ApiError> {
    let (catalog, _) = read_catalog_file(state);
    match catalog.critical_operation(name) {
        Some(_) => Err(ApiError(
            axum::http::StatusCode::CONFLICT,
            "defined_in_catalog",
            format!("{name:?} is defined in the catalog file {}: change it there", state.adoption.catalog_file),
        )),
        None => Ok(()),
    }
}

/// `PUT /api/v1/critical-operations/{name}` with `{service, operation | route, traceql,
/// description}`: registers a critical operation (201) or replaces the registered one of that
/// name (200). Kept in the data directory across restarts.
pub(crate) async fn register_operation(
    State(state): State<ApiState>,
    Path(name): Path<String>,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    let registration: Registration = serde_json::from_slice(&body).map_err(|e| {
        ApiError::bad_request(format!(
            "the body is a JSON object {{\"service\", \"operation\" or \"route\", \"traceql\", \"description\"}}: {e}"
        ))
    })?;
    if registration.name.as_ref().is_some_and(|n| n != &name) {
        return Err(ApiError::bad_request("the body's name differs from the name in the path"));
    }
    defined_in_catalog(&state, &name)?;
    let definition = clew_analysis::CriticalOperation {
        name,
        service: registration.service,
        operation: registration.operation,
        route: registration.route,
        traceql: registration.traceql,
        description: registration.description,
        source: clew_analysis::catalog::FROM_API.into(),
    };
    let created = state.operations.put(definition.clone()).await.map_err(registry_error)?;
    let status = if created { axum::http::StatusCode::CREATED } else { axum::http::StatusCode::OK };
    Ok((status, axum::Json(definition)).into_response())
}

/// `DELETE /api/v1/critical-operations/{name}`: forgets a registered critical operation (204).
/// A registered operation that the catalog came to define as well is removed all the same.
pub(crate) async fn remove_operation(State(state): State<ApiState>, Path(name): Path<String>) -> Result<Response, ApiError> {
    if state.operations.remove(&name).await.map_err(registry_error)? {
        return Ok(axum::http::StatusCode::NO_CONTENT.into_response());
    }
    defined_in_catalog(&state, &name)?;
    Err(ApiError(axum::http::StatusCode::NOT_FOUND, "not_found", format!("no critical operation {name:?} is registered")))
}

/// The reports' formats.
pub(crate) const REPORT_FORMATS: &[&str] = &["json", "markdown", "table"];

/// `format`, one of `allowed` (the first is the default).
pub(crate) fn format_param<'a>(pairs: &'a [(String, String)], allowed: &[&'static str]) -> Result<&'a str, ApiError> {
    let format = param(pairs, "format").unwrap_or(allowed[0]);
    if !allowed.contains(&format) {
        return Err(ApiError::bad_request(format!("format is one of {}, not {format:?}", allowed.join(", "))));
    }
    Ok(format)
}

pub(crate) fn text(content_type: &'static str, body: String) -> Response {
    ([(header::CONTENT_TYPE, content_type)], body).into_response()
}

/// The report as JSON with the warnings beside it, or as Markdown or a table with the warnings on top.
pub(crate) fn respond<T: serde::Serialize>(
    report: &T,
    format: &str,
    warnings: &[String],
    markdown: impl Fn() -> String,
    table: impl Fn() -> String,
) -> Response {
    let notes: String = warnings.iter().map(|w| format!("> Warning: {w}\n\n")).collect();
    match format {
        "markdown" => text("text/markdown; charset=utf-8", format!("{notes}{}", markdown())),
        "table" => text("text/plain; charset=utf-8", format!("{}{}", notes.replace("> ", ""), table())),
        _ => {
            let mut value = serde_json::to_value(report).unwrap_or(Json::Null);
            if let Json::Object(map) = &mut value {
                map.insert("warnings".into(), json!(warnings));
            }
            axum::Json(value).into_response()
        }
    }
}

async fn coverage_of(
    state: &ApiState,
    pairs: &[(String, String)],
) -> Result<(CoverageReport, clew_query::AdoptionFacts, Catalog, Vec<String>), ApiError> {
    let (start, end) = window(pairs)?;
    let (catalog, warnings) = read_catalog(state);
    let facts = state.query.adoption_facts(start, end, &state.adoption.owner_attributes).await?;
    let report = clew_analysis::coverage(&facts, &catalog);
    Ok((report, facts, catalog, warnings))
}

/// `GET /api/v1/coverage`: per service and team, instrumented or not, whole traces, propagation
/// breaks and the quality findings. `start`/`end`/`lookback`, `format=json|markdown|table`.
pub(crate) async fn coverage(State(state): State<ApiState>, RawQuery(raw): RawQuery) -> Result<Response, ApiError> {
    let pairs = pairs(raw)?;
    only_params(&pairs, &["start", "end", "lookback", "format"])?;
    let format = format_param(&pairs, REPORT_FORMATS)?;
    let (report, _, _, warnings) = coverage_of(&state, &pairs).await?;
    Ok(respond(&report, format, &warnings, || report.to_markdown(), || report.to_table()))
}

/// `GET /api/v1/rollout-plan`: the order in which teams should adopt tracing, with the reasons.
pub(crate) async fn rollout_plan(State(state): State<ApiState>, RawQuery(raw): RawQuery) -> Result<Response, ApiError> {
    let pairs = pairs(raw)?;
    only_params(&pairs, &["start", "end", "lookback", "format"])?;
    let format = format_param(&pairs, REPORT_FORMATS)?;
    let (report, facts, catalog, warnings) = coverage_of(&state, &pairs).await?;
    let plan = clew_analysis::rollout_plan(&report, &facts, &catalog);
    Ok(respond(&plan, format, &warnings, || plan.to_markdown(), || plan.to_table()))
}

/// `GET /api/v1/catalog`: the catalog as Clew reads it, or where it is wrong.
pub(crate) async fn catalog(State(state): State<ApiState>, RawQuery(raw): RawQuery) -> Result<Response, ApiError> {
    only_params(&pairs(raw)?, &[])?;
    let path = &state.adoption.catalog_file;
    if path.is_empty() {
        return Ok(axum::Json(json!({ "file": null, "services": [], "owner_attributes": state.adoption.owner_attributes })).into_response());
    }
    Ok(match Catalog::load(std::path::Path::new(path)) {
        Ok(catalog) => {
            axum::Json(json!({ "file": path, "services": catalog.services, "owner_attributes": state.adoption.owner_attributes }))
                .into_response()
        }
        Err(error) => {
            axum::Json(json!({ "file": path, "services": [], "owner_attributes": state.adoption.owner_attributes, "error": error }))
                .into_response()
        }
    })
}

/// `GET /api/v1/directory/{key}`: the values of an attribute per service, with span counts and
/// first and last seen: "who still uses SDK 1.24?" `start`/`end`/`lookback`, `value` (only
/// this value), `format=json|markdown|table`.
pub(crate) async fn directory(
    State(state): State<ApiState>,
    Path(key): Path<String>,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    let pairs = pairs(raw)?;
    only_params(&pairs, &["start", "end", "lookback", "value", "format"])?;
    let format = format_param(&pairs, REPORT_FORMATS)?;
    let (start, end) = window(&pairs)?;
    let mut entries = state.query.attribute_directory(&key, start, end).await?;
    if let Some(value) = param(&pairs, "value") {
        entries.retain(|e| e.value == value);
    }
    let report = clew_analysis::directory::Directory::new(key, start, end, entries);
    Ok(respond(&report, format, &[], || report.to_markdown(), || report.to_table()))
}

async fn critical_report(
    state: &ApiState,
    definition: &clew_analysis::CriticalOperation,
    catalog: &Catalog,
    pairs: &[(String, String)],
) -> Result<clew_analysis::CriticalOperationReport, ApiError> {
    let (start, end) = window(pairs)?;
    let step = step_param(pairs, start, end)?;
    let predicate = clew_query::EntryPredicate {
        service: definition.service.clone(),
        operation: definition.operation.clone(),
        route: definition.route.clone(),
        filter_sql: match &definition.traceql {
            Some(text) => Some(
                clew_analysis::catalog::entry_filter_sql(text).map_err(|e| ApiError::bad_request(format!("{}: {e}", definition.name)))?,
            ),
            None => None,
        },
    };
    let facts = state.query.operation_facts(&predicate, start, end, step, &state.adoption.owner_attributes).await?;
    Ok(clew_analysis::critical_operation(definition, &facts, catalog))
}

/// `GET /api/v1/critical-operations`: every critical operation the catalog defines, with its
/// rate, errors, latency, trend and end-to-end coverage. `start`/`end`/`lookback`, `step`,
/// `format=json|markdown|table`.
pub(crate) async fn critical_operations(State(state): State<ApiState>, RawQuery(raw): RawQuery) -> Result<Response, ApiError> {
    let pairs = pairs(raw)?;
    only_params(&pairs, &["start", "end", "lookback", "step", "format"])?;
    let format = format_param(&pairs, REPORT_FORMATS)?;
    let (catalog, warnings) = read_catalog(&state);
    // A bad window is the caller's, said for all; what fails after that is one operation's.
    let (start, end) = window(&pairs)?;
    step_param(&pairs, start, end)?;
    let mut warnings = warnings;
    let mut reports = Vec::with_capacity(catalog.critical_operations.len());
    for definition in &catalog.critical_operations {
        match critical_report(&state, definition, &catalog, &pairs).await {
            Ok(report) => reports.push(report),
            // The store failing fails them all: said as it is, not as an empty list.
            Err(error) if error.0.is_server_error() => return Err(error),
            Err(error) => warnings.push(format!("{} could not be reported on: {}", definition.name, error.2)),
        }
    }
    let body = json!({ "operations": reports });
    Ok(respond(&body, format, &warnings, || clew_analysis::critical::to_markdown(&reports), || clew_analysis::critical::to_table(&reports)))
}

/// `GET /api/v1/critical-operations/{name}`: one critical operation, with every service its
/// requests reach.
pub(crate) async fn critical_operation(
    State(state): State<ApiState>,
    Path(name): Path<String>,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    let pairs = pairs(raw)?;
    only_params(&pairs, &["start", "end", "lookback", "step", "format"])?;
    let format = format_param(&pairs, REPORT_FORMATS)?;
    let (catalog, warnings) = read_catalog(&state);
    let Some(definition) = catalog.critical_operation(&name) else {
        let known: Vec<&str> = catalog.critical_operations.iter().map(|o| o.name.as_str()).collect();
        return Err(ApiError(
            axum::http::StatusCode::NOT_FOUND,
            "not_found",
            format!(
                "no critical operation is named {name:?}; the catalog and the API define: {}",
                if known.is_empty() { "none".into() } else { known.join(", ") }
            ),
        ));
    };
    let report = critical_report(&state, definition, &catalog, &pairs).await?;
    Ok(respond(&report, format, &warnings, || report.to_markdown(), || report.to_table()))
}

/// `GET /api/v1/flows`: the entry operations (root service and operation) of the window, busiest first.
pub(crate) async fn entry_operations(State(state): State<ApiState>, RawQuery(raw): RawQuery) -> Result<axum::Json<Json>, ApiError> {
    let pairs = pairs(raw)?;
    only_params(&pairs, &["start", "end", "lookback"])?;
    let (start, end) = window(&pairs)?;
    let entries = state.query.entry_operations(start, end).await?;
    Ok(axum::Json(json!({ "start_unix_nano": start, "end_unix_nano": end, "entries": entries })))
}

/// `GET /api/v1/flow?service=&operation=`: the aggregated call tree of an entry operation.
/// `start`/`end`/`lookback`, `format=json|markdown|table|mermaid|dot`.
pub(crate) async fn flow(State(state): State<ApiState>, RawQuery(raw): RawQuery) -> Result<Response, ApiError> {
    let pairs = pairs(raw)?;
    only_params(&pairs, &["start", "end", "lookback", "service", "operation", "format"])?;
    let format = format_param(&pairs, &["json", "markdown", "table", "mermaid", "dot", "svg"])?;
    let (Some(service), Some(operation)) = (param(&pairs, "service"), param(&pairs, "operation")) else {
        return Err(ApiError::bad_request("service and operation name the entry operation (see /api/v1/flows)"));
    };
    let (start, end) = window(&pairs)?;
    let predicate =
        clew_query::EntryPredicate { service: service.into(), operation: Some(operation.into()), route: None, filter_sql: None };
    let facts = state.query.flow_facts(&predicate, start, end).await?;
    let flow = clew_analysis::flows::flow(service, operation, &facts);
    Ok(match format {
        "mermaid" => text("text/plain; charset=utf-8", flow.to_mermaid()),
        "dot" => text("text/vnd.graphviz; charset=utf-8", flow.to_dot()),
        "svg" => text("image/svg+xml", crate::svg::dot_to_svg(&flow.to_dot()).map_err(ApiError::drawing)?),
        _ => respond(&flow, format, &[], || flow.to_markdown(), || flow.to_table()),
    })
}
