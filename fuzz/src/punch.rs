//! Hole punching: the UDP and TCP punch messages of one session, and the UDP puncher fed
//! with datagrams from anywhere (`punch_messages`).
//!
//! The session is fixed: our secret is `[1; 16]`, the peer's `[2; 16]`, so the fuzzer can keep
//! genuine messages in its corpus, and the target can tell them from forgeries: a message
//! that opens must be byte for byte what the peer's keys make.

use std::net::SocketAddr;

use natt_core::rendezvous::{PrivRendezvousInfo, PubRendezvousInfo, Secret};
use natt_core::{MappedSocketAddr, UdpExchange};
use natt_punch::keys::SessionKeys;
use natt_punch::tcp_wire::{self, FRAME_LEN, Frame};
use natt_punch::udp::{MAX_TARGETS, UdpPuncher};
use natt_punch::udp_wire::{self, FLAG_CONFIRMED, FLAG_DONE, Kind, MESSAGE_LEN, Message, NONCE_LEN};

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

fn info(secret: [u8; 16], endpoints: Vec<MappedSocketAddr>) -> (PrivRendezvousInfo, PubRendezvousInfo) {
    let secret = Secret(secret);
    (PrivRendezvousInfo { secret }, PubRendezvousInfo { endpoints, secret })
}

/// `(our keys, the peer's keys, the peer's public info)`.
pub fn session() -> (SessionKeys, SessionKeys, PubRendezvousInfo) {
    let peer_eps = PEER_ENDPOINTS
        .iter()
        .map(|(a, r, t)| MappedSocketAddr::new(addr(a), *r, *t))
        .collect();
    let (our_priv, our_pub) = info(
        OURS,
        vec![MappedSocketAddr::new(addr("192.0.2.1:4000"), false, "local")],
    );
    let (their_priv, their_pub) = info(THEIRS, peer_eps);
    let ours = SessionKeys::new(&our_priv, &their_pub).expect("different secrets");
    let theirs = SessionKeys::new(&their_priv, &our_pub).expect("different secrets");
    (ours, theirs, their_pub)
}

/// `punch_messages`: the first byte picks a mode (below 0x40: one UDP message, below 0x80:
/// one TCP frame, else the puncher); the rest is its input.
pub fn target(data: &[u8]) {
    let (ours, theirs, their_pub) = session();
    let mut input = Input::new(data);
    let mode = input.u8().unwrap_or(0);
    match mode {
        0x00..0x40 => udp_message(&ours, &theirs, input.rest()),
        0x40..0x80 => tcp_frame(&ours, &theirs, &mut input),
        _ => puncher(ours, theirs, &their_pub, mode, &mut input),
    }
}

fn udp_message(ours: &SessionKeys, theirs: &SessionKeys, data: &[u8]) {
    if let Some(m) = udp_wire::open(ours, data) {
        assert_eq!(&udp_wire::encode(theirs, &m)[..], data, "opened a forgery: {m:?}");
    }
    // Our own messages reflected back are never the peer's, and theirs are not ours.
    if let Some(m) = udp_wire::open(theirs, data) {
        assert_eq!(
            &udp_wire::encode(ours, &m)[..],
            data,
            "the peer opened a forgery: {m:?}"
        );
    }
    assert_eq!(
        udp_wire::is_punch_packet(data),
        data.len() == MESSAGE_LEN && data.starts_with(b"NATP")
    );
}

fn tcp_frame(ours: &SessionKeys, theirs: &SessionKeys, input: &mut Input<'_>) {
    let frame: [u8; FRAME_LEN] = input.array();
    for (me, peer) in [(ours, theirs), (theirs, ours)] {
        if let Some(f) = tcp_wire::open(me, &frame) {
            // Only the peer's own frame opens: same bytes as it would sign with that nonce.
            let nonce: [u8; tcp_wire::NONCE_LEN] = *frame[16..32].first_chunk().expect("16 bytes");
            assert_eq!(frame, tcp_wire::ours(peer, &nonce), "opened a forged {f:?}");
            assert_eq!(f == Frame::Choose, peer.role == 0);
        }
    }
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

fn puncher(ours: SessionKeys, theirs: SessionKeys, their_pub: &PubRendezvousInfo, mode: u8, input: &mut Input<'_>) {
    let local = if mode & 1 == 0 {
        addr("0.0.0.0:4000")
    } else {
        addr("[::]:4000")
    };
    let clock = &mut Clock::start();
    let Ok(mut p) = UdpPuncher::new(ours.clone(), local, &their_pub.endpoints, clock.now) else {
        panic!("no target for {local}");
    };
    let table: Vec<SocketAddr> = FROM.iter().map(|s| addr(s)).collect();
    let mut sent: Vec<(SocketAddr, Vec<u8>)> = Vec::new();
    // Where genuine messages came from: the only addresses the punch may end with.
    let mut genuine_from: Vec<SocketAddr> = Vec::new();
    while let Some(code) = input.u8() {
        match code % op::COUNT {
            op::ADVANCE => clock.advance(input.u16().unwrap_or(0)),
            op::TRANSMIT => {
                let mut n = 0;
                while let Some(t) = p.poll_transmit(clock.now) {
                    n += 1;
                    assert!(n <= MAX_DRAIN, "poll_transmit never says None at one instant");
                    // Only to the peer's endpoints, or where a genuine message came from:
                    // a forger cannot point our packets anywhere.
                    assert!(
                        p.targets().contains(&t.destination) || genuine_from.contains(&t.destination),
                        "sent to {}, not a target",
                        t.destination
                    );
                    let m = udp_wire::open(&theirs, &t.payload).expect("the peer cannot open what we sent");
                    // "Done" is only ever said once the punch is done (it is never undone).
                    assert!(m.flags & FLAG_DONE == 0 || p.peer().is_some(), "done before the end");
                    sent.push((t.destination, t.payload));
                }
            }
            op::RAW => {
                let from = input.addr(&table);
                let data = input.chunk();
                let genuine = udp_wire::open(&ours, data).is_some();
                assert_eq!(p.handle_datagram(clock.now, from, data), genuine);
                if genuine {
                    genuine_from.push(from);
                }
            }
            op::GENUINE => {
                let from = input.addr(&table);
                let kind = input.u8().unwrap_or(0);
                let idx = usize::from(input.u8().unwrap_or(0));
                let nonce: [u8; NONCE_LEN] = input.array();
                let nonce = match (kind & 4 != 0, sent.len()) {
                    (true, n) if n > 0 => udp_wire::open(&theirs, &sent[n - 1 - idx % n].1).map_or(nonce, |m| m.nonce),
                    _ => nonce,
                };
                let m = Message {
                    kind: if kind & 1 == 0 { Kind::Probe } else { Kind::Reply },
                    flags: (kind >> 1) & (FLAG_CONFIRMED | FLAG_DONE),
                    nonce,
                };
                assert!(p.handle_datagram(clock.now, from, &udp_wire::encode(&theirs, &m)));
                genuine_from.push(from);
            }
            op::REFLECT => {
                let from = input.addr(&table);
                let idx = usize::from(input.u8().unwrap_or(0));
                if !sent.is_empty() {
                    let d = sent[sent.len() - 1 - idx % sent.len()].1.clone();
                    assert!(!p.handle_datagram(clock.now, from, &d), "accepted our own datagram");
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
                genuine_from.contains(&peer),
                "the punch ended at {peer}, which sent nothing genuine"
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
    let (ours, theirs, _) = session();
    let probe = Message {
        kind: Kind::Probe,
        flags: 0,
        nonce: [7; NONCE_LEN],
    };
    let reply = Message {
        kind: Kind::Reply,
        flags: FLAG_CONFIRMED,
        nonce: [8; NONCE_LEN],
    };
    let udp = |m: &Message| Script::new().u8(0).raw(&udp_wire::encode(&theirs, m)).build();
    let tcp = |f: [u8; FRAME_LEN]| Script::new().u8(0x40).raw(&f).build();
    // Puncher scripts: from index 1 is the peer's STUN endpoint, 3 a port no server saw.
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
            .chunk(&udp_wire::encode(&ours, &probe)),
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
        ("udp-probe".into(), udp(&probe)),
        ("udp-reply-confirmed".into(), udp(&reply)),
        ("tcp-frame".into(), tcp(tcp_wire::ours(&theirs, &[9; 16]))),
        ("puncher-both-at-once".into(), both_at_once),
        ("puncher-late-reflexive".into(), late_and_reflexive),
        ("puncher-timeouts-v6".into(), timeouts),
    ]
}
