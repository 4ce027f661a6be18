//! The real `gateway` binary: first start seeds the demo catalog and prints the GraphiQL URL,
//! SIGTERM stops it cleanly, and the CLI's other commands work.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::{Value, json};

const BIN: &str = env!("CARGO_BIN_EXE_gateway");

#[tokio::test]
async fn first_start_seeds_serves_and_stops_on_sigterm() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut child = Command::new(BIN)
        .args(["--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path().join("data"))
        .env("MARQUEE_DEMO__MOVIES", "500")
        .env("MARQUEE_REGION", "binary-test")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("gateway starts");
    let stdout = child.stdout.take().expect("stdout");
    let line = tokio::task::spawn_blocking(move || {
        BufReader::new(stdout).lines().map_while(Result::ok).find(|l| l.contains("GraphiQL"))
    });
    let line = tokio::time::timeout(Duration::from_secs(60), line)
        .await
        .expect("starts in time")
        .expect("task")
        .expect("prints the URL");
    let url = line.split_whitespace().find(|w| w.starts_with("http://")).expect("a URL").to_owned();
    assert!(url.ends_with("/graphql"), "{line}");

    let client = reqwest::Client::new();
    let body: Value = client
        .post(&url)
        .json(&json!({ "query": "{ browse(first: 1) { edges { node { id } } } genres { movieCount } }" }))
        .send()
        .await
        .expect("query")
        .json()
        .await
        .expect("json");
    let total: u64 = body["data"]["genres"]
        .as_array()
        .expect("genres")
        .iter()
        .map(|g| g["movieCount"].as_u64().expect("n"))
        .sum();
    assert!(total >= 500, "the 500-movie demo catalog is served (genre memberships {total})");

    let status = Command::new("kill").args(["-TERM", &child.id().to_string()]).status().expect("kill");
    assert!(status.success());
    let exit = tokio::task::spawn_blocking(move || child.wait()).await.expect("task").expect("wait");
    assert!(exit.success(), "SIGTERM is a clean stop: {exit}");
    assert!(marquee_store::embedded::has_catalog(&dir.path().join("data")));
}

#[test]
fn schema_command_prints_the_checked_in_sdl() {
    let out = Command::new(BIN).arg("schema").output().expect("runs");
    assert!(out.status.success());
    let printed = String::from_utf8(out.stdout).expect("utf8");
    assert!(
        printed == include_str!("../../../schema/schema.graphql"),
        "`gateway schema` differs from schema/schema.graphql"
    );
}

#[test]
fn bad_config_is_reported_not_ignored() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = Command::new(BIN)
        .args(["seed", "--movies", "10", "--data-dir"])
        .arg(dir.path())
        .env("MARQUEE_HTTP__BODY_LIMT", "5")
        .output()
        .expect("runs");
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("body_limt"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = Command::new(BIN)
        .args(["seed", "--movies", "300", "--seed", "5", "--data-dir"])
        .arg(dir.path())
        .output()
        .expect("runs");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("seeded 300 movies"));
}
