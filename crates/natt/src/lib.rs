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
//! | `upnp`   | `natt-upnp`   | UPnP IGD port mapping (IGD:1 and IGD:2), renewed leases  |
//! | `pcp`    | `natt-pcp`    | PCP (RFC 6887) and NAT-PMP (RFC 6886) port mapping       |
//! | `punch`  | `natt-punch`  | rendezvous, UDP hole punching, TCP simultaneous open     |
//! | `turn`   | `natt-turn`   | TURN (RFC 8656) relayed addresses, the relay handle      |
//!
//! All features are on by default. [`MappingContext::new`] registers every technique compiled
//! in; [`MappingContext::builder`] chooses techniques, their settings, servers and the
//! mapping timeout. Third-party techniques implement [`MappingTechnique`] and are added with
//! [`Builder::technique`].
//!
//! The original design's usage example, nearly verbatim (made fallible, with a deadline, and
//! with the port mappings kept alive while the socket is in use):
//!
//! ```no_run
//! # #[cfg(feature = "punch")]
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use natt::{gen_rendezvous_info, is_punch_packet, HolePunchServerAddr, MappedUdpSocket, MappingContext, PunchedUdpSocket};
//! use std::time::{Duration, Instant};
//! # fn receive_their_token() -> String { String::new() }
//!
//! // First, one needs a `MappingContext` to do the port mapping with.
//! let mc = MappingContext::new()?;
//!
//! // Optionally, they can inform the context about any external port-mapping servers they
//! // know about (203.0.113.10 is a placeholder: your `natt serve` host, for example, given
//! // as `HolePunchServerAddr::parse_simple("natt.example.org")?`).
//! let some_well_known_server = HolePunchServerAddr::Stun("203.0.113.10:3478".parse()?);
//! mc.add_servers([some_well_known_server]);
//!
//! // Now they create a mapped udp socket to use for the connection.
//! let mapped_socket = MappedUdpSocket::new(&mc)?;
//!
//! // A mapped socket consists of a socket, a list of endpoints, and the port mappings made on
//! // routers (renewed while `port_mappings` lives, deleted when it is dropped or released).
//! // `release()` waits until the routers have deleted them: call it before the program exits.
//! let MappedUdpSocket { socket, endpoints, mut port_mappings } = mapped_socket;
//!
//! // Next, they create a `PrivRendezvousInfo`, `PubRendezvousInfo` pair from the socket's
//! // endpoints.
//! let (our_priv_rendezvous_info, our_pub_rendezvous_info) = gen_rendezvous_info(endpoints);
//!
//! // Now, the peers share their public rendezvous info out-of-band somehow, for example as
//! // text tokens. A token holds the punch's secret: send it over a channel an attacker
//! // cannot read.
//! println!("{our_pub_rendezvous_info}");
//! let their_pub_rendezvous_info = receive_their_token().parse()?;
//!
//! // Now they do the hole-punching. Both sides punch at once: the peer must have our token
//! // and start its punch within this deadline's window.
//! let deadline = Instant::now() + Duration::from_secs(10);
//! let punched_udp_socket =
//!     PunchedUdpSocket::punch_hole(socket, our_priv_rendezvous_info, their_pub_rendezvous_info, deadline)?;
//!
//! // Extract the socket and peer address.
//! let PunchedUdpSocket { socket, peer_addr } = punched_udp_socket;
//!
//! // Congratulations! `socket` is a `UdpSocket` that can be used to talk to `peer_addr`
//! // through NATs and firewalls.
//! socket.send_to(b"hello", peer_addr)?;
//!
//! // The peer's last few punch datagrams may still arrive after the punch: skip them.
//! let mut buf = [0; 1500];
//! let n = loop {
//!     let (n, from) = socket.recv_from(&mut buf)?;
//!     if from == peer_addr && !is_punch_packet(&buf[..n]) {
//!         break n;
//!     }
//! };
//! println!("the peer says {}", String::from_utf8_lossy(&buf[..n]));
//!
//! // Delete the router mappings (renewed until now) and wait for that. An early return (a
//! // `?` above) drops `port_mappings` instead, which deletes them too but may not wait: a
//! // slow UPnP gateway's deletion is cut short when the process exits, and the mapping stays
//! // until its lease runs out. A program that exits on an error releases on that path too.
//! port_mappings.release();
//! # Ok(())
//! # }
//! # #[cfg(not(feature = "punch"))]
//! # fn main() {}
//! ```
//!
//! Servers known by name are given as `HOST[:PORT]` with
//! [`HolePunchServerAddr::parse_stun`] and [`HolePunchServerAddr::parse_simple`] (default
//! ports 3478 and 5483; see [`ServerName`]): names are resolved each time a socket is mapped,
//! at the same time as the other techniques and within the mapping timeout
//! ([`mc.timeout()`](crate::core::MappingContext::timeout), 3 s by default); one that does not
//! resolve fails its technique with an error naming it
//! ([`TechniqueError::Resolve`]).
//!
//! ```
//! use natt::{HolePunchServerAddr, MappingContext};
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let mc = MappingContext::builder()
//!     .servers([
//!         HolePunchServerAddr::parse_stun("stun.example.org")?,
//!         HolePunchServerAddr::parse_simple("[2001:db8::20]:5483")?,
//!     ])
//!     .build()?;
//! # Ok(())
//! # }
//! ```
//!
//! A `natt serve` answers the simple protocol and STUN on one port, 5483 by default: give it
//! with `parse_simple("HOST")`, or with `parse_stun("HOST:5483")` (STUN's default port, 3478,
//! is not where it listens).
//!
//! Every example on this page and on the items re-exported at its root (such as
//! [`MappedUdpSocket`] or [`PunchedUdpSocket::punch_hole`]) compiles with `natt` as the
//! program's only dependency ([`socket2`] and the token format's [`rendezvous`] module are
//! re-exported here). The crate modules ([`core`], [`simple`], [`stun`], [`upnp`], [`pcp`],
//! [`punch`]) show those crates' own pages, written for technique authors: their examples
//! name the crates directly, and `natt_core::x` there is `natt::core::x` to a user of natt.
//!
//! ## Late punch packets
//!
//! When [`PunchedUdpSocket::punch_hole`] returns, the peer may still be sending its last punch
//! datagrams (1 to 5 of them on a 200 ms path), and their answers to ours may still be on the
//! way. They reach the socket like any datagram: [`is_punch_packet`] tells them apart, as
//! above. It is true for any datagram of exactly 64 bytes that starts with the bytes `NATP`
//! (a punch message's size and magic, of any session), so an application protocol on the
//! punched socket should not send such datagrams.
//! [`tcp_punch_hole`]'s stream carries nothing of the punch.
//!
//! ## Symmetric NATs
//!
//! When our NAT gives each destination its own port (mapping with two STUN or simple servers
//! sees that, and the token says it) and the peer's filters, [`PunchedUdpSocket::punch_hole`]
//! uses the birthday method (`natt::punch::birthday`): the socket it returns may then be
//! another than the one given, one of 256 bound on its IP. Two symmetric sides get
//! `PunchError::NoDirectPath` after 2 s. The README's "Hard NATs" says what it costs.
//!
//! ## What mapping waits for
//!
//! [`MappedUdpSocket::new`] and [`MappedTcpSocket::new`] run every technique at once and return
//! when all have finished, or at the mapping timeout: **3 s** by default
//! ([`Builder::timeout`]; the command line's `--timeout`, and `--map-timeout` for
//! `natt punch`), or sooner once what can be known is known: when a technique has found an
//! external endpoint, the port-mapping techniques (UPnP, PCP / NAT-PMP) still running get
//! **250 ms** more ([`natt_core::mapping::GATEWAY_GRACE`]; a gateway that answers takes about
//! 10 to 80 ms on a LAN), then the mapping returns without them. They go on in the background
//! until the mapping timeout: a port mapping that comes then is held with the socket's
//! [`PortMappings`] (renewed, deleted on release or drop) and its endpoint is added by
//! [`MappedUdpSocket::refresh`] (or [`PortMappings::take_late`]), to call before
//! [`gen_rendezvous_info`] when time has passed; once the mappings were released or dropped, it
//! is deleted as soon as it comes ([`PortMappings::release`] waits for those techniques first,
//! at most until the mapping timeout, so that a program that exits leaves none behind). Their
//! outcome meanwhile is [`TechniqueError::InBackground`]. They return `Ok` even when no technique found an external address: the
//! endpoints are then the socket's local addresses,
//! [`port_mappings.why_no_external()`](PortMappings::why_no_external) says why in one line,
//! and [`port_mappings.outcomes()`](PortMappings::outcomes) what each technique found or why
//! not. What the techniques cost:
//!
//! - **UPnP** searches for the gateway (SSDP) unless its URL is given
//!   ([`HolePunchServerAddr::IgdGateway`]). A router that runs no UPnP service usually refuses
//!   the search at once (an ICMP "port unreachable"), which ends it; one that stays silent
//!   costs the search's whole window, **1.5 s** ([`UpnpConfig::search_window`]). A search that
//!   nothing answered is not repeated for 30 s. A gateway found is remembered by the context,
//!   so later mappings skip the search.
//! - **PCP / NAT-PMP** ask the default route's router; one that neither answers nor refuses
//!   (with an ICMP "port unreachable") is asked until the mapping timeout, in the background
//!   once another technique found an external endpoint (see above).
//! - **STUN** and the **simple** protocol ask the servers given with
//!   [`Builder::servers`] (none by default: without one they do nothing). A server that does
//!   not answer is asked until the mapping timeout; once
//!   one has answered, the others get 3 round trips (at least 100 ms). A STUN server with two
//!   addresses (RFC 5780) is also asked to answer from its other address, to learn whether the
//!   NAT filters: that answer, when the NAT lets it in, comes about one round trip after the
//!   request, so the check waits **1 round trip + 5 ms** ([`FilterWindow::DEFAULT`], the round
//!   trip measured by the first answer), which is its whole cost behind a NAT that filters. An
//!   answer that comes later is missed and the endpoint is then `nat_restricted`: the safe
//!   side, since hole punching is then attempted, and it works with any NAT. A program that
//!   needs the filtering verdict to be surer sets a longer window with
//!   [`Builder::stun_filter_window`] (e.g. [`FilterWindow::PATIENT`], 4 round trips + 250 ms,
//!   or [`StunTechnique::with_filter_window`] on its own technique); the cost is that every
//!   mapping behind a filtering NAT, and so every punch from behind one, waits that whole
//!   window.
//!
//! Leave out what a network does not have with the [`Builder`] of
//! [`MappingContext::builder`] (`.no_upnp()`, `.no_pcp()`), which also takes the servers,
//! each technique's settings and a known UPnP gateway's URL; or `--no-upnp` and `--no-pcp` on
//! the command line.
//!
//! **A side behind a NAT needs its public address in its token**: a STUN or simple server
//! (`natt serve`), or a UPnP or PCP mapping on its router. A punch takes a path only where the
//! peer sees us at one of the addresses our token lists, so without one it reaches only peers
//! on the same network.
//!
//! ## Errors
//!
//! Each call returns its own error type: mapping [`Error`], reading a token [`TokenError`],
//! punching [`PunchError`] (when no path was found, [`PunchError::TimedOut`] carries a
//! [`NoPath`] whose variants a program can match on). All of them print a sentence, with
//! `Display` and with `Debug`
//! alike, so `fn main() -> Result<(), Box<dyn std::error::Error>>` and `?`, as above, print
//! for example `Error: token is damaged: check failed (was it cut or changed while copying?)`.

/// Connecting with fallback: direct paths and a TURN relay's at once, direct preferred.
#[cfg(all(feature = "punch", feature = "turn"))]
#[cfg_attr(not(doctest), doc = include_str!("../doc/connect.md"))]
pub mod connect;
mod context;

pub use context::{Builder, MappingContext};
pub use natt_core::arbiter::GatewayArbiter;
pub use natt_core::rendezvous::{PrivRendezvousInfo, PubRendezvousInfo, TokenError, gen_rendezvous_info};
pub use natt_core::{
    Error, HolePunchServerAddr, Lease, MappedSocketAddr, MappedTcpSocket, MappedUdpSocket, MappingTechnique,
    PortMappings, Protocol, ServerName, TechniqueError, TechniqueMapping, TechniqueOutcome, Transmit, UdpExchange,
};

/// The core crate, for technique authors.
pub use natt_core as core;
pub use natt_core::names::ServerNameError;
/// Rendezvous information and its text token: the format, its limits and its secret.
pub use natt_core::rendezvous;
pub use natt_core::turn::{TurnCredentials, TurnTransport};
/// PCP and NAT-PMP port mapping.
#[cfg(feature = "pcp")]
pub use natt_pcp as pcp;
#[cfg(feature = "pcp")]
pub use natt_pcp::{PcpConfig, PcpError, PcpTechnique};
/// Hole punching.
#[cfg(feature = "punch")]
pub use natt_punch as punch;
#[cfg(feature = "punch")]
pub use natt_punch::{NoPath, PunchError, PunchedUdpSocket, is_punch_packet, tcp_punch_hole};
/// The simple hole-punch protocol.
#[cfg(feature = "simple")]
pub use natt_simple as simple;
#[cfg(feature = "simple")]
pub use natt_simple::{SimpleTcpHolePunchServer, SimpleTechnique, SimpleUdpHolePunchServer};
/// STUN and NAT behaviour discovery.
#[cfg(feature = "stun")]
pub use natt_stun as stun;
#[cfg(feature = "stun")]
pub use natt_stun::{FilterWindow, StunServer, StunTechnique};
/// TURN relays.
#[cfg(feature = "turn")]
pub use natt_turn as turn;
#[cfg(feature = "turn")]
pub use natt_turn::{Relay, TurnError, TurnTechnique, with_relay};
/// UPnP IGD port mapping.
#[cfg(feature = "upnp")]
pub use natt_upnp as upnp;
#[cfg(feature = "upnp")]
pub use natt_upnp::{GatewayInfo, UpnpConfig, UpnpError, UpnpTechnique};
/// The `socket2` crate, whose [`Socket`](socket2::Socket) a [`MappedTcpSocket`] holds and
/// [`tcp_punch_hole`] takes (socket options, listening, converting to a `TcpStream`).
pub use socket2;

/// The examples that natt's pages show on the items it re-exports, and the README's, compiled
/// here, through the facade, with `natt` as their only crate.
///
/// rustdoc shows a re-exported item with the docs of the crate that defines it, and runs an
/// example only as a doc test of that crate, where `natt` is not a dependency (it cannot be:
/// natt depends on that crate). So each such example is a file of its defining crate
/// (`crates/*/doc/*.md`), written with `natt::` paths as a user of natt writes them, shown
/// there with `#[cfg_attr(not(doctest), doc = include_str!(...))]` and tested here;
/// `tests/docs.rs` checks that every such file is listed here and names no other crate, and
/// that the README's library example names none either.
#[cfg(doctest)]
mod shown_examples {
    macro_rules! examples {
        ($(#[$cfg:meta] $group:ident { $($name:ident = $path:literal;)* })*) => {
            $(
                #[$cfg]
                mod $group {
                    $(
                        #[doc = include_str!($path)]
                        struct $name;
                    )*
                }
            )*
        };
    }

    examples! {
        #[cfg(doctest)]
        core {
            MappedUdpSocket = "../../natt-core/doc/mapped_udp_socket.md";
            MappedTcpSocket = "../../natt-core/doc/mapped_tcp_socket.md";
            ArbiterClaim = "../../natt-core/doc/arbiter_claim.md";
            MappedSocketAddr = "../../natt-core/doc/mapped_socket_addr.md";
            MappingTechnique = "../../natt-core/doc/mapping_technique.md";
            GenRendezvousInfo = "../../natt-core/doc/gen_rendezvous_info.md";
            HolePunchServerAddr = "../../natt-core/doc/hole_punch_server_addr.md";
            MappingContext = "../../natt-core/doc/mapping_context.md";
            ServerName = "../../natt-core/doc/server_name.md";
            PortMappingsWhyNoExternal = "../../natt-core/doc/port_mappings_why_no_external.md";
        }
        #[cfg(feature = "punch")]
        punch {
            Readme = "../../../README.md";
            PunchHole = "../../natt-punch/doc/punch_hole.md";
            TcpPunchHole = "../../natt-punch/doc/tcp_punch_hole.md";
        }
        #[cfg(all(feature = "punch", feature = "turn"))]
        connect {
            Connect = "../../natt/doc/connect.md";
        }
        #[cfg(feature = "pcp")]
        pcp {
            PcpTechnique = "../../natt-pcp/doc/pcp_technique.md";
            PcpTechniqueMapping = "../../natt-pcp/doc/pcp_technique_mapping.md";
        }
        #[cfg(feature = "simple")]
        simple {
            SimpleTechnique = "../../natt-simple/doc/simple_technique.md";
            SimpleUdpServer = "../../natt-simple/doc/simple_udp_server.md";
            SimpleTcpServer = "../../natt-simple/doc/simple_tcp_server.md";
        }
        #[cfg(feature = "stun")]
        stun {
            StunTechnique = "../../natt-stun/doc/stun_technique.md";
            StunServer = "../../natt-stun/doc/stun_server.md";
        }
        #[cfg(feature = "upnp")]
        upnp {
            UpnpTechnique = "../../natt-upnp/doc/upnp_technique.md";
        }
    }
}
