//! Running `natt punch` on two lab hosts: starting each side with its token files, and
//! collecting both sides once each has printed its result and sent the other a line.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use xtask::lab::Lab;

use super::{Running, natt_bin};

static SEQ: AtomicU32 = AtomicU32::new(0);

/// How one side of a punch ended.
#[derive(Debug)]
pub struct Side {
    pub ok: bool,
    pub json: Option<serde_json::Value>,
    pub lines: Vec<String>,
    pub stderr: String,
    pub took: Duration,
}

impl Side {
    pub fn peer(&self) -> SocketAddr {
        self.json.as_ref().unwrap()["peer"].as_str().unwrap().parse().unwrap()
    }
}

/// Two token file paths (`a.tok`, `b.tok`) in a fresh directory `STATE/WHAT<n>` of the lab.
pub fn token_files(lab: &Lab, what: &str) -> (PathBuf, PathBuf) {
    let n = SEQ.fetch_add(1, Ordering::SeqCst);
    let dir = lab.state_dir().join(format!("{what}{n}"));
    std::fs::create_dir_all(&dir).unwrap();
    (dir.join("a.tok"), dir.join("b.tok"))
}

/// Punches between `a` and `b` over `proto` (`--udp`/`--tcp`), `extra` on both sides.
pub fn session(lab: &Lab, a: &str, b: &str, proto: &str, extra: &[&str]) -> (Side, Side) {
    let (ta, tb) = token_files(lab, "punch");
    let t0 = Instant::now();
    let ra = start(lab, a, proto, &ta, &tb, extra);
    let rb = start(lab, b, proto, &tb, &ta, extra);
    finish(ra, rb, (a, b), t0)
}

/// Each side printed the other's `hello from NAME` line (`what` names the case in a failure).
pub fn assert_hellos(a: &Side, b: &Side, names: (&str, &str), what: &str) {
    assert!(
        a.lines.contains(&format!("hello from {}", names.1)),
        "{what}: {} got {:?}",
        names.0,
        a.lines
    );
    assert!(
        b.lines.contains(&format!("hello from {}", names.0)),
        "{what}: {} got {:?}",
        names.1,
        b.lines
    );
}

/// Starts `natt punch` in `node`, its token in `me`, the peer's in `peer`.
pub fn start(lab: &Lab, node: &str, proto: &str, me: &Path, peer: &Path, extra: &[&str]) -> Running {
    Running::new(command(lab, node, proto, me, peer, extra).spawn().unwrap())
}

/// The `natt punch` command of [`start`], to add to (the environment, say) before spawning.
pub fn command(lab: &Lab, node: &str, proto: &str, me: &Path, peer: &Path, extra: &[&str]) -> std::process::Command {
    let natt = natt_bin();
    let stun1 = format!("{}:3478", lab.get("STUN1").unwrap());
    let stun2 = format!("{}:3478", lab.get("STUN2").unwrap());
    let mut cmd = lab.command(node, &natt).unwrap();
    cmd.args([
        "punch",
        proto,
        "--no-upnp",
        "--json",
        "--stun",
        &stun1,
        "--stun",
        &stun2,
    ]);
    cmd.arg("--token-out").arg(me).arg("--peer-token").arg(peer);
    cmd.args(extra);
    cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
    cmd
}

/// Once both sides printed their result line, each sends one line to the other and closes its
/// input; then both are collected.
pub fn finish(mut a: Running, mut b: Running, names: (&str, &str), t0: Instant) -> (Side, Side) {
    let end = t0 + Duration::from_secs(40);
    let first = |r: &mut Running| -> Option<String> {
        while Instant::now() < end {
            if let Some(l) = r.seen.first() {
                return Some(l.clone());
            }
            match r.lines.recv_timeout(Duration::from_millis(50)) {
                Ok(l) => r.seen.push(l),
                Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => return None,
                Err(_) => {}
            }
        }
        None
    };
    let (fa, fb) = (first(&mut a), first(&mut b));
    for (r, name, first) in [(&mut a, names.0, &fa), (&mut b, names.1, &fb)] {
        let mut stdin = r.child.stdin.take().unwrap();
        if first.is_some() && fa.is_some() && fb.is_some() {
            // Over UDP a line is one datagram, which a lossy link may drop: send a few.
            for _ in 0..5 {
                let _ = writeln!(stdin, "hello from {name}");
            }
        }
        drop(stdin);
    }
    let side = |mut r: Running| {
        let child_stderr = r.read_stderr();
        let status = r.child.wait().unwrap();
        let took = t0.elapsed();
        let lines = r.finish();
        let json = lines.first().and_then(|l| serde_json::from_str(l).ok());
        Side {
            ok: status.success(),
            json,
            lines,
            stderr: child_stderr,
            took,
        }
    };
    (side(a), side(b))
}

/// The extra arguments of h1's and h2's `natt punch` in one session.
pub type SessionArgs<'a> = (&'a [&'a str], &'a [&'a str]);

/// A first session between h1 and h2 (which must succeed) leaves h2's token behind; in a
/// second, h1 is given that stale token and h2 h1's new one. Both sides of the second session.
/// The token files are in `dir` (left over ones are removed first).
pub fn stale_token_session(
    lab: &Lab,
    proto: &str,
    dir: &Path,
    first: SessionArgs<'_>,
    second: SessionArgs<'_>,
) -> (Side, Side) {
    let (a1, b1, a2, b2) = (dir.join("a1"), dir.join("b1"), dir.join("a2"), dir.join("b2"));
    for f in [&a1, &b1, &a2, &b2] {
        let _ = std::fs::remove_file(f);
    }
    let t0 = Instant::now();
    let (sa, sb) = finish(
        start(lab, "h1", proto, &a1, &b1, first.0),
        start(lab, "h2", proto, &b1, &a1, first.1),
        ("h1", "h2"),
        t0,
    );
    assert!(sa.ok && sb.ok, "first session: {sa:?} {sb:?}");
    // Copied, so h2's new token goes elsewhere.
    std::fs::copy(&b1, &b2).unwrap();
    let t0 = Instant::now();
    finish(
        start(lab, "h1", proto, &a2, &b2, second.0),
        start(lab, "h2", proto, &dir.join("b2-new"), &a2, second.1),
        ("h1", "h2"),
        t0,
    )
}
