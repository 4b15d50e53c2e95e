//! NAT lab tests of natt's UPnP IGD port mapping against a real miniupnpd: mappings let the
//! internet in and are deleted after, short leases are renewed while held and expire when
//! the holder dies, a port taken by another host gets another, and a router without UPnP or
//! a gateway that never answers costs no more than the deadline while the other techniques
//! still map, a gateway given by URL maps without any SSDP (and is searched for at its host
//! when nothing answers at the URL), and a LAN device posing as a gateway is not taken.
//!
//! natt runs with `--no-pcp` here: miniupnpd also speaks PCP and NAT-PMP, and natt's PCP
//! technique would map the same port on it, into the same rule.
//!
//! They need root and an isolated network namespace: `cargo xtask test` runs them inside
//! `unshare --net`; run directly as root (`cargo test -p xtask --test upnp`, after
//! `cargo build -p natt-cli`), each test re-runs itself that way. Without root each prints
//! "skipped: the NAT lab needs root" and passes. Every test uses its own lab prefix.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]
mod common;

use std::net::SocketAddr;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use common::*;
use xtask::lab::Lab;

/// `natt map --hold --json` running in a node: its endpoints, and its standard input, whose
/// end releases the mapping.
struct Held {
    running: Running,
    stdin: Option<ChildStdin>,
    json: serde_json::Value,
}

impl Held {
    /// Maps `proto` (`--udp`, `--tcp`) port `port` in `node` and holds it. `env`: extra
    /// environment (`NATT_UPNP_LEASE_SECS`, `NATT_UPNP_IGD`).
    fn start(lab: &Lab, node: &str, proto: &str, port: u16, env: &[(&str, &str)]) -> Held {
        let t0 = Instant::now();
        let mut cmd: Command = lab.command(node, natt_bin()).unwrap();
        // UPnP alone: PCP would map the same port on the same miniupnpd (one shared rule).
        cmd.args([
            "map",
            proto,
            "--port",
            &port.to_string(),
            "--no-pcp",
            "--hold",
            "--json",
        ])
        .envs(env.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
        // `ip netns exec` execs natt itself: the child's pid is natt's.
        let mut child: Child = cmd.spawn().unwrap();
        let stdin = child.stdin.take();
        let mut running = Running::new(child);
        let line = running.wait_line("{", Duration::from_secs(10));
        let json: serde_json::Value = serde_json::from_str(&line).unwrap();
        let took = t0.elapsed();
        println!("{node}: natt map {proto} --port {port} in {took:?}: {line}");
        Held { running, stdin, json }
    }

    /// The endpoint the `technique` found.
    fn endpoint(&self, technique: &str) -> Option<SocketAddr> {
        endpoint_in(&self.json, technique).map(|e| e["addr"].as_str().unwrap().parse().unwrap())
    }

    fn upnp(&self) -> SocketAddr {
        self.endpoint("upnp")
            .unwrap_or_else(|| panic!("no upnp endpoint: {}", self.json))
    }

    /// Ends the hold by closing standard input; how long natt took to release and exit.
    fn release(mut self) -> Duration {
        let t0 = Instant::now();
        drop(self.stdin.take());
        let end = t0 + Duration::from_secs(10);
        loop {
            if let Some(status) = self.running.child.try_wait().unwrap() {
                assert!(status.success(), "natt map exited with {status}");
                return t0.elapsed();
            }
            assert!(Instant::now() < end, "natt map did not exit after its stdin closed");
            thread::sleep(Duration::from_millis(10));
        }
    }

    /// Ends the hold with SIGTERM; how long natt took to release and exit.
    fn terminate(mut self) -> Duration {
        let t0 = Instant::now();
        let pid = self.running.child.id().to_string();
        assert!(Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
        let status = self.running.child.wait().unwrap();
        assert!(status.success(), "natt map exited with {status} on SIGTERM");
        t0.elapsed()
    }

    /// Kills natt (SIGKILL): nothing is released.
    fn kill(mut self) {
        self.running.child.kill().unwrap();
        let _ = self.running.child.wait();
    }
}

/// The router's port mappings made by natt (`upnpc -l` lines such as
/// ` 0 UDP 41000->192.168.1.2:41000 'natt udp 41000' '' 3599`).
fn natt_mappings(lab: &Lab) -> Vec<String> {
    upnpc_list(lab)
        .into_iter()
        .filter(|l| l.contains("->") && l.contains("'natt "))
        .collect()
}

/// Bytes waiting in the receive queue of the UDP socket on `port` in `node` (natt map holds
/// its socket without reading it, so datagrams that reached it stay there).
fn udp_queued(lab: &Lab, node: &str, port: u16) -> u64 {
    let filter = format!("sport = :{port}");
    let out = lab.run(node, &["ss", "-H", "-u", "-a", "-n", filter.as_str()]).unwrap();
    out.split_whitespace()
        .nth(1)
        .and_then(|q| q.parse().ok())
        .unwrap_or_else(|| panic!("no UDP socket on port {port} in {node}: {out:?}"))
}

/// Sends 5 datagrams from `from` to `to`.
fn send(lab: &Lab, from: &str, to: SocketAddr) {
    let to = to.to_string();
    lab.probe(from, &["send", "--to", &to, "--count", "5", "--interval-ms", "20"])
        .unwrap();
    thread::sleep(Duration::from_millis(100));
}

/// Datagrams from `from` to `to` that a probe listening on `port` in `node` received.
fn udp_received(lab: &Lab, node: &str, port: u16, from: &str, to: SocketAddr) -> Vec<String> {
    let bind = format!("0.0.0.0:{port}");
    let mut listen = Running::new(
        lab.spawn_probe(node, &["listen", "--bind", &bind, "--ms", "800"])
            .unwrap(),
    );
    listen.wait_line("READY", Duration::from_secs(5));
    send(lab, from, to);
    listen.finish().into_iter().filter(|l| l.starts_with("RECV")).collect()
}

/// `natt map --tcp --simple TO --no-upnp` from `node`: true when the simple-protocol server at
/// `to` answered over TCP.
fn tcp_simple_answers(lab: &Lab, node: &str, to: SocketAddr) -> bool {
    let natt = natt_bin().display().to_string();
    let to = to.to_string();
    let argv = [
        natt.as_str(),
        "map",
        "--tcp",
        "--simple",
        &to,
        "--no-upnp",
        "--no-pcp",
        "--timeout",
        "1.5",
    ];
    let out = lab.exec(node, &argv).unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    !text.contains("# simple failed")
}

/// `natt map` (text) from `node` with `args`: every line, and how long it took.
fn natt_map_text(lab: &Lab, node: &str, args: &[&str], env: &[(&str, &str)]) -> (Vec<String>, Duration) {
    let t0 = Instant::now();
    let mut cmd = lab.command(node, natt_bin()).unwrap();
    cmd.arg("map")
        .args(args)
        .arg("--no-pcp")
        .envs(env.iter().copied())
        .stdin(Stdio::null());
    let out = cmd.output().unwrap();
    let took = t0.elapsed();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "natt map {args:?}: {}\n{text}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    println!("natt map {args:?} in {took:?}:\n{text}");
    (text.lines().map(str::to_owned).collect(), took)
}

/// Nothing of natt's is left on the router (`what` says why there should not be); then stops
/// the `natt serve` the test started.
fn assert_released_and_stop(lab: &Lab, serve: Running, what: &str) {
    assert_eq!(natt_mappings(lab), Vec::<String>::new(), "{what}");
    serve.stop();
}

/// `natt map`'s text output has an endpoint of `technique` on the router's external address
/// `wan`.
fn assert_on(lines: &[String], technique: &str, wan: std::net::Ipv4Addr) {
    assert_eq!(
        text_endpoint(lines, technique).map(|a| a.ip()),
        Some(wan.into()),
        "{lines:?}"
    );
}

/// The endpoint of `technique` in `natt map`'s text output.
fn text_endpoint(lines: &[String], technique: &str) -> Option<SocketAddr> {
    lines.iter().find_map(|l| {
        let mut words = l.split_whitespace();
        let addr = words.next()?;
        (words.next()? == technique).then(|| addr.parse().ok())?
    })
}

/// SIGSTOPs a process until dropped (then SIGCONT), so a daemon stays up but answers nothing.
struct Frozen(String);

impl Frozen {
    fn new(pid: String) -> Frozen {
        let ok = Command::new("kill").args(["-STOP", &pid]).status().unwrap().success();
        assert!(ok, "kill -STOP {pid}");
        Frozen(pid)
    }
}

impl Drop for Frozen {
    fn drop(&mut self) {
        let _ = Command::new("kill").args(["-CONT", &self.0]).status();
    }
}

fn miniupnpd_pid(lab: &Lab) -> String {
    let file = lab.state_dir().join("miniupnpd-r1.pidfile");
    std::fs::read_to_string(&file)
        .unwrap_or_else(|e| panic!("{}: {e}", file.display()))
        .trim()
        .to_owned()
}

// ------------------------------------------------------------------------------- tests

#[test]
fn udp_and_tcp_mappings_let_the_internet_in_and_are_deleted_after() {
    let Some(lab) = lab(
        "udp_and_tcp_mappings_let_the_internet_in_and_are_deleted_after",
        "uudp",
        "r1=prc,upnp p1",
    ) else {
        return;
    };
    let wan = ip(&lab, "R1_WAN");
    let h1 = lab.get("H1_IP").unwrap();

    // UDP: the socket (bound to 0.0.0.0) is mapped to h1's LAN address, same port.
    let udp = Held::start(&lab, "h1", "--udp", 41000, &[]);
    assert_eq!(udp.upnp(), SocketAddr::from((wan, 41000)));
    let listed = natt_mappings(&lab);
    assert!(
        listed
            .iter()
            .any(|l| l.contains(&format!("UDP 41000->{h1}:41000 'natt udp 41000'"))),
        "{listed:?}"
    );
    assert_eq!(udp_queued(&lab, "h1", 41000), 0);
    send(&lab, "p1", udp.upnp());
    assert!(
        udp_queued(&lab, "h1", 41000) > 0,
        "p1's datagrams did not reach natt's socket"
    );

    // TCP: a server on the mapped port (beside natt's reusable socket) answers p1.
    let tcp = Held::start(&lab, "h1", "--tcp", 41001, &[]);
    assert_eq!(tcp.upnp(), SocketAddr::from((wan, 41001)));
    let natt = natt_bin().display().to_string();
    let mut serve = Running::new(
        lab.spawn("h1", &[natt.as_str(), "serve", "--listen", "0.0.0.0:41001"])
            .unwrap(),
    );
    serve.wait_line("serving tcp", Duration::from_secs(5));
    assert!(
        tcp_simple_answers(&lab, "p1", tcp.upnp()),
        "p1 could not reach h1 over TCP"
    );
    assert_eq!(natt_mappings(&lab).len(), 2);

    // Released (end of standard input, SIGTERM): no mapping of ours is left, and the inbound
    // paths are closed.
    let (udp_ep, tcp_ep) = (udp.upnp(), tcp.upnp());
    let released = (udp.release(), tcp.terminate());
    println!(
        "released in {:?} (udp, stdin closed) and {:?} (tcp, SIGTERM)",
        released.0, released.1
    );
    assert!(released.0 < Duration::from_secs(1) && released.1 < Duration::from_secs(1));
    assert_eq!(natt_mappings(&lab), Vec::<String>::new());
    let got = udp_received(&lab, "h1", 41000, "p1", udp_ep);
    assert!(got.is_empty(), "inbound UDP still reaches h1 after release: {got:?}");
    assert!(
        !tcp_simple_answers(&lab, "p1", tcp_ep),
        "inbound TCP still reaches h1 after release"
    );
    serve.stop();
}

#[test]
fn a_short_lease_is_renewed_while_held_and_expires_when_the_holder_dies() {
    let Some(lab) = lab(
        "a_short_lease_is_renewed_while_held_and_expires_when_the_holder_dies",
        "uren",
        "r1=prc,upnp p1",
    ) else {
        return;
    };
    let lease = [("NATT_UPNP_LEASE_SECS", "2")];
    let held = Held::start(&lab, "h1", "--udp", 41100, &lease);
    let dies = Held::start(&lab, "h1", "--udp", 41101, &lease);
    assert_eq!(natt_mappings(&lab).len(), 2);
    dies.kill();
    // Two and a half leases later: the held one is still there (renewed), the other expired.
    thread::sleep(Duration::from_millis(5000));
    let listed = natt_mappings(&lab);
    println!("after 5 s: {listed:?}");
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert!(listed[0].contains("UDP 41100->"), "{listed:?}");
    let lease_left: u32 = listed[0].rsplit(' ').next().unwrap().parse().unwrap();
    assert!(lease_left <= 2, "asked for a 2 s lease: {listed:?}");
    send(&lab, "p1", held.upnp());
    assert!(
        udp_queued(&lab, "h1", 41100) > 0,
        "the renewed mapping does not let p1 in"
    );
    held.release();
    assert_eq!(natt_mappings(&lab), Vec::<String>::new());
}

#[test]
fn a_port_taken_by_another_host_gets_another_external_port() {
    let Some(lab) = lab(
        "a_port_taken_by_another_host_gets_another_external_port",
        "utaken",
        "r1=prc,upnp,hosts=2 p1",
    ) else {
        return;
    };
    let wan = ip(&lab, "R1_WAN");
    let first = Held::start(&lab, "h1b", "--udp", 41200, &[]);
    assert_eq!(first.upnp(), SocketAddr::from((wan, 41200)));
    let second = Held::start(&lab, "h1", "--udp", 41200, &[]);
    let ep = second.upnp();
    assert_eq!(ep.ip(), wan);
    assert_ne!(ep.port(), 41200, "h1 got the port h1b holds");
    println!("h1b holds {}, h1 got {ep}", first.upnp());
    send(&lab, "p1", ep);
    assert!(udp_queued(&lab, "h1", 41200) > 0, "p1 did not reach h1 through {ep}");
    assert_eq!(udp_queued(&lab, "h1b", 41200), 0, "h1's traffic reached h1b");
    assert_eq!(natt_mappings(&lab).len(), 2);
    second.release();
    first.release();
    assert_eq!(natt_mappings(&lab), Vec::<String>::new());
}

#[test]
fn without_upnp_on_the_router_the_other_techniques_still_map() {
    let Some(lab) = lab(
        "without_upnp_on_the_router_the_other_techniques_still_map",
        "uoff",
        "r1=prc p1",
    ) else {
        return;
    };
    let natt = natt_bin();
    let serve = natt_serve(&lab, &natt);
    let wan = ip(&lab, "R1_WAN");
    let (lines, took) = natt_map_text(&lab, "h1", &["--udp", "--simple", "203.0.113.20:5483"], &[]);
    assert_on(&lines, "simple", wan);
    assert!(text_endpoint(&lines, "upnp").is_none());
    let failed = lines.iter().find(|l| l.starts_with("# upnp failed")).unwrap();
    assert!(failed.contains("no UPnP gateway found"), "{failed}");
    // The search waits for answers 1.5 s, well within the 3 s deadline.
    assert!(took < Duration::from_millis(2500), "natt map took {took:?}");

    // natt probe says no gateway answered.
    let natt_s = natt.display().to_string();
    let argv = [
        natt_s.as_str(),
        "probe",
        "--simple",
        "203.0.113.20:5483",
        "--no-pcp",
        "--json",
    ];
    let out = lab.exec("h1", &argv).unwrap();
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(json["gateway"].is_null(), "{json}");
    let upnp = outcome_in(&json, "upnp").unwrap_or_else(|| panic!("no upnp outcome: {json}"));
    assert!(
        upnp["error"].as_str().unwrap().contains("no UPnP gateway found"),
        "{json}"
    );
    serve.stop();
}

#[test]
fn a_gateway_that_never_answers_costs_the_deadline_only() {
    let Some(lab) = lab(
        "a_gateway_that_never_answers_costs_the_deadline_only",
        "usil",
        "r1=prc,upnp p1",
    ) else {
        return;
    };
    let natt = natt_bin();
    let serve = natt_serve(&lab, &natt);
    let wan = ip(&lab, "R1_WAN");
    let igd = lab.get("R1_IGD_URL").unwrap();
    let args = ["--udp", "--simple", "203.0.113.20:5483", "--timeout", "2"];
    {
        // miniupnpd stays up (its HTTP socket accepts connections) but answers nothing.
        let _frozen = Frozen::new(miniupnpd_pid(&lab));
        for env in [vec![], vec![("NATT_UPNP_IGD", igd.as_str())]] {
            let (lines, took) = natt_map_text(&lab, "h1", &args, &env);
            assert_on(&lines, "simple", wan);
            assert!(lines.iter().any(|l| l.starts_with("# upnp failed")), "{lines:?}");
            assert!(took < Duration::from_millis(2600), "{env:?}: natt map took {took:?}");
        }
    }
    // Answering again: natt probe names the gateway.
    let natt_s = natt.display().to_string();
    let out = lab
        .exec("h1", &[natt_s.as_str(), "probe", "--no-pcp", "--json"])
        .unwrap();
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["gateway"], format!("upnp igdv2 {wan} at {igd}").as_str(), "{json}");
    assert_eq!(
        natt_mappings(&lab),
        Vec::<String>::new(),
        "the probe released its mapping"
    );
    // And the gateway given by URL (its description read from the URL) maps.
    let (lines, _) = natt_map_text(&lab, "h1", &["--udp"], &[("NATT_UPNP_IGD", igd.as_str())]);
    assert_on(&lines, "upnp", wan);
    assert_released_and_stop(&lab, serve, "natt map released its mapping");
}

#[test]
fn a_gateway_given_by_url_needs_no_search_and_one_that_moved_is_searched_for() {
    let Some(lab) = lab(
        "a_gateway_given_by_url_needs_no_search_and_one_that_moved_is_searched_for",
        "uurl",
        "r1=prc,upnp p1",
    ) else {
        return;
    };
    let natt = natt_bin();
    let serve = natt_serve(&lab, &natt);
    let wan = ip(&lab, "R1_WAN");
    let igd = lab.get("R1_IGD_URL").unwrap();
    // Nothing listens on miniupnpd's HTTP port + 1: a URL taken before it restarted elsewhere.
    let moved = igd.replace(":5000/", ":5001/");
    assert_ne!(moved, igd, "the lab's miniupnpd listens on port 5000");
    let args = ["--udp", "--simple", "203.0.113.20:5483", "--timeout", "2"];
    let drop_ssdp = ["-p", "udp", "--dport", "1900", "-j", "DROP"];
    let iptables = |op: &str| {
        let mut cmd = vec!["iptables", op, "INPUT"];
        cmd.extend(drop_ssdp);
        lab.run("r1", &cmd).unwrap();
    };
    // SSDP dropped on the router: the URL given still maps (its description is read directly)...
    iptables("-I");
    let (lines, _) = natt_map_text(&lab, "h1", &args, &[("NATT_UPNP_IGD", igd.as_str())]);
    assert_on(&lines, "upnp", wan);
    // ...and the moved one cannot: refused at the URL, no answer to the search. (Without the
    // simple server, so that no external address found elsewhere ends the mapping before UPnP
    // has said why it failed.)
    let no_simple = ["--udp", "--timeout", "2"];
    let (lines, took) = natt_map_text(&lab, "h1", &no_simple, &[("NATT_UPNP_IGD", moved.as_str())]);
    assert_eq!(text_endpoint(&lines, "upnp"), None, "{lines:?}");
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("# upnp failed") && l.contains(":5001")),
        "{lines:?}"
    );
    assert!(took < Duration::from_millis(2600), "natt map took {took:?}");
    // SSDP back: the moved URL's host answers the unicast search, with its real URL.
    iptables("-D");
    let (lines, _) = natt_map_text(&lab, "h1", &args, &[("NATT_UPNP_IGD", moved.as_str())]);
    assert_on(&lines, "upnp", wan);
    // The moved URL's port drops connection attempts instead of refusing them: after the
    // connect timeout (1 s at most), the search finds the gateway all the same. (Without the
    // simple server: with an external address found, a gateway that slow would go on in the
    // background after its 250 ms grace.)
    let drop_5001 = ["iptables", "-I", "INPUT", "-p", "tcp", "--dport", "5001", "-j", "DROP"];
    lab.run("r1", &drop_5001).unwrap();
    let args3 = ["--udp", "--timeout", "3"];
    let (lines, took) = natt_map_text(&lab, "h1", &args3, &[("NATT_UPNP_IGD", moved.as_str())]);
    assert_on(&lines, "upnp", wan);
    assert!(took < Duration::from_millis(2500), "natt map took {took:?}");
    assert_released_and_stop(&lab, serve, "natt map released its mappings");
}

#[test]
fn a_device_that_is_not_the_router_is_not_taken_for_the_gateway() {
    let Some(lab) = lab(
        "a_device_that_is_not_the_router_is_not_taken_for_the_gateway",
        "uimp",
        "r1=prc,upnp,hosts=2 p1",
    ) else {
        return;
    };
    let natt = natt_bin();
    let serve = natt_serve(&lab, &natt);
    let wan = ip(&lab, "R1_WAN");
    let h1b = lab.get("H1B_IP").unwrap();
    // h1b answers every search at once (before miniupnpd, which waits up to 50 ms), with a
    // valid IGD description and SOAP answers: taken for the gateway, it would be used.
    let mut impostor = Running::new(
        lab.spawn_probe("h1b", &["igd-impostor", "--ip", &h1b, "--ms", "3000"])
            .unwrap(),
    );
    impostor.wait_line("READY", Duration::from_secs(3));
    let args = ["--udp", "--simple", "203.0.113.20:5483", "--timeout", "2"];
    let (lines, _) = natt_map_text(&lab, "h1", &args, &[]);
    assert_on(&lines, "upnp", wan);
    let report = impostor.finish();
    println!("impostor: {report:?}");
    let answered: usize = report
        .iter()
        .find_map(|l| l.strip_prefix("ANSWERED "))
        .unwrap()
        .parse()
        .unwrap();
    assert!(answered >= 1, "the impostor did not hear the search: {report:?}");
    assert!(
        report.iter().any(|l| l == "HTTP 0"),
        "natt read the impostor's description: {report:?}"
    );
    assert_released_and_stop(&lab, serve, "natt map released its mapping");
}

/// r1's rules that make it silent (DROP, no ICMP) to UPnP's search and to PCP from h1, as the
/// speed bench does: `-I` inserts, `-D` deletes.
fn silence_gateways(lab: &Lab, op: &str) {
    let h1 = lab.get("H1_IP").unwrap();
    for port in ["1900", "5351"] {
        let argv = [
            "iptables",
            op,
            "INPUT",
            "-p",
            "udp",
            "-s",
            h1.as_str(),
            "--dport",
            port,
            "-j",
            "DROP",
        ];
        lab.run("r1", &argv).unwrap();
    }
}

/// The router's port mappings (miniupnpd's, made by UPnP or PCP alike; `upnpc -l`) to
/// `h1:port`.
fn forwards_to(lab: &Lab, port: u16) -> Vec<String> {
    let to = format!("->{}:{port}", lab.get("H1_IP").unwrap());
    upnpc_list(lab).into_iter().filter(|l| l.contains(&to)).collect()
}

/// `natt map --udp --port PORT --simple SERVE --json --hold --timeout 8` in h1 (UPnP and PCP
/// on), behind a router silent to both: its JSON line, and the running process (its stdin,
/// whose end releases the mappings).
fn map_past_silent_gateways(lab: &Lab, port: u16) -> (serde_json::Value, Running, Option<ChildStdin>) {
    let mut cmd: Command = lab.command("h1", natt_bin()).unwrap();
    cmd.args([
        "map",
        "--udp",
        "--port",
        &port.to_string(),
        "--simple",
        "203.0.113.20:5483",
    ])
    .args(["--json", "--hold", "--timeout", "8"])
    .stdin(Stdio::piped())
    .stdout(Stdio::piped())
    .stderr(Stdio::inherit());
    let mut child: Child = cmd.spawn().unwrap();
    let stdin = child.stdin.take();
    let mut running = Running::new(child);
    let line = running.wait_line("{", Duration::from_secs(10));
    println!("h1: natt map past silent gateways: {line}");
    let json: serde_json::Value = serde_json::from_str(&line).unwrap();
    // The simple server's answer gave the external address; the gateways did not hold the
    // mapping up: both were still running when it returned.
    let wan = ip(lab, "R1_WAN");
    assert!(
        json["endpoints"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["technique"] == "simple" && e["addr"].as_str().unwrap().starts_with(&format!("{wan}:"))),
        "{json}"
    );
    for name in ["upnp", "pcp"] {
        let t = outcome_in(&json, name).unwrap_or_else(|| panic!("no {name} outcome: {json}"));
        assert!(
            t["error"]
                .as_str()
                .is_some_and(|e| e.contains("still running in the background")),
            "{name} held the mapping up: {json}"
        );
    }
    (json, running, stdin)
}

#[test]
fn a_router_silent_to_upnp_and_pcp_does_not_hold_mapping_up_and_a_late_mapping_is_kept() {
    let Some(lab) = lab(
        "a_router_silent_to_upnp_and_pcp_does_not_hold_mapping_up_and_a_late_mapping_is_kept",
        "usilent",
        "r1=prc,upnp p1",
    ) else {
        return;
    };
    let natt = natt_bin();
    let serve = natt_serve(&lab, &natt);

    // Held: the gateway speaks again after mapping returned, and what the techniques still
    // running in the background map then (PCP retransmits after about 3 s) is held...
    silence_gateways(&lab, "-I");
    let (_, mut running, stdin) = map_past_silent_gateways(&lab, 41300);
    silence_gateways(&lab, "-D");
    assert!(
        eventually(Duration::from_secs(8), || !forwards_to(&lab, 41300).is_empty()),
        "no late mapping on the router"
    );
    // ... and deleted when released.
    drop(stdin);
    let status = running.child.wait().unwrap();
    assert!(status.success(), "natt map exited with {status}");
    assert_eq!(
        forwards_to(&lab, 41300),
        Vec::<String>::new(),
        "a late mapping was left behind"
    );

    // Released before the gateway speaks again: what comes later is deleted at once, and
    // natt waits for it before it exits.
    silence_gateways(&lab, "-I");
    let (_, mut running, stdin) = map_past_silent_gateways(&lab, 41301);
    drop(stdin);
    silence_gateways(&lab, "-D");
    let status = running.child.wait().unwrap();
    assert!(status.success(), "natt map exited with {status}");
    assert_eq!(
        forwards_to(&lab, 41301),
        Vec::<String>::new(),
        "a late mapping was left behind"
    );
    assert_released_and_stop(&lab, serve, "natt map released its mappings");
}
