//! When to send a request again while no answer comes: [`Schedule`], the one retransmission
//! schedule every technique uses, each protocol with its own [`Params`] (defined, and
//! documented, where the protocol is).
//!
//! The schedule is pure: it reads no clock and draws no random number. The caller says when it
//! sent (`now`), and a protocol whose intervals are randomised (PCP's ±10 %) passes the random
//! factor in ([`Schedule::on_sent_jittered`]), so tests can fix it.
//!
//! In the style of RFC 8489 section 6.2.1: the first request goes out at once; the `n`-th
//! interval is the `n-1`-th times a [`Factor`], capped at [`Params::max_interval`], then
//! randomised by `1 + RAND` when [`Params::jitter`] allows; each interval counts from the
//! moment the request was actually sent. After [`Params::max_sends`] requests (if limited) no
//! more are sent, and the schedule gives up [`Params::last_wait`] after the last one (or, with
//! no last wait, leaves the end to the caller's deadline).
//!
//! ```
//! use natt_core::retransmit::{Factor, Params, Schedule};
//! use std::time::{Duration, Instant};
//!
//! // RFC 8489's defaults: RTO 500 ms, doubling, Rc = 7 requests, then Rm = 16 RTOs.
//! let params = Params {
//!     initial: Duration::from_millis(500),
//!     factor: Factor::DOUBLE,
//!     max_interval: None,
//!     max_sends: Some(7),
//!     last_wait: Some(Duration::from_secs(8)),
//!     jitter: 0.0,
//! };
//! let t0 = Instant::now();
//! let mut s = Schedule::new(params, t0);
//! let mut sent = Vec::new();
//! while let Some(at) = s.next_send() {
//!     sent.push((at - t0).as_millis());
//!     s.on_sent(at);
//! }
//! assert_eq!(sent, [0, 500, 1500, 3500, 7500, 15500, 31500]);
//! assert_eq!(s.gives_up_at(), Some(t0 + Duration::from_millis(39_500)));
//! ```

#![deny(clippy::disallowed_methods)] // a protocol core: see clippy.toml

use std::time::{Duration, Instant};

/// How much longer each interval is than the one before: a ratio of whole numbers, so that
/// the intervals are exact (no floating-point rounding).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Factor {
    num: u32,
    den: u32,
}

impl Factor {
    /// Each interval twice the one before (RFC 8489, RFC 6886, RFC 6887).
    pub const DOUBLE: Factor = Factor::ratio(2, 1);
    /// Every interval the same.
    pub const CONSTANT: Factor = Factor::ratio(1, 1);

    /// `num / den` (a `den` of 0 counts as 1).
    pub const fn ratio(num: u32, den: u32) -> Factor {
        Factor {
            num,
            den: if den == 0 { 1 } else { den },
        }
    }

    /// `interval` times this factor (saturating).
    pub fn apply(self, interval: Duration) -> Duration {
        // `den` is never 0 (see `ratio`), so the division cannot fail.
        interval
            .saturating_mul(self.num)
            .checked_div(self.den)
            .unwrap_or(Duration::MAX)
    }
}

/// A protocol's retransmission parameters.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Params {
    /// The first interval (RFC 8489's RTO, RFC 6887's IRT).
    pub initial: Duration,
    /// Each interval is the one before times this.
    pub factor: Factor,
    /// The longest interval, before randomisation (RFC 6887's MRT); `None`: no limit.
    pub max_interval: Option<Duration>,
    /// The most requests sent (RFC 8489's Rc); `None`: no limit (the caller's deadline ends
    /// the transaction).
    pub max_sends: Option<u32>,
    /// After the last of [`max_sends`](Self::max_sends) requests, how long to wait for an
    /// answer before giving up (RFC 8489's Rm × RTO); `None`: until the caller's deadline.
    pub last_wait: Option<Duration>,
    /// The largest random factor `RAND` (RFC 6887: 0.1); each interval is multiplied by
    /// `1 + RAND`, with `RAND` passed to [`Schedule::on_sent_jittered`] and clamped to
    /// `-jitter..=jitter`. 0 (or anything not a positive number): no randomisation.
    pub jitter: f64,
}

impl Params {
    /// `initial`, then each interval `factor` times the one before, without end.
    pub const fn new(initial: Duration, factor: Factor) -> Params {
        Params {
            initial,
            factor,
            max_interval: None,
            max_sends: None,
            last_wait: None,
            jitter: 0.0,
        }
    }

    /// The jitter bound, if the intervals are randomised.
    fn jitter_bound(&self) -> Option<f64> {
        (self.jitter.is_finite() && self.jitter > 0.0).then_some(self.jitter)
    }
}

/// The retransmission state of one request: when it is next due, how often it was sent, and
/// when it is given up on.
#[derive(Debug, Clone)]
pub struct Schedule {
    params: Params,
    sends: u32,
    /// The last interval waited (the next one grows from it); `None` before the first send.
    interval: Option<Duration>,
    /// When the next request is due; `None` once no more are sent.
    next: Option<Instant>,
    first_sent: Option<Instant>,
    last_sent: Option<Instant>,
}

impl Schedule {
    /// A request due at once, at `now`.
    pub fn new(params: Params, now: Instant) -> Schedule {
        Schedule {
            params,
            sends: 0,
            interval: None,
            next: Some(now),
            first_sent: None,
            last_sent: None,
        }
    }

    /// The parameters.
    pub fn params(&self) -> &Params {
        &self.params
    }

    /// Changes the most requests sent (for example to send until the caller's deadline). If
    /// the old limit had stopped the requests and the new one does not, the next is due one
    /// interval after the last.
    pub fn set_max_sends(&mut self, max_sends: Option<u32>) {
        self.params.max_sends = max_sends;
        if !self.sends_left() {
            self.next = None;
        } else if self.next.is_none()
            && let Some(last) = self.last_sent
        {
            let interval = self.next_interval(0.0);
            self.interval = Some(interval);
            self.next = last.checked_add(interval);
        }
    }

    /// The interval after the last one: grown by the factor, capped, then randomised by
    /// `1 + rand`.
    fn next_interval(&self, rand: f64) -> Duration {
        let base = match self.interval {
            None => self.params.initial,
            Some(prev) => {
                let grown = self.params.factor.apply(prev);
                self.params.max_interval.map_or(grown, |max| grown.min(max))
            }
        };
        match self.params.jitter_bound() {
            // As `Duration::mul_f64`, without its panic on overflow (or a NaN `rand`).
            Some(bound) => {
                let rand = if rand.is_nan() { 0.0 } else { rand.clamp(-bound, bound) };
                Duration::try_from_secs_f64((1.0 + rand) * base.as_secs_f64()).unwrap_or(base)
            }
            None => base,
        }
    }

    fn sends_left(&self) -> bool {
        self.params.max_sends.is_none_or(|max| self.sends < max)
    }

    /// True when a request is due at `now`.
    pub fn is_due(&self, now: Instant) -> bool {
        self.next.is_some_and(|at| now >= at)
    }

    /// When the next request is due; `None` once no more are sent.
    pub fn next_send(&self) -> Option<Instant> {
        self.next
    }

    /// When the schedule gives up: [`Params::last_wait`] after the last request, once every
    /// request is sent; `None` while requests are left to send, or with no last wait.
    pub fn gives_up_at(&self) -> Option<Instant> {
        if self.sends_left() {
            return None;
        }
        self.last_sent?.checked_add(self.params.last_wait?)
    }

    /// When the schedule next needs attention: the next request, or else the moment it gives
    /// up; `None` when neither is ahead.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.next.or_else(|| self.gives_up_at())
    }

    /// True when every request was sent and the wait after the last is over at `now` (with no
    /// last wait: once the last request is sent).
    pub fn is_exhausted(&self, now: Instant) -> bool {
        if self.sends_left() {
            // Requests are left (or the next one is beyond what an `Instant` can hold: the
            // caller's deadline ends the transaction).
            return false;
        }
        match self.params.last_wait {
            None => true,
            Some(_) => self.gives_up_at().is_some_and(|at| now >= at),
        }
    }

    /// How many requests were sent.
    pub fn sends(&self) -> u32 {
        self.sends
    }

    /// When the first request was sent.
    pub fn first_sent(&self) -> Option<Instant> {
        self.first_sent
    }

    /// When the last request was sent.
    pub fn last_sent(&self) -> Option<Instant> {
        self.last_sent
    }

    /// The last interval scheduled (`None` before the first send).
    pub fn interval(&self) -> Option<Duration> {
        self.interval
    }

    /// Records a request sent at `now` and schedules the next, with no randomisation
    /// (`RAND` = 0).
    pub fn on_sent(&mut self, now: Instant) {
        self.on_sent_jittered(now, 0.0);
    }

    /// Records a request sent at `now` and schedules the next, its interval multiplied by
    /// `1 + rand` (`rand` clamped to [`Params::jitter`]; ignored when that is 0).
    pub fn on_sent_jittered(&mut self, now: Instant, rand: f64) {
        self.sends = self.sends.saturating_add(1);
        self.first_sent.get_or_insert(now);
        self.last_sent = Some(now);
        if !self.sends_left() {
            self.next = None;
            return;
        }
        let interval = self.next_interval(rand);
        self.interval = Some(interval);
        self.next = now.checked_add(interval);
    }
}

#[cfg(test)]
#[allow(clippy::disallowed_methods)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// Sends whenever due, `n` times at most: the offsets of the sends from the start.
    fn offsets(params: Params, rand: f64, n: usize) -> (Vec<Duration>, Schedule, Instant) {
        let t0 = Instant::now();
        let mut s = Schedule::new(params, t0);
        let mut out = Vec::new();
        while out.len() < n {
            let Some(at) = s.next_send() else { break };
            assert!(!s.is_due(at - Duration::from_nanos(1)) || at == t0);
            assert!(s.is_due(at));
            out.push(at - t0);
            s.on_sent_jittered(at, rand);
        }
        (out, s, t0)
    }

    #[test]
    fn doubles_with_a_cap_and_no_end() {
        // natt-simple's: 250 ms doubling up to 2 s, until the deadline.
        let params = Params {
            max_interval: Some(Duration::from_secs(2)),
            ..Params::new(ms(250), Factor::DOUBLE)
        };
        let (sent, s, _) = offsets(params, 0.0, 8);
        let sent: Vec<u128> = sent.iter().map(Duration::as_millis).collect();
        assert_eq!(sent, [0, 250, 750, 1750, 3750, 5750, 7750, 9750]);
        assert!(s.next_send().is_some() && s.gives_up_at().is_none());
    }

    #[test]
    fn limited_sends_then_a_last_wait() {
        let params = Params {
            max_sends: Some(3),
            last_wait: Some(ms(1000)),
            ..Params::new(ms(100), Factor::DOUBLE)
        };
        let (sent, s, t0) = offsets(params, 0.0, 10);
        assert_eq!(sent, [ms(0), ms(100), ms(300)]);
        assert_eq!(s.next_send(), None);
        assert_eq!(s.gives_up_at(), Some(t0 + ms(1300)));
        assert_eq!(s.poll_timeout(), Some(t0 + ms(1300)));
        assert!(!s.is_exhausted(t0 + ms(1299)));
        assert!(s.is_exhausted(t0 + ms(1300)));
        assert_eq!(s.sends(), 3);
        assert_eq!((s.first_sent(), s.last_sent()), (Some(t0), Some(t0 + ms(300))));
    }

    #[test]
    fn limited_sends_without_a_last_wait_end_at_the_last_send() {
        let params = Params {
            max_sends: Some(2),
            ..Params::new(ms(100), Factor::DOUBLE)
        };
        let (sent, s, t0) = offsets(params, 0.0, 10);
        assert_eq!(sent, [ms(0), ms(100)]);
        assert_eq!((s.poll_timeout(), s.gives_up_at()), (None, None));
        assert!(s.is_exhausted(t0 + ms(100)));
    }

    #[test]
    fn intervals_count_from_the_actual_send() {
        let t0 = Instant::now();
        let mut s = Schedule::new(Params::new(ms(100), Factor::DOUBLE), t0);
        assert!(s.is_due(t0) && !s.is_exhausted(t0));
        s.on_sent(t0 + ms(30));
        assert_eq!(s.next_send(), Some(t0 + ms(130)));
        assert!(!s.is_due(t0 + ms(129)));
        s.on_sent(t0 + ms(150));
        assert_eq!(s.next_send(), Some(t0 + ms(350)));
    }

    #[test]
    fn fractional_factors_are_exact() {
        let params = Params {
            max_interval: Some(ms(500)),
            ..Params::new(ms(50), Factor::ratio(3, 2))
        };
        let (sent, _, _) = offsets(params, 0.0, 9);
        let gaps: Vec<u128> = sent.windows(2).map(|w| (w[1] - w[0]).as_nanos()).collect();
        assert_eq!(
            gaps,
            [
                50_000_000,
                75_000_000,
                112_500_000,
                168_750_000,
                253_125_000,
                379_687_500,
                500_000_000,
                500_000_000
            ]
        );
    }

    #[test]
    fn jitter_is_clamped_and_applied_after_the_cap() {
        let params = Params {
            max_interval: Some(ms(1000)),
            jitter: 0.1,
            ..Params::new(ms(400), Factor::DOUBLE)
        };
        // RAND = +0.1 (5.0 clamped): 440, min(880, 1000) * 1.1 = 968, min(1936, 1000) * 1.1.
        let (sent, _, _) = offsets(params, 5.0, 4);
        let gaps: Vec<u128> = sent.windows(2).map(|w| (w[1] - w[0]).as_millis()).collect();
        assert_eq!(gaps, [440, 968, 1100]);
        let (sent, _, _) = offsets(params, -0.1, 2);
        assert_eq!(sent[1], ms(360));
        let (sent, _, _) = offsets(params, f64::NAN, 2);
        assert_eq!(sent[1], ms(400));
        // Without a jitter bound, RAND is ignored.
        let (sent, _, _) = offsets(Params::new(ms(400), Factor::DOUBLE), 0.1, 2);
        assert_eq!(sent[1], ms(400));
        let odd = Params {
            jitter: f64::NAN,
            ..Params::new(ms(400), Factor::DOUBLE)
        };
        assert_eq!(offsets(odd, 0.1, 2).0[1], ms(400));
    }

    #[test]
    fn never_overflows() {
        let params = Params::new(Duration::from_secs(1 << 40), Factor::ratio(u32::MAX, 0));
        let t0 = Instant::now();
        let mut s = Schedule::new(params, t0);
        s.on_sent(t0);
        let next = s.next_send().unwrap();
        s.on_sent(next);
        // Far beyond what an Instant can hold: nothing more is scheduled.
        assert_eq!(s.next_send(), None);
        assert_eq!(s.poll_timeout(), None);
        assert_eq!(Factor::ratio(u32::MAX, 1).apply(Duration::MAX), Duration::MAX);
    }

    #[test]
    fn the_limit_can_change() {
        let limited = Params {
            max_sends: Some(1),
            last_wait: Some(ms(50)),
            ..Params::new(ms(100), Factor::DOUBLE)
        };
        let t0 = Instant::now();
        let mut s = Schedule::new(limited, t0);
        s.set_max_sends(None);
        s.on_sent(t0);
        assert_eq!(s.next_send(), Some(t0 + ms(100)));
        let mut s = Schedule::new(limited, t0);
        s.on_sent(t0);
        assert_eq!(s.gives_up_at(), Some(t0 + ms(50)));
        s.set_max_sends(Some(3));
        assert_eq!((s.next_send(), s.gives_up_at()), (Some(t0 + ms(100)), None));
        s.on_sent(t0 + ms(100));
        assert_eq!(s.next_send(), Some(t0 + ms(300)));
        s.set_max_sends(Some(2));
        assert_eq!((s.next_send(), s.gives_up_at()), (None, Some(t0 + ms(150))));
    }
}
