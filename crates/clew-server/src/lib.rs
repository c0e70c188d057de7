//! Clew's network face: the OTLP receivers (gRPC and HTTP), Zipkin (intake and query API),
//! and the query port with the native API, the Jaeger query API and the pages. Only this crate
//! knows HTTP, gRPC and the JSON shapes of the APIs.

mod api;
mod config;
mod jaeger;
mod otlp_grpc;
mod otlp_http;
mod receiver;
mod zipkin;

use std::net::SocketAddr;
use std::sync::Arc;

use clew_query::QueryEngine;
use clew_store::{EmbeddedStore, Storage};
use tokio::net::TcpListener;

pub use config::{Config, ServerConfig};
pub use receiver::{ExportOutcome, Receiver, ReceiverStats};

/// The addresses actually bound (a port of 0 in the config picks a free one).
#[derive(Debug, Clone, Copy)]
pub struct BoundAddresses {
    pub otlp_grpc: SocketAddr,
    pub otlp_http: SocketAddr,
    pub query: SocketAddr,
    pub zipkin: SocketAddr,
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

    let grpc_listener =
        TcpListener::bind(&config.server.otlp_grpc_address).await.map_err(|e| bind_error(&config.server.otlp_grpc_address, e))?;
    let http_listener =
        TcpListener::bind(&config.server.otlp_http_address).await.map_err(|e| bind_error(&config.server.otlp_http_address, e))?;
    let query_listener = TcpListener::bind(&config.server.query_address).await.map_err(|e| bind_error(&config.server.query_address, e))?;
    let zipkin_listener =
        TcpListener::bind(&config.server.zipkin_address).await.map_err(|e| bind_error(&config.server.zipkin_address, e))?;
    let addresses = BoundAddresses {
        otlp_grpc: grpc_listener.local_addr()?,
        otlp_http: http_listener.local_addr()?,
        query: query_listener.local_addr()?,
        zipkin: zipkin_listener.local_addr()?,
    };

    let mut tasks = vec![maintenance];
    tasks.push(tokio::spawn(otlp_grpc::serve(grpc_listener, Arc::clone(&receiver), config.server.clone())));
    let http_app = otlp_http::router(Arc::clone(&receiver));
    tasks.push(tokio::spawn(async move {
        if let Err(error) = axum::serve(http_listener, http_app).await {
            tracing::error!(message = "OTLP/HTTP server stopped", %error);
        }
    }));
    let zipkin_app = zipkin::router(zipkin::ZipkinState { receiver: Arc::clone(&receiver), query: query.clone() });
    tasks.push(tokio::spawn(async move {
        if let Err(error) = axum::serve(zipkin_listener, zipkin_app).await {
            tracing::error!(message = "Zipkin server stopped", %error);
        }
    }));
    let api_app = api::router(api::ApiState { query, receiver, store: Arc::clone(&store) });
    tasks.push(tokio::spawn(async move {
        if let Err(error) = axum::serve(query_listener, api_app).await {
            tracing::error!(message = "query server stopped", %error);
        }
    }));
    tracing::info!(
        message = "clew is serving",
        otlp_grpc = %addresses.otlp_grpc,
        otlp_http = %addresses.otlp_http,
        query = %addresses.query,
        zipkin = %addresses.zipkin
    );
    Ok(Running { addresses, store, tasks })
}

fn bind_error(address: &str, error: std::io::Error) -> anyhow::Error {
    anyhow::anyhow!("could not listen on {address}: {error}")
}
