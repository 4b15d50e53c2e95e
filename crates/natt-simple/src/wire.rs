//! The simple hole-punch protocol's wire format (version 1), as pure encode/decode functions.
//!
//! All integers are big-endian. A client sends a **request**; the server answers with a
//! **reply** carrying the source address and port it saw the request come from.
//!
//! Request, always 40 bytes:
//!
//! | offset | size | field                                   |
//! |-------:|-----:|-----------------------------------------|
//! | 0      | 4    | magic `b"NATT"` (`4E 41 54 54`)         |
//! | 4      | 1    | version, `1`                            |
//! | 5      | 1    | kind, `1` = request                     |
//! | 6      | 2    | reserved, zero                          |
//! | 8      | 12   | transaction id, random                  |
//! | 20     | 20   | padding, zero                           |
//!
//! Reply, 26 bytes (IPv4) or 38 bytes (IPv6):
//!
//! | offset | size  | field                                  |
//! |-------:|------:|----------------------------------------|
//! | 0      | 4     | magic `b"NATT"`                        |
//! | 4      | 1     | version, `1`                           |
//! | 5      | 1     | kind, `2` = reply                      |
//! | 6      | 1     | address family, `4` or `6`             |
//! | 7      | 1     | reserved, zero                         |
//! | 8      | 2     | observed port                          |
//! | 10     | 12    | transaction id, copied from the request|
//! | 22     | 4/16  | observed address                       |
//!
//! The padding makes every request at least as large as any reply, so a server cannot be used
//! to amplify traffic towards a spoofed source. The random transaction id lets a client match
//! each reply to its request (and ignore anyone else's). The first byte, `0x4E`, has its top
//! two bits set to `01`, which tells the protocol apart from STUN (whose first two bits are
//! `00`) on a shared port. Over TCP the same messages are sent as they are: a message's length
//! follows from its first 8 bytes (see [`message_len`]).

#![deny(clippy::disallowed_methods)] // a protocol core: see clippy.toml

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// The first four bytes of every message.
pub const MAGIC: [u8; 4] = *b"NATT";
/// The protocol version this crate speaks.
pub const VERSION: u8 = 1;
/// Kind byte of a request.
pub const KIND_REQUEST: u8 = 1;
/// Kind byte of a reply.
pub const KIND_REPLY: u8 = 2;
/// Length of a request.
pub const REQUEST_LEN: usize = 40;
/// Length of a reply carrying an IPv4 address.
pub const REPLY_V4_LEN: usize = 26;
/// Length of a reply carrying an IPv6 address.
pub const REPLY_V6_LEN: usize = 38;
/// Length of the fixed header that tells a message's kind and length.
pub const HEADER_LEN: usize = 8;
/// Length of a transaction id.
pub const TXID_LEN: usize = 12;
// No amplification: a reply is never larger than the request it answers.
const _: () = assert!(REPLY_V6_LEN <= REQUEST_LEN && REPLY_V4_LEN <= REQUEST_LEN);

/// Where a request's transaction id starts.
const REQUEST_TXID_AT: usize = 8;
/// Where a reply's transaction id starts.
const REPLY_TXID_AT: usize = 10;

/// Why bytes are not a valid message.
#[derive(Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WireError {
    /// Fewer bytes than the message needs.
    #[error("truncated message: {0} bytes")]
    Truncated(usize),
    /// More bytes than the message has.
    #[error("message of kind {kind} has {len} bytes, expected {expected}")]
    BadLength {
        /// The kind byte.
        kind: u8,
        /// Bytes received.
        len: usize,
        /// Bytes expected.
        expected: usize,
    },
    /// Not this protocol.
    #[error("bad magic")]
    BadMagic,
    /// Another version of the protocol.
    #[error("unsupported version {0}")]
    UnsupportedVersion(u8),
    /// An unknown kind byte.
    #[error("unknown message kind {0}")]
    UnknownKind(u8),
    /// An unknown address family byte.
    #[error("unknown address family {0}")]
    UnknownFamily(u8),
    /// Reserved or padding bytes are not zero.
    #[error("reserved bytes not zero")]
    NonZeroReserved,
}

natt_core::debug_as_display!(WireError);

/// A transaction id: 96 random bits chosen by the client for each request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TransactionId(pub [u8; TXID_LEN]);

impl TransactionId {
    /// A fresh transaction id from `rng`.
    pub fn from_rng(rng: &mut impl rand::Rng) -> Self {
        TransactionId(rng.random())
    }

    /// A fresh transaction id from the thread's generator: for drivers and tests, not for the
    /// socket-free cores (which take [`from_rng`](Self::from_rng)).
    #[allow(clippy::disallowed_methods)]
    pub fn random() -> Self {
        TransactionId(rand::random())
    }
}

/// A request: "tell me where this came from".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Request {
    /// The transaction id the reply must carry.
    pub txid: TransactionId,
}

/// A reply: the address a request was seen coming from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reply {
    /// The request's transaction id.
    pub txid: TransactionId,
    /// The source address and port the server saw.
    pub observed: SocketAddr,
}

/// Any message of the protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Message {
    /// A request.
    Request(Request),
    /// A reply.
    Reply(Reply),
}

impl Request {
    /// The request's 40 bytes.
    ///
    /// ```
    /// use natt_simple::wire::{decode, Message, Request, TransactionId};
    /// let req = Request { txid: TransactionId([7; 12]) };
    /// assert_eq!(decode(&req.encode()), Ok(Message::Request(req)));
    /// ```
    pub fn encode(&self) -> [u8; REQUEST_LEN] {
        let mut b = [0u8; REQUEST_LEN];
        let (head, rest) = b.split_at_mut(HEADER_LEN);
        head.copy_from_slice(&[MAGIC[0], MAGIC[1], MAGIC[2], MAGIC[3], VERSION, KIND_REQUEST, 0, 0]);
        let (txid, _padding) = rest.split_at_mut(TXID_LEN);
        txid.copy_from_slice(&self.txid.0);
        b
    }
}

impl Reply {
    /// The reply's bytes (26 for IPv4, 38 for IPv6).
    pub fn encode(&self) -> Vec<u8> {
        let (family, addr): (u8, Vec<u8>) = match self.observed.ip() {
            IpAddr::V4(ip) => (4, ip.octets().to_vec()),
            IpAddr::V6(ip) => (6, ip.octets().to_vec()),
        };
        let mut b = Vec::with_capacity(REPLY_V6_LEN);
        b.extend_from_slice(&MAGIC);
        b.extend_from_slice(&[VERSION, KIND_REPLY, family, 0]);
        b.extend_from_slice(&self.observed.port().to_be_bytes());
        b.extend_from_slice(&self.txid.0);
        b.extend_from_slice(&addr);
        b
    }
}

/// The total length of the message whose first [`HEADER_LEN`] bytes are `header`, checking
/// magic, version, kind and family on the way (for reading messages from a stream).
pub fn message_len(header: &[u8]) -> Result<usize, WireError> {
    let h: &[u8; HEADER_LEN] = header
        .get(..HEADER_LEN)
        .and_then(|h| h.try_into().ok())
        .ok_or(WireError::Truncated(header.len()))?;
    let [m0, m1, m2, m3, version, kind, family, _] = *h;
    if [m0, m1, m2, m3] != MAGIC {
        return Err(WireError::BadMagic);
    }
    if version != VERSION {
        return Err(WireError::UnsupportedVersion(version));
    }
    match kind {
        KIND_REQUEST => Ok(REQUEST_LEN),
        KIND_REPLY => match family {
            4 => Ok(REPLY_V4_LEN),
            6 => Ok(REPLY_V6_LEN),
            f => Err(WireError::UnknownFamily(f)),
        },
        k => Err(WireError::UnknownKind(k)),
    }
}

/// Decodes one whole message; any other input is an error, never a panic.
pub fn decode(buf: &[u8]) -> Result<Message, WireError> {
    let expected = message_len(buf)?;
    let kind = buf.get(5).copied().unwrap_or_default();
    if buf.len() != expected {
        if buf.len() < expected {
            return Err(WireError::Truncated(buf.len()));
        }
        return Err(WireError::BadLength {
            kind,
            len: buf.len(),
            expected,
        });
    }
    let txid_at = |at: usize| {
        buf.get(at..at + TXID_LEN)
            .and_then(|t| <[u8; TXID_LEN]>::try_from(t).ok())
            .map(TransactionId)
            .ok_or(WireError::Truncated(buf.len()))
    };
    if kind == KIND_REQUEST {
        let txid = txid_at(REQUEST_TXID_AT)?;
        let reserved = buf.get(6..8).unwrap_or(&[]);
        let padding = buf.get(REQUEST_TXID_AT + TXID_LEN..).unwrap_or(&[]);
        if reserved.iter().chain(padding).any(|&b| b != 0) {
            return Err(WireError::NonZeroReserved);
        }
        return Ok(Message::Request(Request { txid }));
    }
    if buf.get(7) != Some(&0) {
        return Err(WireError::NonZeroReserved);
    }
    let port = match buf.get(8..10) {
        Some(&[hi, lo]) => u16::from_be_bytes([hi, lo]),
        _ => return Err(WireError::Truncated(buf.len())),
    };
    let txid = txid_at(REPLY_TXID_AT)?;
    let body = buf.get(REPLY_TXID_AT + TXID_LEN..).unwrap_or(&[]);
    let ip = if let Ok(v4) = <[u8; 4]>::try_from(body) {
        IpAddr::V4(Ipv4Addr::from(v4))
    } else if let Ok(v6) = <[u8; 16]>::try_from(body) {
        IpAddr::V6(Ipv6Addr::from(v6))
    } else {
        return Err(WireError::Truncated(buf.len()));
    };
    Ok(Message::Reply(Reply {
        txid,
        observed: SocketAddr::new(ip, port),
    }))
}

/// The reply a server sends to `data` received from `from`, or `None` when `data` is not a
/// valid request (malformed requests get no reply).
///
/// ```
/// use natt_simple::wire::{answer, decode, Message, Request, TransactionId};
/// let from = "198.51.100.7:40000".parse().unwrap();
/// let req = Request { txid: TransactionId::random() };
/// let reply = answer(from, &req.encode()).unwrap();
/// match decode(&reply).unwrap() {
///     Message::Reply(r) => assert_eq!((r.txid, r.observed), (req.txid, from)),
///     _ => unreachable!(),
/// }
/// assert!(answer(from, b"ECHO").is_none());
/// ```
pub fn answer(from: SocketAddr, data: &[u8]) -> Option<Vec<u8>> {
    match decode(data) {
        Ok(Message::Request(req)) => Some(
            Reply {
                txid: req.txid,
                observed: from,
            }
            .encode(),
        ),
        Ok(Message::Reply(_)) => None,
        Err(e) => {
            log::trace!("ignoring {} bytes from {from}: {e}", data.len());
            None
        }
    }
}

#[cfg(test)]
#[allow(clippy::disallowed_methods)]
mod tests {
    use super::*;

    fn reply(observed: &str) -> Reply {
        Reply {
            txid: TransactionId([0xAB; 12]),
            observed: observed.parse().unwrap(),
        }
    }

    #[test]
    fn request_round_trip_and_layout() {
        let req = Request {
            txid: TransactionId(*b"0123456789ab"),
        };
        let b = req.encode();
        assert_eq!(&b[..8], b"NATT\x01\x01\x00\x00");
        assert_eq!(&b[8..20], b"0123456789ab");
        assert!(b[20..].iter().all(|&x| x == 0));
        assert_eq!(decode(&b), Ok(Message::Request(req)));
    }

    #[test]
    fn reply_round_trip_v4_v6() {
        for (addr, len) in [
            ("203.0.113.5:4000", REPLY_V4_LEN),
            ("[2001:db8::1]:65535", REPLY_V6_LEN),
        ] {
            let r = reply(addr);
            let b = r.encode();
            assert_eq!(b.len(), len);
            assert_eq!(decode(&b), Ok(Message::Reply(r)));
            assert_eq!(message_len(&b[..HEADER_LEN]), Ok(len));
        }
        let b = reply("203.0.113.5:4000").encode();
        assert_eq!(&b[..10], b"NATT\x01\x02\x04\x00\x0f\xa0");
        assert_eq!(&b[22..], &[203, 0, 113, 5]);
    }

    #[test]
    fn malformed_input_is_an_error() {
        let good = Request {
            txid: TransactionId([1; 12]),
        }
        .encode();
        assert_eq!(decode(b""), Err(WireError::Truncated(0)));
        assert_eq!(decode(b"ECHO"), Err(WireError::Truncated(4)));
        assert_eq!(decode(&good[..39]), Err(WireError::Truncated(39)));
        let mut long = good.to_vec();
        long.push(0);
        assert!(matches!(decode(&long), Err(WireError::BadLength { .. })));
        let mut bad = good;
        bad[0] = b'X';
        assert_eq!(decode(&bad), Err(WireError::BadMagic));
        let mut bad = good;
        bad[4] = 2;
        assert_eq!(decode(&bad), Err(WireError::UnsupportedVersion(2)));
        let mut bad = good;
        bad[5] = 9;
        assert_eq!(decode(&bad), Err(WireError::UnknownKind(9)));
        let mut bad = good;
        bad[30] = 1;
        assert_eq!(decode(&bad), Err(WireError::NonZeroReserved));
        let mut r = reply("203.0.113.5:1").encode();
        r[6] = 5;
        assert_eq!(decode(&r), Err(WireError::UnknownFamily(5)));
        // A reply claiming IPv6 but carrying IPv4 bytes is truncated.
        let mut r = reply("203.0.113.5:1").encode();
        r[6] = 6;
        assert_eq!(decode(&r), Err(WireError::Truncated(REPLY_V4_LEN)));
    }

    #[test]
    fn every_prefix_and_byte_flip_is_handled_without_panic() {
        let msgs = [
            Request {
                txid: TransactionId([9; 12]),
            }
            .encode()
            .to_vec(),
            reply("[2001:db8::1]:1").encode(),
        ];
        for m in &msgs {
            for n in 0..=m.len() {
                let _ = decode(&m[..n]);
            }
            for i in 0..m.len() {
                for v in [0u8, 1, 2, 4, 6, 0x7f, 0xff] {
                    let mut x = m.clone();
                    x[i] = v;
                    let _ = decode(&x);
                    let _ = answer("127.0.0.1:1".parse().unwrap(), &x);
                }
            }
        }
    }

    #[test]
    fn first_byte_differs_from_stun() {
        // STUN messages start with two zero bits.
        assert_ne!(MAGIC[0] & 0xC0, 0);
    }
}
