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
//! Pub/sub delivers at most once, so the bus never trusts a quiet channel: until every shard
//! is subscribed, and again from the moment the connection drops (a reconnection, or a check
//! every `WATCH_EVERY`) until it is resubscribed, the bus is not *live*, and the caches it
//! serves must not answer from L1; each time it becomes live again, they drop everything the
//! messages they may have missed could have changed (`Listener::resync`). The staleness of a
//! gateway's L1 is therefore bounded by delivery (milliseconds) or by `WATCH_EVERY` plus the
//! time to notice a dead connection, whichever applies.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use fred::clients::SubscriberClient;
use fred::interfaces::{ClientLike, EventInterface, KeysInterface, PubsubInterface};
use tokio::sync::broadcast::error::RecvError;

use super::{RedisConfigError, Regional, builder};

/// Channels of the bus, spread over the cluster's slots by their hash tags.
pub const SHARDS: u64 = 16;

/// How often the subscriber's connection is checked, besides the client's reconnect events.
const WATCH_EVERY: Duration = Duration::from_millis(200);

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
    live: Arc<AtomicBool>,
    subscriber: SubscriberClient,
    follower: tokio::task::JoinHandle<()>,
}

impl std::fmt::Debug for Bus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bus").field("live", &self.is_live()).finish_non_exhaustive()
    }
}

impl Bus {
    /// Joins the bus of `regional`'s cluster, delivering to `listener`; subscribes in the
    /// background (the bus is not live until it has).
    pub fn join(regional: Arc<Regional>, listener: Arc<dyn Listener>) -> Result<Bus, RedisConfigError> {
        let subscriber = builder(&regional.fred_config)
            .build_subscriber_client()
            .map_err(|e| RedisConfigError(e.to_string()))?;
        let _connection = subscriber.connect();
        let live = Arc::new(AtomicBool::new(false));
        let follower =
            tokio::spawn(follow(subscriber.clone(), listener, live.clone(), regional.metrics.clone()));
        Ok(Bus { regional, live, subscriber, follower })
    }

    /// Whether every message published now will reach this gateway.
    pub fn is_live(&self) -> bool {
        self.live.load(Ordering::Acquire)
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

/// Keeps the subscription up and delivers its messages, for as long as the bus lives.
async fn follow(
    subscriber: SubscriberClient,
    listener: Arc<dyn Listener>,
    live: Arc<AtomicBool>,
    metrics: super::RegionalMetrics,
) {
    let mut messages = subscriber.message_rx();
    let mut reconnects = subscriber.reconnect_rx();
    let mut watch = tokio::time::interval(WATCH_EVERY);
    watch.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut was_live = false;
    loop {
        live.store(false, Ordering::Release);
        metrics.bus_live.set(0);
        if was_live {
            tracing::warn!("invalidation bus lost: this gateway's caches answer from Redis or the store");
            was_live = false;
        }
        watch.tick().await;
        if !subscriber.is_connected() || !subscribe_all(&subscriber).await {
            continue;
        }
        while reconnects.try_recv().is_ok() {}
        listener.resync().await;
        live.store(true, Ordering::Release);
        metrics.bus_live.set(1);
        was_live = true;
        tracing::info!("invalidation bus joined");
        loop {
            tokio::select! {
                message = messages.recv() => match message {
                    Ok(message) => {
                        metrics.invalidations.with_label_values(&["received"]).inc();
                        if let Some(text) = message.value.as_str() {
                            listener.message(&text).await;
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
                }
            }
        }
    }
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
