//! The `natt` binary on loopback: the command-line contract scripts rely on.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

const NATT: &str = env!("CARGO_BIN_EXE_natt");

struct Serve(Child, String);

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `natt serve` on an ephemeral loopback port and returns its UDP address.
fn serve() -> Serve {
    let port = std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let listen = format!("127.0.0.1:{port}");
    let child = Command::new(NATT)
        .args(["serve", "--listen", &listen])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    // The guard first, so the server is stopped even when an assertion below fails.
    let mut serve = Serve(child, listen.clone());
    let mut lines = BufReader::new(serve.0.stdout.take().unwrap()).lines();
    assert_eq!(
        lines.next().unwrap().unwrap(),
        format!("serving udp {listen} (simple, stun)")
    );
    assert_eq!(
        lines.next().unwrap().unwrap(),
        format!("serving tcp {listen} (simple, stun)")
    );
    serve
}

fn map_json(args: &[&str]) -> serde_json::Value {
    let out = Command::new(NATT).arg("map").args(args).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8(out.stdout).unwrap();
    assert_eq!(text.lines().count(), 1, "one JSON object on one line: {text}");
    serde_json::from_str(&text).unwrap()
}

#[test]
fn map_json_contract_udp_and_tcp() {
    let server = serve();
    for proto in ["--udp", "--tcp"] {
        let v = map_json(&[
            proto,
            "--simple",
            &server.1,
            "--stun",
            &server.1,
            "--no-upnp",
            "--no-pcp",
            "--json",
        ]);
        let endpoints = v["endpoints"].as_array().unwrap();
        assert!(!endpoints.is_empty());
        for e in endpoints {
            assert!(e["addr"].as_str().unwrap().parse::<std::net::SocketAddr>().is_ok());
            assert!(e["nat_restricted"].is_boolean());
            assert!(["local", "simple", "stun"].contains(&e["technique"].as_str().unwrap()));
        }
        assert!(v["elapsed_ms"].is_u64());
    }
}

#[test]
fn map_with_fixed_port() {
    let port = std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let v = map_json(&["--udp", "--port", &port.to_string(), "--no-upnp", "--no-pcp", "--json"]);
    let first = v["endpoints"][0]["addr"].as_str().unwrap();
    assert!(first.ends_with(&format!(":{port}")), "{first}");
}

#[test]
fn hold_ends_at_end_of_stdin() {
    let server = serve();
    let out = Command::new(NATT)
        .args([
            "map",
            "--udp",
            "--simple",
            &server.1,
            "--no-upnp",
            "--no-pcp",
            "--json",
            "--hold",
        ])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(out.status.success());
}

#[test]
fn errors_exit_non_zero_with_one_line() {
    for args in [
        &["map", "--udp", "--tcp"][..],
        &["map"],
        &["map", "--udp", "--simple", "not an address"],
        &["map", "--udp", "--stun", "stun.example.org:http"],
        &["map", "--udp", "--stun", "[2001:db8::1]:x"],
        &["map", "--udp", "--timeout", "-1", "--no-upnp"],
        &["serve", "--listen", "203.0.113.99:1"],
    ] {
        let out = Command::new(NATT).args(args).output().unwrap();
        assert!(!out.status.success(), "{args:?} succeeded");
        assert!(!out.stderr.is_empty(), "{args:?} printed no error");
    }
}

#[test]
fn servers_by_name() {
    let server = serve();
    let port = server.1.rsplit_once(':').unwrap().1;
    let by_name = format!("localhost:{port}");
    for proto in ["--udp", "--tcp"] {
        let v = map_json(&[
            proto,
            "--simple",
            &by_name,
            "--stun",
            &by_name,
            "--no-upnp",
            "--no-pcp",
            "--json",
        ]);
        let techniques: Vec<&str> = v["endpoints"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["technique"].as_str().unwrap())
            .collect();
        // On loopback the servers see a local address: credited to "local" or to them.
        assert!(!techniques.is_empty(), "{v}");
    }
    // The text form names each technique's failure: with localhost, none.
    let out = Command::new(NATT)
        .args([
            "map",
            "--udp",
            "--stun",
            &by_name,
            "--simple",
            &by_name,
            "--no-upnp",
            "--no-pcp",
        ])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success() && !text.contains("failed"), "{text}");
}

/// Run where no DNS server can be reached (the project's tests run in a network namespace
/// with only loopback): an unknown name fails its technique at once, naming the host.
#[test]
fn an_unknown_server_name_is_named_in_the_failure() {
    let t0 = std::time::Instant::now();
    let out = Command::new(NATT)
        .args([
            "map",
            "--udp",
            "--stun",
            "no-such-host.invalid",
            "--no-upnp",
            "--no-pcp",
            "--timeout",
            "2",
        ])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("# stun failed") && text.contains("no-such-host.invalid:3478"),
        "{text}"
    );
    assert!(t0.elapsed() < std::time::Duration::from_secs(4), "{:?}", t0.elapsed());
}

#[test]
fn help_names_the_default_ports() {
    let out = Command::new(NATT).args(["map", "--help"]).output().unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(help.contains("--stun <HOST[:PORT]>") && help.contains("3478"), "{help}");
    assert!(
        help.contains("--simple <HOST[:PORT]>") && help.contains("5483"),
        "{help}"
    );
    // Each command's help speaks of that command: only probe's --stun mentions RFC 5780, and
    // --port says what 0 means.
    for (cmd, probe) in [("map", false), ("punch", false), ("probe", true)] {
        let out = Command::new(NATT).args([cmd, "--help"]).output().unwrap();
        let help = String::from_utf8_lossy(&out.stdout);
        assert_eq!(help.contains("RFC 5780"), probe, "{cmd}: {help}");
        assert!(!help.contains("(default: any)"), "{cmd}: {help}");
    }
}

#[test]
fn probe_json_contract() {
    let server = serve();
    let out = Command::new(NATT)
        .args([
            "probe",
            "--stun",
            &server.1,
            "--simple",
            &server.1,
            "--no-upnp",
            "--no-pcp",
            "--json",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let behaviours = [
        "endpoint-independent",
        "address-dependent",
        "address-and-port-dependent",
        "unknown",
    ];
    assert!(v["external"].is_array());
    assert!(behaviours.contains(&v["mapping"].as_str().unwrap()));
    // One server address: no RFC 5780, so filtering cannot be told.
    assert_eq!(v["filtering"], "unknown");
    let techniques = v["techniques"].as_array().unwrap();
    let names: Vec<&str> = techniques.iter().map(|t| t["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["simple", "stun"]);
    for t in techniques {
        assert!(t["elapsed_ms"].is_u64() && t["endpoints"].is_array());
        assert!(t["error"].is_null(), "{t}");
    }
}

/// `natt punch` with no technique (no packet is sent) that writes its token to `token_out`
/// and gives up waiting for the peer's after half a second: its stderr.
fn punch_writing_token(token_out: &std::path::Path) -> String {
    let dir = token_out.parent().unwrap();
    let out = Command::new(NATT)
        .args([
            "punch",
            "--udp",
            "--no-upnp",
            "--no-pcp",
            "--timeout",
            "0.5",
            "--token-out",
        ])
        .arg(token_out)
        .arg("--peer-token")
        .arg(dir.join("no-peer-token"))
        .output()
        .unwrap();
    assert!(!out.status.success(), "punched without a peer");
    String::from_utf8_lossy(&out.stderr).to_string()
}

fn scratch(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("natt-cli-test-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Issue #18, finding 9: `--token-out FILE` is the owner's only (the token carries the
/// punch's secret), and a symbolic link planted there is refused, its target untouched.
#[test]
fn token_out_is_private_and_never_follows_a_symlink() {
    use std::os::unix::fs::PermissionsExt;
    let dir = scratch("token-out");
    let token = dir.join("token");
    let stderr = punch_writing_token(&token);
    assert!(stderr.contains("no peer token"), "{stderr}");
    let text = std::fs::read_to_string(&token).unwrap();
    assert!(text.starts_with("natt2.") && text.ends_with('\n'), "{text}");
    let mode = std::fs::metadata(&token).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);

    let victim = dir.join("victim");
    std::fs::write(&victim, "precious\n").unwrap();
    let link = dir.join("link");
    std::os::unix::fs::symlink(&victim, &link).unwrap();
    let stderr = punch_writing_token(&link);
    assert!(stderr.contains("symbolic link"), "{stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious\n");
    std::fs::remove_dir_all(&dir).unwrap();
}
