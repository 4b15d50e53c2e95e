//! The server side's loops (the lists of servers a client asks are in
//! [`server_list`](crate::server_list)). Building blocks for servers that run on background threads until dropped: a [`Worker`]
//! thread with a stop flag, a UDP receive loop, and a TCP accept loop that bounds its clients
//! ([`TcpLimits`]: how many at once, how many from one source, and a deadline for a client's
//! whole exchange). The simple-protocol and STUN servers are made of these.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, Shutdown, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crate::deadline::MIN_WAIT;

/// How often a serving thread checks whether it should stop when nothing wakes it.
pub const POLL: Duration = Duration::from_millis(250);

/// A background thread that stops when dropped (or [`stop`](Worker::stop)ped).
#[derive(Debug)]
pub struct Worker {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    wake: Option<SocketAddr>,
    tcp: bool,
}

impl Worker {
    /// Runs `f` on a new thread named `name`; `f` must return soon after the flag it is given
    /// is set. Dropping the worker sets the flag, wakes the thread with an empty datagram (or a
    /// connection, when `tcp`) to `wake`, and joins it.
    pub fn spawn(
        name: &str,
        wake: Option<SocketAddr>,
        tcp: bool,
        f: impl FnOnce(Arc<AtomicBool>) + Send + 'static,
    ) -> io::Result<Self> {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let thread = thread::Builder::new().name(name.to_owned()).spawn(move || f(flag))?;
        Ok(Worker {
            stop,
            thread: Some(thread),
            wake,
            tcp,
        })
    }

    /// Stops the thread and waits for it.
    pub fn stop(&mut self) {
        self.signal();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }

    /// Tells the thread to stop and wakes it, without waiting for it: for servers with several
    /// threads on one socket, which signal all before joining any (a wake-up may reach a
    /// sibling thread, which then finds its own stop flag set too).
    pub fn signal(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(addr) = self.wake.take().map(reachable) {
            if self.tcp {
                let _ = TcpStream::connect_timeout(&addr, POLL);
            } else {
                let any: SocketAddr = if addr.is_ipv4() {
                    (Ipv4Addr::UNSPECIFIED, 0).into()
                } else {
                    (Ipv6Addr::UNSPECIFIED, 0).into()
                };
                if let Ok(s) = UdpSocket::bind(any) {
                    let _ = s.send_to(&[], addr);
                }
            }
        }
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The address to reach a socket bound at `bound` from this host.
pub fn reachable(bound: SocketAddr) -> SocketAddr {
    match bound {
        SocketAddr::V4(a) if a.ip().is_unspecified() => (Ipv4Addr::LOCALHOST, a.port()).into(),
        SocketAddr::V6(a) if a.ip().is_unspecified() => (Ipv6Addr::LOCALHOST, a.port()).into(),
        a => a,
    }
}

/// Receives datagrams of at most `max_len` bytes on `socket` and hands each to `handle`, until
/// `stop` is set. Longer datagrams are handed over truncated to `max_len + 1` bytes, so a
/// decoder can tell they were too long. On a dual-stack socket, IPv4 senders are handed over as
/// plain IPv4 ([`crate::family::canonical`]); answer them at
/// [`crate::family::for_socket`]`(local, from)`.
pub fn recv_loop(socket: &UdpSocket, stop: &AtomicBool, max_len: usize, mut handle: impl FnMut(SocketAddr, &[u8])) {
    if let Err(e) = socket.set_read_timeout(Some(POLL)) {
        log::warn!("cannot set a read timeout: {e}");
    }
    let mut buf = vec![0u8; max_len + 1];
    while !stop.load(Ordering::SeqCst) {
        match socket.recv_from(&mut buf) {
            Ok((n, from)) => handle(crate::family::canonical(from), buf.get(..n).unwrap_or(&[])),
            Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => {}
            Err(e) => log::debug!("receive failed: {e}"),
        }
    }
}

/// How long a TCP client may take for its whole exchange with a server of [`accept_loop`]:
/// from the moment it is accepted to the last byte of the reply. A client that dribbles its
/// request (one byte just before each read would time out) is cut off then too.
pub const TCP_DEADLINE: Duration = Duration::from_secs(5);
/// The most TCP clients served at once by default; further connections are closed at once.
pub const MAX_TCP_CLIENTS: usize = 64;
/// The most TCP connections served at once from one source (an IPv4 address, or an IPv6 /64
/// network, since one host commonly has a whole /64), so that one source cannot hold every
/// slot of [`MAX_TCP_CLIENTS`].
pub const MAX_TCP_CLIENTS_PER_SOURCE: usize = 8;

/// The bounds [`accept_loop`] puts on its clients.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TcpLimits {
    /// The most clients served at once.
    pub max_clients: usize,
    /// The most clients from one source (see [`MAX_TCP_CLIENTS_PER_SOURCE`]) served at once.
    pub max_per_source: usize,
    /// How long one client's whole exchange may take; its connection is shut down then.
    pub deadline: Duration,
}

impl Default for TcpLimits {
    /// [`MAX_TCP_CLIENTS`], [`MAX_TCP_CLIENTS_PER_SOURCE`] and [`TCP_DEADLINE`].
    fn default() -> Self {
        TcpLimits {
            max_clients: MAX_TCP_CLIENTS,
            max_per_source: MAX_TCP_CLIENTS_PER_SOURCE,
            deadline: TCP_DEADLINE,
        }
    }
}

/// The source a connection is counted against: an IPv4 address (also when IPv4-mapped), or
/// the /64 network of an IPv6 address.
pub fn tcp_source(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(a) => match a.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(Ipv6Addr::from(a.to_bits() & !u128::from(u64::MAX))),
        },
    }
}

/// Connections in use, in all and per source ([`tcp_source`]), each under a cap: the one
/// admission count of natt's TCP accept paths ([`accept_loop`]'s servers, the punch's
/// listener).
#[derive(Debug, Clone)]
pub struct SourceSlots {
    counts: Arc<Mutex<SlotCounts>>,
    max_total: usize,
    max_per_source: usize,
}

#[derive(Debug, Default)]
struct SlotCounts {
    total: usize,
    per_source: HashMap<IpAddr, usize>,
}

/// A slot of [`SourceSlots`]; dropping it frees it.
#[derive(Debug)]
pub struct Slot {
    counts: Arc<Mutex<SlotCounts>>,
    source: IpAddr,
}

impl SourceSlots {
    /// At most `max_total` slots in use, at most `max_per_source` of them by one source.
    pub fn new(max_total: usize, max_per_source: usize) -> Self {
        SourceSlots {
            counts: Arc::default(),
            max_total,
            max_per_source,
        }
    }

    /// A slot for a connection from `ip`, or `None` when a cap leaves none.
    pub fn take(&self, ip: IpAddr) -> Option<Slot> {
        let source = tcp_source(ip);
        let mut c = self.counts.lock().unwrap_or_else(PoisonError::into_inner);
        let from_source = c.per_source.get(&source).copied().unwrap_or(0);
        if c.total >= self.max_total || from_source >= self.max_per_source {
            return None;
        }
        c.total += 1;
        c.per_source.insert(source, from_source + 1);
        Some(Slot {
            counts: Arc::clone(&self.counts),
            source,
        })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut c = self.counts.lock().unwrap_or_else(PoisonError::into_inner);
        c.total = c.total.saturating_sub(1);
        if let Some(n) = c.per_source.get_mut(&self.source) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                c.per_source.remove(&self.source);
            }
        }
    }
}

/// The clients an [`accept_loop`] is serving.
#[derive(Debug, Default)]
struct Clients {
    /// Connections not yet shut down, by number: their deadline and a handle on the socket.
    open: HashMap<u64, (Instant, TcpStream)>,
    next: u64,
    /// The accept loop has ended: every connection left is shut down.
    done: bool,
}

/// [`Clients`], their slots, and the condition variable that wakes the thread enforcing the
/// deadlines.
#[derive(Debug)]
struct Served {
    clients: Mutex<Clients>,
    slots: SourceSlots,
    changed: Condvar,
}

/// One admitted client; dropping it (when its thread is done) frees its slot.
struct Admitted {
    served: Arc<Served>,
    id: u64,
    _slot: Slot,
}

impl Served {
    fn lock(&self) -> MutexGuard<'_, Clients> {
        self.clients.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn new(limits: &TcpLimits) -> Self {
        Served {
            clients: Mutex::default(),
            slots: SourceSlots::new(limits.max_clients, limits.max_per_source),
            changed: Condvar::new(),
        }
    }

    /// Counts `stream` in, or `None` when the limits leave no slot for it.
    fn admit(self: &Arc<Self>, stream: &TcpStream, limits: &TcpLimits) -> Option<Admitted> {
        let slot = self.slots.take(crate::family::peer_addr(stream).ok()?.ip())?;
        let handle = stream.try_clone().ok()?;
        let mut c = self.lock();
        let id = c.next;
        c.next = c.next.wrapping_add(1);
        c.open.insert(id, (Instant::now() + limits.deadline, handle));
        drop(c);
        self.changed.notify_all();
        Some(Admitted {
            served: Arc::clone(self),
            id,
            _slot: slot,
        })
    }

    /// Shuts down each connection past its deadline (all of them once the loop is done), until
    /// the loop is done.
    fn enforce_deadlines(&self) {
        let mut c = self.lock();
        loop {
            let now = Instant::now();
            let done = c.done;
            let expired: Vec<u64> = c
                .open
                .iter()
                .filter(|(_, (deadline, _))| done || *deadline <= now)
                .map(|(id, _)| *id)
                .collect();
            for id in expired {
                if let Some((_, stream)) = c.open.remove(&id) {
                    if !done {
                        log::debug!("TCP client {:?} past its deadline; closing", stream.peer_addr());
                    }
                    let _ = stream.shutdown(Shutdown::Both);
                }
            }
            if done {
                return;
            }
            let next = c.open.values().map(|(deadline, _)| *deadline).min();
            let wait = next.map_or(POLL, |d| d.saturating_duration_since(now).max(MIN_WAIT));
            c = match self.changed.wait_timeout(c, wait) {
                Ok((c, _)) => c,
                Err(e) => e.into_inner().0,
            };
        }
    }

    fn finish(&self) {
        self.lock().done = true;
        self.changed.notify_all();
    }
}

impl Drop for Admitted {
    fn drop(&mut self) {
        self.served.lock().open.remove(&self.id);
    }
}

/// Accepts connections on `listener` until `stop` is set, serving each on a thread of its own
/// with `handle`, within `limits`: a connection beyond [`TcpLimits::max_clients`] or
/// [`TcpLimits::max_per_source`] is closed at once, and each connection is shut down at its
/// [`TcpLimits::deadline`] however the client paces its bytes (its reads and writes also time
/// out then). Connections still open when the loop stops are shut down.
pub fn accept_loop(
    listener: &TcpListener,
    stop: &AtomicBool,
    limits: TcpLimits,
    handle: impl Fn(TcpStream) + Send + Sync + 'static,
) {
    let handle = Arc::new(handle);
    let served = Arc::new(Served::new(&limits));
    thread::scope(|scope| {
        let enforcer = Arc::clone(&served);
        if let Err(e) = thread::Builder::new()
            .name("natt-tcp-deadlines".into())
            .spawn_scoped(scope, move || enforcer.enforce_deadlines())
        {
            // The per-read timeouts below still bound each read.
            log::warn!("cannot enforce TCP deadlines: {e}");
        }
        accept_clients(listener, stop, &limits, &served, &handle);
        served.finish();
    });
}

fn accept_clients(
    listener: &TcpListener,
    stop: &AtomicBool,
    limits: &TcpLimits,
    served: &Arc<Served>,
    handle: &Arc<impl Fn(TcpStream) + Send + Sync + 'static>,
) {
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
        let timeouts = stream
            .set_read_timeout(Some(limits.deadline))
            .and_then(|()| stream.set_write_timeout(Some(limits.deadline)));
        if let Err(e) = timeouts {
            log::debug!("cannot set timeouts on {:?}: {e}", stream.peer_addr());
            continue;
        }
        let Some(admitted) = served.admit(&stream, limits) else {
            log::debug!("too many clients; closing {:?}", stream.peer_addr());
            continue;
        };
        let handle_c = Arc::clone(handle);
        let spawned = thread::Builder::new().name("natt-client".into()).spawn(move || {
            handle_c(stream);
            drop(admitted);
        });
        if let Err(e) = spawned {
            log::warn!("cannot serve a client: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]

    use super::*;
    use std::io::{Read, Write};

    /// A connection to `to` from source address `from` (any 127.0.0.0/8 address works on
    /// Linux loopback).
    fn connect_from(from: Ipv4Addr, to: SocketAddr) -> TcpStream {
        let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        s.bind(&SocketAddr::from((from, 0)).into()).unwrap();
        s.connect_timeout(&to.into(), Duration::from_secs(2)).unwrap();
        s.into()
    }

    /// True when the server closed `s` within `wait` (false when it is still open then).
    fn closed_within(s: &mut TcpStream, wait: Duration) -> bool {
        s.set_read_timeout(Some(wait)).unwrap();
        match s.read(&mut [0u8; 16]) {
            Ok(0) => true,
            Ok(_) => false,
            Err(e) => !matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut),
        }
    }

    /// A server that reads until the client stops sending, then answers "ok".
    fn server(limits: TcpLimits) -> (Worker, SocketAddr) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let worker = Worker::spawn("test-accept", Some(addr), true, move |stop| {
            accept_loop(&listener, &stop, limits, |mut s| {
                let mut buf = [0u8; 1];
                while matches!(s.read(&mut buf), Ok(1)) {}
                let _ = s.write_all(b"ok");
            })
        })
        .unwrap();
        (worker, addr)
    }

    #[test]
    fn one_source_cannot_take_every_slot_and_dribblers_are_cut_at_the_deadline() {
        let deadline = Duration::from_millis(400);
        let (_worker, addr) = server(TcpLimits {
            max_clients: 4,
            max_per_source: 2,
            deadline,
        });
        let t0 = Instant::now();
        let mut held: Vec<_> = (0..2).map(|_| connect_from(Ipv4Addr::LOCALHOST, addr)).collect();
        let mut third = connect_from(Ipv4Addr::LOCALHOST, addr);
        assert!(
            closed_within(&mut third, Duration::from_millis(200)),
            "a third from one source"
        );
        let mut other = connect_from(Ipv4Addr::new(127, 0, 0, 2), addr);
        other.shutdown(Shutdown::Write).unwrap();
        let mut answer = Vec::new();
        other.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        other.read_to_end(&mut answer).unwrap();
        assert_eq!(answer, b"ok");
        // The two held ones dribble a byte every 50 ms, each read well within any timeout,
        // and are cut off at the deadline all the same.
        let mut cut = Vec::new();
        while !held.is_empty() && t0.elapsed() < Duration::from_secs(3) {
            held.retain_mut(|s| {
                let gone = s.write_all(b"x").is_err() || closed_within(s, Duration::from_millis(25));
                if gone {
                    cut.push(t0.elapsed());
                }
                !gone
            });
        }
        assert!(held.is_empty(), "dribblers still served after {:?}", t0.elapsed());
        for t in cut {
            assert!(
                t >= deadline - Duration::from_millis(50) && t < deadline * 3,
                "cut at {t:?}"
            );
        }
        // Their slots are free again.
        let mut again = connect_from(Ipv4Addr::LOCALHOST, addr);
        again.shutdown(Shutdown::Write).unwrap();
        let mut answer = Vec::new();
        again.read_to_end(&mut answer).unwrap();
        assert_eq!(answer, b"ok");
    }

    #[test]
    fn the_global_cap_still_holds() {
        let (_worker, addr) = server(TcpLimits {
            max_clients: 3,
            max_per_source: 2,
            deadline: Duration::from_secs(5),
        });
        let _held: Vec<_> = (1..=3)
            .map(|i| connect_from(Ipv4Addr::new(127, 0, 0, i), addr))
            .collect();
        thread::sleep(Duration::from_millis(100));
        let mut fourth = connect_from(Ipv4Addr::new(127, 0, 0, 4), addr);
        assert!(closed_within(&mut fourth, Duration::from_millis(500)));
    }

    #[test]
    fn stopping_the_loop_closes_its_clients() {
        let (mut worker, addr) = server(TcpLimits::default());
        let mut held = connect_from(Ipv4Addr::LOCALHOST, addr);
        thread::sleep(Duration::from_millis(100));
        worker.stop();
        assert!(closed_within(&mut held, Duration::from_millis(500)));
    }

    #[test]
    fn sources_are_ipv4_addresses_and_ipv6_networks() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert_eq!(tcp_source(ip("198.51.100.7")), ip("198.51.100.7"));
        assert_eq!(tcp_source(ip("::ffff:198.51.100.7")), ip("198.51.100.7"));
        assert_eq!(tcp_source(ip("2001:db8:1:2:aaaa::1")), ip("2001:db8:1:2::"));
        assert_eq!(
            tcp_source(ip("2001:db8:1:2::1")),
            tcp_source(ip("2001:db8:1:2:ffff::9"))
        );
        assert_ne!(tcp_source(ip("2001:db8:1:2::1")), tcp_source(ip("2001:db8:1:3::1")));
    }

    #[test]
    fn slots_are_capped_in_all_and_per_source_and_freed_on_drop() {
        let slots = SourceSlots::new(3, 2);
        let (a, b) = ("192.0.2.1".parse().unwrap(), "192.0.2.2".parse().unwrap());
        let a1 = slots.take(a).unwrap();
        let _a2 = slots.take(a).unwrap();
        assert!(slots.take(a).is_none(), "per source");
        let _b1 = slots.take(b).unwrap();
        assert!(slots.take(b).is_none(), "in all");
        drop(a1);
        assert!(slots.take(a).is_some());
        // An IPv6 /64 is one source.
        let v6 = SourceSlots::new(9, 1);
        let _x = v6.take("2001:db8::1".parse().unwrap()).unwrap();
        assert!(v6.take("2001:db8::2".parse().unwrap()).is_none());
    }
}
