//! Reading a gateway's UPnP root device description without sockets (which WAN connection
//! service to control, and at which URL), resolving its URLs against the description's own,
//! and the actions' argument lists.
//!
//! natt reads the description itself, of a gateway given by its URL (natt-upnp's `load`
//! module, so that no search has to run first) or found by natt's SSDP search: a size limit, a
//! depth limit, the three WAN connection services IGD:1 and IGD:2 define, and URLs that must
//! stay on the gateway's own address.
//!
//! The service's own description (SCPD) is not read: like miniupnpc (`upnpc`), natt sends
//! the argument lists that the IGD specifications fix for the few actions it uses
//! ([`standard_actions`]), which saves a request to the gateway before the first mapping.
//!
//! Gateways are untrusted: any bytes give a description or an [`UpnpError`], never a panic, and
//! the work and memory are bounded by the size limit. Descriptions are UTF-8 XML without a
//! document type declaration (UPnP has none), so one with a DTD is refused before parsing: its
//! entities could expand a small document into gigabytes. (natt's hardened XML reader, shared
//! with the SOAP answers of [`crate::soap`].)

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use url::Url;

use crate::error::{UpnpError, shorten};
use crate::xml_reader::{self, Event, Limits, XmlError};

/// The largest description natt reads (the ones real gateways serve are a few kilobytes).
pub const MAX_DESCRIPTION_BYTES: usize = 256 * 1024;

/// Deeper XML than this is refused (device descriptions nest devices three levels deep).
const MAX_DEPTH: usize = 32;

/// The longest text kept from one element (a URL or a name); longer text is refused.
const MAX_TEXT: usize = 2048;

/// What descriptions are read with.
const LIMITS: Limits = Limits {
    max_bytes: MAX_DESCRIPTION_BYTES,
    max_depth: MAX_DEPTH,
    max_text: MAX_TEXT,
};

/// The WAN connection services natt controls.
const WAN_SERVICES: [&str; 3] = [
    "urn:schemas-upnp-org:service:WANIPConnection:2",
    "urn:schemas-upnp-org:service:WANIPConnection:1",
    "urn:schemas-upnp-org:service:WANPPPConnection:1",
];

/// What a root device description says about the WAN connection service to control.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceDescription {
    /// `<URLBase>`, when given (deprecated since UPnP 1.1, still sent by some devices).
    pub url_base: Option<String>,
    /// The service type, e.g. `urn:schemas-upnp-org:service:WANIPConnection:2`.
    pub service_type: String,
    /// `<controlURL>` as written (usually a path).
    pub control_url: String,
}

/// Reads a root device description: the first WAN connection service it lists (in document
/// order) with a control URL.
///
/// ```
/// let xml = br#"<?xml version="1.0"?>
/// <root xmlns="urn:schemas-upnp-org:device-1-0"><device><deviceList><device><deviceList>
///   <device><serviceList><service>
///     <serviceType>urn:schemas-upnp-org:service:WANIPConnection:2</serviceType>
///     <controlURL>/ctl/IPConn</controlURL><SCPDURL>/WANIPCn.xml</SCPDURL>
///   </service></serviceList></device>
/// </deviceList></device></deviceList></device></root>"#;
/// let d = natt_upnp::description::parse_description(xml)?;
/// assert_eq!(d.control_url, "/ctl/IPConn");
/// # Ok::<(), natt_upnp::UpnpError>(())
/// ```
pub fn parse_description(xml: &[u8]) -> Result<DeviceDescription, UpnpError> {
    const WHAT: &str = "the device description";
    let mut url_base = None;
    let mut found = None;
    let mut service = Service::default();
    xml_reader::walk(xml, LIMITS, |event, path| match event {
        Event::Text(text) => match path {
            [_root, element] if element == "URLBase" => url_base = Some(text.to_owned()),
            [.., device, list, service_element, field] if is_service(device, list, service_element) => {
                match field.as_str() {
                    "serviceType" => service.service_type = text.to_owned(),
                    "controlURL" => service.control_url = text.to_owned(),
                    _ => {}
                }
            }
            _ => {}
        },
        Event::End => {
            if let [.., device, list, service_element] = path
                && is_service(device, list, service_element)
            {
                let done = std::mem::take(&mut service);
                if found.is_none() && done.is_usable() {
                    found = Some(done);
                }
            }
        }
    })
    .map_err(|e| match e {
        XmlError::TooLarge(limit) => UpnpError::TooLarge {
            what: WHAT.to_owned(),
            limit,
        },
        XmlError::Malformed(detail) => UpnpError::malformed(WHAT, detail),
    })?;
    let service = found.ok_or_else(|| {
        UpnpError::malformed(
            WHAT,
            "no WANIPConnection or WANPPPConnection service with a control URL",
        )
    })?;
    Ok(DeviceDescription {
        url_base,
        service_type: service.service_type,
        control_url: service.control_url,
    })
}

/// The IPv6 firewall control service of IGD:2 (pinholes for IPv6 hosts).
pub const FIREWALL_SERVICE: &str = "urn:schemas-upnp-org:service:WANIPv6FirewallControl:1";

/// The control URL of the description's IPv6 firewall control service ([`FIREWALL_SERVICE`],
/// IGD:2), as written, if it lists one: where natt asks for IPv6 pinholes
/// ([`crate::pinhole`]). Read with the same limits as [`parse_description`].
///
/// ```
/// let xml = br#"<root><device><serviceList><service>
///   <serviceType>urn:schemas-upnp-org:service:WANIPv6FirewallControl:1</serviceType>
///   <controlURL>/ctl/IP6FCtl</controlURL></service></serviceList></device></root>"#;
/// assert_eq!(natt_upnp::description::firewall_control(xml)?.as_deref(), Some("/ctl/IP6FCtl"));
/// # Ok::<(), natt_upnp::UpnpError>(())
/// ```
pub fn firewall_control(xml: &[u8]) -> Result<Option<String>, UpnpError> {
    const WHAT: &str = "the device description";
    let mut found = None;
    let mut service = Service::default();
    xml_reader::walk(xml, LIMITS, |event, path| match event {
        Event::Text(text) => {
            if let [.., device, list, service_element, field] = path
                && is_service(device, list, service_element)
            {
                match field.as_str() {
                    "serviceType" => service.service_type = text.to_owned(),
                    "controlURL" => service.control_url = text.to_owned(),
                    _ => {}
                }
            }
        }
        Event::End => {
            if let [.., device, list, service_element] = path
                && is_service(device, list, service_element)
            {
                let done = std::mem::take(&mut service);
                if found.is_none() && done.service_type.trim() == FIREWALL_SERVICE && !done.control_url.is_empty() {
                    found = Some(done.control_url);
                }
            }
        }
    })
    .map_err(|e| match e {
        XmlError::TooLarge(limit) => UpnpError::TooLarge {
            what: WHAT.to_owned(),
            limit,
        },
        XmlError::Malformed(detail) => UpnpError::malformed(WHAT, detail),
    })?;
    Ok(found)
}

/// The input arguments of the actions natt uses, as the IGD specifications fix them
/// (WANIPConnection:1 and :2, WANPPPConnection:1), in their order: what a client would
/// otherwise read from the service's description (SCPD). `AddAnyPortMapping` is listed for
/// IGD:2's `WANIPConnection:2` only, where it is mandatory; a gateway that lacks it all the same
/// refuses it (401 Invalid Action), and natt then tries random ports with `AddPortMapping`.
///
/// ```
/// let actions = natt_upnp::description::standard_actions("urn:schemas-upnp-org:service:WANIPConnection:1");
/// assert_eq!(actions["DeletePortMapping"], ["NewRemoteHost", "NewExternalPort", "NewProtocol"]);
/// assert!(!actions.contains_key("AddAnyPortMapping"));
/// ```
pub fn standard_actions(service_type: &str) -> HashMap<String, Vec<String>> {
    const MAPPING: [&str; 8] = [
        "NewRemoteHost",
        "NewExternalPort",
        "NewProtocol",
        "NewInternalPort",
        "NewInternalClient",
        "NewEnabled",
        "NewPortMappingDescription",
        "NewLeaseDuration",
    ];
    const DELETE: [&str; 3] = ["NewRemoteHost", "NewExternalPort", "NewProtocol"];
    let owned = |args: &[&str]| args.iter().map(|a| (*a).to_owned()).collect::<Vec<String>>();
    let mut actions = HashMap::from([
        ("GetExternalIPAddress".to_owned(), Vec::new()),
        ("AddPortMapping".to_owned(), owned(&MAPPING)),
        ("DeletePortMapping".to_owned(), owned(&DELETE)),
    ]);
    if service_type.trim() == "urn:schemas-upnp-org:service:WANIPConnection:2" {
        actions.insert("AddAnyPortMapping".to_owned(), owned(&MAPPING));
    }
    actions
}

/// Where a gateway is and how to reach its WAN connection service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoints {
    /// The gateway's HTTP address (the description URL's host and port).
    pub addr: SocketAddr,
    /// The description's path (and query).
    pub root: String,
    /// The control URL: a path on `addr`, or a whole URL for another port of the same host.
    pub control: String,
}

/// Resolves the URLs of `description` (read from `description_url`) against it, or against
/// its `<URLBase>` if given. They must be `http://` URLs on the description's own host
/// (another port is allowed); anything else is refused, so a
/// description cannot send natt's requests elsewhere.
///
/// ```
/// use natt_upnp::description::{DeviceDescription, resolve};
/// let d = DeviceDescription {
///     url_base: None,
///     service_type: "urn:schemas-upnp-org:service:WANIPConnection:1".into(),
///     control_url: "ctl/IPConn".into(),
/// };
/// let e = resolve(&"http://192.168.1.1:5000/rootDesc.xml".parse()?, &d)?;
/// assert_eq!(e.addr.to_string(), "192.168.1.1:5000");
/// assert_eq!(e.control, "/ctl/IPConn");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn resolve(description_url: &Url, description: &DeviceDescription) -> Result<Endpoints, UpnpError> {
    let (ip, port) = http_ipv4(description_url).map_err(|why| bad_url(description_url.as_str(), why))?;
    let addr = SocketAddr::from((ip, port));
    let base = match &description.url_base {
        Some(base) => description_url
            .join(base.trim())
            .map_err(|e| bad_url(base, &format!("URLBase: {e}")))?,
        None => description_url.clone(),
    };
    let on_gateway = |reference: &str| -> Result<String, UpnpError> {
        let url = base
            .join(reference.trim())
            .map_err(|e| bad_url(reference, &e.to_string()))?;
        let (host, port) = http_ipv4(&url).map_err(|why| bad_url(reference, why))?;
        if host != ip {
            return Err(bad_url(reference, &format!("not on the gateway's address {ip}")));
        }
        let path = path_and_query(&url);
        // A path starting with `//` would name another host when joined onto the gateway's
        // address (as natt joins paths for each request): keep the whole URL then.
        Ok(if port == addr.port() && !path.starts_with("//") {
            path
        } else {
            url.into()
        })
    };
    Ok(Endpoints {
        addr,
        root: path_and_query(description_url),
        control: on_gateway(&description.control_url)?,
    })
}

/// The URL natt sends SOAP requests to: `control` (a path, or a whole URL, as in
/// [`Endpoints::control`]) joined onto the gateway's address `addr`, if that stays on `addr`'s
/// IP (a plain `http://` URL, port not 0), else why not. A path such as `//10.0.0.1/ctl` names
/// another host once joined: refused.
pub(crate) fn control_on(addr: SocketAddr, control: &str) -> Result<Url, String> {
    let base = Url::parse(&format!("http://{addr}/")).map_err(|e| e.to_string())?;
    let url = base.join(control).map_err(|e| e.to_string())?;
    let (host, _) = http_ipv4(&url).map_err(str::to_owned)?;
    if IpAddr::V4(host) != addr.ip() {
        return Err(format!("the control URL leads off the gateway's address {}", addr.ip()));
    }
    Ok(url)
}

#[cfg(test)]
fn stays_on(addr: SocketAddr, control: &str) -> bool {
    control_on(addr, control).is_ok()
}

/// The IPv4 address and port of a plain `http://` URL (no user, no fragment, no port 0).
pub(crate) fn http_ipv4(url: &Url) -> Result<(Ipv4Addr, u16), &'static str> {
    if url.scheme() != "http" {
        return Err("not an http:// URL");
    }
    if !url.username().is_empty() || url.password().is_some() || url.fragment().is_some() {
        return Err("a user name, password or fragment is not allowed");
    }
    let ip = match url.host() {
        Some(url::Host::Ipv4(ip)) => ip,
        _ => return Err("the host must be an IPv4 address"),
    };
    if ip.is_unspecified() || ip.is_multicast() || ip.is_broadcast() {
        return Err("not a unicast address");
    }
    match url.port_or_known_default() {
        Some(port) if port != 0 => Ok((ip, port)),
        _ => Err("no usable port"),
    }
}

fn path_and_query(url: &Url) -> String {
    match url.query() {
        Some(query) => format!("{}?{query}", url.path()),
        None => url.path().to_owned(),
    }
}

fn bad_url(url: &str, why: &str) -> UpnpError {
    UpnpError::BadUrl {
        url: shorten(url, 100),
        why: why.to_owned(),
    }
}

/// A `<service>` being read.
#[derive(Default)]
struct Service {
    service_type: String,
    control_url: String,
}

impl Service {
    fn is_usable(&self) -> bool {
        WAN_SERVICES.contains(&self.service_type.as_str()) && !self.control_url.is_empty()
    }
}

fn is_service(device: &str, list: &str, service: &str) -> bool {
    device == "device" && list == "serviceList" && service == "service"
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// miniupnpd's root description (IGD:2), shortened: what the lab's router serves.
    const MINIUPNPD: &str = r#"<?xml version="1.0"?>
<root xmlns="urn:schemas-upnp-org:device-1-0" configId="1337"><specVersion><major>1</major><minor>1</minor></specVersion>
<device><deviceType>urn:schemas-upnp-org:device:InternetGatewayDevice:2</deviceType>
<serviceList><service><serviceType>urn:schemas-upnp-org:service:Layer3Forwarding:1</serviceType>
<serviceId>urn:upnp-org:serviceId:L3Forwarding1</serviceId><SCPDURL>/L3F.xml</SCPDURL>
<controlURL>/ctl/L3F</controlURL><eventSubURL>/evt/L3F</eventSubURL></service></serviceList>
<deviceList><device><deviceType>urn:schemas-upnp-org:device:WANDevice:2</deviceType>
<serviceList><service><serviceType>urn:schemas-upnp-org:service:WANCommonInterfaceConfig:1</serviceType>
<SCPDURL>/WANCfg.xml</SCPDURL><controlURL>/ctl/CmnIfCfg</controlURL></service></serviceList>
<deviceList><device><deviceType>urn:schemas-upnp-org:device:WANConnectionDevice:2</deviceType>
<serviceList><service><serviceType>urn:schemas-upnp-org:service:WANIPConnection:2</serviceType>
<serviceId>urn:upnp-org:serviceId:WANIPConn1</serviceId><SCPDURL>/WANIPCn.xml</SCPDURL>
<controlURL>/ctl/IPConn</controlURL><eventSubURL>/evt/IPConn</eventSubURL></service>
<service><serviceType>urn:schemas-upnp-org:service:WANIPv6FirewallControl:1</serviceType>
<SCPDURL>/WANIP6FC.xml</SCPDURL><controlURL>/ctl/IP6FCtl</controlURL></service></serviceList>
</device></deviceList></device></deviceList>
<presentationURL>http://192.168.1.1/</presentationURL></device></root>"#;

    fn url(s: &str) -> Url {
        s.parse().unwrap()
    }

    #[test]
    fn miniupnpds_description_gives_its_wan_ip_connection() {
        let d = parse_description(MINIUPNPD.as_bytes()).unwrap();
        assert_eq!(d.service_type, "urn:schemas-upnp-org:service:WANIPConnection:2");
        assert_eq!(d.control_url, "/ctl/IPConn");
        assert_eq!(d.url_base, None);
        let e = resolve(&url("http://192.168.1.1:5000/rootDesc.xml"), &d).unwrap();
        assert_eq!(e.addr, "192.168.1.1:5000".parse().unwrap());
        assert_eq!(e.root, "/rootDesc.xml");
        assert_eq!(e.control, "/ctl/IPConn");
    }

    #[test]
    fn miniupnpds_ipv6_firewall_control_is_found() {
        assert_eq!(
            firewall_control(MINIUPNPD.as_bytes()).unwrap().as_deref(),
            Some("/ctl/IP6FCtl")
        );
        let igd1 = MINIUPNPD.replace("WANIPv6FirewallControl", "Other");
        assert_eq!(firewall_control(igd1.as_bytes()).unwrap(), None);
        assert!(firewall_control(b"<root><!DOCTYPE x></root>").is_err());
    }

    #[test]
    fn the_first_usable_wan_service_wins_and_prefixes_and_whitespace_do_not_matter() {
        let xml = r#"<r:root xmlns:r="urn:schemas-upnp-org:device-1-0"><r:URLBase> http://10.0.0.1:80/ </r:URLBase>
            <r:device><r:serviceList>
              <r:service><r:serviceType>urn:schemas-upnp-org:service:WANPPPConnection:1</r:serviceType>
                <r:controlURL>  </r:controlURL><r:SCPDURL>/ppp.xml</r:SCPDURL></r:service>
              <r:service><r:serviceType> urn:schemas-upnp-org:service:WANIPConnection:1 </r:serviceType>
                <!-- a comment --><r:controlURL><![CDATA[/upnp/control/WANIPConn1]]></r:controlURL>
                <r:SCPDURL>ip&amp;.xml</r:SCPDURL></r:service>
              <r:service><r:serviceType>urn:schemas-upnp-org:service:WANIPConnection:2</r:serviceType>
                <r:controlURL>/later</r:controlURL><r:SCPDURL>/later.xml</r:SCPDURL></r:service>
            </r:serviceList></r:device></r:root>"#;
        let d = parse_description(xml.as_bytes()).unwrap();
        assert_eq!(d.service_type, "urn:schemas-upnp-org:service:WANIPConnection:1");
        assert_eq!(d.control_url, "/upnp/control/WANIPConn1");
        assert_eq!(d.url_base.as_deref(), Some("http://10.0.0.1:80/"));
        // URLBase, not the description's URL, is the base; port 80 differs from 49000.
        let e = resolve(&url("http://10.0.0.1:49000/igd.xml"), &d).unwrap();
        assert_eq!(e.control, "http://10.0.0.1/upnp/control/WANIPConn1");
    }

    #[test]
    fn descriptions_without_a_usable_service_are_refused() {
        for xml in [
            "<root/>",
            "<root><device><serviceList><service><serviceType>urn:schemas-upnp-org:service:Layer3Forwarding:1\
             </serviceType><controlURL>/c</controlURL><SCPDURL>/s</SCPDURL></service></serviceList></device></root>",
            // A service outside any serviceList.
            "<root><device><service><serviceType>urn:schemas-upnp-org:service:WANIPConnection:1</serviceType>\
             <controlURL>/c</controlURL><SCPDURL>/s</SCPDURL></service></device></root>",
            // No control URL.
            "<root><device><serviceList><service><serviceType>urn:schemas-upnp-org:service:WANIPConnection:1\
             </serviceType><SCPDURL>/s</SCPDURL></service></serviceList></device></root>",
        ] {
            let e = parse_description(xml.as_bytes()).unwrap_err();
            assert!(matches!(e, UpnpError::Malformed { .. }), "{xml}: {e}");
        }
    }

    #[test]
    fn urls_off_the_gateway_are_refused() {
        let base = url("http://192.168.1.1:5000/rootDesc.xml");
        for (control, why) in [
            ("http://192.168.1.2/ctl", "not on the gateway"),
            ("https://192.168.1.1/ctl", "http://"),
            ("http://user@192.168.1.1/ctl", "user name"),
            ("http://router.lan/ctl", "IPv4"),
            ("http://192.168.1.1:0/ctl", "port"),
            ("/ctl#x", "fragment"),
        ] {
            let d = DeviceDescription {
                url_base: None,
                service_type: WAN_SERVICES[0].into(),
                control_url: control.into(),
            };
            let e = resolve(&base, &d).unwrap_err();
            assert!(e.to_string().contains(why), "{control}: {e}");
        }
        let d = DeviceDescription {
            url_base: Some("http://10.9.9.9/".into()),
            service_type: WAN_SERVICES[0].into(),
            control_url: "/ctl".into(),
        };
        assert!(matches!(resolve(&base, &d), Err(UpnpError::BadUrl { .. })));
    }

    #[test]
    fn paths_that_name_another_host_are_kept_whole() {
        let base = url("http://192.168.1.1:5000/rootDesc.xml");
        for control in ["http://192.168.1.1:5000//10.9.9.9/ctl", "/.//10.9.9.9/ctl"] {
            let d = DeviceDescription {
                url_base: None,
                service_type: WAN_SERVICES[0].into(),
                control_url: control.into(),
            };
            let e = resolve(&base, &d).unwrap();
            assert!(
                e.control.starts_with("http://192.168.1.1:5000/"),
                "{control}: {}",
                e.control
            );
            assert!(stays_on(e.addr, &e.control), "{control}: {}", e.control);
        }
        let addr: SocketAddr = "192.168.1.1:5000".parse().unwrap();
        assert!(stays_on(addr, "/ctl/IPConn"));
        assert!(stays_on(addr, "http://192.168.1.1:80/ctl"));
        assert!(!stays_on(addr, "//10.9.9.9/ctl"));
        assert!(!stays_on(addr, "http://10.9.9.9/ctl"));
        assert!(!stays_on(addr, "https://192.168.1.1/ctl"));
    }

    #[test]
    fn standard_actions_follow_the_service_version() {
        let v2 = standard_actions(WAN_SERVICES[0]);
        assert_eq!(v2["AddAnyPortMapping"], v2["AddPortMapping"]);
        assert_eq!(v2["AddPortMapping"].len(), 8);
        assert!(v2["GetExternalIPAddress"].is_empty());
        for v1 in &WAN_SERVICES[1..] {
            let a = standard_actions(v1);
            assert!(!a.contains_key("AddAnyPortMapping"), "{v1}");
            assert_eq!(
                a["DeletePortMapping"],
                ["NewRemoteHost", "NewExternalPort", "NewProtocol"]
            );
        }
    }

    #[test]
    fn hostile_documents_end_in_errors() {
        let deep = "<a>".repeat(MAX_DEPTH + 1);
        let long_text = format!("<root><URLBase>{}</URLBase></root>", "x".repeat(MAX_TEXT + 1));
        let huge = format!("<root>{}</root>", " ".repeat(MAX_DESCRIPTION_BYTES));
        // Billion laughs, parameter-entity style, around a description that is otherwise fine.
        let laughs = format!(
            r#"<?xml version="1.0"?><!DOCTYPE root [<!ENTITY % a "aaaaaaaaaa"><!ENTITY % b "%a;%a;%a;%a;%a;%a;%a;%a;%a;%a;">
            <!ENTITY % c "%b;%b;%b;%b;%b;%b;%b;%b;%b;%b;"><!ENTITY d "%c;%c;%c;%c;%c;%c;%c;%c;%c;%c;">]>{}"#,
            MINIUPNPD
                .trim_start_matches(r#"<?xml version="1.0"?>"#)
                .replace("/ctl/IPConn", "/ctl/&d;")
        );
        // UTF-16 with its byte order mark (xml-rs would read it).
        let utf16: Vec<u8> = [0xFF, 0xFE]
            .into_iter()
            .chain(MINIUPNPD.encode_utf16().flat_map(u16::to_le_bytes))
            .collect();
        assert!(parse_description(&utf16).unwrap_err().to_string().contains("not UTF-8"));
        for (xml, kind) in [
            (deep.as_str(), "deeper"),
            (long_text.as_str(), "longer"),
            (huge.as_str(), "larger"),
            ("<root><device>", "bad XML"),
            ("\u{0}\u{1}garbage", "bad XML"),
            ("<root><!ENTITY x 'y'></root>", "document type declaration"),
            ("<root></device>", "bad XML"),
            (laughs.as_str(), "document type declaration"),
        ] {
            let e = parse_description(xml.as_bytes()).unwrap_err().to_string();
            assert!(e.contains(kind), "{}: {e}", shorten(xml, 60));
        }
    }
}
