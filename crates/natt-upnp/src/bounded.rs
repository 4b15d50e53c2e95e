//! Deadline-bounded calls on worker threads: [`call`] runs a blocking piece of work (a SOAP
//! request, a description GET) on a worker thread of its own ([`natt_core::deadline::Pending`])
//! and waits for its result until the caller's deadline, then gives up with
//! [`UpnpError::TimedOut`]; a result that comes later goes to a `late` function on the worker,
//! which undoes what the call did (race-free, see [`Pending`]). A call whose deadline has
//! passed is not started ([`started`] starts it anyway). [`first_ok`] runs one such piece of
//! work per item at once and takes the first success: natt-core's fan-out
//! ([`natt_core::fanout`]). Why calls are bounded this way: the crate documentation,
//! **Deadlines**.

use std::time::{Duration, Instant};

use natt_core::deadline::{Pending, Unfinished};
use natt_core::fanout::{self, Failure, Lost};

use crate::error::UpnpError;

/// The instant `d` from now, for deadlines made from configured durations: one too far to
/// represent (e.g. from `Duration::MAX`) is about a century away instead of a panic.
pub(crate) fn in_from_now(d: Duration) -> Instant {
    let now = Instant::now();
    now.checked_add(d).or_else(|| now.checked_add(FAR)).unwrap_or(now)
}

/// A duration longer than any wait that matters (about a century).
const FAR: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

/// Runs `work` on a worker thread named `natt-upnp-call` and waits for its result until
/// `deadline`. At the deadline, [`UpnpError::TimedOut`] naming `what`; the result, when it
/// comes, then goes to `late` (on the worker thread). A deadline already past is
/// [`UpnpError::TimedOut`] at once, without starting `work`.
pub(crate) fn call<T, W, L>(what: &str, deadline: Instant, work: W, late: L) -> Result<T, UpnpError>
where
    T: Send + 'static,
    W: FnOnce() -> T + Send + 'static,
    L: FnOnce(T) + Send + 'static,
{
    if Instant::now() >= deadline {
        return Err(UpnpError::timed_out(what));
    }
    started(what, deadline, work, late)
}

/// [`call`], but `work` starts even when `deadline` has passed (then the caller does not
/// wait for it: its result goes to `late`). For work that must happen whatever the caller's
/// time, such as deleting a mapping that cannot be used.
pub(crate) fn started<T, W, L>(what: &str, deadline: Instant, work: W, late: L) -> Result<T, UpnpError>
where
    T: Send + 'static,
    W: FnOnce() -> T + Send + 'static,
    L: FnOnce(T) + Send + 'static,
{
    let pending = Pending::spawn("natt-upnp-call", work, late).map_err(|e| UpnpError::Io {
        what: format!("starting a thread for {what}"),
        source: e,
    })?;
    pending.wait_until(deadline).map_err(|e| match e {
        Unfinished::TimedOut => UpnpError::timed_out(what),
        _ => UpnpError::Io {
            what: what.to_owned(),
            source: std::io::Error::other(e),
        },
    })
}

/// Runs `work` on each of `items` at once, one detached thread (named `name`) each
/// ([`fanout::spawn`]), and returns the first success. When every item failed: their errors.
/// When `deadline` passes first: the errors so far, then [`UpnpError::TimedOut`] naming
/// `what`, last. The threads still running then end by themselves (their work has its own
/// bounds), and their results are dropped.
pub(crate) fn first_ok<I, T, W>(
    items: Vec<I>,
    name: &str,
    what: &str,
    deadline: Instant,
    work: W,
) -> Result<T, Vec<UpnpError>>
where
    I: Send + 'static,
    T: Send + 'static,
    W: Fn(I) -> Result<T, UpnpError> + Send + Sync + 'static,
{
    fanout::spawn(name, items, work, drop).first_ok_until(deadline, |failure| match failure {
        Failure::Failed(e) => {
            log::debug!("upnp: {e}");
            e
        }
        Failure::Lost(Lost::TimedOut) => UpnpError::timed_out(what),
        Failure::Lost(Lost::NotStarted(e)) => UpnpError::Io {
            what: format!("starting a thread for {what}"),
            source: e,
        },
        Failure::Lost(lost) => UpnpError::Io {
            what: what.to_owned(),
            source: std::io::Error::other(lost),
        },
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use std::sync::Arc;
    use std::sync::mpsc;
    use std::thread;

    #[test]
    fn a_late_result_goes_to_late_and_the_caller_times_out() {
        let (late_tx, late_rx) = mpsc::channel();
        let t0 = Instant::now();
        let r = call(
            "sleeping",
            t0 + Duration::from_millis(50),
            || {
                thread::sleep(Duration::from_millis(200));
                7
            },
            move |v| late_tx.send(v).unwrap(),
        );
        assert!(matches!(r, Err(UpnpError::TimedOut { .. })), "{r:?}");
        assert!(t0.elapsed() < Duration::from_millis(150));
        assert_eq!(late_rx.recv_timeout(Duration::from_secs(2)).unwrap(), 7);
    }

    #[test]
    fn huge_durations_are_far_deadlines_not_panics() {
        let far = in_from_now(Duration::MAX);
        assert!(far > Instant::now() + Duration::from_secs(365 * 24 * 3600));
        let soon = in_from_now(Duration::from_millis(10));
        assert!(soon <= Instant::now() + Duration::from_millis(10));
    }

    #[test]
    fn nothing_is_started_after_the_deadline() {
        let started = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let s = Arc::clone(&started);
        let r = call(
            "adding",
            Instant::now(), // already past when checked
            move || s.store(true, std::sync::atomic::Ordering::SeqCst),
            |()| unreachable!(),
        );
        assert!(matches!(r, Err(UpnpError::TimedOut { .. })), "{r:?}");
        thread::sleep(Duration::from_millis(50));
        assert!(!started.load(std::sync::atomic::Ordering::SeqCst), "the work ran");
    }

    #[test]
    fn a_prompt_result_is_the_callers() {
        let r = call(
            "adding",
            Instant::now() + Duration::from_secs(1),
            || 1 + 1,
            |_| unreachable!(),
        );
        assert_eq!(r.unwrap(), 2);
    }
}
