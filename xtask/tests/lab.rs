//! NAT lab tests: the lab behaves like the NATs it claims to be, and natt's simple-protocol
//! mapping finds a host's public address behind each of them.
//!
//! They need root and an isolated network namespace: `cargo xtask test` runs them inside
//! `unshare --net`; run directly as root (`cargo test -p xtask --test lab`), each test re-runs
//! itself that way. Without root each prints "skipped: the NAT lab needs root" and passes.
//! Every test uses its own lab prefix.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]
mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use common::*;
use xtask::lab::{Lab, daemons, netns, topology::PRESETS};

// ------------------------------------------------------------------------- lab sanity

#[test]
fn prc_nat_keeps_ports_and_filters_unsolicited_inbound() {
    let Some(lab) = lab(
        "prc_nat_keeps_ports_and_filters_unsolicited_inbound",
        "tprc",
        "r1=prc p1",
    ) else {
        return;
    };
    let wan = ip(&lab, "R1_WAN");
    // Endpoint-independent mapping, port preserved.
    let (a, b) = observe(&lab, "h1", 40100);
    assert_eq!(a, SocketAddr::from((wan, 40100)), "prc mapping");
    assert_eq!(a, b, "prc maps both destinations to one external port");
    // Address-dependent filtering: a host that h1 never contacted cannot get in.
    let (mapped, got) = unsolicited(&lab, "h1", 40101, "p1", None);
    assert_eq!(mapped, SocketAddr::from((wan, 40101)));
    assert!(got.is_empty(), "unsolicited from p1 reached h1 behind prc: {got:?}");
    // Port-dependent filtering: the contacted IP from another port cannot get in either.
    let (_, got) = unsolicited(&lab, "h1", 40102, "inet", Some("203.0.113.20:7001"));
    assert!(
        got.is_empty(),
        "inbound from the observer's IP, other port, reached h1: {got:?}"
    );
}

#[test]
fn sym_nat_maps_each_destination_to_its_own_port() {
    let Some(lab) = lab("sym_nat_maps_each_destination_to_its_own_port", "tsym", "r1=sym p1") else {
        return;
    };
    let (a, b) = observe(&lab, "h1", 40200);
    assert_eq!(a.ip(), ip(&lab, "R1_WAN"));
    assert_eq!(b.ip(), ip(&lab, "R1_WAN"));
    assert_ne!(a.port(), b.port(), "symmetric NAT reused one port for two destinations");
    let (_, got) = unsolicited(&lab, "h1", 40201, "p1", None);
    assert!(got.is_empty(), "unsolicited from p1 reached h1 behind sym: {got:?}");
}

#[test]
fn full_cone_keeps_ports_and_lets_anyone_in() {
    let Some(lab) = lab("full_cone_keeps_ports_and_lets_anyone_in", "tfull", "r1=full p1") else {
        return;
    };
    let wan = ip(&lab, "R1_WAN");
    let (a, b) = observe(&lab, "h1", 40300);
    assert_eq!(a, SocketAddr::from((wan, 40300)));
    assert_eq!(a, b, "full cone maps both destinations to one external port");
    // The positive control of the filtering tests above: the probe does see inbound traffic.
    let (_, got) = unsolicited(&lab, "h1", 40301, "p1", None);
    assert!(
        got.iter().any(|l| l.contains("198.51.100.11:")),
        "p1 did not reach h1 behind a full cone: {got:?}"
    );
}

#[test]
fn hairpin_on_and_off() {
    if !isolated("hairpin_on_and_off") {
        return;
    }
    for (topology, expect) in [("hairpin", true), ("nohairpin", false)] {
        let lab = Lab::up_with("thair", topology, Path::new(TOOL)).unwrap();
        let (mapped, got) = unsolicited(&lab, "h1", 40400, "h1b", None);
        assert_eq!(mapped.ip(), ip(&lab, "R1_WAN"));
        assert_eq!(!got.is_empty(), expect, "{topology}: h1b -> h1 via {mapped}: {got:?}");
        if expect {
            // Hairpinned traffic arrives from the router's public address.
            assert!(got.iter().any(|l| l.contains(&format!("{}:", mapped.ip()))), "{got:?}");
        }
        lab.down().unwrap();
    }
}

#[test]
fn upnp_router_maps_a_port_for_a_host() {
    let Some(lab) = lab("upnp_router_maps_a_port_for_a_host", "tupnp", "upnp") else {
        return;
    };
    assert_upnp_forwarding(&lab);
    let igd = lab.get("R1_IGD_URL").unwrap();
    let h1 = lab.get("H1_IP").unwrap();
    let out = lab
        .run("h1", &["upnpc", "-u", &igd, "-a", &h1, "40500", "40500", "UDP"])
        .unwrap();
    assert!(out.contains("is redirected"), "upnpc -a: {out}");
    // Unsolicited inbound now reaches h1 at the mapped port.
    let mut listen = Running::new(
        lab.spawn_probe("h1", &["listen", "--bind", "0.0.0.0:40500", "--ms", "1500"])
            .unwrap(),
    );
    listen.wait_line("READY", Duration::from_secs(5));
    let to = format!("{}:40500", lab.get("R1_WAN").unwrap());
    lab.probe("p1", &["send", "--to", &to, "--count", "5"]).unwrap();
    let got = listen.finish();
    assert!(got.iter().any(|l| l.starts_with("RECV 198.51.100.11:")), "{got:?}");
}

#[test]
fn link_delay_and_loss() {
    let Some(mut lab) = lab("link_delay_and_loss", "timp", "r1=prc,delay=40 p1") else {
        return;
    };
    let rtt = |lab: &Lab, count: &str, interval: &str| -> (f64, f64) {
        let out = lab
            .probe(
                "h1",
                &["rtt", "--to", OBS1, "--count", count, "--interval-ms", interval],
            )
            .unwrap();
        let field = |k: &str| -> f64 {
            out.split_whitespace()
                .find_map(|f| f.strip_prefix(k))
                .and_then(|v| v.parse().ok())
                .unwrap_or(f64::NAN)
        };
        let sent = field("sent=");
        (field("received=") / sent, field("median_ms="))
    };
    // 40 ms each way on r1's WAN link: 80 ms round trip to the internet.
    let (ratio, median) = rtt(&lab, "20", "10");
    println!("delay 40: received {ratio:.2}, median rtt {median:.1} ms");
    assert_eq!(ratio, 1.0);
    assert!((79.0..110.0).contains(&median), "median rtt {median} ms");
    // 20 % loss each way: about 64 % of round trips complete.
    lab.impair("r1", 0, 20.0).unwrap();
    let (ratio, median) = rtt(&lab, "400", "2");
    println!("loss 20 %: received {ratio:.2}, median rtt {median:.1} ms");
    assert!((0.54..0.74).contains(&ratio), "received {ratio}");
    assert!(median < 10.0, "median rtt {median} ms without delay");
    lab.impair("r1", 0, 0.0).unwrap();
    let (ratio, _) = rtt(&lab, "100", "2");
    assert_eq!(ratio, 1.0);
    assert_eq!(lab.get("R1_LOSS_PCT").unwrap(), "0");
}

#[test]
fn down_leaves_no_namespace_and_no_process() {
    let Some(lab) = lab(
        "down_leaves_no_namespace_and_no_process",
        "tdown",
        "r1=prc,upnp,delay=5 r2=sym,via=r1 p1",
    ) else {
        return;
    };
    let namespaces = netns::list("tdown").unwrap();
    assert_eq!(namespaces.len(), 6, "{namespaces:?}");
    let pids: Vec<u32> = namespaces.iter().flat_map(|ns| netns::pids(ns)).collect();
    // coturn, observer, miniupnpd, two delay relays
    assert!(pids.len() >= 5, "{pids:?}");
    let dir = lab.state_dir().to_path_buf();
    lab.down().unwrap();
    assert!(netns::list("tdown").unwrap().is_empty());
    let alive: Vec<_> = pids.iter().filter(|p| daemons::is_running(**p)).collect();
    assert!(alive.is_empty(), "still running: {alive:?}");
    assert!(!dir.exists());
}

#[test]
fn every_preset_comes_up() {
    if !isolated("every_preset_comes_up") {
        return;
    }
    // `up` itself checks each router's and public host's uplink and public address.
    for p in PRESETS {
        let t0 = Instant::now();
        let lab = Lab::up_with("tpre", p.name, Path::new(TOOL)).unwrap_or_else(|e| panic!("lab up {}: {e}", p.name));
        let up = t0.elapsed().as_secs_f64();
        let upnp: Vec<String> = lab
            .info()
            .into_iter()
            .filter(|(k, _)| k.ends_with("_UPNP_FORWARDING"))
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        let t1 = Instant::now();
        lab.down().unwrap();
        println!(
            "preset {:<11} up {up:5.2} s  down {:4.2} s  {}",
            p.name,
            t1.elapsed().as_secs_f64(),
            upnp.join(" ")
        );
    }
}

/// natt's simple-protocol mapping from `host` finds the outermost public address, UDP and TCP.
fn simple_mapping(name: &str, prefix: &str, topology: &str, host: &str) {
    let Some(lab) = lab(name, prefix, topology) else {
        return;
    };
    let natt = natt_bin();
    let serve = natt_serve(&lab, &natt);
    let public = ip(&lab, &format!("{}_PUBLIC_IP", host.to_uppercase()));
    for proto in ["--udp", "--tcp"] {
        let addr = natt_map(&lab, &natt, host, proto);
        println!("{topology}: natt map {proto} from {host}: {addr}");
        assert_eq!(addr.ip(), public, "natt map {proto} from {host} behind {topology}");
        assert_ne!(addr.port(), 0);
    }
    serve.stop();
}

#[test]
fn simple_mapping_behind_prc() {
    simple_mapping("simple_mapping_behind_prc", "tsprc", "r1=prc p1", "h1");
}

#[test]
fn simple_mapping_behind_sym() {
    simple_mapping("simple_mapping_behind_sym", "tssym", "r1=sym p1", "h1");
}

#[test]
fn simple_mapping_behind_full_cone() {
    simple_mapping("simple_mapping_behind_full_cone", "tsfull", "r1=full p1", "h1");
}

#[test]
fn simple_mapping_behind_double_nat() {
    simple_mapping(
        "simple_mapping_behind_double_nat",
        "tsdbl",
        "r1=prc,cgn,hosts=0 r2=prc,via=r1 p1",
        "h2",
    );
}
