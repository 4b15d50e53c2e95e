//! Reading and writing the protocol's messages on a TCP stream. Messages are sent as they are;
//! a message's length follows from its first bytes ([`wire::message_len`]).

use std::io::{self, Read};

use crate::wire::{self, HEADER_LEN, Message, REQUEST_LEN};

/// Reads one message from `stream` (whose timeouts bound the wait).
///
/// Returns an `InvalidData` error for bytes that are not a message; never reads more than the
/// largest message.
pub fn read_message(stream: &mut impl Read) -> io::Result<Message> {
    let mut head = [0u8; HEADER_LEN];
    stream.read_exact(&mut head)?;
    read_message_after(head, stream)
}

/// Reads the rest of a message whose first [`HEADER_LEN`] bytes, `head`, were already read
/// (by a server that looked at them to tell protocols apart).
pub fn read_message_after(head: [u8; HEADER_LEN], stream: &mut impl Read) -> io::Result<Message> {
    let len = wire::message_len(&head).map_err(invalid)?;
    let mut buf = [0u8; REQUEST_LEN];
    let msg = buf.get_mut(..len).ok_or_else(|| invalid("message too long"))?;
    let (start, rest) = msg.split_at_mut(HEADER_LEN);
    start.copy_from_slice(&head);
    stream.read_exact(rest)?;
    wire::decode(msg).map_err(invalid)
}

fn invalid(e: impl std::fmt::Display) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e.to_string())
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
