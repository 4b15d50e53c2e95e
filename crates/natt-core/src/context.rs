//! [`MappingContext`]: the techniques a program maps sockets with, and their servers.

use std::net::SocketAddr;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use crate::names::{SIMPLE_PORT, STUN_PORT, ServerName, ServerNameError};
use crate::technique::MappingTechnique;

/// The address of a server or gateway that a technique can use to obtain external endpoints.
///
/// Servers known by name are given as [`NamedStun`](Self::NamedStun) and
/// [`NamedSimple`](Self::NamedSimple), most easily with [`parse_stun`](Self::parse_stun) and
/// [`parse_simple`](Self::parse_simple) (`HOST[:PORT]`, with the protocol's default port). A
/// name is resolved each time a socket is mapped, at the start and under the mapping's
/// deadline, at the same time as the other techniques run; the addresses of the socket's
/// family are used. A name that does not resolve in time fails its technique with an error
/// naming it ([`TechniqueError::Resolve`](crate::TechniqueError::Resolve)) unless other
/// servers of the technique answer.
///
#[cfg_attr(not(doctest), doc = include_str!("../doc/hole_punch_server_addr.md"))]
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum HolePunchServerAddr {
    /// A server speaking natt's simple hole-punch protocol (for example `natt serve`).
    Simple(SocketAddr),
    /// A STUN server (RFC 8489).
    Stun(SocketAddr),
    /// A STUN server by name, resolved when a socket is mapped.
    NamedStun(ServerName),
    /// A simple hole-punch protocol server by name, resolved when a socket is mapped.
    NamedSimple(ServerName),
    /// A UPnP Internet Gateway Device, by the URL of its root description
    /// (`http://192.168.1.1:5000/rootDesc.xml`): natt-upnp reads that description instead of
    /// searching for a gateway by multicast (and, if nothing answers at the URL, searches that
    /// host alone, unicast).
    IgdGateway(String),
    /// A TURN relay (RFC 8656), for natt-turn: its address, how to reach it, and the
    /// long-term credentials it wants (their `Debug` hides the password). Made from a URI with
    /// [`parse_turn`](Self::parse_turn).
    Turn {
        /// The server's address.
        addr: SocketAddr,
        /// UDP or TCP to the server.
        transport: crate::turn::TurnTransport,
        /// User name and password.
        credentials: crate::turn::TurnCredentials,
    },
    /// A server of a third-party technique: offered to every technique, taken by the one that
    /// recognises `kind`.
    Other {
        /// Which kind of server this is, as the technique that takes it names it.
        kind: String,
        /// Its address.
        addr: SocketAddr,
    },
}

impl HolePunchServerAddr {
    /// A STUN server from `HOST[:PORT]` (default port [`STUN_PORT`], 3478): an IP address
    /// gives [`Stun`](Self::Stun), a name [`NamedStun`](Self::NamedStun).
    pub fn parse_stun(s: &str) -> Result<Self, ServerNameError> {
        let name = ServerName::parse(s, STUN_PORT)?;
        Ok(name.socket_addr().map_or(Self::NamedStun(name), Self::Stun))
    }

    /// A simple hole-punch protocol server from `HOST[:PORT]` (default port [`SIMPLE_PORT`],
    /// 5483): an IP address gives [`Simple`](Self::Simple), a name
    /// [`NamedSimple`](Self::NamedSimple).
    pub fn parse_simple(s: &str) -> Result<Self, ServerNameError> {
        let name = ServerName::parse(s, SIMPLE_PORT)?;
        Ok(name.socket_addr().map_or(Self::NamedSimple(name), Self::Simple))
    }
}

impl HolePunchServerAddr {
    /// A TURN relay from `turn:IP[:PORT][?transport=udp|tcp]` (default port 3478, UDP) with
    /// `credentials` (see [`crate::turn`]).
    pub fn parse_turn(uri: &str, credentials: crate::turn::TurnCredentials) -> Result<Self, crate::turn::TurnUriError> {
        let (addr, transport) = crate::turn::parse_turn_uri(uri)?;
        Ok(Self::Turn {
            addr,
            transport,
            credentials,
        })
    }
}

/// The default time a mapping may take: [`MappingContext::timeout`].
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(3);

/// The techniques a program maps sockets with, with their servers and caches (such as the
/// UPnP gateway found). Create one and keep it for the life of the program; it is cheap to
/// share between threads.
///
#[cfg_attr(not(doctest), doc = include_str!("../doc/mapping_context.md"))]
pub struct MappingContext {
    techniques: RwLock<Vec<Arc<dyn MappingTechnique>>>,
    timeout: Duration,
}

impl MappingContext {
    /// A context with no technique: sockets map to their local addresses only. Add techniques
    /// with [`add_technique`](Self::add_technique); the `natt` facade's `MappingContext::new()`
    /// registers every technique compiled in.
    pub fn empty() -> Self {
        MappingContext {
            techniques: RwLock::new(Vec::new()),
            timeout: DEFAULT_TIMEOUT,
        }
    }

    /// Sets how long mapping a socket may take (default [`DEFAULT_TIMEOUT`]).
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// How long mapping a socket may take.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Registers a technique; it is used by every mapping from now on.
    pub fn add_technique(&self, technique: Arc<dyn MappingTechnique>) {
        self.techniques
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .push(technique);
    }

    /// Replaces the technique named `name` with `technique`, in the same place (the order of
    /// techniques is the order of endpoints); returns whether one was replaced.
    pub fn replace_technique(&self, name: &str, technique: Arc<dyn MappingTechnique>) -> bool {
        let mut techniques = self.techniques.write().unwrap_or_else(PoisonError::into_inner);
        match techniques.iter_mut().find(|t| t.name() == name) {
            Some(slot) => {
                *slot = technique;
                true
            }
            None => false,
        }
    }

    /// Removes every technique with this name; returns whether one was removed.
    pub fn remove_technique(&self, name: &str) -> bool {
        let mut techniques = self.techniques.write().unwrap_or_else(PoisonError::into_inner);
        let before = techniques.len();
        techniques.retain(|t| t.name() != name);
        techniques.len() != before
    }

    /// The techniques, in registration order.
    pub fn techniques(&self) -> Vec<Arc<dyn MappingTechnique>> {
        self.techniques.read().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// The names of the techniques, in registration order.
    pub fn technique_names(&self) -> Vec<String> {
        self.techniques().iter().map(|t| t.name().to_owned()).collect()
    }

    /// Informs the techniques about a server; returns whether a technique took it.
    pub fn add_server(&self, server: HolePunchServerAddr) -> bool {
        let taken = self.techniques().iter().any(|t| t.add_server(&server));
        if !taken {
            log::warn!("no technique takes server {server:?}");
        }
        taken
    }

    /// Informs the techniques about external servers (each is offered as by
    /// [`add_server`](Self::add_server)).
    pub fn add_servers<S>(&self, servers: S)
    where
        S: IntoIterator<Item = HolePunchServerAddr>,
    {
        for server in servers {
            self.add_server(server);
        }
    }
}

impl Default for MappingContext {
    fn default() -> Self {
        Self::empty()
    }
}

impl std::fmt::Debug for MappingContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MappingContext")
            .field("techniques", &self.technique_names())
            .field("timeout", &self.timeout)
            .finish()
    }
}
