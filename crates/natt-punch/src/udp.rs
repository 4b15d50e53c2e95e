//! UDP hole punching on a socket: [`PunchedUdpSocket::punch_hole`] drives the socket-free
//! [`UdpPuncher`] on a mapped socket with natt-core's receive loop,
//! giving it the time and a random generator seeded from the system.
//!
//! When one side is behind a symmetric NAT ([`crate::birthday::plan`]), the easy side's punch
//! also sprays the peer's IP, and the hard side binds [`HARD_SOCKETS`] - 1 more sockets (on the
//! mapped socket's IP) and runs one receive loop per socket, each on a thread of its own
//! ([`natt_core::fanout::scoped`]; std has no way to wait on many sockets at once without
//! `unsafe`). The socket that wins is returned; the others are closed. Two symmetric sides
//! fail after [`BOTH_HARD_WINDOW`] with [`PunchError::NoDirectPath`].

use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::time::Instant;

use rand::SeedableRng;
use rand::rngs::StdRng;

use natt_core::rendezvous::{PrivRendezvousInfo, PubRendezvousInfo};

use crate::birthday::{self, BOTH_HARD_WINDOW, Group, HARD_SOCKETS, Plan};
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
    /// When our NAT's mapping varies by destination and the peer's NAT filters (the rendezvous
    /// infos say so, [`birthday::plan`]), the punch uses the birthday method and the socket
    /// returned may be another than `socket`: one of 256 bound on its IP, the one that met the
    /// peer (`socket` itself is then closed). When both sides' mappings vary, it fails after
    /// 2 s ([`BOTH_HARD_WINDOW`]) with [`PunchError::NoDirectPath`] and
    /// [`NoPath::BothSymmetric`], unless the two met directly meanwhile (on one network).
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
        let plan = birthday::plan(&our_priv_rendezvous_info, &their_pub_rendezvous_info);
        if plan != Plan::Ordinary {
            log::info!("punch plan: {plan:?} (a symmetric NAT on one side or both)");
        }
        let now = Instant::now();
        let mut rng = StdRng::from_os_rng();
        match plan {
            Plan::Hard => {
                return punch_hard(
                    socket,
                    &keys,
                    &our_priv_rendezvous_info,
                    &their_pub_rendezvous_info,
                    deadline,
                );
            }
            Plan::Ordinary | Plan::Easy | Plan::BothHard => {}
        }
        let spray = match plan {
            Plan::Easy => birthday::spray_for(&their_pub_rendezvous_info, &paths, &mut rng, now),
            _ => None,
        };
        let mut puncher = UdpPuncher::new(keys, paths, now, rng);
        if let Some(spray) = spray {
            log::info!(
                "the peer is behind a symmetric NAT: probing random ports of {}",
                spray.ip()
            );
            puncher = puncher.with_spray(spray);
        }
        let until = match plan {
            Plan::BothHard => deadline.min(now + BOTH_HARD_WINDOW),
            _ => deadline,
        };
        natt_core::udp::drive(&socket, &mut [&mut puncher], until).map_err(driver_error)?;
        match puncher.peer() {
            Some(peer_addr) => {
                log::info!("punched {local} <-> {peer_addr}");
                Ok(PunchedUdpSocket { socket, peer_addr })
            }
            None if plan == Plan::BothHard => Err(PunchError::NoDirectPath(NoPath::BothSymmetric)),
            None => Err(PunchError::TimedOut(puncher.diagnosis())),
        }
    }
}

/// A receive loop's error as the punch's.
fn driver_error(e: natt_core::Error) -> PunchError {
    match e {
        natt_core::Error::Io(io) => PunchError::Io(io),
        other => PunchError::TimedOut(NoPath::Other(other.to_string())),
    }
}

/// The hard side of the birthday method: `socket` and [`HARD_SOCKETS`] - 1 more on its IP,
/// one receive loop each, until one wins (returned) or the deadline.
fn punch_hard(
    socket: UdpSocket,
    keys: &crate::keys::SessionKeys,
    ours: &PrivRendezvousInfo,
    theirs: &PubRendezvousInfo,
    deadline: Instant,
) -> Result<PunchedUdpSocket, PunchError> {
    let local = socket.local_addr()?;
    let mut sockets = vec![socket];
    while sockets.len() < HARD_SOCKETS {
        match UdpSocket::bind(SocketAddr::new(local.ip(), 0)) {
            Ok(s) => sockets.push(s),
            Err(e) => {
                log::warn!("birthday punch: could bind only {} sockets: {e}", sockets.len());
                break;
            }
        }
    }
    let locals = sockets
        .iter()
        .map(UdpSocket::local_addr)
        .collect::<Result<Vec<_>, _>>()?;
    let group = Arc::new(Group::new());
    let start = Instant::now();
    let members = birthday::hard_sockets(keys, ours, theirs, &locals, &group, start, &mut StdRng::from_os_rng())?;
    log::info!(
        "our NAT gives each destination its own port: {} sockets probe the peer's public endpoints",
        members.len()
    );
    let finished = natt_core::fanout::scoped(
        "natt-punch-hard",
        start,
        sockets.iter().zip(members),
        |(socket, mut member)| {
            let driven = natt_core::udp::drive(socket, &mut [&mut member], deadline);
            (member, driven)
        },
    );
    let mut members = Vec::with_capacity(finished.len());
    let mut error = None;
    for f in finished {
        match f.result {
            Ok((member, driven)) => {
                if let Err(e) = driven {
                    log::debug!("birthday punch socket {}: {e}", member.index());
                    error.get_or_insert(e);
                }
                members.push(member);
            }
            Err(lost) => log::warn!("birthday punch: a socket's loop was lost: {lost}"),
        }
    }
    let winner = group
        .winner()
        .and_then(|w| members.iter().find(|m| m.index() == w))
        .and_then(|m| Some((m.index(), m.puncher().peer()?)));
    match winner {
        Some((index, peer_addr)) => {
            // The other sockets close here.
            let socket = sockets.into_iter().nth(index).ok_or(PunchError::NoEndpoint)?;
            log::info!(
                "punched {} <-> {peer_addr} (socket {index} of {})",
                socket.local_addr()?,
                locals.len()
            );
            Ok(PunchedUdpSocket { socket, peer_addr })
        }
        None => match error {
            Some(e) if members.iter().all(|m| m.puncher().sent() == 0) => Err(driver_error(e)),
            _ => Err(PunchError::TimedOut(birthday::hard_diagnosis(&members))),
        },
    }
}
