//! TCP hole punching: [`tcp_punch_hole`] connects from the mapped, reusable socket's port to
//! every usable peer endpoint at once, again until a connection is up (the peers' SYNs cross
//! in their NATs: a simultaneous open), while also accepting on that port. Every stream that
//! comes up from an address of the peer runs the authenticated handshake of
//! [`crate::choose`] (one frame each way, bound to the stream), so both sides end up with the
//! same single stream half a round trip after it connects, and close the others.
//!
//! [`tcp_punch_hole_with_relay`] is the same punch with streams through TURN relays (RFC 6062)
//! as a fallback: the peer's relayed (`turn`) endpoints are connected to like any other, and
//! the streams our own relay hands over (accepted by the caller) run the same handshake, bound
//! to our relayed address; a relayed stream is chosen only when no direct one is
//! ([`crate::choose`]).
//!
//! TCP through a symmetric NAT is out of scope: the birthday method ([`crate::birthday`]) is
//! UDP's only (256 simultaneous opens from random ports would cost a router far more than
//! datagrams do). A pair that needs it is served by a relay (above).
//!
//! This module is the thin driver: threads for the listener and for each connection attempt
//! and stream, feeding [`StreamChooser`] through one channel. Its limits:
//! - connections from addresses whose IP the peer's token does not list are closed at once;
//!   at most [`MAX_HANDSHAKES_PER_IP`] accepted streams per source IP, and
//!   [`MAX_ACCEPTED_HANDSHAKES`] in all, are in their handshake at a time, each for at most
//!   [`HANDSHAKE_TIMEOUT`];
//! - a connection attempt that fails is retried after a pause that doubles from
//!   [`FIRST_RETRY`] up to [`MAX_RETRY`], and a stream that fails is followed by a new attempt;
//!   at most [`MAX_CONNECT_ATTEMPTS`] attempts are made to each endpoint.

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, Sender};
use std::thread;
use std::time::{Duration, Instant};

use rand::Rng;
use socket2::Socket;

use natt_core::deadline;
use natt_core::rendezvous::{PrivRendezvousInfo, PubRendezvousInfo};
use natt_core::reuse::reusable_tcp_socket_from;
use natt_core::server_loop::SourceSlots;

use crate::choose::{Action, StreamChooser};
pub use crate::choose::{HANDSHAKE_TIMEOUT, LOCAL_HEAD_START, SWITCH_AFTER};
use crate::error::{NoPath, PunchError};
use crate::keys::SessionKeys;
use crate::path::Paths;
use crate::wire::{self, Kind, MESSAGE_LEN, Message, NONCE_LEN};

/// How often connection attempts and the listener are checked.
const POLL: Duration = Duration::from_millis(2);
/// Threads waiting on a stream check this often whether the punch is over.
const SLICE: Duration = Duration::from_millis(100);
/// At most this many accepted connections are in their handshake at once; more are closed.
pub const MAX_ACCEPTED_HANDSHAKES: usize = 32;
/// At most this many accepted connections from one IP address are in their handshake at once.
pub const MAX_HANDSHAKES_PER_IP: usize = 8;
/// The first pause before a failed connection attempt is retried.
pub const FIRST_RETRY: Duration = Duration::from_millis(100);
/// The longest pause between connection attempts to one endpoint.
pub const MAX_RETRY: Duration = Duration::from_secs(2);
/// The most connection attempts to one endpoint in one punch.
pub const MAX_CONNECT_ATTEMPTS: u32 = 12;

/// A stream that our own TURN relay handed over (RFC 6062: the data connection bound to a
/// peer's connection to our relayed address), for [`tcp_punch_hole_with_relay`].
#[derive(Debug)]
pub struct RelayedStream {
    /// The data connection; it carries the peer's bytes.
    pub stream: TcpStream,
    /// The peer's address as the relay saw it (its XOR-PEER-ADDRESS).
    pub peer: SocketAddr,
}

/// What [`tcp_punch_hole_with_relay`] ends with.
#[derive(Debug)]
#[non_exhaustive]
pub struct TcpPunched {
    /// The stream both sides agreed on.
    pub stream: TcpStream,
    /// Its far end as the punch sees it: the peer; on a stream through a relay, the peer's
    /// relayed address (its relay) or the peer as our relay sees it (ours).
    pub remote: SocketAddr,
    /// How the stream goes.
    pub route: Route,
}

/// How a stream goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Route {
    /// Straight between the two hosts.
    Direct,
    /// To the peer's relayed address (the peer's relay).
    PeerRelay,
    /// Through our own relay, which handed us the stream.
    OwnRelay,
}

/// What the stream threads tell the chooser.
enum Event {
    /// A stream is up (a clone of it, to write choose on, and to hand over), by its route.
    Up(u64, TcpStream, SocketAddr, Route),
    /// The peer's authenticated frame, bound to this stream, arrived on stream `id`.
    Frame(u64, Kind),
    /// Stream `id` failed, or something other than our peer is at its other end.
    Failed(u64, Failure),
    /// A connection attempt to this endpoint was refused (nobody listens there).
    Refused,
}

/// Why a stream was given up, for the punch's error.
enum Failure {
    /// The frame on it does not authenticate: another session (a stale or wrong token).
    Unauthentic,
    /// The frame authenticates but was sent to another address than ours (relayed).
    Elsewhere(SocketAddr),
    /// The stream failed or timed out.
    Io(String),
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Unauthentic => f.write_str("not our peer (the frame does not authenticate)"),
            Failure::Elsewhere(a) => write!(
                f,
                "the peer's frame was sent to {a}, not to one of our addresses (relayed?)"
            ),
            Failure::Io(e) => f.write_str(e),
        }
    }
}

/// What happened on the streams, for the error when no stream was agreed on.
#[derive(Default)]
struct Tally {
    unauthentic: u32,
    elsewhere: u32,
    refused: u32,
}

/// Performs a TCP rendezvous connect. `socket` should come from a `MappedTcpSocket` (bound,
/// reusable, neither listening nor connected). Returns the one authenticated stream both sides
/// agreed on, by `deadline`.
///
#[cfg_attr(not(doctest), doc = include_str!("../doc/tcp_punch_hole.md"))]
pub fn tcp_punch_hole(
    socket: Socket,
    our_priv_rendezvous_info: PrivRendezvousInfo,
    their_pub_rendezvous_info: PubRendezvousInfo,
    deadline: Instant,
) -> Result<TcpStream, PunchError> {
    punch(
        socket,
        our_priv_rendezvous_info,
        their_pub_rendezvous_info,
        deadline,
        None,
        None,
    )
    .map(|p| p.stream)
}

/// [`tcp_punch_hole`], with streams through TURN relays as a fallback: connections to the
/// peer's relayed (`turn`) endpoints, and the streams our own relay hands over on `relayed`
/// (RFC 6062, accepted by the caller). Every stream runs the same signed handshake: a stream
/// from our relay counts only if the peer saw us at our relayed address exactly, one to the
/// peer's relay only if the peer saw us at an address of ours that is not a relay's. A relayed
/// stream is taken only when no direct one can be ([`crate::choose`]: after the peer's hello
/// on it and [`RELAY_GRACE`](crate::choose::RELAY_GRACE)). Which stream won, and how it goes,
/// is in the result.
pub fn tcp_punch_hole_with_relay(
    socket: Socket,
    our_priv_rendezvous_info: PrivRendezvousInfo,
    their_pub_rendezvous_info: PubRendezvousInfo,
    deadline: Instant,
    relayed: Receiver<RelayedStream>,
) -> Result<TcpPunched, PunchError> {
    punch(
        socket,
        our_priv_rendezvous_info,
        their_pub_rendezvous_info,
        deadline,
        Some(relayed),
        None,
    )
}

/// [`tcp_punch_hole`] for direct streams only, which ends early when `cancel` is set: the
/// peer's relayed (`turn`) endpoints are left out. natt's `connect::tcp` runs it in the
/// background while a connection goes through a relay, to move the connection to the stream
/// it returns ([`crate::records`]). Cancelled: `PunchError::Io` of kind `Interrupted`.
pub fn tcp_punch_direct(
    socket: Socket,
    our_priv_rendezvous_info: PrivRendezvousInfo,
    mut their_pub_rendezvous_info: PubRendezvousInfo,
    deadline: Instant,
    cancel: Arc<AtomicBool>,
) -> Result<TcpPunched, PunchError> {
    their_pub_rendezvous_info
        .endpoints
        .retain(|e| e.technique != crate::path::TURN);
    let punched = punch(
        socket,
        our_priv_rendezvous_info,
        their_pub_rendezvous_info,
        deadline,
        None,
        Some(Arc::clone(&cancel)),
    );
    if cancel.load(Ordering::SeqCst) {
        return Err(PunchError::Io(io::Error::new(
            io::ErrorKind::Interrupted,
            "the punch was cancelled",
        )));
    }
    punched
}

fn punch(
    socket: Socket,
    our_priv_rendezvous_info: PrivRendezvousInfo,
    their_pub_rendezvous_info: PubRendezvousInfo,
    deadline: Instant,
    relayed: Option<Receiver<RelayedStream>>,
    cancel: Option<Arc<AtomicBool>>,
) -> Result<TcpPunched, PunchError> {
    if deadline <= Instant::now() {
        return Err(PunchError::DeadlinePassed);
    }
    let keys = Arc::new(SessionKeys::new(&our_priv_rendezvous_info, &their_pub_rendezvous_info)?);
    let local = socket
        .local_addr()?
        .as_socket()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "not an IP socket"))?;
    let paths = Arc::new(Paths::new(
        local,
        &our_priv_rendezvous_info.endpoints,
        &their_pub_rendezvous_info.endpoints,
    )?);
    socket.listen(16)?;
    let listener: TcpListener = socket.into();
    listener.set_nonblocking(true)?;
    let stop = Arc::new(AtomicBool::new(false));
    let (events_tx, events_rx) = mpsc::channel::<Event>();
    let ctx = Ctx {
        keys: Arc::clone(&keys),
        paths: Arc::clone(&paths),
        stop: Arc::clone(&stop),
        deadline,
        events: events_tx,
        next_id: Arc::new(AtomicU64::new(0)),
        cancel,
    };
    let started = (|| {
        spawn("natt-punch-accept", {
            let ctx = ctx.clone();
            move || accept(&listener, &ctx)
        })?;
        if let Some(relayed) = relayed {
            let ctx = ctx.clone();
            spawn("natt-punch-relayed", move || accept_relayed(&relayed, &ctx))?;
        }
        for &target in paths.targets() {
            let ctx = ctx.clone();
            spawn("natt-punch-connect", move || connect(local, target, &ctx))?;
        }
        io::Result::Ok(())
    })();
    if let Err(e) = started {
        // The threads already started stop at once rather than at the deadline.
        stop.store(true, Ordering::SeqCst);
        return Err(e.into());
    }
    let ctx_cancel = ctx.cancel.clone();
    drop(ctx);
    let peer_has_ipv6 = paths.targets().iter().any(SocketAddr::is_ipv6);
    let chooser = StreamChooser::new(keys.role, paths.peer_locals(), Instant::now()).prefer_ipv6(peer_has_ipv6);
    let result = run_chooser(chooser, &keys, &paths, &events_rx, deadline, ctx_cancel.as_deref());
    stop.store(true, Ordering::SeqCst);
    let (stream, peer, route) = result?;
    stream.set_read_timeout(None)?;
    stream.set_write_timeout(None)?;
    log::info!("TCP punched {local} <-> {peer} ({route:?})");
    Ok(TcpPunched {
        stream,
        remote: peer,
        route,
    })
}

/// Feeds the chooser with the threads' events and carries out its actions until it is done.
fn run_chooser(
    mut chooser: StreamChooser,
    keys: &SessionKeys,
    paths: &Paths,
    events: &Receiver<Event>,
    deadline: Instant,
    cancel: Option<&AtomicBool>,
) -> Result<(TcpStream, SocketAddr, Route), PunchError> {
    let mut up: HashMap<u64, (TcpStream, Route)> = HashMap::new();
    let mut tally = Tally::default();
    while let Some(left) = deadline::remaining(deadline) {
        if cancel.is_some_and(|c| c.load(Ordering::SeqCst)) {
            break;
        }
        let now = Instant::now();
        while let Some(action) = chooser.poll(now) {
            match action {
                Action::SendChoose(id) => {
                    let (Some((stream, _)), Some(remote)) = (up.get_mut(&id), chooser.remote(id)) else {
                        chooser.failed(id, "gone".into());
                        continue;
                    };
                    let frame = wire::encode(
                        keys,
                        &Message {
                            kind: Kind::Choose,
                            flags: 0,
                            nonce: rand::rng().random::<[u8; NONCE_LEN]>(),
                            observed: remote,
                        },
                    );
                    match stream.write_all(&frame) {
                        Ok(()) => log::debug!("{remote}: choose sent"),
                        Err(e) => chooser.failed(id, e.to_string()),
                    }
                }
                Action::Done(id) => {
                    if let (Some((stream, route)), Some(remote)) = (up.remove(&id), chooser.remote(id)) {
                        return Ok((stream, remote, route));
                    }
                    chooser.failed(id, "gone".into());
                }
            }
        }
        let wait = chooser
            .poll_timeout()
            .map_or(left, |t| t.saturating_duration_since(now).min(left))
            .min(SLICE);
        match events.recv_timeout(wait) {
            Ok(Event::Up(id, stream, remote, route)) => {
                up.insert(id, (stream, route));
                if route == Route::Direct {
                    chooser.stream_up(id, remote, Instant::now());
                } else {
                    chooser.stream_up_relayed(id, remote, Instant::now());
                }
            }
            Ok(Event::Frame(id, kind)) => chooser.frame_at(id, kind, Instant::now()),
            Ok(Event::Failed(id, why)) => {
                up.remove(&id);
                match why {
                    Failure::Unauthentic => tally.unauthentic += 1,
                    Failure::Elsewhere(_) => tally.elsewhere += 1,
                    Failure::Io(_) => {}
                }
                chooser.failed(id, why.to_string());
            }
            Ok(Event::Refused) => tally.refused += 1,
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        }
    }
    let addresses = paths.targets().len();
    Err(PunchError::TimedOut(if chooser.heard_peer() {
        NoPath::NotConfirmed("the peer's handshake arrived, but the two sides agreed on no stream".into())
    } else if tally.unauthentic > 0 {
        NoPath::FailedAuthentication {
            count: tally.unauthentic,
        }
    } else if tally.elsewhere > 0 {
        NoPath::AddressedElsewhere {
            count: tally.elsewhere,
            our_ips: paths.own_ips().to_vec(),
        }
    } else if let Some(why) = chooser.last_failure() {
        NoPath::NotConfirmed(format!("no stream with the peer's handshake (last: {why})"))
    } else if tally.refused > 0 {
        NoPath::Refused {
            count: tally.refused,
            addresses,
        }
    } else {
        NoPath::NothingCameBack {
            addresses,
            private_only: paths.peer_private_only(),
        }
    }))
}

/// What every punch thread shares.
#[derive(Clone)]
struct Ctx {
    keys: Arc<SessionKeys>,
    paths: Arc<Paths>,
    stop: Arc<AtomicBool>,
    deadline: Instant,
    events: Sender<Event>,
    next_id: Arc<AtomicU64>,
    /// Set by the caller to end the punch early ([`tcp_punch_direct`]).
    cancel: Option<Arc<AtomicBool>>,
}

impl Ctx {
    fn over(&self) -> bool {
        self.stop.load(Ordering::SeqCst)
            || Instant::now() >= self.deadline
            || self.cancel.as_ref().is_some_and(|c| c.load(Ordering::SeqCst))
    }
}

fn spawn(name: &str, f: impl FnOnce() + Send + 'static) -> io::Result<()> {
    thread::Builder::new().name(name.into()).spawn(f).map(drop)
}

/// Accepts connections on the punch port until the punch is over.
fn accept(listener: &TcpListener, ctx: &Ctx) {
    let slots = SourceSlots::new(MAX_ACCEPTED_HANDSHAKES, MAX_HANDSHAKES_PER_IP);
    while !ctx.over() {
        match listener.accept() {
            Ok((stream, from)) => {
                let from = natt_core::family::canonical(from);
                if !ctx.paths.is_peer(from) {
                    log::debug!("{from}: connection from an address the peer's token does not list; closed");
                    continue;
                }
                let Some(slot) = slots.take(from.ip()) else {
                    log::debug!("{from}: too many handshakes under way; closed");
                    continue;
                };
                log::debug!("accepted {from}");
                let ctx = ctx.clone();
                // The slot is freed when the thread ends (or was never started).
                let spawned = spawn("natt-punch-stream", move || {
                    // Some systems pass the listener's O_NONBLOCK on to accepted sockets.
                    match stream.set_nonblocking(false) {
                        Ok(()) => drop(handshake(stream, from, Route::Direct, &ctx)),
                        Err(e) => log::debug!("{from}: {e}"),
                    }
                    drop(slot);
                });
                if let Err(e) = spawned {
                    log::warn!("cannot handle {from}: {e}");
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => thread::sleep(POLL),
            Err(e) => {
                log::debug!("accept: {e}");
                thread::sleep(Duration::from_millis(10));
            }
        }
    }
}

/// Takes the streams our own relay hands over until the punch is over: each from an address
/// the peer's token lists, within the same limits as accepted ones, runs the handshake.
fn accept_relayed(relayed: &Receiver<RelayedStream>, ctx: &Ctx) {
    let slots = SourceSlots::new(MAX_ACCEPTED_HANDSHAKES, MAX_HANDSHAKES_PER_IP);
    while !ctx.over() {
        let RelayedStream { stream, peer } = match relayed.recv_timeout(SLICE) {
            Ok(r) => r,
            Err(mpsc::RecvTimeoutError::Timeout) => continue,
            Err(mpsc::RecvTimeoutError::Disconnected) => return,
        };
        let peer = natt_core::family::canonical(peer);
        if !ctx.paths.is_peer(peer) {
            log::debug!("{peer}: relayed connection from an address the peer's token does not list; closed");
            continue;
        }
        let Some(slot) = slots.take(peer.ip()) else {
            log::debug!("{peer}: too many handshakes under way; relayed connection closed");
            continue;
        };
        log::debug!("relayed connection from {peer}");
        let ctx = ctx.clone();
        let spawned = spawn("natt-punch-stream", move || {
            let _ = handshake(stream, peer, Route::OwnRelay, &ctx);
            drop(slot);
        });
        if let Err(e) = spawned {
            log::warn!("cannot handle the relayed connection from {peer}: {e}");
        }
    }
}

/// Connects from `local` to `target` until a stream is up and handed over, or the punch is
/// over, or [`MAX_CONNECT_ATTEMPTS`] attempts were made.
///
/// One connection attempt lives as long as it can: the kernel retransmits its SYN, and it
/// keeps its sequence number, so when the peer's SYN crosses it in the NATs the simultaneous
/// open completes. Closing and re-opening attempts instead races with the peer's SYNs and the
/// listener, and can leave the four-tuple taken. Only a failure (a refusal: the peer's host
/// answered before its own SYN was out; or a stream that ended without the handshake) starts a
/// new attempt, after a pause that doubles each time.
fn connect(local: SocketAddr, target: SocketAddr, ctx: &Ctx) {
    let mut pause = FIRST_RETRY;
    for n in 1..=MAX_CONNECT_ATTEMPTS {
        if ctx.over() {
            return;
        }
        match attempt(local, target, ctx) {
            Ok(Some(stream)) => {
                log::debug!("connected {local} -> {target}");
                let route = if ctx.paths.is_relayed_target(target) {
                    Route::PeerRelay
                } else {
                    Route::Direct
                };
                if handshake(stream, target, route, ctx) {
                    return;
                }
            }
            Ok(None) => return,
            Err(e) => {
                log::debug!("connect {local} -> {target} (attempt {n}): {e}");
                if e.kind() == io::ErrorKind::ConnectionRefused {
                    let _ = ctx.events.send(Event::Refused);
                }
            }
        }
        // Up to a quarter more, so that two sides' retries do not stay in step.
        let jitter = pause.mul_f64(rand::rng().random_range(0.0..0.25));
        let until = Instant::now() + pause + jitter;
        while !ctx.over() && Instant::now() < until {
            thread::sleep(SLICE.min(until.saturating_duration_since(Instant::now())));
        }
        pause = (pause * 2).min(MAX_RETRY);
    }
    log::debug!("{target}: {MAX_CONNECT_ATTEMPTS} connection attempts made; giving up on it");
}

/// `EINPROGRESS`: a non-blocking connect under way (`io::ErrorKind::InProgress` is not stable).
#[cfg(any(target_os = "linux", target_os = "android"))]
const EINPROGRESS: i32 = 115;
#[cfg(not(any(target_os = "linux", target_os = "android")))]
const EINPROGRESS: i32 = 36;

/// One connection attempt, watched until it connects, fails, or the punch is over (`None`).
fn attempt(local: SocketAddr, target: SocketAddr, ctx: &Ctx) -> io::Result<Option<TcpStream>> {
    let (socket, target) = reusable_tcp_socket_from(local, target)?;
    socket.set_nonblocking(true)?;
    match socket.connect(&target.into()) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::WouldBlock || e.raw_os_error() == Some(EINPROGRESS) => {}
        Err(e) => return Err(e),
    }
    loop {
        if let Some(e) = socket.take_error()? {
            return Err(e);
        }
        if socket.peer_addr().is_ok() {
            socket.set_nonblocking(false)?;
            return Ok(Some(socket.into()));
        }
        if ctx.over() {
            return Ok(None);
        }
        thread::sleep(POLL);
    }
}

/// Runs the handshake on a new stream to `remote`: role 1 writes its hello; both report the
/// stream, then read the peer's frame (for at most [`HANDSHAKE_TIMEOUT`]) and report whether it
/// is authentic and bound to this stream. Returns whether the peer's frame arrived (the stream
/// is the chooser's from then on); on `false` the stream is closed.
///
/// The frame must be bound to the stream: on a stream from our own relay, to our relayed
/// address exactly; on any other, to an IP of ours that is not a relay's.
fn handshake(mut stream: TcpStream, remote: SocketAddr, route: Route, ctx: &Ctx) -> bool {
    let id = ctx.next_id.fetch_add(1, Ordering::SeqCst);
    let result = (|| -> io::Result<Result<Kind, Failure>> {
        stream.set_nodelay(true)?;
        let clone = stream.try_clone()?;
        if ctx.keys.role == 1 {
            let hello = Message {
                kind: Kind::Hello,
                flags: 0,
                nonce: rand::rng().random(),
                observed: remote,
            };
            stream.write_all(&wire::encode(&ctx.keys, &hello))?;
            log::trace!("{remote}: hello sent");
        }
        let _ = ctx.events.send(Event::Up(id, clone, remote, route));
        let until = ctx.deadline.min(Instant::now() + HANDSHAKE_TIMEOUT);
        let frame = read_frame(&mut stream, until, &ctx.stop)?;
        Ok(match wire::open(&ctx.keys, &frame) {
            None => Err(Failure::Unauthentic),
            Some(m)
                if !(match route {
                    Route::OwnRelay => ctx.paths.is_own_relayed(m.observed),
                    Route::Direct | Route::PeerRelay => ctx.paths.sees_us_directly(m.observed),
                }) =>
            {
                Err(Failure::Elsewhere(m.observed))
            }
            Some(m) => Ok(m.kind),
        })
    })();
    let event = match result {
        Ok(Ok(kind)) => {
            log::debug!("{remote}: {kind:?} read");
            Event::Frame(id, kind)
        }
        Ok(Err(why)) => Event::Failed(id, why),
        Err(e) => Event::Failed(id, Failure::Io(e.to_string())),
    };
    let ok = matches!(event, Event::Frame(..));
    if let Event::Failed(_, why) = &event {
        log::debug!("{remote}: {why}");
    }
    let _ = ctx.events.send(event);
    ok
}

/// Reads one frame (a punch message's 64 bytes), giving up at `until` or when `stop` is set;
/// the stream's read timeout is left changed. natt's relayed TCP connection reads the peer's
/// ready message with it too.
pub fn read_frame(stream: &mut TcpStream, until: Instant, stop: &AtomicBool) -> io::Result<[u8; MESSAGE_LEN]> {
    let mut frame = [0u8; MESSAGE_LEN];
    let mut got = 0;
    while got < MESSAGE_LEN {
        if stop.load(Ordering::SeqCst) {
            return Err(io::Error::other("punch over"));
        }
        let left = deadline::remaining(until)
            .ok_or_else(|| io::Error::new(io::ErrorKind::TimedOut, "no handshake frame in time"))?;
        stream.set_read_timeout(Some(left.min(SLICE)))?;
        match stream.read(frame.get_mut(got..).unwrap_or(&mut [])) {
            Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
            Ok(n) => got += n,
            Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(frame)
}
