//! HTTPS for the API: the same front as plain HTTP ([`crate::server`]), with each TLS
//! handshake run in its connection's own task (bounded by a timeout, and counted against
//! the connection cap), so a slow or silent client never holds up the accept loop.
//! Handshakes that fail are logged at debug and dropped.

use std::sync::Arc;

use tokio::net::TcpListener;

use crate::server::{ServeLimits, serve_with};

/// Serves `router` over TLS within `limits` until `shutdown` completes (graceful, like
/// [`crate::serve`]).
pub async fn serve_tls(
    listener: TcpListener,
    config: Arc<rustls::ServerConfig>,
    router: axum::Router,
    limits: ServeLimits,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    serve_with(listener, router, limits, Some(config), shutdown).await
}
