//! `cargo xtask lab demo`: natt end to end on a small internet, told step by step in plain
//! words. Two homes behind different NATs (one router speaks UPnP, NAT-PMP and PCP), a STUN
//! server and a `natt serve` on the internet; `natt probe` in each home, then `natt punch`
//! between them over UDP and over TCP.

// Indexing a serde_json::Value by key gives Null for a missing key: it never panics.
#![allow(clippy::indexing_slicing)]

use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;
use std::process::{Child, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use crate::lab::{Lab, Result, err};

/// The demo's lab prefix.
pub const PREFIX: &str = "demo";
/// The demo's world: home 1 behind a port-restricted cone NAT whose router runs miniupnpd,
/// home 2 behind a symmetric NAT.
pub const TOPOLOGY: &str = "r1=prc,upnp r2=sym p1";

fn say(step: &mut u32, text: &str) {
    *step += 1;
    println!("\n[{step}] {text}");
}

fn json(line: &str) -> serde_json::Value {
    serde_json::from_str(line).unwrap_or(serde_json::Value::Null)
}

/// Runs the demo with the natt binary at `natt`; an error if a step fails.
pub fn run(natt: &Path) -> Result<()> {
    let natt_s = natt.display().to_string();
    let t_all = Instant::now();
    let mut step = 0;
    println!("natt demo: two homes on a small internet built from Linux network namespaces");
    println!("  home 1: h1 behind r1, a port-restricted cone NAT (Linux MASQUERADE) with a real");
    println!("          UPnP IGD / NAT-PMP / PCP gateway (miniupnpd)");
    println!("  home 2: h2 behind r2, a symmetric NAT (MASQUERADE --random-fully): a new port per destination");
    println!("  both routers drop unsolicited traffic from the internet, as home routers do");

    say(&mut step, "Building the lab");
    let t = Instant::now();
    let lab = Lab::up(PREFIX, TOPOLOGY)?;
    let get = |k: &str| lab.get(k);
    let (stun1, stun2, srv1, srv2) = (get("STUN1")?, get("STUN2")?, get("SRV1")?, get("SRV2")?);
    println!(
        "    up in {:.2} s; STUN server (coturn, RFC 5780) at {stun1} and {stun2}, port 3478",
        t.elapsed().as_secs_f64()
    );
    println!("    r1's public address {}, r2's {}", get("R1_WAN")?, get("R2_WAN")?);

    say(
        &mut step,
        "Starting `natt serve` on the internet (simple protocol and STUN, RFC 5780)",
    );
    let (l1, l2) = (format!("{srv1}:5483"), format!("{srv2}:5483"));
    let mut serve = lab.spawn("inet", &[natt_s.as_str(), "serve", "--listen", &l1, "--listen", &l2])?;
    // Keep reading what it prints (so it never writes to a closed pipe); show the first line.
    let (tx, rx) = mpsc::channel();
    if let Some(out) = serve.stdout.take() {
        thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(std::result::Result::ok) {
                let _ = tx.send(line);
            }
        });
    }
    let first = rx.recv_timeout(Duration::from_secs(5)).ok();
    println!("    {}", first.ok_or_else(|| err("natt serve printed nothing"))?);

    for (home, host) in [(1, "h1"), (2, "h2")] {
        say(
            &mut step,
            &format!("`natt probe` in home {home} ({host}): what is in front of me?"),
        );
        let out = lab.run(
            host,
            &[
                natt_s.as_str(),
                "probe",
                "--stun",
                &format!("{stun1}:3478"),
                "--simple",
                &l1,
                "--json",
            ],
        )?;
        let v = json(out.trim());
        println!("    external addresses: {}", v["external"]);
        println!("    NAT mapping:   {}", v["mapping"].as_str().unwrap_or("?"));
        println!("    NAT filtering: {}", v["filtering"].as_str().unwrap_or("?"));
        println!("    TCP mapping:   {}", v["tcp_mapping"].as_str().unwrap_or("?"));
        println!("    gateway:       {}", v["gateway"]);
        for t in v["techniques"].as_array().into_iter().flatten() {
            let result = match t["error"].as_str() {
                Some(e) => format!("failed: {e}"),
                None => format!("{}", t["endpoints"]),
            };
            let ms = t["elapsed_ms"].as_u64().unwrap_or_default();
            println!("      {:<8} {ms:>5} ms  {result}", t["name"].as_str().unwrap_or("?"));
        }
        println!("    probe took {} ms", v["elapsed_ms"]);
    }

    let mut failed = Vec::new();
    for proto in ["udp", "tcp"] {
        say(
            &mut step,
            &format!("`natt punch --{proto}` between home 1 and home 2, tokens exchanged through files"),
        );
        match punch(&lab, &natt_s, proto, &stun1, &stun2) {
            Ok(lines) => {
                for l in lines {
                    println!("    {l}");
                }
            }
            Err(e) => {
                println!("    FAILED: {e}");
                failed.push(proto);
            }
        }
    }
    let _ = serve.kill();
    let _ = serve.wait();
    say(&mut step, "Tearing the lab down");
    lab.down()?;
    println!("\nnatt demo: done in {:.1} s", t_all.elapsed().as_secs_f64());
    if failed.is_empty() {
        Ok(())
    } else {
        Err(err(format!("the punch failed over {}", failed.join(" and "))))
    }
}

/// Both sides of one punch: results in words.
fn punch(lab: &Lab, natt: &str, proto: &str, stun1: &str, stun2: &str) -> Result<Vec<String>> {
    let dir = lab.state_dir().join(format!("demo-{proto}"));
    std::fs::create_dir_all(&dir)?;
    let start = |host: &str, me: &str, peer: &str| -> Result<Child> {
        let mut cmd = lab.command(host, natt)?;
        cmd.args(["punch", &format!("--{proto}"), "--json", "--timeout", "10"]);
        cmd.args(["--stun", &format!("{stun1}:3478"), "--stun", &format!("{stun2}:3478")]);
        cmd.arg("--token-out")
            .arg(dir.join(me))
            .arg("--peer-token")
            .arg(dir.join(peer));
        cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
        cmd.spawn()
            .map_err(|e| err(format!("cannot start natt punch in {host}: {e}")))
    };
    let t0 = Instant::now();
    let mut sides = Vec::new();
    for (host, me, peer) in [("h1", "h1.token", "h2.token"), ("h2", "h2.token", "h1.token")] {
        let mut child = start(host, me, peer)?;
        let (tx, rx) = mpsc::channel();
        let stdout = child.stdout.take().ok_or_else(|| err("no stdout"))?;
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(std::result::Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        sides.push((host, child, rx));
    }
    let mut words = Vec::new();
    let mut results = Vec::new();
    for (host, child, rx) in &mut sides {
        let v = rx
            .recv_timeout(Duration::from_secs(20))
            .map(|l| json(&l))
            .unwrap_or_default();
        if v.is_null() {
            let _ = child.kill();
            let mut stderr = String::new();
            if let Some(mut e) = child.stderr.take() {
                let _ = e.read_to_string(&mut stderr);
            }
            let _ = child.wait();
            return Err(err(format!("{host}: {}", stderr.trim())));
        }
        results.push(v);
    }
    let both = t0.elapsed();
    for ((host, _, _), v) in sides.iter().zip(&results) {
        words.push(format!(
            "{host} reached its peer at {} over {} in {} ms (punch time, after reading the peer's token)",
            v["peer"].as_str().unwrap_or("?"),
            v["via"].as_str().unwrap_or("?"),
            v["elapsed_ms"]
        ));
    }
    words.push(format!(
        "both sides connected {} ms after they started (mapping included)",
        both.as_millis()
    ));
    for (host, child, _) in &mut sides {
        if let Some(mut stdin) = child.stdin.take() {
            let _ = writeln!(stdin, "hello from {host}");
        }
    }
    for (host, mut child, rx) in sides {
        let status = child.wait()?;
        let mut stderr = String::new();
        if let Some(mut e) = child.stderr.take() {
            let _ = e.read_to_string(&mut stderr);
        }
        let got: Vec<String> = rx.try_iter().collect();
        if !status.success() {
            return Err(err(format!("{host}: {}", stderr.trim())));
        }
        words.push(format!("{host} received: {}", got.join(" | ")));
    }
    Ok(words)
}
