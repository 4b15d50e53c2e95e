//! The server side: [`SimpleUdpHolePunchServer`] and [`SimpleTcpHolePunchServer`] answer
//! requests of the simple protocol with the address they came from, on a background thread
//! that serves until the server is dropped.

use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use natt_core::server_loop::{TcpLimits, Worker, accept_loop, recv_loop};
use natt_core::{MappedSocketAddr, MappedUdpSocket, MappingContext, PortMappings};

use crate::stream::read_message_after;
use crate::wire::{self, HEADER_LEN, Message, REQUEST_LEN, Reply};

pub use natt_core::server_loop::{MAX_TCP_CLIENTS, MAX_TCP_CLIENTS_PER_SOURCE, TCP_DEADLINE};

/// Errors starting a server.
#[derive(thiserror::Error)]
#[non_exhaustive]
pub enum ServerError {
    /// Binding or configuring the socket failed.
    #[error("cannot serve on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: io::Error,
    },
    /// Mapping the server's socket failed.
    #[error("cannot map the server's socket: {0}")]
    Map(#[from] natt_core::Error),
    /// Starting the serving thread failed.
    #[error("cannot start the server thread: {0}")]
    Thread(io::Error),
}

natt_core::debug_as_display!(ServerError);

/// A server of the simple hole-punch protocol over UDP. It serves on a background thread until
/// dropped; malformed requests get no reply and never disturb it.
///
#[cfg_attr(not(doctest), doc = include_str!("../doc/simple_udp_server.md"))]
#[derive(Debug)]
pub struct SimpleUdpHolePunchServer {
    local: SocketAddr,
    addresses: Vec<MappedSocketAddr>,
    answered: Arc<AtomicU64>,
    worker: Worker,
    _port_mappings: PortMappings,
}

impl SimpleUdpHolePunchServer {
    /// A server on an ephemeral port, mapped with `mc` so that [`addresses`](Self::addresses)
    /// tells peers where to reach it (port mappings are held while the server lives).
    pub fn new(mc: &MappingContext) -> Result<Self, ServerError> {
        let any = SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0));
        let socket = UdpSocket::bind(any).map_err(|source| ServerError::Bind { addr: any, source })?;
        let mapped = MappedUdpSocket::map(socket, mc)?;
        Self::start(mapped.socket, mapped.endpoints, mapped.port_mappings)
    }

    /// A server at `addr`, with its local addresses as [`addresses`](Self::addresses).
    pub fn bind(addr: SocketAddr) -> Result<Self, ServerError> {
        let socket = UdpSocket::bind(addr).map_err(|source| ServerError::Bind { addr, source })?;
        let local = socket
            .local_addr()
            .map_err(|source| ServerError::Bind { addr, source })?;
        Self::start(
            socket,
            natt_core::local::local_endpoints(local),
            PortMappings::default(),
        )
    }

    fn start(
        socket: UdpSocket,
        addresses: Vec<MappedSocketAddr>,
        port_mappings: PortMappings,
    ) -> Result<Self, ServerError> {
        let local = socket.local_addr().map_err(|source| ServerError::Bind {
            addr: SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0)),
            source,
        })?;
        let answered = Arc::new(AtomicU64::new(0));
        let count = Arc::clone(&answered);
        let worker = Worker::spawn("natt-simple-udp", Some(local), false, move |stop| {
            recv_loop(&socket, &stop, REQUEST_LEN, |from, data| {
                if let Some(reply) = wire::answer(from, data) {
                    count.fetch_add(1, Ordering::Relaxed);
                    if let Err(e) = socket.send_to(&reply, natt_core::family::for_socket(local, from)) {
                        log::debug!("reply to {from} failed: {e}");
                    }
                }
            })
        })
        .map_err(ServerError::Thread)?;
        log::info!("simple protocol: serving UDP on {local}");
        Ok(SimpleUdpHolePunchServer {
            local,
            addresses,
            answered,
            worker,
            _port_mappings: port_mappings,
        })
    }

    /// The addresses to share with peers.
    pub fn addresses(&self) -> Vec<MappedSocketAddr> {
        self.addresses.clone()
    }

    /// The address the server's socket is bound to.
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// How many valid requests the server has answered (counted before the reply is sent).
    pub fn answered(&self) -> u64 {
        self.answered.load(Ordering::Relaxed)
    }
}

impl Drop for SimpleUdpHolePunchServer {
    fn drop(&mut self) {
        self.worker.stop();
        log::info!("simple protocol: stopped UDP on {}", self.local);
    }
}

/// A server of the simple hole-punch protocol over TCP: it answers one request per connection
/// and closes it. At most [`MAX_TCP_CLIENTS`] are served at once, at most
/// [`MAX_TCP_CLIENTS_PER_SOURCE`] of them from one source, each for at most [`TCP_DEADLINE`]
/// from connection to reply.
///
#[cfg_attr(not(doctest), doc = include_str!("../doc/simple_tcp_server.md"))]
#[derive(Debug)]
pub struct SimpleTcpHolePunchServer {
    local: SocketAddr,
    answered: Arc<AtomicU64>,
    worker: Worker,
}

impl SimpleTcpHolePunchServer {
    /// A server listening at `addr`.
    pub fn bind(addr: SocketAddr) -> Result<Self, ServerError> {
        let bind_err = |source| ServerError::Bind { addr, source };
        let listener = TcpListener::bind(addr).map_err(bind_err)?;
        let local = listener.local_addr().map_err(bind_err)?;
        let answered = Arc::new(AtomicU64::new(0));
        let count = Arc::clone(&answered);
        let worker = Worker::spawn("natt-simple-tcp", Some(local), true, move |stop| {
            accept_loop(&listener, &stop, TcpLimits::default(), move |stream| {
                if let Err(e) = serve_tcp_client(stream, &count) {
                    log::debug!("TCP client: {e}");
                }
            })
        })
        .map_err(ServerError::Thread)?;
        log::info!("simple protocol: serving TCP on {local}");
        Ok(SimpleTcpHolePunchServer {
            local,
            answered,
            worker,
        })
    }

    /// The address the server listens at.
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// How many valid requests the server has answered (counted before the reply is sent).
    pub fn answered(&self) -> u64 {
        self.answered.load(Ordering::Relaxed)
    }
}

impl Drop for SimpleTcpHolePunchServer {
    fn drop(&mut self) {
        self.worker.stop();
        log::info!("simple protocol: stopped TCP on {}", self.local);
    }
}

/// Serves one connection, whose timeouts and deadline `accept_loop` has set.
fn serve_tcp_client(mut stream: TcpStream, answered: &AtomicU64) -> io::Result<()> {
    let mut head = [0u8; HEADER_LEN];
    stream.read_exact(&mut head)?;
    answer_stream(head, &mut stream, || {
        answered.fetch_add(1, Ordering::Relaxed);
    })
}

/// Answers the request whose first [`HEADER_LEN`] bytes, `head`, were already read from
/// `stream` (whose timeouts bound the wait); for servers that serve several protocols on one
/// port. `on_answer` is called once the request is known valid, before the reply is sent.
pub fn answer_stream(head: [u8; HEADER_LEN], stream: &mut TcpStream, on_answer: impl FnOnce()) -> io::Result<()> {
    let from = natt_core::family::peer_addr(stream)?;
    match read_message_after(head, stream)? {
        Message::Request(req) => {
            on_answer();
            stream.write_all(
                &Reply {
                    txid: req.txid,
                    observed: from,
                }
                .encode(),
            )
        }
        Message::Reply(_) => Err(io::Error::new(io::ErrorKind::InvalidData, "a reply sent to the server")),
    }
}
