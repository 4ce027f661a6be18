//! `cargo xtask drill`: the failover drill on the running rig. Steady open-loop load from
//! clients of every region (`marquee_bench::drill_load`: geo-DNS → edge → load balancer →
//! gateways, reads, a partner's persisted GETs and ratings), and meanwhile, one phase apart:
//!
//! 1. **drain**: `terraform apply -var 'drained_regions=["eu-west"]'` on
//!    `terraform/environments/local`, the SRE's gesture; the region's clients move away;
//! 2. **stop**: once they have, the drained region's gateways stopped (SIGTERM): a planned
//!    drain is only true if taking the region down afterwards fails nothing;
//! 3. **start**: its gateways started again; 4. **undrain**: the apply with nothing drained
//!    (refused unless the region's health URL answers); its clients return;
//! 5. **kill**: every gateway of the region SIGKILLed (unplanned); its edge answers what it
//!    holds, sends the reads it does not hold to the other region, refuses writes at once,
//!    and geo-DNS moves its clients; 6. **restart**;
//! 7. **blackhole**: the region's load balancer SIGSTOPped (connections hang instead of being
//!    refused); 8. **resume** (SIGCONT);
//! 9. **edge-kill**: the region's edge SIGKILLed (DNS must move its clients); 10. **edge-start**;
//! 11. **redis-kill**: every node of the region's Redis Cluster SIGKILLed (the gateways serve
//!     from the store); 12. **redis-start**;
//! 13. **partition**: the link between the data centers of the rig's Cassandra cluster cut
//!     (`--partition-secs`, a minute by default): both regions keep serving their clients and
//!     taking their ratings, each in its own data center; 14. **heal**: the link restored, and
//!     the hints the nodes kept replay.
//!
//! A request that times out (the load's 10 s) is a failure like any other, and counts as not
//! yet moved.
//!
//! Afterwards every rating the API acknowledged is read back through each region until all
//! are there (at most [`SETTLE`] after the load): none may be missing. The report says how
//! long after the heal every rating was readable in every region, and how long until every
//! rating total the change log lists was exact in each (`gateway reconcile --check`). Results (`results.json`, `report.md`, `failover.svg`) go to `--out`
//! (`bench/results/failover/` by default). The rig is left as it was found: undrained, every
//! gateway running.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Args;
use marquee_bench::dns::ClientRoute;
use marquee_bench::drill_load::{ClientRegion, DrillLoad, Event, Sample, Second};
use serde::Serialize;
use serde_json::{Value, json};

use crate::process::alive;
use crate::rig::regions::{self, Region};
use crate::rig::{ALERTMANAGER, DNS, PROMETHEUS, Rig, ZONE, client_address, quiet_gateway_env};

/// `cargo xtask drill`.
#[derive(Args, Clone, Debug)]
pub(crate) struct DrillArgs {
    /// The region drained, then killed.
    #[arg(long, default_value = "eu-west")]
    region: String,
    /// Clients per region, each sending from its own address in the region's subnet.
    #[arg(long, default_value_t = 8)]
    clients: u32,
    /// Requests per second each client sends (open loop). One address is one rate-limited
    /// client (50/s by default).
    #[arg(long, default_value_t = 10.0)]
    rate: f64,
    /// Seconds between the drill's steps (steady, drained, undrained, killed, restarted).
    #[arg(long, default_value_t = 20)]
    phase_secs: u64,
    /// How long a client keeps its connections before opening new ones (and resolving the
    /// API's name again, within the DNS TTL), in seconds.
    #[arg(long, default_value_t = 5)]
    reconnect_secs: u64,
    /// How long the data centers stay cut apart in the partition step, in seconds.
    #[arg(long, default_value_t = 60)]
    partition_secs: u64,
    /// Where the results go.
    #[arg(long, default_value = "bench/results/failover")]
    out: PathBuf,
}

/// Signed-in users of one drill.
const USERS: usize = 16;

/// The drill's steps, in order (see the module docs).
const STEPS: usize = 14;

/// How long after the load the drill waits for every acknowledged rating to be readable in
/// every region, and then for every total to be exact, before it calls them lost.
const SETTLE: Duration = Duration::from_secs(180);

/// How long `stop` waits for the drained region's gateways to see no more requests.
const IDLE_WAIT: Duration = Duration::from_secs(30);

pub(crate) fn run(root: &Path, args: &DrillArgs) -> anyhow::Result<()> {
    let rig = Rig::running(root)?;
    let gateway = rig.gateway()?;
    let regions = regions::load(&gateway, &root.join("regions"))?;
    let Some(drilled) = regions.iter().find(|r| r.name == args.region).cloned() else {
        bail!("no region {} in regions/", args.region);
    };
    let run_id = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_secs();
    println!("drill: minting {USERS} users' tokens with the rig's key");
    let users = (0..USERS)
        .map(|i| {
            let user = format!("drill-{run_id}-{i}");
            token(root, &gateway, &drilled, &user).map(|token| (user, token))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let load = DrillLoad {
        api: format!("http://api.{ZONE}:{}", drilled.edge.port()),
        dns: DNS,
        regions: regions
            .iter()
            .map(|region| {
                let clients = (0..args.clients).filter_map(|i| client_address(region, 256 + i)).collect();
                ClientRegion { name: region.name.clone(), edge: region.edge.ip(), clients }
            })
            .collect(),
        rate_per_client: args.rate,
        // The steps follow one another a phase apart, and `stop` first waits (at most
        // IDLE_WAIT) for the drained region's traffic to have moved.
        duration: Duration::from_secs(args.phase_secs * (STEPS as u64 + 1) + args.partition_secs) + IDLE_WAIT,
        reconnect_every: Duration::from_secs(args.reconnect_secs),
        writes_per_mille: 50,
        persisted_per_mille: 300,
        movies: drilled.demo_movies,
        persisted_id: "movie-card-v1".into(),
        users: users.clone(),
        timeout: Duration::from_secs(10),
    };
    println!(
        "drill: {} clients per region at {}/s each for {} s; steps every {} s",
        args.clients,
        args.rate,
        load.duration.as_secs(),
        args.phase_secs
    );
    let runtime = tokio::runtime::Runtime::new()?;
    let drill_started = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_secs_f64();
    let (samples, events, rig, settled) = runtime.block_on(drive(
        load.clone(),
        rig,
        gateway.clone(),
        (drilled.clone(), regions.clone()),
        (args.phase_secs, args.partition_secs),
    ))?;
    rig.save()?;
    println!("drill: reading every acknowledged rating back through each region");
    let verification = runtime.block_on(verify(&load, &regions, &samples))?;
    let alerts = runtime.block_on(fired_since(drill_started))?;
    let mut report = Report::new(&load, &samples, &events, &drilled.name, verification, settled);
    report.alerts_by_step(&alerts, drill_started);
    std::fs::create_dir_all(&args.out)?;
    std::fs::write(args.out.join("results.json"), serde_json::to_vec_pretty(&report)?)?;
    marquee_bench::drill_load::plot(&args.out.join("failover.svg"), &report.seconds, &events)?;
    let markdown = report.markdown(args);
    std::fs::write(args.out.join("report.md"), &markdown)?;
    println!("{markdown}");
    println!("drill: results in {}", args.out.display());
    if report.writes.lost > 0 {
        bail!("{} acknowledged ratings were lost", report.writes.lost);
    }
    if report.partition.answers_agree_after_heal_s.is_none() {
        bail!(
            "the regions' edges still disagreed on the ratings of movies rated during the partition {} s after \
             the heal: {}",
            SETTLE.as_secs(),
            report.partition.disagreed.join("; ")
        );
    }
    if report.partition.totals_exact_after_heal_s.is_none() {
        bail!(
            "rating totals were not exact in every region {} s after the heal: {:?}",
            SETTLE.as_secs(),
            report.partition.totals
        );
    }
    Ok(())
}

/// Every alert series the rig's Prometheus had firing since `since` (Unix seconds): its
/// labels, and the times of its firing samples (one per rule evaluation, every 5 s).
async fn fired_since(since: f64) -> anyhow::Result<Vec<(BTreeMap<String, String>, Vec<f64>)>> {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_secs_f64();
    let range = (now - since).ceil() as u64 + 1;
    let query = format!("ALERTS{{alertstate=\"firing\"}}[{range}s]");
    let answer: Value = reqwest::Client::new()
        .get(format!("http://{PROMETHEUS}/api/v1/query"))
        .query(&[("query", query.as_str()), ("time", &format!("{now:.3}"))])
        .send()
        .await
        .context("asking the rig's Prometheus which alerts fired")?
        .error_for_status()?
        .json()
        .await?;
    let series = answer["data"]["result"].as_array().context("Prometheus's answer has no result")?;
    Ok(series
        .iter()
        .map(|s| {
            let labels = s["metric"]
                .as_object()
                .map(|m| {
                    m.iter().map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_owned())).collect()
                })
                .unwrap_or_default();
            let times = s["values"]
                .as_array()
                .map(|values| values.iter().filter_map(|v| v[0].as_f64()).collect())
                .unwrap_or_default();
            (labels, times)
        })
        .collect())
}

/// Silences every alert of `region` in the rig's Alertmanager for two hours (what an SRE
/// does before a planned drain: `amtool silence add region=REGION`); the silence's id.
async fn silence_region(region: &str) -> anyhow::Result<String> {
    let now = std::time::SystemTime::now();
    let silence = json!({
        "matchers": [{ "name": "region", "value": region, "isRegex": false, "isEqual": true }],
        "startsAt": humantime::format_rfc3339_seconds(now).to_string(),
        "endsAt": humantime::format_rfc3339_seconds(now + Duration::from_secs(2 * 3600)).to_string(),
        "createdBy": "cargo xtask drill",
        "comment": format!("planned drain of {region}"),
    });
    let created: Value = reqwest::Client::new()
        .post(format!("http://{ALERTMANAGER}/api/v2/silences"))
        .json(&silence)
        .send()
        .await
        .context("silencing the drained region in the rig's Alertmanager")?
        .error_for_status()?
        .json()
        .await?;
    created["silenceID"].as_str().map(str::to_owned).context("Alertmanager returned no silence id")
}

/// Ends the silence `id` (the region is undrained).
async fn expire_silence(id: &str) -> anyhow::Result<()> {
    reqwest::Client::new()
        .delete(format!("http://{ALERTMANAGER}/api/v2/silence/{id}"))
        .send()
        .await
        .context("ending the drained region's silence")?
        .error_for_status()?;
    Ok(())
}

/// An alert that fired during a drill step.
#[derive(Debug, Clone, Serialize)]
struct Fired {
    alert: String,
    severity: String,
    /// Where: the region, and the gateway for a per-gateway alert.
    region: String,
    instance: Option<String>,
    /// From the step's start to the first evaluation that had it firing (0 when it was firing
    /// as the step began), in seconds.
    after_s: f64,
    /// Fired in the drained region while the drain's silence held: it paged nobody.
    silenced: bool,
}

/// How the data centers converged after the partition step, measured from the heal while
/// the load goes on.
#[derive(Debug, Default, Serialize)]
struct Settled {
    /// Ratings acknowledged before the heal (either side of the cut included).
    ratings_before_heal: usize,
    /// From the heal until every one of them was read back through every region, in seconds.
    ratings_found_after_heal_s: Option<f64>,
    /// From the heal until `gateway reconcile --check` (every total the change log lists from
    /// the drill's start to the heal) found every total exact in every region, over the same
    /// buckets in each, in seconds.
    totals_exact_after_heal_s: Option<f64>,
    /// What each region's last check printed.
    totals: BTreeMap<String, String>,
    /// Movies rated during the partition whose rating partners read through each region's edge
    /// (the `movie-rating-v1` persisted GET, cached at the edge until purged).
    movies_compared: usize,
    /// From the heal until both regions' edges gave the same rating for each of them, in
    /// seconds: the caches and edges of each region caught up with the other's ratings.
    answers_agree_after_heal_s: Option<f64>,
    /// The movies the regions' edges last disagreed on, with each region's answer.
    disagreed: Vec<String>,
}

/// Measures [`Settled`]: reads back, every second, the ratings acknowledged before the heal
/// until every region has them; then checks every region's totals every second until each is
/// exact over the same buckets. At most [`SETTLE`].
async fn settle(
    load: DrillLoad,
    regions: Vec<Region>,
    (before, cut_at_ms): (Vec<Sample>, u64),
    (root, gateway): (PathBuf, PathBuf),
    (started, healed): (std::time::SystemTime, std::time::SystemTime),
) -> anyhow::Result<Settled> {
    let from = Instant::now();
    let deadline = from + SETTLE;
    let mut settled = Settled {
        ratings_before_heal: before.iter().filter(|s| s.written.is_some()).count(),
        ..Settled::default()
    };
    // The movies rated while the data centers were cut apart.
    let mut movies: Vec<String> = before
        .iter()
        .filter(|s| s.due_ms >= cut_at_ms)
        .filter_map(|s| s.written.as_ref().map(|w| w.movie.clone()))
        .collect();
    movies.sort();
    movies.dedup();
    movies.truncate(COMPARED_MOVIES);
    settled.movies_compared = movies.len();
    let clients: Vec<reqwest::Client> = regions
        .iter()
        .map(|region| {
            let source = client_address(region, 251).context("a client address")?;
            Ok(marquee_bench::load::client(
                Duration::from_secs(10),
                Some(&ClientRoute { dns: load.dns, source }),
            ))
        })
        .collect::<anyhow::Result<_>>()?;
    // Each region's edge is asked now, at the heal, so it holds the answer its side had while
    // cut apart (cached for an hour): only a purge can make the two agree in time.
    for movie in &movies {
        for client in &clients {
            let _ = movie_rating(client, &load.api, movie).await;
        }
    }
    loop {
        if read_back(&load, &regions, &before).await?.lost == 0 {
            settled.ratings_found_after_heal_s = Some(from.elapsed().as_secs_f64());
            break;
        }
        if Instant::now() > deadline {
            return Ok(settled);
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    loop {
        let (root, gateway, regions) = (root.clone(), gateway.clone(), regions.clone());
        let checks = tokio::task::spawn_blocking(move || {
            regions
                .iter()
                .map(|region| check_totals(&root, &gateway, region, started, healed))
                .collect::<anyhow::Result<Vec<_>>>()
        })
        .await??;
        let buckets: std::collections::BTreeSet<usize> = checks.iter().map(|c| c.2).collect();
        let exact = checks.iter().all(|c| c.1) && buckets.len() == 1;
        settled.totals = checks.into_iter().map(|(region, _, _, said)| (region, said)).collect();
        if exact {
            settled.totals_exact_after_heal_s = Some(from.elapsed().as_secs_f64());
            break;
        }
        if Instant::now() > deadline {
            return Ok(settled);
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    loop {
        let mut disagreed = Vec::new();
        for movie in &movies {
            let mut answers = Vec::new();
            for client in &clients {
                answers.push(movie_rating(client, &load.api, movie).await);
            }
            if !answers.iter().all(|a| a.is_ok() && *a == answers[0]) {
                let said: Vec<String> = regions
                    .iter()
                    .zip(&answers)
                    .map(|(r, a)| match a {
                        Ok(rating) => format!("{}: {rating}", r.name),
                        Err(error) => format!("{}: {error}", r.name),
                    })
                    .collect();
                disagreed.push(format!("{movie} ({})", said.join(", ")));
            }
        }
        let agree = disagreed.is_empty();
        settled.disagreed = disagreed;
        if agree {
            settled.answers_agree_after_heal_s = Some(from.elapsed().as_secs_f64());
            return Ok(settled);
        }
        if Instant::now() > deadline {
            return Ok(settled);
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}

/// At most this many movies are compared across regions (each comparison is a request per
/// region, from one client address, under the gateways' per-client limit).
const COMPARED_MOVIES: usize = 20;

/// A partner's `movie-rating-v1` persisted GET of `movie` through `client`'s edge: the
/// rating it answered.
async fn movie_rating(client: &reqwest::Client, api: &str, movie: &str) -> Result<Value, String> {
    let variables = json!({ "id": movie }).to_string();
    let response = client
        .get(format!("{api}/graphql"))
        .query(&[("id", "movie-rating-v1"), ("variables", variables.as_str())])
        .send()
        .await
        .map_err(|e| e.to_string())?;
    let status = response.status();
    let body: Value = response.json().await.map_err(|e| format!("{status}: {e}"))?;
    let rating = body["data"]["movie"]["rating"].clone();
    if rating.is_null() { Err(format!("{status}: {body}")) } else { Ok(rating) }
}

/// `gateway reconcile --check` over the change log from `since` to `until` in `region`'s data
/// center: the region, whether every total is exact, the buckets checked, and what it printed.
fn check_totals(
    root: &Path,
    gateway: &Path,
    region: &Region,
    since: std::time::SystemTime,
    until: std::time::SystemTime,
) -> anyhow::Result<(String, bool, usize, String)> {
    let mut check = Command::new(gateway);
    quiet_gateway_env(&mut check);
    let output = check
        .arg("--config")
        .arg(&region.file)
        .args(["reconcile", "--check"])
        .arg("--since")
        .arg(humantime::format_rfc3339_millis(since).to_string())
        .arg("--until")
        .arg(humantime::format_rfc3339_millis(until).to_string())
        .env("MARQUEE_LOG__FILTER", "error")
        .current_dir(root)
        .output()
        .context("gateway reconcile --check")?;
    let said = String::from_utf8_lossy(&output.stdout).trim().to_owned();
    // "<inexact> of <buckets> buckets of rating totals …"
    let buckets = said.split_whitespace().nth(2).and_then(|n| n.parse().ok());
    match buckets {
        Some(buckets) => Ok((region.name.clone(), output.status.success(), buckets, said)),
        None => bail!(
            "gateway reconcile --check in {}: {said}{}",
            region.name,
            String::from_utf8_lossy(&output.stderr)
        ),
    }
}

/// Runs the load and, meanwhile, the drill's steps; the samples, the steps' events, and the
/// rig with its restarted gateways.
async fn drive(
    load: DrillLoad,
    rig: Rig,
    gateway: PathBuf,
    (drilled, regions): (Region, Vec<Region>),
    (phase_secs, partition_secs): (u64, u64),
) -> anyhow::Result<(Vec<Sample>, Vec<Event>, Rig, Settled)> {
    let started = Instant::now();
    let started_at = std::time::SystemTime::now();
    let acknowledged = Arc::new(Mutex::new(Vec::new()));
    let sending = {
        let (load, acknowledged) = (load.clone(), acknowledged.clone());
        tokio::spawn(async move { marquee_bench::drill_load::run_into(&load, acknowledged).await })
    };
    let mut settling = None;
    let mut events: Vec<Event> = Vec::new();
    let root = rig.root().to_owned();
    let name = drilled.name.clone();
    let mut rig = Some(rig);
    let steps: [(&str, String); STEPS] = [
        ("drain", format!("terraform apply -var 'drained_regions=[\"{name}\"]'")),
        ("stop", format!("SIGTERM every {name} gateway (drained)")),
        ("start", format!("{name}'s gateways started again")),
        ("undrain", "terraform apply -var 'drained_regions=[]'".to_owned()),
        ("kill", format!("SIGKILL every {name} gateway")),
        ("restart", format!("{name}'s gateways started again")),
        ("blackhole", format!("SIGSTOP {name}'s load balancer")),
        ("resume", format!("SIGCONT {name}'s load balancer")),
        ("edge-kill", format!("SIGKILL {name}'s edge")),
        ("edge-start", format!("{name}'s edge started again")),
        ("redis-kill", format!("SIGKILL every node of {name}'s Redis Cluster")),
        ("redis-start", format!("{name}'s Redis Cluster started again")),
        ("partition", "the data centers cut apart (cargo xtask cassandra link --cut)".to_owned()),
        ("heal", "the data centers joined again".to_owned()),
    ];
    let mut silence = None;
    let mut next = started + Duration::from_secs(phase_secs);
    for (label, what) in steps {
        tokio::time::sleep_until(next.into()).await;
        if label == "stop" {
            // Only once the drained region's traffic has moved: its gateways answer nothing
            // for two seconds running (clients move within their connection lifetime and the
            // DNS TTL).
            let gateways = drilled.gateways.clone();
            tokio::task::spawn_blocking(move || wait_until_idle(&gateways)).await??;
        }
        let at = started.elapsed();
        println!("drill: {:>5.1} s  {what}", at.as_secs_f64());
        let mut owned = rig.take().context("the rig")?;
        let step_parts = (root.clone(), gateway.clone(), drilled.clone(), regions.clone());
        let label_owned = label.to_owned();
        let step = tokio::task::spawn_blocking(move || -> anyhow::Result<Rig> {
            let (root, gateway, drilled, regions) = step_parts;
            let name = drilled.name.as_str();
            match label_owned.as_str() {
                "drain" => apply(&root, &format!("[\"{name}\"]"))?,
                "undrain" => apply(&root, "[]")?,
                "stop" => stop_parts(&mut owned, &format!("{name} gateway"), "TERM")?,
                "kill" => stop_parts(&mut owned, &format!("{name} gateway"), "KILL")?,
                "start" | "restart" => {
                    let key = owned.dir().join("signing-key.pem");
                    owned.start_gateways(&gateway, &drilled, &key)?;
                }
                "blackhole" => signal_part(&owned, &format!("{name} load balancer"), "STOP")?,
                "resume" => signal_part(&owned, &format!("{name} load balancer"), "CONT")?,
                "edge-kill" => stop_parts(&mut owned, &format!("{name} edge"), "KILL")?,
                "edge-start" => {
                    let others: Vec<&Region> = regions.iter().filter(|r| r.name != name).collect();
                    owned.start_edge(&drilled, &others)?;
                }
                "redis-kill" => kill_redis(&mut owned, name)?,
                "redis-start" => owned.start_redis(&drilled)?,
                "partition" => cut(&owned, true)?,
                _ => cut(&owned, false)?,
            }
            Ok(owned)
        });
        rig = Some(step.await??);
        // A planned drain is announced to Alertmanager, as the runbook does: the drained
        // region's alerts are silenced until it is undrained.
        match label {
            "drain" => silence = Some(silence_region(&name).await?),
            "undrain" => {
                if let Some(id) = silence.take() {
                    expire_silence(&id).await?;
                }
            }
            _ => {}
        }
        if label == "heal" {
            // From here on, while the load goes on: how soon the two sides agree again.
            let before: Vec<Sample> = acknowledged
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .iter()
                .filter(|s| s.written.is_some())
                .cloned()
                .collect();
            let paths = (root.clone(), gateway.clone());
            let times = (started_at, std::time::SystemTime::now());
            let cut_at_ms = events.iter().find(|e| e.label == "partition").map_or(0, |e| e.at_ms);
            let settle = settle(load.clone(), regions.clone(), (before, cut_at_ms), paths, times);
            settling = Some(tokio::spawn(settle));
        }
        next = Instant::now()
            + Duration::from_secs(if label == "partition" { partition_secs } else { phase_secs });
        events.push(Event {
            at_ms: at.as_millis() as u64,
            done_ms: started.elapsed().as_millis() as u64,
            label: label.to_owned(),
            what,
        });
    }
    let samples = sending.await?;
    let settled = match settling {
        Some(task) => task.await??,
        None => Settled::default(),
    };
    Ok((samples, events, rig.context("the rig")?, settled))
}

/// Cuts the link between the rig's data centers, or heals it and waits until every node sees
/// every other up again.
fn cut(rig: &Rig, cut: bool) -> anyhow::Result<()> {
    let cluster = crate::cassandra::running(&crate::cassandra::rig_cluster_dir(rig.dir()))
        .context("the rig's Cassandra keeper is not running")?;
    crate::cassandra::set_link(&cluster, None, Some(cut))?;
    Ok(())
}

/// `terraform apply` of the rig's environment with `drained` (HCL).
fn apply(root: &Path, drained: &str) -> anyhow::Result<()> {
    let log = root.join("target/rig/logs/terraform.log");
    let args: Vec<String> = vec![
        format!("-chdir={}", crate::terraform::TRAFFIC_ENVIRONMENT),
        "apply".into(),
        "-input=false".into(),
        "-auto-approve".into(),
        "-no-color".into(),
        format!("-var=drained_regions={drained}"),
    ];
    crate::terraform::run_quiet(root, &args, &log)
}

/// Sends `signal` to every part whose name starts with `prefix`, waits (up to 30 s) until each
/// has exited, and drops them from the rig's parts.
fn stop_parts(rig: &mut Rig, prefix: &str, signal: &str) -> anyhow::Result<()> {
    let pids = rig.pids_of(prefix);
    if pids.is_empty() {
        bail!("no running part named {prefix}…");
    }
    for pid in &pids {
        send(*pid, signal)?;
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while pids.iter().any(|&pid| alive(pid)) {
        if Instant::now() > deadline {
            bail!("{prefix}… did not exit within 30 s of SIG{signal}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    rig.forget(prefix)
}

/// Waits (up to [`IDLE_WAIT`]) until `gateways` have answered no `/graphql` request for two
/// seconds running, read from their own `http_requests_total`.
fn wait_until_idle(gateways: &[std::net::SocketAddr]) -> anyhow::Result<()> {
    let deadline = Instant::now() + IDLE_WAIT;
    let mut last = (graphql_requests(gateways), Instant::now());
    loop {
        std::thread::sleep(Duration::from_millis(250));
        let now = graphql_requests(gateways);
        if now != last.0 {
            last = (now, Instant::now());
        } else if last.1.elapsed() >= Duration::from_secs(2) {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!(
                "the drained region's gateways still answered requests {} s after the drain",
                IDLE_WAIT.as_secs()
            );
        }
    }
}

/// The `/graphql` requests `gateways` have answered, summed from their `/metrics`.
fn graphql_requests(gateways: &[std::net::SocketAddr]) -> u64 {
    use std::io::{Read as _, Write as _};
    let mut total = 0.0;
    for gateway in gateways {
        let Ok(mut stream) = std::net::TcpStream::connect_timeout(gateway, Duration::from_secs(1)) else {
            continue;
        };
        let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
        let _ = stream.write_all(b"GET /metrics HTTP/1.1\r\nHost: drill\r\nConnection: close\r\n\r\n");
        let mut text = String::new();
        let _ = stream.read_to_string(&mut text);
        total += text
            .lines()
            .filter(|l| l.starts_with("http_requests_total{") && l.contains("route=\"/graphql\""))
            .filter_map(|l| l.rsplit_once(' ').and_then(|(_, v)| v.parse::<f64>().ok()))
            .sum::<f64>();
    }
    total as u64
}

/// Sends `signal` to the part named `name` (it stays one of the rig's parts).
fn signal_part(rig: &Rig, name: &str, signal: &str) -> anyhow::Result<()> {
    send(rig.part(name)?.pid(), signal)
}

/// SIGKILLs every node of `region`'s Redis Cluster (the PIDs its `xtask redis-cluster` logged),
/// then stops that process, so the cluster can be started again on the same ports.
fn kill_redis(rig: &mut Rig, region: &str) -> anyhow::Result<()> {
    let name = format!("{region} redis");
    let log = rig.part(&name)?.log();
    let log = std::fs::read_to_string(log).with_context(|| format!("reading {}", log.display()))?;
    let nodes = log
        .lines()
        .rev()
        .find_map(|line| line.strip_prefix("node PIDs: "))
        .context("the Redis Cluster's log names no node PIDs")?;
    let nodes: Vec<u32> = nodes
        .trim_matches(|c| c == '[' || c == ']')
        .split(',')
        .map(|pid| pid.trim().parse::<u32>())
        .collect::<Result<_, _>>()
        .context("the node PIDs")?;
    for pid in nodes {
        send(pid, "KILL")?;
    }
    stop_parts(rig, &name, "TERM")
}

fn send(pid: u32, signal: &str) -> anyhow::Result<()> {
    let status = Command::new("kill").arg(format!("-{signal}")).arg(pid.to_string()).status()?;
    if !status.success() {
        bail!("kill -{signal} {pid} failed");
    }
    Ok(())
}

/// A development token for `user`, signed with the rig's key (every region verifies it).
fn token(root: &Path, gateway: &Path, region: &Region, user: &str) -> anyhow::Result<String> {
    let key = root.join("target/rig/signing-key.pem");
    let output = Command::new(gateway)
        .arg("--config")
        .arg(&region.file)
        .args(["token", "--user", user])
        .env("MARQUEE_AUTH__SIGNING_KEY_FILES", format!("[\"{}\"]", key.display()))
        .env("MARQUEE_AUTH__DEV_TOKENS", "true")
        .env("MARQUEE_LOG__FILTER", "error")
        .current_dir(root)
        .output()
        .context("gateway token")?;
    if !output.status.success() {
        bail!("gateway token: {}", String::from_utf8_lossy(&output.stderr));
    }
    Ok(String::from_utf8(output.stdout)?.trim().to_owned())
}

/// What reading the acknowledged ratings back found.
#[derive(Debug, Default, Serialize)]
struct Writes {
    /// Ratings the API acknowledged during the drill.
    acknowledged: usize,
    /// Of those, found with their score through each region.
    found: BTreeMap<String, usize>,
    /// Acknowledged and missing (or with another score) through at least one region.
    lost: usize,
    /// A few of the lost ones.
    examples: Vec<String>,
}

/// Reads each drill user's ratings back through a client of every region, again every two
/// seconds while some are missing, for at most [`SETTLE`].
async fn verify(load: &DrillLoad, regions: &[Region], samples: &[Sample]) -> anyhow::Result<Writes> {
    let deadline = Instant::now() + SETTLE;
    loop {
        let writes = read_back(load, regions, samples).await?;
        if writes.lost == 0 || Instant::now() > deadline {
            return Ok(writes);
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}

/// One reading back of every acknowledged rating through every region.
async fn read_back(load: &DrillLoad, regions: &[Region], samples: &[Sample]) -> anyhow::Result<Writes> {
    let acknowledged: Vec<_> = samples.iter().filter_map(|s| s.written.clone()).collect();
    let mut writes = Writes { acknowledged: acknowledged.len(), ..Writes::default() };
    let mut lost: HashMap<(String, String), u8> = HashMap::new();
    for region in regions {
        let source = client_address(region, 250).context("a client address")?;
        let client = marquee_bench::load::client(
            Duration::from_secs(10),
            Some(&ClientRoute { dns: load.dns, source }),
        );
        // The region's clients must land in the region again before its reads count.
        let edge = region.edge.ip();
        let deadline = Instant::now() + Duration::from_secs(30);
        while served_by(&client, &load.api).await != Some(edge) {
            if Instant::now() > deadline {
                bail!("{}'s clients are not served by {} 30 s after the drill", region.name, region.name);
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        let mut found: HashMap<(String, String), u8> = HashMap::new();
        for (user, token) in &load.users {
            for (movie, score) in ratings_of(&client, &load.api, token).await? {
                found.insert((user.clone(), movie), score);
            }
        }
        let mut ok = 0;
        for write in &acknowledged {
            let key = (write.user.clone(), write.movie.clone());
            if found.get(&key) == Some(&write.score) {
                ok += 1;
            } else {
                lost.insert(key, write.score);
            }
        }
        writes.found.insert(region.name.clone(), ok);
    }
    writes.lost = lost.len();
    writes.examples = lost.iter().take(5).map(|((u, m), s)| format!("{u} rated {m} {s}")).collect();
    Ok(writes)
}

/// The edge address a request of `client` reaches.
async fn served_by(client: &reqwest::Client, api: &str) -> Option<IpAddr> {
    let response = client.get(format!("{api}/readyz")).send().await.ok()?;
    (response.status() == 200).then(|| response.remote_addr().map(|a| a.ip())).flatten()
}

/// Every rating of the token's user, through `client`: (movie id, score).
async fn ratings_of(client: &reqwest::Client, api: &str, token: &str) -> anyhow::Result<Vec<(String, u8)>> {
    let mut out = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let query = "query($after: String) { me { ratings(first: 100, after: $after) { \
                     edges { node { score movie { id } } } pageInfo { hasNextPage endCursor } } } }";
        let body: Value = client
            .post(format!("{api}/graphql"))
            .bearer_auth(token)
            .json(&json!({ "query": query, "variables": { "after": after } }))
            .send()
            .await?
            .json()
            .await?;
        let ratings = &body["data"]["me"]["ratings"];
        let Some(edges) = ratings["edges"].as_array() else {
            bail!("reading ratings back: {body}");
        };
        for edge in edges {
            let movie = edge["node"]["movie"]["id"].as_str().unwrap_or_default().to_owned();
            let score = edge["node"]["score"].as_u64().unwrap_or(0) as u8;
            out.push((movie, score));
        }
        if ratings["pageInfo"]["hasNextPage"] != true {
            return Ok(out);
        }
        after = ratings["pageInfo"]["endCursor"].as_str().map(str::to_owned);
    }
}

/// One client region's figures over a span of the drill.
#[derive(Debug, Default, Serialize)]
struct Span {
    requests: u64,
    failed: u64,
    /// Failed requests by outcome.
    failures: BTreeMap<String, u64>,
    /// GET requests (a partner's persisted queries: what the edge fails over), and how many
    /// of them failed.
    gets: u64,
    failed_gets: u64,
    /// Ratings sent, and how many of them failed.
    writes: u64,
    failed_writes: u64,
    p99_ms: f64,
    /// Requests answered by each region's edge.
    served_by: BTreeMap<String, u64>,
    /// Answered from the edge's cache.
    edge_hits: u64,
}

/// What happened after one step, to the drilled region's clients.
#[derive(Debug, Serialize)]
struct Step {
    event: Event,
    /// From the step's start to the last request of the drilled region's clients answered
    /// by the region they were moving away from (drain, kill: its edge, a cached answer or a
    /// failure included) or the first its gateways answered again (undrain, restart), in
    /// seconds.
    moved_after_s: Option<f64>,
    /// The last failed request of the drilled region's clients in this step, after its start,
    /// in seconds.
    last_failure_after_s: Option<f64>,
    /// Requests of the drilled region's clients its own edge answered from its cache.
    own_edge_cache_answers: u64,
    /// Per client region, until the next step.
    clients: BTreeMap<String, Span>,
    /// The alerts (regions/monitoring/rules.yml) the rig's Prometheus had firing from the
    /// step's start until the next step's.
    alerts: Vec<Fired>,
}

#[derive(Debug, Serialize)]
struct Report {
    drilled: String,
    settings: Value,
    steady: BTreeMap<String, Span>,
    steps: Vec<Step>,
    /// From the kill of every drilled gateway to the first evaluation with
    /// `RegionHasNoGatewayInRotation` firing for the region, in seconds.
    region_down_page_after_kill_s: Option<f64>,
    writes: Writes,
    partition: Settled,
    seconds: BTreeMap<String, Vec<Second>>,
}

fn span(load: &DrillLoad, samples: &[&Sample]) -> BTreeMap<String, Span> {
    let mut out = BTreeMap::new();
    for (index, region) in load.regions.iter().enumerate() {
        let mine: Vec<&&Sample> = samples.iter().filter(|s| s.client == index).collect();
        let mut latencies: Vec<u64> = mine.iter().map(|s| s.latency_us).collect();
        latencies.sort_unstable();
        let p99 = latencies.get((latencies.len() * 99).div_ceil(100).saturating_sub(1)).copied().unwrap_or(0);
        let mut span = Span { requests: mine.len() as u64, p99_ms: p99 as f64 / 1000.0, ..Span::default() };
        for s in mine {
            let get = matches!(s.kind, marquee_bench::drill_load::Kind::Persisted);
            let write = matches!(s.kind, marquee_bench::drill_load::Kind::Write);
            span.gets += u64::from(get);
            span.writes += u64::from(write);
            if s.outcome != "ok" {
                span.failed += 1;
                span.failed_gets += u64::from(get);
                span.failed_writes += u64::from(write);
                *span.failures.entry(s.outcome.clone()).or_insert(0) += 1;
            }
            if let Some(by) = s.served_by {
                *span.served_by.entry(load.regions[by].name.clone()).or_insert(0) += 1;
            }
            if s.cache.as_deref() == Some("HIT") {
                span.edge_hits += 1;
            }
        }
        out.insert(region.name.clone(), span);
    }
    out
}

impl Report {
    fn new(
        load: &DrillLoad,
        samples: &[Sample],
        events: &[Event],
        drilled: &str,
        writes: Writes,
        partition: Settled,
    ) -> Report {
        let drilled_index = load.regions.iter().position(|r| r.name == drilled).unwrap_or(0);
        let first = events.first().map_or(u64::MAX, |e| e.at_ms);
        let steady: Vec<&Sample> = samples.iter().filter(|s| s.due_ms < first).collect();
        let mut steps = Vec::new();
        for (i, event) in events.iter().enumerate() {
            let end = events.get(i + 1).map_or(u64::MAX, |e| e.at_ms);
            let within: Vec<&Sample> =
                samples.iter().filter(|s| s.due_ms >= event.at_ms && s.due_ms < end).collect();
            let theirs: Vec<&&Sample> = within.iter().filter(|s| s.client == drilled_index).collect();
            let after = |s: &Sample| (s.due_ms - event.at_ms) as f64 / 1000.0;
            let moved_after_s = match event.label.as_str() {
                // Away: the last request still answered by the drilled region, or failed (a
                // timeout included: it was not answered anywhere).
                "drain" | "stop" | "kill" | "blackhole" | "edge-kill" | "redis-kill" => theirs
                    .iter()
                    .filter(|s| s.served_by == Some(drilled_index) || s.outcome != "ok")
                    .map(|s| after(s))
                    .fold(None, |m: Option<f64>, x| Some(m.map_or(x, |m| m.max(x)))),
                // Back: the first request its gateways answered again (not the edge's cache).
                _ => theirs
                    .iter()
                    .filter(|s| {
                        s.served_by == Some(drilled_index)
                            && s.outcome == "ok"
                            && s.cache.as_deref() != Some("HIT")
                    })
                    .map(|s| after(s))
                    .fold(None, |m: Option<f64>, x| Some(m.map_or(x, |m| m.min(x)))),
            };
            let last_failure_after_s = theirs
                .iter()
                .filter(|s| s.outcome != "ok")
                .map(|s| after(s))
                .fold(None, |m: Option<f64>, x| Some(m.map_or(x, |m| m.max(x))));
            let own_edge_cache_answers = theirs
                .iter()
                .filter(|s| {
                    s.served_by == Some(drilled_index)
                        && s.outcome == "ok"
                        && s.cache.as_deref() == Some("HIT")
                })
                .count() as u64;
            steps.push(Step {
                event: event.clone(),
                moved_after_s,
                last_failure_after_s,
                own_edge_cache_answers,
                clients: span(load, &within),
                alerts: Vec::new(),
            });
        }
        Report {
            drilled: drilled.to_owned(),
            settings: json!({
                "clients_per_region": load.regions.first().map_or(0, |r| r.clients.len()),
                "rate_per_client": load.rate_per_client,
                "duration_s": load.duration.as_secs(),
                "reconnect_every_s": load.reconnect_every.as_secs(),
                "writes_per_mille": load.writes_per_mille,
                "persisted_per_mille": load.persisted_per_mille,
                "users": load.users.len(),
            }),
            steady: span(load, &steady),
            steps,
            region_down_page_after_kill_s: None,
            writes,
            partition,
            seconds: marquee_bench::drill_load::seconds(load, samples),
        }
    }

    /// Lists in each step the alerts of `fired` (from [`fired_since`]) firing between its start
    /// and the next step's, the drill having started at `started` (Unix seconds).
    /// Alerts of the drilled region are silenced from the drain until the undrain.
    fn alerts_by_step(&mut self, fired: &[(BTreeMap<String, String>, Vec<f64>)], started: f64) {
        let starts: Vec<f64> = self.steps.iter().map(|s| started + s.event.at_ms as f64 / 1000.0).collect();
        let at = |label: &str| self.steps.iter().position(|s| s.event.label == label).map(|i| starts[i]);
        let silenced = (at("drain").unwrap_or(f64::INFINITY), at("undrain").unwrap_or(f64::INFINITY));
        let drilled = self.drilled.clone();
        // The unplanned loss of every gateway: how soon the region-down page came.
        self.region_down_page_after_kill_s = at("kill").and_then(|kill| {
            fired
                .iter()
                .filter(|(l, _)| {
                    l.get("alertname").is_some_and(|a| a == "RegionHasNoGatewayInRotation")
                        && l.get("region") == Some(&drilled)
                })
                .flat_map(|(_, times)| times.iter().copied().filter(|t| *t >= kill))
                .map(|t| t - kill)
                .reduce(f64::min)
        });
        for (i, step) in self.steps.iter_mut().enumerate() {
            let (from, to) = (starts[i], starts.get(i + 1).copied().unwrap_or(f64::INFINITY));
            for (labels, times) in fired {
                let Some(first) = times.iter().copied().find(|t| *t >= from - 5.0 && *t < to) else {
                    continue;
                };
                let label = |name: &str| labels.get(name).cloned().unwrap_or_default();
                step.alerts.push(Fired {
                    alert: label("alertname"),
                    severity: label("severity"),
                    region: label("region"),
                    instance: labels.get("instance").cloned(),
                    after_s: (first - from).max(0.0),
                    silenced: labels.get("region") == Some(&drilled)
                        && first.max(from) >= silenced.0
                        && first.max(from) < silenced.1,
                });
            }
            step.alerts.sort_by(|a, b| a.after_s.total_cmp(&b.after_s));
        }
    }

    fn markdown(&self, args: &DrillArgs) -> String {
        let mut md = format!(
            "# Failover drill: {}\n\nCommand: `cargo xtask drill --region {} --clients {} --rate {} --phase-secs {} \
             --partition-secs {} --reconnect-secs {}` on the running rig (`cargo xtask rig up`).\n\n\
             Load: {} clients per region, each from its own address, {} req/s each, open loop; 30 % a \
             partner's persisted GETs of 200 hot movies, 5 % signed-in ratings, the rest movie reads over \
             POST. Clients reconnect every {} s (and resolve the API's name again, within its 5 s TTL).\n\n\
             ![failover](failover.svg)\n\n",
            self.drilled,
            args.region,
            args.clients,
            args.rate,
            args.phase_secs,
            args.partition_secs,
            args.reconnect_secs,
            args.clients,
            args.rate,
            args.reconnect_secs,
        );
        md.push_str("| phase | client region | requests | failed | failed GETs | failed ratings | p99 ms | answered by | edge hits |\n|---|---|---:|---:|---:|---:|---:|---|---:|\n");
        let row = |md: &mut String, phase: &str, name: &str, span: &Span| {
            let by = span.served_by.iter().map(|(r, n)| format!("{r} {n}")).collect::<Vec<_>>().join(", ");
            let failed = if span.failures.is_empty() {
                "0".to_owned()
            } else {
                format!(
                    "{} ({})",
                    span.failed,
                    span.failures.iter().map(|(k, v)| format!("{v} {k}")).collect::<Vec<_>>().join(", ")
                )
            };
            md.push_str(&format!(
                "| {phase} | {name} | {} | {failed} | {} of {} | {} of {} | {:.1} | {by} | {} |\n",
                span.requests,
                span.failed_gets,
                span.gets,
                span.failed_writes,
                span.writes,
                span.p99_ms,
                span.edge_hits
            ));
        };
        for (name, span) in &self.steady {
            row(&mut md, "steady", name, span);
        }
        for step in &self.steps {
            for (name, span) in &step.clients {
                row(&mut md, &step.event.label, name, span);
            }
        }
        md.push_str(&format!(
            "\n| step | at s | step took s | {0} clients moved after s | their last failure after s | \
             answered by {0}'s edge cache |\n|---|---:|---:|---:|---:|---:|\n",
            self.drilled
        ));
        let s = |v: Option<f64>| v.map_or("—".to_owned(), |v| format!("{v:.1}"));
        for step in &self.steps {
            md.push_str(&format!(
                "| {} | {:.1} | {:.1} | {} | {} | {} |\n",
                step.event.what,
                step.event.at_ms as f64 / 1000.0,
                (step.event.done_ms - step.event.at_ms) as f64 / 1000.0,
                s(step.moved_after_s),
                s(step.last_failure_after_s),
                step.own_edge_cache_answers,
            ));
        }
        md.push_str(
            "\n\"Moved after\": from the step to the last request of the drilled region's clients answered \
             by its edge (drain, kill), or to the first its gateways answered again (undrain, restart).\n",
        );
        md.push_str(
            "\nAlerts (regions/monitoring/rules.yml, evaluated every 5 s) firing during each step, and \
             how long after the step's start each first fired:\n\n| step | alerts |\n|---|---|\n",
        );
        for step in &self.steps {
            let alerts = if step.alerts.is_empty() {
                "none".to_owned()
            } else {
                step.alerts
                    .iter()
                    .map(|a| {
                        let at =
                            a.instance.as_deref().map_or(a.region.clone(), |i| format!("{} {i}", a.region));
                        let silenced = if a.silenced { ", silenced: drained" } else { "" };
                        format!("{} ({}, {at}{silenced}) after {:.0} s", a.alert, a.severity, a.after_s)
                    })
                    .collect::<Vec<_>>()
                    .join("; ")
            };
            md.push_str(&format!("| {} | {alerts} |\n", step.event.label));
        }
        md.push_str(&format!(
            "\nThe drained region's alerts are silenced in Alertmanager from the drain to the undrain, as \
             the runbook does. After every {} gateway was killed, `RegionHasNoGatewayInRotation` paged \
             after {} s.\n",
            self.drilled,
            s(self.region_down_page_after_kill_s)
        ));
        md.push_str(&format!(
            "\nAcknowledged ratings: {}; read back with their score through {}; **lost: {}**.\n",
            self.writes.acknowledged,
            self.writes.found.iter().map(|(r, n)| format!("{r} {n}")).collect::<Vec<_>>().join(", "),
            self.writes.lost,
        ));
        if !self.writes.examples.is_empty() {
            md.push_str(&format!("Lost, for example: {}\n", self.writes.examples.join("; ")));
        }
        let p = &self.partition;
        md.push_str(&format!(
            "\nAfter the partition: the {} ratings acknowledged before the heal (on both sides of the cut) \
             were all read back through every region {} s after the heal; every rating total the change \
             log lists from the drill's start to the heal was exact in every region, over the same \
             buckets, {} s after the heal (`gateway reconcile --check`, polled every second while the \
             load went on):\n\n",
            p.ratings_before_heal,
            s(p.ratings_found_after_heal_s),
            s(p.totals_exact_after_heal_s),
        ));
        md.push_str(&format!(
            "\nBoth regions' edges answered partners the same rating (`movie-rating-v1`) for the {} movies \
             rated while the data centers were cut apart (at most {COMPARED_MOVIES}) {} s after the heal: the \
             other side's ratings had reached each region's caches and purged its edge.\n",
            p.movies_compared,
            s(p.answers_agree_after_heal_s),
        ));
        for disagreed in &p.disagreed {
            md.push_str(&format!("- still disagreeing: {disagreed}\n"));
        }
        for (region, said) in &p.totals {
            md.push_str(&format!("- {region}: {said}\n"));
        }
        md
    }
}
