//! Hole punching: the punch messages of one session (UDP probe and reply, TCP hello and
//! choose, one format), and the UDP puncher fed with datagrams from anywhere
//! (`punch_messages`).
//!
//! The session is fixed: our secret is `[1; 16]`, the peer's `[2; 16]`, so the fuzzer can keep
//! genuine messages in its corpus, and the target can tell them from forgeries: a message
//! that opens must be byte for byte what the peer's keys make.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use natt_core::rendezvous::{PrivRendezvousInfo, PubRendezvousInfo, Secret};
use natt_core::{MappedSocketAddr, UdpExchange};
use natt_punch::keys::SessionKeys;
use natt_punch::path::{MAX_TARGETS, Paths};
use natt_punch::udp::{MAX_PER_SECOND, UdpPuncher};
use natt_punch::wire::{self, FLAG_CONFIRMED, FLAG_DONE, Kind, Message, NONCE_LEN};
use rand::SeedableRng;
use rand::rngs::StdRng;

use crate::addr;
use crate::exchange::MAX_DRAIN;
use crate::input::{Clock, Input, Script};

/// Our secret and the peer's.
pub const OURS: [u8; 16] = [1; 16];
/// The peer's secret.
pub const THEIRS: [u8; 16] = [2; 16];

/// The peer's endpoints, as its token would carry them.
const PEER_ENDPOINTS: [(&str, bool, &str); 4] = [
    ("192.168.1.20:5000", false, "local"),
    ("203.0.113.50:40000", true, "stun"),
    ("203.0.113.50:40001", false, "upnp"),
    ("[2001:db8::50]:40000", false, "local"),
];
/// Addresses datagrams come from: the peer's endpoints, then strangers.
const FROM: [&str; 7] = [
    "192.168.1.20:5000",
    "203.0.113.50:40000",
    "203.0.113.50:40001",
    "203.0.113.50:50123",
    "198.51.100.9:9",
    "[2001:db8::50]:40000",
    "192.0.2.1:4000",
];

/// Our own endpoint, as our token would carry it.
pub const OUR_ENDPOINT: &str = "192.0.2.1:4000";
/// Where a genuine message's sender may have seen us: at our endpoint, or elsewhere (relayed).
const OBSERVED: [&str; 3] = [OUR_ENDPOINT, "192.0.2.1:4444", "198.51.100.9:9"];

fn info(secret: [u8; 16], endpoints: Vec<MappedSocketAddr>) -> (PrivRendezvousInfo, PubRendezvousInfo) {
    let secret = Secret(secret);
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
}

/// `(our keys, the peer's keys, our private info, the peer's public info)`.
pub fn session() -> (SessionKeys, SessionKeys, PrivRendezvousInfo, PubRendezvousInfo) {
    let peer_eps = PEER_ENDPOINTS
        .iter()
        .map(|(a, r, t)| MappedSocketAddr::new(addr(a), *r, *t))
        .collect();
    let (our_priv, our_pub) = info(OURS, vec![MappedSocketAddr::new(addr(OUR_ENDPOINT), false, "local")]);
    let (their_priv, their_pub) = info(THEIRS, peer_eps);
    let ours = SessionKeys::new(&our_priv, &their_pub).expect("different secrets");
    let theirs = SessionKeys::new(&their_priv, &our_pub).expect("different secrets");
    (ours, theirs, our_priv, their_pub)
}

/// `punch_messages`: the first byte picks a mode (below 0x40: one UDP message, below 0x80:
/// one TCP frame, else the puncher); the rest is its input.
pub fn target(data: &[u8]) {
    let (ours, theirs, our_priv, their_pub) = session();
    let mut input = Input::new(data);
    let mode = input.u8().unwrap_or(0);
    match mode {
        0x00..0x80 => message(&ours, &theirs, input.rest()),
        _ => puncher(ours, theirs, &our_priv, &their_pub, mode, &mut input),
    }
}

/// One message (UDP datagram or TCP frame): only the other side's own messages open.
fn message(ours: &SessionKeys, theirs: &SessionKeys, data: &[u8]) {
    for (me, peer) in [(ours, theirs), (theirs, ours)] {
        if let Some(m) = wire::open(me, data) {
            assert_eq!(&wire::encode(peer, &m)[..], data, "opened a forgery: {m:?}");
            assert!(!matches!((m.kind, peer.role), (Kind::Hello, 0) | (Kind::Choose, 1)));
        }
    }
    assert_eq!(
        wire::is_punch_packet(data),
        data.len() == wire::MESSAGE_LEN && data.starts_with(&wire::MAGIC)
    );
}

/// Puncher operations.
mod op {
    pub const ADVANCE: u8 = 0;
    pub const TRANSMIT: u8 = 1;
    /// Forged bytes.
    pub const RAW: u8 = 2;
    /// A genuine message of the peer (kind, flags, nonce or the nonce of a probe we sent).
    pub const GENUINE: u8 = 3;
    /// One of our own datagrams, reflected back.
    pub const REFLECT: u8 = 4;
    pub const RESULT: u8 = 5;
    pub const COUNT: u8 = 6;
}

fn puncher(
    ours: SessionKeys,
    theirs: SessionKeys,
    our_priv: &PrivRendezvousInfo,
    their_pub: &PubRendezvousInfo,
    mode: u8,
    input: &mut Input<'_>,
) {
    let local = if mode & 1 == 0 {
        addr("0.0.0.0:4000")
    } else {
        addr("[::]:4000")
    };
    let clock = &mut Clock::start();
    let Ok(paths) = Paths::new(local, &our_priv.endpoints, &their_pub.endpoints) else {
        panic!("no target for {local}");
    };
    let mut p = UdpPuncher::new(
        ours.clone(),
        paths.clone(),
        clock.now,
        StdRng::seed_from_u64(u64::from(mode)),
    );
    let table: Vec<SocketAddr> = FROM.iter().map(|s| addr(s)).collect();
    let observed: Vec<SocketAddr> = OBSERVED.iter().map(|s| addr(s)).collect();
    let mut sent: Vec<(SocketAddr, Vec<u8>)> = Vec::new();
    let mut rate: HashMap<SocketAddr, Vec<Instant>> = HashMap::new();
    // Where genuine replies to our probes came from, saying they saw us at our own address:
    // the only addresses the punch may end with.
    let mut confirmable: Vec<SocketAddr> = Vec::new();
    while let Some(code) = input.u8() {
        match code % op::COUNT {
            op::ADVANCE => clock.advance(input.u16().unwrap_or(0)),
            op::TRANSMIT => {
                let mut n = 0;
                while let Some(t) = p.poll_transmit(clock.now) {
                    n += 1;
                    assert!(n <= MAX_DRAIN, "poll_transmit never says None at one instant");
                    // Only to the peer's IPs: a forger cannot point our packets anywhere else.
                    assert!(paths.is_peer(t.destination), "sent to {}, not the peer", t.destination);
                    let m = wire::open(&theirs, &t.payload).expect("the peer cannot open what we sent");
                    assert_eq!(m.observed, t.destination);
                    // "Done" is only ever said once the punch is done (it is never undone).
                    assert!(m.flags & FLAG_DONE == 0 || p.peer().is_some(), "done before the end");
                    // At most MAX_PER_SECOND datagrams to one address in any second.
                    let times = rate.entry(t.destination).or_default();
                    times.retain(|at| clock.now.saturating_duration_since(*at) < Duration::from_secs(1));
                    times.push(clock.now);
                    assert!(times.len() <= MAX_PER_SECOND, "{} sent too fast", t.destination);
                    sent.push((t.destination, t.payload));
                }
            }
            op::RAW => {
                let from = input.addr(&table);
                let data = input.chunk();
                let is_punch = wire::is_punch_packet(data);
                assert_eq!(p.handle_datagram(clock.now, from, data), is_punch);
            }
            op::GENUINE => {
                let from = input.addr(&table);
                let kind = input.u8().unwrap_or(0);
                let idx = usize::from(input.u8().unwrap_or(0));
                let seen_at = observed[usize::from(kind >> 4) % observed.len()];
                let nonce: [u8; NONCE_LEN] = input.array();
                let echoed = match (kind & 4 != 0, sent.len()) {
                    (true, n) if n > 0 => {
                        let (to, bytes) = &sent[n - 1 - idx % n];
                        wire::open(&theirs, bytes).map(|m| (*to, m.nonce))
                    }
                    _ => None,
                };
                let m = Message {
                    kind: if kind & 1 == 0 { Kind::Probe } else { Kind::Reply },
                    flags: (kind >> 1) & (FLAG_CONFIRMED | FLAG_DONE),
                    nonce: echoed.map_or(nonce, |(_, n)| n),
                    observed: seen_at,
                };
                // A reply to a probe we sent to `from` (its nonce echoed, or guessed: the
                // generator is seeded), saying it saw us at our own address.
                let answers_ours = m.kind == Kind::Reply
                    && sent.iter().any(|(to, bytes)| {
                        *to == from
                            && wire::open(&theirs, bytes).is_some_and(|s| s.kind == Kind::Probe && s.nonce == m.nonce)
                    });
                if answers_ours && paths.sees_us(seen_at) {
                    confirmable.push(from);
                }
                assert!(p.handle_datagram(clock.now, from, &wire::encode(&theirs, &m)));
            }
            op::REFLECT => {
                let from = input.addr(&table);
                let idx = usize::from(input.u8().unwrap_or(0));
                if !sent.is_empty() {
                    let d = sent[sent.len() - 1 - idx % sent.len()].1.clone();
                    let before = p.peer();
                    p.handle_datagram(clock.now, from, &d);
                    assert_eq!(p.peer(), before, "our own datagram moved the punch");
                }
            }
            _ => {
                if let Some(r) = p.poll_result(clock.now) {
                    let eps = r.expect("a punch result is never an error");
                    assert_eq!(
                        eps.iter().map(|e| e.addr).collect::<Vec<_>>(),
                        p.peer().into_iter().collect::<Vec<_>>()
                    );
                }
            }
        }
        assert!(p.targets().len() <= MAX_TARGETS);
        if let Some(peer) = p.peer() {
            assert!(
                confirmable.contains(&peer),
                "the punch ended at {peer}, which never answered a probe of ours from there"
            );
        }
    }
    let _ = p.poll_timeout();
    if p.peer().is_none() {
        assert!(p.finish().is_err());
    }
}

/// Seeds for `punch_messages`.
pub fn seeds() -> Vec<(String, Vec<u8>)> {
    let (ours, theirs, _, _) = session();
    let seen = addr(OUR_ENDPOINT);
    let msg = |kind, flags, nonce| Message {
        kind,
        flags,
        nonce: [nonce; NONCE_LEN],
        observed: seen,
    };
    let probe = msg(Kind::Probe, 0, 7);
    let reply = msg(Kind::Reply, FLAG_CONFIRMED, 8);
    let one = |m: &Message, k: &SessionKeys| Script::new().u8(0).raw(&wire::encode(k, m)).build();
    // Puncher scripts: from index 1 is the peer's STUN endpoint, 3 a port no server saw; kind
    // bit 0 reply, bits 1-2 flags, bit 2 echo a nonce we sent, high nibble the observed address.
    let genuine = |s: Script, from: u8, kind: u8, idx: u8| s.u8(op::GENUINE).u8(from).u8(kind).u8(idx).raw(&[0; 12]);
    let both_at_once = genuine(
        genuine(Script::new().u8(0x80).u8(op::TRANSMIT), 1, 0, 0).u8(op::TRANSMIT),
        1,
        1 | 4,
        0,
    )
    .u8(op::TRANSMIT)
    .u8(op::RESULT)
    .build();
    let late_and_reflexive = genuine(
        Script::new()
            .u8(0x80)
            .u8(op::TRANSMIT)
            .u8(op::ADVANCE)
            .u16(60)
            .u8(op::TRANSMIT)
            .u8(op::RAW)
            .u8(3)
            .chunk(&wire::encode(&ours, &probe)),
        3,
        0,
        0,
    )
    .u8(op::TRANSMIT)
    .u8(op::REFLECT)
    .u8(3)
    .u8(0)
    .u8(op::GENUINE)
    .u8(3)
    .u8(1 | 2 | 4)
    .u8(1)
    .raw(&[0; 12])
    .u8(op::TRANSMIT)
    .u8(op::RESULT)
    .build();
    let relayed = genuine(
        genuine(Script::new().u8(0x82).u8(op::TRANSMIT), 1, 0x20, 0).u8(op::TRANSMIT),
        1,
        0x20 | 1 | 2 | 4,
        0,
    )
    .u8(op::TRANSMIT)
    .u8(op::RESULT)
    .build();
    let timeouts = Script::new()
        .u8(0x81)
        .u8(op::TRANSMIT)
        .u8(op::ADVANCE)
        .u16(50)
        .u8(op::TRANSMIT)
        .u8(op::ADVANCE)
        .u16(0x8000 | 3)
        .u8(op::TRANSMIT)
        .u8(op::RAW)
        .u8(1)
        .chunk(b"NATP garbage")
        .build();
    vec![
        ("udp-probe".into(), one(&probe, &theirs)),
        ("udp-reply-confirmed".into(), one(&reply, &theirs)),
        ("tcp-hello-or-choose".into(), one(&msg(Kind::Choose, 0, 9), &ours)),
        ("tcp-hello".into(), one(&msg(Kind::Hello, 0, 9), &theirs)),
        ("puncher-both-at-once".into(), both_at_once),
        ("puncher-late-reflexive".into(), late_and_reflexive),
        ("puncher-relayed".into(), relayed),
        ("puncher-timeouts-v6".into(), timeouts),
    ]
}
