//! Endpoints: the addresses at which a peer may reach one of our sockets.

use std::fmt;
use std::net::SocketAddr;

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
/// ```
/// use natt_core::MappedSocketAddr;
/// let ep = MappedSocketAddr::new("203.0.113.7:4000".parse().unwrap(), true, "simple");
/// assert!(ep.nat_restricted);
/// assert_eq!(ep.to_string(), "203.0.113.7:4000 (simple, restricted)");
/// ```
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

#[cfg(test)]
mod tests {
    use super::*;

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
