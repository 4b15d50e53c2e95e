//! Servers by name: [`ServerName`] (`HOST[:PORT]`, with each protocol's default port) and
//! resolving it with a deadline.
//!
//! The system resolver (`getaddrinfo`, behind [`std::net::ToSocketAddrs`]) takes no timeout,
//! so a [`Lookup`] runs it on a worker thread ([`Pending`]) that the caller polls or waits for
//! until its deadline, and then stops waiting for: a resolver that never answers costs a
//! thread until the system gives up, never the caller's time.

use std::fmt;
use std::io;
use std::net::{IpAddr, Ipv6Addr, SocketAddr, ToSocketAddrs};
use std::str::FromStr;
use std::time::{Duration, Instant};

use crate::deadline::{Pending, Unfinished};

/// The default port of STUN (RFC 8489) over UDP and TCP.
pub const STUN_PORT: u16 = 3478;
/// The default port of TURN (RFC 8656), the same as STUN's.
pub const TURN_PORT: u16 = 3478;
/// The default port of natt's simple hole-punch protocol (`natt serve`).
pub const SIMPLE_PORT: u16 = 5483;

/// A server given by host name (or IP) and port, resolved when it is used.
///
/// Parsed from `HOST[:PORT]`: a DNS name, an IPv4 address, or an IPv6 address (in brackets
/// when a port follows: `[2001:db8::1]:3478`); without a port, the protocol's default.
///
#[cfg_attr(not(doctest), doc = include_str!("../doc/server_name.md"))]
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ServerName {
    host: String,
    port: u16,
}

/// Why a `HOST[:PORT]` is not a server name.
#[derive(Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ServerNameError {
    /// Nothing was given.
    #[error("empty server address (expected HOST[:PORT])")]
    Empty,
    /// The port is not a number from 1 to 65535.
    #[error("{input:?}: bad port {port:?} (expected a number from 1 to 65535)")]
    BadPort {
        /// What was given.
        input: String,
        /// The port part.
        port: String,
    },
    /// The host is neither an IP address nor a DNS name.
    #[error("{input:?}: bad host ({reason}; expected a DNS name, an IPv4 address or [IPv6])")]
    BadHost {
        /// What was given.
        input: String,
        /// What is wrong with it.
        reason: String,
    },
    /// No port was given where one is needed ([`ServerName`]'s `FromStr`).
    #[error("{input:?}: no port (expected HOST:PORT)")]
    MissingPort {
        /// What was given.
        input: String,
    },
}

crate::debug_as_display!(ServerNameError);

/// Why a server name gave no address to use.
#[derive(thiserror::Error)]
#[non_exhaustive]
pub enum ResolveError {
    /// The resolver failed (unknown name, no network, no resolver).
    #[error("cannot resolve {name}: {source}")]
    Lookup {
        /// The server, `HOST:PORT`.
        name: String,
        /// What the resolver said.
        source: io::Error,
    },
    /// The resolver did not answer before the deadline.
    #[error("cannot resolve {name}: no answer from the resolver within {} ms", waited.as_millis())]
    TimedOut {
        /// The server, `HOST:PORT`.
        name: String,
        /// How long the lookup was waited for.
        waited: Duration,
    },
    /// The name resolved, but to no address of the socket's family.
    #[error("{name} has no {family} address (it resolved to {found})")]
    NoAddressOfFamily {
        /// The server, `HOST:PORT`.
        name: String,
        /// `IPv4` or `IPv6`.
        family: &'static str,
        /// The addresses it resolved to.
        found: String,
    },
    /// Several names failed, each for its reason.
    #[error("{}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
    Several(Vec<ResolveError>),
}

crate::debug_as_display!(ResolveError);

impl ServerName {
    /// A server name from a host and a port, unchecked (see [`ServerName::parse`]).
    pub fn new(host: impl Into<String>, port: u16) -> Self {
        ServerName {
            host: host.into(),
            port,
        }
    }

    /// Parses `HOST[:PORT]`, with `default_port` when no port is given.
    pub fn parse(input: &str, default_port: u16) -> Result<Self, ServerNameError> {
        let (host, port) = split(input)?;
        let port = match port {
            None => default_port,
            Some(p) => parse_port(input, p)?,
        };
        Ok(ServerName::new(host, port))
    }

    /// The host: a DNS name or an IP address (IPv6 without brackets).
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The address, when the host is an IP address (no lookup needed).
    pub fn socket_addr(&self) -> Option<SocketAddr> {
        self.host
            .parse::<IpAddr>()
            .ok()
            .map(|ip| SocketAddr::new(ip, self.port))
    }

    /// Starts resolving the name on a worker thread named `natt-resolve`.
    pub fn lookup(&self) -> Lookup {
        let name = self.clone();
        let started = Instant::now();
        let target = (self.host.clone(), self.port);
        let pending = Pending::spawn(
            "natt-resolve",
            move || target.to_socket_addrs().map(|addrs| dedup(addrs.collect::<Vec<_>>())),
            |_| {},
        );
        Lookup { name, started, pending }
    }

    /// Resolves the name, waiting no later than `deadline`: every address it has, in the
    /// resolver's order.
    pub fn resolve_until(&self, deadline: Instant) -> Result<Vec<SocketAddr>, ResolveError> {
        self.lookup().wait_until(deadline)
    }
}

impl fmt::Display for ServerName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

impl FromStr for ServerName {
    type Err = ServerNameError;

    /// Parses `HOST:PORT` (the port is required: see [`ServerName::parse`] for a default).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match split(s)? {
            (host, Some(port)) => Ok(ServerName::new(host, parse_port(s, port)?)),
            (_, None) => Err(ServerNameError::MissingPort { input: s.to_owned() }),
        }
    }
}

/// A name being resolved: started by [`ServerName::lookup`].
#[derive(Debug)]
pub struct Lookup {
    name: ServerName,
    started: Instant,
    pending: io::Result<Pending<io::Result<Vec<SocketAddr>>>>,
}

impl Lookup {
    /// The name being resolved.
    pub fn name(&self) -> &ServerName {
        &self.name
    }

    /// The addresses, once the lookup has ended (`None` while it runs). Call it until it
    /// returns `Some`, not after.
    pub fn poll(&self) -> Option<Result<Vec<SocketAddr>, ResolveError>> {
        match &self.pending {
            Ok(p) => p.poll().map(|r| settle(&self.name, self.started, r)),
            Err(e) => Some(Err(not_started(&self.name, e))),
        }
    }

    /// Waits for the addresses until `deadline`.
    pub fn wait_until(self, deadline: Instant) -> Result<Vec<SocketAddr>, ResolveError> {
        let Lookup { name, started, pending } = self;
        match pending {
            Ok(p) => settle(&name, started, p.wait_until(deadline)),
            Err(e) => Err(not_started(&name, &e)),
        }
    }

    /// The lookup did not end in time: why.
    pub fn timed_out(&self) -> ResolveError {
        timed_out(&self.name, self.started)
    }
}

fn timed_out(name: &ServerName, started: Instant) -> ResolveError {
    ResolveError::TimedOut {
        name: name.to_string(),
        waited: started.elapsed(),
    }
}

fn not_started(name: &ServerName, e: &io::Error) -> ResolveError {
    ResolveError::Lookup {
        name: name.to_string(),
        source: io::Error::new(e.kind(), format!("cannot start a resolver thread: {e}")),
    }
}

/// A lookup's outcome as addresses or the reason there are none.
fn settle(
    server: &ServerName,
    started: Instant,
    r: Result<io::Result<Vec<SocketAddr>>, Unfinished>,
) -> Result<Vec<SocketAddr>, ResolveError> {
    let name = server.to_string();
    let addrs = match r {
        Ok(Ok(addrs)) => addrs,
        Ok(Err(source)) => return Err(ResolveError::Lookup { name, source }),
        Err(Unfinished::TimedOut) => return Err(timed_out(server, started)),
        Err(Unfinished::Ended) => {
            return Err(ResolveError::Lookup {
                name,
                source: io::Error::other("the resolver thread ended without an answer"),
            });
        }
    };
    log::debug!("resolved {name} to {addrs:?} in {:?}", started.elapsed());
    if addrs.is_empty() {
        return Err(ResolveError::Lookup {
            name,
            source: io::Error::new(io::ErrorKind::NotFound, "no address"),
        });
    }
    Ok(addrs)
}

/// The addresses of `addrs` a socket bound at `local` can reach (same family, as
/// [`ServerList::for_local`](crate::server_list::ServerList::for_local) decides); none is
/// [`ResolveError::NoAddressOfFamily`].
pub fn of_family(
    name: &ServerName,
    addrs: Vec<SocketAddr>,
    local: SocketAddr,
) -> Result<Vec<SocketAddr>, ResolveError> {
    let (same, other): (Vec<_>, Vec<_>) = addrs.into_iter().partition(|a| crate::family::reaches(local, *a));
    if same.is_empty() {
        return Err(ResolveError::NoAddressOfFamily {
            name: name.to_string(),
            family: if local.is_ipv4() { "IPv4" } else { "IPv6" },
            found: other.iter().map(ToString::to_string).collect::<Vec<_>>().join(" "),
        });
    }
    Ok(same)
}

fn dedup(addrs: Vec<SocketAddr>) -> Vec<SocketAddr> {
    let mut out: Vec<SocketAddr> = Vec::with_capacity(addrs.len());
    for a in addrs {
        if !out.contains(&a) {
            out.push(a);
        }
    }
    out
}

/// Splits `HOST[:PORT]` into a checked host (IPv6 without brackets) and the port text.
fn split(input: &str) -> Result<(&str, Option<&str>), ServerNameError> {
    let bad_host = |reason: &str| ServerNameError::BadHost {
        input: input.to_owned(),
        reason: reason.to_owned(),
    };
    if input.is_empty() {
        return Err(ServerNameError::Empty);
    }
    if input.contains('/') {
        return Err(bad_host("a URL or path, not a host"));
    }
    if let Some(rest) = input.strip_prefix('[') {
        let (host, after) = rest.split_once(']').ok_or_else(|| bad_host("no closing bracket"))?;
        if host.parse::<Ipv6Addr>().is_err() {
            return Err(bad_host("not an IPv6 address in brackets"));
        }
        return match after {
            "" => Ok((host, None)),
            _ => match after.strip_prefix(':') {
                Some(port) => Ok((host, Some(port))),
                None => Err(bad_host("text after the closing bracket")),
            },
        };
    }
    // A bare IPv6 address: all colons are its own, so no port.
    if input.parse::<Ipv6Addr>().is_ok() {
        return Ok((input, None));
    }
    let (host, port) = match input.split_once(':') {
        Some((host, port)) => (host, Some(port)),
        None => (input, None),
    };
    if port.is_some_and(|p| p.contains(':')) {
        return Err(bad_host("an IPv6 address with a port needs brackets: [ADDR]:PORT"));
    }
    check_host(host).map_err(bad_host)?;
    Ok((host, port))
}

/// A DNS name (RFC 1123 labels; underscores allowed, as some names have them) or an IPv4
/// address.
fn check_host(host: &str) -> Result<(), &'static str> {
    if host.is_empty() {
        return Err("no host");
    }
    if host.parse::<IpAddr>().is_ok() {
        return Ok(());
    }
    let name = host.strip_suffix('.').unwrap_or(host);
    if name.len() > 253 {
        return Err("longer than 253 characters");
    }
    for label in name.split('.') {
        if label.is_empty() {
            return Err("an empty label");
        }
        if label.len() > 63 {
            return Err("a label longer than 63 characters");
        }
        if !label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') {
            return Err("characters other than letters, digits, '-', '_' and '.'");
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err("a label starting or ending with '-'");
        }
    }
    Ok(())
}

fn parse_port(input: &str, port: &str) -> Result<u16, ServerNameError> {
    port.parse::<u16>()
        .ok()
        .filter(|p| *p != 0 && !port.starts_with('+'))
        .ok_or_else(|| ServerNameError::BadPort {
            input: input.to_owned(),
            port: port.to_owned(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<(String, u16), ServerNameError> {
        ServerName::parse(s, STUN_PORT).map(|n| (n.host().to_owned(), n.port()))
    }

    #[test]
    fn host_port_forms_parse_with_the_default_port() {
        assert_eq!(parse("stun.example.org").unwrap(), ("stun.example.org".into(), 3478));
        assert_eq!(
            parse("stun.example.org:19302").unwrap(),
            ("stun.example.org".into(), 19302)
        );
        assert_eq!(parse("localhost").unwrap(), ("localhost".into(), 3478));
        assert_eq!(parse("stun.example.org.").unwrap(), ("stun.example.org.".into(), 3478));
        assert_eq!(parse("1.2.3.4").unwrap(), ("1.2.3.4".into(), 3478));
        assert_eq!(parse("1.2.3.4:9").unwrap(), ("1.2.3.4".into(), 9));
        assert_eq!(parse("[2001:db8::1]:9").unwrap(), ("2001:db8::1".into(), 9));
        assert_eq!(parse("[2001:db8::1]").unwrap(), ("2001:db8::1".into(), 3478));
        assert_eq!(parse("2001:db8::1").unwrap(), ("2001:db8::1".into(), 3478));
        let n = ServerName::parse("[2001:db8::1]", SIMPLE_PORT).unwrap();
        assert_eq!(n.to_string(), "[2001:db8::1]:5483");
        assert_eq!(n.socket_addr(), Some("[2001:db8::1]:5483".parse().unwrap()));
        assert_eq!(ServerName::parse("stun.example.org", 1).unwrap().socket_addr(), None);
    }

    #[test]
    fn bad_forms_say_what_is_wrong() {
        let err = |s: &str| parse(s).unwrap_err().to_string();
        assert_eq!(parse(""), Err(ServerNameError::Empty));
        assert!(err("stun.example.org:0").contains("bad port \"0\""), "{}", err("x:0"));
        assert!(err("stun.example.org:70000").contains("bad port"));
        assert!(err("stun.example.org:").contains("bad port"));
        assert!(err("stun.example.org:http").contains("bad port \"http\""));
        assert!(err("[2001:db8::1]:x").contains("bad port"));
        assert!(err("[2001:db8::1").contains("no closing bracket"));
        assert!(err("[stun.example.org]:1").contains("not an IPv6 address"));
        assert!(err("[2001:db8::1]9").contains("after the closing bracket"));
        assert!(err("2001:db8::1:99999").contains("needs brackets"));
        assert!(err(":3478").contains("no host"));
        assert!(err("stun..example.org").contains("empty label"));
        assert!(err("stun example.org").contains("characters other than"));
        assert!(err("stun://example.org").contains("URL"));
        assert!(err("-stun.example.org").contains("'-'"));
        assert!(err("stun.example.org:+5").contains("bad port"));
        assert!(
            "stun.example.org"
                .parse::<ServerName>()
                .unwrap_err()
                .to_string()
                .contains("no port"),
            "FromStr needs a port"
        );
    }

    #[test]
    fn localhost_resolves_within_the_deadline() {
        let name = ServerName::parse("localhost", 9).unwrap();
        let addrs = name.resolve_until(Instant::now() + Duration::from_secs(5)).unwrap();
        assert!(addrs.iter().all(|a| a.ip().is_loopback() && a.port() == 9), "{addrs:?}");
        let v4 = of_family(&name, addrs, "0.0.0.0:0".parse().unwrap()).unwrap();
        assert!(v4.iter().all(SocketAddr::is_ipv4));
        // An IP needs no resolver; a name whose family is missing says so.
        let ip = ServerName::parse("192.0.2.1", 9).unwrap();
        let addrs = ip.resolve_until(Instant::now() + Duration::from_secs(5)).unwrap();
        assert_eq!(addrs, vec!["192.0.2.1:9".parse().unwrap()]);
        // A dual-stack socket reaches IPv4 too; one bound to an IPv6 address does not.
        assert!(of_family(&ip, addrs.clone(), "[::]:0".parse().unwrap()).is_ok());
        let e = of_family(&ip, addrs, "[2001:db8::5]:0".parse().unwrap())
            .unwrap_err()
            .to_string();
        assert!(e.contains("192.0.2.1:9 has no IPv6 address"), "{e}");
    }

    #[test]
    fn an_unknown_name_fails_naming_the_host() {
        // Run in a network namespace without network: the lookup cannot reach any DNS server.
        let name = ServerName::parse("no-such-host.invalid", 9).unwrap();
        let t0 = Instant::now();
        let e = name.resolve_until(t0 + Duration::from_secs(10)).unwrap_err();
        let msg = e.to_string();
        assert!(msg.contains("no-such-host.invalid"), "{msg}");
        assert!(t0.elapsed() < Duration::from_secs(10), "{msg}");
    }

    #[test]
    fn a_lookup_past_its_deadline_times_out_at_once() {
        let name = ServerName::parse("localhost", 9).unwrap();
        let t0 = Instant::now();
        match name.resolve_until(t0) {
            // The worker may still win the race with a deadline already past.
            Ok(_) => {}
            Err(e) => assert!(matches!(e, ResolveError::TimedOut { .. }), "{e}"),
        }
        assert!(t0.elapsed() < Duration::from_secs(1));
    }
}
