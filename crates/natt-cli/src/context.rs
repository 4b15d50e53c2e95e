//! Building the [`natt::MappingContext`] a command asks for from its flags.

use std::net::SocketAddr;
use std::time::Duration;

use crate::args::{TechniqueArgs, TurnArgs};
use natt::{HolePunchServerAddr, MappingContext, TurnCredentials, UpnpConfig};

/// The lifetime TURN allocations ask for, in seconds (default 600), refreshed at half of it
/// (or of what the server grants, if shorter): for trying refreshes by hand and in the lab.
pub const TURN_LIFETIME_ENV: &str = "NATT_TURN_LIFETIME_SECS";

/// The environment variable the TURN password is read from (never the command line).
pub const TURN_PASSWORD_ENV: &str = "NATT_TURN_PASSWORD";

/// How TURN allocations are made: the defaults, with the lifetime of [`TURN_LIFETIME_ENV`]
/// when it is set.
pub fn turn_config() -> Result<natt::turn::Config, String> {
    let mut config = natt::turn::Config::default();
    if let Some(lifetime) = env_secs(TURN_LIFETIME_ENV)? {
        config.lifetime = lifetime;
    }
    Ok(config)
}

/// The TURN server the flags give, with its credentials (the password from
/// [`TURN_PASSWORD_ENV`]); `None` without `--turn`.
pub fn turn_server(turn: &TurnArgs) -> Result<Option<HolePunchServerAddr>, String> {
    let (Some(uri), Some(user)) = (&turn.turn, &turn.turn_user) else {
        return Ok(None);
    };
    let password = std::env::var(TURN_PASSWORD_ENV)
        .map_err(|_| format!("--turn needs the TURN password in the environment variable {TURN_PASSWORD_ENV}"))?;
    HolePunchServerAddr::parse_turn(uri, TurnCredentials::new(user.as_str(), password))
        .map(Some)
        .map_err(|e| format!("--turn: {e}"))
}

/// The lifetime PCP / NAT-PMP mappings ask for, in seconds (default 7200): for trying renewal
/// by hand and in the lab.
pub const PCP_LIFETIME_ENV: &str = "NATT_PCP_LIFETIME_SECS";

/// The context the technique flags ask for, mapping within `timeout`, with the TURN relay of
/// `turn` (`--turn`, `--turn-user` and the password in [`TURN_PASSWORD_ENV`]) when given: the
/// flags and the environment ([`PCP_LIFETIME_ENV`], [`UPNP_LEASE_ENV`], [`UPNP_IGD_ENV`],
/// [`TURN_LIFETIME_ENV`]) describe it, and the builder makes it; an error names a server no
/// technique of this build can use.
pub fn build_with_turn(
    choice: &TechniqueArgs,
    turn: Option<&TurnArgs>,
    timeout: Duration,
) -> Result<MappingContext, String> {
    let turn = turn.map(turn_server).transpose()?.flatten();
    let mut builder = MappingContext::builder()
        .timeout(timeout)
        .stun_filter_window(filter_window(choice))
        .turn(turn_config()?);
    if choice.no_upnp {
        builder = builder.no_upnp();
    } else {
        let mut config = UpnpConfig::default();
        if let Some(lease) = env_secs(UPNP_LEASE_ENV)? {
            config.lease = lease;
        }
        builder = builder.upnp(config);
        if let Some(url) = std::env::var_os(UPNP_IGD_ENV) {
            builder = builder.upnp_gateway(url.to_string_lossy());
        }
    }
    if choice.no_pcp {
        builder = builder.no_pcp();
    } else {
        let mut config = natt::PcpConfig::default();
        if let Some(lifetime) = env_secs(PCP_LIFETIME_ENV)? {
            config.lifetime = lifetime;
        }
        builder = builder.pcp(config);
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
        )
        .chain(turn);
    builder.servers(servers).build().map_err(|e| match e {
        natt::Error::Config(why) if why.starts_with("UPnP gateway") => format!("{UPNP_IGD_ENV}: {why}"),
        other => other.to_string(),
    })
}

/// How long the filtering checks wait (`--patient-filtering`).
pub fn filter_window(choice: &TechniqueArgs) -> natt::FilterWindow {
    if choice.patient_filtering {
        natt::FilterWindow::PATIENT
    } else {
        natt::FilterWindow::DEFAULT
    }
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

/// The lease UPnP mappings ask for, in seconds (default 3600): for trying renewal by hand and
/// in the lab.
pub const UPNP_LEASE_ENV: &str = "NATT_UPNP_LEASE_SECS";
/// A gateway's root description URL: read instead of a multicast SSDP search (if nothing
/// answers there, the search goes to its host alone, unicast to port 1900).
pub const UPNP_IGD_ENV: &str = "NATT_UPNP_IGD";

/// Seconds from the command line as a duration; rejects negative, infinite and NaN values.
pub fn seconds(secs: f64) -> Result<Duration, String> {
    Duration::try_from_secs_f64(secs).map_err(|_| format!("invalid number of seconds: {secs}"))
}
