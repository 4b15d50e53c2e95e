//! What natt reads from UPnP gateways: root device descriptions (`upnp_description`, what a
//! gateway serves at its description URL, `natt_upnp::description`), answers to the SSDP
//! search (`ssdp_answer`, `natt_upnp::ssdp`), SOAP answers (`upnp_soap`, `natt_upnp::soap`) and
//! the HTTP answers to IPv6 pinhole requests (`upnp_http`, `natt_upnp::pinhole`).

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
    // Joined onto the gateway's address as natt joins it for every request, the control URL
    // stays on the gateway.
    let base: url::Url = "http://192.168.1.1:5000/".parse().expect("a fixed URL");
    let control = base.join(&endpoints.control).expect("a control URL natt can join");
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

/// The SOAP actions natt sends, one chosen by the first byte of a `upnp_soap` input.
const SOAP_ACTIONS: [&str; 4] = [
    "GetExternalIPAddress",
    "AddPortMapping",
    "AddAnyPortMapping",
    "DeletePortMapping",
];

/// `upnp_soap`: the first byte chooses the action asked (of the four natt sends), the rest is
/// the gateway's answer (`natt_upnp::soap::parse_response`). Only a UTF-8 answer without a
/// DTD, within the size limit, gives arguments, each within the text limit; a fault's
/// description is shortened; and the arguments read, sent back in a request natt encodes,
/// read back with the same names (so the encoder escapes whatever an answer can carry).
pub fn soap_target(data: &[u8]) {
    use natt_upnp::soap::{self, MAX_SOAP_BYTES, SoapError};
    let Some((&choice, body)) = data.split_first() else {
        return;
    };
    let action = SOAP_ACTIONS[usize::from(choice) % SOAP_ACTIONS.len()];
    match soap::parse_response(action, body) {
        Ok(response) => {
            assert!(body.len() <= MAX_SOAP_BYTES);
            let text = std::str::from_utf8(body).expect("only UTF-8 parses");
            assert!(
                !text.contains("<!DOCTYPE") && !text.contains("<!ENTITY"),
                "a DTD parsed"
            );
            for (name, value) in &response.args {
                assert!(!name.is_empty() && !name.contains(':'), "{name}");
                assert!(
                    !value.is_empty() && value.len() <= 2048,
                    "{name}: {} bytes",
                    value.len()
                );
            }
            // Our own request carrying those values, read back as if it were an answer.
            let answer = format!("{action}Response");
            let args: Vec<(&str, &str)> = response.args.iter().map(|(n, v)| (n.as_str(), v.as_str())).collect();
            let request = soap::encode_request("urn:schemas-upnp-org:service:WANIPConnection:2", &answer, &args);
            if request.len() > MAX_SOAP_BYTES {
                // Escaping made it longer than an answer may be (`"` is 6 bytes escaped).
                return;
            }
            let back = soap::parse_response(action, &request).expect("our own request reads back");
            let names = |r: &soap::Response| r.args.iter().map(|(n, _)| n.clone()).collect::<Vec<_>>();
            assert_eq!(names(&back), names(&response));
        }
        Err(SoapError::Fault { description, .. }) => {
            assert!(description.chars().count() <= 121, "{description}");
        }
        Err(SoapError::TooLarge { limit }) => {
            assert_eq!(limit, MAX_SOAP_BYTES);
            assert!(body.len() > MAX_SOAP_BYTES);
        }
        Err(_) => {}
    }
}

/// Seeds for `upnp_soap`: miniupnpd's answers and faults (as the lab's router sends them),
/// other gateways' spellings, and hostile answers.
pub fn soap_seeds() -> Vec<(String, Vec<u8>)> {
    let envelope = |inner: &str| {
        format!(
            "<?xml version=\"1.0\"?>\r\n<s:Envelope xmlns:s=\"http://schemas.xmlsoap.org/soap/envelope/\" \
             s:encodingStyle=\"http://schemas.xmlsoap.org/soap/encoding/\"><s:Body>{inner}</s:Body></s:Envelope>\r\n"
        )
    };
    let ok = |action: &str, args: &str| {
        envelope(&format!(
            "<u:{action}Response xmlns:u=\"urn:schemas-upnp-org:service:WANIPConnection:2\">{args}</u:{action}Response>"
        ))
    };
    let fault = |code: u16, description: &str| {
        envelope(&format!(
            "<s:Fault><faultcode>s:Client</faultcode><faultstring>UPnPError</faultstring><detail><UPnPError \
             xmlns=\"urn:schemas-upnp-org:control-1-0\"><errorCode>{code}</errorCode><errorDescription>{description}\
             </errorDescription></UPnPError></detail></s:Fault>"
        ))
    };
    // The first byte chooses the action: 0 GetExternalIPAddress, 1 AddPortMapping,
    // 2 AddAnyPortMapping, 3 DeletePortMapping.
    let with = |action: u8, body: String| {
        let mut v = vec![action];
        v.extend_from_slice(body.as_bytes());
        v
    };
    let mut dtd = String::from("<!ENTITY % e0 \"aaaaaaaaaa\">");
    for i in 1..10 {
        dtd += &format!("<!ENTITY % e{i} \"{}\">", format!("%e{};", i - 1).repeat(10));
    }
    vec![
        (
            "miniupnpd-external-ip".into(),
            with(
                0,
                ok(
                    "GetExternalIPAddress",
                    "<NewExternalIPAddress>203.0.113.101</NewExternalIPAddress>",
                ),
            ),
        ),
        ("miniupnpd-add".into(), with(1, ok("AddPortMapping", ""))),
        (
            "miniupnpd-add-any".into(),
            with(2, ok("AddAnyPortMapping", "<NewReservedPort>40001</NewReservedPort>")),
        ),
        ("miniupnpd-delete".into(), with(3, ok("DeletePortMapping", ""))),
        ("fault-718".into(), with(1, fault(718, "ConflictInMappingEntry"))),
        ("fault-725".into(), with(1, fault(725, "OnlyPermanentLeasesSupported"))),
        ("fault-606".into(), with(2, fault(606, "Action not authorized"))),
        ("fault-401".into(), with(2, fault(401, "Invalid Action"))),
        ("fault-714".into(), with(3, fault(714, "NoSuchEntryInArray"))),
        ("fault-501".into(), with(0, fault(501, "ActionFailed"))),
        (
            "other-prefixes".into(),
            with(
                0,
                "<SOAP-ENV:Envelope xmlns:SOAP-ENV=\"http://schemas.xmlsoap.org/soap/envelope/\"><SOAP-ENV:Body>\
                 <m:GetExternalIPAddressResponse xmlns:m=\"urn:schemas-upnp-org:service:WANPPPConnection:1\">\
                 <NewExternalIPAddress> 198.51.100.7 </NewExternalIPAddress></m:GetExternalIPAddressResponse>\
                 </SOAP-ENV:Body></SOAP-ENV:Envelope>"
                    .into(),
            ),
        ),
        (
            "entities-cdata".into(),
            with(
                2,
                ok(
                    "AddAnyPortMapping",
                    "<NewReservedPort><![CDATA[4]]>&#48;&amp;</NewReservedPort><!-- c -->",
                ),
            ),
        ),
        (
            "bomb".into(),
            with(
                0,
                format!(
                    "<!DOCTYPE Envelope [{dtd}<!ENTITY x \"%e9;\">]><Envelope><Body><GetExternalIPAddressResponse>\
                     <NewExternalIPAddress>&x;</NewExternalIPAddress></GetExternalIPAddressResponse></Body></Envelope>"
                ),
            ),
        ),
        (
            "html-404".into(),
            with(1, "<html><body><h1>404 Not Found</h1></body></html>".into()),
        ),
    ]
}

/// `upnp_http`: any bytes as the HTTP answer to a pinhole request
/// (`natt_upnp::pinhole::parse_http_response`). A status (100 to 599) only from an `HTTP/1.x`
/// line with three digits, headers ending within the limit; the body lies in the input after the
/// headers, and is no longer than a `Content-Length` given.
pub fn http_target(data: &[u8]) {
    use natt_upnp::pinhole::{MAX_HEADER_BYTES, parse_http_response};
    let Ok((status, body)) = parse_http_response(data) else {
        return;
    };
    assert!((100..=599).contains(&status), "{status}");
    assert!(data.starts_with(b"HTTP/1."));
    let end = data
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("headers end");
    assert!(end < MAX_HEADER_BYTES + 4);
    let after = &data[end + 4..];
    assert!(after.starts_with(body), "the body is what follows the headers");
}

/// Seeds for `upnp_http`: miniupnpd's answers to the pinhole actions, and broken ones.
pub fn http_seeds() -> Vec<(String, Vec<u8>)> {
    let answer = |status: &str, body: &str| {
        format!(
            "HTTP/1.1 {status}\r\nContent-Type: text/xml; charset=\"utf-8\"\r\nConnection: close\r\n\
             Content-Length: {}\r\nServer: Debian/12 UPnP/1.1 MiniUPnPd/2.3.1\r\nExt:\r\n\r\n{body}",
            body.len()
        )
        .into_bytes()
    };
    let add = "<?xml version=\"1.0\"?>\r\n<s:Envelope xmlns:s=\"http://schemas.xmlsoap.org/soap/envelope/\">\
               <s:Body><u:AddPinholeResponse xmlns:u=\"urn:schemas-upnp-org:service:WANIPv6FirewallControl:1\">\
               <UniqueID>1</UniqueID></u:AddPinholeResponse></s:Body></s:Envelope>\r\n";
    let fault = "<?xml version=\"1.0\"?>\r\n<s:Envelope xmlns:s=\"http://schemas.xmlsoap.org/soap/envelope/\">\
                 <s:Body><s:Fault><faultcode>s:Client</faultcode><faultstring>UPnPError</faultstring><detail>\
                 <UPnPError xmlns=\"urn:schemas-upnp-org:control-1-0\"><errorCode>606</errorCode>\
                 <errorDescription>Action not authorized</errorDescription></UPnPError></detail></s:Fault>\
                 </s:Body></s:Envelope>\r\n";
    vec![
        ("add-pinhole".into(), answer("200 OK", add)),
        ("fault-606".into(), answer("500 Internal Server Error", fault)),
        ("no-length".into(), b"HTTP/1.0 200 OK\r\n\r\n<a/>".to_vec()),
        ("short-body".into(), b"HTTP/1.1 200 OK\r\nContent-Length: 99\r\n\r\nab".to_vec()),
        ("chunked".into(), b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n".to_vec()),
        ("no-end".into(), b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n".to_vec()),
    ]
}
