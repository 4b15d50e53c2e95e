//! The punch through a NAT whose mapping varies by destination (a "symmetric" or "hard" NAT),
//! without a socket: the birthday method, as pure state for [`crate::udp`] to drive (it reads
//! no clock, draws no random number of its own, spawns no thread and touches no socket:
//! clippy's `disallowed_methods`, denied here, checks that).
//!
//! A symmetric NAT gives each destination a new external port, so the port a STUN server saw is
//! useless to the peer. When one side's NAT is symmetric and the other's mapping is
//! endpoint-independent but filters (port-restricted, the common home router), neither side can
//! reach the other with the ordinary punch. The birthday method meets them anyway
//! ([`plan`] decides from the two rendezvous infos):
//!
//! - **The hard side** (behind the symmetric NAT) opens [`HARD_SOCKETS`] sockets, each probing
//!   the easy side's public endpoints ([`HardSocket`], on the cold schedule [`COLD_ROUNDS`]):
//!   its NAT then holds that many random external ports, each letting in the easy side's
//!   endpoint. The easy side's NAT drops these probes (they come from ports it has not sent to).
//! - **The easy side** sends authenticated probes to random ports of the hard side's public IP
//!   ([`Spray`]): [`SPRAY_BUDGET`] at most, [`SPRAY_BURST`] every [`SPRAY_INTERVAL`] (2000 a
//!   second), ports predicted from the hard side's token first ([`predicted_ports`]), and it
//!   stops at the first authenticated message from the peer. Each probe also lets the port it
//!   went to in through the easy side's NAT, for as long as the NAT keeps the flow.
//! - With 256 ports held among the 64 512 a NAT gives at random, each probe finds one with a
//!   chance of 1 in 252: 1024 probes meet one with 98.3 % probability, 2048 with 99.97 %.
//!   Whichever side comes second meets the first's state: the easy side's probes find the hard
//!   side's held ports, or the hard side's probes come through ports that the easy side's
//!   earlier probes opened, so the two need not start together (within the NATs' flow timeouts,
//!   30 s on Linux).
//! - **The first authenticated exchange wins**: it is the ordinary punch ([`UdpPuncher`]) on the
//!   socket that was met, with every property of it (a path confirms only by an authenticated
//!   reply from the probed address echoing our nonce; only the peer token's IPs are talked to).
//!   The first of the hard side's sockets to hear an authenticated message from the peer takes
//!   its [`Group`]: from then on only that socket sends anything, the others stop and are
//!   closed, and it is the socket the punch returns. So the two sides cannot settle on two
//!   different sockets when several ports meet at once: the easy side confirms a path only by
//!   a reply, and only the group's socket replies.
//! - **Both sides symmetric** would need about 170 000 probes (two sets of random ports meeting
//!   by chance): natt does not try. The ordinary punch runs for [`BOTH_HARD_WINDOW`] (enough
//!   for peers on one network), then the punch fails with [`NoPath::BothSymmetric`], which a
//!   caller with a relay takes as its cue.
//!
//! **The budget of one attempt**, what the routers pay: the easy side sends at most
//! [`SPRAY_BUDGET`] probes to the hard side's IP (2048 × 64 bytes, about 1 s at 2000 a second;
//! the hard side's router drops those that meet no held port, keeping no state of them), and
//! its own router keeps one flow per probe until its UDP timeout (30 s on Linux). The hard side
//! sends [`COLD_ROUNDS`]' 4 probes from each of its [`HARD_SOCKETS`] sockets to each of the
//! easy side's public endpoints (1024 datagrams to one endpoint, which the easy side's router
//! drops), and its router holds 256 flows until their timeout. The rationale is in
//! `docs/design.md`.

#![deny(clippy::disallowed_methods)] // a protocol core: see clippy.toml

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};

use natt_core::rendezvous::{PrivRendezvousInfo, PubRendezvousInfo};
use natt_core::retransmit::{Factor, Params};
use natt_core::{MappedSocketAddr, TechniqueError, Transmit, UdpExchange};

use crate::error::{NoPath, PunchError};
use crate::keys::SessionKeys;
use crate::path::Paths;
use crate::puncher::UdpPuncher;

/// How many sockets the hard side opens (its ordinary socket included).
pub const HARD_SOCKETS: usize = 256;
/// The most probes the easy side sends to ports of the hard side's IP in one attempt.
pub const SPRAY_BUDGET: usize = 2048;
/// Probes sent together, every [`SPRAY_INTERVAL`].
pub const SPRAY_BURST: usize = 16;
/// The pause between bursts: 16 probes every 8 ms, 2000 a second.
pub const SPRAY_INTERVAL: Duration = Duration::from_millis(8);
/// The largest step between two observed ports still taken as sequential allocation.
pub const MAX_SEQUENTIAL_STEP: u16 = 8;
/// The most predicted ports probed first (half the budget).
pub const MAX_PREDICTED: usize = SPRAY_BUDGET / 2;
/// The schedule of each of the hard side's extra sockets until the peer is heard on it: at 0,
/// 0.5, 1.5 and 3.5 s (a lost first probe leaves no mapping; later ones find ports the easy
/// side's probes opened meanwhile). A socket that hears the peer switches to the ordinary
/// [`crate::puncher::ROUNDS`].
pub const COLD_ROUNDS: Params = Params {
    initial: Duration::from_millis(500),
    factor: Factor::ratio(2, 1),
    max_interval: Some(Duration::from_secs(2)),
    max_sends: Some(COLD_SENDS),
    last_wait: None,
    jitter: 0.0,
};
/// The rounds of [`COLD_ROUNDS`].
pub const COLD_SENDS: u32 = 4;
/// The stated packet budget of one attempt, both sides together, towards one public endpoint
/// of the easy side: the spray ([`SPRAY_BUDGET`]) and the hard side's cold rounds
/// ([`HARD_SOCKETS`] × [`COLD_SENDS`]), 3072 datagrams of 64 bytes. The ordinary punch's
/// rounds (at most 25 a second to any one address) come on top; an attempt that succeeds
/// stops both early.
pub const ATTEMPT_BUDGET: usize = SPRAY_BUDGET + HARD_SOCKETS * COLD_SENDS as usize;
/// How long two symmetric sides try the ordinary punch before failing with
/// [`NoPath::BothSymmetric`]: peers on one network meet in milliseconds.
pub const BOTH_HARD_WINDOW: Duration = Duration::from_secs(2);
/// The lowest port NATs give at random (Linux gives 1024 to 65535 to a source port of 1024 or
/// more).
const FIRST_PORT: u16 = 1024;

/// What a punch does, from both sides' rendezvous infos.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Plan {
    /// The ordinary punch: neither side is hard, or the other side can be reached anyway.
    Ordinary,
    /// We are behind the symmetric NAT and the peer filters: open [`HARD_SOCKETS`] sockets.
    Hard,
    /// The peer is behind the symmetric NAT and we filter: spray its IP ([`Spray`]).
    Easy,
    /// Both sides are behind symmetric NATs: the ordinary punch for [`BOTH_HARD_WINDOW`], then
    /// [`NoPath::BothSymmetric`].
    BothHard,
}

/// Whether a side with these endpoints is reachable without a punch: an endpoint that is
/// neither a local interface's nor behind a filter (a UPnP or PCP mapping, a full-cone NAT's
/// address).
fn open(endpoints: &[MappedSocketAddr]) -> bool {
    endpoints
        .iter()
        .any(|e| !e.nat_restricted && e.technique != natt_core::local::LOCAL)
}

/// What the punch between `ours` and `theirs` does. A side is hard when its mapping varies by
/// destination and it has no open endpoint (a port mapping makes it reachable anyway); the
/// birthday method is for a hard side and a side that filters (without an open endpoint).
pub fn plan(ours: &PrivRendezvousInfo, theirs: &PubRendezvousInfo) -> Plan {
    let we_hard = ours.mapping_varies && !open(&ours.endpoints);
    let they_hard = theirs.mapping_varies && !open(&theirs.endpoints);
    match (we_hard, they_hard) {
        (true, true) => Plan::BothHard,
        (true, false) if !open(&theirs.endpoints) => Plan::Hard,
        (false, true) if !open(&ours.endpoints) => Plan::Easy,
        _ => Plan::Ordinary,
    }
}

/// The ports servers saw the peer at on `ip` (its observed, restricted endpoints), ascending.
fn observed_ports(theirs: &PubRendezvousInfo, ip: IpAddr) -> Vec<u16> {
    let mut ports: Vec<u16> = theirs
        .endpoints
        .iter()
        .filter(|e| e.nat_restricted && e.technique != natt_core::local::LOCAL && e.addr.ip() == ip)
        .map(|e| e.addr.port())
        .collect();
    ports.sort_unstable();
    ports.dedup();
    ports
}

/// The ports the hard side's new sockets probably got, when two observations show its NAT
/// giving ports in sequence (the highest two a step of 1 to [`MAX_SEQUENTIAL_STEP`] apart):
/// the ports after the highest, as many steps on as the hard side opens sockets (and a
/// quarter more, for other hosts' flows meanwhile), at most [`MAX_PREDICTED`]. Empty otherwise.
pub fn predicted_ports(observed: &[u16]) -> Vec<u16> {
    let [.., low, high] = observed else {
        return Vec::new();
    };
    let step = high.saturating_sub(*low);
    if step == 0 || step > MAX_SEQUENTIAL_STEP {
        return Vec::new();
    }
    let span = usize::from(step) * (HARD_SOCKETS + HARD_SOCKETS / 4);
    let range = usize::from(u16::MAX - FIRST_PORT) + 1;
    (1..=span.min(MAX_PREDICTED))
        .map(|k| {
            let offset = (usize::from(high.saturating_sub(FIRST_PORT)) + k) % range;
            FIRST_PORT.saturating_add(u16::try_from(offset).unwrap_or(0))
        })
        .collect()
}

/// The hard side's public IP to spray: the IP at which servers saw it at two ports (else at
/// any restricted observed endpoint), if the peer's token lists one that `paths` accepts.
pub fn spray_ip(theirs: &PubRendezvousInfo, paths: &Paths) -> Option<IpAddr> {
    let seen: Vec<IpAddr> = theirs
        .endpoints
        .iter()
        .filter(|e| e.nat_restricted && e.technique != natt_core::local::LOCAL)
        .map(|e| e.addr.ip())
        .filter(|ip| paths.targets().iter().any(|t| t.ip() == *ip))
        .collect();
    seen.iter()
        .copied()
        .find(|ip| seen.iter().filter(|o| *o == ip).count() >= 2)
        .or_else(|| seen.first().copied())
}

/// The easy side's probes to random ports of the hard side's IP: predicted ports first, then
/// distinct random ports, [`SPRAY_BUDGET`] in all, in bursts of [`SPRAY_BURST`] every
/// [`SPRAY_INTERVAL`], until [`stop`](Spray::stop).
#[derive(Debug, Clone)]
pub struct Spray {
    ip: IpAddr,
    ports: Vec<u16>,
    next: usize,
    due: Instant,
    stopped: bool,
}

impl Spray {
    /// A spray of `ip` starting `now`, probing `predicted` first, then random ports from `rng`,
    /// skipping the ports in `skip` (those the ordinary punch probes already).
    pub fn new(ip: IpAddr, predicted: &[u16], skip: &[u16], rng: &mut StdRng, now: Instant) -> Self {
        // Ports taken already (to skip, or chosen), indexed by port.
        let mut taken = vec![false; usize::from(u16::MAX) + 1];
        for p in skip {
            if let Some(t) = taken.get_mut(usize::from(*p)) {
                *t = true;
            }
        }
        let mut ports: Vec<u16> = Vec::with_capacity(SPRAY_BUDGET);
        for p in predicted {
            if let Some(t) = taken.get_mut(usize::from(*p))
                && !*t
                && ports.len() < SPRAY_BUDGET
            {
                *t = true;
                ports.push(*p);
            }
        }
        let mut all: Vec<u16> = (FIRST_PORT..=u16::MAX)
            .filter(|p| taken.get(usize::from(*p)) == Some(&false))
            .collect();
        let want = SPRAY_BUDGET.saturating_sub(ports.len());
        let (chosen, _) = all.partial_shuffle(rng, want);
        ports.extend_from_slice(chosen);
        Spray {
            ip,
            ports,
            next: 0,
            due: now,
            stopped: false,
        }
    }

    /// The addresses to probe now (a burst, when one is due).
    pub fn due(&mut self, now: Instant) -> Vec<SocketAddr> {
        if self.stopped || now < self.due {
            return Vec::new();
        }
        let end = (self.next + SPRAY_BURST).min(self.ports.len());
        let burst = self
            .ports
            .get(self.next..end)
            .unwrap_or(&[])
            .iter()
            .map(|p| SocketAddr::new(self.ip, *p))
            .collect();
        self.next = end;
        self.due = now + SPRAY_INTERVAL;
        burst
    }

    /// When the next burst is due; `None` once stopped or spent.
    pub fn next_time(&self) -> Option<Instant> {
        (!self.stopped && self.next < self.ports.len()).then_some(self.due)
    }

    /// Stops: the peer was heard.
    pub fn stop(&mut self) {
        self.stopped = true;
    }

    /// How many probes have been sent.
    pub fn sent(&self) -> usize {
        self.next
    }

    /// The IP sprayed.
    pub fn ip(&self) -> IpAddr {
        self.ip
    }
}

/// The easy side's spray towards the peer of `theirs`, if it has an IP to spray.
pub fn spray_for(theirs: &PubRendezvousInfo, paths: &Paths, rng: &mut StdRng, now: Instant) -> Option<Spray> {
    let ip = spray_ip(theirs, paths)?;
    let observed = observed_ports(theirs, ip);
    let skip: Vec<u16> = paths
        .targets()
        .iter()
        .filter(|t| t.ip() == ip)
        .map(|t| t.port())
        .collect();
    let predicted = predicted_ports(&observed);
    if !predicted.is_empty() {
        log::debug!(
            "the peer's NAT gave ports {observed:?} in sequence: probing {} ports after them first",
            predicted.len()
        );
    }
    Some(Spray::new(ip, &predicted, &skip, rng, now))
}

/// Which of the hard side's sockets won: exactly one can.
#[derive(Debug)]
pub struct Group {
    winner: AtomicUsize,
}

impl Default for Group {
    fn default() -> Self {
        Group {
            winner: AtomicUsize::new(usize::MAX),
        }
    }
}

impl Group {
    /// A group without a winner.
    pub fn new() -> Self {
        Self::default()
    }

    /// Socket `index` heard the peer: whether it is the winner (the first to claim). A
    /// socket driven outside a [`HardSocket`] (the fallback call's mapped socket) claims so.
    pub fn claim(&self, index: usize) -> bool {
        match self
            .winner
            .compare_exchange(usize::MAX, index, Ordering::AcqRel, Ordering::Acquire)
        {
            Ok(_) => true,
            Err(w) => w == index,
        }
    }

    /// The winning socket's index, once there is one.
    pub fn winner(&self) -> Option<usize> {
        let w = self.winner.load(Ordering::Acquire);
        (w != usize::MAX).then_some(w)
    }
}

/// One of the hard side's sockets: the ordinary punch on it (cold, for the extra sockets),
/// ending when it wins or when another socket of its [`Group`] has.
#[derive(Debug)]
pub struct HardSocket {
    index: usize,
    puncher: UdpPuncher,
    group: Arc<Group>,
}

impl HardSocket {
    /// Whether another socket of the group met the peer first.
    fn lost(&self) -> bool {
        self.group.winner().is_some_and(|w| w != self.index)
    }

    /// The socket's index in its group (0: the socket that was mapped).
    pub fn index(&self) -> usize {
        self.index
    }

    /// The punch on this socket.
    pub fn puncher(&self) -> &UdpPuncher {
        &self.puncher
    }

    /// The punch on this socket, taken out (the winner's, to go on answering the peer).
    pub fn into_puncher(self) -> UdpPuncher {
        self.puncher
    }
}

impl UdpExchange for HardSocket {
    fn poll_transmit(&mut self, now: Instant) -> Option<Transmit> {
        if self.lost() {
            return None;
        }
        self.puncher.poll_transmit(now)
    }

    /// The punch's own: natt-core's receive loop asks for the result at least every 50 ms
    /// ([`natt_core::deadline::MAX_COARSE`]) whatever the timeout, so a socket sees within that
    /// time that another has won.
    fn poll_timeout(&self) -> Option<Instant> {
        self.puncher.poll_timeout()
    }

    fn handle_datagram(&mut self, now: Instant, from: SocketAddr, data: &[u8]) -> bool {
        if self.lost() {
            return crate::wire::is_punch_packet(data);
        }
        let before = self.puncher.heard_authentic();
        let claimed = self.puncher.handle_datagram(now, from, data);
        if self.puncher.heard_authentic() > before && self.group.claim(self.index) {
            log::debug!("socket {} met the peer ({from}): it is the one", self.index);
        }
        // A socket that lost the group in the meantime sends nothing of what it queued.
        claimed
    }

    fn poll_result(&mut self, now: Instant) -> Option<Result<Vec<MappedSocketAddr>, TechniqueError>> {
        if self.lost() {
            return Some(Err(TechniqueError::NotApplicable("another socket met the peer".into())));
        }
        self.puncher.poll_result(now)
    }

    fn finish(&mut self) -> Result<Vec<MappedSocketAddr>, TechniqueError> {
        self.puncher.finish()
    }
}

/// The one endpoint of the peer the hard side's extra sockets probe: where servers saw it (the
/// port its probes will come from, its mapping being endpoint-independent), else its first
/// public one. A hostile token listing many addresses gets no more from us than one does.
pub fn peer_endpoint(theirs: &PubRendezvousInfo) -> Vec<MappedSocketAddr> {
    theirs
        .endpoints
        .iter()
        .filter(|e| e.technique != natt_core::local::LOCAL && !natt_core::endpoint::is_private(e.addr.ip()))
        .min_by_key(|e| !e.nat_restricted)
        .cloned()
        .into_iter()
        .collect()
}

/// The hard side's sockets, one per local address in `locals` (the first the socket that was
/// mapped, which punches as usual; the others cold, towards one public endpoint of the peer:
/// where a server saw it), sharing `group`. Their nonces come from generators seeded from
/// `rng`.
pub fn hard_sockets(
    keys: &SessionKeys,
    ours: &PrivRendezvousInfo,
    theirs: &PubRendezvousInfo,
    locals: &[SocketAddr],
    group: &Arc<Group>,
    now: Instant,
    rng: &mut StdRng,
) -> Result<Vec<HardSocket>, PunchError> {
    let public = peer_endpoint(theirs);
    let mut out = Vec::with_capacity(locals.len());
    let Some((first, extras)) = locals.split_first() else {
        return Ok(out);
    };
    let member_rng = StdRng::seed_from_u64(rng.random());
    let puncher = UdpPuncher::new(
        keys.clone(),
        Paths::new(*first, &ours.endpoints, &theirs.endpoints)?,
        now,
        member_rng,
    )
    .birthday_side();
    out.push(HardSocket {
        index: 0,
        puncher,
        group: Arc::clone(group),
    });
    out.extend(cold_sockets(keys, ours, &public, extras, group, now, rng));
    Ok(out)
}

/// The hard side's extra sockets alone, indices 1 on, one per local address in `locals`, cold,
/// towards `public` (one public endpoint of the peer, see [`hard_sockets`]), sharing `group`:
/// for a driver whose mapped socket (index 0) runs a punch of its own and claims the group
/// with [`Group::claim`] (the fallback call's). [`peer_endpoint`] gives `public`.
pub fn cold_sockets(
    keys: &SessionKeys,
    ours: &PrivRendezvousInfo,
    public: &[MappedSocketAddr],
    locals: &[SocketAddr],
    group: &Arc<Group>,
    now: Instant,
    rng: &mut StdRng,
) -> Vec<HardSocket> {
    let mut out = Vec::with_capacity(locals.len());
    for (i, local) in locals.iter().enumerate() {
        let member_rng = StdRng::seed_from_u64(rng.random());
        let Ok(paths) = Paths::new(*local, &ours.endpoints, public) else {
            break;
        };
        out.push(HardSocket {
            index: i + 1,
            puncher: UdpPuncher::new(keys.clone(), paths, now, member_rng).cold(now),
            group: Arc::clone(group),
        });
    }
    out
}

/// Why the hard side found no path: the first fact one of its sockets can state (a stale
/// token, a relay...), else that no port of ours was met.
pub fn hard_diagnosis(sockets: &[HardSocket]) -> NoPath {
    sockets
        .iter()
        .map(|s| s.puncher.diagnosis())
        .find(|d| !matches!(d, NoPath::NothingCameBack { .. }))
        .unwrap_or(NoPath::BirthdayMissed {
            probes: 0,
            sockets: sockets.len(),
        })
}

#[cfg(test)]
#[allow(clippy::disallowed_methods)] // tests take a starting instant from the clock
mod tests {
    use super::*;
    use natt_core::rendezvous::{Secret, gen_rendezvous_info};

    fn ep(s: &str, restricted: bool, t: &str) -> MappedSocketAddr {
        MappedSocketAddr::new(s.parse().unwrap(), restricted, t)
    }

    fn info(eps: Vec<MappedSocketAddr>, varies: bool) -> (PrivRendezvousInfo, PubRendezvousInfo) {
        let (mut p, mut q) = gen_rendezvous_info(eps);
        p.mapping_varies = varies;
        q.mapping_varies = varies;
        (p, q)
    }

    fn hard() -> Vec<MappedSocketAddr> {
        vec![
            ep("192.168.1.2:5000", false, "local"),
            ep("198.51.100.1:40001", true, "stun"),
            ep("198.51.100.1:51234", true, "stun"),
        ]
    }

    fn easy() -> Vec<MappedSocketAddr> {
        vec![
            ep("192.168.2.2:5000", false, "local"),
            ep("198.51.100.2:5000", true, "stun"),
        ]
    }

    #[test]
    fn the_plan_follows_the_facts_of_both_tokens() {
        let (h_priv, h_pub) = info(hard(), true);
        let (e_priv, e_pub) = info(easy(), false);
        assert_eq!(plan(&h_priv, &e_pub), Plan::Hard);
        assert_eq!(plan(&e_priv, &h_pub), Plan::Easy);
        assert_eq!(plan(&h_priv, &h_pub), Plan::BothHard);
        assert_eq!(plan(&e_priv, &e_pub), Plan::Ordinary);
        // An open endpoint (a UPnP mapping, a full cone) needs no birthday.
        let mut full = easy();
        full.push(ep("198.51.100.2:6000", false, "upnp"));
        let (f_priv, f_pub) = info(full, false);
        assert_eq!(plan(&h_priv, &f_pub), Plan::Ordinary);
        assert_eq!(plan(&f_priv, &h_pub), Plan::Ordinary);
        let mut mapped = hard();
        mapped.push(ep("198.51.100.1:7000", false, "pcp"));
        let (m_priv, m_pub) = info(mapped, true);
        assert_eq!(plan(&m_priv, &e_pub), Plan::Ordinary);
        assert_eq!(plan(&m_priv, &h_pub), Plan::Ordinary);
        assert_eq!(plan(&e_priv, &m_pub), Plan::Ordinary);
    }

    #[test]
    fn sequential_observations_predict_the_next_ports() {
        assert_eq!(predicted_ports(&[40000, 40001])[..3], [40002, 40003, 40004]);
        assert_eq!(predicted_ports(&[40000, 40001]).len(), 320);
        assert_eq!(predicted_ports(&[40000, 40002]).len(), 640);
        assert_eq!(predicted_ports(&[40000, 40008]).len(), MAX_PREDICTED);
        assert!(predicted_ports(&[40000, 40009]).is_empty());
        assert!(predicted_ports(&[40000]).is_empty());
        assert!(predicted_ports(&[]).is_empty());
        // Near the top the prediction wraps to the lowest port a NAT gives.
        let p = predicted_ports(&[65533, 65534]);
        assert_eq!(p[..3], [65535, 1024, 1025]);
    }

    #[test]
    fn the_spray_keeps_its_budget_pace_and_ports() {
        let t0 = Instant::now();
        let mut rng = StdRng::seed_from_u64(1);
        let predicted = predicted_ports(&[40000, 40001]);
        let mut s = Spray::new("198.51.100.1".parse().unwrap(), &predicted, &[40001], &mut rng, t0);
        let mut all = Vec::new();
        let mut t = t0;
        while let Some(next) = s.next_time() {
            assert!(next >= t);
            t = next;
            let burst = s.due(t);
            assert!(!burst.is_empty() && burst.len() <= SPRAY_BURST);
            assert!(s.due(t).is_empty(), "one burst per interval");
            all.extend(burst);
        }
        assert_eq!(all.len(), SPRAY_BUDGET);
        assert_eq!(s.sent(), SPRAY_BUDGET);
        assert_eq!(t - t0, SPRAY_INTERVAL * (SPRAY_BUDGET / SPRAY_BURST - 1) as u32);
        let ports: Vec<u16> = all.iter().map(|a| a.port()).collect();
        assert_eq!(ports[..predicted.len()], predicted[..]);
        let mut distinct = ports.clone();
        distinct.sort_unstable();
        distinct.dedup();
        assert_eq!(distinct.len(), SPRAY_BUDGET);
        assert!(ports.iter().all(|p| *p >= FIRST_PORT && *p != 40001));
        assert!(all.iter().all(|a| a.ip() == s.ip()));
        // Stopped, it sends nothing more.
        let mut s = Spray::new("198.51.100.1".parse().unwrap(), &[], &[], &mut rng, t0);
        assert_eq!(s.due(t0).len(), SPRAY_BURST);
        s.stop();
        assert!(s.due(t0 + SPRAY_INTERVAL).is_empty() && s.next_time().is_none());
    }

    #[test]
    fn the_spray_aims_at_the_ip_seen_at_two_ports() {
        let (e_priv, _) = info(easy(), false);
        let mut eps = hard();
        eps.insert(1, ep("203.0.113.50:9", true, "simple"));
        let (_, h_pub) = info(eps, true);
        let paths = Paths::new("0.0.0.0:5000".parse().unwrap(), &e_priv.endpoints, &h_pub.endpoints).unwrap();
        assert_eq!(spray_ip(&h_pub, &paths), Some("198.51.100.1".parse().unwrap()));
        let s = spray_for(&h_pub, &paths, &mut StdRng::seed_from_u64(1), Instant::now()).unwrap();
        assert_eq!(s.ip(), "198.51.100.1".parse::<IpAddr>().unwrap());
        // A token with only local endpoints gives nothing to spray.
        let (_, local_only) = info(vec![ep("192.168.1.2:5000", false, "local")], true);
        let paths = Paths::new(
            "0.0.0.0:5000".parse().unwrap(),
            &e_priv.endpoints,
            &local_only.endpoints,
        )
        .unwrap();
        assert_eq!(spray_ip(&local_only, &paths), None);
    }

    #[test]
    fn the_stated_figures_are_the_constants() {
        // The module docs, the README and the bench state these in words.
        assert_eq!(
            (HARD_SOCKETS, SPRAY_BUDGET, COLD_SENDS, ATTEMPT_BUDGET),
            (256, 2048, 4, 3072)
        );
        assert_eq!(
            SPRAY_BURST as u128 * 1000 / SPRAY_INTERVAL.as_millis(),
            2000,
            "a second's probes"
        );
        // 1 in 252 per probe: 1024 probes meet a held port with 98.3 %, 2048 with 99.97 %.
        let miss = |n: i32| (1.0 - HARD_SOCKETS as f64 / 64_512.0).powi(n);
        assert!((1.0 - miss(1024) - 0.983).abs() < 0.001 && (1.0 - miss(2048) - 0.9997).abs() < 0.0001);
    }

    #[test]
    fn exactly_one_socket_of_a_group_wins() {
        let g = Group::new();
        assert_eq!(g.winner(), None);
        assert!(g.claim(3));
        assert!(g.claim(3));
        assert!(!g.claim(0));
        assert_eq!(g.winner(), Some(3));
    }

    #[test]
    fn extra_sockets_probe_only_the_peers_public_endpoints() {
        let (h_priv, _) = info(hard(), true);
        let (_, e_pub) = info(easy(), false);
        let keys = SessionKeys::new(
            &h_priv,
            &PubRendezvousInfo {
                secret: Secret([9; 16]),
                ..e_pub.clone()
            },
        )
        .unwrap();
        let locals: Vec<SocketAddr> = (0..4).map(|i| SocketAddr::from(([0, 0, 0, 0], 5000 + i))).collect();
        let group = Arc::new(Group::new());
        let t0 = Instant::now();
        let socks = hard_sockets(
            &keys,
            &h_priv,
            &e_pub,
            &locals,
            &group,
            t0,
            &mut StdRng::seed_from_u64(1),
        )
        .unwrap();
        assert_eq!(socks.len(), 4);
        assert_eq!(socks[0].puncher().targets().len(), 2);
        for s in &socks[1..] {
            assert_eq!(
                s.puncher().targets(),
                &["198.51.100.2:5000".parse::<SocketAddr>().unwrap()]
            );
        }
        // A token listing many public addresses: still one target each.
        let mut many = easy();
        many.insert(0, ep("198.51.100.2:6000", false, "upnp"));
        for i in 0..20 {
            many.push(ep(&format!("203.0.113.{i}:7000"), true, "stun"));
        }
        let (_, many_pub) = info(many, false);
        let t = |s: &HardSocket| s.puncher().targets().to_vec();
        let socks = hard_sockets(
            &keys,
            &h_priv,
            &many_pub,
            &locals,
            &group,
            t0,
            &mut StdRng::seed_from_u64(1),
        )
        .unwrap();
        for s in &socks[1..] {
            assert_eq!(t(s), ["198.51.100.2:5000".parse::<SocketAddr>().unwrap()]);
        }
        assert!(matches!(
            hard_diagnosis(&socks),
            NoPath::BirthdayMissed { probes: 0, sockets: 4 }
        ));
    }
}
