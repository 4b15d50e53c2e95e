//! PCP (RFC 6887) and NAT-PMP (RFC 6886) messages (`pcp_wire`): what a gateway, or anyone on
//! the LAN, sends back to our requests.

use natt_pcp::{natpmp_wire, pcp_wire};

/// `pcp_wire`: every decoder of both protocols on the same bytes; what decodes must encode
/// and decode again to the same message.
pub fn target(data: &[u8]) {
    if let Ok(r) = pcp_wire::decode_response(data) {
        assert_eq!(pcp_wire::decode_response(&pcp_wire::encode_response(&r)), Ok(r.clone()));
        assert!(data.len() <= pcp_wire::MAX_LEN);
    }
    if let Ok(r) = pcp_wire::decode_request(data) {
        assert_eq!(pcp_wire::decode_request(&pcp_wire::encode_request(&r)), Ok(r.clone()));
    }
    if let Ok(r) = natpmp_wire::decode_response(data) {
        assert_eq!(natpmp_wire::decode_response(&natpmp_wire::encode_response(&r)), Ok(r));
    }
    if let Ok(r) = natpmp_wire::decode_request(data) {
        assert_eq!(natpmp_wire::decode_request(&natpmp_wire::encode_request(&r)), Ok(r));
    }
}

/// Seeds for `pcp_wire`.
pub fn seeds() -> Vec<(String, Vec<u8>)> {
    use crate::addr;
    let map = pcp_wire::MapData {
        nonce: [5; 12],
        protocol: pcp_wire::PROTO_UDP,
        internal_port: 4000,
        external: addr("203.0.113.7:40000"),
    };
    let pcp_req = pcp_wire::Request {
        version: pcp_wire::VERSION,
        opcode: pcp_wire::OPCODE_MAP,
        lifetime: 7200,
        client: "192.168.1.2".parse().unwrap(),
        map: Some(map),
    };
    let pcp_resp = pcp_wire::Response {
        version: pcp_wire::VERSION,
        opcode: pcp_wire::OPCODE_MAP,
        result: pcp_wire::ResultCode::SUCCESS,
        lifetime: 7200,
        epoch: 12345,
        map: Some(pcp_wire::MapData {
            external: addr("[2001:db8::7]:40000"),
            ..map
        }),
    };
    let announce = pcp_wire::Response {
        version: pcp_wire::VERSION,
        opcode: pcp_wire::OPCODE_ANNOUNCE,
        result: pcp_wire::ResultCode::SUCCESS,
        lifetime: 0,
        epoch: 1,
        map: None,
    };
    let pmp_map = natpmp_wire::Response {
        opcode: natpmp_wire::OP_MAP_UDP,
        result: natpmp_wire::ResultCode::SUCCESS,
        epoch: 99,
        body: natpmp_wire::Body::Map {
            internal_port: 4000,
            external_port: 40000,
            lifetime: 3600,
        },
    };
    let pmp_ext = natpmp_wire::Response {
        opcode: natpmp_wire::OP_EXTERNAL_ADDRESS,
        result: natpmp_wire::ResultCode::SUCCESS,
        epoch: 99,
        body: natpmp_wire::Body::ExternalAddress("203.0.113.7".parse().unwrap()),
    };
    let pmp_err = natpmp_wire::Response {
        opcode: natpmp_wire::OP_MAP_TCP,
        result: natpmp_wire::ResultCode::NETWORK_FAILURE,
        epoch: 5,
        body: natpmp_wire::Body::None,
    };
    vec![
        ("pcp-map-request".into(), pcp_wire::encode_request(&pcp_req)),
        ("pcp-map-response".into(), pcp_wire::encode_response(&pcp_resp)),
        ("pcp-announce".into(), pcp_wire::encode_response(&announce)),
        ("natpmp-map".into(), natpmp_wire::encode_response(&pmp_map)),
        ("natpmp-external".into(), natpmp_wire::encode_response(&pmp_ext)),
        ("natpmp-error".into(), natpmp_wire::encode_response(&pmp_err)),
        (
            "natpmp-request".into(),
            natpmp_wire::encode_request(&natpmp_wire::Request::Map(natpmp_wire::MapRequest {
                opcode: natpmp_wire::OP_MAP_TCP,
                internal_port: 22,
                suggested_external_port: 2222,
                lifetime: 0,
            })),
        ),
    ]
}

/// The gateway, and other addresses datagrams come from.
const GATEWAY: &str = "192.168.1.1:5351";
const FROM: [&str; 4] = [GATEWAY, "192.168.1.1:5350", "192.168.1.254:5351", "[fe80::1]:5351"];

/// `pcp_client` operations.
mod op {
    pub const ADVANCE: u8 = 0;
    pub const TRANSMIT: u8 = 1;
    pub const RAW: u8 = 2;
    /// A well-formed answer to the last request, with fuzzed fields.
    pub const ANSWER: u8 = 3;
    /// A chunk with the last PCP request's nonce, protocol and port copied in.
    pub const PATCHED: u8 = 4;
    pub const RESULT: u8 = 5;
    pub const TIMEOUT: u8 = 6;
    /// An epoch for the epoch tracker.
    pub const EPOCH: u8 = 7;
    pub const COUNT: u8 = 8;
}

/// `pcp_client`: a header byte picks the transaction (bits 0–1: map, delete, announce; bit 2:
/// NAT-PMP first; bit 3: fallback; bit 4: TCP; bit 5: NAT-PMP external address known); then a
/// script of [`op`]s, through natt-core's [`natt_core::UdpExchange`] as the receive loop drives
/// it (its `poll_result` and `poll_transmit` act on the script's clock). The transaction sends
/// only to its gateway, ignores whatever is not from it, sends nothing more once it has a
/// result, and only ever grants a usable mapping.
pub fn client_target(data: &[u8]) {
    use natt_core::{Protocol, UdpExchange};
    use natt_pcp::epoch::{EpochTracker, Verdict};
    use natt_pcp::retransmit::Jitter;
    use natt_pcp::transaction::{MAX_LIFETIME, MapSpec, Outcome, Transaction, Version};

    use crate::addr;
    use crate::input::{Clock, Input};

    let mut input = Input::new(data);
    let h = input.u8().unwrap_or(0);
    let clock = &mut Clock::start();
    let gateway = addr(GATEWAY);
    let table: Vec<std::net::SocketAddr> = FROM.iter().map(|s| addr(s)).collect();
    let version = if h & 4 == 0 { Version::Pcp } else { Version::NatPmp };
    let protocol = if h & 16 == 0 { Protocol::Udp } else { Protocol::Tcp };
    let spec = MapSpec::new(protocol, "192.168.1.2".parse().unwrap(), 40000, 7200, [0x11; 12]);
    let now = clock.now;
    let jitter = Jitter::Fixed(0.05);
    let mut tx = match h & 3 {
        0 | 3 => Transaction::map(gateway, spec.clone(), version, h & 8 != 0, now, jitter),
        1 => Transaction::delete(gateway, spec.clone(), version, now, jitter),
        _ => Transaction::announce(gateway, spec.client, version, h & 8 != 0, now, jitter),
    };
    if h & 32 != 0 {
        tx = tx.with_known_external("203.0.113.7".parse().unwrap(), now);
    }
    let mut tracker = EpochTracker::new(version);
    let mut last_epoch: Option<(u32, std::time::Instant)> = None;
    let mut last_request: Option<Vec<u8>> = None;
    let mut done = false;
    while let Some(code) = input.u8() {
        match code % op::COUNT {
            op::ADVANCE => clock.advance(input.u16().unwrap_or(0)),
            op::TRANSMIT => {
                let mut n = 0;
                while let Some(t) = tx.poll_transmit(clock.now) {
                    n += 1;
                    assert_eq!(t.destination, gateway, "sent elsewhere than to the gateway");
                    let p = t.payload;
                    assert!(
                        n <= crate::exchange::MAX_DRAIN,
                        "poll_transmit never says None at one instant"
                    );
                    assert!(!done, "sent after the result");
                    match tx.version() {
                        Version::Pcp => {
                            let r = pcp_wire::decode_request(&p).expect("sent a PCP request we cannot decode");
                            assert_eq!(pcp_wire::encode_request(&r), p);
                        }
                        Version::NatPmp => {
                            let r = natpmp_wire::decode_request(&p).expect("sent a NAT-PMP request we cannot decode");
                            assert_eq!(natpmp_wire::encode_request(&r), p);
                        }
                    }
                    last_request = Some(p);
                }
            }
            op::RAW | op::ANSWER | op::PATCHED => {
                let from = input.addr(&table);
                let bytes = match code % op::COUNT {
                    op::RAW => Some(input.chunk().to_vec()),
                    op::ANSWER => last_request.as_deref().and_then(|r| answer(r, &mut input)),
                    _ => {
                        let template = input.chunk();
                        last_request.as_deref().map(|r| patch(r, template))
                    }
                };
                let Some(bytes) = bytes else { continue };
                let accepted = tx.handle_datagram(clock.now, from, &bytes);
                assert!(!accepted || from == gateway, "accepted a datagram from {from}");
                assert!(!accepted || !done, "accepted a datagram after the result");
            }
            op::RESULT => {
                if let Some(r) = tx.poll_result(clock.now) {
                    assert!(!done, "two results");
                    done = true;
                    if let Ok(Outcome::Mapped(g)) = r {
                        assert!((1..=MAX_LIFETIME).contains(&g.lifetime), "{g:?}");
                        assert!(!g.external.ip().is_unspecified() && g.external.port() != 0, "{g:?}");
                        assert_eq!(g.version, tx.version());
                    }
                    assert!(tx.poll_timeout().is_none(), "a timeout after the result");
                }
            }
            op::TIMEOUT => {
                let _ = tx.poll_timeout();
                assert!(tx.finish().is_err(), "a result from the deadline");
            }
            _ => {
                let raw = input.array::<4>();
                let consistent = input.u8().unwrap_or(0) & 1 != 0;
                let epoch = match (consistent, last_epoch) {
                    (true, Some((prev, then))) => prev.checked_add(
                        u32::try_from(clock.now.saturating_duration_since(then).as_secs()).unwrap_or(u32::MAX),
                    ),
                    _ => Some(u32::from_be_bytes(raw)),
                };
                let Some(epoch) = epoch else { continue };
                let v = tracker.observe(clock.now, epoch);
                if consistent && last_epoch.is_some() {
                    assert_eq!(v, Verdict::Valid, "an epoch that advanced with our clock");
                }
                last_epoch = Some((epoch, clock.now));
            }
        }
    }
}

/// A well-formed answer to `request` (ours), its fields from `input`.
fn answer(request: &[u8], input: &mut crate::input::Input<'_>) -> Option<Vec<u8>> {
    let table: Vec<std::net::SocketAddr> = FROM.iter().map(|s| crate::addr(s)).collect();
    let result = input.u16().unwrap_or(0);
    let lifetime = u32::from_be_bytes(input.array());
    let epoch = u32::from_be_bytes(input.array());
    let flags = input.u8().unwrap_or(0);
    let external = input.addr(&table);
    if let Ok(r) = pcp_wire::decode_request(request) {
        let map = r.map.map(|m| pcp_wire::MapData {
            external,
            internal_port: if flags & 1 != 0 {
                external.port()
            } else {
                m.internal_port
            },
            ..m
        });
        return Some(pcp_wire::encode_response(&pcp_wire::Response {
            version: if flags & 2 != 0 { flags >> 2 } else { pcp_wire::VERSION },
            opcode: r.opcode,
            result: pcp_wire::ResultCode(result as u8),
            lifetime,
            epoch,
            map,
        }));
    }
    let r = natpmp_wire::decode_request(request).ok()?;
    let (opcode, body) = match r {
        natpmp_wire::Request::ExternalAddress => {
            let ip = match external.ip() {
                std::net::IpAddr::V4(v4) => v4,
                std::net::IpAddr::V6(_) => std::net::Ipv4Addr::UNSPECIFIED,
            };
            (natpmp_wire::OP_EXTERNAL_ADDRESS, natpmp_wire::Body::ExternalAddress(ip))
        }
        natpmp_wire::Request::Map(m) => (
            m.opcode,
            natpmp_wire::Body::Map {
                internal_port: if flags & 1 != 0 {
                    external.port()
                } else {
                    m.internal_port
                },
                external_port: external.port(),
                lifetime,
            },
        ),
    };
    Some(natpmp_wire::encode_response(&natpmp_wire::Response {
        opcode,
        result: natpmp_wire::ResultCode(result),
        epoch,
        body: if flags & 2 != 0 { natpmp_wire::Body::None } else { body },
    }))
}

/// `template` with the PCP request's MAP fields (nonce, protocol, internal port) copied in.
fn patch(request: &[u8], template: &[u8]) -> Vec<u8> {
    let mut b = template.to_vec();
    if let (Some(src), true) = (request.get(24..42), b.len() >= 42) {
        b[24..42].copy_from_slice(src);
    }
    b
}

/// Seeds for `pcp_client`.
pub fn client_seeds() -> Vec<(String, Vec<u8>)> {
    use crate::input::Script;
    // answer: op, from, result u16, lifetime u32, epoch u32, flags, external (inline v4: 0xFE).
    let answer = |s: Script, result: u16, lifetime: u32, flags: u8, ext: [u8; 4], port: u16| {
        s.u8(op::ANSWER)
            .u8(0)
            .u16(result)
            .raw(&lifetime.to_be_bytes())
            .raw(&1000u32.to_be_bytes())
            .u8(flags)
            .u8(0xFE)
            .raw(&ext)
            .u16(port)
    };
    let tx = |h: u8| Script::new().u8(h).u8(op::TRANSMIT);
    let ext = [203, 0, 113, 7];
    vec![
        (
            "pcp-map".into(),
            answer(tx(0), 0, 3600, 0, ext, 40000).u8(op::RESULT).build(),
        ),
        (
            "pcp-unsupported-then-natpmp".into(),
            answer(
                answer(
                    answer(tx(8), 1, 0, 0, ext, 40000)
                        .u8(op::TRANSMIT)
                        .u8(op::ADVANCE)
                        .u16(300)
                        .u8(op::TRANSMIT),
                    0,
                    0,
                    0,
                    ext,
                    0,
                )
                .u8(op::TRANSMIT),
                0,
                7200,
                0,
                ext,
                40001,
            )
            .u8(op::RESULT)
            .build(),
        ),
        (
            "natpmp-known-external-tcp".into(),
            answer(tx(4 | 16 | 32), 0, 100_000, 0, ext, 2222).u8(op::RESULT).build(),
        ),
        (
            "pcp-delete-refused".into(),
            answer(tx(1), 8, 0, 0, ext, 40000).u8(op::RESULT).build(),
        ),
        (
            "announce-and-epochs".into(),
            answer(tx(2 | 8), 0, 0, 0, ext, 0)
                .u8(op::RESULT)
                .u8(op::EPOCH)
                .raw(&[0, 0, 1, 0])
                .u8(0)
                .u8(op::ADVANCE)
                .u16(0x8000 | 100)
                .u8(op::EPOCH)
                .raw(&[0; 4])
                .u8(1)
                .u8(op::EPOCH)
                .raw(&[0; 4])
                .u8(0)
                .build(),
        ),
        (
            "retransmits-and-garbage".into(),
            tx(0)
                .u8(op::ADVANCE)
                .u16(0x8000 | 3)
                .u8(op::TRANSMIT)
                .u8(op::RAW)
                .u8(2)
                .chunk(&[2, 0x81, 0, 0])
                .u8(op::PATCHED)
                .u8(0)
                .chunk(&[
                    2, 0x81, 0, 0, 0, 0, 0, 60, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
                    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 203, 0, 113, 7, 0, 0, 0, 0,
                ])
                .u8(op::TIMEOUT)
                .u8(op::RESULT)
                .build(),
        ),
    ]
}
