//! NAT-PMP (RFC 6886) messages, version 0: pure encoding and decoding of the external address
//! request (opcode 0) and port mapping requests (opcode 1 UDP, 2 TCP), both ways.
//!
//! ```text
//! external address request:  version(0) | opcode(0)                                          2 bytes
//! external address response: version | 128+0 | result(2) | epoch(4) | external IPv4(4)     12 bytes
//! mapping request:           version | opcode | reserved(2) | internal port(2) | suggested external port(2) | lifetime(4)
//! mapping response:          version | 128+op | result(2) | epoch(4) | internal port(2) | external port(2) | lifetime(4)
//! ```
//!
//! Error responses may stop after the epoch (8 bytes). Decoding never panics.

#![deny(clippy::disallowed_methods)] // a protocol core: see clippy.toml

use std::net::Ipv4Addr;

use natt_core::bytes::{Reader, Truncated, Writer};

use crate::error::WireError;
use crate::result_code::NatPmp;

/// The NAT-PMP version.
pub const VERSION: u8 = 0;
/// Opcode of the external address request.
pub const OP_EXTERNAL_ADDRESS: u8 = 0;
/// Opcode of a UDP mapping request.
pub const OP_MAP_UDP: u8 = 1;
/// Opcode of a TCP mapping request.
pub const OP_MAP_TCP: u8 = 2;
/// Added to the opcode in responses.
const RESPONSE_OFFSET: u8 = 128;
/// The common start of every response: version, opcode, result, epoch.
pub const RESPONSE_HEADER_LEN: usize = 8;
/// Length of the external address response.
pub const EXTERNAL_ADDRESS_RESPONSE_LEN: usize = 12;
/// Length of a mapping request.
pub const MAP_REQUEST_LEN: usize = 12;
/// Length of a mapping response.
pub const MAP_RESPONSE_LEN: usize = 16;

pub use crate::result_code::ResultCode;

/// A NAT-PMP request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Request {
    /// What is the gateway's external address?
    ExternalAddress,
    /// Map (lifetime > 0) or delete (lifetime 0) a port.
    Map(MapRequest),
}

/// A mapping request's fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MapRequest {
    /// [`OP_MAP_UDP`] or [`OP_MAP_TCP`].
    pub opcode: u8,
    /// The internal port.
    pub internal_port: u16,
    /// The external port wished for (0: no preference; must be 0 when deleting).
    pub suggested_external_port: u16,
    /// Requested lifetime in seconds; 0 deletes the mapping.
    pub lifetime: u32,
}

/// A NAT-PMP response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Response {
    /// The opcode answered (the request's: the response's minus 128).
    pub opcode: u8,
    /// The result.
    pub result: ResultCode<NatPmp>,
    /// Seconds since the gateway's port mapping state began (RFC 6886 section 3.6).
    pub epoch: u32,
    /// What the response carries after the header, if it is long enough.
    pub body: Body,
}

/// The opcode-specific part of a response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Body {
    /// Nothing (error responses may end after the epoch).
    None,
    /// The external address.
    ExternalAddress(Ipv4Addr),
    /// A mapping.
    Map {
        /// The internal port.
        internal_port: u16,
        /// The external port mapped (0 when deleted).
        external_port: u16,
        /// The lifetime granted in seconds.
        lifetime: u32,
    },
}

/// Encodes a request.
pub fn encode_request(r: &Request) -> Vec<u8> {
    match r {
        Request::ExternalAddress => vec![VERSION, OP_EXTERNAL_ADDRESS],
        Request::Map(m) => {
            let mut w = Writer::with_capacity(MAP_REQUEST_LEN);
            w.u8(VERSION)
                .u8(m.opcode)
                .zeros(2)
                .u16(m.internal_port)
                .u16(m.suggested_external_port)
                .u32(m.lifetime);
            w.into_vec()
        }
    }
}

/// Encodes a response (as a gateway would; used by tests and fake gateways).
pub fn encode_response(r: &Response) -> Vec<u8> {
    let mut w = Writer::with_capacity(MAP_RESPONSE_LEN);
    w.u8(VERSION)
        .u8(r.opcode.wrapping_add(RESPONSE_OFFSET))
        .u16(r.result.0)
        .u32(r.epoch);
    match r.body {
        Body::None => {}
        Body::ExternalAddress(ip) => {
            w.bytes(&ip.octets());
        }
        Body::Map {
            internal_port,
            external_port,
            lifetime,
        } => {
            w.u16(internal_port).u16(external_port).u32(lifetime);
        }
    }
    w.into_vec()
}

/// A message's first two bytes (version and opcode), and a reader of the rest.
fn version_and_opcode(data: &[u8]) -> Option<(Reader<'_>, u8, u8)> {
    let mut r = Reader::new(data);
    let [version, opcode] = r.array().ok()?;
    Some((r, version, opcode))
}

/// A mapping response's body.
fn decode_map_body(r: &mut Reader<'_>) -> Result<Body, Truncated> {
    Ok(Body::Map {
        internal_port: r.u16()?,
        external_port: r.u16()?,
        lifetime: r.u32()?,
    })
}

/// Decodes a response. A success response must carry its body; an error response may end
/// after the epoch.
pub fn decode_response(data: &[u8]) -> Result<Response, WireError> {
    let truncated = |need: usize| WireError::Truncated { len: data.len(), need };
    let Some((mut r, version, opcode)) = version_and_opcode(data) else {
        return Err(truncated(RESPONSE_HEADER_LEN));
    };
    if version != VERSION {
        return Err(WireError::WrongVersion(version));
    }
    if opcode < RESPONSE_OFFSET {
        return Err(WireError::WrongDirection { expected: "response" });
    }
    let opcode = opcode - RESPONSE_OFFSET;
    let result = ResultCode(r.u16().map_err(|_| truncated(RESPONSE_HEADER_LEN))?);
    let epoch = r.u32().map_err(|_| truncated(RESPONSE_HEADER_LEN))?;
    let body = match opcode {
        OP_EXTERNAL_ADDRESS => r
            .array::<4>()
            .map_or(Body::None, |ip| Body::ExternalAddress(Ipv4Addr::from(ip))),
        OP_MAP_UDP | OP_MAP_TCP => decode_map_body(&mut r).unwrap_or(Body::None),
        _ => Body::None,
    };
    if result == ResultCode::SUCCESS && body == Body::None {
        let need = match opcode {
            OP_EXTERNAL_ADDRESS => EXTERNAL_ADDRESS_RESPONSE_LEN,
            OP_MAP_UDP | OP_MAP_TCP => MAP_RESPONSE_LEN,
            _ => RESPONSE_HEADER_LEN,
        };
        if data.len() < need {
            return Err(truncated(need));
        }
    }
    Ok(Response {
        opcode,
        result,
        epoch,
        body,
    })
}

/// Decodes a request (as a gateway would; used by tests and fake gateways).
pub fn decode_request(data: &[u8]) -> Result<Request, WireError> {
    let truncated = |need: usize| WireError::Truncated { len: data.len(), need };
    let Some((mut r, version, opcode)) = version_and_opcode(data) else {
        return Err(truncated(2));
    };
    if version != VERSION {
        return Err(WireError::WrongVersion(version));
    }
    match opcode {
        OP_EXTERNAL_ADDRESS => Ok(Request::ExternalAddress),
        OP_MAP_UDP | OP_MAP_TCP => {
            let map = |r: &mut Reader<'_>| -> Result<MapRequest, Truncated> {
                r.skip(2)?;
                Ok(MapRequest {
                    opcode,
                    internal_port: r.u16()?,
                    suggested_external_port: r.u16()?,
                    lifetime: r.u32()?,
                })
            };
            map(&mut r).map(Request::Map).map_err(|_| truncated(MAP_REQUEST_LEN))
        }
        _ => Err(WireError::WrongDirection { expected: "request" }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_layout_and_round_trip() {
        assert_eq!(encode_request(&Request::ExternalAddress), vec![0, 0]);
        let map = Request::Map(MapRequest {
            opcode: OP_MAP_TCP,
            internal_port: 40000,
            suggested_external_port: 40001,
            lifetime: 7200,
        });
        let bytes = encode_request(&map);
        assert_eq!(bytes, vec![0, 2, 0, 0, 0x9c, 0x40, 0x9c, 0x41, 0, 0, 0x1c, 0x20]);
        assert_eq!(decode_request(&bytes).unwrap(), map);
        assert_eq!(decode_request(&[0, 0]).unwrap(), Request::ExternalAddress);
        assert!(decode_request(&bytes[..11]).is_err());
        assert!(decode_request(&[2, 1]).is_err());
    }

    #[test]
    fn responses_round_trip() {
        let ext = Response {
            opcode: OP_EXTERNAL_ADDRESS,
            result: ResultCode::SUCCESS,
            epoch: 1234,
            body: Body::ExternalAddress(Ipv4Addr::new(203, 0, 113, 101)),
        };
        let bytes = encode_response(&ext);
        assert_eq!(bytes.len(), EXTERNAL_ADDRESS_RESPONSE_LEN);
        assert_eq!(&bytes[..4], &[0, 128, 0, 0]);
        assert_eq!(decode_response(&bytes).unwrap(), ext);
        let map = Response {
            opcode: OP_MAP_UDP,
            result: ResultCode::SUCCESS,
            epoch: 1235,
            body: Body::Map {
                internal_port: 40000,
                external_port: 40000,
                lifetime: 3600,
            },
        };
        let bytes = encode_response(&map);
        assert_eq!(bytes.len(), MAP_RESPONSE_LEN);
        assert_eq!(bytes[1], 129);
        assert_eq!(decode_response(&bytes).unwrap(), map);
    }

    #[test]
    fn short_error_responses_decode() {
        // What a NAT-PMP gateway answers to a PCP request: version 0, result 1, 8 bytes.
        let bytes = [0, 0x81, 0, 1, 0, 0, 0, 9];
        let r = decode_response(&bytes).unwrap();
        assert_eq!(r.opcode, OP_MAP_UDP);
        assert_eq!(r.result, ResultCode::UNSUPPORTED_VERSION);
        assert_eq!(r.epoch, 9);
        assert_eq!(r.body, Body::None);
        assert_eq!(r.result.to_string(), "UNSUPPORTED_VERSION (1)");
    }

    #[test]
    fn truncated_success_is_an_error() {
        let bytes = encode_response(&Response {
            opcode: OP_MAP_UDP,
            result: ResultCode::SUCCESS,
            epoch: 1,
            body: Body::Map {
                internal_port: 1,
                external_port: 2,
                lifetime: 3,
            },
        });
        for len in 0..bytes.len() {
            assert!(decode_response(&bytes[..len]).is_err(), "{len}");
        }
        let ext = encode_response(&Response {
            opcode: OP_EXTERNAL_ADDRESS,
            result: ResultCode::SUCCESS,
            epoch: 1,
            body: Body::ExternalAddress(Ipv4Addr::LOCALHOST),
        });
        assert!(decode_response(&ext[..11]).is_err());
    }

    #[test]
    fn wrong_version_and_direction() {
        assert_eq!(
            decode_response(&[2, 0x81, 0, 0, 0, 0, 0, 0]),
            Err(WireError::WrongVersion(2))
        );
        assert_eq!(
            decode_response(&[0, 1, 0, 0, 0, 0, 0, 0]),
            Err(WireError::WrongDirection { expected: "response" })
        );
    }

    #[test]
    fn no_panic_on_any_short_input() {
        for len in 0usize..20 {
            let mut seed = (len as u32 + 1).wrapping_mul(2_246_822_519) | 1;
            for _ in 0..2000 {
                let data: Vec<u8> = crate::noise::bytes(&mut seed, len);
                let _ = decode_response(&data);
                let _ = decode_request(&data);
            }
        }
    }
}
