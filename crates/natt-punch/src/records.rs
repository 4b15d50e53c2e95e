//! The records of a TCP stream through a TURN relay, as pure encode and parse functions.
//!
//! A TCP connection that starts through a relay (natt's `connect::tcp`) carries the
//! application's bytes in records, so that it can move to a direct stream that opens later
//! without losing, repeating or reordering a byte: the sender's last record on the relayed
//! stream says "what follows is on the direct stream", and the receiver reads the relayed
//! stream up to it, then the direct one. A stream that is direct from the start carries plain
//! bytes, with no records.
//!
//! | offset | size   | field                                                              |
//! |-------:|-------:|--------------------------------------------------------------------|
//! | 0      | 1      | type: `0` data, `1` move                                           |
//! | 1      | 2      | length of the body, big-endian: data 1 to [`MAX_DATA`], move 64   |
//! | 3      | length | body: the application's bytes; or a punch message of kind move     |
//!
//! A move record's body is a punch message ([`crate::wire`]) of kind [`Kind::Move`], signed
//! with the session's key and bound to the direct stream: its observed address is the
//! receiver's address as the sender sees it on that stream, which the receiver checks is one
//! of its own. The relay, or anyone who gets bytes onto the relayed stream, cannot make a side
//! leave it.

#![deny(clippy::disallowed_methods)] // a protocol core: see clippy.toml

use std::net::SocketAddr;

use crate::keys::SessionKeys;
use crate::wire::{self, Kind, MESSAGE_LEN, Message, NONCE_LEN};

/// The length of a record's header (type and length).
pub const HEADER_LEN: usize = 3;
/// The most application bytes in one data record.
pub const MAX_DATA: usize = 16 * 1024;
/// The longest record, header included: a reader that buffers this much always holds a whole
/// record.
pub const MAX_RECORD: usize = HEADER_LEN + MAX_DATA;
/// The length of a move record.
pub const MOVE_RECORD_LEN: usize = HEADER_LEN + MESSAGE_LEN;

const DATA: u8 = 0;
const MOVE: u8 = 1;

/// One record, borrowed from the bytes it was parsed from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Record<'a> {
    /// The application's bytes.
    Data(&'a [u8]),
    /// The sender's next bytes are on the direct stream: the body, a punch message to open with
    /// [`open_move`].
    Move(&'a [u8; MESSAGE_LEN]),
}

/// A record that no natt sends: the stream is not (or no longer) a relayed natt stream.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RecordError {
    /// The type byte is neither data nor move.
    #[error("a record of unknown type {0}")]
    UnknownType(u8),
    /// A data record that is empty or longer than [`MAX_DATA`].
    #[error("a data record of {0} bytes (1 to {MAX_DATA} are allowed)")]
    DataLength(usize),
    /// A move record whose body is not one punch message.
    #[error("a move record of {0} bytes ({MESSAGE_LEN} expected)")]
    MoveLength(usize),
}

/// The first record in `input` and the bytes it takes; `None` while `input` holds only part of
/// one. An error as soon as the header shows a record no natt sends.
pub fn parse(input: &[u8]) -> Result<Option<(Record<'_>, usize)>, RecordError> {
    let Some(&[kind, hi, lo]) = input.first_chunk::<HEADER_LEN>() else {
        return Ok(None);
    };
    let len = usize::from(u16::from_be_bytes([hi, lo]));
    match kind {
        DATA if len == 0 || len > MAX_DATA => return Err(RecordError::DataLength(len)),
        MOVE if len != MESSAGE_LEN => return Err(RecordError::MoveLength(len)),
        DATA | MOVE => {}
        other => return Err(RecordError::UnknownType(other)),
    }
    let Some(body) = input.get(HEADER_LEN..HEADER_LEN + len) else {
        return Ok(None);
    };
    let record = if kind == DATA {
        Record::Data(body)
    } else {
        match body.first_chunk::<MESSAGE_LEN>() {
            Some(m) => Record::Move(m),
            None => return Ok(None),
        }
    };
    Ok(Some((record, HEADER_LEN + len)))
}

/// Appends to `out` a data record of the first (at most [`MAX_DATA`]) bytes of `payload`;
/// returns how many it took (0 for an empty payload, which makes no record).
pub fn encode_data(payload: &[u8], out: &mut Vec<u8>) -> usize {
    let body = payload.get(..MAX_DATA).unwrap_or(payload);
    if body.is_empty() {
        return 0;
    }
    let [hi, lo] = u16::try_from(body.len()).unwrap_or(u16::MAX).to_be_bytes();
    out.extend_from_slice(&[DATA, hi, lo]);
    out.extend_from_slice(body);
    body.len()
}

/// The move record to write last on the relayed stream: a punch message of kind move, signed
/// with our key, bound to the direct stream whose far end (the peer, as we see it) is
/// `direct_peer`, with a fresh random `nonce`.
pub fn encode_move(keys: &SessionKeys, direct_peer: SocketAddr, nonce: [u8; NONCE_LEN]) -> [u8; MOVE_RECORD_LEN] {
    let message = wire::encode(
        keys,
        &Message {
            kind: Kind::Move,
            flags: 0,
            nonce,
            observed: direct_peer,
        },
    );
    let mut record = [0u8; MOVE_RECORD_LEN];
    let [hi, lo] = u16::try_from(MESSAGE_LEN).unwrap_or(u16::MAX).to_be_bytes();
    let (head, body) = record.split_at_mut(HEADER_LEN);
    head.copy_from_slice(&[MOVE, hi, lo]);
    body.copy_from_slice(&message);
    record
}

/// The address the peer saw us at on the direct stream it moved to, if `body` (a move
/// record's) is the peer's move message of this session; `None` for anything else. The caller
/// checks that address is one of ours (`Paths::sees_us_directly`).
pub fn open_move(keys: &SessionKeys, body: &[u8; MESSAGE_LEN]) -> Option<SocketAddr> {
    wire::open(keys, body)
        .filter(|m| m.kind == Kind::Move)
        .map(|m| m.observed)
}

#[cfg(test)]
#[allow(clippy::disallowed_methods)]
mod tests {
    use super::*;
    use natt_core::rendezvous::gen_rendezvous_info;

    fn pair() -> (SessionKeys, SessionKeys) {
        let (a_priv, a_pub) = gen_rendezvous_info(vec![]);
        let (b_priv, b_pub) = gen_rendezvous_info(vec![]);
        (
            SessionKeys::new(&a_priv, &b_pub).unwrap(),
            SessionKeys::new(&b_priv, &a_pub).unwrap(),
        )
    }

    #[test]
    fn data_records_round_trip_in_any_split() {
        let mut stream = Vec::new();
        assert_eq!(encode_data(b"hello", &mut stream), 5);
        let big = vec![7u8; MAX_DATA + 10];
        assert_eq!(encode_data(&big, &mut stream), MAX_DATA);
        assert_eq!(encode_data(b"", &mut stream), 0);
        assert_eq!(stream.len(), 2 * HEADER_LEN + 5 + MAX_DATA);
        assert_eq!(&stream[..3], &[0, 0, 5]);
        for cut in 0..HEADER_LEN + 5 {
            assert_eq!(parse(&stream[..cut]), Ok(None), "cut {cut}");
        }
        let (first, used) = parse(&stream).unwrap().unwrap();
        assert_eq!((first, used), (Record::Data(b"hello"), HEADER_LEN + 5));
        let (second, used2) = parse(&stream[used..]).unwrap().unwrap();
        assert_eq!(second, Record::Data(&big[..MAX_DATA]));
        assert_eq!(used + used2, stream.len());
    }

    #[test]
    fn a_move_opens_only_for_the_peer() {
        let (a, b) = pair();
        let direct: SocketAddr = "198.51.100.7:4000".parse().unwrap();
        let record = encode_move(&a, direct, [9; NONCE_LEN]);
        let (Record::Move(body), used) = parse(&record).unwrap().unwrap() else {
            panic!("not a move");
        };
        assert_eq!(used, MOVE_RECORD_LEN);
        assert_eq!(open_move(&b, body), Some(direct));
        // Not reflected to its sender, and not any other kind of punch message.
        assert_eq!(open_move(&a, body), None);
        let probe = wire::encode(
            &a,
            &Message {
                kind: Kind::Probe,
                flags: 0,
                nonce: [1; NONCE_LEN],
                observed: direct,
            },
        );
        assert_eq!(open_move(&b, &probe), None);
        let mut forged = *body;
        forged[40] ^= 1;
        assert_eq!(open_move(&b, &forged), None);
    }

    #[test]
    fn records_no_natt_sends_are_errors() {
        assert_eq!(parse(&[0, 0, 0]), Err(RecordError::DataLength(0)));
        assert_eq!(parse(&[0, 0x40, 1]), Err(RecordError::DataLength(MAX_DATA + 1)));
        assert_eq!(parse(&[1, 0, 63]), Err(RecordError::MoveLength(63)));
        assert_eq!(parse(&[2, 0, 1, 0]), Err(RecordError::UnknownType(2)));
        // A stream of plain bytes (an application's, not natt's records) fails at once.
        assert!(parse(b"GET / HTTP/1.1\r\n").is_err());
    }
}
