//! The catalog commands behind `gateway seed`, `gateway import imdb`, `gateway export` and the
//! demo seeding on first start: they drive the store's seeder and importer and draw progress bars.

use std::path::Path;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};
use marquee_store::catalog::Progress;
use marquee_store::catalog::imdb::{self, ImportReport};
use marquee_store::catalog::seed::{self, SeedOptions};
use marquee_store::embedded::{
    CatalogBuilder, EmbeddedOptions, EmbeddedStore, ExportStats, catalog_bytes, has_catalog,
};
use marquee_store::{CatalogStats, StoreError};

use crate::telemetry::PROGRESS;

/// redb page cache for each of a catalog's three files while bulk loading (3 GiB in all).
const LOAD_CACHE_BYTES: usize = 1 << 30;

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

/// Runs one bulk load into a fresh builder for `data_dir`, with progress bars.
fn load<T>(
    data_dir: &Path,
    run: impl FnOnce(Box<CatalogBuilder>, &mut dyn FnMut(Progress)) -> Result<T, StoreError>,
) -> Result<(T, f64), StoreError> {
    let started = Instant::now();
    let builder = Box::new(CatalogBuilder::create(data_dir, LOAD_CACHE_BYTES)?);
    let mut bars = Bars::new();
    let out = run(builder, &mut |e| bars.update(e))?;
    bars.finish();
    Ok((out, started.elapsed().as_secs_f64()))
}

/// Generates the demo catalog into `data_dir`, replacing any catalog there atomically.
pub fn seed(data_dir: &Path, options: &SeedOptions) -> Result<CatalogStats, StoreError> {
    let (stats, seconds) = load(data_dir, |builder, progress| seed::seed(options, builder, progress))?;
    let bytes = catalog_bytes(data_dir);
    tracing::info!(movies = stats.movies, people = stats.people, seconds, bytes, "seeded catalog");
    Ok(stats)
}

/// Imports the IMDb dataset in `dir` into `data_dir`, replacing any catalog there atomically.
pub fn import_imdb(dir: &Path, data_dir: &Path) -> Result<ImportReport, StoreError> {
    let (report, seconds) = load(data_dir, |builder, progress| imdb::import(dir, builder, progress))?;
    let (movies, people, bad_rows) = (report.stats.movies, report.stats.people, report.bad_rows());
    tracing::info!(movies, people, bad_rows, seconds, "imported IMDb dataset");
    Ok(report)
}

/// Writes the catalog in `data_dir` to `out_dir` as PostgreSQL `COPY` files (movie, person,
/// credit), with progress bars. Needs the data directory to itself (a serving gateway holds it).
pub fn export(data_dir: &Path, out_dir: &Path) -> Result<ExportStats, StoreError> {
    let started = Instant::now();
    let store = EmbeddedStore::open(data_dir, &EmbeddedOptions::default())?;
    let mut bars = Bars::new();
    let stats = store.export_tsv(out_dir, &mut |e| bars.update(e))?;
    bars.finish();
    let seconds = started.elapsed().as_secs_f64();
    tracing::info!(stats.movies, stats.people, stats.credits, seconds, out = %out_dir.display(), "exported catalog");
    Ok(stats)
}

/// Seeds the demo catalog if `data_dir` has none (`movies` = 0 refuses instead).
pub fn ensure_catalog(data_dir: &Path, movies: u64, seed: u64) -> Result<(), StoreError> {
    if has_catalog(data_dir) {
        return Ok(());
    }
    if movies == 0 {
        return Err(StoreError::NoCatalog(data_dir.display().to_string()));
    }
    tracing::info!(movies, data_dir = %data_dir.display(), "no catalog yet: seeding the demo catalog");
    self::seed(data_dir, &SeedOptions { movies, people: None, seed })?;
    Ok(())
}
