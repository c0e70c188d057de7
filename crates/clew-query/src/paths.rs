//! Calling contexts of entry points, read from the rollups written at assembly: the critical
//! path across traces and the fan-out of each entry point are computed from these rows.

use std::collections::HashMap;

use clew_store::{PathRow, REQUEST_PATH, RollupRows, TrafficFilter, in_minutes, merge_paths};

use crate::metrics::first_minute;
use crate::{EntryFilter, QueryEngine, QueryError};

impl QueryEngine {
    /// The calling-context rows of traces that started in the minutes overlapping [start, end]
    /// (Unix ns), of the entry point `entry` names (every entry point when it names none), of
    /// the traffic sources `traffic` admits (merged together). With `per_minute`, one row per
    /// (minute, entry point, context); otherwise one per (entry point, context), dated at the
    /// window's first minute.
    pub async fn calling_contexts(
        &self,
        start_unix_nano: u64,
        end_unix_nano: u64,
        entry: &EntryFilter,
        traffic: &TrafficFilter,
        per_minute: bool,
    ) -> Result<Vec<PathRow>, QueryError> {
        self.calling_contexts_where(start_unix_nano, end_unix_nano, entry, traffic, per_minute, |_| true).await
    }

    /// Requests per traffic source of the traces that started in the minutes overlapping
    /// [start, end]: (source, requests), the most first. The empty source is traffic naming none.
    pub async fn traffic_sources(&self, start_unix_nano: u64, end_unix_nano: u64) -> Result<Vec<(String, u64)>, QueryError> {
        let (first, last) = minutes(start_unix_nano, end_unix_nano)?;
        let parts = self.storage.rollups(first, last, RollupRows::Merged).await?;
        let mut sources: HashMap<&str, u64> = HashMap::new();
        for part in &parts {
            for row in in_minutes(&part.for_window(first, last).paths, first, last, |row| row.minute_unix_nano) {
                if row.path == REQUEST_PATH {
                    *sources.entry(&row.source).or_default() += row.traces;
                }
            }
        }
        let mut out: Vec<(String, u64)> = sources.into_iter().map(|(s, n)| (s.to_string(), n)).collect();
        out.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        Ok(out)
    }

    /// [`calling_contexts`](Self::calling_contexts), only the rows `keep` holds for (chosen
    /// before merging, which is most of the work over a long window).
    pub async fn calling_contexts_where(
        &self,
        start_unix_nano: u64,
        end_unix_nano: u64,
        entry: &EntryFilter,
        traffic: &TrafficFilter,
        per_minute: bool,
        keep: impl Fn(&PathRow) -> bool,
    ) -> Result<Vec<PathRow>, QueryError> {
        let (first, last) = minutes(start_unix_nano, end_unix_nano)?;
        let rows = if per_minute { RollupRows::PathsPerMinute } else { RollupRows::Merged };
        let parts = self.storage.rollups(first, last, rows).await?;
        Ok(contexts_of(&parts, (first, last), entry, traffic, per_minute, keep))
    }

    /// The calling contexts merged over the window, and the rows `keep` holds for per minute,
    /// from one read of the rollups.
    pub async fn calling_contexts_and_minutes(
        &self,
        start_unix_nano: u64,
        end_unix_nano: u64,
        entry: &EntryFilter,
        traffic: &TrafficFilter,
        keep: impl Fn(&PathRow) -> bool,
    ) -> Result<(Vec<PathRow>, Vec<PathRow>), QueryError> {
        let (first, last) = minutes(start_unix_nano, end_unix_nano)?;
        let parts = self.storage.rollups(first, last, RollupRows::PathsPerMinute).await?;
        Ok((
            contexts_of(&parts, (first, last), entry, traffic, false, |_| true),
            contexts_of(&parts, (first, last), entry, traffic, true, keep),
        ))
    }
}

/// The first and last minute of a window, which must end after it starts.
fn minutes(start_unix_nano: u64, end_unix_nano: u64) -> Result<(i64, i64), QueryError> {
    if end_unix_nano <= start_unix_nano {
        return Err(QueryError::Invalid("the window must end after it starts".into()));
    }
    Ok((first_minute(start_unix_nano), end_unix_nano.min(i64::MAX as u64) as i64))
}

/// The rollups' calling contexts in the minutes [first, last] that the filters admit.
fn contexts_of(
    parts: &[std::sync::Arc<clew_store::Rollup>],
    (first, last): (i64, i64),
    entry: &EntryFilter,
    traffic: &TrafficFilter,
    per_minute: bool,
    keep: impl Fn(&PathRow) -> bool,
) -> Vec<PathRow> {
    let wanted = |row: &&PathRow| {
        entry.service.as_deref().is_none_or(|s| s == &*row.entry_service)
            && entry.operation.as_deref().is_none_or(|o| o == &*row.entry_operation)
            && traffic.admits(&row.source)
            && keep(row)
    };
    let rows = parts.iter().flat_map(|part| {
        // A window over every minute of a part may read its rows merged across minutes.
        let part = if per_minute { part.as_ref() } else { part.for_window(first, last) };
        in_minutes(&part.paths, first, last, |row| row.minute_unix_nano)
    });
    merge_paths(rows.filter(wanted), (!per_minute).then_some(first), false)
}
