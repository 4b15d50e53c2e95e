//! The lease keeper: the one thread that keeps a port mapping alive for every port-mapping
//! technique (UPnP, PCP, NAT-PMP, ...), so that each technique writes only its protocol calls.
//!
//! A technique describes its mapping with [`Renewable`] (renew it, delete it) and hands it to
//! [`Keeper::spawn`]. The keeper's thread renews at half the lifetime granted, tries again
//! sooner after a failure ([`retry_after_failed_renewal`]), wakes at once when the lease is
//! released (a channel, not a sleep through the lease), deletes the mapping, and says whether
//! it is gone. The timing is decided by [`Schedule`], which reads no clock and spawns no
//! thread (it is fed `now`), so it is tested on its own.
//!
//! Waiting for deletions together is [`PortMappings::release`](crate::PortMappings::release):
//! it starts every lease's release, then waits for each.

use std::cell::Cell;
use std::fmt::Display;
use std::io;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender, TryRecvError};
use std::thread;
use std::time::{Duration, Instant};

use crate::mapping::retry_after_failed_renewal;

/// A port mapping a [`Keeper`] holds: the technique's protocol calls, and nothing else.
pub trait Renewable: Send + 'static {
    /// Why a renewal failed.
    type Error: Display;

    /// A one-line description for the keeper's logs (asked each time it logs, so it may
    /// change with the renewals).
    fn describe(&self) -> String;

    /// Renews the mapping (within the technique's own deadline). A long renewal checks
    /// `stop` and gives up with [`Renewal::Stopped`] when the lease is released meanwhile.
    fn renew(&mut self, stop: &Stop) -> Renewal<Self::Error>;

    /// After a failed renewal, unless the lease was released meanwhile: a chance to look for
    /// the gateway again before the next try. The default does nothing.
    fn recover(&mut self, error: &Self::Error) {
        let _ = error;
    }

    /// Deletes the mapping (within the technique's own deadline), once the lease is
    /// released or dropped; whether the mapping is known gone.
    fn delete(self) -> bool
    where
        Self: Sized;
}

/// What a renewal did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Renewal<E> {
    /// Renewed: the mapping now lives this long (the next renewal is at half of it).
    Renewed(Duration),
    /// The gateway did not renew it: tried again sooner, and counted as a failure.
    Failed(E),
    /// The last renewal is still under way (on a worker of the technique's own): not
    /// renewed now, tried again as after a failure, and not counted as one.
    Busy,
    /// The lease was released during the renewal: the mapping is deleted now.
    Stopped,
}

/// What a [`Schedule`] says to do at some `now`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// Renew now.
    Renew,
    /// Wait until then (for ever when `None`: a permanent mapping is never renewed), unless
    /// the lease is released first.
    Wait(Option<Instant>),
}

/// When to renew a lease: at half its lifetime (at least `min_interval` apart), and after a
/// failure sooner, at [`retry_after_failed_renewal`] of the lifetime (at least `min_interval`,
/// at most half the lifetime). Pure: fed `now`, it reads no clock.
///
/// ```
/// use std::time::{Duration, Instant};
/// use natt_core::lease::{Next, Schedule};
///
/// let t0 = Instant::now();
/// let s = |n| Duration::from_secs(n);
/// let mut schedule = Schedule::new(t0, Some(s(80)), Duration::ZERO);
/// assert_eq!(schedule.poll(t0), Next::Wait(Some(t0 + s(40))));
/// assert_eq!(schedule.poll(t0 + s(40)), Next::Renew);
/// assert_eq!(schedule.failed(t0 + s(41)), 1); // tried again an eighth of the lease later
/// assert_eq!(schedule.poll(t0 + s(41)), Next::Wait(Some(t0 + s(51))));
/// assert_eq!(schedule.renewed(t0 + s(51), s(80)), 1); // after one failure
/// assert_eq!(schedule.poll(t0 + s(51)), Next::Wait(Some(t0 + s(91))));
/// ```
#[derive(Debug, Clone)]
pub struct Schedule {
    lifetime: Option<Duration>,
    min_interval: Duration,
    failures: u32,
    next: Option<Instant>,
}

impl Schedule {
    /// A lease granted at `now` for `lifetime` (`None`: permanent, never renewed), renewed at
    /// least `min_interval` apart.
    pub fn new(now: Instant, lifetime: Option<Duration>, min_interval: Duration) -> Self {
        let mut schedule = Schedule {
            lifetime,
            min_interval,
            failures: 0,
            next: None,
        };
        schedule.next = schedule.after(now, schedule.after_success());
        schedule
    }

    /// What to do at `now`.
    pub fn poll(&self, now: Instant) -> Next {
        match self.next {
            Some(at) if at <= now => Next::Renew,
            next => Next::Wait(next),
        }
    }

    /// The renewal at `now` was granted `lifetime`. Returns the failures in a row before it.
    pub fn renewed(&mut self, now: Instant, lifetime: Duration) -> u32 {
        let failures = std::mem::take(&mut self.failures);
        self.lifetime = Some(lifetime);
        self.next = self.after(now, self.after_success());
        failures
    }

    /// The renewal at `now` failed. Returns the failures in a row, this one included.
    pub fn failed(&mut self, now: Instant) -> u32 {
        self.failures = self.failures.saturating_add(1);
        self.next = self.after(now, self.after_failure());
        self.failures
    }

    /// At `now`, the last renewal was still under way: try again as after a failure, without
    /// counting one.
    pub fn busy(&mut self, now: Instant) {
        self.next = self.after(now, self.after_failure());
    }

    /// The failed renewals in a row so far.
    pub fn failures(&self) -> u32 {
        self.failures
    }

    fn after_success(&self) -> Option<Duration> {
        self.lifetime.map(|l| (l / 2).max(self.min_interval))
    }

    fn after_failure(&self) -> Option<Duration> {
        self.lifetime
            .map(|l| retry_after_failed_renewal(l).max(self.min_interval).min(l / 2))
    }

    /// `now + wait`; `None` (never) when there is no wait or it is beyond the clock's range.
    fn after(&self, now: Instant, wait: Option<Duration>) -> Option<Instant> {
        wait.and_then(|w| now.checked_add(w))
    }
}

/// The keeper thread's side of the release signal: released when the [`Keeper`] says so or is
/// dropped. Once released, it stays so.
#[derive(Debug)]
pub struct Stop {
    signal: Receiver<()>,
    stopped: Cell<bool>,
}

impl Stop {
    /// A signal, and what fires it (by sending, or by being dropped).
    pub fn new() -> (Sender<()>, Stop) {
        let (tx, rx) = mpsc::channel();
        let stop = Stop {
            signal: rx,
            stopped: Cell::new(false),
        };
        (tx, stop)
    }

    /// Whether the lease was released.
    pub fn is_stopped(&self) -> bool {
        if !self.stopped.get() && !matches!(self.signal.try_recv(), Err(TryRecvError::Empty)) {
            self.stopped.set(true);
        }
        self.stopped.get()
    }

    /// Waits until `until` (for ever when `None`) or the release, whichever comes first;
    /// whether the lease was released.
    pub fn wait_until(&self, until: Option<Instant>) -> bool {
        if self.stopped.get() {
            return true;
        }
        let released = match until {
            Some(t) => {
                let woke = self.signal.recv_timeout(t.saturating_duration_since(Instant::now()));
                !matches!(woke, Err(RecvTimeoutError::Timeout))
            }
            None => {
                let _ = self.signal.recv();
                true
            }
        };
        self.stopped.set(released);
        released
    }
}

/// How a [`Keeper`] names itself: its thread and its log lines.
#[derive(Debug, Clone, Copy)]
pub struct KeeperNames {
    /// The thread's name, e.g. `natt-upnp-lease`.
    pub thread: &'static str,
    /// The target of its log lines (the technique's, so that its log filter applies), e.g.
    /// `module_path!()`.
    pub log_target: &'static str,
    /// What its log lines start with, e.g. `upnp` in `upnp: renewed ...`.
    pub log_prefix: &'static str,
}

/// The handle of a lease's keeper thread (see the module documentation). Dropping it releases
/// the lease without waiting: the thread deletes the mapping on its own.
#[derive(Debug)]
pub struct Keeper {
    /// Dropped to wake the thread: it then deletes the mapping and ends.
    stop: Option<Sender<()>>,
    /// What the thread says when it ends: whether the mapping is gone.
    done: Receiver<bool>,
    /// Whether the thread has ended, and what it said.
    ended: Option<bool>,
}

impl Keeper {
    /// Starts the thread that keeps `renewable`, granted `lifetime` just now (`None`:
    /// permanent), renewing at least `min_interval` apart (see [`Schedule`]).
    pub fn spawn<R: Renewable>(
        renewable: R,
        lifetime: Option<Duration>,
        min_interval: Duration,
        names: KeeperNames,
    ) -> io::Result<Keeper> {
        let (stop_tx, stop) = Stop::new();
        let (done_tx, done) = mpsc::channel();
        let schedule = Schedule::new(Instant::now(), lifetime, min_interval);
        thread::Builder::new().name(names.thread.into()).spawn(move || {
            let gone = keep(renewable, schedule, &stop, names);
            let _ = done_tx.send(gone);
        })?;
        Ok(Keeper {
            stop: Some(stop_tx),
            done,
            ended: None,
        })
    }

    /// Wakes the thread to delete the mapping now (it does not wait for that).
    pub fn start_release(&mut self) {
        drop(self.stop.take());
    }

    /// Whether the thread has ended: `Some(true)` when the mapping is known gone,
    /// `Some(false)` when its deletion failed; `None` while it is under way.
    pub fn ended(&self) -> Option<bool> {
        self.ended
    }

    /// Waits for the thread to end until `deadline` at most; as [`Keeper::ended`] then.
    pub fn wait_until(&mut self, deadline: Instant) -> Option<bool> {
        self.wait_for(deadline.saturating_duration_since(Instant::now()))
    }

    /// Waits for the thread to end for `wait` at most; as [`Keeper::ended`] then.
    pub fn wait_for(&mut self, wait: Duration) -> Option<bool> {
        if self.ended.is_none() {
            self.ended = match self.done.recv_timeout(wait) {
                Ok(gone) => Some(gone),
                Err(RecvTimeoutError::Disconnected) => Some(false),
                Err(RecvTimeoutError::Timeout) => None,
            };
        }
        self.ended
    }
}

/// The keeper thread: renews on schedule until released, then deletes; whether the mapping is
/// known gone.
fn keep<R: Renewable>(mut renewable: R, mut schedule: Schedule, stop: &Stop, names: KeeperNames) -> bool {
    let KeeperNames {
        log_target: target,
        log_prefix: prefix,
        ..
    } = names;
    loop {
        match schedule.poll(Instant::now()) {
            Next::Wait(until) => {
                if stop.wait_until(until) {
                    break;
                }
                continue;
            }
            Next::Renew if stop.is_stopped() => break,
            Next::Renew => {}
        }
        match renewable.renew(stop) {
            Renewal::Renewed(lifetime) => {
                let failures = schedule.renewed(Instant::now(), lifetime);
                let name = renewable.describe();
                if failures > 0 {
                    log::info!(target: target, "{prefix}: renewed {name} after {failures} failure(s)");
                } else {
                    log::debug!(target: target, "{prefix}: renewed {name}");
                }
            }
            Renewal::Failed(e) => {
                let failures = schedule.failed(Instant::now());
                let name = renewable.describe();
                log::warn!(target: target, "{prefix}: renewing {name} failed ({failures} in a row): {e}");
                if stop.is_stopped() {
                    break; // released meanwhile: delete now, do not recover
                }
                renewable.recover(&e);
            }
            Renewal::Busy => schedule.busy(Instant::now()),
            Renewal::Stopped => break,
        }
    }
    renewable.delete()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn renews_at_half_the_lifetime_and_follows_what_is_granted() {
        let t0 = Instant::now();
        let mut s = Schedule::new(t0, Some(ms(1000)), Duration::ZERO);
        assert_eq!(s.poll(t0), Next::Wait(Some(t0 + ms(500))));
        assert_eq!(s.poll(t0 + ms(499)), Next::Wait(Some(t0 + ms(500))));
        assert_eq!(s.poll(t0 + ms(500)), Next::Renew);
        assert_eq!(s.renewed(t0 + ms(510), ms(4000)), 0);
        assert_eq!(s.poll(t0 + ms(510)), Next::Wait(Some(t0 + ms(2510))));
    }

    #[test]
    fn renewals_are_at_least_the_minimum_interval_apart() {
        let t0 = Instant::now();
        let mut s = Schedule::new(t0, Some(ms(100)), ms(500));
        assert_eq!(s.poll(t0), Next::Wait(Some(t0 + ms(500))));
        s.renewed(t0, Duration::ZERO);
        assert_eq!(s.poll(t0), Next::Wait(Some(t0 + ms(500))));
    }

    #[test]
    fn failures_retry_sooner_but_never_later_than_half_the_lifetime() {
        let t0 = Instant::now();
        let secs = Duration::from_secs;
        // An eighth of the lifetime, at least 500 ms, at most a minute...
        let mut s = Schedule::new(t0, Some(secs(80)), Duration::ZERO);
        assert_eq!(s.failed(t0), 1);
        assert_eq!(s.poll(t0), Next::Wait(Some(t0 + secs(10))));
        assert_eq!(s.failed(t0), 2);
        assert_eq!(s.failures(), 2);
        let mut s = Schedule::new(t0, Some(secs(7200)), Duration::ZERO);
        s.failed(t0);
        assert_eq!(s.poll(t0), Next::Wait(Some(t0 + secs(60))));
        // ... at least the minimum interval ...
        let mut s = Schedule::new(t0, Some(secs(8)), ms(2000));
        s.failed(t0);
        assert_eq!(s.poll(t0), Next::Wait(Some(t0 + ms(2000))));
        // ... and never later than half the lifetime (even below the minimum interval).
        let mut s = Schedule::new(t0, Some(ms(600)), ms(500));
        s.failed(t0);
        assert_eq!(s.poll(t0), Next::Wait(Some(t0 + ms(300))));
        // A success resets the count.
        assert_eq!(s.renewed(t0, ms(600)), 1);
        assert_eq!(s.failures(), 0);
    }

    #[test]
    fn a_busy_renewal_waits_as_after_a_failure_without_counting_one() {
        let t0 = Instant::now();
        let mut s = Schedule::new(t0, Some(Duration::from_secs(80)), Duration::ZERO);
        s.busy(t0);
        assert_eq!(s.poll(t0), Next::Wait(Some(t0 + Duration::from_secs(10))));
        assert_eq!(s.failures(), 0);
    }

    #[test]
    fn permanent_and_endless_leases_are_never_renewed() {
        let t0 = Instant::now();
        let s = Schedule::new(t0, None, ms(500));
        assert_eq!(s.poll(t0 + Duration::from_secs(1 << 40)), Next::Wait(None));
        let s = Schedule::new(t0, Some(Duration::MAX), Duration::ZERO);
        assert_eq!(s.poll(t0), Next::Wait(None));
    }

    /// A mapping that records what the keeper does to it.
    struct Fake {
        calls: Arc<Mutex<Vec<&'static str>>>,
        answers: Vec<Renewal<&'static str>>,
        gone: bool,
    }

    impl Renewable for Fake {
        type Error = &'static str;
        fn describe(&self) -> String {
            "fake".into()
        }
        fn renew(&mut self, _stop: &Stop) -> Renewal<&'static str> {
            self.calls.lock().unwrap().push("renew");
            if self.answers.is_empty() {
                Renewal::Renewed(ms(100))
            } else {
                self.answers.remove(0)
            }
        }
        fn recover(&mut self, _error: &&'static str) {
            self.calls.lock().unwrap().push("recover");
        }
        fn delete(self) -> bool {
            self.calls.lock().unwrap().push("delete");
            self.gone
        }
    }

    const NAMES: KeeperNames = KeeperNames {
        thread: "natt-test-lease",
        log_target: module_path!(),
        log_prefix: "test",
    };

    fn keeper(answers: Vec<Renewal<&'static str>>, gone: bool) -> (Keeper, Arc<Mutex<Vec<&'static str>>>) {
        let calls = Arc::new(Mutex::new(Vec::new()));
        let fake = Fake {
            calls: Arc::clone(&calls),
            answers,
            gone,
        };
        (
            Keeper::spawn(fake, Some(ms(100)), Duration::ZERO, NAMES).unwrap(),
            calls,
        )
    }

    #[test]
    fn the_thread_renews_recovers_and_deletes_when_released() {
        let (mut k, calls) = keeper(vec![Renewal::Failed("no"), Renewal::Busy], true);
        // Renewals every 50 ms (half the lifetime; after the failure and the busy renewal
        // too, since an eighth of it is below 500 ms and half of it is less).
        let t0 = Instant::now();
        while calls.lock().unwrap().len() < 5 && t0.elapsed() < Duration::from_secs(5) {
            thread::sleep(ms(5));
        }
        assert!(t0.elapsed() >= ms(190), "renewed too soon: {:?}", calls.lock().unwrap());
        assert_eq!(k.ended(), None);
        k.start_release();
        assert_eq!(k.wait_for(Duration::from_secs(5)), Some(true));
        let calls = calls.lock().unwrap();
        assert_eq!(calls[..5], ["renew", "recover", "renew", "renew", "renew"], "{calls:?}");
        assert_eq!(calls.last(), Some(&"delete"));
        assert!(!calls[5..].contains(&"recover"), "{calls:?}");
    }

    #[test]
    fn dropping_the_keeper_deletes_at_once_and_stopped_renewals_delete() {
        let calls = Arc::new(Mutex::new(Vec::new()));
        let fake = Fake {
            calls: Arc::clone(&calls),
            answers: Vec::new(),
            gone: false,
        };
        let t0 = Instant::now();
        drop(Keeper::spawn(fake, Some(Duration::from_secs(3600)), Duration::ZERO, NAMES).unwrap());
        while calls.lock().unwrap().is_empty() && t0.elapsed() < Duration::from_secs(5) {
            thread::sleep(ms(5));
        }
        assert_eq!(*calls.lock().unwrap(), ["delete"]);

        let (mut k, calls) = keeper(vec![Renewal::Stopped], false);
        assert_eq!(k.wait_for(Duration::from_secs(5)), Some(false));
        assert_eq!(*calls.lock().unwrap(), ["renew", "delete"]);
    }

    #[test]
    fn a_failure_seen_after_the_release_deletes_without_recovering() {
        struct Slow(Arc<Mutex<Vec<&'static str>>>);
        impl Renewable for Slow {
            type Error = &'static str;
            fn describe(&self) -> String {
                "slow".into()
            }
            fn renew(&mut self, stop: &Stop) -> Renewal<&'static str> {
                // Fails only once released.
                while !stop.is_stopped() {
                    thread::sleep(ms(5));
                }
                Renewal::Failed("released")
            }
            fn recover(&mut self, _error: &&'static str) {
                self.0.lock().unwrap().push("recover");
            }
            fn delete(self) -> bool {
                self.0.lock().unwrap().push("delete");
                true
            }
        }
        let calls = Arc::new(Mutex::new(Vec::new()));
        let mut k = Keeper::spawn(Slow(Arc::clone(&calls)), Some(ms(20)), Duration::ZERO, NAMES).unwrap();
        thread::sleep(ms(50));
        k.start_release();
        assert_eq!(k.wait_until(Instant::now() + Duration::from_secs(5)), Some(true));
        assert_eq!(*calls.lock().unwrap(), ["delete"]);
    }
}
