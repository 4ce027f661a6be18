//! Users' data without counters or lightweight transactions.
//!
//! A rating is the row `ratings_by_user (user, movie)`; the newest-first index
//! `ratings_by_user_time` and the per-movie row `movie_ratings (movie, bucket, user)` are
//! written with it in one logged batch, so they are applied together or not at all. Two
//! regions writing the same row resolve by write timestamp (last write wins); each batch is
//! stamped from the row's own time, moved past the write it replaces (see
//! [`write_timestamp`]), so a gateway with a slow clock cannot lose a write. Pages of the
//! time index are checked against the by-user rows, so an index entry left by two concurrent
//! re-rates of the same movie by the same user is never shown.
//!
//! Rating totals are never incremented: each of a movie's 64 buckets of users has a
//! (sum, count) row recomputed from that bucket's rows after every write, so a retry, a re-rate
//! or a write from another region replaces a value rather than adding to one, and a write costs
//! one bucket (1/64 of the movie's ratings), not the whole movie. Two writes racing in one
//! bucket can leave a total that misses one of them; every write also lists its bucket in
//! `rating_changes` (in the same batch, one partition per second), and the region's
//! [`Reconciler`] (the gateway holding the region's lease, `crate::lease`) re-derives the
//! buckets of each second three times: once every write of that second has surely landed in
//! the region (its request timeout later), ten seconds after that (writes replicated from
//! another region), and 75 s after (logged batches replayed from the batchlog). Totals
//! converge within [`totals_lag`] of the write; each change costs its region three bucket
//! reads. Rows arriving later still (hints after a partition, a repair) are found by the
//! marks each region writes for its settled seconds (`rating_log_marks`): a mark arriving
//! after the looks at its second means its rows came late, and the second is re-derived, then
//! again with backoff over the next 13 minutes (hint queues replay independently). Where the
//! reconciler has read other regions' marks survives it (`reconcile_cursors`). For
//! operators, [`reconcile_since`] (`gateway reconcile --since`) re-derives a whole period and
//! writes its movies to the log again, so every region's caches and edges drop them.

use std::collections::HashSet;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures::future::try_join_all;
use marquee_store::plan;
use marquee_store::{
    MovieId, Page, Position, Rating, RatingTotals, StoreError, UserId, UserPage, WatchlistEntry,
};
use scylla::statement::batch::{Batch, BatchType};
use scylla::statement::prepared::PreparedStatement;
use scylla::value::{CqlValue, MaybeEmpty};
use tracing::Instrument;

use crate::ranged::{Cursor, RangeRead, encode};
use crate::session::{Cluster, Kind, decode_error, driver_error, execution_error};

/// Buckets of users per movie for rating totals.
pub(crate) const TOTAL_BUCKETS: i32 = 64;

/// Milliseconds per `rating_changes` slot (one partition per slot).
const SLOT_MS: u64 = 1_000;

/// The second look at a slot, after the first: room for writes replicated from another region.
const LATE_MS: u64 = 10_000;

/// The third look: a logged batch whose coordinator failed mid-way is replayed from the
/// batchlog once it is older than twice the write timeout, by a loop that runs every 60 s on
/// ScyllaDB (every 10 s on Cassandra); its rows land in their slot that late.
const BATCHLOG_MS: u64 = 75_000;

/// Slots one look catches up on per pass; a reconciler further behind continues on the next
/// pass (nothing is skipped: the log keeps a day).
const MAX_SLOTS_PER_PASS: i64 = 120;

/// How long after its slot ends a slot is first re-derived: every write listed in it has been
/// applied or has failed by then (a request gives up after the request timeout).
fn settle(request_timeout: Duration) -> Duration {
    request_timeout + Duration::from_secs(1)
}

/// The bound on [`marquee_store::UserData::totals_lag`]: a write racing another in its bucket
/// is repaired by the first pass after its slot has settled, which starts within an interval
/// and takes well under a second.
pub(crate) fn totals_lag(reconcile_interval: Duration, request_timeout: Duration) -> Duration {
    Duration::from_millis(SLOT_MS) + settle(request_timeout) + reconcile_interval + Duration::from_secs(1)
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// The write timestamp (microseconds) of a write made at `at_ms`: every write of a user's
/// row is stamped from the row's own time (`rated_at`, `added_at`), which each write moves
/// forward (at least 1 ms past the time it replaces, whatever this gateway's clock says).
/// Cells resolve by timestamp (last write wins), so a write stamped from a clock behind the
/// previous writer's would be acknowledged and then lose everywhere: a re-rate or removal
/// from a gateway 5 s slow would vanish.
fn write_timestamp(at_ms: u64) -> i64 {
    i64::try_from(at_ms.saturating_mul(1_000)).unwrap_or(i64::MAX)
}

fn slot(ms: u64) -> i64 {
    (ms / SLOT_MS) as i64
}

/// How long another region's unmarked seconds are waited for, and how far back a reconciler
/// that takes the lease catches up: a day, the marks' `gc_grace_seconds` and TTL. The hint
/// window (3 h) bounds when hints are stored, not when they are delivered, and a stored hint
/// is replayed until it is older than the grace; rows arriving later come only from a repair.
const MARKS_WAITED_SLOTS: i64 = 86_400;

/// Late marks handled per other region per pass: after a partition of hours, thousands of
/// seconds' marks arrive at once, and each costs its second's buckets (and five more looks).
/// The rest are read again on the next passes, so the lease is renewed meanwhile.
const MAX_LATE_PER_PASS: usize = 120;

/// Handled seconds beyond the cursor kept in `reconcile_cursors`, as ranges; beyond that a
/// new holder handles them again (more work, nothing missed).
const MAX_HANDLED_RANGES: usize = 256;

/// Failed writes re-derived per pass.
const MAX_RESETTLED_PER_PASS: usize = 256;

/// When a second whose mark arrived late is re-derived again, after the first time, each
/// movie whose totals changed since the previous time handed to the change follower. Rows
/// and marks replayed by different coordinators arrive in no set order, and ScyllaDB replays
/// each shard's hint queue to a node independently: after a long partition a second's rows
/// may follow its mark by minutes. Past the last look, `gateway reconcile --check` finds
/// what is still off and `gateway reconcile --since` fixes it.
const AFTER_LATE_MARK_MS: [u64; 5] = [10_000, 30_000, 90_000, 270_000, 810_000];

/// When a bucket whose logged batch failed (timed out, or a replica was unreachable) is
/// re-derived by the gateway that wrote it: the batchlog replays the batch once it is older
/// than twice the write timeout, on a loop every 60 s on ScyllaDB, and again on the next lap
/// while a replica is unreachable; the reconciler's last look (75 s) covers the first lap
/// only.
const AFTER_FAILED_BATCH_MS: [u64; 2] = [150_000, 300_000];

/// How long after this one a failed write's next re-derivation comes, with `left` more to
/// come after this one.
fn next_resettle(left: usize) -> Option<u64> {
    let at = AFTER_FAILED_BATCH_MS.len().checked_sub(left)?;
    AFTER_FAILED_BATCH_MS.get(at)?.checked_sub(*AFTER_FAILED_BATCH_MS.get(at.checked_sub(1)?)?)
}

/// Failed writes kept for [`AFTER_FAILED_BATCH_MS`]; beyond that (a data center down) the
/// reconciler's looks and marks are left to find them.
const MAX_UNSETTLED: usize = 10_000;

/// How long after its own first look (when its origin writes it) another region's mark may
/// take to arrive before it counts as late: replication, a pass interval, a slow node. A
/// mark later than that came with rows the change followers (which read the last 3 s of the
/// log) may have missed: hints after a partition, a repair.
const MARK_GRACE_MS: u64 = 3_000;

/// When the recent seconds are looked at again after late marks arrive (see `pass`).
const RECHECK_AFTER_LATE_MARKS_MS: [u64; 3] = [5_000, 15_000, 35_000];

/// Slots per hour partition of `rating_log_marks`.
const SLOTS_PER_HOUR: i64 = 3_600;

/// Change rows [`reconcile_since`] writes per second for the movies it re-derived, so the
/// change followers of every gateway in every region take them in at a steady pace.
const TOLD_PER_SECOND: usize = 500;

/// A bucket of a movie's rating totals: (movie, bucket).
type Pair = (i64, i32);

/// The buckets a look at one slot re-derived, with the (sum, count) each had then.
type Seen = std::collections::HashMap<Pair, (i64, i64)>;

/// State the store keeps for users' data between calls.
#[derive(Default)]
pub(crate) struct UserState {
    /// Movies whose totals the reconciler re-derived, until the gateway's change follower
    /// takes them ([`Users::take_rederived`]).
    rederived: std::sync::Mutex<std::collections::BTreeSet<MovieId>>,
    /// Buckets whose logged batch failed, by when they are re-derived next (unix ms), with
    /// how many more times ([`AFTER_FAILED_BATCH_MS`]).
    unsettled: std::sync::Mutex<std::collections::BTreeMap<u64, Vec<(Pair, usize)>>>,
}

fn locked<T>(mutex: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Where a region's reconciler is, as `reconcile_cursors` keeps it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Place {
    /// In another region's marks: the oldest second not yet marked. In its own looks: the
    /// next second to look at first.
    slot: Option<i64>,
    /// Its own row: the first second of its unbroken run of looks.
    began: Option<i64>,
    /// Its own row: where the run before stopped (none: no run before).
    gap_from: Option<i64>,
}

/// Seconds as `first-last` ranges joined by commas (`reconcile_cursors.handled`), at most
/// [`MAX_HANDLED_RANGES`] ranges from the oldest.
fn to_ranges(seconds: &std::collections::BTreeSet<i64>) -> String {
    let mut ranges: Vec<(i64, i64)> = Vec::new();
    for &s in seconds {
        let full = ranges.len() >= MAX_HANDLED_RANGES;
        match ranges.last_mut() {
            Some((_, last)) if *last + 1 == s => *last = s,
            _ if full => break,
            _ => ranges.push((s, s)),
        }
    }
    ranges.iter().map(|(first, last)| format!("{first}-{last}")).collect::<Vec<_>>().join(",")
}

/// The seconds of [`to_ranges`], at most [`MAX_HANDLED_RANGES`] ranges and a day of seconds
/// (a row written otherwise is not this build's); what does not parse is left out (handled
/// again).
fn from_ranges(ranges: &str) -> std::collections::BTreeSet<i64> {
    ranges
        .split(',')
        .take(MAX_HANDLED_RANGES)
        .filter_map(|range| {
            let (first, last) = range.split_once('-')?;
            Some(first.parse::<i64>().ok()?..=last.parse::<i64>().ok()?)
        })
        .flatten()
        .take(MARKS_WAITED_SLOTS as usize)
        .collect()
}

impl Place {
    /// A reconciler's own row when it starts, this the last one's: the same run, caught up
    /// from the last one's next second, when that is no older than `floor` (the log is kept a
    /// day); else a new run from `start`, after a gap no look will mark.
    fn run_from(self, floor: i64, start: i64) -> Place {
        match self {
            Place { slot: Some(next), began, gap_from } if next >= floor => {
                Place { slot: Some(next), began: Some(began.unwrap_or(next)), gap_from }
            }
            last => Place { slot: None, began: Some(start), gap_from: last.slot },
        }
    }

    /// Another region's own row: where a reader whose cursor in its marks is at `cursor`
    /// skips to, when no look will ever mark that second (it lies in the gap before the
    /// current run, or before the region's first run).
    fn unmarkable_until(self, cursor: i64) -> Option<i64> {
        let began = self.began?;
        (cursor < began && self.gap_from.is_none_or(|from| from <= cursor)).then_some(began)
    }
}

/// Another region's marks as this region's reconciler has read them.
struct Remote {
    origin: String,
    /// The oldest second not yet marked here.
    cursor: i64,
    /// Seconds at or after `cursor` already marked (and handled).
    marked: std::collections::BTreeSet<i64>,
    /// The cursor and handled seconds as last written to `reconcile_cursors`.
    saved: Option<(i64, String)>,
    /// When the last warning that its marks are overdue was logged.
    warned: Option<std::time::Instant>,
    /// Whether its marks have been read since this reconciler (re)started: those found by
    /// the first read arrived before it and are not late (its own looks cover their seconds).
    primed: bool,
}

/// Which slots the region's reconciler has re-derived, at each look, and how far it has read
/// other regions' marks.
pub(crate) struct Reconciler {
    /// How long after its end a slot is due, per look.
    ages: [u64; 3],
    /// The next slot to look at, per look.
    next: [i64; 3],
    /// This region's data center: the origin of the marks it writes.
    origin: String,
    remotes: Vec<Remote>,
    /// More looks at late-marked slots, by when they are due (unix ms).
    later: std::collections::BTreeMap<u64, Vec<i64>>,
    /// What the last look at each late-marked slot saw, with the looks still to come.
    late_seen: std::collections::HashMap<i64, (Seen, usize)>,
    /// What each slot's looks so far saw, from `first_looked` on.
    listed: std::collections::BTreeMap<i64, Seen>,
    /// The first slot this reconciler's first look handled since it (re)started.
    first_looked: i64,
    /// Whether the last pass found late marks: another region's rows are arriving late.
    late_marks: bool,
    /// Extra looks at the recent slots after late marks, by when they are due (unix ms).
    rechecks: std::collections::BTreeMap<u64, Vec<i64>>,
    /// No new rechecks are planned before this time (unix ms).
    rechecks_planned_until: u64,
    /// Whether the next pass first reads where the region's last reconciler left other
    /// regions' marks (set when this gateway starts, or stops holding the lease).
    resume: bool,
    /// This reconciler's own row of `reconcile_cursors`, as it was last written.
    own: Place,
}

impl Reconciler {
    /// Starts with the slots still within reach of the last look, so a reconciler that
    /// (re)starts, or takes over from another gateway, covers what it may have missed.
    /// `remote_origins` are the other regions' data centers, whose marks it follows.
    pub(crate) fn new(request_timeout: Duration, origin: &str, remote_origins: &[String]) -> Reconciler {
        let settle_ms = u64::try_from(settle(request_timeout).as_millis()).unwrap_or(u64::MAX);
        let ages = [settle_ms, settle_ms + LATE_MS, settle_ms + BATCHLOG_MS];
        let start = slot(now_ms().saturating_sub(ages[2]));
        let remotes = remote_origins
            .iter()
            .filter(|o| *o != origin)
            .map(|o| Remote {
                origin: o.clone(),
                cursor: start,
                marked: Default::default(),
                saved: None,
                warned: None,
                primed: false,
            })
            .collect();
        let mut reconciler = Reconciler {
            ages,
            next: [i64::MIN; 3],
            origin: origin.to_owned(),
            remotes,
            later: Default::default(),
            late_seen: Default::default(),
            listed: Default::default(),
            first_looked: i64::MAX,
            late_marks: false,
            rechecks: Default::default(),
            rechecks_planned_until: 0,
            resume: true,
            own: Place::default(),
        };
        reconciler.follow_from_now();
        reconciler
    }

    /// Moves every look up to the slots still within reach of the last look (what a gateway
    /// that is not the region's reconciler does, so it starts from there if it becomes it).
    pub(crate) fn follow_from_now(&mut self) {
        let start = slot(now_ms().saturating_sub(self.ages[2]));
        self.listed.clear();
        self.later.clear();
        self.late_seen.clear();
        self.rechecks.clear();
        self.first_looked = i64::MAX;
        for next in &mut self.next {
            *next = (*next).max(start);
        }
        for remote in &mut self.remotes {
            if remote.cursor < start {
                remote.cursor = start;
                remote.marked.retain(|&s| s >= start);
            }
            remote.primed = false;
        }
        self.resume = true;
    }

    /// Re-derives the buckets of every slot that became due since the last pass, up to
    /// [`MAX_SLOTS_PER_PASS`] per look, marks this region's settled slots, and re-derives the
    /// slots whose marks arrived late from other regions; how many buckets.
    pub(crate) async fn pass(&mut self, users: &Users<'_>) -> Result<usize, StoreError> {
        let now = now_ms();
        let mut done = 0;
        if self.resume {
            self.resume_positions(users, slot(now)).await?;
            self.resume = false;
        }
        for (look, age) in self.ages.into_iter().enumerate() {
            // Slot s is due once it ended `age` ago.
            let due = slot(now.saturating_sub(age)) - 1;
            let behind = due - self.next[look];
            if behind >= MAX_SLOTS_PER_PASS {
                tracing::warn!(look, behind, "rating reconciler is behind; catching up");
            }
            let last = due.min(self.next[look] + MAX_SLOTS_PER_PASS - 1);
            while self.next[look] <= last {
                let s = self.next[look];
                // What the first look listed, for the later ones (from the first slot this
                // reconciler looked at first).
                let listed =
                    (look > 0 && s >= self.first_looked).then(|| self.listed.remove(&s).unwrap_or_default());
                let report = listed.as_ref().map_or(Report::Wrong, Report::Unlisted);
                let seen = users.reconcile_slot(s, report).await?;
                done += seen.len();
                if look == 0 {
                    users.mark(&self.origin, s).await?;
                    self.first_looked = self.first_looked.min(s);
                }
                if look == 0 || listed.is_some() {
                    self.listed.insert(s, seen);
                }
                self.next[look] += 1;
            }
        }
        // The last look is done with these.
        self.listed = self.listed.split_off(&self.next[2]);
        if self.own.slot != Some(self.next[2]) {
            let own = Place { slot: Some(self.next[2]), ..self.own };
            users.put_position(&self.origin, &self.origin, own).await?;
            self.own = own;
        }
        done += self.follow_marks(users, now).await?;
        // Late marks mean a link came back (hints) or a repair ran: rows of the recent seconds,
        // whose marks came in time, may be arriving late too. Those seconds are looked at again
        // before their last look, each movie not listed before handed to the follower.
        if std::mem::take(&mut self.late_marks) && now >= self.rechecks_planned_until {
            let recent: Vec<i64> = (self.next[2]..self.next[0]).collect();
            for after in RECHECK_AFTER_LATE_MARKS_MS {
                self.rechecks.entry(now + after).or_default().extend(&recent);
            }
            self.rechecks_planned_until = now + RECHECK_AFTER_LATE_MARKS_MS[0];
        }
        let due: Vec<u64> = self.rechecks.range(..=now).map(|(&at, _)| at).collect();
        for at in due {
            for s in self.rechecks.remove(&at).unwrap_or_default() {
                let Some(listed) = self.listed.remove(&s) else { continue };
                let seen = users.reconcile_slot(s, Report::Changed(&listed)).await?;
                done += seen.len();
                self.listed.insert(s, seen);
            }
        }
        let due: Vec<u64> = self.later.range(..=now).map(|(&at, _)| at).collect();
        for at in due {
            for s in self.later.remove(&at).unwrap_or_default() {
                let Some((before, left)) = self.late_seen.remove(&s) else { continue };
                let seen = users.reconcile_slot(s, Report::Changed(&before)).await?;
                done += seen.len();
                if left > 1 {
                    self.late_seen.insert(s, (seen, left - 1));
                }
            }
        }
        Ok(done)
    }

    /// Reads other regions' marks from each one's oldest unmarked second; a mark that
    /// arrives later than its origin writes it plus [`MARK_GRACE_MS`] (hints, a repair, a
    /// slow link) means rows may have arrived late too, past the change followers: the slot
    /// is re-derived now and twice more, every movie in it handed to the follower.
    async fn follow_marks(&mut self, users: &Users<'_>, now: u64) -> Result<usize, StoreError> {
        let now_slot = slot(now);
        // A slot whose mark should have been here by now: rows arriving with it are late.
        let looked = slot(now.saturating_sub(self.ages[0] + MARK_GRACE_MS)) - 1;
        let mut done = 0;
        for remote in &mut self.remotes {
            // Seconds the other region's reconciler will never mark: between its last run's
            // end and its current run's start no gateway of it ran (or it never ran before).
            // (Read only while the cursor waits on a second that should have been marked.)
            if remote.cursor <= looked
                && let Some(began) =
                    users.position(&remote.origin, &remote.origin).await?.unmarkable_until(remote.cursor)
            {
                remote.cursor = began;
                remote.marked.retain(|&s| s >= began);
            }
            let oldest = now_slot - MARKS_WAITED_SLOTS;
            if remote.cursor < oldest {
                if remote.warned.is_none_or(|at| at.elapsed() >= Duration::from_secs(600)) {
                    tracing::warn!(
                        origin = %remote.origin,
                        seconds = oldest - remote.cursor,
                        "another region's change log was not marked within a day: run a repair, then \
                         `gateway reconcile --since`"
                    );
                    remote.warned = Some(std::time::Instant::now());
                }
                remote.cursor = oldest;
                remote.marked.retain(|&s| s >= oldest);
            }
            let mut late = 0;
            'hours: for hour in remote.cursor.div_euclid(SLOTS_PER_HOUR)..=now_slot.div_euclid(SLOTS_PER_HOUR)
            {
                for s in users.marks(&remote.origin, hour, remote.cursor).await? {
                    if s < remote.cursor || remote.marked.contains(&s) {
                        continue;
                    }
                    let is_late = remote.primed && s <= looked;
                    if is_late && late >= MAX_LATE_PER_PASS {
                        // The rest on the next passes.
                        break 'hours;
                    }
                    remote.marked.insert(s);
                    if is_late {
                        tracing::debug!(origin = %remote.origin, slot = s, "a late mark: re-deriving its second");
                        late += 1;
                        let seen = users.reconcile_slot(s, Report::Every).await?;
                        done += seen.len();
                        self.late_seen.insert(s, (seen, AFTER_LATE_MARK_MS.len()));
                        for after in AFTER_LATE_MARK_MS {
                            self.later.entry(now + after).or_default().push(s);
                        }
                    }
                }
            }
            if late > 0 {
                self.late_marks = true;
                tracing::info!(origin = %remote.origin, seconds = late, "late marks from another region: re-derived their seconds");
            }
            while remote.marked.remove(&remote.cursor) {
                remote.cursor += 1;
            }
            remote.primed = true;
            let at = (remote.cursor, to_ranges(&remote.marked));
            if remote.saved.as_ref() != Some(&at) {
                users.put_cursor(&self.origin, &remote.origin, at.0, &at.1).await?;
                remote.saved = Some(at);
            }
        }
        Ok(done)
    }

    /// Continues from where the region's last reconciler left (`reconcile_cursors`), within
    /// [`MARKS_WAITED_SLOTS`]: in each other region's marks, from its cursor with the seconds
    /// it handled (the marks that arrived meanwhile were read by nobody, and those for seconds
    /// whose looks have passed are late); in its own looks, from its slowest look's next
    /// second, catching up on what nobody looked at, or a new run after a gap of a day.
    async fn resume_positions(&mut self, users: &Users<'_>, now_slot: i64) -> Result<(), StoreError> {
        let (saved, handled) = users.positions(&self.origin).await?;
        let floor = now_slot - MARKS_WAITED_SLOTS;
        let last = saved.get(&self.origin).copied().unwrap_or_default();
        self.own = last.run_from(floor, self.next[2]);
        match self.own.slot {
            Some(next) if next < self.next[2] => {
                tracing::info!(region = %self.origin, seconds = self.next[2] - next, "the rating reconciler catches up on seconds no look has reached");
                for look in &mut self.next {
                    *look = (*look).min(next);
                }
            }
            Some(_) => {}
            None => {
                tracing::info!(region = %self.origin, began = ?self.own.began, gap_from = ?self.own.gap_from, "the rating reconciler starts a new run of looks")
            }
        }
        for remote in &mut self.remotes {
            let Some(cursor) = saved.get(&remote.origin).and_then(|p| p.slot) else { continue };
            if cursor < floor {
                continue;
            }
            let ranges = handled.get(&remote.origin).cloned().unwrap_or_default();
            remote.cursor = cursor;
            remote.marked = from_ranges(&ranges);
            remote.marked.retain(|&s| s >= cursor);
            remote.saved = Some((cursor, ranges));
            remote.primed = true;
        }
        Ok(())
    }
}

/// What [`reconcile_since`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reconciled {
    /// Seconds of the change log read.
    pub slots: u64,
    /// Distinct (movie, bucket) totals rows re-derived.
    pub buckets: usize,
    /// Of those, the rows that were wrong and rewritten.
    pub fixed: usize,
    /// Movies written to the change log again, so every region's caches and edges drop them.
    pub told: usize,
}

/// Re-derives every bucket listed in the change log from `since` (unix ms) to now: what an
/// operator runs after a repair (`gateway reconcile --since`), or after a partition longer
/// than the looks reach. Rows a repair brings reached no cache, and their totals may have
/// arrived right with them, so every listed movie is written to the change log again (at
/// [`TOLD_PER_SECOND`]): the change followers of every gateway, in every region, drop it
/// from their caches and purge it at their edge as for a new rating.
pub(crate) async fn reconcile_since(users: &Users<'_>, since_ms: u64) -> Result<Reconciled, StoreError> {
    let (first, last) = (slot(since_ms), slot(now_ms()));
    let mut movies = std::collections::BTreeMap::new();
    let mut done = Reconciled { slots: (last - first + 1).max(0) as u64, buckets: 0, fixed: 0, told: 0 };
    // Slot by slot, each bucket once: memory grows with the distinct buckets, not the log.
    let mut seen = HashSet::new();
    for s in first..=last {
        let fresh: Vec<Pair> =
            users.slot_buckets(s).await?.into_iter().filter(|&pair| seen.insert(pair)).collect();
        for chunk in fresh.chunks(16) {
            let fixed =
                try_join_all(chunk.iter().map(|&(movie, bucket)| users.rederive(movie, bucket))).await?;
            done.fixed += fixed.iter().filter(|(wrong, _)| *wrong).count();
        }
        for (movie, bucket) in fresh {
            movies.entry(movie).or_insert(bucket);
        }
    }
    done.buckets = seen.len();
    let movies: Vec<Pair> = movies.into_iter().collect();
    for (i, chunk) in movies.chunks(TOLD_PER_SECOND).enumerate() {
        if i > 0 {
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        let at = slot(now_ms());
        try_join_all(
            chunk
                .iter()
                .map(|&(movie, bucket)| users.unpaged(&users.statements.put_change, (at, movie, bucket))),
        )
        .await?;
        done.told += chunk.len();
    }
    Ok(done)
}

/// Which re-derived movies [`Users::reconcile_slot`] notes for the change follower.
#[derive(Clone, Copy)]
enum Report<'a> {
    /// Those whose stored totals were wrong (a routine look: the follower saw the slot's
    /// changes when they arrived).
    Wrong,
    /// Those, and every one this slot's previous look did not list: rows that arrived later
    /// (a slow replica, a batchlog replay) past the change followers, whose totals may have
    /// arrived right with them, but no cache heard of them.
    Unlisted(&'a Seen),
    /// Those, and every one the previous look did not see, or saw with other totals: while
    /// hints replay, a listed bucket's late rows may arrive with a right total too. (A later
    /// write to the same bucket is handed over as well: one purge more.)
    Changed(&'a Seen),
    /// Every one listed (a slot whose mark came late: all of it may have).
    Every,
}

/// What [`check_between`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TotalsCheck {
    /// Seconds of the change log read.
    pub slots: u64,
    /// Distinct (movie, bucket) totals rows checked.
    pub buckets: usize,
    /// Of those, the rows that differ from the count of their rating rows.
    pub inexact: usize,
}

/// Checks, without writing, every bucket of rating totals the change log lists from `since_ms`
/// to `until_ms` (unix ms) against its rating rows, as this data center sees them: whether
/// every total is exact here (`gateway reconcile --check`).
pub(crate) async fn check_between(
    users: &Users<'_>,
    since_ms: u64,
    until_ms: u64,
) -> Result<TotalsCheck, StoreError> {
    let (first, last) = (slot(since_ms), slot(until_ms.min(now_ms())));
    let mut listed = std::collections::BTreeSet::new();
    for s in first..=last {
        listed.extend(users.slot_buckets(s).await?);
    }
    let listed: Vec<(i64, i32)> = listed.into_iter().collect();
    let mut inexact = 0;
    for chunk in listed.chunks(16) {
        let exact =
            try_join_all(chunk.iter().map(|&(movie, bucket)| users.bucket_exact(movie, bucket))).await?;
        inexact += exact.iter().filter(|e| !**e).count();
    }
    Ok(TotalsCheck { slots: (last - first + 1).max(0) as u64, buckets: listed.len(), inexact })
}

fn inverted(ms: u64) -> u64 {
    u64::MAX - ms
}

/// The bucket of a user's rows among a movie's rating totals (FNV-1a: stable across builds
/// and regions, unlike std's hasher).
pub(crate) fn bucket(user: &UserId) -> i32 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in user.as_str().bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    (hash % TOTAL_BUCKETS as u64) as i32
}

/// Prepared statements of users' data.
pub(crate) struct UserStatements {
    get_rating: PreparedStatement,
    put_rating: PreparedStatement,
    del_rating: PreparedStatement,
    put_rating_time: PreparedStatement,
    del_rating_time: PreparedStatement,
    put_movie_rating: PreparedStatement,
    del_movie_rating: PreparedStatement,
    put_change: PreparedStatement,
    bucket_scores: PreparedStatement,
    put_totals: PreparedStatement,
    totals: PreparedStatement,
    bucket_totals: PreparedStatement,
    changes: PreparedStatement,
    put_mark: PreparedStatement,
    marks: PreparedStatement,
    positions: PreparedStatement,
    position: PreparedStatement,
    put_position: PreparedStatement,
    put_cursor: PreparedStatement,
    rating_page: RangeRead,
    get_watch: PreparedStatement,
    put_watch: PreparedStatement,
    del_watch: PreparedStatement,
    put_watch_time: PreparedStatement,
    del_watch_time: PreparedStatement,
    watch_page: RangeRead,
}

impl UserStatements {
    pub(crate) async fn prepare(c: &Cluster) -> Result<Self, StoreError> {
        let read = |cql| c.prepare(Kind::Read, cql);
        let write = |cql| c.prepare(Kind::Write, cql);
        Ok(UserStatements {
            get_rating: read("SELECT score, rated_at FROM {keyspace}.ratings_by_user WHERE user_id = ? AND movie = ?").await?,
            put_rating: write("INSERT INTO {keyspace}.ratings_by_user (user_id, movie, score, rated_at) VALUES (?, ?, ?, ?)").await?,
            // A removal keeps the row, score gone and `rated_at` the removal's time, so a later
            // rating from a clock behind it is still stamped after it (see `write_timestamp`).
            del_rating: write("INSERT INTO {keyspace}.ratings_by_user (user_id, movie, score, rated_at) VALUES (?, ?, null, ?)").await?,
            put_rating_time: write("INSERT INTO {keyspace}.ratings_by_user_time (user_id, pos, score) VALUES (?, ?, ?)").await?,
            del_rating_time: write("DELETE FROM {keyspace}.ratings_by_user_time WHERE user_id = ? AND pos = ?").await?,
            put_movie_rating: write(
                "INSERT INTO {keyspace}.movie_ratings (movie, bucket, user_id, score) VALUES (?, ?, ?, ?)",
            )
            .await?,
            del_movie_rating: write("DELETE FROM {keyspace}.movie_ratings WHERE movie = ? AND bucket = ? AND user_id = ?").await?,
            put_change: write("INSERT INTO {keyspace}.rating_changes (slot, movie, bucket) VALUES (?, ?, ?)").await?,
            bucket_scores: read("SELECT score FROM {keyspace}.movie_ratings WHERE movie = ? AND bucket = ?").await?,
            put_totals: write(
                "INSERT INTO {keyspace}.rating_totals (movie, bucket, score_sum, ratings) VALUES (?, ?, ?, ?)",
            )
            .await?,
            totals: read("SELECT score_sum, ratings FROM {keyspace}.rating_totals WHERE movie = ?").await?,
            bucket_totals: read("SELECT score_sum, ratings FROM {keyspace}.rating_totals WHERE movie = ? AND bucket = ?").await?,
            changes: read("SELECT movie, bucket FROM {keyspace}.rating_changes WHERE slot = ?").await?,
            put_mark: write("INSERT INTO {keyspace}.rating_log_marks (origin, hour, slot) VALUES (?, ?, ?)").await?,
            // The caller keeps only those from its cursor on as well (the CQL stand-in of the
            // fast tests ignores the bound).
            marks: read("SELECT slot FROM {keyspace}.rating_log_marks WHERE origin = ? AND hour = ? AND slot >= ?").await?,
            positions: read("SELECT origin, slot, handled, began, gap_from FROM {keyspace}.reconcile_cursors WHERE region = ?").await?,
            position: read("SELECT slot, began, gap_from FROM {keyspace}.reconcile_cursors WHERE region = ? AND origin = ?").await?,
            put_position: write(
                "INSERT INTO {keyspace}.reconcile_cursors (region, origin, slot, began, gap_from) VALUES (?, ?, ?, ?, ?)",
            )
            .await?,
            put_cursor: write("INSERT INTO {keyspace}.reconcile_cursors (region, origin, slot, handled) VALUES (?, ?, ?, ?)").await?,
            rating_page: RangeRead::prepare(c, "SELECT pos, score FROM {keyspace}.ratings_by_user_time WHERE user_id = ?").await?,
            get_watch: read("SELECT added_at FROM {keyspace}.watchlist_by_user WHERE user_id = ? AND movie = ?").await?,
            put_watch: write("INSERT INTO {keyspace}.watchlist_by_user (user_id, movie, added_at) VALUES (?, ?, ?)").await?,
            del_watch: write("DELETE FROM {keyspace}.watchlist_by_user WHERE user_id = ? AND movie = ?").await?,
            put_watch_time: write("INSERT INTO {keyspace}.watchlist_by_user_time (user_id, pos) VALUES (?, ?)").await?,
            del_watch_time: write("DELETE FROM {keyspace}.watchlist_by_user_time WHERE user_id = ? AND pos = ?").await?,
            watch_page: RangeRead::prepare(c, "SELECT pos FROM {keyspace}.watchlist_by_user_time WHERE user_id = ?").await?,
        })
    }
}

/// Users' data through one cluster.
pub(crate) struct Users<'a> {
    pub(crate) cluster: &'a Cluster,
    pub(crate) statements: &'a UserStatements,
    pub(crate) state: &'a UserState,
}

fn logged() -> Batch {
    let mut batch = Batch::new(BatchType::Logged);
    batch.set_is_idempotent(true);
    batch
}

impl Users<'_> {
    async fn unpaged(
        &self,
        statement: &PreparedStatement,
        values: impl scylla::serialize::row::SerializeRow,
    ) -> Result<scylla::response::query_result::QueryResult, StoreError> {
        self.cluster.unpaged(statement, values).await
    }

    async fn run_batch(
        &self,
        batch: &Batch,
        values: impl scylla::serialize::batch::BatchValues,
    ) -> Result<(), StoreError> {
        let span = if tracing::Span::current().is_none() {
            tracing::Span::none()
        } else {
            tracing::debug_span!(
                "cql",
                otel.kind = "client",
                statement = "BATCH",
                statements = batch.statements.len(),
                consistency = ?batch
                    .get_consistency()
                    .or_else(|| batch.get_execution_profile_handle().map(|p| p.to_profile().get_consistency())),
            )
        };
        async {
            let _slot = self.cluster.slot().await?;
            self.cluster.session.batch(batch, values).await.map_err(execution_error)
        }
        .instrument(span)
        .await?;
        Ok(())
    }

    async fn get_rating(&self, user: &UserId, movie: MovieId) -> Result<Option<Rating>, StoreError> {
        Ok(self.rating_row(user, movie).await?.and_then(|(rating, _)| rating))
    }

    /// The row of a user's rating of a movie: the rating (none once removed) and the time of
    /// the row's last write (the rating's, or its removal's), `None` when it was never rated.
    async fn rating_row(
        &self,
        user: &UserId,
        movie: MovieId,
    ) -> Result<Option<(Option<Rating>, u64)>, StoreError> {
        let result = self.unpaged(&self.statements.get_rating, (user.as_str(), movie.0 as i64)).await?;
        let row = result
            .into_rows_result()
            .map_err(driver_error)?
            .maybe_first_row::<(Option<MaybeEmpty<i32>>, Option<i64>)>()
            .map_err(decode_error)?;
        Ok(row.map(|(score, at)| {
            // A removal's score is null on a cluster; the CQL stand-in stores the `null`
            // literal as an empty value. Either is no rating.
            let score = match score {
                Some(MaybeEmpty::Value(score)) => Some(score),
                Some(MaybeEmpty::Empty) | None => None,
            };
            let at = at.unwrap_or(0).max(0) as u64;
            (score.map(|score| Rating { movie, score: score.clamp(0, 255) as u8, rated_at_ms: at }), at)
        }))
    }

    /// Sets a rating; the caller checked the score and that the movie exists.
    pub(crate) async fn rate(&self, user: &UserId, movie: MovieId, score: u8) -> Result<Rating, StoreError> {
        let row = self.rating_row(user, movie).await?;
        let previous = row.and_then(|(rating, _)| rating);
        // After the row's last write (a rating or a removal), whatever this gateway's clock
        // says: the write's timestamp, and a new index entry distinct from the one it replaces.
        let at = match row {
            Some((_, last)) => now_ms().max(last + 1),
            None => now_ms(),
        };
        let (u, m, bucket) = (user.as_str(), movie.0 as i64, bucket(user));
        let new_pos = encode(Position { key: inverted(at), id: movie.0 });
        let s = self.statements;
        let mut batch = logged();
        batch.set_timestamp(Some(write_timestamp(at)));
        batch.append_statement(s.put_rating.clone());
        batch.append_statement(s.put_rating_time.clone());
        batch.append_statement(s.put_movie_rating.clone());
        batch.append_statement(s.put_change.clone());
        let row = (u, m, i32::from(score), at as i64);
        let time = (u, new_pos, i32::from(score));
        let by_movie = (m, bucket, u, i32::from(score));
        let change = (slot(at), m, bucket);
        let written = match previous {
            Some(old) => {
                batch.append_statement(s.del_rating_time.clone());
                let old_pos = encode(Position { key: inverted(old.rated_at_ms), id: movie.0 });
                self.run_batch(&batch, (row, time, by_movie, change, (u, old_pos))).await
            }
            None => self.run_batch(&batch, (row, time, by_movie, change)).await,
        };
        self.unsettle_on_failure(written, movie, bucket)?;
        self.settle(movie, bucket).await;
        Ok(Rating { movie, score, rated_at_ms: at })
    }

    pub(crate) async fn delete_rating(&self, user: &UserId, movie: MovieId) -> Result<bool, StoreError> {
        let Some(old) = self.get_rating(user, movie).await? else { return Ok(false) };
        let (u, m, bucket) = (user.as_str(), movie.0 as i64, bucket(user));
        let s = self.statements;
        let removed_at = now_ms().max(old.rated_at_ms + 1);
        let mut batch = logged();
        batch.set_timestamp(Some(write_timestamp(removed_at)));
        batch.append_statement(s.del_rating.clone());
        batch.append_statement(s.del_rating_time.clone());
        batch.append_statement(s.del_movie_rating.clone());
        batch.append_statement(s.put_change.clone());
        let old_pos = encode(Position { key: inverted(old.rated_at_ms), id: movie.0 });
        let row = (u, m, removed_at as i64);
        let written =
            self.run_batch(&batch, (row, (u, old_pos), (m, bucket, u), (slot(now_ms()), m, bucket))).await;
        self.unsettle_on_failure(written, movie, bucket)?;
        self.settle(movie, bucket).await;
        Ok(true)
    }

    /// Re-derives the bucket a write changed. The write is acknowledged whatever happens here:
    /// a failure leaves the bucket to the reconcilers (its change row was in the batch).
    async fn settle(&self, movie: MovieId, bucket: i32) {
        if let Err(error) = self.recompute(movie.0 as i64, bucket).await {
            tracing::warn!(%error, movie = %movie, bucket, "rating totals left to the reconciler");
        }
    }

    /// Recomputes one bucket's (sum, count) from its rows.
    pub(crate) async fn recompute(&self, movie: i64, bucket: i32) -> Result<(), StoreError> {
        let (sum, count) = self.derive(movie, bucket).await?;
        self.unpaged(&self.statements.put_totals, (movie, bucket, sum, count)).await?;
        Ok(())
    }

    /// One bucket's (score sum, ratings) counted from its rating rows, a page at a time (each
    /// page a statement of its own, in a slot of its own).
    async fn derive(&self, movie: i64, bucket: i32) -> Result<(i64, i64), StoreError> {
        let (mut sum, mut count) = (0i64, 0i64);
        let mut paging = scylla::response::PagingState::start();
        loop {
            let (result, next) = {
                let _slot = self.cluster.slot().await?;
                self.cluster
                    .session
                    .execute_single_page(&self.statements.bucket_scores, (movie, bucket), paging)
                    .await
                    .map_err(execution_error)?
            };
            for row in
                result.into_rows_result().map_err(driver_error)?.rows::<(i32,)>().map_err(decode_error)?
            {
                let (score,) = row.map_err(decode_error)?;
                sum += i64::from(score);
                count += 1;
            }
            match next {
                scylla::response::PagingStateResponse::HasMorePages { state } => paging = state,
                scylla::response::PagingStateResponse::NoMorePages => return Ok((sum, count)),
            }
        }
    }

    /// Whether one bucket's totals row equals the count of its rating rows, as this data
    /// center sees both.
    async fn bucket_exact(&self, movie: i64, bucket: i32) -> Result<bool, StoreError> {
        let derived = self.derive(movie, bucket).await?;
        Ok(self.stored_totals(movie, bucket).await? == derived)
    }

    /// One bucket's stored (score sum, ratings); zeros when it has no row.
    async fn stored_totals(&self, movie: i64, bucket: i32) -> Result<(i64, i64), StoreError> {
        let result = self.unpaged(&self.statements.bucket_totals, (movie, bucket)).await?;
        Ok(result
            .into_rows_result()
            .map_err(driver_error)?
            .maybe_first_row::<(Option<i64>, Option<i64>)>()
            .map_err(decode_error)?
            .map_or((0, 0), |(sum, count)| (sum.unwrap_or(0), count.unwrap_or(0))))
    }

    /// Marks `slot` of the change log complete in `origin` (this region).
    async fn mark(&self, origin: &str, slot: i64) -> Result<(), StoreError> {
        self.unpaged(&self.statements.put_mark, (origin, slot.div_euclid(SLOTS_PER_HOUR), slot)).await?;
        Ok(())
    }

    /// The slots of `hour` that `origin` has marked, from `from` on, in order.
    async fn marks(&self, origin: &str, hour: i64, from: i64) -> Result<Vec<i64>, StoreError> {
        let result = self.unpaged(&self.statements.marks, (origin, hour, from)).await?;
        let mut slots = Vec::new();
        for row in result.into_rows_result().map_err(driver_error)?.rows::<(i64,)>().map_err(decode_error)? {
            let (s,) = row.map_err(decode_error)?;
            if s >= from {
                slots.push(s);
            }
        }
        slots.sort_unstable();
        Ok(slots)
    }

    /// Re-derives every bucket listed in one `rating_changes` slot; how many. A bucket whose
    /// stored total was wrong (rows that arrived after its last derivation: hints after a
    /// partition, a batchlog replay, a repair) is rewritten; its movie, or with
    /// [`Report::Every`] every listed movie, is noted for the change follower, since no cache
    /// was told of rows that arrived that late.
    async fn reconcile_slot(&self, slot: i64, report: Report<'_>) -> Result<Seen, StoreError> {
        let buckets = self.slot_buckets(slot).await?;
        let mut seen = Seen::with_capacity(buckets.len());
        for chunk in buckets.chunks(16) {
            let derived =
                try_join_all(chunk.iter().map(|&(movie, bucket)| self.rederive(movie, bucket))).await?;
            let mut noted = Vec::new();
            for (&pair, (wrong, totals)) in chunk.iter().zip(derived) {
                let changed = match report {
                    Report::Wrong => false,
                    Report::Unlisted(before) => !before.contains_key(&pair),
                    Report::Changed(before) => before.get(&pair) != Some(&totals),
                    Report::Every => true,
                };
                if wrong || changed {
                    noted.push(MovieId(pair.0.max(0) as u64));
                }
                seen.insert(pair, totals);
            }
            if !noted.is_empty() {
                locked(&self.state.rederived).extend(noted);
            }
        }
        Ok(seen)
    }

    /// Re-derives one bucket, rewriting its totals row when it differs from the count of its
    /// rating rows: whether it did, and the (sum, count).
    async fn rederive(&self, movie: i64, bucket: i32) -> Result<(bool, (i64, i64)), StoreError> {
        let derived = self.derive(movie, bucket).await?;
        let wrong = self.stored_totals(movie, bucket).await? != derived;
        if wrong {
            self.unpaged(&self.statements.put_totals, (movie, bucket, derived.0, derived.1)).await?;
        }
        Ok((wrong, derived))
    }

    /// The movies whose totals were re-derived since the last call (see `reconcile_slot`).
    pub(crate) fn take_rederived(&self) -> Vec<MovieId> {
        std::mem::take(&mut *locked(&self.state.rederived)).into_iter().collect()
    }

    /// Passes a rating batch's result on, noting its bucket when it failed in a way that may
    /// still apply it (a timeout: the batchlog holds it): the batchlog may replay it after the
    /// region's last look at its second (see [`AFTER_FAILED_BATCH_MS`]).
    fn unsettle_on_failure(
        &self,
        written: Result<(), StoreError>,
        movie: MovieId,
        bucket: i32,
    ) -> Result<(), StoreError> {
        if let Err(error) = &written
            && error.is_retryable()
        {
            self.unsettle(movie, bucket);
        }
        written
    }

    fn unsettle(&self, movie: MovieId, bucket: i32) {
        let mut unsettled = locked(&self.state.unsettled);
        if unsettled.values().map(Vec::len).sum::<usize>() >= MAX_UNSETTLED {
            tracing::warn!(movie = %movie, bucket, "too many failed rating writes to follow; left to the reconciler");
            return;
        }
        let pair = (movie.0 as i64, bucket);
        unsettled
            .entry(now_ms() + AFTER_FAILED_BATCH_MS[0])
            .or_default()
            .push((pair, AFTER_FAILED_BATCH_MS.len() - 1));
    }

    /// Re-derives the buckets of failed writes that are due, handing each movie whose totals
    /// were wrong to the change follower; how many buckets.
    pub(crate) async fn resettle_due(&self) -> Result<usize, StoreError> {
        let now = now_ms();
        let mut due: Vec<(Pair, usize)> = {
            let mut unsettled = locked(&self.state.unsettled);
            let later = unsettled.split_off(&(now + 1));
            std::mem::replace(&mut *unsettled, later).into_values().flatten().collect()
        };
        // At most so many now; the rest on the next passes.
        if due.len() > MAX_RESETTLED_PER_PASS {
            let rest = due.split_off(MAX_RESETTLED_PER_PASS);
            locked(&self.state.unsettled).entry(now + 1).or_default().extend(rest);
        }
        for (i, &((movie, bucket), left)) in due.iter().enumerate() {
            match self.rederive(movie, bucket).await {
                Ok((wrong, _)) => {
                    if wrong {
                        locked(&self.state.rederived).insert(MovieId(movie.max(0) as u64));
                    }
                    if let Some(after) = next_resettle(left) {
                        locked(&self.state.unsettled)
                            .entry(now + after)
                            .or_default()
                            .push(((movie, bucket), left - 1));
                    }
                }
                Err(error) => {
                    // This one and the rest, on the next pass.
                    locked(&self.state.unsettled)
                        .entry(now + 1_000)
                        .or_default()
                        .extend(due[i..].iter().copied());
                    return Err(error);
                }
            }
        }
        Ok(due.len())
    }

    /// Where `region`'s reconciler is, by origin: its cursor in each other region's marks,
    /// and its own looks.
    #[allow(clippy::type_complexity)]
    async fn positions(
        &self,
        region: &str,
    ) -> Result<
        (std::collections::HashMap<String, Place>, std::collections::HashMap<String, String>),
        StoreError,
    > {
        let result = self.unpaged(&self.statements.positions, (region,)).await?;
        let (mut positions, mut handled) =
            (std::collections::HashMap::new(), std::collections::HashMap::new());
        for row in result
            .into_rows_result()
            .map_err(driver_error)?
            .rows::<(String, Option<i64>, Option<String>, Option<i64>, Option<i64>)>()
            .map_err(decode_error)?
        {
            let (origin, slot, ranges, began, gap_from) = row.map_err(decode_error)?;
            handled.insert(origin.clone(), ranges.unwrap_or_default());
            positions.insert(origin, Place { slot, began, gap_from });
        }
        Ok((positions, handled))
    }

    /// Where `region`'s reconciler is in `origin`'s marks, or in its own looks.
    async fn position(&self, region: &str, origin: &str) -> Result<Place, StoreError> {
        let result = self.unpaged(&self.statements.position, (region, origin)).await?;
        Ok(result
            .into_rows_result()
            .map_err(driver_error)?
            .maybe_first_row::<(Option<i64>, Option<i64>, Option<i64>)>()
            .map_err(decode_error)?
            .map(|(slot, began, gap_from)| Place { slot, began, gap_from })
            .unwrap_or_default())
    }

    /// Writes a reconciler's own row (unset fields left as they are, no tombstones).
    async fn put_position(&self, region: &str, origin: &str, at: Place) -> Result<(), StoreError> {
        let unset = scylla::value::MaybeUnset::from_option;
        let values = (region, origin, unset(at.slot), unset(at.began), unset(at.gap_from));
        self.unpaged(&self.statements.put_position, values).await?;
        Ok(())
    }

    /// Writes a reconciler's cursor in another region's marks.
    async fn put_cursor(
        &self,
        region: &str,
        origin: &str,
        cursor: i64,
        handled: &str,
    ) -> Result<(), StoreError> {
        self.unpaged(&self.statements.put_cursor, (region, origin, cursor, handled)).await?;
        Ok(())
    }

    /// The (movie, bucket) pairs one `rating_changes` slot lists.
    async fn slot_buckets(&self, slot: i64) -> Result<Vec<(i64, i32)>, StoreError> {
        let result = self.unpaged(&self.statements.changes, (slot,)).await?;
        let mut buckets = Vec::new();
        for row in
            result.into_rows_result().map_err(driver_error)?.rows::<(i64, i32)>().map_err(decode_error)?
        {
            buckets.push(row.map_err(decode_error)?);
        }
        Ok(buckets)
    }

    /// The movies listed in `rating_changes` for the slot of `second`, each once.
    pub(crate) async fn changed_movies(&self, second: u64) -> Result<Vec<MovieId>, StoreError> {
        let slot = slot(second.saturating_mul(1_000));
        let result = self.unpaged(&self.statements.changes, (slot,)).await?;
        let mut movies = Vec::new();
        for row in
            result.into_rows_result().map_err(driver_error)?.rows::<(i64, i32)>().map_err(decode_error)?
        {
            let (movie, _) = row.map_err(decode_error)?;
            movies.push(MovieId(movie.max(0) as u64));
        }
        movies.sort_unstable();
        movies.dedup();
        Ok(movies)
    }

    pub(crate) async fn rating_totals(&self, movies: &[MovieId]) -> Result<Vec<RatingTotals>, StoreError> {
        try_join_all(movies.iter().map(|movie| async move {
            let result = self.unpaged(&self.statements.totals, (movie.0 as i64,)).await?;
            let mut totals = RatingTotals::default();
            for row in
                result.into_rows_result().map_err(driver_error)?.rows::<(i64, i64)>().map_err(decode_error)?
            {
                let (sum, count) = row.map_err(decode_error)?;
                totals.sum += sum.max(0) as u64;
                totals.count += count.max(0) as u64;
            }
            Ok(totals)
        }))
        .await
    }

    pub(crate) async fn user_ratings(
        &self,
        user: &UserId,
        movies: &[MovieId],
    ) -> Result<Vec<Option<Rating>>, StoreError> {
        try_join_all(movies.iter().map(|&movie| self.get_rating(user, movie))).await
    }

    pub(crate) async fn ratings_page(
        &self,
        user: &UserId,
        page: UserPage,
    ) -> Result<Page<Rating>, StoreError> {
        plan::check_user_page(page)?;
        let partition = vec![CqlValue::Text(user.as_str().to_owned())];
        let mut cursor: Cursor<'_, (Vec<u8>, i32)> =
            Cursor::new(&self.statements.rating_page, partition, page.after, page.first + 1);
        self.checked_page(page.first, &mut cursor, |pos, _| async move {
            let current = self.get_rating(user, MovieId(pos.id)).await?;
            Ok(current.filter(|r| inverted(r.rated_at_ms) == pos.key))
        })
        .await
    }

    /// Reads index entries in order and keeps those `check` confirms, until a page and one
    /// more are found or the index ends.
    async fn checked_page<T, R, F, Fut>(
        &self,
        first: usize,
        cursor: &mut Cursor<'_, R>,
        check: F,
    ) -> Result<Page<T>, StoreError>
    where
        R: crate::ranged::Ranged,
        F: Fn(Position, R) -> Fut,
        Fut: Future<Output = Result<Option<T>, StoreError>>,
    {
        let mut items = Vec::with_capacity(first);
        loop {
            let mut candidates = Vec::new();
            while candidates.len() < first + 1 - items.len() {
                let Some(entry) = cursor.next(self.cluster).await? else { break };
                candidates.push(entry);
            }
            let exhausted = candidates.len() < first + 1 - items.len();
            let checked = try_join_all(candidates.into_iter().map(|(pos, row)| {
                let fut = check(pos, row);
                async move { Ok::<_, StoreError>(fut.await?.map(|item| (pos, item))) }
            }))
            .await?;
            items.extend(checked.into_iter().flatten());
            if items.len() > first {
                items.truncate(first);
                return Ok(Page { items, has_next: true });
            }
            if exhausted {
                return Ok(Page { items, has_next: false });
            }
        }
    }

    async fn get_watch(&self, user: &UserId, movie: MovieId) -> Result<Option<WatchlistEntry>, StoreError> {
        let result = self.unpaged(&self.statements.get_watch, (user.as_str(), movie.0 as i64)).await?;
        let row = result
            .into_rows_result()
            .map_err(driver_error)?
            .maybe_first_row::<(i64,)>()
            .map_err(decode_error)?;
        Ok(row.map(|(at,)| WatchlistEntry { movie, added_at_ms: at as u64 }))
    }

    /// Adds to the watchlist; the caller checked that the movie exists.
    pub(crate) async fn add_to_watchlist(
        &self,
        user: &UserId,
        movie: MovieId,
    ) -> Result<WatchlistEntry, StoreError> {
        if let Some(entry) = self.get_watch(user, movie).await? {
            return Ok(entry);
        }
        let at = now_ms();
        let u = user.as_str();
        let mut batch = logged();
        batch.append_statement(self.statements.put_watch.clone());
        batch.append_statement(self.statements.put_watch_time.clone());
        let pos = encode(Position { key: inverted(at), id: movie.0 });
        self.run_batch(&batch, ((u, movie.0 as i64, at as i64), (u, pos))).await?;
        Ok(WatchlistEntry { movie, added_at_ms: at })
    }

    pub(crate) async fn remove_from_watchlist(
        &self,
        user: &UserId,
        movie: MovieId,
    ) -> Result<bool, StoreError> {
        let Some(entry) = self.get_watch(user, movie).await? else { return Ok(false) };
        let u = user.as_str();
        let mut batch = logged();
        batch.set_timestamp(Some(write_timestamp(now_ms().max(entry.added_at_ms + 1))));
        batch.append_statement(self.statements.del_watch.clone());
        batch.append_statement(self.statements.del_watch_time.clone());
        let pos = encode(Position { key: inverted(entry.added_at_ms), id: movie.0 });
        self.run_batch(&batch, ((u, movie.0 as i64), (u, pos))).await?;
        Ok(true)
    }

    pub(crate) async fn watchlist_page(
        &self,
        user: &UserId,
        page: UserPage,
    ) -> Result<Page<WatchlistEntry>, StoreError> {
        plan::check_user_page(page)?;
        let partition = vec![CqlValue::Text(user.as_str().to_owned())];
        let mut cursor: Cursor<'_, (Vec<u8>,)> =
            Cursor::new(&self.statements.watch_page, partition, page.after, page.first + 1);
        self.checked_page(page.first, &mut cursor, |pos, _| async move {
            let current = self.get_watch(user, MovieId(pos.id)).await?;
            Ok(current.filter(|e| inverted(e.added_at_ms) == pos.key))
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reconciler_continues_its_region_run_unless_the_log_no_longer_reaches_it() {
        let last = Place { slot: Some(1_000), began: Some(400), gap_from: Some(300) };
        // The last one's slowest look was at 1,000: the same run, caught up from there, whether
        // this one would start before it or after it (nobody looked at 1,000 to 1,099).
        assert_eq!(last.run_from(0, 925), last);
        assert_eq!(last.run_from(0, 1_100), last);
        // More than a day ago: the log no longer holds it, a new run after a gap.
        assert_eq!(
            last.run_from(1_001, 90_000),
            Place { slot: None, began: Some(90_000), gap_from: Some(1_000) }
        );
        // The region's first reconciler: a run with nothing before it.
        assert_eq!(Place::default().run_from(0, 50), Place { slot: None, began: Some(50), gap_from: None });
    }

    #[test]
    fn handled_seconds_are_kept_as_ranges() {
        let seconds: std::collections::BTreeSet<i64> = [5, 6, 7, 9, 12, 13].into();
        assert_eq!(to_ranges(&seconds), "5-7,9-9,12-13");
        assert_eq!(from_ranges(&to_ranges(&seconds)), seconds);
        assert!(to_ranges(&Default::default()).is_empty() && from_ranges("").is_empty());
        assert_eq!(from_ranges("4-5,x,7-"), [4, 5].into(), "what does not parse is handled again");
        // A row no build writes cannot make a reader hold more than a day of seconds.
        assert_eq!(from_ranges("0-9223372036854775807").len(), MARKS_WAITED_SLOTS as usize);
        // Past the bound the newest are dropped (handled again by a new holder: never missed).
        let scattered: std::collections::BTreeSet<i64> = (0..1_000).map(|s| s * 2).collect();
        let kept = from_ranges(&to_ranges(&scattered));
        assert_eq!(kept.len(), MAX_HANDLED_RANGES);
        assert!(kept.iter().all(|s| scattered.contains(s)) && kept.first() == scattered.first());
    }

    #[test]
    fn readers_skip_only_the_seconds_no_look_will_mark() {
        let first_run = Place { slot: Some(90), began: Some(60), gap_from: None };
        assert_eq!(first_run.unmarkable_until(40), Some(60), "before the region's first run");
        assert_eq!(first_run.unmarkable_until(60), None);
        let after_gap = Place { slot: Some(1_200), began: Some(1_100), gap_from: Some(1_000) };
        assert_eq!(after_gap.unmarkable_until(1_000), Some(1_100), "in the gap");
        assert_eq!(after_gap.unmarkable_until(1_050), Some(1_100), "in the gap");
        // Before the gap the last run looked (a partition's seconds): their marks may still be
        // on their way in hints, so the reader waits for them.
        assert_eq!(after_gap.unmarkable_until(999), None);
        assert_eq!(after_gap.unmarkable_until(1_150), None);
        assert_eq!(Place::default().unmarkable_until(5), None, "a region that never ran a reconciler");
    }

    #[test]
    fn a_failed_write_is_re_derived_at_each_time_after_the_batchlog_laps() {
        // The first time is scheduled with one more to come, then none.
        let mut at = AFTER_FAILED_BATCH_MS[0];
        let mut left = AFTER_FAILED_BATCH_MS.len() - 1;
        let mut times = vec![at];
        while let Some(after) = next_resettle(left) {
            at += after;
            left -= 1;
            times.push(at);
        }
        assert_eq!(times, AFTER_FAILED_BATCH_MS);
        assert!(AFTER_FAILED_BATCH_MS[0] > BATCHLOG_MS, "after the reconciler's last look");
    }
}
