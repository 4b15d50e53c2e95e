//! One STUN Binding transaction over UDP, without a socket: the request, its retransmission
//! schedule (RFC 8489 section 6.2.1) and the response that ends it.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use natt_core::Transmit;

use crate::message::{BindingResponse, StunError, encode_binding_request};

/// RFC 8489's default initial retransmission timeout.
pub const DEFAULT_RTO: Duration = Duration::from_millis(500);
/// Rc: the most requests sent per transaction.
pub const MAX_SENDS: u32 = 7;
/// Rm: after the last request, wait this many initial RTOs for a response.
pub const LAST_WAIT_RTOS: u32 = 16;

/// A Binding request to one destination and what became of it.
#[derive(Debug, Clone)]
pub struct Transaction {
    /// Where the request goes.
    pub destination: SocketAddr,
    /// Its transaction id.
    pub txid: [u8; 12],
    payload: Vec<u8>,
    initial_rto: Duration,
    rto: Duration,
    next_send: Instant,
    sends: u32,
    max_sends: u32,
    last_sent: Option<Instant>,
    /// The response, where it came from and when it arrived.
    pub response: Option<(SocketAddr, BindingResponse, Instant)>,
}

impl Transaction {
    /// A Binding request (with CHANGE-REQUEST `(ip, port)` when given) to `destination`, first
    /// sent at `now`, retransmitted after `rto`, `2 rto`, `4 rto`, ... for at most
    /// [`MAX_SENDS`] sends.
    pub fn new(
        destination: SocketAddr,
        change: Option<(bool, bool)>,
        rto: Duration,
        now: Instant,
    ) -> Result<Self, StunError> {
        let txid: [u8; 12] = rand::random();
        Ok(Transaction {
            destination,
            txid,
            payload: encode_binding_request(txid, change)?,
            initial_rto: rto,
            rto,
            next_send: now,
            sends: 0,
            max_sends: MAX_SENDS,
            last_sent: None,
            response: None,
        })
    }

    /// Retransmits without end (until the caller's deadline) instead of RFC 8489's limit.
    pub fn unlimited(mut self) -> Self {
        self.max_sends = u32::MAX;
        self
    }

    /// The request, if it is due at `now`.
    pub fn poll_transmit(&mut self, now: Instant) -> Option<Transmit> {
        if self.response.is_some() || self.sends >= self.max_sends || now < self.next_send {
            return None;
        }
        self.last_sent = Some(now);
        self.sends += 1;
        self.next_send = now + self.rto;
        self.rto = self.rto.saturating_mul(2);
        Some(Transmit {
            destination: self.destination,
            payload: self.payload.clone(),
        })
    }

    /// When this transaction next needs attention: a retransmission, or (after the last
    /// request) the moment it gives up.
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.response.is_some() {
            None
        } else if self.sends < self.max_sends {
            Some(self.next_send)
        } else {
            Some(self.give_up_at())
        }
    }

    fn give_up_at(&self) -> Instant {
        // next_send is one RTO after the last request; RFC 8489 waits Rm * initial RTO.
        self.next_send - self.rto / 2 + self.initial_rto * LAST_WAIT_RTOS
    }

    /// Takes `response` if it answers this transaction (same transaction id).
    pub fn handle(&mut self, now: Instant, from: SocketAddr, response: &BindingResponse) -> bool {
        if response.txid != self.txid {
            return false;
        }
        if self.response.is_none() {
            self.response = Some((from, response.clone(), now));
        }
        true
    }

    /// The round trip: the time from the last request sent to the response. A response to a
    /// retransmitted request cannot be timed exactly (Karn's problem); this is a lower bound,
    /// exact unless the round trip exceeds the retransmission interval. Timing from the first
    /// request instead would count every lost request as round trip, and stretch the windows
    /// that scale with it (grace, filtering check) to seconds on a lossy link.
    pub fn rtt(&self) -> Option<Duration> {
        let (_, _, at) = self.response.as_ref()?;
        Some(at.saturating_duration_since(self.last_sent?))
    }

    /// Answered, or given up on at `now`.
    pub fn is_done(&self, now: Instant) -> bool {
        self.response.is_some() || (self.sends >= self.max_sends && now >= self.give_up_at())
    }

    /// The success response, if one arrived.
    pub fn success(&self) -> Option<&crate::message::BindingSuccess> {
        self.response.as_ref().and_then(|(_, r, _)| r.result.as_ref().ok())
    }

    /// The address the response came from, if one arrived.
    pub fn answered_from(&self) -> Option<SocketAddr> {
        self.response.as_ref().map(|(from, _, _)| *from)
    }

    /// The error code of an error response, if one arrived.
    pub fn error_code(&self) -> Option<u16> {
        self.response
            .as_ref()
            .and_then(|(_, r, _)| r.result.as_ref().err().map(|(c, _)| *c))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::{decode_response, encode_success};

    #[test]
    fn rfc8489_schedule() {
        let t0 = Instant::now();
        let rto = Duration::from_millis(500);
        let mut t = Transaction::new("203.0.113.10:3478".parse().unwrap(), None, rto, t0).unwrap();
        let mut sent_at = Vec::new();
        let mut now = t0;
        while let Some(next) = t.poll_timeout() {
            if t.is_done(now) {
                break;
            }
            if t.poll_transmit(now).is_some() {
                sent_at.push((now - t0).as_millis());
            }
            now = next.max(now);
            if sent_at.len() > 10 {
                break;
            }
        }
        assert_eq!(sent_at, [0, 500, 1500, 3500, 7500, 15500, 31500]);
        // Gives up Rm * RTO after the last request: 31.5 s + 8 s.
        assert_eq!((now - t0).as_millis(), 39500);
    }

    #[test]
    fn matches_only_its_own_transaction() {
        let t0 = Instant::now();
        let server = "203.0.113.10:3478".parse().unwrap();
        let mut t = Transaction::new(server, None, DEFAULT_RTO, t0).unwrap();
        t.poll_transmit(t0).unwrap();
        let other = decode_response(&encode_success([0; 12], server, None, None).unwrap()).unwrap();
        assert!(!t.handle(t0, server, &other));
        let mine = decode_response(&encode_success(t.txid, server, None, None).unwrap()).unwrap();
        assert!(t.handle(t0 + Duration::from_millis(20), server, &mine));
        assert_eq!(t.rtt(), Some(Duration::from_millis(20)));
        assert!(t.is_done(t0) && t.poll_transmit(t0 + DEFAULT_RTO).is_none());
    }

    #[test]
    fn lost_requests_do_not_count_as_round_trip() {
        let t0 = Instant::now();
        let server = "203.0.113.10:3478".parse().unwrap();
        let mut t = Transaction::new(server, None, DEFAULT_RTO, t0).unwrap();
        t.poll_transmit(t0).unwrap();
        let t1 = t0 + DEFAULT_RTO * 3;
        t.poll_transmit(t0 + DEFAULT_RTO).unwrap();
        t.poll_transmit(t1).unwrap();
        let mine = decode_response(&encode_success(t.txid, server, None, None).unwrap()).unwrap();
        assert!(t.handle(t1 + Duration::from_millis(3), server, &mine));
        assert_eq!(t.rtt(), Some(Duration::from_millis(3)));
    }
}
