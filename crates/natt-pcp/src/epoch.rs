//! Noticing that a gateway lost its mappings, from the epoch time in its replies: the seconds
//! since its mapping state began, which start again from zero when it restarts.
//!
//! - PCP (RFC 6887 section 8.5): the epoch may not go back by more than one second, and must
//!   advance like the client's clock (within 2 s + 1/16).
//! - NAT-PMP (RFC 6886 section 3.6): the epoch must be at least the previous one plus 7/8 of
//!   the client's elapsed time, less 2 s.
//!
//! Pure: fed with epochs and the client's clock.

#![deny(clippy::disallowed_methods)] // a protocol core: see clippy.toml

use std::time::Instant;

use crate::transaction::Version;

/// What an epoch says about the gateway's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// The first epoch seen, or one consistent with the previous.
    Valid,
    /// The epoch went back or advanced too slowly: the gateway restarted or otherwise lost its
    /// mappings, which must be made again.
    LostState {
        /// The epoch seen before.
        previous: u32,
        /// The epoch seen now.
        current: u32,
    },
}

/// The epochs seen from one gateway.
#[derive(Debug, Clone)]
pub struct EpochTracker {
    version: Version,
    previous: Option<(u32, Instant)>,
}

impl EpochTracker {
    /// A tracker for replies of `version`'s protocol.
    pub fn new(version: Version) -> Self {
        EpochTracker {
            version,
            previous: None,
        }
    }

    /// Judges the epoch of a reply received at `now`, and remembers it.
    pub fn observe(&mut self, now: Instant, epoch: u32) -> Verdict {
        let verdict = match self.previous {
            None => Verdict::Valid,
            Some((previous, then)) => {
                let client = now.saturating_duration_since(then).as_secs_f64();
                let lost = match self.version {
                    Version::Pcp => pcp_lost(previous, epoch, client),
                    Version::NatPmp => nat_pmp_lost(previous, epoch, client),
                };
                if lost {
                    Verdict::LostState {
                        previous,
                        current: epoch,
                    }
                } else {
                    Verdict::Valid
                }
            }
        };
        self.previous = Some((epoch, now));
        verdict
    }

    /// Follows a gateway that now speaks `version` (its epochs start anew).
    pub fn switch(&mut self, version: Version) {
        if version != self.version {
            *self = EpochTracker::new(version);
        }
    }
}

/// RFC 6887 section 8.5, with `client` the seconds elapsed on the client since the previous
/// reply.
fn pcp_lost(previous: u32, current: u32, client: f64) -> bool {
    if u64::from(current) + 1 < u64::from(previous) {
        return true;
    }
    let server = f64::from(current) - f64::from(previous);
    client + 2.0 < server - server / 16.0 || server + 2.0 < client - client / 16.0
}

/// RFC 6886 section 3.6.
fn nat_pmp_lost(previous: u32, current: u32, client: f64) -> bool {
    let expected = f64::from(previous) + client * 7.0 / 8.0;
    f64::from(current) + 2.0 < expected
}

#[cfg(test)]
#[allow(clippy::disallowed_methods)] // tests take a starting instant from the clock
mod tests {
    use super::*;
    use std::time::Duration;

    fn feed(version: Version, points: &[(u64, u32)]) -> Vec<Verdict> {
        let t0 = Instant::now();
        let mut t = EpochTracker::new(version);
        points
            .iter()
            .map(|&(secs, epoch)| t.observe(t0 + Duration::from_secs(secs), epoch))
            .collect()
    }

    #[test]
    fn pcp_steady_clock_is_valid() {
        let v = feed(Version::Pcp, &[(0, 1000), (60, 1060), (120, 1119), (180, 1181)]);
        assert!(v.iter().all(|v| *v == Verdict::Valid), "{v:?}");
    }

    #[test]
    fn pcp_small_reordering_is_tolerated() {
        let v = feed(Version::Pcp, &[(0, 1000), (0, 999)]);
        assert_eq!(v[1], Verdict::Valid);
    }

    #[test]
    fn pcp_going_back_is_lost_state() {
        let v = feed(Version::Pcp, &[(0, 1000), (60, 3)]);
        assert_eq!(
            v[1],
            Verdict::LostState {
                previous: 1000,
                current: 3
            }
        );
    }

    #[test]
    fn pcp_restart_with_higher_epoch_is_caught_by_the_rate_check() {
        // Last reply at epoch 5; the gateway restarted 50 s later; 60 s on, its epoch is 10.
        let v = feed(Version::Pcp, &[(0, 5), (60, 10)]);
        assert!(matches!(v[1], Verdict::LostState { .. }), "{v:?}");
        // A server clock running far ahead is invalid too.
        let v = feed(Version::Pcp, &[(0, 5), (10, 100)]);
        assert!(matches!(v[1], Verdict::LostState { .. }), "{v:?}");
    }

    #[test]
    fn nat_pmp_rules() {
        let v = feed(Version::NatPmp, &[(0, 100), (40, 140), (80, 174), (120, 171)]);
        assert_eq!(v[1], Verdict::Valid);
        // 174 + 2 >= 140 + 40 * 7/8: a slightly slow clock is fine.
        assert_eq!(v[2], Verdict::Valid);
        assert!(matches!(v[3], Verdict::LostState { previous: 174, .. }));
        // Epoch counting from zero again after a restart.
        let v = feed(Version::NatPmp, &[(0, 100), (10, 4)]);
        assert!(matches!(v[1], Verdict::LostState { .. }));
    }

    #[test]
    fn switching_protocol_starts_anew() {
        let t0 = Instant::now();
        let mut t = EpochTracker::new(Version::Pcp);
        assert_eq!(t.observe(t0, 1000), Verdict::Valid);
        t.switch(Version::NatPmp);
        assert_eq!(t.observe(t0, 3), Verdict::Valid);
    }

    #[test]
    fn extreme_values_do_not_panic() {
        let v = feed(Version::Pcp, &[(0, u32::MAX), (1, 0), (2, u32::MAX)]);
        assert!(matches!(v[1], Verdict::LostState { .. }));
        let v = feed(Version::NatPmp, &[(0, u32::MAX), (1000, 0)]);
        assert!(matches!(v[1], Verdict::LostState { .. }));
    }
}
