//! [`StunServer`]: answers STUN Binding requests (RFC 8489) over UDP and TCP, with RFC 5780's
//! OTHER-ADDRESS, RESPONSE-ORIGIN and CHANGE-REQUEST when given a second address. Another
//! protocol can share its ports ([`OtherProtocol`]): STUN messages are told apart by their
//! first two bits and magic cookie, and everything else goes to the other protocol.
//!
//! With an alternate address the server binds four sockets (of each transport): primary IP and
//! alternate IP, each at the primary port and at the primary port + 1. A request received on
//! one socket is answered from the socket whose IP and/or port differ as CHANGE-REQUEST asks.

use std::io::{self, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread;

use natt_core::server_loop::{TcpLimits, Worker, accept_loop, recv_loop};

use natt_core::bytes::Writer;

use crate::message::{
    MAGIC_COOKIE, MAX_MESSAGE_LEN, STREAM_FRAMER, bare_binding_request, decode_request, encode_error, encode_success,
    looks_like_stun, write_success,
};

// The bounds on TCP clients: at most MAX_TCP_CLIENTS at once, at most
// MAX_TCP_CLIENTS_PER_SOURCE of them from one source, and TCP_DEADLINE for a whole connection
// (all its requests and answers).
pub use natt_core::server_loop::{MAX_TCP_CLIENTS, MAX_TCP_CLIENTS_PER_SOURCE, TCP_DEADLINE};
/// The most requests answered on one TCP connection (within its [`TCP_DEADLINE`]).
pub const MAX_REQUESTS_PER_CONNECTION: usize = 16;
/// The most threads receiving on one UDP socket.
pub const MAX_UDP_THREADS: usize = 4;
/// The receive buffer asked for each UDP socket.
pub const RECV_BUFFER_BYTES: usize = 4 << 20;
/// Bytes read to tell STUN from another protocol on a stream.
pub const STREAM_HEAD_LEN: usize = 8;

/// A protocol sharing the STUN server's ports.
pub trait OtherProtocol: Send + Sync {
    /// The answer to a datagram that is not STUN, if any.
    fn answer_datagram(&self, from: SocketAddr, data: &[u8]) -> Option<Vec<u8>>;
    /// Serves a stream whose first [`STREAM_HEAD_LEN`] bytes, `head`, are not STUN.
    fn serve_stream(&self, head: [u8; STREAM_HEAD_LEN], stream: &mut TcpStream) -> io::Result<()>;
}

/// Errors starting a server.
#[derive(thiserror::Error)]
#[non_exhaustive]
pub enum ServerError {
    /// Binding a socket failed.
    #[error("cannot serve on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: io::Error,
    },
    /// The addresses given cannot make an RFC 5780 server.
    #[error("bad server addresses: {0}")]
    Addresses(String),
    /// Starting a serving thread failed.
    #[error("cannot start a server thread: {0}")]
    Thread(io::Error),
}

natt_core::debug_as_display!(ServerError);

/// The STUN server's view of its sockets: where each is, and which answers for which.
#[derive(Debug, Clone)]
struct Layout {
    /// Socket addresses, index `ip * 2 + port` (0 = primary, 1 = alternate).
    addrs: Vec<SocketAddr>,
}

impl Layout {
    fn rfc5780(&self) -> bool {
        self.addrs.len() == 4
    }

    /// The socket that answers a request received on `on` with CHANGE-REQUEST `(ip, port)`.
    fn answer_from(&self, on: usize, change_ip: bool, change_port: bool) -> usize {
        on ^ (usize::from(change_ip) << 1) ^ usize::from(change_port)
    }

    /// OTHER-ADDRESS for socket `on`: the one differing in both address and port.
    fn other(&self, on: usize) -> Option<SocketAddr> {
        self.rfc5780().then(|| self.addrs.get(on ^ 3).copied()).flatten()
    }
}

/// An answer: which socket sends it, where to, and what.
type Answer = (usize, SocketAddr, Vec<u8>);

/// The answer to a datagram received on socket `on`, if any. On a `stream` the answer always
/// goes back on the connection, so CHANGE-REQUEST cannot be honoured there and is refused as
/// RFC 5780 section 7.2 allows; OTHER-ADDRESS is still given (the TCP mapping tests need it).
fn answer(
    layout: &Layout,
    on: usize,
    from: SocketAddr,
    data: &[u8],
    other: Option<&dyn OtherProtocol>,
    stream: bool,
) -> Option<Answer> {
    if !looks_like_stun(data) {
        return other.and_then(|o| o.answer_datagram(from, data)).map(|r| (on, from, r));
    }
    let request = match decode_request(data) {
        Ok(r) => r,
        Err(e) => {
            log::trace!("no answer to {from}: {e}");
            return None;
        }
    };
    let mut unknown = request.unknown_required.clone();
    if (request.change_ip || request.change_port) && (stream || !layout.rfc5780()) {
        unknown.push(0x0003);
    }
    if !unknown.is_empty() {
        return encode_error(request.txid, 420, "Unknown Attribute", &unknown)
            .ok()
            .map(|r| (on, from, r));
    }
    let via = layout.answer_from(on, request.change_ip, request.change_port);
    let origin = layout.rfc5780().then(|| layout.addrs.get(via).copied()).flatten();
    // RESPONSE-PORT may only move the answer to another port of the client's own address.
    let to = SocketAddr::new(from.ip(), request.response_port.unwrap_or(from.port()));
    encode_success(request.txid, from, layout.other(on), origin)
        .ok()
        .map(|r| (via, to, r))
}

/// The server's answer to a STUN datagram, without sockets: what [`StunServer`] sends when
/// `data` arrives from `from` on its socket `on`, an index into `addrs`: the server's socket
/// addresses, one (a plain server) or four (RFC 5780: index `ip * 2 + port`, 0 the primary
/// address and port, 1 the alternate). `stream` for a request on a TCP connection. Returns the
/// index of the socket that answers, where to, and the answer's bytes; `None` for anything the
/// server leaves unanswered. Public so that fuzzers and tests reach the real code.
///
/// ```
/// use natt_stun::message::{decode_response, encode_binding_request};
///
/// let server = "203.0.113.10:3478".parse().unwrap();
/// let client = "198.51.100.7:40000".parse().unwrap();
/// let request = encode_binding_request([7; 12], None).unwrap();
/// let (via, to, bytes) = natt_stun::server::answer_datagram(&[server], 0, client, &request, false).unwrap();
/// assert_eq!((via, to), (0, client));
/// assert_eq!(decode_response(&bytes).unwrap().result.unwrap().mapped, client);
/// ```
pub fn answer_datagram(
    addrs: &[SocketAddr],
    on: usize,
    from: SocketAddr,
    data: &[u8],
    stream: bool,
) -> Option<(usize, SocketAddr, Vec<u8>)> {
    let layout = Layout { addrs: addrs.to_vec() };
    let mut out = Writer::new();
    answer_into(&layout, on, from, data, None, stream, &mut out).map(|(via, to)| (via, to, out.into_vec()))
}

/// [`answer`], written into `out` (cleared first): which socket sends it and where to. A
/// Binding request that is its header alone, nearly every client's, is answered without
/// decoding (the same bytes as [`answer`]'s, [`write_success`]), so that a server thread that
/// reuses `out` allocates nothing for it; anything else goes through the full decoder.
fn answer_into(
    layout: &Layout,
    on: usize,
    from: SocketAddr,
    data: &[u8],
    other: Option<&dyn OtherProtocol>,
    stream: bool,
    out: &mut Writer,
) -> Option<(usize, SocketAddr)> {
    if let Some(txid) = bare_binding_request(data) {
        let origin = layout.rfc5780().then(|| layout.addrs.get(on).copied()).flatten();
        write_success(out, txid, from, layout.other(on), origin);
        return Some((on, from));
    }
    let (via, to, bytes) = answer(layout, on, from, data, other, stream)?;
    out.clear().bytes(&bytes);
    Some((via, to))
}

/// A STUN server on background threads, serving until dropped.
///
#[cfg_attr(not(doctest), doc = include_str!("../doc/stun_server.md"))]
#[derive(Debug)]
pub struct StunServer {
    layout: Layout,
    answered: Arc<AtomicU64>,
    workers: Vec<Worker>,
}

/// How many port numbers [`StunServer::bind`] tries when asked for port 0.
pub const PORT_0_ATTEMPTS: u32 = 8;

impl StunServer {
    /// A server at `primary`; with `alternate`, an RFC 5780 server on both addresses and on
    /// ports `primary.port()` and `primary.port() + 1`. `other` answers what is not STUN.
    ///
    /// With port 0 the system picks the UDP port, and TCP (and the alternate ports) must take
    /// the same numbers; if another socket holds one of them, another port is picked (up to
    /// [`PORT_0_ATTEMPTS`] times).
    pub fn bind(
        primary: SocketAddr,
        alternate: Option<IpAddr>,
        other: Option<Arc<dyn OtherProtocol>>,
    ) -> Result<Self, ServerError> {
        let mut attempt = 1;
        loop {
            match Self::bind_once(primary, alternate, other.clone()) {
                Err(ServerError::Bind { source, .. })
                    if primary.port() == 0
                        && source.kind() == std::io::ErrorKind::AddrInUse
                        && attempt < PORT_0_ATTEMPTS =>
                {
                    attempt += 1;
                }
                other => return other,
            }
        }
    }

    fn bind_once(
        primary: SocketAddr,
        alternate: Option<IpAddr>,
        other: Option<Arc<dyn OtherProtocol>>,
    ) -> Result<Self, ServerError> {
        // Each serving thread has a socket of its own on its address (SO_REUSEPORT: the kernel
        // spreads the clients over them, and no two threads wait on one socket). `sibling`:
        // another socket of an address already bound by this server; the first one of an
        // address is bound plainly first, so that an address another program holds (even with
        // SO_REUSEPORT) is refused as taken, not shared.
        let bind_udp = |addr: SocketAddr, sibling: bool| {
            let err = |source| ServerError::Bind { addr, source };
            if !sibling && addr.port() != 0 {
                drop(UdpSocket::bind(addr).map_err(err)?);
            }
            let socket = socket2::Socket::new(
                socket2::Domain::for_address(addr),
                socket2::Type::DGRAM,
                Some(socket2::Protocol::UDP),
            )
            .map_err(err)?;
            socket.set_reuse_port(true).map_err(err)?;
            // Bursts from many clients overflow the default receive buffer (about 200 KiB) long
            // before the CPU is busy; the kernel caps this at net.core.rmem_max.
            if let Err(e) = socket.set_recv_buffer_size(RECV_BUFFER_BYTES) {
                log::debug!("cannot enlarge the receive buffer of {addr}: {e}");
            }
            socket.bind(&addr.into()).map_err(err)?;
            Ok::<UdpSocket, ServerError>(socket.into())
        };
        let first = bind_udp(primary, false)?;
        let primary = first
            .local_addr()
            .map_err(|source| ServerError::Bind { addr: primary, source })?;
        let mut udp = vec![first];
        if let Some(alt) = alternate {
            if alt.is_ipv4() != primary.is_ipv4() || alt == primary.ip() {
                return Err(ServerError::Addresses(format!(
                    "{alt} must be another address of {primary}'s family"
                )));
            }
            let alt_port = primary
                .port()
                .checked_add(1)
                .ok_or_else(|| ServerError::Addresses("no port above the primary port".into()))?;
            for addr in [(primary.ip(), alt_port), (alt, primary.port()), (alt, alt_port)] {
                udp.push(bind_udp(addr.into(), false)?);
            }
        }
        let layout = Layout {
            addrs: udp.iter().filter_map(|s| s.local_addr().ok()).collect(),
        };
        if layout.addrs.len() != udp.len() {
            return Err(ServerError::Addresses("a socket has no local address".into()));
        }
        let answered = Arc::new(AtomicU64::new(0));
        // Several threads receive on each address, each on a socket of its own (the kernel
        // hands each client's datagrams to one of them), so answering uses every core.
        let threads = thread::available_parallelism().map_or(1, |n| n.get().min(MAX_UDP_THREADS));
        let mut own: Vec<Vec<UdpSocket>> = Vec::new();
        for &addr in &layout.addrs {
            own.push((1..threads).map(|_| bind_udp(addr, true)).collect::<Result<_, _>>()?);
        }
        // An answer from the address a request came to goes out on the socket that received
        // it (each thread its own); one from another address (RFC 5780's CHANGE-REQUEST), on
        // the first socket of that address.
        let udp = Arc::new(udp);
        let mut workers = Vec::new();
        for ((on, &addr), siblings) in layout.addrs.iter().enumerate().zip(own) {
            let mut siblings = siblings.into_iter();
            for _ in 0..threads {
                let (udp, layout_c, other_c, count) =
                    (Arc::clone(&udp), layout.clone(), other.clone(), Arc::clone(&answered));
                let sibling = siblings.next();
                workers.push(
                    Worker::spawn("natt-stun-udp", Some(addr), false, move |stop| {
                        let Some(socket) = sibling.as_ref().or(udp.get(on)) else {
                            return;
                        };
                        // One answer buffer per thread, reused: no allocation per request.
                        let mut reply = Writer::with_capacity(MAX_MESSAGE_LEN);
                        recv_loop(socket, &stop, MAX_MESSAGE_LEN, |from, data| {
                            let answered =
                                answer_into(&layout_c, on, from, data, other_c.as_deref(), false, &mut reply);
                            if let Some((via, to)) = answered {
                                count.fetch_add(1, Ordering::Relaxed);
                                let sock = if via == on {
                                    socket
                                } else {
                                    udp.get(via).unwrap_or(socket)
                                };
                                let to_sock = natt_core::family::for_socket(addr, to);
                                if let Err(e) = sock.send_to(reply.as_slice(), to_sock) {
                                    log::debug!("reply to {to} failed: {e}");
                                }
                            }
                        })
                    })
                    .map_err(ServerError::Thread)?,
                );
            }
            let listener = TcpListener::bind(addr).map_err(|source| ServerError::Bind { addr, source })?;
            let (layout_c, other_c, count) = (layout.clone(), other.clone(), Arc::clone(&answered));
            workers.push(
                Worker::spawn("natt-stun-tcp", Some(addr), true, move |stop| {
                    accept_loop(&listener, &stop, TcpLimits::default(), move |stream| {
                        if let Err(e) = serve_stream(stream, &layout_c, on, other_c.as_deref(), &count) {
                            log::debug!("TCP client: {e}");
                        }
                    })
                })
                .map_err(ServerError::Thread)?,
            );
        }
        log::info!("STUN: serving on {:?}", layout.addrs);
        Ok(StunServer {
            layout,
            answered,
            workers,
        })
    }

    /// The addresses served (UDP and TCP alike): the primary first, then, for an RFC 5780
    /// server, primary IP at the alternate port, alternate IP at the primary port, and
    /// alternate IP at the alternate port.
    pub fn udp_addresses(&self) -> Vec<SocketAddr> {
        self.layout.addrs.clone()
    }

    /// True when the server answers RFC 5780 requests (it has two addresses).
    pub fn rfc5780(&self) -> bool {
        self.layout.rfc5780()
    }

    /// Answers sent (STUN and other protocol).
    pub fn answered(&self) -> u64 {
        self.answered.load(Ordering::Relaxed)
    }
}

impl Drop for StunServer {
    fn drop(&mut self) {
        for w in &mut self.workers {
            w.signal();
        }
        for w in &mut self.workers {
            w.stop();
        }
        log::info!("STUN: stopped on {:?}", self.layout.addrs);
    }
}

/// Serves one TCP connection: STUN requests back to back, or hands it to the other protocol.
/// `accept_loop` has set its timeouts and shuts it down at its deadline.
fn serve_stream(
    mut stream: TcpStream,
    layout: &Layout,
    on: usize,
    other: Option<&dyn OtherProtocol>,
    answered: &AtomicU64,
) -> io::Result<()> {
    let from = natt_core::family::peer_addr(&stream)?;
    for _ in 0..MAX_REQUESTS_PER_CONNECTION {
        let mut head = [0u8; STREAM_HEAD_LEN];
        match stream.read_exact(&mut head) {
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(()),
            r => r?,
        }
        let is_stun = head.first().is_some_and(|b| b & 0xC0 == 0) && head.get(4..8) == Some(&MAGIC_COOKIE[..]);
        if !is_stun {
            return match other {
                Some(o) => {
                    o.serve_stream(head, &mut stream)?;
                    answered.fetch_add(1, Ordering::Relaxed);
                    Ok(())
                }
                None => Err(io::Error::new(io::ErrorKind::InvalidData, "not STUN")),
            };
        }
        let msg = STREAM_FRAMER.read_after(&head, &mut stream)?;
        match answer(layout, on, from, &msg, None, true) {
            Some((_, _, reply)) => {
                answered.fetch_add(1, Ordering::Relaxed);
                stream.write_all(&reply)?;
            }
            None => {
                return Err(io::Error::new(io::ErrorKind::InvalidData, "not a Binding request"));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::{decode_response, encode_binding_request};

    fn layout() -> Layout {
        Layout {
            addrs: [
                "203.0.113.20:3478",
                "203.0.113.20:3479",
                "203.0.113.21:3478",
                "203.0.113.21:3479",
            ]
            .iter()
            .map(|s| s.parse().unwrap())
            .collect(),
        }
    }

    #[test]
    fn change_request_picks_the_socket() {
        let l = layout();
        let from: SocketAddr = "198.51.100.1:4000".parse().unwrap();
        for (change, via) in [
            (None, 0),
            (Some((false, true)), 1),
            (Some((true, false)), 2),
            (Some((true, true)), 3),
        ] {
            let req = encode_binding_request([1; 12], change).unwrap();
            let (v, to, bytes) = answer(&l, 0, from, &req, None, false).unwrap();
            assert_eq!(to, from);
            assert_eq!(v, via, "{change:?}");
            let r = decode_response(&bytes).unwrap().result.unwrap();
            assert_eq!(r.mapped, from);
            assert_eq!(r.other_address, Some(l.addrs[3]));
            assert_eq!(r.response_origin, Some(l.addrs[via]));
        }
        // Received on the alternate IP's socket: OTHER-ADDRESS is the primary one.
        let req = encode_binding_request([1; 12], None).unwrap();
        let (_, _, bytes) = answer(&l, 3, from, &req, None, false).unwrap();
        assert_eq!(
            decode_response(&bytes).unwrap().result.unwrap().other_address,
            Some(l.addrs[0])
        );
    }

    #[test]
    fn single_address_refuses_change_request() {
        let l = Layout {
            addrs: vec!["203.0.113.20:3478".parse().unwrap()],
        };
        let from = "198.51.100.1:4000".parse().unwrap();
        let req = encode_binding_request([1; 12], Some((true, true))).unwrap();
        let (via, _, bytes) = answer(&l, 0, from, &req, None, false).unwrap();
        assert_eq!(via, 0);
        assert_eq!(decode_response(&bytes).unwrap().result.unwrap_err().0, 420);
        let plain = encode_binding_request([1; 12], None).unwrap();
        let (_, _, bytes) = answer(&l, 0, from, &plain, None, false).unwrap();
        let ok = decode_response(&bytes).unwrap().result.unwrap();
        assert_eq!((ok.other_address, ok.response_origin), (None, None));
    }

    #[test]
    fn streams_name_the_other_address_but_refuse_change_request() {
        let l = layout();
        let from = "198.51.100.1:4000".parse().unwrap();
        let plain = encode_binding_request([1; 12], None).unwrap();
        let (via, _, bytes) = answer(&l, 2, from, &plain, None, true).unwrap();
        let ok = decode_response(&bytes).unwrap().result.unwrap();
        assert_eq!(via, 2);
        assert_eq!(
            (ok.other_address, ok.response_origin),
            (Some(l.addrs[1]), Some(l.addrs[2]))
        );
        let change = encode_binding_request([1; 12], Some((true, true))).unwrap();
        let (via, _, bytes) = answer(&l, 0, from, &change, None, true).unwrap();
        assert_eq!(via, 0);
        assert_eq!(decode_response(&bytes).unwrap().result.unwrap_err().0, 420);
    }

    #[test]
    fn response_port_moves_the_answer_on_the_clients_address() {
        let l = layout();
        let from: SocketAddr = "198.51.100.1:4000".parse().unwrap();
        let mut req = encode_binding_request([1; 12], None).unwrap();
        // RESPONSE-PORT 4001.
        req.extend_from_slice(&[0x00, 0x27, 0x00, 0x04, 0x0f, 0xa1, 0, 0]);
        req[3] = 8;
        let (_, to, _) = answer(&l, 0, from, &req, None, false).unwrap();
        assert_eq!(to, "198.51.100.1:4001".parse::<SocketAddr>().unwrap());
    }

    #[test]
    fn responses_and_garbage_get_no_answer() {
        let l = layout();
        let from = "198.51.100.1:4000".parse().unwrap();
        let resp = encode_success([1; 12], from, None, None).unwrap();
        assert!(answer(&l, 0, from, &resp, None, false).is_none());
        assert!(answer(&l, 0, from, b"hello", None, false).is_none());
        assert!(answer(&l, 0, from, &[0u8; 20], None, false).is_none());
    }
}
