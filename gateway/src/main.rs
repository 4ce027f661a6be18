//! The `gateway` binary: parse the command line, load config, start telemetry, run.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use figment::providers::Serialized;
use marquee_gateway::config::Config;
use marquee_gateway::startup::{Application, shutdown_signal};
use marquee_gateway::{catalog, telemetry};
use marquee_store::catalog::seed::SeedOptions;

/// Marquee: a movie-metadata GraphQL API.
/// mimalloc: the loaders allocate on one thread and free on another, and the server does the
/// same across tokio workers; glibc's allocator spends much of that time in its arenas.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(name = "gateway", version, about)]
struct Cli {
    /// TOML config file (e.g. regions/local.toml); env MARQUEE_* and flags override it.
    #[arg(long, global = true)]
    config: Option<PathBuf>,
    /// Data directory of the embedded store [default: data].
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
    /// Print the GraphQL schema (SDL).
    Schema,
}

#[derive(Subcommand)]
enum ImportSource {
    /// IMDb's TSV files (title.basics, title.ratings, title.principals, name.basics; .tsv or .tsv.gz).
    Imdb {
        /// Directory holding the files.
        #[arg(long)]
        dir: PathBuf,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let serve = match &cli.command {
        Some(Command::Schema) => {
            print!("{}", marquee_schema::sdl());
            return Ok(());
        }
        Some(Command::Serve(args)) => args.clone(),
        _ => cli.serve.clone(),
    };
    let mut overrides = serde_json::Map::new();
    if let Some(dir) = &cli.data_dir {
        overrides.insert("data_dir".into(), dir.display().to_string().into());
    }
    if let Some(listen) = serve.listen {
        overrides.insert("listen".into(), listen.to_string().into());
    }
    let config = Config::load(cli.config.as_deref(), Serialized::defaults(overrides.into()))?;
    telemetry::init_tracing(&config.log);
    let data_dir = config.data_dir.clone();
    match cli.command {
        Some(Command::Seed { movies, people, seed }) => {
            let stats = tokio::task::spawn_blocking(move || {
                catalog::seed(&data_dir, &SeedOptions { movies, people, seed })
            })
            .await??;
            println!(
                "seeded {} movies and {} people into {}",
                stats.movies,
                stats.people,
                config.data_dir.display()
            );
        }
        Some(Command::Import { source: ImportSource::Imdb { dir } }) => {
            let report = tokio::task::spawn_blocking(move || catalog::import_imdb(&dir, &data_dir)).await??;
            print!("{report}");
        }
        Some(Command::Schema) => {}
        Some(Command::Serve(_)) | None => {
            let (movies, seed) = (config.demo.movies, config.demo.seed);
            tokio::task::spawn_blocking(move || catalog::ensure_catalog(&data_dir, movies, seed))
                .await?
                .context("preparing the catalog")?;
            let app = Application::build(config).await.context("starting the gateway")?;
            println!("Marquee is serving GraphQL; GraphiQL: http://{}/graphql", app.local_addr());
            app.run_until_stopped(shutdown_signal()).await.context("serving")?;
        }
    }
    Ok(())
}
