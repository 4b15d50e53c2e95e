//! Errors of hole punching, and [`NoPath`]: why a punch found no path, as facts a program can
//! act on (a stale token, a peer that has not started, a token without a public address).

use std::fmt;
use std::io;
use std::net::IpAddr;

/// Why a hole punch failed.
#[derive(thiserror::Error)]
#[non_exhaustive]
pub enum PunchError {
    /// The peer's rendezvous information is our own (the same secret).
    #[error("the peer's rendezvous info is our own: exchange tokens, do not reuse yours")]
    OwnToken,
    /// The peer's rendezvous info lists no endpoint at all.
    #[error("the peer's token lists no endpoint")]
    NoEndpoint,
    /// None of the peer's endpoints can be reached or be the peer (each with the reason).
    #[error("none of the peer's endpoints can be used: {0}")]
    UnusableEndpoints(String),
    /// The deadline had passed before the punch started.
    #[error("the punch's deadline had already passed when it started")]
    DeadlinePassed,
    /// No authenticated path to the peer was found before the deadline; what was tried and
    /// what came back.
    #[error("no path to the peer before the deadline ({0})")]
    TimedOut(NoPath),
    /// No direct path can be punched between these two sides (the reason); only a relay can
    /// join them. Returned early, before the deadline.
    #[error("no direct path to the peer ({0})")]
    NoDirectPath(NoPath),
    /// A socket operation failed.
    #[error("socket error: {0}")]
    Io(#[from] io::Error),
}

natt_core::debug_as_display!(PunchError);

/// Why a punch found no path to the peer by its deadline. The same facts whichever side (role)
/// this is.
#[derive(Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum NoPath {
    /// Nothing came back from the peer's addresses: the peer has not started (or is gone), or
    /// its NAT or firewall drops what we send.
    NothingCameBack {
        /// How many of the peer's addresses were tried.
        addresses: usize,
        /// The peer's token lists only private addresses (it had no STUN or simple server):
        /// only its own network can reach it.
        private_only: bool,
    },
    /// Packets (UDP) or streams (TCP) came from the peer's addresses, but failed
    /// authentication: the two sides hold different tokens (a stale token, or a wrong one).
    FailedAuthentication {
        /// How many.
        count: u32,
    },
    /// Authenticated messages came that the peer had sent to another address than ours: relayed
    /// by a third party, or our token lacks the public address the peer sees us at.
    AddressedElsewhere {
        /// How many.
        count: u32,
        /// The IPs our token lists.
        our_ips: Vec<IpAddr>,
    },
    /// The peer's addresses refused our connections (TCP): nothing listens there, the peer has
    /// not started or its token is stale.
    Refused {
        /// How many connection attempts were refused.
        count: u32,
        /// How many of the peer's addresses were tried.
        addresses: usize,
    },
    /// The peer was heard, but the two sides did not confirm one path both ways in time (on a
    /// lossy path, give the punch more time).
    NotConfirmed(String),
    /// Both sides are behind NATs whose mapping varies by destination (symmetric NATs): each
    /// gives every destination a new random port, so a direct path would take about 170 000
    /// probes to find; natt does not try. A relay joins such peers.
    BothSymmetric,
    /// One side is behind a symmetric NAT and the birthday method found no port
    /// (`natt_punch::birthday`): we sent `probes` probes to random ports of the peer's address
    /// (the easy side), or held `sockets` ports open for the peer's probes (the hard side), and
    /// nothing came back. The peer has not started, or is gone.
    BirthdayMissed {
        /// Probes sent to random ports of the peer's address (0 on the hard side).
        probes: usize,
        /// Sockets whose ports were held open for the peer (1 on the easy side).
        sockets: usize,
    },
    /// Something else stopped the punch (a socket error of the driver).
    Other(String),
}

impl fmt::Display for NoPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NoPath::NothingCameBack {
                addresses,
                private_only,
            } => {
                write!(f, "nothing came back from the peer's {addresses} address(es)")?;
                if *private_only {
                    f.write_str(
                        " (the peer's token lists only private addresses: it had no STUN or simple server, \
                         so only its own network can reach it)",
                    )?;
                }
                Ok(())
            }
            NoPath::FailedAuthentication { count } => write!(
                f,
                "{count} packet(s) or stream(s) from the peer's addresses failed authentication: a stale or wrong token"
            ),
            NoPath::AddressedElsewhere { count, our_ips } => write!(
                f,
                "{count} authenticated message(s) arrived that the peer addressed elsewhere than our addresses \
                 {our_ips:?} (relayed, or our token lacks our public address)"
            ),
            NoPath::Refused { count, addresses } => write!(
                f,
                "the peer's {addresses} address(es) refused {count} connection attempt(s): nothing listens there \
                 (the peer has not started, or its token is stale)"
            ),
            NoPath::BothSymmetric => f.write_str(
                "both sides are behind symmetric NATs (each gives every destination a new random port): \
                 a direct path would take about 170 000 probes, so natt does not try; only a relay can join them",
            ),
            NoPath::BirthdayMissed { probes, sockets } if *probes > 0 => write!(
                f,
                "the peer is behind a symmetric NAT: {probes} probes to random ports of its address found none of \
                 the ports its sockets hold open (the peer has not started, or is gone)"
            ),
            NoPath::BirthdayMissed { sockets, .. } => write!(
                f,
                "we are behind a symmetric NAT: none of the {sockets} ports our sockets held open was found by the \
                 peer's probes (the peer has not started, or is gone)"
            ),
            NoPath::NotConfirmed(detail) | NoPath::Other(detail) => f.write_str(detail),
        }
    }
}

natt_core::debug_as_display!(NoPath);
