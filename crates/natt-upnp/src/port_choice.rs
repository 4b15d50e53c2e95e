//! Which external port to map, and whose it is: [`add_mapping`] asks for the socket's own
//! port first; when it is taken, lets an IGD:2 gateway pick one (`AddAnyPortMapping`) or
//! tries random ports on IGD:1, and takes a permanent lease only when the gateway supports
//! nothing else ([`permanent_if_must`]). Each port asked for or mapped is reserved
//! ([`PortReservation`]), so that a late grant is not deleted while the port is ours (see the crate
//! documentation, **Deadlines**).

use std::net::{Ipv4Addr, SocketAddrV4};
use std::sync::Arc;
use std::time::Instant;

use natt_core::{Protocol, deadline};
use rand::Rng;

use crate::cache::Shared;
use crate::error::UpnpError;
use crate::gateway::{Gateway, MappingRequest};

/// UPnP error codes the mapping logic reacts to.
mod code {
    pub const INVALID_ACTION: u16 = 401;
    pub const NOT_IMPLEMENTED: u16 = 602;
    pub const CONFLICT_IN_MAPPING_ENTRY: u16 = 718;
    pub const SAME_PORT_VALUES_REQUIRED: u16 = 724;
    pub const ONLY_PERMANENT_LEASES_SUPPORTED: u16 = 725;
    pub const CONFLICT_WITH_OTHER_MECHANISMS: u16 = 729;
}

/// A gateway's address, a protocol and an external port.
pub(crate) type ReservedKey = (Ipv4Addr, Protocol, u16);

/// An external port on a gateway that is ours: asked for by a mapping under way, or mapped by
/// a live lease. A mapping that the gateway grants after its caller gave up is deleted again
/// (see [`crate::bounded`]), by protocol and port; while another has that port reserved, such a deletion
/// would delete the newer mapping, so it is skipped. Dropping the reservation gives the port up.
#[derive(Debug)]
pub(crate) struct PortReservation {
    shared: Arc<Shared>,
    key: ReservedKey,
    id: u64,
}

impl PortReservation {
    /// The external port reserved.
    pub fn port(&self) -> u16 {
        self.key.2
    }

    /// For a request made under this reservation: true when a grant that comes after the caller gave
    /// up is to be kept, because someone else has the port reserved by then.
    pub fn keep_late(&self) -> impl FnOnce() -> bool + Send + 'static {
        let (shared, key, id) = (Arc::clone(&self.shared), self.key, self.id);
        move || shared.held_by_others(key, Some(id))
    }

    /// For a renewal by the lease that has this reservation: true when a grant that comes after the
    /// lease gave up waiting is to be kept, because the lease (or another) still has the port reserved.
    pub fn keep_late_renewal(&self) -> impl FnOnce() -> bool + Clone + Send + 'static {
        let (shared, key) = (Arc::clone(&self.shared), self.key);
        move || shared.held_by_others(key, None)
    }
}

impl Drop for PortReservation {
    fn drop(&mut self) {
        let mut state = self.shared.lock();
        if let Some(ids) = state.reserved.get_mut(&self.key) {
            ids.retain(|id| *id != self.id);
            if ids.is_empty() {
                state.reserved.remove(&self.key);
            }
        }
    }
}

impl Shared {
    /// Reserves `port` on the gateway at `gateway` (see [`PortReservation`]).
    pub(crate) fn reserve_port(self: &Arc<Self>, gateway: Ipv4Addr, protocol: Protocol, port: u16) -> PortReservation {
        let key = (gateway, protocol, port);
        let mut state = self.lock();
        let id = state.next_reservation;
        state.next_reservation = state.next_reservation.wrapping_add(1);
        state.reserved.entry(key).or_default().push(id);
        PortReservation {
            shared: Arc::clone(self),
            key,
            id,
        }
    }

    /// True when a reservation other than `except` has `key`.
    fn held_by_others(&self, key: ReservedKey, except: Option<u64>) -> bool {
        self.lock()
            .reserved
            .get(&key)
            .is_some_and(|ids| ids.iter().any(|id| Some(*id) != except))
    }
}

/// True for the answers that mean "this external port is taken".
fn is_conflict(e: &UpnpError) -> bool {
    matches!(
        e.code(),
        Some(code::CONFLICT_IN_MAPPING_ENTRY | code::CONFLICT_WITH_OTHER_MECHANISMS)
    )
}

/// Maps `internal` on `gateway`: the same external port when free, another when taken.
/// `AddPortMapping` with our port first; when it is taken, `AddAnyPortMapping` on
/// IGD:2 (the gateway picks), else `AddPortMapping` with a few random ports
/// ([`UpnpConfig::random_port_attempts`](crate::UpnpConfig::random_port_attempts)). Returns
/// the external port and the lease granted (0 only if the gateway supports permanent leases
/// alone).
///
/// Each port tried is reserved (see [`PortReservation`]) while it is asked for, so that a late grant of
/// an earlier attempt for it is not undone while it is ours; the reservation of the port mapped is
/// returned, for the lease to keep.
pub(crate) fn add_mapping(
    shared: &Arc<Shared>,
    gateway: &Gateway,
    protocol: Protocol,
    internal: SocketAddrV4,
    description: &str,
    deadline: Instant,
) -> Result<(PortReservation, u32), UpnpError> {
    let config = &shared.config;
    let mut lease_secs = config.lease_secs();
    let request = |external_port: u16, lease_secs: u32| MappingRequest {
        protocol,
        external_port,
        internal,
        lease_secs,
        description: description.to_owned(),
    };
    let own = internal.port();
    let reservation = shared.reserve_port(gateway.ip(), protocol, own);
    match permanent_if_must(&mut lease_secs, |l| {
        gateway.add_port(&request(own, l), deadline, reservation.keep_late())
    }) {
        Ok(()) => return Ok((reservation, lease_secs)),
        Err(e) if is_conflict(&e) => log::debug!("upnp: external port {own} is taken: {e}"),
        Err(e) => return Err(e),
    }
    if gateway.has_add_any() {
        drop(reservation);
        let (gateway_ip, late_shared) = (gateway.ip(), Arc::clone(shared));
        let keep = move |port: u16| late_shared.held_by_others((gateway_ip, protocol, port), None);
        match permanent_if_must(&mut lease_secs, |l| {
            gateway.add_any_port(&request(own, l), deadline, keep.clone())
        }) {
            Ok(port) => return Ok((shared.reserve_port(gateway.ip(), protocol, port), lease_secs)),
            Err(e) if matches!(e.code(), Some(code::INVALID_ACTION | code::NOT_IMPLEMENTED)) => {
                log::info!("upnp: {e}; trying random ports with AddPortMapping");
            }
            Err(e) => return Err(e),
        }
    }
    let mut rng = rand::rng();
    let mut taken = vec![own];
    let mut last = None;
    for _ in 0..config.random_port_attempts {
        if deadline::remaining(deadline).is_none() {
            return Err(UpnpError::timed_out(format!("mapping a port on {}", gateway.control)));
        }
        let port: u16 = rng.random_range(1024..=65535);
        let reservation = shared.reserve_port(gateway.ip(), protocol, port);
        match permanent_if_must(&mut lease_secs, |l| {
            gateway.add_port(&request(port, l), deadline, reservation.keep_late())
        }) {
            Ok(()) => return Ok((reservation, lease_secs)),
            Err(e) if is_conflict(&e) => {
                log::debug!("upnp: external port {port} is taken: {e}");
                taken.push(port);
                last = Some(e);
            }
            Err(e) if e.code() == Some(code::SAME_PORT_VALUES_REQUIRED) => {
                // Only the socket's own port may be mapped, and it is taken.
                return Err(UpnpError::NoPort(format!(
                    "port {own} is taken and the gateway maps no other ({e})"
                )));
            }
            Err(e) => return Err(e),
        }
    }
    Err(UpnpError::NoPort(format!(
        "ports {taken:?} are taken{}",
        last.map(|e| format!(" ({e})")).unwrap_or_default()
    )))
}

/// Runs `action` with `lease_secs`; if the gateway answers 725 (only permanent leases), once
/// more with a permanent lease, and leaves 0 in `lease_secs`.
fn permanent_if_must<T>(
    lease_secs: &mut u32,
    mut action: impl FnMut(u32) -> Result<T, UpnpError>,
) -> Result<T, UpnpError> {
    match action(*lease_secs) {
        Err(e) if e.code() == Some(code::ONLY_PERMANENT_LEASES_SUPPORTED) && *lease_secs != 0 => {
            log::warn!(
                "upnp: the gateway supports only permanent leases: this mapping will stay if the program dies \
                 without releasing it"
            );
            *lease_secs = 0;
            action(0)
        }
        r => r,
    }
}
