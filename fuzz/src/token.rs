//! Rendezvous tokens (`token`): what a user pastes, and what `to_token` writes.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use natt_core::MappedSocketAddr;
use natt_core::rendezvous::{
    MAX_TECHNIQUE_NAME, MAX_TOKEN_ENDPOINTS, MAX_TOKEN_LEN, PubRendezvousInfo, Secret, TOKEN_PREFIX,
};

use crate::addr;
use crate::input::{Input, Script};

/// `token`: a first byte of `0xFF` makes the rest a description of rendezvous info to encode
/// and read back; anything else is a token, read as text (lossy UTF-8).
pub fn target(data: &[u8]) {
    match data.split_first() {
        Some((0xFF, rest)) => encode_side(rest),
        _ => parse_side(data),
    }
}

fn parse_side(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let Ok(info) = PubRendezvousInfo::from_token(&text) else {
        return;
    };
    assert!(info.endpoints.len() <= MAX_TOKEN_ENDPOINTS);
    for e in &info.endpoints {
        assert!(e.technique.len() <= MAX_TECHNIQUE_NAME && e.technique.bytes().all(|b| b.is_ascii_graphic()));
    }
    let again = info.to_token();
    assert_eq!(PubRendezvousInfo::from_token(&again).as_ref(), Ok(&info), "{again}");
    // One token per info: what parses is exactly what `to_token` writes (no second spelling
    // of the same info that a check on the text would miss).
    assert_eq!(again, text.trim(), "two spellings of one token");
}

fn encode_side(data: &[u8]) {
    let mut input = Input::new(data);
    let secret = Secret(input.array());
    let mut endpoints = Vec::new();
    while !input.is_empty() {
        let flags = input.u8().unwrap_or(0);
        let ip = if flags & 1 == 0 {
            IpAddr::V4(Ipv4Addr::from(input.array::<4>()))
        } else {
            IpAddr::V6(Ipv6Addr::from(input.array::<16>()))
        };
        let port = u16::from_be_bytes(input.array());
        let name = String::from_utf8_lossy(input.chunk()).into_owned();
        endpoints.push(MappedSocketAddr::new(SocketAddr::new(ip, port), flags & 2 != 0, name));
    }
    // The secret's first bit says whether the mapping varies (the token's facts byte).
    let mapping_varies = secret.0[0] & 1 == 1;
    let info = PubRendezvousInfo {
        endpoints,
        secret,
        mapping_varies,
    };
    let token = info.to_token();
    assert!(token.len() <= MAX_TOKEN_LEN, "a token of {} characters", token.len());
    assert!(token.starts_with(TOKEN_PREFIX));
    let back = PubRendezvousInfo::from_token(&token).expect("to_token wrote a token from_token refuses");
    // Endpoints beyond the limit are left out, names keep their first printable ASCII bytes.
    let expected: Vec<MappedSocketAddr> = info
        .endpoints
        .iter()
        .take(MAX_TOKEN_ENDPOINTS)
        .map(|e| {
            let name: String = e
                .technique
                .chars()
                .filter(|c| c.is_ascii_graphic())
                .take(MAX_TECHNIQUE_NAME)
                .collect();
            MappedSocketAddr::new(e.addr, e.nat_restricted, name)
        })
        .collect();
    assert_eq!(back.secret, info.secret);
    assert_eq!(back.endpoints, expected);
    assert_eq!(back.mapping_varies, info.mapping_varies);
}

/// Seeds for `token`.
pub fn seeds() -> Vec<(String, Vec<u8>)> {
    let eps = vec![
        MappedSocketAddr::new(addr("192.168.1.2:4000"), false, "local"),
        MappedSocketAddr::new(addr("203.0.113.101:4000"), true, "stun"),
        MappedSocketAddr::new(addr("[2001:db8::1]:9"), false, "upnp"),
    ];
    let info = PubRendezvousInfo {
        endpoints: eps.clone(),
        secret: Secret([0x42; 16]),
        mapping_varies: false,
    };
    let symmetric = PubRendezvousInfo {
        endpoints: vec![
            MappedSocketAddr::new(addr("192.168.1.2:4000"), false, "local"),
            MappedSocketAddr::new(addr("203.0.113.101:40001"), true, "stun"),
            MappedSocketAddr::new(addr("203.0.113.101:51234"), true, "stun"),
        ],
        secret: Secret([0x43; 16]),
        mapping_varies: true,
    };
    let full = PubRendezvousInfo {
        endpoints: (0..MAX_TOKEN_ENDPOINTS)
            .map(|i| {
                MappedSocketAddr::new(
                    SocketAddr::new(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, i as u16).into(), 1000),
                    i % 2 == 0,
                    "x".repeat(MAX_TECHNIQUE_NAME),
                )
            })
            .collect(),
        secret: Secret([7; 16]),
        mapping_varies: false,
    };
    let empty = PubRendezvousInfo {
        endpoints: vec![],
        secret: Secret([0; 16]),
        mapping_varies: false,
    };
    let mut described = Script::new().u8(0xFF).raw(&[9; 16]);
    for e in &eps {
        let (flags, ip): (u8, Vec<u8>) = match e.addr.ip() {
            IpAddr::V4(v4) => (0, v4.octets().to_vec()),
            IpAddr::V6(v6) => (1, v6.octets().to_vec()),
        };
        described = described
            .u8(flags | u8::from(e.nat_restricted) << 1)
            .raw(&ip)
            .u16(e.addr.port())
            .chunk(e.technique.as_bytes());
    }
    vec![
        ("token".into(), info.to_token().into_bytes()),
        ("token-spaces".into(), format!("  {}\n", info.to_token()).into_bytes()),
        ("token-full".into(), full.to_token().into_bytes()),
        ("token-mapping-varies".into(), symmetric.to_token().into_bytes()),
        ("token-empty".into(), empty.to_token().into_bytes()),
        ("described".into(), described.build()),
        ("described-odd-names".into(), {
            Script::new()
                .u8(0xFF)
                .raw(&[1; 16])
                .u8(2)
                .raw(&[203, 0, 113, 1])
                .u16(1)
                .chunk("na me\u{e9}\u{1F600}with-a-name-longer-than-thirty-two-bytes".as_bytes())
                .build()
        }),
    ]
}
