//! The services xtask runs in the foreground for the rig and for developers: a Redis Cluster
//! (`cargo xtask redis-cluster`) and the CQL stand-in (`cargo xtask cql-server`), each until
//! Ctrl-C or SIGTERM, its processes stopped by PID.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};

use crate::system;

/// TLS for the CQL stand-in (clients then set `[store] tls_ca_file`).
#[derive(clap::Args)]
pub(crate) struct CqlTls {
    /// Serve CQL over TLS with this certificate chain (PEM)...
    #[arg(long, requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// ...and its private key (PEM).
    #[arg(long, requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Require client certificates signed by this CA (PEM).
    #[arg(long, requires = "tls_cert")]
    tls_client_ca: Option<PathBuf>,
}

/// Runs a Redis Cluster until Ctrl-C or SIGTERM, then stops its nodes by PID.
pub(crate) fn redis_cluster(
    root: &Path,
    masters: usize,
    port: Option<u16>,
    dir: Option<PathBuf>,
    security: &marquee_redis_cluster::Security,
) -> anyhow::Result<()> {
    system::ensure_redis()?;
    let cluster = match port {
        None => marquee_redis_cluster::RedisCluster::start_secured(masters, security),
        Some(first) => {
            let ports: Vec<u16> = (0..masters)
                .map(|i| u16::try_from(i).ok().and_then(|i| first.checked_add(i)))
                .collect::<Option<_>>()
                .context("--port: the masters' ports run past 65535")?;
            // A fresh cluster each time: nodes keep their cluster state in their directory
            // (its certificates stay, so clients that trust its CA reconnect).
            let dir = dir.unwrap_or_else(|| root.join("target/redis-cluster").join(first.to_string()));
            if let Ok(entries) = std::fs::read_dir(&dir) {
                for entry in entries.flatten() {
                    if entry.file_name().to_string_lossy().starts_with("node-") {
                        let _ = std::fs::remove_dir_all(entry.path());
                    }
                }
            }
            marquee_redis_cluster::RedisCluster::start_on(&ports, &dir, security)
        }
    }
    .map_err(anyhow::Error::msg)?;
    println!("Redis Cluster of {masters} masters, seeds: {}", cluster.seeds().join(", "));
    if let Some(ca) = cluster.ca_file() {
        println!("TLS only; the nodes' CA: {}", ca.display());
    }
    println!("node PIDs: {:?}", cluster.pids());
    let runtime = tokio::runtime::Runtime::new().context("starting the runtime")?;
    runtime.block_on(async {
        let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = terminate.recv() => {}
        }
        anyhow::Ok(())
    })?;
    drop(cluster);
    println!("stopped");
    Ok(())
}

/// Serves the CQL stand-in on every `listen` address (the same data on each, reporting its
/// `dc`) until Ctrl-C or SIGTERM.
pub(crate) fn cql_server(
    listen: &[std::net::SocketAddr],
    dcs: &[String],
    tls: &CqlTls,
) -> anyhow::Result<()> {
    let dc_of = |i: usize| -> anyhow::Result<&str> {
        match dcs {
            [one] => Ok(one),
            many if many.len() == listen.len() => Ok(&many[i]),
            _ => bail!(
                "give one --dc, or one per --listen ({} addresses, {} data centers)",
                listen.len(),
                dcs.len()
            ),
        }
    };
    let node = marquee_cql_standin::StandIn::new(dc_of(0)?).map_err(anyhow::Error::msg)?;
    let tls = match (&tls.tls_cert, &tls.tls_key) {
        (Some(cert), Some(key)) => Some(
            marquee_cql_standin::server_config(cert, key, tls.tls_client_ca.as_deref())
                .map_err(anyhow::Error::msg)?,
        ),
        _ => None,
    };
    let mut nodes = Vec::new();
    for (i, &addr) in listen.iter().enumerate() {
        nodes.push((addr, node.in_data_center(dc_of(i)?)));
    }
    let runtime = tokio::runtime::Runtime::new().context("starting the runtime")?;
    runtime.block_on(async move {
        let mut served = tokio::task::JoinSet::new();
        for (addr, node) in nodes {
            let listener =
                tokio::net::TcpListener::bind(addr).await.with_context(|| format!("listening on {addr}"))?;
            let over = if tls.is_some() { " over TLS" } else { "" };
            println!(
                "CQL stand-in (data center {}) listening on {}{over}",
                node.data_center(),
                listener.local_addr()?
            );
            let tls = tls.clone();
            served.spawn(async move {
                match tls {
                    Some(tls) => node.serve_tls(listener, tls).await,
                    None => node.serve(listener).await,
                }
            });
        }
        let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        tokio::select! {
            Some(ended) = served.join_next() => ended.context("serving CQL")?.context("serving CQL")?,
            _ = tokio::signal::ctrl_c() => {}
            _ = terminate.recv() => {}
        }
        Ok(())
    })
}
