//! The records of a TCP stream through a TURN relay, as pure encode and parse functions.
//!
//! A TCP connection that starts through a relay (natt's `connect::tcp`) carries the
//! application's bytes in records, so that it can move to a direct stream that opens later
//! without losing, repeating or reordering a byte, and so that it can end one direction
//! without a FIN (a TURN server such as coturn ends a relayed connection as a whole on one).
//! A stream that is direct from the start carries plain bytes, with no records.
//!
//! | offset | size   | field                                                              |
//! |-------:|-------:|--------------------------------------------------------------------|
//! | 0      | 1      | type: `0` data, `1` move, `2` end, `3` ack                         |
//! | 1      | 2      | length of the body, big-endian: data 1 to [`MAX_DATA`], move 64, end and ack 0 |
//! | 3      | length | body: the application's bytes; a move's, a punch message of kind move |
//!
//! - **data**: the application's bytes.
//! - **move**: the sender's next bytes are on the direct stream. Before it, both sides agreed
//!   on that stream by the punch and each wrote a *ready* message on it, a punch message
//!   ([`crate::wire`]) of kind [`Kind::Move`], signed, naming the far end as its sender sees it
//!   ([`encode_ready`], [`open_ready`]). The move record's body is the sender's ready message
//!   again, so the receiver takes it only for the stream on which that very message arrived:
//!   neither the relay nor anyone else can make a side leave the relayed stream, or move it
//!   to another stream than the one both sides hold.
//! - **end**: the sender writes no more data (as a FIN would say).
//! - **ack**: the sender read the peer's move or end record: everything the peer wrote on
//!   the relayed stream arrived, so the peer may close it (closing it earlier could lose bytes
//!   still in the relay).
//!
//! After its move or end record a side writes only acks on the relayed stream.

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
const END: u8 = 2;
const ACK: u8 = 3;

/// One record, borrowed from the bytes it was parsed from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Record<'a> {
    /// The application's bytes.
    Data(&'a [u8]),
    /// The sender's next bytes are on the direct stream: the body, the sender's ready message,
    /// to open with [`open_ready`].
    Move(&'a [u8; MESSAGE_LEN]),
    /// The sender writes no more data.
    End,
    /// The sender read our move or end record.
    Ack,
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
    /// An end or ack record with a body.
    #[error("an end or ack record of {0} bytes (0 expected)")]
    ControlLength(usize),
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
        END | ACK if len != 0 => return Err(RecordError::ControlLength(len)),
        DATA | MOVE | END | ACK => {}
        other => return Err(RecordError::UnknownType(other)),
    }
    let Some(body) = input.get(HEADER_LEN..HEADER_LEN + len) else {
        return Ok(None);
    };
    let record = match kind {
        DATA => Record::Data(body),
        END => Record::End,
        ACK => Record::Ack,
        _ => match body.first_chunk::<MESSAGE_LEN>() {
            Some(m) => Record::Move(m),
            None => return Ok(None),
        },
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

/// Our ready message, written first on the direct stream both sides agreed on: a punch
/// message of kind move, signed with our key, naming the stream's far end as we see it
/// (`direct_peer`), with a fresh random `nonce`.
pub fn encode_ready(keys: &SessionKeys, direct_peer: SocketAddr, nonce: [u8; NONCE_LEN]) -> [u8; MESSAGE_LEN] {
    wire::encode(
        keys,
        &Message {
            kind: Kind::Move,
            flags: 0,
            nonce,
            observed: direct_peer,
        },
    )
}

/// The peer's ready message (read on the direct stream, or as a move record's body): the
/// address it saw us at and its nonce, if `body` is the peer's message of kind move of this
/// session; `None` for anything else. The caller checks the address is one of ours
/// (`Paths::sees_us_directly`), and a move record's nonce against the ready message's.
pub fn open_ready(keys: &SessionKeys, body: &[u8; MESSAGE_LEN]) -> Option<(SocketAddr, [u8; NONCE_LEN])> {
    wire::open(keys, body)
        .filter(|m| m.kind == Kind::Move)
        .map(|m| (m.observed, m.nonce))
}

/// The move record to write last on the relayed stream: our ready message as its body.
pub fn encode_move(ready: &[u8; MESSAGE_LEN]) -> [u8; MOVE_RECORD_LEN] {
    let mut record = [0u8; MOVE_RECORD_LEN];
    let [hi, lo] = u16::try_from(MESSAGE_LEN).unwrap_or(u16::MAX).to_be_bytes();
    let (head, body) = record.split_at_mut(HEADER_LEN);
    head.copy_from_slice(&[MOVE, hi, lo]);
    body.copy_from_slice(ready);
    record
}

/// The end record: we write no more data.
pub fn encode_end() -> [u8; HEADER_LEN] {
    [END, 0, 0]
}

/// The ack record: we read the peer's move or end record.
pub fn encode_ack() -> [u8; HEADER_LEN] {
    [ACK, 0, 0]
}

#[cfg(test)]
#[allow(clippy::disallowed_methods)]
mod tests {
    use super::*;
    use crate::wire::tests::pair;

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
        let ready = encode_ready(&a, direct, [9; NONCE_LEN]);
        let record = encode_move(&ready);
        let (Record::Move(body), used) = parse(&record).unwrap().unwrap() else {
            panic!("not a move");
        };
        assert_eq!(used, MOVE_RECORD_LEN);
        assert_eq!(body, &ready);
        assert_eq!(open_ready(&b, body), Some((direct, [9; NONCE_LEN])));
        // Not reflected to its sender, and not any other kind of punch message.
        assert_eq!(open_ready(&a, body), None);
        let probe = wire::encode(
            &a,
            &Message {
                kind: Kind::Probe,
                flags: 0,
                nonce: [1; NONCE_LEN],
                observed: direct,
            },
        );
        assert_eq!(open_ready(&b, &probe), None);
        let mut forged = *body;
        forged[40] ^= 1;
        assert_eq!(open_ready(&b, &forged), None);
    }

    #[test]
    fn records_no_natt_sends_are_errors() {
        assert_eq!(parse(&[0, 0, 0]), Err(RecordError::DataLength(0)));
        assert_eq!(parse(&[0, 0x40, 1]), Err(RecordError::DataLength(MAX_DATA + 1)));
        assert_eq!(parse(&[1, 0, 63]), Err(RecordError::MoveLength(63)));
        assert_eq!(parse(&[2, 0, 1, 0]), Err(RecordError::ControlLength(1)));
        assert_eq!(parse(&[4, 0, 0]), Err(RecordError::UnknownType(4)));
        assert_eq!(parse(&encode_end()), Ok(Some((Record::End, HEADER_LEN))));
        assert_eq!(parse(&encode_ack()), Ok(Some((Record::Ack, HEADER_LEN))));
        // A stream of plain bytes (an application's, not natt's records) fails at once.
        assert!(parse(b"GET / HTTP/1.1\r\n").is_err());
    }
}
