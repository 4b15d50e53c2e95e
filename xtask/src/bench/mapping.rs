//! Mapping latency on the lab's LAN: `natt map --udp` per technique and with every technique
//! together, against the reference clients `upnpc` (UPnP IGD), `natpmpc` (NAT-PMP, both
//! answered by miniupnpd on r1) and coturn's `turnutils_stunclient` (STUN, from the public host
//! p1: behind a NAT it waits for an RFC 5780 answer that the NAT drops).
//!
//! Every round runs each variant once, its reference right after it, so drift affects both.
//! Wall clock: from spawning the process (`ip netns exec NODE PROGRAM`, the same for both) to its
//! result: the reference's exit; natt's result line (`natt map --hold --json`: the mapping is
//! released afterwards, untimed, as the references' mappings are deleted untimed).

use super::proc;
use super::report::{Check, Section, Table};
use super::stats::{Samples, ms, ratio, spread, times};
use super::{Bench, json_number};
use crate::lab::{Lab, Result, err};

/// The lab: a home behind a port-restricted cone NAT whose router runs miniupnpd, and a public
/// host.
pub const TOPOLOGY: &str = "r1=prc,upnp p1";

/// The reference client a variant is compared with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reference {
    /// `upnpc -u IGD_URL -a HOST_IP PORT PORT UDP`.
    Upnpc,
    /// `natpmpc -g GATEWAY -a PORT PORT udp 3600`.
    Natpmpc,
    /// `turnutils_stunclient STUN1`.
    StunClient,
}

impl Reference {
    fn name(self) -> &'static str {
        match self {
            Reference::Upnpc => "upnpc -u IGD -a",
            Reference::Natpmpc => "natpmpc -a",
            Reference::StunClient => "turnutils_stunclient",
        }
    }
}

/// One way of running `natt map --udp`.
struct Variant {
    name: &'static str,
    node: &'static str,
    args: Vec<String>,
    env: Vec<(&'static str, String)>,
    /// The technique whose endpoint must be in the result ("" for any; `a|b`: one of these
    /// techniques' outcomes must list an endpoint).
    expect: &'static str,
    reference: Option<Reference>,
    /// Runs under `timeout 10` (as its reference does).
    under_timeout: bool,
    /// Counts as a single technique for the "all together" target.
    single: bool,
    wall: Samples,
    own: Samples,
    failures: usize,
    ref_wall: Samples,
    ref_failures: usize,
}

impl Variant {
    fn new(name: &'static str, node: &'static str, args: &[&str], expect: &'static str) -> Variant {
        Variant {
            name,
            node,
            args: args.iter().map(|a| (*a).to_string()).collect(),
            env: Vec::new(),
            expect,
            reference: None,
            under_timeout: false,
            single: false,
            wall: Samples::new(),
            own: Samples::new(),
            failures: 0,
            ref_wall: Samples::new(),
            ref_failures: 0,
        }
    }
}

/// Facts of the lab the runs need.
struct Facts {
    igd: String,
    host_ip: String,
    gateway: String,
    stun: String,
}

/// Runs the mapping benchmark.
pub fn run(b: &Bench) -> Result<Section> {
    let lab = b.lab(TOPOLOGY)?;
    let srv = format!("{}:5483", lab.get("SRV1")?);
    let srv2 = format!("{}:5483", lab.get("SRV2")?);
    let _serve = proc::Serve::start(&lab, &b.natt, &[&srv, &srv2])?;
    let facts = Facts {
        igd: lab.get("R1_IGD_URL")?,
        host_ip: lab.get("H1_IP")?,
        gateway: lab.get("R1_LAN")?,
        stun: lab.get("STUN1")?,
    };
    let stun = format!("{}:3478", facts.stun);
    let mut variants = variants(&srv, &stun, &facts.igd);
    for v in &variants {
        sanity(b, &lab, v)?;
    }
    let runs = b.runs(25, 6);
    for round in 0..runs {
        for v in &mut variants {
            match natt_once(b, &lab, v)? {
                Some((wall, own)) => {
                    v.wall.push(wall);
                    v.own.push(own);
                }
                None => v.failures += 1,
            }
            if let Some(r) = v.reference {
                match reference_once(&lab, r, v.node, &facts, round)? {
                    Some(wall) => v.ref_wall.push(wall),
                    None => v.ref_failures += 1,
                }
            }
        }
    }
    Ok(section(&variants, runs))
}

/// The variants: each technique alone (the flags that leave the others out; a technique with
/// no server given does not run), UPnP also with the gateway's URL given as `upnpc -u` is, all
/// together, and STUN from the public host against `turnutils_stunclient`.
fn variants(srv: &str, stun: &str, igd: &str) -> Vec<Variant> {
    let mut simple = Variant::new(
        "simple (h1)",
        "h1",
        &["--simple", srv, "--no-upnp", "--no-pcp"],
        "simple",
    );
    simple.single = true;
    let mut stun_h1 = Variant::new(
        "STUN (h1, behind the NAT)",
        "h1",
        &["--stun", stun, "--no-upnp", "--no-pcp"],
        "stun",
    );
    stun_h1.single = true;
    let mut upnp = Variant::new("UPnP, SSDP discovery (h1)", "h1", &["--no-pcp"], "upnp");
    upnp.single = true;
    upnp.reference = Some(Reference::Upnpc);
    let mut upnp_url = Variant::new("UPnP, IGD URL given (h1)", "h1", &["--no-pcp"], "upnp");
    upnp_url.env.push(("NATT_UPNP_IGD", igd.to_string()));
    upnp_url.reference = Some(Reference::Upnpc);
    let mut pcp = Variant::new("PCP/NAT-PMP (h1)", "h1", &["--no-upnp"], "pcp");
    pcp.single = true;
    pcp.reference = Some(Reference::Natpmpc);
    // A gateway that answers is waited for (its grace after the STUN and simple answers), so
    // its mapping must be in every result.
    let all = Variant::new(
        "all techniques together (h1)",
        "h1",
        &["--simple", srv, "--stun", stun],
        "upnp|pcp",
    );
    // From p1 the STUN endpoint equals the local one, so only "local" is listed.
    let mut stun_p1 = Variant::new(
        "STUN (p1, no NAT)",
        "p1",
        &["--stun", stun, "--no-upnp", "--no-pcp"],
        "",
    );
    stun_p1.reference = Some(Reference::StunClient);
    stun_p1.under_timeout = true;
    vec![simple, stun_h1, upnp, upnp_url, pcp, all, stun_p1]
}

/// One untimed text-mode run: every technique asked for must work (no `# NAME failed` line).
fn sanity(b: &Bench, lab: &Lab, v: &Variant) -> Result<()> {
    let mut cmd = lab.command(v.node, &b.natt)?;
    cmd.args(["map", "--udp"])
        .args(&v.args)
        .envs(v.env.iter().map(|(k, v)| (k, v.as_str())));
    let (out, _) = proc::timed(&mut cmd)?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() || text.lines().any(|l| l.starts_with('#') && l.contains(" failed")) {
        return Err(err(format!(
            "natt map {} in {} does not work in this lab:\n{text}{}",
            v.args.join(" "),
            v.node,
            String::from_utf8_lossy(&out.stderr)
        )));
    }
    Ok(())
}

/// One `natt map --udp --json --hold` run: wall-clock ms to the result line and natt's own
/// `elapsed_ms`; `None` when the expected endpoint is missing.
fn natt_once(b: &Bench, lab: &Lab, v: &Variant) -> Result<Option<(f64, f64)>> {
    let mut cmd = if v.under_timeout {
        let mut c = lab.command(v.node, "timeout")?;
        c.arg("10").arg(&b.natt);
        c
    } else {
        lab.command(v.node, &b.natt)?
    };
    cmd.args(["map", "--udp", "--json", "--hold"])
        .args(&v.args)
        .envs(v.env.iter().map(|(k, v)| (k, v.as_str())));
    let (line, wall) = proc::map_hold_line(&mut cmd)?;
    let Some(line) = line else {
        return Ok(None);
    };
    let json: serde_json::Value = serde_json::from_str(&line).unwrap_or_default();
    // `a|b`: one of these techniques mapped (its own outcome lists an endpoint; the endpoint
    // list may name another technique for the same address, one found open first).
    let mapped_by = |names: &str| {
        json.get("techniques")
            .and_then(serde_json::Value::as_array)
            .is_some_and(|ts| {
                ts.iter().any(|t| {
                    let name = t.get("name").and_then(serde_json::Value::as_str).unwrap_or("");
                    let eps = t.get("endpoints").and_then(serde_json::Value::as_array);
                    names.split('|').any(|n| n == name) && eps.is_some_and(|e| !e.is_empty())
                })
            })
    };
    let found = if v.expect.contains('|') {
        mapped_by(v.expect)
    } else {
        json.get("endpoints")
            .and_then(serde_json::Value::as_array)
            .is_some_and(|eps| {
                eps.iter().any(|e| {
                    let t = e
                        .get("technique")
                        .and_then(serde_json::Value::as_str)
                        .unwrap_or("local");
                    if v.expect.is_empty() {
                        v.node == "p1" || t != "local"
                    } else {
                        t == v.expect
                    }
                })
            })
    };
    Ok(json_number(&line, "elapsed_ms")
        .filter(|_| found)
        .map(|own| (wall, own)))
}

/// One reference run (wall-clock ms from spawn to exit); `None` when it did not map. Mappings
/// are deleted afterwards, untimed.
fn reference_once(lab: &Lab, r: Reference, node: &str, f: &Facts, round: usize) -> Result<Option<f64>> {
    let run = |argv: &[&str]| -> Result<(String, f64)> {
        let (out, wall) = proc::timed(&mut lab_command(lab, node, argv)?)?;
        Ok((String::from_utf8_lossy(&out.stdout).to_string(), wall))
    };
    match r {
        Reference::Upnpc => {
            let port = (43000 + round).to_string();
            let (out, wall) = run(&["upnpc", "-u", &f.igd, "-a", &f.host_ip, &port, &port, "UDP"])?;
            run(&["upnpc", "-u", &f.igd, "-d", &port, "UDP"])?;
            Ok(out.contains("is redirected").then_some(wall))
        }
        Reference::Natpmpc => {
            let port = (44000 + round).to_string();
            let (out, wall) = run(&["natpmpc", "-g", &f.gateway, "-a", &port, &port, "udp", "3600"])?;
            run(&["natpmpc", "-g", &f.gateway, "-a", &port, "0", "udp", "0"])?;
            Ok(out.contains("Mapped public port").then_some(wall))
        }
        Reference::StunClient => {
            let (out, wall) = run(&["timeout", "10", "turnutils_stunclient", &f.stun])?;
            Ok(out.contains("UDP reflexive addr").then_some(wall))
        }
    }
}

fn lab_command(lab: &Lab, node: &str, argv: &[&str]) -> Result<std::process::Command> {
    let (program, args) = argv.split_first().ok_or_else(|| err("empty command"))?;
    let mut cmd = lab.command(node, program)?;
    cmd.args(args);
    Ok(cmd)
}

/// The report section: details per variant, and the targets.
fn section(variants: &[Variant], runs: usize) -> Section {
    let mut s = Section::new("Mapping latency");
    s.about.push(format!(
        "Lab `{TOPOLOGY}`, `natt serve` on 203.0.113.20/.21:5483, coturn on 203.0.113.10:3478, \
         miniupnpd (UPnP IGD, NAT-PMP, PCP) on r1. {runs} rounds; each round runs every variant \
         once, its reference right after it. **wall**: from spawning the process with `ip netns \
         exec` to its result (the reference's exit; natt's JSON line: `natt map --udp --json --hold`, \
         the mapping released afterwards, untimed, as the references' mappings are deleted \
         untimed). **natt elapsed_ms**: natt's own figure (`--json`), mapping only, without \
         process start-up."
    ));
    let mut t = Table::new(&[
        "natt map --udp",
        "flags",
        "ok runs",
        "natt wall, median (min–max)",
        "natt elapsed_ms, median (min–max)",
        "reference",
        "reference wall, median (min–max)",
        "ratio (wall)",
    ]);
    for v in variants {
        let flags = v
            .env
            .iter()
            .map(|(k, _)| format!("{k}=…"))
            .chain(v.args.iter().cloned())
            .collect::<Vec<_>>()
            .join(" ");
        let (rname, rwall, rratio) = match v.reference {
            Some(r) => (
                format!("{} ({} failed)", r.name(), v.ref_failures),
                spread(&v.ref_wall),
                times(ratio(v.wall.median(), v.ref_wall.median())),
            ),
            None => ("-".into(), "-".into(), "-".into()),
        };
        t.row(vec![
            v.name.to_string(),
            format!("`{flags}`"),
            format!("{}/{}", v.wall.len(), v.wall.len() + v.failures),
            spread(&v.wall),
            spread(&v.own),
            rname,
            rwall,
            rratio,
        ]);
    }
    s.tables.push(t);
    for v in variants.iter().filter(|v| v.reference.is_some()) {
        let r = ratio(v.wall.median(), v.ref_wall.median());
        let info = v.name.starts_with("UPnP, SSDP");
        s.checks.push(Check {
            what: format!("map latency, {} (wall)", v.name),
            natt: ms(v.wall.median()),
            reference: format!(
                "{} {}",
                ms(v.ref_wall.median()),
                v.reference.map_or("", Reference::name)
            ),
            ratio: times(r),
            target: if info {
                "info: upnpc -u skips discovery".into()
            } else {
                "≤ 1.00x".into()
            },
            met: if info {
                None
            } else {
                Some(r.is_some_and(|r| r <= 1.0) && v.failures == 0)
            },
        });
    }
    let slowest = variants
        .iter()
        .filter(|v| v.single)
        .filter_map(|v| v.own.median().map(|m| (m, v.name)))
        .max_by(|a, b| a.0.total_cmp(&b.0));
    if let (Some(all), Some((slow, slow_name))) = (variants.iter().find(|v| v.name.starts_with("all")), slowest) {
        let r = ratio(all.own.median(), Some(slow));
        s.checks.push(Check {
            what: "map latency, all techniques together vs the slowest alone (natt elapsed_ms, h1)".into(),
            natt: ms(all.own.median()),
            reference: format!("{} (slowest alone: {slow_name})", ms(Some(slow))),
            ratio: times(r),
            target: "≤ 1.20x".into(),
            met: Some(r.is_some_and(|r| r <= 1.2) && all.failures == 0),
        });
    }
    if let Some(simple) = variants.iter().find(|v| v.name.starts_with("simple")) {
        let start_up = simple.wall.median().zip(simple.own.median()).map(|(w, o)| w - o);
        s.notes.push(format!(
            "Every wall figure includes process start-up and exit: natt's (wall − elapsed_ms of \
             the simple variant, whose mapping takes under a millisecond) is about {}; where natt's \
             own elapsed_ms is below the reference's wall but its wall is not, the difference is \
             start-up, not mapping.",
            ms(start_up)
        ));
    }
    s.notes.push(
        "STUN from h1 waits for the filtering check: natt marks the endpoint restricted unless an \
         answer from another address gets through the NAT within a short window (about 250 ms \
         behind this filtering NAT); from p1 the answer gets in and the wait is about 1 ms. With \
         every technique together, the UPnP/PCP mapping opens the port, so the STUN check's answer \
         may get in early; otherwise the STUN window is what the whole mapping waits for. UPnP \
         with SSDP discovery waits for the router's answer to natt's M-SEARCH (a device may delay \
         it by up to the search's MX, 1 s), then reads the device description; with the gateway's \
         URL given (as `upnpc -u` is) there is no search: natt reads the device description and \
         maps (asking the external address at the same time), without the service description."
            .to_string(),
    );
    s
}
