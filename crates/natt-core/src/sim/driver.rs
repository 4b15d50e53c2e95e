//! [`Sim`]: steps [`UdpExchange`]s, each on a socket of a simulated host, through a
//! [`Network`], as `natt_core::udp::drive` steps them on a real socket.
//!
//! Each exchange starts at its socket's start time (before it, datagrams to its port are
//! dropped, as by a closed port), and is driven as the real driver does: asked for its result,
//! else for what to send; woken at its timeout; offered each datagram that reaches its port.
//! Like the real driver it polls again only when something happens (here: any event of the
//! simulation), so an exchange that has its result after sending must ask to be woken now.
//! Once it has a result it is no longer polled and datagrams to it are dropped (the socket has
//! gone to its program). Time jumps from one event to the next, so a run of minutes takes
//! milliseconds.

#![deny(clippy::disallowed_methods)] // a protocol core: see clippy.toml

use std::net::SocketAddr;
use std::time::Instant;

use super::network::{Delivery, HostId, Network};
use crate::endpoint::MappedSocketAddr;
use crate::error::TechniqueError;
use crate::technique::UdpExchange;

/// What an exchange ended with.
pub type ExchangeResult = Result<Vec<MappedSocketAddr>, TechniqueError>;

/// A socket of the simulation, the `i`th bound: the exchange at index `i` of
/// [`Sim::run`]'s slice runs on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SocketId(pub usize);

#[derive(Debug)]
struct Socket {
    host: HostId,
    port: u16,
    start: Instant,
    result: Option<ExchangeResult>,
    finished_at: Option<Instant>,
}

/// Polls of all exchanges, and rounds of deliveries, at one instant before time moves on (an
/// exchange that keeps asking to be woken now, or two that answer each other over links
/// without delay, cannot hold the run).
const MAX_PASSES: usize = 16;
/// Datagrams taken from one exchange in one poll.
const MAX_BURST: usize = 10_000;

/// Exchanges on sockets of a simulated network.
#[derive(Debug)]
pub struct Sim {
    net: Network,
    sockets: Vec<Socket>,
    unclaimed: u64,
}

impl Sim {
    /// A simulation over `net` (built with [`Network::new`] and its `add_*` methods).
    pub fn new(net: Network) -> Self {
        Sim {
            net,
            sockets: Vec::new(),
            unclaimed: 0,
        }
    }

    /// The network.
    pub fn net(&self) -> &Network {
        &self.net
    }

    /// The network, to change (taps, more hosts).
    pub fn net_mut(&mut self) -> &mut Network {
        &mut self.net
    }

    /// The virtual time.
    pub fn now(&self) -> Instant {
        self.net.now()
    }

    /// Binds a socket on `host`'s `port`, whose exchange starts at `start`.
    pub fn bind(&mut self, host: HostId, port: u16, start: Instant) -> SocketId {
        self.sockets.push(Socket {
            host,
            port,
            start,
            result: None,
            finished_at: None,
        });
        SocketId(self.sockets.len() - 1)
    }

    /// The socket's local address (its host's address and its port).
    pub fn local_addr(&self, socket: SocketId) -> Option<SocketAddr> {
        let s = self.sockets.get(socket.0)?;
        Some(SocketAddr::new(self.net.ip(s.host)?, s.port))
    }

    /// What the socket's exchange ended with, once it has.
    pub fn result(&self, socket: SocketId) -> Option<&ExchangeResult> {
        self.sockets.get(socket.0)?.result.as_ref()
    }

    /// When the socket's exchange gave its result.
    pub fn finished_at(&self, socket: SocketId) -> Option<Instant> {
        self.sockets.get(socket.0)?.finished_at
    }

    /// Datagrams that reached a port with no running exchange.
    pub fn unclaimed(&self) -> u64 {
        self.unclaimed
    }

    /// Runs `exchanges` (the `i`th on the `i`th socket bound) until each has a result or the
    /// time is `until`. Returns whether all have a result. May be called again to go on.
    pub fn run(&mut self, exchanges: &mut [&mut dyn UdpExchange], until: Instant) -> bool {
        let mut deliveries = self.net.advance(self.net.now());
        let mut rounds_at_now = 0;
        loop {
            let now = self.net.now();
            for d in deliveries {
                self.deliver(exchanges, now, d);
            }
            for _ in 0..MAX_PASSES {
                if !self.serve(exchanges, now) {
                    break;
                }
            }
            if self.all_done(exchanges) {
                return true;
            }
            // Datagrams sent now over links without delay arrive now.
            if self.net.next_time().is_some_and(|t| t <= now) && rounds_at_now < MAX_PASSES {
                rounds_at_now += 1;
                deliveries = self.net.advance(now);
                continue;
            }
            rounds_at_now = 0;
            let next = self.next_time(exchanges, now).filter(|t| *t <= until).unwrap_or(until);
            if next <= now {
                return false;
            }
            deliveries = self.net.advance(next);
        }
    }

    fn all_done(&self, exchanges: &[&mut dyn UdpExchange]) -> bool {
        self.sockets.iter().take(exchanges.len()).all(|s| s.result.is_some())
    }

    /// Hands a datagram to the exchange of the socket it reached, if it is running.
    fn deliver(&mut self, exchanges: &mut [&mut dyn UdpExchange], now: Instant, d: Delivery) {
        let running = self
            .sockets
            .iter()
            .zip(exchanges.iter_mut())
            .find(|(s, _)| s.host == d.host && s.port == d.port && s.start <= now && s.result.is_none());
        match running {
            Some((_, exchange)) => {
                exchange.handle_datagram(now, d.from, &d.payload);
            }
            None => self.unclaimed += 1,
        }
    }

    /// Polls every running exchange once at `now`: its result, else what it sends. Returns
    /// whether one wants to be polled again at `now`.
    fn serve(&mut self, exchanges: &mut [&mut dyn UdpExchange], now: Instant) -> bool {
        let mut again = false;
        for (socket, exchange) in self.sockets.iter_mut().zip(exchanges.iter_mut()) {
            if socket.start > now || socket.result.is_some() {
                continue;
            }
            if let Some(result) = exchange.poll_result(now) {
                socket.result = Some(result);
                socket.finished_at = Some(now);
                continue;
            }
            for t in std::iter::from_fn(|| exchange.poll_transmit(now)).take(MAX_BURST) {
                self.net.send(socket.host, socket.port, t.destination, t.payload);
            }
            again |= exchange.poll_timeout().is_some_and(|t| t <= now);
        }
        again
    }

    /// The next instant after `now` at which something happens: a datagram moves on, an
    /// exchange's timer fires, or an exchange starts.
    fn next_time(&self, exchanges: &[&mut dyn UdpExchange], now: Instant) -> Option<Instant> {
        let timers = self
            .sockets
            .iter()
            .zip(exchanges.iter())
            .filter(|(s, _)| s.result.is_none())
            .filter_map(|(s, e)| if s.start > now { Some(s.start) } else { e.poll_timeout() });
        self.net
            .next_time()
            .into_iter()
            .chain(timers)
            .filter(|t| *t > now)
            .min()
    }
}

#[cfg(test)]
#[allow(clippy::disallowed_methods)]
mod tests {
    use super::*;
    use crate::sim::{Link, Nat};
    use crate::technique::Transmit;
    use std::time::Duration;

    /// Sends `ping` to `to` every 100 ms until it hears from anyone; answers pings; done once
    /// it has heard something and sent its answers.
    struct Pinger {
        to: SocketAddr,
        next: Instant,
        answered_by: Option<SocketAddr>,
        queue: Vec<Transmit>,
    }

    impl UdpExchange for Pinger {
        fn poll_transmit(&mut self, now: Instant) -> Option<Transmit> {
            if self.answered_by.is_none() && now >= self.next {
                self.next = now + Duration::from_millis(100);
                self.queue.push(Transmit {
                    destination: self.to,
                    payload: b"ping".to_vec(),
                });
            }
            self.queue.pop()
        }

        fn poll_timeout(&self) -> Option<Instant> {
            self.answered_by.is_none().then_some(self.next)
        }

        fn handle_datagram(&mut self, _now: Instant, from: SocketAddr, data: &[u8]) -> bool {
            if data == b"ping" {
                self.queue.push(Transmit {
                    destination: from,
                    payload: b"pong".to_vec(),
                });
            }
            self.answered_by = Some(from);
            true
        }

        fn poll_result(&mut self, _now: Instant) -> Option<ExchangeResult> {
            let from = self.answered_by?;
            self.queue
                .is_empty()
                .then(|| Ok(vec![MappedSocketAddr::new(from, false, "ping")]))
        }

        fn finish(&mut self) -> ExchangeResult {
            Err(TechniqueError::TimedOut("no answer".into()))
        }
    }

    #[test]
    fn exchanges_start_at_their_time_and_finish_in_virtual_time() {
        let t0 = Instant::now();
        let mut net = Network::new(t0, 1);
        let nat = net.add_nat(Nat::full_cone("198.51.100.1".parse().unwrap()));
        let home = net.add_host("192.168.1.2".parse().unwrap(), Some(nat), Link::default());
        let server = net.add_host("203.0.113.9".parse().unwrap(), None, Link::default());
        let mut sim = Sim::new(net);
        let a = sim.bind(home, 5000, t0);
        let b = sim.bind(server, 7000, t0 + Duration::from_millis(250));
        let pinger = |to: &str| Pinger {
            to: to.parse().unwrap(),
            next: t0,
            answered_by: None,
            queue: Vec::new(),
        };
        // b pings a's public address, which a's NAT maps once a has sent.
        let (mut pa, mut pb) = (pinger("203.0.113.9:7000"), pinger("198.51.100.1:5000"));
        assert!(sim.run(&mut [&mut pa, &mut pb], t0 + Duration::from_secs(10)));
        assert_eq!(sim.local_addr(a), Some("192.168.1.2:5000".parse().unwrap()));
        // a's pings at 0, 100 and 200 ms reached no running exchange.
        assert_eq!(sim.unclaimed(), 3);
        // b started at 250 ms; its first ping reaches a 20 ms later, and a's answer b 20 ms
        // after that. a asks for no wake-up once it has answered, so, as with the real driver,
        // its result is taken at the next event (its answer leaving its link, at 280 ms).
        assert_eq!(sim.finished_at(a), Some(t0 + Duration::from_millis(280)));
        assert_eq!(sim.finished_at(b), Some(t0 + Duration::from_millis(290)));
        assert!(matches!(sim.result(b), Some(Ok(e)) if e[0].addr.port() == 5000));
        assert!(
            sim.now() < t0 + Duration::from_secs(1),
            "the run stops when all are done"
        );
    }
}
