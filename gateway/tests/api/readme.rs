//! The README's examples, pasted as a new user would: every `curl` command in the `sh` blocks
//! of the README and of the documents under `docs/` (with the shell assignments they depend
//! on) runs against a gateway on the demo catalog, with the partner manifest the README shows
//! and a development user token, and must answer JSON without errors.

use std::path::Path;
use std::time::Duration;

use serde_json::Value;
use tokio::process::Command;

use marquee_store::bulk::seed::SeedOptions;

use crate::helpers::{TestApp, gateway_command, spawn_with, test_config};

/// The README, then every document under `docs/` (by name): their examples are tested alike.
fn readme() -> String {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut text = std::fs::read_to_string(root.join("README.md")).expect("README.md");
    let mut docs: Vec<std::path::PathBuf> = std::fs::read_dir(root.join("docs"))
        .expect("docs/")
        .map(|entry| entry.expect("a docs/ entry").path())
        .filter(|path| path.extension().is_some_and(|e| e == "md"))
        .collect();
    docs.sort();
    assert!(docs.len() >= 7, "the operators' documents are in docs/: {docs:?}");
    for doc in docs {
        text.push('\n');
        text.push_str(&std::fs::read_to_string(&doc).expect("a document"));
    }
    text
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

/// What the README's flows need besides a catalog: its manifest, a development key and a
/// user token minted with it.
struct Setup {
    manifest: std::path::PathBuf,
    key: std::path::PathBuf,
    token: String,
}

fn setup(text: &str, dir: &Path) -> Setup {
    let manifest = blocks(text, "json")
        .into_iter()
        .find(|b| b.contains("apollo-persisted-query-manifest"))
        .expect("the README shows a manifest");
    let manifest_path = dir.join("partner-manifest.json");
    std::fs::write(&manifest_path, manifest).expect("write manifest");

    // A development key and token, as the README's signed-in flow makes them.
    let key = dir.join("dev-signing.pem");
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
    Setup { manifest: manifest_path, key, token }
}

/// A gateway over `store` configured as the README's flows expect.
async fn spawn_for_readme(
    setup: &Setup,
    data: &Path,
    store: Option<marquee_gateway::config::StoreConfig>,
) -> TestApp {
    let mut config = test_config(data);
    if let Some(store) = store {
        config.store = store;
    }
    config.auth.signing_key_files = vec![setup.key.clone()];
    config.auth.signing_keys = None;
    config.auth.dev_tokens = true;
    config.persisted_queries.manifest_file = Some(setup.manifest.clone());
    spawn_with(config).await
}

/// Runs every `curl` example of the README (one shell per `sh` block) against `app`; each
/// example's command and the JSON it answered, in order.
async fn run_examples(text: &str, app: &TestApp, token: &str, scratch: &Path) -> Vec<(String, Value)> {
    let mut answers = Vec::new();
    for (b, block) in blocks(text, "sh").into_iter().enumerate() {
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
                let out = scratch.join(format!("out-{b}-{i}.json"));
                script.push_str(&format!("{command} > '{}'\n", out.display()));
                outputs.push((commands[i].clone(), out));
            } else {
                script.push_str(&command);
                script.push('\n');
            }
        }
        let run = Command::new("bash").arg("-c").arg(&script).env("TOKEN", token).kill_on_drop(true).output();
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
            answers.push((command, json));
        }
    }
    answers
}

/// The demo catalog `cargo run` seeds.
fn demo_catalog() -> SeedOptions {
    let demo = marquee_gateway::config::Config::default().demo;
    SeedOptions { movies: demo.movies, people: None, seed: demo.seed }
}

#[tokio::test]
async fn every_curl_example_in_the_readme_works_when_pasted() {
    let text = readme();
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let _keyspace = crate::helpers::seed_into(&data, &demo_catalog());
    let setup = setup(&text, dir.path());
    let app = spawn_for_readme(&setup, &data, None).await;

    let answers = run_examples(&text, &app, &setup.token, dir.path()).await;
    for (command, json) in &answers {
        assert!(json.is_object() && json.get("errors").is_none(), "{command}\nanswered {json}");
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
    }
    assert!(answers.len() >= 15, "found {} curl examples", answers.len());
}

/// Replaces the values of write timestamps (`...At`), and the cursors of a user's own lists
/// (they hold the write time), which differ between any two runs.
fn without_timestamps(value: &mut Value) {
    match value {
        Value::Object(map) => {
            for (key, v) in map.iter_mut() {
                if key == "me" {
                    without_cursors(v);
                }
                if key.ends_with("At") && (v.is_string() || v.is_number()) {
                    *v = Value::String("<timestamp>".into());
                } else {
                    without_timestamps(v);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(without_timestamps),
        _ => {}
    }
}

fn without_cursors(value: &mut Value) {
    match value {
        Value::Object(map) => {
            for (key, v) in map.iter_mut() {
                if (key == "cursor" || key == "endCursor") && v.is_string() {
                    *v = Value::String("<cursor>".into());
                } else {
                    without_cursors(v);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(without_cursors),
        _ => {}
    }
}

/// The demo catalog loaded by `gateway seed` into the embedded backend and into a ScyllaDB
/// keyspace (the CQL stand-in, or `SCYLLA_URI`) answers every README example the same.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_readme_example_answers_the_same_on_embedded_and_scylla() {
    let text = readme();
    let dir = tempfile::tempdir().expect("tempdir");
    let (embedded, scylla) = (dir.path().join("embedded"), dir.path().join("scylla"));
    let scylla_store = crate::helpers::scylla_config(&scylla);
    let _embedded = crate::helpers::seed_store(&crate::helpers::embedded_config(&embedded), &demo_catalog());
    let _keyspace = crate::helpers::seed_store(&scylla_store, &demo_catalog());
    let setup = setup(&text, dir.path());
    let on_embedded =
        spawn_for_readme(&setup, &embedded, Some(crate::helpers::embedded_config(&embedded))).await;
    let on_scylla = spawn_for_readme(&setup, &scylla, Some(scylla_store)).await;
    let (first, second) = (dir.path().join("a"), dir.path().join("b"));
    std::fs::create_dir_all(&first).expect("scratch");
    std::fs::create_dir_all(&second).expect("scratch");
    let expected = run_examples(&text, &on_embedded, &setup.token, &first).await;
    let answers = run_examples(&text, &on_scylla, &setup.token, &second).await;
    assert_eq!(expected.len(), answers.len());
    assert!(answers.len() >= 15, "found {} curl examples", answers.len());
    // Token mints answer a new identity each time; everything else must match.
    let graphql = |(command, _): &(String, Value)| !command.contains("/auth/");
    let (expected, answers): (Vec<_>, Vec<_>) =
        (expected.into_iter().filter(graphql).collect(), answers.into_iter().filter(graphql).collect());
    for ((command, mut want), (_, mut got)) in expected.into_iter().zip(answers) {
        without_timestamps(&mut want);
        without_timestamps(&mut got);
        assert!(want.get("errors").is_none(), "{command}\nanswered {want}");
        assert_eq!(got, want, "{command}");
    }
}
