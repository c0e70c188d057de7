use serde::{Deserialize, Serialize};

/// Limits applied to every span any receiver accepts. What exceeds a count limit is dropped
/// and added to the span's `dropped_*_count`; what exceeds a size limit is truncated; both
/// are reported to the client as a warning in the partial-success message.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Attributes kept per span, event or link (the OpenTelemetry SDKs' default is 128).
    pub max_attributes: usize,
    /// Events kept per span.
    pub max_events: usize,
    /// Links kept per span.
    pub max_links: usize,
    /// Bytes kept of any string or bytes attribute value; longer values are truncated.
    pub max_attribute_value_bytes: usize,
    /// Bytes kept of an attribute key, span name or status message.
    pub max_name_bytes: usize,
    /// Spans starting earlier than this (Unix seconds) are refused: a clock at zero, or a unit
    /// mistake (microseconds sent as nanoseconds).
    pub min_start_unix_seconds: u64,
    /// Spans starting further in the future than this are refused.
    pub max_future_seconds: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_attributes: 128,
            max_events: 128,
            max_links: 128,
            max_attribute_value_bytes: 16 * 1024,
            max_name_bytes: 1024,
            // 2000-01-01T00:00:00Z
            min_start_unix_seconds: 946_684_800,
            max_future_seconds: 24 * 3600,
        }
    }
}
