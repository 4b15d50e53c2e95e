//! The technique against fake gateways on 127.0.0.1 that these tests start (never the real
//! default gateway: every test gives its gateway explicitly and binds to loopback): PCP and
//! the fallback to NAT-PMP, renewal at half the lifetime, gateway restarts, deletion with the
//! same nonce, refusals, hostile replies, silence and a closed port, all within deadlines.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use natt_core::{HolePunchServerAddr, MappedTcpSocket, MappedUdpSocket, MappingContext, Protocol, TechniqueError};
use natt_pcp::lease::LeaseTiming;
use natt_pcp::natpmp_wire as pmp;
use natt_pcp::pcp_wire as pcp;
use natt_pcp::{PcpConfig, PcpError, PcpTechnique, Version};

/// How a fake gateway behaves.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Mode {
    /// PCP version 2 (and NAT-PMP, like miniupnpd).
    Pcp,
    /// NAT-PMP only: PCP requests get NAT-PMP's "unsupported version".
    NatPmpOnly,
    /// A PCP server of version 1 (and NAT-PMP): version 2 requests get UNSUPP_VERSION in
    /// version 1, with the request it could not parse copied after the header (RFC 6887
    /// section 9), so the answer echoes the nonce.
    PcpV1,
    /// PCP, but before each answer comes what an attacker forging the gateway's address would
    /// send to downgrade it: NAT-PMP's "unsupported version" and a bare UNSUPP_VERSION header.
    Downgrader,
    /// Answers every mapping with this PCP result / NAT-PMP result.
    Refuse { pcp: u8, nat_pmp: u16 },
    /// Never answers.
    Silent,
    /// Before each real answer, sends hostile ones: garbage, wrong nonce, wrong opcode, a
    /// request echo, a truncated reply.
    Hostile,
}

/// A mapping the fake holds: (protocol, internal port) -> (nonce, external port).
type Table = HashMap<(u8, u16), (Option<pcp::Nonce>, u16)>;

#[derive(Debug)]
struct State {
    table: Table,
    /// Requests received, as (version, lifetime, internal port).
    log: Vec<(u8, u32, u16)>,
    /// Granted lifetimes are capped at this.
    max_lifetime: u32,
    /// Epoch origin.
    origin: Option<Instant>,
    external_ip: Ipv4Addr,
    /// Deletions refused because of a wrong nonce.
    unauthorized: u32,
    /// Set: the gateway stops answering (whatever its mode).
    gone_silent: bool,
}

struct Fake {
    addr: SocketAddr,
    state: Arc<Mutex<State>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Fake {
    fn start(mode: Mode, max_lifetime: u32) -> Fake {
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        socket.set_read_timeout(Some(Duration::from_millis(20))).unwrap();
        let addr = socket.local_addr().unwrap();
        let state = Arc::new(Mutex::new(State {
            max_lifetime,
            origin: Some(Instant::now() - Duration::from_secs(1000)),
            external_ip: Ipv4Addr::new(203, 0, 113, 7),
            table: Table::new(),
            log: Vec::new(),
            unauthorized: 0,
            gone_silent: false,
        }));
        let stop = Arc::new(AtomicBool::new(false));
        let (s, st) = (Arc::clone(&state), Arc::clone(&stop));
        let thread = thread::spawn(move || serve(&socket, mode, &s, &st));
        Fake {
            addr,
            state,
            stop,
            thread: Some(thread),
        }
    }

    fn technique(&self, kind: &str, lifetime: u32) -> PcpTechnique {
        let t = PcpTechnique::with_config(PcpConfig {
            lifetime: Duration::from_secs(u64::from(lifetime)),
            timing: LeaseTiming {
                release_timeout: Duration::from_millis(500),
                min_renewal_interval: Duration::from_millis(200),
            },
        });
        assert!(natt_core::MappingTechnique::add_server(
            &t,
            &HolePunchServerAddr::Other {
                kind: kind.into(),
                addr: self.addr
            }
        ));
        t
    }

    fn state<R>(&self, f: impl FnOnce(&mut State) -> R) -> R {
        f(&mut self.state.lock().unwrap())
    }

    /// Loses every mapping and starts its epoch again, as a rebooted gateway does.
    fn restart(&self, new_external: Ipv4Addr) {
        self.state(|s| {
            s.table.clear();
            s.origin = Some(Instant::now());
            s.external_ip = new_external;
        });
    }

    fn requests(&self) -> Vec<(u8, u32, u16)> {
        self.state(|s| s.log.clone())
    }
}

impl Drop for Fake {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn serve(socket: &UdpSocket, mode: Mode, state: &Mutex<State>, stop: &AtomicBool) {
    let mut buf = [0u8; 1500];
    while !stop.load(Ordering::SeqCst) {
        let Ok((n, from)) = socket.recv_from(&mut buf) else {
            continue;
        };
        let data = &buf[..n];
        let replies = {
            let mut s = state.lock().unwrap();
            if s.gone_silent {
                continue;
            }
            answer(mode, data, &mut s)
        };
        for r in replies {
            socket.send_to(&r, from).unwrap();
        }
    }
}

fn answer(mode: Mode, data: &[u8], s: &mut State) -> Vec<Vec<u8>> {
    let epoch = s.origin.unwrap().elapsed().as_secs() as u32;
    if mode == Mode::Silent {
        if let Ok(r) = pcp::decode_request(data) {
            s.log.push((r.version, r.lifetime, 0));
        } else {
            s.log.push((data.first().copied().unwrap_or(9), 0, 0));
        }
        return Vec::new();
    }
    if data.first() == Some(&0) {
        return answer_nat_pmp(mode, data, s, epoch);
    }
    let Ok(req) = pcp::decode_request(data) else {
        return Vec::new();
    };
    let internal_port = req.map.map_or(0, |m| m.internal_port);
    s.log.push((req.version, req.lifetime, internal_port));
    // RFC 6887 section 9: a NAT-PMP gateway answers in its own version.
    let nat_pmp_unsupported = pmp::encode_response(&pmp::Response {
        opcode: req.opcode,
        result: pmp::ResultCode::UNSUPPORTED_VERSION,
        epoch,
        body: pmp::Body::None,
    });
    if mode == Mode::NatPmpOnly {
        return vec![nat_pmp_unsupported];
    }
    let mut unsupp_version = pcp::encode_response(&pcp::Response {
        version: 1,
        opcode: req.opcode,
        result: pcp::ResultCode::UNSUPP_VERSION,
        lifetime: 0,
        epoch,
        map: None,
    });
    if mode == Mode::PcpV1 {
        unsupp_version.extend_from_slice(data.get(pcp::HEADER_LEN..).unwrap_or_default());
        return vec![unsupp_version];
    }
    let mut response = pcp::Response {
        version: 2,
        opcode: req.opcode,
        result: pcp::ResultCode::SUCCESS,
        lifetime: req.lifetime.min(s.max_lifetime),
        epoch,
        map: req.map,
    };
    let Some(map) = req.map else {
        return vec![pcp::encode_response(&response)];
    };
    let key = (map.protocol, map.internal_port);
    if let Mode::Refuse { pcp, .. } = mode {
        response.result = pcp::ResultCode(pcp);
        response.lifetime = 30;
    } else if req.lifetime == 0 {
        match s.table.get(&key) {
            // miniupnpd: only the nonce that made a mapping may delete it.
            Some((Some(nonce), _)) if *nonce != map.nonce => {
                s.unauthorized += 1;
                response.result = pcp::ResultCode::NOT_AUTHORIZED;
            }
            Some(_) => {
                s.table.remove(&key);
            }
            None => response.result = pcp::ResultCode::NO_RESOURCES,
        }
    } else {
        let port = if map.external.port() == 0 {
            map.internal_port
        } else {
            map.external.port()
        };
        s.table.insert(key, (Some(map.nonce), port));
        response.map = Some(pcp::MapData {
            external: SocketAddr::new(IpAddr::V4(s.external_ip), port),
            ..map
        });
    }
    let good = pcp::encode_response(&response);
    let mut replies = Vec::new();
    if mode == Mode::Hostile {
        let mut wrong_nonce = good.clone();
        wrong_nonce[24] ^= 0xff;
        let mut wrong_opcode = good.clone();
        wrong_opcode[1] = 0x82;
        let mut zero_external = good.clone();
        zero_external[24] ^= 0xff; // (also a wrong nonce, else it would end the exchange)
        zero_external[44..60].fill(0);
        replies.extend([
            b"garbage".to_vec(),
            wrong_nonce,
            wrong_opcode,
            data.to_vec(),
            good[..40].to_vec(),
            vec![2; 1104],
            zero_external,
        ]);
    }
    if mode == Mode::Downgrader {
        replies.extend([nat_pmp_unsupported, unsupp_version]);
    }
    replies.push(good);
    replies
}

fn answer_nat_pmp(mode: Mode, data: &[u8], s: &mut State, epoch: u32) -> Vec<Vec<u8>> {
    let Ok(req) = pmp::decode_request(data) else {
        return Vec::new();
    };
    let (opcode, body, result) = match req {
        pmp::Request::ExternalAddress => {
            s.log.push((0, 0, 0));
            (0, pmp::Body::ExternalAddress(s.external_ip), pmp::ResultCode::SUCCESS)
        }
        pmp::Request::Map(m) => {
            s.log.push((0, m.lifetime, m.internal_port));
            let proto = if m.opcode == pmp::OP_MAP_UDP { 17 } else { 6 };
            let key = (proto, m.internal_port);
            let (port, lifetime, result) = if let Mode::Refuse { nat_pmp, .. } = mode {
                (m.suggested_external_port, 0, pmp::ResultCode(nat_pmp))
            } else if m.lifetime == 0 {
                s.table.remove(&key);
                (0, 0, pmp::ResultCode::SUCCESS)
            } else {
                let port = if m.suggested_external_port == 0 {
                    m.internal_port
                } else {
                    m.suggested_external_port
                };
                s.table.insert(key, (None, port));
                (port, m.lifetime.min(s.max_lifetime), pmp::ResultCode::SUCCESS)
            };
            (
                m.opcode,
                pmp::Body::Map {
                    internal_port: m.internal_port,
                    external_port: port,
                    lifetime,
                },
                result,
            )
        }
    };
    vec![pmp::encode_response(&pmp::Response {
        opcode,
        result,
        epoch,
        body,
    })]
}

fn loopback() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

fn deadline(ms: u64) -> Instant {
    Instant::now() + Duration::from_millis(ms)
}

/// Waits until `cond` holds, at most `timeout`.
fn eventually(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + timeout;
    while Instant::now() < end {
        if cond() {
            return true;
        }
        thread::sleep(Duration::from_millis(20));
    }
    cond()
}

#[test]
fn pcp_maps_udp_and_tcp_sockets_and_deletes_on_release() {
    let fake = Fake::start(Mode::Pcp, 3600);
    let mc = MappingContext::empty().with_timeout(Duration::from_secs(2));
    mc.add_technique(Arc::new(fake.technique("pcp", 7200)));

    let mut udp = MappedUdpSocket::bind(loopback(), &mc).unwrap();
    let port = udp.socket.local_addr().unwrap().port();
    let ep = udp
        .endpoints
        .iter()
        .find(|e| e.technique == "pcp")
        .expect("a pcp endpoint");
    assert_eq!(ep.addr, SocketAddr::from(([203, 0, 113, 7], port)));
    assert!(!ep.nat_restricted);
    assert!(!udp.port_mappings.is_empty());
    let described = udp.port_mappings.describe().join(" ");
    assert!(described.starts_with("pcp udp 203.0.113.7:"), "{described}");
    assert!(fake.state(|s| s.table.contains_key(&(17, port))));

    let tcp = MappedTcpSocket::bind(loopback(), &mc).unwrap();
    let tcp_port = tcp.socket.local_addr().unwrap().as_socket().unwrap().port();
    assert!(
        tcp.endpoints
            .iter()
            .any(|e| e.technique == "pcp" && e.addr.port() == tcp_port)
    );
    assert!(fake.state(|s| s.table.contains_key(&(6, tcp_port))));

    let t0 = Instant::now();
    udp.port_mappings.release();
    drop(tcp);
    assert!(
        t0.elapsed() < Duration::from_millis(600),
        "release took {:?}",
        t0.elapsed()
    );
    assert!(fake.state(|s| s.table.is_empty()), "deleted with the right nonce");
    assert_eq!(fake.state(|s| s.unauthorized), 0);
    // Creation and deletion: one request each, nothing retransmitted.
    let lifetimes: Vec<u32> = fake.requests().iter().map(|r| r.1).collect();
    assert_eq!(lifetimes, [7200, 7200, 0, 0]);
}

/// Issue #18, finding 7: a gateway that answers PCP in NAT-PMP's version 0 cannot prove the
/// answer is its own (it carries no nonce): NAT-PMP is used after a wait for a PCP answer,
/// and the next mapping asks in PCP again.
#[test]
fn falls_back_to_nat_pmp_after_an_unverified_answer_without_remembering() {
    let fake = Fake::start(Mode::NatPmpOnly, 3600);
    let t = fake.technique("pcp", 7200);
    for protocol in [Protocol::Udp, Protocol::Tcp] {
        let local = UdpSocket::bind(loopback()).unwrap();
        let t0 = Instant::now();
        let (ep, lease) = t.map(protocol, local.local_addr().unwrap(), deadline(2000)).unwrap();
        assert_eq!(ep.technique, "nat-pmp");
        assert!(t0.elapsed() >= natt_pcp::transaction::UNVERIFIED_FALLBACK_WAIT);
        drop(lease);
    }
    // Each mapping: PCP, then NAT-PMP's external address and mapping requests (and the
    // deletion).
    let versions: Vec<u8> = fake.requests().iter().map(|r| r.0).collect();
    assert_eq!(versions.iter().filter(|v| **v == 2).count(), 2, "{versions:?}");
}

/// Issue #18, finding 7: forged "not PCP" answers ahead of the gateway's own do not downgrade
/// it: PCP maps, and keeps being used.
#[test]
fn forged_unsupported_answers_do_not_downgrade_a_pcp_gateway() {
    let fake = Fake::start(Mode::Downgrader, 3600);
    let t = fake.technique("pcp", 7200);
    for _ in 0..2 {
        let local = UdpSocket::bind(loopback()).unwrap();
        let (ep, lease) = t
            .map(Protocol::Udp, local.local_addr().unwrap(), deadline(2000))
            .unwrap();
        assert_eq!(ep.technique, "pcp");
        assert_eq!(lease.status().version, Version::Pcp);
        drop(lease);
    }
    assert!(fake.requests().iter().all(|r| r.0 == 2), "{:?}", fake.requests());
}

/// Issue #18, finding 7: a grant whose external address peers cannot reach is refused.
#[test]
fn grants_of_unusable_external_addresses_are_refused() {
    for ip in [
        Ipv4Addr::LOCALHOST,
        Ipv4Addr::new(224, 0, 0, 1),
        Ipv4Addr::new(169, 254, 1, 1),
    ] {
        for mode in [Mode::Pcp, Mode::NatPmpOnly] {
            let fake = Fake::start(mode, 3600);
            fake.state(|s| s.external_ip = ip);
            let kind = if mode == Mode::Pcp { "pcp" } else { "nat-pmp" };
            let t = fake.technique(kind, 7200);
            let local = UdpSocket::bind(loopback()).unwrap();
            let e = t
                .map(Protocol::Udp, local.local_addr().unwrap(), deadline(2000))
                .unwrap_err();
            assert!(matches!(e, PcpError::Malformed { .. }), "{ip} {kind}: {e}");
            assert!(e.to_string().contains(&ip.to_string()), "{e}");
        }
    }
}

/// A PCP server of another version that echoes our nonce in its UNSUPP_VERSION has proved it
/// does not speak PCP 2: NAT-PMP at once, remembered for the gateway.
#[test]
fn falls_back_to_nat_pmp_and_remembers() {
    let fake = Fake::start(Mode::PcpV1, 3600);
    let t = fake.technique("pcp", 7200);
    let local = UdpSocket::bind(loopback()).unwrap();
    let addr = local.local_addr().unwrap();
    let t0 = Instant::now();
    let (ep, lease) = t.map(Protocol::Udp, addr, deadline(2000)).unwrap();
    assert!(
        t0.elapsed() < natt_pcp::transaction::UNVERIFIED_FALLBACK_WAIT,
        "{:?}",
        t0.elapsed()
    );
    assert_eq!(ep.technique, "nat-pmp");
    assert_eq!(ep.addr, SocketAddr::from(([203, 0, 113, 7], addr.port())));
    assert_eq!(lease.status().version, Version::NatPmp);
    // PCP once, then NAT-PMP's external address and mapping requests.
    let versions: Vec<u8> = fake.requests().iter().map(|r| r.0).collect();
    assert_eq!(versions, [2, 0, 0]);
    // The next mapping goes straight to NAT-PMP.
    let other = UdpSocket::bind(loopback()).unwrap();
    let (ep2, lease2) = t
        .map(Protocol::Tcp, other.local_addr().unwrap(), deadline(2000))
        .unwrap();
    assert_eq!(ep2.technique, "nat-pmp");
    assert_eq!(fake.requests().iter().filter(|r| r.0 == 2).count(), 1);
    drop((lease, lease2));
    assert!(fake.state(|s| s.table.is_empty()));
}

#[test]
fn nat_pmp_only_gateway_kind() {
    let fake = Fake::start(Mode::Pcp, 3600);
    let t = fake.technique("nat-pmp", 7200);
    let local = UdpSocket::bind(loopback()).unwrap();
    let (ep, lease) = t
        .map(Protocol::Udp, local.local_addr().unwrap(), deadline(2000))
        .unwrap();
    assert_eq!(ep.technique, "nat-pmp");
    assert!(
        fake.requests().iter().all(|r| r.0 == 0),
        "no PCP: {:?}",
        fake.requests()
    );
    drop(lease);
}

#[test]
fn renews_at_half_the_lifetime_while_held() {
    for (mode, kind) in [(Mode::Pcp, "pcp"), (Mode::Pcp, "nat-pmp")] {
        let fake = Fake::start(mode, 1);
        let t = fake.technique(kind, 7200);
        let local = UdpSocket::bind(loopback()).unwrap();
        let port = local.local_addr().unwrap().port();
        let (_, lease) = t
            .map(Protocol::Udp, local.local_addr().unwrap(), deadline(2000))
            .unwrap();
        assert_eq!(lease.status().lifetime, Duration::from_secs(1));
        // Granted 1 s: renewed about every 500 ms.
        assert!(
            eventually(Duration::from_secs(3), || lease.status().renewals >= 3),
            "{kind}: {:?}",
            lease.status()
        );
        let renewals = fake.requests().iter().filter(|r| r.1 == 7200 && r.2 == port).count();
        assert!(renewals >= 4, "{kind}: {:?}", fake.requests());
        assert_eq!(lease.status().failures, 0);
        assert_eq!(lease.status().restarts, 0);
        drop(lease);
        assert!(fake.state(|s| s.table.is_empty()), "{kind}");
    }
}

#[test]
fn gateway_restart_is_noticed_and_the_mapping_made_again() {
    for kind in ["pcp", "nat-pmp"] {
        let fake = Fake::start(Mode::Pcp, 1);
        let t = fake.technique(kind, 7200);
        let local = UdpSocket::bind(loopback()).unwrap();
        let port = local.local_addr().unwrap().port();
        let (ep, lease) = t
            .map(Protocol::Udp, local.local_addr().unwrap(), deadline(2000))
            .unwrap();
        assert_eq!(ep.addr.ip(), IpAddr::from([203, 0, 113, 7]));
        assert!(eventually(Duration::from_secs(2), || lease.status().renewals >= 1));
        fake.restart(Ipv4Addr::new(203, 0, 113, 8));
        assert!(
            eventually(Duration::from_secs(3), || lease.status().restarts == 1),
            "{kind}: {:?}",
            lease.status()
        );
        assert!(fake.state(|s| s.table.contains_key(&(17, port))), "{kind}: made again");
        // The external address changed with the restart: the lease follows it.
        assert!(
            eventually(Duration::from_secs(2), || lease.status().external.ip()
                == IpAddr::from([203, 0, 113, 8])),
            "{kind}: {:?}",
            lease.status()
        );
        drop(lease);
        assert!(fake.state(|s| s.table.is_empty()), "{kind}");
    }
}

#[test]
fn refusals_are_clear_failures() {
    let fake = Fake::start(Mode::Refuse { pcp: 8, nat_pmp: 3 }, 3600);
    let local = UdpSocket::bind(loopback()).unwrap();
    for (kind, expect) in [("pcp", "NO_RESOURCES (8)"), ("nat-pmp", "NETWORK_FAILURE (3)")] {
        let t = fake.technique(kind, 7200);
        let e = t
            .map(Protocol::Udp, local.local_addr().unwrap(), deadline(2000))
            .unwrap_err();
        assert!(e.to_string().contains(expect), "{kind}: {e}");
        assert!(e.gateway_answered());
        let te = TechniqueError::from(e);
        assert!(matches!(te, TechniqueError::Refused(_)), "{te}");
    }
    // Through a context: the mapping succeeds with local endpoints only, and the outcome
    // says why PCP gave none.
    let mc = MappingContext::empty();
    mc.add_technique(Arc::new(fake.technique("pcp", 7200)));
    let mapped = MappedUdpSocket::bind(loopback(), &mc).unwrap();
    assert!(mapped.endpoints.iter().all(|e| e.technique == "local"));
    assert!(mapped.port_mappings.is_empty());
    let outcome = &mapped.port_mappings.outcomes()[0];
    assert_eq!(outcome.technique, "pcp");
    let err = outcome.result.as_ref().unwrap_err().to_string();
    assert!(
        err.starts_with("refused: PCP gateway") && err.ends_with("answered NO_RESOURCES (8)"),
        "{err}"
    );
}

#[test]
fn hostile_replies_are_ignored() {
    let fake = Fake::start(Mode::Hostile, 3600);
    let t = fake.technique("pcp", 7200);
    let local = UdpSocket::bind(loopback()).unwrap();
    let (ep, lease) = t
        .map(Protocol::Udp, local.local_addr().unwrap(), deadline(2000))
        .unwrap();
    assert_eq!(ep.addr.ip(), IpAddr::from([203, 0, 113, 7]));
    drop(lease);
    assert!(fake.state(|s| s.table.is_empty()));
}

#[test]
fn a_silent_gateway_costs_no_more_than_the_deadline() {
    let fake = Fake::start(Mode::Silent, 3600);
    let local = UdpSocket::bind(loopback()).unwrap();
    for (kind, sent) in [("pcp", 1), ("nat-pmp", 3)] {
        let t = fake.technique(kind, 7200);
        let before = fake.requests().len();
        let t0 = Instant::now();
        let e = t
            .map(
                Protocol::Udp,
                local.local_addr().unwrap(),
                t0 + Duration::from_millis(1000),
            )
            .unwrap_err();
        let took = t0.elapsed();
        assert!(matches!(e, PcpError::TimedOut { .. }), "{kind}: {e}");
        assert!(
            took >= Duration::from_millis(990) && took < Duration::from_millis(1300),
            "{kind}: {took:?}"
        );
        // PCP: one request (the next is due after 3 s); NAT-PMP: at 0, 250 and 750 ms.
        thread::sleep(Duration::from_millis(50));
        assert_eq!(fake.requests().len() - before, sent, "{kind}");
    }
    // Through a context, the whole mapping is bounded by its timeout.
    let mc = MappingContext::empty().with_timeout(Duration::from_millis(600));
    mc.add_technique(Arc::new(fake.technique("pcp", 7200)));
    let t0 = Instant::now();
    let mapped = MappedUdpSocket::bind(loopback(), &mc).unwrap();
    assert!(t0.elapsed() < Duration::from_millis(900), "{:?}", t0.elapsed());
    let err = mapped.port_mappings.outcomes()[0].result.as_ref().unwrap_err();
    assert!(matches!(err, TechniqueError::TimedOut(_)), "{err}");
}

#[test]
fn a_closed_port_is_not_applicable_at_once() {
    let closed = UdpSocket::bind(loopback()).unwrap().local_addr().unwrap();
    let t = PcpTechnique::new();
    t.set_gateway(closed, None);
    let local = UdpSocket::bind(loopback()).unwrap();
    let t0 = Instant::now();
    let e = t
        .map(Protocol::Udp, local.local_addr().unwrap(), t0 + Duration::from_secs(3))
        .unwrap_err();
    assert!(matches!(e, PcpError::Unreachable { .. }), "{e}");
    assert!(t0.elapsed() < Duration::from_millis(500), "{:?}", t0.elapsed());
    assert!(TechniqueError::from(e).is_not_applicable());
}

#[test]
fn drop_stops_the_lease_promptly_even_when_the_gateway_went_silent() {
    let fake = Fake::start(Mode::Pcp, 3600);
    let t = fake.technique("pcp", 7200);
    let local = UdpSocket::bind(loopback()).unwrap();
    let (_, lease) = t
        .map(Protocol::Udp, local.local_addr().unwrap(), deadline(2000))
        .unwrap();
    // Renewal due in 30 minutes: the thread waits on a channel, and wakes at once on drop.
    let t0 = Instant::now();
    drop(lease);
    assert!(t0.elapsed() < Duration::from_millis(300), "{:?}", t0.elapsed());
    assert!(fake.state(|s| s.table.is_empty()));

    let (_, lease) = t
        .map(Protocol::Udp, local.local_addr().unwrap(), deadline(2000))
        .unwrap();
    drop(fake); // the gateway goes away: the deletion gets no answer
    let t0 = Instant::now();
    drop(lease);
    // Bounded by the release timeout (500 ms here).
    assert!(t0.elapsed() < Duration::from_millis(1000), "{:?}", t0.elapsed());
}

#[test]
fn probe_tells_which_protocol_answers() {
    let pcp = Fake::start(Mode::Pcp, 3600);
    let a = natt_pcp::ask_gateway(pcp.addr, None, deadline(2000)).unwrap();
    assert_eq!(a.version, Version::Pcp);
    assert_eq!(a.external_ip, None);
    assert!(a.epoch >= 1000);
    let pmp = Fake::start(Mode::NatPmpOnly, 3600);
    let a = natt_pcp::ask_gateway(pmp.addr, None, deadline(2000)).unwrap();
    assert_eq!(a.version, Version::NatPmp);
    let v1 = Fake::start(Mode::PcpV1, 3600);
    let a = natt_pcp::ask_gateway(v1.addr, None, deadline(2000)).unwrap();
    assert_eq!(a.version, Version::NatPmp);
    assert_eq!(a.external_ip, Some(IpAddr::from([203, 0, 113, 7])));
    let silent = Fake::start(Mode::Silent, 3600);
    let t0 = Instant::now();
    assert!(natt_pcp::ask_gateway(silent.addr, None, t0 + Duration::from_millis(300)).is_err());
    assert!(t0.elapsed() < Duration::from_millis(450));
}

/// Releasing several mappings on a gateway that stopped answering, as
/// `PortMappings::release` does (start every deletion, then wait for each), takes one release
/// timeout, not one per mapping; dropping a lease whose release was waited for does not wait
/// again.
#[test]
fn releasing_on_a_silent_gateway_waits_once_for_all() {
    use natt_core::mapping::Lease;
    let fake = Fake::start(Mode::Pcp, 3600);
    let t = fake.technique("pcp", 7200);
    let sockets: Vec<UdpSocket> = (0..3).map(|_| UdpSocket::bind(loopback()).unwrap()).collect();
    let mut leases: Vec<_> = sockets
        .iter()
        .map(|s| t.map(Protocol::Udp, s.local_addr().unwrap(), deadline(2000)).unwrap().1)
        .collect();
    fake.state(|s| s.gone_silent = true);
    let t0 = Instant::now();
    leases.iter_mut().for_each(Lease::start_release);
    leases.iter_mut().for_each(Lease::wait_released);
    drop(leases);
    let took = t0.elapsed();
    // Each deletion gives up after its release timeout (500 ms here) plus a little; three in a
    // row would take three times that.
    assert!(took >= Duration::from_millis(400), "{took:?}");
    assert!(took < Duration::from_millis(1500), "{took:?}");
}
