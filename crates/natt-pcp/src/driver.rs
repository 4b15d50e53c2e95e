//! The thin blocking driver: runs a [`Transaction`] over a UDP socket connected to the
//! gateway until it has a result, the deadline passes, or (in a lease's thread) it is told to
//! stop.

use std::io;
use std::net::UdpSocket;
use std::time::{Duration, Instant};

use natt_core::deadline;
use natt_core::lease::Stop;

use crate::client::{Outcome, Transaction};
use crate::error::PcpError;
use crate::pcp_wire::MAX_LEN;

/// How often a wait checks whether it was told to stop.
pub(crate) const STOP_POLL: Duration = Duration::from_millis(50);

/// How a driven transaction ended.
#[derive(Debug)]
pub(crate) enum Driven {
    /// It has its result.
    Done(Result<Outcome, PcpError>),
    /// The stop channel fired (or was dropped) first.
    Stopped,
}

/// True when `stop` says so (the lease was released).
pub(crate) fn stopped(stop: Option<&Stop>) -> bool {
    stop.is_some_and(Stop::is_stopped)
}

/// Runs `tx` over `socket` (connected to the transaction's gateway) until `deadline`.
pub(crate) fn drive(socket: &UdpSocket, tx: &mut Transaction, deadline: Instant, stop: Option<&Stop>) -> Driven {
    let gateway = match socket.peer_addr() {
        Ok(g) => g,
        Err(e) => return Driven::Done(Err(PcpError::io("the gateway socket is not connected", e))),
    };
    // One byte more than the longest message, so an oversized one is seen as such.
    let mut buf = [0u8; MAX_LEN + 4];
    loop {
        let now = Instant::now();
        tx.handle_timeout(now);
        if let Some(result) = tx.poll_result() {
            return Driven::Done(result);
        }
        if now >= deadline {
            return Driven::Done(Err(tx.timed_out()));
        }
        if stopped(stop) {
            return Driven::Stopped;
        }
        while let Some(payload) = tx.poll_transmit(now) {
            match socket.send(&payload) {
                Ok(_) => log::trace!("sent {} bytes to {gateway}", payload.len()),
                Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
                    return Driven::Done(Err(PcpError::Unreachable { gateway }));
                }
                Err(e) => log::debug!("send to {gateway} failed: {e}"),
            }
        }
        let mut wake = tx.poll_timeout().map_or(deadline, |t| t.min(deadline));
        if stop.is_some() {
            wake = wake.min(now + STOP_POLL);
        }
        match deadline::recv_from_until(socket, &mut buf, wake) {
            Ok(None) => {}
            Ok(Some((n, from))) => {
                let data = buf.get(..n).unwrap_or(&[]);
                if !tx.handle_datagram(Instant::now(), from, data) {
                    log::debug!("ignoring {n} bytes from {from}: not an answer to this request");
                }
            }
            Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
                return Driven::Done(Err(PcpError::Unreachable { gateway }));
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut | io::ErrorKind::Interrupted
                ) => {}
            Err(e) => log::debug!("receiving from {gateway}: {e}"),
        }
    }
}
