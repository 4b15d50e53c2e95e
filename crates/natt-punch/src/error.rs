//! Errors of hole punching.

use std::io;

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
    /// No authenticated path to the peer was found before the deadline.
    #[error("no path to the peer before the deadline ({0})")]
    TimedOut(String),
    /// A socket operation failed.
    #[error("socket error: {0}")]
    Io(#[from] io::Error),
}

natt_core::debug_as_display!(PunchError);
