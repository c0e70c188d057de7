//! Turning what clients send into Clew's span model, and back.
//!
//! Every receiver ends here. Zipkin ([`zipkin`]) and Jaeger ([`jaeger`]) spans are first turned
//! into an OTLP request the way OpenTelemetry's translations do; then, for every protocol, bytes
//! are decoded ([`body`]), spans are checked against the [`Limits`] and converted ([`otlp`]), and
//! whatever was refused is counted and explained for the client's partial-success answer.
//! The write-ahead log stores accepted spans as an OTLP request ([`otlp::to_otlp`]) so that one
//! codec serves the wire, the log and the export of a trace.

pub mod body;
pub mod jaeger;
mod limits;
pub mod otlp;
pub mod zipkin;

pub use limits::Limits;
pub use otlp::{Accepted, from_otlp, to_otlp};

pub use opentelemetry_proto::tonic::collector::trace::v1 as collector;
pub use opentelemetry_proto::tonic::trace::v1 as proto_trace;
