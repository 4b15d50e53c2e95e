//! # natt-pcp
//!
//! Port mapping with PCP (RFC 6887) and NAT-PMP (RFC 6886) for natt: the gateway (the default
//! route's router, or one given) is asked to forward a port of ours; PCP first, NAT-PMP when
//! that is all the gateway speaks. A mapping is renewed at half its lifetime while its socket
//! is in use, made again when the gateway restarts, and deleted when released.
//!
//! - [`pcp_wire`], [`natpmp_wire`]: the messages, pure encoding and decoding, with one
//!   [`result_code::ResultCode`] type for both protocols.
//! - [`transaction`]: the protocol logic without sockets ([`transaction::Transaction`], a
//!   [`natt_core::UdpExchange`]): fallback, matching replies, retransmissions
//!   ([`retransmit`]), gateway restarts ([`epoch`]). These modules and the messages' are
//!   protocol cores: given the time, the nonce and the jitter's generator by the driver.
//! - [`PcpTechnique`]: the [`natt_core::MappingTechnique`], which runs transactions with
//!   natt-core's receive loop on a socket connected to the gateway, holding each mapping with
//!   a [`PcpLease`].
//! - [`ask_gateway()`]: which protocol a gateway answers, without mapping.
//!
//! Endpoints it finds are open (not `nat_restricted`) and named `pcp` or `nat-pmp` after the
//! protocol that made the mapping. For a dual-stack socket (`natt_core::family`) on a host
//! with global IPv6 it also asks the IPv6 default route's router for a PCP MAP of the host's
//! IPv6 address, at the same time: a firewall pinhole, held in the same lease
//! ([`PcpTechnique::pinhole`]). Give a gateway explicitly with
//! `HolePunchServerAddr::Other { kind: "pcp".into(), addr }` (kind `nat-pmp` for NAT-PMP
//! only); otherwise the default route's router is used (Linux: `/proc/net/route`).
//!
//! Examples of the items that the `natt` facade re-exports are written with `natt::` paths,
//! as its users write them, and are compiled by natt's doc tests (they are in `doc/`).

pub mod announce;
mod driver;
pub mod epoch;
pub mod error;
pub mod gateway;
pub mod lease;
pub mod natpmp_wire;
pub mod pcp_wire;
pub mod result_code;
pub mod retransmit;
pub mod technique;
pub mod transaction;

/// The old name of [`transaction`]: it holds a transaction with a gateway, not a client.
#[doc(hidden)]
pub use transaction as client;

#[cfg(test)]
mod noise;

/// The old name of [`announce`].
#[doc(hidden)]
pub use announce as probe;
/// The old name of [`ask_gateway`].
#[doc(hidden)]
pub use announce::ask_gateway as probe;
pub use announce::{GatewayAnswer, ask_gateway};
pub use error::PcpError;
pub use gateway::default_gateway;
pub use lease::{LeaseStatus, PcpLease};
pub use technique::{KIND_NAT_PMP, KIND_PCP, NAME, PcpConfig, PcpTechnique};
pub use transaction::Version;
