//! A simulated online shop that sends realistic OTLP traffic, and knows its own ground truth.
//!
//! Twenty-six instrumented services owned by ten teams serve six entry operations through a
//! gateway. The shop has what real systems have: a slow dependency (recommendations), retries
//! (cart → inventory), about 2% errors with exception events, an N+1 pattern (search prices
//! each hit), services that are called but send no spans (a payment provider, a legacy
//! inventory system, databases, a cache), one call where context propagation breaks
//! (shipping-service does not extract the incoming context), and a message queue between
//! orders and notifications. [`GroundTruth`] states all of it, for tests to check analyses
//! against.

mod shop;

pub use shop::{CRITICAL_OPERATIONS, GroundTruth, Shop, catalog_yaml, teams};
