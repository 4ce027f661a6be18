//! The identity provider's public keys (a JWKS), cached in memory so verifying a user token
//! never waits on the network. The set is refreshed in the background every
//! `auth.jwks_refresh_secs`, and at once when a token names a `kid` the cache does not know
//! (a key rotation), at most once per `auth.jwks_min_refresh_secs` so a flood of made-up `kid`s
//! cannot turn into a flood of fetches. A failed refresh keeps the last good set.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, JwkSet, KeyAlgorithm};
use jsonwebtoken::{Algorithm, DecodingKey};

use super::{ALLOWED_ALGORITHMS, AuthSetupError};

/// Where the identity provider's keys come from.
#[derive(Clone, Debug)]
pub(crate) enum JwksSource {
    /// Fetched over HTTP(S).
    Url(String),
    /// Read from a local file.
    File(PathBuf),
}

/// A verification key and the one algorithm it may be used with.
#[derive(Clone)]
pub(crate) struct VerifyingKey {
    pub(crate) key: DecodingKey,
    pub(crate) algorithm: Algorithm,
}

type KeyMap = HashMap<String, VerifyingKey>;

/// The cached key set.
pub(crate) struct RemoteKeys {
    source: JwksSource,
    client: reqwest::Client,
    keys: RwLock<Arc<KeyMap>>,
    /// Bumped whenever the key set is replaced, so verdicts cached under an older set expire.
    generation: std::sync::atomic::AtomicU64,
    /// When the last fetch was attempted (success or not).
    last_attempt: tokio::sync::Mutex<Option<Instant>>,
    min_interval: Duration,
}

impl RemoteKeys {
    pub(crate) fn new(source: JwksSource, min_interval: Duration) -> Result<RemoteKeys, AuthSetupError> {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            .build()
            .map_err(|e| AuthSetupError::Jwks(format!("building the HTTP client: {e}")))?;
        Ok(RemoteKeys {
            source,
            client,
            keys: RwLock::new(Arc::new(HashMap::new())),
            generation: std::sync::atomic::AtomicU64::new(0),
            last_attempt: tokio::sync::Mutex::new(None),
            min_interval,
        })
    }

    fn current(&self) -> Arc<KeyMap> {
        match self.keys.read() {
            Ok(keys) => Arc::clone(&keys),
            Err(poisoned) => Arc::clone(&poisoned.into_inner()),
        }
    }

    /// The key named `kid`, refreshing once if it is unknown and the last fetch is old enough.
    pub(crate) async fn get(&self, kid: &str) -> Option<VerifyingKey> {
        if let Some(key) = self.current().get(kid) {
            return Some(key.clone());
        }
        {
            // Single flight: concurrent misses wait for one fetch, then look again.
            let mut last = self.last_attempt.lock().await;
            if let Some(key) = self.current().get(kid) {
                return Some(key.clone());
            }
            if last.is_some_and(|at| at.elapsed() < self.min_interval) {
                return None;
            }
            *last = Some(Instant::now());
            if let Err(e) = self.fetch_and_swap().await {
                tracing::warn!(error = %e, "refreshing the JWKS for an unknown kid");
            }
        }
        self.current().get(kid).cloned()
    }

    /// Which key set is current (changes on every refresh).
    pub(crate) fn generation(&self) -> u64 {
        self.generation.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Fetches the set now (startup and the periodic refresh).
    pub(crate) async fn refresh(&self) -> Result<usize, AuthSetupError> {
        *self.last_attempt.lock().await = Some(Instant::now());
        self.fetch_and_swap().await
    }

    async fn fetch_and_swap(&self) -> Result<usize, AuthSetupError> {
        let set: JwkSet = match &self.source {
            JwksSource::Url(url) => {
                let response = self
                    .client
                    .get(url)
                    .send()
                    .await
                    .and_then(reqwest::Response::error_for_status)
                    .map_err(|e| AuthSetupError::Jwks(format!("fetching {url}: {e}")))?;
                response.json().await.map_err(|e| AuthSetupError::Jwks(format!("parsing {url}: {e}")))?
            }
            JwksSource::File(path) => {
                let text = tokio::fs::read(path)
                    .await
                    .map_err(|e| AuthSetupError::Jwks(format!("reading {}: {e}", path.display())))?;
                serde_json::from_slice(&text)
                    .map_err(|e| AuthSetupError::Jwks(format!("parsing {}: {e}", path.display())))?
            }
        };
        let keys = usable_keys(&set);
        let count = keys.len();
        match self.keys.write() {
            Ok(mut current) => *current = Arc::new(keys),
            Err(poisoned) => *poisoned.into_inner() = Arc::new(keys),
        }
        self.generation.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Ok(count)
    }
}

/// The keys of `set` that can verify tokens: a `kid`, a signature use, and an allowed algorithm.
fn usable_keys(set: &JwkSet) -> KeyMap {
    let mut keys = HashMap::new();
    for jwk in &set.keys {
        let Some(kid) = jwk.common.key_id.clone() else { continue };
        if jwk
            .common
            .public_key_use
            .as_ref()
            .is_some_and(|u| *u != jsonwebtoken::jwk::PublicKeyUse::Signature)
        {
            continue;
        }
        let Some(algorithm) = algorithm_of(jwk) else {
            tracing::debug!(%kid, "skipping a JWKS key with no allowed algorithm");
            continue;
        };
        match DecodingKey::from_jwk(jwk) {
            Ok(key) => {
                keys.insert(kid, VerifyingKey { key, algorithm });
            }
            Err(e) => tracing::warn!(%kid, error = %e, "skipping an unreadable JWKS key"),
        }
    }
    keys
}

/// The algorithm a key is for: its `alg` when given, else the one its type implies; `None` when
/// that is not one the gateway accepts.
fn algorithm_of(jwk: &Jwk) -> Option<Algorithm> {
    let implied = match &jwk.algorithm {
        AlgorithmParameters::RSA(_) => Algorithm::RS256,
        AlgorithmParameters::EllipticCurve(p) if p.curve == EllipticCurve::P256 => Algorithm::ES256,
        AlgorithmParameters::OctetKeyPair(p) if p.curve == EllipticCurve::Ed25519 => Algorithm::EdDSA,
        _ => return None,
    };
    let algorithm = match jwk.common.key_algorithm {
        None => implied,
        Some(KeyAlgorithm::RS256) => Algorithm::RS256,
        Some(KeyAlgorithm::ES256) => Algorithm::ES256,
        Some(KeyAlgorithm::EdDSA) => Algorithm::EdDSA,
        Some(_) => return None,
    };
    (algorithm == implied && ALLOWED_ALGORITHMS.contains(&algorithm)).then_some(algorithm)
}
