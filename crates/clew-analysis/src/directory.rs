//! The client directory: for one attribute (an SDK version, a client library, a database
//! system), which services carry which value, how often, and since and until when.

use std::collections::BTreeMap;

use clew_query::DirectoryEntry;
use serde::Serialize;

use crate::render::{cell, table};

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ValueUsage {
    pub value: String,
    pub spans: i64,
    /// Services carrying the value, most spans first.
    pub services: Vec<String>,
    pub first_seen_unix_nano: i64,
    pub last_seen_unix_nano: i64,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Directory {
    pub key: String,
    pub start_unix_nano: u64,
    pub end_unix_nano: u64,
    /// One row per (service, value).
    pub entries: Vec<DirectoryEntry>,
    /// Per value, the services that use it; the most widespread value first.
    pub values: Vec<ValueUsage>,
}

fn time(nanos: i64) -> String {
    chrono::DateTime::from_timestamp_nanos(nanos).format("%Y-%m-%d %H:%M:%S").to_string()
}

impl Directory {
    pub fn new(key: String, start_unix_nano: u64, end_unix_nano: u64, entries: Vec<DirectoryEntry>) -> Self {
        let mut values: BTreeMap<&str, ValueUsage> = BTreeMap::new();
        for e in &entries {
            let usage = values.entry(e.value.as_str()).or_insert_with(|| ValueUsage {
                value: e.value.clone(),
                spans: 0,
                services: Vec::new(),
                first_seen_unix_nano: e.first_seen_unix_nano,
                last_seen_unix_nano: e.last_seen_unix_nano,
            });
            usage.spans += e.spans;
            usage.services.push(e.service.clone());
            usage.first_seen_unix_nano = usage.first_seen_unix_nano.min(e.first_seen_unix_nano);
            usage.last_seen_unix_nano = usage.last_seen_unix_nano.max(e.last_seen_unix_nano);
        }
        let mut values: Vec<ValueUsage> = values.into_values().collect();
        for usage in &mut values {
            usage.services.sort_by_key(|s| {
                std::cmp::Reverse(entries.iter().find(|e| &e.service == s && e.value == usage.value).map_or(0, |e| e.spans))
            });
        }
        values.sort_by(|a, b| b.services.len().cmp(&a.services.len()).then(b.spans.cmp(&a.spans)).then(a.value.cmp(&b.value)));
        Self { key, start_unix_nano, end_unix_nano, entries, values }
    }

    pub fn to_table(&self) -> String {
        let mut rows = vec![["SERVICE".to_string(), self.key.to_uppercase(), "SPANS".into(), "FIRST SEEN".into(), "LAST SEEN".into()]];
        for e in &self.entries {
            rows.push([e.service.clone(), e.value.clone(), e.spans.to_string(), time(e.first_seen_unix_nano), time(e.last_seen_unix_nano)]);
        }
        table(&rows)
    }

    pub fn to_markdown(&self) -> String {
        let mut out = format!("# `{}` by service\n\n", self.key);
        if self.entries.is_empty() {
            out.push_str("No span in the window carries this attribute.\n");
            return out;
        }
        out.push_str("| Value | Services | Spans | First seen | Last seen |\n|---|---|---|---|---|\n");
        for v in &self.values {
            out.push_str(&format!(
                "| {} | {} | {} | {} | {} |\n",
                cell(&v.value),
                cell(&v.services.join(", ")),
                v.spans,
                time(v.first_seen_unix_nano),
                time(v.last_seen_unix_nano)
            ));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(service: &str, value: &str, spans: i64) -> DirectoryEntry {
        DirectoryEntry { service: service.into(), value: value.into(), spans, first_seen_unix_nano: spans, last_seen_unix_nano: 10 * spans }
    }

    #[test]
    fn groups_services_by_value() {
        let d = Directory::new(
            "telemetry.sdk.version".into(),
            0,
            1,
            vec![entry("a", "1.24.0", 5), entry("b", "1.24.0", 9), entry("c", "1.30.0", 100)],
        );
        assert_eq!(d.values[0].value, "1.24.0");
        assert_eq!(d.values[0].services, vec!["b", "a"]);
        assert_eq!((d.values[0].spans, d.values[0].first_seen_unix_nano, d.values[0].last_seen_unix_nano), (14, 5, 90));
        assert!(d.to_markdown().contains("| 1.30.0 | c | 100 |"));
        assert_eq!(d.to_table().lines().count(), 4);
    }
}
