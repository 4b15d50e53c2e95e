//! What commands print: JSON documents (a contract for scripts) and their text forms.

use serde::Serialize;

use natt::{MappedSocketAddr, PortMappings, TechniqueOutcome};

/// One endpoint in `natt map --json`.
#[derive(Debug, Serialize)]
pub struct Endpoint {
    /// `IP:PORT`.
    pub addr: String,
    /// Hole punching is needed to use it.
    pub nat_restricted: bool,
    /// The technique that found it.
    pub technique: String,
}

impl From<&MappedSocketAddr> for Endpoint {
    fn from(e: &MappedSocketAddr) -> Self {
        Endpoint {
            addr: e.addr.to_string(),
            nat_restricted: e.nat_restricted,
            technique: e.technique.clone(),
        }
    }
}

/// `natt map --json`: `{"endpoints":[...],"techniques":[...],"elapsed_ms":N}`.
#[derive(Debug, Serialize)]
pub struct MapReport {
    /// Every endpoint, local ones first.
    pub endpoints: Vec<Endpoint>,
    /// Each technique that applied: what it found, or why not (as in `natt probe --json`).
    pub techniques: Vec<TechniqueReport>,
    /// How long mapping took.
    pub elapsed_ms: u128,
}

/// The reports of the techniques in `outcomes` that applied.
pub fn technique_reports(outcomes: &[TechniqueOutcome]) -> Vec<TechniqueReport> {
    outcomes
        .iter()
        .filter(|o| !o.result.as_ref().is_err_and(|e| e.is_not_applicable()))
        .map(Into::into)
        .collect()
}

/// Writes a one-line warning on stderr when mapping found no address beyond this host's own
/// interfaces (peers elsewhere cannot reach it), naming why.
pub fn warn_if_no_external(port_mappings: &PortMappings) {
    if let Some(why) = port_mappings.why_no_external() {
        eprintln!("natt: warning: {why}; only peers on this host's own networks can reach it");
    }
}

/// Prints `value` as one line of JSON.
pub fn print_json(value: &impl Serialize) -> Result<(), String> {
    let line = serde_json::to_string(value).map_err(|e| e.to_string())?;
    println!("{line}");
    Ok(())
}

/// The text form of a mapping: one endpoint a line, then techniques that failed.
pub fn print_text(endpoints: &[MappedSocketAddr], outcomes: &[TechniqueOutcome], elapsed_ms: u128) {
    for e in endpoints {
        let kind = if e.nat_restricted { "restricted" } else { "open" };
        println!("{:<47} {:<8} {kind}", e.addr.to_string(), e.technique);
    }
    for o in outcomes {
        if let Err(err) = &o.result
            && !err.is_not_applicable()
        {
            println!("# {} failed after {} ms: {err}", o.technique, o.elapsed.as_millis());
        }
    }
    println!("# mapped in {elapsed_ms} ms");
}

/// One technique in `natt probe --json`.
#[derive(Debug, Serialize)]
pub struct TechniqueReport {
    /// The technique's name.
    pub name: String,
    /// How long it took.
    pub elapsed_ms: u128,
    /// What it found (`IP:PORT`).
    pub endpoints: Vec<String>,
    /// Why it found nothing, if so.
    pub error: Option<String>,
}

impl From<&TechniqueOutcome> for TechniqueReport {
    fn from(o: &TechniqueOutcome) -> Self {
        TechniqueReport {
            name: o.technique.clone(),
            elapsed_ms: o.elapsed.as_millis(),
            endpoints: o
                .result
                .as_ref()
                .map(|eps| eps.iter().map(|e| e.addr.to_string()).collect())
                .unwrap_or_default(),
            error: o.result.as_ref().err().map(ToString::to_string),
        }
    }
}

/// `natt probe --json`.
#[derive(Debug, Serialize)]
pub struct ProbeReport {
    /// External addresses (`IP:PORT`) found by any technique.
    pub external: Vec<String>,
    /// NAT mapping behaviour.
    pub mapping: String,
    /// NAT filtering behaviour.
    pub filtering: String,
    /// When the filtering verdict was made, in ms since the probe started (null without
    /// behaviour discovery).
    pub filtering_ms: Option<u128>,
    /// NAT mapping behaviour over TCP (RFC 5780 tests against the first STUN server).
    pub tcp_mapping: String,
    /// Each technique that applied.
    pub techniques: Vec<TechniqueReport>,
    /// The UPnP gateway that answered, if any (the PCP / NAT-PMP gateway is in `pcp`).
    pub gateway: Option<String>,
    /// What the PCP / NAT-PMP gateway answered; null when PCP was not tried (`--no-pcp`, no
    /// default route).
    pub pcp: Option<PcpReport>,
    /// Whether the TURN relay given with `--turn` allocates; null without `--turn`.
    pub relay: Option<RelayReport>,
    /// The evidence behind `mapping` and `filtering`, in words.
    pub evidence: Vec<String>,
    /// How long the probe took.
    pub elapsed_ms: u128,
    /// IPv6 beside IPv4: null when no IPv6 STUN server was given.
    pub ipv6: Option<Ipv6Report>,
}

/// `natt probe --json`'s `ipv6`: `{"reachable","addresses","mapping","filtering","evidence"}`:
/// the behaviour tests of RFC 5780 against the IPv6 STUN servers, from a socket on `[::]`.
#[derive(Debug, Serialize)]
pub struct Ipv6Report {
    /// An IPv6 STUN server answered: the host reaches the internet over IPv6.
    pub reachable: bool,
    /// Where the IPv6 servers saw us (`[IP]:PORT`).
    pub addresses: Vec<String>,
    /// Mapping behaviour over IPv6 (endpoint-independent without NAT).
    pub mapping: String,
    /// Filtering behaviour over IPv6 (a home router's stateful firewall filters by address and
    /// port).
    pub filtering: String,
    /// The evidence, in words.
    pub evidence: Vec<String>,
}

/// `natt probe --json`'s `pcp`: `{"gateway","protocol","external","error"}`.
#[derive(Debug, Serialize)]
pub struct PcpReport {
    /// The gateway asked (`IP:PORT`).
    pub gateway: String,
    /// The protocol it answered in: `pcp` or `nat-pmp`; null when it did not answer.
    pub protocol: Option<String>,
    /// Its external address (`IP`), from the mapping made or from NAT-PMP.
    pub external: Option<String>,
    /// Why no mapping was made, if none was.
    pub error: Option<String>,
}

/// `natt probe --json`'s `relay`: `{"server","relayed","error"}`.
#[derive(Debug, Serialize)]
pub struct RelayReport {
    /// The relay asked (its `turn:` URI).
    pub server: String,
    /// The relayed address allocated (`IP:PORT`); null when it failed.
    pub relayed: Option<String>,
    /// Why no address was allocated, if none was.
    pub error: Option<String>,
}
