//! The real `gateway` binary: first start seeds the demo catalog and prints the GraphiQL URL,
//! SIGTERM stops it cleanly, and the CLI's other commands work.

use std::process::{Command, Stdio};

use serde_json::{Value, json};

use crate::helpers::{BIN, gateway_command, isolated, served_url};

#[tokio::test]
async fn first_start_seeds_serves_and_stops_on_sigterm() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut child = gateway_command()
        .args(["--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path().join("data"))
        .env("MARQUEE_DEMO__MOVIES", "500")
        .env("MARQUEE_REGION", "binary-test")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("gateway starts");
    let url = served_url(&mut child).await;
    assert!(url.ends_with("/graphql"), "{url}");

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
    let bulk = marquee_gateway::store::bulk(&crate::helpers::store_config(&dir.path().join("data")));
    assert!(bulk.has_catalog().expect("look"), "the demo catalog stays for the next start");
}

/// Removes ANSI escape sequences (`ESC [ … letter`) from `text`.
fn strip_ansi(text: &str) -> String {
    let mut out = String::new();
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' && chars.peek() == Some(&'[') {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

#[test]
fn logs_written_to_a_file_have_no_colour_codes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = gateway_command()
        .args(["seed", "--movies", "200", "--data-dir"])
        .arg(dir.path())
        .output()
        .expect("runs");
    assert!(out.status.success());
    let logs = String::from_utf8(out.stderr).expect("utf8");
    assert!(logs.contains("load phase finished"), "{logs}");
    assert!(!logs.contains('\u{1b}'), "no escape sequences in logs that are not on a terminal: {logs:?}");
    // A phase of unknown size that counts nothing (building indexes) logs no made-up zeros.
    let indexes: Vec<&str> = logs.lines().filter(|l| l.contains("phase=\"indexes\"")).collect();
    assert_eq!(indexes.len(), 2, "started and finished: {logs}");
    assert!(indexes.iter().all(|l| !l.contains("total=") && !l.contains("done=")), "{indexes:?}");
    assert!(logs.lines().any(|l| l.contains("phase=\"movies\"") && l.contains("done=200")), "{logs}");
}

#[test]
fn on_a_terminal_log_lines_start_on_their_own_line_beside_progress_bars() {
    // `script` (util-linux) runs the command on a pseudo-terminal and records what it drew.
    let dir = tempfile::tempdir().expect("tempdir");
    let record = dir.path().join("terminal.out");
    let command = format!("{BIN} seed --movies 3000 --data-dir {}", dir.path().join("data").display());
    let status = isolated(&mut Command::new("script"))
        .args(["-q", "-e", "-c", &command])
        .arg(&record)
        .stdout(Stdio::null())
        .status()
        .expect("script (util-linux) runs");
    assert!(status.success());
    let drawn = std::fs::read_to_string(&record).expect("recorded");
    let mut log_lines = 0;
    for (at, _) in drawn.match_indices("load phase") {
        // What the terminal shows on this row before the log line: everything since the last
        // newline, minus anything a clear-line (ESC [2K) erased, minus colours.
        let row = &drawn[..at];
        let row = &row[row.rfind('\n').map_or(0, |i| i + 1)..];
        let row = &row[row.rfind("\u{1b}[2K").map_or(0, |i| i + 4)..];
        let shown = strip_ansi(row);
        let shown = shown.trim_start_matches('\r');
        let timestamp = shown.split_whitespace().next().unwrap_or_default();
        assert!(
            timestamp.len() >= 20
                && timestamp.ends_with('Z')
                && shown.trim_end().ends_with("marquee_gateway::progress:"),
            "a log line shares its row with {shown:?}"
        );
        log_lines += 1;
    }
    assert!(log_lines >= 6, "started and finished lines for each phase: {drawn:?}");
}

#[test]
fn schema_command_prints_the_checked_in_sdl() {
    let out = gateway_command().arg("schema").output().expect("runs");
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
    let out = gateway_command()
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
    let out = gateway_command()
        .args(["seed", "--movies", "300", "--seed", "5", "--data-dir"])
        .arg(dir.path())
        .output()
        .expect("runs");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("seeded 300 movies"));
}

#[test]
fn data_dir_with_another_backend_says_why_it_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("scylla.toml");
    std::fs::write(&config, "[store]\nbackend = \"scylla\"\nreplication = { datacenter1 = 1 }\n")
        .expect("config");
    let out = gateway_command()
        .arg("--config")
        .arg(&config)
        .args(["migrate", "--data-dir"])
        .arg(dir.path())
        .output()
        .expect("runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains("--data-dir is the embedded store's directory"), "{stderr}");
}

/// One `COPY` text-format line back into its columns (`None` for `\N`).
fn copy_columns(line: &str) -> Vec<Option<String>> {
    line.split('\t')
        .map(|field| {
            (field != "\\N").then(|| {
                let mut out = String::new();
                let mut chars = field.chars();
                while let Some(c) = chars.next() {
                    if c == '\\' {
                        match chars.next() {
                            Some('t') => out.push('\t'),
                            Some('n') => out.push('\n'),
                            Some('r') => out.push('\r'),
                            Some(other) => out.push(other),
                            None => {}
                        }
                    } else {
                        out.push(c);
                    }
                }
                out
            })
        })
        .collect()
}

#[test]
fn export_writes_the_catalog_as_copy_files_row_for_row() {
    use marquee_store::bulk::seed::{Generator, SeedOptions};

    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let seed = gateway_command()
        .args(["seed", "--movies", "400", "--seed", "3", "--data-dir"])
        .arg(&data)
        .output()
        .expect("runs");
    assert!(seed.status.success(), "{}", String::from_utf8_lossy(&seed.stderr));
    let out_dir = dir.path().join("export");
    let export =
        gateway_command().args(["export", "--out"]).arg(&out_dir).arg("--data-dir").arg(&data).output();
    let export = export.expect("runs");
    assert!(export.status.success(), "{}", String::from_utf8_lossy(&export.stderr));

    let read = |name: &str| std::fs::read_to_string(out_dir.join(name)).expect("file written");
    let (movies, people, credits) = (read("movie.tsv"), read("person.tsv"), read("credit.tsv"));
    let options = SeedOptions { movies: 400, people: None, seed: 3 };
    let generator = Generator::new(&options);
    assert_eq!(people.lines().count() as u64, options.people());
    assert_eq!(movies.lines().count(), 400);
    let expected_credits: usize = (0..400).map(|i| generator.movie(i).credits.len()).sum();
    assert_eq!(credits.lines().count(), expected_credits);
    assert!(
        String::from_utf8_lossy(&export.stdout).contains(&format!(
            "exported 400 movies, {} people and {expected_credits} credits",
            options.people()
        )),
        "{}",
        String::from_utf8_lossy(&export.stdout)
    );

    // Every movie row and its credits say what the catalog says, in billing order.
    let credit_rows: Vec<Vec<Option<String>>> = credits.lines().map(copy_columns).collect();
    for (index, line) in movies.lines().enumerate() {
        let record = generator.movie(index as u64);
        let row = copy_columns(line);
        assert_eq!(row.len(), 13, "{line}");
        assert_eq!(row[0].as_deref(), Some(record.movie.id.to_string().as_str()));
        assert_eq!(row[1].as_deref(), Some(record.movie.title.as_str()));
        assert_eq!(row[2], record.movie.original_title);
        assert_eq!(row[3], record.movie.year.map(|y| y.to_string()));
        let genres: Vec<String> = record.movie.genres.iter().map(|g| format!("\"{}\"", g.name())).collect();
        assert_eq!(row[6], Some(format!("{{{}}}", genres.join(","))));
        let mine: Vec<_> = credit_rows.iter().filter(|c| c[0] == row[0]).collect();
        assert_eq!(mine.len(), record.credits.len());
        for (order, (credit, expected)) in mine.iter().zip(&record.credits).enumerate() {
            assert_eq!(credit[1], Some(order.to_string()));
            assert_eq!(credit[2], Some(expected.person.to_string()));
            assert_eq!(credit[3].as_deref() == Some("Acting"), expected.is_cast());
            assert_eq!(credit[4].as_deref(), Some(expected.role.as_str()));
        }
    }
    let first_person = copy_columns(people.lines().next().expect("a person"));
    let expected = generator.person(0);
    assert_eq!(first_person[0], Some(expected.id.to_string()));
    assert_eq!(first_person[1], Some(expected.name));
    assert_eq!(first_person[2], expected.birth_year.map(|y| y.to_string()));
}

/// Over a shared store, `gateway serve` refuses to start with what would run broken or unsafe:
/// one line naming the setting on stderr, a failed exit, and nothing written to the store.
#[tokio::test]
async fn serving_a_shared_store_refuses_unsafe_settings_and_never_seeds_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = crate::helpers::scylla_config(dir.path());
    let marquee_gateway::config::StoreConfig::Scylla(options) = &store else { unreachable!() };
    let key = marquee_gateway::auth::generate_pem().expect("key");
    // A map in the environment is written as TOML's inline table.
    let replication: String =
        options.replication.iter().map(|(dc, rf)| format!("{dc}={rf}")).collect::<Vec<_>>().join(",");
    let replication = format!("{{{replication}}}");
    let gateway = |command: &str, settings: &[(&str, &str)]| {
        let mut gateway = gateway_command();
        gateway
            .arg(command)
            .env("MARQUEE_LISTEN", "127.0.0.1:0")
            .env("MARQUEE_STORE__BACKEND", "scylla")
            .env(
                "MARQUEE_STORE__CONTACT_POINTS",
                serde_json::to_string(&options.contact_points).expect("json"),
            )
            .env("MARQUEE_STORE__KEYSPACE", &options.keyspace)
            .env("MARQUEE_STORE__LOCAL_DC", &options.local_dc)
            .env("MARQUEE_STORE__REPLICATION", replication.as_str())
            .env("MARQUEE_STORE__AWAIT_SCHEMA_AGREEMENT", options.await_schema_agreement.to_string())
            .env("MARQUEE_DEMO__MOVIES", "500")
            // The driver's own log lines are not what is checked here, nor a backtrace that a
            // developer's environment asks for.
            .env("MARQUEE_LOG__FILTER", "off")
            .env_remove("RUST_BACKTRACE")
            .env_remove("RUST_LIB_BACKTRACE");
        for (name, value) in settings {
            gateway.env(name, value);
        }
        gateway.stdout(Stdio::null()).output().expect("gateway runs")
    };
    let refused = |out: std::process::Output, names: &str, why: &str| {
        assert!(!out.status.success(), "{why}: refused");
        let stderr = String::from_utf8_lossy(&out.stderr);
        let error: Vec<&str> = stderr.lines().filter(|l| l.starts_with("Error: ")).collect();
        assert_eq!(error.len(), 1, "{why}: one error line: {stderr}");
        assert!(error[0].contains(names), "{why}: the line names {names}: {stderr}");
        assert_eq!(
            stderr.lines().filter(|l| !l.trim().is_empty()).count(),
            1,
            "{why}: nothing else: {stderr}"
        );
    };
    let keys = ("MARQUEE_AUTH__SIGNING_KEYS", key.as_str());

    refused(gateway("serve", &[]), "auth.signing_keys", "no signing keys over a shared store");
    refused(
        gateway("serve", &[keys, ("MARQUEE_AUTH__DEV_TOKENS", "true")]),
        "auth.dev_tokens",
        "development tokens in production",
    );
    refused(
        gateway("serve", &[keys, ("MARQUEE_STORE__PASSWORD", "secret")]),
        "store.username",
        "a password without a user name",
    );
    refused(
        gateway("migrate", &[("MARQUEE_STORE__CONTACT_POINTS", "[\"127.0.0.1:9142\"]")]),
        "store.tls_ca",
        "the TLS port with TLS off",
    );
    let migrated = gateway("migrate", &[]);
    assert!(migrated.status.success(), "{}", String::from_utf8_lossy(&migrated.stderr));
    let empty = gateway("serve", &[keys]);
    refused(empty, "never seeds a shared store", "no catalog, and demo.movies set");
    let bulk = marquee_gateway::store::bulk(&store);
    let seeded = tokio::task::spawn_blocking(move || bulk.has_catalog()).await.expect("task").expect("look");
    assert!(!seeded, "serve wrote no catalog into the shared store");
}
