//! TCP hole punching: [`tcp_punch_hole`] connects from the mapped, reusable socket's port to
//! every peer endpoint at once, again and again until a connection is up (the peers' SYNs cross
//! in their NATs: a simultaneous open), while also accepting on that port. Every stream that
//! comes up runs the authenticated handshake of [`crate::tcp_wire`]; role 0 chooses one stream
//! and role 1 acknowledges it, so both sides end up with the same single stream and close the
//! others.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, Sender};
use std::thread;
use std::time::{Duration, Instant};

use socket2::Socket;

use natt_core::deadline;
use natt_core::rendezvous::{PrivRendezvousInfo, PubRendezvousInfo};
use natt_core::reuse::reusable_tcp_socket;

use crate::error::PunchError;
use crate::keys::SessionKeys;
use crate::tcp_wire::{self, FRAME_LEN, Frame, HELLO_NONCE_LEN};
use crate::udp::order_targets;

/// How long connections to the peer's local addresses go alone before the others start.
pub const LOCAL_HEAD_START: Duration = Duration::from_millis(20);

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

/// A stream whose hellos have been exchanged.
struct Ready {
    stream: TcpStream,
    peer: SocketAddr,
    n0: [u8; HELLO_NONCE_LEN],
    n1: [u8; HELLO_NONCE_LEN],
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
    let (ready_tx, ready_rx) = mpsc::channel::<Ready>();
    let (chosen_tx, chosen_rx) = mpsc::channel::<(TcpStream, SocketAddr)>();
    let ctx = Ctx {
        keys: Arc::clone(&keys),
        stop: Arc::clone(&stop),
        deadline,
        ready: ready_tx,
        chosen: chosen_tx,
    };
    spawn("natt-punch-accept", {
        let ctx = ctx.clone();
        move || accept(&listener, &ctx)
    })?;
    // Local addresses come first: give them a head start, so that peers on one network
    // connect directly rather than through their router.
    let locals = local_targets(&their_pub_rendezvous_info.endpoints);
    for target in targets {
        let ctx = ctx.clone();
        let wait = if locals.contains(&target) || locals.is_empty() {
            Duration::ZERO
        } else {
            LOCAL_HEAD_START
        };
        spawn("natt-punch-connect", move || {
            thread::sleep(wait);
            connect(local, target, &ctx)
        })?;
    }
    drop(ctx);
    let result = if keys.role == 0 {
        choose(&keys, &ready_rx, deadline)
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
    ready: Sender<Ready>,
    chosen: Sender<(TcpStream, SocketAddr)>,
}

impl Ctx {
    fn over(&self) -> bool {
        self.stop.load(Ordering::SeqCst) || Instant::now() >= self.deadline
    }
}

fn spawn(name: &str, f: impl FnOnce() + Send + 'static) -> io::Result<()> {
    thread::Builder::new().name(name.into()).spawn(f).map(drop)
}

/// Role 0: chooses the first stream whose hellos are through, and waits for the ack; tries the
/// next stream if that one fails.
fn choose(
    keys: &SessionKeys,
    ready: &Receiver<Ready>,
    deadline: Instant,
) -> Result<(TcpStream, SocketAddr), PunchError> {
    let mut last = String::from("no stream came up");
    while let Some(left) = deadline::remaining(deadline) {
        let Ok(mut r) = ready.recv_timeout(left) else {
            break;
        };
        let attempt = (|| -> io::Result<bool> {
            r.stream.write_all(&tcp_wire::decision(keys, &r.n0, &r.n1))?;
            let frame = read_frame(&mut r.stream, deadline, &AtomicBool::new(false))?;
            Ok(tcp_wire::open(keys, &frame, Some((&r.n0, &r.n1))) == Some(Frame::Ack))
        })();
        match attempt {
            Ok(true) => return Ok((r.stream, r.peer)),
            Ok(false) => last = format!("{}: no valid ack", r.peer),
            Err(e) => last = format!("{}: {e}", r.peer),
        }
    }
    Err(PunchError::TimedOut(last))
}

/// Accepts connections on the punch port until the punch is over.
fn accept(listener: &TcpListener, ctx: &Ctx) {
    while !ctx.over() {
        match listener.accept() {
            Ok((stream, from)) => {
                log::debug!("accepted {from}");
                let ctx = ctx.clone();
                if let Err(e) = spawn("natt-punch-hello", move || handshake(stream, from, &ctx)) {
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

/// Exchanges hellos on a new stream; role 0 hands it to the chooser, role 1 waits for a
/// choose on it.
fn handshake(mut stream: TcpStream, peer: SocketAddr, ctx: &Ctx) {
    let result = (|| -> io::Result<Option<Ready>> {
        stream.set_nodelay(true)?;
        let ours: [u8; HELLO_NONCE_LEN] = rand::random();
        stream.write_all(&tcp_wire::hello(&ctx.keys, &ours))?;
        log::trace!("{peer}: hello sent");
        let frame = read_frame(&mut stream, ctx.deadline, &ctx.stop)?;
        log::trace!("{peer}: frame read");
        let Some(Frame::Hello(theirs)) = tcp_wire::open(&ctx.keys, &frame, None) else {
            return Ok(None);
        };
        let (n0, n1) = if ctx.keys.role == 0 {
            (ours, theirs)
        } else {
            (theirs, ours)
        };
        Ok(Some(Ready { stream, peer, n0, n1 }))
    })();
    let mut ready = match result {
        Ok(Some(r)) => r,
        Ok(None) => {
            log::debug!("{peer}: not our peer");
            return;
        }
        Err(e) => {
            log::debug!("{peer}: {e}");
            return;
        }
    };
    if ctx.keys.role == 0 {
        let _ = ctx.ready.send(ready);
        return;
    }
    let chosen = (|| -> io::Result<bool> {
        let frame = read_frame(&mut ready.stream, ctx.deadline, &ctx.stop)?;
        if tcp_wire::open(&ctx.keys, &frame, Some((&ready.n0, &ready.n1))) != Some(Frame::Choose) {
            return Ok(false);
        }
        ready
            .stream
            .write_all(&tcp_wire::decision(&ctx.keys, &ready.n0, &ready.n1))?;
        Ok(true)
    })();
    match chosen {
        Ok(true) => {
            let _ = ctx.chosen.send((ready.stream, peer));
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
