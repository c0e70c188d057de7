//! The service catalog: who owns what, how critical it is, and which services exist but send no
//! spans yet. A YAML file:
//!
//! ```yaml
//! services:
//!   - service: web-gateway
//!     team: edge
//!     tier: 1
//!     customer_facing: true
//!     notes: Every request from the apps and the website enters here.
//!   - service: legacy-inventory
//!     team: fulfillment
//!     aliases: [inventory.legacy.internal]
//! critical_operations:
//!   - name: Checkout
//!     service: web-gateway
//!     operation: POST /checkout
//!     description: A customer pays for their cart.
//! ```

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};

/// A catalog that could not be read, with where.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Serialize)]
#[error("{}{message}", location(*.line, field))]
pub struct CatalogError {
    /// 1-based; absent when the document as a whole is wrong.
    pub line: Option<usize>,
    /// The field at fault, as a path: `services[2].tier`.
    pub field: Option<String>,
    pub message: String,
}

fn location(line: Option<usize>, field: &Option<String>) -> String {
    match (line, field) {
        (Some(line), Some(field)) => format!("line {line}, {field}: "),
        (Some(line), None) => format!("line {line}: "),
        (None, Some(field)) => format!("{field}: "),
        (None, None) => String::new(),
    }
}

/// One service as the catalog describes it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields)]
pub struct CatalogEntry {
    pub service: String,
    pub team: String,
    /// 1 is the most critical.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tier: Option<u8>,
    /// Users call it directly: an entry point.
    #[serde(default)]
    pub customer_facing: bool,
    /// Run by someone else (a third-party API): it will never send spans, and the rollout
    /// plan leaves it out.
    #[serde(default)]
    pub external: bool,
    /// Other names its callers use for it (`peer.service`, `server.address`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub aliases: Vec<String>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub notes: String,
}

/// A user-visible operation the business cares about most: the requests entering `service` as
/// `operation` (the entry span's name) or on `route` (its `http.route`), optionally narrowed by
/// a TraceQL filter on the entry span (`{ span.http.request.method = "POST" }`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields)]
pub struct CriticalOperation {
    pub name: String,
    pub service: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub operation: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub route: Option<String>,
    /// A TraceQL filter the entry span must match too.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traceql: Option<String>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
    /// Where it is defined: `catalog` (the catalog file) or `api` (registered over the API).
    #[serde(default, skip_deserializing, skip_serializing_if = "String::is_empty")]
    pub source: String,
}

/// Where a critical operation is defined.
pub const FROM_CATALOG: &str = "catalog";
pub const FROM_API: &str = "api";

impl CriticalOperation {
    /// Whether the definition can be used: the field at fault and why, if not.
    pub fn check(&self) -> Result<(), (&'static str, String)> {
        let name = self.name.trim();
        if name.is_empty() || self.name.chars().count() > 200 || self.name.chars().any(char::is_control) {
            return Err(("name", "a critical operation needs a name of 1 to 200 characters, without control characters".into()));
        }
        if self.service.trim().is_empty() {
            return Err(("service", format!("{name} needs the service its requests enter")));
        }
        match (&self.operation, &self.route, &self.traceql) {
            (None, None, None) => {
                return Err(("operation", format!("{name} needs an operation (the entry span's name), a route or a TraceQL filter")));
            }
            (Some(_), Some(_), _) => return Err(("route", format!("{name} has both an operation and a route: give one"))),
            _ => {}
        }
        if let Some(text) = &self.traceql {
            entry_filter_sql(text).map_err(|message| ("traceql", format!("{name}: {message}")))?;
        }
        Ok(())
    }
}

/// The SQL condition on the span table that a critical operation's TraceQL filter states, or
/// why it cannot be one: a single `{ … }` of conditions SQL can say exactly.
pub fn entry_filter_sql(text: &str) -> Result<String, String> {
    if text.len() > 4_096 {
        return Err("the TraceQL filter has at most 4096 bytes".into());
    }
    let query = clew_query::traceql::parse(text).map_err(|e| format!("TraceQL: {e}"))?;
    if query.metrics.is_some() {
        return Err("the TraceQL filter is a spanset filter, without a metrics function".into());
    }
    clew_query::traceql::exact_filter(&query).ok_or_else(|| {
        "the TraceQL filter must be one { … } of conditions on the entry span's own fields, joined by && and || \
         (structural operators, pipelines and conditions on parents or other spans have no place here)"
            .into()
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Document {
    #[serde(default)]
    services: Vec<CatalogEntry>,
    #[serde(default)]
    critical_operations: Vec<CriticalOperation>,
}

/// The catalog, indexed by service name and alias.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Catalog {
    pub services: Vec<CatalogEntry>,
    pub critical_operations: Vec<CriticalOperation>,
    #[serde(skip)]
    index: HashMap<String, usize>,
}

impl Catalog {
    /// Reads a catalog, or says which line and field are wrong.
    pub fn parse(text: &str) -> Result<Self, CatalogError> {
        if text.trim().is_empty() {
            return Ok(Self::default());
        }
        let document: Document = serde_norway::from_str(text).map_err(|error| {
            let line = error.location().map(|l| l.line());
            let message = error.to_string();
            // The library's message starts with the path of the field when it knows it.
            let (field, message) = match message.split_once(": ") {
                Some((path, rest)) if path.starts_with("services") || path.starts_with("critical_operations") => {
                    (Some(path.to_string()), rest.to_string())
                }
                _ => (None, message),
            };
            let message = message.rsplit_once(" at line ").map_or(message.clone(), |(m, _)| m.to_string());
            CatalogError { line, field, message }
        })?;
        let lines = EntryLines::new(text, "services");
        let mut catalog =
            Self { services: Vec::with_capacity(document.services.len()), critical_operations: Vec::new(), index: HashMap::new() };
        for (i, entry) in document.services.into_iter().enumerate() {
            let at = |field: &str, message: String| CatalogError {
                line: lines.line_of(i, field),
                field: Some(format!("services[{i}].{field}")),
                message,
            };
            if entry.service.trim().is_empty() {
                return Err(at("service", "a service needs a name".into()));
            }
            if entry.team.trim().is_empty() {
                return Err(at("team", format!("service {} needs a team", entry.service)));
            }
            if entry.tier == Some(0) {
                return Err(at("tier", "tiers start at 1 (the most critical)".into()));
            }
            for name in std::iter::once(&entry.service).chain(&entry.aliases) {
                if let Some(&other) = catalog.index.get(name) {
                    let field = if name == &entry.service { "service" } else { "aliases" };
                    return Err(at(
                        field,
                        format!("{name} is already listed (services[{other}], line {})", lines.line_of(other, "service").unwrap_or(0)),
                    ));
                }
                catalog.index.insert(name.clone(), i);
            }
            catalog.services.push(entry);
        }
        let lines = EntryLines::new(text, "critical_operations");
        for (i, operation) in document.critical_operations.into_iter().enumerate() {
            let at = |field: &str, message: String| CatalogError {
                line: lines.line_of(i, field),
                field: Some(format!("critical_operations[{i}].{field}")),
                message,
            };
            operation.check().map_err(|(field, message)| at(field, message))?;
            if let Some(other) = catalog.critical_operations.iter().position(|o| o.name == operation.name) {
                return Err(at("name", format!("{} is already listed (critical_operations[{other}])", operation.name)));
            }
            let mut operation = operation;
            operation.source = FROM_CATALOG.into();
            catalog.critical_operations.push(operation);
        }
        Ok(catalog)
    }

    /// A critical operation by name.
    pub fn critical_operation(&self, name: &str) -> Option<&CriticalOperation> {
        self.critical_operations.iter().find(|o| o.name == name)
    }

    pub fn load(path: &std::path::Path) -> Result<Self, CatalogError> {
        let text = std::fs::read_to_string(path).map_err(|e| CatalogError {
            line: None,
            field: None,
            message: format!("cannot read {}: {e}", path.display()),
        })?;
        Self::parse(&text)
    }

    /// The entry for a service name or one of its aliases.
    pub fn get(&self, name: &str) -> Option<&CatalogEntry> {
        self.index.get(name).map(|&i| &self.services[i])
    }

    /// The service a name stands for: itself, or the service it is an alias of.
    pub fn canonical<'a>(&'a self, name: &'a str) -> &'a str {
        self.get(name).map_or(name, |entry| entry.service.as_str())
    }

    pub fn is_empty(&self) -> bool {
        self.services.is_empty() && self.critical_operations.is_empty()
    }
}

/// Line numbers of the fields of each entry of one top-level list, found by reading the text
/// the way a person does: each `- ` at the list's indentation starts an entry.
struct EntryLines {
    entries: Vec<BTreeMap<String, usize>>,
}

impl EntryLines {
    fn new(text: &str, list: &str) -> Self {
        let mut entries: Vec<BTreeMap<String, usize>> = Vec::new();
        let mut list_indent: Option<usize> = None;
        for (number, raw) in text.lines().enumerate() {
            let trimmed = raw.trim_start();
            if trimmed.is_empty() || trimmed.starts_with('#') {
                continue;
            }
            let indent = raw.len() - trimmed.len();
            if indent == 0 {
                list_indent = None;
                if trimmed.strip_prefix(list).is_some_and(|rest| rest.starts_with(':')) {
                    list_indent = Some(usize::MAX);
                }
                continue;
            }
            let Some(expected) = list_indent else { continue };
            let mut rest = trimmed;
            if let Some(after) = trimmed.strip_prefix("- ")
                && (expected == usize::MAX || indent == expected)
            {
                list_indent = Some(indent);
                entries.push(BTreeMap::new());
                rest = after.trim_start();
            }
            if let (Some(entry), Some((key, _))) = (entries.last_mut(), rest.split_once(':')) {
                entry.entry(key.trim().to_string()).or_insert(number + 1);
            }
        }
        Self { entries }
    }

    fn line_of(&self, entry: usize, field: &str) -> Option<usize> {
        let fields = self.entries.get(entry)?;
        fields.get(field).or_else(|| fields.values().min()).copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "\
# who owns what
services:
  - service: web-gateway
    team: edge
    tier: 1
    customer_facing: true
  - service: legacy-inventory
    team: fulfillment
    aliases: [inventory.legacy.internal]
    notes: not instrumented yet
  - service: stripe
    team: payments
    external: true
";

    #[test]
    fn reads_entries_and_aliases() {
        let catalog = Catalog::parse(GOOD).unwrap();
        assert_eq!(catalog.services.len(), 3);
        assert!(catalog.get("stripe").unwrap().external);
        assert!(catalog.get("web-gateway").unwrap().customer_facing);
        assert_eq!(catalog.get("inventory.legacy.internal").unwrap().team, "fulfillment");
        assert_eq!(catalog.canonical("inventory.legacy.internal"), "legacy-inventory");
        assert_eq!(catalog.canonical("elsewhere"), "elsewhere");
    }

    #[test]
    fn a_wrong_type_names_line_and_field() {
        let text = GOOD.replace("tier: 1", "tier: high");
        let error = Catalog::parse(&text).unwrap_err();
        assert_eq!(error.line, Some(5));
        assert_eq!(error.field.as_deref(), Some("services[0].tier"));
        assert!(error.to_string().starts_with("line 5, services[0].tier: invalid type"), "{error}");
    }

    #[test]
    fn an_unknown_field_is_refused() {
        let text = GOOD.replace("    notes:", "    owner: someone\n    notes:");
        let error = Catalog::parse(&text).unwrap_err();
        assert_eq!(error.line, Some(10));
        assert!(error.message.contains("unknown field `owner`"), "{error}");
    }

    #[test]
    fn critical_operations_are_read_and_checked() {
        let text = format!(
            "{GOOD}critical_operations:\n  - name: Checkout\n    service: web-gateway\n    operation: POST /checkout\n  - name: Search\n    service: web-gateway\n    route: /search\n"
        );
        let catalog = Catalog::parse(&text).unwrap();
        assert_eq!(catalog.critical_operations.len(), 2);
        assert_eq!(catalog.critical_operation("Search").unwrap().route.as_deref(), Some("/search"));
        // Neither an operation nor a route: the entry's line and the field.
        let error = Catalog::parse(&text.replace("    route: /search\n", "")).unwrap_err();
        assert_eq!(error.field.as_deref(), Some("critical_operations[1].operation"));
        assert_eq!(error.line, Some(18));
        let error = Catalog::parse(&text.replace("name: Search", "name: Checkout")).unwrap_err();
        assert!(error.message.contains("already listed"), "{error}");
        assert_eq!(error.line, Some(18));
        assert!(catalog.critical_operations.iter().all(|o| o.source == FROM_CATALOG));
        // A TraceQL filter narrows the entry spans; it must be one SQL can state.
        let filtered = text
            .replace("    route: /search\n", "    traceql: '{ span.http.request.method = \"GET\" && span.http.route =~ \"/search.*\" }'\n");
        let catalog = Catalog::parse(&filtered).unwrap();
        let sql = entry_filter_sql(catalog.critical_operation("Search").unwrap().traceql.as_deref().unwrap()).unwrap();
        assert!(sql.contains("GET"), "{sql}");
        let error = Catalog::parse(&filtered.replace("'{ span.http", "'{ kind = server } >> { span.http")).unwrap_err();
        assert_eq!((error.line, error.field.as_deref()), (Some(20), Some("critical_operations[1].traceql")));
        assert!(error.message.contains("one { … } of conditions"), "{error}");
        let error = Catalog::parse(&filtered.replace("'{ span.http", "'{ span.http =")).unwrap_err();
        assert!(error.message.contains("TraceQL:"), "{error}");
    }

    #[test]
    fn a_duplicate_points_at_both_entries() {
        let text = format!("{GOOD}  - service: web-gateway\n    team: other\n");
        let error = Catalog::parse(&text).unwrap_err();
        assert_eq!(error.line, Some(14));
        assert_eq!(error.field.as_deref(), Some("services[3].service"));
        assert!(error.message.contains("already listed (services[0], line 3)"), "{error}");
    }

    #[test]
    fn a_missing_team_and_a_zero_tier_are_refused() {
        let error = Catalog::parse("services:\n  - service: a\n").unwrap_err();
        assert!(error.message.contains("missing field `team`"), "{error}");
        let error = Catalog::parse("services:\n  - service: a\n    team: t\n    tier: 0\n").unwrap_err();
        assert_eq!((error.line, error.field.as_deref()), (Some(4), Some("services[0].tier")));
        assert!(Catalog::parse("").unwrap().is_empty());
    }
}
