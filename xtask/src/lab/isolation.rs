//! Keeping the lab away from the machine's own network.
//!
//! The lab only ever runs inside a fresh network namespace that has nothing but loopback
//! (`unshare --net`): lab commands and `cargo xtask test` re-execute themselves that way when
//! they are not isolated yet, and [`crate::lab::Lab::up`] refuses to build anything otherwise.
//! The lab's own namespaces are joined to each other only (every veth is created directly
//! inside its two lab namespaces), so no packet can reach the machine's network.
//!
//! The helper tools that run inside lab nodes (probes, observer, delay) check instead that
//! they run inside a lab node's namespace.

use std::ffi::OsStr;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::process::{Command, Stdio};

use super::netns;
use super::{Result, err};

/// Set (to `1`) in the environment of a command re-executed inside `unshare --net`.
pub const ISOLATED_ENV: &str = "NATT_LAB_ISOLATED";

/// True when the effective user is root of the machine (not merely inside a user namespace).
pub fn is_root() -> bool {
    let euid_is_0 = fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Uid:"))
                .and_then(|ids| ids.split_whitespace().nth(1).map(|e| e == "0"))
        })
        .unwrap_or(false);
    let initial_user_ns = fs::read_to_string("/proc/self/uid_map")
        .map(|m| {
            m.lines()
                .next()
                .map(|l| l.split_whitespace().collect::<Vec<_>>() == ["0", "0", "4294967295"])
                .unwrap_or(false)
        })
        .unwrap_or(false);
    euid_is_0 && initial_user_ns
}

/// Network interfaces of the current network namespace (from `/proc/self/net/dev`).
pub fn interfaces() -> Result<Vec<String>> {
    let dev =
        fs::read_to_string("/proc/self/net/dev").map_err(|e| err(format!("cannot read /proc/self/net/dev: {e}")))?;
    Ok(dev
        .lines()
        .skip(2)
        .filter_map(|l| l.split_once(':').map(|(name, _)| name.trim().to_string()))
        .collect())
}

/// True when this process's network namespace has no interface but loopback, as inside a
/// fresh `unshare --net`.
pub fn is_isolated() -> bool {
    interfaces().map(|ifs| ifs.iter().all(|i| i == "lo")).unwrap_or(false)
}

/// Errors unless this process runs in an isolated network namespace.
pub fn ensure_isolated() -> Result<()> {
    if is_isolated() {
        return Ok(());
    }
    let ifs = interfaces().unwrap_or_default().join(", ");
    Err(err(format!(
        "refusing to build or drive the NAT lab from a network namespace with interfaces \
         ({ifs}): it must run inside `unshare --net` (a namespace with only loopback). \
         `cargo xtask lab ...` and `cargo xtask test` arrange that themselves"
    )))
}

/// True when this process runs inside a lab node's namespace (`/run/netns/PREFIX-NODE`).
pub fn in_lab_node() -> bool {
    let Ok(me) = fs::metadata("/proc/self/ns/net") else {
        return false;
    };
    let Ok(entries) = fs::read_dir("/run/netns") else {
        return false;
    };
    entries.filter_map(|e| e.ok()).any(|e| {
        let name = e.file_name().to_string_lossy().to_string();
        netns::split_ns_name(&name).is_some()
            && fs::metadata(e.path())
                .map(|m| m.dev() == me.dev() && m.ino() == me.ino())
                .unwrap_or(false)
    })
}

/// Errors unless this process runs inside a lab node (used by the helper tools).
pub fn ensure_lab_node(tool: &str) -> Result<()> {
    if in_lab_node() {
        Ok(())
    } else {
        Err(err(format!(
            "`{tool}` only runs inside a lab node (the lab starts it with `ip netns exec`)"
        )))
    }
}

/// `program args...` inside a fresh network namespace with loopback up: `unshare --net`
/// (plus `--user --map-root-user` when `as_user` is set, for users who are not root).
pub fn isolated_command<S: AsRef<OsStr>>(program: &OsStr, args: &[S], as_user: bool) -> Command {
    let mut cmd = Command::new("unshare");
    if as_user {
        cmd.args(["--user", "--map-root-user"]);
    }
    cmd.args(["--net", "--", "sh", "-c", r#"ip link set dev lo up && exec "$0" "$@""#])
        .arg(program)
        .args(args)
        .env(ISOLATED_ENV, "1");
    cmd
}

/// True when an unprivileged user can make an isolated namespace (user namespaces enabled).
pub fn user_namespaces_work() -> bool {
    Command::new("unshare")
        .args(["--user", "--map-root-user", "--net", "--", "true"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}
