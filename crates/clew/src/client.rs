//! CLI commands that talk to a running Clew over its APIs. Exit codes: 0 success, 1 error,
//! 3 not found, 4 server unreachable.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::ExitCode;

use serde_json::Value;

use crate::cli::{ClientArgs, Output};

const NOT_FOUND: u8 = 3;
const UNREACHABLE: u8 = 4;

/// A GET to the API. An unreachable server or an error answer is reported on stderr and
/// becomes the exit code.
async fn request(server: &str, path: &str, query: &[(&str, String)]) -> Result<reqwest::Response, ExitCode> {
    send(server, reqwest::Method::GET, path, query, None).await
}

/// A request to the API with an optional JSON body (see [`request`]).
async fn send(
    server: &str,
    method: reqwest::Method,
    path: &str,
    query: &[(&str, String)],
    body: Option<&Value>,
) -> Result<reqwest::Response, ExitCode> {
    let url = format!("{}{path}", server.trim_end_matches('/'));
    let mut builder = reqwest::Client::new().request(method, &url).query(query);
    if let Some(body) = body {
        builder = builder.json(body);
    }
    let response = match builder.send().await {
        Ok(response) => response,
        Err(error) => {
            eprintln!("error: cannot reach Clew at {server}: {error}");
            return Err(ExitCode::from(UNREACHABLE));
        }
    };
    let status = response.status();
    if status.is_success() {
        return Ok(response);
    }
    let text = response.text().await.unwrap_or_default();
    let body: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
    let message = body["error"]["message"].as_str().unwrap_or(if text.is_empty() { "request failed" } else { &text });
    eprintln!("error: {message}");
    Err(ExitCode::from(if status.as_u16() == 404 { NOT_FOUND } else { 1 }))
}

/// A path segment with everything but unreserved characters percent-encoded.
pub fn path_segment(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

async fn get(client: &ClientArgs, path: &str, query: &[(&str, String)]) -> Result<Value, ExitCode> {
    let response = request(&client.server, path, query).await?;
    Ok(response.json().await.unwrap_or(Value::Null))
}

/// The body of an API answer, or the exit code its failure means (reported on stderr).
pub async fn get_text(server: &str, path: &str, query: &[(&str, String)]) -> Result<String, ExitCode> {
    let response = request(server, path, query).await?;
    response.text().await.map_err(|error| {
        eprintln!("error: reading the answer of {path}: {error}");
        ExitCode::FAILURE
    })
}

/// Prints a text answer of the API as it comes (JSON pretty-printed).
pub async fn print_text(server: &str, path: &str, query: &[(&str, String)]) -> anyhow::Result<ExitCode> {
    let response = match request(server, path, query).await {
        Ok(response) => response,
        Err(code) => return Ok(code),
    };
    let json = response.headers().get(reqwest::header::CONTENT_TYPE).is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    let text = response.text().await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&serde_json::from_str::<Value>(&text)?)?);
    } else {
        print!("{text}");
    }
    Ok(ExitCode::SUCCESS)
}

/// A change through the API (PUT or DELETE): `done` is printed when it is made.
pub async fn change(server: &str, method: reqwest::Method, path: &str, body: Option<&Value>, done: &str) -> anyhow::Result<ExitCode> {
    match send(server, method, path, &[], body).await {
        Ok(_) => {
            println!("{done}");
            Ok(ExitCode::SUCCESS)
        }
        Err(code) => Ok(code),
    }
}

pub async fn trace(client: &ClientArgs, trace_id: &str) -> anyhow::Result<ExitCode> {
    let trace = match get(client, &format!("/api/v1/traces/{trace_id}"), &[]).await {
        Ok(trace) => trace,
        Err(code) => return Ok(code),
    };
    if client.output == Output::Json {
        println!("{}", serde_json::to_string_pretty(&trace)?);
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "trace {}  {}: {}  {} spans, {} errors, {:.2} ms",
        trace["traceId"].as_str().unwrap_or(""),
        trace["rootService"].as_str().unwrap_or(""),
        trace["rootName"].as_str().unwrap_or(""),
        trace["spanCount"],
        trace["errorCount"],
        trace["durationNanos"].as_f64().unwrap_or(0.0) / 1e6
    );
    for warning in trace["warnings"].as_array().into_iter().flatten() {
        println!("  ! {}", warning["message"].as_str().unwrap_or(""));
    }
    let spans = trace["spans"].as_array().cloned().unwrap_or_default();
    let ids: std::collections::HashSet<&str> = spans.iter().filter_map(|s| s["spanId"].as_str()).collect();
    let mut children: std::collections::HashMap<&str, Vec<&Value>> = std::collections::HashMap::new();
    for span in &spans {
        let parent = span["parentSpanId"].as_str().filter(|p| ids.contains(p)).unwrap_or("");
        children.entry(parent).or_default().push(span);
    }
    fn print(children: &std::collections::HashMap<&str, Vec<&Value>>, parent: &str, prefix: &str) {
        let list = children.get(parent).cloned().unwrap_or_default();
        for (index, span) in list.iter().enumerate() {
            let last = index + 1 == list.len();
            let error = if span["status"]["code"] == "error" { "  ✗ error" } else { "" };
            let critical = span["criticalPathNanos"].as_f64().unwrap_or(0.0) / 1e6;
            println!(
                "{prefix}{} {} {} [{}] {:.2} ms (critical path {:.2} ms){error}",
                if last { "└─" } else { "├─" },
                span["service"].as_str().unwrap_or(""),
                span["name"].as_str().unwrap_or(""),
                span["kind"].as_str().unwrap_or(""),
                span["durationNanos"].as_f64().unwrap_or(0.0) / 1e6,
                critical
            );
            let next = format!("{prefix}{}", if last { "   " } else { "│  " });
            print(children, span["spanId"].as_str().unwrap_or(""), &next);
        }
    }
    print(&children, "", "");
    Ok(ExitCode::SUCCESS)
}

pub async fn search(client: &ClientArgs, query: &[(&str, String)]) -> anyhow::Result<ExitCode> {
    let result = match get(client, "/api/v1/search", query).await {
        Ok(result) => result,
        Err(code) => return Ok(code),
    };
    if client.output == Output::Json {
        println!("{}", serde_json::to_string_pretty(&result)?);
        return Ok(ExitCode::SUCCESS);
    }
    let traceql = query.iter().any(|(k, _)| *k == "q");
    if traceql {
        println!("{:<32}  {:>7}  {:>11}  root", "trace", "matched", "duration");
    } else {
        println!("{:<32}  {:>6}  {:>6}  {:>11}  root", "trace", "spans", "errors", "duration");
    }
    for trace in result["traces"].as_array().into_iter().flatten() {
        let (id, duration) = (trace["trace_id"].as_str().unwrap_or(""), trace["duration_nanos"].as_f64().unwrap_or(0.0) / 1e6);
        let root = format!("{}: {}", trace["root_service"].as_str().unwrap_or(""), trace["root_name"].as_str().unwrap_or(""));
        if traceql {
            let matched: u64 = trace["spansets"].as_array().into_iter().flatten().filter_map(|s| s["matched"].as_u64()).sum();
            println!("{id:<32}  {matched:>7}  {duration:>8.2} ms  {root}");
        } else {
            println!("{id:<32}  {:>6}  {:>6}  {duration:>8.2} ms  {root}", trace["span_count"], trace["error_count"]);
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn sql(client: &ClientArgs, query: &str) -> anyhow::Result<ExitCode> {
    let result = match get(client, "/api/v1/sql", &[("q", query.to_string())]).await {
        Ok(result) => result,
        Err(code) => return Ok(code),
    };
    let rows = result["rows"].as_array().cloned().unwrap_or_default();
    if client.output == Output::Json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(ExitCode::SUCCESS);
    }
    let columns: Vec<String> = rows.first().and_then(Value::as_object).map(|o| o.keys().cloned().collect()).unwrap_or_default();
    println!("{}", columns.join("\t"));
    for row in &rows {
        let cells: Vec<String> = columns
            .iter()
            .map(|c| match &row[c] {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            })
            .collect();
        println!("{}", cells.join("\t"));
    }
    eprintln!("{} row(s)", rows.len());
    Ok(ExitCode::SUCCESS)
}

pub async fn import(file: &Path, endpoint: &str) -> anyhow::Result<ExitCode> {
    let size = std::fs::metadata(file).map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?.len();
    let reader = BufReader::new(std::fs::File::open(file)?);
    let progress = indicatif::ProgressBar::new(size);
    progress.set_style(indicatif::ProgressStyle::with_template("{bar:40} {bytes}/{total_bytes} {msg}").expect("template"));
    let client = reqwest::Client::new();
    let (mut requests, mut failures, mut rejected) = (0u64, 0u64, 0i64);
    for (number, line) in reader.lines().enumerate() {
        let line = line?;
        progress.inc(line.len() as u64 + 1);
        if line.trim().is_empty() {
            continue;
        }
        requests += 1;
        let response = client.post(endpoint).header("content-type", "application/json").body(line).send().await;
        match response {
            Ok(response) if response.status().is_success() => {
                let body: Value = response.json().await.unwrap_or(Value::Null);
                if let Some(count) = body["partialSuccess"]["rejectedSpans"]
                    .as_i64()
                    .or_else(|| body["partialSuccess"]["rejectedSpans"].as_str().and_then(|s| s.parse().ok()))
                {
                    rejected += count;
                }
            }
            Ok(response) => {
                failures += 1;
                let status = response.status();
                let text = response.text().await.unwrap_or_default();
                progress.println(format!("line {}: {status}: {text}", number + 1));
            }
            Err(error) => {
                progress.finish_and_clear();
                eprintln!("error: cannot reach {endpoint}: {error}");
                return Ok(ExitCode::from(UNREACHABLE));
            }
        }
        progress.set_message(format!("{requests} requests"));
    }
    progress.finish_and_clear();
    println!("{requests} request(s) sent, {failures} refused, {rejected} span(s) rejected");
    Ok(if failures > 0 { ExitCode::from(1) } else { ExitCode::SUCCESS })
}
