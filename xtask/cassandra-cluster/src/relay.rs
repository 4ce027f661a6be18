//! The link between data centers: a TCP relay per node, listening on the node's public
//! address and forwarding to its private one, that every connection from another data center
//! goes through (see `network`).
//!
//! - **Latency**: every chunk read is written out half the configured round trip later, in
//!   order, in each direction, as a WAN link delays packets.
//! - **Cut**: nothing is forwarded either way and new connections are held unanswered, as
//!   when the link between two sites drops every packet. Bytes already in flight stay
//!   queued, as TCP would retransmit them, and arrive when the link heals (unless an end gave
//!   up on the connection first): both sides see a partition, not a reset.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use crate::{ClusterError, fail};

/// The state of the link between data centers.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub struct Link {
    /// Round-trip time added between data centers.
    pub round_trip: Duration,
    /// Whether the data centers are cut apart.
    pub cut: bool,
}

/// Chunks queued per direction before the relay stops reading (TCP's window, roughly).
const QUEUED_CHUNKS: usize = 256;

/// The relays of one cluster, on a runtime of their own.
pub(crate) struct Relay {
    runtime: Option<tokio::runtime::Runtime>,
    link: watch::Sender<Link>,
}

impl Relay {
    /// Listens on each `(public, private)` pair's public address, forwarding to the private.
    pub(crate) fn start(routes: &[(SocketAddr, SocketAddr)]) -> Result<Relay, ClusterError> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("cassandra-relay")
            .enable_all()
            .build()
            .map_err(|e| fail(format!("starting the relay's runtime: {e}")))?;
        let (link, _) = watch::channel(Link::default());
        for &(public, private) in routes {
            // Bound here, so a failure is reported; served on the relay's runtime (callers
            // may be inside a runtime of their own, where `block_on` is not allowed).
            let listener = std::net::TcpListener::bind(public)
                .and_then(|l| l.set_nonblocking(true).map(|()| l))
                .map_err(|e| fail(format!("relay listening on {public}: {e}")))?;
            let link = link.subscribe();
            runtime.spawn(async move {
                let Ok(listener) = TcpListener::from_std(listener) else { return };
                while let Ok((inbound, _)) = listener.accept().await {
                    let _ = inbound.set_nodelay(true);
                    tokio::spawn(forward(inbound, private, link.clone()));
                }
            });
        }
        Ok(Relay { runtime: Some(runtime), link })
    }

    pub(crate) fn set(&self, link: Link) {
        self.link.send_replace(link);
    }

    pub(crate) fn get(&self) -> Link {
        *self.link.borrow()
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

/// Waits while the link is cut.
async fn open(link: &mut watch::Receiver<Link>) -> Option<Link> {
    loop {
        let now = *link.borrow_and_update();
        if !now.cut {
            return Some(now);
        }
        link.changed().await.ok()?;
    }
}

async fn forward(inbound: TcpStream, private: SocketAddr, mut link: watch::Receiver<Link>) {
    if open(&mut link).await.is_none() {
        return;
    }
    let Ok(upstream) = TcpStream::connect(private).await else { return };
    let _ = upstream.set_nodelay(true);
    let (from_client, to_client) = inbound.into_split();
    let (from_node, to_node) = upstream.into_split();
    tokio::spawn(direction(from_client, to_node, link.clone()));
    direction(from_node, to_client, link).await;
}

/// Copies one direction with the link's delay, holding everything while it is cut.
async fn direction(mut from: OwnedReadHalf, mut to: OwnedWriteHalf, link: watch::Receiver<Link>) {
    let (queue, mut queued) = mpsc::channel::<(Instant, Vec<u8>)>(QUEUED_CHUNKS);
    let mut reading = link.clone();
    let reader = async move {
        let mut buf = vec![0u8; 64 * 1024];
        while let Ok(n) = from.read(&mut buf).await
            && n > 0
        {
            let delay = reading.borrow_and_update().round_trip / 2;
            if queue.send((Instant::now() + delay, buf[..n].to_vec())).await.is_err() {
                break;
            }
        }
    };
    let mut writing = link;
    let writer = async move {
        while let Some((due, bytes)) = queued.recv().await {
            tokio::time::sleep_until(due).await;
            if open(&mut writing).await.is_none() || to.write_all(&bytes).await.is_err() {
                return;
            }
        }
        let _ = to.shutdown().await;
    };
    tokio::join!(reader, writer);
}
