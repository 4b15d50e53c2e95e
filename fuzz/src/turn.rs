//! TURN (`turn_messages`): ChannelData framing, the decoding of a server's messages, and the
//! client core ([`natt_turn::Allocation`]) fed a server's answers, data and time.
//!
//! The first byte picks what is fuzzed: 0, ChannelData (`decode`, `encode` round trips,
//! stream framing); 1, `message::decode` and `relay::read_frame` of the rest; anything else, an
//! allocation (over UDP for even bytes, TCP for odd) driven by a script of steps: `0 T` moves
//! the clock (see [`Clock::advance`]), `1 CHUNK` feeds a datagram from the server whose
//! transaction id (when it is long enough to hold one) is patched to the last request's, so the
//! fuzzer reaches the states after a 401; `2 CHUNK` feeds it unpatched; `3` adds the peer
//! (and, on a TCP relay, which every fourth mode byte makes, connects to it and binds a
//! connection a peer made, checking `CHUNK` as the bind's answer);
//! `4 CHUNK` sends data to the peer; `5` deletes the allocation.

use std::time::Instant;

use natt_core::turn::{TurnCredentials, TurnTransport};
use natt_turn::allocation::{Allocation, Config};
use natt_turn::channel_data;
use natt_turn::message::{self, Success, encode_response};
use rand::SeedableRng;
use rand::rngs::StdRng;
use natt_turn::message::methods::{ALLOCATE, CHANNEL_BIND, CREATE_PERMISSION, REFRESH};

use crate::addr;
use crate::input::{Clock, Input, Script};

fn server() -> std::net::SocketAddr {
    addr("203.0.113.30:3478")
}

fn peer() -> std::net::SocketAddr {
    addr("198.51.100.11:3480")
}

/// `turn_messages`.
pub fn target(data: &[u8]) {
    let mut input = Input::new(data);
    match input.u8() {
        None => {}
        Some(0) => channel_data_target(input.rest()),
        Some(1) => {
            let rest = input.rest();
            let _ = message::decode(rest);
            let _ = natt_turn::relay::read_frame(&mut &rest[..]);
        }
        Some(mode) => allocation_target(mode, &mut input),
    }
}

fn channel_data_target(bytes: &[u8]) {
    let _ = channel_data::stream_frame_len(bytes);
    if let Ok((channel, payload)) = channel_data::decode(bytes) {
        for pad in [false, true] {
            let again = channel_data::encode(channel, payload, pad).expect("a decoded payload encodes");
            assert_eq!(channel_data::decode(&again), Ok((channel, payload)));
            if pad {
                assert_eq!(again.len() % 4, 0);
                assert_eq!(channel_data::stream_frame_len(&again), Ok(again.len()));
            }
        }
    }
}

fn allocation_target(mode: u8, input: &mut Input<'_>) {
    let transport = if mode % 2 == 0 {
        TurnTransport::Udp
    } else {
        TurnTransport::Tcp
    };
    let mut clock = Clock::start();
    let mut a = Allocation::new(
        server(),
        transport,
        TurnCredentials::new("natt", "secret"),
        Config::default(),
        clock.now,
        StdRng::seed_from_u64(u64::from(mode)),
    );
    let mut last_txid = [0u8; 12];
    let mut steps = 0;
    while !input.is_empty() && steps < 256 {
        steps += 1;
        // What is due goes out (bounded: the core never has more than a few requests due).
        for _ in 0..64 {
            match a.poll_transmit(clock.now) {
                Some(t) => {
                    if let Ok((_, txid, _)) = message::decode_request(&t.payload, None) {
                        last_txid = txid;
                    }
                }
                None => break,
            }
        }
        if let Some(at) = a.poll_timeout() {
            assert!(at >= clock.now - std::time::Duration::from_secs(1) || !a.is_idle());
        }
        match input.u8().unwrap_or(0) % 6 {
            0 => clock.advance(input.u16().unwrap_or(0)),
            1 => {
                let mut d = input.chunk().to_vec();
                if let Some(txid) = d.get_mut(8..20) {
                    txid.copy_from_slice(&last_txid);
                }
                let _ = a.handle_datagram(clock.now, server(), &d);
            }
            2 => {
                let d = input.chunk();
                let _ = a.handle_datagram(clock.now, server(), d);
            }
            3 => {
                let _ = a.add_peer(peer(), clock.now);
                let _ = a.connect(peer(), clock.now);
                let _ = a.connect_result(peer());
                if let Some((_, id)) = a.take_connection_attempt()
                    && let Ok((txid, _)) = a.connection_bind(id)
                {
                    let _ = a.connection_bound(txid, input.chunk());
                }
            }
            4 => {
                let d = input.chunk();
                if let Ok(t) = a.send_to(peer(), d) {
                    assert_eq!(t.destination, server());
                }
            }
            _ => a.delete(clock.now),
        }
        while a.poll_event().is_some() {}
    }
    let _ = a.allocate_result();
    let _: Option<Instant> = a.poll_timeout();
}

/// Seeds for `turn_messages`.
pub fn seeds() -> Vec<(String, Vec<u8>)> {
    let resp = |method, result: Result<&Success, (u16, &str)>, realm_nonce| {
        encode_response([0; 12], method, result, realm_nonce, None).expect("a seed response")
    };
    let allocated = Success {
        relayed: Some(addr("203.0.113.30:50000")),
        mapped: Some(addr("203.0.113.101:40000")),
        lifetime: Some(std::time::Duration::from_secs(600)),
        connection_id: None,
    };
    let nothing = Success::default();
    let unauthorized = resp(ALLOCATE, Err((401, "Unauthorized")), Some(("natt.lab", "n1")));
    let stale = resp(ALLOCATE, Err((438, "Stale Nonce")), Some(("natt.lab", "n2")));
    let quota = resp(ALLOCATE, Err((486, "Allocation Quota Reached")), None);
    let ok = resp(ALLOCATE, Ok(&allocated), None);
    let permission = resp(CREATE_PERMISSION, Ok(&nothing), None);
    let bound = resp(CHANNEL_BIND, Ok(&nothing), None);
    let deleted = resp(
        REFRESH,
        Ok(&Success {
            lifetime: Some(std::time::Duration::ZERO),
            ..Success::default()
        }),
        None,
    );
    let data = message::encode_data_indication([3; 12], peer(), b"hello").expect("a seed indication");
    let cd = channel_data::encode(0x4000, b"hello", true).expect("seed ChannelData");
    let attempt = message::encode_connection_attempt([4; 12], peer(), 7).expect("a seed indication");
    let allocate = |udp: bool| {
        Script::new()
            .u8(if udp { 2 } else { 3 })
            .u8(1)
            .chunk(&unauthorized)
            .u8(1)
            .chunk(&ok)
    };
    vec![
        ("channel-data".into(), Script::new().u8(0).raw(&cd).build()),
        (
            "channel-data-odd".into(),
            Script::new()
                .u8(0)
                .raw(&channel_data::encode(0x4fff, b"abc", false).expect("seed"))
                .build(),
        ),
        ("data-indication".into(), Script::new().u8(1).raw(&data).build()),
        ("connection-attempt".into(), Script::new().u8(1).raw(&attempt).build()),
        ("allocate-401".into(), Script::new().u8(1).raw(&unauthorized).build()),
        ("allocated-udp".into(), allocate(true).build()),
        (
            "stale-then-quota".into(),
            Script::new()
                .u8(2)
                .u8(1)
                .chunk(&unauthorized)
                .u8(1)
                .chunk(&stale)
                .u8(1)
                .chunk(&quota)
                .build(),
        ),
        (
            "peer-data-delete".into(),
            allocate(false)
                .u8(3)
                .u8(1)
                .chunk(&bound)
                .u8(2)
                .chunk(&permission)
                .u8(4)
                .chunk(b"to the peer")
                .u8(2)
                .chunk(&data)
                .u8(2)
                .chunk(&cd)
                .u8(0)
                .u16(0x8000 | 300)
                .u8(5)
                .u8(1)
                .chunk(&deleted)
                .build(),
        ),
        (
            "silent".into(),
            Script::new()
                .u8(2)
                .u8(0)
                .u16(0x8000 | 40)
                .u8(0)
                .u16(0x8000 | 40)
                .build(),
        ),
    ]
}
