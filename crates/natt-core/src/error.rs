//! Errors of the mapping driver and of techniques.

use std::io;

use crate::names::ResolveError;

/// An error from mapping a socket.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A socket operation failed.
    #[error("socket error: {0}")]
    Io(#[from] io::Error),
    /// The socket handed in cannot be mapped (for example a TCP socket already connected).
    #[error("unusable socket: {0}")]
    UnusableSocket(String),
}

/// Why a technique produced no endpoint.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TechniqueError {
    /// The technique does not apply here (no server configured, protocol not supported).
    /// Not a failure: the technique was simply not tried.
    #[error("not applicable: {0}")]
    NotApplicable(String),
    /// Nothing answered before the deadline.
    #[error("timed out: {0}")]
    TimedOut(String),
    /// A socket operation failed.
    #[error("I/O error: {0}")]
    Io(#[from] io::Error),
    /// The other side answered something we could not use.
    #[error("protocol error: {0}")]
    Protocol(String),
    /// The other side refused (an error code from a gateway or server).
    #[error("refused: {0}")]
    Refused(String),
    /// A server given by name gave no address to use (see [`crate::names`]).
    #[error(transparent)]
    Resolve(#[from] ResolveError),
    /// Any other error of a technique (third-party techniques bring their own).
    #[error("{0}")]
    Other(Box<dyn std::error::Error + Send + Sync>),
}

impl TechniqueError {
    /// True for [`TechniqueError::NotApplicable`]: the technique was not tried.
    pub fn is_not_applicable(&self) -> bool {
        matches!(self, TechniqueError::NotApplicable(_))
    }
}
