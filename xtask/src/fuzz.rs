//! `cargo xtask fuzz`: runs the fuzz targets in `fuzz/` (cargo-fuzz's layout) for a bounded
//! time on the stable toolchain. It builds them as cargo-fuzz does — libFuzzer with LLVM's
//! coverage instrumentation, `--cfg fuzzing`, debug assertions and overflow checks — minus
//! AddressSanitizer, which needs a nightly compiler (the code under test forbids `unsafe`).
//! The corpus starts from the schema's fixtures (the adversarial documents among them), and a
//! dictionary of GraphQL punctuation and every name in `schema/schema.graphql` steers
//! mutations towards documents the parser accepts. Any crash, assertion, input slower than
//! `--timeout` seconds or run over `--rss-limit-mb` fails the task, leaving the input in
//! `target/fuzz/artifacts/`.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

use anyhow::{Context, bail};
use clap::Args;

/// Options of `cargo xtask fuzz`.
#[derive(Args)]
pub(crate) struct FuzzArgs {
    /// The target (a file in fuzz/fuzz_targets/).
    #[arg(long, default_value = "request")]
    target: String,
    /// How long to fuzz, in seconds.
    #[arg(long, default_value_t = 60)]
    seconds: u64,
    /// Longest one input may take, in seconds.
    #[arg(long, default_value_t = 5)]
    timeout: u64,
    /// Largest resident memory the fuzzing process may reach, in MiB.
    #[arg(long, default_value_t = 1024)]
    rss_limit_mb: u64,
}

impl FuzzArgs {
    /// What `cargo xtask ci` runs: the request target for a minute.
    pub(crate) fn for_ci() -> FuzzArgs {
        FuzzArgs { target: "request".into(), seconds: 60, timeout: 5, rss_limit_mb: 1024 }
    }
}

/// What cargo-fuzz passes to rustc, without `-Zsanitizer`.
const RUSTFLAGS: &[&str] = &[
    "--cfg",
    "fuzzing",
    "-Cpasses=sancov-module",
    "-Cllvm-args=-sanitizer-coverage-level=4",
    "-Cllvm-args=-sanitizer-coverage-inline-8bit-counters",
    "-Cllvm-args=-sanitizer-coverage-pc-table",
    "-Cllvm-args=-sanitizer-coverage-trace-compares",
    "-Cdebug-assertions",
    "-Coverflow-checks",
];

/// Ordinary requests, beside the fixtures, to start the corpus from.
const SEEDS: &[&str] = &[
    "{ movie(id: \"tt0000001\") { title year genres cast(first: 3) { character person { name } } } }",
    "query($q: String!) { search(query: $q, first: 5) { edges { cursor node { id title } } pageInfo { endCursor } } }\0{\"q\":\"the\"}",
    "query B($n: Int = 3) { browse(genre: \"Drama\", sort: RATING, first: $n) { edges { node { title similar { title } } } } }\0{}\0B",
    "{ person(id: \"nm0000001\") { name filmography(first: 2) { edges { node { movie { title } job } } } } }",
    "query A { genres { name } } query B { movies(ids: [\"tt0000002\", \"nope\"]) { ...M } } fragment M on Movie { id ... on Movie { title @include(if: true) } }\0{}\0B",
];

pub(crate) fn run(root: &Path, args: &FuzzArgs) -> anyhow::Result<()> {
    let dir = root.join("target/fuzz");
    let corpus = dir.join("corpus").join(&args.target);
    let artifacts = dir.join("artifacts").join(&args.target);
    std::fs::create_dir_all(&corpus).context("creating the corpus directory")?;
    std::fs::create_dir_all(&artifacts).context("creating the artifacts directory")?;
    seed_corpus(root, &corpus)?;
    let dictionary = dir.join("graphql.dict");
    write_dictionary(root, &dictionary)?;

    let host = host_triple()?;
    let mut build = Command::new("cargo");
    build
        .args(["build", "--release", "--locked", "--bin", &args.target, "--target", &host])
        .arg("--manifest-path")
        .arg(root.join("fuzz/Cargo.toml"))
        .arg("--target-dir")
        .arg(&dir)
        .env("RUSTFLAGS", RUSTFLAGS.join(" "))
        .current_dir(root);
    crate::process::check(build, &format!("cargo build (fuzz target {}, instrumented)", args.target))?;

    let mut fuzz = Command::new(dir.join(&host).join("release").join(&args.target));
    fuzz.arg(&corpus)
        .arg(format!("-max_total_time={}", args.seconds))
        .arg(format!("-timeout={}", args.timeout))
        .arg(format!("-rss_limit_mb={}", args.rss_limit_mb))
        .arg(format!("-dict={}", dictionary.display()))
        .arg(format!("-artifact_prefix={}/", artifacts.display()))
        .arg("-max_len=8192")
        .arg("-print_final_stats=1")
        .current_dir(root);
    let what = format!("fuzz {} for {} s", args.target, args.seconds);
    crate::process::check(fuzz, &what)
        .with_context(|| format!("the failing input is in {}", artifacts.display()))
}

/// Copies every fixture document and the ordinary seeds into the corpus.
fn seed_corpus(root: &Path, corpus: &Path) -> anyhow::Result<()> {
    let mut seeds: Vec<(String, Vec<u8>)> =
        SEEDS.iter().enumerate().map(|(i, s)| (format!("seed-{i}"), s.as_bytes().to_vec())).collect();
    for dir in ["schema/tests/fixtures", "schema/tests/fixtures/adversarial"] {
        for entry in std::fs::read_dir(root.join(dir)).with_context(|| format!("reading {dir}"))? {
            let path = entry?.path();
            if path.extension().is_some_and(|e| e == "graphql") {
                let name = path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
                seeds.push((format!("fixture-{name}"), std::fs::read(&path)?));
            }
        }
    }
    for (name, bytes) in seeds {
        std::fs::write(corpus.join(name), bytes).context("writing a seed")?;
    }
    Ok(())
}

/// GraphQL punctuation and keywords, and every name the schema declares.
fn write_dictionary(root: &Path, path: &Path) -> anyhow::Result<()> {
    let sdl = std::fs::read_to_string(root.join("schema/schema.graphql")).context("reading the schema")?;
    let mut words: BTreeSet<String> = [
        "{",
        "}",
        "(",
        ")",
        "[",
        "]",
        ":",
        "$",
        "!",
        "=",
        "@",
        "...",
        "\"",
        "query",
        "mutation",
        "fragment",
        "on",
        "true",
        "false",
        "null",
        "skip",
        "include",
        "if",
        "__schema",
        "__type",
        "__typename",
        "types",
        "fields",
        "type",
        "ofType",
        "args",
        "name",
        "kind",
        "enumValues",
        "inputFields",
        "interfaces",
        "possibleTypes",
        "directives",
    ]
    .into_iter()
    .map(str::to_owned)
    .collect();
    let mut word = String::new();
    for c in sdl.chars().chain(std::iter::once(' ')) {
        if c.is_ascii_alphanumeric() || c == '_' {
            word.push(c);
        } else if !word.is_empty() {
            if word.chars().next().is_some_and(|f| f.is_ascii_alphabetic()) {
                words.insert(std::mem::take(&mut word));
            }
            word.clear();
        }
    }
    let lines: Vec<String> =
        words.iter().map(|w| format!("\"{}\"", w.replace('\\', "\\\\").replace('"', "\\\""))).collect();
    std::fs::write(path, lines.join("\n") + "\n").context("writing the dictionary")
}

fn host_triple() -> anyhow::Result<String> {
    let out = Command::new("rustc").arg("-vV").output().context("running rustc -vV")?;
    let text = String::from_utf8_lossy(&out.stdout);
    match text.lines().find_map(|l| l.strip_prefix("host: ")) {
        Some(host) => Ok(host.trim().to_owned()),
        None => bail!("rustc -vV printed no host triple"),
    }
}
