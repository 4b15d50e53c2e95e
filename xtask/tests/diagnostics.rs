//! What natt says when things go wrong, through real NATs (issue 19): a mapping with a STUN
//! server that does not exist warns and names the cause; a punch that fails says which of
//! these happened: nothing came back from the peer's addresses, packets came but failed
//! authentication (a stale token), or the peer's token lists only private addresses.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use common::punching::*;
use common::*;
use natt_core::MappedSocketAddr;
use xtask::lab::Lab;

/// Writes a token (of a fresh secret) listing `endpoints` to `path`.
fn token_listing(path: &Path, endpoints: &[(&str, &str)]) {
    let (_, mut info) = natt_core::rendezvous::gen_rendezvous_info(vec![]);
    info.endpoints = endpoints
        .iter()
        .map(|(a, t)| MappedSocketAddr::new(a.parse::<SocketAddr>().unwrap(), true, *t))
        .collect();
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, format!("{}\n", info.to_token())).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// Runs h1's side alone against `peer`, expecting it to fail within `secs` (+ mapping); its
/// one line on stderr.
fn fails_alone(lab: &Lab, proto: &str, dir: &Path, peer: &Path, secs: &str) -> String {
    let t0 = Instant::now();
    let r = start(
        lab,
        "h1",
        proto,
        &dir.join(format!("ours{proto}")),
        peer,
        &["--timeout", secs],
    );
    let out = r.child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).trim().to_string();
    println!("{proto}: {stderr}");
    assert!(!out.status.success(), "{proto}: punched nobody");
    assert_eq!(stderr.lines().count(), 1, "one line on failure: {stderr}");
    assert!(t0.elapsed() < Duration::from_secs(10), "took {:?}", t0.elapsed());
    stderr
}

#[test]
fn punch_failures_say_why() {
    let Some(lab) = lab("punch_failures_say_why", "tdp", "pair") else {
        return;
    };
    let dir = lab.state_dir().join("why");
    std::fs::create_dir_all(&dir).unwrap();
    let r2 = lab.get("R2_WAN").unwrap();
    // Absent: the peer's public address, where nothing answers (its router drops it all).
    let absent = dir.join("absent");
    token_listing(&absent, &[(&format!("{r2}:43999"), "stun")]);
    for proto in ["--udp", "--tcp"] {
        let e = fails_alone(&lab, proto, &dir, &absent, "2");
        assert!(
            e.contains("nothing arrived from the peer's 1 address")
                || e.contains("nothing came back from the peer's 1 address"),
            "{e}"
        );
    }
    // Only private addresses (a peer with no STUN or simple server).
    let private = dir.join("private");
    token_listing(&private, &[("192.168.2.2:43999", "local")]);
    for proto in ["--udp", "--tcp"] {
        let e = fails_alone(&lab, proto, &dir, &private, "2");
        assert!(e.contains("only private addresses"), "{e}");
    }
    // A stale token: a first session leaves h2's token behind; the next one, on the same ports
    // (so packets do arrive), is given it. Both sides say so, whichever their role.
    for proto in ["--udp", "--tcp"] {
        let a = ["--port", "43001", "--timeout", "3"];
        let b = ["--port", "43002", "--timeout", "3"];
        let (sa, sb) = stale_token_session(&lab, proto, &dir, (&a, &b), (&a, &b));
        for s in [&sa, &sb] {
            println!("{proto} stale: {}", s.stderr.trim());
            assert!(!s.ok, "{proto}: a punch with a stale token succeeded");
            assert!(s.stderr.contains("stale or wrong token"), "{proto}: {}", s.stderr);
        }
    }
}

#[test]
fn a_mapping_without_an_external_address_says_why() {
    let Some(lab) = lab("a_mapping_without_an_external_address_says_why", "tdm", "r1=prc") else {
        return;
    };
    let mut cmd = lab.command("h1", natt_bin()).unwrap();
    cmd.args([
        "map",
        "--udp",
        "--stun",
        "203.0.113.99:3478",
        "--no-upnp",
        "--no-pcp",
        "--json",
        "--timeout",
        "1",
    ]);
    let out = cmd.output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stderr}");
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("warning: no external address") && stderr.contains("stun"),
        "{stderr}"
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let stun = outcome_in(&v, "stun").unwrap_or_else(|| panic!("{v}"));
    assert!(stun["error"].is_string(), "{v}");
    assert!(stun["endpoints"].as_array().unwrap().is_empty(), "{v}");
    // natt probe without any server says so too.
    let mut cmd = lab.command("h1", natt_bin()).unwrap();
    cmd.args(["probe", "--no-upnp", "--no-pcp", "--timeout", "1"]);
    let out = cmd.output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("no technique ran"), "{stderr}");
}
