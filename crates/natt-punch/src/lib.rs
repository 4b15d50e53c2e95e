//! # natt-punch
//!
//! Rendezvous, UDP hole punching and TCP simultaneous open for natt: two peers, each with the
//! other's rendezvous information ([`natt_core::rendezvous`]), end up with a working
//! connection through their NATs.
//!
//! - [`PunchedUdpSocket::punch_hole`]: UDP, probing every peer endpoint at once ([`udp`]);
//!   through a symmetric NAT on one side, with the birthday method ([`birthday`]).
//! - [`tcp_punch_hole`]: TCP simultaneous open from the mapped port, with accepting on it too
//!   ([`tcp`]); [`tcp_punch_hole_with_relay`] adds streams through TURN relays as a fallback
//!   (natt's `connect::tcp` drives it).
//!
//! Both punches try IPv6 and IPv4 paths at once from one dual-stack socket (see
//! `natt_core::family`) and take IPv6 when both work: an IPv4 path waits at most
//! [`IPV6_GRACE`] for an IPv6 one, and only when the peer has IPv6 endpoints. Which family
//! won is the family of the peer's address (`peer_addr`, the stream's far end), IPv4 always
//! shown as plain IPv4.
//!
//! Every punch message is authenticated with keys derived from both peers' 128-bit secrets
//! ([`keys`]), and bound to the path it was sent on ([`wire`], [`path`]), so only the peer
//! holding the matching rendezvous information can complete a punch; packets of anyone else,
//! of earlier sessions, reflected, replayed from elsewhere or relayed, are ignored.
//!
//! Examples of the items that the `natt` facade re-exports are written with `natt::` paths,
//! as its users write them, and are compiled by natt's doc tests (they are in `doc/`).

pub mod birthday;
pub mod choose;
pub mod error;
pub mod keys;
pub mod path;
pub mod puncher;
pub mod records;
pub mod tcp;
pub mod udp;
pub mod wire;

pub use error::{NoPath, PunchError};
pub use natt_core::rendezvous::{PrivRendezvousInfo, PubRendezvousInfo, gen_rendezvous_info};
pub use puncher::IPV6_GRACE;
pub use tcp::{RelayedStream, Route, TcpPunched, tcp_punch_direct, tcp_punch_hole, tcp_punch_hole_with_relay};
pub use udp::PunchedUdpSocket;
pub use wire::is_punch_packet;
