//! Name resolution for the names in a gateway's own configuration (the Redis Cluster's seeds),
//! through hickory-resolver: the system's resolvers (`/etc/resolv.conf`), or the servers in
//! `[dns] servers` (the local rig points them at its PowerDNS). A name is resolved again
//! whenever the client reconnects, and answers are kept for their TTL, so a seed whose address
//! moves is followed.
//!
//! The ScyllaDB driver resolves contact points with the system resolver and has no hook for
//! another one. With `[dns] servers` set, the gateway resolves the contact points' names
//! itself when it starts ([`resolve_contact_points`]) and hands the driver addresses; the
//! driver only needs them to find the cluster, and learns every node's address from it. (With
//! TLS, set `store.tls_server_name`: the certificate is then checked against that name, not
//! the address.)

use std::net::SocketAddr;

use fred::bytes_utils::Str;
use fred::error::{Error as FredError, ErrorKind};
use hickory_resolver::config::{NameServerConfig, ResolverConfig, ResolverOpts};
use hickory_resolver::name_server::TokioConnectionProvider;
use hickory_resolver::proto::xfer::Protocol;
use hickory_resolver::{Resolver, TokioResolver};

use crate::config::{DnsConfig, StoreConfig};

/// Why the resolver could not be set up.
#[derive(Debug, thiserror::Error)]
#[error("dns: {0}")]
pub struct DnsConfigError(String);

/// The resolver `config` describes.
pub fn resolver(config: &DnsConfig) -> Result<TokioResolver, DnsConfigError> {
    let builder = if config.servers.is_empty() {
        Resolver::builder_tokio()
            .map_err(|e| DnsConfigError(format!("reading the system's resolver settings: {e}")))?
    } else {
        let mut resolvers = ResolverConfig::new();
        for &server in &config.servers {
            resolvers.add_name_server(NameServerConfig::new(server, Protocol::Udp));
        }
        // Servers on the gateway's own network: an answer is quick or not coming.
        let mut options = ResolverOpts::default();
        options.timeout = std::time::Duration::from_secs(2);
        options.attempts = 1;
        Resolver::builder_with_config(resolvers, TokioConnectionProvider::default()).with_options(options)
    };
    Ok(builder.build())
}

/// With `[dns] servers` set, `store.contact_points` named `host:port` are replaced by the
/// addresses the servers give (every address of each name); otherwise they are left to the
/// driver.
pub async fn resolve_contact_points(
    store: &mut StoreConfig,
    config: &DnsConfig,
) -> Result<(), DnsConfigError> {
    let StoreConfig::Scylla(options) = store else { return Ok(()) };
    if config.servers.is_empty() {
        return Ok(());
    }
    let resolver = resolver(config)?;
    let mut resolved = Vec::new();
    for point in &options.contact_points {
        let Some((host, port)) =
            point.rsplit_once(':').filter(|(host, _)| host.parse::<std::net::IpAddr>().is_err())
        else {
            resolved.push(point.clone());
            continue;
        };
        let lookup = resolver
            .lookup_ip(host)
            .await
            .map_err(|e| DnsConfigError(format!("resolving store.contact_points `{point}`: {e}")))?;
        let port: u16 = port.parse().map_err(|_| {
            DnsConfigError(format!("store.contact_points `{point}`: the port is not a number"))
        })?;
        resolved.extend(lookup.iter().map(|ip| SocketAddr::new(ip, port).to_string()));
    }
    options.contact_points = resolved;
    Ok(())
}

/// The resolver as fred's: seeds named `host:port` resolve through it.
pub struct FredResolver(pub TokioResolver);

#[async_trait::async_trait]
impl fred::types::Resolve for FredResolver {
    async fn resolve(&self, host: Str, port: u16) -> Result<Vec<SocketAddr>, FredError> {
        if let Ok(ip) = host.parse() {
            return Ok(vec![SocketAddr::new(ip, port)]);
        }
        let lookup = self
            .0
            .lookup_ip(&*host)
            .await
            .map_err(|e| FredError::new(ErrorKind::IO, format!("resolving {host}: {e}")))?;
        Ok(lookup.iter().map(|ip| SocketAddr::new(ip, port)).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scylla(points: &[&str]) -> StoreConfig {
        StoreConfig::Scylla(Box::new(marquee_store_scylla::ScyllaOptions {
            contact_points: points.iter().map(|p| (*p).to_owned()).collect(),
            ..marquee_store_scylla::ScyllaOptions::default()
        }))
    }

    fn points(store: &StoreConfig) -> Vec<String> {
        let StoreConfig::Scylla(options) = store else { panic!("scylla") };
        options.contact_points.clone()
    }

    #[tokio::test]
    async fn contact_points_are_resolved_only_with_servers_and_only_when_named() {
        // No [dns] servers: the driver gets the names as written.
        let mut store = scylla(&["scylla-1.us-east.internal:9042"]);
        resolve_contact_points(&mut store, &DnsConfig::default()).await.expect("left alone");
        assert_eq!(points(&store), ["scylla-1.us-east.internal:9042"]);
        // With servers, addresses need no lookup (the server here answers nothing).
        let silent = DnsConfig { servers: vec!["127.0.0.1:9".parse().expect("addr")] };
        let mut store = scylla(&["10.0.0.7:9042"]);
        resolve_contact_points(&mut store, &silent).await.expect("no lookup");
        assert_eq!(points(&store), ["10.0.0.7:9042"]);
        // A name the servers cannot answer is an error naming it, not a silent fallback.
        let mut store = scylla(&["scylla-1.us-east.internal:9042"]);
        let error = resolve_contact_points(&mut store, &silent).await.expect_err("unresolvable");
        assert!(error.to_string().contains("scylla-1.us-east.internal"), "{error}");
    }
}
