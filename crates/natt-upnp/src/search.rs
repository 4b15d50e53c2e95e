//! Finding a gateway by SSDP within the caller's deadline: natt sends the M-SEARCH and reads
//! the answers itself, and reads each answerer's description with its own reader
//! ([`crate::load`]).
//!
//! (It replaces `igd-next`'s search, whose description reader expanded DTD entities: see the
//! crate documentation, **Why not `igd-next`**.)
//!
//! Answers are filtered: when this host has a default route, only its router (the answer's
//! source and its LOCATION's host) is taken. The gateway whose mappings make a socket
//! reachable is that router, and another device taken as the gateway would get natt's SOAP
//! requests.
//!
//! One search per [`Target`], each on its own thread, all at once: multicast from every IPv4
//! interface (the socket bound to the interface's address), and unicast to the router or to
//! a gateway we were given (miniupnpd and most IGDs answer an M-SEARCH sent to their port
//! 1900 directly). Each description is read on a thread of its own as soon as its answer
//! arrives. The first gateway found wins; the others end by themselves at the end of the
//! window.
//!
//! # Forged answers
//!
//! SSDP answers are unauthenticated UDP datagrams: any host on the LAN can send answers that
//! claim to come from the router (its source address forged), naming any LOCATION on the
//! router's address. natt keeps such answers from starving the router's own:
//!
//! - Reads are counted per distinct LOCATION (its whole URL: address, port, path), not per
//!   answering address: the router's real description URL is read however many other URLs
//!   forged answers named (an answer repeating a URL already taken costs nothing).
//! - Descriptions are read concurrently, each on its own thread as soon as its answer arrives:
//!   a forged URL that stalls (a port of the router that accepts and never answers) holds up
//!   its own read only, not the next answer's.
//! - Each search socket reads at most [`MAX_LOCATIONS`] distinct LOCATIONs (and, when it takes
//!   answers from any device, at most [`MAX_LOCATIONS_PER_ADDRESS`] per answering address).
//!   A host that floods more forged answers than that to the multicast socket before the
//!   router answers can still fill that socket's quota; the unicast search sent to the router
//!   has its own socket and quota, and its port is not seen by other hosts on a switched LAN
//!   (the multicast search's is: it is sent to every host).
//!
//! What a LAN host can make natt fetch with forged answers: an HTTP GET of
//! `http://ROUTER:PORT/PATH`, with ROUTER the default route's router (an answer is taken only
//! from it, and its LOCATION must name the address it came from), any PORT and any PATH
//! and query; no proxy, no redirect followed, at most 1 s to connect, at most
//! [`MAX_DESCRIPTION_BYTES`](crate::description::MAX_DESCRIPTION_BYTES) (256 KiB) read, no
//! longer than the search window ([`crate::UpnpConfig::search_window`], 1.5 s by default, or
//! the caller's deadline if sooner); at most [`MAX_LOCATIONS`] such GETs per search socket
//! per search. What comes back is read by natt's description reader (no DTD); only a usable
//! IGD description on the router's own address becomes the gateway, whose SOAP requests then
//! go to the router's address only. When answers are taken from any device (no default
//! route, [`crate::UpnpConfig::router_only`] off, or [`crate::UpnpConfig::search_from`] set),
//! the same GET can be aimed at any unicast IPv4 address a forged answer claims to come from
//! (and a device answering first can be taken as the gateway). A gateway given by URL is not
//! searched for, so forged answers play no part (unless nothing answers at its URL: then a
//! unicast search goes to its host).

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

use natt_core::deadline;

use crate::bounded;
use crate::error::{UpnpError, shorten};
use crate::gateway::Gateway;
use crate::load;
use crate::ssdp::{location, request};

/// What is searched for: Internet Gateway Devices (an IGD:2 device answers the IGD:1 search
/// too). One search target, not one per service as some clients send: every answer is read the
/// same way, and each M-SEARCH costs the gateway a delayed answer.
const SEARCH_TARGET: &str = "urn:schemas-upnp-org:device:InternetGatewayDevice:1";

/// Distinct LOCATIONs (description URLs) read at most per search socket, per search: a flood
/// of answers does not make the search read without end.
pub(crate) const MAX_LOCATIONS: usize = 16;

/// Distinct LOCATIONs read at most per answering address by a search socket that takes answers
/// from any device: one device does not use up the socket's reads. (A socket that takes the
/// router's answers only has [`MAX_LOCATIONS`] for the router.)
pub(crate) const MAX_LOCATIONS_PER_ADDRESS: usize = 4;

/// How long the socket is waited on at a time, so a search socket stops reading soon after
/// another read found the gateway.
const RECEIVE_SLICE: Duration = Duration::from_millis(50);

/// The LOCATIONs a search has taken (read, or being read), shared by its targets: each is read
/// once per search.
#[derive(Default)]
struct Seen {
    urls: HashSet<String>,
}

/// What one search socket has taken: at most [`MAX_LOCATIONS`] distinct LOCATIONs (and
/// [`MAX_LOCATIONS_PER_ADDRESS`] per address when `per_address` is kept).
#[derive(Debug)]
struct Quota {
    taken: usize,
    /// Counts by answering address, when the socket takes answers from any device.
    per_address: Option<HashMap<IpAddr, usize>>,
}

impl Quota {
    /// For a socket taking answers from `only` that address, or from any device.
    fn new(only: Option<Ipv4Addr>) -> Quota {
        Quota {
            taken: 0,
            per_address: only.is_none().then(HashMap::new),
        }
    }

    /// True (and noted, in `self` and `seen`) when `url`, from `from`, is a LOCATION not taken
    /// yet in this search and within this socket's limits. Only distinct LOCATIONs count: an
    /// answer naming another URL (forged or not) cannot take this one's read.
    fn take(&mut self, seen: &mut Seen, url: &str, from: IpAddr) -> bool {
        if seen.urls.contains(url) || self.taken >= MAX_LOCATIONS {
            return false;
        }
        if let Some(per_address) = &mut self.per_address {
            let count = per_address.entry(from).or_insert(0);
            if *count >= MAX_LOCATIONS_PER_ADDRESS {
                return false;
            }
            *count += 1;
        }
        self.taken += 1;
        seen.urls.insert(url.to_owned())
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
    /// deadline if sooner) or until `over` is set, reading the description of each LOCATION
    /// taken (see [`Quota`]; `seen`, shared by the targets of one search, keeps two targets
    /// from reading the same one) on a thread of its own; the first gateway that loads.
    ///
    /// A unicast search also watches for the gateway's refusal (see [`Refusal`]); when the
    /// gateway refuses and `refusal_ends_search`, it sets `over`, which ends the other targets'
    /// searches too.
    fn run(&self, end: Instant, seen: &Arc<Mutex<Seen>>, search: &SearchState) -> Result<Gateway, UpnpError> {
        let what = self.describe();
        let socket = UdpSocket::bind(self.bind).map_err(|e| UpnpError::io(format!("{what}: binding"), e))?;
        socket
            .send_to(request(self.to, SEARCH_TARGET).as_bytes(), self.to)
            .map_err(|e| UpnpError::io(format!("{what}: sending"), e))?;
        let refusal = if self.to.ip().is_multicast() {
            None
        } else {
            Refusal::start(self.bind, self.to)
        };
        let (tx, rx) = mpsc::channel();
        let found = Arc::new(AtomicBool::new(false));
        let listener = Listener {
            target: self.clone(),
            what: what.clone(),
            socket,
            seen: Arc::clone(seen),
            found: Arc::clone(&found),
            end,
        };
        if let Err(e) = thread::Builder::new()
            .name("natt-upnp-ssdp".into())
            .spawn(move || listener.listen(&tx))
        {
            return Err(UpnpError::io(format!("{what}: starting a thread"), e));
        }
        let mut last = None;
        loop {
            let left = end.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            if refusal.as_ref().is_some_and(Refusal::refused) {
                found.store(true, Ordering::SeqCst);
                let why = format!("{what}: refused (ICMP port unreachable): the router runs no UPnP (SSDP) service");
                log::debug!("upnp: {why}");
                if search.refusal_ends_search {
                    search.over.store(true, Ordering::SeqCst);
                }
                return Err(UpnpError::NoGateway(why));
            }
            if search.over.load(Ordering::SeqCst) {
                break;
            }
            match rx.recv_timeout(left.min(OVER_POLL)) {
                Ok(Ok(gateway)) => {
                    found.store(true, Ordering::SeqCst);
                    return Ok(gateway);
                }
                Ok(Err(e)) => {
                    log::debug!("upnp: {what}: {e}");
                    last = Some(e);
                }
                Err(RecvTimeoutError::Timeout) => {}
                // Everything read failed and the listener is done.
                Err(RecvTimeoutError::Disconnected) => break,
            }
        }
        found.store(true, Ordering::SeqCst);
        if search.over.load(Ordering::SeqCst) {
            return Err(UpnpError::NoGateway(format!(
                "{what}: ended: the router refused the search"
            )));
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

/// How often a search checks whether another target ended the search.
const OVER_POLL: Duration = Duration::from_millis(2);

/// What the targets of one search share.
struct SearchState {
    /// Set when the search is over for every target (the router refused it).
    over: AtomicBool,
    /// Whether a unicast target's refusal ends the whole search: every target takes answers
    /// from that one address only, so nothing else can answer.
    refusal_ends_search: bool,
}

/// A unicast search's watch for the gateway's refusal. A router that runs no SSDP service
/// answers a datagram to its port 1900 with an ICMP port unreachable; Linux reports that only
/// on a connected socket (`ECONNREFUSED`), and the search's own socket cannot be connected
/// (a gateway may answer from another port). So an empty datagram goes from a second,
/// connected socket, which an SSDP service ignores.
struct Refusal {
    socket: UdpSocket,
}

impl Refusal {
    /// Sends the empty datagram; `None` if that cannot be done (the search goes on without).
    fn start(bind: SocketAddrV4, to: SocketAddr) -> Option<Refusal> {
        let socket = UdpSocket::bind(bind).ok()?;
        socket.connect(to).ok()?;
        socket.set_nonblocking(true).ok()?;
        socket.send(&[]).ok()?;
        Some(Refusal { socket })
    }

    /// Whether the refusal has arrived.
    fn refused(&self) -> bool {
        let mut buf = [0u8; 1];
        matches!(self.socket.recv(&mut buf), Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused)
    }
}

/// A search socket's receiving side, on its own thread: takes the answers and starts reading
/// their descriptions.
struct Listener {
    target: Target,
    what: String,
    socket: UdpSocket,
    seen: Arc<Mutex<Seen>>,
    /// Set when the search is over (a gateway found, or the window ended).
    found: Arc<AtomicBool>,
    end: Instant,
}

impl Listener {
    /// Reads answers until `end` (or the search is over), and starts one thread per LOCATION
    /// taken, which sends the gateway it loads (or why not) to `tx`.
    fn listen(self, tx: &Sender<Result<Gateway, UpnpError>>) {
        let what = &self.what;
        let mut quota = Quota::new(self.target.only);
        let mut buf = [0u8; 2048];
        while Instant::now() < self.end && !self.found.load(Ordering::SeqCst) {
            let until = self.end.min(Instant::now() + RECEIVE_SLICE);
            let (n, from) = match deadline::recv_from_until(&self.socket, &mut buf, until) {
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
            if self.target.only.is_some_and(|only| IpAddr::V4(only) != from.ip()) {
                log::debug!("upnp: {what}: ignoring {from}, which is not the router ({url})");
                continue;
            }
            {
                let mut seen = self.seen.lock().unwrap_or_else(PoisonError::into_inner);
                if !quota.take(&mut seen, url.as_str(), from.ip()) {
                    log::debug!("upnp: {what}: not reading {url} from {from} (read already, or over the limits)");
                    continue;
                }
            }
            let (tx, end) = (tx.clone(), self.end);
            let spawned = thread::Builder::new().name("natt-upnp-describe".into()).spawn(move || {
                // The receiver is gone once the search is over.
                let _ = tx.send(load::load(url.as_str(), end));
            });
            if let Err(e) = spawned {
                log::debug!("upnp: {what}: starting a thread to read a description: {e}");
            }
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
    let seen = Arc::new(Mutex::new(Seen::default()));
    let only = targets.first().and_then(|t| t.only);
    let state = Arc::new(SearchState {
        over: AtomicBool::new(false),
        refusal_ends_search: only.is_some() && targets.iter().all(|t| t.only == only),
    });
    let found = bounded::first_ok(
        targets.to_vec(),
        "natt-upnp-search",
        "searching for a UPnP gateway (SSDP)",
        deadline,
        move |target: Target| target.run(end, &seen, &state),
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

    /// Issue 17: a router that runs no SSDP service refuses the unicast search at once (ICMP
    /// port unreachable), and the search ends then rather than at the end of its window.
    #[test]
    fn a_router_that_refuses_the_search_ends_it_at_once() {
        let closed = UdpSocket::bind("127.0.0.1:0").unwrap();
        let port = closed.local_addr().unwrap().port();
        drop(closed);
        // Another search that would wait its whole window: a port that takes datagrams and
        // never answers, standing in for the multicast search from an interface.
        let silent = UdpSocket::bind("127.0.0.1:0").unwrap();
        let waits = Target::unicast(Ipv4Addr::LOCALHOST, silent.local_addr().unwrap().port());
        let targets = [waits.clone(), Target::unicast(Ipv4Addr::LOCALHOST, port)];
        let t0 = Instant::now();
        let end = t0 + Duration::from_secs(2);
        let e = search(&targets, end, end).unwrap_err();
        assert!(t0.elapsed() < Duration::from_millis(500), "{:?}", t0.elapsed());
        assert!(e.to_string().contains("refused"), "{e}");
        // When answers from other devices count, the other search uses its window.
        let mut any = waits;
        any.only = None;
        let t0 = Instant::now();
        let end = t0 + Duration::from_millis(300);
        assert!(search(&[any, Target::unicast(Ipv4Addr::LOCALHOST, port)], end, end).is_err());
        assert!(t0.elapsed() >= Duration::from_millis(300), "{:?}", t0.elapsed());
    }

    #[test]
    fn reads_are_counted_per_location() {
        let router = IpAddr::V4(Ipv4Addr::new(192, 168, 1, 1));
        let mut seen = Seen::default();
        // A socket taking the router's answers only: forged URLs on the router's address do
        // not take the real one's read; each URL is read once per search.
        let mut quota = Quota::new(Some(Ipv4Addr::new(192, 168, 1, 1)));
        for port in 1..=(MAX_LOCATIONS as u16 - 1) {
            assert!(quota.take(&mut seen, &format!("http://192.168.1.1:{port}/x"), router));
        }
        assert!(!quota.take(&mut seen, "http://192.168.1.1:1/x", router), "read twice");
        assert!(quota.take(&mut seen, "http://192.168.1.1:5000/rootDesc.xml", router));
        assert!(
            !quota.take(&mut seen, "http://192.168.1.1:9999/y", router),
            "a socket read more than {MAX_LOCATIONS}"
        );
        // Another socket of the same search has its own quota, but skips what was taken.
        let mut unicast = Quota::new(Some(Ipv4Addr::new(192, 168, 1, 1)));
        assert!(!unicast.take(&mut seen, "http://192.168.1.1:5000/rootDesc.xml", router));
        assert!(unicast.take(&mut seen, "http://192.168.1.1:5000/other.xml", router));

        // A socket taking answers from any device: one device does not use up its reads.
        let mut seen = Seen::default();
        let mut any = Quota::new(None);
        let other = IpAddr::V4(Ipv4Addr::new(192, 168, 1, 9));
        for port in 1..=MAX_LOCATIONS_PER_ADDRESS {
            assert!(any.take(&mut seen, &format!("http://192.168.1.9:{port}/"), other));
        }
        assert!(
            !any.take(&mut seen, "http://192.168.1.9:99/", other),
            "one device used up the reads"
        );
        assert!(any.take(&mut seen, "http://192.168.1.1:5000/rootDesc.xml", router));
        assert!(request("239.255.255.250:1900".parse().unwrap(), SEARCH_TARGET).contains("MX: 1\r\n"));
    }

    #[test]
    fn forged_answers_from_the_router_first_do_not_starve_its_own() {
        use crate::fake::{FakeIgd, FakeSsdp, IgdOptions, fixed, response, silent};
        // A LAN host forges answers "from the router" (here 127.0.0.1) before the router's
        // own: a port that accepts and never answers, a closed port, a page that is not a
        // description, and more of the same, all on the router's address.
        let stall = silent();
        let stall2 = silent();
        let not_igd = fixed(response("200 OK", "<html/>"));
        let closed = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let igd = FakeIgd::start(IgdOptions::default());
        let mut locations = vec![
            stall.url("/rootDesc.xml"),
            format!("http://127.0.0.1:{closed}/rootDesc.xml"),
            not_igd.url("/rootDesc.xml"),
            stall2.url("/a"),
            stall.url("/b?c=d"),
        ];
        locations.push(igd.url());
        let ssdp = FakeSsdp::start(locations);
        let mut target = Target::from_interface(Ipv4Addr::LOCALHOST, ssdp.addr);
        target.only = Some(Ipv4Addr::LOCALHOST);
        let t0 = Instant::now();
        let found = search(&[target], t0 + Duration::from_millis(1500), t0 + Duration::from_secs(3)).unwrap();
        let took = t0.elapsed();
        println!("found past the forged answers in {took:?}");
        assert_eq!(found.description, igd.url());
        // Not after the stalling reads: at once.
        assert!(took < Duration::from_millis(500), "{took:?}");
        assert_eq!(igd.server.gets(), 1);
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
