//! `natt relay` (hidden): a check of a TURN relay. Allocates from a fresh UDP socket (or over
//! TCP with `?transport=tcp`), adds the peer, sends it numbered datagrams through the relay,
//! prints what comes back, and releases the allocation: one JSON line,
//! `{"relayed","mapped","sent","received","echoes":[...],"released"}`. With `--tcp` it relays
//! TCP instead (RFC 6062): connects to the peer through the relay, sends it a line and prints
//! what the peer sent until that line came back: `{"relayed","mapped","peer_said","released"}`.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use natt::{HolePunchServerAddr, Relay, TurnTransport};
use serde::Serialize;

use crate::args::RelayArgs;
use crate::context;
use crate::output;

/// What `natt relay` prints.
#[derive(Debug, Serialize)]
struct RelayReport {
    relayed: String,
    mapped: Option<String>,
    sent: u32,
    received: usize,
    echoes: Vec<String>,
    released: bool,
}

/// What `natt relay --tcp` prints.
#[derive(Debug, Serialize)]
struct TcpRelayReport {
    relayed: String,
    mapped: Option<String>,
    peer_said: String,
    released: bool,
}

/// What `natt relay --tcp` sends the peer.
const TCP_LINE: &[u8] = b"natt relay tcp\n";

/// The most `natt relay --tcp` reads from the peer.
const TCP_READ_LIMIT: u64 = 4096;

/// Allocates, sends, receives, releases.
pub fn run(args: &RelayArgs) -> Result<(), String> {
    let timeout = context::seconds(args.timeout)?;
    let deadline = Instant::now() + timeout;
    let Some(HolePunchServerAddr::Turn {
        addr,
        transport,
        credentials,
    }) = context::turn_server(&args.turn)?
    else {
        return Err("natt relay needs --turn and --turn-user".into());
    };
    let config = context::turn_config()?;
    if args.tcp {
        if transport != TurnTransport::Tcp {
            return Err("natt relay --tcp needs the relay over TCP (?transport=tcp)".into());
        }
        let config = natt::turn::Config {
            tcp_relay: true,
            ..config
        };
        let mut relay = Relay::allocate_tcp(addr, credentials, config, deadline).map_err(|e| e.to_string())?;
        let mut stream = relay.connect_tcp(args.peer, deadline).map_err(|e| e.to_string())?;
        stream
            .set_read_timeout(Some(natt::core::deadline::wait_until(deadline)))
            .map_err(|e| e.to_string())?;
        stream
            .write_all(TCP_LINE)
            .map_err(|e| format!("writing to the peer: {e}"))?;
        // Until the peer has sent our line back, closed, or the deadline (some relays end the
        // whole connection on a half-close, so ours stays open until then).
        let mut said = Vec::new();
        let mut buf = [0u8; 1024];
        while !said.windows(TCP_LINE.len()).any(|w| w == TCP_LINE) && (said.len() as u64) < TCP_READ_LIMIT {
            match stream.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => said.extend_from_slice(buf.get(..n).unwrap_or_default()),
                Err(e) => return Err(format!("reading from the peer: {e}")),
            }
        }
        let report = TcpRelayReport {
            relayed: relay.relayed_addr().to_string(),
            mapped: relay.mapped_addr().map(|a| a.to_string()),
            peer_said: String::from_utf8_lossy(&said).to_string(),
            released: relay.release(),
        };
        return output::print_json(&report);
    }
    let mut relay = match transport {
        TurnTransport::Udp => {
            let socket = UdpSocket::bind(SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0))).map_err(|e| e.to_string())?;
            let relay = Relay::allocate_udp(&socket, addr, credentials, config, deadline).map_err(|e| e.to_string())?;
            relay.read_socket_itself();
            relay
        }
        _ => Relay::allocate_tcp(addr, credentials, config, deadline).map_err(|e| e.to_string())?,
    };
    relay.add_peer(args.peer, deadline).map_err(|e| e.to_string())?;
    let mut echoes = Vec::new();
    for i in 0..args.count {
        let text = format!("natt relay {i}");
        relay.send_to(text.as_bytes(), args.peer).map_err(|e| e.to_string())?;
        let wait = (Instant::now() + Duration::from_secs(1)).min(deadline);
        while let Some((peer, payload)) = relay.recv_timeout(wait) {
            let got = String::from_utf8_lossy(&payload).to_string();
            if peer == args.peer && got == text {
                echoes.push(got);
                break;
            }
        }
    }
    let report = RelayReport {
        relayed: relay.relayed_addr().to_string(),
        mapped: relay.mapped_addr().map(|a| a.to_string()),
        sent: args.count,
        received: echoes.len(),
        echoes,
        released: relay.release(),
    };
    output::print_json(&report)
}
