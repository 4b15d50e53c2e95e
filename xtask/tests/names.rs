//! NAT lab tests of servers by name (issue 19): `natt map` and `natt probe` in a home host
//! find a STUN server (coturn) and a `natt serve` by names from a hosts file, with the
//! protocols' default ports, and an unknown name fails its technique, naming the host, within
//! the mapping's timeout.
//!
//! `ip netns exec NS` (how the lab runs commands in a node) bind-mounts the files of
//! `/etc/netns/NS/` over `/etc/`: the test writes a `hosts` file there, and a `resolv.conf`
//! naming no reachable DNS server, so no lookup leaves the lab. Like `lab.rs`: root and an
//! isolated network namespace (the test re-runs itself inside `unshare --net`).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]
mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;
use xtask::lab::Lab;

/// Removes `/etc/netns/NS` when the test ends, passed or not.
struct NetnsEtc(PathBuf);

impl Drop for NetnsEtc {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Gives `node` a hosts file with `entries` (`IP NAME` lines) and a resolver that answers
/// nothing (no DNS server: a name not in the hosts file fails at once).
fn hosts_file(lab: &Lab, node: &str, entries: &str) -> NetnsEtc {
    let dir = Path::new("/etc/netns").join(lab.ns(node).unwrap());
    std::fs::create_dir_all(&dir).unwrap();
    let guard = NetnsEtc(dir.clone());
    std::fs::write(dir.join("hosts"), format!("127.0.0.1 localhost\n{entries}")).unwrap();
    std::fs::write(
        dir.join("resolv.conf"),
        "nameserver 127.0.0.1\noptions timeout:1 attempts:1\n",
    )
    .unwrap();
    guard
}

/// The endpoints of `natt map ... --json` as (address, technique).
fn endpoints(json: &str) -> Vec<(SocketAddr, String)> {
    let v: Value = serde_json::from_str(json.trim()).unwrap_or_else(|e| panic!("bad JSON ({e}): {json}"));
    v["endpoints"]
        .as_array()
        .unwrap_or_else(|| panic!("no endpoints: {json}"))
        .iter()
        .map(|e| {
            (
                e["addr"].as_str().unwrap().parse().unwrap(),
                e["technique"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

#[test]
fn servers_by_name_through_a_hosts_file() {
    let Some(lab) = lab("servers_by_name_through_a_hosts_file", "tnames", "r1=prc p1") else {
        return;
    };
    let bin = natt_bin();
    let serve = natt_serve(&lab, &bin);
    let stun1 = lab.get("STUN1").unwrap();
    let stun_port = lab.get("STUN_PORT").unwrap();
    // The lab's coturn listens on STUN's default port: the name alone must do.
    assert_eq!(stun_port, "3478", "the lab's STUN port");
    let _etc = hosts_file(&lab, "h1", &format!("{stun1} stun1.lab\n203.0.113.20 natt.lab\n"));
    let public = ip(&lab, "H1_PUBLIC_IP");
    let common = ["--no-upnp", "--no-pcp"];

    // Both techniques by name, default ports, UDP and TCP: r1's WAN address, no failure.
    for proto in ["--udp", "--tcp"] {
        let mut args = vec!["map", proto, "--stun", "stun1.lab", "--simple", "natt.lab"];
        args.extend(common);
        let text = natt(&lab, &bin, "h1", &args);
        println!("natt {}:\n{text}", args.join(" "));
        assert!(!text.contains("failed"), "{text}");
        assert!(text.contains(&format!("{public}:")), "no endpoint at {public}: {text}");
        let mut json_args = args.clone();
        json_args.push("--json");
        let eps = endpoints(&natt(&lab, &bin, "h1", &json_args));
        assert!(eps.iter().any(|(a, _)| a.ip() == public), "{eps:?}");
    }
    // Each technique alone: it is the one credited with the public address.
    for (flag, name, technique) in [("--stun", "stun1.lab", "stun"), ("--simple", "natt.lab", "simple")] {
        for proto in ["--udp", "--tcp"] {
            let mut args = vec!["map", proto, flag, name, "--json"];
            args.extend(common);
            let eps = endpoints(&natt(&lab, &bin, "h1", &args));
            println!("natt {}: {eps:?}", args.join(" "));
            assert!(
                eps.iter().any(|(a, t)| a.ip() == public && t == technique),
                "{technique} by name over {proto}: {eps:?}"
            );
        }
    }
    // natt probe resolves the STUN name for behaviour discovery too.
    let p = natt_json(
        &lab,
        &bin,
        "h1",
        &["probe", "--stun", "stun1.lab", "--no-upnp", "--no-pcp", "--json"],
    );
    println!("natt probe --stun stun1.lab: {p}");
    assert_eq!(p["mapping"], "endpoint-independent", "{p}");
    assert!(
        p["external"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a.as_str().unwrap().starts_with(&format!("{public}:"))),
        "{p}"
    );

    // An unknown name fails its technique, naming the host, well within the timeout; the
    // other technique still maps.
    let t0 = Instant::now();
    let text = natt(
        &lab,
        &bin,
        "h1",
        &[
            "map",
            "--udp",
            "--stun",
            "nosuch.lab",
            "--simple",
            "natt.lab",
            "--timeout",
            "2",
            "--no-upnp",
            "--no-pcp",
        ],
    );
    let took = t0.elapsed();
    println!("unknown name, in {took:?}:\n{text}");
    let failure = text
        .lines()
        .find(|l| l.starts_with("# stun failed"))
        .unwrap_or_else(|| panic!("no STUN failure: {text}"));
    assert!(failure.contains("cannot resolve nosuch.lab:3478"), "{failure}");
    assert!(
        text.contains(&format!("{public}:")),
        "simple by name still maps: {text}"
    );
    assert!(took < Duration::from_millis(2900), "took {took:?}");

    serve.stop();
}
