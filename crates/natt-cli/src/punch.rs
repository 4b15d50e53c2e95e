//! `natt punch`: map a socket, write our token, read the peer's, punch a hole, then relay:
//! stdin to the peer and the peer to stdout (one datagram per line over UDP; a byte stream
//! over TCP) until stdin ends.

use std::fs;
use std::io::{self, BufRead, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream, UdpSocket};
use std::path::Path;
use std::thread;
use std::time::{Duration, Instant};

use serde::Serialize;

use natt::{
    MappedTcpSocket, MappedUdpSocket, PubRendezvousInfo, PunchedUdpSocket, gen_rendezvous_info, is_punch_packet,
    tcp_punch_hole,
};

use crate::args::PunchArgs;
use crate::context;
use crate::output;

/// `natt punch --json`: `{"peer":"IP:PORT","elapsed_ms":N,"via":"udp|tcp"}`.
#[derive(Debug, Serialize)]
struct PunchReport {
    peer: String,
    elapsed_ms: u128,
    via: &'static str,
}

/// Maps, exchanges tokens, punches and relays.
pub fn run(args: &PunchArgs) -> Result<(), String> {
    let timeout = context::seconds(args.timeout)?;
    let linger = context::seconds(args.linger)?;
    let (mc, _) = context::build(&args.techniques, context::seconds(args.map_timeout)?)?;
    let local = SocketAddr::from((Ipv4Addr::UNSPECIFIED, args.port));
    let mut stdin = io::stdin().lock();
    if args.udp {
        let mapped = MappedUdpSocket::bind(local, &mc).map_err(|e| format!("cannot map a UDP socket: {e}"))?;
        let (ours, public) = gen_rendezvous_info(mapped.endpoints);
        let theirs = exchange(&public, args, &mut stdin, timeout)?;
        let start = Instant::now();
        let punched = PunchedUdpSocket::punch_hole(mapped.socket, ours, theirs, start + timeout)
            .map_err(|e| format!("UDP punch failed: {e}"))?;
        report(args, punched.peer_addr, start, "udp")?;
        relay_udp(&punched.socket, punched.peer_addr, &mut stdin, linger)?;
        // Waits for the routers to delete the mappings before the process exits.
        let mut port_mappings = mapped.port_mappings;
        port_mappings.release();
    } else {
        let mapped = MappedTcpSocket::bind(local, &mc).map_err(|e| format!("cannot map a TCP socket: {e}"))?;
        let (ours, public) = gen_rendezvous_info(mapped.endpoints);
        let theirs = exchange(&public, args, &mut stdin, timeout)?;
        let start = Instant::now();
        let stream = tcp_punch_hole(mapped.socket, ours, theirs, start + timeout)
            .map_err(|e| format!("TCP punch failed: {e}"))?;
        let peer = stream.peer_addr().map_err(|e| e.to_string())?;
        report(args, peer, start, "tcp")?;
        relay_tcp(stream, &mut stdin)?;
        let mut port_mappings = mapped.port_mappings;
        port_mappings.release();
    }
    Ok(())
}

/// Writes our token and reads the peer's.
fn exchange(
    ours: &PubRendezvousInfo,
    args: &PunchArgs,
    stdin: &mut impl BufRead,
    timeout: Duration,
) -> Result<PubRendezvousInfo, String> {
    let token = ours.to_token();
    if args.token_out == "-" {
        println!("{token}");
    } else {
        write_token(Path::new(&args.token_out), &format!("{token}\n"))
            .map_err(|e| format!("cannot write {}: {e}", args.token_out))?;
    }
    let text = if args.peer_token == "-" {
        let mut line = String::new();
        stdin
            .read_line(&mut line)
            .map_err(|e| format!("cannot read the peer's token: {e}"))?;
        line
    } else {
        wait_for_file(Path::new(&args.peer_token), Instant::now() + timeout)?
    };
    text.trim().parse().map_err(|e| format!("bad peer token: {e}"))
}

/// Writes the token to `path`. A regular file (or a new one) is written beside `path` and
/// renamed over it, so a reader polling the file never sees a partial token. Anything else
/// (`/dev/null`, a FIFO, `/dev/stdout`) is written in place: renaming over it would replace the
/// device or pipe with a regular file.
fn write_token(path: &Path, text: &str) -> io::Result<()> {
    match fs::metadata(path) {
        Ok(meta) if !meta.is_file() => {
            return fs::OpenOptions::new()
                .write(true)
                .open(path)?
                .write_all(text.as_bytes());
        }
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    fs::write(&tmp, text)?;
    fs::rename(&tmp, path).inspect_err(|_| {
        let _ = fs::remove_file(&tmp);
    })
}

/// Waits until `path` exists and holds a line, then returns it.
fn wait_for_file(path: &Path, deadline: Instant) -> Result<String, String> {
    loop {
        if let Ok(text) = fs::read_to_string(path)
            && text.ends_with('\n')
        {
            return Ok(text);
        }
        if Instant::now() >= deadline {
            return Err(format!("no peer token in {} before the deadline", path.display()));
        }
        // Polled often: the two sides start punching when each sees the other's token, and
        // any lag between them adds to the time the punch takes.
        thread::sleep(TOKEN_POLL);
    }
}

/// How often `--peer-token FILE` is looked at while waiting for it.
const TOKEN_POLL: Duration = Duration::from_millis(2);

fn report(args: &PunchArgs, peer: SocketAddr, start: Instant, via: &'static str) -> Result<(), String> {
    let elapsed_ms = start.elapsed().as_millis();
    if args.json {
        output::print_json(&PunchReport {
            peer: peer.to_string(),
            elapsed_ms,
            via,
        })
    } else {
        eprintln!("natt: connected to {peer} over {via} in {elapsed_ms} ms");
        Ok(())
    }
}

/// Relays stdin lines to the peer as datagrams and the peer's datagrams to stdout as lines,
/// until stdin ends and `linger` has passed. Late punch packets and datagrams from anyone
/// else are dropped.
fn relay_udp(socket: &UdpSocket, peer: SocketAddr, stdin: &mut impl BufRead, linger: Duration) -> Result<(), String> {
    let receiver = socket.try_clone().map_err(|e| e.to_string())?;
    receiver
        .set_read_timeout(Some(Duration::from_millis(50)))
        .map_err(|e| e.to_string())?;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = std::sync::Arc::clone(&stop);
    let printer = thread::spawn(move || {
        let mut buf = [0u8; 65536];
        let mut out = io::stdout();
        while !flag.load(std::sync::atomic::Ordering::SeqCst) {
            match receiver.recv_from(&mut buf) {
                Ok((n, from)) if from == peer => {
                    let data = buf.get(..n).unwrap_or(&[]);
                    if !is_punch_packet(data) {
                        let _ = out
                            .write_all(data)
                            .and_then(|()| out.write_all(b"\n"))
                            .and_then(|()| out.flush());
                    }
                }
                _ => {}
            }
        }
    });
    let mut line = String::new();
    loop {
        line.clear();
        match stdin.read_line(&mut line) {
            Ok(0) => break,
            Ok(_) => {
                let data = line.strip_suffix('\n').unwrap_or(&line);
                socket
                    .send_to(data.as_bytes(), peer)
                    .map_err(|e| format!("send to {peer}: {e}"))?;
            }
            Err(e) => return Err(format!("reading stdin: {e}")),
        }
    }
    thread::sleep(linger);
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let _ = printer.join();
    Ok(())
}

/// Relays stdin to the stream and the stream to stdout; at the end of stdin, closes our
/// sending side and waits until the peer closes its own.
fn relay_tcp(stream: TcpStream, stdin: &mut impl Read) -> Result<(), String> {
    let mut reader = stream.try_clone().map_err(|e| e.to_string())?;
    let printer = thread::spawn(move || {
        let mut out = io::stdout();
        let mut buf = [0u8; 16384];
        while let Ok(n) = reader.read(&mut buf) {
            if n == 0
                || out
                    .write_all(buf.get(..n).unwrap_or(&[]))
                    .and_then(|()| out.flush())
                    .is_err()
            {
                break;
            }
        }
    });
    let mut writer = &stream;
    io::copy(stdin, &mut writer).map_err(|e| format!("relaying stdin: {e}"))?;
    let _ = stream.shutdown(std::net::Shutdown::Write);
    let _ = printer.join();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("natt-cli-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn token_file_is_replaced_whole() {
        let dir = scratch("regular");
        let path = dir.join("token");
        fs::write(&path, "old token that is longer\n").unwrap();
        write_token(&path, "natt1.new\n").unwrap();
        assert_eq!(fs::read_to_string(&path).unwrap(), "natt1.new\n");
        assert_eq!(fs::read_dir(&dir).unwrap().count(), 1, "no temporary file left behind");
        fs::remove_dir_all(&dir).unwrap();
    }

    /// Regression: `--token-out /dev/null` used to rename a regular file over `/dev/null`.
    /// A FIFO stands in for the device: it must still be a FIFO afterwards, and its reader
    /// must get the token.
    #[test]
    fn token_written_into_a_fifo_keeps_the_fifo() {
        use std::os::unix::fs::FileTypeExt;
        let dir = scratch("fifo");
        let path = dir.join("pipe");
        let made = std::process::Command::new("mkfifo").arg(&path).status();
        if !made.is_ok_and(|s| s.success()) {
            eprintln!("skipped: mkfifo is not available");
            return;
        }
        let reader_path = path.clone();
        let reader = thread::spawn(move || fs::read_to_string(reader_path).unwrap());
        write_token(&path, "natt1.token\n").unwrap();
        // Checked before joining: had the FIFO been replaced, the reader would wait forever.
        assert!(fs::metadata(&path).unwrap().file_type().is_fifo());
        assert_eq!(reader.join().unwrap(), "natt1.token\n");
        fs::remove_dir_all(&dir).unwrap();
    }
}
