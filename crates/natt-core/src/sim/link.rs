//! [`Link`]: the line between a host and its router (or, for a host with a public address, the
//! Internet): a one-way delay and a chance of losing each datagram, the same both ways.
//!
//! A datagram between two hosts crosses the sender's link and then the receiver's; the routers
//! and the Internet between them add no delay of their own. Loss is drawn independently for
//! each datagram on each link from the network's seeded generator. Jitter, reordering beyond
//! what differing delays give, duplication, corruption, bandwidth and queues are not modelled.

#![deny(clippy::disallowed_methods)] // a protocol core: see clippy.toml

use std::time::Duration;

/// A host's access link.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Link {
    /// One-way delay.
    pub delay: Duration,
    /// The probability that a datagram is lost on this link, each way (0.0 to 1.0).
    pub loss: f64,
}

impl Default for Link {
    /// 10 ms each way, no loss.
    fn default() -> Self {
        Link {
            delay: Duration::from_millis(10),
            loss: 0.0,
        }
    }
}

impl Link {
    /// A lossless link with a one-way `delay`.
    pub fn with_delay(delay: Duration) -> Self {
        Link { delay, loss: 0.0 }
    }

    /// This link, losing each datagram with probability `loss` (clamped to 0.0..=1.0).
    pub fn lossy(self, loss: f64) -> Self {
        let loss = if loss.is_nan() { 0.0 } else { loss.clamp(0.0, 1.0) };
        Link { loss, ..self }
    }
}
