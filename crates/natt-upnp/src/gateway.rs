//! A UPnP Internet Gateway Device: loading it from its root description URL, and the SOAP
//! actions of its WAN connection service (external address, add and delete port mappings).
//!
//! The description is untrusted: its control URL must point at the host that served the
//! description (so a device answering a search cannot make us send requests elsewhere), and
//! every request is bounded by a deadline and a size limit (see [`crate::http`]).

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddrV4};
use std::time::Instant;

use natt_core::Protocol;

use crate::error::{UpnpError, shorten};
use crate::http::{self, MAX_BODY, Request};
use crate::url::HttpUrl;
use crate::xml::{self, Element};

/// WAN connection services we can map ports with, best first.
const SERVICES: [&str; 3] = [
    "urn:schemas-upnp-org:service:WANIPConnection:2",
    "urn:schemas-upnp-org:service:WANIPConnection:1",
    "urn:schemas-upnp-org:service:WANPPPConnection:1",
];

/// Largest SOAP answer accepted (they are a few hundred bytes).
const MAX_SOAP_BODY: usize = 16 * 1024;

/// The version of the Internet Gateway Device specification a gateway speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum IgdVersion {
    /// IGD:1 (`AddPortMapping` only).
    V1,
    /// IGD:2 (with `AddAnyPortMapping`).
    V2,
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
    /// Its root description URL.
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

/// A gateway's WAN connection service, ready for SOAP actions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Gateway {
    /// The root description URL.
    pub description: HttpUrl,
    /// The control URL of the WAN connection service.
    pub control: HttpUrl,
    /// The service type, e.g. `urn:schemas-upnp-org:service:WANIPConnection:2`.
    pub service_type: String,
    /// The IGD version (from the root device type, else the service's).
    pub version: IgdVersion,
}

/// A port mapping request.
#[derive(Debug, Clone)]
pub struct MappingRequest<'a> {
    /// UDP or TCP.
    pub protocol: Protocol,
    /// The external port wanted.
    pub external_port: u16,
    /// The host and port traffic goes to.
    pub internal: SocketAddrV4,
    /// Seconds (0: permanent).
    pub lease_secs: u32,
    /// The description shown in the router's list.
    pub description: &'a str,
}

impl Gateway {
    /// Fetches the root description at `url` and finds its WAN connection services, best
    /// first. Each is a candidate; [`Gateway::load`] picks the one that is connected.
    pub fn candidates(url: &HttpUrl, deadline: Instant) -> Result<Vec<Gateway>, UpnpError> {
        let what = format!("GET {url}");
        let response = http::send(
            &Request {
                method: "GET",
                url,
                headers: &[],
                body: &[],
                max_body: MAX_BODY,
                what: &what,
            },
            deadline,
        )?;
        if response.status != 200 {
            return Err(UpnpError::HttpStatus {
                what,
                status: response.status,
            });
        }
        let root = xml::parse(&response.body).map_err(|d| UpnpError::malformed(&what, d))?;
        parse_description(url, &root).map_err(|d| UpnpError::malformed(&what, d))
    }

    /// Loads the gateway described at `url`: the first WAN connection service that answers
    /// with a usable external address, and that address.
    pub fn load(url: &HttpUrl, deadline: Instant) -> Result<(Gateway, Ipv4Addr), UpnpError> {
        let mut last = None;
        for gateway in Gateway::candidates(url, deadline)? {
            match gateway.external_ip(deadline) {
                Ok(ip) => return Ok((gateway, ip)),
                Err(e) => {
                    log::debug!("upnp: {} at {}: {e}", gateway.service_type, gateway.control);
                    let stop = e.is_unreachable();
                    last = Some(e);
                    if stop {
                        break;
                    }
                }
            }
        }
        Err(last.unwrap_or_else(|| UpnpError::malformed(format!("GET {url}"), "no WAN connection service")))
    }

    /// What a report says about this gateway.
    pub fn info(&self, external_ip: Option<Ipv4Addr>) -> GatewayInfo {
        GatewayInfo {
            description_url: self.description.to_string(),
            version: self.version,
            service_type: self.service_type.clone(),
            external_ip,
        }
    }

    /// True for IGD:2 services, which have `AddAnyPortMapping`.
    pub fn has_add_any(&self) -> bool {
        self.service_type.ends_with(":2")
    }

    /// `GetExternalIPAddress`: the gateway's external IPv4 address, if it is a usable one.
    pub fn external_ip(&self, deadline: Instant) -> Result<Ipv4Addr, UpnpError> {
        let action = "GetExternalIPAddress";
        let response = self.soap(action, &[], deadline)?;
        let text = response.child_text("NewExternalIPAddress").unwrap_or("").trim();
        if text.is_empty() {
            return Err(UpnpError::NoExternalAddress("it reports none (not connected?)".into()));
        }
        let ip: IpAddr = text.parse().map_err(|_| {
            UpnpError::malformed(
                format!("{action} at {}", self.control),
                format!("'{}' is not an IP address", shorten(text, 60)),
            )
        })?;
        match ip {
            IpAddr::V4(ip) if ip.is_unspecified() => {
                Err(UpnpError::NoExternalAddress("0.0.0.0 (not connected?)".into()))
            }
            IpAddr::V4(ip) if ip.is_loopback() || ip.is_multicast() || ip.is_broadcast() => {
                Err(UpnpError::NoExternalAddress(format!("{ip} is not a unicast address")))
            }
            IpAddr::V4(ip) => Ok(ip),
            IpAddr::V6(ip) => Err(UpnpError::NoExternalAddress(format!("{ip} is not IPv4"))),
        }
    }

    /// `AddPortMapping`: maps `external_port` (or renews our mapping of it).
    pub fn add_port_mapping(&self, m: &MappingRequest<'_>, deadline: Instant) -> Result<(), UpnpError> {
        self.soap("AddPortMapping", &mapping_args(m), deadline).map(drop)
    }

    /// `AddAnyPortMapping` (IGD:2): maps `external_port` if free, else a port the gateway
    /// chooses; returns the port mapped.
    pub fn add_any_port_mapping(&self, m: &MappingRequest<'_>, deadline: Instant) -> Result<u16, UpnpError> {
        let action = "AddAnyPortMapping";
        let response = self.soap(action, &mapping_args(m), deadline)?;
        let text = response.child_text("NewReservedPort").unwrap_or("").trim();
        text.parse::<u16>().ok().filter(|p| *p != 0).ok_or_else(|| {
            UpnpError::malformed(
                format!("{action} at {}", self.control),
                format!("NewReservedPort '{}' is not a port", shorten(text, 20)),
            )
        })
    }

    /// `DeletePortMapping`.
    pub fn delete_port_mapping(
        &self,
        protocol: Protocol,
        external_port: u16,
        deadline: Instant,
    ) -> Result<(), UpnpError> {
        let args = [
            ("NewRemoteHost", String::new()),
            ("NewExternalPort", external_port.to_string()),
            ("NewProtocol", proto(protocol).to_owned()),
        ];
        self.soap("DeletePortMapping", &args, deadline).map(drop)
    }

    /// Sends one SOAP action; its response element, or the UPnP error the gateway answered.
    fn soap(&self, action: &str, args: &[(&str, String)], deadline: Instant) -> Result<Element, UpnpError> {
        let what = format!("{action} at {}", self.control);
        let mut body = format!(
            "<?xml version=\"1.0\"?>\r\n<s:Envelope xmlns:s=\"http://schemas.xmlsoap.org/soap/envelope/\" \
             s:encodingStyle=\"http://schemas.xmlsoap.org/soap/encoding/\"><s:Body><u:{action} xmlns:u=\"{}\">",
            escape(&self.service_type)
        );
        for (name, value) in args {
            body.push_str(&format!("<{name}>{}</{name}>", escape(value)));
        }
        body.push_str(&format!("</u:{action}></s:Body></s:Envelope>\r\n"));
        let soap_action = format!("\"{}#{action}\"", self.service_type);
        let response = http::send(
            &Request {
                method: "POST",
                url: &self.control,
                headers: &[
                    ("Content-Type", "text/xml; charset=\"utf-8\""),
                    ("SOAPAction", &soap_action),
                ],
                body: body.as_bytes(),
                max_body: MAX_SOAP_BODY,
                what: &what,
            },
            deadline,
        )?;
        let parsed = xml::parse(&response.body);
        if let Ok(root) = &parsed
            && let Some(fault) = upnp_fault(root)
        {
            return Err(UpnpError::Refused {
                action: action.to_owned(),
                code: fault.0,
                description: fault.1,
            });
        }
        if response.status != 200 {
            return Err(UpnpError::HttpStatus {
                what,
                status: response.status,
            });
        }
        let root = parsed.map_err(|d| UpnpError::malformed(&what, d))?;
        let expected = format!("{action}Response");
        root.path(&["Body", &expected])
            .cloned()
            .ok_or_else(|| UpnpError::malformed(&what, format!("no {expected} in the answer")))
    }
}

/// The UPnP error code and description of a SOAP fault, if `root` is one.
fn upnp_fault(root: &Element) -> Option<(u16, String)> {
    let error = root.path(&["Body", "Fault", "detail", "UPnPError"])?;
    let code = error.child_text("errorCode")?.trim().parse().ok()?;
    let description = shorten(error.child_text("errorDescription").unwrap_or("").trim(), 120);
    Some((code, description))
}

fn proto(p: Protocol) -> &'static str {
    match p {
        Protocol::Udp => "UDP",
        Protocol::Tcp => "TCP",
    }
}

fn mapping_args(m: &MappingRequest<'_>) -> [(&'static str, String); 8] {
    [
        ("NewRemoteHost", String::new()),
        ("NewExternalPort", m.external_port.to_string()),
        ("NewProtocol", proto(m.protocol).to_owned()),
        ("NewInternalPort", m.internal.port().to_string()),
        ("NewInternalClient", m.internal.ip().to_string()),
        ("NewEnabled", "1".to_owned()),
        ("NewPortMappingDescription", m.description.to_owned()),
        ("NewLeaseDuration", m.lease_secs.to_string()),
    ]
}

/// Escapes text for XML content and attribute values.
fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c if c.is_control() => {}
            c => out.push(c),
        }
    }
    out
}

/// The WAN connection services of a root description served from `url`, best first.
fn parse_description(url: &HttpUrl, root: &Element) -> Result<Vec<Gateway>, String> {
    if root.name != "root" {
        return Err(format!("root element is <{}>, not <root>", shorten(&root.name, 40)));
    }
    let device = root.child("device").ok_or("no <device>")?;
    let base = match root.child_text("URLBase").map(str::trim).filter(|b| !b.is_empty()) {
        Some(b) => url.join(b).map_err(|e| format!("URLBase: {e}"))?,
        None => url.clone(),
    };
    let root_version = device
        .child_text("deviceType")
        .and_then(|t| {
            t.trim()
                .strip_prefix("urn:schemas-upnp-org:device:InternetGatewayDevice:")
        })
        .map(|v| {
            if v.trim() == "1" {
                IgdVersion::V1
            } else {
                IgdVersion::V2
            }
        });

    // Every service of every device, breadth first, bounded by the XML limits.
    let mut services: Vec<&Element> = Vec::new();
    let mut devices = vec![device];
    while let Some(d) = devices.pop() {
        if let Some(list) = d.child("serviceList") {
            services.extend(list.children_named("service"));
        }
        if let Some(list) = d.child("deviceList") {
            devices.extend(list.children_named("device"));
        }
    }
    let mut found = Vec::new();
    let mut problems = Vec::new();
    for wanted in SERVICES {
        for s in services
            .iter()
            .filter(|s| s.child_text("serviceType").map(str::trim) == Some(wanted))
        {
            let control = match s.child_text("controlURL").map(|c| base.join(c)) {
                Some(Ok(c)) => c,
                Some(Err(e)) => {
                    problems.push(format!("{wanted}: controlURL: {e}"));
                    continue;
                }
                None => {
                    problems.push(format!("{wanted}: no controlURL"));
                    continue;
                }
            };
            if control.ip() != url.ip() {
                problems.push(format!(
                    "{wanted}: control URL {control} is not on the gateway {}",
                    url.ip()
                ));
                continue;
            }
            let version = root_version.unwrap_or(if wanted.ends_with(":2") {
                IgdVersion::V2
            } else {
                IgdVersion::V1
            });
            found.push(Gateway {
                description: url.clone(),
                control,
                service_type: wanted.to_owned(),
                version,
            });
        }
    }
    if found.is_empty() {
        if problems.is_empty() {
            return Err("no WANIPConnection or WANPPPConnection service".into());
        }
        return Err(problems.join("; "));
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) const MINIUPNPD_DESC: &str = r#"<?xml version="1.0"?>
<root xmlns="urn:schemas-upnp-org:device-1-0"><specVersion><major>1</major><minor>1</minor></specVersion><device><deviceType>urn:schemas-upnp-org:device:InternetGatewayDevice:2</deviceType><serviceList><service><serviceType>urn:schemas-upnp-org:service:Layer3Forwarding:1</serviceType><controlURL>/ctl/L3F</controlURL></service></serviceList><deviceList><device><deviceType>urn:schemas-upnp-org:device:WANDevice:2</deviceType><serviceList><service><serviceType>urn:schemas-upnp-org:service:WANCommonInterfaceConfig:1</serviceType><controlURL>/ctl/CmnIfCfg</controlURL></service></serviceList><deviceList><device><deviceType>urn:schemas-upnp-org:device:WANConnectionDevice:2</deviceType><serviceList><service><serviceType>urn:schemas-upnp-org:service:WANIPConnection:2</serviceType><SCPDURL>/WANIPCn.xml</SCPDURL><controlURL>/ctl/IPConn</controlURL></service></serviceList></device></deviceList></device></deviceList></device></root>"#;

    fn desc_url() -> HttpUrl {
        HttpUrl::parse("http://192.168.1.1:5000/rootDesc.xml").unwrap()
    }

    #[test]
    fn finds_the_wan_ip_connection_of_miniupnpd() {
        let root = xml::parse(MINIUPNPD_DESC.as_bytes()).unwrap();
        let gws = parse_description(&desc_url(), &root).unwrap();
        assert_eq!(gws.len(), 1);
        assert_eq!(gws[0].control.to_string(), "http://192.168.1.1:5000/ctl/IPConn");
        assert_eq!(gws[0].version, IgdVersion::V2);
        assert!(gws[0].has_add_any());
        let info = gws[0].info(Some(Ipv4Addr::new(203, 0, 113, 101)));
        assert_eq!(
            info.to_string(),
            "upnp igdv2 203.0.113.101 at http://192.168.1.1:5000/rootDesc.xml"
        );
    }

    #[test]
    fn prefers_ip_over_ppp_and_honours_urlbase() {
        let doc = r#"<root><URLBase>http://192.168.1.1:49000/</URLBase><device>
            <deviceType>urn:schemas-upnp-org:device:InternetGatewayDevice:1</deviceType>
            <serviceList>
              <service><serviceType>urn:schemas-upnp-org:service:WANPPPConnection:1</serviceType><controlURL>upnp/ppp</controlURL></service>
              <service><serviceType>urn:schemas-upnp-org:service:WANIPConnection:1</serviceType><controlURL>upnp/ip</controlURL></service>
            </serviceList></device></root>"#;
        let gws = parse_description(&desc_url(), &xml::parse(doc.as_bytes()).unwrap()).unwrap();
        let urls: Vec<String> = gws.iter().map(|g| g.control.to_string()).collect();
        assert_eq!(
            urls,
            ["http://192.168.1.1:49000/upnp/ip", "http://192.168.1.1:49000/upnp/ppp"]
        );
        assert_eq!(gws[0].version, IgdVersion::V1);
        assert!(!gws[0].has_add_any());
    }

    #[test]
    fn refuses_control_urls_on_other_hosts() {
        for control in [
            "http://10.9.9.9/ctl",
            "//10.9.9.9:80/ctl",
            "https://192.168.1.1/ctl",
            "",
        ] {
            let doc = format!(
                "<root><device><serviceList><service><serviceType>urn:schemas-upnp-org:service:WANIPConnection:1\
                 </serviceType><controlURL>{control}</controlURL></service></serviceList></device></root>"
            );
            let err = parse_description(&desc_url(), &xml::parse(doc.as_bytes()).unwrap()).unwrap_err();
            assert!(err.contains("WANIPConnection:1"), "{control}: {err}");
        }
        let doc = "<root><URLBase>http://10.9.9.9/</URLBase><device><serviceList><service><serviceType>\
                   urn:schemas-upnp-org:service:WANIPConnection:1</serviceType><controlURL>/ctl</controlURL>\
                   </service></serviceList></device></root>";
        assert!(parse_description(&desc_url(), &xml::parse(doc.as_bytes()).unwrap()).is_err());
    }

    #[test]
    fn descriptions_without_a_wan_service_are_rejected() {
        for doc in [
            "<html><body>hello</body></html>",
            "<root/>",
            "<root><device><serviceList/></device></root>",
        ] {
            assert!(parse_description(&desc_url(), &xml::parse(doc.as_bytes()).unwrap()).is_err());
        }
    }

    #[test]
    fn faults_carry_the_upnp_code() {
        let doc = br#"<s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/"><s:Body><s:Fault>
            <faultcode>s:Client</faultcode><faultstring>UPnPError</faultstring><detail>
            <UPnPError xmlns="urn:schemas-upnp-org:control-1-0"><errorCode>718</errorCode>
            <errorDescription>ConflictInMappingEntry</errorDescription></UPnPError></detail></s:Fault></s:Body></s:Envelope>"#;
        let root = xml::parse(doc).unwrap();
        assert_eq!(upnp_fault(&root), Some((718, "ConflictInMappingEntry".to_owned())));
    }

    #[test]
    fn escapes_descriptions() {
        assert_eq!(escape("a<b>&\"'\u{7}"), "a&lt;b&gt;&amp;&quot;&apos;");
    }
}
