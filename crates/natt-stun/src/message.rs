//! STUN messages (RFC 8489, with the RFC 5780 attributes) as pure encode/decode functions on
//! top of `stun_codec`: Binding requests and responses, and framing on a stream.

#![deny(clippy::disallowed_methods)] // a protocol core: see clippy.toml

use std::net::SocketAddr;

use bytecodec::{DecodeExt, EncodeExt};
use natt_core::frame::Framer;
use stun_codec::rfc5389::attributes::{
    ErrorCode, Fingerprint, MappedAddress, Software, UnknownAttributes, XorMappedAddress, XorMappedAddress2,
};
use stun_codec::rfc5389::methods::BINDING;
use stun_codec::rfc5780::attributes::{ChangeRequest, OtherAddress, ResponseOrigin, ResponsePort};
use stun_codec::{Message, MessageClass, MessageDecoder, MessageEncoder, TransactionId, define_attribute_enums};

define_attribute_enums!(
    Attribute,
    AttributeDecoder,
    AttributeEncoder,
    [
        MappedAddress,
        XorMappedAddress,
        XorMappedAddress2,
        ErrorCode,
        UnknownAttributes,
        Software,
        Fingerprint,
        ChangeRequest,
        ResponseOrigin,
        OtherAddress,
        ResponsePort
    ]
);

// Requests are decoded with an attribute set that leaves CHANGE-REQUEST out: stun_codec 0.4.0
// encodes it as RFC 5780 says (change IP = 0x4, change port = 0x2) but decodes it one bit off
// (0x2, 0x1), so the server reads the raw attribute itself (see `change_request_flags`).
define_attribute_enums!(
    RequestAttribute,
    RequestAttributeDecoder,
    RequestAttributeEncoder,
    [
        MappedAddress,
        XorMappedAddress,
        ErrorCode,
        Software,
        Fingerprint,
        ResponsePort
    ]
);

/// The CHANGE-REQUEST attribute's type.
const CHANGE_REQUEST: u16 = 0x0003;
/// The PADDING attribute's type (RFC 5780 section 7.6): understood, and its content ignored.
const PADDING: u16 = 0x0026;

/// `(change_ip, change_port)` from a CHANGE-REQUEST value (RFC 5780 section 7.2).
fn change_request_flags(value: &[u8]) -> Result<(bool, bool), StunError> {
    match value {
        &[a, b, c, d] => {
            let flags = u32::from_be_bytes([a, b, c, d]);
            Ok((flags & 0x4 != 0, flags & 0x2 != 0))
        }
        _ => Err(StunError::Malformed("CHANGE-REQUEST is not 4 bytes".into())),
    }
}

/// Length of the STUN header.
pub const HEADER_LEN: usize = 20;
/// The magic cookie of RFC 5389 and later, at bytes 4..8 of every message.
pub const MAGIC_COOKIE: [u8; 4] = [0x21, 0x12, 0xA4, 0x42];
/// The largest STUN message natt reads from a stream (RFC 8489 keeps messages well below).
pub const MAX_MESSAGE_LEN: usize = 2048;

/// Why bytes are not the STUN message expected.
#[derive(Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum StunError {
    /// Not a STUN message (wrong first bits, magic cookie or length).
    #[error("not a STUN message")]
    NotStun,
    /// Looks like STUN, but does not decode.
    #[error("malformed STUN message: {0}")]
    Malformed(String),
    /// A STUN message, but not the kind expected.
    #[error("unexpected STUN message: {0}")]
    Unexpected(String),
    /// A message too large to handle.
    #[error("STUN message of {0} bytes is too large")]
    TooLarge(usize),
}

natt_core::debug_as_display!(StunError);

/// True when `bytes` has the shape of a STUN message (RFC 8489 section 5): top two bits zero,
/// the magic cookie, and a length that is a multiple of 4 and matches the datagram. Cheap, for
/// telling STUN apart from other protocols on a shared port.
pub fn looks_like_stun(bytes: &[u8]) -> bool {
    stream_message_len(bytes).is_ok_and(|len| len == bytes.len())
}

/// STUN's framing on a stream (RFC 8489 section 7.2.2: messages back to back, each telling
/// its length in its header): at most [`MAX_MESSAGE_LEN`] bytes, refused by
/// [`stream_message_len`] before they are read.
pub const STREAM_FRAMER: Framer<StunError> = Framer::new(HEADER_LEN, MAX_MESSAGE_LEN, stream_message_len);

/// The total length of the STUN message whose header starts `header`, for framing on a stream
/// (RFC 8489 section 7.2.2 sends messages back to back on TCP).
pub fn stream_message_len(header: &[u8]) -> Result<usize, StunError> {
    let h = header.get(..HEADER_LEN).ok_or(StunError::NotStun)?;
    let (first, cookie) = (h.first().copied().unwrap_or(0xff), h.get(4..8));
    if first & 0xC0 != 0 || cookie != Some(&MAGIC_COOKIE[..]) {
        return Err(StunError::NotStun);
    }
    let body = match h.get(2..4) {
        Some(&[hi, lo]) => usize::from(u16::from_be_bytes([hi, lo])),
        _ => return Err(StunError::NotStun),
    };
    if body % 4 != 0 {
        return Err(StunError::NotStun);
    }
    let len = HEADER_LEN + body;
    if len > MAX_MESSAGE_LEN {
        return Err(StunError::TooLarge(len));
    }
    Ok(len)
}

/// A Binding request as a server sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BindingRequest {
    /// The transaction id.
    pub txid: [u8; 12],
    /// CHANGE-REQUEST: answer from the other IP address.
    pub change_ip: bool,
    /// CHANGE-REQUEST: answer from the other port.
    pub change_port: bool,
    /// RESPONSE-PORT (RFC 5780): send the response to this port of the client's address.
    pub response_port: Option<u16>,
    /// Comprehension-required attributes the request carries that we do not know.
    pub unknown_required: Vec<u16>,
}

/// What a Binding success response says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BindingSuccess {
    /// The reflexive address: XOR-MAPPED-ADDRESS, or MAPPED-ADDRESS from an old server.
    pub mapped: SocketAddr,
    /// OTHER-ADDRESS (RFC 5780): the server's alternate address and port.
    pub other_address: Option<SocketAddr>,
    /// RESPONSE-ORIGIN (RFC 5780): where the server sent the response from.
    pub response_origin: Option<SocketAddr>,
}

/// A Binding response: success or error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BindingResponse {
    /// The transaction id.
    pub txid: [u8; 12],
    /// Success, or the error code and reason.
    pub result: Result<BindingSuccess, (u16, String)>,
}

/// Decodes a STUN message with the attribute set `A` (natt-turn's has TURN's), refusing bytes
/// that do not have the shape of one ([`looks_like_stun`]) before decoding.
pub fn decode_message<A: stun_codec::Attribute>(bytes: &[u8]) -> Result<Message<A>, StunError> {
    if !looks_like_stun(bytes) {
        return Err(StunError::NotStun);
    }
    let mut decoder = MessageDecoder::<A>::new();
    match decoder.decode_from_bytes(bytes) {
        Ok(Ok(m)) => Ok(m),
        Ok(Err(broken)) => Err(StunError::Malformed(broken.error().to_string())),
        Err(e) => Err(StunError::Malformed(e.to_string())),
    }
}

fn encode_message(message: Message<Attribute>) -> Result<Vec<u8>, StunError> {
    MessageEncoder::new()
        .encode_into_bytes(message)
        .map_err(|e| StunError::Malformed(e.to_string()))
}

/// A Binding request, optionally with CHANGE-REQUEST `(change_ip, change_port)`.
///
/// ```
/// use natt_stun::message::{decode_request, encode_binding_request};
/// let bytes = encode_binding_request([1; 12], Some((true, false))).unwrap();
/// let req = decode_request(&bytes).unwrap();
/// assert_eq!((req.txid, req.change_ip, req.change_port), ([1; 12], true, false));
/// ```
pub fn encode_binding_request(txid: [u8; 12], change: Option<(bool, bool)>) -> Result<Vec<u8>, StunError> {
    let mut m = Message::<Attribute>::new(MessageClass::Request, BINDING, TransactionId::new(txid));
    if let Some((ip, port)) = change {
        m.add_attribute(ChangeRequest::new(ip, port));
    }
    encode_message(m)
}

/// Decodes a Binding request (server side).
pub fn decode_request(bytes: &[u8]) -> Result<BindingRequest, StunError> {
    let m = decode_message::<RequestAttribute>(bytes)?;
    if m.class() != MessageClass::Request || m.method() != BINDING {
        return Err(StunError::Unexpected(format!("{:?} {:?}", m.class(), m.method())));
    }
    let (mut change_ip, mut change_port) = (false, false);
    let mut unknown_required = Vec::new();
    for a in m.unknown_attributes() {
        let t = stun_codec::Attribute::get_type(a).as_u16();
        if t == CHANGE_REQUEST {
            (change_ip, change_port) = change_request_flags(a.value())?;
        } else if t < 0x8000 && t != PADDING {
            unknown_required.push(t);
        }
    }
    Ok(BindingRequest {
        txid: *m.transaction_id().as_bytes(),
        change_ip,
        change_port,
        response_port: m.get_attribute::<ResponsePort>().map(ResponsePort::port),
        unknown_required,
    })
}

/// A Binding success response telling `observed`, with the RFC 5780 attributes when given.
pub fn encode_success(
    txid: [u8; 12],
    observed: SocketAddr,
    other_address: Option<SocketAddr>,
    response_origin: Option<SocketAddr>,
) -> Result<Vec<u8>, StunError> {
    let mut m = Message::<Attribute>::new(MessageClass::SuccessResponse, BINDING, TransactionId::new(txid));
    m.add_attribute(XorMappedAddress::new(observed));
    if let Some(other) = other_address {
        m.add_attribute(OtherAddress::new(other));
    }
    if let Some(origin) = response_origin {
        m.add_attribute(ResponseOrigin::new(origin));
    }
    encode_message(m)
}

/// A Binding error response; `unknown` fills UNKNOWN-ATTRIBUTES (for code 420).
pub fn encode_error(txid: [u8; 12], code: u16, reason: &str, unknown: &[u16]) -> Result<Vec<u8>, StunError> {
    let mut m = Message::<Attribute>::new(MessageClass::ErrorResponse, BINDING, TransactionId::new(txid));
    m.add_attribute(ErrorCode::new(code, reason.to_owned()).map_err(|e| StunError::Malformed(e.to_string()))?);
    if !unknown.is_empty() {
        m.add_attribute(UnknownAttributes::new(
            unknown.iter().map(|&t| stun_codec::AttributeType::new(t)).collect(),
        ));
    }
    encode_message(m)
}

/// Decodes a Binding response (client side). XOR-MAPPED-ADDRESS is preferred; MAPPED-ADDRESS
/// is accepted from servers that send nothing else.
///
/// ```
/// use natt_stun::message::{decode_response, encode_success};
/// let observed = "203.0.113.101:40000".parse().unwrap();
/// let bytes = encode_success([2; 12], observed, None, None).unwrap();
/// let resp = decode_response(&bytes).unwrap();
/// assert_eq!(resp.result.unwrap().mapped, observed);
/// ```
pub fn decode_response(bytes: &[u8]) -> Result<BindingResponse, StunError> {
    let m = decode_message::<Attribute>(bytes)?;
    if m.method() != BINDING {
        return Err(StunError::Unexpected(format!("method {:?}", m.method())));
    }
    let txid = *m.transaction_id().as_bytes();
    let result = match m.class() {
        MessageClass::SuccessResponse => {
            let mapped = m
                .get_attribute::<XorMappedAddress>()
                .map(|a| a.address())
                .or_else(|| m.get_attribute::<XorMappedAddress2>().map(|a| a.address()))
                .or_else(|| m.get_attribute::<MappedAddress>().map(|a| a.address()))
                .ok_or_else(|| StunError::Malformed("success response without a mapped address".into()))?;
            Ok(BindingSuccess {
                mapped,
                other_address: m.get_attribute::<OtherAddress>().map(|a| a.address()),
                response_origin: m.get_attribute::<ResponseOrigin>().map(|a| a.address()),
            })
        }
        MessageClass::ErrorResponse => {
            let (code, reason) = m
                .get_attribute::<ErrorCode>()
                .map_or((0, String::from("no ERROR-CODE")), |e| {
                    (e.code(), e.reason_phrase().to_owned())
                });
            Err((code, reason))
        }
        c => return Err(StunError::Unexpected(format!("class {c:?}"))),
    };
    Ok(BindingResponse { txid, result })
}

#[cfg(test)]
#[allow(clippy::disallowed_methods)]
mod tests {
    use super::*;

    #[test]
    fn request_layout_is_rfc8489() {
        let b = encode_binding_request([3; 12], None).unwrap();
        assert_eq!(&b[..8], &[0, 1, 0, 0, 0x21, 0x12, 0xA4, 0x42]);
        assert_eq!(b.len(), 20);
        assert!(looks_like_stun(&b));
        let c = encode_binding_request([3; 12], Some((true, true))).unwrap();
        assert_eq!(c.len(), 28);
        assert_eq!(&c[20..], &[0, 3, 0, 4, 0, 0, 0, 6]);
        let req = decode_request(&c).unwrap();
        assert!(req.change_ip && req.change_port && req.unknown_required.is_empty());
        let p = decode_request(&encode_binding_request([3; 12], Some((false, true))).unwrap()).unwrap();
        assert!(!p.change_ip && p.change_port);
    }

    #[test]
    fn success_round_trip_with_rfc5780_attributes() {
        let observed: SocketAddr = "[2001:db8::5]:1234".parse().unwrap();
        let other: SocketAddr = "203.0.113.11:3479".parse().unwrap();
        let origin: SocketAddr = "203.0.113.10:3478".parse().unwrap();
        let b = encode_success([9; 12], observed, Some(other), Some(origin)).unwrap();
        let r = decode_response(&b).unwrap();
        assert_eq!(r.txid, [9; 12]);
        assert_eq!(
            r.result.unwrap(),
            BindingSuccess {
                mapped: observed,
                other_address: Some(other),
                response_origin: Some(origin)
            }
        );
    }

    #[test]
    fn old_servers_mapped_address_is_accepted() {
        let mut m = Message::<Attribute>::new(MessageClass::SuccessResponse, BINDING, TransactionId::new([4; 12]));
        let a: SocketAddr = "198.51.100.4:5".parse().unwrap();
        m.add_attribute(MappedAddress::new(a));
        let b = encode_message(m).unwrap();
        assert_eq!(decode_response(&b).unwrap().result.unwrap().mapped, a);
    }

    #[test]
    fn error_response_round_trip() {
        let b = encode_error([5; 12], 420, "Unknown Attribute", &[0x0042]).unwrap();
        let r = decode_response(&b).unwrap();
        assert_eq!(r.result.unwrap_err().0, 420);
    }

    #[test]
    fn non_stun_and_malformed_input() {
        assert_eq!(decode_response(b""), Err(StunError::NotStun));
        assert_eq!(decode_response(b"NATT\x01\x01\0\0"), Err(StunError::NotStun));
        let b = encode_binding_request([3; 12], None).unwrap();
        assert_eq!(decode_response(&b[..19]), Err(StunError::NotStun));
        // A request is not a response, and a response is not a request.
        assert!(matches!(decode_response(&b), Err(StunError::Unexpected(_))));
        let s = encode_success([3; 12], "1.2.3.4:5".parse().unwrap(), None, None).unwrap();
        assert!(matches!(decode_request(&s), Err(StunError::Unexpected(_))));
        // Length field says more than there is.
        let mut long = s.clone();
        long[3] += 4;
        assert_eq!(decode_response(&long), Err(StunError::NotStun));
        // An attribute that claims more bytes than the message has.
        let mut bad = s.clone();
        bad[22] = 0xff;
        bad[23] = 0xfc;
        assert!(decode_response(&bad).is_err());
    }

    #[test]
    fn byte_flips_never_panic() {
        let msgs = [
            encode_binding_request([1; 12], Some((true, true))).unwrap(),
            encode_success(
                [2; 12],
                "[2001:db8::1]:9".parse().unwrap(),
                Some("1.2.3.4:5".parse().unwrap()),
                None,
            )
            .unwrap(),
            encode_error([3; 12], 420, "x", &[1, 2, 3]).unwrap(),
        ];
        for m in &msgs {
            for n in 0..=m.len() {
                let _ = decode_response(&m[..n]);
                let _ = decode_request(&m[..n]);
            }
            for i in 0..m.len() {
                for v in [0u8, 1, 0x7f, 0x80, 0xff] {
                    let mut x = m.clone();
                    x[i] = v;
                    let _ = decode_response(&x);
                    let _ = decode_request(&x);
                }
            }
        }
    }

    #[test]
    fn unknown_comprehension_required_attributes_are_reported() {
        let mut b = encode_binding_request([7; 12], None).unwrap();
        // Append attribute 0x0042, length 4.
        b.extend_from_slice(&[0x00, 0x42, 0x00, 0x04, 1, 2, 3, 4]);
        b[3] = 8;
        let r = decode_request(&b).unwrap();
        assert_eq!(r.unknown_required, vec![0x0042]);
    }
}
