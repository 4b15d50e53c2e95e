//! The handshake on each TCP stream of a simultaneous open (version 1), as pure functions.
//!
//! Every frame is 48 bytes:
//!
//! | offset | size | field                                                          |
//! |-------:|-----:|----------------------------------------------------------------|
//! | 0      | 4    | magic `b"NATP"`                                                |
//! | 4      | 1    | version, `1`                                                   |
//! | 5      | 1    | kind: `3` hello (sent by role 1), `4` choose (sent by role 0)  |
//! | 6      | 1    | reserved, zero                                                 |
//! | 7      | 1    | the sender's role                                              |
//! | 8      | 8    | session tag                                                    |
//! | 16     | 16   | the sender's random nonce, fresh for each frame                |
//! | 32     | 16   | HMAC of bytes 0..32 with the sender's key                      |
//!
//! One frame each way, sent as soon as a stream is up, so the handshake costs half a round
//! trip after the connection: role 1 sends a hello on every stream, role 0 sends choose on one
//! stream. Role 1 takes the stream a valid choose arrives on; role 0 takes the stream it chose
//! once a valid hello arrives on it. Each MAC proves its sender holds the session's key (keys
//! are derived from both sides' fresh rendezvous secrets, so no frame of another session
//! opens, and nobody without the secrets can make one).
//!
//! What this does not do: a frame is not bound to its stream, and role 0's choose goes out
//! before the peer has shown itself on that stream. So a party that gets connections to both
//! peers (whatever accepted at an address role 1 listed, or an on-path attacker) can relay the
//! two frames between its connections and sit in the middle. Any handshake that leaves the
//! stream's later bytes unprotected allows that; the punch proves who is at the ends of the
//! handshake, and applications that need confidentiality or integrity of the stream run TLS or
//! Noise over it.

use crate::keys::{MAC_LEN, SessionKeys, TAG_LEN};
use crate::udp_wire::{MAGIC, VERSION};

/// Length of every handshake frame.
pub const FRAME_LEN: usize = 48;
/// Length of a frame's nonce.
pub const NONCE_LEN: usize = 16;

const HELLO: u8 = 3;
const CHOOSE: u8 = 4;

/// The kind of a handshake frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Frame {
    /// Role 1 is at the other end of this stream.
    Hello,
    /// Role 0 is at the other end of this stream and chooses it.
    Choose,
}

/// Our frame: a hello if we are role 1, choose if we are role 0.
pub fn ours(keys: &SessionKeys, nonce: &[u8; NONCE_LEN]) -> [u8; FRAME_LEN] {
    let kind = if keys.role == 0 { CHOOSE } else { HELLO };
    let mut b = [0u8; FRAME_LEN];
    let (signed, mac) = b.split_at_mut(32);
    let (h, n) = signed.split_at_mut(16);
    let (start, tag) = h.split_at_mut(8);
    start.copy_from_slice(&[MAGIC[0], MAGIC[1], MAGIC[2], MAGIC[3], VERSION, kind, 0, keys.role]);
    tag.copy_from_slice(&keys.tag);
    n.copy_from_slice(nonce);
    mac.copy_from_slice(&keys.sign(&[signed]));
    b
}

/// Reads a frame from the peer of this session; `None` for anything else (another session, a
/// reflected frame of ours, a forgery, a frame of the wrong kind for the sender's role).
pub fn open(keys: &SessionKeys, data: &[u8; FRAME_LEN]) -> Option<Frame> {
    let (signed, mac) = data.split_at(32);
    let [m0, m1, m2, m3, version, kind, reserved, role] = *signed.first_chunk::<8>()?;
    let expected = if keys.peer_role() == 0 { CHOOSE } else { HELLO };
    if [m0, m1, m2, m3] != MAGIC
        || version != VERSION
        || reserved != 0
        || role != keys.peer_role()
        || kind != expected
        || signed.get(8..8 + TAG_LEN)? != keys.tag
    {
        return None;
    }
    debug_assert_eq!(mac.len(), MAC_LEN);
    keys.verify(&[signed], mac)
        .then_some(if kind == CHOOSE { Frame::Choose } else { Frame::Hello })
}

#[cfg(test)]
mod tests {
    use super::*;
    use natt_core::rendezvous::gen_rendezvous_info;

    fn pair() -> (SessionKeys, SessionKeys) {
        let (a_priv, a_pub) = gen_rendezvous_info(vec![]);
        let (b_priv, b_pub) = gen_rendezvous_info(vec![]);
        let a = SessionKeys::new(&a_priv, &b_pub).unwrap();
        let b = SessionKeys::new(&b_priv, &a_pub).unwrap();
        if a.role == 0 { (a, b) } else { (b, a) }
    }

    #[test]
    fn each_role_opens_the_other_roles_frame_only() {
        let (r0, r1) = pair();
        let choose = ours(&r0, &[1; 16]);
        let hello = ours(&r1, &[2; 16]);
        assert_eq!(open(&r1, &choose), Some(Frame::Choose));
        assert_eq!(open(&r0, &hello), Some(Frame::Hello));
        // Reflected frames are rejected.
        assert_eq!(open(&r0, &choose), None);
        assert_eq!(open(&r1, &hello), None);
    }

    #[test]
    fn frames_of_another_session_are_rejected() {
        let (r0, r1) = pair();
        let (s0, s1) = pair();
        assert_eq!(open(&s1, &ours(&r0, &[1; 16])), None);
        assert_eq!(open(&s0, &ours(&r1, &[1; 16])), None);
    }

    #[test]
    fn a_frame_relabelled_with_the_other_kind_is_rejected() {
        let (r0, r1) = pair();
        let mut hello = ours(&r1, &[2; 16]);
        hello[5] = CHOOSE;
        hello[7] = 0;
        assert_eq!(open(&r1, &hello), None);
        assert_eq!(open(&r0, &hello), None);
    }

    #[test]
    fn flipped_bits_are_rejected() {
        let (r0, r1) = pair();
        for frame in [ours(&r0, &[1; 16]), ours(&r1, &[2; 16])] {
            for i in 0..FRAME_LEN {
                let mut x = frame;
                x[i] ^= 0x10;
                assert_eq!(open(&r0, &x), None, "byte {i}");
                assert_eq!(open(&r1, &x), None, "byte {i}");
            }
        }
    }
}
