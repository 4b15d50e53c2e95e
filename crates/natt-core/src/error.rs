//! Errors of the mapping driver and of techniques, and
//! [`debug_as_display!`](crate::debug_as_display), which every natt crate uses so that its
//! errors read as sentences wherever they are printed.

use std::io;

use crate::names::ResolveError;

/// Implements `Debug` for error types as their `Display`: the sentence a person can act on.
///
/// `fn main() -> Result<(), Box<dyn Error>>` prints an error returned from `main` with
/// `Debug`, as do `unwrap`, `expect` and `{:?}` in logs; with a derived `Debug` a damaged
/// token would print `Error: Check` there, with this `Error: token is damaged: check failed
/// (...)`. Every public error type of natt uses it (one mechanism for all crates); match on
/// the variants to tell errors apart in code.
///
/// ```
/// #[derive(thiserror::Error)]
/// enum MyError {
///     #[error("the answer was {0}, not 42")]
///     Wrong(u32),
/// }
/// natt_core::debug_as_display!(MyError);
/// assert_eq!(format!("{:?}", MyError::Wrong(41)), "the answer was 41, not 42");
/// ```
#[macro_export]
macro_rules! debug_as_display {
    ($($ty:ty),+ $(,)?) => {
        $(
            impl ::core::fmt::Debug for $ty {
                fn fmt(&self, f: &mut ::core::fmt::Formatter<'_>) -> ::core::fmt::Result {
                    ::core::fmt::Display::fmt(self, f)
                }
            }
        )+
    };
}

/// An error from mapping a socket.
#[derive(thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A socket operation failed.
    #[error("socket error: {0}")]
    Io(#[from] io::Error),
    /// The socket handed in cannot be mapped (for example a TCP socket already connected).
    #[error("unusable socket: {0}")]
    UnusableSocket(String),
    /// A context was asked for something it cannot be (a server no technique takes, a bad
    /// gateway URL).
    #[error("cannot make the mapping context: {0}")]
    Config(String),
}

/// Why a technique produced no endpoint.
#[derive(thiserror::Error)]
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
    /// The technique was still running when the mapping returned (another technique had
    /// found an external endpoint and this one's grace,
    /// [`GATEWAY_GRACE`](crate::mapping::GATEWAY_GRACE), was over): it goes on in the
    /// background under the mapping's deadline, and what it maps then is added to the
    /// socket's [`PortMappings`](crate::PortMappings) (see
    /// [`PortMappings::take_late`](crate::PortMappings::take_late)).
    #[error("still running in the background after {0:?}: a mapping it makes later is added while the socket is held")]
    InBackground(std::time::Duration),
    /// Any other error of a technique (third-party techniques bring their own).
    #[error("{0}")]
    Other(Box<dyn std::error::Error + Send + Sync>),
}

debug_as_display!(Error, TechniqueError);

impl TechniqueError {
    /// True for [`TechniqueError::NotApplicable`]: the technique was not tried.
    pub fn is_not_applicable(&self) -> bool {
        matches!(self, TechniqueError::NotApplicable(_))
    }
}
