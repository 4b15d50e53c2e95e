//! Hard NATs through the NAT lab: `natt punch --udp` between a host behind a symmetric NAT
//! (Linux `MASQUERADE --random-fully`: a random port per destination) and one behind a
//! port-restricted NAT, which the ordinary punch cannot join, connects directly with the
//! birthday method (`natt_punch::birthday`): plain, behind a carrier-grade NAT too, and with
//! 10 % loss on both WAN links; each pair carries a line both ways. Two symmetric NATs are not
//! brute-forced: both sides fail within the deadline, saying why.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::punching::*;
use common::*;
use natt_core::rendezvous::PubRendezvousInfo;
use xtask::lab::Lab;

/// A UDP punch between `a` and `b`; both sides, and whether each token says its mapping varies
/// by destination.
fn punch(lab: &Lab, a: &str, b: &str, extra: &[&str]) -> ((Side, bool), (Side, bool)) {
    let (ta, tb) = token_files(lab, "hardnat");
    let t0 = Instant::now();
    let ra = start(lab, a, "--udp", &ta, &tb, extra);
    let rb = start(lab, b, "--udp", &tb, &ta, extra);
    let (sa, sb) = finish(ra, rb, (a, b), t0);
    ((sa, varies(&ta)), (sb, varies(&tb)))
}

/// What the token in `file` says of its side's mapping.
fn varies(file: &Path) -> bool {
    let text = std::fs::read_to_string(file).unwrap();
    PubRendezvousInfo::from_token(&text).unwrap().mapping_varies
}

/// The hard side `hard` and the easy side `easy` (started first when `easy_first`) connect
/// directly (each sees the other at its public IP), and a line goes each way.
fn assert_birthday_connects(lab: &Lab, hard: &str, easy: &str, easy_first: bool, extra: &[&str]) {
    let ((sh, h_varies), (se, e_varies)) = if easy_first {
        let (e, h) = punch(lab, easy, hard, extra);
        (h, e)
    } else {
        punch(lab, hard, easy, extra)
    };
    println!("{hard} <-> {easy}: {:?} / {:?}", sh.json, se.json);
    assert!(sh.ok && se.ok, "{hard} <-> {easy} failed:\n{sh:#?}\n{se:#?}");
    assert!(h_varies, "{hard}'s token says its mapping varies by destination");
    assert!(!e_varies, "{easy}'s token says its mapping does not vary");
    let public = |h: &str| ip(lab, &format!("{}_PUBLIC_IP", h.to_uppercase()));
    assert_eq!(sh.peer().ip(), public(easy));
    assert_eq!(se.peer().ip(), public(hard));
    assert_hellos(&sh, &se, (hard, easy), "birthday");
}

#[test]
fn hardnat_symmetric_to_port_restricted() {
    let Some(lab) = lab("hardnat_symmetric_to_port_restricted", "thsp", "r1=sym r2=prc p1") else {
        return;
    };
    assert_birthday_connects(&lab, "h1", "h2", false, &[]);
    // Once more with the easy side started first.
    assert_birthday_connects(&lab, "h1", "h2", true, &[]);
}

#[test]
fn hardnat_symmetric_behind_cgn_to_port_restricted() {
    let Some(lab) = lab(
        "hardnat_symmetric_behind_cgn_to_port_restricted",
        "thcgn",
        "r1=prc,cgn,hosts=0 r2=sym,via=r1 r3=prc p1",
    ) else {
        return;
    };
    assert_birthday_connects(&lab, "h2", "h3", false, &[]);
}

#[test]
fn hardnat_symmetric_to_port_restricted_with_10pct_loss() {
    let Some(lab) = lab(
        "hardnat_symmetric_to_port_restricted_with_10pct_loss",
        "thloss",
        "r1=sym,loss=10 r2=prc,loss=10 p1",
    ) else {
        return;
    };
    assert_birthday_connects(&lab, "h1", "h2", false, &["--timeout", "15"]);
}

#[test]
fn hardnat_symmetric_to_symmetric_fails_within_the_deadline_saying_why() {
    let Some(lab) = lab(
        "hardnat_symmetric_to_symmetric_fails_within_the_deadline_saying_why",
        "thss",
        "r1=sym r2=sym p1",
    ) else {
        return;
    };
    let t0 = Instant::now();
    let ((sa, a_varies), (sb, b_varies)) = punch(&lab, "h1", "h2", &["--timeout", "10"]);
    assert!(a_varies && b_varies);
    for s in [&sa, &sb] {
        assert!(!s.ok, "two symmetric NATs connected: {s:?}");
        assert_eq!(s.stderr.lines().count(), 1, "one line on failure: {}", s.stderr);
        assert!(
            s.stderr.contains("both sides are behind symmetric NATs") && s.stderr.contains("relay"),
            "{}",
            s.stderr
        );
    }
    // Mapping (3 s at most) and the 10 s deadline, with room to spare.
    assert!(
        t0.elapsed() < Duration::from_secs(3 + 10 + 5),
        "took {:?}",
        t0.elapsed()
    );
}
