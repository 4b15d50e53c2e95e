//! `cargo xtask fuzz`: builds natt's cargo-fuzz targets (`fuzz/`) and runs each for a while
//! with its corpus, one at a time, failing on a crash. Not part of `cargo xtask test`.
//!
//! Needs `cargo install cargo-fuzz --locked`. libFuzzer's instrumentation needs nightly
//! flags, which the machine's stable toolchain accepts with `RUSTC_BOOTSTRAP=1` (set here).
//! Runs happen inside a network namespace with only loopback when one can be made (the
//! targets open no socket; this makes sure). New inputs go to `fuzz/target/new-corpus/TARGET`
//! (not committed); fuzz/README.md tells how to merge them into `fuzz/corpus/TARGET`.

use std::env;
use std::ffi::OsString;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Instant;

use crate::lab::isolation::{is_root, isolated_command, user_namespaces_work};
use crate::lab::{Result, err};
use crate::tasks::workspace_root;

/// One fuzz target: its name, the longest input it is given (`-max_len`) and what it fuzzes.
pub struct Target {
    /// The name: the binary in `fuzz/fuzz_targets/` and the corpus in `fuzz/corpus/`.
    pub name: &'static str,
    /// libFuzzer's `-max_len`.
    pub max_len: usize,
    /// Run when no target is named (false for skeletons that fuzz nothing yet).
    pub by_default: bool,
    /// What it feeds arbitrary bytes to.
    pub about: &'static str,
}

/// Every target, in the order they run.
pub const TARGETS: &[Target] = &[
    Target {
        name: "simple_wire",
        max_len: 256,
        by_default: true,
        about: "simple protocol: wire::decode, message_len, answer; stream::read_message",
    },
    Target {
        name: "simple_exchange",
        max_len: 1024,
        by_default: true,
        about: "natt_simple::SimpleExchange fed datagrams and time",
    },
    Target {
        name: "stun_message",
        max_len: 2100,
        by_default: true,
        about: "STUN decode_request/response, framing, the server's answers",
    },
    Target {
        name: "turn_messages",
        max_len: 4096,
        by_default: true,
        about: "TURN ChannelData, server messages, natt_turn::Allocation fed answers and time",
    },
    Target {
        name: "stun_exchange",
        max_len: 4096,
        by_default: true,
        about: "natt_stun::StunExchange fed datagrams and time",
    },
    Target {
        name: "stun_behaviour",
        max_len: 4096,
        by_default: true,
        about: "RFC 5780 MappingTest and FilteringTest fed datagrams and time",
    },
    Target {
        name: "punch_messages",
        max_len: 1024,
        by_default: true,
        about: "wire::open (UDP and TCP punch messages), UdpPuncher fed datagrams from anywhere",
    },
    Target {
        name: "relay_records",
        max_len: 40000,
        by_default: true,
        about: "records of a relayed TCP stream: natt_punch::records parse/open_move, read in any cuts",
    },
    Target {
        name: "token",
        max_len: 4200,
        by_default: true,
        about: "rendezvous tokens: from_token on any text, to_token round trips",
    },
    Target {
        name: "upnp_description",
        max_len: 8192,
        by_default: true,
        about: "UPnP root device descriptions: natt_upnp::description parse and resolve",
    },
    Target {
        name: "ssdp_answer",
        max_len: 2048,
        by_default: true,
        about: "SSDP answers: natt_upnp::ssdp::location",
    },
    Target {
        name: "upnp_soap",
        max_len: 4096,
        by_default: true,
        about: "UPnP SOAP answers: natt_upnp::soap::parse_response",
    },
    Target {
        name: "upnp_http",
        max_len: 4096,
        by_default: true,
        about: "HTTP answers to IPv6 pinhole requests: natt_upnp::pinhole::parse_http_response",
    },
    Target {
        name: "pcp_wire",
        max_len: 1104,
        by_default: true,
        about: "PCP and NAT-PMP decode_response/decode_request round trips",
    },
    Target {
        name: "pcp_client",
        max_len: 2048,
        by_default: true,
        about: "natt_pcp::transaction::Transaction and EpochTracker fed gateway replies and time",
    },
];

/// The build and run flags shared by `cargo fuzz build` and `cargo fuzz run` (the same flags,
/// or `run` rebuilds): release with debug assertions and overflow checks.
const PROFILE: [&str; 2] = ["-O", "-a"];

const USAGE: &str = "usage: cargo xtask fuzz [--seconds N] [--sanitizer address|none] [TARGET...] | --list";

/// `cargo xtask fuzz ARGS`.
pub fn run(args: &[String]) -> Result<()> {
    let mut seconds: u64 = 60;
    let mut sanitizer = String::from("none");
    let mut names: Vec<String> = Vec::new();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--list" => {
                for t in TARGETS {
                    println!("{:<16} -max_len={:<5} {}", t.name, t.max_len, t.about);
                }
                return Ok(());
            }
            "--seconds" => {
                let v = it.next().ok_or_else(|| err(USAGE))?;
                seconds = v.parse().map_err(|_| err(format!("bad --seconds '{v}'")))?;
            }
            "--sanitizer" => sanitizer = it.next().ok_or_else(|| err(USAGE))?.clone(),
            "-h" | "--help" => {
                println!("{USAGE}");
                return Ok(());
            }
            s if s.starts_with('-') => return Err(err(format!("unknown option '{s}'\n{USAGE}"))),
            s => names.push(s.to_string()),
        }
    }
    let targets: Vec<&Target> = if names.is_empty() {
        TARGETS.iter().filter(|t| t.by_default).collect()
    } else {
        names
            .iter()
            .map(|n| {
                TARGETS
                    .iter()
                    .find(|t| t.name == n)
                    .ok_or_else(|| err(format!("no fuzz target '{n}' (cargo xtask fuzz --list)")))
            })
            .collect::<Result<_>>()?
    };
    check_cargo_fuzz()?;

    let build = |extra: &[&str]| {
        let mut cmd = cargo_fuzz(&["build"]);
        cmd.args(PROFILE).args(["--sanitizer", &sanitizer]).args(extra);
        cmd
    };
    eprintln!("xtask: == cargo fuzz build ({} targets)", targets.len());
    let status = build(&[])
        .status()
        .map_err(|e| err(format!("cannot run cargo fuzz: {e}")))?;
    if !status.success() {
        return Err(err("cargo fuzz build failed"));
    }

    let isolation = isolation();
    let mut failed = Vec::new();
    let mut summary = Vec::new();
    for t in targets {
        let new_corpus = fuzz_dir().join("target/new-corpus").join(t.name);
        std::fs::create_dir_all(&new_corpus)?;
        let corpus = fuzz_dir().join("corpus").join(t.name);
        std::fs::create_dir_all(&corpus)?;
        let mut args: Vec<OsString> = vec!["fuzz".into(), "run".into()];
        args.extend(PROFILE.iter().map(OsString::from));
        args.extend(["--sanitizer".into(), OsString::from(&sanitizer), t.name.into()]);
        args.extend([new_corpus.into_os_string(), corpus.into_os_string(), "--".into()]);
        args.extend(
            [
                format!("-max_total_time={seconds}"),
                format!("-max_len={}", t.max_len),
                "-timeout=10".into(),
                "-rss_limit_mb=2048".into(),
                "-print_final_stats=1".into(),
            ]
            .map(OsString::from),
        );
        let mut cmd = match isolation {
            Some(as_user) => isolated_command(&cargo(), &args, as_user),
            None => {
                let mut c = Command::new(cargo());
                c.args(&args);
                c
            }
        };
        cmd.current_dir(workspace_root())
            .env("RUSTC_BOOTSTRAP", "1")
            .env("CARGO_NET_OFFLINE", "true")
            .stderr(Stdio::piped());
        eprintln!("xtask: == fuzz {} for {seconds} s (-max_len={})", t.name, t.max_len);
        let t0 = Instant::now();
        let mut child = cmd
            .spawn()
            .map_err(|e| err(format!("cannot run cargo fuzz run: {e}")))?;
        let mut last_stats = String::new();
        if let Some(stderr) = child.stderr.take() {
            for line in BufReader::new(stderr).lines() {
                let line = line?;
                eprintln!("{line}");
                if line.starts_with('#') && line.contains("cov:") {
                    last_stats = line;
                }
            }
        }
        let ok = child.wait()?.success();
        summary.push(format!(
            "{:6} {:<16} {:6.0} s  {}",
            if ok { "ok" } else { "FAILED" },
            t.name,
            t0.elapsed().as_secs_f64(),
            last_stats
        ));
        if !ok {
            failed.push(t.name);
        }
    }
    eprintln!("xtask: summary (new inputs in fuzz/target/new-corpus/, crashes in fuzz/artifacts/)");
    for line in &summary {
        eprintln!("xtask:   {line}");
    }
    if failed.is_empty() {
        Ok(())
    } else {
        Err(err(format!("fuzz targets failed: {}", failed.join(", "))))
    }
}

fn fuzz_dir() -> PathBuf {
    workspace_root().join("fuzz")
}

fn cargo() -> OsString {
    env::var_os("CARGO").unwrap_or_else(|| "cargo".into())
}

fn cargo_fuzz(args: &[&str]) -> Command {
    let mut cmd = Command::new(cargo());
    cmd.arg("fuzz")
        .args(args)
        .current_dir(workspace_root())
        .env("RUSTC_BOOTSTRAP", "1");
    cmd
}

fn check_cargo_fuzz() -> Result<()> {
    let ok = cargo_fuzz(&["--version"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if ok {
        Ok(())
    } else {
        Err(err("cargo-fuzz is not installed: cargo install cargo-fuzz --locked"))
    }
}

/// `Some(as_user)` when runs can be put in a network namespace with only loopback.
fn isolation() -> Option<bool> {
    if is_root() {
        Some(false)
    } else if user_namespaces_work() {
        Some(true)
    } else {
        eprintln!("xtask: cannot make a network namespace (no root, no user namespaces): fuzzing unisolated");
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_target_has_a_source_file_and_every_source_file_a_target() {
        let dir = fuzz_dir().join("fuzz_targets");
        let mut files: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| {
                e.unwrap()
                    .file_name()
                    .to_string_lossy()
                    .trim_end_matches(".rs")
                    .to_string()
            })
            .collect();
        files.sort();
        let mut names: Vec<String> = TARGETS.iter().map(|t| t.name.to_string()).collect();
        names.sort();
        assert_eq!(files, names);
    }
}
