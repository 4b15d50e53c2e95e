//! `natt punch --turn`: the relay's flags and password, checked before anything is sent.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

use std::process::Command;

const NATT: &str = env!("CARGO_BIN_EXE_natt");

/// `natt punch --udp ARGS` with `password` in `NATT_TURN_PASSWORD` (or none): its stderr,
/// asserting that it failed with one line.
fn refused(args: &[&str], password: Option<&str>) -> String {
    let mut cmd = Command::new(NATT);
    cmd.args([
        "punch",
        "--udp",
        "--no-upnp",
        "--no-pcp",
        "--token-out",
        "-",
        "--peer-token",
        "-",
    ])
    .args(args)
    .env_remove("NATT_TURN_PASSWORD");
    if let Some(p) = password {
        cmd.env("NATT_TURN_PASSWORD", p);
    }
    let out = cmd.output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success(), "{args:?} succeeded");
    assert!(out.stdout.is_empty(), "{args:?} wrote a token: {:?}", out.stdout);
    assert_eq!(stderr.lines().count(), 1, "{args:?}: {stderr}");
    stderr
}

#[test]
fn the_relay_needs_a_user_a_password_and_an_address() {
    let e = refused(&["--turn", "turn:203.0.113.30", "--turn-user", "natt"], None);
    assert!(e.contains("NATT_TURN_PASSWORD"), "{e}");
    let e = refused(
        &["--turn", "turn:relay.example.org", "--turn-user", "natt"],
        Some("s3cret-Zq"),
    );
    assert!(e.contains("by IP address"), "{e}");
    let e = refused(
        &["--turn", "stun:203.0.113.30", "--turn-user", "natt"],
        Some("s3cret-Zq"),
    );
    assert!(e.contains("not a TURN URI"), "{e}");
    let e = refused(
        &["--turn", "turn:203.0.113.30?transport=sctp", "--turn-user", "natt"],
        Some("s3cret-Zq"),
    );
    assert!(!e.contains("s3cret-Zq"), "the password is never shown: {e}");
    // --turn-user alone is a usage error.
    let out = Command::new(NATT)
        .args([
            "punch",
            "--udp",
            "--turn-user",
            "natt",
            "--token-out",
            "-",
            "--peer-token",
            "-",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
}
