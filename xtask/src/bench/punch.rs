//! Hole punching: `natt punch` between two hosts of the lab, driven as `xtask/tests/punch.rs`
//! drives it (tokens through files, STUN against coturn, then one line each way). [`time`]: how
//! long the punch takes against the round trip between the peers, with 25 ms one-way delay on
//! every WAN link; [`success`]: the success rate over many repetitions for every NAT pair the
//! punch tests cover.

use std::fs;
use std::io::Write as _;
use std::process::Stdio;
use std::time::{Duration, Instant};

use super::proc::{Lines, ms_since};
use super::report::{Check, Section, Table};
use super::stats::{Samples, ms, ratio, spread, times};
use super::{Bench, json_number};
use crate::lab::{Lab, Result, err};

/// Both sides of one punch.
#[derive(Debug, Default)]
pub(super) struct Outcome {
    /// Both connected and each got the other's line.
    pub ok: bool,
    /// The `elapsed_ms` of each side that connected (from reading the peer's token).
    pub elapsed: Vec<f64>,
    /// Wall-clock ms from spawning each side that printed its result to that result line.
    pub wall: Vec<f64>,
    /// The IP address each side reached.
    pub peers: Vec<String>,
    /// Why it failed.
    pub why: String,
}

impl Outcome {
    /// The slower side's `elapsed_ms`, when both connected.
    fn slower(&self) -> Option<f64> {
        match self.elapsed.as_slice() {
            [a, b] => Some(a.max(*b)),
            _ => None,
        }
    }

    /// The slower side's wall-clock time from spawn to its result line, when both connected.
    pub fn slower_wall(&self) -> Option<f64> {
        match self.wall.as_slice() {
            [a, b] if self.ok => Some(a.max(*b)),
            _ => None,
        }
    }
}

/// Which techniques `natt punch` runs besides STUN.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Gateways {
    /// `--no-upnp` (PCP still tried), as the punch tests run it.
    NoUpnp,
    /// natt's defaults: UPnP and PCP/NAT-PMP tried too.
    Defaults,
}

/// Punches of one protocol, as they add up.
#[derive(Debug, Default)]
pub(super) struct Punches {
    pub proto: &'static str,
    /// The slower side's `elapsed_ms` of each success.
    pub slower: Samples,
    /// Every side's `elapsed_ms` of each success.
    pub sides: Samples,
    pub failed: usize,
    pub last_failure: String,
    /// The distinct pairs of peer addresses seen, as `A / B`.
    pub paths: Vec<String>,
}

impl Punches {
    pub fn new(proto: &'static str) -> Punches {
        Punches {
            proto,
            ..Punches::default()
        }
    }

    pub fn succeeded(&self) -> usize {
        self.slower.len()
    }

    pub fn record(&mut self, o: Outcome) {
        match o.slower() {
            Some(slower) if o.ok => {
                self.slower.push(slower);
                o.elapsed.iter().for_each(|e| self.sides.push(*e));
                let path = o.peers.join(" / ");
                if !self.paths.contains(&path) {
                    self.paths.push(path);
                }
            }
            _ => {
                self.failed += 1;
                self.last_failure = o.why;
            }
        }
    }
}

/// Runs one punch between nodes `a` and `b` over `proto` (`udp` or `tcp`); `n` numbers its token
/// files. Both sides are spawned one right after the other; each side's result line is timed
/// from its own spawn.
pub(super) fn punch_once(
    b: &Bench,
    lab: &Lab,
    (a, bn): (&str, &str),
    proto: &str,
    n: usize,
    gateways: Gateways,
) -> Result<Outcome> {
    let dir = lab.state_dir().join(format!("bench-punch-{n}"));
    fs::create_dir_all(&dir)?;
    let stun1 = format!("{}:3478", lab.get("STUN1")?);
    let stun2 = format!("{}:3478", lab.get("STUN2")?);
    // A lab with IPv6 has an IPv6 coturn too (the IPv6 benchmarks, `super::ipv6`).
    let stun6: Vec<String> = match (lab.get("STUN1_6"), lab.get("STUN2_6")) {
        (Ok(a), Ok(c)) => vec![
            "--stun".into(),
            format!("[{a}]:3478"),
            "--stun".into(),
            format!("[{c}]:3478"),
        ],
        _ => Vec::new(),
    };
    let start = |node: &str, me: &str, peer: &str| -> Result<Lines> {
        let mut cmd = lab.command(node, &b.natt)?;
        cmd.args(["punch", &format!("--{proto}"), "--json"])
            .args(if gateways == Gateways::NoUpnp {
                &["--no-upnp"][..]
            } else {
                &[]
            })
            .args(["--stun", &stun1, "--stun", &stun2])
            .args(&stun6)
            .args(["--timeout", "10", "--linger", "0.3"])
            .arg("--token-out")
            .arg(dir.join(me))
            .arg("--peer-token")
            .arg(dir.join(peer))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        Lines::new(cmd.spawn().map_err(|e| err(format!("cannot start natt punch: {e}")))?)
    };
    let names = [a, bn];
    let t_a = Instant::now();
    let side_a = start(a, "a.tok", "b.tok")?;
    let t_b = Instant::now();
    let mut sides = [side_a, start(bn, "b.tok", "a.tok")?];
    // Each side's result line, timed from its spawn (both watched at once, to the millisecond);
    // once both connected, each sends a line to the other.
    let mut got: [Option<(String, f64)>; 2] = [None, None];
    let end = Instant::now() + Duration::from_secs(25);
    while got.iter().any(Option::is_none) && Instant::now() < end {
        for ((side, t0), slot) in sides.iter_mut().zip([t_a, t_b]).zip(got.iter_mut()) {
            if slot.is_none()
                && let Some(line) = side.next_line(Duration::from_millis(1))
            {
                *slot = Some((line, ms_since(t0)));
            }
        }
    }
    let walls: Vec<f64> = got.iter().flatten().map(|(_, w)| *w).collect();
    let results = got.map(|g| g.map(|(l, _)| l).unwrap_or_default());
    if results.iter().all(|r| !r.is_empty()) {
        for (side, name) in sides.iter_mut().zip(names) {
            if let Some(stdin) = side.child.stdin.as_mut() {
                for _ in 0..3 {
                    let _ = writeln!(stdin, "hello from {name}");
                }
            }
        }
    }
    // Both inputs end before either is waited for: over TCP each relays until the other closes.
    for side in &mut sides {
        drop(side.child.stdin.take());
    }
    let finished = sides.map(|s| s.finish(Duration::from_secs(15)));
    let mut out = Outcome {
        ok: true,
        wall: walls,
        ..Outcome::default()
    };
    let others = [bn, a];
    for (((result, (lines, exited_ok, stderr)), name), other) in results.iter().zip(finished).zip(names).zip(others) {
        let json: serde_json::Value = serde_json::from_str(result).unwrap_or_default();
        let via_ok = json.get("via").and_then(serde_json::Value::as_str) == Some(proto);
        let got = lines.iter().any(|l| l == &format!("hello from {other}"));
        out.elapsed.extend(json_number(result, "elapsed_ms"));
        out.peers.extend(
            json.get("peer")
                .and_then(serde_json::Value::as_str)
                .map(|p| p.rsplit_once(':').map_or(p, |(ip, _)| ip).to_string()),
        );
        if !(exited_ok && via_ok && got) {
            out.ok = false;
            out.why = format!(
                "{name}: exit ok {exited_ok}, result {result:?}, got the peer's line {got}; {}",
                stderr.trim()
            );
        }
    }
    let _ = fs::remove_dir_all(&dir);
    Ok(out)
}

/// The one-way delay on each WAN link in the punch time measurements.
pub const DELAY_MS: u32 = 25;
/// The lab of [`time`]: two homes behind port-restricted cone NATs, 25 ms one way on each WAN.
pub const DELAY_TOPOLOGY: &str = "r1=prc,delay=25 r2=prc,delay=25 p1";

/// The median round trip from `node` to the lab's observer (`probe rtt`), in ms.
pub(super) fn rtt_to_observer(lab: &Lab, node: &str) -> Result<f64> {
    let obs = lab.get("OBSERVER1")?;
    let out = lab.probe(node, &["rtt", "--to", &obs, "--count", "20", "--interval-ms", "10"])?;
    out.split_whitespace()
        .find_map(|w| w.strip_prefix("median_ms="))
        .and_then(|v| v.parse::<f64>().ok())
        .filter(|v| v.is_finite())
        .ok_or_else(|| err(format!("{node}: no RTT: {out}")))
}

/// Hole-punch time against the round trip time between the peers.
pub fn time(b: &Bench) -> Result<Section> {
    let lab = b.lab(DELAY_TOPOLOGY)?;
    let runs = b.runs(20, 5);
    let mut rtt = [Samples::new(), Samples::new(), Samples::new()];
    let measure_rtt = |rtt: &mut [Samples; 3]| -> Result<()> {
        for (s, node) in rtt.iter_mut().zip(["h1", "h2", "p1"]) {
            s.push(rtt_to_observer(&lab, node)?);
        }
        Ok(())
    };
    measure_rtt(&mut rtt)?;
    let mut punches = [Punches::new("udp"), Punches::new("tcp")];
    let mut n = 0;
    for i in 0..runs {
        for p in &mut punches {
            n += 1;
            p.record(punch_once(b, &lab, ("h1", "h2"), p.proto, n, Gateways::NoUpnp)?);
        }
        if i == runs / 2 {
            measure_rtt(&mut rtt)?;
        }
    }
    measure_rtt(&mut rtt)?;
    let [h1, h2, p1] = &rtt;
    // The path h1 -> h2 is h1 -> r1 -> inet -> r2 -> h2: the two hosts' round trips to the
    // observer on inet, added.
    let between = match (h1.median(), h2.median()) {
        (Some(a), Some(c)) => a + c,
        _ => return Err(err("no round trip time measured")),
    };
    // Issue 18's targets: UDP one round trip, TCP one and a half, each plus 10 ms.
    let rtts = |proto: &str| if proto == "udp" { 1.0 } else { 1.5 };
    let target_of = |proto: &str| rtts(proto) * between + 10.0;
    let mut s = Section::new("Hole-punch time with 25 ms one-way delay per WAN link");
    s.about.push(format!(
        "Lab `{DELAY_TOPOLOGY}`: every packet between h1 and h2 crosses both delayed WAN links, so \
         the round trip between the peers is h1's round trip to the observer on the lab's internet \
         plus h2's (the probe `rtt` tool, 20 datagrams, measured {} times through the run; p1's \
         round trip to the observer, with no delayed link, shows the internet's own share). \
         **Measured**: `natt punch --json`'s `elapsed_ms`: from reading the peer's token to \
         connected (UDP: the authenticated punch exchange; TCP: the simultaneous open plus the \
         authenticated hello/choose exchange on the stream), of the slower of the two sides. Token \
         files are polled every 2 ms, so the two sides start up to ~2 ms apart (plus process \
         scheduling); the side that starts first waits for the other. Mapping (STUN) comes before and is not included. {runs} \
         punches per protocol, UDP and TCP interleaved.",
        h1.len()
    ));
    let mut t = Table::new(&["round trip", "median (min–max)"]);
    t.row(vec!["h1 ↔ observer (inet)".into(), spread(h1)]);
    t.row(vec!["h2 ↔ observer (inet)".into(), spread(h2)]);
    t.row(vec!["p1 ↔ observer (inet, no delay)".into(), spread(p1)]);
    t.row(vec!["**h1 ↔ h2 (sum of the two)**".into(), ms(Some(between))]);
    s.tables.push(t);
    let mut t = Table::new(&[
        "protocol",
        "ok",
        "slower side, median (min–max)",
        "either side, median (min–max)",
        "in RTTs (slower, median)",
        "target (UDP 1.0, TCP 1.5 RTT, + 10 ms)",
    ]);
    for p in &punches {
        let r = ratio(p.slower.median(), Some(between));
        let proto = p.proto.to_uppercase();
        let target = target_of(p.proto);
        t.row(vec![
            proto.clone(),
            format!("{}/{}", p.succeeded(), p.succeeded() + p.failed),
            spread(&p.slower),
            spread(&p.sides),
            times(r),
            ms(Some(target)),
        ]);
        s.checks.push(Check {
            what: format!("punch time {proto}, slower side (25 ms one way per WAN)"),
            natt: ms(p.slower.median()),
            reference: format!("RTT h1↔h2 {}", ms(Some(between))),
            ratio: format!("{} RTT", times(r).trim_end_matches('x')),
            target: format!("≤ {} RTT + 10 ms = {}", rtts(p.proto), ms(Some(target))),
            met: Some(p.slower.median().is_some_and(|m| m <= target) && p.failed == 0),
        });
        if p.failed > 0 {
            s.notes.push(format!("{proto}: last failure: {}", p.last_failure));
        }
    }
    s.tables.push(t);
    s.notes.push(
        "UDP: each side sends authenticated punch packets to every endpoint of the peer; the first \
         packets are dropped by the peer's NAT until the peer has sent its own, so about one round \
         trip after the later side starts, both have heard each other. TCP: the connection is up \
         about one round trip after the later side starts (the SYNs cross in the NATs); then one \
         frame goes each way on the stream at once (role 1's hello, role 0's choose; \
         `natt-punch`'s `choose.rs`), so both sides are done half a round trip later: 1.5 RTT, \
         plus the skew between the sides' starts for the side that started first."
            .to_string(),
    );
    Ok(s)
}

/// A NAT pair the punch tests cover: its name, topology, and the two hosts.
struct Pair {
    name: &'static str,
    topology: &'static str,
    hosts: (&'static str, &'static str),
}

/// The pairs of `xtask/tests/punch.rs`.
const PAIRS: &[Pair] = &[
    Pair {
        name: "prc–prc",
        topology: "r1=prc r2=prc p1",
        hosts: ("h1", "h2"),
    },
    Pair {
        name: "full–prc",
        topology: "r1=full r2=prc p1",
        hosts: ("h1", "h2"),
    },
    Pair {
        name: "sym–full",
        topology: "r1=sym r2=full p1",
        hosts: ("h1", "h2"),
    },
    Pair {
        name: "same router, hairpin (h1–h1b)",
        topology: "r1=prc,hosts=2,hairpin p1",
        hosts: ("h1", "h1b"),
    },
    Pair {
        name: "double NAT–prc (h2 behind r2 behind r1's CGN, h3)",
        topology: "r1=prc,cgn,hosts=0 r2=prc,via=r1 r3=prc p1",
        hosts: ("h2", "h3"),
    },
];

/// The success rate of hole punching for every NAT pair, UDP and TCP.
pub fn success(b: &Bench) -> Result<Section> {
    let reps = b.runs(20, 5);
    let mut s = Section::new("Hole-punch success rate");
    s.about.push(format!(
        "Each NAT pair of `xtask/tests/punch.rs`, {reps} punches per protocol, UDP and TCP \
         interleaved, no delay or loss. A punch succeeds when both `natt punch` processes print \
         their result and exit successfully, and each received the line the other sent through \
         the punched connection. `elapsed_ms` is the slower side's, as above."
    ));
    let mut t = Table::new(&[
        "NAT pair",
        "topology",
        "protocol",
        "succeeded",
        "slower side elapsed_ms, median (min–max)",
        "peers seen",
    ]);
    let mut n = 0;
    for pair in PAIRS {
        let lab = b.lab(pair.topology)?;
        let mut punches = [Punches::new("udp"), Punches::new("tcp")];
        for _ in 0..reps {
            for p in &mut punches {
                n += 1;
                p.record(punch_once(b, &lab, pair.hosts, p.proto, n, Gateways::NoUpnp)?);
            }
        }
        drop(lab);
        for p in punches {
            let (ok, proto) = (p.succeeded(), p.proto.to_uppercase());
            t.row(vec![
                pair.name.to_string(),
                format!("`{}`", pair.topology),
                proto.clone(),
                format!("{ok}/{reps}"),
                spread(&p.slower),
                p.paths.join("; "),
            ]);
            s.checks.push(Check {
                what: format!("punch success, {}, {proto}", pair.name),
                natt: format!("{ok}/{reps} ({:.0} %)", 100.0 * ok as f64 / reps.max(1) as f64),
                reference: "-".into(),
                ratio: "-".into(),
                target: "100 %".into(),
                met: Some(ok == reps),
            });
            if ok < reps {
                s.notes
                    .push(format!("{} {proto}: last failure: {}", pair.name, p.last_failure));
            }
        }
    }
    s.tables.push(t);
    s.notes.push(
        "`peers seen`: the distinct pairs of addresses the two sides reached (the first host's \
         peer / the second host's): public addresses through the NATs, or LAN addresses when the \
         hosts share a router (local endpoints are tried first; a punch through the hairpinning \
         router also counts as a success)."
            .to_string(),
    );
    Ok(s)
}
