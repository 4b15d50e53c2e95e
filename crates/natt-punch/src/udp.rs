//! UDP hole punching on a socket: [`PunchedUdpSocket::punch_hole`] drives the socket-free
//! [`UdpPuncher`] on a mapped socket with natt-core's receive loop,
//! giving it the time and a random generator seeded from the system.

use std::net::{SocketAddr, UdpSocket};
use std::time::Instant;

use rand::SeedableRng;
use rand::rngs::StdRng;

use natt_core::rendezvous::{PrivRendezvousInfo, PubRendezvousInfo};

use crate::error::{NoPath, PunchError};
use crate::keys::SessionKeys;
use crate::path::Paths;
pub use crate::puncher::UdpPuncher;
pub use crate::puncher::{FIRST_INTERVAL, IPV6_GRACE, MAX_INTERVAL, MAX_PER_SECOND, MAX_ROUNDS, ROUNDS};

/// A UDP socket that has been hole punched.
#[derive(Debug)]
pub struct PunchedUdpSocket {
    /// The socket (dual-stack when it was mapped so: send to an IPv4 `peer_addr` on it at
    /// `natt_core::family::for_socket(local, peer_addr)` where the system needs the mapped form;
    /// Linux takes either).
    pub socket: UdpSocket,
    /// The peer's address that works: IPv6 when an IPv6 path worked, else plain IPv4.
    pub peer_addr: SocketAddr,
}

impl PunchedUdpSocket {
    /// Punches a hole from `socket` (a mapped socket whose endpoints went into our public
    /// rendezvous info) to the peer, returning by `deadline`.
    ///
    /// Only the peer holding the rendezvous info matching `our_priv_rendezvous_info` and
    /// `their_pub_rendezvous_info` can complete the punch. A few of the peer's punch datagrams
    /// may still arrive after it returns: recognise them with [`crate::is_punch_packet`] and
    /// discard them.
    ///
    #[cfg_attr(not(doctest), doc = include_str!("../doc/punch_hole.md"))]
    pub fn punch_hole(
        socket: UdpSocket,
        our_priv_rendezvous_info: PrivRendezvousInfo,
        their_pub_rendezvous_info: PubRendezvousInfo,
        deadline: Instant,
    ) -> Result<PunchedUdpSocket, PunchError> {
        if deadline <= Instant::now() {
            return Err(PunchError::DeadlinePassed);
        }
        let local = socket.local_addr()?;
        let keys = SessionKeys::new(&our_priv_rendezvous_info, &their_pub_rendezvous_info)?;
        let paths = Paths::new(
            local,
            &our_priv_rendezvous_info.endpoints,
            &their_pub_rendezvous_info.endpoints,
        )?;
        let mut puncher = UdpPuncher::new(keys, paths, Instant::now(), StdRng::from_os_rng());
        natt_core::udp::drive(&socket, &mut [&mut puncher], deadline).map_err(|e| match e {
            natt_core::Error::Io(io) => PunchError::Io(io),
            other => PunchError::TimedOut(NoPath::Other(other.to_string())),
        })?;
        match puncher.peer() {
            Some(peer_addr) => {
                log::info!("punched {local} <-> {peer_addr}");
                Ok(PunchedUdpSocket { socket, peer_addr })
            }
            None => Err(PunchError::TimedOut(puncher.diagnosis())),
        }
    }
}
