//! [`TurnTechnique`]: the `turn` [`MappingTechnique`]: a relayed address allocated on a TURN
//! server from the mapped UDP socket itself (over UDP to the server: an exchange on the
//! socket, in the same receive loop as STUN's), or over TCP to the server
//! (`?transport=tcp`, beside the socket); for a mapped TCP socket, an RFC 6062 TCP allocation
//! on a control connection to the server (over TCP whatever the URI says). The relayed address is one more endpoint of the
//! socket, `nat_restricted` (a peer reaches it only once we gave it a permission), and the
//! allocation is a lease in the socket's `PortMappings`: a [`Relay`], refreshed while held,
//! deleted on release and on drop, and reachable with [`with_relay`](crate::with_relay) to add
//! peers and carry their data.
//!
//! The refreshes' answers arrive on the mapped socket, which the application reads: it hands
//! the datagrams from the relay's server to [`Relay::handle_datagram`] (see the crate
//! documentation), or, when nothing else reads the socket, calls
//! [`Relay::read_socket_itself`] (`natt map --hold` does). Otherwise the answers are missed:
//! the refreshes still reach the server and keep the allocation, but each is logged as failed
//! and retried sooner.

use std::net::{SocketAddr, UdpSocket};
use std::sync::{PoisonError, RwLock};
use std::time::Instant;

use natt_core::turn::{TurnCredentials, TurnTransport};
use natt_core::{
    HolePunchServerAddr, Lease, MappedSocketAddr, MappingResult, MappingTechnique, TechniqueError, TechniqueMapping,
    Transmit, UdpExchange,
};

use crate::allocation::{Allocation, Config, Input};
use crate::relay::{Relay, new_core};

/// The technique's name, and its endpoints'.
pub const NAME: &str = "turn";

/// A TURN server the technique was given.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Server {
    addr: SocketAddr,
    transport: TurnTransport,
    credentials: TurnCredentials,
}

/// Allocates a relayed address for every UDP socket mapped, on the first TURN server given
/// ([`HolePunchServerAddr::Turn`]) of the socket's address family.
#[derive(Debug, Default)]
pub struct TurnTechnique {
    servers: RwLock<Vec<Server>>,
    config: Config,
}

impl TurnTechnique {
    /// A technique with no server yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// A technique whose allocations are made with `config`.
    pub fn with_config(config: Config) -> Self {
        TurnTechnique {
            config,
            ..Self::default()
        }
    }

    fn server_for(&self, local: SocketAddr) -> Option<Server> {
        self.servers
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .find(|s| s.addr.is_ipv4() == local.is_ipv4())
            .cloned()
    }

    fn no_server(&self, local: SocketAddr) -> TechniqueError {
        let family = if local.is_ipv4() { "IPv4" } else { "IPv6" };
        TechniqueError::NotApplicable(format!("no {family} TURN server given"))
    }
}

/// Starts installing a permission for our relayed address's own IP, without waiting: a peer
/// relayed by the same server (its relayed address on that IP, in its token) can then reach us
/// through the relay from the moment it reads our token, before we have read its token and
/// added it (which costs a round trip to the server that both sides would otherwise wait for,
/// one probe round lost). Data still counts only on paths the punch authenticated.
fn permit_same_server(relay: &Relay) {
    let own = relay.relayed_addr();
    if let Err(e) = relay.link().start_permission(own) {
        log::debug!("turn: no permission for {}: {e}", own.ip());
    }
}

fn endpoint(relayed: SocketAddr) -> Vec<MappedSocketAddr> {
    vec![MappedSocketAddr::new(relayed, true, NAME)]
}

impl MappingTechnique for TurnTechnique {
    fn name(&self) -> &str {
        NAME
    }

    /// A relay is waited for: its address is what a connection falls back to.
    fn waited_for(&self) -> bool {
        true
    }

    fn add_server(&self, server: &HolePunchServerAddr) -> bool {
        match server {
            HolePunchServerAddr::Turn {
                addr,
                transport,
                credentials,
            } => {
                self.servers
                    .write()
                    .unwrap_or_else(PoisonError::into_inner)
                    .push(Server {
                        addr: *addr,
                        transport: *transport,
                        credentials: credentials.clone(),
                    });
                true
            }
            _ => false,
        }
    }

    fn udp_exchange(&self, local: SocketAddr) -> Result<Option<Box<dyn UdpExchange>>, TechniqueError> {
        let server = self.server_for(local).ok_or_else(|| self.no_server(local))?;
        if server.transport == TurnTransport::Tcp {
            return Ok(None); // beside the socket: map_udp
        }
        let core = new_core(server.addr, TurnTransport::Udp, server.credentials, self.config);
        Ok(Some(Box::new(TurnExchange { core: Some(core) })))
    }

    fn map_udp(&self, local: SocketAddr, deadline: Instant) -> Result<TechniqueMapping, TechniqueError> {
        let server = self.server_for(local).ok_or_else(|| self.no_server(local))?;
        let relay = Relay::allocate_tcp(server.addr, server.credentials, self.config, deadline)?;
        permit_same_server(&relay);
        Ok(TechniqueMapping {
            endpoints: endpoint(relay.relayed_addr()),
            lease: Some(Box::new(relay)),
        })
    }

    /// An RFC 6062 TCP allocation (`REQUESTED-TRANSPORT` TCP) on a control connection to the
    /// server, which is always reached over TCP for it (whatever the URI's transport). Peers
    /// connect to its relayed address with plain TCP; the handle's
    /// [`accept_tcp`](Relay::accept_tcp) gives their streams.
    fn map_tcp(&self, local: SocketAddr, deadline: Instant) -> Result<TechniqueMapping, TechniqueError> {
        // The control connection is a stream of its own, so a dual-stack socket may take an
        // IPv4 server (its relayed address is then IPv4, which such a socket's peers reach).
        let server = self
            .server_for(local)
            .or_else(|| {
                self.servers
                    .read()
                    .unwrap_or_else(PoisonError::into_inner)
                    .iter()
                    .find(|s| natt_core::family::reaches(local, s.addr))
                    .cloned()
            })
            .ok_or_else(|| self.no_server(local))?;
        let config = Config {
            tcp_relay: true,
            ..self.config
        };
        let relay = Relay::allocate_tcp(server.addr, server.credentials, config, deadline)?;
        Ok(TechniqueMapping {
            endpoints: endpoint(relay.relayed_addr()),
            lease: Some(Box::new(relay)),
        })
    }
}

/// The allocation over the mapped socket, as one exchange of the mapping driver; once made,
/// it becomes the socket's [`Relay`] lease.
struct TurnExchange {
    core: Option<Allocation>,
}

impl UdpExchange for TurnExchange {
    fn poll_transmit(&mut self, now: Instant) -> Option<Transmit> {
        self.core.as_mut()?.poll_transmit(now)
    }

    fn poll_timeout(&self) -> Option<Instant> {
        self.core.as_ref()?.poll_timeout()
    }

    fn handle_datagram(&mut self, now: Instant, from: SocketAddr, data: &[u8]) -> bool {
        self.core
            .as_mut()
            .is_some_and(|c| c.handle_datagram(now, from, data) != Input::NotFromServer)
    }

    fn poll_result(&mut self, now: Instant) -> Option<MappingResult> {
        let _ = now;
        let result = self.core.as_ref()?.allocate_result()?;
        Some(result.map(|a| endpoint(a.relayed)).map_err(TechniqueError::from))
    }

    fn finish(&mut self) -> MappingResult {
        match self.core.as_mut() {
            Some(core) => {
                // An allocation the server made without our hearing of it by the deadline
                // expires with its lifetime there.
                let result = core.allocate_result();
                result
                    .unwrap_or_else(|| {
                        Err(crate::TurnError::Silent {
                            server: core.server(),
                            what: "Allocate",
                        })
                    })
                    .map(|a| endpoint(a.relayed))
                    .map_err(TechniqueError::from)
            }
            None => Err(TechniqueError::Other("the allocation was handed over".into())),
        }
    }

    fn lease(&mut self, socket: &UdpSocket) -> Option<Box<dyn Lease>> {
        let core = self.core.take()?;
        let server = core.server();
        let socket = match socket.try_clone() {
            Ok(s) => s,
            Err(e) => {
                log::warn!("turn: cannot hold the allocation on {server}: {e}");
                return None;
            }
        };
        match Relay::hold_udp(core, socket) {
            Ok(relay) => {
                permit_same_server(&relay);
                Some(Box::new(relay))
            }
            Err(e) => {
                log::warn!("turn: cannot hold the allocation on {server}: {e}");
                None
            }
        }
    }
}
