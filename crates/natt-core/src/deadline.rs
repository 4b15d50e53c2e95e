//! Deadline arithmetic shared by every blocking call: all network waits are bounded by an
//! absolute [`Instant`], never by an open-ended timeout. [`Pending`] bounds calls that take no
//! timeout at all (a name lookup, an HTTP request with fixed timeouts of its own) by running
//! them on a worker thread that the caller stops waiting for.

use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::sync::mpsc::{self, RecvTimeoutError, TryRecvError};
use std::sync::{Arc, Mutex, PoisonError};
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

/// Work running on a worker thread of its own, whose result the caller polls
/// ([`Pending::poll`]) or waits for until a deadline ([`Pending::wait_until`]).
///
/// The worker keeps a result that comes after the caller gave up (or dropped the `Pending`)
/// and hands it to a `late` function, which undoes whatever the work did (a port mapping
/// added too late is deleted), so nothing leaks. The handover is race-free: the sender sits in
/// a mutex that the caller empties when it gives up, and the worker sends under that mutex; a
/// result sent just before is still the caller's.
///
/// ```
/// use natt_core::deadline::{Pending, Unfinished};
/// use std::time::{Duration, Instant};
///
/// let slow = Pending::spawn("example", || std::thread::sleep(Duration::from_secs(5)), |()| {})?;
/// let waited = slow.wait_until(Instant::now() + Duration::from_millis(20));
/// assert!(matches!(waited, Err(Unfinished::TimedOut)));
/// # Ok::<(), std::io::Error>(())
/// ```
#[derive(Debug)]
pub struct Pending<T> {
    rx: mpsc::Receiver<T>,
    slot: Handover<T>,
}

/// Why a [`Pending`] gave no result.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Unfinished {
    /// The deadline passed first.
    #[error("not finished before the deadline")]
    TimedOut,
    /// The worker ended without a result (it panicked, or the result was taken already).
    #[error("the worker thread ended without a result")]
    Ended,
}

impl<T: Send + 'static> Pending<T> {
    /// Runs `work` on a new thread named `name`; a result the caller no longer waits for goes
    /// to `late` (on that thread). Fails only when the thread cannot be started.
    pub fn spawn<W, L>(name: &str, work: W, late: L) -> io::Result<Self>
    where
        W: FnOnce() -> T + Send + 'static,
        L: FnOnce(T) + Send + 'static,
    {
        let (slot, rx) = Handover::new();
        let hangup = Hangup(slot.clone());
        thread::Builder::new().name(name.into()).spawn(move || {
            if let Some(result) = hangup.0.offer(work()) {
                late(result);
            }
        })?;
        Ok(Pending { rx, slot })
    }

    /// The result, if the work has finished: `None` while it runs, then `Some(Ok(result))`
    /// once, then `Some(Err(Unfinished::Ended))`.
    pub fn poll(&self) -> Option<Result<T, Unfinished>> {
        match self.rx.try_recv() {
            Ok(result) => Some(Ok(result)),
            Err(TryRecvError::Empty) => None,
            Err(TryRecvError::Disconnected) => Some(Err(Unfinished::Ended)),
        }
    }

    /// Waits for the result until `deadline`; after that, the result goes to `late`.
    pub fn wait_until(self, deadline: Instant) -> Result<T, Unfinished> {
        match self.rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok(result) => Ok(result),
            Err(RecvTimeoutError::Timeout) => {
                // Give up: from now on the worker hands its result to `late`, unless it sent
                // it just before, in which case it is ours after all.
                self.give_up();
                self.rx.try_recv().map_err(|_| Unfinished::TimedOut)
            }
            Err(RecvTimeoutError::Disconnected) => Err(Unfinished::Ended),
        }
    }
}

/// Held by the worker: when it ends (even by a panic), the channel closes, so the caller sees
/// [`Unfinished::Ended`] at once instead of waiting for its deadline.
struct Hangup<T>(Handover<T>);

impl<T> Drop for Hangup<T> {
    fn drop(&mut self) {
        self.0.close();
    }
}

impl<T> Pending<T> {
    fn give_up(&self) {
        self.slot.close();
    }
}

/// The race-free handover of results from workers to a caller that may stop waiting: the
/// sender sits in a mutex, workers send under it ([`Handover::offer`]), and the caller empties
/// it when it gives up ([`Handover::close`]). A result offered before is in the channel, the
/// caller's; one offered after is given back to its worker (for its `late` function). Shared
/// by [`Pending`] and the fan-out's detached workers ([`crate::fanout::spawn`]).
#[derive(Debug)]
pub(crate) struct Handover<T>(Arc<Mutex<Option<mpsc::Sender<T>>>>);

impl<T> Clone for Handover<T> {
    fn clone(&self) -> Self {
        Handover(Arc::clone(&self.0))
    }
}

impl<T> Handover<T> {
    /// A handover and the caller's end of its channel.
    pub(crate) fn new() -> (Self, mpsc::Receiver<T>) {
        let (tx, rx) = mpsc::channel();
        (Handover(Arc::new(Mutex::new(Some(tx)))), rx)
    }

    /// Sends `result` to the caller if it still waits; otherwise gives it back.
    pub(crate) fn offer(&self, result: T) -> Option<T> {
        let guard = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        match guard.as_ref() {
            Some(tx) => tx.send(result).err().map(|e| e.0),
            None => Some(result),
        }
    }

    /// The caller no longer waits: every later offer is refused, and the channel is closed
    /// (once the caller drained it, receiving reports it disconnected).
    pub(crate) fn close(&self) {
        drop(self.0.lock().unwrap_or_else(PoisonError::into_inner).take());
    }
}

impl<T> Drop for Pending<T> {
    /// The caller no longer waits: a result that comes later goes to `late`.
    fn drop(&mut self) {
        self.give_up();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pending_result_is_polled_or_waited_for_until_the_deadline() {
        let quick = Pending::spawn("test", || 7, |_| {}).unwrap();
        assert_eq!(quick.wait_until(Instant::now() + Duration::from_secs(5)), Ok(7));

        let (late_tx, late_rx) = mpsc::channel();
        let slow = Pending::spawn(
            "test",
            || {
                thread::sleep(Duration::from_millis(200));
                8
            },
            move |v| late_tx.send(v).unwrap(),
        )
        .unwrap();
        assert!(slow.poll().is_none());
        let t0 = Instant::now();
        assert_eq!(
            slow.wait_until(t0 + Duration::from_millis(30)),
            Err(Unfinished::TimedOut)
        );
        assert!(t0.elapsed() < Duration::from_millis(150));
        assert_eq!(late_rx.recv_timeout(Duration::from_secs(2)).unwrap(), 8);

        let polled = Pending::spawn("test", || 9, |_| {}).unwrap();
        let end = Instant::now() + Duration::from_secs(5);
        let got = loop {
            if let Some(r) = polled.poll() {
                break r;
            }
            assert!(Instant::now() < end);
            thread::sleep(Duration::from_millis(1));
        };
        assert_eq!(got, Ok(9));
        assert_eq!(polled.poll(), Some(Err(Unfinished::Ended)));

        // A worker that panics ends the wait at once.
        let t0 = Instant::now();
        let panicked = Pending::spawn("test", || -> u8 { panic!("on purpose") }, |_| {}).unwrap();
        assert_eq!(panicked.wait_until(t0 + Duration::from_secs(5)), Err(Unfinished::Ended));
        assert!(t0.elapsed() < Duration::from_secs(4));
    }

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
