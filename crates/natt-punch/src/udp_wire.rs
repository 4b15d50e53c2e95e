//! UDP punch messages (version 1), as pure encode/decode functions.
//!
//! Every message is 44 bytes:
//!
//! | offset | size | field                                                        |
//! |-------:|-----:|--------------------------------------------------------------|
//! | 0      | 4    | magic `b"NATP"`                                              |
//! | 4      | 1    | version, `1`                                                 |
//! | 5      | 1    | kind: `1` probe, `2` reply                                   |
//! | 6      | 1    | flags: bit 0 the sender has a confirmed path, bit 1 it is done |
//! | 7      | 1    | the sender's role, `0` or `1`                                |
//! | 8      | 8    | session tag (a public hash of the session key)               |
//! | 16     | 12   | nonce: a probe's own, random; a reply echoes its probe's      |
//! | 28     | 16   | HMAC-SHA256 of bytes 0..28 with the sender's key, truncated  |
//!
//! A probe asks "can you hear me?"; its reply, sent back to the probe's source address, says
//! yes. A reply is accepted only from the address its probe was sent to, and only for a nonce
//! we sent, so a replayed or spoofed packet cannot fake a path. The MAC key depends on both
//! rendezvous secrets and on the sender's role, so packets from other sessions, from anyone
//! without the out-of-band information, or reflected back to their sender, are rejected.

use crate::keys::{MAC_LEN, SessionKeys, TAG_LEN};

/// The first four bytes of every punch message.
pub const MAGIC: [u8; 4] = *b"NATP";
/// The version of the punch protocol.
pub const VERSION: u8 = 1;
/// Length of every UDP punch message.
pub const MESSAGE_LEN: usize = 44;
/// Length of a nonce.
pub const NONCE_LEN: usize = 12;
const SIGNED_LEN: usize = MESSAGE_LEN - MAC_LEN;

/// Flag: the sender has a confirmed path to us.
pub const FLAG_CONFIRMED: u8 = 1;
/// Flag: the sender has finished punching.
pub const FLAG_DONE: u8 = 2;

/// The kind of a punch message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// "Can you hear me?"
    Probe,
    /// "Yes": the answer to a probe.
    Reply,
}

/// An authenticated punch message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Message {
    /// Probe or reply.
    pub kind: Kind,
    /// [`FLAG_CONFIRMED`], [`FLAG_DONE`].
    pub flags: u8,
    /// The nonce.
    pub nonce: [u8; NONCE_LEN],
}

/// True when `data` has the form of a punch message (of any session). Applications use this
/// to recognise and discard late punch packets that arrive after [`crate::PunchedUdpSocket`]
/// returned.
pub fn is_punch_packet(data: &[u8]) -> bool {
    data.len() == MESSAGE_LEN && data.starts_with(&MAGIC)
}

/// The bytes of `message`, signed with our key.
pub fn encode(keys: &SessionKeys, message: &Message) -> [u8; MESSAGE_LEN] {
    let mut b = [0u8; MESSAGE_LEN];
    let kind = match message.kind {
        Kind::Probe => 1,
        Kind::Reply => 2,
    };
    let (signed, mac) = b.split_at_mut(SIGNED_LEN);
    let (head, rest) = signed.split_at_mut(8);
    head.copy_from_slice(&[
        MAGIC[0],
        MAGIC[1],
        MAGIC[2],
        MAGIC[3],
        VERSION,
        kind,
        message.flags,
        keys.role,
    ]);
    let (tag, nonce) = rest.split_at_mut(TAG_LEN);
    tag.copy_from_slice(&keys.tag);
    nonce.copy_from_slice(&message.nonce);
    mac.copy_from_slice(&keys.sign(&[signed]));
    b
}

/// The message in `data` if it is a punch message of this session sent by the peer, with a
/// valid MAC; `None` for anything else (never a panic).
pub fn open(keys: &SessionKeys, data: &[u8]) -> Option<Message> {
    if !is_punch_packet(data) {
        return None;
    }
    let (signed, mac) = data.split_at(SIGNED_LEN);
    let [_, _, _, _, version, kind, flags, role] = *signed.first_chunk::<8>()?;
    if version != VERSION || role != keys.peer_role() || signed.get(8..8 + TAG_LEN)? != keys.tag {
        return None;
    }
    let kind = match kind {
        1 => Kind::Probe,
        2 => Kind::Reply,
        _ => return None,
    };
    if flags & !(FLAG_CONFIRMED | FLAG_DONE) != 0 || !keys.verify(&[signed], mac) {
        return None;
    }
    let nonce = *signed.get(8 + TAG_LEN..)?.first_chunk::<NONCE_LEN>()?;
    Some(Message { kind, flags, nonce })
}

#[cfg(test)]
mod tests {
    use super::*;
    use natt_core::rendezvous::gen_rendezvous_info;

    fn pair() -> (SessionKeys, SessionKeys) {
        let (a_priv, a_pub) = gen_rendezvous_info(vec![]);
        let (b_priv, b_pub) = gen_rendezvous_info(vec![]);
        (
            SessionKeys::new(&a_priv, &b_pub).unwrap(),
            SessionKeys::new(&b_priv, &a_pub).unwrap(),
        )
    }

    #[test]
    fn round_trip_and_layout() {
        let (a, b) = pair();
        let m = Message {
            kind: Kind::Probe,
            flags: FLAG_CONFIRMED,
            nonce: [5; NONCE_LEN],
        };
        let bytes = encode(&a, &m);
        assert_eq!(&bytes[..8], &[b'N', b'A', b'T', b'P', 1, 1, 1, a.role]);
        assert!(is_punch_packet(&bytes));
        assert_eq!(open(&b, &bytes), Some(m));
        // Reflected back to the sender: rejected.
        assert_eq!(open(&a, &bytes), None);
    }

    #[test]
    fn any_change_is_rejected() {
        let (a, b) = pair();
        let bytes = encode(
            &a,
            &Message {
                kind: Kind::Reply,
                flags: 0,
                nonce: [1; NONCE_LEN],
            },
        );
        for i in 0..MESSAGE_LEN {
            for bit in 0..8 {
                let mut x = bytes;
                x[i] ^= 1 << bit;
                assert_eq!(open(&b, &x), None, "byte {i} bit {bit}");
            }
        }
        for n in 0..MESSAGE_LEN {
            assert_eq!(open(&b, &bytes[..n]), None);
        }
    }

    #[test]
    fn other_sessions_are_rejected() {
        let (a, _) = pair();
        let (_, d) = pair();
        let bytes = encode(
            &a,
            &Message {
                kind: Kind::Probe,
                flags: 0,
                nonce: [1; NONCE_LEN],
            },
        );
        assert_eq!(open(&d, &bytes), None);
    }
}
