//! Stock clients against real gateways, over Node.js: Apollo Client 4 as a partner app uses it
//! (automatic persisted queries over GET, manifest operations by sha256 and by custom ids, a
//! safelist refusal read as a GraphQL error with its code, a field error read as partial data),
//! with manifests written by Apollo's own `generate-persisted-query-manifest`; and
//! `graphql-http`'s GraphQL-over-HTTP server audit, which must end with no error and no warning.
//!
//! GraphiQL served with its scripts from the gateway (the same packages, from the npm registry)
//! is here too.
//!
//! The scripts and their pinned packages are in `gateway/tests/clients/` (`npm ci` there, which
//! `cargo xtask ci` runs; Node.js and npm from Debian).

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;
use tokio::process::Command;

use marquee_gateway::startup::Application;

use crate::helpers::{TestApp, seeded_dir, spawn_with, test_config};

fn clients_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/clients")
}

/// Runs `node script` in the clients directory with `env`; its output, asserting success.
async fn node(script: &str, env: &[(&str, &str)]) -> String {
    let dir = clients_dir();
    assert!(
        dir.join("node_modules/@apollo/client").exists(),
        "the client packages are not installed: run `npm ci` in {} (cargo xtask ci does)",
        dir.display()
    );
    let mut command = Command::new("node");
    command.arg(script).current_dir(&dir).kill_on_drop(true);
    for (name, value) in env {
        command.env(name, value);
    }
    let output = tokio::time::timeout(Duration::from_secs(120), command.output())
        .await
        .unwrap_or_else(|_| panic!("node {script} finished within 2 minutes"))
        .unwrap_or_else(|e| panic!("running node (install Debian's nodejs): {e}"));
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "node {script} failed ({}):\n{stdout}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

/// Apollo's manifest generator over the partner operations; `custom` gives custom ids.
async fn generate_manifest(out: &Path, custom: bool) -> Value {
    let out_text = out.display().to_string();
    let mut env = vec![("MANIFEST_OUT", out_text.as_str())];
    if custom {
        env.push(("MANIFEST_IDS", "custom"));
    }
    node("node_modules/.bin/generate-persisted-query-manifest", &env).await;
    serde_json::from_slice(&std::fs::read(out).expect("manifest written")).expect("manifest is JSON")
}

async fn gateway(manifest: &Path, safelist: bool) -> (TestApp, tempfile::TempDir) {
    let dir = seeded_dir();
    let mut config = test_config(dir.path());
    config.rate_limit.enabled = false;
    config.persisted_queries.manifest_file = Some(manifest.to_owned());
    config.persisted_queries.safelist = safelist;
    (spawn_with(config).await, dir)
}

#[tokio::test]
async fn apollo_client_4_and_the_graphql_over_http_audit_pass() {
    let work = tempfile::tempdir().expect("tempdir");
    let sha = generate_manifest(&work.path().join("sha256.json"), false).await;
    let custom_path = work.path().join("custom.json");
    let custom = generate_manifest(&custom_path, true).await;
    assert_eq!(custom["operations"][1]["id"], "MovieCard@v1", "custom ids: {custom}");
    // One manifest with both kinds of id, as a partner migrating between them would deploy.
    let mut merged = sha.clone();
    let both: Vec<Value> = [&sha, &custom]
        .iter()
        .flat_map(|m| m["operations"].as_array().cloned().unwrap_or_default())
        .collect();
    merged["operations"] = Value::Array(both);
    let manifest = work.path().join("manifest.json");
    std::fs::write(&manifest, merged.to_string()).expect("write manifest");

    let (open, _open_dir) = gateway(&manifest, false).await;
    let (safelisted, _safe_dir) = gateway(&manifest, true).await;
    let (open_url, safe_url) = (open.url("/graphql"), safelisted.url("/graphql"));
    let custom_text = custom_path.display().to_string();
    let apollo = node(
        "apollo.mjs",
        &[("OPEN_URL", &open_url), ("SAFELIST_URL", &safe_url), ("CUSTOM_MANIFEST", &custom_text)],
    )
    .await;
    assert!(apollo.contains("all Apollo Client checks passed"), "{apollo}");

    let audit = node("audit.mjs", &[("GRAPHQL_URL", &open_url)]).await;
    assert!(audit.contains(", 0 not ok"), "{audit}");
}

#[tokio::test]
async fn graphiql_can_be_served_without_internet_access() {
    let node_modules = clients_dir().join("node_modules");
    assert!(node_modules.join("graphiql").exists(), "run `npm ci` in {}", clients_dir().display());
    let dir = seeded_dir();
    let mut config = test_config(dir.path());
    config.graphql.graphiql_assets_dir = Some(node_modules);
    let app = spawn_with(config).await;
    let page = app
        .client
        .get(app.url("/graphql"))
        .header("accept", "text/html")
        .send()
        .await
        .expect("graphiql")
        .text()
        .await
        .expect("page");
    assert!(!page.contains("https://"), "nothing from the internet: {page}");
    let assets: Vec<&str> = page
        .split('"')
        .filter(|part| part.starts_with(marquee_gateway::http::graphiql::ASSETS_ROUTE))
        .collect();
    assert_eq!(assets.len(), marquee_gateway::http::graphiql::ASSETS.len(), "{page}");
    for asset in assets {
        let response = app.client.get(app.url(asset)).send().await.expect("asset");
        assert_eq!(response.status(), 200, "{asset}");
        assert!(response.bytes().await.expect("body").len() > 1000, "{asset}");
    }
    let missing = app.client.get(app.url("/graphiql/assets/nope.js")).send().await.expect("asset");
    assert_eq!(missing.status(), 404);
    app.stop().await.expect("stops");

    // A directory without the packages stops startup with what to install.
    let mut config = test_config(dir.path());
    config.graphql.graphiql_assets_dir = Some(dir.path().to_owned());
    let error = Application::build(config).await.err().expect("refused").to_string();
    assert!(error.contains("npm install") && error.contains("graphiql@4.1.2"), "{error}");
}
