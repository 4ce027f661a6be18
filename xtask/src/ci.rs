//! `cargo xtask ci`: what CI runs (`.ci/run` calls exactly this). Each phase prints its command
//! as it starts and its duration as it ends, so a slow phase shows in CI's log.

use std::path::Path;
use std::process::Command;
use std::time::Instant;

use anyhow::Context;

use crate::process::{CI_INCREMENTAL, check, run};
use crate::{cassandra, fuzz, monitoring, peer, rig, system, terraform};

/// Every check, in order; stops at the first that fails.
pub(crate) fn run_all(root: &Path) -> anyhow::Result<()> {
    let started = Instant::now();
    phase("format", || {
        if !has_cargo_tool(root, "fmt") {
            println!(
                "xtask ci: SKIPPING the format check: rustfmt is not installed (rustup component add rustfmt)"
            );
            return Ok(());
        }
        run(root, "cargo", &["fmt", "--all", "--", "--check"])?;
        // The fuzz targets are their own workspace (cargo-fuzz's layout), outside `--all`.
        run(root, "cargo", &["fmt", "--manifest-path", "fuzz/Cargo.toml", "--", "--check"])
    })?;
    phase("clippy", || {
        if !has_cargo_tool(root, "clippy") {
            println!("xtask ci: SKIPPING clippy: it is not installed (rustup component add clippy)");
            return Ok(());
        }
        run(root, "cargo", &["clippy", "--workspace", "--all-targets", "--locked", "--", "-D", "warnings"])
    })?;
    // The stock clients (Apollo Client, graphql-http's audit) the gateway's tests drive, the
    // Redis server the cache tier's tests start as clusters (each test its own, stopped by
    // PID), the parts of the two-region rig (the rig test, `xtask/tests/rig.rs`, a short form
    // of `cargo xtask rig test`, runs both regions: PowerDNS, HAProxy, Varnish, Prometheus),
    // Java for Cassandra and faketime for the clock-skew tests.
    phase("system packages", || {
        system::client_packages(root)?;
        system::ensure_redis()?;
        rig::ensure_packages()?;
        system::ensure_java()?;
        system::ensure_faketime()
    })?;
    // regions/monitoring/: the alerting rules parse and fire on what they should, only
    // (promtool came with the rig's packages).
    phase("alerting rules", || monitoring::check_rules(root))?;
    // The rig's trace backend (Jaeger, from xtask/tools' pinned Go module), built before the
    // tests so that the rig test's `rig up` finds it: a first build takes minutes, more than
    // the rig test's own time limit allows.
    phase("Jaeger", || rig::ensure_jaeger(root).map(|_| ()))?;
    let nextest = phase("cargo-nextest", || {
        if !has_nextest(root) {
            // Not preinstalled on every machine: built from crates.io once, then there for the
            // next run. Without it the same tests run under `cargo test`. Built unoptimised: on
            // two cores that takes 4.5 minutes instead of 8, and a runner that waits on its
            // tests runs no slower (`nextest list --workspace`: 1.6-1.9 s either way). Without
            // its default features (self-update, USDT probes), which CI never uses: 3.5
            // minutes instead of 5.
            const INSTALL: [&str; 5] =
                ["install", "cargo-nextest", "--locked", "--debug", "--no-default-features"];
            println!("cargo-nextest is missing: installing it (cargo {})", INSTALL.join(" "));
            if let Err(error) = run(root, "cargo", &INSTALL) {
                println!(
                    "xtask ci: installing cargo-nextest failed ({error:#}); running the tests with cargo test"
                );
            }
        }
        Ok(has_nextest(root))
    })?;
    // The two-data-center Cassandra cluster the ScyllaDB backend's suites replicate across
    // (the replication tests start clusters of their own, to cut and stop them). Stopped by
    // PID when the tests are over, passing or not.
    let cluster = phase("Cassandra cluster", || ci_cluster(root))?;
    let tests = (|| {
        // Every test (the store conformance suite runs on both backends: the ScyllaDB one over
        // the in-process CQL stand-in and over the cluster)...
        phase("tests", || {
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
            check(everything, "cargo test --workspace (nextest when installed)")
        })?;
        // ...then the API's query, user-data, persisted-query and editing suites again over the ScyllaDB
        // backend, end to end. `--workspace` keeps the feature set of the run above, so nothing
        // is rebuilt.
        phase("API suites over ScyllaDB", || {
            let mut api_on_scylla = Command::new("cargo");
            api_on_scylla
                .current_dir(root)
                .env("CARGO_INCREMENTAL", CI_INCREMENTAL)
                .env("MARQUEE_TEST_BACKEND", "scylla")
                .envs(cluster.env.iter().map(|(k, v)| (k, v)));
            if nextest {
                api_on_scylla.args(["nextest", "run", "--workspace", "--locked", "--no-fail-fast"]);
                api_on_scylla.args(["-E", "binary(api) & test(/^(queries|users|persisted|editing)::/)"]);
            } else {
                api_on_scylla.args(["test", "--workspace", "--locked", "--no-fail-fast", "--test", "api"]);
                api_on_scylla.args(["--", "queries::", "users::", "persisted::", "editing::"]);
            }
            check(api_on_scylla, "MARQUEE_TEST_BACKEND=scylla cargo test (the API suites over ScyllaDB)")
        })
    })();
    drop(cluster);
    tests?;
    // terraform/: format, the provider-free configurations' tests, checkov, the CDN function.
    phase("terraform", || terraform::check_all(root))?;
    // A minute of coverage-guided fuzzing of a request's way through the schema.
    phase("fuzz", || fuzz::run(root, &fuzz::FuzzArgs::for_ci()))?;
    // The benchmark's peer path end to end (PostgreSQL, PostGraphile, the equivalence check).
    phase("benchmark peer smoke", || peer::run(root, peer::PeerTask::Smoke))?;
    println!("xtask ci: all checks passed in {}", minutes(started));
    Ok(())
}

/// Runs one phase of CI between a line that names it and one that says how it ended and how
/// long it took.
fn phase<T>(name: &str, body: impl FnOnce() -> anyhow::Result<T>) -> anyhow::Result<T> {
    println!("xtask ci: == {name}");
    let started = Instant::now();
    let result = body();
    let verdict = if result.is_ok() { "done" } else { "FAILED" };
    println!("xtask ci: == {name}: {verdict} in {}", minutes(started));
    result
}

/// Time since `started`, as minutes and seconds.
fn minutes(started: Instant) -> String {
    let secs = started.elapsed().as_secs();
    format!("{}m{:02}s", secs / 60, secs % 60)
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
