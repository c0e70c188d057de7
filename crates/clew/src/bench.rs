//! `clew bench`: the spine's performance numbers on the demo dataset, measured end to end
//! against a real server on loopback. Prints each number beside its target.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use prost::Message;

use crate::cli::ServeArgs;

pub struct BenchOptions {
    pub spans: u64,
    pub connections: usize,
    pub traces_per_request: usize,
    pub queries: usize,
}

fn rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        })
        .map(|kib| kib * 1024)
        .unwrap_or(0)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

pub async fn run(serve: &ServeArgs, options: BenchOptions) -> anyhow::Result<()> {
    let directory = std::env::temp_dir().join(format!("clew-bench-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&directory);
    let mut config = crate::cli::load_config(serve)?;
    config.store.data_dir = directory.clone();
    config.store.trace_idle_seconds = 2.0;
    config.server.otlp_grpc_address = "127.0.0.1:0".into();
    config.server.otlp_http_address = "127.0.0.1:0".into();
    config.server.query_address = "127.0.0.1:0".into();
    config.server.max_request_bytes = 64 << 20;
    let running = clew_server::start(config.clone()).await?;
    let endpoint = format!("http://{}/v1/traces", running.addresses.otlp_http);
    let query = format!("http://{}", running.addresses.query);

    // Pre-generate requests so the generator's cost is not measured.
    eprintln!("generating {} spans of the demo shop…", options.spans);
    let mut shop = clew_demo::Shop::new(7);
    let mut bodies = Vec::new();
    let mut generated = 0u64;
    let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_nanos() as u64;
    while generated < options.spans {
        let request = shop.generate(options.traces_per_request, now);
        generated += request
            .resource_spans
            .iter()
            .flat_map(|r| &r.scope_spans)
            .map(|s| s.spans.len() as u64)
            .sum::<u64>();
        bodies.push(request.encode_to_vec());
    }
    let bodies = Arc::new(bodies);
    eprintln!(
        "sending {} requests over {} connections…",
        bodies.len(),
        options.connections
    );
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let started = Instant::now();
    let mut workers = Vec::new();
    for _ in 0..options.connections {
        let (bodies, next, endpoint) = (Arc::clone(&bodies), Arc::clone(&next), endpoint.clone());
        workers.push(tokio::spawn(async move {
            let client = reqwest::Client::new();
            let mut latencies = Vec::new();
            loop {
                let index = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let Some(body) = bodies.get(index) else { break };
                let sent = Instant::now();
                let response = client
                    .post(&endpoint)
                    .header("content-type", "application/x-protobuf")
                    .body(body.clone())
                    .send()
                    .await;
                match response {
                    Ok(r) if r.status().is_success() => latencies.push(sent.elapsed()),
                    Ok(r) => anyhow::bail!("export refused: {}", r.status()),
                    Err(e) => anyhow::bail!("export failed: {e}"),
                }
            }
            Ok(latencies)
        }));
    }
    let mut latencies = Vec::new();
    for worker in workers {
        latencies.extend(worker.await??);
    }
    let ingest_seconds = started.elapsed().as_secs_f64();
    latencies.sort();
    let ingest_rate = generated as f64 / ingest_seconds;

    eprintln!("assembling and writing blocks…");
    running.shutdown().await;
    let stats = clew_store::Storage::stats(&running.store);
    let bytes_per_span = stats.block_bytes as f64 / stats.block_spans.max(1) as f64;

    let client = reqwest::Client::new();
    let ids: serde_json::Value = client
        .get(format!("{query}/api/v1/sql"))
        .query(&[(
            "q",
            format!(
                "SELECT DISTINCT encode(trace_id, 'hex') AS id FROM spans LIMIT {}",
                options.queries
            ),
        )])
        .send()
        .await?
        .json()
        .await?;
    let ids: Vec<String> = ids["rows"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|r| r["id"].as_str().map(str::to_string))
        .collect();
    let mut by_id = Vec::new();
    for id in &ids {
        let sent = Instant::now();
        let response = client
            .get(format!("{query}/api/v1/traces/{id}"))
            .send()
            .await?;
        anyhow::ensure!(
            response.status().is_success(),
            "trace {id}: {}",
            response.status()
        );
        response.bytes().await?;
        by_id.push(sent.elapsed());
    }
    by_id.sort();
    let searches = [
        vec![("service", "checkout-service"), ("limit", "20")],
        vec![("attr", "http.response.status_code>=500"), ("limit", "20")],
        vec![
            ("service", "frontend"),
            ("minDuration", "100ms"),
            ("limit", "20"),
        ],
        vec![
            ("operation", "GET /search"),
            ("sort", "longest"),
            ("limit", "20"),
        ],
    ];
    let mut search_times = Vec::new();
    for round in 0..(options.queries / 4).max(1) {
        let params = &searches[round % searches.len()];
        let sent = Instant::now();
        let response = client
            .get(format!("{query}/api/v1/search"))
            .query(params)
            .send()
            .await?;
        anyhow::ensure!(
            response.status().is_success(),
            "search: {}",
            response.status()
        );
        response.bytes().await?;
        search_times.push(sent.elapsed());
    }
    search_times.sort();
    let rss = rss_bytes();

    // Restart: a fresh store over a log holding every span (blocks removed, WAL kept).
    drop(running);
    let restart_dir = directory.join("restart");
    let mut restart_config = config.store.clone();
    restart_config.data_dir = restart_dir.clone();
    restart_config.trace_idle_seconds = 3600.0;
    {
        let store = clew_store::EmbeddedStore::open(restart_config.clone())?;
        let storage: &dyn clew_store::Storage = &store;
        let lenient = clew_ingest::Limits {
            min_start_unix_seconds: 0,
            ..Default::default()
        };
        for body in bodies.iter() {
            let request =
                clew_ingest::collector::ExportTraceServiceRequest::decode(body.as_slice())?;
            storage
                .append(clew_ingest::from_otlp(request, &lenient, u64::MAX / 2).spans)
                .await?;
        }
    }
    let reopened = Instant::now();
    let store = clew_store::EmbeddedStore::open(restart_config)?;
    let restart_seconds = reopened.elapsed().as_secs_f64();
    let replayed = clew_store::Storage::stats(&store).pending_spans;

    println!(
        "clew bench: {} spans of the demo shop, {} connections, {} traces per request",
        generated, options.connections, options.traces_per_request
    );
    println!("{:<44} {:>14}   target", "measure", "value");
    let row =
        |name: &str, value: String, target: &str| println!("{name:<44} {value:>14}   {target}");
    row(
        "durable ingest, OTLP/HTTP (spans/s)",
        format!("{ingest_rate:.0}"),
        "≥ 250000",
    );
    row(
        "acknowledgement latency p99 (ms)",
        format!("{:.2}", percentile(&latencies, 0.99).as_secs_f64() * 1e3),
        "",
    );
    row(
        "bytes per span on disk (blocks)",
        format!("{bytes_per_span:.1}"),
        "≤ 40",
    );
    row(
        &format!("trace by ID p50 (ms, {} stored spans)", stats.block_spans),
        format!("{:.2}", percentile(&by_id, 0.5).as_secs_f64() * 1e3),
        "≤ 2",
    );
    row(
        "trace by ID p99 (ms)",
        format!("{:.2}", percentile(&by_id, 0.99).as_secs_f64() * 1e3),
        "≤ 10",
    );
    row(
        "search p50 (ms)",
        format!("{:.2}", percentile(&search_times, 0.5).as_secs_f64() * 1e3),
        "≤ 50",
    );
    row(
        "peak RSS (MiB)",
        format!("{:.0}", rss as f64 / (1 << 20) as f64),
        "≤ 1024",
    );
    row(
        &format!("restart with {replayed} spans in the log (s)"),
        format!("{restart_seconds:.2}"),
        "≤ 5",
    );
    drop(store);
    let _ = std::fs::remove_dir_all(&directory);
    Ok(())
}
