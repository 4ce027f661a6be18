//! Marquee's load generator and report.
//!
//! - `workload`: what requests a run sends (Zipf popularity, the request mix, tokens).
//! - `load`: the open-loop driver and its HDR-histogram recorder.
//! - `targets`: gateways started by `bench`, plain URLs, and the static-bytes limit.
//! - `report`: JSON, Markdown and SVG output.
//! - `drill_load`: the failover drill's load from every region's clients, and its report.
//!
//! The scenarios (`run`, `ramp`, `compare`, and `live::live_catalog`) are functions here so
//! the smoke test drives the same code as the command line.

pub mod dns;
pub mod drill_load;
pub mod live;
pub mod load;
pub mod report;
pub mod targets;
pub mod workload;

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, bail};
use serde::Serialize;

use load::{LoadSpec, Recorder, Target};
use report::{Machine, RampStep, Report, TargetResult};
pub use targets::ManagedStore;
use targets::{GatewayCounters, ManagedGateway, StaticServer};
use workload::{Dialect, Generator, Workload, documents, nested_answer};

/// Where the gateway under test comes from.
#[derive(Clone, Debug, Serialize)]
pub enum GatewaySource {
    /// `bench` starts `bin` over `store` (and can mint user tokens).
    Managed {
        /// The `gateway` binary.
        bin: PathBuf,
        /// What it serves from.
        store: ManagedStore,
    },
    /// An already running gateway (public requests only, unless it shares `bench`'s tokens).
    Url(String),
}

/// What every scenario needs.
#[derive(Clone, Debug, Serialize)]
pub struct Setup {
    /// The gateway.
    pub gateway: GatewaySource,
    /// The workload.
    pub workload: Workload,
    /// Load settings (for `ramp`, the rate is the first step).
    pub spec: LoadSpec,
    /// Signed-in users to mint tokens for.
    pub users: usize,
    /// Load sent to each target before measuring (not recorded): warms page caches and pools.
    pub warmup: std::time::Duration,
    /// The exact command line, for the report.
    #[serde(skip)]
    pub command: String,
    /// User tokens minted elsewhere (by the gateway's own tools) for a gateway `bench` did not
    /// start; used instead of minting.
    #[serde(skip)]
    pub preset_tokens: Vec<Arc<str>>,
    /// Be a client of one region: resolve the target's name through this DNS server and send
    /// from this address (the target may then be a name, e.g. the rig's `api.marquee.test`).
    pub route: Option<dns::ClientRoute>,
}

/// A gateway ready to take load, with tokens.
pub(crate) struct Prepared {
    _managed: Option<ManagedGateway>,
    pub(crate) target: Target,
    pub(crate) users: Vec<Arc<str>>,
    /// A real response body, replayed by the static server.
    sample_body: axum::body::Bytes,
    pub(crate) client: reqwest::Client,
    _scratch: tempfile::TempDir,
}

pub(crate) async fn prepare(setup: &Setup) -> anyhow::Result<Prepared> {
    let scratch = tempfile::tempdir()?;
    let client = load::client(setup.spec.timeout, setup.route.as_ref());
    let (managed, target) = match &setup.gateway {
        GatewaySource::Managed { bin, store } => {
            let gateway = ManagedGateway::spawn(
                bin.clone(),
                store.clone(),
                scratch.path().to_owned(),
                "marquee".into(),
            )
            .await?;
            let target = gateway.target.clone();
            (Some(gateway), target)
        }
        GatewaySource::Url(url) if setup.route.is_some() => (None, Target::named("marquee", url.clone())?),
        GatewaySource::Url(url) => (None, Target::new("marquee", url.clone())?),
    };
    let wants_users = setup.users > 0 && !setup.workload.hot;
    let users = match (&managed, wants_users) {
        _ if wants_users && !setup.preset_tokens.is_empty() => setup.preset_tokens.clone(),
        (Some(gateway), true) => gateway.mint_user_tokens(setup.users)?,
        (None, true) => {
            bail!(
                "signed-in load needs a gateway started by bench (--gateway-bin and --data-dir or --gateway-config)"
            )
        }
        (_, false) => Vec::new(),
    };
    let sample_body = targets::register_persisted(&client, &target).await?;
    Ok(Prepared { _managed: managed, target, users, sample_body, client, _scratch: scratch })
}

pub(crate) fn settings(setup: &Setup, extra: serde_json::Value) -> serde_json::Value {
    let mut value = serde_json::to_value(setup).unwrap_or_default();
    if let (Some(map), Some(extra)) = (value.as_object_mut(), extra.as_object()) {
        map.extend(extra.clone());
    }
    value
}

/// One slice of load against `target`, with gateway counters when it is one.
pub(crate) async fn slice(
    client: &reqwest::Client,
    target: &Target,
    gateway: bool,
    generator: &mut Generator,
    spec: &LoadSpec,
    recorder: &mut Recorder,
) -> anyhow::Result<Option<GatewayCounters>> {
    let before = if gateway { Some(GatewayCounters::scrape(client, target).await?) } else { None };
    load::run(client, target, generator, spec, recorder).await?;
    match before {
        Some(before) => Ok(Some(GatewayCounters::scrape(client, target).await?.since(before))),
        None => Ok(None),
    }
}

/// Sends `setup.warmup` of the workload to `target` and forgets what it measured.
pub(crate) async fn warm(setup: &Setup, prepared: &Prepared, target: &Target) -> anyhow::Result<()> {
    if setup.warmup.is_zero() {
        return Ok(());
    }
    let mut generator = Generator::new(
        Workload { seed: setup.workload.seed ^ 0x5eed, ..setup.workload.clone() },
        prepared.users.clone(),
    )
    .and_then(|g| g.for_dialect(target.dialect))
    .map_err(anyhow::Error::msg)?;
    let spec = LoadSpec { duration: setup.warmup, ..setup.spec.clone() };
    load::run(&prepared.client, target, &mut generator, &spec, &mut Recorder::default()).await?;
    Ok(())
}

fn add(a: Option<GatewayCounters>, b: Option<GatewayCounters>) -> Option<GatewayCounters> {
    match (a, b) {
        (Some(a), Some(b)) => Some(GatewayCounters {
            store_calls: a.store_calls + b.store_calls,
            store_statements: a.store_statements + b.store_statements,
            store_round_trips: a.store_round_trips + b.store_round_trips,
            response_hits: a.response_hits + b.response_hits,
            response_misses: a.response_misses + b.response_misses,
            graphql_requests: a.graphql_requests + b.graphql_requests,
            entity_hits: a.entity_hits + b.entity_hits,
            entity_misses: a.entity_misses + b.entity_misses,
        }),
        (a, None) => a,
        (None, b) => b,
    }
}

/// Movies whose nested answers a peer must match before it is measured.
const EQUIVALENCE_SAMPLE: usize = 20;

/// Asks Marquee and `peer` the nested query for the same movies (drawn like the workload's) and
/// fails unless both give the same title, year and cast: a peer that answered a different or
/// cheaper question would make the comparison meaningless.
async fn check_same_answers(setup: &Setup, prepared: &Prepared, peer: &Target) -> anyhow::Result<()> {
    let mut generator = Generator::new(setup.workload.clone(), Vec::new()).map_err(anyhow::Error::msg)?;
    let ask = |target: &Target, document: &'static str, id: String| {
        let url = format!("{}/graphql", target.base_url);
        let body = serde_json::json!({ "query": document, "variables": { "id": id } });
        let request = prepared.client.post(url).json(&body);
        async move {
            let response = request.send().await?.error_for_status()?;
            anyhow::Ok(response.json::<serde_json::Value>().await?)
        }
    };
    for _ in 0..EQUIVALENCE_SAMPLE {
        let id = generator.movie_id();
        let ours = ask(&prepared.target, documents::NESTED, id.clone()).await?;
        let theirs = ask(peer, documents::POSTGRAPHILE_NESTED, id.clone()).await?;
        let (a, b) = (nested_answer(Dialect::Marquee, &ours), nested_answer(peer.dialect, &theirs));
        match (a, b) {
            (Some(a), Some(b)) if a == b => {}
            (a, b) => bail!(
                "{} and Marquee answer the nested query for {id} differently (is the peer loaded with \
                 this catalog?)\n  marquee: {}\n  {}: {}",
                peer.name,
                a.map_or_else(|| ours.to_string(), |v| v.to_string()),
                peer.name,
                b.map_or_else(|| theirs.to_string(), |v| v.to_string())
            ),
        }
    }
    println!(
        "compare: {} gives the same nested answers as Marquee for {EQUIVALENCE_SAMPLE} movies",
        peer.name
    );
    Ok(())
}

/// `bench run`: one rate against the gateway.
pub async fn run(setup: &Setup, title: &str) -> anyhow::Result<Report> {
    let prepared = prepare(setup).await?;
    let mut generator =
        Generator::new(setup.workload.clone(), prepared.users.clone()).map_err(anyhow::Error::msg)?;
    let mut recorder = Recorder::default();
    let counters =
        slice(&prepared.client, &prepared.target, true, &mut generator, &setup.spec, &mut recorder).await?;
    let result = TargetResult::new("marquee", &setup.spec, &recorder, counters);
    let findings = vec![format!(
        "{} offered, {:.0} ok req/s, p99 {:.2} ms, {} errors",
        setup
            .spec
            .saturate
            .map_or_else(|| format!("{:.0} req/s", setup.spec.rate), |n| format!("closed loop ×{n}")),
        result.throughput,
        result.latency.p99_ms,
        result.error_count()
    )];
    Ok(Report {
        title: title.to_owned(),
        command: setup.command.clone(),
        machine: Machine::this(),
        settings: settings(setup, serde_json::json!({})),
        targets: vec![result],
        ramp: Vec::new(),
        findings,
    })
}

/// Settings of `bench ramp`.
#[derive(Clone, Debug, Serialize)]
pub struct RampSpec {
    /// Added to the rate after each step.
    pub step: f64,
    /// Highest rate tried.
    pub max_rate: f64,
    /// p99 objective, milliseconds.
    pub slo_p99_ms: f64,
}

/// `bench ramp`: steps the rate up until p99 breaks the SLO or errors appear.
pub async fn ramp(setup: &Setup, ramp: &RampSpec, title: &str) -> anyhow::Result<Report> {
    if setup.spec.saturate.is_some() {
        bail!("ramp steps an open-loop rate; drop --saturate");
    }
    if ramp.step <= 0.0 || ramp.max_rate < setup.spec.rate {
        bail!("the ramp needs a positive step and a max rate at or above the start rate");
    }
    let prepared = prepare(setup).await?;
    warm(setup, &prepared, &prepared.target).await?;
    let mut steps = Vec::new();
    let mut rate = setup.spec.rate;
    let mut all = Recorder::default();
    let mut total = None;
    while rate <= ramp.max_rate + 1e-9 {
        let spec = LoadSpec { rate, ..setup.spec.clone() };
        let mut generator =
            Generator::new(setup.workload.clone(), prepared.users.clone()).map_err(anyhow::Error::msg)?;
        let mut recorder = Recorder::default();
        let counters =
            slice(&prepared.client, &prepared.target, true, &mut generator, &spec, &mut recorder).await?;
        total = add(total, counters);
        let result = TargetResult::new("marquee", &spec, &recorder, counters);
        let within_slo = result.error_count() == 0 && result.latency.p99_ms <= ramp.slo_p99_ms;
        println!(
            "ramp: {rate:.0} req/s offered -> {:.0} ok/s, p99 {:.2} ms, {} errors{}",
            result.throughput,
            result.latency.p99_ms,
            result.error_count(),
            if within_slo { "" } else { "  (over the SLO)" }
        );
        steps.push(RampStep { rate, result, within_slo });
        all.absorb(&recorder);
        if !within_slo {
            break;
        }
        rate += ramp.step;
    }
    let last_good = steps.iter().take_while(|s| s.within_slo).last().map(|s| s.rate);
    let findings = vec![match last_good {
        Some(r) => format!(
            "saturation: the highest rate with p99 <= {} ms and no errors was {r:.0} req/s{}",
            ramp.slo_p99_ms,
            if steps.iter().all(|s| s.within_slo) {
                " (the ramp's maximum; the limit is higher)"
            } else {
                ""
            }
        ),
        None => format!("even the first step ({:.0} req/s) broke the SLO", setup.spec.rate),
    }];
    let overall = TargetResult::new("marquee (all steps)", &setup.spec, &all, total);
    Ok(Report {
        title: title.to_owned(),
        command: setup.command.clone(),
        machine: Machine::this(),
        settings: settings(setup, serde_json::json!({ "ramp": ramp })),
        targets: vec![overall],
        ramp: steps,
        findings,
    })
}

/// Targets `bench compare` can measure.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub enum CompareTarget {
    /// The gateway as configured (response cache on).
    Marquee,
    /// The same gateway with every request asking caches to step aside (`Cache-Control:
    /// no-cache`).
    MarqueeNoCache,
    /// The static-bytes server inside `bench`: the machine's limit for this response size.
    Static,
    /// Any other loopback URL (e.g. a peer).
    Url(String),
    /// One more gateway `bench` starts, the same binary over the store a configuration file
    /// names (e.g. a ScyllaDB keyspace holding the same catalog): `name=file.toml`. It shares
    /// the first gateway's signing key, so it takes the same users' tokens. A name ending in
    /// `-nocache` sends every request with `Cache-Control: no-cache`, as `marquee-nocache`.
    Config {
        /// Its name in the report.
        name: String,
        /// The configuration file.
        file: PathBuf,
    },
}

impl CompareTarget {
    /// Parses `marquee`, `marquee-nocache`, `static`, `name=http://127.0.0.1:port` or
    /// `name=file.toml`.
    pub fn parse(text: &str) -> Result<CompareTarget, String> {
        match text {
            "marquee" => Ok(CompareTarget::Marquee),
            "marquee-nocache" => Ok(CompareTarget::MarqueeNoCache),
            "static" => Ok(CompareTarget::Static),
            other if other.contains("http://") => Ok(CompareTarget::Url(other.to_owned())),
            other => match other.split_once('=') {
                Some((name, file)) if !name.is_empty() && file.ends_with(".toml") => {
                    Ok(CompareTarget::Config { name: name.to_owned(), file: file.into() })
                }
                _ => Err(format!(
                    "unknown target `{other}`: marquee, marquee-nocache, static, name=URL or name=file.toml"
                )),
            },
        }
    }
}

/// `bench compare`: several targets, interleaved in slices so machine noise hits all alike.
/// `static_exe`: the bench binary, to run the static server in its own process (`None`: in
/// this one).
pub async fn compare(
    setup: &Setup,
    which: &[CompareTarget],
    rounds: usize,
    static_exe: Option<&std::path::Path>,
    title: &str,
) -> anyhow::Result<Report> {
    if which.is_empty() || rounds == 0 {
        bail!("compare needs at least one target and one round");
    }
    let prepared = prepare(setup).await?;
    let mut statics = Vec::new();
    let mut others = Vec::new();
    let mut targets: Vec<(Target, bool)> = Vec::new();
    for t in which {
        match t {
            CompareTarget::Marquee => targets.push((prepared.target.clone(), true)),
            CompareTarget::MarqueeNoCache => {
                let mut target = prepared.target.clone();
                target.name = "marquee-nocache".into();
                target.headers.push(("cache-control".into(), "no-cache".into()));
                targets.push((target, true));
            }
            CompareTarget::Static => {
                let server = match static_exe {
                    Some(exe) => StaticServer::start_process(
                        exe,
                        "static",
                        &prepared.sample_body,
                        prepared._scratch.path(),
                    )?,
                    None => StaticServer::start("static", prepared.sample_body.clone()).await?,
                };
                targets.push((server.target.clone(), false));
                statics.push(server);
            }
            CompareTarget::Url(spec) => {
                let (name, url) = spec.split_once('=').context("a URL target is name=http://...")?;
                let mut target = Target::new(name, url)?;
                if name.starts_with("postgraphile") {
                    target.dialect = Dialect::PostGraphile;
                    check_same_answers(setup, &prepared, &target).await?;
                }
                targets.push((target, false));
            }
            CompareTarget::Config { name, file } => {
                let GatewaySource::Managed { bin, .. } = &setup.gateway else {
                    bail!(
                        "a name=file.toml target needs a gateway started by bench (--data-dir or --gateway-config)"
                    )
                };
                let store = ManagedStore::Config(file.clone());
                let scratch = prepared._scratch.path().to_owned();
                let gateway = ManagedGateway::spawn(bin.clone(), store, scratch, name.clone()).await?;
                targets::register_persisted(&prepared.client, &gateway.target).await?;
                let mut target = gateway.target.clone();
                if target.name.ends_with("-nocache") {
                    target.headers.push(("cache-control".into(), "no-cache".into()));
                }
                targets.push((target, true));
                others.push(gateway);
            }
        }
    }
    for (target, _) in &targets {
        warm(setup, &prepared, target).await?;
    }
    let mut recorders: Vec<Recorder> = targets.iter().map(|_| Recorder::default()).collect();
    let mut generators = targets
        .iter()
        .map(|(t, _)| {
            Generator::new(setup.workload.clone(), prepared.users.clone())
                .and_then(|g| g.for_dialect(t.dialect))
        })
        .collect::<Result<Vec<_>, _>>()
        .map_err(anyhow::Error::msg)?;
    let mut counters: Vec<Option<GatewayCounters>> = targets.iter().map(|_| None).collect();
    for round in 0..rounds {
        // Rotate the order each round so no target always runs first (or right after another).
        for k in 0..targets.len() {
            let i = (k + round) % targets.len();
            let (target, gateway) = &targets[i];
            let delta =
                slice(&prepared.client, target, *gateway, &mut generators[i], &setup.spec, &mut recorders[i])
                    .await?;
            counters[i] = add(counters[i], delta);
            println!(
                "compare: round {} {}: {} requests so far",
                round + 1,
                target.name,
                recorders[i].completed()
            );
        }
    }
    let results: Vec<TargetResult> = targets
        .iter()
        .zip(&recorders)
        .zip(&counters)
        .map(|(((t, _), r), c)| TargetResult::new(&t.name, &setup.spec, r, *c))
        .collect();
    let mut findings = Vec::new();
    if let Some(base) = results.iter().find(|r| r.name == "static") {
        for r in results.iter().filter(|r| r.name != "static") {
            if base.throughput > 0.0 {
                findings.push(format!(
                    "{}: {:.0} ok req/s = {:.0}% of the static-bytes limit's {:.0}; p99 {:.2} ms vs {:.2} ms",
                    r.name,
                    r.throughput,
                    100.0 * r.throughput / base.throughput,
                    base.throughput,
                    r.latency.p99_ms,
                    base.latency.p99_ms
                ));
            }
        }
    }
    if let (Some(on), Some(off)) =
        (results.iter().find(|r| r.name == "marquee"), results.iter().find(|r| r.name == "marquee-nocache"))
    {
        findings.push(format!(
            "caches on vs off: {} vs {} store calls per request; {:.0} vs {:.0} ok req/s; p99 {:.2} vs {:.2} ms",
            on.store_calls_per_request.map_or("-".into(), |v| format!("{v:.2}")),
            off.store_calls_per_request.map_or("-".into(), |v| format!("{v:.2}")),
            on.throughput,
            off.throughput,
            on.latency.p99_ms,
            off.latency.p99_ms
        ));
    }
    let base = results
        .iter()
        .find(|r| r.name == "marquee")
        .or_else(|| results.iter().find(|r| r.name == "marquee-nocache"));
    if let Some(base) = base {
        for other in results.iter().filter(|r| {
            which.iter().any(|w| matches!(w, CompareTarget::Config { name, .. } if *name == r.name))
        }) {
            if base.throughput > 0.0 && base.latency.p99_ms > 0.0 {
                findings.push(format!(
                    "{} vs {}: {:.0} vs {:.0} ok req/s = {:.2}x; p99 {:.2} vs {:.2} ms = {:.2}x; {} vs {} store statements per request; errors {} vs {}",
                    other.name,
                    base.name,
                    other.throughput,
                    base.throughput,
                    other.throughput / base.throughput,
                    other.latency.p99_ms,
                    base.latency.p99_ms,
                    other.latency.p99_ms / base.latency.p99_ms,
                    other.store_statements_per_request.map_or("-".into(), |v| format!("{v:.2}")),
                    base.store_statements_per_request.map_or("-".into(), |v| format!("{v:.2}")),
                    other.error_count(),
                    base.error_count()
                ));
            }
        }
    }
    for peer in targets.iter().filter(|(t, _)| t.dialect != Dialect::Marquee).map(|(t, _)| &t.name) {
        let Some(theirs) = results.iter().find(|r| &r.name == peer) else { continue };
        for ours in results.iter().filter(|r| r.name.starts_with("marquee")) {
            if theirs.throughput > 0.0 {
                findings.push(format!(
                    "{} vs {peer}: {:.0} vs {:.0} ok req/s = {:.2}x; p99 {:.2} vs {:.2} ms; errors {} vs {}",
                    ours.name,
                    ours.throughput,
                    theirs.throughput,
                    ours.throughput / theirs.throughput,
                    ours.latency.p99_ms,
                    theirs.latency.p99_ms,
                    ours.error_count(),
                    theirs.error_count()
                ));
            }
        }
    }
    drop(statics);
    Ok(Report {
        title: title.to_owned(),
        command: setup.command.clone(),
        machine: Machine::this(),
        settings: settings(setup, serde_json::json!({ "rounds": rounds, "targets": which })),
        targets: results,
        ramp: Vec::new(),
        findings,
    })
}
