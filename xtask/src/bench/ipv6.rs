//! IPv6 hole punching (issue 16): the success rate of `natt punch` between dual-stack and
//! IPv6-only homes, counting only punches that took an IPv6 path, and the IPv6 UDP and TCP
//! punch time against the round trip between the peers with 25 ms one-way delay on each WAN
//! link (the lab delays both families on the same queues). Driven as [`super::punch`] drives the
//! IPv4 punch (its `punch_once`, which adds the lab's IPv6 STUN servers). Then the pinhole
//! latency: `natt map` with PCP (the IPv4 mapping and the IPv6 pinhole at once) and with UPnP
//! (the IPv4 mapping, then `GetFirewallStatus` and `AddPinhole`) against `upnpc -6 -A` (UPnP
//! IGD:2 AddPinhole alone) on the same miniupnpd.

use super::Bench;
use super::proc;
use super::punch::{DELAY_MS, Gateways, Punches, punch_once, rtt_to_observer};
use super::report::{Check, Section, Table};
use super::stats::{Samples, ms, ratio, spread, times};
use crate::lab::{Lab, Result, err};

/// The section's title.
pub const TITLE: &str = "IPv6: punch success and time";

/// The IPv6 pairs of `xtask/tests/ipv6.rs`: name and topology (hosts h1 and h2).
const PAIRS: &[(&str, &str)] = &[
    ("dual-stack prc–prc", "v6-pair"),
    ("dual-stack sym–sym (IPv4 hopeless)", "v6-sym-sym"),
    ("IPv6-only", "v6only-pair"),
];

/// The lab of the time measurement: two dual-stack homes, 25 ms one way on each WAN link.
pub const DELAY_TOPOLOGY: &str = "r1=prc,v6,delay=25 r2=prc,v6,delay=25 p1";

/// Whether every side of the punches recorded in `p` reached an IPv6 address.
fn all_ipv6(p: &Punches) -> bool {
    p.paths
        .iter()
        .all(|path| path.split(" / ").all(|peer| peer.starts_with('[')))
}

/// Success over IPv6 for each pair, then the IPv6 punch time.
pub fn run(b: &Bench) -> Result<Section> {
    let reps = b.runs(20, 5);
    let mut s = Section::new(TITLE);
    s.about.push(format!(
        "Each IPv6 pair of `xtask/tests/ipv6.rs`, {reps} punches per protocol, UDP and TCP \
         interleaved, no delay or loss: routers give each LAN a routed /64 behind a stateful \
         firewall (nothing new in from the WAN), both sides are given the IPv4 and the IPv6 STUN \
         servers. A punch counts when both sides connect, exchange a line, and reached the peer \
         at an IPv6 address (`\"family\":\"ipv6\"`)."
    ));
    let mut t = Table::new(&[
        "pair",
        "topology",
        "protocol",
        "succeeded over IPv6",
        "slower side elapsed_ms, median (min–max)",
        "peers seen",
    ]);
    let mut n = 0;
    for (name, topology) in PAIRS {
        let lab = b.lab(topology)?;
        let mut punches = [Punches::new("udp"), Punches::new("tcp")];
        for _ in 0..reps {
            for p in &mut punches {
                n += 1;
                p.record(punch_once(b, &lab, ("h1", "h2"), p.proto, n, Gateways::NoUpnp)?);
            }
        }
        drop(lab);
        for p in punches {
            let proto = p.proto.to_uppercase();
            let ok = if all_ipv6(&p) { p.succeeded() } else { 0 };
            t.row(vec![
                (*name).to_string(),
                format!("`{topology}`"),
                proto.clone(),
                format!("{ok}/{reps}"),
                spread(&p.slower),
                p.paths.join("; "),
            ]);
            s.checks.push(Check {
                what: format!("IPv6 punch success, {name}, {proto}"),
                natt: format!("{ok}/{reps}"),
                reference: "-".into(),
                ratio: "-".into(),
                target: "100 % over IPv6".into(),
                met: Some(ok == reps),
            });
            if p.failed > 0 {
                s.notes
                    .push(format!("{name} {proto}: last failure: {}", p.last_failure));
            }
        }
    }
    s.tables.push(t);
    time(b, &mut s)?;
    pinholes(b, &mut s)?;
    Ok(s)
}

/// The lab of the pinhole latency: one dual-stack home whose router runs miniupnpd.
pub const PINHOLE_TOPOLOGY: &str = "r1=prc,v6,upnp p1";

/// Pinhole latency: natt's pinholes (PCP, UPnP) against `upnpc -6 -A`, interleaved, into `s`.
fn pinholes(b: &Bench, s: &mut Section) -> Result<()> {
    let lab = b.lab(PINHOLE_TOPOLOGY)?;
    let runs = b.runs(20, 5);
    let h1 = lab.get("H1_IP6")?;
    let igd = format!("http://[{}]:5000/rootDesc.xml", lab.get("R1_LAN6")?);
    // natt is given the gateway's URL as upnpc is (`-u`): no SSDP search in either.
    let igd4 = lab.get("R1_IGD_URL")?;
    // (technique, the flag that turns the other port-mapping technique off, wall, own)
    let mut variants = [
        ("pcp", "--no-upnp", Samples::new(), Samples::new()),
        ("upnp", "--no-pcp", Samples::new(), Samples::new()),
    ];
    let mut upnpc = Samples::new();
    let mut upnpc_both = Samples::new();
    let h1_4 = lab.get("H1_IP")?;
    let mut failures = Vec::new();
    for i in 0..runs {
        for (k, (technique, only, natt_wall, natt_own)) in variants.iter_mut().enumerate() {
            let port = (45000 + 2 * i + k).to_string();
            match natt_pinhole(b, &lab, (&h1, &port), (technique, only), &igd4)? {
                Some((wall, own)) => {
                    natt_wall.push(wall);
                    natt_own.push(own);
                }
                None => failures.push(format!("natt {technique} run {i}: no open endpoint [{h1}]:{port}")),
            }
        }
        let port = (46000 + i).to_string();
        let run = |argv: &[&str]| -> Result<(String, f64)> {
            let (program, args) = argv.split_first().ok_or_else(|| err("empty command"))?;
            let mut cmd = lab.command("h1", program)?;
            cmd.args(args);
            let (out, wall) = proc::timed(&mut cmd)?;
            Ok((String::from_utf8_lossy(&out.stdout).to_string(), wall))
        };
        let (out, wall) = run(&["upnpc", "-6", "-u", &igd, "-A", "", "0", &h1, &port, "UDP", "3600"])?;
        match out
            .split("Pinhole ID = ")
            .nth(1)
            .and_then(|r| r.split_whitespace().next())
        {
            Some(id) => {
                upnpc.push(wall);
                run(&["upnpc", "-6", "-u", &igd, "-D", id])?;
                // The same work as natt's: the IPv4 mapping too (upnpc does one at a time).
                let (out4, wall4) = run(&["upnpc", "-u", &igd4, "-a", &h1_4, &port, &port, "UDP"])?;
                run(&["upnpc", "-u", &igd4, "-d", &port, "UDP"])?;
                if out4.contains("is redirected") {
                    upnpc_both.push(wall + wall4);
                } else {
                    failures.push(format!("upnpc -a run {i}: {}", out4.trim()));
                }
            }
            None => failures.push(format!("upnpc run {i}: {}", out.trim())),
        }
    }
    s.about.push(format!(
        "Pinholes: lab `{PINHOLE_TOPOLOGY}` (miniupnpd 2.3 with IPv6 on r1), {runs} runs each, \
         interleaved. **natt**: `natt map --udp --json --hold` on h1 with PCP alone (`--no-upnp`) \
         and with UPnP alone (`--no-pcp`, the gateway's URL given with `NATT_UPNP_IGD` as \
         `upnpc -u` is given it), wall-clock from spawn to its JSON line, which lists the \
         IPv6 pinhole (open), and natt's own `elapsed_ms`; each also makes the IPv4 mapping (PCP \
         asks for both at once; UPnP maps first, then asks `GetFirewallStatus` and `AddPinhole`); \
         released afterwards, untimed. **Reference**: `upnpc -6 -u IGD -A \"\" 0 H1_IP6 PORT UDP \
         3600` (UPnP IGD:2 AddPinhole alone, skipping discovery), wall-clock from spawn to exit; \
         deleted afterwards (`-D ID`), untimed; and, for the same work as natt's, that plus \
         `upnpc -u IGD -a H1_IP PORT PORT UDP` (the IPv4 mapping), the two processes' times \
         added."
    ));
    let mut t = Table::new(&["client", "ok", "median (min–max)"]);
    for (technique, _, natt_wall, natt_own) in &variants {
        t.row(vec![
            format!("natt map, {technique} (IPv4 mapping + IPv6 pinhole), wall"),
            format!("{}/{runs}", natt_wall.len()),
            spread(natt_wall),
        ]);
        t.row(vec![
            format!("natt map, {technique}, its own elapsed_ms"),
            format!("{}/{runs}", natt_own.len()),
            spread(natt_own),
        ]);
    }
    t.row(vec![
        "upnpc -6 -A (IGD:2 AddPinhole)".into(),
        format!("{}/{runs}", upnpc.len()),
        spread(&upnpc),
    ]);
    t.row(vec![
        "upnpc -a (IPv4) + upnpc -6 -A: natt's work, one after the other".into(),
        format!("{}/{runs}", upnpc_both.len()),
        spread(&upnpc_both),
    ]);
    s.tables.push(t);
    for (technique, _, natt_wall, _) in &variants {
        let r = ratio(natt_wall.median(), upnpc.median());
        let both = ratio(natt_wall.median(), upnpc_both.median());
        s.checks.push(Check {
            what: format!("IPv4 mapping + IPv6 pinhole, natt ({technique}) vs upnpc -a + upnpc -6 -A, wall-clock"),
            natt: ms(natt_wall.median()),
            reference: format!(
                "upnpc {} (the pinhole alone: {}, natt {})",
                ms(upnpc_both.median()),
                ms(upnpc.median()),
                times(r)
            ),
            ratio: times(both),
            target: "no slower".into(),
            met: Some(natt_wall.len() == runs && both.is_some_and(|r| r <= 1.0)),
        });
    }
    s.notes.extend(failures);
    Ok(())
}

/// One `natt map --hold` on h1 (with `only`, the gateway's description URL `igd` given) whose
/// JSON lists the open `technique` endpoint `[h1]:port`: the wall-clock ms to its line and
/// natt's own `elapsed_ms`.
fn natt_pinhole(
    b: &Bench,
    lab: &Lab,
    (h1, port): (&str, &str),
    (technique, only): (&str, &str),
    igd: &str,
) -> Result<Option<(f64, f64)>> {
    let mut cmd = lab.command("h1", &b.natt)?;
    cmd.args(["map", "--udp", "--port", port, only, "--json", "--hold"])
        .env("NATT_UPNP_IGD", igd);
    let (line, wall) = proc::map_hold_line(&mut cmd)?;
    let Some(line) = line else { return Ok(None) };
    let json: serde_json::Value = serde_json::from_str(&line).unwrap_or_default();
    let want = format!("[{h1}]:{port}");
    let open = json
        .get("endpoints")
        .and_then(serde_json::Value::as_array)
        .is_some_and(|eps| {
            eps.iter()
                .any(|e| e["addr"] == want.as_str() && e["technique"] == technique && e["nat_restricted"] == false)
        });
    Ok(super::json_number(&line, "elapsed_ms")
        .filter(|_| open)
        .map(|own| (wall, own)))
}

/// The IPv6 punch time against the round trip between the peers, into `s`.
fn time(b: &Bench, s: &mut Section) -> Result<()> {
    let lab = b.lab(DELAY_TOPOLOGY)?;
    let runs = b.runs(20, 5);
    let mut rtt = [Samples::new(), Samples::new()];
    let measure = |rtt: &mut [Samples; 2]| -> Result<()> {
        for (s, node) in rtt.iter_mut().zip(["h1", "h2"]) {
            s.push(rtt_to_observer(&lab, node)?);
        }
        Ok(())
    };
    measure(&mut rtt)?;
    let mut punches = [Punches::new("udp"), Punches::new("tcp")];
    for i in 0..runs {
        for p in &mut punches {
            p.record(punch_once(
                b,
                &lab,
                ("h1", "h2"),
                p.proto,
                10_000 + i * 2,
                Gateways::NoUpnp,
            )?);
        }
    }
    measure(&mut rtt)?;
    let between = match (rtt[0].median(), rtt[1].median()) {
        (Some(a), Some(c)) => a + c,
        _ => return Err(err("no round trip time measured")),
    };
    s.about.push(format!(
        "Time: lab `{DELAY_TOPOLOGY}` ({DELAY_MS} ms one way on each WAN link, IPv4 and IPv6 \
         alike: the same NFQUEUE delays both). The round trip between h1 and h2 is the sum of \
         their round trips to the observer on the lab's internet (IPv4; the probe tools speak \
         IPv4, and both families cross the same delayed links). `elapsed_ms` of the slower side, \
         {runs} punches per protocol; only punches that took IPv6 count."
    ));
    let rtts = |proto: &str| if proto == "udp" { 1.0 } else { 1.5 };
    let mut t = Table::new(&[
        "protocol",
        "ok over IPv6",
        "slower side, median (min–max)",
        "in RTTs",
        "target (UDP 1.0, TCP 1.5 RTT, + 20 ms)",
    ]);
    for p in &punches {
        let proto = p.proto.to_uppercase();
        let target = rtts(p.proto) * between + 20.0;
        let ok = if all_ipv6(p) { p.succeeded() } else { 0 };
        let r = ratio(p.slower.median(), Some(between));
        t.row(vec![
            proto.clone(),
            format!("{ok}/{runs}"),
            spread(&p.slower),
            times(r),
            ms(Some(target)),
        ]);
        s.checks.push(Check {
            what: format!("IPv6 punch time {proto}, slower side ({DELAY_MS} ms one way per WAN)"),
            natt: ms(p.slower.median()),
            reference: format!("RTT h1↔h2 {}", ms(Some(between))),
            ratio: format!("{} RTT", times(r).trim_end_matches('x')),
            target: format!("≤ {} RTT + 20 ms = {}", rtts(p.proto), ms(Some(target))),
            met: Some(ok == runs && p.slower.median().is_some_and(|m| m <= target)),
        });
        if !all_ipv6(p) {
            s.notes
                .push(format!("{proto}: some punches took IPv4: {}", p.paths.join("; ")));
        }
    }
    s.tables.push(t);
    Ok(())
}
