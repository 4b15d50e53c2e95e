//! [`UpnpTechnique`]: port mapping on a UPnP Internet Gateway Device, as a natt
//! [`MappingTechnique`] that maps beside the socket.
//!
//! Mapping a socket: find the gateway (the cached one; else the gateways given with
//! [`HolePunchServerAddr::IgdGateway`], loaded from their description URLs, see
//! [`crate::load`], or found by a unicast SSDP search to their hosts if that fails; else an
//! SSDP search, see [`crate::search`], multicast from every IPv4 interface and unicast to the
//! default route's router, taking that router only); then, at the same time, ask
//! its external address and map the socket's port to the host's address facing the gateway
//! (`AddPortMapping` with the socket's own port first; when that port is taken,
//! `AddAnyPortMapping` on IGD:2, random ports on IGD:1); and hold the mapping with an
//! [`UpnpLease`] that renews it and deletes it when dropped. Every call to the gateway is
//! bounded by the caller's deadline (see [`crate::call`]). The gateway found is cached in the
//! technique (so in the [`natt_core::MappingContext`] that keeps it), forgotten whenever it
//! does not answer and searched for again then (or by the next mapping when no time is left);
//! one search runs at a time, the others who need a gateway wait for its result.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

use natt_core::{
    HolePunchServerAddr, MappedSocketAddr, MappingTechnique, Protocol, TechniqueError, TechniqueMapping, deadline,
};
use rand::Rng;

use natt_core::arbiter::{Claim, ClaimGuard, ClaimKey, GatewayArbiter};

use crate::call;
use crate::error::UpnpError;
use crate::gateway::{Gateway, GatewayInfo, MappingRequest};
use crate::lease::{Mapping, UpnpLease};
use crate::load;
use crate::search::{self, Target};

/// The technique's name.
pub const NAME: &str = "upnp";

/// UPnP error codes the mapping logic reacts to.
mod code {
    pub const INVALID_ACTION: u16 = 401;
    pub const NOT_IMPLEMENTED: u16 = 602;
    pub const CONFLICT_IN_MAPPING_ENTRY: u16 = 718;
    pub const SAME_PORT_VALUES_REQUIRED: u16 = 724;
    pub const ONLY_PERMANENT_LEASES_SUPPORTED: u16 = 725;
    pub const CONFLICT_WITH_OTHER_MECHANISMS: u16 = 729;
}

/// The SSDP multicast address.
const SSDP_MULTICAST: SocketAddr = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::new(239, 255, 255, 250), 1900));

/// Longest lease IGD:2 allows (7 days).
const MAX_LEASE_SECS: u32 = 604_800;

/// How a [`UpnpTechnique`] maps. Start from [`UpnpConfig::default()`] and change fields.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct UpnpConfig {
    /// The lease asked for each mapping (default 1 hour), renewed at half of it while held.
    /// A finite lease means a program that dies leaves a mapping that expires by itself; a
    /// permanent one is used only when the gateway supports nothing else (error 725).
    /// Clamped to 1 s ..= 7 days.
    pub lease: Duration,
    /// The description shown in the router's list of mappings, followed by the protocol and
    /// port (default `natt`: `natt udp 40000`).
    pub description: String,
    /// On IGD:1 gateways (no `AddAnyPortMapping`), external ports tried at random with
    /// `AddPortMapping` after the socket's own port turns out to be taken (default 4). IGD:2
    /// gateways choose the port themselves (`AddAnyPortMapping`, one request).
    pub random_port_attempts: u32,
    /// How long a multicast SSDP search lasts (default 1.5 s), including reading the
    /// descriptions of the devices that answer. Never longer than the caller's deadline.
    /// Searches for gateways given by URL last until the caller's deadline instead.
    pub search_window: Duration,
    /// After a search that nothing answered, mappings fail at once for this long without
    /// searching again (default 30 s), so a network without UPnP costs one search window, not
    /// one per socket. Leases whose gateway stopped answering do not search again for this
    /// long after any failed search (gateways given by URL included), so many leases on a
    /// dead gateway do not each search at every retry.
    pub search_again_after: Duration,
    /// The bound on each renewal and on the deletion when a lease is dropped (default 3 s).
    /// (A SOAP request's own timeouts, 10 s to connect and 10 s for the answer, still end a
    /// request that outlives this bound, on its worker thread.)
    pub call_timeout: Duration,
    /// Where searches are sent (default the SSDP multicast address, `239.255.255.250:1900`).
    /// Its port is also the one unicast searches for gateways given by URL are sent to.
    pub ssdp_addr: SocketAddr,
    /// The interface addresses searched from (default `None`: every non-loopback IPv4
    /// interface).
    pub search_from: Option<Vec<Ipv4Addr>>,
    /// Take a gateway found by searching only when it is the router of this host's default
    /// route (default `true`; the filter needs a default route, read on Linux only). A device
    /// taken for the gateway gets natt's SOAP requests, and the mappings that make the socket
    /// reachable are the router's anyway. Set it to `false` where the gateway answers from
    /// another address than the default route's (VRRP/CARP virtual addresses) or is not the
    /// default router.
    ///
    /// SSDP answers are unauthenticated: any host on the LAN can forge answers from the
    /// router's address. With this filter in effect, what such a host can make natt fetch is
    /// an HTTP GET of `http://ROUTER:PORT/PATH`, ROUTER the default route's router, any port,
    /// path and query (no proxy, no redirects, at most 1 s to connect and 256 KiB read, within
    /// the search window or the caller's deadline, at most 16 distinct URLs per search socket
    /// per search); what comes back is read by natt's description reader, and only a usable
    /// gateway description on the router's address is taken. Forged answers do not use up the
    /// router's own: reads are counted per distinct URL and run concurrently, and the unicast
    /// search sent to the router has its own quota. Without the filter, the same GET can be
    /// aimed at any IPv4 address a forged answer claims to come from, and any device answering
    /// first may be taken as the gateway.
    pub router_only: bool,
}

impl Default for UpnpConfig {
    fn default() -> Self {
        UpnpConfig {
            lease: Duration::from_secs(3600),
            description: "natt".into(),
            random_port_attempts: 4,
            search_window: Duration::from_millis(1500),
            search_again_after: Duration::from_secs(30),
            call_timeout: Duration::from_secs(3),
            ssdp_addr: SSDP_MULTICAST,
            search_from: None,
            router_only: true,
        }
    }
}

impl UpnpConfig {
    /// The lease in whole seconds, within what IGD allows (never 0: that is permanent).
    pub fn lease_secs(&self) -> u32 {
        u32::try_from(self.lease.as_secs())
            .unwrap_or(MAX_LEASE_SECS)
            .clamp(1, MAX_LEASE_SECS)
    }
}

/// Maps sockets with UPnP IGD port mappings (see the module documentation).
///
#[cfg_attr(not(doctest), doc = include_str!("../doc/upnp_technique.md"))]
#[derive(Debug)]
pub struct UpnpTechnique {
    shared: Arc<Shared>,
    /// Takes turns with other port-mapping techniques (PCP, NAT-PMP) on one gateway.
    arbiter: Option<Arc<GatewayArbiter>>,
}

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
enum Purpose {
    /// A mapping (or [`UpnpTechnique::find_gateway`]): a recent failed multicast search fails
    /// it at once; gateways given by URL are searched for until its deadline every time.
    Map,
    /// A lease looking for its gateway again, in the background: any recent failed search,
    /// gateways given by URL included, makes it wait for the next retry.
    Regain,
}

#[derive(Debug, Default)]
struct State {
    /// Gateways given explicitly (their URLs and addresses): loaded from their URLs (or
    /// searched for by unicast if nothing answers there) instead of a multicast search.
    explicit: Vec<(String, Ipv4Addr)>,
    /// The gateway in use.
    gateway: Option<Arc<Gateway>>,
    /// What we last learnt of a gateway, for reports.
    info: Option<GatewayInfo>,
    /// When a search last found nothing, and why.
    failed_search: Option<(Instant, String)>,
    /// The external ports held, each by the ids of its holders (see [`PortHold`]).
    held: HashMap<HeldKey, Vec<u64>>,
    /// The id of the next [`PortHold`].
    next_hold: u64,
    /// A search is under way: the others who need a gateway wait for its result rather than
    /// search too (one search at a time, whatever the number of mappings and leases).
    searching: bool,
}

impl Default for UpnpTechnique {
    fn default() -> Self {
        Self::new()
    }
}

impl UpnpTechnique {
    /// A technique with the default [`UpnpConfig`].
    pub fn new() -> Self {
        Self::with_config(UpnpConfig::default())
    }

    /// Takes turns with the other port-mapping techniques sharing `arbiter` (such as PCP), so
    /// that only one of them maps a given port on a given gateway.
    pub fn with_arbiter(mut self, arbiter: Arc<GatewayArbiter>) -> Self {
        self.arbiter = Some(arbiter);
        self
    }

    /// A technique with `config`.
    pub fn with_config(config: UpnpConfig) -> Self {
        UpnpTechnique {
            shared: Arc::new(Shared {
                config,
                state: Mutex::new(State::default()),
                searched: Condvar::new(),
                silent: AtomicBool::new(false),
                external_unusable: AtomicBool::new(false),
            }),
            arbiter: None,
        }
    }

    /// The configuration.
    pub fn config(&self) -> &UpnpConfig {
        &self.shared.config
    }

    /// Uses the gateway whose root description is at `url` (e.g.
    /// `http://192.168.1.1:5000/rootDesc.xml`) instead of a multicast search; several may be
    /// given, the first that answers is used.
    ///
    /// The description at `url` is read directly, without an SSDP search (see
    /// [`crate::description`]). If nothing answers there before the deadline (e.g. the
    /// gateway restarted on another HTTP port), an SSDP search is sent to the URL's host alone (unicast, to [`UpnpConfig::ssdp_addr`]'s port, 1900), and the
    /// description URL the gateway answers with is used.
    pub fn add_gateway(&self, url: &str) -> Result<(), UpnpError> {
        let ip = gateway_host(url)?;
        let mut state = self.shared.lock();
        if !state.explicit.iter().any(|(_, known)| *known == ip) {
            state.explicit.push((url.to_owned(), ip));
        }
        // A gateway found by searching gives way to the one given.
        state.gateway = None;
        state.failed_search = None;
        Ok(())
    }

    /// The gateway last found (by a mapping or [`find_gateway`](Self::find_gateway)), if any,
    /// even if mapping on it then failed.
    pub fn gateway_info(&self) -> Option<GatewayInfo> {
        self.shared.lock().info.clone()
    }

    /// Finds the gateway now (or takes the cached one) and asks its external address, by
    /// `deadline`.
    pub fn find_gateway(&self, deadline: Instant) -> Result<GatewayInfo, UpnpError> {
        let (gateway, _) = self.shared.gateway(deadline, Purpose::Map)?;
        let external = self
            .shared
            .heard_external(gateway.external_ip(deadline))
            .inspect_err(|e| {
                if e.is_unreachable() {
                    self.shared.forget(&gateway);
                }
            })?;
        self.shared.note(&gateway, Some(external));
        Ok(gateway.info(Some(external)))
    }

    fn map(&self, protocol: Protocol, local: SocketAddr, deadline: Instant) -> Result<TechniqueMapping, UpnpError> {
        let SocketAddr::V4(local) = local else {
            return Err(UpnpError::NotApplicable("UPnP IGD maps IPv4 sockets only".into()));
        };
        if local.port() == 0 {
            return Err(UpnpError::NotApplicable("the socket is not bound to a port".into()));
        }
        let (gateway, cached) = self.shared.gateway(deadline, Purpose::Map)?;
        match self.map_on(&gateway, protocol, local, deadline) {
            Err(e) if e.is_unreachable() => {
                // Forgotten even when no time is left to search again: a gateway that stays
                // silent would otherwise stay cached, and every later mapping would wait its
                // whole deadline for it. The next mapping then searches afresh.
                self.shared.forget(&gateway);
                if !cached || deadline::remaining(deadline).is_none() {
                    log::info!(
                        "upnp: the gateway at {} did not answer ({e}); the next mapping searches for it again",
                        gateway.description
                    );
                    return Err(e);
                }
                log::info!(
                    "upnp: the gateway at {} stopped answering ({e}); searching again",
                    gateway.description
                );
                let (gateway, _) = self.shared.gateway(deadline, Purpose::Map)?;
                let r = self.map_on(&gateway, protocol, local, deadline);
                if let Err(e) = &r
                    && e.is_unreachable()
                {
                    self.shared.forget(&gateway);
                }
                r
            }
            r => r,
        }
    }

    /// Maps `local` on `gateway`. Its external address is asked at the same time, on a
    /// thread of its own: the two requests do not depend on each other, so a mapping takes
    /// one round of requests to the gateway less than asking one after the other. A mapping
    /// made while the address turned out unusable is deleted again; after such an answer, the
    /// address is asked first (and nothing is mapped while it stays unusable), until it is
    /// usable again.
    fn map_on(
        &self,
        gateway: &Arc<Gateway>,
        protocol: Protocol,
        local: SocketAddrV4,
        deadline: Instant,
    ) -> Result<TechniqueMapping, UpnpError> {
        let internal = SocketAddrV4::new(internal_ip(*local.ip(), gateway.ip())?, local.port());
        let config = &self.shared.config;
        let description = format!("{} {} {}", config.description, protocol, local.port());
        let add = || self.claim_and_add(gateway, protocol, internal, &description, deadline);
        let (external, added) = if self.shared.external_unusable.load(Ordering::Relaxed) {
            let external = self.shared.heard_external(gateway.external_ip(deadline))?;
            (Ok(external), add())
        } else {
            thread::scope(|scope| {
                let asking = thread::Builder::new()
                    .name("natt-upnp-external".into())
                    .spawn_scoped(scope, || gateway.external_ip(deadline));
                let added = add();
                let external = match asking {
                    Ok(asking) => asking.join().unwrap_or_else(|_| {
                        Err(UpnpError::Io {
                            what: "asking the external address".into(),
                            source: std::io::Error::other("the thread asking it panicked"),
                        })
                    }),
                    // No thread: one after the other.
                    Err(_) => gateway.external_ip(deadline),
                };
                (self.shared.heard_external(external), added)
            })
        };
        let (external_ip, (claim, hold, lease_secs)) = match (external, added) {
            (Ok(ip), Ok(added)) => (ip, added),
            (Ok(ip), Err(e)) => {
                self.shared.note(gateway, Some(ip));
                return Err(e);
            }
            (Err(e), Ok((claim, hold, _))) => {
                // Mapped, but the address to give out is unknown: undo the mapping.
                self.undo(gateway, protocol, hold, claim, deadline);
                return Err(e);
            }
            // A refusal or another technique's claim says more about the mapping; otherwise
            // the address's error comes first, as when it was asked first.
            (Err(_), Err(e @ (UpnpError::Refused { .. } | UpnpError::NotApplicable(_) | UpnpError::NoPort(_)))) => {
                return Err(e);
            }
            (Err(e), Err(_)) => return Err(e),
        };
        self.shared.note(gateway, Some(external_ip));
        if !is_public(external_ip) {
            log::info!(
                "upnp: the gateway's external address {external_ip} is not public: it is behind another NAT, and \
                 its mappings are reachable only from that network"
            );
        }
        let external_port = hold.port();
        self.shared.silent.store(false, Ordering::Relaxed);
        let mapping = Mapping {
            protocol,
            external_port,
            internal,
            lease_secs,
            description,
        };
        let lease = match UpnpLease::start(
            Arc::clone(gateway),
            external_ip,
            mapping,
            hold,
            Arc::clone(&self.shared),
        ) {
            Ok(mut lease) => {
                if let Some(guard) = claim {
                    lease.hold(guard.mapped());
                }
                lease
            }
            Err((e, hold)) => {
                self.undo(gateway, protocol, hold, claim, deadline);
                return Err(e);
            }
        };
        let endpoint = MappedSocketAddr::new(SocketAddr::from((external_ip, external_port)), false, NAME);
        Ok(TechniqueMapping {
            endpoints: vec![endpoint],
            lease: Some(Box::new(lease)),
        })
    }

    /// Claims the port from the arbiter (if any: PCP and UPnP take turns on one gateway) and
    /// maps it; the claim, the port held and the lease granted (seconds).
    fn claim_and_add(
        &self,
        gateway: &Gateway,
        protocol: Protocol,
        internal: SocketAddrV4,
        description: &str,
        deadline: Instant,
    ) -> Result<(Option<ClaimGuard>, PortHold, u32), UpnpError> {
        let claim = match &self.arbiter {
            None => None,
            Some(arbiter) => {
                let key = ClaimKey {
                    gateway: IpAddr::V4(gateway.ip()),
                    protocol,
                    internal: SocketAddr::V4(internal),
                };
                match arbiter.claim(key, NAME, deadline) {
                    Claim::Granted(guard) => Some(guard),
                    Claim::TakenBy(owner) => {
                        return Err(UpnpError::NotApplicable(format!(
                            "{owner} already maps this port on {}",
                            gateway.ip()
                        )));
                    }
                    Claim::TimedOut => {
                        return Err(UpnpError::NotApplicable(format!(
                            "another technique was still mapping this port on {} at the deadline",
                            gateway.ip()
                        )));
                    }
                }
            }
        };
        let (hold, lease_secs) = add_mapping(&self.shared, gateway, protocol, internal, description, deadline)?;
        Ok((claim, hold, lease_secs))
    }

    /// Deletes a mapping just made that cannot be used, waiting for that until `deadline` at
    /// most (a mapping not deleted expires with its lease). The port `hold` and the arbiter's
    /// `claim` are kept until the gateway has answered, even after the caller gave up: until
    /// then neither a late grant of ours nor another technique may take that port, which the
    /// deletion would delete.
    fn undo(
        &self,
        gateway: &Gateway,
        protocol: Protocol,
        hold: PortHold,
        claim: Option<ClaimGuard>,
        deadline: Instant,
    ) {
        let port = hold.port();
        match gateway.undo_port(protocol, port, deadline, (hold, claim)) {
            Ok(()) => log::debug!("upnp: deleted the unusable mapping of port {port}"),
            Err(e) => log::info!("upnp: deleting the unusable mapping of port {port}: {e} (it expires with its lease)"),
        }
    }
}

impl MappingTechnique for UpnpTechnique {
    fn name(&self) -> &str {
        NAME
    }

    fn add_server(&self, server: &HolePunchServerAddr) -> bool {
        match server {
            HolePunchServerAddr::IgdGateway(url) => match self.add_gateway(url) {
                Ok(()) => true,
                Err(e) => {
                    log::warn!("upnp: ignoring gateway {e}");
                    false
                }
            },
            _ => false,
        }
    }

    fn map_udp(&self, local: SocketAddr, deadline: Instant) -> Result<TechniqueMapping, TechniqueError> {
        self.map(Protocol::Udp, local, deadline).map_err(TechniqueError::from)
    }

    fn map_tcp(&self, local: SocketAddr, deadline: Instant) -> Result<TechniqueMapping, TechniqueError> {
        self.map(Protocol::Tcp, local, deadline).map_err(TechniqueError::from)
    }
}

/// A gateway's address, a protocol and an external port.
type HeldKey = (Ipv4Addr, Protocol, u16);

/// An external port on a gateway that is ours: asked for by a mapping under way, or mapped by
/// a live lease. A mapping that the gateway grants after its caller gave up is deleted again
/// (see [`crate::call`]), by protocol and port; while another holds that port, such a deletion
/// would delete the newer mapping, so it is skipped. Dropping the hold gives the port up.
#[derive(Debug)]
pub(crate) struct PortHold {
    shared: Arc<Shared>,
    key: HeldKey,
    id: u64,
}

impl PortHold {
    /// The external port held.
    pub fn port(&self) -> u16 {
        self.key.2
    }

    /// For a request made under this hold: true when a grant that comes after the caller gave
    /// up is to be kept, because someone else holds the port by then.
    pub fn keep_late(&self) -> impl FnOnce() -> bool + Send + 'static {
        let (shared, key, id) = (Arc::clone(&self.shared), self.key, self.id);
        move || shared.held_by_others(key, Some(id))
    }

    /// For a renewal by the lease that has this hold: true when a grant that comes after the
    /// lease gave up waiting is to be kept, because the lease (or another) still holds the port.
    pub fn keep_late_renewal(&self) -> impl FnOnce() -> bool + Clone + Send + 'static {
        let (shared, key) = (Arc::clone(&self.shared), self.key);
        move || shared.held_by_others(key, None)
    }
}

impl Drop for PortHold {
    fn drop(&mut self) {
        let mut state = self.shared.lock();
        if let Some(ids) = state.held.get_mut(&self.key) {
            ids.retain(|id| *id != self.id);
            if ids.is_empty() {
                state.held.remove(&self.key);
            }
        }
    }
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
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Holds `port` on the gateway at `gateway` (see [`PortHold`]).
    pub(crate) fn hold_port(self: &Arc<Self>, gateway: Ipv4Addr, protocol: Protocol, port: u16) -> PortHold {
        let key = (gateway, protocol, port);
        let mut state = self.lock();
        let id = state.next_hold;
        state.next_hold = state.next_hold.wrapping_add(1);
        state.held.entry(key).or_default().push(id);
        PortHold {
            shared: Arc::clone(self),
            key,
            id,
        }
    }

    /// True when a hold other than `except` holds `key`.
    fn held_by_others(&self, key: HeldKey, except: Option<u64>) -> bool {
        self.lock()
            .held
            .get(&key)
            .is_some_and(|ids| ids.iter().any(|id| Some(*id) != except))
    }

    /// Notes whether a lease's call to the gateway was answered (see [`Shared::silent`]).
    /// Notes whether the gateway's answer about its external address was usable.
    fn heard_external(&self, answer: Result<Ipv4Addr, UpnpError>) -> Result<Ipv4Addr, UpnpError> {
        match &answer {
            Ok(_) => self.external_unusable.store(false, Ordering::Relaxed),
            Err(UpnpError::NoExternalAddress(_)) => self.external_unusable.store(true, Ordering::Relaxed),
            Err(_) => {}
        }
        answer
    }

    pub(crate) fn heard<T>(&self, result: &Result<T, UpnpError>) {
        let silent = result.as_ref().is_err_and(UpnpError::is_unreachable);
        self.silent.store(silent, Ordering::Relaxed);
    }

    /// Records what a report should say about `gateway`.
    fn note(&self, gateway: &Gateway, external: Option<Ipv4Addr>) {
        self.lock().info = Some(gateway.info(external));
    }

    /// The gateway to use: the cached one (`true`), else one found now (its external address
    /// is asked by the mapping, at the same time as the mapping itself). One search at a
    /// time: while another caller searches, this one waits for its result (until `deadline`)
    /// instead of searching too, then takes the gateway it found, or its failure (see
    /// [`Purpose`]), or searches itself if that search proved nothing.
    fn gateway(&self, deadline: Instant, purpose: Purpose) -> Result<(Arc<Gateway>, bool), UpnpError> {
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
        let window_end = call::in_from_now(self.config.search_window);
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

/// False for private (RFC 1918), shared (RFC 6598, carrier-grade NAT) and link-local addresses.
fn is_public(ip: Ipv4Addr) -> bool {
    let [a, b, ..] = ip.octets();
    !(ip.is_private() || ip.is_link_local() || (a == 100 && (b & 0xc0) == 64))
}

/// The IPv4 address of a gateway given by its root description URL
/// (`http://192.168.1.1:5000/rootDesc.xml`).
fn gateway_host(url: &str) -> Result<Ipv4Addr, UpnpError> {
    let bad = |why: &str| UpnpError::BadUrl {
        url: crate::error::shorten(url, 100),
        why: why.to_owned(),
    };
    let parsed = url::Url::parse(url.trim()).map_err(|e| bad(&e.to_string()))?;
    crate::description::http_ipv4(&parsed).map(|(ip, _)| ip).map_err(bad)
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

/// The address to map: the socket's own, or for a socket on every interface, this host's
/// address on the interface facing the gateway (what a connected UDP socket would send from;
/// connecting sends nothing).
fn internal_ip(bound: Ipv4Addr, gateway: Ipv4Addr) -> Result<Ipv4Addr, UpnpError> {
    if bound.is_loopback() && !gateway.is_loopback() {
        return Err(UpnpError::NotApplicable(
            "the socket is bound to loopback: the gateway cannot reach it".into(),
        ));
    }
    if !bound.is_unspecified() {
        return Ok(bound);
    }
    let what = format!("finding our address facing {gateway}");
    let probe = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)).map_err(|e| UpnpError::io(&what, e))?;
    probe.connect((gateway, 9)).map_err(|e| UpnpError::io(&what, e))?;
    match probe.local_addr().map_err(|e| UpnpError::io(&what, e))?.ip() {
        IpAddr::V4(ip) if !ip.is_unspecified() => Ok(ip),
        other => Err(UpnpError::NotApplicable(format!("{what}: got {other}"))),
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
/// IGD:2 (the gateway picks), else `AddPortMapping` with a few random
/// ports ([`UpnpConfig::random_port_attempts`]). Returns the external port and the lease
/// granted (0 only if the gateway supports permanent leases alone).
///
/// Each port tried is held (see [`PortHold`]) while it is asked for, so that a late grant of
/// an earlier attempt for it is not undone while it is ours; the hold of the port mapped is
/// returned, for the lease to keep.
fn add_mapping(
    shared: &Arc<Shared>,
    gateway: &Gateway,
    protocol: Protocol,
    internal: SocketAddrV4,
    description: &str,
    deadline: Instant,
) -> Result<(PortHold, u32), UpnpError> {
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
    let hold = shared.hold_port(gateway.ip(), protocol, own);
    match permanent_if_must(&mut lease_secs, |l| {
        gateway.add_port(&request(own, l), deadline, hold.keep_late())
    }) {
        Ok(()) => return Ok((hold, lease_secs)),
        Err(e) if is_conflict(&e) => log::debug!("upnp: external port {own} is taken: {e}"),
        Err(e) => return Err(e),
    }
    if gateway.has_add_any() {
        drop(hold);
        let (gateway_ip, late_shared) = (gateway.ip(), Arc::clone(shared));
        let keep = move |port: u16| late_shared.held_by_others((gateway_ip, protocol, port), None);
        match permanent_if_must(&mut lease_secs, |l| {
            gateway.add_any_port(&request(own, l), deadline, keep.clone())
        }) {
            Ok(port) => return Ok((shared.hold_port(gateway.ip(), protocol, port), lease_secs)),
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
        let hold = shared.hold_port(gateway.ip(), protocol, port);
        match permanent_if_must(&mut lease_secs, |l| {
            gateway.add_port(&request(port, l), deadline, hold.keep_late())
        }) {
            Ok(()) => return Ok((hold, lease_secs)),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leases_are_finite_and_bounded() {
        let mut c = UpnpConfig::default();
        assert_eq!(c.lease_secs(), 3600);
        c.lease = Duration::ZERO;
        assert_eq!(c.lease_secs(), 1);
        c.lease = Duration::from_secs(u64::MAX);
        assert_eq!(c.lease_secs(), MAX_LEASE_SECS);
    }

    #[test]
    fn loopback_sockets_are_not_mapped_through_a_real_gateway() {
        let e = internal_ip(Ipv4Addr::LOCALHOST, Ipv4Addr::new(192, 168, 1, 1)).unwrap_err();
        assert!(matches!(e, UpnpError::NotApplicable(_)));
        assert_eq!(
            internal_ip(Ipv4Addr::LOCALHOST, Ipv4Addr::LOCALHOST).unwrap(),
            Ipv4Addr::LOCALHOST
        );
        assert_eq!(
            internal_ip(Ipv4Addr::UNSPECIFIED, Ipv4Addr::LOCALHOST).unwrap(),
            Ipv4Addr::LOCALHOST
        );
        let bound = Ipv4Addr::new(192, 168, 1, 2);
        assert_eq!(internal_ip(bound, Ipv4Addr::new(192, 168, 1, 1)).unwrap(), bound);
    }

    #[test]
    fn a_bad_gateway_url_is_not_taken() {
        let t = UpnpTechnique::new();
        assert!(!t.add_server(&HolePunchServerAddr::IgdGateway("ftp://x".into())));
        assert!(t.add_server(&HolePunchServerAddr::IgdGateway(
            "http://192.168.1.1:5000/rootDesc.xml".into()
        )));
        assert!(!t.add_server(&HolePunchServerAddr::Simple("203.0.113.20:5483".parse().unwrap())));
    }

    #[test]
    fn ipv6_sockets_are_not_applicable() {
        let t = UpnpTechnique::new();
        let e = t
            .map_udp("[::1]:4000".parse().unwrap(), Instant::now() + Duration::from_secs(1))
            .unwrap_err();
        assert!(e.is_not_applicable());
    }
}
