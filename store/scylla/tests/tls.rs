//! TLS to the cluster over real handshakes: the CQL stand-in serves CQL over TLS with
//! certificates made here by a throwaway CA, and the store must verify the node (its address,
//! or `tls_server_name`), present a client certificate when the node requires one, and refuse
//! every node it cannot verify with an error that says why.

use std::path::{Path, PathBuf};

use marquee_cql_standin::{DEFAULT_DATA_CENTER, server_config, spawn_local_tls};
use marquee_store::bulk::BulkLoad;
use marquee_store::bulk::seed::{SeedOptions, seed};
use marquee_store::{CatalogReads, Lifecycle, MovieId, StoreError};
use marquee_store_scylla::{ScyllaBulk, ScyllaOptions, ScyllaStore, migrate};
use rcgen::{
    BasicConstraints, Certificate, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
};

/// A CA that signs node and client certificates, written to PEM files in a temporary folder.
struct Pki {
    dir: tempfile::TempDir,
    issuer: Issuer<'static, KeyPair>,
}

impl Pki {
    fn new(name: &str) -> Pki {
        let dir = tempfile::tempdir().expect("temp dir");
        let key = KeyPair::generate().expect("CA key");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let cert = params.self_signed(&key).expect("CA certificate");
        std::fs::write(dir.path().join("ca.pem"), cert.pem()).expect("write CA");
        Pki { dir, issuer: Issuer::new(params, key) }
    }

    fn ca(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    /// A certificate for `names` (IP addresses or DNS names) and its key, as PEM files.
    fn issue(&self, file: &str, names: &[&str], usage: ExtendedKeyUsagePurpose) -> (PathBuf, PathBuf) {
        let key = KeyPair::generate().expect("key");
        let mut params = CertificateParams::new(names.iter().map(|n| (*n).to_owned()).collect::<Vec<_>>())
            .expect("params");
        params.distinguished_name.push(DnType::CommonName, file);
        params.extended_key_usages = vec![usage];
        let cert: Certificate = params.signed_by(&key, &self.issuer).expect("sign");
        let (cert_file, key_file) =
            (self.dir.path().join(format!("{file}.pem")), self.dir.path().join(format!("{file}.key")));
        std::fs::write(&cert_file, cert.pem()).expect("write certificate");
        std::fs::write(&key_file, key.serialize_pem()).expect("write key");
        (cert_file, key_file)
    }
}

/// A stand-in answering over TLS only with `cert`/`key`, requiring client certificates
/// signed by `client_ca` when given.
fn tls_node(cert: &Path, key: &Path, client_ca: Option<&Path>) -> String {
    let config = server_config(cert, key, client_ca).expect("server TLS config");
    spawn_local_tls(DEFAULT_DATA_CENTER, config).expect("stand-in").to_string()
}

fn options(contact_point: String) -> ScyllaOptions {
    ScyllaOptions {
        contact_points: vec![contact_point],
        replication: [(DEFAULT_DATA_CENTER.to_owned(), 1)].into(),
        await_schema_agreement: false,
        request_timeout_ms: 2_000,
        ..ScyllaOptions::default()
    }
}

/// The whole way a region starts over TLS: migrate, load a small catalog, open, read.
async fn serves(options: &ScyllaOptions) {
    migrate(options).await.expect("migrate over TLS");
    let bulk = ScyllaBulk::new(options.clone(), tokio::runtime::Handle::current());
    let catalog = SeedOptions { movies: 20, people: Some(10), seed: 3 };
    tokio::task::spawn_blocking(move || {
        seed(&catalog, bulk.sink("tls").expect("sink"), &mut |_| {}).expect("seed over TLS")
    })
    .await
    .expect("seeding");
    let store = ScyllaStore::open(options).await.expect("open over TLS");
    store.ping().await.expect("ping over TLS");
    let movie = store.movies(&[MovieId(1)]).await.expect("read over TLS");
    assert!(movie[0].is_some(), "movie 1 was loaded");
}

/// The first thing a region does with the cluster: connect and migrate.
async fn connects(options: &ScyllaOptions) -> Result<(), StoreError> {
    migrate(options).await.map(drop)
}

fn refused(outcome: Result<(), StoreError>, why: &str) -> String {
    let error = outcome.expect_err(why).to_string();
    println!("{why}: {error}");
    error
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_store_verifies_the_nodes_certificate_against_its_ca() {
    let pki = Pki::new("Marquee test CA");
    let (cert, key) = pki.issue("node", &["127.0.0.1"], ExtendedKeyUsagePurpose::ServerAuth);
    let node = tls_node(&cert, &key, None);

    let verified = ScyllaOptions { tls_ca_file: Some(pki.ca()), ..options(node.clone()) };
    serves(&verified).await;
    // The CA as text (a secret handed over in the environment) verifies the same way.
    let ca_text = std::fs::read_to_string(pki.ca()).expect("CA");
    serves(&ScyllaOptions { tls_ca: Some(ca_text), ..options(node.clone()) }).await;

    let plain = refused(connects(&options(node.clone())).await, "plain CQL to a TLS node");
    assert!(plain.contains(&format!("connecting to {node}")) && plain.contains("TLS off"), "{plain}");

    let stranger = Pki::new("Someone else's CA");
    let other_ca = ScyllaOptions { tls_ca_file: Some(stranger.ca()), ..options(node) };
    let error = refused(connects(&other_ca).await, "a node signed by another CA");
    assert!(error.to_lowercase().contains("certificate"), "{error}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_for_a_name_is_checked_against_tls_server_name() {
    let pki = Pki::new("Marquee test CA");
    let (cert, key) = pki.issue("named", &["cql.marquee.test"], ExtendedKeyUsagePurpose::ServerAuth);
    let node = tls_node(&cert, &key, None);
    let with_ca = ScyllaOptions { tls_ca_file: Some(pki.ca()), ..options(node) };

    let error = refused(connects(&with_ca).await, "a certificate without the node's address");
    assert!(error.to_lowercase().contains("certificate"), "{error}");

    let named = ScyllaOptions { tls_server_name: Some("cql.marquee.test".into()), ..with_ca.clone() };
    serves(&named).await;

    let wrong = ScyllaOptions { tls_server_name: Some("other.marquee.test".into()), ..with_ca };
    let error = refused(connects(&wrong).await, "a certificate for another name");
    assert!(error.to_lowercase().contains("certificate"), "{error}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_requiring_client_certificates_gets_one() {
    let pki = Pki::new("Marquee test CA");
    let (cert, key) = pki.issue("node", &["127.0.0.1"], ExtendedKeyUsagePurpose::ServerAuth);
    let (client_cert, client_key) =
        pki.issue("gateway", &["gateway.marquee.test"], ExtendedKeyUsagePurpose::ClientAuth);
    let node = tls_node(&cert, &key, Some(&pki.ca()));
    let with_ca = ScyllaOptions { tls_ca_file: Some(pki.ca()), ..options(node) };

    refused(connects(&with_ca).await, "no client certificate");
    let with_client =
        ScyllaOptions { tls_cert_file: Some(client_cert), tls_key_file: Some(client_key), ..with_ca };
    serves(&with_client).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inconsistent_or_unreadable_tls_settings_are_refused_before_connecting() {
    // Nothing listens here: each of these must fail on the settings alone.
    let base = options("127.0.0.1:9".into());
    let pki = Pki::new("Marquee test CA");
    let (cert, key) = pki.issue("gateway", &["gateway.marquee.test"], ExtendedKeyUsagePurpose::ClientAuth);

    let cases = [
        (
            ScyllaOptions { tls_ca_file: Some(pki.ca()), tls_cert_file: Some(cert.clone()), ..base.clone() },
            "go together",
        ),
        (
            ScyllaOptions { tls_key_file: Some(key), tls_cert_file: Some(cert), ..base.clone() },
            "need store.tls_ca_file or tls_ca",
        ),
        (
            ScyllaOptions { tls_server_name: Some("cql.marquee.test".into()), ..base.clone() },
            "need store.tls_ca_file",
        ),
        (
            ScyllaOptions { tls_ca_file: Some(pki.dir.path().join("missing.pem")), ..base.clone() },
            "missing.pem",
        ),
        (ScyllaOptions { tls_ca_file: Some(pki.ca()), tls_ca: Some("x".into()), ..base.clone() }, "not both"),
        (ScyllaOptions { tls_ca: Some("not a certificate".into()), ..base.clone() }, "store.tls_ca"),
        (
            ScyllaOptions { contact_points: vec!["node-0.example:9142".into()], ..base.clone() },
            "node-0.example:9142, ScyllaDB's TLS port (9142), and TLS is off",
        ),
        (ScyllaOptions { password: Some("secret".into()), ..base.clone() }, "without store.username"),
        (ScyllaOptions { username: Some("marquee".into()), ..base.clone() }, "without store.password"),
        (
            ScyllaOptions {
                tls_ca_file: Some(pki.ca()),
                tls_server_name: Some("not a name!".into()),
                ..base
            },
            "tls_server_name",
        ),
    ];
    for (settings, says) in cases {
        let Err(error) = ScyllaStore::open(&settings).await else { panic!("{says}: opened") };
        let error = error.to_string();
        assert!(error.contains("invalid [store] settings") && error.contains(says), "{says}: {error}");
    }
}
