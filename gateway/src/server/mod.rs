//! The connection stage, first on a request's path: accept connections up to a cap, serve
//! each with HTTP/1.1 under time limits, and close them all gracefully on shutdown.
//!
//! Why it exists: a server that only limits requests can be held by connections that never
//! send one. Here a connection counts against `http.max_connections` from accept to close;
//! at the cap the accept loop waits (new clients queue in the kernel's backlog) rather than
//! accepting sockets it has no file descriptors for. Each connection has an idle limit (no
//! request, or a response the client is not reading) and a header-read limit (a request
//! head that trickles in), both enforced in `connection`. The process's open-file limit is
//! raised at startup, and the cap lowered to fit it.

mod connection;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use crate::config::HttpConfig;
use crate::telemetry::ConnectionMetrics;

/// File descriptors kept for everything that is not a client connection: the store's files,
/// the listener, outbound JWKS fetches, logs.
const RESERVED_FDS: u64 = 256;

/// How the connection stage treats clients.
#[derive(Clone, Copy, Debug)]
pub struct ConnectionLimits {
    /// Most connections open at once.
    pub max_connections: usize,
    /// Time to send a whole request head, from its first byte.
    pub header_read_timeout: Duration,
    /// Time a connection may wait for a request, or stall a response, before it is closed.
    pub idle_timeout: Duration,
    /// Largest request line plus headers (hyper's read buffer).
    pub max_header_bytes: usize,
}

impl ConnectionLimits {
    /// The limits `http` asks for, with the connection cap lowered to what the process's
    /// file-descriptor limit allows (raised to its hard maximum first).
    pub fn from_config(http: &HttpConfig) -> ConnectionLimits {
        ConnectionLimits {
            max_connections: fitting_connections(http.max_connections),
            header_read_timeout: http.header_read_timeout_ms.get(),
            idle_timeout: http.idle_timeout_ms.get(),
            max_header_bytes: http.max_header_bytes.max(8192),
        }
    }
}

/// Raises the soft open-file limit to the hard one and returns how many connections fit.
fn fitting_connections(wanted: usize) -> usize {
    let limit = match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) => limit,
        Err(e) => {
            tracing::warn!(error = %e, "could not read or raise the open-file limit");
            return wanted;
        }
    };
    let fits = usize::try_from(limit.saturating_sub(RESERVED_FDS)).unwrap_or(usize::MAX);
    if wanted > fits {
        tracing::warn!(
            wanted,
            allowed = fits,
            open_file_limit = limit,
            "http.max_connections is above what the open-file limit allows; raise `ulimit -n` (LimitNOFILE) to serve that many"
        );
        fits.max(1)
    } else {
        wanted
    }
}

/// Serves `router` on `listener` until `shutdown` resolves, then stops accepting and waits
/// for open connections to finish their requests (idle ones close at once).
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: ConnectionLimits,
    metrics: ConnectionMetrics,
    shutdown: impl Future<Output = ()>,
) {
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    metrics.max.set(i64::try_from(limits.max_connections).unwrap_or(i64::MAX));
    let graceful = GracefulShutdown::new();
    let builder = connection::builder(&limits);
    tokio::pin!(shutdown);
    loop {
        let permit = match slots.clone().try_acquire_owned() {
            Ok(permit) => permit,
            Err(_) => {
                metrics.limit_reached.inc();
                tokio::select! {
                    biased;
                    () = &mut shutdown => break,
                    permit = slots.clone().acquire_owned() => match permit {
                        Ok(permit) => permit,
                        Err(_) => break,
                    },
                }
            }
        };
        let (stream, remote): (_, SocketAddr) = tokio::select! {
            biased;
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors or a connection reset before accept: wait a
                    // little instead of spinning, and keep serving the open connections.
                    tracing::warn!(error = %e, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        metrics.accepted.inc();
        metrics.open.inc();
        let served = connection::serve(stream, remote, router.clone(), &builder, limits, &graceful);
        let metrics = metrics.clone();
        tokio::spawn(async move {
            let reason = served.await;
            metrics.closed.with_label_values(&[reason]).inc();
            metrics.open.dec();
            drop(permit);
        });
    }
    drop(listener);
    graceful.shutdown().await;
}
