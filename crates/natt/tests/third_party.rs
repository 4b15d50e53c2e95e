//! A technique from a crate of its own (`natt-example-echo`, written against `natt-core`
//! alone) plugs into the facade's context and shares the mapped socket with natt's own
//! techniques: each gets its own replies, none is stolen.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]
#![cfg(feature = "simple")]

use std::net::UdpSocket;
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use natt::{HolePunchServerAddr, MappedUdpSocket, MappingContext, SimpleUdpHolePunchServer};
use natt_example_echo::EchoTechnique;

#[test]
fn third_party_technique_shares_the_socket_with_simple() {
    let simple_server = SimpleUdpHolePunchServer::bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let echo_server = UdpSocket::bind("127.0.0.1:0").unwrap();
    let echo_addr = echo_server.local_addr().unwrap();
    thread::spawn(move || natt_example_echo::serve_one(&echo_server));

    let mc = MappingContext::new().unwrap().with_timeout(Duration::from_secs(5));
    mc.remove_technique("upnp");
    mc.add_technique(Arc::new(EchoTechnique::new(echo_addr)));
    mc.add_servers([HolePunchServerAddr::Simple(simple_server.local_addr())]);

    let mapped = MappedUdpSocket::bind("127.0.0.1:0".parse().unwrap(), &mc).unwrap();
    let local = mapped.socket.local_addr().unwrap();
    let outcome = |name: &str| {
        mapped
            .port_mappings
            .outcomes()
            .iter()
            .find(|o| o.technique == name)
            .unwrap_or_else(|| panic!("no outcome for {name}"))
    };
    let echo = outcome("echo").result.as_ref().expect("echo technique mapped");
    assert_eq!(echo[0].addr, local);
    assert_eq!(echo[0].technique, "echo");
    let simple = outcome("simple").result.as_ref().expect("simple technique mapped");
    assert_eq!(simple[0].addr, local);
    assert_eq!(
        simple_server.answered(),
        1,
        "one request, one answer: nothing retransmitted"
    );
    // The local endpoint comes first; the others have the same address and are merged into it.
    assert_eq!(mapped.endpoints[0].technique, "local");
    assert_eq!(mapped.endpoints.len(), 1);
}

#[test]
fn facade_registers_enabled_techniques() {
    let mc = MappingContext::new().unwrap();
    assert!(mc.technique_names().contains(&"simple".to_owned()));
}
