//! The persisted-query stage: turns what a client sent (full text, an Apollo APQ hash, or a
//! manifest id) into the document to execute, before anything is parsed.
//!
//! - Automatic persisted queries (Apollo's protocol): `extensions.persistedQuery.sha256Hash`
//!   alone runs a document registered earlier; with the text as well, the text must hash to it
//!   and is registered. A miss is `PERSISTED_QUERY_NOT_FOUND`, which stock Apollo clients
//!   answer by sending the text. Registered documents live in a bounded in-process cache and,
//!   with `[redis]`, in the region's Redis too (`persisted_queries.apq_shared_ttl_secs`), so a
//!   hash registered through one gateway is found by every gateway of the region: behind a load
//!   balancer, a client's hash-only GET finds the text its POST registered elsewhere. A text
//!   read back from Redis is hashed again before it runs.
//! - The partner manifest (`apollo-persisted-query-manifest` format) lists operations by id;
//!   `?id=` / `?documentId=`, or an id in `extensions.persistedQuery.sha256Hash` (what Apollo's
//!   persisted-queries link sends for a manifest with custom ids), runs them. It is re-read when the
//!   file changes, so partners' operations are published without a restart.
//! - Safelist mode runs manifest operations only (`PERSISTED_QUERY_NOT_IN_LIST` otherwise),
//!   so a public endpoint executes nothing a partner did not register. Tooling (codegen,
//!   schema checks) still needs introspection: a request carrying the configured introspection
//!   token may run a document that selects nothing but `__schema`, `__type` and `__typename`.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use marquee_schema::Analyzer;
use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::cache::{SharedTier, Sizing, Tiered, Tiers};
use crate::config::PersistedQueryConfig;
use crate::regional::Regional;

/// The `cache` label of APQ registrations.
const APQ_LABEL: &str = "apq";

/// Bumped when the shape of a shared registration changes.
const APQ_VERSION: &str = "q2";

/// Why the persisted-query stage refused a request.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum PersistedQueryError {
    /// The hash or id is not known here; send the full text (APQ) or check the id.
    #[error("persisted query not found; send the query text with its hash")]
    NotFound,
    /// Safelist mode: the document is not in the manifest.
    #[error("only operations from the persisted-query manifest run on this endpoint")]
    NotInList,
    /// The text does not hash to the hash sent with it.
    #[error("the query text does not hash to the sha256Hash sent with it")]
    HashMismatch,
    /// Malformed extension, unsupported version, or no document at all.
    #[error("{0}")]
    BadRequest(String),
}

/// What a client sent to name its document.
#[derive(Debug, Default)]
pub struct DocumentRef<'a> {
    /// The query text, if sent.
    pub query: Option<&'a str>,
    /// `extensions.persistedQuery`, if sent.
    pub persisted: Option<&'a serde_json::Value>,
    /// `id` or `documentId`, if sent.
    pub id: Option<&'a str>,
    /// The introspection token, if sent.
    pub introspection_token: Option<&'a str>,
}

/// The document to execute.
#[derive(Clone, Debug)]
pub struct Document {
    /// Its text.
    pub query: Arc<str>,
    /// SHA-256 of the text, lowercase hex (the response-cache key).
    pub hash: Arc<str>,
}

/// One manifest operation.
#[derive(Clone, Debug, Deserialize)]
struct ManifestOperation {
    id: String,
    body: String,
    #[allow(dead_code)] // documented in the format; the executed document decides the type
    #[serde(default)]
    name: Option<String>,
    #[allow(dead_code)]
    #[serde(default, rename = "type")]
    kind: Option<String>,
}

/// The manifest file.
#[derive(Debug, Deserialize)]
struct ManifestFile {
    format: String,
    version: u32,
    operations: Vec<ManifestOperation>,
}

/// Parsed manifest: operations by id and by the hash of their text.
#[derive(Debug, Default)]
struct Manifest {
    by_id: HashMap<String, Document>,
    by_hash: HashMap<String, Document>,
    /// Fingerprint of the file bytes it was read from.
    source: [u8; 32],
}

impl Manifest {
    fn parse(bytes: &[u8]) -> Result<Manifest, String> {
        let file: ManifestFile = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
        if file.format != "apollo-persisted-query-manifest" || file.version != 1 {
            return Err(format!(
                "expected format `apollo-persisted-query-manifest` version 1, got `{}` version {}",
                file.format, file.version
            ));
        }
        let mut manifest = Manifest { source: Sha256::digest(bytes).into(), ..Manifest::default() };
        for op in file.operations {
            let document = Document { hash: sha256_hex(&op.body).into(), query: op.body.into() };
            manifest.by_hash.insert(document.hash.to_string(), document.clone());
            if manifest.by_id.insert(op.id.clone(), document).is_some() {
                return Err(format!("operation id `{}` appears twice", op.id));
            }
        }
        Ok(manifest)
    }

    fn get(&self, key: &str) -> Option<&Document> {
        self.by_id.get(key).or_else(|| self.by_hash.get(key))
    }
}

/// SHA-256 of `text`, lowercase hex.
pub fn sha256_hex(text: &str) -> String {
    hex::encode(Sha256::digest(text.as_bytes()))
}

/// Persisted-query lookup for one gateway.
pub struct PersistedQueries {
    manifest: RwLock<Arc<Manifest>>,
    manifest_file: Option<PathBuf>,
    /// APQ registrations, text by hash: in this gateway and, with `[redis]`, the region's Redis.
    apq: Option<Tiered<Arc<str>, Arc<str>>>,
    safelist: bool,
    reload_every: Duration,
    /// Fingerprint of the last file refused, so a bad file is reported once, not every tick.
    rejected: Mutex<Option<[u8; 32]>>,
    /// SHA-256 of the introspection token (the token itself is never kept).
    introspection_token: Option<[u8; 32]>,
    /// The schema's parse cache.
    documents: Arc<Analyzer>,
}

/// What a manifest check found.
#[derive(Debug, PartialEq, Eq)]
pub enum Reload {
    /// No manifest file is configured.
    NoManifest,
    /// The file is the one in force.
    Unchanged,
    /// A new manifest with this many operations is in force.
    Loaded(usize),
    /// The file is unreadable or invalid (logged); the previous manifest stays.
    Rejected,
    /// The file is the same bad one as at the last check (not logged again).
    StillRejected,
}

/// Why the manifest could not be loaded at startup.
#[derive(Debug, thiserror::Error)]
#[error("persisted-query manifest {path}: {reason}")]
pub struct ManifestError {
    path: String,
    reason: String,
}

impl PersistedQueries {
    /// Loads the manifest (if configured); an unreadable or invalid manifest stops startup.
    /// `requests` counts APQ lookups (`cache_requests_total{cache="apq"}`); `documents` is the
    /// schema's parse cache.
    pub fn new(
        config: &PersistedQueryConfig,
        regional: Option<Arc<Regional>>,
        requests: prometheus::IntCounterVec,
        documents: Arc<Analyzer>,
    ) -> Result<PersistedQueries, ManifestError> {
        let manifest = match &config.manifest_file {
            None => Manifest::default(),
            Some(path) => {
                let err = |reason: String| ManifestError { path: path.display().to_string(), reason };
                let bytes = std::fs::read(path).map_err(|e| err(e.to_string()))?;
                Manifest::parse(&bytes).map_err(err)?
            }
        };
        if config.safelist && config.manifest_file.is_none() {
            return Err(ManifestError {
                path: "(none)".into(),
                reason: "persisted_queries.safelist needs persisted_queries.manifest_file".into(),
            });
        }
        let introspection_token = match &config.introspection_token_file {
            None => None,
            Some(path) => {
                let err = |reason: String| ManifestError { path: path.display().to_string(), reason };
                let token = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
                let token = token.trim();
                if token.len() < 16 {
                    return Err(err("the introspection token must be at least 16 characters".into()));
                }
                Some(Sha256::digest(token.as_bytes()).into())
            }
        };
        let apq = (config.apq && !config.safelist).then(|| {
            let sizing = Sizing {
                name: APQ_LABEL,
                max_bytes: config.apq_cache_mib.bytes(),
                ttl: config.apq_shared_ttl_secs.get().max(Duration::from_secs(1)),
                requests,
            };
            let shared = regional.map(|regional| SharedTier::new(regional, APQ_VERSION, "apq"));
            // A text read back from Redis is run only if it hashes to its key.
            Tiered::new_checked(sizing, shared, |hash: &Arc<str>, text: &Arc<str>| sha256_hex(text) == **hash)
        });
        Ok(PersistedQueries {
            manifest: RwLock::new(Arc::new(manifest)),
            manifest_file: config.manifest_file.clone(),
            apq,
            safelist: config.safelist,
            reload_every: config.reload_ms.get().max(Duration::from_millis(10)),
            rejected: Mutex::new(None),
            introspection_token,
            documents,
        })
    }

    fn manifest(&self) -> Arc<Manifest> {
        match self.manifest.read() {
            Ok(m) => Arc::clone(&m),
            Err(poisoned) => Arc::clone(&poisoned.into_inner()),
        }
    }

    /// Operations in the manifest.
    pub fn manifest_len(&self) -> usize {
        self.manifest().by_id.len()
    }

    /// Re-reads the manifest if the file changed; an invalid new file keeps the old manifest
    /// and is logged once (until the file changes again).
    pub fn reload(&self) -> Reload {
        let Some(path) = &self.manifest_file else { return Reload::NoManifest };
        let (fingerprint, parsed) = match std::fs::read(path) {
            Ok(bytes) => {
                let fingerprint = <[u8; 32]>::from(Sha256::digest(&bytes));
                if fingerprint == self.manifest().source {
                    self.set_rejected(None);
                    return Reload::Unchanged;
                }
                (fingerprint, Manifest::parse(&bytes))
            }
            // An unreadable file has no content to fingerprint: its error text stands in.
            Err(e) => (Sha256::digest(e.to_string().as_bytes()).into(), Err(e.to_string())),
        };
        match parsed {
            Ok(manifest) => {
                let operations = manifest.by_id.len();
                tracing::info!(operations, "reloaded the persisted-query manifest");
                match self.manifest.write() {
                    Ok(mut m) => *m = Arc::new(manifest),
                    Err(poisoned) => *poisoned.into_inner() = Arc::new(manifest),
                }
                self.set_rejected(None);
                Reload::Loaded(operations)
            }
            Err(_) if self.set_rejected(Some(fingerprint)) == Some(fingerprint) => Reload::StillRejected,
            Err(e) => {
                tracing::error!(path = %path.display(), error = %e, "keeping the previous persisted-query manifest");
                Reload::Rejected
            }
        }
    }

    /// Records the fingerprint of the refused file (or none); returns the previous one.
    fn set_rejected(&self, fingerprint: Option<[u8; 32]>) -> Option<[u8; 32]> {
        match self.rejected.lock() {
            Ok(mut r) => std::mem::replace(&mut *r, fingerprint),
            Err(poisoned) => std::mem::replace(&mut *poisoned.into_inner(), fingerprint),
        }
    }

    /// Starts watching the manifest file (no-op without one); stops with the runtime.
    pub fn spawn_reload(self: &Arc<Self>) {
        if self.manifest_file.is_none() {
            return;
        }
        let this = Arc::clone(self);
        tokio::spawn(async move {
            let mut ticker = tokio::time::interval(this.reload_every);
            loop {
                ticker.tick().await;
                let this = Arc::clone(&this);
                if tokio::task::spawn_blocking(move || this.reload()).await.is_err() {
                    tracing::error!("manifest reload task failed");
                }
            }
        });
    }

    /// The document `request` names: from the manifest, or from the APQ registrations (this
    /// gateway's and the region's), registering new ones in both before answering, so the
    /// client's next hash-only request finds it at any gateway.
    pub async fn resolve(&self, request: &DocumentRef<'_>) -> Result<Document, PersistedQueryError> {
        match self.lookup(request).await {
            Err(PersistedQueryError::NotInList) => match request.query {
                Some(query) if self.tooling(request) && self.introspection_only(query) => {
                    Ok(Document { hash: sha256_hex(query).into(), query: query.into() })
                }
                _ => Err(PersistedQueryError::NotInList),
            },
            other => other,
        }
    }

    /// Whether every operation of `query` is a query selecting only introspection fields
    /// (parsed through the schema's parse cache, so it is not parsed again to run).
    /// Unparseable text is not.
    fn introspection_only(&self, query: &str) -> bool {
        self.documents.parse(query).is_ok_and(|parsed| parsed.introspection_only())
    }

    /// Whether `request` carries the introspection token.
    fn tooling(&self, request: &DocumentRef<'_>) -> bool {
        match (self.introspection_token, request.introspection_token) {
            (Some(expected), Some(sent)) => {
                <[u8; 32]>::from(Sha256::digest(sent.trim().as_bytes())) == expected
            }
            _ => false,
        }
    }

    async fn lookup(&self, request: &DocumentRef<'_>) -> Result<Document, PersistedQueryError> {
        let manifest = self.manifest();
        if let Some(id) = request.id {
            let document = manifest.by_id.get(id).ok_or(PersistedQueryError::NotFound)?;
            if request.query.is_some_and(|q| *q != *document.query) {
                return Err(PersistedQueryError::BadRequest(
                    "send either a manifest id or a query, not both".into(),
                ));
            }
            return Ok(document.clone());
        }
        let key = request.persisted.map(parse_extension).transpose()?;
        let query = request.query.filter(|q| !q.trim().is_empty());
        // A key that is not a SHA-256 is a manifest id (Apollo's link sends custom manifest ids
        // in the hash field): it names a manifest operation or nothing, and never registers.
        let hash = match key {
            Some(key) if !is_sha256(key) => match (manifest.by_id.get(key), query) {
                (Some(document), None) => return Ok(document.clone()),
                (Some(document), Some(query)) if *document.query == *query => return Ok(document.clone()),
                (Some(_), Some(_)) => return Err(PersistedQueryError::HashMismatch),
                (None, None) => return Err(PersistedQueryError::NotFound),
                // An unknown id with its text (the link's retry after NOT_FOUND): the text runs
                // as an ordinary query.
                (None, Some(_)) => None,
            },
            key => key,
        };
        match (query, hash) {
            (Some(query), Some(hash)) => {
                let actual = sha256_hex(query);
                if actual != hash {
                    return Err(PersistedQueryError::HashMismatch);
                }
                if let Some(document) = manifest.by_hash.get(&actual) {
                    return Ok(document.clone());
                }
                if self.safelist {
                    return Err(PersistedQueryError::NotInList);
                }
                let query: Arc<str> = query.into();
                let hash: Arc<str> = actual.into();
                if let Some(apq) = self.apq.as_ref().filter(|apq| !apq.holds(&*hash)) {
                    apq.put(hash.clone(), query.clone(), apq.ttl()).await;
                }
                Ok(Document { query, hash })
            }
            (None, Some(hash)) => {
                if let Some(document) = manifest.get(hash) {
                    return Ok(document.clone());
                }
                if self.safelist {
                    return Err(PersistedQueryError::NotInList);
                }
                let apq = self.apq.as_ref().ok_or(PersistedQueryError::NotFound)?;
                let hash: Arc<str> = hash.into();
                let query = apq.lookup(std::slice::from_ref(&hash), Tiers::ANY).await.pop().flatten();
                Ok(Document { query: query.ok_or(PersistedQueryError::NotFound)?, hash })
            }
            (Some(query), None) => {
                let hash = sha256_hex(query);
                if let Some(document) = manifest.by_hash.get(&hash) {
                    return Ok(document.clone());
                }
                if self.safelist {
                    return Err(PersistedQueryError::NotInList);
                }
                Ok(Document { query: query.into(), hash: hash.into() })
            }
            (None, None) => Err(PersistedQueryError::BadRequest("the request has no `query`".into())),
        }
    }
}

/// Whether `key` is a SHA-256 in hex (the APQ form) rather than a manifest id.
fn is_sha256(key: &str) -> bool {
    key.len() == 64 && key.bytes().all(|b| b.is_ascii_hexdigit())
}

/// The `sha256Hash` of a `persistedQuery` extension (version 1): a SHA-256 in hex, or a
/// manifest id.
fn parse_extension(value: &serde_json::Value) -> Result<&str, PersistedQueryError> {
    let bad = |m: &str| PersistedQueryError::BadRequest(m.to_owned());
    if value.get("version").and_then(serde_json::Value::as_u64) != Some(1) {
        return Err(bad("extensions.persistedQuery.version must be 1"));
    }
    let hash = value
        .get("sha256Hash")
        .and_then(serde_json::Value::as_str)
        .ok_or_else(|| bad("extensions.persistedQuery.sha256Hash is missing"))?;
    if hash.is_empty() {
        return Err(bad("extensions.persistedQuery.sha256Hash is empty"));
    }
    Ok(hash)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Mib, Millis, Secs};
    use serde_json::json;

    fn documents() -> Arc<Analyzer> {
        Arc::new(Analyzer::new(marquee_schema::QueryLimits::default()))
    }

    fn requests() -> prometheus::IntCounterVec {
        prometheus::IntCounterVec::new(prometheus::Opts::new("t", "t"), &["cache", "tier", "result"])
            .expect("counter")
    }

    fn config(manifest: Option<PathBuf>, safelist: bool) -> PersistedQueryConfig {
        PersistedQueryConfig {
            manifest_file: manifest,
            safelist,
            apq: true,
            apq_cache_mib: Mib(1),
            apq_shared_ttl_secs: Secs(60),
            reload_ms: Millis(1000),
            introspection_token_file: None,
        }
    }

    #[tokio::test]
    async fn the_introspection_token_lets_only_introspection_through_the_safelist() {
        let dir = tempfile::tempdir().expect("tempdir");
        let manifest = dir.path().join("manifest.json");
        std::fs::write(
            &manifest,
            r#"{"format":"apollo-persisted-query-manifest","version":1,"operations":[{"id":"g","body":"{ genres { name } }"}]}"#,
        )
        .expect("write");
        let token_file = dir.path().join("token");
        std::fs::write(&token_file, "tooling-token-0123456789\n").expect("write");
        let mut settings = config(Some(manifest), true);
        settings.introspection_token_file = Some(token_file);
        let pq = PersistedQueries::new(&settings, None, requests(), documents()).expect("loads");
        let ask = async |query: &'static str, token: Option<&'static str>| {
            pq.resolve(&DocumentRef {
                query: Some(query),
                introspection_token: token,
                ..DocumentRef::default()
            })
            .await
        };
        let introspection = "query IntrospectionQuery { __schema { types { name } } ...T } fragment T on Query { __typename }";
        assert!(ask(introspection, Some("tooling-token-0123456789")).await.is_ok());
        assert_eq!(ask(introspection, None).await.expect_err("no token"), PersistedQueryError::NotInList);
        assert_eq!(
            ask(introspection, Some("wrong-token-0123456789")).await.expect_err("bad"),
            PersistedQueryError::NotInList
        );
        for other in [
            "{ __schema { types { name } } movie(id: \"x\") { title } }",
            "{ genres { movieCount } }",
            "{ __type(name: \"Movie\") { name } ...F } fragment F on Query { genres { name } }",
            "mutation { __typename }",
            "{ nope",
        ] {
            assert_eq!(
                ask(other, Some("tooling-token-0123456789")).await.expect_err("not introspection only"),
                PersistedQueryError::NotInList,
                "{other}"
            );
        }
        assert!(ask("{ genres { name } }", None).await.is_ok(), "manifest operations still run");
    }

    #[tokio::test]
    async fn apq_registers_then_serves_by_hash() {
        let pq = PersistedQueries::new(&config(None, false), None, requests(), documents()).expect("pq");
        let query = "{ genres { name } }";
        let hash = sha256_hex(query);
        let ext = json!({ "version": 1, "sha256Hash": hash });
        let miss = DocumentRef { persisted: Some(&ext), ..DocumentRef::default() };
        assert_eq!(pq.resolve(&miss).await.expect_err("unknown"), PersistedQueryError::NotFound);
        let register = DocumentRef { query: Some(query), persisted: Some(&ext), ..DocumentRef::default() };
        assert_eq!(&*pq.resolve(&register).await.expect("registers").query, query);
        assert_eq!(&*pq.resolve(&miss).await.expect("now known").query, query);
        let wrong = DocumentRef { query: Some("{ x }"), persisted: Some(&ext), ..DocumentRef::default() };
        assert_eq!(pq.resolve(&wrong).await.expect_err("mismatch"), PersistedQueryError::HashMismatch);
        let v2 = json!({ "version": 2, "sha256Hash": hash });
        let v2 = DocumentRef { persisted: Some(&v2), ..DocumentRef::default() };
        assert!(matches!(pq.resolve(&v2).await, Err(PersistedQueryError::BadRequest(_))));
    }

    #[test]
    fn a_bad_manifest_is_reported_once_per_change() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("manifest.json");
        let good = |body: &str| {
            format!(
                r#"{{"format":"apollo-persisted-query-manifest","version":1,"operations":[{{"id":"a","body":"{body}"}}]}}"#
            )
        };
        std::fs::write(&path, good("{ genres { name } }")).expect("write");
        let pq = PersistedQueries::new(&config(Some(path.clone()), false), None, requests(), documents())
            .expect("loads");
        assert_eq!(pq.reload(), Reload::Unchanged);
        std::fs::write(&path, "{ not json").expect("write");
        assert_eq!(pq.reload(), Reload::Rejected);
        assert_eq!(pq.reload(), Reload::StillRejected);
        assert_eq!(pq.reload(), Reload::StillRejected);
        std::fs::write(&path, "{ still not json").expect("write");
        assert_eq!(pq.reload(), Reload::Rejected, "a different bad file is reported again");
        assert_eq!(pq.manifest_len(), 1, "the previous manifest stays in force");
        std::fs::remove_file(&path).expect("remove");
        assert_eq!(pq.reload(), Reload::Rejected);
        assert_eq!(pq.reload(), Reload::StillRejected);
        std::fs::write(&path, good("{ movies(ids: []) { title } }")).expect("write");
        assert_eq!(pq.reload(), Reload::Loaded(1));
        std::fs::write(&path, "{ not json").expect("write");
        assert_eq!(pq.reload(), Reload::Rejected, "reported again after a good file");
    }

    #[tokio::test]
    async fn custom_manifest_ids_work_in_the_hash_field() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("manifest.json");
        std::fs::write(
            &path,
            r#"{"format":"apollo-persisted-query-manifest","version":1,"operations":[{"id":"genre-list-v1","body":"{ genres { name } }"}]}"#,
        )
        .expect("write");
        for safelist in [false, true] {
            let pq =
                PersistedQueries::new(&config(Some(path.clone()), safelist), None, requests(), documents())
                    .expect("loads");
            let ext = |id: &str| json!({ "version": 1, "sha256Hash": id });
            let known = ext("genre-list-v1");
            let by_id = DocumentRef { persisted: Some(&known), ..DocumentRef::default() };
            assert_eq!(&*pq.resolve(&by_id).await.expect("runs").query, "{ genres { name } }");
            let with_text = DocumentRef {
                query: Some("{ genres { name } }"),
                persisted: Some(&known),
                ..DocumentRef::default()
            };
            assert_eq!(&*pq.resolve(&with_text).await.expect("runs").query, "{ genres { name } }");
            let other_text = DocumentRef {
                query: Some("{ genres { movieCount } }"),
                persisted: Some(&known),
                ..DocumentRef::default()
            };
            assert_eq!(
                pq.resolve(&other_text).await.expect_err("mismatch"),
                PersistedQueryError::HashMismatch
            );
            let unknown = ext("no-such-op");
            let missing = DocumentRef { persisted: Some(&unknown), ..DocumentRef::default() };
            assert_eq!(pq.resolve(&missing).await.expect_err("unknown"), PersistedQueryError::NotFound);
            // The link's retry with the text runs it as an ordinary query (not in safelist mode).
            let retry = DocumentRef {
                query: Some("{ genres { movieCount } }"),
                persisted: Some(&unknown),
                ..DocumentRef::default()
            };
            match pq.resolve(&retry).await {
                Ok(document) => assert!(!safelist && &*document.query == "{ genres { movieCount } }"),
                Err(e) => assert!(safelist && e == PersistedQueryError::NotInList, "{e:?}"),
            }
        }
    }

    #[test]
    fn manifests_must_be_the_apollo_format() {
        assert!(Manifest::parse(br#"{"format":"other","version":1,"operations":[]}"#).is_err());
        assert!(Manifest::parse(b"not json").is_err());
        let twice = br#"{"format":"apollo-persisted-query-manifest","version":1,"operations":[
            {"id":"a","name":"A","type":"query","body":"{ a }"},{"id":"a","name":"B","type":"query","body":"{ b }"}]}"#;
        assert!(Manifest::parse(twice).is_err());
    }
}
