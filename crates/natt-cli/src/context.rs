//! Building the [`natt::MappingContext`] a command asks for from its flags.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use crate::args::TechniqueArgs;
use natt::{HolePunchServerAddr, MappingContext, MappingTechnique, UpnpConfig, UpnpTechnique};

/// The lifetime PCP / NAT-PMP mappings ask for, in seconds (default 7200): for trying renewal
/// by hand and in the lab.
pub const PCP_LIFETIME_ENV: &str = "NATT_PCP_LIFETIME_SECS";

/// The context the technique flags ask for, mapping within `timeout`, and its UPnP technique
/// (for reports on the gateway); an error names a server no technique of this build can use.
pub fn build(
    choice: &TechniqueArgs,
    timeout: Duration,
) -> Result<(MappingContext, Option<Arc<UpnpTechnique>>), String> {
    let mc = MappingContext::new().map_err(|e| e.to_string())?.with_timeout(timeout);
    if choice.no_upnp {
        mc.remove_technique("upnp");
    }
    if choice.no_pcp {
        mc.remove_technique(natt::pcp::NAME);
    } else {
        configure_pcp(&mc)?;
    }
    let gateway = |kind: &str, addr: SocketAddr| HolePunchServerAddr::Other {
        kind: kind.to_owned(),
        addr,
    };
    let servers = choice
        .simple
        .iter()
        .cloned()
        .chain(choice.stun.iter().cloned())
        .chain(
            choice
                .pcp
                .filter(|_| !choice.no_pcp)
                .map(|a| gateway(natt::pcp::KIND_PCP, a)),
        )
        .chain(
            choice
                .nat_pmp
                .filter(|_| !choice.no_pcp)
                .map(|a| gateway(natt::pcp::KIND_NAT_PMP, a)),
        );
    for server in servers {
        if !mc.add_server(server.clone()) {
            return Err(format!("no technique of this build of natt can use {server:?}"));
        }
    }
    let upnp = configure_upnp(&mc)?;
    Ok((mc, upnp))
}

/// Seconds from environment variable `name`, if it is set.
fn env_secs(name: &str) -> Result<Option<Duration>, String> {
    let Some(v) = std::env::var_os(name) else {
        return Ok(None);
    };
    v.to_str()
        .and_then(|s| s.trim().parse::<u64>().ok())
        .filter(|s| *s > 0)
        .map(|s| Some(Duration::from_secs(s)))
        .ok_or_else(|| format!("{name}: not a number of seconds: {v:?}"))
}

/// Replaces the context's PCP technique, in its place, with one whose lifetime comes from
/// [`PCP_LIFETIME_ENV`], if that is set.
fn configure_pcp(mc: &MappingContext) -> Result<(), String> {
    let Some(lifetime) = env_secs(PCP_LIFETIME_ENV)? else {
        return Ok(());
    };
    let pcp = natt::PcpTechnique::with_config(natt::PcpConfig {
        lifetime,
        ..natt::PcpConfig::default()
    })
    .with_arbiter(mc.arbiter());
    mc.replace_technique(natt::pcp::NAME, Arc::new(pcp));
    Ok(())
}

/// The lease UPnP mappings ask for, in seconds (default 3600): for trying renewal by hand and
/// in the lab.
pub const UPNP_LEASE_ENV: &str = "NATT_UPNP_LEASE_SECS";
/// A gateway's root description URL: read instead of a multicast SSDP search (if nothing
/// answers there, the search goes to its host alone, unicast to port 1900).
pub const UPNP_IGD_ENV: &str = "NATT_UPNP_IGD";

/// Replaces the context's UPnP technique, in its place, with one configured from the
/// environment ([`UPNP_LEASE_ENV`], [`UPNP_IGD_ENV`]), and returns it so the command can
/// report on its gateway. `None` when the context has no UPnP (`--no-upnp`).
pub fn configure_upnp(mc: &MappingContext) -> Result<Option<Arc<UpnpTechnique>>, String> {
    if !mc.technique_names().iter().any(|n| n == natt::upnp::NAME) {
        return Ok(None);
    }
    let mut config = UpnpConfig::default();
    if let Some(lease) = env_secs(UPNP_LEASE_ENV)? {
        config.lease = lease;
    }
    let upnp = Arc::new(UpnpTechnique::with_config(config).with_arbiter(mc.arbiter()));
    if let Some(url) = std::env::var_os(UPNP_IGD_ENV) {
        let url = url.to_string_lossy();
        upnp.add_gateway(&url).map_err(|e| format!("{UPNP_IGD_ENV}: {e}"))?;
    }
    mc.replace_technique(natt::upnp::NAME, Arc::clone(&upnp) as Arc<dyn MappingTechnique>);
    Ok(Some(upnp))
}

/// Seconds from the command line as a duration; rejects negative, infinite and NaN values.
pub fn seconds(secs: f64) -> Result<Duration, String> {
    Duration::try_from_secs_f64(secs).map_err(|_| format!("invalid number of seconds: {secs}"))
}
