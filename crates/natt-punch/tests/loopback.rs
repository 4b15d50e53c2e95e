//! Hole punching between two sockets of this host, on loopback: both UDP and TCP complete with
//! the matching rendezvous information, and fail cleanly within the deadline without it.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

use std::io::{Read, Write};
use std::net::{SocketAddr, UdpSocket};
use std::thread;
use std::time::{Duration, Instant};

use natt_core::rendezvous::{PubRendezvousInfo, gen_rendezvous_info};
use natt_core::{MappedSocketAddr, MappedTcpSocket, MappingContext};
use natt_punch::{NoPath, PunchError, PunchedUdpSocket, is_punch_packet, tcp_punch_direct, tcp_punch_hole};

fn local(addr: SocketAddr) -> Vec<MappedSocketAddr> {
    vec![MappedSocketAddr::new(addr, false, "local")]
}

fn deadline(secs: u64) -> Instant {
    Instant::now() + Duration::from_secs(secs)
}

#[test]
fn udp_punch_on_loopback() {
    let (a, b) = (
        UdpSocket::bind("127.0.0.1:0").unwrap(),
        UdpSocket::bind("127.0.0.1:0").unwrap(),
    );
    let (a_addr, b_addr) = (a.local_addr().unwrap(), b.local_addr().unwrap());
    let (a_priv, a_pub) = gen_rendezvous_info(local(a_addr));
    let (b_priv, b_pub) = gen_rendezvous_info(local(b_addr));
    // The tokens travel as text.
    let a_pub: PubRendezvousInfo = a_pub.to_token().parse().unwrap();
    let tb = thread::spawn(move || PunchedUdpSocket::punch_hole(b, b_priv, a_pub, deadline(10)).unwrap());
    let pa = PunchedUdpSocket::punch_hole(a, a_priv, b_pub, deadline(10)).unwrap();
    let pb = tb.join().unwrap();
    assert_eq!(pa.peer_addr, b_addr);
    assert_eq!(pb.peer_addr, a_addr);
    pa.socket.send_to(b"ping", pa.peer_addr).unwrap();
    pb.socket.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut buf = [0u8; 64];
    loop {
        let (n, from) = pb.socket.recv_from(&mut buf).unwrap();
        if is_punch_packet(&buf[..n]) {
            continue; // a late punch packet
        }
        assert_eq!((&buf[..n], from), (&b"ping"[..], a_addr));
        break;
    }
}

/// Endpoints as servers would report them for a socket at `addr` (restricted, observed); two
/// ports make the token say the mapping varies by destination.
fn observed(addr: SocketAddr, other_port: Option<u16>) -> Vec<MappedSocketAddr> {
    let mut eps = vec![MappedSocketAddr::new(addr, true, "stun")];
    if let Some(p) = other_port {
        eps.push(MappedSocketAddr::new(SocketAddr::new(addr.ip(), p), true, "stun"));
    }
    eps
}

#[test]
fn udp_birthday_punch_returns_the_socket_that_met_the_peer() {
    let (a, b) = (
        UdpSocket::bind("127.0.0.1:0").unwrap(),
        UdpSocket::bind("127.0.0.1:0").unwrap(),
    );
    let (a_addr, b_addr) = (a.local_addr().unwrap(), b.local_addr().unwrap());
    // a's token says its mapping varies (it is the hard side, with 256 sockets); b's that it
    // filters (the easy side, spraying 127.0.0.1).
    let (a_priv, a_pub) = gen_rendezvous_info(observed(a_addr, Some(a_addr.port() ^ 0x5555)));
    let (b_priv, b_pub) = gen_rendezvous_info(observed(b_addr, None));
    assert!(a_pub.mapping_varies && !b_pub.mapping_varies);
    let a_pub: PubRendezvousInfo = a_pub.to_token().parse().unwrap();
    assert!(a_pub.mapping_varies, "the fact travels in the token");
    let tb = thread::spawn(move || PunchedUdpSocket::punch_hole(b, b_priv, a_pub, deadline(10)).unwrap());
    let pa = PunchedUdpSocket::punch_hole(a, a_priv, b_pub, deadline(10)).unwrap();
    let pb = tb.join().unwrap();
    assert_eq!(pa.peer_addr, b_addr);
    // b found the socket a returned, whichever of a's sockets it was.
    let a_won = pa.socket.local_addr().unwrap();
    assert_eq!(pb.peer_addr, a_won);
    // Data flows both ways on the returned sockets.
    pa.socket.send_to(b"ping", pa.peer_addr).unwrap();
    pb.socket.send_to(b"pong", pb.peer_addr).unwrap();
    for (s, want, from) in [(&pb.socket, b"ping", a_won), (&pa.socket, b"pong", b_addr)] {
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut buf = [0u8; 64];
        loop {
            let (n, got_from) = s.recv_from(&mut buf).unwrap();
            if is_punch_packet(&buf[..n]) {
                continue;
            }
            assert_eq!((&buf[..n], got_from), (&want[..], from));
            break;
        }
    }
}

#[test]
fn udp_two_symmetric_sides_fail_early_saying_why() {
    let a = UdpSocket::bind("127.0.0.1:0").unwrap();
    let a_addr = a.local_addr().unwrap();
    // The peer, also behind a symmetric NAT, never starts.
    let b_addr: SocketAddr = "127.0.0.1:9".parse().unwrap();
    let (a_priv, _) = gen_rendezvous_info(observed(a_addr, Some(a_addr.port() ^ 0x5555)));
    let (_, b_pub) = gen_rendezvous_info(observed(b_addr, Some(19)));
    let start = Instant::now();
    let r = PunchedUdpSocket::punch_hole(a, a_priv, b_pub, deadline(30));
    assert!(
        matches!(r, Err(PunchError::NoDirectPath(NoPath::BothSymmetric))),
        "{r:?}"
    );
    assert!(r.unwrap_err().to_string().contains("only a relay"));
    // Well before the deadline.
    assert!(start.elapsed() < Duration::from_secs(20));
}

#[test]
fn udp_punch_with_the_wrong_token_times_out() {
    let (a, b) = (
        UdpSocket::bind("127.0.0.1:0").unwrap(),
        UdpSocket::bind("127.0.0.1:0").unwrap(),
    );
    let (a_addr, b_addr) = (a.local_addr().unwrap(), b.local_addr().unwrap());
    let (a_priv, _a_pub) = gen_rendezvous_info(local(a_addr));
    let (b_priv, b_pub) = gen_rendezvous_info(local(b_addr));
    // B was given a token from another session of A's.
    let (_, stale) = gen_rendezvous_info(local(a_addr));
    let tb = thread::spawn(move || PunchedUdpSocket::punch_hole(b, b_priv, stale, deadline(1)));
    let start = Instant::now();
    let ra = PunchedUdpSocket::punch_hole(a, a_priv, b_pub, deadline(1));
    // Both sides say what happened, whichever role each has: a stale or wrong token.
    assert!(
        matches!(ra, Err(PunchError::TimedOut(NoPath::FailedAuthentication { .. }))),
        "{ra:?}"
    );
    assert!(start.elapsed() < Duration::from_secs(5));
    let rb = tb.join().unwrap();
    assert!(
        matches!(rb, Err(PunchError::TimedOut(NoPath::FailedAuthentication { .. }))),
        "{rb:?}"
    );
}

#[test]
fn udp_punch_with_absent_peer_and_own_token() {
    let a = UdpSocket::bind("127.0.0.1:0").unwrap();
    let silent = UdpSocket::bind("127.0.0.1:0").unwrap();
    let (a_priv, a_pub) = gen_rendezvous_info(local(a.local_addr().unwrap()));
    let (_, peer) = gen_rendezvous_info(local(silent.local_addr().unwrap()));
    let a2 = a.try_clone().unwrap();
    assert!(matches!(
        PunchedUdpSocket::punch_hole(a, a_priv.clone(), peer, deadline(1)),
        Err(PunchError::TimedOut(NoPath::NothingCameBack { addresses: 1, .. }))
    ));
    assert!(matches!(
        PunchedUdpSocket::punch_hole(a2, a_priv, a_pub, deadline(1)),
        Err(PunchError::OwnToken)
    ));
}

#[test]
fn tcp_punch_on_loopback() {
    let mc = MappingContext::empty();
    let a = MappedTcpSocket::bind("127.0.0.1:0".parse().unwrap(), &mc).unwrap();
    let b = MappedTcpSocket::bind("127.0.0.1:0".parse().unwrap(), &mc).unwrap();
    let (a_priv, a_pub) = gen_rendezvous_info(a.endpoints.clone());
    let (b_priv, b_pub) = gen_rendezvous_info(b.endpoints.clone());
    let tb = thread::spawn(move || tcp_punch_hole(b.socket, b_priv, a_pub, deadline(10)).unwrap());
    let mut sa = tcp_punch_hole(a.socket, a_priv, b_pub, deadline(10)).unwrap();
    let mut sb = tb.join().unwrap();
    assert_eq!(sa.peer_addr().unwrap(), sb.local_addr().unwrap());
    sa.write_all(b"over tcp").unwrap();
    let mut buf = [0u8; 8];
    sb.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"over tcp");
}

#[test]
fn tcp_punch_with_the_wrong_token_times_out() {
    let mc = MappingContext::empty();
    let a = MappedTcpSocket::bind("127.0.0.1:0".parse().unwrap(), &mc).unwrap();
    let b = MappedTcpSocket::bind("127.0.0.1:0".parse().unwrap(), &mc).unwrap();
    let (a_priv, _) = gen_rendezvous_info(a.endpoints.clone());
    let (b_priv, b_pub) = gen_rendezvous_info(b.endpoints.clone());
    let (_, stale) = gen_rendezvous_info(a.endpoints.clone());
    let tb = thread::spawn(move || tcp_punch_hole(b.socket, b_priv, stale, deadline(1)));
    let ra = tcp_punch_hole(a.socket, a_priv, b_pub, deadline(1));
    assert!(
        matches!(ra, Err(PunchError::TimedOut(NoPath::FailedAuthentication { .. }))),
        "{ra:?}"
    );
    let rb = tb.join().unwrap();
    assert!(
        matches!(rb, Err(PunchError::TimedOut(NoPath::FailedAuthentication { .. }))),
        "{rb:?}"
    );
}

/// Listeners at addresses the peers list that are not the peer: one accepts and stays silent,
/// one answers with garbage. Whichever stream role 0 happens to choose first, both sides end up
/// on the one stream between them.
#[test]
fn tcp_punch_past_impostors_at_listed_addresses() {
    use std::net::TcpListener;
    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    let garbage = TcpListener::bind("127.0.0.1:0").unwrap();
    let impostors = [silent.local_addr().unwrap(), garbage.local_addr().unwrap()];
    thread::spawn(move || {
        let held: Vec<_> = silent.incoming().take(4).collect();
        thread::sleep(Duration::from_secs(10));
        drop(held);
    });
    thread::spawn(move || {
        for mut s in garbage.incoming().take(4).flatten() {
            let _ = s.write_all(&[0x4e; 48]);
        }
    });
    let mc = MappingContext::empty();
    let a = MappedTcpSocket::bind("127.0.0.1:0".parse().unwrap(), &mc).unwrap();
    let b = MappedTcpSocket::bind("127.0.0.1:0".parse().unwrap(), &mc).unwrap();
    // No endpoint is "local" (which role 0 would prefer), and the impostors come first.
    let with_impostors = |endpoints: Vec<MappedSocketAddr>| {
        let listed = endpoints.iter().map(|e| MappedSocketAddr::new(e.addr, false, "stun"));
        impostors
            .iter()
            .map(|addr| MappedSocketAddr::new(*addr, false, "stun"))
            .chain(listed)
            .collect::<Vec<_>>()
    };
    let (a_priv, a_pub) = gen_rendezvous_info(with_impostors(a.endpoints.clone()));
    let (b_priv, b_pub) = gen_rendezvous_info(with_impostors(b.endpoints.clone()));
    let tb = thread::spawn(move || tcp_punch_hole(b.socket, b_priv, a_pub, deadline(10)).unwrap());
    let mut sa = tcp_punch_hole(a.socket, a_priv, b_pub, deadline(10)).unwrap();
    let mut sb = tb.join().unwrap();
    assert_eq!(sa.peer_addr().unwrap(), sb.local_addr().unwrap());
    assert_eq!(sb.peer_addr().unwrap(), sa.local_addr().unwrap());
    sb.write_all(b"past them").unwrap();
    let mut buf = [0u8; 9];
    sa.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"past them");
}

/// A deadline that has passed already is its own error, not a timeout like an absent peer's.
#[test]
fn a_deadline_already_passed_is_said_so() {
    let a = UdpSocket::bind("127.0.0.1:0").unwrap();
    let (a_priv, _) = gen_rendezvous_info(local(a.local_addr().unwrap()));
    let (_, peer) = gen_rendezvous_info(local("127.0.0.1:9".parse().unwrap()));
    let past = Instant::now();
    let e = PunchedUdpSocket::punch_hole(a, a_priv.clone(), peer.clone(), past).unwrap_err();
    assert!(matches!(e, PunchError::DeadlinePassed), "{e:?}");
    let mc = MappingContext::empty();
    let t = MappedTcpSocket::new(&mc).unwrap();
    let e = tcp_punch_hole(t.socket, a_priv, peer, past).unwrap_err();
    assert!(matches!(e, PunchError::DeadlinePassed), "{e:?}");
}

/// A peer that has not started: nothing listens at its address, and its host says so.
#[test]
fn tcp_punch_to_a_peer_not_listening_says_refused() {
    let mc = MappingContext::empty();
    let a = MappedTcpSocket::bind("127.0.0.1:0".parse().unwrap(), &mc).unwrap();
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let (a_priv, _) = gen_rendezvous_info(a.endpoints.clone());
    let (_, peer) = gen_rendezvous_info(local(closed));
    let r = tcp_punch_hole(a.socket, a_priv, peer, deadline(1));
    assert!(
        matches!(r, Err(PunchError::TimedOut(NoPath::Refused { addresses: 1, .. }))),
        "{r:?}"
    );
}

/// A stand-in for our TURN relay: a listener at the relayed address (on its own loopback IP)
/// that hands every connection it accepts to the punch as our relay would (the stream and the
/// peer as the relay saw it), until the punch is over.
fn fake_relay(
    listener: std::net::TcpListener,
    punch: std::sync::mpsc::Sender<natt_punch::RelayedStream>,
) -> thread::JoinHandle<()> {
    thread::spawn(move || {
        for s in listener.incoming().take(4).flatten() {
            let peer = s.peer_addr().unwrap();
            if punch.send(natt_punch::RelayedStream { stream: s, peer }).is_err() {
                return;
            }
        }
    })
}

/// A port of `ip` where nothing listens.
fn closed_port(ip: &str) -> SocketAddr {
    std::net::TcpListener::bind((ip, 0)).unwrap().local_addr().unwrap()
}

/// B reaches A only through A's relayed address (no direct path: B's token lists a closed
/// port): the stream our relay hands A completes the punch, and both sides say it is relayed.
#[test]
fn tcp_punch_through_our_relay_and_to_the_peers() {
    use natt_punch::{Route, tcp_punch_hole_with_relay};
    let relayed = std::net::TcpListener::bind("127.0.0.3:0").unwrap();
    let relayed_addr = relayed.local_addr().unwrap();
    let mc = MappingContext::empty();
    let a = MappedTcpSocket::bind("127.0.0.1:0".parse().unwrap(), &mc).unwrap();
    let b = MappedTcpSocket::bind("127.0.0.2:0".parse().unwrap(), &mc).unwrap();
    let (a_priv, a_pub) = gen_rendezvous_info(vec![MappedSocketAddr::new(relayed_addr, true, "turn")]);
    let (b_priv, b_pub) = gen_rendezvous_info(vec![MappedSocketAddr::new(closed_port("127.0.0.2"), true, "stun")]);
    let (tx, rx) = std::sync::mpsc::channel();
    let relay = fake_relay(relayed, tx);
    let (_none, no_relay) = std::sync::mpsc::channel();
    let tb = thread::spawn(move || tcp_punch_hole_with_relay(b.socket, b_priv, a_pub, deadline(10), no_relay).unwrap());
    let pa = tcp_punch_hole_with_relay(a.socket, a_priv, b_pub, deadline(10), rx).unwrap();
    let pb = tb.join().unwrap();
    assert_eq!(pa.route, Route::OwnRelay);
    assert_eq!(pb.route, Route::PeerRelay);
    assert_eq!(pb.remote, relayed_addr);
    assert_eq!(pa.remote, pb.stream.local_addr().unwrap());
    let (mut sa, mut sb) = (pa.stream, pb.stream);
    sa.write_all(b"via relay").unwrap();
    let mut buf = [0u8; 9];
    sb.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"via relay");
    sb.write_all(b"and back!").unwrap();
    sa.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"and back!");
    drop(relay);
}

/// A stream our relay hands over counts only if the peer saw us at our relayed address: a
/// stream that reached us another way (here B's connection to an address A lists as a plain
/// endpoint, handed over as if relayed) is refused, and the punch fails saying so.
#[test]
fn tcp_a_relayed_stream_bound_elsewhere_is_refused() {
    use natt_punch::tcp_punch_hole_with_relay;
    let elsewhere = std::net::TcpListener::bind("127.0.0.4:0").unwrap();
    let mc = MappingContext::empty();
    let a = MappedTcpSocket::bind("127.0.0.1:0".parse().unwrap(), &mc).unwrap();
    let b = MappedTcpSocket::bind("127.0.0.2:0".parse().unwrap(), &mc).unwrap();
    let (a_priv, a_pub) = gen_rendezvous_info(vec![
        MappedSocketAddr::new(closed_port("127.0.0.3"), true, "turn"),
        MappedSocketAddr::new(elsewhere.local_addr().unwrap(), true, "stun"),
    ]);
    let (b_priv, b_pub) = gen_rendezvous_info(vec![MappedSocketAddr::new(closed_port("127.0.0.2"), true, "stun")]);
    let (tx, rx) = std::sync::mpsc::channel();
    let _relay = fake_relay(elsewhere, tx);
    let (_none, no_relay) = std::sync::mpsc::channel();
    let tb = thread::spawn(move || tcp_punch_hole_with_relay(b.socket, b_priv, a_pub, deadline(2), no_relay));
    let ra = tcp_punch_hole_with_relay(a.socket, a_priv, b_pub, deadline(2), rx);
    assert!(
        matches!(ra, Err(PunchError::TimedOut(NoPath::AddressedElsewhere { .. }))),
        "{ra:?}"
    );
    // B fails too, or (as role 0, done once it chose a stream with A's hello) holds a stream
    // that A refused and closed: no connection is completed.
    if let Ok(p) = tb.join().unwrap() {
        let mut stream = p.stream;
        stream.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut buf = [0u8; 1];
        assert!(matches!(stream.read(&mut buf), Ok(0) | Err(_)), "A kept the stream");
    }
}

#[test]
fn a_direct_tcp_punch_ends_when_cancelled() {
    let mc = MappingContext::empty();
    let a = MappedTcpSocket::bind("127.0.0.1:0".parse().unwrap(), &mc).unwrap();
    // The peer never punches: only the cancel ends this punch before its deadline.
    let b = MappedTcpSocket::bind("127.0.0.1:0".parse().unwrap(), &mc).unwrap();
    let (a_priv, _) = gen_rendezvous_info(a.endpoints.clone());
    let (_, b_pub) = gen_rendezvous_info(b.endpoints.clone());
    let cancel = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let setter = std::sync::Arc::clone(&cancel);
    let t = thread::spawn(move || {
        thread::sleep(Duration::from_millis(200));
        setter.store(true, std::sync::atomic::Ordering::SeqCst);
    });
    let r = tcp_punch_direct(a.socket, a_priv, b_pub, deadline(30), cancel);
    t.join().unwrap();
    assert!(
        matches!(&r, Err(PunchError::Io(e)) if e.kind() == std::io::ErrorKind::Interrupted),
        "{r:?}"
    );
}
