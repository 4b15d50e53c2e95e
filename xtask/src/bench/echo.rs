//! The physical reference of the serve benchmark, `xtask lab probe echo` (a lab probe, not
//! listed in its help): the least a UDP server can do per request, as fast as the kernel and
//! the cores allow, so that `natt serve`'s answers per second can be set against what this
//! machine can do with UDP at all.
//!
//! ```text
//! probe echo --listen IP:PORT [--seconds S]
//! ```
//!
//! One thread per core, each with its own socket bound to `--listen` with `SO_REUSEPORT` (the
//! kernel spreads the sources over them) and the receive buffer `natt serve` asks for. Each
//! thread takes up to [`BATCH`] datagrams with one `recvmmsg`, answers each STUN Binding
//! request (a datagram of at least 20 bytes whose type is 0x0001) with a Binding success
//! response of the size and attributes of `natt serve`'s RFC 5780 answer (56 bytes: the header
//! with the request's cookie and transaction id, an XOR-MAPPED-ADDRESS of the source, and
//! OTHER-ADDRESS and RESPONSE-ORIGIN, here both the echo's own address), written into a buffer
//! of its own without allocating, and sends the batch with one `sendmmsg`. No validation beyond the
//! type, no other attribute, no other protocol: what is left is the cost of moving datagrams.
//! It prints `ECHO listening ADDR threads N` once its sockets are bound, and stops after
//! `--seconds` (default 600).
//!
//! This is the one module of xtask with `unsafe` code: `recvmmsg` and `sendmmsg` have no safe
//! wrapper in the crates natt depends on.
#![allow(unsafe_code)]

use std::io::{self, Write};
use std::mem;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, UdpSocket};
use std::os::fd::AsRawFd;
use std::thread;
use std::time::{Duration, Instant};

use socket2::{Domain, Protocol, Socket, Type};

use crate::lab::probe::Args;
use crate::lab::{Result, err};

/// Datagrams taken and answered per system call.
pub const BATCH: usize = 64;
/// The largest request read (longer ones are truncated, then answered all the same).
const MAX_LEN: usize = 1500;
/// The size of the answer: a STUN header and three IPv4 address attributes.
const ANSWER_LEN: usize = 56;
/// The receive buffer each socket asks for (as natt serve's).
const RECV_BUFFER: usize = 4 << 20;
/// How often a thread waiting for datagrams checks the time.
const POLL: Duration = Duration::from_millis(100);
/// STUN's magic cookie.
const MAGIC: u32 = 0x2112_A442;

/// Runs the echo reference (see the module documentation).
pub fn main(a: &Args) -> Result<i32> {
    let listen: String = a.need("listen")?;
    let listen: SocketAddrV4 = listen
        .parse()
        .map_err(|_| err(format!("bad --listen '{listen}' (IPv4:PORT)")))?;
    let seconds: f64 = a.get_or("seconds", 600.0)?;
    let until = Instant::now() + Duration::try_from_secs_f64(seconds.clamp(0.0, 3600.0)).unwrap_or_default();
    let threads = thread::available_parallelism().map_or(1, |n| n.get());
    let sockets = (0..threads).map(|_| bind(listen)).collect::<io::Result<Vec<_>>>()?;
    let mut out = io::stdout();
    writeln!(out, "ECHO listening {listen} threads {threads}")?;
    out.flush()?;
    let handles: Vec<_> = sockets
        .into_iter()
        .map(|s| {
            thread::Builder::new()
                .name("echo".into())
                .spawn(move || serve(&s, until))
        })
        .collect::<io::Result<_>>()?;
    for h in handles {
        match h.join() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(err(format!("echo: {e}"))),
            Err(_) => return Err(err("echo: a thread panicked")),
        }
    }
    Ok(0)
}

/// A socket of its own for one thread, sharing the port with its siblings.
fn bind(addr: SocketAddrV4) -> io::Result<UdpSocket> {
    let s = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))?;
    s.set_reuse_port(true)?;
    s.set_recv_buffer_size(RECV_BUFFER)?;
    s.bind(&SocketAddr::V4(addr).into())?;
    s.set_read_timeout(Some(POLL))?;
    Ok(s.into())
}

/// An IPv4 address attribute of `kind`: `addr` as it is (XORed by the caller if need be).
fn address_attribute(kind: u16, port: u16, ip: u32) -> [u8; 12] {
    let [k0, k1] = kind.to_be_bytes();
    let [p0, p1] = port.to_be_bytes();
    let [i0, i1, i2, i3] = ip.to_be_bytes();
    [k0, k1, 0x00, 0x08, 0x00, 0x01, p0, p1, i0, i1, i2, i3]
}

/// Writes the Binding success answer to `request` from `source`, received at `me`, into
/// `answer`; false when the request is not a Binding request.
fn answer_into(request: &[u8], source: SocketAddrV4, me: SocketAddrV4, answer: &mut [u8; ANSWER_LEN]) -> bool {
    let Some(head) = request.get(..20) else {
        return false;
    };
    if head.get(..2) != Some(&[0x00, 0x01]) {
        return false;
    }
    let (type_len, rest) = answer.split_at_mut(4);
    type_len.copy_from_slice(&[0x01, 0x01, 0x00, (ANSWER_LEN - 20) as u8]);
    let (cookie_txid, attrs) = rest.split_at_mut(16);
    cookie_txid.copy_from_slice(head.get(4..20).unwrap_or(&[0; 16]));
    let xor = address_attribute(
        0x0020,
        source.port() ^ (MAGIC >> 16) as u16,
        u32::from(*source.ip()) ^ MAGIC,
    );
    let other = address_attribute(0x802C, me.port(), u32::from(*me.ip()));
    let origin = address_attribute(0x802B, me.port(), u32::from(*me.ip()));
    for (chunk, attr) in attrs.chunks_exact_mut(12).zip([xor, other, origin]) {
        chunk.copy_from_slice(&attr);
    }
    true
}

/// The IPv4 source in `storage`, as the kernel wrote it.
fn source_of(storage: &libc::sockaddr_storage) -> Option<SocketAddrV4> {
    if libc::c_int::from(storage.ss_family) != libc::AF_INET {
        return None;
    }
    // SAFETY: the family says the storage holds a sockaddr_in, which it is large and aligned
    // enough for.
    let sin = unsafe { &*(storage as *const libc::sockaddr_storage).cast::<libc::sockaddr_in>() };
    Some(SocketAddrV4::new(
        Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr)),
        u16::from_be(sin.sin_port),
    ))
}

/// One thread's loop: a batch in with `recvmmsg`, the answers out with `sendmmsg`, until `until`.
fn serve(socket: &UdpSocket, until: Instant) -> io::Result<()> {
    let fd = socket.as_raw_fd();
    let SocketAddr::V4(me) = socket.local_addr()? else {
        return Err(io::Error::other("not an IPv4 socket"));
    };
    let mut bufs = vec![[0u8; MAX_LEN]; BATCH];
    let mut answers = vec![[0u8; ANSWER_LEN]; BATCH];
    // SAFETY: sockaddr_storage, iovec and mmsghdr are plain C structs for which all zeros is a
    // valid value.
    let mut names: Vec<libc::sockaddr_storage> = vec![unsafe { mem::zeroed() }; BATCH];
    let mut to: Vec<libc::sockaddr_storage> = vec![unsafe { mem::zeroed() }; BATCH];
    let mut iov_in: Vec<libc::iovec> = vec![unsafe { mem::zeroed() }; BATCH];
    let mut iov_out: Vec<libc::iovec> = vec![unsafe { mem::zeroed() }; BATCH];
    let mut hdr_in: Vec<libc::mmsghdr> = vec![unsafe { mem::zeroed() }; BATCH];
    let mut hdr_out: Vec<libc::mmsghdr> = vec![unsafe { mem::zeroed() }; BATCH];
    let name_len = mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    while Instant::now() < until {
        for (((h, iov), buf), name) in hdr_in.iter_mut().zip(&mut iov_in).zip(&mut bufs).zip(&mut names) {
            iov.iov_base = buf.as_mut_ptr().cast();
            iov.iov_len = MAX_LEN;
            h.msg_hdr.msg_name = (name as *mut libc::sockaddr_storage).cast();
            h.msg_hdr.msg_namelen = name_len;
            h.msg_hdr.msg_iov = iov;
            h.msg_hdr.msg_iovlen = 1;
            h.msg_len = 0;
        }
        // SAFETY: every header points at a buffer, an iovec and a name that live through the
        // call, with their true lengths; the count is the headers' number.
        let n = unsafe {
            libc::recvmmsg(
                fd,
                hdr_in.as_mut_ptr(),
                BATCH as libc::c_uint,
                libc::MSG_WAITFORONE,
                std::ptr::null_mut(),
            )
        };
        if n < 0 {
            let e = io::Error::last_os_error();
            if matches!(
                e.kind(),
                io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut | io::ErrorKind::Interrupted
            ) {
                continue;
            }
            return Err(e);
        }
        let mut m = 0;
        for i in 0..usize::try_from(n).unwrap_or(0).min(BATCH) {
            let (Some(h), Some(buf), Some(name)) = (hdr_in.get(i), bufs.get(i), names.get(i)) else {
                break;
            };
            let len = (h.msg_len as usize).min(MAX_LEN);
            let Some(source) = source_of(name) else { continue };
            let (Some(answer), Some(dest)) = (answers.get_mut(m), to.get_mut(m)) else {
                break;
            };
            if answer_into(buf.get(..len).unwrap_or_default(), source, me, answer) {
                *dest = *name;
                m += 1;
            }
        }
        for (((h, iov), answer), dest) in hdr_out
            .iter_mut()
            .zip(&mut iov_out)
            .zip(&mut answers)
            .zip(&mut to)
            .take(m)
        {
            iov.iov_base = answer.as_mut_ptr().cast();
            iov.iov_len = ANSWER_LEN;
            h.msg_hdr.msg_name = (dest as *mut libc::sockaddr_storage).cast();
            h.msg_hdr.msg_namelen = mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
            h.msg_hdr.msg_iov = iov;
            h.msg_hdr.msg_iovlen = 1;
            h.msg_len = 0;
        }
        let mut sent = 0;
        while sent < m {
            let Some(rest) = hdr_out.get_mut(sent..m) else { break };
            // SAFETY: the headers from `sent` to `m` point at answers, iovecs and addresses
            // that live through the call, with their true lengths.
            let r = unsafe { libc::sendmmsg(fd, rest.as_mut_ptr(), rest.len() as libc::c_uint, 0) };
            if r <= 0 {
                // A full send buffer or an ICMP error of an earlier send: drop the rest, as a
                // server would.
                break;
            }
            sent += r as usize;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lab::probe::{stun_mapped, stun_request};

    #[test]
    fn answers_are_binding_successes_naming_the_source() {
        let tid = [7u8; 12];
        let source: SocketAddrV4 = "198.51.100.7:40000".parse().unwrap();
        let me: SocketAddrV4 = "203.0.113.20:5499".parse().unwrap();
        let mut answer = [0u8; ANSWER_LEN];
        assert!(answer_into(&stun_request(&tid), source, me, &mut answer));
        assert_eq!(stun_mapped(&answer, &tid), Some(source));
        // The header's length covers the three attributes.
        assert_eq!(usize::from(answer[3]) + 20, ANSWER_LEN);
        assert!(!answer_into(&[0x01, 0x01], source, me, &mut answer), "too short");
        let mut not_binding = stun_request(&tid);
        not_binding[1] = 0x03;
        assert!(!answer_into(&not_binding, source, me, &mut answer));
    }

    #[test]
    fn the_loop_answers_over_loopback() {
        let s = bind("127.0.0.1:0".parse().unwrap());
        let Ok(s) = s else { return }; // no loopback here
        let addr = s.local_addr().unwrap();
        let until = Instant::now() + Duration::from_secs(5);
        let server = thread::spawn(move || serve(&s, until));
        let c = UdpSocket::bind("127.0.0.1:0").unwrap();
        c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let tid = [3u8; 12];
        c.send_to(&stun_request(&tid), addr).unwrap();
        let mut buf = [0u8; 64];
        let (n, _) = c.recv_from(&mut buf).unwrap();
        let SocketAddr::V4(me) = c.local_addr().unwrap() else {
            panic!()
        };
        assert_eq!(stun_mapped(&buf[..n], &tid), Some(me));
        drop(server);
    }
}
