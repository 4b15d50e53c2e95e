//! PCP and NAT-PMP through the NAT lab, against miniupnpd's PCP / NAT-PMP service on r1:
//! `natt map --hold` from h1 maps UDP and TCP ports (gateway from the default route, or given
//! with `--pcp` / `--nat-pmp`), p1 reaches h1 through the mapping, and releasing it deletes the
//! mapping and closes the path. Renewal keeps a short mapping past its lifetime, and a gateway
//! that restarts and loses its mappings gets them back at the next renewal. A silent gateway
//! costs no more than the deadline; behind a double NAT (miniupnpd on r2 cannot forward) the
//! technique fails clearly.
//!
//! Root only; each test re-runs itself inside `unshare --net` (see `common`).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

mod common;

use std::fs::{self, File};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{ChildStdin, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use common::*;
use xtask::lab::{Lab, daemons};

static SEQ: AtomicU32 = AtomicU32::new(0);

/// A `natt map --hold` running in a node.
struct Hold {
    run: Running,
    stdin: Option<ChildStdin>,
    stderr: PathBuf,
    json: serde_json::Value,
}

/// Starts `natt map ARGS --no-upnp --json --hold` in `node` (debug logs of natt_pcp to a file,
/// `env` added to its environment) and waits for its JSON line.
fn hold(lab: &Lab, node: &str, args: &[&str], env: &[(&str, &str)]) -> Hold {
    let stderr = lab
        .state_dir()
        .join(format!("natt-map-{}.err", SEQ.fetch_add(1, Ordering::SeqCst)));
    let mut cmd = lab.command(node, "env").unwrap();
    cmd.arg("RUST_LOG=natt_pcp=debug");
    for (k, v) in env {
        cmd.arg(format!("{k}={v}"));
    }
    cmd.arg(natt_bin())
        .arg("map")
        .args(args)
        .args(["--no-upnp", "--json", "--hold"]);
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(File::create(&stderr).unwrap());
    let mut child = cmd.spawn().unwrap();
    let stdin = child.stdin.take();
    let mut run = Running::new(child);
    let line = run.wait_line("{", Duration::from_secs(10));
    let json = serde_json::from_str(&line).unwrap_or_else(|e| panic!("bad JSON ({e}): {line}"));
    Hold {
        run,
        stdin,
        stderr,
        json,
    }
}

impl Hold {
    /// The endpoint `technique` found: its address and `nat_restricted`.
    fn endpoint(&self, technique: &str) -> Option<(SocketAddr, bool)> {
        endpoint_in(&self.json, technique).map(|e| {
            (
                e["addr"].as_str().unwrap().parse().unwrap(),
                e["nat_restricted"].as_bool().unwrap(),
            )
        })
    }

    fn log(&self) -> String {
        fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    /// Closes standard input; natt releases the mapping and exits. How long that took.
    fn release(mut self) -> Duration {
        let t0 = Instant::now();
        drop(self.stdin.take());
        let end = t0 + Duration::from_secs(10);
        loop {
            if let Some(status) = self.run.child.try_wait().unwrap() {
                assert!(status.success(), "natt map --hold failed: {status}\n{}", self.log());
                return t0.elapsed();
            }
            if Instant::now() > end {
                let _ = self.run.child.kill();
                panic!("natt map --hold did not end after stdin closed\n{}", self.log());
            }
            thread::sleep(Duration::from_millis(20));
        }
    }
}

/// The mappings miniupnpd on `router` lists (`upnpc -l`), as `PROTO EXT->IP:PORT` words.
fn listed(lab: &Lab, router: u8, host: &str) -> Vec<String> {
    let igd = lab.get(&format!("R{router}_IGD_URL")).unwrap();
    let out = lab.run(host, &["upnpc", "-u", &igd, "-l"]).unwrap();
    out.lines()
        .filter_map(|l| {
            let w: Vec<&str> = l.split_whitespace().collect();
            (w.len() >= 3 && w[0].parse::<u32>().is_ok() && (w[1] == "UDP" || w[1] == "TCP"))
                .then(|| format!("{} {}", w[1], w[2]))
        })
        .collect()
}

fn mapping_word(proto: &str, port: u16, h1: &str) -> String {
    format!("{} {port}->{h1}:{port}", proto.trim_start_matches('-').to_uppercase())
}

/// Bytes queued on h1's UDP socket bound at `port` (`ss` Recv-Q); 0 when there is none.
fn recv_q(lab: &Lab, port: u16) -> u64 {
    let filter = format!("sport = :{port}");
    let out = lab.run("h1", &["ss", "-Huan", &filter]).unwrap();
    out.split_whitespace().nth(1).and_then(|v| v.parse().ok()).unwrap_or(0)
}

/// p1 sends datagrams to `to`: did they reach natt's socket on h1 (its receive queue grew)?
fn udp_reaches_socket(lab: &Lab, to: SocketAddr) -> bool {
    let before = recv_q(lab, to.port());
    let dest = to.to_string();
    lab.probe("p1", &["send", "--to", &dest, "--count", "3", "--interval-ms", "20"])
        .unwrap();
    let end = Instant::now() + Duration::from_millis(500);
    while Instant::now() < end {
        if recv_q(lab, to.port()) > before {
            return true;
        }
        thread::sleep(Duration::from_millis(20));
    }
    false
}

/// After natt is gone: a listener on h1's `port` hears nothing p1 sends to `to`.
fn udp_blocked(lab: &Lab, to: SocketAddr) -> Vec<String> {
    let bind = format!("0.0.0.0:{}", to.port());
    let mut listen = Running::new(
        lab.spawn_probe("h1", &["listen", "--bind", &bind, "--ms", "800"])
            .unwrap(),
    );
    listen.wait_line("READY", Duration::from_secs(5));
    let to = to.to_string();
    lab.probe("p1", &["send", "--to", &to, "--count", "3", "--interval-ms", "50"])
        .unwrap();
    listen.finish().into_iter().filter(|l| l.starts_with("RECV")).collect()
}

/// p1 opens a TCP connection to `to`: `refused` (h1's kernel answered: the SYN got through the
/// mapping to a port with no listener), `timeout` (dropped at the router) or `connected`.
fn tcp_from_p1(lab: &Lab, to: SocketAddr) -> &'static str {
    let script = format!("exec 3<>/dev/tcp/{}/{}", to.ip(), to.port());
    let out: Output = lab.exec("p1", &["timeout", "1.5", "bash", "-c", &script]).unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    match out.status.code() {
        Some(0) => "connected",
        Some(124) => "timeout",
        _ if stderr.contains("refused") => "refused",
        _ => panic!("bash /dev/tcp to {to}: {}: {stderr}", out.status),
    }
}

/// `natt map`'s text lists no endpoint of PCP or NAT-PMP (the `#` lines are comments).
fn no_mapped_endpoint(text: &str) -> bool {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .all(|l| !l.contains("pcp") && !l.contains("nat-pmp"))
}

// ------------------------------------------------------------------------------- tests

#[test]
fn pcp_maps_udp_and_tcp_for_h1_and_deletes_on_release() {
    let Some(lab) = lab("pcp_maps_udp_and_tcp_for_h1_and_deletes_on_release", "tpcp1", "upnp") else {
        return;
    };
    assert_upnp_forwarding(&lab);
    let wan = ip(&lab, "R1_WAN");
    let h1 = lab.get("H1_IP").unwrap();
    let natpmp = lab.get("R1_NATPMP").unwrap();
    // (protocol, gateway flags, technique expected, port, check that the path closes)
    let cases: [(&str, &[&str], &str, u16, bool); 5] = [
        ("--udp", &[], "pcp", 41001, true),
        ("--udp", &["--pcp", &natpmp], "pcp", 41002, false),
        ("--udp", &["--nat-pmp", &natpmp], "nat-pmp", 41003, true),
        ("--tcp", &[], "pcp", 41004, true),
        ("--tcp", &["--nat-pmp", &natpmp], "nat-pmp", 41005, false),
    ];
    for (proto, gateway, technique, port, check_closed) in cases {
        let what = format!("natt map {proto} {gateway:?}");
        let t0 = Instant::now();
        let port_s = port.to_string();
        let mut args = vec![proto, "--port", &port_s];
        args.extend_from_slice(gateway);
        let held = hold(&lab, "h1", &args, &[]);
        let (addr, restricted) = held
            .endpoint(technique)
            .unwrap_or_else(|| panic!("{what}: no {technique} endpoint: {}\n{}", held.json, held.log()));
        let mapped_in = t0.elapsed();
        assert_eq!(addr, SocketAddr::from((wan, port)), "{what}");
        assert!(!restricted, "{what}: a port mapping is not restricted");
        let word = mapping_word(proto, port, &h1);
        assert!(
            listed(&lab, 1, "h1").contains(&word),
            "{what}: miniupnpd does not list {word}"
        );
        // Unsolicited inbound from p1 reaches h1 through the mapping.
        if proto == "--udp" {
            assert!(udp_reaches_socket(&lab, addr), "{what}: p1 -> {addr} did not reach h1");
        } else {
            assert_eq!(
                tcp_from_p1(&lab, addr),
                "refused",
                "{what}: p1's SYN to {addr} did not reach h1"
            );
        }
        let released_in = held.release();
        assert!(
            released_in < Duration::from_secs(3),
            "{what}: release took {released_in:?}"
        );
        let left = listed(&lab, 1, "h1");
        assert!(!left.contains(&word), "{what}: still mapped after release: {left:?}");
        if check_closed {
            if proto == "--udp" {
                let got = udp_blocked(&lab, addr);
                assert!(
                    got.is_empty(),
                    "{what}: inbound still reaches h1 after release: {got:?}"
                );
            } else {
                assert_eq!(
                    tcp_from_p1(&lab, addr),
                    "timeout",
                    "{what}: path still open after release"
                );
            }
        }
        println!(
            "{what}: {addr} ({technique}), natt up and mapped in {} ms, released in {} ms",
            mapped_in.as_millis(),
            released_in.as_millis()
        );
    }
    assert!(listed(&lab, 1, "h1").is_empty());
    latency(&lab, &natpmp);
}

/// Prints how long a mapping takes: natt map (PCP, NAT-PMP) against natpmpc, a few runs each.
fn latency(lab: &Lab, natpmp: &str) {
    let natt = natt_bin().display().to_string();
    let gw = natpmp.split(':').next().unwrap().to_string();
    let median = |mut v: Vec<f64>| -> f64 {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let mut rows = Vec::new();
    for (name, gateway_flag) in [("natt map (PCP)", "--pcp"), ("natt map (NAT-PMP)", "--nat-pmp")] {
        let (mut wall, mut own) = (Vec::new(), Vec::new());
        for i in 0..5u16 {
            let port = (41100 + i).to_string();
            let t0 = Instant::now();
            let out = lab
                .run(
                    "h1",
                    &[
                        &natt,
                        "map",
                        "--udp",
                        "--port",
                        &port,
                        "--no-upnp",
                        gateway_flag,
                        natpmp,
                        "--json",
                    ],
                )
                .unwrap();
            wall.push(t0.elapsed().as_secs_f64() * 1000.0);
            let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
            own.push(v["elapsed_ms"].as_f64().unwrap());
        }
        rows.push(format!(
            "{name}: median {:.1} ms wall (process, map, release), {:.0} ms mapping as natt reports it",
            median(wall),
            median(own)
        ));
    }
    let mut wall = Vec::new();
    for i in 0..5u16 {
        let port = (41110 + i).to_string();
        let t0 = Instant::now();
        let out = lab
            .run("h1", &["natpmpc", "-g", &gw, "-a", &port, &port, "udp", "60"])
            .unwrap();
        wall.push(t0.elapsed().as_secs_f64() * 1000.0);
        assert!(out.contains("Mapped public port"), "{out}");
        lab.run("h1", &["natpmpc", "-g", &gw, "-a", &port, "0", "udp", "0"])
            .unwrap();
    }
    rows.push(format!(
        "natpmpc -a: median {:.1} ms wall (process, address request, map)",
        median(wall)
    ));
    for r in rows {
        println!("latency: {r}");
    }
}

/// miniupnpd on r1 with a config of our own: PCP lifetimes down to 2 s (the default minimum is
/// 120 s), and an epoch counted from its own start (not the system's). The one running before
/// is stopped and its state lost (rules flushed, lease file gone), as in a gateway reboot.
fn restart_miniupnpd(lab: &mut Lab, name: &str, previous: &str) {
    if let Some(pid) = daemons::recorded_pid(lab.state_dir(), previous) {
        daemons::stop(&[pid]);
    }
    for (table, chain) in [
        ("nat", "MINIUPNPD"),
        ("nat", "MINIUPNPD-POSTROUTING"),
        ("filter", "MINIUPNPD"),
        ("mangle", "MINIUPNPD"),
    ] {
        lab.run("r1", &["iptables-legacy", "-t", table, "-F", chain]).unwrap();
    }
    let dir = lab.state_dir().to_path_buf();
    let leases = dir.join("pcp-test.leases");
    let _ = fs::remove_file(&leases);
    let conf = daemons::miniupnpd_conf(&dir, lab.plan().router("r1").unwrap())
        .replace("system_uptime=yes\n", "")
        .lines()
        .map(|l| {
            if l.starts_with("lease_file=") {
                format!("lease_file={}", leases.display())
            } else {
                l.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
        + "\nmin_lifetime=2\n";
    let conf_path = dir.join(format!("{name}.conf"));
    fs::write(&conf_path, conf).unwrap();
    let conf_s = conf_path.display().to_string();
    let pid_s = dir.join(format!("{name}.pidfile")).display().to_string();
    lab.daemon(name, "r1", &["miniupnpd", "-f", &conf_s, "-P", &pid_s, "-d"])
        .unwrap();
    let end = Instant::now() + Duration::from_secs(10);
    while !daemons::upnp_ready(&lab.log(name)) {
        assert!(Instant::now() < end, "{name} not ready:\n{}", lab.log(name));
        thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(daemons::upnp_verdict(&lab.log(name)), "enabled", "{}", lab.log(name));
}

#[test]
fn pcp_renews_short_mappings_and_remaps_after_a_gateway_restart() {
    let Some(mut lab) = lab(
        "pcp_renews_short_mappings_and_remaps_after_a_gateway_restart",
        "tpcp2",
        "upnp",
    ) else {
        return;
    };
    restart_miniupnpd(&mut lab, "miniupnpd-r1-a", "miniupnpd-r1");
    let h1 = lab.get("H1_IP").unwrap();
    let gw = lab.get("R1_LAN").unwrap();
    let lifetime = 3u64;
    let held = hold(
        &lab,
        "h1",
        &["--udp", "--port", "41201"],
        &[("NATT_PCP_LIFETIME_SECS", &lifetime.to_string())],
    );
    let (addr, _) = held
        .endpoint("pcp")
        .unwrap_or_else(|| panic!("no pcp endpoint: {}\n{}", held.json, held.log()));
    let word = mapping_word("udp", 41201, &h1);
    // A NAT-PMP mapping of the same lifetime that nobody renews: the control.
    let out = lab
        .run(
            "h1",
            &[
                "natpmpc",
                "-g",
                &gw,
                "-a",
                "41202",
                "41202",
                "udp",
                &lifetime.to_string(),
            ],
        )
        .unwrap();
    assert!(out.contains("Mapped public port 41202"), "{out}");
    let control = mapping_word("udp", 41202, &h1);
    assert!(listed(&lab, 1, "h1").contains(&control));
    // Past twice the lifetime (and miniupnpd's clean-up of expired mappings).
    thread::sleep(Duration::from_secs(2 * lifetime + 2));
    let now = listed(&lab, 1, "h1");
    assert!(!now.contains(&control), "the control mapping did not expire: {now:?}");
    assert!(
        now.contains(&word),
        "natt's mapping expired while held: {now:?}\n{}",
        held.log()
    );
    assert!(
        udp_reaches_socket(&lab, addr),
        "p1 -> {addr} did not reach h1 after renewals"
    );
    let renewals = held.log().matches("pcp: renewed").count();
    println!(
        "{renewals} renewals of a {lifetime} s mapping in {} s",
        2 * lifetime + 2
    );
    assert!(renewals >= 3, "{}", held.log());

    // The gateway restarts and forgets the mapping; the next renewal makes it again.
    let t0 = Instant::now();
    restart_miniupnpd(&mut lab, "miniupnpd-r1-b", "miniupnpd-r1-a");
    let end = t0 + Duration::from_secs(2 * lifetime + 2);
    while !listed(&lab, 1, "h1").contains(&word) {
        assert!(
            Instant::now() < end,
            "not mapped again after the restart:\n{}",
            held.log()
        );
        thread::sleep(Duration::from_millis(100));
    }
    println!(
        "mapped again {} ms after the gateway restarted",
        t0.elapsed().as_millis()
    );
    // The router lists the mapping as soon as it makes it; natt logs why it made it again
    // once the answer is back: wait for that line a little.
    let logged = Instant::now() + Duration::from_secs(2);
    while !held.log().contains("lost its state") && Instant::now() < logged {
        thread::sleep(Duration::from_millis(50));
    }
    assert!(held.log().contains("lost its state"), "{}", held.log());
    // Made by the new daemon (the old one's rules and leases are gone).
    let added = format!("added mapping UDP 41201->{h1}:41201");
    assert!(
        lab.log("miniupnpd-r1-b").contains(&added),
        "{}",
        lab.log("miniupnpd-r1-b")
    );
    assert!(
        udp_reaches_socket(&lab, addr),
        "p1 -> {addr} did not reach h1 after the restart"
    );
    held.release();
    assert!(!listed(&lab, 1, "h1").contains(&word));
}

#[test]
fn pcp_silent_gateway_costs_no_more_than_the_deadline() {
    let Some(lab) = lab(
        "pcp_silent_gateway_costs_no_more_than_the_deadline",
        "tpcp3",
        "r1=prc p1",
    ) else {
        return;
    };
    let natt = natt_bin().display().to_string();
    // p1 plays a gateway that never answers: it only counts what arrives.
    let silent = format!("{}:5351", lab.get("P1_IP").unwrap());
    let mut listen = Running::new(
        lab.spawn_probe("p1", &["listen", "--bind", "0.0.0.0:5351", "--ms", "9000"])
            .unwrap(),
    );
    listen.wait_line("READY", Duration::from_secs(5));
    let mut received = 0;
    let mut count_new = |listen: &mut Running| -> usize {
        thread::sleep(Duration::from_millis(100));
        listen.seen.extend(listen.lines.try_iter());
        let total = listen.seen.iter().filter(|l| l.starts_with("RECV")).count();
        let new = total - received;
        received = total;
        new
    };
    for (flag, sent) in [("--pcp", 1), ("--nat-pmp", 3)] {
        let t0 = Instant::now();
        let out = lab
            .run(
                "h1",
                &[&natt, "map", "--udp", "--no-upnp", flag, &silent, "--timeout", "1.5"],
            )
            .unwrap();
        let took = t0.elapsed();
        println!("silent gateway, natt map {flag}: {} ms\n{out}", took.as_millis());
        assert!(
            took >= Duration::from_millis(1500) && took < Duration::from_millis(2000),
            "{took:?}"
        );
        assert!(
            out.contains("# pcp failed after") && out.contains("did not answer in time"),
            "{out}"
        );
        assert!(no_mapped_endpoint(&out), "{out}");
        // PCP: one request (the next is due after 3 s); NAT-PMP: at 0, 250 and 750 ms.
        assert_eq!(count_new(&mut listen), sent, "{flag}");
    }
    let t0 = Instant::now();
    let out = lab
        .run(
            "h1",
            &[
                &natt,
                "probe",
                "--no-upnp",
                "--pcp",
                &silent,
                "--timeout",
                "1.5",
                "--json",
            ],
        )
        .unwrap();
    let took = t0.elapsed();
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    println!("silent gateway, natt probe: {} ms, pcp: {}", took.as_millis(), v["pcp"]);
    assert!(took < Duration::from_millis(2000), "{took:?}");
    assert!(v["pcp"]["protocol"].is_null(), "{v}");
    assert!(v["pcp"]["error"].as_str().unwrap().contains("did not answer"), "{v}");
    // The mapping's MAP and the probe's ANNOUNCE.
    assert_eq!(count_new(&mut listen), 2);
    let _ = listen.child.kill();

    // A router without PCP (the default route's, r1 here): port unreachable at once, so it
    // costs nothing and is not even reported as a failure.
    let t0 = Instant::now();
    let out = lab
        .run("h1", &[&natt, "map", "--udp", "--no-upnp", "--timeout", "3"])
        .unwrap();
    let took = t0.elapsed();
    println!("router without PCP: natt map in {} ms\n{out}", took.as_millis());
    assert!(took < Duration::from_millis(1000), "{took:?}");
    assert!(!out.contains("pcp"), "{out}");
}

#[test]
fn pcp_behind_double_nat_fails_clearly() {
    let Some(lab) = lab("pcp_behind_double_nat_fails_clearly", "tpcp4", "double") else {
        return;
    };
    assert_eq!(
        lab.get("R2_UPNP_FORWARDING").unwrap(),
        "disabled",
        "{}",
        lab.log("miniupnpd-r2")
    );
    let natt = natt_bin().display().to_string();
    let natpmp = lab.get("R2_NATPMP").unwrap();
    for (args, expect) in [
        (vec!["--udp"], "answered NO_RESOURCES (8)"),
        (vec!["--tcp"], "answered NO_RESOURCES (8)"),
        (vec!["--udp", "--nat-pmp", &natpmp], "answered NETWORK_FAILURE (3)"),
    ] {
        let mut argv = vec![natt.as_str(), "map", "--no-upnp", "--timeout", "2"];
        argv.extend(&args);
        let t0 = Instant::now();
        let out = lab.run("h2", &argv).unwrap();
        println!(
            "double NAT, natt map {args:?} in {} ms:\n{out}",
            t0.elapsed().as_millis()
        );
        assert!(t0.elapsed() < Duration::from_secs(1), "a refusal is quick");
        assert!(out.contains("# pcp failed after") && out.contains(expect), "{out}");
        assert!(no_mapped_endpoint(&out), "an endpoint from a refused mapping: {out}");
    }
    let out = lab
        .run("h2", &[&natt, "probe", "--no-upnp", "--json", "--timeout", "2"])
        .unwrap();
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    println!("double NAT, natt probe: pcp = {}", v["pcp"]);
    assert_eq!(v["pcp"]["gateway"], natpmp.as_str());
    assert_eq!(v["pcp"]["protocol"], "pcp", "{v}");
    assert!(v["pcp"]["error"].as_str().unwrap().contains("NO_RESOURCES"), "{v}");
    assert!(listed(&lab, 2, "h2").is_empty());
}
