//! Changes: what a successful write changed, and how every cached copy it made stale is
//! dropped, in this gateway, in every gateway of its region, and in the other regions.
//!
//! The write path (`store::cached`) tells [`Changes::changed`] what it changed once the
//! backend has acknowledged it, before the mutation returns, so the gateway that took a write
//! reads it back at once. Subscribers (the response cache, the CDN edge purger) are told of
//! every change this gateway learns of, and of the one it applies for its region, as the
//! surrogate keys responses name (`marquee_schema::Shown`).
//!
//! Two kinds of change: a rating (the movie's totals, cached in a [`Tiered`] cache of their
//! own) and a catalog change (an editor's correction or a delta: movies and people, dropped
//! from the entity cache, and the list pages they moved, which only HTTP caches hold). Both
//! travel the same way; what follows says "totals" for short, and holds for entities too.
//!
//! With `[redis]`, rating totals have a regional tier, and a write reaches the region's
//! other gateways through the invalidation bus (`crate::regional::bus`): it deletes the
//! regional entries and every gateway drops its own copies, within the bus's delivery time.
//! A read racing the write (it read the old totals before the write and stores them after the
//! deletion) would put the old value back; so every invalidation is sent again
//! `REPEAT_AFTER` later, and retried while the cluster fails, for as long as an entry it could
//! have missed may live. While the bus is not live (the cluster unreachable, frozen, or a
//! subscription lost), this gateway uses neither tier for totals: messages could be lost, so
//! totals come from the store, and the bound holds through an outage too. Once it is live
//! again it ignores regional entries read from the store before that moment (each entry
//! carries when it was read), since an invalidation sent during the outage may have missed
//! them. A writer that cannot reach Redis at all keeps retrying; until it succeeds (or the TTL
//! passes) gateways that never lost the bus may show the old totals.
//!
//! Other regions' writes arrive through the store: every rating write lists its movie in the
//! backend's change log (`rating_changes` on ScyllaDB, replicated to every data center with
//! the rating), and each gateway reads the last `FOLLOW_SECONDS` of it every `FOLLOW_EVERY`.
//! A change it has not seen yet is claimed in the region's Redis (`SET NX`), so one gateway of
//! the region applies it (a claim that gets no answer is asked again on the next read, never
//! taken for another gateway's), exactly as if the write had been taken here: regional entries
//! deleted, every gateway's copies dropped through the bus, sent again `REPEAT_AFTER` later
//! (for totals replicated after the log entry). No write waits on another region. A change
//! that arrives later than `FOLLOW_SECONDS` (hints replayed after a partition, a batchlog
//! replay, a repair) is found by the region's rating reconciler, which re-derives the totals
//! it makes wrong and hands their movies to its gateway's follower (`rederived_totals`), which
//! applies them region-wide like any other change (ARCHITECTURE.md).
//!
//! Catalog changes travel the same way: every apply on ScyllaDB is listed in the catalog's
//! log (`catalog_log`, under the second it finished in, after all its rows), read beside the
//! ratings' log, claimed by its stamp, and applied region-wide as the changes it made
//! (entities dropped, list pages named for the response caches and edges). Each log is read on
//! its own: one that fails to answer does not hold the other back. The gateway that took a
//! change applies it at once, and its region applies it again from the log (one more purge of
//! the same keys), as for ratings. Catalog applies have no reconciler to find what was listed
//! late (a writer's clock behind, a row replicated late, an apply's entry written again by the
//! next writer after its own failed): each tick also sweeps `SWEEP_PER_TICK` older seconds of
//! the catalog's log, after the window, from a cursor that goes round the last
//! `SWEEP_SECONDS` in about 10 s, and an entry no gateway of the region has claimed is
//! applied then.
//!
//! A tick that reads fewer seconds than have passed (one that took longer than the window, a
//! log that did not answer) leaves the first second it did not read of each log for the next
//! tick, which reads that log from there (back at most `CATCH_UP_SECONDS`, else it warns), so
//! a slow store or a paused gateway skips no second, and one log failing does not make the
//! other read more. The sweep waits while the catalog's log catches up.
//!
//! What it costs each gateway: 2 logs × `FOLLOW_SECONDS + 1` single-partition reads per tick
//! (32 a second) and `SWEEP_PER_TICK` more (12 a second), mostly of empty partitions.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use marquee_schema::SurrogateKey;
use marquee_store::{Applied, CatalogWrites, MovieId, PersonId, RatingTotals, UserData};
use tracing::Instrument;

use crate::cache::{Tiered, Tiers};
use crate::regional::bus::{Bus, Listener, now_ms};
use crate::regional::{Claim, RedisConfigError, Regional};
use crate::store::entities::EntityTiers;
use crate::telemetry::FollowerMetrics;

/// Bumped when the shape of a claim key changes.
const VERSION: &str = "s1";

/// When an invalidation is sent again (see the module docs).
const REPEAT_AFTER: Duration = Duration::from_millis(500);

/// How often each gateway reads the change log.
const FOLLOW_EVERY: Duration = Duration::from_millis(250);

/// How far back, in seconds of the writers' clocks, each read of the change log goes: a change
/// that reaches this region's replicas later than that (or from a clock further behind) is
/// left to the totals' TTL (ratings: the reconciler finds it) or to the catalog sweep.
const FOLLOW_SECONDS: u64 = 3;

/// How far back a tick reads seconds an earlier tick did not read (a tick that took longer
/// than the window, a log that failed to answer): older ones are left to the ratings'
/// reconciler and the catalog's sweep, and beyond those to the caches' TTL.
const CATCH_UP_SECONDS: u64 = 60;

/// How many older seconds of the catalog's log each tick sweeps, for applies listed late: a
/// writer's clock behind this region's, an entry replicated late, an apply's log row written
/// again by the next writer after its own failed. At `FOLLOW_EVERY` the sweep goes round
/// `SWEEP_SECONDS` in about 10 s.
const SWEEP_PER_TICK: u64 = 3;

/// How far back the sweep of the catalog's log reads. Catalog applies are few (one writer at
/// a time), so it reads mostly empty partitions.
const SWEEP_SECONDS: u64 = 120;

/// How long a gateway's claim to apply a change lasts: longer than the change stays within
/// `FOLLOW_SECONDS` (and a catch-up's `CATCH_UP_SECONDS`), so no second gateway of the region
/// claims it.
const CLAIM_FOR: Duration = Duration::from_secs(90);

/// How long a claim to apply a catalog entry lasts: longer than a sweep reads its second
/// again, so a gateway that starts (and has seen nothing) does not apply it a second time.
const CATALOG_CLAIM_FOR: Duration = Duration::from_secs(SWEEP_SECONDS + 30);

/// What a successful write changed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    /// A rating was set or removed: the movie's totals changed.
    RatingTotals(MovieId),
    /// The catalog changed what the key names: a movie (its record or credits), a person
    /// (their record or filmography), or a list page's membership or order.
    Catalog(SurrogateKey),
}

impl Change {
    /// The changes an apply of catalog changes made.
    pub fn of_catalog(applied: &Applied) -> Vec<Change> {
        let movies = applied.movies.iter().chain(&applied.removed_movies).map(|&m| SurrogateKey::Movie(m));
        let mut people: Vec<PersonId> = applied
            .people
            .iter()
            .chain(&applied.removed_people)
            .chain(&applied.filmographies)
            .copied()
            .collect();
        people.sort_unstable();
        people.dedup();
        let lists = &applied.lists;
        movies
            .chain(people.into_iter().map(SurrogateKey::Person))
            .chain(lists.search_prefixes.iter().map(|p| SurrogateKey::Search(p.clone())))
            .chain(lists.browse_genres.iter().map(|&g| SurrogateKey::Browse(g)))
            .chain(lists.genre_counts.then_some(SurrogateKey::Genres))
            .map(Change::Catalog)
            .collect()
    }

    /// The surrogate key of what changed.
    fn key(&self) -> SurrogateKey {
        match self {
            Change::RatingTotals(movie) => SurrogateKey::Movie(*movie),
            Change::Catalog(key) => key.clone(),
        }
    }

    /// The bus message saying so (`totals <movie number>`, `catalog <key>`), with the number
    /// of the shard it is published on.
    fn message(&self) -> (u64, String) {
        match self {
            Change::RatingTotals(movie) => (movie.0, format!("totals {}", movie.0)),
            Change::Catalog(key) => {
                let shard = match key {
                    SurrogateKey::Movie(id) => id.0,
                    SurrogateKey::Person(id) => id.0,
                    other => other.to_string().bytes().map(u64::from).sum(),
                };
                (shard, format!("catalog {key}"))
            }
        }
    }

    fn parse(text: &str) -> Option<Change> {
        let (kind, rest) = text.split_once(' ')?;
        match kind {
            "totals" => Some(Change::RatingTotals(MovieId(rest.parse().ok()?))),
            "catalog" => SurrogateKey::parse(rest).map(Change::Catalog),
            _ => None,
        }
    }
}

/// The entities among `changes`: movies and people whose cached records they made stale.
fn changed_entities(changes: &[Change]) -> (Vec<MovieId>, Vec<PersonId>) {
    let (mut movies, mut people) = (Vec::new(), Vec::new());
    for change in changes {
        match change {
            Change::Catalog(SurrogateKey::Movie(id)) => movies.push(*id),
            Change::Catalog(SurrogateKey::Person(id)) => people.push(*id),
            _ => {}
        }
    }
    (movies, people)
}

/// The movies whose totals `changes` made stale.
fn totals(changes: &[Change]) -> Vec<MovieId> {
    changes
        .iter()
        .filter_map(|change| match change {
            Change::RatingTotals(movie) => Some(*movie),
            Change::Catalog(_) => None,
        })
        .collect()
}

/// What else holds what writes change, subscribed to changes: HTTP caches of whole responses
/// (this gateway's response cache, the region's CDN edge).
pub trait Subscriber: Send + Sync + 'static {
    /// What `keys` name changed, and this gateway learnt of it (its own write, a message on
    /// the region's bus, or a change it applied from the log).
    fn seen(&self, keys: &[SurrogateKey]) {
        let _ = keys;
    }

    /// What `keys` name changed and this gateway applies it for the whole region (its own
    /// write, or another region's it claimed from the log): once per change per region.
    fn applied(&self, keys: &[SurrogateKey]) {
        let _ = keys;
    }

    /// Messages about changes may have been lost: anything may be stale.
    fn lost(&self) {}
}

/// The region's side of the rating-totals cache: its regional tier and the bus.
struct RegionTier {
    regional: Arc<Regional>,
    bus: Bus,
}

/// The entry point of changes: the write path (and the log follower) tells it what changed,
/// and it drops the cached copies, in every tier and every gateway of the region.
pub struct Changes {
    rating_totals: Tiered<RatingTotals, MovieId>,
    entities: Option<EntityTiers>,
    subscribers: Vec<Arc<dyn Subscriber>>,
    region_tier: Option<Arc<RegionTier>>,
    /// How long a copy it could have missed may live (the totals' TTL, jitter included).
    horizon: Duration,
}

impl Changes {
    /// Drops whatever `changes` made stale.
    pub async fn changed(&self, changes: &[Change]) {
        if changes.is_empty() {
            return;
        }
        let totals = totals(changes);
        let (movies, people) = changed_entities(changes);
        if let Some(region_tier) = &self.region_tier {
            let mut shared = self.rating_totals.shared_keys(&totals);
            if let Some(entities) = &self.entities {
                shared.extend(entities.shared_keys(&movies, &people));
            }
            let messages: Vec<(u64, String)> = changes.iter().map(|c| c.message()).collect();
            // The regional entries first, so this gateway cannot refill its own from them.
            region_tier.bus.invalidate(&shared, &messages).await;
            let region_tier = region_tier.clone();
            let horizon = self.horizon;
            tokio::spawn(async move {
                let started = Instant::now();
                let mut wait = REPEAT_AFTER;
                loop {
                    tokio::time::sleep(wait).await;
                    if region_tier.bus.invalidate(&shared, &messages).await || started.elapsed() > horizon {
                        break;
                    }
                    wait = (wait * 2).min(Duration::from_secs(2));
                }
            });
        }
        self.rating_totals.invalidate(&totals).await;
        if let Some(entities) = &self.entities {
            entities.invalidate(&movies, &people).await;
        }
        let keys: Vec<SurrogateKey> = changes.iter().map(Change::key).collect();
        for subscriber in &self.subscribers {
            subscriber.seen(&keys);
            subscriber.applied(&keys);
        }
    }
}

/// One entry of the backend's change logs: a movie's totals, or a catalog apply (by stamp).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Entry {
    Totals(MovieId),
    Catalog(i64),
}

impl Entry {
    /// The region's claim on applying this entry of `second`, and how long it lasts.
    fn claim(self, second: u64) -> (String, Duration) {
        match self {
            // As gateways before catalog logs name it, so a rolling region claims alike.
            Entry::Totals(movie) => {
                (format!("mq:{VERSION}:followed:{second}:{}", movie.0), self.claimed_for())
            }
            Entry::Catalog(stamp) => {
                (format!("mq:{VERSION}:followed:{second}:catalog:{stamp}"), self.claimed_for())
            }
        }
    }

    /// How long a claim on this entry lasts.
    fn claimed_for(self) -> Duration {
        match self {
            Entry::Totals(_) => CLAIM_FOR,
            Entry::Catalog(_) => CATALOG_CLAIM_FOR,
        }
    }
}

/// The logs a gateway follows: rating totals, and catalog applies.
struct Logs {
    ratings: Option<Arc<dyn UserData>>,
    catalog: Option<Arc<dyn CatalogWrites>>,
}

impl Logs {
    /// The entries of `second` (with what each changed) in the logs `which` names, and which
    /// of those logs did not answer; `None` once neither backend has a log. A log that fails
    /// to answer is read again next tick; the other's entries are kept.
    async fn read(&mut self, second: u64, which: Which) -> Option<(Vec<(Entry, Vec<Change>)>, Which)> {
        let mut entries = Vec::new();
        let mut failed = Which { ratings: false, catalog: false };
        if let (Some(ratings), true) = (&self.ratings, which.ratings) {
            match ratings.rating_changes(second).await {
                Ok(Some(movies)) => entries
                    .extend(movies.into_iter().map(|m| (Entry::Totals(m), vec![Change::RatingTotals(m)]))),
                Ok(None) => self.ratings = None,
                Err(error) => {
                    failed.ratings = true;
                    tracing::debug!(%error, "reading the ratings' change log failed; reading it again next tick")
                }
            }
        }
        if let (Some(catalog), true) = (&self.catalog, which.catalog) {
            match catalog.catalog_log(second).await {
                Ok(Some(applies)) => entries.extend(
                    applies.into_iter().map(|l| (Entry::Catalog(l.stamp), Change::of_catalog(&l.applied))),
                ),
                Ok(None) => self.catalog = None,
                Err(error) => {
                    failed.catalog = true;
                    tracing::debug!(%error, "reading the catalog's change log failed; reading it again next tick")
                }
            }
        }
        (self.ratings.is_some() || self.catalog.is_some()).then_some((entries, failed))
    }
}

/// Which logs a read of a second covers (or, from [`Logs::read`], which failed).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Which {
    ratings: bool,
    catalog: bool,
}

/// The oldest second each log has not been read for yet (see [`Tick::plan`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Unread {
    ratings: u64,
    catalog: u64,
}

/// What one tick reads: the window, oldest first, and the catalog's seconds it sweeps.
#[derive(Debug, PartialEq, Eq)]
struct Tick {
    window: Vec<(u64, Which)>,
    sweep: std::ops::Range<u64>,
}

impl Tick {
    /// The seconds a tick at `now` reads: each log from the last `FOLLOW_SECONDS`, or from
    /// its first unread second within `CATCH_UP_SECONDS`, up to `now`; then, once the
    /// catalog's log is caught up, `SWEEP_PER_TICK` older seconds of it from `cursor`, which
    /// goes round the last `SWEEP_SECONDS` the window no longer reads.
    fn plan(now: u64, unread: Unread, cursor: &mut u64) -> Tick {
        let from = |unread: u64| {
            now.saturating_sub(FOLLOW_SECONDS).min(unread.max(now.saturating_sub(CATCH_UP_SECONDS)))
        };
        let (ratings, catalog) = (from(unread.ratings), from(unread.catalog));
        let window = (ratings.min(catalog)..=now)
            .map(|second| (second, Which { ratings: second >= ratings, catalog: second >= catalog }))
            .collect();
        let oldest = now.saturating_sub(SWEEP_SECONDS);
        let caught_up = catalog >= now.saturating_sub(FOLLOW_SECONDS);
        let sweep = if caught_up && oldest < catalog {
            if *cursor < oldest || *cursor >= catalog {
                *cursor = oldest;
            }
            let end = (*cursor + SWEEP_PER_TICK).min(catalog);
            let sweep = *cursor..end;
            *cursor = end;
            sweep
        } else {
            0..0
        };
        Tick { window, sweep }
    }
}

/// Reads the backend's change logs every `FOLLOW_EVERY` and applies, region-wide, each change
/// this gateway is the first of its region to claim (see the module docs). Returns at once on
/// a backend without logs.
async fn follow_log(
    mut logs: Logs,
    changes: Arc<Changes>,
    regional: Arc<Regional>,
    metrics: FollowerMetrics,
) {
    // The entries seen, by second, for the seconds still read.
    let mut seen: BTreeMap<u64, HashSet<Entry>> = BTreeMap::new();
    // Entries whose claim got no answer, with when they were first deferred and what they
    // changed: claimed again on every tick (even once their second has left the log's window)
    // until the claim is settled, for as long as another gateway's claim of them could last.
    let mut deferred: HashMap<(u64, Entry), (Instant, Vec<Change>)> = HashMap::new();
    let mut ticks = tokio::time::interval(FOLLOW_EVERY);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let started = now_ms() / 1_000;
    let mut unread = Unread { ratings: started, catalog: started };
    let mut cursor = 0;
    loop {
        ticks.tick().await;
        let now = now_ms() / 1_000;
        let tick = Tick::plan(now, unread, &mut cursor);
        for (log, unread) in [("ratings", unread.ratings), ("catalog", unread.catalog)] {
            if unread < now.saturating_sub(CATCH_UP_SECONDS) {
                tracing::warn!(
                    log,
                    seconds = now.saturating_sub(CATCH_UP_SECONDS) - unread,
                    "seconds of a change log went unread (the follower fell behind); left to the ratings' reconciler, the catalog's sweep, or the caches' TTL"
                );
            }
        }
        // Entries are remembered for as long as a sweep reads their second again.
        let first = now.saturating_sub(SWEEP_SECONDS.max(CATCH_UP_SECONDS));
        seen = seen.split_off(&first);
        let before = deferred.len();
        deferred.retain(|(_, entry), (since, _)| since.elapsed() < entry.claimed_for());
        if deferred.len() < before {
            tracing::warn!(
                changes = before - deferred.len(),
                "changes from the log could not be claimed while the region's Redis failed; left to the caches' TTL"
            );
        }
        let mut fresh: Vec<(u64, Entry, Vec<Change>)> =
            deferred.iter().map(|(&(second, entry), (_, found))| (second, entry, found.clone())).collect();
        unread = Unread { ratings: now, catalog: now };
        let window = tick.window.into_iter().map(|(second, which)| (second, which, false));
        let sweep = tick.sweep.map(|second| (second, Which { ratings: false, catalog: true }, true));
        for (second, which, swept) in window.chain(sweep) {
            let Some((entries, failed)) = logs.read(second, which).await else { return };
            // A second the sweep could not read is read on its next round.
            if failed.ratings && !swept {
                unread.ratings = unread.ratings.min(second);
            }
            if failed.catalog && !swept {
                unread.catalog = unread.catalog.min(second);
            }
            let known = seen.entry(second).or_default();
            fresh.extend(
                entries
                    .into_iter()
                    .filter(|(e, _)| !known.contains(e) && !deferred.contains_key(&(second, *e)))
                    .map(|(e, found)| (second, e, found)),
            );
        }
        for (log, unread) in [("ratings", unread.ratings), ("catalog", unread.catalog)] {
            metrics.unread.with_label_values(&[log]).set(i64::try_from(now - unread).unwrap_or(i64::MAX));
        }
        metrics.last_tick.set(i64::try_from(now_ms() / 1_000).unwrap_or(i64::MAX));
        // Totals this gateway's reconciler (the region's one) found wrong and re-derived: rows
        // that arrived after the log's window, which no follower saw. Applied region-wide
        // here, unclaimed: only the region's reconciler has them.
        if let Some(ratings) = &logs.ratings {
            let rederived = ratings.rederived_totals().await.unwrap_or_default();
            if !rederived.is_empty() {
                regional.count_invalidations("rederived", rederived.len());
                let found: Vec<Change> = rederived.into_iter().map(Change::RatingTotals).collect();
                changes.changed(&found).await;
            }
        }
        if fresh.is_empty() {
            continue;
        }
        // A trace of its own for each tick that found changes: the claims and what followed.
        let span = tracing::debug_span!(
            "change_follower",
            fresh = fresh.len(),
            won = tracing::field::Empty,
            unanswered = tracing::field::Empty
        );
        let claims: Vec<(String, Duration)> =
            fresh.iter().map(|(second, entry, _)| entry.claim(*second)).collect();
        // An entry is settled once its claim is (won here, or held by another gateway); one
        // whose claim got no answer is claimed again next tick, so a failed call never leaves
        // a change applied by nobody.
        let claimed = regional.claim_many(&claims).instrument(span.clone()).await;
        let mut found = Vec::new();
        let (mut won, mut unanswered) = (0, 0);
        for ((second, entry, changed), claim) in fresh.into_iter().zip(claimed) {
            match claim {
                Claim::Won => {
                    won += 1;
                    found.extend(changed);
                }
                Claim::HeldElsewhere => {}
                Claim::Unknown => {
                    unanswered += 1;
                    deferred.entry((second, entry)).or_insert_with(|| (Instant::now(), changed));
                    continue;
                }
            }
            deferred.remove(&(second, entry));
            if second >= first {
                seen.entry(second).or_default().insert(entry);
            }
        }
        regional.count_invalidations("follow_deferred", unanswered);
        span.record("won", won);
        span.record("unanswered", unanswered);
        if !found.is_empty() {
            regional.count_invalidations("followed", won);
            changes.changed(&found).instrument(span).await;
        }
    }
}

/// Drops this gateway's copies on the bus's word.
struct BusListener {
    rating_totals: Tiered<RatingTotals, MovieId>,
    entities: Option<EntityTiers>,
    subscribers: Vec<Arc<dyn Subscriber>>,
}

#[async_trait]
impl Listener for BusListener {
    async fn message(&self, text: &str) {
        let Some(change) = Change::parse(text) else {
            tracing::debug!(text, "unknown invalidation message");
            return;
        };
        let changes = [change];
        self.rating_totals.invalidate(&totals(&changes)).await;
        if let Some(entities) = &self.entities {
            let (movies, people) = changed_entities(&changes);
            entities.invalidate(&movies, &people).await;
        }
        let keys = [changes[0].key()];
        for subscriber in &self.subscribers {
            subscriber.seen(&keys);
        }
    }

    async fn resync(&self) {
        self.rating_totals.clear();
        if let Some(entities) = &self.entities {
            entities.clear();
        }
        for subscriber in &self.subscribers {
            subscriber.lost();
        }
    }
}

/// A running follower of the change log; stopped when dropped.
pub struct Following(tokio::task::JoinHandle<()>);

impl Drop for Following {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// What a gateway with the region's Redis follows for other gateways' and regions' changes:
/// the store's two change logs, and where it reports how far it has read.
pub struct FollowLogs {
    /// The ratings' log.
    pub ratings: Arc<dyn UserData>,
    /// The catalog's log.
    pub catalog: Arc<dyn CatalogWrites>,
    /// The follower's gauges.
    pub metrics: FollowerMetrics,
}

impl Changes {
    /// The changes of a gateway whose rating totals are cached in `rating_totals` (fresh for
    /// `ttl`) and catalog entities in `entities`, telling `subscribers`; with the region's
    /// Redis (`regional`), joined to the region's bus and following `logs` for other regions'
    /// changes while the returned [`Following`] lives.
    pub fn start(
        rating_totals: Tiered<RatingTotals, MovieId>,
        entities: Option<EntityTiers>,
        ttl: Duration,
        subscribers: Vec<Arc<dyn Subscriber>>,
        regional: Option<Arc<Regional>>,
        logs: FollowLogs,
    ) -> Result<(Arc<Changes>, Option<Following>), RedisConfigError> {
        let region_tier = match regional {
            Some(regional) => {
                let listener = Arc::new(BusListener {
                    rating_totals: rating_totals.clone(),
                    entities: entities.clone(),
                    subscribers: subscribers.clone(),
                });
                Some(Arc::new(RegionTier { bus: Bus::join(regional.clone(), listener)?, regional }))
            }
            None => None,
        };
        let entities_life = entities.as_ref().map_or(Duration::ZERO, EntityTiers::longest_life);
        let horizon = rating_totals.longest_life(ttl).max(entities_life) + Duration::from_secs(1);
        let changes = Arc::new(Changes { rating_totals, entities, subscribers, region_tier, horizon });
        let following = changes.region_tier.as_ref().map(|region_tier| {
            let FollowLogs { ratings, catalog, metrics } = logs;
            let logs = Logs { ratings: Some(ratings), catalog: Some(catalog) };
            Following(tokio::spawn(follow_log(logs, changes.clone(), region_tier.regional.clone(), metrics)))
        });
        Ok((changes, following))
    }

    /// Which tiers rating totals may be read from now: without a live bus, another gateway's
    /// write could not reach this gateway's copies, so neither; once live again, the regional
    /// one only for values read since.
    pub fn totals_tiers(&self) -> Tiers {
        match &self.region_tier {
            None => Tiers::ANY,
            Some(region_tier) => match region_tier.bus.live_since() {
                Some(since_ms) => Tiers::Cached { since_ms },
                None => Tiers::Bypass,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The seconds each log is read for in the window.
    fn window(tick: &Tick) -> (Vec<u64>, Vec<u64>) {
        let of =
            |log: fn(&Which) -> bool| tick.window.iter().filter(|(_, w)| log(w)).map(|(s, _)| *s).collect();
        (of(|w| w.ratings), of(|w| w.catalog))
    }

    #[test]
    fn a_tick_reads_the_window_and_what_earlier_ticks_left_unread() {
        let both = |second| Unread { ratings: second, catalog: second };
        let mut cursor = 0;
        // Caught up: the last `FOLLOW_SECONDS` and the current second, both logs.
        let tick = Tick::plan(1_000, both(1_000), &mut cursor);
        assert_eq!(window(&tick), ((997..=1_000).collect(), (997..=1_000).collect()));
        // A tick that took 10 s: the next one starts where the last one stopped.
        let tick = Tick::plan(1_010, both(1_000), &mut cursor);
        assert_eq!(window(&tick).0, (1_000..=1_010).collect::<Vec<_>>());
        // Paused for ten minutes: back `CATCH_UP_SECONDS` only, and no sweep while catching up.
        let tick = Tick::plan(1_600, both(1_000), &mut cursor);
        assert_eq!(window(&tick).0.first(), Some(&(1_600 - CATCH_UP_SECONDS)));
        assert!(tick.sweep.is_empty());
        // One log failing does not make the other read more.
        let tick = Tick::plan(1_000, Unread { ratings: 1_000, catalog: 990 }, &mut cursor);
        assert_eq!(window(&tick), ((997..=1_000).collect(), (990..=1_000).collect()));
        assert!(tick.sweep.is_empty(), "no sweep while the catalog's log catches up");
        // Seconds near the epoch do not underflow.
        let tick = Tick::plan(2, both(2), &mut cursor);
        assert_eq!((window(&tick).0, tick.sweep), ((0..=2).collect(), 0..0));
    }

    #[test]
    fn the_sweep_goes_round_the_seconds_the_window_left_in_about_ten_seconds() {
        let mut cursor = 0;
        let mut swept = Vec::new();
        let mut ticks = 0;
        // The clock moves a second every 4 ticks (`FOLLOW_EVERY`).
        while swept.len() < 200 {
            let now = 10_000 + ticks / 4;
            let tick = Tick::plan(now, Unread { ratings: now, catalog: now }, &mut cursor);
            assert!(tick.sweep.end - tick.sweep.start <= SWEEP_PER_TICK);
            assert!(tick.sweep.start >= now - SWEEP_SECONDS && tick.sweep.end <= now - FOLLOW_SECONDS);
            swept.extend(tick.sweep.map(|second| (ticks, second)));
            ticks += 1;
        }
        // Every second that stays in the sweep's range for a round is read within one round.
        let round =
            (SWEEP_SECONDS - FOLLOW_SECONDS).div_ceil(SWEEP_PER_TICK) * FOLLOW_EVERY.as_millis() as u64;
        assert!(round <= 10_000, "a round takes {round} ms");
        let at =
            |second: u64| swept.iter().filter(|(_, s)| *s == second).map(|(t, _)| *t).collect::<Vec<_>>();
        let second = 10_000 - 50;
        assert!(!at(second).is_empty(), "second {second} was swept");
    }
}
