//! The command line, as clap derives it. Flags named by the project's issues are a contract
//! that scripts rely on: extend, never rename.

use std::net::SocketAddr;

use clap::{Args, Parser, Subcommand};
use natt::HolePunchServerAddr;

/// NAT traversal: map sockets through NATs and firewalls, serve and probe.
#[derive(Debug, Parser)]
#[command(name = "natt", version, about)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve the simple hole-punch protocol and STUN on UDP and TCP (port 5483 by default) until
    /// SIGINT or SIGTERM.
    Serve(ServeArgs),
    /// Map a socket and print its endpoints (with --turn, a relayed address on a TURN server
    /// too).
    Map(MapArgs),
    /// Report on the network in front of this host: external addresses, NAT behaviour, and
    /// with --turn whether a TURN relay allocates.
    Probe(ProbeArgs),
    /// Map a socket, exchange tokens with a peer, punch a hole, then relay stdin and stdout.
    Punch(PunchArgs),
    /// Allocate on a TURN server, send numbered datagrams to a peer through it and print
    /// what comes back (a check of a relay; the lab's tests use it).
    #[command(hide = true)]
    Relay(RelayArgs),
}

/// The TURN relay to use (`natt map`, `natt probe`, `natt punch`, `natt relay`). The password is read from
/// the environment variable NATT_TURN_PASSWORD only, never from the command line, where
/// other users see it.
#[derive(Debug, Args)]
pub struct TurnArgs {
    /// A TURN relay: its relayed address becomes one more endpoint of a mapped UDP socket
    /// (technique `turn`), held while the mapping is; `?transport=tcp` reaches the relay over
    /// TCP. Needs --turn-user, and the password in NATT_TURN_PASSWORD.
    #[arg(
        long = "turn",
        value_name = "turn:IP[:PORT][?transport=udp|tcp]",
        requires = "turn_user"
    )]
    pub turn: Option<String>,
    /// The TURN user name (the password comes from NATT_TURN_PASSWORD).
    #[arg(long = "turn-user", value_name = "NAME", requires = "turn")]
    pub turn_user: Option<String>,
}

/// `natt relay` (hidden).
#[derive(Debug, Args)]
pub struct RelayArgs {
    /// The TURN relay.
    #[command(flatten)]
    pub turn: TurnArgs,
    /// The peer to send to through the relay (an echo server answers).
    #[arg(long, value_name = "IP:PORT")]
    pub peer: SocketAddr,
    /// Datagrams to send.
    #[arg(long, value_name = "N", default_value_t = 5)]
    pub count: u32,
    /// Relay TCP instead (RFC 6062, over ?transport=tcp): connect to the peer through the
    /// relay, send it a line, and print what it sends until the line comes back.
    #[arg(long)]
    pub tcp: bool,
    /// Seconds the whole check may take.
    #[arg(long, value_name = "SECS", default_value_t = 5.0)]
    pub timeout: f64,
}

/// Which techniques to use, and their servers: the same flags for map, probe and punch.
#[derive(Debug, Args)]
pub struct TechniqueArgs {
    /// A simple hole-punch server, such as `natt serve`, by name or address (default port
    /// 5483; an IPv6 address with a port in brackets: [ADDR]:PORT; repeatable).
    #[arg(long = "simple", value_name = "HOST[:PORT]", value_parser = HolePunchServerAddr::parse_simple)]
    pub simple: Vec<HolePunchServerAddr>,
    /// A STUN server by name or address (default port 3478; a `natt serve` answers STUN on its
    /// own port, HOST:5483; an IPv6 address with a port in brackets: [ADDR]:PORT; repeatable).
    #[arg(long = "stun", value_name = "HOST[:PORT]", value_parser = HolePunchServerAddr::parse_stun)]
    pub stun: Vec<HolePunchServerAddr>,
    /// Do not use UPnP.
    #[arg(long)]
    pub no_upnp: bool,
    /// Do not use PCP or NAT-PMP.
    #[arg(long)]
    pub no_pcp: bool,
    /// The PCP / NAT-PMP gateway, with its port, usually 5351 (default: the default route's
    /// router, port 5351).
    #[arg(long = "pcp", value_name = "IP:PORT")]
    pub pcp: Option<SocketAddr>,
    /// Wait longer for the NAT's filtering verdict (STUN's `nat_restricted`, `natt probe`'s
    /// `filtering`): 4 round trips to the STUN server + 250 ms after its first answer instead
    /// of 1 round trip + 5 ms. Surer when the server's other address answers late; every
    /// mapping or probe behind a NAT that filters then waits that long.
    #[arg(long)]
    pub patient_filtering: bool,
    /// A gateway to speak NAT-PMP only to (tests).
    #[arg(long = "nat-pmp", value_name = "ADDR", hide = true)]
    pub nat_pmp: Option<SocketAddr>,
}

/// `natt punch`.
#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("proto").required(true).args(["udp", "tcp"])))]
pub struct PunchArgs {
    /// Punch over UDP (one datagram per line).
    #[arg(long)]
    pub udp: bool,
    /// Punch over TCP (simultaneous open).
    #[arg(long)]
    pub tcp: bool,
    /// Local port to bind (0: any free port).
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub port: u16,
    /// The techniques to use and their servers.
    #[command(flatten)]
    pub techniques: TechniqueArgs,
    /// The TURN relay: with it, `natt punch --udp` connects with fallback (direct where a path
    /// opens, else through the relay).
    #[command(flatten)]
    pub turn: TurnArgs,
    /// Where to write our token: a file (written whole, atomically) or `-` for stdout.
    #[arg(long, value_name = "FILE|-")]
    pub token_out: String,
    /// Where to read the peer's token: a file (waited for, at most --timeout, until it exists and
    /// ends with a newline; delete an old one first: it is read at once) or `-` for the first
    /// line of stdin (waited for without a time limit).
    #[arg(long, value_name = "FILE|-")]
    pub peer_token: String,
    /// Seconds to wait for a --peer-token FILE, and then seconds the punch may take from when
    /// the peer's token is read.
    #[arg(long, value_name = "SECS", default_value_t = 10.0)]
    pub timeout: f64,
    /// Seconds mapping the socket may take.
    #[arg(long, value_name = "SECS", default_value_t = 3.0)]
    pub map_timeout: f64,
    /// UDP, and TCP through a relay: seconds to keep printing what the peer sends after stdin
    /// ends.
    #[arg(long, value_name = "SECS", default_value_t = 1.0)]
    pub linger: f64,
    /// Print the result as one JSON line:
    /// {"peer":"IP:PORT","elapsed_ms":N,"via":"udp|tcp","path":"direct|relay","relay":"IP:PORT"|null}
    /// (`relay`: the relayed address a relayed path goes through).
    #[arg(long)]
    pub json: bool,
}

/// `natt serve`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address to serve the simple protocol and STUN on, UDP and TCP (repeatable). Two
    /// addresses of one family with different specific IPs (not 0.0.0.0) make an RFC 5780 STUN
    /// server, which also listens on each IP at the first address's port + 1.
    #[arg(long = "listen", value_name = "ADDR", default_value = "0.0.0.0:5483")]
    pub listen: Vec<SocketAddr>,
}

/// `natt probe`.
#[derive(Debug, Args)]
#[command(mut_arg("stun", |a| a.help(
    "A STUN server by name or address (default port 3478; a `natt serve` answers STUN on its \
     own port, HOST:5483; an IPv6 address with a port in brackets: [ADDR]:PORT; repeatable); \
     the first is used for RFC 5780 behaviour discovery"
)))]
pub struct ProbeArgs {
    /// The techniques to use and their servers.
    #[command(flatten)]
    pub techniques: TechniqueArgs,
    /// The TURN relay to try (the report's `relay`).
    #[command(flatten)]
    pub turn: TurnArgs,
    /// Print one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
    /// Seconds the probe may take.
    #[arg(long, value_name = "SECS", default_value_t = 3.0)]
    pub timeout: f64,
}

/// `natt map`.
#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("proto").required(true).args(["udp", "tcp"])))]
pub struct MapArgs {
    /// Map a UDP socket.
    #[arg(long)]
    pub udp: bool,
    /// Map a TCP socket.
    #[arg(long)]
    pub tcp: bool,
    /// Local port to bind (0: any free port).
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub port: u16,
    /// The techniques to use and their servers.
    #[command(flatten)]
    pub techniques: TechniqueArgs,
    /// The TURN relay to allocate on (UDP sockets).
    #[command(flatten)]
    pub turn: TurnArgs,
    /// Print one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
    /// Keep the mapping alive until SIGINT, SIGTERM or end of standard input, then release it.
    #[arg(long)]
    pub hold: bool,
    /// Seconds mapping may take.
    #[arg(long, value_name = "SECS", default_value_t = 3.0)]
    pub timeout: f64,
}
