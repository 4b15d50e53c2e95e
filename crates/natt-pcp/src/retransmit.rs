//! When to send a request again while no answer comes: each protocol's own schedule, which the
//! caller's deadline cuts short.
//!
//! - NAT-PMP (RFC 6886 section 3.1): 250 ms, doubling each time, nine attempts at most.
//! - PCP (RFC 6887 section 8.1.1): IRT 3 s, MRT 1024 s, no limit on count or duration, each
//!   interval with ±10 % random jitter: `RT = (1 + RAND) * min(2 * RTprev, MRT)`.

use std::time::{Duration, Instant};

/// NAT-PMP's first retransmission timeout.
pub const NAT_PMP_INITIAL: Duration = Duration::from_millis(250);
/// NAT-PMP's number of attempts before giving up on a gateway.
pub const NAT_PMP_ATTEMPTS: u32 = 9;
/// PCP's initial retransmission time (IRT).
pub const PCP_IRT: Duration = Duration::from_secs(3);
/// PCP's maximum retransmission time (MRT).
pub const PCP_MRT: Duration = Duration::from_secs(1024);

/// A retransmission schedule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Schedule {
    /// RFC 6886's.
    NatPmp,
    /// RFC 6887's.
    Pcp,
}

/// Where PCP's random jitter factor (`RAND`, -0.1 to +0.1) comes from.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Jitter {
    /// Uniformly random, as the RFC asks.
    Random,
    /// Always this value (tests).
    Fixed(f64),
}

impl Jitter {
    fn sample(self) -> f64 {
        match self {
            Jitter::Random => rand::random_range(-0.1..=0.1),
            Jitter::Fixed(f) => f.clamp(-0.1, 0.1),
        }
    }
}

/// The retransmission state of one request.
#[derive(Debug, Clone)]
pub struct Retransmit {
    schedule: Schedule,
    jitter: Jitter,
    attempts: u32,
    /// The last interval waited (PCP doubles it).
    interval: Duration,
    /// When the next attempt is due; `None` once the schedule gave up.
    next: Option<Instant>,
}

impl Retransmit {
    /// A request due at once.
    pub fn new(schedule: Schedule, jitter: Jitter, now: Instant) -> Self {
        Retransmit {
            schedule,
            jitter,
            attempts: 0,
            interval: Duration::ZERO,
            next: Some(now),
        }
    }

    /// True when an attempt is due at `now`.
    pub fn due(&self, now: Instant) -> bool {
        self.next.is_some_and(|t| now >= t)
    }

    /// When the next attempt is due (`None`: no more attempts).
    pub fn next(&self) -> Option<Instant> {
        self.next
    }

    /// How many attempts were made.
    pub fn attempts(&self) -> u32 {
        self.attempts
    }

    /// Records an attempt made at `now` and schedules the next.
    pub fn sent(&mut self, now: Instant) {
        self.attempts = self.attempts.saturating_add(1);
        match self.schedule {
            Schedule::NatPmp => {
                if self.attempts >= NAT_PMP_ATTEMPTS {
                    self.next = None;
                    return;
                }
                self.interval = if self.interval.is_zero() {
                    NAT_PMP_INITIAL
                } else {
                    self.interval.saturating_mul(2)
                };
            }
            Schedule::Pcp => {
                let base = if self.interval.is_zero() {
                    PCP_IRT
                } else {
                    self.interval.saturating_mul(2).min(PCP_MRT)
                };
                self.interval = base.mul_f64(1.0 + self.jitter.sample());
            }
        }
        self.next = now.checked_add(self.interval);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn offsets(schedule: Schedule, jitter: Jitter, n: usize) -> Vec<Duration> {
        let t0 = Instant::now();
        let mut r = Retransmit::new(schedule, jitter, t0);
        let mut out = Vec::new();
        for _ in 0..n {
            let Some(at) = r.next() else { break };
            assert!(r.due(at));
            out.push(at - t0);
            r.sent(at);
        }
        out
    }

    #[test]
    fn nat_pmp_doubles_from_250_ms_nine_times() {
        let ms: Vec<u128> = offsets(Schedule::NatPmp, Jitter::Random, 20)
            .iter()
            .map(Duration::as_millis)
            .collect();
        assert_eq!(ms, [0, 250, 750, 1750, 3750, 7750, 15750, 31750, 63750]);
    }

    #[test]
    fn pcp_starts_at_3_s_and_doubles_to_1024_s() {
        let s: Vec<u64> = offsets(Schedule::Pcp, Jitter::Fixed(0.0), 14)
            .iter()
            .map(Duration::as_secs)
            .collect();
        assert_eq!(s[..6], [0, 3, 9, 21, 45, 93]);
        // Capped at MRT: 3 * 2^9 = 1536 > 1024.
        let gaps: Vec<u64> = s.windows(2).map(|w| w[1] - w[0]).collect();
        assert_eq!(gaps[8..], [768, 1024, 1024, 1024, 1024]);
    }

    #[test]
    fn pcp_jitter_stays_within_ten_percent() {
        for _ in 0..100 {
            let first = offsets(Schedule::Pcp, Jitter::Random, 2)[1];
            assert!(
                first >= Duration::from_millis(2700) && first <= Duration::from_millis(3300),
                "{first:?}"
            );
        }
        let high = offsets(Schedule::Pcp, Jitter::Fixed(5.0), 2)[1];
        assert_eq!(high, Duration::from_millis(3300));
    }

    #[test]
    fn not_due_before_time() {
        let t0 = Instant::now();
        let mut r = Retransmit::new(Schedule::NatPmp, Jitter::Random, t0);
        r.sent(t0);
        assert!(!r.due(t0 + Duration::from_millis(249)));
        assert!(r.due(t0 + Duration::from_millis(250)));
        assert_eq!(r.attempts(), 1);
    }
}
