//! Catalog deltas (`gateway import imdb --dir DIR --incremental`): the day's changed IMDb rows
//! and removed ids, applied to the catalog being served through the store's catalog writes, so
//! every cache and edge drops what changed (`crate::changes`), with no reload and no restart.
//!
//! Reading (`marquee_store::bulk::imdb::read_delta`) checks every row as a full import does;
//! applying merges what a delta leaves out (a known person keeps the popularity the catalog
//! gave them; a new one counts the delta's credits) and applies in units of at most
//! [`MAX_CHANGES`]: people first (so new credits name people who exist), then titles, then
//! removals. An interrupted delta is re-run whole: what was applied compares equal and writes
//! nothing, so it converges.
//!
//! Who applies it: whoever can write the store. A ScyllaDB keyspace is written by the command
//! itself. An embedded data directory is held by its running gateway, so the command hands the
//! delta over through the directory's spool (`deltas/` in the data directory): it copies the
//! files into `<name>.partial`, renames that to `<name>.ready`, and waits; the gateway picks
//! up every `*.ready` directory in name order ([`follow_spool`]), applies it, writes
//! `report.txt` into it and renames it `<name>.done` (or `.failed`). A gateway that stops
//! mid-delta applies it again when it starts.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use marquee_store::bulk::imdb::{Delta, ImportReport, read_delta};
use marquee_store::writes::MAX_CHANGES;
use marquee_store::{Applied, CatalogChanges, CatalogWrites, Edit, PersonId, StoreError};

/// The spool directory inside an embedded data directory.
pub const SPOOL_DIR: &str = "deltas";
/// How often a gateway looks into its spool.
const SPOOL_EVERY: Duration = Duration::from_secs(1);
/// The report a gateway writes into each delta it applied.
pub const REPORT_FILE: &str = "report.txt";

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
        if !self.unknown_removals.is_empty() {
            let shown: Vec<&str> = self.unknown_removals.iter().take(20).map(String::as_str).collect();
            let more = self.unknown_removals.len().saturating_sub(shown.len());
            write!(f, "  removal of ids the catalog does not have: {}", shown.join(" "))?;
            if more > 0 {
                write!(f, " ... and {more} more")?;
            }
            writeln!(f)?;
        }
        for file in &self.files.files {
            writeln!(
                f,
                "  {}: {} rows, {} applied, {} ignored, {} bad",
                file.file, file.rows, file.imported, file.ignored, file.bad
            )?;
            for bad in &file.bad_rows {
                writeln!(f, "    line {}: {}", bad.line, bad.reason)?;
            }
            if file.bad > file.bad_rows.len() as u64 {
                writeln!(f, "    ... and {} more", file.bad - file.bad_rows.len() as u64)?;
            }
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
    progress: &mut (dyn FnMut(u64, u64) + Send),
) -> Result<DeltaReport, StoreError> {
    let path = dir.to_owned();
    let delta =
        tokio::task::spawn_blocking(move || read_delta(&path)).await.map_err(StoreError::backend)??;
    apply_read(delta, edits, edit, progress).await
}

/// Applies a delta already read.
async fn apply_read(
    delta: Delta,
    edits: &dyn CatalogWrites,
    edit: Edit,
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
    let mut merged = Vec::with_capacity(people.len());
    for chunk in people.chunks(MAX_CHANGES) {
        let ids: Vec<PersonId> = chunk.iter().map(|p| p.id).collect();
        for (mut person, current) in chunk.iter().cloned().zip(edits.person_records(&ids).await?) {
            match (current, credited.get(&person.id)) {
                (Some(current), _) => person.popularity = current.popularity,
                (None, Some(&credits)) => person.popularity = credits as f32,
                (None, None) => {
                    out.ignored_people += 1;
                    continue;
                }
            }
            merged.push(person);
        }
    }
    let units = merged.len().div_ceil(MAX_CHANGES)
        + movies.len().div_ceil(MAX_CHANGES)
        + (removed_movies.len() + not_movies.len() + removed_people.len()).div_ceil(MAX_CHANGES);
    let units = units as u64;
    progress(0, units);
    let mut done = 0;
    let mut run = async |changes: CatalogChanges, out: &mut DeltaReport| -> Result<Applied, StoreError> {
        let applied = edits.apply(changes, edit.clone()).await?;
        out.add(&applied);
        done += 1;
        progress(done, units);
        Ok(applied)
    };
    for chunk in merged.chunks(MAX_CHANGES) {
        run(CatalogChanges { people: chunk.to_vec(), ..CatalogChanges::default() }, &mut out).await?;
    }
    for chunk in movies.chunks(MAX_CHANGES) {
        run(CatalogChanges { movies: chunk.to_vec(), ..CatalogChanges::default() }, &mut out).await?;
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
    for chunk in removals.chunks(MAX_CHANGES) {
        let mut changes = CatalogChanges::default();
        for &(movie, id) in chunk {
            if movie {
                changes.removed_movies.push(marquee_store::MovieId(id));
            } else {
                changes.removed_people.push(PersonId(id));
            }
        }
        let applied = run(changes, &mut out).await?;
        out.unknown_removals.extend(applied.unknown_removals.into_iter().filter(|id| listed.contains(id)));
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

/// Hands the delta in `dir` to the gateway serving `data_dir` through its spool and waits for
/// its report (see the module docs).
pub async fn hand_over(dir: &Path, data_dir: &Path, wait: Duration) -> Result<String, StoreError> {
    let spool = data_dir.join(SPOOL_DIR);
    let io = |what: String| move |e| StoreError::io(what, e);
    std::fs::create_dir_all(&spool).map_err(io(format!("creating {}", spool.display())))?;
    let stamp =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
    let name = format!("{stamp}");
    let partial = spool.join(format!("{name}.partial"));
    std::fs::create_dir(&partial).map_err(io(format!("creating {}", partial.display())))?;
    for entry in std::fs::read_dir(dir).map_err(io(format!("reading {}", dir.display())))?.flatten() {
        if entry.file_type().is_ok_and(|t| t.is_file()) {
            std::fs::copy(entry.path(), partial.join(entry.file_name()))
                .map_err(io(format!("copying {}", entry.path().display())))?;
        }
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
                    Err(StoreError::InvalidInput(format!("the gateway refused the delta: {report}")))
                };
            }
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(StoreError::Unavailable(
                format!(
                    "no gateway applied the delta within {}s; it stays in {} for the gateway to apply when it runs",
                    wait.as_secs(),
                    ready.display()
                )
                .into(),
            ));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The deltas waiting in `spool`, in name order.
fn ready(spool: &Path) -> Vec<PathBuf> {
    let mut ready: Vec<PathBuf> = std::fs::read_dir(spool)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_dir() && p.extension().is_some_and(|e| e == "ready"))
        .collect();
    ready.sort();
    ready
}

/// Applies every delta handed to this gateway's spool in `data_dir`, for as long as the
/// returned task runs (see the module docs).
pub fn follow_spool(data_dir: &Path, edits: Arc<dyn CatalogWrites>) -> tokio::task::JoinHandle<()> {
    let spool = data_dir.join(SPOOL_DIR);
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval(SPOOL_EVERY);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            for dir in ready(&spool) {
                let edit = Edit { editor: "operator".into(), action: "import imdb --incremental".into() };
                let started = std::time::Instant::now();
                let result = apply(&dir, edits.as_ref(), edit, &mut |_, _| {}).await;
                let (text, suffix) = match &result {
                    Ok(report) => {
                        tracing::info!(
                            delta = %dir.display(),
                            movies = report.movies,
                            people = report.people,
                            removed = report.removed_movies,
                            seconds = started.elapsed().as_secs_f64(),
                            "applied a catalog delta"
                        );
                        (report.to_string(), "done")
                    }
                    Err(error) if error.is_client_error() => {
                        tracing::warn!(delta = %dir.display(), %error, "refused a catalog delta");
                        (error.to_string(), "failed")
                    }
                    Err(error) => {
                        // The store failed: the delta stays ready and is applied again later.
                        tracing::warn!(delta = %dir.display(), %error, "applying a catalog delta failed; trying again");
                        break;
                    }
                };
                let _ = std::fs::write(dir.join(REPORT_FILE), text);
                let _ = std::fs::rename(&dir, dir.with_extension(suffix));
            }
        }
    })
}
