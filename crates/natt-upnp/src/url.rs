//! [`HttpUrl`]: the only URLs a gateway may use, `http://IPv4[:port]/path`.
//!
//! Gateway URLs come from the network (SSDP `LOCATION`, `URLBase`, `controlURL`), so they are
//! parsed strictly: an IPv4 literal host (no DNS lookups on a gateway's say-so), no user info,
//! and a path of visible ASCII only, since it goes verbatim into the HTTP request line.

use std::fmt;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};

use crate::error::{UpnpError, shorten};

/// Longest URL accepted.
const MAX_URL: usize = 2048;

/// An `http://` URL whose host is an IPv4 address.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct HttpUrl {
    /// The host and port.
    pub addr: SocketAddrV4,
    /// The path and query, starting with `/`.
    pub path: String,
}

fn bad(url: &str, why: impl Into<String>) -> UpnpError {
    UpnpError::BadUrl {
        url: shorten(url, 200),
        why: why.into(),
    }
}

impl HttpUrl {
    /// Parses an absolute `http://IPv4[:port][/path]` URL. A fragment is dropped.
    pub fn parse(url: &str) -> Result<HttpUrl, UpnpError> {
        let s = url.trim();
        if s.len() > MAX_URL {
            return Err(bad(url, format!("longer than {MAX_URL} bytes")));
        }
        let rest = match s.get(..7) {
            Some(scheme) if scheme.eq_ignore_ascii_case("http://") => s.get(7..).unwrap_or(""),
            _ => return Err(bad(url, "not an http:// URL")),
        };
        let rest = rest.split('#').next().unwrap_or("");
        let split = rest.find(['/', '?']).unwrap_or(rest.len());
        let (authority, path) = rest.split_at(split);
        if authority.contains('@') {
            return Err(bad(url, "user info is not allowed"));
        }
        if authority.starts_with('[') {
            return Err(bad(url, "IPv6 gateways are not supported"));
        }
        let (host, port) = match authority.rsplit_once(':') {
            Some((h, p)) => {
                let port: u16 = p
                    .parse()
                    .map_err(|_| bad(url, format!("bad port '{}'", shorten(p, 20))))?;
                (h, port)
            }
            None => (authority, 80),
        };
        if port == 0 {
            return Err(bad(url, "port 0"));
        }
        let ip: Ipv4Addr = host.parse().map_err(|_| bad(url, "the host must be an IPv4 address"))?;
        if ip.is_unspecified() || ip.is_multicast() || ip.is_broadcast() {
            return Err(bad(url, format!("{ip} cannot be a gateway")));
        }
        let path = match path {
            "" => "/".to_owned(),
            p if p.starts_with('?') => format!("/{p}"),
            p => p.to_owned(),
        };
        check_path(url, &path)?;
        Ok(HttpUrl {
            addr: SocketAddrV4::new(ip, port),
            path,
        })
    }

    /// Resolves `reference` (absolute, `/absolute-path` or relative) against this URL, as a
    /// gateway's `URLBase`, `controlURL` and `SCPDURL` are.
    pub fn join(&self, reference: &str) -> Result<HttpUrl, UpnpError> {
        let r = reference.trim();
        if r.is_empty() {
            return Err(bad(reference, "empty URL"));
        }
        if r.len() > MAX_URL {
            return Err(bad(reference, format!("longer than {MAX_URL} bytes")));
        }
        if let Some(scheme_end) = r.find("://") {
            let is_scheme = r
                .get(..scheme_end)
                .is_some_and(|s| !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c)));
            if is_scheme {
                return HttpUrl::parse(r);
            }
        }
        if let Some(rest) = r.strip_prefix("//") {
            return HttpUrl::parse(&format!("http://{rest}"));
        }
        let r = r.split('#').next().unwrap_or("");
        let path = if r.starts_with('/') {
            r.to_owned()
        } else if r.starts_with('?') {
            let base = self.path.split('?').next().unwrap_or("/");
            format!("{base}{r}")
        } else {
            let base = self.path.split('?').next().unwrap_or("/");
            let dir = base.rfind('/').and_then(|i| base.get(..=i)).unwrap_or("/");
            format!("{dir}{r}")
        };
        check_path(reference, &path)?;
        Ok(HttpUrl { addr: self.addr, path })
    }

    /// The host's address.
    pub fn ip(&self) -> Ipv4Addr {
        *self.addr.ip()
    }

    /// The host and port as a socket address.
    pub fn socket_addr(&self) -> SocketAddr {
        SocketAddr::V4(self.addr)
    }
}

/// The path goes verbatim into `GET PATH HTTP/1.1`: visible ASCII only, so no space, CR or LF
/// can split the request.
fn check_path(url: &str, path: &str) -> Result<(), UpnpError> {
    if path.bytes().all(|b| b.is_ascii_graphic()) {
        Ok(())
    } else {
        Err(bad(url, "the path has spaces, control or non-ASCII characters"))
    }
}

impl fmt::Display for HttpUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "http://{}{}", self.addr, self.path)
    }
}

impl std::str::FromStr for HttpUrl {
    type Err = UpnpError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        HttpUrl::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(s: &str) -> HttpUrl {
        HttpUrl::parse(s).unwrap()
    }

    #[test]
    fn parses_gateway_urls() {
        let u = url("http://192.168.1.1:5000/rootDesc.xml");
        assert_eq!(u.addr, "192.168.1.1:5000".parse().unwrap());
        assert_eq!(u.path, "/rootDesc.xml");
        assert_eq!(u.to_string(), "http://192.168.1.1:5000/rootDesc.xml");
        assert_eq!(url("HTTP://10.0.0.1").to_string(), "http://10.0.0.1:80/");
        assert_eq!(url(" http://10.0.0.1:49000?x=1#frag ").path, "/?x=1");
    }

    #[test]
    fn rejects_what_a_gateway_must_not_use() {
        for s in [
            "https://192.168.1.1/x",
            "ftp://192.168.1.1/x",
            "http://router.local:5000/x",
            "http://user@192.168.1.1/x",
            "http://[fe80::1]:5000/x",
            "http://192.168.1.1:0/x",
            "http://192.168.1.1:99999/x",
            "http://0.0.0.0:5000/x",
            "http://239.255.255.250:1900/x",
            "http://192.168.1.1:5000/a b",
            "http://192.168.1.1:5000/a\r\nX-Injected: 1",
            "http://192.168.1.1:5000/\u{e9}",
            "",
            "192.168.1.1:5000/x",
        ] {
            assert!(HttpUrl::parse(s).is_err(), "accepted {s:?}");
        }
        let long = format!("http://192.168.1.1/{}", "a".repeat(5000));
        assert!(HttpUrl::parse(&long).is_err());
    }

    #[test]
    fn joins_like_a_browser_for_the_cases_gateways_use() {
        let base = url("http://192.168.1.1:5000/desc/root.xml");
        assert_eq!(
            base.join("/ctl/IPConn").unwrap().to_string(),
            "http://192.168.1.1:5000/ctl/IPConn"
        );
        assert_eq!(base.join("ctl/IPConn").unwrap().path, "/desc/ctl/IPConn");
        assert_eq!(base.join("?a=b").unwrap().path, "/desc/root.xml?a=b");
        assert_eq!(
            base.join("http://192.168.1.1:49000/upnp/control").unwrap().to_string(),
            "http://192.168.1.1:49000/upnp/control"
        );
        assert_eq!(
            base.join("//10.0.0.1:80/x").unwrap().to_string(),
            "http://10.0.0.1:80/x"
        );
        assert!(base.join("").is_err());
        assert!(base.join("https://192.168.1.1/x").is_err());
        assert!(base.join("/x y").is_err());
    }
}
