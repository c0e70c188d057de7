//! Facts about OpenTelemetry's semantic conventions that ingest-time rollups and reports share.

/// Attribute names that newer semantic conventions replaced: (old, new).
pub const DEPRECATED_ATTRIBUTES: &[(&str, &str)] = &[
    ("http.method", "http.request.method"),
    ("http.status_code", "http.response.status_code"),
    ("http.url", "url.full"),
    ("http.target", "url.path and url.query"),
    ("http.scheme", "url.scheme"),
    ("http.host", "server.address"),
    ("http.client_ip", "client.address"),
    ("http.user_agent", "user_agent.original"),
    ("http.flavor", "network.protocol.version"),
    ("http.request_content_length", "http.request.body.size"),
    ("http.response_content_length", "http.response.body.size"),
    ("net.peer.name", "server.address"),
    ("net.peer.port", "server.port"),
    ("net.host.name", "server.address"),
    ("net.host.port", "server.port"),
    ("net.sock.peer.addr", "network.peer.address"),
    ("db.statement", "db.query.text"),
    ("db.name", "db.namespace"),
    ("db.operation", "db.operation.name"),
    ("messaging.destination", "messaging.destination.name"),
];
