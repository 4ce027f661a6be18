//! A seconds-long smoke run of every scenario against a real gateway (started in-process on
//! port 0 over a small seeded catalog), so the tool keeps working. It checks what the tool
//! reports, never how fast anything was: speed is measured by running `bench`, not by tests.

use std::sync::Arc;
use std::time::Duration;

use marquee_bench::load::LoadSpec;
use marquee_bench::workload::{Mix, Workload};
use marquee_bench::{CompareTarget, GatewaySource, RampSpec, Setup};
use marquee_gateway::auth::{Authenticator, generate_pem};
use marquee_gateway::config::{Config, EmbeddedConfig, StoreConfig};
use marquee_gateway::startup::Application;
use marquee_store::bulk::seed::SeedOptions;

const MOVIES: u64 = 500;

async fn gateway(dir: &std::path::Path) -> (String, Vec<Arc<str>>) {
    let store =
        StoreConfig::Embedded(EmbeddedConfig { data_dir: dir.to_owned(), ..EmbeddedConfig::default() });
    let bulk = marquee_gateway::store::bulk(&store);
    marquee_gateway::progress::seed(
        bulk.as_ref(),
        &SeedOptions { movies: MOVIES, people: Some(300), seed: 3 },
    )
    .expect("seed");
    let key = dir.join("key.pem");
    std::fs::write(&key, generate_pem().expect("key")).expect("write");
    let mut config = Config { listen: "127.0.0.1:0".parse().expect("addr"), store, ..Config::default() };
    config.demo.movies = 0;
    config.rate_limit.enabled = false;
    config.auth.signing_key_files = vec![key];
    config.auth.dev_tokens = true;
    let auth = Authenticator::new(&config.auth).await.expect("auth");
    let tokens = (0..5)
        .map(|i| {
            Arc::from(
                auth.issue_dev_user(&format!("smoke-{i}"), Duration::from_secs(600)).expect("token").token,
            )
        })
        .collect();
    let app = Application::build(config).await.expect("gateway builds");
    let url = format!("http://{}", app.local_addr());
    tokio::spawn(app.run_until_stopped(std::future::pending()));
    (url, tokens)
}

fn setup(url: &str, tokens: Vec<Arc<str>>, mix: Mix, hot: bool) -> Setup {
    Setup {
        gateway: GatewaySource::Url(url.to_owned()),
        workload: Workload {
            movies: MOVIES,
            people: 300,
            zipf: 1.0,
            mix,
            signed_in: if hot { 0.0 } else { 0.3 },
            persisted: 0.7,
            hot,
            seed: 5,
        },
        spec: LoadSpec {
            rate: 150.0,
            duration: Duration::from_secs(1),
            max_requests: 1_000,
            timeout: Duration::from_secs(5),
            max_in_flight: 1_000,
            connections: 16,
            saturate: None,
        },
        users: tokens.len(),
        warmup: Duration::from_millis(200),
        command: "smoke".into(),
        preset_tokens: tokens,
        route: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_scenario_runs_and_reports() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (url, tokens) = gateway(dir.path()).await;
    let out = tempfile::tempdir().expect("out");

    // `run` with the realistic mix: reads, `me` and writes, signed in and anonymous.
    let report = marquee_bench::run(&setup(&url, tokens.clone(), Mix::realistic(), false), "smoke run")
        .await
        .expect("run");
    let t = &report.targets[0];
    assert_eq!(t.errors, Default::default(), "{:?}", t.errors);
    assert_eq!(t.completed, t.sent);
    assert!(t.sent >= 100, "about 150 requests were due in one second: {}", t.sent);
    assert!(t.per_op.contains_key("movie") && t.per_op.contains_key("me"), "{:?}", t.per_op.keys());
    assert!(t.store_calls_per_request.is_some_and(|c| c > 0.0));
    report.write(out.path()).expect("writes");
    for file in ["results.json", "report.md", "latency.svg", "throughput.svg"] {
        assert!(out.path().join(file).is_file(), "{file}");
    }
    let md = std::fs::read_to_string(out.path().join("report.md")).expect("md");
    assert!(md.contains("| marquee |") && md.contains("logical CPUs"), "{md}");

    // `compare`: the hot persisted GET with the cache, without it, and the static limit.
    let which = [CompareTarget::Marquee, CompareTarget::MarqueeNoCache, CompareTarget::Static];
    let report = marquee_bench::compare(
        &setup(&url, vec![], Mix::realistic(), true),
        &which,
        2,
        None,
        "smoke compare",
    )
    .await
    .expect("compare");
    let by_name = |n: &str| report.targets.iter().find(|t| t.name == n).expect("target");
    for t in &report.targets {
        assert_eq!(t.errors, Default::default(), "{}: {:?}", t.name, t.errors);
    }
    assert!(
        by_name("marquee").response_hit_ratio.is_some_and(|r| r > 0.9),
        "hot GETs hit the response cache"
    );
    assert!(by_name("marquee").store_calls_per_request.is_some_and(|c| c < 0.1));
    let nocache = by_name("marquee-nocache");
    assert_eq!(nocache.response_hit_ratio, None, "no-cache requests skip the response cache");
    assert!(
        nocache.entity_hit_ratio.is_some_and(|r| r > 0.9),
        "without the response cache every request executes, its entities from the entity cache: {:?}",
        nocache.entity_hit_ratio
    );
    assert!(by_name("static").counters.is_none());
    assert_eq!(report.findings.len(), 3, "{:?}", report.findings);

    // `ramp`: two steps, both far below any limit.
    let mut ramp_setup = setup(&url, vec![], Mix::parse("movie=1,browse=1").expect("mix"), false);
    ramp_setup.workload.signed_in = 0.0;
    ramp_setup.users = 0;
    ramp_setup.spec.rate = 50.0;
    let ramp = RampSpec { step: 50.0, max_rate: 100.0, slo_p99_ms: 5_000.0 };
    let report = marquee_bench::ramp(&ramp_setup, &ramp, "smoke ramp").await.expect("ramp");
    assert_eq!(report.ramp.len(), 2);
    assert!(report.ramp.iter().all(|s| s.within_slo));
    assert!(report.findings[0].contains("100 req/s"), "{:?}", report.findings);
}

/// `compare` with two gateways `bench` starts itself, from the workspace's `gateway` binary:
/// one over an embedded data directory, one over the same catalog in a CQL keyspace that a
/// configuration file names (the CQL stand-in, or the cluster `SCYLLA_URI` names). The second
/// takes the users' tokens minted for the first, and only it reports database statements per
/// request, from the gateway's own `store_statements_per_call`; a `-nocache` one asks the
/// caches to step aside.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compare_measures_a_second_store_beside_the_first() {
    use marquee_bench::ManagedStore;

    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("workspace").to_owned();
    let bin = root.join("target/debug/gateway");
    assert!(bin.exists(), "{} is built by the workspace's tests", bin.display());
    let dir = tempfile::tempdir().expect("tempdir");
    let catalog = SeedOptions { movies: MOVIES, people: Some(300), seed: 3 };
    let embedded = StoreConfig::Embedded(EmbeddedConfig {
        data_dir: dir.path().to_owned(),
        ..EmbeddedConfig::default()
    });
    let cluster = marquee_cql_standin::test_cluster();
    let keyspace = format!(
        "bench_smoke_{}_{}",
        std::process::id(),
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_millis()
    );
    let options = cluster.scylla_options(keyspace.clone());
    let _keyspace = marquee_cql_standin::KeyspaceGuard::new(&options);
    let scylla = StoreConfig::Scylla(Box::new(options));
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                let runtime = tokio::runtime::Runtime::new().expect("runtime");
                runtime.block_on(marquee_gateway::store::migrate(&scylla)).expect("migrate");
                let _entered = runtime.enter();
                for store in [&embedded, &scylla] {
                    let bulk = marquee_gateway::store::bulk(store);
                    marquee_gateway::progress::seed(bulk.as_ref(), &catalog).expect("seed");
                }
            })
            .join()
            .expect("seeding thread");
    });
    let replication: Vec<String> =
        cluster.replication.iter().map(|(dc, rf)| format!("\"{dc}\" = {rf}")).collect();
    let file = dir.path().join("scylla.toml");
    std::fs::write(
        &file,
        format!(
            "[store]\nbackend = \"scylla\"\ncontact_points = [\"{}\"]\nkeyspace = \"{keyspace}\"\nlocal_dc = \"{}\"\nreplication = {{ {} }}\nawait_schema_agreement = {}\n",
            cluster.contact_point,
            cluster.data_center,
            replication.join(", "),
            !cluster.stand_in
        ),
    )
    .expect("config");

    let mut setup = setup("unused", vec![], Mix::realistic(), false);
    setup.gateway = GatewaySource::Managed { bin, store: ManagedStore::DataDir(dir.path().to_owned()) };
    setup.users = 5;
    setup.spec.rate = 100.0;
    let which = [
        CompareTarget::Marquee,
        CompareTarget::Config { name: "scylla".into(), file: file.clone() },
        CompareTarget::Config { name: "scylla-nocache".into(), file },
    ];
    let report = marquee_bench::compare(&setup, &which, 1, None, "smoke stores").await.expect("compare");
    let by_name = |n: &str| report.targets.iter().find(|t| t.name == n).expect("target");
    for t in &report.targets {
        assert_eq!(t.errors, Default::default(), "{}: {:?}", t.name, t.errors);
        assert!(
            t.per_op.contains_key("me"),
            "{}: signed-in requests were answered: {:?}",
            t.name,
            t.per_op.keys()
        );
    }
    assert_eq!(
        by_name("marquee").store_statements_per_request,
        None,
        "the embedded store sends no statements"
    );
    assert!(
        by_name("scylla").store_statements_per_request.is_some_and(|s| s > 0.0),
        "{:?}",
        by_name("scylla").counters
    );
    assert!(report.findings.iter().any(|f| f.starts_with("scylla vs marquee")), "{:?}", report.findings);
    assert!(by_name("scylla").response_hit_ratio.is_some(), "the response cache answers lookups");
    assert_eq!(
        by_name("scylla-nocache").response_hit_ratio,
        None,
        "no-cache requests skip the response cache"
    );
}

/// `live-catalog`: the workload before, during and after a delta handed to the serving gateway
/// (and a new generation loaded beside it), reporting the change's duration and each phase,
/// with no failed request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_catalog_reports_each_phase_of_a_change_under_load() {
    use marquee_bench::live::{Change, LiveSpec, live_catalog};

    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("workspace").to_owned();
    let bin = root.join("target/debug/gateway");
    assert!(bin.exists(), "{} is built by the workspace's tests", bin.display());
    let dir = tempfile::tempdir().expect("tempdir");
    let (url, tokens) = gateway(dir.path()).await;
    let mut setup = setup(&url, tokens, Mix::realistic(), false);
    setup.spec.rate = 100.0;
    for change in [Change::Delta, Change::Reload] {
        let live = LiveSpec {
            change,
            delta_titles: 100,
            catalog_seed: 3,
            phase: Duration::from_secs(1),
            change_timeout: Duration::from_secs(60),
            data_dir: dir.path().to_owned(),
            gateway_bin: bin.clone(),
        };
        let report = live_catalog(&setup, &live, "smoke live-catalog").await.expect("live-catalog");
        let names: Vec<&str> = report.targets.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(names, ["before", "during", "after"]);
        for t in &report.targets {
            assert_eq!(t.errors, Default::default(), "{}: {:?}", t.name, t.errors);
            assert!(t.completed > 0, "{}", t.name);
        }
        let first = &report.findings[0];
        match change {
            Change::Delta => {
                assert!(first.contains("a delta of 100 changed titles"), "{first}");
                assert!(
                    report.findings.iter().any(|f| f.contains("100 titles changed")),
                    "{:?}",
                    report.findings
                );
            }
            Change::Reload => assert!(first.contains("a new generation of 500 movies"), "{first}"),
        }
    }
}
