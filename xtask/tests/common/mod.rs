//! Helpers shared by the NAT lab test files: building a lab only where it is safe (root, inside
//! `unshare --net`), programs running in nodes, and the natt binary.

#![allow(
    dead_code,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::io::{BufRead, BufReader, Read};
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Child;
use std::sync::mpsc::{self, Receiver};
use std::thread;
use std::time::{Duration, Instant};

use xtask::lab::{Lab, isolation};

pub mod punching;
pub mod relaying;

pub const TOOL: &str = env!("CARGO_BIN_EXE_xtask");
pub const OBS1: &str = "203.0.113.20:7000";
pub const OBS2: &str = "203.0.113.21:7000";

/// Builds `topology` under `prefix` for the test `name`. `None` when the test is done
/// already: skipped (no root), or re-run inside `unshare --net` (and passed there).
pub fn lab(name: &str, prefix: &str, topology: &str) -> Option<Lab> {
    if !isolated(name) {
        return None;
    }
    let t0 = Instant::now();
    let lab = Lab::up_with(prefix, topology, Path::new(TOOL)).unwrap_or_else(|e| panic!("lab up {topology}: {e}"));
    println!("lab '{prefix}' up '{topology}' in {:.2} s", t0.elapsed().as_secs_f64());
    Some(lab)
}

/// Asserts that r1's miniupnpd forwards ports (it says so in its log once its checks pass),
/// showing that log when it does not.
pub fn assert_upnp_forwarding(lab: &Lab) {
    assert_eq!(
        lab.get("R1_UPNP_FORWARDING").unwrap(),
        "enabled",
        "{}",
        lab.log("miniupnpd-r1")
    );
}

/// The lines (trimmed) of `upnpc -l` run in h1 against r1's miniupnpd: every mapping it lists,
/// UPnP, PCP and NAT-PMP alike.
pub fn upnpc_list(lab: &Lab) -> Vec<String> {
    let igd = lab.get("R1_IGD_URL").unwrap();
    let out = lab.exec("h1", &["upnpc", "-u", igd.as_str(), "-l"]).unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| l.trim().to_owned())
        .collect()
}

/// Polls `f` (every 50 ms) until it holds or `within` has passed; whether it held.
pub fn eventually(within: Duration, mut f: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + within;
    loop {
        if f() {
            return true;
        }
        if Instant::now() >= end {
            return false;
        }
        thread::sleep(Duration::from_millis(50));
    }
}

/// True when the test can go on here; otherwise it was skipped or ran in a child.
pub fn isolated(name: &str) -> bool {
    if !isolation::is_root() {
        println!("skipped: the NAT lab needs root");
        return false;
    }
    if isolation::is_isolated() {
        return true;
    }
    // Never build a lab next to the machine's own network: run this one test again
    // inside a fresh network namespace with only loopback.
    let exe = std::env::current_exe().unwrap();
    let args = [name, "--exact", "--nocapture", "--test-threads=1"];
    let status = isolation::isolated_command(exe.as_os_str(), &args, false)
        .status()
        .unwrap();
    assert!(status.success(), "{name} failed inside unshare --net");
    false
}

/// A probe or program running in a node, its stdout lines arriving on a channel.
pub struct Running {
    pub child: Child,
    pub lines: Receiver<String>,
    pub seen: Vec<String>,
}

impl Running {
    pub fn new(mut child: Child) -> Running {
        let (tx, rx) = mpsc::channel();
        let stdout = child.stdout.take().unwrap();
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Running {
            child,
            lines: rx,
            seen: Vec::new(),
        }
    }

    /// Waits for a line starting with `start`.
    pub fn wait_line(&mut self, start: &str, timeout: Duration) -> String {
        let end = Instant::now() + timeout;
        loop {
            if let Some(l) = self.seen.iter().find(|l| l.starts_with(start)) {
                return l.clone();
            }
            let left = end.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(l) => self.seen.push(l),
                Err(_) => panic!(
                    "no line starting with '{start}' within {timeout:?}; got {:?}",
                    self.seen
                ),
            }
        }
    }

    /// Reads its stderr to the end (empty when not piped, or taken already).
    pub fn read_stderr(&mut self) -> String {
        let mut text = String::new();
        if let Some(mut e) = self.child.stderr.take() {
            let _ = e.read_to_string(&mut text);
        }
        text
    }

    /// Kills the program and reaps it.
    pub fn stop(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Waits for the program to end; all its stdout lines.
    pub fn finish(mut self) -> Vec<String> {
        let _ = self.child.wait();
        self.seen.extend(self.lines.iter());
        self.seen
    }
}

/// The address in a `SEEN SERVER MAPPED` probe line.
pub fn seen(line: &str) -> SocketAddr {
    line.split_whitespace()
        .nth(2)
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("bad SEEN line '{line}'"))
}

/// Asks both observers from one socket (bound to `port`, 0 for any): what they saw.
pub fn observe(lab: &Lab, node: &str, port: u16) -> (SocketAddr, SocketAddr) {
    let bind = format!("0.0.0.0:{port}");
    let out = lab.probe(node, &["observe", "--bind", &bind, OBS1, OBS2]).unwrap();
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 2, "{out}");
    (seen(lines[0]), seen(lines[1]))
}

/// Opens a mapping from `host` (UDP port `port`, via observer 1), then sends from `from_node`
/// (bound to `from_bind` if given) to the mapping's public address; returns the datagrams
/// the host received.
pub fn unsolicited(
    lab: &Lab,
    host: &str,
    port: u16,
    from_node: &str,
    from_bind: Option<&str>,
) -> (SocketAddr, Vec<String>) {
    let bind = format!("0.0.0.0:{port}");
    let mut listen = Running::new(
        lab.spawn_probe(host, &["listen", "--bind", &bind, "--first", OBS1, "--ms", "1500"])
            .unwrap(),
    );
    let mapped = seen(&listen.wait_line("SEEN", Duration::from_secs(5)));
    listen.wait_line("READY", Duration::from_secs(5));
    let to = mapped.to_string();
    let mut args = vec!["send", "--to", &to, "--count", "5", "--interval-ms", "100"];
    if let Some(b) = from_bind {
        args.extend(["--bind", b]);
    }
    lab.probe(from_node, &args).unwrap();
    let lines = listen.finish();
    let recv = lines.into_iter().filter(|l| l.starts_with("RECV")).collect();
    (mapped, recv)
}

/// The endpoint of `technique` in natt's JSON (`map`, `probe`): `None` without one.
pub fn endpoint_in<'a>(json: &'a serde_json::Value, technique: &str) -> Option<&'a serde_json::Value> {
    json["endpoints"]
        .as_array()?
        .iter()
        .find(|e| e["technique"] == technique)
}

/// The outcome of the technique `name` in natt's JSON (`map`, `probe`): `None` without one.
pub fn outcome_in<'a>(json: &'a serde_json::Value, name: &str) -> Option<&'a serde_json::Value> {
    json["techniques"].as_array()?.iter().find(|t| t["name"] == name)
}

pub fn ip(lab: &Lab, key: &str) -> Ipv4Addr {
    lab.get(key).unwrap().parse().unwrap()
}

// ----------------------------------------------------------- natt's simple protocol

/// The natt binary: `NATT_BIN`, else `target/debug/natt` of this workspace.
pub fn natt_bin() -> PathBuf {
    let bin = std::env::var_os("NATT_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/debug/natt"));
    assert!(
        bin.is_file(),
        "natt binary not found at {} (build it: cargo build -p natt-cli, or set NATT_BIN)",
        bin.display()
    );
    bin
}

/// Runs `natt ARGS...` in `host` (bounded by `timeout 30`); its stdout, asserting success.
pub fn natt(lab: &Lab, natt: &Path, host: &str, args: &[&str]) -> String {
    let natt = natt.display().to_string();
    let mut argv = vec!["timeout", "30", natt.as_str()];
    argv.extend_from_slice(args);
    let out = lab.exec(host, &argv).unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "natt {} in {host}: {}\n{stdout}\n{stderr}",
        args.join(" "),
        out.status
    );
    stdout
}

/// Runs `natt ARGS...` in `host` as [`natt`] does; its stdout parsed as JSON.
pub fn natt_json(lab: &Lab, natt: &Path, host: &str, args: &[&str]) -> serde_json::Value {
    let stdout = self::natt(lab, natt, host, args);
    serde_json::from_str(stdout.trim())
        .unwrap_or_else(|e| panic!("natt {} in {host}: bad JSON ({e}): {stdout}", args.join(" ")))
}

/// Starts `natt serve` on 203.0.113.20:5483 in `inet`, waits until it listens.
pub fn natt_serve(lab: &Lab, natt: &Path) -> Running {
    let natt = natt.display().to_string();
    let mut serve = Running::new(
        lab.spawn("inet", &[natt.as_str(), "serve", "--listen", "203.0.113.20:5483"])
            .unwrap(),
    );
    serve.wait_line("", Duration::from_secs(10));
    // One line per listener (UDP and TCP); give the second a moment.
    let end = Instant::now() + Duration::from_secs(2);
    while serve.seen.len() < 2 && Instant::now() < end {
        if let Ok(l) = serve.lines.recv_timeout(Duration::from_millis(50)) {
            serve.seen.push(l);
        }
    }
    serve
}

/// `natt map --PROTO --simple 203.0.113.20:5483` from `host`: the simple technique's address.
pub fn natt_map(lab: &Lab, natt: &Path, host: &str, proto: &str) -> SocketAddr {
    let natt = natt.display().to_string();
    let argv = [
        "timeout",
        "30",
        natt.as_str(),
        "map",
        proto,
        "--simple",
        "203.0.113.20:5483",
        "--no-upnp",
        "--json",
    ];
    let out = lab.exec(host, &argv).unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "natt map {proto} in {host}: {}\n{stdout}\n{stderr}",
        out.status
    );
    let json: serde_json::Value = serde_json::from_str(stdout.trim())
        .unwrap_or_else(|e| panic!("natt map {proto} in {host}: bad JSON ({e}): {stdout}"));
    let simple = endpoint_in(&json, "simple")
        .unwrap_or_else(|| panic!("natt map {proto} in {host}: no simple endpoint: {json}"));
    simple["addr"].as_str().unwrap().parse().unwrap()
}
