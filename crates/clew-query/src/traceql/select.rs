//! The spans a TraceQL spanset query selects in a window, for analyses that compare them with
//! the rest (correlations, group comparison): SQL that holds for exactly those spans where SQL
//! can state the filter, else the spans of every matching spanset of each candidate trace.

use std::collections::HashSet;

use clew_model::{SpanId, TraceId};
use datafusion::arrow::array::AsArray;

use super::{MAX_TRACES, Query, SpansetExpr, TraceContext, evaluate, windowed_prefilter};
use crate::{QueryEngine, QueryError, TraceView};

/// How the selected spans are known.
#[derive(Debug, Clone)]
pub enum SpanSelection {
    /// SQL over the span table that is true for exactly the selected spans.
    Sql(String),
    /// The spans of every matching spanset, by trace and span ID.
    Spans { spans: HashSet<(TraceId, SpanId)>, inspected_traces: usize, partial: bool },
}

/// The SQL condition equal to a query's spanset part when that is one filter SQL can state
/// exactly (a metrics function, if any, is not part of it).
pub fn exact_filter(query: &Query) -> Option<String> {
    if !query.stages.is_empty() {
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
        let mut spans = HashSet::new();
        let (inspected_traces, partial) = self
            .evaluate_candidates(query, start_unix_nano, end_unix_nano, |view, _, matched| {
                spans.extend(matched.iter().map(|&i| (view.trace.spans[i].trace_id, view.trace.spans[i].span_id)));
            })
            .await?;
        Ok(SpanSelection::Spans { spans, inspected_traces, partial })
    }

    /// Evaluates `query` on each candidate trace (see [`Self::candidate_traces`]) and calls
    /// `found` with the trace and the indexes of its matched spans started within
    /// [start, end), each once, in order (traces without one are skipped). Returns the traces
    /// inspected and whether the cap left some out.
    pub(crate) async fn evaluate_candidates(
        &self,
        query: &Query,
        start_unix_nano: u64,
        end_unix_nano: u64,
        mut found: impl FnMut(&TraceView, &TraceContext, &[usize]),
    ) -> Result<(usize, bool), QueryError> {
        let (ids, partial) = self.candidate_traces(query, start_unix_nano, end_unix_nano).await?;
        let mut inspected = 0;
        for chunk in ids.chunks(1_000) {
            for view in self.traces(chunk, false).await? {
                inspected += 1;
                let context = TraceContext::new(&view.trace);
                let mut matched: Vec<usize> = evaluate(query, &context)
                    .into_iter()
                    .flat_map(|set| set.spans)
                    .filter(|&i| (start_unix_nano..end_unix_nano).contains(&view.trace.spans[i].start_time_unix_nano))
                    .collect();
                matched.sort_unstable();
                matched.dedup();
                if !matched.is_empty() {
                    found(&view, &context, &matched);
                }
            }
        }
        Ok((inspected, partial))
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
        if let Some((spans, trace)) = windowed_prefilter(query, Some(start_unix_nano), Some(end_unix_nano)) {
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
