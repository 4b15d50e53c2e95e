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

use natt::connect::{Path as ConnPath, TcpConnection, UdpConnection, connect_tcp};
use natt::{
    MappedTcpSocket, MappedUdpSocket, PubRendezvousInfo, PunchedUdpSocket, gen_rendezvous_info, is_punch_packet,
    tcp_punch_hole,
};

use crate::args::PunchArgs;
use crate::context;
use crate::output;

/// `natt punch --json`:
/// `{"peer":"IP:PORT","elapsed_ms":N,"via":"udp|tcp","path":"direct|relay","relay":"IP:PORT"|null,
/// "family":"ipv4|ipv6"}` (`family`: the address family of the path that won).
#[derive(Debug, Serialize)]
struct PunchReport {
    peer: String,
    elapsed_ms: u128,
    via: &'static str,
    /// `direct`, or `relay` through a TURN relay.
    path: &'static str,
    /// The relayed address a relayed path goes through.
    relay: Option<String>,
    /// The address family of the path that won: `ipv4` or `ipv6`.
    family: &'static str,
}

/// Maps, exchanges tokens, punches and relays.
pub fn run(args: &PunchArgs) -> Result<(), String> {
    let timeout = context::seconds(args.timeout)?;
    let linger = context::seconds(args.linger)?;
    let mc = context::build_with_turn(&args.techniques, Some(&args.turn), context::seconds(args.map_timeout)?)?;
    // One dual-stack socket where the host has global IPv6, else IPv4.
    let local = SocketAddr::new(natt::core::family::any_address().ip(), args.port);
    let mut stdin = io::stdin().lock();
    if args.udp {
        let mapped = MappedUdpSocket::bind(local, &mc).map_err(|e| format!("cannot map a UDP socket: {e}"))?;
        if args.turn.turn.is_some() {
            report_relay_failure(&mapped.port_mappings);
        }
        let (ours, public) = gen_rendezvous_info(mapped.endpoints);
        let theirs = exchange(&public, args, &mut stdin, timeout)?;
        let start = Instant::now();
        // With a relay on either side, connect with fallback: the peer's relayed address is a
        // relayed path even for a side without a relay of its own.
        let peer_relayed = theirs.endpoints.iter().any(|e| e.technique == natt::turn::NAME);
        if args.turn.turn.is_some() || peer_relayed {
            let why_no_external = mapped.port_mappings.why_no_external();
            let connection = UdpConnection::connect(mapped.socket, mapped.port_mappings, ours, theirs, start + timeout)
                .map_err(|e| match &why_no_external {
                    Some(why) => format!("UDP punch failed: {e}; and our token had {why}"),
                    None => format!("UDP punch failed: {e}"),
                })?;
            let path = connection.path().ok_or("the connection has no path")?;
            report(args, peer_of(path), start, "udp", path)?;
            relay_connection(&connection, &mut stdin, linger)?;
            // Releases the allocation and the router mappings, waiting for that.
            connection.close();
        } else {
            let punched = PunchedUdpSocket::punch_hole(mapped.socket, ours, theirs, start + timeout)
                .map_err(|e| failed("UDP", &e, &mapped.port_mappings))?;
            report(args, punched.peer_addr, start, "udp", direct(punched.peer_addr))?;
            relay_udp(&punched.socket, punched.peer_addr, &mut stdin, linger)?;
            // Waits for the routers to delete the mappings before the process exits.
            let mut port_mappings = mapped.port_mappings;
            port_mappings.release();
        }
    } else {
        let mapped = MappedTcpSocket::bind(local, &mc).map_err(|e| format!("cannot map a TCP socket: {e}"))?;
        if args.turn.turn.is_some() {
            report_relay_failure(&mapped.port_mappings);
        }
        let (ours, public) = gen_rendezvous_info(mapped.endpoints);
        let theirs = exchange(&public, args, &mut stdin, timeout)?;
        let start = Instant::now();
        // With a relay on either side, connect with fallback (RFC 6062 through the relay).
        let peer_relayed = theirs.endpoints.iter().any(|e| e.technique == natt::turn::NAME);
        if args.turn.turn.is_some() || peer_relayed {
            let why_no_external = mapped.port_mappings.why_no_external();
            let connection =
                connect_tcp(mapped.socket, mapped.port_mappings, ours, theirs, start + timeout).map_err(|e| {
                    match &why_no_external {
                        Some(why) => format!("TCP punch failed: {e}; and our token had {why}"),
                        None => format!("TCP punch failed: {e}"),
                    }
                })?;
            let path = connection.path();
            report(args, peer_of(path), start, "tcp", path)?;
            relay_tcp_connection(&connection, &mut stdin)?;
            // Releases the allocation and the router mappings, waiting for that.
            connection.close();
        } else {
            let stream = tcp_punch_hole(mapped.socket, ours, theirs, start + timeout)
                .map_err(|e| failed("TCP", &e, &mapped.port_mappings))?;
            let peer = natt::core::family::peer_addr(&stream).map_err(|e| e.to_string())?;
            report(args, peer, start, "tcp", direct(peer))?;
            relay_tcp(stream, &mut stdin)?;
            let mut port_mappings = mapped.port_mappings;
            port_mappings.release();
        }
    }
    Ok(())
}

/// The one line a failed punch prints: what went wrong and, when our own token listed no
/// address beyond this host's interfaces, why it did not (a likely cause).
fn failed(proto: &str, e: &natt::PunchError, port_mappings: &natt::PortMappings) -> String {
    match port_mappings.why_no_external() {
        Some(why) => format!("{proto} punch failed: {e}; and our token had {why}"),
        None => format!("{proto} punch failed: {e}"),
    }
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

/// Writes the token, which carries the secret of the punch, to `path`:
///
/// - A new or regular file is replaced whole: the token goes to a new file beside `path`,
///   created exclusively (`O_EXCL`), readable by its owner only (0600) and not through a
///   symbolic link, under an unpredictable name, then renamed over `path`. A reader polling
///   `path` never sees a partial token, and a file or link planted where the temporary file
///   goes is never written through.
/// - Anything else that exists (`/dev/null`, a FIFO) is written in place, opened without
///   following a link: renaming over it would replace the device or pipe with a regular file.
/// - A symbolic link at `path` is refused: it could point anywhere (`-` writes to stdout).
fn write_token(path: &Path, text: &str) -> io::Result<()> {
    match fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_symlink() => {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "it is a symbolic link, which natt does not follow (give its target, or - for stdout)",
            ));
        }
        Ok(meta) if !meta.is_file() => {
            return owner_only_no_follow(fs::OpenOptions::new().write(true))
                .open(path)?
                .write_all(text.as_bytes());
        }
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let (tmp, mut file) = create_temporary(path)?;
    let written = file.write_all(text.as_bytes()).and_then(|()| fs::rename(&tmp, path));
    written.inspect_err(|_| {
        let _ = fs::remove_file(&tmp);
    })
}

/// How many unpredictable names [`create_temporary`] tries before giving up.
const TEMPORARY_TRIES: u32 = 8;

/// A new file beside `path`, `.NAME.RANDOM.tmp`, created exclusively with mode 0600 and not
/// through a symbolic link.
fn create_temporary(path: &Path) -> io::Result<(std::path::PathBuf, fs::File)> {
    let name = path
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "not a file name"))?;
    let mut last = None;
    for _ in 0..TEMPORARY_TRIES {
        let mut tmp_name = std::ffi::OsString::from(".");
        tmp_name.push(name);
        tmp_name.push(format!(".{:016x}.tmp", rand::random::<u64>()));
        let tmp = path.with_file_name(tmp_name);
        let mut options = fs::OpenOptions::new();
        options.write(true).create_new(true);
        match owner_only_no_follow(&mut options).open(&tmp) {
            Ok(file) => return Ok((tmp, file)),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => last = Some(e),
            Err(e) => return Err(e),
        }
    }
    Err(last.unwrap_or_else(|| io::Error::other("no temporary file name")))
}

/// `options` that create a file readable and writable by its owner only (mode 0600) and fail
/// on a symbolic link (`O_NOFOLLOW`).
#[cfg(unix)]
fn owner_only_no_follow(options: &mut fs::OpenOptions) -> &mut fs::OpenOptions {
    use std::os::unix::fs::OpenOptionsExt;
    options.mode(0o600).custom_flags(libc::O_NOFOLLOW)
}

/// Elsewhere the OS's defaults (the symbolic link check before still applies).
#[cfg(not(unix))]
fn owner_only_no_follow(options: &mut fs::OpenOptions) -> &mut fs::OpenOptions {
    options
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

fn report(args: &PunchArgs, peer: SocketAddr, start: Instant, via: &'static str, path: ConnPath) -> Result<(), String> {
    let elapsed_ms = start.elapsed().as_millis();
    if args.json {
        output::print_json(&PunchReport {
            peer: peer.to_string(),
            elapsed_ms,
            via,
            path: path.kind(),
            relay: path.relay().map(|r| r.to_string()),
            family: if peer.is_ipv6() { "ipv6" } else { "ipv4" },
        })
    } else {
        match path.relay() {
            Some(relay) => {
                eprintln!("natt: connected to {peer} over {via} through the relay {relay} in {elapsed_ms} ms")
            }
            None => eprintln!("natt: connected to {peer} over {via} in {elapsed_ms} ms"),
        }
        Ok(())
    }
}

/// A direct path to `peer`.
fn direct(peer: SocketAddr) -> ConnPath {
    ConnPath::Direct { peer }
}

/// Where the peer is on `path`: its own address, or on a relayed path the address data goes
/// to (the peer as our relay sees it, or its relayed address).
fn peer_of(path: ConnPath) -> SocketAddr {
    match path {
        ConnPath::Direct { peer } | ConnPath::Relayed { peer, .. } => peer,
        _ => SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0)),
    }
}

/// One line on stderr when `--turn` was given but the relay gave no address (wrong
/// credentials, down, silent, quota, not TURN): the direct paths are still tried.
fn report_relay_failure(port_mappings: &natt::PortMappings) {
    for o in port_mappings.outcomes() {
        if o.technique == natt::turn::NAME
            && let Err(e) = &o.result
        {
            eprintln!("natt: warning: the TURN relay gave no address ({e}); trying direct paths only");
        }
    }
}

/// As [`relay_udp`], over a connection with fallback; says on stderr when the connection
/// moves from the relay to a direct path.
fn relay_connection(connection: &UdpConnection, stdin: &mut impl BufRead, linger: Duration) -> Result<(), String> {
    let stop = std::sync::atomic::AtomicBool::new(false);
    thread::scope(|scope| {
        scope.spawn(|| {
            let mut out = io::stdout();
            let mut moves = connection.moves();
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                if let Some(data) = connection.recv(Instant::now() + Duration::from_millis(50)) {
                    let _ = out
                        .write_all(&data)
                        .and_then(|()| out.write_all(b"\n"))
                        .and_then(|()| out.flush());
                }
                if connection.moves() != moves {
                    moves = connection.moves();
                    if let Some(ConnPath::Direct { peer }) = connection.path() {
                        eprintln!("natt: moved to the direct path to {peer}");
                    }
                }
            }
        });
        let mut line = String::new();
        let sent = loop {
            line.clear();
            match stdin.read_line(&mut line) {
                Ok(0) => break Ok(()),
                Ok(_) => {
                    let data = line.strip_suffix('\n').unwrap_or(&line);
                    if let Err(e) = connection.send(data.as_bytes()) {
                        break Err(format!("send to the peer: {e}"));
                    }
                }
                Err(e) => break Err(format!("reading stdin: {e}")),
            }
        };
        if sent.is_ok() {
            thread::sleep(linger);
        }
        stop.store(true, std::sync::atomic::Ordering::SeqCst);
        sent
    })
}

/// Relays stdin lines to the peer as datagrams and the peer's datagrams to stdout as lines,
/// until stdin ends and `linger` has passed. Late punch packets and datagrams from anyone
/// else are dropped.
fn relay_udp(socket: &UdpSocket, peer: SocketAddr, stdin: &mut impl BufRead, linger: Duration) -> Result<(), String> {
    let receiver = socket.try_clone().map_err(|e| e.to_string())?;
    let to = natt::core::family::for_socket(socket.local_addr().map_err(|e| e.to_string())?, peer);
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
                Ok((n, from)) if natt::core::family::canonical(from) == peer => {
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
                    .send_to(data.as_bytes(), to)
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

/// A thread that prints what arrives on (a clone of) `stream` to stdout until it ends.
fn print_stream(stream: &TcpStream) -> Result<thread::JoinHandle<()>, String> {
    let mut reader = stream.try_clone().map_err(|e| e.to_string())?;
    Ok(thread::spawn(move || {
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
    }))
}

/// Relays stdin to the stream and the stream to stdout; at the end of stdin, closes our
/// sending side and waits until the peer closes its own.
fn relay_tcp(stream: TcpStream, stdin: &mut impl Read) -> Result<(), String> {
    let printer = print_stream(&stream)?;
    let mut writer = &stream;
    io::copy(stdin, &mut writer).map_err(|e| format!("relaying stdin: {e}"))?;
    let _ = stream.shutdown(std::net::Shutdown::Write);
    let _ = printer.join();
    Ok(())
}

/// As [`relay_tcp`], over a connection with fallback; says on stderr when the connection
/// moves from the relay to a direct path. At the end of stdin it ends our sending side (a FIN
/// on a direct stream, an end record through a relay) and prints the peer's bytes until the
/// peer ends its own; the caller then closes it.
fn relay_tcp_connection(connection: &TcpConnection, stdin: &mut impl Read) -> Result<(), String> {
    connection
        .set_read_timeout(Some(Duration::from_millis(50)))
        .map_err(|e| e.to_string())?;
    thread::scope(|scope| {
        let printer = scope.spawn(|| {
            let mut out = io::stdout();
            let mut buf = [0u8; 16384];
            let mut moves = connection.moves();
            let mut reader = connection;
            loop {
                match reader.read(&mut buf) {
                    Ok(0) => break Ok(()),
                    Ok(n) => {
                        if let Err(e) = out.write_all(buf.get(..n).unwrap_or(&[])).and_then(|()| out.flush()) {
                            break Err(format!("writing stdout: {e}"));
                        }
                    }
                    Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => {}
                    Err(e) => break Err(format!("the connection failed: {e}")),
                }
                if connection.moves() != moves {
                    moves = connection.moves();
                    if let ConnPath::Direct { peer } = connection.path() {
                        eprintln!("natt: moved to the direct path to {peer}");
                    }
                }
            }
        });
        let mut writer = connection;
        let copied = io::copy(stdin, &mut writer).map_err(|e| format!("relaying stdin: {e}"));
        let ended = connection
            .shutdown_write()
            .map_err(|e| format!("ending our side of the connection: {e}"));
        let printed = printer.join().unwrap_or_else(|_| Err("the printer failed".into()));
        copied.and(ended).and(printed)
    })
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
        write_token(&path, "natt2.new\n").unwrap();
        assert_eq!(fs::read_to_string(&path).unwrap(), "natt2.new\n");
        assert_eq!(fs::read_dir(&dir).unwrap().count(), 1, "no temporary file left behind");
        fs::remove_dir_all(&dir).unwrap();
    }

    fn mode(path: &Path) -> u32 {
        use std::os::unix::fs::PermissionsExt;
        fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    /// Issue #18, finding 9: the token carries the punch's secret, so its file is the owner's
    /// only, whether new or replacing a world-readable one.
    #[test]
    fn token_file_is_readable_by_its_owner_only() {
        use std::os::unix::fs::PermissionsExt;
        let dir = scratch("mode");
        let path = dir.join("token");
        write_token(&path, "natt2.a\n").unwrap();
        assert_eq!(mode(&path), 0o600);
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        write_token(&path, "natt2.b\n").unwrap();
        assert_eq!(mode(&path), 0o600);
        assert_eq!(fs::read_to_string(&path).unwrap(), "natt2.b\n");
        fs::remove_dir_all(&dir).unwrap();
    }

    /// Issue #18, finding 9: a symbolic link planted at the token path is not followed.
    #[test]
    fn a_symlink_at_the_token_path_is_refused() {
        let dir = scratch("symlink");
        let victim = dir.join("victim");
        fs::write(&victim, "precious\n").unwrap();
        let path = dir.join("token");
        std::os::unix::fs::symlink(&victim, &path).unwrap();
        let e = write_token(&path, "natt2.secret\n").unwrap_err();
        assert!(e.to_string().contains("symbolic link"), "{e}");
        assert_eq!(fs::read_to_string(&victim).unwrap(), "precious\n");
        assert!(fs::symlink_metadata(&path).unwrap().file_type().is_symlink());
        // A dangling link too: nothing is created where it points.
        let dangling = dir.join("dangling");
        std::os::unix::fs::symlink(dir.join("created"), &dangling).unwrap();
        assert!(write_token(&dangling, "natt2.secret\n").is_err());
        assert!(!dir.join("created").exists());
        fs::remove_dir_all(&dir).unwrap();
    }

    /// Issue #18, finding 9: the temporary name used to be `token.tmpPID`; links planted at
    /// such names are not written through, and nothing is left behind.
    #[test]
    fn files_planted_at_predictable_temporary_names_do_not_matter() {
        let dir = scratch("planted");
        let victim = dir.join("victim");
        fs::write(&victim, "precious\n").unwrap();
        let path = dir.join("token");
        let planted = path.with_extension(format!("tmp{}", std::process::id()));
        std::os::unix::fs::symlink(&victim, &planted).unwrap();
        write_token(&path, "natt2.secret\n").unwrap();
        assert_eq!(fs::read_to_string(&path).unwrap(), "natt2.secret\n");
        assert_eq!(fs::read_to_string(&victim).unwrap(), "precious\n");
        let names: Vec<_> = fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names.len(), 3, "{names:?}");
        fs::remove_dir_all(&dir).unwrap();
    }

    /// The temporary file is exclusive: an existing file at the name chosen is an error there,
    /// and another name is tried.
    #[test]
    fn temporary_files_are_created_exclusively_under_fresh_names() {
        let dir = scratch("exclusive");
        let path = dir.join("token");
        let (a, _) = create_temporary(&path).unwrap();
        let (b, _) = create_temporary(&path).unwrap();
        assert_ne!(a, b);
        assert_eq!(mode(&a), 0o600);
        let mut again = fs::OpenOptions::new();
        again.write(true).create_new(true);
        assert_eq!(
            owner_only_no_follow(&mut again).open(&a).unwrap_err().kind(),
            io::ErrorKind::AlreadyExists
        );
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
        write_token(&path, "natt2.token\n").unwrap();
        // Checked before joining: had the FIFO been replaced, the reader would wait forever.
        assert!(fs::metadata(&path).unwrap().file_type().is_fifo());
        assert_eq!(reader.join().unwrap(), "natt2.token\n");
        fs::remove_dir_all(&dir).unwrap();
    }
}
