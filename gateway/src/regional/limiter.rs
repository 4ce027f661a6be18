//! Region-wide rate limits: GCRA in the region's Redis, so an identity's rate holds across all
//! the region's gateways rather than once per gateway.
//!
//! One key per identity holds its theoretical arrival time (TAT), in microseconds of the Redis
//! node's clock, and one Lua script reads and updates it atomically: the node's clock is the
//! only clock involved, so gateways' clocks need not agree. The key expires when the identity's
//! bucket would be full again, so idle identities cost nothing. The script is sent by hash
//! (`EVALSHA`) and loaded on a node that does not know it yet.
//!
//! When the cluster does not answer in time (or the breaker is open), the check is
//! [`Unavailable`] and the rate-limit stage falls back to the in-process limiter.

use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use fred::types::scripts::Script;

use super::Regional;
use crate::rate_limit::{Admission, RateLimiter, Unavailable};

/// GCRA: `ARGV[1]` is the emission interval, `ARGV[2]` the burst tolerance (interval × burst),
/// both in microseconds. Answers 0 (allowed, and counted) or the microseconds to wait.
const GCRA: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local tolerance = tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
if tat < now then tat = now end
local next_tat = tat + interval
local over = next_tat - now - tolerance
if over > 0 then return over end
redis.call('SET', KEYS[1], string.format('%d', next_tat), 'PX', math.ceil((next_tat - now) / 1000) + 1)
return 0
";

/// The region-wide limiter.
pub struct RegionalLimiter {
    regional: Arc<Regional>,
    script: Script,
    interval_us: u64,
    tolerance_us: u64,
}

impl RegionalLimiter {
    /// Allows `per_second` sustained requests per identity, with bursts of up to `burst`,
    /// across every gateway using `regional`'s cluster.
    pub fn new(regional: Arc<Regional>, per_second: NonZeroU32, burst: NonZeroU32) -> RegionalLimiter {
        let interval_us = (1_000_000 / u64::from(per_second.get())).max(1);
        RegionalLimiter {
            regional,
            script: Script::from_lua(GCRA),
            interval_us,
            tolerance_us: interval_us * u64::from(burst.get()),
        }
    }
}

/// The key of an identity's TAT.
fn key(identity: &str) -> String {
    format!("mq:rl1:{identity}")
}

#[async_trait]
impl RateLimiter for RegionalLimiter {
    async fn check(&self, identity: &str) -> Result<Admission, Unavailable> {
        let args = vec![self.interval_us.to_string(), self.tolerance_us.to_string()];
        let client = &self.regional.client;
        let answer = self
            .regional
            .call("rate limit", self.script.evalsha_with_reload::<i64, _, _>(client, key(identity), args))
            .await
            .map_err(|e| Unavailable(e.to_string()))?;
        Ok(match u64::try_from(answer) {
            Ok(0) | Err(_) => Admission::Allowed,
            Ok(wait_us) => Admission::Wait(Duration::from_micros(wait_us)),
        })
    }
}
