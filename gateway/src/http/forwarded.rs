//! Who is asking: behind a load balancer and a CDN every connection comes from a proxy, and
//! the client's address arrives in `X-Forwarded-For`, each proxy appending the address it
//! took the request from. Only proxies listed in `http.trusted_proxies` are believed: the
//! client is the rightmost address in the chain that is not one of them (anything a client
//! writes into the header itself sits to the left of what the first trusted proxy appended,
//! so it is never reached). A peer that is not a trusted proxy is the client, header or not.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::HeaderMap;
use axum::middleware::Next;
use axum::response::Response;
use ipnet::IpNet;

/// `http.trusted_proxies`.
#[derive(Clone, Debug, Default)]
pub struct TrustedProxies(pub Arc<[IpNet]>);

impl TrustedProxies {
    fn trusts(&self, ip: IpAddr) -> bool {
        self.0.iter().any(|net| net.contains(&ip))
    }

    /// The client of a request that came from `peer` with `headers`.
    pub fn client(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        let mut client = peer.to_canonical();
        if !self.trusts(client) {
            return client;
        }
        let chain: Vec<&str> = headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|value| value.to_str().ok())
            .flat_map(|value| value.split(','))
            .collect();
        for hop in chain.iter().rev() {
            let Ok(ip) = hop.trim().parse::<IpAddr>() else { break };
            client = ip.to_canonical();
            if !self.trusts(client) {
                break;
            }
        }
        client
    }
}

/// The client's address, as [`TrustedProxies::client`] decided it.
#[derive(Clone, Copy, Debug)]
pub struct ClientAddr(pub IpAddr);

/// Middleware: records the request's [`ClientAddr`].
pub(super) async fn client(
    State(proxies): State<TrustedProxies>,
    mut request: Request,
    next: Next,
) -> Response {
    if let Some(ConnectInfo(peer)) = request.extensions().get::<ConnectInfo<SocketAddr>>().copied() {
        let client = proxies.client(peer.ip(), request.headers());
        request.extensions_mut().insert(ClientAddr(client));
    }
    next.run(request).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn proxies(nets: &[&str]) -> TrustedProxies {
        TrustedProxies(nets.iter().map(|n| n.parse().expect("net")).collect())
    }

    fn forwarded(values: &[&str]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for value in values {
            headers.append("x-forwarded-for", value.parse().expect("header"));
        }
        headers
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().expect("ip")
    }

    #[test]
    fn the_client_is_the_rightmost_address_no_trusted_proxy_owns() {
        let lb = proxies(&["10.0.0.0/8"]);
        // Client → CDN (10.1.1.1) → load balancer (10.2.2.2) → gateway.
        let headers = forwarded(&["203.0.113.7, 10.1.1.1"]);
        assert_eq!(lb.client(ip("10.2.2.2"), &headers), ip("203.0.113.7"));
        // A client that writes its own header cannot choose its address.
        let spoofed = forwarded(&["1.2.3.4", "203.0.113.7, 10.1.1.1"]);
        assert_eq!(lb.client(ip("10.2.2.2"), &spoofed), ip("203.0.113.7"));
        // From an untrusted peer the header means nothing.
        assert_eq!(lb.client(ip("198.51.100.9"), &spoofed), ip("198.51.100.9"));
        // Nothing trusted: the peer, always.
        assert_eq!(proxies(&[]).client(ip("10.2.2.2"), &headers), ip("10.2.2.2"));
        // A garbled entry stops the walk at the last proxy that appended a real address.
        let garbled = forwarded(&["203.0.113.7, not-an-ip, 10.1.1.1"]);
        assert_eq!(lb.client(ip("10.2.2.2"), &garbled), ip("10.1.1.1"));
        // No header from a trusted proxy: the proxy itself.
        assert_eq!(lb.client(ip("10.2.2.2"), &HeaderMap::new()), ip("10.2.2.2"));
        // IPv4-mapped IPv6 peers are their IPv4 address.
        assert_eq!(lb.client(ip("::ffff:10.2.2.2"), &headers), ip("203.0.113.7"));
    }
}
