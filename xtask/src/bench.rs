//! `cargo xtask bench`: natt's benchmarks in the NAT lab. Prints a markdown report and writes it
//! to `bench/RESULTS.md`. Every figure is the median of many runs, set against a reference
//! measured in the same run (interleaved with natt's runs), so that noise on a shared machine
//! affects both.
//!
//! Sections, one module each:
//! - [`mapping`]: mapping latency per technique and all together, against `upnpc`, `natpmpc`
//!   and coturn's `turnutils_stunclient`.
//! - [`punch`]: hole-punch time against the round trip between the peers, and the success rate
//!   for every NAT pair the punch tests cover.
//! - [`serve`]: `natt serve` throughput against coturn with the same load generator
//!   ([`load`], run as `xtask lab probe load`), its memory after many distinct sources, and
//!   valid requests amid garbage.
//! - [`deadlines`]: every blocking call against a silent peer ends by its deadline.
//! - [`relay`]: connecting through a TURN relay (issue 14): relayed connect time between two
//!   symmetric NATs against round trips, and relayed throughput against `turnutils_uclient`.
//! - [`speed`]: cold-start speed (issue 17): mapping without (or with silent) gateways, STUN
//!   behind a filtering NAT, and the whole punch from process start, against round trips.
//! - [`hardnat`]: hard NATs (issue 15): success, connect time and packets of the birthday
//!   method through a symmetric NAT.
//! - [`ipv6`]: IPv6 punch success between dual-stack and IPv6-only homes, and the IPv6 punch
//!   time against the round trip (issue 16).
//!
//! Like `cargo xtask lab`, it runs as root inside `unshare --net` (main.rs arranges that, after
//! building natt and xtask in release mode): nothing reaches the machine's own network, and
//! every load is bounded in count and time.

pub mod deadlines;
pub mod echo;
pub mod hardnat;
pub mod ipv6;
pub mod load;
pub mod mapping;
pub mod proc;
pub mod punch;
pub mod relay;
pub mod report;
pub mod serve;
pub mod speed;
pub mod stats;

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Instant;

use crate::lab::{Lab, Result, err};
use crate::tasks;
use report::{Report, Section};

/// The lab prefix every benchmark's lab uses (one lab at a time).
pub const PREFIX: &str = "bench";

/// The benchmarks, by the names `--only` takes.
pub const SECTIONS: &[&str] = &[
    "mapping",
    "punch-time",
    "punch-success",
    "serve",
    "deadlines",
    "speed",
    "hardnat",
    "relay",
    "ipv6",
];

/// Usage of `cargo xtask bench`.
pub const USAGE: &str = "\
cargo xtask bench [--quick] [--only SECTION,...] [--out FILE]
    the NAT lab benchmarks (root): a markdown report on stdout and in bench/RESULTS.md
    --quick   fewer runs (a rough look in about a third of the time)
    --only    some of: mapping, punch-time, punch-success, serve, deadlines, speed, hardnat, relay, ipv6
    --out     where to write the report (default bench/RESULTS.md in the workspace)";

/// What `cargo xtask bench` was asked.
#[derive(Debug, Clone)]
pub struct Options {
    /// Fewer runs.
    pub quick: bool,
    /// The sections to run.
    pub only: Vec<String>,
    /// Where the report goes.
    pub out: PathBuf,
    /// The command line, for the report.
    pub command: String,
}

impl Options {
    /// Parses the arguments after `bench`; `None` for `--help`.
    pub fn parse(args: &[String]) -> Result<Option<Options>> {
        let mut opts = Options {
            quick: false,
            only: SECTIONS.iter().map(|s| (*s).to_string()).collect(),
            out: tasks::workspace_root().join("bench/RESULTS.md"),
            command: std::iter::once("cargo xtask bench".to_string())
                .chain(args.iter().cloned())
                .collect::<Vec<_>>()
                .join(" "),
        };
        let mut it = args.iter();
        while let Some(a) = it.next() {
            match a.as_str() {
                "--quick" => opts.quick = true,
                "--only" => {
                    let list = it.next().ok_or_else(|| err("--only needs a list of sections"))?;
                    opts.only = list.split(',').map(str::to_string).collect();
                    if let Some(bad) = opts.only.iter().find(|s| !SECTIONS.contains(&s.as_str())) {
                        return Err(err(format!(
                            "unknown section '{bad}' (sections: {})",
                            SECTIONS.join(", ")
                        )));
                    }
                }
                "--out" => opts.out = PathBuf::from(it.next().ok_or_else(|| err("--out needs a file"))?),
                "-h" | "--help" => return Ok(None),
                other => return Err(err(format!("unknown bench option '{other}'\n{USAGE}"))),
            }
        }
        Ok(Some(opts))
    }
}

/// What every benchmark needs: the binaries and how many runs to make.
pub struct Bench {
    /// The natt binary (release).
    pub natt: PathBuf,
    /// The xtask binary the lab's nodes run as helper (release: the load generator).
    pub tool: PathBuf,
    /// Fewer runs.
    pub quick: bool,
}

impl Bench {
    /// `full` runs, or `quick` with `--quick`.
    pub fn runs(&self, full: usize, quick: usize) -> usize {
        if self.quick { quick } else { full }
    }

    /// Builds the lab `topology` under [`PREFIX`] (tearing down what is left of a previous one).
    pub fn lab(&self, topology: &str) -> Result<Lab> {
        eprintln!("bench: lab up {topology}");
        Lab::up_with(PREFIX, topology, &self.tool)
    }

    /// The natt binary as a string, for argument lists.
    pub fn natt_str(&self) -> String {
        self.natt.display().to_string()
    }
}

/// Runs the benchmarks `opts` asks for with the release binaries `natt` and `tool` (root,
/// inside `unshare --net`), prints the report and writes it. An error if a benchmark could not
/// run (missed targets are results, not errors).
pub fn run(opts: &Options, natt: &Path, tool: &Path) -> Result<()> {
    for bin in [natt, tool] {
        if !bin.is_file() {
            return Err(err(format!("{} is missing (cargo build --release)", bin.display())));
        }
    }
    let bench = Bench {
        natt: natt.to_path_buf(),
        tool: tool.to_path_buf(),
        quick: opts.quick,
    };
    let t0 = Instant::now();
    let load_before = load_average();
    let mut report = Report {
        command: opts.command.clone(),
        machine: machine(),
        sections: Vec::new(),
    };
    let mut failed = Vec::new();
    type Bencher = fn(&Bench) -> Result<Section>;
    let all: [(&str, &str, Bencher); 9] = [
        ("mapping", "Mapping latency", mapping::run),
        (
            "punch-time",
            "Hole-punch time with 25 ms one-way delay per WAN link",
            punch::time,
        ),
        ("punch-success", "Hole-punch success rate", punch::success),
        ("serve", "natt serve: throughput, memory, garbage", serve::run),
        ("deadlines", "Deadlines against silent peers", deadlines::run),
        ("speed", speed::TITLE, speed::run),
        ("hardnat", hardnat::TITLE, hardnat::run),
        ("relay", relay::TITLE, relay::run),
        ("ipv6", ipv6::TITLE, ipv6::run),
    ];
    for (name, title, f) in all {
        if !opts.only.iter().any(|o| o == name) {
            continue;
        }
        let ts = Instant::now();
        eprintln!("bench: == {title}");
        let section = f(&bench).unwrap_or_else(|e| {
            failed.push(name);
            Section::failed(title, &e.to_string())
        });
        eprintln!("bench: == {title}: {:.0} s", ts.elapsed().as_secs_f64());
        report.sections.push(section);
    }
    report.machine.push(format!(
        "load average (1 min) before / after: {load_before} / {}; other work on this machine \
         (builds) shares its cores",
        load_average()
    ));
    report
        .machine
        .push(format!("bench took {:.0} s", t0.elapsed().as_secs_f64()));
    let md = report.render();
    print!("{md}");
    if let Some(dir) = opts.out.parent() {
        fs::create_dir_all(dir)?;
    }
    fs::write(&opts.out, &md).map_err(|e| err(format!("cannot write {}: {e}", opts.out.display())))?;
    eprintln!("bench: report written to {}", opts.out.display());
    if failed.is_empty() {
        Ok(())
    } else {
        Err(err(format!("benchmarks that could not run: {}", failed.join(", "))))
    }
}

/// Lines about the machine: date, cores, CPU, kernel.
fn machine() -> Vec<String> {
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let kernel = fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let cpu = fs::read_to_string("/proc/cpuinfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| {
            l.strip_prefix("model name")
                .and_then(|r| r.split_once(':'))
                .map(|(_, m)| m.trim().to_string())
        })
        .unwrap_or_else(|| "unknown".to_string());
    vec![
        format!("date: {}", report::now_utc()),
        format!("machine: {cores} cores (nproc), {cpu}, Linux {}", kernel.trim()),
    ]
}

/// The 1-minute load average.
fn load_average() -> String {
    fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| l.split_whitespace().next().map(str::to_string))
        .unwrap_or_else(|| "?".to_string())
}

/// The `key` of a JSON line as a number.
pub fn json_number(line: &str, key: &str) -> Option<f64> {
    serde_json::from_str::<serde_json::Value>(line).ok()?.get(key)?.as_f64()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(s: &str) -> Vec<String> {
        s.split_whitespace().map(str::to_string).collect()
    }

    #[test]
    fn options() {
        let o = Options::parse(&[]).unwrap().unwrap();
        assert!(!o.quick);
        assert_eq!(o.only.len(), SECTIONS.len());
        assert!(o.out.ends_with("bench/RESULTS.md"));
        assert_eq!(o.command, "cargo xtask bench");
        let o = Options::parse(&words("--quick --only serve,deadlines --out /tmp/x.md"))
            .unwrap()
            .unwrap();
        assert!(o.quick);
        assert_eq!(o.only, ["serve", "deadlines"]);
        assert_eq!(o.out, PathBuf::from("/tmp/x.md"));
        assert_eq!(
            o.command,
            "cargo xtask bench --quick --only serve,deadlines --out /tmp/x.md"
        );
        assert!(Options::parse(&words("--only nope")).is_err());
        assert!(Options::parse(&words("--fast")).is_err());
        assert!(Options::parse(&words("--help")).unwrap().is_none());
    }

    #[test]
    fn json_numbers() {
        assert_eq!(json_number(r#"{"elapsed_ms":12,"x":1}"#, "elapsed_ms"), Some(12.0));
        assert_eq!(json_number("not json", "elapsed_ms"), None);
    }
}
