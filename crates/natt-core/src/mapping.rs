//! What a mapping leaves behind: port-mapping leases to keep alive and release, and each
//! technique's outcome for reports.

use std::net::SocketAddr;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use crate::endpoint::{MappedSocketAddr, Protocol};
use crate::error::TechniqueError;
use crate::fanout;
use crate::technique::MappingTechnique;

/// A port mapping made on a router (UPnP, PCP, ...). The implementation renews it while it
/// lives and deletes it when dropped (natt's techniques do so with one thread per lease, a
/// [`Keeper`](crate::lease::Keeper)).
///
/// Dropping may leave the deletion to finish in the background (so that dropping many leases
/// on a router that does not answer does not block): a program about to exit releases its
/// leases with [`PortMappings::release`], which waits for the deletions (bounded by each
/// implementation's own timeouts), all at once.
pub trait Lease: Send {
    /// A one-line description for logs, e.g. `upnp udp 203.0.113.1:4000 -> 192.168.1.2:4000`.
    fn describe(&self) -> String;

    /// Starts deleting the mapping without waiting for the router's answer. The default does
    /// nothing: the deletion happens when the lease is dropped.
    fn start_release(&mut self) {}

    /// After [`start_release`](Lease::start_release): waits until the deletion is over (done,
    /// or given up at the implementation's own deadline). The default returns at once.
    fn wait_released(&mut self) {}

    /// The lease as its own type, for the technique's own API on it (natt-turn's relay
    /// handle, through [`PortMappings::with_lease`]). The default: `None`.
    fn as_any(&self) -> Option<&dyn std::any::Any> {
        None
    }
}

/// Several leases held, released and dropped as one: what a technique that made more than one
/// mapping for a socket returns (PCP: an IPv4 port mapping and an IPv6 pinhole).
pub struct Leases(pub Vec<Box<dyn Lease>>);

impl Lease for Leases {
    fn describe(&self) -> String {
        self.0.iter().map(|l| l.describe()).collect::<Vec<_>>().join("; ")
    }

    fn start_release(&mut self) {
        self.0.iter_mut().for_each(|l| l.start_release());
    }

    fn wait_released(&mut self) {
        self.0.iter_mut().for_each(|l| l.wait_released());
    }
}

/// When a lease whose renewal failed tries again: an eighth of the lease, between 500 ms and
/// a minute, so soon enough to renew before the mapping expires but never in a tight loop.
/// The back-off of the lease keeper ([`crate::lease::Schedule`]).
///
/// ```
/// use std::time::Duration;
/// use natt_core::mapping::retry_after_failed_renewal;
/// assert_eq!(retry_after_failed_renewal(Duration::from_secs(80)), Duration::from_secs(10));
/// ```
pub fn retry_after_failed_renewal(lease: Duration) -> Duration {
    (lease / 8).clamp(Duration::from_millis(500), Duration::from_secs(60))
}

/// How one technique fared on one socket.
#[derive(Debug)]
pub struct TechniqueOutcome {
    /// The technique's name.
    pub technique: String,
    /// The protocol of the socket mapped.
    pub protocol: Protocol,
    /// How long the technique took.
    pub elapsed: Duration,
    /// What it found, or why it found nothing.
    pub result: Result<Vec<MappedSocketAddr>, TechniqueError>,
}

/// How long techniques beside the socket (the port-mapping ones: UPnP, PCP, NAT-PMP) still
/// running get once another technique found an external endpoint, before the mapping returns
/// without them. A gateway that answers (natt's UPnP search and mapping take about 80 ms on a
/// LAN, PCP about 10 ms) is in the result; a silent one no longer holds the mapping for its
/// whole timeout. What such a technique maps later is added to the socket's
/// [`PortMappings`] while they are held ([`PortMappings::take_late`]), or deleted at once when
/// they were released or dropped. See `docs/design.md`, "Deadlines".
pub const GATEWAY_GRACE: Duration = Duration::from_millis(250);

/// How long after the mapping's deadline the driver waits for the techniques that keep it
/// (they return just after it, saying what they missed) before it gives them up.
const SETTLE: Duration = Duration::from_millis(20);

/// What the techniques still running after a mapping returned share with its
/// [`PortMappings`]: the leases (those made in time and those that came later), and what came
/// later.
#[derive(Default)]
pub(crate) struct Held {
    state: Mutex<HeldState>,
    /// Signalled when a technique in the background ends.
    ended: Condvar,
}

#[derive(Default)]
struct HeldState {
    leases: Vec<Box<dyn Lease>>,
    /// Released or dropped: a lease that comes now is deleted at once.
    released: bool,
    /// Techniques still running in the background.
    running: usize,
    /// When those give up at the latest (the mapping's deadline).
    until: Option<Instant>,
    /// Outcomes of the techniques that ended in the background, not yet taken.
    late: Vec<TechniqueOutcome>,
    /// The endpoints they found, not yet taken.
    late_endpoints: Vec<MappedSocketAddr>,
}

impl Held {
    fn lock(&self) -> MutexGuard<'_, HeldState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// `running` techniques go on in the background until `until` at the latest.
    pub(crate) fn run_in_background(&self, running: usize, until: Instant) {
        let mut st = self.lock();
        st.running = st.running.saturating_add(running);
        st.until = Some(st.until.map_or(until, |u| u.max(until)));
    }

    /// Nobody will hold these mappings (the mapping failed): every lease, those held and any
    /// that come later, is deleted.
    pub(crate) fn abandon(&self) {
        let leases = {
            let mut st = self.lock();
            st.released = true;
            std::mem::take(&mut st.leases)
        };
        drop(leases);
    }

    /// A technique that ran in the background ended: its lease is held, or deleted at once
    /// when the mappings were released or dropped meanwhile.
    pub(crate) fn add_late(&self, protocol: Protocol, ran: Ran) {
        let Ran { name, elapsed, result } = ran;
        let result = match result {
            Ok(mapping) => {
                if let Some(mut lease) = mapping.lease {
                    let mut st = self.lock();
                    if st.released {
                        drop(st);
                        log::info!(
                            "{name}: deleting {}: it came after the mappings were released",
                            lease.describe()
                        );
                        lease.start_release();
                        lease.wait_released();
                        drop(lease);
                    } else {
                        log::info!(
                            "{name}: holding {} (came {elapsed:?} after mapping started)",
                            lease.describe()
                        );
                        st.leases.push(lease);
                    }
                }
                log::debug!("{name}: {:?} in {elapsed:?}, in the background", mapping.endpoints);
                Ok(mapping.endpoints)
            }
            Err(e) => {
                log::info!("{name} failed after {elapsed:?}, in the background: {e}");
                Err(e)
            }
        };
        let mut st = self.lock();
        if let Ok(eps) = &result {
            crate::endpoint::merge_endpoints(&mut st.late_endpoints, eps.iter().cloned());
        }
        st.late.push(TechniqueOutcome {
            technique: name,
            protocol,
            elapsed,
            result,
        });
        st.running = st.running.saturating_sub(1);
        drop(st);
        self.ended.notify_all();
    }

    /// Waits until no technique runs in the background, or `deadline`; whether none does.
    fn wait_idle(&self, deadline: Instant) -> bool {
        let mut st = self.lock();
        loop {
            if st.running == 0 {
                return true;
            }
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            st = self
                .ended
                .wait_timeout(st, deadline - now)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }
}

/// What a technique run beside the socket returned, with its name and when it ended.
pub(crate) struct Ran {
    pub(crate) name: String,
    pub(crate) elapsed: Duration,
    pub(crate) result: Result<crate::technique::TechniqueMapping, TechniqueError>,
}

/// Runs `techniques` beside the socket, one detached thread each (named `thread`), each with
/// `map` under the mapping's deadline (it keeps it itself); what comes after the caller stops
/// waiting ([`collect_beside`]) goes to `held`.
pub(crate) fn spawn_beside<M>(
    thread: &str,
    protocol: Protocol,
    start: Instant,
    techniques: Vec<Arc<dyn MappingTechnique>>,
    held: &Arc<Held>,
    map: M,
) -> fanout::Detached<Ran>
where
    M: Fn(&dyn MappingTechnique) -> Result<crate::technique::TechniqueMapping, TechniqueError> + Send + Sync + 'static,
{
    let held = Arc::clone(held);
    fanout::spawn(
        thread,
        techniques,
        move |t: Arc<dyn MappingTechnique>| {
            let result = map(&*t);
            Ran {
                name: t.name().to_owned(),
                elapsed: start.elapsed(),
                result,
            }
        },
        move |ran| held.add_late(protocol, ran),
    )
}

/// Whether `result` holds an endpoint beyond the socket's own addresses (`local`).
fn is_external(result: &Result<crate::technique::TechniqueMapping, TechniqueError>, local: &[SocketAddr]) -> bool {
    result
        .as_ref()
        .is_ok_and(|m| m.endpoints.iter().any(|e| !local.contains(&e.addr)))
}

/// The results of the techniques run by [`spawn_beside`] (one per `waited_for` entry, which
/// says whether it holds the mapping until its end), in their order, taken as they come until
/// every one has ended, or [`GATEWAY_GRACE`] after an external
/// endpoint is known (`external_at`, since `start`, from the techniques on the socket; or when
/// one of these found one), or `deadline` (and [`SETTLE`] for those that end just after it,
/// as they keep it themselves). Those still running then go on in the background
/// (their outcome here is [`TechniqueError::InBackground`], or [`TechniqueError::TimedOut`] at
/// the deadline) and report to `held`.
pub(crate) fn collect_beside(
    mut beside: fanout::Detached<Ran>,
    waited_for: &[bool],
    start: Instant,
    deadline: Instant,
    mut external_at: Option<Duration>,
    local: &[SocketAddr],
    held: &Held,
) -> Vec<(Duration, Result<crate::technique::TechniqueMapping, TechniqueError>)> {
    let mut slots: Vec<Option<(Duration, Result<crate::technique::TechniqueMapping, TechniqueError>)>> =
        waited_for.iter().map(|_| None).collect();
    // A technique keeps the deadline itself and returns just after it, with its own account of
    // what it missed: that is waited for a little.
    let last = deadline.checked_add(SETTLE).unwrap_or(deadline);
    loop {
        // A technique that is waited for ([`MappingTechnique::waited_for`]) and still runs
        // holds the mapping until its end.
        let waiting = slots.iter().zip(waited_for).any(|(s, w)| s.is_none() && *w);
        let until = external_at
            .filter(|_| !waiting)
            .and_then(|at| start.checked_add(at.saturating_add(GATEWAY_GRACE)))
            .map_or(last, |grace| grace.min(last));
        let Some((i, finished)) = beside.next_until(until) else {
            break;
        };
        let elapsed = finished.elapsed;
        let (elapsed, result) = match finished.result {
            Ok(ran) => (ran.elapsed, ran.result),
            Err(lost) => fanout::Finished::<Result<crate::technique::TechniqueMapping, TechniqueError>> {
                elapsed,
                result: Err(lost),
            }
            .into_timed("technique"),
        };
        if external_at.is_none() && is_external(&result, local) {
            external_at = Some(elapsed);
        }
        if let Some(slot) = slots.get_mut(i) {
            *slot = Some((elapsed, result));
        }
    }
    let running = slots.iter().filter(|s| s.is_none()).count();
    if running > 0 {
        // Counted before the caller's end is dropped: a result that comes from now on goes to
        // `held` and is counted off there.
        held.run_in_background(running, deadline);
        log::debug!(
            "{running} technique(s) go on in the background after {:?}",
            start.elapsed()
        );
    }
    drop(beside);
    let timed_out = Instant::now() >= deadline;
    let now = start.elapsed();
    slots
        .into_iter()
        .map(|s| {
            s.unwrap_or_else(|| {
                // At the deadline it is late, whatever it may still send (to `held`).
                let e = if timed_out {
                    TechniqueError::TimedOut("did not end by the mapping's deadline".into())
                } else {
                    TechniqueError::InBackground(now)
                };
                (now, Err(e))
            })
        })
        .collect()
}

/// The port mappings made for a socket, and each technique's outcome.
///
/// Keep this value as long as the socket is in use: the mappings it holds are renewed while it
/// lives and deleted from the routers when it is dropped.
///
/// A port-mapping technique still running when the mapping returned (see [`GATEWAY_GRACE`])
/// goes on in the background until the mapping's deadline: a mapping it makes is held here
/// as if it had come in time (renewed, deleted on release or drop; once released or dropped,
/// it is deleted as soon as it comes), and what it found is taken with
/// [`take_late`](Self::take_late) (or [`MappedUdpSocket::refresh`](crate::MappedUdpSocket::refresh)).
#[derive(Default)]
pub struct PortMappings {
    held: Arc<Held>,
    outcomes: Vec<TechniqueOutcome>,
    /// The socket's own interface addresses (its local endpoints).
    local: Vec<std::net::SocketAddr>,
}

impl PortMappings {
    #[cfg(test)]
    pub(crate) fn new(
        leases: Vec<Box<dyn Lease>>,
        outcomes: Vec<TechniqueOutcome>,
        local: Vec<std::net::SocketAddr>,
    ) -> Self {
        Self::with_held(Arc::default(), leases, outcomes, local)
    }

    fn with_held(
        held: Arc<Held>,
        leases: Vec<Box<dyn Lease>>,
        outcomes: Vec<TechniqueOutcome>,
        local: Vec<std::net::SocketAddr>,
    ) -> Self {
        let abandoned = {
            let mut st = held.lock();
            if st.released {
                leases
            } else {
                st.leases.extend(leases);
                Vec::new()
            }
        };
        drop(abandoned);
        PortMappings { held, outcomes, local }
    }

    /// True when no router holds a mapping for this socket.
    pub fn is_empty(&self) -> bool {
        self.held.lock().leases.is_empty()
    }

    /// Descriptions of the live mappings.
    pub fn describe(&self) -> Vec<String> {
        self.held.lock().leases.iter().map(|l| l.describe()).collect()
    }

    /// Calls `f` with the first live lease of type `T` (a technique's own lease type, see
    /// [`Lease::as_any`]) and returns what it returns; `None` when no such lease is held. The
    /// mappings are locked while `f` runs: `f` must not call back into them.
    pub fn with_lease<T: 'static, R>(&self, f: impl FnOnce(&T) -> R) -> Option<R> {
        let held = self.held.lock();
        held.leases
            .iter()
            .find_map(|l| l.as_any().and_then(|a| a.downcast_ref::<T>()))
            .map(f)
    }

    /// Each technique's outcome, in the order the techniques were registered. Techniques that
    /// did not apply are included, with [`TechniqueError::NotApplicable`]; those still running
    /// when the mapping returned with [`TechniqueError::InBackground`] until
    /// [`take_late`](Self::take_late) takes what they ended with.
    pub fn outcomes(&self) -> &[TechniqueOutcome] {
        &self.outcomes
    }

    /// How many techniques still run in the background (see [`GATEWAY_GRACE`]).
    pub fn running(&self) -> usize {
        self.held.lock().running
    }

    /// Waits until no technique runs in the background, or until `deadline` (they end by the
    /// mapping's own deadline); whether none does.
    pub fn wait_background_until(&self, deadline: Instant) -> bool {
        self.held.wait_idle(deadline)
    }

    /// Takes what the techniques that went on in the background found since the last call:
    /// their outcomes replace their [`TechniqueError::InBackground`] ones, and the endpoints they
    /// found are returned (merge them into the socket's, as
    /// [`MappedUdpSocket::refresh`](crate::MappedUdpSocket::refresh) does, before giving them to
    /// a peer with [`gen_rendezvous_info`](crate::gen_rendezvous_info)). Their leases are
    /// already held here.
    pub fn take_late(&mut self) -> Vec<MappedSocketAddr> {
        let (late, endpoints) = {
            let mut st = self.held.lock();
            (std::mem::take(&mut st.late), std::mem::take(&mut st.late_endpoints))
        };
        for outcome in late {
            match self
                .outcomes
                .iter_mut()
                .find(|o| o.technique == outcome.technique && matches!(o.result, Err(TechniqueError::InBackground(_))))
            {
                Some(slot) => *slot = outcome,
                None => self.outcomes.push(outcome),
            }
        }
        endpoints
    }

    /// [`take_late`](Self::take_late), merged into `endpoints` (a mapped socket's); how many
    /// endpoints that added.
    pub fn merge_late_into(&mut self, endpoints: &mut Vec<MappedSocketAddr>) -> usize {
        let before = endpoints.len();
        crate::endpoint::merge_endpoints(endpoints, self.take_late());
        endpoints.len() - before
    }

    /// Whether some technique found an endpoint beyond this host's own interface addresses
    /// (what a peer outside this network needs).
    pub fn found_external(&self) -> bool {
        self.outcomes.iter().any(|o| {
            o.result
                .as_ref()
                .is_ok_and(|eps| eps.iter().any(|e| !self.local.contains(&e.addr)))
        })
    }

    /// When no technique found an endpoint beyond this host's own interface addresses: why, in
    /// one line that names each technique and what stopped it; `None` when one did. Mapping
    /// itself succeeds either way (the local endpoints still serve peers on this network), so
    /// a program that needs peers elsewhere checks this.
    ///
    #[cfg_attr(not(doctest), doc = include_str!("../doc/port_mappings_why_no_external.md"))]
    pub fn why_no_external(&self) -> Option<String> {
        if self.found_external() {
            return None;
        }
        let tried: Vec<String> = self
            .outcomes
            .iter()
            .filter_map(|o| match &o.result {
                Err(e) if e.is_not_applicable() => None,
                Err(e) => Some(format!("{}: {e}", o.technique)),
                Ok(eps) if eps.is_empty() => Some(format!("{}: found nothing", o.technique)),
                Ok(_) => Some(format!("{}: found only this host's own addresses", o.technique)),
            })
            .collect();
        let skipped: Vec<String> = self
            .outcomes
            .iter()
            .filter_map(|o| match &o.result {
                Err(e) if e.is_not_applicable() => Some(format!("{}: {e}", o.technique)),
                _ => None,
            })
            .collect();
        Some(if !tried.is_empty() {
            format!("no external address ({})", tried.join("; "))
        } else if skipped.is_empty() {
            "no external address: no technique ran (give a STUN or simple server)".to_owned()
        } else {
            format!("no external address: no technique ran ({})", skipped.join("; "))
        })
    }

    /// Deletes every mapping now, and waits until each deletion is over (done, or given up at
    /// its technique's own deadline). The deletions run at the same time. Techniques still
    /// running in the background are waited for first (they end by the mapping's deadline),
    /// and a mapping they make is deleted at once, so that a program that exits after this
    /// leaves no mapping behind. Dropping deletes too, but may not wait: call this before a
    /// program exits.
    pub fn release(&mut self) {
        {
            self.held.lock().released = true;
        }
        let until = self.held.lock().until;
        if let Some(until) = until
            && !self.held.wait_idle(until)
        {
            log::info!("a technique still runs in the background past the mapping's deadline: not waiting for it");
        }
        let mut leases = std::mem::take(&mut self.held.lock().leases);
        for lease in &mut leases {
            log::debug!("releasing {}", lease.describe());
            lease.start_release();
        }
        for mut lease in leases {
            lease.wait_released();
            drop(lease);
        }
    }
}

impl Drop for PortMappings {
    /// Deletes the mappings without waiting; one that a technique in the background makes
    /// later is deleted as soon as it comes.
    fn drop(&mut self) {
        self.held.abandon();
    }
}

impl std::fmt::Debug for PortMappings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PortMappings")
            .field("leases", &self.describe())
            .field("outcomes", &self.outcomes)
            .field("running", &self.running())
            .finish()
    }
}

/// Gathers what techniques found, in registration order, into endpoints and [`PortMappings`].
pub(crate) struct Collector {
    protocol: Protocol,
    endpoints: Vec<MappedSocketAddr>,
    leases: Vec<Box<dyn Lease>>,
    outcomes: Vec<TechniqueOutcome>,
    held: Arc<Held>,
}

impl Collector {
    /// Starts with the socket's local endpoints; `held` is shared with the techniques that go
    /// on in the background.
    pub(crate) fn new(protocol: Protocol, local: Vec<MappedSocketAddr>, held: Arc<Held>) -> Self {
        Collector {
            protocol,
            endpoints: local,
            leases: Vec::new(),
            outcomes: Vec::new(),
            held,
        }
    }

    /// Records one technique's result.
    pub(crate) fn add(
        &mut self,
        technique: &str,
        elapsed: Duration,
        result: Result<crate::technique::TechniqueMapping, TechniqueError>,
    ) {
        let result = match result {
            Ok(mapping) => {
                if let Some(lease) = mapping.lease {
                    log::info!("{technique}: holding {}", lease.describe());
                    self.leases.push(lease);
                }
                crate::endpoint::merge_endpoints(&mut self.endpoints, mapping.endpoints.iter().cloned());
                log::debug!("{technique}: {:?} in {elapsed:?}", mapping.endpoints);
                Ok(mapping.endpoints)
            }
            Err(e) => {
                if e.is_not_applicable() || matches!(e, TechniqueError::InBackground(_)) {
                    log::debug!("{technique}: {e}");
                } else {
                    log::info!("{technique} failed after {elapsed:?}: {e}");
                }
                Err(e)
            }
        };
        self.outcomes.push(TechniqueOutcome {
            technique: technique.to_owned(),
            protocol: self.protocol,
            elapsed,
            result,
        });
    }

    pub(crate) fn finish(self) -> (Vec<MappedSocketAddr>, PortMappings) {
        let local = self
            .endpoints
            .iter()
            .filter(|e| e.technique == crate::local::LOCAL)
            .map(|e| e.addr)
            .collect();
        (
            self.endpoints,
            PortMappings::with_held(self.held, self.leases, self.outcomes, local),
        )
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use std::sync::{Arc, Mutex};

    /// A lease that records what is done to it.
    struct Recorded(&'static str, Arc<Mutex<Vec<String>>>);

    impl Lease for Recorded {
        fn describe(&self) -> String {
            self.0.to_owned()
        }
        fn start_release(&mut self) {
            self.1.lock().unwrap().push(format!("start {}", self.0));
        }
        fn wait_released(&mut self) {
            self.1.lock().unwrap().push(format!("wait {}", self.0));
        }
    }

    impl Drop for Recorded {
        fn drop(&mut self) {
            self.1.lock().unwrap().push(format!("drop {}", self.0));
        }
    }

    #[test]
    fn renewal_retries_are_neither_tight_nor_lazy() {
        assert_eq!(
            retry_after_failed_renewal(Duration::from_secs(2)),
            Duration::from_millis(500)
        );
        assert_eq!(
            retry_after_failed_renewal(Duration::from_secs(80)),
            Duration::from_secs(10)
        );
        assert_eq!(
            retry_after_failed_renewal(Duration::from_secs(3600)),
            Duration::from_secs(60)
        );
        assert_eq!(
            retry_after_failed_renewal(Duration::from_secs(7200)),
            Duration::from_secs(60)
        );
    }

    #[test]
    fn release_starts_every_deletion_before_waiting_for_any() {
        let log = Arc::new(Mutex::new(Vec::new()));
        let leases: Vec<Box<dyn Lease>> = vec![
            Box::new(Recorded("a", Arc::clone(&log))),
            Box::new(Recorded("b", Arc::clone(&log))),
        ];
        let mut mappings = PortMappings::new(leases, Vec::new(), Vec::new());
        mappings.release();
        assert!(mappings.is_empty());
        assert_eq!(
            *log.lock().unwrap(),
            ["start a", "start b", "wait a", "drop a", "wait b", "drop b"]
        );
    }

    #[test]
    fn an_address_of_the_host_itself_is_not_external() {
        use crate::{MappedSocketAddr, Protocol};
        let lan = MappedSocketAddr::new("192.168.1.2:5".parse().unwrap(), false, crate::local::LOCAL);
        // A STUN server on the LAN sees the host's own address.
        let mut c = Collector::new(Protocol::Udp, vec![lan.clone()], Arc::default());
        let seen = MappedSocketAddr::new(lan.addr, true, "stun");
        c.add("stun", Duration::ZERO, Ok(vec![seen].into()));
        let (_, pm) = c.finish();
        assert!(!pm.found_external());
        assert_eq!(
            pm.why_no_external().as_deref(),
            Some("no external address (stun: found only this host's own addresses)")
        );
        // Techniques that did not apply say why, when none ran.
        let mut c = Collector::new(Protocol::Udp, vec![lan], Arc::default());
        c.add(
            "stun",
            Duration::ZERO,
            Err(TechniqueError::NotApplicable(
                "no IPv4 stun server given (the socket is IPv4)".into(),
            )),
        );
        let (_, pm) = c.finish();
        assert_eq!(
            pm.why_no_external().as_deref(),
            Some(
                "no external address: no technique ran (stun: not applicable: no IPv4 stun server given (the socket is IPv4))"
            )
        );
    }
}
