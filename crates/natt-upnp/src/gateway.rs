//! A UPnP Internet Gateway Device's WAN connection service, and its SOAP actions (external
//! address, add and delete port mappings), each bounded by the caller's deadline (see
//! [`crate::bounded`]).
//!
//! natt speaks SOAP itself: the request and the reading of the answer are [`crate::soap`]'s
//! (natt's hardened XML reader: size limit, no DTD), the HTTP POST is here ([`crate::http`]:
//! no proxy, no redirects, at most [`MAX_SOAP_BYTES`] read). Each
//! request has fixed timeouts of its own ([`SOAP_TIMEOUT`] to connect, as much for the
//! exchange) and runs on a worker thread ([`crate::bounded`]; why: the crate documentation,
//! **Deadlines**); a mapping granted after the caller gave up is deleted by that worker unless
//! the caller's `keep` says the port is held by then.
//!
//! The gateway's URLs were checked when it was found ([`crate::description`]): the control URL
//! is on the gateway's own address.

use std::collections::HashMap;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::Arc;
use std::time::{Duration, Instant};

use natt_core::Protocol;
use rand::Rng;
use url::Url;

use crate::bounded;
use crate::error::{UpnpError, shorten};
use crate::http;
use crate::soap::{self, MAX_SOAP_BYTES, SoapError};

/// How long a SOAP request may take to connect, and then to be answered (what `igd-next`,
/// which natt used before, allowed): the bound of a worker whose caller gave up at its deadline.
pub(crate) const SOAP_TIMEOUT: Duration = Duration::from_secs(10);

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

/// A gateway's WAN connection service: where to send its SOAP requests, and how.
#[derive(Debug, Clone)]
pub struct Gateway {
    service: Arc<Service>,
    /// The IPv6 firewall control service's control path (IGD:2), if the gateway has one.
    firewall: Option<String>,
    /// Its IPv4 address.
    ip: Ipv4Addr,
    /// The root description URL, `http://192.168.1.1:5000/rootDesc.xml`.
    pub description: String,
    /// The control URL of the WAN connection service (for messages).
    pub control: String,
    /// The IGD version (from the service type).
    pub version: IgdVersion,
}

/// What a SOAP request needs (shared with the worker threads that send them).
#[derive(Debug)]
struct Service {
    /// The gateway's HTTP address (its description's host and port).
    addr: SocketAddr,
    /// The control URL, resolved: on the gateway's address.
    control_url: Url,
    /// `control_url` for messages.
    control: String,
    /// E.g. `urn:schemas-upnp-org:service:WANIPConnection:2`.
    service_type: String,
    /// The input arguments of each action, in order ([`crate::description::standard_actions`]).
    actions: HashMap<String, Vec<String>>,
}

impl PartialEq for Gateway {
    fn eq(&self, other: &Gateway) -> bool {
        self.service.addr == other.service.addr && self.service.control_url == other.service.control_url
    }
}

impl Eq for Gateway {}

/// A port mapping request.
#[derive(Debug, Clone)]
pub struct MappingRequest {
    /// UDP or TCP.
    pub protocol: Protocol,
    /// The external port wanted (for `AddAnyPortMapping`, ignored: a random one is asked for,
    /// as `igd-next` did).
    pub external_port: u16,
    /// The host and port traffic goes to.
    pub internal: SocketAddrV4,
    /// Seconds (0: permanent).
    pub lease_secs: u32,
    /// The description shown in the router's list.
    pub description: String,
}

fn proto(p: Protocol) -> &'static str {
    match p {
        Protocol::Udp => "UDP",
        Protocol::Tcp => "TCP",
    }
}

impl Gateway {
    /// The WAN connection service of type `service_type` of the gateway whose description is
    /// at `root` on `addr`, controlled at `control` (a path on `addr`, or a whole URL on its
    /// host), with the argument lists the specifications fix
    /// ([`crate::description::standard_actions`]); IPv4 gateways only.
    pub fn new(addr: SocketAddr, root: &str, control: &str, service_type: String) -> Result<Gateway, UpnpError> {
        let ip = match addr.ip() {
            IpAddr::V4(ip) => ip,
            IpAddr::V6(ip) => {
                return Err(UpnpError::NotApplicable(format!(
                    "the gateway at {ip} is IPv6; natt maps IPv4 only"
                )));
            }
        };
        let control_url = crate::description::control_on(addr, control).map_err(|why| UpnpError::BadUrl {
            url: shorten(control, 100),
            why,
        })?;
        let (host, port) = (ip, control_url.port_or_known_default().unwrap_or(80));
        let path = match control_url.query() {
            Some(query) => format!("{}?{query}", control_url.path()),
            None => control_url.path().to_owned(),
        };
        let shown = format!("http://{host}:{port}{path}");
        Ok(Gateway {
            firewall: None,
            ip,
            description: format!("http://{addr}{root}"),
            control: shown.clone(),
            version: IgdVersion::of_service(&service_type),
            service: Arc::new(Service {
                addr,
                control_url,
                control: shown,
                actions: crate::description::standard_actions(&service_type),
                service_type,
            }),
        })
    }

    /// The gateway with its IPv6 firewall control service at `path` (a path on its HTTP
    /// port; [`crate::description::firewall_control`]).
    pub fn with_firewall(mut self, path: Option<String>) -> Gateway {
        self.firewall = path.filter(|p| p.starts_with('/') && !p.starts_with("//"));
        self
    }

    /// The IPv6 firewall control service's control path, if the gateway has one.
    pub fn firewall(&self) -> Option<&str> {
        self.firewall.as_deref()
    }

    /// The gateway's HTTP port (of its description and control URLs).
    pub fn http_port(&self) -> u16 {
        self.service.addr.port()
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
            service_type: self.service.service_type.clone(),
            external_ip,
        }
    }

    /// True when its service lists `AddAnyPortMapping` (IGD:2).
    pub fn has_add_any(&self) -> bool {
        self.service.actions.contains_key(ADD_ANY)
    }

    /// `GetExternalIPAddress`: the gateway's external IPv4 address, if it is a usable one.
    pub fn external_ip(&self, deadline: Instant) -> Result<Ipv4Addr, UpnpError> {
        let service = Arc::clone(&self.service);
        let what = format!("{GET_EXTERNAL_IP} at {}", self.control);
        let ip = bounded::call(&what, deadline, move || service.external_ip(), drop)??;
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
        let (service, late_service) = (Arc::clone(&self.service), Arc::clone(&self.service));
        let m = m.clone();
        let what = format!("{ADD} {} {} at {}", m.protocol, m.external_port, self.control);
        let (protocol, port) = (m.protocol, m.external_port);
        let late_what = what.clone();
        bounded::call(
            &what,
            deadline,
            move || service.add_port(&m),
            move |r| {
                if r.is_ok() {
                    undo_unless(keep(), &late_service, protocol, port, &late_what);
                }
            },
        )?
    }

    /// `AddAnyPortMapping` (IGD:2; asked for a random port): a port the gateway chooses;
    /// returns the port mapped. A gateway without it is [`UpnpError::Unsupported`]. Granted after the deadline, the mapping is deleted again unless `keep`
    /// (asked then, with the port) says otherwise.
    pub fn add_any_port<K>(&self, m: &MappingRequest, deadline: Instant, keep: K) -> Result<u16, UpnpError>
    where
        K: FnOnce(u16) -> bool + Send + 'static,
    {
        let (service, late_service) = (Arc::clone(&self.service), Arc::clone(&self.service));
        let m = m.clone();
        let what = format!("{ADD_ANY} {} at {}", m.protocol, self.control);
        let protocol = m.protocol;
        let late_what = what.clone();
        let port = bounded::call(
            &what,
            deadline,
            move || service.add_any_port(&m),
            move |r| {
                if let Ok(port) = r {
                    undo_unless(keep(port), &late_service, protocol, port, &late_what);
                }
            },
        )??;
        if port == 0 {
            return Err(UpnpError::malformed(what, "the gateway reserved port 0"));
        }
        Ok(port)
    }

    /// `DeletePortMapping` of a mapping just made that is of no use, started even if the
    /// deadline has passed; `keep` (a port hold, an arbiter claim) lives until the gateway has
    /// answered (or the request timed out, about 20 s at most), so nothing else maps that port
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
        let service = Arc::clone(&self.service);
        let what = format!("{DELETE} {protocol} {external_port} at {}", self.control);
        let work = move || {
            let r = service.remove_port(protocol, external_port);
            drop(keep);
            r
        };
        bounded::started(&what, deadline, work, drop)?
    }

    /// `DeletePortMapping`.
    pub fn remove_port(&self, protocol: Protocol, external_port: u16, deadline: Instant) -> Result<(), UpnpError> {
        let service = Arc::clone(&self.service);
        let what = format!("{DELETE} {protocol} {external_port} at {}", self.control);
        bounded::call(
            &what,
            deadline,
            move || service.remove_port(protocol, external_port),
            |_| (),
        )?
    }
}

/// Deletes a mapping granted after its caller gave up (on the worker thread that got it),
/// unless it is to be kept.
fn undo_unless(keep: bool, service: &Service, protocol: Protocol, port: u16, what: &str) {
    if keep {
        log::info!("upnp: {what} succeeded after the deadline; kept (the port is held)");
        return;
    }
    match service.remove_port(protocol, port) {
        Ok(()) => log::info!("upnp: {what} succeeded after the deadline; deleted that mapping again"),
        Err(e) => log::warn!(
            "upnp: {what} succeeded after the deadline, and deleting that mapping failed (it expires with its \
             lease): {e}"
        ),
    }
}

const GET_EXTERNAL_IP: &str = "GetExternalIPAddress";
const ADD: &str = "AddPortMapping";
const ADD_ANY: &str = "AddAnyPortMapping";
const DELETE: &str = "DeletePortMapping";

impl Service {
    /// Sends `action` with the arguments its argument list names, their values from `value`
    /// (blocking, [`SOAP_TIMEOUT`] to connect and as much for the exchange); the answer's
    /// output arguments. A UPnP fault is [`UpnpError::Refused`].
    fn call(&self, action: &str, value: impl Fn(&str) -> Option<String>) -> Result<soap::Response, UpnpError> {
        let what = format!("{action} at {}", self.control);
        let names = self
            .actions
            .get(action)
            .ok_or_else(|| UpnpError::Unsupported(action.to_owned()))?;
        let mut args: Vec<(&str, String)> = Vec::new();
        for name in names {
            match value(name) {
                Some(v) => args.push((name.as_str(), v)),
                None => log::warn!("upnp: {what}: no value for the argument {name}; left out"),
            }
        }
        let args: Vec<(&str, &str)> = args.iter().map(|(n, v)| (*n, v.as_str())).collect();
        let body = soap::encode_request(&self.service_type, action, &args);
        let response = http::request(attohttpc::Method::POST, self.control_url.as_str(), &what)?
            .connect_timeout(SOAP_TIMEOUT)
            .read_timeout(SOAP_TIMEOUT)
            .timeout(SOAP_TIMEOUT)
            .try_header("SOAPAction", soap::soap_action(&self.service_type, action))
            .and_then(|r| r.try_header(attohttpc::header::CONTENT_TYPE, "text/xml; charset=\"utf-8\""))
            .map_err(|e| UpnpError::request_failed(&what, e))?
            .bytes(body)
            .send()
            .map_err(|e| UpnpError::request_failed(&what, e))?;
        let (status, _, reader) = response.split();
        // A SOAP answer is 200 (the action's response) or 500 (a fault); anything else is no
        // answer from the service.
        if !(status.is_success() || status.as_u16() == 500) {
            return Err(UpnpError::HttpStatus {
                what,
                status: status.as_u16(),
            });
        }
        let bytes = http::read_body(reader, MAX_SOAP_BYTES, &what)?;
        soap::parse_response(action, &bytes).map_err(|e| match e {
            SoapError::Fault { code, description } => UpnpError::Refused {
                action: action.to_owned(),
                code,
                description,
            },
            SoapError::TooLarge { limit } => UpnpError::TooLarge { what, limit },
            e => UpnpError::malformed(what, e.to_string()),
        })
    }

    /// `GetExternalIPAddress`.
    fn external_ip(&self) -> Result<IpAddr, UpnpError> {
        let r = self.call(GET_EXTERNAL_IP, |_| None)?;
        let text = r.get("NewExternalIPAddress").unwrap_or_default();
        text.parse().map_err(|_| {
            UpnpError::malformed(
                format!("{GET_EXTERNAL_IP} at {}", self.control),
                format!("unusable NewExternalIPAddress '{}'", shorten(text, 60)),
            )
        })
    }

    /// `AddPortMapping` of `m`.
    fn add_port(&self, m: &MappingRequest) -> Result<(), UpnpError> {
        if m.external_port == 0 || m.internal.port() == 0 {
            return Err(UpnpError::NotApplicable("port 0 cannot be mapped".into()));
        }
        self.call(ADD, |name| mapping_value(name, m, m.external_port)).map(drop)
    }

    /// `AddAnyPortMapping` of `m`, asking for a random port: the port reserved.
    fn add_any_port(&self, m: &MappingRequest) -> Result<u16, UpnpError> {
        if m.internal.port() == 0 {
            return Err(UpnpError::NotApplicable("port 0 cannot be mapped".into()));
        }
        let asked: u16 = rand::rng().random_range(32_768..65_535);
        let r = self
            .call(ADD_ANY, |name| mapping_value(name, m, asked))
            .map_err(|e| match e {
                UpnpError::Refused { code: 728, .. } => UpnpError::NoPort(format!(
                    "{ADD_ANY} at {}: the gateway has no free port (728)",
                    self.control
                )),
                e => e,
            })?;
        let text = r.get("NewReservedPort").unwrap_or_default();
        text.parse().map_err(|_| {
            UpnpError::malformed(
                format!("{ADD_ANY} at {}", self.control),
                format!("unusable NewReservedPort '{}'", shorten(text, 60)),
            )
        })
    }

    /// `DeletePortMapping`.
    fn remove_port(&self, protocol: Protocol, external_port: u16) -> Result<(), UpnpError> {
        self.call(DELETE, |name| match name {
            "NewRemoteHost" => Some(String::new()),
            "NewExternalPort" => Some(external_port.to_string()),
            "NewProtocol" => Some(proto(protocol).to_owned()),
            _ => None,
        })
        .map(drop)
    }
}

/// The value of the argument `name` of `AddPortMapping` or `AddAnyPortMapping` for `m`, asking
/// for `external_port`.
fn mapping_value(name: &str, m: &MappingRequest, external_port: u16) -> Option<String> {
    Some(match name {
        "NewRemoteHost" => String::new(),
        "NewExternalPort" => external_port.to_string(),
        "NewProtocol" => proto(m.protocol).to_owned(),
        "NewInternalPort" => m.internal.port().to_string(),
        "NewInternalClient" => m.internal.ip().to_string(),
        "NewEnabled" => "1".to_owned(),
        "NewPortMappingDescription" => m.description.clone(),
        "NewLeaseDuration" => m.lease_secs.to_string(),
        _ => return None,
    })
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
