//! natt's fuzz targets, as plain functions: each `fuzz_targets/NAME.rs` calls one with
//! libFuzzer's input, `tests/corpus.rs` replays the corpora through them without libFuzzer,
//! and `examples/seeds.rs` writes their seed corpora. See README.md.

pub mod exchange;
pub mod input;
#[cfg(feature = "pcp")]
pub mod pcp;
pub mod punch;
pub mod records;
pub mod simple;
pub mod stun;
pub mod token;
pub mod turn;
pub mod upnp;

use std::net::{IpAddr, Ipv6Addr, SocketAddr};

/// A fuzz target: its name (the binary's and the corpus directory's), its function and its
/// seeds (file name, bytes).
pub struct Target {
    /// The name.
    pub name: &'static str,
    /// Runs one input.
    pub run: fn(&[u8]),
    /// The seed inputs.
    pub seeds: fn() -> Vec<(String, Vec<u8>)>,
}

/// Every target.
pub const TARGETS: &[Target] = &[
    Target {
        name: "simple_wire",
        run: simple::wire_target,
        seeds: simple::wire_seeds,
    },
    Target {
        name: "simple_exchange",
        run: simple::exchange_target,
        seeds: simple::exchange_seeds,
    },
    Target {
        name: "stun_message",
        run: stun::message_target,
        seeds: stun::message_seeds,
    },
    Target {
        name: "turn_messages",
        run: turn::target,
        seeds: turn::seeds,
    },
    Target {
        name: "stun_exchange",
        run: stun::exchange_target,
        seeds: stun::exchange_seeds,
    },
    Target {
        name: "stun_behaviour",
        run: stun::behaviour_target,
        seeds: stun::behaviour_seeds,
    },
    Target {
        name: "punch_messages",
        run: punch::target,
        seeds: punch::seeds,
    },
    Target {
        name: "relay_records",
        run: records::target,
        seeds: records::seeds,
    },
    Target {
        name: "token",
        run: token::target,
        seeds: token::seeds,
    },
    Target {
        name: "upnp_description",
        run: upnp::target,
        seeds: upnp::seeds,
    },
    Target {
        name: "ssdp_answer",
        run: upnp::ssdp_target,
        seeds: upnp::ssdp_seeds,
    },
    Target {
        name: "upnp_soap",
        run: upnp::soap_target,
        seeds: upnp::soap_seeds,
    },
    Target {
        name: "upnp_http",
        run: upnp::http_target,
        seeds: upnp::http_seeds,
    },
    #[cfg(feature = "pcp")]
    Target {
        name: "pcp_wire",
        run: pcp::target,
        seeds: pcp::seeds,
    },
    #[cfg(feature = "pcp")]
    Target {
        name: "pcp_client",
        run: pcp::client_target,
        seeds: pcp::client_seeds,
    },
];

/// A socket address from text (the targets' fixed addresses).
pub fn addr(s: &str) -> SocketAddr {
    s.parse().expect("a fixed address")
}

/// An IPv6 address from its eight groups.
pub fn v6(g: [u16; 8]) -> IpAddr {
    IpAddr::V6(Ipv6Addr::new(g[0], g[1], g[2], g[3], g[4], g[5], g[6], g[7]))
}
