//! Reading the protocol's messages from a TCP stream. Messages are sent as they are; a
//! message's length follows from its first bytes ([`wire::message_len`]), and natt-core's
//! [`Framer`] reads them, never more than the largest message.

use std::io::{self, Read};

use natt_core::frame::Framer;

use crate::wire::{self, HEADER_LEN, Message, REQUEST_LEN, WireError};

/// The protocol's framing: an 8-byte header telling the length, at most a request's length
/// (the longest message).
const FRAMER: Framer<WireError> = Framer::new(HEADER_LEN, REQUEST_LEN, wire::message_len);

/// Reads one message from `stream` (whose timeouts bound the wait).
///
/// Returns an `InvalidData` error for bytes that are not a message; never reads more than the
/// largest message.
pub fn read_message(stream: &mut impl Read) -> io::Result<Message> {
    decode(&FRAMER.read(stream)?)
}

/// Reads the rest of a message whose first [`HEADER_LEN`] bytes, `head`, were already read
/// (by a server that looked at them to tell protocols apart).
pub fn read_message_after(head: [u8; HEADER_LEN], stream: &mut impl Read) -> io::Result<Message> {
    decode(&FRAMER.read_after(&head, stream)?)
}

fn decode(msg: &[u8]) -> io::Result<Message> {
    wire::decode(msg).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{Reply, Request, TransactionId};

    #[test]
    fn reads_back_to_back_messages() {
        let req = Request {
            txid: TransactionId([3; 12]),
        };
        let rep = Reply {
            txid: TransactionId([4; 12]),
            observed: "[2001:db8::7]:9".parse().unwrap(),
        };
        let mut bytes = req.encode().to_vec();
        bytes.extend(rep.encode());
        let mut r = &bytes[..];
        assert_eq!(read_message(&mut r).unwrap(), Message::Request(req));
        assert_eq!(read_message(&mut r).unwrap(), Message::Reply(rep));
        assert_eq!(read_message(&mut r).unwrap_err().kind(), io::ErrorKind::UnexpectedEof);
    }

    #[test]
    fn garbage_is_invalid_data() {
        let mut r = &b"GET / HTTP/1.1\r\n\r\n"[..];
        assert_eq!(read_message(&mut r).unwrap_err().kind(), io::ErrorKind::InvalidData);
    }
}
