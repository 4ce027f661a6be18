//! The rate-limit stage (after authentication): per-identity rate limiting (GCRA). The identity is the caller's token subject (an anonymous
//! token's `anon:<uuid>` or the user id), and the client address for requests without a
//! token. An anonymous token is charged to the address that minted it as well, so tokens never
//! multiply an address's rate; and every token that has to be verified (not remembered from an
//! earlier request) is charged to the client's address first, so a flood of bad tokens costs
//! signature checks at that address's rate only.
//!
//! The limiter sits behind the [`RateLimiter`] trait so a regional, Redis-backed limiter can
//! replace the in-process one without touching the HTTP stage. A limiter that cannot reach its
//! backend says so ([`Unavailable`]) instead of guessing; [`RateLimit`] then fails open to a
//! fallback limiter in this process and counts it in `rate_limiter_fallbacks_total`, so an
//! outage of the shared limiter neither blocks traffic nor leaves it unlimited. (Query depth
//! and cost limits are another stage, in `marquee_schema`'s `query_limits`.)

use std::num::NonZeroU32;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use axum::extract::{Request, State};

use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota};
use marquee_schema::Caller;
use prometheus::IntCounter;

use crate::error::{HttpError, codes};

/// A limiter's answer for one request.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Admission {
    /// The request may go ahead.
    Allowed,
    /// Over the rate: the next request would be allowed after this long.
    Wait(Duration),
}

/// The limiter could not decide: its backend (a shared store) did not answer.
#[derive(Debug, thiserror::Error)]
#[error("rate limiter unavailable: {0}")]
pub struct Unavailable(pub String);

/// Decides whether an identity may make another request.
#[async_trait]
pub trait RateLimiter: Send + Sync + 'static {
    /// Whether `identity` may make another request now, counting it if so.
    async fn check(&self, identity: &str) -> Result<Admission, Unavailable>;
}

/// The rate-limit stage's state: the limiter, what to do when it is unavailable, and the count
/// of times that happened.
#[derive(Clone)]
pub struct RateLimit {
    /// `None`: requests are not limited (`rate_limit.enabled = false`).
    limiter: Option<Arc<dyn RateLimiter>>,
    /// Asked when `limiter` is unavailable (fail open, but still limited per gateway).
    fallback: Option<Arc<dyn RateLimiter>>,
    /// `rate_limiter_fallbacks_total`.
    fallbacks: IntCounter,
    /// Whether the last check fell back (logged once per change, not once per request).
    falling_back: Arc<AtomicBool>,
}

impl RateLimit {
    /// Limits with `limiter`, falling back to `fallback` when it is unavailable (or letting the
    /// request through if there is none).
    pub fn new(
        limiter: Arc<dyn RateLimiter>,
        fallback: Option<Arc<dyn RateLimiter>>,
        fallbacks: IntCounter,
    ) -> RateLimit {
        RateLimit { limiter: Some(limiter), fallback, fallbacks, falling_back: Arc::default() }
    }

    /// No limits.
    pub fn disabled(fallbacks: IntCounter) -> RateLimit {
        RateLimit { limiter: None, fallback: None, fallbacks, falling_back: Arc::default() }
    }

    /// Whether requests are limited at all.
    pub fn enabled(&self) -> bool {
        self.limiter.is_some()
    }

    /// Charges one request to `bucket`; the 429 to answer when it is over its rate.
    pub(crate) async fn charge(&self, bucket: &str) -> Result<(), Response> {
        let Some(limiter) = &self.limiter else { return Ok(()) };
        let admission = match limiter.check(bucket).await {
            Ok(admission) => {
                if self.falling_back.swap(false, Ordering::Relaxed) {
                    tracing::info!("rate limiter available again");
                }
                admission
            }
            Err(e) => {
                self.fallbacks.inc();
                if !self.falling_back.swap(true, Ordering::Relaxed) {
                    tracing::warn!(error = %e, "rate limiter unavailable; using the fallback until it answers");
                }
                match &self.fallback {
                    Some(fallback) => fallback.check(bucket).await.unwrap_or(Admission::Allowed),
                    None => Admission::Allowed,
                }
            }
        };
        match admission {
            Admission::Allowed => Ok(()),
            Admission::Wait(wait) => Err(too_many(wait)),
        }
    }
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
    async fn check(&self, identity: &str) -> Result<Admission, Unavailable> {
        if self.checks.fetch_add(1, Ordering::Relaxed) % PRUNE_EVERY == PRUNE_EVERY - 1 {
            self.limiter.retain_recent();
            self.limiter.shrink_to_fit();
        }
        Ok(match self.limiter.check_key(&identity.to_owned()) {
            Ok(()) => Admission::Allowed,
            Err(not_until) => Admission::Wait(not_until.wait_time_from(self.clock.now())),
        })
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
        Caller::User { id, .. } => (format!("user:{id}"), None),
    }
}

/// A bucket this request has already been charged to (by the authentication stage, for
/// verifying its token): a request pays once per bucket.
#[derive(Clone, Debug)]
pub(crate) struct Charged(pub(crate) String);

/// The 429 for a caller who may retry after `wait`.
fn too_many(wait: Duration) -> Response {
    let seconds = (wait.as_secs() + u64::from(wait.subsec_nanos() > 0)).max(1);
    HttpError::new(
        StatusCode::TOO_MANY_REQUESTS,
        codes::RATE_LIMITED,
        format!("too many requests; retry after {seconds} s"),
    )
    .with_header(header::RETRY_AFTER, HeaderValue::from(seconds))
    .into_response()
}

/// Middleware: 429 with `Retry-After` when the caller is over its rate.
pub async fn rate_limit(State(limits): State<RateLimit>, request: Request, next: Next) -> Response {
    if !limits.enabled() {
        return next.run(request).await;
    }
    let client = crate::client_addr::of(&request);
    let (own, issuer) = buckets(request.extensions().get::<Caller>().unwrap_or(&Caller::Anonymous), &client);
    let charged = request.extensions().get::<Charged>().map(|c| c.0.as_str());
    for bucket in std::iter::once(own).chain(issuer) {
        if charged != Some(bucket.as_str())
            && let Err(refused) = limits.charge(&bucket).await
        {
            return refused;
        }
    }
    next.run(request).await
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Stands in for a shared limiter whose backend is down: the only way to get one until the
    /// regional Redis limiter exists (the in-process limiter is never unavailable).
    struct Down;

    #[async_trait]
    impl RateLimiter for Down {
        async fn check(&self, _: &str) -> Result<Admission, Unavailable> {
            Err(Unavailable("connection refused".into()))
        }
    }

    fn counter() -> IntCounter {
        IntCounter::new("fallbacks", "fallbacks").expect("counter")
    }

    #[tokio::test]
    async fn an_unavailable_limiter_fails_open_to_the_fallback_and_is_counted() {
        let one = NonZeroU32::MIN;
        let fallbacks = counter();
        let limits = RateLimit::new(
            Arc::new(Down),
            Some(Arc::new(InProcessLimiter::new(one, one))),
            fallbacks.clone(),
        );
        assert!(limits.charge("ip:192.0.2.1").await.is_ok(), "the fallback allows the first request");
        let refused = limits.charge("ip:192.0.2.1").await.expect_err("the fallback still limits");
        assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(fallbacks.get(), 2);

        let open = RateLimit::new(Arc::new(Down), None, counter());
        for _ in 0..3 {
            assert!(open.charge("ip:192.0.2.1").await.is_ok(), "no fallback: fail open");
        }
    }

    #[tokio::test]
    async fn an_available_limiter_decides_alone() {
        let one = NonZeroU32::MIN;
        let fallbacks = counter();
        let limits = RateLimit::new(
            Arc::new(InProcessLimiter::new(one, one)),
            Some(Arc::new(Down)),
            fallbacks.clone(),
        );
        assert!(limits.charge("user:a").await.is_ok());
        assert!(limits.charge("user:a").await.is_err());
        assert_eq!(fallbacks.get(), 0);
    }
}
