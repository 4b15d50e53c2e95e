//! The [`Relay`] handle over loopback, against a small TURN server of the test's own, used the
//! way a connection that falls back to the relay uses it: allocated from the connection's
//! socket, one thread reading the socket and handing each datagram to the relay
//! (demultiplexing relayed data from direct traffic, whatever its first bytes), another adding
//! the peer and sending; released at the end with a Refresh of lifetime 0.
//!
//! Sends datagrams on 127.0.0.1 only: run inside `unshare --net` with loopback up, as every
//! networked test of natt.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use natt_turn::allocation::Config;
use natt_turn::channel_data;
use natt_turn::message::methods::{REFRESH, SEND};
use natt_turn::message::{self, decode_request, encode_data_indication};
use natt_turn::{Input, Relay, TurnCredentials};

mod common;

/// What the test server saw.
#[derive(Default)]
struct Seen {
    methods: Vec<&'static str>,
    deleted: bool,
}

/// A TURN server answering on `socket`: 401 to an unsigned request, success to a signed one
/// (a relayed address, lifetime 0 to a deletion), and as the peer `peer` it echoes what is
/// relayed to it: ChannelData back on the same channel, a Send indication as a Data indication.
fn serve(socket: UdpSocket, peer: SocketAddr, seen: Arc<Mutex<Seen>>, stop: Arc<AtomicBool>) {
    let auth = common::auth();
    socket.set_read_timeout(Some(Duration::from_millis(20))).unwrap();
    let mut buf = [0u8; 2048];
    while !stop.load(Ordering::Relaxed) {
        let Ok((n, from)) = socket.recv_from(&mut buf) else {
            continue;
        };
        let d = &buf[..n];
        let answer = match channel_data::classify(d) {
            channel_data::Kind::ChannelData => {
                let (ch, payload) = channel_data::decode(d).unwrap();
                Some(channel_data::encode(ch, payload, false).unwrap())
            }
            _ => match decode_request(d, Some(&auth)) {
                // A Send indication (class Indication) decodes here too: echo its data.
                Ok((m, _, None)) if m == SEND => Some(encode_data_indication([7; 12], peer, b"sent").unwrap()),
                Ok((m, txid, signed)) => {
                    if signed == Some(true) {
                        let mut seen = seen.lock().unwrap();
                        seen.methods.push(message::method_name(m));
                        seen.deleted |= m == REFRESH;
                    }
                    common::answer(&auth, m, txid, signed, from)
                }
                _ => None,
            },
        };
        if let Some(a) = answer {
            socket.send_to(&a, from).unwrap();
        }
    }
}

#[test]
fn relayed_and_direct_traffic_share_one_socket() {
    let server_socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    let server = server_socket.local_addr().unwrap();
    let peer: SocketAddr = "127.0.0.1:40001".parse().unwrap();
    let seen = Arc::new(Mutex::new(Seen::default()));
    let stop = Arc::new(AtomicBool::new(false));
    let server_thread = {
        let (seen, stop) = (Arc::clone(&seen), Arc::clone(&stop));
        thread::spawn(move || serve(server_socket, peer, seen, stop))
    };

    // The connection's socket: the allocation is made from it.
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    let creds = TurnCredentials::new("natt", "secret");
    let relay = Arc::new(Relay::allocate_udp(&socket, server, creds, Config::default(), deadline).unwrap());
    assert_eq!(relay.relayed_addr(), "127.0.0.1:40000".parse().unwrap());
    assert_eq!(relay.mapped_addr(), Some(socket.local_addr().unwrap()));

    // The connection's reader: every datagram goes to the relay first.
    let (tx, rx) = mpsc::channel();
    let reading = Arc::new(AtomicBool::new(true));
    let reader = {
        let (relay, reading, socket) = (Arc::clone(&relay), Arc::clone(&reading), socket.try_clone().unwrap());
        socket.set_read_timeout(Some(Duration::from_millis(20))).unwrap();
        thread::spawn(move || {
            let mut buf = [0u8; 2048];
            while reading.load(Ordering::Relaxed) {
                if let Ok((n, from)) = socket.recv_from(&mut buf) {
                    match relay.handle_datagram(from, &buf[..n]) {
                        Input::Data { peer, payload } => tx.send(("relay", peer, payload)).unwrap(),
                        Input::NotFromServer => tx.send(("direct", from, buf[..n].to_vec())).unwrap(),
                        Input::Control | Input::Ignored => {}
                    }
                }
            }
        })
    };

    // Adding the peer waits for the server's answers, which the reader hands over.
    relay.add_peer(peer, Instant::now() + Duration::from_secs(5)).unwrap();
    assert_eq!(
        seen.lock().unwrap().methods,
        ["Allocate", "CreatePermission", "ChannelBind"]
    );
    relay.send_to(b"through the relay", peer).unwrap();
    let got = rx.recv_timeout(Duration::from_secs(5)).unwrap();
    assert_eq!(got, ("relay", peer, b"through the relay".to_vec()));

    // A direct datagram whose first bytes look like ChannelData (a punch message starts with
    // "NATP", 0x4e41, a valid channel number) is not the relay's: it comes from elsewhere.
    let direct = UdpSocket::bind("127.0.0.1:0").unwrap();
    let mut punch_like = b"NATP".to_vec();
    punch_like.resize(64, 0);
    direct.send_to(&punch_like, socket.local_addr().unwrap()).unwrap();
    let got = rx.recv_timeout(Duration::from_secs(5)).unwrap();
    assert_eq!(got, ("direct", direct.local_addr().unwrap(), punch_like));
    assert!(!relay.is_relay_traffic(direct.local_addr().unwrap(), b"NATP"));

    // Released: a Refresh with lifetime 0, answered.
    reading.store(false, Ordering::Relaxed);
    reader.join().unwrap();
    let mut relay = Arc::try_unwrap(relay).unwrap();
    assert!(relay.release());
    assert!(seen.lock().unwrap().deleted);
    assert!(!relay.is_allocated());
    stop.store(true, Ordering::Relaxed);
    server_thread.join().unwrap();
}

#[test]
fn a_silent_server_ends_allocation_at_the_deadline() {
    // A socket that never answers.
    let silent = UdpSocket::bind("127.0.0.1:0").unwrap();
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    let start = Instant::now();
    let deadline = start + Duration::from_millis(300);
    let creds = TurnCredentials::new("natt", "secret");
    let e = Relay::allocate_udp(
        &socket,
        silent.local_addr().unwrap(),
        creds,
        Config::default(),
        deadline,
    )
    .unwrap_err();
    assert!(
        matches!(e, natt_turn::TurnError::Silent { what: "Allocate", .. }),
        "{e}"
    );
    assert!(e.to_string().ends_with("did not answer Allocate in time"), "{e}");
}
