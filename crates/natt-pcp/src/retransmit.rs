//! When to send a request again while no answer comes: each protocol's parameters for
//! [`natt_core::retransmit::Schedule`], which the caller's deadline cuts short.
//!
//! - NAT-PMP (RFC 6886 section 3.1): 250 ms, doubling each time, nine attempts at most
//!   ([`NAT_PMP`]).
//! - PCP (RFC 6887 section 8.1.1): IRT 3 s, MRT 1024 s, no limit on count or duration, each
//!   interval with ±10 % random jitter: `RT = (1 + RAND) * min(2 * RTprev, MRT)` ([`PCP`]).
//!   `RAND` comes from a [`Jitter`], whose generator the driver gives.

#![deny(clippy::disallowed_methods)] // a protocol core: see clippy.toml

use std::time::Duration;

use natt_core::retransmit::{Factor, Params};
use rand::Rng;
use rand::rngs::StdRng;

/// NAT-PMP's first retransmission timeout.
pub const NAT_PMP_INITIAL: Duration = Duration::from_millis(250);
/// NAT-PMP's number of attempts before giving up on a gateway.
pub const NAT_PMP_ATTEMPTS: u32 = 9;
/// PCP's initial retransmission time (IRT).
pub const PCP_IRT: Duration = Duration::from_secs(3);
/// PCP's maximum retransmission time (MRT).
pub const PCP_MRT: Duration = Duration::from_secs(1024);
/// PCP's largest random factor `RAND`: intervals vary by ±10 %.
pub const PCP_JITTER: f64 = 0.1;

/// RFC 6886's schedule: attempts at 0, 0.25, 0.75, 1.75, ... 63.75 s ([`NAT_PMP_ATTEMPTS`] in
/// all, the interval doubling from [`NAT_PMP_INITIAL`]); after the last one the caller's
/// deadline decides how long a late answer is waited for.
pub const NAT_PMP: Params = Params {
    initial: NAT_PMP_INITIAL,
    factor: Factor::DOUBLE,
    max_interval: None,
    max_sends: Some(NAT_PMP_ATTEMPTS),
    last_wait: None,
    jitter: 0.0,
};

/// RFC 6887's schedule: [`PCP_IRT`], doubling up to [`PCP_MRT`], each interval randomised by
/// [`PCP_JITTER`], without end (the caller's deadline ends it). Without jitter: at 0, 3, 9, 21,
/// 45, 93 s, ..., then every 1024 s.
pub const PCP: Params = Params {
    initial: PCP_IRT,
    factor: Factor::DOUBLE,
    max_interval: Some(PCP_MRT),
    max_sends: None,
    last_wait: None,
    jitter: PCP_JITTER,
};

/// Where PCP's random jitter factor (`RAND`, -0.1 to +0.1) comes from.
#[derive(Debug, Clone)]
pub enum Jitter {
    /// Uniformly random, as the RFC asks, from this generator (a driver's is seeded by the
    /// operating system, `StdRng::from_os_rng()`; a test's by a number): [`Jitter::random`].
    Random(Box<StdRng>),
    /// Always this value (tests; the schedule clamps it to ±[`PCP_JITTER`]).
    Fixed(f64),
}

impl Jitter {
    /// [`Jitter::Random`] from `rng`.
    pub fn random(rng: StdRng) -> Self {
        Jitter::Random(Box::new(rng))
    }

    /// A `RAND` for a schedule whose [`Params::jitter`] is `bound`: 0 when that is not a
    /// positive number (nothing drawn).
    pub fn sample(&mut self, bound: f64) -> f64 {
        if !(bound.is_finite() && bound > 0.0) {
            return 0.0;
        }
        match self {
            Jitter::Random(rng) => rng.random_range(-bound..=bound),
            Jitter::Fixed(f) => *f,
        }
    }
}

#[cfg(test)]
#[allow(clippy::disallowed_methods)] // tests take a starting instant from the clock
mod tests {
    use super::*;
    use natt_core::retransmit::Schedule;
    use rand::SeedableRng;
    use std::time::Instant;

    fn random(seed: u64) -> Jitter {
        Jitter::random(StdRng::seed_from_u64(seed))
    }

    fn offsets(params: Params, mut jitter: Jitter, n: usize) -> Vec<Duration> {
        let t0 = Instant::now();
        let mut r = Schedule::new(params, t0);
        let mut out = Vec::new();
        for _ in 0..n {
            let Some(at) = r.next_send() else { break };
            assert!(r.is_due(at));
            out.push(at - t0);
            r.on_sent_jittered(at, jitter.sample(params.jitter));
        }
        out
    }

    #[test]
    fn nat_pmp_doubles_from_250_ms_nine_times() {
        let ms: Vec<u128> = offsets(NAT_PMP, random(1), 20)
            .iter()
            .map(Duration::as_millis)
            .collect();
        assert_eq!(ms, [0, 250, 750, 1750, 3750, 7750, 15750, 31750, 63750]);
    }

    #[test]
    fn pcp_starts_at_3_s_and_doubles_to_1024_s() {
        let s: Vec<u64> = offsets(PCP, Jitter::Fixed(0.0), 14)
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
        for seed in 0..100 {
            let first = offsets(PCP, random(seed), 2)[1];
            assert!(
                first >= Duration::from_millis(2700) && first <= Duration::from_millis(3300),
                "{first:?}"
            );
        }
        let high = offsets(PCP, Jitter::Fixed(5.0), 2)[1];
        assert_eq!(high, Duration::from_millis(3300));
    }

    #[test]
    fn pcp_jitter_grows_from_the_jittered_interval() {
        // RT = (1 + RAND) * min(2 * RTprev, MRT), RTprev being the randomised interval: the
        // old code's intervals to the nanosecond.
        let gaps: Vec<u128> = offsets(PCP, Jitter::Fixed(0.1), 10)
            .windows(2)
            .map(|w| (w[1] - w[0]).as_nanos())
            .collect();
        assert_eq!(
            gaps,
            [
                3_300_000_000,
                7_260_000_000,
                15_972_000_000,
                35_138_400_000,
                77_304_480_000,
                170_069_856_000,
                374_153_683_200,
                823_138_103_040,
                1_126_400_000_000
            ]
        );
    }

    #[test]
    fn not_due_before_time() {
        let t0 = Instant::now();
        let mut r = Schedule::new(NAT_PMP, t0);
        r.on_sent(t0);
        assert!(!r.is_due(t0 + Duration::from_millis(249)));
        assert!(r.is_due(t0 + Duration::from_millis(250)));
        assert_eq!(r.sends(), 1);
    }
}
