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
    pub keep: bool,
}

/// Peak resident memory of a process, from /proc.
/// User and system CPU seconds of a process so far (Linux), 0 where unknown.
fn cpu_seconds(pid: u32) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0.0;
    };
    // The fields after the command name (which may hold spaces) in parentheses.
    let Some(rest) = stat.rsplit_once(')').map(|(_, rest)| rest) else {
        return 0.0;
    };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the line (11 and 12 after the name), in ticks of
    // 1/100 s (USER_HZ on Linux).
    let ticks: f64 = [11, 12].iter().filter_map(|i| fields.get(*i)?.parse::<f64>().ok()).sum();
    ticks / 100.0
}

fn peak_rss_bytes(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("VmHWM:")).and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok()))
        .map(|kib| kib * 1024)
        .unwrap_or(0)
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// A `clew serve` child process: the server measured apart from the load generator.
struct Server {
    child: std::process::Child,
    http: String,
    query: String,
    peak_rss: Arc<std::sync::atomic::AtomicU64>,
}

impl Server {
    async fn start(data_dir: &std::path::Path, idle_seconds: f64, config: Option<&std::path::Path>) -> anyhow::Result<(Server, Duration)> {
        let (grpc, http, query) = (free_port()?, free_port()?, free_port()?);
        let started = Instant::now();
        let mut command = std::process::Command::new(std::env::current_exe()?);
        command.arg("serve");
        if let Some(config) = config {
            command.arg("--config").arg(config);
        }
        command
            .args(["--data-dir", &data_dir.to_string_lossy()])
            .args(["--otlp-grpc", &format!("127.0.0.1:{grpc}"), "--otlp-http", &format!("127.0.0.1:{http}")])
            .args(["--query", &format!("127.0.0.1:{query}"), "--trace-idle-seconds", &idle_seconds.to_string()])
            .args(["--zipkin", ""])
            .env("CLEW_SERVER__JAEGER_THRIFT_HTTP_ADDRESS", "")
            .env("CLEW_SERVER__JAEGER_GRPC_ADDRESS", "")
            .env("CLEW_SERVER__JAEGER_AGENT_COMPACT_ADDRESS", "")
            .env("CLEW_SERVER__JAEGER_AGENT_BINARY_ADDRESS", "")
            .env("CLEW_SERVER__TEMPO_ADDRESS", "")
            .env("CLEW_LOG", "warn")
            .env("CLEW_SERVER__MAX_REQUEST_BYTES", (64u64 << 20).to_string());
        let child = command.spawn()?;
        let server = Server {
            http: format!("http://127.0.0.1:{http}/v1/traces"),
            query: format!("http://127.0.0.1:{query}"),
            peak_rss: Arc::new(std::sync::atomic::AtomicU64::new(0)),
            child,
        };
        let client = reqwest::Client::new();
        loop {
            if let Ok(response) = client.get(format!("{}/api/v1/status", server.query)).send().await {
                if response.status().is_success() {
                    break;
                }
            }
            anyhow::ensure!(started.elapsed() < Duration::from_secs(120), "server did not start");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let elapsed = started.elapsed();
        let (pid, peak) = (server.child.id(), Arc::clone(&server.peak_rss));
        tokio::spawn(async move {
            loop {
                let rss = peak_rss_bytes(pid);
                if rss == 0 {
                    break;
                }
                peak.fetch_max(rss, std::sync::atomic::Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        });
        Ok((server, elapsed))
    }

    fn peak_rss(&self) -> u64 {
        self.peak_rss.load(std::sync::atomic::Ordering::Relaxed).max(peak_rss_bytes(self.child.id()))
    }

    /// SIGTERM: the server writes everything pending to blocks and exits.
    fn stop(mut self) -> anyhow::Result<u64> {
        let rss = self.peak_rss();
        std::process::Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status()?;
        self.child.wait()?;
        Ok(rss)
    }

    fn kill(mut self) -> anyhow::Result<()> {
        self.child.kill()?;
        self.child.wait()?;
        Ok(())
    }
}

/// Sends every body; returns the seconds it took, the acknowledgement latencies and how many
/// times Clew pushed back.
async fn send_all(endpoint: &str, bodies: &Arc<Vec<bytes::Bytes>>, connections: usize) -> anyhow::Result<(f64, Vec<Duration>, u64)> {
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let pushed_back = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let started = Instant::now();
    let mut workers = Vec::new();
    for _ in 0..connections {
        let (bodies, next, endpoint, pushed_back) = (Arc::clone(bodies), Arc::clone(&next), endpoint.to_string(), Arc::clone(&pushed_back));
        workers.push(tokio::spawn(async move {
            let client = reqwest::Client::new();
            let mut latencies = Vec::new();
            loop {
                let index = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let Some(body) = bodies.get(index) else { break };
                // As an OTLP client does: on 503 (Clew pushing back) wait and send again.
                loop {
                    let sent = Instant::now();
                    let response = client.post(&endpoint).header("content-type", "application/x-protobuf").body(body.clone()).send().await;
                    match response {
                        Ok(r) if r.status().is_success() => {
                            latencies.push(sent.elapsed());
                            break;
                        }
                        Ok(r) if r.status().as_u16() == 503 || r.status().as_u16() == 429 => {
                            pushed_back.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                            tokio::time::sleep(Duration::from_millis(200)).await;
                        }
                        Ok(r) => anyhow::bail!("export refused: {}", r.status()),
                        Err(e) => anyhow::bail!("export failed: {e}"),
                    }
                }
            }
            Ok(latencies)
        }));
    }
    let mut latencies = Vec::new();
    for worker in workers {
        latencies.extend(worker.await??);
    }
    latencies.sort();
    Ok((started.elapsed().as_secs_f64(), latencies, pushed_back.load(std::sync::atomic::Ordering::Relaxed)))
}

/// Looks up each trace whose ID `sql` (over the span table) lists, one after another; returns
/// the response times, sorted.
async fn lookup_times(client: &reqwest::Client, query: &str, sql: &str) -> anyhow::Result<Vec<Duration>> {
    let ids: serde_json::Value = client.get(format!("{query}/api/v1/sql")).query(&[("q", sql)]).send().await?.json().await?;
    let ids: Vec<&str> = ids["rows"].as_array().into_iter().flatten().filter_map(|r| r["id"].as_str()).collect();
    anyhow::ensure!(!ids.is_empty(), "no trace IDs to look up");
    let mut times = Vec::new();
    for id in ids {
        let sent = Instant::now();
        let response = client.get(format!("{query}/api/v1/traces/{id}")).send().await?;
        anyhow::ensure!(response.status().is_success(), "trace {id}: {}", response.status());
        response.bytes().await?;
        times.push(sent.elapsed());
    }
    times.sort();
    Ok(times)
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
    std::fs::create_dir_all(&directory)?;
    let config = serve.config.as_deref();

    // Pre-generate requests so the generator's cost is not measured.
    eprintln!("generating {} spans of the demo shop…", options.spans);
    let mut shop = clew_demo::Shop::new(7);
    let mut bodies = Vec::new();
    let mut generated = 0u64;
    // The traces are spread over the last 23 hours, as a day of traffic would be: the queries
    // below ask about the whole day.
    let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_nanos() as u64;
    let spread = 23 * 3_600_000_000_000u64;
    while generated < options.spans {
        let at = now - spread + (spread as f64 * generated as f64 / options.spans as f64) as u64;
        let request = shop.generate(options.traces_per_request, at);
        generated += request.resource_spans.iter().flat_map(|r| &r.scope_spans).map(|s| s.spans.len() as u64).sum::<u64>();
        // Shared buffers: sending one does not copy it.
        bodies.push(bytes::Bytes::from(request.encode_to_vec()));
    }
    let bodies = Arc::new(bodies);

    eprintln!("ingest: {} requests over {} connections…", bodies.len(), options.connections);
    let stored = directory.join("stored");
    let (server, _) = Server::start(&stored, 2.0, config).await?;
    let sender_cpu = cpu_seconds(std::process::id());
    let (ingest_seconds, latencies, pushed_back) = send_all(&server.http, &bodies, options.connections).await?;
    let sender_cpu = cpu_seconds(std::process::id()) - sender_cpu;
    let ingest_rate = generated as f64 / ingest_seconds;
    // What rollups cost: their CPU time against the server's, over the ingest.
    let ingest_status: serde_json::Value =
        reqwest::Client::new().get(format!("{}/api/v1/status", server.query)).send().await?.json().await?;
    let rollup_seconds = ingest_status["store"]["rollup_cpu_nanos"].as_f64().unwrap_or(0.0) / 1e9;
    let server_cpu = cpu_seconds(server.child.id());
    let rollup_share = rollup_seconds / server_cpu.max(1e-9);
    let stage = |name: &str| ingest_status["store"]["write_path_seconds"][name].as_f64().unwrap_or(0.0);
    let write_path = [stage("take_ready"), stage("assembly"), stage("block_write_waits"), stage("block_writes"), stage("compaction")];
    eprintln!("stopping (assembles and writes every trace)…");
    let ingest_rss = server.stop()?;

    eprintln!("queries over the blocks…");
    let (server, _) = Server::start(&stored, 2.0, config).await?;
    let client = reqwest::Client::new();
    // Compaction leaves the blocks of an ingest burst for later: queries and sizes are
    // measured on the compacted store.
    let compacting = Instant::now();
    let settled = loop {
        let status: serde_json::Value = client.get(format!("{}/api/v1/status", server.query)).send().await?.json().await?;
        let left = status["store"]["compactable_blocks"].as_u64().unwrap_or(0);
        if left == 0 {
            eprintln!("compaction settled after {:.0} s: {} blocks", compacting.elapsed().as_secs_f64(), status["store"]["blocks"]);
            break Some(compacting.elapsed());
        }
        if compacting.elapsed() > Duration::from_secs(900) {
            eprintln!("compaction still had {left} blocks to merge after 900 s: measuring anyway");
            break None;
        }
        eprintln!("compacting: {left} small blocks to merge next, {} blocks…", status["store"]["blocks"]);
        tokio::time::sleep(Duration::from_secs(5)).await;
    };
    let status: serde_json::Value = client.get(format!("{}/api/v1/status", server.query)).send().await?.json().await?;
    let block_spans = status["store"]["block_spans"].as_f64().unwrap_or(0.0);
    let bytes_per_span = status["store"]["block_bytes"].as_f64().unwrap_or(0.0) / block_spans.max(1.0);
    let block_count = status["store"]["blocks"].as_u64().unwrap_or(0);
    let by_id = lookup_times(
        &client,
        &server.query,
        &format!("SELECT encode(trace_id, 'hex') AS id FROM spans WHERE depth = 0 ORDER BY span_id LIMIT {}", options.queries),
    )
    .await?;
    let searches = [
        vec![("service", "checkout-service"), ("limit", "20"), ("lookback", "24h")],
        vec![("attr", "http.response.status_code>=500"), ("limit", "20"), ("lookback", "24h")],
        vec![("service", "frontend"), ("minDuration", "100ms"), ("limit", "20"), ("lookback", "24h")],
        vec![("operation", "GET /search"), ("sort", "longest"), ("limit", "20"), ("lookback", "24h")],
    ];
    let mut search_times = Vec::new();
    let mut search_kinds: Vec<Vec<Duration>> = vec![Vec::new(); searches.len()];
    for round in 0..options.queries.max(4) {
        let params = &searches[round % searches.len()];
        let sent = Instant::now();
        let response = client.get(format!("{}/api/v1/search", server.query)).query(params).send().await?;
        anyhow::ensure!(response.status().is_success(), "search: {}", response.status());
        response.bytes().await?;
        search_times.push(sent.elapsed());
        search_kinds[round % searches.len()].push(sent.elapsed());
    }
    search_times.sort();
    for times in &mut search_kinds {
        times.sort();
    }
    // The issue's TraceQL benchmark query: errors in one service with client calls below them.
    let traceql = r#"{ resource.service.name = "checkout-service" && span.http.response.status_code >= 500 } >> { kind = client }"#;
    let mut traceql_times = Vec::new();
    for _ in 0..options.queries.clamp(4, 20) {
        let sent = Instant::now();
        let response = client
            .get(format!("{}/api/v1/search", server.query))
            .query(&[("q", traceql), ("limit", "20"), ("lookback", "24h")])
            .send()
            .await?;
        anyhow::ensure!(response.status().is_success(), "TraceQL search: {}", response.status());
        response.bytes().await?;
        traceql_times.push(sent.elapsed());
    }
    traceql_times.sort();
    // The adoption questions over everything stored: the service map and the coverage report.
    let mut report_times: Vec<(&str, Vec<Duration>)> = Vec::new();
    for path in ["/api/v1/service-graph", "/api/v1/coverage"] {
        let mut times = Vec::new();
        for _ in 0..options.queries.clamp(3, 10) {
            let sent = Instant::now();
            let response = client.get(format!("{}{path}", server.query)).query(&[("lookback", "24h")]).send().await?;
            anyhow::ensure!(response.status().is_success(), "{path}: {}", response.status());
            response.bytes().await?;
            times.push(sent.elapsed());
        }
        times.sort();
        report_times.push((path, times));
    }
    // Performance analytics over the whole day: the critical path of one entry operation, the
    // bottlenecks of all, a traffic estimate, and correlations over the spans of a busy service.
    let analytics: [(&str, &str, Vec<(&str, &str)>); 8] = [
        (
            "critical-path flame graph, one entry op (ms)",
            "/api/v1/critical-path",
            vec![("service", "web-gateway"), ("operation", "GET /product/{id}"), ("lookback", "24h")],
        ),
        ("bottlenecks over every entry op (ms)", "/api/v1/bottlenecks", vec![("lookback", "24h")]),
        ("traffic estimate (ms)", "/api/v1/traffic-estimate", vec![("lookback", "24h"), ("plan", "100/s web-gateway POST /checkout")]),
        (
            "correlations, pricing-service spans ≥ 5 ms (ms)",
            "/api/v1/correlations",
            vec![("service", "pricing-service"), ("min_duration", "5ms"), ("lookback", "24h")],
        ),
        (
            "correlations, every span compared (ms)",
            "/api/v1/correlations",
            vec![("service", "pricing-service"), ("min_duration", "5ms"), ("lookback", "24h"), ("sample", "all")],
        ),
        (
            "correlations of a TraceQL selection (ms)",
            "/api/v1/correlations",
            vec![("service", "search-service"), ("q", "{ span.cloud.region = \"us-east-1\" && duration > 40ms }"), ("lookback", "24h")],
        ),
        (
            "TraceQL metrics: server rate by service (ms)",
            "/api/v1/metrics/query_range",
            vec![("q", "{ kind = server } | rate() by (resource.service.name)"), ("lookback", "24h")],
        ),
        (
            "TraceQL metrics: server p99 by service (ms)",
            "/api/v1/metrics/query_range",
            vec![("q", "{ kind = server } | quantile_over_time(duration, .99) by (resource.service.name)"), ("lookback", "24h")],
        ),
    ];
    let mut analytics_times: Vec<(&str, Vec<Duration>, u64)> = Vec::new();
    for (name, path, params) in analytics {
        let mut times = Vec::new();
        let mut spans = 0;
        for _ in 0..options.queries.clamp(3, 10) {
            let sent = Instant::now();
            let response = client.get(format!("{}{path}", server.query)).query(&params).send().await?;
            anyhow::ensure!(response.status().is_success(), "{path}: {}", response.status());
            let body: serde_json::Value = response.json().await?;
            times.push(sent.elapsed());
            spans = body["selected"].as_u64().unwrap_or(0)
                + body["baseline"].as_u64().unwrap_or(0)
                + body["matched_spans"].as_u64().unwrap_or(0);
        }
        times.sort();
        analytics_times.push((name, times, spans));
    }
    let query_rss = server.stop()?;

    eprintln!("restart: up to a million spans in the log, then kill -9…");
    let logged = directory.join("logged");
    // The target speaks of a million spans in the log; more would only wait for push-back.
    let mut logged_spans = 0;
    let per_body = generated as f64 / bodies.len() as f64;
    let count = bodies.iter().take_while(|_| {
        logged_spans += per_body as u64;
        logged_spans <= 1_000_000
    });
    let restart_bodies = Arc::new(count.cloned().collect::<Vec<_>>());
    let (server, _) = Server::start(&logged, 3600.0, config).await?;
    send_all(&server.http, &restart_bodies, options.connections).await?;
    server.kill()?;
    let (server, restart) = Server::start(&logged, 3600.0, config).await?;
    let status: serde_json::Value = client.get(format!("{}/api/v1/status", server.query)).send().await?.json().await?;
    let replayed = status["store"]["pending_spans"].as_u64().unwrap_or(0);
    // The first search of each kind while those spans wait, as every search during a burst is:
    // one of a service converts only the pending traces with a span of that service, one of
    // an attribute converts them all.
    let mut pending_searches = Vec::new();
    for params in &searches[..2] {
        let sent = Instant::now();
        let response = client.get(format!("{}/api/v1/search", server.query)).query(params).send().await?;
        anyhow::ensure!(response.status().is_success(), "search: {}", response.status());
        response.bytes().await?;
        pending_searches.push(sent.elapsed().as_secs_f64() * 1e3);
    }
    // Trace lookups while all those spans wait in memory, as during heavy ingest.
    let pending_by_id = lookup_times(
        &client,
        &server.query,
        &format!("SELECT DISTINCT encode(trace_id, 'hex') AS id FROM spans LIMIT {}", options.queries),
    )
    .await?;
    server.kill()?;

    println!(
        "clew bench: {} spans of the demo shop, {} connections, {} traces per request",
        generated, options.connections, options.traces_per_request
    );
    println!("{:<48} {:>12}   target", "measure", "value");
    let row = |name: &str, value: String, target: &str| println!("{name:<48} {value:>12}   {target}");
    row("durable ingest, OTLP/HTTP protobuf (spans/s)", format!("{ingest_rate:.0}"), "≥ 250000");
    row("requests pushed back with 503 and resent", format!("{pushed_back}"), "");
    row("acknowledgement latency p50 (ms)", format!("{:.2}", percentile(&latencies, 0.5).as_secs_f64() * 1e3), "");
    row("acknowledgement latency p99 (ms)", format!("{:.2}", percentile(&latencies, 0.99).as_secs_f64() * 1e3), "");
    row("bytes per span on disk (blocks)", format!("{bytes_per_span:.1}"), "≤ 40");
    row("blocks", block_count.to_string(), "");
    row(&format!("trace by ID p50 (ms, {block_spans} spans stored)"), format!("{:.2}", percentile(&by_id, 0.5).as_secs_f64() * 1e3), "≤ 2");
    row("trace by ID p99 (ms)", format!("{:.2}", percentile(&by_id, 0.99).as_secs_f64() * 1e3), "≤ 10");
    row("search p50 (ms)", format!("{:.2}", percentile(&search_times, 0.5).as_secs_f64() * 1e3), "≤ 50");
    for (params, times) in searches.iter().zip(&search_kinds) {
        let what: Vec<String> =
            params.iter().filter(|(k, _)| !matches!(*k, "limit" | "lookback")).map(|(k, v)| format!("{k}={v}")).collect();
        row(&format!("  search {}", what.join(" ")), format!("{:.2}", percentile(times, 0.5).as_secs_f64() * 1e3), "");
    }
    row("TraceQL structural query p50 (ms)", format!("{:.2}", percentile(&traceql_times, 0.5).as_secs_f64() * 1e3), "≤ 200");
    for (path, times) in &report_times {
        let name = if path.ends_with("coverage") { "coverage report p50 (ms, every span)" } else { "service map p50 (ms, every span)" };
        row(name, format!("{:.2}", percentile(times, 0.5).as_secs_f64() * 1e3), "≤ 50");
    }
    for (name, times, spans) in &analytics_times {
        let name = if *spans > 0 { format!("{name}, {spans} spans") } else { name.to_string() };
        let target = if name.starts_with("critical-path") {
            "≤ 500"
        } else if name.starts_with("correlations") {
            "≤ 1000 (1M spans)"
        } else {
            ""
        };
        row(&name, format!("{:.2}", percentile(times, 0.5).as_secs_f64() * 1e3), target);
    }
    // Where the server's time went while it ingested: the stages of the write path in wall
    // seconds (the first three run one after another, blocks are written beside them),
    // beside the CPU seconds it used.
    row(
        "write path during ingest (s): take / assemble / wait for writer / write / compact",
        format!("{:.1} / {:.1} / {:.1} / {:.1} / {:.1}", write_path[0], write_path[1], write_path[2], write_path[3], write_path[4]),
        &format!("of {ingest_seconds:.1} s; server CPU {server_cpu:.1} s, sender {sender_cpu:.1} s"),
    );
    row("rollups' share of the server's CPU during ingest", format!("{:.1}%", 100.0 * rollup_share), "≤ 15%");
    // Compaction waits while ingest is behind: the blocks of the burst are merged after it,
    // on a restarted server (rounds every 10 s, 5 s each).
    row(
        "compaction after ingest, until settled (s)",
        settled.map_or_else(|| "> 900".to_string(), |t| format!("{:.0}", t.as_secs_f64())),
        "",
    );
    row("server peak RSS during ingest (MiB)", format!("{:.0}", ingest_rss as f64 / (1 << 20) as f64), "≤ 1024");
    row("server peak RSS during queries (MiB)", format!("{:.0}", query_rss as f64 / (1 << 20) as f64), "≤ 1024");
    row(&format!("restart with {replayed} spans in the log (s)"), format!("{:.2}", restart.as_secs_f64()), "≤ 5");
    row(
        "first search, those spans pending (ms): service / attribute",
        format!("{:.0} / {:.0}", pending_searches[0], pending_searches[1]),
        "",
    );
    row(
        "trace by ID p50 / p99, those spans pending (ms)",
        format!("{:.2} / {:.2}", percentile(&pending_by_id, 0.5).as_secs_f64() * 1e3, percentile(&pending_by_id, 0.99).as_secs_f64() * 1e3),
        "",
    );
    if options.keep {
        eprintln!("the data is kept in {}", directory.display());
    } else {
        let _ = std::fs::remove_dir_all(&directory);
    }
    Ok(())
}
