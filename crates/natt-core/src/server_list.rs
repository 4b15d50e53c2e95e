//! The client side's lists of servers to ask (the loops of the servers natt runs are in
//! [`server_loop`](crate::server_loop)). Helpers for techniques that ask servers: a [`ServerList`] shared between threads (servers
//! by address and by name), [`Servers`] (a mapping's servers, names being resolved),
//! [`ResolvingExchange`] (a [`UdpExchange`] that starts once the names are resolved), and
//! [`ask_each`], which asks every server at once on its own thread and gathers the answers.
//!
//! A technique with servers by name (STUN, the simple protocol, TURN) maps a UDP socket with
//! [`ServerList::udp_exchange`] and a TCP socket with [`ServerList::resolve_until`]: the names
//! are looked up when the mapping starts, on worker threads, under the mapping's deadline.

use std::net::SocketAddr;
use std::sync::{PoisonError, RwLock};
use std::time::{Duration, Instant};

use crate::MappedSocketAddr;
use crate::error::TechniqueError;
use crate::fanout;
use crate::names::{Lookup, ResolveError, ServerName, of_family};
use crate::technique::{Transmit, UdpExchange};

/// How often a [`ResolvingExchange`] looks whether its names are resolved.
pub const RESOLVE_POLL: Duration = Duration::from_millis(2);

/// A technique's servers, by address and by name, in the order added, without duplicates.
///
/// ```
/// let list = natt_core::server_list::ServerList::default();
/// list.add("203.0.113.10:3478".parse().unwrap());
/// list.add("203.0.113.10:3478".parse().unwrap());
/// assert_eq!(list.all().len(), 1);
/// assert!(list.for_local("[2001:db8::2]:0".parse().unwrap(), "STUN").is_err());
/// // A dual-stack socket reaches both families.
/// assert!(list.for_local("[::]:0".parse().unwrap(), "STUN").is_ok());
/// ```
#[derive(Debug, Default)]
pub struct ServerList {
    addrs: RwLock<Vec<SocketAddr>>,
    names: RwLock<Vec<ServerName>>,
}

impl ServerList {
    /// Adds a server (once).
    pub fn add(&self, server: SocketAddr) {
        add_once(&self.addrs, server);
    }

    /// Adds a server by name (once); a name that is an IP address is added as an address.
    pub fn add_name(&self, name: ServerName) {
        match name.socket_addr() {
            Some(addr) => self.add(addr),
            None => add_once(&self.names, name),
        }
    }

    /// Every server given by address.
    pub fn all(&self) -> Vec<SocketAddr> {
        self.addrs.read().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// Every server given by name.
    pub fn names(&self) -> Vec<ServerName> {
        self.names.read().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// The servers for a socket bound at `local`: the addresses of its family, and a lookup,
    /// started now, of every name. With neither, [`TechniqueError::NotApplicable`] naming
    /// `what` kind of server is missing.
    pub fn start(&self, local: SocketAddr, what: &str) -> Result<Servers, TechniqueError> {
        let names = self.names();
        let addrs = match self.for_local(local, what) {
            Ok(addrs) => addrs,
            Err(e) if names.is_empty() => return Err(e),
            Err(_) => Vec::new(),
        };
        Ok(Servers {
            local,
            addrs,
            lookups: names.iter().map(ServerName::lookup).collect(),
            errors: Vec::new(),
        })
    }

    /// A [`UdpExchange`] for a socket bound at `local`, made by `make` from the servers'
    /// addresses and the time: at once when every server is an address, otherwise a
    /// [`ResolvingExchange`] that makes it when the names are resolved.
    pub fn udp_exchange<F>(
        &self,
        local: SocketAddr,
        what: &str,
        make: F,
    ) -> Result<Box<dyn UdpExchange>, TechniqueError>
    where
        F: FnOnce(Vec<SocketAddr>, Instant) -> Result<Box<dyn UdpExchange>, TechniqueError> + Send + 'static,
    {
        let servers = self.start(local, what)?;
        if servers.lookups.is_empty() {
            return make(servers.addrs, Instant::now());
        }
        Ok(Box::new(ResolvingExchange::new(servers, make)))
    }

    /// The addresses of the servers for a socket bound at `local`, the names resolved by
    /// `deadline` (see [`ServerList::start`] and [`Resolved::usable`]).
    pub fn resolve_until(&self, local: SocketAddr, what: &str, deadline: Instant) -> Result<Resolved, TechniqueError> {
        Ok(self.start(local, what)?.wait_until(deadline))
    }

    /// [`ask_each`] (under `label`) of the servers for a socket bound at `local`, the names
    /// resolved by `deadline`; a failure also names the names that gave no address.
    pub fn ask_each_until<T: Send>(
        &self,
        local: SocketAddr,
        what: &str,
        label: &str,
        deadline: Instant,
        ask: impl Fn(SocketAddr) -> Result<T, TechniqueError> + Sync,
    ) -> Result<Vec<T>, TechniqueError> {
        let (addrs, unresolved) = self.resolve_until(local, what, deadline)?.split()?;
        ask_each(&addrs, label, ask).map_err(|e| with_unresolved(e, &unresolved))
    }

    /// The servers a socket bound at `local` can reach (same address family, or both for a
    /// dual-stack socket: [`crate::family::reaches`]); when there is none, [`TechniqueError::NotApplicable`] naming `what` kind of server is missing.
    pub fn for_local(&self, local: SocketAddr, what: &str) -> Result<Vec<SocketAddr>, TechniqueError> {
        let servers: Vec<SocketAddr> = self
            .all()
            .into_iter()
            .filter(|s| crate::family::reaches(local, *s))
            .collect();
        if servers.is_empty() {
            let family = if local.is_ipv4() { "IPv4" } else { "IPv6" };
            return Err(TechniqueError::NotApplicable(if self.all().is_empty() {
                format!("no {what} server given")
            } else {
                format!("no {family} {what} server given (the socket is {family})")
            }));
        }
        Ok(servers)
    }
}

fn add_once<T: PartialEq>(list: &RwLock<Vec<T>>, item: T) {
    let mut items = list.write().unwrap_or_else(PoisonError::into_inner);
    if !items.contains(&item) {
        items.push(item);
    }
}

/// A mapping's servers: addresses, and names being resolved (from [`ServerList::start`]).
#[derive(Debug)]
pub struct Servers {
    local: SocketAddr,
    addrs: Vec<SocketAddr>,
    lookups: Vec<Lookup>,
    errors: Vec<ResolveError>,
}

/// A mapping's servers once the names are resolved or given up on.
#[derive(Debug)]
pub struct Resolved {
    /// The addresses to ask, of the socket's family, without duplicates.
    pub addrs: Vec<SocketAddr>,
    /// Why some names gave no address, if they did not.
    pub unresolved: Option<ResolveError>,
}

impl Servers {
    /// Takes the lookups that have ended; true once none is left.
    pub fn poll(&mut self) -> bool {
        let mut i = 0;
        while let Some(lookup) = self.lookups.get(i) {
            match lookup.poll() {
                Some(r) => {
                    let lookup = self.lookups.remove(i);
                    self.settle(lookup.name(), r);
                }
                None => i += 1,
            }
        }
        self.lookups.is_empty()
    }

    /// Waits for every lookup until `deadline` (they run at the same time).
    pub fn wait_until(mut self, deadline: Instant) -> Resolved {
        for lookup in std::mem::take(&mut self.lookups) {
            let name = lookup.name().clone();
            let r = lookup.wait_until(deadline);
            self.settle(&name, r);
        }
        self.finish()
    }

    /// What is known now: lookups still running are timed out.
    pub fn finish(mut self) -> Resolved {
        self.poll();
        self.errors.extend(self.lookups.iter().map(Lookup::timed_out));
        let mut errors = self.errors;
        let unresolved = match errors.len() {
            0 => None,
            1 => errors.pop(),
            _ => Some(ResolveError::Several(errors)),
        };
        Resolved {
            addrs: self.addrs,
            unresolved,
        }
    }

    fn settle(&mut self, name: &ServerName, r: Result<Vec<SocketAddr>, ResolveError>) {
        match r.and_then(|addrs| of_family(name, addrs, self.local)) {
            Ok(addrs) => {
                for a in addrs {
                    if !self.addrs.contains(&a) {
                        self.addrs.push(a);
                    }
                }
            }
            Err(e) => {
                log::debug!("{e}");
                self.errors.push(e);
            }
        }
    }
}

impl Resolved {
    /// The addresses, if there is any: otherwise why the names gave none.
    pub fn usable(self) -> Result<Vec<SocketAddr>, TechniqueError> {
        let (addrs, unresolved) = self.split()?;
        if let Some(e) = unresolved {
            log::warn!("{e}");
        }
        Ok(addrs)
    }

    /// `error` of asking the addresses, followed by why some names gave none (so a failure
    /// names every server that did not help).
    pub fn explain(&self, error: TechniqueError) -> TechniqueError {
        with_unresolved(error, &self.unresolved)
    }

    /// The addresses and why some names gave none; an error when there is no address.
    fn split(self) -> Result<(Vec<SocketAddr>, Option<ResolveError>), TechniqueError> {
        if self.addrs.is_empty() {
            return Err(match self.unresolved {
                Some(e) => e.into(),
                None => TechniqueError::NotApplicable("no server".into()),
            });
        }
        Ok((self.addrs, self.unresolved))
    }
}

/// `error`, followed by why some names gave no address.
fn with_unresolved(error: TechniqueError, unresolved: &Option<ResolveError>) -> TechniqueError {
    match unresolved {
        None => error,
        Some(u) => TechniqueError::Other(format!("{error}; {u}").into()),
    }
}

/// The factory of a [`ResolvingExchange`]'s inner exchange.
type MakeExchange = Box<dyn FnOnce(Vec<SocketAddr>, Instant) -> Result<Box<dyn UdpExchange>, TechniqueError> + Send>;

/// A [`UdpExchange`] that waits for its servers' names to be resolved, then makes the real
/// exchange with every address and hands everything to it. Until then it sends nothing and
/// claims no datagram; at the deadline with names still unresolved, it fails naming them.
pub struct ResolvingExchange {
    state: State,
}

enum State {
    Resolving(Servers, MakeExchange),
    Running(Box<dyn UdpExchange>, Option<ResolveError>),
    Failed(Option<TechniqueError>),
}

impl ResolvingExchange {
    /// Waits for `servers`, then makes the exchange with `make`.
    pub fn new<F>(servers: Servers, make: F) -> Self
    where
        F: FnOnce(Vec<SocketAddr>, Instant) -> Result<Box<dyn UdpExchange>, TechniqueError> + Send + 'static,
    {
        ResolvingExchange {
            state: State::Resolving(servers, Box::new(make)),
        }
    }

    /// Makes the inner exchange once the names are resolved.
    fn advance(&mut self, now: Instant) {
        let State::Resolving(servers, _) = &mut self.state else {
            return;
        };
        if !servers.poll() {
            return;
        }
        let state = std::mem::replace(&mut self.state, State::Failed(None));
        if let State::Resolving(servers, make) = state {
            self.state = start(servers.finish(), make, now);
        }
    }
}

/// The state after resolution: the inner exchange, or why there is none.
fn start(resolved: Resolved, make: MakeExchange, now: Instant) -> State {
    match resolved.split() {
        Ok((addrs, unresolved)) => match make(addrs, now) {
            Ok(inner) => State::Running(inner, unresolved),
            Err(e) => State::Failed(Some(with_unresolved(e, &unresolved))),
        },
        Err(e) => State::Failed(Some(e)),
    }
}

/// `r`, with the names that gave no address added to its error.
fn explained(
    r: Result<Vec<MappedSocketAddr>, TechniqueError>,
    unresolved: &Option<ResolveError>,
) -> Result<Vec<MappedSocketAddr>, TechniqueError> {
    r.map_err(|e| with_unresolved(e, unresolved))
}

impl std::fmt::Debug for ResolvingExchange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = match &self.state {
            State::Resolving(servers, _) => format!("resolving {:?}", servers.lookups),
            State::Running(..) => "running".into(),
            State::Failed(e) => format!("failed: {e:?}"),
        };
        f.debug_struct("ResolvingExchange").field("state", &state).finish()
    }
}

impl UdpExchange for ResolvingExchange {
    fn poll_transmit(&mut self, now: Instant) -> Option<Transmit> {
        self.advance(now);
        match &mut self.state {
            State::Running(inner, _) => inner.poll_transmit(now),
            _ => None,
        }
    }

    fn poll_timeout(&self) -> Option<Instant> {
        match &self.state {
            State::Resolving(..) => Some(Instant::now() + RESOLVE_POLL),
            State::Running(inner, _) => inner.poll_timeout(),
            State::Failed(_) => None,
        }
    }

    fn handle_datagram(&mut self, now: Instant, from: SocketAddr, data: &[u8]) -> bool {
        match &mut self.state {
            State::Running(inner, _) => inner.handle_datagram(now, from, data),
            _ => false,
        }
    }

    fn poll_result(&mut self, now: Instant) -> Option<Result<Vec<MappedSocketAddr>, TechniqueError>> {
        self.advance(now);
        match &mut self.state {
            State::Resolving(..) => None,
            State::Running(inner, unresolved) => inner.poll_result(now).map(|r| explained(r, unresolved)),
            State::Failed(e) => e.take().map(Err),
        }
    }

    fn finish(&mut self) -> Result<Vec<MappedSocketAddr>, TechniqueError> {
        match std::mem::replace(&mut self.state, State::Failed(None)) {
            State::Resolving(servers, _) => Err(servers.finish().unresolved.map_or_else(
                || TechniqueError::TimedOut("no server name resolved".into()),
                TechniqueError::from,
            )),
            State::Running(mut inner, unresolved) => {
                let r = explained(inner.finish(), &unresolved);
                self.state = State::Running(inner, unresolved);
                r
            }
            State::Failed(e) => Err(e.unwrap_or_else(|| TechniqueError::TimedOut("no result".into()))),
        }
    }
}

/// Asks every server at once, each on its own thread ([`fanout::scoped`]), with `ask`, and
/// returns what the ones
/// that answered said; if none did, a [`TechniqueError::TimedOut`] listing each server's error.
/// `ask` must return by the caller's deadline.
pub fn ask_each<T: Send>(
    servers: &[SocketAddr],
    what: &str,
    ask: impl Fn(SocketAddr) -> Result<T, TechniqueError> + Sync,
) -> Result<Vec<T>, TechniqueError> {
    let results = fanout::scoped("natt-ask", Instant::now(), servers.iter().copied(), ask);
    let mut answers = Vec::new();
    let mut errors = Vec::new();
    for (server, finished) in servers.iter().zip(results) {
        match finished.into_timed("query").1 {
            Ok(a) => answers.push(a),
            Err(e) => errors.push(format!("{server}: {e}")),
        }
    }
    if answers.is_empty() {
        return Err(TechniqueError::TimedOut(format!(
            "no {what} server answered ({})",
            errors.join("; ")
        )));
    }
    Ok(answers)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::thread;

    #[test]
    fn ask_each_keeps_answers_and_reports_all_errors() {
        let servers: Vec<SocketAddr> = vec!["203.0.113.1:1".parse().unwrap(), "203.0.113.2:1".parse().unwrap()];
        let ok = ask_each(&servers, "test", |s| {
            if s.ip().to_string().ends_with(".1") {
                Ok(s.port())
            } else {
                Err(TechniqueError::Refused("no".into()))
            }
        });
        assert_eq!(ok.unwrap(), vec![1]);
        let err = ask_each(&servers, "test", |_| Err::<(), _>(TechniqueError::Refused("no".into()))).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("203.0.113.1:1") && msg.contains("203.0.113.2:1"), "{msg}");
    }

    /// An exchange that reports the servers it was made with as endpoints, at once.
    struct Echo(Vec<SocketAddr>);

    impl UdpExchange for Echo {
        fn poll_transmit(&mut self, _: Instant) -> Option<Transmit> {
            None
        }
        fn poll_timeout(&self) -> Option<Instant> {
            None
        }
        fn handle_datagram(&mut self, _: Instant, _: SocketAddr, _: &[u8]) -> bool {
            false
        }
        fn poll_result(&mut self, _: Instant) -> Option<Result<Vec<MappedSocketAddr>, TechniqueError>> {
            Some(self.finish())
        }
        fn finish(&mut self) -> Result<Vec<MappedSocketAddr>, TechniqueError> {
            Ok(self.0.iter().map(|&a| MappedSocketAddr::new(a, true, "echo")).collect())
        }
    }

    fn echo(servers: Vec<SocketAddr>, _: Instant) -> Result<Box<dyn UdpExchange>, TechniqueError> {
        Ok(Box::new(Echo(servers)))
    }

    /// Drives `ex` as the mapping driver does, without a socket, until it has a result.
    fn run(mut ex: Box<dyn UdpExchange>, deadline: Instant) -> Result<Vec<SocketAddr>, TechniqueError> {
        loop {
            let now = Instant::now();
            if let Some(r) = ex.poll_result(now) {
                return r.map(|eps| eps.iter().map(|e| e.addr).collect());
            }
            if now >= deadline {
                return ex.finish().map(|eps| eps.iter().map(|e| e.addr).collect());
            }
            assert!(ex.poll_transmit(now).is_none());
            let wake = ex.poll_timeout().unwrap_or(deadline).min(deadline);
            thread::sleep(wake.saturating_duration_since(Instant::now()));
        }
    }

    fn v4() -> SocketAddr {
        "0.0.0.0:0".parse().unwrap()
    }

    #[test]
    fn names_are_resolved_when_the_exchange_runs() {
        let list = ServerList::default();
        list.add("203.0.113.1:1".parse().unwrap());
        list.add_name(ServerName::new("localhost", 7));
        // An IP given as a name is an address.
        list.add_name(ServerName::new("203.0.113.1", 1));
        assert_eq!(list.all().len(), 1);
        assert_eq!(list.names(), vec![ServerName::new("localhost", 7)]);
        let ex = list.udp_exchange(v4(), "test", echo).unwrap();
        let got = run(ex, Instant::now() + Duration::from_secs(5)).unwrap();
        assert_eq!(
            got,
            vec!["203.0.113.1:1".parse().unwrap(), "127.0.0.1:7".parse().unwrap()]
        );
    }

    #[test]
    fn a_name_without_address_fails_naming_it() {
        let list = ServerList::default();
        // localhost has no address of the other family... or resolves to ::1 only for IPv6:
        // ask for an unknown name instead (no network in the test's namespace: fails fast).
        list.add_name(ServerName::new("no-such-host.invalid", 3478));
        let t0 = Instant::now();
        let ex = list.udp_exchange(v4(), "test", echo).unwrap();
        let e = run(ex, t0 + Duration::from_secs(10)).unwrap_err();
        assert!(matches!(e, TechniqueError::Resolve(_)), "{e:?}");
        assert!(e.to_string().contains("no-such-host.invalid:3478"), "{e}");
        assert!(t0.elapsed() < Duration::from_secs(10));

        // Beside a server that works, the name is only reported when the exchange fails.
        list.add("203.0.113.1:1".parse().unwrap());
        let ex = list.udp_exchange(v4(), "test", echo).unwrap();
        assert_eq!(run(ex, Instant::now() + Duration::from_secs(10)).unwrap().len(), 1);
        let ex = list
            .udp_exchange(v4(), "test", |_, _| Err(TechniqueError::TimedOut("silence".into())))
            .unwrap();
        let e = run(ex, Instant::now() + Duration::from_secs(10))
            .unwrap_err()
            .to_string();
        assert!(e.contains("silence") && e.contains("no-such-host.invalid"), "{e}");

        // Over TCP too.
        let e = ServerList::default();
        e.add_name(ServerName::new("no-such-host.invalid", 3478));
        let err = e
            .ask_each_until(v4(), "test", "test (TCP)", Instant::now() + Duration::from_secs(10), Ok)
            .unwrap_err();
        assert!(err.to_string().contains("no-such-host.invalid"), "{err}");
    }

    #[test]
    fn without_servers_nothing_applies_and_a_deadline_past_times_names_out() {
        let list = ServerList::default();
        let e = list.udp_exchange(v4(), "test", echo).err().unwrap();
        assert!(e.is_not_applicable(), "{e}");
        list.add_name(ServerName::new("localhost", 7));
        let got = list.resolve_until(v4(), "test", Instant::now()).unwrap();
        // The lookup may just win the race; if it did not, it is reported as timed out.
        match got.unresolved {
            Some(ResolveError::TimedOut { name, .. }) => assert_eq!(name, "localhost:7"),
            Some(e) => panic!("{e}"),
            None => assert_eq!(got.addrs, vec!["127.0.0.1:7".parse().unwrap()]),
        }
    }
}
