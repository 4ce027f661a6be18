//! The bulk commands behind `gateway seed`, `gateway import imdb`, `gateway export` and the
//! demo seeding on first start: they drive the seeder, the importer and the exporter through
//! the configured backend's [`BulkLoad`] and draw progress bars.

use std::path::Path;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};
use marquee_store::bulk::imdb::{self, ImportReport};
use marquee_store::bulk::seed::{self, SeedOptions};
use marquee_store::bulk::{BulkLoad, CatalogSink, ExportStats, Progress, TableWritten};
use marquee_store::{CatalogStats, StoreError};

use crate::telemetry::PROGRESS;

/// Turns store progress events into progress bars on stderr (hidden when not a terminal). A
/// phase's bar is cleared when it ends and a log line says what it did, so the terminal shows
/// log lines and at most one live bar below them.
struct Bars {
    /// The current phase's bar, name and start, and whether it counts its items (a phase of
    /// unknown size that never advances, such as building indexes, counts nothing).
    bar: Option<(ProgressBar, &'static str, Instant, bool)>,
    /// Whether each bar has lines under it for the backend's tables.
    tables: bool,
}

impl Bars {
    fn new(tables: bool) -> Bars {
        Bars { bar: None, tables }
    }

    /// Ends the current phase, if any.
    fn end_phase(&mut self) {
        if let Some((bar, phase, started, counted)) = self.bar.take() {
            PROGRESS.clear();
            let seconds = started.elapsed().as_secs_f64();
            if counted {
                tracing::info!(phase, done = bar.position(), seconds, "load phase finished");
            } else {
                tracing::info!(phase, seconds, "load phase finished");
            }
        }
    }

    fn update(&mut self, event: Progress) {
        match event {
            Progress::Phase { name, total } => {
                self.end_phase();
                if total > 0 {
                    tracing::info!(phase = name, total, "load phase started");
                } else {
                    tracing::info!(phase = name, "load phase started");
                }
                let bar = if total > 0 {
                    let bar = ProgressBar::new(total);
                    let template = if self.tables {
                        "{prefix:>12} [{bar:40}] {human_pos}/{human_len} ({per_sec}, eta {eta})\n{msg}"
                    } else {
                        "{prefix:>12} [{bar:40}] {human_pos}/{human_len} ({per_sec}, eta {eta})"
                    };
                    if let Ok(style) = ProgressStyle::with_template(template) {
                        bar.set_style(style.progress_chars("=> "));
                    }
                    bar
                } else {
                    let bar = ProgressBar::new_spinner();
                    let template = if self.tables {
                        "{prefix:>12} {spinner} {elapsed}\n{msg}"
                    } else {
                        "{prefix:>12} {spinner} {elapsed}"
                    };
                    if let Ok(style) = ProgressStyle::with_template(template) {
                        bar.set_style(style);
                    }
                    bar.enable_steady_tick(Duration::from_millis(200));
                    bar
                };
                bar.set_prefix(name);
                self.bar = Some((PROGRESS.show(bar), name, Instant::now(), total > 0));
            }
            Progress::Advance { done } => {
                if let Some((bar, _, _, counted)) = &mut self.bar {
                    bar.set_position(done);
                    *counted = true;
                }
            }
        }
    }

    fn finish(mut self) {
        self.end_phase();
    }
}

/// How often the lines of a backend's tables under the bar are redrawn.
const TABLES_EVERY: Duration = Duration::from_millis(500);

/// Runs one bulk load into a fresh sink of `bulk`, with progress bars, and, for a backend
/// that writes table by table (ScyllaDB), a line per table under the bar with the rows and
/// statements written and their rates; each table's totals are logged when the load ends.
fn load<T>(
    bulk: &dyn BulkLoad,
    source: &str,
    run: impl FnOnce(Box<dyn CatalogSink>, &mut dyn FnMut(Progress)) -> Result<T, StoreError>,
) -> Result<(T, f64), StoreError> {
    let started = Instant::now();
    let sink = bulk.sink(source)?;
    let base = bulk.written();
    let mut bars = Bars::new(base.is_some());
    let done = std::sync::atomic::AtomicBool::new(false);
    let out = std::thread::scope(|scope| {
        if let Some(base) = &base {
            let done = &done;
            scope.spawn(move || {
                while !done.load(std::sync::atomic::Ordering::Relaxed) {
                    std::thread::sleep(TABLES_EVERY);
                    if let Some(now) = bulk.written() {
                        PROGRESS.set_message(table_lines(&written_since(&now, base), started.elapsed()));
                    }
                }
            });
        }
        let out = run(sink, &mut |e| bars.update(e));
        done.store(true, std::sync::atomic::Ordering::Relaxed);
        out
    })?;
    bars.finish();
    let seconds = started.elapsed().as_secs_f64();
    if let (Some(base), Some(now)) = (&base, bulk.written()) {
        for t in written_since(&now, base) {
            let (rows_per_sec, statements_per_sec) = (t.rows as f64 / seconds, t.statements as f64 / seconds);
            tracing::info!(
                table = t.table,
                rows = t.rows,
                statements = t.statements,
                rows_per_sec = rows_per_sec.round(),
                statements_per_sec = statements_per_sec.round(),
                "table written"
            );
        }
    }
    Ok((out, seconds))
}

/// What each table gained since `base` (the backend's figures are cumulative).
fn written_since(now: &[TableWritten], base: &[TableWritten]) -> Vec<TableWritten> {
    now.iter()
        .map(|t| {
            let before = base.iter().find(|b| b.table == t.table).copied().unwrap_or_default();
            TableWritten {
                table: t.table,
                rows: t.rows.saturating_sub(before.rows),
                statements: t.statements.saturating_sub(before.statements),
            }
        })
        .collect()
}

/// One line per table: rows and statements written, and their rates over `elapsed`.
fn table_lines(tables: &[TableWritten], elapsed: Duration) -> String {
    let seconds = elapsed.as_secs_f64().max(0.001);
    tables
        .iter()
        .map(|t| {
            format!(
                "{:>22} {:>12} rows {:>9.0} rows/s {:>8.0} statements/s",
                t.table,
                t.rows,
                t.rows as f64 / seconds,
                t.statements as f64 / seconds
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Generates the demo catalog, replacing the current one atomically.
pub fn seed(bulk: &dyn BulkLoad, options: &SeedOptions) -> Result<CatalogStats, StoreError> {
    let source = format!("seed movies={} people={:?} seed={}", options.movies, options.people, options.seed);
    let (stats, seconds) = load(bulk, &source, |sink, progress| seed::seed(options, sink, progress))?;
    tracing::info!(
        movies = stats.movies,
        people = stats.people,
        seconds,
        into = bulk.location(),
        "seeded catalog"
    );
    Ok(stats)
}

/// Imports the IMDb dataset in `dir`, replacing the current catalog atomically.
pub fn import_imdb(bulk: &dyn BulkLoad, dir: &Path) -> Result<ImportReport, StoreError> {
    let source = format!("imdb {} {}", dir.display(), files_fingerprint(dir));
    let (report, seconds) = load(bulk, &source, |sink, progress| imdb::import(dir, sink, progress))?;
    let (movies, people, bad_rows) = (report.stats.movies, report.stats.people, report.bad_rows());
    tracing::info!(movies, people, bad_rows, seconds, "imported IMDb dataset");
    Ok(report)
}

/// The files of `dir` by name, size and modification time: part of an import's source, so a
/// rerun completes an unfinished import (skipping what it wrote) only from the same files.
fn files_fingerprint(dir: &Path) -> String {
    let mut files: Vec<String> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let meta = entry.metadata().ok().filter(std::fs::Metadata::is_file)?;
            let modified = meta.modified().ok()?.duration_since(std::time::UNIX_EPOCH).ok()?.as_secs();
            Some(format!("{}:{}:{modified}", entry.file_name().to_string_lossy(), meta.len()))
        })
        .collect();
    files.sort();
    files.join(",")
}

/// Writes the current catalog to `out_dir` as PostgreSQL `COPY` files (movie, person, credit),
/// with progress bars.
pub fn export(bulk: &dyn BulkLoad, out_dir: &Path) -> Result<ExportStats, StoreError> {
    let started = Instant::now();
    let mut bars = Bars::new(false);
    let stats = bulk.export(out_dir, &mut |e| bars.update(e))?;
    bars.finish();
    let seconds = started.elapsed().as_secs_f64();
    tracing::info!(stats.movies, stats.people, stats.credits, seconds, out = %out_dir.display(), "exported catalog");
    Ok(stats)
}

/// Seeds the demo catalog if there is none yet (`movies` = 0 refuses instead).
pub fn ensure_catalog(bulk: &dyn BulkLoad, movies: u64, seed: u64) -> Result<(), StoreError> {
    if bulk.has_catalog()? {
        return Ok(());
    }
    if movies == 0 {
        return Err(StoreError::NoCatalog(bulk.location()));
    }
    tracing::info!(movies, into = bulk.location(), "no catalog yet: seeding the demo catalog");
    self::seed(bulk, &SeedOptions { movies, people: None, seed })?;
    Ok(())
}
