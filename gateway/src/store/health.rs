//! What the gateway knows of its store's health, for `/readyz` (`crate::http::health`).
//!
//! `/readyz` never waits on the store. One background probe per gateway ([`StoreHealth`])
//! pings it every second, and `/readyz` answers from what the probe last saw, at once. Two
//! reasons. A health checker gives up after its own timeout (HAProxy's `timeout check`, an
//! ALB's 2 s), so a handler that waits on a slow store is counted as failed by every checker
//! at the same moment. And a store that is slow for a moment is slow for every gateway of the
//! region at once: counted as failures, one pause (a JVM collection on a Cassandra node, a
//! compaction) takes the whole region out of the load balancer and geo-DNS. So the store counts
//! as down only once it has not answered for [`UNREADY_AFTER`]; then `/readyz` turns 503 and
//! the region leaves rotation as before, 5 s later.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use marquee_store::Lifecycle;
use tokio::task::JoinHandle;

/// How often the background probe pings the store.
pub const PROBE_INTERVAL: Duration = Duration::from_secs(1);

/// How long one ping may take before it counts as unanswered.
const PING_TIMEOUT: Duration = Duration::from_secs(2);

/// How long the store may go without answering a ping before `/readyz` turns 503.
pub const UNREADY_AFTER: Duration = Duration::from_secs(5);

/// What the background probe last saw of the store.
pub struct StoreHealth {
    store: Arc<dyn Lifecycle>,
    /// When the probe started counting; `last_answer_ms` is measured from it.
    since: Instant,
    /// When the store last answered a ping, in milliseconds after `since`.
    last_answer_ms: AtomicU64,
    /// Why the last unanswered ping failed (cleared by an answer).
    last_error: Mutex<Option<String>>,
}

impl StoreHealth {
    /// Health of a store that has just been opened (so it answered a moment ago).
    pub fn new(store: Arc<dyn Lifecycle>) -> Arc<StoreHealth> {
        Arc::new(StoreHealth {
            store,
            since: Instant::now(),
            last_answer_ms: AtomicU64::new(0),
            last_error: Mutex::new(None),
        })
    }

    /// Starts the background probe. It ends by itself once the last `StoreHealth` handle is
    /// dropped; abort it to stop it sooner (before closing the store).
    pub fn spawn_probe(self: &Arc<Self>) -> JoinHandle<()> {
        let health: Weak<StoreHealth> = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(PROBE_INTERVAL);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticks.tick().await;
                let Some(health) = health.upgrade() else { return };
                let outcome = match tokio::time::timeout(PING_TIMEOUT, health.store.ping()).await {
                    Ok(Ok(())) => Ok(()),
                    Ok(Err(e)) => Err(e.to_string()),
                    Err(_) => Err(format!("no answer within {PING_TIMEOUT:?}")),
                };
                health.record(outcome);
            }
        })
    }

    fn record(&self, outcome: Result<(), String>) {
        let was_down = self.unanswered_for() > UNREADY_AFTER;
        let mut last_error = self.last_error.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        match outcome {
            Ok(()) => {
                let now = u64::try_from(self.since.elapsed().as_millis()).unwrap_or(u64::MAX);
                self.last_answer_ms.store(now, Ordering::Release);
                if was_down {
                    tracing::info!("the store answers again: /readyz is 200");
                }
                *last_error = None;
            }
            Err(error) => {
                if last_error.is_none() {
                    tracing::warn!(%error, "the store did not answer a readiness ping");
                }
                let down = self.unanswered_for() > UNREADY_AFTER;
                if down && !was_down {
                    tracing::error!(%error, unanswered_for = ?UNREADY_AFTER, "the store is not answering: /readyz is 503");
                }
                *last_error = Some(error);
            }
        }
    }

    /// How long since the store last answered.
    fn unanswered_for(&self) -> Duration {
        let last = Duration::from_millis(self.last_answer_ms.load(Ordering::Acquire));
        self.since.elapsed().saturating_sub(last)
    }

    /// `Ok` while the store has answered within [`UNREADY_AFTER`], else why it has not.
    pub fn status(&self) -> Result<(), String> {
        if self.unanswered_for() <= UNREADY_AFTER {
            return Ok(());
        }
        let last_error = self.last_error.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        Err(last_error.clone().unwrap_or_else(|| "no answer yet".to_owned()))
    }
}
