//! [`StunTechnique`]: a [`MappingTechnique`] that learns a socket's reflexive address from STUN
//! servers, over the mapped UDP socket (driving a [`StunExchange`], the socket-free protocol
//! core in [`crate::exchange`]) or from the mapped TCP port. This is the driver: it lists the
//! socket's local addresses and seeds the exchange's generator from the operating system.

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use natt_core::local::local_addrs;
use natt_core::reuse::tcp_connect_from;
use natt_core::server_list::ServerList;
use natt_core::{HolePunchServerAddr, MappingTechnique, TechniqueError, TechniqueMapping, UdpExchange};
use rand::SeedableRng;
use rand::rngs::StdRng;

use crate::exchange::endpoints;
use crate::message::{self, BindingSuccess, decode_response, encode_binding_request};
use crate::transaction::DEFAULT_RTO;

// The exchange and its parameters, at their old paths.
pub use crate::exchange::{
    FILTER_WINDOW_MARGIN, FILTER_WINDOW_RTTS, FilterWindow, GRACE_RTTS, MIN_CHECK_RTO, MIN_GRACE, NAME, StunExchange,
};

/// Maps sockets with STUN Binding requests (RFC 8489) to every configured server at once.
///
#[cfg_attr(not(doctest), doc = include_str!("../doc/stun_technique.md"))]
#[derive(Debug)]
pub struct StunTechnique {
    servers: ServerList,
    rto: Duration,
    filter_window: FilterWindow,
}

impl Default for StunTechnique {
    fn default() -> Self {
        StunTechnique {
            servers: ServerList::default(),
            rto: DEFAULT_RTO,
            filter_window: FilterWindow::DEFAULT,
        }
    }
}

impl StunTechnique {
    /// A technique with no server yet and RFC 8489's initial RTO.
    pub fn new() -> Self {
        Self::default()
    }

    /// A technique with these servers.
    pub fn with_servers(servers: impl IntoIterator<Item = SocketAddr>) -> Self {
        let t = Self::new();
        for s in servers {
            t.add_server(&HolePunchServerAddr::Stun(s));
        }
        t
    }

    /// Sets the initial retransmission timeout (RFC 8489 recommends 500 ms; lower only on
    /// networks whose round trip is known to be short).
    pub fn with_rto(mut self, rto: Duration) -> Self {
        self.rto = rto;
        self
    }

    /// Sets how long the filtering check waits for the answer from an RFC 5780 server's other
    /// address ([`FilterWindow::DEFAULT`], 1 round trip + 5 ms, unless set). A missed answer
    /// leaves the endpoint `nat_restricted` (the safe side: hole punching is then attempted,
    /// which works with any NAT); a program that needs a surer verdict sets a longer window,
    /// such as [`FilterWindow::PATIENT`], and every mapping behind a NAT that filters then
    /// waits all of it.
    pub fn with_filter_window(mut self, window: FilterWindow) -> Self {
        self.filter_window = window;
        self
    }

    /// The servers given by address, in the order added.
    pub fn servers(&self) -> Vec<SocketAddr> {
        self.servers.all()
    }

    /// The servers given by name (resolved each time a socket is mapped), in the order added.
    pub fn server_names(&self) -> Vec<natt_core::ServerName> {
        self.servers.names()
    }

    /// The addresses of the servers a socket bound at `local` can reach, the names resolved
    /// by `deadline` (for tools that ask the servers themselves, such as NAT behaviour
    /// discovery).
    pub fn resolve_servers(&self, local: SocketAddr, deadline: Instant) -> Result<Vec<SocketAddr>, TechniqueError> {
        self.servers.resolve_until(local, "STUN", deadline)?.usable()
    }
}

impl MappingTechnique for StunTechnique {
    fn name(&self) -> &str {
        NAME
    }

    fn add_server(&self, server: &HolePunchServerAddr) -> bool {
        match server {
            HolePunchServerAddr::Stun(addr) => self.servers.add(*addr),
            HolePunchServerAddr::NamedStun(name) => self.servers.add_name(name.clone()),
            _ => return false,
        }
        true
    }

    fn udp_exchange(&self, local: SocketAddr) -> Result<Option<Box<dyn UdpExchange>>, TechniqueError> {
        let (rto, window) = (self.rto, self.filter_window);
        let exchange = self.servers.udp_exchange(local, "STUN", move |servers, now| {
            let ex = StunExchange::new(local_addrs(local), &servers, rto, now, StdRng::from_os_rng())
                .map_err(|e| TechniqueError::Protocol(e.to_string()))?
                .with_filter_window(window);
            Ok(Box::new(ex))
        })?;
        Ok(Some(exchange))
    }

    fn map_tcp(&self, local: SocketAddr, deadline: Instant) -> Result<TechniqueMapping, TechniqueError> {
        let mapped = self
            .servers
            .ask_each_until(local, "STUN", "STUN (TCP)", deadline, |server| {
                binding_over_tcp(local, server, deadline)
            })?;
        // TCP filtering cannot be tested with STUN: restricted unless no NAT is in between.
        Ok(endpoints(&local_addrs(local), &mapped, false).into())
    }
}

/// One Binding transaction over TCP from `local` (RFC 8489 framing: messages back to back):
/// the reflexive address the server saw.
pub fn binding_over_tcp(
    local: SocketAddr,
    server: SocketAddr,
    deadline: Instant,
) -> Result<SocketAddr, TechniqueError> {
    tcp_binding(local, server, deadline).map(|success| success.mapped)
}

/// One Binding transaction over TCP from `local`, connected to `server` by `deadline`: the
/// server's whole success answer (with RFC 5780's OTHER-ADDRESS if it named one). The one
/// STUN-over-TCP binding, for the technique and for NAT behaviour discovery.
pub fn tcp_binding(local: SocketAddr, server: SocketAddr, deadline: Instant) -> Result<BindingSuccess, TechniqueError> {
    let mut stream = tcp_connect_from(local, server, deadline)?;
    let txid: [u8; 12] = rand::random();
    let request = encode_binding_request(txid, None).map_err(|e| TechniqueError::Protocol(e.to_string()))?;
    stream.write_all(&request)?;
    let response = read_stun_message(&mut stream)?;
    let response = decode_response(&response).map_err(|e| TechniqueError::Protocol(e.to_string()))?;
    if response.txid != txid {
        return Err(TechniqueError::Protocol(format!(
            "{server} answered another transaction"
        )));
    }
    response
        .result
        .map_err(|(code, reason)| TechniqueError::Refused(format!("{server}: {code} {reason}")))
}

/// Reads one STUN message from a stream; never more than
/// [`MAX_MESSAGE_LEN`](crate::message::MAX_MESSAGE_LEN) bytes
/// ([`STREAM_FRAMER`](crate::message::STREAM_FRAMER)).
pub fn read_stun_message(stream: &mut impl Read) -> std::io::Result<Vec<u8>> {
    message::STREAM_FRAMER.read(stream)
}
