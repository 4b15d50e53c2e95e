//! The Debian packages the lab needs, and installing the missing ones.
//!
//! Installing runs in the machine's own namespace (apt needs the package registry), before any
//! lab command isolates itself. While apt runs, a temporary `/usr/sbin/policy-rc.d` that exits
//! 101 keeps the packages' daemons (coturn, miniupnpd) from starting on the machine.

use std::env;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use super::isolation::is_root;
use super::{Result, err};

/// (command, Debian package, needed by the lab itself).
pub const TOOLS: &[(&str, &str, bool)] = &[
    ("ip", "iproute2", true),
    ("iptables", "iptables", true),
    ("iptables-restore", "iptables", true),
    ("iptables-legacy-restore", "iptables", true),
    ("nft", "nftables", true),
    ("turnserver", "coturn", true),
    ("miniupnpd", "miniupnpd-iptables", true),
    ("setsid", "util-linux", true),
    ("unshare", "util-linux", true),
    ("kill", "procps", true),
    ("sysctl", "procps", true),
    ("conntrack", "conntrack", false),
    ("upnpc", "miniupnpc", false),
    ("natpmpc", "natpmpc", false),
    ("stun", "stun-client", false),
    ("tcpdump", "tcpdump", false),
];

/// Finds `program` on PATH or in the sbin directories (absent from many users' PATH).
pub fn which(program: &str) -> Option<PathBuf> {
    let path = env::var_os("PATH").unwrap_or_default();
    env::split_paths(&path)
        .chain(["/usr/local/sbin", "/usr/sbin", "/sbin"].map(PathBuf::from))
        .map(|d| d.join(program))
        .find(|p| p.is_file())
}

/// Packages with a missing command (`only_required`: just those the lab itself runs).
pub fn missing_packages(only_required: bool) -> Vec<&'static str> {
    let mut pkgs: Vec<&str> = TOOLS
        .iter()
        .filter(|(_, _, required)| *required || !only_required)
        .filter(|(cmd, _, _)| which(cmd).is_none())
        .map(|(_, pkg, _)| *pkg)
        .collect();
    pkgs.sort_unstable();
    pkgs.dedup();
    pkgs
}

/// Errors, naming the packages, when a command the lab runs is missing.
pub fn check_tools() -> Result<()> {
    let missing = missing_packages(true);
    if missing.is_empty() {
        Ok(())
    } else {
        Err(err(format!(
            "the NAT lab needs these Debian packages: {} (install them with \
             `cargo xtask lab install` as root)",
            missing.join(" ")
        )))
    }
}

/// Installs every missing package with apt-get (root only), keeping daemons from starting.
pub fn install_missing() -> Result<()> {
    let missing = missing_packages(false);
    if missing.is_empty() {
        return Ok(());
    }
    if !is_root() {
        return Err(err(format!(
            "the NAT lab needs root; missing packages: {}",
            missing.join(" ")
        )));
    }
    eprintln!("lab: installing {}", missing.join(" "));
    let policy = Path::new("/usr/sbin/policy-rc.d");
    let ours = !policy.exists();
    if ours {
        fs::write(
            policy,
            "#!/bin/sh\n# natt lab: no daemon starts during the install\nexit 101\n",
        )?;
        fs::set_permissions(policy, fs::Permissions::from_mode(0o755))?;
    }
    let result = apt(&["update", "-qq"]).and_then(|()| {
        let mut args = vec!["install", "-y", "-qq"];
        args.extend(missing.iter().copied());
        apt(&args)
    });
    if ours {
        let _ = fs::remove_file(policy);
    }
    result?;
    let still = missing_packages(false);
    if still.is_empty() {
        Ok(())
    } else {
        Err(err(format!("still missing after apt-get install: {}", still.join(" "))))
    }
}

fn apt(args: &[&str]) -> Result<()> {
    let status = Command::new("apt-get")
        .args(args)
        .env("DEBIAN_FRONTEND", "noninteractive")
        .status()
        .map_err(|e| err(format!("cannot run apt-get: {e}")))?;
    if status.success() {
        Ok(())
    } else {
        Err(err(format!("apt-get {} failed ({status})", args.join(" "))))
    }
}
