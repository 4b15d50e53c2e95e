//! [`MappedUdpSocket`] and the UDP mapping driver: one receive loop on the socket drives every
//! technique's [`UdpExchange`], while techniques that map beside the socket run on threads of
//! their own, all under one deadline.

use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use crate::context::MappingContext;
use crate::deadline;
use crate::endpoint::{MappedSocketAddr, Protocol};
use crate::error::{Error, TechniqueError};
use crate::local::local_endpoints;
use crate::mapping::{Collector, PortMappings};
use crate::technique::{MappingTechnique, TechniqueMapping, UdpExchange};

/// Largest datagram the driver reads while mapping; longer ones are truncated (no mapping
/// protocol answers with more).
const RECV_BUFFER: usize = 4096;

/// A bound UDP socket for which we know our external endpoints.
///
/// ```no_run
/// # fn main() -> Result<(), natt_core::Error> {
/// let mc = natt_core::MappingContext::empty();
/// let natt_core::MappedUdpSocket { socket, endpoints, port_mappings } =
///     natt_core::MappedUdpSocket::new(&mc)?;
/// for ep in &endpoints {
///     println!("reachable at {ep}");
/// }
/// // ... use `socket`; keep `port_mappings` alive as long as it is in use.
/// # drop((socket, port_mappings));
/// # Ok(())
/// # }
/// ```
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
    pub fn map_until(
        socket: UdpSocket,
        mc: &MappingContext,
        deadline: Instant,
    ) -> Result<Self, Error> {
        let (endpoints, port_mappings) = map_udp_socket(&socket, &mc.techniques(), deadline)?;
        Ok(MappedUdpSocket {
            socket,
            endpoints,
            port_mappings,
        })
    }
}

/// One technique's place in the driver.
enum Slot {
    /// Talks over the socket.
    Exchange {
        exchange: Box<dyn UdpExchange>,
        done: Option<(Duration, Result<Vec<MappedSocketAddr>, TechniqueError>)>,
    },
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
    let mut slots: Vec<Slot> = techniques
        .iter()
        .map(|t| match t.udp_exchange(local) {
            Ok(Some(exchange)) => Slot::Exchange {
                exchange,
                done: None,
            },
            Ok(None) => Slot::Beside,
            Err(e) => Slot::Failed(e),
        })
        .collect();

    let beside_results = thread::scope(|scope| -> Result<Vec<_>, Error> {
        let handles: Vec<_> = techniques
            .iter()
            .zip(&slots)
            .map(|(t, slot)| match slot {
                Slot::Beside => {
                    let t = Arc::clone(t);
                    Some(scope.spawn(move || {
                        let r = t.map_udp(local, deadline);
                        (start.elapsed(), r)
                    }))
                }
                _ => None,
            })
            .collect();
        drive_exchanges(socket, &mut slots, start, deadline)?;
        Ok(handles
            .into_iter()
            .map(|h| {
                h.map(|h| {
                    h.join().unwrap_or_else(|_| {
                        (
                            start.elapsed(),
                            Err(TechniqueError::Other("technique thread panicked".into())),
                        )
                    })
                })
            })
            .collect())
    })?;

    let mut collector = Collector::new(Protocol::Udp, local_endpoints(local));
    for ((t, slot), beside) in techniques.iter().zip(slots).zip(beside_results) {
        let (elapsed, result): (Duration, Result<TechniqueMapping, TechniqueError>) =
            match (slot, beside) {
                (Slot::Exchange { done, .. }, _) => {
                    let (elapsed, r) = done.unwrap_or_else(|| {
                        (
                            start.elapsed(),
                            Err(TechniqueError::TimedOut("exchange gave no result".into())),
                        )
                    });
                    (elapsed, r.map(TechniqueMapping::from))
                }
                (Slot::Failed(e), _) => (Duration::ZERO, Err(e)),
                (Slot::Beside, Some((elapsed, r))) => (elapsed, r),
                (Slot::Beside, None) => (
                    Duration::ZERO,
                    Err(TechniqueError::NotApplicable("not run".into())),
                ),
            };
        collector.add(t.name(), elapsed, result);
    }
    Ok(collector.finish())
}

/// Runs every exchange in `slots` over `socket` until all have a result or `deadline` passes.
fn drive_exchanges(
    socket: &UdpSocket,
    slots: &mut [Slot],
    start: Instant,
    deadline: Instant,
) -> Result<(), Error> {
    let pending = |slots: &[Slot]| {
        slots
            .iter()
            .any(|s| matches!(s, Slot::Exchange { done: None, .. }))
    };
    if !pending(slots) {
        return Ok(());
    }
    let saved = SavedOptions::take(socket)?;
    let result = run_loop(socket, slots, start, deadline, pending);
    saved.restore(socket);
    result
}

fn run_loop(
    socket: &UdpSocket,
    slots: &mut [Slot],
    start: Instant,
    deadline: Instant,
    pending: impl Fn(&[Slot]) -> bool,
) -> Result<(), Error> {
    let mut buf = vec![0u8; RECV_BUFFER];
    loop {
        let now = Instant::now();
        for slot in slots.iter_mut() {
            if let Slot::Exchange {
                exchange,
                done: done @ None,
            } = slot
            {
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
        }
        if !pending(slots) {
            return Ok(());
        }
        let wake = slots
            .iter()
            .filter_map(|s| match s {
                Slot::Exchange {
                    exchange,
                    done: None,
                } => exchange.poll_timeout(),
                _ => None,
            })
            .fold(deadline, Instant::min);
        socket.set_read_timeout(Some(deadline::wait_until(wake)))?;
        match socket.recv_from(&mut buf) {
            Ok((n, from)) => {
                let data = buf.get(..n).unwrap_or(&[]);
                let now = Instant::now();
                let claimed = slots.iter_mut().any(|s| match s {
                    Slot::Exchange {
                        exchange,
                        done: None,
                    } => exchange.handle_datagram(now, from, data),
                    _ => false,
                });
                if !claimed {
                    log::debug!("discarding {n} bytes from {from}: no technique claims them");
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
