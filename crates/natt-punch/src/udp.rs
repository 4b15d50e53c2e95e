//! UDP hole punching: [`UdpPuncher`], a socket-free state machine, and
//! [`PunchedUdpSocket::punch_hole`], which drives it on a mapped socket.
//!
//! Both peers probe every endpoint of the other at once, local addresses first (peers on one
//! network, or behind one router, connect directly), and answer every authenticated probe at
//! the address it came from. That address joins the targets too (a "peer-reflexive" address:
//! behind a symmetric NAT the peer's packets come from a port no server saw).
//!
//! A side has a working path when one of its probes is answered. It is done when it has a
//! working path and has heard a probe of the peer's (which it answered: the peer will have a
//! working path too), or when the peer tells it, in a message flagged "confirmed", that the
//! peer has one (then the peer's packets reach us, and our answers reached the peer). The
//! first probe heard from an address is answered with a reply and a probe of our own at once,
//! so a side that starts later is done one round trip after it starts, and with both starting
//! together both are done after one round trip. Before returning a side sends a short burst of
//! "confirmed, done" probes, so that a peer whose last reply was lost finishes too.

use std::collections::VecDeque;
use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use natt_core::rendezvous::{PrivRendezvousInfo, PubRendezvousInfo};
use natt_core::{MappedSocketAddr, TechniqueError, Transmit, UdpExchange};

use crate::error::PunchError;
use crate::keys::SessionKeys;
use crate::udp_wire::{self, FLAG_CONFIRMED, FLAG_DONE, Kind, Message, NONCE_LEN};

/// The first probe round's retransmission interval.
pub const FIRST_INTERVAL: Duration = Duration::from_millis(50);
/// The longest interval between probe rounds.
pub const MAX_INTERVAL: Duration = Duration::from_millis(500);
/// The most addresses probed (the peer's endpoints plus peer-reflexive ones).
pub const MAX_TARGETS: usize = 32;
/// Probes remembered for matching replies.
const MAX_OUTSTANDING: usize = 1024;
/// Copies of the final "done" message.
const DONE_COPIES: usize = 2;

/// A UDP socket that has been hole punched.
#[derive(Debug)]
pub struct PunchedUdpSocket {
    /// The socket.
    pub socket: UdpSocket,
    /// The peer's address that works.
    pub peer_addr: SocketAddr,
}

impl PunchedUdpSocket {
    /// Punches a hole from `socket` (a mapped socket whose endpoints went into our public
    /// rendezvous info) to the peer, returning by `deadline`.
    ///
    /// Only the peer holding the rendezvous info matching `our_priv_rendezvous_info` and
    /// `their_pub_rendezvous_info` can complete the punch. Punch packets that arrive after it
    /// returns can be recognised with [`crate::is_punch_packet`] and discarded.
    ///
    /// ```no_run
    /// use natt_core::{MappedUdpSocket, MappingContext};
    /// use natt_punch::{gen_rendezvous_info, PubRendezvousInfo, PunchedUdpSocket};
    /// use std::time::{Duration, Instant};
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let mc = MappingContext::empty(); // natt::MappingContext::new() has every technique
    /// let MappedUdpSocket { socket, endpoints, port_mappings } = MappedUdpSocket::new(&mc)?;
    /// let (our_priv, our_pub) = gen_rendezvous_info(endpoints);
    /// println!("send this to the peer: {our_pub}");
    /// let their_pub: PubRendezvousInfo = "natt1....".parse()?; // the peer's token
    /// let deadline = Instant::now() + Duration::from_secs(10);
    /// let PunchedUdpSocket { socket, peer_addr } = PunchedUdpSocket::punch_hole(socket, our_priv, their_pub, deadline)?;
    /// socket.send_to(b"hello", peer_addr)?;
    /// # drop(port_mappings);
    /// # Ok(())
    /// # }
    /// ```
    pub fn punch_hole(
        socket: UdpSocket,
        our_priv_rendezvous_info: PrivRendezvousInfo,
        their_pub_rendezvous_info: PubRendezvousInfo,
        deadline: Instant,
    ) -> Result<PunchedUdpSocket, PunchError> {
        let local = socket.local_addr()?;
        let keys = SessionKeys::new(&our_priv_rendezvous_info, &their_pub_rendezvous_info)?;
        let mut puncher = UdpPuncher::new(keys, local, &their_pub_rendezvous_info.endpoints, Instant::now())?;
        let results = natt_core::udp::drive(&socket, &mut [&mut puncher], deadline).map_err(|e| match e {
            natt_core::Error::Io(io) => PunchError::Io(io),
            other => PunchError::TimedOut(other.to_string()),
        })?;
        match puncher.peer() {
            Some(peer_addr) => {
                log::info!("punched {local} <-> {peer_addr}");
                Ok(PunchedUdpSocket { socket, peer_addr })
            }
            None => {
                let why = results
                    .into_iter()
                    .next()
                    .and_then(|(_, r)| r.err())
                    .map_or_else(|| "no answer".to_owned(), |e| e.to_string());
                Err(PunchError::TimedOut(why))
            }
        }
    }
}

/// The peer's endpoints that a socket bound at `local` can reach, local ones first, then
/// unrestricted ones, then the rest, without duplicates.
pub fn order_targets(local: SocketAddr, endpoints: &[MappedSocketAddr]) -> Vec<SocketAddr> {
    let rank = |e: &MappedSocketAddr| match (e.technique.as_str(), e.nat_restricted) {
        (natt_core::local::LOCAL, _) => 0,
        (_, false) => 1,
        (_, true) => 2,
    };
    let mut eps: Vec<&MappedSocketAddr> = endpoints
        .iter()
        .filter(|e| e.addr.is_ipv4() == local.is_ipv4())
        .collect();
    eps.sort_by_key(|e| rank(e));
    let mut out: Vec<SocketAddr> = Vec::new();
    for e in eps {
        if !out.contains(&e.addr) && out.len() < MAX_TARGETS {
            out.push(e.addr);
        }
    }
    out
}

/// The punch over UDP, without a socket.
#[derive(Debug)]
pub struct UdpPuncher {
    keys: SessionKeys,
    targets: Vec<SocketAddr>,
    outstanding: VecDeque<([u8; NONCE_LEN], SocketAddr)>,
    queue: VecDeque<Transmit>,
    next_round: Instant,
    interval: Duration,
    confirmed: Option<SocketAddr>,
    heard_probe: bool,
    probed_back: Vec<SocketAddr>,
    peer: Option<SocketAddr>,
}

impl UdpPuncher {
    /// A punch from a socket bound at `local` towards the peer's `endpoints`, starting `now`.
    pub fn new(
        keys: SessionKeys,
        local: SocketAddr,
        endpoints: &[MappedSocketAddr],
        now: Instant,
    ) -> Result<Self, PunchError> {
        let targets = order_targets(local, endpoints);
        if targets.is_empty() {
            return Err(PunchError::NoEndpoint);
        }
        Ok(UdpPuncher {
            keys,
            targets,
            outstanding: VecDeque::new(),
            queue: VecDeque::new(),
            next_round: now,
            interval: FIRST_INTERVAL,
            confirmed: None,
            heard_probe: false,
            probed_back: Vec::new(),
            peer: None,
        })
    }

    /// The peer's address, once the punch is done.
    pub fn peer(&self) -> Option<SocketAddr> {
        self.peer
    }

    /// The addresses being probed, in order.
    pub fn targets(&self) -> &[SocketAddr] {
        &self.targets
    }

    fn flags(&self) -> u8 {
        if self.peer.is_some() {
            FLAG_CONFIRMED | FLAG_DONE
        } else if self.confirmed.is_some() {
            FLAG_CONFIRMED
        } else {
            0
        }
    }

    fn send(&mut self, to: SocketAddr, kind: Kind, nonce: [u8; NONCE_LEN]) {
        let payload = udp_wire::encode(
            &self.keys,
            &Message {
                kind,
                flags: self.flags(),
                nonce,
            },
        );
        self.queue.push_back(Transmit {
            destination: to,
            payload: payload.to_vec(),
        });
    }

    fn probe(&mut self, to: SocketAddr) {
        let nonce: [u8; NONCE_LEN] = rand::random();
        if self.outstanding.len() >= MAX_OUTSTANDING {
            self.outstanding.pop_front();
        }
        self.outstanding.push_back((nonce, to));
        self.send(to, Kind::Probe, nonce);
    }

    fn finish_with(&mut self, peer: SocketAddr) {
        if self.peer.is_some() {
            return;
        }
        self.peer = Some(peer);
        for _ in 0..DONE_COPIES {
            self.probe(peer);
        }
    }
}

impl UdpExchange for UdpPuncher {
    fn poll_transmit(&mut self, now: Instant) -> Option<Transmit> {
        if self.peer.is_none() && now >= self.next_round {
            for to in self.targets.clone() {
                self.probe(to);
            }
            self.next_round = now + self.interval;
            self.interval = (self.interval.mul_f32(1.5)).min(MAX_INTERVAL);
        }
        self.queue.pop_front()
    }

    fn poll_timeout(&self) -> Option<Instant> {
        if self.peer.is_some() {
            // Done: the driver only has to flush the queue.
            Some(Instant::now())
        } else {
            Some(self.next_round)
        }
    }

    fn handle_datagram(&mut self, _now: Instant, from: SocketAddr, data: &[u8]) -> bool {
        let Some(msg) = udp_wire::open(&self.keys, data) else {
            return false;
        };
        if self.peer.is_some() {
            return true;
        }
        match msg.kind {
            Kind::Probe => {
                if !self.targets.contains(&from) && self.targets.len() < MAX_TARGETS {
                    log::debug!("peer-reflexive address {from}");
                    self.targets.push(from);
                }
                self.send(from, Kind::Reply, msg.nonce);
                self.heard_probe = true;
                // The peer's NAT now lets our packets from `from` in: probe back at once (once
                // per address, so two punchers cannot ping-pong).
                if self.confirmed.is_none() && !self.probed_back.contains(&from) && self.probed_back.len() < MAX_TARGETS
                {
                    self.probed_back.push(from);
                    self.probe(from);
                }
            }
            Kind::Reply => {
                let ours = self.outstanding.iter().any(|(n, to)| *n == msg.nonce && *to == from);
                if !ours {
                    log::debug!("reply from {from} to no probe of ours");
                    return true;
                }
                if self.confirmed.is_none() {
                    log::debug!("path to {from} confirmed");
                    self.confirmed = Some(from);
                }
            }
        }
        if msg.flags & FLAG_CONFIRMED != 0 {
            // The peer has a working path: its packets reach us from `from`, and our answers
            // reached it (at the address its probes came from).
            let peer = self.confirmed.unwrap_or(from);
            self.finish_with(peer);
        } else if let (Some(peer), true) = (self.confirmed, self.heard_probe) {
            // Ours is confirmed, and the peer's probe got our answer: it will be too.
            self.finish_with(peer);
        }
        true
    }

    fn poll_result(&mut self, _now: Instant) -> Option<Result<Vec<MappedSocketAddr>, TechniqueError>> {
        let peer = self.peer?;
        self.queue
            .is_empty()
            .then(|| Ok(vec![MappedSocketAddr::new(peer, false, "punch")]))
    }

    fn finish(&mut self) -> Result<Vec<MappedSocketAddr>, TechniqueError> {
        Err(TechniqueError::TimedOut(match self.confirmed {
            Some(a) => format!("path to {a} confirmed, but the peer never confirmed"),
            None => format!(
                "no authenticated answer from {} address(es) of the peer",
                self.targets.len()
            ),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use natt_core::rendezvous::gen_rendezvous_info;

    fn ep(s: &str, restricted: bool, t: &str) -> MappedSocketAddr {
        MappedSocketAddr::new(s.parse().unwrap(), restricted, t)
    }

    /// Two punchers, each seeing the other at one address, exchanging through a perfect network.
    fn pair() -> (UdpPuncher, UdpPuncher, SocketAddr, SocketAddr) {
        let (a_addr, b_addr): (SocketAddr, SocketAddr) = (
            "198.51.100.1:1000".parse().unwrap(),
            "198.51.100.2:2000".parse().unwrap(),
        );
        let (a_priv, a_pub) = gen_rendezvous_info(vec![ep("198.51.100.1:1000", true, "stun")]);
        let (b_priv, b_pub) = gen_rendezvous_info(vec![ep("198.51.100.2:2000", true, "stun")]);
        let now = Instant::now();
        let a = UdpPuncher::new(
            SessionKeys::new(&a_priv, &b_pub).unwrap(),
            "0.0.0.0:1000".parse().unwrap(),
            &b_pub.endpoints,
            now,
        )
        .unwrap();
        let b = UdpPuncher::new(
            SessionKeys::new(&b_priv, &a_pub).unwrap(),
            "0.0.0.0:2000".parse().unwrap(),
            &a_pub.endpoints,
            now,
        )
        .unwrap();
        (a, b, a_addr, b_addr)
    }

    fn drain(p: &mut UdpPuncher, now: Instant) -> Vec<Transmit> {
        std::iter::from_fn(|| p.poll_transmit(now)).collect()
    }

    #[test]
    fn completes_in_one_round_trip() {
        let (mut a, mut b, a_addr, b_addr) = pair();
        let now = Instant::now();
        let mut to_b = drain(&mut a, now);
        let mut to_a = drain(&mut b, now);
        for step in 1..=2 {
            let (in_b, in_a) = (std::mem::take(&mut to_b), std::mem::take(&mut to_a));
            for t in in_b {
                assert!(b.handle_datagram(now, a_addr, &t.payload));
            }
            for t in in_a {
                assert!(a.handle_datagram(now, b_addr, &t.payload));
            }
            to_a = drain(&mut b, now);
            to_b = drain(&mut a, now);
            if step < 2 {
                assert!(a.peer().is_none() && b.peer().is_none(), "step {step}");
            }
        }
        assert_eq!(a.peer(), Some(b_addr));
        assert_eq!(b.peer(), Some(a_addr));
        assert!(a.poll_result(now).is_some());
    }

    #[test]
    fn a_late_starter_finishes_one_round_trip_after_it_starts() {
        let (mut a, mut b, a_addr, b_addr) = pair();
        let now = Instant::now();
        // a has been probing for a while; its probes were dropped by b's NAT.
        let _lost = drain(&mut a, now);
        // b starts: its probe reaches a, which answers and probes back at once.
        for t in drain(&mut b, now) {
            assert!(a.handle_datagram(now, b_addr, &t.payload));
        }
        let back = drain(&mut a, now);
        assert_eq!(back.len(), 2, "a reply and a probe");
        for t in back {
            b.handle_datagram(now, a_addr, &t.payload);
        }
        assert_eq!(b.peer(), Some(a_addr), "b is done after one round trip");
        // b's answer to a's probe, and b's done burst, complete a.
        for t in drain(&mut b, now) {
            a.handle_datagram(now, b_addr, &t.payload);
        }
        assert_eq!(a.peer(), Some(b_addr));
    }

    #[test]
    fn strangers_and_replays_of_other_sessions_are_ignored() {
        let (mut a, _, _, b_addr) = pair();
        let (_, mut other, _, _) = pair();
        let now = Instant::now();
        for t in drain(&mut other, now) {
            assert!(!a.handle_datagram(now, b_addr, &t.payload));
        }
        assert!(!a.handle_datagram(now, b_addr, b"garbage"));
        assert!(a.peer().is_none());
    }

    #[test]
    fn a_reply_from_another_address_proves_nothing() {
        let (mut a, mut b, a_addr, _) = pair();
        let now = Instant::now();
        let probe = drain(&mut a, now).remove(0);
        b.handle_datagram(now, a_addr, &probe.payload);
        let reply = drain(&mut b, now)
            .into_iter()
            .find(|t| t.destination == a_addr)
            .unwrap();
        // The reply replayed by someone else, from their address.
        let spoofer: SocketAddr = "203.0.113.66:6666".parse().unwrap();
        assert!(a.handle_datagram(now, spoofer, &reply.payload));
        assert!(a.confirmed.is_none());
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
        let t = order_targets("0.0.0.0:1".parse().unwrap(), &eps);
        let s: Vec<String> = t.iter().map(ToString::to_string).collect();
        assert_eq!(s, ["192.168.1.2:5", "203.0.113.1:6", "203.0.113.1:5"]);
    }

    #[test]
    fn retransmits_on_a_growing_schedule() {
        let (mut a, _, _, _) = pair();
        let t0 = Instant::now();
        assert_eq!(drain(&mut a, t0).len(), 1);
        assert_eq!(a.poll_timeout(), Some(t0 + FIRST_INTERVAL));
        assert!(drain(&mut a, t0 + Duration::from_millis(10)).is_empty());
        assert_eq!(drain(&mut a, t0 + FIRST_INTERVAL).len(), 1);
        assert!(matches!(a.finish(), Err(TechniqueError::TimedOut(_))));
    }
}
