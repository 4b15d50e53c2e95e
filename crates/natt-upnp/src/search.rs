//! Finding a gateway by SSDP within the caller's deadline: natt sends the M-SEARCH and reads
//! the answers itself, and reads each answerer's description with its own reader
//! ([`crate::load`]).
//!
//! natt used `igd-next`'s search before, which reads the description of whatever answers with
//! xml-rs's default settings, which expand DTD entities without limit: a device on the LAN
//! answering the search with a 527-byte description took the process to 700 MB (ten times
//! that per extra line). natt's reader refuses DTDs.
//!
//! Answers are filtered: when this host has a default route, only its router (the answer's
//! source and its LOCATION's host) is taken. The gateway whose mappings make a socket
//! reachable is that router, and another device taken as the gateway would get natt's SOAP
//! requests.
//!
//! One search per [`Target`], each on its own thread, all at once: multicast from every IPv4
//! interface (the socket bound to the interface's address), and unicast to the router or to
//! a gateway we were given (miniupnpd and most IGDs answer an M-SEARCH sent to their port
//! 1900 directly). The first gateway found wins; the others end by themselves at the end of
//! the window.

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4, UdpSocket};
use std::sync::{Mutex, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

use natt_core::deadline;

use crate::call;
use crate::error::{UpnpError, shorten};
use crate::gateway::Gateway;
use crate::load;
use crate::ssdp::{location, request};

/// What is searched for: Internet Gateway Devices (an IGD:2 device answers the IGD:1 search
/// too). One search target, not one per service as some clients send: every answer is read the
/// same way, and each M-SEARCH costs the gateway a delayed answer.
const SEARCH_TARGET: &str = "urn:schemas-upnp-org:device:InternetGatewayDevice:1";

/// Descriptions read at most per search, and per answering address (a flood of answers does
/// not make the search read without end, nor one device use up the reads).
const MAX_LOCATIONS: usize = 16;
const MAX_LOCATIONS_PER_ADDRESS: usize = 2;

/// The descriptions a search has read (or is reading), shared by its targets.
#[derive(Default)]
struct Seen {
    urls: HashSet<String>,
    per_address: HashMap<IpAddr, usize>,
}

impl Seen {
    /// True (and noted) when `url`, from `from`, is new and within the limits.
    fn take(&mut self, url: &str, from: IpAddr) -> bool {
        let count = self.per_address.entry(from).or_insert(0);
        if self.urls.len() >= MAX_LOCATIONS || *count >= MAX_LOCATIONS_PER_ADDRESS || self.urls.contains(url) {
            return false;
        }
        *count += 1;
        self.urls.insert(url.to_owned())
    }
}

/// One search: an M-SEARCH sent from `bind` to `to`.
#[derive(Debug, Clone)]
pub(crate) struct Target {
    /// The address the search socket is bound to.
    pub bind: SocketAddrV4,
    /// The SSDP multicast address, or a gateway's address and SSDP port.
    pub to: SocketAddr,
    /// Answers taken only from this address, when set.
    pub only: Option<Ipv4Addr>,
}

impl Target {
    /// A multicast (or, for tests, unicast) search from the interface address `from`.
    pub fn from_interface(from: Ipv4Addr, to: SocketAddr) -> Target {
        Target {
            bind: SocketAddrV4::new(from, 0),
            to,
            only: None,
        }
    }

    /// A unicast search to the gateway at `ip`, on the SSDP port `port`, taking its answers only.
    pub fn unicast(ip: Ipv4Addr, port: u16) -> Target {
        Target {
            bind: SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0),
            to: SocketAddr::from((ip, port)),
            only: Some(ip),
        }
    }

    fn describe(&self) -> String {
        if self.to.ip().is_multicast() {
            format!("search from {}", self.bind.ip())
        } else {
            format!("search sent to {}", self.to)
        }
    }

    /// Sends the M-SEARCH, then reads answers until `end` (the window, or the caller's
    /// deadline if sooner), reading the description of each new answerer taken, one at a time
    /// (`seen`, shared by the targets of one search, keeps two targets from reading the same
    /// one); the first gateway that loads.
    fn run(&self, end: Instant, seen: &Mutex<Seen>) -> Result<Gateway, UpnpError> {
        let what = self.describe();
        let socket = UdpSocket::bind(self.bind).map_err(|e| UpnpError::io(format!("{what}: binding"), e))?;
        socket
            .send_to(request(self.to, SEARCH_TARGET).as_bytes(), self.to)
            .map_err(|e| UpnpError::io(format!("{what}: sending"), e))?;
        let mut last = None;
        let mut buf = [0u8; 2048];
        while Instant::now() < end {
            let (n, from) = match deadline::recv_from_until(&socket, &mut buf, end) {
                Ok(Some(got)) => got,
                Ok(None) => continue,
                // Interrupted calls, ICMP errors of earlier sends, oversized datagrams: this
                // wait ends, not the search.
                Err(e) => {
                    log::debug!("upnp: {what}: receiving: {e}");
                    thread::sleep(Duration::from_millis(1));
                    continue;
                }
            };
            let Some(url) = buf.get(..n).and_then(|answer| location(answer, from.ip())) else {
                log::debug!("upnp: {what}: ignoring {n} bytes from {from}: not an answer with a usable LOCATION");
                continue;
            };
            if self.only.is_some_and(|only| IpAddr::V4(only) != from.ip()) {
                log::debug!("upnp: {what}: ignoring {from}, which is not the router ({url})");
                continue;
            }
            {
                let mut seen = seen.lock().unwrap_or_else(PoisonError::into_inner);
                if !seen.take(url.as_str(), from.ip()) {
                    continue;
                }
            }
            match load::load(url.as_str(), end) {
                Ok(gateway) => return Ok(gateway),
                Err(e) => {
                    log::debug!("upnp: {what}: {e}");
                    last = Some(e);
                }
            }
        }
        Err(UpnpError::NoGateway(match last {
            Some(e) => format!(
                "{what}: no usable answer in time (last: {})",
                shorten(&e.to_string(), 200)
            ),
            None => format!("{what}: no usable answer in time"),
        }))
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
    let seen = Mutex::new(Seen::default());
    let found = call::first_ok(
        targets.to_vec(),
        "natt-upnp-search",
        "searching for a UPnP gateway (SSDP)",
        deadline,
        move |target: Target| target.run(end, &seen),
    );
    found.map_err(|mut errors| match errors.pop() {
        // The caller's deadline passed first.
        Some(e @ UpnpError::TimedOut { .. }) => e,
        last => {
            errors.extend(last);
            UpnpError::summarize(errors, "no search ran")
        }
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn unicast_searches_take_their_gateways_answers_only() {
        let t = Target::unicast(Ipv4Addr::LOCALHOST, 1900);
        assert_eq!(t.to, "127.0.0.1:1900".parse::<SocketAddr>().unwrap());
        assert_eq!(t.only, Some(Ipv4Addr::LOCALHOST));
        let m = Target::from_interface(Ipv4Addr::new(192, 168, 1, 2), "239.255.255.250:1900".parse().unwrap());
        assert_eq!(m.only, None);
        assert_eq!(m.describe(), "search from 192.168.1.2");
    }

    #[test]
    fn one_device_cannot_use_up_the_reads() {
        let router = IpAddr::V4(Ipv4Addr::new(192, 168, 1, 1));
        let mut seen = Seen::default();
        let other = IpAddr::V4(Ipv4Addr::new(192, 168, 1, 9));
        assert!(seen.take("http://192.168.1.9:1/", other));
        assert!(!seen.take("http://192.168.1.9:1/", other), "read twice");
        assert!(seen.take("http://192.168.1.9:2/", other));
        assert!(
            !seen.take("http://192.168.1.9:3/", other),
            "one device used up the reads"
        );
        assert!(seen.take("http://192.168.1.1:5000/rootDesc.xml", router));
        assert!(request("239.255.255.250:1900".parse().unwrap(), SEARCH_TARGET).contains("MX: 1\r\n"));
    }

    #[test]
    fn answers_from_others_than_the_router_are_ignored() {
        use crate::fake::{FakeIgd, FakeSsdp, IgdOptions};
        let igd = FakeIgd::start(IgdOptions::default());
        let ssdp = FakeSsdp::start(vec![igd.url()]);
        let now = Instant::now();
        let mut target = Target::from_interface(Ipv4Addr::LOCALHOST, ssdp.addr);
        target.only = Some(Ipv4Addr::new(127, 0, 0, 2));
        let e = search(
            &[target.clone()],
            now + Duration::from_millis(300),
            now + Duration::from_secs(1),
        )
        .unwrap_err();
        assert!(matches!(e, UpnpError::NoGateway(_)), "{e}");
        assert_eq!(
            igd.server.gets(),
            0,
            "the description of a device that is not the router was read"
        );
        target.only = Some(Ipv4Addr::LOCALHOST);
        let now = Instant::now();
        let found = search(
            &[target],
            now + Duration::from_millis(300),
            now + Duration::from_secs(1),
        )
        .unwrap();
        assert_eq!(found.ip(), Ipv4Addr::LOCALHOST);
    }

    #[test]
    fn no_interface_is_not_applicable() {
        let now = Instant::now();
        let e = search(&[], now + Duration::from_secs(1), now + Duration::from_secs(1)).unwrap_err();
        assert!(matches!(e, UpnpError::NotApplicable(_)), "{e}");
    }
}
