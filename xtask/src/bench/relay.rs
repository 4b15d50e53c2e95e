//! Connecting through a TURN relay (issue 14): [`run`] measures the relayed connect time of
//! `natt punch --udp --turn` between two symmetric NATs with 25 ms one way on each WAN link,
//! against the round trips it cannot avoid, and the relayed throughput (datagrams per second
//! with no loss through the lab's coturn) against coturn's own `turnutils_uclient` through the
//! same server, interleaved in the same run.

use std::fs;
use std::io::Write as _;
use std::process::Stdio;
use std::time::{Duration, Instant};

use super::proc::{Lines, ms_since, timed};
use super::punch::rtt_to_observer;
use super::report::{Check, Section, Table};
use super::stats::{Samples, ms, ratio, spread, times};
use super::{Bench, json_number};
use crate::lab::{Lab, Result, err};

/// The section's title.
pub const TITLE: &str = "Connecting through a TURN relay";
/// The lab of the connect time: two symmetric NATs, 25 ms one way on each WAN link.
pub const DELAY_TOPOLOGY: &str = "r1=sym,delay=25 r2=sym,delay=25 p1";
/// The lab of the throughput: two symmetric NATs, no delay.
pub const TOPOLOGY: &str = "r1=sym r2=sym p1";
/// The size of the datagrams of the throughput runs.
const SIZE: usize = 100;
/// `turnutils_peer`'s port on p1 (the reference's echoing peer).
const PEER_PORT: &str = "3480";

/// One relayed session: h1 with the relay (`--turn`), h2 with it too or without.
struct Session {
    a: Lines,
    b: Lines,
    /// Each side's result line.
    results: [String; 2],
    /// h1's stderr is only read at the end.
    dir: std::path::PathBuf,
}

/// Starts a relayed session between h1 (with the relay) and h2 (with it too when `both`);
/// returns once both printed their result.
fn start(b: &Bench, lab: &Lab, n: usize, both: bool) -> Result<Session> {
    let dir = lab.state_dir().join(format!("bench-relay-{n}"));
    fs::create_dir_all(&dir)?;
    let stun1 = format!("{}:3478", lab.get("STUN1")?);
    let uri = lab.get("TURN_URI")?;
    let user = lab.get("TURN_USER")?;
    let password = lab.get("TURN_PASSWORD")?;
    let spawn = |node: &str, me: &str, peer: &str, relay: bool| -> Result<Lines> {
        let mut cmd = lab.command(node, &b.natt)?;
        cmd.args(["punch", "--udp", "--json", "--no-upnp", "--no-pcp", "--stun", &stun1])
            .args(["--timeout", "10", "--linger", "1"])
            .arg("--token-out")
            .arg(dir.join(me))
            .arg("--peer-token")
            .arg(dir.join(peer));
        if relay {
            cmd.args(["--turn", &uri, "--turn-user", &user])
                .env("NATT_TURN_PASSWORD", &password)
                .env("RUST_LOG", "natt_core::mapping=debug");
        }
        cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
        Lines::new(cmd.spawn().map_err(|e| err(format!("cannot start natt punch: {e}")))?)
    };
    let mut a = spawn("h1", "a.tok", "b.tok", true)?;
    let mut bb = spawn("h2", "b.tok", "a.tok", both)?;
    let ra = a.next_line(Duration::from_secs(25)).unwrap_or_default();
    let rb = bb.next_line(Duration::from_secs(25)).unwrap_or_default();
    Ok(Session {
        a,
        b: bb,
        results: [ra, rb],
        dir,
    })
}

impl Session {
    fn paths(&self) -> Vec<String> {
        self.results
            .iter()
            .map(|r| {
                serde_json::from_str::<serde_json::Value>(r)
                    .ok()
                    .and_then(|j| j.get("path").and_then(|p| p.as_str()).map(str::to_owned))
                    .unwrap_or_default()
            })
            .collect()
    }

    /// Ends both sides; their stderr (h1's, h2's).
    fn end(self) -> (String, String) {
        let (_, _, a) = self.a.finish(Duration::from_secs(15));
        let (_, _, b) = self.b.finish(Duration::from_secs(15));
        let _ = fs::remove_dir_all(&self.dir);
        (a, b)
    }
}

/// The allocation's time in h1's log: natt-core's `turn: [...] in 101.2ms` (debug).
fn allocation_ms(stderr: &str) -> Option<f64> {
    let line = stderr.lines().find(|l| l.contains("] turn: [") && l.contains(" in "))?;
    let d = line.rsplit(" in ").next()?.trim();
    let (num, unit) = d.split_at(d.find(|c: char| !(c.is_ascii_digit() || c == '.'))?);
    let v: f64 = num.parse().ok()?;
    match unit {
        "ms" => Some(v),
        "s" => Some(v * 1000.0),
        "µs" | "us" => Some(v / 1000.0),
        "ns" => Some(v / 1e6),
        _ => None,
    }
}

/// The rates natt's sender is paced at, datagrams per second, one batch of a second each.
const RATES: &[usize] = &[6_000, 9_000, 12_000, 15_000, 20_000, 30_000, 40_000, 50_000];

/// One batch: (rate asked, datagrams sent, datagrams h2 got, the rate achieved).
type Batch = (usize, usize, usize, f64);

/// One relayed session, then one batch a rate of [`RATES`] from h1 to h2: each second's worth
/// of [`SIZE`]-byte lines written paced (a slice every millisecond). Per batch: (rate asked,
/// datagrams h2 got of those sent, the rate achieved: got / from the first write to h2's last
/// line); and both sides' paths.
fn natt_batches(b: &Bench, lab: &Lab, n: usize) -> Result<(Vec<Batch>, Vec<String>)> {
    let mut s = start(b, lab, n, false)?;
    let paths = s.paths();
    let mut out = Vec::new();
    for (k, &rate) in RATES.iter().enumerate() {
        let prefix = format!("b{k} ");
        let line = |i: usize| {
            let mut l = format!("{prefix}{i} ");
            l.push_str(&"x".repeat(SIZE.saturating_sub(l.len())));
            l
        };
        let t0 = Instant::now();
        let mut sent = 0;
        if let Some(stdin) = s.a.child.stdin.as_mut() {
            while sent < rate {
                let due = ((t0.elapsed().as_secs_f64() * rate as f64) as usize + 1).min(rate);
                let mut chunk = String::new();
                while sent < due {
                    chunk.push_str(&line(sent));
                    chunk.push('\n');
                    sent += 1;
                }
                stdin.write_all(chunk.as_bytes())?;
                std::thread::sleep(Duration::from_millis(1));
            }
            stdin.flush()?;
        }
        let mut got = 0;
        let mut last = 0.0;
        while got < sent {
            match s.b.next_line(Duration::from_millis(500)) {
                Some(l) if l.starts_with(&prefix) => {
                    got += 1;
                    last = ms_since(t0);
                }
                Some(_) => {}
                None => break,
            }
        }
        let achieved = if last > 0.0 { got as f64 / (last / 1000.0) } else { 0.0 };
        out.push((rate, sent, got, achieved));
    }
    s.end();
    Ok((out, paths))
}

/// `turnutils_uclient` (one client, no RTCP allocation, `-z 0`: no pause between messages)
/// sending `count` messages of [`SIZE`] bytes to the echoing peer on p1 through the relay:
/// the median of its per-second progress (messages it got back in each whole second of the
/// transfer), and whether it lost none.
fn uclient(lab: &Lab, count: usize) -> Result<(Option<f64>, bool, String)> {
    let p1 = lab.get("P1_IP")?;
    let user = lab.get("TURN_USER")?;
    let password = lab.get("TURN_PASSWORD")?;
    let turn_ip = lab.get("TURN_IP")?;
    let mut cmd = lab.command("h1", "timeout")?;
    cmd.args([
        "60",
        "turnutils_uclient",
        "-u",
        &user,
        "-w",
        &password,
        "-e",
        &p1,
        "-r",
        PEER_PORT,
    ])
    .args([
        "-n",
        &count.to_string(),
        "-l",
        &SIZE.to_string(),
        "-m",
        "1",
        "-z",
        "0",
        "-c",
        &turn_ip,
    ]);
    let (out, _) = timed(&mut cmd)?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok((uclient_rate(&text), uclient_lost(&text) == Some(0), text))
}

/// The lost count of `turnutils_uclient`'s output (`Total lost packets N (...)`).
fn uclient_lost(text: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.split("Total lost packets ").nth(1))
        .and_then(|r| r.split_whitespace().next())
        .and_then(|v| v.parse().ok())
}

/// The median messages per second of `turnutils_uclient`'s progress lines
/// (`SECS: : start_mclient: msz=1, tot_send_msgs=S, tot_recv_msgs=R, ...`), over the whole
/// seconds between its first line with messages and its last.
fn uclient_rate(text: &str) -> Option<f64> {
    let progress: Vec<(u64, u64)> = text
        .lines()
        .filter(|l| l.contains("start_mclient: msz="))
        .filter_map(|l| {
            let secs = l.split(':').next()?.trim().parse().ok()?;
            let recv = l
                .split("tot_recv_msgs=")
                .nth(1)?
                .split(',')
                .next()?
                .trim()
                .parse()
                .ok()?;
            Some((secs, recv))
        })
        .filter(|(_, r)| *r > 0)
        .collect();
    let rates: Samples = progress
        .windows(2)
        .filter_map(|w| match w {
            [(t1, r1), (t2, r2)] if t2 > t1 && r2 >= r1 => Some((r2 - r1) as f64 / (t2 - t1) as f64),
            _ => None,
        })
        .collect();
    rates.median()
}

/// The benchmark.
pub fn run(b: &Bench) -> Result<Section> {
    let mut s = Section::new(TITLE);
    connect_time(b, &mut s)?;
    throughput(b, &mut s)?;
    Ok(s)
}

/// One setting's figures in [`connect_time`].
#[derive(Default)]
struct Runs {
    alloc: Samples,
    punch: Samples,
    total: Samples,
    /// Each side's connect (h1, h2).
    sides: [Samples; 2],
}

fn connect_time(b: &Bench, s: &mut Section) -> Result<()> {
    let lab = b.lab(DELAY_TOPOLOGY)?;
    let runs = b.runs(12, 4);
    let mut rtt = [Samples::new(), Samples::new()];
    // A measurement that gets no answer at all (it happens, rarely, on this shared machine)
    // is tried again, at most 3 times.
    let measure = |rtt: &mut [Samples; 2]| -> Result<()> {
        for (s, node) in rtt.iter_mut().zip(["h1", "h2"]) {
            let mut last = None;
            for _ in 0..3 {
                match rtt_to_observer(&lab, node) {
                    Ok(v) => {
                        s.push(v);
                        last = None;
                        break;
                    }
                    Err(e) => last = Some(e),
                }
            }
            if let Some(e) = last {
                return Err(e);
            }
        }
        Ok(())
    };
    measure(&mut rtt)?;
    // Per setting (0: the relay on h1 alone, 1: on both sides): the allocation, the slower
    // side's connect, their sum, and each side's connect.
    let mut runs_of: [Runs; 2] = Default::default();
    let mut failures = Vec::new();
    for n in 0..runs {
        for (both, r) in [false, true].into_iter().zip(runs_of.iter_mut()) {
            let sess = start(b, &lab, 2 * n + usize::from(both), both)?;
            let paths = sess.paths();
            let each: Option<Vec<f64>> = sess.results.iter().map(|r| json_number(r, "elapsed_ms")).collect();
            if let Some(each) = &each {
                for (s, e) in r.sides.iter_mut().zip(each) {
                    s.push(*e);
                }
            }
            let slower = each.and_then(|v| v.into_iter().reduce(f64::max));
            let (ea, eb) = sess.end();
            // The allocation each side with the relay waited for; the later one counts.
            let alloc = if both {
                allocation_ms(&ea).zip(allocation_ms(&eb)).map(|(a, b)| a.max(b))
            } else {
                allocation_ms(&ea)
            };
            match (alloc, slower) {
                (Some(a), Some(p)) if paths.iter().all(|p| p == "relay") => {
                    r.alloc.push(a);
                    r.punch.push(p);
                    r.total.push(a + p);
                }
                other => failures.push(format!(
                    "(both: {both}) {other:?} {paths:?} {}",
                    ea.lines().last().unwrap_or("")
                )),
            }
        }
        if n == runs / 2 {
            measure(&mut rtt)?;
        }
    }
    measure(&mut rtt)?;
    let [h1, h2] = &rtt;
    let (Some(r1), Some(r2)) = (h1.median(), h2.median()) else {
        return Err(err("no round trip time measured"));
    };
    // The relay is on the lab's internet, as the observer: h1's round trip to the relay is
    // h1's to the observer; the round trip between the peers through the relay is h1's plus h2's.
    let target = 2.0 * r1 + (r1 + r2) + 20.0;
    s.about.push(format!(
        "Lab `{DELAY_TOPOLOGY}`: no punch connects two symmetric NATs, so `natt punch --udp` goes \
         through the relay, given to both sides (`--turn`, the lab's coturn, UDP: each side probes \
         the other's relayed address), and, as information, to h1 alone (h2 reaches h1's relayed \
         address with plain UDP). The two settings alternate. **Measured**, per run: the \
         allocation (the `turn` technique while mapping, from the log; with the relay on both \
         sides the later of the two) plus the connect (`elapsed_ms` of the slower \
         side: from reading the peer's token to connected over the relayed path, authenticated \
         by the punch's signed messages, including natt's 10 ms grace for a direct path). \
         **Target**: 2 round trips to the relay + 1 round trip between the peers through the \
         relay + 20 ms. {runs} runs; round trips measured {} times through the run.",
        h1.len()
    ));
    let mut t = Table::new(&["figure", "relay on both sides, median (min–max)", "relay on h1 alone"]);
    let [one, both] = &runs_of;
    t.row(vec!["h1 ↔ relay round trip".into(), spread(h1), String::new()]);
    t.row(vec!["h2 ↔ relay round trip".into(), spread(h2), String::new()]);
    t.row(vec!["allocation".into(), spread(&both.alloc), spread(&one.alloc)]);
    t.row(vec![
        "connect, h1".into(),
        spread(&both.sides[0]),
        spread(&one.sides[0]),
    ]);
    t.row(vec![
        "connect, h2".into(),
        spread(&both.sides[1]),
        spread(&one.sides[1]),
    ]);
    t.row(vec![
        "connect over the relay (slower side)".into(),
        spread(&both.punch),
        spread(&one.punch),
    ]);
    t.row(vec![
        "**allocation + connect**".into(),
        spread(&both.total),
        spread(&one.total),
    ]);
    s.tables.push(t);
    let reference = format!("2 RTT relay + 1 RTT via relay = {}", ms(Some(target - 20.0)));
    s.checks.push(Check {
        what: "relayed connect time, sym × sym, relay on both sides (25 ms one way per WAN)".into(),
        natt: ms(both.total.median()),
        reference: reference.clone(),
        ratio: times(ratio(both.total.median(), Some(target - 20.0))),
        target: format!("≤ {}", ms(Some(target))),
        met: Some(failures.is_empty() && both.total.median().is_some_and(|m| m <= target)),
    });
    s.checks.push(Check {
        what: "relayed connect time, sym × sym, relay on one side only (25 ms one way per WAN)".into(),
        natt: ms(one.total.median()),
        reference,
        ratio: times(ratio(one.total.median(), Some(target - 20.0))),
        target: "info: 1.5 RTT via relay on the relay's side (see the notes)".into(),
        met: None,
    });
    for f in failures {
        s.notes.push(format!("connect: a run failed: {f}"));
    }
    s.notes.push(
        "With the relay on one side only, why that side takes 1.5 round trips through the relay: behind a symmetric NAT the \
         peer's address towards the relay is known only when its first probe arrives through the \
         relay (half a round trip); our reply and first probe reach it half a round trip later, \
         where it is done (1 RTT), and its answer to our probe comes back after another half \
         (1.5 RTT), the first moment our side holds a reply that echoes its own nonce, which is \
         what authenticates the path. Plus the 10 ms grace for a direct path. With the relay on \
         both sides each side probes the peer's relayed address through its own allocation at \
         once (relay to relay; each allocation permits its own server's IP when it is made, so \
         those probes pass before either side has read the other's token and added it), and \
         both hold an authenticated reply after 1 round trip through the relay. With the relay \
         on one side, the peer's first probe to the relayed address races the relay side's \
         permission for the peer's IP (installed once it has read the peer's token): the \
         peer's-relay lane holds its first probe back 10 ms (`PEER_RELAY_HOLD`) so that the \
         permission wins; a probe that lost would be dropped, costing a probe round (50 ms)."
            .to_string(),
    );
    Ok(())
}

fn throughput(b: &Bench, s: &mut Section) -> Result<()> {
    let mut lab = b.lab(TOPOLOGY)?;
    let p1 = lab.get("P1_IP")?;
    lab.daemon("turnutils-peer", "p1", &["turnutils_peer", "-L", &p1, "-p", PEER_PORT])?;
    let runs = b.runs(4, 2);
    let (mut natt_rates, mut ref_rates) = (Samples::new(), Samples::new());
    let mut notes = Vec::new();
    let mut batches = Table::new(&["round", "rate asked", "sent", "got", "achieved/s"]);
    for n in 0..runs {
        let (out, paths) = natt_batches(b, &lab, 1000 + n)?;
        // natt's figure: the highest rate achieved with nothing lost.
        let best = out
            .iter()
            .filter(|(_, sent, got, _)| got == sent)
            .map(|(_, _, _, a)| *a)
            .fold(None, |m: Option<f64>, a| Some(m.map_or(a, |m| m.max(a))));
        for (rate, sent, got, achieved) in &out {
            batches.row(vec![
                n.to_string(),
                rate.to_string(),
                sent.to_string(),
                got.to_string(),
                format!("{achieved:.0}"),
            ]);
        }
        match best {
            Some(r) if paths.iter().all(|p| p == "relay") => natt_rates.push(r),
            _ => notes.push(format!(
                "natt round {n}: no batch without loss, or not relayed ({paths:?})"
            )),
        }
        let (rate, no_loss, text) = uclient(&lab, UCLIENT_MESSAGES)?;
        match rate {
            Some(r) if no_loss => ref_rates.push(r),
            _ => notes.push(format!(
                "turnutils_uclient round {n}: rate {rate:?}, lost {:?}",
                uclient_lost(&text)
            )),
        }
    }
    s.about.push(format!(
        "Lab `{TOPOLOGY}`, no delay. **natt**: once `natt punch --udp --turn` is connected through \
         the relay (h1 with the allocation, h2 without), h1's input gets batches of {SIZE}-byte \
         lines, each batch a second's worth at a rate of {RATES:?} datagrams/s, written paced \
         (a slice every millisecond); each line is one datagram, framed as ChannelData by h1, \
         sent on by coturn to h2, which prints it. natt's figure: the highest rate achieved \
         (datagrams h2 got / from the batch's first write to h2's last line) by a batch that \
         lost nothing. **Reference**: coturn's `turnutils_uclient` on h1 (one client, `-c`: no \
         RTCP allocation, `-z 0`: no pause between messages, {UCLIENT_MESSAGES} messages of \
         {SIZE} bytes) to `turnutils_peer` echoing on p1, through the same coturn: the median of \
         its per-second progress (messages echoed back through the relay each second), counted \
         when it lost none; each of its messages crosses the relay twice (there and back), \
         natt's once, so the ratio is natt's datagrams/s against twice the reference's (datagrams \
         through coturn per second). {runs} rounds, natt and the reference interleaved."
    ));
    let mut t = Table::new(&["client", "datagrams/s with no loss, median (min–max)", "rounds counted"]);
    let rate = |v: &Samples| match (v.median(), v.min(), v.max()) {
        (Some(m), Some(lo), Some(hi)) => format!("{m:.0} ({lo:.0}–{hi:.0})"),
        _ => "n/a".into(),
    };
    t.row(vec![
        "natt (through the relay)".into(),
        rate(&natt_rates),
        format!("{}/{runs}", natt_rates.len()),
    ]);
    t.row(vec![
        "turnutils_uclient".into(),
        rate(&ref_rates),
        format!("{}/{runs}", ref_rates.len()),
    ]);
    s.tables.push(t);
    s.tables.push(batches);
    // Datagrams through coturn per second: each of turnutils_uclient's messages crosses the
    // relay twice (there and back), each of natt's once.
    let crossings = ref_rates.median().map(|m| 2.0 * m);
    let r = ratio(natt_rates.median(), crossings);
    s.checks.push(Check {
        what: "relayed throughput, datagrams/s through coturn with no loss".into(),
        natt: natt_rates.median().map_or("n/a".into(), |m| format!("{m:.0}/s")),
        reference: ref_rates.median().map_or("n/a".into(), |m| {
            format!("turnutils_uclient {m:.0} echoed/s = {:.0} through coturn/s", 2.0 * m)
        }),
        ratio: times(r),
        target: "≥ 0.9x".into(),
        met: Some(r.is_some_and(|r| r >= 0.9)),
    });
    s.notes.extend(notes);
    Ok(())
}

/// Messages per `turnutils_uclient` run (about 3 s of its transfer).
const UCLIENT_MESSAGES: usize = 36_000;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_allocation_time_is_read_from_the_log() {
        let log = "[2026-12-05T21:43:08.714Z DEBUG natt_core::mapping] turn: [MappedSocketAddr { addr: 203.0.113.30:5 }] in 101.5ms\n";
        assert_eq!(allocation_ms(log), Some(101.5));
        assert_eq!(allocation_ms("[x] turn: [] in 1.2s"), Some(1200.0));
        assert_eq!(allocation_ms("stun: [] in 3ms"), None);
    }

    #[test]
    fn turnutils_uclient_figures_are_read_from_its_output() {
        let out = "4: : start_mclient: msz=1, tot_send_msgs=0, tot_recv_msgs=0, tot_send_bytes ~ 0\n\
                   5: : start_mclient: msz=1, tot_send_msgs=11350, tot_recv_msgs=11300, tot_send_bytes ~ 1\n\
                   6: : start_mclient: msz=1, tot_send_msgs=23450, tot_recv_msgs=23400, tot_send_bytes ~ 2\n\
                   7: : start_mclient: msz=1, tot_send_msgs=35700, tot_recv_msgs=35650, tot_send_bytes ~ 3\n\
                   9: : Total lost packets 0 (0.000000%), total send dropped 0 (0.000000%)\n";
        assert_eq!(uclient_rate(out), Some(12175.0));
        assert_eq!(uclient_lost(out), Some(0));
        assert_eq!(uclient_rate("nothing"), None);
    }
}
