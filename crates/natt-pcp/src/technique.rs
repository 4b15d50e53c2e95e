//! [`PcpTechnique`]: the [`MappingTechnique`] that asks the gateway for a port mapping with
//! PCP, or NAT-PMP when that is all it speaks, beside the mapped socket.
//!
//! For a dual-stack socket (`natt_core::family`) on a host with global IPv6, it also asks the
//! IPv6 default route's router for a PCP MAP of the host's IPv6 address: there is no NAT, so
//! the "external" address is the host's own, and the router opens a pinhole in its firewall.
//! Both are asked at once ([`natt_core::fanout`]) and held as one lease; the pinhole makes the
//! IPv6 endpoint `nat_restricted: false`.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{Duration, Instant};

use natt_core::arbiter::{Claim, ClaimKey, GatewayArbiter};
use natt_core::fanout;
use natt_core::mapping::{Lease, Leases};
use natt_core::{HolePunchServerAddr, MappedSocketAddr, MappingTechnique, Protocol, TechniqueError, TechniqueMapping};

use crate::driver::{self, Driven};
use crate::epoch::EpochTracker;
use crate::error::PcpError;
use crate::gateway;
use crate::lease::{LeaseTiming, NotStarted, PcpLease, delete_mapping};
use crate::transaction::{MapSpec, Outcome, Transaction, Version};

/// The technique's name (endpoints are named after the protocol that made them: `pcp` or
/// `nat-pmp`).
pub const NAME: &str = "pcp";
/// [`HolePunchServerAddr::Other`] kind of a gateway to speak PCP to (falling back to
/// NAT-PMP).
pub const KIND_PCP: &str = "pcp";
/// [`HolePunchServerAddr::Other`] kind of a gateway to speak NAT-PMP only to.
pub const KIND_NAT_PMP: &str = "nat-pmp";

/// How the technique maps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PcpConfig {
    /// The lifetime asked for each mapping (default 2 hours), renewed at half of what the
    /// gateway grants while held. A program that dies leaves a mapping that expires by itself.
    pub lifetime: Duration,
    /// Renewal and deletion timing.
    pub timing: LeaseTiming,
}

impl Default for PcpConfig {
    fn default() -> Self {
        PcpConfig {
            lifetime: Duration::from_secs(7200),
            timing: LeaseTiming::default(),
        }
    }
}

impl PcpConfig {
    /// The lifetime in whole seconds, at least 1 (0 would delete).
    pub fn lifetime_secs(&self) -> u32 {
        u32::try_from(self.lifetime.as_secs())
            .unwrap_or(u32::MAX)
            .clamp(1, crate::transaction::MAX_LIFETIME)
    }
}

/// A gateway given explicitly.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Target {
    addr: SocketAddr,
    /// Speak only this protocol.
    only: Option<Version>,
}

/// Maps sockets with PCP (RFC 6887) or NAT-PMP (RFC 6886) on the gateway: the default
/// route's router, or one given with [`HolePunchServerAddr::Other`] of kind [`KIND_PCP`] (or
/// [`KIND_NAT_PMP`]).
///
#[cfg_attr(not(doctest), doc = include_str!("../doc/pcp_technique.md"))]
///
/// Mapping (this contacts the gateway):
///
#[cfg_attr(not(doctest), doc = include_str!("../doc/pcp_technique_mapping.md"))]
#[derive(Debug, Default)]
pub struct PcpTechnique {
    config: PcpConfig,
    target: RwLock<Option<Target>>,
    /// Gateways found to speak NAT-PMP only (they answered `UNSUPP_VERSION` with our nonce).
    versions: Mutex<HashMap<SocketAddr, Version>>,
    /// Takes turns with other port-mapping techniques (UPnP) on one gateway.
    arbiter: Option<Arc<GatewayArbiter>>,
}

impl PcpTechnique {
    /// A technique using the default route's router, with the default configuration.
    pub fn new() -> Self {
        Self::default()
    }

    /// A technique with `config`.
    pub fn with_config(config: PcpConfig) -> Self {
        PcpTechnique {
            config,
            ..Self::default()
        }
    }

    /// Takes turns with the other port-mapping techniques sharing `arbiter`, so that only one
    /// of them maps a given port on a given gateway.
    pub fn with_arbiter(mut self, arbiter: Arc<GatewayArbiter>) -> Self {
        self.arbiter = Some(arbiter);
        self
    }

    /// The configuration.
    pub fn config(&self) -> &PcpConfig {
        &self.config
    }

    /// Uses `addr` as the gateway instead of the default route's router; `only` restricts it
    /// to one protocol.
    pub fn set_gateway(&self, addr: SocketAddr, only: Option<Version>) {
        *self.target.write().unwrap_or_else(PoisonError::into_inner) = Some(Target { addr, only });
    }

    /// The gateway given explicitly, if any.
    pub fn gateway(&self) -> Option<SocketAddr> {
        self.target().map(|t| t.addr)
    }

    fn target(&self) -> Option<Target> {
        *self.target.read().unwrap_or_else(PoisonError::into_inner)
    }

    /// The gateway to use: the one given, else the default route's router (port 5351), and the
    /// protocol to restrict it to.
    pub fn find_gateway(&self) -> Option<(SocketAddr, Option<Version>)> {
        match self.target() {
            Some(t) => Some((t.addr, t.only)),
            None => gateway::default_gateway().map(|g| (g, None)),
        }
    }

    /// Maps `protocol` port `local` on the gateway by `deadline`: the endpoint, and a lease that
    /// renews the mapping until dropped, then deletes it.
    pub fn map(
        &self,
        protocol: Protocol,
        local: SocketAddr,
        deadline: Instant,
    ) -> Result<(MappedSocketAddr, PcpLease), PcpError> {
        let (gateway, only) = self
            .find_gateway()
            .ok_or_else(|| PcpError::NotApplicable("no default route through a router".into()))?;
        self.map_on(gateway, only, protocol, local, deadline)
    }

    /// Opens an IPv6 pinhole for `protocol` port `local` (a socket on `[::]` or on one of this
    /// host's IPv6 addresses) on the IPv6 default route's router by `deadline`: a PCP MAP of the
    /// host's IPv6 address. The endpoint (the host's own address, open) and its lease.
    pub fn pinhole(
        &self,
        protocol: Protocol,
        local: SocketAddr,
        deadline: Instant,
    ) -> Result<(MappedSocketAddr, PcpLease), PcpError> {
        let gateway = gateway::default_gateway_v6()
            .ok_or_else(|| PcpError::NotApplicable("no IPv6 default route through a router".into()))?;
        self.map_on(gateway, Some(Version::Pcp), protocol, local, deadline)
    }

    /// [`map`](Self::map) on `gateway`, restricted to `only`.
    fn map_on(
        &self,
        gateway: SocketAddr,
        only: Option<Version>,
        protocol: Protocol,
        local: SocketAddr,
        deadline: Instant,
    ) -> Result<(MappedSocketAddr, PcpLease), PcpError> {
        // A dual-stack socket's IPv4 side is mapped through an IPv4 gateway (natt_core::family).
        let local = if gateway.is_ipv4() {
            natt_core::family::ipv4_view(local)
        } else {
            local
        };
        if local.is_ipv4() != gateway.is_ipv4() {
            return Err(PcpError::NotApplicable(format!(
                "the socket ({local}) and the gateway ({gateway}) are of different address families"
            )));
        }
        if local.port() == 0 {
            return Err(PcpError::NotApplicable("the socket is not bound to a port".into()));
        }
        let (socket, client) = gateway::connect(gateway)?;
        if !local.ip().is_unspecified() && local.ip() != client {
            return Err(PcpError::NotApplicable(format!(
                "the socket is bound to {}, but the gateway {gateway} is reached from {client}",
                local.ip()
            )));
        }
        let version = only.unwrap_or_else(|| {
            *self
                .versions
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .get(&gateway)
                .unwrap_or(&Version::Pcp)
        });
        if version == Version::NatPmp && !gateway.is_ipv4() {
            return Err(PcpError::NotApplicable("NAT-PMP is IPv4 only".into()));
        }
        let claim = match &self.arbiter {
            None => None,
            Some(arbiter) => {
                let key = ClaimKey {
                    gateway: gateway.ip(),
                    protocol,
                    internal: SocketAddr::new(client, local.port()),
                };
                match arbiter.claim(key, version.name(), deadline) {
                    Claim::Granted(guard) => Some(guard),
                    Claim::TakenBy(owner) => {
                        return Err(PcpError::NotApplicable(format!(
                            "{owner} already maps this port on {}",
                            gateway.ip()
                        )));
                    }
                    Claim::TimedOut => {
                        return Err(PcpError::NotApplicable(format!(
                            "another technique was still mapping this port on {} at the deadline",
                            gateway.ip()
                        )));
                    }
                }
            }
        };
        let spec = MapSpec::new(
            protocol,
            client,
            local.port(),
            self.config.lifetime_secs(),
            driver::nonce(),
        );
        let start = Instant::now();
        let mut tx = Transaction::map(gateway, spec.clone(), version, only.is_none(), start, driver::jitter());
        let grant = match driver::drive(&socket, &mut tx, deadline, None) {
            Driven::Done(Ok(Outcome::Mapped(grant))) => grant,
            Driven::Done(Ok(other)) => {
                return Err(PcpError::Malformed {
                    gateway,
                    version,
                    why: format!("unexpected answer: {other:?}"),
                });
            }
            Driven::Done(Err(e)) => return Err(e),
            Driven::Stopped => return Err(tx.timed_out()),
        };
        // Remembered only on proof: an UNSUPP_VERSION that echoed our nonce.
        if grant.version == Version::NatPmp && only.is_none() && tx.verified_fallback() {
            self.versions
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .insert(gateway, Version::NatPmp);
        }
        log::debug!(
            "pcp: {} mapped {protocol} {client}:{} to {} for {} s in {:?}",
            grant.version,
            local.port(),
            grant.external,
            grant.lifetime,
            start.elapsed()
        );
        let mut epochs = EpochTracker::new(grant.version);
        let _ = epochs.observe(Instant::now(), grant.epoch);
        let endpoint = MappedSocketAddr::new(grant.external, false, grant.version.name());
        match PcpLease::start(socket, spec, grant, epochs, self.config.timing) {
            Ok(mut lease) => {
                if let Some(guard) = claim {
                    lease.hold(guard.mapped());
                }
                Ok((endpoint, lease))
            }
            Err(not_started) => {
                let NotStarted { error, socket, spec } = *not_started;
                delete_mapping(
                    &socket,
                    spec,
                    grant,
                    self.config.timing.release_timeout,
                    "a mapping we cannot hold",
                );
                Err(error)
            }
        }
    }

    fn technique_map(
        &self,
        protocol: Protocol,
        local: SocketAddr,
        deadline: Instant,
    ) -> Result<TechniqueMapping, TechniqueError> {
        let pinhole = self.target().is_none()
            && natt_core::family::is_dual_stack(local)
            && natt_core::family::host_has_global_ipv6();
        if !pinhole {
            let (endpoint, lease) = self.map(protocol, local, deadline)?;
            return Ok(TechniqueMapping {
                endpoints: vec![endpoint],
                lease: Some(Box::new(lease)),
            });
        }
        // The IPv4 mapping and the IPv6 pinhole at once; either is worth having.
        let both = fanout::scoped("natt-pcp", Instant::now(), [false, true], |ipv6| {
            let mapped = if ipv6 {
                self.pinhole(protocol, local, deadline)
            } else {
                self.map(protocol, local, deadline)
            };
            mapped.map_err(TechniqueError::from)
        });
        let mut endpoints = Vec::new();
        let mut leases: Vec<Box<dyn Lease>> = Vec::new();
        let mut errors: Vec<TechniqueError> = Vec::new();
        for (finished, what) in both.into_iter().zip(["IPv4 mapping", "IPv6 pinhole"]) {
            match finished.into_timed("PCP").1 {
                Ok((endpoint, lease)) => {
                    endpoints.push(endpoint);
                    leases.push(Box::new(lease));
                }
                Err(e) => {
                    log::debug!("pcp: {what}: {e}");
                    errors.push(e);
                }
            }
        }
        if endpoints.is_empty() {
            // The IPv4 mapping's reason first: what the technique did before IPv6.
            return Err(errors
                .into_iter()
                .next()
                .unwrap_or_else(|| TechniqueError::Other("PCP: no result".into())));
        }
        Ok(TechniqueMapping {
            endpoints,
            lease: Some(Box::new(Leases(leases))),
        })
    }
}

impl MappingTechnique for PcpTechnique {
    fn name(&self) -> &str {
        NAME
    }

    fn add_server(&self, server: &HolePunchServerAddr) -> bool {
        match server {
            HolePunchServerAddr::Other { kind, addr } if kind == KIND_PCP => {
                self.set_gateway(*addr, None);
                true
            }
            HolePunchServerAddr::Other { kind, addr } if kind == KIND_NAT_PMP => {
                self.set_gateway(*addr, Some(Version::NatPmp));
                true
            }
            _ => false,
        }
    }

    fn map_udp(&self, local: SocketAddr, deadline: Instant) -> Result<TechniqueMapping, TechniqueError> {
        self.technique_map(Protocol::Udp, local, deadline)
    }

    fn map_tcp(&self, local: SocketAddr, deadline: Instant) -> Result<TechniqueMapping, TechniqueError> {
        self.technique_map(Protocol::Tcp, local, deadline)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn takes_pcp_and_nat_pmp_gateways_only() {
        let t = PcpTechnique::new();
        let addr: SocketAddr = "127.0.0.1:5351".parse().unwrap();
        assert!(!t.add_server(&HolePunchServerAddr::Simple(addr)));
        assert!(!t.add_server(&HolePunchServerAddr::Other {
            kind: "echo".into(),
            addr
        }));
        assert_eq!(t.gateway(), None);
        assert!(t.add_server(&HolePunchServerAddr::Other {
            kind: KIND_NAT_PMP.into(),
            addr
        }));
        assert_eq!(t.find_gateway(), Some((addr, Some(Version::NatPmp))));
        assert!(t.add_server(&HolePunchServerAddr::Other {
            kind: KIND_PCP.into(),
            addr
        }));
        assert_eq!(t.find_gateway(), Some((addr, None)));
    }

    #[test]
    fn lifetimes_are_whole_seconds_within_bounds() {
        let mut c = PcpConfig::default();
        assert_eq!(c.lifetime_secs(), 7200);
        c.lifetime = Duration::from_millis(10);
        assert_eq!(c.lifetime_secs(), 1);
        c.lifetime = Duration::from_secs(u64::MAX);
        assert_eq!(c.lifetime_secs(), crate::transaction::MAX_LIFETIME);
    }

    #[test]
    fn sockets_on_another_interface_are_not_applicable() {
        // The gateway is on loopback; a socket bound to another address cannot be mapped
        // there. Nothing is sent.
        let t = PcpTechnique::new();
        t.set_gateway("127.0.0.1:9".parse().unwrap(), None);
        let deadline = Instant::now() + Duration::from_secs(1);
        let e = t
            .map(Protocol::Udp, "192.0.2.7:4000".parse().unwrap(), deadline)
            .unwrap_err();
        assert!(matches!(e, PcpError::NotApplicable(_)), "{e}");
        let e = t
            .map(Protocol::Udp, "[::1]:4000".parse().unwrap(), deadline)
            .unwrap_err();
        assert!(matches!(e, PcpError::NotApplicable(_)), "{e}");
        let e = t
            .map(Protocol::Udp, "127.0.0.1:0".parse().unwrap(), deadline)
            .unwrap_err();
        assert!(matches!(e, PcpError::NotApplicable(_)), "{e}");
    }
}
