//! [`connect_tcp`]: connecting over TCP with fallback. The direct TCP punch and the paths
//! through TURN relays (RFC 6062) run at once, as one punch (natt-punch's
//! [`tcp_punch_hole_with_relay`]):
//!
//! - a side whose mapped TCP socket has a `turn` endpoint (an RFC 6062 TCP allocation, made
//!   by the `turn` technique while mapping) installs permissions for the peer's IPs and
//!   accepts the peer's connections through the relay (ConnectionAttempt, then a data
//!   connection bound to it with ConnectionBind: a plain `TcpStream` to the peer);
//! - every side connects with plain TCP to the peer's `turn` endpoint (its relayed address)
//!   as to any other endpoint, so one relay on one side is enough.
//!
//! Every stream runs the punch's signed handshake, bound to the stream: on a stream from our
//! relay the peer must have seen us at our relayed address, on the others at an address of
//! ours that is not a relay's. Neither the relay nor anyone else can complete a connection as
//! the peer. A relayed stream is taken only once the peer's hello arrived on it and no direct
//! stream came up [`RELAY_GRACE`](natt_punch::choose::RELAY_GRACE) (300 ms) later: direct
//! first, as for UDP.
//!
//! ```no_run
//! use natt::connect::{Path, connect_tcp};
//! use natt::{gen_rendezvous_info, HolePunchServerAddr, MappedTcpSocket, MappingContext, TurnCredentials};
//! use std::io::Write;
//! use std::time::{Duration, Instant};
//! # fn receive_their_token() -> String { String::new() }
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let password = std::env::var("TURN_PASSWORD").unwrap_or_default();
//! let mc = MappingContext::builder()
//!     .servers([
//!         HolePunchServerAddr::parse_stun("stun.example.org")?,
//!         HolePunchServerAddr::parse_turn("turn:203.0.113.30:3478", TurnCredentials::new("me", password))?,
//!     ])
//!     .build()?;
//! // The relayed address (an RFC 6062 TCP allocation) is one of the socket's endpoints.
//! let MappedTcpSocket { socket, endpoints, port_mappings } = MappedTcpSocket::new(&mc)?;
//! let (ours, public) = gen_rendezvous_info(endpoints);
//! println!("{public}");
//! let theirs = receive_their_token().parse()?;
//! let deadline = Instant::now() + Duration::from_secs(10);
//! let mut connection = connect_tcp(socket, port_mappings, ours, theirs, deadline)?;
//! if let Path::Relayed { relay, .. } = connection.path() {
//!     println!("through the relay {relay} (it moves to a direct stream if one opens)");
//! }
//! connection.write_all(b"hello")?;
//! // Closes the stream and deletes the allocation and the router mappings.
//! connection.close();
//! # Ok(())
//! # }
//! ```
//!
//! A relayed connection moves to a direct stream when one opens later: while relayed, the
//! direct TCP punch (natt-punch's [`tcp_punch_direct`]) runs again in the background, for
//! [`DIRECT_TCP_TRY`] each time, [`DIRECT_RETRY`] apart, [`DIRECT_RESTARTS`] more times. A
//! relayed stream carries the application's bytes in natt's records
//! ([`natt_punch::records`]); when the background punch agrees on a direct stream, each side
//! writes a signed move record last on the relayed stream and its next bytes on the direct
//! one, and each side reads the relayed stream up to the peer's move record, then the direct
//! stream: no byte handed to [`Write`] is lost, repeated or reordered. The two directions move
//! independently; the relayed stream is closed once both have. A connection that is direct from
//! the start carries plain bytes.
//!
//! The connection is read and written through [`Read`] and [`Write`] (on `&TcpConnection`
//! too, so one thread can read while another writes); on a relayed path the raw stream is not
//! handed out (its bytes are records). [`TcpConnection::into_direct`] hands out the plain
//! `TcpStream` once both directions are direct.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::ops::Range;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU32, Ordering};
use std::sync::mpsc::{self, Sender};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use rand::Rng;
use socket2::Socket;

use natt_core::PortMappings;
use natt_core::rendezvous::{PrivRendezvousInfo, PubRendezvousInfo};
use natt_core::reuse::reusable_tcp_socket;
use natt_core::udp::STOP_POLL;
use natt_punch::keys::SessionKeys;
use natt_punch::path::Paths;
use natt_punch::records::{self, MAX_RECORD, Record};
use natt_punch::{PunchError, RelayedStream, Route, tcp_punch_direct, tcp_punch_hole_with_relay};
use natt_turn::{RelayLink, with_relay};

use super::race::{DIRECT_RESTARTS, DIRECT_RETRY};
use super::udp::{Path, lock};

/// While relayed: how long each background direct TCP punch runs.
pub const DIRECT_TCP_TRY: Duration = Duration::from_secs(10);
/// How long a side whose peer moved to a direct stream waits for its own background punch to
/// hand it that stream; then reading fails with `ConnectionAborted`.
pub const MOVE_WAIT: Duration = Duration::from_secs(15);

/// A TCP connection to the peer, direct or through a TURN relay, with the port mappings (and
/// relay allocation) of its socket, held while it lives and released on
/// [`close`](Self::close) or drop. Read and write it with [`Read`] and [`Write`] (also on
/// `&TcpConnection`); a relayed one moves to a direct stream when one opens (see the
/// [module documentation](self)).
pub struct TcpConnection {
    shared: Arc<Shared>,
    /// The background direct punch, while relayed.
    mover: Option<JoinHandle<()>>,
    port_mappings: Option<PortMappings>,
}

impl std::fmt::Debug for TcpConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TcpConnection")
            .field("path", &self.path())
            .field("moves", &self.moves())
            .finish()
    }
}

/// What the connection's handle, its readers and writers and its background punch share.
struct Shared {
    reader: Mutex<Reader>,
    writer: Mutex<Writer>,
    /// A clone of the direct stream, once there is one (from the start, or from the background
    /// punch), with `found`.
    direct: Mutex<Option<TcpStream>>,
    /// Notified when `direct` is set or the background punch gave up for good.
    found: Condvar,
    /// The background punch gave up for good (no direct stream will come).
    search_over: AtomicBool,
    /// The path our bytes take.
    path: Mutex<Path>,
    moves: AtomicU32,
    /// Ends the background punch.
    stop: Arc<AtomicBool>,
    /// A clone of the relayed stream (none when direct from the start), closed once both
    /// directions moved.
    relay: Option<TcpStream>,
    /// How many directions are on the direct stream (2 when direct from the start).
    halves_moved: AtomicU8,
    /// The session's keys and paths, to sign our move record and check the peer's.
    keys: SessionKeys,
    paths: Option<Paths>,
    read_timeout: Mutex<Option<Duration>>,
}

/// Where reading is.
enum Reader {
    /// Records on the relayed stream: `buf[start..end]` read but not parsed; `data`, the part
    /// of `buf` of a data record not yet handed to the application.
    Relayed {
        stream: TcpStream,
        buf: Box<[u8]>,
        start: usize,
        end: usize,
        data: Range<usize>,
    },
    /// The peer's move record was read at `since`; waiting for our punch's direct stream.
    Moving { since: Instant },
    /// Plain bytes on the direct stream.
    Direct(TcpStream),
}

/// Where writing is.
enum Writer {
    /// Records on the relayed stream (`frame`: the one being written).
    Relayed { stream: TcpStream, frame: Vec<u8> },
    /// Plain bytes on the direct stream.
    Direct(TcpStream),
}

/// What reading the relayed stream gave.
enum FromRelay {
    /// This many of the application's bytes.
    Data(usize),
    /// The peer's move record: its next bytes are on the direct stream.
    Moved,
}

fn invalid(why: impl std::fmt::Display) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("the relayed stream: {why}"))
}

impl Shared {
    fn new(
        reader: Reader,
        writer: Writer,
        path: Path,
        relay: Option<TcpStream>,
        keys: SessionKeys,
        paths: Option<Paths>,
    ) -> Self {
        let (direct, halves_moved) = match &writer {
            Writer::Direct(s) => (s.try_clone().ok(), 2),
            Writer::Relayed { .. } => (None, 0),
        };
        Shared {
            reader: Mutex::new(reader),
            writer: Mutex::new(writer),
            direct: Mutex::new(direct),
            found: Condvar::new(),
            search_over: AtomicBool::new(false),
            path: Mutex::new(path),
            moves: AtomicU32::new(0),
            stop: Arc::new(AtomicBool::new(false)),
            relay,
            halves_moved: AtomicU8::new(halves_moved),
            keys,
            paths,
            read_timeout: Mutex::new(None),
        }
    }

    fn read(&self, out: &mut [u8]) -> io::Result<usize> {
        let mut reader = lock(&self.reader);
        loop {
            match &mut *reader {
                Reader::Direct(stream) => return stream.read(out),
                Reader::Relayed {
                    stream,
                    buf,
                    start,
                    end,
                    data,
                } => match self.read_relayed(stream, buf, start, end, data, out)? {
                    FromRelay::Data(n) => return Ok(n),
                    FromRelay::Moved => {
                        log::debug!("fallback: the peer moved to the direct stream");
                        *reader = Reader::Moving { since: Instant::now() };
                    }
                },
                Reader::Moving { since } => {
                    let stream = self.wait_direct(*since)?;
                    *reader = Reader::Direct(stream);
                    self.half_moved();
                }
            }
        }
    }

    /// Reads the relayed stream's records until some data or the peer's move record.
    fn read_relayed(
        &self,
        stream: &mut TcpStream,
        buf: &mut [u8],
        start: &mut usize,
        end: &mut usize,
        data: &mut Range<usize>,
        out: &mut [u8],
    ) -> io::Result<FromRelay> {
        loop {
            if data.start < data.end {
                let n = data.len().min(out.len());
                let (Some(from), Some(to)) = (buf.get(data.start..data.start + n), out.get_mut(..n)) else {
                    return Err(invalid("a record outside the buffer"));
                };
                to.copy_from_slice(from);
                data.start += n;
                return Ok(FromRelay::Data(n));
            }
            let parsed = records::parse(buf.get(*start..*end).unwrap_or(&[])).map_err(invalid)?;
            match parsed {
                Some((Record::Data(body), used)) => {
                    let at = *start + records::HEADER_LEN;
                    *data = at..at + body.len();
                    *start += used;
                }
                Some((Record::Move(body), used)) => {
                    let observed = records::open_move(&self.keys, body)
                        .ok_or_else(|| invalid("a move record that is not the peer's"))?;
                    if !self.paths.as_ref().is_some_and(|p| p.sees_us_directly(observed)) {
                        return Err(invalid(format!("the peer's move is bound to {observed}, not to us")));
                    }
                    *start += used;
                    if *start != *end {
                        return Err(invalid("bytes after the peer's move record"));
                    }
                    return Ok(FromRelay::Moved);
                }
                None => {
                    if out.is_empty() {
                        return Ok(FromRelay::Data(0));
                    }
                    // Keep the partial record at the front; a whole one always fits.
                    buf.copy_within(*start..*end, 0);
                    *end -= *start;
                    *start = 0;
                    let Some(space) = buf.get_mut(*end..).filter(|s| !s.is_empty()) else {
                        return Err(invalid("a record longer than any natt sends"));
                    };
                    match stream.read(space)? {
                        0 if *end == 0 => return Ok(FromRelay::Data(0)),
                        0 => {
                            return Err(io::Error::new(
                                io::ErrorKind::UnexpectedEof,
                                "the relayed stream ended inside a record",
                            ));
                        }
                        n => *end += n,
                    }
                }
            }
        }
    }

    /// The direct stream our punch agreed on, waiting for it (the peer moved at `since`) within
    /// the read timeout and [`MOVE_WAIT`].
    fn wait_direct(&self, since: Instant) -> io::Result<TcpStream> {
        let timeout = *lock(&self.read_timeout);
        let give_up = since + MOVE_WAIT;
        let until = timeout.map_or(give_up, |t| give_up.min(Instant::now() + t));
        let mut direct = lock(&self.direct);
        loop {
            if let Some(stream) = direct.as_ref() {
                return stream.try_clone();
            }
            let now = Instant::now();
            if now >= give_up || self.search_over.load(Ordering::SeqCst) || self.stop.load(Ordering::SeqCst) {
                return Err(io::Error::new(
                    io::ErrorKind::ConnectionAborted,
                    "the peer moved to a direct stream that this side's punch did not agree on",
                ));
            }
            if now >= until {
                return Err(io::Error::new(
                    io::ErrorKind::WouldBlock,
                    "waiting for the direct stream",
                ));
            }
            direct = self
                .found
                .wait_timeout(direct, until - now)
                .map(|(g, _)| g)
                .unwrap_or_else(|p| p.into_inner().0);
        }
    }

    fn write(&self, buf: &[u8]) -> io::Result<usize> {
        match &mut *lock(&self.writer) {
            Writer::Direct(stream) => stream.write(buf),
            Writer::Relayed { stream, frame } => {
                frame.clear();
                let n = records::encode_data(buf, frame);
                if n > 0 {
                    stream.write_all(frame)?;
                }
                Ok(n)
            }
        }
    }

    fn flush(&self) -> io::Result<()> {
        match &mut *lock(&self.writer) {
            Writer::Direct(stream) | Writer::Relayed { stream, .. } => stream.flush(),
        }
    }

    /// Moves our writing to the direct stream the background punch agreed on (`peer`, its far
    /// end): the move record last on the relayed stream, then every byte on the direct one.
    fn take_direct(&self, stream: TcpStream, peer: SocketAddr) {
        let peer = natt_core::family::canonical(peer);
        let (for_reader, for_timeout) = match (stream.try_clone(), stream.try_clone()) {
            (Ok(a), Ok(b)) => (a, b),
            (Err(e), _) | (_, Err(e)) => {
                log::warn!("fallback: cannot use the direct stream to {peer}: {e}");
                return;
            }
        };
        let _ = for_timeout.set_read_timeout(*lock(&self.read_timeout));
        {
            let mut writer = lock(&self.writer);
            if let Writer::Relayed { stream: relay, .. } = &mut *writer {
                let record = records::encode_move(&self.keys, peer, rand::rng().random());
                if let Err(e) = relay.write_all(&record).and_then(|()| relay.flush()) {
                    // The relay is gone: the peer reads what it can and finds the direct
                    // stream by its own punch.
                    log::warn!("fallback: the move record did not go through the relay: {e}");
                }
            }
            *writer = Writer::Direct(stream);
        }
        *lock(&self.path) = Path::Direct { peer };
        self.moves.fetch_add(1, Ordering::SeqCst);
        *lock(&self.direct) = Some(for_reader);
        self.found.notify_all();
        log::info!("fallback: moved to the direct TCP stream to {peer}");
        self.half_moved();
    }

    /// One direction is on the direct stream; after both, the relayed stream is closed (the
    /// peer wrote nothing after its move record, we nothing after ours).
    fn half_moved(&self) {
        if self.halves_moved.fetch_add(1, Ordering::SeqCst) + 1 == 2
            && let Some(relay) = &self.relay
        {
            log::debug!("fallback: both directions are direct; the relayed stream is closed");
            let _ = relay.shutdown(Shutdown::Both);
        }
    }

    fn search_ended(&self) {
        self.search_over.store(true, Ordering::SeqCst);
        let _guard = lock(&self.direct);
        self.found.notify_all();
    }
}

impl TcpConnection {
    /// A connection on a stream that is direct from the start.
    fn direct(stream: TcpStream, peer: SocketAddr, keys: SessionKeys, port_mappings: PortMappings) -> io::Result<Self> {
        let reader = Reader::Direct(stream.try_clone()?);
        let shared = Shared::new(reader, Writer::Direct(stream), Path::Direct { peer }, None, keys, None);
        Ok(TcpConnection {
            shared: Arc::new(shared),
            mover: None,
            port_mappings: Some(port_mappings),
        })
    }

    /// A connection on a relayed stream, with the background punch for a direct stream from
    /// `local` (`search`: our rendezvous info and the peer's) when there is one to try.
    fn relayed(
        stream: TcpStream,
        path: Path,
        keys: SessionKeys,
        paths: Paths,
        search: Option<(SocketAddr, PrivRendezvousInfo, PubRendezvousInfo)>,
        port_mappings: PortMappings,
    ) -> io::Result<Self> {
        let reader = Reader::Relayed {
            stream: stream.try_clone()?,
            buf: vec![0u8; MAX_RECORD].into_boxed_slice(),
            start: 0,
            end: 0,
            data: 0..0,
        };
        let relay = stream.try_clone()?;
        let writer = Writer::Relayed {
            stream,
            frame: Vec::with_capacity(MAX_RECORD),
        };
        let shared = Arc::new(Shared::new(reader, writer, path, Some(relay), keys, Some(paths)));
        let mover = match search {
            Some((local, ours, theirs)) => {
                let shared = Arc::clone(&shared);
                Some(
                    thread::Builder::new()
                        .name("natt-fallback-tcp-direct".into())
                        .spawn(move || seek_direct(&shared, local, &ours, &theirs))?,
                )
            }
            None => {
                shared.search_ended();
                None
            }
        };
        Ok(TcpConnection {
            shared,
            mover,
            port_mappings: Some(port_mappings),
        })
    }

    /// The path our bytes take now: a relayed connection's path becomes direct when it moves.
    pub fn path(&self) -> Path {
        *lock(&self.shared.path)
    }

    /// How many times the connection moved to a direct path (0 or 1).
    pub fn moves(&self) -> u32 {
        self.shared.moves.load(Ordering::SeqCst)
    }

    /// Whether both directions are on a direct stream (from the start, or both moved):
    /// [`into_direct`](Self::into_direct) then succeeds.
    pub fn is_direct(&self) -> bool {
        self.shared.halves_moved.load(Ordering::SeqCst) >= 2
    }

    /// A timeout for reads (`None`: none): a read that waits longer fails with `WouldBlock`
    /// or `TimedOut`, as on a `TcpStream`.
    pub fn set_read_timeout(&self, timeout: Option<Duration>) -> io::Result<()> {
        *lock(&self.shared.read_timeout) = timeout;
        if let Some(relay) = &self.shared.relay {
            relay.set_read_timeout(timeout)?;
        }
        if let Some(direct) = &*lock(&self.shared.direct) {
            direct.set_read_timeout(timeout)?;
        }
        Ok(())
    }

    /// Ends our sending side (the peer reads the end of the stream), while our writing is on a
    /// direct stream. On a relayed one it fails with `Unsupported`: a TURN server (coturn)
    /// ends a relayed TCP connection as a whole when one side half-closes it; close the
    /// connection instead when the peer has had time to read.
    pub fn shutdown_write(&self) -> io::Result<()> {
        match &*lock(&self.shared.writer) {
            Writer::Direct(stream) => stream.shutdown(Shutdown::Write),
            Writer::Relayed { .. } => Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "a TURN relay ends a relayed connection as a whole when one side half-closes it",
            )),
        }
    }

    /// The plain stream to the peer and the port mappings, once both directions are direct
    /// ([`is_direct`](Self::is_direct)) and no byte read from the relay is waiting; otherwise
    /// `Err(self)`.
    pub fn into_direct(mut self) -> Result<(TcpStream, PortMappings), Self> {
        if !self.is_direct() {
            return Err(self);
        }
        self.stop_mover();
        let stream = match &*lock(&self.shared.writer) {
            Writer::Direct(s) => s.try_clone(),
            Writer::Relayed { .. } => Err(io::Error::other("relayed")),
        };
        match stream.and_then(|s| s.set_read_timeout(None).map(|()| s)) {
            Ok(stream) => {
                // Dropping the connection now leaves the stream open.
                lock(&self.shared.direct).take();
                Ok((stream, self.port_mappings.take().unwrap_or_default()))
            }
            Err(e) => {
                log::warn!("fallback: cannot hand out the direct stream: {e}");
                Err(self)
            }
        }
    }

    fn stop_mover(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        if let Some(mover) = self.mover.take() {
            let _ = mover.join();
        }
    }

    /// Closes the streams and releases the port mappings (the allocation), waiting for that.
    pub fn close(mut self) {
        self.shut();
    }

    fn shut(&mut self) {
        self.stop_mover();
        if let Some(relay) = &self.shared.relay {
            let _ = relay.shutdown(Shutdown::Both);
        }
        if let Some(direct) = &*lock(&self.shared.direct) {
            let _ = direct.shutdown(Shutdown::Both);
        }
        if let Some(mut pm) = self.port_mappings.take() {
            pm.release();
        }
    }
}

impl Drop for TcpConnection {
    fn drop(&mut self) {
        self.shut();
    }
}

impl Read for &TcpConnection {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.shared.read(buf)
    }
}

impl Read for TcpConnection {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.shared.read(buf)
    }
}

impl Write for &TcpConnection {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.shared.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.shared.flush()
    }
}

impl Write for TcpConnection {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.shared.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.shared.flush()
    }
}

/// While relayed: the direct TCP punch from `local`, again after [`DIRECT_RETRY`] until it
/// agrees on a stream, [`DIRECT_RESTARTS`] more times, or the connection ends; the connection
/// then moves to the stream.
fn seek_direct(shared: &Shared, local: SocketAddr, ours: &PrivRendezvousInfo, theirs: &PubRendezvousInfo) {
    for n in 0..=DIRECT_RESTARTS {
        if shared.stop.load(Ordering::SeqCst) {
            break;
        }
        let socket = reusable_tcp_socket(&local).and_then(|s| s.bind(&local.into()).map(|()| s));
        let tried = match socket {
            Ok(socket) => tcp_punch_direct(
                socket,
                ours.clone(),
                theirs.clone(),
                Instant::now() + DIRECT_TCP_TRY,
                Arc::clone(&shared.stop),
            ),
            Err(e) => Err(e.into()),
        };
        match tried {
            Ok(punched) => {
                if !shared.stop.load(Ordering::SeqCst) {
                    shared.take_direct(punched.stream, punched.remote);
                }
                return;
            }
            Err(e) => log::debug!("fallback: no direct TCP stream yet (try {}): {e}", n + 1),
        }
        let until = Instant::now() + DIRECT_RETRY;
        while !shared.stop.load(Ordering::SeqCst) && Instant::now() < until {
            thread::sleep(STOP_POLL.min(until.saturating_duration_since(Instant::now())));
        }
    }
    shared.search_ended();
}

/// Connects to the peer over TCP with fallback (see the module documentation) by `deadline`:
/// `socket` and `port_mappings` come from a `MappedTcpSocket` (with a `turn` server among the
/// context's servers for a relay of our own), the rendezvous information from
/// [`gen_rendezvous_info`](crate::gen_rendezvous_info) and the peer. The direct TCP punch
/// and the relayed paths are tried at once; the result says which path won. A relayed
/// connection goes on punching for a direct stream and moves to it (module documentation).
pub fn connect_tcp(
    socket: Socket,
    port_mappings: PortMappings,
    our_priv_rendezvous_info: PrivRendezvousInfo,
    their_pub_rendezvous_info: PubRendezvousInfo,
    deadline: Instant,
) -> Result<TcpConnection, PunchError> {
    if deadline <= Instant::now() {
        return Err(PunchError::DeadlinePassed);
    }
    let keys = SessionKeys::new(&our_priv_rendezvous_info, &their_pub_rendezvous_info)?;
    let local = socket
        .local_addr()?
        .as_socket()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "not an IP socket"))?;
    // For the background punch if the connection is relayed.
    let search = (
        local,
        our_priv_rendezvous_info.clone(),
        their_pub_rendezvous_info.clone(),
    );
    let relay = with_relay(&port_mappings, |r| r.is_allocated().then(|| r.link()))
        .flatten()
        .filter(RelayLink::is_tcp_relay);
    let relayed = relay.as_ref().and_then(RelayLink::relayed_addr);
    let (tx, rx) = mpsc::channel();
    let stop = Arc::new(AtomicBool::new(false));
    if let Some(relay) = relay {
        let mut ips: Vec<std::net::IpAddr> = their_pub_rendezvous_info
            .endpoints
            .iter()
            .map(|e| natt_core::family::canonical(e.addr).ip())
            .collect();
        ips.sort();
        ips.dedup();
        for ip in ips {
            if let Err(e) = relay.start_permission(SocketAddr::new(ip, 0)) {
                log::debug!("fallback: no permission for {ip} on the relay: {e}");
            }
        }
        let stop = Arc::clone(&stop);
        thread::Builder::new()
            .name("natt-fallback-tcp".into())
            .spawn(move || accept_through(&relay, &tx, &stop, deadline))?;
    }
    log::debug!("fallback: connecting over TCP (relayed {relayed:?})");
    let punched = tcp_punch_hole_with_relay(
        socket,
        our_priv_rendezvous_info,
        their_pub_rendezvous_info,
        deadline,
        rx,
    );
    stop.store(true, Ordering::Relaxed);
    let punched = punched?;
    let remote = punched.remote;
    let path = match punched.route {
        Route::OwnRelay => Path::Relayed {
            relay: relayed.unwrap_or(remote),
            ours: true,
            peer: remote,
        },
        Route::PeerRelay => Path::Relayed {
            relay: remote,
            ours: false,
            peer: remote,
        },
        _ => Path::Direct { peer: remote },
    };
    log::info!("fallback: connected over TCP: {path:?}");
    let connection = match path {
        Path::Direct { peer } => TcpConnection::direct(punched.stream, peer, keys, port_mappings)?,
        Path::Relayed { .. } => {
            let (local, ours, theirs) = search;
            let paths = Paths::new(local, &ours.endpoints, &theirs.endpoints)?;
            // Only when the peer has a direct endpoint to punch to.
            let direct_targets = paths.targets().iter().any(|t| !paths.is_relayed_target(*t));
            let search = direct_targets.then_some((local, ours, theirs));
            TcpConnection::relayed(punched.stream, path, keys, paths, search, port_mappings)?
        }
    };
    Ok(connection)
}

/// Accepts the peer's connections through our relay (RFC 6062) and hands them to the punch,
/// until it is over.
fn accept_through(relay: &RelayLink, punch: &Sender<RelayedStream>, stop: &AtomicBool, deadline: Instant) {
    while !stop.load(Ordering::Relaxed) && !relay.is_closed() {
        let now = Instant::now();
        if now >= deadline {
            return;
        }
        match relay.accept_tcp((now + STOP_POLL).min(deadline), deadline) {
            Ok(Some((peer, stream))) => {
                log::debug!("fallback: {peer} connected through the relay");
                if punch.send(RelayedStream { stream, peer }).is_err() {
                    return;
                }
            }
            Ok(None) => {}
            Err(e) => {
                log::debug!("fallback: a connection through the relay failed: {e}");
                thread::sleep(natt_core::deadline::MIN_WAIT);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use natt_core::rendezvous::gen_rendezvous_info;
    use natt_core::{MappedTcpSocket, MappingContext};
    use natt_punch::records::MOVE_RECORD_LEN;
    use std::net::TcpListener;

    /// Copies bytes between two streams both ways, counting them, until both ends close.
    fn relay_between(a: TcpStream, b: TcpStream) -> Arc<std::sync::atomic::AtomicUsize> {
        let count = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        for (mut from, mut to) in [
            (a.try_clone().unwrap(), b.try_clone().unwrap()),
            (b.try_clone().unwrap(), a.try_clone().unwrap()),
        ] {
            let count = Arc::clone(&count);
            thread::spawn(move || {
                let mut buf = [0u8; 4096];
                while let Ok(n @ 1..) = from.read(&mut buf) {
                    count.fetch_add(n, Ordering::SeqCst);
                    if to.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
                let _ = to.shutdown(Shutdown::Both);
            });
        }
        count
    }

    /// A pair of connected streams, as a relay's two ends would be, through a counting relay.
    fn relayed_pair() -> (TcpStream, TcpStream, Arc<std::sync::atomic::AtomicUsize>) {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let a = TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (ra, _) = l.accept().unwrap();
        let b = TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (rb, _) = l.accept().unwrap();
        let count = relay_between(ra, rb);
        (a, b, count)
    }

    struct Side {
        socket: Socket,
        local: SocketAddr,
        ours: PrivRendezvousInfo,
        public: PubRendezvousInfo,
    }

    fn side() -> Side {
        let m = MappedTcpSocket::bind("127.0.0.1:0".parse().unwrap(), &MappingContext::empty()).unwrap();
        let local = m.socket.local_addr().unwrap().as_socket().unwrap();
        let (ours, public) = gen_rendezvous_info(m.endpoints);
        Side {
            socket: m.socket,
            local,
            ours,
            public,
        }
    }

    /// `me`'s connection on `stream`, relayed, looking for a direct stream when `search`.
    fn relayed(me: Side, peer: &PubRendezvousInfo, stream: TcpStream, search: bool) -> TcpConnection {
        drop(me.socket);
        let keys = SessionKeys::new(&me.ours, peer).unwrap();
        let paths = Paths::new(me.local, &me.ours.endpoints, &peer.endpoints).unwrap();
        let relay = stream.peer_addr().unwrap();
        let path = Path::Relayed {
            relay,
            ours: false,
            peer: relay,
        };
        let search = search.then(|| (me.local, me.ours.clone(), peer.clone()));
        TcpConnection::relayed(stream, path, keys, paths, search, PortMappings::default()).unwrap()
    }

    /// The bytes `i`, `i+1`, ... (mod 251) from `from`.
    fn numbered(from: usize, len: usize) -> Vec<u8> {
        (from..from + len).map(|i| (i % 251) as u8).collect()
    }

    #[test]
    fn a_relayed_connection_moves_to_the_direct_stream_without_losing_a_byte() {
        let (a, b) = (side(), side());
        let (a_pub, b_pub) = (a.public.clone(), b.public.clone());
        let (sa, sb, relayed_bytes) = relayed_pair();
        let ca = relayed(a, &b_pub, sa, true);
        // a writes before b's side exists (so before any direct stream): through the relay.
        let first = 100_000;
        (&ca).write_all(&numbered(0, first)).unwrap();
        let cb = relayed(b, &a_pub, sb, true);
        let total = 2_000_000;
        thread::scope(|s| {
            for (conn, peer) in [(&ca, &cb), (&cb, &ca)] {
                let skip = if std::ptr::eq(conn, &ca) { first } else { 0 };
                s.spawn(move || {
                    let mut sent = skip;
                    while sent < total {
                        let n = 7919.min(total - sent);
                        (&*conn).write_all(&numbered(sent, n)).unwrap();
                        sent += n;
                        if sent % 100_000 < 7919 {
                            thread::sleep(Duration::from_millis(5));
                        }
                    }
                });
                s.spawn(move || {
                    let mut got = Vec::with_capacity(total);
                    let mut buf = [0u8; 10_000];
                    while got.len() < total {
                        let n = (&*peer).read(&mut buf).unwrap();
                        assert!(n > 0, "the stream ended after {} bytes", got.len());
                        got.extend_from_slice(&buf[..n]);
                    }
                    assert!(got == numbered(0, total), "bytes lost, repeated or reordered");
                });
            }
        });
        assert_eq!((ca.moves(), cb.moves()), (1, 1));
        assert!(matches!(ca.path(), Path::Direct { .. }), "{:?}", ca.path());
        assert!(ca.is_direct() && cb.is_direct());
        let through_relay = relayed_bytes.load(Ordering::SeqCst);
        assert!(
            through_relay >= first && through_relay < 2 * total,
            "{through_relay} bytes through the relay"
        );
        // Plain streams from now on.
        let (mut pa, _) = ca.into_direct().unwrap();
        let (mut pb, _) = cb.into_direct().unwrap();
        pa.write_all(b"plain").unwrap();
        let mut buf = [0u8; 5];
        pb.read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"plain");
    }

    #[test]
    fn a_forged_move_record_breaks_nothing_silently() {
        let (a, b) = (side(), side());
        let b_pub = b.public.clone();
        let (sa, mut sb, _) = relayed_pair();
        let ca = relayed(a, &b_pub, sa, false);
        // Someone without the keys (another session's) writes a move record on the relayed
        // stream: the read fails; it does not switch streams.
        let (other, _) = gen_rendezvous_info(vec![]);
        let keys = SessionKeys::new(&other, &b_pub).unwrap();
        let mut bytes = Vec::new();
        records::encode_data(b"before", &mut bytes);
        bytes.extend_from_slice(&records::encode_move(&keys, "127.0.0.1:1".parse().unwrap(), [0; 12]));
        sb.write_all(&bytes).unwrap();
        let mut buf = [0u8; 64];
        assert_eq!((&ca).read(&mut buf).unwrap(), 6);
        let e = (&ca).read(&mut buf).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidData, "{e}");
        assert_eq!(ca.moves(), 0);
    }

    #[test]
    fn a_peer_that_moved_where_we_found_no_stream_is_an_error() {
        let (a, b) = (side(), side());
        let (a_pub, b_pub) = (a.public.clone(), b.public.clone());
        let (sa, mut sb, _) = relayed_pair();
        // a does not search (no direct endpoint to try); b's genuine move arrives, bound to
        // a's address.
        let ca = relayed(a, &b_pub, sa, false);
        let keys = SessionKeys::new(&b.ours, &a_pub).unwrap();
        let record = records::encode_move(&keys, a_pub.endpoints[0].addr, [3; 12]);
        assert_eq!(record.len(), MOVE_RECORD_LEN);
        sb.write_all(&record).unwrap();
        let mut buf = [0u8; 8];
        let e = (&ca).read(&mut buf).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::ConnectionAborted, "{e}");
    }
}
