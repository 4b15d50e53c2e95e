//! `natt probe`: a report on the network in front of this host: the external addresses each
//! technique finds (with timings), and the NAT's mapping and filtering behaviour (RFC 5780).

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::thread;
use std::time::{Duration, Instant};

use natt::pcp::{GatewayAnswer, PcpError, Version};
use natt::stun::behaviour::{Behaviour, NatBehaviour, discover_tcp_mapping, discover_udp_with};
use natt::stun::transaction::DEFAULT_RTO;
use natt::{HolePunchServerAddr, MappedUdpSocket, MappingTechnique, StunTechnique, TechniqueError, TechniqueOutcome};

use crate::args::ProbeArgs;
use crate::context;
use crate::output::{self, Ipv6Report, PcpReport, ProbeReport, RelayReport};

/// What behaviour discovery found over UDP, and over TCP.
type Discovered = (
    Result<NatBehaviour, TechniqueError>,
    Result<(Behaviour, Vec<SocketAddr>), TechniqueError>,
);

/// NAT behaviour discovery against the STUN servers, their names resolved by `deadline`:
/// over UDP against them all and over TCP against the first (RFC 5780 tests I-III), at once,
/// the UDP filtering tests waiting `window`. `None` without STUN servers. The filtering
/// verdict's time is counted from `start`.
fn discover(
    stun: &[HolePunchServerAddr],
    any: SocketAddr,
    window: natt::FilterWindow,
    start: Instant,
    deadline: Instant,
) -> Option<Discovered> {
    if stun.is_empty() {
        return None;
    }
    let technique = StunTechnique::new();
    for s in stun {
        technique.add_server(s);
    }
    let servers = match technique.resolve_servers(any, deadline) {
        Ok(servers) => servers,
        Err(e) => {
            let tcp = TechniqueError::Other(e.to_string().into());
            return Some((Err(e), Err(tcp)));
        }
    };
    thread::scope(|scope| {
        let tcp = scope.spawn(|| match servers.first() {
            Some(&s) => discover_tcp_mapping(s, any.ip(), deadline),
            None => Err(TechniqueError::NotApplicable("no STUN server".into())),
        });
        let began = start.elapsed();
        let udp = discover_udp_with(&servers, any.ip(), DEFAULT_RTO, window, deadline).map(|mut b| {
            b.filtering_elapsed += began;
            b
        });
        let tcp = tcp
            .join()
            .unwrap_or_else(|_| Err(TechniqueError::Other("TCP behaviour discovery panicked".into())));
        Some((udp, tcp))
    })
}

/// IPv6 behaviour discovery against the IPv6 STUN servers, from a socket on `[::]`, the UDP
/// filtering tests waiting `window`. `None`
/// without IPv6 STUN servers.
fn discover_ipv6(stun: &[HolePunchServerAddr], window: natt::FilterWindow, deadline: Instant) -> Option<Ipv6Report> {
    if stun.is_empty() {
        return None;
    }
    let technique = StunTechnique::new();
    for s in stun {
        technique.add_server(s);
    }
    let any6 = SocketAddr::from((Ipv6Addr::UNSPECIFIED, 0));
    let servers: Vec<SocketAddr> = technique
        .resolve_servers(any6, deadline)
        .ok()?
        .into_iter()
        .filter(SocketAddr::is_ipv6)
        .collect();
    if servers.is_empty() {
        return None;
    }
    let unreachable = |why: String| Ipv6Report {
        reachable: false,
        addresses: Vec::new(),
        mapping: Behaviour::Unknown.to_string(),
        filtering: Behaviour::Unknown.to_string(),
        evidence: vec![why],
    };
    if !natt::core::family::host_has_global_ipv6() {
        return Some(unreachable("this host has no global IPv6 address".into()));
    }
    Some(
        match discover_udp_with(&servers, any6.ip(), DEFAULT_RTO, window, deadline) {
            Ok(b) => Ipv6Report {
                reachable: !b.mapped.is_empty(),
                addresses: b.mapped.iter().map(ToString::to_string).collect(),
                mapping: b.mapping.to_string(),
                filtering: b.filtering.to_string(),
                evidence: b.evidence,
            },
            Err(e) => unreachable(format!("IPv6 behaviour discovery failed: {e}")),
        },
    )
}

/// Probes and prints the report.
pub fn run(args: &ProbeArgs) -> Result<(), String> {
    let timeout = context::seconds(args.timeout)?;
    let mc = context::build_with_turn(&args.techniques, Some(&args.turn), timeout)?;
    let upnp = mc.upnp();
    let start = Instant::now();
    let deadline = start + timeout;
    let any = SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0));
    let pcp_gateway = pcp_gateway(args);
    let (mapped, discovered, pcp, ipv6) = thread::scope(|scope| {
        let window = context::filter_window(&args.techniques);
        let discovered = scope.spawn(move || discover(&args.techniques.stun, any, window, start, deadline));
        let ipv6 = scope.spawn(move || discover_ipv6(&args.techniques.stun, window, deadline));
        // Which protocol the PCP / NAT-PMP gateway answers, even when it maps nothing.
        let pcp = scope.spawn(|| pcp_gateway.map(|(g, only)| (g, natt::pcp::ask_gateway(g, only, deadline))));
        let mapped = MappedUdpSocket::bind(any, &mc);
        (
            mapped,
            discovered.join(),
            pcp.join().ok().flatten(),
            ipv6.join().ok().flatten(),
        )
    });
    let (behaviour, tcp) = match discovered {
        Ok(Some((udp, tcp))) => (Ok(Some(udp)), Ok(Some(tcp))),
        Ok(None) => (Ok(None), Ok(None)),
        Err(_) => (Err(()), Err(())),
    };
    let mut mapped = mapped.map_err(|e| e.to_string())?;
    // A report on every technique: those that went on in the background after mapping returned
    // (a gateway slower than its grace) are waited for until the probe's deadline (and the
    // moment they take to say they missed it).
    mapped
        .port_mappings
        .wait_background_until(deadline + Duration::from_millis(50));
    mapped.refresh();
    let mut behaviour: NatBehaviour = match behaviour {
        Ok(Some(Ok(b))) => b,
        Ok(Some(Err(e))) => unknown(format!("behaviour discovery failed: {e}")),
        Ok(None) => unknown("no STUN server given: behaviour not tested".into()),
        Err(_) => unknown("behaviour discovery panicked".into()),
    };
    let tcp_mapping = match tcp {
        Ok(Some(Ok((b, seen)))) => {
            let seen: Vec<String> = seen.iter().map(ToString::to_string).collect();
            behaviour.evidence.push(format!("tcp: servers saw {}", seen.join(" ")));
            b
        }
        Ok(Some(Err(e))) => {
            behaviour
                .evidence
                .push(format!("tcp: mapping behaviour discovery failed: {e}"));
            Behaviour::Unknown
        }
        Ok(None) | Err(_) => Behaviour::Unknown,
    };
    // What the techniques found, even where it is a local address too (no NAT in between):
    // the merged endpoint list names such an address after the local technique.
    let mut external: Vec<String> = Vec::new();
    for o in mapped.port_mappings.outcomes() {
        for e in o.result.iter().flatten() {
            let addr = e.addr.to_string();
            if !external.contains(&addr) {
                external.push(addr);
            }
        }
    }
    let report = ProbeReport {
        external,
        mapping: behaviour.mapping.to_string(),
        filtering: behaviour.filtering.to_string(),
        filtering_ms: (behaviour.filtering_elapsed > Duration::ZERO).then_some(behaviour.filtering_elapsed.as_millis()),
        tcp_mapping: tcp_mapping.to_string(),
        techniques: output::technique_reports(mapped.port_mappings.outcomes()),
        gateway: upnp.and_then(|u| u.gateway_info()).map(|g| g.to_string()),
        pcp: pcp.map(|(g, answer)| pcp_report(g, answer, mapped.port_mappings.outcomes())),
        relay: args
            .turn
            .turn
            .as_ref()
            .map(|uri| relay_report(uri, mapped.port_mappings.outcomes())),
        evidence: behaviour.evidence,
        elapsed_ms: start.elapsed().as_millis(),
        ipv6,
    };
    output::warn_if_no_external(&mapped.port_mappings);
    let printed = if args.json {
        output::print_json(&report)
    } else {
        print_text(&report);
        Ok(())
    };
    // The probe's mappings are not kept: deleted, and waited for before the process exits.
    mapped.port_mappings.release();
    printed
}

/// The PCP / NAT-PMP gateway to ask and the protocol it is restricted to; `None` without PCP.
fn pcp_gateway(args: &ProbeArgs) -> Option<(SocketAddr, Option<Version>)> {
    if args.techniques.no_pcp {
        None
    } else if let Some(g) = args.techniques.nat_pmp {
        Some((g, Some(Version::NatPmp)))
    } else {
        args.techniques
            .pcp
            .or_else(natt::pcp::default_gateway)
            .map(|g| (g, None))
    }
}

/// What the gateway answered, with the PCP technique's outcome (the mapping it made, or why
/// it made none).
fn pcp_report(
    gateway: SocketAddr,
    answer: Result<GatewayAnswer, PcpError>,
    outcomes: &[TechniqueOutcome],
) -> PcpReport {
    let outcome = outcomes.iter().find(|o| o.technique == natt::pcp::NAME);
    let mapped = outcome.and_then(|o| o.result.as_ref().ok()).and_then(|eps| eps.first());
    let (mut protocol, mut external, mut error) = match &answer {
        Ok(a) => (
            Some(a.version.name().to_owned()),
            a.external_ip.map(|ip| ip.to_string()),
            None,
        ),
        Err(e) => (None, None, Some(e.to_string())),
    };
    if let Some(ep) = mapped {
        protocol = Some(ep.technique.clone());
        external = Some(ep.addr.ip().to_string());
        error = None;
    } else if let Some(Err(e)) = outcome.map(|o| &o.result) {
        error = Some(e.to_string());
    }
    PcpReport {
        gateway: gateway.to_string(),
        protocol,
        external,
        error,
    }
}

/// Whether the TURN relay allocated: the `turn` technique's outcome.
fn relay_report(uri: &str, outcomes: &[TechniqueOutcome]) -> RelayReport {
    let outcome = outcomes.iter().find(|o| o.technique == natt::turn::NAME);
    let (relayed, error) = match outcome.map(|o| &o.result) {
        Some(Ok(eps)) => (eps.first().map(|e| e.addr.to_string()), None),
        Some(Err(e)) => (None, Some(e.to_string())),
        None => (None, Some("the turn technique did not run".to_owned())),
    };
    RelayReport {
        server: uri.to_owned(),
        relayed,
        error,
    }
}

fn unknown(why: String) -> NatBehaviour {
    NatBehaviour {
        mapping: Behaviour::Unknown,
        filtering: Behaviour::Unknown,
        mapped: Vec::new(),
        evidence: vec![why],
        filtering_elapsed: Duration::ZERO,
    }
}

fn print_text(r: &ProbeReport) {
    println!(
        "external:    {}",
        if r.external.is_empty() {
            "none found".to_owned()
        } else {
            r.external.join(" ")
        }
    );
    println!("mapping:     {}", r.mapping);
    println!("filtering:   {}", r.filtering);
    println!("tcp mapping: {}", r.tcp_mapping);
    println!("gateway:     {}", r.gateway.as_deref().unwrap_or("none answered"));
    match &r.pcp {
        None => println!("pcp:         not tried"),
        Some(p) => println!(
            "pcp:         {} at {}{}{}",
            p.protocol.as_deref().unwrap_or("none answered"),
            p.gateway,
            p.external
                .as_ref()
                .map(|e| format!(", external {e}"))
                .unwrap_or_default(),
            p.error.as_ref().map(|e| format!("; {e}")).unwrap_or_default()
        ),
    }
    if let Some(relay) = &r.relay {
        match (&relay.relayed, &relay.error) {
            (Some(a), _) => println!("relay:       {a} via {}", relay.server),
            (None, e) => println!(
                "relay:       none from {}: {}",
                relay.server,
                e.as_deref().unwrap_or("?")
            ),
        }
    }
    for t in &r.techniques {
        match &t.error {
            None => println!("  {:<8} {:>5} ms  {}", t.name, t.elapsed_ms, t.endpoints.join(" ")),
            Some(e) => println!("  {:<8} {:>5} ms  failed: {e}", t.name, t.elapsed_ms),
        }
    }
    for e in &r.evidence {
        println!("  evidence: {e}");
    }
    if let Some(v6) = &r.ipv6 {
        println!(
            "ipv6:        {}; mapping {}, filtering {}{}",
            if v6.reachable { "reachable" } else { "unreachable" },
            v6.mapping,
            v6.filtering,
            if v6.addresses.is_empty() {
                String::new()
            } else {
                format!(", seen at {}", v6.addresses.join(" "))
            }
        );
        for e in &v6.evidence {
            println!("  ipv6 evidence: {e}");
        }
    }
    println!("# probed in {} ms", r.elapsed_ms);
}
