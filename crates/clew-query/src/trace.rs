use clew_model::{AssembledTrace, Span, TraceId, adjust_clock_skew, assemble, span_flags, trace_flags};
use serde::Serialize;

use crate::{QueryEngine, QueryError};

/// One trace as queries return it: spans re-assembled from wherever they were stored, so that
/// fragments and late spans are merged and the facts describe the whole.
#[derive(Debug)]
pub struct TraceView {
    pub trace: AssembledTrace,
    pub warnings: Vec<TraceWarning>,
    /// The trace was stored in more than one piece (late spans).
    pub fragments_merged: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct TraceWarning {
    pub kind: &'static str,
    pub message: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub span_ids: Vec<String>,
}

/// Shifts larger than this are no clock error but a broken trace, and are not made.
const MAX_CLOCK_SKEW_NANOS: u64 = 10 * 60 * 1_000_000_000;

impl QueryEngine {
    /// A trace with clock skew adjusted (see [`QueryEngine::trace_with`]).
    pub async fn trace(&self, trace_id: TraceId) -> Result<Option<TraceView>, QueryError> {
        self.trace_with(trace_id, true).await
    }

    /// A trace re-assembled from every stored piece. With `adjust_skew`, spans whose host
    /// clock is off against their parent's are shifted into it, and a warning says so; without
    /// it, the spans are exactly as received.
    pub async fn trace_with(&self, trace_id: TraceId, adjust_skew: bool) -> Result<Option<TraceView>, QueryError> {
        let stored = self.storage.trace(trace_id).await?;
        if stored.is_empty() {
            return Ok(None);
        }
        Ok(Some(view(stored, adjust_skew)))
    }

    /// Several traces, read together, in the order asked; missing ones are left out.
    pub async fn traces(&self, trace_ids: &[TraceId], adjust_skew: bool) -> Result<Vec<TraceView>, QueryError> {
        let stored = self.storage.traces(trace_ids.to_vec()).await?;
        Ok(stored.into_iter().map(|spans| view(spans, adjust_skew)).collect())
    }
}

/// A trace re-assembled from its stored spans (see [`QueryEngine::trace_with`]).
fn view(stored: Vec<clew_store::block::StoredSpan>, adjust_skew: bool) -> TraceView {
    {
        let fragments_merged = stored.iter().any(|s| s.trace_flags & trace_flags::FRAGMENT != 0);
        let mut spans: Vec<Span> = stored.into_iter().map(|s| s.span).collect();
        let mut skew_warnings = Vec::new();
        if adjust_skew {
            for adjustment in adjust_clock_skew(&mut spans, MAX_CLOCK_SKEW_NANOS) {
                let span_ids: Vec<String> = adjustment.spans.iter().map(|i| spans[*i].span_id.to_hex()).collect();
                skew_warnings.push(TraceWarning {
                    kind: "clock_skew",
                    message: format!(
                        "{} span(s) on host {} shifted by {} to fit inside their parent: that host's clock is off",
                        span_ids.len(),
                        adjustment.host,
                        signed_duration(adjustment.delta_nanos)
                    ),
                    span_ids,
                });
            }
        }
        let trace = assemble(spans);
        let mut warnings = warnings(&trace, fragments_merged);
        warnings.extend(skew_warnings);
        TraceView { trace, warnings, fragments_merged }
    }
}

fn warnings(trace: &AssembledTrace, fragments_merged: bool) -> Vec<TraceWarning> {
    let mut out = Vec::new();
    let ids = |flag: u32| -> Vec<String> {
        trace.spans.iter().zip(&trace.span_facts).filter(|(_, f)| f.flags & flag != 0).map(|(s, _)| s.span_id.to_hex()).collect()
    };
    let flags = trace.facts.flags;
    if flags & trace_flags::NO_ROOT != 0 {
        out.push(TraceWarning {
            kind: "no_root",
            message: "no span without a parent: the root span is missing; the earliest orphan stands in".into(),
            span_ids: vec![],
        });
    }
    if flags & trace_flags::MULTIPLE_ROOTS != 0 {
        out.push(TraceWarning {
            kind: "multiple_roots",
            message: "several spans have no parent: context was not propagated between them".into(),
            span_ids: ids(span_flags::ROOT),
        });
    }
    if flags & trace_flags::HAS_ORPHANS != 0 {
        let orphans = ids(span_flags::ORPHAN);
        out.push(TraceWarning {
            kind: "orphans",
            message: format!("{} span(s) name a parent that is not in the trace", orphans.len()),
            span_ids: orphans,
        });
    }
    if flags & trace_flags::HAS_UNMATCHED_CLIENT != 0 {
        let clients = ids(span_flags::UNMATCHED_CLIENT);
        out.push(TraceWarning {
            kind: "unmatched_client",
            message: format!(
                "{} client/producer span(s) have no server/consumer child: the callee is not instrumented or drops the context",
                clients.len()
            ),
            span_ids: clients,
        });
    }
    if fragments_merged {
        out.push(TraceWarning {
            kind: "late_spans",
            message: "some spans arrived after the trace was first assembled; they are merged here".into(),
            span_ids: vec![],
        });
    }
    out
}

/// `+1.5ms`, `-3.2s`: a shift, for people.
fn signed_duration(nanos: i64) -> String {
    let sign = if nanos < 0 { "-" } else { "+" };
    let magnitude = nanos.unsigned_abs() as f64;
    let (value, unit) = match magnitude {
        m if m >= 1e9 => (m / 1e9, "s"),
        m if m >= 1e6 => (m / 1e6, "ms"),
        m if m >= 1e3 => (m / 1e3, "µs"),
        m => (m, "ns"),
    };
    format!("{sign}{}{unit}", (value * 1000.0).round() / 1000.0)
}
