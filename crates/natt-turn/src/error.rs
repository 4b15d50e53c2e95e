//! [`TurnError`]: why a TURN allocation, or a request on it, failed, in one line each.

use std::net::{IpAddr, SocketAddr};

/// Why a TURN allocation or a request on it failed.
#[derive(Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TurnError {
    /// The server refused our credentials: it answered 401 to a request that carried them
    /// (or 441 Wrong Credentials).
    #[error("TURN server {server}: wrong credentials for user {username:?} (realm {realm:?})")]
    WrongCredentials {
        /// The server.
        server: SocketAddr,
        /// The user name tried (the password is never shown).
        username: String,
        /// The realm the server named.
        realm: String,
    },
    /// The server answers, but not as a TURN server (a STUN-only server's 400 or 420 to
    /// Allocate, or an answer without a relayed address).
    #[error("{server} does not speak TURN: {why}")]
    NotTurn {
        /// The server.
        server: SocketAddr,
        /// What it answered.
        why: String,
    },
    /// 486: the user has as many allocations as the server allows.
    #[error("TURN server {server}: allocation quota reached (486) for this user")]
    QuotaReached {
        /// The server.
        server: SocketAddr,
    },
    /// No answer from the server before the deadline (or after every retransmission).
    #[error("TURN server {server} did not answer {what} in time")]
    Silent {
        /// The server.
        server: SocketAddr,
        /// Which request: `Allocate`, `Refresh`, ...
        what: &'static str,
    },
    /// The server kept answering 438 Stale Nonce with fresh nonces.
    #[error("TURN server {server}: nonce still stale after {retries} retries")]
    StaleNonceLoop {
        /// The server.
        server: SocketAddr,
        /// Retries made with the nonces it gave.
        retries: u8,
    },
    /// 437: the 5-tuple already has an allocation (Allocate), or no longer has one (Refresh,
    /// CreatePermission, ChannelBind: it expired).
    #[error("TURN server {server}: allocation mismatch (437) on {what}")]
    AllocationMismatch {
        /// The server.
        server: SocketAddr,
        /// Which request.
        what: &'static str,
    },
    /// Any other error response.
    #[error("TURN server {server} refused {what}: {code} {reason}")]
    Refused {
        /// The server.
        server: SocketAddr,
        /// Which request.
        what: &'static str,
        /// The error code.
        code: u16,
        /// Its reason phrase.
        reason: String,
    },
    /// Data to a peer that has no permission (add it first).
    #[error("no permission for peer {0} on the relay (add the peer first)")]
    NoPermission(IpAddr),
    /// There is no allocation (not made yet, failed, or deleted).
    #[error("no TURN allocation on {0}")]
    NoAllocation(SocketAddr),
    /// The channel numbers are used up (4096 peers on one allocation).
    #[error("no free TURN channel number left")]
    NoChannel,
    /// Something this allocation cannot do (TCP relaying over UDP to the server, datagrams on
    /// a TCP relay).
    #[error("not supported: {0}")]
    NotSupported(&'static str),
    /// A message could not be encoded (a payload too long, a credential too long).
    #[error("cannot encode a TURN message: {0}")]
    Encode(String),
    /// Talking to the server failed.
    #[error("TURN server {server}: {what}: {error}")]
    Io {
        /// The server.
        server: SocketAddr,
        /// What was being done.
        what: String,
        /// The error, as text (the kind is in the message).
        error: String,
    },
}

natt_core::debug_as_display!(TurnError);

impl TurnError {
    /// An I/O error while `what`.
    pub fn io(server: SocketAddr, what: impl Into<String>, error: &std::io::Error) -> Self {
        TurnError::Io {
            server,
            what: what.into(),
            error: error.to_string(),
        }
    }
}

impl From<TurnError> for natt_core::TechniqueError {
    fn from(e: TurnError) -> Self {
        use natt_core::TechniqueError as T;
        match e {
            TurnError::Silent { .. } => T::TimedOut(e.to_string()),
            TurnError::NotTurn { .. } | TurnError::StaleNonceLoop { .. } | TurnError::Encode(_) => {
                T::Protocol(e.to_string())
            }
            TurnError::Io { .. } => T::Other(Box::new(e)),
            _ => T::Refused(e.to_string()),
        }
    }
}
