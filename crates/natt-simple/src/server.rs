//! The server side: [`SimpleUdpHolePunchServer`] and [`SimpleTcpHolePunchServer`] answer
//! requests of the simple protocol with the address they came from, on a background thread
//! that serves until the server is dropped.

use std::io::{self, Write};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use natt_core::{MappedSocketAddr, MappedUdpSocket, MappingContext, PortMappings};

use crate::stream::read_message;
use crate::wire::{self, Message, REQUEST_LEN, Reply};

/// How often a serving thread checks whether it should stop, when nothing wakes it.
const POLL: Duration = Duration::from_millis(250);
/// How long a TCP client may take to send its request and read the reply.
pub const TCP_CLIENT_TIMEOUT: Duration = Duration::from_secs(5);
/// The most TCP clients served at once; further connections are closed at once.
pub const MAX_TCP_CLIENTS: usize = 64;

/// Errors starting a server.
#[derive(Debug, thiserror::Error)]
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

/// A background thread that stops when its owner is dropped.
#[derive(Debug)]
struct Worker {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Worker {
    fn spawn(
        name: &str,
        f: impl FnOnce(Arc<AtomicBool>) + Send + 'static,
    ) -> Result<Self, ServerError> {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let thread = thread::Builder::new()
            .name(name.to_owned())
            .spawn(move || f(flag))
            .map_err(ServerError::Thread)?;
        Ok(Worker {
            stop,
            thread: Some(thread),
        })
    }

    fn stop(&mut self, wake: impl FnOnce()) {
        self.stop.store(true, Ordering::SeqCst);
        wake();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The address to reach a socket bound at `bound` from this host (to wake its thread).
fn reachable(bound: SocketAddr) -> SocketAddr {
    match bound {
        SocketAddr::V4(a) if a.ip().is_unspecified() => {
            SocketAddr::from((Ipv4Addr::LOCALHOST, a.port()))
        }
        SocketAddr::V6(a) if a.ip().is_unspecified() => {
            SocketAddr::from((Ipv6Addr::LOCALHOST, a.port()))
        }
        a => a,
    }
}

/// A server of the simple hole-punch protocol over UDP. It serves on a background thread until
/// dropped; malformed requests get no reply and never disturb it.
///
/// ```
/// use natt_core::{HolePunchServerAddr, MappedUdpSocket, MappingContext};
/// use natt_simple::{SimpleTechnique, SimpleUdpHolePunchServer};
/// use std::sync::Arc;
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let server = SimpleUdpHolePunchServer::bind("127.0.0.1:0".parse()?)?;
/// let mc = MappingContext::empty();
/// mc.add_technique(Arc::new(SimpleTechnique::new()));
/// mc.add_server(HolePunchServerAddr::Simple(server.local_addr()));
/// let mapped = MappedUdpSocket::bind("127.0.0.1:0".parse()?, &mc)?;
/// assert!(mapped.port_mappings.outcomes()[0].result.is_ok());
/// # Ok(())
/// # }
/// ```
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
        let socket =
            UdpSocket::bind(any).map_err(|source| ServerError::Bind { addr: any, source })?;
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
        let local = socket
            .local_addr()
            .and_then(|l| socket.set_read_timeout(Some(POLL)).map(|()| l))
            .map_err(|source| ServerError::Bind {
                addr: SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0)),
                source,
            })?;
        let answered = Arc::new(AtomicU64::new(0));
        let count = Arc::clone(&answered);
        let worker = Worker::spawn("natt-simple-udp", move |stop| {
            serve_udp(&socket, &stop, &count)
        })?;
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
        let local = self.local;
        self.worker.stop(|| {
            // Wake the thread at once rather than at its next poll.
            let any = SocketAddr::new(
                if local.is_ipv4() {
                    Ipv4Addr::UNSPECIFIED.into()
                } else {
                    Ipv6Addr::UNSPECIFIED.into()
                },
                0,
            );
            if let Ok(s) = UdpSocket::bind(any) {
                let _ = s.send_to(&[], reachable(local));
            }
        });
        log::info!("simple protocol: stopped UDP on {local}");
    }
}

fn serve_udp(socket: &UdpSocket, stop: &AtomicBool, answered: &AtomicU64) {
    // Requests are the largest messages; anything longer is malformed and truncated reads of
    // it are rejected by the decoder as the wrong length.
    let mut buf = [0u8; REQUEST_LEN + 1];
    while !stop.load(Ordering::SeqCst) {
        match socket.recv_from(&mut buf) {
            Ok((n, from)) => {
                if let Some(reply) = wire::answer(from, buf.get(..n).unwrap_or(&[])) {
                    answered.fetch_add(1, Ordering::Relaxed);
                    if let Err(e) = socket.send_to(&reply, from) {
                        log::debug!("reply to {from} failed: {e}");
                    }
                }
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) => {}
            Err(e) => log::debug!("receive failed: {e}"),
        }
    }
}

/// A server of the simple hole-punch protocol over TCP: it answers one request per connection
/// and closes it. At most [`MAX_TCP_CLIENTS`] are served at once, each for at most
/// [`TCP_CLIENT_TIMEOUT`].
///
/// ```
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let server = natt_simple::SimpleTcpHolePunchServer::bind("127.0.0.1:0".parse()?)?;
/// assert_ne!(server.local_addr().port(), 0);
/// # Ok(())
/// # }
/// ```
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
        let worker = Worker::spawn("natt-simple-tcp", move |stop| {
            serve_tcp(&listener, &stop, &count)
        })?;
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
        let local = self.local;
        self.worker.stop(|| {
            // Wake the blocking accept with a connection of our own.
            let _ = TcpStream::connect_timeout(&reachable(local), POLL);
        });
        log::info!("simple protocol: stopped TCP on {local}");
    }
}

fn serve_tcp(listener: &TcpListener, stop: &AtomicBool, answered: &Arc<AtomicU64>) {
    let active = Arc::new(AtomicUsize::new(0));
    for conn in listener.incoming() {
        if stop.load(Ordering::SeqCst) {
            break;
        }
        let stream = match conn {
            Ok(s) => s,
            Err(e) => {
                log::debug!("accept failed: {e}");
                // Out of file descriptors and the like: do not spin.
                thread::sleep(Duration::from_millis(10));
                continue;
            }
        };
        if active.load(Ordering::SeqCst) >= MAX_TCP_CLIENTS {
            log::debug!("too many clients; closing {:?}", stream.peer_addr());
            continue;
        }
        active.fetch_add(1, Ordering::SeqCst);
        let (active_c, answered_c) = (Arc::clone(&active), Arc::clone(answered));
        let spawned = thread::Builder::new()
            .name("natt-simple-tcp-client".into())
            .spawn(move || {
                if let Err(e) = serve_tcp_client(stream, &answered_c) {
                    log::debug!("TCP client: {e}");
                }
                active_c.fetch_sub(1, Ordering::SeqCst);
            });
        if let Err(e) = spawned {
            log::warn!("cannot serve a TCP client: {e}");
            active.fetch_sub(1, Ordering::SeqCst);
        }
    }
}

fn serve_tcp_client(mut stream: TcpStream, answered: &AtomicU64) -> io::Result<()> {
    let from = stream.peer_addr()?;
    stream.set_read_timeout(Some(TCP_CLIENT_TIMEOUT))?;
    stream.set_write_timeout(Some(TCP_CLIENT_TIMEOUT))?;
    match read_message(&mut stream)? {
        Message::Request(req) => {
            answered.fetch_add(1, Ordering::Relaxed);
            stream.write_all(
                &Reply {
                    txid: req.txid,
                    observed: from,
                }
                .encode(),
            )?;
            Ok(())
        }
        Message::Reply(_) => Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "a reply sent to the server",
        )),
    }
}
