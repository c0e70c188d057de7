//! The flow of an entry operation: every (service, operation) its requests run, linked to the
//! (service, operation) that called it, with how many times per request. The facts behind the
//! living documentation of a system.

use std::collections::HashMap;

use clew_store::{RootMinute, in_minutes};
use serde::{Deserialize, Serialize};

use crate::adoption::{EntryPredicate, RequestStats};
use crate::metrics::{ERROR, VIRTUAL_PEER, first_minute, percentiles, rows};
use crate::{QueryEngine, QueryError};

/// How many requests ran a node how many times: `traces` requests ran it `per_request` times.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct FlowCount {
    pub parent_service: Option<String>,
    pub parent_name: Option<String>,
    pub service: String,
    pub name: String,
    pub kind: String,
    pub per_request: i64,
    pub traces: i64,
}

/// A node's spans over all requests.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct FlowSpans {
    pub parent_service: Option<String>,
    pub parent_name: Option<String>,
    pub service: String,
    pub name: String,
    pub kind: String,
    /// For a CLIENT/PRODUCER span: who it calls, as the service map names it.
    pub peer: Option<String>,
    pub spans: i64,
    pub errors: i64,
    pub p50_nanos: f64,
    pub p95_nanos: f64,
    pub critical_path_nanos: i64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
pub struct FlowFacts {
    pub start_unix_nano: u64,
    pub end_unix_nano: u64,
    pub stats: RequestStats,
    pub counts: Vec<FlowCount>,
    pub spans: Vec<FlowSpans>,
}

/// Entry operations listed at most.
pub const MAX_ENTRY_OPERATIONS: usize = 1_000;

/// An entry operation and its requests in a window.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct EntryOperation {
    pub service: String,
    pub operation: String,
    pub kind: String,
    pub requests: i64,
    pub errors: i64,
}

impl QueryEngine {
    /// The entry operations (root spans by service and name), busiest first, from the root
    /// rollups: whole minutes from the one `start` falls in, and counted as the traffic they
    /// stand for where traces were sampled.
    pub async fn entry_operations(&self, start_unix_nano: u64, end_unix_nano: u64) -> Result<Vec<EntryOperation>, QueryError> {
        let (first, last) = (first_minute(start_unix_nano), end_unix_nano.min(i64::MAX as u64) as i64);
        let stored = self.storage().rollups(first, last, clew_store::RollupRows::Merged).await?;
        let mut totals: HashMap<(&str, &str, &str), RootMinute> = HashMap::new();
        for part in stored.iter().map(|part| part.for_window(first, last)) {
            for row in in_minutes(&part.adoption.roots, first, last, |r| r.minute_unix_nano) {
                match totals.get_mut(&row.key()) {
                    Some(total) => total.add(row),
                    None => {
                        totals.insert(row.key(), row.clone());
                    }
                }
            }
        }
        let mut entries: Vec<EntryOperation> = totals
            .into_values()
            .map(|root| EntryOperation {
                requests: root.spans.min(i64::MAX as u64) as i64,
                errors: root.errors.min(i64::MAX as u64) as i64,
                service: root.service,
                operation: root.operation,
                kind: root.kind,
            })
            .collect();
        entries.sort_by(|a, b| {
            b.requests.cmp(&a.requests).then_with(|| (&a.service, &a.operation, &a.kind).cmp(&(&b.service, &b.operation, &b.kind)))
        });
        entries.truncate(MAX_ENTRY_OPERATIONS);
        Ok(entries)
    }

    /// The flow of the requests matching `predicate` that started in [start, end].
    pub async fn flow_facts(&self, predicate: &EntryPredicate, start_unix_nano: u64, end_unix_nano: u64) -> Result<FlowFacts, QueryError> {
        if end_unix_nano <= start_unix_nano {
            return Err(QueryError::Invalid("the window must end after it starts".into()));
        }
        let entry = predicate.sql();
        let window = format!("start_time_unix_nano >= {start_unix_nano} AND start_time_unix_nano < {end_unix_nano}");
        let matched = format!("matched AS (SELECT DISTINCT trace_id FROM spans WHERE {entry} AND {window})");
        let stats_sql = format!(
            "SELECT count(*) AS requests, coalesce(sum({ERROR}), 0) AS errors, {} FROM spans WHERE {entry} AND {window}",
            percentiles("duration_nanos", &[(0.5, "p50_nanos"), (0.95, "p95_nanos"), (0.99, "p99_nanos")])
        );
        let node = "s.parent_service, s.parent_name, s.service_name, s.name, s.kind";
        let counts_sql = format!(
            "WITH {matched}, per_trace AS ( \
               SELECT {node}, s.trace_id, count(*) AS c FROM spans s JOIN matched m ON s.trace_id = m.trace_id GROUP BY {node}, s.trace_id) \
             SELECT parent_service, parent_name, service_name AS service, name, kind, c AS per_request, count(*) AS traces \
             FROM per_trace GROUP BY parent_service, parent_name, service_name, name, kind, c LIMIT 100000"
        );
        let spans_sql = format!(
            "WITH {matched} SELECT s.parent_service, s.parent_name, s.service_name AS service, s.name, s.kind, \
               CASE WHEN s.kind IN ('client', 'producer') THEN max({VIRTUAL_PEER}) END AS peer, count(*) AS spans, \
               sum({ERROR}) AS errors, {}, sum(s.critical_path_nanos) AS critical_path_nanos \
             FROM spans s JOIN matched m ON s.trace_id = m.trace_id GROUP BY {node} LIMIT 20000",
            percentiles("s.duration_nanos", &[(0.5, "p50_nanos"), (0.95, "p95_nanos")])
        );
        // The three answers are ratios of each other: they are read from the same spans.
        let pinned = self.pinned().await?;
        let (stats, counts, spans) =
            tokio::try_join!(pinned.internal_sql(&stats_sql), pinned.internal_sql(&counts_sql), pinned.internal_sql(&spans_sql))?;
        Ok(FlowFacts {
            start_unix_nano,
            end_unix_nano,
            stats: rows::<RequestStats>(&stats)?.pop().unwrap_or_default(),
            counts: rows(&counts)?,
            spans: rows(&spans)?,
        })
    }
}
