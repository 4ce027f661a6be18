//! Per-identity rate limiting (GCRA). The identity is the caller's token subject (an anonymous
//! token's `anon:<uuid>` or the user id), and the client address for requests without a token. The limiter sits behind the [`RateLimiter`] trait so
//! a regional, Redis-backed limiter can replace the in-process one without touching the HTTP
//! stage. (Query depth and complexity limits live with the schema, in `marquee_schema`.)

use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota};
use marquee_schema::Caller;

use crate::error::{HttpError, codes};
use crate::startup::AppState;

/// Decides whether an identity may make another request.
#[async_trait]
pub trait RateLimiter: Send + Sync + 'static {
    /// `Ok` when allowed; otherwise how long until the next request would be.
    async fn check(&self, identity: &str) -> Result<(), Duration>;
}

/// How often (in checks) idle identities are dropped from memory.
const PRUNE_EVERY: u64 = 10_000;

/// A GCRA limiter in this process's memory: each gateway limits on its own.
pub struct InProcessLimiter {
    limiter: DefaultKeyedRateLimiter<String>,
    clock: DefaultClock,
    checks: AtomicU64,
}

impl InProcessLimiter {
    /// Allows `per_second` sustained requests per identity, with bursts of up to `burst`.
    pub fn new(per_second: NonZeroU32, burst: NonZeroU32) -> InProcessLimiter {
        let quota = Quota::per_second(per_second).allow_burst(burst);
        InProcessLimiter {
            limiter: DefaultKeyedRateLimiter::keyed(quota),
            clock: DefaultClock::default(),
            checks: AtomicU64::new(0),
        }
    }
}

#[async_trait]
impl RateLimiter for InProcessLimiter {
    async fn check(&self, identity: &str) -> Result<(), Duration> {
        if self.checks.fetch_add(1, Ordering::Relaxed) % PRUNE_EVERY == PRUNE_EVERY - 1 {
            self.limiter.retain_recent();
            self.limiter.shrink_to_fit();
        }
        self.limiter
            .check_key(&identity.to_owned())
            .map_err(|not_until| not_until.wait_time_from(self.clock.now()))
    }
}

/// The identity a request is limited as: the token subject, else the client address.
fn identity(request: &Request) -> String {
    let client = match request.extensions().get::<ConnectInfo<SocketAddr>>() {
        Some(ConnectInfo(addr)) => addr.ip().to_string(),
        None => "unknown".to_owned(),
    };
    request.extensions().get::<Caller>().unwrap_or(&Caller::Anonymous).rate_limit_key(&client)
}

/// Middleware: 429 with `Retry-After` when the caller is over its rate.
pub async fn rate_limit(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let Some(limiter) = &state.limiter else { return next.run(request).await };
    match limiter.check(&identity(&request)).await {
        Ok(()) => next.run(request).await,
        Err(wait) => {
            let seconds = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
            let seconds = seconds.max(1);
            HttpError::new(
                StatusCode::TOO_MANY_REQUESTS,
                codes::RATE_LIMITED,
                format!("too many requests; retry after {seconds} s"),
            )
            .with_header(header::RETRY_AFTER, HeaderValue::from(seconds))
            .into_response()
        }
    }
}
