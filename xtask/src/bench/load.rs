//! The load generator behind `xtask lab probe load` (a lab probe, not listed in its help): STUN
//! Binding requests (RFC 8489) to one server from many source ports, keeping a window of
//! requests in flight per source, counting valid answers.
//!
//! ```text
//! probe load --to ADDR [--seconds S] [--sources N] [--window W] [--timeout-ms T]
//!            [--rotate K] [--garbage G] [--bind-ips IP,IP...]
//! ```
//!
//! Each source is a thread with its own UDP socket, connected to `--to` (so only the server's
//! datagrams reach it), bound to the next of `--bind-ips` (default: any). It sends `W` requests,
//! then one new request per answer; when nothing arrives for `T` ms the requests in flight count
//! as lost and the window is sent again. An answer is valid when it is a Binding success
//! response to a request in flight whose mapped address is the source's own (the lab's public
//! hosts have no NAT). With `--rotate K` a source takes a fresh socket (a new port, and the next
//! IP) after `K` answers, so a run comes from many distinct endpoints. With `--garbage G`, `G`
//! malformed datagrams precede every request. It sends only to `--to`, for at most 120 s, and
//! prints one line:
//!
//! `LOAD sent=N answered=N lost=N bad=N other=N garbage=N errors=N endpoints=N elapsed_ms=N rate=R`

use std::collections::HashSet;
use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::io::ErrorKind;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use crate::lab::probe::{Args, stun_mapped, stun_request};
use crate::lab::{Result, err};

/// What one load run is asked to do.
#[derive(Debug, Clone)]
pub struct Config {
    /// The server.
    pub to: SocketAddr,
    /// How long to send.
    pub duration: Duration,
    /// Concurrent sources (threads, each with its own socket).
    pub sources: usize,
    /// Requests in flight per source.
    pub window: usize,
    /// After this long without an answer, the requests in flight are lost.
    pub timeout: Duration,
    /// Answers after which a source takes a fresh socket.
    pub rotate: Option<u64>,
    /// Malformed datagrams sent before every request.
    pub garbage: u32,
    /// Local addresses the sources bind to, in turn (empty: any).
    pub bind_ips: Vec<IpAddr>,
}

impl Config {
    /// The configuration on a `probe load` command line.
    pub fn from_args(a: &Args) -> Result<Config> {
        let to: String = a.need("to")?;
        let to: SocketAddr = to.parse().map_err(|_| err(format!("bad --to '{to}' (IP:PORT)")))?;
        let seconds: f64 = a.get_or("seconds", 3.0)?;
        if !(0.0..=120.0).contains(&seconds) {
            return Err(err("--seconds must be between 0 and 120"));
        }
        let bind_ips = match a.get::<String>("bind-ips")? {
            Some(list) => list
                .split(',')
                .map(|ip| ip.parse().map_err(|_| err(format!("bad IP '{ip}' in --bind-ips"))))
                .collect::<Result<Vec<IpAddr>>>()?,
            None => Vec::new(),
        };
        let config = Config {
            to,
            duration: Duration::from_secs_f64(seconds),
            sources: a.get_or("sources", 16)?,
            window: a.get_or("window", 8)?,
            timeout: Duration::from_millis(a.get_or("timeout-ms", 200)?),
            rotate: a.get("rotate")?,
            garbage: a.get_or("garbage", 0)?,
            bind_ips,
        };
        if !(1..=512).contains(&config.sources) || !(1..=256).contains(&config.window) || config.garbage > 16 {
            return Err(err("--sources must be 1..=512, --window 1..=256, --garbage 0..=16"));
        }
        if config.rotate == Some(0) || config.timeout.is_zero() {
            return Err(err("--rotate and --timeout-ms must be positive"));
        }
        Ok(config)
    }
}

/// What a run counted.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tally {
    /// Requests sent.
    pub sent: u64,
    /// Valid answers.
    pub answered: u64,
    /// Requests that got no answer in time.
    pub lost: u64,
    /// Answers to our requests that were not valid (an error, or a wrong mapped address).
    pub bad: u64,
    /// Other datagrams from the server (answers to garbage, late answers).
    pub other: u64,
    /// Malformed datagrams sent.
    pub garbage: u64,
    /// Failed sends, receives and binds.
    pub errors: u64,
    /// Distinct local endpoints used.
    pub endpoints: u64,
}

impl Tally {
    fn add(&mut self, o: &Tally) {
        self.sent += o.sent;
        self.answered += o.answered;
        self.lost += o.lost;
        self.bad += o.bad;
        self.other += o.other;
        self.garbage += o.garbage;
        self.errors += o.errors;
    }

    /// The `LOAD ...` line of a run that sent for `period` and ended after `elapsed`; the
    /// rate is answers per second of `period` (answers after it are not counted).
    pub fn line(&self, period: Duration, elapsed: Duration) -> String {
        let secs = period.as_secs_f64().max(1e-9);
        format!(
            "LOAD sent={} answered={} lost={} bad={} other={} garbage={} errors={} endpoints={} elapsed_ms={} rate={:.1}",
            self.sent,
            self.answered,
            self.lost,
            self.bad,
            self.other,
            self.garbage,
            self.errors,
            self.endpoints,
            elapsed.as_millis(),
            self.answered as f64 / secs
        )
    }

    /// Reads a `LOAD ...` line back: its fields and the rate.
    pub fn parse(line: &str) -> Option<(Tally, f64)> {
        let rest = line.trim().strip_prefix("LOAD ")?;
        let mut t = Tally::default();
        let mut rate = None;
        for word in rest.split_whitespace() {
            let (k, v) = word.split_once('=')?;
            let n = || v.parse::<u64>().ok();
            match k {
                "sent" => t.sent = n()?,
                "answered" => t.answered = n()?,
                "lost" => t.lost = n()?,
                "bad" => t.bad = n()?,
                "other" => t.other = n()?,
                "garbage" => t.garbage = n()?,
                "errors" => t.errors = n()?,
                "endpoints" => t.endpoints = n()?,
                "rate" => rate = v.parse::<f64>().ok(),
                _ => {}
            }
        }
        Some((t, rate?))
    }
}

/// Runs `probe load ARGS`: prints the `LOAD` line.
pub fn main(a: &Args) -> Result<i32> {
    let config = Config::from_args(a)?;
    let (tally, elapsed) = run(&config)?;
    println!("{}", tally.line(config.duration, elapsed));
    Ok(0)
}

/// Runs the load; the counts and how long it ran.
pub fn run(config: &Config) -> Result<(Tally, Duration)> {
    let config = Arc::new(config.clone());
    let start = Instant::now();
    let end = start + config.duration;
    let mut threads = Vec::new();
    for i in 0..config.sources {
        let c = Arc::clone(&config);
        let t = thread::Builder::new()
            .name(format!("load-{i}"))
            .spawn(move || Source::new(i).run(&c, end))
            .map_err(|e| err(format!("cannot start a load thread: {e}")))?;
        threads.push(t);
    }
    let mut total = Tally::default();
    let mut endpoints = HashSet::new();
    for t in threads {
        let (tally, used) = t.join().map_err(|_| err("a load thread panicked"))?;
        total.add(&tally);
        endpoints.extend(used);
    }
    total.endpoints = endpoints.len() as u64;
    Ok((total, start.elapsed()))
}

/// A fast pseudo-random generator (xorshift64*), seeded per thread.
struct Rng(u64);

impl Rng {
    fn new() -> Rng {
        Rng(RandomState::new().hash_one(Instant::now()) | 1)
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn tid(&mut self) -> [u8; 12] {
        let mut id = [0u8; 12];
        let (a, b) = (self.next().to_be_bytes(), self.next().to_be_bytes());
        for (d, s) in id.iter_mut().zip(a.iter().chain(b.iter())) {
            *d = *s;
        }
        id
    }
}

/// A malformed datagram, one of several kinds in turn: random bytes; a STUN header whose length
/// does not match; a Binding request cut inside an attribute; a Binding request with a bad magic
/// cookie.
fn garbage(rng: &mut Rng, n: u64) -> Vec<u8> {
    let random = |rng: &mut Rng, len: u64| (0..len).map(|_| rng.next() as u8).collect::<Vec<u8>>();
    match n % 4 {
        0 => {
            let len = 1 + rng.next() % 200;
            random(rng, len)
        }
        1 => {
            let mut m = stun_request(&rng.tid());
            m.splice(2..4, 200u16.to_be_bytes());
            m
        }
        2 => {
            let mut m = stun_request(&rng.tid());
            m.splice(2..4, 8u16.to_be_bytes());
            // An attribute that claims 40 bytes and has 4.
            m.extend_from_slice(&[0x80, 0x22, 0x00, 0x28, b'n', b'a', b't', b't']);
            m
        }
        _ => {
            let mut m = stun_request(&rng.tid());
            m.splice(4..8, [0xde, 0xad, 0xbe, 0xef]);
            m
        }
    }
}

/// What an answer is to the requests in flight.
#[derive(Debug, PartialEq, Eq)]
enum Answer {
    /// A valid answer to the request at this index.
    Valid(usize),
    /// An answer to the request at this index, but not a valid one.
    Bad(usize),
    /// Not an answer to a request in flight.
    Other,
}

/// Classifies `msg`, received by a socket whose own address is `local`.
fn classify(msg: &[u8], in_flight: &[[u8; 12]], local: SocketAddr) -> Answer {
    let Some(i) = msg
        .get(8..20)
        .and_then(|tid| in_flight.iter().position(|t| t.as_slice() == tid))
    else {
        return Answer::Other;
    };
    let valid = in_flight
        .get(i)
        .and_then(|tid| stun_mapped(msg, tid))
        .is_some_and(|m| SocketAddr::V4(m) == local);
    if valid { Answer::Valid(i) } else { Answer::Bad(i) }
}

/// One source: its socket (replaced on rotation) and its counts.
struct Source {
    index: usize,
    rng: Rng,
    tally: Tally,
    used: Vec<SocketAddr>,
    rotations: usize,
}

impl Source {
    fn new(index: usize) -> Source {
        Source {
            index,
            rng: Rng::new(),
            tally: Tally::default(),
            used: Vec::new(),
            rotations: 0,
        }
    }

    /// A fresh socket on the next bind address, connected to the server.
    fn socket(&mut self, c: &Config) -> Result<(UdpSocket, SocketAddr)> {
        let ip = match c.bind_ips.len() {
            0 => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            n => c
                .bind_ips
                .get((self.index + self.rotations) % n)
                .copied()
                .unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED)),
        };
        self.rotations += 1;
        let sock = UdpSocket::bind(SocketAddr::new(ip, 0))?;
        sock.connect(c.to)?;
        sock.set_read_timeout(Some(c.timeout))?;
        let local = sock.local_addr()?;
        self.used.push(local);
        Ok((sock, local))
    }

    fn send(&mut self, sock: &UdpSocket, c: &Config, in_flight: &mut Vec<[u8; 12]>) {
        for _ in 0..c.garbage {
            let g = garbage(&mut self.rng, self.tally.garbage + self.tally.sent);
            match sock.send(&g) {
                Ok(_) => self.tally.garbage += 1,
                Err(_) => self.tally.errors += 1,
            }
        }
        let tid = self.rng.tid();
        match sock.send(&stun_request(&tid)) {
            Ok(_) => {
                self.tally.sent += 1;
                in_flight.push(tid);
            }
            Err(_) => self.tally.errors += 1,
        }
    }

    /// Sends and counts until `end`; the counts and the endpoints used.
    fn run(mut self, c: &Config, end: Instant) -> (Tally, Vec<SocketAddr>) {
        let mut buf = [0u8; 1500];
        while Instant::now() < end {
            let (sock, local) = match self.socket(c) {
                Ok(s) => s,
                Err(_) => {
                    self.tally.errors += 1;
                    thread::sleep(Duration::from_millis(10));
                    continue;
                }
            };
            let mut in_flight: Vec<[u8; 12]> = Vec::with_capacity(c.window);
            let mut answered_here = 0u64;
            let mut draining = false;
            while Instant::now() < end {
                if !draining {
                    while in_flight.len() < c.window {
                        self.send(&sock, c, &mut in_flight);
                    }
                }
                let received = sock.recv(&mut buf);
                if Instant::now() >= end {
                    break; // the period is over: what comes now is not counted
                }
                match received {
                    Ok(n) => match classify(buf.get(..n).unwrap_or_default(), &in_flight, local) {
                        Answer::Valid(i) => {
                            in_flight.swap_remove(i);
                            self.tally.answered += 1;
                            answered_here += 1;
                            draining = c.rotate.is_some_and(|k| answered_here >= k);
                        }
                        Answer::Bad(i) => {
                            in_flight.swap_remove(i);
                            self.tally.bad += 1;
                        }
                        Answer::Other => self.tally.other += 1,
                    },
                    Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                        self.tally.lost += in_flight.len() as u64;
                        in_flight.clear();
                    }
                    // An ICMP error (nothing listening) shows up as a failed receive.
                    Err(_) => {
                        self.tally.errors += 1;
                        self.tally.lost += in_flight.len() as u64;
                        in_flight.clear();
                        thread::sleep(Duration::from_millis(10));
                    }
                }
                if draining && in_flight.is_empty() {
                    break; // rotate: a fresh socket
                }
            }
        }
        (self.tally, self.used)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_answers() {
        let local: SocketAddr = "198.51.100.11:40000".parse().unwrap();
        let mut rng = Rng::new();
        let (a, b) = (rng.tid(), rng.tid());
        let answer = |tid: &[u8; 12], port: u16| {
            let mut m = vec![0x01, 0x01, 0x00, 0x0c, 0x21, 0x12, 0xa4, 0x42];
            m.extend_from_slice(tid);
            m.extend_from_slice(&[0x00, 0x20, 0x00, 0x08, 0x00, 0x01]);
            m.extend_from_slice(&(port ^ 0x2112).to_be_bytes());
            m.extend_from_slice(&(u32::from(Ipv4Addr::new(198, 51, 100, 11)) ^ 0x2112_a442).to_be_bytes());
            m
        };
        assert_eq!(classify(&answer(&b, 40000), &[a, b], local), Answer::Valid(1));
        assert_eq!(classify(&answer(&b, 40001), &[a, b], local), Answer::Bad(1));
        assert_eq!(classify(&answer(&rng.tid(), 40000), &[a, b], local), Answer::Other);
        assert_eq!(classify(&[1, 2, 3], &[a, b], local), Answer::Other);
    }

    #[test]
    fn garbage_is_never_a_valid_request() {
        let mut rng = Rng::new();
        for n in 0..100 {
            let g = garbage(&mut rng, n);
            let valid = g.len() == 20 && g[..4] == [0, 1, 0, 0] && g[4..8] == [0x21, 0x12, 0xa4, 0x42];
            assert!(!valid, "{g:?}");
        }
    }

    #[test]
    fn tally_lines_round_trip() {
        let t = Tally {
            sent: 10,
            answered: 9,
            lost: 1,
            endpoints: 3,
            ..Tally::default()
        };
        let line = t.line(Duration::from_secs(2), Duration::from_millis(2100));
        assert_eq!(Tally::parse(&line), Some((t, 4.5)));
        assert_eq!(Tally::parse("nope"), None);
    }

    #[test]
    fn loads_a_loopback_server() {
        // A tiny STUN responder on loopback: answers each request with the sender's address.
        let server = UdpSocket::bind("127.0.0.1:0").unwrap();
        let to = server.local_addr().unwrap();
        server.set_read_timeout(Some(Duration::from_millis(100))).unwrap();
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let t = thread::spawn(move || {
            let mut buf = [0u8; 1500];
            while !flag.load(std::sync::atomic::Ordering::SeqCst) {
                let Ok((n, from)) = server.recv_from(&mut buf) else {
                    continue;
                };
                if n != 20 || buf[4..8] != [0x21, 0x12, 0xa4, 0x42] {
                    continue;
                }
                let SocketAddr::V4(from4) = from else { continue };
                let mut m = vec![0x01, 0x01, 0x00, 0x0c, 0x21, 0x12, 0xa4, 0x42];
                m.extend_from_slice(&buf[8..20]);
                m.extend_from_slice(&[0x00, 0x20, 0x00, 0x08, 0x00, 0x01]);
                m.extend_from_slice(&(from4.port() ^ 0x2112).to_be_bytes());
                m.extend_from_slice(&(u32::from(*from4.ip()) ^ 0x2112_a442).to_be_bytes());
                server.send_to(&m, from).unwrap();
            }
        });
        let config = Config {
            to,
            duration: Duration::from_millis(300),
            sources: 3,
            window: 4,
            timeout: Duration::from_millis(100),
            rotate: Some(20),
            garbage: 1,
            bind_ips: vec!["127.0.0.1".parse().unwrap()],
        };
        let (tally, _) = run(&config).unwrap();
        stop.store(true, std::sync::atomic::Ordering::SeqCst);
        t.join().unwrap();
        assert!(tally.answered > 20, "{tally:?}");
        assert_eq!(tally.bad, 0, "{tally:?}");
        assert!(tally.endpoints > 3, "rotation gives fresh ports: {tally:?}");
        assert!(tally.garbage >= tally.sent - 3 * 4, "{tally:?}");
    }
}
