//! ChannelData messages (RFC 8656 section 12.4), which `stun_codec` lacks: a 4-byte header
//! (channel number 0x4000–0x4FFF, payload length) and the payload, padded to a multiple of 4
//! bytes over TCP (section 12.5; over UDP padding is optional and not sent). And the first
//! look at a datagram or stream frame from a TURN server: [`classify`] tells a STUN message
//! from ChannelData from anything else by its first two bits.

#![deny(clippy::disallowed_methods)] // a protocol core: see clippy.toml

/// Length of the ChannelData header.
pub const HEADER_LEN: usize = 4;
/// The lowest channel number (RFC 8656 section 12).
pub const MIN_CHANNEL: u16 = 0x4000;
/// The highest channel number.
pub const MAX_CHANNEL: u16 = 0x4FFF;
/// The largest ChannelData message natt reads from a stream: header, 65535 bytes, padding.
pub const MAX_FRAME_LEN: usize = HEADER_LEN + 65535 + 3;

/// What the first bits of a message from a TURN server say it is (RFC 8656 section 12).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `00`: a STUN message (a response or an indication).
    Stun,
    /// `01`: ChannelData.
    ChannelData,
    /// Anything else (or empty).
    Other,
}

/// The kind of `bytes`, by its first two bits.
pub fn classify(bytes: &[u8]) -> Kind {
    match bytes.first().map(|b| b >> 6) {
        Some(0) => Kind::Stun,
        Some(1) => Kind::ChannelData,
        _ => Kind::Other,
    }
}

/// Why bytes are not a ChannelData message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ChannelDataError {
    /// Fewer than 4 bytes.
    #[error("ChannelData shorter than its header")]
    Short,
    /// A channel number outside 0x4000–0x4FFF.
    #[error("channel number {0:#06x} is outside 0x4000-0x4FFF")]
    BadChannel(u16),
    /// The length field says more than there is, or much less (more than padding).
    #[error("ChannelData length {length} does not match its {have} payload bytes")]
    BadLength {
        /// The length field.
        length: usize,
        /// The bytes after the header.
        have: usize,
    },
    /// A payload longer than 65535 bytes cannot be sent as ChannelData.
    #[error("a payload of {0} bytes is too long for ChannelData")]
    TooLong(usize),
}

/// `len` rounded up to a multiple of 4.
fn padded(len: usize) -> usize {
    len.div_ceil(4) * 4
}

/// A ChannelData message carrying `payload` on `channel`, padded to 4 bytes when `pad` (over
/// TCP).
pub fn encode(channel: u16, payload: &[u8], pad: bool) -> Result<Vec<u8>, ChannelDataError> {
    if !(MIN_CHANNEL..=MAX_CHANNEL).contains(&channel) {
        return Err(ChannelDataError::BadChannel(channel));
    }
    let len = u16::try_from(payload.len()).map_err(|_| ChannelDataError::TooLong(payload.len()))?;
    let total = HEADER_LEN + if pad { padded(payload.len()) } else { payload.len() };
    let mut out = Vec::with_capacity(total);
    out.extend_from_slice(&channel.to_be_bytes());
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(payload);
    out.resize(total, 0);
    Ok(out)
}

/// The channel and payload of a ChannelData message (padding, up to 3 bytes, ignored).
pub fn decode(bytes: &[u8]) -> Result<(u16, &[u8]), ChannelDataError> {
    let (&[c0, c1, l0, l1], rest) = bytes.split_first_chunk::<HEADER_LEN>().ok_or(ChannelDataError::Short)?;
    let channel = u16::from_be_bytes([c0, c1]);
    if !(MIN_CHANNEL..=MAX_CHANNEL).contains(&channel) {
        return Err(ChannelDataError::BadChannel(channel));
    }
    let length = usize::from(u16::from_be_bytes([l0, l1]));
    if rest.len() < length || rest.len() > padded(length) {
        return Err(ChannelDataError::BadLength {
            length,
            have: rest.len(),
        });
    }
    Ok((channel, rest.get(..length).unwrap_or_default()))
}

/// The whole length, padding included, of the ChannelData frame whose header starts `header`,
/// for reading it from a stream (RFC 8656 section 12.5: padded to 4 bytes over TCP).
pub fn stream_frame_len(header: &[u8]) -> Result<usize, ChannelDataError> {
    match header {
        [c0, c1, l0, l1, ..] => {
            let channel = u16::from_be_bytes([*c0, *c1]);
            if !(MIN_CHANNEL..=MAX_CHANNEL).contains(&channel) {
                return Err(ChannelDataError::BadChannel(channel));
            }
            Ok(HEADER_LEN + padded(usize::from(u16::from_be_bytes([*l0, *l1]))))
        }
        _ => Err(ChannelDataError::Short),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_with_and_without_padding() {
        let udp = encode(0x4001, b"hello", false).unwrap();
        assert_eq!(udp, [0x40, 0x01, 0, 5, b'h', b'e', b'l', b'l', b'o']);
        assert_eq!(decode(&udp).unwrap(), (0x4001, &b"hello"[..]));
        let tcp = encode(0x4fff, b"hello", true).unwrap();
        assert_eq!(tcp.len(), 12);
        assert_eq!(&tcp[9..], [0, 0, 0]);
        assert_eq!(decode(&tcp).unwrap(), (0x4fff, &b"hello"[..]));
        assert_eq!(stream_frame_len(&tcp[..4]), Ok(12));
        assert_eq!(encode(0x4000, b"", true).unwrap(), [0x40, 0, 0, 0]);
        assert_eq!(decode(&[0x40, 0, 0, 0]).unwrap(), (0x4000, &b""[..]));
    }

    #[test]
    fn refuses_what_is_not_channel_data() {
        assert_eq!(decode(&[0x40, 0, 0]), Err(ChannelDataError::Short));
        assert_eq!(decode(&[0x50, 0, 0, 0]), Err(ChannelDataError::BadChannel(0x5000)));
        assert_eq!(decode(&[0x3f, 0xff, 0, 0]), Err(ChannelDataError::BadChannel(0x3fff)));
        assert!(matches!(
            decode(&[0x40, 0, 0, 2, 1]),
            Err(ChannelDataError::BadLength { .. })
        ));
        assert!(matches!(
            decode(&[0x40, 0, 0, 1, 1, 0, 0, 0, 0]),
            Err(ChannelDataError::BadLength { .. })
        ));
        assert_eq!(encode(0x5000, b"x", false), Err(ChannelDataError::BadChannel(0x5000)));
        assert_eq!(
            encode(0x4000, &vec![0; 70000], false),
            Err(ChannelDataError::TooLong(70000))
        );
        assert_eq!(
            stream_frame_len(&[0x80, 0, 0, 0]),
            Err(ChannelDataError::BadChannel(0x8000))
        );
    }

    #[test]
    fn classifies_by_the_first_two_bits() {
        assert_eq!(classify(&[0x00, 0x01]), Kind::Stun);
        assert_eq!(classify(&[0x40, 0x00]), Kind::ChannelData);
        assert_eq!(classify(&[0x7f]), Kind::ChannelData);
        assert_eq!(classify(&[0x80]), Kind::Other);
        assert_eq!(classify(b"NATP"), Kind::ChannelData); // 'N' = 0x4e: the caller checks the source
        assert_eq!(classify(&[]), Kind::Other);
    }
}
