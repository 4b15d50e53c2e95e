//! Processes the benchmarks run inside lab nodes: timing a command, reading a child's output
//! line by line with a timeout, `natt serve` on the lab's internet, and a process's memory and
//! CPU time from `/proc`.

use std::fs;
use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::thread;
use std::time::{Duration, Instant};

use crate::lab::{Lab, Result, err, netns};

/// Milliseconds since `t0`.
pub fn ms_since(t0: Instant) -> f64 {
    t0.elapsed().as_secs_f64() * 1000.0
}

/// Runs `cmd` to its end (stdin closed); its output and the wall-clock milliseconds from spawn
/// to exit.
pub fn timed(cmd: &mut Command) -> Result<(Output, f64)> {
    cmd.stdin(Stdio::null());
    let t0 = Instant::now();
    let out = cmd
        .output()
        .map_err(|e| err(format!("cannot run `{}`: {e}", netns::describe(cmd))))?;
    Ok((out, ms_since(t0)))
}

/// A child whose stdout lines arrive on a channel (a thread reads them), so a benchmark can
/// wait for a line with a timeout.
pub struct Lines {
    /// The process.
    pub child: Child,
    rx: Receiver<String>,
    stderr: Option<Receiver<String>>,
    /// Lines received so far by [`Lines::next_line`] and [`Lines::finish`].
    pub seen: Vec<String>,
}

impl Lines {
    /// Takes over `child`, whose stdout must be piped.
    pub fn new(mut child: Child) -> Result<Lines> {
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| err("the child's stdout is not piped"))?;
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(std::result::Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        // Stderr too is read on a thread: a grandchild that outlives the child may hold it open.
        let stderr = child.stderr.take().map(|mut e| {
            let (tx, rx) = mpsc::channel();
            thread::spawn(move || {
                let mut text = String::new();
                let _ = e.read_to_string(&mut text);
                let _ = tx.send(text);
            });
            rx
        });
        Ok(Lines {
            child,
            rx,
            stderr,
            seen: Vec::new(),
        })
    }

    /// The next line, within `timeout`; `None` when the child closed its stdout or took too long.
    pub fn next_line(&mut self, timeout: Duration) -> Option<String> {
        match self.rx.recv_timeout(timeout) {
            Ok(l) => {
                self.seen.push(l.clone());
                Some(l)
            }
            Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => None,
        }
    }

    /// Closes the child's stdin (if piped), waits up to `timeout` for it to exit (then kills
    /// it); every stdout line, whether it succeeded, and its stderr.
    pub fn finish(mut self, timeout: Duration) -> (Vec<String>, bool, String) {
        drop(self.child.stdin.take());
        let ok = wait_or_kill(&mut self.child, timeout);
        let stderr = self
            .stderr
            .as_ref()
            .and_then(|rx| rx.recv_timeout(Duration::from_millis(200)).ok())
            .unwrap_or_default();
        self.seen.extend(self.rx.try_iter());
        // The reader thread may still be handing over the last lines.
        while let Ok(l) = self.rx.recv_timeout(Duration::from_millis(50)) {
            self.seen.push(l);
        }
        (self.seen, ok, stderr)
    }
}

/// Runs a `natt map --hold` command: spawns it, takes its first stdout line (its result) and
/// the wall-clock ms to it, then closes its stdin, which releases the mapping (untimed).
pub fn map_hold_line(cmd: &mut Command) -> Result<(Option<String>, f64)> {
    cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::null());
    let t0 = Instant::now();
    let child = cmd.spawn().map_err(|e| err(format!("cannot start natt map: {e}")))?;
    let mut lines = Lines::new(child)?;
    let line = lines.next_line(Duration::from_secs(10));
    let wall = ms_since(t0);
    let _ = lines.finish(Duration::from_secs(10));
    Ok((line, wall))
}

/// Waits up to `timeout` for `child` to exit, else kills it; true when it exited successfully.
pub fn wait_or_kill(child: &mut Child, timeout: Duration) -> bool {
    let end = Instant::now() + timeout;
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return status.success(),
            Ok(None) if Instant::now() < end => thread::sleep(Duration::from_millis(5)),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                return false;
            }
        }
    }
}

/// `natt serve` running on the lab's internet (`inet`); stopped when dropped. Its output is
/// read all along, so its stdout never fills up or breaks.
pub struct Serve {
    lines: Lines,
}

impl Serve {
    /// Starts `natt serve --listen A --listen B...` in `inet` and waits until it listens.
    pub fn start(lab: &Lab, natt: &Path, listen: &[&str]) -> Result<Serve> {
        let mut cmd = lab.command("inet", natt)?;
        cmd.arg("serve");
        for l in listen {
            cmd.args(["--listen", l]);
        }
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| err(format!("cannot start natt serve: {e}")))?;
        let mut serve = Serve {
            lines: Lines::new(child)?,
        };
        // Two lines (UDP, TCP) per address it serves; the first is enough to go on.
        match serve.lines.next_line(Duration::from_secs(10)) {
            Some(l) if l.starts_with("serving") => Ok(serve),
            other => Err(err(format!("natt serve did not start: {other:?}"))),
        }
    }

    /// Its process id (`ip netns exec` execs natt itself, so this is natt's).
    pub fn pid(&self) -> u32 {
        self.lines.child.id()
    }

    /// True while it runs.
    pub fn running(&mut self) -> bool {
        matches!(self.lines.child.try_wait(), Ok(None))
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.lines.child.kill();
        let _ = self.lines.child.wait();
    }
}

/// The resident memory of process `pid` in KiB (`VmRSS` in `/proc/PID/status`).
pub fn rss_kib(pid: u32) -> Result<u64> {
    let status = fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| err(format!("no VmRSS for process {pid}")))
}

/// CPU time process `pid` has used so far (user + system, every thread), in clock ticks.
pub fn cpu_ticks(pid: u32) -> Result<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the parenthesised name: state is field 3, utime 14 and stime 15.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or_default();
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let field = |n: usize| fields.get(n - 3).and_then(|f| f.parse::<u64>().ok());
    match (field(14), field(15)) {
        (Some(u), Some(s)) => Ok(u + s),
        _ => Err(err(format!("cannot read the CPU time of process {pid}"))),
    }
}

/// Clock ticks per second (`getconf CLK_TCK`, 100 if that fails).
pub fn ticks_per_second() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse::<f64>().ok())
        .filter(|t| *t > 0.0)
        .unwrap_or(100.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_memory_and_cpu() {
        let me = std::process::id();
        assert!(rss_kib(me).unwrap() > 0);
        let mut x = 0u64;
        for i in 0..5_000_000u64 {
            x = x.wrapping_add(i * i);
        }
        assert!(x > 0);
        cpu_ticks(me).unwrap();
        assert!(ticks_per_second() > 0.0);
    }

    #[test]
    fn lines_with_a_timeout() {
        let child = Command::new("sh")
            .args(["-c", "echo one; sleep 5; echo two"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut l = Lines::new(child).unwrap();
        assert_eq!(l.next_line(Duration::from_secs(5)).as_deref(), Some("one"));
        assert_eq!(l.next_line(Duration::from_millis(50)), None);
        let t0 = Instant::now();
        let (lines, ok, _) = l.finish(Duration::from_millis(100));
        assert!(!ok && t0.elapsed() < Duration::from_secs(2));
        assert_eq!(lines, ["one"]);
    }
}
