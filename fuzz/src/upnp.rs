//! UPnP IGD (`upnp_parse`): what a gateway, or anyone on the LAN, says that natt-upnp parses
//! itself: XML (device descriptions, SOAP answers) and URLs (SSDP `LOCATION`, `URLBase`,
//! `controlURL`).
//!
//! natt-upnp keeps its parsers private (`mod xml; mod url;`), so this target compiles those
//! two source files into the fuzz crate by path (with `error.rs`, which `url.rs` needs, at the
//! crate root), without changing natt-upnp. Not reachable this way, because private even in
//! their own files: the HTTP head parser and chunked decoder (`http::parse_head`,
//! `http::Chunked::feed`, `http::find_head_end`) and SSDP's `ssdp::location`. Once the crate
//! exposes its parsers (for instance a `#[doc(hidden)] pub mod fuzzing`), this target should
//! call them through it and also feed those: a response head must give a bounded status and
//! framing, a chunked body never more than its limit, a datagram at most one location.

#[path = "../../crates/natt-upnp/src/url.rs"]
#[rustfmt::skip] // natt-upnp's file: formatted with natt-upnp
#[allow(dead_code)]
mod url;
#[path = "../../crates/natt-upnp/src/xml.rs"]
#[rustfmt::skip] // natt-upnp's file: formatted with natt-upnp
#[allow(dead_code)]
mod upnp_xml;

use upnp_xml::Element;
use url::HttpUrl;

/// The limits natt-upnp's XML parser promises (`xml.rs`: `MAX_DEPTH`, `MAX_ELEMENTS`).
const MAX_DEPTH: usize = 32;
const MAX_ELEMENTS: usize = 8192;

/// `upnp_parse`: a first byte below 0x80 makes the rest XML; else the rest is text: a base URL,
/// a newline, and a reference resolved against it.
pub fn target(data: &[u8]) {
    match data.split_first() {
        Some((&b, rest)) if b < 0x80 => parse_xml(rest),
        Some((_, rest)) => parse_urls(&String::from_utf8_lossy(rest)),
        None => {}
    }
}

fn parse_xml(bytes: &[u8]) {
    if let Ok(root) = upnp_xml::parse(bytes) {
        let (depth, count) = measure(&root);
        assert!(depth <= MAX_DEPTH, "depth {depth}");
        assert!(count <= MAX_ELEMENTS, "{count} elements");
        let _ = root.path(&["device", "deviceList", "device", "serviceList"]);
    }
}

/// The depth and number of elements of a tree (iteratively: the tree may be deep).
fn measure(root: &Element) -> (usize, usize) {
    let mut stack = vec![(root, 1)];
    let (mut depth, mut count) = (0, 0);
    while let Some((e, d)) = stack.pop() {
        depth = depth.max(d);
        count += 1;
        stack.extend(e.children.iter().map(|c| (c, d + 1)));
    }
    (depth, count)
}

fn parse_urls(text: &str) {
    let (base, reference) = text.split_once('\n').unwrap_or((text, ""));
    let Ok(url) = HttpUrl::parse(base) else {
        return;
    };
    check_url(&url);
    // What it prints, it reads back as itself.
    assert_eq!(HttpUrl::parse(&url.to_string()).as_ref().ok(), Some(&url), "{url}");
    if let Ok(joined) = url.join(reference) {
        check_url(&joined);
        // A relative reference stays on the base URL's host and port.
        let r = reference.trim();
        if !r.contains("://") && !r.starts_with("//") {
            assert_eq!(joined.addr, url.addr, "{url} + {r:?} = {joined}");
        }
    }
}

fn check_url(url: &HttpUrl) {
    let ip = url.ip();
    assert!(
        !ip.is_unspecified() && !ip.is_multicast() && !ip.is_broadcast(),
        "{url}"
    );
    assert!(url.addr.port() != 0, "{url}");
    assert!(url.path.starts_with('/'), "{url}");
    // The path goes verbatim into the HTTP request line.
    assert!(url.path.bytes().all(|b| b.is_ascii_graphic()), "{url:?}");
}

/// Seeds for `upnp_parse`.
pub fn seeds() -> Vec<(String, Vec<u8>)> {
    let description = br#"<?xml version="1.0"?>
<root xmlns="urn:schemas-upnp-org:device-1-0"><URLBase>http://192.168.1.1:5000/</URLBase>
<device><deviceType>urn:schemas-upnp-org:device:InternetGatewayDevice:1</deviceType>
<deviceList><device><deviceType>urn:schemas-upnp-org:device:WANDevice:1</deviceType>
<deviceList><device><serviceList><service>
<serviceType>urn:schemas-upnp-org:service:WANIPConnection:1</serviceType>
<controlURL>/ctl/IPConn</controlURL></service></serviceList></device></deviceList>
</device></deviceList></device></root>"#;
    let soap = br#"<?xml version="1.0"?><s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/"><s:Body><u:GetExternalIPAddressResponse xmlns:u="urn:schemas-upnp-org:service:WANIPConnection:1"><NewExternalIPAddress>203.0.113.7</NewExternalIPAddress></u:GetExternalIPAddressResponse></s:Body></s:Envelope>"#;
    let fault = br#"<s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/"><s:Body><s:Fault><detail><UPnPError><errorCode>718</errorCode><errorDescription>ConflictInMappingEntry</errorDescription></UPnPError></detail></s:Fault></s:Body></s:Envelope>"#;
    let entities = br#"<!DOCTYPE r [<!ENTITY a "aaaaaaaa"><!ENTITY b "&a;&a;&a;&a;">]><r>&b;&amp;<![CDATA[x]]></r>"#;
    let with = |b: u8, bytes: &[u8]| [&[b][..], bytes].concat();
    vec![
        ("xml-description".into(), with(0, description)),
        ("xml-soap".into(), with(0, soap)),
        ("xml-fault".into(), with(0, fault)),
        ("xml-entities".into(), with(0, entities)),
        (
            "url-relative".into(),
            with(0x80, b"http://192.168.1.1:5000/rootDesc.xml\nctl/IPConn"),
        ),
        (
            "url-absolute-path".into(),
            with(0x80, b"HTTP://192.168.1.1/a/b?x=1#f\n/ctl?y"),
        ),
        (
            "url-other-host".into(),
            with(0x80, b"http://192.168.1.1:1900/\n//10.0.0.1:80/x"),
        ),
        ("url-query".into(), with(0x80, b"http://192.168.1.1:80?q\n?r")),
    ]
}
