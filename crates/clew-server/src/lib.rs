//! Clew's network face: the OTLP receivers (gRPC and HTTP), Zipkin (intake and query API),
//! Jaeger intake (collector Thrift/HTTP and gRPC, agent UDP), the Tempo API, and the query
//! port with the native API, the Jaeger query API and the pages. Only this crate
//! knows HTTP, gRPC and the JSON shapes of the APIs.

mod adoption;
mod api;
mod config;
mod intake;
mod jaeger;
mod jaeger_ingest;
mod otlp_grpc;
mod otlp_http;
mod performance;
mod prometheus;
mod receiver;
mod registry;
mod svg;
mod tempo;
mod trace_json;
mod zipkin;

use std::net::SocketAddr;
use std::sync::Arc;

use clew_ingest::jaeger::ThriftProtocol;
use clew_query::QueryEngine;
use clew_store::{EmbeddedStore, Storage};
use tokio::net::{TcpListener, UdpSocket};

pub use api::parse_duration_nanos;
pub use config::{AdoptionConfig, Config, ServerConfig};
pub use receiver::{ExportOutcome, Receiver, ReceiverStats};

/// The addresses actually bound (a port of 0 in the config picks a free one); `None` for a
/// receiver that is switched off.
#[derive(Debug, Clone, Copy)]
pub struct BoundAddresses {
    pub otlp_grpc: SocketAddr,
    pub otlp_http: SocketAddr,
    pub query: SocketAddr,
    pub zipkin: Option<SocketAddr>,
    pub jaeger_thrift_http: Option<SocketAddr>,
    pub jaeger_grpc: Option<SocketAddr>,
    pub jaeger_agent_compact: Option<SocketAddr>,
    pub jaeger_agent_binary: Option<SocketAddr>,
    pub tempo: Option<SocketAddr>,
}

/// A running server.
pub struct Running {
    pub addresses: BoundAddresses,
    pub store: Arc<EmbeddedStore>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Running {
    /// Waits until a server task ends (which only happens on an error).
    pub async fn wait(self) {
        let _ = futures::future::select_all(self.tasks).await;
    }

    /// Assembles and writes everything pending, for an orderly stop.
    pub async fn shutdown(&self) {
        let storage: Arc<dyn Storage> = Arc::new(Arc::clone(&self.store));
        if let Err(error) = storage.flush().await {
            tracing::error!(message = "flush at shutdown failed", %error);
        }
    }
}

/// Opens the store, binds every listener, and starts serving.
pub async fn start(config: Config) -> anyhow::Result<Running> {
    let store = EmbeddedStore::open(config.store.clone())?;
    let maintenance = store.start();
    let storage: Arc<dyn Storage> = Arc::new(Arc::clone(&store));
    let receiver = Arc::new(Receiver::new(Arc::clone(&storage), config.limits.clone(), config.server.clone()));
    let query = QueryEngine::new(Arc::clone(&storage)).await?;

    let server = &config.server;
    let grpc_listener = bind(&server.otlp_grpc_address).await?;
    let http_listener = bind(&server.otlp_http_address).await?;
    let query_listener = bind(&server.query_address).await?;
    let zipkin_listener = bind_optional(&server.zipkin_address).await?;
    let thrift_listener = bind_optional(&server.jaeger_thrift_http_address).await?;
    let jaeger_grpc_listener = bind_optional(&server.jaeger_grpc_address).await?;
    let compact_socket = bind_udp(&server.jaeger_agent_compact_address).await?;
    let binary_socket = bind_udp(&server.jaeger_agent_binary_address).await?;
    let tempo_listener = bind_optional(&server.tempo_address).await?;
    let addresses = BoundAddresses {
        otlp_grpc: grpc_listener.local_addr()?,
        otlp_http: http_listener.local_addr()?,
        query: query_listener.local_addr()?,
        zipkin: zipkin_listener.as_ref().map(TcpListener::local_addr).transpose()?,
        jaeger_thrift_http: thrift_listener.as_ref().map(TcpListener::local_addr).transpose()?,
        jaeger_grpc: jaeger_grpc_listener.as_ref().map(TcpListener::local_addr).transpose()?,
        jaeger_agent_compact: compact_socket.as_ref().map(UdpSocket::local_addr).transpose()?,
        jaeger_agent_binary: binary_socket.as_ref().map(UdpSocket::local_addr).transpose()?,
        tempo: tempo_listener.as_ref().map(TcpListener::local_addr).transpose()?,
    };

    let mut tasks = vec![maintenance];
    tasks.push(tokio::spawn(otlp_grpc::serve(grpc_listener, Arc::clone(&receiver), config.server.clone())));
    tasks.push(serve_http("OTLP/HTTP", http_listener, otlp_http::router(Arc::clone(&receiver))));
    if let Some(listener) = zipkin_listener {
        let app = zipkin::router(zipkin::ZipkinState { receiver: Arc::clone(&receiver), query: query.clone() });
        tasks.push(serve_http("Zipkin", listener, app));
    }
    if let Some(listener) = thrift_listener {
        tasks.push(serve_http("Jaeger Thrift/HTTP", listener, jaeger_ingest::thrift_http_router(Arc::clone(&receiver))));
    }
    if let Some(listener) = jaeger_grpc_listener {
        tasks.push(serve_http("Jaeger gRPC", listener, jaeger_ingest::grpc_router(Arc::clone(&receiver))));
    }
    for (socket, protocol) in [(compact_socket, ThriftProtocol::Compact), (binary_socket, ThriftProtocol::Binary)] {
        if let Some(socket) = socket {
            tasks.push(tokio::spawn(jaeger_ingest::serve_agent(socket, Arc::clone(&receiver), protocol)));
        }
    }
    if let Some(listener) = tempo_listener {
        tasks.push(serve_http("Tempo", listener, tempo::router(query.clone())));
    }
    if !config.adoption.catalog_file.is_empty() {
        // A broken catalog is reported at start, with its line and field.
        clew_analysis::Catalog::load(std::path::Path::new(&config.adoption.catalog_file))
            .map_err(|e| anyhow::anyhow!("catalog {}: {e}", config.adoption.catalog_file))?;
    }
    let adoption = Arc::new(config.adoption.clone());
    let api_app = api::router(api::ApiState {
        query,
        receiver,
        store: Arc::clone(&store),
        adoption,
        operations: Arc::new(registry::Registry::new(&config.store.data_dir)),
    });
    tasks.push(serve_http("query", query_listener, api_app));
    tracing::info!(message = "clew is serving", addresses = ?addresses);
    Ok(Running { addresses, store, tasks })
}

fn serve_http(name: &'static str, listener: TcpListener, app: axum::Router) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        if let Err(error) = axum::serve(listener, app).await {
            tracing::error!(message = "server stopped", server = name, %error);
        }
    })
}

async fn bind(address: &str) -> anyhow::Result<TcpListener> {
    TcpListener::bind(address).await.map_err(|e| bind_error(address, e))
}

/// An empty address switches the receiver off.
async fn bind_optional(address: &str) -> anyhow::Result<Option<TcpListener>> {
    if address.is_empty() { Ok(None) } else { bind(address).await.map(Some) }
}

async fn bind_udp(address: &str) -> anyhow::Result<Option<UdpSocket>> {
    if address.is_empty() {
        return Ok(None);
    }
    UdpSocket::bind(address).await.map(Some).map_err(|e| bind_error(address, e))
}

fn bind_error(address: &str, error: std::io::Error) -> anyhow::Error {
    anyhow::anyhow!("could not listen on {address}: {error}")
}
