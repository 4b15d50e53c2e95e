//! Connecting with fallback (features `punch` and `turn`):
//! [`UdpConnection::connect`](crate::connect::UdpConnection::connect) tries the direct paths
//! and a TURN relay's path at once, prefers direct, and returns a connection that sends and
//! receives through whichever path won.
//!
//! - [`race`](crate::connect::race): [`Race`](crate::connect::Race), the decision without
//!   sockets: the punch (natt-punch's [`UdpPuncher`](crate::punch::puncher::UdpPuncher), its
//!   signed messages unchanged) run on a direct lane, on a lane to the peer's relayed address
//!   and on a lane through our own allocation; which path wins and when the connection moves
//!   to a direct one.
//! - [`udp`](crate::connect::udp): [`UdpConnection`](crate::connect::UdpConnection), its
//!   driver on a mapped socket: threads that read the socket (and the relay's TCP stream),
//!   `send` and `recv` that frame relayed data, the move to a direct path while connected, the
//!   allocation released on drop.
//!
//! - [`tcp`](crate::connect::tcp): [`connect_tcp`](crate::connect::connect_tcp), the same
//!   over TCP: the direct TCP punch and streams through TURN relays (RFC 6062) at once, the
//!   punch's signed handshake on each, direct first.
//! - [`tcp_connection`](crate::connect::tcp_connection):
//!   [`TcpConnection`](crate::connect::TcpConnection), read and written with `Read` and
//!   `Write`; a relayed one carries natt's records
//!   ([`natt_punch::records`](crate::punch::records)), moves to a direct stream when the
//!   background punch finds one, ends one direction and closes without losing a byte.
//!
//! A side with a relay maps its socket with a `turn` server among the context's servers
//! ([`HolePunchServerAddr::parse_turn`](crate::HolePunchServerAddr::parse_turn)): the relayed
//! address is then one of its token's endpoints and the allocation one of its port mappings.
//! The peer needs no relay of its own: it reaches that relayed address with plain UDP. A side
//! whose network lets no UDP out reaches its relay over TCP (`?transport=tcp`) and still gets
//! a UDP path to the peer.
//!
//! A relayed path is taken only when no direct path is done
//! [`RELAY_GRACE`](crate::connect::RELAY_GRACE) (10 ms) after it
//! ([`DIRECT_PATIENCE`](crate::connect::DIRECT_PATIENCE), 300 ms, when a direct path is half
//! open), and while relayed the direct punch goes on in the background, bounded by its rate
//! caps and rounds and restarted [`DIRECT_RESTARTS`](crate::connect::DIRECT_RESTARTS) times;
//! the connection moves to the direct path when it opens, taking data from both paths
//! meanwhile. The peer is still authenticated end to end: a relayed path, like a direct one,
//! confirms only by the peer's signed replies.
//!
//! Through a symmetric NAT on one side and a filtering one on the other, the direct lane is
//! natt-punch's birthday method ([`natt_punch::birthday`](crate::punch::birthday)): the easy
//! side's direct lane also sprays the peer's IP; the hard side runs 255 more sockets beside the
//! mapped one, and the one that meets the peer becomes the direct path
//! ([`Via::Birthday`](crate::connect::race::Via::Birthday)). A confirmed relayed path waits
//! [`BIRTHDAY_PATIENCE`](crate::connect::BIRTHDAY_PATIENCE) from the start for it.
//! Two symmetric sides with no relay at all fail after 2 s with
//! `NoPath::BothSymmetric`, as the plain punch does.

pub mod race;
pub mod tcp;
pub mod tcp_connection;
pub mod udp;

pub use race::{BIRTHDAY_PATIENCE, DIRECT_PATIENCE, DIRECT_RESTARTS, DIRECT_RETRY, PEER_RELAY_HOLD, RELAY_GRACE, Race};
pub use tcp::connect_tcp;
pub use tcp_connection::{CLOSE_WAIT, DIRECT_TCP_TRY, MOVE_WAIT, READY_WAIT, TcpConnection};
pub use udp::{Path, UdpConnection};
