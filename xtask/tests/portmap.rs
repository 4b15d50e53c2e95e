//! UPnP and PCP together on one router (miniupnpd speaks both): with natt's default
//! techniques, exactly one of them maps the socket's port, and releasing leaves no mapping.
//! Without that, both map the same port, and each protocol's renewal and deletion act on the
//! other's rule.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

mod common;

use std::process::Stdio;
use std::time::{Duration, Instant};

use common::*;
use xtask::lab::Lab;

/// The router's forwarding rules for `h1`'s `port` (`upnpc -l` lists UPnP, PCP and NAT-PMP
/// mappings alike).
fn rules(lab: &Lab, port: u16) -> Vec<String> {
    let h1 = lab.get("H1_IP").unwrap();
    let needle = format!("->{h1}:{port} ");
    upnpc_list(lab).into_iter().filter(|l| l.contains(&needle)).collect()
}

#[test]
fn upnp_and_pcp_take_turns_on_one_router() {
    let Some(lab) = lab("upnp_and_pcp_take_turns_on_one_router", "tpm", "r1=prc,upnp p1") else {
        return;
    };
    for (proto, port) in [("--udp", 41300u16), ("--tcp", 41301)] {
        let mut cmd = lab.command("h1", natt_bin()).unwrap();
        cmd.args(["map", proto, "--port", &port.to_string(), "--hold", "--json"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        let mut child = cmd.spawn().unwrap();
        let stdin = child.stdin.take();
        let mut running = Running::new(child);
        let line = running.wait_line("{", Duration::from_secs(10));
        let json: serde_json::Value = serde_json::from_str(&line).unwrap();
        println!("{proto}: {line}");
        let mappers: Vec<&str> = json["endpoints"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["technique"].as_str().unwrap())
            .filter(|t| ["upnp", "pcp", "nat-pmp"].contains(t))
            .collect();
        assert_eq!(
            mappers.len(),
            1,
            "{proto}: one port-mapping technique maps the port: {line}"
        );
        let listed = rules(&lab, port);
        assert_eq!(listed.len(), 1, "{proto}: one rule on the router: {listed:?}");
        drop(stdin);
        let t0 = Instant::now();
        let status = running.child.wait().unwrap();
        assert!(status.success());
        println!("{proto}: released in {:?}", t0.elapsed());
        assert_eq!(
            rules(&lab, port),
            Vec::<String>::new(),
            "{proto}: a rule is left after release"
        );
    }
}
