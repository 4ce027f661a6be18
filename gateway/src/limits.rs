//! Per-identity rate limiting (GCRA). The identity is the caller's token subject (an anonymous
//! token's `anon:<uuid>` or the user id), and the client address for requests without a
//! token. An anonymous token is charged to the address that minted it as well, so tokens never
//! multiply an address's rate; and every token that has to be verified (not remembered from an
//! earlier request) is charged to the client's address first, so a flood of bad tokens costs
//! signature checks at that address's rate only. The limiter sits behind the [`RateLimiter`]
//! trait so a regional, Redis-backed limiter can replace the in-process one without touching
//! the HTTP stage. (Query depth and complexity limits live with the schema, in `marquee_schema`.)

use std::net::{IpAddr, SocketAddr};
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

/// The client address a request is limited by: an IPv4 address, or the /64 an IPv6 address
/// belongs to (one IPv6 client usually owns a whole /64 and can pick any address in it).
pub(crate) fn client_address(request: &Request) -> String {
    let Some(ConnectInfo(addr)) = request.extensions().get::<ConnectInfo<SocketAddr>>() else {
        return "unknown".to_owned();
    };
    match addr.ip().to_canonical() {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => {
            let s = v6.segments();
            format!("{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3])
        }
    }
}

/// The bucket of a client address.
pub(crate) fn address_bucket(address: &str) -> String {
    format!("ip:{address}")
}

/// The buckets a request is charged to: the token's subject or the client address, and for an
/// anonymous token also the address it was issued to — so minting many tokens gets a client no
/// more than its address's rate.
fn buckets(caller: &Caller, client: &str) -> (String, Option<String>) {
    match caller {
        Caller::Anonymous => (address_bucket(client), None),
        Caller::Guest { subject, issued_to } => {
            (subject.clone(), Some(address_bucket(issued_to.as_deref().unwrap_or(client))))
        }
        Caller::User { id } => (format!("user:{id}"), None),
    }
}

/// A bucket this request has already been charged to (by the authentication stage, for
/// verifying its token): a request pays once per bucket.
#[derive(Clone, Debug)]
pub(crate) struct Charged(pub(crate) String);

/// Charges one request to `bucket`; the 429 to answer when it is over its rate.
pub(crate) async fn charge(limiter: &dyn RateLimiter, bucket: &str) -> Result<(), Response> {
    limiter.check(bucket).await.map_err(|wait| {
        let seconds = (wait.as_secs() + u64::from(wait.subsec_nanos() > 0)).max(1);
        HttpError::new(
            StatusCode::TOO_MANY_REQUESTS,
            codes::RATE_LIMITED,
            format!("too many requests; retry after {seconds} s"),
        )
        .with_header(header::RETRY_AFTER, HeaderValue::from(seconds))
        .into_response()
    })
}

/// Middleware: 429 with `Retry-After` when the caller is over its rate.
pub async fn rate_limit(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let Some(limiter) = &state.limiter else { return next.run(request).await };
    let client = client_address(&request);
    let (own, issuer) = buckets(request.extensions().get::<Caller>().unwrap_or(&Caller::Anonymous), &client);
    let charged = request.extensions().get::<Charged>().map(|c| c.0.as_str());
    for bucket in std::iter::once(own).chain(issuer) {
        if charged != Some(bucket.as_str())
            && let Err(refused) = charge(limiter.as_ref(), &bucket).await
        {
            return refused;
        }
    }
    next.run(request).await
}
