//! `bench live-catalog`: the catalog changed under load. The workload runs at a fixed rate
//! before, during and after a change, and the report gives each phase's latency and errors
//! and how long the change took:
//!
//! - `--change delta`: a delta of `--delta-titles` changed titles (with their credits, in
//!   IMDb's format, written by `bench` from the seeded catalog's generator) applied with
//!   `gateway import imdb --incremental`, which hands it to the serving gateway;
//! - `--change reload`: a whole new generation (`gateway seed` with another generator seed)
//!   loaded beside the serving gateway, which switches to it; the phase ends when it serves
//!   the new catalog.
//!
//! The change runs as the `gateway` binary's command over the data directory, so the gateway
//! under load can be any one serving it (started by `bench`, or in-process in the smoke test).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use marquee_store::bulk::seed::{Generator as Catalog, SeedOptions};
use marquee_store::{Department, MovieRecord};
use serde::Serialize;

use crate::load::Recorder;
use crate::report::{Machine, Report, TargetResult};
use crate::workload::Generator;
use crate::{Setup, prepare, settings, slice, warm};

/// What changes during the run.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Serialize)]
pub enum Change {
    /// A delta of changed titles, applied live.
    Delta,
    /// A new generation, loaded beside the gateway and switched to.
    Reload,
}

/// Settings of `bench live-catalog`.
#[derive(Clone, Debug, Serialize)]
pub struct LiveSpec {
    /// What changes.
    pub change: Change,
    /// Titles the delta changes.
    pub delta_titles: u64,
    /// The generator seed the served catalog was seeded with (`gateway seed --seed`).
    pub catalog_seed: u64,
    /// Length of the phases before and after the change.
    pub phase: Duration,
    /// Most time the change may take.
    pub change_timeout: Duration,
    /// The data directory the gateway serves.
    pub data_dir: PathBuf,
    /// The `gateway` binary that makes the change.
    pub gateway_bin: PathBuf,
}

/// IMDb's category for a credit's department (what `import imdb` maps back).
fn category(department: Department) -> &'static str {
    match department {
        Department::Acting => "actor",
        Department::Directing => "director",
        Department::Writing => "writer",
        Department::Production => "producer",
        Department::Sound => "composer",
        Department::Camera => "cinematographer",
        Department::Editing => "editor",
        Department::Art => "production_designer",
        Department::Crew => "miscellaneous",
    }
}

fn field(value: Option<String>) -> String {
    value.unwrap_or_else(|| "\\N".to_owned())
}

/// One title's rows: `title.basics`, `title.ratings`, `title.principals`.
fn rows(record: &MovieRecord, basics: &mut String, ratings: &mut String, principals: &mut String) {
    let m = &record.movie;
    let genres: Vec<&str> = m.genres.iter().map(|g| g.name()).collect();
    basics.push_str(&format!(
        "{}\tmovie\t{}\t{}\t0\t{}\t\\N\t{}\t{}\n",
        m.id,
        m.title,
        m.original_title.clone().unwrap_or_else(|| m.title.clone()),
        field(m.year.map(|y| y.to_string())),
        field(m.runtime_minutes.map(|r| r.to_string())),
        if genres.is_empty() { "\\N".to_owned() } else { genres.join(",") },
    ));
    ratings.push_str(&format!("{}\t{:.1}\t{}\n", m.id, m.rating.average, m.rating.count.max(1)));
    for (ordering, credit) in record.credits.iter().enumerate() {
        let (job, characters) = if credit.is_cast() {
            let escaped = credit.role.replace('\\', "\\\\").replace('"', "\\\"");
            ("\\N".to_owned(), format!("[\"{escaped}\"]"))
        } else {
            (credit.role.clone(), "\\N".to_owned())
        };
        principals.push_str(&format!(
            "{}\t{}\t{}\t{}\t{job}\t{characters}\n",
            m.id,
            ordering + 1,
            credit.person,
            category(credit.department)
        ));
    }
}

/// The editions a delta's titles alternate between, so that a delta applied again to the same
/// catalog changes every title again.
const EDITIONS: [&str; 2] = ["Restored", "Remastered"];

/// Writes a delta of `titles` titles of the catalog `options` seeds, spread over every
/// popularity rank, each retitled as `edition`, re-timed and re-rated, into `dir`.
pub fn write_delta(options: &SeedOptions, titles: u64, edition: &str, dir: &Path) -> anyhow::Result<u64> {
    let catalog = Catalog::new(options);
    let step = (options.movies / titles.max(1)).max(1);
    let (mut basics, mut ratings, mut principals) = (
        String::from(
            "tconst\ttitleType\tprimaryTitle\toriginalTitle\tisAdult\tstartYear\tendYear\truntimeMinutes\tgenres\n",
        ),
        String::from("tconst\taverageRating\tnumVotes\n"),
        String::from("tconst\tordering\tnconst\tcategory\tjob\tcharacters\n"),
    );
    let mut written = 0;
    for index in (0..options.movies)
        .step_by(usize::try_from(step).unwrap_or(1))
        .take(usize::try_from(titles).unwrap_or(0))
    {
        let mut record = catalog.movie(index);
        record.movie.title = format!("{} ({edition})", record.movie.title);
        record.movie.original_title = None;
        record.movie.runtime_minutes = Some(record.movie.runtime_minutes.unwrap_or(90).saturating_add(1));
        record.movie.rating.average = (record.movie.rating.average + 0.1).min(10.0);
        rows(&record, &mut basics, &mut ratings, &mut principals);
        written += 1;
    }
    for (name, text) in
        [("title.basics.tsv", basics), ("title.ratings.tsv", ratings), ("title.principals.tsv", principals)]
    {
        let mut file = std::fs::File::create(dir.join(name)).with_context(|| format!("writing {name}"))?;
        file.write_all(text.as_bytes())?;
    }
    Ok(written)
}

/// Starts the change as a command of the gateway binary over the data directory.
fn start_change(
    live: &LiveSpec,
    delta: &Path,
    options: &SeedOptions,
) -> anyhow::Result<tokio::process::Child> {
    let mut command = tokio::process::Command::new(&live.gateway_bin);
    command.arg("--data-dir").arg(&live.data_dir);
    match live.change {
        Change::Delta => command.args(["import", "imdb", "--incremental", "--dir"]).arg(delta),
        Change::Reload => command.args([
            "seed",
            "--movies",
            &options.movies.to_string(),
            "--people",
            &options.people.unwrap_or(options.movies * 3 / 5).to_string(),
            "--seed",
            &(live.catalog_seed + 1).to_string(),
        ]),
    };
    command.stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::piped()).kill_on_drop(true);
    command.spawn().with_context(|| format!("starting {}", live.gateway_bin.display()))
}

/// The title the gateway at `url` serves for movie 1.
async fn first_title(client: &reqwest::Client, url: &str) -> Option<String> {
    let body = serde_json::json!({ "query": "{ movie(id: \"tt0000001\") { title } }" });
    let response = client.post(format!("{url}/graphql")).json(&body).send().await.ok()?;
    let value = response.json::<serde_json::Value>().await.ok()?;
    value["data"]["movie"]["title"].as_str().map(str::to_owned)
}

/// Whether the gateway at `url` serves the reloaded catalog: movie 1's title is the second
/// generator's.
async fn serves_reloaded(client: &reqwest::Client, url: &str, expected: &str) -> bool {
    first_title(client, url).await.as_deref() == Some(expected)
}

/// `bench live-catalog` (see the module docs).
pub async fn live_catalog(setup: &Setup, live: &LiveSpec, title: &str) -> anyhow::Result<Report> {
    let options = SeedOptions {
        movies: setup.workload.movies,
        people: Some(setup.workload.people),
        seed: live.catalog_seed,
    };
    let scratch = tempfile::tempdir()?;
    let delta = scratch.path().join("delta");
    std::fs::create_dir(&delta)?;
    let prepared = prepare(setup).await?;
    let titles = if live.change == Change::Delta {
        // The other edition than the one a delta before this one gave the titles.
        let served = first_title(&prepared.client, &prepared.target.base_url).await.unwrap_or_default();
        let edition = if served.ends_with(&format!("({})", EDITIONS[0])) { EDITIONS[1] } else { EDITIONS[0] };
        write_delta(&options, live.delta_titles, edition, &delta)?
    } else {
        0
    };
    warm(setup, &prepared, &prepared.target).await?;
    let mut generator =
        Generator::new(setup.workload.clone(), prepared.users.clone()).map_err(anyhow::Error::msg)?;
    let phase_spec = crate::load::LoadSpec { duration: live.phase, ..setup.spec.clone() };
    let slice_spec = crate::load::LoadSpec { duration: Duration::from_secs(1), ..setup.spec.clone() };

    let mut before = Recorder::default();
    let before_counters =
        slice(&prepared.client, &prepared.target, true, &mut generator, &phase_spec, &mut before).await?;

    let started = Instant::now();
    let mut child = start_change(live, &delta, &options)?;
    let reloaded_title =
        Catalog::new(&SeedOptions { seed: live.catalog_seed + 1, ..options }).movie(0).movie.title;
    let mut during = Recorder::default();
    let mut change_took = None;
    let mut status = None;
    while change_took.is_none() {
        if started.elapsed() > live.change_timeout {
            let _ = child.kill().await;
            bail!("the change did not finish within {:?}", live.change_timeout);
        }
        slice(&prepared.client, &prepared.target, false, &mut generator, &slice_spec, &mut during).await?;
        if status.is_none() {
            status = child.try_wait()?;
        }
        let done = match (live.change, status) {
            (Change::Delta, Some(_)) => true,
            (Change::Reload, Some(_)) => {
                serves_reloaded(&prepared.client, &prepared.target.base_url, &reloaded_title).await
            }
            (_, None) => false,
        };
        if done {
            change_took = Some(started.elapsed());
        }
    }
    let output = child.wait_with_output().await?;
    if !output.status.success() {
        bail!("the change failed: {}", String::from_utf8_lossy(&output.stderr));
    }
    let change_report = String::from_utf8_lossy(&output.stdout).trim().to_owned();

    let mut after = Recorder::default();
    let after_counters =
        slice(&prepared.client, &prepared.target, true, &mut generator, &phase_spec, &mut after).await?;
    let took = change_took.unwrap_or_default();
    let results = vec![
        TargetResult::new("before", &phase_spec, &before, before_counters),
        TargetResult::new("during", &slice_spec, &during, None),
        TargetResult::new("after", &phase_spec, &after, after_counters),
    ];
    let what = match live.change {
        Change::Delta => format!("a delta of {titles} changed titles (with their credits) applied"),
        Change::Reload => {
            format!("a new generation of {} movies loaded and switched to", setup.workload.movies)
        }
    };
    let mut findings = vec![format!(
        "{what} in {:.1} s while {:.0} req/s were offered",
        took.as_secs_f64(),
        setup.spec.rate
    )];
    for result in &results {
        findings.push(format!(
            "{}: {:.0} ok req/s, p50 {:.2} ms, p99 {:.2} ms, max {:.1} ms, {} errors",
            result.name,
            result.throughput,
            result.latency.p50_ms,
            result.latency.p99_ms,
            result.latency.max_ms,
            result.error_count()
        ));
    }
    if !change_report.is_empty() {
        findings.push(format!("the change reported: {}", change_report.replace('\n', " / ")));
    }
    Ok(Report {
        title: title.to_owned(),
        command: setup.command.clone(),
        machine: Machine::this(),
        settings: settings(
            setup,
            serde_json::json!({ "live_catalog": live, "change_seconds": took.as_secs_f64() }),
        ),
        targets: results,
        ramp: Vec::new(),
        findings,
    })
}
