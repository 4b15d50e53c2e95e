//! `natt serve`: the simple hole-punch protocol and STUN on UDP and TCP at each address; with
//! two addresses of one family, an RFC 5780 STUN server.

use std::io::{self, Write};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use natt::StunServer;

use crate::args::ServeArgs;
use crate::simple_on_stun::SimpleOnStun;
use crate::stop;

/// Pairs each address with an alternate IP for RFC 5780: the first two addresses of one family
/// with different IPs form a pair; the rest serve alone.
fn plan(listen: &[SocketAddr]) -> Vec<(SocketAddr, Option<IpAddr>)> {
    let mut out: Vec<(SocketAddr, Option<IpAddr>)> = Vec::new();
    let mut used = vec![false; listen.len()];
    for (i, a) in listen.iter().enumerate() {
        if used.get(i).copied().unwrap_or(true) {
            continue;
        }
        let partner =
            listen.iter().enumerate().skip(i + 1).find(|(j, b)| {
                !used.get(*j).copied().unwrap_or(true) && b.is_ipv4() == a.is_ipv4() && b.ip() != a.ip()
            });
        match partner {
            Some((j, b)) if !a.ip().is_unspecified() && !b.ip().is_unspecified() => {
                if let Some(u) = used.get_mut(j) {
                    *u = true;
                }
                out.push((*a, Some(b.ip())));
            }
            _ => out.push((*a, None)),
        }
    }
    out
}

/// Serves until SIGINT or SIGTERM; prints one line per listener:
/// `serving udp ADDR (simple, stun)` and `serving tcp ADDR (simple, stun)`.
pub fn run(args: &ServeArgs) -> Result<(), String> {
    let mut servers = Vec::new();
    for (primary, alternate) in plan(&args.listen) {
        let server = StunServer::bind(primary, alternate, Some(Arc::new(SimpleOnStun))).map_err(|e| e.to_string())?;
        let kind = if server.rfc5780() {
            "simple, stun rfc5780"
        } else {
            "simple, stun"
        };
        // A closed stdout (a reader that went away) must not stop the server.
        let mut out = io::stdout();
        for addr in server.udp_addresses() {
            let _ = writeln!(out, "serving udp {addr} ({kind})");
            let _ = writeln!(out, "serving tcp {addr} ({kind})");
        }
        let _ = out.flush();
        servers.push(server);
    }
    stop::wait(false)?;
    let answered: u64 = servers.iter().map(StunServer::answered).sum();
    log::info!("stopping after {answered} answers");
    drop(servers);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_addresses_make_an_rfc5780_pair() {
        let a: SocketAddr = "203.0.113.20:5483".parse().unwrap();
        let b: SocketAddr = "203.0.113.21:5483".parse().unwrap();
        let c: SocketAddr = "[2001:db8::1]:5483".parse().unwrap();
        assert_eq!(plan(&[a, c, b]), vec![(a, Some(b.ip())), (c, None)]);
        assert_eq!(plan(&[a]), vec![(a, None)]);
        let any: SocketAddr = "0.0.0.0:5483".parse().unwrap();
        assert_eq!(plan(&[any, b]), vec![(any, None), (b, None)]);
    }
}
