//! Drives the simulated shop against the real OTLP/HTTP receiver.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use prost::Message;

pub async fn run(endpoint: String, traces_per_second: f64, mut shop: clew_demo::Shop) {
    let client = reqwest::Client::new();
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
