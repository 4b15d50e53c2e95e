//! STUN: message decoding, framing and the server's answers (`stun_message`), the client's
//! UDP exchange (`stun_exchange`) and the RFC 5780 behaviour probes (`stun_behaviour`).

use std::collections::{HashMap, HashSet};
use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use natt_core::{MappedSocketAddr, TechniqueError, Transmit};
use natt_stun::StunExchange;
use natt_stun::behaviour::{Behaviour, FilteringTest, MappingTest};
use natt_stun::client::read_stun_message;
use natt_stun::message::{
    BindingRequest, BindingResponse, HEADER_LEN, MAGIC_COOKIE, MAX_MESSAGE_LEN, StunError, decode_request,
    decode_response, encode_binding_request, encode_error, encode_success, looks_like_stun, stream_message_len,
};
use natt_stun::server::answer_datagram;
use rand::SeedableRng;
use rand::rngs::StdRng;

use crate::exchange::{self, Answer, Log, ScriptExt, Target};
use crate::input::{Clock, Input, Script};
use crate::{addr, v6};

/// `stun_message`: the first byte picks the source address the server answer is made for;
/// the rest is a datagram, and a stream.
pub fn message_target(data: &[u8]) {
    let mut input = Input::new(data);
    let sel = input.u8().unwrap_or(0);
    let bytes = input.rest();
    let from = if sel & 1 == 0 {
        SocketAddr::new([198, 51, 100, sel].into(), u16::from(sel) << 8 | 9)
    } else {
        SocketAddr::new(v6([0x2001, 0xdb8, 0, 0, 0, 0, 0, u16::from(sel)]), 40000)
    };

    // Framing: the length a header announces, consistent with looks_like_stun.
    let len = stream_message_len(bytes);
    if let Ok(n) = len {
        assert!((HEADER_LEN..=MAX_MESSAGE_LEN).contains(&n) && n % 4 == 0, "length {n}");
    }
    assert_eq!(looks_like_stun(bytes), len == Ok(bytes.len()));
    let mut r = bytes;
    match read_stun_message(&mut r) {
        Ok(msg) => {
            assert_eq!(Ok(msg.len()), len);
            assert_eq!(&bytes[..msg.len()], &msg[..]);
        }
        Err(e) => assert!(matches!(
            e.kind(),
            io::ErrorKind::UnexpectedEof | io::ErrorKind::InvalidData
        )),
    }

    let request = decode_request(bytes);
    let response = decode_response(bytes);
    if request.is_ok() || response.is_ok() {
        assert!(looks_like_stun(bytes), "decoded bytes that do not look like STUN");
    }
    if let Ok(req) = &request {
        check_request_round_trip(req);
        check_server_answer(req, bytes, from);
    }
    if let Ok(resp) = &response {
        check_response_round_trip(resp);
    }
    if !looks_like_stun(bytes) {
        assert_eq!(request, Err(StunError::NotStun));
        assert_eq!(response, Err(StunError::NotStun));
    }
}

fn check_request_round_trip(req: &BindingRequest) {
    let change = (req.change_ip || req.change_port).then_some((req.change_ip, req.change_port));
    let bytes = encode_binding_request(req.txid, change).expect("encode a decoded request");
    let again = decode_request(&bytes).expect("decode an encoded request");
    assert_eq!(
        (again.txid, again.change_ip, again.change_port),
        (req.txid, req.change_ip, req.change_port)
    );
    assert!(again.unknown_required.is_empty() && again.response_port.is_none());
}

/// The server's real answer (`natt_stun::server::answer_datagram`) for a plain server and an
/// RFC 5780 one, over UDP and TCP: it must go back to the requester's address, from one of the
/// server's sockets, and our own client must read it.
fn check_server_answer(req: &BindingRequest, bytes: &[u8], from: SocketAddr) {
    let plain = [addr("203.0.113.10:3478")];
    let rfc5780 = [
        addr("203.0.113.10:3478"),
        addr("203.0.113.10:3479"),
        addr("203.0.113.11:3478"),
        addr("203.0.113.11:3479"),
    ];
    for (addrs, stream) in [(&plain[..], false), (&rfc5780[..], false), (&rfc5780[..], true)] {
        for on in 0..addrs.len() {
            let (via, to, answer) = answer_datagram(addrs, on, from, bytes, stream).expect("no answer to a request");
            assert!(via < addrs.len(), "answered from socket {via}");
            assert_eq!(to.ip(), from.ip(), "answered to another address");
            assert!(answer.len() <= MAX_MESSAGE_LEN, "an answer of {} bytes", answer.len());
            let r = decode_response(&answer).expect("our client cannot read the server's answer");
            assert_eq!(r.txid, req.txid);
            let changes = req.change_ip || req.change_port;
            match r.result {
                Ok(s) => {
                    assert!(req.unknown_required.is_empty() && !(changes && (stream || addrs.len() == 1)));
                    assert_eq!(s.mapped, from);
                    assert_eq!(s.response_origin, (addrs.len() == 4).then(|| addrs[via]));
                    assert_eq!(s.other_address, (addrs.len() == 4).then(|| addrs[on ^ 3]));
                    assert_eq!(
                        via,
                        on ^ (usize::from(req.change_ip) << 1) ^ usize::from(req.change_port)
                    );
                }
                Err((code, _)) => {
                    assert_eq!(code, 420);
                    assert_eq!(via, on);
                    assert!(!req.unknown_required.is_empty() || changes);
                }
            }
        }
    }
}

fn check_response_round_trip(resp: &BindingResponse) {
    match &resp.result {
        Ok(s) => {
            let bytes = encode_success(resp.txid, s.mapped, s.other_address, s.response_origin)
                .expect("encode a decoded success");
            assert_eq!(decode_response(&bytes).as_ref(), Ok(resp));
        }
        Err((code, reason)) => {
            // A response without ERROR-CODE decodes as code 0, which does not encode.
            if let Ok(bytes) = encode_error(resp.txid, *code, reason, &[]) {
                assert_eq!(decode_response(&bytes).as_ref(), Ok(resp));
            }
        }
    }
}

/// Seeds for `stun_message`.
pub fn message_seeds() -> Vec<(String, Vec<u8>)> {
    let with = |sel: u8, b: Vec<u8>| [vec![sel], b].concat();
    let req = encode_binding_request([1; 12], None).unwrap();
    let change = encode_binding_request([2; 12], Some((true, true))).unwrap();
    let success = encode_success(
        [3; 12],
        addr("[2001:db8::5]:1234"),
        Some(addr("203.0.113.11:3479")),
        Some(addr("203.0.113.10:3478")),
    )
    .unwrap();
    let error = encode_error([4; 12], 420, "Unknown Attribute", &[0x0042, 0x8001]).unwrap();
    let mut unknown = encode_binding_request([5; 12], None).unwrap();
    // An unknown comprehension-required attribute, PADDING and RESPONSE-PORT.
    unknown.extend_from_slice(&[0x00, 0x42, 0x00, 0x04, 1, 2, 3, 4]);
    unknown.extend_from_slice(&[0x00, 0x26, 0x00, 0x04, 0, 0, 0, 0]);
    unknown.extend_from_slice(&[0x00, 0x27, 0x00, 0x04, 0x12, 0x34, 0, 0]);
    unknown[3] = 24;
    let mut two = req.clone();
    two.extend_from_slice(&success);
    vec![
        ("request".into(), with(0, req)),
        ("change-request".into(), with(1, change)),
        ("success-5780".into(), with(0, success)),
        ("error-420".into(), with(0, error)),
        ("request-unknown-attrs".into(), with(2, unknown)),
        ("stream-two".into(), with(0, two)),
        ("simple-protocol".into(), with(0, b"NATT\x01\x01\0\0".to_vec())),
    ]
}

/// Servers the STUN client and probes are given (chosen by bits of a header byte), and other
/// addresses datagrams come from or name.
const SERVERS: [&str; 4] = [
    "203.0.113.10:3478",
    "203.0.113.10:3479",
    "203.0.113.11:3478",
    "[2001:db8::10]:3478",
];
const OTHERS: [&str; 7] = [
    "203.0.113.11:3479",
    "203.0.113.99:1",
    "198.51.100.1:4000",
    "198.51.100.1:4001",
    "192.0.2.1:4000",
    "[2001:db8::99]:5",
    "0.0.0.0:0",
];

fn table() -> Vec<SocketAddr> {
    SERVERS.iter().chain(OTHERS.iter()).map(|s| addr(s)).collect()
}

/// The common header of the STUN exchange targets: servers (bits 0–3 of the first byte), the
/// local address (bit 4) and the initial RTO (next two bytes, milliseconds).
fn header(input: &mut Input<'_>) -> (u8, Vec<SocketAddr>, SocketAddr, Duration) {
    let h = input.u8().unwrap_or(0);
    let mut servers: Vec<SocketAddr> = SERVERS
        .iter()
        .enumerate()
        .filter(|(i, _)| h & (1 << i) != 0)
        .map(|(_, s)| addr(s))
        .collect();
    if servers.is_empty() {
        servers.push(addr(SERVERS[0]));
    }
    let local = if h & 0x10 != 0 {
        addr("198.51.100.1:4000")
    } else {
        addr("192.0.2.1:4000")
    };
    let rto = Duration::from_millis(u64::from(input.u16().unwrap_or(500)));
    (h, servers, local, rto)
}

/// The cores' generator, seeded from the header byte: a fuzz case replays exactly.
fn rng(h: u8) -> StdRng {
    StdRng::seed_from_u64(u64::from(h))
}

/// The transactions we sent: transaction id to (destination, CHANGE-REQUEST flags).
fn sent_requests(log: &Log) -> HashMap<[u8; 12], (SocketAddr, bool, bool)> {
    log.sent
        .iter()
        .map(|t| {
            let r = decode_request(&t.payload).expect("we sent a request we cannot decode");
            (r.txid, (t.destination, r.change_ip, r.change_port))
        })
        .collect()
}

/// The first accepted response of each transaction (later ones are ignored by design), with
/// its source.
fn first_responses(log: &Log) -> Vec<(SocketAddr, BindingResponse)> {
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    for (from, d) in &log.accepted {
        let r = decode_response(d).expect("accepted a datagram that is not a response");
        if seen.insert(r.txid) {
            out.push((*from, r));
        }
    }
    out
}

fn patch(request: &[u8], template: &[u8]) -> Vec<u8> {
    let mut b = template.to_vec();
    if b.len() < HEADER_LEN {
        b.resize(HEADER_LEN, 0);
    }
    let body = u16::try_from(b.len() - HEADER_LEN).unwrap_or(u16::MAX);
    b[2..4].copy_from_slice(&body.to_be_bytes());
    b[4..8].copy_from_slice(&MAGIC_COOKIE);
    b[8..20].copy_from_slice(&request[8..20]);
    b
}

fn answer(request: &[u8], a: &Answer) -> Option<Vec<u8>> {
    let txid = decode_request(request).ok()?.txid;
    match a.error {
        Some(code) => encode_error(txid, 300 + code % 300, "Fuzzed", &[]).ok(),
        None => encode_success(txid, a.observed, a.other, a.origin).ok(),
    }
}

/// Endpoints are what servers said; `unique` for the client (the mapping probe lists every
/// test's answer, and only its verdict is used).
fn check_endpoints(eps: &[MappedSocketAddr], mapped: &[SocketAddr], unique: bool) {
    assert!(!eps.is_empty(), "a result without endpoints");
    let mut seen = HashSet::new();
    for e in eps {
        assert!(mapped.contains(&e.addr), "endpoint {e} no server reported");
        assert!(seen.insert(e.addr) || !unique, "endpoint {e} twice");
        assert_eq!(e.technique, natt_stun::client::NAME);
    }
}

/// `stun_exchange`: [`header`], then an [`exchange`] script.
pub fn exchange_target(data: &[u8]) {
    let mut input = Input::new(data);
    let (h, servers, local, rto) = header(&mut input);
    let clock = Clock::start();
    let Ok(ex) = StunExchange::new(vec![local], &servers, rto, clock.now, rng(h)) else {
        return;
    };
    let mut t = StunTarget {
        exchange: ex,
        table: table(),
        servers,
        local,
    };
    exchange::drive(&mut t, &mut input, clock);
}

struct StunTarget {
    exchange: StunExchange,
    table: Vec<SocketAddr>,
    servers: Vec<SocketAddr>,
    local: SocketAddr,
}

impl Target for StunTarget {
    type Exchange = StunExchange;

    fn exchange(&mut self) -> &mut StunExchange {
        &mut self.exchange
    }

    fn addresses(&self) -> &[SocketAddr] {
        &self.table
    }

    fn patch(&self, request: &[u8], template: &[u8]) -> Vec<u8> {
        patch(request, template)
    }

    fn answer(&self, request: &[u8], a: &Answer) -> Option<Vec<u8>> {
        answer(request, a)
    }

    fn check_transmit(&mut self, t: &Transmit, _log: &Log) {
        assert!(self.servers.contains(&t.destination), "sent to {}", t.destination);
        decode_request(&t.payload).expect("sent a request we cannot decode");
    }

    fn check_result(&mut self, result: &Result<Vec<MappedSocketAddr>, TechniqueError>, log: &Log, _finished: bool) {
        let sent = sent_requests(log);
        let firsts = first_responses(log);
        // Binding answers (not the filtering check's) that are successes.
        let mut mapped = Vec::new();
        for (_, r) in &firsts {
            let &(_, ci, cp) = sent.get(&r.txid).expect("accepted an answer to no request of ours");
            if let (Ok(s), false) = (&r.result, ci || cp) {
                mapped.push(s.mapped);
            }
        }
        let server_ips: Vec<_> = self.servers.iter().map(SocketAddr::ip).collect();
        match result {
            Ok(eps) => {
                check_endpoints(eps, &mapped, true);
                for e in eps.iter().filter(|e| !e.nat_restricted && e.addr != self.local) {
                    // Open only when a change request's success came from an IP never asked.
                    let proof = firsts.iter().any(|(from, r)| {
                        let &(_, ci, cp) = &sent[&r.txid];
                        ci && cp && r.result.is_ok() && !server_ips.contains(&from.ip())
                    });
                    assert!(proof, "{e} is open without proof");
                }
            }
            Err(e) => assert!(mapped.is_empty(), "servers gave {mapped:?}, yet {e}"),
        }
    }
}

/// `stun_behaviour`: [`header`]; bit 5 of its first byte picks the filtering probe (else the
/// mapping probe), whose window is the next two bytes (milliseconds); then an [`exchange`]
/// script.
pub fn behaviour_target(data: &[u8]) {
    let mut input = Input::new(data);
    let (h, servers, _local, rto) = header(&mut input);
    let clock = Clock::start();
    if h & 0x20 != 0 {
        let window = Duration::from_millis(u64::from(input.u16().unwrap_or(1000)));
        let Ok(probe) = FilteringTest::new(servers[0], rto, window, clock.now, rng(h)) else {
            return;
        };
        let mut t = FilteringTarget {
            probe,
            table: table(),
            primary: servers[0],
        };
        exchange::drive(&mut t, &mut input, clock);
    } else {
        let Ok(probe) = MappingTest::new(&servers, rto, clock.now, rng(h)) else {
            return;
        };
        let mut t = MappingTarget {
            probe,
            table: table(),
            servers,
        };
        exchange::drive(&mut t, &mut input, clock);
    }
}

struct MappingTarget {
    probe: MappingTest,
    table: Vec<SocketAddr>,
    servers: Vec<SocketAddr>,
}

impl Target for MappingTarget {
    type Exchange = MappingTest;

    fn exchange(&mut self) -> &mut MappingTest {
        &mut self.probe
    }

    fn addresses(&self) -> &[SocketAddr] {
        &self.table
    }

    fn patch(&self, request: &[u8], template: &[u8]) -> Vec<u8> {
        patch(request, template)
    }

    fn answer(&self, request: &[u8], a: &Answer) -> Option<Vec<u8>> {
        answer(request, a)
    }

    fn check_transmit(&mut self, t: &Transmit, log: &Log) {
        let r = decode_request(&t.payload).expect("sent a request we cannot decode");
        assert!(
            !r.change_ip && !r.change_port,
            "the mapping tests use no CHANGE-REQUEST"
        );
        if self.servers.contains(&t.destination) {
            return;
        }
        // Tests II and III go to the OTHER-ADDRESS a server named (II at the primary port).
        let named = first_responses(log).into_iter().any(|(_, r)| {
            r.result.is_ok_and(|s| {
                s.other_address.is_some_and(|o| {
                    o == t.destination
                        || (o.ip() == t.destination.ip()
                            && self.servers.iter().any(|s| s.port() == t.destination.port()))
                })
            })
        });
        assert!(named, "sent to {}, which no server named", t.destination);
    }

    fn check_result(&mut self, result: &Result<Vec<MappedSocketAddr>, TechniqueError>, log: &Log, _finished: bool) {
        let mapped: Vec<SocketAddr> = first_responses(log)
            .into_iter()
            .filter_map(|(_, r)| r.result.ok().map(|s| s.mapped))
            .collect();
        let (verdict, seen, evidence) = self.probe.verdict();
        assert!(
            seen.iter().all(|m| mapped.contains(m)),
            "verdict saw {seen:?}, servers said {mapped:?}"
        );
        assert!(!evidence.is_empty());
        if verdict != Behaviour::Unknown {
            assert!(!mapped.is_empty(), "{verdict} from no answer");
        }
        match result {
            Ok(eps) if eps.is_empty() => {}
            Ok(eps) => {
                check_endpoints(eps, &mapped, false);
                assert!(eps.iter().all(|e| e.nat_restricted));
            }
            Err(e) => panic!("the mapping probe failed: {e}"),
        }
    }
}

struct FilteringTarget {
    probe: FilteringTest,
    table: Vec<SocketAddr>,
    primary: SocketAddr,
}

impl Target for FilteringTarget {
    type Exchange = FilteringTest;

    fn exchange(&mut self) -> &mut FilteringTest {
        &mut self.probe
    }

    fn addresses(&self) -> &[SocketAddr] {
        &self.table
    }

    fn patch(&self, request: &[u8], template: &[u8]) -> Vec<u8> {
        patch(request, template)
    }

    fn answer(&self, request: &[u8], a: &Answer) -> Option<Vec<u8>> {
        answer(request, a)
    }

    fn check_transmit(&mut self, t: &Transmit, _log: &Log) {
        assert_eq!(t.destination, self.primary, "every filtering test goes to the primary");
        decode_request(&t.payload).expect("sent a request we cannot decode");
    }

    fn check_result(&mut self, result: &Result<Vec<MappedSocketAddr>, TechniqueError>, log: &Log, _finished: bool) {
        let sent = sent_requests(log);
        let firsts = first_responses(log);
        let p = self.primary;
        let answered = |want: (bool, bool), from_ok: &dyn Fn(SocketAddr) -> bool| {
            firsts.iter().any(|(from, r)| {
                let &(_, ci, cp) = &sent[&r.txid];
                (ci, cp) == want && r.result.is_ok() && from_ok(*from)
            })
        };
        let (verdict, evidence) = self.probe.verdict();
        assert!(!evidence.is_empty());
        match verdict {
            Behaviour::EndpointIndependent => assert!(
                answered((true, true), &|f| f.ip() != p.ip() && f.port() != p.port()),
                "endpoint-independent without an answer from the other address and port"
            ),
            Behaviour::AddressDependent => assert!(
                answered((false, true), &|f| f.ip() == p.ip() && f.port() != p.port()),
                "address-dependent without an answer from the other port"
            ),
            Behaviour::AddressAndPortDependent => assert!(
                answered((false, false), &|_| true),
                "address-and-port-dependent without test I's answer"
            ),
            Behaviour::Unknown => {}
        }
        match result {
            Ok(eps) if eps.is_empty() => {}
            Ok(eps) => {
                let mapped: Vec<SocketAddr> = firsts
                    .iter()
                    .filter(|(_, r)| sent[&r.txid] == (p, false, false))
                    .filter_map(|(_, r)| r.result.as_ref().ok().map(|s| s.mapped))
                    .collect();
                check_endpoints(eps, &mapped, true);
                assert!(eps.len() == 1 && eps[0].nat_restricted);
            }
            Err(e) => panic!("the filtering probe failed: {e}"),
        }
    }
}

/// Seeds for `stun_exchange` and `stun_behaviour` (the same scripts fit both).
fn exchange_scripts(header: Script) -> Vec<(String, Vec<u8>)> {
    // Table indexes: 0-3 servers, 4 = 203.0.113.11:3479 (other), 5 = a stranger,
    // 6/7 = mapped addresses, 8 = local.
    let template = encode_success(
        [0; 12],
        addr("198.51.100.1:4000"),
        Some(addr("203.0.113.11:3479")),
        None,
    )
    .unwrap();
    let h = || header.clone();
    vec![
        (
            "old-server".into(),
            h().transmit()
                .advance(20)
                .answer(0, 0, 6, None, None, None)
                .result()
                .build(),
        ),
        (
            "rfc5780-open".into(),
            h().transmit()
                .advance(10)
                .answer(0, 0, 6, Some(4), Some(0), None)
                .transmit()
                .advance(10)
                .answer(0, 4, 6, Some(4), Some(4), None)
                .answer(1, 4, 6, Some(4), Some(4), None)
                .answer(2, 4, 7, Some(4), Some(4), None)
                .advance(300)
                .result()
                .build(),
        ),
        (
            "rfc5780-other-port".into(),
            h().transmit()
                .advance(10)
                .answer(0, 0, 6, Some(4), Some(0), None)
                .transmit()
                .answer(0, 1, 6, Some(4), Some(1), None)
                .answer(1, 1, 6, Some(4), Some(1), None)
                .advance(2000)
                .transmit()
                .result()
                .build(),
        ),
        (
            "rfc5780-restricted".into(),
            h().transmit()
                .advance(10)
                .answer(0, 0, 6, Some(4), None, None)
                .transmit()
                .advance(100)
                .transmit()
                .timeout()
                .advance(2000)
                .result()
                .build(),
        ),
        (
            "patched-and-error".into(),
            h().transmit()
                .patched(0, 0, &template)
                .answer(0, 1, 0, None, None, Some(120))
                .raw_datagram(5, b"garbage")
                .advance(0x8000 | 60)
                .result()
                .build(),
        ),
        (
            "timeouts".into(),
            h().transmit()
                .advance(500)
                .transmit()
                .advance(1000)
                .transmit()
                .advance(0x8000 | 40)
                .transmit()
                .result()
                .finish()
                .build(),
        ),
    ]
}

/// Seeds for `stun_exchange`.
pub fn exchange_seeds() -> Vec<(String, Vec<u8>)> {
    let mut out = exchange_scripts(Script::new().u8(0b0001).u16(500));
    out.extend(
        exchange_scripts(Script::new().u8(0b0101).u16(100))
            .into_iter()
            .map(|(n, b)| (format!("two-servers-{n}"), b)),
    );
    out
}

/// Seeds for `stun_behaviour`.
pub fn behaviour_seeds() -> Vec<(String, Vec<u8>)> {
    let mut out: Vec<(String, Vec<u8>)> = exchange_scripts(Script::new().u8(0b0001).u16(500))
        .into_iter()
        .map(|(n, b)| (format!("mapping-{n}"), b))
        .collect();
    out.extend(
        exchange_scripts(Script::new().u8(0b0101).u16(100))
            .into_iter()
            .map(|(n, b)| (format!("mapping-two-{n}"), b)),
    );
    out.extend(
        exchange_scripts(Script::new().u8(0x20 | 0b0001).u16(500).u16(1000))
            .into_iter()
            .map(|(n, b)| (format!("filtering-{n}"), b)),
    );
    out
}
