//! The NAT lab: a small internet of Linux network namespaces with real NATs, a real STUN
//! server (coturn, RFC 5780) and real UPnP IGD / NAT-PMP / PCP gateways (miniupnpd).
//!
//! ```no_run
//! use xtask::lab::Lab;
//! # fn main() -> xtask::lab::Result<()> {
//! let lab = Lab::up("t1", "pair")?; // root, inside `unshare --net`
//! let seen = lab.probe("h1", &["observe", "203.0.113.20:7000"])?;
//! assert!(seen.contains(&lab.get("R1_WAN")?));
//! # Ok(())
//! # } // dropping `lab` tears it down
//! ```
//!
//! Modules, one concept each: [`topology`] (words -> address plan, pure), [`netns`]
//! (namespaces, veth, commands), `build` (a lab from its plan, readiness checks), [`nat`]
//! (NAT kinds, firewall, hairpin), [`daemons`] (coturn, miniupnpd, starting and stopping
//! processes), [`impair`] (delay and loss), [`info`] (`KEY=VALUE` facts), [`probe`] (socket
//! tools run inside nodes), [`isolation`] (never touch the machine's own network), [`setup`]
//! (Debian packages). This file: the [`Lab`] API and [`down`].

pub mod attack;
mod build;
pub mod daemons;
pub mod impair;
pub mod info;
pub mod isolation;
pub mod nat;
pub mod netns;
pub mod probe;
pub mod setup;
pub mod topology;

use std::collections::BTreeMap;
use std::env;
use std::ffi::OsStr;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use topology::{Plan, Topology};

/// Errors of the lab: a message that says what failed and, for commands, their stderr.
pub type Error = Box<dyn std::error::Error + Send + Sync + 'static>;
/// Result of lab operations.
pub type Result<T> = std::result::Result<T, Error>;

/// An [`Error`] with `msg`.
pub fn err(msg: impl Into<String>) -> Error {
    msg.into().into()
}

/// The prefix used when `NATT_LAB_PREFIX` is not set.
pub const DEFAULT_PREFIX: &str = "nl";

/// The lab prefix: `NATT_LAB_PREFIX`, else [`DEFAULT_PREFIX`].
pub fn prefix_from_env() -> Result<String> {
    let prefix = env::var("NATT_LAB_PREFIX").unwrap_or_else(|_| DEFAULT_PREFIX.to_string());
    netns::check_prefix(&prefix)?;
    Ok(prefix)
}

/// Where a lab keeps its state, configs and logs: `/tmp/natt-lab-PREFIX`.
pub fn state_dir(prefix: &str) -> PathBuf {
    PathBuf::from(format!("/tmp/natt-lab-{prefix}"))
}

/// The xtask binary that lab nodes run as helper (probes, observer, delay): `NATT_LAB_TOOL`,
/// else this executable if it is xtask, else `xtask` next to this test binary's directory.
pub fn default_tool() -> Result<PathBuf> {
    if let Some(t) = env::var_os("NATT_LAB_TOOL") {
        return Ok(PathBuf::from(t));
    }
    let exe = env::current_exe()?;
    if exe.file_name() == Some(OsStr::new("xtask")) {
        return Ok(exe);
    }
    // An integration test runs from target/debug/deps/NAME-HASH; xtask is in target/debug.
    if let Some(t) = exe
        .parent()
        .and_then(Path::parent)
        .map(|d| d.join("xtask"))
        .filter(|t| t.is_file())
    {
        return Ok(t);
    }
    Err(err(
        "cannot find the xtask binary for the lab's helper tools; set NATT_LAB_TOOL",
    ))
}

/// Tears down every namespace and process of the lab `prefix` and removes its state.
/// Leftovers of a crashed run go too; nothing with another prefix is touched.
pub fn down(prefix: &str) -> Result<()> {
    netns::check_prefix(prefix)?;
    let namespaces = netns::list(prefix)?;
    let pids: Vec<u32> = namespaces.iter().flat_map(|ns| netns::pids(ns)).collect();
    daemons::stop(&pids);
    let mut failures = Vec::new();
    for ns in &namespaces {
        if let Err(e) = netns::delete(ns) {
            failures.push(e.to_string());
        }
    }
    let dir = state_dir(prefix);
    if dir.exists() {
        fs::remove_dir_all(&dir).map_err(|e| err(format!("cannot remove {}: {e}", dir.display())))?;
    }
    let left = netns::list(prefix)?;
    if !left.is_empty() {
        failures.push(format!("namespaces left: {}", left.join(" ")));
    }
    let alive: Vec<String> = pids
        .iter()
        .filter(|p| daemons::is_running(**p))
        .map(u32::to_string)
        .collect();
    if !alive.is_empty() {
        failures.push(format!("processes still running: {}", alive.join(" ")));
    }
    if failures.is_empty() {
        Ok(())
    } else {
        Err(err(format!("lab '{prefix}' down: {}", failures.join("; "))))
    }
}

/// Polls `done` every 20 ms until it is true or `timeout` passes.
fn wait_until(timeout: Duration, mut done: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + timeout;
    loop {
        if done() {
            return true;
        }
        if Instant::now() >= end {
            return false;
        }
        thread::sleep(Duration::from_millis(20));
    }
}

/// A running lab. Dropping it tears it down, unless it was [`detach`](Lab::detach)ed.
pub struct Lab {
    prefix: String,
    dir: PathBuf,
    plan: Plan,
    tool: PathBuf,
    children: Vec<Child>,
    upnp: BTreeMap<String, String>,
    keep: bool,
}

impl Lab {
    /// Builds the lab `topology` (e.g. `"pair"`, `"r1=sym r2=full p1 --delay 20"`) under
    /// `prefix`, after tearing down leftovers with that prefix. Needs root, and must run
    /// inside an isolated network namespace (`unshare --net`).
    pub fn up(prefix: &str, topology: &str) -> Result<Lab> {
        Lab::up_with(prefix, topology, &default_tool()?)
    }

    /// Like [`Lab::up`], with the xtask binary that nodes run as helper tool.
    pub fn up_with(prefix: &str, topology: &str, tool: &Path) -> Result<Lab> {
        netns::check_prefix(prefix)?;
        let plan = Topology::parse(topology)?.plan()?;
        if !isolation::is_root() {
            return Err(err("the NAT lab needs root (network namespaces, iptables)"));
        }
        isolation::ensure_isolated()?;
        setup::check_tools()?;
        if !tool.is_file() {
            return Err(err(format!("helper tool {} does not exist", tool.display())));
        }
        down(prefix)?;
        let dir = state_dir(prefix);
        fs::create_dir_all(dir.join("pids"))?;
        let mut lab = Lab {
            prefix: prefix.to_string(),
            dir,
            plan,
            tool: tool.to_path_buf(),
            children: Vec::new(),
            upnp: BTreeMap::new(),
            keep: false,
        };
        if let Err(e) = lab.build() {
            // Dropping `lab` tears down what was built, unless asked to keep it for debugging.
            if env::var_os("NATT_LAB_KEEP_FAILED").is_some() {
                lab.keep = true;
                return Err(err(format!("{e} (lab kept: NATT_LAB_KEEP_FAILED is set)")));
            }
            return Err(e);
        }
        Ok(lab)
    }

    /// The lab `prefix` that is already up (e.g. built by `cargo xtask lab up`). Dropping
    /// the returned value leaves the lab running.
    pub fn attach(prefix: &str) -> Result<Lab> {
        netns::check_prefix(prefix)?;
        let dir = state_dir(prefix);
        let text = fs::read_to_string(dir.join("state.env")).map_err(|_| {
            err(format!(
                "no lab is up with prefix '{prefix}' (no {}/state.env); run `cargo xtask lab up TOPOLOGY`",
                dir.display()
            ))
        })?;
        let facts = info::parse(&text);
        let get = |k: &str| facts.iter().find(|(key, _)| key == k).map(|(_, v)| v.clone());
        let topology = get("LAB_TOPOLOGY").ok_or_else(|| err("state.env has no LAB_TOPOLOGY"))?;
        let mut plan = Topology::parse(&topology)?.plan()?;
        let mut upnp = BTreeMap::new();
        for r in &mut plan.routers {
            if let Some(d) = get(&format!("R{}_DELAY_MS", r.n)).and_then(|v| v.parse().ok()) {
                r.delay_ms = d;
            }
            if let Some(l) = get(&format!("R{}_LOSS_PCT", r.n)).and_then(|v| v.parse().ok()) {
                r.loss_pct = l;
            }
            if let Some(v) = get(&format!("R{}_UPNP_FORWARDING", r.n)) {
                upnp.insert(r.name.clone(), v);
            }
        }
        Ok(Lab {
            prefix: prefix.to_string(),
            dir,
            plan,
            tool: default_tool()?,
            children: Vec::new(),
            upnp,
            keep: true,
        })
    }

    /// Leaves the lab running when this value is dropped (`cargo xtask lab up`).
    pub fn detach(mut self) {
        self.keep = true;
    }

    /// Tears the lab down now: no namespace, process or state of this prefix is left.
    pub fn down(mut self) -> Result<()> {
        self.keep = true;
        self.teardown()
    }

    fn teardown(&mut self) -> Result<()> {
        let result = down(&self.prefix);
        for child in &mut self.children {
            let _ = child.try_wait(); // reap what `down` killed
        }
        result
    }

    /// The prefix of every namespace of this lab.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The state directory (configs, logs: `NAME.log`).
    pub fn state_dir(&self) -> &Path {
        &self.dir
    }

    /// The address plan.
    pub fn plan(&self) -> &Plan {
        &self.plan
    }

    /// The xtask binary the nodes run as helper tool.
    pub fn tool(&self) -> &Path {
        &self.tool
    }

    /// `KEY=VALUE` facts about the lab (see [`info`]).
    pub fn info(&self) -> info::Info {
        info::lines(&self.prefix, &self.dir, &self.plan, &self.upnp)
    }

    /// One fact from [`Lab::info`], e.g. `lab.get("R1_WAN")`.
    pub fn get(&self, key: &str) -> Result<String> {
        self.info()
            .into_iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v)
            .ok_or_else(|| err(format!("lab info has no {key}")))
    }

    /// The namespace of `node` (`h1`, or already `PREFIX-h1`).
    pub fn ns(&self, node: &str) -> Result<String> {
        let bare = node.strip_prefix(&format!("{}-", self.prefix)).unwrap_or(node);
        if self.plan.nodes().iter().any(|n| n == bare) {
            Ok(netns::ns_name(&self.prefix, bare))
        } else {
            Err(err(format!(
                "no node '{node}' in this lab (nodes: {})",
                self.plan.nodes().join(" ")
            )))
        }
    }

    /// A command running `program` inside `node`; add arguments, then run or spawn it.
    pub fn command(&self, node: &str, program: impl AsRef<OsStr>) -> Result<Command> {
        Ok(netns::exec_in(&self.ns(node)?, program))
    }

    fn argv_command<S: AsRef<OsStr>>(&self, node: &str, argv: &[S]) -> Result<Command> {
        let (program, args) = argv.split_first().ok_or_else(|| err("empty command line"))?;
        let mut cmd = self.command(node, program)?;
        cmd.args(args);
        Ok(cmd)
    }

    /// Runs `argv` inside `node` and returns its output, whatever its exit status.
    pub fn exec<S: AsRef<OsStr>>(&self, node: &str, argv: &[S]) -> Result<Output> {
        let mut cmd = self.argv_command(node, argv)?;
        cmd.stdin(Stdio::null())
            .output()
            .map_err(|e| err(format!("cannot run `{}`: {e}", netns::describe(&cmd))))
    }

    /// Runs `argv` inside `node`; its stdout, or an error quoting its stderr if it failed.
    pub fn run<S: AsRef<OsStr>>(&self, node: &str, argv: &[S]) -> Result<String> {
        netns::run(&mut self.argv_command(node, argv)?)
    }

    /// Starts `argv` inside `node` with stdout and stderr piped.
    pub fn spawn<S: AsRef<OsStr>>(&self, node: &str, argv: &[S]) -> Result<Child> {
        let mut cmd = self.argv_command(node, argv)?;
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| err(format!("cannot start `{}`: {e}", netns::describe(&cmd))))
    }

    /// Runs the lab's probe tool inside `node`: `xtask lab probe ARGS...` (see [`probe`]).
    pub fn probe(&self, node: &str, args: &[&str]) -> Result<String> {
        self.run(node, &self.probe_argv(args))
    }

    /// Starts the probe tool inside `node` (stdout piped), e.g. a `listen` that runs while
    /// another node sends.
    pub fn spawn_probe(&self, node: &str, args: &[&str]) -> Result<Child> {
        self.spawn(node, &self.probe_argv(args))
    }

    fn probe_argv(&self, args: &[&str]) -> Vec<std::ffi::OsString> {
        let mut argv = vec![self.tool.clone().into_os_string(), "lab".into(), "probe".into()];
        argv.extend(args.iter().map(|a| a.into()));
        argv
    }

    /// Starts a daemon inside `node`, detached, logging to `STATE/NAME.log`; `down` stops it.
    pub fn daemon<S: AsRef<OsStr>>(&mut self, name: &str, node: &str, argv: &[S]) -> Result<()> {
        let ns = self.ns(node)?;
        let (program, args) = argv.split_first().ok_or_else(|| err("empty command line"))?;
        let child = daemons::spawn(&self.dir, name, &ns, program, args)?;
        self.children.push(child);
        Ok(())
    }

    /// The log of daemon `name` so far.
    pub fn log(&self, name: &str) -> String {
        fs::read_to_string(self.dir.join(format!("{name}.log"))).unwrap_or_default()
    }

    /// Waits until the log of daemon `name` contains `needle`.
    pub fn wait_for_log(&self, name: &str, needle: &str, timeout: Duration) -> Result<()> {
        if wait_until(timeout, || self.log(name).contains(needle)) {
            Ok(())
        } else {
            Err(err(format!(
                "{name} did not say '{needle}' within {timeout:?}; its log ({}):\n{}",
                self.dir.join(format!("{name}.log")).display(),
                self.log(name)
            )))
        }
    }

    /// Changes delay and loss of router `router`'s WAN link, each direction.
    pub fn impair(&mut self, router: &str, delay_ms: u32, loss_pct: f64) -> Result<()> {
        let r = self
            .plan
            .router(router)
            .cloned()
            .ok_or_else(|| err(format!("no router '{router}' in this lab")))?;
        self.set_link(&r, delay_ms, loss_pct)?;
        if let Some(r) = self.plan.routers.iter_mut().find(|x| x.name == router) {
            r.delay_ms = delay_ms;
            r.loss_pct = loss_pct;
        }
        self.write_state()
    }

    fn write_state(&self) -> Result<()> {
        fs::write(self.dir.join("state.env"), info::render(&self.info()))?;
        Ok(())
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        if !self.keep
            && let Err(e) = self.teardown()
        {
            eprintln!("lab: teardown of '{}' failed: {e}", self.prefix);
        }
    }
}
