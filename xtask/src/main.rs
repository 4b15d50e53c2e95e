//! `cargo xtask`: natt's developer tasks. See `cargo xtask help` and xtask/README.md.

use std::env;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use xtask::lab::isolation::{self, ISOLATED_ENV};
use xtask::lab::probe::{self, Args};
use xtask::lab::topology::{self, PRESETS};
use xtask::lab::{self, Lab, Result, err, impair, info, setup};
use xtask::tasks;

const USAGE: &str = "\
cargo xtask test                      build, then run every test without network (lab tests as root)
cargo xtask ci                        fmt check + clippy -D warnings + test
cargo xtask fuzz [--seconds N] [TARGET...]
                                      build and run the cargo-fuzz targets (fuzz/README.md); --list
cargo xtask bench [--quick] [--only SECTION,...] [--out FILE]
                                      NAT lab benchmarks (root): markdown report, bench/RESULTS.md

cargo xtask lab up TOPOLOGY... [--delay MS] [--loss PCT]
                                      build a lab (tears down leftovers of the prefix first)
cargo xtask lab down                  remove every namespace and process of the lab
cargo xtask lab exec NODE -- CMD...   run CMD inside NODE (inet, r1, h1, h1b, p1, ...)
cargo xtask lab info                  KEY=VALUE facts: eval \"$(cargo xtask lab info)\"
cargo xtask lab impair rN [--delay MS] [--loss PCT]
                                      change a router's WAN link, each direction
cargo xtask lab presets               list the named topologies
cargo xtask lab demo                  natt probe and natt punch between two homes, step by step
cargo xtask lab install               install the Debian packages the lab uses (root)

TOPOLOGY: presets and/or tokens: rN=prc|sym|full[,upnp,hairpin,nofw,cgn,hosts=K,via=rM,
delay=MS,loss=PCT] and pN. Example: cargo xtask lab up r1=sym r2=full,upnp p1
NATT_LAB_PREFIX (default nl) prefixes every namespace; state in /tmp/natt-lab-PREFIX.
Lab commands need root and run themselves inside `unshare --net`.";

fn main() -> ExitCode {
    let args: Vec<String> = env::args().skip(1).collect();
    match run(&args) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("xtask: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: &[String]) -> Result<u8> {
    let Some((cmd, rest)) = args.split_first() else {
        println!("{USAGE}");
        return Ok(0);
    };
    match cmd.as_str() {
        "lab" => lab_command(rest),
        "test" => tasks::test().map(|()| 0),
        "ci" => tasks::ci().map(|()| 0),
        "fuzz" => xtask::fuzz::run(rest).map(|()| 0),
        "bench" => bench_command(rest),
        "help" | "-h" | "--help" => {
            println!("{USAGE}");
            Ok(0)
        }
        other => Err(err(format!("unknown task '{other}'\n{USAGE}"))),
    }
}

fn lab_command(args: &[String]) -> Result<u8> {
    let Some((verb, rest)) = args.split_first() else {
        println!("{USAGE}");
        return Ok(0);
    };
    match verb.as_str() {
        "up" | "down" | "exec" | "impair" | "demo" => {
            if !isolation::is_root() {
                return Err(err("the NAT lab needs root (network namespaces, iptables)"));
            }
            if !isolation::is_isolated() {
                if env::var_os(ISOLATED_ENV).is_some() {
                    return Err(isolation::ensure_isolated()
                        .err()
                        .unwrap_or_else(|| err("re-executed under unshare --net but still not isolated")));
                }
                if verb == "up" || verb == "demo" {
                    setup::install_missing()?; // apt needs the machine's network: before isolating
                }
                if verb == "demo" {
                    tasks::build_natt()?; // cargo may fetch crates: before isolating
                }
                return reexec_isolated("lab", args);
            }
            let prefix = lab::prefix_from_env()?;
            match verb.as_str() {
                "up" => up(&prefix, rest),
                "down" => lab::down(&prefix).map(|()| {
                    println!("lab: '{prefix}' is down");
                    0
                }),
                "exec" => exec(&prefix, rest),
                "demo" => xtask::demo::run(&tasks::natt_binary()).map(|()| 0),
                _ => impair_link(&prefix, rest),
            }
        }
        "info" => {
            let prefix = lab::prefix_from_env()?;
            let lab = Lab::attach(&prefix)?;
            print!("{}", info::render(&lab.info()));
            Ok(0)
        }
        "presets" => {
            for p in PRESETS {
                println!("{:<11} {:<52} {}", p.name, p.tokens, p.about);
            }
            Ok(0)
        }
        "install" => setup::install_missing().map(|()| 0),
        // Helper tools that the lab runs inside its nodes.
        "probe" => {
            isolation::ensure_lab_node("lab probe")?;
            probe::main(rest).map(|c| u8::try_from(c).unwrap_or(1))
        }
        "observer" => {
            isolation::ensure_lab_node("lab observer")?;
            let a = Args::parse(rest)?;
            let ips = a
                .need::<String>("ips")?
                .split(',')
                .map(|ip| ip.parse().map_err(|_| err(format!("bad IP '{ip}'"))))
                .collect::<Result<Vec<_>>>()?;
            probe::run_observer(&ips, a.get_or("port", topology::OBSERVER_PORT)?).map(|()| 0)
        }
        "nfq-delay" => {
            isolation::ensure_lab_node("lab nfq-delay")?;
            let a = Args::parse(rest)?;
            let ms: u64 = a.need("ms")?;
            impair::run_delay(a.need("queue")?, Duration::from_millis(ms)).map(|()| 0)
        }
        other => Err(err(format!("unknown lab verb '{other}'\n{USAGE}"))),
    }
}

/// `cargo xtask bench`: builds natt and xtask in release mode, then runs the benchmarks as root
/// inside `unshare --net`, as the lab verbs run.
fn bench_command(args: &[String]) -> Result<u8> {
    let Some(opts) = xtask::bench::Options::parse(args)? else {
        println!("{}", xtask::bench::USAGE);
        return Ok(0);
    };
    if !isolation::is_root() {
        return Err(err(
            "cargo xtask bench runs in the NAT lab, which needs root (network namespaces, iptables)",
        ));
    }
    if !isolation::is_isolated() {
        if env::var_os(ISOLATED_ENV).is_some() {
            return Err(err("re-executed under unshare --net but still not isolated"));
        }
        setup::install_missing()?; // apt and cargo need the machine's network: before isolating
        tasks::build_natt_release()?;
        return reexec_isolated("bench", args);
    }
    let (natt, tool) = tasks::release_binaries();
    xtask::bench::run(&opts, &natt, &tool).map(|()| 0)
}

/// Runs `xtask TASK ARGS...` again inside a fresh network namespace with only loopback.
fn reexec_isolated(task: &str, args: &[String]) -> Result<u8> {
    let exe = env::current_exe()?;
    let mut argv = vec![task.to_string()];
    argv.extend(args.iter().cloned());
    let status = isolation::isolated_command(exe.as_os_str(), &argv, false)
        .status()
        .map_err(|e| err(format!("cannot run unshare --net: {e}")))?;
    Ok(status.code().and_then(|c| u8::try_from(c).ok()).unwrap_or(1))
}

fn up(prefix: &str, words: &[String]) -> Result<u8> {
    if words.is_empty() {
        return Err(err(format!(
            "usage: cargo xtask lab up TOPOLOGY... (presets: {})",
            topology::preset_names()
        )));
    }
    let t0 = Instant::now();
    let lab = Lab::up(prefix, &words.join(" "))?;
    println!(
        "lab: '{prefix}' up in {:.2} s: {} (nodes: {}); facts: cargo xtask lab info",
        t0.elapsed().as_secs_f64(),
        lab.plan().topology,
        lab.plan().nodes().join(" ")
    );
    for (k, v) in lab.info() {
        if k.ends_with("_UPNP_FORWARDING") {
            println!("lab: {k}={v}");
        }
    }
    lab.detach();
    Ok(0)
}

fn exec(prefix: &str, args: &[String]) -> Result<u8> {
    let usage = || err("usage: cargo xtask lab exec NODE -- CMD...");
    let (node, rest) = args.split_first().ok_or_else(usage)?;
    let rest = match rest.split_first() {
        Some((dashes, cmd)) if dashes == "--" => cmd,
        _ => rest,
    };
    let (program, cmd_args) = rest.split_first().ok_or_else(usage)?;
    let lab = Lab::attach(prefix)?;
    let status = lab
        .command(node, program)?
        .args(cmd_args)
        .status()
        .map_err(|e| err(format!("cannot run {program} in {node}: {e}")))?;
    Ok(status.code().and_then(|c| u8::try_from(c).ok()).unwrap_or(1))
}

fn impair_link(prefix: &str, args: &[String]) -> Result<u8> {
    let (router, rest) = args
        .split_first()
        .ok_or_else(|| err("usage: cargo xtask lab impair rN [--delay MS] [--loss PCT]"))?;
    let mut lab = Lab::attach(prefix)?;
    let current = lab
        .plan()
        .router(router)
        .cloned()
        .ok_or_else(|| err(format!("no router '{router}' in this lab")))?;
    let a = Args::parse(rest)?;
    let delay = match a.get::<String>("delay")? {
        Some(v) => topology::parse_delay(&v)?,
        None => current.delay_ms,
    };
    let loss = match a.get::<String>("loss")? {
        Some(v) => topology::parse_loss(&v)?,
        None => current.loss_pct,
    };
    lab.impair(router, delay, loss)?;
    println!("lab: {router} WAN link: delay {delay} ms, loss {loss} % each way");
    Ok(0)
}
