//! Drives the simulated shop against the real OTLP/HTTP receiver: first its history (past
//! traffic, when asked for), then live traffic.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use prost::Message;

/// Seconds of past traffic per export request while sending the history.
const HISTORY_STEP_SECONDS: u64 = 2;

pub async fn run(endpoint: String, traces_per_second: f64, mut shop: clew_demo::Shop, history_nanos: u64) {
    let client = reqwest::Client::new();
    if history_nanos > 0 {
        send_history(&client, &endpoint, traces_per_second, &mut shop, history_nanos).await;
    }
    let tick = Duration::from_millis(250);
    let mut interval = tokio::time::interval(tick);
    let mut owed = 0.0;
    loop {
        interval.tick().await;
        owed += traces_per_second * tick.as_secs_f64();
        let count = owed.floor() as usize;
        if count == 0 {
            continue;
        }
        owed -= count as f64;
        let now = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(0);
        let body = shop.generate(count, now).encode_to_vec();
        let result = client.post(&endpoint).header("content-type", "application/x-protobuf").body(body).send().await;
        match result {
            Ok(response) if response.status().is_success() => {}
            Ok(response) => {
                tracing::warn!(message = "demo export refused", status = %response.status())
            }
            Err(error) => tracing::warn!(message = "demo export failed", %error),
        }
    }
}

/// The past `history_nanos` of traffic, oldest first, with progress; an export the server
/// pushes back is sent again after the delay it asks for.
async fn send_history(client: &reqwest::Client, endpoint: &str, traces_per_second: f64, shop: &mut clew_demo::Shop, history_nanos: u64) {
    let start = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(0).saturating_sub(history_nanos);
    let step = HISTORY_STEP_SECONDS * 1_000_000_000;
    let steps = history_nanos.div_ceil(step);
    let mut owed = 0.0;
    let mut last_report = 0;
    println!("Sending {:.0} minutes of history…", history_nanos as f64 / 60e9);
    for i in 0..steps {
        owed += traces_per_second * HISTORY_STEP_SECONDS as f64;
        let count = owed.floor() as usize;
        owed -= count as f64;
        if count == 0 {
            continue;
        }
        let body = shop.generate(count, start + i * step).encode_to_vec();
        for _attempt in 0..30 {
            match client.post(endpoint).header("content-type", "application/x-protobuf").body(body.clone()).send().await {
                Ok(response) if response.status().is_success() => break,
                Ok(response) => {
                    let wait = response
                        .headers()
                        .get("retry-after")
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.parse::<u64>().ok())
                        .unwrap_or(1);
                    tracing::warn!(message = "demo history export pushed back", status = %response.status(), retry_after_seconds = wait);
                    tokio::time::sleep(Duration::from_secs(wait.min(5))).await;
                }
                Err(error) => {
                    tracing::warn!(message = "demo history export failed", %error);
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
        let percent = (i + 1) * 100 / steps;
        if percent / 10 > last_report {
            last_report = percent / 10;
            println!("  history {percent}%");
        }
    }
    println!("History sent; live traffic from now on.");
}
