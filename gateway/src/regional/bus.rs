//! The region's invalidation bus: a write deletes the regional (L2) keys it made stale and tells
//! every gateway of the region to drop its own (L1) copies, in one pipelined round trip.
//!
//! Sharded pub/sub (Redis 7's `SSUBSCRIBE`/`SPUBLISH`), over `SHARDS` channels spread over the
//! cluster's slots: a message goes to the one node owning its channel and from there to that
//! node's subscribers, instead of being copied to every node of the cluster over the cluster
//! bus as plain `PUBLISH` is, so the bus scales with the cluster. Client-side tracking (RESP3)
//! was the other candidate; it would have the server track every key each gateway read, and
//! fred's cluster client would need a tracking connection per node, for the one kind of value
//! that writes change (rating totals): an explicit message is simpler and cheaper.
//!
//! Pub/sub delivers at most once, so the bus never trusts a quiet channel. Every `WATCH_EVERY`
//! each gateway publishes a heartbeat on every shard and listens for its own: the bus is *live*
//! only while every shard has carried this gateway's heartbeat within `SILENT_AFTER`, so a
//! closed connection, a node down, a frozen node or a lost subscription all make it silent
//! within `SILENT_AFTER` plus one tick, whether or not the client noticed. While silent, the
//! caches it serves must not answer from L1; each time it becomes live again, they drop
//! everything the messages they may have missed could have changed (`Listener::resync`). So a
//! gateway's L1 is stale for at most the delivery time (milliseconds) while the bus works, and
//! at most `SILENT_AFTER` + `WATCH_EVERY` (1 s) when it stops working. The heartbeats cost each
//! gateway `SHARDS` publishes per tick (64 a second) and each gateway receives every gateway's.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use fred::clients::SubscriberClient;
use fred::interfaces::{ClientLike, EventInterface, KeysInterface, PubsubInterface};
use tokio::sync::broadcast::error::RecvError;

use super::{RedisConfigError, Regional, builder};

/// Channels of the bus, spread over the cluster's slots by their hash tags.
pub const SHARDS: u64 = 16;

/// How often the subscriber's connection is checked and a heartbeat sent on every shard.
const WATCH_EVERY: Duration = Duration::from_millis(250);

/// A shard that has not carried this gateway's own heartbeat for this long makes the bus
/// silent (not live).
const SILENT_AFTER: Duration = Duration::from_millis(750);

/// The channel of shard `shard`.
fn channel(shard: u64) -> String {
    format!("mq:inv1:{{{}}}", shard % SHARDS)
}

/// What the bus delivers to.
#[async_trait]
pub trait Listener: Send + Sync + 'static {
    /// A message another gateway (or this one) published.
    async fn message(&self, text: &str);
    /// Messages may have been lost: drop whatever they could have made stale.
    async fn resync(&self);
}

/// The gateway's end of the bus.
pub struct Bus {
    regional: Arc<Regional>,
    /// Since when the bus is live (milliseconds since the Unix epoch); 0: not live.
    live: Arc<AtomicU64>,
    subscriber: SubscriberClient,
    follower: tokio::task::JoinHandle<()>,
}

impl std::fmt::Debug for Bus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bus").field("live_since", &self.live_since()).finish_non_exhaustive()
    }
}

impl Bus {
    /// Joins the bus of `regional`'s cluster, delivering to `listener`; subscribes in the
    /// background (the bus is not live until it has).
    pub fn join(regional: Arc<Regional>, listener: Arc<dyn Listener>) -> Result<Bus, RedisConfigError> {
        let subscriber = builder(&regional.fred_config)
            .build_subscriber_client()
            .map_err(|e| RedisConfigError(e.to_string()))?;
        super::start(&subscriber, regional.resolver.clone());
        let live = Arc::new(AtomicU64::new(0));
        let follower = tokio::spawn(follow(regional.clone(), subscriber.clone(), listener, live.clone()));
        Ok(Bus { regional, live, subscriber, follower })
    }

    /// Whether every message published now will reach this gateway.
    pub fn is_live(&self) -> bool {
        self.live_since().is_some()
    }

    /// When the bus last became live again after falling silent, in milliseconds since the
    /// Unix epoch (1 if it never fell silent; `None`: it is not live now). A value cached in
    /// the regional tier before then may have missed an invalidation sent while the cluster
    /// was failing.
    pub fn live_since(&self) -> Option<u64> {
        Some(self.live.load(Ordering::Acquire)).filter(|since| *since != 0)
    }

    /// Deletes `keys` from the regional tier and publishes `messages` (each on the shard of its
    /// number), in one round trip; whether the cluster took all of it.
    pub async fn invalidate(&self, keys: &[String], messages: &[(u64, String)]) -> bool {
        let pipeline = self.regional.client.pipeline();
        for key in keys {
            let _: Result<(), _> = pipeline.del(key.as_str()).await;
        }
        for (shard, text) in messages {
            let _: Result<(), _> = pipeline.spublish(channel(*shard), text.as_str()).await;
        }
        let done = self.regional.run_pipeline("invalidate", pipeline).await;
        let event = if done { "published" } else { "publish_failed" };
        self.regional.metrics.invalidations.with_label_values(&[event]).inc_by(messages.len() as u64);
        done
    }
}

impl Drop for Bus {
    fn drop(&mut self) {
        self.follower.abort();
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let subscriber = self.subscriber.clone();
            runtime.spawn(async move {
                let _ = subscriber.quit().await;
            });
        }
    }
}

/// Keeps the subscription up, delivers its messages and decides whether the bus is live, for
/// as long as the bus lives.
async fn follow(
    regional: Arc<Regional>,
    subscriber: SubscriberClient,
    listener: Arc<dyn Listener>,
    live: Arc<AtomicU64>,
) {
    let metrics = regional.metrics.clone();
    let me = gateway_id();
    let mut messages = subscriber.message_rx();
    let mut reconnects = subscriber.reconnect_rx();
    let mut watch = tokio::time::interval(WATCH_EVERY);
    watch.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut rejoined = false;
    loop {
        set_live(&live, &metrics, false, true);
        watch.tick().await;
        if !subscriber.is_connected() || !subscribe_all(&subscriber).await {
            continue;
        }
        while reconnects.try_recv().is_ok() {}
        // When this gateway last heard its own heartbeat on each shard.
        let mut heard: Vec<Option<Instant>> = vec![None; SHARDS as usize];
        loop {
            tokio::select! {
                message = messages.recv() => match message {
                    Ok(message) => {
                        let Some(text) = message.value.as_str() else { continue };
                        match heartbeat(&text) {
                            Some((from, shard)) => {
                                if from == me {
                                    heard[shard] = Some(Instant::now());
                                }
                            }
                            None => {
                                metrics.invalidations.with_label_values(&["received"]).inc();
                                listener.message(&text).await;
                            }
                        }
                    }
                    Err(RecvError::Lagged(_)) => listener.resync().await,
                    Err(RecvError::Closed) => return,
                },
                _ = reconnects.recv() => break,
                _ = watch.tick() => {
                    if !subscriber.is_connected() {
                        break;
                    }
                    tokio::spawn(beat(regional.clone(), me));
                    let fresh = heard.iter().all(|at| at.is_some_and(|at| at.elapsed() < SILENT_AFTER));
                    let was = live.load(Ordering::Acquire) != 0;
                    if fresh && !was {
                        // Messages may have been missed while the bus was not live.
                        listener.resync().await;
                        set_live(&live, &metrics, true, rejoined);
                        rejoined = true;
                    } else if !fresh && was {
                        set_live(&live, &metrics, false, true);
                    }
                }
            }
        }
    }
}

/// Marks the bus live (since now, or, on a gateway's first join, since always: a gateway that
/// never heard the bus holds nothing that missed a message, and entries in the regional tier
/// are kept right by the writers' own retried invalidations) or silent.
fn set_live(live: &AtomicU64, metrics: &super::RegionalMetrics, now: bool, rejoined: bool) {
    let since = match (now, rejoined) {
        (false, _) => 0,
        (true, false) => 1,
        (true, true) => now_ms(),
    };
    if (live.swap(since, Ordering::AcqRel) != 0) != now {
        metrics.bus_live.set(i64::from(now));
        if now {
            tracing::info!("invalidation bus live");
        } else {
            tracing::warn!(
                "invalidation bus silent: rating totals come from the store until it is live again"
            );
        }
    }
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(1, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .max(1)
}

/// Publishes this gateway's heartbeat on every shard (through the breaker: while the cluster
/// fails, no heartbeat goes out and the bus falls silent).
async fn beat(regional: Arc<Regional>, me: u64) {
    let pipeline = regional.client.pipeline();
    for shard in 0..SHARDS {
        let _: Result<(), _> = pipeline.spublish(channel(shard), format!("hb {me:x} {shard}")).await;
    }
    regional.run_pipeline("heartbeat", pipeline).await;
}

/// The sender and shard of a heartbeat (`hb <gateway> <shard>`); `None` for any other message.
fn heartbeat(text: &str) -> Option<(u64, usize)> {
    let mut parts = text.strip_prefix("hb ")?.split(' ');
    let from = u64::from_str_radix(parts.next()?, 16).ok()?;
    let shard = parts.next()?.parse::<usize>().ok().filter(|s| *s < SHARDS as usize)?;
    Some((from, shard))
}

/// An id for this gateway's heartbeats, unique enough among a region's gateways.
fn gateway_id() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u32(std::process::id());
    hasher.write_u128(
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos()),
    );
    hasher.finish()
}

/// Subscribes to every shard (one command per shard: their channels live on different slots).
async fn subscribe_all(subscriber: &SubscriberClient) -> bool {
    for shard in 0..SHARDS {
        let subscribed =
            tokio::time::timeout(Duration::from_secs(2), subscriber.ssubscribe(channel(shard))).await;
        if !matches!(subscribed, Ok(Ok(()))) {
            return false;
        }
    }
    true
}
