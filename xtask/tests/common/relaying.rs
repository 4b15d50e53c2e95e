//! Running `natt punch` with a TURN relay (`--turn`, `--turn-user`, the password in
//! `NATT_TURN_PASSWORD`) on lab hosts, and reading the relay's side: coturn's log, router
//! rules that block UDP.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

use std::path::Path;
use std::process::{ChildStdin, Stdio};
use std::time::{Duration, Instant};

use xtask::lab::Lab;

use super::punching::{Side, assert_hellos, command, finish, token_files};
use super::{Running, natt_bin};

/// How a side reaches the relay, if it has one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Relay<'a> {
    /// No relay of its own.
    None,
    /// The lab's relay over UDP, with the lab's password.
    Udp,
    /// The lab's relay over TCP (`?transport=tcp`).
    Tcp,
    /// The lab's relay over UDP with this password.
    Password(&'a str),
    /// Another URI (a server that is down or not TURN), with the lab's password.
    Uri(&'a str),
}

/// The `--turn` arguments and password for `relay`.
fn relay_args(lab: &Lab, relay: Relay<'_>) -> Option<(Vec<String>, String)> {
    let uri = lab.get("TURN_URI").unwrap();
    let user = lab.get("TURN_USER").unwrap();
    let password = lab.get("TURN_PASSWORD").unwrap();
    let (uri, password) = match relay {
        Relay::None => return None,
        Relay::Udp => (uri, password),
        Relay::Tcp => (format!("{uri}?transport=tcp"), password),
        Relay::Password(p) => (uri, p.to_owned()),
        Relay::Uri(u) => (u.to_owned(), password),
    };
    Some((vec!["--turn".into(), uri, "--turn-user".into(), user], password))
}

/// Starts `natt punch --udp` in `node` with `relay`.
pub fn start_relayed(lab: &Lab, node: &str, me: &Path, peer: &Path, relay: Relay<'_>, extra: &[&str]) -> Running {
    start_relayed_over(lab, "--udp", node, me, peer, relay, extra)
}

/// Starts `natt punch PROTO` (`--udp` or `--tcp`) in `node` with `relay`.
pub fn start_relayed_over(
    lab: &Lab,
    proto: &str,
    node: &str,
    me: &Path,
    peer: &Path,
    relay: Relay<'_>,
    extra: &[&str],
) -> Running {
    let args = relay_args(lab, relay);
    let mut all: Vec<&str> = extra.to_vec();
    if let Some((a, _)) = &args {
        all.extend(a.iter().map(String::as_str));
    }
    let mut cmd = command(lab, node, proto, me, peer, &all);
    if let Some((_, password)) = args {
        cmd.env("NATT_TURN_PASSWORD", password);
    }
    cmd.env("RUST_LOG", "natt=info,natt_turn=info");
    Running::new(cmd.spawn().unwrap())
}

/// A UDP session between `a` (with `relay_a`) and `b` (with `relay_b`), each sending the
/// other a line once both printed their result.
pub fn session(lab: &Lab, a: &str, relay_a: Relay<'_>, b: &str, relay_b: Relay<'_>, extra: &[&str]) -> (Side, Side) {
    session_over(lab, "--udp", a, relay_a, b, relay_b, extra)
}

/// As [`session`], over `proto` (`--udp` or `--tcp`).
pub fn session_over(
    lab: &Lab,
    proto: &str,
    a: &str,
    relay_a: Relay<'_>,
    b: &str,
    relay_b: Relay<'_>,
    extra: &[&str],
) -> (Side, Side) {
    let (ta, tb) = token_files(lab, "fallback");
    let t0 = Instant::now();
    let ra = start_relayed_over(lab, proto, a, &ta, &tb, relay_a, extra);
    let rb = start_relayed_over(lab, proto, b, &tb, &ta, relay_b, extra);
    finish(ra, rb, (a, b), t0)
}

/// Waits (20 s from `t0`, when its side started) for the token `file`; its relayed (`turn`)
/// address.
pub fn relayed_in_token(file: &Path, t0: Instant) -> String {
    let token = loop {
        if let Ok(t) = std::fs::read_to_string(file)
            && t.ends_with('\n')
        {
            break t;
        }
        assert!(t0.elapsed() < Duration::from_secs(20), "no token in {}", file.display());
        std::thread::sleep(Duration::from_millis(20));
    };
    let token: natt_core::rendezvous::PubRendezvousInfo = token.trim().parse().unwrap();
    token
        .endpoints
        .iter()
        .find(|e| e.technique == "turn")
        .unwrap_or_else(|| panic!("no relayed address in the token: {token:?}"))
        .addr
        .to_string()
}

/// A `natt map --udp --hold` with the lab's relay running in `node` (more environment in
/// `env`, its log in `STATE/NAME.err`): the process, its stdin (closed to release) and its JSON.
pub fn hold_turn(lab: &Lab, node: &str, name: &str, env: &[&str]) -> (Running, ChildStdin, serde_json::Value) {
    let uri = lab.get("TURN_URI").unwrap();
    let user = lab.get("TURN_USER").unwrap();
    let password = format!("NATT_TURN_PASSWORD={}", lab.get("TURN_PASSWORD").unwrap());
    let natt = natt_bin().display().to_string();
    let mut hold = lab
        .command(node, "env")
        .unwrap()
        .arg(&password)
        .args(env)
        .args([
            natt.as_str(),
            "map",
            "--udp",
            "--no-upnp",
            "--no-pcp",
            "--json",
            "--hold",
        ])
        .args(["--turn", &uri, "--turn-user", &user])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(lab.state_dir().join(format!("{name}.err"))).unwrap())
        .spawn()
        .unwrap();
    let stdin = hold.stdin.take().unwrap();
    let mut held = Running::new(hold);
    let line = held.wait_line("{", Duration::from_secs(10));
    let json = serde_json::from_str(&line).unwrap_or_else(|e| panic!("bad JSON ({e}): {line}"));
    (held, stdin, json)
}

/// The `path` of a side's result.
pub fn path(side: &Side) -> &str {
    side.json.as_ref().and_then(|j| j["path"].as_str()).unwrap_or("")
}

/// The `relay` of a side's result (null: `None`).
pub fn relay(side: &Side) -> Option<String> {
    side.json.as_ref().and_then(|j| j["relay"].as_str()).map(str::to_owned)
}

/// The relay's log (coturn, verbose).
pub fn turn_log(lab: &Lab) -> String {
    std::fs::read_to_string(lab.get("TURN_LOG").unwrap()).unwrap_or_default()
}

/// Makes `router` drop every UDP datagram its LAN sends out (`add`), or stops that.
pub fn block_outbound_udp(lab: &Lab, router: &str, add: bool) {
    let op = if add { "-I" } else { "-D" };
    lab.run(
        router,
        &["iptables", op, "FORWARD", "-o", "wan", "-p", "udp", "-j", "DROP"],
    )
    .unwrap();
}

/// Makes `router` drop every datagram between its WAN and `peer_wan` (`add`), or stops that.
pub fn block_between(lab: &Lab, router: &str, peer_wan: &str, add: bool) {
    block_proto_between(lab, router, peer_wan, "udp", add);
}

/// Makes `router` drop every packet of `proto` (`udp` or `tcp`) between its WAN and
/// `peer_wan` (`add`), or stops that.
pub fn block_proto_between(lab: &Lab, router: &str, peer_wan: &str, proto: &str, add: bool) {
    let op = if add { "-I" } else { "-D" };
    for dir in ["-s", "-d"] {
        lab.run(
            router,
            &["iptables", op, "FORWARD", dir, peer_wan, "-p", proto, "-j", "DROP"],
        )
        .unwrap();
    }
}

/// Both sides ok over `via` (`udp` or `tcp`), the other's line printed by each.
pub fn assert_talked(a: &Side, b: &Side, names: (&str, &str), via: &str) {
    assert!(a.ok && b.ok, "{names:?} failed:\n{a:#?}\n{b:#?}");
    assert_eq!(a.json.as_ref().unwrap()["via"], via);
    assert_eq!(b.json.as_ref().unwrap()["via"], via);
    assert_hellos(a, b, names, via);
}

/// Both sides relayed through the same relayed address, on the lab's relay.
pub fn assert_relayed(a: &Side, b: &Side) {
    assert_eq!(path(a), "relay", "{a:#?}");
    assert_eq!(path(b), "relay", "{b:#?}");
    let r = relay(a).unwrap();
    assert_eq!(
        relay(b).as_deref(),
        Some(r.as_str()),
        "both through the same relayed address"
    );
    assert!(r.starts_with("203.0.113.30:"), "{r}");
}

/// Every allocation of the lab's user that coturn made was deleted (a Refresh with lifetime
/// 0, accepted), none left to expire.
pub fn assert_released(lab: &Lab) {
    let user = lab.get("TURN_USER").unwrap();
    let log = turn_log(lab);
    let count = |needle: &str| log.lines().filter(|l| l.contains(needle)).count();
    let made = count(&format!("new, realm=<natt.lab>, username=<{user}>"));
    let deleted = count(&format!("refreshed, realm=<natt.lab>, username=<{user}>, lifetime=0"));
    assert!(made > 0, "no allocation in the relay's log:\n{log}");
    assert_eq!(made, deleted, "allocations made and deleted:\n{log}");
    assert!(
        !log.contains("allocation timeout"),
        "an allocation was left to expire:\n{log}"
    );
}
