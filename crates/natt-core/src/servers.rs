//! Helpers for techniques that ask servers: a [`ServerList`] shared between threads, and
//! [`ask_each`], which asks every server at once on its own thread and gathers the answers.

use std::net::SocketAddr;
use std::sync::{PoisonError, RwLock};
use std::thread;

use crate::error::TechniqueError;

/// A technique's servers, in the order added, without duplicates.
///
/// ```
/// let list = natt_core::servers::ServerList::default();
/// list.add("203.0.113.10:3478".parse().unwrap());
/// list.add("203.0.113.10:3478".parse().unwrap());
/// assert_eq!(list.all().len(), 1);
/// assert!(list.for_local("[::]:0".parse().unwrap(), "STUN").is_err());
/// ```
#[derive(Debug, Default)]
pub struct ServerList(RwLock<Vec<SocketAddr>>);

impl ServerList {
    /// Adds a server (once).
    pub fn add(&self, server: SocketAddr) {
        let mut servers = self.0.write().unwrap_or_else(PoisonError::into_inner);
        if !servers.contains(&server) {
            servers.push(server);
        }
    }

    /// Every server.
    pub fn all(&self) -> Vec<SocketAddr> {
        self.0.read().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// The servers a socket bound at `local` can reach (same address family); when there is
    /// none, [`TechniqueError::NotApplicable`] naming `what` kind of server is missing.
    pub fn for_local(&self, local: SocketAddr, what: &str) -> Result<Vec<SocketAddr>, TechniqueError> {
        let servers: Vec<SocketAddr> = self
            .all()
            .into_iter()
            .filter(|s| s.is_ipv4() == local.is_ipv4())
            .collect();
        if servers.is_empty() {
            return Err(TechniqueError::NotApplicable(format!(
                "no {what} server of {local}'s address family"
            )));
        }
        Ok(servers)
    }
}

/// Asks every server at once, each on its own thread, with `ask`, and returns what the ones
/// that answered said; if none did, a [`TechniqueError::TimedOut`] listing each server's error.
/// `ask` must return by the caller's deadline.
pub fn ask_each<T: Send>(
    servers: &[SocketAddr],
    what: &str,
    ask: impl Fn(SocketAddr) -> Result<T, TechniqueError> + Sync,
) -> Result<Vec<T>, TechniqueError> {
    let ask = &ask;
    let results: Vec<Result<T, TechniqueError>> = thread::scope(|scope| {
        let handles: Vec<_> = servers.iter().map(|&s| scope.spawn(move || ask(s))).collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(TechniqueError::Other("query thread panicked".into())))
            })
            .collect()
    });
    let mut answers = Vec::new();
    let mut errors = Vec::new();
    for (server, r) in servers.iter().zip(results) {
        match r {
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
}
