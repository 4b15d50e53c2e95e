//! Building blocks for servers that run on background threads until dropped: a [`Worker`]
//! thread with a stop flag, a UDP receive loop and a TCP accept loop with a cap on clients.
//! The simple-protocol and STUN servers are made of these.

use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread::{self, JoinHandle};
use std::time::Duration;

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
/// decoder can tell they were too long.
pub fn recv_loop(socket: &UdpSocket, stop: &AtomicBool, max_len: usize, mut handle: impl FnMut(SocketAddr, &[u8])) {
    if let Err(e) = socket.set_read_timeout(Some(POLL)) {
        log::warn!("cannot set a read timeout: {e}");
    }
    let mut buf = vec![0u8; max_len + 1];
    while !stop.load(Ordering::SeqCst) {
        match socket.recv_from(&mut buf) {
            Ok((n, from)) => handle(from, buf.get(..n).unwrap_or(&[])),
            Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => {}
            Err(e) => log::debug!("receive failed: {e}"),
        }
    }
}

/// Accepts connections on `listener` until `stop` is set, serving each on a thread of its own
/// with `handle`; at most `max_clients` at once (further connections are closed at once).
pub fn accept_loop(
    listener: &TcpListener,
    stop: &AtomicBool,
    max_clients: usize,
    handle: impl Fn(TcpStream) + Send + Sync + 'static,
) {
    let handle = Arc::new(handle);
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
        if active.load(Ordering::SeqCst) >= max_clients {
            log::debug!("too many clients; closing {:?}", stream.peer_addr());
            continue;
        }
        active.fetch_add(1, Ordering::SeqCst);
        let (active_c, handle_c) = (Arc::clone(&active), Arc::clone(&handle));
        let spawned = thread::Builder::new().name("natt-client".into()).spawn(move || {
            handle_c(stream);
            active_c.fetch_sub(1, Ordering::SeqCst);
        });
        if let Err(e) = spawned {
            log::warn!("cannot serve a client: {e}");
            active.fetch_sub(1, Ordering::SeqCst);
        }
    }
}
