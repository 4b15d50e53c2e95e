//! Deadline arithmetic shared by every blocking call: all network waits are bounded by an
//! absolute [`Instant`], never by an open-ended timeout.

use std::time::{Duration, Instant};

/// The smallest timeout handed to the OS: a zero timeout means "block forever" to some socket
/// calls, so waits are never shorter than this.
pub const MIN_WAIT: Duration = Duration::from_millis(1);

/// Time left until `deadline`, or `None` once it has passed.
pub fn remaining(deadline: Instant) -> Option<Duration> {
    let now = Instant::now();
    if now >= deadline {
        None
    } else {
        Some((deadline - now).max(MIN_WAIT))
    }
}

/// Time left until `deadline`, at least [`MIN_WAIT`] (for socket timeouts, which reject zero).
pub fn wait_until(deadline: Instant) -> Duration {
    remaining(deadline).unwrap_or(MIN_WAIT)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remaining_is_none_after_deadline() {
        assert!(remaining(Instant::now() - Duration::from_millis(1)).is_none());
        assert!(remaining(Instant::now() + Duration::from_secs(5)).unwrap() > Duration::from_secs(4));
        assert_eq!(wait_until(Instant::now()), MIN_WAIT);
    }
}
