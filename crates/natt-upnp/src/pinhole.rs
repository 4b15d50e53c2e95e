//! IPv6 pinholes on a UPnP IGD:2 gateway (`WANIPv6FirewallControl:1`): `GetFirewallStatus`,
//! `AddPinhole`, `UpdatePinhole`, `DeletePinhole`, and [`PinholeLease`], a pinhole renewed at
//! half its lease while held and deleted on release and on drop (natt-core's [`Keeper`], as
//! port mappings are).
//!
//! An IPv6 host has no NAT in front of it, only its router's stateful firewall: a pinhole lets
//! the internet in to one port of the host's own IPv6 address. Gateways only open a pinhole
//! for the host that asks (miniupnpd answers 606 "Action not authorized" unless the request
//! comes from the pinhole's internal address), so the SOAP request goes out over a TCP
//! connection whose source is bound to that address. `attohttpc` cannot bind a source, hence
//! the small HTTP/1.1 exchange here: one `POST` with `Connection: close`, the answer read to
//! its end, bounded by [`MAX_RESPONSE_BYTES`] and the deadline, and parsed by
//! [`parse_http_response`] (pure, fuzzed: `upnp_http`); the SOAP body by [`crate::soap`].

use std::io::{self, Read, Write};
use std::net::{Ipv6Addr, SocketAddr, SocketAddrV6, TcpStream};
use std::time::{Duration, Instant};

use natt_core::arbiter::{ClaimGuard, HeldClaim};
use natt_core::deadline;
use natt_core::lease::{Keeper, KeeperNames, Renewable, Renewal, Stop};
use natt_core::{Lease, Protocol};
use socket2::{Domain, Socket, Type};

use crate::description::FIREWALL_SERVICE;
use crate::error::UpnpError;
use crate::soap::{self, MAX_SOAP_BYTES, SoapError};

/// The longest HTTP header block natt reads from a gateway.
pub const MAX_HEADER_BYTES: usize = 8 * 1024;
/// The most bytes natt reads of an answer: its headers and a SOAP body.
pub const MAX_RESPONSE_BYTES: usize = MAX_HEADER_BYTES + MAX_SOAP_BYTES;
/// The longest pinhole lease the service takes (`LeaseTime`: 1 to 86400 s).
pub const MAX_PINHOLE_LEASE_SECS: u32 = 86_400;
/// Reads of the answer wait this long at most at a time (so the deadline is kept).
const SLICE: Duration = Duration::from_millis(50);

/// The status code and body of an HTTP/1.x answer, `bytes` being all of it (the connection
/// closed after it); why not, for anything else. A body is cut to its `Content-Length`; a
/// chunked one is refused (gateways answer SOAP with a length).
///
/// ```
/// let (status, body) = natt_upnp::pinhole::parse_http_response(
///     b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokEXTRA",
/// )
/// .unwrap();
/// assert_eq!((status, body), (200, &b"ok"[..]));
/// assert!(natt_upnp::pinhole::parse_http_response(b"HTTP/1.1 200 OK\r\n").is_err());
/// ```
pub fn parse_http_response(bytes: &[u8]) -> Result<(u16, &[u8]), &'static str> {
    let end = bytes
        .windows(4)
        .take(MAX_HEADER_BYTES)
        .position(|w| w == b"\r\n\r\n")
        .ok_or("no end of the headers")?;
    let head = bytes.get(..end).ok_or("no headers")?;
    let head = std::str::from_utf8(head).map_err(|_| "headers not UTF-8")?;
    let mut lines = head.split("\r\n");
    let mut status_line = lines.next().unwrap_or_default().splitn(3, ' ');
    if !status_line.next().is_some_and(|v| v.starts_with("HTTP/1.")) {
        return Err("not an HTTP/1.x answer");
    }
    let status = status_line
        .next()
        .filter(|c| c.len() == 3 && c.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|c| c.parse::<u16>().ok())
        .filter(|c| (100..=599).contains(c))
        .ok_or("bad status code")?;
    let mut length = None;
    for line in lines {
        let (name, value) = line.split_once(':').ok_or("a header line without a colon")?;
        if name.trim().eq_ignore_ascii_case("content-length") {
            let n = value.trim().parse::<usize>().map_err(|_| "bad Content-Length")?;
            if length.is_some_and(|l| l != n) {
                return Err("two different Content-Lengths");
            }
            length = Some(n);
        } else if name.trim().eq_ignore_ascii_case("transfer-encoding")
            && !value.trim().eq_ignore_ascii_case("identity")
        {
            return Err("a transfer-encoded body");
        }
    }
    let body = bytes.get(end + 4..).unwrap_or_default();
    match length {
        Some(n) => Ok((status, body.get(..n).ok_or("a body shorter than its Content-Length")?)),
        None => Ok((status, body)),
    }
}

/// The protocol number `AddPinhole` takes.
fn protocol_number(p: Protocol) -> &'static str {
    match p {
        Protocol::Udp => "17",
        Protocol::Tcp => "6",
    }
}

/// A gateway's IPv6 firewall control service, reached at `control` (the gateway's IPv6
/// address and HTTP port) and `path`, from `client` (this host's IPv6 address toward it).
#[derive(Debug, Clone)]
pub struct Firewall {
    control: SocketAddrV6,
    path: String,
    client: Ipv6Addr,
}

/// What `GetFirewallStatus` says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FirewallStatus {
    /// The firewall is on (off: the host is open anyway).
    pub enabled: bool,
    /// Pinholes may be opened.
    pub inbound_pinhole_allowed: bool,
}

impl Firewall {
    /// The service at `control` + `path` (a path, `/ctl/IP6FCtl`), asked from `client`.
    pub fn new(control: SocketAddrV6, path: &str, client: Ipv6Addr) -> Firewall {
        Firewall {
            control,
            path: path.to_owned(),
            client,
        }
    }

    /// This host's address the pinholes are for.
    pub fn client(&self) -> Ipv6Addr {
        self.client
    }

    fn url(&self) -> String {
        format!("http://{}{}", self.control, self.path)
    }

    /// Sends `action` with `args`, from [`client`](Self::client), by `deadline`: the answer's
    /// output arguments; a UPnP fault is [`UpnpError::Refused`].
    fn call(&self, action: &str, args: &[(&str, &str)], deadline: Instant) -> Result<soap::Response, UpnpError> {
        let what = format!("{action} at {}", self.url());
        let body = soap::encode_request(FIREWALL_SERVICE, action, args);
        let head = format!(
            "POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: text/xml; charset=\"utf-8\"\r\n\
             SOAPAction: {soap_action}\r\nContent-Length: {len}\r\nConnection: close\r\n\r\n",
            path = self.path,
            host = self.control,
            soap_action = soap::soap_action(FIREWALL_SERVICE, action),
            len = body.len(),
        );
        let answer = self.exchange(head.as_bytes(), &body, deadline).map_err(|e| {
            if e.kind() == io::ErrorKind::TimedOut {
                UpnpError::timed_out(&what)
            } else {
                UpnpError::io(&what, e)
            }
        })?;
        if answer.len() > MAX_RESPONSE_BYTES {
            return Err(UpnpError::TooLarge {
                what,
                limit: MAX_RESPONSE_BYTES,
            });
        }
        let (status, body) = parse_http_response(&answer).map_err(|why| UpnpError::malformed(&what, why))?;
        // 200 (the action's response) or 500 (a fault); anything else is no answer.
        if status != 200 && status != 500 {
            return Err(UpnpError::HttpStatus { what, status });
        }
        soap::parse_response(action, body).map_err(|e| match e {
            SoapError::Fault { code, description } => UpnpError::Refused {
                action: action.to_owned(),
                code,
                description,
            },
            SoapError::TooLarge { limit } => UpnpError::TooLarge { what, limit },
            e => UpnpError::malformed(what, e.to_string()),
        })
    }

    /// One HTTP exchange from `client`: the whole answer (at most [`MAX_RESPONSE_BYTES`] + 1
    /// bytes), by `deadline`.
    fn exchange(&self, head: &[u8], body: &[u8], deadline: Instant) -> io::Result<Vec<u8>> {
        let timed_out = || io::Error::from(io::ErrorKind::TimedOut);
        let socket = Socket::new(Domain::IPV6, Type::STREAM, Some(socket2::Protocol::TCP))?;
        socket.bind(&SocketAddr::from((self.client, 0)).into())?;
        let left = deadline::remaining(deadline).ok_or_else(timed_out)?;
        socket.connect_timeout(&SocketAddr::V6(self.control).into(), left)?;
        let mut stream: TcpStream = socket.into();
        stream.set_write_timeout(Some(deadline::remaining(deadline).ok_or_else(timed_out)?))?;
        // One write: the body as a second small segment would wait for the gateway's delayed
        // ACK of the first (Nagle), some 40 ms.
        stream.set_nodelay(true)?;
        let mut request = Vec::with_capacity(head.len() + body.len());
        request.extend_from_slice(head);
        request.extend_from_slice(body);
        stream.write_all(&request)?;
        let mut answer = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            let left = deadline::remaining(deadline).ok_or_else(timed_out)?;
            stream.set_read_timeout(Some(left.min(SLICE)))?;
            match stream.read(&mut buf) {
                Ok(0) => return Ok(answer),
                Ok(n) => {
                    answer.extend_from_slice(buf.get(..n).unwrap_or_default());
                    if answer.len() > MAX_RESPONSE_BYTES {
                        return Ok(answer);
                    }
                }
                Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }

    /// `GetFirewallStatus`.
    pub fn status(&self, deadline: Instant) -> Result<FirewallStatus, UpnpError> {
        let r = self.call("GetFirewallStatus", &[], deadline)?;
        let flag = |name: &str| matches!(r.get(name).map(str::trim), Some("1" | "true" | "yes"));
        Ok(FirewallStatus {
            enabled: flag("FirewallEnabled"),
            inbound_pinhole_allowed: flag("InboundPinholeAllowed"),
        })
    }

    /// `AddPinhole`: lets anyone in to `protocol` port `port` of [`client`](Self::client) for
    /// `lease_secs` (1 to [`MAX_PINHOLE_LEASE_SECS`]); the pinhole's `UniqueID`.
    pub fn add(&self, protocol: Protocol, port: u16, lease_secs: u32, deadline: Instant) -> Result<u16, UpnpError> {
        let (client, port, lease) = (
            self.client.to_string(),
            port.to_string(),
            lease_secs.clamp(1, MAX_PINHOLE_LEASE_SECS).to_string(),
        );
        let args = [
            ("RemoteHost", ""),
            ("RemotePort", "0"),
            ("InternalClient", client.as_str()),
            ("InternalPort", port.as_str()),
            ("Protocol", protocol_number(protocol)),
            ("LeaseTime", lease.as_str()),
        ];
        let r = self.call("AddPinhole", &args, deadline)?;
        let id = r.get("UniqueID").unwrap_or_default();
        id.trim().parse().map_err(|_| {
            UpnpError::malformed(
                format!("AddPinhole at {}", self.url()),
                format!("unusable UniqueID '{}'", crate::error::shorten(id, 20)),
            )
        })
    }

    /// `UpdatePinhole`: a new lease for pinhole `id`.
    pub fn update(&self, id: u16, lease_secs: u32, deadline: Instant) -> Result<(), UpnpError> {
        let (id, lease) = (id.to_string(), lease_secs.clamp(1, MAX_PINHOLE_LEASE_SECS).to_string());
        self.call(
            "UpdatePinhole",
            &[("UniqueID", id.as_str()), ("NewLeaseTime", lease.as_str())],
            deadline,
        )
        .map(drop)
    }

    /// `DeletePinhole`.
    pub fn delete(&self, id: u16, deadline: Instant) -> Result<(), UpnpError> {
        let id = id.to_string();
        self.call("DeletePinhole", &[("UniqueID", id.as_str())], deadline)
            .map(drop)
    }
}

const NAMES: KeeperNames = KeeperNames {
    thread: "natt-upnp-pinhole",
    log_target: module_path!(),
    log_prefix: "upnp",
};

/// An IPv6 pinhole held on a gateway: its own thread renews it (`UpdatePinhole`) at half its
/// lease, and deletes it (`DeletePinhole`) when the lease is released or dropped.
pub struct PinholeLease {
    describe: String,
    keeper: Keeper,
    /// How long waiting for a release takes at most (a renewal, then the deletion).
    release_wait: Duration,
}

/// What the lease's thread holds.
struct Held {
    firewall: Firewall,
    id: u16,
    protocol: Protocol,
    port: u16,
    lease_secs: u32,
    call_timeout: Duration,
    /// The port's claim with the other port-mapping techniques (PCP opens pinholes too),
    /// freed once the pinhole is deleted (when this is dropped, after [`Renewable::delete`]).
    _claim: Option<HeldClaim>,
}

impl Held {
    fn describe(&self) -> String {
        format!(
            "upnp pinhole {} [{}]:{} (id {}) via {}",
            self.protocol,
            self.firewall.client,
            self.port,
            self.id,
            self.firewall.url()
        )
    }
}

impl Renewable for Held {
    type Error = UpnpError;

    fn describe(&self) -> String {
        Held::describe(self)
    }

    fn renew(&mut self, _stop: &Stop) -> Renewal<UpnpError> {
        match self
            .firewall
            .update(self.id, self.lease_secs, Instant::now() + self.call_timeout)
        {
            Ok(()) => Renewal::Renewed(Duration::from_secs(u64::from(self.lease_secs))),
            Err(e) => Renewal::Failed(e),
        }
    }

    fn delete(self) -> bool {
        match self.firewall.delete(self.id, Instant::now() + self.call_timeout) {
            Ok(()) => true,
            Err(e) => {
                log::info!("upnp: deleting {}: {e}", Held::describe(&self));
                false
            }
        }
    }
}

impl PinholeLease {
    /// Opens a pinhole for `protocol` port `port` of the firewall's client for `lease_secs`,
    /// each call taking at most `call_timeout` (the first by `deadline` too), and starts
    /// keeping it; `claim`, the port's claim with the other port-mapping techniques, is held
    /// until the pinhole is deleted.
    pub fn open(
        firewall: Firewall,
        (protocol, port): (Protocol, u16),
        lease_secs: u32,
        call_timeout: Duration,
        deadline: Instant,
        claim: Option<ClaimGuard>,
    ) -> Result<PinholeLease, UpnpError> {
        let lease_secs = lease_secs.clamp(1, MAX_PINHOLE_LEASE_SECS);
        let id = firewall.add(protocol, port, lease_secs, deadline.min(Instant::now() + call_timeout))?;
        let held = Held {
            firewall,
            id,
            protocol,
            port,
            lease_secs,
            call_timeout,
            _claim: claim.map(ClaimGuard::mapped),
        };
        let describe = held.describe();
        log::debug!("upnp: opened {describe}");
        let lifetime = Some(Duration::from_secs(u64::from(lease_secs)));
        let keeper = Keeper::spawn(held, lifetime, Duration::ZERO, NAMES).map_err(|e| UpnpError::Io {
            what: "starting the pinhole's lease thread".into(),
            source: e,
        })?;
        Ok(PinholeLease {
            describe,
            keeper,
            release_wait: call_timeout * 2,
        })
    }
}

impl Lease for PinholeLease {
    fn describe(&self) -> String {
        self.describe.clone()
    }

    fn start_release(&mut self) {
        self.keeper.start_release();
    }

    fn wait_released(&mut self) {
        let _ = self.keeper.wait_for(self.release_wait);
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn answers_parse_and_bad_ones_are_refused() {
        let ok = b"HTTP/1.1 500 Internal Server Error\r\ncontent-length: 3\r\nServer: x\r\n\r\nabcdef";
        assert_eq!(parse_http_response(ok), Ok((500, &b"abc"[..])));
        let no_length = b"HTTP/1.0 200 OK\r\n\r\n<a/>";
        assert_eq!(parse_http_response(no_length), Ok((200, &b"<a/>"[..])));
        for bad in [
            &b""[..],
            b"HTTP/1.1 200 OK\r\n",
            b"SIP/2.0 200 OK\r\n\r\n",
            b"HTTP/1.1 2000 OK\r\n\r\n",
            b"HTTP/1.1 +20 OK\r\n\r\n",
            b"HTTP/1.1 049 OK\r\n\r\n",
            b"HTTP/1.1 600 OK\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nshort",
            b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nno colon\r\n\r\n",
            b"HTTP/1.1 200 OK\r\n\xff: x\r\n\r\n",
        ] {
            assert!(parse_http_response(bad).is_err(), "{:?}", String::from_utf8_lossy(bad));
        }
        // Headers longer than the limit are not looked through.
        let mut long = b"HTTP/1.1 200 OK\r\nX: ".to_vec();
        long.extend(std::iter::repeat_n(b'a', MAX_HEADER_BYTES));
        long.extend_from_slice(b"\r\n\r\n");
        assert!(parse_http_response(&long).is_err());
    }

    #[test]
    fn protocols_are_numbers() {
        assert_eq!(protocol_number(Protocol::Udp), "17");
        assert_eq!(protocol_number(Protocol::Tcp), "6");
    }
}
