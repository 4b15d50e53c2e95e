//! Deadline arithmetic shared by every blocking call: all network waits are bounded by an
//! absolute [`Instant`], never by an open-ended timeout.

use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::thread;
use std::time::{Duration, Instant};

/// The smallest timeout handed to the OS: a zero timeout means "block forever" to some socket
/// calls, so waits are never shorter than this.
pub const MIN_WAIT: Duration = Duration::from_millis(1);

/// Time left until `deadline`, or `None` once it has passed.
pub fn remaining(deadline: Instant) -> Option<Duration> {
    let now = Instant::now();
    if now >= deadline {
        None
    } else {
        Some((deadline - now).max(MIN_WAIT))
    }
}

/// Time left until `deadline`, at least [`MIN_WAIT`] (for socket timeouts, which reject zero).
pub fn wait_until(deadline: Instant) -> Duration {
    remaining(deadline).unwrap_or(MIN_WAIT)
}

/// The last stretch of a wait that [`recv_from_until`] spends in short naps rather than in a
/// socket timeout: `SO_RCVTIMEO` counts in kernel ticks and was measured to overshoot by about
/// 16 ms (up to 39 ms under load) on the project's machines.
pub const PRECISE_TAIL: Duration = Duration::from_millis(25);
/// How long one nap of the precise tail lasts.
const NAP: Duration = Duration::from_millis(1);
/// The longest socket timeout of one wait. Linux's timer wheel rounds a timeout up to a
/// granularity that grows with its length (1 tick below 64 ticks, 8 ticks below 512, 64 ticks
/// beyond), so a wait of a few hundred milliseconds overshot by 25–30 ms, past the precise
/// tail; a wait of at most 50 ms is rounded by one tick (at most 10 ms) only.
pub const MAX_COARSE: Duration = Duration::from_millis(50);

/// Receives a datagram on `socket`, waiting no later than `wake` (to within a millisecond or
/// so): `Ok(None)` when nothing arrived by then (or, in a long wait, after [`MAX_COARSE`]:
/// callers loop until their wake time). Most of the wait is socket timeouts; the last
/// [`PRECISE_TAIL`] is polled in short naps. The socket's blocking mode and read timeout are
/// left changed: callers save and restore them around their loop.
pub fn recv_from_until(socket: &UdpSocket, buf: &mut [u8], wake: Instant) -> io::Result<Option<(usize, SocketAddr)>> {
    let wait = wake.saturating_duration_since(Instant::now());
    let coarse = wait
        .checked_sub(PRECISE_TAIL)
        .filter(|d| *d >= MIN_WAIT)
        .map(|d| d.min(MAX_COARSE));
    socket.set_nonblocking(coarse.is_none())?;
    if let Some(d) = coarse {
        socket.set_read_timeout(Some(d))?;
    }
    match socket.recv_from(buf) {
        Ok(got) => Ok(Some(got)),
        Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => {
            if coarse.is_none() {
                thread::sleep(wait.min(NAP));
            }
            Ok(None)
        }
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remaining_is_none_after_deadline() {
        assert!(remaining(Instant::now() - Duration::from_millis(1)).is_none());
        assert!(remaining(Instant::now() + Duration::from_secs(5)).unwrap() > Duration::from_secs(4));
        assert_eq!(wait_until(Instant::now()), MIN_WAIT);
    }

    #[test]
    fn recv_from_until_returns_none_by_the_wake_time() {
        let s = UdpSocket::bind("127.0.0.1:0").unwrap();
        let mut buf = [0u8; 8];
        let wake = Instant::now() + Duration::from_millis(60);
        while Instant::now() < wake {
            assert!(recv_from_until(&s, &mut buf, wake).unwrap().is_none());
        }
        let me = s.local_addr().unwrap();
        s.send_to(b"x", me).unwrap();
        let got = recv_from_until(&s, &mut buf, Instant::now() + Duration::from_secs(5)).unwrap();
        assert_eq!(got, Some((1, me)));
    }
}
