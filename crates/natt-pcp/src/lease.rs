//! [`PcpLease`]: a PCP or NAT-PMP mapping, renewed while it lives and deleted when dropped.
//!
//! One thread per lease (natt-core's [`Keeper`]) does all its talking to the gateway, in
//! order. It renews the mapping at half its granted lifetime (sooner again after a failure),
//! waiting on a channel rather than sleeping, so a drop wakes it at once. This module holds
//! only the protocol calls ([`Renewable`]). Each reply's epoch is checked (RFC 6887
//! section 8.5, RFC 6886 section 3.6): when it shows that the gateway lost its state (it
//! restarted), the renewal that saw it has already made the mapping again (a renewal is the
//! same request as the creation); NAT-PMP then also asks the external address again, which
//! may have changed. When the lease is dropped the thread deletes the mapping (lifetime 0,
//! PCP with the same nonce) and the drop waits for that, bounded.

use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use natt_core::Lease;
use natt_core::lease::{Keeper, KeeperNames, Renewable, Renewal, Stop};
use natt_core::udp::STOP_POLL;

use crate::driver::{self, Driven};
use crate::epoch::{EpochTracker, Verdict};
use crate::error::PcpError;
use crate::pcp_wire;
use crate::result_code::Pcp;
use crate::transaction::{Grant, MapSpec, Outcome, Transaction, Version};

/// What a lease holds now, for logs and tests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseStatus {
    /// The protocol that made the mapping.
    pub version: Version,
    /// The gateway.
    pub gateway: SocketAddr,
    /// The internal address and port mapped.
    pub internal: SocketAddr,
    /// UDP or TCP.
    pub protocol: natt_core::Protocol,
    /// Where peers reach it (it may change when the gateway restarts).
    pub external: SocketAddr,
    /// The lifetime last granted.
    pub lifetime: Duration,
    /// Renewals that succeeded.
    pub renewals: u32,
    /// Renewals that failed.
    pub failures: u32,
    /// Times the gateway was seen to have lost its state.
    pub restarts: u32,
}

impl LeaseStatus {
    fn describe(&self) -> String {
        format!(
            "{} {} {} -> {} via {} (lifetime {} s)",
            self.version.name(),
            self.protocol,
            self.external,
            self.internal,
            self.gateway,
            self.lifetime.as_secs()
        )
    }
}

/// Timing of a lease's renewals and deletion.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeaseTiming {
    /// The bound on deleting the mapping when the lease is dropped.
    pub release_timeout: Duration,
    /// The least time between two renewals (however short the lifetime granted).
    pub min_renewal_interval: Duration,
}

impl Default for LeaseTiming {
    fn default() -> Self {
        LeaseTiming {
            release_timeout: Duration::from_secs(2),
            min_renewal_interval: Duration::from_millis(500),
        }
    }
}

/// A mapping held on a PCP or NAT-PMP gateway (see the module documentation).
pub struct PcpLease {
    status: Arc<Mutex<LeaseStatus>>,
    /// The lease's thread: it renews the mapping, and deletes it when released.
    keeper: Keeper,
    release_wait: Duration,
    /// Whether the wait for the deletion is over (so that dropping does not wait again).
    released: bool,
    /// The port's claim with the other port-mapping techniques; freed after the mapping is
    /// deleted (fields drop after `Drop::drop`).
    claim: Option<natt_core::arbiter::HeldClaim>,
}

/// Why a lease did not start, with what is needed to delete the mapping it was to hold.
pub(crate) struct NotStarted {
    pub error: PcpError,
    pub socket: UdpSocket,
    pub spec: MapSpec,
}

/// What the lease keeper holds: everything the lease's thread needs.
struct Held {
    socket: UdpSocket,
    gateway: SocketAddr,
    spec: MapSpec,
    grant: Grant,
    epochs: EpochTracker,
    timing: LeaseTiming,
    status: Arc<Mutex<LeaseStatus>>,
}

impl PcpLease {
    /// Starts holding the mapping `grant` made for `spec` on `gateway` (through `socket`,
    /// connected to it). `epochs` has seen the grant's epoch.
    pub(crate) fn start(
        socket: UdpSocket,
        spec: MapSpec,
        grant: Grant,
        epochs: EpochTracker,
        timing: LeaseTiming,
    ) -> Result<PcpLease, Box<NotStarted>> {
        let gateway = match socket.peer_addr() {
            Ok(g) => g,
            Err(e) => {
                return Err(Box::new(NotStarted {
                    error: PcpError::io("the gateway socket is not connected", e),
                    socket,
                    spec,
                }));
            }
        };
        let status = Arc::new(Mutex::new(LeaseStatus {
            version: grant.version,
            gateway,
            internal: SocketAddr::new(spec.client, spec.internal_port),
            protocol: spec.protocol,
            external: grant.external,
            lifetime: Duration::from_secs(u64::from(grant.lifetime)),
            renewals: 0,
            failures: 0,
            restarts: 0,
        }));
        // The thread needs its own handle: if it cannot start, the caller still has the
        // socket and the spec to delete the mapping with.
        let thread_socket = match socket.try_clone() {
            Ok(s) => s,
            Err(e) => {
                return Err(Box::new(NotStarted {
                    error: PcpError::io("cloning the gateway socket", e),
                    socket,
                    spec,
                }));
            }
        };
        let lifetime = Duration::from_secs(u64::from(grant.lifetime));
        let held = Held {
            socket: thread_socket,
            gateway,
            spec: spec.clone(),
            grant,
            epochs,
            timing,
            status: Arc::clone(&status),
        };
        let keeper = match Keeper::spawn(held, Some(lifetime), timing.min_renewal_interval, NAMES) {
            Ok(k) => k,
            Err(e) => {
                return Err(Box::new(NotStarted {
                    error: PcpError::io("starting the lease thread", e),
                    socket,
                    spec,
                }));
            }
        };
        Ok(PcpLease {
            status,
            keeper,
            // A renewal notices the stop within STOP_POLL; then the deletion.
            release_wait: timing.release_timeout + STOP_POLL * 2 + Duration::from_millis(500),
            released: false,
            claim: None,
        })
    }

    /// What the lease holds now.
    pub fn status(&self) -> LeaseStatus {
        self.status.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }
}

/// PCP result codes that answer a deletion of a mapping that is not (or no longer) ours.
const NO_RESOURCES: u16 = pcp_wire::ResultCode::NO_RESOURCES.0 as u16;
const NOT_AUTHORIZED: u16 = pcp_wire::ResultCode::<Pcp>::NOT_AUTHORIZED.0 as u16;

impl Held {
    fn update(&self, f: impl FnOnce(&mut LeaseStatus)) {
        f(&mut self.status.lock().unwrap_or_else(PoisonError::into_inner));
    }

    fn name(&self) -> String {
        self.status.lock().unwrap_or_else(PoisonError::into_inner).describe()
    }

    fn lifetime(&self) -> Duration {
        Duration::from_secs(u64::from(self.grant.lifetime))
    }

    /// One renewal, until `deadline`; `Ok(false)` when stopped meanwhile.
    fn renew_until(&mut self, deadline: Instant, stop: &Stop) -> Result<bool, PcpError> {
        let mut spec = self.spec.clone();
        spec.suggested = Some(self.grant.external);
        let now = Instant::now();
        // A gateway that now speaks only NAT-PMP (new firmware after a restart) is followed.
        let fallback = self.grant.version == Version::Pcp;
        let mut tx = Transaction::map(
            self.gateway,
            spec.clone(),
            self.grant.version,
            fallback,
            now,
            driver::jitter(),
        );
        if let (Version::NatPmp, IpAddr::V4(ip)) = (self.grant.version, self.grant.external.ip()) {
            tx = tx.with_known_external(ip, now);
        }
        let mut grant = match driver::drive(&self.socket, &mut tx, deadline, Some(stop)) {
            Driven::Stopped => return Ok(false),
            Driven::Done(Ok(Outcome::Mapped(g))) => g,
            Driven::Done(Ok(other)) => {
                return Err(PcpError::Malformed {
                    gateway: self.gateway,
                    version: self.grant.version,
                    why: format!("unexpected answer to a renewal: {other:?}"),
                });
            }
            Driven::Done(Err(e)) => return Err(e),
        };
        if grant.version != self.grant.version {
            log::warn!("pcp: the gateway {} now speaks {} only", self.gateway, grant.version);
            self.epochs.switch(grant.version);
        }
        if let Verdict::LostState { previous, current } = self.epochs.observe(Instant::now(), grant.epoch) {
            log::warn!(
                "pcp: gateway {} lost its state (epoch {previous} -> {current}): it restarted; mapping made again",
                self.gateway
            );
            self.update(|s| s.restarts += 1);
            if grant.version == Version::NatPmp {
                // The renewal made the mapping again; the external address may have changed.
                let mut tx = Transaction::map(
                    self.gateway,
                    spec,
                    Version::NatPmp,
                    false,
                    Instant::now(),
                    driver::jitter(),
                );
                match driver::drive(&self.socket, &mut tx, deadline, Some(stop)) {
                    Driven::Stopped => return Ok(false),
                    Driven::Done(Ok(Outcome::Mapped(g))) => {
                        let _ = self.epochs.observe(Instant::now(), g.epoch);
                        grant = g;
                    }
                    Driven::Done(Ok(_)) => {}
                    Driven::Done(Err(e)) => return Err(e),
                }
            }
        }
        if grant.external != self.grant.external {
            log::warn!(
                "pcp: the gateway {} now maps {}:{} to {} instead of {}; peers given the old address cannot reach it",
                self.gateway,
                self.spec.client,
                self.spec.internal_port,
                grant.external,
                self.grant.external
            );
        }
        self.grant = grant;
        self.update(|s| {
            s.version = grant.version;
            s.external = grant.external;
            s.lifetime = Duration::from_secs(u64::from(grant.lifetime));
            s.renewals += 1;
        });
        Ok(true)
    }
}

/// How the lease keeper names its thread and logs.
const NAMES: KeeperNames = KeeperNames {
    thread: "natt-pcp-lease",
    log_target: module_path!(),
    log_prefix: "pcp",
};

impl Renewable for Held {
    type Error = PcpError;

    fn describe(&self) -> String {
        self.name()
    }

    fn renew(&mut self, stop: &Stop) -> Renewal<PcpError> {
        // Until the mapping expires (at half the lifetime from now), at least a few
        // retransmissions' worth.
        let window = (self.lifetime() / 2).max(Duration::from_secs(2));
        match self.renew_until(Instant::now() + window, stop) {
            Ok(true) => Renewal::Renewed(self.lifetime()),
            Ok(false) => Renewal::Stopped,
            Err(e) => {
                self.update(|s| s.failures += 1);
                Renewal::Failed(e)
            }
        }
    }

    /// Deletes the mapping, bounded by the release timeout.
    fn delete(self) -> bool {
        let name = self.name();
        delete_mapping(&self.socket, self.spec, self.grant, self.timing.release_timeout, &name)
    }
}

/// Deletes a mapping (lifetime 0; PCP with the nonce that made it), waiting at most `timeout`;
/// whether it is known gone (or no longer ours).
pub(crate) fn delete_mapping(
    socket: &UdpSocket,
    mut spec: MapSpec,
    grant: Grant,
    timeout: Duration,
    name: &str,
) -> bool {
    let Ok(gateway) = socket.peer_addr() else {
        return false;
    };
    spec.suggested = Some(grant.external);
    let now = Instant::now();
    let mut tx = Transaction::delete(gateway, spec, grant.version, now, driver::jitter());
    match driver::drive(socket, &mut tx, now + timeout, None) {
        Driven::Done(Ok(_)) => {
            log::debug!("pcp: deleted {name}");
            true
        }
        // miniupnpd's answers when the mapping is no longer ours to delete: gone already
        // (expired, or deleted through UPnP for the same port), or taken over by another
        // client's request for the same internal port (another nonce, or UPnP).
        Driven::Done(Err(e))
            if grant.version == Version::Pcp && matches!(e.result_code(), Some(NO_RESOURCES | NOT_AUTHORIZED)) =>
        {
            log::info!("pcp: {name} is no longer ours to delete: {e}");
            true
        }
        Driven::Done(Err(e)) => {
            log::warn!("pcp: could not delete {name} (it expires with its lifetime): {e}");
            false
        }
        Driven::Stopped => false,
    }
}

impl Lease for PcpLease {
    fn describe(&self) -> String {
        self.status().describe()
    }

    fn start_release(&mut self) {
        self.keeper.start_release(); // wakes the thread at once: it deletes the mapping
    }

    fn wait_released(&mut self) {
        if self.released {
            return;
        }
        self.released = true;
        if self.keeper.wait_for(self.release_wait).is_none() {
            log::warn!(
                "pcp: {} not confirmed deleted within {:?}; it expires with its lifetime",
                self.describe(),
                self.release_wait
            );
        }
    }
}

impl PcpLease {
    /// Keeps the port's claim with the other port-mapping techniques while the lease lives.
    pub(crate) fn hold(&mut self, claim: natt_core::arbiter::HeldClaim) {
        self.claim = Some(claim);
    }
}

impl Drop for PcpLease {
    fn drop(&mut self) {
        self.start_release();
        self.wait_released();
    }
}

impl std::fmt::Debug for PcpLease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("PcpLease").field(&self.describe()).finish()
    }
}
