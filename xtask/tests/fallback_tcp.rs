//! Connecting over TCP with fallback through the lab's TURN relay (coturn, RFC 6062):
//! `natt punch --tcp --turn` between hosts that no TCP punch connects (symmetric x symmetric;
//! a router that lets no UDP out), with bytes both ways through the relay; a pair that can
//! punch still goes direct with a relay given; the allocations deleted from coturn afterwards.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

mod common;

use common::relaying::*;
use common::*;

#[test]
fn fallback_tcp_sym_sym_through_the_relay() {
    let Some(lab) = lab("fallback_tcp_sym_sym_through_the_relay", "ttss", "r1=sym r2=sym p1") else {
        return;
    };
    // Only h1 has a relay: h2 connects to its relayed address with plain TCP.
    let (a, b) = session_over(&lab, "--tcp", "h1", Relay::Udp, "h2", Relay::None, &[]);
    assert_talked(&a, &b, ("h1", "h2"), "tcp");
    assert_relayed(&a, &b);
    assert_released(&lab);
    // Both with a relay.
    let (a, b) = session_over(&lab, "--tcp", "h1", Relay::Udp, "h2", Relay::Udp, &[]);
    assert_talked(&a, &b, ("h1", "h2"), "tcp");
    assert_eq!(path(&a), "relay", "{a:#?}");
    assert_eq!(path(&b), "relay", "{b:#?}");
    assert_released(&lab);
}

#[test]
fn fallback_tcp_a_pair_that_can_punch_goes_direct() {
    let Some(lab) = lab(
        "fallback_tcp_a_pair_that_can_punch_goes_direct",
        "ttpd",
        "r1=prc r2=prc p1",
    ) else {
        return;
    };
    let (a, b) = session_over(&lab, "--tcp", "h1", Relay::Udp, "h2", Relay::Udp, &[]);
    assert_talked(&a, &b, ("h1", "h2"), "tcp");
    assert_eq!(path(&a), "direct", "{a:#?}");
    assert_eq!(path(&b), "direct", "{b:#?}");
    assert_eq!(relay(&a), None);
    assert_eq!(a.peer().ip().to_string(), lab.get("R2_PUBLIC_IP").unwrap());
    assert_released(&lab);
}

#[test]
fn fallback_tcp_no_udp_out_reaches_the_relay_over_tcp() {
    let Some(lab) = lab(
        "fallback_tcp_no_udp_out_reaches_the_relay_over_tcp",
        "ttnu",
        "r1=sym r2=sym p1",
    ) else {
        return;
    };
    block_outbound_udp(&lab, "r1", true);
    let (a, b) = session_over(&lab, "--tcp", "h1", Relay::Tcp, "h2", Relay::None, &[]);
    assert_talked(&a, &b, ("h1", "h2"), "tcp");
    assert_relayed(&a, &b);
    assert_released(&lab);
}

#[test]
fn fallback_tcp_a_failed_relay_leaves_the_direct_path() {
    let Some(lab) = lab(
        "fallback_tcp_a_failed_relay_leaves_the_direct_path",
        "ttfr",
        "r1=prc r2=prc p1",
    ) else {
        return;
    };
    let (a, b) = session_over(
        &lab,
        "--tcp",
        "h1",
        Relay::Password("not-the-password"),
        "h2",
        Relay::None,
        &[],
    );
    assert_talked(&a, &b, ("h1", "h2"), "tcp");
    assert_eq!(path(&a), "direct", "{a:#?}");
    assert_eq!(path(&b), "direct", "{b:#?}");
    let warnings: Vec<&str> = a
        .stderr
        .lines()
        .filter(|l| l.starts_with("natt: warning: the TURN relay gave no address"))
        .collect();
    assert_eq!(warnings.len(), 1, "{}", a.stderr);
}

#[test]
fn fallback_tcp_cgn_in_front_of_sym_sym() {
    let Some(lab) = lab(
        "fallback_tcp_cgn_in_front_of_sym_sym",
        "ttcg",
        "r1=prc,cgn,hosts=0 r2=sym,via=r1 r3=sym p1",
    ) else {
        return;
    };
    // The relay behind the CGN, then on the other side.
    let (a, b) = session_over(&lab, "--tcp", "h2", Relay::Udp, "h3", Relay::None, &[]);
    assert_talked(&a, &b, ("h2", "h3"), "tcp");
    assert_relayed(&a, &b);
    let (a, b) = session_over(&lab, "--tcp", "h2", Relay::None, "h3", Relay::Udp, &[]);
    assert_talked(&a, &b, ("h2", "h3"), "tcp");
    assert_relayed(&a, &b);
    assert_released(&lab);
}

#[test]
fn fallback_tcp_sym_sym_with_10_percent_loss() {
    let Some(lab) = lab(
        "fallback_tcp_sym_sym_with_10_percent_loss",
        "ttls",
        "r1=sym,loss=10 r2=sym,loss=10 p1",
    ) else {
        return;
    };
    let (a, b) = session_over(&lab, "--tcp", "h1", Relay::Udp, "h2", Relay::None, &["--timeout", "20"]);
    assert_talked(&a, &b, ("h1", "h2"), "tcp");
    assert_relayed(&a, &b);
}
