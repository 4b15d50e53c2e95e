//! Client and servers of the simple protocol on loopback, over UDP and TCP.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::sync::Arc;
use std::time::Duration;

use natt_core::{MappedTcpSocket, MappedUdpSocket, MappingContext};
use natt_simple::wire::{self, Message, Request, TransactionId};
use natt_simple::{SimpleTcpHolePunchServer, SimpleTechnique, SimpleUdpHolePunchServer};

fn context(servers: &[SocketAddr], timeout: Duration) -> MappingContext {
    let mc = MappingContext::empty().with_timeout(timeout);
    mc.add_technique(Arc::new(SimpleTechnique::with_servers(servers.iter().copied())));
    mc
}

fn simple_endpoints(outcomes: &[natt_core::TechniqueOutcome]) -> Vec<SocketAddr> {
    let o = outcomes.iter().find(|o| o.technique == "simple").unwrap();
    o.result.as_ref().unwrap().iter().map(|e| e.addr).collect()
}

#[test]
fn udp_mapping_through_server() {
    let server = SimpleUdpHolePunchServer::bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let mc = context(&[server.local_addr()], Duration::from_secs(5));
    let mapped = MappedUdpSocket::bind("127.0.0.1:0".parse().unwrap(), &mc).unwrap();
    assert_eq!(
        simple_endpoints(mapped.port_mappings.outcomes()),
        [mapped.socket.local_addr().unwrap()]
    );
}

#[test]
fn tcp_mapping_through_server() {
    let server = SimpleTcpHolePunchServer::bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let mc = context(&[server.local_addr()], Duration::from_secs(5));
    let mapped = MappedTcpSocket::bind("127.0.0.1:0".parse().unwrap(), &mc).unwrap();
    let local = mapped.socket.local_addr().unwrap().as_socket().unwrap();
    assert_eq!(simple_endpoints(mapped.port_mappings.outcomes()), [local]);
    assert_eq!(server.answered(), 1);
}

#[test]
fn one_silent_server_does_not_hide_the_other() {
    let server = SimpleUdpHolePunchServer::bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let silent = UdpSocket::bind("127.0.0.1:0").unwrap();
    let mc = context(
        &[silent.local_addr().unwrap(), server.local_addr()],
        Duration::from_secs(5),
    );
    let mapped = MappedUdpSocket::bind("127.0.0.1:0".parse().unwrap(), &mc).unwrap();
    assert_eq!(simple_endpoints(mapped.port_mappings.outcomes()).len(), 1);
}

#[test]
fn no_answer_is_a_timeout_not_a_failure_to_map() {
    let silent = UdpSocket::bind("127.0.0.1:0").unwrap();
    let mc = context(&[silent.local_addr().unwrap()], Duration::from_millis(300));
    let mapped = MappedUdpSocket::bind("127.0.0.1:0".parse().unwrap(), &mc).unwrap();
    let o = &mapped.port_mappings.outcomes()[0];
    assert!(matches!(o.result, Err(natt_core::TechniqueError::TimedOut(_))), "{o:?}");
    // The local endpoint is still known.
    assert_eq!(mapped.endpoints.len(), 1);
}

#[test]
fn udp_server_ignores_malformed_requests_and_keeps_serving() {
    let server = SimpleUdpHolePunchServer::bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let client = UdpSocket::bind("127.0.0.1:0").unwrap();
    client.set_read_timeout(Some(Duration::from_millis(300))).unwrap();
    let mut buf = [0u8; 64];
    for junk in [&b""[..], b"ECHO", &[0u8; 40], &[0xffu8; 1500]] {
        client.send_to(junk, server.local_addr()).unwrap();
    }
    let err = client.recv_from(&mut buf).unwrap_err();
    assert!(matches!(
        err.kind(),
        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
    ));
    let txid = TransactionId::random();
    client.send_to(&Request { txid }.encode(), server.local_addr()).unwrap();
    client.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let (n, _) = client.recv_from(&mut buf).unwrap();
    match wire::decode(&buf[..n]).unwrap() {
        Message::Reply(r) => {
            assert_eq!(r.txid, txid);
            assert_eq!(r.observed, client.local_addr().unwrap());
            assert!(n <= wire::REQUEST_LEN);
        }
        m => panic!("unexpected {m:?}"),
    }
    assert_eq!(server.answered(), 1);
}

#[test]
fn tcp_server_survives_garbage_and_silent_clients() {
    let server = SimpleTcpHolePunchServer::bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let mut garbage = TcpStream::connect(server.local_addr()).unwrap();
    garbage.write_all(b"GET / HTTP/1.1\r\n\r\n").unwrap();
    let _silent = TcpStream::connect(server.local_addr()).unwrap();
    garbage.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut rest = Vec::new();
    // The server closes the connection without a reply.
    assert_eq!(garbage.read_to_end(&mut rest).unwrap_or(0), 0);
    let mc = context(&[server.local_addr()], Duration::from_secs(5));
    let mapped = MappedTcpSocket::bind("127.0.0.1:0".parse().unwrap(), &mc).unwrap();
    assert!(mapped.port_mappings.outcomes()[0].result.is_ok());
}

#[test]
fn servers_release_their_ports_on_drop() {
    let udp = SimpleUdpHolePunchServer::bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let addr = udp.local_addr();
    drop(udp);
    UdpSocket::bind(addr).expect("UDP port free after drop");
    let tcp = SimpleTcpHolePunchServer::bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let addr = tcp.local_addr();
    drop(tcp);
    std::net::TcpListener::bind(addr).expect("TCP port free after drop");
}

#[test]
fn server_new_maps_itself_with_the_context() {
    let mc = MappingContext::empty();
    let server = SimpleUdpHolePunchServer::new(&mc).unwrap();
    assert!(
        server
            .addresses()
            .iter()
            .all(|a| a.addr.port() == server.local_addr().port())
    );
}
