//! The one receive loop (`natt_core::udp::drive`, `drive_until_stopped`) on loopback: its
//! socket-error rule (a refusal ends the loop on a connected socket only), its stop signal,
//! and exchanges whose results are not endpoints.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use natt_core::lease::Stop;
use natt_core::udp::{self, Driven, STOP_POLL};
use natt_core::{Error, Transmit, UdpExchange};

/// Sends `ping` to `to` every 20 ms and ends with the first datagram it is sent back, as a
/// string; at the deadline, with how many it sent.
struct Ping {
    to: SocketAddr,
    next: Option<Instant>,
    sent: u32,
    answer: Option<String>,
}

impl Ping {
    fn new(to: SocketAddr) -> Self {
        Ping {
            to,
            next: None,
            sent: 0,
            answer: None,
        }
    }
}

impl UdpExchange<Result<String, u32>> for Ping {
    fn poll_transmit(&mut self, now: Instant) -> Option<Transmit> {
        if self.answer.is_some() || self.next.is_some_and(|t| t > now) {
            return None;
        }
        self.next = Some(now + Duration::from_millis(20));
        self.sent += 1;
        Some(Transmit {
            destination: self.to,
            payload: b"ping".to_vec(),
        })
    }

    fn poll_timeout(&self) -> Option<Instant> {
        self.next
    }

    fn handle_datagram(&mut self, _now: Instant, from: SocketAddr, data: &[u8]) -> bool {
        if from != self.to {
            return false;
        }
        self.answer = Some(String::from_utf8_lossy(data).into_owned());
        true
    }

    fn poll_result(&mut self, _now: Instant) -> Option<Result<String, u32>> {
        self.answer.take().map(Ok)
    }

    fn finish(&mut self) -> Result<String, u32> {
        Err(self.sent)
    }
}

/// A loopback address where nothing listens (a socket bound, then closed).
fn closed_port() -> SocketAddr {
    UdpSocket::bind("127.0.0.1:0").unwrap().local_addr().unwrap()
}

#[test]
fn a_refusal_on_a_connected_socket_ends_the_loop_at_once() {
    let to = closed_port();
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    socket.connect(to).unwrap();
    let mut ping = Ping::new(to);
    let t0 = Instant::now();
    let r = udp::drive_until_stopped(&socket, &mut [&mut ping], t0 + Duration::from_secs(2), None);
    match r {
        Err(Error::Io(e)) => assert_eq!(e.kind(), io::ErrorKind::ConnectionRefused),
        other => panic!("{other:?}"),
    }
    assert!(t0.elapsed() < Duration::from_millis(500), "{:?}", t0.elapsed());
}

#[test]
fn a_refusal_on_a_socket_not_connected_is_carried_on_after() {
    let to = closed_port();
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    let mut ping = Ping::new(to);
    let deadline = Instant::now() + Duration::from_millis(150);
    let results = udp::drive(&socket, &mut [&mut ping], deadline).unwrap();
    assert!(Instant::now() >= deadline);
    // Sent every 20 ms until the deadline: the refusals did not end it.
    let sent = results[0].1.clone().unwrap_err();
    assert!(sent >= 3, "{sent}");
}

#[test]
fn answers_end_the_loop_with_results_of_any_type() {
    let server = UdpSocket::bind("127.0.0.1:0").unwrap();
    let echo = std::thread::spawn({
        let server = server.try_clone().unwrap();
        move || {
            let mut buf = [0u8; 16];
            let (n, from) = server.recv_from(&mut buf).unwrap();
            server.send_to(&buf[..n], from).unwrap();
        }
    });
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    socket.connect(server.local_addr().unwrap()).unwrap();
    let mut ping = Ping::new(server.local_addr().unwrap());
    let r = udp::drive_until_stopped(&socket, &mut [&mut ping], Instant::now() + Duration::from_secs(2), None);
    let Ok(Driven::Done(results)) = r else { panic!("{r:?}") };
    assert_eq!(results[0].1, Ok("ping".to_owned()));
    echo.join().unwrap();
}

#[test]
fn a_stop_ends_the_loop_within_stop_poll() {
    let server = UdpSocket::bind("127.0.0.1:0").unwrap();
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    let (fire, stop) = Stop::new();
    let mut ping = Ping::new(server.local_addr().unwrap());
    let firing = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(100));
        drop(fire);
    });
    let t0 = Instant::now();
    let r = udp::drive_until_stopped(&socket, &mut [&mut ping], t0 + Duration::from_secs(5), Some(&stop));
    assert!(matches!(r, Ok(Driven::Stopped)), "{r:?}");
    let took = t0.elapsed();
    assert!(took < Duration::from_millis(100) + STOP_POLL * 3, "{took:?}");
    firing.join().unwrap();
}
