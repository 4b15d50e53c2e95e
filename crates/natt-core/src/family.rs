//! Address families: one dual-stack socket for IPv4 and IPv6.
//!
//! Where the host has a global IPv6 address, [`crate::MappedUdpSocket::new`] and
//! [`crate::MappedTcpSocket::new`] bind one socket at `[::]` with `IPV6_V6ONLY` off, so that the
//! same socket, and the same rendezvous info, carry both families. Such a socket sees IPv4 peers
//! at IPv4-mapped IPv6 addresses (`::ffff:a.b.c.d`); natt never shows or returns those: every
//! address that comes in is made plain IPv4 ([`canonical`]) and every address that goes out is
//! put in the socket's family ([`for_socket`]).
//!
//! natt takes a socket bound at the IPv6 unspecified address to be dual-stack (the default of
//! Linux, and how natt binds its own): it reaches IPv4 addresses too ([`reaches`]) and has IPv4
//! endpoints too ([`crate::local::local_endpoints`]).
//!
//! See `docs/design.md` ("IPv6") for why one dual-stack socket rather than one per family.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV6, TcpStream, UdpSocket};

use socket2::{Domain, Protocol, Socket, Type};

/// `addr` with an IPv4-mapped IPv6 address (`::ffff:a.b.c.d`) made plain IPv4; any other
/// address as it is.
pub fn canonical(addr: SocketAddr) -> SocketAddr {
    SocketAddr::new(addr.ip().to_canonical(), addr.port())
}

/// Whether `local` is the IPv6 unspecified address: a dual-stack socket for natt.
pub fn is_dual_stack(local: SocketAddr) -> bool {
    matches!(local.ip(), IpAddr::V6(ip) if ip.is_unspecified())
}

/// Whether a socket bound at `local` can send to `remote`: the same family, or IPv4 from a
/// dual-stack socket ([`is_dual_stack`]).
pub fn reaches(local: SocketAddr, remote: SocketAddr) -> bool {
    let remote = canonical(remote);
    local.is_ipv4() == remote.is_ipv4() || (is_dual_stack(local) && remote.is_ipv4())
}

/// `addr` as a socket bound at `local` takes it: an IPv4 address becomes IPv4-mapped IPv6 on an
/// IPv6 socket; anything else stays as it is.
pub fn for_socket(local: SocketAddr, addr: SocketAddr) -> SocketAddr {
    match (local, addr) {
        (SocketAddr::V6(_), SocketAddr::V4(a)) => SocketAddrV6::new(a.ip().to_ipv6_mapped(), a.port(), 0, 0).into(),
        _ => addr,
    }
}

/// The IPv4 side of a socket bound at `local`: `0.0.0.0:PORT` for a dual-stack socket, the
/// plain IPv4 address for an IPv4-mapped one, else `local` itself. What IPv4-only techniques
/// (port mapping on an IPv4 gateway) map.
pub fn ipv4_view(local: SocketAddr) -> SocketAddr {
    if is_dual_stack(local) {
        SocketAddr::new(Ipv4Addr::UNSPECIFIED.into(), local.port())
    } else {
        canonical(local)
    }
}

/// Whether `ip` is a global unicast IPv6 address, one that peers elsewhere may reach: not
/// unspecified, loopback, link-local, multicast, unique local (fc00::/7) or IPv4-mapped.
pub fn is_global_ipv6(ip: Ipv6Addr) -> bool {
    !(ip.is_unspecified()
        || ip.is_loopback()
        || ip.is_unicast_link_local()
        || ip.is_multicast()
        || ip.to_ipv4_mapped().is_some()
        || crate::endpoint::is_private(IpAddr::V6(ip)))
}

/// Whether `observed`, our address as a server saw it, is open to unsolicited packets because it
/// is one of our own (`locals`: no NAT in between). natt takes an IPv4 host with a public
/// address as open, as before; an IPv6 host sits behind its router's stateful firewall
/// (RFC 6092) even without NAT, so an IPv6 address is not open for that (a pinhole, or a
/// filtering test that proves it, makes it open).
pub fn open_without_nat(locals: &[SocketAddr], observed: SocketAddr) -> bool {
    observed.is_ipv4() && locals.contains(&observed)
}

/// Whether this host has a global IPv6 address on some interface ([`is_global_ipv6`]).
pub fn host_has_global_ipv6() -> bool {
    match if_addrs::get_if_addrs() {
        Ok(ifs) => ifs
            .iter()
            .any(|i| matches!(i.ip(), IpAddr::V6(ip) if is_global_ipv6(ip))),
        Err(e) => {
            log::debug!("cannot list interfaces: {e}");
            false
        }
    }
}

/// Where natt binds a new socket on every interface: `[::]:0`, dual-stack, where the host has a
/// global IPv6 address, else `0.0.0.0:0`.
pub fn any_address() -> SocketAddr {
    if host_has_global_ipv6() {
        SocketAddr::new(Ipv6Addr::UNSPECIFIED.into(), 0)
    } else {
        SocketAddr::new(Ipv4Addr::UNSPECIFIED.into(), 0)
    }
}

/// A UDP socket bound at `addr`; at the IPv6 unspecified address, dual-stack (`IPV6_V6ONLY`
/// off).
pub fn bind_udp(addr: SocketAddr) -> io::Result<UdpSocket> {
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    if is_dual_stack(addr) {
        socket.set_only_v6(false)?;
    }
    socket.bind(&addr.into())?;
    Ok(socket.into())
}

/// The far end of `stream`, plain IPv4 for an IPv4 peer of a dual-stack socket.
pub fn peer_addr(stream: &TcpStream) -> io::Result<SocketAddr> {
    stream.peer_addr().map(canonical)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn mapped_addresses_become_ipv4() {
        assert_eq!(canonical(a("[::ffff:203.0.113.5]:7")), a("203.0.113.5:7"));
        assert_eq!(canonical(a("[2001:db8::1]:7")), a("[2001:db8::1]:7"));
        assert_eq!(canonical(a("1.2.3.4:5")), a("1.2.3.4:5"));
    }

    #[test]
    fn dual_stack_sockets_reach_both_families() {
        let dual = a("[::]:9");
        assert!(reaches(dual, a("1.2.3.4:5")) && reaches(dual, a("[2001:db8::1]:5")));
        assert!(!reaches(a("0.0.0.0:9"), a("[2001:db8::1]:5")));
        assert!(!reaches(a("[2001:db8::2]:9"), a("1.2.3.4:5")));
        assert_eq!(for_socket(dual, a("1.2.3.4:5")), a("[::ffff:1.2.3.4]:5"));
        assert_eq!(for_socket(a("0.0.0.0:1"), a("1.2.3.4:5")), a("1.2.3.4:5"));
        assert_eq!(ipv4_view(dual), a("0.0.0.0:9"));
        assert_eq!(ipv4_view(a("[::ffff:10.0.0.1]:9")), a("10.0.0.1:9"));
    }

    #[test]
    fn ipv6_without_nat_is_still_behind_a_firewall() {
        let locals = [a("203.0.113.5:7"), a("[2001:db8::2]:7")];
        assert!(open_without_nat(&locals, a("203.0.113.5:7")));
        assert!(!open_without_nat(&locals, a("[2001:db8::2]:7")));
        assert!(!open_without_nat(&locals, a("198.51.100.1:7")));
    }

    #[test]
    fn a_dual_stack_socket_talks_to_ipv4_peers_as_plain_ipv4() {
        let Ok(dual) = bind_udp(a("[::]:0")) else {
            println!("skipped: no IPv6 on this host");
            return;
        };
        let local = dual.local_addr().unwrap();
        assert!(is_dual_stack(local));
        let v4 = UdpSocket::bind("127.0.0.1:0").unwrap();
        let v4_addr = v4.local_addr().unwrap();
        let timeout = Some(std::time::Duration::from_secs(5));
        dual.set_read_timeout(timeout).unwrap();
        v4.set_read_timeout(timeout).unwrap();
        // Out: an IPv4 address in the socket's family.
        dual.send_to(b"to v4", for_socket(local, v4_addr)).unwrap();
        let mut buf = [0u8; 16];
        let (n, _) = v4.recv_from(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"to v4");
        // In: the IPv4 peer, mapped by the kernel, made plain again.
        v4.send_to(b"to dual", (std::net::Ipv4Addr::LOCALHOST, local.port()))
            .unwrap();
        let (n, from) = dual.recv_from(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"to dual");
        assert!(from.is_ipv6(), "the kernel reports {from}");
        assert_eq!(canonical(from), v4_addr);
    }

    #[test]
    fn global_ipv6() {
        for g in ["2001:db8:1::2", "2a00::1"] {
            assert!(is_global_ipv6(g.parse().unwrap()), "{g}");
        }
        for l in ["::", "::1", "fe80::1", "ff02::1", "fd00::1", "::ffff:1.2.3.4"] {
            assert!(!is_global_ipv6(l.parse().unwrap()), "{l}");
        }
    }
}
