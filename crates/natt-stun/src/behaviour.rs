//! NAT behaviour discovery (RFC 5780 section 4): how the NAT in front of this host maps and
//! filters, found with the tests the RFC describes against a server with two addresses, or,
//! for the mapping, by comparing what several plain STUN servers see.
//!
//! Each test is a socket-free [`UdpExchange`] ([`MappingTest`], [`FilteringTest`]), a
//! protocol core given its random generator; the blocking [`discover_udp`] (in
//! [`crate::discover`], the drivers) runs them on fresh sockets. Where the evidence does not
//! decide, the answer is [`Behaviour::Unknown`], never a guess.

#![deny(clippy::disallowed_methods)] // a protocol core: see clippy.toml

use std::fmt;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use natt_core::{MappedSocketAddr, TechniqueError, Transmit, UdpExchange};
use rand::rngs::StdRng;

use crate::exchange::{FilterWindow, GRACE_RTTS, MIN_GRACE, NAME};
use crate::message::decode_response;
use crate::transaction::Transaction;

// The drivers, at their old paths.
pub use crate::discover::{discover_tcp_mapping, discover_udp, discover_udp_with};

/// A NAT's mapping or filtering behaviour (RFC 4787 terms).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Behaviour {
    /// Endpoint-independent: the same for every destination (filtering: anyone may send in).
    EndpointIndependent,
    /// Address-dependent: per destination address.
    AddressDependent,
    /// Address-and-port-dependent: per destination address and port.
    AddressAndPortDependent,
    /// The evidence does not decide.
    Unknown,
}

impl Behaviour {
    /// `endpoint-independent`, `address-dependent`, `address-and-port-dependent` or `unknown`.
    pub fn as_str(self) -> &'static str {
        match self {
            Behaviour::EndpointIndependent => "endpoint-independent",
            Behaviour::AddressDependent => "address-dependent",
            Behaviour::AddressAndPortDependent => "address-and-port-dependent",
            Behaviour::Unknown => "unknown",
        }
    }
}

impl fmt::Display for Behaviour {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The mapping behaviour from RFC 5780's tests: `m1` seen by the primary address, `m2` by the
/// alternate address at the primary port, `m3` by the alternate address and port.
pub fn classify_mapping(m1: SocketAddr, m2: Option<SocketAddr>, m3: Option<SocketAddr>) -> Behaviour {
    match (m2, m3) {
        (Some(m2), _) if m2 == m1 => Behaviour::EndpointIndependent,
        (Some(m2), Some(m3)) if m3 == m2 => Behaviour::AddressDependent,
        (Some(_), Some(_)) => Behaviour::AddressAndPortDependent,
        _ => Behaviour::Unknown,
    }
}

/// The mapping behaviour from plain servers (no RFC 5780): `seen` pairs a server with the
/// address it saw. The same address from servers on different IPs proves endpoint-independent
/// mapping; different addresses from one IP's different ports prove address-and-port
/// dependence; anything else decides nothing.
pub fn classify_mapping_across(seen: &[(SocketAddr, SocketAddr)]) -> Behaviour {
    let mut verdict = Behaviour::Unknown;
    for (i, (s1, m1)) in seen.iter().enumerate() {
        for (s2, m2) in seen.iter().skip(i + 1) {
            if s1.ip() == s2.ip() && s1.port() != s2.port() && m1 != m2 {
                return Behaviour::AddressAndPortDependent;
            }
            if s1.ip() != s2.ip() && m1 == m2 {
                verdict = Behaviour::EndpointIndependent;
            }
        }
    }
    verdict
}

/// What discovery found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NatBehaviour {
    /// The mapping behaviour.
    pub mapping: Behaviour,
    /// The filtering behaviour.
    pub filtering: Behaviour,
    /// Reflexive addresses seen, in the order of the tests.
    pub mapped: Vec<SocketAddr>,
    /// The evidence, in words (for reports and logs).
    pub evidence: Vec<String>,
    /// How long the filtering verdict took, from the start of discovery (zero when there was
    /// none to make).
    pub filtering_elapsed: Duration,
}

/// RFC 5780 section 4.3, mapping tests I–III, on one socket. Test I goes to every server; the
/// first that names an OTHER-ADDRESS gets tests II and III.
#[derive(Debug)]
pub struct MappingTest {
    test1: Vec<Transaction>,
    test2: Option<Transaction>,
    test3: Option<Transaction>,
    rto: Duration,
    grace_until: Option<Instant>,
    rng: StdRng,
}

impl MappingTest {
    /// A probe asking `servers`, starting at `now`, its transaction ids drawn from `rng`.
    pub fn new(servers: &[SocketAddr], rto: Duration, now: Instant, mut rng: StdRng) -> Result<Self, TechniqueError> {
        let test1 = servers
            .iter()
            .map(|&s| Transaction::new(s, None, rto, now, &mut rng))
            .collect::<Result<_, _>>()
            .map_err(|e| TechniqueError::Protocol(e.to_string()))?;
        Ok(MappingTest {
            test1,
            test2: None,
            test3: None,
            rto,
            grace_until: None,
            rng,
        })
    }

    fn all(&mut self) -> impl Iterator<Item = &mut Transaction> {
        self.test1
            .iter_mut()
            .chain(self.test2.iter_mut())
            .chain(self.test3.iter_mut())
    }

    /// The verdict and the addresses seen.
    pub fn verdict(&self) -> (Behaviour, Vec<SocketAddr>, Vec<String>) {
        let mut evidence = Vec::new();
        let mut mapped = Vec::new();
        let seen: Vec<(SocketAddr, SocketAddr)> = self
            .test1
            .iter()
            .filter_map(|t| t.success().map(|s| (t.destination, s.mapped)))
            .collect();
        for (server, m) in &seen {
            evidence.push(format!("{server} saw {m}"));
            mapped.push(*m);
        }
        let primary = self
            .test1
            .iter()
            .find(|t| t.success().is_some_and(|s| s.other_address.is_some()));
        let Some(primary) = primary else {
            let v = classify_mapping_across(&seen);
            evidence.push(format!("no RFC 5780 server; across servers: {v}"));
            return (v, mapped, evidence);
        };
        let m1 = primary.success().map(|s| s.mapped);
        let m2 = self.test2.as_ref().and_then(|t| t.success().map(|s| s.mapped));
        let m3 = self.test3.as_ref().and_then(|t| t.success().map(|s| s.mapped));
        for (t, m) in [(&self.test2, m2), (&self.test3, m3)] {
            if let Some(t) = t {
                match m {
                    Some(m) => {
                        evidence.push(format!("{} saw {m}", t.destination));
                        mapped.push(m);
                    }
                    None => evidence.push(format!("{} did not answer", t.destination)),
                }
            }
        }
        let v = m1.map_or(Behaviour::Unknown, |m1| classify_mapping(m1, m2, m3));
        (v, mapped, evidence)
    }
}

impl UdpExchange for MappingTest {
    fn poll_transmit(&mut self, now: Instant) -> Option<Transmit> {
        self.all().find_map(|t| t.poll_transmit(now))
    }

    fn poll_timeout(&self) -> Option<Instant> {
        self.test1
            .iter()
            .chain(self.test2.iter())
            .chain(self.test3.iter())
            .filter_map(Transaction::poll_timeout)
            .chain(self.grace_until)
            .min()
    }

    fn handle_datagram(&mut self, now: Instant, from: SocketAddr, data: &[u8]) -> bool {
        let Ok(response) = decode_response(data) else {
            return false;
        };
        if !self.all().any(|t| t.handle(now, from, &response)) {
            return false;
        }
        if self.test2.is_none() {
            let start = self.test1.iter().find_map(|t| {
                let other = t.success()?.other_address?;
                Some((t.destination, other, t.rtt().unwrap_or_default()))
            });
            if let Some((primary, other, rtt)) = start {
                let t2 = SocketAddr::new(other.ip(), primary.port());
                self.test2 = Transaction::new(t2, None, self.rto, now, &mut self.rng).ok();
                self.test3 = Transaction::new(other, None, self.rto, now, &mut self.rng).ok();
                self.grace_until = Some(now + (rtt * GRACE_RTTS).max(MIN_GRACE));
            } else if self.grace_until.is_none() {
                let rtt = self.test1.iter().find_map(Transaction::rtt).unwrap_or_default();
                self.grace_until = Some(now + (rtt * GRACE_RTTS).max(MIN_GRACE));
            }
        }
        true
    }

    fn poll_result(&mut self, now: Instant) -> Option<Result<Vec<MappedSocketAddr>, TechniqueError>> {
        let tests23_done = [&self.test2, &self.test3]
            .iter()
            .all(|t| t.as_ref().is_none_or(|t| t.is_done(now)));
        let test1_done = self.test1.iter().all(|t| t.is_done(now)) || self.grace_until.is_some_and(|g| now >= g);
        let has_5780 = self.test2.is_some();
        (test1_done && (!has_5780 || tests23_done)).then(|| self.finish())
    }

    fn finish(&mut self) -> Result<Vec<MappedSocketAddr>, TechniqueError> {
        let (_, mapped, _) = self.verdict();
        Ok(mapped
            .into_iter()
            .map(|m| MappedSocketAddr::new(m, true, NAME))
            .collect())
    }
}

/// RFC 5780 section 4.4, filtering tests I–III, on one socket: a plain request to the primary
/// address, then requests asking for the answer from the other address and port (test II) and
/// from the other port only (test III). Whatever gets through the NAT within the window tells
/// the filtering.
#[derive(Debug)]
pub struct FilteringTest {
    primary: SocketAddr,
    test1: Transaction,
    test2: Option<Transaction>,
    test3: Option<Transaction>,
    window: Duration,
    /// When set, the window follows the round trip test I measured instead of `window`.
    follow: Option<FilterWindow>,
    window_end: Option<Instant>,
    rng: StdRng,
}

impl FilteringTest {
    /// A probe of `primary`, giving tests II and III `window` (at least) to be answered, its
    /// transaction ids drawn from `rng`.
    pub fn new(
        primary: SocketAddr,
        rto: Duration,
        window: Duration,
        now: Instant,
        mut rng: StdRng,
    ) -> Result<Self, TechniqueError> {
        Ok(FilteringTest {
            primary,
            test1: Transaction::new(primary, None, rto, now, &mut rng)
                .map_err(|e| TechniqueError::Protocol(e.to_string()))?,
            test2: None,
            test3: None,
            window,
            follow: None,
            window_end: None,
            rng,
        })
    }

    /// Makes tests II and III wait `window` for the round trip that test I measured (as the
    /// mapping's filtering check does, [`FilterWindow::DEFAULT`] by default there) instead of the
    /// fixed window given to [`new`](Self::new). An answer that a NAT lets in comes about one
    /// round trip after the request; one that comes later is missed, and the verdict is then
    /// the more restrictive one (a longer window, such as [`FilterWindow::PATIENT`], makes it
    /// surer and every probe behind a filtering NAT slower).
    pub fn following_rtt(mut self, window: FilterWindow) -> Self {
        self.follow = Some(window);
        self
    }

    /// The verdict, with the evidence in words.
    pub fn verdict(&self) -> (Behaviour, Vec<String>) {
        let p = self.primary;
        let Some(s1) = self.test1.success() else {
            return (Behaviour::Unknown, vec![format!("{p} did not answer")]);
        };
        if s1.other_address.is_none() {
            return (Behaviour::Unknown, vec![format!("{p} does not support RFC 5780")]);
        }
        let from = |t: &Option<Transaction>| t.as_ref().and_then(|t| t.success().and(t.answered_from()));
        let refused = |t: &Option<Transaction>| t.as_ref().and_then(Transaction::error_code);
        match (from(&self.test2), from(&self.test3)) {
            (Some(f), _) if f.ip() != p.ip() && f.port() != p.port() => (
                Behaviour::EndpointIndependent,
                vec![format!("an answer from {f} (other address and port) got in")],
            ),
            (_, Some(f)) if f.ip() == p.ip() && f.port() != p.port() => (
                Behaviour::AddressDependent,
                vec![format!(
                    "an answer from {f} (other port) got in, none from the other address"
                )],
            ),
            (Some(f), _) | (_, Some(f)) => (
                Behaviour::Unknown,
                vec![format!(
                    "the server answered a change request from {f}: it ignored the change"
                )],
            ),
            (None, None) => match refused(&self.test2).or(refused(&self.test3)) {
                Some(code) => (Behaviour::Unknown, vec![format!("change requests refused with {code}")]),
                None => (
                    Behaviour::AddressAndPortDependent,
                    vec![format!(
                        "no answer from another address or port of {p} got in within {:?}",
                        self.window
                    )],
                ),
            },
        }
    }

    fn all(&mut self) -> impl Iterator<Item = &mut Transaction> {
        std::iter::once(&mut self.test1)
            .chain(self.test2.iter_mut())
            .chain(self.test3.iter_mut())
    }
}

impl UdpExchange for FilteringTest {
    fn poll_transmit(&mut self, now: Instant) -> Option<Transmit> {
        let open = self.window_end.is_none_or(|end| now < end);
        self.all().filter(|_| open).find_map(|t| t.poll_transmit(now))
    }

    fn poll_timeout(&self) -> Option<Instant> {
        std::iter::once(&self.test1)
            .chain(self.test2.iter())
            .chain(self.test3.iter())
            .filter_map(Transaction::poll_timeout)
            .chain(self.window_end)
            .min()
    }

    fn handle_datagram(&mut self, now: Instant, from: SocketAddr, data: &[u8]) -> bool {
        let Ok(response) = decode_response(data) else {
            return false;
        };
        if !self.all().any(|t| t.handle(now, from, &response)) {
            return false;
        }
        if self.test2.is_none() && self.test1.success().is_some_and(|s| s.other_address.is_some()) {
            let rtt = self.test1.rtt().unwrap_or_default();
            let rto = (rtt * 2).clamp(Duration::from_millis(20), Duration::from_millis(500));
            self.test2 = Transaction::new(self.primary, Some((true, true)), rto, now, &mut self.rng)
                .ok()
                .map(Transaction::unlimited);
            self.test3 = Transaction::new(self.primary, Some((false, true)), rto, now, &mut self.rng)
                .ok()
                .map(Transaction::unlimited);
            let window = match self.follow {
                Some(follow) => follow.window(rtt),
                None => self.window.max(rtt * 10),
            };
            self.window = window;
            self.window_end = Some(now + window);
        }
        true
    }

    fn poll_result(&mut self, now: Instant) -> Option<Result<Vec<MappedSocketAddr>, TechniqueError>> {
        let test1_failed = self.test1.is_done(now) && self.test1.success().is_none();
        let no_5780 = self.test1.success().is_some_and(|s| s.other_address.is_none());
        let both_in = [&self.test2, &self.test3]
            .iter()
            .all(|t| t.as_ref().is_some_and(|t| t.response.is_some()));
        let window_over = self.window_end.is_some_and(|end| now >= end);
        (test1_failed || no_5780 || both_in || window_over).then(|| self.finish())
    }

    fn finish(&mut self) -> Result<Vec<MappedSocketAddr>, TechniqueError> {
        Ok(self
            .test1
            .success()
            .map(|s| vec![MappedSocketAddr::new(s.mapped, true, NAME)])
            .unwrap_or_default())
    }
}

/// The fixed time filtering tests wait for answers that a restrictive NAT drops, when they do
/// not follow the round trip ([`FilteringTest::following_rtt`], what [`discover_udp`] does).
pub const DEFAULT_FILTER_WINDOW: Duration = Duration::from_secs(1);

/// The old name of [`MappingTest`].
#[doc(hidden)]
pub type MappingProbe = MappingTest;
/// The old name of [`FilteringTest`].
#[doc(hidden)]
pub type FilteringProbe = FilteringTest;

#[cfg(test)]
mod tests {
    use super::*;

    fn a(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn mapping_classification() {
        let m1 = a("198.51.100.1:1000");
        assert_eq!(classify_mapping(m1, Some(m1), None), Behaviour::EndpointIndependent);
        let m2 = a("198.51.100.1:2000");
        assert_eq!(classify_mapping(m1, Some(m2), Some(m2)), Behaviour::AddressDependent);
        assert_eq!(
            classify_mapping(m1, Some(m2), Some(a("198.51.100.1:3000"))),
            Behaviour::AddressAndPortDependent
        );
        assert_eq!(classify_mapping(m1, None, None), Behaviour::Unknown);
        assert_eq!(classify_mapping(m1, Some(m2), None), Behaviour::Unknown);
    }

    #[test]
    fn mapping_across_plain_servers() {
        let (s1, s2, s1b) = (a("203.0.113.10:3478"), a("203.0.113.11:3478"), a("203.0.113.10:5483"));
        let (m, n) = (a("198.51.100.1:1000"), a("198.51.100.1:1001"));
        assert_eq!(
            classify_mapping_across(&[(s1, m), (s2, m)]),
            Behaviour::EndpointIndependent
        );
        assert_eq!(classify_mapping_across(&[(s1, m), (s2, n)]), Behaviour::Unknown);
        assert_eq!(
            classify_mapping_across(&[(s1, m), (s1b, n)]),
            Behaviour::AddressAndPortDependent
        );
        // Same IP, different ports, same mapping: could still be address-dependent.
        assert_eq!(classify_mapping_across(&[(s1, m), (s1b, m)]), Behaviour::Unknown);
        assert_eq!(classify_mapping_across(&[(s1, m)]), Behaviour::Unknown);
    }

    /// A filtering test against an RFC 5780 server 10 ms away whose window follows the round
    /// trip: the answers to tests II (other address and port) and III (other port) that get
    /// through the NAT, each `Some(after its request)`; the verdict and when it was made.
    #[allow(clippy::disallowed_methods)] // the test's own start time
    fn filtering(window: FilterWindow, test2: Option<Duration>, test3: Option<Duration>) -> (Behaviour, Duration) {
        use crate::message::{decode_request, encode_success};
        use rand::SeedableRng;
        let (p, o) = (a("203.0.113.10:3478"), a("203.0.113.11:3479"));
        let mapped = a("198.51.100.1:4000");
        let t0 = Instant::now();
        let mut f = FilteringTest::new(
            p,
            Duration::from_millis(500),
            DEFAULT_FILTER_WINDOW,
            t0,
            StdRng::seed_from_u64(1),
        )
        .unwrap()
        .following_rtt(window);
        let txid = decode_request(&f.poll_transmit(t0).unwrap().payload).unwrap().txid;
        let t1 = t0 + Duration::from_millis(10);
        assert!(f.handle_datagram(t1, p, &encode_success(txid, mapped, Some(o), None).unwrap()));
        let mut answers = Vec::new();
        while let Some(t) = f.poll_transmit(t1) {
            let req = decode_request(&t.payload).unwrap();
            let (from, after) = if req.change_ip {
                (o, test2)
            } else {
                (a("203.0.113.10:3479"), test3)
            };
            if let Some(after) = after {
                answers.push((t1 + after, from, req.txid));
            }
        }
        answers.sort();
        let mut now = t1;
        loop {
            if f.poll_result(now).is_some() {
                return (f.verdict().0, now - t1);
            }
            let _ = f.poll_transmit(now);
            let next = f.poll_timeout().unwrap();
            match answers.first().copied() {
                Some((at, from, txid)) if at <= next => {
                    answers.remove(0);
                    now = at;
                    f.handle_datagram(at, from, &encode_success(txid, mapped, Some(o), Some(from)).unwrap());
                }
                _ => now = next,
            }
        }
    }

    #[test]
    fn the_filtering_window_follows_the_round_trip() {
        let ms = Duration::from_millis;
        let d = FilterWindow::DEFAULT;
        // Nothing gets in: the verdict 1 round trip + 5 ms after tests II and III went out.
        assert_eq!(filtering(d, None, None), (Behaviour::AddressAndPortDependent, ms(15)));
        // Both get in (a full cone): at once.
        assert_eq!(
            filtering(d, Some(ms(10)), Some(ms(10))),
            (Behaviour::EndpointIndependent, ms(10))
        );
        // Only the other port's answer gets in: address-dependent, at the window's end.
        assert_eq!(filtering(d, None, Some(ms(10))), (Behaviour::AddressDependent, ms(15)));
        // An answer later than the window is missed: the more restrictive verdict...
        assert_eq!(
            filtering(d, Some(ms(16)), Some(ms(16))).0,
            Behaviour::AddressAndPortDependent
        );
        // ... which a patient window (4 round trips + 250 ms) still takes.
        let patient = FilterWindow::PATIENT;
        assert_eq!(
            filtering(patient, Some(ms(16)), Some(ms(16))).0,
            Behaviour::EndpointIndependent
        );
        assert_eq!(
            filtering(patient, None, None),
            (Behaviour::AddressAndPortDependent, ms(290))
        );
    }

    #[test]
    fn behaviour_names_are_the_cli_contract() {
        let names: Vec<&str> = [
            Behaviour::EndpointIndependent,
            Behaviour::AddressDependent,
            Behaviour::AddressAndPortDependent,
            Behaviour::Unknown,
        ]
        .iter()
        .map(|b| b.as_str())
        .collect();
        assert_eq!(
            names,
            [
                "endpoint-independent",
                "address-dependent",
                "address-and-port-dependent",
                "unknown"
            ]
        );
    }
}
