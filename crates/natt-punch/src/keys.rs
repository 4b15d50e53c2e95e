//! Session keys: both peers derive the same keys from the two rendezvous secrets, one per
//! direction, so every punch message can be authenticated (HMAC-SHA256, truncated to 128
//! bits) and a message can never be reflected back to its sender as if from the peer.

#![deny(clippy::disallowed_methods)] // a protocol core: see clippy.toml

use hmac::{Hmac, KeyInit, Mac};
use sha2::{Digest, Sha256};

use natt_core::rendezvous::{PrivRendezvousInfo, PubRendezvousInfo};

use crate::error::PunchError;

type HmacSha256 = Hmac<Sha256>;

/// Length of a message authentication code on the wire.
pub const MAC_LEN: usize = 16;
/// Length of the session tag on the wire.
pub const TAG_LEN: usize = 8;

/// The keys of one punch session, as seen from one side.
#[derive(Clone)]
pub struct SessionKeys {
    /// Our role: 0 for the side with the smaller secret, 1 for the other. The peer's is the
    /// other one. Role 0 chooses the TCP stream.
    pub role: u8,
    send: [u8; 32],
    recv: [u8; 32],
    /// A public tag of the session (a hash of its key) that lets a receiver drop messages of
    /// other sessions cheaply; it reveals nothing of the secrets.
    pub tag: [u8; TAG_LEN],
}

impl std::fmt::Debug for SessionKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionKeys")
            .field("role", &self.role)
            .finish_non_exhaustive()
    }
}

fn hmac(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    // HMAC takes keys of any length: new_from_slice cannot fail here.
    let Ok(mut mac) = HmacSha256::new_from_slice(key) else {
        return [0; 32];
    };
    for p in parts {
        mac.update(p);
    }
    mac.finalize().into_bytes().into()
}

impl SessionKeys {
    /// The keys for a session between our private info and the peer's public info.
    pub fn new(ours: &PrivRendezvousInfo, theirs: &PubRendezvousInfo) -> Result<Self, PunchError> {
        let (a, b) = (ours.secret.0, theirs.secret.0);
        if a == b {
            return Err(PunchError::OwnToken);
        }
        let role = u8::from(a > b);
        let (lo, hi) = if a < b { (a, b) } else { (b, a) };
        let master: [u8; 32] = Sha256::new()
            .chain_update(b"natt-punch v1 master")
            .chain_update(lo)
            .chain_update(hi)
            .finalize()
            .into();
        let key = |r: u8| hmac(&master, &[b"natt-punch v1 role", &[r]]);
        let tag_full: [u8; 32] = Sha256::new()
            .chain_update(b"natt-punch v1 tag")
            .chain_update(master)
            .finalize()
            .into();
        let mut tag = [0u8; TAG_LEN];
        tag.copy_from_slice(tag_full.get(..TAG_LEN).unwrap_or(&[0; TAG_LEN]));
        Ok(SessionKeys {
            role,
            send: key(role),
            recv: key(1 - role),
            tag,
        })
    }

    /// The peer's role.
    pub fn peer_role(&self) -> u8 {
        1 - self.role
    }

    /// Our MAC over `parts`.
    pub fn sign(&self, parts: &[&[u8]]) -> [u8; MAC_LEN] {
        truncate(hmac(&self.send, parts))
    }

    /// Whether `mac` is the peer's MAC over `parts` (compared in constant time).
    pub fn verify(&self, parts: &[&[u8]], mac: &[u8]) -> bool {
        let Ok(mut m) = HmacSha256::new_from_slice(&self.recv) else {
            return false;
        };
        for p in parts {
            m.update(p);
        }
        mac.len() == MAC_LEN && m.verify_truncated_left(mac).is_ok()
    }
}

fn truncate(full: [u8; 32]) -> [u8; MAC_LEN] {
    let mut out = [0u8; MAC_LEN];
    out.copy_from_slice(full.get(..MAC_LEN).unwrap_or(&[0; MAC_LEN]));
    out
}

#[cfg(test)]
#[allow(clippy::disallowed_methods)]
mod tests {
    use super::*;
    use natt_core::rendezvous::gen_rendezvous_info;

    #[test]
    fn both_sides_agree_and_directions_differ() {
        let (a_priv, a_pub) = gen_rendezvous_info(vec![]);
        let (b_priv, b_pub) = gen_rendezvous_info(vec![]);
        let a = SessionKeys::new(&a_priv, &b_pub).unwrap();
        let b = SessionKeys::new(&b_priv, &a_pub).unwrap();
        assert_eq!(a.tag, b.tag);
        assert_ne!(a.role, b.role);
        let mac = a.sign(&[b"hello"]);
        assert!(b.verify(&[b"hello"], &mac));
        assert!(!b.verify(&[b"hellO"], &mac));
        // A message reflected back to its sender does not verify.
        assert!(!a.verify(&[b"hello"], &mac));
    }

    #[test]
    fn another_session_does_not_verify() {
        let (a_priv, _) = gen_rendezvous_info(vec![]);
        let (_, b_pub) = gen_rendezvous_info(vec![]);
        let (c_priv, c_pub) = gen_rendezvous_info(vec![]);
        let ab = SessionKeys::new(&a_priv, &b_pub).unwrap();
        let cb = SessionKeys::new(&c_priv, &b_pub).unwrap();
        assert_ne!(ab.tag, cb.tag);
        assert!(!ab.verify(&[b"x"], &cb.sign(&[b"x"])));
        let (a2_priv, a2_pub) = gen_rendezvous_info(vec![]);
        assert!(matches!(SessionKeys::new(&a2_priv, &a2_pub), Err(PunchError::OwnToken)));
        let _ = c_pub;
    }
}
