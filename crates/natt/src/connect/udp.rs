//! [`UdpConnection`]: the driver of [`Race`] on a mapped UDP socket and its TURN allocation,
//! if it has one: a thread reads the socket (and, over TCP to the server, one more reads the
//! relay's stream), feeds the race and the relay, sends what they ask for, and queues the
//! peer's data for [`UdpConnection::recv`].
//!
//! On the hard side of the birthday method ([`Plan::Hard`]: our NAT's mapping varies by
//! destination, the peer's filters) one more thread binds [`HARD_SOCKETS`] - 1 sockets on the
//! mapped socket's IP and runs natt-punch's cold punch on each
//! ([`Race::hard_sockets`], one receive loop per socket with [`natt_core::fanout::scoped`], as
//! `PunchedUdpSocket::punch_hole` does), by the deadline, stopping when the connection is
//! dropped. The mapped socket keeps the relay's allocation and its lanes. The socket that meets
//! the peer becomes the direct path ([`Race::adopt`]): the connection sends and receives
//! through it (that thread reads it from then on), [`UdpConnection::into_direct`] hands it
//! out; the others are closed, as all are when none meets the peer.

use std::collections::VecDeque;
use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::Sender;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock, PoisonError};
use std::thread::{self, JoinHandle};
use std::time::Instant;

use rand::SeedableRng;
use rand::rngs::StdRng;

use natt_core::lease::Stop;
use natt_core::rendezvous::{PrivRendezvousInfo, PubRendezvousInfo};
use natt_core::udp::{Driven, STOP_POLL};
use natt_core::{PortMappings, deadline};
use natt_punch::birthday::{HARD_SOCKETS, Plan};
use natt_punch::{NoPath, PunchError, PunchedUdpSocket};
use natt_turn::{Input, RelayLink, TurnTransport, with_relay};

use super::race::{Chosen, Incoming, Lane, Race, Via};

/// The most datagrams of the peer's kept for [`UdpConnection::recv`]; more are dropped (the
/// oldest first), as a full socket buffer would.
pub const INBOX_LIMIT: usize = 4096;
/// The largest datagram read.
const RECV_BUFFER: usize = 65_536;

/// Which path a connection uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Path {
    /// Plain UDP between the two sockets.
    Direct {
        /// The peer's address.
        peer: SocketAddr,
    },
    /// Through a TURN relay.
    Relayed {
        /// The relayed address the path goes through (ours or the peer's).
        relay: SocketAddr,
        /// Whether the relay is ours (our allocation carries the data) or the peer's (we send
        /// plain UDP to its relayed address).
        ours: bool,
        /// Where the data goes: the peer's address as our relay sees it, or the peer's relayed
        /// address.
        peer: SocketAddr,
    },
}

impl Path {
    /// `"direct"` or `"relay"`.
    pub fn kind(&self) -> &'static str {
        match self {
            Path::Direct { .. } => "direct",
            Path::Relayed { .. } => "relay",
        }
    }

    /// The relayed address, on a relayed path.
    pub fn relay(&self) -> Option<SocketAddr> {
        match self {
            Path::Direct { .. } => None,
            Path::Relayed { relay, .. } => Some(*relay),
        }
    }
}

pub(super) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// What the connection's threads and its handle share.
struct Shared {
    race: Mutex<Race>,
    socket: UdpSocket,
    /// Where `socket` is bound: a dual-stack socket takes IPv4 peers as IPv4-mapped addresses.
    local: SocketAddr,
    relay: Option<RelayLink>,
    /// The relay's server when it is reached over UDP from `socket` (its datagrams arrive
    /// there): read once, not per datagram.
    relay_server: Option<SocketAddr>,
    /// Our relayed address, if we hold an allocation.
    relayed: Option<SocketAddr>,
    /// The hard side's extra socket that met the peer (the birthday method), with its address.
    won: OnceLock<(UdpSocket, SocketAddr)>,
    /// What stops the extra sockets' receive loops (dropped: they stop).
    birthday_stops: Mutex<Vec<Sender<()>>>,
    inbox: Mutex<VecDeque<Vec<u8>>>,
    /// Notified when data arrived (with `inbox`).
    arrived: Condvar,
    /// Notified when the race may have decided (with `race`).
    changed: Condvar,
    stop: AtomicBool,
}

impl Shared {
    /// Sends what the race has due; its next wake.
    fn flush(&self) -> Option<Instant> {
        let mut out = Vec::new();
        let next = {
            let mut race = lock(&self.race);
            let now = Instant::now();
            while let Some(t) = race.poll_transmit(now) {
                out.push(t);
            }
            race.poll_timeout()
        };
        for (via, t) in out {
            if let Err(e) = self.send_via(via, &t.payload, t.destination) {
                log::trace!("fallback: sending to {} ({via:?}) failed: {e}", t.destination);
            }
        }
        self.changed.notify_all();
        next
    }

    /// Sends one datagram to `to` by `via`: the mapped socket, our relay (framed), or the
    /// birthday method's socket that met the peer.
    fn send_via(&self, via: Via, payload: &[u8], to: SocketAddr) -> io::Result<()> {
        match via {
            Via::Socket => self
                .socket
                .send_to(payload, natt_core::family::for_socket(self.local, to))
                .map(drop),
            Via::Relay => match &self.relay {
                Some(relay) => relay.send_to(payload, to).map_err(io::Error::other),
                None => Err(io::Error::new(io::ErrorKind::NotConnected, "no relay")),
            },
            Via::Birthday => match self.won.get() {
                Some((socket, local)) => socket
                    .send_to(payload, natt_core::family::for_socket(*local, to))
                    .map(drop),
                None => Err(io::Error::new(io::ErrorKind::NotConnected, "no birthday socket")),
            },
        }
    }

    /// Takes what arrived `via` from `from`.
    fn take(&self, via: Via, from: SocketAddr, data: &[u8]) {
        let got = lock(&self.race).handle(Instant::now(), via, from, data);
        match got {
            Incoming::Data(d) => {
                let mut inbox = lock(&self.inbox);
                if inbox.len() >= INBOX_LIMIT {
                    inbox.pop_front();
                }
                inbox.push_back(d);
                drop(inbox);
                self.arrived.notify_all();
            }
            Incoming::Punch => {
                self.flush();
            }
            Incoming::Stranger => {}
        }
    }

    /// A datagram read from the socket: the relay's (its server's) or plain UDP.
    fn received(&self, from: SocketAddr, data: &[u8]) {
        if let Some(relay) = &self.relay
            && self.relay_server == Some(from)
        {
            if let Input::Data { peer, payload } = relay.handle_datagram(from, data) {
                self.take(Via::Relay, peer, &payload);
            }
            return;
        }
        self.take(Via::Socket, from, data);
    }

    fn stopped(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }
}

/// Reads the socket until told to stop.
fn read_socket(shared: &Shared) {
    let mut buf = vec![0; RECV_BUFFER];
    while !shared.stopped() {
        let now = Instant::now();
        let mut wake = now + STOP_POLL;
        if let Some(next) = shared.flush() {
            wake = wake.min(next);
        }
        if let Some(relay) = &shared.relay
            && let Some(next) = relay.poll()
        {
            wake = wake.min(next);
        }
        read_once(&shared.socket, &mut buf, wake, "the socket", |from, data| {
            shared.received(from, data);
        });
    }
}

/// One wait for a datagram on `socket` until `wake`, given to `take`; a refusal or reset (an
/// ICMP report of an earlier send) is passed over, another error logged (reading `what`) and
/// followed by a short pause, so that the loop around it neither ends nor spins.
fn read_once(socket: &UdpSocket, buf: &mut [u8], wake: Instant, what: &str, take: impl FnOnce(SocketAddr, &[u8])) {
    match recv_until(socket, buf, wake) {
        Ok(Some((n, from))) => take(from, buf.get(..n).unwrap_or_default()),
        Ok(None) => {}
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::ConnectionRefused | io::ErrorKind::ConnectionReset
            ) => {}
        Err(e) => {
            log::debug!("fallback: reading {what}: {e}");
            thread::sleep(deadline::MIN_WAIT);
        }
    }
}

/// Receives a datagram on `socket` by about `wake`, in blocking mode with a read timeout
/// only. Not natt-core's `deadline::recv_from_until`, which finishes short waits in
/// non-blocking mode: that mode is a flag of the socket shared by its clones, and the
/// application sends on a clone meanwhile (a send in non-blocking mode fails, instead of
/// waiting, when the socket's buffer is full). A wait is at most [`STOP_POLL`] and at least a
/// millisecond; the kernel rounds it up by a timer tick at most.
fn recv_until(socket: &UdpSocket, buf: &mut [u8], wake: Instant) -> io::Result<Option<(usize, SocketAddr)>> {
    let wait = wake
        .saturating_duration_since(Instant::now())
        .clamp(deadline::MIN_WAIT, STOP_POLL);
    socket.set_read_timeout(Some(wait))?;
    match socket.recv_from(buf) {
        Ok((n, from)) => Ok(Some((n, natt_core::family::canonical(from)))),
        Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => Ok(None),
        Err(e) => Err(e),
    }
}

/// The hard side of the birthday method: binds the extra sockets on `local`'s IP and runs
/// their punches until one meets the peer (adopted: then this thread reads its socket), all
/// lost, the `deadline` or the connection's stop.
fn run_birthday(shared: &Shared, local: SocketAddr, deadline: Instant) {
    let mut sockets = Vec::with_capacity(HARD_SOCKETS - 1);
    while sockets.len() < HARD_SOCKETS - 1 {
        match UdpSocket::bind(SocketAddr::new(local.ip(), 0)) {
            Ok(s) => sockets.push(s),
            Err(e) => {
                log::warn!(
                    "fallback: the birthday method could bind only {} more sockets: {e}",
                    sockets.len()
                );
                break;
            }
        }
    }
    let locals: Result<Vec<SocketAddr>, _> = sockets.iter().map(UdpSocket::local_addr).collect();
    let start = Instant::now();
    let members = match locals {
        Ok(locals) => lock(&shared.race).hard_sockets(&locals, start),
        Err(e) => {
            log::warn!("fallback: the birthday method's sockets: {e}");
            Vec::new()
        }
    };
    let mut stops = Vec::with_capacity(members.len());
    {
        let mut senders = lock(&shared.birthday_stops);
        for _ in &members {
            let (tx, stop) = Stop::new();
            senders.push(tx);
            stops.push(stop);
        }
    }
    // Stopped meanwhile (the senders pushed after the connection dropped them): stop here.
    if members.is_empty() || shared.stopped() {
        lock(&shared.race).birthday_over();
        return;
    }
    log::info!(
        "fallback: our NAT gives each destination its own port: {} more sockets probe the peer",
        members.len()
    );
    let finished = natt_core::fanout::scoped(
        "natt-fallback-birthday",
        start,
        sockets.iter().zip(members).zip(stops),
        |((socket, mut member), stop)| {
            let driven = natt_core::udp::drive_until_stopped(socket, &mut [&mut member], deadline, Some(&stop));
            if let Err(e) = &driven {
                log::debug!("fallback: birthday socket {}: {e}", member.index());
            }
            (member, matches!(driven, Ok(Driven::Done(_))))
        },
    );
    // Only the group's winner can be done: the others went silent when it claimed the group.
    let winner = finished
        .into_iter()
        .filter_map(|f| f.result.ok())
        .find(|(m, done)| *done && m.puncher().peer().is_some())
        .map(|(m, _)| m);
    let Some(member) = winner else {
        log::debug!("fallback: the birthday method met nobody; its sockets are closed");
        lock(&shared.race).birthday_over();
        return;
    };
    let index = member.index();
    let Some(socket) = sockets.into_iter().nth(index.saturating_sub(1)) else {
        lock(&shared.race).birthday_over();
        return;
    };
    // The other sockets are closed by now (dropped with `sockets`).
    let adopted = match (socket.try_clone(), socket.local_addr()) {
        (Ok(clone), Ok(addr)) => {
            let mut race = lock(&shared.race);
            let fresh = shared.won.set((clone, addr)).is_ok();
            fresh && race.adopt(Instant::now(), member.into_puncher())
        }
        (Err(e), _) | (_, Err(e)) => {
            log::warn!("fallback: the birthday socket: {e}");
            false
        }
    };
    if !adopted {
        lock(&shared.race).birthday_over();
        return;
    }
    shared.flush();
    shared.changed.notify_all();
    let mut buf = vec![0; RECV_BUFFER];
    while !shared.stopped() {
        read_once(
            &socket,
            &mut buf,
            Instant::now() + STOP_POLL,
            "the birthday socket",
            |from, data| {
                shared.take(Via::Birthday, from, data);
            },
        );
    }
}

/// Over TCP to the TURN server: takes the peer's data that the relay's stream brought.
fn read_relay_stream(shared: &Shared, relay: &RelayLink) {
    while !shared.stopped() && !relay.is_closed() {
        if let Some((peer, payload)) = relay.recv_timeout(Instant::now() + STOP_POLL) {
            shared.take(Via::Relay, peer, &payload);
        }
    }
}

/// A connection to the peer over whichever path won: direct, or through a TURN relay (see the
/// [module documentation](super)). Send and receive with [`send`](Self::send) and
/// [`recv`](Self::recv), which frame relayed data; a direct path can be taken out as a plain
/// socket with [`into_direct`](Self::into_direct). Dropping it stops its threads and releases
/// the socket's port mappings (the TURN allocation among them), waiting for that.
pub struct UdpConnection {
    shared: Arc<Shared>,
    threads: Vec<JoinHandle<()>>,
    port_mappings: Mutex<Option<PortMappings>>,
    socket: UdpSocket,
}

impl std::fmt::Debug for UdpConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UdpConnection")
            .field("local", &self.socket.local_addr().ok())
            .field("path", &self.path())
            .finish()
    }
}

impl UdpConnection {
    /// Connects to the peer from `socket` (a mapped socket whose endpoints went into our
    /// rendezvous info), by `deadline`: punches the direct paths and the relayed ones at once
    /// and takes a direct path if one confirms, else the relayed one (see the module
    /// documentation). Our relay is the TURN allocation among `port_mappings` (the `turn`
    /// technique's, [`with_relay`]), if any; the peer's is its token's `turn` endpoint, if any.
    /// With neither, this is the plain punch with its data behind [`send`](Self::send) and
    /// [`recv`](Self::recv).
    ///
    /// Through a symmetric NAT on one side, the direct path is the birthday method's (see the
    /// module documentation): on our symmetric side, the socket that met the peer may be
    /// another than `socket` ([`into_direct`](Self::into_direct) hands it out). With both
    /// sides symmetric and no relay at all, it fails after 2 s with
    /// [`PunchError::NoDirectPath`] ([`NoPath::BothSymmetric`]).
    ///
    /// `port_mappings` are held by the connection (the allocation is refreshed meanwhile) and
    /// released when it is dropped, or handed back by [`into_direct`](Self::into_direct).
    pub fn connect(
        socket: UdpSocket,
        port_mappings: PortMappings,
        our_priv_rendezvous_info: PrivRendezvousInfo,
        their_pub_rendezvous_info: PubRendezvousInfo,
        deadline: Instant,
    ) -> Result<UdpConnection, PunchError> {
        if deadline <= Instant::now() {
            return Err(PunchError::DeadlinePassed);
        }
        let local = socket.local_addr()?;
        // Blocking sends for the application (see `recv_until`).
        socket.set_nonblocking(false)?;
        let relay = with_relay(&port_mappings, |r| r.is_allocated().then(|| r.link())).flatten();
        let relayed = relay.as_ref().and_then(RelayLink::relayed_addr);
        let race = Race::new(
            local,
            &our_priv_rendezvous_info,
            &their_pub_rendezvous_info,
            relayed.is_some(),
            Instant::now(),
            StdRng::from_os_rng(),
        )?;
        let permissions = race.relay_peers();
        let hard = race.plan() == Plan::Hard;
        let relay_server = relay
            .as_ref()
            .filter(|r| r.transport() == TurnTransport::Udp)
            .map(RelayLink::server);
        let shared = Arc::new(Shared {
            race: Mutex::new(race),
            socket: socket.try_clone()?,
            local,
            relay,
            relay_server,
            relayed,
            won: OnceLock::new(),
            birthday_stops: Mutex::new(Vec::new()),
            inbox: Mutex::new(VecDeque::new()),
            arrived: Condvar::new(),
            changed: Condvar::new(),
            stop: AtomicBool::new(false),
        });
        let mut connection = UdpConnection {
            shared: Arc::clone(&shared),
            threads: Vec::new(),
            port_mappings: Mutex::new(Some(port_mappings)),
            socket,
        };
        let reader = Arc::clone(&shared);
        connection.threads.push(
            thread::Builder::new()
                .name("natt-fallback".into())
                .spawn(move || read_socket(&reader))?,
        );
        if hard {
            let birthday = Arc::clone(&shared);
            connection.threads.push(
                thread::Builder::new()
                    .name("natt-fallback-birthday".into())
                    .spawn(move || run_birthday(&birthday, local, deadline))?,
            );
        }
        if let Some(relay) = shared.relay.clone() {
            if relay.transport() == TurnTransport::Tcp {
                let reader = Arc::clone(&shared);
                connection.threads.push(
                    thread::Builder::new()
                        .name("natt-fallback-relay".into())
                        .spawn(move || read_relay_stream(&reader, &relay))?,
                );
            }
            if let Some(relay) = &shared.relay {
                for peer in permissions {
                    // A permission is for the IP, any port (RFC 8656 section 9): the peer's
                    // NAT may send from a port no server saw.
                    if let Err(e) = relay.start_permission(peer) {
                        log::warn!("fallback: no permission for {} on the relay: {e}", peer.ip());
                    }
                }
            }
        }
        log::debug!("fallback: connecting from {local} (relayed {relayed:?})");
        {
            let mut race = lock(&shared.race);
            loop {
                if race.chosen().is_some() {
                    break;
                }
                let now = Instant::now();
                if now >= deadline {
                    let why = race.diagnosis();
                    drop(race);
                    return Err(PunchError::TimedOut(why));
                }
                if race.hopeless_at().is_some_and(|at| now >= at) {
                    drop(race);
                    return Err(PunchError::NoDirectPath(NoPath::BothSymmetric));
                }
                let wait = deadline.min(now + STOP_POLL).saturating_duration_since(now);
                race = shared
                    .changed
                    .wait_timeout(race, wait.max(deadline::MIN_WAIT))
                    .unwrap_or_else(PoisonError::into_inner)
                    .0;
            }
        }
        if let Some(relay) = &shared.relay {
            if let Some(e) = relay.take_failure() {
                log::warn!("fallback: the relay reported: {e}");
            }
            // Through our relay: a channel to the peer's address as the relay sees it, so that
            // data goes as ChannelData (4 bytes of framing) rather than Send indications.
            if let Some(c) = lock(&shared.race).chosen()
                && c.lane.via() == Via::Relay
                && let Err(e) = relay.start_add_peer(c.peer)
            {
                log::debug!("fallback: no channel to {}: {e}", c.peer);
            }
        }
        log::info!("fallback: connected from {local}: {:?}", connection.path());
        Ok(connection)
    }

    /// The path the connection uses now (it moves from a relayed path to a direct one when
    /// that opens).
    pub fn path(&self) -> Option<Path> {
        let chosen = lock(&self.shared.race).chosen()?;
        Some(self.path_of(chosen))
    }

    fn path_of(&self, c: Chosen) -> Path {
        match c.lane {
            Lane::Direct => Path::Direct { peer: c.peer },
            Lane::OwnRelay | Lane::RelayToRelay => Path::Relayed {
                relay: self.shared.relayed.unwrap_or(c.peer),
                ours: true,
                peer: c.peer,
            },
            _ => Path::Relayed {
                relay: c.peer,
                ours: false,
                peer: c.peer,
            },
        }
    }

    /// How many times the connection moved from a relayed path to a direct one.
    pub fn moves(&self) -> u32 {
        lock(&self.shared.race).moves()
    }

    /// The socket's local address.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.socket.local_addr()
    }

    /// Sends one datagram to the peer on the current path (through our relay, framed, on a
    /// relayed path of ours).
    pub fn send(&self, payload: &[u8]) -> io::Result<()> {
        let (chosen, via) = {
            let race = lock(&self.shared.race);
            race.chosen().zip(race.chosen_via())
        }
        .ok_or_else(|| io::Error::new(io::ErrorKind::NotConnected, "no path"))?;
        self.shared.send_via(via, payload, chosen.peer)
    }

    /// The peer's next datagram, waiting until `deadline`: `None` if none came by then. Data
    /// is taken from every path confirmed to the peer (so none is lost while the connection
    /// moves to a direct path); punch messages and datagrams from anyone else are dropped.
    pub fn recv(&self, deadline: Instant) -> Option<Vec<u8>> {
        let mut inbox = lock(&self.shared.inbox);
        loop {
            if let Some(d) = inbox.pop_front() {
                return Some(d);
            }
            let now = Instant::now();
            if now >= deadline {
                return None;
            }
            let wait = deadline.min(now + STOP_POLL).saturating_duration_since(now);
            inbox = self
                .shared
                .arrived
                .wait_timeout(inbox, wait.max(deadline::MIN_WAIT))
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }

    /// On a direct path: stops the connection's threads and hands out the plain socket and the
    /// peer's address, with the port mappings (the relay's allocation among them, to be
    /// released by the caller). Datagrams received but not yet read with
    /// [`recv`](Self::recv) are dropped, and the peer's last punch messages may still arrive
    /// (see [`crate::is_punch_packet`]). On a relayed path: `Err(self)`.
    pub fn into_direct(mut self) -> Result<(PunchedUdpSocket, PortMappings), Self> {
        let Some(Path::Direct { peer }) = self.path() else {
            return Err(self);
        };
        let via = lock(&self.shared.race).chosen_via();
        self.stop_threads();
        // The socket as it came: blocking, without the reader's read timeout. On the birthday
        // method's hard side, the socket that met the peer.
        let direct = match (via, self.shared.won.get()) {
            (Some(Via::Birthday), Some((won, _))) => won,
            _ => &self.socket,
        };
        let socket = match direct.set_read_timeout(None).and_then(|()| direct.try_clone()) {
            Ok(s) => s,
            Err(e) => {
                log::warn!("fallback: cannot hand out the socket: {e}");
                return Err(self);
            }
        };
        let port_mappings = lock(&self.port_mappings).take().unwrap_or_default();
        Ok((
            PunchedUdpSocket {
                socket,
                peer_addr: peer,
            },
            port_mappings,
        ))
    }

    fn stop_threads(&mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
        // The birthday method's receive loops stop when their senders are dropped.
        lock(&self.shared.birthday_stops).clear();
        self.shared.changed.notify_all();
        self.shared.arrived.notify_all();
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }

    /// Stops the threads and releases the port mappings (deleting the TURN allocation),
    /// waiting for that (bounded). Dropping the connection does the same.
    pub fn close(mut self) {
        self.shut();
    }

    fn shut(&mut self) {
        self.stop_threads();
        let taken = lock(&self.port_mappings).take();
        if let Some(mut pm) = taken {
            pm.release();
        }
    }
}

impl Drop for UdpConnection {
    fn drop(&mut self) {
        self.shut();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use natt_core::MappedSocketAddr;
    use natt_core::rendezvous::gen_rendezvous_info;
    use std::time::Duration;

    #[test]
    fn direct_on_loopback_with_data_both_ways() {
        let a = UdpSocket::bind("127.0.0.1:0").unwrap();
        let b = UdpSocket::bind("127.0.0.1:0").unwrap();
        let ea = vec![MappedSocketAddr::new(a.local_addr().unwrap(), false, "local")];
        let eb = vec![MappedSocketAddr::new(b.local_addr().unwrap(), false, "local")];
        let (ap, apu) = gen_rendezvous_info(ea);
        let (bp, bpu) = gen_rendezvous_info(eb);
        let deadline = Instant::now() + Duration::from_secs(10);
        let t = thread::spawn(move || UdpConnection::connect(b, PortMappings::default(), bp, apu, deadline).unwrap());
        let ca = UdpConnection::connect(a, PortMappings::default(), ap, bpu, deadline).unwrap();
        let cb = t.join().unwrap();
        assert_eq!(ca.path().unwrap().kind(), "direct");
        assert_eq!(cb.path().unwrap().kind(), "direct");
        ca.send(b"ping").unwrap();
        assert_eq!(cb.recv(deadline).unwrap(), b"ping");
        cb.send(b"pong").unwrap();
        assert_eq!(ca.recv(deadline).unwrap(), b"pong");
        let (punched, _) = ca.into_direct().unwrap();
        assert_eq!(punched.socket.read_timeout().unwrap(), None);
        punched.socket.send_to(b"raw", punched.peer_addr).unwrap();
        assert_eq!(cb.recv(deadline).unwrap(), b"raw");
    }

    /// The birthday method on loopback: A's token says its mapping varies (two "observed"
    /// ports, where sockets that never answer sit) and B's lists only such a port too, so
    /// neither mapped socket is reached at a listed address: B's spray of 127.0.0.1 meets one
    /// of A's extra sockets (or, rarely, A's mapped socket), which becomes A's direct path.
    #[test]
    fn the_hard_sides_extra_socket_becomes_the_direct_path_on_loopback() {
        let a = UdpSocket::bind("127.0.0.1:0").unwrap();
        let b = UdpSocket::bind("127.0.0.1:0").unwrap();
        let holes: Vec<UdpSocket> = (0..3).map(|_| UdpSocket::bind("127.0.0.1:0").unwrap()).collect();
        let seen = |s: &UdpSocket| MappedSocketAddr::new(s.local_addr().unwrap(), true, "stun");
        let (ap, apu) = gen_rendezvous_info(vec![seen(&holes[0]), seen(&holes[1])]);
        let (bp, bpu) = gen_rendezvous_info(vec![seen(&holes[2])]);
        assert!(apu.mapping_varies && !bpu.mapping_varies);
        let a_mapped = a.local_addr().unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        let t = thread::spawn(move || UdpConnection::connect(b, PortMappings::default(), bp, apu, deadline).unwrap());
        let ca = UdpConnection::connect(a, PortMappings::default(), ap, bpu, deadline).unwrap();
        let cb = t.join().unwrap();
        assert_eq!(lock(&ca.shared.race).plan(), Plan::Hard);
        assert_eq!(lock(&cb.shared.race).plan(), Plan::Easy);
        assert_eq!(ca.path().unwrap().kind(), "direct");
        assert_eq!(cb.path().unwrap().kind(), "direct");
        ca.send(b"ping").unwrap();
        assert_eq!(cb.recv(deadline).unwrap(), b"ping");
        cb.send(b"pong").unwrap();
        assert_eq!(ca.recv(deadline).unwrap(), b"pong");
        let Some(Path::Direct { peer }) = cb.path() else {
            panic!()
        };
        let (punched, _) = ca.into_direct().unwrap();
        // The socket handed out is the one B talks to: one of the extra sockets, unless B's
        // spray met A's mapped socket first (1 in 256; without the extra sockets, B's 2048
        // probes would meet the mapped socket 3 times in 100, and this test would fail).
        assert_eq!(punched.socket.local_addr().unwrap(), peer);
        if peer == a_mapped {
            log::warn!("the spray met the mapped socket first");
        }
        punched.socket.send_to(b"raw", punched.peer_addr).unwrap();
        assert_eq!(cb.recv(deadline).unwrap(), b"raw");
    }

    /// Two symmetric sides without a relay: the clear error, as `punch_hole` gives, well
    /// before a deadline far away.
    #[test]
    fn two_symmetric_sides_without_a_relay_fail_saying_why() {
        let a = UdpSocket::bind("127.0.0.1:0").unwrap();
        let holes: Vec<UdpSocket> = (0..4).map(|_| UdpSocket::bind("127.0.0.1:0").unwrap()).collect();
        let seen = |s: &UdpSocket| MappedSocketAddr::new(s.local_addr().unwrap(), true, "stun");
        let (ap, _) = gen_rendezvous_info(vec![seen(&holes[0]), seen(&holes[1])]);
        let (_, bpu) = gen_rendezvous_info(vec![seen(&holes[2]), seen(&holes[3])]);
        let deadline = Instant::now() + Duration::from_secs(60);
        let e = UdpConnection::connect(a, PortMappings::default(), ap, bpu, deadline).unwrap_err();
        assert!(matches!(e, PunchError::NoDirectPath(NoPath::BothSymmetric)), "{e}");
    }

    #[test]
    fn nobody_there_fails_by_the_deadline() {
        let a = UdpSocket::bind("127.0.0.1:0").unwrap();
        let gone = UdpSocket::bind("127.0.0.1:0").unwrap();
        let ea = vec![MappedSocketAddr::new(a.local_addr().unwrap(), false, "local")];
        let eb = vec![MappedSocketAddr::new(gone.local_addr().unwrap(), false, "local")];
        let (ap, _) = gen_rendezvous_info(ea);
        let (_, bpu) = gen_rendezvous_info(eb);
        let e = UdpConnection::connect(
            a,
            PortMappings::default(),
            ap,
            bpu,
            Instant::now() + Duration::from_millis(300),
        )
        .unwrap_err();
        assert!(matches!(e, PunchError::TimedOut(_)), "{e}");
    }
}
