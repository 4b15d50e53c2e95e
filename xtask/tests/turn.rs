//! TURN through the NAT lab, against the lab's coturn relay (203.0.113.30:3478, long-term
//! credentials): from behind a symmetric NAT natt allocates a relayed address, sends to an
//! echo peer on the internet (coturn's `turnutils_peer` on p1) through it and gets the
//! answers back, over UDP and over TCP to the relay from a router that drops all outbound
//! UDP; the allocation is gone from coturn once released (its verbose log); a wrong password,
//! a quota reached and a server that does not answer TURN each end with their one-line error,
//! the last by the deadline; `natt map` shows the relayed endpoint and `natt probe` the relay;
//! a held allocation is refreshed through stale nonces; and TCP is relayed (RFC 6062) to a TCP
//! peer, which sees the relayed address.
//!
//! Root only; each test re-runs itself inside `unshare --net` (see `common`).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

mod common;

use std::process::Output;
use std::time::{Duration, Instant};

use common::relaying::{hold_turn, turn_log};
use common::*;
use xtask::lab::Lab;

const PEER: &str = "198.51.100.11:3480";

/// Starts coturn's UDP echo peer on p1, port 3480.
fn echo_peer(lab: &mut Lab) {
    lab.daemon(
        "turn-peer",
        "p1",
        &["turnutils_peer", "-L", "198.51.100.11", "-p", "3480"],
    )
    .unwrap();
    std::thread::sleep(Duration::from_millis(300));
}

/// Runs `natt ARGS...` in `node` with the TURN password `password` in its environment.
fn natt_turn(lab: &Lab, node: &str, password: &str, args: &[&str]) -> Output {
    let natt = natt_bin().display().to_string();
    let env = format!("NATT_TURN_PASSWORD={password}");
    let mut argv = vec!["env", env.as_str(), "timeout", "30", natt.as_str()];
    argv.extend_from_slice(args);
    lab.exec(node, &argv).unwrap()
}

/// `natt relay` through the lab's relay (`uri`) to the echo peer: its JSON report.
fn relay(lab: &Lab, node: &str, uri: &str) -> serde_json::Value {
    let user = lab.get("TURN_USER").unwrap();
    let password = lab.get("TURN_PASSWORD").unwrap();
    let out = natt_turn(
        lab,
        node,
        &password,
        &[
            "relay",
            "--turn",
            uri,
            "--turn-user",
            &user,
            "--peer",
            PEER,
            "--count",
            "5",
        ],
    );
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "natt relay {uri}: {}\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("bad JSON ({e}): {stdout}"))
}

/// The lines of coturn's relay log that say an allocation of `remote` (`IP:PORT`, where the
/// relay saw us) ended.
fn closed_lines(lab: &Lab, remote: &str) -> Vec<String> {
    turn_log(lab)
        .lines()
        .filter(|l| l.contains("closed (2nd stage)") && l.contains(&format!("remote {remote},")))
        .map(str::to_owned)
        .collect()
}

#[test]
fn relays_both_ways_from_behind_a_symmetric_nat_and_deletes_the_allocation() {
    let Some(mut lab) = lab(
        "relays_both_ways_from_behind_a_symmetric_nat_and_deletes_the_allocation",
        "tu1",
        "r1=sym p1",
    ) else {
        return;
    };
    echo_peer(&mut lab);
    let uri = lab.get("TURN_URI").unwrap();
    let report = relay(&lab, "h1", &uri);
    // Every datagram came back from the peer, through the relay.
    assert_eq!(report["received"], 5, "{report}");
    assert_eq!(report["echoes"][4], "natt relay 4", "{report}");
    let relayed: std::net::SocketAddr = report["relayed"].as_str().unwrap().parse().unwrap();
    assert_eq!(relayed.ip().to_string(), lab.get("TURN_IP").unwrap());
    // The relay saw us at r1's public address (a symmetric NAT's port).
    let mapped = report["mapped"].as_str().unwrap().to_owned();
    assert!(
        mapped.starts_with(&format!("{}:", lab.get("R1_WAN").unwrap())),
        "{report}"
    );
    // Released: deleted (a Refresh with lifetime 0), so coturn ends the session now, not at
    // the end of its 600 s lifetime.
    assert_eq!(report["released"], true, "{report}");
    assert!(
        eventually(Duration::from_secs(5), || !closed_lines(&lab, &mapped).is_empty()),
        "coturn did not end the allocation of {mapped}: {}",
        turn_log(&lab)
    );
}

#[test]
fn tcp_to_the_relay_from_a_router_that_drops_outbound_udp() {
    let Some(mut lab) = lab(
        "tcp_to_the_relay_from_a_router_that_drops_outbound_udp",
        "tu2",
        "r1=prc p1",
    ) else {
        return;
    };
    echo_peer(&mut lab);
    // r1 forwards no UDP from its LAN.
    lab.run(
        "r1",
        &["iptables", "-I", "FORWARD", "-i", "lan", "-p", "udp", "-j", "DROP"],
    )
    .unwrap();
    let uri = lab.get("TURN_URI").unwrap();
    let password = lab.get("TURN_PASSWORD").unwrap();
    // Over UDP nothing gets through: the allocation ends at its deadline.
    let out = natt_turn(
        &lab,
        "h1",
        &password,
        &[
            "relay",
            "--turn",
            &uri,
            "--turn-user",
            "natt",
            "--peer",
            PEER,
            "--timeout",
            "2",
        ],
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("did not answer Allocate in time"), "{err}");
    // Over TCP it allocates a UDP relayed address, and the peer's answers come back.
    let report = relay(&lab, "h1", &format!("{uri}?transport=tcp"));
    assert_eq!(report["received"], 5, "{report}");
    assert_eq!(report["released"], true, "{report}");
    // natt map lists that relayed address as the UDP socket's turn endpoint.
    let tcp_uri = format!("{uri}?transport=tcp");
    let args = [
        "map",
        "--udp",
        "--no-upnp",
        "--no-pcp",
        "--json",
        "--turn",
        &tcp_uri,
        "--turn-user",
        "natt",
    ];
    let out = natt_turn(&lab, "h1", &password, &args);
    let json: serde_json::Value = serde_json::from_str(String::from_utf8_lossy(&out.stdout).trim())
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stderr)));
    let turn = endpoint_in(&json, "turn").unwrap_or_else(|| panic!("no turn endpoint: {json}"));
    assert!(turn["addr"].as_str().unwrap().starts_with("203.0.113.30:"), "{json}");
}

#[test]
fn wrong_password_quota_and_a_server_that_does_not_speak_turn() {
    let Some(mut lab) = lab(
        "wrong_password_quota_and_a_server_that_does_not_speak_turn",
        "tu3",
        "r1=prc p1",
    ) else {
        return;
    };
    echo_peer(&mut lab);
    let uri = lab.get("TURN_URI").unwrap();
    let relay_args = |uri: &str| -> Vec<String> {
        [
            "relay",
            "--turn",
            uri,
            "--turn-user",
            "natt",
            "--peer",
            PEER,
            "--timeout",
            "2",
        ]
        .map(str::to_owned)
        .to_vec()
    };
    let run = |lab: &Lab, password: &str, args: &[String]| {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = natt_turn(lab, "h1", password, &args);
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        )
    };
    // A wrong password: one line, naming the user, never the password.
    let (ok, err) = run(&lab, "not-the-password", &relay_args(&uri));
    assert!(!ok);
    assert_eq!(
        err,
        "natt: TURN server 203.0.113.30:3478: wrong credentials for user \"natt\" (realm \"natt.lab\")"
    );
    let log = std::fs::read_to_string(lab.get("TURN_LOG").unwrap()).unwrap();
    assert!(log.contains("credentials are incorrect"), "{log}");
    // No password at all: refused before anything is sent.
    let natt = natt_bin().display().to_string();
    let out = lab
        .exec(
            "h1",
            &[
                "env",
                "-u",
                "NATT_TURN_PASSWORD",
                natt.as_str(),
                "relay",
                "--turn",
                &uri,
                "--turn-user",
                "natt",
                "--peer",
                PEER,
            ],
        )
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("NATT_TURN_PASSWORD"));
    // A STUN-only server (the lab's coturn on 203.0.113.10) ignores TURN: given up on at the
    // deadline, with the error that says so.
    let start = Instant::now();
    let (ok, err) = run(
        &lab,
        &lab.get("TURN_PASSWORD").unwrap(),
        &relay_args("turn:203.0.113.10:3478"),
    );
    assert!(!ok);
    assert!(
        err.contains("203.0.113.10:3478 did not answer Allocate in time"),
        "{err}"
    );
    assert!(start.elapsed() < Duration::from_secs(20), "ended by its deadline");
    // A quota of one allocation per user: a second allocation is refused with 486.
    lab.restart_turn(&["--user-quota", "1"]).unwrap();
    let password = lab.get("TURN_PASSWORD").unwrap();
    let (held, stdin, json) = hold_turn(&lab, "h1", "natt-map-quota", &[]);
    let turn = endpoint_in(&json, "turn")
        .unwrap_or_else(|| panic!("no turn endpoint: {json}"))
        .clone();
    assert_eq!(turn["nat_restricted"], true, "{json}");
    let (ok, err) = run(&lab, &password, &relay_args(&uri));
    assert!(!ok);
    assert_eq!(
        err,
        "natt: TURN server 203.0.113.30:3478: allocation quota reached (486) for this user"
    );
    // Releasing the held mapping deletes its allocation: the quota frees up at once.
    drop(stdin);
    held.finish();
    let freed = eventually(Duration::from_secs(5), || run(&lab, &password, &relay_args(&uri)).0);
    assert!(freed, "the held allocation was not deleted on release");
}

#[test]
fn probe_reports_the_relay() {
    let Some(lab) = lab("probe_reports_the_relay", "tu4", "r1=sym p1") else {
        return;
    };
    let uri = lab.get("TURN_URI").unwrap();
    let password = lab.get("TURN_PASSWORD").unwrap();
    let args = [
        "probe",
        "--no-upnp",
        "--no-pcp",
        "--json",
        "--turn",
        &uri,
        "--turn-user",
        "natt",
    ];
    let out = natt_turn(&lab, "h1", &password, &args);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let json: serde_json::Value = serde_json::from_str(String::from_utf8_lossy(&out.stdout).trim()).unwrap();
    let relayed = json["relay"]["relayed"].as_str().unwrap_or_else(|| panic!("{json}"));
    assert!(relayed.starts_with("203.0.113.30:"), "{json}");
    assert_eq!(json["relay"]["error"], serde_json::Value::Null);
    // With a wrong password the relay key says why.
    let out = natt_turn(&lab, "h1", "wrong", &args);
    let json: serde_json::Value = serde_json::from_str(String::from_utf8_lossy(&out.stdout).trim()).unwrap();
    assert_eq!(json["relay"]["relayed"], serde_json::Value::Null);
    assert!(
        json["relay"]["error"].as_str().unwrap().contains("wrong credentials"),
        "{json}"
    );
    // The password never shows.
    assert!(!String::from_utf8_lossy(&out.stdout).contains(&password));
    assert!(!String::from_utf8_lossy(&out.stderr).contains(&password));
}

#[test]
fn a_held_allocation_is_refreshed_past_its_lifetime_through_stale_nonces() {
    let Some(mut lab) = lab(
        "a_held_allocation_is_refreshed_past_its_lifetime_through_stale_nonces",
        "tu5",
        "r1=sym p1",
    ) else {
        return;
    };
    // Allocations of 4 s at most and nonces that go stale after 2 s: the held allocation must
    // be refreshed every 2 s, answering 438s with the new nonce.
    lab.restart_turn(&["--max-allocate-lifetime", "4", "--stale-nonce=2"])
        .unwrap();
    let (held, stdin, json) = hold_turn(
        &lab,
        "h1",
        "natt-map-hold",
        &["NATT_TURN_LIFETIME_SECS=4", "RUST_LOG=natt_turn=debug"],
    );
    assert!(json.to_string().contains("\"technique\":\"turn\""), "{json}");
    let log = || turn_log(&lab);
    // Three lifetimes later the allocation is still there, refreshed, through stale nonces.
    std::thread::sleep(Duration::from_secs(12));
    let text = log();
    let natt_log = std::fs::read_to_string(lab.state_dir().join("natt-map-hold.err")).unwrap_or_default();
    assert!(
        !text.contains("closed (2nd stage)"),
        "the allocation ended while held:\n{text}\nnatt's log:\n{natt_log}"
    );
    assert!(
        text.matches("REFRESH processed, success").count() >= 3,
        "{text}\nnatt's log:\n{natt_log}"
    );
    assert!(text.contains("438"), "no stale nonce was met:\n{text}");
    // Released: gone at once.
    drop(stdin);
    held.finish();
    assert!(
        eventually(Duration::from_secs(5), || log().contains("closed (2nd stage)")),
        "{}",
        log()
    );
}

#[test]
fn tcp_is_relayed_to_a_tcp_peer_from_behind_a_symmetric_nat() {
    let Some(lab) = lab(
        "tcp_is_relayed_to_a_tcp_peer_from_behind_a_symmetric_nat",
        "tu6",
        "r1=sym p1",
    ) else {
        return;
    };
    // A TCP peer on p1 that says where it sees a connection from, then echoes.
    let mut echo = Running::new(
        lab.spawn_probe("p1", &["tcp-echo", "--bind", "198.51.100.11:3481", "--ms", "20000"])
            .unwrap(),
    );
    echo.wait_line("READY", Duration::from_secs(5));
    let uri = format!("{}?transport=tcp", lab.get("TURN_URI").unwrap());
    let password = lab.get("TURN_PASSWORD").unwrap();
    let args = [
        "relay",
        "--tcp",
        "--turn",
        &uri,
        "--turn-user",
        "natt",
        "--peer",
        "198.51.100.11:3481",
    ];
    let out = natt_turn(&lab, "h1", &password, &args);
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    let relayed = report["relayed"].as_str().unwrap();
    // The peer saw the connection come from the relayed address, and echoed our line.
    assert_eq!(
        report["peer_said"].as_str().unwrap(),
        format!("{relayed}\nnatt relay tcp\n"),
        "{report}"
    );
    assert_eq!(report["released"], true, "{report}");
    echo.wait_line(&format!("ACCEPTED {relayed}"), Duration::from_secs(5));
}
