//! Tokens through real HTTP: anonymous tokens, identity-provider tokens verified against a JWKS
//! (file and URL, with rotation), development tokens from the real `gateway token` command, and
//! every way a token can be bad (each one a 401 with `WWW-Authenticate`, never anonymous).
//!
//! The identity provider is the one part that cannot run here: it is stood in for by a small
//! HTTP server in this file that publishes a JWKS made from the test-only keys in
//! `tests/fixtures/keys/`, and by tokens this file signs with those keys.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use axum::routing::get;
use jsonwebtoken::jwk::{Jwk, JwkSet, PublicKeyUse};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};

use marquee_gateway::config::{Config, RateLimitConfig};

use crate::helpers::{DataDir, TestApp, first_code, gateway_command, seeded_dir, spawn_with, test_config};
use marquee_gateway::auth::generate_pem;

const IDP_ISSUER: &str = "https://idp.marquee.test/";
const AUDIENCE: &str = "marquee-api";
const QUERY: &str = "{ genres { name } }";

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/keys").join(name)
}

/// A test-only identity-provider key.
struct IdpKey {
    kid: &'static str,
    alg: Algorithm,
    key: EncodingKey,
}

impl IdpKey {
    fn load(file: &str, kid: &'static str, alg: Algorithm) -> IdpKey {
        let pem = std::fs::read(fixture(file)).expect("fixture key");
        let key = match alg {
            Algorithm::RS256 => EncodingKey::from_rsa_pem(&pem),
            Algorithm::ES256 => EncodingKey::from_ec_pem(&pem),
            _ => EncodingKey::from_ed_pem(&pem),
        }
        .expect("key parses");
        IdpKey { kid, alg, key }
    }

    fn jwk(&self) -> Jwk {
        let mut jwk = Jwk::from_encoding_key(&self.key, self.alg).expect("jwk");
        jwk.common.key_id = Some(self.kid.to_owned());
        jwk.common.public_key_use = Some(PublicKeyUse::Signature);
        jwk
    }

    fn sign(&self, claims: &Value) -> String {
        let mut header = Header::new(self.alg);
        header.kid = Some(self.kid.to_owned());
        jsonwebtoken::encode(&header, claims, &self.key).expect("signs")
    }
}

fn rsa_a() -> IdpKey {
    IdpKey::load("rsa-a.pem", "rsa-a", Algorithm::RS256)
}
fn rsa_b() -> IdpKey {
    IdpKey::load("rsa-b.pem", "rsa-b", Algorithm::RS256)
}

fn now() -> i64 {
    i64::try_from(jsonwebtoken::get_current_timestamp()).expect("time")
}

/// Valid user claims for `sub`, with `changes` merged over them.
fn claims(sub: &str, changes: Value) -> Value {
    let mut claims =
        json!({ "sub": sub, "iss": IDP_ISSUER, "aud": AUDIENCE, "exp": now() + 600, "iat": now() });
    if let (Some(base), Some(changes)) = (claims.as_object_mut(), changes.as_object()) {
        for (k, v) in changes {
            if v.is_null() {
                base.remove(k);
            } else {
                base.insert(k.clone(), v.clone());
            }
        }
    }
    claims
}

fn jwks(keys: &[&IdpKey]) -> Value {
    serde_json::to_value(JwkSet { keys: keys.iter().map(|k| k.jwk()).collect() }).expect("json")
}

/// A gateway trusting the JWKS in a file.
async fn with_jwks_file(keys: &[&IdpKey], change: impl FnOnce(&mut Config)) -> (TestApp, DataDir) {
    let dir = seeded_dir();
    let path = dir.path().join("jwks.json");
    std::fs::write(&path, jwks(keys).to_string()).expect("write jwks");
    let mut config = test_config(dir.path());
    config.auth.jwks_file = Some(path);
    config.auth.jwks_issuer = Some(IDP_ISSUER.into());
    config.rate_limit.enabled = false;
    change(&mut config);
    (spawn_with(config).await, dir)
}

async fn call(app: &TestApp, token: Option<&str>) -> reqwest::Response {
    let mut request = app.client.post(app.url("/graphql")).json(&json!({ "query": QUERY }));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    request.send().await.expect("request")
}

/// Asserts `token` is refused with 401, a Bearer challenge naming `error`, and a GraphQL body.
async fn refused(app: &TestApp, authorization: &str, error: &str, why: &str) {
    let response = app
        .client
        .post(app.url("/graphql"))
        .header("authorization", authorization)
        .json(&json!({ "query": QUERY }))
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), 401, "{why}");
    let challenge = response.headers()["www-authenticate"].to_str().expect("ascii").to_owned();
    assert!(challenge.starts_with(&format!("Bearer error=\"{error}\"")), "{why}: {challenge}");
    let body: Value = response.json().await.expect("json");
    assert_eq!(first_code(&body), "INVALID_TOKEN", "{why}: {body}");
    assert!(body.get("data").is_none(), "{why}: nothing executed");
}

/// Who `token` makes the caller: the id `{ me { id } }` answers, or `None` for a caller who
/// is not signed in (`me` is then `UNAUTHENTICATED`).
async fn whoami(app: &TestApp, token: Option<&str>) -> Option<String> {
    let mut request = app.client.post(app.url("/graphql")).json(&json!({ "query": "{ me { id } }" }));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.expect("request");
    assert_eq!(response.status(), 200, "the token verifies");
    let body: Value = response.json().await.expect("json");
    match body["data"]["me"]["id"].as_str() {
        Some(id) => Some(id.to_owned()),
        None => {
            assert_eq!(first_code(&body), "UNAUTHENTICATED", "{body}");
            None
        }
    }
}

fn b64(value: &Value) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(value.to_string())
}

#[tokio::test]
async fn anonymous_tokens_are_issued_published_and_accepted() {
    let dir = seeded_dir();
    let app = spawn_with(test_config(dir.path())).await;
    let issued: Value =
        app.client.post(app.url("/auth/anonymous")).send().await.expect("post").json().await.expect("json");
    let token = issued["token"].as_str().expect("token");
    assert_eq!(issued["tokenType"], "Bearer");
    assert_eq!(issued["expiresIn"], 3600);
    assert!(issued["subject"].as_str().expect("subject").starts_with("anon:"));

    let header = jsonwebtoken::decode_header(token).expect("a JWT");
    assert_eq!(header.alg, Algorithm::EdDSA);
    let published: JwkSet = app
        .client
        .get(app.url("/.well-known/jwks.json"))
        .send()
        .await
        .expect("jwks")
        .json()
        .await
        .expect("json");
    assert!(published.find(header.kid.as_deref().expect("kid")).is_some(), "the signing key is published");

    assert_eq!(call(&app, Some(token)).await.status(), 200);
    assert_eq!(call(&app, None).await.status(), 200, "no token is anonymous");
    let wrong_method = app.client.get(app.url("/auth/anonymous")).send().await.expect("get");
    assert_eq!(wrong_method.status(), 405);
}

#[tokio::test]
async fn every_bad_token_is_a_401_never_anonymous() {
    let (a, ec) = (rsa_a(), IdpKey::load("ec.pem", "ec", Algorithm::ES256));
    let (app, _dir) = with_jwks_file(&[&a, &ec], |_| {}).await;
    let bearer = |t: &str| format!("Bearer {t}");
    refused(&app, &bearer("not-a-jwt"), "invalid_token", "garbage").await;
    refused(&app, &bearer("a.b.c"), "invalid_token", "three dots of nothing").await;
    refused(&app, "Basic dXNlcjpwYXNz", "invalid_request", "another scheme").await;
    refused(&app, "Bearer ", "invalid_request", "an empty token").await;

    let good = a.sign(&claims("alice", json!({})));
    assert_eq!(call(&app, Some(&good)).await.status(), 200, "the valid token passes");

    // `alg: none`, with the claims of the valid token and no signature.
    let payload = good.split('.').nth(1).expect("payload");
    let none = format!("{}.{payload}.", b64(&json!({ "alg": "none", "typ": "JWT", "kid": "rsa-a" })));
    refused(&app, &bearer(&none), "invalid_token", "alg none").await;

    // HS256 keyed with the RSA public key: the classic algorithm confusion.
    let public_pem = std::fs::read(fixture("rsa-a.pub.pem")).expect("pub");
    let mut hs = Header::new(Algorithm::HS256);
    hs.kid = Some("rsa-a".into());
    let confused =
        jsonwebtoken::encode(&hs, &claims("alice", json!({})), &EncodingKey::from_secret(&public_pem))
            .expect("signs");
    refused(&app, &bearer(&confused), "invalid_token", "HS/RS confusion").await;

    // An RS256 header on the EC key's kid.
    let mut mismatched = Header::new(Algorithm::RS256);
    mismatched.kid = Some("ec".into());
    let mismatched = jsonwebtoken::encode(&mismatched, &claims("alice", json!({})), &a.key).expect("signs");
    refused(&app, &bearer(&mismatched), "invalid_token", "alg does not match the key").await;

    // A forged signature: the valid token's header and signature over other claims.
    let parts: Vec<&str> = good.split('.').collect();
    let forged = format!("{}.{}.{}", parts[0], b64(&claims("mallory", json!({}))), parts[2]);
    refused(&app, &bearer(&forged), "invalid_token", "bad signature").await;

    let expired = a.sign(&claims("alice", json!({ "exp": now() - 120 })));
    refused(&app, &bearer(&expired), "invalid_token", "expired beyond the skew").await;
    let skewed = a.sign(&claims("alice", json!({ "exp": now() - 5 })));
    assert_eq!(call(&app, Some(&skewed)).await.status(), 200, "a few seconds of skew are allowed");
    let early = a.sign(&claims("alice", json!({ "nbf": now() + 600 })));
    refused(&app, &bearer(&early), "invalid_token", "not valid yet").await;
    let audience = a.sign(&claims("alice", json!({ "aud": "someone-else" })));
    refused(&app, &bearer(&audience), "invalid_token", "wrong audience").await;
    let issuer = a.sign(&claims("alice", json!({ "iss": "https://evil.test/" })));
    refused(&app, &bearer(&issuer), "invalid_token", "wrong issuer").await;
    let no_exp = a.sign(&claims("alice", json!({ "exp": null })));
    refused(&app, &bearer(&no_exp), "invalid_token", "no exp").await;
    let no_sub = a.sign(&claims("alice", json!({ "sub": null })));
    refused(&app, &bearer(&no_sub), "invalid_token", "no sub").await;
    let posing = a.sign(&claims("anon:00000000-0000-0000-0000-000000000000", json!({})));
    refused(&app, &bearer(&posing), "invalid_token", "an IdP subject posing as anonymous").await;
    let unknown = IdpKey::load("rsa-b.pem", "rsa-b", Algorithm::RS256).sign(&claims("alice", json!({})));
    refused(&app, &bearer(&unknown), "invalid_token", "unknown kid").await;
}

#[tokio::test]
async fn rs256_es256_and_eddsa_identity_provider_tokens_verify() {
    let keys = [
        rsa_a(),
        IdpKey::load("ec.pem", "ec", Algorithm::ES256),
        IdpKey::load("ed.pem", "ed", Algorithm::EdDSA),
    ];
    let (app, _dir) = with_jwks_file(&keys.iter().collect::<Vec<_>>(), |_| {}).await;
    for key in &keys {
        let subject = format!("alice-{:?}", key.alg);
        let token = key.sign(&claims(&subject, json!({})));
        assert_eq!(whoami(&app, Some(&token)).await, Some(subject), "{:?}", key.alg);
    }
    assert_eq!(whoami(&app, None).await, None, "no token is nobody");
}

/// A stand-in identity provider publishing whatever JWKS the test sets.
async fn idp(initial: Value) -> (String, Arc<Mutex<Value>>) {
    let published = Arc::new(Mutex::new(initial));
    let served = Arc::clone(&published);
    let router = axum::Router::new().route(
        "/jwks.json",
        get(move || {
            let served = Arc::clone(&served);
            async move { axum::Json(served.lock().expect("lock").clone()) }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}/jwks.json", listener.local_addr().expect("addr"));
    tokio::spawn(async move { axum::serve(listener, router).await });
    (url, published)
}

#[tokio::test]
async fn jwks_url_key_rotation() {
    let (a, b) = (rsa_a(), rsa_b());
    let (url, published) = idp(jwks(&[&a])).await;
    let dir = seeded_dir();
    let mut config = test_config(dir.path());
    config.auth.jwks_url = Some(url);
    config.auth.jwks_issuer = Some(IDP_ISSUER.into());
    config.auth.jwks_min_refresh_secs = marquee_gateway::config::Secs(0);
    let app = spawn_with(config).await;

    let token_a = a.sign(&claims("alice", json!({})));
    let token_b = b.sign(&claims("bob", json!({})));
    assert_eq!(whoami(&app, Some(&token_a)).await.as_deref(), Some("alice"));
    assert_eq!(call(&app, Some(&token_b)).await.status(), 401, "b is not published yet");

    // Rotation window: both keys published; the unknown kid triggers a refresh.
    *published.lock().expect("lock") = jwks(&[&a, &b]);
    assert_eq!(whoami(&app, Some(&token_b)).await.as_deref(), Some("bob"), "the new key verifies");
    assert_eq!(whoami(&app, Some(&token_a)).await.as_deref(), Some("alice"), "the old key still verifies");

    // The old key is retired; the next refresh (here: another unknown kid) drops it.
    *published.lock().expect("lock") = jwks(&[&b]);
    let stranger = IdpKey::load("ec.pem", "not-published", Algorithm::ES256).sign(&claims("eve", json!({})));
    assert_eq!(call(&app, Some(&stranger)).await.status(), 401);
    assert_eq!(call(&app, Some(&token_a)).await.status(), 401, "the retired key no longer verifies");
    assert_eq!(whoami(&app, Some(&token_b)).await.as_deref(), Some("bob"));
}

#[tokio::test]
async fn anonymous_tokens_never_multiply_their_address_rate() {
    let dir = seeded_dir();
    let mut config = test_config(dir.path());
    config.rate_limit = RateLimitConfig { enabled: true, per_second: 1, burst: 4 };
    let app = spawn_with(config).await;
    let mut tokens = Vec::new();
    for _ in 0..2 {
        let issued: Value = app
            .client
            .post(app.url("/auth/anonymous"))
            .send()
            .await
            .expect("post")
            .json()
            .await
            .expect("json");
        tokens.push(issued["token"].as_str().expect("token").to_owned());
    }
    // Minting spent two of the address's four; whatever carries the requests, two are left.
    assert_eq!(call(&app, Some(&tokens[0])).await.status(), 200);
    assert_eq!(call(&app, Some(&tokens[1])).await.status(), 200);
    for token in &tokens {
        assert_eq!(call(&app, Some(token)).await.status(), 429, "the tokens' address is spent");
    }
    assert_eq!(call(&app, None).await.status(), 429, "and so is the address itself");
}

#[tokio::test]
async fn gateway_token_mints_development_tokens_that_every_gateway_with_the_key_accepts() {
    let dir = tempfile::tempdir().expect("tempdir");
    let key = dir.path().join("signing.pem");
    let status = gateway_command().args(["keygen", "--out"]).arg(&key).status().expect("keygen");
    assert!(status.success());
    let again = gateway_command().args(["keygen", "--out"]).arg(&key).output().expect("keygen");
    assert!(!again.status.success(), "keygen never overwrites a key");

    let mint = |dev: bool| {
        gateway_command()
            .args(["token", "--user", "alice", "--ttl", "10m"])
            .env("MARQUEE_AUTH__SIGNING_KEY_FILES", format!("[\"{}\"]", key.display()))
            .env("MARQUEE_AUTH__DEV_TOKENS", dev.to_string())
            .output()
            .expect("token")
    };
    let refused = mint(false);
    assert!(!refused.status.success(), "development tokens are off by default");
    assert!(String::from_utf8_lossy(&refused.stderr).contains("dev_tokens"));
    let minted = mint(true);
    assert!(minted.status.success(), "{}", String::from_utf8_lossy(&minted.stderr));
    let token = String::from_utf8(minted.stdout).expect("utf8").trim().to_owned();

    // Each gateway has its own store; they share only the key file, as a region's gateways do.
    let dirs = [seeded_dir(), seeded_dir(), seeded_dir()];
    let gateway = |data: &Path, dev: bool| {
        let mut config = test_config(data);
        config.auth.signing_key_files = vec![key.clone()];
        config.auth.signing_keys = None;
        config.auth.dev_tokens = dev;
        spawn_with(config)
    };
    let (one, two) = (gateway(dirs[0].path(), true).await, gateway(dirs[1].path(), true).await);
    assert_eq!(whoami(&one, Some(&token)).await.as_deref(), Some("alice"));
    assert_eq!(whoami(&two, Some(&token)).await.as_deref(), Some("alice"));
    // An anonymous token from one gateway verifies on the other: no session state.
    let issued: Value =
        one.client.post(one.url("/auth/anonymous")).send().await.expect("post").json().await.expect("json");
    let anonymous = issued["token"].as_str().expect("token");
    assert_eq!(call(&two, Some(anonymous)).await.status(), 200);
    assert_eq!(whoami(&two, Some(anonymous)).await, None, "an anonymous token signs nobody in");

    let production = gateway(dirs[2].path(), false).await;
    refused_dev(&production, &token).await;
}

/// The gateway's own keys rotated in the documented order, over gateways that share them as
/// one secret (`auth.signing_keys`): no live token is rejected at any step, and each keeps
/// its caller.
#[tokio::test]
async fn own_signing_keys_rotate_without_rejecting_a_live_token() {
    let (old, new) = (generate_pem().expect("key"), generate_pem().expect("key"));
    // Each gateway has its own store; they share only the keys, as a deployment's do.
    let dirs = [seeded_dir(), seeded_dir(), seeded_dir(), seeded_dir()];
    let gateway = |at: usize, keys: String| {
        let mut config = test_config(dirs[at].path());
        config.auth.signing_key_files = Vec::new();
        config.auth.signing_keys = Some(keys.into());
        config.auth.dev_tokens = true;
        config.rate_limit.enabled = false;
        spawn_with(config)
    };
    // Before: the old key alone. A user token and an anonymous token are in clients' hands.
    let before = gateway(0, old.clone()).await;
    let alice = mint_with(&old, "alice");
    assert_eq!(whoami(&before, Some(&alice)).await.as_deref(), Some("alice"));
    let anonymous = anonymous_token(&before).await;

    // Step 1: the new key listed second (verifies only), on every gateway.
    let step1 = gateway(1, format!("{old}{new}")).await;
    assert_eq!(whoami(&step1, Some(&alice)).await.as_deref(), Some("alice"));
    assert_eq!(call(&step1, Some(&anonymous)).await.status(), 200);
    assert_eq!(kid(&anonymous_token(&step1).await), kid(&anonymous), "the old key still signs");

    // Step 2: the new key first (signs); the old one still verifies what it signed.
    let step2 = gateway(2, format!("{new}{old}")).await;
    let bob = mint_with(&format!("{new}{old}"), "bob");
    assert_ne!(kid(&bob), kid(&alice), "the new key signs");
    for app in [&step1, &step2] {
        assert_eq!(whoami(app, Some(&bob)).await.as_deref(), Some("bob"), "step 1 already verifies it");
    }
    assert_eq!(whoami(&step2, Some(&alice)).await.as_deref(), Some("alice"));
    assert_eq!(call(&step2, Some(&anonymous)).await.status(), 200);

    // Step 3, once the old key's last token has expired: the old key is dropped.
    let after = gateway(3, new.clone()).await;
    assert_eq!(whoami(&after, Some(&bob)).await.as_deref(), Some("bob"));
    assert_eq!(call(&after, Some(&alice)).await.status(), 401, "a retired key's tokens are refused");
}

/// A development user token for `user`, minted by the real `gateway token` command with the
/// keys in `pem` (as a deployment's secret hands them over: in the environment).
fn mint_with(pem: &str, user: &str) -> String {
    let minted = gateway_command()
        .args(["token", "--user", user, "--ttl", "10m"])
        .env("MARQUEE_AUTH__SIGNING_KEYS", pem)
        .env("MARQUEE_AUTH__DEV_TOKENS", "true")
        .output()
        .expect("token");
    assert!(minted.status.success(), "{}", String::from_utf8_lossy(&minted.stderr));
    String::from_utf8(minted.stdout).expect("utf8").trim().to_owned()
}

async fn anonymous_token(app: &TestApp) -> String {
    let issued: Value =
        app.client.post(app.url("/auth/anonymous")).send().await.expect("post").json().await.expect("json");
    issued["token"].as_str().expect("token").to_owned()
}

/// The `kid` a token names.
fn kid(token: &str) -> String {
    jsonwebtoken::decode_header(token).expect("header").kid.expect("kid")
}

async fn refused_dev(app: &TestApp, token: &str) {
    refused(app, &format!("Bearer {token}"), "invalid_token", "development token while disabled").await;
}

#[tokio::test]
async fn the_periodic_jwks_refresh_retires_keys_without_any_trigger() {
    let a = rsa_a();
    let (url, published) = idp(jwks(&[&a])).await;
    let dir = seeded_dir();
    let mut config = test_config(dir.path());
    config.auth.jwks_url = Some(url);
    config.auth.jwks_issuer = Some(IDP_ISSUER.into());
    config.auth.jwks_refresh_secs = marquee_gateway::config::Secs(1);
    let app = spawn_with(config).await;
    let token = a.sign(&claims("alice", json!({})));
    assert_eq!(call(&app, Some(&token)).await.status(), 200);
    *published.lock().expect("lock") = jwks(&[&rsa_b()]);
    let mut status = 200;
    for _ in 0..100 {
        status = call(&app, Some(&token)).await.status().as_u16();
        if status == 401 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(status, 401, "the refresh within 5 s dropped the retired key");
}

#[tokio::test]
async fn a_remembered_token_still_expires_on_time() {
    let a = rsa_a();
    let (app, _dir) = with_jwks_file(&[&a], |c| c.auth.leeway_secs = marquee_gateway::config::Secs(0)).await;
    let token = a.sign(&claims("alice", json!({ "exp": now() + 2 })));
    assert_eq!(call(&app, Some(&token)).await.status(), 200);
    assert_eq!(call(&app, Some(&token)).await.status(), 200, "verified once, then remembered");
    tokio::time::sleep(std::time::Duration::from_millis(3100)).await;
    assert_eq!(call(&app, Some(&token)).await.status(), 401, "the verdict does not outlive exp");
}
