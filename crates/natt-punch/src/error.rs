//! Errors of hole punching.

use std::io;

/// Why a hole punch failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PunchError {
    /// The peer's rendezvous information is our own (the same secret).
    #[error("the peer's rendezvous info is our own: exchange tokens, do not reuse yours")]
    OwnToken,
    /// The peer gave no endpoint of a family our socket can reach.
    #[error("the peer has no endpoint this socket can reach")]
    NoEndpoint,
    /// No authenticated path to the peer was found before the deadline.
    #[error("no path to the peer before the deadline ({0})")]
    TimedOut(String),
    /// A socket operation failed.
    #[error("socket error: {0}")]
    Io(#[from] io::Error),
}
