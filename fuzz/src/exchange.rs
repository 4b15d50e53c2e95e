//! Driving a socket-free [`UdpExchange`] from a fuzz script, as `natt_core::udp::drive` does
//! with a real socket: time only moves forward, every due datagram is sent at once, and the
//! exchange is left alone once it has a result (or `finish`ed at the deadline, the end of the
//! script).
//!
//! Script operations (one byte each, then their arguments):
//!
//! | op | arguments                                   | what                                         |
//! |---:|---------------------------------------------|----------------------------------------------|
//! | 0  | u16 time                                    | advance the clock ([`Clock::advance`])       |
//! | 1  |                                             | send every datagram due (`poll_transmit`)    |
//! | 2  | from, chunk                                 | a raw datagram                               |
//! | 3  | index, from, chunk                          | the chunk, patched to answer sent datagram `index` (its transaction id) |
//! | 4  | index, from, observed, flags, other, origin, u16 code | a well-formed answer to sent datagram `index` |
//! | 5  |                                             | `poll_result`; a result ends the script      |
//! | 6  |                                             | `poll_timeout`                               |
//! | 7  |                                             | `finish` (the deadline) ends the script      |
//!
//! Addresses are [`Input::addr`] selectors into the target's address table.

use std::net::SocketAddr;

use natt_core::{MappedSocketAddr, TechniqueError, Transmit, UdpExchange};

use crate::input::{Clock, Input, Script};

/// The most datagrams one `poll_transmit` loop may yield at one instant: the real driver loops
/// `while let Some(t) = poll_transmit(now)`, so an exchange that never says `None` would flood.
pub const MAX_DRAIN: usize = 512;

/// Operation codes.
pub mod op {
    /// Advance the clock.
    pub const ADVANCE: u8 = 0;
    /// Drain `poll_transmit`.
    pub const TRANSMIT: u8 = 1;
    /// A raw datagram.
    pub const RAW: u8 = 2;
    /// A datagram patched to answer a sent one.
    pub const PATCHED: u8 = 3;
    /// A well-formed answer.
    pub const ANSWER: u8 = 4;
    /// `poll_result`.
    pub const RESULT: u8 = 5;
    /// `poll_timeout`.
    pub const TIMEOUT: u8 = 6;
    /// `finish`.
    pub const FINISH: u8 = 7;
    /// How many operations there are (op bytes are taken modulo this).
    pub const COUNT: u8 = 8;
}

/// A well-formed answer's description (op 4).
#[derive(Debug, Clone, Copy)]
pub struct Answer {
    /// The address the server saw.
    pub observed: SocketAddr,
    /// RFC 5780 OTHER-ADDRESS, if any.
    pub other: Option<SocketAddr>,
    /// RFC 5780 RESPONSE-ORIGIN, if any.
    pub origin: Option<SocketAddr>,
    /// An error response with this code instead of a success.
    pub error: Option<u16>,
}

/// What the driver saw, for the invariants.
#[derive(Default, Debug)]
pub struct Log {
    /// Every datagram the exchange sent, in order.
    pub sent: Vec<Transmit>,
    /// Every datagram the exchange accepted (`handle_datagram` returned true): source, bytes.
    pub accepted: Vec<(SocketAddr, Vec<u8>)>,
}

/// The protocol-specific parts of a target.
pub trait Target {
    /// The exchange.
    type Exchange: UdpExchange;

    /// The exchange under test.
    fn exchange(&mut self) -> &mut Self::Exchange;

    /// The addresses selectors pick from.
    fn addresses(&self) -> &[SocketAddr];

    /// `template` made into an answer to `request` (one of ours): its transaction id copied in.
    fn patch(&self, request: &[u8], template: &[u8]) -> Vec<u8>;

    /// A well-formed answer to `request`, or `None` when this protocol cannot say it.
    fn answer(&self, request: &[u8], answer: &Answer) -> Option<Vec<u8>>;

    /// Checks a datagram the exchange sent (already appended to `log.sent`).
    fn check_transmit(&mut self, t: &Transmit, log: &Log);

    /// Checks the exchange's result (from `poll_result`, or from `finish` when `finished`).
    fn check_result(&mut self, result: &Result<Vec<MappedSocketAddr>, TechniqueError>, log: &Log, finished: bool);
}

/// Runs the script in `input` against `target`, starting at `clock`.
pub fn drive<T: Target>(target: &mut T, input: &mut Input<'_>, mut clock: Clock) -> Log {
    let mut log = Log::default();
    while let Some(code) = input.u8() {
        match code % op::COUNT {
            op::ADVANCE => clock.advance(input.u16().unwrap_or(0)),
            op::TRANSMIT => {
                let mut n = 0;
                while let Some(t) = target.exchange().poll_transmit(clock.now) {
                    n += 1;
                    assert!(n <= MAX_DRAIN, "poll_transmit never says None at one instant");
                    log.sent.push(t.clone());
                    target.check_transmit(&t, &log);
                }
            }
            op::RAW => {
                let from = input.addr(target.addresses());
                let data = input.chunk().to_vec();
                deliver(target, &mut log, &clock, from, data);
            }
            op::PATCHED => {
                let idx = usize::from(input.u8().unwrap_or(0));
                let from = input.addr(target.addresses());
                let template = input.chunk();
                let Some(request) = nth_sent(&log, idx) else { continue };
                let data = target.patch(&request, template);
                deliver(target, &mut log, &clock, from, data);
            }
            op::ANSWER => {
                let idx = usize::from(input.u8().unwrap_or(0));
                let table = target.addresses();
                let from = input.addr(table);
                let observed = input.addr(table);
                let flags = input.u8().unwrap_or(0);
                let other = input.addr(table);
                let origin = input.addr(table);
                let code = input.u16().unwrap_or(0);
                let a = Answer {
                    observed,
                    other: (flags & 1 != 0).then_some(other),
                    origin: (flags & 2 != 0).then_some(origin),
                    error: (flags & 4 != 0).then_some(code),
                };
                let Some(request) = nth_sent(&log, idx) else { continue };
                if let Some(data) = target.answer(&request, &a) {
                    deliver(target, &mut log, &clock, from, data);
                }
            }
            op::RESULT => {
                if let Some(r) = target.exchange().poll_result(clock.now) {
                    target.check_result(&r, &log, false);
                    return log;
                }
            }
            op::TIMEOUT => {
                let _ = target.exchange().poll_timeout();
            }
            _ => break,
        }
    }
    let r = target.exchange().finish();
    target.check_result(&r, &log, true);
    log
}

fn nth_sent(log: &Log, idx: usize) -> Option<Vec<u8>> {
    if log.sent.is_empty() {
        return None;
    }
    // Count from the latest: small indexes are the fresh transactions.
    let i = log.sent.len() - 1 - idx % log.sent.len();
    Some(log.sent[i].payload.clone())
}

fn deliver<T: Target>(target: &mut T, log: &mut Log, clock: &Clock, from: SocketAddr, data: Vec<u8>) {
    if target.exchange().handle_datagram(clock.now, from, &data) {
        log.accepted.push((from, data));
    }
}

/// Seed-script helpers.
pub trait ScriptExt {
    /// Op 0.
    fn advance(self, v: u16) -> Self;
    /// Op 1.
    fn transmit(self) -> Self;
    /// Op 2, `from` a table index.
    fn raw_datagram(self, from: u8, data: &[u8]) -> Self;
    /// Op 3.
    fn patched(self, idx: u8, from: u8, template: &[u8]) -> Self;
    /// Op 4 with table indexes; `error` makes it an error response.
    fn answer(self, idx: u8, from: u8, observed: u8, other: Option<u8>, origin: Option<u8>, error: Option<u16>)
    -> Self;
    /// Op 5.
    fn result(self) -> Self;
    /// Op 6.
    fn timeout(self) -> Self;
    /// Op 7.
    fn finish(self) -> Self;
}

impl ScriptExt for Script {
    fn advance(self, v: u16) -> Self {
        self.u8(op::ADVANCE).u16(v)
    }
    fn transmit(self) -> Self {
        self.u8(op::TRANSMIT)
    }
    fn raw_datagram(self, from: u8, data: &[u8]) -> Self {
        self.u8(op::RAW).u8(from).chunk(data)
    }
    fn patched(self, idx: u8, from: u8, template: &[u8]) -> Self {
        self.u8(op::PATCHED).u8(idx).u8(from).chunk(template)
    }
    fn answer(
        self,
        idx: u8,
        from: u8,
        observed: u8,
        other: Option<u8>,
        origin: Option<u8>,
        error: Option<u16>,
    ) -> Self {
        let flags = u8::from(other.is_some()) | u8::from(origin.is_some()) << 1 | u8::from(error.is_some()) << 2;
        self.u8(op::ANSWER)
            .u8(idx)
            .u8(from)
            .u8(observed)
            .u8(flags)
            .u8(other.unwrap_or(0))
            .u8(origin.unwrap_or(0))
            .u16(error.unwrap_or(0))
    }
    fn result(self) -> Self {
        self.u8(op::RESULT)
    }
    fn timeout(self) -> Self {
        self.u8(op::TIMEOUT)
    }
    fn finish(self) -> Self {
        self.u8(op::FINISH)
    }
}
