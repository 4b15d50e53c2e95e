//! TCP hole punching: [`tcp_punch_hole`] connects from the mapped, reusable socket's port to
//! every peer endpoint at once, again and again until a connection is up (the peers' SYNs cross
//! in their NATs: a simultaneous open), while also accepting on that port. Every stream that
//! comes up runs the authenticated handshake of [`crate::tcp_wire`], one frame each way: role 1
//! sends a hello on every stream, role 0 sends choose on the first stream up, so both sides end
//! up with the same single stream half a round trip after it connects, and close the others.

use std::collections::{HashMap, HashSet};
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, Sender};
use std::thread;
use std::time::{Duration, Instant};

use socket2::Socket;

use natt_core::deadline;
use natt_core::rendezvous::{PrivRendezvousInfo, PubRendezvousInfo};
use natt_core::reuse::reusable_tcp_socket;

use crate::error::PunchError;
use crate::keys::SessionKeys;
use crate::tcp_wire::{self, FRAME_LEN, Frame, NONCE_LEN};
use crate::udp::order_targets;

/// How long, from the start, role 0 chooses only a stream with one of the peer's local
/// addresses (when the peer has any).
pub const LOCAL_HEAD_START: Duration = Duration::from_millis(20);

/// Which streams role 0 may choose when: local ones only, until `until`.
struct Preference {
    locals: Vec<SocketAddr>,
    until: Instant,
}

impl Preference {
    fn allows(&self, peer: SocketAddr) -> bool {
        self.locals.is_empty() || self.locals.contains(&peer) || Instant::now() >= self.until
    }

    /// How long to wait for events at most, so that the end of the head start is noticed.
    fn wait(&self, left: Duration) -> Duration {
        match self.until.checked_duration_since(Instant::now()) {
            Some(d) if !self.locals.is_empty() && !d.is_zero() => left.min(d),
            _ => left,
        }
    }
}

/// The peer's local-interface endpoints.
fn local_targets(endpoints: &[natt_core::MappedSocketAddr]) -> Vec<SocketAddr> {
    endpoints
        .iter()
        .filter(|e| e.technique == natt_core::local::LOCAL)
        .map(|e| e.addr)
        .collect()
}

/// How often connection attempts and the listener are checked.
const POLL: Duration = Duration::from_millis(2);
/// Threads waiting on a stream check this often whether the punch is over.
const SLICE: Duration = Duration::from_millis(100);

/// How long role 0 waits for the peer's hello on the stream it chose before it chooses another
/// stream that has shown one. The peer sends its hello as soon as a stream is up, so this only
/// matters when the chosen stream leads somewhere else: a stale address that accepted, or a
/// port scanner that connected to our mapped port and stays silent. It is long enough for TCP
/// to retransmit a lost hello twice (its first retransmission timeout is 1 s when it has no
/// round-trip sample, as after a simultaneous open): switching while the peer's hello is merely
/// late would leave the peer on the first stream (it takes the first choose it reads) and us on
/// the other.
const SWITCH_AFTER: Duration = Duration::from_secs(3);

/// At most this many accepted connections are in their handshake at once; more are closed.
const MAX_ACCEPTED_HANDSHAKES: usize = 32;

/// What role 0's stream threads tell the chooser.
enum Event {
    /// A stream is up (a clone of it, to write choose on).
    Up(u64, TcpStream, SocketAddr),
    /// A valid hello arrived on stream `id`.
    Hello(u64),
    /// Stream `id` failed, or something other than our peer is at its other end.
    Failed(u64),
}

/// Performs a TCP rendezvous connect. `socket` should come from a `MappedTcpSocket` (bound,
/// reusable, neither listening nor connected). Returns the one authenticated stream both sides
/// agreed on, by `deadline`.
///
/// ```no_run
/// use natt_core::{MappedTcpSocket, MappingContext};
/// use natt_punch::{gen_rendezvous_info, tcp_punch_hole, PubRendezvousInfo};
/// use std::io::Write;
/// use std::time::{Duration, Instant};
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let mc = MappingContext::empty(); // natt::MappingContext::new() has every technique
/// let MappedTcpSocket { socket, endpoints, port_mappings } = MappedTcpSocket::new(&mc)?;
/// let (our_priv, our_pub) = gen_rendezvous_info(endpoints);
/// println!("send this to the peer: {our_pub}");
/// let their_pub: PubRendezvousInfo = "natt1....".parse()?;
/// let mut stream = tcp_punch_hole(socket, our_priv, their_pub, Instant::now() + Duration::from_secs(10))?;
/// stream.write_all(b"hello")?;
/// # drop(port_mappings);
/// # Ok(())
/// # }
/// ```
pub fn tcp_punch_hole(
    socket: Socket,
    our_priv_rendezvous_info: PrivRendezvousInfo,
    their_pub_rendezvous_info: PubRendezvousInfo,
    deadline: Instant,
) -> Result<TcpStream, PunchError> {
    let keys = Arc::new(SessionKeys::new(&our_priv_rendezvous_info, &their_pub_rendezvous_info)?);
    let local = socket
        .local_addr()?
        .as_socket()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "not an IP socket"))?;
    let targets = order_targets(local, &their_pub_rendezvous_info.endpoints);
    if targets.is_empty() {
        return Err(PunchError::NoEndpoint);
    }
    socket.listen(16)?;
    let listener: TcpListener = socket.into();
    listener.set_nonblocking(true)?;
    let stop = Arc::new(AtomicBool::new(false));
    let (events_tx, events_rx) = mpsc::channel::<Event>();
    let (chosen_tx, chosen_rx) = mpsc::channel::<(TcpStream, SocketAddr)>();
    let ctx = Ctx {
        keys: Arc::clone(&keys),
        stop: Arc::clone(&stop),
        deadline,
        events: events_tx,
        chosen: chosen_tx,
        next_id: Arc::new(AtomicU64::new(0)),
    };
    let started = (|| {
        spawn("natt-punch-accept", {
            let ctx = ctx.clone();
            move || accept(&listener, &ctx)
        })?;
        for target in targets {
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
    drop(ctx);
    let result = if keys.role == 0 {
        // Local addresses come first: for a head start, only a stream with one of them may be
        // chosen, so that peers on one network connect directly rather than through their
        // router. Over the internet no stream is up that soon, so this costs nothing there.
        let locals = Preference {
            locals: local_targets(&their_pub_rendezvous_info.endpoints),
            until: Instant::now() + LOCAL_HEAD_START,
        };
        choose(&keys, &events_rx, &locals, deadline)
    } else {
        chosen_rx
            .recv_timeout(deadline::wait_until(deadline))
            .map_err(|_| PunchError::TimedOut("the peer chose no stream".into()))
    };
    stop.store(true, Ordering::SeqCst);
    let (stream, peer) = result?;
    stream.set_read_timeout(None)?;
    stream.set_write_timeout(None)?;
    log::info!("TCP punched {local} <-> {peer}");
    Ok(stream)
}

/// What every punch thread shares.
#[derive(Clone)]
struct Ctx {
    keys: Arc<SessionKeys>,
    stop: Arc<AtomicBool>,
    deadline: Instant,
    events: Sender<Event>,
    chosen: Sender<(TcpStream, SocketAddr)>,
    next_id: Arc<AtomicU64>,
}

impl Ctx {
    fn over(&self) -> bool {
        self.stop.load(Ordering::SeqCst) || Instant::now() >= self.deadline
    }
}

fn spawn(name: &str, f: impl FnOnce() + Send + 'static) -> io::Result<()> {
    thread::Builder::new().name(name.into()).spawn(f).map(drop)
}

/// Role 0: sends choose on the first stream that comes up, and takes it when the peer's hello
/// arrives on it. If that stream fails, or stays silent for [`SWITCH_AFTER`] while another has
/// shown a hello, chooses another.
fn choose(
    keys: &SessionKeys,
    events: &Receiver<Event>,
    prefer: &Preference,
    deadline: Instant,
) -> Result<(TcpStream, SocketAddr), PunchError> {
    let mut up: HashMap<u64, (TcpStream, SocketAddr)> = HashMap::new();
    let mut hello: HashSet<u64> = HashSet::new();
    let mut chosen: Option<(u64, Instant)> = None;
    let mut last = String::from("no stream came up");
    let send_choose = |stream: &mut TcpStream| stream.write_all(&tcp_wire::ours(keys, &rand::random()));
    while let Some(left) = deadline::remaining(deadline) {
        match events.recv_timeout(prefer.wait(left.min(SLICE))) {
            Ok(Event::Up(id, stream, peer)) => {
                up.insert(id, (stream, peer));
            }
            Ok(Event::Hello(id)) => {
                hello.insert(id);
            }
            Ok(Event::Failed(id)) => {
                if let Some((_, peer)) = up.remove(&id) {
                    last = format!("{peer}: failed, or not our peer");
                }
                hello.remove(&id);
                if chosen.is_some_and(|(c, _)| c == id) {
                    chosen = None;
                }
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        }
        let silent = chosen.is_some_and(|(_, at)| at.elapsed() >= SWITCH_AFTER);
        if chosen.is_none() || silent {
            // Prefer a stream that has shown a hello (done at once), else the first one up.
            let allowed = |id: &u64| up.get(id).is_some_and(|(_, peer)| prefer.allows(*peer));
            let next = hello.iter().copied().filter(allowed).min().or_else(|| {
                if silent {
                    None
                } else {
                    up.keys().copied().filter(allowed).min()
                }
            });
            if let Some(id) = next
                && let Some((stream, peer)) = up.get_mut(&id)
            {
                match send_choose(stream) {
                    Ok(()) => {
                        log::trace!("{peer}: choose sent");
                        chosen = Some((id, Instant::now()));
                    }
                    Err(e) => {
                        last = format!("{peer}: {e}");
                        up.remove(&id);
                    }
                }
            }
        }
        // Done: the chosen stream has shown the peer's hello (before or after the choose).
        if let Some((c, _)) = chosen
            && hello.contains(&c)
            && let Some(done) = up.remove(&c)
        {
            return Ok(done);
        }
    }
    Err(PunchError::TimedOut(last))
}

/// Accepts connections on the punch port until the punch is over.
fn accept(listener: &TcpListener, ctx: &Ctx) {
    let busy = Arc::new(AtomicUsize::new(0));
    while !ctx.over() {
        match listener.accept() {
            Ok((stream, from)) => {
                log::debug!("accepted {from}");
                if busy.load(Ordering::SeqCst) >= MAX_ACCEPTED_HANDSHAKES {
                    log::debug!("{from}: too many handshakes under way; closed");
                    continue;
                }
                // Some systems pass the listener's O_NONBLOCK on to accepted sockets.
                if let Err(e) = stream.set_nonblocking(false) {
                    log::debug!("{from}: {e}");
                    continue;
                }
                let ctx = ctx.clone();
                busy.fetch_add(1, Ordering::SeqCst);
                let spawned = spawn("natt-punch-hello", {
                    let busy = Arc::clone(&busy);
                    move || {
                        handshake(stream, from, &ctx);
                        busy.fetch_sub(1, Ordering::SeqCst);
                    }
                });
                if let Err(e) = spawned {
                    busy.fetch_sub(1, Ordering::SeqCst);
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

/// Connects from `local` to `target` until a connection is up or the punch is over.
///
/// One connection attempt lives as long as it can: the kernel retransmits its SYN, and it
/// keeps its sequence number, so when the peer's SYN crosses it in the NATs the simultaneous
/// open completes. Closing and re-opening attempts instead races with the peer's SYNs and the
/// listener, and can leave the four-tuple taken. Only a refusal (the peer's host answered
/// before its own SYN was out) starts a new attempt, after a short random pause.
fn connect(local: SocketAddr, target: SocketAddr, ctx: &Ctx) {
    while !ctx.over() {
        match attempt(local, target, ctx) {
            Ok(Some(stream)) => {
                log::debug!("connected {local} -> {target}");
                handshake(stream, target, ctx);
                return;
            }
            Ok(None) => return,
            Err(e) => {
                log::trace!("connect {local} -> {target}: {e}");
                let pause = match e.kind() {
                    io::ErrorKind::ConnectionRefused | io::ErrorKind::ConnectionReset => {
                        Duration::from_micros(1000 + rand::random::<u64>() % 5000)
                    }
                    // The four-tuple is taken: the listener has this connection, or an old one
                    // is closing.
                    io::ErrorKind::AddrNotAvailable | io::ErrorKind::AddrInUse => Duration::from_millis(50),
                    _ => Duration::from_millis(200),
                };
                thread::sleep(pause);
            }
        }
    }
}

/// `EINPROGRESS`: a non-blocking connect under way (`io::ErrorKind::InProgress` is not stable).
#[cfg(any(target_os = "linux", target_os = "android"))]
const EINPROGRESS: i32 = 115;
#[cfg(not(any(target_os = "linux", target_os = "android")))]
const EINPROGRESS: i32 = 36;

/// One connection attempt, watched until it connects, fails, or the punch is over (`None`).
fn attempt(local: SocketAddr, target: SocketAddr, ctx: &Ctx) -> io::Result<Option<TcpStream>> {
    let socket = reusable_tcp_socket(&target)?;
    socket.bind(&local.into())?;
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

/// Runs the handshake on a new stream. Role 1 sends its hello and hands the stream over if a
/// valid choose arrives; role 0 reports the stream to the chooser and whether the peer's hello
/// arrives on it.
fn handshake(mut stream: TcpStream, peer: SocketAddr, ctx: &Ctx) {
    if ctx.keys.role == 0 {
        let id = ctx.next_id.fetch_add(1, Ordering::SeqCst);
        let hello = (|| -> io::Result<bool> {
            stream.set_nodelay(true)?;
            let _ = ctx.events.send(Event::Up(id, stream.try_clone()?, peer));
            let frame = read_frame(&mut stream, ctx.deadline, &ctx.stop)?;
            Ok(tcp_wire::open(&ctx.keys, &frame) == Some(Frame::Hello))
        })();
        let event = match hello {
            Ok(true) => {
                log::trace!("{peer}: hello read");
                Event::Hello(id)
            }
            Ok(false) => {
                log::debug!("{peer}: not our peer");
                Event::Failed(id)
            }
            Err(e) => {
                log::debug!("{peer}: {e}");
                Event::Failed(id)
            }
        };
        let _ = ctx.events.send(event);
        return;
    }
    let chosen = (|| -> io::Result<bool> {
        stream.set_nodelay(true)?;
        let nonce: [u8; NONCE_LEN] = rand::random();
        stream.write_all(&tcp_wire::ours(&ctx.keys, &nonce))?;
        log::trace!("{peer}: hello sent");
        let frame = read_frame(&mut stream, ctx.deadline, &ctx.stop)?;
        Ok(tcp_wire::open(&ctx.keys, &frame) == Some(Frame::Choose))
    })();
    match chosen {
        Ok(true) => {
            let _ = ctx.chosen.send((stream, peer));
        }
        Ok(false) => log::debug!("{peer}: no valid choose"),
        Err(e) => log::debug!("{peer}: {e}"),
    }
}

/// Reads one frame, giving up at `deadline` or when `stop` is set.
fn read_frame(stream: &mut TcpStream, deadline: Instant, stop: &AtomicBool) -> io::Result<[u8; FRAME_LEN]> {
    let mut frame = [0u8; FRAME_LEN];
    let mut got = 0;
    while got < FRAME_LEN {
        if stop.load(Ordering::SeqCst) {
            return Err(io::Error::other("punch over"));
        }
        let left = deadline::remaining(deadline).ok_or_else(|| io::Error::from(io::ErrorKind::TimedOut))?;
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
