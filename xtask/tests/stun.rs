//! NAT lab tests of STUN (issue 4): natt's STUN client and NAT behaviour discovery against a
//! real RFC 5780 server (coturn) from behind each kind of NAT, a third-party STUN client
//! (coturn's `turnutils_stunclient`) against `natt serve`, and mapping over a lossy link.
//!
//! Like `lab.rs`: root and an isolated network namespace (each test re-runs itself inside
//! `unshare --net`), skipped without root, one lab prefix per test.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]
mod common;

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;
use xtask::lab::Lab;

/// `ADDR:PORT` of a STUN server from lab info (`STUN1`, `STUN2`).
fn stun(lab: &Lab, key: &str) -> String {
    format!("{}:{}", lab.get(key).unwrap(), lab.get("STUN_PORT").unwrap())
}

/// Like [`natt`], for commands given `--json`: the one JSON object printed.
fn addr(v: &Value) -> SocketAddr {
    v.as_str()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("not an address: {v}"))
}

fn ms(v: &Value) -> u64 {
    v["elapsed_ms"].as_u64().unwrap_or_else(|| panic!("no elapsed_ms: {v}"))
}

/// What the lab's NAT kinds must look like to natt.
struct Expect {
    mapping: &'static str,
    filtering: &'static str,
    tcp_mapping: &'static str,
    /// `nat_restricted` of the UDP endpoint STUN finds.
    restricted: bool,
}

/// A port-restricted cone, as RFC 4787 names its behaviour.
const PRC: Expect = Expect {
    mapping: "endpoint-independent",
    filtering: "address-and-port-dependent",
    tcp_mapping: "endpoint-independent",
    restricted: true,
};

/// natt's STUN client and behaviour discovery against coturn from `host`: the external address
/// is `HOST_PUBLIC_IP`, and mapping and filtering are classified as `expect` says.
fn stun_from(name: &str, prefix: &str, topology: &str, host: &str, expect: &Expect) {
    let Some(lab) = lab(name, prefix, topology) else {
        return;
    };
    let bin = natt_bin();
    let public: IpAddr = lab
        .get(&format!("{}_PUBLIC_IP", host.to_uppercase()))
        .unwrap()
        .parse()
        .unwrap();
    let stun1 = stun(&lab, "STUN1");

    // UDP: natt probe (RFC 5780 discovery on fresh sockets, TCP mapping tests beside).
    let p = natt_json(&lab, &bin, host, &["probe", "--stun", &stun1, "--no-upnp", "--json"]);
    println!("{topology}: natt probe from {host}: {p}");
    let external: Vec<SocketAddr> = p["external"].as_array().unwrap().iter().map(addr).collect();
    assert!(
        !external.is_empty() && external.iter().all(|a| a.ip() == public && a.port() != 0),
        "external {external:?}, expected {public}: {p}"
    );
    assert_eq!(p["mapping"], expect.mapping, "UDP mapping behind {topology}: {p}");
    assert_eq!(p["filtering"], expect.filtering, "UDP filtering behind {topology}: {p}");
    assert_eq!(
        p["tcp_mapping"], expect.tcp_mapping,
        "TCP mapping behind {topology}: {p}"
    );
    let t = outcome_in(&p, "stun").unwrap();
    assert!(t["error"].is_null(), "{t}");
    assert_eq!(
        t["endpoints"].as_array().unwrap().iter().map(addr).collect::<Vec<_>>(),
        external
    );
    // RFC 5780 filtering tests: a NAT that drops the other address's answers is known by
    // sitting out a window of 1 round trip + 5 ms after test I's answer; answers that get in
    // end the tests at once. Either way the verdict is made, and the probe ends by itself,
    // well before its 3 s deadline.
    let elapsed = ms(&p);
    assert!(elapsed < 2900, "probe took {elapsed} ms");
    let filtering_ms = p["filtering_ms"]
        .as_u64()
        .unwrap_or_else(|| panic!("no filtering_ms: {p}"));
    assert!(filtering_ms <= elapsed, "{p}");

    // UDP: natt map, whose STUN exchange checks filtering with a CHANGE-REQUEST.
    let m = natt_json(
        &lab,
        &bin,
        host,
        &["map", "--udp", "--stun", &stun1, "--no-upnp", "--json"],
    );
    println!("{topology}: natt map --udp from {host}: {m}");
    let endpoints = m["endpoints"].as_array().unwrap();
    // Without a NAT the STUN address is the socket's own, listed as the local endpoint.
    let technique = if public.to_string() == lab.get(&format!("{}_IP", host.to_uppercase())).unwrap() {
        "local"
    } else {
        "stun"
    };
    let e = endpoints
        .iter()
        .find(|e| addr(&e["addr"]).ip() == public)
        .unwrap_or_else(|| panic!("no endpoint at {public}: {m}"));
    assert_eq!(e["technique"], technique, "{m}");
    assert_eq!(
        e["nat_restricted"], expect.restricted,
        "nat_restricted behind {topology}: {m}"
    );
    if expect.restricted {
        // The CHANGE-REQUEST answer was waited for (1 round trip + 5 ms after the first
        // answer), not for the deadline.
        assert!(ms(&m) < 2000, "natt map took {} ms", ms(&m));
    }

    // TCP: natt map --tcp.
    let m = natt_json(
        &lab,
        &bin,
        host,
        &["map", "--tcp", "--stun", &stun1, "--no-upnp", "--json"],
    );
    println!("{topology}: natt map --tcp from {host}: {m}");
    let endpoints = m["endpoints"].as_array().unwrap();
    assert!(
        endpoints
            .iter()
            .any(|e| e["technique"] == technique && addr(&e["addr"]).ip() == public),
        "no TCP endpoint at {public}: {m}"
    );
}

#[test]
fn stun_behind_prc() {
    stun_from("stun_behind_prc", "stprc", "r1=prc p1", "h1", &PRC);
}

#[test]
fn stun_behind_sym() {
    let sym = Expect {
        mapping: "address-and-port-dependent",
        filtering: "address-and-port-dependent",
        tcp_mapping: "address-and-port-dependent",
        restricted: true,
    };
    stun_from("stun_behind_sym", "stsym", "r1=sym p1", "h1", &sym);
}

#[test]
fn stun_behind_full_cone() {
    let full = Expect {
        mapping: "endpoint-independent",
        filtering: "endpoint-independent",
        tcp_mapping: "endpoint-independent",
        restricted: false,
    };
    stun_from("stun_behind_full_cone", "stfull", "r1=full p1", "h1", &full);
}

#[test]
fn stun_behind_double_nat() {
    stun_from(
        "stun_behind_double_nat",
        "stdbl",
        "r1=prc,cgn,hosts=0 r2=prc,via=r1 p1",
        "h2",
        &PRC,
    );
}

#[test]
fn stun_from_public_host() {
    let open = Expect {
        mapping: "endpoint-independent",
        filtering: "endpoint-independent",
        tcp_mapping: "endpoint-independent",
        restricted: false,
    };
    stun_from("stun_from_public_host", "stpub", "p1", "p1", &open);
}

#[test]
fn probe_text_shows_tcp_mapping() {
    let Some(lab) = lab("probe_text_shows_tcp_mapping", "sttxt", "r1=sym") else {
        return;
    };
    let out = natt(
        &lab,
        &natt_bin(),
        "h1",
        &["probe", "--stun", &stun(&lab, "STUN1"), "--no-upnp"],
    );
    println!("{out}");
    let line = |key: &str| {
        out.lines()
            .find(|l| l.starts_with(key))
            .unwrap_or_else(|| panic!("no {key}: {out}"))
    };
    assert!(line("mapping:").ends_with(" address-and-port-dependent"), "{out}");
    assert!(line("tcp mapping:").ends_with(" address-and-port-dependent"), "{out}");
    assert!(line("external:").contains(&lab.get("R1_WAN").unwrap()), "{out}");
}

/// coturn with one address has no RFC 5780: natt does not ask it to change addresses (coturn
/// would refuse with 420), says it cannot tell, and takes the endpoint to be restricted even
/// behind a full cone.
#[test]
fn single_address_coturn() {
    let Some(mut lab) = lab("single_address_coturn", "st1ad", "r1=full") else {
        return;
    };
    let dir = lab.state_dir().to_path_buf();
    let conf = dir.join("coturn-single.conf");
    std::fs::write(&conf, "").unwrap();
    let path = |name: &str| dir.join(name).display().to_string();
    let server = "203.0.113.20:3478";
    lab.daemon(
        "coturn-single",
        "inet",
        &[
            "turnserver",
            "-c",
            &conf.display().to_string(),
            "--stun-only",
            "--no-cli",
            "--no-tls",
            "--no-dtls",
            "-L",
            "203.0.113.20",
            "--listening-port",
            "3478",
            "--pidfile",
            &path("coturn-single.pidfile"),
            "--simple-log",
            "-l",
            &path("coturn-single.turnlog"),
        ],
    )
    .unwrap();
    let end = Instant::now() + Duration::from_secs(10);
    while lab.probe("h1", &["stun", "--timeout-ms", "300", server]).is_err() {
        assert!(Instant::now() < end, "coturn on {server} does not answer");
    }
    let bin = natt_bin();
    let wan: IpAddr = lab.get("R1_WAN").unwrap().parse().unwrap();
    let p = natt_json(&lab, &bin, "h1", &["probe", "--stun", server, "--no-upnp", "--json"]);
    println!("natt probe: {p}");
    assert_eq!(addr(&p["external"][0]).ip(), wan, "{p}");
    assert_eq!(
        (&p["mapping"], &p["filtering"], &p["tcp_mapping"]),
        (&"unknown".into(), &"unknown".into(), &"unknown".into()),
        "{p}"
    );
    assert!(p["evidence"].to_string().contains("does not support RFC 5780"), "{p}");
    assert!(ms(&p) < 1000, "nothing to wait for without RFC 5780: {p}");
    let m = natt_json(
        &lab,
        &bin,
        "h1",
        &["map", "--udp", "--stun", server, "--no-upnp", "--json"],
    );
    println!("natt map --udp: {m}");
    let e = endpoint_in(&m, "stun").unwrap_or_else(|| panic!("no stun endpoint: {m}"));
    assert_eq!(addr(&e["addr"]).ip(), wan);
    assert_eq!(e["nat_restricted"], true, "untested filtering is restricted: {m}");
}

// --------------------------------------------------- a third-party client against natt serve

/// One `RFC 5780 response N` block of `turnutils_stunclient`'s output.
#[derive(Debug, Default)]
struct StunclientResponse {
    origin: Option<SocketAddr>,
    other: Option<SocketAddr>,
    reflexive: Option<SocketAddr>,
}

fn parse_stunclient(out: &str) -> Vec<StunclientResponse> {
    let mut blocks: Vec<StunclientResponse> = Vec::new();
    for line in out.lines() {
        if line.starts_with("RFC 5780 response") {
            blocks.push(StunclientResponse::default());
            continue;
        }
        let value = line.split_whitespace().last().and_then(|a| a.parse().ok());
        let Some(b) = blocks.last_mut() else { continue };
        if line.contains("Response origin:") {
            b.origin = value;
        } else if line.contains("Other addr:") {
            b.other = value;
        } else if line.contains("UDP reflexive addr:") {
            b.reflexive = value;
        }
    }
    blocks
}

/// `turnutils_stunclient -p PORT ADDR` in `node`, ended after `secs` if it has not ended
/// (it waits for each answer without a timeout of its own): its stdout and exit code.
fn stunclient(lab: &Lab, node: &str, secs: &str, port: &str, server: &str) -> (String, Option<i32>) {
    let out = lab
        .exec(node, &["timeout", secs, "turnutils_stunclient", "-p", port, server])
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    println!(
        "turnutils_stunclient in {node} (exit {:?}):\n{stdout}",
        out.status.code()
    );
    (stdout, out.status.code())
}

#[test]
fn third_party_client_against_natt_serve() {
    let Some(lab) = lab("third_party_client_against_natt_serve", "st3rd", "r1=prc p1") else {
        return;
    };
    let bin = natt_bin().display().to_string();
    let mut serve = Running::new(
        lab.spawn(
            "inet",
            &[
                bin.as_str(),
                "serve",
                "--listen",
                "203.0.113.20:5483",
                "--listen",
                "203.0.113.21:5483",
            ],
        )
        .unwrap(),
    );
    // One line per socket: UDP and TCP on both IPs at ports 5483 and 5484.
    serve.wait_line("serving tcp 203.0.113.21:5484", Duration::from_secs(10));
    let primary: SocketAddr = "203.0.113.20:5483".parse().unwrap();
    let other: SocketAddr = "203.0.113.21:5484".parse().unwrap();
    let wan: IpAddr = lab.get("R1_WAN").unwrap().parse().unwrap();

    // Behind the port-restricted cone: the Binding response tells the router's WAN address,
    // from the address asked, naming the other one. The client's next test asks for an answer
    // from that other address to another port (RESPONSE-PORT), which the NAT drops; the client
    // then waits for ever, so it is given a short while only.
    let (out, code) = stunclient(&lab, "h1", "3", "5483", "203.0.113.20");
    let r = parse_stunclient(&out);
    assert!(!r.is_empty(), "no RFC 5780 response: {out}");
    assert_eq!(r[0].reflexive.map(|a| a.ip()), Some(wan), "{out}");
    assert_ne!(r[0].reflexive.map(|a| a.port()), Some(0));
    assert_eq!(r[0].origin, Some(primary), "{out}");
    assert_eq!(r[0].other, Some(other), "{out}");
    assert_eq!(
        r.len(),
        1,
        "an answer from the other address got through the prc NAT: {out}"
    );
    assert_eq!(
        code,
        Some(124),
        "turnutils_stunclient ended by itself behind prc: {out}"
    );

    // From the public host every test completes: CHANGE-REQUEST (IP and port) with
    // RESPONSE-PORT, then with PADDING, each answered from the other address and port.
    let (out, code) = stunclient(&lab, "p1", "10", "5483", "203.0.113.20");
    assert_eq!(code, Some(0), "{out}");
    let r = parse_stunclient(&out);
    assert_eq!(r.len(), 3, "{out}");
    let p1: IpAddr = lab.get("P1_IP").unwrap().parse().unwrap();
    let origins: Vec<_> = r.iter().map(|b| b.origin).collect();
    assert_eq!(origins, [Some(primary), Some(other), Some(other)], "{out}");
    assert!(r.iter().all(|b| b.other == Some(other)), "{out}");
    let reflexive: Vec<SocketAddr> = r.iter().map(|b| b.reflexive.unwrap()).collect();
    assert!(reflexive.iter().all(|a| a.ip() == p1), "{out}");
    // The third request comes from the socket at RESPONSE-PORT, one above the first.
    assert_eq!(reflexive[0], reflexive[1]);
    assert_eq!(reflexive[2].port(), reflexive[0].port() + 1, "{out}");

    serve.stop();
}

/// Issue #18, finding 5: slow TCP clients from one host (80 connections dribbling a STUN
/// request a byte per 100 ms) used to hold every slot of `natt serve`, so no other host got an
/// answer over TCP. Now one source holds at most 8 connections, each for at most 5 s, and
/// another host is answered meanwhile, by STUN and by the simple protocol.
#[test]
fn slow_tcp_clients_from_one_host_do_not_deny_natt_serve() {
    let Some(lab) = lab(
        "slow_tcp_clients_from_one_host_do_not_deny_natt_serve",
        "stslow",
        "r1=prc r2=prc",
    ) else {
        return;
    };
    let bin = natt_bin();
    let serve = natt_serve(&lab, &bin);
    let mut slow = Running::new(
        lab.spawn_probe(
            "h1",
            &["slow-tcp", "--to", "203.0.113.20:5483", "--count", "80", "--ms", "8000"],
        )
        .unwrap(),
    );
    assert_eq!(slow.wait_line("OPENED", Duration::from_secs(10)), "OPENED 80");
    assert_eq!(slow.wait_line("HELD", Duration::from_secs(5)), "HELD 8");
    // h2, behind another router, maps over TCP with both protocols of natt serve: each finds
    // r2's WAN address (the text form names each technique that failed).
    let t0 = Instant::now();
    let server = "203.0.113.20:5483";
    // One protocol a run: two techniques on one server address would connect from the same
    // mapped port to the same server port, a four-tuple only one of them can have.
    let out: String = ["--stun", "--simple"]
        .iter()
        .map(|proto| {
            natt(
                &lab,
                &bin,
                "h2",
                &["map", "--tcp", proto, server, "--no-upnp", "--no-pcp"],
            )
        })
        .collect();
    let asked = t0.elapsed();
    let wan = lab.get("R2_WAN").unwrap();
    assert!(out.lines().any(|l| l.starts_with(&format!("{wan}:"))), "{out}");
    assert!(
        !out.contains("failed"),
        "a technique failed for h2 while h1 is slow: {out}"
    );
    assert!(asked < Duration::from_secs(3), "h2 answered after {asked:?}");
    // The dribblers are cut at the whole-connection deadline (5 s after they connected).
    let lines = slow.finish();
    println!("slow-tcp: {lines:?}; h2 answered in {asked:?}:\n{out}");
    let closed = lines.iter().find(|l| l.starts_with("CLOSED")).unwrap();
    let last_ms: u64 = closed.rsplit("last_ms=").next().unwrap().parse().unwrap();
    assert!(closed.starts_with("CLOSED 80 "), "{lines:?}");
    assert!((5000..6500).contains(&last_ms), "{lines:?}");
    serve.stop();
}

// ----------------------------------------------------------------------------- lossy link

#[test]
fn stun_mapping_over_a_lossy_link() {
    let Some(lab) = lab("stun_mapping_over_a_lossy_link", "stloss", "r1=prc,loss=30 p1") else {
        return;
    };
    assert_eq!(lab.get("R1_LOSS_PCT").unwrap(), "30");
    let bin = natt_bin();
    let wan: IpAddr = lab.get("R1_WAN").unwrap().parse().unwrap();
    let (stun1, stun2) = (stun(&lab, "STUN1"), stun(&lab, "STUN2"));
    // 30 % loss each way: a round trip gets through with p = 0.49. Two servers, each asked at
    // 0, 0.5, 1.5, 3.5 and 7.5 s (RFC 8489) before the 8 s deadline: all ten round trips fail
    // with p = 0.51^10, about 0.1 %.
    for run in 1..=3 {
        let t0 = Instant::now();
        let m = natt_json(
            &lab,
            &bin,
            "h1",
            &[
                "map",
                "--udp",
                "--stun",
                &stun1,
                "--stun",
                &stun2,
                "--no-upnp",
                "--json",
                "--timeout",
                "8",
            ],
        );
        let wall = t0.elapsed();
        println!("run {run}: {m} ({wall:?})");
        let e = endpoint_in(&m, "stun").unwrap_or_else(|| panic!("run {run}: no stun endpoint over 30 % loss: {m}"));
        assert_eq!(addr(&e["addr"]).ip(), wan, "{m}");
        assert!(ms(&m) <= 8100, "run {run}: past the deadline: {m}");
    }
}
