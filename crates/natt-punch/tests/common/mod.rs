//! What the simulated-network tests (`sim.rs`, `hardnat_sim.rs`) share: address parsing, the
//! punch port, and a side behind a NAT that learns its public addresses from STUN servers, as
//! `MappedUdpSocket` would.

#![allow(dead_code, clippy::unwrap_used)]

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use natt_core::MappedSocketAddr;
use natt_core::sim::{HostId, Link, Nat, Network};

/// The punch port of every host (the hard side's extra sockets follow it).
pub const PORT: u16 = 5000;

pub fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

pub fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// A kind of NAT, by its public address.
pub type NatKind = fn(IpAddr) -> Nat;

/// One side: its host, and the endpoints its token lists.
pub struct Side {
    pub host: HostId,
    pub local: SocketAddr,
    pub endpoints: Vec<MappedSocketAddr>,
}

/// A host `.2` of the private network `lan`, behind a NAT of `kind` at `public`, that learns
/// its public address from each of the STUN servers `stun` (its endpoints: the local one, then
/// each address a server saw, once).
pub fn side_behind(net: &mut Network, kind: NatKind, public: &str, lan: &str, stun: &[&str]) -> Side {
    let nat = net.add_nat(kind(ip(public)));
    let host = net.add_host(ip(&format!("{lan}.2")), Some(nat), Link::default());
    let local = SocketAddr::new(net.ip(host).unwrap(), PORT);
    let mut endpoints = vec![MappedSocketAddr::new(local, false, "local")];
    for server in stun {
        net.send(host, PORT, addr(server), b"binding request".to_vec());
        let got = net.advance(net.now() + Duration::from_secs(1));
        assert_eq!(got.len(), 1, "the STUN request arrives");
        natt_core::endpoint::merge_endpoints(&mut endpoints, [MappedSocketAddr::new(got[0].from, true, "stun")]);
    }
    Side { host, local, endpoints }
}
