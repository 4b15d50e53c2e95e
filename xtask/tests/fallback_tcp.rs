//! Connecting over TCP with fallback through the lab's TURN relay (coturn, RFC 6062):
//! `natt punch --tcp --turn` between hosts that no TCP punch connects (symmetric x symmetric;
//! a router that lets no UDP out), with bytes both ways through the relay; a pair that can
//! punch still goes direct with a relay given; a relayed connection that moves to a direct
//! stream when one opens, without losing or reordering a byte; the allocations deleted from
//! coturn afterwards.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

mod common;

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::relaying::*;
use common::*;

/// A thread that collects the process's stderr as it comes.
fn collect_stderr(r: &mut Running) -> Arc<Mutex<String>> {
    let text = Arc::new(Mutex::new(String::new()));
    let mut stderr = r.child.stderr.take().unwrap();
    let sink = Arc::clone(&text);
    std::thread::spawn(move || {
        use std::io::Read;
        let mut buf = [0u8; 4096];
        while let Ok(n @ 1..) = stderr.read(&mut buf) {
            sink.lock().unwrap().push_str(&String::from_utf8_lossy(&buf[..n]));
        }
    });
    text
}

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
fn fallback_tcp_relayed_then_direct_loses_nothing() {
    let Some(lab) = lab(
        "fallback_tcp_relayed_then_direct_loses_nothing",
        "ttrd",
        "r1=prc r2=prc p1",
    ) else {
        return;
    };
    // The direct path is closed at first (r2 drops all TCP to and from r1), so the pair
    // connects through h1's relay; then it opens while both send numbered lines.
    let r1_wan = lab.get("R1_PUBLIC_IP").unwrap();
    block_proto_between(&lab, "r2", &r1_wan, "tcp", true);
    let dir = lab.state_dir().join("move");
    std::fs::create_dir_all(&dir).unwrap();
    let (ta, tb) = (dir.join("a.tok"), dir.join("b.tok"));
    let extra = ["--timeout", "20", "--linger", "2"];
    let mut a = start_relayed_over(&lab, "--tcp", "h1", &ta, &tb, Relay::Udp, &extra);
    let mut b = start_relayed_over(&lab, "--tcp", "h2", &tb, &ta, Relay::None, &extra);
    let ja: serde_json::Value = serde_json::from_str(&a.wait_line("{", Duration::from_secs(30))).unwrap();
    let jb: serde_json::Value = serde_json::from_str(&b.wait_line("{", Duration::from_secs(30))).unwrap();
    assert_eq!(
        (ja["path"].as_str(), jb["path"].as_str()),
        (Some("relay"), Some("relay")),
        "{ja} {jb}"
    );
    let (ea, eb) = (collect_stderr(&mut a), collect_stderr(&mut b));
    let moved = |e: &Arc<Mutex<String>>| e.lock().unwrap().contains("moved to the direct path");
    let mut to_a = b.child.stdin.take().unwrap();
    let mut to_b = a.child.stdin.take().unwrap();
    // Lines until both moved (the background punch runs for 10 s at a time), then 30 more.
    let t0 = Instant::now();
    let mut count = 0;
    let mut after_move = 0;
    while after_move < 30 {
        if count == 30 {
            block_proto_between(&lab, "r2", &r1_wan, "tcp", false);
        }
        writeln!(to_a, "line {count}").unwrap();
        writeln!(to_b, "back {count}").unwrap();
        count += 1;
        if moved(&ea) && moved(&eb) {
            after_move += 1;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(40),
            "no move to the direct path:\n{}\n{}",
            ea.lock().unwrap(),
            eb.lock().unwrap()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    drop((to_a, to_b));
    let (la, lb) = (a.finish(), b.finish());
    println!("{count} lines each way, moved after {:?}", t0.elapsed());
    for i in 0..count {
        assert_eq!(
            la.get(i + 1).map(String::as_str),
            Some(format!("line {i}").as_str()),
            "h1: {la:?}"
        );
        assert_eq!(
            lb.get(i + 1).map(String::as_str),
            Some(format!("back {i}").as_str()),
            "h2: {lb:?}"
        );
    }
    assert_eq!((la.len(), lb.len()), (count + 1, count + 1));
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
