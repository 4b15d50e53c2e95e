//! [`Framer`]: the one way natt reads a message from a TCP stream, for every protocol whose
//! messages are sent back to back and tell their own length in a fixed-size header (the simple
//! protocol, STUN over TCP as RFC 8489 section 7.2.2 frames it).
//!
//! The framer reads the header, asks the protocol for the whole message's length, refuses a
//! length above its cap before reading further, and reads the rest: it never reads more than
//! one message, nor more than the cap, whatever the peer sends. The wait is bounded by the
//! stream's timeouts, which [`tcp_connect_from`](crate::reuse::tcp_connect_from) sets from the
//! caller's deadline (and servers from theirs).
//!
//! ```
//! use natt_core::frame::Framer;
//!
//! // A toy format: a one-byte header giving the body's length.
//! const FRAMER: Framer<&str> = Framer::new(1, 8, |h| match h {
//!     [n] => Ok(1 + usize::from(*n)),
//!     _ => Err("no header"),
//! });
//! let mut stream = &[2u8, b'h', b'i', 1, b'!', 200][..];
//! assert_eq!(FRAMER.read(&mut stream).unwrap(), [2, b'h', b'i']);
//! assert_eq!(FRAMER.read(&mut stream).unwrap(), [1, b'!']);
//! let e = FRAMER.read(&mut stream).unwrap_err();
//! assert_eq!(e.kind(), std::io::ErrorKind::InvalidData);
//! assert_eq!(e.to_string(), "message too long");
//! ```

use std::fmt;
use std::io::{self, Read};

/// How a protocol's messages are framed on a stream: a header of `header_len` bytes from which
/// `frame_len` tells the message's whole length (header included), at most `max_len`.
#[derive(Debug, Clone, Copy)]
pub struct Framer<E> {
    header_len: usize,
    max_len: usize,
    frame_len: fn(&[u8]) -> Result<usize, E>,
}

impl<E: fmt::Display> Framer<E> {
    /// A framer for messages whose first `header_len` bytes give their length through
    /// `frame_len` (called with exactly those bytes; its error is the reader's `InvalidData`
    /// error, with the error's text), refusing messages longer than `max_len`.
    pub const fn new(header_len: usize, max_len: usize, frame_len: fn(&[u8]) -> Result<usize, E>) -> Self {
        Framer {
            header_len,
            max_len,
            frame_len,
        }
    }

    /// Reads one message from `stream` (whose timeouts bound the wait).
    ///
    /// Errors: the stream's (`UnexpectedEof` when it ends inside a message, `WouldBlock` or
    /// `TimedOut` at its timeout), and `InvalidData` for a header that is not the protocol's
    /// or a message longer than the cap (`message too long`).
    pub fn read(&self, stream: &mut impl Read) -> io::Result<Vec<u8>> {
        self.read_after(&[], stream)
    }

    /// Reads the rest of a message whose first bytes, `head`, were already read (by a server
    /// that looked at them to tell protocols apart). Errors as [`read`](Self::read).
    pub fn read_after(&self, head: &[u8], stream: &mut impl Read) -> io::Result<Vec<u8>> {
        let mut frame = head.to_vec();
        fill(&mut frame, self.header_len, stream)?;
        let header = frame.get(..self.header_len).unwrap_or_default();
        let len = (self.frame_len)(header).map_err(invalid)?;
        if len > self.max_len {
            return Err(invalid("message too long"));
        }
        if len < frame.len() {
            return Err(invalid("message shorter than its header"));
        }
        fill(&mut frame, len, stream)?;
        Ok(frame)
    }
}

/// Reads from `stream` until `buf` holds `len` bytes (nothing if it already does).
fn fill(buf: &mut Vec<u8>, len: usize, stream: &mut impl Read) -> io::Result<()> {
    let have = buf.len();
    if have < len {
        buf.resize(len, 0);
        stream.read_exact(buf.get_mut(have..).unwrap_or_default())?;
    }
    Ok(())
}

fn invalid(e: impl fmt::Display) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Header: two bytes of body length.
    const FRAMER: Framer<&str> = Framer::new(2, 6, |h| match h {
        [hi, lo] => Ok(2 + usize::from(u16::from_be_bytes([*hi, *lo]))),
        _ => Err("no header"),
    });

    #[test]
    fn reads_one_message_at_a_time() {
        let mut s = &[0, 1, 7, 0, 0, 0, 2, 8, 9][..];
        assert_eq!(FRAMER.read(&mut s).unwrap(), [0, 1, 7]);
        assert_eq!(FRAMER.read(&mut s).unwrap(), [0, 0]);
        assert_eq!(FRAMER.read(&mut s).unwrap(), [0, 2, 8, 9]);
        assert_eq!(FRAMER.read(&mut s).unwrap_err().kind(), io::ErrorKind::UnexpectedEof);
    }

    #[test]
    fn the_cap_is_checked_before_reading_on() {
        let mut s = &[0, 5, 1, 2, 3, 4, 5][..];
        let e = FRAMER.read(&mut s).unwrap_err();
        assert_eq!(
            (e.kind(), e.to_string()),
            (io::ErrorKind::InvalidData, "message too long".into())
        );
        assert_eq!(s.len(), 5, "nothing read past the header");
    }

    #[test]
    fn after_a_head_read_elsewhere() {
        // Part of the header, all of it, or more than it.
        let mut s = &[2, 3, 4][..];
        assert_eq!(FRAMER.read_after(&[0], &mut s).unwrap(), [0, 2, 3, 4]);
        let mut s = &[3, 4][..];
        assert_eq!(FRAMER.read_after(&[0, 2], &mut s).unwrap(), [0, 2, 3, 4]);
        let mut s = &[4][..];
        assert_eq!(FRAMER.read_after(&[0, 2, 3], &mut s).unwrap(), [0, 2, 3, 4]);
        let mut s = &[][..];
        assert_eq!(
            FRAMER.read_after(&[0, 0, 3], &mut s).unwrap_err().kind(),
            io::ErrorKind::InvalidData
        );
    }

    #[test]
    fn header_errors_are_invalid_data_with_their_text() {
        const REFUSING: Framer<&str> = Framer::new(1, 10, |_| Err("not this protocol"));
        let e = REFUSING.read(&mut &[1u8][..]).unwrap_err();
        assert_eq!(
            (e.kind(), e.to_string()),
            (io::ErrorKind::InvalidData, "not this protocol".into())
        );
    }
}
