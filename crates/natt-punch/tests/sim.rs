//! Hole punching on the simulated network of `natt_core::sim`: no root, no lab, no clock, and
//! the same run for the same seed.
//!
//! UDP: two [`UdpPuncher`]s, each on a host behind a NAT of its kind, with the tokens a real
//! side would make (its local address, and the address a STUN server on the Internet saw it
//! at, through the simulated NAT), run until their deadline.
//!
//! TCP: the two [`StreamChooser`]s, fed by [`Streams`], a model of streams coming up and of
//! the frames on them; see there for what it leaves out.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

mod common;

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use rand::SeedableRng;
use rand::rngs::StdRng;

use common::{NatKind, PORT, Side, addr, ip, side_behind};
use natt_core::rendezvous::{PrivRendezvousInfo, PubRendezvousInfo, Secret};
use natt_core::sim::{Link, Nat, NatId, Network, Schedule, Sim, SocketId};
use natt_core::{MappedSocketAddr, TechniqueError, Transmit, UdpExchange};
use natt_punch::NoPath;
use natt_punch::choose::{Action, HANDSHAKE_TIMEOUT, SWITCH_AFTER, StreamChooser};
use natt_punch::keys::SessionKeys;
use natt_punch::path::Paths;
use natt_punch::udp::UdpPuncher;
use natt_punch::wire::Kind;

/// The STUN server every side asks for its public address.
const STUN: &str = "203.0.113.100:3478";
/// The punch's deadline, from its start.
const DEADLINE: Duration = Duration::from_secs(10);
/// The public addresses of a's and b's NATs.
const NAT_A: &str = "198.51.100.1";
const NAT_B: &str = "198.51.100.2";

/// The two sides' tokens, with fixed secrets (so fixed roles: a is 0, b is 1).
fn tokens(a: &Side, b: &Side) -> [(PrivRendezvousInfo, PubRendezvousInfo); 2] {
    let token = |side: &Side, secret: u8| {
        let secret = Secret([secret; 16]);
        let endpoints = side.endpoints.clone();
        (
            PrivRendezvousInfo {
                secret,
                endpoints: endpoints.clone(),
                mapping_varies: false,
            },
            PubRendezvousInfo {
                endpoints,
                secret,
                mapping_varies: false,
            },
        )
    };
    [token(a, 1), token(b, 2)]
}

/// Side `us`'s puncher, starting `now`, from its socket at `local`.
fn puncher(
    local: SocketAddr,
    tokens: &[(PrivRendezvousInfo, PubRendezvousInfo); 2],
    us: usize,
    now: Instant,
) -> UdpPuncher {
    let (mine, theirs) = (&tokens[us].0, &tokens[1 - us].1);
    let keys = SessionKeys::new(mine, theirs).unwrap();
    let paths = Paths::new(local, &mine.endpoints, &theirs.endpoints).unwrap();
    UdpPuncher::new(keys, paths, now, StdRng::seed_from_u64(us as u64 + 10))
}

/// Two sides behind their NATs, ready to punch.
struct Setup {
    net: Network,
    a: Side,
    b: Side,
}

fn setup(nat_a: NatKind, nat_b: NatKind, link: Link, seed: u64) -> Setup {
    let mut net = Network::new(Instant::now(), seed);
    net.add_host(addr(STUN).ip(), None, Link::default());
    let a = side_behind(&mut net, nat_a, NAT_A, "192.168.1", &[STUN]);
    let b = side_behind(&mut net, nat_b, NAT_B, "192.168.2", &[STUN]);
    // The punch's link (the STUN exchange had a lossless one: STUN would retry).
    net.set_link(a.host, link);
    net.set_link(b.host, link);
    Setup { net, a, b }
}

/// What a punch between two sides came to.
struct Punch {
    sim: Sim,
    started: Instant,
    a: UdpPuncher,
    b: UdpPuncher,
    done: bool,
}

/// Punches between a side behind `nat_a` and one behind `nat_b`, b starting `b_late` after a.
fn punch(nat_a: NatKind, nat_b: NatKind, link: Link, b_late: Duration, seed: u64) -> Punch {
    let Setup { net, a, b } = setup(nat_a, nat_b, link, seed);
    let tokens = tokens(&a, &b);
    let started = net.now();
    let mut sim = Sim::new(net);
    sim.bind(a.host, PORT, started);
    sim.bind(b.host, PORT, started + b_late);
    let mut pa = puncher(a.local, &tokens, 0, started);
    let mut pb = puncher(b.local, &tokens, 1, started + b_late);
    let done = sim.run(&mut [&mut pa, &mut pb], started + DEADLINE);
    Punch {
        sim,
        started,
        a: pa,
        b: pb,
        done,
    }
}

impl Punch {
    fn nat(&self, i: usize) -> &Nat {
        self.sim.net().nat(NatId(i)).unwrap()
    }

    /// How long side `i` took to give its result.
    fn took(&self, i: usize) -> Duration {
        self.sim.finished_at(SocketId(i)).unwrap() - self.started
    }

    /// Asserts that both sides found each other, each where the other's NAT maps its socket
    /// towards it.
    fn assert_connected(&self) {
        assert!(
            self.done,
            "no result by the deadline: {} / {}",
            self.a.diagnosis(),
            self.b.diagnosis()
        );
        let (a_peer, b_peer) = (self.a.peer().unwrap(), self.b.peer().unwrap());
        assert_eq!(self.nat(1).mapped(addr("192.168.2.2:5000"), b_peer), Some(a_peer));
        assert_eq!(self.nat(0).mapped(addr("192.168.1.2:5000"), a_peer), Some(b_peer));
        assert!(matches!(self.sim.result(SocketId(0)), Some(Ok(e)) if e[0].addr == a_peer));
    }

    /// Asserts that neither side found a path, because nothing of the other's got through.
    fn assert_nothing_came_back(&self) {
        assert!(!self.done);
        assert_eq!(self.sim.now(), self.started + DEADLINE, "the run ends at the deadline");
        for p in [&self.a, &self.b] {
            assert_eq!(p.peer(), None);
            assert!(
                matches!(
                    p.diagnosis(),
                    NoPath::NothingCameBack {
                        private_only: false,
                        ..
                    }
                ),
                "{}",
                p.diagnosis()
            );
        }
        let stats = self.sim.net().stats();
        assert!(stats.filtered > 0);
        assert_eq!(stats.delivered, 2, "only the two STUN requests: {stats:?}");
    }
}

#[test]
fn udp_port_restricted_to_port_restricted() {
    let p = punch(
        Nat::port_restricted,
        Nat::port_restricted,
        Link::default(),
        Duration::ZERO,
        1,
    );
    p.assert_connected();
    // The first probes open each NAT for the other's next round (50 ms later).
    assert!(p.took(0) < Duration::from_millis(200), "{:?}", p.took(0));
}

#[test]
fn udp_full_cone_to_port_restricted() {
    punch(Nat::full_cone, Nat::port_restricted, Link::default(), Duration::ZERO, 1).assert_connected();
    punch(Nat::port_restricted, Nat::full_cone, Link::default(), Duration::ZERO, 2).assert_connected();
}

#[test]
fn udp_symmetric_to_full_cone() {
    let p = punch(Nat::symmetric, Nat::full_cone, Link::default(), Duration::ZERO, 1);
    p.assert_connected();
    // b found a at a port no server saw (a peer-reflexive address).
    let a_stun = p.nat(0).mapped(addr("192.168.1.2:5000"), addr(STUN)).unwrap();
    assert_ne!(p.b.peer(), Some(a_stun));
    assert!(p.b.targets().contains(&p.b.peer().unwrap()));
    punch(Nat::full_cone, Nat::symmetric, Link::default(), Duration::ZERO, 2).assert_connected();
    // Address-dependent filtering lets in any port of an IP it has sent to: enough too.
    punch(Nat::symmetric, Nat::restricted_cone, Link::default(), Duration::ZERO, 3).assert_connected();
}

#[test]
fn udp_symmetric_to_port_restricted_or_symmetric_fails_saying_why() {
    let cases: [(NatKind, NatKind); 3] = [
        (Nat::symmetric, Nat::port_restricted),
        (Nat::port_restricted, Nat::symmetric),
        (Nat::symmetric, Nat::symmetric),
    ];
    for (nat_a, nat_b) in cases {
        let mut p = punch(nat_a, nat_b, Link::default(), Duration::ZERO, 1);
        p.assert_nothing_came_back();
        assert!(matches!(p.a.finish(), Err(TechniqueError::TimedOut(w)) if w.contains("nothing came back")));
    }
}

#[test]
fn udp_with_ten_percent_loss_still_connects() {
    let lossy = Link::default().lossy(0.1);
    let mut lost = 0;
    for seed in 0..20 {
        let p = punch(Nat::port_restricted, Nat::port_restricted, lossy, Duration::ZERO, seed);
        p.assert_connected();
        lost += p.sim.net().stats().lost;
        punch(Nat::symmetric, Nat::full_cone, lossy, Duration::ZERO, seed).assert_connected();
    }
    assert!(lost > 0);
    // The same seed, the same run.
    let run = || {
        let p = punch(Nat::port_restricted, Nat::port_restricted, lossy, Duration::ZERO, 7);
        (p.sim.net().stats(), p.took(0), p.took(1), p.a.peer())
    };
    assert_eq!(run(), run());
}

#[test]
fn udp_sides_starting_at_different_times() {
    let late = Duration::from_secs(3);
    let p = punch(Nat::port_restricted, Nat::port_restricted, Link::default(), late, 1);
    p.assert_connected();
    // a's early probes were filtered by b's NAT, leaving no state there that could change b's
    // mapping. b is done one round trip (40 ms) after it starts; a no later than b's answer
    // to a's probe back reaches it, half a round trip on.
    assert!(p.sim.net().stats().filtered > 0);
    assert!(p.took(1) - late <= Duration::from_millis(40), "{:?}", p.took(1));
    assert!(p.took(0) - late <= Duration::from_millis(60), "{:?}", p.took(0));
    punch(Nat::port_restricted, Nat::full_cone, Link::default(), late * 2, 2).assert_connected();
    punch(Nat::full_cone, Nat::symmetric, Link::default(), late, 3).assert_connected();
}

#[test]
fn udp_peers_behind_one_nat_connect_directly() {
    let mut net = Network::new(Instant::now(), 1);
    net.add_host(addr(STUN).ip(), None, Link::default());
    let a = side_behind(&mut net, Nat::symmetric, NAT_A, "192.168.1", &[STUN]);
    // b is another host of a's network.
    let b_host = net.add_host(ip("192.168.1.3"), Some(NatId(0)), Link::default());
    let b_local = addr("192.168.1.3:5000");
    let b = Side {
        host: b_host,
        local: b_local,
        endpoints: vec![MappedSocketAddr::new(b_local, false, "local")],
    };
    let tokens = tokens(&a, &b);
    let t0 = net.now();
    let mut sim = Sim::new(net);
    sim.bind(a.host, PORT, t0);
    sim.bind(b.host, PORT, t0);
    let (mut pa, mut pb) = (puncher(a.local, &tokens, 0, t0), puncher(b.local, &tokens, 1, t0));
    assert!(sim.run(&mut [&mut pa, &mut pb], t0 + DEADLINE));
    assert_eq!(pa.peer(), Some(b.local));
    assert_eq!(pb.peer(), Some(a.local));
}

/// A third party behind b's NAT (so sharing b's public IP, which a's punch accepts packets
/// from), that sees everything b sends (on b's network, or on the path). It replays each of
/// b's datagrams to a from its own socket at once, and relays whatever a sends it to b.
struct Replayer {
    to_a: SocketAddr,
    to_b: SocketAddr,
    b_local: SocketAddr,
    queue: VecDeque<Transmit>,
    replayed: usize,
    relayed: usize,
}

impl UdpExchange for Replayer {
    fn poll_transmit(&mut self, _now: Instant) -> Option<Transmit> {
        self.queue.pop_front()
    }

    fn poll_timeout(&self) -> Option<Instant> {
        None
    }

    fn handle_datagram(&mut self, _now: Instant, from: SocketAddr, data: &[u8]) -> bool {
        let destination = if from == self.b_local {
            self.replayed += 1;
            self.to_a
        } else {
            self.relayed += 1;
            self.to_b
        };
        self.queue.push_back(Transmit {
            destination,
            payload: data.to_vec(),
        });
        true
    }

    fn poll_result(&mut self, _now: Instant) -> Option<Result<Vec<MappedSocketAddr>, TechniqueError>> {
        None
    }

    fn finish(&mut self) -> Result<Vec<MappedSocketAddr>, TechniqueError> {
        Err(TechniqueError::TimedOut("a replayer never finishes".into()))
    }
}

#[test]
fn udp_a_third_party_replaying_and_relaying_is_not_chosen() {
    let cases: [(NatKind, NatKind, bool); 3] = [
        (Nat::port_restricted, Nat::port_restricted, false),
        (Nat::full_cone, Nat::full_cone, true),
        (Nat::symmetric, Nat::full_cone, false),
    ];
    for (nat_a, nat_b, a_lets_in) in cases {
        let Setup { mut net, a, b } = setup(nat_a, nat_b, Link::default(), 1);
        // The replayer is nearer to a than b is: its copies arrive first.
        let spy = net.add_host(
            ip("192.168.2.66"),
            Some(NatId(1)),
            Link::with_delay(Duration::from_millis(1)),
        );
        net.tap(b.host, spy, 6666);
        let tokens = tokens(&a, &b);
        let a_public = a.endpoints[1].addr;
        let t0 = net.now();
        let mut sim = Sim::new(net);
        sim.bind(a.host, PORT, t0);
        sim.bind(b.host, PORT, t0);
        sim.bind(spy, 6666, t0);
        let (mut pa, mut pb) = (puncher(a.local, &tokens, 0, t0), puncher(b.local, &tokens, 1, t0));
        let mut replayer = Replayer {
            to_a: a_public,
            to_b: b.local,
            b_local: b.local,
            queue: VecDeque::new(),
            replayed: 0,
            relayed: 0,
        };
        sim.run(&mut [&mut pa, &mut pb, &mut replayer], t0 + DEADLINE);
        assert!(replayer.replayed > 0);
        let spy_seen = sim
            .net()
            .nat(NatId(1))
            .unwrap()
            .mapped(addr("192.168.2.66:6666"), a_public);
        if a_lets_in {
            // a's NAT let the replays in: a heard them from the spy's address (b's IP, another
            // port), took it for a peer-reflexive address of b, answered and probed it, and
            // the spy relayed all that to b. (A port-restricted NAT filters the spy out.)
            assert!(replayer.relayed > 0);
            assert!(spy_seen.is_some_and(|s| pa.targets().contains(&s)));
        }
        // a chose b, where b's NAT maps b towards a, never the spy.
        let b_seen = sim.net().nat(NatId(1)).unwrap().mapped(b.local, pa.peer().unwrap());
        assert_eq!(pa.peer(), b_seen);
        assert_ne!(pa.peer(), spy_seen);
        assert_eq!(pb.peer().map(|p| p.ip()), Some(ip(NAT_A)));
    }
}

// ---- TCP: which stream both sides take ----

/// A model of the streams of a TCP punch between role 0 and role 1, each stream known by one
/// id on both sides, for driving two [`StreamChooser`]s as `tcp_punch_hole`'s driver does.
///
/// What it models: when each stream comes up at each side (a simultaneous open comes up at
/// the two sides at different times); role 1 writing its hello on every stream as it comes up;
/// role 0 writing choose on the stream its chooser picks; each frame arriving after the path's
/// one-way delay, or later when TCP has to retransmit it; a stream that comes up at role 0 only
/// (another host sharing the peer's IP, connected to role 0's punch port), on which nothing
/// ever arrives; the driver closing a stream on which no frame arrived within
/// [`HANDSHAKE_TIMEOUT`].
///
/// What it does not model: which streams the NATs let come up at all (SYNs crossing, refusals,
/// the driver's connection retries), resets, the frames' bytes and their authentication (a
/// frame here is one the driver has already checked), or streams closing once the punch is done.
struct Streams {
    events: Schedule<Event>,
    /// The one-way delay between the two sides.
    delay: Duration,
    /// Streams that only role 0 has (their far end is not the peer).
    impostors: Vec<u64>,
    /// Extra delay of role 1's hello on some streams (TCP retransmitting it).
    hello_late: Vec<(u64, Duration)>,
    /// The streams on which the peer's frame arrived, by side (the driver keeps those open).
    framed: Vec<(usize, u64)>,
    /// Role 0's choices, in order, with their times.
    choices: Vec<(u64, Instant)>,
    /// When each stream comes up at each side.
    ups: Vec<(usize, u64, Instant)>,
}

#[derive(Debug)]
enum Event {
    Up { side: usize, id: u64, remote: SocketAddr },
    Frame { side: usize, id: u64, kind: Kind },
    Timeout { side: usize, id: u64 },
}

/// Role 0's peer address (role 1's host) and role 1's.
const ROLE_1_ADDR: &str = "198.51.100.2:5000";
const ROLE_0_ADDR: &str = "198.51.100.1:5000";

impl Streams {
    fn new(delay: Duration) -> Self {
        Streams {
            events: Schedule::new(),
            delay,
            impostors: Vec::new(),
            hello_late: Vec::new(),
            framed: Vec::new(),
            choices: Vec::new(),
            ups: Vec::new(),
        }
    }

    /// When stream `id` comes up at `side`.
    fn up_at(&self, side: usize, id: u64) -> Option<Instant> {
        self.ups
            .iter()
            .find(|(s, i, _)| (*s, *i) == (side, id))
            .map(|(_, _, at)| *at)
    }

    /// Stream `id` between the two peers comes up at role 0 at `at0`, at role 1 at `at1`.
    fn peer_stream(&mut self, id: u64, at0: Instant, at1: Instant) {
        self.ups.extend([(0, id, at0), (1, id, at1)]);
        self.events.push(
            at0,
            Event::Up {
                side: 0,
                id,
                remote: addr(ROLE_1_ADDR),
            },
        );
        self.events.push(
            at1,
            Event::Up {
                side: 1,
                id,
                remote: addr(ROLE_0_ADDR),
            },
        );
    }

    /// Stream `id` from another host with role 1's IP comes up at role 0 at `at`.
    fn impostor_stream(&mut self, id: u64, at: Instant) {
        self.impostors.push(id);
        self.events.push(
            at,
            Event::Up {
                side: 0,
                id,
                remote: addr("198.51.100.2:6666"),
            },
        );
    }

    fn late(&self, id: u64) -> Duration {
        self.hello_late
            .iter()
            .find(|(i, _)| *i == id)
            .map_or(Duration::ZERO, |(_, d)| *d)
    }

    /// Runs both choosers (starting at `t0`) until both are done or `until`: the stream each
    /// took, and when.
    fn run(&mut self, t0: Instant, until: Instant) -> [Option<(u64, Instant)>; 2] {
        let mut choosers = [StreamChooser::new(0, &[], t0), StreamChooser::new(1, &[], t0)];
        let mut done: [Option<(u64, Instant)>; 2] = [None, None];
        let mut now = t0;
        loop {
            while let Some((_, event)) = self.events.pop_due(now) {
                match event {
                    Event::Up { side, id, remote } => {
                        choosers[side].stream_up(id, remote, now);
                        self.events.push(now + HANDSHAKE_TIMEOUT, Event::Timeout { side, id });
                        if side == 1 {
                            let at = now + self.delay + self.late(id);
                            self.events.push(
                                at,
                                Event::Frame {
                                    side: 0,
                                    id,
                                    kind: Kind::Hello,
                                },
                            );
                        }
                    }
                    Event::Frame { side, id, kind } => {
                        // Bytes that arrive before the stream is up at this side wait in the
                        // kernel until it is.
                        if let Some(up) = self.up_at(side, id).filter(|up| *up > now) {
                            self.events.push(up, Event::Frame { side, id, kind });
                        } else if choosers[side].remote(id).is_some() {
                            self.framed.push((side, id));
                            choosers[side].frame(id, kind);
                        }
                    }
                    Event::Timeout { side, id } => {
                        if done[side].is_none() && !self.framed.contains(&(side, id)) {
                            choosers[side].failed(id, "no handshake frame in time".into());
                        }
                    }
                }
            }
            for side in 0..2 {
                while done[side].is_none()
                    && let Some(action) = choosers[side].poll(now)
                {
                    match action {
                        Action::SendChoose(id) => {
                            self.choices.push((id, now));
                            if !self.impostors.contains(&id) {
                                let frame = Event::Frame {
                                    side: 1,
                                    id,
                                    kind: Kind::Choose,
                                };
                                self.events.push(now + self.delay, frame);
                            }
                        }
                        Action::Done(id) => done[side] = Some((id, now)),
                    }
                }
            }
            if done.iter().all(Option::is_some) {
                return done;
            }
            let next = [
                self.events.next_time(),
                choosers[0].poll_timeout(),
                choosers[1].poll_timeout(),
            ]
            .into_iter()
            .flatten()
            .filter(|t| *t > now)
            .min();
            match next {
                Some(t) if t <= until => now = t,
                _ => return done,
            }
        }
    }
}

/// The one-way delay between the sides in the TCP tests.
const ONE_WAY: Duration = Duration::from_millis(20);

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

#[test]
fn tcp_both_sides_take_the_same_stream() {
    let t0 = Instant::now();
    // Three streams (say, to the peer's STUN, UPnP and local endpoints), coming up in
    // different orders at the two sides (the two ends of one connection come up within a
    // one-way delay of each other).
    let mut s = Streams::new(ONE_WAY);
    s.peer_stream(1, t0 + ms(15), t0 + ms(30));
    s.peer_stream(2, t0 + ms(30), t0 + ms(10));
    s.peer_stream(3, t0 + ms(50), t0 + ms(35));
    let [d0, d1] = s.run(t0, t0 + DEADLINE);
    let ((id0, at0), (id1, at1)) = (d0.unwrap(), d1.unwrap());
    assert_eq!(id0, id1);
    assert_eq!(id0, 1, "role 0 takes the first stream up at its side");
    // Role 0 is done when the hello on it arrives; role 1 when the choose does.
    assert_eq!(at0, t0 + ms(30) + ONE_WAY);
    assert_eq!(at1, t0 + ms(15) + ONE_WAY);
    assert_eq!(s.choices.len(), 1);
}

#[test]
fn tcp_a_stream_from_a_host_sharing_the_peers_ip_is_left_after_switch_after() {
    let t0 = Instant::now();
    let mut s = Streams::new(ONE_WAY);
    // Another host behind the peer's NAT connects to role 0's punch port first, and stays
    // silent; the peer's stream comes up a little later.
    s.impostor_stream(9, t0 + ms(5));
    s.peer_stream(1, t0 + ms(30), t0 + ms(30));
    let [d0, d1] = s.run(t0, t0 + DEADLINE);
    // Role 0 chose the impostor's stream first (it cannot know yet), then, SWITCH_AFTER later,
    // the peer's, which had shown a hello: both sides end on the peer's stream.
    assert_eq!(s.choices, [(9, t0 + ms(5)), (1, t0 + ms(5) + SWITCH_AFTER)]);
    assert_eq!(d0, Some((1, t0 + ms(5) + SWITCH_AFTER)));
    assert_eq!(d1, Some((1, t0 + ms(5) + SWITCH_AFTER + ONE_WAY)));
}

/// Two streams up at both sides, at `t0` and 10 ms later, the hello on the first `late`.
fn first_hello_late(t0: Instant, late: Duration) -> (Streams, [Option<(u64, Instant)>; 2]) {
    let mut s = Streams::new(ONE_WAY);
    s.peer_stream(1, t0, t0);
    s.peer_stream(2, t0 + ms(10), t0 + ms(10));
    s.hello_late.push((1, late));
    let done = s.run(t0, t0 + DEADLINE);
    (s, done)
}

#[test]
fn tcp_a_late_hello_does_not_make_role_0_switch() {
    let t0 = Instant::now();
    // The hello on stream 1 was lost once: TCP resends it after its first timeout (1 s).
    let (s, [d0, d1]) = first_hello_late(t0, Duration::from_secs(1));
    assert_eq!(
        s.choices,
        [(1, t0)],
        "the hello on stream 2 came first, but role 0 waited"
    );
    assert_eq!(d0, Some((1, t0 + ONE_WAY + Duration::from_secs(1))));
    assert_eq!(d1, Some((1, t0 + ONE_WAY)));
}

/// The limit SWITCH_AFTER's documentation accepts: a hello later than that (lost more often
/// than TCP retransmits in SWITCH_AFTER) makes role 0 switch while role 1 has taken the first
/// stream, and the two sides end on different streams.
#[test]
fn tcp_a_hello_later_than_switch_after_makes_the_sides_disagree() {
    let (_, [d0, d1]) = first_hello_late(Instant::now(), SWITCH_AFTER + Duration::from_secs(1));
    assert_eq!(d0.map(|d| d.0), Some(2));
    assert_eq!(d1.map(|d| d.0), Some(1));
}
