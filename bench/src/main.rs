//! The `bench` binary: parse the command line, run a scenario, write the report.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};
use marquee_bench::dns::ClientRoute;
use marquee_bench::load::LoadSpec;
use marquee_bench::workload::{Mix, Workload};
use marquee_bench::{CompareTarget, GatewaySource, ManagedStore, RampSpec, Setup};

/// Marquee's load generator: open-loop load, HDR latencies, JSON + Markdown + SVG reports.
#[derive(Parser)]
#[command(name = "bench", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Scenario,
}

#[derive(Subcommand)]
enum Scenario {
    /// One rate against the gateway.
    Run(Common),
    /// Step the rate up until p99 breaks the SLO or errors appear.
    Ramp {
        #[command(flatten)]
        common: Common,
        /// Added to the rate after each step.
        #[arg(long, default_value_t = 500.0)]
        step: f64,
        /// Highest rate tried.
        #[arg(long, default_value_t = 10_000.0)]
        max_rate: f64,
        /// p99 objective in milliseconds.
        #[arg(long, default_value_t = 10.0)]
        slo_p99_ms: f64,
    },
    /// Several targets side by side, interleaved in slices of --duration each.
    Compare {
        #[command(flatten)]
        common: Common,
        /// Comma-separated: marquee, marquee-nocache, static, name=http://127.0.0.1:PORT,
        /// name=FILE.toml. A URL target named postgraphile… speaks PostGraphile's schema (started
        /// by `cargo xtask bench-peer`) and takes the nested scenario only. A FILE.toml target is
        /// one more gateway bench starts over the store that file configures (e.g. the same
        /// catalog in a ScyllaDB keyspace), measured beside the first; a name ending in
        /// `-nocache` asks caches to step aside, as marquee-nocache does.
        #[arg(long, default_value = "marquee,marquee-nocache,static", value_delimiter = ',')]
        targets: Vec<String>,
        /// Slices per target.
        #[arg(long, default_value_t = 3)]
        rounds: usize,
    },
    /// The catalog changed under load: the workload before, during and after a delta applied
    /// live (or a new generation loaded beside the gateway), with the change's duration.
    LiveCatalog {
        #[command(flatten)]
        common: Common,
        /// What changes.
        #[arg(long, value_enum, default_value_t = LiveChange::Delta)]
        change: LiveChange,
        /// Titles the delta changes (spread over every popularity rank).
        #[arg(long, default_value_t = 10_000)]
        delta_titles: u64,
        /// The generator seed the catalog in --data-dir was seeded with.
        #[arg(long, default_value_t = 1)]
        catalog_seed: u64,
        /// Length of the phases before and after the change.
        #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
        phase: Duration,
        /// Most time the change may take.
        #[arg(long, default_value = "20m", value_parser = humantime::parse_duration)]
        change_timeout: Duration,
    },
    /// Serve one file's bytes to every request (the static target of `compare`).
    #[command(hide = true)]
    ServeStatic {
        /// The body.
        #[arg(long)]
        body: PathBuf,
    },
}

#[derive(Copy, Clone, ValueEnum)]
enum LiveChange {
    /// A delta of changed titles, applied live (`gateway import imdb --incremental`).
    Delta,
    /// A new generation loaded beside the gateway (`gateway seed`), switched to live.
    Reload,
}

#[derive(Copy, Clone, ValueEnum)]
enum Kind {
    /// The realistic mix (movie, browse, search, person, me, writes at 100:1).
    Mix,
    /// One movie's detail as a persisted GET: the response-cache hit path.
    Hot,
    /// The nested movie → cast → person query only.
    Nested,
}

#[derive(Args)]
struct Common {
    /// The `gateway` binary to start (with --data-dir or --gateway-config); bench mints user
    /// tokens with it.
    #[arg(long, default_value = "target/release/gateway")]
    gateway_bin: PathBuf,
    /// Data directory of the gateway bench starts (must hold a catalog).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Or: the configuration file of the gateway bench starts, for a store other than the
    /// embedded one (e.g. a ScyllaDB keyspace holding a catalog).
    #[arg(long, conflicts_with = "data_dir")]
    gateway_config: Option<PathBuf>,
    /// Or: an already running gateway on loopback (public requests only).
    #[arg(long, conflicts_with_all = ["data_dir", "gateway_config"])]
    target: Option<String>,
    /// Workload.
    #[arg(long, value_enum, default_value_t = Kind::Mix)]
    scenario: Kind,
    /// Request mix for `--scenario mix`, e.g. movie=40,browse=15,search=15,person=15,me=15,write=1.
    #[arg(long)]
    mix: Option<String>,
    /// Requests per second (the first step for `ramp`).
    #[arg(long, default_value_t = 500.0)]
    rate: f64,
    /// Length of the run (of each step or slice), e.g. 30s.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// Most requests per run (step, slice).
    #[arg(long, default_value_t = 1_000_000)]
    max_requests: u64,
    /// Movies in the catalog (ids tt0000001..).
    #[arg(long)]
    movies: u64,
    /// People in the catalog [default: 60% of movies, as `gateway seed` makes].
    #[arg(long)]
    people: Option<u64>,
    /// Zipf exponent of popularity.
    #[arg(long, default_value_t = 1.0)]
    zipf: f64,
    /// Share of public reads sent with a user token.
    #[arg(long, default_value_t = 0.3)]
    signed_in: f64,
    /// Share of public reads sent as persisted GETs (the rest are ad hoc POSTs).
    #[arg(long, default_value_t = 0.7)]
    persisted: f64,
    /// Load sent to each target before measuring, not recorded (page caches, pools).
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    warmup: Duration,
    /// Signed-in users (tokens minted with `gateway token`).
    #[arg(long, default_value_t = 100)]
    users: usize,
    /// Per-request timeout.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    timeout: Duration,
    /// Requests in flight before new ones count as client overload (open loop).
    #[arg(long, default_value_t = 1_000)]
    max_in_flight: usize,
    /// Open loop: most requests on the wire at once (a load balancer's connection pool);
    /// requests due while all are busy wait, and the wait counts in their latency.
    #[arg(long, default_value_t = 64)]
    connections: usize,
    /// Measure capacity instead: this many connections, each sending its next request as soon
    /// as the last is answered (closed loop; --rate is ignored).
    #[arg(long)]
    saturate: Option<usize>,
    /// Generator seed.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Be a client of one region: resolve --target's name through this DNS server (e.g. the
    /// rig's geo-DNS, 127.0.0.1:18053)...
    #[arg(long, requires_all = ["client_ip", "target"])]
    dns: Option<std::net::SocketAddr>,
    /// ...from this address, which requests are also sent from (e.g. 127.20.0.1 for a client
    /// in the rig's eu-west subnet).
    #[arg(long, requires = "dns")]
    client_ip: Option<std::net::IpAddr>,
    /// Output directory for results.json, report.md and the plots.
    #[arg(long)]
    out: PathBuf,
    /// Report title.
    #[arg(long)]
    title: Option<String>,
}

impl Common {
    fn setup(&self) -> anyhow::Result<Setup> {
        let managed = |store| GatewaySource::Managed { bin: self.gateway_bin.clone(), store };
        let gateway = match (&self.target, &self.data_dir, &self.gateway_config) {
            (Some(url), None, None) => GatewaySource::Url(url.clone()),
            (None, Some(dir), None) => managed(ManagedStore::DataDir(dir.clone())),
            (None, None, Some(file)) => managed(ManagedStore::Config(file.clone())),
            _ => anyhow::bail!(
                "give --data-dir or --gateway-config (bench starts the gateway) or --target URL"
            ),
        };
        let mix = match (self.scenario, &self.mix) {
            (Kind::Nested, _) => Mix::parse("nested=1").map_err(anyhow::Error::msg)?,
            (_, Some(text)) => Mix::parse(text).map_err(anyhow::Error::msg)?,
            (_, None) => Mix::realistic(),
        };
        let hot = matches!(self.scenario, Kind::Hot);
        let public_only = hot || matches!(self.scenario, Kind::Nested);
        Ok(Setup {
            gateway,
            workload: Workload {
                movies: self.movies,
                people: self.people.unwrap_or(self.movies * 3 / 5).max(1),
                zipf: self.zipf,
                mix,
                signed_in: if public_only { 0.0 } else { self.signed_in },
                persisted: self.persisted,
                hot,
                seed: self.seed,
            },
            spec: LoadSpec {
                rate: self.rate,
                duration: self.duration,
                max_requests: self.max_requests,
                timeout: self.timeout,
                max_in_flight: self.max_in_flight,
                connections: self.connections,
                saturate: self.saturate,
            },
            users: if public_only { 0 } else { self.users },
            warmup: self.warmup,
            command: std::env::args().map(|a| shell_quote(&a)).collect::<Vec<_>>().join(" "),
            preset_tokens: Vec::new(),
            route: self.dns.zip(self.client_ip).map(|(dns, source)| ClientRoute { dns, source }),
        })
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let (report, out) = match &cli.command {
        Scenario::Run(common) => {
            let title = common.title.clone().unwrap_or_else(|| "Marquee: bench run".into());
            (marquee_bench::run(&common.setup()?, &title).await?, &common.out)
        }
        Scenario::Ramp { common, step, max_rate, slo_p99_ms } => {
            let title = common.title.clone().unwrap_or_else(|| "Marquee: bench ramp".into());
            let spec = RampSpec { step: *step, max_rate: *max_rate, slo_p99_ms: *slo_p99_ms };
            (marquee_bench::ramp(&common.setup()?, &spec, &title).await?, &common.out)
        }
        Scenario::LiveCatalog { common, change, delta_titles, catalog_seed, phase, change_timeout } => {
            let title =
                common.title.clone().unwrap_or_else(|| "Marquee: the catalog changed under load".into());
            let live = marquee_bench::live::LiveSpec {
                change: match change {
                    LiveChange::Delta => marquee_bench::live::Change::Delta,
                    LiveChange::Reload => marquee_bench::live::Change::Reload,
                },
                delta_titles: *delta_titles,
                catalog_seed: *catalog_seed,
                phase: *phase,
                change_timeout: *change_timeout,
                data_dir: common.data_dir.clone().ok_or_else(|| {
                    anyhow::anyhow!("live-catalog changes the catalog in --data-dir: give it")
                })?,
                gateway_bin: common.gateway_bin.clone(),
            };
            (marquee_bench::live::live_catalog(&common.setup()?, &live, &title).await?, &common.out)
        }
        Scenario::ServeStatic { body } => {
            let body = std::fs::read(body)?;
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
            println!("listening on http://{}", listener.local_addr()?);
            axum::serve(listener, marquee_bench::targets::static_router(body.into())).await?;
            return Ok(());
        }
        Scenario::Compare { common, targets, rounds } => {
            let title = common.title.clone().unwrap_or_else(|| "Marquee: bench compare".into());
            let which = targets
                .iter()
                .map(|t| CompareTarget::parse(t))
                .collect::<Result<Vec<_>, _>>()
                .map_err(anyhow::Error::msg)?;
            let exe = std::env::current_exe()?;
            (
                marquee_bench::compare(&common.setup()?, &which, *rounds, Some(&exe), &title).await?,
                &common.out,
            )
        }
    };
    report.write(out)?;
    for finding in &report.findings {
        println!("{finding}");
    }
    println!("wrote {}/report.md", out.display());
    Ok(())
}

/// `arg` as a shell would need it typed.
fn shell_quote(arg: &str) -> String {
    if !arg.is_empty() && arg.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_./=:,@%+".contains(&b)) {
        arg.to_owned()
    } else {
        format!("'{}'", arg.replace('\'', "'\\''"))
    }
}
