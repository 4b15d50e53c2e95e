//! The `turn` technique mapping a TCP socket: an RFC 6062 TCP allocation on a control
//! connection to the server (over TCP even when the URI says UDP), its relayed address one
//! `turn` endpoint (`nat_restricted`), held as a lease that deletes the allocation when
//! dropped. Against a small TURN server of the test's own on loopback.
//!
//! Run inside `unshare --net` with loopback up, as every networked test of natt.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

use std::io::Write;
use std::net::{SocketAddr, TcpListener};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use natt_core::turn::{TurnCredentials, TurnTransport};
use natt_core::{HolePunchServerAddr, MappingTechnique};
use natt_turn::message::{self, decode_request};
use natt_turn::relay::read_frame;
use natt_turn::{NAME, TurnTechnique};

mod common;

/// Answers one control connection: 401 to unsigned requests, success to signed ones (a
/// relayed address; lifetime 0 to a deletion). The signed methods it saw.
fn serve(listener: TcpListener, seen: Arc<Mutex<Vec<&'static str>>>) {
    let auth = common::auth();
    let Ok((mut stream, from)) = listener.accept() else {
        return;
    };
    stream.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    while let Ok(frame) = read_frame(&mut stream) {
        let Ok((m, txid, signed)) = decode_request(&frame, Some(&auth)) else {
            continue;
        };
        if signed == Some(true) {
            seen.lock().unwrap().push(message::method_name(m));
        }
        let Some(answer) = common::answer(&auth, m, txid, signed, from) else {
            continue;
        };
        if stream.write_all(&answer).is_err() {
            return;
        }
    }
}

#[test]
fn a_tcp_socket_gets_a_tcp_allocation_held_as_a_lease() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let server = listener.local_addr().unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let serving = {
        let seen = Arc::clone(&seen);
        thread::spawn(move || serve(listener, seen))
    };
    let technique = TurnTechnique::new();
    assert!(technique.add_server(&HolePunchServerAddr::Turn {
        addr: server,
        // A UDP URI: a TCP allocation still goes over TCP.
        transport: TurnTransport::Udp,
        credentials: TurnCredentials::new("natt", "secret"),
    }));
    let local: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let mapping = technique
        .map_tcp(local, Instant::now() + Duration::from_secs(5))
        .unwrap();
    assert_eq!(mapping.endpoints.len(), 1);
    let endpoint = &mapping.endpoints[0];
    assert_eq!(endpoint.addr, "127.0.0.1:40000".parse::<SocketAddr>().unwrap());
    assert_eq!(endpoint.technique, NAME);
    assert!(endpoint.nat_restricted);
    assert_eq!(*seen.lock().unwrap(), ["Allocate"]);
    // Dropping the lease deletes the allocation (a Refresh with lifetime 0), waiting for it.
    drop(mapping.lease.unwrap());
    assert_eq!(*seen.lock().unwrap(), ["Allocate", "Refresh"]);
    serving.join().unwrap();
}
