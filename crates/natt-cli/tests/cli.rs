//! The `natt` binary on loopback: the command-line contract scripts rely on.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

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
    let mut child = Command::new(NATT)
        .args(["serve", "--listen", &listen])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    assert_eq!(
        lines.next().unwrap().unwrap(),
        format!("serving simple udp {listen}")
    );
    assert_eq!(
        lines.next().unwrap().unwrap(),
        format!("serving simple tcp {listen}")
    );
    Serve(child, listen)
}

fn map_json(args: &[&str]) -> serde_json::Value {
    let out = Command::new(NATT).arg("map").args(args).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    assert_eq!(
        text.lines().count(),
        1,
        "one JSON object on one line: {text}"
    );
    serde_json::from_str(&text).unwrap()
}

#[test]
fn map_json_contract_udp_and_tcp() {
    let server = serve();
    for proto in ["--udp", "--tcp"] {
        let v = map_json(&[proto, "--simple", &server.1, "--no-upnp", "--json"]);
        let endpoints = v["endpoints"].as_array().unwrap();
        assert!(!endpoints.is_empty());
        for e in endpoints {
            assert!(
                e["addr"]
                    .as_str()
                    .unwrap()
                    .parse::<std::net::SocketAddr>()
                    .is_ok()
            );
            assert!(e["nat_restricted"].is_boolean());
            assert!(["local", "simple"].contains(&e["technique"].as_str().unwrap()));
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
    let v = map_json(&["--udp", "--port", &port.to_string(), "--no-upnp", "--json"]);
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
        &["map", "--udp", "--simple", "not-an-address"],
        &["map", "--udp", "--timeout", "-1", "--no-upnp"],
        &["serve", "--listen", "203.0.113.99:1"],
    ] {
        let out = Command::new(NATT).args(args).output().unwrap();
        assert!(!out.status.success(), "{args:?} succeeded");
        assert!(!out.stderr.is_empty(), "{args:?} printed no error");
    }
}
