//! The gateway cache: a [`UpnpTechnique`](crate::UpnpTechnique)'s state, shared with its
//! leases. The gateway found, kept until it fails to answer; the gateways given by URL; the
//! one search under way, whose result the others who need a gateway wait for; the failed
//! search remembered for [`UpnpConfig::search_again_after`]; finding the gateway again for a
//! lease whose gateway stopped answering; what the gateway's last answers said. (The ports
//! reserved are kept in the same state; they are [`crate::port_choice`]'s.) Why: the crate
//! documentation, **Discovery**.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::Instant;

use natt_core::deadline;

use crate::bounded;
use crate::error::UpnpError;
use crate::gateway::{Gateway, GatewayInfo};
use crate::load;
use crate::port_choice::ReservedKey;
use crate::search::{self, Target};
use crate::technique::UpnpConfig;

/// The technique's state, shared with its leases (which ask it to find a gateway again when
/// theirs stops answering).
#[derive(Debug)]
pub(crate) struct Shared {
    pub config: UpnpConfig,
    state: Mutex<State>,
    /// Signalled when a search ends (see [`State::searching`]).
    searched: Condvar,
    /// Set when the gateway last failed to answer a lease (or to answer a deletion within a
    /// dropping lease's short wait), cleared when it answers: dropping a lease does not wait
    /// for a gateway that is not answering.
    pub silent: AtomicBool,
    /// The gateway's last answer about its external address was unusable (`0.0.0.0`, not
    /// connected): ask it before mapping, not at the same time.
    pub external_unusable: AtomicBool,
}

/// Who asks for the gateway: a mapping, or a lease whose gateway stopped answering.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Purpose {
    /// A mapping (or [`UpnpTechnique::find_gateway`](crate::UpnpTechnique::find_gateway)): a
    /// recent failed multicast search fails it at once; gateways given by URL are searched for
    /// until its deadline every time.
    Map,
    /// A lease looking for its gateway again, in the background: any recent failed search,
    /// gateways given by URL included, makes it wait for the next retry.
    Regain,
}

#[derive(Debug, Default)]
pub(crate) struct State {
    /// Gateways given explicitly (their URLs and addresses): loaded from their URLs (or
    /// searched for by unicast if nothing answers there) instead of a multicast search.
    explicit: Vec<(String, Ipv4Addr)>,
    /// The gateway in use.
    gateway: Option<Arc<Gateway>>,
    /// What we last learnt of a gateway, for reports.
    info: Option<GatewayInfo>,
    /// When a search last found nothing, and why.
    failed_search: Option<(Instant, String)>,
    /// The external ports reserved, each by the ids of its reservations (see
    /// [`PortReservation`](crate::port_choice::PortReservation)).
    pub(crate) reserved: HashMap<ReservedKey, Vec<u64>>,
    /// The id of the next [`PortReservation`](crate::port_choice::PortReservation).
    pub(crate) next_reservation: u64,
    /// A search is under way: the others who need a gateway wait for its result rather than
    /// search too (one search at a time, whatever the number of mappings and leases).
    searching: bool,
}

/// Marks the end of a search (see [`State::searching`]) when dropped.
struct Searching<'a>(&'a Shared);

impl Drop for Searching<'_> {
    fn drop(&mut self) {
        self.0.lock().searching = false;
        self.0.searched.notify_all();
    }
}

impl Shared {
    /// The state of a technique with `config`, which has found no gateway yet.
    pub(crate) fn new(config: UpnpConfig) -> Self {
        Shared {
            config,
            state: Mutex::new(State::default()),
            searched: Condvar::new(),
            silent: AtomicBool::new(false),
            external_unusable: AtomicBool::new(false),
        }
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Uses the gateway given at `url` (whose address is `ip`) from now on, instead of the
    /// one found by searching (see
    /// [`UpnpTechnique::add_gateway`](crate::UpnpTechnique::add_gateway)).
    pub(crate) fn add_gateway(&self, url: &str, ip: Ipv4Addr) {
        let mut state = self.lock();
        if !state.explicit.iter().any(|(_, known)| *known == ip) {
            state.explicit.push((url.to_owned(), ip));
        }
        // A gateway found by searching gives way to the one given.
        state.gateway = None;
        state.failed_search = None;
    }

    /// What we last learnt of a gateway, for reports.
    pub(crate) fn info(&self) -> Option<GatewayInfo> {
        self.lock().info.clone()
    }

    /// Notes whether the gateway's answer about its external address was usable.
    pub(crate) fn heard_external(&self, answer: Result<Ipv4Addr, UpnpError>) -> Result<Ipv4Addr, UpnpError> {
        match &answer {
            Ok(_) => self.external_unusable.store(false, Ordering::Relaxed),
            Err(UpnpError::NoExternalAddress(_)) => self.external_unusable.store(true, Ordering::Relaxed),
            Err(_) => {}
        }
        answer
    }

    /// Notes whether a lease's call to the gateway was answered (see [`Shared::silent`]).
    pub(crate) fn heard<T>(&self, result: &Result<T, UpnpError>) {
        let silent = result.as_ref().is_err_and(UpnpError::is_unreachable);
        self.silent.store(silent, Ordering::Relaxed);
    }

    /// Records what a report should say about `gateway`.
    pub(crate) fn note(&self, gateway: &Gateway, external: Option<Ipv4Addr>) {
        self.lock().info = Some(gateway.info(external));
    }

    /// The gateway to use: the cached one (`true`), else one found now (its external address
    /// is asked by the mapping, at the same time as the mapping itself). One search at a
    /// time: while another caller searches, this one waits for its result (until `deadline`)
    /// instead of searching too, then takes the gateway it found, or its failure (see
    /// [`Purpose`]), or searches itself if that search proved nothing.
    pub(crate) fn gateway(&self, deadline: Instant, purpose: Purpose) -> Result<(Arc<Gateway>, bool), UpnpError> {
        let explicit = {
            let mut state = self.lock();
            loop {
                if let Some(gateway) = &state.gateway {
                    return Ok((Arc::clone(gateway), true));
                }
                if let Some(e) = self.backing_off(&state, purpose) {
                    return Err(e);
                }
                if !state.searching {
                    break;
                }
                let Some(left) = deadline::remaining(deadline) else {
                    return Err(UpnpError::timed_out(
                        "waiting for another search for the UPnP gateway to end",
                    ));
                };
                state = self
                    .searched
                    .wait_timeout(state, left)
                    .unwrap_or_else(PoisonError::into_inner)
                    .0;
            }
            state.searching = true;
            state.explicit.clone()
        };
        // Ends the search (and wakes those waiting) however this function returns.
        let _searching = Searching(self);
        // No lock is held while talking to the network.
        let gateway = if explicit.is_empty() {
            self.search(deadline)?
        } else {
            self.given(&explicit, deadline).map_err(|e| {
                let given: Vec<&str> = explicit.iter().map(|(url, _)| url.as_str()).collect();
                log::debug!("upnp: the gateway given ({}) did not answer: {e}", given.join(", "));
                // Only leases looking for their gateway again heed this (see `Purpose`).
                self.lock().failed_search = Some((Instant::now(), e.to_string()));
                e
            })?
        };
        log::info!(
            "upnp: gateway {} ({}), control {}",
            gateway.description,
            gateway.version,
            gateway.control
        );
        let gateway = Arc::new(gateway);
        {
            let mut state = self.lock();
            state.gateway = Some(Arc::clone(&gateway));
            // A report names it from now on, whatever its first answers.
            state.info = Some(gateway.info(None));
            state.failed_search = None;
        }
        Ok((gateway, false))
    }

    /// The error to fail with at once, without searching, after a recent search that found
    /// nothing (see [`Purpose`]).
    fn backing_off(&self, state: &State, purpose: Purpose) -> Option<UpnpError> {
        let (at, why) = state.failed_search.as_ref()?;
        let applies = state.explicit.is_empty() || purpose == Purpose::Regain;
        let ago = at.elapsed();
        (applies && ago < self.config.search_again_after).then(|| {
            UpnpError::NoGateway(format!(
                "{why} ({} s ago; next search in {} s)",
                ago.as_secs(),
                self.config.search_again_after.saturating_sub(ago).as_secs()
            ))
        })
    }

    /// The gateway at the first of the URLs given that loads; if none does because nothing
    /// answers there (refused, not found, no connection within the connect timeout) and time
    /// is left, the first that answers a unicast SSDP search to their hosts (its HTTP port or
    /// paths may have changed since the URL was taken, e.g. after a restart). A description
    /// that is there but unusable is an error at once.
    fn given(&self, explicit: &[(String, Ipv4Addr)], deadline: Instant) -> Result<Gateway, UpnpError> {
        let urls: Vec<String> = explicit.iter().map(|(url, _)| url.clone()).collect();
        let errors = match load::load_first(&urls, deadline) {
            Ok(gateway) => return Ok(gateway),
            Err(errors) => errors,
        };
        let moved = errors.iter().any(load::nobody_there);
        let e = UpnpError::summarize(errors, "no gateway URL given");
        if !moved || deadline::remaining(deadline).is_none() {
            return Err(e);
        }
        log::info!("upnp: {e}; searching for the gateway at its address instead");
        let port = self.config.ssdp_addr.port();
        let targets: Vec<Target> = explicit.iter().map(|(_, ip)| Target::unicast(*ip, port)).collect();
        search::search(&targets, deadline, deadline).map_err(|s| UpnpError::NoGateway(format!("{e}; then {s}")))
    }

    /// A multicast search from every interface (or [`UpnpConfig::search_from`]).
    fn search(&self, deadline: Instant) -> Result<Gateway, UpnpError> {
        let from = match &self.config.search_from {
            Some(from) => from.clone(),
            None => ipv4_interfaces(),
        };
        let mut targets: Vec<Target> = from
            .iter()
            .map(|ip| Target::from_interface(*ip, self.config.ssdp_addr))
            .collect();
        // Only the router of the default route is taken as the gateway, when there is one (and
        // the interfaces were not chosen by the configuration); it is also searched for by
        // unicast, in case it does not answer multicast.
        if self.config.search_from.is_none()
            && self.config.router_only
            && let Some(router) = natt_core::route::default_router()
        {
            for target in &mut targets {
                target.only = Some(router);
            }
            targets.push(Target::unicast(router, self.config.ssdp_addr.port()));
        }
        let window_end = bounded::in_from_now(self.config.search_window);
        let result = search::search(&targets, window_end, deadline);
        if let Err(e @ (UpnpError::NoGateway(_) | UpnpError::TimedOut { .. })) = &result {
            log::debug!("upnp: {e}");
        }
        // Nothing answered during a whole window: say so at once for a while. (A window cut
        // short by the caller's deadline proves nothing.)
        if let Err(UpnpError::NoGateway(why)) = &result
            && window_end <= deadline
        {
            self.lock().failed_search = Some((Instant::now(), why.clone()));
        }
        result
    }

    /// Drops `gateway` from the cache (it stopped answering).
    pub(crate) fn forget(&self, gateway: &Gateway) {
        let mut state = self.lock();
        if state.gateway.as_deref() == Some(gateway) {
            state.gateway = None;
        }
    }

    /// For a lease whose gateway stopped answering: the gateway on the same host, found again
    /// (it may have restarted on another port), or `None`. Searches only when no other search
    /// is under way (else waits for it) and none failed recently
    /// ([`UpnpConfig::search_again_after`]): many leases on a dead gateway search once.
    pub(crate) fn regain(&self, old: &Gateway, deadline: Instant) -> Option<Arc<Gateway>> {
        self.forget(old);
        match self.gateway(deadline, Purpose::Regain) {
            Ok((gateway, _)) if gateway.ip() == old.ip() && *gateway != *old => Some(gateway),
            Ok(_) => None,
            Err(e) => {
                log::debug!("upnp: looking for the gateway again: {e}");
                None
            }
        }
    }
}

/// Every non-loopback IPv4 interface address.
fn ipv4_interfaces() -> Vec<Ipv4Addr> {
    let mut ips: Vec<Ipv4Addr> = match if_addrs::get_if_addrs() {
        Ok(ifs) => ifs
            .into_iter()
            .filter_map(|i| match i.ip() {
                IpAddr::V4(ip) if !ip.is_loopback() && !ip.is_unspecified() => Some(ip),
                _ => None,
            })
            .collect(),
        Err(e) => {
            log::warn!("upnp: cannot list interfaces: {e}");
            Vec::new()
        }
    };
    ips.sort();
    ips.dedup();
    ips
}
