//! Searching for gateways with SSDP: an `M-SEARCH` from each IPv4 interface, then loading the
//! description of each device that answers, until one is a usable gateway.
//!
//! Each interface is searched on a thread of its own, from a socket bound to that interface's
//! address (so the multicast leaves through it). Answers are untrusted: a `LOCATION` must be an
//! `http://` URL on the very address that answered, each interface tries at most
//! [`MAX_LOCATIONS`] devices, and everything ends by the caller's deadline; threads still
//! loading a description when another found a gateway end by that deadline on their own.

use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4, UdpSocket};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use natt_core::deadline;

use crate::error::{UpnpError, shorten};
use crate::gateway::Gateway;
use crate::url::HttpUrl;

/// The SSDP multicast address and port.
pub const SSDP_MULTICAST: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::new(239, 255, 255, 250), 1900);

/// Search targets: devices that can map ports answer at least one.
const TARGETS: [&str; 4] = [
    "urn:schemas-upnp-org:device:InternetGatewayDevice:1",
    "urn:schemas-upnp-org:device:InternetGatewayDevice:2",
    "urn:schemas-upnp-org:service:WANIPConnection:1",
    "urn:schemas-upnp-org:service:WANPPPConnection:1",
];

/// Most distinct devices one interface's search loads descriptions of.
pub const MAX_LOCATIONS: usize = 8;
/// The `MX` of our searches: devices answer within this many seconds.
pub const MX_SECS: u64 = 1;
/// When the search is sent again (SSDP is UDP).
const RESEND_AFTER: Duration = Duration::from_millis(300);

/// A gateway found, and its external address.
pub type Found = (Gateway, Ipv4Addr);

/// What the search threads report.
type Report = Result<Found, UpnpError>;

/// Searches from each address in `from` by sending to `target` (the SSDP multicast address,
/// or a unicast address in tests). Answers are awaited until `window_end`; descriptions load
/// until `deadline`, each device's on a thread of its own (a device that answers the search
/// and then stalls does not hold up the others). Returns the first usable gateway.
pub fn search(
    from: &[Ipv4Addr],
    target: SocketAddr,
    window_end: Instant,
    deadline: Instant,
) -> Result<Found, UpnpError> {
    if from.is_empty() {
        return Err(UpnpError::NotApplicable(
            "no IPv4 interface to search for a UPnP gateway on".into(),
        ));
    }
    let (tx, rx) = mpsc::channel::<Report>();
    for &ip in from {
        let tx = tx.clone();
        let spawned = thread::Builder::new()
            .name("natt-upnp-ssdp".into())
            .spawn(move || search_from(ip, target, window_end, deadline, &tx));
        if let Err(e) = spawned {
            log::warn!("upnp: cannot start a search thread: {e}");
        }
    }
    // Every thread holds a sender: the channel disconnects once all of them are done.
    drop(tx);
    let mut errors: Vec<UpnpError> = Vec::new();
    while let Some(wait) = deadline::remaining(deadline) {
        match rx.recv_timeout(wait) {
            Ok(Ok(found)) => return Ok(found),
            Ok(Err(e)) => errors.push(e),
            Err(_) => break,
        }
    }
    // A gateway that answered but failed says more than silence.
    let best = errors
        .into_iter()
        .max_by_key(|e| !matches!(e, UpnpError::NoGateway(_) | UpnpError::NotApplicable(_)));
    Err(best.unwrap_or_else(|| UpnpError::NoGateway(format!("no answer from {} interface(s) in time", from.len()))))
}

/// The search from one interface address: reports each device's gateway (or why not) from a
/// thread of its own, and, if no device answered, why.
fn search_from(ip: Ipv4Addr, target: SocketAddr, window_end: Instant, deadline: Instant, tx: &mpsc::Sender<Report>) {
    let what = format!("SSDP search from {ip}");
    let socket = match open(ip, target) {
        Ok(s) => s,
        Err(e) => {
            let _ = tx.send(Err(UpnpError::io(&what, e)));
            return;
        }
    };
    if let Err(e) = send_searches(&socket, target) {
        let _ = tx.send(Err(UpnpError::io(format!("{what}: send to {target}"), e)));
        return;
    }
    log::debug!("upnp: {what}: M-SEARCH sent to {target}");
    let mut resend = Some(Instant::now() + RESEND_AFTER);
    let mut tried: HashSet<HttpUrl> = HashSet::new();
    let mut ignored = 0usize;
    let mut buf = [0u8; 2048];
    let end = window_end.min(deadline);
    while let Some(wait) = deadline::remaining(end) {
        if let Some(at) = resend
            && Instant::now() >= at
        {
            resend = None;
            let _ = send_searches(&socket, target);
        }
        let wait = resend.map_or(wait, |r| wait.min(deadline::wait_until(r)));
        if socket.set_read_timeout(Some(wait)).is_err() {
            break;
        }
        let Ok((n, from)) = socket.recv_from(&mut buf) else {
            continue; // timeouts, ICMP errors of the sends
        };
        let url = match location(buf.get(..n).unwrap_or(&[])).map(|l| HttpUrl::parse(&l)) {
            Some(Ok(u)) if IpAddr::V4(u.ip()) == from.ip() => u,
            Some(Ok(u)) => {
                log::debug!("upnp: {what}: {from} announced {u}, on another host: ignored");
                ignored += 1;
                continue;
            }
            Some(Err(e)) => {
                log::debug!("upnp: {what}: {from}: {e}");
                ignored += 1;
                continue;
            }
            None => {
                log::debug!("upnp: {what}: ignoring a datagram from {from} without a LOCATION");
                ignored += 1;
                continue;
            }
        };
        if tried.len() >= MAX_LOCATIONS || tried.contains(&url) {
            continue;
        }
        tried.insert(url.clone());
        log::debug!("upnp: {what}: {from} answered, description at {url}");
        let tx = tx.clone();
        let spawned = thread::Builder::new().name("natt-upnp-desc".into()).spawn(move || {
            let _ = tx.send(Gateway::load(&url, deadline).inspect_err(|e| log::debug!("upnp: {url}: {e}")));
        });
        if let Err(e) = spawned {
            log::warn!("upnp: cannot start a thread to load a description: {e}");
        }
    }
    if tried.is_empty() {
        let _ = tx.send(Err(UpnpError::NoGateway(match ignored {
            0 => format!("nothing answered the search from {ip}"),
            n => format!("{n} answer(s) to the search from {ip} ignored (no usable LOCATION on the answering host)"),
        })));
    }
}

/// A socket on interface address `ip` for searching at `target`.
fn open(ip: Ipv4Addr, target: SocketAddr) -> std::io::Result<UdpSocket> {
    let socket = UdpSocket::bind((ip, 0))?;
    if target.ip().is_multicast() {
        let s = socket2::SockRef::from(&socket);
        // The interface to send through, and the TTL the UPnP architecture asks for.
        s.set_multicast_if_v4(&ip)?;
        s.set_multicast_ttl_v4(2)?;
    }
    Ok(socket)
}

/// One `M-SEARCH` per search target; an error only if none could be sent.
fn send_searches(socket: &UdpSocket, target: SocketAddr) -> std::io::Result<()> {
    let mut last = None;
    let mut sent = false;
    for st in TARGETS {
        let msg = format!(
            "M-SEARCH * HTTP/1.1\r\nHOST: 239.255.255.250:1900\r\nMAN: \"ssdp:discover\"\r\nMX: {MX_SECS}\r\nST: {st}\r\n\r\n"
        );
        match socket.send_to(msg.as_bytes(), target) {
            Ok(_) => sent = true,
            Err(e) => last = Some(e),
        }
    }
    match (sent, last) {
        (false, Some(e)) => Err(e),
        _ => Ok(()),
    }
}

/// The `LOCATION` of an SSDP answer (`HTTP/1.1 200 OK` with the header), if it is one.
fn location(datagram: &[u8]) -> Option<String> {
    let text = std::str::from_utf8(datagram).ok()?;
    let mut lines = text.lines();
    let status = lines.next()?;
    let mut parts = status.split_whitespace();
    if !parts.next()?.starts_with("HTTP/1.") || parts.next()? != "200" {
        return None;
    }
    lines
        .take_while(|l| !l.is_empty())
        .filter_map(|l| l.split_once(':'))
        .find(|(name, _)| name.trim().eq_ignore_ascii_case("location"))
        .map(|(_, value)| shorten(value.trim(), 2048))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_location_of_an_answer() {
        let answer = b"HTTP/1.1 200 OK\r\nCACHE-CONTROL: max-age=120\r\nST: urn:schemas-upnp-org:device:InternetGatewayDevice:1\r\nUSN: uuid:x\r\nEXT:\r\nSERVER: Debian UPnP/1.1 MiniUPnPd/2.3.1\r\nLocation: http://192.168.1.1:5000/rootDesc.xml\r\n\r\n";
        assert_eq!(
            location(answer).as_deref(),
            Some("http://192.168.1.1:5000/rootDesc.xml")
        );
        assert_eq!(location(b"NOTIFY * HTTP/1.1\r\nLOCATION: http://x/\r\n\r\n"), None);
        assert_eq!(location(b"HTTP/1.1 404 Not Found\r\nLOCATION: http://x/\r\n\r\n"), None);
        assert_eq!(location(b"HTTP/1.1 200 OK\r\n\r\n"), None);
        assert_eq!(location(b"\xff\xfe"), None);
    }

    #[test]
    fn no_interface_is_not_applicable() {
        let now = Instant::now();
        let e = search(&[], SocketAddr::from(SSDP_MULTICAST), now, now).unwrap_err();
        assert!(matches!(e, UpnpError::NotApplicable(_)));
    }
}
