//! The authentication stage: turns the `Authorization: Bearer` header into a [`Caller`].
//!
//! Gateways keep no sessions. A token is verified locally, either against the gateway's own
//! Ed25519 keys (anonymous tokens and, when enabled, development user tokens) or against the
//! identity provider's JWKS, cached in memory. Algorithms are pinned (RS256, ES256, EdDSA) and
//! each key may only be used with its own algorithm, which rules out `alg: none` and HS/RS
//! confusion; `exp`, `nbf`, `iss` and `aud` are checked with a small clock skew. A request with
//! no token is anonymous; a request with a bad token is refused with 401, never downgraded; a
//! request with two `Authorization` headers is refused with 400. A signature check is the
//! expensive step, so each one that is not answered from memory is first charged to the client
//! address's rate-limit bucket: bad tokens cannot be checked faster than that rate.

mod jwks;
mod keys;

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, Validation};
use marquee_schema::Caller;
use serde::{Deserialize, Serialize};

pub use keys::generate_pem;

use crate::config::AuthConfig;
use crate::error::{HttpError, codes};
use crate::rate_limit::{self, RateLimit};
use jwks::{JwksSource, RemoteKeys, VerifyingKey};

/// The only algorithms a token may be signed with.
pub(crate) const ALLOWED_ALGORITHMS: [Algorithm; 3] = [Algorithm::RS256, Algorithm::ES256, Algorithm::EdDSA];

/// Subject prefix of anonymous tokens.
const ANONYMOUS_PREFIX: &str = "anon:";
/// `role` claim values.
const ROLE_ANONYMOUS: &str = "anonymous";
const ROLE_USER: &str = "user";
/// A user who may correct the catalog (`updateMovie` and the other editors' mutations).
pub const ROLE_EDITOR: &str = "editor";

/// Why authentication could not be set up.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AuthSetupError {
    /// A signing key is missing or unreadable.
    #[error("signing key: {0}")]
    Key(String),
    /// The JWKS settings or the key set are unusable.
    #[error("JWKS: {0}")]
    Jwks(String),
    /// A token could not be signed.
    #[error("signing a token: {0}")]
    Sign(String),
    /// Development tokens are off.
    #[error("development tokens are disabled; set auth.dev_tokens = true to mint them")]
    DevTokensDisabled,
}

/// Why a token was refused. Every variant is a 401 `invalid_token`.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum TokenError {
    /// Not a JWT, or an unparseable header or claims.
    #[error("the token is malformed")]
    Malformed,
    /// Signed with an algorithm the gateway does not accept (including `none` and HMAC).
    #[error("the token's algorithm is not accepted (use RS256, ES256 or EdDSA)")]
    Algorithm,
    /// No `kid`, or a `kid` no known key has.
    #[error("the token was signed by an unknown key")]
    UnknownKey,
    /// The signature does not verify.
    #[error("the token's signature is invalid")]
    Signature,
    /// Past `exp`.
    #[error("the token has expired")]
    Expired,
    /// Before `nbf`.
    #[error("the token is not valid yet")]
    NotYetValid,
    /// Wrong `iss`.
    #[error("the token's issuer is not accepted")]
    Issuer,
    /// Wrong `aud`.
    #[error("the token is not for this audience")]
    Audience,
    /// A required claim (`exp`, `sub`, `iss`, `aud`) is missing or empty.
    #[error("the token lacks a required claim")]
    MissingClaim,
    /// A development user token while those are disabled.
    #[error("development user tokens are not accepted here")]
    DevToken,
    /// The `Authorization` header is not `Bearer <token>`.
    #[error("the Authorization header must be `Bearer <token>`")]
    Scheme,
    /// More than one `Authorization` header.
    #[error("send one Authorization header, not several")]
    Duplicate,
}

impl From<TokenError> for HttpError {
    fn from(e: TokenError) -> Self {
        let error = if matches!(e, TokenError::Scheme | TokenError::Duplicate) {
            "invalid_request"
        } else {
            "invalid_token"
        };
        let challenge = format!("Bearer error=\"{error}\", error_description=\"{e}\"");
        // RFC 6750: a repeated parameter is a bad request, not a failed authentication.
        let mut http = if e == TokenError::Duplicate {
            HttpError::new(StatusCode::BAD_REQUEST, codes::BAD_REQUEST, e.to_string())
        } else {
            HttpError::new(StatusCode::UNAUTHORIZED, codes::INVALID_TOKEN, e.to_string())
        };
        if let Ok(value) = HeaderValue::from_str(&challenge) {
            http = http.with_header(header::WWW_AUTHENTICATE, value);
        }
        http
    }
}

/// The claims Marquee reads and writes.
#[derive(Debug, Serialize, Deserialize)]
struct Claims {
    sub: String,
    iss: String,
    aud: serde_json::Value,
    exp: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    nbf: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    iat: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    role: Option<String>,
    /// Anonymous tokens: the client address they were issued to, charged with their requests.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    addr: Option<String>,
}

/// A freshly issued token.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct IssuedToken {
    /// The JWT.
    pub token: String,
    /// Always `Bearer`.
    pub token_type: &'static str,
    /// Seconds until it expires.
    pub expires_in: u64,
    /// Its subject.
    pub subject: String,
}

/// A token that verified: who it is for, until when, under which key-set generation.
#[derive(Clone)]
struct Verdict {
    caller: Caller,
    exp: u64,
    nbf: u64,
    generation: u64,
}

/// Memory for remembered verdicts.
const VERDICT_CACHE_BYTES: u64 = 16 * 1024 * 1024;

/// Verifies tokens and issues the gateway's own.
pub struct Authenticator {
    /// Tokens already verified, by their exact text: a client sends the same token on every
    /// request, and a signature check costs far more than the lookup. A verdict is used only
    /// while the token is within `exp`/`nbf` and the JWKS has not changed since.
    verdicts: moka::sync::Cache<Arc<str>, Verdict>,
    own: keys::OwnKeys,
    remote: Option<Arc<RemoteKeys>>,
    issuer: String,
    audience: String,
    idp_issuer: Option<String>,
    leeway: u64,
    dev_tokens: bool,
    anonymous_ttl: Duration,
    refresh_every: Duration,
}

impl Authenticator {
    /// Loads the signing keys and, when configured, the identity provider's JWKS (a failed
    /// first fetch of a JWKS URL is logged and retried; an unreadable JWKS file is an error).
    pub async fn new(config: &AuthConfig) -> Result<Authenticator, AuthSetupError> {
        let pem = config.signing_keys.as_ref().map(crate::config::Secret::expose);
        let own = keys::OwnKeys::load(pem, &config.signing_key_files)?;
        if own.ephemeral {
            tracing::warn!(
                "auth.signing_keys and auth.signing_key_files are unset: signing with a key generated \
                 for this process; its tokens stop verifying at restart and on other gateways"
            );
        }
        let source = match (&config.jwks_url, &config.jwks_file) {
            (Some(_), Some(_)) => {
                return Err(AuthSetupError::Jwks("set auth.jwks_url or auth.jwks_file, not both".into()));
            }
            (Some(url), None) => Some(JwksSource::Url(url.clone())),
            (None, Some(path)) => Some(JwksSource::File(path.clone())),
            (None, None) => None,
        };
        let remote = match source {
            None => None,
            Some(source) => {
                if config.jwks_issuer.as_deref().is_none_or(str::is_empty) {
                    return Err(AuthSetupError::Jwks(
                        "auth.jwks_issuer must name the identity provider's `iss`".into(),
                    ));
                }
                let remote = RemoteKeys::new(source.clone(), config.jwks_min_refresh_secs.get())?;
                match (remote.refresh().await, &source) {
                    (Ok(count), _) => tracing::info!(keys = count, "loaded the identity provider's JWKS"),
                    (Err(e), JwksSource::File(_)) => return Err(e),
                    (Err(e), JwksSource::Url(_)) => {
                        tracing::warn!(error = %e, "the JWKS is unreachable; user tokens fail until it loads");
                    }
                }
                Some(Arc::new(remote))
            }
        };
        Ok(Authenticator {
            verdicts: moka::sync::Cache::builder()
                .max_capacity(VERDICT_CACHE_BYTES)
                .weigher(|token: &Arc<str>, _: &Verdict| u32::try_from(token.len() + 96).unwrap_or(u32::MAX))
                .build(),
            own,
            remote,
            issuer: config.issuer.clone(),
            audience: config.audience.clone(),
            idp_issuer: config.jwks_issuer.clone(),
            leeway: config.leeway_secs.0,
            dev_tokens: config.dev_tokens,
            anonymous_ttl: config.anonymous_ttl_secs.get(),
            refresh_every: config.jwks_refresh_secs.get().max(Duration::from_secs(1)),
        })
    }

    /// Starts the periodic JWKS refresh (no-op without a JWKS); it stops with the runtime.
    pub fn spawn_refresh(&self) {
        let Some(remote) = self.remote.clone() else { return };
        let every = self.refresh_every;
        tokio::spawn(async move {
            let mut ticker = tokio::time::interval(every);
            ticker.tick().await;
            loop {
                ticker.tick().await;
                if let Err(e) = remote.refresh().await {
                    tracing::warn!(error = %e, "periodic JWKS refresh failed; keeping the last good keys");
                }
            }
        });
    }

    /// The gateway's public keys.
    pub fn jwks(&self) -> JwkSet {
        self.own.jwks()
    }

    fn generation(&self) -> u64 {
        self.remote.as_ref().map_or(0, |r| r.generation())
    }

    /// Who `token` is for, when it verified recently and is still valid: no signature check.
    pub fn remembered(&self, token: &str) -> Option<Caller> {
        let now = jsonwebtoken::get_current_timestamp();
        let v = self.verdicts.get(token)?;
        if v.generation == self.generation() && now <= v.exp + self.leeway && now + self.leeway >= v.nbf {
            return Some(v.caller);
        }
        self.verdicts.invalidate(token);
        None
    }

    /// Verifies `token` and says who it is for.
    pub async fn verify(&self, token: &str) -> Result<Caller, TokenError> {
        if let Some(caller) = self.remembered(token) {
            return Ok(caller);
        }
        let generation = self.generation();
        let (caller, exp, nbf) = self.verify_signature(token).await?;
        self.verdicts.insert(token.into(), Verdict { caller: caller.clone(), exp, nbf, generation });
        Ok(caller)
    }

    /// The full check: header, key, signature and claims.
    async fn verify_signature(&self, token: &str) -> Result<(Caller, u64, u64), TokenError> {
        let header = jsonwebtoken::decode_header(token).map_err(|e| match e.kind() {
            ErrorKind::InvalidAlgorithmName => TokenError::Algorithm,
            _ => TokenError::Malformed,
        })?;
        if !ALLOWED_ALGORITHMS.contains(&header.alg) {
            return Err(TokenError::Algorithm);
        }
        let kid = header.kid.as_deref().ok_or(TokenError::UnknownKey)?;
        let (key, issuer, ours) = if let Some(own) = self.own.find(kid) {
            (
                VerifyingKey { key: own.decoding.clone(), algorithm: Algorithm::EdDSA },
                self.issuer.as_str(),
                true,
            )
        } else {
            let (Some(remote), Some(issuer)) = (&self.remote, &self.idp_issuer) else {
                return Err(TokenError::UnknownKey);
            };
            (remote.get(kid).await.ok_or(TokenError::UnknownKey)?, issuer.as_str(), false)
        };
        if header.alg != key.algorithm {
            return Err(TokenError::Algorithm);
        }
        let mut validation = Validation::new(key.algorithm);
        validation.leeway = self.leeway;
        validation.validate_nbf = true;
        validation.set_audience(&[&self.audience]);
        validation.set_issuer(&[issuer]);
        validation.set_required_spec_claims(&["exp", "sub", "iss", "aud"]);
        let claims = jsonwebtoken::decode::<Claims>(token, &key.key, &validation)
            .map_err(|e| match e.kind() {
                ErrorKind::InvalidSignature => TokenError::Signature,
                ErrorKind::ExpiredSignature => TokenError::Expired,
                ErrorKind::ImmatureSignature => TokenError::NotYetValid,
                ErrorKind::InvalidIssuer => TokenError::Issuer,
                ErrorKind::InvalidAudience => TokenError::Audience,
                ErrorKind::MissingRequiredClaim(_) => TokenError::MissingClaim,
                ErrorKind::InvalidAlgorithm | ErrorKind::InvalidAlgorithmName => TokenError::Algorithm,
                _ => TokenError::Malformed,
            })?
            .claims;
        if claims.sub.trim().is_empty() || claims.sub.len() > 256 {
            return Err(TokenError::MissingClaim);
        }
        let anonymous = claims.sub.starts_with(ANONYMOUS_PREFIX);
        let (exp, nbf) = (claims.exp, claims.nbf.unwrap_or(0));
        let editor = claims.role.as_deref() == Some(ROLE_EDITOR);
        let caller = match (ours, anonymous) {
            (true, true) if claims.role.as_deref() == Some(ROLE_ANONYMOUS) => {
                Caller::Guest { subject: claims.sub, issued_to: claims.addr }
            }
            (true, false) if self.dev_tokens => Caller::User { id: claims.sub, editor },
            (true, false) => return Err(TokenError::DevToken),
            // An identity provider may not mint subjects that look like ours.
            (true, true) | (false, true) => return Err(TokenError::MissingClaim),
            (false, false) => Caller::User { id: claims.sub, editor },
        };
        Ok((caller, exp, nbf))
    }

    fn issue(
        &self,
        subject: String,
        role: &str,
        ttl: Duration,
        addr: Option<String>,
    ) -> Result<IssuedToken, AuthSetupError> {
        let now = jsonwebtoken::get_current_timestamp();
        let claims = Claims {
            sub: subject.clone(),
            iss: self.issuer.clone(),
            aud: self.audience.clone().into(),
            exp: now + ttl.as_secs(),
            nbf: Some(now),
            iat: Some(now),
            role: Some(role.to_owned()),
            addr,
        };
        let token = self.own.sign(&claims).map_err(|e| AuthSetupError::Sign(e.to_string()))?;
        Ok(IssuedToken { token, token_type: "Bearer", expires_in: ttl.as_secs(), subject })
    }

    /// A new anonymous token (`anon:<uuid>`) for a client at `address` (what its requests are
    /// also charged to).
    pub fn issue_anonymous(&self, address: &str) -> Result<IssuedToken, AuthSetupError> {
        let subject = format!("{ANONYMOUS_PREFIX}{}", uuid::Uuid::new_v4());
        self.issue(subject, ROLE_ANONYMOUS, self.anonymous_ttl, Some(address.to_owned()))
    }

    /// A development user token for `user` (only when `auth.dev_tokens` is on).
    pub fn issue_dev_user(&self, user: &str, ttl: Duration) -> Result<IssuedToken, AuthSetupError> {
        self.issue_dev(user, ROLE_USER, ttl)
    }

    /// A development editor token for `user` (only when `auth.dev_tokens` is on): a user who
    /// may also correct the catalog.
    pub fn issue_dev_editor(&self, user: &str, ttl: Duration) -> Result<IssuedToken, AuthSetupError> {
        self.issue_dev(user, ROLE_EDITOR, ttl)
    }

    fn issue_dev(&self, user: &str, role: &str, ttl: Duration) -> Result<IssuedToken, AuthSetupError> {
        if !self.dev_tokens {
            return Err(AuthSetupError::DevTokensDisabled);
        }
        if user.is_empty() || user.starts_with(ANONYMOUS_PREFIX) || user.len() > 256 {
            return Err(AuthSetupError::Sign(format!("`{user}` is not a usable user id")));
        }
        self.issue(user.to_owned(), role, ttl, None)
    }
}

/// What the authentication stage needs: the authenticator, and the rate limiter that charges
/// token verifications to the client's address.
#[derive(Clone)]
pub struct AuthStage {
    /// Verifies and issues tokens.
    pub authenticator: Arc<Authenticator>,
    /// Charges verifications.
    pub rate_limit: RateLimit,
}

/// Middleware: verifies the bearer token (if any) and attaches the [`Caller`] to the request.
pub async fn authenticate(State(state): State<AuthStage>, mut request: Request, next: Next) -> Response {
    let mut charged = None;
    let mut values = request.headers().get_all(header::AUTHORIZATION).iter();
    let caller = match (values.next(), values.next()) {
        (None, _) => Caller::Anonymous,
        (Some(_), Some(_)) => return HttpError::from(TokenError::Duplicate).into_response(),
        (Some(value), None) => {
            let token = value
                .to_str()
                .ok()
                .and_then(|v| v.split_once(' '))
                .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
                .map(|(_, token)| token.trim())
                .filter(|token| !token.is_empty());
            let verified = match token {
                None => Err(TokenError::Scheme),
                Some(token) => match state.authenticator.remembered(token) {
                    Some(caller) => Ok(caller),
                    None => {
                        if state.rate_limit.enabled() {
                            let bucket = rate_limit::address_bucket(&crate::client_addr::of(&request));
                            if let Err(refused) = state.rate_limit.charge(&bucket).await {
                                return refused;
                            }
                            charged = Some(rate_limit::Charged(bucket));
                        }
                        state.authenticator.verify(token).await
                    }
                },
            };
            match verified {
                Ok(caller) => caller,
                Err(e) => {
                    tracing::debug!(error = %e, "refusing a bearer token");
                    return HttpError::from(e).into_response();
                }
            }
        }
    };
    if let Some(charged) = charged {
        request.extensions_mut().insert(charged);
    }
    request.extensions_mut().insert(caller);
    next.run(request).await
}
