//! `[store] backend = "scylla"` settings: where the cluster is, which data center is local,
//! the keyspace's replication, consistency and timeouts, credentials and TLS.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Consistency levels Marquee lets an operator choose.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Consistency {
    /// One replica anywhere.
    One,
    /// One replica in the local data center.
    LocalOne,
    /// A majority of the replicas in the local data center (the default): a region answers
    /// on its own, and survives one node of three.
    LocalQuorum,
    /// A majority of all replicas (crosses regions on every request).
    Quorum,
    /// A majority in every data center.
    EachQuorum,
    /// Every replica.
    All,
}

impl Consistency {
    pub(crate) fn driver(self) -> scylla::statement::Consistency {
        use scylla::statement::Consistency as C;
        match self {
            Consistency::One => C::One,
            Consistency::LocalOne => C::LocalOne,
            Consistency::LocalQuorum => C::LocalQuorum,
            Consistency::Quorum => C::Quorum,
            Consistency::EachQuorum => C::EachQuorum,
            Consistency::All => C::All,
        }
    }
}

/// The port ScyllaDB serves CQL over TLS on (client-to-node encryption).
const TLS_PORT: &str = "9142";

/// Serialises a secret as `<redacted>` (what `gateway config` prints).
fn redacted<S: serde::Serializer>(value: &Option<String>, serializer: S) -> Result<S::Ok, S::Error> {
    match value {
        Some(_) => serializer.serialize_some("<redacted>"),
        None => serializer.serialize_none(),
    }
}

/// The ScyllaDB backend's settings (`[store]` with `backend = "scylla"`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ScyllaOptions {
    /// Nodes to discover the cluster from, `host:port` (names or addresses); prefer nodes of
    /// the local data center.
    pub contact_points: Vec<String>,
    /// The keyspace holding Marquee's tables.
    pub keyspace: String,
    /// This region's data center: requests go to its nodes only (LOCAL_* consistency).
    pub local_dc: String,
    /// Replication factor per data center, used when `gateway migrate` creates the keyspace.
    pub replication: BTreeMap<String, u32>,
    /// Consistency of request-path reads.
    pub read_consistency: Consistency,
    /// Consistency of writes.
    pub write_consistency: Consistency,
    /// Consistency of a catalog load's writes and of its publication. EACH_QUORUM (the
    /// default): a generation is published only once a quorum of every data center holds
    /// every row, so no region's gateways can switch to it before its rows are there; a
    /// load during a partition fails rather than publish half a catalog to one side.
    pub load_consistency: Consistency,
    /// Per-request timeout, in milliseconds (a timed-out request is a retryable error).
    pub request_timeout_ms: u64,
    /// A second copy of an idempotent read is sent to another replica when the first has not
    /// answered after this many milliseconds (0 disables speculative execution).
    pub speculative_delay_ms: u64,
    /// Requests one gateway keeps in flight at once; more wait for a slot.
    pub max_in_flight: usize,
    /// Rows per page when a read walks a partition.
    pub page_size: u32,
    /// Concurrent writes while loading a catalog.
    pub load_concurrency: usize,
    /// Rows a catalog load buffers while waiting for their partitions to fill a batch (a
    /// 50k-movie seed's peak RSS went from 65 to 141 MiB when this grew from 8,192 to
    /// 131,072). When the buffer is full every
    /// partition's rows are sent, and the load's progress (what a rerun skips) moves to the
    /// people and movies that came before: a smaller buffer batches less and records
    /// progress more often.
    pub load_buffer_rows: usize,
    /// Where a catalog load keeps people's filmography rows until every movie is in (about
    /// 50 bytes a credit: 0.5 GB for 500k seeded movies, 5 GB for 5M), in a directory of its
    /// own that it removes when it ends; what a killed load left goes with the next load on
    /// the machine. Unset: the system's temporary directory (`TMPDIR`), which is memory on
    /// systems that mount `/tmp` as tmpfs.
    pub load_spill_dir: Option<std::path::PathBuf>,
    /// Wait for schema agreement after schema changes (on for real clusters; a single-node
    /// stand-in never reports it).
    pub await_schema_agreement: bool,
    /// How often each gateway re-derives recently written rating totals, in milliseconds.
    pub reconcile_interval_ms: u64,
    /// How often a running gateway looks for a newly published catalog generation, in
    /// milliseconds (it switches once its data center holds the new one whole).
    pub catalog_poll_ms: u64,
    /// User name for password authentication (`MARQUEE_STORE__USERNAME`).
    pub username: Option<String>,
    /// Password (`MARQUEE_STORE__PASSWORD`); prefer `password_file`. Never printed.
    #[serde(serialize_with = "redacted")]
    pub password: Option<String>,
    /// File holding the password (a mounted secret).
    pub password_file: Option<PathBuf>,
    /// PEM file of the CA(s) that sign the nodes' certificates; setting it turns TLS on
    /// (`MARQUEE_STORE__TLS_CA_FILE`).
    pub tls_ca_file: Option<PathBuf>,
    /// The same CA certificates as PEM text (`MARQUEE_STORE__TLS_CA`), for platforms that
    /// hand secrets to a process in its environment rather than as files; turns TLS on.
    pub tls_ca: Option<String>,
    /// Client certificate chain (PEM), for clusters that require client certificates.
    pub tls_cert_file: Option<PathBuf>,
    /// The client certificate's private key (PEM), with `tls_cert_file`.
    pub tls_key_file: Option<PathBuf>,
    /// The name nodes' certificates must carry; unset, each node's certificate must list the
    /// node's IP address.
    pub tls_server_name: Option<String>,
}

impl Default for ScyllaOptions {
    fn default() -> Self {
        ScyllaOptions {
            contact_points: vec!["127.0.0.1:9042".into()],
            keyspace: "marquee".into(),
            local_dc: "datacenter1".into(),
            replication: BTreeMap::from([("datacenter1".into(), 3)]),
            read_consistency: Consistency::LocalQuorum,
            write_consistency: Consistency::LocalQuorum,
            load_consistency: Consistency::EachQuorum,
            request_timeout_ms: 2_000,
            speculative_delay_ms: 50,
            max_in_flight: 1_024,
            page_size: 1_000,
            load_concurrency: 256,
            load_buffer_rows: 131_072,
            load_spill_dir: None,
            await_schema_agreement: true,
            reconcile_interval_ms: 1_000,
            catalog_poll_ms: 10_000,
            username: None,
            password: None,
            password_file: None,
            tls_ca_file: None,
            tls_ca: None,
            tls_cert_file: None,
            tls_key_file: None,
            tls_server_name: None,
        }
    }
}

impl ScyllaOptions {
    pub(crate) fn request_timeout(&self) -> Duration {
        Duration::from_millis(self.request_timeout_ms.max(1))
    }

    /// Whether TLS is on (a CA is given, as a file or as text).
    pub fn tls(&self) -> bool {
        self.tls_ca_file.is_some() || self.tls_ca.is_some()
    }

    /// Checks, before anything connects, what the driver would reject later with a less
    /// helpful message, and what it would accept but run wrong (credentials it would not
    /// send, plain text to a TLS port). Each error is one line naming the setting.
    pub fn validate(&self) -> Result<(), String> {
        if self.contact_points.is_empty() {
            return Err("store.contact_points is empty".into());
        }
        if (self.password.is_some() || self.password_file.is_some()) && self.username.is_none() {
            return Err("store.password (or password_file) is set without store.username: the driver sends \
                 credentials only with a user name; set store.username"
                .into());
        }
        if self.username.is_some() && self.password.is_none() && self.password_file.is_none() {
            return Err("store.username is set without store.password or store.password_file".into());
        }
        if self.tls_ca_file.is_some() && self.tls_ca.is_some() {
            return Err("set store.tls_ca_file or store.tls_ca, not both".into());
        }
        let on_tls_port = |p: &&String| p.rsplit_once(':').is_some_and(|(_, port)| port == TLS_PORT);
        if let Some(point) = self.contact_points.iter().find(on_tls_port).filter(|_| !self.tls()) {
            return Err(format!(
                "store.contact_points names {point}, ScyllaDB's TLS port ({TLS_PORT}), and TLS is off: \
                 set store.tls_ca_file or store.tls_ca to the CA that signs the nodes' certificates"
            ));
        }
        if self.keyspace.is_empty()
            || !self.keyspace.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
            || self.keyspace.len() > 48
        {
            return Err(format!(
                "store.keyspace `{}` must be 1-48 letters, digits or underscores",
                self.keyspace
            ));
        }
        if self.replication.is_empty() || self.replication.values().any(|&rf| rf == 0) {
            return Err("store.replication needs a factor of at least 1 for each data center".into());
        }
        if let Some(dc) = self.replication.keys().find(|dc| dc.contains('\'')) {
            return Err(format!("store.replication names an invalid data center `{dc}`"));
        }
        if !self.replication.contains_key(&self.local_dc) {
            return Err(format!(
                "store.local_dc `{}` has no replicas in store.replication; LOCAL_* reads would fail",
                self.local_dc
            ));
        }
        if self.read_consistency == Consistency::EachQuorum {
            return Err("store.read_consistency cannot be EACH_QUORUM (it applies to writes only)".into());
        }
        if self.tls_cert_file.is_some() != self.tls_key_file.is_some() {
            return Err("store.tls_cert_file and store.tls_key_file go together".into());
        }
        if !self.tls() && (self.tls_cert_file.is_some() || self.tls_server_name.is_some()) {
            return Err(
                "store.tls_cert_file and tls_server_name need store.tls_ca_file or tls_ca (which turn TLS on)"
                    .into(),
            );
        }
        if self.max_in_flight == 0
            || self.page_size == 0
            || self.load_concurrency == 0
            || self.load_buffer_rows == 0
        {
            return Err(
                "store.max_in_flight, page_size, load_concurrency and load_buffer_rows must be above 0"
                    .into(),
            );
        }
        Ok(())
    }

    /// The password from `password` or `password_file`.
    pub(crate) fn password(&self) -> Result<Option<String>, std::io::Error> {
        match (&self.password, &self.password_file) {
            (Some(password), _) => Ok(Some(password.clone())),
            (None, Some(file)) => Ok(Some(std::fs::read_to_string(file)?.trim_end().to_owned())),
            (None, None) => Ok(None),
        }
    }
}
