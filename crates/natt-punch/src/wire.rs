//! Punch messages (protocol version 2), as pure encode/decode functions: the UDP probe and
//! reply, and the TCP hello and choose, in one 64-byte format.
//!
//! | offset | size | field                                                              |
//! |-------:|-----:|--------------------------------------------------------------------|
//! | 0      | 4    | magic `b"NATP"`                                                    |
//! | 4      | 1    | version, `2`                                                       |
//! | 5      | 1    | kind: `1` probe, `2` reply (UDP); `3` hello, `4` choose, `5` move (TCP) |
//! | 6      | 1    | flags (UDP): bit 0 the sender has a confirmed path, bit 1 it is done |
//! | 7      | 1    | the sender's role, `0` or `1`                                      |
//! | 8      | 8    | session tag (a public hash of the session key)                     |
//! | 16     | 12   | nonce: a probe's, hello's, choose's or move's own, random; a reply echoes its probe's |
//! | 28     | 1    | family of the observed address: `4` or `6`                         |
//! | 29     | 1    | reserved, zero                                                     |
//! | 30     | 2    | observed port, big-endian                                          |
//! | 32     | 16   | observed IP (IPv4 in the first 4 bytes, the rest zero)             |
//! | 48     | 16   | HMAC-SHA256 of bytes 0..48 with the sender's key, truncated        |
//!
//! The **observed address** binds a message to the path it was sent on: it is the receiver's
//! address as the sender sees it (a probe's destination; the source a reply's probe came from;
//! the far end of the TCP stream a hello or choose is written on; for a move, the far end of
//! the direct stream the sender moves to, see [`crate::records`]). A receiver takes a message
//! only if that address is one of its own (see [`crate::path`]), so a message captured on one
//! path, or relayed by a party that connected to both peers, is useless on any other: the
//! relay would be the far end, and its address is not the receiver's.
//!
//! The MAC key depends on both rendezvous secrets and on the sender's role ([`crate::keys`]),
//! so messages of other sessions, of anyone without the out-of-band information, or reflected
//! back to their sender, do not open.

#![deny(clippy::disallowed_methods)] // a protocol core: see clippy.toml

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use crate::keys::{MAC_LEN, SessionKeys, TAG_LEN};

/// The first four bytes of every punch message.
pub const MAGIC: [u8; 4] = *b"NATP";
/// The version of the punch protocol.
pub const VERSION: u8 = 2;
/// Length of every punch message, UDP datagram or TCP frame.
pub const MESSAGE_LEN: usize = 64;
/// Length of a nonce.
pub const NONCE_LEN: usize = 12;
const SIGNED_LEN: usize = MESSAGE_LEN - MAC_LEN;

/// Flag: the sender has a confirmed path to us.
pub const FLAG_CONFIRMED: u8 = 1;
/// Flag: the sender has finished punching.
pub const FLAG_DONE: u8 = 2;

/// The kind of a punch message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// UDP: "can you hear me?"
    Probe,
    /// UDP: "yes": the answer to a probe, echoing its nonce.
    Reply,
    /// TCP, sent by role 1 on every stream: role 1 is at this end.
    Hello,
    /// TCP, sent by role 0 on the one stream it chooses.
    Choose,
    /// TCP, sent by either role as the last record on a stream through a relay: its next bytes
    /// go on the direct stream the two sides chose later ([`crate::records`]).
    Move,
}

impl Kind {
    fn byte(self) -> u8 {
        match self {
            Kind::Probe => 1,
            Kind::Reply => 2,
            Kind::Hello => 3,
            Kind::Choose => 4,
            Kind::Move => 5,
        }
    }

    fn from_byte(b: u8) -> Option<Kind> {
        Some(match b {
            1 => Kind::Probe,
            2 => Kind::Reply,
            3 => Kind::Hello,
            4 => Kind::Choose,
            5 => Kind::Move,
            _ => return None,
        })
    }

    /// Whether a sender of `role` may send this kind (hello is role 1's, choose role 0's).
    fn sent_by(self, role: u8) -> bool {
        match self {
            Kind::Probe | Kind::Reply | Kind::Move => true,
            Kind::Hello => role == 1,
            Kind::Choose => role == 0,
        }
    }
}

/// An authenticated punch message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Message {
    /// What it is.
    pub kind: Kind,
    /// [`FLAG_CONFIRMED`], [`FLAG_DONE`] (UDP only; zero on TCP).
    pub flags: u8,
    /// The nonce.
    pub nonce: [u8; NONCE_LEN],
    /// The receiver's address as the sender sees it.
    pub observed: SocketAddr,
}

/// True when `data` has the form of a punch message (of any session and version 2). After
/// [`crate::PunchedUdpSocket::punch_hole`] returns, a few late punch datagrams may still
/// arrive on the socket; applications use this to recognise and discard them.
pub fn is_punch_packet(data: &[u8]) -> bool {
    data.len() == MESSAGE_LEN && data.starts_with(&MAGIC)
}

/// The bytes of `message`, signed with our key.
pub fn encode(keys: &SessionKeys, message: &Message) -> [u8; MESSAGE_LEN] {
    let mut b = [0u8; MESSAGE_LEN];
    let (signed, mac) = b.split_at_mut(SIGNED_LEN);
    let (head, rest) = signed.split_at_mut(8);
    head.copy_from_slice(&[
        MAGIC[0],
        MAGIC[1],
        MAGIC[2],
        MAGIC[3],
        VERSION,
        message.kind.byte(),
        message.flags,
        keys.role,
    ]);
    let (tag, rest) = rest.split_at_mut(TAG_LEN);
    tag.copy_from_slice(&keys.tag);
    let (nonce, rest) = rest.split_at_mut(NONCE_LEN);
    nonce.copy_from_slice(&message.nonce);
    let (family, rest) = rest.split_at_mut(4);
    let port = message.observed.port().to_be_bytes();
    let fam = if message.observed.is_ipv4() { 4 } else { 6 };
    family.copy_from_slice(&[fam, 0, port[0], port[1]]);
    match message.observed.ip() {
        IpAddr::V4(ip) => {
            if let Some(first) = rest.first_chunk_mut::<4>() {
                *first = ip.octets();
            }
        }
        IpAddr::V6(ip) => rest.copy_from_slice(&ip.octets()),
    }
    mac.copy_from_slice(&keys.sign(&[signed]));
    b
}

/// The message in `data` if it is a punch message of this session sent by the peer, with a
/// valid MAC; `None` for anything else (never a panic).
pub fn open(keys: &SessionKeys, data: &[u8]) -> Option<Message> {
    if !is_punch_packet(data) {
        return None;
    }
    let (signed, mac) = data.split_at(SIGNED_LEN);
    let [_, _, _, _, version, kind, flags, role] = *signed.first_chunk::<8>()?;
    let kind = Kind::from_byte(kind)?;
    if version != VERSION
        || role != keys.peer_role()
        || !kind.sent_by(role)
        || signed.get(8..8 + TAG_LEN)? != keys.tag
        || flags & !(FLAG_CONFIRMED | FLAG_DONE) != 0
    {
        return None;
    }
    let rest = signed.get(8 + TAG_LEN..)?;
    let nonce = *rest.first_chunk::<NONCE_LEN>()?;
    let [fam, reserved, p0, p1] = *rest.get(NONCE_LEN..)?.first_chunk::<4>()?;
    let ip_bytes = *rest.get(NONCE_LEN + 4..)?.first_chunk::<16>()?;
    let ip = match fam {
        4 if ip_bytes.get(4..)?.iter().all(|&b| b == 0) => IpAddr::V4(Ipv4Addr::from(*ip_bytes.first_chunk::<4>()?)),
        6 => IpAddr::V6(Ipv6Addr::from(ip_bytes)),
        _ => return None,
    };
    if reserved != 0 || !keys.verify(&[signed], mac) {
        return None;
    }
    Some(Message {
        kind,
        flags,
        nonce,
        observed: SocketAddr::new(ip, u16::from_be_bytes([p0, p1])),
    })
}

#[cfg(test)]
#[allow(clippy::disallowed_methods)]
pub(crate) mod tests {
    use super::*;
    use natt_core::rendezvous::gen_rendezvous_info;

    /// `(role 0's keys, role 1's keys)` of a new session (for the tests of this crate's
    /// message formats).
    pub(crate) fn pair() -> (SessionKeys, SessionKeys) {
        let (a_priv, a_pub) = gen_rendezvous_info(vec![]);
        let (b_priv, b_pub) = gen_rendezvous_info(vec![]);
        let a = SessionKeys::new(&a_priv, &b_pub).unwrap();
        let b = SessionKeys::new(&b_priv, &a_pub).unwrap();
        if a.role == 0 { (a, b) } else { (b, a) }
    }

    fn msg(kind: Kind, observed: &str) -> Message {
        Message {
            kind,
            flags: 0,
            nonce: [5; NONCE_LEN],
            observed: observed.parse().unwrap(),
        }
    }

    #[test]
    fn round_trip_and_layout() {
        let (a, b) = pair();
        let m = Message {
            flags: FLAG_CONFIRMED,
            ..msg(Kind::Probe, "203.0.113.7:4000")
        };
        let bytes = encode(&a, &m);
        assert_eq!(&bytes[..8], &[b'N', b'A', b'T', b'P', 2, 1, 1, a.role]);
        assert_eq!(&bytes[28..36], &[4, 0, 0x0f, 0xa0, 203, 0, 113, 7]);
        assert!(is_punch_packet(&bytes));
        assert_eq!(open(&b, &bytes), Some(m));
        // Reflected back to the sender: rejected.
        assert_eq!(open(&a, &bytes), None);
        let v6 = msg(Kind::Reply, "[2001:db8::9]:1");
        assert_eq!(open(&a, &encode(&b, &v6)), Some(v6));
    }

    #[test]
    fn any_change_is_rejected() {
        let (a, b) = pair();
        for m in [msg(Kind::Reply, "198.51.100.1:9"), msg(Kind::Choose, "[2001:db8::1]:7")] {
            let bytes = encode(&a, &m);
            for i in 0..MESSAGE_LEN {
                for bit in 0..8 {
                    let mut x = bytes;
                    x[i] ^= 1 << bit;
                    assert_eq!(open(&b, &x), None, "byte {i} bit {bit}");
                }
            }
            for n in 0..MESSAGE_LEN {
                assert_eq!(open(&b, &bytes[..n]), None);
            }
        }
    }

    #[test]
    fn each_role_sends_only_its_own_tcp_frame() {
        let (r0, r1) = pair();
        assert!(open(&r1, &encode(&r0, &msg(Kind::Choose, "198.51.100.1:9"))).is_some());
        assert!(open(&r0, &encode(&r1, &msg(Kind::Hello, "198.51.100.1:9"))).is_some());
        // A role that sends the other role's frame is not the peer.
        assert_eq!(open(&r1, &encode(&r0, &msg(Kind::Hello, "198.51.100.1:9"))), None);
        assert_eq!(open(&r0, &encode(&r1, &msg(Kind::Choose, "198.51.100.1:9"))), None);
    }

    #[test]
    fn other_sessions_are_rejected() {
        let (a, _) = pair();
        let (_, d) = pair();
        let (e, _) = pair();
        let bytes = encode(&a, &msg(Kind::Probe, "198.51.100.1:9"));
        assert_eq!(open(&d, &bytes), None);
        assert_eq!(open(&e, &bytes), None);
    }
}
