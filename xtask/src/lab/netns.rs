//! Network namespaces and the commands run in them.
//!
//! Every lab namespace is called `PREFIX-NODE` (`nl-inet`, `nl-r1`, `nl-h1b`), so labs with
//! different prefixes coexist and `down` finds exactly its own. Commands are plain
//! `std::process::Command`s of `ip`, `iptables`, `nft` and `sysctl`; a failure becomes an error
//! that quotes the command line and its stderr.

use std::fmt::Write as _;
use std::io::Write as _;
use std::process::{Command, Output, Stdio};

use super::{Result, err};

/// Checks a lab prefix: a lowercase letter, then up to 7 lowercase letters or digits.
pub fn check_prefix(prefix: &str) -> Result<()> {
    let mut chars = prefix.chars();
    let ok = chars.next().is_some_and(|c| c.is_ascii_lowercase())
        && prefix.len() <= 8
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    if ok {
        Ok(())
    } else {
        Err(err(format!(
            "bad lab prefix '{prefix}': a lowercase letter, then up to 7 lowercase letters or digits"
        )))
    }
}

/// The namespace of `node` in the lab `prefix`.
pub fn ns_name(prefix: &str, node: &str) -> String {
    format!("{prefix}-{node}")
}

/// Splits a namespace name into (prefix, node) if it looks like a lab namespace.
pub fn split_ns_name(name: &str) -> Option<(&str, &str)> {
    let (prefix, node) = name.split_once('-')?;
    (check_prefix(prefix).is_ok() && is_node_name(node)).then_some((prefix, node))
}

/// True for `inet`, `rN`, `hN`, `hNb`, `hNc` and `pN`.
pub fn is_node_name(node: &str) -> bool {
    let digits = |s: &str| !s.is_empty() && s.chars().all(|c| c.is_ascii_digit());
    if node == "inet" {
        return true;
    }
    if let Some(rest) = node.strip_prefix('r').or_else(|| node.strip_prefix('p')) {
        return digits(rest);
    }
    if let Some(rest) = node.strip_prefix('h') {
        let rest = rest
            .strip_suffix('b')
            .or_else(|| rest.strip_suffix('c'))
            .unwrap_or(rest);
        return digits(rest);
    }
    false
}

/// A command line as text, for error messages.
pub fn describe(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().to_string();
    for a in cmd.get_args() {
        let _ = write!(s, " {}", a.to_string_lossy());
    }
    s
}

/// Runs `cmd` to completion; returns its stdout, or an error quoting the command and stderr.
pub fn run(cmd: &mut Command) -> Result<String> {
    run_with_input(cmd, None)
}

/// Like [`run`], writing `input` to the command's stdin.
pub fn run_with_input(cmd: &mut Command, input: Option<&str>) -> Result<String> {
    cmd.stdin(if input.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd
        .spawn()
        .map_err(|e| err(format!("cannot run `{}`: {e}", describe(cmd))))?;
    if let (Some(text), Some(mut stdin)) = (input, child.stdin.take()) {
        stdin
            .write_all(text.as_bytes())
            .map_err(|e| err(format!("cannot feed `{}`: {e}", describe(cmd))))?;
    }
    let out = child
        .wait_with_output()
        .map_err(|e| err(format!("`{}` failed: {e}", describe(cmd))))?;
    check_output(cmd, &out)?;
    Ok(String::from_utf8_lossy(&out.stdout).to_string())
}

/// Turns an unsuccessful [`Output`] into an error quoting the command, its status and stderr.
pub fn check_output(cmd: &Command, out: &Output) -> Result<()> {
    if out.status.success() {
        return Ok(());
    }
    let mut text = String::from_utf8_lossy(&out.stderr).trim().to_string();
    if text.is_empty() {
        text = String::from_utf8_lossy(&out.stdout).trim().to_string();
    }
    Err(err(format!("`{}` failed ({}): {text}", describe(cmd), out.status)))
}

/// `ip -n NS ...`: the `ip` command acting on namespace `ns`.
pub fn ip(ns: &str) -> Command {
    let mut cmd = Command::new("ip");
    cmd.args(["-n", ns]);
    cmd
}

/// `ip netns exec NS PROGRAM`: a program running inside namespace `ns`.
pub fn exec_in(ns: &str, program: impl AsRef<std::ffi::OsStr>) -> Command {
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", ns]).arg(program);
    cmd
}

/// Runs an `ip -batch` script (one `ip` command per line) inside namespace `ns`.
pub fn ip_batch(ns: &str, script: &str) -> Result<()> {
    run_with_input(ip(ns).args(["-batch", "-"]), Some(script)).map(|_| ())
}

/// Creates namespace `ns` with loopback up, IP forwarding on or off, ICMP errors not rate
/// limited, and bridge netfilter off (br_netfilter would run a router's iptables and conntrack
/// on frames switched between its LAN ports, which breaks hairpinning; a home router's switch
/// does no such thing).
///
/// The kernel's default ICMP rate limit (a burst of 6, then one a second per host) would make
/// quick runs of natt against a router without a PCP server wait for their deadline instead of
/// getting the usual "port unreachable" at once: tests would depend on how fast they ran.
pub fn create(ns: &str, forwarding: bool) -> Result<()> {
    run(Command::new("ip").args(["netns", "add", ns]))?;
    ip_batch(ns, "link set dev lo up\n")?;
    let fwd = if forwarding { "1" } else { "0" };
    run(exec_in(ns, "sysctl").args([
        "-qw",
        &format!("net.ipv4.ip_forward={fwd}"),
        "net.ipv4.icmp_ratelimit=0",
    ]))?;
    // No IPv6 duplicate address detection on the lab's interfaces (their link-local addresses
    // would stay tentative for a second or two, and neighbour discovery with them).
    run(exec_in(ns, "sysctl").args([
        "-qw",
        "net.ipv6.conf.all.accept_dad=0",
        "net.ipv6.conf.default.accept_dad=0",
    ]))?;
    // Absent where br_netfilter is not loaded: nothing to turn off then.
    let _ = run(exec_in(ns, "sysctl").args([
        "-qw",
        "net.bridge.bridge-nf-call-iptables=0",
        "net.bridge.bridge-nf-call-ip6tables=0",
        "net.bridge.bridge-nf-call-arptables=0",
    ]));
    Ok(())
}

/// A veth pair created directly inside its two namespaces (`if_a` in `ns_a`, `if_b` in
/// `ns_b`), so that no end ever exists in the namespace that runs the command.
pub fn veth(ns_a: &str, if_a: &str, ns_b: &str, if_b: &str) -> Result<()> {
    run(Command::new("ip").args([
        "link", "add", if_a, "netns", ns_a, "type", "veth", "peer", "name", if_b, "netns", ns_b,
    ]))
    .map(|_| ())
}

/// Namespaces of the lab `prefix` that exist now.
pub fn list(prefix: &str) -> Result<Vec<String>> {
    let out = run(Command::new("ip").args(["netns", "list"]))?;
    Ok(out
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|name| split_ns_name(name).is_some_and(|(p, _)| p == prefix))
        .map(str::to_string)
        .collect())
}

/// Processes whose network namespace is `ns` (`ip netns pids`).
pub fn pids(ns: &str) -> Vec<u32> {
    run(Command::new("ip").args(["netns", "pids", ns]))
        .map(|out| out.split_whitespace().filter_map(|p| p.parse().ok()).collect())
        .unwrap_or_default()
}

/// Deletes namespace `ns`.
pub fn delete(ns: &str) -> Result<()> {
    run(Command::new("ip").args(["netns", "del", ns])).map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert_eq!(ns_name("nl", "h1b"), "nl-h1b");
        assert_eq!(split_ns_name("nl-h1b"), Some(("nl", "h1b")));
        assert_eq!(split_ns_name("t3-inet"), Some(("t3", "inet")));
        assert_eq!(split_ns_name("nl-r12"), Some(("nl", "r12")));
        assert_eq!(split_ns_name("nl-x1"), None);
        assert_eq!(split_ns_name("nlr1"), None);
        assert_eq!(split_ns_name("nl-h"), None);
        assert_eq!(split_ns_name("Nl-r1"), None);
        assert!(check_prefix("nl").is_ok());
        assert!(check_prefix("abcdefgh").is_ok());
        assert!(check_prefix("abcdefghi").is_err());
        assert!(check_prefix("1a").is_err());
        assert!(check_prefix("a-b").is_err());
    }

    #[test]
    fn describe_quotes_the_command() {
        let mut cmd = ip("nl-r1");
        cmd.args(["addr", "show"]);
        assert_eq!(describe(&cmd), "ip -n nl-r1 addr show");
    }
}
