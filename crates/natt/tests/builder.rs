//! The facade's context builder: techniques chosen, settings and servers given in one go, and
//! the port-mapping techniques sharing the context's arbiter.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

use std::time::Duration;

use natt::{HolePunchServerAddr, MappingContext};

#[test]
fn a_context_is_built_as_described() {
    let mc = MappingContext::builder()
        .timeout(Duration::from_millis(1234))
        .server(HolePunchServerAddr::Stun("203.0.113.10:3478".parse().unwrap()))
        .no_pcp()
        .build()
        .unwrap();
    assert_eq!(mc.timeout(), Duration::from_millis(1234));
    let names = mc.technique_names();
    #[cfg(all(feature = "simple", feature = "stun", feature = "upnp", not(feature = "turn")))]
    assert_eq!(names, ["simple", "stun", "upnp"]);
    #[cfg(all(feature = "simple", feature = "stun", feature = "upnp", feature = "turn"))]
    assert_eq!(names, ["simple", "stun", "upnp", "turn"]);
    assert!(!names.contains(&"pcp".to_string()));
    #[cfg(feature = "upnp")]
    assert!(mc.upnp().is_some());
    #[cfg(feature = "upnp")]
    assert!(MappingContext::builder().no_upnp().build().unwrap().upnp().is_none());
}

#[test]
fn a_server_no_technique_takes_is_an_error() {
    let e = MappingContext::builder()
        .no_simple()
        .server(HolePunchServerAddr::Simple("203.0.113.20:5483".parse().unwrap()))
        .build()
        .unwrap_err();
    assert!(matches!(e, natt::Error::Config(_)), "{e}");
    assert!(e.to_string().contains("203.0.113.20:5483"), "{e}");
}

#[test]
fn a_bad_upnp_gateway_url_is_an_error() {
    let e = MappingContext::builder().upnp_gateway("not a url").build().unwrap_err();
    assert!(e.to_string().contains("UPnP gateway"), "{e}");
}

#[cfg(feature = "turn")]
#[test]
fn a_turn_server_is_taken_by_the_turn_technique_and_its_password_never_shown() {
    let server = HolePunchServerAddr::parse_turn(
        "turn:203.0.113.30?transport=tcp",
        natt::TurnCredentials::new("natt", "hunter2"),
    )
    .unwrap();
    assert!(!format!("{server:?}").contains("hunter2"));
    let mc = MappingContext::builder().server(server.clone()).build().unwrap();
    assert!(mc.technique_names().contains(&"turn".to_string()));
    let e = MappingContext::builder().no_turn().server(server).build().unwrap_err();
    assert!(!e.to_string().contains("hunter2"), "{e}");
}
