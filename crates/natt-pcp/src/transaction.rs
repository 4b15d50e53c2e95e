//! The protocol logic, without sockets: a [`Transaction`] is one request to a gateway (map,
//! renew, delete, or "who answers?"), fed with datagrams and time, saying what to send and,
//! once done, what came of it. It is a protocol core: it reads no clock and draws no random
//! number of its own (the mapping's nonce and the jitter's generator are given), and speaks natt-core's socket-free
//! vocabulary, [`UdpExchange`], so natt-core's receive loop runs it
//! ([`natt_core::udp::drive_until_stopped`]).
//!
//! It speaks PCP version 2 first and falls back to NAT-PMP when the gateway does not speak
//! PCP version 2. Only an `UNSUPP_VERSION` answer that echoes our MAP request's nonce proves
//! that ([RFC 6887 section 9]: a server of another PCP version copies the request it cannot
//! parse); it moves to NAT-PMP at once, and [`Transaction::verified_fallback`] says so, so
//! that the gateway can be remembered as NAT-PMP only. An answer in NAT-PMP's version 0 (what
//! an RFC 6886 gateway sends) or a bare `UNSUPP_VERSION` header carries no nonce, so anyone
//! able to forge the gateway's address could send it: after one, PCP keeps waiting for an
//! answer with our nonce for [`UNVERIFIED_FALLBACK_WAIT`], and only then tries NAT-PMP (an
//! ANNOUNCE has no nonce, so its fallback is never verified). Replies that are not for it are
//! ignored: from another address, malformed, for another opcode, with another nonce, protocol
//! or internal port. A success reply that cannot be used (an external address that
//! [`natt_core::endpoint::unusable_external_ip`] refuses, port 0, lifetime 0) ends it with
//! [`PcpError::Malformed`]; lifetimes are capped at [`MAX_LIFETIME`].
//!
//! [RFC 6887 section 9]: https://www.rfc-editor.org/rfc/rfc6887#section-9
//!
//! ```
//! use natt_pcp::transaction::{MapSpec, Outcome, Transaction, Version};
//! use natt_pcp::retransmit::Jitter;
//! use natt_core::UdpExchange;
//! use natt_pcp::pcp_wire::{self, MapData, Response, ResultCode};
//! use rand::{SeedableRng, rngs::StdRng};
//! use std::time::Instant;
//!
//! let gateway = "192.168.1.1:5351".parse().unwrap();
//! // The mapping's nonce and the retransmissions' jitter come from the driver's generator.
//! let mut rng = StdRng::seed_from_u64(1); // a driver's: `StdRng::from_os_rng()`
//! let nonce = rand::Rng::random(&mut rng);
//! let spec = MapSpec::new(natt_core::Protocol::Udp, "192.168.1.2".parse().unwrap(), 40000, 7200, nonce);
//! let now = Instant::now();
//! let mut tx = Transaction::map(gateway, spec.clone(), Version::Pcp, true, now, Jitter::random(rng));
//! let request = tx.poll_transmit(now).unwrap();
//! assert_eq!(request.destination, gateway);
//! let map = pcp_wire::decode_request(&request.payload).unwrap().map.unwrap();
//! // The gateway's answer, as a server would build it.
//! let answer = pcp_wire::encode_response(&Response {
//!     version: 2,
//!     opcode: pcp_wire::OPCODE_MAP,
//!     result: ResultCode::SUCCESS,
//!     lifetime: 3600,
//!     epoch: 42,
//!     map: Some(MapData { external: "203.0.113.101:40000".parse().unwrap(), ..map }),
//! });
//! assert!(tx.handle_datagram(now, gateway, &answer));
//! let Some(Ok(Outcome::Mapped(grant))) = tx.poll_result(now) else { panic!() };
//! assert_eq!(grant.external.to_string(), "203.0.113.101:40000");
//! assert_eq!(grant.version.name(), "pcp");
//! ```

#![deny(clippy::disallowed_methods)] // a protocol core: see clippy.toml

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use natt_core::endpoint::unusable_external_ip;
use natt_core::retransmit::Schedule;
use natt_core::{Protocol, Transmit, UdpExchange};

use crate::error::{PcpError, UnsupportedDetail};
use crate::natpmp_wire as pmp;
use crate::pcp_wire::{self as pcp, Nonce};
use crate::retransmit::{Jitter, NAT_PMP, PCP};

/// The longest lifetime believed from a gateway (one day); longer grants are renewed as if
/// they were this long.
pub const MAX_LIFETIME: u32 = 86_400;

/// How long a PCP request keeps waiting for an answer carrying its nonce after an answer
/// without one said that the gateway does not speak PCP version 2 (see the module
/// documentation). A gateway on the LAN answers within milliseconds; the wait is short enough
/// that NAT-PMP still fits in the default mapping timeout (3 s).
pub const UNVERIFIED_FALLBACK_WAIT: Duration = Duration::from_millis(500);

/// The protocol a gateway speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Version {
    /// PCP, RFC 6887 (version 2).
    Pcp,
    /// NAT-PMP, RFC 6886 (version 0).
    NatPmp,
}

impl Version {
    /// The technique name of endpoints mapped with this protocol: `pcp` or `nat-pmp`.
    pub fn name(self) -> &'static str {
        match self {
            Version::Pcp => "pcp",
            Version::NatPmp => "nat-pmp",
        }
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Version::Pcp => "PCP",
            Version::NatPmp => "NAT-PMP",
        })
    }
}

/// What to map.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MapSpec {
    /// UDP or TCP.
    pub protocol: Protocol,
    /// The client's address on the interface toward the gateway (PCP puts it in requests).
    pub client: IpAddr,
    /// The port to map.
    pub internal_port: u16,
    /// The lifetime to ask for, in seconds.
    pub lifetime: u32,
    /// PCP's mapping nonce: the same for creating, renewing and deleting one mapping.
    pub nonce: Nonce,
    /// The external address to ask for: `None` asks for the internal port on any address;
    /// renewals ask for what was granted.
    pub suggested: Option<SocketAddr>,
}

impl MapSpec {
    /// A mapping of `internal_port`, with `nonce` (fresh and random, from the driver's
    /// generator: it is what proves that answers are for us).
    pub fn new(protocol: Protocol, client: IpAddr, internal_port: u16, lifetime: u32, nonce: Nonce) -> Self {
        MapSpec {
            protocol,
            client,
            internal_port,
            lifetime,
            nonce,
            suggested: None,
        }
    }

    fn pcp_protocol(&self) -> u8 {
        match self.protocol {
            Protocol::Udp => pcp::PROTO_UDP,
            Protocol::Tcp => pcp::PROTO_TCP,
        }
    }

    fn nat_pmp_opcode(&self) -> u8 {
        match self.protocol {
            Protocol::Udp => pmp::OP_MAP_UDP,
            Protocol::Tcp => pmp::OP_MAP_TCP,
        }
    }
}

/// A mapping a gateway granted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Grant {
    /// The protocol that made it.
    pub version: Version,
    /// Where peers reach the mapped port.
    pub external: SocketAddr,
    /// How long it lasts unless renewed, in seconds (at most [`MAX_LIFETIME`]).
    pub lifetime: u32,
    /// The gateway's epoch in the reply.
    pub epoch: u32,
}

/// How a transaction ended well.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// A mapping was made or renewed.
    Mapped(Grant),
    /// A mapping was deleted.
    Deleted {
        /// The protocol that deleted it.
        version: Version,
        /// The gateway's epoch.
        epoch: u32,
    },
    /// The gateway answered an ANNOUNCE (PCP) or external address request (NAT-PMP).
    Announced {
        /// The protocol that answered.
        version: Version,
        /// The gateway's epoch.
        epoch: u32,
        /// The external address, if NAT-PMP told it (PCP's ANNOUNCE does not).
        external_ip: Option<IpAddr>,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Goal {
    Map,
    Delete,
    Announce,
}

/// The step of a NAT-PMP exchange: mapping needs the external address first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    ExternalAddress,
    Map,
}

/// How a [`Transaction`] ends: what the gateway granted or said, or why not.
pub type TransactionResult = Result<Outcome, PcpError>;

/// One request to a gateway, with its retransmissions (see the module documentation). It
/// speaks natt-core's [`UdpExchange`], so natt-core's receive loop drives it.
#[derive(Debug)]
pub struct Transaction {
    gateway: SocketAddr,
    goal: Goal,
    spec: MapSpec,
    version: Version,
    fallback: bool,
    jitter: Jitter,
    step: Step,
    external_ip: Option<Ipv4Addr>,
    payload: Vec<u8>,
    retransmit: Schedule,
    result: Option<Result<Outcome, PcpError>>,
    /// A result was reached (and perhaps taken).
    done: bool,
    /// Speaking PCP, an answer without our nonce said the gateway does not speak it: until
    /// when a proper answer is waited for, and what that answer said.
    unverified: Option<(Instant, String)>,
    /// The move to NAT-PMP followed an `UNSUPP_VERSION` that echoed our nonce.
    verified_fallback: bool,
}

impl Transaction {
    /// Maps (or renews) `spec` on `gateway`, starting with `version`; with `fallback`, a PCP
    /// gateway that answers only NAT-PMP is asked again in NAT-PMP. PCP's retransmission
    /// intervals are randomised by `jitter` (the driver's generator, [`Jitter::random`]).
    pub fn map(
        gateway: SocketAddr,
        spec: MapSpec,
        version: Version,
        fallback: bool,
        now: Instant,
        jitter: Jitter,
    ) -> Self {
        Self::new(gateway, Goal::Map, spec, version, fallback, now, jitter)
    }

    /// Deletes the mapping `spec` describes (PCP: same nonce) with the protocol that made it;
    /// `jitter` as for [`map`](Self::map).
    pub fn delete(gateway: SocketAddr, spec: MapSpec, version: Version, now: Instant, jitter: Jitter) -> Self {
        Self::new(gateway, Goal::Delete, spec, version, false, now, jitter)
    }

    /// Asks which protocol `gateway` speaks: a PCP ANNOUNCE, then (with `fallback`) NAT-PMP's
    /// external address request; `jitter` as for [`map`](Self::map).
    pub fn announce(
        gateway: SocketAddr,
        client: IpAddr,
        version: Version,
        fallback: bool,
        now: Instant,
        jitter: Jitter,
    ) -> Self {
        let spec = MapSpec {
            protocol: Protocol::Udp,
            client,
            internal_port: 0,
            lifetime: 0,
            nonce: [0; 12],
            suggested: None,
        };
        Self::new(gateway, Goal::Announce, spec, version, fallback, now, jitter)
    }

    fn new(
        gateway: SocketAddr,
        goal: Goal,
        spec: MapSpec,
        version: Version,
        fallback: bool,
        now: Instant,
        jitter: Jitter,
    ) -> Self {
        let mut t = Transaction {
            gateway,
            goal,
            spec,
            version,
            fallback,
            jitter,
            step: Step::ExternalAddress,
            external_ip: None,
            payload: Vec::new(),
            retransmit: Schedule::new(PCP, now),
            result: None,
            done: false,
            unverified: None,
            verified_fallback: false,
        };
        t.start(version, now);
        t
    }

    /// Uses `jitter` for PCP's retransmission intervals (tests use a fixed one).
    pub fn with_jitter(mut self, jitter: Jitter, now: Instant) -> Self {
        self.jitter = jitter;
        self.start(self.version, now);
        self
    }

    /// NAT-PMP: the external address is already known (a renewal), so only the mapping is
    /// requested.
    pub fn with_known_external(mut self, ip: Ipv4Addr, now: Instant) -> Self {
        if !ip.is_unspecified() {
            self.external_ip = Some(ip);
            self.start(self.version, now);
        }
        self
    }

    /// The protocol being spoken now.
    pub fn version(&self) -> Version {
        self.version
    }

    /// True when the transaction moved from PCP to NAT-PMP because the gateway answered
    /// `UNSUPP_VERSION` echoing our nonce: proof enough to remember that it speaks NAT-PMP
    /// only. A fallback after answers without that proof is not, since anyone who can forge
    /// the gateway's address could have sent them.
    pub fn verified_fallback(&self) -> bool {
        self.verified_fallback
    }

    /// How many datagrams were sent in the current protocol.
    pub fn attempts(&self) -> u32 {
        self.retransmit.sends()
    }

    fn start(&mut self, version: Version, now: Instant) {
        self.version = version;
        let schedule = match version {
            Version::Pcp => PCP,
            Version::NatPmp => NAT_PMP,
        };
        self.step = match (version, self.goal, self.external_ip) {
            (Version::NatPmp, Goal::Map, None) | (Version::NatPmp, Goal::Announce, _) => Step::ExternalAddress,
            _ => Step::Map,
        };
        self.payload = self.request();
        self.retransmit = Schedule::new(schedule, now);
    }

    fn request(&self) -> Vec<u8> {
        let spec = &self.spec;
        let lifetime = match self.goal {
            Goal::Map => spec.lifetime,
            Goal::Delete | Goal::Announce => 0,
        };
        match self.version {
            Version::Pcp => {
                let map = (self.goal != Goal::Announce).then(|| pcp::MapData {
                    nonce: spec.nonce,
                    protocol: spec.pcp_protocol(),
                    internal_port: spec.internal_port,
                    external: spec
                        .suggested
                        .unwrap_or_else(|| SocketAddr::new(pcp::unspecified_like(spec.client), spec.internal_port)),
                });
                pcp::encode_request(&pcp::Request {
                    version: pcp::VERSION,
                    opcode: if map.is_some() {
                        pcp::OPCODE_MAP
                    } else {
                        pcp::OPCODE_ANNOUNCE
                    },
                    lifetime,
                    client: spec.client,
                    map,
                })
            }
            Version::NatPmp => match self.step {
                Step::ExternalAddress => pmp::encode_request(&pmp::Request::ExternalAddress),
                Step::Map => pmp::encode_request(&pmp::Request::Map(pmp::MapRequest {
                    opcode: spec.nat_pmp_opcode(),
                    internal_port: spec.internal_port,
                    // RFC 6886: 0 when deleting.
                    suggested_external_port: match self.goal {
                        Goal::Map => spec.suggested.map_or(spec.internal_port, |s| s.port()),
                        Goal::Delete | Goal::Announce => 0,
                    },
                    lifetime,
                })),
            },
        }
    }

    /// Acts on the time `now`: once the wait for a PCP answer with our nonce after an
    /// unverified "not PCP" answer is over, NAT-PMP is tried (or, without fallback, the
    /// transaction ends with [`PcpError::Unsupported`]).
    /// [`poll_result`](UdpExchange::poll_result) and
    /// [`poll_transmit`](UdpExchange::poll_transmit) call it with their `now`, so a driver
    /// need not; calling it again at the same time does nothing more.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.done || self.version != Version::Pcp {
            return;
        }
        let Some((until, what)) = self.unverified.take_if(|(until, _)| now >= *until) else {
            return;
        };
        log::debug!(
            "{}: no PCP answer with our nonce by {:?} after: {what}",
            self.gateway,
            now.saturating_duration_since(until) + UNVERIFIED_FALLBACK_WAIT
        );
        self.version_refused(now, what);
    }

    /// The error to report when the caller's deadline passed without a result (what
    /// [`finish`](UdpExchange::finish) says).
    pub fn timed_out(&self) -> PcpError {
        PcpError::TimedOut {
            gateway: self.gateway,
            version: self.version,
        }
    }

    fn finish(&mut self, result: Result<Outcome, PcpError>) -> bool {
        self.done = true;
        self.result = Some(result);
        true
    }

    fn malformed(&mut self, why: &str) -> bool {
        self.finish(Err(PcpError::Malformed {
            gateway: self.gateway,
            version: self.version,
            why: why.to_owned(),
        }))
    }

    /// The gateway says it does not speak this version. Speaking PCP, an answer that did not
    /// echo our nonce (`verified` false) only starts a wait for one that does
    /// ([`UNVERIFIED_FALLBACK_WAIT`]); a verified one moves to NAT-PMP at once, if allowed.
    fn unsupported(&mut self, now: Instant, what: String, verified: bool) -> bool {
        if self.version != Version::Pcp {
            return self.version_refused(now, what);
        }
        if !verified {
            if self.unverified.is_none() {
                log::debug!(
                    "{}: {what}, without our nonce; waiting {UNVERIFIED_FALLBACK_WAIT:?} for a PCP answer",
                    self.gateway
                );
                let until = now.checked_add(UNVERIFIED_FALLBACK_WAIT).unwrap_or(now);
                self.unverified = Some((until, what));
            }
            return false;
        }
        self.verified_fallback = self.fallback;
        self.version_refused(now, what)
    }

    /// The gateway does not speak this version: NAT-PMP next if speaking PCP and allowed,
    /// else the end.
    fn version_refused(&mut self, now: Instant, what: String) -> bool {
        if self.version == Version::Pcp && self.fallback {
            log::debug!("{}: {what}; falling back to NAT-PMP", self.gateway);
            self.unverified = None;
            self.start(Version::NatPmp, now);
            true
        } else {
            self.finish(Err(PcpError::Unsupported {
                gateway: self.gateway,
                detail: UnsupportedDetail(what),
            }))
        }
    }

    fn handle_pcp(&mut self, now: Instant, data: &[u8]) -> bool {
        if self.version != Version::Pcp {
            return false;
        }
        let Ok(r) = pcp::decode_response(data) else {
            return false;
        };
        let expected = if self.goal == Goal::Announce {
            pcp::OPCODE_ANNOUNCE
        } else {
            pcp::OPCODE_MAP
        };
        if r.opcode != expected {
            return false;
        }
        if r.result == pcp::ResultCode::UNSUPP_VERSION {
            // RFC 6887 section 9: a server of another version copies the request it cannot
            // parse, so a real answer to a MAP echoes its nonce. A bare header proves nothing.
            let echoed = self.goal != Goal::Announce && r.map.as_ref().is_some_and(|m| self.is_ours(m));
            return self.unsupported(
                now,
                format!("the PCP server answered {} (its version {})", r.result, r.version),
                echoed,
            );
        }
        if r.version != pcp::VERSION {
            return false;
        }
        if self.goal == Goal::Announce {
            return self.finish(Ok(Outcome::Announced {
                version: Version::Pcp,
                epoch: r.epoch,
                external_ip: None,
            }));
        }
        // RFC 6887 section 11.3: the reply must carry our nonce, protocol and internal port.
        let Some(map) = r.map else {
            return false;
        };
        if !self.is_ours(&map) {
            return false;
        }
        if r.result != pcp::ResultCode::SUCCESS {
            return self.finish(Err(PcpError::Refused {
                gateway: self.gateway,
                version: Version::Pcp,
                code: r.result.to_string(),
                number: u16::from(r.result.0),
            }));
        }
        if self.goal == Goal::Delete {
            return self.finish(Ok(Outcome::Deleted {
                version: Version::Pcp,
                epoch: r.epoch,
            }));
        }
        self.granted(map.external, r.lifetime, r.epoch)
    }

    /// RFC 6887 section 11.3: an answer to our MAP carries its nonce, protocol and internal
    /// port.
    fn is_ours(&self, map: &pcp::MapData) -> bool {
        map.nonce == self.spec.nonce
            && map.protocol == self.spec.pcp_protocol()
            && map.internal_port == self.spec.internal_port
    }

    fn granted(&mut self, external: SocketAddr, lifetime: u32, epoch: u32) -> bool {
        if let Some(why) = unusable_external_ip(external.ip()) {
            return self.malformed(&format!("the external address {} is {why}", external.ip()));
        }
        if external.port() == 0 {
            return self.malformed("external port 0");
        }
        if lifetime == 0 {
            return self.malformed("lifetime 0");
        }
        self.finish(Ok(Outcome::Mapped(Grant {
            version: self.version,
            external,
            lifetime: lifetime.min(MAX_LIFETIME),
            epoch,
        })))
    }

    fn handle_nat_pmp(&mut self, now: Instant, data: &[u8]) -> bool {
        let Ok(r) = pmp::decode_response(data) else {
            return false;
        };
        if self.version == Version::Pcp {
            // A NAT-PMP gateway answers requests of other versions in its own; no nonce in it.
            return self.unsupported(now, format!("the gateway answered in NAT-PMP: {}", r.result), false);
        }
        let expected = match self.step {
            Step::ExternalAddress => pmp::OP_EXTERNAL_ADDRESS,
            Step::Map => self.spec.nat_pmp_opcode(),
        };
        if r.opcode != expected {
            return false;
        }
        if let pmp::Body::Map { internal_port, .. } = r.body
            && internal_port != self.spec.internal_port
        {
            return false;
        }
        if r.result == pmp::ResultCode::UNSUPPORTED_VERSION {
            return self.unsupported(now, format!("the NAT-PMP gateway answered {}", r.result), true);
        }
        if self.goal == Goal::Announce {
            let external_ip = match r.body {
                pmp::Body::ExternalAddress(ip)
                    if r.result == pmp::ResultCode::SUCCESS && unusable_external_ip(IpAddr::V4(ip)).is_none() =>
                {
                    Some(IpAddr::V4(ip))
                }
                _ => None,
            };
            return self.finish(Ok(Outcome::Announced {
                version: Version::NatPmp,
                epoch: r.epoch,
                external_ip,
            }));
        }
        if r.result != pmp::ResultCode::SUCCESS {
            return self.finish(Err(PcpError::Refused {
                gateway: self.gateway,
                version: Version::NatPmp,
                code: r.result.to_string(),
                number: r.result.0,
            }));
        }
        match (self.step, r.body) {
            (Step::ExternalAddress, pmp::Body::ExternalAddress(ip)) => {
                if let Some(why) = unusable_external_ip(IpAddr::V4(ip)) {
                    return self.malformed(&format!("the external address {ip} is {why}"));
                }
                self.external_ip = Some(ip);
                self.step = Step::Map;
                self.payload = self.request();
                self.retransmit = Schedule::new(NAT_PMP, now);
                true
            }
            (
                Step::Map,
                pmp::Body::Map {
                    external_port,
                    lifetime,
                    ..
                },
            ) => {
                if self.goal == Goal::Delete {
                    return self.finish(Ok(Outcome::Deleted {
                        version: Version::NatPmp,
                        epoch: r.epoch,
                    }));
                }
                match self.external_ip {
                    Some(ip) => self.granted(SocketAddr::new(IpAddr::V4(ip), external_port), lifetime, r.epoch),
                    None => self.malformed("no external address"),
                }
            }
            // A success without its body does not decode; anything else is not ours.
            _ => false,
        }
    }
}

/// The vocabulary of every socket-free exchange: natt-core's receive loop
/// ([`natt_core::udp::drive`]) runs a transaction as it runs a technique's exchange.
impl UdpExchange<TransactionResult> for Transaction {
    /// The request to send to the gateway at `now`, if one is due (after acting on `now`,
    /// [`Transaction::handle_timeout`]).
    fn poll_transmit(&mut self, now: Instant) -> Option<Transmit> {
        self.handle_timeout(now);
        if self.done || !self.retransmit.is_due(now) {
            return None;
        }
        let rand = self.jitter.sample(self.retransmit.params().jitter);
        self.retransmit.on_sent_jittered(now, rand);
        Some(Transmit {
            destination: self.gateway,
            payload: self.payload.clone(),
        })
    }

    /// When [`handle_timeout`](Transaction::handle_timeout) or the next retransmission is due
    /// (`None` once finished, or when the schedule gave up and only a late answer can help).
    fn poll_timeout(&self) -> Option<Instant> {
        if self.done {
            return None;
        }
        let unverified = self.unverified.as_ref().map(|(until, _)| *until);
        match (self.retransmit.next_send(), unverified) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Offers a datagram received at `now` from `from`; `true` when it answered this
    /// transaction (it then has a result, or moved on to its next step).
    fn handle_datagram(&mut self, now: Instant, from: SocketAddr, data: &[u8]) -> bool {
        if self.done || from != self.gateway {
            return false;
        }
        match data.first() {
            Some(&pmp::VERSION) => self.handle_nat_pmp(now, data),
            Some(_) => self.handle_pcp(now, data),
            None => false,
        }
    }

    /// The result, once there is one at `now` (after acting on `now`,
    /// [`Transaction::handle_timeout`]); taken: later calls return `None`, and the
    /// transaction sends and accepts nothing more.
    fn poll_result(&mut self, now: Instant) -> Option<TransactionResult> {
        self.handle_timeout(now);
        self.result.take()
    }

    /// The deadline passed without a result: [`Transaction::timed_out`].
    fn finish(&mut self) -> TransactionResult {
        Err(self.timed_out())
    }
}

#[cfg(test)]
#[allow(clippy::disallowed_methods)] // tests take a starting instant from the clock
mod tests {
    use super::*;
    use natt_core::UdpExchange;
    use rand::SeedableRng;
    use rand::rngs::StdRng;
    use std::time::Duration;

    const GW: &str = "192.168.1.1:5351";

    fn gw() -> SocketAddr {
        GW.parse().unwrap()
    }

    fn spec(protocol: Protocol) -> MapSpec {
        MapSpec::new(protocol, "192.168.1.2".parse().unwrap(), 40000, 7200, [0x5a; 12])
    }

    /// PCP's random jitter, from a seeded generator.
    fn jitter() -> Jitter {
        Jitter::random(StdRng::seed_from_u64(1))
    }

    /// A PCP server's reply to `request` with `result`, granting `external` for `lifetime`.
    fn pcp_reply(request: &[u8], result: u8, lifetime: u32, epoch: u32, external: &str) -> Vec<u8> {
        let req = pcp::decode_request(request).unwrap();
        pcp::encode_response(&pcp::Response {
            version: 2,
            opcode: req.opcode,
            result: pcp::ResultCode(result),
            lifetime,
            epoch,
            map: req.map.map(|m| pcp::MapData {
                external: external.parse().unwrap(),
                ..m
            }),
        })
    }

    fn nat_pmp_reply(request: &[u8], result: u16, epoch: u32, external_ip: [u8; 4], lifetime: u32) -> Vec<u8> {
        let body = match pmp::decode_request(request).unwrap() {
            pmp::Request::ExternalAddress => pmp::Body::ExternalAddress(Ipv4Addr::from(external_ip)),
            pmp::Request::Map(m) => pmp::Body::Map {
                internal_port: m.internal_port,
                external_port: if m.lifetime == 0 { 0 } else { m.suggested_external_port },
                lifetime: lifetime.min(m.lifetime),
            },
        };
        let opcode = request[1];
        pmp::encode_response(&pmp::Response {
            opcode,
            result: pmp::ResultCode(result),
            epoch,
            body,
        })
    }

    #[test]
    fn pcp_map_success() {
        let now = Instant::now();
        let mut tx = Transaction::map(gw(), spec(Protocol::Tcp), Version::Pcp, true, now, jitter());
        let req = tx.poll_transmit(now).unwrap().payload;
        assert_eq!(req.len(), 60);
        assert_eq!(req[36], pcp::PROTO_TCP);
        assert!(tx.poll_transmit(now).is_none(), "nothing more due");
        let reply = pcp_reply(&req, 0, 3600, 10, "203.0.113.101:40000");
        // From elsewhere: ignored.
        assert!(!tx.handle_datagram(now, "192.168.1.9:5351".parse().unwrap(), &reply));
        assert!(tx.handle_datagram(now, gw(), &reply));
        assert_eq!(
            tx.poll_result(now).unwrap().unwrap(),
            Outcome::Mapped(Grant {
                version: Version::Pcp,
                external: "203.0.113.101:40000".parse().unwrap(),
                lifetime: 3600,
                epoch: 10,
            })
        );
        assert!(tx.poll_timeout().is_none());
    }

    #[test]
    fn pcp_ignores_wrong_nonce_opcode_protocol_port_and_garbage() {
        let now = Instant::now();
        let mut tx = Transaction::map(gw(), spec(Protocol::Udp), Version::Pcp, true, now, jitter());
        let req = tx.poll_transmit(now).unwrap().payload;
        let good = pcp_reply(&req, 0, 3600, 10, "203.0.113.101:40000");
        let mut wrong_nonce = good.clone();
        wrong_nonce[30] ^= 1;
        let mut wrong_opcode = good.clone();
        wrong_opcode[1] = 0x82;
        let mut wrong_proto = good.clone();
        wrong_proto[36] = pcp::PROTO_TCP;
        let mut wrong_port = good.clone();
        wrong_port[41] ^= 1;
        let mut request_echo = req.clone();
        request_echo[3] = 0;
        let mut wrong_version = good.clone();
        wrong_version[0] = 3;
        for bad in [
            &wrong_nonce[..],
            &wrong_opcode,
            &wrong_proto,
            &wrong_port,
            &request_echo,
            &wrong_version,
            &good[..24],
            &good[..59],
            &[],
            &[2],
            &[0xff; 1200],
        ] {
            assert!(!tx.handle_datagram(now, gw(), bad), "{bad:?}");
        }
        assert!(tx.poll_result(now).is_none());
        assert!(tx.handle_datagram(now, gw(), &good));
        assert!(matches!(tx.poll_result(now), Some(Ok(Outcome::Mapped(_)))));
    }

    #[test]
    fn pcp_error_codes_are_refusals() {
        let now = Instant::now();
        for (code, name) in [
            (8u8, "NO_RESOURCES (8)"),
            (2, "NOT_AUTHORIZED (2)"),
            (77, "UNKNOWN (77)"),
        ] {
            let mut tx = Transaction::map(gw(), spec(Protocol::Udp), Version::Pcp, true, now, jitter());
            let req = tx.poll_transmit(now).unwrap().payload;
            assert!(tx.handle_datagram(now, gw(), &pcp_reply(&req, code, 30, 1, "0.0.0.0:0")));
            match tx.poll_result(now) {
                Some(Err(e @ PcpError::Refused { .. })) => {
                    assert_eq!(e.result_code(), Some(u16::from(code)));
                    assert!(e.to_string().contains(name), "{e}");
                }
                other => panic!("{other:?}"),
            }
        }
    }

    #[test]
    fn unusable_grants_are_malformed() {
        let now = Instant::now();
        for (lifetime, external, why) in [
            (3600, "0.0.0.0:40000", "unspecified"),
            (3600, "[::]:40000", "unspecified"),
            (3600, "127.0.0.1:40000", "loopback"),
            (3600, "[::1]:40000", "loopback"),
            (3600, "224.0.0.1:40000", "multicast"),
            (3600, "255.255.255.255:40000", "broadcast"),
            (3600, "169.254.7.7:40000", "link-local"),
            (3600, "203.0.113.101:0", "port 0"),
            (0, "203.0.113.101:40000", "lifetime 0"),
        ] {
            let mut tx = Transaction::map(gw(), spec(Protocol::Udp), Version::Pcp, true, now, jitter());
            let req = tx.poll_transmit(now).unwrap().payload;
            assert!(tx.handle_datagram(now, gw(), &pcp_reply(&req, 0, lifetime, 1, external)));
            match tx.poll_result(now) {
                Some(Err(e @ PcpError::Malformed { .. })) => assert!(e.to_string().contains(why), "{e}"),
                other => panic!("{external}: {other:?}"),
            }
        }
    }

    #[test]
    fn huge_lifetimes_are_capped() {
        let now = Instant::now();
        let mut tx = Transaction::map(gw(), spec(Protocol::Udp), Version::Pcp, true, now, jitter());
        let req = tx.poll_transmit(now).unwrap().payload;
        assert!(tx.handle_datagram(now, gw(), &pcp_reply(&req, 0, u32::MAX, 1, "203.0.113.1:1")));
        let Some(Ok(Outcome::Mapped(g))) = tx.poll_result(now) else {
            panic!()
        };
        assert_eq!(g.lifetime, MAX_LIFETIME);
    }

    /// What a server of PCP version 1 answers to our MAP (RFC 6887 section 9): UNSUPP_VERSION
    /// in its own version, with the request it could not parse copied after the header.
    fn version_negotiation(request: &[u8]) -> Vec<u8> {
        let mut answer = pcp_reply(request, 1, 0, 5, "0.0.0.0:0");
        answer[0] = 1;
        answer
    }

    #[test]
    fn unsupp_version_echoing_the_nonce_falls_back_to_nat_pmp_at_once() {
        let now = Instant::now();
        let mut tx = Transaction::map(gw(), spec(Protocol::Udp), Version::Pcp, true, now, jitter());
        let req = tx.poll_transmit(now).unwrap().payload;
        // The nonce must be ours for the answer to count.
        let mut other_nonce = version_negotiation(&req);
        other_nonce[30] ^= 1;
        assert!(!tx.handle_datagram(now, gw(), &other_nonce));
        assert!(tx.handle_datagram(now, gw(), &version_negotiation(&req)));
        assert_eq!(tx.version(), Version::NatPmp);
        assert!(tx.verified_fallback());
        // External address first, then the mapping.
        let ext = tx.poll_transmit(now).unwrap().payload;
        assert_eq!(ext, vec![0, 0]);
        assert!(tx.handle_datagram(now, gw(), &nat_pmp_reply(&ext, 0, 100, [203, 0, 113, 101], 0)));
        let map = tx.poll_transmit(now).unwrap().payload;
        assert_eq!(map.len(), 12);
        assert_eq!(map[1], pmp::OP_MAP_UDP);
        assert!(tx.handle_datagram(now, gw(), &nat_pmp_reply(&map, 0, 100, [0; 4], 3600)));
        let Some(Ok(Outcome::Mapped(g))) = tx.poll_result(now) else {
            panic!()
        };
        assert_eq!(g.version, Version::NatPmp);
        assert_eq!(g.version.name(), "nat-pmp");
        assert_eq!(g.external.to_string(), "203.0.113.101:40000");
        assert_eq!(g.lifetime, 3600);
    }

    /// What an RFC 6886 gateway answers to a PCP MAP: version 0, opcode 129, result 1.
    const NAT_PMP_UNSUPPORTED: [u8; 8] = [0, 0x81, 0, 1, 0, 0, 0, 7];

    /// Issue #18, finding 7: answers that cannot carry our nonce (NAT-PMP's, a bare
    /// UNSUPP_VERSION header) do not switch to NAT-PMP at once, and PCP still maps when the
    /// real answer follows.
    #[test]
    fn unauthenticated_unsupported_answers_do_not_downgrade_a_pcp_gateway() {
        let now = Instant::now();
        let mut tx = Transaction::map(gw(), spec(Protocol::Udp), Version::Pcp, true, now, jitter());
        let req = tx.poll_transmit(now).unwrap().payload;
        let mut bare = version_negotiation(&req);
        bare.truncate(24);
        for spoofed in [&NAT_PMP_UNSUPPORTED[..], &bare] {
            assert!(!tx.handle_datagram(now, gw(), spoofed));
            assert_eq!(tx.version(), Version::Pcp);
        }
        // The wait for a proper answer is bounded, and the real answer ends it.
        assert_eq!(tx.poll_timeout(), Some(now + UNVERIFIED_FALLBACK_WAIT));
        let later = now + UNVERIFIED_FALLBACK_WAIT / 2;
        tx.handle_timeout(later);
        assert_eq!(tx.version(), Version::Pcp);
        assert!(tx.handle_datagram(later, gw(), &pcp_reply(&req, 0, 3600, 10, "203.0.113.101:40000")));
        let Some(Ok(Outcome::Mapped(g))) = tx.poll_result(later) else {
            panic!()
        };
        assert_eq!(g.version, Version::Pcp);
        assert!(!tx.verified_fallback());
    }

    #[test]
    fn nat_pmp_version_answer_falls_back_after_the_wait_unverified() {
        let now = Instant::now();
        let mut tx = Transaction::map(gw(), spec(Protocol::Tcp), Version::Pcp, true, now, jitter());
        tx.poll_transmit(now).unwrap();
        assert!(!tx.handle_datagram(now, gw(), &NAT_PMP_UNSUPPORTED));
        tx.handle_timeout(now + UNVERIFIED_FALLBACK_WAIT - Duration::from_millis(1));
        assert_eq!(tx.version(), Version::Pcp);
        tx.handle_timeout(now + UNVERIFIED_FALLBACK_WAIT);
        assert_eq!(tx.version(), Version::NatPmp);
        assert!(
            !tx.verified_fallback(),
            "nothing proved the gateway speaks NAT-PMP only"
        );
        assert_eq!(
            tx.poll_transmit(now + UNVERIFIED_FALLBACK_WAIT).unwrap().payload,
            vec![0, 0]
        );
    }

    #[test]
    fn no_fallback_when_not_allowed() {
        let now = Instant::now();
        let mut tx = Transaction::map(gw(), spec(Protocol::Udp), Version::Pcp, false, now, jitter());
        let req = tx.poll_transmit(now).unwrap().payload;
        assert!(tx.handle_datagram(now, gw(), &version_negotiation(&req)));
        assert!(matches!(tx.poll_result(now), Some(Err(PcpError::Unsupported { .. }))));
        // Unverified: after the wait.
        let mut tx = Transaction::map(gw(), spec(Protocol::Udp), Version::Pcp, false, now, jitter());
        tx.poll_transmit(now).unwrap();
        assert!(!tx.handle_datagram(now, gw(), &NAT_PMP_UNSUPPORTED));
        assert!(tx.poll_result(now).is_none());
        tx.handle_timeout(now + UNVERIFIED_FALLBACK_WAIT);
        assert!(matches!(
            tx.poll_result(now + UNVERIFIED_FALLBACK_WAIT),
            Some(Err(PcpError::Unsupported { .. }))
        ));
    }

    #[test]
    fn nat_pmp_unsupported_version_ends_it() {
        let now = Instant::now();
        let mut tx = Transaction::map(gw(), spec(Protocol::Udp), Version::NatPmp, false, now, jitter());
        tx.poll_transmit(now).unwrap();
        assert!(tx.handle_datagram(now, gw(), &[0, 0x80, 0, 1, 0, 0, 0, 7]));
        let e = tx.poll_result(now).unwrap().unwrap_err();
        assert!(matches!(e, PcpError::Unsupported { .. }), "{e}");
    }

    #[test]
    fn nat_pmp_errors_and_mismatches() {
        let now = Instant::now();
        let mut tx = Transaction::map(gw(), spec(Protocol::Udp), Version::NatPmp, false, now, jitter())
            .with_known_external(Ipv4Addr::new(203, 0, 113, 101), now);
        let map = tx.poll_transmit(now).unwrap().payload;
        assert_eq!(map.len(), 12, "the known address is not asked for again");
        // Another internal port, a TCP answer, an address answer: not ours.
        let mut other_port = nat_pmp_reply(&map, 0, 1, [0; 4], 60);
        other_port[9] ^= 1;
        let mut tcp = nat_pmp_reply(&map, 0, 1, [0; 4], 60);
        tcp[1] = 130;
        assert!(!tx.handle_datagram(now, gw(), &other_port));
        assert!(!tx.handle_datagram(now, gw(), &tcp));
        assert!(!tx.handle_datagram(now, gw(), &nat_pmp_reply(&[0, 0], 0, 1, [1, 2, 3, 4], 0)));
        // PCP replies while speaking NAT-PMP: ignored.
        assert!(!tx.handle_datagram(now, gw(), &[2; 60]));
        // Network failure (miniupnpd that cannot forward).
        assert!(tx.handle_datagram(now, gw(), &nat_pmp_reply(&map, 3, 1, [0; 4], 0)));
        let e = tx.poll_result(now).unwrap().unwrap_err();
        assert_eq!(e.result_code(), Some(3));
        assert!(e.to_string().contains("NETWORK_FAILURE (3)"), "{e}");
    }

    #[test]
    fn nat_pmp_zero_external_address_is_malformed() {
        let now = Instant::now();
        let mut tx = Transaction::map(gw(), spec(Protocol::Udp), Version::NatPmp, false, now, jitter());
        let ext = tx.poll_transmit(now).unwrap().payload;
        assert!(tx.handle_datagram(now, gw(), &nat_pmp_reply(&ext, 0, 1, [0; 4], 0)));
        assert!(matches!(tx.poll_result(now), Some(Err(PcpError::Malformed { .. }))));
    }

    #[test]
    fn deletes_use_the_same_nonce_and_lifetime_zero() {
        let now = Instant::now();
        let mut s = spec(Protocol::Udp);
        s.suggested = Some("203.0.113.101:40000".parse().unwrap());
        let mut tx = Transaction::delete(gw(), s.clone(), Version::Pcp, now, jitter());
        let req = tx.poll_transmit(now).unwrap().payload;
        let decoded = pcp::decode_request(&req).unwrap();
        assert_eq!(decoded.lifetime, 0);
        assert_eq!(decoded.map.unwrap().nonce, s.nonce);
        assert!(tx.handle_datagram(now, gw(), &pcp_reply(&req, 0, 0, 9, "203.0.113.101:40000")));
        assert_eq!(
            tx.poll_result(now).unwrap().unwrap(),
            Outcome::Deleted {
                version: Version::Pcp,
                epoch: 9
            }
        );
        let mut tx = Transaction::delete(gw(), s, Version::NatPmp, now, jitter());
        let req = tx.poll_transmit(now).unwrap().payload;
        // Lifetime 0 and suggested external port 0 (RFC 6886 section 3.4).
        assert_eq!(&req[6..12], &[0, 0, 0, 0, 0, 0]);
        assert!(tx.handle_datagram(now, gw(), &nat_pmp_reply(&req, 0, 9, [0; 4], 0)));
        assert!(matches!(tx.poll_result(now), Some(Ok(Outcome::Deleted { .. }))));
    }

    #[test]
    fn announce_tells_who_answers() {
        let now = Instant::now();
        let client: IpAddr = "192.168.1.2".parse().unwrap();
        let mut tx = Transaction::announce(gw(), client, Version::Pcp, true, now, jitter());
        let req = tx.poll_transmit(now).unwrap().payload;
        assert_eq!(req.len(), 24);
        assert!(tx.handle_datagram(now, gw(), &pcp_reply(&req, 0, 0, 3, "0.0.0.0:0")));
        assert_eq!(
            tx.poll_result(now).unwrap().unwrap(),
            Outcome::Announced {
                version: Version::Pcp,
                epoch: 3,
                external_ip: None
            }
        );
        let mut tx = Transaction::announce(gw(), client, Version::Pcp, true, now, jitter());
        tx.poll_transmit(now).unwrap();
        // An ANNOUNCE has no nonce: NAT-PMP is asked after the wait for a PCP answer.
        assert!(!tx.handle_datagram(now, gw(), &[0, 0x80, 0, 1, 0, 0, 0, 7]));
        let now = now + UNVERIFIED_FALLBACK_WAIT;
        tx.handle_timeout(now);
        let ext = tx.poll_transmit(now).unwrap().payload;
        assert!(tx.handle_datagram(now, gw(), &nat_pmp_reply(&ext, 0, 8, [198, 51, 100, 1], 0)));
        assert_eq!(
            tx.poll_result(now).unwrap().unwrap(),
            Outcome::Announced {
                version: Version::NatPmp,
                epoch: 8,
                external_ip: Some("198.51.100.1".parse().unwrap())
            }
        );
    }

    #[test]
    fn retransmits_on_schedule() {
        let t0 = Instant::now();
        let mut tx = Transaction::map(gw(), spec(Protocol::Udp), Version::NatPmp, false, t0, jitter());
        assert!(tx.poll_transmit(t0).is_some());
        assert_eq!(tx.poll_timeout(), Some(t0 + Duration::from_millis(250)));
        assert!(tx.poll_transmit(t0 + Duration::from_millis(200)).is_none());
        assert!(tx.poll_transmit(t0 + Duration::from_millis(250)).is_some());
        assert_eq!(tx.attempts(), 2);
        let mut tx = Transaction::map(gw(), spec(Protocol::Udp), Version::Pcp, true, t0, jitter())
            .with_jitter(Jitter::Fixed(0.0), t0);
        assert!(tx.poll_transmit(t0).is_some());
        assert_eq!(tx.poll_timeout(), Some(t0 + Duration::from_secs(3)));
        assert!(matches!(
            tx.timed_out(),
            PcpError::TimedOut {
                version: Version::Pcp,
                ..
            }
        ));
    }

    #[test]
    fn random_datagrams_never_panic() {
        let now = Instant::now();
        let mut seed = 0x9E37_79B9u32;
        for version in [Version::Pcp, Version::NatPmp] {
            for _ in 0..3000 {
                let mut tx = Transaction::map(gw(), spec(Protocol::Udp), version, true, now, jitter());
                let req = tx.poll_transmit(now).unwrap().payload;
                let len = (seed % 70) as usize;
                let mut data: Vec<u8> = crate::noise::bytes(&mut seed, len);
                // Often shaped like a reply, to get past the first checks.
                if seed.is_multiple_of(2) && len >= 2 {
                    data[0] = req[0];
                    data[1] = req[1] | 0x80;
                }
                let _ = tx.handle_datagram(now, gw(), &data);
                let _ = tx.poll_result(now);
            }
        }
    }
}
