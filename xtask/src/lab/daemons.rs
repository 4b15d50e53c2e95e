//! Daemons inside lab nodes: coturn (STUN, RFC 5780) and a second coturn as TURN relay on
//! `inet`, miniupnpd (UPnP IGD, NAT-PMP,
//! PCP) on routers, and the lab's own helper tools; starting them detached, stopping them by pid.
//!
//! Every daemon is started with `setsid ip netns exec NS ...`, stdin closed, stdout and stderr
//! to `STATE/NAME.log`, its pid in `STATE/pids/NAME`. Rust opens files close-on-exec, so no
//! daemon inherits a lock or pipe. `down` finds daemons through `ip netns pids` and kills them
//! by pid; an orphan that init has not reaped yet (a zombie) counts as gone.

use std::ffi::OsStr;
use std::fs::{self, File};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use super::netns;
use super::topology::{
    RouterPlan, STUN_PORT, STUN1, STUN1_6, STUN2, STUN2_6, TURN_IP, TURN_PASSWORD, TURN_PORT, TURN_REALM, TURN_USER,
};
use super::{Result, err};

/// Starts `program args...` detached inside namespace `ns`, logging to `dir/NAME.log`.
pub fn spawn<S: AsRef<OsStr>>(
    dir: &Path,
    name: &str,
    ns: &str,
    program: impl AsRef<OsStr>,
    args: &[S],
) -> Result<Child> {
    let log_path = dir.join(format!("{name}.log"));
    let log = File::create(&log_path).map_err(|e| err(format!("cannot create {}: {e}", log_path.display())))?;
    let log2 = log.try_clone()?;
    let mut cmd = Command::new("setsid");
    cmd.args(["ip", "netns", "exec", ns])
        .arg(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(log2);
    let child = cmd
        .spawn()
        .map_err(|e| err(format!("cannot start {name} (`{}`): {e}", netns::describe(&cmd))))?;
    let pids = dir.join("pids");
    fs::create_dir_all(&pids)?;
    fs::write(pids.join(name), format!("{}\n", child.id()))?;
    Ok(child)
}

/// The pid recorded for daemon `name`, if any.
pub fn recorded_pid(dir: &Path, name: &str) -> Option<u32> {
    fs::read_to_string(dir.join("pids").join(name))
        .ok()
        .and_then(|s| s.trim().parse().ok())
}

/// True while process `pid` exists and is not a zombie.
pub fn is_running(pid: u32) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state is the first field after the parenthesised command name.
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state != "Z" && state != "X"),
        Err(_) => false,
    }
}

/// Stops processes: SIGTERM, up to 2 s for them to go, then SIGKILL.
pub fn stop(pids: &[u32]) {
    let alive = |pids: &[u32]| -> Vec<u32> { pids.iter().copied().filter(|p| is_running(*p)).collect() };
    let mut left = alive(pids);
    if left.is_empty() {
        return;
    }
    signal("TERM", &left);
    let end = Instant::now() + Duration::from_secs(2);
    while !left.is_empty() && Instant::now() < end {
        thread::sleep(Duration::from_millis(20));
        left = alive(&left);
    }
    if !left.is_empty() {
        signal("KILL", &left);
        let end = Instant::now() + Duration::from_secs(2);
        while !left.is_empty() && Instant::now() < end {
            thread::sleep(Duration::from_millis(20));
            left = alive(&left);
        }
    }
}

fn signal(sig: &str, pids: &[u32]) {
    let _ = Command::new("kill")
        .args(["-s", sig])
        .args(pids.iter().map(u32::to_string))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

/// coturn's arguments: STUN only, on both STUN addresses (RFC 5780 CHANGE-REQUEST works only
/// with two), with an empty config file (Debian's `/etc/turnserver.conf` says `no-rfc5780`).
pub fn coturn_args(dir: &Path) -> Result<Vec<String>> {
    stun_only_args(dir, "coturn", [STUN1.to_string(), STUN2.to_string()])
}

/// The TURN relay's daemon name (its output in `STATE/turn.log`, coturn's own log in
/// [`TURN_LOG`]).
pub const TURN_DAEMON: &str = "turn";
/// coturn's own log of the TURN relay, in the state directory: verbose (`-v`), one line per
/// request, `new, realm=<R>, username=<U>` per session and `closed (2nd stage), user <U> ...
/// reason: ...` when an allocation ends.
pub const TURN_LOG: &str = "turn.turnlog";

/// The TURN relay's arguments: a second coturn on [`TURN_IP`] (UDP and TCP, no TLS), long-term
/// credentials for one user in one realm, relayed addresses on the same address, a verbose log;
/// `extra` goes last (a test's `--user-quota N`, say).
pub fn turn_args(dir: &Path, extra: &[&str]) -> Result<Vec<String>> {
    let conf = dir.join("coturn-empty.conf");
    fs::write(&conf, "")?;
    let path = |name: &str| dir.join(name).display().to_string();
    let mut args: Vec<String> = vec![
        "-c".into(),
        conf.display().to_string(),
        "-L".into(),
        TURN_IP.to_string(),
        "--relay-ip".into(),
        TURN_IP.to_string(),
        "--listening-port".into(),
        TURN_PORT.to_string(),
        "--lt-cred-mech".into(),
        "--user".into(),
        format!("{TURN_USER}:{TURN_PASSWORD}"),
        "--realm".into(),
        TURN_REALM.into(),
        "--no-cli".into(),
        "--no-tls".into(),
        "--no-dtls".into(),
        "--pidfile".into(),
        path("turn.pidfile"),
        // Its own user database, not the system's default one.
        "--userdb".into(),
        path("turn.sqlite"),
        "-v".into(),
        "--simple-log".into(),
        "-l".into(),
        path(TURN_LOG),
    ];
    args.extend(extra.iter().map(|a| (*a).to_string()));
    Ok(args)
}

/// The IPv6 coturn's arguments (a lab with IPv6): STUN only, on the two IPv6 STUN addresses
/// (RFC 5780), beside the IPv4 one on the same port.
pub fn coturn6_args(dir: &Path) -> Result<Vec<String>> {
    stun_only_args(dir, "coturn6", [STUN1_6.to_string(), STUN2_6.to_string()])
}

/// A STUN-only coturn (no TURN, CLI, TLS or DTLS) on the two addresses `listen` at
/// [`STUN_PORT`], with an empty config file `NAME-empty.conf`, its pid file and log
/// (`NAME.pidfile`, `NAME.turnlog`) in `dir`.
fn stun_only_args(dir: &Path, name: &str, listen: [String; 2]) -> Result<Vec<String>> {
    let conf = dir.join(format!("{name}-empty.conf"));
    fs::write(&conf, "")?;
    let path = |file: &str| dir.join(format!("{name}.{file}")).display().to_string();
    let [first, second] = listen;
    Ok(vec![
        "-c".into(),
        conf.display().to_string(),
        "--stun-only".into(),
        "--no-cli".into(),
        "--no-tls".into(),
        "--no-dtls".into(),
        "-L".into(),
        first,
        "-L".into(),
        second,
        "--listening-port".into(),
        STUN_PORT.to_string(),
        "--pidfile".into(),
        path("pidfile"),
        "--simple-log".into(),
        "-l".into(),
        path("turnlog"),
    ])
}

/// miniupnpd-iptables drives LEGACY iptables (libiptc): its chains, for
/// `iptables-legacy-restore --noflush`. (Debian's `iptables_init.sh` is broken.)
pub const MINIUPNPD_CHAINS: &str = "\
*nat
:MINIUPNPD - [0:0]
:MINIUPNPD-POSTROUTING - [0:0]
-I PREROUTING -i wan -j MINIUPNPD
-I POSTROUTING -o wan -j MINIUPNPD-POSTROUTING
COMMIT
*filter
:MINIUPNPD - [0:0]
-I FORWARD -i wan ! -o wan -j MINIUPNPD
COMMIT
*mangle
:MINIUPNPD - [0:0]
-I PREROUTING -i wan -j MINIUPNPD
COMMIT
";

/// miniupnpd's config for router `r`. Its WAN address is in a reserved range, so it maps only
/// after proving by STUN (against coturn) that it is not behind a restrictive NAT.
pub fn miniupnpd_conf(dir: &Path, r: &RouterPlan) -> String {
    format!(
        "ext_ifname=wan
listening_ip=lan
http_port=5000
enable_natpmp=yes
enable_upnp=yes
secure_mode=yes
system_uptime=yes
lease_file={leases}
uuid=3d3cec3a-8cf0-11e0-98ee-0000000000{n:02}
friendly_name=natt lab {name}
ext_perform_stun=yes
ext_stun_host={STUN1}
ext_stun_port={STUN_PORT}
allow 1024-65535 {lan}/24 1024-65535
deny 0-65535 0.0.0.0/0 0-65535
{v6}",
        leases = dir.join(format!("miniupnpd-{}.leases", r.name)).display(),
        n = r.n,
        name = r.name,
        lan = r.lan_net,
        v6 = miniupnpd_conf6(r),
    )
}

/// miniupnpd's IPv6 lines for a dual-stack router: it listens on IPv6 too (UPnP IGD:2 with
/// WANIPv6FirewallControl, PCP), and writes pinholes into the legacy ip6tables chain
/// `MINIUPNPD` ([`super::nat::router_rules6`]). `ipv6_listening_ip=::`, not the LAN's IPv6
/// address: miniupnpd 2.3.1 binds its one HTTP socket to that address, which leaves no IPv4
/// HTTP listener (IPv4 UPnP refused); with `::` the socket is dual-stack on the LAN interface,
/// and PCP listens on both families.
pub fn miniupnpd_conf6(r: &RouterPlan) -> String {
    if r.v6.is_some() {
        "ipv6_listening_ip=::\nipv6_disable=no\nforce_igd_desc_v1=no\n".to_string()
    } else {
        String::new()
    }
}

/// Starts miniupnpd on router `r` (namespace `ns`): legacy chains, config, daemon.
pub fn start_miniupnpd(dir: &Path, ns: &str, r: &RouterPlan) -> Result<Child> {
    netns::run_with_input(
        netns::exec_in(ns, "iptables-legacy-restore").arg("--noflush"),
        Some(MINIUPNPD_CHAINS),
    )?;
    let conf = dir.join(format!("miniupnpd-{}.conf", r.name));
    fs::write(&conf, miniupnpd_conf(dir, r))?;
    let pidfile = dir.join(format!("miniupnpd-{}.pidfile", r.name));
    let args = [
        "-f".to_string(),
        conf.display().to_string(),
        "-P".to_string(),
        pidfile.display().to_string(),
        "-d".to_string(),
    ];
    spawn(dir, &format!("miniupnpd-{}", r.name), ns, "miniupnpd", &args)
}

/// What miniupnpd's log says about port forwarding: `enabled`, `disabled` (its STUN test found
/// a restrictive NAT in front of it) or `starting`.
pub fn upnp_verdict(log: &str) -> &'static str {
    if log.contains("Port forwarding is now enabled") || log.contains("Port forwarding is enabled") {
        "enabled"
    } else if log.contains("Port forwarding is now disabled")
        || log.contains("Port forwarding is impossible")
        || log.contains("STUN failed")
    {
        "disabled"
    } else {
        "starting"
    }
}

/// True once miniupnpd listens for HTTP and has decided about port forwarding.
pub fn upnp_ready(log: &str) -> bool {
    log.contains("HTTP listening") && upnp_verdict(log) != "starting"
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lab::topology::Topology;

    #[test]
    fn miniupnpd_config() {
        let plan = Topology::parse("upnp").unwrap().plan().unwrap();
        let conf = miniupnpd_conf(Path::new("/tmp/x"), plan.router("r1").unwrap());
        assert!(conf.contains("ext_ifname=wan\nlistening_ip=lan\n"));
        assert!(conf.contains("uuid=3d3cec3a-8cf0-11e0-98ee-000000000001\n"));
        assert!(conf.contains("ext_stun_host=203.0.113.10\next_stun_port=3478\n"));
        assert!(conf.contains("allow 1024-65535 192.168.1.0/24 1024-65535\n"));
        assert!(conf.contains("lease_file=/tmp/x/miniupnpd-r1.leases\n"));
        assert!(!conf.contains("ipv6"));
        let plan = Topology::parse("r1=prc,v6,upnp").unwrap().plan().unwrap();
        let conf = miniupnpd_conf(Path::new("/tmp/x"), plan.router("r1").unwrap());
        assert!(conf.contains("ipv6_listening_ip=::\nipv6_disable=no\nforce_igd_desc_v1=no\n"));
    }

    #[test]
    fn verdicts() {
        assert_eq!(upnp_verdict("..."), "starting");
        assert_eq!(upnp_verdict("x\nPort forwarding is now enabled\n"), "enabled");
        assert_eq!(upnp_verdict("STUN: ... Port forwarding is now disabled"), "disabled");
        assert!(!upnp_ready("Port forwarding is now enabled"));
        assert!(upnp_ready(
            "HTTP listening on port 5000\nPort forwarding is now enabled"
        ));
    }

    #[test]
    fn own_process_is_running() {
        assert!(is_running(std::process::id()));
        assert!(!is_running(u32::MAX));
    }
}
