//! # natt-stun
//!
//! STUN (RFC 8489) for natt: learning a socket's reflexive address from STUN servers over UDP
//! and TCP, NAT behaviour discovery (RFC 5780), and a STUN server.
//!
//! - [`message`]: Binding requests and responses, pure encode/decode on `stun_codec`.
//! - [`transaction`]: one Binding transaction and its RFC 8489 retransmission schedule.
//! - [`StunTechnique`]: the client, a [`natt_core::MappingTechnique`].
//! - [`behaviour`]: NAT behaviour discovery (RFC 5780), [`discover_udp`].
//! - [`StunServer`]: a STUN server (RFC 5780 with two addresses) that can share its ports with
//!   another protocol.
//!
//! Examples of the items that the `natt` facade re-exports are written with `natt::` paths,
//! as its users write them, and are compiled by natt's doc tests (they are in `doc/`).

pub mod behaviour;
pub mod client;
pub mod message;
pub mod server;
pub mod transaction;

pub use behaviour::{Behaviour, NatBehaviour, discover_udp};
pub use client::{StunExchange, StunTechnique};
pub use server::{OtherProtocol, StunServer};
