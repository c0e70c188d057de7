use clew_model::{AssembledTrace, Span, TraceId, assemble, span_flags, trace_flags};
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

impl QueryEngine {
    pub async fn trace(&self, trace_id: TraceId) -> Result<Option<TraceView>, QueryError> {
        let stored = self.storage.trace(trace_id).await?;
        if stored.is_empty() {
            return Ok(None);
        }
        let fragments_merged = stored.iter().any(|s| s.trace_flags & trace_flags::FRAGMENT != 0);
        let spans: Vec<Span> = stored.into_iter().map(|s| s.span).collect();
        let trace = assemble(spans);
        let warnings = warnings(&trace, fragments_merged);
        Ok(Some(TraceView { trace, warnings, fragments_merged }))
    }

    /// Several traces, looked up a few at a time, in the order asked; missing ones are left out.
    pub async fn traces(&self, trace_ids: &[TraceId]) -> Result<Vec<TraceView>, QueryError> {
        use futures::StreamExt;
        let lookups = trace_ids.to_vec().into_iter().map(|id| {
            let engine = self.clone();
            async move { engine.trace(id).await }
        });
        let found: Vec<Result<Option<TraceView>, QueryError>> = futures::stream::iter(lookups).buffered(4).collect().await;
        let mut out = Vec::with_capacity(found.len());
        for view in found {
            if let Some(view) = view? {
                out.push(view);
            }
        }
        Ok(out)
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
