//! Cold-start speed (issue 17): what a user waits for, against the round trips physics allows.
//!
//! - Mapping with every technique on (`natt map --udp --stun STUN1`) behind a router that speaks
//!   neither UPnP nor PCP: one that refuses (a plain `prc` router: its kernel answers ICMP port
//!   unreachable for ports 1900 and 5351) and one that is silent (iptables DROP on r1's INPUT for
//!   UDP 1900 and 5351 from h1, inserted for that run only).
//! - STUN mapping alone (`--no-upnp --no-pcp`) behind the port-restricted NAT, at 0 ms and at
//!   25 ms one-way delay on r1's WAN link (set with [`Lab::impair`]).
//! - The whole `natt punch` (natt's defaults: UPnP and PCP tried too, neither router has a
//!   gateway) from process start to the result line, port-restricted x port-restricted with
//!   25 ms one way per WAN link.
//!
//! Each reference is a round trip measured in the same run with the lab's `probe rtt` tool to
//! the observer, which sits on the same host of the lab's internet as the STUN servers.

use std::collections::BTreeMap;

use super::proc;
use super::punch::{self, Gateways};
use super::report::{Check, Section, Table};
use super::stats::{Samples, ms, spread};
use super::{Bench, json_number};
use crate::lab::{Lab, Result, err};

/// The mapping lab: one home behind a port-restricted NAT without UPnP or PCP, a public host.
pub const MAP_TOPOLOGY: &str = "r1=prc p1";

/// The punch lab: two such homes, 25 ms one way on each WAN link.
pub const PUNCH_TOPOLOGY: &str = "r1=prc,delay=25 r2=prc,delay=25 p1";

/// One way of running `natt map --udp` from h1, and what it measured.
struct MapVariant {
    name: &'static str,
    args: &'static [&'static str],
    /// r1 drops UPnP and PCP from h1 during the run.
    silent: bool,
    /// The WAN delay (one way) the run is made at.
    delay_ms: u32,
    wall: Samples,
    own: Samples,
    /// Per technique (`upnp`, `pcp`, `stun`): natt's own `elapsed_ms`.
    techniques: BTreeMap<String, Samples>,
    /// Runs whose STUN endpoint was marked `nat_restricted` (right behind this NAT).
    restricted: usize,
    failures: usize,
}

impl MapVariant {
    fn new(name: &'static str, args: &'static [&'static str], silent: bool, delay_ms: u32) -> MapVariant {
        MapVariant {
            name,
            args,
            silent,
            delay_ms,
            wall: Samples::new(),
            own: Samples::new(),
            techniques: BTreeMap::new(),
            restricted: 0,
            failures: 0,
        }
    }
}

const ALL: &[&str] = &[];
const STUN_ONLY: &[&str] = &["--no-upnp", "--no-pcp"];

/// Runs the section.
pub fn run(b: &Bench) -> Result<Section> {
    let mut s = Section::new(TITLE);
    mapping(b, &mut s)?;
    whole_punch(b, &mut s)?;
    Ok(s)
}

/// The section's title.
pub const TITLE: &str = "Cold-start speed: mapping and the whole punch against round trips";

/// r1's rules that make it silent to UPnP and PCP from `host`: `-I` inserts, `-D` deletes.
fn silence(lab: &Lab, host: &str, op: &str) -> Result<()> {
    for port in ["1900", "5351"] {
        lab.run(
            "r1",
            &[
                "iptables", op, "INPUT", "-p", "udp", "-s", host, "--dport", port, "-j", "DROP",
            ],
        )?;
    }
    Ok(())
}

fn mapping(b: &Bench, s: &mut Section) -> Result<()> {
    let mut lab = b.lab(MAP_TOPOLOGY)?;
    let stun = format!("{}:3478", lab.get("STUN1")?);
    let host = lab.get("H1_IP")?;
    let runs = b.runs(10, 4);
    let mut variants = [
        MapVariant::new("every technique, router refuses UPnP/PCP", ALL, false, 0),
        MapVariant::new("every technique, router silent to UPnP/PCP", ALL, true, 0),
        MapVariant::new("STUN only, 0 ms WAN delay", STUN_ONLY, false, 0),
        MapVariant::new("STUN only, 25 ms one-way WAN delay", STUN_ONLY, false, 25),
    ];
    let mut probes = [ProbeVariant::new(0), ProbeVariant::new(25)];
    let mut rtt: [Samples; 2] = [Samples::new(), Samples::new()];
    for ((delay, rtt), probe) in [0u32, 25].into_iter().zip(rtt.iter_mut()).zip(probes.iter_mut()) {
        lab.impair("r1", delay, 0.0)?;
        rtt.push(punch::rtt_to_observer(&lab, "h1")?);
        for round in 0..runs {
            for v in variants.iter_mut().filter(|v| v.delay_ms == delay) {
                if v.silent {
                    silence(&lab, &host, "-I")?;
                }
                let r = map_once(b, &lab, &stun, v);
                if v.silent {
                    silence(&lab, &host, "-D")?;
                }
                r?;
            }
            probe_once(b, &lab, &stun, probe)?;
            if round == runs / 2 {
                rtt.push(punch::rtt_to_observer(&lab, "h1")?);
            }
        }
        rtt.push(punch::rtt_to_observer(&lab, "h1")?);
    }
    lab.impair("r1", 0, 0.0)?;
    drop(lab);

    s.about.push(format!(
        "**Mapping** — lab `{MAP_TOPOLOGY}` (no miniupnpd: r1 speaks neither UPnP nor PCP), \
         `natt map --udp --json --hold --stun {stun} [FLAGS]` from h1, {runs} runs per variant, \
         variants interleaved. \"Refuses\": the plain router, whose kernel answers ICMP port \
         unreachable to the UPnP search and the PCP request. \"Silent\": the same router with \
         `iptables -I INPUT -p udp -s H1 --dport 1900|5351 -j DROP` on r1 during that run. \
         **RTT**: h1's round trip to the observer on the STUN servers' host of the lab's \
         internet (`probe rtt`, 20 datagrams, {} times per delay). **natt elapsed_ms**: natt's own \
         figure (mapping only, without process start-up), the one checked; **wall**: spawn to \
         the JSON line.",
        rtt[0].len()
    ));
    let mut t = Table::new(&["WAN delay (one way)", "RTT h1 ↔ STUN host, median (min–max)"]);
    t.row(vec![
        "0 ms".into(),
        format!("{} (each < 0.1 ms reads 0)", spread(&rtt[0])),
    ]);
    t.row(vec!["25 ms".into(), spread(&rtt[1])]);
    s.tables.push(t);
    let mut t = Table::new(&[
        "natt map --udp (h1)",
        "flags",
        "ok runs",
        "nat_restricted",
        "natt elapsed_ms, median (min–max)",
        "wall, median (min–max)",
        "per technique elapsed_ms, median",
    ]);
    for v in &variants {
        let per = v
            .techniques
            .iter()
            .map(|(n, s)| format!("{n} {}", ms(s.median())))
            .collect::<Vec<_>>()
            .join(", ");
        t.row(vec![
            v.name.to_string(),
            if v.args.is_empty() {
                "(none)".to_string()
            } else {
                format!("`{}`", v.args.join(" "))
            },
            format!("{}/{}", v.own.len(), v.own.len() + v.failures),
            format!("{}/{}", v.restricted, v.own.len()),
            spread(&v.own),
            spread(&v.wall),
            per,
        ]);
    }
    s.tables.push(t);
    for (i, v) in variants.iter().enumerate() {
        let rtt = if v.delay_ms == 0 { &rtt[0] } else { &rtt[1] };
        let r = rtt.median();
        let (target, text) = match i {
            0 => (r.map(|r| 2.0 * r + 20.0), "≤ 2 RTT + 20 ms".to_string()),
            1 => (Some(300.0), "≤ 300 ms".to_string()),
            _ => (r.map(|r| 2.0 * r + 10.0), "≤ 2 RTT + 10 ms".to_string()),
        };
        let m = v.own.median();
        s.checks.push(Check {
            what: format!("map latency, {} (natt elapsed_ms)", v.name),
            natt: ms(m),
            reference: format!("RTT to STUN {}", rtt_text(r)),
            ratio: match (m, r) {
                (Some(m), Some(r)) if r > 0.0 => format!("{:.1} RTT", m / r),
                _ => "n/a".into(),
            },
            target: format!("{text} = {}", ms(target)),
            met: Some(m.zip(target).is_some_and(|(m, t)| m <= t) && v.failures == 0),
        });
    }
    probe_report(&probes, &rtt, s);
    s.notes.push(
        "`nat_restricted`: runs whose STUN endpoint was marked restricted, which is right behind \
         this port-restricted NAT. Per technique: natt's own elapsed_ms for each technique that \
         applied (`techniques` in the JSON); the mapping ends when the last one does, or 250 ms \
         after one found an external address (`GATEWAY_GRACE`): UPnP and PCP, still running \
         then behind the silent router, go on in the background and their elapsed_ms is when \
         the mapping returned."
            .to_string(),
    );
    Ok(())
}

/// `natt probe`'s filtering verdict at one WAN delay.
struct ProbeVariant {
    delay_ms: u32,
    /// `filtering_ms`: when the verdict was made, since the probe started.
    filtering: Samples,
    /// Runs whose verdict was right (address-and-port-dependent behind this NAT).
    right: usize,
    verdicts: BTreeMap<String, usize>,
    failures: usize,
}

impl ProbeVariant {
    fn new(delay_ms: u32) -> ProbeVariant {
        ProbeVariant {
            delay_ms,
            filtering: Samples::new(),
            right: 0,
            verdicts: BTreeMap::new(),
            failures: 0,
        }
    }
}

/// The command line of the probe runs (after `natt`).
const PROBE_ARGS: &[&str] = &["probe", "--json", "--no-upnp", "--no-pcp", "--stun"];

/// One `natt probe --json --no-upnp --no-pcp --stun STUN1` from h1 into `v`.
fn probe_once(b: &Bench, lab: &Lab, stun: &str, v: &mut ProbeVariant) -> Result<()> {
    let out = lab.exec(
        "h1",
        &[b.natt_str().as_str()]
            .iter()
            .chain(PROBE_ARGS)
            .chain([&stun])
            .collect::<Vec<_>>(),
    )?;
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    let verdict = json.get("filtering").and_then(serde_json::Value::as_str);
    let at = json.get("filtering_ms").and_then(serde_json::Value::as_f64);
    let (Some(verdict), Some(at)) = (verdict, at) else {
        v.failures += 1;
        return Ok(());
    };
    v.filtering.push(at);
    *v.verdicts.entry(verdict.to_string()).or_default() += 1;
    if verdict == "address-and-port-dependent" {
        v.right += 1;
    }
    Ok(())
}

/// The probe runs' table and checks.
fn probe_report(probes: &[ProbeVariant], rtt: &[Samples; 2], s: &mut Section) {
    let mut t = Table::new(&[
        "natt probe (h1), WAN delay one way",
        "ok runs",
        "verdicts",
        "filtering verdict at (filtering_ms), median (min–max)",
    ]);
    for v in probes {
        let verdicts = v
            .verdicts
            .iter()
            .map(|(k, n)| format!("{k} {n}"))
            .collect::<Vec<_>>()
            .join(", ");
        t.row(vec![
            format!("{} ms", v.delay_ms),
            format!("{}/{}", v.filtering.len(), v.filtering.len() + v.failures),
            verdicts,
            spread(&v.filtering),
        ]);
        let r = if v.delay_ms == 0 { &rtt[0] } else { &rtt[1] };
        let r = r.median();
        let target = r.map(|r| 2.0 * r + 10.0);
        let m = v.filtering.median();
        s.checks.push(Check {
            what: format!(
                "natt probe filtering verdict, prc, {} ms one-way WAN delay (filtering_ms)",
                v.delay_ms
            ),
            natt: ms(m),
            reference: format!("RTT to STUN {}", rtt_text(r)),
            ratio: match (m, r) {
                (Some(m), Some(r)) if r > 0.0 => format!("{:.1} RTT", m / r),
                _ => "n/a".into(),
            },
            target: format!("≤ 2 RTT + 10 ms = {}, verdict right every run", ms(target)),
            met: Some(m.zip(target).is_some_and(|(m, t)| m <= t) && v.failures == 0 && v.right == v.filtering.len()),
        });
    }
    s.tables.push(t);
    s.notes.push(format!(
        "**natt probe**: `natt {} STUN1` from h1 in the same rounds, interleaved with the mappings: \
         `filtering_ms` is when the RFC 5780 filtering verdict was made, since the probe started \
         (the tests II and III wait 1 round trip + 5 ms after test I's answer; \
         `--patient-filtering` waits 4 round trips + 250 ms). Right behind this port-restricted \
         NAT: address-and-port-dependent.",
        PROBE_ARGS.join(" ")
    ));
}

/// A round trip for the summary: `probe rtt` prints tenths of a millisecond, so a LAN-speed
/// round trip reads 0.0.
fn rtt_text(v: Option<f64>) -> String {
    match v {
        Some(v) if v < 0.05 => "< 0.1 ms".to_string(),
        other => ms(other),
    }
}

/// One `natt map --udp --json --hold` run from h1 into `v`.
fn map_once(b: &Bench, lab: &Lab, stun: &str, v: &mut MapVariant) -> Result<()> {
    let mut cmd = lab.command("h1", &b.natt)?;
    cmd.args(["map", "--udp", "--json", "--hold", "--stun", stun])
        .args(v.args);
    let (line, wall) = proc::map_hold_line(&mut cmd)?;
    let json: serde_json::Value = line
        .as_deref()
        .and_then(|l| serde_json::from_str(l).ok())
        .unwrap_or_default();
    let stun_ep = json
        .get("endpoints")
        .and_then(serde_json::Value::as_array)
        .and_then(|eps| {
            eps.iter()
                .find(|e| e.get("technique").and_then(serde_json::Value::as_str) == Some("stun"))
        })
        .cloned();
    let own = line.as_deref().and_then(|l| json_number(l, "elapsed_ms"));
    let (Some(ep), Some(own)) = (stun_ep, own) else {
        v.failures += 1;
        return Ok(());
    };
    v.wall.push(wall);
    v.own.push(own);
    if ep.get("nat_restricted").and_then(serde_json::Value::as_bool) == Some(true) {
        v.restricted += 1;
    }
    for tech in json
        .get("techniques")
        .and_then(serde_json::Value::as_array)
        .into_iter()
        .flatten()
    {
        if let (Some(name), Some(e)) = (
            tech.get("name").and_then(serde_json::Value::as_str),
            tech.get("elapsed_ms").and_then(serde_json::Value::as_f64),
        ) {
            v.techniques.entry(name.to_string()).or_default().push(e);
        }
    }
    Ok(())
}

/// Whole punches of one protocol, as they add up.
struct WholePunch {
    proto: &'static str,
    /// Spawn to the result line, the slower side's.
    wall: Samples,
    /// `elapsed_ms`, the slower side's.
    own: Samples,
    failed: usize,
    last_failure: String,
}

impl WholePunch {
    fn new(proto: &'static str) -> WholePunch {
        WholePunch {
            proto,
            wall: Samples::new(),
            own: Samples::new(),
            failed: 0,
            last_failure: String::new(),
        }
    }
}

/// The whole punch, from process start to the result line.
fn whole_punch(b: &Bench, s: &mut Section) -> Result<()> {
    let lab = b.lab(PUNCH_TOPOLOGY)?;
    let runs = b.runs(8, 3);
    let mut rtt = [Samples::new(), Samples::new()];
    let measure = |rtt: &mut [Samples; 2]| -> Result<()> {
        for (s, node) in rtt.iter_mut().zip(["h1", "h2"]) {
            s.push(punch::rtt_to_observer(&lab, node)?);
        }
        Ok(())
    };
    measure(&mut rtt)?;
    let mut punches = [WholePunch::new("udp"), WholePunch::new("tcp")];
    let mut n = 0;
    for i in 0..runs {
        for p in &mut punches {
            n += 1;
            let o = punch::punch_once(b, &lab, ("h1", "h2"), p.proto, 1000 + n, Gateways::Defaults)?;
            match o.slower_wall() {
                Some(w) => {
                    p.wall.push(w);
                    if let Some(e) = o.elapsed.iter().copied().reduce(f64::max) {
                        p.own.push(e);
                    }
                }
                None => {
                    p.failed += 1;
                    p.last_failure = o.why;
                }
            }
        }
        if i == runs / 2 {
            measure(&mut rtt)?;
        }
    }
    measure(&mut rtt)?;
    drop(lab);
    let [h1, h2] = &rtt;
    let (Some(r1), Some(r2)) = (h1.median(), h2.median()) else {
        return Err(err("no round trip time measured"));
    };
    // Each side's round trip to the STUN servers (the slower host's), and between the peers
    // (h1 -> r1 -> inet -> r2 -> h2: the two round trips to the observer added).
    let to_stun = r1.max(r2);
    let between = r1 + r2;
    s.about.push(format!(
        "**Whole punch** — lab `{PUNCH_TOPOLOGY}` (no UPnP or PCP gateway on either router), \
         `natt punch --udp|--tcp --json --stun STUN1 --stun STUN2 --timeout 10 --linger 0.3 \
         --token-out FILE --peer-token FILE` with natt's defaults otherwise (UPnP and PCP tried), \
         both sides spawned one right after the other, tokens through files. **Measured**: from \
         spawning each side (`ip netns exec`) to its JSON result line (connected), the slower \
         side's; `elapsed_ms` (from reading the peer's token) beside it. {runs} punches per \
         protocol, UDP and TCP interleaved. **RTT to STUN**: the slower host's round trip to the \
         observer (on the STUN servers' host); **RTT between the peers**: h1's plus h2's."
    ));
    let mut t = Table::new(&[
        "protocol",
        "ok",
        "spawn → connected, slower side, median (min–max)",
        "elapsed_ms (after the token), slower side, median",
        "target",
    ]);
    for p in &punches {
        let peers = if p.proto == "udp" { 1.0 } else { 1.5 };
        let target = 2.0 * to_stun + peers * between + 30.0;
        let name = p.proto.to_uppercase();
        t.row(vec![
            name.clone(),
            format!("{}/{}", p.wall.len(), p.wall.len() + p.failed),
            spread(&p.wall),
            ms(p.own.median()),
            ms(Some(target)),
        ]);
        let m = p.wall.median();
        s.checks.push(Check {
            what: format!("whole punch {name}, process start to connected, prc x prc, 25 ms per WAN"),
            natt: ms(m),
            reference: format!("RTT to STUN {}, between peers {}", ms(Some(to_stun)), ms(Some(between))),
            ratio: "-".into(),
            target: format!("≤ 2 RTT(STUN) + {peers} RTT(peers) + 30 ms = {}", ms(Some(target))),
            met: Some(m.is_some_and(|m| m <= target) && p.failed == 0),
        });
        if p.failed > 0 {
            s.notes
                .push(format!("whole punch {name}: last failure: {}", p.last_failure));
        }
    }
    let mut r = Table::new(&["round trip", "median (min–max)"]);
    r.row(vec!["h1 ↔ observer".into(), spread(h1)]);
    r.row(vec!["h2 ↔ observer".into(), spread(h2)]);
    s.tables.push(r);
    s.tables.push(t);
    Ok(())
}
