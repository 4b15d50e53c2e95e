//! TURN messages (RFC 8656) as pure encode/decode functions on `stun_codec`'s TURN attributes:
//! the client's requests (Allocate, Refresh, CreatePermission, ChannelBind, and RFC 6062's
//! Connect and ConnectionBind), authenticated with long-term credentials (RFC 8489 section
//! 9.2), Send indications, and what a server sends back (responses, Data indications, RFC
//! 6062's ConnectionAttempt). `stun_codec` has no RFC 6062: its methods are numbers here and
//! CONNECTION-ID a raw attribute. The server's side ([`encode_response`],
//! [`encode_data_indication`]) is here for tests and fuzz seeds.

#![deny(clippy::disallowed_methods)] // a protocol core: see clippy.toml

use std::net::SocketAddr;
use std::time::Duration;

use bytecodec::fixnum::{U32beDecoder, U32beEncoder};
use bytecodec::{ByteCount, Decode, Encode, EncodeExt, Eos, SizedEncode, TryTaggedDecode};
use stun_codec::rfc5389::attributes::{
    ErrorCode, Fingerprint, MappedAddress, MessageIntegrity, Nonce, Realm, Software, UnknownAttributes, Username,
    XorMappedAddress,
};
use stun_codec::rfc5766::attributes::{
    ChannelNumber, Data, DontFragment, EvenPort, Lifetime, RequestedTransport, ReservationToken, XorPeerAddress,
    XorRelayAddress,
};
use stun_codec::{AttributeType, Message, MessageClass, MessageEncoder, Method, TransactionId, define_attribute_enums};

use crate::error::TurnError;

define_attribute_enums!(
    Attribute,
    AttributeDecoder,
    AttributeEncoder,
    [
        MappedAddress,
        XorMappedAddress,
        ErrorCode,
        UnknownAttributes,
        Username,
        Realm,
        Nonce,
        MessageIntegrity,
        Software,
        Fingerprint,
        ChannelNumber,
        Lifetime,
        XorPeerAddress,
        Data,
        XorRelayAddress,
        EvenPort,
        RequestedTransport,
        DontFragment,
        ReservationToken,
        ConnectionId
    ]
);

/// RFC 6062's CONNECTION-ID attribute (`stun_codec` has none).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ConnectionId(pub u32);

impl ConnectionId {
    /// The attribute's type.
    pub const CODEPOINT: u16 = 0x002A;
}

impl stun_codec::Attribute for ConnectionId {
    type Decoder = ConnectionIdDecoder;
    type Encoder = ConnectionIdEncoder;

    fn get_type(&self) -> AttributeType {
        AttributeType::new(Self::CODEPOINT)
    }
}

/// [`ConnectionId`]'s decoder: a 32-bit number.
#[derive(Debug, Default)]
pub struct ConnectionIdDecoder(U32beDecoder);

impl Decode for ConnectionIdDecoder {
    type Item = ConnectionId;

    fn decode(&mut self, buf: &[u8], eos: Eos) -> bytecodec::Result<usize> {
        self.0.decode(buf, eos)
    }

    fn finish_decoding(&mut self) -> bytecodec::Result<ConnectionId> {
        self.0.finish_decoding().map(ConnectionId)
    }

    fn requiring_bytes(&self) -> ByteCount {
        self.0.requiring_bytes()
    }

    fn is_idle(&self) -> bool {
        self.0.is_idle()
    }
}

impl TryTaggedDecode for ConnectionIdDecoder {
    type Tag = AttributeType;

    fn try_start_decoding(&mut self, tag: AttributeType) -> bytecodec::Result<bool> {
        Ok(tag.as_u16() == ConnectionId::CODEPOINT)
    }
}

/// [`ConnectionId`]'s encoder.
#[derive(Debug, Default)]
pub struct ConnectionIdEncoder(U32beEncoder);

impl Encode for ConnectionIdEncoder {
    type Item = ConnectionId;

    fn encode(&mut self, buf: &mut [u8], eos: Eos) -> bytecodec::Result<usize> {
        self.0.encode(buf, eos)
    }

    fn start_encoding(&mut self, item: ConnectionId) -> bytecodec::Result<()> {
        self.0.start_encoding(item.0)
    }

    fn requiring_bytes(&self) -> ByteCount {
        self.0.requiring_bytes()
    }

    fn is_idle(&self) -> bool {
        self.0.is_idle()
    }
}

impl SizedEncode for ConnectionIdEncoder {
    fn exact_requiring_bytes(&self) -> u64 {
        self.0.exact_requiring_bytes()
    }
}

/// The TURN methods' numbers (RFC 8656 section 17, RFC 6062 section 6.1).
pub mod methods {
    /// Allocate.
    pub const ALLOCATE: u16 = 0x003;
    /// Refresh.
    pub const REFRESH: u16 = 0x004;
    /// Send (an indication).
    pub const SEND: u16 = 0x006;
    /// Data (an indication).
    pub const DATA: u16 = 0x007;
    /// CreatePermission.
    pub const CREATE_PERMISSION: u16 = 0x008;
    /// ChannelBind.
    pub const CHANNEL_BIND: u16 = 0x009;
    /// RFC 6062's Connect.
    pub const CONNECT: u16 = 0x00A;
    /// RFC 6062's ConnectionBind.
    pub const CONNECTION_BIND: u16 = 0x00B;
    /// RFC 6062's ConnectionAttempt (an indication).
    pub const CONNECTION_ATTEMPT: u16 = 0x00C;
}

use methods::{CONNECT, CONNECTION_ATTEMPT, CONNECTION_BIND};
/// REQUESTED-TRANSPORT's value for TCP (RFC 6062).
pub const TCP: u8 = 6;

fn method(code: u16) -> Result<Method, TurnError> {
    Method::new(code).map_err(|e| TurnError::Encode(e.to_string()))
}

/// The CONNECTION-ID of a message, if it has one.
fn connection_id(m: &Message<Attribute>) -> Option<u32> {
    m.get_attribute::<ConnectionId>().map(|c| c.0)
}

fn add_connection_id(m: &mut Message<Attribute>, id: u32) {
    m.add_attribute(ConnectionId(id));
}

/// REQUESTED-TRANSPORT's value for UDP (IANA protocol number 17).
pub const UDP: u8 = 17;

/// The long-term credentials of an authenticated request: user, realm and nonce from the
/// server's last 401 or 438, and the password for the key. `Debug` hides the password.
#[derive(Clone, PartialEq, Eq)]
pub struct Auth {
    username: Username,
    realm: Realm,
    nonce: Nonce,
    password: String,
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Auth")
            .field("username", &self.username.name())
            .field("realm", &self.realm.text())
            .field("nonce", &self.nonce.value())
            .finish_non_exhaustive()
    }
}

impl Auth {
    /// Credentials for `realm` and `nonce` (both as the server gave them).
    pub fn new(username: &str, password: &str, realm: &str, nonce: &str) -> Result<Self, TurnError> {
        let bad = |what: &str, e: bytecodec::Error| TurnError::Encode(format!("{what}: {e}"));
        Ok(Auth {
            username: Username::new(username.to_owned()).map_err(|e| bad("user name", e))?,
            realm: Realm::new(realm.to_owned()).map_err(|e| bad("realm", e))?,
            nonce: Nonce::new(nonce.to_owned()).map_err(|e| bad("nonce", e))?,
            password: password.to_owned(),
        })
    }

    /// The realm.
    pub fn realm(&self) -> &str {
        self.realm.text()
    }

    /// The same credentials with another nonce (after a 438).
    pub fn with_nonce(&self, nonce: &str) -> Result<Self, TurnError> {
        Auth::new(self.username.name(), &self.password, self.realm.text(), nonce)
    }

    fn sign(&self, m: &mut Message<Attribute>) -> Result<(), TurnError> {
        m.add_attribute(self.username.clone());
        m.add_attribute(self.realm.clone());
        m.add_attribute(self.nonce.clone());
        let mi = MessageIntegrity::new_long_term_credential(m, &self.username, &self.realm, &self.password)
            .map_err(|e| TurnError::Encode(e.to_string()))?;
        m.add_attribute(mi);
        Ok(())
    }

    fn verify(&self, mi: &MessageIntegrity) -> bool {
        mi.check_long_term_credential(&self.username, &self.realm, &self.password)
            .is_ok()
    }
}

/// A request the client sends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// Allocate a relayed address, asking for `lifetime` seconds: UDP, or TCP (RFC 6062).
    Allocate {
        /// The lifetime asked for (the server may grant less).
        lifetime: u32,
        /// TCP relaying (RFC 6062) instead of UDP.
        tcp: bool,
    },
    /// Refresh the allocation for `lifetime` seconds (0: delete it).
    Refresh {
        /// The lifetime asked for.
        lifetime: u32,
    },
    /// Install or refresh permissions for these peers' IP addresses (ports are ignored).
    CreatePermission {
        /// The peers.
        peers: Vec<SocketAddr>,
    },
    /// Bind `channel` to `peer` (or refresh the binding).
    ChannelBind {
        /// The peer.
        peer: SocketAddr,
        /// The channel number, 0x4000–0x4FFF.
        channel: u16,
    },
    /// RFC 6062: have the server open a TCP connection to `peer` from the relayed address.
    Connect {
        /// The peer.
        peer: SocketAddr,
    },
    /// RFC 6062: bind the data connection this is sent on to the peer connection `id`.
    ConnectionBind {
        /// The CONNECTION-ID the server gave.
        id: u32,
    },
}

impl Request {
    /// The STUN method's number.
    pub fn method(&self) -> u16 {
        match self {
            Request::Allocate { .. } => methods::ALLOCATE,
            Request::Refresh { .. } => methods::REFRESH,
            Request::CreatePermission { .. } => methods::CREATE_PERMISSION,
            Request::ChannelBind { .. } => methods::CHANNEL_BIND,
            Request::Connect { .. } => CONNECT,
            Request::ConnectionBind { .. } => CONNECTION_BIND,
        }
    }

    /// The method's name, for errors and logs.
    pub fn name(&self) -> &'static str {
        method_name(self.method())
    }
}

/// The name of a TURN method.
pub fn method_name(m: u16) -> &'static str {
    match m {
        methods::ALLOCATE => "Allocate",
        methods::REFRESH => "Refresh",
        methods::SEND => "Send",
        methods::DATA => "Data",
        methods::CREATE_PERMISSION => "CreatePermission",
        methods::CHANNEL_BIND => "ChannelBind",
        CONNECT => "Connect",
        CONNECTION_BIND => "ConnectionBind",
        CONNECTION_ATTEMPT => "ConnectionAttempt",
        0x001 => "Binding",
        _ => "an unknown method",
    }
}

fn encode(m: Message<Attribute>) -> Result<Vec<u8>, TurnError> {
    MessageEncoder::new()
        .encode_into_bytes(m)
        .map_err(|e| TurnError::Encode(e.to_string()))
}

/// `request` with transaction id `txid`, authenticated with `auth` when given.
pub fn encode_request(txid: [u8; 12], request: &Request, auth: Option<&Auth>) -> Result<Vec<u8>, TurnError> {
    let mut m = Message::<Attribute>::new(
        MessageClass::Request,
        method(request.method())?,
        TransactionId::new(txid),
    );
    match request {
        Request::Allocate { lifetime, tcp } => {
            m.add_attribute(RequestedTransport::new(if *tcp { TCP } else { UDP }));
            m.add_attribute(Lifetime::from_u32(*lifetime));
        }
        Request::Connect { peer } => m.add_attribute(XorPeerAddress::new(*peer)),
        Request::ConnectionBind { id } => add_connection_id(&mut m, *id),
        Request::Refresh { lifetime } => m.add_attribute(Lifetime::from_u32(*lifetime)),
        Request::CreatePermission { peers } => {
            for p in peers {
                m.add_attribute(XorPeerAddress::new(*p));
            }
        }
        Request::ChannelBind { peer, channel } => {
            let n = ChannelNumber::new(*channel).map_err(|e| TurnError::Encode(e.to_string()))?;
            m.add_attribute(n);
            m.add_attribute(XorPeerAddress::new(*peer));
        }
    }
    if let Some(auth) = auth {
        auth.sign(&mut m)?;
    }
    encode(m)
}

/// A Send indication carrying `data` to `peer` (not authenticated: RFC 8656 section 11).
pub fn encode_send(txid: [u8; 12], peer: SocketAddr, data: &[u8]) -> Result<Vec<u8>, TurnError> {
    encode_indication(methods::SEND, txid, peer, data)
}

/// A Send or Data indication: `data` to or from `peer`.
fn encode_indication(method_code: u16, txid: [u8; 12], peer: SocketAddr, data: &[u8]) -> Result<Vec<u8>, TurnError> {
    let mut m = Message::<Attribute>::new(MessageClass::Indication, method(method_code)?, TransactionId::new(txid));
    m.add_attribute(XorPeerAddress::new(peer));
    m.add_attribute(Data::new(data.to_vec()).map_err(|e| TurnError::Encode(e.to_string()))?);
    encode(m)
}

/// What a success response says.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Success {
    /// XOR-RELAYED-ADDRESS (Allocate).
    pub relayed: Option<SocketAddr>,
    /// XOR-MAPPED-ADDRESS (Allocate): where the server sees the client.
    pub mapped: Option<SocketAddr>,
    /// LIFETIME (Allocate, Refresh).
    pub lifetime: Option<Duration>,
    /// CONNECTION-ID (RFC 6062's Connect).
    pub connection_id: Option<u32>,
}

/// A response from the server.
#[derive(Debug, Clone)]
pub struct Response {
    /// The transaction id.
    pub txid: [u8; 12],
    /// The method answered (its number).
    pub method: u16,
    /// Success, or the error code and reason.
    pub result: Result<Success, (u16, String)>,
    /// REALM, if present.
    pub realm: Option<String>,
    /// NONCE, if present.
    pub nonce: Option<String>,
    integrity: Option<MessageIntegrity>,
}

/// Whether a response's MESSAGE-INTEGRITY proves it was made with our credentials.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Integrity {
    /// Present and right.
    Valid,
    /// Present and wrong: not from the server (or another key).
    Invalid,
    /// Absent.
    Absent,
}

impl Response {
    /// Checks the response's MESSAGE-INTEGRITY against `auth`.
    pub fn integrity(&self, auth: &Auth) -> Integrity {
        match &self.integrity {
            None => Integrity::Absent,
            Some(mi) if auth.verify(mi) => Integrity::Valid,
            Some(_) => Integrity::Invalid,
        }
    }
}

/// A message from a TURN server that the client handles.
#[derive(Debug, Clone)]
pub enum ServerMessage {
    /// A response to one of our requests.
    Response(Response),
    /// A Data indication: `data` from `peer`.
    Data {
        /// The peer.
        peer: SocketAddr,
        /// The data.
        data: Vec<u8>,
    },
    /// RFC 6062's ConnectionAttempt indication: `peer` connected to the relayed address.
    ConnectionAttempt {
        /// The peer.
        peer: SocketAddr,
        /// The CONNECTION-ID to bind a data connection to.
        id: u32,
    },
}

/// Why bytes are not a server message the client handles: natt-stun's error (not STUN,
/// malformed, or a STUN message the client has no use for, such as a request).
pub use natt_stun::message::StunError as DecodeError;

/// Decodes a message from a TURN server: a response, or a Data indication.
pub fn decode(bytes: &[u8]) -> Result<ServerMessage, DecodeError> {
    let m = natt_stun::message::decode_message::<Attribute>(bytes)?;
    let txid = *m.transaction_id().as_bytes();
    let result = match m.class() {
        MessageClass::Indication if m.method().as_u16() == CONNECTION_ATTEMPT => {
            let peer = m.get_attribute::<XorPeerAddress>().map(XorPeerAddress::address);
            return match (peer, connection_id(&m)) {
                (Some(peer), Some(id)) => Ok(ServerMessage::ConnectionAttempt { peer, id }),
                _ => Err(DecodeError::Malformed(
                    "ConnectionAttempt without peer or CONNECTION-ID".into(),
                )),
            };
        }
        MessageClass::Indication if m.method().as_u16() == methods::DATA => {
            let peer = m.get_attribute::<XorPeerAddress>().map(XorPeerAddress::address);
            let data = m.get_attribute::<Data>().map(|d| d.data().to_vec());
            return match (peer, data) {
                (Some(peer), Some(data)) => Ok(ServerMessage::Data { peer, data }),
                _ => Err(DecodeError::Malformed("Data indication without peer or data".into())),
            };
        }
        MessageClass::SuccessResponse => Ok(Success {
            relayed: m.get_attribute::<XorRelayAddress>().map(XorRelayAddress::address),
            mapped: m
                .get_attribute::<XorMappedAddress>()
                .map(XorMappedAddress::address)
                .or_else(|| m.get_attribute::<MappedAddress>().map(MappedAddress::address)),
            lifetime: m.get_attribute::<Lifetime>().map(Lifetime::lifetime),
            connection_id: connection_id(&m),
        }),
        MessageClass::ErrorResponse => Err(m
            .get_attribute::<ErrorCode>()
            .map_or((0, "no ERROR-CODE".to_owned()), |e| {
                (e.code(), e.reason_phrase().to_owned())
            })),
        c => {
            return Err(DecodeError::Unexpected(format!(
                "{c:?} {}",
                method_name(m.method().as_u16())
            )));
        }
    };
    Ok(ServerMessage::Response(Response {
        txid,
        method: m.method().as_u16(),
        result,
        realm: m.get_attribute::<Realm>().map(|r| r.text().to_owned()),
        nonce: m.get_attribute::<Nonce>().map(|n| n.value().to_owned()),
        integrity: m.get_attribute::<MessageIntegrity>().cloned(),
    }))
}

/// A server's response (tests, fuzz seeds): success with `success`'s attributes, or an error
/// with REALM and NONCE when given; signed with `auth` when given.
pub fn encode_response(
    txid: [u8; 12],
    method: u16,
    result: Result<&Success, (u16, &str)>,
    realm_nonce: Option<(&str, &str)>,
    auth: Option<&Auth>,
) -> Result<Vec<u8>, TurnError> {
    let bad = |e: bytecodec::Error| TurnError::Encode(e.to_string());
    let class = if result.is_ok() {
        MessageClass::SuccessResponse
    } else {
        MessageClass::ErrorResponse
    };
    let mut m = Message::<Attribute>::new(class, self::method(method)?, TransactionId::new(txid));
    match result {
        Ok(s) => {
            if let Some(a) = s.relayed {
                m.add_attribute(XorRelayAddress::new(a));
            }
            if let Some(a) = s.mapped {
                m.add_attribute(XorMappedAddress::new(a));
            }
            if let Some(l) = s.lifetime {
                m.add_attribute(Lifetime::new(l).map_err(bad)?);
            }
            if let Some(id) = s.connection_id {
                add_connection_id(&mut m, id);
            }
        }
        Err((code, reason)) => m.add_attribute(ErrorCode::new(code, reason.to_owned()).map_err(bad)?),
    }
    if let Some((realm, nonce)) = realm_nonce {
        m.add_attribute(Realm::new(realm.to_owned()).map_err(bad)?);
        m.add_attribute(Nonce::new(nonce.to_owned()).map_err(bad)?);
    }
    if let Some(auth) = auth {
        let mi =
            MessageIntegrity::new_long_term_credential(&m, &auth.username, &auth.realm, &auth.password).map_err(bad)?;
        m.add_attribute(mi);
    }
    encode(m)
}

/// A server's ConnectionAttempt indication (tests, fuzz seeds).
pub fn encode_connection_attempt(txid: [u8; 12], peer: SocketAddr, id: u32) -> Result<Vec<u8>, TurnError> {
    let mut m = Message::<Attribute>::new(
        MessageClass::Indication,
        method(CONNECTION_ATTEMPT)?,
        TransactionId::new(txid),
    );
    m.add_attribute(XorPeerAddress::new(peer));
    add_connection_id(&mut m, id);
    encode(m)
}

/// A server's Data indication (tests, fuzz seeds).
pub fn encode_data_indication(txid: [u8; 12], peer: SocketAddr, data: &[u8]) -> Result<Vec<u8>, TurnError> {
    encode_indication(methods::DATA, txid, peer, data)
}

/// Decodes a request (tests: what the client sent): its method, transaction id, and whether it
/// was authenticated with `auth` (`None` when it carries no MESSAGE-INTEGRITY).
pub fn decode_request(bytes: &[u8], auth: Option<&Auth>) -> Result<(u16, [u8; 12], Option<bool>), DecodeError> {
    let m = natt_stun::message::decode_message::<Attribute>(bytes)?;
    let signed = m
        .get_attribute::<MessageIntegrity>()
        .map(|mi| auth.is_some_and(|a| a.verify(mi)));
    Ok((m.method().as_u16(), *m.transaction_id().as_bytes(), signed))
}
