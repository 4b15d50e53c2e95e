//! # natt
//!
//! NAT traversal for Rust: lets two programs behind NAT routers and firewalls reach each other
//! directly. natt maps a socket to every address a peer may reach it at, using several
//! techniques at once, each a crate of its own and a Cargo feature of this facade:
//!
//! | feature  | crate         | technique                                                |
//! |----------|---------------|----------------------------------------------------------|
//! | `simple` | `natt-simple` | natt's simple hole-punch protocol (ask a `natt serve`)   |
//! | `stun`   | `natt-stun`   | STUN (RFC 8489) and NAT behaviour discovery (RFC 5780)   |
//! | `upnp`   | `natt-upnp`   | UPnP IGD port mapping — not yet implemented              |
//! | `punch`  | `natt-punch`  | rendezvous, UDP hole punching, TCP simultaneous open     |
//!
//! All features are on by default. [`MappingContext::new`] registers every technique compiled
//! in; third-party techniques implement [`MappingTechnique`] from `natt-core` and are added
//! with [`natt_core::MappingContext::add_technique`].
//!
//! Mapping a socket (this part of the original design's example works today; punching arrives
//! with the `punch` crate):
//!
//! ```no_run
//! use natt::{HolePunchServerAddr, MappedUdpSocket, MappingContext};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! // First, one needs a `MappingContext` to do the port mapping with.
//! let mc = MappingContext::new()?;
//!
//! // Optionally, inform the context about any external port-mapping servers.
//! let some_well_known_server = HolePunchServerAddr::Simple("203.0.113.20:5483".parse()?);
//! mc.add_servers([some_well_known_server]);
//!
//! // Now create a mapped udp socket to use for the connection.
//! let mapped_socket = MappedUdpSocket::new(&mc)?;
//!
//! // A mapped socket consists of a socket, a list of endpoints, and the port mappings made
//! // on routers, which live (and are renewed) as long as `port_mappings` is kept.
//! let MappedUdpSocket { socket, endpoints, port_mappings } = mapped_socket;
//! for endpoint in &endpoints {
//!     println!("{endpoint}");
//! }
//! # drop((socket, port_mappings));
//! # Ok(())
//! # }
//! ```

use std::ops::Deref;
#[cfg(any(feature = "simple", feature = "stun"))]
use std::sync::Arc;
use std::time::Duration;

pub use natt_core::rendezvous::{PrivRendezvousInfo, PubRendezvousInfo, TokenError, gen_rendezvous_info};
pub use natt_core::{
    Error, HolePunchServerAddr, Lease, MappedSocketAddr, MappedTcpSocket, MappedUdpSocket, MappingTechnique,
    PortMappings, Protocol, TechniqueError, TechniqueMapping, TechniqueOutcome, Transmit, UdpExchange,
};

/// The core crate, for technique authors.
pub use natt_core as core;
/// Hole punching.
#[cfg(feature = "punch")]
pub use natt_punch as punch;
#[cfg(feature = "punch")]
pub use natt_punch::{PunchError, PunchedUdpSocket, is_punch_packet, tcp_punch_hole};
/// The simple hole-punch protocol.
#[cfg(feature = "simple")]
pub use natt_simple as simple;
#[cfg(feature = "simple")]
pub use natt_simple::{SimpleTcpHolePunchServer, SimpleTechnique, SimpleUdpHolePunchServer};
/// STUN and NAT behaviour discovery.
#[cfg(feature = "stun")]
pub use natt_stun as stun;
#[cfg(feature = "stun")]
pub use natt_stun::{StunServer, StunTechnique};

/// The techniques a program maps sockets with, their servers and caches.
///
/// It dereferences to [`natt_core::MappingContext`], so it is accepted wherever that is (such
/// as [`MappedUdpSocket::new`]) and has all its methods.
#[derive(Debug)]
pub struct MappingContext(natt_core::MappingContext);

impl MappingContext {
    /// A context with every technique this build of natt has (see the crate's features).
    /// Nothing is searched for on the network until a socket is mapped.
    ///
    /// ```
    /// let mc = natt::MappingContext::new()?;
    /// # #[cfg(feature = "simple")]
    /// assert!(mc.technique_names().contains(&"simple".to_string()));
    /// # Ok::<(), natt::Error>(())
    /// ```
    pub fn new() -> Result<Self, Error> {
        let mc = natt_core::MappingContext::empty();
        #[cfg(feature = "simple")]
        mc.add_technique(Arc::new(SimpleTechnique::new()));
        #[cfg(feature = "stun")]
        mc.add_technique(Arc::new(StunTechnique::new()));
        Ok(MappingContext(mc))
    }

    /// A context with no technique at all (sockets map to their local addresses only).
    pub fn empty() -> Self {
        MappingContext(natt_core::MappingContext::empty())
    }

    /// Sets how long mapping a socket may take.
    pub fn with_timeout(self, timeout: Duration) -> Self {
        MappingContext(self.0.with_timeout(timeout))
    }

    /// The core context.
    pub fn into_inner(self) -> natt_core::MappingContext {
        self.0
    }
}

impl Deref for MappingContext {
    type Target = natt_core::MappingContext;

    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl From<natt_core::MappingContext> for MappingContext {
    fn from(mc: natt_core::MappingContext) -> Self {
        MappingContext(mc)
    }
}
