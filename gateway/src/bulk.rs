//! The bulk commands behind `gateway seed`, `gateway import imdb`, `gateway export` and the
//! demo seeding on first start: they drive the seeder, the importer and the exporter through
//! the configured backend's [`BulkLoad`] and draw progress bars.

use std::path::Path;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};
use marquee_store::bulk::imdb::{self, ImportReport};
use marquee_store::bulk::seed::{self, SeedOptions};
use marquee_store::bulk::{BulkLoad, CatalogSink, ExportStats, Progress};
use marquee_store::{CatalogStats, StoreError};

use crate::telemetry::PROGRESS;

/// Turns store progress events into progress bars on stderr (hidden when not a terminal). A
/// phase's bar is cleared when it ends and a log line says what it did, so the terminal shows
/// log lines and at most one live bar below them.
struct Bars {
    bar: Option<(ProgressBar, &'static str, Instant)>,
}

impl Bars {
    fn new() -> Bars {
        Bars { bar: None }
    }

    /// Ends the current phase, if any.
    fn end_phase(&mut self) {
        if let Some((bar, phase, started)) = self.bar.take() {
            PROGRESS.clear();
            let (done, seconds) = (bar.position(), started.elapsed().as_secs_f64());
            tracing::info!(phase, done, seconds, "load phase finished");
        }
    }

    fn update(&mut self, event: Progress) {
        match event {
            Progress::Phase { name, total } => {
                self.end_phase();
                tracing::info!(phase = name, total, "load phase started");
                let bar = if total > 0 {
                    let bar = ProgressBar::new(total);
                    if let Ok(style) = ProgressStyle::with_template(
                        "{prefix:>12} [{bar:40}] {human_pos}/{human_len} ({per_sec}, eta {eta})",
                    ) {
                        bar.set_style(style.progress_chars("=> "));
                    }
                    bar
                } else {
                    let bar = ProgressBar::new_spinner();
                    if let Ok(style) = ProgressStyle::with_template("{prefix:>12} {spinner} {elapsed}") {
                        bar.set_style(style);
                    }
                    bar.enable_steady_tick(Duration::from_millis(200));
                    bar
                };
                bar.set_prefix(name);
                self.bar = Some((PROGRESS.show(bar), name, Instant::now()));
            }
            Progress::Advance { done } => {
                if let Some((bar, _, _)) = &self.bar {
                    bar.set_position(done);
                }
            }
        }
    }

    fn finish(mut self) {
        self.end_phase();
    }
}

/// Runs one bulk load into a fresh sink of `bulk`, with progress bars.
fn load<T>(
    bulk: &dyn BulkLoad,
    source: &str,
    run: impl FnOnce(Box<dyn CatalogSink>, &mut dyn FnMut(Progress)) -> Result<T, StoreError>,
) -> Result<(T, f64), StoreError> {
    let started = Instant::now();
    let sink = bulk.sink(source)?;
    let mut bars = Bars::new();
    let out = run(sink, &mut |e| bars.update(e))?;
    bars.finish();
    Ok((out, started.elapsed().as_secs_f64()))
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
    let source = format!("imdb {}", dir.display());
    let (report, seconds) = load(bulk, &source, |sink, progress| imdb::import(dir, sink, progress))?;
    let (movies, people, bad_rows) = (report.stats.movies, report.stats.people, report.bad_rows());
    tracing::info!(movies, people, bad_rows, seconds, "imported IMDb dataset");
    Ok(report)
}

/// Writes the current catalog to `out_dir` as PostgreSQL `COPY` files (movie, person, credit),
/// with progress bars.
pub fn export(bulk: &dyn BulkLoad, out_dir: &Path) -> Result<ExportStats, StoreError> {
    let started = Instant::now();
    let mut bars = Bars::new();
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
