//! One STUN Binding transaction over UDP, without a socket: the request, its retransmission
//! schedule (RFC 8489 section 6.2.1, on [`natt_core::retransmit::Schedule`]) and the response
//! that ends it.

#![deny(clippy::disallowed_methods)] // a protocol core: see clippy.toml

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use natt_core::Transmit;
use natt_core::retransmit::{Factor, Params, Schedule};
use rand::Rng;

use crate::message::{BindingResponse, StunError, encode_binding_request};

/// RFC 8489's default initial retransmission timeout.
pub const DEFAULT_RTO: Duration = Duration::from_millis(500);
/// Rc: the most requests sent per transaction.
pub const MAX_SENDS: u32 = 7;
/// Rm: after the last request, wait this many initial RTOs for a response.
pub const LAST_WAIT_RTOS: u32 = 16;

/// RFC 8489's retransmission schedule with the initial RTO `rto`: [`MAX_SENDS`] requests, at
/// 0, `rto`, `3 rto`, `7 rto`, ... (the interval doubling without a cap), then a wait of
/// [`LAST_WAIT_RTOS`] × `rto` for the response. With the default 500 ms: requests at 0, 0.5,
/// 1.5, 3.5, 7.5, 15.5 and 31.5 s, given up at 39.5 s.
pub const fn retransmit(rto: Duration) -> Params {
    Params {
        initial: rto,
        factor: Factor::DOUBLE,
        max_interval: None,
        max_sends: Some(MAX_SENDS),
        last_wait: Some(rto.saturating_mul(LAST_WAIT_RTOS)),
        jitter: 0.0,
    }
}

/// A Binding request to one destination and what became of it.
#[derive(Debug, Clone)]
pub struct Transaction {
    /// Where the request goes.
    pub destination: SocketAddr,
    /// Its transaction id.
    pub txid: [u8; 12],
    payload: Vec<u8>,
    schedule: Schedule,
    /// The response, where it came from and when it arrived.
    pub response: Option<(SocketAddr, BindingResponse, Instant)>,
}

impl Transaction {
    /// A Binding request (with CHANGE-REQUEST `(ip, port)` when given) to `destination`, first
    /// sent at `now`, retransmitted after `rto`, `2 rto`, `4 rto`, ... for at most
    /// [`MAX_SENDS`] sends ([`retransmit`]`(rto)`).
    ///
    /// Its transaction id is drawn from `rng` (the driver's generator);
    /// [`with_txid`](Self::with_txid) takes the id itself.
    pub fn new(
        destination: SocketAddr,
        change: Option<(bool, bool)>,
        rto: Duration,
        now: Instant,
        rng: &mut impl Rng,
    ) -> Result<Self, StunError> {
        Self::with_txid(rng.random(), destination, change, rto, now)
    }

    /// As [`new`](Self::new), with the transaction id `txid` (random, from the caller's
    /// generator).
    pub fn with_txid(
        txid: [u8; 12],
        destination: SocketAddr,
        change: Option<(bool, bool)>,
        rto: Duration,
        now: Instant,
    ) -> Result<Self, StunError> {
        Ok(Transaction {
            destination,
            txid,
            payload: encode_binding_request(txid, change)?,
            schedule: Schedule::new(retransmit(rto), now),
            response: None,
        })
    }

    /// Retransmits without end (until the caller's deadline) instead of RFC 8489's limit.
    pub fn unlimited(mut self) -> Self {
        self.schedule.set_max_sends(None);
        self
    }

    /// The request, if it is due at `now`.
    pub fn poll_transmit(&mut self, now: Instant) -> Option<Transmit> {
        if self.response.is_some() || !self.schedule.is_due(now) {
            return None;
        }
        self.schedule.on_sent(now);
        Some(Transmit {
            destination: self.destination,
            payload: self.payload.clone(),
        })
    }

    /// The request, to send again now outside its schedule (the exchange hurries the servers
    /// that have not answered once another has: [`crate::exchange::HURRY_MIN`]). Unanswered
    /// only: `None` once answered.
    pub fn request(&self) -> Option<Transmit> {
        self.response.is_none().then(|| Transmit {
            destination: self.destination,
            payload: self.payload.clone(),
        })
    }

    /// When this transaction next needs attention: a retransmission, or (after the last
    /// request) the moment it gives up.
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.response.is_some() {
            None
        } else {
            self.schedule.poll_timeout()
        }
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
        Some(at.saturating_duration_since(self.schedule.last_sent()?))
    }

    /// Answered, or given up on at `now`.
    pub fn is_done(&self, now: Instant) -> bool {
        self.response.is_some() || self.schedule.is_exhausted(now)
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
#[allow(clippy::disallowed_methods)]
mod tests {
    use super::*;
    use crate::message::{decode_response, encode_success};
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    fn rng() -> StdRng {
        StdRng::seed_from_u64(1)
    }

    #[test]
    fn rfc8489_schedule() {
        let t0 = Instant::now();
        let rto = Duration::from_millis(500);
        let mut t = Transaction::new("203.0.113.10:3478".parse().unwrap(), None, rto, t0, &mut rng()).unwrap();
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
    fn unlimited_keeps_doubling_until_the_deadline() {
        let t0 = Instant::now();
        let rto = Duration::from_millis(300);
        let mut t = Transaction::new("203.0.113.10:3478".parse().unwrap(), None, rto, t0, &mut rng())
            .unwrap()
            .unlimited();
        let mut sent_at = Vec::new();
        let mut now = t0;
        while sent_at.len() < 10 {
            assert!(!t.is_done(now));
            if t.poll_transmit(now).is_some() {
                sent_at.push((now - t0).as_millis());
            }
            now = t.poll_timeout().unwrap();
        }
        assert_eq!(sent_at, [0, 300, 900, 2100, 4500, 9300, 18900, 38100, 76500, 153300]);
    }

    #[test]
    fn matches_only_its_own_transaction() {
        let t0 = Instant::now();
        let server = "203.0.113.10:3478".parse().unwrap();
        let mut t = Transaction::new(server, None, DEFAULT_RTO, t0, &mut rng()).unwrap();
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
        let mut t = Transaction::new(server, None, DEFAULT_RTO, t0, &mut rng()).unwrap();
        t.poll_transmit(t0).unwrap();
        let t1 = t0 + DEFAULT_RTO * 3;
        t.poll_transmit(t0 + DEFAULT_RTO).unwrap();
        t.poll_transmit(t1).unwrap();
        let mine = decode_response(&encode_success(t.txid, server, None, None).unwrap()).unwrap();
        assert!(t.handle(t1 + Duration::from_millis(3), server, &mine));
        assert_eq!(t.rtt(), Some(Duration::from_millis(3)));
    }
}
