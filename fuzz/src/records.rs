//! The records of a relayed TCP stream (`relay_records`): `natt_punch::records::parse` on any
//! byte stream, cut into reads of any size and buffered as natt's relayed connection buffers
//! it (one record's worth, compacted), with `open_ready` on every move record; data records
//! round trip through `encode_data`.
//!
//! The session is punch_messages' (`crate::punch::session`), so the corpus keeps genuine move
//! records, and a move that opens must be byte for byte the peer's.

use natt_punch::records::{self, HEADER_LEN, MAX_DATA, MAX_RECORD, Record};
use natt_punch::wire;

use crate::addr;
use crate::input::{Input, Script};
use crate::punch::{OUR_ENDPOINT, session};

/// `relay_records`: the first byte is the size of each read (0 counts as 1); the rest is the
/// stream.
pub fn target(data: &[u8]) {
    let (ours, theirs, _, _) = session();
    let mut input = Input::new(data);
    let read_size = usize::from(input.u8().unwrap_or(1)).max(1);
    let stream = input.rest();
    // Data round trips.
    let mut encoded = Vec::new();
    let n = records::encode_data(stream, &mut encoded);
    assert_eq!(n, stream.len().min(MAX_DATA));
    if n > 0 {
        assert_eq!(
            records::parse(&encoded),
            Ok(Some((Record::Data(&stream[..n]), encoded.len())))
        );
    }
    // The reader.
    let mut buf = vec![0u8; MAX_RECORD];
    let (mut start, mut end, mut fed) = (0, 0, 0);
    loop {
        match records::parse(&buf[start..end]) {
            Err(_) => break,
            Ok(Some((record, used))) => {
                assert!(used >= HEADER_LEN && used <= end - start, "took {used} of {}", end - start);
                match record {
                    Record::Data(d) => assert!(!d.is_empty() && d.len() <= MAX_DATA),
                    Record::End | Record::Ack => assert_eq!(used, HEADER_LEN),
                    Record::Move(body) => {
                        if let Some((observed, nonce)) = records::open_ready(&ours, body) {
                            let m = wire::open(&ours, body).expect("opened once");
                            assert_eq!((m.observed, m.nonce), (observed, nonce));
                            assert_eq!(&wire::encode(&theirs, &m), body, "opened a forgery: {m:?}");
                        }
                    }
                }
                start += used;
            }
            Ok(None) => {
                buf.copy_within(start..end, 0);
                end -= start;
                start = 0;
                assert!(end < MAX_RECORD, "a whole record always fits the buffer");
                let take = read_size.min(stream.len() - fed).min(MAX_RECORD - end);
                if take == 0 {
                    break;
                }
                buf[end..end + take].copy_from_slice(&stream[fed..fed + take]);
                fed += take;
                end += take;
            }
        }
    }
}

/// Seeds: data records, the peer's genuine move last, a forged move, end and ack, plain bytes.
pub fn seeds() -> Vec<(String, Vec<u8>)> {
    let (ours, theirs, _, _) = session();
    let seen = addr(OUR_ENDPOINT);
    let mut data = Vec::new();
    records::encode_data(b"hello through the relay", &mut data);
    records::encode_data(&[7u8; 300], &mut data);
    let genuine = records::encode_move(&records::encode_ready(&theirs, seen, [4; wire::NONCE_LEN]));
    let reflected = records::encode_move(&records::encode_ready(&ours, seen, [5; wire::NONCE_LEN]));
    let with = |read: u8, parts: &[&[u8]]| {
        let mut s = Script::new().u8(read);
        for p in parts {
            s = s.raw(p);
        }
        s.build()
    };
    vec![
        ("data".into(), with(7, &[&data])),
        ("data-then-move".into(), with(13, &[&data, &genuine])),
        ("move-whole".into(), with(255, &[&genuine])),
        ("reflected-move".into(), with(64, &[&data, &reflected])),
        ("plain-bytes".into(), with(16, &[b"GET / HTTP/1.1\r\n\r\n"])),
        ("empty-data".into(), with(1, &[&[0, 0, 0]])),
        ("end-and-acks".into(), with(2, &[&data, &records::encode_end(), &records::encode_ack()])),
    ]
}
