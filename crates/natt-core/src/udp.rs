//! [`MappedUdpSocket`] and the UDP mapping driver: one receive loop on the socket drives every
//! technique's [`UdpExchange`], while techniques that map beside the socket run on threads of
//! their own ([`crate::fanout::spawn`]), all under one deadline. Once a technique found an
//! external endpoint, those beside the socket get [`GATEWAY_GRACE`](crate::mapping::GATEWAY_GRACE)
//! to end before the mapping returns without them (they go on in the background).

use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::context::MappingContext;
use crate::deadline;
use crate::endpoint::{MappedSocketAddr, Protocol};
use crate::error::{Error, TechniqueError};
use crate::lease::Stop;
use crate::local::local_endpoints;
use crate::mapping::{Collector, Held, PortMappings, collect_beside, spawn_beside};
use crate::technique::{MappingResult, MappingTechnique, TechniqueMapping, UdpExchange};

/// Largest datagram the driver reads while mapping; longer ones are truncated (no mapping
/// protocol answers with more).
const RECV_BUFFER: usize = 4096;

/// A bound UDP socket for which we know our external endpoints.
///
#[cfg_attr(not(doctest), doc = include_str!("../doc/mapped_udp_socket.md"))]
#[derive(Debug)]
pub struct MappedUdpSocket {
    /// The socket.
    pub socket: UdpSocket,
    /// Every known endpoint of the socket, local addresses first.
    pub endpoints: Vec<MappedSocketAddr>,
    /// Port mappings made on routers for this socket (renewed while kept, deleted on drop),
    /// and how each technique fared.
    pub port_mappings: PortMappings,
}

impl MappedUdpSocket {
    /// Binds a new socket to an ephemeral port on every interface and maps it: one dual-stack
    /// socket at `[::]` where the host has a global IPv6 address, else one at `0.0.0.0`
    /// ([`crate::family`]).
    pub fn new(mc: &MappingContext) -> Result<Self, Error> {
        Self::bind(crate::family::any_address(), mc)
    }

    /// Binds a new socket at `addr` (dual-stack at `[::]`) and maps it.
    pub fn bind(addr: SocketAddr, mc: &MappingContext) -> Result<Self, Error> {
        Self::map(crate::family::bind_udp(addr)?, mc)
    }

    /// Maps an existing socket with every technique of `mc`, taking at most
    /// [`MappingContext::timeout`].
    pub fn map(socket: UdpSocket, mc: &MappingContext) -> Result<Self, Error> {
        let deadline = Instant::now() + mc.timeout();
        Self::map_until(socket, mc, deadline)
    }

    /// Maps an existing socket, returning by `deadline`. Datagrams that arrive meanwhile and
    /// answer no technique are discarded.
    pub fn map_until(socket: UdpSocket, mc: &MappingContext, deadline: Instant) -> Result<Self, Error> {
        let (endpoints, port_mappings) = map_udp_socket(&socket, &mc.techniques(), deadline)?;
        Ok(MappedUdpSocket {
            socket,
            endpoints,
            port_mappings,
        })
    }

    /// Adds to [`endpoints`](Self::endpoints) what port-mapping techniques that went on in the
    /// background after the mapping returned have found since
    /// ([`PortMappings::take_late`]); returns how many endpoints that added. Call it before
    /// [`gen_rendezvous_info`](crate::gen_rendezvous_info) when time has passed since mapping.
    pub fn refresh(&mut self) -> usize {
        self.port_mappings.merge_late_into(&mut self.endpoints)
    }
}

/// How one exchange ended: when, and with what.
pub type ExchangeResult<R = MappingResult> = (Duration, R);

/// How a technique maps a UDP socket.
enum Plan {
    /// Talks over the socket: index into the exchanges.
    Exchange(usize),
    /// Runs on its own thread.
    Beside,
    /// Failed to start.
    Failed(TechniqueError),
}

/// Maps `socket` with `techniques`: the driver behind [`MappedUdpSocket`].
pub fn map_udp_socket(
    socket: &UdpSocket,
    techniques: &[Arc<dyn MappingTechnique>],
    deadline: Instant,
) -> Result<(Vec<MappedSocketAddr>, PortMappings), Error> {
    let local = socket.local_addr()?;
    let start = Instant::now();
    let mut exchanges: Vec<Box<dyn UdpExchange>> = Vec::new();
    let plans: Vec<Plan> = techniques
        .iter()
        .map(|t| match t.udp_exchange(local) {
            Ok(Some(exchange)) => {
                exchanges.push(exchange);
                Plan::Exchange(exchanges.len() - 1)
            }
            Ok(None) => Plan::Beside,
            Err(e) => Plan::Failed(e),
        })
        .collect();

    // Techniques that map beside the socket run on threads of their own meanwhile, detached:
    // those still running after the grace (see `mapping::GATEWAY_GRACE`) go on in the
    // background and report to `held`.
    let beside: Vec<Arc<dyn MappingTechnique>> = techniques
        .iter()
        .zip(&plans)
        .filter(|(_, plan)| matches!(plan, Plan::Beside))
        .map(|(t, _)| Arc::clone(t))
        .collect();
    let waited_for: Vec<bool> = beside.iter().map(|t| t.waited_for()).collect();
    let held = Arc::new(Held::default());
    let running = spawn_beside("natt-map-udp", Protocol::Udp, start, beside, &held, move |t| {
        t.map_udp(local, deadline)
    });
    let on_socket = {
        let mut refs: Vec<&mut dyn UdpExchange> =
            exchanges.iter_mut().map(|e| &mut **e as &mut dyn UdpExchange).collect();
        drive_since(socket, &mut refs, start, deadline)
    };
    let on_socket = match on_socket {
        Ok(r) => r,
        Err(e) => {
            // Nobody will hold what the techniques beside the socket map: delete it.
            held.abandon();
            drop(running);
            return Err(e);
        }
    };
    let locals = local_endpoints(local);
    let local_addrs: Vec<SocketAddr> = locals.iter().map(|e| e.addr).collect();
    // When the first external endpoint was known on the socket: the grace of the techniques
    // beside it counts from then.
    let external_at = on_socket
        .iter()
        .filter(|(_, r)| {
            r.as_ref()
                .is_ok_and(|eps| eps.iter().any(|e| !local_addrs.contains(&e.addr)))
        })
        .map(|(elapsed, _)| *elapsed)
        .min();
    let beside = collect_beside(running, &waited_for, start, deadline, external_at, &local_addrs, &held);
    let mut on_socket: Vec<Option<ExchangeResult>> = on_socket.into_iter().map(Some).collect();
    let mut beside = beside.into_iter();

    let mut collector = Collector::new(Protocol::Udp, locals, held);
    for (t, plan) in techniques.iter().zip(plans) {
        let (elapsed, result): (Duration, Result<TechniqueMapping, TechniqueError>) = match plan {
            Plan::Exchange(i) => {
                let (elapsed, r) = on_socket
                    .get_mut(i)
                    .and_then(Option::take)
                    .unwrap_or_else(|| (start.elapsed(), Err(TechniqueError::TimedOut("no result".into()))));
                let lease = match (&r, exchanges.get_mut(i)) {
                    (Ok(_), Some(exchange)) => exchange.lease(socket),
                    _ => None,
                };
                (elapsed, r.map(|endpoints| TechniqueMapping { endpoints, lease }))
            }
            Plan::Failed(e) => (Duration::ZERO, Err(e)),
            Plan::Beside => beside
                .next()
                .unwrap_or_else(|| (Duration::ZERO, Err(TechniqueError::NotApplicable("not run".into())))),
        };
        collector.add(t.name(), elapsed, result);
    }
    Ok(collector.finish())
}

/// Runs `exchanges` over `socket` until each has a result or `deadline` passes, and returns
/// their results in order, with the time each took. Datagrams no exchange claims are
/// discarded. The socket's blocking mode and read timeout are restored afterwards.
///
/// This is the receive loop behind [`MappedUdpSocket`], for techniques and tools that drive
/// exchanges of their own (such as NAT behaviour discovery, or PCP's transactions on a socket
/// connected to the gateway). Socket errors that end a wait or report an earlier send's ICMP
/// error are carried on after, except that a refusal on a connected socket is the peer's and
/// ends the loop with it (see [`drive_until_stopped`]).
pub fn drive<R>(
    socket: &UdpSocket,
    exchanges: &mut [&mut dyn UdpExchange<R>],
    deadline: Instant,
) -> Result<Vec<ExchangeResult<R>>, Error> {
    drive_since(socket, exchanges, Instant::now(), deadline)
}

/// How [`drive_until_stopped`] ended.
#[derive(Debug)]
pub enum Driven<R> {
    /// Every exchange ended: its result (what [`UdpExchange::finish`] said, for those still
    /// running at the deadline), in order, with the time each took.
    Done(Vec<ExchangeResult<R>>),
    /// The stop signal fired first (a lease was released during a renewal); what the
    /// exchanges had is dropped.
    Stopped,
}

/// How often a wait of [`drive_until_stopped`] checks whether it was told to stop.
pub const STOP_POLL: Duration = Duration::from_millis(50);

/// [`drive`], which also ends, with [`Driven::Stopped`], when `stop` fires (checked before
/// each round of sends, and at least every [`STOP_POLL`] while waiting).
///
/// Socket errors: a wait that ends (`WouldBlock`, `TimedOut`, `Interrupted`) and the ICMP
/// errors of earlier sends reported on the socket (`ConnectionRefused`, `ConnectionReset`,
/// `HostUnreachable`, `NetworkUnreachable`) are carried on after; a failed send is logged.
/// The one exception: on a connected socket, `ConnectionRefused` (on receiving or sending) can
/// only be the peer's refusal, "nothing listens on that port", and ends the loop as
/// [`Error::Io`] with that kind. Any other receive error ends the loop with it.
pub fn drive_until_stopped<R>(
    socket: &UdpSocket,
    exchanges: &mut [&mut dyn UdpExchange<R>],
    deadline: Instant,
    stop: Option<&Stop>,
) -> Result<Driven<R>, Error> {
    Ok(match run(socket, exchanges, Instant::now(), deadline, stop)? {
        Some(results) => Driven::Done(results),
        None => Driven::Stopped,
    })
}

fn drive_since<R>(
    socket: &UdpSocket,
    exchanges: &mut [&mut dyn UdpExchange<R>],
    start: Instant,
    deadline: Instant,
) -> Result<Vec<ExchangeResult<R>>, Error> {
    // Without a stop signal the loop is never stopped.
    Ok(run(socket, exchanges, start, deadline, None)?.unwrap_or_default())
}

/// The receive loop with its socket options saved and restored: every exchange's result, or
/// `None` when `stop` fired first.
fn run<R>(
    socket: &UdpSocket,
    exchanges: &mut [&mut dyn UdpExchange<R>],
    start: Instant,
    deadline: Instant,
    stop: Option<&Stop>,
) -> Result<Option<Vec<ExchangeResult<R>>>, Error> {
    let mut done: Vec<Option<ExchangeResult<R>>> = exchanges.iter().map(|_| None).collect();
    if !exchanges.is_empty() {
        let saved = SavedOptions::take(socket)?;
        let result = run_loop(socket, exchanges, &mut done, start, deadline, stop);
        saved.restore(socket);
        if result? == Ended::Stopped {
            return Ok(None);
        }
    }
    Ok(Some(
        done.into_iter()
            .zip(exchanges.iter_mut())
            .map(|(d, e)| d.unwrap_or_else(|| (start.elapsed(), e.finish())))
            .collect(),
    ))
}

/// Why [`run_loop`] returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ended {
    /// Every exchange has its result.
    Done,
    /// The stop signal fired.
    Stopped,
}

fn run_loop<R>(
    socket: &UdpSocket,
    exchanges: &mut [&mut dyn UdpExchange<R>],
    done: &mut [Option<ExchangeResult<R>>],
    start: Instant,
    deadline: Instant,
    stop: Option<&Stop>,
) -> Result<Ended, Error> {
    // A connected socket (PCP's, to its gateway) sends with `send` (some systems refuse
    // `send_to` on it) and hears its peer's refusals.
    let peer = socket.peer_addr().ok().map(crate::family::canonical);
    // A dual-stack socket sends to IPv4 addresses in their IPv4-mapped form, and hears them so.
    let local = socket.local_addr()?;
    let mut buf = vec![0u8; RECV_BUFFER];
    loop {
        let now = Instant::now();
        for (exchange, done) in exchanges.iter_mut().zip(done.iter_mut()) {
            if done.is_some() {
                continue;
            }
            if let Some(r) = exchange.poll_result(now) {
                *done = Some((start.elapsed(), r));
            } else if now >= deadline {
                *done = Some((start.elapsed(), exchange.finish()));
            } else if stop.is_some_and(Stop::is_stopped) {
                return Ok(Ended::Stopped);
            } else {
                while let Some(t) = exchange.poll_transmit(now) {
                    let sent = match peer {
                        Some(p) if p == t.destination => socket.send(&t.payload),
                        _ => socket.send_to(&t.payload, crate::family::for_socket(local, t.destination)),
                    };
                    match sent {
                        Ok(n) => log::trace!("sent {n} bytes to {}", t.destination),
                        Err(e) if is_refusal(&e, peer) => return Err(e.into()),
                        Err(e) => log::debug!("send to {} failed: {e}", t.destination),
                    }
                }
            }
        }
        if done.iter().all(Option::is_some) {
            return Ok(Ended::Done);
        }
        let mut wake = exchanges
            .iter()
            .zip(done.iter())
            .filter(|(_, d)| d.is_none())
            .filter_map(|(e, _)| e.poll_timeout())
            .fold(deadline, Instant::min);
        if stop.is_some() {
            wake = wake.min(now.checked_add(STOP_POLL).unwrap_or(now));
        }
        match deadline::recv_from_until(socket, &mut buf, wake) {
            Ok(None) => {}
            Ok(Some((n, from))) => {
                let from = crate::family::canonical(from);
                let data = buf.get(..n).unwrap_or(&[]);
                let now = Instant::now();
                let claimed = exchanges
                    .iter_mut()
                    .zip(done.iter())
                    .filter(|(_, d)| d.is_none())
                    .any(|(e, _)| e.handle_datagram(now, from, data));
                if !claimed {
                    log::debug!("discarding {n} bytes from {from}: no exchange claims them");
                }
            }
            Err(e) if is_refusal(&e, peer) => return Err(e.into()),
            Err(e) if is_transient(&e) => {}
            Err(e) => return Err(e.into()),
        }
    }
}

/// On a connected socket, the peer refused: an ICMP port unreachable answered a send to it
/// (PCP learns "no PCP server" so). On a socket that is not connected the kernel cannot say
/// which send drew it, so it is one of [`is_transient`]'s errors.
fn is_refusal(e: &io::Error, peer: Option<SocketAddr>) -> bool {
    peer.is_some() && e.kind() == io::ErrorKind::ConnectionRefused
}

/// Receive errors that end one wait, not the loop: timeouts, interrupted calls, and ICMP
/// errors of earlier sends reported on the socket (but see [`is_refusal`]).
fn is_transient(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock
            | io::ErrorKind::TimedOut
            | io::ErrorKind::Interrupted
            | io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::HostUnreachable
            | io::ErrorKind::NetworkUnreachable
    )
}

/// The socket options the driver changes, to put back afterwards.
struct SavedOptions {
    read_timeout: Option<Duration>,
    nonblocking: bool,
}

impl SavedOptions {
    fn take(socket: &UdpSocket) -> io::Result<Self> {
        let read_timeout = socket.read_timeout()?;
        #[cfg(unix)]
        let nonblocking = socket2::SockRef::from(socket).nonblocking()?;
        #[cfg(not(unix))]
        let nonblocking = false;
        socket.set_nonblocking(false)?;
        Ok(SavedOptions {
            read_timeout,
            nonblocking,
        })
    }

    fn restore(self, socket: &UdpSocket) {
        if let Err(e) = socket
            .set_read_timeout(self.read_timeout)
            .and_then(|()| socket.set_nonblocking(self.nonblocking))
        {
            log::warn!("could not restore socket options: {e}");
        }
    }
}
