//! The security review's attacks on the punch, through real NATs (issue 18): an attacker with
//! no secret relays a punch over UDP from an address planted in a peer's token, relays TCP
//! between both peers' punch ports while holding silent connections there, and hands natt a
//! hostile token that lists a third host's closed ports. Each must fail: the punch connects the
//! genuine peers directly, or natt stays polite to the third host.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use common::punching::*;
use common::*;
use natt_core::MappedSocketAddr;
use natt_core::rendezvous::{PubRendezvousInfo, TOKEN_PREFIX};
use xtask::lab::Lab;

/// Waits for `path` to hold a token, and returns it.
fn read_token(path: &Path) -> String {
    let end = Instant::now() + Duration::from_secs(15);
    loop {
        if let Ok(t) = std::fs::read_to_string(path)
            && t.trim().len() > 6
        {
            return t.trim().to_string();
        }
        assert!(Instant::now() < end, "no token at {}", path.display());
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `token` with `extra` listed first, as a local endpoint. The token keeps its version prefix
/// (its body format is the same in versions 1 and 2), so this also runs against an older natt
/// (`NATT_BIN`).
fn plant(token: &str, extra: SocketAddr) -> String {
    let (prefix, body) = token.split_at(token.find('.').unwrap() + 1);
    let mut info: PubRendezvousInfo = format!("{TOKEN_PREFIX}{body}").parse().unwrap();
    info.endpoints.insert(0, MappedSocketAddr::new(extra, false, "local"));
    info.to_token().replacen(TOKEN_PREFIX, prefix, 1)
}

/// Writes `text` to `path` at once (the peer waits for the file to exist).
fn write_atomically(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, format!("{text}\n")).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// Drops traffic between the two routers' WAN addresses in `inet` (both ways) while it lives:
/// the peers' direct path opens only later, so whatever the attacker offers comes first.
struct Blocked<'a> {
    lab: &'a Lab,
    rules: Vec<[String; 4]>,
}

impl<'a> Blocked<'a> {
    fn new(lab: &'a Lab) -> Blocked<'a> {
        let (r1, r2) = (lab.get("R1_WAN").unwrap(), lab.get("R2_WAN").unwrap());
        let rules = vec![
            ["-s".into(), r1.clone(), "-d".into(), r2.clone()],
            ["-s".into(), r2, "-d".into(), r1],
        ];
        for r in &rules {
            let mut argv = vec!["iptables", "-I", "FORWARD", "1"];
            argv.extend(r.iter().map(String::as_str));
            argv.extend(["-j", "DROP"]);
            lab.run("inet", &argv).unwrap();
        }
        Blocked { lab, rules }
    }
}

impl Drop for Blocked<'_> {
    fn drop(&mut self) {
        for r in &self.rules {
            let mut argv = vec!["iptables", "-D", "FORWARD"];
            argv.extend(r.iter().map(String::as_str));
            argv.extend(["-j", "DROP"]);
            let _ = self.lab.run("inet", &argv);
        }
    }
}

const PORT_A: u16 = 42001;
const PORT_B: u16 = 42002;

/// Starts h1's side, plants `extra` (if any) in h1's token for h2, starts h2's side, opens the
/// direct path after `open_after`, and collects both.
fn punch_with(lab: &Lab, proto: &str, dir: &str, extra: Option<SocketAddr>, open_after: Duration) -> (Side, Side) {
    let dir = lab.state_dir().join(dir);
    std::fs::create_dir_all(&dir).unwrap();
    let (ta, tb, ta_given) = (dir.join("a"), dir.join("b"), dir.join("a-given"));
    let blocked = Blocked::new(lab);
    let t0 = Instant::now();
    let timeout = ["--timeout", "10"];
    let pa = PORT_A.to_string();
    let pb = PORT_B.to_string();
    let ra = start(
        lab,
        "h1",
        proto,
        &ta,
        &tb,
        &[&["--port", &pa][..], &timeout[..]].concat(),
    );
    let token = read_token(&ta);
    write_atomically(&ta_given, &extra.map_or(token.clone(), |e| plant(&token, e)));
    let rb = start(
        lab,
        "h2",
        proto,
        &tb,
        &ta_given,
        &[&["--port", &pb][..], &timeout[..]].concat(),
    );
    std::thread::sleep(open_after);
    drop(blocked);
    finish(ra, rb, ("h1", "h2"), t0)
}

/// Both sides connected to each other's public address and exchanged lines.
fn assert_direct(lab: &Lab, proto: &str, sa: &Side, sb: &Side) {
    let a_pub = SocketAddr::new(ip(lab, "R1_WAN").into(), PORT_A);
    let b_pub = SocketAddr::new(ip(lab, "R2_WAN").into(), PORT_B);
    assert!(sa.ok && sb.ok, "{proto}:\n{sa:#?}\n{sb:#?}");
    assert_eq!(sa.peer(), b_pub, "{proto}: h1's peer");
    assert_eq!(sb.peer(), a_pub, "{proto}: h2's peer");
    assert_hellos(sa, sb, ("h1", "h2"), proto);
}

/// The relay sits at an address planted in h1's token (as a colliding private address would
/// be): h2 probes it, and it relays between h2 and h1's public endpoint. With the direct path
/// closed for its first 1.5 s, natt before protocol 2 confirmed its paths through the relay.
#[test]
fn a_udp_relay_at_an_address_in_a_token_is_not_taken_for_the_peer() {
    let Some(lab) = lab(
        "a_udp_relay_at_an_address_in_a_token_is_not_taken_for_the_peer",
        "tau",
        "r1=full r2=full p1",
    ) else {
        return;
    };
    let relay: SocketAddr = format!("{}:40000", lab.get("P1_IP").unwrap()).parse().unwrap();
    let a_pub = format!("{}:{PORT_A}", lab.get("R1_WAN").unwrap());
    let mut attacker = Running::new(
        lab.spawn_probe(
            "p1",
            &[
                "udp-relay",
                "--listen",
                &relay.to_string(),
                "--a",
                &a_pub,
                "--ms",
                "6000",
            ],
        )
        .unwrap(),
    );
    attacker.wait_line("READY", Duration::from_secs(5));
    let (sa, sb) = punch_with(&lab, "--udp", "udp-relay", Some(relay), Duration::from_millis(1500));
    let relayed = attacker.finish();
    println!("attacker: {relayed:?}\nh1: {:?}\nh2: {:?}", sa.json, sb.json);
    let n: u64 = relayed
        .iter()
        .find_map(|l| l.strip_prefix("RELAYED "))
        .unwrap()
        .parse()
        .unwrap();
    assert!(n > 0, "the attacker relayed nothing: the test proves nothing");
    assert_direct(&lab, "--udp", &sa, &sb);
}

/// The attacker connects to both peers' punch ports (open to anyone behind full-cone NATs) and
/// relays bytes between the two connections, while holding 40 silent connections to each port;
/// the peers' own connection opens 1.5 s late. natt before protocol 2 chose the relayed stream.
#[test]
fn a_tcp_relay_between_both_punch_ports_is_not_chosen() {
    let Some(lab) = lab(
        "a_tcp_relay_between_both_punch_ports_is_not_chosen",
        "tat",
        "r1=full r2=full p1",
    ) else {
        return;
    };
    let a_pub = format!("{}:{PORT_A}", lab.get("R1_WAN").unwrap());
    let b_pub = format!("{}:{PORT_B}", lab.get("R2_WAN").unwrap());
    let mut attacker = Running::new(
        lab.spawn_probe(
            "p1",
            &[
                "tcp-relay",
                "--a",
                &a_pub,
                "--b",
                &b_pub,
                "--ms",
                "6000",
                "--silent",
                "40",
            ],
        )
        .unwrap(),
    );
    attacker.wait_line("READY", Duration::from_secs(5));
    let (sa, sb) = punch_with(&lab, "--tcp", "tcp-relay", None, Duration::from_millis(1500));
    let out = attacker.finish();
    println!("attacker: {out:?}\nh1: {:?}\nh2: {:?}", sa.json, sb.json);
    assert_direct(&lab, "--tcp", &sa, &sb);
}

/// Counts packets of `proto` arriving at p1 (an iptables counter in p1's INPUT chain).
fn count_at_p1(lab: &Lab, proto: &str) -> u64 {
    let out = lab.run("p1", &["iptables", "-L", "INPUT", "-v", "-x", "-n"]).unwrap();
    out.lines()
        .find(|l| l.contains("COUNT-") && l.contains(proto))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no counter for {proto}:\n{out}"))
}

/// A token listing 32 closed ports of a third host (p1), and one listing only endpoints that
/// cannot be a peer. natt before protocol 2 sent p1 26 700 SYNs in 3 s, and punched the
/// unusable token until its deadline.
#[test]
fn a_hostile_token_does_not_make_natt_a_scanner() {
    let Some(lab) = lab("a_hostile_token_does_not_make_natt_a_scanner", "tah", "pair") else {
        return;
    };
    for (proto, match_args) in [("tcp", &["-p", "tcp", "--syn"][..]), ("udp", &["-p", "udp"][..])] {
        let mut argv = vec!["iptables", "-A", "INPUT"];
        argv.extend(match_args);
        let comment = format!("COUNT-{proto}");
        argv.extend(["-m", "comment", "--comment", &comment, "-j", "ACCEPT"]);
        lab.run("p1", &argv).unwrap();
    }
    let p1 = lab.get("P1_IP").unwrap();
    let ports: Vec<SocketAddr> = (0..32)
        .map(|i| format!("{p1}:{}", 20001 + i).parse().unwrap())
        .collect();
    let (_, mut hostile) = natt_core::rendezvous::gen_rendezvous_info(vec![]);
    hostile.endpoints = ports.iter().map(|a| MappedSocketAddr::new(*a, false, "stun")).collect();
    let dir = lab.state_dir().join("hostile");
    std::fs::create_dir_all(&dir).unwrap();
    let peer = dir.join("peer");
    write_atomically(&peer, &hostile.to_token());
    let secs: u64 = 3;
    for proto in ["--tcp", "--udp"] {
        let before = count_at_p1(&lab, &proto[2..]);
        let t0 = Instant::now();
        let r = start(
            &lab,
            "h1",
            proto,
            &dir.join(format!("ours{proto}")),
            &peer,
            &["--timeout", &secs.to_string()],
        );
        let out = r.child.wait_with_output().unwrap();
        assert!(!out.status.success());
        std::thread::sleep(Duration::from_millis(300));
        let sent = count_at_p1(&lab, &proto[2..]) - before;
        println!(
            "{proto}: {sent} packets to p1's 32 ports in {:.1} s: {}",
            t0.elapsed().as_secs_f64(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
        // TCP: an attempt per port, retried after 0.1, 0.2, 0.4, 0.8, 1.6 s: at most 6 each in
        // 3 s (the kernel sends no SYN again for a refused attempt). UDP: at most 25 a second
        // to each port.
        let bound = if proto == "--tcp" { 32 * 7 } else { 32 * 25 * secs };
        assert!(
            sent <= bound,
            "{proto}: {sent} packets to the third host (at most {bound})"
        );
    }
    // Only endpoints that cannot be a peer: refused at once, saying why.
    let (_, mut unusable) = natt_core::rendezvous::gen_rendezvous_info(vec![]);
    unusable.endpoints = ["0.0.0.0:5", "224.0.0.1:5", "127.0.0.1:5", "255.255.255.255:5"]
        .iter()
        .map(|a| MappedSocketAddr::new(a.parse().unwrap(), false, "stun"))
        .collect();
    let bad = dir.join("unusable");
    write_atomically(&bad, &unusable.to_token());
    for proto in ["--tcp", "--udp"] {
        let t0 = Instant::now();
        let r = start(
            &lab,
            "h1",
            proto,
            &dir.join(format!("u{proto}")),
            &bad,
            &["--timeout", "10"],
        );
        let out = r.child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success());
        assert!(stderr.contains("none of the peer's endpoints can be used"), "{stderr}");
        assert!(t0.elapsed() < Duration::from_secs(8), "took {:?}", t0.elapsed());
    }
}
