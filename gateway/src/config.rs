//! Layered configuration: built-in defaults, then an optional TOML file (usually a region file
//! from `regions/`), then `MARQUEE_*` environment variables (`__` separates nesting levels,
//! e.g. `MARQUEE_LOG__FORMAT=json`), then command-line flags. Unknown keys are an error at
//! every layer, so a typo cannot silently fall back to a default.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use marquee_schema::QueryLimits;
use serde::{Deserialize, Serialize};

pub use crate::secret::Secret;

/// A whole number of seconds: the type of every `*_secs` duration key.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Secs(pub u64);

/// A whole number of milliseconds: the type of every `*_ms` key.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Millis(pub u64);

/// A whole number of microseconds: the type of every `*_us` key.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Micros(pub u64);

/// A whole number of mebibytes: the type of every `*_mib` memory key.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Mib(pub u64);

impl Secs {
    /// As a duration.
    pub const fn get(self) -> Duration {
        Duration::from_secs(self.0)
    }
}

impl Millis {
    /// As a duration.
    pub const fn get(self) -> Duration {
        Duration::from_millis(self.0)
    }
}

impl Micros {
    /// As a duration.
    pub const fn get(self) -> Duration {
        Duration::from_micros(self.0)
    }
}

impl Mib {
    /// In bytes.
    pub const fn bytes(self) -> u64 {
        self.0.saturating_mul(1024 * 1024)
    }
}

/// Everything the gateway can be configured with.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Region name; every metric carries it as the `region` label.
    pub region: String,
    /// Address the HTTP server binds.
    pub listen: SocketAddr,
    /// Logging.
    pub log: LogConfig,
    /// `[telemetry]`: traces exported over OTLP (off unless an endpoint is set).
    #[serde(default)]
    pub telemetry: TelemetryConfig,
    /// HTTP limits and shutdown.
    pub http: HttpConfig,
    /// GraphQL execution.
    pub graphql: GraphqlConfig,
    /// The storage backend and its settings.
    pub store: StoreConfig,
    /// The demo catalog seeded on first start when the data directory is empty.
    pub demo: DemoConfig,
    /// Per-identity request rate on `/graphql`.
    pub rate_limit: RateLimitConfig,
    /// HTTP caching of public GET responses.
    pub cache: CacheConfig,
    /// Tokens: the gateway's signing keys and the identity provider's JWKS.
    pub auth: AuthConfig,
    /// Automatic persisted queries, the partner manifest and safelist mode.
    pub persisted_queries: PersistedQueryConfig,
    /// The in-process cache of whole public GET responses.
    pub response_cache: ResponseCacheConfig,
    /// The region's Redis Cluster (`[redis]`): the regional cache tier, the invalidation bus,
    /// region-wide rate limits and APQ registrations. Unset: all of that stays in process.
    #[serde(default)]
    pub redis: Option<RedisConfig>,
    /// `[topology]`: where the region's parts listen. The gateway does not use it; it is
    /// here so that a region file is checked whole, and the tools that deploy a region (the
    /// local rig, the traffic policy) read it from the same file.
    #[serde(default)]
    pub topology: Option<TopologyConfig>,
    /// `[dns]`: how the names in this configuration are resolved.
    #[serde(default)]
    pub dns: DnsConfig,
    /// `[cdn]`: the region's CDN edges, purged when ratings change.
    #[serde(default)]
    pub cdn: CdnConfig,
    /// This deployment is a test (CI, the local rig): development tokens are accepted over a
    /// shared store. Never set in production.
    #[serde(default)]
    pub testing: bool,
}

/// A region's parts, for the tools that start and route to them.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TopologyConfig {
    /// Every gateway of the region.
    pub gateways: Vec<SocketAddr>,
    /// The regional load balancer in front of the gateways.
    pub load_balancer: SocketAddr,
    /// The CDN edge in front of the load balancer: the address geo-DNS gives the region's
    /// clients.
    pub edge: SocketAddr,
    /// Clients in these subnets (`a.b.c.d/n`) are the region's.
    pub client_subnets: Vec<String>,
}

/// Persisted queries.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PersistedQueryConfig {
    /// Partner manifest in Apollo's `apollo-persisted-query-manifest` format (re-read on change).
    pub manifest_file: Option<PathBuf>,
    /// Run manifest operations only (`PERSISTED_QUERY_NOT_IN_LIST` for anything else).
    pub safelist: bool,
    /// Accept automatic persisted queries (ignored in safelist mode).
    pub apq: bool,
    /// Memory for registered APQ documents, in MiB.
    pub apq_cache_mib: Mib,
    /// How long a registration stays in the region's Redis (with `[redis]`), in seconds.
    pub apq_shared_ttl_secs: Secs,
    /// How often the manifest file is checked for changes, in milliseconds.
    pub reload_ms: Millis,
    /// A file holding a token that lets introspection through safelist mode: a POST with it
    /// in `Marquee-Introspection-Token` may run a document that selects only `__schema`,
    /// `__type` and `__typename`.
    pub introspection_token_file: Option<PathBuf>,
}

/// The in-process response cache.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResponseCacheConfig {
    /// Off: every GET executes.
    pub enabled: bool,
    /// Memory for cached responses, in MiB.
    pub max_mib: Mib,
    /// Longest an entry lives, in seconds (shorter when the response's max-age is).
    pub max_ttl_secs: Secs,
}

/// Token verification and issuing.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    /// `iss` of the tokens this gateway issues.
    pub issuer: String,
    /// `aud` every accepted token must carry (the gateway's own and the identity provider's).
    pub audience: String,
    /// PKCS#8 PEM Ed25519 keys (`gateway keygen`); the first signs, all verify. Empty (and no
    /// `signing_keys`): a key generated at startup, valid for this process only, which only
    /// the embedded store accepts.
    pub signing_key_files: Vec<PathBuf>,
    /// The same keys as PEM text, one `PRIVATE KEY` block after another, the first signing
    /// (`MARQUEE_AUTH__SIGNING_KEYS`, e.g. a secret the platform puts in the environment).
    /// Exclusive with `signing_key_files`.
    #[serde(default)]
    pub signing_keys: Option<Secret>,
    /// Lifetime of anonymous tokens from `POST /auth/anonymous`, in seconds.
    pub anonymous_ttl_secs: Secs,
    /// Accept user tokens signed with the gateway's own key (`gateway token`); for development.
    /// Refused over a shared store unless `testing` is set.
    pub dev_tokens: bool,
    /// Clock skew allowed on `exp` and `nbf`, in seconds.
    pub leeway_secs: Secs,
    /// The identity provider's JWKS URL.
    pub jwks_url: Option<String>,
    /// The identity provider's JWKS as a local file (instead of a URL).
    pub jwks_file: Option<PathBuf>,
    /// The identity provider's `iss` (required with a JWKS).
    pub jwks_issuer: Option<String>,
    /// How often the JWKS is fetched again, in seconds.
    pub jwks_refresh_secs: Secs,
    /// Least time between two fetches caused by unknown `kid`s, in seconds.
    pub jwks_min_refresh_secs: Secs,
}

/// HTTP caching of public GET responses (max-age comes from the schema's field hints).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CacheConfig {
    /// `stale-while-revalidate` seconds on public responses.
    pub stale_while_revalidate_secs: u32,
    /// `stale-if-error` seconds on public responses.
    pub stale_if_error_secs: u32,
    /// How long a gateway caches a movie's users' rating totals, in seconds: the longest a
    /// rating taken by another gateway of the region takes to show here (0: not cached).
    pub rating_totals_ttl_secs: Secs,
    /// Memory for cached rating totals, in MiB.
    pub rating_totals_mib: Mib,
    /// Memory for the entity cache (movies, people, credits by id), in MiB (0: none).
    pub entities_mib: Mib,
    /// How long an entity stays in the entity cache, in seconds.
    pub entities_ttl_secs: Secs,
}

/// Per-identity request rate.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimitConfig {
    /// Off: no limit.
    pub enabled: bool,
    /// Sustained requests per second per identity.
    pub per_second: u32,
    /// Requests an identity may send at once after being idle.
    pub burst: u32,
}

/// Log output.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    /// `human` or `json`.
    pub format: LogFormat,
    /// `tracing` filter directive, e.g. `info,marquee_gateway=debug` (`RUST_LOG` wins if set).
    pub filter: String,
}

/// Traces: `tracing` spans exported to an OpenTelemetry collector over OTLP/HTTP (protobuf).
/// Off while `otlp_endpoint` is unset; then no span below `log.filter` is even created.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TelemetryConfig {
    /// The collector's OTLP/HTTP base URL, e.g. `http://127.0.0.1:4318`: spans are posted to
    /// its `/v1/traces`. Plain HTTP: run the collector beside the gateway (an agent or
    /// sidecar), which forwards over TLS.
    pub otlp_endpoint: Option<String>,
    /// The share of traces kept, 0.0 to 1.0, whether the gateway starts them or a caller's
    /// `traceparent` does.
    pub sampling_ratio: f64,
    /// Traces a caller's `traceparent` marks sampled, kept beyond `sampling_ratio`, at most
    /// this many a second per gateway (0: none): an edge or a client that traces a request
    /// gets its trace, and nobody can make every request a trace.
    pub client_sampled_per_second: u32,
    /// The `service.name` spans are reported under; unset, `marquee-gateway-<region>`.
    pub service_name: Option<String>,
    /// Finished spans waiting for export; beyond it, spans are dropped and counted
    /// (`trace_spans_total{outcome="dropped_queue_full"}`), never waited for.
    pub queue_spans: usize,
    /// Time allowed for one export before its spans count as dropped.
    pub export_timeout_ms: Millis,
}

impl Default for TelemetryConfig {
    fn default() -> Self {
        TelemetryConfig {
            otlp_endpoint: None,
            sampling_ratio: 1.0,
            client_sampled_per_second: 10,
            service_name: None,
            queue_spans: 8_192,
            export_timeout_ms: Millis(5_000),
        }
    }
}

impl TelemetryConfig {
    /// Refuses a ratio outside 0..=1, a queue of none or of millions, no time to export, and
    /// an endpoint that is not an `http://` URL.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if !(0.0..=1.0).contains(&self.sampling_ratio) {
            return Err(ConfigError::Refused(format!(
                "telemetry.sampling_ratio is {}: it is a share of traces, from 0.0 to 1.0",
                self.sampling_ratio
            )));
        }
        if !(1..=1_000_000).contains(&self.queue_spans) {
            return Err(ConfigError::Refused(format!(
                "telemetry.queue_spans is {}: from 1 to 1000000 finished spans may wait for export",
                self.queue_spans
            )));
        }
        if self.export_timeout_ms.0 == 0 {
            return Err(ConfigError::Refused(
                "telemetry.export_timeout_ms is 0: no export could finish".into(),
            ));
        }
        if let Some(endpoint) = &self.otlp_endpoint
            && endpoint.strip_prefix("http://").is_none_or(str::is_empty)
        {
            return Err(ConfigError::Refused(format!(
                "telemetry.otlp_endpoint is {endpoint:?}: give the collector's OTLP/HTTP base URL, \
                 e.g. http://127.0.0.1:4318 (plain HTTP to a collector beside the gateway)"
            )));
        }
        Ok(())
    }
}

/// Log line format.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Readable lines for a terminal.
    Human,
    /// One JSON object per line, for log shippers.
    Json,
}

/// HTTP limits, connection handling and shutdown behaviour.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpConfig {
    /// Largest accepted request body, in bytes (413 above).
    pub body_limit_bytes: usize,
    /// Per-request time limit, in milliseconds (504 after): reading the body, parsing,
    /// analysis and execution.
    pub request_timeout_ms: Millis,
    /// Largest request line plus headers, in bytes (431 above; at least 8192).
    pub max_header_bytes: usize,
    /// Time a client has to send a whole request head once its first byte arrived, in
    /// milliseconds; the connection is closed after it (slow-header clients).
    pub header_read_timeout_ms: Millis,
    /// How long a connection may wait for its next request, or stall a response it is not
    /// reading, in milliseconds before it is closed. Keep it above the load balancer's idle
    /// timeout, so the balancer is the one that closes idle connections.
    pub idle_timeout_ms: Millis,
    /// Most connections open at once; further clients wait in the listen backlog until one
    /// closes. Lowered at startup to what the file-descriptor limit allows.
    pub max_connections: usize,
    /// After SIGTERM, how long `/readyz` answers 503 while requests are still served, so load
    /// balancers stop sending traffic before the listener closes.
    pub drain_delay_ms: Millis,
    /// After the listener closes, how long in-flight requests get to finish.
    pub shutdown_grace_ms: Millis,
    /// The proxies in front of the gateway (load balancer, CDN), as networks. A request from
    /// one of them is the client's named in `X-Forwarded-For`: the rightmost address that is
    /// not itself a trusted proxy. Rate limits and anonymous tokens key on that address.
    /// Empty: the peer is the client, whatever the header says.
    #[serde(default)]
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// The secret the deployment's CDN adds to every request it forwards, in `origin_header`.
    /// Set, a request's `X-Forwarded-For` is believed only when it carries this (or
    /// `origin_secret_previous`): anyone can point a CDN distribution of their own at the
    /// load balancer and write the header, but not this value. Others are the peer's.
    #[serde(default)]
    pub origin_secret: Option<Secret>,
    /// The value being rotated out, accepted alongside `origin_secret` during a rotation.
    #[serde(default)]
    pub origin_secret_previous: Option<Secret>,
    /// The header carrying the CDN's secret.
    #[serde(default = "default_origin_header")]
    pub origin_header: String,
}

fn default_origin_header() -> String {
    "x-marquee-origin".into()
}

/// The shortest origin secret accepted: it must not be guessable.
const ORIGIN_SECRET_MIN_LEN: usize = 16;

impl HttpConfig {
    /// The origin secrets a request may carry, current first; an empty previous value is none
    /// (a deployment's secret keeps the key between rotations). Refuses an empty or short
    /// current value, a previous one without a current one, and a header name HTTP refuses.
    pub fn origin_secrets(&self) -> Result<Vec<&str>, ConfigError> {
        let refused = |why: &str| Err(ConfigError::Refused(why.to_owned()));
        let current = self.origin_secret.as_ref().map(Secret::expose);
        let previous = self.origin_secret_previous.as_ref().map(Secret::expose).filter(|p| !p.is_empty());
        let Some(current) = current else {
            return match previous {
                Some(_) => refused("http.origin_secret_previous is set without http.origin_secret"),
                None => Ok(Vec::new()),
            };
        };
        if [Some(current), previous].into_iter().flatten().any(|s| s.len() < ORIGIN_SECRET_MIN_LEN) {
            return refused("http.origin_secret (and _previous) must be at least 16 characters");
        }
        if axum::http::HeaderName::try_from(self.origin_header.as_str()).is_err() {
            return refused("http.origin_header is not a valid header name");
        }
        Ok([Some(current), previous].into_iter().flatten().collect())
    }
}

/// GraphQL execution settings.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GraphqlConfig {
    /// How long a dataloader waits to collect a batch, in microseconds. 0 (the default) waits
    /// on no timer: a batch is every key asked for before the loader's task first runs, which
    /// is spawned onto the resolving worker and normally runs once the execution step yields,
    /// so a step's keys share one batch (asserted by the batching tests). Above 0 arms a timer
    /// per batch (async-io's timer thread): it can merge keys from concurrent work, at that
    /// much added latency per nesting level.
    pub batch_delay_us: Micros,
    /// Prefix for poster URLs.
    pub image_base_url: String,
    /// Serve GraphiQL at `GET /graphql` to browsers.
    pub graphiql: bool,
    /// A CDN laid out like unpkg to load GraphiQL's scripts from, at their pinned versions
    /// and integrity hashes. Unset (the default): the gateway serves them itself, and the page
    /// loads nothing from the internet.
    pub graphiql_assets_url: Option<String>,
    /// Depth, cost, alias, root-field and response-size limits (`max_*`, keys of `[graphql]`
    /// itself; see [`QueryLimits`]).
    #[serde(flatten)]
    pub limits: QueryLimits,
}

/// The storage backend: `[store]` with `backend = "..."` and that backend's own settings
/// beside it (only those are accepted). Missing settings take the backend's defaults.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "backend", rename_all = "snake_case", deny_unknown_fields)]
#[non_exhaustive]
pub enum StoreConfig {
    /// Files in a local data directory: one machine, no server to run.
    Embedded(EmbeddedConfig),
    /// A ScyllaDB (or Cassandra-compatible) cluster: one keyspace replicated to every
    /// region's data center.
    Scylla(Box<marquee_store_scylla::ScyllaOptions>),
}

/// `[store] backend = "embedded"`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EmbeddedConfig {
    /// The data directory (the catalog generations and the user data).
    pub data_dir: PathBuf,
    /// Page cache of the catalog while serving, in MiB.
    pub cache_mib: Mib,
    /// Page cache of the user data (ratings, watchlists), in MiB.
    pub users_cache_mib: Mib,
    /// Catalog reads on the request's worker thread (`false`: on the blocking pool, for a
    /// catalog larger than the machine's memory).
    pub inline_reads: bool,
    /// How often a serving gateway looks for a newly published catalog generation (a load
    /// run beside it), in milliseconds.
    pub catalog_poll_ms: Millis,
    /// The share of one core (1 to 100 percent) a catalog delta handed to this gateway may
    /// take: it waits between its steps, so requests served beside it keep their latency.
    pub delta_share_percent: u8,
}

impl Default for EmbeddedConfig {
    fn default() -> Self {
        EmbeddedConfig {
            data_dir: PathBuf::from("data"),
            cache_mib: Mib(128),
            users_cache_mib: Mib(16),
            inline_reads: true,
            catalog_poll_ms: Millis(1_000),
            delta_share_percent: 25,
        }
    }
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig::Embedded(EmbeddedConfig::default())
    }
}

/// The demo catalog.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DemoConfig {
    /// Movies to seed when the data directory has no catalog (0: refuse to start instead).
    pub movies: u64,
    /// Generator seed.
    pub seed: u64,
}

/// `[redis]`: the region's Redis Cluster.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RedisConfig {
    /// Cluster nodes to discover the cluster from, `host:port`.
    pub seeds: Vec<String>,
    /// A call taking longer is a miss (or dropped, or decided in process), in milliseconds.
    pub command_timeout_ms: Millis,
    /// Extra time to live, up to this percentage of an entry's TTL, chosen per entry.
    pub ttl_jitter_pct: u8,
    /// Speak TLS to every node, verifying its certificate (against public CAs, or
    /// `tls_ca_file`) and its name (the seed's).
    pub tls: bool,
    /// PEM file of the CA(s) that sign the nodes' certificates, instead of public CAs.
    pub tls_ca_file: Option<PathBuf>,
    /// The user to AUTH as (`default` for an ElastiCache AUTH token).
    pub username: Option<String>,
    /// The password (AUTH token) to AUTH with. Never printed.
    pub password: Option<Secret>,
}

impl Default for RedisConfig {
    fn default() -> Self {
        RedisConfig {
            seeds: Vec::new(),
            command_timeout_ms: Millis(50),
            ttl_jitter_pct: 10,
            tls: false,
            tls_ca_file: None,
            username: None,
            password: None,
        }
    }
}

/// `[dns]`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DnsConfig {
    /// DNS servers (`ip:port`, UDP) for the names in this configuration. Empty: the system's.
    pub servers: Vec<SocketAddr>,
}

/// `[cdn]`: the region's CDN edges.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CdnConfig {
    /// URLs to send `PURGE` to, with the surrogate keys in `xkey-purge` (empty: no purging).
    pub purge_urls: Vec<String>,
    /// How long one purge request may take, in milliseconds.
    pub purge_timeout_ms: Millis,
}

impl Default for CdnConfig {
    fn default() -> Self {
        CdnConfig { purge_urls: Vec::new(), purge_timeout_ms: Millis(1_000) }
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            region: "local".into(),
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            log: LogConfig { format: LogFormat::Human, filter: "info".into() },
            telemetry: TelemetryConfig::default(),
            http: HttpConfig {
                body_limit_bytes: 64 * 1024,
                request_timeout_ms: Millis(10_000),
                max_header_bytes: 32 * 1024,
                header_read_timeout_ms: Millis(10_000),
                idle_timeout_ms: Millis(75_000),
                max_connections: 10_000,
                drain_delay_ms: Millis(0),
                shutdown_grace_ms: Millis(10_000),
                trusted_proxies: Vec::new(),
                origin_secret: None,
                origin_secret_previous: None,
                origin_header: default_origin_header(),
            },
            graphql: GraphqlConfig {
                batch_delay_us: Micros(0),
                image_base_url: "https://images.marquee.example".into(),
                graphiql: true,
                graphiql_assets_url: None,
                limits: QueryLimits::default(),
            },
            store: StoreConfig::default(),
            demo: DemoConfig { movies: 50_000, seed: 1 },
            rate_limit: RateLimitConfig { enabled: true, per_second: 50, burst: 100 },
            cache: CacheConfig {
                stale_while_revalidate_secs: 60,
                stale_if_error_secs: 86_400,
                rating_totals_ttl_secs: Secs(10),
                rating_totals_mib: Mib(8),
                entities_mib: Mib(128),
                entities_ttl_secs: Secs(3_600),
            },
            auth: AuthConfig {
                issuer: "marquee".into(),
                audience: "marquee-api".into(),
                signing_key_files: Vec::new(),
                signing_keys: None,
                anonymous_ttl_secs: Secs(3600),
                dev_tokens: false,
                leeway_secs: Secs(30),
                jwks_url: None,
                jwks_file: None,
                jwks_issuer: None,
                jwks_refresh_secs: Secs(300),
                jwks_min_refresh_secs: Secs(30),
            },
            persisted_queries: PersistedQueryConfig {
                manifest_file: None,
                safelist: false,
                apq: true,
                apq_cache_mib: Mib(16),
                apq_shared_ttl_secs: Secs(7 * 86_400),
                reload_ms: Millis(5_000),
                introspection_token_file: None,
            },
            response_cache: ResponseCacheConfig { enabled: true, max_mib: Mib(64), max_ttl_secs: Secs(60) },
            redis: None,
            topology: None,
            dns: DnsConfig::default(),
            cdn: CdnConfig::default(),
            testing: false,
        }
    }
}

/// Config problems, reported before anything starts.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The named file does not exist.
    #[error("config file {0} does not exist")]
    MissingFile(PathBuf),
    /// A layer has an unknown key or a bad value.
    #[error("invalid configuration: {0}")]
    Invalid(#[from] Box<figment::Error>),
    /// A combination of settings that would run broken or unsafe (see [`Config::check`]).
    #[error("{0}")]
    Refused(String),
}

impl Config {
    /// Loads defaults ← `file` ← `MARQUEE_*` env ← `overrides` (command-line flags).
    pub fn load(
        file: Option<&Path>,
        overrides: Serialized<serde_json::Value>,
    ) -> Result<Config, ConfigError> {
        // The store section's defaults are only its backend: the other settings default inside
        // the chosen backend's own section, so choosing another backend in a file does not
        // inherit the default backend's keys (which it would refuse as unknown).
        let mut defaults = serde_json::to_value(Config::default()).map_err(|e| {
            ConfigError::Invalid(Box::new(figment::Error::from(format!("serialising defaults: {e}"))))
        })?;
        defaults["store"] = serde_json::json!({ "backend": "embedded" });
        let mut figment = Figment::from(Serialized::defaults(defaults));
        if let Some(file) = file {
            if !file.is_file() {
                return Err(ConfigError::MissingFile(file.to_owned()));
            }
            figment = figment.merge(Toml::file_exact(file));
        }
        figment
            .merge(Env::prefixed("MARQUEE_").split("__"))
            .merge(overrides)
            .extract()
            .map_err(|e| ConfigError::Invalid(Box::new(e)))
    }

    /// Refuses, before anything starts or is written, what would run broken or unsafe; each
    /// error is one line naming the setting. `serving` adds what only a serving gateway needs.
    ///
    /// Over a shared store (ScyllaDB) every gateway of every region must verify every other
    /// gateway's tokens, so a key generated per process is refused; development tokens (any
    /// holder of the key mints any user) are refused unless the deployment is a test.
    pub fn check(&self, serving: bool) -> Result<(), ConfigError> {
        self.telemetry.validate()?;
        if serving {
            self.http.origin_secrets()?;
            if let Some(redis) = &self.redis
                && redis.username.is_some()
                && redis.password.is_none()
            {
                return Err(ConfigError::Refused("redis.username is set without redis.password".into()));
            }
        }
        let StoreConfig::Scylla(scylla) = &self.store else { return Ok(()) };
        scylla.validate().map_err(ConfigError::Refused)?;
        if !serving {
            return Ok(());
        }
        if self.auth.signing_keys.is_none() && self.auth.signing_key_files.is_empty() {
            return Err(ConfigError::Refused(
                "auth.signing_keys (or auth.signing_key_files) is unset: over a shared store every gateway \
                 must sign with the deployment's keys, or a token from one gateway fails on the next \
                 (docs/operating.md: keys, tokens and limits)"
                    .into(),
            ));
        }
        if self.auth.dev_tokens && !self.testing {
            return Err(ConfigError::Refused(
                "auth.dev_tokens is on over a shared store: whoever holds a signing key could sign in as \
                 any user; turn it off (set `testing = true` only on a test deployment)"
                    .into(),
            ));
        }
        Ok(())
    }

    /// The per-request time limit.
    pub fn request_timeout(&self) -> Duration {
        self.http.request_timeout_ms.get()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn telemetry_refuses_ratios_outside_0_to_1_an_empty_queue_and_endpoints_it_cannot_post_to() {
        let refused = |change: fn(&mut TelemetryConfig)| {
            let mut config = Config::default();
            change(&mut config.telemetry);
            config.check(false).err().map(|e| e.to_string())
        };
        assert_eq!(refused(|_| {}), None, "traces are off by default");
        assert_eq!(refused(|t| t.otlp_endpoint = Some("http://127.0.0.1:4318".into())), None);
        for change in [
            (|t: &mut TelemetryConfig| t.sampling_ratio = 1.5) as fn(&mut TelemetryConfig),
            |t| t.sampling_ratio = f64::NAN,
            |t| t.sampling_ratio = -0.1,
            |t| t.queue_spans = 0,
            |t| t.queue_spans = usize::MAX,
            |t| t.export_timeout_ms = Millis(0),
            |t| t.otlp_endpoint = Some("https://collector:4318".into()),
            |t| t.otlp_endpoint = Some("127.0.0.1:4318".into()),
            |t| t.otlp_endpoint = Some("http://".into()),
        ] {
            let message = refused(change).expect("refused");
            assert!(message.starts_with("telemetry."), "{message}");
        }
    }

    fn no_overrides() -> Serialized<serde_json::Value> {
        Serialized::defaults(serde_json::json!({}))
    }

    #[test]
    #[allow(clippy::result_large_err)] // figment's Jail API returns its own large error type
    fn every_region_file_loads_and_the_rig_regions_describe_their_parts() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../regions");
        figment::Jail::expect_with(|jail| {
            jail.clear_env();
            let mut with_topology = Vec::new();
            for entry in std::fs::read_dir(&dir).expect("regions/") {
                let path = entry.expect("entry").path();
                if path.extension().is_none_or(|ext| ext != "toml") {
                    continue;
                }
                let config = Config::load(Some(&path), no_overrides())
                    .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
                if let Some(topology) = &config.topology {
                    assert_eq!(topology.gateways.first(), Some(&config.listen), "{}", path.display());
                    let StoreConfig::Scylla(scylla) = &config.store else { panic!("{}", path.display()) };
                    assert!(scylla.replication.contains_key(&scylla.local_dc), "{}", path.display());
                    with_topology.push((config.region.clone(), scylla.replication.clone()));
                }
            }
            with_topology.sort();
            let names: Vec<&str> = with_topology.iter().map(|(name, _)| name.as_str()).collect();
            assert_eq!(names, ["eu-west", "us-east"]);
            for (name, replication) in &with_topology {
                let mut dcs: Vec<&str> = replication.keys().map(String::as_str).collect();
                dcs.sort_unstable();
                assert_eq!(dcs, names, "{name}: the keyspace is replicated to every region's data center");
            }
            Ok(())
        });
    }

    #[test]
    #[allow(clippy::result_large_err)] // figment's Jail API returns its own large error type
    fn layers_apply_in_order_and_unknown_keys_fail() {
        figment::Jail::expect_with(|jail| {
            jail.create_file("region.toml", "region = \"eu-west\"\n[http]\nbody_limit_bytes = 1000\n")?;
            jail.set_env("MARQUEE_HTTP__BODY_LIMIT_BYTES", "2000");
            let overrides = Serialized::defaults(serde_json::json!({ "listen": "127.0.0.1:9999" }));
            let config = Config::load(Some(Path::new("region.toml")), overrides).expect("valid");
            assert_eq!(config.region, "eu-west");
            assert_eq!(config.http.body_limit_bytes, 2000);
            assert_eq!(config.listen.port(), 9999);
            assert_eq!(config.store, StoreConfig::default());

            jail.create_file("store.toml", "[store]\nbackend = \"embedded\"\ndata_dir = \"/srv/marquee\"\n")?;
            jail.set_env("MARQUEE_STORE__CACHE_MIB", "64");
            jail.set_env("MARQUEE_STORE__USERS_CACHE_MIB", "32");
            jail.set_env("MARQUEE_STORE__INLINE_READS", "false");
            let config = Config::load(Some(Path::new("store.toml")), no_overrides()).expect("valid");
            let StoreConfig::Embedded(embedded) = &config.store else { panic!("{:?}", config.store) };
            assert_eq!(
                (
                    embedded.data_dir.as_path(),
                    embedded.cache_mib,
                    embedded.users_cache_mib,
                    embedded.inline_reads
                ),
                (Path::new("/srv/marquee"), Mib(64), Mib(32), false)
            );

            jail.create_file(
                "scylla.toml",
                "[store]\nbackend = \"scylla\"\ncontact_points = [\"scylla-1.us-east:9042\"]\nlocal_dc = \"us-east\"\n\
                 replication = { us-east = 3, eu-west = 3 }\nread_consistency = \"LOCAL_ONE\"\n",
            )?;
            jail.set_env("MARQUEE_STORE__PASSWORD", "from-env");
            jail.set_env("MARQUEE_STORE__CACHE_MIB", "");
            let config = Config::load(Some(Path::new("scylla.toml")), no_overrides());
            assert!(config.is_err(), "an embedded key in the environment is refused for scylla");
            jail.clear_env();
            jail.set_env("MARQUEE_STORE__USERNAME", "marquee");
            jail.set_env("MARQUEE_STORE__PASSWORD", "from-env");
            jail.set_env("MARQUEE_STORE__TLS_CA_FILE", "/run/secrets/scylla-ca.pem");
            let config = Config::load(Some(Path::new("scylla.toml")), no_overrides()).expect("valid");
            let StoreConfig::Scylla(scylla) = &config.store else { panic!("{:?}", config.store) };
            assert_eq!(scylla.local_dc, "us-east");
            assert_eq!(scylla.replication.get("eu-west"), Some(&3));
            assert_eq!(scylla.read_consistency, marquee_store_scylla::Consistency::LocalOne);
            assert_eq!(scylla.write_consistency, marquee_store_scylla::Consistency::LocalQuorum);
            assert_eq!(
                (scylla.username.as_deref(), scylla.password.as_deref()),
                (Some("marquee"), Some("from-env"))
            );
            assert_eq!(scylla.keyspace, "marquee");
            assert_eq!(scylla.tls_ca_file.as_deref(), Some(Path::new("/run/secrets/scylla-ca.pem")));
            jail.create_file("mixed.toml", "[store]\nbackend = \"scylla\"\ndata_dir = \"/srv\"\n")?;
            assert!(Config::load(Some(Path::new("mixed.toml")), no_overrides()).is_err());
            jail.create_file("unknown.toml", "[store]\nbackend = \"cassandra\"\n")?;
            assert!(Config::load(Some(Path::new("unknown.toml")), no_overrides()).is_err());
            jail.create_file("foreign.toml", "[store]\nbackend = \"embedded\"\nkeyspace = \"x\"\n")?;
            assert!(Config::load(Some(Path::new("foreign.toml")), no_overrides()).is_err());

            jail.clear_env();
            jail.create_file(
                "redis.toml",
                "[redis]\nseeds = [\"redis-1.us-east:6379\", \"redis-2.us-east:6379\"]\n",
            )?;
            let redis = Config::load(Some(Path::new("redis.toml")), no_overrides()).expect("valid").redis;
            let redis = redis.expect("[redis] read");
            assert_eq!(
                (redis.seeds.len(), redis.command_timeout_ms, redis.ttl_jitter_pct),
                (2, Millis(50), 10)
            );
            assert!(Config::load(None, no_overrides()).expect("defaults").redis.is_none());
            jail.create_file("redis-typo.toml", "[redis]\nseed = [\"x:1\"]\n")?;
            assert!(Config::load(Some(Path::new("redis-typo.toml")), no_overrides()).is_err());
            jail.create_file("typo.toml", "regoin = \"x\"\n")?;
            assert!(Config::load(Some(Path::new("typo.toml")), no_overrides()).is_err());
            jail.set_env("MARQUEE_LOG__FORMTA", "json");
            assert!(Config::load(None, no_overrides()).is_err());
            Ok(())
        });
    }

    #[test]
    #[allow(clippy::result_large_err)] // figment's Jail API returns its own large error type
    fn query_limits_are_keys_of_graphql_in_every_layer() {
        figment::Jail::expect_with(|jail| {
            jail.clear_env();
            let defaults = Config::load(None, no_overrides()).expect("defaults");
            assert_eq!(defaults.graphql.limits, QueryLimits::default());

            jail.create_file(
                "limits.toml",
                "[graphql]\ngraphiql = false\nmax_depth = 7\nmax_response_fields = 900\n",
            )?;
            jail.set_env("MARQUEE_GRAPHQL__MAX_ALIASES", "4");
            jail.set_env("MARQUEE_GRAPHQL__MAX_RESPONSE_FIELDS", "800");
            let overrides = Serialized::defaults(serde_json::json!({ "graphql": { "max_root_fields": 3 } }));
            let config = Config::load(Some(Path::new("limits.toml")), overrides).expect("valid");
            assert!(!config.graphql.graphiql);
            assert_eq!(
                config.graphql.limits,
                QueryLimits {
                    max_depth: 7,
                    max_aliases: 4,
                    max_root_fields: 3,
                    max_response_fields: 800,
                    ..QueryLimits::default()
                }
            );

            jail.clear_env();
            jail.create_file("typo.toml", "[graphql]\nmax_dept = 7\n")?;
            let typo = Config::load(Some(Path::new("typo.toml")), no_overrides()).expect_err("a typo");
            assert!(typo.to_string().contains("max_dept"), "{typo}");
            jail.set_env("MARQUEE_GRAPHQL__MAX_DEPTH", "deep");
            assert!(Config::load(None, no_overrides()).is_err(), "a limit that is not a number");
            jail.set_env("MARQUEE_GRAPHQL__MAX_DEPTH", "-1");
            assert!(Config::load(None, no_overrides()).is_err(), "a negative limit");

            // What `gateway config` prints: the limits as keys of `graphql`.
            let printed = serde_json::to_value(&defaults).expect("print");
            assert_eq!(printed["graphql"]["max_depth"], 12, "{printed}");
            assert!(printed["graphql"].get("limits").is_none(), "{printed}");
            Ok(())
        });
    }

    #[test]
    fn a_shared_store_refuses_per_process_keys_and_development_tokens() {
        let mut config = Config::default();
        config.auth.dev_tokens = true;
        config.check(true).expect("the embedded store is one machine's: anything goes");

        config.store = StoreConfig::Scylla(Box::default());
        config.auth.dev_tokens = false;
        config.check(false).expect("seeding or migrating needs no signing key");
        let refused = |config: &Config| config.check(true).expect_err("refused").to_string();
        assert!(refused(&config).starts_with("auth.signing_keys (or auth.signing_key_files) is unset"));
        config.auth.signing_keys = Some(Secret::from("-----BEGIN PRIVATE KEY-----".to_owned()));
        config.check(true).expect("with the deployment's keys");
        config.auth.signing_keys = None;
        config.auth.signing_key_files = vec!["/run/keys/signing.pem".into()];
        config.check(true).expect("with key files");

        config.auth.dev_tokens = true;
        assert!(refused(&config).starts_with("auth.dev_tokens is on over a shared store"));
        config.testing = true;
        config.check(true).expect("a test deployment says so");

        let StoreConfig::Scylla(scylla) = &mut config.store else { unreachable!() };
        scylla.password = Some("hunter2".into());
        assert!(refused(&config).contains("without store.username"));
        assert!(config.check(false).is_err(), "settings the store needs are checked for every command");
    }

    #[test]
    fn origin_secrets_are_checked_before_anything_starts() {
        let secret = |s: &str| Some(Secret::from(s.to_owned()));
        let mut config = Config::default();
        assert_eq!(config.http.origin_secrets().expect("none"), Vec::<&str>::new());
        config.http.origin_secret = secret("0123456789abcdef");
        config.http.origin_secret_previous = secret("");
        assert_eq!(config.http.origin_secrets().expect("current"), ["0123456789abcdef"]);
        config.http.origin_secret_previous = secret("fedcba9876543210");
        assert_eq!(config.http.origin_secrets().expect("both"), ["0123456789abcdef", "fedcba9876543210"]);
        let refused = |config: &Config| config.check(true).expect_err("refused").to_string();
        config.http.origin_secret_previous = secret("short");
        assert!(refused(&config).contains("at least 16"), "a guessable previous value");
        config.http.origin_secret = secret("");
        config.http.origin_secret_previous = None;
        assert!(refused(&config).contains("at least 16"), "an empty current value");
        config.http.origin_secret = None;
        config.http.origin_secret_previous = secret("fedcba9876543210");
        assert!(refused(&config).contains("without http.origin_secret"));
        config.http.origin_secret = secret("0123456789abcdef");
        config.http.origin_header = "bad header".into();
        assert!(refused(&config).contains("origin_header"));

        let config = Config {
            redis: Some(RedisConfig { username: Some("default".into()), ..Default::default() }),
            ..Config::default()
        };
        assert!(refused(&config).contains("redis.username is set without redis.password"));
    }

    #[test]
    fn secrets_are_never_printed() {
        let mut config = Config::default();
        config.auth.signing_keys = Some(Secret::from("PRIVATE-KEY-TEXT".to_owned()));
        let scylla = marquee_store_scylla::ScyllaOptions {
            username: Some("marquee".into()),
            password: Some("hunter2".into()),
            ..Default::default()
        };
        config.store = StoreConfig::Scylla(Box::new(scylla));
        let printed = serde_json::to_string(&config).expect("json");
        let debugged = format!("{:?}", config.auth);
        for shown in [&printed, &debugged] {
            assert!(!shown.contains("PRIVATE-KEY-TEXT") && !shown.contains("hunter2"), "{shown}");
        }
        assert!(printed.contains("\"signing_keys\":\"<redacted>\""), "{printed}");
        assert!(printed.contains("\"password\":\"<redacted>\""), "{printed}");
    }

    #[test]
    #[allow(clippy::result_large_err)] // figment's Jail API returns its own large error type
    fn signing_keys_come_whole_from_the_environment() {
        figment::Jail::expect_with(|jail| {
            jail.clear_env();
            let pem = "-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEIA==\n-----END PRIVATE KEY-----\n";
            jail.set_env("MARQUEE_AUTH__SIGNING_KEYS", format!("{pem}{pem}"));
            let config = Config::load(None, no_overrides()).expect("valid");
            // The environment layer trims the value's last newline; the PEM blocks are whole.
            let keys = config.auth.signing_keys.as_ref().map(Secret::expose).expect("read");
            assert_eq!(keys, format!("{pem}{pem}").trim_end());
            Ok(())
        });
    }

    #[test]
    fn the_local_region_file_loads() {
        let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("../regions/local.toml");
        let config = Config::load(Some(&file), no_overrides()).expect("regions/local.toml is valid");
        assert_eq!(config.region, "local");
        assert_eq!(config.store, StoreConfig::default());
    }

    #[test]
    fn the_local_scylla_region_file_loads() {
        let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("../regions/local-scylla.toml");
        let config = Config::load(Some(&file), no_overrides()).expect("regions/local-scylla.toml is valid");
        let StoreConfig::Scylla(scylla) = &config.store else { panic!("{:?}", config.store) };
        assert_eq!(scylla.contact_points, ["127.0.0.1:9042"]);
        assert!(!scylla.await_schema_agreement);
    }

    #[test]
    fn the_local_redis_region_file_loads() {
        let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("../regions/local-redis.toml");
        let config = Config::load(Some(&file), no_overrides()).expect("regions/local-redis.toml is valid");
        let redis = config.redis.expect("[redis]");
        assert_eq!(redis.seeds, ["127.0.0.1:7000", "127.0.0.1:7001", "127.0.0.1:7002"]);
        assert!(matches!(config.store, StoreConfig::Scylla(_)));
    }

    #[test]
    fn missing_file_is_an_error() {
        assert!(matches!(
            Config::load(Some(Path::new("/nonexistent/marquee.toml")), no_overrides()),
            Err(ConfigError::MissingFile(_))
        ));
    }
}
