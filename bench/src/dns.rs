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
        let mut server = NameServerConfig::new(route.dns, Protocol::Udp);
        server.bind_addr = Some(SocketAddr::new(route.source, 0));
        let mut config = ResolverConfig::new();
        config.add_name_server(server);
        let resolver = Resolver::builder_with_config(config, TokioConnectionProvider::default())
            .with_options(ResolverOpts::default())
            .build();
        Arc::new(RegionResolver { resolver })
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
