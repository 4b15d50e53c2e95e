//! # natt-punch
//!
//! Rendezvous, UDP hole punching and TCP simultaneous open for natt: two peers, each with the
//! other's rendezvous information ([`natt_core::rendezvous`]), end up with a working
//! connection through their NATs.
//!
//! - [`PunchedUdpSocket::punch_hole`]: UDP, probing every peer endpoint at once ([`udp`]).
//! - [`tcp_punch_hole`]: TCP simultaneous open from the mapped port, with accepting on it too
//!   ([`tcp`]).
//!
//! Every punch message is authenticated with keys derived from both peers' 128-bit secrets
//! ([`keys`]), so only the peer holding the matching rendezvous information can complete a
//! punch; packets of anyone else, of earlier sessions, or reflected, are ignored.

pub mod error;
pub mod keys;
pub mod tcp;
pub mod tcp_wire;
pub mod udp;
pub mod udp_wire;

pub use error::PunchError;
pub use natt_core::rendezvous::{PrivRendezvousInfo, PubRendezvousInfo, gen_rendezvous_info};
pub use tcp::tcp_punch_hole;
pub use udp::PunchedUdpSocket;
pub use udp_wire::is_punch_packet;
