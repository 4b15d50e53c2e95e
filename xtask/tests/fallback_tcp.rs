//! Connecting over TCP with fallback through the lab's TURN relay (coturn, RFC 6062):
//! `natt punch --tcp --turn` between hosts that no TCP punch connects (symmetric x symmetric;
//! a router that lets no UDP out), with bytes both ways through the relay; a pair that can
//! punch still goes direct with a relay given; a relayed connection that moves to a direct
//! stream when one opens, without losing or reordering a byte; the allocations deleted from
//! coturn afterwards;
//! relays that fail (wrong password; down: silent, or stopped, also once an allocation was
//! made; a server that is not TURN) without stopping the direct path; TCP connections to the
//! relayed address from the peer's public IP (its router) and from a third host, writing
//! garbage and random punch-shaped frames, which neither complete nor break the connection.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

mod common;

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::punching::token_files;
use common::relaying::*;
use common::*;
use xtask::lab::daemons;

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
    let (ta, tb) = token_files(&lab, "move");
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
    assert_eq!(no_address_warnings(&a), 1, "{}", a.stderr);
    // A relay that is down (nothing there: silent), and a server that is not TURN (STUN only),
    // each as the URI gives it (TCP, for a TCP socket) and with ?transport=tcp: one line says
    // so, and the pair connects directly, the silent one given up at the mapping's deadline.
    // Silent for every try: inet knows a link address for 203.0.113.31 that nothing has (an
    // address inet found no one at would be answered "host unreachable" from then on).
    lab.run(
        "inet",
        &[
            "ip",
            "neigh",
            "replace",
            SILENT,
            "lladdr",
            "02:00:00:00:00:31",
            "dev",
            "br0",
            "nud",
            "permanent",
        ],
    )
    .unwrap();
    for server in [SILENT, "203.0.113.10"] {
        for transport in ["", "?transport=tcp"] {
            let uri = format!("turn:{server}:3478{transport}");
            let (a, b) = session_over(&lab, "--tcp", "h1", Relay::Uri(&uri), "h2", Relay::None, &[]);
            println!("{uri}: connected in {:?}: {}", a.took, a.stderr.trim());
            assert_talked(&a, &b, ("h1", "h2"), "tcp");
            assert_eq!(path(&a), "direct", "{uri}: {a:#?}");
            assert_eq!(path(&b), "direct", "{uri}: {b:#?}");
            assert_eq!(no_address_warnings(&a), 1, "{uri}: {}", a.stderr);
            assert!(a.took < RELAY_DOWN_WITHIN, "{uri}: took {:?}: {a:#?}", a.took);
        }
    }
    // The lab's relay stopped once h1 holds an allocation on it (its relayed address in its
    // token), before h2 starts: no warning, and the pair connects directly.
    let (ta, tb) = token_files(&lab, "stopped");
    let t0 = Instant::now();
    let a = start_relayed_over(&lab, "--tcp", "h1", &ta, &tb, Relay::Tcp, &[]);
    relayed_in_token(&ta, t0);
    let coturn = daemons::recorded_pid(lab.state_dir(), daemons::TURN_DAEMON).unwrap();
    daemons::stop(&[coturn]);
    println!("coturn stopped in {:?}", t0.elapsed());
    // The time from here on counts.
    let t0 = Instant::now();
    let b = start_relayed_over(&lab, "--tcp", "h2", &tb, &ta, Relay::None, &[]);
    let (a, b) = common::punching::finish(a, b, ("h1", "h2"), t0);
    println!(
        "stopped after the allocation: connected in {:?}: {}",
        a.took,
        a.stderr.trim()
    );
    assert_talked(&a, &b, ("h1", "h2"), "tcp");
    assert_eq!(path(&a), "direct", "{a:#?}");
    assert_eq!(path(&b), "direct", "{b:#?}");
    assert_eq!(no_address_warnings(&a), 0, "{}", a.stderr);
    assert!(a.took < RELAY_DOWN_WITHIN, "took {:?}: {a:#?}", a.took);
    // With the relay stopped: refused (a TCP reset), at once.
    for relay in [Relay::Udp, Relay::Tcp] {
        let (a, b) = session_over(&lab, "--tcp", "h1", relay, "h2", Relay::None, &[]);
        println!("{relay:?}, stopped: connected in {:?}: {}", a.took, a.stderr.trim());
        assert_talked(&a, &b, ("h1", "h2"), "tcp");
        assert_eq!(path(&a), "direct", "{relay:?}: {a:#?}");
        assert_eq!(path(&b), "direct", "{relay:?}: {b:#?}");
        assert_eq!(no_address_warnings(&a), 1, "{relay:?}: {}", a.stderr);
        assert!(a.took < RELAY_DOWN_WITHIN, "{relay:?}: took {:?}: {a:#?}", a.took);
    }
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
    // The TCP allocation takes a TCP handshake and two requests, each retransmitted after a
    // loss (a lost SYN costs 1 s, then 2 s more): the mapping's default 3 s ran out in about
    // 1 run in 10, and the relay with it. Under this much loss a program waits longer.
    let extra = ["--timeout", "20", "--map-timeout", "10"];
    let (a, b) = session_over(&lab, "--tcp", "h1", Relay::Udp, "h2", Relay::None, &extra);
    assert_talked(&a, &b, ("h1", "h2"), "tcp");
    assert_relayed(&a, &b);
}

/// A TURN server that is down: nothing answers at this address.
const SILENT: &str = "203.0.113.31";

/// A side whose relay is down or not TURN connects within this: the relay is given up at the
/// mapping's deadline (`--map-timeout`, 3 s), then the direct punch takes well under a second.
const RELAY_DOWN_WITHIN: Duration = Duration::from_secs(6);

/// How many lines of a side's stderr warn that its TURN relay gave no address.
fn no_address_warnings(side: &common::punching::Side) -> usize {
    side.stderr
        .lines()
        .filter(|l| l.starts_with("natt: warning: the TURN relay gave no address"))
        .count()
}

#[test]
fn fallback_tcp_spoofed_connections_at_the_relayed_address() {
    let Some(lab) = lab(
        "fallback_tcp_spoofed_connections_at_the_relayed_address",
        "ttsp",
        "r1=sym r2=sym p1",
    ) else {
        return;
    };
    // h1 has a TCP relay; h2 none. While they connect, h1's relayed address is sprayed with
    // TCP connections that write garbage and random punch-shaped frames: from r2 itself (its WAN
    // address is h2's public IP, which h1's permission lets through: coturn hands each to h1 as
    // the peer's), and from p1 (no permission). They neither complete nor break the connection.
    let (ta, tb) = token_files(&lab, "spray");
    let t0 = Instant::now();
    let a = start_relayed_over(&lab, "--tcp", "h1", &ta, &tb, Relay::Udp, &["--timeout", "15"]);
    let relayed = relayed_in_token(&ta, t0);
    // Each connection held up to a second (unless closed first): long enough for h1 to choose
    // it (RELAY_GRACE, 300 ms) if it took a frame that does not authenticate.
    let spray = |node: &str| {
        lab.spawn_probe(
            node,
            &["tcp-spray", "--to", &relayed, "--ms", "4000", "--hold-ms", "1000"],
        )
        .unwrap()
    };
    let (from_r2, from_p1) = (spray("r2"), spray("p1"));
    let sprayed_by = Instant::now() + Duration::from_secs(10);
    std::thread::sleep(Duration::from_millis(300));
    let b = start_relayed_over(&lab, "--tcp", "h2", &tb, &ta, Relay::None, &["--timeout", "15"]);
    let (a, b) = common::punching::finish(a, b, ("h1", "h2"), t0);
    let (from_r2, from_p1) = (collect(from_r2, sprayed_by), collect(from_p1, sprayed_by));
    println!("from r2: {from_r2}\nfrom p1: {from_p1}\nconnected in {:?}", a.took);
    assert_talked(&a, &b, ("h1", "h2"), "tcp");
    assert_relayed(&a, &b);
    // h1 sees its peer at the attackers' IP, r2's: only the handshake tells them apart.
    assert_eq!(a.peer().ip().to_string(), lab.get("R2_PUBLIC_IP").unwrap());
    // Only the peer's lines came through.
    assert!(a.lines.iter().skip(1).all(|l| l == "hello from h2"), "{:?}", a.lines);
    assert!(b.lines.iter().skip(1).all(|l| l == "hello from h1"), "{:?}", b.lines);
    // The attack was made: coturn bound h1 more connections than the peer's one (r2's, which
    // failed the handshake), and refused p1's, which it accepts and closes at once.
    let log = turn_log(&lab);
    let count = |needle: &str| log.lines().filter(|l| l.contains(needle)).count();
    let bound = count("incoming packet CONNECTION_BIND processed, success");
    assert!(bound > 1, "none of r2's connections reached h1 ({from_r2}):\n{log}");
    let (r2, p1) = (sprayed(&from_r2), sprayed(&from_p1));
    assert!(r2["CONNECTED"] > 0 && p1["CONNECTED"] > 0, "{from_r2} {from_p1}");
    assert_eq!(
        p1["ENDED"], p1["CONNECTED"],
        "coturn kept a connection of p1's: {from_p1}"
    );
    assert_eq!(p1["READ"], 0, "p1 got bytes through the relay: {from_p1}");
    assert!(
        count("peer has no permission to connect") >= p1["CONNECTED"],
        "p1's connections:\n{log}"
    );
    assert_released(&lab);
}

/// The stdout of a probe that ends by itself, killed if it still runs at `by`.
fn collect(mut probe: std::process::Child, by: Instant) -> String {
    while probe.try_wait().unwrap().is_none() {
        if Instant::now() >= by {
            let _ = probe.kill();
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = probe.wait_with_output().unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The counts of a `tcp-spray` probe's last line (`CONNECTED c FAILED f ...`), by name.
fn sprayed(out: &str) -> std::collections::HashMap<String, usize> {
    let last = out.lines().last().unwrap_or_default();
    let words: Vec<&str> = last.split_whitespace().collect();
    let counts: std::collections::HashMap<String, usize> = words
        .chunks(2)
        .filter_map(|w| Some((w.first()?.to_string(), w.get(1)?.parse().ok()?)))
        .collect();
    assert!(counts.contains_key("CONNECTED"), "not a tcp-spray summary: {out}");
    counts
}
