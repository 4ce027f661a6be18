//! Stock clients against real gateways, over Node.js: Apollo Client 4 as a partner app uses it
//! (automatic persisted queries over GET, manifest operations by sha256 and by custom ids, a
//! safelist refusal read as a GraphQL error with its code, a field error read as partial data),
//! with manifests written by Apollo's own `generate-persisted-query-manifest`; and
//! `graphql-http`'s GraphQL-over-HTTP server audit, which must end with no error and no warning.
//!
//! GraphiQL is here too: served with its scripts from the gateway, whose vendored copies must
//! be byte for byte the files of the pinned packages npm installs from the registry (with the
//! lockfile's integrity checks).
//!
//! The scripts and their pinned packages are in `gateway/tests/clients/` (`npm ci` there, which
//! `cargo xtask ci` runs; Node.js and npm from Debian).

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;
use tokio::process::Command;

use crate::helpers::{DataDir, TestApp, seeded_dir, spawn_with, test_config};

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

async fn gateway(manifest: &Path, safelist: bool) -> (TestApp, DataDir) {
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

/// The GraphiQL page, as a browser asks for it.
async fn graphiql_page(app: &TestApp) -> String {
    let response =
        app.client.get(app.url("/graphql")).header("accept", "text/html").send().await.expect("graphiql");
    response.text().await.expect("page")
}

/// A fresh gateway's GraphiQL loads nothing from the internet: the page names the gateway's own
/// copies of the pinned files with their integrity hashes, and the gateway serves those bytes.
#[tokio::test]
async fn graphiql_is_served_without_internet_access() {
    use base64::Engine;
    use sha2::Digest;

    let dir = seeded_dir();
    let app = spawn_with(test_config(dir.path())).await;
    let page = graphiql_page(&app).await;
    assert!(!page.contains("https://") && !page.contains("http://"), "nothing from the internet: {page}");
    // Each asset is `src="…" integrity="…"` (or `href`): fetch it and check the hash as a
    // browser would.
    let tags: Vec<(&str, &str)> = page
        .split(['\n', '<'])
        .filter_map(|tag| {
            let url =
                tag.split(" src=\"").nth(1).or_else(|| tag.split(" href=\"").nth(1))?.split('"').next()?;
            let integrity = tag.split(" integrity=\"").nth(1)?.split('"').next()?;
            Some((url, integrity))
        })
        .collect();
    assert_eq!(tags.len(), marquee_gateway::http::graphiql::ASSETS.len(), "{page}");
    for (url, integrity) in tags {
        assert!(url.starts_with(marquee_gateway::http::graphiql::ASSETS_ROUTE), "{url}");
        let response = app.client.get(app.url(url)).send().await.expect("asset");
        assert_eq!(response.status(), 200, "{url}");
        assert!(response.headers()["cache-control"].to_str().expect("ascii").contains("immutable"));
        let bytes = response.bytes().await.expect("body");
        let actual = format!(
            "sha384-{}",
            base64::engine::general_purpose::STANDARD.encode(sha2::Sha384::digest(&bytes))
        );
        assert_eq!(actual, integrity, "{url}");
    }
    let missing = app.client.get(app.url("/graphiql/assets/nope.js")).send().await.expect("asset");
    assert_eq!(missing.status(), 404);
    app.stop().await.expect("stops");

    // Pointed at a CDN, the page names it, with the same pinned hashes.
    let mut config = test_config(dir.path());
    config.graphql.graphiql_assets_url = Some("https://cdn.example".into());
    let app = spawn_with(config).await;
    let page = graphiql_page(&app).await;
    assert!(
        page.contains("src=\"https://cdn.example/graphiql@4.1.2/graphiql.min.js\" integrity=\"sha384-"),
        "{page}"
    );
    app.stop().await.expect("stops");

    // The vendored files are the registry's.
    let node_modules = clients_dir().join("node_modules");
    assert!(node_modules.join("graphiql").exists(), "run `npm ci` in {}", clients_dir().display());
    for asset in &marquee_gateway::http::graphiql::ASSETS {
        let package = node_modules.join(asset.package);
        let installed: Value =
            serde_json::from_slice(&std::fs::read(package.join("package.json")).expect("package.json"))
                .expect("json");
        assert_eq!(installed["version"], asset.version, "{}", asset.package);
        let file = std::fs::read(package.join(asset.file)).expect("the package's file");
        assert!(
            file == asset.bytes,
            "gateway/assets/graphiql differs from {}@{}/{}",
            asset.package,
            asset.version,
            asset.file
        );
    }
}
