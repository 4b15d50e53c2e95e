//! Hard NATs (issue 15): `natt punch --udp` between a host behind a symmetric NAT (`MASQUERADE
//! --random-fully`) and one behind a port-restricted NAT, which natt joins with the birthday
//! method (`natt_punch::birthday`). [`run`]: the success rate over many runs for the three pairs
//! of `xtask/tests/hardnat.rs`, the connect time with 25 ms one way per WAN link against the
//! round trip between the peers, and the datagrams each side sent to the other per success,
//! counted on the routers (an `iptables` rule's counter in each router's namespace), with the
//! entries of each router's connection table after the punch.

use super::Bench;
use super::punch::{Gateways, punch_once, rtt_to_observer};
use super::report::{Check, Section, Table};
use super::stats::{Samples, ms, ratio, spread, times};
use crate::lab::{Lab, Result, err};

/// The section's title.
pub const TITLE: &str = "Hard NATs: direct UDP through a symmetric NAT (birthday method)";

/// The stated budget of one attempt, both sides together (`natt_punch::birthday::ATTEMPT_BUDGET`:
/// 2048 spray probes and 256 sockets × 4 cold rounds).
const ATTEMPT_BUDGET: u64 = 3072;
/// On top of the budget: the ordinary punch's rounds and the lines the bench sends each way.
const ORDINARY_ALLOWANCE: u64 = 100;
/// The comment that marks the counting rules.
const COUNTER: &str = "natt-bench-hardnat";

/// A NAT pair: the hard side's host and router, the easy side's.
struct Pair {
    name: &'static str,
    topology: &'static str,
    hard: (&'static str, &'static str),
    easy: (&'static str, &'static str),
}

/// The pairs of `xtask/tests/hardnat.rs`.
const PAIRS: &[Pair] = &[
    Pair {
        name: "sym–prc",
        topology: "r1=sym r2=prc p1",
        hard: ("h1", "r1"),
        easy: ("h2", "r2"),
    },
    Pair {
        name: "sym behind CGN–prc",
        topology: "r1=prc,cgn,hosts=0 r2=sym,via=r1 r3=prc p1",
        hard: ("h2", "r2"),
        easy: ("h3", "r3"),
    },
    Pair {
        name: "sym–prc, 10 % loss each way on both WAN links",
        topology: "r1=sym,loss=10 r2=prc,loss=10 p1",
        hard: ("h1", "r1"),
        easy: ("h2", "r2"),
    },
];

/// The lab of the connect time: symmetric and port-restricted, 25 ms one way on each WAN.
const DELAY_TOPOLOGY: &str = "r1=sym,delay=25 r2=prc,delay=25 p1";

/// What one punch cost, counted on the routers.
#[derive(Debug, Default)]
struct Cost {
    /// Datagrams the easy side sent to the hard side's public IP.
    easy_sent: u64,
    /// Datagrams the hard side sent to the easy side's public IP.
    hard_sent: u64,
    /// Entries of the hard side's router's connection table after the punch.
    hard_table: u64,
    /// Entries of the easy side's router's connection table after the punch.
    easy_table: u64,
}

/// Runs `argv` in `node`, failing with its stderr when it fails.
fn run_in(lab: &Lab, node: &str, argv: &[&str]) -> Result<String> {
    let out = lab.exec(node, argv)?;
    if !out.status.success() {
        return Err(err(format!(
            "{node}: {} failed: {}",
            argv.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Counts, in `router`, the UDP datagrams leaving its WAN towards `to` (before the link's
/// loss, which the parent applies): what its side sent.
fn add_counter(lab: &Lab, router: &str, to: &str) -> Result<()> {
    run_in(
        lab,
        router,
        &[
            "iptables",
            "-t",
            "mangle",
            "-I",
            "POSTROUTING",
            "-o",
            "wan",
            "-p",
            "udp",
            "-d",
            to,
            "-m",
            "comment",
            "--comment",
            COUNTER,
        ],
    )
    .map(drop)
}

/// The counter of `router` (its datagrams since the last read), zeroing it.
fn take_counter(lab: &Lab, router: &str) -> Result<u64> {
    let out = run_in(
        lab,
        router,
        &["iptables", "-t", "mangle", "-L", "POSTROUTING", "-v", "-x", "-n", "-Z"],
    )?;
    out.lines()
        .find(|l| l.contains(COUNTER))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .ok_or_else(|| err(format!("{router}: no counter in {out}")))
}

/// Empties the connection tables of `routers`, so that each punch starts from none of the
/// last one's flows.
fn flush_tables(lab: &Lab, routers: &[&str]) -> Result<()> {
    for r in routers {
        // conntrack exits 1 when the table was already empty.
        let _ = lab.exec(r, &["conntrack", "-F"])?;
    }
    Ok(())
}

/// Entries of `router`'s connection table.
fn table_size(lab: &Lab, router: &str) -> Result<u64> {
    let out = lab.exec(router, &["conntrack", "-C"])?;
    String::from_utf8_lossy(&out.stdout).trim().parse().map_err(|_| {
        err(format!(
            "{router}: conntrack -C said {:?}",
            String::from_utf8_lossy(&out.stdout)
        ))
    })
}

/// Punches of one pair, as they add up.
#[derive(Default)]
struct Runs {
    ok: usize,
    failed: usize,
    last_failure: String,
    slower: Samples,
    easy_sent: Samples,
    hard_sent: Samples,
    total: Samples,
    hard_table: Samples,
    easy_table: Samples,
}

impl Runs {
    fn total(&self) -> usize {
        self.ok + self.failed
    }
}

/// `runs` punches between the pair's hosts in `lab`, the hard side started first; `n` numbers
/// the token directories.
fn punches(b: &Bench, lab: &Lab, pair: &Pair, runs: usize, n: &mut usize) -> Result<Runs> {
    let hard_ip = lab.get(&format!("{}_PUBLIC_IP", pair.hard.0.to_uppercase()))?;
    let easy_ip = lab.get(&format!("{}_PUBLIC_IP", pair.easy.0.to_uppercase()))?;
    add_counter(lab, pair.hard.1, &easy_ip)?;
    add_counter(lab, pair.easy.1, &hard_ip)?;
    let routers: Vec<String> = lab
        .plan()
        .nodes()
        .into_iter()
        .filter(|node| node.starts_with('r'))
        .collect();
    let routers: Vec<&str> = routers.iter().map(String::as_str).collect();
    let mut out = Runs::default();
    for _ in 0..runs {
        *n += 1;
        flush_tables(lab, &routers)?;
        take_counter(lab, pair.hard.1)?;
        take_counter(lab, pair.easy.1)?;
        let o = punch_once(b, lab, (pair.hard.0, pair.easy.0), "udp", *n, Gateways::NoUpnp)?;
        let cost = Cost {
            easy_sent: take_counter(lab, pair.easy.1)?,
            hard_sent: take_counter(lab, pair.hard.1)?,
            hard_table: table_size(lab, pair.hard.1)?,
            easy_table: table_size(lab, pair.easy.1)?,
        };
        match (o.ok, o.elapsed.as_slice()) {
            (true, [x, y]) => {
                let slower = x.max(*y);
                out.ok += 1;
                out.slower.push(slower);
                out.easy_sent.push(cost.easy_sent as f64);
                out.hard_sent.push(cost.hard_sent as f64);
                out.total.push((cost.easy_sent + cost.hard_sent) as f64);
                out.hard_table.push(cost.hard_table as f64);
                out.easy_table.push(cost.easy_table as f64);
            }
            _ => {
                out.failed += 1;
                out.last_failure = o.why;
            }
        }
    }
    Ok(out)
}

/// A count's median and maximum, as text.
fn median_max(s: &Samples) -> String {
    match (s.median(), s.max()) {
        (Some(m), Some(x)) => format!("{m:.0} (max {x:.0})"),
        _ => "-".into(),
    }
}

/// The hard-NAT benchmarks: success, connect time, cost.
pub fn run(b: &Bench) -> Result<Section> {
    let reps = b.runs(20, 5);
    let mut s = Section::new(TITLE);
    s.about.push(format!(
        "`natt punch --udp` (as `xtask/tests/hardnat.rs` runs it: two STUN servers, so a side \
         behind the symmetric NAT sees two ports and says so in its token) between a host behind \
         a symmetric NAT (`MASQUERADE --random-fully`: a random port per destination, \
         port-restricted filtering) and one behind a port-restricted NAT. The hard side opens 256 \
         sockets probing the easy side; the easy side probes random ports of the hard side's IP, \
         2000 a second, 2048 at most, and stops at the first answer. {reps} punches per pair, the \
         hard side started first, every router's connection table emptied before each. A punch \
         succeeds when both sides print their result and each receives the line the other sent \
         through the punched socket. **Counted on the routers**: an `iptables` rule in each \
         router (`mangle POSTROUTING -o wan -d PEER_IP`) counts the UDP datagrams its side sent \
         to the other side's public IP (before the WAN link's loss), and `conntrack -C` the \
         router's connection table after the punch (both processes have exited; entries stay \
         until their timeout, 30 s for UDP without reply)."
    ));
    let mut t = Table::new(&[
        "NAT pair",
        "topology",
        "succeeded",
        "elapsed_ms, slower side",
        "easy → hard datagrams",
        "hard → easy datagrams",
        "both",
        "hard router's table",
        "easy router's table",
    ]);
    let mut n = 0;
    let mut cost_checks = Vec::new();
    for pair in PAIRS {
        let lab = b.lab(pair.topology)?;
        let r = punches(b, &lab, pair, reps, &mut n)?;
        drop(lab);
        t.row(vec![
            pair.name.to_string(),
            format!("`{}`", pair.topology),
            format!("{}/{}", r.ok, r.total()),
            spread(&r.slower),
            median_max(&r.easy_sent),
            median_max(&r.hard_sent),
            median_max(&r.total),
            median_max(&r.hard_table),
            median_max(&r.easy_table),
        ]);
        let need = reps - reps / 20;
        s.checks.push(Check {
            what: format!("hard NAT punch success, {} (UDP)", pair.name),
            natt: format!("{}/{}", r.ok, r.total()),
            reference: "-".into(),
            ratio: "-".into(),
            target: format!("≥ {need}/{reps}"),
            met: Some(r.ok >= need),
        });
        let limit = ATTEMPT_BUDGET + ORDINARY_ALLOWANCE;
        cost_checks.push(Check {
            what: format!("hard NAT datagrams per success, both sides, {}", pair.name),
            natt: median_max(&r.total),
            reference: "-".into(),
            ratio: "-".into(),
            target: format!("median and max ≤ budget {ATTEMPT_BUDGET} + {ORDINARY_ALLOWANCE}"),
            met: Some(r.total.max().is_some_and(|m| m <= limit as f64)),
        });
        if r.failed > 0 {
            s.notes.push(format!("{}: last failure: {}", pair.name, r.last_failure));
        }
    }
    s.tables.push(t);
    s.checks.extend(cost_checks);

    // Connect time with delay.
    let lab = b.lab(DELAY_TOPOLOGY)?;
    let between = rtt_to_observer(&lab, "h1")? + rtt_to_observer(&lab, "h2")?;
    let pair = Pair {
        name: "sym–prc, 25 ms one way per WAN",
        topology: DELAY_TOPOLOGY,
        hard: ("h1", "r1"),
        easy: ("h2", "r2"),
    };
    let r = punches(b, &lab, &pair, reps, &mut n)?;
    let between = (between + rtt_to_observer(&lab, "h1")? + rtt_to_observer(&lab, "h2")?) / 2.0;
    drop(lab);
    let target = 5.0 * between;
    let in_rtt = ratio(r.slower.median(), Some(between));
    let mut t = Table::new(&[
        "pair",
        "RTT h1 ↔ h2",
        "succeeded",
        "elapsed_ms, slower side, median (min–max)",
        "in RTTs",
        "both sides' datagrams",
    ]);
    t.row(vec![
        format!("`{DELAY_TOPOLOGY}`"),
        ms(Some(between)),
        format!("{}/{}", r.ok, r.total()),
        spread(&r.slower),
        times(in_rtt),
        median_max(&r.total),
    ]);
    s.tables.push(t);
    s.checks.push(Check {
        what: "hard NAT connect time, sym–prc, 25 ms one way per WAN (slower side)".into(),
        natt: ms(r.slower.median()),
        reference: format!("RTT h1↔h2 {}", ms(Some(between))),
        ratio: format!("{} RTT", times(in_rtt).trim_end_matches('x')),
        target: format!("≤ 5 RTT = {}", ms(Some(target))),
        met: Some(r.slower.median().is_some_and(|m| m <= target) && r.failed == 0),
    });
    if r.failed > 0 {
        s.notes.push(format!("with delay: last failure: {}", r.last_failure));
    }
    s.notes.push(format!(
        "`elapsed_ms` is `natt punch --json`'s, from reading the peer's token to connected, of \
         the slower side (mapping comes before and is not included); the round trip between the \
         peers is the sum of each host's round trip to the lab's observer, measured before and \
         after the runs. The budget of one attempt is {ATTEMPT_BUDGET} datagrams (2048 spray \
         probes, 256 sockets × 4 cold rounds); a success stops both sides early, so what a \
         success costs is mostly the hard side's first round (256) and the easy side's probes \
         until the first answer (on average 252 per port met, at 2000 a second, plus a round \
         trip's worth sent before the answer arrives). The easy side's router holds one flow per \
         probe it forwarded, the hard side's one per socket that sent, until their timeout."
    ));
    Ok(s)
}
