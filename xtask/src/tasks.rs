//! `cargo xtask test` and `cargo xtask ci`.
//!
//! `test` builds everything first in the machine's own namespace (cargo may fetch crates
//! there), then runs every test with `--offline` inside a fresh network namespace with only
//! loopback (`unshare --net`), so no test can reach the machine's network: the workspace
//! tests, xtask's unit tests, then the NAT lab tests (root only; one at a time).
//! Without root, tests run in a user namespace when the kernel allows it, else plainly, and
//! the lab tests are skipped.

use std::env;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use crate::lab::isolation::{is_root, isolated_command, user_namespaces_work};
use crate::lab::{Result, err, netns, setup};

/// The workspace root (the directory above xtask's manifest).
pub fn workspace_root() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().unwrap_or(manifest).to_path_buf()
}

/// The natt binary that `cargo build -p natt-cli` makes.
pub fn natt_binary() -> PathBuf {
    workspace_root().join("target/debug/natt")
}

/// Runs `cargo build ARGS` in the workspace; an error naming the command if it fails.
fn cargo_build(args: &[&str]) -> Result<()> {
    let status = Command::new(cargo())
        .arg("build")
        .args(args)
        .current_dir(workspace_root())
        .status()
        .map_err(|e| err(format!("cannot run cargo: {e}")))?;
    if status.success() {
        Ok(())
    } else {
        Err(err(format!("cargo build {} failed", args.join(" "))))
    }
}

/// Builds the natt binary.
pub fn build_natt() -> Result<()> {
    cargo_build(&["--quiet", "-p", "natt-cli"])
}

/// The release builds `cargo xtask bench` uses: natt, and xtask (the lab's helper tool, whose
/// load generator should not be the bottleneck).
pub fn release_binaries() -> (PathBuf, PathBuf) {
    let dir = workspace_root().join("target/release");
    (dir.join("natt"), dir.join("xtask"))
}

/// Builds natt and xtask in release mode (see [`release_binaries`]).
pub fn build_natt_release() -> Result<()> {
    cargo_build(&["--release", "--quiet", "-p", "natt-cli", "-p", "xtask"])
}

fn cargo() -> OsString {
    env::var_os("CARGO").unwrap_or_else(|| "cargo".into())
}

/// How test commands are isolated from the machine's network.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Isolation {
    /// `unshare --net` (root).
    Root,
    /// `unshare --user --map-root-user --net` (no root, user namespaces allowed).
    User,
    /// Not isolated (no root, no user namespaces).
    None,
}

struct Steps {
    failed: Vec<String>,
    timings: Vec<(String, f64)>,
}

impl Steps {
    fn new() -> Steps {
        Steps {
            failed: Vec::new(),
            timings: Vec::new(),
        }
    }

    /// Runs one step; records its time and whether it failed.
    fn run(&mut self, name: &str, mut cmd: Command) -> bool {
        eprintln!("xtask: == {name}: {}", netns::describe(&cmd));
        let t0 = Instant::now();
        let ok = cmd
            .current_dir(workspace_root())
            .status()
            .map(|s| s.success())
            .unwrap_or_else(|e| {
                eprintln!("xtask: cannot run {name}: {e}");
                false
            });
        let secs = t0.elapsed().as_secs_f64();
        eprintln!("xtask: == {name}: {} in {secs:.1} s", if ok { "ok" } else { "FAILED" });
        self.timings.push((name.to_string(), secs));
        if !ok {
            self.failed.push(name.to_string());
        }
        ok
    }

    fn finish(self) -> Result<()> {
        eprintln!("xtask: summary");
        for (name, secs) in &self.timings {
            let mark = if self.failed.contains(name) { "FAILED" } else { "ok" };
            eprintln!("xtask:   {mark:6} {secs:7.1} s  {name}");
        }
        if self.failed.is_empty() {
            Ok(())
        } else {
            Err(err(format!("failed: {}", self.failed.join(", "))))
        }
    }
}

fn cargo_cmd(args: &[&str]) -> Command {
    let mut cmd = Command::new(cargo());
    cmd.args(args);
    cmd
}

fn isolated_cargo(mode: Isolation, args: &[&str]) -> Command {
    match mode {
        Isolation::Root => isolated_command(&cargo(), args, false),
        Isolation::User => isolated_command(&cargo(), args, true),
        Isolation::None => cargo_cmd(args),
    }
}

/// The fuzz project's manifest (its own workspace), relative to the repository root.
const FUZZ_MANIFEST: &str = "fuzz/Cargo.toml";

/// `cargo xtask test`: build, then every test without network (the fuzz corpora replayed too);
/// lab tests as root.
pub fn test() -> Result<()> {
    let mut steps = Steps::new();
    run_tests(&mut steps)?;
    steps.finish()
}

fn run_tests(steps: &mut Steps) -> Result<()> {
    if !steps.run("build", cargo_cmd(&["build", "--workspace", "--all-targets"]))
        || !steps.run("build tests", cargo_cmd(&["test", "--workspace", "--no-run"]))
        || !steps.run(
            "build fuzz replay",
            cargo_cmd(&["test", "--manifest-path", FUZZ_MANIFEST, "--no-run"]),
        )
    {
        return Ok(()); // nothing to test; the failure is recorded
    }
    let root = is_root();
    if root {
        setup::install_missing()?;
    }
    let mode = if root {
        Isolation::Root
    } else if user_namespaces_work() {
        Isolation::User
    } else {
        eprintln!("xtask: cannot make a network namespace (no root, no user namespaces): tests run unisolated");
        Isolation::None
    };
    steps.run(
        "workspace tests",
        isolated_cargo(
            mode,
            &[
                "test",
                "--workspace",
                "--exclude",
                "xtask",
                "--offline",
                "--no-fail-fast",
            ],
        ),
    );
    // Every fuzz corpus input and crash regression, through its target on stable Rust.
    steps.run(
        "fuzz corpus replay",
        isolated_cargo(mode, &["test", "--manifest-path", FUZZ_MANIFEST, "--offline"]),
    );
    steps.run(
        "xtask unit tests",
        isolated_cargo(mode, &["test", "-p", "xtask", "--lib", "--bins", "--offline"]),
    );
    if root {
        steps.run(
            "lab tests",
            isolated_cargo(
                mode,
                &[
                    "test",
                    "-p",
                    "xtask",
                    // Every file in xtask/tests/ is a NAT lab test.
                    "--test",
                    "*",
                    "--offline",
                    "--no-fail-fast",
                    "--",
                    "--test-threads=1",
                ],
            ),
        );
    } else {
        eprintln!("xtask: lab tests skipped: the NAT lab needs root");
    }
    Ok(())
}

/// `cargo xtask ci`: format check, clippy with warnings denied, then [`test()`].
pub fn ci() -> Result<()> {
    let mut steps = Steps::new();
    steps.run("fmt", cargo_cmd(&["fmt", "--all", "--", "--check"]));
    steps.run(
        "clippy",
        cargo_cmd(&[
            "clippy",
            "--workspace",
            "--all-targets",
            "--all-features",
            "--",
            "-D",
            "warnings",
        ]),
    );
    run_tests(&mut steps)?;
    steps.finish()
}
