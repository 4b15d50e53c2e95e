//! [`SimpleExchange`]: the simple protocol over the mapped UDP socket, without the socket (a
//! protocol core: fed datagrams, the time, the socket's own addresses and a random generator;
//! its driver is [`SimpleTechnique`](crate::SimpleTechnique)).

#![deny(clippy::disallowed_methods)] // a protocol core: see clippy.toml

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use natt_core::retransmit::{Factor, Params, Schedule};
use natt_core::{MappedSocketAddr, TechniqueError, Transmit, UdpExchange};
use rand::Rng;

use crate::wire::{self, Message, Request, TransactionId};

/// The technique's name.
pub const NAME: &str = "simple";

/// First retransmission timeout of a UDP request.
pub const INITIAL_RTO: Duration = Duration::from_millis(250);
/// Largest retransmission timeout.
pub const MAX_RTO: Duration = Duration::from_secs(2);
/// The retransmission schedule of a UDP request: sent at once, then again after 250 ms
/// ([`INITIAL_RTO`]), 500 ms, 1 s and every 2 s ([`MAX_RTO`]) after that, until answered or
/// the caller's deadline.
pub const RETRANSMIT: Params = Params {
    initial: INITIAL_RTO,
    factor: Factor::DOUBLE,
    max_interval: Some(MAX_RTO),
    max_sends: None,
    last_wait: None,
    jitter: 0.0,
};
/// Once one server has answered, the others get this many times its round trip (but at least
/// [`MIN_GRACE`]) to answer too before the exchange finishes without them.
pub const GRACE_RTTS: u32 = 3;
/// The least time given to the other servers after the first answer.
pub const MIN_GRACE: Duration = Duration::from_millis(100);

/// Endpoints from observed addresses: restricted (hole punching needed) unless the server saw
/// one of the socket's own addresses (`locals`), which means no NAT stands in between.
pub(crate) fn endpoints_from(locals: &[SocketAddr], observed: &[SocketAddr]) -> Vec<MappedSocketAddr> {
    let mut out: Vec<MappedSocketAddr> = Vec::new();
    for &addr in observed {
        let behind_nat = !natt_core::family::open_without_nat(locals, addr);
        natt_core::endpoint::merge_endpoints(&mut out, [MappedSocketAddr::new(addr, behind_nat, NAME)]);
    }
    out
}

/// One server's transaction within a [`SimpleExchange`].
#[derive(Debug)]
struct Transaction {
    server: SocketAddr,
    txid: TransactionId,
    schedule: Schedule,
    observed: Option<SocketAddr>,
}

/// The simple protocol over a UDP socket, without the socket: one request per server,
/// retransmitted with exponential back-off until answered. Finishes when every server has
/// answered, or a grace period after the first answer.
///
/// ```
/// use natt_core::UdpExchange;
/// use natt_simple::wire::{answer, decode};
/// use rand::{SeedableRng, rngs::StdRng};
/// use std::time::Instant;
///
/// let server = "203.0.113.20:5483".parse().unwrap();
/// // The socket's own addresses (its driver lists them: `natt_core::local::local_addrs`).
/// let locals = vec!["192.168.1.2:4000".parse().unwrap()];
/// let mut rng = StdRng::seed_from_u64(1); // a driver's: `StdRng::from_os_rng()`
/// let mut ex = natt_simple::SimpleExchange::new(locals, vec![server], Instant::now(), &mut rng);
/// let now = Instant::now();
/// let request = ex.poll_transmit(now).unwrap();
/// assert_eq!(request.destination, server);
/// // The server sees us at 198.51.100.1:4000 and answers.
/// let reply = answer("198.51.100.1:4000".parse().unwrap(), &request.payload).unwrap();
/// assert!(ex.handle_datagram(now, server, &reply));
/// let endpoints = ex.poll_result(now).unwrap().unwrap();
/// assert_eq!(endpoints[0].addr.to_string(), "198.51.100.1:4000");
/// assert!(endpoints[0].nat_restricted);
/// ```
#[derive(Debug)]
pub struct SimpleExchange {
    locals: Vec<SocketAddr>,
    transactions: Vec<Transaction>,
    grace_until: Option<Instant>,
}

impl SimpleExchange {
    /// An exchange asking each of `servers`, starting at `now`, for a socket whose own
    /// addresses are `locals` (those peers on this host's networks reach it at:
    /// [`natt_core::local::local_addrs`]; a server that sees one of them sees no NAT in
    /// between). Transaction ids are drawn from `rng`.
    pub fn new(locals: Vec<SocketAddr>, servers: Vec<SocketAddr>, now: Instant, rng: &mut impl Rng) -> Self {
        SimpleExchange {
            locals,
            transactions: servers
                .into_iter()
                .map(|server| Transaction {
                    server,
                    txid: TransactionId::from_rng(rng),
                    schedule: Schedule::new(RETRANSMIT, now),
                    observed: None,
                })
                .collect(),
            grace_until: None,
        }
    }

    fn observed(&self) -> Vec<SocketAddr> {
        self.transactions.iter().filter_map(|t| t.observed).collect()
    }
}

impl UdpExchange for SimpleExchange {
    fn poll_transmit(&mut self, now: Instant) -> Option<Transmit> {
        let t = self
            .transactions
            .iter_mut()
            .find(|t| t.observed.is_none() && t.schedule.is_due(now))?;
        t.schedule.on_sent(now);
        Some(Transmit {
            destination: t.server,
            payload: Request { txid: t.txid }.encode().to_vec(),
        })
    }

    fn poll_timeout(&self) -> Option<Instant> {
        let retransmit = self
            .transactions
            .iter()
            .filter(|t| t.observed.is_none())
            .filter_map(|t| t.schedule.next_send())
            .min();
        match (retransmit, self.grace_until) {
            (Some(r), Some(g)) => Some(r.min(g)),
            (r, g) => r.or(g),
        }
    }

    fn handle_datagram(&mut self, now: Instant, from: SocketAddr, data: &[u8]) -> bool {
        let Ok(Message::Reply(reply)) = wire::decode(data) else {
            return false;
        };
        let Some(t) = self.transactions.iter_mut().find(|t| t.txid == reply.txid) else {
            return false;
        };
        if t.server != from {
            log::debug!("reply for {} came from {from}", t.server);
        }
        if t.observed.is_none() {
            t.observed = Some(reply.observed);
            let rtt = t
                .schedule
                .first_sent()
                .map_or(Duration::ZERO, |s| now.saturating_duration_since(s));
            let grace = (rtt * GRACE_RTTS).max(MIN_GRACE);
            self.grace_until.get_or_insert(now + grace);
        }
        true
    }

    fn poll_result(&mut self, now: Instant) -> Option<Result<Vec<MappedSocketAddr>, TechniqueError>> {
        let all = self.transactions.iter().all(|t| t.observed.is_some());
        let grace_over = self.grace_until.is_some_and(|g| now >= g);
        (all || grace_over).then(|| Ok(endpoints_from(&self.locals, &self.observed())))
    }

    fn finish(&mut self) -> Result<Vec<MappedSocketAddr>, TechniqueError> {
        let observed = self.observed();
        if observed.is_empty() {
            let servers: Vec<String> = self.transactions.iter().map(|t| t.server.to_string()).collect();
            return Err(TechniqueError::TimedOut(format!(
                "no simple-protocol server answered ({})",
                servers.join(", ")
            )));
        }
        Ok(endpoints_from(&self.locals, &observed))
    }
}

#[cfg(test)]
#[allow(clippy::disallowed_methods)] // tests take a starting instant from the clock
mod tests {
    use super::*;
    use crate::wire::answer;
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    /// A socket's own addresses: a host on a private network.
    fn locals() -> Vec<SocketAddr> {
        vec![addr("192.168.1.2:4000")]
    }

    fn rng() -> StdRng {
        StdRng::seed_from_u64(1)
    }

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn retransmits_with_backoff_until_answered() {
        let t0 = Instant::now();
        let server = addr("203.0.113.20:5483");
        let mut ex = SimpleExchange::new(locals(), vec![server], t0, &mut rng());
        assert!(ex.poll_transmit(t0).is_some());
        assert!(ex.poll_transmit(t0).is_none());
        assert_eq!(ex.poll_timeout(), Some(t0 + INITIAL_RTO));
        let t1 = t0 + INITIAL_RTO;
        assert!(ex.poll_transmit(t1).is_some());
        assert_eq!(ex.poll_timeout(), Some(t1 + INITIAL_RTO * 2));
        assert!(ex.poll_result(t1).is_none());
        assert!(matches!(ex.finish(), Err(TechniqueError::TimedOut(_))));
    }

    #[test]
    fn retransmits_at_250_ms_doubling_to_2_s() {
        // The old schedule's times: `next = now + rto; rto = min(2 rto, 2 s)`.
        let t0 = Instant::now();
        let mut ex = SimpleExchange::new(locals(), vec![addr("203.0.113.20:5483")], t0, &mut rng());
        let mut sent = Vec::new();
        let mut now = t0;
        while sent.len() < 9 {
            if ex.poll_transmit(now).is_some() {
                sent.push((now - t0).as_millis());
            }
            now = ex.poll_timeout().unwrap();
        }
        assert_eq!(sent, [0, 250, 750, 1750, 3750, 5750, 7750, 9750, 11750]);
    }

    #[test]
    fn ignores_foreign_and_malformed_datagrams() {
        let t0 = Instant::now();
        let server = addr("203.0.113.20:5483");
        let mut ex = SimpleExchange::new(locals(), vec![server], t0, &mut rng());
        let req = ex.poll_transmit(t0).unwrap();
        // A reply to someone else's transaction.
        let other = Request {
            txid: TransactionId::random(),
        };
        let foreign = answer(addr("198.51.100.1:1"), &other.encode()).unwrap();
        assert!(!ex.handle_datagram(t0, server, &foreign));
        assert!(!ex.handle_datagram(t0, server, b"garbage"));
        assert!(!ex.handle_datagram(t0, server, &req.payload));
        assert!(ex.poll_result(t0).is_none());
    }

    #[test]
    fn waits_a_grace_period_for_other_servers() {
        let t0 = Instant::now();
        let (s1, s2) = (addr("203.0.113.20:5483"), addr("203.0.113.21:5483"));
        let mut ex = SimpleExchange::new(locals(), vec![s1, s2], t0, &mut rng());
        let r1 = ex.poll_transmit(t0).unwrap();
        let _r2 = ex.poll_transmit(t0).unwrap();
        let t1 = t0 + Duration::from_millis(10);
        let reply = answer(addr("198.51.100.1:4000"), &r1.payload).unwrap();
        assert!(ex.handle_datagram(t1, s1, &reply));
        assert!(ex.poll_result(t1).is_none(), "s2 gets a grace period");
        let after = t1 + MIN_GRACE;
        assert!(ex.poll_timeout().unwrap() <= after);
        let eps = ex.poll_result(after).unwrap().unwrap();
        assert_eq!(eps.len(), 1);
    }

    #[test]
    fn symmetric_nat_yields_two_endpoints() {
        let t0 = Instant::now();
        let (s1, s2) = (addr("203.0.113.20:5483"), addr("203.0.113.21:5483"));
        let mut ex = SimpleExchange::new(locals(), vec![s1, s2], t0, &mut rng());
        let r1 = ex.poll_transmit(t0).unwrap();
        let r2 = ex.poll_transmit(t0).unwrap();
        assert!(ex.handle_datagram(t0, s1, &answer(addr("198.51.100.1:1111"), &r1.payload).unwrap()));
        assert!(ex.handle_datagram(t0, s2, &answer(addr("198.51.100.1:2222"), &r2.payload).unwrap()));
        let eps = ex.poll_result(t0).unwrap().unwrap();
        assert_eq!(eps.len(), 2);
        assert!(eps.iter().all(|e| e.nat_restricted && e.technique == NAME));
    }
}
