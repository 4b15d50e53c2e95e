//! Connecting with fallback through the lab's TURN relay (coturn): `natt punch --udp --turn`
//! between hosts that no punch connects (symmetric x symmetric, carrier-grade NAT in front of
//! a symmetric NAT, a router that lets no UDP out), a pair that still goes direct with a relay
//! given, a connection that moves from the relay to a direct path without losing data, the
//! allocation deleted from coturn afterwards, relays that fail (wrong password, down) without
//! stopping the direct path, spoofed datagrams at the relayed address, and 10 % loss. A
//! symmetric x port-restricted pair with a relay on both sides still goes direct, by the
//! birthday method (`natt_punch::birthday`).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

mod common;

use std::io::Write;
use std::time::{Duration, Instant};

use common::punching::token_files;
use common::relaying::*;
use common::*;

#[test]
fn fallback_sym_sym_through_the_relay() {
    let Some(lab) = lab("fallback_sym_sym_through_the_relay", "tfss", "r1=sym r2=sym p1") else {
        return;
    };
    // Only h1 has a relay: h2 reaches it with plain UDP.
    let (a, b) = session(&lab, "h1", Relay::Udp, "h2", Relay::None, &[]);
    assert_talked(&a, &b, ("h1", "h2"), "udp");
    assert_relayed(&a, &b);
    assert_released(&lab);
    // Both with a relay.
    let (a, b) = session(&lab, "h1", Relay::Udp, "h2", Relay::Udp, &[]);
    assert_talked(&a, &b, ("h1", "h2"), "udp");
    assert_eq!(path(&a), "relay");
    assert_eq!(path(&b), "relay");
}

#[test]
fn fallback_cgn_in_front_of_sym_sym() {
    let Some(lab) = lab(
        "fallback_cgn_in_front_of_sym_sym",
        "tfcg",
        "r1=prc,cgn,hosts=0 r2=sym,via=r1 r3=sym p1",
    ) else {
        return;
    };
    let (a, b) = session(&lab, "h2", Relay::Udp, "h3", Relay::None, &[]);
    assert_talked(&a, &b, ("h2", "h3"), "udp");
    assert_relayed(&a, &b);
    // The relay on the other side works as well.
    let (a, b) = session(&lab, "h2", Relay::None, "h3", Relay::Udp, &[]);
    assert_talked(&a, &b, ("h2", "h3"), "udp");
    assert_relayed(&a, &b);
}

#[test]
fn fallback_no_udp_out_reaches_the_relay_over_tcp() {
    let Some(lab) = lab(
        "fallback_no_udp_out_reaches_the_relay_over_tcp",
        "tfnu",
        "r1=prc r2=sym p1",
    ) else {
        return;
    };
    block_outbound_udp(&lab, "r1", true);
    let (a, b) = session(&lab, "h1", Relay::Tcp, "h2", Relay::None, &[]);
    assert_talked(&a, &b, ("h1", "h2"), "udp");
    assert_relayed(&a, &b);
    assert_released(&lab);
}

#[test]
fn fallback_a_pair_that_can_punch_goes_direct() {
    let Some(lab) = lab("fallback_a_pair_that_can_punch_goes_direct", "tfpd", "r1=prc r2=prc p1") else {
        return;
    };
    let (a, b) = session(&lab, "h1", Relay::Udp, "h2", Relay::Udp, &[]);
    assert_talked(&a, &b, ("h1", "h2"), "udp");
    assert_eq!(path(&a), "direct", "{a:#?}");
    assert_eq!(path(&b), "direct", "{b:#?}");
    assert_eq!(relay(&a), None);
    assert_eq!(a.peer().ip().to_string(), lab.get("R2_PUBLIC_IP").unwrap());
}

#[test]
fn fallback_symmetric_to_port_restricted_goes_direct_by_the_birthday_method() {
    let Some(lab) = lab(
        "fallback_symmetric_to_port_restricted_goes_direct_by_the_birthday_method",
        "tfbd",
        "r1=sym r2=prc p1",
    ) else {
        return;
    };
    // With a relay, the relayed path confirms first, and waits for the birthday method.
    // h1 (behind the symmetric NAT) started first, then h2 first; then a relay on the hard
    // side only, and on the easy side only.
    let runs = [
        (true, Relay::Udp, Relay::Udp),
        (false, Relay::Udp, Relay::Udp),
        (true, Relay::Udp, Relay::None),
        (true, Relay::None, Relay::Udp),
    ];
    for (h1_first, relay_h1, relay_h2) in runs {
        let (a, b) = if h1_first {
            session(&lab, "h1", relay_h1, "h2", relay_h2, &[])
        } else {
            let (b, a) = session(&lab, "h2", relay_h2, "h1", relay_h1, &[]);
            (a, b)
        };
        assert_talked(&a, &b, ("h1", "h2"), "udp");
        assert_eq!(path(&a), "direct", "h1 first: {h1_first}: {a:#?}");
        assert_eq!(path(&b), "direct", "h1 first: {h1_first}: {b:#?}");
        assert_eq!(relay(&b), None);
        assert_eq!(relay(&a), None);
        // Each sees the other at its public IP (the hard side at a port no server saw).
        assert_eq!(a.peer().ip().to_string(), lab.get("R2_PUBLIC_IP").unwrap());
        assert_eq!(b.peer().ip().to_string(), lab.get("R1_PUBLIC_IP").unwrap());
    }
}

#[test]
fn fallback_a_failed_relay_leaves_the_direct_path() {
    let Some(mut lab) = lab(
        "fallback_a_failed_relay_leaves_the_direct_path",
        "tffr",
        "r1=prc r2=prc p1",
    ) else {
        return;
    };
    // Wrong password: one line says so, and the pair connects directly.
    let (a, b) = session(
        &lab,
        "h1",
        Relay::Password("Xq7-not-the-lab-password"),
        "h2",
        Relay::None,
        &[],
    );
    assert_talked(&a, &b, ("h1", "h2"), "udp");
    assert_eq!(path(&a), "direct");
    let warned: Vec<&str> = a
        .stderr
        .lines()
        .filter(|l| l.contains("TURN relay gave no address"))
        .collect();
    assert_eq!(warned.len(), 1, "{}", a.stderr);
    assert!(!a.stderr.contains("Xq7"), "the password is never shown: {}", a.stderr);
    // A relay that is down (nothing there: silent), and a server that is not TURN (STUN only).
    for uri in ["turn:203.0.113.31:3478", "turn:203.0.113.10:3478"] {
        let (a, b) = session(&lab, "h1", Relay::Uri(uri), "h2", Relay::None, &[]);
        assert_talked(&a, &b, ("h1", "h2"), "udp");
        assert_eq!(path(&a), "direct");
        assert!(a.stderr.contains("TURN relay gave no address"), "{uri}: {}", a.stderr);
    }
    // The user's quota reached (486): p1 holds the one allocation allowed.
    lab.restart_turn(&["--user-quota", "1"]).unwrap();
    let (holder, stdin, held) = hold_turn(&lab, "p1", "quota-holder", &[]);
    assert!(held.to_string().contains("\"turn\""), "p1 holds no allocation: {held}");
    let (a, b) = session(&lab, "h1", Relay::Udp, "h2", Relay::None, &[]);
    drop(stdin);
    holder.finish();
    assert_talked(&a, &b, ("h1", "h2"), "udp");
    assert_eq!(path(&a), "direct");
    let warned: Vec<&str> = a
        .stderr
        .lines()
        .filter(|l| l.contains("TURN relay gave no address"))
        .collect();
    assert_eq!(warned.len(), 1, "{}", a.stderr);
    assert!(
        warned[0].contains("486") || warned[0].to_lowercase().contains("quota"),
        "{}",
        warned[0]
    );
}

#[test]
fn fallback_relayed_then_direct_loses_nothing() {
    let Some(lab) = lab("fallback_relayed_then_direct_loses_nothing", "tfrd", "r1=prc r2=prc p1") else {
        return;
    };
    // The direct path is closed at first (r2 drops all UDP to and from r1).
    let r1_wan = lab.get("R1_PUBLIC_IP").unwrap();
    block_between(&lab, "r2", &r1_wan, true);
    let (ta, tb) = token_files(&lab, "move");
    let mut a = start_relayed(&lab, "h1", &ta, &tb, Relay::Udp, &["--timeout", "20", "--linger", "2"]);
    let mut b = start_relayed(&lab, "h2", &tb, &ta, Relay::None, &["--timeout", "20", "--linger", "2"]);
    let ja: serde_json::Value = serde_json::from_str(&a.wait_line("{", Duration::from_secs(30))).unwrap();
    let jb: serde_json::Value = serde_json::from_str(&b.wait_line("{", Duration::from_secs(30))).unwrap();
    assert_eq!(
        (ja["path"].as_str(), jb["path"].as_str()),
        (Some("relay"), Some("relay"))
    );
    // h2 sends numbered lines all along, while the direct path opens.
    let mut to_a = b.child.stdin.take().unwrap();
    let mut to_b = a.child.stdin.take().unwrap();
    let count = 150;
    for i in 0..count {
        if i == 30 {
            block_between(&lab, "r2", &r1_wan, false);
        }
        writeln!(to_a, "line {i}").unwrap();
        writeln!(to_b, "back {i}").unwrap();
        std::thread::sleep(Duration::from_millis(20));
    }
    drop((to_a, to_b));
    let (ea, eb) = (a.read_stderr(), b.read_stderr());
    let (la, lb) = (a.finish(), b.finish());
    assert!(ea.contains("moved to the direct path"), "h1 stayed relayed:\n{ea}");
    assert!(eb.contains("moved to the direct path"), "h2 stayed relayed:\n{eb}");
    for i in 0..count {
        assert!(la.contains(&format!("line {i}")), "h1 lost line {i}: {la:?}");
        assert!(lb.contains(&format!("back {i}")), "h2 lost line {i}: {lb:?}");
    }
}

#[test]
fn fallback_spoofed_datagrams_at_the_relayed_address() {
    let Some(lab) = lab(
        "fallback_spoofed_datagrams_at_the_relayed_address",
        "tfsp",
        "r1=sym r2=sym p1",
    ) else {
        return;
    };
    // p1, a third host, sends datagrams to h1's relayed address forged to come from h2's
    // public IP (which the relay lets in): garbage and random punch-shaped messages, while the
    // two connect. They neither complete nor break the connection.
    let (ta, tb) = token_files(&lab, "spoof");
    let t0 = Instant::now();
    let a = start_relayed(&lab, "h1", &ta, &tb, Relay::Udp, &["--timeout", "15"]);
    let relayed = relayed_in_token(&ta, t0);
    let forged = format!("{}:40000", lab.get("R2_PUBLIC_IP").unwrap());
    let spoofer = lab
        .spawn_probe(
            "p1",
            &[
                "spoof",
                "--from",
                &forged,
                "--to",
                &relayed,
                "--count",
                "400",
                "--interval-ms",
                "5",
            ],
        )
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let b = start_relayed(&lab, "h2", &tb, &ta, Relay::None, &["--timeout", "15"]);
    let (a, b) = common::punching::finish(a, b, ("h1", "h2"), t0);
    let spoofed = spoofer.wait_with_output().unwrap();
    println!("{}", String::from_utf8_lossy(&spoofed.stdout));
    assert_talked(&a, &b, ("h1", "h2"), "udp");
    assert_relayed(&a, &b);
    // Only the peer's lines came through.
    assert!(a.lines.iter().skip(1).all(|l| l == "hello from h2"), "{:?}", a.lines);
}

#[test]
fn fallback_sym_sym_with_10_percent_loss() {
    let Some(lab) = lab(
        "fallback_sym_sym_with_10_percent_loss",
        "tfls",
        "r1=sym,loss=10 r2=sym,loss=10 p1",
    ) else {
        return;
    };
    let (a, b) = session(&lab, "h1", Relay::Udp, "h2", Relay::None, &["--timeout", "20"]);
    assert_talked(&a, &b, ("h1", "h2"), "udp");
    assert_relayed(&a, &b);
}
