//! # natt-stun
//!
//! STUN (RFC 8489) for natt: learning a socket's reflexive address from STUN servers over UDP
//! and TCP, NAT behaviour discovery (RFC 5780), and a STUN server.
//!
//! - [`message`]: Binding requests and responses, pure encode/decode on `stun_codec`.
//! - [`transaction`]: one Binding transaction and its RFC 8489 retransmission schedule.
//! - [`StunTechnique`]: the client, a [`natt_core::MappingTechnique`].

pub mod client;
pub mod message;
pub mod transaction;

pub use client::{StunExchange, StunTechnique};
