//! The rollout plan on hand-built topologies, with its rationale, as snapshots.

use clew_analysis::{Catalog, coverage, rollout_plan};
use clew_query::{AdoptionFacts, RootOperation, ServiceCall, ServiceFacts, UnansweredCalls};

struct Topology {
    facts: AdoptionFacts,
}

impl Topology {
    fn new() -> Self {
        Self { facts: AdoptionFacts { start_unix_nano: 0, end_unix_nano: 3_600_000_000_000, ..Default::default() } }
    }

    /// A service that sends spans, owned (by its resource attribute) by `team`.
    fn traced(mut self, service: &str, team: &str) -> Self {
        self.facts.services.push(ServiceFacts {
            service: service.into(),
            owner: Some(team.into()),
            spans: 1000,
            traces: 500,
            whole_traces: 500,
            covered_traces: 400,
            entry_spans: 500,
            ..Default::default()
        });
        self
    }

    /// Requests entering at `service` (root SERVER spans), `ms` each.
    fn entry(mut self, service: &str, operation: &str, requests: i64, ms: i64) -> Self {
        self.facts.roots.push(RootOperation {
            service: service.into(),
            operation: operation.into(),
            kind: "server".into(),
            spans: requests,
            errors: 0,
            duration_nanos: requests * ms * 1_000_000,
        });
        self
    }

    /// Calls between two traced services.
    fn call(mut self, caller: &str, callee: &str, calls: i64) -> Self {
        self.facts.calls.push(ServiceCall { caller: caller.into(), callee: callee.into(), calls, errors: 0, critical_path_nanos: 0 });
        self
    }

    /// Calls from a traced service to one that sends no spans, `ms` each on the critical path,
    /// in traces entering at `entry`.
    fn blind(mut self, caller: &str, peer: &str, calls: i64, ms: i64, entry: &str) -> Self {
        let (entry_service, entry_operation) = entry.split_once(' ').unwrap();
        self.facts.unanswered.push(UnansweredCalls {
            caller: caller.into(),
            operation: format!("GET {peer}"),
            peer: peer.into(),
            is_database: false,
            entry_service: entry_service.into(),
            entry_operation: entry_operation.into(),
            calls,
            errors: 0,
            traces: calls,
            duration_nanos: calls * ms * 1_000_000,
            critical_path_nanos: calls * ms * 1_000_000,
            roots_in_peer: 0,
        });
        self
    }

    fn plan(&self, catalog: &str) -> String {
        let catalog = Catalog::parse(catalog).unwrap();
        let report = coverage(&self.facts, &catalog);
        rollout_plan(&report, &self.facts, &catalog).to_markdown()
    }
}

#[test]
fn chain() {
    // gateway → api → orders → ledger: the first two teams trace; orders and ledger do not.
    let topology = Topology::new()
        .traced("gateway", "edge")
        .traced("api", "platform")
        .entry("gateway", "GET /orders", 1000, 120)
        .call("gateway", "api", 1000)
        .blind("api", "orders", 1000, 60, "gateway GET /orders");
    let catalog = "services:\n  - service: orders\n    team: orders\n  - service: ledger\n    team: finance\n    tier: 1\n";
    insta::assert_snapshot!(topology.plan(catalog));
}

#[test]
fn fan_out_hub() {
    // Only the gateway traces; it fans out to three teams' services, and users has by far the most calls.
    let topology = Topology::new()
        .traced("gateway", "edge")
        .entry("gateway", "GET /home", 600, 80)
        .entry("gateway", "GET /search", 400, 150)
        .blind("gateway", "users", 600, 5, "gateway GET /home")
        .blind("gateway", "users", 400, 5, "gateway GET /search")
        .blind("gateway", "catalog", 900, 20, "gateway GET /search")
        .blind("gateway", "recommendations", 600, 40, "gateway GET /home");
    let catalog = "\
services:
  - service: gateway
    team: edge
    customer_facing: true
  - service: users
    team: identity
  - service: catalog
    team: discovery
  - service: recommendations
    team: discovery
  - service: auth
    team: security
";
    insta::assert_snapshot!(topology.plan(catalog));
}

#[test]
fn two_entry_points_sharing_a_dependency() {
    // The website and the mobile API both depend on accounts; the web team has not finished.
    let topology = Topology::new()
        .traced("web-gateway", "web")
        .traced("mobile-api", "mobile")
        .entry("web-gateway", "GET /", 700, 90)
        .entry("mobile-api", "GET /feed", 300, 60)
        .blind("web-gateway", "web-bff", 700, 70, "web-gateway GET /")
        .blind("web-gateway", "accounts", 700, 10, "web-gateway GET /")
        .blind("mobile-api", "accounts", 300, 10, "mobile-api GET /feed")
        .blind("mobile-api", "push", 100, 5, "mobile-api GET /feed");
    let catalog = "\
services:
  - service: web-gateway
    team: web
    customer_facing: true
  - service: web-bff
    team: web
  - service: mobile-api
    team: mobile
    customer_facing: true
  - service: accounts
    team: identity
    tier: 1
  - service: push
    team: notifications
";
    insta::assert_snapshot!(topology.plan(catalog));
}
