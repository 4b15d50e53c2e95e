//! [`Race`]: connecting with fallback, without sockets (a protocol core: fed datagrams, time
//! and a random generator; clippy's `disallowed_methods` is denied here). It runs the punch
//! ([`UdpPuncher`], protocol 2, unchanged) on up to three **lanes** at once, decides which
//! confirmed path the connection takes, moves it from a relayed path to a direct one when that
//! opens later, and tells the peer's data from everything else.
//!
//! The lanes, each a punch of its own with the session's keys:
//!
//! | lane          | probes                                  | travels                      |
//! |---------------|-----------------------------------------|------------------------------|
//! | direct        | the peer's endpoints but its relayed ones | the socket, plain UDP       |
//! | peer's relay  | the peer's `turn` endpoints             | the socket, plain UDP        |
//! | our relay     | the peer's public endpoints             | our allocation ([`Via::Relay`]) |
//! | relay to relay | the peer's `turn` endpoints            | our allocation ([`Via::Relay`]) |
//!
//! A peer without a relay needs no TURN of its own: its peer's-relay lane probes our relayed
//! address with plain UDP, which opens its NAT towards the relay, and the relay hands its probe
//! to our our-relay lane with the peer's real address (the relay forwards only from the IPs we
//! gave permissions to: the peer's). One relay on one side is so enough for any pair of NATs,
//! and a side whose network lets no UDP out reaches its relay over TCP.
//!
//! Every path is still the punch's: it confirms only by an authenticated reply from the probed
//! address that echoes our nonce and saw us at one of our token's addresses (the relayed one
//! among them), so neither the relay nor a third host can complete a connection as the peer.
//!
//! **Direct first.** A direct path, once done, is taken at once. A relayed path is taken only
//! when no direct path is done [`RELAY_GRACE`] after it: a direct path that works usually
//! confirms first anyway (it is as short or shorter, and the relay's allocation was made
//! before). When the direct lane has heard authentic packets from the peer but has not
//! confirmed (a path half open: it will likely confirm within a round trip), the relayed path
//! waits [`DIRECT_PATIENCE`] instead. While relayed, the direct lane goes on (its punch's rate
//! caps and round limit), then starts again after [`DIRECT_RETRY`], at most
//! [`DIRECT_RESTARTS`] times; once it is done the connection moves to it. Data is taken from
//! every confirmed path, so nothing already on its way over the other path is lost.
//!
//! **Hard NATs.** When one side is behind a symmetric NAT and the other filters
//! ([`birthday::plan`] on the peer's own endpoints), the direct lane is the birthday method's:
//! on the easy side ([`Plan::Easy`]) its punch also sprays the peer's IP
//! ([`birthday::spray_for`]); on the hard side ([`Plan::Hard`]) the mapped socket is index 0 of
//! the method's [`Group`], the driver runs the extra sockets' punches
//! ([`Race::hard_sockets`]) and the one that meets the peer is adopted as the direct lane
//! ([`Race::adopt`], [`Via::Birthday`]); until then only the group's winner answers. A
//! confirmed relayed path waits for it until [`BIRTHDAY_PATIENCE`] after the start (on the hard
//! side, unless its extra sockets ended first, [`Race::birthday_over`]). A direct lane started
//! again while relayed runs the ordinary punch, without a new spray.

#![deny(clippy::disallowed_methods)] // a protocol core: see clippy.toml

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::SeedableRng;
use rand::rngs::StdRng;

use natt_core::rendezvous::{PrivRendezvousInfo, PubRendezvousInfo};
use natt_core::{MappedSocketAddr, Transmit, UdpExchange};
use natt_punch::birthday::{self, Group, HardSocket, Plan};
use natt_punch::keys::SessionKeys;
use natt_punch::path::Paths;
use natt_punch::puncher::{MAX_PER_SECOND, UdpPuncher};
use natt_punch::wire::{self, FLAG_CONFIRMED, FLAG_DONE, Kind, Message};
use natt_punch::{NoPath, PunchError, is_punch_packet};

/// How long the peer's-relay lane holds its first probes back. The peer installs the
/// permission that lets us through its relay only once it has read our token, at about the
/// moment we read its own; a probe that reaches the relay before that permission is dropped and
/// the punch waits for its next round (50 ms). Both sides start within a token poll of each other
/// (a few milliseconds), so a short hold lets the permission win.
pub const PEER_RELAY_HOLD: Duration = Duration::from_millis(10);
/// How long a confirmed relayed path waits for a direct path that has shown no sign of life.
pub const RELAY_GRACE: Duration = Duration::from_millis(10);
/// How long a confirmed relayed path waits for a direct path that is half open (the peer's
/// authentic packets arrived on it).
pub const DIRECT_PATIENCE: Duration = Duration::from_millis(300);
/// While relayed: the pause between the direct lane's punch running out of rounds and a new
/// one.
pub const DIRECT_RETRY: Duration = Duration::from_secs(10);
/// While relayed: how many times the direct lane starts again (with its rounds, about 15
/// minutes of trying in all).
pub const DIRECT_RESTARTS: u32 = 16;

/// How long a confirmed relayed path waits, from the start, for the birthday method (one side
/// behind a symmetric NAT, the other filtering: [`Plan::Hard`] or [`Plan::Easy`]) to meet: the
/// easy side's whole spray takes about 1 s, and two thirds of the attempts meet within a
/// quarter of it.
pub const BIRTHDAY_PATIENCE: Duration = Duration::from_secs(2);

/// How a datagram travels between us and the peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Via {
    /// Plain UDP on the connection's socket.
    Socket,
    /// Through our own TURN allocation (framed by the relay client).
    Relay,
    /// Plain UDP on the hard side's extra socket that met the peer (the birthday method,
    /// [`Race::adopt`]).
    Birthday,
}

/// Which kind of path a lane punches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Lane {
    /// Plain UDP to the peer's own (non-relayed) endpoints.
    Direct,
    /// Plain UDP to the peer's relayed address, on the peer's TURN server.
    PeerRelay,
    /// Through our own allocation, to the peer's public endpoints.
    OwnRelay,
    /// Through our own allocation to the peer's relayed address (both sides hold a relay; on
    /// one server, each allocation permits the server's own IP when it is made, so both sides'
    /// first probes pass).
    RelayToRelay,
}

impl Lane {
    /// How the lane's datagrams travel ([`Race::chosen_via`] tells when the direct lane moved
    /// to [`Via::Birthday`]).
    pub fn via(self) -> Via {
        match self {
            Lane::Direct | Lane::PeerRelay => Via::Socket,
            Lane::OwnRelay | Lane::RelayToRelay => Via::Relay,
        }
    }

    /// Whether the lane's path goes through a relay.
    pub fn is_relayed(self) -> bool {
        self != Lane::Direct
    }
}

/// A path the connection uses: the lane and the peer's address on it (for [`Lane::OwnRelay`]
/// the peer's address as the relay sees it; for [`Lane::PeerRelay`] the peer's relayed
/// address).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Chosen {
    /// The lane.
    pub lane: Lane,
    /// Where to send.
    pub peer: SocketAddr,
}

/// What the connection learns from [`Race::handle`].
#[derive(Debug, PartialEq, Eq)]
pub enum Incoming {
    /// A punch message (the punch took it, or it was stale or not authentic).
    Punch,
    /// The peer's data, on a confirmed path.
    Data(Vec<u8>),
    /// Not a punch message, and not from a confirmed path: dropped.
    Stranger,
}

/// One lane's punch.
#[derive(Debug)]
struct Run {
    lane: Lane,
    /// How its datagrams travel: the lane's, or [`Via::Birthday`] once adopted.
    via: Via,
    paths: Paths,
    puncher: UdpPuncher,
    /// When its punch was done.
    done_at: Option<Instant>,
    /// When its punch ran out of rounds without being done.
    exhausted_at: Option<Instant>,
    restarts: u32,
    /// When this lane answered probes after it was done, within the last second.
    answered: VecDeque<Instant>,
    /// Until when it sends nothing ([`PEER_RELAY_HOLD`], the peer's-relay lane).
    hold_until: Option<Instant>,
}

/// The hard side of the birthday method: the group the mapped socket (index 0, the direct
/// lane) and the driver's extra sockets share.
#[derive(Debug)]
struct HardSide {
    group: Arc<Group>,
    ours: PrivRendezvousInfo,
    /// The one endpoint of the peer the extra sockets probe.
    public: Vec<MappedSocketAddr>,
    /// The attempt ended without an extra socket's path ([`Race::birthday_over`]).
    over: bool,
    /// An extra socket's punch was adopted as the direct lane.
    adopted: bool,
}

/// The lanes, the decision and the move to a direct path (see the module documentation).
#[derive(Debug)]
pub struct Race {
    keys: SessionKeys,
    plan: Plan,
    started: Instant,
    /// The direct lane runs the birthday method (a spray, or the hard side's group).
    birthday: bool,
    hard: Option<HardSide>,
    runs: Vec<Run>,
    rng: StdRng,
    chosen: Option<Chosen>,
    /// A relayed path chosen first, then the direct one: how many moves.
    moves: u32,
    /// Every peer address of a done lane: data is taken from these.
    accepted: Vec<(Via, SocketAddr)>,
    /// Where the relayed lanes send: the peer's `turn` endpoints.
    peer_relayed: Vec<SocketAddr>,
    /// The next lane to take a transmission from (round robin).
    next: usize,
    /// Answers of done lanes, to send.
    queue: VecDeque<(Via, Transmit)>,
}

impl Race {
    /// The race for a socket bound at `local`, with our rendezvous info and the peer's;
    /// `own_relay` says whether we hold an allocation on a TURN server (listed among our
    /// endpoints). Fails when no lane has a usable peer endpoint (the direct lane's reason).
    pub fn new(
        local: SocketAddr,
        ours: &PrivRendezvousInfo,
        theirs: &PubRendezvousInfo,
        own_relay: bool,
        now: Instant,
        mut rng: StdRng,
    ) -> Result<Race, PunchError> {
        let keys = SessionKeys::new(ours, theirs)?;
        let (relayed, direct): (Vec<MappedSocketAddr>, Vec<MappedSocketAddr>) = theirs
            .endpoints
            .iter()
            .cloned()
            .partition(|e| e.technique == natt_punch::path::TURN);
        let public: Vec<MappedSocketAddr> = direct
            .iter()
            .filter(|e| !natt_core::endpoint::is_private(e.addr.ip()))
            .cloned()
            .collect();
        // The birthday method is the direct lane's business: decided on the peer's own
        // endpoints (a relayed address is no port of its NAT).
        let theirs_direct = PubRendezvousInfo {
            endpoints: direct.clone(),
            ..theirs.clone()
        };
        let plan = birthday::plan(ours, &theirs_direct);
        let mut plans = vec![(Lane::Direct, direct), (Lane::PeerRelay, relayed.clone())];
        if own_relay {
            plans.push((Lane::OwnRelay, public));
            // A lane of its own (one peer address per lane, and the peer's data is taken from
            // the done lanes' peers), so that the relay-to-relay path and the path from the
            // peer's NAT through our relay are both known.
            plans.push((Lane::RelayToRelay, relayed.clone()));
        }
        let mut runs = Vec::new();
        let mut first_error = None;
        let mut sprays = false;
        for (lane, theirs) in plans {
            if theirs.is_empty() {
                continue;
            }
            match Paths::new(local, &ours.endpoints, &theirs) {
                Ok(paths) => {
                    let mut puncher = UdpPuncher::new(keys.clone(), paths.clone(), now, StdRng::from_rng(&mut rng));
                    if lane == Lane::Direct {
                        (puncher, sprays) = birthday_lane(puncher, plan, &theirs_direct, &paths, &mut rng, now);
                    }
                    runs.push(Run {
                        lane,
                        via: lane.via(),
                        paths,
                        puncher,
                        done_at: None,
                        exhausted_at: None,
                        restarts: 0,
                        answered: VecDeque::new(),
                        hold_until: (lane == Lane::PeerRelay).then(|| now + PEER_RELAY_HOLD),
                    });
                }
                Err(e) => {
                    log::debug!("fallback: no {lane:?} lane: {e}");
                    first_error.get_or_insert(e);
                }
            }
        }
        if runs.is_empty() {
            return Err(first_error.unwrap_or(PunchError::NoEndpoint));
        }
        log::debug!(
            "fallback: lanes {:?}",
            runs.iter()
                .map(|r| (r.lane, r.puncher.targets().to_vec()))
                .collect::<Vec<_>>()
        );
        let direct_runs = runs.iter().any(|r| r.lane == Lane::Direct);
        let hard = (plan == Plan::Hard && direct_runs).then(|| HardSide {
            group: Arc::new(Group::new()),
            ours: ours.clone(),
            public: birthday::peer_endpoint(&theirs_direct),
            over: false,
            adopted: false,
        });
        let birthday = hard.is_some() || sprays;
        Ok(Race {
            keys,
            plan,
            started: now,
            birthday,
            hard,
            runs,
            rng,
            chosen: None,
            moves: 0,
            accepted: Vec::new(),
            peer_relayed: relayed.iter().map(|e| e.addr).collect(),
            next: 0,
            queue: VecDeque::new(),
        })
    }

    /// What the direct lane does, from both tokens ([`birthday::plan`], on the peer's own
    /// endpoints).
    pub fn plan(&self) -> Plan {
        self.plan
    }

    /// On the hard side of the birthday method ([`Plan::Hard`]), while it runs: the extra
    /// sockets' punches (indices 1 on, cold, sharing the group of the direct lane's mapped
    /// socket, index 0), one per local address in `locals` (sockets the driver bound on the
    /// mapped socket's IP); empty otherwise. The driver runs each on its socket; the one that
    /// meets the peer is [`adopt`](Self::adopt)ed.
    pub fn hard_sockets(&mut self, locals: &[SocketAddr], now: Instant) -> Vec<HardSocket> {
        match &self.hard {
            Some(h) if !h.over && !h.adopted => {
                birthday::cold_sockets(&self.keys, &h.ours, &h.public, locals, &h.group, now, &mut self.rng)
            }
            _ => Vec::new(),
        }
    }

    /// The extra socket's punch that met the peer (done, the group's winner) becomes the
    /// direct lane, its datagrams travelling [`Via::Birthday`]: the direct path is done at
    /// once. Whether it was taken (not when the direct lane was done on the mapped socket
    /// already, nor when the punch is not done or not the group's winner).
    pub fn adopt(&mut self, now: Instant, puncher: UdpPuncher) -> bool {
        let Some(h) = &mut self.hard else { return false };
        let Some(peer) = puncher.peer() else { return false };
        if h.adopted || h.group.winner().is_none_or(|w| w == 0) {
            return false;
        }
        let Some(run) = self.runs.iter_mut().find(|r| r.lane == Lane::Direct) else {
            return false;
        };
        if run.done_at.is_some() {
            return false;
        }
        h.adopted = true;
        log::debug!("fallback: the birthday method met the peer at {peer}: the direct path");
        run.paths = puncher.paths().clone();
        run.puncher = puncher;
        run.via = Via::Birthday;
        run.done_at = Some(now);
        if !self.accepted.contains(&(Via::Birthday, peer)) {
            self.accepted.push((Via::Birthday, peer));
        }
        self.decide(now);
        true
    }

    /// The hard side's extra sockets ended without a path (closed): the direct lane goes on on
    /// the mapped socket alone, the relay no longer waits for them.
    pub fn birthday_over(&mut self) {
        if let Some(h) = &mut self.hard
            && !h.adopted
        {
            h.over = true;
        }
    }

    /// Whether the direct lane on the mapped socket is silent: another socket of the hard
    /// side's group met the peer first (only the winner answers, so both sides settle on it).
    fn direct_muted(&self) -> bool {
        self.hard
            .as_ref()
            .is_some_and(|h| !h.over && !h.adopted && h.group.winner().is_some_and(|w| w != 0))
    }

    /// How the chosen path's datagrams travel.
    pub fn chosen_via(&self) -> Option<Via> {
        let c = self.chosen?;
        Some(match c.lane {
            Lane::Direct => self.direct().map_or(Via::Socket, |r| r.via),
            other => other.via(),
        })
    }

    /// The lanes that run.
    pub fn lanes(&self) -> Vec<Lane> {
        self.runs.iter().map(|r| r.lane).collect()
    }

    /// The peers our relay must let in (permissions, for their IPs: one address per IP), those
    /// the our-relay lane probes and takes packets from.
    pub fn relay_peers(&self) -> Vec<SocketAddr> {
        let mut peers: Vec<SocketAddr> = Vec::new();
        for a in self
            .runs
            .iter()
            .filter(|r| r.lane.via() == Via::Relay)
            .flat_map(|r| r.puncher.targets().iter())
        {
            if !peers.iter().any(|p| p.ip() == a.ip()) {
                peers.push(*a);
            }
        }
        peers
    }

    /// The path taken, once decided.
    pub fn chosen(&self) -> Option<Chosen> {
        self.chosen
    }

    /// How many times the connection moved from a relayed path to a direct one (0 or 1).
    pub fn moves(&self) -> u32 {
        self.moves
    }

    /// The peer's relayed addresses (its token's `turn` endpoints).
    pub fn peer_relayed(&self) -> &[SocketAddr] {
        &self.peer_relayed
    }

    /// Takes a datagram that arrived `via` from `from` (for [`Via::Relay`], the peer's
    /// address as the relay reported it, and the payload it carried).
    pub fn handle(&mut self, now: Instant, via: Via, from: SocketAddr, data: &[u8]) -> Incoming {
        if is_punch_packet(data) {
            let muted = self.direct_muted();
            let group = self
                .hard
                .as_ref()
                .filter(|h| !h.over && !h.adopted)
                .map(|h| Arc::clone(&h.group));
            for run in self.runs.iter_mut().filter(|r| r.via == via) {
                let on_mapped = run.lane == Lane::Direct && run.via == Via::Socket;
                if on_mapped && muted {
                    continue;
                }
                let before = run.puncher.heard_authentic();
                if run.done_at.is_some() && run.puncher.peer() == Some(from) {
                    if let Some(reply) = answer_when_done(&self.keys, run, now, from, data) {
                        self.queue.push_back((via, reply));
                    }
                } else if run.paths.is_peer(from) {
                    run.puncher.handle_datagram(now, from, data);
                    // The mapped socket heard the peer: it takes the hard side's group (the
                    // extra sockets stop), unless one of them did first (then it is silent).
                    if on_mapped
                        && run.puncher.heard_authentic() > before
                        && let Some(g) = &group
                        && !g.claim(0)
                    {
                        continue;
                    }
                    if run.done_at.is_none()
                        && let Some(peer) = run.puncher.peer()
                    {
                        log::debug!("fallback: {:?} path to {peer} done", run.lane);
                        run.done_at = Some(now);
                        if !self.accepted.contains(&(via, peer)) {
                            self.accepted.push((via, peer));
                        }
                    }
                }
            }
            self.decide(now);
            return Incoming::Punch;
        }
        if self.accepted.contains(&(via, from)) {
            Incoming::Data(data.to_vec())
        } else {
            log::trace!(
                "fallback: {} bytes from {from} ({via:?}), not a confirmed path; dropped",
                data.len()
            );
            Incoming::Stranger
        }
    }

    /// The first done relayed lane (earliest), with when it was done.
    fn first_relayed(&self) -> Option<(&Run, Instant)> {
        self.runs
            .iter()
            .filter(|r| r.lane.is_relayed())
            .filter_map(|r| r.done_at.map(|t| (r, t)))
            .min_by_key(|(_, t)| *t)
    }

    fn direct(&self) -> Option<&Run> {
        self.runs.iter().find(|r| r.lane == Lane::Direct)
    }

    /// When a done relayed lane may be taken (see the module documentation).
    fn relay_wins_at(&self) -> Option<Instant> {
        let (_, at) = self.first_relayed()?;
        let half_open = self
            .direct()
            .is_some_and(|d| matches!(d.puncher.diagnosis(), NoPath::NotConfirmed(_)));
        let at = at + if half_open { DIRECT_PATIENCE } else { RELAY_GRACE };
        // The birthday method meets within its spray, most likely: wait for it (on the hard
        // side, until its extra sockets ended without a path).
        let birthday = self.birthday && !self.hard.as_ref().is_some_and(|h| h.over);
        Some(if birthday {
            at.max(self.started + BIRTHDAY_PATIENCE)
        } else {
            at
        })
    }

    fn decide(&mut self, now: Instant) {
        let direct = self
            .direct()
            .and_then(|d| d.puncher.peer().filter(|_| d.done_at.is_some()));
        match self.chosen {
            None => {
                if let Some(peer) = direct {
                    log::info!("fallback: direct path to {peer}");
                    self.chosen = Some(Chosen {
                        lane: Lane::Direct,
                        peer,
                    });
                } else if self.relay_wins_at().is_some_and(|at| now >= at)
                    && let Some((run, _)) = self.first_relayed()
                    && let Some(peer) = run.puncher.peer()
                {
                    log::info!("fallback: relayed path ({:?}) to {peer}", run.lane);
                    self.chosen = Some(Chosen { lane: run.lane, peer });
                }
            }
            Some(c) if c.lane.is_relayed() => {
                if let Some(peer) = direct {
                    log::info!("fallback: moving from the relayed path to the direct path to {peer}");
                    self.chosen = Some(Chosen {
                        lane: Lane::Direct,
                        peer,
                    });
                    self.moves += 1;
                }
            }
            Some(_) => {}
        }
    }

    /// While relayed: starts the direct lane again where its punch ran out of rounds.
    fn restart_direct(&mut self, now: Instant) {
        if !self.chosen.is_some_and(|c| c.lane.is_relayed()) {
            return;
        }
        let Some(i) = self.runs.iter().position(|r| r.lane == Lane::Direct) else {
            return;
        };
        let Some(run) = self.runs.get_mut(i) else { return };
        if run.done_at.is_some() {
            return;
        }
        if let Some(at) = run.exhausted_at
            && now >= at + DIRECT_RETRY
            && run.restarts < DIRECT_RESTARTS
        {
            run.restarts += 1;
            run.exhausted_at = None;
            log::debug!("fallback: trying the direct path again ({})", run.restarts);
            run.puncher = UdpPuncher::new(
                self.keys.clone(),
                run.paths.clone(),
                now,
                StdRng::from_rng(&mut self.rng),
            );
        }
    }

    /// The next datagram to send, and how (the decision and restarts fall due here too).
    pub fn poll_transmit(&mut self, now: Instant) -> Option<(Via, Transmit)> {
        self.decide(now);
        self.restart_direct(now);
        if let Some(t) = self.queue.pop_front() {
            return Some(t);
        }
        let n = self.runs.len();
        let muted = self.direct_muted();
        for k in 0..n {
            let i = (self.next + k) % n.max(1);
            if let Some(run) = self.runs.get_mut(i)
                && !(muted && run.lane == Lane::Direct && run.via == Via::Socket)
                && run.hold_until.is_none_or(|h| h <= now)
                && let Some(t) = run.puncher.poll_transmit(now)
            {
                self.next = (i + 1) % n.max(1);
                return Some((run.via, t));
            }
        }
        self.note_exhausted(now);
        None
    }

    /// Notes when the direct lane's punch ran out of rounds (its restart is timed from then).
    fn note_exhausted(&mut self, now: Instant) {
        if let Some(run) = self.runs.iter_mut().find(|r| r.lane == Lane::Direct)
            && run.done_at.is_none()
            && run.exhausted_at.is_none()
            && run.puncher.poll_timeout().is_none()
        {
            run.exhausted_at = Some(now);
        }
    }

    /// When [`poll_transmit`](Self::poll_transmit) next has something to do, once it has
    /// returned `None` (a datagram taken in may queue an answer: poll again after
    /// [`handle`](Self::handle)).
    pub fn poll_timeout(&self) -> Option<Instant> {
        let muted = self.direct_muted();
        let lanes = self
            .runs
            .iter()
            .filter(|r| r.done_at.is_none())
            .filter(|r| !(muted && r.lane == Lane::Direct && r.via == Via::Socket))
            .filter_map(|r| {
                let t = r.puncher.poll_timeout()?;
                Some(r.hold_until.map_or(t, |h| t.max(h)))
            });
        let decision = if self.chosen.is_none() {
            self.relay_wins_at()
        } else {
            None
        };
        let restart = self
            .direct()
            .filter(|r| r.done_at.is_none() && r.restarts < DIRECT_RESTARTS)
            .and_then(|r| r.exhausted_at)
            .filter(|_| self.chosen.is_some_and(|c| c.lane.is_relayed()))
            .map(|at| at + DIRECT_RETRY);
        lanes.chain(decision).chain(restart).min()
    }

    /// When there is no hope of a path: both sides are behind symmetric NATs
    /// ([`Plan::BothHard`]), no relayed lane runs and the direct lane found nothing within
    /// [`birthday::BOTH_HARD_WINDOW`] (peers on one network meet in milliseconds), as
    /// `PunchedUdpSocket::punch_hole` says then: the time when that holds, if it may.
    pub fn hopeless_at(&self) -> Option<Instant> {
        let relayed = self.runs.iter().any(|r| r.lane.is_relayed());
        (self.plan == Plan::BothHard && !relayed && self.chosen.is_none())
            .then_some(self.started + birthday::BOTH_HARD_WINDOW)
    }

    /// Why no path was found yet: the direct lane's diagnosis if it runs, else the first
    /// lane's.
    pub fn diagnosis(&self) -> NoPath {
        self.direct()
            .or(self.runs.first())
            .map_or(NoPath::Other("no lane".into()), |r| r.puncher.diagnosis())
    }
}

/// The direct lane's punch as the birthday method wants it ([`birthday`]): on the easy side
/// ([`Plan::Easy`]) it also sprays the peer's IP, on the hard side ([`Plan::Hard`]) its mapped
/// socket ends as the group's sockets do; with whether it sprays.
fn birthday_lane(
    puncher: UdpPuncher,
    plan: Plan,
    theirs: &PubRendezvousInfo,
    paths: &Paths,
    rng: &mut StdRng,
    now: Instant,
) -> (UdpPuncher, bool) {
    match plan {
        Plan::Easy => match birthday::spray_for(theirs, paths, rng, now) {
            Some(spray) => {
                log::info!(
                    "fallback: the peer is behind a symmetric NAT: probing random ports of {}",
                    spray.ip()
                );
                (puncher.with_spray(spray), true)
            }
            None => (puncher, false),
        },
        Plan::Hard => (puncher.birthday_side(), false),
        _ => (puncher, false),
    }
}

/// A done lane's answer to an authentic probe from its peer's address: a reply flagged
/// "confirmed, done" that echoes its nonce, as the punch's own last replies are. A done punch
/// takes nothing more, so without this a peer that missed those last replies (lost) would
/// never confirm the path its side sends on (and so never take its data); at most
/// [`MAX_PER_SECOND`] a second.
fn answer_when_done(
    keys: &SessionKeys,
    run: &mut Run,
    now: Instant,
    from: SocketAddr,
    data: &[u8],
) -> Option<Transmit> {
    let msg = wire::open(keys, data)?;
    if msg.kind != Kind::Probe || !run.paths.sees_us(msg.observed) {
        return None;
    }
    while run
        .answered
        .front()
        .is_some_and(|t| now.saturating_duration_since(*t) >= Duration::from_secs(1))
    {
        run.answered.pop_front();
    }
    if run.answered.len() >= MAX_PER_SECOND {
        return None;
    }
    run.answered.push_back(now);
    let reply = Message {
        kind: Kind::Reply,
        flags: FLAG_CONFIRMED | FLAG_DONE,
        nonce: msg.nonce,
        observed: from,
    };
    Some(Transmit {
        destination: from,
        payload: wire::encode(keys, &reply).to_vec(),
    })
}

#[cfg(test)]
#[allow(clippy::disallowed_methods)] // tests take a starting instant from the clock
mod tests {
    use super::*;
    use natt_core::rendezvous::gen_rendezvous_info;
    use std::collections::VecDeque;
    use std::net::IpAddr;

    fn ep(s: &str, t: &str) -> MappedSocketAddr {
        MappedSocketAddr::new(s.parse().unwrap(), t != "local", t)
    }

    fn sa(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    /// A simulated network: side A at 10.0.1.2:5000 behind NAT 203.0.113.1, with a relay R at
    /// 198.51.100.30:50000 (server 198.51.100.30:3478); side B at 10.0.2.2:6000 behind NAT
    /// 203.0.113.2. Each NAT maps a socket to a port per destination when `symmetric`, and
    /// lets in only what comes from where it sent to.
    struct Net {
        a: Race,
        b: Race,
        symmetric: bool,
        /// Drop all plain UDP between the NATs (not to and from the relay).
        direct_blocked: bool,
        /// Drop everything B sends.
        b_silent: bool,
        /// (from the relay: peer the relay saw, payload) queued for A's relay lane.
        to_a_relay: VecDeque<(SocketAddr, Vec<u8>)>,
        /// (to A's public side: from, payload)
        to_a: VecDeque<(SocketAddr, Vec<u8>)>,
        to_b: VecDeque<(SocketAddr, Vec<u8>)>,
        /// Destinations each NAT sent to (filtering).
        a_sent: Vec<SocketAddr>,
        b_sent: Vec<SocketAddr>,
        /// The relay's permissions for A.
        permissions: Vec<IpAddr>,
        data_a: Vec<Vec<u8>>,
        data_b: Vec<Vec<u8>>,
    }

    const R: &str = "198.51.100.30:50000";

    /// A symmetric NAT's port towards `to`, different for every destination.
    fn sym_port(to: SocketAddr) -> u16 {
        let salt = u32::from(to.ip() == sa(R).ip()) * 500;
        ((u32::from(to.port()) * 7 + 13 + salt) % 1000) as u16
    }

    fn a_pub(to: SocketAddr, symmetric: bool) -> SocketAddr {
        let port = if symmetric { 40000 + sym_port(to) } else { 5000 };
        SocketAddr::new("203.0.113.1".parse().unwrap(), port)
    }

    fn b_pub(to: SocketAddr, symmetric: bool) -> SocketAddr {
        let port = if symmetric { 30000 + sym_port(to) } else { 6000 };
        SocketAddr::new("203.0.113.2".parse().unwrap(), port)
    }

    fn tokens(
        symmetric: bool,
        a_relay: bool,
    ) -> (
        PrivRendezvousInfo,
        PubRendezvousInfo,
        PrivRendezvousInfo,
        PubRendezvousInfo,
    ) {
        let stun = sa("192.0.2.9:3478");
        let mut a_eps = vec![
            ep("10.0.1.2:5000", "local"),
            MappedSocketAddr::new(a_pub(stun, symmetric), true, "stun"),
        ];
        if a_relay {
            a_eps.push(ep(R, "turn"));
        }
        let b_eps = vec![
            ep("10.0.2.2:6000", "local"),
            MappedSocketAddr::new(b_pub(stun, symmetric), true, "stun"),
        ];
        let (ap, apu) = gen_rendezvous_info(a_eps);
        let (bp, bpu) = gen_rendezvous_info(b_eps);
        (ap, apu, bp, bpu)
    }

    fn net(symmetric: bool, direct_blocked: bool) -> Net {
        let (ap, apu, bp, bpu) = tokens(symmetric, true);
        let now = Instant::now();
        let a = Race::new(sa("10.0.1.2:5000"), &ap, &bpu, true, now, StdRng::seed_from_u64(1)).unwrap();
        let b = Race::new(sa("10.0.2.2:6000"), &bp, &apu, false, now, StdRng::seed_from_u64(2)).unwrap();
        let permissions = a.relay_peers().iter().map(SocketAddr::ip).collect();
        Net {
            a,
            b,
            symmetric,
            direct_blocked,
            b_silent: false,
            to_a_relay: VecDeque::new(),
            to_a: VecDeque::new(),
            to_b: VecDeque::new(),
            a_sent: Vec::new(),
            b_sent: Vec::new(),
            permissions,
            data_a: Vec::new(),
            data_b: Vec::new(),
        }
    }

    impl Net {
        /// A sends `payload` to `to` the way `via` says.
        fn a_out(&mut self, via: Via, to: SocketAddr, payload: Vec<u8>) {
            match via {
                Via::Relay => {
                    // From R to B's NAT.
                    if self.permissions.contains(&to.ip())
                        && self.b_sent.contains(&sa(R))
                        && to == b_pub(sa(R), self.symmetric)
                    {
                        self.to_b.push_back((sa(R), payload));
                    }
                }
                Via::Socket | Via::Birthday => {
                    self.a_sent.push(to);
                    let from = a_pub(to, self.symmetric);
                    if to.ip() == "203.0.113.2".parse::<IpAddr>().unwrap()
                        && !self.direct_blocked
                        && self.b_sent.contains(&from)
                        && to == b_pub(from, self.symmetric)
                    {
                        self.to_b.push_back((from, payload));
                    }
                }
            }
        }

        fn b_out(&mut self, to: SocketAddr, payload: Vec<u8>) {
            self.b_sent.push(to);
            if self.b_silent {
                return;
            }
            let from = b_pub(to, self.symmetric);
            if to == sa(R) {
                if self.permissions.contains(&from.ip()) {
                    self.to_a_relay.push_back((from, payload));
                }
            } else if to.ip() == "203.0.113.1".parse::<IpAddr>().unwrap()
                && !self.direct_blocked
                && self.a_sent.contains(&from)
                && to == a_pub(from, self.symmetric)
            {
                self.to_a.push_back((from, payload));
            }
        }

        /// Runs both sides until `until`, a millisecond a step, every datagram arriving in the
        /// step it was sent.
        fn run(&mut self, t0: Instant, until: Duration) {
            self.run_until(t0, until, |_| false);
        }

        /// As [`run`](Self::run), stopping early after the step where `stop` holds; the time
        /// reached.
        fn run_until(&mut self, t0: Instant, until: Duration, stop: impl Fn(&Net) -> bool) -> Instant {
            let mut t = t0;
            while t < t0 + until {
                while let Some((via, tx)) = self.a.poll_transmit(t) {
                    self.a_out(via, tx.destination, tx.payload);
                }
                while let Some((_, tx)) = self.b.poll_transmit(t) {
                    self.b_out(tx.destination, tx.payload);
                }
                while let Some((from, p)) = self.to_a_relay.pop_front() {
                    if let Incoming::Data(d) = self.a.handle(t, Via::Relay, from, &p) {
                        self.data_a.push(d);
                    }
                }
                while let Some((from, p)) = self.to_a.pop_front() {
                    if let Incoming::Data(d) = self.a.handle(t, Via::Socket, from, &p) {
                        self.data_a.push(d);
                    }
                }
                while let Some((from, p)) = self.to_b.pop_front() {
                    if let Incoming::Data(d) = self.b.handle(t, Via::Socket, from, &p) {
                        self.data_b.push(d);
                    }
                }
                t += Duration::from_millis(1);
                if stop(self) {
                    break;
                }
            }
            t
        }
    }

    #[test]
    fn the_peer_without_a_relay_builds_no_relay_lane_of_its_own() {
        let n = net(true, false);
        assert_eq!(n.a.lanes(), [Lane::Direct, Lane::OwnRelay]);
        assert_eq!(n.b.lanes(), [Lane::Direct, Lane::PeerRelay]);
        // Only the peer's public address gets a permission.
        assert_eq!(n.a.relay_peers(), [b_pub(sa("192.0.2.9:3478"), true)]);
        assert_eq!(n.b.peer_relayed(), [sa(R)]);
    }

    #[test]
    fn symmetric_nats_on_both_sides_connect_through_the_relay() {
        let mut n = net(true, false);
        let t0 = Instant::now();
        n.run(t0, Duration::from_secs(2));
        let a = n.a.chosen().unwrap();
        let b = n.b.chosen().unwrap();
        assert_eq!(a.lane, Lane::OwnRelay);
        assert_eq!(a.peer, b_pub(sa(R), true));
        assert_eq!(
            b,
            Chosen {
                lane: Lane::PeerRelay,
                peer: sa(R)
            }
        );
        // Data both ways on the chosen paths, and nothing from a stranger.
        let a_path = (a.lane.via(), a.peer);
        n.a_out(a_path.0, a_path.1, b"to b".to_vec());
        n.b_out(b.peer, b"to a".to_vec());
        n.run(t0 + Duration::from_secs(2), Duration::from_millis(2));
        assert_eq!(n.data_b, [b"to b".to_vec()]);
        assert_eq!(n.data_a, [b"to a".to_vec()]);
        let stranger = n.a.handle(t0, Via::Relay, sa("203.0.113.66:1"), b"spoof");
        assert_eq!(stranger, Incoming::Stranger);
        // A spoofed datagram from the peer's relayed address but on another port is no data.
        assert_eq!(
            n.b.handle(t0, Via::Socket, sa("198.51.100.30:50001"), b"x"),
            Incoming::Stranger
        );
    }

    #[test]
    fn a_pair_that_can_punch_goes_direct_with_a_relay_given() {
        let mut n = net(false, false);
        n.run(Instant::now(), Duration::from_secs(2));
        assert_eq!(n.a.chosen().unwrap().lane, Lane::Direct);
        assert_eq!(n.b.chosen().unwrap().lane, Lane::Direct);
    }

    #[test]
    fn a_side_that_missed_the_last_replies_still_confirms_the_path() {
        let mut n = net(false, false);
        let t0 = Instant::now();
        let b_done = |n: &Net| n.b.runs.iter().any(|r| r.lane == Lane::Direct && r.done_at.is_some());
        let t = n.run_until(t0, Duration::from_secs(1), b_done);
        assert!(b_done(&n));
        assert!(n.a.runs.iter().all(|r| r.done_at.is_none()), "A is done first");
        // B's last replies (its "done" burst) are lost.
        n.b_silent = true;
        let t = n.run_until(t, Duration::from_millis(20), |_| false);
        n.b_silent = false;
        // A's next probe rounds are answered by B's done lane, and A confirms the direct path.
        n.run(t, Duration::from_secs(3));
        assert_eq!(n.a.chosen().unwrap().lane, Lane::Direct);
        assert_eq!(n.b.chosen().unwrap().lane, Lane::Direct);
        let b_path = n.b.chosen().unwrap();
        n.b_out(b_path.peer, b"direct".to_vec());
        n.run(t + Duration::from_secs(3), Duration::from_millis(2));
        assert_eq!(n.data_a, [b"direct".to_vec()]);
    }

    #[test]
    fn relayed_first_then_direct_when_it_opens() {
        let mut n = net(false, true);
        let t0 = Instant::now();
        n.run(t0, Duration::from_secs(2));
        assert!(n.a.chosen().unwrap().lane.is_relayed());
        assert!(n.b.chosen().unwrap().lane.is_relayed());
        // Data sent on the relayed path while the direct one opens still arrives.
        let b_path = n.b.chosen().unwrap();
        n.b_out(b_path.peer, b"in flight".to_vec());
        n.direct_blocked = false;
        // The direct lanes are still in their rounds (every 500 ms): they confirm.
        n.run(t0 + Duration::from_secs(2), Duration::from_secs(3));
        assert_eq!(n.a.chosen().unwrap().lane, Lane::Direct);
        assert_eq!(n.b.chosen().unwrap().lane, Lane::Direct);
        assert_eq!(n.a.moves(), 1);
        assert_eq!(n.data_a, [b"in flight".to_vec()]);
        // Late relayed data is still taken.
        n.b_out(sa(R), b"late".to_vec());
        n.run(t0 + Duration::from_secs(5), Duration::from_millis(2));
        assert_eq!(n.data_a.last().unwrap(), b"late");
    }

    #[test]
    fn the_direct_lane_starts_again_while_relayed_and_stops_after_its_restarts() {
        let mut n = net(true, true);
        let t0 = Instant::now();
        n.run(t0, Duration::from_secs(1));
        assert!(n.a.chosen().unwrap().lane.is_relayed());
        // Jump along the timeline: the lane runs out of rounds, waits, starts again, ...
        let mut t = t0 + Duration::from_secs(1);
        let mut sent = 0usize;
        let end = t0 + Duration::from_secs(3 * 3600);
        while let Some(next) = n.a.poll_timeout() {
            t = next.max(t);
            if t > end {
                break;
            }
            while let Some((via, _)) = n.a.poll_transmit(t) {
                if via == Via::Socket {
                    sent += 1;
                }
            }
        }
        let direct = n.a.runs.iter().find(|r| r.lane == Lane::Direct).unwrap();
        assert_eq!(direct.restarts, DIRECT_RESTARTS);
        // Bounded: at most MAX_ROUNDS rounds per start, to at most two targets.
        let cap = (DIRECT_RESTARTS as usize + 1) * natt_punch::udp::MAX_ROUNDS as usize * 2;
        assert!(sent <= cap, "{sent} > {cap}");
        assert!(t <= end, "the timers stopped before the end");
    }

    #[test]
    fn unauthentic_or_spoofed_packets_never_choose_a_path() {
        let mut n = net(true, true);
        let t0 = Instant::now();
        // Punch packets of another session, sent to A's relay from the peer's IP and to B from
        // the relay's address.
        let (op, _, _, opu) = tokens(true, true);
        let mut other = Race::new(
            sa("10.0.2.2:6000"),
            &op,
            &opu_from(&opu),
            false,
            t0,
            StdRng::seed_from_u64(9),
        )
        .unwrap();
        let mut t = t0;
        for _ in 0..200 {
            while let Some((_, tx)) = other.poll_transmit(t) {
                let _ = n.a.handle(t, Via::Relay, b_pub(sa(R), true), &tx.payload);
                let _ = n.b.handle(t, Via::Socket, sa(R), &tx.payload);
            }
            t += Duration::from_millis(10);
        }
        assert_eq!(n.a.chosen(), None);
        assert_eq!(n.b.chosen(), None);
        // The real punch still completes afterwards.
        n.run(t, Duration::from_secs(2));
        assert!(n.a.chosen().is_some() && n.b.chosen().is_some());
    }

    /// A hard side's token (its NAT gave the two STUN servers two ports) and an easy side's
    /// (port-restricted, one port): A at 10.0.1.2:5000 behind 203.0.113.1, B at 10.0.2.2:6000
    /// behind 203.0.113.2:6000.
    fn birthday_tokens(
        b_relay: bool,
    ) -> (
        PrivRendezvousInfo,
        PubRendezvousInfo,
        PrivRendezvousInfo,
        PubRendezvousInfo,
    ) {
        let a_eps = vec![
            ep("10.0.1.2:5000", "local"),
            ep("203.0.113.1:40001", "stun"),
            ep("203.0.113.1:51234", "stun"),
        ];
        let mut b_eps = vec![ep("10.0.2.2:6000", "local"), ep("203.0.113.2:6000", "stun")];
        if b_relay {
            b_eps.push(ep(R, "turn"));
        }
        let (ap, apu) = gen_rendezvous_info(a_eps);
        let (bp, bpu) = gen_rendezvous_info(b_eps);
        assert!(apu.mapping_varies && !bpu.mapping_varies);
        (ap, apu, bp, bpu)
    }

    #[test]
    fn the_easy_side_sprays_the_hard_sides_ip_on_its_direct_lane() {
        let (ap, apu, bp, bpu) = birthday_tokens(true);
        let t0 = Instant::now();
        let mut b = Race::new(sa("10.0.2.2:6000"), &bp, &apu, true, t0, StdRng::seed_from_u64(3)).unwrap();
        assert_eq!(b.plan(), Plan::Easy);
        let a = Race::new(sa("10.0.1.2:5000"), &ap, &bpu, false, t0, StdRng::seed_from_u64(4)).unwrap();
        assert_eq!(a.plan(), Plan::Hard, "the peer's relayed address makes it no easier");
        let mut ports = Vec::new();
        let mut relayed = 0;
        let mut t = t0;
        while t < t0 + Duration::from_millis(1500) {
            while let Some((via, tx)) = b.poll_transmit(t) {
                match via {
                    Via::Socket if tx.destination.ip() == sa("203.0.113.1:1").ip() => ports.push(tx.destination.port()),
                    Via::Socket => {}
                    _ => relayed += 1,
                }
            }
            t += Duration::from_millis(1);
        }
        ports.sort_unstable();
        ports.dedup();
        // The two observed ports, and the spray's budget of distinct random ones.
        assert!(ports.len() > birthday::SPRAY_BUDGET, "{} ports probed", ports.len());
        // The relay lane probes only the peer's public endpoints, as before.
        let own = b.runs.iter().find(|r| r.lane == Lane::OwnRelay).unwrap();
        assert_eq!(own.puncher.targets().len(), 2);
        assert!(relayed <= 2 * natt_punch::udp::MAX_ROUNDS as usize);
        // A pair without a symmetric NAT does not spray.
        let n = net(false, false);
        assert_eq!((n.a.plan(), n.b.plan()), (Plan::Ordinary, Plan::Ordinary));
        assert!(!n.a.birthday && !n.b.birthday);
    }

    /// A symmetric NAT's mapping for (local, destination): a random port, kept.
    fn sym_map(
        maps: &mut Vec<(SocketAddr, SocketAddr, u16)>,
        rng: &mut StdRng,
        local: SocketAddr,
        to: SocketAddr,
    ) -> u16 {
        use rand::Rng;
        if let Some((_, _, p)) = maps.iter().find(|(l, d, _)| *l == local && *d == to) {
            return *p;
        }
        let p = rng.random_range(1024..=u16::MAX);
        maps.push((local, to, p));
        p
    }

    #[test]
    fn the_hard_sides_extra_socket_that_meets_the_peer_becomes_the_direct_path() {
        use natt_core::UdpExchange;
        let (ap, apu, bp, bpu) = birthday_tokens(false);
        let t0 = Instant::now();
        let a_local = sa("10.0.1.2:5000");
        let b_local = sa("10.0.2.2:6000");
        let b_pub = sa("203.0.113.2:6000");
        let a_ip: IpAddr = "203.0.113.1".parse().unwrap();
        let mut a = Race::new(a_local, &ap, &bpu, false, t0, StdRng::seed_from_u64(5)).unwrap();
        let mut b = Race::new(b_local, &bp, &apu, false, t0, StdRng::seed_from_u64(6)).unwrap();
        let locals: Vec<SocketAddr> = (1..birthday::HARD_SOCKETS as u16)
            .map(|i| SocketAddr::new(a_local.ip(), 5000 + i))
            .collect();
        let mut extras = a.hard_sockets(&locals, t0);
        assert_eq!(extras.len(), birthday::HARD_SOCKETS - 1);
        assert_eq!(extras[0].index(), 1);
        assert!(extras.iter().all(|m| m.puncher().targets() == [b_pub]));
        let mut rng = StdRng::seed_from_u64(7);
        let mut maps = Vec::new();
        let mut b_sent: Vec<SocketAddr> = Vec::new();
        let mut winner: Option<SocketAddr> = None;
        let mut t = t0;
        // A's datagram from `local` to `to`, through A's symmetric NAT and B's filter.
        let mut a_out = |maps: &mut Vec<_>, b: &mut Race, b_sent: &[SocketAddr], local, to: SocketAddr, p: &[u8], t| {
            let from = SocketAddr::new(a_ip, sym_map(maps, &mut rng, local, to));
            if to == b_pub
                && b_sent.contains(&from)
                && let Incoming::Data(d) = b.handle(t, Via::Socket, from, p)
            {
                return Some(d);
            }
            None
        };
        while t < t0 + Duration::from_secs(4) && (a.chosen().is_none() || b.chosen().is_none()) {
            let mut from_a = Vec::new();
            while let Some((via, tx)) = a.poll_transmit(t) {
                let local = if via == Via::Birthday { winner.unwrap() } else { a_local };
                from_a.push((local, tx));
            }
            for m in &mut extras {
                while let Some(tx) = m.poll_transmit(t) {
                    from_a.push((locals[m.index() - 1], tx));
                }
            }
            for (local, tx) in from_a {
                a_out(&mut maps, &mut b, &b_sent, local, tx.destination, &tx.payload, t);
            }
            while let Some((_, tx)) = b.poll_transmit(t) {
                b_sent.push(tx.destination);
                if tx.destination.ip() != a_ip {
                    continue;
                }
                // A's NAT lets it in where a socket sent to B's public address from that port.
                let Some((local, _, _)) = maps
                    .iter()
                    .find(|(_, d, p)| *d == b_pub && *p == tx.destination.port())
                    .copied()
                else {
                    continue;
                };
                if local == a_local {
                    a.handle(t, Via::Socket, b_pub, &tx.payload);
                } else if Some(local) == winner {
                    a.handle(t, Via::Birthday, b_pub, &tx.payload);
                } else if let Some(m) = extras.iter_mut().find(|m| locals[m.index() - 1] == local) {
                    m.handle_datagram(t, b_pub, &tx.payload);
                }
            }
            // The driver: a member with a result ends; the one that met the peer is adopted.
            let mut i = 0;
            while i < extras.len() {
                match extras[i].poll_result(t) {
                    Some(r) => {
                        let m = extras.swap_remove(i);
                        if r.is_ok() {
                            let local = locals[m.index() - 1];
                            assert!(a.adopt(t, m.into_puncher()));
                            winner = Some(local);
                        }
                    }
                    None => i += 1,
                }
            }
            t += Duration::from_millis(1);
        }
        let winner = winner.expect("an extra socket met the peer");
        assert!(extras.is_empty(), "the losers stopped");
        assert_eq!(
            a.chosen().unwrap(),
            Chosen {
                lane: Lane::Direct,
                peer: b_pub
            }
        );
        assert_eq!(a.chosen_via(), Some(Via::Birthday));
        let b_path = b.chosen().unwrap();
        assert_eq!(b_path.lane, Lane::Direct);
        assert_eq!(
            b_path.peer.port(),
            sym_map(&mut maps, &mut StdRng::seed_from_u64(0), winner, b_pub)
        );
        // The spray stopped at the first answer, well within its budget.
        let b_direct = b.runs.iter().find(|r| r.lane == Lane::Direct).unwrap();
        assert!(b_direct.puncher.sprayed() < birthday::SPRAY_BUDGET);
        // Data both ways on the winning socket; the mapped socket's address takes none.
        let got = a_out(&mut maps, &mut b, &b_sent, winner, b_pub, b"to b", t);
        assert_eq!(got, Some(b"to b".to_vec()));
        assert_eq!(
            a.handle(t, Via::Birthday, b_pub, b"to a"),
            Incoming::Data(b"to a".to_vec())
        );
        assert_eq!(a.handle(t, Via::Socket, b_pub, b"to a"), Incoming::Stranger);
    }

    /// A (hard) and B (easy, with a relay at R) with the direct path closed: only the relayed
    /// path through B's allocation works. Runs until `until` after the start; the two races.
    fn relayed_birthday_pair(until: Duration, over_at_start: bool) -> (Race, Race, Instant) {
        let (ap, apu, bp, bpu) = birthday_tokens(true);
        let t0 = Instant::now();
        let a_pub = sa("203.0.113.1:45000");
        let mut a = Race::new(sa("10.0.1.2:5000"), &ap, &bpu, false, t0, StdRng::seed_from_u64(8)).unwrap();
        let mut b = Race::new(sa("10.0.2.2:6000"), &bp, &apu, true, t0, StdRng::seed_from_u64(9)).unwrap();
        if over_at_start {
            // The hard side's driver could bind no extra socket.
            assert!(a.hard_sockets(&[], t0).is_empty());
            a.birthday_over();
        }
        let mut t = t0;
        while t < t0 + until {
            let mut to_b = Vec::new();
            while let Some((via, tx)) = a.poll_transmit(t) {
                // Only A's plain UDP to the relayed address gets through (as from A's NAT).
                if via == Via::Socket && tx.destination == sa(R) {
                    to_b.push(tx.payload);
                }
            }
            let mut to_a = Vec::new();
            while let Some((via, tx)) = b.poll_transmit(t) {
                if via == Via::Relay && tx.destination == a_pub {
                    to_a.push(tx.payload);
                }
            }
            for p in to_b {
                b.handle(t, Via::Relay, a_pub, &p);
            }
            for p in to_a {
                a.handle(t, Via::Socket, sa(R), &p);
            }
            t += Duration::from_millis(1);
        }
        (a, b, t0)
    }

    #[test]
    fn a_relayed_path_waits_for_the_birthday_method_then_is_taken() {
        let half = BIRTHDAY_PATIENCE / 2;
        let (a, b, _) = relayed_birthday_pair(half, false);
        assert_eq!((a.plan(), b.plan()), (Plan::Hard, Plan::Easy));
        assert!(a.runs.iter().any(|r| r.lane == Lane::PeerRelay && r.done_at.is_some()));
        assert!(b.runs.iter().any(|r| r.lane == Lane::OwnRelay && r.done_at.is_some()));
        assert_eq!((a.chosen(), b.chosen()), (None, None), "the relay waits meanwhile");
        let (a, b, _) = relayed_birthday_pair(BIRTHDAY_PATIENCE + Duration::from_millis(50), false);
        assert_eq!(a.chosen().map(|c| c.lane), Some(Lane::PeerRelay));
        assert_eq!(b.chosen().map(|c| c.lane), Some(Lane::OwnRelay));
        // A hard side whose extra sockets ended without a path waits no more.
        let (a, _, _) = relayed_birthday_pair(half, true);
        assert_eq!(a.chosen().map(|c| c.lane), Some(Lane::PeerRelay));
    }

    #[test]
    fn two_symmetric_sides_without_a_relay_have_no_hope_after_the_window() {
        let (mut ap, _, _, mut bpu) = tokens(true, false);
        // Both tokens say the mapping varies (each side's NAT gave two servers two ports).
        ap.mapping_varies = true;
        bpu.mapping_varies = true;
        let t0 = Instant::now();
        let a = Race::new(sa("10.0.1.2:5000"), &ap, &bpu, false, t0, StdRng::seed_from_u64(1)).unwrap();
        assert_eq!(a.plan(), Plan::BothHard);
        assert_eq!(a.hopeless_at(), Some(t0 + birthday::BOTH_HARD_WINDOW));
        // With a relay (ours, or the peer's), the relay is the way: no verdict.
        let with_relay = Race::new(sa("10.0.1.2:5000"), &ap, &bpu, true, t0, StdRng::seed_from_u64(1)).unwrap();
        assert_eq!(with_relay.hopeless_at(), None);
        let (_, apu_relayed, mut bp, _) = tokens(true, true);
        bp.mapping_varies = true;
        let mut apu_relayed = apu_relayed;
        apu_relayed.mapping_varies = true;
        let b = Race::new(
            sa("10.0.2.2:6000"),
            &bp,
            &apu_relayed,
            false,
            t0,
            StdRng::seed_from_u64(2),
        )
        .unwrap();
        assert_eq!(b.plan(), Plan::BothHard);
        assert_eq!(b.hopeless_at(), None);
        // A pair without a symmetric NAT waits for its deadline as before.
        let n = net(false, false);
        assert_eq!(n.a.hopeless_at(), None);
    }

    /// Another token with the same endpoints as `p` (another session).
    fn opu_from(p: &PubRendezvousInfo) -> PubRendezvousInfo {
        gen_rendezvous_info(p.endpoints.clone()).1
    }
}
