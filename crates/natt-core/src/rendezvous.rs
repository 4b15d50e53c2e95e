//! Rendezvous information: what two peers exchange out of band before punching a hole
//! between them, and its text token for copy-paste and scripts.
//!
//! [`gen_rendezvous_info`] makes a fresh 128-bit secret for a session. The public half,
//! [`PubRendezvousInfo`], carries the secret and our endpoints to the peer (over a channel an
//! attacker cannot read); the private half, [`PrivRendezvousInfo`], stays here. The hole
//! punch authenticates every packet with a key derived from both peers' secrets, so only the
//! peer holding the matching information can complete it, and packets of earlier sessions
//! (other secrets) are rejected.
//!
//! The token is `natt2.` followed by base64url (no padding) of, in order: the secret (16
//! bytes), the number of endpoints (1 byte, at most [`MAX_TOKEN_ENDPOINTS`]), each endpoint as
//! a flags byte (bit 0: IPv6, bit 1: `nat_restricted`), the address (4 or 16 bytes), the port
//! (2 bytes, big-endian), the technique name's length (1 byte, at most
//! [`MAX_TECHNIQUE_NAME`]) and the name (ASCII); then, only when one is set, a facts byte
//! (bit 0: the side's NAT mapping varies by destination, [`PubRendezvousInfo::mapping_varies`]);
//! and last a 4-byte check (the first bytes of FNV-1a 64 of everything before it) that catches
//! copy-paste damage.
//!
//! The facts byte came after the first `natt2.` tokens: a token without it reads as "no
//! facts", and a side with no fact to state makes a token without it, which every natt that
//! reads `natt2.` reads. A token with the byte is refused by natt from before it ("trailing
//! bytes"): only a side behind a symmetric NAT makes one, and such a side cannot connect to an
//! older natt behind a filtering NAT anyway.
//!
//! The prefix's number is the version of the punch protocol that the token's maker speaks.
//! `natt1.` tokens come from natt before punch protocol 2, whose authentication could be
//! relayed; they are refused with [`TokenError::OldVersion`], which says to update the peer.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::str::FromStr;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use crate::bytes::{Reader, Truncated, Writer};
use crate::endpoint::MappedSocketAddr;

/// Length of a rendezvous secret.
pub const SECRET_LEN: usize = 16;
/// The most endpoints a token may carry.
pub const MAX_TOKEN_ENDPOINTS: usize = 32;
/// The longest technique name a token may carry.
pub const MAX_TECHNIQUE_NAME: usize = 32;
/// The longest token accepted (characters).
pub const MAX_TOKEN_LEN: usize = 4096;
/// The token's prefix: format name and version.
pub const TOKEN_PREFIX: &str = "natt2.";
/// Prefixes of earlier token versions, refused with [`TokenError::OldVersion`].
const OLD_PREFIXES: [(&str, u8); 1] = [("natt1.", 1)];

/// The secret of one side of a rendezvous: 128 random bits.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Secret(pub [u8; SECRET_LEN]);

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(..)")
    }
}

/// Info exchanged by both parties before performing a rendezvous connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PubRendezvousInfo {
    /// Every mapped address the peer can try connecting to.
    pub endpoints: Vec<MappedSocketAddr>,
    /// Identifies this side of the session.
    pub secret: Secret,
    /// This side's NAT gives each destination its own external port (its mapping varies by
    /// destination: a "symmetric" NAT), so the port a server saw is not the one the peer will
    /// see. [`gen_rendezvous_info`] sets it from the endpoints ([`mapping_varies`]); the punch
    /// then uses the birthday method (`natt_punch::birthday`).
    pub mapping_varies: bool,
}

/// The local half of a [`PubRendezvousInfo`]: keep it, never send it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PrivRendezvousInfo {
    /// Our secret (the same as in our public info).
    pub secret: Secret,
    /// Our endpoints (the same as in our public info). The punch accepts a path only where the
    /// peer sees us at one of their addresses.
    pub endpoints: Vec<MappedSocketAddr>,
    /// Our NAT's mapping varies by destination (the same as in our public info).
    pub mapping_varies: bool,
}

/// Whether `endpoints` show a NAT mapping that varies by destination: two addresses that
/// servers observed (restricted, not a local interface's) with the same IP and different ports.
/// Mapping with two STUN or simple servers (or one of each) observes this behind a symmetric
/// NAT; behind an endpoint-independent one both servers see the same port.
///
/// ```
/// use natt_core::MappedSocketAddr;
/// use natt_core::rendezvous::mapping_varies;
/// let seen = |a: &str| MappedSocketAddr::new(a.parse().unwrap(), true, "stun");
/// assert!(mapping_varies(&[seen("198.51.100.1:40001"), seen("198.51.100.1:51234")]));
/// assert!(!mapping_varies(&[seen("198.51.100.1:4000"), seen("198.51.100.1:4000")]));
/// assert!(!mapping_varies(&[seen("198.51.100.1:4000")]));
/// ```
pub fn mapping_varies(endpoints: &[MappedSocketAddr]) -> bool {
    let seen: Vec<SocketAddr> = endpoints
        .iter()
        .filter(|e| e.nat_restricted && e.technique != crate::local::LOCAL)
        .map(|e| e.addr)
        .collect();
    seen.iter()
        .any(|a| seen.iter().any(|b| a.ip() == b.ip() && a.port() != b.port()))
}

/// Creates a `(PrivRendezvousInfo, PubRendezvousInfo)` pair for a new session from a list of
/// mapped socket addresses, with a fresh random secret. Whether our NAT's mapping varies by
/// destination is read from the endpoints ([`mapping_varies`]); a program that learned it
/// otherwise (RFC 5780's tests) sets `mapping_varies` in both halves.
///
#[cfg_attr(not(doctest), doc = include_str!("../doc/gen_rendezvous_info.md"))]
pub fn gen_rendezvous_info(endpoints: Vec<MappedSocketAddr>) -> (PrivRendezvousInfo, PubRendezvousInfo) {
    let secret = Secret(rand::random());
    let varies = mapping_varies(&endpoints);
    (
        PrivRendezvousInfo {
            secret,
            endpoints: endpoints.clone(),
            mapping_varies: varies,
        },
        PubRendezvousInfo {
            endpoints,
            secret,
            mapping_varies: varies,
        },
    )
}

/// Bit 0 of the token's facts byte: [`PubRendezvousInfo::mapping_varies`].
const FACT_MAPPING_VARIES: u8 = 1;

/// Why a token could not be read.
#[derive(Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TokenError {
    /// It does not start with `natt2.` ([`TOKEN_PREFIX`]).
    #[error("not a natt token (expected it to start with \"{TOKEN_PREFIX}\")")]
    NotAToken,
    /// A token of an earlier version (the number), made by an older natt whose punch this one
    /// no longer speaks.
    #[error(
        "this token was made by an older natt (token version {0}, whose punch could be relayed by an attacker); \
         update natt on the other side and make a new token"
    )]
    OldVersion(u8),
    /// Longer than 4096 characters ([`MAX_TOKEN_LEN`]).
    #[error("token too long ({0} characters)")]
    TooLong(usize),
    /// Not valid base64url.
    #[error("token is damaged: not base64url")]
    Encoding,
    /// The check bytes do not match: the token was cut or changed.
    #[error("token is damaged: check failed (was it cut or changed while copying?)")]
    Check,
    /// The content is malformed.
    #[error("token is malformed: {0}")]
    Malformed(&'static str),
}

crate::debug_as_display!(TokenError);

/// FNV-1a 64: a check against accidental damage, not an authenticator.
fn check(bytes: &[u8]) -> [u8; 4] {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    let b = h.to_be_bytes();
    [b[0], b[1], b[2], b[3]]
}

impl PubRendezvousInfo {
    /// The compact text token, `natt2.` and base64url (its layout is in the docs of the
    /// [`rendezvous`](crate::rendezvous) module). Endpoints beyond the first 32
    /// ([`MAX_TOKEN_ENDPOINTS`]) are left out, and technique names are cut to 32 ASCII bytes
    /// ([`MAX_TECHNIQUE_NAME`]).
    pub fn to_token(&self) -> String {
        let mut w = Writer::with_capacity(64);
        w.bytes(&self.secret.0);
        let endpoints: Vec<&MappedSocketAddr> = self.endpoints.iter().take(MAX_TOKEN_ENDPOINTS).collect();
        w.u8(u8::try_from(endpoints.len()).unwrap_or(u8::MAX));
        for e in endpoints {
            let flags = u8::from(e.addr.is_ipv6()) | (u8::from(e.nat_restricted) << 1);
            w.u8(flags);
            match e.addr.ip() {
                IpAddr::V4(ip) => w.bytes(&ip.octets()),
                IpAddr::V6(ip) => w.bytes(&ip.octets()),
            };
            w.u16(e.addr.port());
            let name: Vec<u8> = e
                .technique
                .bytes()
                .filter(u8::is_ascii_graphic)
                .take(MAX_TECHNIQUE_NAME)
                .collect();
            w.u8(u8::try_from(name.len()).unwrap_or(0)).bytes(&name);
        }
        if self.mapping_varies {
            w.u8(FACT_MAPPING_VARIES);
        }
        let c = check(w.as_slice());
        w.bytes(&c);
        let b = w.into_vec();
        format!("{TOKEN_PREFIX}{}", URL_SAFE_NO_PAD.encode(&b))
    }

    /// Reads a token made by [`to_token`](Self::to_token). Surrounding white space is ignored.
    pub fn from_token(token: &str) -> Result<Self, TokenError> {
        let token = token.trim();
        if token.len() > MAX_TOKEN_LEN {
            return Err(TokenError::TooLong(token.len()));
        }
        if let Some((_, version)) = OLD_PREFIXES.iter().find(|(p, _)| token.starts_with(p)) {
            return Err(TokenError::OldVersion(*version));
        }
        let body = token.strip_prefix(TOKEN_PREFIX).ok_or(TokenError::NotAToken)?;
        let bytes = URL_SAFE_NO_PAD.decode(body).map_err(|_| TokenError::Encoding)?;
        let split = bytes.len().checked_sub(4).ok_or(TokenError::Check)?;
        let (content, sum) = bytes.split_at(split);
        if check(content) != sum {
            return Err(TokenError::Check);
        }
        let mut r = Reader::new(content);
        let secret = Secret(r.array::<SECRET_LEN>().map_err(truncated)?);
        let count = usize::from(r.u8().map_err(truncated)?);
        if count > MAX_TOKEN_ENDPOINTS {
            return Err(TokenError::Malformed("too many endpoints"));
        }
        let mut endpoints = Vec::with_capacity(count);
        for _ in 0..count {
            let flags = r.u8().map_err(truncated)?;
            if flags & !0b11 != 0 {
                return Err(TokenError::Malformed("unknown endpoint flags"));
            }
            let ip = if flags & 1 == 0 {
                IpAddr::V4(Ipv4Addr::from(r.array::<4>().map_err(truncated)?))
            } else {
                IpAddr::V6(Ipv6Addr::from(r.array::<16>().map_err(truncated)?))
            };
            let port = r.u16().map_err(truncated)?;
            let len = usize::from(r.u8().map_err(truncated)?);
            if len > MAX_TECHNIQUE_NAME {
                return Err(TokenError::Malformed("technique name too long"));
            }
            let name = r.take(len).map_err(truncated)?;
            if !name.iter().all(u8::is_ascii_graphic) {
                return Err(TokenError::Malformed("technique name is not printable ASCII"));
            }
            let technique = String::from_utf8_lossy(name).into_owned();
            endpoints.push(MappedSocketAddr::new(
                SocketAddr::new(ip, port),
                flags & 2 != 0,
                technique,
            ));
        }
        let mut mapping_varies = false;
        if !r.is_empty() {
            let facts = r.u8().map_err(truncated)?;
            if facts & !FACT_MAPPING_VARIES != 0 {
                return Err(TokenError::Malformed("unknown facts"));
            }
            if facts == 0 {
                return Err(TokenError::Malformed("an empty facts byte"));
            }
            mapping_varies = facts & FACT_MAPPING_VARIES != 0;
        }
        if !r.is_empty() {
            return Err(TokenError::Malformed("trailing bytes"));
        }
        Ok(PubRendezvousInfo {
            endpoints,
            secret,
            mapping_varies,
        })
    }
}

impl FromStr for PubRendezvousInfo {
    type Err = TokenError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::from_token(s)
    }
}

impl fmt::Display for PubRendezvousInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_token())
    }
}

/// A token that ends before its content does.
fn truncated(_: Truncated) -> TokenError {
    TokenError::Malformed("truncated")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> PubRendezvousInfo {
        let eps = vec![
            MappedSocketAddr::new("192.168.1.2:4000".parse().unwrap(), false, "local"),
            MappedSocketAddr::new("203.0.113.101:4000".parse().unwrap(), true, "stun"),
            MappedSocketAddr::new("[2001:db8::1]:9".parse().unwrap(), false, "upnp"),
        ];
        gen_rendezvous_info(eps).1
    }

    #[test]
    fn limits_are_the_values_the_docs_state() {
        // `TokenError` and `to_token` state these values in words, for readers of the facade.
        assert_eq!((TOKEN_PREFIX, MAX_TOKEN_LEN), ("natt2.", 4096));
        assert_eq!((MAX_TOKEN_ENDPOINTS, MAX_TECHNIQUE_NAME), (32, 32));
    }

    #[test]
    fn round_trip() {
        let p = sample();
        let t = p.to_token();
        assert!(t.starts_with(TOKEN_PREFIX));
        assert!(t.len() < 150, "compact: {t}");
        assert_eq!(PubRendezvousInfo::from_token(&format!("  {t}\n")).unwrap(), p);
    }

    /// Made by natt before the facts byte (computed from the layout, outside natt): a side
    /// behind a symmetric NAT, seen by two STUN servers at two ports.
    const TOKEN_BEFORE_FACTS: &str =
        "natt2.AQIDBAUGBwgJCgsMDQ4PEAMAwKgBAg-gBWxvY2FsAssAcWWcQQRzdHVuAssAcWXIIgRzdHVuy3rUWw";

    fn symmetric_side(varies: bool) -> PubRendezvousInfo {
        let eps = vec![
            MappedSocketAddr::new("192.168.1.2:4000".parse().unwrap(), false, "local"),
            MappedSocketAddr::new("203.0.113.101:40001".parse().unwrap(), true, "stun"),
            MappedSocketAddr::new("203.0.113.101:51234".parse().unwrap(), true, "stun"),
        ];
        PubRendezvousInfo {
            endpoints: eps,
            secret: Secret(core::array::from_fn(|i| i as u8 + 1)),
            mapping_varies: varies,
        }
    }

    #[test]
    fn tokens_without_the_facts_byte_still_parse_and_are_still_made() {
        let old = PubRendezvousInfo::from_token(TOKEN_BEFORE_FACTS).unwrap();
        assert_eq!(old, symmetric_side(false));
        // A side with no fact to state makes the same token as before, byte for byte.
        assert_eq!(symmetric_side(false).to_token(), TOKEN_BEFORE_FACTS);
        // The fact travels, one byte longer.
        let t = symmetric_side(true).to_token();
        assert_ne!(t, TOKEN_BEFORE_FACTS);
        assert_eq!(PubRendezvousInfo::from_token(&t).unwrap(), symmetric_side(true));
    }

    #[test]
    fn generated_info_reads_the_fact_from_the_endpoints() {
        let (ours, public) = gen_rendezvous_info(symmetric_side(false).endpoints);
        assert!(ours.mapping_varies && public.mapping_varies);
        assert!(
            PubRendezvousInfo::from_token(&public.to_token())
                .unwrap()
                .mapping_varies
        );
        let (ours, public) = gen_rendezvous_info(sample().endpoints);
        assert!(!ours.mapping_varies && !public.mapping_varies);
        // Ports that differ between a local address and a server's observation, or between two
        // IPs, are no sign of it.
        let eps = vec![
            MappedSocketAddr::new("203.0.113.1:4000".parse().unwrap(), false, "local"),
            MappedSocketAddr::new("203.0.113.1:5000".parse().unwrap(), true, "stun"),
            MappedSocketAddr::new("203.0.113.2:6000".parse().unwrap(), true, "stun"),
            MappedSocketAddr::new("203.0.113.1:7000".parse().unwrap(), false, "upnp"),
        ];
        assert!(!mapping_varies(&eps));
    }

    #[test]
    fn secrets_differ_and_are_not_printed() {
        let (a, b) = (sample(), sample());
        assert_ne!(a.secret, b.secret);
        assert_eq!(format!("{:?}", a.secret), "Secret(..)");
    }

    #[test]
    fn damaged_tokens_are_clear_errors() {
        let t = sample().to_token();
        assert_eq!(PubRendezvousInfo::from_token(""), Err(TokenError::NotAToken));
        assert_eq!(PubRendezvousInfo::from_token("natt3.AAAA"), Err(TokenError::NotAToken));
        assert_eq!(PubRendezvousInfo::from_token("natt2.!!!"), Err(TokenError::Encoding));
        assert_eq!(PubRendezvousInfo::from_token("natt2."), Err(TokenError::Check));
        for cut in 1..6 {
            let e = PubRendezvousInfo::from_token(&t[..t.len() - cut]).unwrap_err();
            assert!(matches!(e, TokenError::Check | TokenError::Encoding), "{e:?}");
        }
        let mut changed = t.clone().into_bytes();
        let i = changed.len() / 2;
        changed[i] = if changed[i] == b'A' { b'B' } else { b'A' };
        assert_eq!(
            PubRendezvousInfo::from_token(std::str::from_utf8(&changed).unwrap()),
            Err(TokenError::Check)
        );
        let long = format!("natt2.{}", "A".repeat(MAX_TOKEN_LEN));
        assert!(matches!(
            PubRendezvousInfo::from_token(&long),
            Err(TokenError::TooLong(_))
        ));
    }

    #[test]
    fn tokens_of_the_previous_version_are_refused_with_a_clear_message() {
        // A genuine version 1 token (natt before punch protocol 2) of the same body format.
        let old = sample().to_token().replacen(TOKEN_PREFIX, "natt1.", 1);
        let e = PubRendezvousInfo::from_token(&old).unwrap_err();
        assert_eq!(e, TokenError::OldVersion(1));
        assert!(e.to_string().contains("update natt on the other side"), "{e}");
    }

    #[test]
    fn well_checked_but_malformed_content_is_rejected() {
        let seal = |mut b: Vec<u8>| {
            let c = check(&b);
            b.extend_from_slice(&c);
            format!("{TOKEN_PREFIX}{}", URL_SAFE_NO_PAD.encode(&b))
        };
        let mut b = vec![7u8; SECRET_LEN];
        b.push(200);
        assert_eq!(
            PubRendezvousInfo::from_token(&seal(b)),
            Err(TokenError::Malformed("too many endpoints"))
        );
        let mut b = vec![7u8; SECRET_LEN];
        b.extend_from_slice(&[1, 0, 1, 2]);
        assert_eq!(
            PubRendezvousInfo::from_token(&seal(b)),
            Err(TokenError::Malformed("truncated"))
        );
        let mut b = vec![7u8; SECRET_LEN];
        b.extend_from_slice(&[0, 1, 9]);
        assert_eq!(
            PubRendezvousInfo::from_token(&seal(b)),
            Err(TokenError::Malformed("trailing bytes"))
        );
        let mut b = vec![7u8; SECRET_LEN];
        b.extend_from_slice(&[0, 9]);
        assert_eq!(
            PubRendezvousInfo::from_token(&seal(b)),
            Err(TokenError::Malformed("unknown facts"))
        );
        let mut b = vec![7u8; SECRET_LEN];
        b.extend_from_slice(&[0, 0]);
        assert_eq!(
            PubRendezvousInfo::from_token(&seal(b)),
            Err(TokenError::Malformed("an empty facts byte"))
        );
    }

    #[test]
    fn random_strings_never_panic() {
        let t = sample().to_token();
        for cut in 0..t.len() {
            let _ = PubRendezvousInfo::from_token(&t[..cut]);
        }
        for seed in 0u32..2000 {
            let s: String = (0..(seed % 80))
                .map(|i| char::from(b"natt2.ABCxyz-_09"[((seed * 31 + i * 7) % 16) as usize]))
                .collect();
            let _ = PubRendezvousInfo::from_token(&s);
        }
    }
}
