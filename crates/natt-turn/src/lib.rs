//! # natt-turn
//!
//! TURN (RFC 8656) for natt: a relayed UDP address on a TURN server (coturn, say) for a host
//! whose NAT or firewall no punch gets through.
//!
//! - [`allocation`]: [`Allocation`], the TURN client without sockets (a protocol core:
//!   allocate with long-term credentials, refresh, permissions, channels, data).
//! - [`message`] and [`channel_data`]: the messages, on `stun_codec`, and ChannelData framing.
//! - [`relay`]: [`Relay`], the blocking handle of an allocation made from a given UDP socket,
//!   or over TCP to the server.
//! - [`technique`]: [`TurnTechnique`], the `turn` mapping technique: the relayed address is one
//!   more endpoint of the mapped UDP socket, held as a lease in its `PortMappings`; for a
//!   mapped TCP socket, an RFC 6062 TCP allocation (over TCP to the server), its relayed
//!   address an endpoint of the TCP socket, held the same way.
//!
//! ## Using a relay next to direct traffic
//!
//! An allocation made on a UDP socket lives in the server as the socket's 5-tuple, so all its
//! traffic goes from and to that socket, next to whatever else the socket carries (a punch,
//! direct datagrams to a peer). The [`Relay`] handle is made for that:
//!
//! 1. **Allocate from the socket**: [`Relay::allocate_udp`]`(&socket, server, credentials,
//!    config, deadline)` (the handle sends from a clone of the socket), or take the relay that
//!    the `turn` technique made while mapping it: [`with_relay`]`(&port_mappings, |relay| ...)`.
//! 2. **Add the peer, send and receive**: [`Relay::add_peer`] installs a permission and binds a
//!    channel; [`Relay::send_to`] sends a payload to the peer through the relay (as a Send
//!    indication until the channel is bound, then as ChannelData). The peer sees it come from
//!    [`Relay::relayed_addr`].
//! 3. **Demultiplex what arrives on the socket**: give every datagram received on the socket
//!    to [`Relay::handle_datagram`]`(from, bytes)`: [`Input::NotFromServer`] is direct
//!    traffic (anything not from the TURN server's address), [`Input::Data`] is a peer's
//!    payload through the relay (with the peer's address), [`Input::Control`] and
//!    [`Input::Ignored`] are the relay's own. Only datagrams from the server's address are
//!    looked at, so a peer's direct datagrams are never mistaken for relayed ones, whatever
//!    their first bytes.
//! 4. **Keep it alive**: the handle's thread refreshes the allocation at half its lifetime,
//!    permissions every 4 minutes and channels every 9, while the handle lives; the answers
//!    reach it through step 3. While nothing reads the socket, call
//!    [`Relay::read_socket_itself`]: the thread then reads the answers itself during its
//!    refreshes (and drops other datagrams that arrive meanwhile).
//! 5. **Release**: [`Relay::release`] (or dropping the handle) deletes the allocation (a
//!    Refresh with lifetime 0) and waits for the server's answer, bounded.
//!
//! Over TCP ([`Relay::allocate_tcp`], `turn:...?transport=tcp`) the handle owns the stream:
//! it reads it on a thread of its own, and [`Relay::recv_timeout`] gives the peers' data.
//!
//! ## TCP relaying (RFC 6062)
//!
//! A relay allocated over TCP with [`Config::tcp_relay`] relays TCP: [`Relay::connect_tcp`]
//! has the server connect to a peer from the relayed address (Connect), and
//! [`Relay::accept_tcp`] takes a peer that connected to it (ConnectionAttempt); either binds
//! a new connection to the server to the peer's (ConnectionBind) and returns it, a plain
//! `TcpStream` that carries the peer's bytes. [`RelayLink::accept_tcp`] does the same without
//! holding the handle (natt's `connect::tcp` accepts peers so while the handle stays in the
//! socket's `PortMappings`). coturn ends such a connection as a whole when
//! the client half-closes it (shuts down its sending side).

pub mod allocation;
pub mod channel_data;
pub mod error;
pub mod message;
pub mod relay;
pub mod technique;

pub use allocation::{Allocated, Allocation, Config, Event, Input, State};
pub use error::TurnError;
pub use natt_core::turn::{TurnCredentials, TurnTransport};
pub use relay::{Relay, RelayLink, with_relay};
pub use technique::{NAME, TurnTechnique};
