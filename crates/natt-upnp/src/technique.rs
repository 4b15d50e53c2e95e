//! [`UpnpTechnique`], natt's [`MappingTechnique`] for UPnP IGD (it maps beside the socket),
//! and its [`UpnpConfig`]. Mapping a socket: take the gateway ([`crate::cache`]), then at the
//! same time ask its external address and map the socket's port to the host's address facing
//! the gateway ([`crate::port_choice`]), and hold the mapping with an [`UpnpLease`]. What
//! each step does and why: the crate documentation.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::thread;
use std::time::{Duration, Instant};

use natt_core::{
    HolePunchServerAddr, MappedSocketAddr, MappingTechnique, Protocol, TechniqueError, TechniqueMapping, deadline,
};

use natt_core::arbiter::{Claim, ClaimGuard, ClaimKey, GatewayArbiter};

use crate::cache::{Purpose, Shared};
use crate::error::UpnpError;
use crate::gateway::{Gateway, GatewayInfo};
use crate::lease::{Mapping, UpnpLease};
use crate::pinhole::{Firewall, PinholeLease};
use crate::port_choice::{PortReservation, add_mapping};
use natt_core::fanout;
use natt_core::mapping::{Lease, Leases};

/// The technique's name.
pub const NAME: &str = "upnp";

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

/// Maps sockets with UPnP IGD port mappings (see the [crate documentation](crate)).
///
#[cfg_attr(not(doctest), doc = include_str!("../doc/upnp_technique.md"))]
#[derive(Debug)]
pub struct UpnpTechnique {
    shared: Arc<Shared>,
    /// Takes turns with other port-mapping techniques (PCP, NAT-PMP) on one gateway.
    arbiter: Option<Arc<GatewayArbiter>>,
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
            shared: Arc::new(Shared::new(config)),
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
        self.shared.add_gateway(url, ip);
        Ok(())
    }

    /// The gateway last found (by a mapping or [`find_gateway`](Self::find_gateway)), if any,
    /// even if mapping on it then failed.
    pub fn gateway_info(&self) -> Option<GatewayInfo> {
        self.shared.info()
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
        // A dual-stack socket's IPv4 side is mapped (natt_core::family).
        let SocketAddr::V4(local) = natt_core::family::ipv4_view(local) else {
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
    ) -> Result<(Option<ClaimGuard>, PortReservation, u32), UpnpError> {
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
        hold: PortReservation,
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
        self.map_dual(Protocol::Udp, local, deadline)
    }

    fn map_tcp(&self, local: SocketAddr, deadline: Instant) -> Result<TechniqueMapping, TechniqueError> {
        self.map_dual(Protocol::Tcp, local, deadline)
    }
}

impl UpnpTechnique {
    /// [`map`](Self::map), and for a dual-stack socket on a host with global IPv6 an IPv6
    /// pinhole too ([`pinhole`](Self::pinhole)): once the gateway is known (searched or loaded
    /// once, then cached), both at once ([`fanout`]); either is worth having, both are held as
    /// one lease.
    fn map_dual(
        &self,
        protocol: Protocol,
        local: SocketAddr,
        deadline: Instant,
    ) -> Result<TechniqueMapping, TechniqueError> {
        if !(natt_core::family::is_dual_stack(local) && natt_core::family::host_has_global_ipv6()) {
            return self.map(protocol, local, deadline).map_err(TechniqueError::from);
        }
        // Found once here, so that the two do not search for it each.
        self.shared.gateway(deadline, Purpose::Map)?;
        let both = fanout::scoped("natt-upnp-dual", Instant::now(), [false, true], |ipv6| {
            let r = if ipv6 {
                self.pinhole(protocol, local.port(), deadline)
                    .map(|(endpoint, lease)| TechniqueMapping {
                        endpoints: vec![endpoint],
                        lease: lease.map(|l| Box::new(l) as Box<dyn Lease>),
                    })
            } else {
                self.map(protocol, local, deadline)
            };
            r.map_err(TechniqueError::from)
        });
        let mut results = both.into_iter().map(|finished| finished.into_timed("UPnP").1);
        let (mapped, pinhole) = (
            results
                .next()
                .unwrap_or_else(|| Err(TechniqueError::Other("no result".into()))),
            results
                .next()
                .unwrap_or_else(|| Err(TechniqueError::Other("no result".into()))),
        );
        match (mapped, pinhole) {
            (Ok(mut m), Ok(p)) => {
                m.endpoints.extend(p.endpoints);
                let leases: Vec<Box<dyn Lease>> = m.lease.take().into_iter().chain(p.lease).collect();
                m.lease = Some(Box::new(Leases(leases)));
                Ok(m)
            }
            (Ok(m), Err(e)) => {
                log::debug!("upnp: no IPv6 pinhole: {e}");
                Ok(m)
            }
            (Err(e), Ok(p)) => {
                log::info!("upnp: IPv4 mapping failed ({e}); IPv6 pinhole only");
                Ok(p)
            }
            (Err(e), Err(_)) => Err(e),
        }
    }

    /// Opens an IPv6 pinhole for `protocol` port `port` of this host's IPv6 address on the
    /// gateway's IGD:2 firewall control service, reached at the IPv6 default route's router on
    /// the gateway's HTTP port, by `deadline`: the endpoint (open) and its lease (none when the
    /// gateway says its firewall is off). `AddPinhole` is asked at once; `GetFirewallStatus`
    /// only explains a refusal.
    pub fn pinhole(
        &self,
        protocol: Protocol,
        port: u16,
        deadline: Instant,
    ) -> Result<(MappedSocketAddr, Option<PinholeLease>), UpnpError> {
        let (gateway, _) = self.shared.gateway(deadline, Purpose::Map)?;
        let path = gateway.firewall().map(str::to_owned).ok_or_else(|| {
            UpnpError::NotApplicable("the gateway has no IPv6 firewall control (IGD:2 WANIPv6FirewallControl)".into())
        })?;
        let mut router = natt_core::route::default_router_v6()
            .ok_or_else(|| UpnpError::NotApplicable("no IPv6 default route through a router".into()))?;
        router.set_port(gateway.http_port());
        let client = ipv6_toward(router)?;
        let endpoint = MappedSocketAddr::new(SocketAddr::new(client.into(), port), false, NAME);
        let firewall = Firewall::new(router, &path, client);
        let claim = match &self.arbiter {
            None => None,
            Some(arbiter) => {
                let key = ClaimKey {
                    gateway: IpAddr::V6(*router.ip()),
                    protocol,
                    internal: endpoint.addr,
                };
                match arbiter.claim(key, NAME, deadline) {
                    Claim::Granted(guard) => Some(guard),
                    Claim::TakenBy(owner) => {
                        return Err(UpnpError::NotApplicable(format!(
                            "{owner} already opened this pinhole on {}",
                            router.ip()
                        )));
                    }
                    Claim::TimedOut => {
                        return Err(UpnpError::NotApplicable(
                            "another technique was still opening this pinhole at the deadline".into(),
                        ));
                    }
                }
            }
        };
        let config = &self.shared.config;
        // AddPinhole straight away (one round trip); GetFirewallStatus only to explain a refusal.
        match PinholeLease::open(
            firewall.clone(),
            (protocol, port),
            config.lease_secs(),
            config.call_timeout,
            deadline,
            claim,
        ) {
            Ok(lease) => Ok((endpoint, Some(lease))),
            // 702 FirewallDisabled: the host is open as it is.
            Err(UpnpError::Refused { code: 702, .. }) => Ok((endpoint, None)),
            Err(e @ UpnpError::Refused { .. }) => match firewall.status(deadline) {
                Ok(status) if !status.enabled => Ok((endpoint, None)),
                Ok(status) if !status.inbound_pinhole_allowed => Err(UpnpError::NotApplicable(format!(
                    "the gateway allows no inbound pinholes ({e})"
                ))),
                _ => Err(e),
            },
            Err(e) => Err(e),
        }
    }
}

/// This host's IPv6 address toward `router` (what a connected UDP socket would send from;
/// connecting sends nothing): a global one, or the pinhole would be for nothing.
fn ipv6_toward(router: SocketAddrV6) -> Result<Ipv6Addr, UpnpError> {
    let what = format!("finding our IPv6 address facing {}", router.ip());
    let probe = UdpSocket::bind((Ipv6Addr::UNSPECIFIED, 0)).map_err(|e| UpnpError::io(&what, e))?;
    probe.connect(router).map_err(|e| UpnpError::io(&what, e))?;
    match probe.local_addr().map_err(|e| UpnpError::io(&what, e))?.ip() {
        IpAddr::V6(ip) if natt_core::family::is_global_ipv6(ip) => Ok(ip),
        other => Err(UpnpError::NotApplicable(format!(
            "{what}: got {other}, not a global address"
        ))),
    }
}

/// False for private (RFC 1918), shared (RFC 6598, carrier-grade NAT) and link-local addresses.
fn is_public(ip: Ipv4Addr) -> bool {
    !(natt_core::endpoint::is_private(ip.into()) || ip.is_link_local())
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
