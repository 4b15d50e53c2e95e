//! Finding a gateway with `igd-next`'s SSDP search, within the caller's deadline.
//!
//! One search per [`Target`], each on its own thread, all at once: multicast from every IPv4
//! interface (the socket bound to the interface's address, so the M-SEARCH leaves through
//! it), or unicast to a gateway we were given (miniupnpd and most IGDs answer an M-SEARCH
//! sent to their port 1900 directly). The first gateway found wins; the others' searches end
//! by themselves at the end of the window (`SearchOptions::timeout`). `igd-next` reads the
//! description and the service description of whatever answers, skips devices whose answers
//! are unusable or whose URLs point at another host, and keeps the first WAN connection
//! service it can use.

use std::net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::thread;
use std::time::Instant;

use igd_next::{GatewayIpVersion, SearchOptions};

use crate::error::UpnpError;
use crate::gateway::Gateway;

/// One search: an M-SEARCH sent from `bind` to `to`.
#[derive(Debug, Clone)]
pub(crate) struct Target {
    /// The address the search socket is bound to.
    pub bind: SocketAddrV4,
    /// The SSDP multicast address, or a gateway's address and SSDP port.
    pub to: SocketAddr,
    /// Addresses trusted for the gateway's URLs besides the one that answered. A gateway
    /// we were given by address is trusted at that address even on loopback (which
    /// `igd-next` otherwise refuses).
    pub trusted: Vec<IpAddr>,
}

impl Target {
    /// A multicast (or, for tests, unicast) search from the interface address `from`.
    pub fn from_interface(from: Ipv4Addr, to: SocketAddr) -> Target {
        let trusted = match to.ip() {
            ip if ip.is_multicast() => Vec::new(),
            ip => vec![ip],
        };
        Target {
            bind: SocketAddrV4::new(from, 0),
            to,
            trusted,
        }
    }

    /// A unicast search to the gateway at `ip`, on the SSDP port `port`.
    pub fn unicast(ip: Ipv4Addr, port: u16) -> Target {
        Target {
            bind: SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0),
            to: SocketAddr::from((ip, port)),
            trusted: vec![IpAddr::V4(ip)],
        }
    }

    fn describe(&self) -> String {
        if self.to.ip().is_multicast() {
            format!("search from {}", self.bind.ip())
        } else {
            format!("search sent to {}", self.to)
        }
    }
}

/// Searches with every target at once until `end` (the search window, or the caller's
/// deadline if sooner); the first gateway found. Nothing usable answering in time is
/// [`UpnpError::NoGateway`]; the caller's `deadline` passing first is
/// [`UpnpError::TimedOut`].
pub(crate) fn search(targets: &[Target], end: Instant, deadline: Instant) -> Result<Gateway, UpnpError> {
    if targets.is_empty() {
        return Err(UpnpError::NotApplicable("no IPv4 interface to search from".into()));
    }
    let end = end.min(deadline);
    let (tx, rx) = mpsc::channel();
    let mut running = 0usize;
    let mut errors = Vec::new();
    for target in targets {
        let what = target.describe();
        let mut options = SearchOptions::default();
        options.bind_addr = SocketAddr::V4(target.bind);
        options.broadcast_address = target.to;
        let window = end.saturating_duration_since(Instant::now());
        options.timeout = Some(window);
        options.single_search_timeout = Some(window);
        options.gateway_ip_version = GatewayIpVersion::V4;
        options.allowed_gateway_ips = target.trusted.clone();
        let tx = tx.clone();
        let spawned = thread::Builder::new().name("natt-upnp-search".into()).spawn(move || {
            let found = igd_next::search_gateway(options).map_err(|e| UpnpError::search(&what, e));
            // The receiver is gone when another search won or the caller gave up.
            let _ = tx.send(found);
        });
        match spawned {
            Ok(_) => running += 1,
            Err(e) => errors.push(UpnpError::Io {
                what: "starting a search thread".into(),
                source: e,
            }),
        }
    }
    drop(tx);
    while running > 0 {
        let remaining = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(remaining) {
            Ok(Ok(found)) => match Gateway::new(found) {
                Ok(gateway) => return Ok(gateway),
                Err(e) => {
                    running -= 1;
                    errors.push(e);
                }
            },
            Ok(Err(e)) => {
                log::debug!("upnp: {e}");
                running -= 1;
                errors.push(e);
            }
            Err(RecvTimeoutError::Timeout) => {
                return Err(UpnpError::timed_out("searching for a UPnP gateway (SSDP)"));
            }
            Err(RecvTimeoutError::Disconnected) => break,
        }
    }
    Err(summarize(errors))
}

/// One error for all the searches that failed: the "nothing answered" kind when any says so.
fn summarize(mut errors: Vec<UpnpError>) -> UpnpError {
    if errors.len() == 1
        && let Some(e) = errors.pop()
    {
        return e;
    }
    let all: Vec<String> = errors
        .iter()
        .map(|e| match e {
            UpnpError::NoGateway(why) => why.clone(),
            e => e.to_string(),
        })
        .collect();
    UpnpError::NoGateway(if all.is_empty() {
        "no search ran".to_owned()
    } else {
        all.join("; ")
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use std::time::Duration;

    #[test]
    fn gateways_given_by_address_are_trusted_there_and_multicast_trusts_nobody() {
        let t = Target::unicast(Ipv4Addr::LOCALHOST, 1900);
        assert_eq!(t.to, "127.0.0.1:1900".parse::<SocketAddr>().unwrap());
        assert_eq!(t.trusted, [IpAddr::V4(Ipv4Addr::LOCALHOST)]);
        let m = Target::from_interface(Ipv4Addr::new(192, 168, 1, 2), "239.255.255.250:1900".parse().unwrap());
        assert!(m.trusted.is_empty());
        assert_eq!(m.describe(), "search from 192.168.1.2");
    }

    #[test]
    fn no_interface_is_not_applicable() {
        let now = Instant::now();
        let e = search(&[], now + Duration::from_secs(1), now + Duration::from_secs(1)).unwrap_err();
        assert!(matches!(e, UpnpError::NotApplicable(_)), "{e}");
    }
}
