//! A UPnP Internet Gateway Device found by `igd-next`, and its SOAP actions (external address,
//! add and delete port mappings), each bounded by the caller's deadline (see [`crate::call`]).
//!
//! `igd-next` did the untrusted part when it found the gateway: the description and the
//! service description (SCPD) are read with a size and depth limit, and their URLs must point
//! at the device that answered the search. Its SOAP requests have fixed timeouts of their own
//! (10 s to connect, 10 s for the request); here each runs on a worker thread, the caller waits until its deadline only,
//! and a mapping that the gateway grants after the caller gave up is deleted by that worker,
//! unless the caller's `keep` says it is still wanted (a renewal of a lease still held, or a
//! port that a live lease holds by now: deleting it would delete that lease's mapping).

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::Arc;
use std::time::Instant;

use igd_next::PortMappingProtocol;
use natt_core::Protocol;

use crate::call;
use crate::error::{UpnpError, shorten};

/// The version of the Internet Gateway Device specification a gateway speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum IgdVersion {
    /// IGD:1 (`AddPortMapping` only).
    V1,
    /// IGD:2 (with `AddAnyPortMapping`).
    V2,
}

impl IgdVersion {
    /// The version of a WAN connection service type, e.g.
    /// `urn:schemas-upnp-org:service:WANIPConnection:2` is IGD:2 (version 1 services,
    /// `WANIPConnection:1` and `WANPPPConnection:1`, are IGD:1).
    pub fn of_service(service_type: &str) -> IgdVersion {
        match service_type.trim().rsplit(':').next() {
            Some(v) if v.parse::<u32>().is_ok_and(|v| v >= 2) => IgdVersion::V2,
            _ => IgdVersion::V1,
        }
    }
}

impl fmt::Display for IgdVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            IgdVersion::V1 => "igdv1",
            IgdVersion::V2 => "igdv2",
        })
    }
}

/// What is known about a gateway that answered: for reports such as `natt probe`'s.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GatewayInfo {
    /// Its root description URL (from its answer to the search).
    pub description_url: String,
    /// The IGD version it speaks.
    pub version: IgdVersion,
    /// The WAN connection service used, e.g. `urn:schemas-upnp-org:service:WANIPConnection:2`.
    pub service_type: String,
    /// Its external address, when it last told us one.
    pub external_ip: Option<Ipv4Addr>,
}

impl fmt::Display for GatewayInfo {
    /// `upnp igdv2 203.0.113.101 at http://192.168.1.1:5000/rootDesc.xml`
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "upnp {} ", self.version)?;
        match self.external_ip {
            Some(ip) => write!(f, "{ip}")?,
            None => f.write_str("(no external address)")?,
        }
        write!(f, " at {}", self.description_url)
    }
}

/// A gateway's WAN connection service, as `igd-next` found it.
#[derive(Debug, Clone)]
pub struct Gateway {
    igd: Arc<igd_next::Gateway>,
    /// Its IPv4 address.
    ip: Ipv4Addr,
    /// The root description URL, `http://192.168.1.1:5000/rootDesc.xml`.
    pub description: String,
    /// The control URL of the WAN connection service (for messages).
    pub control: String,
    /// The IGD version (from the service type).
    pub version: IgdVersion,
}

impl PartialEq for Gateway {
    fn eq(&self, other: &Gateway) -> bool {
        *self.igd == *other.igd
    }
}

impl Eq for Gateway {}

/// A port mapping request.
#[derive(Debug, Clone)]
pub struct MappingRequest {
    /// UDP or TCP.
    pub protocol: Protocol,
    /// The external port wanted (for `AddAnyPortMapping`, ignored: `igd-next` asks for a
    /// random one).
    pub external_port: u16,
    /// The host and port traffic goes to.
    pub internal: SocketAddrV4,
    /// Seconds (0: permanent).
    pub lease_secs: u32,
    /// The description shown in the router's list.
    pub description: String,
}

fn proto(p: Protocol) -> PortMappingProtocol {
    match p {
        Protocol::Udp => PortMappingProtocol::UDP,
        Protocol::Tcp => PortMappingProtocol::TCP,
    }
}

impl Gateway {
    /// Wraps what `igd-next` found; IPv4 gateways only.
    pub fn new(igd: igd_next::Gateway) -> Result<Gateway, UpnpError> {
        let ip = match igd.addr.ip() {
            IpAddr::V4(ip) => ip,
            IpAddr::V6(ip) => {
                return Err(UpnpError::NotApplicable(format!(
                    "the gateway at {ip} is IPv6; natt maps IPv4 only"
                )));
            }
        };
        if !crate::description::stays_on(igd.addr, &igd.control_url) {
            return Err(UpnpError::BadUrl {
                url: shorten(&igd.control_url, 100),
                why: format!("the control URL leads off the gateway's address {ip}"),
            });
        }
        Ok(Gateway {
            ip,
            description: format!("http://{}{}", igd.addr, igd.root_url),
            control: igd.to_string(),
            version: IgdVersion::of_service(&igd.service_type),
            igd: Arc::new(igd),
        })
    }

    /// The gateway's IPv4 address.
    pub fn ip(&self) -> Ipv4Addr {
        self.ip
    }

    /// What a report says about this gateway.
    pub fn info(&self, external_ip: Option<Ipv4Addr>) -> GatewayInfo {
        GatewayInfo {
            description_url: self.description.clone(),
            version: self.version,
            service_type: self.igd.service_type.clone(),
            external_ip,
        }
    }

    /// True when its service lists `AddAnyPortMapping` (IGD:2).
    pub fn has_add_any(&self) -> bool {
        self.igd.control_schema.contains_key("AddAnyPortMapping")
    }

    /// `GetExternalIPAddress`: the gateway's external IPv4 address, if it is a usable one.
    pub fn external_ip(&self, deadline: Instant) -> Result<Ipv4Addr, UpnpError> {
        let igd = Arc::clone(&self.igd);
        let what = format!("GetExternalIPAddress at {}", self.control);
        let ip = call::bounded(&what, deadline, move || igd.get_external_ip(), drop)?
            .map_err(|e| UpnpError::external_ip(&self.control, e))?;
        if let Some(why) = natt_core::endpoint::unusable_external_ip(ip) {
            return Err(UpnpError::NoExternalAddress(format!(
                "{} is {why}",
                shorten(&ip.to_string(), 60)
            )));
        }
        match ip {
            IpAddr::V4(ip) => Ok(ip),
            IpAddr::V6(ip) => Err(UpnpError::NoExternalAddress(format!(
                "{} is not IPv4",
                shorten(&ip.to_string(), 60)
            ))),
        }
    }

    /// `AddPortMapping`: maps `external_port` (or renews our mapping of it). Granted after
    /// the deadline, the mapping is deleted again unless `keep` (asked then) says otherwise.
    pub fn add_port<K>(&self, m: &MappingRequest, deadline: Instant, keep: K) -> Result<(), UpnpError>
    where
        K: FnOnce() -> bool + Send + 'static,
    {
        let (igd, late_igd) = (Arc::clone(&self.igd), Arc::clone(&self.igd));
        let m = m.clone();
        let what = format!("AddPortMapping {} {} at {}", m.protocol, m.external_port, self.control);
        let (protocol, port) = (proto(m.protocol), m.external_port);
        let late_what = what.clone();
        call::bounded(
            &what,
            deadline,
            move || igd.add_port(protocol, port, SocketAddr::V4(m.internal), m.lease_secs, &m.description),
            move |r| {
                if r.is_ok() {
                    undo_unless(keep(), &late_igd, protocol, port, &late_what);
                }
            },
        )?
        .map_err(|e| UpnpError::add_port(&self.control, e))
    }

    /// `igd-next`'s `add_any_port`: a port the gateway (IGD:2 `AddAnyPortMapping`, asked
    /// for a random port) or `igd-next` (random ports with `AddPortMapping`) chooses; returns
    /// the port mapped. Granted after the deadline, the mapping is deleted again unless `keep`
    /// (asked then, with the port) says otherwise.
    pub fn add_any_port<K>(&self, m: &MappingRequest, deadline: Instant, keep: K) -> Result<u16, UpnpError>
    where
        K: FnOnce(u16) -> bool + Send + 'static,
    {
        let (igd, late_igd) = (Arc::clone(&self.igd), Arc::clone(&self.igd));
        let m = m.clone();
        let what = format!("AddAnyPortMapping {} at {}", m.protocol, self.control);
        let protocol = proto(m.protocol);
        let late_what = what.clone();
        let port = call::bounded(
            &what,
            deadline,
            move || igd.add_any_port(protocol, SocketAddr::V4(m.internal), m.lease_secs, &m.description),
            move |r| {
                if let Ok(port) = r {
                    undo_unless(keep(port), &late_igd, protocol, port, &late_what);
                }
            },
        )?
        .map_err(|e| UpnpError::add_any_port(&self.control, e))?;
        if port == 0 {
            return Err(UpnpError::malformed(what, "the gateway reserved port 0"));
        }
        Ok(port)
    }

    /// `DeletePortMapping` of a mapping just made that is of no use, started even if the
    /// deadline has passed; `keep` (a port hold, an arbiter claim) lives until the gateway has
    /// answered (or `igd-next` gave up, about 20 s at most), so nothing else maps that port
    /// while the deletion is under way. The caller waits until `deadline` at most.
    pub fn undo_port<K>(
        &self,
        protocol: Protocol,
        external_port: u16,
        deadline: Instant,
        keep: K,
    ) -> Result<(), UpnpError>
    where
        K: Send + 'static,
    {
        let igd = Arc::clone(&self.igd);
        let what = format!("DeletePortMapping {protocol} {external_port} at {}", self.control);
        let work = move || {
            let r = igd.remove_port(proto(protocol), external_port);
            drop(keep);
            r
        };
        call::started(&what, deadline, work, drop)?.map_err(|e| UpnpError::remove_port(&self.control, e))
    }

    /// `DeletePortMapping`.
    pub fn remove_port(&self, protocol: Protocol, external_port: u16, deadline: Instant) -> Result<(), UpnpError> {
        let igd = Arc::clone(&self.igd);
        let what = format!("DeletePortMapping {protocol} {external_port} at {}", self.control);
        call::bounded(
            &what,
            deadline,
            move || igd.remove_port(proto(protocol), external_port),
            |_| (),
        )?
        .map_err(|e| UpnpError::remove_port(&self.control, e))
    }
}

/// Deletes a mapping granted after its caller gave up (on the worker thread that got it),
/// unless it is to be kept.
fn undo_unless(keep: bool, igd: &igd_next::Gateway, protocol: PortMappingProtocol, port: u16, what: &str) {
    if keep {
        log::info!("upnp: {what} succeeded after the deadline; kept (the port is held)");
        return;
    }
    match igd.remove_port(protocol, port) {
        Ok(()) => log::info!("upnp: {what} succeeded after the deadline; deleted that mapping again"),
        Err(e) => log::warn!(
            "upnp: {what} succeeded after the deadline, and deleting that mapping failed (it expires with its \
             lease): {e}"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_come_from_the_service_type() {
        for (service, version) in [
            ("urn:schemas-upnp-org:service:WANIPConnection:2", IgdVersion::V2),
            ("urn:schemas-upnp-org:service:WANIPConnection:1", IgdVersion::V1),
            ("urn:schemas-upnp-org:service:WANPPPConnection:1", IgdVersion::V1),
            ("nonsense", IgdVersion::V1),
        ] {
            assert_eq!(IgdVersion::of_service(service), version, "{service}");
        }
    }

    #[test]
    fn infos_read_well() {
        let info = GatewayInfo {
            description_url: "http://192.168.1.1:5000/rootDesc.xml".into(),
            version: IgdVersion::V2,
            service_type: "urn:schemas-upnp-org:service:WANIPConnection:2".into(),
            external_ip: Some(Ipv4Addr::new(203, 0, 113, 101)),
        };
        assert_eq!(
            info.to_string(),
            "upnp igdv2 203.0.113.101 at http://192.168.1.1:5000/rootDesc.xml"
        );
    }
}
