//! IPv6 through the NAT lab: dual-stack homes (a routed /64 behind each router's stateful
//! firewall) punch a direct IPv6 path over UDP and TCP, even when their IPv4 NATs are both
//! symmetric; an IPv6-only pair connects; a host without IPv6 still connects over IPv4; and the
//! lab's IPv6 firewall lets nothing unsolicited in.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

mod common;

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use common::punching::*;
use common::*;
use xtask::lab::Lab;

/// The lab's STUN servers of both families, as `natt punch` arguments.
fn stun6(lab: &Lab) -> Vec<String> {
    vec![
        "--stun".into(),
        format!("[{}]:3478", lab.get("STUN1_6").unwrap()),
        "--stun".into(),
        format!("[{}]:3478", lab.get("STUN2_6").unwrap()),
    ]
}

/// Punches between `a` and `b` over `proto` with the IPv6 STUN servers too.
fn punch(lab: &Lab, a: &str, b: &str, proto: &str) -> (Side, Side) {
    let extra = stun6(lab);
    let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
    session(lab, a, b, proto, &extra)
}

fn ip6(lab: &Lab, host: &str) -> IpAddr {
    lab.get(&format!("{}_IP6", host.to_uppercase()))
        .unwrap()
        .parse()
        .unwrap()
}

/// Both sides connect over UDP and TCP in `family`, each seeing the other at `expect` (its
/// IP), and exchange a line both ways.
fn assert_connects(lab: &Lab, a: &str, b: &str, family: &str, expect: Option<(IpAddr, IpAddr)>) {
    for proto in ["--udp", "--tcp"] {
        let (sa, sb) = punch(lab, a, b, proto);
        println!("{proto} {a} <-> {b}: {:?} / {:?}", sa.json, sb.json);
        assert!(sa.ok && sb.ok, "{proto} {a} <-> {b} failed:\n{sa:#?}\n{sb:#?}");
        for s in [&sa, &sb] {
            let json = s.json.as_ref().unwrap();
            assert_eq!(json["via"], &proto[2..]);
            assert_eq!(json["family"], family, "{proto}: {json}");
        }
        if let Some((pa, pb)) = expect {
            assert_eq!(sa.peer().ip(), pa, "{proto}: {a} sees {b}");
            assert_eq!(sb.peer().ip(), pb, "{proto}: {b} sees {a}");
        }
        assert_hellos(&sa, &sb, (a, b), proto);
    }
}

#[test]
fn ipv6_punch_between_two_firewalled_homes() {
    let Some(lab) = lab("ipv6_punch_between_two_firewalled_homes", "t6p", "v6-pair") else {
        return;
    };
    let expect = (ip6(&lab, "h2"), ip6(&lab, "h1"));
    assert_connects(&lab, "h1", "h2", "ipv6", Some(expect));
}

#[test]
fn ipv6_connects_where_ipv4_is_symmetric_on_both_sides() {
    let Some(lab) = lab(
        "ipv6_connects_where_ipv4_is_symmetric_on_both_sides",
        "t6s",
        "v6-sym-sym",
    ) else {
        return;
    };
    let expect = (ip6(&lab, "h2"), ip6(&lab, "h1"));
    assert_connects(&lab, "h1", "h2", "ipv6", Some(expect));
}

#[test]
fn ipv6_only_pair_connects() {
    let Some(lab) = lab("ipv6_only_pair_connects", "t6o", "v6only-pair") else {
        return;
    };
    let expect = (ip6(&lab, "h2"), ip6(&lab, "h1"));
    assert_connects(&lab, "h1", "h2", "ipv6", Some(expect));
}

#[test]
fn a_host_without_ipv6_still_connects_over_ipv4() {
    let Some(lab) = lab(
        "a_host_without_ipv6_still_connects_over_ipv4",
        "t6n",
        "r1=prc,v6 r2=prc p1",
    ) else {
        return;
    };
    let pub_ip = |h: &str| -> IpAddr {
        lab.get(&format!("{}_PUBLIC_IP", h.to_uppercase()))
            .unwrap()
            .parse()
            .unwrap()
    };
    let expect = (pub_ip("h2"), pub_ip("h1"));
    assert_connects(&lab, "h1", "h2", "ipv4", Some(expect));
}

#[test]
fn the_ipv6_firewall_lets_nothing_unsolicited_in() {
    let Some(lab) = lab("the_ipv6_firewall_lets_nothing_unsolicited_in", "t6f", "v6-pair") else {
        return;
    };
    // From the internet to h1's global address: dropped by r1's firewall.
    let to_h1 = SocketAddr::new(ip6(&lab, "h1"), 4600);
    let got = listen_and_send(&lab, "h1", "p1", to_h1);
    assert_eq!(got, 0, "unsolicited IPv6 datagrams reached h1");
    // The other way (out through the firewall) works: the path itself is fine.
    let p1: IpAddr = lab.get("P1_IP6").unwrap().parse().unwrap();
    let got = listen_and_send(&lab, "p1", "h1", SocketAddr::new(p1, 4601));
    assert!(got > 0, "h1 cannot reach p1 over IPv6");
}

/// `listener` listens on `to`'s port (IPv6) while `sender` sends 5 datagrams to `to`; what
/// arrived.
fn listen_and_send(lab: &Lab, listener: &str, sender: &str, to: SocketAddr) -> usize {
    let bind = format!("[::]:{}", to.port());
    let mut listen = Running::new(
        lab.spawn_probe(listener, &["listen", "--bind", &bind, "--ms", "1500"])
            .unwrap(),
    );
    listen.wait_line("READY", Duration::from_secs(5));
    let to = to.to_string();
    lab.probe(
        sender,
        &[
            "send",
            "--to",
            &to,
            "--bind",
            "[::]:0",
            "--count",
            "5",
            "--interval-ms",
            "100",
        ],
    )
    .unwrap();
    listen.finish().iter().filter(|l| l.starts_with("RECV")).count()
}

#[test]
fn probe_reports_ipv6_beside_ipv4() {
    let Some(lab) = lab("probe_reports_ipv6_beside_ipv4", "t6r", "r1=prc,v6 r2=prc p1") else {
        return;
    };
    let (s1, s2) = (
        format!("{}:3478", lab.get("STUN1").unwrap()),
        format!("{}:3478", lab.get("STUN2").unwrap()),
    );
    let stun = stun6(&lab);
    let mut args = vec!["probe", "--json", "--no-upnp", "--no-pcp", "--stun", &s1, "--stun", &s2];
    args.extend(stun.iter().map(String::as_str));
    // Dual-stack h1: IPv4 behind a port-restricted cone, IPv6 behind a stateful firewall (no
    // NAT: seen at its own address; filtered by address and port).
    let p = natt_json(&lab, &natt_bin(), "h1", &args);
    println!("h1: {p}");
    assert_eq!(p["mapping"], "endpoint-independent");
    assert_eq!(p["filtering"], "address-and-port-dependent");
    let v6 = &p["ipv6"];
    assert_eq!(v6["reachable"], true, "{p}");
    assert_eq!(v6["mapping"], "endpoint-independent", "{p}");
    assert_eq!(v6["filtering"], "address-and-port-dependent", "{p}");
    let seen: SocketAddr = v6["addresses"][0].as_str().unwrap().parse().unwrap();
    assert_eq!(seen.ip(), ip6(&lab, "h1"));
    // h2 has no IPv6: said so, IPv4 as before.
    let p = natt_json(&lab, &natt_bin(), "h2", &args);
    println!("h2: {p}");
    assert_eq!(p["ipv6"]["reachable"], false, "{p}");
    assert_eq!(p["mapping"], "endpoint-independent");
    // Without IPv6 STUN servers, no ipv6 report.
    let p = natt_json(
        &lab,
        &natt_bin(),
        "h1",
        &["probe", "--json", "--no-upnp", "--no-pcp", "--stun", &s1, "--stun", &s2],
    );
    assert!(p["ipv6"].is_null(), "{p}");
}

#[test]
fn natt_serve_answers_over_ipv6_and_dual_stack() {
    let Some(lab) = lab(
        "natt_serve_answers_over_ipv6_and_dual_stack",
        "t6v",
        "r1=prc,v6 r2=prc p1",
    ) else {
        return;
    };
    let bin = natt_bin().display().to_string();
    let (a6, b6) = (lab.get("SRV1_6").unwrap(), lab.get("SRV2_6").unwrap());
    let (l1, l2) = (format!("[{a6}]:5483"), format!("[{b6}]:5483"));
    // An RFC 5780 server on two IPv6 addresses, and a dual-stack one on [::] (another port).
    let mut serve6 = Running::new(
        lab.spawn("inet", &[bin.as_str(), "serve", "--listen", &l1, "--listen", &l2])
            .unwrap(),
    );
    serve6.wait_line(&format!("serving tcp [{b6}]:5484"), Duration::from_secs(10));
    // The dual-stack one on p1, which has one address of each family (a server on a wildcard
    // address answers from the address the kernel picks: on inet, its gateway's).
    let mut dual = Running::new(
        lab.spawn("p1", &[bin.as_str(), "serve", "--listen", "[::]:6483"])
            .unwrap(),
    );
    dual.wait_line("serving tcp [::]:6483", Duration::from_secs(10));

    let h1_6 = ip6(&lab, "h1");
    // Simple and STUN on different addresses: two connections from one port to one server
    // address would be one four-tuple.
    for proto in ["--udp", "--tcp"] {
        let m = natt_json(
            &lab,
            &natt_bin(),
            "h1",
            &[
                "map",
                proto,
                "--json",
                "--no-upnp",
                "--no-pcp",
                "--simple",
                &l1,
                "--stun",
                &l2,
            ],
        );
        println!("h1 {proto}: {m}");
        for t in m["techniques"].as_array().unwrap() {
            let eps: Vec<SocketAddr> = t["endpoints"]
                .as_array()
                .unwrap()
                .iter()
                .map(|e| e.as_str().unwrap().parse().unwrap())
                .collect();
            assert!(eps.iter().any(|e| e.ip() == h1_6), "{proto} {}: {m}", t["name"]);
        }
    }
    // The dual-stack server answers IPv4 clients at plain IPv4 addresses, and IPv6 ones.
    let h2_public: IpAddr = lab.get("H2_PUBLIC_IP").unwrap().parse().unwrap();
    let p1 = format!("{}:6483", lab.get("P1_IP").unwrap());
    let p1_6 = format!("[{}]:6483", lab.get("P1_IP6").unwrap());
    for proto in ["--udp", "--tcp"] {
        for technique in ["--simple", "--stun"] {
            let m = natt_json(
                &lab,
                &natt_bin(),
                "h2",
                &["map", proto, "--json", "--no-upnp", "--no-pcp", technique, &p1],
            );
            println!("h2 {proto} {technique}: {m}");
            let ep: SocketAddr = m["techniques"][0]["endpoints"][0].as_str().unwrap().parse().unwrap();
            assert_eq!(ep.ip(), h2_public, "{m}");
        }
        let m = natt_json(
            &lab,
            &natt_bin(),
            "h1",
            &[
                "map",
                proto,
                "--json",
                "--no-upnp",
                "--no-pcp",
                "--stun",
                &p1_6,
                "--simple",
                &p1,
            ],
        );
        println!("h1 {proto} dual: {m}");
        let seen: Vec<IpAddr> = m["techniques"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|t| t["endpoints"].as_array().unwrap().iter())
            .map(|e| e.as_str().unwrap().parse::<SocketAddr>().unwrap().ip())
            .collect();
        assert!(seen.contains(&h1_6), "{m}");
        assert!(seen.contains(&IpAddr::V4(ip(&lab, "H1_PUBLIC_IP"))), "{m}");
    }
    for s in [serve6, dual] {
        s.stop();
    }
}

/// Bytes queued on `host`'s UDP sockets at `port` (`ss` Recv-Q); 0 when there is none.
fn recv_q(lab: &Lab, host: &str, port: u16) -> u64 {
    let filter = format!("sport = :{port}");
    let out = lab.run(host, &["ss", "-Huan", &filter]).unwrap();
    out.split_whitespace().nth(1).and_then(|v| v.parse().ok()).unwrap_or(0)
}

/// The ACCEPT rules in r1's IPv6 pinhole chain (miniupnpd's legacy `MINIUPNPD`).
fn pinholes(lab: &Lab) -> Vec<String> {
    let out = lab.run("r1", &["ip6tables-legacy", "-S", "MINIUPNPD"]).unwrap();
    out.lines()
        .filter(|l| l.starts_with("-A"))
        .map(str::to_string)
        .collect()
}

/// p1 opens a TCP connection to `to`: `refused` (h1's kernel answered: the SYN got through),
/// `timeout` (dropped at the router) or `connected`.
fn tcp_from_p1(lab: &Lab, to: SocketAddr) -> &'static str {
    let script = format!("exec 3<>/dev/tcp/{}/{}", to.ip(), to.port());
    let out = lab.exec("p1", &["timeout", "1.5", "bash", "-c", &script]).unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    match out.status.code() {
        Some(0) => "connected",
        Some(124) => "timeout",
        _ if stderr.contains("refused") => "refused",
        _ => panic!("bash /dev/tcp to {to}: {}: {stderr}", out.status),
    }
}

#[test]
fn pcp_pinhole_lets_the_internet_in_over_ipv6_until_released() {
    let Some(lab) = lab(
        "pcp_pinhole_lets_the_internet_in_over_ipv6_until_released",
        "t6h",
        "r1=prc,v6,upnp p1",
    ) else {
        return;
    };
    pinhole_test(&lab, "--no-upnp", "pcp", 42001);
}

#[test]
fn upnp_pinhole_lets_the_internet_in_over_ipv6_until_released() {
    let Some(lab) = lab(
        "upnp_pinhole_lets_the_internet_in_over_ipv6_until_released",
        "t6u",
        "r1=prc,v6,upnp p1",
    ) else {
        return;
    };
    pinhole_test(&lab, "--no-pcp", "upnp", 42011);
}

/// `natt map --hold` with one port-mapping technique (`only`: the flag that turns the other
/// off) opens an IPv6 pinhole named `technique`, open; p1 gets in over IPv6 (UDP, TCP) while it
/// is held, and not after release; r1's pinhole chain is empty again.
fn pinhole_test(lab: &Lab, only: &str, technique: &str, first_port: u16) {
    assert_upnp_forwarding(lab);
    let h1_6 = ip6(lab, "h1");
    for (proto, port) in [("--udp", first_port), ("--tcp", first_port + 1)] {
        let to = SocketAddr::new(h1_6, port);
        // Before: r1's firewall drops what p1 sends.
        assert!(pinholes(lab).is_empty());
        if proto == "--tcp" {
            assert_eq!(tcp_from_p1(lab, to), "timeout", "the firewall lets TCP in");
        }
        let port_s = port.to_string();
        let mut cmd = lab.command("h1", natt_bin()).unwrap();
        cmd.args(["map", proto, "--port", &port_s, only, "--json", "--hold"]);
        cmd.stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped());
        let mut child = cmd.spawn().unwrap();
        let stdin = child.stdin.take();
        let mut held = Running::new(child);
        let line = held.wait_line("{", Duration::from_secs(10));
        let json: serde_json::Value = serde_json::from_str(&line).unwrap();
        let ep = json["endpoints"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["addr"] == to.to_string())
            .unwrap_or_else(|| panic!("{proto}: no endpoint {to}: {json}"))
            .clone();
        assert_eq!(ep["technique"], technique, "{proto}: {json}");
        assert_eq!(ep["nat_restricted"], false, "{proto}: a pinhole is open: {json}");
        assert_eq!(pinholes(lab).len(), 1, "{proto}: {:?}", pinholes(lab));
        // The internet gets in over IPv6.
        if proto == "--udp" {
            let before = recv_q(lab, "h1", port);
            let dest = to.to_string();
            lab.probe(
                "p1",
                &[
                    "send",
                    "--to",
                    &dest,
                    "--bind",
                    "[::]:0",
                    "--count",
                    "3",
                    "--interval-ms",
                    "20",
                ],
            )
            .unwrap();
            let end = Instant::now() + Duration::from_secs(1);
            while recv_q(lab, "h1", port) <= before && Instant::now() < end {
                std::thread::sleep(Duration::from_millis(20));
            }
            assert!(
                recv_q(lab, "h1", port) > before,
                "p1 -> {to} did not reach natt's socket"
            );
        } else {
            assert_eq!(tcp_from_p1(lab, to), "refused", "p1's SYN to {to} did not reach h1");
        }
        // Released: the pinhole is gone, and the firewall drops again.
        drop(stdin);
        let end = Instant::now() + Duration::from_secs(10);
        while held.child.try_wait().unwrap().is_none() {
            assert!(Instant::now() < end, "natt map --hold did not end");
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(pinholes(lab).is_empty(), "{proto}: left: {:?}", pinholes(lab));
        if proto == "--udp" {
            assert_eq!(listen_and_send(lab, "h1", "p1", to), 0, "inbound after release");
        } else {
            assert_eq!(tcp_from_p1(lab, to), "timeout", "inbound TCP after release");
        }
    }
}
