//! TURN messages (RFC 8656) as pure encode/decode functions on `stun_codec`'s TURN attributes:
//! the client's requests (Allocate, Refresh, CreatePermission, ChannelBind), authenticated
//! with long-term credentials (RFC 8489 section 9.2), Send indications, and what a server
//! sends back (responses, Data indications). The server's side ([`encode_response`],
//! [`encode_data_indication`]) is here for tests and fuzz seeds.

#![deny(clippy::disallowed_methods)] // a protocol core: see clippy.toml

use std::net::SocketAddr;
use std::time::Duration;

use bytecodec::{DecodeExt, EncodeExt};
use stun_codec::rfc5389::attributes::{
    ErrorCode, Fingerprint, MappedAddress, MessageIntegrity, Nonce, Realm, Software, UnknownAttributes, Username,
    XorMappedAddress,
};
use stun_codec::rfc5766::attributes::{
    ChannelNumber, Data, DontFragment, EvenPort, Lifetime, RequestedTransport, ReservationToken, XorPeerAddress,
    XorRelayAddress,
};
use stun_codec::rfc5766::methods::{ALLOCATE, CHANNEL_BIND, CREATE_PERMISSION, DATA, REFRESH, SEND};
use stun_codec::{
    Message, MessageClass, MessageDecoder, MessageEncoder, Method, TransactionId, define_attribute_enums,
};

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
        ReservationToken
    ]
);

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
    /// Allocate a UDP relayed address, asking for `lifetime` seconds.
    Allocate {
        /// The lifetime asked for (the server may grant less).
        lifetime: u32,
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
}

impl Request {
    /// The STUN method.
    pub fn method(&self) -> Method {
        match self {
            Request::Allocate { .. } => ALLOCATE,
            Request::Refresh { .. } => REFRESH,
            Request::CreatePermission { .. } => CREATE_PERMISSION,
            Request::ChannelBind { .. } => CHANNEL_BIND,
        }
    }

    /// The method's name, for errors and logs.
    pub fn name(&self) -> &'static str {
        method_name(self.method())
    }
}

/// The name of a TURN method.
pub fn method_name(m: Method) -> &'static str {
    match m {
        ALLOCATE => "Allocate",
        REFRESH => "Refresh",
        CREATE_PERMISSION => "CreatePermission",
        CHANNEL_BIND => "ChannelBind",
        SEND => "Send",
        DATA => "Data",
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
    let mut m = Message::<Attribute>::new(MessageClass::Request, request.method(), TransactionId::new(txid));
    match request {
        Request::Allocate { lifetime } => {
            m.add_attribute(RequestedTransport::new(UDP));
            m.add_attribute(Lifetime::from_u32(*lifetime));
        }
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
    let mut m = Message::<Attribute>::new(MessageClass::Indication, SEND, TransactionId::new(txid));
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
}

/// A response from the server.
#[derive(Debug, Clone)]
pub struct Response {
    /// The transaction id.
    pub txid: [u8; 12],
    /// The method answered.
    pub method: Method,
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
}

/// Why bytes are not a server message the client handles.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// Not a STUN message.
    #[error("not a STUN message")]
    NotStun,
    /// A STUN message that does not decode.
    #[error("malformed STUN message: {0}")]
    Malformed(String),
    /// A STUN message the client has no use for (a request, an indication other than Data).
    #[error("unexpected STUN message: {0}")]
    Unexpected(String),
}

/// Decodes a message from a TURN server: a response, or a Data indication.
pub fn decode(bytes: &[u8]) -> Result<ServerMessage, DecodeError> {
    if !natt_stun::message::looks_like_stun(bytes) {
        return Err(DecodeError::NotStun);
    }
    let m = match MessageDecoder::<Attribute>::new().decode_from_bytes(bytes) {
        Ok(Ok(m)) => m,
        Ok(Err(broken)) => return Err(DecodeError::Malformed(broken.error().to_string())),
        Err(e) => return Err(DecodeError::Malformed(e.to_string())),
    };
    let txid = *m.transaction_id().as_bytes();
    let result = match m.class() {
        MessageClass::Indication if m.method() == DATA => {
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
        }),
        MessageClass::ErrorResponse => Err(m
            .get_attribute::<ErrorCode>()
            .map_or((0, "no ERROR-CODE".to_owned()), |e| {
                (e.code(), e.reason_phrase().to_owned())
            })),
        c => return Err(DecodeError::Unexpected(format!("{c:?} {}", method_name(m.method())))),
    };
    Ok(ServerMessage::Response(Response {
        txid,
        method: m.method(),
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
    method: Method,
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
    let mut m = Message::<Attribute>::new(class, method, TransactionId::new(txid));
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

/// A server's Data indication (tests, fuzz seeds).
pub fn encode_data_indication(txid: [u8; 12], peer: SocketAddr, data: &[u8]) -> Result<Vec<u8>, TurnError> {
    let mut m = Message::<Attribute>::new(MessageClass::Indication, DATA, TransactionId::new(txid));
    m.add_attribute(XorPeerAddress::new(peer));
    m.add_attribute(Data::new(data.to_vec()).map_err(|e| TurnError::Encode(e.to_string()))?);
    encode(m)
}

/// Decodes a request (tests: what the client sent): its method, transaction id, and whether it
/// was authenticated with `auth` (`None` when it carries no MESSAGE-INTEGRITY).
pub fn decode_request(bytes: &[u8], auth: Option<&Auth>) -> Result<(Method, [u8; 12], Option<bool>), DecodeError> {
    let m = match MessageDecoder::<Attribute>::new().decode_from_bytes(bytes) {
        Ok(Ok(m)) => m,
        Ok(Err(broken)) => return Err(DecodeError::Malformed(broken.error().to_string())),
        Err(e) => return Err(DecodeError::Malformed(e.to_string())),
    };
    let signed = m
        .get_attribute::<MessageIntegrity>()
        .map(|mi| auth.is_some_and(|a| a.verify(mi)));
    Ok((m.method(), *m.transaction_id().as_bytes(), signed))
}
