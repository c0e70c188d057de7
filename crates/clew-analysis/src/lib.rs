//! Adoption analyses: who owns each service (a catalog and resource attributes), how much of
//! the system is instrumented and where trace context is lost, what each service should fix,
//! and in which order teams should adopt tracing. Pure functions over the facts the query
//! layer gathers, so that each rule can be tested on hand-built input.

pub mod catalog;
pub mod correlations;
pub mod coverage;
pub mod critical;
pub mod critical_path;
pub mod directory;
pub mod flows;
pub mod groups;
pub mod plan;
pub mod render;
pub mod series;
pub mod trace_diff;
pub mod traffic;

pub use catalog::{Catalog, CatalogEntry, CatalogError, CriticalOperation};
pub use coverage::{
    CoverageReport, Finding, OwnerSource, PropagationBreak, ServiceCoverage, ServiceStatus, TeamCoverage, coverage, owner_of,
};
pub use critical::{CriticalOperationReport, NodeStatus, OperationNode, critical_operation};
pub use plan::{PlanStep, RolloutPlan, StepReason, TeamProgress, rollout_plan};
