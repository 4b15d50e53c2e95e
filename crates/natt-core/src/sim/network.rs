//! [`Network`]: hosts, the NATs they sit behind and their links, and the datagrams in flight
//! between them, moved through virtual time.
//!
//! A host has one IP address: a private one on its NAT's network, or a public one. A datagram
//! sent to an address crosses the sender's [`Link`]; then, at the routers (which add no delay):
//! - to a host on the same NAT's network, it goes straight there, untranslated;
//! - otherwise the sender's NAT, if any, maps its source ([`Nat::outbound`]); it then reaches
//!   the public host of that IP, or the NAT of that public IP, which filters it
//!   ([`Nat::inbound`]) and forwards it; any other address is unreachable;
//!
//! and finally it crosses the receiver's link. Private addresses may repeat on different NATs'
//! networks, as they do in homes. A **tap** gives a host a copy of every datagram another host
//! sends, as it leaves (a party on the same network, or on the path), to test what a third
//! party can do with what it captures.

#![deny(clippy::disallowed_methods)] // a protocol core: see clippy.toml

use std::net::{IpAddr, SocketAddr};
use std::time::Instant;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::link::Link;
use super::nat::Nat;
use super::schedule::Schedule;

/// A host of a [`Network`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct HostId(pub usize);

/// A NAT of a [`Network`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NatId(pub usize);

/// A datagram delivered to a host's port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    /// The receiving host.
    pub host: HostId,
    /// The port it arrived at.
    pub port: u16,
    /// The source address as the receiver sees it (after any NAT).
    pub from: SocketAddr,
    /// The datagram.
    pub payload: Vec<u8>,
}

/// What became of the datagrams sent so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Datagrams sent.
    pub sent: u64,
    /// Lost on a link.
    pub lost: u64,
    /// Dropped by a NAT's filtering (or firewall).
    pub filtered: u64,
    /// To an address no route leads to (another network's private address, a NAT's own public
    /// address from behind it, a NAT out of ports).
    pub unroutable: u64,
    /// Delivered to a host.
    pub delivered: u64,
}

#[derive(Debug)]
struct Host {
    ip: IpAddr,
    nat: Option<NatId>,
    link: Link,
}

#[derive(Debug)]
enum Hop {
    /// A datagram that has crossed its sender's link, at the routers.
    Routers {
        sender: HostId,
        from: SocketAddr,
        to: SocketAddr,
        payload: Vec<u8>,
    },
    /// A datagram that has crossed its receiver's link.
    Arrived(Delivery),
}

/// A simulated network.
#[derive(Debug)]
pub struct Network {
    now: Instant,
    rng: StdRng,
    hosts: Vec<Host>,
    nats: Vec<Nat>,
    taps: Vec<(HostId, HostId, u16)>,
    in_flight: Schedule<Hop>,
    stats: Stats,
}

impl Network {
    /// An empty network whose virtual time starts at `start`, drawing losses and NAT ports from
    /// a generator seeded with `seed`.
    pub fn new(start: Instant, seed: u64) -> Self {
        Network {
            now: start,
            rng: StdRng::seed_from_u64(seed),
            hosts: Vec::new(),
            nats: Vec::new(),
            taps: Vec::new(),
            in_flight: Schedule::new(),
            stats: Stats::default(),
        }
    }

    /// The virtual time.
    pub fn now(&self) -> Instant {
        self.now
    }

    /// Adds a NAT.
    pub fn add_nat(&mut self, nat: Nat) -> NatId {
        self.nats.push(nat);
        NatId(self.nats.len() - 1)
    }

    /// Adds a host at `ip`, behind `nat` (`ip` is then an address of that NAT's network) or on
    /// the Internet, with its access `link`.
    pub fn add_host(&mut self, ip: IpAddr, nat: Option<NatId>, link: Link) -> HostId {
        self.hosts.push(Host { ip, nat, link });
        HostId(self.hosts.len() - 1)
    }

    /// Gives `host` another access link, from now on.
    pub fn set_link(&mut self, host: HostId, link: Link) {
        if let Some(h) = self.hosts.get_mut(host.0) {
            h.link = link;
        }
    }

    /// From now on, `spy` gets at `port` a copy of every datagram `host` sends, as it leaves
    /// (its source as `host` sent it).
    pub fn tap(&mut self, host: HostId, spy: HostId, port: u16) {
        self.taps.push((host, spy, port));
    }

    /// The host's own address.
    pub fn ip(&self, host: HostId) -> Option<IpAddr> {
        self.hosts.get(host.0).map(|h| h.ip)
    }

    /// A NAT, to look at its mappings.
    pub fn nat(&self, nat: NatId) -> Option<&Nat> {
        self.nats.get(nat.0)
    }

    /// What became of the datagrams so far.
    pub fn stats(&self) -> Stats {
        self.stats
    }

    /// When the next datagram in flight moves on.
    pub fn next_time(&self) -> Option<Instant> {
        self.in_flight.next_time()
    }

    /// Whether a datagram is lost on `link` (drawn from the seeded generator).
    fn lost(&mut self, link: Link) -> bool {
        let lost = link.loss > 0.0 && self.rng.random::<f64>() < link.loss;
        if lost {
            self.stats.lost += 1;
        }
        lost
    }

    /// `host` sends `payload` from its `port` to `to`, now.
    pub fn send(&mut self, host: HostId, port: u16, to: SocketAddr, payload: Vec<u8>) {
        let Some(sender) = self.hosts.get(host.0) else { return };
        let (from, link) = (SocketAddr::new(sender.ip, port), sender.link);
        self.stats.sent += 1;
        for (tapped, spy, spy_port) in self.taps.clone() {
            if tapped == host {
                self.in_flight.push(
                    self.now,
                    Hop::Arrived(Delivery {
                        host: spy,
                        port: spy_port,
                        from,
                        payload: payload.clone(),
                    }),
                );
            }
        }
        if self.lost(link) {
            return;
        }
        match self.now.checked_add(link.delay) {
            Some(at) => self.in_flight.push(
                at,
                Hop::Routers {
                    sender: host,
                    from,
                    to,
                    payload,
                },
            ),
            None => self.stats.lost += 1,
        }
    }

    /// The host at `ip` on the network of `nat` (`None`: the Internet).
    fn host_at(&self, nat: Option<NatId>, ip: IpAddr) -> Option<HostId> {
        self.hosts.iter().position(|h| h.nat == nat && h.ip == ip).map(HostId)
    }

    /// Routes a datagram at the routers: the receiving host, and the source it will see.
    fn route(&mut self, sender: HostId, from: SocketAddr, to: SocketAddr) -> Option<(HostId, SocketAddr, u16)> {
        let sender_nat = self.hosts.get(sender.0)?.nat;
        if sender_nat.is_some()
            && let Some(neighbour) = self.host_at(sender_nat, to.ip())
        {
            return Some((neighbour, from, to.port()));
        }
        let source = match sender_nat {
            Some(n) => {
                let nat = self.nats.get_mut(n.0)?;
                if nat.public_ip() == to.ip() {
                    // Hairpinning is not modelled.
                    return None;
                }
                nat.outbound(from, to, &mut self.rng)?
            }
            None => from,
        };
        if let Some(public) = self.host_at(None, to.ip()) {
            return Some((public, source, to.port()));
        }
        let nat_index = self.nats.iter().position(|n| n.public_ip() == to.ip())?;
        let inside = self.nats.get(nat_index)?.inbound(source, to.port());
        let Some(internal) = inside else {
            self.stats.filtered += 1;
            return None;
        };
        let host = self.host_at(Some(NatId(nat_index)), internal.ip())?;
        Some((host, source, internal.port()))
    }

    /// Moves every datagram due by `now` on, sets the time to `now` (if later), and returns the
    /// datagrams delivered, in order of arrival.
    pub fn advance(&mut self, now: Instant) -> Vec<Delivery> {
        self.now = self.now.max(now);
        let mut delivered = Vec::new();
        while let Some((at, hop)) = self.in_flight.pop_due(self.now) {
            match hop {
                Hop::Arrived(d) => {
                    self.stats.delivered += 1;
                    delivered.push(d);
                }
                Hop::Routers {
                    sender,
                    from,
                    to,
                    payload,
                } => {
                    let filtered = self.stats.filtered;
                    let Some((host, from, port)) = self.route(sender, from, to) else {
                        if self.stats.filtered == filtered {
                            self.stats.unroutable += 1;
                        }
                        continue;
                    };
                    let Some(link) = self.hosts.get(host.0).map(|h| h.link) else {
                        continue;
                    };
                    if self.lost(link) {
                        continue;
                    }
                    match at.checked_add(link.delay) {
                        Some(t) => self.in_flight.push(
                            t,
                            Hop::Arrived(Delivery {
                                host,
                                port,
                                from,
                                payload,
                            }),
                        ),
                        None => self.stats.lost += 1,
                    }
                }
            }
        }
        delivered
    }
}

#[cfg(test)]
#[allow(clippy::disallowed_methods)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn a(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn datagrams_cross_both_links_and_the_nats() {
        let t0 = Instant::now();
        let mut net = Network::new(t0, 1);
        let nat = net.add_nat(Nat::port_restricted(ip("198.51.100.1")));
        let inside = net.add_host(ip("192.168.1.2"), Some(nat), Link::with_delay(Duration::from_millis(5)));
        let server = net.add_host(ip("203.0.113.9"), None, Link::with_delay(Duration::from_millis(20)));
        // The server cannot reach the inside host first: filtered, and no state kept.
        net.send(server, 7000, a("198.51.100.1:5000"), b"early".to_vec());
        assert!(net.advance(t0 + Duration::from_secs(1)).is_empty());
        assert_eq!(net.stats().filtered, 1);
        let t1 = net.now();
        net.send(inside, 5000, a("203.0.113.9:7000"), b"out".to_vec());
        assert!(net.advance(t1 + Duration::from_millis(24)).is_empty());
        let got = net.advance(t1 + Duration::from_millis(25));
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].from, a("198.51.100.1:5000"), "port preserved");
        assert_eq!((got[0].host, got[0].port), (server, 7000));
        net.send(server, 7000, got[0].from, b"back".to_vec());
        let back = net.advance(net.now() + Duration::from_millis(25));
        assert_eq!(
            (back[0].host, back[0].port, back[0].from),
            (inside, 5000, a("203.0.113.9:7000"))
        );
        // A private address of another network, or our own router's public one: no route.
        net.send(inside, 5000, a("10.0.0.1:1"), vec![]);
        net.send(inside, 5000, a("198.51.100.1:5000"), vec![]);
        net.send(server, 7000, a("192.168.1.2:5000"), vec![]);
        assert!(net.advance(net.now() + Duration::from_secs(1)).is_empty());
        assert_eq!(net.stats().unroutable, 3);
        assert_eq!(net.stats().delivered, 2);
    }

    #[test]
    fn neighbours_talk_directly_and_taps_see_everything() {
        let t0 = Instant::now();
        let mut net = Network::new(t0, 1);
        let nat = net.add_nat(Nat::symmetric(ip("198.51.100.1")));
        let x = net.add_host(ip("192.168.1.2"), Some(nat), Link::default());
        let y = net.add_host(ip("192.168.1.3"), Some(nat), Link::default());
        let spy = net.add_host(ip("192.168.1.4"), Some(nat), Link::default());
        net.tap(x, spy, 9);
        net.send(x, 1, a("192.168.1.3:2"), b"hi".to_vec());
        let got = net.advance(t0 + Duration::from_secs(1));
        assert_eq!(got.len(), 2);
        assert_eq!((got[0].host, got[0].port, got[0].from), (spy, 9, a("192.168.1.2:1")));
        assert_eq!((got[1].host, got[1].port, got[1].from), (y, 2, a("192.168.1.2:1")));
        assert_eq!(net.nat(nat).unwrap().mappings(), 0);
    }

    #[test]
    fn loss_is_drawn_from_the_seed() {
        let run = |seed| {
            let t0 = Instant::now();
            let mut net = Network::new(t0, seed);
            let x = net.add_host(ip("203.0.113.1"), None, Link::default().lossy(0.5));
            let y = net.add_host(ip("203.0.113.2"), None, Link::default());
            for _ in 0..100 {
                net.send(x, 1, a("203.0.113.2:1"), vec![]);
            }
            let n = net.advance(t0 + Duration::from_secs(1)).len();
            let _ = y;
            (n, net.stats().lost)
        };
        let (n, lost) = run(7);
        assert_eq!(run(7), (n, lost));
        assert_eq!(n as u64 + lost, 100);
        assert!((20..80).contains(&n), "{n}");
    }
}
