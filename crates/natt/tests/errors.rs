//! natt's errors read as sentences wherever they are printed: with `Display`, and with `Debug`
//! as `fn main() -> Result<(), Box<dyn Error>>` prints the error it returns (the README's
//! pattern), where a derived `Debug` printed `Error: Check` or `Error: TimedOut("...")`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

use std::error::Error as StdError;

/// What `main` prints when it returns `e` through `?` into a `Box<dyn Error>`.
fn printed_by_main(e: impl StdError + 'static) -> String {
    let boxed: Box<dyn StdError> = Box::new(e);
    format!("Error: {boxed:?}")
}

/// `e` prints `Error: ` and its sentence, which starts with `start`.
fn assert_reads_well(e: impl StdError + 'static, start: &str) {
    let sentence = e.to_string();
    assert!(sentence.starts_with(start), "{sentence:?} should start with {start:?}");
    assert_eq!(printed_by_main(e), format!("Error: {sentence}"));
}

#[test]
fn token_errors_print_their_sentence() {
    let garbage = "hello".parse::<natt::PubRendezvousInfo>().unwrap_err();
    assert_reads_well(garbage, "not a natt token (expected it to start with \"natt2.\")");

    let endpoints = vec![natt::MappedSocketAddr::new(
        "203.0.113.5:4000".parse().unwrap(),
        true,
        "stun",
    )];
    let token = natt::gen_rendezvous_info(endpoints).1.to_string();
    let cut = &token[..token.len() - 3];
    let damaged = cut.parse::<natt::PubRendezvousInfo>().unwrap_err();
    assert!(matches!(damaged, natt::TokenError::Check | natt::TokenError::Encoding));
    assert_reads_well(damaged, "token is damaged");
    let old = token.replacen("natt2.", "natt1.", 1);
    assert_reads_well(
        old.parse::<natt::PubRendezvousInfo>().unwrap_err(),
        "this token was made by an older natt",
    );
}

#[test]
fn mapping_errors_print_their_sentence() {
    let e = natt::Error::from(std::io::Error::new(std::io::ErrorKind::AddrInUse, "address in use"));
    assert_reads_well(e, "socket error: address in use");
    assert_reads_well(
        natt::TechniqueError::TimedOut("no answer from 203.0.113.10:3478".into()),
        "timed out: no answer from 203.0.113.10:3478",
    );
}

#[cfg(feature = "punch")]
#[test]
fn punch_errors_print_their_sentence() {
    use std::net::UdpSocket;
    use std::time::{Duration, Instant};

    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    let ours = vec![natt::MappedSocketAddr::new(
        socket.local_addr().unwrap(),
        false,
        "local",
    )];
    let (our_priv, our_pub) = natt::gen_rendezvous_info(ours.clone());
    let soon = Instant::now() + Duration::from_millis(100);
    let own = natt::PunchedUdpSocket::punch_hole(socket.try_clone().unwrap(), our_priv.clone(), our_pub, soon);
    assert_reads_well(own.unwrap_err(), "the peer's rendezvous info is our own");

    // A peer that never answers, on loopback only.
    let silent = UdpSocket::bind("127.0.0.1:0").unwrap();
    let theirs = vec![natt::MappedSocketAddr::new(
        silent.local_addr().unwrap(),
        false,
        "local",
    )];
    let (_, their_pub) = natt::gen_rendezvous_info(theirs);
    let timed_out = natt::PunchedUdpSocket::punch_hole(socket, our_priv, their_pub, soon).unwrap_err();
    assert!(matches!(timed_out, natt::PunchError::TimedOut(_)), "{timed_out}");
    assert_reads_well(timed_out, "no path to the peer before the deadline");
}
