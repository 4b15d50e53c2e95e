//! [`connect_tcp`]: connecting over TCP with fallback. The direct TCP punch and the paths
//! through TURN relays (RFC 6062) run at once, as one punch (natt-punch's
//! [`tcp_punch_hole_with_relay`]):
//!
//! - a side whose mapped TCP socket has a `turn` endpoint (an RFC 6062 TCP allocation, made
//!   by the `turn` technique while mapping) installs permissions for the peer's IPs and
//!   accepts the peer's connections through the relay (ConnectionAttempt, then a data
//!   connection bound to it with ConnectionBind: a plain `TcpStream` to the peer);
//! - every side connects with plain TCP to the peer's `turn` endpoint (its relayed address)
//!   as to any other endpoint, so one relay on one side is enough.
//!
//! Every stream runs the punch's signed handshake, bound to the stream: on a stream from our
//! relay the peer must have seen us at our relayed address, on the others at an address of
//! ours that is not a relay's. Neither the relay nor anyone else can complete a connection as
//! the peer. A relayed stream is taken only once the peer's hello arrived on it and no direct
//! stream came up [`RELAY_GRACE`](natt_punch::choose::RELAY_GRACE) (300 ms) later: direct
//! first, as for UDP.
//!
//! ```no_run
//! use natt::connect::{Path, connect_tcp};
//! use natt::{gen_rendezvous_info, HolePunchServerAddr, MappedTcpSocket, MappingContext, TurnCredentials};
//! use std::io::Write;
//! use std::time::{Duration, Instant};
//! # fn receive_their_token() -> String { String::new() }
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let password = std::env::var("TURN_PASSWORD").unwrap_or_default();
//! let mc = MappingContext::builder()
//!     .servers([
//!         HolePunchServerAddr::parse_stun("stun.example.org")?,
//!         HolePunchServerAddr::parse_turn("turn:203.0.113.30:3478", TurnCredentials::new("me", password))?,
//!     ])
//!     .build()?;
//! // The relayed address (an RFC 6062 TCP allocation) is one of the socket's endpoints.
//! let MappedTcpSocket { socket, endpoints, port_mappings } = MappedTcpSocket::new(&mc)?;
//! let (ours, public) = gen_rendezvous_info(endpoints);
//! println!("{public}");
//! let theirs = receive_their_token().parse()?;
//! let deadline = Instant::now() + Duration::from_secs(10);
//! let mut connection = connect_tcp(socket, port_mappings, ours, theirs, deadline)?;
//! if let Path::Relayed { relay, .. } = connection.path() {
//!     println!("through the relay {relay} (it moves to a direct stream if one opens)");
//! }
//! connection.write_all(b"hello")?;
//! // Closes the stream and deletes the allocation and the router mappings.
//! connection.close();
//! # Ok(())
//! # }
//! ```
//!
//! The [`TcpConnection`] is read and written with [`Read`](std::io::Read) and
//! [`Write`](std::io::Write); a relayed one goes on punching for a direct stream in the
//! background and moves to it without losing a byte (see [`super::tcp_connection`]).

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Sender};
use std::thread;
use std::time::Instant;

use socket2::Socket;

use natt_core::PortMappings;
use natt_core::rendezvous::{PrivRendezvousInfo, PubRendezvousInfo};
use natt_core::udp::STOP_POLL;
use natt_punch::keys::SessionKeys;
use natt_punch::path::Paths;
use natt_punch::{PunchError, RelayedStream, Route, tcp_punch_hole_with_relay};
use natt_turn::{RelayLink, with_relay};

use super::tcp_connection::TcpConnection;
use super::udp::Path;

/// Connects to the peer over TCP with fallback (see the module documentation) by `deadline`:
/// `socket` and `port_mappings` come from a `MappedTcpSocket` (with a `turn` server among the
/// context's servers for a relay of our own), the rendezvous information from
/// [`gen_rendezvous_info`](crate::gen_rendezvous_info) and the peer. The direct TCP punch
/// and the relayed paths are tried at once; the result says which path won. A relayed
/// connection goes on punching for a direct stream and moves to it (module documentation).
pub fn connect_tcp(
    socket: Socket,
    port_mappings: PortMappings,
    our_priv_rendezvous_info: PrivRendezvousInfo,
    their_pub_rendezvous_info: PubRendezvousInfo,
    deadline: Instant,
) -> Result<TcpConnection, PunchError> {
    if deadline <= Instant::now() {
        return Err(PunchError::DeadlinePassed);
    }
    let keys = SessionKeys::new(&our_priv_rendezvous_info, &their_pub_rendezvous_info)?;
    let local = socket
        .local_addr()?
        .as_socket()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "not an IP socket"))?;
    // For the background punch if the connection is relayed.
    let search = (
        local,
        our_priv_rendezvous_info.clone(),
        their_pub_rendezvous_info.clone(),
    );
    let relay = with_relay(&port_mappings, |r| r.is_allocated().then(|| r.link()))
        .flatten()
        .filter(RelayLink::is_tcp_relay);
    let relayed = relay.as_ref().and_then(RelayLink::relayed_addr);
    let (tx, rx) = mpsc::channel();
    let stop = Arc::new(AtomicBool::new(false));
    if let Some(relay) = relay {
        let mut ips: Vec<std::net::IpAddr> = their_pub_rendezvous_info
            .endpoints
            .iter()
            .map(|e| natt_core::family::canonical(e.addr).ip())
            .collect();
        ips.sort();
        ips.dedup();
        for ip in ips {
            if let Err(e) = relay.start_permission(SocketAddr::new(ip, 0)) {
                log::debug!("fallback: no permission for {ip} on the relay: {e}");
            }
        }
        let stop = Arc::clone(&stop);
        thread::Builder::new()
            .name("natt-fallback-tcp".into())
            .spawn(move || accept_through(&relay, &tx, &stop, deadline))?;
    }
    log::debug!("fallback: connecting over TCP (relayed {relayed:?})");
    let punched = tcp_punch_hole_with_relay(
        socket,
        our_priv_rendezvous_info,
        their_pub_rendezvous_info,
        deadline,
        rx,
    );
    stop.store(true, Ordering::Relaxed);
    let punched = punched?;
    let remote = punched.remote;
    let path = match punched.route {
        Route::OwnRelay => Path::Relayed {
            relay: relayed.unwrap_or(remote),
            ours: true,
            peer: remote,
        },
        Route::PeerRelay => Path::Relayed {
            relay: remote,
            ours: false,
            peer: remote,
        },
        _ => Path::Direct { peer: remote },
    };
    log::info!("fallback: connected over TCP: {path:?}");
    let connection = match path {
        Path::Direct { peer } => TcpConnection::direct(punched.stream, peer, keys, port_mappings)?,
        Path::Relayed { .. } => {
            let (local, ours, theirs) = search;
            let paths = Paths::new(local, &ours.endpoints, &theirs.endpoints)?;
            // Only when the peer has a direct endpoint to punch to.
            let direct_targets = paths.targets().iter().any(|t| !paths.is_relayed_target(*t));
            let search = direct_targets.then_some((local, ours, theirs));
            TcpConnection::relayed(punched.stream, path, keys, paths, search, port_mappings)?
        }
    };
    Ok(connection)
}

/// Accepts the peer's connections through our relay (RFC 6062) and hands them to the punch,
/// until it is over.
fn accept_through(relay: &RelayLink, punch: &Sender<RelayedStream>, stop: &AtomicBool, deadline: Instant) {
    while !stop.load(Ordering::Relaxed) && !relay.is_closed() {
        let now = Instant::now();
        if now >= deadline {
            return;
        }
        match relay.accept_tcp((now + STOP_POLL).min(deadline), deadline) {
            Ok(Some((peer, stream))) => {
                log::debug!("fallback: {peer} connected through the relay");
                if punch.send(RelayedStream { stream, peer }).is_err() {
                    return;
                }
            }
            Ok(None) => {}
            Err(e) => {
                log::debug!("fallback: a connection through the relay failed: {e}");
                thread::sleep(natt_core::deadline::MIN_WAIT);
            }
        }
    }
}
