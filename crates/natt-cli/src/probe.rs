//! `natt probe`: a report on the network in front of this host: the external addresses each
//! technique finds (with timings), and the NAT's mapping and filtering behaviour (RFC 5780).

use std::net::{Ipv4Addr, SocketAddr};
use std::thread;
use std::time::Instant;

use natt::MappedUdpSocket;
use natt::stun::behaviour::{Behaviour, NatBehaviour, discover_udp};
use natt::stun::transaction::DEFAULT_RTO;

use crate::args::ProbeArgs;
use crate::context::{self, Choice};
use crate::output::{self, ProbeReport, TechniqueReport};

/// Probes and prints the report.
pub fn run(args: &ProbeArgs) -> Result<(), String> {
    let timeout = context::seconds(args.timeout)?;
    let mc = context::build(&Choice {
        simple: &args.simple,
        stun: &args.stun,
        no_upnp: args.no_upnp,
        timeout,
    })?;
    let start = Instant::now();
    let deadline = start + timeout;
    let any = SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0));
    let (mapped, behaviour) = thread::scope(|scope| {
        let behaviour =
            scope.spawn(|| (!args.stun.is_empty()).then(|| discover_udp(&args.stun, any.ip(), DEFAULT_RTO, deadline)));
        let mapped = MappedUdpSocket::bind(any, &mc);
        (mapped, behaviour.join())
    });
    let mapped = mapped.map_err(|e| e.to_string())?;
    let behaviour: NatBehaviour = match behaviour {
        Ok(Some(Ok(b))) => b,
        Ok(Some(Err(e))) => unknown(format!("behaviour discovery failed: {e}")),
        Ok(None) => unknown("no STUN server given: behaviour not tested".into()),
        Err(_) => unknown("behaviour discovery panicked".into()),
    };
    let report = ProbeReport {
        external: mapped
            .endpoints
            .iter()
            .filter(|e| e.technique != natt::core::local::LOCAL)
            .map(|e| e.addr.to_string())
            .collect(),
        mapping: behaviour.mapping.to_string(),
        filtering: behaviour.filtering.to_string(),
        techniques: mapped
            .port_mappings
            .outcomes()
            .iter()
            .filter(|o| !o.result.as_ref().is_err_and(|e| e.is_not_applicable()))
            .map(TechniqueReport::from)
            .collect(),
        gateway: None,
        evidence: behaviour.evidence,
        elapsed_ms: start.elapsed().as_millis(),
    };
    if args.json {
        output::print_json(&report)
    } else {
        print_text(&report);
        Ok(())
    }
}

fn unknown(why: String) -> NatBehaviour {
    NatBehaviour {
        mapping: Behaviour::Unknown,
        filtering: Behaviour::Unknown,
        mapped: Vec::new(),
        evidence: vec![why],
    }
}

fn print_text(r: &ProbeReport) {
    println!(
        "external:  {}",
        if r.external.is_empty() {
            "none found".to_owned()
        } else {
            r.external.join(" ")
        }
    );
    println!("mapping:   {}", r.mapping);
    println!("filtering: {}", r.filtering);
    println!("gateway:   {}", r.gateway.as_deref().unwrap_or("none answered"));
    for t in &r.techniques {
        match &t.error {
            None => println!("  {:<8} {:>5} ms  {}", t.name, t.elapsed_ms, t.endpoints.join(" ")),
            Some(e) => println!("  {:<8} {:>5} ms  failed: {e}", t.name, t.elapsed_ms),
        }
    }
    for e in &r.evidence {
        println!("  evidence: {e}");
    }
    println!("# probed in {} ms", r.elapsed_ms);
}
