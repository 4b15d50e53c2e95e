//! The handshake on each TCP stream of a simultaneous open (version 1), as pure functions.
//!
//! Every frame is 48 bytes:
//!
//! | offset | size | field                                                          |
//! |-------:|-----:|----------------------------------------------------------------|
//! | 0      | 4    | magic `b"NATP"`                                                |
//! | 4      | 1    | version, `1`                                                   |
//! | 5      | 1    | kind: `3` hello, `4` choose, `5` ack                           |
//! | 6      | 1    | reserved, zero                                                 |
//! | 7      | 1    | the sender's role                                              |
//! | 8      | 8    | session tag                                                    |
//! | 16     | 16   | hello: the sender's random nonce; otherwise zero               |
//! | 32     | 16   | choose, ack: HMAC of bytes 0..16 and both nonces (role 0's first) with the sender's key; hello: zero |
//!
//! Both sides send a hello as soon as a stream is up. Role 0 picks one stream and sends
//! choose on it; role 1 answers with ack. Both MACs cover both fresh nonces, so neither can be
//! replayed from another stream or session: choose proves role 0 to role 1, ack proves role 1
//! to role 0, and both then use that one stream.

use crate::keys::{MAC_LEN, SessionKeys, TAG_LEN};
use crate::udp_wire::{MAGIC, VERSION};

/// Length of every handshake frame.
pub const FRAME_LEN: usize = 48;
/// Length of a hello's nonce.
pub const HELLO_NONCE_LEN: usize = 16;

/// The kind of a handshake frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Frame {
    /// A hello with the sender's nonce.
    Hello([u8; HELLO_NONCE_LEN]),
    /// Role 0 chooses this stream.
    Choose,
    /// Role 1 accepts the choice.
    Ack,
}

fn header(keys: &SessionKeys, kind: u8) -> [u8; 16] {
    let mut h = [0u8; 16];
    let (start, tag) = h.split_at_mut(8);
    start.copy_from_slice(&[MAGIC[0], MAGIC[1], MAGIC[2], MAGIC[3], VERSION, kind, 0, keys.role]);
    tag.copy_from_slice(&keys.tag);
    h
}

/// Our hello.
pub fn hello(keys: &SessionKeys, nonce: &[u8; HELLO_NONCE_LEN]) -> [u8; FRAME_LEN] {
    let mut b = [0u8; FRAME_LEN];
    let (h, rest) = b.split_at_mut(16);
    h.copy_from_slice(&header(keys, 3));
    let (n, _) = rest.split_at_mut(HELLO_NONCE_LEN);
    n.copy_from_slice(nonce);
    b
}

/// Our choose (role 0) or ack (role 1) for the stream whose nonces are `n0` (role 0's) and
/// `n1` (role 1's).
pub fn decision(keys: &SessionKeys, n0: &[u8; HELLO_NONCE_LEN], n1: &[u8; HELLO_NONCE_LEN]) -> [u8; FRAME_LEN] {
    let kind = if keys.role == 0 { 4 } else { 5 };
    let h = header(keys, kind);
    let mut b = [0u8; FRAME_LEN];
    let (head, rest) = b.split_at_mut(16);
    head.copy_from_slice(&h);
    let (_, mac) = rest.split_at_mut(16);
    mac.copy_from_slice(&keys.sign(&[&h, n0, n1]));
    b
}

/// Reads a frame from the peer of this session; `None` for anything else. `nonces` are the
/// stream's nonces `(n0, n1)` once both hellos are known (needed to check choose and ack).
pub fn open(
    keys: &SessionKeys,
    data: &[u8; FRAME_LEN],
    nonces: Option<(&[u8; HELLO_NONCE_LEN], &[u8; HELLO_NONCE_LEN])>,
) -> Option<Frame> {
    let (h, rest) = data.split_at(16);
    let [m0, m1, m2, m3, version, kind, reserved, role] = *h.first_chunk::<8>()?;
    if [m0, m1, m2, m3] != MAGIC
        || version != VERSION
        || reserved != 0
        || role != keys.peer_role()
        || h.get(8..8 + TAG_LEN)? != keys.tag
    {
        return None;
    }
    let (body, mac) = rest.split_at(16);
    debug_assert_eq!(mac.len(), MAC_LEN);
    match kind {
        // A hello carries no MAC: its last 16 bytes are zero, as for reserved fields.
        3 if mac.iter().all(|&b| b == 0) => Some(Frame::Hello(*body.first_chunk::<HELLO_NONCE_LEN>()?)),
        4 | 5 => {
            // Choose comes from role 0, ack from role 1.
            if (kind == 4) != (role == 0) || body.iter().any(|&b| b != 0) {
                return None;
            }
            let (n0, n1) = nonces?;
            keys.verify(&[h, n0, n1], mac)
                .then_some(if kind == 4 { Frame::Choose } else { Frame::Ack })
        }
        _ => None,
    }
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
    fn handshake_frames_verify_only_for_their_stream() {
        let (r0, r1) = pair();
        let (n0, n1) = ([1u8; 16], [2u8; 16]);
        assert_eq!(open(&r1, &hello(&r0, &n0), None), Some(Frame::Hello(n0)));
        let choose = decision(&r0, &n0, &n1);
        assert_eq!(open(&r1, &choose, Some((&n0, &n1))), Some(Frame::Choose));
        let ack = decision(&r1, &n0, &n1);
        assert_eq!(open(&r0, &ack, Some((&n0, &n1))), Some(Frame::Ack));
        // Another stream's nonces: a replayed choose or ack does not verify.
        let other = [3u8; 16];
        assert_eq!(open(&r1, &choose, Some((&n0, &other))), None);
        assert_eq!(open(&r0, &ack, Some((&other, &n1))), None);
        // Without nonces, no decision is accepted; reflected frames are rejected.
        assert_eq!(open(&r1, &choose, None), None);
        assert_eq!(open(&r0, &choose, Some((&n0, &n1))), None);
        assert_eq!(open(&r0, &hello(&r0, &n0), None), None);
    }

    #[test]
    fn a_hello_with_bytes_in_its_mac_field_is_rejected() {
        // Found by the punch_messages fuzz target: such a hello was accepted, though the format
        // says its last 16 bytes are zero (only the canonical frame may open).
        let (r0, r1) = pair();
        let mut h = hello(&r0, &[9; 16]);
        assert_eq!(open(&r1, &h, None), Some(Frame::Hello([9; 16])));
        h[45] = 0x2d;
        assert_eq!(open(&r1, &h, None), None);
    }

    #[test]
    fn flipped_bits_are_rejected() {
        let (r0, r1) = pair();
        let (n0, n1) = ([1u8; 16], [2u8; 16]);
        let choose = decision(&r0, &n0, &n1);
        for i in 0..FRAME_LEN {
            let mut x = choose;
            x[i] ^= 0x10;
            assert_eq!(open(&r1, &x, Some((&n0, &n1))), None, "byte {i}");
        }
    }
}
