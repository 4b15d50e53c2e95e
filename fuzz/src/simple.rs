//! The simple protocol: its wire format and stream framing (`simple_wire`), and the client's
//! UDP exchange (`simple_exchange`).

use std::collections::HashSet;
use std::io;
use std::net::SocketAddr;

use natt_core::{MappedSocketAddr, TechniqueError, Transmit};
use natt_simple::SimpleExchange;
use natt_simple::stream::{read_message, read_message_after};
use natt_simple::wire::{
    self, HEADER_LEN, Message, REPLY_V4_LEN, REPLY_V6_LEN, REQUEST_LEN, Reply, Request, TXID_LEN, TransactionId,
    answer, decode, message_len,
};
use rand::SeedableRng;
use rand::rngs::StdRng;

use crate::exchange::{self, Answer, Log, ScriptExt, Target};
use crate::input::{Clock, Input, Script};
use crate::{addr, v6};

/// `simple_wire`: the first byte picks a source address for `answer`; the rest is a datagram
/// (for `decode`, `message_len`, `answer`) and a stream (for `read_message`).
pub fn wire_target(data: &[u8]) {
    let mut input = Input::new(data);
    let sel = input.u8().unwrap_or(0);
    let bytes = input.rest();
    let from = if sel & 1 == 0 {
        SocketAddr::new([198, 51, 100, sel].into(), u16::from(sel) << 8 | 7)
    } else {
        SocketAddr::new(
            v6([0x2001, 0xdb8, 0, 0, 0, 0, 0, u16::from(sel)]),
            65535 - u16::from(sel),
        )
    };
    check_datagram(from, bytes);
    check_stream(bytes);
}

fn check_datagram(from: SocketAddr, bytes: &[u8]) {
    let decoded = decode(bytes);
    let len = message_len(bytes);
    if let Ok(m) = decoded {
        // Only canonical bytes decode: re-encoding gives them back exactly.
        let again = match m {
            Message::Request(r) => r.encode().to_vec(),
            Message::Reply(r) => r.encode(),
        };
        assert_eq!(again, bytes, "decode accepted non-canonical bytes as {m:?}");
        assert_eq!(len, Ok(bytes.len()), "message_len disagrees with decode");
    }
    if let Ok(n) = len {
        assert!(
            matches!(n, REQUEST_LEN | REPLY_V4_LEN | REPLY_V6_LEN),
            "message_len {n}"
        );
    }
    match answer(from, bytes) {
        Some(reply) => {
            let Ok(Message::Request(req)) = decoded else {
                panic!("answered {bytes:?}, which is not a request");
            };
            // No amplification: a reply is never larger than its request.
            assert!(
                reply.len() <= bytes.len(),
                "reply of {} to {} bytes",
                reply.len(),
                bytes.len()
            );
            assert_eq!(
                decode(&reply),
                Ok(Message::Reply(Reply {
                    txid: req.txid,
                    observed: from
                }))
            );
        }
        None => assert!(!matches!(decoded, Ok(Message::Request(_))), "a request got no answer"),
    }
}

fn check_stream(bytes: &[u8]) {
    // Messages back to back, as on TCP: each one read is the canonical encoding of exactly the
    // bytes it consumed, and reading stops at the first error.
    let mut r = bytes;
    for _ in 0..8 {
        let before = r;
        match read_message(&mut r) {
            Ok(m) => {
                let enc = match m {
                    Message::Request(q) => q.encode().to_vec(),
                    Message::Reply(p) => p.encode(),
                };
                let used = before.len() - r.len();
                assert_eq!(&before[..used], &enc[..], "stream read {m:?} from other bytes");
            }
            Err(e) => {
                assert!(
                    matches!(e.kind(), io::ErrorKind::UnexpectedEof | io::ErrorKind::InvalidData),
                    "{e}"
                );
                break;
            }
        }
    }
    // A server that already read the first bytes to tell protocols apart.
    if let Some((head, rest)) = bytes.split_first_chunk::<HEADER_LEN>() {
        let mut r = rest;
        if let Ok(m) = read_message_after(*head, &mut r) {
            assert_eq!(Ok(m), decode(&bytes[..bytes.len() - r.len()]));
        }
    }
}

/// Seeds for `simple_wire`.
pub fn wire_seeds() -> Vec<(String, Vec<u8>)> {
    let req = Request {
        txid: TransactionId(*b"0123456789ab"),
    };
    let r4 = Reply {
        txid: TransactionId([0xAB; TXID_LEN]),
        observed: addr("203.0.113.5:4000"),
    };
    let r6 = Reply {
        txid: TransactionId([0x5A; TXID_LEN]),
        observed: addr("[2001:db8::1]:65535"),
    };
    let mut two = req.encode().to_vec();
    two.extend(r6.encode());
    vec![
        ("request".into(), [&[0u8][..], &req.encode()].concat()),
        ("request-v6-from".into(), [&[1u8][..], &req.encode()].concat()),
        ("reply-v4".into(), [&[0u8][..], &r4.encode()].concat()),
        ("reply-v6".into(), [&[0u8][..], &r6.encode()].concat()),
        ("stream-two".into(), [&[0u8][..], &two].concat()),
        ("old-echo".into(), b"\0ECHO".to_vec()),
    ]
}

/// The simple client's servers and the addresses datagrams come from.
const SERVERS: [&str; 3] = ["203.0.113.20:5483", "203.0.113.21:5483", "[2001:db8::20]:5483"];
const OTHERS: [&str; 4] = [
    "198.51.100.1:4000",
    "198.51.100.1:4001",
    "192.0.2.1:4000",
    "203.0.113.66:6666",
];

/// `simple_exchange`: a header byte chooses the servers (bits 0–2) and the local address
/// (bit 3: an address a server may report, meaning "no NAT"); the rest is an
/// [`exchange`] script.
pub fn exchange_target(data: &[u8]) {
    let mut input = Input::new(data);
    let header = input.u8().unwrap_or(0);
    let mut servers: Vec<SocketAddr> = SERVERS
        .iter()
        .enumerate()
        .filter(|(i, _)| header & (1 << i) != 0)
        .map(|(_, s)| addr(s))
        .collect();
    if servers.is_empty() {
        servers.push(addr(SERVERS[0]));
    }
    let local = if header & 8 != 0 {
        addr("198.51.100.1:4000")
    } else {
        addr("192.0.2.1:4000")
    };
    let clock = Clock::start();
    let mut t = SimpleTarget {
        exchange: SimpleExchange::new(
            vec![local],
            servers.clone(),
            clock.now,
            &mut StdRng::seed_from_u64(u64::from(header)),
        ),
        table: SERVERS.iter().chain(OTHERS.iter()).map(|s| addr(s)).collect(),
        servers,
        local,
    };
    exchange::drive(&mut t, &mut input, clock);
}

struct SimpleTarget {
    exchange: SimpleExchange,
    table: Vec<SocketAddr>,
    servers: Vec<SocketAddr>,
    local: SocketAddr,
}

impl Target for SimpleTarget {
    type Exchange = SimpleExchange;

    fn exchange(&mut self) -> &mut SimpleExchange {
        &mut self.exchange
    }

    fn addresses(&self) -> &[SocketAddr] {
        &self.table
    }

    fn patch(&self, request: &[u8], template: &[u8]) -> Vec<u8> {
        let mut b = template.to_vec();
        if b.len() < 22 {
            b.resize(22, 0);
        }
        b[..6].copy_from_slice(&[b'N', b'A', b'T', b'T', wire::VERSION, wire::KIND_REPLY]);
        b[10..22].copy_from_slice(&request[8..20]);
        b
    }

    fn answer(&self, request: &[u8], a: &Answer) -> Option<Vec<u8>> {
        answer(a.observed, request)
    }

    fn check_transmit(&mut self, t: &Transmit, _log: &Log) {
        assert!(self.servers.contains(&t.destination), "sent to {}", t.destination);
        assert!(
            matches!(decode(&t.payload), Ok(Message::Request(_))),
            "sent a non-request"
        );
    }

    fn check_result(&mut self, result: &Result<Vec<MappedSocketAddr>, TechniqueError>, log: &Log, finished: bool) {
        // What the accepted replies said, and only for our own transactions.
        let ours: HashSet<[u8; TXID_LEN]> = log
            .sent
            .iter()
            .filter_map(|t| match decode(&t.payload) {
                Ok(Message::Request(r)) => Some(r.txid.0),
                _ => None,
            })
            .collect();
        let observed: Vec<SocketAddr> = log
            .accepted
            .iter()
            .map(|(_, d)| match decode(d) {
                Ok(Message::Reply(r)) => {
                    assert!(ours.contains(&r.txid.0), "accepted a reply to no request of ours");
                    r.observed
                }
                m => panic!("accepted {m:?}"),
            })
            .collect();
        match result {
            Ok(eps) => {
                assert!(!eps.is_empty(), "a result without endpoints");
                let mut seen = HashSet::new();
                for e in eps {
                    assert!(observed.contains(&e.addr), "endpoint {e} no server reported");
                    assert!(seen.insert(e.addr), "endpoint {e} twice");
                    assert_eq!(e.technique, natt_simple::client::NAME);
                    assert_eq!(e.nat_restricted, e.addr != self.local, "{e}");
                }
            }
            Err(e) => {
                assert!(finished, "poll_result gave an error: {e}");
                assert!(observed.is_empty(), "accepted replies, yet {e}");
            }
        }
    }
}

/// Seeds for `simple_exchange`.
pub fn exchange_seeds() -> Vec<(String, Vec<u8>)> {
    let reply_template = Reply {
        txid: TransactionId([0; TXID_LEN]),
        observed: addr("198.51.100.1:4000"),
    }
    .encode();
    vec![
        (
            "one-server-answers".into(),
            Script::new()
                .u8(0b001)
                .transmit()
                .advance(30)
                .answer(0, 0, 3, None, None, None)
                .result()
                .build(),
        ),
        (
            "two-servers-symmetric".into(),
            Script::new()
                .u8(0b011)
                .transmit()
                .advance(20)
                .answer(1, 0, 3, None, None, None)
                .answer(0, 1, 4, None, None, None)
                .result()
                .build(),
        ),
        (
            "retransmit-then-grace".into(),
            Script::new()
                .u8(0b011)
                .transmit()
                .advance(250)
                .transmit()
                .timeout()
                .patched(0, 0, &reply_template)
                .advance(100)
                .result()
                .advance(1000)
                .result()
                .build(),
        ),
        (
            "no-nat-and-garbage".into(),
            Script::new()
                .u8(0b1101)
                .transmit()
                .raw_datagram(6, b"garbage")
                .answer(0, 2, 5, None, None, None)
                .answer(0, 0, 3, None, None, None)
                .advance(5000)
                .result()
                .build(),
        ),
        (
            "nobody-answers".into(),
            Script::new()
                .u8(0b111)
                .transmit()
                .advance(0x8000 | 10)
                .transmit()
                .finish()
                .build(),
        ),
    ]
}
