//! [`UpnpError`]: everything that can go wrong between us and a UPnP gateway, in words that say
//! which step failed (search, control request) and why. A gateway's SOAP fault keeps its UPnP
//! error code: [`UpnpError::Refused`] (718 ConflictInMappingEntry, 725
//! OnlyPermanentLeasesSupported, ...), which the mapping logic reacts to.

use std::io;

use natt_core::TechniqueError;

/// Why UPnP IGD port mapping failed.
///
/// Gateways are untrusted: whatever one answers (malformed XML, wrong URLs, error codes, huge
/// or endless responses, silence) ends in one of these, never in a panic or a hang.
#[derive(thiserror::Error)]
#[non_exhaustive]
pub enum UpnpError {
    /// UPnP does not apply to this socket (IPv6, bound to loopback, no IPv4 interface).
    #[error("not applicable: {0}")]
    NotApplicable(String),
    /// No usable gateway answered the search (SSDP) in time. Devices that answered with a
    /// description natt could not use (unreachable, malformed, no WAN connection service,
    /// URLs pointing elsewhere), or that are not the router, are skipped and end here too.
    #[error("no UPnP gateway found: {0}")]
    NoGateway(String),
    /// The deadline passed during `what`.
    #[error("timed out {what}")]
    TimedOut {
        /// The step that did not finish, e.g. `reading http://192.168.1.1:5000/rootDesc.xml`.
        what: String,
    },
    /// A socket operation failed during `what`.
    #[error("{what}: {source}")]
    Io {
        /// The step that failed.
        what: String,
        /// The socket error.
        #[source]
        source: io::Error,
    },
    /// A gateway URL we were given is unusable (not `http://IPv4[:port]/path`).
    #[error("bad URL '{url}': {why}")]
    BadUrl {
        /// The URL, as received (shortened if long).
        url: String,
        /// What is wrong with it.
        why: String,
    },
    /// The gateway answered with an unexpected HTTP status: other than success for a
    /// description, other than 200 (an answer) or 500 (a fault) for a SOAP action.
    #[error("{what}: HTTP status {status}")]
    HttpStatus {
        /// The request.
        what: String,
        /// The status code.
        status: u16,
    },
    /// The gateway's answer is larger than accepted:
    /// [`MAX_DESCRIPTION_BYTES`](crate::description::MAX_DESCRIPTION_BYTES) for a description,
    /// [`MAX_SOAP_BYTES`](crate::soap::MAX_SOAP_BYTES) for a SOAP answer.
    #[error("{what}: response larger than {limit} bytes")]
    TooLarge {
        /// The request.
        what: String,
        /// The limit, in bytes.
        limit: usize,
    },
    /// The gateway's answer is not what the protocol says (bad HTTP, bad XML, missing
    /// elements, nonsense values).
    #[error("{what}: malformed answer: {detail}")]
    Malformed {
        /// The request.
        what: String,
        /// What is wrong.
        detail: String,
    },
    /// The gateway refused an action with a UPnP error code (e.g. 718
    /// ConflictInMappingEntry, 606 Action not authorized).
    #[error("{action}: UPnP error {code} {description}")]
    Refused {
        /// The SOAP action, e.g. `AddPortMapping`.
        action: String,
        /// The UPnP error code.
        code: u16,
        /// The gateway's description of the error.
        description: String,
    },
    /// The gateway has no usable external address (not connected, or `0.0.0.0`).
    #[error("the gateway has no usable external address: {0}")]
    NoExternalAddress(String),
    /// Every external port tried was taken.
    #[error("no external port could be mapped: {0}")]
    NoPort(String),
    /// The gateway's service does not have the action (`AddAnyPortMapping` on IGD:1).
    #[error("the gateway does not support {0}")]
    Unsupported(String),
}

natt_core::debug_as_display!(UpnpError);

impl UpnpError {
    /// True when the gateway did not answer usefully at the transport level (timeout, socket
    /// error, unexpected HTTP status or garbage): it may have moved or restarted, so it is
    /// worth searching for it again. A UPnP error code is a real answer, not such a failure.
    pub fn is_unreachable(&self) -> bool {
        matches!(
            self,
            UpnpError::TimedOut { .. }
                | UpnpError::Io { .. }
                | UpnpError::HttpStatus { .. }
                | UpnpError::Malformed { .. }
                | UpnpError::TooLarge { .. }
        )
    }

    /// The UPnP error code, for [`UpnpError::Refused`].
    pub fn code(&self) -> Option<u16> {
        match self {
            UpnpError::Refused { code, .. } => Some(*code),
            _ => None,
        }
    }

    /// An I/O error during `what`; timeouts become [`UpnpError::TimedOut`].
    pub(crate) fn io(what: impl Into<String>, source: io::Error) -> Self {
        let what = what.into();
        if matches!(source.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) {
            UpnpError::TimedOut { what }
        } else {
            UpnpError::Io { what, source }
        }
    }

    /// An HTTP request (`what`) that `attohttpc` could not make: a socket error, a timeout or
    /// an answer that is not HTTP.
    pub(crate) fn request_failed(what: &str, e: attohttpc::Error) -> Self {
        let what = what.to_owned();
        match e.into_kind() {
            attohttpc::ErrorKind::Io(io) => UpnpError::io(what, io),
            attohttpc::ErrorKind::InvalidResponse(kind) => UpnpError::malformed(what, format!("bad HTTP: {kind}")),
            other => UpnpError::Io {
                what,
                source: io::Error::other(attohttpc::Error::from(other).to_string()),
            },
        }
    }

    /// One error for several attempts that all failed (searches, gateway URLs): the only
    /// one, else [`UpnpError::NoGateway`] listing them all (`none` when there were none).
    pub(crate) fn summarize(mut errors: Vec<UpnpError>, none: &str) -> Self {
        if errors.len() == 1
            && let Some(e) = errors.pop()
        {
            return e;
        }
        let all: Vec<String> = errors
            .iter()
            .map(|e| match e {
                UpnpError::NoGateway(why) => why.clone(),
                e => e.to_string(),
            })
            .collect();
        UpnpError::NoGateway(if all.is_empty() {
            none.to_owned()
        } else {
            all.join("; ")
        })
    }

    pub(crate) fn malformed(what: impl Into<String>, detail: impl Into<String>) -> Self {
        UpnpError::Malformed {
            what: what.into(),
            detail: detail.into(),
        }
    }

    pub(crate) fn timed_out(what: impl Into<String>) -> Self {
        UpnpError::TimedOut { what: what.into() }
    }
}

impl From<UpnpError> for TechniqueError {
    fn from(e: UpnpError) -> Self {
        match e {
            UpnpError::NotApplicable(why) => TechniqueError::NotApplicable(why),
            UpnpError::Unsupported(_) => TechniqueError::Protocol(e.to_string()),
            UpnpError::TimedOut { what } => TechniqueError::TimedOut(what),
            UpnpError::NoGateway(_) => TechniqueError::TimedOut(e.to_string()),
            UpnpError::Refused { .. } | UpnpError::NoPort(_) => TechniqueError::Refused(e.to_string()),
            UpnpError::Io { .. } => TechniqueError::Other(Box::new(e)),
            UpnpError::BadUrl { .. }
            | UpnpError::HttpStatus { .. }
            | UpnpError::TooLarge { .. }
            | UpnpError::Malformed { .. }
            | UpnpError::NoExternalAddress(_) => TechniqueError::Protocol(e.to_string()),
        }
    }
}

/// At most `max` characters of `s`, for quoting untrusted text in errors and logs.
pub(crate) fn shorten(s: &str, max: usize) -> String {
    let mut out: String = s
        .chars()
        .take(max)
        .map(|c| if c.is_control() { '?' } else { c })
        .collect();
    if s.chars().count() > max {
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeouts_are_timeouts_and_codes_are_refusals() {
        let e = UpnpError::io("reading x", io::Error::from(io::ErrorKind::WouldBlock));
        assert!(matches!(e, UpnpError::TimedOut { .. }));
        assert!(e.is_unreachable());
        let r = UpnpError::Refused {
            action: "AddPortMapping".into(),
            code: 718,
            description: "ConflictInMappingEntry".into(),
        };
        assert_eq!(r.code(), Some(718));
        assert!(!r.is_unreachable());
        assert!(matches!(TechniqueError::from(r), TechniqueError::Refused(_)));
        assert!(TechniqueError::from(UpnpError::NotApplicable("ipv6".into())).is_not_applicable());
    }

    #[test]
    fn shorten_cuts_and_hides_control_characters() {
        assert_eq!(shorten("a\r\nb", 10), "a??b");
        assert_eq!(shorten("abcdef", 3), "abc…");
    }
}
