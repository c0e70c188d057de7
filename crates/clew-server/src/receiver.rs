//! The path every receiver shares: check, convert, append durably, count.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use clew_ingest::Limits;
use clew_ingest::collector::ExportTraceServiceRequest;
use clew_store::{Storage, StoreError};
use serde::Serialize;

use crate::ServerConfig;

/// What came of one export request.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct ExportOutcome {
    pub accepted: u64,
    pub rejected: u64,
    /// Set when some spans were rejected or changed: the partial-success message.
    pub message: Option<String>,
}

#[derive(Debug, Default, Serialize)]
pub struct ReceiverStats {
    pub requests: u64,
    pub spans_accepted: u64,
    pub spans_rejected: u64,
    pub requests_refused_malformed: u64,
    pub requests_refused_too_large: u64,
    pub requests_refused_unavailable: u64,
}

#[derive(Default)]
struct Counters {
    requests: AtomicU64,
    accepted: AtomicU64,
    rejected: AtomicU64,
    malformed: AtomicU64,
    too_large: AtomicU64,
    unavailable: AtomicU64,
}

pub struct Receiver {
    storage: Arc<dyn Storage>,
    limits: Limits,
    pub(crate) server: ServerConfig,
    counters: Counters,
}

/// Why a whole request was refused.
pub enum Refusal {
    Malformed(String),
    TooLarge(String),
    Unsupported(String),
    Unavailable(String),
}

impl Receiver {
    pub fn new(storage: Arc<dyn Storage>, limits: Limits, server: ServerConfig) -> Self {
        Self { storage, limits, server, counters: Counters::default() }
    }

    /// Refuses at once, before a request is decoded, when the store is behind.
    pub fn admit(&self) -> Result<(), Refusal> {
        self.unless_busy().inspect_err(|_| {
            self.counters.requests.fetch_add(1, Ordering::Relaxed);
        })
    }

    fn unless_busy(&self) -> Result<(), Refusal> {
        match self.storage.busy() {
            Some(reason) => Err(self.refuse(Refusal::Unavailable(format!("store unavailable: {reason}")))),
            None => Ok(()),
        }
    }

    /// Accepts a decoded request. Returns once the accepted spans are durable. `encoded` is
    /// the request's protobuf encoding, when the caller has it.
    pub async fn export(&self, request: ExportTraceServiceRequest, encoded: Option<bytes::Bytes>) -> Result<ExportOutcome, Refusal> {
        self.counters.requests.fetch_add(1, Ordering::Relaxed);
        self.unless_busy()?;
        let now = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(0);
        let accepted = clew_ingest::from_otlp(request, &self.limits, now);
        let message = accepted.message();
        let rejected = accepted.rejected;
        let count = accepted.spans.len() as u64;
        // The bytes as received can stand in the log only if every span was kept as sent.
        let encoded = encoded.filter(|_| accepted.rejected == 0 && accepted.truncated == 0);
        match self.storage.append_encoded(accepted.spans, encoded).await {
            Ok(_) => {
                self.counters.accepted.fetch_add(count, Ordering::Relaxed);
                self.counters.rejected.fetch_add(rejected, Ordering::Relaxed);
                Ok(ExportOutcome { accepted: count, rejected, message })
            }
            Err(StoreError::Invalid(reason)) => Err(self.refuse(Refusal::Malformed(reason))),
            Err(error) => {
                // Counted in the status; one log line per refused request would flood the log.
                tracing::debug!(message = "refusing spans: store cannot take them", %error);
                Err(self.refuse(Refusal::Unavailable(error.to_string())))
            }
        }
    }

    /// Counts a refusal and hands it back.
    pub fn refuse(&self, refusal: Refusal) -> Refusal {
        let counter = match &refusal {
            Refusal::Malformed(_) | Refusal::Unsupported(_) => &self.counters.malformed,
            Refusal::TooLarge(_) => &self.counters.too_large,
            Refusal::Unavailable(_) => &self.counters.unavailable,
        };
        counter.fetch_add(1, Ordering::Relaxed);
        refusal
    }

    pub fn stats(&self) -> ReceiverStats {
        let c = &self.counters;
        ReceiverStats {
            requests: c.requests.load(Ordering::Relaxed),
            spans_accepted: c.accepted.load(Ordering::Relaxed),
            spans_rejected: c.rejected.load(Ordering::Relaxed),
            requests_refused_malformed: c.malformed.load(Ordering::Relaxed),
            requests_refused_too_large: c.too_large.load(Ordering::Relaxed),
            requests_refused_unavailable: c.unavailable.load(Ordering::Relaxed),
        }
    }
}
