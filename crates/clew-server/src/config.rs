//! The one typed configuration tree: defaults, then a TOML file, then `CLEW_*` environment
//! variables, then command-line flags.

use serde::{Deserialize, Serialize};

use clew_ingest::Limits;
use clew_store::StoreConfig;

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub server: ServerConfig,
    pub store: StoreConfig,
    pub limits: Limits,
    pub adoption: AdoptionConfig,
}

/// The adoption reports (coverage, rollout plan): who owns which service.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct AdoptionConfig {
    /// A YAML service catalog (service, team, tier, customer_facing, aliases, notes); "" for none.
    /// Read again whenever a report is asked for, so edits need no restart.
    pub catalog_file: String,
    /// Resource attributes that name a service's team, in order of preference (after the catalog).
    pub owner_attributes: Vec<String>,
}

impl Default for AdoptionConfig {
    fn default() -> Self {
        Self { catalog_file: String::new(), owner_attributes: vec!["service.namespace".into(), "team".into()] }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    /// OTLP/gRPC (`TraceService/Export`).
    pub otlp_grpc_address: String,
    /// OTLP/HTTP (`POST /v1/traces`).
    pub otlp_http_address: String,
    /// The query API and the web pages; the Jaeger query API (`/api/*`) is served here too.
    pub query_address: String,
    /// Zipkin: span intake (`POST /api/v2/spans`, `/api/v1/spans`) and the v2 query API.
    /// This and the other receivers below are off when set to "".
    pub zipkin_address: String,
    /// Jaeger collector, Thrift over HTTP (`POST /api/traces`).
    pub jaeger_thrift_http_address: String,
    /// Jaeger collector, gRPC (`jaeger.api_v2.CollectorService/PostSpans`).
    pub jaeger_grpc_address: String,
    /// Jaeger agent, UDP, compact Thrift (`emitBatch`).
    pub jaeger_agent_compact_address: String,
    /// Jaeger agent, UDP, binary Thrift (`emitBatch`).
    pub jaeger_agent_binary_address: String,
    /// The Tempo HTTP API (trace by ID, TraceQL search, tags) for Grafana's Tempo data source.
    pub tempo_address: String,
    /// Largest request body accepted, after decompression (HTTP) or as a message (gRPC).
    pub max_request_bytes: usize,
    /// Seconds a client is told to wait when Clew pushes back.
    pub retry_after_seconds: u64,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            otlp_grpc_address: "127.0.0.1:4317".into(),
            otlp_http_address: "127.0.0.1:4318".into(),
            query_address: "127.0.0.1:16686".into(),
            zipkin_address: "127.0.0.1:9411".into(),
            jaeger_thrift_http_address: "127.0.0.1:14268".into(),
            jaeger_grpc_address: "127.0.0.1:14250".into(),
            jaeger_agent_compact_address: "127.0.0.1:6831".into(),
            jaeger_agent_binary_address: "127.0.0.1:6832".into(),
            tempo_address: "127.0.0.1:3200".into(),
            max_request_bytes: 8 << 20,
            retry_after_seconds: 5,
        }
    }
}

impl Config {
    /// Layers a TOML document (partial is fine) and `CLEW_*` variables over the defaults.
    /// Environment keys name the path with `__`: `CLEW_STORE__DATA_DIR=/var/lib/clew`.
    pub fn load(toml_text: Option<&str>, environment: impl IntoIterator<Item = (String, String)>) -> anyhow::Result<Self> {
        let mut tree = toml::Value::try_from(Config::default())?;
        if let Some(text) = toml_text {
            let file: toml::Value = toml::from_str(text).map_err(|e| anyhow::anyhow!("configuration file: {e}"))?;
            merge(&mut tree, file);
        }
        for (name, value) in environment {
            let Some(path) = name.strip_prefix("CLEW_") else {
                continue;
            };
            let keys: Vec<String> = path.split("__").map(|k| k.to_ascii_lowercase()).collect();
            if keys.len() != 2 {
                continue;
            }
            let Some(section) = tree.get_mut(&keys[0]).and_then(toml::Value::as_table_mut) else {
                anyhow::bail!("environment variable {name}: no section {:?}", keys[0]);
            };
            let Some(current) = section.get(&keys[1]) else {
                anyhow::bail!("environment variable {name}: no setting {:?} in [{}]", keys[1], keys[0]);
            };
            let parsed = parse_like(current, &value)
                .ok_or_else(|| anyhow::anyhow!("environment variable {name}: {value:?} is not a valid value"))?;
            section.insert(keys[1].clone(), parsed);
        }
        let config: Config = tree.try_into().map_err(|e| anyhow::anyhow!("configuration: {e}"))?;
        Ok(config)
    }

    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).expect("the configuration serialises")
    }
}

fn merge(base: &mut toml::Value, overlay: toml::Value) {
    match (base, overlay) {
        (toml::Value::Table(base), toml::Value::Table(overlay)) => {
            for (key, value) in overlay {
                match base.get_mut(&key) {
                    Some(existing) => merge(existing, value),
                    None => {
                        base.insert(key, value);
                    }
                }
            }
        }
        (slot, value) => *slot = value,
    }
}

fn parse_like(current: &toml::Value, text: &str) -> Option<toml::Value> {
    Some(match current {
        toml::Value::Integer(_) => toml::Value::Integer(text.parse().ok()?),
        toml::Value::Float(_) => toml::Value::Float(text.parse().ok()?),
        toml::Value::Boolean(_) => toml::Value::Boolean(text.parse().ok()?),
        toml::Value::Array(_) => toml::Value::Array(
            text.split(',').map(str::trim).filter(|s| !s.is_empty()).map(|s| toml::Value::String(s.to_string())).collect(),
        ),
        _ => toml::Value::String(text.to_string()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layers_file_and_environment() {
        let config = Config::load(
            Some("[store]\ntrace_idle_seconds = 2.5\n[server]\nquery_address = \"0.0.0.0:9999\""),
            vec![("CLEW_STORE__DATA_DIR".to_string(), "/tmp/x".to_string()), ("PATH".to_string(), "/bin".to_string())],
        )
        .unwrap();
        assert_eq!(config.store.trace_idle_seconds, 2.5);
        assert_eq!(config.server.query_address, "0.0.0.0:9999");
        assert_eq!(config.store.data_dir.to_str(), Some("/tmp/x"));
        assert_eq!(config.server.otlp_grpc_address, "127.0.0.1:4317");
        let config = Config::load(None, vec![("CLEW_ADOPTION__OWNER_ATTRIBUTES".to_string(), "team, squad".to_string())]).unwrap();
        assert_eq!(config.adoption.owner_attributes, vec!["team".to_string(), "squad".to_string()]);
    }

    #[test]
    fn unknown_keys_are_errors() {
        assert!(Config::load(Some("[store]\nno_such_thing = 1"), vec![]).is_err());
        assert!(Config::load(None, vec![("CLEW_STORE__NOPE".into(), "1".into())]).is_err());
    }

    #[test]
    fn default_round_trips() {
        let text = Config::default().to_toml();
        assert_eq!(Config::load(Some(&text), vec![]).unwrap(), Config::default());
    }
}
