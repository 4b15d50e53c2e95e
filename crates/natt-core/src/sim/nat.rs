//! [`Nat`]: a router's address translation and filtering, in the terms of RFC 4787.
//!
//! - **Mapping**: which outgoing flows of one internal socket share an external port: all of
//!   them ([`Mapping::EndpointIndependent`]), those to one remote IP
//!   ([`Mapping::AddressDependent`]), or only those to one remote IP and port
//!   ([`Mapping::AddressAndPortDependent`], a "symmetric" NAT).
//! - **Port assignment**: a new mapping keeps the internal port when no other mapping has it
//!   ([`PortAssignment::Preserving`], as Linux `MASQUERADE` does), takes a random free port
//!   ([`PortAssignment::Random`], as `MASQUERADE --random-fully` does), or the next free port
//!   after the last one it gave ([`PortAssignment::Sequential`], as many carrier and older home
//!   NATs do).
//! - **Filtering**: which inbound datagrams to a mapped port get in: from anyone
//!   ([`Filtering::EndpointIndependent`], "full cone"), from IPs the mapping has sent to
//!   ([`Filtering::AddressDependent`]), or from the IPs and ports it has sent to
//!   ([`Filtering::AddressAndPortDependent`], "port restricted", conntrack's rule).
//!
//! It is also the home router's firewall of the lab (`xtask/src/lab/nat.rs`): an inbound datagram
//! that no mapping lets in is dropped, and leaves no state behind. In particular it creates no
//! mapping, so a peer's early punch packet cannot make the router pick another port for the
//! host's own later packet. Mappings never expire; hairpinning (a host reaching its own
//! router's public address), port forwarding (DNAT) and ICMP are not modelled.

#![deny(clippy::disallowed_methods)] // a protocol core: see clippy.toml

use std::net::{IpAddr, SocketAddr};

use rand::Rng;
use rand::rngs::StdRng;

/// Which outgoing flows of one internal socket share one external port (RFC 4787 section 4.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mapping {
    /// One external port for all destinations.
    EndpointIndependent,
    /// One external port per destination IP.
    AddressDependent,
    /// One external port per destination IP and port: symmetric.
    AddressAndPortDependent,
}

/// Which port a new mapping gets (RFC 4787 section 4.2.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PortAssignment {
    /// The internal port when it is free, else a random free one.
    Preserving,
    /// A random free port.
    Random,
    /// The next free port after the last one given (the first: the internal port).
    Sequential,
}

/// Which inbound datagrams to a mapped port are let in (RFC 4787 section 5).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Filtering {
    /// Any: full cone.
    EndpointIndependent,
    /// From IPs the mapping has sent to.
    AddressDependent,
    /// From IPs and ports the mapping has sent to: port restricted.
    AddressAndPortDependent,
}

/// One external port of the NAT, and the flows through it.
#[derive(Debug, Clone)]
struct Binding {
    internal: SocketAddr,
    /// The destination the mapping is for: none (endpoint-independent), its IP with port 0, or
    /// its IP and port.
    key: Option<SocketAddr>,
    external_port: u16,
    /// Where the mapping has sent to, for filtering.
    contacted: Vec<SocketAddr>,
}

/// A NAT with its public address and its table of mappings.
#[derive(Debug, Clone)]
pub struct Nat {
    public_ip: IpAddr,
    mapping: Mapping,
    ports: PortAssignment,
    filtering: Filtering,
    bindings: Vec<Binding>,
    /// The last port given, for [`PortAssignment::Sequential`].
    last_port: Option<u16>,
}

/// The lowest port a NAT assigns at random.
const FIRST_RANDOM_PORT: u16 = 1024;

impl Nat {
    /// A NAT at `public_ip` with the given behaviours and no mappings yet.
    pub fn new(public_ip: IpAddr, mapping: Mapping, ports: PortAssignment, filtering: Filtering) -> Self {
        Nat {
            public_ip,
            mapping,
            ports,
            filtering,
            bindings: Vec::new(),
            last_port: None,
        }
    }

    /// Full cone: endpoint-independent mapping and filtering, ports preserved.
    pub fn full_cone(public_ip: IpAddr) -> Self {
        Self::new(
            public_ip,
            Mapping::EndpointIndependent,
            PortAssignment::Preserving,
            Filtering::EndpointIndependent,
        )
    }

    /// Restricted cone: endpoint-independent mapping, address-dependent filtering.
    pub fn restricted_cone(public_ip: IpAddr) -> Self {
        Self::new(
            public_ip,
            Mapping::EndpointIndependent,
            PortAssignment::Preserving,
            Filtering::AddressDependent,
        )
    }

    /// Port restricted, the common home router (Linux `MASQUERADE`): endpoint-independent
    /// mapping preserving ports, address-and-port-dependent filtering.
    pub fn port_restricted(public_ip: IpAddr) -> Self {
        Self::new(
            public_ip,
            Mapping::EndpointIndependent,
            PortAssignment::Preserving,
            Filtering::AddressAndPortDependent,
        )
    }

    /// Symmetric (Linux `MASQUERADE --random-fully`): a random port per destination,
    /// address-and-port-dependent filtering.
    pub fn symmetric(public_ip: IpAddr) -> Self {
        Self::new(
            public_ip,
            Mapping::AddressAndPortDependent,
            PortAssignment::Random,
            Filtering::AddressAndPortDependent,
        )
    }

    /// Symmetric with sequential ports: a port per destination, each the next after the last
    /// one given; address-and-port-dependent filtering.
    pub fn symmetric_sequential(public_ip: IpAddr) -> Self {
        Self::new(
            public_ip,
            Mapping::AddressAndPortDependent,
            PortAssignment::Sequential,
            Filtering::AddressAndPortDependent,
        )
    }

    /// The NAT's public address.
    pub fn public_ip(&self) -> IpAddr {
        self.public_ip
    }

    /// How many mappings the NAT holds.
    pub fn mappings(&self) -> usize {
        self.bindings.len()
    }

    /// The external address of the mapping `internal` would use towards `remote`, if it exists.
    pub fn mapped(&self, internal: SocketAddr, remote: SocketAddr) -> Option<SocketAddr> {
        let key = self.key(remote);
        self.bindings
            .iter()
            .find(|b| b.internal == internal && b.key == key)
            .map(|b| SocketAddr::new(self.public_ip, b.external_port))
    }

    fn key(&self, remote: SocketAddr) -> Option<SocketAddr> {
        match self.mapping {
            Mapping::EndpointIndependent => None,
            Mapping::AddressDependent => Some(SocketAddr::new(remote.ip(), 0)),
            Mapping::AddressAndPortDependent => Some(remote),
        }
    }

    fn port_free(&self, port: u16) -> bool {
        port != 0 && self.bindings.iter().all(|b| b.external_port != port)
    }

    /// A free port by the NAT's port assignment, or `None` when every port is taken.
    fn new_port(&self, internal_port: u16, rng: &mut StdRng) -> Option<u16> {
        if self.ports == PortAssignment::Preserving && self.port_free(internal_port) {
            return Some(internal_port);
        }
        if self.ports == PortAssignment::Sequential {
            let first = self.last_port.map_or(internal_port, |p| p.wrapping_add(1));
            let first = first.max(FIRST_RANDOM_PORT);
            return (first..=u16::MAX)
                .chain(FIRST_RANDOM_PORT..first)
                .find(|p| self.port_free(*p));
        }
        // Random tries first; a full scan only when the table is nearly full.
        for _ in 0..64 {
            let port = rng.random_range(FIRST_RANDOM_PORT..=u16::MAX);
            if self.port_free(port) {
                return Some(port);
            }
        }
        (FIRST_RANDOM_PORT..=u16::MAX).find(|p| self.port_free(*p))
    }

    /// Translates an outgoing datagram from `internal` to `remote`: the source address it
    /// leaves with, creating the mapping if needed (`None` when the NAT has no port left).
    pub fn outbound(&mut self, internal: SocketAddr, remote: SocketAddr, rng: &mut StdRng) -> Option<SocketAddr> {
        let key = self.key(remote);
        let index = match self
            .bindings
            .iter()
            .position(|b| b.internal == internal && b.key == key)
        {
            Some(i) => i,
            None => {
                let external_port = self.new_port(internal.port(), rng)?;
                self.last_port = Some(external_port);
                self.bindings.push(Binding {
                    internal,
                    key,
                    external_port,
                    contacted: Vec::new(),
                });
                self.bindings.len() - 1
            }
        };
        let binding = self.bindings.get_mut(index)?;
        if !binding.contacted.contains(&remote) {
            binding.contacted.push(remote);
        }
        Some(SocketAddr::new(self.public_ip, binding.external_port))
    }

    /// Filters and translates an inbound datagram from `remote` to our `external_port`: the
    /// internal address it goes to, or `None` if it is dropped (no state is kept of it).
    pub fn inbound(&self, remote: SocketAddr, external_port: u16) -> Option<SocketAddr> {
        self.bindings
            .iter()
            .filter(|b| b.external_port == external_port)
            .find(|b| match self.filtering {
                Filtering::EndpointIndependent => true,
                Filtering::AddressDependent => b.contacted.iter().any(|c| c.ip() == remote.ip()),
                Filtering::AddressAndPortDependent => b.contacted.contains(&remote),
            })
            .map(|b| b.internal)
    }
}

#[cfg(test)]
#[allow(clippy::disallowed_methods)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    fn a(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    const INSIDE: &str = "192.168.1.2:5000";
    const PEER: &str = "203.0.113.9:7000";

    #[test]
    fn port_restricted_keeps_the_port_and_lets_in_only_contacted_endpoints() {
        let mut rng = StdRng::seed_from_u64(1);
        let mut nat = Nat::port_restricted("198.51.100.1".parse().unwrap());
        // An early inbound datagram is dropped and changes nothing.
        assert_eq!(nat.inbound(a(PEER), 5000), None);
        assert_eq!(nat.mappings(), 0);
        let out = nat.outbound(a(INSIDE), a(PEER), &mut rng).unwrap();
        assert_eq!(out, a("198.51.100.1:5000"));
        // Endpoint-independent: the same port towards anyone.
        assert_eq!(nat.outbound(a(INSIDE), a("203.0.113.10:1"), &mut rng), Some(out));
        assert_eq!(nat.inbound(a(PEER), 5000), Some(a(INSIDE)));
        assert_eq!(nat.inbound(a("203.0.113.9:7001"), 5000), None);
        assert_eq!(nat.inbound(a("203.0.113.11:7000"), 5000), None);
        // Another host from the same port gets another external port.
        let other = nat.outbound(a("192.168.1.3:5000"), a(PEER), &mut rng).unwrap();
        assert_ne!(other.port(), 5000);
    }

    #[test]
    fn filtering_by_address_or_not_at_all() {
        let mut rng = StdRng::seed_from_u64(1);
        let mut nat = Nat::restricted_cone("198.51.100.1".parse().unwrap());
        nat.outbound(a(INSIDE), a(PEER), &mut rng);
        assert_eq!(nat.inbound(a("203.0.113.9:1"), 5000), Some(a(INSIDE)));
        assert_eq!(nat.inbound(a("203.0.113.10:7000"), 5000), None);
        let mut nat = Nat::full_cone("198.51.100.1".parse().unwrap());
        assert_eq!(nat.inbound(a(PEER), 5000), None, "no mapping yet");
        nat.outbound(a(INSIDE), a(PEER), &mut rng);
        assert_eq!(nat.inbound(a("203.0.113.10:1"), 5000), Some(a(INSIDE)));
    }

    #[test]
    fn symmetric_maps_each_destination_to_its_own_random_port() {
        let mut rng = StdRng::seed_from_u64(1);
        let mut nat = Nat::symmetric("198.51.100.1".parse().unwrap());
        let p1 = nat.outbound(a(INSIDE), a(PEER), &mut rng).unwrap();
        let p2 = nat.outbound(a(INSIDE), a("203.0.113.9:7001"), &mut rng).unwrap();
        assert_ne!(p1, p2);
        assert_eq!(nat.outbound(a(INSIDE), a(PEER), &mut rng), Some(p1));
        assert_eq!(nat.mapped(a(INSIDE), a(PEER)), Some(p1));
        assert_eq!(nat.inbound(a(PEER), p2.port()), None);
        let mut nat = Nat::new(
            "198.51.100.1".parse().unwrap(),
            Mapping::AddressDependent,
            PortAssignment::Preserving,
            Filtering::AddressAndPortDependent,
        );
        let p1 = nat.outbound(a(INSIDE), a(PEER), &mut rng).unwrap();
        assert_eq!(nat.outbound(a(INSIDE), a("203.0.113.9:1"), &mut rng), Some(p1));
        assert_ne!(nat.outbound(a(INSIDE), a("203.0.113.10:1"), &mut rng), Some(p1));
    }

    #[test]
    fn sequential_ports_follow_each_other_whoever_asks() {
        let mut rng = StdRng::seed_from_u64(1);
        let mut nat = Nat::symmetric_sequential("198.51.100.1".parse().unwrap());
        let ports: Vec<u16> = [(INSIDE, PEER), (INSIDE, "203.0.113.9:7001"), ("192.168.1.3:9", PEER)]
            .iter()
            .map(|(from, to)| nat.outbound(a(from), a(to), &mut rng).unwrap().port())
            .collect();
        assert_eq!(ports, [5000, 5001, 5002]);
    }
}
