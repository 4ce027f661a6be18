//! Name resolution for the names in a gateway's own configuration (the Redis Cluster's seeds),
//! through hickory-resolver: the system's resolvers (`/etc/resolv.conf`), or the servers in
//! `[dns] servers` (the local rig points them at its PowerDNS). A name is resolved again
//! whenever the client reconnects, and answers are kept for their TTL, so a seed whose address
//! moves is followed.
//!
//! The ScyllaDB driver resolves contact points with the system resolver and has no hook for
//! another one: name contact points in the system's DNS (or `/etc/hosts`).

use std::net::SocketAddr;

use fred::bytes_utils::Str;
use fred::error::{Error as FredError, ErrorKind};
use hickory_resolver::config::{NameServerConfig, ResolverConfig, ResolverOpts};
use hickory_resolver::name_server::TokioConnectionProvider;
use hickory_resolver::proto::xfer::Protocol;
use hickory_resolver::{Resolver, TokioResolver};
use serde::{Deserialize, Serialize};

/// `[dns]`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DnsConfig {
    /// DNS servers (`ip:port`, UDP) for the names in this configuration. Empty: the system's.
    pub servers: Vec<SocketAddr>,
}

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
        Resolver::builder_with_config(resolvers, TokioConnectionProvider::default())
            .with_options(ResolverOpts::default())
    };
    Ok(builder.build())
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
