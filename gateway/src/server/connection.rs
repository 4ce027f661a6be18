//! One client connection: HTTP/1.1 through hyper, with the time limits hyper lacks and
//! GraphQL-shaped bodies on the errors hyper writes itself.
//!
//! The limits, as Go's HTTP server draws them:
//! - header read: a request head must be complete `header_read_timeout` after its first
//!   byte (or after accept, for a connection's first request), so a client trickling headers
//!   cannot hold a connection;
//! - idle: between requests a connection may wait `idle_timeout` for the next one's first
//!   byte, and a response the client does not read may stall writing that long.
//!
//! hyper has a single header timer that starts when a connection goes idle, so it cannot be
//! both a short header limit and an idle limit longer than a load balancer's; the limits are
//! kept here instead, in a wrapper around the socket ([`TimedIo`]) that knows, through the
//! service, whether a request is in flight. Inside a request, the request timeout applies.
//!
//! A response that comes before its request's body was read (a 401, 413 or 429 decided from
//! the head) says `Connection: close`: hyper cannot reuse the connection without that body,
//! and closing it unannounced would leave the client to find out on its next request.
//!
//! When hyper refuses a request head (malformed, URI too long, head over the buffer) it writes
//! a bare status line and closes. The wrapper recognises it — an error status with no
//! `content-type`, written while no request is in flight (every response of the router has a
//! content type, and a request counts as in flight until hyper has written its whole
//! response) — and sends the GraphQL-shaped response instead.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Context, Poll, ready};
use std::time::Instant;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::ConnectInfo;
use axum::http::{HeaderValue, header};
use http_body::Body as _;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::Sleep;
use tower::ServiceExt;

use super::ConnectionLimits;
use crate::error::protocol_error_response;

/// hyper's HTTP/1.1 settings for every connection.
pub(super) fn builder(limits: &ConnectionLimits) -> http1::Builder {
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        // Replaced by this module's limits (hyper's runs from when the connection goes idle).
        .header_read_timeout(None)
        .keep_alive(true)
        // The request head must fit: the buffer bounds an incomplete head, the header size a
        // complete one (a single read can overshoot the buffer's bound).
        .max_buf_size(limits.max_header_bytes)
        .max_header_size(limits.max_header_bytes)
        // One contiguous write per response, so hyper's own error heads arrive whole.
        .writev(false);
    builder
}

/// Serves one connection; resolves to why it closed (a `http_connections_closed_total` reason).
pub(super) fn serve(
    stream: TcpStream,
    remote: SocketAddr,
    router: Router,
    builder: &http1::Builder,
    limits: ConnectionLimits,
    graceful: &GracefulShutdown,
) -> impl Future<Output = &'static str> + Send + 'static {
    let state = Arc::new(ConnState::new());
    let io = TokioIo::new(TimedIo::new(stream, state.clone(), limits));
    let service = {
        let state = state.clone();
        hyper::service::service_fn(move |request: hyper::Request<Incoming>| {
            let in_flight = InFlight::start(state.clone());
            let ended = Arc::new(AtomicBool::new(request.body().is_end_stream()));
            let mut request = request.map(|body| Watched { body, ended: ended.clone() });
            request.extensions_mut().insert(ConnectInfo(remote));
            let router = router.clone();
            async move {
                let mut response = router.oneshot(request).await?;
                if !ended.load(Ordering::Acquire) {
                    response.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
                }
                // In flight until hyper is done with the response body: it may still be skipping
                // the request's body until then, and those bytes are not a new request.
                Ok::<_, Infallible>(response.map(|body| Tracked { body, _in_flight: in_flight }))
            }
        })
    };
    let connection = graceful.watch(builder.serve_connection(io, service));
    async move {
        let result = connection.await;
        match (state.closed_by.get(), result) {
            (Some(reason), _) => reason,
            (None, Ok(())) => "done",
            (None, Err(e)) if e.is_parse() => "protocol_error",
            (None, Err(e)) => {
                tracing::debug!(error = %e, %remote, "connection ended with an error");
                "error"
            }
        }
    }
}

/// What the service and the socket wrapper of one connection share.
struct ConnState {
    /// Requests handed to the router.
    started: AtomicU64,
    /// Requests the router has answered.
    finished: AtomicU64,
    /// When the last request was answered (or the connection accepted).
    idle_since: Mutex<Instant>,
    /// Why the wrapper ended the connection, when it did.
    closed_by: OnceLock<&'static str>,
}

impl ConnState {
    fn new() -> ConnState {
        ConnState {
            started: AtomicU64::new(0),
            finished: AtomicU64::new(0),
            idle_since: Mutex::new(Instant::now()),
            closed_by: OnceLock::new(),
        }
    }

    fn idle_since(&self) -> Instant {
        self.idle_since.lock().map_or_else(|_| Instant::now(), |at| *at)
    }
}

/// A request in the router, from the call until hyper drops its response body (or the call is
/// dropped).
struct InFlight(Arc<ConnState>);

impl InFlight {
    fn start(state: Arc<ConnState>) -> InFlight {
        state.started.fetch_add(1, Ordering::AcqRel);
        InFlight(state)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        if let Ok(mut at) = self.0.idle_since.lock() {
            *at = Instant::now();
        }
        self.0.finished.fetch_add(1, Ordering::AcqRel);
    }
}

/// A request body that records when it has been read to the end.
struct Watched {
    body: Incoming,
    ended: Arc<AtomicBool>,
}

impl http_body::Body for Watched {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, hyper::Error>>> {
        let frame = Pin::new(&mut self.body).poll_frame(cx);
        if matches!(frame, Poll::Ready(None)) || self.body.is_end_stream() {
            self.ended.store(true, Ordering::Release);
        }
        frame
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

/// A response body that keeps its request in flight until hyper drops it.
struct Tracked {
    body: Body,
    _in_flight: InFlight,
}

impl http_body::Body for Tracked {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

/// Where a connection is between requests.
enum Phase {
    /// A request is in the router: its own timeout applies.
    Busy,
    /// A request head is being read, since this instant.
    Head(Instant),
    /// Waiting for the next request, since this instant.
    Idle(Instant),
}

/// hyper's own error response being replaced.
enum Rewrite {
    No,
    Sending {
        bytes: Vec<u8>,
        sent: usize,
    },
    /// Sent; hyper is closing the connection and anything more it writes is dropped.
    Sent,
}

/// A deadline and the sleep that wakes the connection at it.
struct Timer {
    sleep: Pin<Box<Sleep>>,
    armed: Option<Instant>,
}

impl Timer {
    fn new() -> Timer {
        Timer { sleep: Box::pin(tokio::time::sleep_until(tokio::time::Instant::now())), armed: None }
    }

    /// Whether `deadline` has passed; if not, the task is woken when it does.
    fn expired(&mut self, cx: &mut Context<'_>, deadline: Instant) -> bool {
        if self.armed != Some(deadline) {
            self.sleep.as_mut().reset(tokio::time::Instant::from_std(deadline));
            self.armed = Some(deadline);
        }
        self.sleep.as_mut().poll(cx).is_ready()
    }
}

/// The socket, with the connection's time limits and the rewriting of hyper's error heads.
struct TimedIo {
    stream: TcpStream,
    state: Arc<ConnState>,
    limits: ConnectionLimits,
    /// Requests started, as last seen: a change means hyper finished reading a head.
    seen: u64,
    /// When the head being read started (accept, for the first request).
    head_since: Option<Instant>,
    read_timer: Timer,
    /// When a write last started waiting for the client to read.
    write_blocked_since: Option<Instant>,
    write_timer: Timer,
    rewrite: Rewrite,
}

impl TimedIo {
    fn new(stream: TcpStream, state: Arc<ConnState>, limits: ConnectionLimits) -> TimedIo {
        TimedIo {
            stream,
            state,
            limits,
            seen: 0,
            head_since: Some(Instant::now()),
            read_timer: Timer::new(),
            write_blocked_since: None,
            write_timer: Timer::new(),
            rewrite: Rewrite::No,
        }
    }

    fn phase(&mut self) -> Phase {
        let started = self.state.started.load(Ordering::Acquire);
        if started != self.seen {
            self.seen = started;
            self.head_since = None;
        }
        if self.state.finished.load(Ordering::Acquire) != started {
            return Phase::Busy;
        }
        match self.head_since {
            Some(since) => Phase::Head(since),
            None => Phase::Idle(self.state.idle_since()),
        }
    }

    fn close_as(&self, reason: &'static str) -> io::Error {
        let _ = self.state.closed_by.set(reason);
        io::Error::new(io::ErrorKind::TimedOut, reason)
    }

    /// Sends the replacement for hyper's error head.
    fn send_rewrite(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while let Rewrite::Sending { bytes, sent } = &mut self.rewrite {
            if *sent == bytes.len() {
                self.rewrite = Rewrite::Sent;
                break;
            }
            let n = ready!(Pin::new(&mut self.stream).poll_write(cx, &bytes[*sent..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            *sent += n;
        }
        Poll::Ready(Ok(()))
    }
}

/// The status of a response head hyper wrote by itself: an error status and no content type
/// (a whole head, `HTTP/1.1 4xx …\r\n…\r\n\r\n`, as hyper writes it in one piece).
fn hyper_error_status(buf: &[u8]) -> Option<u16> {
    let rest = buf.strip_prefix(b"HTTP/1.1 ")?;
    let digits = std::str::from_utf8(rest.get(..3)?).ok()?;
    let status = digits.parse::<u16>().ok().filter(|s| (400..600).contains(s))?;
    let end = buf.windows(4).position(|w| w == b"\r\n\r\n")?;
    let typed = buf[..end]
        .split(|b| *b == b'\n')
        .any(|line| line.len() >= 13 && line[..13].eq_ignore_ascii_case(b"content-type:"));
    (!typed).then_some(status)
}

impl AsyncRead for TimedIo {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        match Pin::new(&mut this.stream).poll_read(cx, buf) {
            Poll::Pending => {
                let (deadline, reason) = match this.phase() {
                    Phase::Busy => return Poll::Pending,
                    Phase::Head(since) => (since + this.limits.header_read_timeout, "header_timeout"),
                    Phase::Idle(since) => (since + this.limits.idle_timeout, "idle_timeout"),
                };
                if this.read_timer.expired(cx, deadline) {
                    tracing::debug!(reason, "closing a connection");
                    Poll::Ready(Err(this.close_as(reason)))
                } else {
                    Poll::Pending
                }
            }
            Poll::Ready(Ok(())) => {
                if buf.filled().len() > before && matches!(this.phase(), Phase::Idle(_)) {
                    this.head_since = Some(Instant::now());
                }
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
        }
    }
}

impl AsyncWrite for TimedIo {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        match this.rewrite {
            Rewrite::Sent => return Poll::Ready(Ok(buf.len())),
            Rewrite::Sending { .. } => {}
            Rewrite::No => {
                // hyper's own refusal: no request in flight, and a head the router never writes.
                if let (Phase::Head(_) | Phase::Idle(_), Some(status)) =
                    (this.phase(), hyper_error_status(buf))
                {
                    let _ = this.state.closed_by.set("protocol_error");
                    let bytes = protocol_error_response(status, this.limits.max_header_bytes);
                    this.rewrite = Rewrite::Sending { bytes, sent: 0 };
                } else {
                    return match Pin::new(&mut this.stream).poll_write(cx, buf) {
                        Poll::Pending => {
                            let since = *this.write_blocked_since.get_or_insert_with(Instant::now);
                            if this.write_timer.expired(cx, since + this.limits.idle_timeout) {
                                Poll::Ready(Err(this.close_as("write_timeout")))
                            } else {
                                Poll::Pending
                            }
                        }
                        ready => {
                            this.write_blocked_since = None;
                            ready
                        }
                    };
                }
            }
        }
        ready!(this.send_rewrite(cx))?;
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.send_rewrite(cx))?;
        ready!(Pin::new(&mut this.stream).poll_flush(cx))?;
        // A response went out. If that left the connection idle, hyper may not read again
        // until the client sends something; arm the idle deadline now so that its expiry wakes
        // the connection, hyper reads, and the read above ends it.
        if let Phase::Idle(since) = this.phase()
            && this.read_timer.expired(cx, since + this.limits.idle_timeout)
        {
            cx.waker().wake_by_ref();
        }
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.send_rewrite(cx))?;
        Pin::new(&mut this.stream).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::hyper_error_status;

    #[test]
    fn recognises_hyper_error_heads_only() {
        let bare = b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-length: 0\r\ndate: x\r\n\r\n";
        assert_eq!(hyper_error_status(bare), Some(431));
        assert_eq!(hyper_error_status(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n"), Some(400));
        let ours = b"HTTP/1.1 401 Unauthorized\r\nContent-Type: application/json\r\ncontent-length: 9\r\n\r\n{\"x\":1}";
        assert_eq!(hyper_error_status(ours), None, "the router's responses have a content type");
        assert_eq!(hyper_error_status(b"HTTP/1.1 200 OK\r\n\r\n"), None);
        assert_eq!(hyper_error_status(b"{\"data\":1}"), None);
        assert_eq!(hyper_error_status(b"HTTP/1.1 431 Request"), None, "a partial head is not judged");
    }
}
