//! SSDP (the discovery part of UPnP) without sockets: the M-SEARCH natt sends, and the
//! description URL in an answer. The search itself (sockets, which answers are taken) is
//! natt-upnp's `search` module.
//!
//! Answers are untrusted datagrams from anyone on the LAN: any bytes give a URL or `None`,
//! never a panic.

use std::net::{IpAddr, SocketAddr};

use crate::description::http_ipv4;

/// An M-SEARCH for `target` sent to `to`. MX 1: a device waits up to a second before
/// answering a multicast search.
///
/// ```
/// let m = natt_upnp::ssdp::request(
///     "239.255.255.250:1900".parse()?,
///     "urn:schemas-upnp-org:device:InternetGatewayDevice:1",
/// );
/// assert!(m.starts_with("M-SEARCH * HTTP/1.1\r\nHOST: 239.255.255.250:1900\r\n"));
/// # Ok::<(), std::net::AddrParseError>(())
/// ```
pub fn request(to: SocketAddr, target: &str) -> String {
    format!("M-SEARCH * HTTP/1.1\r\nHOST: {to}\r\nMAN: \"ssdp:discover\"\r\nMX: 1\r\nST: {target}\r\n\r\n")
}

/// The description URL in an answer to an M-SEARCH that came from `from`: a `200` answer's
/// `LOCATION` header, an `http://` URL on `from`'s own address. Anything else is `None`.
///
/// ```
/// use std::net::{IpAddr, Ipv4Addr};
/// let answer = b"HTTP/1.1 200 OK\r\nST: upnp:rootdevice\r\nLOCATION: http://192.168.1.1:5000/rootDesc.xml\r\n\r\n";
/// let router = IpAddr::V4(Ipv4Addr::new(192, 168, 1, 1));
/// let url = natt_upnp::ssdp::location(answer, router).unwrap();
/// assert_eq!(url.as_str(), "http://192.168.1.1:5000/rootDesc.xml");
/// // The same answer from another host names a URL that is not its own: refused.
/// assert!(natt_upnp::ssdp::location(answer, IpAddr::V4(Ipv4Addr::new(192, 168, 1, 9))).is_none());
/// ```
pub fn location(answer: &[u8], from: IpAddr) -> Option<url::Url> {
    let text = std::str::from_utf8(answer).ok()?;
    let mut lines = text.lines();
    let status = lines.next()?;
    if !(status.starts_with("HTTP/1.1 200") || status.starts_with("HTTP/1.0 200")) {
        return None;
    }
    let value = lines.find_map(|line| {
        let (name, value) = line.split_once(':')?;
        name.trim().eq_ignore_ascii_case("location").then(|| value.trim())
    })?;
    let url: url::Url = value.parse().ok()?;
    let (host, _) = http_ipv4(&url).ok()?;
    (IpAddr::V4(host) == from).then_some(url)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use std::net::Ipv4Addr;

    #[test]
    fn answers_give_a_location_on_their_sender_only() {
        let router = IpAddr::V4(Ipv4Addr::new(192, 168, 1, 1));
        let answer = |status: &str, location: &str| {
            format!("{status}\r\nCACHE-CONTROL: max-age=120\r\nST: upnp:rootdevice\r\nlocation:  {location} \r\n\r\n")
        };
        let ok = answer("HTTP/1.1 200 OK", "http://192.168.1.1:5000/rootDesc.xml");
        assert_eq!(
            location(ok.as_bytes(), router).map(String::from),
            Some("http://192.168.1.1:5000/rootDesc.xml".to_owned())
        );
        for (bytes, why) in [
            (
                answer("HTTP/1.1 200 OK", "http://10.0.0.9:5000/rootDesc.xml"),
                "another host",
            ),
            (answer("HTTP/1.1 404 Not Found", "http://192.168.1.1:5000/x"), "not 200"),
            (
                answer("NOTIFY * HTTP/1.1", "http://192.168.1.1:5000/x"),
                "not an answer",
            ),
            (answer("HTTP/1.1 200 OK", "https://192.168.1.1/x"), "not http"),
            (answer("HTTP/1.1 200 OK", "http://192.168.1.1:0/x"), "port 0"),
            ("HTTP/1.1 200 OK\r\nST: x\r\n\r\n".to_owned(), "no LOCATION"),
        ] {
            assert_eq!(location(bytes.as_bytes(), router), None, "{why}");
        }
        assert_eq!(location(&[0xFF, 0xFE, 0, 1], router), None);
        let bare = "HTTP/1.1 200 OK\nLOCATION: http://192.168.1.1:5000/rootDesc.xml\n\n";
        assert!(location(bare.as_bytes(), router).is_some(), "bare line feeds");
    }
}
