//! A small HTTP/1.1 client for talking to gateways, bounded in time and size.
//!
//! Every request has an absolute deadline: connecting, writing and each read wait at most until
//! it, so a gateway that accepts and stays silent, or drips one byte at a time, costs us the
//! deadline and no more. Answers are capped ([`MAX_HEAD`] for the status line and headers, the
//! caller's limit for the body, checked before buffering), so no answer makes us allocate
//! without bound. It never follows redirects and never uses a proxy (gateways are on the LAN;
//! `http_proxy` from the environment must not send our port-mapping requests elsewhere).

use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};
use std::time::Instant;

use natt_core::deadline;

use crate::error::UpnpError;
use crate::url::HttpUrl;

/// Largest status line plus headers accepted.
pub const MAX_HEAD: usize = 16 * 1024;
/// Largest body accepted by default (device descriptions of big routers are tens of KiB).
pub const MAX_BODY: usize = 128 * 1024;
/// Longest chunk-size line of a chunked body.
const MAX_CHUNK_LINE: usize = 1024;

/// A response: status and decoded body.
#[derive(Debug)]
pub struct Response {
    /// The HTTP status code.
    pub status: u16,
    /// The body (de-chunked).
    pub body: Vec<u8>,
}

/// A request to send.
pub struct Request<'a> {
    /// `GET` or `POST`.
    pub method: &'a str,
    /// Where.
    pub url: &'a HttpUrl,
    /// Extra header lines (name, value); values must be single-line.
    pub headers: &'a [(&'a str, &'a str)],
    /// The body (empty for `GET`).
    pub body: &'a [u8],
    /// Largest body accepted.
    pub max_body: usize,
    /// Words for errors, e.g. `GET http://.../rootDesc.xml`.
    pub what: &'a str,
}

/// Sends `req` and reads the whole response, all by `deadline`.
pub fn send(req: &Request<'_>, deadline: Instant) -> Result<Response, UpnpError> {
    let what = req.what;
    let addr = req.url.socket_addr();
    let wait = deadline::remaining(deadline).ok_or_else(|| UpnpError::timed_out(format!("before {what}")))?;
    let mut stream =
        TcpStream::connect_timeout(&addr, wait).map_err(|e| UpnpError::io(format!("{what}: connect to {addr}"), e))?;
    let _ = stream.set_nodelay(true);

    let mut head = format!(
        "{} {} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\nUser-Agent: natt-upnp/{} UPnP/1.1\r\n",
        req.method,
        req.url.path,
        req.url.addr,
        env!("CARGO_PKG_VERSION")
    );
    for (name, value) in req.headers {
        if value.contains(['\r', '\n']) || name.contains(['\r', '\n', ':']) {
            return Err(UpnpError::malformed(what, "refusing a header with a line break"));
        }
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    if !req.body.is_empty() || req.method == "POST" {
        head.push_str(&format!("Content-Length: {}\r\n", req.body.len()));
    }
    head.push_str("\r\n");
    let mut out = head.into_bytes();
    out.extend_from_slice(req.body);
    write_all(&mut stream, &out, deadline, what)?;

    let response = read_response(&mut stream, req.max_body, deadline, what);
    let _ = stream.shutdown(Shutdown::Both);
    response
}

fn write_all(stream: &mut TcpStream, mut data: &[u8], deadline: Instant, what: &str) -> Result<(), UpnpError> {
    while !data.is_empty() {
        let wait = deadline::remaining(deadline).ok_or_else(|| UpnpError::timed_out(format!("sending {what}")))?;
        stream
            .set_write_timeout(Some(wait))
            .map_err(|e| UpnpError::io(format!("sending {what}"), e))?;
        match stream.write(data) {
            Ok(0) => return Err(UpnpError::malformed(what, "connection closed while sending")),
            Ok(n) => data = data.get(n..).unwrap_or(&[]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(UpnpError::io(format!("sending {what}"), e)),
        }
    }
    Ok(())
}

/// How the body's end is known.
enum Framing {
    Length(usize),
    Chunked(Chunked),
    UntilClose,
}

fn read_response(
    stream: &mut TcpStream,
    max_body: usize,
    deadline: Instant,
    what: &str,
) -> Result<Response, UpnpError> {
    let mut buf: Vec<u8> = Vec::with_capacity(4096);
    let mut chunk = [0u8; 8192];
    let mut head: Option<(u16, Framing, usize)> = None; // status, framing, body start
    loop {
        if let Some((status, framing, start)) = &mut head {
            let body = buf.get(*start..).unwrap_or(&[]);
            match framing {
                Framing::Length(n) if body.len() >= *n => {
                    let body = body.get(..*n).unwrap_or(body).to_vec();
                    return Ok(Response { status: *status, body });
                }
                Framing::Chunked(c) => match c.feed(body, max_body) {
                    Ok(true) => {
                        return Ok(Response {
                            status: *status,
                            body: std::mem::take(&mut c.out),
                        });
                    }
                    Ok(false) => {}
                    Err(ChunkError::TooLarge) => {
                        return Err(UpnpError::TooLarge {
                            what: what.to_owned(),
                            limit: max_body,
                        });
                    }
                    Err(ChunkError::Malformed(d)) => return Err(UpnpError::malformed(what, d)),
                },
                Framing::UntilClose if body.len() > max_body => {
                    return Err(UpnpError::TooLarge {
                        what: what.to_owned(),
                        limit: max_body,
                    });
                }
                _ => {}
            }
        }
        let wait = deadline::remaining(deadline).ok_or_else(|| UpnpError::timed_out(format!("reading {what}")))?;
        stream
            .set_read_timeout(Some(wait))
            .map_err(|e| UpnpError::io(format!("reading {what}"), e))?;
        let n = match stream.read(&mut chunk) {
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(UpnpError::io(format!("reading {what}"), e)),
        };
        if n == 0 {
            return match head {
                None => Err(UpnpError::malformed(
                    what,
                    if buf.is_empty() {
                        "connection closed without an answer".to_owned()
                    } else {
                        "connection closed in the headers".to_owned()
                    },
                )),
                Some((status, Framing::UntilClose, start)) => Ok(Response {
                    status,
                    body: buf.get(start..).unwrap_or(&[]).to_vec(),
                }),
                Some(_) => Err(UpnpError::malformed(
                    what,
                    "connection closed before the end of the body",
                )),
            };
        }
        buf.extend_from_slice(chunk.get(..n).unwrap_or(&[]));
        if head.is_none() {
            match find_head_end(&buf, buf.len() - n) {
                Some(end) => {
                    let (status, framing) = parse_head(buf.get(..end).unwrap_or(&[]), max_body, what)?;
                    head = Some((status, framing, end));
                }
                None if buf.len() > MAX_HEAD => {
                    return Err(UpnpError::TooLarge {
                        what: format!("{what} (headers)"),
                        limit: MAX_HEAD,
                    });
                }
                None => {}
            }
        }
    }
}

/// The index just past the blank line ending the head, if it has arrived; `new` is where the
/// bytes not yet searched start (a blank line may straddle it).
fn find_head_end(buf: &[u8], new: usize) -> Option<usize> {
    let from = new.saturating_sub(3);
    let hay = buf.get(from..buf.len().min(MAX_HEAD + 4))?;
    let crlf = hay.windows(4).position(|w| w == b"\r\n\r\n").map(|i| from + i + 4);
    let lf = hay.windows(2).position(|w| w == b"\n\n").map(|i| from + i + 2);
    match (crlf, lf) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

fn parse_head(head: &[u8], max_body: usize, what: &str) -> Result<(u16, Framing), UpnpError> {
    let text = std::str::from_utf8(head).map_err(|_| UpnpError::malformed(what, "headers are not UTF-8"))?;
    let mut lines = text.lines();
    let status_line = lines.next().unwrap_or("");
    let mut parts = status_line.split_whitespace();
    let version = parts.next().unwrap_or("");
    if !version.starts_with("HTTP/1.") {
        return Err(UpnpError::malformed(
            what,
            format!(
                "not an HTTP/1.x status line: '{}'",
                crate::error::shorten(status_line, 80)
            ),
        ));
    }
    let status: u16 = parts
        .next()
        .and_then(|s| s.parse().ok())
        .filter(|s| (100..600).contains(s))
        .ok_or_else(|| UpnpError::malformed(what, "bad status code"))?;
    let mut length: Option<usize> = None;
    let mut chunked = false;
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let (name, value) = (name.trim(), value.trim());
        if name.eq_ignore_ascii_case("content-length") {
            let n: usize = value
                .parse()
                .map_err(|_| UpnpError::malformed(what, "bad Content-Length"))?;
            if length.is_some_and(|l| l != n) {
                return Err(UpnpError::malformed(what, "conflicting Content-Length headers"));
            }
            length = Some(n);
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            chunked = value
                .rsplit(',')
                .next()
                .is_some_and(|last| last.trim().eq_ignore_ascii_case("chunked"));
            if !chunked {
                return Err(UpnpError::malformed(
                    what,
                    format!("unsupported Transfer-Encoding '{}'", crate::error::shorten(value, 40)),
                ));
            }
        }
    }
    let framing = if chunked {
        Framing::Chunked(Chunked::default())
    } else if let Some(n) = length {
        if n > max_body {
            return Err(UpnpError::TooLarge {
                what: what.to_owned(),
                limit: max_body,
            });
        }
        Framing::Length(n)
    } else {
        Framing::UntilClose
    };
    Ok((status, framing))
}

/// Why a chunked body cannot be decoded.
#[derive(Debug)]
enum ChunkError {
    TooLarge,
    Malformed(String),
}

impl From<&str> for ChunkError {
    fn from(s: &str) -> Self {
        ChunkError::Malformed(s.to_owned())
    }
}

/// An incremental decoder of a chunked body: each byte is looked at a bounded number of times,
/// however the gateway slices its answer.
#[derive(Default)]
struct Chunked {
    /// Where in the raw body the next chunk-size line starts.
    pos: usize,
    /// The decoded body so far.
    out: Vec<u8>,
}

impl Chunked {
    /// Decodes what `raw` (the whole raw body so far) adds; `Ok(true)` once the last chunk
    /// arrived.
    fn feed(&mut self, raw: &[u8], max_body: usize) -> Result<bool, ChunkError> {
        loop {
            let rest = raw.get(self.pos..).unwrap_or(&[]);
            let Some(eol) = rest.windows(2).take(MAX_CHUNK_LINE).position(|w| w == b"\r\n") else {
                if rest.len() > MAX_CHUNK_LINE {
                    return Err("chunk-size line too long".into());
                }
                return Ok(false);
            };
            let line = std::str::from_utf8(rest.get(..eol).unwrap_or(&[])).map_err(|_| "bad chunk-size line")?;
            let hex = line.split(';').next().unwrap_or("").trim();
            let size = usize::from_str_radix(hex, 16)
                .map_err(|_| ChunkError::Malformed(format!("bad chunk size '{}'", crate::error::shorten(hex, 20))))?;
            if size == 0 {
                return Ok(true);
            }
            if size > max_body || self.out.len() + size > max_body {
                return Err(ChunkError::TooLarge);
            }
            let data_start = eol + 2;
            let Some(data) = rest.get(data_start..data_start + size) else {
                return Ok(false);
            };
            match rest.get(data_start + size..data_start + size + 2) {
                None => return Ok(false),
                Some(b"\r\n") => {}
                Some(_) => return Err("chunk not followed by CRLF".into()),
            }
            self.out.extend_from_slice(data);
            self.pos += data_start + size + 2;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunked_bodies_decode_in_any_slicing() {
        let raw = b"4\r\nWiki\r\n5;ext=1\r\npedia\r\n0\r\n\r\n";
        for cut in 0..raw.len() {
            let mut c = Chunked::default();
            let done = c.feed(&raw[..cut], 1000).unwrap();
            assert!(!done || cut >= raw.len() - 4, "done early at {cut}");
            assert!(c.feed(raw, 1000).unwrap());
            assert_eq!(c.out, b"Wikipedia");
        }
    }

    #[test]
    fn chunked_rejects_garbage_and_caps_size() {
        assert!(Chunked::default().feed(b"zz\r\n", 100).is_err());
        assert!(Chunked::default().feed(b"3\r\nabcX\r\n", 100).is_err());
        assert!(Chunked::default().feed(&[b'1'; 2000], 100).is_err());
        assert!(matches!(
            Chunked::default().feed(b"ffffffff\r\n", 100),
            Err(ChunkError::TooLarge)
        ));
    }

    #[test]
    fn heads_parse_strictly() {
        let (status, framing) = parse_head(b"HTTP/1.1 200 OK\r\nContent-Length: 12\r\n\r\n", 100, "t").unwrap();
        assert_eq!(status, 200);
        assert!(matches!(framing, Framing::Length(12)));
        assert!(matches!(
            parse_head(b"HTTP/1.0 500 x\r\ntransfer-encoding: gzip, chunked\r\n\r\n", 100, "t")
                .unwrap()
                .1,
            Framing::Chunked(_)
        ));
        assert!(matches!(
            parse_head(b"HTTP/1.1 200 OK\r\n\r\n", 100, "t").unwrap().1,
            Framing::UntilClose
        ));
        assert!(matches!(
            parse_head(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n", 100, "t"),
            Err(UpnpError::TooLarge { .. })
        ));
        assert!(parse_head(b"SSH-2.0-OpenSSH\r\n\r\n", 100, "t").is_err());
        assert!(parse_head(b"HTTP/1.1 abc OK\r\n\r\n", 100, "t").is_err());
        assert!(
            parse_head(
                b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
                100,
                "t"
            )
            .is_err()
        );
        assert!(parse_head(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n", 100, "t").is_err());
    }

    #[test]
    fn head_end_is_found_with_bare_newlines_too() {
        assert_eq!(find_head_end(b"HTTP/1.1 200 OK\r\n\r\nbody", 0), Some(19));
        assert_eq!(find_head_end(b"HTTP/1.1 200 OK\r\n\r\nbody", 17), Some(19));
        assert_eq!(find_head_end(b"HTTP/1.1 200 OK\n\nbody", 0), Some(17));
        assert_eq!(find_head_end(b"HTTP/1.1 200 OK\r\n", 0), None);
    }
}
