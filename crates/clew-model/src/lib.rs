//! The span model of Clew and the pure per-trace algorithms.
//!
//! This crate knows nothing about wire formats, storage or servers. Every receiver converts
//! what it accepts into [`Span`]; the store keeps spans; queries return them. The per-trace
//! algorithms ([`assemble`], [`critical_path`], [`adjust_clock_skew`]) live here so that both trace assembly at
//! ingest time and queries can call them.

mod assemble;
mod clock_skew;
mod critical_path;
mod histogram;
mod ids;
pub mod sampling;
mod semconv;
mod span;

pub use assemble::{AssembledTrace, BorrowedTrace, SpanFacts, TraceFacts, assemble, assemble_borrowed, span_flags, trace_flags};
pub use clock_skew::{SkewAdjustment, adjust_clock_skew};
pub use critical_path::{CriticalSegment, critical_path};
pub use histogram::LatencyHistogram;
pub use ids::{IdError, SpanId, TraceId};
pub use semconv::DEPRECATED_ATTRIBUTES;
pub use span::{Attribute, Event, InstrumentationScope, Link, Resource, Span, SpanKind, StatusCode, Value};
