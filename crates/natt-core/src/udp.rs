//! [`MappedUdpSocket`] and the UDP mapping driver: one receive loop on the socket drives every
//! technique's [`UdpExchange`], while techniques that map beside the socket run on threads of
//! their own ([`crate::fanout::scoped_beside`]), all under one deadline.

use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::context::MappingContext;
use crate::deadline;
use crate::endpoint::{MappedSocketAddr, Protocol};
use crate::error::{Error, TechniqueError};
use crate::fanout;
use crate::local::local_endpoints;
use crate::mapping::{Collector, PortMappings};
use crate::technique::{MappingTechnique, TechniqueMapping, UdpExchange};

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
    /// Binds a new socket to an ephemeral port on every IPv4 interface and maps it.
    pub fn new(mc: &MappingContext) -> Result<Self, Error> {
        Self::bind(SocketAddr::from(([0, 0, 0, 0], 0)), mc)
    }

    /// Binds a new socket at `addr` and maps it.
    pub fn bind(addr: SocketAddr, mc: &MappingContext) -> Result<Self, Error> {
        Self::map(UdpSocket::bind(addr)?, mc)
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
}

/// How one exchange ended: when, and with what.
pub type ExchangeResult = (Duration, Result<Vec<MappedSocketAddr>, TechniqueError>);

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

    // Techniques that map beside the socket run on threads of their own meanwhile.
    let beside = techniques
        .iter()
        .zip(&plans)
        .filter(|(_, plan)| matches!(plan, Plan::Beside))
        .map(|(t, _)| t);
    let (beside, on_socket) = fanout::scoped_beside(
        "natt-map-udp",
        start,
        beside,
        |t| t.map_udp(local, deadline),
        || {
            let mut refs: Vec<&mut dyn UdpExchange> =
                exchanges.iter_mut().map(|e| &mut **e as &mut dyn UdpExchange).collect();
            drive_since(socket, &mut refs, start, deadline)
        },
    );
    let mut on_socket: Vec<Option<ExchangeResult>> = on_socket?.into_iter().map(Some).collect();
    let mut beside = beside.into_iter().map(|finished| finished.into_timed("technique"));

    let mut collector = Collector::new(Protocol::Udp, local_endpoints(local));
    for (t, plan) in techniques.iter().zip(plans) {
        let (elapsed, result): (Duration, Result<TechniqueMapping, TechniqueError>) = match plan {
            Plan::Exchange(i) => {
                let (elapsed, r) = on_socket
                    .get_mut(i)
                    .and_then(Option::take)
                    .unwrap_or_else(|| (start.elapsed(), Err(TechniqueError::TimedOut("no result".into()))));
                (elapsed, r.map(TechniqueMapping::from))
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
/// exchanges of their own (such as NAT behaviour discovery).
pub fn drive(
    socket: &UdpSocket,
    exchanges: &mut [&mut dyn UdpExchange],
    deadline: Instant,
) -> Result<Vec<ExchangeResult>, Error> {
    drive_since(socket, exchanges, Instant::now(), deadline)
}

fn drive_since(
    socket: &UdpSocket,
    exchanges: &mut [&mut dyn UdpExchange],
    start: Instant,
    deadline: Instant,
) -> Result<Vec<ExchangeResult>, Error> {
    let mut done: Vec<Option<ExchangeResult>> = exchanges.iter().map(|_| None).collect();
    if !exchanges.is_empty() {
        let saved = SavedOptions::take(socket)?;
        let result = run_loop(socket, exchanges, &mut done, start, deadline);
        saved.restore(socket);
        result?;
    }
    Ok(done
        .into_iter()
        .map(|d| d.unwrap_or_else(|| (start.elapsed(), Err(TechniqueError::TimedOut("no result".into())))))
        .collect())
}

fn run_loop(
    socket: &UdpSocket,
    exchanges: &mut [&mut dyn UdpExchange],
    done: &mut [Option<ExchangeResult>],
    start: Instant,
    deadline: Instant,
) -> Result<(), Error> {
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
            } else {
                while let Some(t) = exchange.poll_transmit(now) {
                    if let Err(e) = socket.send_to(&t.payload, t.destination) {
                        log::debug!("send to {} failed: {e}", t.destination);
                    }
                }
            }
        }
        if done.iter().all(Option::is_some) {
            return Ok(());
        }
        let wake = exchanges
            .iter()
            .zip(done.iter())
            .filter(|(_, d)| d.is_none())
            .filter_map(|(e, _)| e.poll_timeout())
            .fold(deadline, Instant::min);
        match deadline::recv_from_until(socket, &mut buf, wake) {
            Ok(None) => {}
            Ok(Some((n, from))) => {
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
            Err(e) if is_transient(&e) => {}
            Err(e) => return Err(e.into()),
        }
    }
}

/// Receive errors that end one wait, not the mapping: timeouts, interrupted calls, and ICMP
/// errors of earlier sends reported on the socket.
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
