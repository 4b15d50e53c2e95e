//! # natt-core
//!
//! The foundation every natt technique builds on:
//!
//! - [`MappedSocketAddr`]: an endpoint a peer may reach us at, with the technique that found it
//!   and whether hole punching is needed to use it ([`MappedSocketAddr::nat_restricted`]).
//! - [`MappingTechnique`]: the trait a way of learning or creating external endpoints
//!   implements (simple hole-punch servers, STUN, UPnP, PCP, or a third party's own).
//!   Techniques that talk over the mapped UDP socket itself do so through a socket-free state
//!   machine, [`UdpExchange`], so several of them can share one socket and one receive loop.
//! - [`MappingContext`]: the techniques a program uses, with their servers and caches. Servers
//!   are given by address or by name ([`HolePunchServerAddr::parse_stun`],
//!   [`ServerName`]): names are resolved when a mapping starts, under its deadline.
//! - [`MappedUdpSocket`] and [`MappedTcpSocket`]: a socket together with all its known
//!   endpoints, mapped by every technique at once under one deadline.
//! - [`retransmit::Schedule`]: when to send a request again while no answer comes, the one
//!   retransmission schedule of every technique, each protocol with its own parameters.
//! - [`fanout`]: one thread per item, the results collected under a deadline, the one fan-out
//!   of every technique (the mapping drivers, server queries, UPnP's search).
//! - [`family`]: one dual-stack socket for IPv4 and IPv6 where the host has global IPv6
//!   ([`MappedUdpSocket::new`], [`MappedTcpSocket::new`]); IPv4-mapped addresses are made plain
//!   IPv4 wherever they come in.
//! - [`bytes::Reader`] and [`bytes::Writer`]: the byte reader and writer of the binary wire
//!   formats, and [`frame::Framer`]: the one framer of messages on TCP streams.
//!
//! A third-party technique needs nothing but this crate: implement [`MappingTechnique`] and
//! register it with [`MappingContext::add_technique`].
//!
//! ```
//! use natt_core::{MappingContext, MappedUdpSocket};
//! use std::time::Duration;
//!
//! # fn main() -> Result<(), natt_core::Error> {
//! // A context with no technique maps to the socket's local addresses only.
//! let mc = MappingContext::empty().with_timeout(Duration::from_millis(200));
//! let mapped = MappedUdpSocket::bind("127.0.0.1:0".parse().unwrap(), &mc)?;
//! assert_eq!(mapped.endpoints[0].addr, mapped.socket.local_addr()?);
//! # Ok(())
//! # }
//! ```
//!
//! ## Testing without a network: `sim`
//!
//! With the `sim` feature (meant for dev-dependencies), the module `sim` is a simulated network
//! for tests: hosts behind NATs of each kind (endpoint-independent or symmetric mapping,
//! ports preserved or random, endpoint-independent, address-dependent or
//! address-and-port-dependent filtering) or on the Internet, links with delay and loss, and a
//! harness that runs [`UdpExchange`]s on its hosts in virtual time, from a seeded generator.
//! Hole punching is tested on it for every pair of NATs, with no root and no lab: see
//! `natt-punch/tests/sim.rs`.
#![cfg_attr(
    feature = "sim",
    doc = "\n[The module's documentation](sim) says what it models and what not."
)]
//!
//! Examples of the items that the `natt` facade re-exports are written with `natt::` paths,
//! as its users write them, and are compiled by natt's doc tests (they are in `doc/`).

pub mod arbiter;
pub mod bytes;
pub mod context;
pub mod deadline;
pub mod endpoint;
pub mod error;
pub mod family;
pub mod fanout;
pub mod frame;
pub mod lease;
pub mod local;
pub mod mapping;
pub mod names;
pub mod rendezvous;
pub mod retransmit;
pub mod reuse;
pub mod route;
pub mod server_list;
pub mod server_loop;
#[cfg(feature = "sim")]
pub mod sim;
pub mod tcp;
pub mod technique;
pub mod turn;
pub mod udp;

/// The old name of [`server_list`] (client-side lists of servers to ask).
#[doc(hidden)]
pub use server_list as servers;
/// The old name of [`server_loop`] (the loops of the servers natt runs).
#[doc(hidden)]
pub use server_loop as service;

pub use context::{HolePunchServerAddr, MappingContext};
pub use endpoint::{MappedSocketAddr, Protocol};
pub use error::{Error, TechniqueError};
pub use mapping::{Lease, PortMappings, TechniqueOutcome};
pub use names::ServerName;
pub use rendezvous::{PrivRendezvousInfo, PubRendezvousInfo, gen_rendezvous_info};
pub use tcp::MappedTcpSocket;
pub use technique::{MappingResult, MappingTechnique, TechniqueMapping, Transmit, UdpExchange};
pub use udp::MappedUdpSocket;
