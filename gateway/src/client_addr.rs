//! Who is asking: behind a load balancer and a CDN every connection comes from a proxy, and
//! the client's address arrives in `X-Forwarded-For`, each proxy appending the address it
//! took the request from. Only proxies listed in `http.trusted_proxies` are believed: the
//! client is the rightmost address in the chain that is not one of them (anything a client
//! writes into the header itself sits to the left of what the first trusted proxy appended,
//! so it is never reached). A peer that is not a trusted proxy is the client, header or not.
//!
//! Trusting a CDN's address ranges trusts every customer's distribution on that CDN: anyone
//! can point one at the load balancer and write `X-Forwarded-For`. So the deployment's own
//! CDN adds a secret header (`http.origin_secret`, rotated with `origin_secret_previous`), and
//! with one configured the header is believed only from requests that carry it; any other
//! request is its peer's (the load balancer refuses such requests anyway; a gateway reached
//! around it treats them as the proxy's own).

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, HeaderName};
use axum::middleware::Next;
use axum::response::Response;
use ipnet::IpNet;
use sha2::{Digest as _, Sha256};

/// `http.trusted_proxies`, and the secret that proves a request came through the
/// deployment's own CDN.
#[derive(Clone, Debug, Default)]
pub struct TrustedProxies {
    networks: Arc<[IpNet]>,
    origin: Option<Arc<OriginSecret>>,
}

/// The CDN's secret header: its name and the SHA-256 of each accepted value (compared as
/// digests, so the comparison's time says nothing about the secret).
#[derive(Debug)]
struct OriginSecret {
    header: HeaderName,
    digests: Vec<[u8; 32]>,
}

impl TrustedProxies {
    /// Proxies in `networks`; with `secrets` (current, then previous, as
    /// `HttpConfig::origin_secrets` checked them), only requests carrying one of them in
    /// `header` are believed.
    pub fn new(networks: &[IpNet], header: &str, secrets: &[&str]) -> Result<TrustedProxies, String> {
        let origin = if secrets.is_empty() {
            None
        } else {
            let header =
                HeaderName::try_from(header).map_err(|e| format!("http.origin_header `{header}`: {e}"))?;
            let digests = secrets.iter().map(|s| Sha256::digest(s.as_bytes()).into()).collect();
            Some(Arc::new(OriginSecret { header, digests }))
        };
        Ok(TrustedProxies { networks: networks.into(), origin })
    }

    fn trusts(&self, ip: IpAddr) -> bool {
        self.networks.iter().any(|net| net.contains(&ip))
    }

    /// Whether the request came through the deployment's CDN (always, with no secret set).
    fn came_through_our_cdn(&self, headers: &HeaderMap) -> bool {
        let Some(origin) = &self.origin else { return true };
        headers.get_all(&origin.header).iter().any(|value| {
            let digest: [u8; 32] = Sha256::digest(value.as_bytes()).into();
            origin.digests.contains(&digest)
        })
    }

    /// The client of a request that came from `peer` with `headers`.
    pub fn client(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        let mut client = peer.to_canonical();
        if !self.trusts(client) || !self.came_through_our_cdn(headers) {
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
pub(crate) async fn record(
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

/// The client address a request is limited by: an IPv4 address, or the /64 an IPv6 address
/// belongs to (one IPv6 client usually owns a whole /64 and can pick any address in it).
pub(crate) fn of(request: &Request) -> String {
    let extensions = request.extensions();
    let ip = match (extensions.get::<ClientAddr>(), extensions.get::<ConnectInfo<SocketAddr>>()) {
        (Some(ClientAddr(client)), _) => *client,
        (None, Some(ConnectInfo(peer))) => peer.ip(),
        (None, None) => return "unknown".to_owned(),
    };
    match ip.to_canonical() {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => {
            let s = v6.segments();
            format!("{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3])
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn proxies(nets: &[&str]) -> TrustedProxies {
        let nets: Vec<IpNet> = nets.iter().map(|n| n.parse().expect("net")).collect();
        TrustedProxies::new(&nets, "x-marquee-origin", &[]).expect("proxies")
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

    #[test]
    fn with_an_origin_secret_only_requests_through_our_cdn_name_their_client() {
        let nets: Vec<IpNet> = vec!["10.0.0.0/8".parse().expect("net")];
        let (current, previous) = ("current-secret-0123456789", "previous-secret-0123456789");
        let ours = TrustedProxies::new(&nets, "x-marquee-origin", &[current, previous]).expect("proxies");
        let through = |secret: Option<&str>| {
            let mut headers = forwarded(&["203.0.113.7, 10.1.1.1"]);
            if let Some(secret) = secret {
                headers.insert("x-marquee-origin", secret.parse().expect("header"));
            }
            headers
        };
        assert_eq!(ours.client(ip("10.2.2.2"), &through(Some(current))), ip("203.0.113.7"));
        assert_eq!(
            ours.client(ip("10.2.2.2"), &through(Some(previous))),
            ip("203.0.113.7"),
            "during a rotation"
        );
        // Someone else's distribution on the same CDN: same proxies, no secret.
        assert_eq!(ours.client(ip("10.2.2.2"), &through(None)), ip("10.2.2.2"));
        assert_eq!(ours.client(ip("10.2.2.2"), &through(Some("guessed-secret-0123456789"))), ip("10.2.2.2"));
        assert_eq!(ours.client(ip("10.2.2.2"), &through(Some(&current[..20]))), ip("10.2.2.2"));
        // The secret does not make an untrusted peer a proxy.
        assert_eq!(ours.client(ip("198.51.100.9"), &through(Some(current))), ip("198.51.100.9"));
        assert!(TrustedProxies::new(&nets, "bad header", &[current]).is_err());
    }
}
