//! The network address a request comes from: its connection's, or, when the connection
//! comes from a trusted proxy (`serve --trusted-proxies`), the client the proxy names in
//! `Forwarded` or `X-Forwarded-For`. A header from any other address is ignored, so a
//! client cannot choose the address its rate limits and log lines are kept under.

use axum::http::HeaderMap;
use ipnet::IpNet;
use std::net::IpAddr;

/// The networks whose connections are proxies allowed to name the client.
#[derive(Debug, Clone, Default)]
pub struct TrustedProxies(Vec<IpNet>);

impl TrustedProxies {
    /// From CIDR blocks (`10.0.0.0/8`, `2001:db8::/32`) or single addresses.
    pub fn parse<S: AsRef<str>>(blocks: &[S]) -> Result<TrustedProxies, String> {
        blocks
            .iter()
            .map(|b| {
                let b = b.as_ref().trim();
                b.parse::<IpNet>()
                    .or_else(|_| b.parse::<IpAddr>().map(IpNet::from))
                    .map_err(|_| {
                        format!("--trusted-proxies: `{b}` is not a CIDR block or an address")
                    })
            })
            .collect::<Result<Vec<_>, _>>()
            .map(TrustedProxies)
    }

    /// Whether no proxy is trusted.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    fn trusts(&self, address: IpAddr) -> bool {
        let address = unmapped(address);
        self.0.iter().any(|n| n.contains(&address))
    }

    /// The client of a request that came over a connection from `peer`: `peer` itself
    /// unless it is a trusted proxy; then the nearest address the forwarding headers name
    /// that is not a trusted proxy (walking from the last hop back), or `peer` when they
    /// name none that parses.
    pub fn client(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        if !self.trusts(peer) {
            return peer;
        }
        let hops = forwarded(headers);
        let hops = if hops.is_empty() {
            x_forwarded_for(headers)
        } else {
            hops
        };
        let mut nearest = None;
        for hop in hops.iter().rev() {
            let Some(address) = hop else {
                // An unknown or obfuscated hop: nothing before it can be believed.
                break;
            };
            nearest = Some(*address);
            if !self.trusts(*address) {
                break;
            }
        }
        nearest.unwrap_or(peer)
    }
}

/// An IPv4-mapped IPv6 address as the IPv4 address it is.
fn unmapped(a: IpAddr) -> IpAddr {
    match a {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(a, IpAddr::V4),
        IpAddr::V4(_) => a,
    }
}

/// The `for=` of each element of every `Forwarded` header (RFC 7239), in order: `None`
/// for one that names no address (`unknown`, an obfuscated name, garbage).
fn forwarded(headers: &HeaderMap) -> Vec<Option<IpAddr>> {
    let mut hops = Vec::new();
    for value in headers.get_all(axum::http::header::FORWARDED) {
        let Ok(value) = value.to_str() else {
            hops.push(None);
            continue;
        };
        for element in value.split(',') {
            let node = element.split(';').find_map(|pair| {
                let (k, v) = pair.split_once('=')?;
                k.trim().eq_ignore_ascii_case("for").then(|| v.trim())
            });
            if let Some(node) = node {
                hops.push(node_address(node.trim_matches('"')));
            }
        }
    }
    hops
}

/// The addresses of every `X-Forwarded-For` header, in order.
fn x_forwarded_for(headers: &HeaderMap) -> Vec<Option<IpAddr>> {
    headers
        .get_all("x-forwarded-for")
        .iter()
        .flat_map(|v| {
            v.to_str()
                .map(|s| s.split(',').map(|a| node_address(a.trim())).collect())
                .unwrap_or_else(|_| vec![None])
        })
        .collect()
}

/// The address of a node: `192.0.2.1`, `192.0.2.1:4711`, `[2001:db8::1]`,
/// `[2001:db8::1]:4711`, or a bare IPv6 address.
fn node_address(node: &str) -> Option<IpAddr> {
    if let Some(rest) = node.strip_prefix('[') {
        return rest.split_once(']')?.0.parse().ok().map(unmapped);
    }
    if let Ok(a) = node.parse::<IpAddr>() {
        return Some(unmapped(a));
    }
    let (host, port) = node.rsplit_once(':')?;
    port.parse::<u16>().ok()?;
    host.parse::<std::net::Ipv4Addr>().ok().map(IpAddr::V4)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, v.parse().unwrap());
        }
        h
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn only_a_trusted_proxy_names_the_client() {
        let trusted = TrustedProxies::parse(&["10.0.0.0/8", "192.0.2.7"]).unwrap();
        let xff = headers(&[("x-forwarded-for", "203.0.113.5")]);
        // From a trusted proxy: the client it names.
        assert_eq!(trusted.client(ip("10.1.2.3"), &xff), ip("203.0.113.5"));
        assert_eq!(trusted.client(ip("192.0.2.7"), &xff), ip("203.0.113.5"));
        // From anyone else: the header is ignored.
        assert_eq!(trusted.client(ip("198.51.100.9"), &xff), ip("198.51.100.9"));
        assert_eq!(
            TrustedProxies::default().client(ip("10.1.2.3"), &xff),
            ip("10.1.2.3")
        );
        // An IPv4-mapped peer is its IPv4 address.
        assert_eq!(
            trusted.client(ip("::ffff:10.1.2.3"), &xff),
            ip("203.0.113.5")
        );
    }

    #[test]
    fn the_nearest_untrusted_hop_is_the_client_and_a_spoofed_prefix_is_not_believed() {
        let trusted = TrustedProxies::parse(&["10.0.0.0/8"]).unwrap();
        // The client put a spoofed address first; the proxies appended what they saw.
        let h = headers(&[("x-forwarded-for", "1.2.3.4, 203.0.113.5, 10.0.0.2")]);
        assert_eq!(trusted.client(ip("10.0.0.1"), &h), ip("203.0.113.5"));
        let h = headers(&[
            (
                "forwarded",
                "for=1.2.3.4, for=\"[2001:db8::5]:4711\";proto=https",
            ),
            ("x-forwarded-for", "9.9.9.9"),
        ]);
        assert_eq!(trusted.client(ip("10.0.0.1"), &h), ip("2001:db8::5"));
        let h = headers(&[("forwarded", "for=203.0.113.5:8080;by=10.0.0.1")]);
        assert_eq!(trusted.client(ip("10.0.0.1"), &h), ip("203.0.113.5"));
        // An unknown hop stops the walk: nothing before it is believed.
        let h = headers(&[("forwarded", "for=1.2.3.4, for=unknown")]);
        assert_eq!(trusted.client(ip("10.0.0.1"), &h), ip("10.0.0.1"));
        // Only proxies named: the furthest of them.
        let h = headers(&[("x-forwarded-for", "10.0.0.3, 10.0.0.2")]);
        assert_eq!(trusted.client(ip("10.0.0.1"), &h), ip("10.0.0.3"));
        // Garbage: the proxy itself.
        let h = headers(&[("x-forwarded-for", "not an address")]);
        assert_eq!(trusted.client(ip("10.0.0.1"), &h), ip("10.0.0.1"));
    }

    #[test]
    fn blocks_that_do_not_parse_are_refused() {
        assert!(TrustedProxies::parse(&["10.0.0.0/33"]).is_err());
        assert!(TrustedProxies::parse(&["proxy.internal"]).is_err());
        assert!(TrustedProxies::parse(&["::1", "fd00::/8"]).is_ok());
    }
}
