//! What `bench` measures against: a gateway it starts itself (so it can mint user tokens
//! with the gateway's own `token` command and turn caches off), any loopback URL, or the
//! physical limit — a minimal HTTP server inside `bench` answering every request with the same
//! pre-serialized bytes.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use axum::body::Bytes;
use axum::http::header;

use crate::load::Target;

/// A gateway process started by `bench`; stopped (SIGTERM by PID) when dropped.
pub struct ManagedGateway {
    child: Child,
    /// Where it listens.
    pub target: Target,
    bin: PathBuf,
    env: Vec<(String, String)>,
}

/// What a managed gateway serves from.
#[derive(Clone, Debug, serde::Serialize)]
pub enum ManagedStore {
    /// The embedded store in this data directory (`gateway --data-dir`; must hold a catalog).
    DataDir(PathBuf),
    /// The store this configuration file names (`gateway --config`), e.g. a ScyllaDB keyspace
    /// holding a published catalog.
    Config(PathBuf),
}

impl ManagedStore {
    /// The `gateway` arguments that select it.
    fn args(&self) -> [&std::ffi::OsStr; 2] {
        match self {
            ManagedStore::DataDir(dir) => ["--data-dir".as_ref(), dir.as_os_str()],
            ManagedStore::Config(file) => ["--config".as_ref(), file.as_os_str()],
        }
    }
}

impl std::fmt::Display for ManagedStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ManagedStore::DataDir(dir) => write!(f, "the data directory {}", dir.display()),
            ManagedStore::Config(file) => write!(f, "the store of {}", file.display()),
        }
    }
}

/// Settings for a managed gateway.
pub struct GatewaySettings<'a> {
    /// The `gateway` binary.
    pub bin: &'a Path,
    /// What it serves from.
    pub store: &'a ManagedStore,
    /// Directory for the signing key.
    pub scratch: &'a Path,
    /// Keep the response cache on.
    pub response_cache: bool,
    /// Name in reports.
    pub name: &'a str,
}

impl ManagedGateway {
    /// Starts a gateway on a free loopback port with development tokens, no rate limit, and
    /// the response cache as asked; waits until it serves.
    pub fn start(settings: &GatewaySettings<'_>) -> anyhow::Result<ManagedGateway> {
        let key = settings.scratch.join("bench-signing.pem");
        if !key.exists() {
            let status = Command::new(settings.bin)
                .args(["keygen", "--out"])
                .arg(&key)
                .stdout(Stdio::null())
                .status()
                .context("running gateway keygen")?;
            if !status.success() {
                bail!("gateway keygen failed");
            }
        }
        let env = vec![
            ("MARQUEE_AUTH__SIGNING_KEY_FILES".to_owned(), format!("[\"{}\"]", key.display())),
            ("MARQUEE_AUTH__DEV_TOKENS".to_owned(), "true".to_owned()),
            // A benchmark is a test deployment: development tokens over a shared store too.
            ("MARQUEE_TESTING".to_owned(), "true".to_owned()),
            ("MARQUEE_RATE_LIMIT__ENABLED".to_owned(), "false".to_owned()),
            ("MARQUEE_RESPONSE_CACHE__ENABLED".to_owned(), settings.response_cache.to_string()),
            ("MARQUEE_DEMO__MOVIES".to_owned(), "0".to_owned()),
            ("MARQUEE_LOG__FILTER".to_owned(), "warn".to_owned()),
            ("MARQUEE_GRAPHQL__GRAPHIQL".to_owned(), "false".to_owned()),
        ];
        let mut command = Command::new(settings.bin);
        // The gateway under test runs with the benchmark's settings only, not the caller's.
        for (name, _) in std::env::vars_os() {
            if name.to_str().is_some_and(|n| n.starts_with("MARQUEE_")) {
                command.env_remove(name);
            }
        }
        let mut child = command
            .args(settings.store.args())
            .args(["serve", "--listen", "127.0.0.1:0"])
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .context("starting the gateway")?;
        let stdout = child.stdout.take().context("gateway stdout")?;
        let line = BufReader::new(stdout).lines().map_while(Result::ok).find(|l| l.contains("GraphiQL"));
        let Some(line) = line else {
            let _ = child.kill();
            bail!("the gateway exited before serving (does {} hold a catalog?)", settings.store);
        };
        let url = line
            .split_whitespace()
            .find(|w| w.starts_with("http://"))
            .and_then(|u| u.strip_suffix("/graphql"))
            .context("the gateway did not print its address")?
            .to_owned();
        let target = Target::new(settings.name, url)?;
        Ok(ManagedGateway { child, target, bin: settings.bin.to_owned(), env })
    }

    /// [`ManagedGateway::start`] off the async runtime (it waits for the process to serve),
    /// with the response cache on.
    pub async fn spawn(
        bin: PathBuf,
        store: ManagedStore,
        scratch: PathBuf,
        name: String,
    ) -> anyhow::Result<ManagedGateway> {
        tokio::task::spawn_blocking(move || {
            ManagedGateway::start(&GatewaySettings {
                bin: &bin,
                store: &store,
                scratch: &scratch,
                response_cache: true,
                name: &name,
            })
        })
        .await?
    }

    /// The PID.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Development user tokens for `users` users, minted by `gateway token`.
    pub fn mint_user_tokens(&self, users: usize) -> anyhow::Result<Vec<Arc<str>>> {
        (0..users)
            .map(|i| {
                let out = Command::new(&self.bin)
                    .args(["token", "--ttl", "6h", "--user"])
                    .arg(format!("bench-user-{i}"))
                    .envs(self.env.iter().map(|(k, v)| (k, v)))
                    .output()
                    .context("running gateway token")?;
                if !out.status.success() {
                    bail!("gateway token failed: {}", String::from_utf8_lossy(&out.stderr));
                }
                Ok(Arc::from(String::from_utf8(out.stdout)?.trim()))
            })
            .collect()
    }
}

impl Drop for ManagedGateway {
    fn drop(&mut self) {
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        for _ in 0..100 {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The static-bytes server: every request gets the same bytes as JSON. It runs in its own
/// process (like the gateway) when `bench` can start itself, else inside this one.
pub struct StaticServer {
    /// Where it listens.
    pub target: Target,
    task: Option<tokio::task::JoinHandle<()>>,
    child: Option<Child>,
}

/// The router answering everything with `body`.
pub fn static_router(body: Bytes) -> axum::Router {
    axum::Router::new().fallback(move || {
        let body = body.clone();
        async move { ([(header::CONTENT_TYPE, "application/json")], body) }
    })
}

impl StaticServer {
    /// Serves `body` on a free loopback port inside this process.
    pub async fn start(name: &str, body: Bytes) -> anyhow::Result<StaticServer> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let app = static_router(body);
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(StaticServer {
            target: Target::new(name, format!("http://{addr}"))?,
            task: Some(task),
            child: None,
        })
    }

    /// Serves `body` from a separate `bench serve-static` process (`exe` is the bench binary).
    pub fn start_process(
        exe: &Path,
        name: &str,
        body: &Bytes,
        scratch: &Path,
    ) -> anyhow::Result<StaticServer> {
        let file = scratch.join("static-body.json");
        std::fs::write(&file, body)?;
        let mut child = Command::new(exe)
            .args(["serve-static", "--body"])
            .arg(&file)
            .stdout(Stdio::piped())
            .spawn()
            .context("starting bench serve-static")?;
        let stdout = child.stdout.take().context("static server stdout")?;
        let line =
            BufReader::new(stdout).lines().map_while(Result::ok).find(|l| l.starts_with("listening on "));
        let Some(url) = line.and_then(|l| l.strip_prefix("listening on ").map(str::to_owned)) else {
            let _ = child.kill();
            bail!("the static server did not start");
        };
        Ok(StaticServer { target: Target::new(name, url)?, task: None, child: Some(child) })
    }
}

impl Drop for StaticServer {
    fn drop(&mut self) {
        if let Some(task) = &self.task {
            task.abort();
        }
        if let Some(child) = &mut self.child {
            let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
            let _ = child.wait();
        }
    }
}

/// Sends each APQ registration (document text with its hash) once, so later hash-only GETs
/// find it; returns the body of the hot request (a real response for the static server to
/// replay).
pub async fn register_persisted(client: &reqwest::Client, target: &Target) -> anyhow::Result<Bytes> {
    for path in crate::workload::registrations() {
        let status = client.get(format!("{}{path}", target.base_url)).send().await?.status();
        if !status.is_success() {
            bail!("registering a persisted query with {} failed: {status}", target.name);
        }
    }
    let hot = crate::workload::hot_path();
    let body = client.get(format!("{}{hot}", target.base_url)).send().await?.bytes().await?;
    if body.windows(9).any(|w| w == b"\"errors\":") {
        bail!("the hot request failed on {}: {}", target.name, String::from_utf8_lossy(&body));
    }
    Ok(body)
}

/// The `cache` labels of the gateway's entity cache.
const ENTITY_CACHES: [&str; 3] = ["cache=\"movies\"", "cache=\"people\"", "cache=\"credits\""];

/// Sums of the gateway counters a report needs.
#[derive(Clone, Copy, Debug, Default, serde::Serialize)]
pub struct GatewayCounters {
    /// `store_calls_total`, without `op="ping"` (the readiness probe's).
    pub store_calls: f64,
    /// Database statements the store calls sent (`store_statements_per_call_sum`; none on the
    /// embedded store).
    pub store_statements: f64,
    /// Round trips to the database they waited for (`store_round_trips_per_call_sum`).
    pub store_round_trips: f64,
    /// `cache_requests_total{cache="response",result="hit"}`.
    pub response_hits: f64,
    /// `cache_requests_total{cache="response",result="miss"}`.
    pub response_misses: f64,
    /// `http_requests_total{route="/graphql"}`.
    pub graphql_requests: f64,
    /// Entity-cache hits (`cache_requests_total{cache="movies"|"people"|"credits",result="hit"}`).
    pub entity_hits: f64,
    /// Entity-cache misses.
    pub entity_misses: f64,
}

impl GatewayCounters {
    /// Reads `/metrics` of `target`.
    pub async fn scrape(client: &reqwest::Client, target: &Target) -> anyhow::Result<GatewayCounters> {
        let text = client.get(format!("{}/metrics", target.base_url)).send().await?.text().await?;
        let sum = |name: &str, labels: &[&str]| -> f64 {
            text.lines()
                .filter(|l| !l.starts_with('#'))
                .filter_map(|l| l.rsplit_once(' '))
                .filter(|(series, _)| {
                    series.split('{').next() == Some(name) && labels.iter().all(|l| series.contains(l))
                })
                .filter_map(|(_, v)| v.parse::<f64>().ok())
                .sum()
        };
        Ok(GatewayCounters {
            // Without the readiness probe's pings (one a second, whatever the load).
            store_calls: sum("store_calls_total", &[]) - sum("store_calls_total", &["op=\"ping\""]),
            store_statements: sum("store_statements_per_call_sum", &[])
                - sum("store_statements_per_call_sum", &["op=\"ping\""]),
            store_round_trips: sum("store_round_trips_per_call_sum", &[])
                - sum("store_round_trips_per_call_sum", &["op=\"ping\""]),
            response_hits: sum("cache_requests_total", &["cache=\"response\"", "result=\"hit\""]),
            response_misses: sum("cache_requests_total", &["cache=\"response\"", "result=\"miss\""]),
            graphql_requests: sum("http_requests_total", &["route=\"/graphql\""]),
            entity_hits: ENTITY_CACHES
                .iter()
                .map(|c| sum("cache_requests_total", &[c, "result=\"hit\""]))
                .sum(),
            entity_misses: ENTITY_CACHES
                .iter()
                .map(|c| sum("cache_requests_total", &[c, "result=\"miss\""]))
                .sum(),
        })
    }

    /// `self - before`.
    pub fn since(self, before: GatewayCounters) -> GatewayCounters {
        GatewayCounters {
            store_calls: self.store_calls - before.store_calls,
            store_statements: self.store_statements - before.store_statements,
            store_round_trips: self.store_round_trips - before.store_round_trips,
            response_hits: self.response_hits - before.response_hits,
            response_misses: self.response_misses - before.response_misses,
            graphql_requests: self.graphql_requests - before.graphql_requests,
            entity_hits: self.entity_hits - before.entity_hits,
            entity_misses: self.entity_misses - before.entity_misses,
        }
    }
}
