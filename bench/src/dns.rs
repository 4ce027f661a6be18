//! Being a client of one region: names resolved through a given DNS server (the rig's
//! geo-DNS) from a source address in the region's subnet, which is how that DNS tells regions
//! apart, and every request sent from that address.
//!
//! Answers are cached for their TTL (hickory's cache), and every new connection resolves the
//! name again, as a browser does: when geo-DNS moves a region's clients elsewhere, new
//! connections follow within the TTL, while connections already open stay where they are
//! until they close. Load goes to loopback only: an answer outside 127.0.0.0/8 or ::1 is an
//! error, not a connection.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use hickory_resolver::config::{NameServerConfig, ResolverConfig, ResolverOpts};
use hickory_resolver::name_server::TokioConnectionProvider;
use hickory_resolver::proto::xfer::Protocol;
use hickory_resolver::{Resolver, TokioResolver};
use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use serde::Serialize;

/// Where a client of a region asks for names, and the address it sends from.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct ClientRoute {
    /// The DNS server (UDP).
    pub dns: SocketAddr,
    /// The client's own address: queries and requests are sent from it.
    pub source: IpAddr,
}

/// A reqwest resolver asking `route.dns` from `route.source`.
pub struct RegionResolver {
    resolver: TokioResolver,
}

impl RegionResolver {
    /// A resolver for `route`.
    pub fn new(route: &ClientRoute) -> Arc<RegionResolver> {
        Arc::new(RegionResolver { resolver: route.resolver(ResolverOpts::default()) })
    }
}

/// Why a one-off lookup failed.
#[derive(Debug, thiserror::Error)]
pub enum LookupError {
    /// No runtime to resolve on.
    #[error("starting a runtime for the lookup: {0}")]
    Runtime(#[from] std::io::Error),
    /// The server did not answer, or not with addresses.
    #[error("looking up {name} at {server}: {source}")]
    Resolve {
        /// The name asked for.
        name: String,
        /// The DNS server asked.
        server: SocketAddr,
        /// What the resolver said.
        source: hickory_resolver::ResolveError,
    },
}

impl ClientRoute {
    /// A resolver asking `dns` from `source`.
    fn resolver(&self, options: ResolverOpts) -> TokioResolver {
        let mut server = NameServerConfig::new(self.dns, Protocol::Udp);
        server.bind_addr = Some(SocketAddr::new(self.source, 0));
        let mut config = ResolverConfig::new();
        config.add_name_server(server);
        Resolver::builder_with_config(config, TokioConnectionProvider::default())
            .with_options(options)
            .build()
    }

    /// The IPv4 addresses the server gives `name` now, asked once (no cache, one attempt of
    /// 2 s): what a health check or a test polling for a DNS change needs. Blocks.
    pub fn lookup_v4_once(&self, name: &str) -> Result<Vec<IpAddr>, LookupError> {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        runtime.block_on(async {
            let mut options = ResolverOpts::default();
            options.cache_size = 0;
            options.attempts = 1;
            options.timeout = Duration::from_secs(2);
            let lookup = self
                .resolver(options)
                .ipv4_lookup(name)
                .await
                .map_err(|source| LookupError::Resolve { name: name.to_owned(), server: self.dns, source })?;
            Ok(lookup.iter().map(|a| IpAddr::V4(a.0)).collect())
        })
    }
}

impl Resolve for RegionResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let resolver = self.resolver.clone();
        Box::pin(async move {
            let lookup = resolver.lookup_ip(name.as_str()).await?;
            let addrs: Vec<SocketAddr> = lookup.iter().map(|ip| SocketAddr::new(ip, 0)).collect();
            if let Some(outside) = addrs.iter().find(|a| !a.ip().is_loopback()) {
                return Err(format!(
                    "{} resolves to {}, not a loopback address",
                    name.as_str(),
                    outside.ip()
                )
                .into());
            }
            let addrs: Addrs = Box::new(addrs.into_iter());
            Ok(addrs)
        })
    }
}
