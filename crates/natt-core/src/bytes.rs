//! [`Reader`] and [`Writer`]: the one byte reader and writer of natt's binary wire formats
//! (PCP, NAT-PMP, the rendezvous token). Numbers are big-endian (network byte order).
//!
//! The reader decodes untrusted input: it takes bytes off the front of a slice and fails at
//! its end with [`Truncated`], which says where and how much was wanted, never with a panic.
//! Each format turns that into its own error (`WireError::Truncated`,
//! `TokenError::Malformed("truncated")`, ...), so the formats keep their own messages.
//!
//! ```
//! use natt_core::bytes::{Reader, Writer};
//!
//! let mut w = Writer::with_capacity(8);
//! w.u8(2).u16(0x1234).bytes(b"ab").zeros(1);
//! let bytes = w.into_vec();
//! assert_eq!(bytes, [2, 0x12, 0x34, b'a', b'b', 0]);
//!
//! let mut r = Reader::new(&bytes);
//! assert_eq!(r.u8(), Ok(2));
//! assert_eq!(r.u16(), Ok(0x1234));
//! assert_eq!(r.array::<2>(), Ok(*b"ab"));
//! let e = r.u32().unwrap_err();
//! assert_eq!((e.offset, e.wanted, e.len, e.need()), (5, 4, 6, 9));
//! // A failed read takes nothing.
//! assert_eq!(r.remaining(), 1);
//! ```

use std::fmt;

/// A read past the end of the input: `wanted` bytes at `offset` of an input of `len` bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Truncated {
    /// Where the read started.
    pub offset: usize,
    /// How many bytes it wanted.
    pub wanted: usize,
    /// The input's whole length.
    pub len: usize,
}

impl Truncated {
    /// The least input length the read needed (`offset + wanted`).
    pub fn need(&self) -> usize {
        self.offset.saturating_add(self.wanted)
    }
}

impl fmt::Display for Truncated {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "truncated: {} bytes, need {}", self.len, self.need())
    }
}

impl std::error::Error for Truncated {}

/// Reads bytes and big-endian numbers off the front of a slice, failing cleanly at its end.
///
/// A read that fails takes nothing, so a decoder may try another reading after it.
#[derive(Debug, Clone)]
pub struct Reader<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    /// A reader at the start of `data`.
    pub fn new(data: &'a [u8]) -> Self {
        Reader { data, pos: 0 }
    }

    /// How many bytes have been read.
    pub fn position(&self) -> usize {
        self.pos
    }

    /// The bytes not read yet.
    pub fn rest(&self) -> &'a [u8] {
        self.data.get(self.pos..).unwrap_or_default()
    }

    /// How many bytes are left.
    pub fn remaining(&self) -> usize {
        self.rest().len()
    }

    /// True when every byte has been read.
    pub fn is_empty(&self) -> bool {
        self.remaining() == 0
    }

    /// The next `n` bytes.
    pub fn take(&mut self, n: usize) -> Result<&'a [u8], Truncated> {
        let truncated = Truncated {
            offset: self.pos,
            wanted: n,
            len: self.data.len(),
        };
        let end = self.pos.checked_add(n).ok_or(truncated)?;
        let bytes = self.data.get(self.pos..end).ok_or(truncated)?;
        self.pos = end;
        Ok(bytes)
    }

    /// Skips `n` bytes (reserved fields).
    pub fn skip(&mut self, n: usize) -> Result<(), Truncated> {
        self.take(n).map(|_| ())
    }

    /// The next `N` bytes as an array.
    pub fn array<const N: usize>(&mut self) -> Result<[u8; N], Truncated> {
        let start = self.pos;
        let bytes = self.take(N)?;
        bytes.try_into().map_err(|_| {
            self.pos = start;
            Truncated {
                offset: start,
                wanted: N,
                len: self.data.len(),
            }
        })
    }

    /// The next byte.
    pub fn u8(&mut self) -> Result<u8, Truncated> {
        self.array::<1>().map(|[b]| b)
    }

    /// The next two bytes, big-endian.
    pub fn u16(&mut self) -> Result<u16, Truncated> {
        self.array().map(u16::from_be_bytes)
    }

    /// The next four bytes, big-endian.
    pub fn u32(&mut self) -> Result<u32, Truncated> {
        self.array().map(u32::from_be_bytes)
    }

    /// The next eight bytes, big-endian.
    pub fn u64(&mut self) -> Result<u64, Truncated> {
        self.array().map(u64::from_be_bytes)
    }
}

/// Appends bytes and big-endian numbers to a growing buffer: the [`Reader`]'s counterpart.
///
/// Every method returns the writer, so fields can be chained in wire order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Writer {
    buf: Vec<u8>,
}

impl Writer {
    /// An empty writer.
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty writer with room for `capacity` bytes.
    pub fn with_capacity(capacity: usize) -> Self {
        Writer {
            buf: Vec::with_capacity(capacity),
        }
    }

    /// Appends one byte.
    pub fn u8(&mut self, v: u8) -> &mut Self {
        self.buf.push(v);
        self
    }

    /// Appends two bytes, big-endian.
    pub fn u16(&mut self, v: u16) -> &mut Self {
        self.bytes(&v.to_be_bytes())
    }

    /// Appends four bytes, big-endian.
    pub fn u32(&mut self, v: u32) -> &mut Self {
        self.bytes(&v.to_be_bytes())
    }

    /// Appends eight bytes, big-endian.
    pub fn u64(&mut self, v: u64) -> &mut Self {
        self.bytes(&v.to_be_bytes())
    }

    /// Appends `bytes` as they are.
    pub fn bytes(&mut self, bytes: &[u8]) -> &mut Self {
        self.buf.extend_from_slice(bytes);
        self
    }

    /// Appends `n` zero bytes (reserved fields).
    pub fn zeros(&mut self, n: usize) -> &mut Self {
        self.buf.resize(self.buf.len().saturating_add(n), 0);
        self
    }

    /// Forgets what was written, keeping the room it took: a writer reused for one message
    /// after another allocates no more once it has grown to the largest.
    pub fn clear(&mut self) -> &mut Self {
        self.buf.clear();
        self
    }

    /// The bytes written so far.
    pub fn as_slice(&self) -> &[u8] {
        &self.buf
    }

    /// How many bytes have been written.
    pub fn len(&self) -> usize {
        self.buf.len()
    }

    /// True when nothing has been written.
    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    /// The bytes written.
    pub fn into_vec(self) -> Vec<u8> {
        self.buf
    }
}

impl From<Writer> for Vec<u8> {
    fn from(w: Writer) -> Vec<u8> {
        w.into_vec()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_are_big_endian_both_ways() {
        let mut w = Writer::new();
        w.u8(1).u16(0x0203).u32(0x0405_0607).u64(0x0809_0a0b_0c0d_0e0f);
        assert_eq!(w.as_slice(), &(1u8..=15).collect::<Vec<u8>>()[..]);
        let bytes = w.into_vec();
        let mut r = Reader::new(&bytes);
        assert_eq!(r.u8(), Ok(1));
        assert_eq!(r.u16(), Ok(0x0203));
        assert_eq!(r.u32(), Ok(0x0405_0607));
        assert_eq!(r.u64(), Ok(0x0809_0a0b_0c0d_0e0f));
        assert!(r.is_empty());
        assert_eq!(r.position(), 15);
    }

    #[test]
    fn reads_past_the_end_fail_cleanly_and_take_nothing() {
        let data = [1, 2, 3];
        let mut r = Reader::new(&data);
        assert_eq!(r.take(2), Ok(&data[..2]));
        assert_eq!(
            r.u16(),
            Err(Truncated {
                offset: 2,
                wanted: 2,
                len: 3
            })
        );
        assert_eq!(r.take(usize::MAX).unwrap_err().need(), usize::MAX);
        assert_eq!(r.rest(), &[3]);
        assert_eq!(r.skip(1), Ok(()));
        assert_eq!(r.u8().unwrap_err().need(), 4);
        assert_eq!(r.take(0), Ok(&[][..]));
        assert_eq!(r.u8().unwrap_err().to_string(), "truncated: 3 bytes, need 4");
    }

    #[test]
    fn zeros_and_slices() {
        let mut w = Writer::with_capacity(4);
        assert!(w.is_empty());
        w.zeros(2).bytes(&[9, 9]);
        assert_eq!(w.len(), 4);
        assert_eq!(Vec::from(w), vec![0, 0, 9, 9]);
    }
}
