//! Name lookups as a client of one region makes them: through a given DNS server, from a
//! source address in that region's subnet (the rig's geo-DNS tells regions apart by it).

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use anyhow::Context;
use hickory_resolver::Resolver;
use hickory_resolver::config::{NameServerConfig, ResolverConfig, ResolverOpts};
use hickory_resolver::name_server::TokioConnectionProvider;
use hickory_resolver::proto::xfer::Protocol;

/// The IPv4 addresses `server` gives `name` when asked from `source`.
pub(crate) fn resolve_from(server: SocketAddr, source: IpAddr, name: &str) -> anyhow::Result<Vec<IpAddr>> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    runtime.block_on(async {
        let mut server_config = NameServerConfig::new(server, Protocol::Udp);
        server_config.bind_addr = Some(SocketAddr::new(source, 0));
        let mut config = ResolverConfig::new();
        config.add_name_server(server_config);
        let mut options = ResolverOpts::default();
        options.cache_size = 0;
        options.attempts = 1;
        options.timeout = Duration::from_secs(2);
        let resolver = Resolver::builder_with_config(config, TokioConnectionProvider::default())
            .with_options(options)
            .build();
        let lookup =
            resolver.ipv4_lookup(name).await.with_context(|| format!("looking up {name} at {server}"))?;
        Ok(lookup.iter().map(|a| IpAddr::V4(a.0)).collect())
    })
}
