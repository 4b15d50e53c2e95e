//! UPnP root device descriptions (`upnp_description`): what a gateway serves at the URL natt
//! is given (`natt_upnp::description`).

use natt_upnp::description::{self, MAX_DESCRIPTION_BYTES};

/// The URL the descriptions are read from.
const AT: &str = "http://192.168.1.1:5000/rootDesc.xml";

/// The services natt controls.
const WAN_SERVICES: [&str; 3] = [
    "urn:schemas-upnp-org:service:WANIPConnection:2",
    "urn:schemas-upnp-org:service:WANIPConnection:1",
    "urn:schemas-upnp-org:service:WANPPPConnection:1",
];

/// `upnp_description`: any bytes as a description. What parses names a WAN connection service
/// with a control URL; what resolves stays on the gateway's address (a path on its port, or
/// a whole `http://` URL on its host).
pub fn target(data: &[u8]) {
    let Ok(found) = description::parse_description(data) else {
        return;
    };
    assert!(data.len() <= MAX_DESCRIPTION_BYTES);
    assert!(WAN_SERVICES.contains(&found.service_type.as_str()), "{found:?}");
    assert!(!found.control_url.is_empty());
    let at: url::Url = AT.parse().expect("a fixed URL");
    let Ok(endpoints) = description::resolve(&at, &found) else {
        return;
    };
    assert_eq!(endpoints.addr, crate::addr("192.168.1.1:5000"));
    assert_eq!(endpoints.root, "/rootDesc.xml");
    // Joined onto the gateway's address as igd-next joins it for every request, the control
    // URL stays on the gateway.
    let base: url::Url = "http://192.168.1.1:5000/".parse().expect("a fixed URL");
    let control = base.join(&endpoints.control).expect("a control URL igd-next can join");
    assert_eq!(control.scheme(), "http");
    assert_eq!(control.host_str(), Some("192.168.1.1"), "{}", endpoints.control);
}

/// Seeds for `upnp_description`.
pub fn seeds() -> Vec<(String, Vec<u8>)> {
    let service = |kind: &str, control: &str| {
        format!(
            "<service><serviceType>urn:schemas-upnp-org:service:{kind}</serviceType>\
             <controlURL>{control}</controlURL><SCPDURL>/scpd.xml</SCPDURL></service>"
        )
    };
    let nested = |services: &str| {
        format!(
            "<?xml version=\"1.0\"?><root xmlns=\"urn:schemas-upnp-org:device-1-0\"><device><deviceList>\
             <device><deviceList><device><serviceList>{services}</serviceList></device></deviceList></device>\
             </deviceList></device></root>"
        )
    };
    vec![
        (
            "miniupnpd".into(),
            include_bytes!("miniupnpd-rootDesc.xml").to_vec(),
        ),
        ("igd1-ppp-then-ip".into(), nested(&(service("WANPPPConnection:1", "/ppp") + &service("WANIPConnection:1", "/ip"))).into_bytes()),
        (
            "urlbase-other-port".into(),
            format!(
                "<root><URLBase>http://192.168.1.1:49152/</URLBase><device><serviceList>{}</serviceList></device></root>",
                service("WANIPConnection:1", "upnp/control/WANIPConn1")
            )
            .into_bytes(),
        ),
        (
            "prefixed-cdata-entities".into(),
            "<r:root xmlns:r=\"urn:schemas-upnp-org:device-1-0\"><r:device><r:serviceList><r:service>\
             <r:serviceType> urn:schemas-upnp-org:service:WANIPConnection:2 </r:serviceType>\
             <r:controlURL><![CDATA[/ctl?a=1&b=2]]></r:controlURL><!-- c --></r:service></r:serviceList>\
             </r:device></r:root>"
                .as_bytes()
                .to_vec(),
        ),
        ("control-elsewhere".into(), nested(&service("WANIPConnection:2", "http://10.0.0.1/ctl")).into_bytes()),
        ("control-double-slash".into(), nested(&service("WANIPConnection:2", "/.//10.0.0.1/ctl")).into_bytes()),
        (
            "dtd".into(),
            format!(
                "<?xml version=\"1.0\"?><!DOCTYPE root [<!ENTITY a \"/ctl\">]>{}",
                nested(&service("WANIPConnection:1", "&a;")).trim_start_matches("<?xml version=\"1.0\"?>")
            )
            .into_bytes(),
        ),
    ]
}

/// `ssdp_answer`: the first four bytes are the IPv4 address the datagram came from, the rest
/// an answer to an M-SEARCH (`natt_upnp::ssdp::location`). A URL only comes out of a `200`
/// answer, is `http://` and on the sender's own address.
pub fn ssdp_target(data: &[u8]) {
    let Some((ip, answer)) = data.split_first_chunk::<4>() else {
        return;
    };
    let from = std::net::IpAddr::from(*ip);
    let Some(url) = natt_upnp::ssdp::location(answer, from) else {
        return;
    };
    assert_eq!(url.scheme(), "http");
    assert_eq!(url.host_str(), Some(from.to_string().as_str()), "{url}");
    let text = std::str::from_utf8(answer).expect("a URL came from text");
    assert!(text.starts_with("HTTP/1.1 200") || text.starts_with("HTTP/1.0 200"));
}

/// Seeds for `ssdp_answer`.
pub fn ssdp_seeds() -> Vec<(String, Vec<u8>)> {
    let with = |ip: [u8; 4], answer: &str| {
        let mut v = ip.to_vec();
        v.extend_from_slice(answer.as_bytes());
        v
    };
    let miniupnpd = "HTTP/1.1 200 OK\r\nCACHE-CONTROL: max-age=120\r\nST: urn:schemas-upnp-org:device:InternetGatewayDevice:1\r\n\
                     USN: uuid:d1f6d28b-8c2b-4d8e-9e86-0e24bb0f6a4e::urn:schemas-upnp-org:device:InternetGatewayDevice:1\r\n\
                     EXT:\r\nSERVER: Debian/13 UPnP/1.1 MiniUPnPd/2.3.7\r\nLOCATION: http://192.168.1.1:5000/rootDesc.xml\r\n\
                     OPT: \"http://schemas.upnp.org/upnp/1/0/\"; ns=01\r\n01-NLS: 1\r\nBOOTID.UPNP.ORG: 1\r\nCONFIGID.UPNP.ORG: 1337\r\n\r\n";
    vec![
        ("miniupnpd".into(), with([192, 168, 1, 1], miniupnpd)),
        ("other-host".into(), with([192, 168, 1, 9], miniupnpd)),
        (
            "bare-lf-lowercase".into(),
            with([10, 0, 0, 1], "HTTP/1.0 200 OK\nlocation:http://10.0.0.1/igd.xml\n\n"),
        ),
        (
            "notify".into(),
            with(
                [192, 168, 1, 1],
                "NOTIFY * HTTP/1.1\r\nLOCATION: http://192.168.1.1:5000/x\r\n\r\n",
            ),
        ),
    ]
}
