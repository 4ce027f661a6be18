//! The README's examples, pasted as a new user would: every `curl` command in its `sh` blocks
//! (with the shell assignments they depend on) runs against a gateway on the demo catalog,
//! with the partner manifest the README shows and a development user token, and must answer
//! JSON without errors.

use std::path::Path;
use std::time::Duration;

use serde_json::Value;
use tokio::process::Command;

use crate::helpers::{gateway_command, spawn_with, test_config};

fn readme() -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../README.md")).expect("README.md")
}

/// The fenced blocks of `language` in `text`.
fn blocks<'a>(text: &'a str, language: &str) -> Vec<&'a str> {
    let fence = format!("```{language}\n");
    text.split(&fence).skip(1).filter_map(|rest| rest.split("\n```").next()).collect()
}

/// The commands of an `sh` block that talk to the gateway: `curl …` and `NAME=$(…)`
/// assignments (other than those running cargo, which the test does itself), each with its
/// continuation lines (a trailing `\` or an open single quote).
fn commands(block: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut current: Option<String> = None;
    for line in block.lines() {
        if let Some(command) = current.as_mut() {
            command.push('\n');
            command.push_str(line);
        } else {
            let assignment = line.split_once("=$(").is_some_and(|(name, _)| {
                !name.is_empty() && name.chars().all(|c| c.is_ascii_uppercase() || c == '_')
            });
            if line.starts_with("curl ") || (assignment && !line.contains("cargo ")) {
                current = Some(line.to_owned());
            } else {
                continue;
            }
        }
        let text = current.as_deref().unwrap_or_default();
        let open_quote = text.matches('\'').count() % 2 == 1;
        if !open_quote && !text.ends_with('\\') {
            out.extend(current.take());
        }
    }
    out
}

#[tokio::test]
async fn every_curl_example_in_the_readme_works_when_pasted() {
    let text = readme();
    let dir = tempfile::tempdir().expect("tempdir");

    // The demo catalog `cargo run` seeds, and the manifest the README shows.
    let demo = marquee_gateway::config::Config::default().demo;
    let data = dir.path().join("data");
    crate::helpers::seed_into(
        &data,
        &marquee_store::bulk::seed::SeedOptions { movies: demo.movies, people: None, seed: demo.seed },
    );
    let manifest = blocks(&text, "json")
        .into_iter()
        .find(|b| b.contains("apollo-persisted-query-manifest"))
        .expect("the README shows a manifest");
    let manifest_path = dir.path().join("partner-manifest.json");
    std::fs::write(&manifest_path, manifest).expect("write manifest");

    // A development key and token, as the README's signed-in flow makes them.
    let key = dir.path().join("dev-signing.pem");
    assert!(gateway_command().args(["keygen", "--out"]).arg(&key).status().expect("keygen").success());
    let keys = format!("[\"{}\"]", key.display());
    let token = gateway_command()
        .args(["token", "--user", "alice"])
        .env("MARQUEE_AUTH__SIGNING_KEY_FILES", &keys)
        .env("MARQUEE_AUTH__DEV_TOKENS", "true")
        .output()
        .expect("token");
    assert!(token.status.success(), "{}", String::from_utf8_lossy(&token.stderr));
    let token = String::from_utf8(token.stdout).expect("utf8").trim().to_owned();

    let mut config = test_config(&data);
    config.auth.signing_key_files = vec![key.clone()];
    config.auth.dev_tokens = true;
    config.persisted_queries.manifest_file = Some(manifest_path);
    let app = spawn_with(config).await;

    let mut ran = 0;
    for block in blocks(&text, "sh") {
        let commands = commands(block);
        if commands.is_empty() {
            continue;
        }
        // One shell per block (assignments feed later commands); each curl's output to a file.
        let mut script = String::from("set -eu -o pipefail\n");
        let mut outputs = Vec::new();
        for (i, command) in commands.iter().enumerate() {
            let command = command.replace("localhost:8080", &app.addr.to_string());
            if command.starts_with("curl ") {
                let out = dir.path().join(format!("out-{ran}-{i}.json"));
                script.push_str(&format!("{command} > '{}'\n", out.display()));
                outputs.push((commands[i].clone(), out));
            } else {
                script.push_str(&command);
                script.push('\n');
            }
        }
        let run =
            Command::new("bash").arg("-c").arg(&script).env("TOKEN", &token).kill_on_drop(true).output();
        let run =
            tokio::time::timeout(Duration::from_secs(60), run).await.expect("in time").expect("bash runs");
        assert!(
            run.status.success(),
            "the block failed:\n{script}\n{}",
            String::from_utf8_lossy(&run.stderr)
        );
        for (command, out) in outputs {
            let body = std::fs::read_to_string(&out).expect("output");
            let json: Value =
                serde_json::from_str(&body).unwrap_or_else(|e| panic!("{command}\nanswered {body:?}: {e}"));
            assert!(json.is_object() && json.get("errors").is_none(), "{command}\nanswered {body}");
            if command.contains("sort: RATING") {
                // The README says the RATING order reads sorted by `weighted`.
                let weighted: Vec<f64> = json["data"]["browse"]["edges"]
                    .as_array()
                    .expect("edges")
                    .iter()
                    .map(|e| e["node"]["rating"]["weighted"].as_f64().expect("weighted"))
                    .collect();
                assert!(weighted.len() > 1 && weighted.windows(2).all(|w| w[0] >= w[1]), "{weighted:?}");
            }
            ran += 1;
        }
    }
    assert!(ran >= 15, "found {ran} curl examples");
}
