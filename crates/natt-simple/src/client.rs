//! The client side: [`SimpleTechnique`], a [`MappingTechnique`] that asks simple hole-punch
//! servers which address they see, over the mapped UDP socket (driving a [`SimpleExchange`],
//! the socket-free protocol core in [`crate::exchange`]) or from the mapped TCP port. This is
//! the driver: it lists the socket's local addresses and gives the exchange a generator seeded
//! by the operating system.

use std::io::Write;
use std::net::SocketAddr;
use std::time::Instant;

use natt_core::local::local_addrs;
use natt_core::reuse::tcp_connect_from;
use natt_core::server_list::ServerList;
use natt_core::{HolePunchServerAddr, MappingTechnique, TechniqueError, TechniqueMapping, UdpExchange};
use rand::SeedableRng;
use rand::rngs::StdRng;

use crate::exchange::endpoints_from;
use crate::stream::read_message;
use crate::wire::{Message, Request, TransactionId};

// The exchange and its parameters, at their old paths.
pub use crate::exchange::{GRACE_RTTS, INITIAL_RTO, MAX_RTO, MIN_GRACE, NAME, RETRANSMIT, SimpleExchange};

/// Maps sockets by asking servers of the simple hole-punch protocol (such as `natt serve`)
/// which address they see.
///
#[cfg_attr(not(doctest), doc = include_str!("../doc/simple_technique.md"))]
#[derive(Debug, Default)]
pub struct SimpleTechnique {
    servers: ServerList,
}

impl SimpleTechnique {
    /// A technique with no server yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// A technique with these servers.
    pub fn with_servers(servers: impl IntoIterator<Item = SocketAddr>) -> Self {
        let t = Self::new();
        for s in servers {
            t.add_server(&HolePunchServerAddr::Simple(s));
        }
        t
    }

    /// The servers given by address, in the order added.
    pub fn servers(&self) -> Vec<SocketAddr> {
        self.servers.all()
    }

    /// The servers given by name (resolved each time a socket is mapped), in the order added.
    pub fn server_names(&self) -> Vec<natt_core::ServerName> {
        self.servers.names()
    }
}

/// What the servers are called in errors.
const WHAT: &str = "simple-protocol";

impl MappingTechnique for SimpleTechnique {
    fn name(&self) -> &str {
        NAME
    }

    fn add_server(&self, server: &HolePunchServerAddr) -> bool {
        match server {
            HolePunchServerAddr::Simple(addr) => self.servers.add(*addr),
            HolePunchServerAddr::NamedSimple(name) => self.servers.add_name(name.clone()),
            _ => return false,
        }
        true
    }

    fn udp_exchange(&self, local: SocketAddr) -> Result<Option<Box<dyn UdpExchange>>, TechniqueError> {
        let exchange = self.servers.udp_exchange(local, WHAT, move |servers, now| {
            let mut rng = StdRng::from_os_rng();
            Ok(Box::new(SimpleExchange::new(
                local_addrs(local),
                servers,
                now,
                &mut rng,
            )))
        })?;
        Ok(Some(exchange))
    }

    fn map_tcp(&self, local: SocketAddr, deadline: Instant) -> Result<TechniqueMapping, TechniqueError> {
        let observed = self
            .servers
            .ask_each_until(local, WHAT, "simple-protocol (TCP)", deadline, |server| {
                query_tcp(local, server, deadline)
            })?;
        Ok(endpoints_from(&local_addrs(local), &observed).into())
    }
}

/// Asks one server over TCP, connecting from `local`.
fn query_tcp(local: SocketAddr, server: SocketAddr, deadline: Instant) -> Result<SocketAddr, TechniqueError> {
    let mut stream = tcp_connect_from(local, server, deadline)?;
    let txid = TransactionId::random();
    stream.write_all(&Request { txid }.encode())?;
    match read_message(&mut stream)? {
        Message::Reply(r) if r.txid == txid => Ok(r.observed),
        Message::Reply(_) => Err(TechniqueError::Protocol(format!(
            "{server} answered another transaction"
        ))),
        Message::Request(_) => Err(TechniqueError::Protocol(format!("{server} sent a request"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn no_server_is_not_applicable() {
        let t = SimpleTechnique::new();
        let e = t.udp_exchange(addr("0.0.0.0:1")).err().unwrap();
        assert!(e.is_not_applicable());
        t.add_server(&HolePunchServerAddr::Simple(addr("[2001:db8::1]:5483")));
        assert!(t.udp_exchange(addr("0.0.0.0:1")).err().unwrap().is_not_applicable());
    }
}
