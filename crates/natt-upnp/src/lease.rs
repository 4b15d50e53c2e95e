//! [`UpnpLease`]: a port mapping on a gateway, renewed while it lives and deleted when dropped.
//!
//! One thread per lease (natt-core's [`Keeper`]) does all its talking to the gateway, in
//! order: it renews the mapping at half its lease duration (sooner again after a failure), and
//! when the lease is released it wakes at once (a channel, not a sleep through the lease),
//! deletes the mapping and says so. This module holds only the SOAP calls ([`Renewable`]).
//! Each of these SOAP calls is bounded by
//! [`UpnpConfig::call_timeout`](crate::UpnpConfig) (see [`crate::bounded`]).
//!
//! Dropping a lease does not wait for the gateway: it wakes the lease's thread, which deletes
//! the mapping with its own deadline, and waits for that only briefly ([`DROP_WAIT`], enough
//! for a gateway that answers at once; not at all while the technique's gateway is not
//! answering), so dropping many leases on a dead gateway does not block for long. A program
//! about to exit waits for the deletions with [`UpnpLease::release`] or
//! [`PortMappings::release`](natt_core::PortMappings::release), so it leaves no mapping behind;
//! a program that dies leaves a mapping that expires with its lease.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use natt_core::lease::{Keeper, KeeperNames, Renewable, Renewal, Stop};
use natt_core::{Lease, Protocol};

use crate::bounded;
use crate::cache::Shared;
use crate::error::UpnpError;
use crate::gateway::{Gateway, MappingRequest};
use crate::port_choice::PortReservation;

/// The UPnP error a gateway answers when deleting a mapping it does not have.
const NO_SUCH_ENTRY: u16 = 714;

/// How long dropping a lease waits for its deletion (at most the call timeout; not at all
/// while the gateway is not answering). The deletion goes on after that on the lease's thread.
pub(crate) const DROP_WAIT: Duration = Duration::from_millis(250);

/// A port mapping held on a UPnP gateway: its own thread renews it at half its lease, and
/// deletes it when the lease is released or dropped.
///
/// Dropping waits for the deletion briefly at most (250 ms; not at all while the gateway is
/// not answering): the deletion goes on in the background, bounded by
/// [`UpnpConfig::call_timeout`](crate::UpnpConfig::call_timeout). To wait for it (before a
/// program exits), use [`UpnpLease::release`], or
/// [`Lease::start_release`] then [`Lease::wait_released`]
/// (as [`PortMappings::release`](natt_core::PortMappings::release) does, for all its leases at
/// once).
pub struct UpnpLease {
    describe: String,
    /// The lease's thread: it renews the mapping, and deletes it when released.
    keeper: Keeper,
    /// How long a release may take: a renewal may be under way (one call), then the deletion
    /// (another).
    release_wait: Duration,
    /// When the release began, the time by which it is over.
    release_by: Option<Instant>,
    /// How long dropping waits.
    drop_wait: Duration,
    /// The external port, held while the lease lives (given up when it is released, before
    /// the mapping is deleted).
    hold: Option<PortReservation>,
    /// The port's claim with the other port-mapping techniques, put here by
    /// [`UpnpLease::hold`]; the lease's thread frees it after the mapping is deleted.
    claim: Arc<Mutex<Option<natt_core::arbiter::HeldClaim>>>,
    shared: Arc<Shared>,
}

/// What a lease maps.
#[derive(Debug, Clone)]
pub(crate) struct Mapping {
    pub protocol: Protocol,
    pub external_port: u16,
    pub internal: std::net::SocketAddrV4,
    pub lease_secs: u32,
    pub description: String,
}

impl Mapping {
    fn request(&self) -> MappingRequest {
        MappingRequest {
            protocol: self.protocol,
            external_port: self.external_port,
            internal: self.internal,
            lease_secs: self.lease_secs,
            description: self.description.clone(),
        }
    }
}

impl UpnpLease {
    /// Keeps the port's claim with the other port-mapping techniques while the lease lives.
    pub(crate) fn hold(&mut self, claim: natt_core::arbiter::HeldClaim) {
        *self.claim.lock().unwrap_or_else(PoisonError::into_inner) = Some(claim);
    }

    /// Deletes the mapping and waits until that is over, or until `deadline` (or the lease's
    /// own bound, twice the call timeout and a little, if sooner). True when the mapping is
    /// known gone from the gateway; false when the deletion failed or is still under way (it
    /// then goes on in the background, bounded by the call timeout; a mapping not deleted
    /// expires with its lease).
    pub fn release(mut self, deadline: Instant) -> bool {
        self.begin_release();
        self.wait_for_end(deadline)
    }

    /// Gives up the port and wakes the thread to delete the mapping (once).
    fn begin_release(&mut self) {
        drop(self.hold.take()); // a renewal granted late from now on is deleted again
        self.keeper.start_release(); // wakes the thread at once
        if self.release_by.is_none() {
            self.release_by = Some(bounded::in_from_now(self.release_wait));
        }
    }

    /// Waits for the thread to end until `deadline` at most (and the release's own bound);
    /// whether the mapping is known gone.
    fn wait_for_end(&mut self, deadline: Instant) -> bool {
        if let Some(gone) = self.keeper.ended() {
            return gone;
        }
        let until = self.release_by.map_or(deadline, |by| by.min(deadline));
        self.keeper.wait_until(until).unwrap_or(false)
    }

    /// Starts holding `mapping` on `gateway`: its thread renews it until the lease is dropped.
    pub(crate) fn start(
        gateway: Arc<Gateway>,
        external_ip: std::net::Ipv4Addr,
        mapping: Mapping,
        hold: PortReservation,
        shared: Arc<Shared>,
    ) -> Result<UpnpLease, (UpnpError, PortReservation)> {
        let call_timeout = shared.config.call_timeout;
        let describe = format!(
            "upnp {} {}:{} -> {} ({}) via {}",
            mapping.protocol,
            external_ip,
            mapping.external_port,
            mapping.internal,
            match mapping.lease_secs {
                0 => "permanent lease".to_owned(),
                s => format!("lease {s} s"),
            },
            gateway.control
        );
        let claim = Arc::new(Mutex::new(None));
        let lifetime = (mapping.lease_secs > 0).then(|| Duration::from_secs(u64::from(mapping.lease_secs)));
        let renewer = Renewer {
            gateway,
            mapping,
            shared: Arc::clone(&shared),
            keep_late: hold.keep_late_renewal(),
            pending: Arc::new(()),
            name: describe.clone(),
            claim: Arc::clone(&claim),
        };
        let keeper = match Keeper::spawn(renewer, lifetime, Duration::ZERO, NAMES) {
            Ok(k) => k,
            Err(e) => {
                let e = UpnpError::Io {
                    what: "starting the lease thread".into(),
                    source: e,
                };
                return Err((e, hold));
            }
        };
        Ok(UpnpLease {
            describe,
            keeper,
            release_wait: call_timeout
                .saturating_mul(2)
                .saturating_add(Duration::from_millis(500)),
            release_by: None,
            drop_wait: DROP_WAIT.min(call_timeout),
            hold: Some(hold),
            claim,
            shared,
        })
    }
}

/// How the lease keeper names its thread and logs.
const NAMES: KeeperNames = KeeperNames {
    thread: "natt-upnp-lease",
    log_target: module_path!(),
    log_prefix: "upnp",
};

/// What the lease keeper holds: the mapping on its gateway, renewed and deleted by SOAP calls.
///
/// A renewal that the gateway grants after its call timed out is kept (`keep_late`) while the
/// lease holds the port: deleting it would delete the mapping the lease still holds. Once the
/// lease has let the port go, such a grant is deleted again. A renewal still under way on its
/// worker (a SOAP request's own timeouts) is not doubled by the next one: that one is skipped.
struct Renewer<K> {
    gateway: Arc<Gateway>,
    mapping: Mapping,
    shared: Arc<Shared>,
    keep_late: K,
    /// Shared with the worker of each renewal until it ends: more than one owner means the
    /// last renewal's request is still under way.
    pending: Arc<()>,
    name: String,
    /// The port's claim, freed once the mapping is deleted.
    claim: Arc<Mutex<Option<natt_core::arbiter::HeldClaim>>>,
}

impl<K> Renewable for Renewer<K>
where
    K: FnOnce() -> bool + Clone + Send + 'static,
{
    type Error = UpnpError;

    fn describe(&self) -> String {
        self.name.clone()
    }

    fn renew(&mut self, _stop: &Stop) -> Renewal<UpnpError> {
        let name = &self.name;
        if Arc::strong_count(&self.pending) > 1 {
            log::debug!("upnp: {name}: the last renewal is still under way; not renewing again yet");
            return Renewal::Busy;
        }
        let deadline = bounded::in_from_now(self.shared.config.call_timeout);
        let (token, keep) = (Arc::clone(&self.pending), self.keep_late.clone());
        let keep = move || {
            let _pending = token;
            keep()
        };
        let renewed = self.gateway.add_port(&self.mapping.request(), deadline, keep);
        self.shared.heard(&renewed);
        match renewed {
            Ok(()) => Renewal::Renewed(Duration::from_secs(u64::from(self.mapping.lease_secs))),
            Err(e) => Renewal::Failed(e),
        }
    }

    /// A gateway that no longer answers where it did is looked for again.
    fn recover(&mut self, error: &UpnpError) {
        if error.is_unreachable()
            && let Some(found) = self
                .shared
                .regain(&self.gateway, bounded::in_from_now(self.shared.config.call_timeout))
        {
            log::info!("upnp: {}: the gateway now answers at {}", self.name, found.control);
            self.gateway = found;
        }
    }

    fn delete(self) -> bool {
        let name = &self.name;
        let deadline = bounded::in_from_now(self.shared.config.call_timeout);
        let r = self
            .gateway
            .remove_port(self.mapping.protocol, self.mapping.external_port, deadline);
        self.shared.heard(&r);
        let gone = match r {
            Ok(()) => {
                log::debug!("upnp: deleted {name}");
                true
            }
            Err(e) if e.code() == Some(NO_SUCH_ENTRY) => {
                log::debug!("upnp: {name} was already gone");
                true
            }
            Err(e) => {
                log::warn!("upnp: could not delete {name} (it expires with its lease): {e}");
                false
            }
        };
        // Only now may another technique map the port.
        drop(self.claim.lock().unwrap_or_else(PoisonError::into_inner).take());
        gone
    }
}

impl Lease for UpnpLease {
    fn describe(&self) -> String {
        self.describe.clone()
    }

    fn start_release(&mut self) {
        self.begin_release();
    }

    fn wait_released(&mut self) {
        let by = self.release_by.unwrap_or_else(Instant::now);
        if !self.wait_for_end(by) && self.keeper.ended().is_none() {
            log::warn!(
                "upnp: {} not confirmed deleted within {:?}; it expires with its lease",
                self.describe,
                self.release_wait
            );
        }
    }
}

impl Drop for UpnpLease {
    /// Wakes the lease's thread to delete the mapping, and waits for that briefly at most
    /// (see the module documentation).
    fn drop(&mut self) {
        self.begin_release();
        if self.keeper.ended().is_some() {
            return;
        }
        let wait = if self.shared.silent.load(Ordering::Relaxed) {
            Duration::ZERO
        } else {
            self.drop_wait
        };
        if !self.wait_for_end(bounded::in_from_now(wait)) && self.keeper.ended().is_none() {
            if !wait.is_zero() {
                // The gateway is slow or gone: the next drops do not wait for it either.
                self.shared.silent.store(true, Ordering::Relaxed);
            }
            log::debug!(
                "upnp: deleting {} goes on in the background (within {:?})",
                self.describe,
                self.release_wait
            );
        }
    }
}

impl std::fmt::Debug for UpnpLease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("UpnpLease").field(&self.describe).finish()
    }
}
