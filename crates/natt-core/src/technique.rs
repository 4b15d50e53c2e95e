//! The [`MappingTechnique`] trait: how a way of finding external endpoints plugs into natt.
//!
//! A technique maps a socket in one of two ways:
//!
//! - **On the socket itself** (simple hole-punch servers, STUN): the technique must send from
//!   the mapped UDP socket, because the NAT mapping it observes is that socket's. It returns a
//!   [`UdpExchange`], a state machine with no socket of its own: the driver sends what it asks,
//!   hands it the datagrams that answer it, and wakes it when its timer fires. All exchanges of
//!   all techniques share one receive loop on the one socket, and each datagram goes to the
//!   exchange that claims it, so techniques never steal each other's replies.
//! - **Beside the socket** (UPnP, PCP): the technique talks to a gateway on sockets of its own
//!   and returns a [`TechniqueMapping`], possibly holding a [`Lease`] that
//!   keeps a port mapping alive. The driver runs such techniques on their own threads. A
//!   datagram protocol beside the socket still writes its exchanges as [`UdpExchange`]s, with
//!   results of its own type, and runs them with the same receive loop on its own socket
//!   ([`crate::udp::drive_until_stopped`]), as PCP does.
//!
//! Every technique of a context runs at the same time under one deadline, so mapping takes as
//! long as the slowest technique, not the sum.

use std::net::SocketAddr;
use std::time::Instant;

use crate::context::HolePunchServerAddr;
use crate::endpoint::MappedSocketAddr;
use crate::error::TechniqueError;
use crate::mapping::Lease;

/// A datagram an exchange wants sent from the mapped socket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transmit {
    /// Where to send it.
    pub destination: SocketAddr,
    /// What to send.
    pub payload: Vec<u8>,
}

/// What a mapping technique's [`UdpExchange`] ends with: the endpoints it found, or why there
/// are none.
pub type MappingResult = Result<Vec<MappedSocketAddr>, TechniqueError>;

/// A conversation over a UDP socket, written without sockets: fed with datagrams and time, it
/// says what to send, when to wake, and, once done, what came of it (`R`). It reads no clock:
/// every call that needs the time is given `now`.
///
/// The driver ([`crate::udp::drive`], the one receive loop of every technique) calls, in a
/// loop until [`UdpExchange::poll_result`] returns `Some` or the deadline passes:
/// [`poll_transmit`](UdpExchange::poll_transmit) until it returns `None`, then waits for a
/// datagram or [`poll_timeout`](UdpExchange::poll_timeout), offering each datagram to
/// [`handle_datagram`](UdpExchange::handle_datagram). At the deadline it calls
/// [`finish`](UdpExchange::finish) once.
///
/// A mapping technique's exchange (over the mapped socket) ends with the endpoints it found,
/// [`MappingResult`], the default `R`. A protocol that talks beside the socket, on a socket of
/// its own, ends with a result of its own type and is run by the same driver (PCP's
/// transactions end with the gateway's grant).
pub trait UdpExchange<R = MappingResult>: Send {
    /// The next datagram due at `now`, if any.
    fn poll_transmit(&mut self, now: Instant) -> Option<Transmit>;

    /// When the exchange next needs [`poll_transmit`](UdpExchange::poll_transmit) (a
    /// retransmission), or `None` if it only waits for datagrams.
    fn poll_timeout(&self) -> Option<Instant>;

    /// Offers a received datagram. Returns `true` when it answers one of this exchange's
    /// transactions (it is then consumed), `false` to let another exchange have it.
    fn handle_datagram(&mut self, now: Instant, from: SocketAddr, data: &[u8]) -> bool;

    /// The result, once the exchange has finished at `now` (acting first on the time `now`,
    /// as a timer that fired may end it).
    fn poll_result(&mut self, now: Instant) -> Option<R>;

    /// The deadline passed before [`poll_result`](UdpExchange::poll_result) gave a result: what
    /// was found so far, or why there is nothing.
    fn finish(&mut self) -> R;

    /// After a successful result: what this exchange leaves held on the mapped socket (a TURN
    /// allocation, refreshed from the socket while held), made with the socket. The mapping
    /// driver asks once and keeps it in the socket's [`PortMappings`](crate::PortMappings).
    /// The default: nothing.
    fn lease(&mut self, socket: &std::net::UdpSocket) -> Option<Box<dyn Lease>> {
        let _ = socket;
        None
    }
}

/// What a technique mapping beside the socket found.
#[derive(Default)]
pub struct TechniqueMapping {
    /// The endpoints found.
    pub endpoints: Vec<MappedSocketAddr>,
    /// A port mapping to keep alive while the socket lives, deleted when dropped.
    pub lease: Option<Box<dyn Lease>>,
}

impl std::fmt::Debug for TechniqueMapping {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TechniqueMapping")
            .field("endpoints", &self.endpoints)
            .field("lease", &self.lease.as_ref().map(|l| l.describe()))
            .finish()
    }
}

impl From<Vec<MappedSocketAddr>> for TechniqueMapping {
    fn from(endpoints: Vec<MappedSocketAddr>) -> Self {
        TechniqueMapping { endpoints, lease: None }
    }
}

/// A way of learning or creating the external endpoints of a socket.
///
/// Every method has a default that says "not applicable", so a technique implements only what
/// it does. Implementations keep their servers and caches inside (with interior mutability:
/// the context shares techniques between threads).
///
/// A complete third-party technique that maps every socket to a fixed address:
///
#[cfg_attr(not(doctest), doc = include_str!("../doc/mapping_technique.md"))]
pub trait MappingTechnique: Send + Sync {
    /// The technique's name, as shown in [`MappedSocketAddr::technique`].
    fn name(&self) -> &str;

    /// Offers a server address; returns `true` if this technique takes it.
    fn add_server(&self, server: &HolePunchServerAddr) -> bool {
        let _ = server;
        false
    }

    /// Starts mapping a UDP socket bound at `local` by talking over the socket itself.
    /// `Ok(None)` means this technique maps beside the socket ([`map_udp`](Self::map_udp)).
    fn udp_exchange(&self, local: SocketAddr) -> Result<Option<Box<dyn UdpExchange>>, TechniqueError> {
        let _ = local;
        Ok(None)
    }

    /// Maps a UDP socket bound at `local` without using the socket, returning by `deadline`.
    fn map_udp(&self, local: SocketAddr, deadline: Instant) -> Result<TechniqueMapping, TechniqueError> {
        let _ = (local, deadline);
        Err(TechniqueError::NotApplicable(format!(
            "{} does not map UDP",
            self.name()
        )))
    }

    /// Whether mapping waits for this technique (run beside the socket) until it ends, by the
    /// deadline, even once another technique found an external endpoint. By default it does
    /// not: a port-mapping technique (UPnP, PCP) still running then gets
    /// [`GATEWAY_GRACE`](crate::mapping::GATEWAY_GRACE) and goes on in the background, so that
    /// a gateway that never answers does not hold every mapping. A relay (TURN) says `true`:
    /// its address is what a connection falls back to, so it must be in the token.
    fn waited_for(&self) -> bool {
        false
    }

    /// Maps a TCP socket bound (reusably) at `local`, returning by `deadline`. A technique that
    /// must connect from the mapped port uses [`crate::reuse::tcp_connect_from`].
    fn map_tcp(&self, local: SocketAddr, deadline: Instant) -> Result<TechniqueMapping, TechniqueError> {
        let _ = (local, deadline);
        Err(TechniqueError::NotApplicable(format!(
            "{} does not map TCP",
            self.name()
        )))
    }
}
