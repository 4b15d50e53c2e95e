//! [`PcpError`]: why a PCP or NAT-PMP exchange gave no usable answer, and [`WireError`]: why
//! a datagram is not a message of either protocol.
//!
//! Gateways are untrusted: whatever one sends (truncated or oversized datagrams, wrong
//! versions, opcodes or nonces, absurd lifetimes, an external address peers cannot reach,
//! error codes, silence) ends in one of these or is ignored, never in a panic or a hang.

use std::io;
use std::net::SocketAddr;

use natt_core::TechniqueError;

use crate::transaction::Version;

/// Why a datagram could not be decoded as a PCP or NAT-PMP message.
#[derive(Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WireError {
    /// Shorter than the message needs.
    #[error("truncated message: {len} bytes, need {need}")]
    Truncated {
        /// The datagram's length.
        len: usize,
        /// The least length of the message.
        need: usize,
    },
    /// Longer than the protocol allows (PCP: 1100 bytes).
    #[error("message too long: {0} bytes")]
    TooLong(usize),
    /// A PCP message whose length is not a multiple of 4.
    #[error("PCP message length {0} is not a multiple of 4")]
    Unaligned(usize),
    /// A request where a response was expected, or the other way round.
    #[error("not a {expected}")]
    WrongDirection {
        /// `response` or `request`.
        expected: &'static str,
    },
    /// The version field is not this protocol's.
    #[error("version {0} is not this protocol's")]
    WrongVersion(u8),
}

natt_core::debug_as_display!(WireError);

/// Why PCP / NAT-PMP port mapping failed.
#[derive(thiserror::Error)]
#[non_exhaustive]
pub enum PcpError {
    /// The technique does not apply to this socket (no gateway, address family, bound
    /// address not on the interface toward the gateway).
    #[error("not applicable: {0}")]
    NotApplicable(String),
    /// Nothing listens at the gateway's port: an ICMP port unreachable came back.
    #[error("no PCP or NAT-PMP server at {gateway} (port unreachable)")]
    Unreachable {
        /// The gateway's address.
        gateway: SocketAddr,
    },
    /// The gateway did not answer before the deadline.
    #[error("{version} gateway {gateway} did not answer in time")]
    TimedOut {
        /// The gateway's address.
        gateway: SocketAddr,
        /// The protocol that was being spoken.
        version: Version,
    },
    /// The gateway answered with an error result code.
    #[error("{version} gateway {gateway} answered {code}")]
    Refused {
        /// The gateway's address.
        gateway: SocketAddr,
        /// The protocol that answered.
        version: Version,
        /// The result code, by name and number (`NO_RESOURCES (8)`).
        code: String,
        /// The result code's number.
        number: u16,
    },
    /// The gateway speaks neither PCP version 2 nor NAT-PMP version 0.
    #[error("gateway {gateway} supports neither PCP version 2 nor NAT-PMP: {detail}")]
    Unsupported {
        /// The gateway's address.
        gateway: SocketAddr,
        /// What it said.
        #[source]
        detail: UnsupportedDetail,
    },
    /// The gateway answered success with something unusable (an external address that
    /// [`natt_core::endpoint::unusable_external_ip`] refuses, port 0, lifetime 0).
    #[error("{version} gateway {gateway} answered an unusable mapping: {why}")]
    Malformed {
        /// The gateway's address.
        gateway: SocketAddr,
        /// The protocol that answered.
        version: Version,
        /// What is wrong with it.
        why: String,
    },
    /// A socket operation failed.
    #[error("{what}: {source}")]
    Io {
        /// The step that failed.
        what: String,
        /// The socket error.
        #[source]
        source: io::Error,
    },
}

natt_core::debug_as_display!(PcpError);

/// What an unsupporting gateway said (the source of [`PcpError::Unsupported`]).
#[derive(Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct UnsupportedDetail(pub String);

natt_core::debug_as_display!(UnsupportedDetail);

impl PcpError {
    /// The result code's number when the gateway refused ([`PcpError::Refused`]).
    pub fn result_code(&self) -> Option<u16> {
        match self {
            PcpError::Refused { number, .. } => Some(*number),
            _ => None,
        }
    }

    /// True when the gateway answered at all (a refusal, an unusable mapping, or "unsupported").
    pub fn gateway_answered(&self) -> bool {
        matches!(
            self,
            PcpError::Refused { .. } | PcpError::Malformed { .. } | PcpError::Unsupported { .. }
        )
    }

    pub(crate) fn io(what: impl Into<String>, source: io::Error) -> Self {
        PcpError::Io {
            what: what.into(),
            source,
        }
    }
}

impl From<PcpError> for TechniqueError {
    fn from(e: PcpError) -> Self {
        match e {
            // No gateway, or nothing listening on it: PCP does not apply to this network.
            PcpError::NotApplicable(_) | PcpError::Unreachable { .. } => TechniqueError::NotApplicable(e.to_string()),
            PcpError::TimedOut { .. } => TechniqueError::TimedOut(e.to_string()),
            PcpError::Refused { .. } => TechniqueError::Refused(e.to_string()),
            PcpError::Unsupported { .. } | PcpError::Malformed { .. } => TechniqueError::Protocol(e.to_string()),
            PcpError::Io { source, .. } => TechniqueError::Io(source),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_map_to_technique_errors() {
        let gw: SocketAddr = "192.168.1.1:5351".parse().unwrap();
        let refused = PcpError::Refused {
            gateway: gw,
            version: Version::Pcp,
            code: "NO_RESOURCES (8)".into(),
            number: 8,
        };
        assert_eq!(refused.result_code(), Some(8));
        assert!(refused.gateway_answered());
        assert_eq!(
            refused.to_string(),
            "PCP gateway 192.168.1.1:5351 answered NO_RESOURCES (8)"
        );
        assert!(matches!(TechniqueError::from(refused), TechniqueError::Refused(_)));
        let unreachable = PcpError::Unreachable { gateway: gw };
        assert!(!unreachable.gateway_answered());
        assert!(TechniqueError::from(unreachable).is_not_applicable());
        let timed_out = PcpError::TimedOut {
            gateway: gw,
            version: Version::NatPmp,
        };
        assert_eq!(
            timed_out.to_string(),
            "NAT-PMP gateway 192.168.1.1:5351 did not answer in time"
        );
        assert!(matches!(TechniqueError::from(timed_out), TechniqueError::TimedOut(_)));
        let unsupported = PcpError::Unsupported {
            gateway: gw,
            detail: UnsupportedDetail("NAT-PMP answered UNSUPPORTED_VERSION (1)".into()),
        };
        assert!(unsupported.to_string().contains("neither"));
    }
}
