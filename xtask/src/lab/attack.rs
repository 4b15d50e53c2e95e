//! Attackers for the lab's security tests, run as probes inside lab nodes
//! (`xtask lab probe udp-relay ...`). They hold no session secret: they only relay, replay and
//! connect, as an attacker who has not read the tokens can.
//!
//! - `probe udp-relay --listen ADDR --a ADDR --ms N`: a UDP relay at an address that a peer's
//!   token lists (planted there by the test): every datagram from `a` goes to the last other
//!   address heard, every other datagram goes to `a`. Prints `RELAYED n`.
//! - `probe tcp-relay --a ADDR --b ADDR --ms N [--silent K]`: connects to both punch ports again
//!   and again, relaying bytes between each pair of connections both ways, and holds `K` silent
//!   connections to each port. Prints `PAIRS n BYTES b SILENT k`.
//! - `probe tcp-spray --to ADDR --ms N [--interval-ms M] [--hold-ms H]`: opens TCP
//!   connections to `ADDR` (a relayed address, say) every `M` ms (default 20), at most 4 at a
//!   time, for `N` ms; writes on each either garbage (1 to 200 random bytes) or a random 64-byte
//!   frame shaped like a punch message (`NATP`, version 2), then reads for up to `H` ms (default
//!   200) and closes. Prints `READY`, then `CONNECTED c FAILED f WROTE w READ b ENDED e` (`ENDED`:
//!   connections the far side closed or reset within `H`).

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use super::probe::Args;
use super::{Result, err};

fn parse(s: &str) -> Result<SocketAddr> {
    s.parse().map_err(|e| err(format!("bad address '{s}': {e}")))
}

/// `probe udp-relay`.
pub fn udp_relay(a: &Args) -> Result<i32> {
    let listen = parse(&a.need::<String>("listen")?)?;
    let side_a = parse(&a.need::<String>("a")?)?;
    let until = Instant::now() + Duration::from_millis(a.need("ms")?);
    let sock = UdpSocket::bind(listen).map_err(|e| err(format!("bind {listen}: {e}")))?;
    sock.set_read_timeout(Some(Duration::from_millis(50)))
        .map_err(|e| err(e.to_string()))?;
    println!("READY");
    let mut other: Option<SocketAddr> = None;
    let mut relayed = 0u64;
    let mut buf = [0u8; 2048];
    while Instant::now() < until {
        match sock.recv_from(&mut buf) {
            Ok((n, from)) => {
                let data = buf.get(..n).unwrap_or_default();
                let to = if from == side_a {
                    other
                } else {
                    other = Some(from);
                    Some(side_a)
                };
                if let Some(to) = to
                    && sock.send_to(data, to).is_ok()
                {
                    relayed += 1;
                }
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(_) => {}
        }
    }
    println!("RELAYED {relayed}");
    Ok(0)
}

/// Copies `from` to `to` until either ends, counting bytes.
fn pump(mut from: TcpStream, mut to: TcpStream, bytes: Arc<AtomicU64>) {
    let mut buf = [0u8; 4096];
    while let Ok(n) = from.read(&mut buf) {
        if n == 0 || to.write_all(buf.get(..n).unwrap_or_default()).is_err() {
            break;
        }
        bytes.fetch_add(n as u64, Ordering::SeqCst);
    }
    let _ = to.shutdown(std::net::Shutdown::Both);
}

/// `probe tcp-relay`.
pub fn tcp_relay(a: &Args) -> Result<i32> {
    let side_a = parse(&a.need::<String>("a")?)?;
    let side_b = parse(&a.need::<String>("b")?)?;
    let until = Instant::now() + Duration::from_millis(a.need("ms")?);
    let silent: usize = a.get_or("silent", 0)?;
    let bytes = Arc::new(AtomicU64::new(0));
    let connect = |to: SocketAddr| TcpStream::connect_timeout(&to, Duration::from_millis(200)).ok();
    let mut held: Vec<TcpStream> = Vec::new();
    let (mut pairs, mut held_a, mut held_b) = (0u32, 0usize, 0usize);
    println!("READY");
    while Instant::now() < until {
        // Silent connections first: they take the punch's handshake slots.
        while held_a < silent
            && let Some(s) = connect(side_a)
        {
            held.push(s);
            held_a += 1;
        }
        while held_b < silent
            && let Some(s) = connect(side_b)
        {
            held.push(s);
            held_b += 1;
        }
        if let (Some(x), Some(y)) = (connect(side_a), connect(side_b))
            && let (Ok(x2), Ok(y2)) = (x.try_clone(), y.try_clone())
        {
            pairs += 1;
            let (b1, b2) = (Arc::clone(&bytes), Arc::clone(&bytes));
            thread::spawn(move || pump(x, y2, b1));
            thread::spawn(move || pump(y, x2, b2));
        }
        thread::sleep(Duration::from_millis(20));
    }
    println!(
        "PAIRS {pairs} BYTES {} SILENT {}",
        bytes.load(Ordering::SeqCst),
        held_a + held_b
    );
    Ok(0)
}

/// How many `tcp-spray` connections are open at a time, at most.
const SPRAY_AT_ONCE: usize = 4;

/// What `tcp-spray`'s connections saw.
#[derive(Default)]
struct Sprayed {
    connected: AtomicUsize,
    failed: AtomicUsize,
    wrote: AtomicUsize,
    read: AtomicU64,
    ended: AtomicUsize,
}

/// The bytes `tcp-spray` writes on its connection number `i`: a random punch-shaped frame
/// (even `i`) or garbage.
fn spray_payload(i: u64, mut next: impl FnMut() -> u64) -> Vec<u8> {
    let len = if i.is_multiple_of(2) { 64 } else { 1 + next() % 200 };
    let mut payload: Vec<u8> = (0..len).map(|_| next() as u8).collect();
    if i.is_multiple_of(2) {
        // Magic, version 2, hello (3) or choose (4), no flags, a role: as natt's TCP handshake
        // frames.
        let head = [
            b'N',
            b'A',
            b'T',
            b'P',
            2,
            3 + u8::from(i.is_multiple_of(4)),
            0,
            u8::from(i.is_multiple_of(3)),
        ];
        payload.splice(..8, head);
    }
    payload
}

/// One `tcp-spray` connection: connect, write `payload`, read for `hold`, close.
fn spray_one(to: SocketAddr, payload: &[u8], hold: Duration, seen: &Sprayed) {
    let Ok(mut s) = TcpStream::connect_timeout(&to, Duration::from_millis(300)) else {
        seen.failed.fetch_add(1, Ordering::SeqCst);
        return;
    };
    seen.connected.fetch_add(1, Ordering::SeqCst);
    if s.write_all(payload).is_ok() {
        seen.wrote.fetch_add(1, Ordering::SeqCst);
    }
    let end = Instant::now() + hold;
    let mut buf = [0u8; 512];
    while let Some(left) = end.checked_duration_since(Instant::now()).filter(|d| !d.is_zero()) {
        if s.set_read_timeout(Some(left)).is_err() {
            break;
        }
        match s.read(&mut buf) {
            Ok(0) => {
                seen.ended.fetch_add(1, Ordering::SeqCst);
                break;
            }
            Ok(n) => {
                seen.read.fetch_add(n as u64, Ordering::SeqCst);
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => break,
            Err(_) => {
                seen.ended.fetch_add(1, Ordering::SeqCst);
                break;
            }
        }
    }
}

/// `probe tcp-spray`.
pub fn tcp_spray(a: &Args) -> Result<i32> {
    let to = parse(&a.need::<String>("to")?)?;
    let until = Instant::now() + Duration::from_millis(a.need("ms")?);
    let interval = Duration::from_millis(a.get_or("interval-ms", 20)?);
    let hold = Duration::from_millis(a.get_or("hold-ms", 200)?);
    let seen = Arc::new(Sprayed::default());
    let mut next = super::probe::xorshift();
    let mut open: Vec<thread::JoinHandle<()>> = Vec::new();
    println!("READY");
    let mut i = 0u64;
    while Instant::now() < until {
        open.retain(|t| !t.is_finished());
        if open.len() < SPRAY_AT_ONCE {
            let payload = spray_payload(i, &mut next);
            let seen = Arc::clone(&seen);
            open.push(thread::spawn(move || spray_one(to, &payload, hold, &seen)));
            i += 1;
        }
        thread::sleep(interval);
    }
    for t in open {
        let _ = t.join();
    }
    println!(
        "CONNECTED {} FAILED {} WROTE {} READ {} ENDED {}",
        seen.connected.load(Ordering::SeqCst),
        seen.failed.load(Ordering::SeqCst),
        seen.wrote.load(Ordering::SeqCst),
        seen.read.load(Ordering::SeqCst),
        seen.ended.load(Ordering::SeqCst),
    );
    Ok(0)
}
