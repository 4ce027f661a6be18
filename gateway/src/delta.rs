//! Catalog deltas (`gateway import imdb --dir DIR --incremental`): the day's changed IMDb rows
//! and removed ids, applied to the catalog being served through the store's catalog writes, so
//! every cache and edge drops what changed (`crate::changes`), with no reload and no restart.
//!
//! Reading (`marquee_store::bulk::imdb::read_delta`) checks every row as a full import does;
//! applying merges what a delta leaves out and IMDb does not carry (a title keeps its
//! synopsis, poster, language and, in the same year, release date; a known person keeps the
//! popularity the catalog gave them; a new one counts the delta's credits), checks every unit
//! first, and then applies in units of [`UNIT`] changes: people first (so new credits
//! name people who exist), then titles, then removals. An interrupted delta is re-run whole:
//! what was applied compares equal and writes nothing, so it converges.
//!
//! Who applies it: the embedded store's running gateway, which holds the data directory; the
//! command hands the delta over through the directory's spool (`deltas/` in the data
//! directory, made by the gateway, owner and group only): it reads the delta itself first
//! (a delta that does not read is refused at once), copies the files into `<n>.partial`,
//! renames that to `<n>.ready`, and waits. The gateway claims each `*.ready` directory in name
//! order by renaming it `<n>.applying` ([`follow_spool`]), applies it, writes `report.txt` into
//! it and renames it `<n>.done` (or `.failed`). A delta the gateway could not apply for a
//! store failure goes back to `.ready` and is tried again, at most [`SPOOL_ATTEMPTS`] times;
//! one it was applying when it stopped is applied again when it starts. A command that gives
//! up waiting withdraws its delta (`<n>.withdrawn`) unless the gateway has claimed it. With no
//! gateway running, the command applies the delta itself (no cache or edge is told then: edges
//! keep what they hold until its `s-maxage`).
//!
//! On ScyllaDB the command applies the delta itself, resting between units as long as each
//! took ([`Share::HALF`]), so editors' changes get the one writer's lock between them; every
//! unit is listed in the catalog's change log, which the gateways of every region follow to
//! drop what it changed (`crate::changes`).

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use marquee_store::bulk::imdb::{Delta, ImportReport, read_delta};
use marquee_store::writes::MAX_CHANGES;
use marquee_store::{
    Applied, CatalogChanges, CatalogWrites, Edit, MovieId, MovieRecord, PersonId, StoreError,
};

/// The spool directory inside an embedded data directory.
pub const SPOOL_DIR: &str = "deltas";
/// How often a gateway looks into its spool.
const SPOOL_EVERY: Duration = Duration::from_secs(1);
/// The report a gateway writes into each delta it applied.
pub const REPORT_FILE: &str = "report.txt";
/// Who handed the delta over (the command's `USER`), for the audit records.
const SUBMITTER_FILE: &str = "submitted-by";
/// How many times a delta that met a store failure is tried before it is marked failed.
pub const SPOOL_ATTEMPTS: u32 = 5;
/// Changes per apply (each one transaction and one durable commit): small, so each apply is
/// short and the store's readers beside it keep their latency; the store takes up to
/// [`MAX_CHANGES`].
const UNIT: usize = 100;

/// The share of one core a delta's work may take: after each step (a batch of reads, a
/// unit applied) it waits so that its steps take at most this share of the time, and the
/// requests served beside it keep theirs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Share(u8);

impl Share {
    /// No waiting: a delta applied with no gateway serving.
    pub const ALL: Share = Share(100);

    /// Resting as long as each step took: a delta applied to a shared store, whose one
    /// writer's lock editors' changes wait for.
    pub const HALF: Share = Share(50);

    /// `percent` of one core, 1 to 100.
    pub fn percent(percent: u8) -> Share {
        Share(percent.clamp(1, 100))
    }

    /// Waits after a step that began at `started`.
    async fn rest_after(self, started: std::time::Instant) {
        let rest = self.rest_for(started.elapsed());
        if !rest.is_zero() {
            tokio::time::sleep(rest).await;
        }
    }

    /// The rest that keeps a step that took `busy` to this share.
    fn rest_for(self, busy: Duration) -> Duration {
        busy.mul_f64(f64::from(100 - self.0) / f64::from(self.0))
    }
}

/// What applying a delta did.
#[derive(Clone, Debug, Default)]
pub struct DeltaReport {
    /// Rows read, per file, with the bad ones.
    pub files: ImportReport,
    /// Titles added or changed.
    pub movies: u64,
    /// People added or changed.
    pub people: u64,
    /// Titles removed (listed in `removed.tsv`, or no longer movies).
    pub removed_movies: u64,
    /// People removed.
    pub removed_people: u64,
    /// Records identical to the catalog's: nothing written.
    pub unchanged: u64,
    /// People in `name.basics` neither in the catalog nor credited by the delta.
    pub ignored_people: u64,
    /// Ids in `removed.tsv` the catalog did not have.
    pub unknown_removals: Vec<String>,
    /// People the delta's credits name who are neither in the catalog nor in the delta's
    /// `name.basics`: those credits show no person.
    pub unknown_credited: Vec<String>,
    /// Units applied (each one transaction).
    pub applies: u64,
}

impl fmt::Display for DeltaReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "applied a delta in {} units: {} titles changed, {} people changed, {} titles removed, {} people removed, {} unchanged",
            self.applies, self.movies, self.people, self.removed_movies, self.removed_people, self.unchanged
        )?;
        if self.ignored_people > 0 {
            writeln!(
                f,
                "  {} people ignored (not in the catalog and credited nowhere in the delta)",
                self.ignored_people
            )?;
        }
        for (what, ids) in [
            ("removal of ids the catalog does not have", &self.unknown_removals),
            (
                "credited people in neither the catalog nor the delta's name.basics (their credits show no person)",
                &self.unknown_credited,
            ),
        ] {
            if ids.is_empty() {
                continue;
            }
            let shown: Vec<&str> = ids.iter().take(20).map(String::as_str).collect();
            let more = ids.len().saturating_sub(shown.len());
            write!(f, "  {what}: {}", shown.join(" "))?;
            if more > 0 {
                write!(f, " ... and {more} more")?;
            }
            writeln!(f)?;
        }
        for file in &self.files.files {
            // "applied" rather than "imported": the same counts, for a delta.
            write!(f, "{file:#}")?;
        }
        Ok(())
    }
}

impl DeltaReport {
    fn add(&mut self, applied: &Applied) {
        self.applies += 1;
        self.movies += applied.movies.len() as u64;
        self.people += applied.people.len() as u64;
        self.removed_movies += applied.removed_movies.len() as u64;
        self.removed_people += applied.removed_people.len() as u64;
        self.unchanged += applied.unchanged;
    }
}

/// Applies the delta in `dir` through `edits` on behalf of `edit`, reporting progress as
/// (units done, units in all).
pub async fn apply(
    dir: &Path,
    edits: &dyn CatalogWrites,
    edit: Edit,
    share: Share,
    progress: &mut (dyn FnMut(u64, u64) + Send),
) -> Result<DeltaReport, StoreError> {
    let path = dir.to_owned();
    let started = std::time::Instant::now();
    let delta =
        tokio::task::spawn_blocking(move || read_delta(&path)).await.map_err(StoreError::backend)??;
    share.rest_after(started).await;
    apply_read(delta, edits, edit, share, progress).await
}

/// `record` as the delta gives it, keeping what IMDb does not carry from `current`.
fn merged(mut record: MovieRecord, current: Option<MovieRecord>) -> MovieRecord {
    if let Some(current) = current {
        let (new, old) = (&mut record.movie, current.movie);
        new.overview = new.overview.take().or(old.overview);
        new.poster_path = new.poster_path.take().or(old.poster_path);
        new.original_language = new.original_language.take().or(old.original_language);
        if new.release_date.is_none() {
            new.release_date = old.release_date.filter(|d| Some(d.year) == new.year);
        }
    }
    record
}

/// Applies a delta already read.
async fn apply_read(
    delta: Delta,
    edits: &dyn CatalogWrites,
    edit: Edit,
    share: Share,
    progress: &mut (dyn FnMut(u64, u64) + Send),
) -> Result<DeltaReport, StoreError> {
    let Delta { movies, not_movies, people, removed_movies, removed_people, report } = delta;
    let mut out = DeltaReport { files: report, ..DeltaReport::default() };
    let credited: HashMap<PersonId, u32> =
        movies.iter().flat_map(|r| &r.credits).fold(HashMap::new(), |mut n, c| {
            *n.entry(c.person).or_default() += 1;
            n
        });
    // People: a known one keeps the catalog's popularity; a new one must be credited here.
    let mut merged_people = Vec::with_capacity(people.len());
    for chunk in people.chunks(MAX_CHANGES) {
        let ids: Vec<PersonId> = chunk.iter().map(|p| p.id).collect();
        let started = std::time::Instant::now();
        let found = edits.person_records(&ids).await?;
        share.rest_after(started).await;
        for (mut person, current) in chunk.iter().cloned().zip(found) {
            match (current, credited.get(&person.id)) {
                (Some(current), _) => person.popularity = current.popularity,
                (None, Some(&credits)) => person.popularity = credits as f32,
                (None, None) => {
                    out.ignored_people += 1;
                    continue;
                }
            }
            merged_people.push(person);
        }
    }
    // Credited people who will exist nowhere: reported.
    let added: std::collections::HashSet<PersonId> = merged_people.iter().map(|p| p.id).collect();
    let mut named: Vec<PersonId> = credited.keys().copied().filter(|p| !added.contains(p)).collect();
    named.sort_unstable();
    for chunk in named.chunks(MAX_CHANGES) {
        let started = std::time::Instant::now();
        let found = edits.person_records(chunk).await?;
        share.rest_after(started).await;
        for (id, found) in chunk.iter().zip(found) {
            if found.is_none() {
                out.unknown_credited.push(id.to_string());
            }
        }
    }
    // Every unit, checked before the first is applied.
    let mut units: Vec<CatalogChanges> = Vec::new();
    for chunk in merged_people.chunks(UNIT) {
        units.push(CatalogChanges { people: chunk.to_vec(), ..CatalogChanges::default() });
    }
    for chunk in movies.chunks(UNIT) {
        let ids: Vec<MovieId> = chunk.iter().map(|r| r.movie.id).collect();
        let started = std::time::Instant::now();
        let current = edits.records(&ids).await?;
        share.rest_after(started).await;
        let records = chunk.iter().cloned().zip(current).map(|(r, c)| merged(r, c)).collect();
        units.push(CatalogChanges { movies: records, ..CatalogChanges::default() });
    }
    // Removals: listed ids are reported when unknown; titles that stopped being movies are
    // removed only where the catalog has them (most never were).
    let listed: std::collections::HashSet<String> = removed_movies
        .iter()
        .map(ToString::to_string)
        .chain(removed_people.iter().map(ToString::to_string))
        .collect();
    let mut removals: Vec<(bool, u64)> = removed_movies
        .iter()
        .chain(&not_movies)
        .map(|m| (true, m.0))
        .chain(removed_people.iter().map(|p| (false, p.0)))
        .collect();
    removals.sort_unstable();
    removals.dedup();
    for chunk in removals.chunks(UNIT) {
        let mut changes = CatalogChanges::default();
        for &(movie, id) in chunk {
            if movie {
                changes.removed_movies.push(MovieId(id));
            } else {
                changes.removed_people.push(PersonId(id));
            }
        }
        units.push(changes);
    }
    for unit in &units {
        unit.check()?;
    }
    let total = units.len() as u64;
    progress(0, total);
    for (done, unit) in units.into_iter().enumerate() {
        let started = std::time::Instant::now();
        let applied = edits.apply(unit, edit.clone()).await?;
        share.rest_after(started).await;
        out.add(&applied);
        out.unknown_removals.extend(applied.unknown_removals.into_iter().filter(|id| listed.contains(id)));
        progress(done as u64 + 1, total);
    }
    Ok(out)
}

/// Whether `error` says an embedded data directory is held by a running gateway.
pub fn is_held_by_a_gateway(error: &StoreError) -> bool {
    matches!(
        error,
        StoreError::Backend(e)
            if matches!(e.downcast_ref(), Some(marquee_store_embedded::EmbeddedError::Locked(_)))
    )
}

fn io(what: String) -> impl FnOnce(std::io::Error) -> StoreError {
    move |e| StoreError::io(what, e)
}

/// Hands the delta in `dir` to the gateway serving `data_dir` through its spool and waits for
/// its report (see the module docs).
pub async fn hand_over(dir: &Path, data_dir: &Path, wait: Duration) -> Result<String, StoreError> {
    let spool = data_dir.join(SPOOL_DIR);
    // A delta that does not read is refused here, before the gateway sees it.
    let source = dir.to_owned();
    tokio::task::spawn_blocking(move || read_delta(&source)).await.map_err(StoreError::backend)??;
    if !spool.is_dir() {
        return Err(StoreError::InvalidInput(format!(
            "{} has no delta spool: is a gateway of this version serving {}?",
            spool.display(),
            data_dir.display()
        )));
    }
    let stamp =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
    let name = format!("{stamp:024}-{}", std::process::id());
    let partial = spool.join(format!("{name}.partial"));
    std::fs::create_dir(&partial).map_err(io(format!("creating {}", partial.display())))?;
    let copied = (|| -> Result<(), StoreError> {
        for entry in std::fs::read_dir(dir).map_err(io(format!("reading {}", dir.display())))?.flatten() {
            // The files themselves, also through symbolic links.
            if entry.path().is_file() {
                std::fs::copy(entry.path(), partial.join(entry.file_name()))
                    .map_err(io(format!("copying {}", entry.path().display())))?;
            }
        }
        let user = std::env::var("USER").ok().filter(|u| !u.is_empty()).unwrap_or_else(|| "operator".into());
        std::fs::write(partial.join(SUBMITTER_FILE), user).map_err(io("writing the submitter".into()))
    })();
    if let Err(error) = copied {
        let _ = std::fs::remove_dir_all(&partial);
        return Err(error);
    }
    let ready = spool.join(format!("{name}.ready"));
    std::fs::rename(&partial, &ready).map_err(io(format!("handing over {}", ready.display())))?;
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        for (suffix, ok) in [("done", true), ("failed", false)] {
            let finished = spool.join(format!("{name}.{suffix}"));
            if finished.is_dir() {
                let report = std::fs::read_to_string(finished.join(REPORT_FILE)).unwrap_or_default();
                return if ok {
                    Ok(report)
                } else {
                    Err(StoreError::InvalidInput(format!("the gateway did not apply the delta: {report}")))
                };
            }
        }
        if tokio::time::Instant::now() >= deadline {
            let withdrawn = spool.join(format!("{name}.withdrawn"));
            let message = if std::fs::rename(&ready, &withdrawn).is_ok() {
                format!(
                    "no gateway took the delta within {}s; it was withdrawn ({}), nothing applied",
                    wait.as_secs(),
                    withdrawn.display()
                )
            } else {
                format!(
                    "the gateway is still applying the delta after {}s; its report will be in {}",
                    wait.as_secs(),
                    spool.join(format!("{name}.done")).join(REPORT_FILE).display()
                )
            };
            return Err(StoreError::Unavailable(message.into()));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The deltas waiting in `spool` with `suffix` (not through symbolic links), in name order.
fn waiting(spool: &Path, suffix: &str) -> Vec<PathBuf> {
    let mut found: Vec<PathBuf> = std::fs::read_dir(spool)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == suffix))
        .collect();
    found.sort();
    found
}

/// Makes the spool, for the owner and the group only.
fn make_spool(spool: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    if !spool.is_dir() {
        std::fs::create_dir_all(spool)?;
        std::fs::set_permissions(spool, std::fs::Permissions::from_mode(0o770))?;
    }
    Ok(())
}

/// Ends a delta's stay in the spool: its report, and its final name.
fn finish(dir: &Path, report: &str, suffix: &str) {
    if let Err(error) = std::fs::write(dir.join(REPORT_FILE), report) {
        tracing::error!(delta = %dir.display(), %error, "writing a catalog delta's report failed");
    }
    let target = dir.with_extension(suffix);
    if let Err(error) = std::fs::rename(dir, &target) {
        tracing::error!(delta = %dir.display(), %error, "marking a catalog delta {suffix} failed; it stays claimed and is not applied again");
    }
}

/// Applies every delta handed to this gateway's spool in `data_dir`, for as long as the
/// returned task runs (see the module docs).
pub fn follow_spool(
    data_dir: &Path,
    edits: Arc<dyn CatalogWrites>,
    share: Share,
) -> tokio::task::JoinHandle<()> {
    let spool = data_dir.join(SPOOL_DIR);
    if let Err(error) = make_spool(&spool) {
        tracing::warn!(spool = %spool.display(), %error, "the delta spool could not be made; deltas cannot be handed to this gateway");
    }
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval(SPOOL_EVERY);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut attempts: HashMap<PathBuf, u32> = HashMap::new();
        // What this gateway was applying when it stopped is applied again, first.
        let mut resumed = waiting(&spool, "applying");
        loop {
            ticks.tick().await;
            let mut claimed = std::mem::take(&mut resumed);
            for ready in waiting(&spool, "ready") {
                let applying = ready.with_extension("applying");
                match std::fs::rename(&ready, &applying) {
                    Ok(()) => claimed.push(applying),
                    Err(error) => {
                        tracing::warn!(delta = %ready.display(), %error, "claiming a catalog delta failed")
                    }
                }
            }
            for dir in claimed {
                let submitter = std::fs::read_to_string(dir.join(SUBMITTER_FILE))
                    .ok()
                    .map(|u| u.trim().chars().filter(|c| !c.is_control()).take(64).collect::<String>())
                    .filter(|u| !u.is_empty())
                    .unwrap_or_else(|| "operator".into());
                let edit = Edit { editor: submitter, action: "import imdb --incremental".into() };
                let started = std::time::Instant::now();
                match apply(&dir, edits.as_ref(), edit, share, &mut |_, _| {}).await {
                    Ok(report) => {
                        tracing::info!(
                            delta = %dir.display(),
                            movies = report.movies,
                            people = report.people,
                            removed = report.removed_movies,
                            seconds = started.elapsed().as_secs_f64(),
                            "applied a catalog delta"
                        );
                        finish(&dir, &report.to_string(), "done");
                    }
                    Err(error) if error.is_retryable() && !matches!(error, StoreError::Closed) => {
                        let tries = attempts.entry(dir.clone()).or_default();
                        *tries += 1;
                        if *tries >= SPOOL_ATTEMPTS {
                            tracing::warn!(delta = %dir.display(), %error, "a catalog delta failed {SPOOL_ATTEMPTS} times; marked failed");
                            finish(
                                &dir,
                                &format!("failed {SPOOL_ATTEMPTS} times; the last time: {error}"),
                                "failed",
                            );
                        } else {
                            tracing::warn!(delta = %dir.display(), %error, "applying a catalog delta failed; trying it again");
                            let _ = std::fs::rename(&dir, dir.with_extension("ready"));
                        }
                    }
                    Err(StoreError::Closed) => return,
                    Err(error) => {
                        tracing::warn!(delta = %dir.display(), %error, "refused a catalog delta");
                        finish(&dir, &error.to_string(), "failed");
                    }
                }
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_share_rests_for_the_rest_of_the_time() {
        let step = Duration::from_millis(100);
        assert_eq!(Share::percent(25).rest_for(step), Duration::from_millis(300));
        assert_eq!(Share::percent(50).rest_for(step), step);
        assert_eq!(Share::ALL.rest_for(step), Duration::ZERO);
        assert_eq!(Share::percent(0), Share::percent(1));
        assert_eq!(Share::percent(1).rest_for(step), Duration::from_millis(9_900));
    }
}
