//! [`TcpConnection`]: the TCP connection [`connect_tcp`](super::connect_tcp) returns, direct or
//! through a TURN relay, and how a relayed one moves to a direct stream that opens later.
//!
//! A stream that is direct from the start carries the application's plain bytes. A relayed
//! stream carries them in natt's records ([`natt_punch::records`]), so that:
//!
//! - **it can move.** While relayed, the direct TCP punch (natt-punch's [`tcp_punch_direct`])
//!   runs again in the background, for [`DIRECT_TCP_TRY`] each time, [`DIRECT_RETRY`] apart,
//!   [`DIRECT_RESTARTS`] more times. When it agrees on a stream, each side writes a signed
//!   *ready* message on that stream and reads the peer's (within [`READY_WAIT`]): only a
//!   stream on which both arrived is used, so the two sides cannot end up on different
//!   streams. Then each side writes a *move* record (its ready message again) last on the
//!   relayed stream and its next bytes on the direct one; each reads the relayed stream up to
//!   the peer's move record, checks it names the ready message that arrived on its direct
//!   stream, then reads the direct stream. TCP keeps each stream in order, so no byte handed to
//!   [`Write`] is lost, repeated or reordered; the two directions move independently. A side
//!   whose peer moved waits at most [`MOVE_WAIT`] for its own punch's stream.
//! - **it can end one direction** ([`TcpConnection::shutdown_write`]) with an *end* record: a
//!   TURN server such as coturn ends a relayed TCP connection as a whole on a FIN.
//! - **it closes without losing bytes in the relay.** A side that read the peer's move or end
//!   record answers with an *ack*; [`close`](TcpConnection::close) (and drop) end our sending
//!   side if the application did not, wait up to [`CLOSE_WAIT`] for the peer's ack (answering
//!   the peer's own end meanwhile), and only then close the relayed stream and delete the
//!   allocation, which would drop whatever the relay still holds.
//!
//! A relayed stream that ends without the peer's end record (the relay or the peer is gone)
//! is an `UnexpectedEof` error, never a silent end. Garbage on it is `InvalidData`. The
//! relay can still drop or alter data records (as it could plain relayed bytes): natt does
//! not encrypt the application's data.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::ops::Range;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU32, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use rand::Rng;

use natt_core::rendezvous::{PrivRendezvousInfo, PubRendezvousInfo};
use natt_core::reuse::reusable_tcp_socket;
use natt_core::udp::STOP_POLL;
use natt_core::{PortMappings, deadline};
use natt_punch::keys::SessionKeys;
use natt_punch::path::Paths;
use natt_punch::records::{self, MAX_RECORD, Record};
use natt_punch::tcp::read_frame;
use natt_punch::tcp_punch_direct;
use natt_punch::wire::{MESSAGE_LEN, NONCE_LEN};

use super::race::{DIRECT_RESTARTS, DIRECT_RETRY};
use super::udp::{Path, lock};

/// While relayed: how long each background direct TCP punch runs.
pub const DIRECT_TCP_TRY: Duration = Duration::from_secs(10);
/// How long each side waits for the peer's ready message on a direct stream the background
/// punch agreed on; without it the stream is not used.
pub const READY_WAIT: Duration = Duration::from_secs(5);
/// How long a side whose peer moved to a direct stream waits for its own background punch to
/// hand it that stream; then reading fails with `ConnectionAborted`.
pub const MOVE_WAIT: Duration = Duration::from_secs(15);
/// How long closing a relayed connection waits for the peer to acknowledge our last record
/// (end or move); also the bound on writing natt's own records (move, end, ack).
pub const CLOSE_WAIT: Duration = Duration::from_secs(3);

/// A TCP connection to the peer, direct or through a TURN relay, with the port mappings (and
/// relay allocation) of its socket, held while it lives and released on
/// [`close`](Self::close) or drop. Read and write it with [`Read`] and [`Write`] (also on
/// `&TcpConnection`, so one thread can read while another writes); a relayed one moves to a
/// direct stream when one opens (see the [module documentation](self)).
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
/// Locks are taken in the order reader, relay_in, writer, direct, read_timeout.
struct Shared {
    reader: Mutex<Reader>,
    /// The relayed stream's incoming records (none when direct from the start).
    relay_in: Mutex<Option<RelayIn>>,
    writer: Mutex<Writer>,
    /// The relayed stream (none when direct from the start): for acks written once our
    /// writing is direct, and for closing it.
    relay: Option<TcpStream>,
    /// The direct stream our background punch agreed on (or the stream of a connection direct
    /// from the start), with `found`.
    direct: Mutex<Option<Direct>>,
    /// Notified when `direct` is set or the background punch gave up for good.
    found: Condvar,
    /// The background punch gave up for good (no direct stream will come).
    search_over: AtomicBool,
    /// The path our bytes take.
    path: Mutex<Path>,
    moves: AtomicU32,
    /// How many directions are on the direct stream (2 when direct from the start).
    direct_halves: AtomicU8,
    /// The peer acknowledged our move or end record.
    acked: AtomicBool,
    /// Ends the background punch.
    stop: Arc<AtomicBool>,
    keys: SessionKeys,
    paths: Option<Paths>,
    read_timeout: Mutex<Option<Duration>>,
}

/// A direct stream, and the nonce of the ready message the peer wrote on it (its move record
/// must carry the same).
struct Direct {
    stream: TcpStream,
    peer_nonce: [u8; NONCE_LEN],
}

/// Where reading is.
enum Reader {
    /// Records on the relayed stream (`relay_in`).
    Relayed,
    /// The peer's move record (naming its ready message's `nonce`) was read at `since`;
    /// waiting for our punch's direct stream.
    Moving { since: Instant, nonce: [u8; NONCE_LEN] },
    /// Plain bytes on the direct stream.
    Direct(TcpStream),
    /// The peer's end record was read: the end of its bytes.
    Ended,
    /// Reading failed for good.
    Failed(io::ErrorKind, String),
}

/// Where writing is.
enum Writer {
    /// Records on the relayed stream (`frame`: the one being written); `ended` once our end
    /// record is written.
    Relayed {
        stream: TcpStream,
        frame: Vec<u8>,
        ended: bool,
    },
    /// Plain bytes on the direct stream.
    Direct(TcpStream),
}

/// The relayed stream's incoming side: `buf[start..end]` read but not parsed; `data`, the
/// part of `buf` of a data record not yet handed out.
struct RelayIn {
    stream: TcpStream,
    buf: Box<[u8]>,
    start: usize,
    end: usize,
    data: Range<usize>,
}

/// What comes next on the relayed stream.
enum In {
    /// This many of the peer's bytes, copied out.
    Data(usize),
    /// The peer's move record (its body).
    Move([u8; MESSAGE_LEN]),
    /// The peer's end record.
    End,
    /// The peer read our move or end record.
    Ack,
    /// The stream ended (between records).
    Eof,
}

fn invalid(why: impl std::fmt::Display) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("the relayed stream: {why}"))
}

fn is_timeout(e: &io::Error) -> bool {
    matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut)
}

/// Writes natt's own record (or message) within `limit`: such writes must not block a close
/// for ever on a peer that stopped reading.
fn write_bounded(stream: &TcpStream, bytes: &[u8], limit: Duration) -> io::Result<()> {
    stream.set_write_timeout(Some(limit.max(deadline::MIN_WAIT)))?;
    let mut w = stream;
    let written = w.write_all(bytes).and_then(|()| w.flush());
    stream.set_write_timeout(None)?;
    written
}

impl RelayIn {
    fn new(stream: TcpStream) -> Self {
        RelayIn {
            stream,
            buf: vec![0u8; MAX_RECORD].into_boxed_slice(),
            start: 0,
            end: 0,
            data: 0..0,
        }
    }

    /// The next thing on the relayed stream, by `until` (none: no limit; past it,
    /// `WouldBlock`). Data goes into `out`; with an empty `out` it is skipped (closing).
    fn next(&mut self, out: &mut [u8], until: Option<Instant>) -> io::Result<In> {
        loop {
            if self.data.start < self.data.end {
                if out.is_empty() {
                    self.data.start = self.data.end;
                    continue;
                }
                let n = self.data.len().min(out.len());
                let (Some(from), Some(to)) = (self.buf.get(self.data.start..self.data.start + n), out.get_mut(..n))
                else {
                    return Err(invalid("a record outside the buffer"));
                };
                to.copy_from_slice(from);
                self.data.start += n;
                return Ok(In::Data(n));
            }
            let parsed = records::parse(self.buf.get(self.start..self.end).unwrap_or(&[])).map_err(invalid)?;
            match parsed {
                Some((record, used)) => {
                    let at = self.start + records::HEADER_LEN;
                    self.start += used;
                    match record {
                        Record::Data(body) => self.data = at..at + body.len(),
                        Record::Move(body) => return Ok(In::Move(*body)),
                        Record::End => return Ok(In::End),
                        Record::Ack => return Ok(In::Ack),
                    }
                }
                None => {
                    if !self.fill(until)? {
                        return Ok(In::Eof);
                    }
                }
            }
        }
    }

    /// Reads more of the stream behind the partial record it keeps at the front of `buf`;
    /// `false` when the stream ended between records.
    fn fill(&mut self, until: Option<Instant>) -> io::Result<bool> {
        if self.start > self.end || self.end > self.buf.len() {
            return Err(invalid("a record outside the buffer"));
        }
        self.buf.copy_within(self.start..self.end, 0);
        self.end -= self.start;
        self.start = 0;
        let timeout = match until {
            None => None,
            Some(u) => Some(
                deadline::remaining(u)
                    .ok_or_else(|| io::Error::new(io::ErrorKind::WouldBlock, "the read timeout passed"))?,
            ),
        };
        self.stream.set_read_timeout(timeout)?;
        let Some(space) = self.buf.get_mut(self.end..).filter(|s| !s.is_empty()) else {
            return Err(invalid("a record longer than any natt sends"));
        };
        match self.stream.read(space)? {
            0 if self.end == 0 => Ok(false),
            0 => Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the relayed stream ended inside a record",
            )),
            n => {
                self.end += n;
                Ok(true)
            }
        }
    }
}

impl Shared {
    fn new(
        reader: Reader,
        writer: Writer,
        relay_in: Option<RelayIn>,
        path: Path,
        keys: SessionKeys,
        paths: Option<Paths>,
    ) -> io::Result<Self> {
        let (direct, relay, halves) = match &writer {
            Writer::Direct(s) => (
                Some(Direct {
                    stream: s.try_clone()?,
                    peer_nonce: [0; NONCE_LEN],
                }),
                None,
                2,
            ),
            Writer::Relayed { stream, .. } => (None, Some(stream.try_clone()?), 0),
        };
        Ok(Shared {
            reader: Mutex::new(reader),
            relay_in: Mutex::new(relay_in),
            writer: Mutex::new(writer),
            relay,
            direct: Mutex::new(direct),
            found: Condvar::new(),
            search_over: AtomicBool::new(false),
            path: Mutex::new(path),
            moves: AtomicU32::new(0),
            direct_halves: AtomicU8::new(halves),
            acked: AtomicBool::new(false),
            stop: Arc::new(AtomicBool::new(false)),
            keys,
            paths,
            read_timeout: Mutex::new(None),
        })
    }

    fn read(&self, out: &mut [u8]) -> io::Result<usize> {
        if out.is_empty() {
            return Ok(0);
        }
        let until = lock(&self.read_timeout).and_then(|t| Instant::now().checked_add(t));
        let mut reader = lock(&self.reader);
        loop {
            let step = match &mut *reader {
                Reader::Direct(stream) => return stream.read(out),
                Reader::Ended => return Ok(0),
                Reader::Failed(kind, why) => return Err(io::Error::new(*kind, why.clone())),
                Reader::Moving { since, nonce } => self.wait_direct(*since, *nonce, until).map(Reader::Direct),
                Reader::Relayed => match self.read_relayed(out, until) {
                    Ok(Ok(n)) => return Ok(n),
                    Ok(Err(next)) => Ok(next),
                    Err(e) => Err(e),
                },
            };
            match step {
                Ok(next) => {
                    if matches!(next, Reader::Direct(_)) {
                        log::debug!("fallback: reading the direct stream from now on");
                        self.direct_halves.fetch_add(1, Ordering::SeqCst);
                    }
                    *reader = next;
                    if matches!(*reader, Reader::Ended) {
                        return Ok(0);
                    }
                }
                Err(e) if is_timeout(&e) => return Err(e),
                Err(e) => {
                    *reader = Reader::Failed(e.kind(), e.to_string());
                    return Err(e);
                }
            }
        }
    }

    /// Reads the relayed stream until some of the peer's bytes (`Ok(Ok(n))`) or a record that
    /// changes where reading is (`Ok(Err(next))`).
    fn read_relayed(&self, out: &mut [u8], until: Option<Instant>) -> io::Result<Result<usize, Reader>> {
        let mut relay_in = lock(&self.relay_in);
        let Some(relay_in) = relay_in.as_mut() else {
            return Err(invalid("gone"));
        };
        loop {
            match relay_in.next(out, until)? {
                In::Data(n) => return Ok(Ok(n)),
                In::Ack => self.acked.store(true, Ordering::SeqCst),
                In::End => {
                    log::debug!("fallback: the peer ended its bytes (end record)");
                    self.send_ack();
                    return Ok(Err(Reader::Ended));
                }
                In::Move(body) => {
                    let (observed, nonce) = records::open_ready(&self.keys, &body)
                        .ok_or_else(|| invalid("a move record that is not the peer's"))?;
                    if !self.paths.as_ref().is_some_and(|p| p.sees_us_directly(observed)) {
                        return Err(invalid(format!("the peer's move names {observed}, not us")));
                    }
                    log::debug!("fallback: the peer moved to the direct stream");
                    self.send_ack();
                    return Ok(Err(Reader::Moving {
                        since: Instant::now(),
                        nonce,
                    }));
                }
                In::Eof => {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "the relayed stream ended without the peer's end record (the relay or the peer is gone)",
                    ));
                }
            }
        }
    }

    /// The direct stream our punch agreed on, for the peer's move naming `nonce` (read at
    /// `since`), waiting for it within `until` (the read timeout; `WouldBlock` past it) and
    /// [`MOVE_WAIT`] (`ConnectionAborted` past it).
    fn wait_direct(&self, since: Instant, nonce: [u8; NONCE_LEN], until: Option<Instant>) -> io::Result<TcpStream> {
        let give_up = since.checked_add(MOVE_WAIT).unwrap_or(since);
        let limit = until.map_or(give_up, |u| u.min(give_up));
        let mut direct = lock(&self.direct);
        loop {
            if let Some(d) = direct.as_ref() {
                if d.peer_nonce != nonce {
                    return Err(invalid("the peer moved to another stream than the one this side holds"));
                }
                return d.stream.try_clone();
            }
            let now = Instant::now();
            if now >= give_up || self.search_over.load(Ordering::SeqCst) || self.stop.load(Ordering::SeqCst) {
                return Err(io::Error::new(
                    io::ErrorKind::ConnectionAborted,
                    "the peer moved to a direct stream that this side's punch did not agree on",
                ));
            }
            if now >= limit {
                return Err(io::Error::new(
                    io::ErrorKind::WouldBlock,
                    "waiting for the direct stream",
                ));
            }
            direct = self
                .found
                .wait_timeout(direct, limit - now)
                .map(|(g, _)| g)
                .unwrap_or_else(|p| p.into_inner().0);
        }
    }

    /// Acknowledges the peer's move or end record on the relayed stream (best effort: a relay
    /// that is gone loses nothing of ours).
    fn send_ack(&self) {
        let ack = records::encode_ack();
        let writer = lock(&self.writer);
        let stream = match &*writer {
            Writer::Relayed { stream, .. } => Some(stream),
            Writer::Direct(_) => self.relay.as_ref(),
        };
        if let Some(stream) = stream
            && let Err(e) = write_bounded(stream, &ack, CLOSE_WAIT)
        {
            log::debug!("fallback: cannot acknowledge on the relayed stream: {e}");
        }
    }

    fn write(&self, buf: &[u8]) -> io::Result<usize> {
        match &mut *lock(&self.writer) {
            Writer::Direct(stream) => stream.write(buf),
            Writer::Relayed { ended: true, .. } => Err(io::Error::new(
                io::ErrorKind::BrokenPipe,
                "the connection's sending side was shut down",
            )),
            Writer::Relayed { stream, frame, .. } => {
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

    fn shutdown_write(&self) -> io::Result<()> {
        match &mut *lock(&self.writer) {
            Writer::Direct(stream) => stream.shutdown(Shutdown::Write),
            Writer::Relayed { ended: true, .. } => Ok(()),
            Writer::Relayed { stream, ended, .. } => {
                stream.write_all(&records::encode_end())?;
                *ended = true;
                Ok(())
            }
        }
    }

    /// Exchanges ready messages on a direct stream the background punch agreed on (`peer`,
    /// its far end): ours written, the peer's read within [`READY_WAIT`] and checked. Returns
    /// ours (for our move record) and the peer's nonce (its move record must name it).
    fn ready(&self, stream: &mut TcpStream, peer: SocketAddr) -> io::Result<([u8; MESSAGE_LEN], [u8; NONCE_LEN])> {
        let ours = records::encode_ready(&self.keys, peer, rand::rng().random());
        write_bounded(stream, &ours, READY_WAIT)?;
        let theirs = read_frame(stream, Instant::now() + READY_WAIT, &self.stop)?;
        stream.set_read_timeout(None)?;
        let (observed, nonce) =
            records::open_ready(&self.keys, &theirs).ok_or_else(|| invalid("not the peer's ready message"))?;
        if !self.paths.as_ref().is_some_and(|p| p.sees_us_directly(observed)) {
            return Err(invalid(format!("the peer's ready message names {observed}, not us")));
        }
        Ok((ours, nonce))
    }

    /// Takes the direct stream both sides are ready on (`peer`, its far end): for reading once
    /// the peer's move arrives, and for our writing at once, with our move record last on the
    /// relayed stream (unless our sending side had ended).
    fn take_direct(
        &self,
        stream: TcpStream,
        peer: SocketAddr,
        ours: &[u8; MESSAGE_LEN],
        peer_nonce: [u8; NONCE_LEN],
    ) -> io::Result<()> {
        let for_writer = stream.try_clone()?;
        {
            let mut direct = lock(&self.direct);
            if let Err(e) = stream.set_read_timeout(*lock(&self.read_timeout)) {
                log::debug!("fallback: the direct stream's read timeout: {e}");
            }
            *direct = Some(Direct { stream, peer_nonce });
            self.found.notify_all();
        }
        let mut writer = lock(&self.writer);
        match &mut *writer {
            Writer::Relayed { ended: true, .. } => {
                log::debug!("fallback: a direct stream to {peer}, but our sending side had ended");
            }
            Writer::Relayed { stream: relay, .. } => {
                match write_bounded(relay, &records::encode_move(ours), CLOSE_WAIT) {
                    Ok(()) => {
                        *writer = Writer::Direct(for_writer);
                        *lock(&self.path) = Path::Direct { peer };
                        self.moves.fetch_add(1, Ordering::SeqCst);
                        self.direct_halves.fetch_add(1, Ordering::SeqCst);
                        log::info!("fallback: moved to the direct TCP stream to {peer}");
                    }
                    Err(e) => {
                        log::warn!("fallback: our move record did not go through the relay ({e}); our bytes stay on it")
                    }
                }
            }
            Writer::Direct(_) => {}
        }
        Ok(())
    }

    fn search_ended(&self) {
        self.search_over.store(true, Ordering::SeqCst);
        let _guard = lock(&self.direct);
        self.found.notify_all();
    }

    /// Before the relayed stream is closed: our end record if our last record on it is
    /// neither an end nor a move, then the peer's ack of it, within `until`, answering the
    /// peer's own end or move meanwhile.
    fn finish_relay(&self, until: Instant) {
        if self.relay.is_none() {
            return;
        }
        {
            let mut writer = lock(&self.writer);
            if let Writer::Relayed { stream, ended, .. } = &mut *writer
                && !*ended
            {
                let left = until.saturating_duration_since(Instant::now());
                if let Err(e) = write_bounded(stream, &records::encode_end(), left) {
                    log::debug!("fallback: cannot end the relayed stream: {e}");
                    return;
                }
                *ended = true;
            }
        }
        let _reader = lock(&self.reader);
        let mut relay_in = lock(&self.relay_in);
        let Some(relay_in) = relay_in.as_mut() else { return };
        while !self.acked.load(Ordering::SeqCst) {
            match relay_in.next(&mut [], Some(until)) {
                Ok(In::Ack) => self.acked.store(true, Ordering::SeqCst),
                Ok(In::End | In::Move(_)) => self.send_ack(),
                Ok(In::Data(_)) => {}
                Ok(In::Eof) => break,
                Err(e) => {
                    log::debug!("fallback: no ack of our last record on the relayed stream: {e}");
                    break;
                }
            }
        }
    }
}

impl TcpConnection {
    /// A connection on a stream that is direct from the start.
    pub(super) fn direct(
        stream: TcpStream,
        peer: SocketAddr,
        keys: SessionKeys,
        port_mappings: PortMappings,
    ) -> io::Result<Self> {
        let reader = Reader::Direct(stream.try_clone()?);
        let shared = Shared::new(reader, Writer::Direct(stream), None, Path::Direct { peer }, keys, None)?;
        Ok(TcpConnection {
            shared: Arc::new(shared),
            mover: None,
            port_mappings: Some(port_mappings),
        })
    }

    /// A connection on a relayed stream, with the background punch for a direct stream from
    /// `local` (`search`: our rendezvous info and the peer's) when there is one to try.
    pub(super) fn relayed(
        stream: TcpStream,
        path: Path,
        keys: SessionKeys,
        paths: Paths,
        search: Option<(SocketAddr, PrivRendezvousInfo, PubRendezvousInfo)>,
        port_mappings: PortMappings,
    ) -> io::Result<Self> {
        let relay_in = RelayIn::new(stream.try_clone()?);
        let writer = Writer::Relayed {
            stream,
            frame: Vec::with_capacity(MAX_RECORD),
            ended: false,
        };
        let shared = Arc::new(Shared::new(
            Reader::Relayed,
            writer,
            Some(relay_in),
            path,
            keys,
            Some(paths),
        )?);
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

    /// The path our bytes take now (our sending direction): a relayed connection's path
    /// becomes direct when it moves. The peer's bytes follow when the peer moves its own.
    pub fn path(&self) -> Path {
        *lock(&self.shared.path)
    }

    /// How many times our sending moved to a direct path (0 or 1).
    pub fn moves(&self) -> u32 {
        self.shared.moves.load(Ordering::SeqCst)
    }

    /// Whether both directions are on a direct stream (from the start, or both moved):
    /// [`into_direct`](Self::into_direct) then succeeds.
    pub fn is_direct(&self) -> bool {
        self.shared.direct_halves.load(Ordering::SeqCst) >= 2
    }

    /// A timeout for reads (`None`: none): a read that waits longer fails with `WouldBlock`
    /// or `TimedOut`, as on a `TcpStream`. A zero timeout is refused (`InvalidInput`).
    pub fn set_read_timeout(&self, timeout: Option<Duration>) -> io::Result<()> {
        if timeout.is_some_and(|t| t.is_zero()) {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "a zero read timeout"));
        }
        *lock(&self.shared.read_timeout) = timeout;
        if let Some(d) = &*lock(&self.shared.direct) {
            d.stream.set_read_timeout(timeout)?;
        }
        Ok(())
    }

    /// Ends our sending side: the peer reads the end of our bytes (a FIN on a direct stream, an
    /// end record on a relayed one), while we can still read its own. Writing afterwards
    /// fails.
    pub fn shutdown_write(&self) -> io::Result<()> {
        self.shared.shutdown_write()
    }

    /// The plain stream to the peer and the port mappings, once both directions are direct
    /// ([`is_direct`](Self::is_direct)); otherwise `Err(self)`. After a move this first waits
    /// (at most [`CLOSE_WAIT`]) for the peer to acknowledge our move record, then closes the
    /// relayed stream.
    pub fn into_direct(mut self) -> Result<(TcpStream, PortMappings), Self> {
        if !self.is_direct() {
            return Err(self);
        }
        self.stop_mover();
        self.close_relay();
        let stream = lock(&self.shared.direct).take();
        let handed = stream
            .map(|d| d.stream)
            .ok_or_else(|| io::Error::other("no direct stream"));
        match handed.and_then(|s| s.set_read_timeout(None).map(|()| s)) {
            Ok(stream) => Ok((stream, self.port_mappings.take().unwrap_or_default())),
            Err(e) => {
                log::warn!("fallback: cannot hand out the direct stream: {e}");
                Err(self)
            }
        }
    }

    fn stop_mover(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        self.shared.search_ended();
        if let Some(mover) = self.mover.take() {
            let _ = mover.join();
        }
    }

    fn close_relay(&self) {
        if let Some(relay) = &self.shared.relay {
            self.shared.finish_relay(Instant::now() + CLOSE_WAIT);
            let _ = relay.shutdown(Shutdown::Both);
        }
    }

    /// Closes the connection and releases the port mappings (the allocation), waiting for
    /// that. A relayed connection first ends our sending side (if it was not) and waits up to
    /// [`CLOSE_WAIT`] for the peer to acknowledge it, so that nothing still in the relay is
    /// lost (see the module documentation). Dropping the connection does the same.
    pub fn close(mut self) {
        self.shut();
    }

    fn shut(&mut self) {
        self.stop_mover();
        self.close_relay();
        if let Some(d) = lock(&self.shared.direct).take() {
            let _ = d.stream.shutdown(Shutdown::Both);
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

/// While relayed: the direct TCP punch from `local`, again after [`DIRECT_RETRY`] until both
/// sides are ready on a stream, [`DIRECT_RESTARTS`] more times, or the connection ends; the
/// connection then moves to the stream.
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
            )
            .map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        match tried {
            Ok(mut punched) => {
                let peer = natt_core::family::canonical(punched.remote);
                match shared.ready(&mut punched.stream, peer) {
                    Ok((our_ready, peer_nonce)) if !shared.stop.load(Ordering::SeqCst) => {
                        match shared.take_direct(punched.stream, peer, &our_ready, peer_nonce) {
                            Ok(()) => return,
                            Err(e) => log::warn!("fallback: cannot use the direct stream to {peer}: {e}"),
                        }
                    }
                    Ok(_) => break,
                    Err(e) => log::debug!("fallback: the direct stream to {peer} is not ready on both sides: {e}"),
                }
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

#[cfg(test)]
mod tests {
    use super::*;
    use natt_core::rendezvous::gen_rendezvous_info;
    use natt_core::{MappedTcpSocket, MappingContext};
    use natt_punch::records::MOVE_RECORD_LEN;
    use socket2::Socket;
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
        let ready = records::encode_ready(&keys, "127.0.0.1:1".parse().unwrap(), [0; 12]);
        bytes.extend_from_slice(&records::encode_move(&ready));
        sb.write_all(&bytes).unwrap();
        let mut buf = [0u8; 64];
        assert_eq!((&ca).read(&mut buf).unwrap(), 6);
        let e = (&ca).read(&mut buf).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidData, "{e}");
        assert_eq!(ca.moves(), 0);
        // The relay's other end goes: closing does not wait for an ack.
        drop(sb);
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
        let record = records::encode_move(&records::encode_ready(&keys, a_pub.endpoints[0].addr, [3; 12]));
        assert_eq!(record.len(), MOVE_RECORD_LEN);
        sb.write_all(&record).unwrap();
        let mut buf = [0u8; 8];
        let e = (&ca).read(&mut buf).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::ConnectionAborted, "{e}");
        drop(sb);
    }

    /// As a TURN server relays TCP: each direction through a queue, written on slowly (one
    /// 4 KiB chunk per `pace`), and the whole connection torn down, queues dropped, as soon as
    /// either side ends its stream (coturn ends a relayed connection as a whole on a FIN).
    fn relay_like_coturn(a: TcpStream, b: TcpStream, pace: Duration) {
        for (mut from, to) in [
            (a.try_clone().unwrap(), b.try_clone().unwrap()),
            (b.try_clone().unwrap(), a.try_clone().unwrap()),
        ] {
            let (tx, rx) = std::sync::mpsc::channel::<Vec<u8>>();
            let (a, b) = (a.try_clone().unwrap(), b.try_clone().unwrap());
            thread::spawn(move || {
                let mut buf = [0u8; 4096];
                while let Ok(n @ 1..) = from.read(&mut buf) {
                    let _ = tx.send(buf[..n].to_vec());
                }
                // Torn down at once: whatever is queued is lost.
                let _ = a.shutdown(Shutdown::Both);
                let _ = b.shutdown(Shutdown::Both);
            });
            thread::spawn(move || {
                let mut to = to;
                for chunk in rx {
                    thread::sleep(pace);
                    if to.write_all(&chunk).is_err() {
                        break;
                    }
                }
            });
        }
    }

    fn pair_through(pace: Duration) -> (TcpStream, TcpStream) {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let a = TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (ra, _) = l.accept().unwrap();
        let b = TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (rb, _) = l.accept().unwrap();
        relay_like_coturn(ra, rb, pace);
        (a, b)
    }

    #[test]
    fn closing_a_relayed_connection_loses_nothing_still_in_the_relay() {
        let (a, b) = (side(), side());
        let (a_pub, b_pub) = (a.public.clone(), b.public.clone());
        let (sa, sb) = pair_through(Duration::from_millis(2));
        let ca = relayed(a, &b_pub, sa, false);
        let cb = relayed(b, &a_pub, sb, false);
        let total = 400_000;
        let reader = thread::spawn(move || {
            let mut got = Vec::new();
            (&cb).read_to_end(&mut got).unwrap();
            (got, cb)
        });
        (&ca).write_all(&numbered(0, total)).unwrap();
        // Most of a's bytes are still in the relay: a's close waits until b has them all.
        ca.close();
        let (got, cb) = reader.join().unwrap();
        assert!(got == numbered(0, total), "{} of {total} bytes", got.len());
        cb.close();
    }

    #[test]
    fn a_relayed_connection_ends_one_direction_at_a_time() {
        let (a, b) = (side(), side());
        let (a_pub, b_pub) = (a.public.clone(), b.public.clone());
        let (sa, sb) = pair_through(Duration::ZERO);
        let ca = relayed(a, &b_pub, sa, false);
        let cb = relayed(b, &a_pub, sb, false);
        (&cb).write_all(b"the other way").unwrap();
        cb.shutdown_write().unwrap();
        let e = (&cb).write_all(b"more").unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::BrokenPipe);
        let mut back = Vec::new();
        (&ca).read_to_end(&mut back).unwrap();
        assert_eq!(back, b"the other way");
        // a still writes, b still reads.
        (&ca).write_all(b"a reply").unwrap();
        ca.shutdown_write().unwrap();
        let mut reply = Vec::new();
        (&cb).read_to_end(&mut reply).unwrap();
        assert_eq!(reply, b"a reply");
        // Both ends were acknowledged: closing waits for nothing.
        assert!(ca.shared.acked.load(Ordering::SeqCst) || cb.shared.acked.load(Ordering::SeqCst));
        ca.close();
        cb.close();
    }

    #[test]
    fn a_relayed_stream_that_ends_without_an_end_record_is_an_error() {
        let (a, b) = (side(), side());
        let b_pub = b.public.clone();
        let (sa, mut sb, _) = relayed_pair();
        let ca = relayed(a, &b_pub, sa, false);
        let mut bytes = Vec::new();
        records::encode_data(b"partial", &mut bytes);
        sb.write_all(&bytes).unwrap();
        drop(sb);
        let mut buf = [0u8; 64];
        assert_eq!((&ca).read(&mut buf).unwrap(), 7);
        let e = (&ca).read(&mut buf).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof, "{e}");
        // For good.
        assert_eq!((&ca).read(&mut buf).unwrap_err().kind(), io::ErrorKind::UnexpectedEof);
    }
}
