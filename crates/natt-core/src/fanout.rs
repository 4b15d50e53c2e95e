//! The deadline-bounded fan-out: one thread per item, every item's result collected under
//! one deadline. It is the one mechanism behind each "ask them all at once" of natt: the
//! mapping drivers running every technique ([`crate::tcp`], and [`crate::udp`] beside the
//! socket), [`crate::server_list::ask_each`], STUN's behaviour discovery, and UPnP's search and
//! gateway loading. A single bounded call is its one-item case, [`Pending`].
//!
//! Two kinds, for two needs:
//!
//! - [`scoped`] (and [`scoped_beside`], which runs work of its own on the calling thread
//!   meanwhile, such as the filtering tests beside the mapping tests): the threads may borrow (the
//!   items, the work) and are all joined before it returns, so none outlives the call. The
//!   deadline is the work's to keep (every technique and server query takes it): a scoped
//!   fan-out cannot stop waiting for a thread.
//! - [`spawn`]: detached threads, which may outlive the caller's deadline (HTTP requests with
//!   fixed timeouts of their own, work that must finish whatever the caller's time, the
//!   mapping drivers' techniques, which go on in the background after their grace). The
//!   caller takes results as they come ([`Detached::next_until`]), every result in input
//!   order ([`Detached::all_until`]) or the first success with the others' errors
//!   ([`Detached::first_ok_until`]), and stops waiting at its deadline. A result that comes
//!   after that goes to a `late` function, which undoes what the work did, drops it or hands
//!   it to whoever holds the result now (a late port mapping to the socket's mappings), with
//!   [`Pending`]'s race-free handover: every result is either the caller's or `late`'s.
//!
//! Either way each item's [`Finished`] tells when it ended (since the start given) and its
//! result, or why there is none ([`Lost`]): a thread that could not start or that panicked is
//! its item's error, never a hang nor a panic of the caller.
//!
//! ```
//! use natt_core::fanout;
//! use std::time::{Duration, Instant};
//!
//! // Every item, each on its own thread, the results in input order.
//! let squares = fanout::scoped("example", Instant::now(), [1, 2, 3], |n| n * n);
//! let squares: Vec<_> = squares.into_iter().filter_map(|f| f.result.ok()).collect();
//! assert_eq!(squares, [1, 4, 9]);
//!
//! // The first success; the slow item is left running (its result will be dropped).
//! let work = |ms: u64| {
//!     std::thread::sleep(Duration::from_millis(ms));
//!     if ms == 0 { Err("refused") } else { Ok(ms) }
//! };
//! let first = fanout::spawn("example", [0, 10, 5_000], work, drop)
//!     .first_ok_until(Instant::now() + Duration::from_secs(2), |failure| failure.to_string());
//! assert_eq!(first, Ok(10));
//! ```
//!
//! [`Pending`]: crate::deadline::Pending

use std::collections::VecDeque;
use std::fmt;
use std::io;
use std::sync::Arc;
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use crate::deadline::Handover;
use crate::error::TechniqueError;

/// How one item of a fan-out ended.
#[derive(Debug)]
pub struct Finished<T> {
    /// When it ended, since the fan-out's start.
    pub elapsed: Duration,
    /// What the work returned, or why it returned nothing.
    pub result: Result<T, Lost>,
}

/// Why an item of a fan-out gave no result.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Lost {
    /// Its thread could not be started.
    #[error("could not start a thread: {0}")]
    NotStarted(#[source] io::Error),
    /// Its thread panicked.
    #[error("the thread panicked")]
    Panicked,
    /// The caller's deadline passed first (detached fan-outs only).
    #[error("not finished before the deadline")]
    TimedOut,
}

/// Why an item of [`Detached::first_ok_until`] gave no success.
#[derive(Debug)]
pub enum Failure<E> {
    /// The work failed with this error.
    Failed(E),
    /// The work gave no result.
    Lost(Lost),
}

impl<E: fmt::Display> fmt::Display for Failure<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::Failed(e) => e.fmt(f),
            Failure::Lost(lost) => lost.fmt(f),
        }
    }
}

impl<U> Finished<Result<U, TechniqueError>> {
    /// When the item ended and its result, a lost one being an error of its own: that the
    /// `what` thread panicked (in those words), could not start or did not finish in time.
    pub fn into_timed(self, what: &str) -> (Duration, Result<U, TechniqueError>) {
        let result = match self.result {
            Ok(r) => r,
            Err(Lost::Panicked) => Err(TechniqueError::Other(format!("{what} thread panicked").into())),
            Err(Lost::NotStarted(e)) => Err(TechniqueError::Io(e)),
            Err(Lost::TimedOut) => Err(TechniqueError::TimedOut(format!("{what} thread did not finish"))),
        };
        (self.elapsed, result)
    }
}

/// Runs `work` on each of `items` at once, one scoped thread (named `name`) each, and returns
/// how each ended, in input order, the times since `start`. Every thread is joined before it
/// returns: `work` must keep the caller's deadline itself.
pub fn scoped<I, T, W>(name: &str, start: Instant, items: impl IntoIterator<Item = I>, work: W) -> Vec<Finished<T>>
where
    I: Send,
    T: Send,
    W: Fn(I) -> T + Sync,
{
    scoped_beside(name, start, items, work, || ()).0
}

/// [`scoped`], running `meanwhile` on the calling thread while the items run; its result
/// comes with theirs, once every thread is joined.
pub fn scoped_beside<I, T, W, R, M>(
    name: &str,
    start: Instant,
    items: impl IntoIterator<Item = I>,
    work: W,
    meanwhile: M,
) -> (Vec<Finished<T>>, R)
where
    I: Send,
    T: Send,
    W: Fn(I) -> T + Sync,
    M: FnOnce() -> R,
{
    let work = &work;
    thread::scope(|scope| {
        let handles: Vec<_> = items
            .into_iter()
            .map(|item| {
                thread::Builder::new().name(name.into()).spawn_scoped(scope, move || {
                    let result = work(item);
                    (start.elapsed(), result)
                })
            })
            .collect();
        let beside = meanwhile();
        let finished = handles
            .into_iter()
            .map(|handle| match handle.map(|h| h.join()) {
                Ok(Ok((elapsed, result))) => Finished {
                    elapsed,
                    result: Ok(result),
                },
                Ok(Err(_)) => Finished {
                    elapsed: start.elapsed(),
                    result: Err(Lost::Panicked),
                },
                Err(e) => Finished {
                    elapsed: start.elapsed(),
                    result: Err(Lost::NotStarted(e)),
                },
            })
            .collect();
        (finished, beside)
    })
}

/// One item's report: its index in the input and how it ended.
type Report<T> = (usize, Finished<T>);

/// Runs `work` on each of `items` at once, one detached thread (named `name`) each; the
/// caller collects the results under its deadline with the [`Detached`] returned. A result the
/// caller no longer waits for goes to `late` (on its worker thread, or on the caller's when it
/// came just as the caller stopped waiting). A thread that cannot be started is its item's
/// [`Lost::NotStarted`], reported before any other result.
pub fn spawn<I, T, W, L>(name: &str, items: impl IntoIterator<Item = I>, work: W, late: L) -> Detached<T>
where
    I: Send + 'static,
    T: Send + 'static,
    W: Fn(I) -> T + Send + Sync + 'static,
    L: Fn(T) + Send + Sync + 'static,
{
    let start = Instant::now();
    let (handover, rx) = Handover::new();
    let work = Arc::new(work);
    let late: Arc<dyn Fn(T) + Send + Sync> = Arc::new(late);
    let mut not_started = VecDeque::new();
    let mut len = 0;
    for (index, item) in items.into_iter().enumerate() {
        len += 1;
        let reporter = Reporter {
            handover: handover.clone(),
            index,
            start,
            late: Arc::clone(&late),
            reported: false,
        };
        let work = Arc::clone(&work);
        let spawned = thread::Builder::new()
            .name(name.into())
            .spawn(move || reporter.report(work(item)));
        if let Err(e) = spawned {
            let elapsed = start.elapsed();
            let result = Err(Lost::NotStarted(e));
            not_started.push_back((index, Finished { elapsed, result }));
        }
    }
    Detached {
        rx,
        handover,
        not_started,
        unreported: len,
        len,
        start,
        late,
    }
}

/// A worker's end of a detached fan-out: it sends the result, or, when the work panics,
/// [`Lost::Panicked`] (from its drop during the unwinding), so the caller never waits for a
/// result that cannot come.
struct Reporter<T> {
    handover: Handover<Report<T>>,
    index: usize,
    start: Instant,
    late: Arc<dyn Fn(T) + Send + Sync>,
    reported: bool,
}

impl<T> Reporter<T> {
    fn report(mut self, result: T) {
        self.reported = true;
        let finished = Finished {
            elapsed: self.start.elapsed(),
            result: Ok(result),
        };
        if let Some((_, Finished { result: Ok(result), .. })) = self.handover.offer((self.index, finished)) {
            (self.late)(result);
        }
    }
}

impl<T> Drop for Reporter<T> {
    fn drop(&mut self) {
        // Not reported and not panicking: the thread never started, which `spawn` reports.
        if !self.reported && thread::panicking() {
            let finished = Finished {
                elapsed: self.start.elapsed(),
                result: Err(Lost::Panicked),
            };
            drop(self.handover.offer((self.index, finished)));
        }
    }
}

/// The caller's end of a detached fan-out ([`spawn`]). Dropping it stops waiting: results that
/// come later go to `late`.
pub struct Detached<T> {
    rx: mpsc::Receiver<Report<T>>,
    handover: Handover<Report<T>>,
    not_started: VecDeque<Report<T>>,
    unreported: usize,
    len: usize,
    start: Instant,
    late: Arc<dyn Fn(T) + Send + Sync>,
}

impl<T> fmt::Debug for Detached<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Detached")
            .field("len", &self.len)
            .field("unreported", &self.unreported)
            .finish_non_exhaustive()
    }
}

impl<T> Detached<T> {
    /// How many items have not been reported yet.
    pub fn unreported(&self) -> usize {
        self.unreported
    }

    /// The next item to end, with its index in the input, waiting for it until `deadline`:
    /// `None` when the deadline passes first or every item has been reported.
    pub fn next_until(&mut self, deadline: Instant) -> Option<(usize, Finished<T>)> {
        if let Some(report) = self.not_started.pop_front() {
            self.unreported = self.unreported.saturating_sub(1);
            return Some(report);
        }
        if self.unreported == 0 {
            return None;
        }
        let report = self
            .rx
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .ok()?;
        self.unreported = self.unreported.saturating_sub(1);
        Some(report)
    }

    /// Every item's result, in input order, waiting for them until `deadline`; those still
    /// running then are [`Lost::TimedOut`] (their results go to `late`).
    pub fn all_until(mut self, deadline: Instant) -> Vec<Finished<T>> {
        let mut slots: Vec<Option<Finished<T>>> = (0..self.len).map(|_| None).collect();
        let mut keep = |(index, finished): Report<T>| {
            if let Some(slot) = slots.get_mut(index) {
                *slot = Some(finished);
            }
        };
        while let Some(report) = self.next_until(deadline) {
            keep(report);
        }
        self.give_up().into_iter().for_each(&mut keep);
        let elapsed = self.start.elapsed();
        slots
            .into_iter()
            .map(|slot| {
                slot.unwrap_or(Finished {
                    elapsed,
                    result: Err(Lost::TimedOut),
                })
            })
            .collect()
    }

    /// Stops waiting: later results go to `late`. Returns the results that came before.
    fn give_up(&mut self) -> Vec<Report<T>> {
        self.handover.close();
        let came: Vec<_> = self.rx.try_iter().collect();
        self.unreported = self.unreported.saturating_sub(came.len());
        came
    }
}

impl<U, E> Detached<Result<U, E>> {
    /// The first success, waiting for it until `deadline`. Each item that failed before it is
    /// handed to `failure` (in the order they ended), and when no item succeeds, the caller
    /// gets what `failure` made of them; when the deadline passes first, these are followed by
    /// one [`Lost::TimedOut`] for the items still running (a success that came just as the
    /// deadline passed is still taken, as [`Pending`](crate::deadline::Pending) takes it).
    /// Results that come after the success or the deadline go to `late`.
    pub fn first_ok_until<F>(
        mut self,
        deadline: Instant,
        mut failure: impl FnMut(Failure<E>) -> F,
    ) -> Result<U, Vec<F>> {
        let mut failures = Vec::new();
        while let Some((_, finished)) = self.next_until(deadline) {
            match success(finished.result) {
                Ok(found) => return Ok(found),
                Err(f) => failures.push(failure(f)),
            }
        }
        if self.unreported == 0 {
            return Err(failures);
        }
        // The deadline passed: what came just before is still the caller's.
        let mut came = self.give_up().into_iter();
        while let Some((_, finished)) = came.next() {
            match success(finished.result) {
                Ok(found) => {
                    for (_, finished) in came {
                        if let Ok(result) = finished.result {
                            (self.late)(result);
                        }
                    }
                    return Ok(found);
                }
                Err(f) => failures.push(failure(f)),
            }
        }
        failures.push(failure(Failure::Lost(Lost::TimedOut)));
        Err(failures)
    }
}

/// The success of an item, or why there is none.
fn success<U, E>(result: Result<Result<U, E>, Lost>) -> Result<U, Failure<E>> {
    match result {
        Ok(Ok(found)) => Ok(found),
        Ok(Err(e)) => Err(Failure::Failed(e)),
        Err(lost) => Err(Failure::Lost(lost)),
    }
}

impl<T> Drop for Detached<T> {
    /// The caller no longer waits: results that came and were not taken, and those that come
    /// later, go to `late`.
    fn drop(&mut self) {
        for (_, finished) in self.give_up() {
            if let Ok(result) = finished.result {
                (self.late)(result);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    const SOON: Duration = Duration::from_millis(50);
    const LONG: Duration = Duration::from_secs(5);

    fn sleepy(ms: u64) -> u64 {
        thread::sleep(Duration::from_millis(ms));
        ms
    }

    #[test]
    fn scoped_results_come_in_input_order_with_their_times() {
        let t0 = Instant::now();
        let items = [100, 0, 60];
        let done = scoped("test", t0, items, sleepy);
        let got: Vec<u64> = done.iter().map(|f| *f.result.as_ref().unwrap()).collect();
        assert_eq!(got, items);
        for (f, ms) in done.iter().zip(items) {
            assert!(f.elapsed >= Duration::from_millis(ms), "{f:?}");
        }
        // They ran at once.
        assert!(t0.elapsed() < Duration::from_millis(155), "{:?}", t0.elapsed());
    }

    #[test]
    fn scoped_beside_runs_meanwhile_and_items_may_borrow() {
        let mut a = 1;
        let mut b = 2;
        let (done, mine) = scoped_beside(
            "test",
            Instant::now(),
            [&mut a],
            |n| {
                *n += 10;
                *n
            },
            || {
                b += 20;
                b
            },
        );
        assert_eq!(done.into_iter().map(|f| f.result.unwrap()).collect::<Vec<_>>(), [11]);
        assert_eq!((mine, a, b), (22, 11, 22));
    }

    #[test]
    fn a_panicking_item_is_an_error_not_a_hang_nor_a_panic() {
        let work = |n: u8| {
            if n == 1 {
                panic!("on purpose");
            }
            n
        };
        let done = scoped("test", Instant::now(), [0, 1, 2], work);
        assert!(matches!(done[1].result, Err(Lost::Panicked)), "{done:?}");
        let (id, msg) = (done[0].result.as_ref().unwrap(), done[2].result.as_ref().unwrap());
        assert_eq!((*id, *msg), (0, 2));
        let (_, r) = Finished::<Result<(), TechniqueError>> {
            elapsed: Duration::ZERO,
            result: Err(Lost::Panicked),
        }
        .into_timed("probe");
        assert_eq!(r.unwrap_err().to_string(), "probe thread panicked");

        let t0 = Instant::now();
        let all = spawn("test", [0, 1, 2], work, drop).all_until(t0 + LONG);
        assert!(matches!(all[1].result, Err(Lost::Panicked)), "{all:?}");
        assert_eq!(all[2].result.as_ref().unwrap(), &2);
        let failed = spawn("test", [1, 1], move |n| -> Result<(), u8> { Err(work(n)) }, drop)
            .first_ok_until(t0 + LONG, |f| f.to_string());
        assert_eq!(failed.unwrap_err(), ["the thread panicked", "the thread panicked"]);
        assert!(t0.elapsed() < LONG / 2, "waited for a panicked thread");
    }

    #[test]
    fn detached_results_come_in_input_order_and_late_ones_go_to_late() {
        let late = Arc::new(Mutex::new(Vec::new()));
        let l = Arc::clone(&late);
        let t0 = Instant::now();
        let all = spawn("test", [30, 0, 300], sleepy, move |ms| l.lock().unwrap().push(ms)).all_until(t0 + SOON * 2);
        let waited = t0.elapsed();
        assert!(waited >= SOON * 2 && waited < Duration::from_millis(250), "{waited:?}");
        assert_eq!(all[0].result.as_ref().unwrap(), &30);
        assert_eq!(all[1].result.as_ref().unwrap(), &0);
        assert!(matches!(all[2].result, Err(Lost::TimedOut)), "{all:?}");
        assert!(all[0].elapsed >= Duration::from_millis(30) && all[1].elapsed < all[0].elapsed);
        // The slow item keeps running, and its result goes to `late`.
        let end = Instant::now() + LONG;
        while late.lock().unwrap().is_empty() && Instant::now() < end {
            thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(*late.lock().unwrap(), [300]);
    }

    #[test]
    fn first_ok_takes_the_first_success_and_collects_the_errors_before_it() {
        let work = |ms: u64| if ms < 20 { Err(sleepy(ms)) } else { Ok(sleepy(ms)) };
        let t0 = Instant::now();
        let first = spawn("test", [200, 10, 40, 0], work, drop).first_ok_until(t0 + LONG, |f| f.to_string());
        assert_eq!(first, Ok(40));
        assert!(t0.elapsed() < Duration::from_millis(150), "waited for the slow item");

        // All failing: every error, in the order they came.
        let failed =
            spawn("test", [10, 0], |ms| Err::<(), _>(sleepy(ms)), drop).first_ok_until(t0 + LONG, |f| f.to_string());
        assert_eq!(failed.unwrap_err(), ["0", "10"]);

        // No item: no error.
        let none = spawn("test", Vec::<u64>::new(), work, drop).first_ok_until(t0 + LONG, |f| f.to_string());
        assert_eq!(none.unwrap_err(), Vec::<String>::new());
    }

    #[test]
    fn first_ok_at_the_deadline_gives_the_errors_so_far_then_timed_out() {
        let work = |ms: u64| if ms < 20 { Err(sleepy(ms)) } else { Ok(sleepy(ms)) };
        let late = Arc::new(Mutex::new(Vec::new()));
        let l = Arc::clone(&late);
        let t0 = Instant::now();
        let r =
            spawn("test", [300, 0, 400], work, move |r| l.lock().unwrap().push(r)).first_ok_until(
                t0 + SOON,
                |f| match f {
                    Failure::Lost(Lost::TimedOut) => "timed out".to_string(),
                    other => other.to_string(),
                },
            );
        let waited = t0.elapsed();
        assert_eq!(r.unwrap_err(), ["0", "timed out"]);
        assert!(waited >= SOON && waited < Duration::from_millis(250), "{waited:?}");
        let end = Instant::now() + LONG;
        while late.lock().unwrap().len() < 2 && Instant::now() < end {
            thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(*late.lock().unwrap(), [Ok(300), Ok(400)]);
    }

    #[test]
    fn next_until_reports_as_items_end() {
        let mut d = spawn("test", [40, 0], sleepy, drop);
        assert_eq!(d.unreported(), 2);
        let t0 = Instant::now();
        let (i, f) = d.next_until(t0 + LONG).unwrap();
        assert_eq!((i, f.result.unwrap()), (1, 0));
        assert!(d.next_until(Instant::now()).is_none(), "the slow item is not done yet");
        let (i, f) = d.next_until(t0 + LONG).unwrap();
        assert_eq!((i, f.result.unwrap()), (0, 40));
        assert_eq!(d.unreported(), 0);
        assert!(d.next_until(t0 + LONG).is_none());
    }
}
