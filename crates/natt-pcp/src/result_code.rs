//! [`ResultCode`]: the result code of a PCP (RFC 6887 section 7.4) or NAT-PMP (RFC 6886
//! section 3.5) response, one type for both protocols. The protocol, a marker type ([`Pcp`],
//! [`NatPmp`]), gives the code's width on the wire (PCP: one byte, NAT-PMP: two) and its
//! names; the codes both protocols share ([`SUCCESS`](ResultCode::SUCCESS),
//! [`NOT_AUTHORIZED`](ResultCode::NOT_AUTHORIZED)) are defined once.
//!
//! ```
//! use natt_pcp::{natpmp_wire, pcp_wire};
//!
//! let pcp: pcp_wire::ResultCode<_> = pcp_wire::ResultCode::NO_RESOURCES;
//! assert_eq!(pcp.to_string(), "NO_RESOURCES (8)");
//! let pmp: natpmp_wire::ResultCode<natt_pcp::result_code::NatPmp> = natpmp_wire::ResultCode(1);
//! assert_eq!(pmp, natpmp_wire::ResultCode::UNSUPPORTED_VERSION);
//! assert_eq!(pmp.to_string(), "UNSUPPORTED_VERSION (1)");
//! ```

#![deny(clippy::disallowed_methods)] // a protocol core: see clippy.toml

use std::fmt;
use std::hash::Hash;

/// A protocol whose responses carry a [`ResultCode`]: its codes' width and names. Implemented
/// by [`Pcp`] and [`NatPmp`] only.
pub trait Codes: sealed::Sealed + Copy + Eq + Hash + fmt::Debug {
    /// The code as the protocol carries it.
    type Raw: Copy + Eq + Hash + fmt::Debug + fmt::Display + Into<u16>;
    /// The protocol's success code.
    const SUCCESS: Self::Raw;
    /// The protocol's "not authorized" code.
    const NOT_AUTHORIZED: Self::Raw;
    /// The codes' names in the protocol's RFC, by number from 0.
    const NAMES: &'static [&'static str];
}

mod sealed {
    pub trait Sealed {}
    impl Sealed for super::Pcp {}
    impl Sealed for super::NatPmp {}
}

/// PCP (RFC 6887): one-byte result codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Pcp {}

/// NAT-PMP (RFC 6886): two-byte result codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NatPmp {}

impl Codes for Pcp {
    type Raw = u8;
    const SUCCESS: u8 = 0;
    const NOT_AUTHORIZED: u8 = 2;
    const NAMES: &'static [&'static str] = &[
        "SUCCESS",
        "UNSUPP_VERSION",
        "NOT_AUTHORIZED",
        "MALFORMED_REQUEST",
        "UNSUPP_OPCODE",
        "UNSUPP_OPTION",
        "MALFORMED_OPTION",
        "NETWORK_FAILURE",
        "NO_RESOURCES",
        "UNSUPP_PROTOCOL",
        "USER_EX_QUOTA",
        "CANNOT_PROVIDE_EXTERNAL",
        "ADDRESS_MISMATCH",
        "EXCESSIVE_REMOTE_PEERS",
    ];
}

impl Codes for NatPmp {
    type Raw = u16;
    const SUCCESS: u16 = 0;
    const NOT_AUTHORIZED: u16 = 2;
    const NAMES: &'static [&'static str] = &[
        "SUCCESS",
        "UNSUPPORTED_VERSION",
        "NOT_AUTHORIZED",
        "NETWORK_FAILURE",
        "OUT_OF_RESOURCES",
        "UNSUPPORTED_OPCODE",
    ];
}

/// A result code of protocol `P` ([`Pcp`] or [`NatPmp`]), as the response carried it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ResultCode<P: Codes>(pub P::Raw);

impl<P: Codes> ResultCode<P> {
    /// SUCCESS.
    pub const SUCCESS: Self = ResultCode(P::SUCCESS);
    /// NOT_AUTHORIZED (PCP), Not Authorized/Refused (NAT-PMP).
    pub const NOT_AUTHORIZED: Self = ResultCode(P::NOT_AUTHORIZED);

    /// The code's name in the protocol's RFC, or `UNKNOWN`.
    pub fn name(self) -> &'static str {
        P::NAMES.get(usize::from(self.number())).copied().unwrap_or("UNKNOWN")
    }

    /// The code's number.
    pub fn number(self) -> u16 {
        self.0.into()
    }
}

impl ResultCode<Pcp> {
    /// UNSUPP_VERSION: the server speaks another version (its highest is in the version field).
    pub const UNSUPP_VERSION: Self = ResultCode(1);
    /// MALFORMED_REQUEST.
    pub const MALFORMED_REQUEST: Self = ResultCode(3);
    /// NO_RESOURCES: for instance a gateway that cannot forward (miniupnpd behind another NAT).
    pub const NO_RESOURCES: Self = ResultCode(8);
}

impl ResultCode<NatPmp> {
    /// Unsupported Version.
    pub const UNSUPPORTED_VERSION: Self = ResultCode(1);
    /// Network Failure (for instance a gateway without a public address, or one that cannot
    /// forward: miniupnpd behind another NAT).
    pub const NETWORK_FAILURE: Self = ResultCode(3);
    /// Out of resources.
    pub const OUT_OF_RESOURCES: Self = ResultCode(4);
}

impl<P: Codes> fmt::Display for ResultCode<P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.name(), self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shared_codes_have_each_protocol_s_names() {
        assert_eq!(ResultCode::<Pcp>::NOT_AUTHORIZED.to_string(), "NOT_AUTHORIZED (2)");
        assert_eq!(ResultCode::<NatPmp>::NOT_AUTHORIZED.number(), 2);
        assert_eq!(ResultCode::<Pcp>(3).name(), "MALFORMED_REQUEST");
        assert_eq!(ResultCode::<NatPmp>(3).name(), "NETWORK_FAILURE");
        assert_eq!(ResultCode::<NatPmp>(300).to_string(), "UNKNOWN (300)");
        assert_eq!(format!("{:?}", ResultCode::NO_RESOURCES), "ResultCode(8)");
        assert_eq!(ResultCode::<Pcp>(13).name(), "EXCESSIVE_REMOTE_PEERS");
        assert_eq!(ResultCode::<Pcp>(14).name(), "UNKNOWN");
        assert_eq!(ResultCode::<NatPmp>(5).name(), "UNSUPPORTED_OPCODE");
        assert_eq!(ResultCode::<NatPmp>(6).name(), "UNKNOWN");
    }
}
