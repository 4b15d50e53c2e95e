//! The local endpoints of a socket: the addresses of this host's interfaces, for peers on the
//! same network.

use std::net::{IpAddr, SocketAddr};

use crate::endpoint::MappedSocketAddr;

/// The technique name of local endpoints.
pub const LOCAL: &str = "local";

/// The addresses a peer on the same network can reach a socket bound at `bound` on.
///
/// A socket bound to one address has that one. A socket bound to the unspecified address has
/// every interface address of its family, and a dual-stack socket (bound at `[::]`, see
/// [`crate::family`]) those of both; loopback addresses are left out unless nothing else is
/// there (loopback is useful only to peers on this very host). Link-local IPv6 addresses are
/// left out (they need a scope to be usable). A global IPv6 address is reachable from anywhere
/// but for the router's stateful firewall, so it is marked
/// [`nat_restricted`](MappedSocketAddr::nat_restricted): it needs hole punching like a NAT.
pub fn local_endpoints(bound: SocketAddr) -> Vec<MappedSocketAddr> {
    if !bound.ip().is_unspecified() {
        let bound = crate::family::canonical(bound);
        let restricted = matches!(bound.ip(), IpAddr::V6(v6) if crate::family::is_global_ipv6(v6));
        return vec![MappedSocketAddr::new(bound, restricted, LOCAL)];
    }
    let ips: Vec<IpAddr> = match if_addrs::get_if_addrs() {
        Ok(ifs) => ifs.into_iter().map(|i| i.ip()).collect(),
        Err(e) => {
            log::warn!("cannot list interfaces: {e}");
            Vec::new()
        }
    };
    local_endpoints_from(bound, &ips)
}

/// The addresses of [`local_endpoints`]: what a driver gives a protocol core that must tell its
/// own addresses from reflexive ones (the core lists no interfaces itself).
pub fn local_addrs(bound: SocketAddr) -> Vec<SocketAddr> {
    local_endpoints(bound).into_iter().map(|e| e.addr).collect()
}

/// [`local_endpoints`] for a given list of interface addresses (pure, for tests).
pub fn local_endpoints_from(bound: SocketAddr, interface_ips: &[IpAddr]) -> Vec<MappedSocketAddr> {
    let dual = crate::family::is_dual_stack(bound);
    let same_family = |ip: &&IpAddr| dual || ip.is_ipv4() == bound.is_ipv4();
    let usable = |ip: &&IpAddr| match ip {
        IpAddr::V6(v6) => !v6.is_unicast_link_local(),
        IpAddr::V4(_) => true,
    };
    let mut ips: Vec<IpAddr> = interface_ips
        .iter()
        .filter(same_family)
        .filter(usable)
        .filter(|ip| !ip.is_loopback())
        .copied()
        .collect();
    if ips.is_empty() {
        ips = interface_ips
            .iter()
            .filter(same_family)
            .filter(|ip| ip.is_loopback())
            .copied()
            .collect();
    }
    ips.dedup();
    ips.into_iter()
        .map(|ip| {
            let restricted = matches!(ip, IpAddr::V6(v6) if crate::family::is_global_ipv6(v6));
            MappedSocketAddr::new(SocketAddr::new(ip, bound.port()), restricted, LOCAL)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bound_address_is_used_as_is() {
        let a: SocketAddr = "192.168.1.2:4000".parse().unwrap();
        assert_eq!(local_endpoints(a)[0].addr, a);
    }

    #[test]
    fn unspecified_lists_interfaces_without_loopback() {
        let ips: Vec<IpAddr> = ["127.0.0.1", "192.168.1.2", "10.0.0.2", "fe80::1", "2001:db8::2"]
            .iter()
            .map(|s| s.parse().unwrap())
            .collect();
        let v4 = local_endpoints_from("0.0.0.0:7".parse().unwrap(), &ips);
        let addrs: Vec<String> = v4.iter().map(|e| e.addr.to_string()).collect();
        assert_eq!(addrs, ["192.168.1.2:7", "10.0.0.2:7"]);
        // A socket at [::] is dual-stack: both families, global IPv6 behind a firewall.
        let dual = local_endpoints_from("[::]:7".parse().unwrap(), &ips);
        let addrs: Vec<String> = dual.iter().map(|e| e.addr.to_string()).collect();
        assert_eq!(addrs, ["192.168.1.2:7", "10.0.0.2:7", "[2001:db8::2]:7"]);
        let restricted: Vec<bool> = dual.iter().map(|e| e.nat_restricted).collect();
        assert_eq!(restricted, [false, false, true]);
        let mapped = local_endpoints("[::ffff:192.168.1.2]:7".parse().unwrap());
        assert_eq!(mapped[0].addr.to_string(), "192.168.1.2:7");
    }

    #[test]
    fn loopback_only_when_nothing_else() {
        let ips: Vec<IpAddr> = vec!["127.0.0.1".parse().unwrap()];
        let v = local_endpoints_from("0.0.0.0:9".parse().unwrap(), &ips);
        assert_eq!(v[0].addr.to_string(), "127.0.0.1:9");
        assert!(!v[0].nat_restricted);
    }
}
