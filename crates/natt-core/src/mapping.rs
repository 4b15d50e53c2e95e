//! What a mapping leaves behind: port-mapping leases to keep alive and release, and each
//! technique's outcome for reports.

use std::time::Duration;

use crate::endpoint::{MappedSocketAddr, Protocol};
use crate::error::TechniqueError;

/// A port mapping made on a router (UPnP, PCP, ...). The implementation renews it while it
/// lives and deletes it when dropped (natt's techniques do so with one thread per lease, a
/// [`Keeper`](crate::lease::Keeper)).
///
/// Dropping may leave the deletion to finish in the background (so that dropping many leases
/// on a router that does not answer does not block): a program about to exit releases its
/// leases with [`PortMappings::release`], which waits for the deletions (bounded by each
/// implementation's own timeouts), all at once.
pub trait Lease: Send {
    /// A one-line description for logs, e.g. `upnp udp 203.0.113.1:4000 -> 192.168.1.2:4000`.
    fn describe(&self) -> String;

    /// Starts deleting the mapping without waiting for the router's answer. The default does
    /// nothing: the deletion happens when the lease is dropped.
    fn start_release(&mut self) {}

    /// After [`start_release`](Lease::start_release): waits until the deletion is over (done,
    /// or given up at the implementation's own deadline). The default returns at once.
    fn wait_released(&mut self) {}
}

/// Several leases held, released and dropped as one: what a technique that made more than one
/// mapping for a socket returns (PCP: an IPv4 port mapping and an IPv6 pinhole).
pub struct Leases(pub Vec<Box<dyn Lease>>);

impl Lease for Leases {
    fn describe(&self) -> String {
        self.0.iter().map(|l| l.describe()).collect::<Vec<_>>().join("; ")
    }

    fn start_release(&mut self) {
        self.0.iter_mut().for_each(|l| l.start_release());
    }

    fn wait_released(&mut self) {
        self.0.iter_mut().for_each(|l| l.wait_released());
    }
}

/// When a lease whose renewal failed tries again: an eighth of the lease, between 500 ms and
/// a minute, so soon enough to renew before the mapping expires but never in a tight loop.
/// The back-off of the lease keeper ([`crate::lease::Schedule`]).
///
/// ```
/// use std::time::Duration;
/// use natt_core::mapping::retry_after_failed_renewal;
/// assert_eq!(retry_after_failed_renewal(Duration::from_secs(80)), Duration::from_secs(10));
/// ```
pub fn retry_after_failed_renewal(lease: Duration) -> Duration {
    (lease / 8).clamp(Duration::from_millis(500), Duration::from_secs(60))
}

/// How one technique fared on one socket.
#[derive(Debug)]
pub struct TechniqueOutcome {
    /// The technique's name.
    pub technique: String,
    /// The protocol of the socket mapped.
    pub protocol: Protocol,
    /// How long the technique took.
    pub elapsed: Duration,
    /// What it found, or why it found nothing.
    pub result: Result<Vec<MappedSocketAddr>, TechniqueError>,
}

/// The port mappings made for a socket, and each technique's outcome.
///
/// Keep this value as long as the socket is in use: the mappings it holds are renewed while it
/// lives and deleted from the routers when it is dropped.
#[derive(Default)]
pub struct PortMappings {
    leases: Vec<Box<dyn Lease>>,
    outcomes: Vec<TechniqueOutcome>,
    /// The socket's own interface addresses (its local endpoints).
    local: Vec<std::net::SocketAddr>,
}

impl PortMappings {
    pub(crate) fn new(
        leases: Vec<Box<dyn Lease>>,
        outcomes: Vec<TechniqueOutcome>,
        local: Vec<std::net::SocketAddr>,
    ) -> Self {
        PortMappings {
            leases,
            outcomes,
            local,
        }
    }

    /// True when no router holds a mapping for this socket.
    pub fn is_empty(&self) -> bool {
        self.leases.is_empty()
    }

    /// Descriptions of the live mappings.
    pub fn describe(&self) -> Vec<String> {
        self.leases.iter().map(|l| l.describe()).collect()
    }

    /// Each technique's outcome, in the order the techniques were registered. Techniques that
    /// did not apply are included, with [`TechniqueError::NotApplicable`].
    pub fn outcomes(&self) -> &[TechniqueOutcome] {
        &self.outcomes
    }

    /// Whether some technique found an endpoint beyond this host's own interface addresses
    /// (what a peer outside this network needs).
    pub fn found_external(&self) -> bool {
        self.outcomes.iter().any(|o| {
            o.result
                .as_ref()
                .is_ok_and(|eps| eps.iter().any(|e| !self.local.contains(&e.addr)))
        })
    }

    /// When no technique found an endpoint beyond this host's own interface addresses: why, in
    /// one line that names each technique and what stopped it; `None` when one did. Mapping
    /// itself succeeds either way (the local endpoints still serve peers on this network), so
    /// a program that needs peers elsewhere checks this.
    ///
    #[cfg_attr(not(doctest), doc = include_str!("../doc/port_mappings_why_no_external.md"))]
    pub fn why_no_external(&self) -> Option<String> {
        if self.found_external() {
            return None;
        }
        let tried: Vec<String> = self
            .outcomes
            .iter()
            .filter_map(|o| match &o.result {
                Err(e) if e.is_not_applicable() => None,
                Err(e) => Some(format!("{}: {e}", o.technique)),
                Ok(eps) if eps.is_empty() => Some(format!("{}: found nothing", o.technique)),
                Ok(_) => Some(format!("{}: found only this host's own addresses", o.technique)),
            })
            .collect();
        let skipped: Vec<String> = self
            .outcomes
            .iter()
            .filter_map(|o| match &o.result {
                Err(e) if e.is_not_applicable() => Some(format!("{}: {e}", o.technique)),
                _ => None,
            })
            .collect();
        Some(if !tried.is_empty() {
            format!("no external address ({})", tried.join("; "))
        } else if skipped.is_empty() {
            "no external address: no technique ran (give a STUN or simple server)".to_owned()
        } else {
            format!("no external address: no technique ran ({})", skipped.join("; "))
        })
    }

    /// Deletes every mapping now, and waits until each deletion is over (done, or given up at
    /// its technique's own deadline). The deletions run at the same time. Dropping deletes
    /// too, but may not wait: call this before a program exits.
    pub fn release(&mut self) {
        for lease in &mut self.leases {
            log::debug!("releasing {}", lease.describe());
            lease.start_release();
        }
        for mut lease in self.leases.drain(..) {
            lease.wait_released();
            drop(lease);
        }
    }
}

impl std::fmt::Debug for PortMappings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PortMappings")
            .field("leases", &self.describe())
            .field("outcomes", &self.outcomes)
            .finish()
    }
}

/// Gathers what techniques found, in registration order, into endpoints and [`PortMappings`].
pub(crate) struct Collector {
    protocol: Protocol,
    endpoints: Vec<MappedSocketAddr>,
    leases: Vec<Box<dyn Lease>>,
    outcomes: Vec<TechniqueOutcome>,
}

impl Collector {
    /// Starts with the socket's local endpoints.
    pub(crate) fn new(protocol: Protocol, local: Vec<MappedSocketAddr>) -> Self {
        Collector {
            protocol,
            endpoints: local,
            leases: Vec::new(),
            outcomes: Vec::new(),
        }
    }

    /// Records one technique's result.
    pub(crate) fn add(
        &mut self,
        technique: &str,
        elapsed: Duration,
        result: Result<crate::technique::TechniqueMapping, TechniqueError>,
    ) {
        let result = match result {
            Ok(mapping) => {
                if let Some(lease) = mapping.lease {
                    log::info!("{technique}: holding {}", lease.describe());
                    self.leases.push(lease);
                }
                crate::endpoint::merge_endpoints(&mut self.endpoints, mapping.endpoints.iter().cloned());
                log::debug!("{technique}: {:?} in {elapsed:?}", mapping.endpoints);
                Ok(mapping.endpoints)
            }
            Err(e) => {
                if e.is_not_applicable() {
                    log::debug!("{technique}: {e}");
                } else {
                    log::info!("{technique} failed after {elapsed:?}: {e}");
                }
                Err(e)
            }
        };
        self.outcomes.push(TechniqueOutcome {
            technique: technique.to_owned(),
            protocol: self.protocol,
            elapsed,
            result,
        });
    }

    pub(crate) fn finish(self) -> (Vec<MappedSocketAddr>, PortMappings) {
        let local = self
            .endpoints
            .iter()
            .filter(|e| e.technique == crate::local::LOCAL)
            .map(|e| e.addr)
            .collect();
        (self.endpoints, PortMappings::new(self.leases, self.outcomes, local))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use std::sync::{Arc, Mutex};

    /// A lease that records what is done to it.
    struct Recorded(&'static str, Arc<Mutex<Vec<String>>>);

    impl Lease for Recorded {
        fn describe(&self) -> String {
            self.0.to_owned()
        }
        fn start_release(&mut self) {
            self.1.lock().unwrap().push(format!("start {}", self.0));
        }
        fn wait_released(&mut self) {
            self.1.lock().unwrap().push(format!("wait {}", self.0));
        }
    }

    impl Drop for Recorded {
        fn drop(&mut self) {
            self.1.lock().unwrap().push(format!("drop {}", self.0));
        }
    }

    #[test]
    fn renewal_retries_are_neither_tight_nor_lazy() {
        assert_eq!(
            retry_after_failed_renewal(Duration::from_secs(2)),
            Duration::from_millis(500)
        );
        assert_eq!(
            retry_after_failed_renewal(Duration::from_secs(80)),
            Duration::from_secs(10)
        );
        assert_eq!(
            retry_after_failed_renewal(Duration::from_secs(3600)),
            Duration::from_secs(60)
        );
        assert_eq!(
            retry_after_failed_renewal(Duration::from_secs(7200)),
            Duration::from_secs(60)
        );
    }

    #[test]
    fn release_starts_every_deletion_before_waiting_for_any() {
        let log = Arc::new(Mutex::new(Vec::new()));
        let leases: Vec<Box<dyn Lease>> = vec![
            Box::new(Recorded("a", Arc::clone(&log))),
            Box::new(Recorded("b", Arc::clone(&log))),
        ];
        let mut mappings = PortMappings::new(leases, Vec::new(), Vec::new());
        mappings.release();
        assert!(mappings.is_empty());
        assert_eq!(
            *log.lock().unwrap(),
            ["start a", "start b", "wait a", "drop a", "wait b", "drop b"]
        );
    }

    #[test]
    fn an_address_of_the_host_itself_is_not_external() {
        use crate::{MappedSocketAddr, Protocol};
        let lan = MappedSocketAddr::new("192.168.1.2:5".parse().unwrap(), false, crate::local::LOCAL);
        // A STUN server on the LAN sees the host's own address.
        let mut c = Collector::new(Protocol::Udp, vec![lan.clone()]);
        let seen = MappedSocketAddr::new(lan.addr, true, "stun");
        c.add("stun", Duration::ZERO, Ok(vec![seen].into()));
        let (_, pm) = c.finish();
        assert!(!pm.found_external());
        assert_eq!(
            pm.why_no_external().as_deref(),
            Some("no external address (stun: found only this host's own addresses)")
        );
        // Techniques that did not apply say why, when none ran.
        let mut c = Collector::new(Protocol::Udp, vec![lan]);
        c.add(
            "stun",
            Duration::ZERO,
            Err(TechniqueError::NotApplicable(
                "no IPv4 stun server given (the socket is IPv4)".into(),
            )),
        );
        let (_, pm) = c.finish();
        assert_eq!(
            pm.why_no_external().as_deref(),
            Some(
                "no external address: no technique ran (stun: not applicable: no IPv4 stun server given (the socket is IPv4))"
            )
        );
    }
}
