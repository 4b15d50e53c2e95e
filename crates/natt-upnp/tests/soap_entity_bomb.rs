//! A gateway whose SOAP answers are XML entity bombs (security review, issue #18, finding 4):
//! mapping fails at once with a clear error, and the process's peak memory stays bounded.
//!
//! One test in its own file, so in its own process: its peak resident memory (`VmHWM` in
//! `/proc/self/status`, Linux) measures this test alone. The gateway is a small HTTP server on
//! loopback that serves a good description and answers every SOAP request with a bomb of
//! about 750 bytes whose entities expand to 10^10 bytes (parsed with xml-rs's default
//! settings, as igd-next parses SOAP answers, one such answer took a process to 1.39 GB).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpListener, TcpStream, UdpSocket};
use std::thread;
use std::time::{Duration, Instant};

use natt_core::MappingTechnique;
use natt_upnp::{UpnpConfig, UpnpTechnique};

/// The process's peak resident memory so far, in bytes (`VmHWM`).
fn peak_rss() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
    let kb: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    kb * 1024
}

/// A SOAP answer (about 700 bytes) whose text is an entity defined through parameter entities
/// nested ten levels deep, ten times each: 10^10 bytes once expanded.
fn bomb() -> String {
    let mut dtd = String::from("<!ENTITY % e0 \"aaaaaaaaaa\">");
    for i in 1..10 {
        dtd += &format!("<!ENTITY % e{i} \"{}\">", format!("%e{};", i - 1).repeat(10));
    }
    dtd += "<!ENTITY x \"%e9;\">";
    format!(
        "<!DOCTYPE Envelope [{dtd}]><Envelope><Body><GetExternalIPAddressResponse>\
         <NewExternalIPAddress>&x;</NewExternalIPAddress></GetExternalIPAddressResponse></Body></Envelope>"
    )
}

const DESCRIPTION: &str = "<?xml version=\"1.0\"?><root xmlns=\"urn:schemas-upnp-org:device-1-0\"><device>\
    <deviceType>urn:schemas-upnp-org:device:InternetGatewayDevice:2</deviceType><deviceList><device><deviceList>\
    <device><serviceList><service><serviceType>urn:schemas-upnp-org:service:WANIPConnection:2</serviceType>\
    <SCPDURL>/scpd.xml</SCPDURL><controlURL>/ctl</controlURL></service></serviceList></device></deviceList>\
    </device></deviceList></device></root>";

/// Reads one request (head and body); true when it is a POST.
fn read_request(stream: &mut TcpStream) -> Option<bool> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if stream.read(&mut byte).ok()? == 0 {
            return None;
        }
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head).to_string();
    let length: usize = head
        .lines()
        .filter_map(|l| l.split_once(':'))
        .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
        .map_or(0, |(_, v)| v.trim().parse().unwrap_or(0));
    let mut body = vec![0u8; length];
    stream.read_exact(&mut body).ok()?;
    Some(head.starts_with("POST"))
}

/// The hostile gateway: its URL.
fn start_gateway() -> String {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    let addr = listener.local_addr().unwrap();
    let bomb = bomb();
    assert!(bomb.len() < 800, "{} bytes", bomb.len());
    thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let bomb = bomb.clone();
            thread::spawn(move || {
                stream.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
                let Some(post) = read_request(&mut stream) else { return };
                let (status, body) = if post {
                    ("200 OK", bomb.as_str())
                } else {
                    ("200 OK", DESCRIPTION)
                };
                let reply = format!(
                    "HTTP/1.1 {status}\r\nContent-Type: text/xml; charset=\"utf-8\"\r\nConnection: close\r\n\
                     Content-Length: {}\r\n\r\n{body}",
                    body.len()
                );
                let _ = stream.write_all(reply.as_bytes());
            });
        }
    });
    format!("http://{addr}/rootDesc.xml")
}

#[test]
fn a_soap_entity_bomb_fails_at_once_in_bounded_memory() {
    let url = start_gateway();
    let mut config = UpnpConfig::default();
    // Never search the real network: loopback only, and an SSDP port nothing listens on.
    config.search_from = Some(vec![Ipv4Addr::LOCALHOST]);
    config.ssdp_addr = "127.0.0.1:9".parse().unwrap();
    let t = UpnpTechnique::with_config(config);
    t.add_gateway(&url).unwrap();
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();

    let before = peak_rss();
    let t0 = Instant::now();
    let r = t.map_udp(socket.local_addr().unwrap(), t0 + Duration::from_secs(3));
    let took = t0.elapsed();
    // Whatever still parses on a worker thread after the caller gave up counts too.
    thread::sleep(Duration::from_secs(1));
    let grown = peak_rss().saturating_sub(before);
    let e = r.expect_err("a bomb is no mapping").to_string();
    println!("failed in {took:?}, peak memory grew by {} KiB: {e}", grown / 1024);
    assert!(e.contains("document type declaration"), "{e}");
    assert!(took < Duration::from_millis(500), "took {took:?}");
    assert!(grown < 50 << 20, "peak memory grew by {} MiB", grown >> 20);
}
