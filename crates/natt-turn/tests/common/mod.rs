//! The small TURN server the loopback tests answer with: long-term credentials `natt` /
//! `secret` in realm `loop`; 401 to an unsigned request, success to a signed one (a relayed
//! address `127.0.0.1:40000` to an Allocate, lifetime 0 to a Refresh: a deletion).

#![allow(clippy::unwrap_used, dead_code)]

use std::net::SocketAddr;
use std::time::Duration;

use natt_turn::message::methods::{ALLOCATE, REFRESH};
use natt_turn::message::{Auth, Success, encode_response};

/// The server's realm.
pub const REALM: &str = "loop";
/// The server's nonce.
pub const NONCE: &str = "n1";

/// The server's credentials.
pub fn auth() -> Auth {
    Auth::new("natt", "secret", REALM, NONCE).unwrap()
}

/// The answer to a request of method `m` (transaction `txid`) from `from`; `signed` is
/// `decode_request`'s verdict on its MESSAGE-INTEGRITY (`None`: unsigned, `Some(false)`: a wrong
/// signature, not answered).
pub fn answer(auth: &Auth, m: u16, txid: [u8; 12], signed: Option<bool>, from: SocketAddr) -> Option<Vec<u8>> {
    match signed {
        None => Some(encode_response(txid, m, Err((401, "Unauthorized")), Some((REALM, NONCE)), None).unwrap()),
        Some(true) => {
            let s = if m == ALLOCATE {
                Success {
                    relayed: Some("127.0.0.1:40000".parse().unwrap()),
                    mapped: Some(from),
                    lifetime: Some(Duration::from_secs(600)),
                    connection_id: None,
                }
            } else if m == REFRESH {
                Success {
                    lifetime: Some(Duration::ZERO),
                    ..Success::default()
                }
            } else {
                Success::default()
            };
            Some(encode_response(txid, m, Ok(&s), None, Some(auth)).unwrap())
        }
        Some(false) => None,
    }
}
