//! Reading a fuzz input as a script of operations, and writing such scripts for seeds.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::{Duration, Instant};

/// A fuzz input read from the front. Every read past the end gives `None` or an empty slice:
/// any input is a valid script, possibly a short one.
pub struct Input<'a>(&'a [u8]);

impl<'a> Input<'a> {
    /// A reader over `data`.
    pub fn new(data: &'a [u8]) -> Self {
        Input(data)
    }

    /// True when nothing is left.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The next byte.
    pub fn u8(&mut self) -> Option<u8> {
        let (&b, rest) = self.0.split_first()?;
        self.0 = rest;
        Some(b)
    }

    /// The next two bytes, big-endian.
    pub fn u16(&mut self) -> Option<u16> {
        let b = self.bytes(2)?;
        Some(u16::from_be_bytes([b[0], b[1]]))
    }

    /// Exactly `n` bytes, or `None` (and nothing is consumed) when fewer are left.
    pub fn bytes(&mut self, n: usize) -> Option<&'a [u8]> {
        if n > self.0.len() {
            return None;
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Some(head)
    }

    /// `N` bytes as an array, zero-padded when fewer are left.
    pub fn array<const N: usize>(&mut self) -> [u8; N] {
        let mut out = [0u8; N];
        let n = N.min(self.0.len());
        out[..n].copy_from_slice(&self.0[..n]);
        self.0 = &self.0[n..];
        out
    }

    /// A length-prefixed chunk: a big-endian `u16` length, then that many bytes (fewer when
    /// the input ends first).
    pub fn chunk(&mut self) -> &'a [u8] {
        let len = usize::from(self.u16().unwrap_or(0)).min(self.0.len());
        let (head, rest) = self.0.split_at(len);
        self.0 = rest;
        head
    }

    /// Everything left.
    pub fn rest(&mut self) -> &'a [u8] {
        std::mem::take(&mut self.0)
    }

    /// An address: `table[b]` for a selector byte `b` below the table's length, else one
    /// spelled out in the input (IPv4 for even `b`, IPv6 for odd `b`).
    pub fn addr(&mut self, table: &[SocketAddr]) -> SocketAddr {
        let b = usize::from(self.u8().unwrap_or(0));
        if let Some(a) = table.get(b) {
            return *a;
        }
        if b % 2 == 0 {
            let ip: [u8; 4] = self.array();
            SocketAddr::new(IpAddr::V4(Ipv4Addr::from(ip)), u16::from_be_bytes(self.array()))
        } else {
            let ip: [u8; 16] = self.array();
            SocketAddr::new(IpAddr::V6(Ipv6Addr::from(ip)), u16::from_be_bytes(self.array()))
        }
    }
}

/// The fuzzed clock: starts at a real instant and only moves forward, by at most about nine
/// hours per step (the drivers never see time go back, and the deadline bounds how far).
pub struct Clock {
    /// The current time.
    pub now: Instant,
}

impl Clock {
    /// A clock at the real current time.
    pub fn start() -> Self {
        Clock { now: Instant::now() }
    }

    /// Moves forward by `v` milliseconds, or by `v & 0x7fff` seconds when the top bit is set.
    pub fn advance(&mut self, v: u16) {
        let d = if v & 0x8000 != 0 {
            Duration::from_secs(u64::from(v & 0x7fff))
        } else {
            Duration::from_millis(u64::from(v))
        };
        self.now += d;
    }
}

/// Writes scripts for seed corpora, in the format [`Input`] reads.
#[derive(Default, Clone)]
pub struct Script(pub Vec<u8>);

impl Script {
    /// An empty script.
    pub fn new() -> Self {
        Self::default()
    }

    /// One byte.
    pub fn u8(mut self, b: u8) -> Self {
        self.0.push(b);
        self
    }

    /// Two bytes, big-endian.
    pub fn u16(mut self, v: u16) -> Self {
        self.0.extend_from_slice(&v.to_be_bytes());
        self
    }

    /// Raw bytes.
    pub fn raw(mut self, b: &[u8]) -> Self {
        self.0.extend_from_slice(b);
        self
    }

    /// A length-prefixed chunk.
    pub fn chunk(self, b: &[u8]) -> Self {
        let len = u16::try_from(b.len()).unwrap_or(u16::MAX);
        self.u16(len).raw(&b[..usize::from(len)])
    }

    /// The bytes.
    pub fn build(self) -> Vec<u8> {
        self.0
    }
}
