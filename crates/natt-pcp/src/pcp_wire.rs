//! PCP (RFC 6887) messages, version 2: pure encoding and decoding of the common header, the
//! MAP opcode and ANNOUNCE. Requests and responses both ways (the client sends requests and
//! reads responses; tests play the server).
//!
//! ```text
//! request:  version(2) | R=0,opcode | reserved(2) | lifetime(4) | client IP(16)      = 24 bytes
//! response: version    | R=1,opcode | reserved | result | lifetime(4) | epoch(4) | reserved(12)
//! MAP:      nonce(12) | protocol | reserved(3) | internal port(2) | external port(2) | external IP(16)
//! ```
//!
//! Addresses are 128 bits; IPv4 addresses are IPv4-mapped (`::ffff:a.b.c.d`). Decoding never
//! panics: a datagram that is not a well-formed message is a [`WireError`].

#![deny(clippy::disallowed_methods)] // a protocol core: see clippy.toml

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use natt_core::bytes::{Reader, Truncated, Writer};

use crate::error::WireError;
use crate::result_code::Pcp;

/// The PCP version this crate speaks.
pub const VERSION: u8 = 2;
/// The port PCP (and NAT-PMP) servers listen on.
pub const SERVER_PORT: u16 = 5351;
/// Length of the common request and response headers.
pub const HEADER_LEN: usize = 24;
/// Length of the MAP opcode's data.
pub const MAP_LEN: usize = 36;
/// Length of a MAP request or response without options.
pub const MAP_MESSAGE_LEN: usize = HEADER_LEN + MAP_LEN;
/// Longest PCP message (RFC 6887 section 7).
pub const MAX_LEN: usize = 1100;
/// The ANNOUNCE opcode.
pub const OPCODE_ANNOUNCE: u8 = 0;
/// The MAP opcode.
pub const OPCODE_MAP: u8 = 1;
/// The R bit of the opcode byte: set in responses.
const RESPONSE_BIT: u8 = 0x80;

/// A MAP mapping nonce: 96 random bits chosen by the client, echoed by the server, and needed
/// again to renew or delete the mapping.
pub type Nonce = [u8; 12];

/// IANA protocol number of UDP.
pub const PROTO_UDP: u8 = 17;
/// IANA protocol number of TCP.
pub const PROTO_TCP: u8 = 6;

pub use crate::result_code::ResultCode;

/// The MAP opcode's fields, the same in requests and responses: in a request the external
/// address is the suggested one, in a response the assigned one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MapData {
    /// The mapping nonce.
    pub nonce: Nonce,
    /// IANA protocol number ([`PROTO_UDP`], [`PROTO_TCP`]).
    pub protocol: u8,
    /// The internal port.
    pub internal_port: u16,
    /// The external address and port (all zeros: no preference).
    pub external: SocketAddr,
}

/// A PCP request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// The version (2).
    pub version: u8,
    /// The opcode ([`OPCODE_MAP`], [`OPCODE_ANNOUNCE`]).
    pub opcode: u8,
    /// Requested lifetime in seconds (0: delete).
    pub lifetime: u32,
    /// The client's own address, as it sends from.
    pub client: IpAddr,
    /// MAP's fields, for a MAP request.
    pub map: Option<MapData>,
}

/// A PCP response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// The version: 2, or the server's highest for [`ResultCode::UNSUPP_VERSION`].
    pub version: u8,
    /// The opcode answered (without the R bit).
    pub opcode: u8,
    /// The result.
    pub result: ResultCode<Pcp>,
    /// Granted lifetime in seconds (for errors: how long the error holds).
    pub lifetime: u32,
    /// Seconds since the server's state began (RFC 6887 section 8.5).
    pub epoch: u32,
    /// MAP's fields, when the response is long enough to hold them.
    pub map: Option<MapData>,
}

/// An address as PCP carries it: 16 bytes, IPv4 mapped into IPv6.
pub fn ip_to_bytes(ip: IpAddr) -> [u8; 16] {
    match ip {
        IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
        IpAddr::V6(v6) => v6.octets(),
    }
}

/// An address from PCP's 16 bytes: IPv4-mapped addresses become IPv4.
pub fn ip_from_bytes(bytes: [u8; 16]) -> IpAddr {
    let v6 = Ipv6Addr::from(bytes);
    match v6.to_ipv4_mapped() {
        Some(v4) => IpAddr::V4(v4),
        None => IpAddr::V6(v6),
    }
}

/// The all-zeros address of `ip`'s family, which in a MAP request means "no preference".
pub fn unspecified_like(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
    }
}

/// Encodes a request.
pub fn encode_request(r: &Request) -> Vec<u8> {
    let mut w = Writer::with_capacity(MAP_MESSAGE_LEN);
    w.u8(r.version)
        .u8(r.opcode & !RESPONSE_BIT)
        .zeros(2)
        .u32(r.lifetime)
        .bytes(&ip_to_bytes(r.client));
    if let Some(map) = &r.map {
        encode_map(&mut w, map);
    }
    w.into_vec()
}

/// Encodes a response (as a server would; used by tests and fake gateways).
pub fn encode_response(r: &Response) -> Vec<u8> {
    let mut w = Writer::with_capacity(MAP_MESSAGE_LEN);
    w.u8(r.version)
        .u8(r.opcode | RESPONSE_BIT)
        .zeros(1)
        .u8(r.result.0)
        .u32(r.lifetime)
        .u32(r.epoch)
        .zeros(12);
    if let Some(map) = &r.map {
        encode_map(&mut w, map);
    }
    w.into_vec()
}

fn encode_map(w: &mut Writer, map: &MapData) {
    w.bytes(&map.nonce)
        .u8(map.protocol)
        .zeros(3)
        .u16(map.internal_port)
        .u16(map.external.port())
        .bytes(&ip_to_bytes(map.external.ip()));
}

/// MAP's fields, read from just after the common header.
fn decode_map(r: &mut Reader<'_>) -> Result<MapData, Truncated> {
    let nonce = r.array::<12>()?;
    let protocol = r.u8()?;
    r.skip(3)?;
    let internal_port = r.u16()?;
    let port = r.u16()?;
    let ip = ip_from_bytes(r.array::<16>()?);
    Ok(MapData {
        nonce,
        protocol,
        internal_port,
        external: SocketAddr::new(ip, port),
    })
}

/// The error for a read past the end of `data`: the least length the read needed.
fn truncated(data: &[u8]) -> impl Fn(Truncated) -> WireError + '_ {
    |e| WireError::Truncated {
        len: data.len(),
        need: e.need(),
    }
}

/// Checks the length rules every PCP message follows.
fn check_length(data: &[u8]) -> Result<(), WireError> {
    if data.len() < HEADER_LEN {
        return Err(WireError::Truncated {
            len: data.len(),
            need: HEADER_LEN,
        });
    }
    if data.len() > MAX_LEN {
        return Err(WireError::TooLong(data.len()));
    }
    if !data.len().is_multiple_of(4) {
        return Err(WireError::Unaligned(data.len()));
    }
    Ok(())
}

/// A reader of `data` past its first two bytes, and those bytes (version and opcode), after
/// the length checks every PCP message must pass.
fn version_and_opcode(data: &[u8]) -> Result<(Reader<'_>, u8, u8), WireError> {
    check_length(data)?;
    let mut r = Reader::new(data);
    let [version, opcode] = r.array().map_err(truncated(data))?;
    Ok((r, version, opcode))
}

/// Decodes a response. The MAP fields are read when the opcode is MAP and the message holds
/// them; options after them are ignored.
pub fn decode_response(data: &[u8]) -> Result<Response, WireError> {
    let (mut r, version, opcode) = version_and_opcode(data)?;
    if version == 0 {
        // NAT-PMP's version: not a PCP message at all.
        return Err(WireError::WrongVersion(version));
    }
    if opcode & RESPONSE_BIT == 0 {
        return Err(WireError::WrongDirection { expected: "response" });
    }
    let opcode = opcode & !RESPONSE_BIT;
    let [_reserved, result] = r.array().map_err(truncated(data))?;
    let lifetime = r.u32().map_err(truncated(data))?;
    let epoch = r.u32().map_err(truncated(data))?;
    r.skip(12).map_err(truncated(data))?;
    Ok(Response {
        version,
        opcode,
        result: ResultCode(result),
        lifetime,
        epoch,
        map: if opcode == OPCODE_MAP {
            decode_map(&mut r).ok()
        } else {
            None
        },
    })
}

/// Decodes a request (as a server would; used by tests and fake gateways).
pub fn decode_request(data: &[u8]) -> Result<Request, WireError> {
    let (mut r, version, opcode) = version_and_opcode(data)?;
    if opcode & RESPONSE_BIT != 0 {
        return Err(WireError::WrongDirection { expected: "request" });
    }
    r.skip(2).map_err(truncated(data))?;
    let lifetime = r.u32().map_err(truncated(data))?;
    let client = ip_from_bytes(r.array::<16>().map_err(truncated(data))?);
    let map = if opcode == OPCODE_MAP {
        Some(decode_map(&mut r).map_err(|_| WireError::Truncated {
            len: data.len(),
            need: MAP_MESSAGE_LEN,
        })?)
    } else {
        None
    };
    Ok(Request {
        version,
        opcode,
        lifetime,
        client,
        map,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map_request() -> Request {
        Request {
            version: VERSION,
            opcode: OPCODE_MAP,
            lifetime: 7200,
            client: "192.168.1.2".parse().unwrap(),
            map: Some(MapData {
                nonce: [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12],
                protocol: PROTO_UDP,
                internal_port: 40000,
                external: "0.0.0.0:40000".parse().unwrap(),
            }),
        }
    }

    fn map_response() -> Response {
        Response {
            version: VERSION,
            opcode: OPCODE_MAP,
            result: ResultCode::SUCCESS,
            lifetime: 120,
            epoch: 77,
            map: Some(MapData {
                nonce: [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12],
                protocol: PROTO_UDP,
                internal_port: 40000,
                external: "203.0.113.101:40000".parse().unwrap(),
            }),
        }
    }

    #[test]
    fn map_request_layout() {
        let bytes = encode_request(&map_request());
        assert_eq!(bytes.len(), MAP_MESSAGE_LEN);
        assert_eq!(&bytes[..4], &[2, 1, 0, 0]);
        assert_eq!(&bytes[4..8], &7200u32.to_be_bytes());
        // IPv4-mapped client address.
        assert_eq!(
            &bytes[8..24],
            &[0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 192, 168, 1, 2]
        );
        assert_eq!(&bytes[24..36], &[1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]);
        assert_eq!(bytes[36], 17);
        assert_eq!(&bytes[40..42], &40000u16.to_be_bytes());
        assert_eq!(&bytes[42..44], &40000u16.to_be_bytes());
        assert_eq!(&bytes[44..60], &[0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0, 0, 0, 0]);
        assert_eq!(decode_request(&bytes).unwrap(), map_request());
    }

    #[test]
    fn response_round_trip() {
        let r = map_response();
        let bytes = encode_response(&r);
        assert_eq!(bytes.len(), MAP_MESSAGE_LEN);
        assert_eq!(bytes[1], 0x81);
        assert_eq!(decode_response(&bytes).unwrap(), r);
        // Options after the MAP data are ignored.
        let mut with_option = bytes.clone();
        with_option.extend_from_slice(&[0x80, 0, 0, 0]);
        assert_eq!(decode_response(&with_option).unwrap(), r);
    }

    #[test]
    fn announce_has_no_map_data() {
        let req = Request {
            version: VERSION,
            opcode: OPCODE_ANNOUNCE,
            lifetime: 0,
            client: "192.168.1.2".parse().unwrap(),
            map: None,
        };
        let bytes = encode_request(&req);
        assert_eq!(bytes.len(), HEADER_LEN);
        assert_eq!(decode_request(&bytes).unwrap(), req);
        let resp = Response {
            version: VERSION,
            opcode: OPCODE_ANNOUNCE,
            result: ResultCode::SUCCESS,
            lifetime: 0,
            epoch: 5,
            map: None,
        };
        assert_eq!(decode_response(&encode_response(&resp)).unwrap(), resp);
    }

    #[test]
    fn ipv6_addresses_stay_ipv6() {
        let v6: IpAddr = "2001:db8::2".parse().unwrap();
        assert_eq!(ip_from_bytes(ip_to_bytes(v6)), v6);
        let v4: IpAddr = "203.0.113.1".parse().unwrap();
        assert_eq!(ip_from_bytes(ip_to_bytes(v4)), v4);
        assert_eq!(unspecified_like(v6), IpAddr::V6(Ipv6Addr::UNSPECIFIED));
    }

    #[test]
    fn truncated_and_malformed_responses_are_errors() {
        let bytes = encode_response(&map_response());
        for len in 0..bytes.len() {
            let cut = &bytes[..len];
            match decode_response(cut) {
                // A header-only MAP response decodes, without MAP data.
                Ok(r) => {
                    assert!(len >= HEADER_LEN && len.is_multiple_of(4));
                    assert!(r.map.is_none(), "{len}");
                }
                Err(e) => assert!(
                    matches!(e, WireError::Truncated { .. } | WireError::Unaligned(_)),
                    "{len}: {e}"
                ),
            }
        }
        assert_eq!(
            decode_response(&vec![2; MAX_LEN + 4]),
            Err(WireError::TooLong(MAX_LEN + 4))
        );
        let mut request = encode_request(&map_request());
        assert_eq!(
            decode_response(&request),
            Err(WireError::WrongDirection { expected: "response" })
        );
        request[0] = 0;
        request[1] = 0x81;
        assert_eq!(decode_response(&request), Err(WireError::WrongVersion(0)));
        assert!(decode_request(&bytes).is_err());
        assert!(decode_request(&bytes[..30]).is_err());
    }

    #[test]
    fn no_panic_on_any_short_input() {
        // Every byte pattern of a few lengths, and pseudo-random longer ones.
        for len in [0usize, 1, 2, 3, 4, 8, 23, 24, 28, 59, 60, 64] {
            let mut seed = (len as u32).wrapping_mul(2_654_435_761) | 1;
            for _ in 0..2000 {
                let data: Vec<u8> = crate::noise::bytes(&mut seed, len);
                let _ = decode_response(&data);
                let _ = decode_request(&data);
            }
        }
    }

    #[test]
    fn result_code_names() {
        assert_eq!(ResultCode::NO_RESOURCES.to_string(), "NO_RESOURCES (8)");
        assert_eq!(ResultCode::<Pcp>(200).to_string(), "UNKNOWN (200)");
        assert_eq!(ResultCode::UNSUPP_VERSION.name(), "UNSUPP_VERSION");
    }
}
