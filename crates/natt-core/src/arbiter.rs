//! [`GatewayArbiter`]: lets techniques that create port mappings on gateways (UPnP, PCP,
//! NAT-PMP, ...) take turns, so that only one of them maps a given local port on a given
//! gateway. Two would fight over one forwarding rule: on a router that speaks both UPnP and
//! PCP (miniupnpd), PCP replaces the UPnP rule and each protocol's renewal and deletion then
//! act on the other's mapping.
//!
//! A technique [`claim`](GatewayArbiter::claim)s `(gateway, protocol, local address)` before it
//! maps. The first claimant maps; a second one waits until the first has an answer: if the
//! first mapped the port, the second stands aside; if it failed, the second tries.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::time::Instant;

use crate::deadline;
use crate::endpoint::Protocol;

/// What is claimed: one local port, for one transport, on one gateway.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ClaimKey {
    /// The gateway's address.
    pub gateway: IpAddr,
    /// UDP or TCP.
    pub protocol: Protocol,
    /// The local address and port being mapped.
    pub internal: SocketAddr,
}

#[derive(Debug)]
enum Slot {
    /// A technique is mapping it now.
    Busy,
    /// A technique holds a mapping for it.
    Mapped(String),
}

/// Coordinates port-mapping techniques; share one between them (the `natt` facade does).
#[derive(Debug, Default)]
pub struct GatewayArbiter {
    slots: Mutex<HashMap<ClaimKey, Slot>>,
    changed: Condvar,
}

/// The answer to a claim.
#[derive(Debug)]
pub enum Claim {
    /// Go ahead and map; report the outcome through the guard.
    Granted(ClaimGuard),
    /// Another technique (named) holds a mapping for this port on this gateway.
    TakenBy(String),
    /// The deadline passed while another technique was still mapping.
    TimedOut,
}

impl GatewayArbiter {
    /// A new arbiter.
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// Claims `key` for `technique`, waiting (until `deadline`) while another technique is
    /// mapping it.
    ///
    #[cfg_attr(not(doctest), doc = include_str!("../doc/arbiter_claim.md"))]
    pub fn claim(self: &Arc<Self>, key: ClaimKey, technique: &str, deadline: Instant) -> Claim {
        let mut slots = self.slots.lock().unwrap_or_else(PoisonError::into_inner);
        loop {
            match slots.get(&key) {
                None => {
                    slots.insert(key, Slot::Busy);
                    return Claim::Granted(ClaimGuard {
                        arbiter: Arc::clone(self),
                        key,
                        technique: technique.to_owned(),
                        settled: false,
                    });
                }
                Some(Slot::Mapped(owner)) => return Claim::TakenBy(owner.clone()),
                Some(Slot::Busy) => {
                    let Some(left) = deadline::remaining(deadline) else {
                        return Claim::TimedOut;
                    };
                    slots = self
                        .changed
                        .wait_timeout(slots, left)
                        .map(|(s, _)| s)
                        .unwrap_or_else(|e| e.into_inner().0);
                }
            }
        }
    }

    fn set(&self, key: ClaimKey, slot: Option<Slot>) {
        let mut slots = self.slots.lock().unwrap_or_else(PoisonError::into_inner);
        match slot {
            Some(s) => slots.insert(key, s),
            None => slots.remove(&key),
        };
        self.changed.notify_all();
    }
}

/// A granted claim while its technique maps. Dropping it says the mapping failed (the next
/// claimant may try); [`mapped`](ClaimGuard::mapped) says it succeeded.
#[derive(Debug)]
pub struct ClaimGuard {
    arbiter: Arc<GatewayArbiter>,
    key: ClaimKey,
    technique: String,
    settled: bool,
}

impl ClaimGuard {
    /// The mapping exists: the port stays claimed until the returned value is dropped (keep it
    /// in the lease).
    pub fn mapped(mut self) -> HeldClaim {
        self.arbiter.set(self.key, Some(Slot::Mapped(self.technique.clone())));
        self.settled = true;
        HeldClaim {
            arbiter: Arc::clone(&self.arbiter),
            key: self.key,
        }
    }
}

impl Drop for ClaimGuard {
    fn drop(&mut self) {
        if !self.settled {
            self.arbiter.set(self.key, None);
        }
    }
}

/// A port held by a technique's mapping; dropping it frees the port for others.
#[derive(Debug)]
pub struct HeldClaim {
    arbiter: Arc<GatewayArbiter>,
    key: ClaimKey,
}

impl Drop for HeldClaim {
    fn drop(&mut self) {
        self.arbiter.set(self.key, None);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::thread;
    use std::time::Duration;

    fn key() -> ClaimKey {
        ClaimKey {
            gateway: "192.168.1.1".parse().unwrap(),
            protocol: Protocol::Tcp,
            internal: "192.168.1.2:4000".parse().unwrap(),
        }
    }

    #[test]
    fn a_second_claimant_waits_for_the_first_and_tries_when_it_failed() {
        let arbiter = GatewayArbiter::new();
        let deadline = Instant::now() + Duration::from_secs(5);
        let Claim::Granted(first) = arbiter.claim(key(), "pcp", deadline) else {
            panic!("granted")
        };
        let a = Arc::clone(&arbiter);
        let second = thread::spawn(move || matches!(a.claim(key(), "upnp", deadline), Claim::Granted(_)));
        thread::sleep(Duration::from_millis(20));
        drop(first); // PCP failed
        assert!(second.join().unwrap());
    }

    #[test]
    fn waiting_ends_at_the_deadline() {
        let arbiter = GatewayArbiter::new();
        let Claim::Granted(_first) = arbiter.claim(key(), "pcp", Instant::now() + Duration::from_secs(5)) else {
            panic!("granted")
        };
        let r = arbiter.claim(key(), "upnp", Instant::now() + Duration::from_millis(20));
        assert!(matches!(r, Claim::TimedOut));
    }

    #[test]
    fn other_ports_are_independent() {
        let arbiter = GatewayArbiter::new();
        let deadline = Instant::now() + Duration::from_secs(1);
        let _a = arbiter.claim(key(), "pcp", deadline);
        let mut other = key();
        other.protocol = Protocol::Udp;
        assert!(matches!(arbiter.claim(other, "upnp", deadline), Claim::Granted(_)));
    }
}
