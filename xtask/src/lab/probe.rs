//! Small socket tools that run inside lab nodes (`ip netns exec NODE xtask lab probe ...`), and
//! the observer server on `inet`. Tests use them to check what the NATs do.
//!
//! Every tool has a deadline and prints one line per fact, e.g. `SEEN 203.0.113.20:7000
//! 203.0.113.101:40000`. They only send to the addresses they are given, and refuse to run
//! outside a lab node.
//!
//! - `observer --ips A,B --port P`: UDP: replies `IP:PORT\n` (the sender as seen) followed by the
//!   datagram; TCP: writes `IP:PORT\n` and closes.
//! - `probe observe [--bind A] [--timeout-ms N] SERVER...`: from one UDP socket, asks each
//!   observer what it sees: `SEEN SERVER MAPPED`.
//! - `probe listen [--bind A] [--first SERVER] --ms N`: binds, optionally asks one observer
//!   first (`SEEN ...`), prints `READY`, then `RECV FROM TEXT` per datagram and `DONE COUNT`.
//! - `probe send --to A [--bind A] [--count N] [--interval-ms M]`: fires datagrams: `SENT N`.
//! - `probe stun [--bind A] [--timeout-ms N] SERVER...`: STUN binding requests (RFC 5389):
//!   `MAPPED SERVER MAPPED rtt_ms=X`.
//! - `probe rtt --to OBSERVER [--count N] [--interval-ms M] [--wait-ms W]`: numbered datagrams to
//!   an observer: `RTT sent=N received=M min_ms=.. median_ms=.. max_ms=..`.
//! - `probe tcp-echo --bind A --ms N`: a TCP peer: to each connection writes `IP:PORT\n` (the
//!   address it sees), then echoes what it reads until the client ends its side; prints
//!   `READY`, then `ACCEPTED FROM` per connection, for N ms.
//! - `probe slow-tcp --to A [--count N] [--interval-ms M] --ms T`: N TCP connections that each
//!   announce a 500-byte STUN request and dribble it a byte per M ms (default 100), for T ms:
//!   `OPENED n`, `HELD n` (still open after a second), then `CLOSED n last_ms=X` (closed by
//!   the server, the last X ms after the connections were opened) and `OPEN n`.
//! - `probe igd-impostor --ip IP --ms N`: a LAN device posing as a UPnP gateway (answers
//!   M-SEARCHes on port 1900, serves a description and SOAP successes): `READY`, then
//!   `ANSWERED n` and `HTTP n`.
//! - `probe udp-relay ...`, `probe tcp-relay ...`, `probe tcp-spray ...`: attackers for the
//!   security tests ([`super::attack`]).

use std::collections::BTreeMap;
use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::io::{ErrorKind, Write as _};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener, UdpSocket};
use std::thread;
use std::time::{Duration, Instant};

use super::{Result, err};

/// The line the observer prints once it listens.
pub const OBSERVER_READY: &str = "observer ready";

/// `--key value` options and positional words of a tool's command line.
pub struct Args {
    opts: BTreeMap<String, String>,
    /// Words that are not options.
    pub positional: Vec<String>,
}

impl Args {
    /// Splits `args` into options (`--key value`) and positional words.
    pub fn parse(args: &[String]) -> Result<Args> {
        let mut opts = BTreeMap::new();
        let mut positional = Vec::new();
        let mut it = args.iter();
        while let Some(a) = it.next() {
            if let Some(key) = a.strip_prefix("--") {
                let v = it.next().ok_or_else(|| err(format!("--{key} needs a value")))?;
                opts.insert(key.to_string(), v.clone());
            } else {
                positional.push(a.clone());
            }
        }
        Ok(Args { opts, positional })
    }

    /// The value of `--key`, parsed.
    pub fn get<T: std::str::FromStr>(&self, key: &str) -> Result<Option<T>> {
        self.opts
            .get(key)
            .map(|v| v.parse::<T>().map_err(|_| err(format!("bad value for --{key}: '{v}'"))))
            .transpose()
    }

    /// The value of `--key`, parsed, or `default`.
    pub fn get_or<T: std::str::FromStr>(&self, key: &str, default: T) -> Result<T> {
        Ok(self.get(key)?.unwrap_or(default))
    }

    /// The value of `--key`, parsed; an error if it is missing.
    pub fn need<T: std::str::FromStr>(&self, key: &str) -> Result<T> {
        self.get(key)?.ok_or_else(|| err(format!("--{key} is required")))
    }
}

fn addr(s: &str) -> Result<SocketAddr> {
    s.parse().map_err(|_| err(format!("bad address '{s}' (IP:PORT)")))
}

fn any_port() -> SocketAddr {
    SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0))
}

fn out(line: &str) {
    println!("{line}");
    let _ = std::io::stdout().flush();
}

/// Runs `probe SUBCOMMAND ARGS...`; returns the exit code.
pub fn main(args: &[String]) -> Result<i32> {
    let (sub, rest) = args.split_first().ok_or_else(|| {
        err("probe needs a subcommand: observe, listen, send, stun, rtt, spoof, slow-tcp, tcp-echo, igd-impostor")
    })?;
    let a = Args::parse(rest)?;
    match sub.as_str() {
        "observe" => observe(&a),
        "listen" => listen(&a),
        "send" => send(&a),
        "stun" => stun(&a),
        "rtt" => rtt(&a),
        "spoof" => spoof(&a),
        "udp-relay" => super::attack::udp_relay(&a),
        "tcp-relay" => super::attack::tcp_relay(&a),
        "tcp-spray" => super::attack::tcp_spray(&a),
        "slow-tcp" => slow_tcp(&a),
        "tcp-echo" => tcp_echo(&a),
        "igd-impostor" => igd_impostor(&a),
        // Hidden: the load generator of `cargo xtask bench` (src/bench/load.rs).
        "load" => crate::bench::load::main(&a),
        // Hidden: the serve benchmark's physical reference (src/bench/echo.rs).
        "echo" => crate::bench::echo::main(&a),
        other => Err(err(format!("unknown probe '{other}'"))),
    }
}

fn bind(a: &Args) -> Result<UdpSocket> {
    let local = match a.get::<String>("bind")? {
        Some(b) => addr(&b)?,
        None => any_port(),
    };
    UdpSocket::bind(local).map_err(|e| err(format!("cannot bind {local}: {e}")))
}

/// Asks `server` (an observer) what address it sees for `sock`, retrying every 200 ms.
fn ask_observer(sock: &UdpSocket, server: SocketAddr, deadline: Instant) -> Result<Option<String>> {
    let mut buf = [0u8; 1500];
    let mut next_send = Instant::now();
    while Instant::now() < deadline {
        if Instant::now() >= next_send {
            sock.send_to(b"observe", server)?;
            next_send = Instant::now() + Duration::from_millis(200);
        }
        let wait = next_send.min(deadline).saturating_duration_since(Instant::now());
        sock.set_read_timeout(Some(wait.max(Duration::from_millis(1))))?;
        match sock.recv_from(&mut buf) {
            Ok((n, from)) if from == server => {
                let text = String::from_utf8_lossy(buf.get(..n).unwrap_or_default()).to_string();
                return Ok(text.lines().next().map(str::to_string));
            }
            Ok(_) => {}
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            // ICMP errors (port unreachable) show up as failed receives: keep trying.
            Err(_) => {}
        }
    }
    Ok(None)
}

fn observe(a: &Args) -> Result<i32> {
    let sock = bind(a)?;
    let deadline = Instant::now() + Duration::from_millis(a.get_or("timeout-ms", 3000)?);
    let mut code = 0;
    for s in &a.positional {
        let server = addr(s)?;
        match ask_observer(&sock, server, deadline)? {
            Some(seen) => out(&format!("SEEN {server} {seen}")),
            None => {
                out(&format!("NOREPLY {server}"));
                code = 1;
            }
        }
    }
    Ok(code)
}

fn listen(a: &Args) -> Result<i32> {
    let sock = bind(a)?;
    let ms: u64 = a.need("ms")?;
    if let Some(first) = a.get::<String>("first")? {
        let server = addr(&first)?;
        let deadline = Instant::now() + Duration::from_secs(3);
        match ask_observer(&sock, server, deadline)? {
            Some(seen) => out(&format!("SEEN {server} {seen}")),
            None => {
                out(&format!("NOREPLY {server}"));
                return Ok(1);
            }
        }
    }
    out(&format!("READY {}", sock.local_addr()?));
    let end = Instant::now() + Duration::from_millis(ms);
    let mut count = 0;
    let mut buf = [0u8; 1500];
    while Instant::now() < end {
        let wait = end.saturating_duration_since(Instant::now());
        sock.set_read_timeout(Some(wait.max(Duration::from_millis(1))))?;
        if let Ok((n, from)) = sock.recv_from(&mut buf) {
            let text = String::from_utf8_lossy(buf.get(..n).unwrap_or_default()).replace(char::is_whitespace, "_");
            out(&format!("RECV {from} {text}"));
            count += 1;
        }
    }
    out(&format!("DONE {count}"));
    Ok(0)
}

fn send(a: &Args) -> Result<i32> {
    let sock = bind(a)?;
    let to = addr(&a.need::<String>("to")?)?;
    let count: u32 = a.get_or("count", 5)?;
    let interval = Duration::from_millis(a.get_or("interval-ms", 100)?);
    let mut sent = 0;
    for i in 0..count {
        if i > 0 {
            thread::sleep(interval);
        }
        if sock.send_to(format!("natt-lab probe {i}").as_bytes(), to).is_ok() {
            sent += 1;
        }
    }
    out(&format!("SENT {sent}"));
    Ok(0)
}

/// `spoof --from IP:PORT --to IP:PORT [--count N] [--interval-ms MS]`: sends UDP datagrams
/// with a forged source address (a raw socket; root): garbage, and packets shaped like natt's
/// punch messages but with random content, as an attacker who cannot read the rendezvous
/// exchange would. Prints `SPOOFED N`.
fn spoof(a: &Args) -> Result<i32> {
    let v4 = |s: String| match addr(&s)? {
        SocketAddr::V4(v) => Ok(v),
        SocketAddr::V6(_) => Err(err("spoof is IPv4 only")),
    };
    let from = v4(a.need("from")?)?;
    let to = v4(a.need("to")?)?;
    let count: u32 = a.get_or("count", 100)?;
    let interval = Duration::from_millis(a.get_or("interval-ms", 10)?);
    let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::RAW, Some(socket2::Protocol::UDP))
        .map_err(|e| err(format!("raw socket: {e}")))?;
    sock.set_header_included_v4(true)
        .map_err(|e| err(format!("IP_HDRINCL: {e}")))?;
    let mut next = xorshift();
    let mut sent = 0;
    for i in 0..count {
        let mut payload: Vec<u8> = (0..if i % 2 == 0 { 64 } else { 1 + next() % 200 })
            .map(|_| next() as u8)
            .collect();
        if i % 2 == 0 {
            // Shaped like a punch message: magic, version 2, probe or reply, flags, a role.
            let head = [b'N', b'A', b'T', b'P', 2, 1 + (i % 4 == 0) as u8, 1, (i % 3 == 0) as u8];
            payload.splice(..8, head);
        }
        let packet = udp_packet(from, to, &payload);
        let dest = socket2::SockAddr::from(SocketAddr::V4(to));
        if sock.send_to(&packet, &dest).is_ok() {
            sent += 1;
        }
        thread::sleep(interval);
    }
    out(&format!("SPOOFED {sent}"));
    Ok(0)
}

/// An IPv4 packet carrying a UDP datagram (no UDP checksum, which IPv4 allows; the kernel
/// fills in the IP checksum).
fn udp_packet(from: SocketAddrV4, to: SocketAddrV4, payload: &[u8]) -> Vec<u8> {
    let udp_len = 8 + payload.len();
    let total = 20 + udp_len;
    let mut p = Vec::with_capacity(total);
    p.extend_from_slice(&[0x45, 0]);
    p.extend_from_slice(&(total as u16).to_be_bytes());
    p.extend_from_slice(&[0, 0, 0x40, 0, 64, 17, 0, 0]);
    p.extend_from_slice(&from.ip().octets());
    p.extend_from_slice(&to.ip().octets());
    p.extend_from_slice(&from.port().to_be_bytes());
    p.extend_from_slice(&to.port().to_be_bytes());
    p.extend_from_slice(&(udp_len as u16).to_be_bytes());
    p.extend_from_slice(&[0, 0]);
    p.extend_from_slice(payload);
    p
}

/// `slow-tcp`: a client that holds a server's TCP connections by sending slowly (see the
/// module doc). A connection counts as closed when a read sees its end or an error, or a write
/// fails.
fn slow_tcp(a: &Args) -> Result<i32> {
    use std::io::Read as _;
    use std::net::TcpStream;
    let to = addr(&a.need::<String>("to")?)?;
    let count: usize = a.get_or("count", 80)?;
    let interval = Duration::from_millis(a.get_or("interval-ms", 100)?);
    let end = Instant::now() + Duration::from_millis(a.need("ms")?);
    // A STUN Binding request header announcing 500 bytes of attributes, never sent in full.
    let mut head = stun_request(&transaction_id());
    head.splice(2..4, 500u16.to_be_bytes());
    let start = Instant::now();
    let mut open: Vec<TcpStream> = Vec::new();
    for _ in 0..count {
        let Ok(mut s) = TcpStream::connect_timeout(&to, Duration::from_secs(2)) else {
            continue;
        };
        if s.write_all(&head).is_ok() && s.set_nonblocking(true).is_ok() {
            open.push(s);
        }
    }
    out(&format!("OPENED {}", open.len()));
    let (mut closed, mut last, mut held_said) = (0, Duration::ZERO, false);
    while Instant::now() < end && !open.is_empty() {
        let before = open.len();
        open.retain_mut(|s| {
            let ended = match s.read(&mut [0u8; 64]) {
                Ok(_) => true,
                Err(e) => e.kind() != ErrorKind::WouldBlock,
            };
            let write_failed = matches!(s.write(&[0]), Err(e) if e.kind() != ErrorKind::WouldBlock);
            !ended && !write_failed
        });
        if open.len() < before {
            closed += before - open.len();
            last = start.elapsed();
        }
        if !held_said && start.elapsed() >= Duration::from_secs(1) {
            out(&format!("HELD {}", open.len()));
            held_said = true;
        }
        thread::sleep(interval.min(end.saturating_duration_since(Instant::now())));
    }
    if !held_said {
        out(&format!("HELD {}", open.len()));
    }
    out(&format!("CLOSED {closed} last_ms={}", last.as_millis()));
    out(&format!("OPEN {}", open.len()));
    Ok(0)
}

fn rtt(a: &Args) -> Result<i32> {
    let sock = bind(a)?;
    let to = addr(&a.need::<String>("to")?)?;
    let count: u32 = a.get_or("count", 20)?;
    let interval = Duration::from_millis(a.get_or("interval-ms", 10)?);
    let wait = Duration::from_millis(a.get_or("wait-ms", 2000)?);
    let mut sent_at = Vec::new();
    let mut rtts: Vec<f64> = Vec::new();
    let mut buf = [0u8; 1500];
    let mut next = Instant::now();
    let mut end = Instant::now() + wait;
    while Instant::now() < end {
        if sent_at.len() < count as usize && Instant::now() >= next {
            let seq = sent_at.len();
            sock.send_to(format!("rtt {seq}").as_bytes(), to)?;
            sent_at.push(Instant::now());
            next += interval;
            end = Instant::now() + wait;
        }
        let until = if sent_at.len() < count as usize {
            next.min(end)
        } else {
            end
        };
        sock.set_read_timeout(Some(
            until
                .saturating_duration_since(Instant::now())
                .max(Duration::from_micros(100)),
        ))?;
        if let Ok((n, from)) = sock.recv_from(&mut buf) {
            let text = String::from_utf8_lossy(buf.get(..n).unwrap_or_default()).to_string();
            let seq = text
                .lines()
                .nth(1)
                .and_then(|l| l.strip_prefix("rtt "))
                .and_then(|s| s.trim().parse::<usize>().ok());
            if let (true, Some(t0)) = (from == to, seq.and_then(|s| sent_at.get(s))) {
                rtts.push(t0.elapsed().as_secs_f64() * 1000.0);
            }
        }
        if rtts.len() >= count as usize {
            break;
        }
    }
    rtts.sort_by(f64::total_cmp);
    let pick = |i: usize| rtts.get(i).copied().unwrap_or(f64::NAN);
    out(&format!(
        "RTT sent={} received={} min_ms={:.1} median_ms={:.1} max_ms={:.1}",
        sent_at.len(),
        rtts.len(),
        pick(0),
        pick(rtts.len() / 2),
        pick(rtts.len().saturating_sub(1)),
    ));
    Ok(0)
}

/// The UDP and TCP observer on each of `ips` (each its own sockets, so replies come from the
/// address the client sent to, as a NAT's filtering requires). Runs until killed.
pub fn run_observer(ips: &[Ipv4Addr], port: u16) -> Result<()> {
    let mut threads = Vec::new();
    for ip in ips {
        let at = SocketAddr::V4(SocketAddrV4::new(*ip, port));
        let udp = UdpSocket::bind(at).map_err(|e| err(format!("observer: bind udp {at}: {e}")))?;
        let tcp = TcpListener::bind(at).map_err(|e| err(format!("observer: bind tcp {at}: {e}")))?;
        threads.push(thread::spawn(move || {
            for mut stream in tcp.incoming().flatten() {
                if let Ok(peer) = stream.peer_addr() {
                    let _ = stream.write_all(format!("{peer}\n").as_bytes());
                }
            }
        }));
        threads.push(thread::spawn(move || {
            let mut buf = [0u8; 1500];
            loop {
                let Ok((n, from)) = udp.recv_from(&mut buf) else {
                    continue;
                };
                let mut reply = format!("{from}\n").into_bytes();
                reply.extend_from_slice(buf.get(..n.min(512)).unwrap_or_default());
                let _ = udp.send_to(&reply, from);
            }
        }));
    }
    let list: Vec<String> = ips.iter().map(|ip| format!("{ip}:{port}")).collect();
    out(&format!("{OBSERVER_READY} on {} udp+tcp", list.join(" ")));
    for t in threads {
        let _ = t.join();
    }
    Ok(())
}

/// `probe tcp-echo`: see the module documentation.
fn tcp_echo(a: &Args) -> Result<i32> {
    let bind: SocketAddr = addr(&a.need::<String>("bind")?)?;
    let ms: u64 = a.need("ms")?;
    let listener = TcpListener::bind(bind)?;
    listener.set_nonblocking(true)?;
    out("READY");
    let end = Instant::now() + Duration::from_millis(ms);
    while Instant::now() < end {
        match listener.accept() {
            Ok((mut stream, from)) => {
                out(&format!("ACCEPTED {from}"));
                stream.set_nonblocking(false)?;
                stream.set_read_timeout(Some(
                    end.saturating_duration_since(Instant::now())
                        .max(Duration::from_millis(1)),
                ))?;
                thread::spawn(move || {
                    let _ = stream.write_all(format!("{from}\n").as_bytes());
                    let mut buf = [0u8; 4096];
                    while let Ok(n) = std::io::Read::read(&mut stream, &mut buf) {
                        if n == 0 || stream.write_all(buf.get(..n).unwrap_or_default()).is_err() {
                            break;
                        }
                    }
                });
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => thread::sleep(Duration::from_millis(5)),
            Err(e) => return Err(e.into()),
        }
    }
    Ok(0)
}

// ------------------------------------------------------------------------------- STUN client

const MAGIC: u32 = 0x2112_A442;

fn transaction_id() -> [u8; 12] {
    let mut id = [0u8; 12];
    let a = RandomState::new().build_hasher().finish().to_be_bytes();
    let mut h = RandomState::new().build_hasher();
    h.write_u128(Instant::now().elapsed().as_nanos() ^ u128::from(std::process::id()));
    let b = h.finish().to_be_bytes();
    for (dst, src) in id.iter_mut().zip(a.iter().chain(b.iter())) {
        *dst = *src;
    }
    id
}

/// A STUN binding request (RFC 5389) with transaction id `tid`.
pub fn stun_request(tid: &[u8; 12]) -> Vec<u8> {
    let mut req = Vec::with_capacity(20);
    req.extend_from_slice(&0x0001u16.to_be_bytes());
    req.extend_from_slice(&0u16.to_be_bytes());
    req.extend_from_slice(&MAGIC.to_be_bytes());
    req.extend_from_slice(tid);
    req
}

/// The (XOR-)MAPPED-ADDRESS of a binding success response to `tid`, if `msg` is one.
pub fn stun_mapped(msg: &[u8], tid: &[u8; 12]) -> Option<SocketAddrV4> {
    let header = msg.get(..20)?;
    if header.get(..2)? != [0x01, 0x01] || header.get(8..20)? != tid {
        return None;
    }
    let mut attrs = msg.get(20..)?;
    let mut plain = None;
    while attrs.len() >= 4 {
        let kind = u16::from_be_bytes([*attrs.first()?, *attrs.get(1)?]);
        let len = usize::from(u16::from_be_bytes([*attrs.get(2)?, *attrs.get(3)?]));
        let value = attrs.get(4..4 + len)?;
        if (kind == 0x0020 || kind == 0x0001) && len >= 8 && value.get(1) == Some(&1) {
            let port = u16::from_be_bytes([*value.get(2)?, *value.get(3)?]);
            let ip = u32::from_be_bytes([*value.get(4)?, *value.get(5)?, *value.get(6)?, *value.get(7)?]);
            if kind == 0x0020 {
                let port = port ^ (MAGIC >> 16) as u16;
                return Some(SocketAddrV4::new(Ipv4Addr::from(ip ^ MAGIC), port));
            }
            plain = Some(SocketAddrV4::new(Ipv4Addr::from(ip), port));
        }
        attrs = attrs.get(4 + len.div_ceil(4) * 4..).unwrap_or_default();
    }
    plain
}

fn stun(a: &Args) -> Result<i32> {
    let sock = bind(a)?;
    let timeout = Duration::from_millis(a.get_or("timeout-ms", 3000)?);
    let mut code = 0;
    let mut buf = [0u8; 1500];
    for s in &a.positional {
        let server = addr(s)?;
        let tid = transaction_id();
        let req = stun_request(&tid);
        let start = Instant::now();
        let deadline = start + timeout;
        let mut next_send = start;
        let mut mapped = None;
        while mapped.is_none() && Instant::now() < deadline {
            if Instant::now() >= next_send {
                sock.send_to(&req, server)?;
                next_send = Instant::now() + Duration::from_millis(200);
            }
            let wait = next_send.min(deadline).saturating_duration_since(Instant::now());
            sock.set_read_timeout(Some(wait.max(Duration::from_millis(1))))?;
            if let Ok((n, _)) = sock.recv_from(&mut buf) {
                mapped = stun_mapped(buf.get(..n).unwrap_or_default(), &tid);
            }
        }
        match mapped {
            Some(m) => out(&format!(
                "MAPPED {server} {m} rtt_ms={:.1}",
                start.elapsed().as_secs_f64() * 1000.0
            )),
            None => {
                out(&format!("NOREPLY {server}"));
                code = 1;
            }
        }
    }
    Ok(code)
}

/// `igd-impostor --ip IP --ms N`: a device on the LAN that is not the router but poses as a
/// UPnP gateway. It answers every M-SEARCH (multicast or unicast, on port 1900) at once with
/// its own description URL, serves a valid IGD:1 description and answers every SOAP request
/// with success (external address 198.51.100.66). Prints `READY`, then after `--ms`
/// milliseconds `ANSWERED n` (searches answered) and `HTTP n` (HTTP requests received).
fn igd_impostor(a: &Args) -> Result<i32> {
    use std::io::Read as _;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    let ip: Ipv4Addr = a.need("ip")?;
    let end = Instant::now() + Duration::from_millis(a.need("ms")?);
    let http = TcpListener::bind((ip, 0))?;
    let http_port = http.local_addr()?.port();
    http.set_nonblocking(true)?;
    let ssdp = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 1900))?;
    ssdp.join_multicast_v4(&Ipv4Addr::new(239, 255, 255, 250), &ip)?;
    ssdp.set_read_timeout(Some(Duration::from_millis(20)))?;
    let requests = Arc::new(AtomicUsize::new(0));
    let served = Arc::clone(&requests);
    let server = thread::spawn(move || {
        let description = "<?xml version=\"1.0\"?><root xmlns=\"urn:schemas-upnp-org:device-1-0\"><device><serviceList><service>\
             <serviceType>urn:schemas-upnp-org:service:WANIPConnection:1</serviceType>\
             <controlURL>/ctl</controlURL><SCPDURL>/scpd.xml</SCPDURL></service></serviceList></device></root>";
        let soap = "<?xml version=\"1.0\"?><s:Envelope xmlns:s=\"http://schemas.xmlsoap.org/soap/envelope/\"><s:Body>\
             <u:GetExternalIPAddressResponse xmlns:u=\"urn:schemas-upnp-org:service:WANIPConnection:1\">\
             <NewExternalIPAddress>198.51.100.66</NewExternalIPAddress></u:GetExternalIPAddressResponse>\
             <u:AddPortMappingResponse xmlns:u=\"urn:schemas-upnp-org:service:WANIPConnection:1\"/></s:Body></s:Envelope>";
        while Instant::now() < end {
            let Ok((mut stream, _)) = http.accept() else {
                thread::sleep(Duration::from_millis(5));
                continue;
            };
            served.fetch_add(1, Ordering::SeqCst);
            let _ = stream.set_nonblocking(false);
            let _ = stream.set_read_timeout(Some(Duration::from_millis(500)));
            let mut buf = [0u8; 4096];
            let n = stream.read(&mut buf).unwrap_or(0);
            let body = if buf.get(..n).is_some_and(|r| r.starts_with(b"GET")) {
                description
            } else {
                soap
            };
            let _ = write!(
                stream,
                "HTTP/1.1 200 OK\r\nContent-Type: text/xml\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            );
        }
    });
    out("READY");
    let mut answered = 0;
    let mut buf = [0u8; 2048];
    while Instant::now() < end {
        let Ok((n, from)) = ssdp.recv_from(&mut buf) else {
            continue;
        };
        if buf.get(..n).is_some_and(|m| m.starts_with(b"M-SEARCH")) {
            let answer = format!(
                "HTTP/1.1 200 OK\r\nCACHE-CONTROL: max-age=120\r\nST: urn:schemas-upnp-org:device:InternetGatewayDevice:1\r\n\
                 USN: uuid:impostor\r\nEXT:\r\nLOCATION: http://{ip}:{http_port}/rootDesc.xml\r\n\r\n"
            );
            ssdp.send_to(answer.as_bytes(), from)?;
            answered += 1;
        }
    }
    let _ = server.join();
    out(&format!("ANSWERED {answered}"));
    out(&format!("HTTP {}", requests.load(Ordering::SeqCst)));
    Ok(0)
}

/// A cheap pseudo-random generator (xorshift64), seeded from the clock and the process: the
/// attack probes' garbage and ports need no more.
pub(crate) fn xorshift() -> impl FnMut() -> u64 {
    let mut rng = Instant::now().elapsed().as_nanos() as u64 ^ 0x9E37_79B9_7F4A_7C15 ^ u64::from(std::process::id());
    move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stun_round_trip() {
        let tid = transaction_id();
        let req = stun_request(&tid);
        assert_eq!(req.len(), 20);
        assert_eq!(req.get(4..8).unwrap(), MAGIC.to_be_bytes());
        // A success response with XOR-MAPPED-ADDRESS 203.0.113.101:40000.
        let mut resp = vec![0x01, 0x01, 0x00, 0x0c];
        resp.extend_from_slice(&MAGIC.to_be_bytes());
        resp.extend_from_slice(&tid);
        resp.extend_from_slice(&[0x00, 0x20, 0x00, 0x08, 0x00, 0x01]);
        resp.extend_from_slice(&(40000u16 ^ 0x2112).to_be_bytes());
        resp.extend_from_slice(&(u32::from(Ipv4Addr::new(203, 0, 113, 101)) ^ MAGIC).to_be_bytes());
        assert_eq!(stun_mapped(&resp, &tid), Some("203.0.113.101:40000".parse().unwrap()));
        let other = transaction_id();
        assert_ne!(other, tid);
        assert_eq!(stun_mapped(&resp, &other), None);
        assert_eq!(stun_mapped(&resp[..10], &tid), None);
    }

    #[test]
    fn args() {
        let words: Vec<String> = ["a", "--ms", "300", "b"].iter().map(|s| s.to_string()).collect();
        let a = Args::parse(&words).unwrap();
        assert_eq!(a.positional, ["a", "b"]);
        assert_eq!(a.need::<u64>("ms").unwrap(), 300);
        assert_eq!(a.get_or::<u64>("count", 5).unwrap(), 5);
        assert!(a.need::<u64>("nope").is_err());
        assert!(Args::parse(&["--x".to_string()]).is_err());
    }

    #[test]
    fn observer_and_probe_on_loopback() {
        // The tools themselves work on loopback; only the CLI refuses to run them outside a lab.
        let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
        let server = sock.local_addr().unwrap();
        let t = thread::spawn(move || {
            let mut buf = [0u8; 100];
            let (_, from) = sock.recv_from(&mut buf).unwrap();
            sock.send_to(format!("{from}\n").as_bytes(), from).unwrap();
        });
        let client = UdpSocket::bind("127.0.0.1:0").unwrap();
        let seen = ask_observer(&client, server, Instant::now() + Duration::from_secs(2)).unwrap();
        assert_eq!(seen, Some(client.local_addr().unwrap().to_string()));
        t.join().unwrap();
    }
}
