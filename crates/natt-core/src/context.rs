//! [`MappingContext`]: the techniques a program maps sockets with, and their servers.

use std::net::SocketAddr;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use crate::technique::MappingTechnique;

/// The address of a server or gateway that a technique can use to obtain external endpoints.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum HolePunchServerAddr {
    /// A server speaking natt's simple hole-punch protocol (for example `natt serve`).
    Simple(SocketAddr),
    /// A STUN server (RFC 8489).
    Stun(SocketAddr),
    /// A UPnP Internet Gateway Device, by the URL of its root description
    /// (`http://192.168.1.1:5000/rootDesc.xml`): natt-upnp reads that description instead of
    /// searching for a gateway by multicast (and, if nothing answers at the URL, searches that
    /// host alone, unicast).
    IgdGateway(String),
    /// A server of a third-party technique: offered to every technique, taken by the one that
    /// recognises `kind`.
    Other {
        /// Which kind of server this is, as the technique that takes it names it.
        kind: String,
        /// Its address.
        addr: SocketAddr,
    },
}

/// The default time a mapping may take: [`MappingContext::timeout`].
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(3);

/// The techniques a program maps sockets with, with their servers and caches (such as the
/// UPnP gateway found). Create one and keep it for the life of the program; it is cheap to
/// share between threads.
///
/// ```
/// use natt_core::{HolePunchServerAddr, MappingContext};
/// let mc = MappingContext::empty();
/// // No technique takes simple-protocol servers in an empty context.
/// assert!(!mc.add_server(HolePunchServerAddr::Simple("203.0.113.20:5483".parse().unwrap())));
/// assert!(mc.technique_names().is_empty());
/// ```
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
