//! Endpoints: the addresses at which a peer may reach one of our sockets, and the check of an
//! external address a gateway reports ([`unusable_external_ip`]).

use std::fmt;
use std::net::{IpAddr, SocketAddr};

/// The transport protocol of a socket being mapped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Protocol {
    /// UDP.
    Udp,
    /// TCP.
    Tcp,
}

impl Protocol {
    /// `"udp"` or `"tcp"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Udp => "udp",
            Protocol::Tcp => "tcp",
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A socket address obtained through some mapping technique.
///
/// Mapped addresses include every address a peer may be able to reach the socket at: the
/// socket's local interface addresses (for peers on the same network), addresses learned from
/// external servers (several, when behind more than one NAT) and port mappings made on routers.
///
#[cfg_attr(not(doctest), doc = include_str!("../doc/mapped_socket_addr.md"))]
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct MappedSocketAddr {
    /// The address a peer can try.
    pub addr: SocketAddr,
    /// Hole punching is needed for a peer to reach this address: both sides must send to each
    /// other first. Not set for a fully mapped address, such as the external address of a
    /// full-cone NAT or a port mapping obtained through UPnP or PCP, nor for local addresses.
    pub nat_restricted: bool,
    /// The name of the technique that found this address (`local`, `simple`, `stun`, `upnp`,
    /// `pcp`, `nat-pmp`, or a third-party technique's own name).
    pub technique: String,
}

impl MappedSocketAddr {
    /// A new endpoint.
    pub fn new(addr: SocketAddr, nat_restricted: bool, technique: impl Into<String>) -> Self {
        MappedSocketAddr {
            addr,
            nat_restricted,
            technique: technique.into(),
        }
    }
}

impl fmt::Display for MappedSocketAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} ({}, {})",
            self.addr,
            self.technique,
            if self.nat_restricted { "restricted" } else { "open" }
        )
    }
}

/// Adds `new` endpoints to `into`, skipping addresses already present. When an address is
/// already known as restricted and arrives again unrestricted, the unrestricted one wins.
pub fn merge_endpoints(into: &mut Vec<MappedSocketAddr>, new: impl IntoIterator<Item = MappedSocketAddr>) {
    for ep in new {
        match into.iter_mut().find(|e| e.addr == ep.addr) {
            Some(existing) => {
                if existing.nat_restricted && !ep.nat_restricted {
                    *existing = ep;
                }
            }
            None => into.push(ep),
        }
    }
}

/// Whether `ip` is a private address: RFC 1918, shared (carrier-grade NAT, RFC 6598)
/// 100.64.0.0/10, or IPv6 unique local (fc00::/7). Peers elsewhere cannot reach it.
///
/// ```
/// use natt_core::endpoint::is_private;
/// assert!(is_private("192.168.1.2".parse().unwrap()) && is_private("100.64.0.9".parse().unwrap()));
/// assert!(!is_private("203.0.113.7".parse().unwrap()));
/// ```
pub fn is_private(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, ..] = v4.octets();
            v4.is_private() || (a == 100 && (b & 0xc0) == 64)
        }
        IpAddr::V6(v6) => v6.segments().first().is_some_and(|s| s & 0xfe00 == 0xfc00),
    }
}

/// Why `ip`, an external address a gateway reported (UPnP's `GetExternalIPAddress`, a PCP or
/// NAT-PMP grant), cannot be where peers reach us; `None` when it can. Refused: the
/// unspecified address and the rest of 0.0.0.0/8 (a gateway that is not connected), loopback,
/// link-local, multicast, and 240.0.0.0/4 with the broadcast address; an IPv4-mapped IPv6
/// address is judged as its IPv4 address. Private and shared (carrier-grade NAT) addresses
/// are usable: behind double NAT the gateway's external address is one, and peers on that
/// network reach it. natt-upnp and natt-pcp both judge gateways' answers with this.
///
/// ```
/// use natt_core::endpoint::unusable_external_ip;
/// assert_eq!(unusable_external_ip("203.0.113.7".parse().unwrap()), None);
/// assert_eq!(unusable_external_ip("10.0.0.1".parse().unwrap()), None);
/// assert_eq!(unusable_external_ip("127.0.0.1".parse().unwrap()), Some("a loopback address"));
/// ```
pub fn unusable_external_ip(ip: IpAddr) -> Option<&'static str> {
    match ip.to_canonical() {
        IpAddr::V4(v4) => {
            let [first, ..] = v4.octets();
            if v4.is_unspecified() {
                Some("unspecified (not connected?)")
            } else if first == 0 {
                Some("in 0.0.0.0/8 (this network)")
            } else if v4.is_loopback() {
                Some("a loopback address")
            } else if v4.is_link_local() {
                Some("a link-local address")
            } else if v4.is_multicast() {
                Some("a multicast address")
            } else if v4.is_broadcast() {
                Some("the broadcast address")
            } else if first >= 240 {
                Some("in the reserved 240.0.0.0/4")
            } else {
                None
            }
        }
        IpAddr::V6(v6) => {
            if v6.is_unspecified() {
                Some("unspecified (not connected?)")
            } else if v6.is_loopback() {
                Some("a loopback address")
            } else if v6.is_unicast_link_local() {
                Some("a link-local address")
            } else if v6.is_multicast() {
                Some("a multicast address")
            } else {
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unusable_external_addresses() {
        for bad in [
            "0.0.0.0",
            "0.1.2.3",
            "127.0.0.1",
            "127.9.9.9",
            "169.254.1.1",
            "224.0.0.1",
            "239.255.255.250",
            "255.255.255.255",
            "240.0.0.1",
            "::",
            "::1",
            "fe80::1",
            "ff02::1",
            "::ffff:127.0.0.1",
            "::ffff:0.0.0.0",
        ] {
            assert!(unusable_external_ip(bad.parse().unwrap()).is_some(), "{bad}");
        }
        for good in [
            "203.0.113.7",
            "8.8.8.8",
            "192.168.1.1",
            "10.1.2.3",
            "100.64.0.1",
            "2001:db8::1",
            "fd00::1",
            "::ffff:203.0.113.7",
        ] {
            assert_eq!(unusable_external_ip(good.parse().unwrap()), None, "{good}");
        }
    }

    #[test]
    fn merge_prefers_unrestricted_and_dedups() {
        let a: SocketAddr = "203.0.113.1:1000".parse().unwrap();
        let b: SocketAddr = "203.0.113.2:1000".parse().unwrap();
        let mut v = vec![MappedSocketAddr::new(a, true, "simple")];
        merge_endpoints(
            &mut v,
            [
                MappedSocketAddr::new(a, false, "upnp"),
                MappedSocketAddr::new(b, true, "stun"),
                MappedSocketAddr::new(b, true, "simple"),
            ],
        );
        assert_eq!(v.len(), 2);
        assert_eq!(v[0].technique, "upnp");
        assert_eq!(v[1].technique, "stun");
    }
}
