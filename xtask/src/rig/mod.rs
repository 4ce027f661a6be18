//! `cargo xtask rig up | status | test | down`: every region of `regions/` (the files with a
//! `[topology]`) on this machine, on loopback, made of the parts production runs or their
//! stand-ins:
//!
//! | rig | production |
//! |---|---|
//! | PowerDNS, LUA records (`netmask`, `ifurlup`) | Route 53 latency records + health checks |
//! | Varnish per region (`regions/rig/edge.vcl`) | CloudFront |
//! | HAProxy per region, checks on `/readyz` | the regional load balancer |
//! | the region's gateways, with its region file | the region's autoscaling group |
//! | a Redis Cluster of three masters per region | ElastiCache (cluster mode) per region |
//! | Apache Cassandra, a node per region's data center (network namespaces, a relay between them that `cargo xtask drill` cuts) | ScyllaDB, a data center per region |
//! | Prometheus, Alertmanager | the monitoring stack |
//! | Jaeger (built from `xtask/tools`' pinned Go module), OTLP in from every gateway | the trace backend (an OpenTelemetry collector and its store) |
//!
//! Everything it writes goes under `target/rig/` (generated configuration, logs, data, and
//! `rig.json`, the parts and their PIDs), every part runs in a process group of its own, and
//! `down` stops each by its PID. Missing Debian packages are installed when run as root.
//!
//! The geo-DNS zone is not rendered here: `up` writes the regions to `regions.json` and applies
//! `terraform/environments/local`, whose traffic policy decides each region's clients' answers,
//! so draining a region on the rig is the same `terraform apply` as in production.

pub(crate) mod regions;
mod render;

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use marquee_bench::dns::ClientRoute;
use serde::{Deserialize, Serialize};

use crate::process::{alive, http_status, listening, signal_and_wait, spawn_detached, wait_for};
use crate::system;
use regions::Region;

/// The API's name in the rig's geo-DNS zone.
pub(crate) const ZONE: &str = "marquee.test";
/// The rig's DNS server.
pub(crate) const DNS: SocketAddr = SocketAddr::new(IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 18053);
/// The rig's Prometheus.
pub(crate) const PROMETHEUS: SocketAddr = SocketAddr::new(IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 19090);
/// Where the rig's Alertmanager listens (Prometheus sends it the alerts that fire).
pub(crate) const ALERTMANAGER: SocketAddr = SocketAddr::new(IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 19093);
/// The rig's Jaeger: where gateways post their spans (OTLP/HTTP)...
pub(crate) const JAEGER_OTLP: SocketAddr = SocketAddr::new(IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 19318);
/// ...and its UI and API (`/trace/<id>`, `/api/traces/<id>`).
pub(crate) const JAEGER_UI: SocketAddr = SocketAddr::new(IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 19686);
/// Jaeger's query API over gRPC (unused by the rig; bound to loopback all the same).
const JAEGER_QUERY_GRPC: SocketAddr = SocketAddr::new(IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 19685);
/// TTL of the geo-DNS answers, in seconds: how long a client may keep using a region that
/// has since failed its health check.
const DNS_TTL: u32 = 5;
/// The round trip between the rig's data centers once the catalog is loaded, in milliseconds
/// (a transatlantic link is 70-150 ms).
const WAN_ROUND_TRIP_MS: u64 = 150;

#[derive(Subcommand)]
pub(crate) enum RigTask {
    /// Start every region of regions/ on loopback, with geo-DNS and monitoring.
    Up(UpArgs),
    /// Each part of the rig, its address, its PID and whether it is healthy (exit status 1
    /// when a part is not).
    Status,
    /// Stop every part of the rig by its PID.
    Down,
    /// Start the rig, check it end to end (`xtask/tests/rig.rs`), and stop it.
    Test,
}

#[derive(Args)]
pub(crate) struct UpArgs {
    /// Run release builds of the gateway (slower to build, as fast as production).
    #[arg(long, conflicts_with = "gateway_bin")]
    release: bool,
    /// Run this gateway binary instead of building one.
    #[arg(long)]
    gateway_bin: Option<PathBuf>,
}

/// One running part of the rig, as `rig.json` records it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct Part {
    /// e.g. `us-east gateway 1`.
    name: String,
    /// What it is in production.
    stands_for: String,
    pid: u32,
    address: String,
    check: Check,
    log: PathBuf,
}

/// A part about to be started.
struct Spec {
    name: String,
    stands_for: &'static str,
    address: String,
    check: Check,
}

/// How `status` tells a part is healthy.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
enum Check {
    /// `GET path` answers 200.
    Http { addr: SocketAddr, path: String },
    /// Every address accepts connections.
    Tcp { addrs: Vec<SocketAddr> },
}

impl Check {
    fn healthy(&self) -> bool {
        match self {
            Check::Http { addr, path } => http_status(*addr, path) == Some(200),
            Check::Tcp { addrs } => addrs.iter().all(|&a| listening(a)),
        }
    }
}

/// `target/rig/rig.json`.
#[derive(Default, Serialize, Deserialize)]
struct State {
    /// The gateway binary the rig runs (the drill restarts gateways with it).
    #[serde(default)]
    gateway: Option<PathBuf>,
    parts: Vec<Part>,
    /// Each region and the address of a client in it, for `status`'s DNS check.
    clients: Vec<(String, IpAddr)>,
}

pub(crate) struct Rig {
    root: PathBuf,
    dir: PathBuf,
    state: State,
}

pub(crate) fn run(root: &Path, task: RigTask) -> anyhow::Result<()> {
    let dir = root.join("target/rig");
    match task {
        RigTask::Up(args) => up(root, &dir, &args),
        RigTask::Status => {
            if !status(&dir)? {
                std::process::exit(1);
            }
            Ok(())
        }
        RigTask::Down => down(&dir),
        RigTask::Test => {
            crate::process::run(root, "cargo", &["test", "-p", "xtask", "--test", "rig", "--", "--nocapture"])
        }
    }
}

/// What the drill and other tools that act on a running rig need of it: its directories, its
/// gateway binary, and its parts by name (to signal, stop and forget them).
impl Rig {
    /// The rig `cargo xtask rig up` left running under `root`, every part of it healthy.
    pub(crate) fn running(root: &Path) -> anyhow::Result<Rig> {
        let dir = root.join("target/rig");
        let Some(state) = load_state(&dir)? else {
            bail!("the rig is not up: `cargo xtask rig up` first");
        };
        if let Some(down) = state.parts.iter().find(|p| !alive(p.pid) || !p.check.healthy()) {
            bail!("{} is not healthy (`cargo xtask rig status`); restart the rig first", down.name);
        }
        Ok(Rig { root: root.to_owned(), dir, state })
    }

    /// The workspace the rig runs from.
    pub(crate) fn root(&self) -> &Path {
        &self.root
    }

    /// The rig's own directory (`target/rig`).
    pub(crate) fn dir(&self) -> &Path {
        &self.dir
    }

    /// The gateway binary the rig's regions run.
    pub(crate) fn gateway(&self) -> anyhow::Result<PathBuf> {
        self.state.gateway.clone().context(
            "target/rig/rig.json does not name its gateway binary: restart the rig (`rig down`, `rig up`)",
        )
    }

    /// The part named `name`.
    pub(crate) fn part(&self, name: &str) -> anyhow::Result<&Part> {
        self.state.parts.iter().find(|p| p.name == name).with_context(|| format!("no part {name}"))
    }

    /// The PIDs of the parts whose names start with `prefix`.
    pub(crate) fn pids_of(&self, prefix: &str) -> Vec<u32> {
        self.state.parts.iter().filter(|p| p.name.starts_with(prefix)).map(|p| p.pid).collect()
    }

    /// Drops the parts whose names start with `prefix` (stopped by the caller) and saves.
    pub(crate) fn forget(&mut self, prefix: &str) -> anyhow::Result<()> {
        self.state.parts.retain(|p| !p.name.starts_with(prefix));
        self.save()
    }
}

impl Part {
    /// Its PID.
    pub(crate) fn pid(&self) -> u32 {
        self.pid
    }

    /// Its log file.
    pub(crate) fn log(&self) -> &Path {
        &self.log
    }
}

fn state_file(dir: &Path) -> PathBuf {
    dir.join("rig.json")
}

fn load_state(dir: &Path) -> anyhow::Result<Option<State>> {
    match std::fs::read(state_file(dir)) {
        Ok(bytes) => Ok(Some(serde_json::from_slice(&bytes).context("reading target/rig/rig.json")?)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).context("reading target/rig/rig.json"),
    }
}

fn up(root: &Path, dir: &Path, args: &UpArgs) -> anyhow::Result<()> {
    if let Some(state) = load_state(dir)?
        && state.parts.iter().any(|p| alive(p.pid))
    {
        bail!("the rig is already up (`cargo xtask rig status`); `cargo xtask rig down` first");
    }
    ensure_packages()?;
    let gateway = match &args.gateway_bin {
        Some(bin) => std::path::absolute(bin).context("--gateway-bin")?,
        None => build_gateway(root, args.release)?,
    };
    let regions = regions::load(&gateway, &root.join("regions"))?;
    println!(
        "rig: {} region(s): {}",
        regions.len(),
        regions.iter().map(|r| r.name.as_str()).collect::<Vec<_>>().join(", ")
    );
    if dir.exists() {
        std::fs::remove_dir_all(dir).with_context(|| format!("clearing {}", dir.display()))?;
    }
    std::fs::create_dir_all(dir.join("logs"))?;
    let mut rig = Rig {
        root: root.to_owned(),
        dir: dir.to_owned(),
        state: State { gateway: Some(gateway.clone()), ..State::default() },
    };
    let started = rig.start(&gateway, &regions);
    if let Err(error) = started {
        eprintln!("rig: {error:#}\nrig: stopping what was started");
        stop_parts(&rig.state.parts);
        let _ = std::fs::remove_file(state_file(dir));
        return Err(error);
    }
    println!();
    status(dir)?;
    println!(
        "\nrig: up. Send traffic as a client of a region with `bench run --dns {DNS} --client-ip \
         <an address of its subnet> --target http://api.{ZONE}:<edge port>` (docs/multi-region.md); \
         `cargo xtask rig down` stops it."
    );
    Ok(())
}

/// The rig's Debian packages, installed when missing.
pub(crate) fn ensure_packages() -> anyhow::Result<()> {
    system::ensure_redis()?;
    let missing: Vec<&str> = [
        "pdns-server",
        "pdns-backend-bind",
        "haproxy",
        "varnish",
        "varnish-modules",
        "prometheus",
        "prometheus-alertmanager",
    ]
    .into_iter()
    .filter(|package| !system::package_installed(package))
    .collect();
    if missing.is_empty() {
        return Ok(());
    }
    println!("rig: installing {}", missing.join(" "));
    system::apt_install(&missing)
}

/// Jaeger's binary, built from the Go module in `xtask/tools` (it pins the version as a
/// `tool`) into `target/rig-tools/` when missing or older than the module.
pub(crate) fn ensure_jaeger(root: &Path) -> anyhow::Result<PathBuf> {
    let tools = root.join("xtask/tools");
    let binary = root.join("target/rig-tools/jaeger");
    let modified = |path: &Path| std::fs::metadata(path).and_then(|m| m.modified()).ok();
    if let (Some(built), Some(pinned)) = (modified(&binary), modified(&tools.join("go.mod")))
        && built >= pinned
    {
        return Ok(binary);
    }
    println!(
        "rig: building Jaeger from xtask/tools/go.mod (Go's module proxy; a few minutes the first time)"
    );
    let mut build = Command::new("go");
    build
        .args(["build", "-o"])
        .arg(&binary)
        .arg("github.com/jaegertracing/jaeger/cmd/jaeger")
        .current_dir(&tools);
    crate::process::check(build, "go build (Jaeger, xtask/tools)")?;
    Ok(binary)
}

fn build_gateway(root: &Path, release: bool) -> anyhow::Result<PathBuf> {
    let mut args = vec!["build", "--quiet", "-p", "marquee-gateway"];
    if release {
        args.push("--release");
    }
    println!("rig: building the gateway{}", if release { " (release)" } else { "" });
    crate::process::run(root, "cargo", &args)?;
    Ok(root.join(if release { "target/release/gateway" } else { "target/debug/gateway" }))
}

impl Rig {
    fn start(&mut self, gateway: &Path, regions: &[Region]) -> anyhow::Result<()> {
        let nodes = self.start_cassandra(regions)?;
        // Before any gateway: they find their data center's node and their Redis Cluster
        // through it.
        self.start_dns(regions, &nodes)?;
        self.start_jaeger()?;
        load_keyspace(gateway, &regions[0])?;
        // From here on the data centers are a WAN apart (the catalog loads at EACH_QUORUM, so
        // it goes first, at loopback speed).
        let cluster = crate::cassandra::running(&crate::cassandra::rig_cluster_dir(&self.dir))
            .context("the Cassandra keeper exited")?;
        crate::cassandra::set_link(&cluster, Some(WAN_ROUND_TRIP_MS), None)?;
        println!("rig: {WAN_ROUND_TRIP_MS} ms between the data centers");
        let key = self.dir.join("signing-key.pem");
        let mut keygen = Command::new(gateway);
        keygen.arg("keygen").arg("--out").arg(&key).stdout(std::process::Stdio::null());
        crate::process::check(keygen, "gateway keygen (one signing key for every region's gateways)")?;
        // The regions' Redis Clusters require AUTH, as ElastiCache with an AUTH token does.
        std::fs::write(self.redis_password_file(), random_hex()?).context("writing the Redis password")?;
        // The secret the edges add to every request they forward, which the load balancers
        // require and the gateways check before believing X-Forwarded-For.
        std::fs::write(self.origin_secret_file(), random_hex()?).context("writing the origin secret")?;
        for region in regions {
            self.start_redis(region)?;
            self.start_gateways(gateway, region, &key)?;
            self.start_load_balancer(region)?;
            // Where its edge sends the reads it cannot answer (the rig's regions weigh the same).
            let others: Vec<&Region> = regions.iter().filter(|r| r.name != region.name).collect();
            self.start_edge(region, &others)?;
            if let Some(client) = first_client(region) {
                self.state.clients.push((region.name.clone(), client));
            }
        }
        wait_for_routing(regions)?;
        self.start_prometheus(regions)?;
        self.save()
    }

    pub(crate) fn save(&self) -> anyhow::Result<()> {
        let json = serde_json::to_vec_pretty(&self.state)?;
        std::fs::write(state_file(&self.dir), json).context("writing target/rig/rig.json")
    }

    fn log(&self, name: &str) -> PathBuf {
        self.dir.join("logs").join(format!("{}.log", name.replace(' ', "-")))
    }

    /// Starts `command` as the part `spec` describes, records it, and waits until `ready`.
    fn launch(
        &mut self,
        spec: Spec,
        command: Command,
        timeout: Duration,
        mut ready: impl FnMut() -> bool,
    ) -> anyhow::Result<()> {
        let Spec { name, stands_for, address, check } = spec;
        println!("rig: starting {name} ({address}), waiting until it is ready");
        let log = self.log(&name);
        let child = spawn_detached(command, &log, &name)?;
        let pid = child.id();
        self.state.parts.push(Part {
            name: name.clone(),
            stands_for: stands_for.to_owned(),
            pid,
            address,
            check,
            log: log.clone(),
        });
        self.save()?;
        wait_for(&name, pid, &log, timeout, &mut ready)
    }

    /// [`Rig::launch`] for a part that is ready, and healthy, while `GET path` on `addr`
    /// answers 200.
    fn launch_http(
        &mut self,
        name: String,
        stands_for: &'static str,
        (addr, path): (SocketAddr, &'static str),
        command: Command,
        timeout: Duration,
    ) -> anyhow::Result<()> {
        let spec = Spec {
            name,
            stands_for,
            address: addr.to_string(),
            check: Check::Http { addr, path: path.into() },
        };
        self.launch(spec, command, timeout, || http_status(addr, path) == Some(200))
    }

    /// An Apache Cassandra cluster of one node per region's data center (RF 1 in each, as
    /// the region files' `replication` says), kept by a keeper process that is the rig's part
    /// (SIGTERM stops every node); each data center's node address, by data center.
    fn start_cassandra(&mut self, regions: &[Region]) -> anyhow::Result<BTreeMap<String, IpAddr>> {
        system::ensure_java()?;
        let dir = crate::cassandra::rig_cluster_dir(&self.dir);
        let topology = crate::cassandra::Topology {
            data_centers: regions.iter().map(|r| r.data_center.clone()).collect(),
            nodes: 1,
            hint_window_secs: 3 * 3600,
            heap_mib: 1024,
        };
        let command = crate::cassandra::keeper(&self.root, &dir, &topology)?;
        let ready = || crate::cassandra::running(&dir).is_some();
        let spec = Spec {
            name: "cassandra".into(),
            stands_for: "the ScyllaDB cluster (a data center per region)",
            address: String::new(),
            check: Check::Tcp { addrs: Vec::new() },
        };
        self.launch(spec, command, Duration::from_secs(300), ready)?;
        let state = crate::cassandra::running(&dir).context("the Cassandra keeper exited")?;
        let mut nodes = BTreeMap::new();
        let mut addrs = Vec::new();
        for (dc, points) in &state.data_centers {
            for point in points {
                let addr: SocketAddr = point.parse().with_context(|| format!("a node's address {point}"))?;
                nodes.entry(dc.clone()).or_insert(addr.ip());
                addrs.push(addr);
            }
        }
        // Known once it runs: the part's address and check.
        let part = self.state.parts.last_mut().context("the cassandra part")?;
        part.address = addrs.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ");
        part.check = Check::Tcp { addrs };
        self.save()?;
        Ok(nodes)
    }

    /// The secret every region's edge proves itself to its load balancer and gateways with.
    fn origin_secret_file(&self) -> PathBuf {
        self.dir.join("origin-secret")
    }

    fn origin_secret(&self) -> anyhow::Result<String> {
        std::fs::read_to_string(self.origin_secret_file()).context("reading the rig's origin secret")
    }

    /// The password of every region's Redis Cluster.
    fn redis_password_file(&self) -> PathBuf {
        self.dir.join("redis-password")
    }

    /// The directory of `region`'s Redis Cluster (its nodes' files, and `ca.pem`).
    fn redis_dir(&self, region: &Region) -> PathBuf {
        self.dir.join(&region.name).join("redis")
    }

    /// The region's Redis Cluster, TLS only and with AUTH, as ElastiCache runs with transit
    /// encryption and an AUTH token: the certificate names the seeds' host names.
    pub(crate) fn start_redis(&mut self, region: &Region) -> anyhow::Result<()> {
        let xtask = std::env::current_exe().context("locating xtask")?;
        let mut command = Command::new(xtask);
        command
            .arg("redis-cluster")
            .arg("--masters")
            .arg(region.redis_ports.len().to_string())
            .arg("--port")
            .arg(region.redis_ports[0].to_string())
            .arg("--dir")
            .arg(self.redis_dir(region))
            .arg("--password-file")
            .arg(self.redis_password_file());
        for name in &region.redis_names {
            command.arg("--tls-name").arg(name);
        }
        let addrs: Vec<SocketAddr> =
            region.redis_ports.iter().map(|&p| SocketAddr::from(([127, 0, 0, 1], p))).collect();
        let name = format!("{} redis", region.name);
        let log = self.log(&name);
        self.launch(
            Spec {
                name: name.clone(),
                stands_for: "the region's ElastiCache Redis Cluster",
                address: addrs.iter().map(ToString::to_string).collect::<Vec<_>>().join(", "),
                check: Check::Tcp { addrs },
            },
            command,
            Duration::from_secs(60),
            // `xtask redis-cluster` prints the seeds once the cluster is formed.
            || std::fs::read_to_string(&log).is_ok_and(|text| text.contains("seeds:")),
        )
    }

    pub(crate) fn start_gateways(
        &mut self,
        gateway: &Path,
        region: &Region,
        key: &Path,
    ) -> anyhow::Result<()> {
        let manifest = self.root.join("regions/rig/partner-manifest.json");
        for (i, &addr) in region.gateways.iter().enumerate() {
            let mut command = Command::new(gateway);
            command.arg("--config").arg(&region.file).arg("--listen").arg(addr.to_string());
            quiet_gateway_env(&mut command);
            let password = std::fs::read_to_string(self.redis_password_file())
                .context("reading the rig's Redis password")?;
            command
                .env("MARQUEE_AUTH__SIGNING_KEY_FILES", format!("[\"{}\"]", key.display()))
                .env("MARQUEE_AUTH__DEV_TOKENS", "true")
                .env("MARQUEE_PERSISTED_QUERIES__MANIFEST_FILE", &manifest)
                .env("MARQUEE_REDIS__TLS", "true")
                .env("MARQUEE_REDIS__TLS_CA_FILE", self.redis_dir(region).join("ca.pem"))
                .env("MARQUEE_REDIS__USERNAME", "default")
                .env("MARQUEE_REDIS__PASSWORD", password)
                .env("MARQUEE_HTTP__ORIGIN_SECRET", self.origin_secret()?)
                .env("MARQUEE_TELEMETRY__OTLP_ENDPOINT", format!("http://{JAEGER_OTLP}"));
            self.launch_http(
                format!("{} gateway {}", region.name, i + 1),
                "an instance of the region's autoscaling group",
                (addr, "/readyz"),
                command,
                Duration::from_secs(120),
            )?;
        }
        Ok(())
    }

    fn start_load_balancer(&mut self, region: &Region) -> anyhow::Result<()> {
        let dir = self.dir.join(&region.name);
        std::fs::create_dir_all(&dir)?;
        let error_file = dir.join("503.http");
        std::fs::write(&error_file, render::haproxy_503())?;
        let config = dir.join("haproxy.cfg");
        std::fs::write(&config, render::haproxy(region, &error_file, &self.origin_secret()?))?;
        let mut command = Command::new("haproxy");
        command.arg("-db").arg("-f").arg(&config);
        let addr = region.load_balancer;
        self.launch_http(
            format!("{} load balancer", region.name),
            "the region's load balancer (ALB)",
            (addr, render::REGION_HEALTH),
            command,
            Duration::from_secs(30),
        )
    }

    pub(crate) fn start_edge(&mut self, region: &Region, others: &[&Region]) -> anyhow::Result<()> {
        let dir = self.dir.join(&region.name).join("varnish");
        std::fs::create_dir_all(&dir)?;
        std::fs::write(
            dir.join("backend.vcl"),
            render::varnish_backend(region, others, &self.origin_secret()?),
        )?;
        let mut command = Command::new("varnishd");
        command
            .arg("-F")
            .args(["-j", "none"])
            .arg("-a")
            .arg(region.edge.to_string())
            .arg("-f")
            .arg(self.root.join("regions/rig/edge.vcl"))
            .arg("-p")
            .arg(format!("vcl_path={}", dir.display()))
            .arg("-n")
            .arg(dir.join("work"))
            .args(["-s", "malloc,64m"]);
        let addr = region.edge;
        self.launch_http(
            format!("{} edge", region.name),
            "the CDN's edge for the region (CloudFront)",
            (addr, render::REGION_HEALTH),
            command,
            Duration::from_secs(60),
        )
    }

    fn start_dns(&mut self, regions: &[Region], nodes: &BTreeMap<String, IpAddr>) -> anyhow::Result<()> {
        let dir = self.dir.join("dns");
        std::fs::create_dir_all(&dir)?;
        let zone_file = dir.join(format!("{ZONE}.zone"));
        // The zone is the traffic policy's: Terraform renders it from regions.json (the same
        // apply an SRE runs to drain a region) before PowerDNS first reads it.
        let inputs = serde_json::to_vec_pretty(&render::traffic_inputs(ZONE, regions, DNS_TTL, nodes))?;
        std::fs::write(self.dir.join("regions.json"), inputs).context("writing target/rig/regions.json")?;
        println!("rig: rendering the geo-DNS zone with the traffic policy (terraform/environments/local)");
        // With no state yet, nothing was applied before: no region's traffic is "returned".
        let state = self.dir.join("terraform.tfstate");
        let first_apply = std::fs::metadata(&state).map_or(true, |m| m.len() == 0);
        let first_apply = format!("-var=first_apply={first_apply}");
        for args in [
            ["init", "-input=false"].as_slice(),
            ["apply", "-input=false", "-auto-approve", first_apply.as_str()].as_slice(),
        ] {
            let mut all = vec![format!("-chdir={}", crate::terraform::TRAFFIC_ENVIRONMENT)];
            all.extend(args.iter().map(|a| (*a).to_owned()));
            crate::terraform::run_quiet(&self.root, &all, &self.log("terraform"))?;
        }
        let named = dir.join("named.conf");
        std::fs::write(&named, render::named_conf(ZONE, &zone_file))?;
        std::fs::write(dir.join("pdns.conf"), render::pdns_conf(DNS, &dir, &named))?;
        let mut command = Command::new("pdns_server");
        command.arg(format!("--config-dir={}", dir.display()));
        self.launch(
            Spec {
                name: "geo-DNS".into(),
                stands_for: "Route 53 (latency records, health checks)",
                address: format!("{DNS} (udp, tcp), zone {ZONE}"),
                check: Check::Tcp { addrs: vec![DNS] },
            },
            command,
            Duration::from_secs(30),
            || listening(DNS),
        )
    }

    fn start_prometheus(&mut self, regions: &[Region]) -> anyhow::Result<()> {
        self.start_alertmanager()?;
        let dir = self.dir.join("prometheus");
        std::fs::create_dir_all(&dir)?;
        let config = dir.join("prometheus.yml");
        let rules = self.root.join(crate::monitoring::RULES);
        std::fs::write(&config, render::prometheus(regions, &rules, ALERTMANAGER))?;
        let mut command = Command::new("prometheus");
        command
            .arg(format!("--config.file={}", config.display()))
            .arg(format!("--storage.tsdb.path={}", dir.join("data").display()))
            .arg(format!("--web.listen-address={PROMETHEUS}"));
        self.launch_http(
            "prometheus".into(),
            "the monitoring stack",
            (PROMETHEUS, "/-/ready"),
            command,
            Duration::from_secs(60),
        )
    }

    /// Jaeger, receiving every gateway's spans (sampling ratio 1, the default), traces kept
    /// in memory while the rig runs.
    fn start_jaeger(&mut self) -> anyhow::Result<()> {
        let jaeger = ensure_jaeger(&self.root)?;
        let dir = self.dir.join("jaeger");
        std::fs::create_dir_all(&dir)?;
        let config = dir.join("jaeger.yaml");
        std::fs::write(&config, render::jaeger(JAEGER_OTLP, JAEGER_UI, JAEGER_QUERY_GRPC))?;
        let mut command = Command::new(jaeger);
        command.arg(format!("--config={}", config.display()));
        self.launch_http(
            "jaeger".into(),
            "the trace backend",
            (JAEGER_UI, "/api/services"),
            command,
            Duration::from_secs(60),
        )
    }

    /// Debian's Alertmanager, receiving what the rig's Prometheus fires: one route to a
    /// receiver that notifies nobody (the drill reads what fired from Prometheus; an SRE's
    /// deployment routes to its pager), no clustering.
    fn start_alertmanager(&mut self) -> anyhow::Result<()> {
        let dir = self.dir.join("alertmanager");
        std::fs::create_dir_all(&dir)?;
        let config = dir.join("alertmanager.yml");
        std::fs::write(&config, render::alertmanager())?;
        let mut command = Command::new("prometheus-alertmanager");
        command
            .arg(format!("--config.file={}", config.display()))
            .arg(format!("--storage.path={}", dir.join("data").display()))
            .arg(format!("--web.listen-address={ALERTMANAGER}"))
            .arg("--cluster.listen-address=");
        self.launch_http(
            "alertmanager".into(),
            "the alerts' receiver",
            (ALERTMANAGER, "/-/ready"),
            command,
            Duration::from_secs(60),
        )
    }
}

/// Migrates the shared keyspace and seeds it with `first`'s demo catalog, through `first`'s
/// configuration (so through the names and settings its gateways use).
fn load_keyspace(gateway: &Path, first: &Region) -> anyhow::Result<()> {
    let mut migrate = Command::new(gateway);
    migrate.arg("--config").arg(&first.file).arg("migrate");
    quiet_gateway_env(&mut migrate);
    migrate.env("MARQUEE_LOG__FILTER", "warn,scylla=error");
    crate::process::check(migrate, &format!("gateway --config {} migrate", first.file.display()))?;
    println!("rig: seeding the shared keyspace with the {}-movie demo catalog", first.demo_movies);
    let mut seed = Command::new(gateway);
    seed.arg("--config").arg(&first.file).arg("seed").arg("--movies").arg(first.demo_movies.to_string());
    quiet_gateway_env(&mut seed);
    seed.env("MARQUEE_LOG__FILTER", "warn,scylla=error");
    crate::process::check(seed, &format!("gateway --config {} seed", first.file.display()))
}

/// Waits until geo-DNS sends every region's clients to their own region: until its first
/// health checks of the edges have run, it does not know which regions are up.
///
/// Routed means routed for three seconds in a row: PowerDNS treats every edge as down until its
/// first check, and an edge whose origin is still coming up can answer one check and fail the
/// next, so one routed answer does not yet say the regions are settled.
fn wait_for_routing(regions: &[Region]) -> anyhow::Result<()> {
    const SETTLED: Duration = Duration::from_secs(3);
    println!("rig: waiting until geo-DNS sends each region's clients to their own region");
    let name = format!("api.{ZONE}");
    let start = std::time::Instant::now();
    let deadline = start + Duration::from_secs(45);
    let mut routed_since = None;
    loop {
        let routed =
            regions.iter().filter_map(|r| Some((first_client(r)?, r.edge.ip()))).all(|(client, edge)| {
                ClientRoute { dns: DNS, source: client }
                    .lookup_v4_once(&name)
                    .is_ok_and(|answers| answers == [edge])
            });
        let now = std::time::Instant::now();
        routed_since = if routed { routed_since.or(Some(now)) } else { None };
        if routed_since.is_some_and(|since| now.duration_since(since) >= SETTLED) {
            return Ok(());
        }
        if now > deadline {
            bail!(
                "geo-DNS did not route every region's clients to their own region for {} s in a row \
                 within 45 s (its health checks are in target/rig/logs/geo-DNS.log)",
                SETTLED.as_secs()
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The rig decides the gateways' settings: none of the caller's `MARQUEE_*` variables leak in.
pub(crate) fn quiet_gateway_env(command: &mut Command) {
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("MARQUEE_") {
            command.env_remove(name);
        }
    }
}

/// An address of a client in `region`: the first host of its first subnet.
fn first_client(region: &Region) -> Option<IpAddr> {
    client_address(region, 1)
}

/// The `n`-th address of `region`'s first client subnet.
pub(crate) fn client_address(region: &Region, n: u32) -> Option<IpAddr> {
    let subnet = region.client_subnets.first()?;
    let (ip, _) = subnet.split_once('/')?;
    match ip.parse().ok()? {
        IpAddr::V4(v4) => Some(IpAddr::V4(std::net::Ipv4Addr::from(u32::from(v4).wrapping_add(n)))),
        IpAddr::V6(v6) => {
            Some(IpAddr::V6(std::net::Ipv6Addr::from(u128::from(v6).wrapping_add(u128::from(n)))))
        }
    }
}

/// Prints every part and its health; whether all are healthy.
fn status(dir: &Path) -> anyhow::Result<bool> {
    let Some(state) = load_state(dir)? else {
        println!("rig: not up (no target/rig/rig.json); `cargo xtask rig up` starts it");
        return Ok(false);
    };
    let mut all = true;
    println!("{:<22} {:<8} {:<10} {:<44} stands for", "part", "pid", "state", "address");
    for part in &state.parts {
        let health = if !alive(part.pid) {
            "stopped"
        } else if part.check.healthy() {
            "healthy"
        } else {
            "unhealthy"
        };
        all &= health == "healthy";
        println!("{:<22} {:<8} {:<10} {:<44} {}", part.name, part.pid, health, part.address, part.stands_for);
    }
    if !state.clients.is_empty() {
        println!();
        for (region, client) in &state.clients {
            let route = ClientRoute { dns: DNS, source: *client };
            match route.lookup_v4_once(&format!("api.{ZONE}")) {
                Ok(answers) => println!(
                    "geo-DNS: a client at {client} ({region}) resolves api.{ZONE} to {}",
                    answers.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ")
                ),
                Err(error) => {
                    all = false;
                    println!("geo-DNS: a client at {client} ({region}) cannot resolve api.{ZONE}: {error:#}");
                }
            }
        }
    }
    Ok(all)
}

fn down(dir: &Path) -> anyhow::Result<()> {
    let Some(state) = load_state(dir)? else {
        println!("rig: not up");
        return Ok(());
    };
    stop_parts(&state.parts);
    std::fs::remove_file(state_file(dir)).context("removing target/rig/rig.json")?;
    println!("rig: down (logs stay in {})", dir.join("logs").display());
    Ok(())
}

/// Stops every part, last started first: SIGTERM (a gateway drains; the Redis Cluster's
/// keeper stops its nodes), then SIGKILL for anything still running a minute later.
fn stop_parts(parts: &[Part]) {
    for part in parts.iter().rev() {
        if !alive(part.pid) {
            continue;
        }
        println!("rig: stopping {} (pid {})", part.name, part.pid);
        if let Err(error) = signal_and_wait(part.pid, "TERM", &part.name) {
            eprintln!("rig: {error:#}; killing it");
            let _ = signal_and_wait(part.pid, "KILL", &part.name);
        }
    }
}

/// 16 random bytes in hex: a secret for one rig.
fn random_hex() -> anyhow::Result<String> {
    let mut random = [0u8; 16];
    std::io::Read::read_exact(&mut std::fs::File::open("/dev/urandom")?, &mut random)?;
    Ok(random.iter().map(|b| format!("{b:02x}")).collect())
}
