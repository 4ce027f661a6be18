//! `spawn_app()` and friends: start the real Application on port 0 with a freshly seeded
//! temporary data directory, and talk to it over HTTP.
//!
//! With `MARQUEE_TEST_BACKEND=scylla` the same tests run over the ScyllaDB backend: each data
//! directory maps to its own keyspace on an in-process CQL stand-in (or on the cluster at
//! `SCYLLA_URI`), migrated and seeded through the same bulk seam. `cargo xtask ci` runs the
//! query, user-data and persisted-query suites that way too.

use std::net::SocketAddr;
use std::path::Path;

use marquee_cql_standin::KeyspaceGuard;
use marquee_gateway::config::{Config, DemoConfig, EmbeddedConfig, StoreConfig};
use marquee_gateway::startup::Application;
use marquee_store::bulk::seed::{Generator, SeedOptions};
use serde_json::{Value, json};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// The catalog every test app serves.
pub(crate) const CATALOG: SeedOptions = SeedOptions { movies: 2_000, people: Some(1_200), seed: 99 };

pub(crate) fn generator() -> Generator {
    Generator::new(&CATALOG)
}

/// A running gateway.
pub(crate) struct TestApp {
    pub(crate) addr: SocketAddr,
    pub(crate) client: reqwest::Client,
    stop: Option<oneshot::Sender<()>>,
    handle: Option<JoinHandle<std::io::Result<()>>>,
    _dir: Option<DataDir>,
}

/// A seeded data directory, with the keyspace named after it when the tests run over
/// ScyllaDB (dropped with it: see `KeyspaceGuard`).
pub(crate) struct DataDir {
    dir: tempfile::TempDir,
    _keyspace: Option<KeyspaceGuard>,
    /// The keyspace the test run shares, for a test that only reads the catalog.
    shared: Option<String>,
}

impl DataDir {
    pub(crate) fn path(&self) -> &Path {
        self.dir.path()
    }

    /// [`test_config`] over this directory's store.
    pub(crate) fn test_config(&self) -> Config {
        let config = test_config(self.path());
        match &self.shared {
            Some(keyspace) => Config { store: keyspace_config(keyspace), ..config },
            None => config,
        }
    }
}

/// A test deployment's configuration over `data_dir`'s store. Over a shared store (ScyllaDB)
/// it carries a signing key of its own, as every such deployment must.
pub(crate) fn test_config(data_dir: &Path) -> Config {
    let defaults = Config::default();
    let store = store_config(data_dir);
    let mut auth = defaults.auth.clone();
    if !matches!(store, StoreConfig::Embedded(_)) {
        auth.signing_keys = Some(marquee_gateway::auth::generate_pem().expect("key").into());
    }
    Config {
        listen: "127.0.0.1:0".parse().expect("addr"),
        region: "test-region".into(),
        demo: DemoConfig { movies: 0, ..defaults.demo.clone() },
        store,
        auth,
        testing: true,
        ..defaults
    }
}

/// Whether tests run over the ScyllaDB backend (`MARQUEE_TEST_BACKEND=scylla`).
pub(crate) fn on_scylla() -> bool {
    std::env::var("MARQUEE_TEST_BACKEND").is_ok_and(|b| b == "scylla")
}

/// The backend under test for `data_dir`: the embedded one with a small page cache, or a
/// keyspace named after the directory on the CQL stand-in (see the module docs).
pub(crate) fn store_config(data_dir: &Path) -> StoreConfig {
    if on_scylla() { scylla_config(data_dir) } else { embedded_config(data_dir) }
}

/// The embedded backend over `data_dir`.
pub(crate) fn embedded_config(data_dir: &Path) -> StoreConfig {
    StoreConfig::Embedded(EmbeddedConfig {
        data_dir: data_dir.to_owned(),
        cache_mib: marquee_gateway::config::Mib(16),
        users_cache_mib: marquee_gateway::config::Mib(8),
        inline_reads: true,
        ..EmbeddedConfig::default()
    })
}

/// The ScyllaDB backend, in a keyspace named after `data_dir`.
pub(crate) fn scylla_config(data_dir: &Path) -> StoreConfig {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in data_dir.as_os_str().as_encoded_bytes() {
        hash = (hash ^ u64::from(*byte)).wrapping_mul(0x0100_0000_01b3);
    }
    keyspace_config(&format!("api_{hash:016x}"))
}

/// The ScyllaDB backend, in `keyspace`.
fn keyspace_config(keyspace: &str) -> StoreConfig {
    let cluster = marquee_cql_standin::test_cluster();
    let mut options = cluster.scylla_options(keyspace);
    options.reconcile_interval_ms = 200;
    // The API's suites check answers, not replication (the store's conformance suite runs
    // replicated to both data centers, `store/scylla/tests/replication.rs` cuts them apart):
    // the local data center only, so the 50,000-movie demo catalog loads in half the time.
    options.replication = [(cluster.data_center, 1)].into();
    StoreConfig::Scylla(Box::new(options))
}

/// Seeds `options` into the store over `data_dir`, through the bulk seam (after migrating,
/// for a backend with a schema). Runs on a thread of its own, so it may be called from tests
/// on any runtime.
#[must_use = "over ScyllaDB the keyspace is dropped with the guard"]
pub(crate) fn seed_into(data_dir: &Path, options: &SeedOptions) -> Option<KeyspaceGuard> {
    seed_store(&store_config(data_dir), options)
}

/// Migrates and seeds the store `config` names (see [`seed_into`]); over ScyllaDB, the
/// keyspace is dropped with the guard returned.
#[must_use = "over ScyllaDB the keyspace is dropped with the guard"]
pub(crate) fn seed_store(config: &StoreConfig, options: &SeedOptions) -> Option<KeyspaceGuard> {
    let keyspace = match config {
        StoreConfig::Scylla(options) => Some(KeyspaceGuard::new(options)),
        _ => None,
    };
    migrate_and_seed(config, options);
    keyspace
}

/// Migrates and seeds the store `config` names, on a thread of its own.
fn migrate_and_seed(config: &StoreConfig, options: &SeedOptions) {
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                let runtime = tokio::runtime::Runtime::new().expect("runtime");
                runtime.block_on(marquee_gateway::store::migrate(config)).expect("migrate");
                let _entered = runtime.enter();
                let bulk = marquee_gateway::store::bulk(config);
                marquee_gateway::progress::seed(bulk.as_ref(), options).expect("seed");
            })
            .join()
            .expect("seeding thread");
    });
}

/// Seeds a catalog into a new temporary directory.
pub(crate) fn seeded_dir() -> DataDir {
    let dir = tempfile::tempdir().expect("tempdir");
    let keyspace = seed_into(dir.path(), &CATALOG);
    DataDir { dir, _keyspace: keyspace, shared: None }
}

/// Starts a gateway over a freshly seeded catalog.
pub(crate) async fn spawn_app() -> TestApp {
    let dir = seeded_dir();
    let config = test_config(dir.path());
    let mut app = spawn_with(config).await;
    app._dir = Some(dir);
    app
}

/// A data directory for a test that only reads the catalog of [`CATALOG`] (no mutation, no
/// rating, no list): over ScyllaDB on a real cluster, its store is the keyspace the test run
/// shares (`marquee_cql_standin::shared_keyspace`, seeded once); otherwise a [`seeded_dir`].
/// Its store is in [`DataDir::test_config`].
pub(crate) fn reader_dir() -> DataDir {
    let shared = on_scylla()
        .then(|| {
            marquee_cql_standin::shared_keyspace("api", |keyspace| {
                migrate_and_seed(&keyspace_config(keyspace), &CATALOG);
            })
        })
        .flatten();
    match shared {
        Some(keyspace) => {
            DataDir { dir: tempfile::tempdir().expect("tempdir"), _keyspace: None, shared: Some(keyspace) }
        }
        None => seeded_dir(),
    }
}

/// Starts a gateway over a [`reader_dir`]: for tests that only read the catalog.
pub(crate) async fn spawn_reader() -> TestApp {
    let dir = reader_dir();
    let mut app = spawn_with(dir.test_config()).await;
    app._dir = Some(dir);
    app
}

/// Starts a gateway with `config` (its data directory must hold a catalog).
pub(crate) async fn spawn_with(config: Config) -> TestApp {
    let app = Application::build(config).await.expect("application builds");
    let addr = app.local_addr();
    let (stop, stopped) = oneshot::channel::<()>();
    let handle = tokio::spawn(app.run_until_stopped(async move {
        let _ = stopped.await;
    }));
    TestApp { addr, client: reqwest::Client::new(), stop: Some(stop), handle: Some(handle), _dir: None }
}

impl TestApp {
    pub(crate) fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// POSTs a query and returns the JSON body, asserting a 200.
    pub(crate) async fn graphql(&self, query: &str, variables: Value) -> Value {
        let response = self
            .client
            .post(self.url("/graphql"))
            .json(&json!({ "query": query, "variables": variables }))
            .send()
            .await
            .expect("request");
        assert_eq!(response.status(), 200, "query {query}");
        response.json().await.expect("json body")
    }

    /// POSTs a query that must succeed without errors; returns `data`.
    pub(crate) async fn data(&self, query: &str, variables: Value) -> Value {
        let body = self.graphql(query, variables).await;
        assert!(body.get("errors").is_none(), "unexpected errors: {body}");
        body["data"].clone()
    }

    /// The value of the metric series `name{labels}` (0 when absent).
    pub(crate) async fn metric(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        let text =
            self.client.get(self.url("/metrics")).send().await.expect("metrics").text().await.expect("text");
        text.lines()
            .filter(|l| !l.starts_with('#'))
            .filter_map(|l| l.rsplit_once(' '))
            .filter(|(series, _)| {
                series.split('{').next() == Some(name)
                    && labels.iter().all(|(k, v)| series.contains(&format!("{k}=\"{v}\"")))
            })
            .map(|(_, value)| value.parse::<f64>().expect("number"))
            .sum()
    }

    /// Store calls made for requests: `store_calls_total` without the readiness probe's
    /// pings, which run every second whatever the requests do.
    /// Read from one scrape, so a ping between two scrapes cannot skew it.
    pub(crate) async fn request_store_calls(&self) -> f64 {
        let text =
            self.client.get(self.url("/metrics")).send().await.expect("metrics").text().await.expect("text");
        text.lines()
            .filter(|l| l.starts_with("store_calls_total{") && !l.contains("op=\"ping\""))
            .filter_map(|l| l.rsplit_once(' '))
            .map(|(_, value)| value.parse::<f64>().expect("number"))
            .sum()
    }

    /// Asks the gateway to stop and waits until it has.
    pub(crate) async fn stop(mut self) -> std::io::Result<()> {
        self.begin_stop();
        self.stopped().await
    }

    /// Sends the shutdown signal without waiting.
    pub(crate) fn begin_stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }

    /// Waits for a stop begun with `begin_stop`.
    pub(crate) async fn stopped(&mut self) -> std::io::Result<()> {
        match self.handle.take() {
            Some(handle) => handle.await.expect("server task"),
            None => Ok(()),
        }
    }
}

/// The `gateway` binary.
pub(crate) const BIN: &str = env!("CARGO_BIN_EXE_gateway");

/// The `gateway` binary as a command that does not inherit the caller's settings.
pub(crate) fn gateway_command() -> std::process::Command {
    let mut command = std::process::Command::new(BIN);
    isolated(&mut command);
    command
}

/// Removes the caller's `MARQUEE_*` and `RUST_LOG` from `command`'s environment: a developer
/// who exported the README's settings must get the same results as CI.
pub(crate) fn isolated(command: &mut std::process::Command) -> &mut std::process::Command {
    for (name, _) in std::env::vars_os() {
        if name.to_str().is_some_and(|n| n.starts_with("MARQUEE_") || n == "RUST_LOG") {
            command.env_remove(name);
        }
    }
    command
}

/// Waits until a `gateway` binary started with piped stdout prints its GraphiQL line; returns
/// the `/graphql` URL it serves.
pub(crate) async fn served_url(child: &mut std::process::Child) -> String {
    use std::io::{BufRead, BufReader};
    let stdout = child.stdout.take().expect("stdout is piped");
    let line = tokio::task::spawn_blocking(move || {
        BufReader::new(stdout).lines().map_while(Result::ok).find(|l| l.contains("GraphiQL"))
    });
    let line = tokio::time::timeout(std::time::Duration::from_secs(60), line)
        .await
        .expect("starts in time")
        .expect("task")
        .expect("prints the URL");
    line.split_whitespace().find(|w| w.starts_with("http://")).expect("a URL").to_owned()
}

/// The GraphQL error code of the first error in `body`.
pub(crate) fn first_code(body: &Value) -> &str {
    body["errors"][0]["extensions"]["code"].as_str().unwrap_or("<none>")
}
