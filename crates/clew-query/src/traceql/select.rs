//! The spans a TraceQL spanset query selects in a window, for analyses that compare them with
//! the rest (correlations, group comparison): SQL that holds for exactly those spans where SQL
//! can state the filter, else the spans of every matching spanset of each candidate trace.

use std::collections::HashSet;

use clew_model::{SpanId, TraceId};
use datafusion::arrow::array::AsArray;

use super::{MAX_TRACES, Query, SpansetExpr, TraceContext, evaluate, prefilter};
use crate::{QueryEngine, QueryError};

/// How the selected spans are known.
#[derive(Debug, Clone)]
pub enum SpanSelection {
    /// SQL over the span table that is true for exactly the selected spans.
    Sql(String),
    /// The spans of every matching spanset, by trace and span ID.
    Spans { spans: HashSet<(TraceId, SpanId)>, inspected_traces: usize, partial: bool },
}

/// The SQL condition equal to a query that is one spanset filter SQL can state exactly.
pub fn exact_filter(query: &Query) -> Option<String> {
    if !query.stages.is_empty() || query.metrics.is_some() {
        return None;
    }
    let SpansetExpr::Filter(expr) = &query.first else { return None };
    super::exact_sql(expr)
}

impl QueryEngine {
    /// The spans `query` selects among those started within [start, end).
    pub async fn select_spans(&self, query: &Query, start_unix_nano: u64, end_unix_nano: u64) -> Result<SpanSelection, QueryError> {
        if query.metrics.is_some() {
            return Err(QueryError::Invalid("a metrics function has no place in a selection: give the spanset query alone".into()));
        }
        if let Some(sql) = exact_filter(query) {
            return Ok(SpanSelection::Sql(sql));
        }
        let (ids, partial) = self.candidate_traces(query, start_unix_nano, end_unix_nano).await?;
        let mut spans = HashSet::new();
        let mut inspected_traces = 0;
        for chunk in ids.chunks(1_000) {
            for view in self.traces(chunk, false).await? {
                inspected_traces += 1;
                let context = TraceContext::new(&view.trace);
                for set in evaluate(query, &context) {
                    for index in set.spans {
                        let span = &view.trace.spans[index];
                        if (start_unix_nano..end_unix_nano).contains(&span.start_time_unix_nano) {
                            spans.insert((span.trace_id, span.span_id));
                        }
                    }
                }
            }
        }
        Ok(SpanSelection::Spans { spans, inspected_traces, partial })
    }

    /// The traces that may match `query` with a span started within [start, end), newest
    /// first, at most [`MAX_TRACES`]; `true` when there were more.
    pub(crate) async fn candidate_traces(
        &self,
        query: &Query,
        start_unix_nano: u64,
        end_unix_nano: u64,
    ) -> Result<(Vec<TraceId>, bool), QueryError> {
        let mut conditions = vec![format!("start_time_unix_nano >= {start_unix_nano} AND start_time_unix_nano < {end_unix_nano}")];
        let mut having = String::new();
        if let Some((spans, trace)) = prefilter(query) {
            conditions.push(format!("({spans})"));
            having = format!("HAVING {trace}");
        }
        let sql = format!(
            "SELECT trace_id, max(trace_start_unix_nano) AS started FROM spans WHERE {} GROUP BY trace_id {having} \
             ORDER BY started DESC, trace_id LIMIT {}",
            conditions.join(" AND "),
            MAX_TRACES + 1
        );
        let mut ids = Vec::new();
        for batch in self.internal_sql(&sql).await? {
            let column = batch.column(0).as_fixed_size_binary();
            ids.extend((0..batch.num_rows()).filter_map(|row| TraceId::from_slice(column.value(row)).ok()));
        }
        let partial = ids.len() > MAX_TRACES;
        ids.truncate(MAX_TRACES);
        Ok((ids, partial))
    }
}
