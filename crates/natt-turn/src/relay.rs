//! [`Relay`]: the blocking handle of a TURN allocation (the driver of [`Allocation`]), made
//! from a given UDP socket (the allocation is that socket's: [`Relay::allocate_udp`]) or over
//! TCP to the server ([`Relay::allocate_tcp`]). How to use it next to direct traffic on the
//! same socket is in the crate documentation.
//!
//! The allocation core is shared between the caller's thread and the handle's lease thread
//! ([`natt_core::lease::Keeper`]), which sends the refreshes the core asks for (allocation at
//! half its lifetime, permissions, channels) and, on release or drop, deletes the allocation.
//! Answers reach the core through [`Relay::handle_datagram`] (the application's receive
//! path), through the handle's own reads in [`Relay::read_socket_itself`] mode, or, over TCP,
//! through the thread that reads the stream.

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

use natt_core::lease::{Keeper, KeeperNames, Renewable, Renewal, Stop};
use natt_core::turn::{TurnCredentials, TurnTransport};
use natt_core::udp::STOP_POLL;
use natt_core::{PortMappings, Transmit, UdpExchange, deadline};
use rand::SeedableRng;
use rand::rngs::StdRng;

use crate::allocation::{Allocated, Allocation, Config, Event, Input, State};
use crate::channel_data::{self, Kind};
use crate::error::TurnError;

/// The most peers' payloads the handle keeps until they are taken
/// ([`Relay::recv_timeout`]); the oldest go first.
pub const MAX_INBOX: usize = 1024;
/// How long a release waits for the server to confirm the deletion.
pub const RELEASE_TIMEOUT: Duration = Duration::from_secs(2);

/// How the handle reaches the server.
enum Link {
    /// From (a clone of) the socket the allocation was made on, bound at `local` (read once:
    /// a dual-stack socket addresses an IPv4 server as IPv4-mapped, see [`Link::udp`]).
    Udp { socket: UdpSocket, local: SocketAddr },
    /// Over a TCP stream (written here; read by the handle's reader thread).
    Tcp(Mutex<TcpStream>),
}

/// What the caller's thread, the lease thread and (over TCP) the reader thread share.
struct Shared {
    core: Mutex<Allocation>,
    /// Notified whenever the core took something in.
    changed: Condvar,
    link: Link,
    /// UDP: the handle reads the socket itself while it waits for answers.
    self_read: AtomicBool,
    /// Peers' data read by the handle itself (over TCP, or while reading the socket itself).
    inbox: Mutex<VecDeque<(SocketAddr, Vec<u8>)>>,
    /// TCP: the stream ended.
    closed: AtomicBool,
}

/// The address `socket` is bound at (the unspecified IPv4 address if it cannot be read): what
/// [`natt_core::family::for_socket`] needs to address an IPv4 server from a dual-stack socket.
fn local_of(socket: &UdpSocket) -> SocketAddr {
    socket
        .local_addr()
        .unwrap_or_else(|_| SocketAddr::from((std::net::Ipv4Addr::UNSPECIFIED, 0)))
}

impl Link {
    /// The link over `socket`, with the address it is bound at.
    fn udp(socket: UdpSocket) -> Link {
        let local = local_of(&socket);
        Link::Udp { socket, local }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Shared {
    fn server(&self) -> SocketAddr {
        lock(&self.core).server()
    }

    /// Takes a datagram received on the allocation's socket ([`Relay::handle_datagram`]).
    fn take(&self, from: SocketAddr, bytes: &[u8]) -> Input {
        let from = natt_core::family::canonical(from);
        let input = lock(&self.core).handle_datagram(Instant::now(), from, bytes);
        self.changed.notify_all();
        input
    }

    /// Sends what falls due now; when to call again ([`Relay::poll`]).
    fn poll_now(&self) -> Option<Instant> {
        let mut core = lock(&self.core);
        self.flush(&mut core, Instant::now())
    }

    /// Sends `payload` to `peer` through the relay ([`Relay::send_to`]).
    fn send_payload(&self, payload: &[u8], peer: SocketAddr) -> Result<(), TurnError> {
        let t = lock(&self.core).send_to(peer, payload)?;
        let server = t.destination;
        self.send(&t)
            .map_err(|e| TurnError::io(server, "sending through the relay", &e))
    }

    /// The next payload from a peer through the relay, by `deadline` ([`Relay::recv_timeout`]).
    fn next_payload(&self, deadline: Instant) -> Option<(SocketAddr, Vec<u8>)> {
        let _ = self.drive(deadline, None, |_| {
            !lock(&self.inbox).is_empty() || self.closed.load(Ordering::Relaxed)
        });
        lock(&self.inbox).pop_front()
    }

    fn send(&self, t: &Transmit) -> io::Result<()> {
        match &self.link {
            Link::Udp { socket, local } => socket
                .send_to(&t.payload, natt_core::family::for_socket(*local, t.destination))
                .map(drop),
            Link::Tcp(stream) => lock(stream).write_all(&t.payload),
        }
    }

    /// Sends everything the core has due at `now`; its next wake.
    fn flush(&self, core: &mut Allocation, now: Instant) -> Option<Instant> {
        while let Some(t) = core.poll_transmit(now) {
            if let Err(e) = self.send(&t) {
                log::debug!("turn: sending to {} failed: {e}", t.destination);
            }
        }
        core.poll_timeout()
    }

    /// Feeds what came from `from`; peers' data goes to the inbox.
    fn feed(&self, from: SocketAddr, bytes: &[u8]) -> Input {
        let from = natt_core::family::canonical(from);
        let input = lock(&self.core).handle_datagram(Instant::now(), from, bytes);
        if let Input::Data { peer, payload } = &input {
            let mut inbox = lock(&self.inbox);
            if inbox.len() >= MAX_INBOX {
                inbox.pop_front();
                log::debug!("turn: dropping the oldest relayed payload: {MAX_INBOX} are waiting");
            }
            inbox.push_back((*peer, payload.clone()));
        }
        self.changed.notify_all();
        input
    }

    /// Drives the core until `done` says so, `deadline` passes or `stop` fires (then
    /// `Err(Stopped)`). The core's requests are sent and retransmitted as they fall due; the
    /// answers come from the socket read here, with natt-core's receive loop, in self-read
    /// mode, and otherwise from whoever feeds the core (the application, the TCP reader).
    fn drive(
        &self,
        deadline: Instant,
        stop: Option<&Stop>,
        done: impl FnMut(&mut Allocation) -> bool + Send,
    ) -> Result<(), Stopped> {
        match &self.link {
            Link::Udp { socket, .. } if self.self_read.load(Ordering::Relaxed) => {
                let mut exchange = SelfRead { shared: self, done };
                let mut exchanges: [&mut dyn UdpExchange<()>; 1] = [&mut exchange];
                match natt_core::udp::drive_until_stopped(socket, &mut exchanges, deadline, stop) {
                    Ok(natt_core::udp::Driven::Stopped) => Err(Stopped),
                    Ok(natt_core::udp::Driven::Done(_)) => Ok(()),
                    Err(e) => {
                        log::debug!("turn: reading the socket: {e}");
                        Ok(())
                    }
                }
            }
            _ => self.drive_fed(deadline, stop, done),
        }
    }

    /// [`drive`](Self::drive) with the answers fed by others: waits on the condition
    /// variable that feeding notifies.
    fn drive_fed(
        &self,
        deadline: Instant,
        stop: Option<&Stop>,
        mut done: impl FnMut(&mut Allocation) -> bool,
    ) -> Result<(), Stopped> {
        loop {
            let now = Instant::now();
            let mut core = lock(&self.core);
            let next = self.flush(&mut core, now);
            if done(&mut core) || now >= deadline {
                return Ok(());
            }
            if stop.is_some_and(Stop::is_stopped) {
                return Err(Stopped);
            }
            let wake = next.map_or(deadline, |n| n.min(deadline)).min(now + STOP_POLL);
            let wait = wake.saturating_duration_since(now).max(deadline::MIN_WAIT);
            let _ = self.changed.wait_timeout(core, wait);
        }
    }
}

impl Shared {
    /// RFC 6062: the next peer that connects to the relayed address by `deadline`, its
    /// connection bound to a new data connection ([`Relay::accept_tcp`]).
    fn accept_tcp(&self, deadline: Instant) -> Result<(SocketAddr, TcpStream), TurnError> {
        self.try_accept_tcp(deadline, deadline)?.ok_or(TurnError::Silent {
            server: self.server(),
            what: "ConnectionAttempt",
        })
    }

    /// A peer's connection attempt by `wait_until` (else `None`), its data connection bound by
    /// `deadline`.
    fn try_accept_tcp(
        &self,
        wait_until: Instant,
        deadline: Instant,
    ) -> Result<Option<(SocketAddr, TcpStream)>, TurnError> {
        let mut attempt = None;
        let _ = self.drive(wait_until, None, |core| {
            attempt = core.take_connection_attempt();
            attempt.is_some()
        });
        match attempt {
            Some((peer, id)) => Ok(Some((peer, self.bind_data_connection(id, deadline)?))),
            None => Ok(None),
        }
    }

    /// Opens a data connection to the server and binds it to connection `id`.
    fn bind_data_connection(&self, id: u32, deadline: Instant) -> Result<TcpStream, TurnError> {
        let server = self.server();
        let io = |what: &str, e: io::Error| TurnError::io(server, what, &e);
        let wait = deadline::remaining(deadline).ok_or(TurnError::Silent {
            server,
            what: "ConnectionBind",
        })?;
        let mut stream = TcpStream::connect_timeout(&server, wait).map_err(|e| io("opening a data connection", e))?;
        let (txid, request) = lock(&self.core).connection_bind(id)?;
        stream
            .set_read_timeout(Some(deadline::wait_until(deadline)))
            .map_err(|e| io("setting a timeout", e))?;
        stream
            .write_all(&request)
            .map_err(|e| io("sending ConnectionBind", e))?;
        let response = natt_stun::message::STREAM_FRAMER
            .read(&mut stream)
            .map_err(|e| io("reading ConnectionBind's answer", e))?;
        lock(&self.core).connection_bound(txid, &response)?;
        stream
            .set_read_timeout(None)
            .map_err(|e| io("clearing the timeout", e))?;
        let _ = stream.set_nodelay(true);
        Ok(stream)
    }
}

/// The lease thread was told to stop.
struct Stopped;

/// The shared core as an exchange of natt-core's receive loop, while the handle reads the
/// socket itself: it sends what the core has due, takes in what comes from the server (peers'
/// data into the inbox), and ends when `done` says so.
struct SelfRead<'a, F> {
    shared: &'a Shared,
    done: F,
}

impl<F: FnMut(&mut Allocation) -> bool + Send> UdpExchange<()> for SelfRead<'_, F> {
    fn poll_transmit(&mut self, now: Instant) -> Option<Transmit> {
        lock(&self.shared.core).poll_transmit(now)
    }

    fn poll_timeout(&self) -> Option<Instant> {
        lock(&self.shared.core).poll_timeout()
    }

    fn handle_datagram(&mut self, now: Instant, from: SocketAddr, data: &[u8]) -> bool {
        let _ = now;
        self.shared.feed(from, data) != Input::NotFromServer
    }

    fn poll_result(&mut self, now: Instant) -> Option<()> {
        let mut core = lock(&self.shared.core);
        core.handle_timeout(now);
        (self.done)(&mut core).then_some(())
    }

    fn finish(&mut self) {}
}

/// The allocation's exchange over a UDP socket, for [`natt_core::udp::drive`]: ends with the
/// allocation made, or why not.
pub struct AllocateExchange<'a>(pub &'a mut Allocation);

impl UdpExchange<Result<Allocated, TurnError>> for AllocateExchange<'_> {
    fn poll_transmit(&mut self, now: Instant) -> Option<Transmit> {
        self.0.poll_transmit(now)
    }

    fn poll_timeout(&self) -> Option<Instant> {
        self.0.poll_timeout()
    }

    fn handle_datagram(&mut self, now: Instant, from: SocketAddr, data: &[u8]) -> bool {
        self.0.handle_datagram(now, from, data) != Input::NotFromServer
    }

    fn poll_result(&mut self, now: Instant) -> Option<Result<Allocated, TurnError>> {
        let _ = now;
        self.0.allocate_result()
    }

    fn finish(&mut self) -> Result<Allocated, TurnError> {
        self.0.allocate_result().unwrap_or(Err(TurnError::Silent {
            server: self.0.server(),
            what: "Allocate",
        }))
    }
}

/// A new allocation core for `server` (transaction ids from a generator seeded by the OS).
pub(crate) fn new_core(
    server: SocketAddr,
    transport: TurnTransport,
    credentials: TurnCredentials,
    config: Config,
) -> Allocation {
    Allocation::new(
        server,
        transport,
        credentials,
        config,
        Instant::now(),
        StdRng::from_os_rng(),
    )
}

/// A TURN allocation held (see the module and crate documentation): refreshed while the
/// handle lives, deleted on [`release`](Relay::release) and on drop. It is `Send` and `Sync`:
/// share it (in an `Arc`) between the thread that reads the socket and those that send.
pub struct Relay {
    shared: Arc<Shared>,
    allocated: Allocated,
    /// In a mutex so that the handle is `Sync`: one thread reads the socket and hands the
    /// relay what it received while another sends.
    keeper: Mutex<Keeper>,
    released: bool,
}

impl std::fmt::Debug for Relay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Relay").field(&self.describe()).finish()
    }
}

/// How the lease thread names itself.
const NAMES: KeeperNames = KeeperNames {
    thread: "natt-turn-lease",
    log_target: module_path!(),
    log_prefix: "turn",
};

impl Relay {
    /// Allocates a relayed address on `server` from `socket` (UDP to the server), by
    /// `deadline`. The handle sends from a clone of `socket`; see the crate documentation for
    /// how answers reach it.
    pub fn allocate_udp(
        socket: &UdpSocket,
        server: SocketAddr,
        credentials: TurnCredentials,
        config: Config,
        deadline: Instant,
    ) -> Result<Relay, TurnError> {
        let mut core = new_core(server, TurnTransport::Udp, credentials, config);
        let result = {
            let mut exchange = AllocateExchange(&mut core);
            let mut exchanges: [&mut dyn UdpExchange<Result<Allocated, TurnError>>; 1] = [&mut exchange];
            natt_core::udp::drive(socket, &mut exchanges, deadline)
                .map_err(|e| TurnError::Io {
                    server,
                    what: "allocating".into(),
                    error: e.to_string(),
                })?
                .into_iter()
                .next()
                .map_or(
                    Err(TurnError::Silent {
                        server,
                        what: "Allocate",
                    }),
                    |(_, r)| r,
                )
        };
        if let Err(e) = result {
            // An Allocate that the server may have made without our hearing is deleted.
            if !matches!(e, TurnError::Silent { .. }) {
                return Err(e);
            }
            core.delete(Instant::now());
            if let Some(t) = core.poll_transmit(Instant::now()) {
                let _ = socket.send_to(
                    &t.payload,
                    natt_core::family::for_socket(local_of(socket), t.destination),
                );
            }
            return Err(e);
        }
        let socket = socket
            .try_clone()
            .map_err(|e| TurnError::io(server, "cloning the socket", &e))?;
        Relay::hold(core, Link::udp(socket))
    }

    /// Allocates a relayed UDP address on `server` over TCP (for a network that lets no UDP
    /// out), connected and allocated by `deadline`. The handle owns the stream and reads it on
    /// a thread of its own: peers' data comes from [`recv_timeout`](Self::recv_timeout).
    pub fn allocate_tcp(
        server: SocketAddr,
        credentials: TurnCredentials,
        config: Config,
        deadline: Instant,
    ) -> Result<Relay, TurnError> {
        let wait = deadline
            .checked_duration_since(Instant::now())
            .ok_or(TurnError::Silent {
                server,
                what: "Allocate",
            })?;
        let stream = TcpStream::connect_timeout(&server, wait.max(deadline::MIN_WAIT))
            .map_err(|e| TurnError::io(server, "connecting over TCP", &e))?;
        let _ = stream.set_nodelay(true);
        let reader = stream
            .try_clone()
            .map_err(|e| TurnError::io(server, "cloning the stream", &e))?;
        let core = new_core(server, TurnTransport::Tcp, credentials, config);
        let shared = Arc::new(Shared {
            core: Mutex::new(core),
            changed: Condvar::new(),
            link: Link::Tcp(Mutex::new(stream)),
            self_read: AtomicBool::new(false),
            inbox: Mutex::new(VecDeque::new()),
            closed: AtomicBool::new(false),
        });
        let thread_shared = Arc::clone(&shared);
        thread::Builder::new()
            .name("natt-turn-tcp".into())
            .spawn(move || read_stream(&thread_shared, reader, server))
            .map_err(|e| TurnError::io(server, "starting the stream's reader", &e))?;
        let _ = shared.drive(deadline, None, |core| {
            core.allocate_result().is_some() || shared.closed.load(Ordering::Relaxed)
        });
        let result = lock(&shared.core).allocate_result();
        match result {
            Some(Ok(_)) => {}
            Some(Err(e)) => return Err(close_tcp(&shared, e)),
            None if shared.closed.load(Ordering::Relaxed) => {
                let e = TurnError::Io {
                    server,
                    what: "allocating over TCP".into(),
                    error: "the server closed the connection".into(),
                };
                return Err(close_tcp(&shared, e));
            }
            None => {
                let e = TurnError::Silent {
                    server,
                    what: "Allocate",
                };
                return Err(close_tcp(&shared, e));
            }
        }
        Relay::start(shared)
    }

    /// Holds the allocation `core` made, talking over `link`.
    pub(crate) fn hold_udp(core: Allocation, socket: UdpSocket) -> Result<Relay, TurnError> {
        Relay::hold(core, Link::udp(socket))
    }

    fn hold(core: Allocation, link: Link) -> Result<Relay, TurnError> {
        let shared = Arc::new(Shared {
            core: Mutex::new(core),
            changed: Condvar::new(),
            link,
            self_read: AtomicBool::new(false),
            inbox: Mutex::new(VecDeque::new()),
            closed: AtomicBool::new(false),
        });
        Relay::start(shared)
    }

    fn start(shared: Arc<Shared>) -> Result<Relay, TurnError> {
        let (allocated, next) = {
            let core = lock(&shared.core);
            let allocated = core.allocated().ok_or(TurnError::NoAllocation(core.server()))?;
            (allocated, core.poll_timeout())
        };
        let server = shared.server();
        let keeper = Keeper::spawn(
            Keep {
                shared: Arc::clone(&shared),
            },
            Some(keeper_lifetime(next)),
            STOP_POLL,
            NAMES,
        )
        .map_err(|e| TurnError::io(server, "starting the lease thread", &e))?;
        Ok(Relay {
            shared,
            allocated,
            keeper: Mutex::new(keeper),
            released: false,
        })
    }

    /// The relayed address: where peers send to reach us through the relay.
    pub fn relayed_addr(&self) -> SocketAddr {
        self.allocated.relayed
    }

    /// Where the server sees us, if it said (XOR-MAPPED-ADDRESS).
    pub fn mapped_addr(&self) -> Option<SocketAddr> {
        self.allocated.mapped
    }

    /// The TURN server's address: datagrams from it are the relay's.
    pub fn server(&self) -> SocketAddr {
        self.shared.server()
    }

    /// How the server is reached.
    pub fn transport(&self) -> TurnTransport {
        lock(&self.shared.core).transport()
    }

    /// A one-line description, e.g. `turn udp 203.0.113.30:50000 via 203.0.113.30:3478`.
    pub fn describe(&self) -> String {
        format!(
            "turn {} {} via {}",
            self.transport(),
            self.allocated.relayed,
            self.server()
        )
    }

    /// Whether the allocation is still held (not lost, failed or deleted).
    pub fn is_allocated(&self) -> bool {
        matches!(lock(&self.shared.core).state(), State::Allocated(_))
    }

    /// UDP: from now on the handle reads the socket itself whenever it waits for the server's
    /// answers (adding a peer, refreshing, deleting), and [`recv_timeout`](Self::recv_timeout)
    /// reads it too. For a socket that nothing else reads: datagrams not from the server that
    /// arrive meanwhile are dropped.
    pub fn read_socket_itself(&self) {
        self.shared.self_read.store(true, Ordering::Relaxed);
    }

    /// Takes a datagram received on the allocation's socket from `from` (see [`Input`]):
    /// [`Input::NotFromServer`] for anything not from the TURN server (direct traffic),
    /// [`Input::Data`] for a peer's payload through the relay.
    pub fn handle_datagram(&self, from: SocketAddr, bytes: &[u8]) -> Input {
        self.shared.take(from, bytes)
    }

    /// Whether `bytes` from `from` is the relay's (from its server, and STUN or ChannelData by
    /// its first bits), without taking it in.
    pub fn is_relay_traffic(&self, from: SocketAddr, bytes: &[u8]) -> bool {
        natt_core::family::canonical(from) == self.server() && channel_data::classify(bytes) != Kind::Other
    }

    /// Sends what falls due now (retransmissions of requests whose answers were missed, and
    /// refreshes); when to call again. For a single thread that drives the relay between its
    /// reads of the socket; the lease thread does it otherwise, at the refreshes.
    pub fn poll(&self) -> Option<Instant> {
        self.shared.poll_now()
    }

    /// Adds `peer`: a permission for its IP address and a channel, waiting by `deadline` until
    /// the server installed the permission (data then passes the relay both ways) and bound
    /// the channel. The answers must reach the handle meanwhile: through
    /// [`handle_datagram`](Self::handle_datagram) from another thread, by the handle's own
    /// reads ([`read_socket_itself`](Self::read_socket_itself)), or over TCP. An error when the
    /// server refused, or nothing was confirmed by the deadline.
    pub fn add_peer(&self, peer: SocketAddr, deadline: Instant) -> Result<(), TurnError> {
        {
            let mut core = lock(&self.shared.core);
            if core.is_tcp_relay() {
                // No channels on a TCP relay: the permission is all.
                core.create_permission(peer, Instant::now())?;
            } else {
                core.add_peer(peer, Instant::now())?;
            }
            while core.poll_event().is_some() {}
        }
        let mut failed = None;
        let _ = self.shared.drive(deadline, None, |core| {
            while let Some(e) = core.poll_event() {
                if let Event::Failed(e) = e {
                    failed = Some(e);
                }
            }
            failed.is_some()
                || (core.has_permission(peer.ip()) && (core.is_tcp_relay() || core.channel(peer).is_some()))
        });
        if let Some(e) = failed {
            return Err(e);
        }
        let core = lock(&self.shared.core);
        if core.has_permission(peer.ip()) {
            Ok(())
        } else {
            Err(TurnError::Silent {
                server: core.server(),
                what: "CreatePermission",
            })
        }
    }

    /// Sends `payload` to `peer` through the relay (ChannelData once its channel is bound,
    /// else a Send indication). The peer must have been added.
    pub fn send_to(&self, payload: &[u8], peer: SocketAddr) -> Result<(), TurnError> {
        self.shared.send_payload(payload, peer)
    }

    /// The next payload from a peer through the relay, waiting until `deadline`: over TCP
    /// what the stream's reader took in; over UDP what the handle read from the socket itself,
    /// after [`read_socket_itself`](Self::read_socket_itself) (so only for a socket that
    /// nothing else reads: other datagrams are dropped). A socket read by the application
    /// gets peers' data from [`handle_datagram`](Self::handle_datagram) instead.
    pub fn recv_timeout(&self, deadline: Instant) -> Option<(SocketAddr, Vec<u8>)> {
        self.shared.next_payload(deadline)
    }

    /// RFC 6062 (a relay allocated over TCP with [`Config::tcp_relay`]): has the server open a
    /// TCP connection to `peer` from the relayed address, then binds a new connection to the
    /// server to it (ConnectionBind), all by `deadline`. The stream returned carries the
    /// peer's bytes both ways, as a plain `TcpStream` to the peer would. The peer is added
    /// (its permission installed) first.
    pub fn connect_tcp(&self, peer: SocketAddr, deadline: Instant) -> Result<TcpStream, TurnError> {
        self.add_peer(peer, deadline)?;
        lock(&self.shared.core).connect(peer, Instant::now())?;
        let mut result = None;
        let _ = self.shared.drive(deadline, None, |core| {
            result = core.connect_result(peer);
            result.is_some()
        });
        let id = result.unwrap_or_else(|| {
            Err(TurnError::Silent {
                server: self.server(),
                what: "Connect",
            })
        })?;
        self.bind_data_connection(id, deadline)
    }

    /// RFC 6062: waits by `deadline` for a peer (added first, with
    /// [`add_peer`](Self::add_peer)) to connect to the relayed address, and binds a new
    /// connection to the server to it: the peer and the stream that carries its bytes.
    pub fn accept_tcp(&self, deadline: Instant) -> Result<(SocketAddr, TcpStream), TurnError> {
        self.shared.accept_tcp(deadline)
    }

    /// Opens a data connection to the server and binds it to connection `id`.
    fn bind_data_connection(&self, id: u32, deadline: Instant) -> Result<TcpStream, TurnError> {
        self.shared.bind_data_connection(id, deadline)
    }

    /// Deletes the allocation now (a Refresh with lifetime 0) and waits for the server's
    /// answer, at most [`RELEASE_TIMEOUT`]; whether it is known deleted. Dropping the handle
    /// does the same.
    pub fn release(&mut self) -> bool {
        natt_core::Lease::start_release(self);
        natt_core::Lease::wait_released(self);
        lock(&self.keeper).ended() == Some(true)
    }
}

impl natt_core::Lease for Relay {
    fn describe(&self) -> String {
        Relay::describe(self)
    }

    fn start_release(&mut self) {
        lock(&self.keeper).start_release();
    }

    fn wait_released(&mut self) {
        if self.released {
            return;
        }
        self.released = true;
        let ended = lock(&self.keeper).wait_for(RELEASE_TIMEOUT + STOP_POLL * 4);
        if ended.is_none() {
            log::warn!(
                "turn: {} not confirmed deleted; it expires with its lifetime",
                self.describe()
            );
        }
    }

    fn as_any(&self) -> Option<&dyn std::any::Any> {
        Some(self)
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        natt_core::Lease::start_release(self);
        natt_core::Lease::wait_released(self);
    }
}

/// Calls `f` with the relay that the `turn` technique made while mapping a socket, held in
/// its port mappings; `None` when there is none. The mappings are locked while `f` runs.
pub fn with_relay<R>(port_mappings: &PortMappings, f: impl FnOnce(&Relay) -> R) -> Option<R> {
    port_mappings.with_lease::<Relay, R>(f)
}

/// The lifetime the lease keeper is told, so that it wakes when the core next needs it: the
/// keeper renews at half the lifetime (at least a second, so that it never spins).
fn keeper_lifetime(next: Option<Instant>) -> Duration {
    next.map_or(Duration::from_secs(600), |n| {
        n.saturating_duration_since(Instant::now()) * 2
    })
    .max(Duration::from_secs(1))
}

/// What the lease thread holds.
struct Keep {
    shared: Arc<Shared>,
}

impl Renewable for Keep {
    type Error = TurnError;

    fn describe(&self) -> String {
        let core = lock(&self.shared.core);
        match core.allocated() {
            Some(a) => format!("turn {} {} via {}", core.transport(), a.relayed, core.server()),
            None => format!("turn allocation via {}", core.server()),
        }
    }

    /// Does what the core has due (refreshes) and waits for the answers, as long as the
    /// retransmissions go.
    fn renew(&mut self, stop: &Stop) -> Renewal<TurnError> {
        let window = Instant::now() + Duration::from_secs(40);
        let mut failed = None;
        let driven = self.shared.drive(window, Some(stop), |core| {
            while let Some(e) = core.poll_event() {
                match e {
                    Event::Failed(e) => failed = Some(e),
                    Event::Refreshed(l) => log::debug!("turn: allocation on {} refreshed for {l:?}", core.server()),
                    _ => {}
                }
            }
            core.is_idle()
        });
        if driven.is_err() {
            return Renewal::Stopped;
        }
        let core = lock(&self.shared.core);
        if let State::Failed(e) = core.state() {
            return Renewal::Failed(e.clone());
        }
        match failed {
            Some(e) => Renewal::Failed(e),
            None => Renewal::Renewed(keeper_lifetime(core.poll_timeout())),
        }
    }

    fn delete(self) -> bool {
        let deadline = Instant::now() + RELEASE_TIMEOUT;
        {
            let mut core = lock(&self.shared.core);
            if !matches!(core.state(), State::Allocated(_)) {
                return true;
            }
            core.delete(Instant::now());
        }
        // The application may no longer read the socket: read it for the answer. Over TCP,
        // an allocation ends with its connection (RFC 8656 section 3.1, RFC 6062): a server
        // that closed it (stopped, restarted) has deleted it already.
        self.shared.self_read.store(true, Ordering::Relaxed);
        let tcp = matches!(self.shared.link, Link::Tcp(_));
        let closed = || tcp && self.shared.closed.load(Ordering::Relaxed);
        let _ = self
            .shared
            .drive(deadline, None, |core| *core.state() == State::Deleted || closed());
        let gone = *lock(&self.shared.core).state() == State::Deleted || closed();
        if let Link::Tcp(stream) = &self.shared.link {
            let _ = lock(stream).shutdown(Shutdown::Both);
        }
        if gone {
            log::debug!("turn: deleted the allocation on {}", self.shared.server());
        }
        gone
    }
}

/// Closes a TCP link after a failed allocation; `e`.
fn close_tcp(shared: &Shared, e: TurnError) -> TurnError {
    if let Link::Tcp(stream) = &shared.link {
        let _ = lock(stream).shutdown(Shutdown::Both);
    }
    e
}

/// Reads STUN messages and ChannelData frames from the stream to the server (RFC 8656
/// section 12.5: ChannelData padded to 4 bytes) and feeds them to the core, until the stream
/// ends.
fn read_stream(shared: &Shared, mut stream: TcpStream, server: SocketAddr) {
    loop {
        match read_frame(&mut stream) {
            Ok(frame) => {
                shared.feed(server, &frame);
            }
            Err(e) => {
                log::debug!("turn: the stream to {server} ended: {e}");
                break;
            }
        }
    }
    shared.closed.store(true, Ordering::Relaxed);
    shared.changed.notify_all();
}

/// One STUN message or ChannelData frame (padding included) from a stream.
pub fn read_frame(stream: &mut impl Read) -> io::Result<Vec<u8>> {
    let mut head = [0u8; 4];
    stream.read_exact(&mut head)?;
    match channel_data::classify(&head) {
        Kind::Stun => natt_stun::message::STREAM_FRAMER.read_after(&head, stream),
        Kind::ChannelData => CHANNEL_DATA_FRAMER.read_after(&head, stream),
        Kind::Other => Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "neither STUN nor ChannelData",
        )),
    }
}

/// ChannelData's framing on a stream.
const CHANNEL_DATA_FRAMER: natt_core::frame::Framer<channel_data::ChannelDataError> = natt_core::frame::Framer::new(
    channel_data::HEADER_LEN,
    channel_data::MAX_FRAME_LEN,
    channel_data::stream_frame_len,
);

impl Relay {
    /// A [`RelayLink`] to this relay's traffic: for a connection that reads the allocation's
    /// socket on threads of its own while the handle stays where it is (in the socket's
    /// `PortMappings`, which keep, refresh and release it).
    pub fn link(&self) -> RelayLink {
        RelayLink {
            shared: Arc::clone(&self.shared),
        }
    }
}

/// The traffic side of a [`Relay`], cheap to clone and to share between threads: demultiplex
/// what arrives, add peers without waiting, send and (over TCP) receive. It never keeps the
/// allocation alive: the [`Relay`] handle does, and once it is released or dropped, sending
/// fails with [`TurnError::NoAllocation`].
#[derive(Clone)]
pub struct RelayLink {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for RelayLink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let core = lock(&self.shared.core);
        f.debug_struct("RelayLink")
            .field("server", &core.server())
            .field("transport", &core.transport())
            .field("relayed", &core.relayed())
            .finish()
    }
}

impl RelayLink {
    /// The TURN server's address: datagrams from it are the relay's.
    pub fn server(&self) -> SocketAddr {
        self.shared.server()
    }

    /// How the server is reached.
    pub fn transport(&self) -> TurnTransport {
        lock(&self.shared.core).transport()
    }

    /// The relayed address, while allocated.
    pub fn relayed_addr(&self) -> Option<SocketAddr> {
        lock(&self.shared.core).relayed()
    }

    /// As [`Relay::handle_datagram`].
    pub fn handle_datagram(&self, from: SocketAddr, bytes: &[u8]) -> Input {
        self.shared.take(from, bytes)
    }

    /// Starts adding `peer` (a permission for its IP and a channel) without waiting: the
    /// requests are sent now and retransmitted by [`poll`](Self::poll); whether it is in place
    /// shows in [`has_permission`](Self::has_permission).
    pub fn start_add_peer(&self, peer: SocketAddr) -> Result<(), TurnError> {
        let mut core = lock(&self.shared.core);
        core.add_peer(peer, Instant::now())?;
        self.shared.flush(&mut core, Instant::now());
        Ok(())
    }

    /// Starts installing a permission for `peer`'s IP (any port of it may then send to us
    /// through the relay) without waiting, as [`start_add_peer`](Self::start_add_peer) but
    /// with no channel.
    pub fn start_permission(&self, peer: SocketAddr) -> Result<(), TurnError> {
        let mut core = lock(&self.shared.core);
        core.create_permission(peer, Instant::now())?;
        self.shared.flush(&mut core, Instant::now());
        Ok(())
    }

    /// Whether the server has a permission for `ip` installed.
    pub fn has_permission(&self, ip: std::net::IpAddr) -> bool {
        lock(&self.shared.core).has_permission(ip)
    }

    /// The first failure the core reported since the last call (a refused permission, a
    /// lost allocation), taking the events the core queued.
    pub fn take_failure(&self) -> Option<TurnError> {
        let mut core = lock(&self.shared.core);
        let mut failed = None;
        while let Some(e) = core.poll_event() {
            if let Event::Failed(e) = e {
                failed.get_or_insert(e);
            }
        }
        failed
    }

    /// As [`Relay::send_to`].
    pub fn send_to(&self, payload: &[u8], peer: SocketAddr) -> Result<(), TurnError> {
        self.shared.send_payload(payload, peer)
    }

    /// As [`Relay::poll`]: sends what falls due now; when to call again.
    pub fn poll(&self) -> Option<Instant> {
        self.shared.poll_now()
    }

    /// Over TCP: the next payload from a peer that the stream's reader took in, waiting until
    /// `deadline`. Over UDP the link never reads the socket: `None` once `deadline` passes
    /// (what arrives on the socket comes from [`handle_datagram`](Self::handle_datagram)).
    pub fn recv_timeout(&self, deadline: Instant) -> Option<(SocketAddr, Vec<u8>)> {
        self.shared.next_payload(deadline)
    }

    /// As [`Relay::accept_tcp`], without holding the handle: the next peer (with a
    /// permission, [`start_permission`](Self::start_permission)) that connects to the relayed
    /// address of a TCP relay by `wait_until` (`None` if none did), and the data connection
    /// bound to it by `deadline`.
    pub fn accept_tcp(
        &self,
        wait_until: Instant,
        deadline: Instant,
    ) -> Result<Option<(SocketAddr, TcpStream)>, TurnError> {
        self.shared.try_accept_tcp(wait_until, deadline)
    }

    /// Whether the allocation relays TCP (RFC 6062).
    pub fn is_tcp_relay(&self) -> bool {
        lock(&self.shared.core).is_tcp_relay()
    }

    /// Over TCP: whether the stream to the server ended.
    pub fn is_closed(&self) -> bool {
        self.shared.closed.load(Ordering::Relaxed)
    }
}
