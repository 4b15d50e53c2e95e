//! The thin blocking driver: runs a [`Transaction`] over a UDP socket connected to the
//! gateway with natt-core's receive loop ([`natt_core::udp::drive_until_stopped`], the one of
//! every technique) until it has a result, the deadline passes, or (in a lease's thread) it is
//! told to stop. A refusal on the socket (an ICMP port unreachable) means no PCP or NAT-PMP
//! server listens on the gateway: [`PcpError::Unreachable`].

use std::io;
use std::net::UdpSocket;
use std::time::Instant;

use natt_core::UdpExchange;
use natt_core::lease::Stop;
use natt_core::udp;

use rand::SeedableRng;
use rand::rngs::StdRng;

use crate::error::PcpError;
use crate::pcp_wire::Nonce;
use crate::retransmit::Jitter;
use crate::transaction::{Outcome, Transaction, TransactionResult};

/// A fresh mapping nonce, from the thread's generator (the drivers' randomness: the
/// transaction is given it).
pub(crate) fn nonce() -> Nonce {
    rand::random()
}

/// PCP's retransmission jitter, from a generator seeded by the operating system.
pub(crate) fn jitter() -> Jitter {
    Jitter::random(StdRng::from_os_rng())
}

/// How a driven transaction ended.
#[derive(Debug)]
pub(crate) enum Driven {
    /// It has its result.
    Done(Result<Outcome, PcpError>),
    /// The stop channel fired (or was dropped) first.
    Stopped,
}

/// Runs `tx` over `socket` (connected to the transaction's gateway) until `deadline`.
pub(crate) fn drive(socket: &UdpSocket, tx: &mut Transaction, deadline: Instant, stop: Option<&Stop>) -> Driven {
    let gateway = match socket.peer_addr() {
        Ok(g) => g,
        Err(e) => return Driven::Done(Err(PcpError::io("the gateway socket is not connected", e))),
    };
    let mut exchanges: [&mut dyn UdpExchange<TransactionResult>; 1] = [&mut *tx];
    match udp::drive_until_stopped(socket, &mut exchanges, deadline, stop) {
        Ok(udp::Driven::Done(results)) => Driven::Done(
            results
                .into_iter()
                .next()
                .map_or_else(|| Err(tx.timed_out()), |(_, result)| result),
        ),
        Ok(udp::Driven::Stopped) => Driven::Stopped,
        Err(natt_core::Error::Io(e)) if e.kind() == io::ErrorKind::ConnectionRefused => {
            Driven::Done(Err(PcpError::Unreachable { gateway }))
        }
        Err(natt_core::Error::Io(e)) => Driven::Done(Err(PcpError::io(format!("talking to the gateway {gateway}"), e))),
        Err(e) => Driven::Done(Err(PcpError::io(
            format!("talking to the gateway {gateway}"),
            io::Error::other(e.to_string()),
        ))),
    }
}
