//! A CQL v4 server for tests and the local rig: the in-memory engine of the `kassandra` crate
//! behind a TCP accept loop, so the real `scylla` driver talks to it over the real wire
//! protocol. No ScyllaDB or Cassandra server can run on the machines Marquee is developed on;
//! this is the stand-in.
//!
//! What it does not prove (measured; the ScyllaDB backend is designed around it): it ignores
//! `IN`, clustering-key ranges, `DESC` clustering order, TTL, table options (`ALTER TABLE ...
//! WITH` is answered and changes nothing) and lightweight transactions; it
//! panics on counter columns and `timeuuid` values (answered here as a server error rather
//! than a dropped connection); it has one node, one data center and no token ring, so
//! token-aware routing, replication and consistency levels are accepted and not exercised.
//! Schema agreement never settles on it: drivers must not wait for it.
//!
//! One engine serves every connection; each connection keeps its own `USE` keyspace. The same
//! data can be served on several listeners that report different data centers
//! ([`StandIn::in_data_center`]), which is how the local rig gives each region a contact point
//! in its own data center over one shared keyspace. It serves
//! plain CQL or, with a certificate, CQL over TLS (optionally requiring client certificates),
//! so a client's TLS settings are tested over a real handshake.

use std::net::SocketAddr;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};

use futures::{SinkExt, StreamExt};
use kassandra::KassandraSession;
use kassandra::cql::query::{QueryString, QueryValue};
use kassandra::error::DbError;
use kassandra::frame::request::query::Query;
use kassandra::frame::request::{Request, RequestOpcode};
use kassandra::frame::response::Response;
use kassandra::frame::response::error::Error as CqlError;
use kassandra::frame::response::result::{PreparedMetadata, QueryResult};
use kassandra::frame::{FrameParams, request_stream, response_sink};
use rustls::ServerConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

/// The data center name a stand-in reports unless told otherwise (Cassandra's default).
pub const DEFAULT_DATA_CENTER: &str = "datacenter1";

/// One in-memory CQL node, shared by every connection to it.
#[derive(Clone)]
pub struct StandIn {
    engine: Arc<Mutex<Engine>>,
    /// The data center this handle's connections are told the node is in.
    data_center: Arc<str>,
}

/// The engine, and the data center its `system.local` names right now.
struct Engine {
    session: KassandraSession,
    reporting: String,
}

impl Engine {
    /// Makes `system.local` name `data_center` (what DC-aware drivers read).
    fn report(&mut self, data_center: &str) -> Result<(), CqlError> {
        if self.reporting == data_center {
            return Ok(());
        }
        let dc = data_center.replace('\'', "''");
        let statement = format!("UPDATE system.local SET data_center = '{dc}' WHERE key = 'local'");
        let query = Query::simple(&statement)
            .map_err(|e| CqlError::new(DbError::ServerError, format!("{statement}: {e}")))?;
        self.session.process(query)?;
        data_center.clone_into(&mut self.reporting);
        Ok(())
    }
}

impl StandIn {
    /// An empty node reporting `data_center` in `system.local` (what DC-aware drivers read).
    pub fn new(data_center: &str) -> Result<StandIn, String> {
        let mut engine = Engine { session: KassandraSession::new(), reporting: String::new() };
        engine.report(data_center).map_err(|e| e.to_string())?;
        Ok(StandIn { engine: Arc::new(Mutex::new(engine)), data_center: data_center.into() })
    }

    /// The same data, served as a node of `data_center`: connections through the returned
    /// handle read that name in `system.local`, while the other handles' connections keep
    /// reading theirs. One keyspace "replicated" to several data centers, for a rig whose
    /// regions each want a contact point in their own (replication itself is not modelled:
    /// every data center sees every write at once).
    #[must_use]
    pub fn in_data_center(&self, data_center: &str) -> StandIn {
        StandIn { engine: Arc::clone(&self.engine), data_center: data_center.into() }
    }

    /// The data center this handle's connections are told the node is in.
    pub fn data_center(&self) -> &str {
        &self.data_center
    }

    /// Serves connections from `listener` until the future is dropped (which closes every
    /// connection it accepted, like a node going down; the data stays with this `StandIn`, so
    /// serving it again is a node coming back) or the listener fails.
    pub async fn serve(self, listener: TcpListener) -> std::io::Result<()> {
        self.serve_with(listener, None).await
    }

    /// Serves this node (a clone of it: they share the data) on `addr` from the current
    /// runtime, port 0 for a free one: the address it listens on and the task serving it (abort
    /// it to take the node away; serve again on the same address to bring it back).
    pub async fn serve_on(
        &self,
        addr: SocketAddr,
    ) -> std::io::Result<(SocketAddr, tokio::task::JoinHandle<std::io::Result<()>>)> {
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        Ok((addr, tokio::spawn(self.clone().serve(listener))))
    }

    /// [`StandIn::serve`] over TLS: every connection's handshake is answered with `tls` (see
    /// [`server_config`]); a client that does not complete it is disconnected.
    pub async fn serve_tls(self, listener: TcpListener, tls: Arc<ServerConfig>) -> std::io::Result<()> {
        self.serve_with(listener, Some(TlsAcceptor::from(tls))).await
    }

    async fn serve_with(self, listener: TcpListener, tls: Option<TlsAcceptor>) -> std::io::Result<()> {
        let mut connections = tokio::task::JoinSet::new();
        loop {
            tokio::select! {
                accepted = listener.accept() => {
                    let (socket, peer) = accepted?;
                    socket.set_nodelay(true)?;
                    let node = self.clone();
                    let tls = tls.clone();
                    connections.spawn(async move {
                        let served = match tls {
                            None => node.connection(socket).await,
                            Some(tls) => match tls.accept(socket).await {
                                Ok(stream) => node.connection(stream).await,
                                Err(error) => Err(format!("TLS handshake: {error}")),
                            },
                        };
                        if let Err(error) = served {
                            tracing::debug!(%peer, %error, "CQL connection ended");
                        }
                    });
                }
                Some(_) = connections.join_next() => {}
            }
        }
    }

    async fn connection<S>(&self, socket: S) -> Result<(), String>
    where
        S: AsyncRead + AsyncWrite + Send + 'static,
    {
        let (read, write) = tokio::io::split(socket);
        let mut requests = request_stream(read);
        let mut responses = response_sink(write);
        let mut keyspace: Option<String> = None;
        while let Some(frame) = requests.next().await {
            let (params, opcode, body): (FrameParams, RequestOpcode, _) = frame.map_err(|e| e.to_string())?;
            let response = self.answer(&mut keyspace, opcode, &body, params);
            responses.send((response, params.stream)).await.map_err(|e| e.to_string())?;
        }
        Ok(())
    }

    /// Answers one request frame; a request the engine cannot parse or run is an error
    /// response on the same stream, never a closed connection.
    fn answer(
        &self,
        keyspace: &mut Option<String>,
        opcode: RequestOpcode,
        body: &[u8],
        params: FrameParams,
    ) -> Response {
        if opcode == RequestOpcode::Query && alters_table_options(body) {
            return Response::Result(QueryResult::Void);
        }
        let request = match Request::deserialize(opcode, body, params.flags) {
            Ok(request) => request,
            Err(error) => return Response::Error(error),
        };
        let mut guard = self.engine.lock().unwrap_or_else(PoisonError::into_inner);
        if let Err(error) = guard.report(&self.data_center) {
            return Response::Error(error);
        }
        let engine = &mut guard.session;
        let outcome = catch_unwind(AssertUnwindSafe(|| {
            if let Some(ks) = keyspace.as_deref() {
                engine.use_keyspace(ks);
            }
            let result = match request {
                Request::StartUp(_) | Request::Register { .. } | Request::AuthResponse => {
                    return Response::Ready;
                }
                Request::Options => return Response::options(),
                Request::Query(query) => engine.process(query),
                Request::Prepare(query) => {
                    let literals = literal_positions(&query);
                    let id = statement_id(keyspace.as_deref(), &query);
                    engine.prepare_with_id(query, id).map(|mut result| {
                        if let QueryResult::Prepared(prepared) = &mut result {
                            drop_literal_markers(&mut prepared.prepared_metadata, &literals);
                        }
                        result
                    })
                }
                Request::Execute(execute) => engine.execute(execute),
                Request::Batch(batch) => engine.process_batch(batch),
            };
            match result {
                Ok(result) => {
                    if let QueryResult::SetKeyspace(set) = &result {
                        *keyspace = Some(set.keyspace_name.clone());
                    }
                    Response::Result(result)
                }
                Err(error) => Response::Error(error),
            }
        }));
        outcome.unwrap_or_else(|_| {
            Response::Error(CqlError::new(DbError::ServerError, "the CQL stand-in cannot run this statement"))
        })
    }
}

/// Whether a QUERY frame's body is `ALTER TABLE ... WITH` (table options: TTL, compaction,
/// tombstone GC), which kassandra cannot parse and the stand-in accepts and ignores, as it
/// ignores TTL.
fn alters_table_options(body: &[u8]) -> bool {
    let Some(length) = body.get(..4).map(|b| i32::from_be_bytes([b[0], b[1], b[2], b[3]])) else {
        return false;
    };
    let Some(text) = usize::try_from(length).ok().and_then(|n| body.get(4..4 + n)) else { return false };
    let text = String::from_utf8_lossy(text).to_ascii_uppercase();
    text.trim_start().starts_with("ALTER TABLE") && text.contains(" WITH ")
}

/// A prepared statement's id, derived from its text and keyspace as real servers derive it
/// (kassandra's own ids are random): a driver that reconnects after a restart re-prepares its
/// statements and refuses ids that changed.
fn statement_id(keyspace: Option<&str>, query: &QueryString) -> u128 {
    let mut hash: u128 = 0x6c62_272e_07bb_0142_62b8_2175_6295_c58d;
    for byte in keyspace.unwrap_or_default().bytes().chain([0]).chain(query.to_string().into_bytes()) {
        hash ^= u128::from(byte);
        hash = hash.wrapping_mul(0x0000_0000_0100_0000_0000_0000_0000_013b);
    }
    hash
}

/// For each value position of a statement (WHERE relations, INSERT values), whether it is a
/// literal rather than a bind marker.
fn literal_positions(query: &QueryString) -> Vec<bool> {
    let is_literal = |v: &QueryValue| matches!(v, QueryValue::Literal(_));
    match query {
        QueryString::Select(select) => select.r#where.statements.iter().map(|(_, v)| is_literal(v)).collect(),
        QueryString::Delete(delete) => delete.r#where.statements.iter().map(|(_, v)| is_literal(v)).collect(),
        QueryString::Insert(insert) => insert.values.iter().map(is_literal).collect(),
        _ => Vec::new(),
    }
}

/// kassandra lists a literal (`WHERE key = 'local'`) among a prepared statement's bind markers,
/// so drivers refuse to bind it (the `scylla` driver's own topology query among them): keep
/// only the real markers, and renumber the partition-key indexes to match.
fn drop_literal_markers(metadata: &mut PreparedMetadata, literals: &[bool]) {
    if metadata.col_specs.len() != literals.len() || !literals.contains(&true) {
        return;
    }
    let mut kept = literals.iter();
    metadata.col_specs.retain(|_| kept.next().is_some_and(|literal| !literal));
    let marker_index = |position: usize| literals[..position].iter().filter(|&&l| !l).count();
    for index in &mut metadata.pk_indexes {
        index.index = u16::try_from(marker_index(usize::from(index.index))).unwrap_or(index.index);
    }
}

/// A stand-in listening on a free loopback port on a thread of its own (so it outlives any one
/// test runtime); it stops when the process exits.
pub fn spawn_local(data_center: &str) -> Result<SocketAddr, String> {
    spawn_local_with(data_center, None)
}

/// [`spawn_local`] answering over TLS only.
pub fn spawn_local_tls(data_center: &str, tls: Arc<ServerConfig>) -> Result<SocketAddr, String> {
    spawn_local_with(data_center, Some(tls))
}

fn spawn_local_with(data_center: &str, tls: Option<Arc<ServerConfig>>) -> Result<SocketAddr, String> {
    let node = StandIn::new(data_center)?;
    let std_listener = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    let addr = std_listener.local_addr().map_err(|e| e.to_string())?;
    std_listener.set_nonblocking(true).map_err(|e| e.to_string())?;
    std::thread::Builder::new()
        .name("cql-stand-in".into())
        .spawn(move || {
            let runtime =
                match tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build() {
                    Ok(runtime) => runtime,
                    Err(error) => return tracing::error!(%error, "CQL stand-in runtime"),
                };
            runtime.block_on(async move {
                let served = match TcpListener::from_std(std_listener) {
                    Ok(listener) => match tls {
                        None => node.serve(listener).await,
                        Some(tls) => node.serve_tls(listener, tls).await,
                    },
                    Err(error) => Err(error),
                };
                if let Err(error) = served {
                    tracing::error!(%error, "CQL stand-in stopped");
                }
            });
        })
        .map_err(|e| e.to_string())?;
    Ok(addr)
}

/// A TLS server configuration from PEM files: the node's certificate chain and key, and, when
/// given, the CA whose client certificates it requires (as a cluster with
/// `require_client_auth` does).
pub fn server_config(
    cert_file: &Path,
    key_file: &Path,
    client_ca: Option<&Path>,
) -> Result<Arc<ServerConfig>, String> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let chain = CertificateDer::pem_file_iter(cert_file)
        .and_then(Iterator::collect::<Result<Vec<_>, _>>)
        .map_err(|e| format!("{}: {e}", cert_file.display()))?;
    let key = PrivateKeyDer::from_pem_file(key_file).map_err(|e| format!("{}: {e}", key_file.display()))?;
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?;
    let builder = match client_ca {
        None => builder.with_no_client_auth(),
        Some(ca_file) => {
            let mut roots = rustls::RootCertStore::empty();
            for cert in
                CertificateDer::pem_file_iter(ca_file).map_err(|e| format!("{}: {e}", ca_file.display()))?
            {
                let cert = cert.map_err(|e| format!("{}: {e}", ca_file.display()))?;
                roots.add(cert).map_err(|e| format!("{}: {e}", ca_file.display()))?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .map_err(|e| format!("{}: {e}", ca_file.display()))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let config = builder.with_single_cert(chain, key).map_err(|e| format!("{}: {e}", cert_file.display()))?;
    Ok(Arc::new(config))
}

/// The CQL cluster a test talks to.
#[derive(Clone, Debug)]
pub struct TestCluster {
    /// `host:port` to connect to.
    pub contact_point: String,
    /// Its data center.
    pub data_center: String,
    /// Replication factor per data center for a test's keyspace.
    pub replication: Vec<(String, u32)>,
    /// Whether it is the stand-in (which never reports schema agreement).
    pub stand_in: bool,
}

impl TestCluster {
    /// The options of a store on this cluster in `keyspace`: its contact point, its data
    /// center as the local one, the test replication, and schema agreement awaited on a real
    /// cluster only (the stand-in never reports it).
    pub fn scylla_options(&self, keyspace: impl Into<String>) -> marquee_store_scylla::ScyllaOptions {
        marquee_store_scylla::ScyllaOptions {
            keyspace: keyspace.into(),
            contact_points: vec![self.contact_point.clone()],
            replication: self.replication.iter().cloned().collect(),
            local_dc: self.data_center.clone(),
            await_schema_agreement: !self.stand_in,
            ..marquee_store_scylla::ScyllaOptions::default()
        }
    }
}

/// A test's keyspace on a real cluster, dropped when the guard is (passing or panicking).
///
/// Every schema change costs a cluster more as its schema grows (Cassandra digests the
/// whole schema on each one; measured on the CI cluster: a migration took 5 s on a fresh
/// cluster and 23 s once 64 test keyspaces were left on it), so a suite that leaves its
/// keyspaces behind slows every test after it. On the stand-in, whose keyspaces die with the
/// process, it does nothing.
#[must_use = "the keyspace is dropped when the guard is"]
pub struct KeyspaceGuard {
    /// `(contact point, keyspace)` on a real cluster.
    target: Option<(String, String)>,
}

impl KeyspaceGuard {
    /// Drops `options.keyspace` when dropped, if `options` name a real cluster.
    pub fn new(options: &marquee_store_scylla::ScyllaOptions) -> Self {
        let real = !test_cluster().stand_in;
        let target =
            options.contact_points.first().filter(|_| real).map(|cp| (cp.clone(), options.keyspace.clone()));
        Self { target }
    }
}

impl Drop for KeyspaceGuard {
    fn drop(&mut self) {
        let Some((contact_point, keyspace)) = self.target.take() else { return };
        // On a thread of its own: the guard may be dropped inside or outside a runtime.
        let dropped = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| e.to_string())?;
            runtime.block_on(async {
                let session = scylla::client::session_builder::SessionBuilder::new()
                    .known_node(&contact_point)
                    // Nothing waits on the keyspace being gone everywhere.
                    .auto_await_schema_agreement(false)
                    .build()
                    .await
                    .map_err(|e| e.to_string())?;
                session
                    .query_unpaged(format!("DROP KEYSPACE IF EXISTS {keyspace}"), ())
                    .await
                    .map(drop)
                    .map_err(|e| format!("dropping keyspace {keyspace}: {e}"))
            })
        })
        .join();
        match dropped {
            Ok(Ok(())) => {}
            Ok(Err(error)) => eprintln!("test keyspace left on the cluster: {error}"),
            Err(_) => eprintln!("test keyspace left on the cluster: the dropping thread panicked"),
        }
    }
}

/// A keyspace every test process of one nextest run shares, migrated and seeded once by the
/// first test that asks for it: for tests that only read a catalog, which would otherwise each
/// pay a migration and a seed (about 18 s on the CI's two-data-center cluster) for the same
/// rows.
///
/// `None` where nothing can be shared: on the stand-in (its keyspaces live in one process),
/// outside `cargo nextest` (no run id names the run), or where its marks cannot be kept (the
/// caller then seeds a keyspace of its own). The first caller runs `seed` with the keyspace's
/// name under a file lock the others wait on; a caller whose seed panicked leaves it unmarked,
/// so the next one seeds again (migration and seeding are idempotent: an unfinished load is
/// resumed).
///
/// Nothing drops a shared keyspace at the end of its run (no test knows it is the last):
/// before seeding, each is marked with its cluster and its run's nextest process, and a later
/// run that seeds one on the same cluster drops those whose nextest process is gone (a run
/// still going keeps its own, however long it takes). `cargo xtask cassandra down` removes
/// the whole cluster.
pub fn shared_keyspace(kind: &str, seed: impl FnOnce(&str)) -> Option<String> {
    use std::os::unix::fs::MetadataExt as _;
    let cluster = test_cluster();
    if cluster.stand_in {
        return None;
    }
    let run: String =
        std::env::var("NEXTEST_RUN_ID").ok()?.chars().filter(char::is_ascii_alphanumeric).take(16).collect();
    let keyspace = format!("{kind}_run_{run}").to_ascii_lowercase();
    // One directory per user: another user's runs are not this one's to drop.
    let user = std::fs::metadata("/proc/self").ok()?.uid();
    let marks = std::env::temp_dir().join(format!("marquee-shared-keyspaces-{user}"));
    std::fs::create_dir_all(&marks).ok()?;
    let lock = std::fs::File::create(marks.join(format!("{keyspace}.lock"))).ok()?;
    lock.lock().ok()?;
    let seeded = marks.join(format!("{keyspace}.seeded"));
    if !seeded.exists() {
        drop_finished_runs(&marks, &cluster.contact_point, kind);
        let mark = format!("{}\n{}\n", cluster.contact_point, std::os::unix::process::parent_id());
        let pending = marks.join(format!("{keyspace}.run.new"));
        std::fs::write(&pending, mark).ok()?;
        std::fs::rename(&pending, marks.join(format!("{keyspace}.run"))).ok()?;
        seed(&keyspace);
        std::fs::write(&seeded, b"").ok()?;
    }
    Some(keyspace)
}

/// Drops the shared keyspaces of `kind` on the cluster at `contact_point` whose run is over
/// (the nextest process their mark names is gone), with their marks and locks (no process of
/// a finished run holds them).
fn drop_finished_runs(marks: &std::path::Path, contact_point: &str, kind: &str) {
    let Ok(entries) = std::fs::read_dir(marks) else { return };
    for entry in entries.flatten() {
        let path = entry.path();
        let Some(keyspace) = path.file_name().and_then(|n| n.to_str()).and_then(|n| n.strip_suffix(".run"))
        else {
            continue;
        };
        if !keyspace.starts_with(&format!("{kind}_run_")) {
            continue;
        }
        let Ok(mark) = std::fs::read_to_string(&path) else { continue };
        let mut lines = mark.lines();
        let (Some(cluster), Some(runner)) = (lines.next(), lines.next()) else { continue };
        let finished = !std::path::Path::new("/proc").join(runner).exists();
        if cluster == contact_point && finished {
            drop(KeyspaceGuard { target: Some((contact_point.to_owned(), keyspace.to_owned())) });
            for leftover in [
                path.clone(),
                marks.join(format!("{keyspace}.seeded")),
                marks.join(format!("{keyspace}.lock")),
            ] {
                let _ = std::fs::remove_file(leftover);
            }
        }
    }
}

/// Why a test that needs lightweight transactions cannot run on [`test_cluster`], if it
/// cannot: the stand-in runs none.
pub fn without_lwt() -> Option<&'static str> {
    test_cluster()
        .stand_in
        .then_some("the CQL stand-in runs no lightweight transactions; set SCYLLA_URI to a real cluster")
}

/// The cluster tests run against:
///
/// - `SCYLLA_URI` (`host:port`), with `SCYLLA_DC` naming its data center and optionally
///   `SCYLLA_REPLICATION` (`dc:rf,dc:rf`; default the one data center at 1): a real cluster,
///   ScyllaDB or Cassandra. `cargo xtask ci` sets these to the two-data-center Cassandra
///   cluster it starts (`marquee-cassandra-cluster`), so its tests replicate across both.
/// - Otherwise a stand-in started once per process: a fast loop for a developer without a
///   cluster running, which proves nothing about replication (see the crate docs).
pub fn test_cluster() -> TestCluster {
    static STAND_IN: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    match std::env::var("SCYLLA_URI") {
        Ok(uri) => {
            let data_center = std::env::var("SCYLLA_DC").unwrap_or_else(|_| DEFAULT_DATA_CENTER.into());
            let replication = std::env::var("SCYLLA_REPLICATION")
                .ok()
                .map(|text| parse_replication(&text))
                .unwrap_or_else(|| vec![(data_center.clone(), 1)]);
            TestCluster { contact_point: uri, data_center, replication, stand_in: false }
        }
        Err(_) => TestCluster {
            contact_point: STAND_IN
                .get_or_init(|| match spawn_local(DEFAULT_DATA_CENTER) {
                    Ok(addr) => addr.to_string(),
                    Err(error) => panic!("the CQL stand-in did not start: {error}"),
                })
                .clone(),
            data_center: DEFAULT_DATA_CENTER.into(),
            replication: vec![(DEFAULT_DATA_CENTER.into(), 1)],
            stand_in: true,
        },
    }
}

/// `dc:rf,dc:rf` (panics on anything else: a test setting, wrong is a bug).
fn parse_replication(text: &str) -> Vec<(String, u32)> {
    text.split(',')
        .map(|pair| {
            let (dc, rf) =
                pair.split_once(':').unwrap_or_else(|| panic!("SCYLLA_REPLICATION: `{pair}` is not dc:rf"));
            (
                dc.trim().to_owned(),
                rf.trim().parse().unwrap_or_else(|_| panic!("SCYLLA_REPLICATION: `{pair}`")),
            )
        })
        .collect()
}
