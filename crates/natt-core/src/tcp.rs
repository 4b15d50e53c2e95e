//! [`MappedTcpSocket`]: a reusable TCP socket and its endpoints. Every technique maps the
//! socket's local port at once, each on its own thread ([`crate::fanout::spawn`]), under one
//! deadline; once one found an external endpoint, the others get
//! [`GATEWAY_GRACE`](crate::mapping::GATEWAY_GRACE) to end before the mapping returns without
//! them (they go on in the background).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use socket2::Socket;

use crate::context::MappingContext;
use crate::endpoint::{MappedSocketAddr, Protocol};
use crate::error::Error;
use crate::local::local_endpoints;
use crate::mapping::{Collector, Held, PortMappings, collect_beside, spawn_beside};
use crate::reuse::{reusable_tcp_socket, set_reuse};
use crate::technique::MappingTechnique;

/// A TCP socket for which we know our external endpoints.
///
/// The socket is bound, neither listening nor connected, with `SO_REUSEADDR` (and
/// `SO_REUSEPORT` on unix) set, so it can listen and connect from the same port at once, as
/// TCP hole punching does.
///
#[cfg_attr(not(doctest), doc = include_str!("../doc/mapped_tcp_socket.md"))]
#[derive(Debug)]
pub struct MappedTcpSocket {
    /// A bound, reusable TCP socket, neither listening nor connected.
    pub socket: Socket,
    /// Every known endpoint of the socket, local addresses first.
    pub endpoints: Vec<MappedSocketAddr>,
    /// Port mappings made on routers for this socket (renewed while kept, deleted on drop),
    /// and how each technique fared.
    pub port_mappings: PortMappings,
}

impl MappedTcpSocket {
    /// A new reusable socket on an ephemeral port of every interface, mapped: dual-stack at
    /// `[::]` where the host has a global IPv6 address, else at `0.0.0.0`
    /// ([`crate::family`]).
    pub fn new(mc: &MappingContext) -> Result<Self, Error> {
        Self::bind(crate::family::any_address(), mc)
    }

    /// A new reusable socket bound at `addr`, mapped.
    pub fn bind(addr: SocketAddr, mc: &MappingContext) -> Result<Self, Error> {
        let socket = reusable_tcp_socket(&addr)?;
        socket.bind(&addr.into())?;
        Self::map(socket, mc)
    }

    /// Maps a TCP socket, taking at most [`MappingContext::timeout`]. An unbound socket gets
    /// the reuse options and is bound to an ephemeral port; a bound one must already have them.
    pub fn map(socket: Socket, mc: &MappingContext) -> Result<Self, Error> {
        let deadline = Instant::now() + mc.timeout();
        Self::map_until(socket, mc, deadline)
    }

    /// [`map`](Self::map), returning by `deadline`.
    pub fn map_until(socket: Socket, mc: &MappingContext, deadline: Instant) -> Result<Self, Error> {
        if socket.peer_addr().is_ok() {
            return Err(Error::UnusableSocket("the TCP socket is already connected".into()));
        }
        let mut local = socket
            .local_addr()?
            .as_socket()
            .ok_or_else(|| Error::UnusableSocket("not an IP socket".into()))?;
        if local.port() == 0 {
            set_reuse(&socket)?;
            socket.bind(&local.into())?;
            local = socket
                .local_addr()?
                .as_socket()
                .ok_or_else(|| Error::UnusableSocket("not an IP socket".into()))?;
        }
        let (endpoints, port_mappings) = map_tcp_port(local, &mc.techniques(), deadline);
        Ok(MappedTcpSocket {
            socket,
            endpoints,
            port_mappings,
        })
    }

    /// Adds to [`endpoints`](Self::endpoints) what techniques that went on in the background
    /// after the mapping returned have found since ([`PortMappings::take_late`]); returns how
    /// many endpoints that added.
    pub fn refresh(&mut self) -> usize {
        self.port_mappings.merge_late_into(&mut self.endpoints)
    }
}

/// Maps a reusable TCP port with every technique at once: the driver behind
/// [`MappedTcpSocket`].
pub fn map_tcp_port(
    local: SocketAddr,
    techniques: &[Arc<dyn MappingTechnique>],
    deadline: Instant,
) -> (Vec<MappedSocketAddr>, PortMappings) {
    let start = Instant::now();
    let held = Arc::new(Held::default());
    let waited_for: Vec<bool> = techniques.iter().map(|t| t.waited_for()).collect();
    let running = spawn_beside(
        "natt-map-tcp",
        Protocol::Tcp,
        start,
        techniques.to_vec(),
        &held,
        move |t| t.map_tcp(local, deadline),
    );
    let locals = local_endpoints(local);
    let local_addrs: Vec<SocketAddr> = locals.iter().map(|e| e.addr).collect();
    let results = collect_beside(running, &waited_for, start, deadline, None, &local_addrs, &held);
    let mut collector = Collector::new(Protocol::Tcp, locals, held);
    for (t, (elapsed, r)) in techniques.iter().zip(results) {
        collector.add(t.name(), elapsed, r);
    }
    collector.finish()
}
