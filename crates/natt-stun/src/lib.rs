//! # natt-stun
//!
//! STUN (RFC 8489) for natt: learning a socket's reflexive address from STUN servers over UDP
//! and TCP, NAT behaviour discovery (RFC 5780), and a STUN server.
//!
//! - [`message`]: Binding requests and responses, pure encode/decode on `stun_codec`.
//! - [`transaction`]: one Binding transaction and its RFC 8489 retransmission schedule.
//! - [`exchange`]: [`StunExchange`], the client over UDP without the socket (a protocol core).
//! - [`StunTechnique`]: the client, a [`natt_core::MappingTechnique`], the exchange's driver.
//! - [`behaviour`]: NAT behaviour discovery (RFC 5780): the probes, socket-free; [`discover`]:
//!   their drivers, [`discover_udp`].
//! - [`StunServer`]: a STUN server (RFC 5780 with two addresses) that can share its ports with
//!   another protocol.
//!
//! Examples of the items that the `natt` facade re-exports are written with `natt::` paths,
//! as its users write them, and are compiled by natt's doc tests (they are in `doc/`).

pub mod behaviour;
pub mod client;
pub mod discover;
pub mod exchange;
pub mod message;
pub mod server;
pub mod transaction;

pub use behaviour::{Behaviour, NatBehaviour, discover_udp};
pub use client::StunTechnique;
pub use exchange::{FilterWindow, StunExchange};
pub use server::{OtherProtocol, StunServer};
