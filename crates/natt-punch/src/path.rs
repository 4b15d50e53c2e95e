//! Which addresses a punch talks to, and which paths it accepts: the rules that keep a punch
//! from being steered by anyone who has not read the tokens, shared by the UDP and TCP punch.
//!
//! - **Targets** are the peer's endpoints that can be reached from our socket, local ones
//!   first. Endpoints that cannot be a peer are refused: port 0, unspecified, multicast and
//!   broadcast addresses, reserved IPv4 (`0.0.0.0/8`, `240.0.0.0/4`), link-local addresses,
//!   loopback unless our own socket is on loopback, and our own endpoints.
//! - **Peer addresses**: a punch sends only to, and takes packets and streams only from,
//!   addresses whose IP the peer's token lists (any port: behind a NAT whose mapping varies by
//!   destination, the peer's packets come from a port no server saw). A hostile token cannot
//!   turn natt towards third hosts beyond the endpoints it lists, and a spoofed packet cannot
//!   make natt send to an address of the spoofer's choosing.
//! - **Observed addresses** ([`crate::wire`]): a message counts only if the address the sender
//!   saw us at has an IP among our own endpoints'. A party that connects to both peers and
//!   relays between them is the far end of both connections, so what each peer observed is
//!   the relay's address, which the other peer refuses.
//!
//! - **Relayed streams** (TCP through a TURN relay, RFC 6062): the peer's `turn` endpoints
//!   are targets like any other, marked relayed ([`Paths::is_relayed_target`]); a stream that
//!   our own relay hands us is bound to our relayed address exactly (the peer must have seen
//!   us there: [`Paths::is_own_relayed`]), and a direct TCP stream to an IP of ours that is not
//!   a relay's ([`Paths::sees_us_directly`]).
//!
//! What the checks compare is the IP, not the port, for the reason above. So a relay would
//! need hosts that share each peer's public IP address (behind the same NAT or carrier-grade
//! NAT as each of them), or to be on the path between them. A side behind a NAT therefore needs
//! its public address in its token (from STUN, the simple protocol, UPnP or PCP), except
//! towards a peer on its own network.

#![deny(clippy::disallowed_methods)] // a protocol core: see clippy.toml

use std::net::{IpAddr, SocketAddr};

use natt_core::MappedSocketAddr;

use crate::error::PunchError;

/// The most addresses probed (the peer's endpoints plus peer-reflexive ones).
pub const MAX_TARGETS: usize = 32;

/// Why `addr` cannot be a peer's endpoint for a socket bound at `local`, if it cannot: port 0,
/// or an address that natt never takes as a public one
/// ([`natt_core::endpoint::unusable_external_ip`]), except loopback between two sockets on
/// loopback.
pub fn unusable(local: SocketAddr, addr: SocketAddr) -> Option<&'static str> {
    if addr.port() == 0 {
        return Some("port 0");
    }
    if addr.ip().is_loopback() && local.ip().is_loopback() {
        return None;
    }
    natt_core::endpoint::unusable_external_ip(addr.ip())
}

/// Our side's view of the peers' addresses for one punch.
#[derive(Debug, Clone)]
pub struct Paths {
    targets: Vec<SocketAddr>,
    locals: Vec<SocketAddr>,
    peer_ips: Vec<IpAddr>,
    own_ips: Vec<IpAddr>,
    /// The peer's relayed (`turn`) endpoints among the targets.
    relayed_targets: Vec<SocketAddr>,
    /// Our own relayed (`turn`) endpoints.
    own_relayed: Vec<SocketAddr>,
    /// The IPs of our endpoints that are not relayed ones, and the socket's.
    direct_own_ips: Vec<IpAddr>,
}

/// The technique name of relayed endpoints (natt-turn's).
pub const TURN: &str = "turn";

impl Paths {
    /// The paths from a socket bound at `local`, with `ours` our endpoints (as in our token) and
    /// `theirs` the peer's. Fails when no endpoint of the peer is usable, saying why each was
    /// refused.
    pub fn new(local: SocketAddr, ours: &[MappedSocketAddr], theirs: &[MappedSocketAddr]) -> Result<Paths, PunchError> {
        let rank = |e: &MappedSocketAddr| match (e.technique.as_str(), e.nat_restricted) {
            (natt_core::local::LOCAL, _) => 0,
            (_, false) => 1,
            (_, true) => 2,
        };
        // Tokens carry plain IPv4 addresses; an IPv4-mapped one is taken as such.
        let theirs: Vec<MappedSocketAddr> = theirs
            .iter()
            .map(|e| {
                MappedSocketAddr::new(
                    natt_core::family::canonical(e.addr),
                    e.nat_restricted,
                    e.technique.clone(),
                )
            })
            .collect();
        let mut eps: Vec<&MappedSocketAddr> = theirs.iter().collect();
        eps.sort_by_key(|e| rank(e));
        let mut refused: Vec<(SocketAddr, &'static str)> = Vec::new();
        let mut targets: Vec<SocketAddr> = Vec::new();
        for e in eps {
            let why = if !natt_core::family::reaches(local, e.addr) {
                Some("other address family than our socket")
            } else if ours.iter().any(|o| o.addr == e.addr) {
                Some("one of our own endpoints")
            } else {
                unusable(local, e.addr)
            };
            match why {
                Some(why) => refused.push((e.addr, why)),
                None if !targets.contains(&e.addr) && targets.len() < MAX_TARGETS => targets.push(e.addr),
                None => {}
            }
        }
        if targets.is_empty() {
            return Err(if refused.is_empty() {
                PunchError::NoEndpoint
            } else {
                PunchError::UnusableEndpoints(
                    refused
                        .iter()
                        .map(|(a, why)| format!("{a}: {why}"))
                        .collect::<Vec<_>>()
                        .join("; "),
                )
            });
        }
        for (a, why) in &refused {
            log::debug!("peer endpoint {a} not tried: {why}");
        }
        let locals = theirs
            .iter()
            .filter(|e| e.technique == natt_core::local::LOCAL && targets.contains(&e.addr))
            .map(|e| e.addr)
            .collect();
        let mut peer_ips: Vec<IpAddr> = targets.iter().map(SocketAddr::ip).collect();
        peer_ips.sort();
        peer_ips.dedup();
        let mut own_ips: Vec<IpAddr> = ours.iter().map(|e| e.addr.ip()).collect();
        if !local.ip().is_unspecified() {
            own_ips.push(local.ip().to_canonical());
        }
        own_ips.sort();
        own_ips.dedup();
        let relayed_targets = theirs
            .iter()
            .filter(|e| e.technique == TURN && targets.contains(&e.addr))
            .map(|e| e.addr)
            .collect();
        let own_relayed = ours
            .iter()
            .filter(|e| e.technique == TURN)
            .map(|e| natt_core::family::canonical(e.addr))
            .collect();
        let mut direct_own_ips: Vec<IpAddr> = ours
            .iter()
            .filter(|e| e.technique != TURN)
            .map(|e| e.addr.ip().to_canonical())
            .collect();
        if !local.ip().is_unspecified() {
            direct_own_ips.push(local.ip().to_canonical());
        }
        direct_own_ips.sort();
        direct_own_ips.dedup();
        Ok(Paths {
            targets,
            locals,
            peer_ips,
            own_ips,
            relayed_targets,
            own_relayed,
            direct_own_ips,
        })
    }

    /// The peer's usable endpoints, local ones first, then those not behind a restricting NAT,
    /// then the rest.
    pub fn targets(&self) -> &[SocketAddr] {
        &self.targets
    }

    /// The peer's local-interface endpoints among the targets.
    pub fn peer_locals(&self) -> &[SocketAddr] {
        &self.locals
    }

    /// Whether `addr` has an IP the peer's token lists: the only addresses a punch sends to or
    /// takes anything from.
    pub fn is_peer(&self, addr: SocketAddr) -> bool {
        self.peer_ips.contains(&addr.ip())
    }

    /// Whether `observed`, where a message's sender saw us, is one of our addresses.
    pub fn sees_us(&self, observed: SocketAddr) -> bool {
        self.own_ips.contains(&observed.ip())
    }

    /// Whether `target` is one of the peer's relayed (`turn`) endpoints: a stream to it goes
    /// through the peer's relay.
    pub fn is_relayed_target(&self, target: SocketAddr) -> bool {
        self.relayed_targets.contains(&target)
    }

    /// Whether `observed` is exactly one of our relayed addresses: what a stream that our own
    /// relay hands us must be bound to.
    pub fn is_own_relayed(&self, observed: SocketAddr) -> bool {
        self.own_relayed.contains(&natt_core::family::canonical(observed))
    }

    /// As [`sees_us`](Self::sees_us), for a direct stream: the IPs of our relayed addresses
    /// (the relay's) do not count.
    pub fn sees_us_directly(&self, observed: SocketAddr) -> bool {
        self.direct_own_ips.contains(&observed.ip().to_canonical())
    }

    /// Whether every target is a private address (RFC 1918, shared 100.64/10, IPv6 unique
    /// local): the peer's token names no address outside its own network.
    pub fn peer_private_only(&self) -> bool {
        self.targets.iter().all(|a| natt_core::endpoint::is_private(a.ip()))
    }

    /// The IPs of our own endpoints, for diagnostics.
    pub fn own_ips(&self) -> &[IpAddr] {
        &self.own_ips
    }
}

#[cfg(test)]
#[allow(clippy::disallowed_methods)]
mod tests {
    use super::*;

    fn ep(s: &str, restricted: bool, t: &str) -> MappedSocketAddr {
        MappedSocketAddr::new(s.parse().unwrap(), restricted, t)
    }

    fn any() -> SocketAddr {
        "0.0.0.0:1".parse().unwrap()
    }

    #[test]
    fn local_endpoints_come_first() {
        let eps = [
            ep("203.0.113.1:5", true, "stun"),
            ep("203.0.113.1:6", false, "upnp"),
            ep("192.168.1.2:5", false, "local"),
            ep("[2001:db8::1]:5", false, "local"),
            ep("203.0.113.1:5", true, "simple"),
        ];
        let p = Paths::new(any(), &[], &eps).unwrap();
        let s: Vec<String> = p.targets().iter().map(ToString::to_string).collect();
        assert_eq!(s, ["192.168.1.2:5", "203.0.113.1:6", "203.0.113.1:5"]);
        assert_eq!(p.peer_locals(), &["192.168.1.2:5".parse::<SocketAddr>().unwrap()]);
        assert!(p.is_peer("203.0.113.1:40000".parse().unwrap()));
        assert!(!p.is_peer("203.0.113.2:5".parse().unwrap()));
    }

    #[test]
    fn unusable_endpoints_are_refused_with_reasons() {
        let bad = [
            ep("127.0.0.1:5", false, "local"),
            ep("0.0.0.0:5", false, "stun"),
            ep("224.0.0.1:5", false, "stun"),
            ep("255.255.255.255:5", false, "stun"),
            ep("203.0.113.9:0", false, "stun"),
            ep("240.1.2.3:5", false, "stun"),
            ep("198.51.100.4:7", false, "local"),
        ];
        let ours = [ep("198.51.100.4:7", false, "local")];
        let e = Paths::new(any(), &ours, &bad).unwrap_err();
        let PunchError::UnusableEndpoints(why) = &e else {
            panic!("{e:?}")
        };
        for word in [
            "loopback",
            "unspecified",
            "multicast",
            "broadcast",
            "port 0",
            "reserved",
            "our own",
        ] {
            assert!(why.contains(word), "{word}: {why}");
        }
        assert!(matches!(Paths::new(any(), &[], &[]), Err(PunchError::NoEndpoint)));
        // Loopback is fine between two sockets on loopback.
        let lo: SocketAddr = "127.0.0.1:9".parse().unwrap();
        assert!(Paths::new(lo, &[], &bad).is_ok());
    }

    #[test]
    fn a_token_of_private_addresses_is_told() {
        let p = Paths::new(
            any(),
            &[],
            &[ep("192.168.1.2:5", false, "local"), ep("100.64.1.2:5", false, "stun")],
        )
        .unwrap();
        assert!(p.peer_private_only());
        let p = Paths::new(
            any(),
            &[],
            &[ep("192.168.1.2:5", false, "local"), ep("203.0.113.1:5", true, "stun")],
        )
        .unwrap();
        assert!(!p.peer_private_only());
    }

    #[test]
    fn we_are_seen_only_at_our_own_ips() {
        let ours = [ep("192.168.1.2:5", false, "local"), ep("203.0.113.101:5", true, "stun")];
        let p = Paths::new(any(), &ours, &[ep("203.0.113.102:6", true, "stun")]).unwrap();
        assert!(p.sees_us("203.0.113.101:33333".parse().unwrap()));
        assert!(p.sees_us("192.168.1.2:5".parse().unwrap()));
        assert!(!p.sees_us("198.51.100.66:5".parse().unwrap()));
    }

    #[test]
    fn relayed_endpoints_bind_relayed_streams_only() {
        let ours = [
            ep("192.168.1.2:5", false, "local"),
            ep("203.0.113.101:5", true, "stun"),
            ep("203.0.113.30:50000", true, TURN),
        ];
        let theirs = [
            ep("203.0.113.102:6", true, "stun"),
            ep("203.0.113.30:50002", true, TURN),
        ];
        let p = Paths::new(any(), &ours, &theirs).unwrap();
        assert!(p.is_relayed_target("203.0.113.30:50002".parse().unwrap()));
        assert!(!p.is_relayed_target("203.0.113.102:6".parse().unwrap()));
        // Our relayed address binds a stream from our relay, exactly.
        assert!(p.is_own_relayed("203.0.113.30:50000".parse().unwrap()));
        assert!(!p.is_own_relayed("203.0.113.30:50001".parse().unwrap()));
        assert!(!p.is_own_relayed("203.0.113.101:5".parse().unwrap()));
        // A direct stream is not bound to the relay's IP.
        assert!(p.sees_us_directly("203.0.113.101:40000".parse().unwrap()));
        assert!(!p.sees_us_directly("203.0.113.30:50000".parse().unwrap()));
        assert!(p.sees_us("203.0.113.30:50000".parse().unwrap()));
    }
}
