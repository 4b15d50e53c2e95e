//! [`StunExchange`]: STUN over the mapped UDP socket, without the socket (a protocol core:
//! fed datagrams, the time and a random generator; its driver is
//! [`StunTechnique`](crate::StunTechnique)).
//!
//! Whether a UDP endpoint is `nat_restricted` is found out, not assumed: beside the Binding
//! request, the exchange asks a server that supports RFC 5780 to answer from its other address
//! and port (CHANGE-REQUEST). If that answer gets through the NAT, the NAT filters
//! independently of the endpoint and any peer can reach the endpoint without hole punching.
//! If it does not arrive within a short window ([`FilterWindow`]: by default one round trip, as
//! measured by the first Binding answer, plus 5 ms), the endpoint is marked restricted (the
//! safe side: hole punching also works towards an unrestricted endpoint, so a verdict that
//! misses a late answer costs a punch, never a connection). The check is only made
//! when the other address's IP is one the socket has not sent to: a NAT filtering by address
//! alone would let that answer in too, so giving both addresses of one RFC 5780 server as
//! servers leaves the endpoint restricted.

#![deny(clippy::disallowed_methods)] // a protocol core: see clippy.toml

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use natt_core::{MappedSocketAddr, TechniqueError, Transmit, UdpExchange};
use rand::rngs::StdRng;

use crate::message::{self, decode_response};
use crate::transaction::Transaction;

/// The technique's name.
pub const NAME: &str = "stun";

/// Once one server has answered, the others get this many times its round trip (but at least
/// [`MIN_GRACE`]) to answer too.
pub const GRACE_RTTS: u32 = 3;
/// The least time the other servers get after the first answer.
pub const MIN_GRACE: Duration = Duration::from_millis(100);
/// Once one server has answered, the requests of those that have not are sent again at once
/// and then every round trip of the first (at least this often apart) until the grace ends: a
/// lost request or answer would otherwise wait for its retransmission (500 ms by default),
/// past the grace, and its server's observation be missing. Two servers' observations are how
/// a side learns that its NAT's mapping varies by destination
/// (`natt_core::rendezvous::mapping_varies`), which the punch through a symmetric NAT needs.
pub const HURRY_MIN: Duration = Duration::from_millis(20);
/// By default the filtering check waits this many round trips, plus
/// [`FILTER_WINDOW_MARGIN`], for the answer from the server's other address
/// ([`FilterWindow::DEFAULT`]).
pub const FILTER_WINDOW_RTTS: u32 = 1;
/// What the default filtering window adds to its round trips: room for the server's and the
/// hosts' scheduling, and for a path to the other address a little longer than to the first.
pub const FILTER_WINDOW_MARGIN: Duration = Duration::from_millis(5);
/// The least retransmission timeout of the filtering check's request.
pub const MIN_CHECK_RTO: Duration = Duration::from_millis(20);

/// How long the filtering check waits for the answer from the server's other address:
/// `rtts` times the round trip that the first Binding answer measured, plus `margin`,
/// counted from when the check's request is first sent (at that answer).
///
/// That answer, when the NAT lets it in, comes about one round trip after the request, so the
/// default, [`FilterWindow::DEFAULT`] (1 round trip + 5 ms), ends the check about 2 round
/// trips + 5 ms after the mapping started. An answer that comes later (a server or path slower than
/// the measured round trip, a lost request or answer) is missed, and the endpoint is then
/// marked restricted: the safe side, since hole punching works with any NAT, only the chance
/// to skip it is lost. A program that needs the verdict to be surer sets a longer window,
/// e.g. [`FilterWindow::PATIENT`] (4 round trips + 250 ms, more than natt waited before it
/// followed the round trip); the cost is that every mapping behind a NAT that filters waits
/// the whole window, since only an answer that gets in ends it early. Within the window the
/// check's request is retransmitted, first after 2 round trips (at least 20 ms,
/// [`MIN_CHECK_RTO`]) and then at doubling intervals, so a longer window also rides out a lost
/// datagram; the default one sends it once (a retransmission's answer could not come in time).
///
/// ```
/// use natt_stun::exchange::FilterWindow;
/// use std::time::Duration;
///
/// let w = FilterWindow::DEFAULT;
/// assert_eq!(w.window(Duration::from_millis(50)), Duration::from_millis(55));
/// let sure = FilterWindow { rtts: 4, margin: Duration::from_millis(250) };
/// assert_eq!(sure, FilterWindow::PATIENT);
/// assert_eq!(sure.window(Duration::from_millis(50)), Duration::from_millis(450));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FilterWindow {
    /// Round trips to wait (as measured by the first Binding answer).
    pub rtts: u32,
    /// Added to the round trips.
    pub margin: Duration,
}

impl FilterWindow {
    /// The default: [`FILTER_WINDOW_RTTS`] round trip + [`FILTER_WINDOW_MARGIN`].
    pub const DEFAULT: FilterWindow = FilterWindow {
        rtts: FILTER_WINDOW_RTTS,
        margin: FILTER_WINDOW_MARGIN,
    };
    /// A surer verdict for a program that needs it: 4 round trips + 250 ms, which every
    /// mapping behind a filtering NAT then waits.
    pub const PATIENT: FilterWindow = FilterWindow {
        rtts: 4,
        margin: Duration::from_millis(250),
    };

    /// The window for a measured round trip `rtt`.
    pub fn window(&self, rtt: Duration) -> Duration {
        rtt.saturating_mul(self.rtts).saturating_add(self.margin)
    }
}

impl Default for FilterWindow {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// Endpoints from mapped addresses; `open` when filtering was found endpoint-independent. An
/// address that is one of the socket's own (`locals`) has no NAT in front of it.
pub(crate) fn endpoints(locals: &[SocketAddr], mapped: &[SocketAddr], open: bool) -> Vec<MappedSocketAddr> {
    let mut out = Vec::new();
    for &addr in mapped {
        let restricted = !open && !natt_core::family::open_without_nat(locals, addr);
        natt_core::endpoint::merge_endpoints(&mut out, [MappedSocketAddr::new(addr, restricted, NAME)]);
    }
    out
}

/// The filtering check: a CHANGE-REQUEST to a server that named its other address.
#[derive(Debug)]
struct FilterCheck {
    primary: SocketAddr,
    transaction: Transaction,
    window_end: Instant,
}

impl FilterCheck {
    /// The answer came from another address and port than the request went to, and from an
    /// IP the socket never sent to (`contacted`): an address-dependent filter lets in anything
    /// from an IP the socket has sent to, so only a stranger's answer proves the filter open.
    fn confirmed_open(&self, contacted: &[SocketAddr]) -> bool {
        self.transaction.success().is_some()
            && self.transaction.answered_from().is_some_and(|from| {
                from.ip() != self.primary.ip()
                    && from.port() != self.primary.port()
                    && contacted.iter().all(|c| c.ip() != from.ip())
            })
    }

    fn is_done(&self, now: Instant) -> bool {
        self.transaction.response.is_some() || now >= self.window_end
    }
}

/// STUN over the mapped UDP socket, without the socket: a Binding request to every server,
/// retransmitted as RFC 8489 says, and a filtering check against the first server that
/// supports RFC 5780.
///
/// ```
/// use natt_core::UdpExchange;
/// use natt_stun::message::{decode_request, encode_success};
/// use rand::{SeedableRng, rngs::StdRng};
/// use std::time::{Duration, Instant};
///
/// let server = "203.0.113.10:3478".parse().unwrap();
/// let now = Instant::now();
/// // The socket's own addresses (its driver lists them: `natt_core::local::local_addrs`).
/// let locals = vec!["192.168.1.2:4000".parse().unwrap()];
/// let rng = StdRng::seed_from_u64(1); // a driver's: `StdRng::from_os_rng()`
/// let mut ex = natt_stun::StunExchange::new(locals, &[server], Duration::from_millis(500), now, rng).unwrap();
/// let request = ex.poll_transmit(now).unwrap();
/// let txid = decode_request(&request.payload).unwrap().txid;
/// // An old server: no OTHER-ADDRESS, so no filtering check; the endpoint stays restricted.
/// let response = encode_success(txid, "198.51.100.1:4000".parse().unwrap(), None, None).unwrap();
/// assert!(ex.handle_datagram(now, server, &response));
/// let endpoints = ex.poll_result(now).unwrap().unwrap();
/// assert_eq!(endpoints[0].addr.to_string(), "198.51.100.1:4000");
/// assert!(endpoints[0].nat_restricted);
/// ```
#[derive(Debug)]
pub struct StunExchange {
    locals: Vec<SocketAddr>,
    bindings: Vec<Transaction>,
    filter: Option<FilterCheck>,
    grace_until: Option<Instant>,
    /// When the unanswered requests are next sent again during the grace, and how often.
    hurry: Option<(Instant, Duration)>,
    hurried: std::collections::VecDeque<Transmit>,
    rto: Duration,
    filter_window: FilterWindow,
    rng: StdRng,
}

impl StunExchange {
    /// An exchange asking each of `servers`, starting at `now`, for a socket whose own
    /// addresses are `locals` (those peers on this host's networks reach it at:
    /// [`natt_core::local::local_addrs`]; an answer naming one of them means no NAT in
    /// between). Transaction ids are drawn from `rng`.
    pub fn new(
        locals: Vec<SocketAddr>,
        servers: &[SocketAddr],
        rto: Duration,
        now: Instant,
        mut rng: StdRng,
    ) -> Result<Self, message::StunError> {
        Ok(StunExchange {
            locals,
            bindings: servers
                .iter()
                .map(|&s| Transaction::new(s, None, rto, now, &mut rng))
                .collect::<Result<_, _>>()?,
            filter: None,
            grace_until: None,
            hurry: None,
            hurried: std::collections::VecDeque::new(),
            rto,
            filter_window: FilterWindow::DEFAULT,
            rng,
        })
    }

    /// Sets how long the filtering check waits ([`FilterWindow::DEFAULT`] unless set).
    pub fn with_filter_window(mut self, window: FilterWindow) -> Self {
        self.filter_window = window;
        self
    }

    fn mapped(&self) -> Vec<SocketAddr> {
        self.bindings
            .iter()
            .filter_map(|t| t.success().map(|s| s.mapped))
            .collect()
    }

    fn open(&self) -> bool {
        let contacted: Vec<SocketAddr> = self.bindings.iter().map(|t| t.destination).collect();
        self.filter.as_ref().is_some_and(|f| f.confirmed_open(&contacted))
    }

    /// True when a binding request of this exchange went to `ip`.
    fn contacted(&self, ip: std::net::IpAddr) -> bool {
        self.bindings.iter().any(|t| t.destination.ip() == ip)
    }

    fn start_filter_check(&mut self, now: Instant, primary: SocketAddr, rtt: Duration) {
        // At least MIN_CHECK_RTO even when the exchange's own RTO is set lower: this request is
        // retransmitted without a count limit until the window ends. Every 2 round trips: a
        // retransmission's answer can then still come within a window of 3 round trips or
        // more, and the default window (1 round trip + 5 ms) sends the request once.
        let rto = (rtt * 2).clamp(MIN_CHECK_RTO, self.rto.max(MIN_CHECK_RTO));
        let window = self.filter_window.window(rtt);
        match Transaction::new(primary, Some((true, true)), rto, now, &mut self.rng) {
            Ok(t) => {
                self.filter = Some(FilterCheck {
                    primary,
                    transaction: t.unlimited(),
                    window_end: now + window,
                })
            }
            Err(e) => log::debug!("no filtering check: {e}"),
        }
    }
}

impl UdpExchange for StunExchange {
    fn poll_transmit(&mut self, now: Instant) -> Option<Transmit> {
        if let Some(f) = &mut self.filter
            && !f.is_done(now)
            && let Some(t) = f.transaction.poll_transmit(now)
        {
            return Some(t);
        }
        if let Some(t) = self.bindings.iter_mut().find_map(|t| t.poll_transmit(now)) {
            return Some(t);
        }
        if let Some((next, every)) = self.hurry
            && now >= next
        {
            if self.grace_until.is_some_and(|g| now < g) {
                self.hurried
                    .extend(self.bindings.iter().filter_map(Transaction::request));
                self.hurry = Some((now + every, every));
            } else {
                self.hurry = None;
            }
        }
        self.hurried.pop_front()
    }

    fn poll_timeout(&self) -> Option<Instant> {
        let bindings = self.bindings.iter().filter_map(Transaction::poll_timeout);
        let filter = self
            .filter
            .iter()
            .filter(|f| f.transaction.response.is_none())
            .flat_map(|f| f.transaction.poll_timeout().into_iter().chain([f.window_end]));
        // The grace matters only while a server has not answered: once all have, a grace in
        // the past would have the driver spin until the filtering window ends.
        let unanswered = self.bindings.iter().any(|t| t.response.is_none());
        let grace = self.grace_until.filter(|_| unanswered);
        let hurry = self.hurry.map(|(next, _)| next).filter(|_| unanswered);
        bindings.chain(filter).chain(grace).chain(hurry).min()
    }

    fn handle_datagram(&mut self, now: Instant, from: SocketAddr, data: &[u8]) -> bool {
        let Ok(response) = decode_response(data) else {
            return false;
        };
        if let Some(f) = &mut self.filter
            && f.transaction.handle(now, from, &response)
        {
            return true;
        }
        let Some(t) = self.bindings.iter_mut().find(|t| t.txid == response.txid) else {
            return false;
        };
        t.handle(now, from, &response);
        if let Some(success) = t.success() {
            let rtt = t.rtt().unwrap_or(Duration::ZERO);
            let (primary, other) = (t.destination, success.other_address);
            if self.grace_until.is_none() {
                self.grace_until = Some(now + (rtt * GRACE_RTTS).max(MIN_GRACE));
                self.hurry = Some((now, rtt.max(HURRY_MIN)));
            }
            // A check whose answer comes from an IP already asked would prove nothing.
            if let Some(other) = other
                && self.filter.is_none()
                && !self.contacted(other.ip())
            {
                self.start_filter_check(now, primary, rtt);
            }
        } else if let Some(code) = t.error_code() {
            log::debug!("STUN server {from} answered error {code}");
        }
        true
    }

    fn poll_result(&mut self, now: Instant) -> Option<Result<Vec<MappedSocketAddr>, TechniqueError>> {
        let bindings_done = self.bindings.iter().all(|t| t.is_done(now)) || self.grace_until.is_some_and(|g| now >= g);
        let filter_done = self.filter.as_ref().is_none_or(|f| f.is_done(now));
        if !(bindings_done && filter_done) {
            return None;
        }
        Some(self.finish())
    }

    fn finish(&mut self) -> Result<Vec<MappedSocketAddr>, TechniqueError> {
        let mapped = self.mapped();
        if mapped.is_empty() {
            let errors: Vec<String> = self
                .bindings
                .iter()
                .map(|t| match &t.response {
                    Some((_, r, _)) => match &r.result {
                        Err((code, reason)) => format!("{}: error {code} {reason}", t.destination),
                        Ok(_) => format!("{}: answered", t.destination),
                    },
                    None => format!("{}: no answer", t.destination),
                })
                .collect();
            return Err(TechniqueError::TimedOut(format!(
                "no STUN server gave an address ({})",
                errors.join(", ")
            )));
        }
        Ok(endpoints(&self.locals, &mapped, self.open()))
    }
}

#[cfg(test)]
#[allow(clippy::disallowed_methods)] // tests take a starting instant from the clock
mod tests {
    use super::*;
    use crate::message::{decode_request, encode_error, encode_success};
    use crate::transaction::DEFAULT_RTO;
    use rand::SeedableRng;

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    /// The socket's own addresses: a host on a private network.
    fn locals() -> Vec<SocketAddr> {
        vec![addr("192.168.1.2:4000")]
    }

    fn start(servers: &[SocketAddr]) -> (StunExchange, Instant) {
        let t0 = Instant::now();
        (
            StunExchange::new(locals(), servers, DEFAULT_RTO, t0, StdRng::seed_from_u64(1)).unwrap(),
            t0,
        )
    }

    #[test]
    fn a_server_that_has_not_answered_is_asked_again_within_the_grace() {
        let (s1, s2) = (addr("203.0.113.10:3478"), addr("203.0.113.20:3478"));
        let (mut ex, t0) = start(&[s1, s2]);
        let first = ex.poll_transmit(t0).unwrap();
        let second = ex.poll_transmit(t0).unwrap();
        assert_eq!((first.destination, second.destination), (s1, s2));
        assert!(ex.poll_transmit(t0).is_none());
        // s1 answers after 5 ms; the request to s2 (or its answer) was lost.
        let t1 = t0 + Duration::from_millis(5);
        let txid = decode_request(&first.payload).unwrap().txid;
        assert!(ex.handle_datagram(
            t1,
            s1,
            &encode_success(txid, addr("198.51.100.1:40001"), None, None).unwrap()
        ));
        // s2's request goes again at once (the same request), then every HURRY_MIN (the round
        // trip is shorter) until the grace ends, MIN_GRACE after the answer.
        let mut again = Vec::new();
        let mut now = t1;
        while now < t1 + MIN_GRACE + HURRY_MIN {
            if ex.poll_result(now).is_some() {
                break;
            }
            while let Some(t) = ex.poll_transmit(now) {
                assert_eq!((t.destination, &t.payload), (s2, &second.payload));
                again.push(now - t1);
            }
            now = ex.poll_timeout().unwrap().max(now + Duration::from_millis(1));
        }
        let ms = |n| Duration::from_millis(n);
        assert_eq!(again, [ms(0), ms(20), ms(40), ms(60), ms(80)]);
        // The second answer arrives within the grace: both observations count.
        let (mut ex, t0) = start(&[s1, s2]);
        let (a, b) = (ex.poll_transmit(t0).unwrap(), ex.poll_transmit(t0).unwrap());
        let id = |t: &Transmit| decode_request(&t.payload).unwrap().txid;
        assert!(ex.handle_datagram(
            t1,
            s1,
            &encode_success(id(&a), addr("198.51.100.1:40001"), None, None).unwrap()
        ));
        assert_eq!(ex.poll_transmit(t1).map(|t| t.destination), Some(s2));
        let t2 = t1 + ms(30);
        assert!(ex.handle_datagram(
            t2,
            s2,
            &encode_success(id(&b), addr("198.51.100.1:51234"), None, None).unwrap()
        ));
        let eps = ex.poll_result(t2).unwrap().unwrap();
        assert_eq!(eps.len(), 2, "{eps:?}");
    }

    #[test]
    fn filtering_check_marks_endpoint_open_when_other_address_answers() {
        let (p, o) = (addr("203.0.113.10:3478"), addr("203.0.113.11:3479"));
        let (mut ex, t0) = start(&[p]);
        let req = ex.poll_transmit(t0).unwrap();
        let txid = decode_request(&req.payload).unwrap().txid;
        let t1 = t0 + Duration::from_millis(10);
        let resp = encode_success(txid, addr("198.51.100.1:4000"), Some(o), Some(p)).unwrap();
        assert!(ex.handle_datagram(t1, p, &resp));
        // The filtering check goes out at once, to the primary address, with CHANGE-REQUEST.
        let change = ex.poll_transmit(t1).unwrap();
        assert_eq!(change.destination, p);
        let creq = decode_request(&change.payload).unwrap();
        assert!(creq.change_ip && creq.change_port);
        assert!(ex.poll_result(t1).is_none(), "waits for the filtering check");
        // The answer arrives from the other address: endpoint-independent filtering.
        let cresp = encode_success(creq.txid, addr("198.51.100.1:4000"), Some(o), Some(o)).unwrap();
        assert!(ex.handle_datagram(t1, o, &cresp));
        let eps = ex.poll_result(t1 + MIN_GRACE).unwrap().unwrap();
        assert!(!eps[0].nat_restricted);
    }

    #[test]
    fn no_answer_from_other_address_means_restricted() {
        let (p, o) = (addr("203.0.113.10:3478"), addr("203.0.113.11:3479"));
        let (mut ex, t0) = start(&[p]);
        let req = ex.poll_transmit(t0).unwrap();
        let txid = decode_request(&req.payload).unwrap().txid;
        let resp = encode_success(txid, addr("198.51.100.1:4000"), Some(o), None).unwrap();
        // A 10 ms round trip: the check waits 1 round trip + 5 ms from its request.
        let t1 = t0 + Duration::from_millis(10);
        assert!(ex.handle_datagram(t1, p, &resp));
        let change = ex.poll_transmit(t1).unwrap();
        assert!(decode_request(&change.payload).unwrap().change_ip);
        let end = t1 + FilterWindow::DEFAULT.window(Duration::from_millis(10));
        assert_eq!(end, t1 + Duration::from_millis(15));
        assert_eq!(ex.poll_timeout(), Some(end), "wakes its driver at the window's end");
        assert!(ex.poll_result(end - Duration::from_millis(1)).is_none());
        assert!(ex.poll_transmit(end - Duration::from_millis(1)).is_none(), "sent once");
        let eps = ex.poll_result(end).unwrap().unwrap();
        assert!(eps[0].nat_restricted);
    }

    /// The 10 ms round trip of `no_answer_from_other_address_means_restricted`, with the
    /// CHANGE-REQUEST's answer from the other address coming `after` its request: the verdict.
    fn verdict_with_answer_after(window: FilterWindow, after: Duration) -> bool {
        let (p, o) = (addr("203.0.113.10:3478"), addr("203.0.113.11:3479"));
        let (ex, t0) = start(&[p]);
        let mut ex = ex.with_filter_window(window);
        let txid = decode_request(&ex.poll_transmit(t0).unwrap().payload).unwrap().txid;
        let t1 = t0 + Duration::from_millis(10);
        let mapped = addr("198.51.100.1:4000");
        assert!(ex.handle_datagram(t1, p, &encode_success(txid, mapped, Some(o), Some(p)).unwrap()));
        let creq = decode_request(&ex.poll_transmit(t1).unwrap().payload).unwrap();
        let at = t1 + after;
        // The driver asks for a result at every wake-up before the answer.
        let mut now = t1;
        while now < at {
            if let Some(r) = ex.poll_result(now) {
                return r.unwrap()[0].nat_restricted;
            }
            let _ = ex.poll_transmit(now);
            now = ex.poll_timeout().unwrap().min(at);
        }
        ex.handle_datagram(at, o, &encode_success(creq.txid, mapped, Some(o), Some(o)).unwrap());
        ex.poll_result(at).unwrap().unwrap()[0].nat_restricted
    }

    #[test]
    fn the_window_follows_the_round_trip() {
        let ms = Duration::from_millis;
        // An answer about one round trip after the request gets in: open.
        assert!(!verdict_with_answer_after(FilterWindow::DEFAULT, ms(10)));
        assert!(!verdict_with_answer_after(FilterWindow::DEFAULT, ms(14)));
        // A later one is missed: restricted, the safe side.
        assert!(verdict_with_answer_after(FilterWindow::DEFAULT, ms(16)));
        // A longer window, set by a program that needs a surer verdict, still takes it.
        assert!(!verdict_with_answer_after(FilterWindow::PATIENT, ms(16)));
        assert!(!verdict_with_answer_after(FilterWindow::PATIENT, ms(289)));
        assert!(verdict_with_answer_after(FilterWindow::PATIENT, ms(291)));
    }

    #[test]
    fn a_longer_window_retransmits_the_check() {
        let (p, o) = (addr("203.0.113.10:3478"), addr("203.0.113.11:3479"));
        let (ex, t0) = start(&[p]);
        let mut ex = ex.with_filter_window(FilterWindow::PATIENT);
        let txid = decode_request(&ex.poll_transmit(t0).unwrap().payload).unwrap().txid;
        let t1 = t0 + Duration::from_millis(10);
        let mapped = addr("198.51.100.1:4000");
        assert!(ex.handle_datagram(t1, p, &encode_success(txid, mapped, Some(o), None).unwrap()));
        let end = t1 + Duration::from_millis(290);
        let mut sent = Vec::new();
        let mut now = t1;
        while ex.poll_result(now).is_none() {
            while ex.poll_transmit(now).is_some() {
                sent.push((now - t1).as_millis());
            }
            now = ex.poll_timeout().unwrap();
        }
        assert_eq!(now, end);
        // Every 2 round trips (20 ms) at first, doubling: each answer could still come in time.
        assert_eq!(sent, [0, 20, 60, 140]);
    }

    #[test]
    fn an_answer_from_the_same_address_proves_nothing() {
        let (p, o) = (addr("203.0.113.10:3478"), addr("203.0.113.11:3479"));
        let (mut ex, t0) = start(&[p]);
        let req = ex.poll_transmit(t0).unwrap();
        let txid = decode_request(&req.payload).unwrap().txid;
        ex.handle_datagram(
            t0,
            p,
            &encode_success(txid, addr("198.51.100.1:4000"), Some(o), None).unwrap(),
        );
        let change = ex.poll_transmit(t0).unwrap();
        let ctx = decode_request(&change.payload).unwrap().txid;
        // A server that ignores CHANGE-REQUEST answers from where it was asked.
        ex.handle_datagram(
            t0,
            p,
            &encode_success(ctx, addr("198.51.100.1:4000"), Some(o), None).unwrap(),
        );
        let eps = ex.poll_result(t0 + MIN_GRACE).unwrap().unwrap();
        assert!(eps[0].nat_restricted);
    }

    #[test]
    fn no_filtering_check_towards_an_ip_already_asked() {
        // Both addresses of one RFC 5780 server: an address-dependent filter would let the
        // other address's answer in, so the check is not made and the endpoint is restricted.
        let (p, p2, o) = (
            addr("203.0.113.10:3478"),
            addr("203.0.113.11:3478"),
            addr("203.0.113.11:3479"),
        );
        let (mut ex, t0) = start(&[p, p2]);
        let txids: Vec<[u8; 12]> = [ex.poll_transmit(t0).unwrap(), ex.poll_transmit(t0).unwrap()]
            .iter()
            .map(|r| decode_request(&r.payload).unwrap().txid)
            .collect();
        let mapped = addr("198.51.100.1:4000");
        assert!(ex.handle_datagram(t0, p, &encode_success(txids[0], mapped, Some(o), Some(p)).unwrap()));
        // Only p2's request again (it has not answered), no CHANGE-REQUEST.
        let sent: Vec<Transmit> = std::iter::from_fn(|| ex.poll_transmit(t0)).collect();
        assert!(
            sent.iter()
                .all(|t| t.destination == p2 && !decode_request(&t.payload).unwrap().change_ip),
            "no CHANGE-REQUEST"
        );
        let eps = ex.poll_result(t0 + MIN_GRACE).unwrap().unwrap();
        assert!(eps[0].nat_restricted);
        // Even an answer from the other address (a server that answers from there) proves nothing.
        let (mut ex, t0) = start(&[p, p2]);
        let first = decode_request(&ex.poll_transmit(t0).unwrap().payload).unwrap().txid;
        ex.start_filter_check(t0, p, Duration::from_millis(1));
        let change = ex.poll_transmit(t0).unwrap();
        let ctx = decode_request(&change.payload).unwrap();
        assert!(ctx.change_ip);
        ex.handle_datagram(t0, p, &encode_success(first, mapped, Some(o), Some(p)).unwrap());
        ex.handle_datagram(t0, o, &encode_success(ctx.txid, mapped, Some(o), Some(o)).unwrap());
        let eps = ex.poll_result(t0 + MIN_GRACE).unwrap().unwrap();
        assert!(eps[0].nat_restricted);
    }

    #[test]
    fn an_rto_below_the_check_floor_neither_panics_nor_floods() {
        // Found by the stun_exchange fuzz target: with an RTO under 20 ms (`with_rto`), the
        // filtering check's `clamp(20 ms, rto)` panicked (min > max) as soon as a server named
        // an OTHER-ADDRESS; with an RTO of zero its unlimited request would be due forever.
        let (p, o) = (addr("203.0.113.10:3478"), addr("203.0.113.11:3479"));
        for rto in [Duration::ZERO, Duration::from_millis(10)] {
            let t0 = Instant::now();
            // A window long enough for the check to be retransmitted.
            let mut ex = StunExchange::new(vec![addr("192.0.2.1:4000")], &[p], rto, t0, StdRng::seed_from_u64(2))
                .unwrap()
                .with_filter_window(FilterWindow::PATIENT);
            let txid = decode_request(&ex.poll_transmit(t0).unwrap().payload).unwrap().txid;
            let resp = encode_success(txid, addr("198.51.100.1:4000"), Some(o), None).unwrap();
            assert!(ex.handle_datagram(t0, p, &resp));
            let sent: Vec<Transmit> = std::iter::from_fn(|| ex.poll_transmit(t0)).take(100).collect();
            assert_eq!(sent.len(), 1, "one CHANGE-REQUEST at {rto:?}");
            assert!(decode_request(&sent[0].payload).unwrap().change_ip);
            assert!(
                ex.poll_transmit(t0 + MIN_CHECK_RTO - Duration::from_millis(1))
                    .is_none()
            );
            assert!(ex.poll_transmit(t0 + MIN_CHECK_RTO).is_some());
        }
    }

    #[test]
    fn error_responses_and_garbage_give_no_endpoint() {
        let p = addr("203.0.113.10:3478");
        let (mut ex, t0) = start(&[p]);
        let req = ex.poll_transmit(t0).unwrap();
        let txid = decode_request(&req.payload).unwrap().txid;
        assert!(!ex.handle_datagram(t0, p, b"garbage"));
        assert!(!ex.handle_datagram(t0, p, &req.payload), "a request is not a response");
        assert!(ex.handle_datagram(t0, p, &encode_error(txid, 400, "Bad Request", &[]).unwrap()));
        match ex.poll_result(t0).unwrap() {
            Err(TechniqueError::TimedOut(msg)) => assert!(msg.contains("400"), "{msg}"),
            r => panic!("unexpected {r:?}"),
        }
    }
}
