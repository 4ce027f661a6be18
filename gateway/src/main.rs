//! The `gateway` binary: parse the command line, load config, start telemetry, run.

// mimalloc: the loaders allocate on one thread and free on another, and the server does the
// same across tokio workers; glibc's allocator spends much of that time in its arenas.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use figment::providers::Serialized;
use marquee_gateway::auth::{Authenticator, generate_pem};
use marquee_gateway::config::{Config, StoreConfig, TelemetryConfig};
use marquee_gateway::startup::{Application, shutdown_signal};
use marquee_gateway::telemetry::traces::Traces;
use marquee_gateway::{delta, dns, progress, store, telemetry};
use marquee_store::bulk::seed::SeedOptions;

/// Marquee: a movie-metadata GraphQL API.
#[derive(Parser)]
#[command(name = "gateway", version, about)]
struct Cli {
    /// TOML config file (e.g. regions/local.toml); env MARQUEE_* and flags override it.
    #[arg(long, global = true)]
    config: Option<PathBuf>,
    /// Data directory of the embedded store (`store.data_dir`) [default: data].
    #[arg(long, global = true)]
    data_dir: Option<PathBuf>,
    #[command(flatten)]
    serve: ServeArgs,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Args, Clone, Default)]
struct ServeArgs {
    /// Address to listen on [default: 127.0.0.1:8080].
    #[arg(long)]
    listen: Option<SocketAddr>,
}

#[derive(Subcommand)]
enum Command {
    /// Serve GraphQL (the default).
    Serve(ServeArgs),
    /// Generate a deterministic demo catalog, replacing the current one.
    Seed {
        /// Number of movies.
        #[arg(long)]
        movies: u64,
        /// Number of people [default: 60% of movies].
        #[arg(long)]
        people: Option<u64>,
        /// Generator seed: same seed, same catalog.
        #[arg(long, default_value_t = 1)]
        seed: u64,
    },
    /// Import a public dataset, replacing the current catalog.
    Import {
        #[command(subcommand)]
        source: ImportSource,
    },
    /// Write the catalog as PostgreSQL COPY files (movie.tsv, person.tsv, credit.tsv).
    Export {
        /// Directory to write into (created if missing; files in it are replaced).
        #[arg(long)]
        out: PathBuf,
    },
    /// Create or upgrade the store's schema (ScyllaDB: the keyspace and tables); idempotent.
    Migrate,
    /// Re-derive the rating totals of every rating written since a time (ScyllaDB: after a
    /// repair, or a partition between regions longer than the reconciler reaches back; the
    /// change log keeps a day).
    Reconcile {
        /// How far back: a duration (`2h`, `90m`) or an RFC 3339 time (`2026-12-06T01:00:00Z`).
        #[arg(long, value_parser = parse_since)]
        since: std::time::SystemTime,
        /// Only compare each total with its ratings, writing nothing; exit status 1 when one
        /// differs.
        #[arg(long)]
        check: bool,
        /// With `--check`, only the totals changed up to this time (a duration ago, or an
        /// RFC 3339 time), e.g. the end of a partition while ratings keep arriving.
        #[arg(long, requires = "check", value_parser = parse_since)]
        until: Option<std::time::SystemTime>,
    },
    /// Manage the catalog's generations in the store.
    Catalog {
        #[command(subcommand)]
        action: CatalogAction,
    },
    /// Print the GraphQL schema (SDL).
    Schema,
    /// Print the configuration the gateway would run with (defaults, file, environment and
    /// flags merged), as JSON; secrets print as `<redacted>`.
    Config {
        /// Instead, check it as `serve` would before starting (nothing is reached): one line
        /// naming what is refused, or `configuration accepted`.
        #[arg(long)]
        check: bool,
    },
    /// Write a new Ed25519 signing key (PKCS#8 PEM) for `auth.signing_key_files`.
    Keygen {
        /// Where to write it (refuses to overwrite).
        #[arg(long)]
        out: PathBuf,
    },
    /// Mint a development user token with the configured signing key (needs auth.dev_tokens).
    Token {
        /// The user id (token subject).
        #[arg(long)]
        user: String,
        /// Lifetime, e.g. `30m`, `12h`.
        #[arg(long, default_value = "1h", value_parser = humantime::parse_duration)]
        ttl: std::time::Duration,
        /// An editor's token (`role: editor`): may also run the editors' mutations.
        #[arg(long)]
        editor: bool,
    },
}

#[derive(Subcommand)]
enum CatalogAction {
    /// Remove the generations every gateway has left (ScyllaDB: each load writes a whole new
    /// generation; the old ones stay until this removes them): those older than the current
    /// one once it has been published for `--grace`, and unfinished loads that have neither
    /// started nor made progress within `--grace`. Never the current one.
    Gc {
        /// How long a superseded generation is kept, e.g. `24h`, `30m`.
        #[arg(long, default_value = "24h", value_parser = humantime::parse_duration)]
        grace: std::time::Duration,
        /// Only list what would be removed.
        #[arg(long)]
        dry_run: bool,
    },
}

#[derive(Subcommand)]
enum ImportSource {
    /// IMDb's TSV files (title.basics, title.ratings, title.principals, name.basics; .tsv or .tsv.gz).
    Imdb {
        /// Directory holding the files.
        #[arg(long)]
        dir: PathBuf,
        /// Apply a delta to the catalog being served instead of replacing it: the files hold
        /// only the rows of the titles and people that changed, plus `removed.tsv` (removed
        /// ids). See docs/operating.md, "The daily catalog update".
        #[arg(long)]
        incremental: bool,
        /// With --incremental on an embedded store served by a running gateway: how long to
        /// wait for that gateway to apply the delta, e.g. `10m`.
        #[arg(long, default_value = "10m", value_parser = humantime::parse_duration)]
        wait: std::time::Duration,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match &cli.command {
        // No configuration needed.
        Some(Command::Schema) => schema(),
        Some(Command::Keygen { out }) => keygen(out),
        // The configuration only.
        Some(Command::Config { check }) => print_config(&load_config(&cli)?, *check),
        Some(Command::Token { user, ttl, editor }) => token(&load_config(&cli)?, user, *ttl, *editor).await,
        // The store.
        Some(Command::Reconcile { since, check, until }) => {
            reconcile(&store_config(&cli).await?.0, *since, *check, *until).await
        }
        Some(Command::Catalog { action: CatalogAction::Gc { grace, dry_run } }) => {
            catalog_gc(&store_config(&cli).await?.0, *grace, *dry_run).await
        }
        Some(Command::Migrate) => migrate(&store_config(&cli).await?.0).await,
        Some(Command::Seed { movies, people, seed }) => {
            let options = SeedOptions { movies: *movies, people: *people, seed: *seed };
            seed_catalog(&store_config(&cli).await?.0, options).await
        }
        Some(Command::Import { source: ImportSource::Imdb { dir, incremental: false, .. } }) => {
            import_imdb(&store_config(&cli).await?.0, dir.clone()).await
        }
        Some(Command::Import { source: ImportSource::Imdb { dir, incremental: true, wait } }) => {
            import_delta(&store_config(&cli).await?.0, dir, *wait).await
        }
        Some(Command::Export { out }) => export(&store_config(&cli).await?.0, out.clone()).await,
        Some(Command::Serve(_)) | None => {
            let (config, traces) = store_config(&cli).await?;
            let served = serve(config).await;
            if let Some(traces) = traces {
                traces.shutdown().await;
            }
            served
        }
    }
}

/// The configuration of a command that reaches the store: loaded, its settings checked (a
/// refused one stops the command before it reaches the store, in one line), logging started
/// (and, for `serve`, trace export when `[telemetry]` sets an endpoint), and the store's
/// contact points resolved.
async fn store_config(cli: &Cli) -> anyhow::Result<(Config, Option<Traces>)> {
    let mut config = load_config(cli)?;
    let serving = matches!(cli.command, None | Some(Command::Serve(_)));
    config.check(serving)?;
    let telemetry = if serving { config.telemetry.clone() } else { TelemetryConfig::default() };
    let traces = telemetry::init_tracing(&config.log, &telemetry, &config.region)?;
    dns::resolve_contact_points(&mut config.store, &config.dns).await?;
    Ok((config, traces))
}

/// `gateway schema`: the SDL.
fn schema() -> anyhow::Result<()> {
    print!("{}", marquee_schema::sdl());
    Ok(())
}

/// `gateway keygen --out FILE`.
fn keygen(out: &std::path::Path) -> anyhow::Result<()> {
    write_new_key(out)?;
    println!("wrote a new signing key to {}; list it first in auth.signing_key_files", out.display());
    Ok(())
}

/// The configuration: defaults, the file, the environment, then the flags.
fn load_config(cli: &Cli) -> anyhow::Result<Config> {
    let serve = match &cli.command {
        Some(Command::Serve(args)) => args.clone(),
        _ => cli.serve.clone(),
    };
    let mut overrides = serde_json::Map::new();
    if let Some(dir) = &cli.data_dir {
        overrides.insert("store".into(), serde_json::json!({ "data_dir": dir.display().to_string() }));
    }
    if let Some(listen) = serve.listen {
        overrides.insert("listen".into(), listen.to_string().into());
    }
    match Config::load(cli.config.as_deref(), Serialized::defaults(overrides.into())) {
        Err(error) if cli.data_dir.is_some() && store_is_not_embedded(cli) => Err(anyhow::Error::new(error)
            .context("--data-dir is the embedded store's directory, and this configuration's [store] is another backend")),
        loaded => Ok(loaded?),
    }
}

/// `gateway config [--check]`.
fn print_config(config: &Config, check: bool) -> anyhow::Result<()> {
    if check {
        config.check(true)?;
        println!("configuration accepted");
    } else {
        println!("{}", serde_json::to_string_pretty(config)?);
    }
    Ok(())
}

/// `gateway token --user ID [--editor]`: a development user (or editor) token signed with the
/// configured key.
async fn token(config: &Config, user: &str, ttl: std::time::Duration, editor: bool) -> anyhow::Result<()> {
    if config.auth.signing_key_files.is_empty() && config.auth.signing_keys.is_none() {
        anyhow::bail!(
            "auth.signing_keys and auth.signing_key_files are unset: a token signed now would verify nowhere"
        );
    }
    let auth = Authenticator::new(&config.auth).await?;
    let issued = if editor { auth.issue_dev_editor(user, ttl)? } else { auth.issue_dev_user(user, ttl)? };
    println!("{}", issued.token);
    Ok(())
}

/// `gateway reconcile --since T [--check [--until T]]`.
async fn reconcile(
    config: &Config,
    since: std::time::SystemTime,
    check: bool,
    until: Option<std::time::SystemTime>,
) -> anyhow::Result<()> {
    let unix_ms = |t: &std::time::SystemTime| {
        t.duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
    };
    let check = check.then(|| until.as_ref().map_or(u64::MAX, unix_ms));
    let (report, exact) =
        store::reconcile(&config.store, unix_ms(&since), check).await.context("reconciling rating totals")?;
    println!("{report}");
    if !exact {
        anyhow::bail!("rating totals differ from their ratings: `gateway reconcile --since` re-derives them");
    }
    Ok(())
}

/// `gateway catalog gc [--grace D] [--dry-run]`.
async fn catalog_gc(config: &Config, grace: std::time::Duration, dry_run: bool) -> anyhow::Result<()> {
    let report = store::collect_generations(&config.store, grace, dry_run)
        .await
        .context("removing old catalog generations")?;
    println!("{report}");
    Ok(())
}

/// `gateway migrate`.
async fn migrate(config: &Config) -> anyhow::Result<()> {
    println!("{}", store::migrate(&config.store).await.context("migrating the store's schema")?);
    Ok(())
}

/// `gateway seed --movies N`.
async fn seed_catalog(config: &Config, options: SeedOptions) -> anyhow::Result<()> {
    let target = store::bulk(&config.store);
    let location = target.location();
    let stats = tokio::task::spawn_blocking(move || progress::seed(target.as_ref(), &options)).await??;
    println!("seeded {} movies and {} people into {location}", stats.movies, stats.people);
    Ok(())
}

/// `gateway import imdb --dir DIR`.
async fn import_imdb(config: &Config, dir: PathBuf) -> anyhow::Result<()> {
    let target = store::bulk(&config.store);
    let report = tokio::task::spawn_blocking(move || progress::import_imdb(target.as_ref(), &dir)).await??;
    print!("{report}");
    Ok(())
}

/// `gateway import imdb --dir DIR --incremental`: applies the delta to the store itself, or
/// hands it to the gateway that holds an embedded data directory (`marquee_gateway::delta`).
/// On ScyllaDB every apply is listed in the catalog's change log, which every region's
/// gateways follow to drop what it changed from their caches and edges.
async fn import_delta(
    config: &Config,
    dir: &std::path::Path,
    wait: std::time::Duration,
) -> anyhow::Result<()> {
    let store = match store::open(&config.store).await {
        Ok(store) => store,
        Err(error) if delta::is_held_by_a_gateway(&error) => {
            let StoreConfig::Embedded(embedded) = &config.store else { return Err(error.into()) };
            println!("a running gateway serves {}; handing the delta to it", embedded.data_dir.display());
            print!("{}", delta::hand_over(dir, &embedded.data_dir, wait).await?);
            return Ok(());
        }
        Err(error) => return Err(error.into()),
    };
    let editor = std::env::var("USER").ok().filter(|u| !u.is_empty()).unwrap_or_else(|| "operator".into());
    let edit = marquee_store::Edit { editor, action: "import imdb --incremental".into() };
    let mut logged = std::time::Instant::now();
    // Nobody is served from an embedded directory a command can open: the delta takes what it
    // needs. A shared store has one writer at a time across regions: the delta rests as long
    // as each unit took, so an editor's change waiting for the lock gets it between units.
    let share =
        if matches!(config.store, StoreConfig::Embedded(_)) { delta::Share::ALL } else { delta::Share::HALF };
    let report = delta::apply(dir, store.edits.as_ref(), edit, share, &mut |done, units| {
        if done == units || logged.elapsed() >= std::time::Duration::from_secs(2) {
            logged = std::time::Instant::now();
            tracing::info!(done, units, "applying the delta");
        }
    })
    .await;
    store.lifecycle.close().await?;
    print!("{}", report?);
    Ok(())
}

/// `gateway export --out DIR`.
async fn export(config: &Config, out: PathBuf) -> anyhow::Result<()> {
    let target = store::bulk(&config.store);
    let location = target.location();
    let stats = tokio::task::spawn_blocking(move || progress::export(target.as_ref(), &out)).await??;
    println!(
        "exported {} movies, {} people and {} credits from {location}",
        stats.movies, stats.people, stats.credits
    );
    Ok(())
}

/// `gateway serve` (the default): the demo catalog seeded into an embedded store that has
/// none, then serving until SIGTERM or Ctrl-C.
async fn serve(config: Config) -> anyhow::Result<()> {
    let target = store::bulk(&config.store);
    let location = target.location();
    // The demo catalog is seeded into the embedded store only: a shared store is the whole
    // deployment's, loaded by an explicit `seed` or `import`.
    if matches!(config.store, StoreConfig::Embedded(_)) {
        let (movies, seed) = (config.demo.movies, config.demo.seed);
        tokio::task::spawn_blocking(move || progress::ensure_catalog(target.as_ref(), movies, seed))
            .await?
            .context("preparing the catalog")?;
    } else if !tokio::task::spawn_blocking(move || target.has_catalog()).await?? {
        anyhow::bail!(
            "no current catalog in {location}: `serve` never seeds a shared store; load one first \
             with `gateway seed --movies N` or `gateway import imdb --dir DIR`"
        );
    }
    let app = Application::build(config).await.context("starting the gateway")?;
    println!("Marquee is serving GraphQL; GraphiQL: http://{}/graphql", app.local_addr());
    app.run_until_stopped(shutdown_signal()).await.context("serving")?;
    Ok(())
}

/// Whether the configuration, without command-line overrides, loads with a backend other than
/// the embedded one (to explain why `--data-dir` was refused).
fn store_is_not_embedded(cli: &Cli) -> bool {
    Config::load(
        cli.config.as_deref(),
        Serialized::defaults(serde_json::Value::Object(serde_json::Map::new())),
    )
    .is_ok_and(|config| !matches!(config.store, StoreConfig::Embedded(_)))
}

/// Writes a new key to `path`, readable by its owner only.
fn write_new_key(path: &std::path::Path) -> anyhow::Result<()> {
    use std::io::Write;
    let pem = generate_pem()?;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(path).with_context(|| format!("creating {}", path.display()))?;
    file.write_all(pem.as_bytes())?;
    file.sync_all()?;
    Ok(())
}

/// `--since`: a duration before now, or an RFC 3339 time; refused when in the future or more
/// than a day ago (the change log keeps a day).
fn parse_since(text: &str) -> Result<std::time::SystemTime, String> {
    let now = std::time::SystemTime::now();
    let since = match humantime::parse_duration(text) {
        Ok(ago) => now.checked_sub(ago).ok_or("too far back")?,
        Err(_) => humantime::parse_rfc3339_weak(text)
            .map_err(|e| format!("`{text}` is neither a duration (2h) nor an RFC 3339 time: {e}"))?,
    };
    match now.duration_since(since) {
        Err(_) => Err(format!("`{text}` is in the future")),
        Ok(ago) if ago > std::time::Duration::from_secs(86_400) => {
            Err(format!("`{text}` is more than a day ago: the change log keeps a day"))
        }
        Ok(_) => Ok(since),
    }
}
