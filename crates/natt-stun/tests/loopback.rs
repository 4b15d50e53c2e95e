//! natt-stun's client, behaviour discovery and server against each other on loopback (no NAT,
//! no lab): 127.0.0.1 and 127.0.0.2 make an RFC 5780 server with two addresses.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

use std::io::{ErrorKind, Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use natt_core::{MappedTcpSocket, MappedUdpSocket, MappingContext, TechniqueError, TechniqueOutcome};
use natt_stun::behaviour::{Behaviour, discover_tcp_mapping, discover_udp};
use natt_stun::message::{decode_request, decode_response, encode_binding_request, encode_error, encode_success};
use natt_stun::transaction::DEFAULT_RTO;
use natt_stun::{StunServer, StunTechnique};

const LOCALHOST: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);
const ALTERNATE: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));

/// An RFC 5780 server on 127.0.0.1 and 127.0.0.2, ports P and P+1. An ephemeral P may have
/// P+1 taken, so a few ports are tried.
fn rfc5780_server() -> StunServer {
    let mut last = None;
    for _ in 0..20 {
        match StunServer::bind(SocketAddr::new(LOCALHOST, 0), Some(ALTERNATE), None) {
            Ok(s) => return s,
            Err(e) => last = Some(e),
        }
    }
    panic!("no RFC 5780 server on loopback: {last:?}");
}

fn single_server() -> StunServer {
    StunServer::bind(SocketAddr::new(LOCALHOST, 0), None, None).unwrap()
}

fn context(servers: &[SocketAddr], timeout: Duration) -> MappingContext {
    let mc = MappingContext::empty().with_timeout(timeout);
    mc.add_technique(Arc::new(StunTechnique::with_servers(servers.iter().copied())));
    mc
}

fn stun_outcome(outcomes: &[TechniqueOutcome]) -> &TechniqueOutcome {
    outcomes.iter().find(|o| o.technique == "stun").unwrap()
}

fn deadline_in(ms: u64) -> Instant {
    Instant::now() + Duration::from_millis(ms)
}

#[test]
fn rfc5780_server_layout() {
    let server = rfc5780_server();
    assert!(server.rfc5780());
    let a = server.udp_addresses();
    assert_eq!(a.len(), 4);
    let p = a[0].port();
    assert_eq!(
        a,
        [
            SocketAddr::new(LOCALHOST, p),
            SocketAddr::new(LOCALHOST, p + 1),
            SocketAddr::new(ALTERNATE, p),
            SocketAddr::new(ALTERNATE, p + 1),
        ]
    );
}

#[test]
fn no_nat_is_endpoint_independent_over_udp_and_tcp() {
    let server = rfc5780_server();
    let primary = server.udp_addresses()[0];
    let t0 = Instant::now();
    let b = discover_udp(&[primary], LOCALHOST, DEFAULT_RTO, deadline_in(3000)).unwrap();
    println!("udp: {b:?} in {:?}", t0.elapsed());
    assert_eq!(b.mapping, Behaviour::EndpointIndependent, "{:?}", b.evidence);
    assert_eq!(b.filtering, Behaviour::EndpointIndependent, "{:?}", b.evidence);
    // Tests I-III saw the same address, on loopback.
    assert_eq!(b.mapped.len(), 3, "{:?}", b.evidence);
    assert!(b.mapped.iter().all(|m| m.ip() == LOCALHOST && m == &b.mapped[0]));
    // Both change requests were answered at once: no filtering window to sit out.
    assert!(t0.elapsed() < Duration::from_millis(900), "{:?}", t0.elapsed());

    let (tcp, seen) = discover_tcp_mapping(primary, LOCALHOST, deadline_in(3000)).unwrap();
    assert_eq!(tcp, Behaviour::EndpointIndependent, "{seen:?}");
    assert_eq!(seen.len(), 3);
    assert!(seen.iter().all(|m| m == &seen[0] && m.ip() == LOCALHOST));
}

#[test]
fn single_address_server_cannot_tell_filtering() {
    let server = single_server();
    let primary = server.udp_addresses()[0];
    let t0 = Instant::now();
    let b = discover_udp(&[primary], LOCALHOST, DEFAULT_RTO, deadline_in(3000)).unwrap();
    assert_eq!(b.filtering, Behaviour::Unknown, "{:?}", b.evidence);
    assert_eq!(b.mapping, Behaviour::Unknown, "{:?}", b.evidence);
    assert_eq!(b.mapped.len(), 1);
    assert!(t0.elapsed() < Duration::from_millis(900), "no window without RFC 5780");
    let (tcp, seen) = discover_tcp_mapping(primary, LOCALHOST, deadline_in(3000)).unwrap();
    assert_eq!((tcp, seen.len()), (Behaviour::Unknown, 1));
}

#[test]
fn single_address_server_refuses_change_request_with_420() {
    let server = single_server();
    let client = UdpSocket::bind("127.0.0.1:0").unwrap();
    client.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let request = encode_binding_request([7; 12], Some((true, true))).unwrap();
    client.send_to(&request, server.udp_addresses()[0]).unwrap();
    let mut buf = [0u8; 2048];
    let (n, from) = client.recv_from(&mut buf).unwrap();
    assert_eq!(from, server.udp_addresses()[0]);
    let response = decode_response(&buf[..n]).unwrap();
    assert_eq!(response.txid, [7; 12]);
    assert_eq!(response.result.unwrap_err().0, 420);
}

/// A server that names an OTHER-ADDRESS but refuses every CHANGE-REQUEST with 420.
struct Refusing {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<thread::JoinHandle<()>>,
}

impl Refusing {
    fn start() -> Refusing {
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        socket.set_read_timeout(Some(Duration::from_millis(20))).unwrap();
        let addr = socket.local_addr().unwrap();
        let other = SocketAddr::new(ALTERNATE, addr.port() + 1);
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let thread = thread::spawn(move || {
            let mut buf = [0u8; 2048];
            while !flag.load(Ordering::Relaxed) {
                let Ok((n, from)) = socket.recv_from(&mut buf) else {
                    continue;
                };
                let Ok(req) = decode_request(&buf[..n]) else {
                    continue;
                };
                let reply = if req.change_ip || req.change_port {
                    encode_error(req.txid, 420, "Unknown Attribute", &[0x0003]).unwrap()
                } else {
                    encode_success(req.txid, from, Some(other), Some(addr)).unwrap()
                };
                let _ = socket.send_to(&reply, from);
            }
        });
        Refusing {
            addr,
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for Refusing {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[test]
fn refused_change_requests_leave_filtering_unknown_without_waiting() {
    let server = Refusing::start();
    // Nothing answers at its OTHER-ADDRESS, so the mapping tests II and III run to the deadline.
    let b = discover_udp(&[server.addr], LOCALHOST, DEFAULT_RTO, deadline_in(600)).unwrap();
    assert_eq!(b.filtering, Behaviour::Unknown, "{:?}", b.evidence);
    assert!(b.evidence.iter().any(|e| e.contains("420")), "{:?}", b.evidence);
    assert_eq!(b.mapping, Behaviour::Unknown, "{:?}", b.evidence);
    // The mapping exchange's filtering check gets the 420 too: restricted, and no wait.
    let mc = context(&[server.addr], Duration::from_secs(3));
    let t0 = Instant::now();
    let mapped = MappedUdpSocket::bind("127.0.0.1:0".parse().unwrap(), &mc).unwrap();
    let o = stun_outcome(mapped.port_mappings.outcomes());
    assert_eq!(o.result.as_ref().unwrap().len(), 1, "{o:?}");
    assert!(t0.elapsed() < Duration::from_millis(900), "{:?}", t0.elapsed());
}

#[test]
fn stun_technique_maps_udp_and_tcp_through_the_server() {
    for server in [rfc5780_server(), single_server()] {
        let primary = server.udp_addresses()[0];
        let mc = context(&[primary], Duration::from_secs(3));
        let mapped = MappedUdpSocket::bind("127.0.0.1:0".parse().unwrap(), &mc).unwrap();
        let local = mapped.socket.local_addr().unwrap();
        let o = stun_outcome(mapped.port_mappings.outcomes());
        let eps = o.result.as_ref().unwrap();
        assert_eq!(eps.iter().map(|e| e.addr).collect::<Vec<_>>(), [local], "{o:?}");
        // Its own address: reachable by anyone.
        assert!(!eps[0].nat_restricted);
        assert!(o.elapsed < Duration::from_secs(1), "{o:?}");

        let before = server.answered();
        let mapped = MappedTcpSocket::bind("127.0.0.1:0".parse().unwrap(), &mc).unwrap();
        let local = mapped.socket.local_addr().unwrap().as_socket().unwrap();
        let o = stun_outcome(mapped.port_mappings.outcomes());
        let eps = o.result.as_ref().unwrap();
        assert_eq!(eps.iter().map(|e| e.addr).collect::<Vec<_>>(), [local], "{o:?}");
        assert_eq!(server.answered(), before + 1);
    }
}

#[test]
fn two_servers_both_answer() {
    let (a, b) = (single_server(), rfc5780_server());
    let servers = [a.udp_addresses()[0], b.udp_addresses()[0]];
    let mc = context(&servers, Duration::from_secs(3));
    let mapped = MappedUdpSocket::bind("127.0.0.1:0".parse().unwrap(), &mc).unwrap();
    let o = stun_outcome(mapped.port_mappings.outcomes());
    assert_eq!(o.result.as_ref().unwrap().len(), 1, "one address, seen by both: {o:?}");
    assert!(a.answered() >= 1 && b.answered() >= 1);
}

#[test]
fn silent_servers_time_out_within_the_deadline() {
    // UDP: a socket that reads nothing.
    let silent = UdpSocket::bind("127.0.0.1:0").unwrap();
    let timeout = Duration::from_millis(400);
    let mc = context(&[silent.local_addr().unwrap()], timeout);
    let t0 = Instant::now();
    let mapped = MappedUdpSocket::bind("127.0.0.1:0".parse().unwrap(), &mc).unwrap();
    let spent = t0.elapsed();
    let o = stun_outcome(mapped.port_mappings.outcomes());
    assert!(matches!(o.result, Err(TechniqueError::TimedOut(_))), "{o:?}");
    assert!(
        spent >= timeout && spent < timeout + Duration::from_millis(300),
        "{spent:?}"
    );
    assert_eq!(mapped.endpoints.len(), 1, "the local endpoint is still known");

    // TCP: a listener whose connections are accepted by the kernel but never answered.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let mc = context(&[listener.local_addr().unwrap()], timeout);
    let t0 = Instant::now();
    let mapped = MappedTcpSocket::bind("127.0.0.1:0".parse().unwrap(), &mc).unwrap();
    let spent = t0.elapsed();
    let o = stun_outcome(mapped.port_mappings.outcomes());
    assert!(matches!(o.result, Err(TechniqueError::TimedOut(_))), "{o:?}");
    assert!(spent < timeout + Duration::from_millis(300), "{spent:?}");

    // Behaviour discovery against silence: unknown, by the deadline.
    let t0 = Instant::now();
    let b = discover_udp(&[silent.local_addr().unwrap()], LOCALHOST, DEFAULT_RTO, t0 + timeout).unwrap();
    assert_eq!((b.mapping, b.filtering), (Behaviour::Unknown, Behaviour::Unknown));
    assert!(
        t0.elapsed() < timeout + Duration::from_millis(300),
        "{:?}",
        t0.elapsed()
    );
    let t0 = Instant::now();
    let r = discover_tcp_mapping(listener.local_addr().unwrap(), LOCALHOST, t0 + timeout);
    assert!(r.is_err(), "{r:?}");
    assert!(
        t0.elapsed() < timeout + Duration::from_millis(300),
        "{:?}",
        t0.elapsed()
    );
}

#[test]
fn garbage_gets_no_answer_and_the_server_keeps_serving() {
    let server = rfc5780_server();
    let primary = server.udp_addresses()[0];
    let client = UdpSocket::bind("127.0.0.1:0").unwrap();
    client.set_read_timeout(Some(Duration::from_millis(300))).unwrap();
    let request = encode_binding_request([1; 12], None).unwrap();
    let response = encode_success([1; 12], primary, None, None).unwrap();
    let mut long_length = request.clone();
    long_length[3] = 8; // says 8 bytes of attributes, has none
    let mut bad_attr = encode_binding_request([1; 12], Some((true, true))).unwrap();
    bad_attr[23] = 3; // CHANGE-REQUEST of 3 bytes
    let mut unknown_method = request.clone();
    unknown_method[1] = 0x02;
    let junk: Vec<Vec<u8>> = vec![
        Vec::new(),
        b"hello".to_vec(),
        vec![0; 20],
        vec![0xff; 1500],
        request[..19].to_vec(),
        long_length,
        bad_attr,
        unknown_method,
        response,
    ];
    for j in &junk {
        client.send_to(j, primary).unwrap();
    }
    let mut buf = [0u8; 2048];
    match client.recv_from(&mut buf) {
        Err(e) => assert!(matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut), "{e}"),
        Ok((n, from)) => panic!("{n} bytes from {from} answered garbage"),
    }
    assert_eq!(server.answered(), 0);
    // Still serving, UDP and TCP.
    client.send_to(&request, primary).unwrap();
    let (n, from) = client.recv_from(&mut buf).unwrap();
    assert_eq!(from, primary);
    let ok = decode_response(&buf[..n]).unwrap().result.unwrap();
    assert_eq!(ok.mapped, client.local_addr().unwrap());

    let mut garbage = TcpStream::connect(primary).unwrap();
    garbage.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    garbage.write_all(&[0xff; 64]).unwrap();
    let mut rest = Vec::new();
    let read = garbage.read_to_end(&mut rest);
    assert!(rest.is_empty(), "answered TCP garbage: {read:?} {rest:?}");
    let mut stream = TcpStream::connect(primary).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    // Two requests back to back on one connection, both answered in order.
    let second = encode_binding_request([2; 12], None).unwrap();
    stream
        .write_all(&[request.as_slice(), second.as_slice()].concat())
        .unwrap();
    for txid in [[1; 12], [2; 12]] {
        let bytes = natt_stun::client::read_stun_message(&mut stream).unwrap();
        let r = decode_response(&bytes).unwrap();
        assert_eq!(r.txid, txid);
        let ok = r.result.unwrap();
        assert_eq!(ok.mapped, stream.local_addr().unwrap());
        assert_eq!(
            ok.other_address,
            Some(server.udp_addresses()[3]),
            "TCP names the other address"
        );
    }
}

/// A TCP connection to `to` from source address `from` (any 127.0.0.0/8 address is this
/// host's on Linux loopback).
fn tcp_from(from: IpAddr, to: SocketAddr) -> TcpStream {
    let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    s.bind(&SocketAddr::new(from, 0).into()).unwrap();
    s.connect_timeout(&to.into(), Duration::from_secs(2)).unwrap();
    s.into()
}

/// Issue #18, finding 5: 80 clients from one address that dribble a request (a STUN header
/// announcing 500 bytes, then a byte per 100 ms) used to hold all 64 slots, so nobody else
/// got an answer. Now they hold at most MAX_TCP_CLIENTS_PER_SOURCE, another source is answered
/// at once, and the dribblers are cut off at TCP_DEADLINE.
#[test]
fn slow_clients_from_one_source_do_not_deny_tcp_to_others() {
    use natt_stun::server::{MAX_TCP_CLIENTS_PER_SOURCE, TCP_DEADLINE};
    let server = single_server();
    let addr = server.udp_addresses()[0];
    let t0 = Instant::now();
    let mut slow: Vec<TcpStream> = (0..80)
        .map(|_| {
            let mut s = tcp_from(LOCALHOST, addr);
            let mut head = encode_binding_request([9; 12], None).unwrap();
            head[2..4].copy_from_slice(&500u16.to_be_bytes());
            s.write_all(&head).unwrap();
            s
        })
        .collect();
    // Another source is answered at once.
    let asked = Instant::now();
    let mut other = tcp_from(ALTERNATE, addr);
    other.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    other
        .write_all(&encode_binding_request([5; 12], None).unwrap())
        .unwrap();
    let bytes = natt_stun::client::read_stun_message(&mut other).expect("an answer to another source");
    let ok = decode_response(&bytes).unwrap().result.unwrap();
    assert_eq!(ok.mapped, other.local_addr().unwrap());
    assert!(
        asked.elapsed() < Duration::from_millis(500),
        "answered after {:?}",
        asked.elapsed()
    );
    // The slow ones dribble; all but a few were refused, and those are cut at the deadline.
    let mut cut = Vec::new();
    while !slow.is_empty() && t0.elapsed() < TCP_DEADLINE * 2 {
        let before = slow.len();
        slow.retain_mut(|s| {
            s.set_nonblocking(true).unwrap();
            let closed = match s.read(&mut [0u8; 64]) {
                Ok(_) => true,
                Err(e) => e.kind() != ErrorKind::WouldBlock,
            };
            !closed && s.write_all(&[0]).is_ok()
        });
        cut.extend(std::iter::repeat_n(t0.elapsed(), before - slow.len()));
        thread::sleep(Duration::from_millis(100));
    }
    assert!(
        slow.is_empty(),
        "{} slow clients still served after {:?}",
        slow.len(),
        t0.elapsed()
    );
    let late: Vec<_> = cut.iter().filter(|t| **t > Duration::from_secs(1)).collect();
    assert_eq!(
        late.len(),
        MAX_TCP_CLIENTS_PER_SOURCE,
        "held until the deadline: {cut:?}"
    );
    for t in late {
        assert!(
            *t >= TCP_DEADLINE && *t < TCP_DEADLINE + Duration::from_secs(1),
            "cut at {t:?}"
        );
    }
}

#[test]
fn an_address_a_server_holds_is_refused_to_another_and_every_thread_answers() {
    let server = single_server();
    let addr = server.udp_addresses()[0];
    // Its sockets share their port among themselves (SO_REUSEPORT), not with another server.
    match StunServer::bind(addr, None, None) {
        Err(natt_stun::server::ServerError::Bind { source, .. }) => assert_eq!(source.kind(), ErrorKind::AddrInUse),
        other => panic!("a second server on {addr}: {other:?}"),
    }
    // Clients from many ports (spread over the server's sockets) are all answered.
    for i in 0..32u8 {
        let c = UdpSocket::bind("127.0.0.1:0").unwrap();
        c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        c.send_to(&encode_binding_request([i; 12], None).unwrap(), addr)
            .unwrap();
        let mut buf = [0u8; 256];
        let (n, _) = c.recv_from(&mut buf).unwrap();
        let r = decode_response(&buf[..n]).unwrap();
        assert_eq!(r.txid, [i; 12]);
        assert_eq!(r.result.unwrap().mapped, c.local_addr().unwrap());
    }
}
