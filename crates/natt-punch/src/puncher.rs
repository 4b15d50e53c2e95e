//! The UDP punch without a socket: [`UdpPuncher`], a state machine fed datagrams, time and a
//! random generator (it reads no clock, draws no random number of its own, spawns no thread
//! and touches no socket: clippy's `disallowed_methods`, denied here, checks that);
//! [`crate::udp`] drives it on a socket.
//!
//! Both peers probe every usable endpoint of the other at once, local addresses first (peers
//! on one network, or behind one router, connect directly), and answer every authenticated
//! probe at the address it came from. That address joins the targets too (a "peer-reflexive"
//! address: behind a symmetric NAT the peer's packets come from a port no server saw), if its
//! IP is one the peer's token lists ([`crate::path`]).
//!
//! A side has a **confirmed path** to an address when a reply from that address echoes the
//! fresh nonce of a probe we sent to it, and says it saw us at one of our own addresses. It is
//! **done** when it has a confirmed path and either it has answered a probe that came from that
//! address (the peer will get our reply, a confirmation of its own), or a reply on that path
//! says the peer has confirmed too. Nothing else completes a punch: a replayed or relayed
//! message can neither choose the peer's address nor end a punch early. The first probe heard
//! from an address is answered with a reply and a probe of our own at once, so a side that
//! starts later is done one round trip after it starts, and with both starting together both
//! are done after one round trip. Before returning a side sends a short burst of replies to the
//! peer's last probes, flagged "confirmed, done", so that a peer whose last reply was lost
//! finishes too.
//!
//! **IPv6 first**: both families are probed at once (a dual-stack socket reaches both, see
//! `natt_core::family`). When the first confirmed path is IPv4 and the peer has IPv6 targets,
//! the side waits up to [`IPV6_GRACE`] for an IPv6 path to be confirmed too, and takes that one
//! if it is: an IPv6 path has no NAT mapping to expire or change. A punch between IPv4-only
//! sides never waits.
//!
//! Politeness: at most [`MAX_PER_SECOND`] datagrams go to any one address in any second, at
//! most [`MAX_ROUNDS`] probe rounds are made, and only addresses of the peer's token's IPs are
//! ever sent to.
//!
//! Through a symmetric NAT ([`crate::birthday`]) the same punch runs with two additions: the
//! easy side also probes random ports of the peer's IP ([`UdpPuncher::with_spray`], each probe
//! with its own nonce, stopping at the first authenticated message), and the hard side's extra
//! sockets probe on a slow schedule until they hear the peer ([`UdpPuncher::cold`]).

#![deny(clippy::disallowed_methods)]

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use rand::Rng;
use rand::rngs::StdRng;

use natt_core::retransmit::{Factor, Params, Schedule};
use natt_core::{MappedSocketAddr, TechniqueError, Transmit, UdpExchange};

use crate::birthday::{COLD_ROUNDS, SPRAY_BUDGET, Spray};
use crate::error::NoPath;
use crate::keys::SessionKeys;
use crate::path::{MAX_TARGETS, Paths};
use crate::wire::{self, FLAG_CONFIRMED, FLAG_DONE, Kind, Message, NONCE_LEN};

/// The first probe round's retransmission interval.
pub const FIRST_INTERVAL: Duration = Duration::from_millis(50);
/// The longest interval between probe rounds.
pub const MAX_INTERVAL: Duration = Duration::from_millis(500);
/// The most probe rounds one punch makes (about 45 s at the longest interval).
pub const MAX_ROUNDS: u32 = 100;
/// The probe rounds' schedule: the first at once, the next after [`FIRST_INTERVAL`], each
/// interval 1.5 times the one before up to [`MAX_INTERVAL`] (rounds at 0, 50, 125, 237.5,
/// 406.25, 659.375 ms, 1.039 s, then every 500 ms), [`MAX_ROUNDS`] rounds at most (the last at
/// 47.5 s); then only the caller's deadline is left.
pub const ROUNDS: Params = Params {
    initial: FIRST_INTERVAL,
    factor: Factor::ratio(3, 2),
    max_interval: Some(MAX_INTERVAL),
    max_sends: Some(MAX_ROUNDS),
    last_wait: None,
    jitter: 0.0,
};
/// The most datagrams sent to any one address in any one second.
pub const MAX_PER_SECOND: usize = 25;
/// Probes remembered for matching replies (a spray's and the rounds').
const MAX_OUTSTANDING: usize = SPRAY_BUDGET + 1024;
/// Copies of the final "done" message.
const DONE_COPIES: usize = 2;
/// Copies of the final "done" message in the birthday method, where the side that finishes
/// last has no other messages in flight to finish on (the other side probes no more).
pub const BIRTHDAY_DONE_COPIES: usize = 4;
/// How long a side with a confirmed IPv4 path waits for an IPv6 one when the peer has IPv6
/// targets. Probes of both families leave together, so on links of similar delay the IPv6
/// confirmation follows the IPv4 one within milliseconds; only a broken IPv6 path costs this.
pub const IPV6_GRACE: Duration = Duration::from_millis(50);

/// The punch over UDP, without a socket.
#[derive(Debug)]
pub struct UdpPuncher {
    keys: SessionKeys,
    paths: Paths,
    rng: StdRng,
    /// Where probes go: the peer's endpoints, then peer-reflexive addresses.
    targets: Vec<SocketAddr>,
    outstanding: VecDeque<([u8; NONCE_LEN], SocketAddr)>,
    queue: VecDeque<Transmit>,
    /// When each address was last sent to, within the last second (for [`MAX_PER_SECOND`]).
    sent: HashMap<SocketAddr, VecDeque<Instant>>,
    /// When the probe rounds are due ([`ROUNDS`]).
    rounds: Schedule,
    now: Instant,
    confirmed: Option<SocketAddr>,
    /// Until when an IPv4 path, confirmed, waits for an IPv6 one ([`IPV6_GRACE`]).
    grace_until: Option<Instant>,
    /// Paths on which a reply said the peer has confirmed a path too.
    peer_confirmed: Vec<SocketAddr>,
    /// Addresses whose authenticated probes we answered, with the last such probe's nonce.
    answered: Vec<(SocketAddr, [u8; NONCE_LEN])>,
    probed_back: Vec<SocketAddr>,
    peer: Option<SocketAddr>,
    /// What arrived, for the error when the punch fails.
    heard: Heard,
    /// The easy side's probes to random ports of the peer's IP.
    spray: Option<Spray>,
    /// On [`COLD_ROUNDS`] until the peer is heard.
    cold: bool,
    /// Datagrams sent.
    sent_count: usize,
    /// Copies of the final "done" message.
    done_copies: usize,
}

/// Counts of what arrived from the peer's addresses, for diagnostics.
#[derive(Debug, Default, Clone, Copy)]
struct Heard {
    authentic: u32,
    unauthentic: u32,
    wrong_observed: u32,
}

impl UdpPuncher {
    /// A punch over `paths` with the session's `keys`, starting `now`; nonces come from `rng`.
    pub fn new(keys: SessionKeys, paths: Paths, now: Instant, rng: StdRng) -> Self {
        let targets = paths.targets().to_vec();
        UdpPuncher {
            keys,
            paths,
            rng,
            targets,
            outstanding: VecDeque::new(),
            queue: VecDeque::new(),
            sent: HashMap::new(),
            rounds: Schedule::new(ROUNDS, now),
            now,
            confirmed: None,
            grace_until: None,
            peer_confirmed: Vec::new(),
            answered: Vec::new(),
            probed_back: Vec::new(),
            peer: None,
            heard: Heard::default(),
            spray: None,
            cold: false,
            sent_count: 0,
            done_copies: DONE_COPIES,
        }
    }

    /// Also probes random ports of the peer's IP, as `spray` says, until the peer is heard: the
    /// easy side of the birthday method ([`crate::birthday`]).
    pub fn with_spray(mut self, spray: Spray) -> Self {
        self.spray = Some(spray);
        self.done_copies = BIRTHDAY_DONE_COPIES;
        self
    }

    /// Ends with [`BIRTHDAY_DONE_COPIES`] "done" messages rather than 2: a socket of the
    /// birthday method's hard side.
    pub fn birthday_side(mut self) -> Self {
        self.done_copies = BIRTHDAY_DONE_COPIES;
        self
    }

    /// Probes on [`COLD_ROUNDS`] (4 rounds in 3.5 s) until the peer is heard, then on the
    /// ordinary [`ROUNDS`]: a hard side's extra socket ([`crate::birthday`]), starting `now`.
    pub fn cold(mut self, now: Instant) -> Self {
        self.rounds = Schedule::new(COLD_ROUNDS, now);
        self.cold = true;
        self.birthday_side()
    }

    /// How many datagrams this punch has sent (queued for sending).
    pub fn sent(&self) -> usize {
        self.sent_count
    }

    /// How many authenticated messages from the peer, addressed to us, have arrived.
    pub fn heard_authentic(&self) -> u32 {
        self.heard.authentic
    }

    /// How many spray probes this punch has sent (0 without a spray).
    pub fn sprayed(&self) -> usize {
        self.spray.as_ref().map_or(0, Spray::sent)
    }

    /// The peer's address, once the punch is done.
    pub fn peer(&self) -> Option<SocketAddr> {
        self.peer
    }

    /// The paths this punch may take.
    pub fn paths(&self) -> &Paths {
        &self.paths
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

    /// Queues a message to `to`, unless `to` has had [`MAX_PER_SECOND`] already.
    fn send(&mut self, to: SocketAddr, kind: Kind, nonce: [u8; NONCE_LEN]) -> bool {
        let now = self.now;
        let times = self.sent.entry(to).or_default();
        while times
            .front()
            .is_some_and(|t| now.saturating_duration_since(*t) >= Duration::from_secs(1))
        {
            times.pop_front();
        }
        if times.len() >= MAX_PER_SECOND {
            log::trace!("{to}: {MAX_PER_SECOND} datagrams in the last second; not sending more");
            return false;
        }
        times.push_back(now);
        let payload = wire::encode(
            &self.keys,
            &Message {
                kind,
                flags: self.flags(),
                nonce,
                observed: to,
            },
        );
        self.queue.push_back(Transmit {
            destination: to,
            payload: payload.to_vec(),
        });
        self.sent_count += 1;
        true
    }

    fn probe(&mut self, to: SocketAddr) {
        let nonce: [u8; NONCE_LEN] = self.rng.random();
        if self.send(to, Kind::Probe, nonce) {
            if self.outstanding.len() >= MAX_OUTSTANDING {
                self.outstanding.pop_front();
            }
            self.outstanding.push_back((nonce, to));
        }
    }

    /// Done, with the path to `peer`: tells the peer, answering its last probes from there.
    fn finish_with(&mut self, peer: SocketAddr) {
        if self.peer.is_some() {
            return;
        }
        self.peer = Some(peer);
        let last = self.answered.iter().find(|(a, _)| *a == peer).map(|(_, n)| *n);
        for _ in 0..self.done_copies {
            match last {
                Some(nonce) => {
                    self.send(peer, Kind::Reply, nonce);
                }
                None => self.probe(peer),
            }
        }
    }

    fn check_done(&mut self) {
        let Some(path) = self.confirmed else { return };
        if self.grace_until.is_some_and(|until| self.now < until) {
            return;
        }
        if self.peer_confirmed.contains(&path) || self.answered.iter().any(|(a, _)| *a == path) {
            self.finish_with(path);
        }
    }

    /// A reply from `path` echoed our nonce: the path works. The first one is taken, and an
    /// IPv6 path replaces an IPv4 one; an IPv4 path waits [`IPV6_GRACE`] for an IPv6 one when
    /// the peer has IPv6 targets.
    fn confirm(&mut self, path: SocketAddr) {
        match self.confirmed {
            None => {
                log::debug!("path to {path} confirmed");
                self.confirmed = Some(path);
                if path.is_ipv4() && self.targets.iter().any(SocketAddr::is_ipv6) {
                    self.grace_until = Some(self.now + IPV6_GRACE);
                }
            }
            Some(c) if c.is_ipv4() && path.is_ipv6() => {
                log::debug!("IPv6 path to {path} confirmed; preferred to {c}");
                self.confirmed = Some(path);
                self.grace_until = None;
            }
            Some(_) => {}
        }
    }
}

impl UdpExchange for UdpPuncher {
    fn poll_transmit(&mut self, now: Instant) -> Option<Transmit> {
        self.now = self.now.max(now);
        if self.peer.is_none() && self.grace_until.is_some_and(|until| now >= until) {
            self.grace_until = None;
            self.check_done();
        }
        if self.peer.is_none() && self.rounds.is_due(now) {
            if self.rounds.sends() == 0 {
                log::debug!("probing the peer at {:?}", self.targets);
            }
            for to in self.targets.clone() {
                self.probe(to);
            }
            self.rounds.on_sent(now);
        }
        if self.peer.is_none()
            && let Some(spray) = &mut self.spray
        {
            for to in spray.due(now) {
                self.probe(to);
            }
        }
        self.queue.pop_front()
    }

    fn poll_timeout(&self) -> Option<Instant> {
        if self.peer.is_some() || !self.queue.is_empty() {
            // Done, or sending: the driver only has to flush the queue.
            Some(self.now)
        } else {
            let spray = self.spray.as_ref().and_then(Spray::next_time);
            [self.rounds.next_send(), spray, self.grace_until]
                .into_iter()
                .flatten()
                .min()
        }
    }

    fn handle_datagram(&mut self, now: Instant, from: SocketAddr, data: &[u8]) -> bool {
        self.now = self.now.max(now);
        if !wire::is_punch_packet(data) {
            return false;
        }
        if !self.paths.is_peer(from) {
            log::trace!("{from}: punch packet from an address the peer's token does not list; ignored");
            return true;
        }
        let Some(msg) = wire::open(&self.keys, data) else {
            self.heard.unauthentic += 1;
            log::debug!("{from}: punch packet that does not authenticate (another session, or a stale token)");
            return true;
        };
        if !self.paths.sees_us(msg.observed) {
            self.heard.wrong_observed += 1;
            log::debug!(
                "{from}: {:?} addressed to {}, not one of our addresses; ignored (relayed?)",
                msg.kind,
                msg.observed
            );
            return true;
        }
        self.heard.authentic += 1;
        if let Some(spray) = &mut self.spray
            && spray.next_time().is_some()
        {
            log::debug!(
                "{from}: the peer is heard; the spray stops after {} probes",
                spray.sent()
            );
            spray.stop();
        }
        if self.cold {
            // The peer reached this socket: probe on the ordinary schedule from now.
            self.cold = false;
            self.rounds = Schedule::new(ROUNDS, now);
        }
        if self.peer.is_some() {
            return true;
        }
        match msg.kind {
            Kind::Probe => {
                if !self.targets.contains(&from) {
                    if self.targets.len() >= MAX_TARGETS {
                        log::debug!("{from}: probe from a new address, but {MAX_TARGETS} are probed already");
                        return true;
                    }
                    log::debug!("peer-reflexive address {from}");
                    self.targets.push(from);
                }
                log::trace!("{from}: probe; answered");
                self.send(from, Kind::Reply, msg.nonce);
                match self.answered.iter_mut().find(|(a, _)| *a == from) {
                    Some(entry) => entry.1 = msg.nonce,
                    None => self.answered.push((from, msg.nonce)),
                }
                // The peer's NAT now lets our packets from `from` in: probe back at once (once
                // per address, so two punchers cannot ping-pong).
                let better = self.confirmed.is_none_or(|c| c.is_ipv4() && from.is_ipv6());
                if better && !self.probed_back.contains(&from) {
                    self.probed_back.push(from);
                    self.probe(from);
                }
                self.check_done();
            }
            Kind::Reply => {
                let Some(i) = self
                    .outstanding
                    .iter()
                    .position(|(n, to)| *n == msg.nonce && *to == from)
                else {
                    log::debug!("{from}: reply to no probe of ours (replayed?)");
                    return true;
                };
                self.outstanding.remove(i);
                log::trace!("{from}: reply (the peer sees us at {})", msg.observed);
                self.confirm(from);
                // A reply to our fresh probe, flagged: the peer has confirmed a path too.
                if msg.flags & FLAG_CONFIRMED != 0 && !self.peer_confirmed.contains(&from) {
                    self.peer_confirmed.push(from);
                }
                self.check_done();
            }
            Kind::Hello | Kind::Choose | Kind::Move => {}
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
        Err(TechniqueError::TimedOut(self.diagnosis().to_string()))
    }
}

impl UdpPuncher {
    /// Why the punch has no path (yet): what was tried and what came back.
    pub fn diagnosis(&self) -> NoPath {
        let h = self.heard;
        if let Some(a) = self.confirmed {
            NoPath::NotConfirmed(format!("path to {a} confirmed, but the peer never confirmed one"))
        } else if h.authentic > 0 {
            NoPath::NotConfirmed(format!(
                "the peer's packets arrived ({}), but none of our {} probe(s) was answered",
                h.authentic,
                self.targets.len()
            ))
        } else if h.wrong_observed > 0 {
            NoPath::AddressedElsewhere {
                count: h.wrong_observed,
                our_ips: self.paths.own_ips().to_vec(),
            }
        } else if h.unauthentic > 0 {
            NoPath::FailedAuthentication { count: h.unauthentic }
        } else if let Some(spray) = &self.spray {
            NoPath::BirthdayMissed {
                probes: spray.sent(),
                sockets: 1,
            }
        } else {
            NoPath::NothingCameBack {
                addresses: self.targets.len(),
                private_only: self.paths.peer_private_only(),
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::disallowed_methods)] // tests take a starting instant from the clock
mod tests {
    use super::*;
    use natt_core::rendezvous::gen_rendezvous_info;
    use natt_core::rendezvous::{PrivRendezvousInfo, PubRendezvousInfo};
    use rand::SeedableRng;

    fn ep(s: &str, restricted: bool, t: &str) -> MappedSocketAddr {
        MappedSocketAddr::new(s.parse().unwrap(), restricted, t)
    }

    const A: &str = "198.51.100.1:1000";
    const B: &str = "198.51.100.2:2000";

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    /// Two punchers, each seeing the other at one address, with seeded generators.
    fn pair() -> (UdpPuncher, UdpPuncher) {
        let (a_priv, a_pub) = gen_rendezvous_info(vec![ep(A, true, "stun")]);
        let (b_priv, b_pub) = gen_rendezvous_info(vec![ep(B, true, "stun")]);
        let now = Instant::now();
        let side = |ours: &PrivRendezvousInfo, theirs: &PubRendezvousInfo, local: &str, seed: u64| {
            let paths = Paths::new(addr(local), &ours.endpoints, &theirs.endpoints).unwrap();
            UdpPuncher::new(
                SessionKeys::new(ours, theirs).unwrap(),
                paths,
                now,
                StdRng::seed_from_u64(seed),
            )
        };
        (
            side(&a_priv, &b_pub, "0.0.0.0:1000", 1),
            side(&b_priv, &a_pub, "0.0.0.0:2000", 2),
        )
    }

    fn drain(p: &mut UdpPuncher, now: Instant) -> Vec<Transmit> {
        std::iter::from_fn(|| p.poll_transmit(now)).collect()
    }

    const A6: &str = "[2001:db8:1::2]:1000";
    const B6: &str = "[2001:db8:2::2]:2000";

    /// Two dual-stack punchers, each with an IPv4 and an IPv6 endpoint.
    fn dual_pair() -> (UdpPuncher, UdpPuncher) {
        let (a_priv, a_pub) = gen_rendezvous_info(vec![ep(A, true, "stun"), ep(A6, true, "local")]);
        let (b_priv, b_pub) = gen_rendezvous_info(vec![ep(B, true, "stun"), ep(B6, true, "local")]);
        let now = Instant::now();
        let side = |ours: &PrivRendezvousInfo, theirs: &PubRendezvousInfo, seed: u64| {
            let paths = Paths::new(addr("[::]:1"), &ours.endpoints, &theirs.endpoints).unwrap();
            UdpPuncher::new(
                SessionKeys::new(ours, theirs).unwrap(),
                paths,
                now,
                StdRng::seed_from_u64(seed),
            )
        };
        (side(&a_priv, &b_pub, 1), side(&b_priv, &a_pub, 2))
    }

    /// Delivers what each sends to the other (each datagram from the sender's endpoint of the
    /// destination's family) after `delay` says (`None`: lost), in steps of 5 ms, until both are
    /// done or `steps` pass; returns the time taken.
    fn run_dual(
        a: &mut UdpPuncher,
        b: &mut UdpPuncher,
        delay: impl Fn(&Transmit) -> Option<Duration>,
        steps: u32,
    ) -> Duration {
        let start = Instant::now();
        let mut now = start;
        // (when, to b?, from, payload)
        let mut flight: Vec<(Instant, bool, SocketAddr, Vec<u8>)> = Vec::new();
        for _ in 0..steps {
            for (to_b, p) in [(true, &mut *a), (false, &mut *b)] {
                for t in drain(p, now) {
                    let from = match (to_b, t.destination.is_ipv6()) {
                        (true, true) => A6,
                        (true, false) => A,
                        (false, true) => B6,
                        (false, false) => B,
                    };
                    if let Some(d) = delay(&t) {
                        flight.push((now + d, to_b, addr(from), t.payload));
                    }
                }
            }
            let (due, later): (Vec<_>, Vec<_>) = flight.into_iter().partition(|f| f.0 <= now);
            flight = later;
            for (_, to_b, from, payload) in due {
                let p = if to_b { &mut *b } else { &mut *a };
                p.handle_datagram(now, from, &payload);
            }
            if a.peer().is_some() && b.peer().is_some() {
                break;
            }
            now += Duration::from_millis(5);
        }
        now - start
    }

    #[test]
    fn both_families_work_and_ipv6_wins() {
        let (mut a, mut b) = dual_pair();
        assert!(a.targets().contains(&addr(B6)) && a.targets().contains(&addr(B)));
        let took = run_dual(&mut a, &mut b, |_| Some(Duration::from_millis(10)), 100);
        assert_eq!(a.peer(), Some(addr(B6)));
        assert_eq!(b.peer(), Some(addr(A6)));
        assert!(took <= Duration::from_millis(25), "{took:?}");
    }

    #[test]
    fn ipv6_is_taken_when_it_confirms_within_the_grace() {
        let (mut a, mut b) = dual_pair();
        // IPv6 is 15 ms slower each way: IPv4 confirms first, IPv6 30 ms later.
        let delay = |t: &Transmit| Some(Duration::from_millis(if t.destination.is_ipv6() { 25 } else { 10 }));
        run_dual(&mut a, &mut b, delay, 100);
        assert_eq!(a.peer(), Some(addr(B6)));
        assert_eq!(b.peer(), Some(addr(A6)));
    }

    #[test]
    fn ipv4_wins_after_the_grace_when_ipv6_is_blocked() {
        let (mut a, mut b) = dual_pair();
        let delay = |t: &Transmit| (!t.destination.is_ipv6()).then_some(Duration::from_millis(10));
        let took = run_dual(&mut a, &mut b, delay, 100);
        assert_eq!(a.peer(), Some(addr(B)));
        assert_eq!(b.peer(), Some(addr(A)));
        assert!(
            took >= IPV6_GRACE && took <= IPV6_GRACE + Duration::from_millis(30),
            "{took:?}"
        );
    }

    #[test]
    fn ipv4_only_punches_do_not_wait_for_ipv6() {
        let (mut a, mut b) = pair();
        let now = Instant::now();
        for _ in 0..2 {
            for t in drain(&mut a, now) {
                b.handle_datagram(now, addr(A), &t.payload);
            }
            for t in drain(&mut b, now) {
                a.handle_datagram(now, addr(B), &t.payload);
            }
        }
        // Done without any time passing: no grace.
        assert_eq!(a.peer(), Some(addr(B)));
        assert_eq!(b.peer(), Some(addr(A)));
    }

    #[test]
    fn completes_in_one_round_trip() {
        let (mut a, mut b) = pair();
        let now = Instant::now();
        let mut to_b = drain(&mut a, now);
        let mut to_a = drain(&mut b, now);
        for step in 1..=2 {
            let (in_b, in_a) = (std::mem::take(&mut to_b), std::mem::take(&mut to_a));
            for t in in_b {
                assert!(b.handle_datagram(now, addr(A), &t.payload));
            }
            for t in in_a {
                assert!(a.handle_datagram(now, addr(B), &t.payload));
            }
            to_a = drain(&mut b, now);
            to_b = drain(&mut a, now);
            if step < 2 {
                assert!(a.peer().is_none() && b.peer().is_none(), "step {step}");
            }
        }
        assert_eq!(a.peer(), Some(addr(B)));
        assert_eq!(b.peer(), Some(addr(A)));
        assert!(a.poll_result(now).is_some());
    }

    #[test]
    fn a_late_starter_finishes_one_round_trip_after_it_starts() {
        let (mut a, mut b) = pair();
        let now = Instant::now();
        // a has been probing for a while; its probes were dropped by b's NAT.
        let _lost = drain(&mut a, now);
        // b starts: its probe reaches a, which answers and probes back at once.
        for t in drain(&mut b, now) {
            assert!(a.handle_datagram(now, addr(B), &t.payload));
        }
        let back = drain(&mut a, now);
        assert_eq!(back.len(), 2, "a reply and a probe");
        for t in back {
            b.handle_datagram(now, addr(A), &t.payload);
        }
        assert_eq!(b.peer(), Some(addr(A)), "b is done after one round trip");
        // b's answer to a's probe, and b's done burst, complete a.
        for t in drain(&mut b, now) {
            a.handle_datagram(now, addr(B), &t.payload);
        }
        assert_eq!(a.peer(), Some(addr(B)));
    }

    #[test]
    fn the_done_burst_completes_a_peer_whose_replies_were_lost() {
        let (mut a, mut b) = pair();
        let now = Instant::now();
        // Both probe, and each hears the other's probe.
        let (pa, pb) = (drain(&mut a, now), drain(&mut b, now));
        for t in pb {
            a.handle_datagram(now, addr(B), &t.payload);
        }
        for t in pa {
            b.handle_datagram(now, addr(A), &t.payload);
        }
        // a's answers reach b, which is then done.
        for t in drain(&mut a, now) {
            b.handle_datagram(now, addr(A), &t.payload);
        }
        assert_eq!(b.peer(), Some(addr(A)));
        // Of all b sends, only the last copy of its done burst arrives: enough for a.
        let out = drain(&mut b, now);
        assert!(a.peer().is_none());
        a.handle_datagram(now, addr(B), &out.last().unwrap().payload);
        assert_eq!(a.peer(), Some(addr(B)));
    }

    #[test]
    fn strangers_and_replays_of_other_sessions_are_ignored() {
        let (mut a, _) = pair();
        let (_, mut other) = pair();
        let now = Instant::now();
        for t in drain(&mut other, now) {
            assert!(a.handle_datagram(now, addr(B), &t.payload));
        }
        assert!(!a.handle_datagram(now, addr(B), b"garbage"));
        assert!(a.peer().is_none());
        assert!(matches!(a.finish(), Err(TechniqueError::TimedOut(w)) if w.contains("failed authentication")));
        assert!(matches!(a.diagnosis(), NoPath::FailedAuthentication { .. }));
    }

    #[test]
    fn a_reply_from_another_address_proves_nothing() {
        let (mut a, mut b) = pair();
        let now = Instant::now();
        let probe = drain(&mut a, now).remove(0);
        b.handle_datagram(now, addr(A), &probe.payload);
        let reply = drain(&mut b, now)
            .into_iter()
            .find(|t| t.destination == addr(A))
            .unwrap();
        // The reply replayed by someone else, from their address (the peer's IP, another port).
        let spoofer = addr("198.51.100.2:6666");
        assert!(a.handle_datagram(now, spoofer, &reply.payload));
        assert!(a.confirmed.is_none());
    }

    /// The attack of the security review: a captured "confirmed" message, resent from another
    /// address, made a side take that address as its peer.
    #[test]
    fn a_replayed_confirmed_message_neither_redirects_nor_ends_a_punch() {
        let (mut a, mut b) = pair();
        let now = Instant::now();
        // A full punch between a and b; capture everything b sends.
        let mut captured = Vec::new();
        let (mut to_b, mut to_a) = (drain(&mut a, now), drain(&mut b, now));
        for _ in 0..3 {
            for t in std::mem::take(&mut to_b) {
                b.handle_datagram(now, addr(A), &t.payload);
            }
            for t in std::mem::take(&mut to_a) {
                captured.push(t.payload.clone());
                a.handle_datagram(now, addr(B), &t.payload);
            }
            to_a = drain(&mut b, now);
            to_b = drain(&mut a, now);
        }
        captured.extend(to_a.into_iter().map(|t| t.payload));
        assert!(captured.iter().any(|p| p[6] & FLAG_CONFIRMED != 0));
        // A fresh puncher of the same session (a restarted a) gets every captured message,
        // replayed from another port of b's IP and from b's own address.
        let mut a2 = UdpPuncher::new(a.keys.clone(), a.paths.clone(), now, StdRng::seed_from_u64(9));
        for p in &captured {
            a2.handle_datagram(now, addr("198.51.100.2:6666"), p);
            a2.handle_datagram(now, addr(B), p);
        }
        assert_eq!(a2.peer(), None, "replays ended a punch");
        assert!(a2.confirmed.is_none());
        // Whatever a2 sends goes to the peer's IP only.
        assert!(drain(&mut a2, now).iter().all(|t| t.destination.ip() == addr(B).ip()));
    }

    /// A party at an address the peer lists relays a's probe to b from its own address, and
    /// b's reply back: b saw the relay, not a, so a refuses the reply.
    #[test]
    fn a_relayed_exchange_does_not_confirm() {
        let (mut a, mut b) = pair();
        let now = Instant::now();
        let relay = addr("203.0.113.66:4444");
        let probe = drain(&mut a, now).remove(0);
        // b only takes packets from a's IPs: from the relay's own address, nothing happens.
        b.handle_datagram(now, relay, &probe.payload);
        assert!(drain(&mut b, now).iter().all(|t| t.destination != relay));
        // Even a reply that b made for a relay sharing a's IP says where b saw it.
        let shared = addr("198.51.100.1:5555");
        b.handle_datagram(now, shared, &probe.payload);
        let reply = drain(&mut b, now)
            .into_iter()
            .find(|t| t.destination == shared)
            .unwrap();
        let m = wire::open(&a.keys, &reply.payload).unwrap();
        assert_eq!(m.observed, shared);
        // Relayed to a from a third address of b's IP: not the probe's destination.
        a.handle_datagram(now, addr("198.51.100.2:7777"), &reply.payload);
        assert!(a.confirmed.is_none());
    }

    #[test]
    fn messages_that_saw_us_elsewhere_are_ignored() {
        let (mut a, b) = pair();
        let now = Instant::now();
        let forged_elsewhere = wire::encode(
            &b.keys,
            &Message {
                kind: Kind::Probe,
                flags: FLAG_CONFIRMED,
                nonce: [1; NONCE_LEN],
                observed: addr("203.0.113.66:1000"),
            },
        );
        a.handle_datagram(now, addr(B), &forged_elsewhere);
        assert!(a.answered.is_empty());
        assert!(matches!(a.finish(), Err(TechniqueError::TimedOut(w)) if w.contains("addressed elsewhere")));
    }

    #[test]
    fn retransmits_on_a_growing_schedule_within_the_caps() {
        let (mut a, _) = pair();
        let t0 = Instant::now();
        assert_eq!(drain(&mut a, t0).len(), 1);
        assert_eq!(a.poll_timeout(), Some(t0 + FIRST_INTERVAL));
        assert!(drain(&mut a, t0 + Duration::from_millis(10)).is_empty());
        assert_eq!(drain(&mut a, t0 + FIRST_INTERVAL).len(), 1);
        assert!(matches!(a.finish(), Err(TechniqueError::TimedOut(w)) if w.contains("nothing came back")));
        // Run a long time: at most MAX_ROUNDS probes in all, at most MAX_PER_SECOND a second.
        let mut sent = Vec::new();
        let mut t = t0 + FIRST_INTERVAL;
        while let Some(next) = a.poll_timeout() {
            t = next.max(t);
            sent.extend(drain(&mut a, t).into_iter().map(|_| t));
            if t > t0 + Duration::from_secs(600) {
                break;
            }
        }
        assert!(sent.len() + 2 <= MAX_ROUNDS as usize, "{}", sent.len());
        for w in sent.windows(MAX_PER_SECOND + 1) {
            assert!(w[MAX_PER_SECOND] - w[0] >= Duration::from_secs(1));
        }
    }

    #[test]
    fn probe_rounds_grow_by_half_to_500_ms_and_stop_after_max_rounds() {
        let (mut a, _) = pair();
        let t0 = Instant::now();
        let mut rounds = Vec::new();
        let mut t = t0;
        while let Some(next) = a.poll_timeout() {
            t = next.max(t);
            if !drain(&mut a, t).is_empty() {
                rounds.push((t - t0).as_nanos());
            }
        }
        // The old code grew the interval with `mul_f32(1.5)`, which put its rounds up to 35 ns
        // off these exact times (0, 50, 125.000003, 237.500007, 406.249995, 659.374977 ms...).
        assert_eq!(
            rounds[..8],
            [
                0,
                50_000_000,
                125_000_000,
                237_500_000,
                406_250_000,
                659_375_000,
                1_039_062_500,
                1_539_062_500
            ]
        );
        assert_eq!(rounds.len(), MAX_ROUNDS as usize);
        assert_eq!(rounds.last(), Some(&47_539_062_500));
    }

    #[test]
    fn a_flood_of_authentic_probes_is_answered_at_a_bounded_rate() {
        let (mut a, mut b) = pair();
        let now = Instant::now();
        let probe = drain(&mut b, now).remove(0);
        for _ in 0..1000 {
            a.handle_datagram(now, addr(B), &probe.payload);
        }
        assert!(drain(&mut a, now).len() <= MAX_PER_SECOND);
        // From many ports of the peer's IP: at most MAX_TARGETS addresses are ever sent to.
        for port in 1..2000 {
            a.handle_datagram(now, SocketAddr::new(addr(B).ip(), port), &probe.payload);
        }
        let mut dests: Vec<SocketAddr> = drain(&mut a, now).iter().map(|t| t.destination).collect();
        dests.sort();
        dests.dedup();
        assert!(dests.len() <= MAX_TARGETS);
    }
}
