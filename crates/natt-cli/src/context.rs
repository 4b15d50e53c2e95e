//! Building the [`natt::MappingContext`] a command asks for from its flags.

use std::net::SocketAddr;
use std::time::Duration;

use natt::{HolePunchServerAddr, MappingContext};

/// What a command may choose of the techniques.
#[derive(Debug, Default)]
pub struct Choice<'a> {
    /// Simple-protocol servers.
    pub simple: &'a [SocketAddr],
    /// STUN servers.
    pub stun: &'a [SocketAddr],
    /// Leave UPnP out.
    pub no_upnp: bool,
    /// How long mapping may take.
    pub timeout: Duration,
}

/// The context for `choice`; an error names a server no technique of this build can use.
pub fn build(choice: &Choice<'_>) -> Result<MappingContext, String> {
    let mc = MappingContext::new()
        .map_err(|e| e.to_string())?
        .with_timeout(choice.timeout);
    if choice.no_upnp {
        mc.remove_technique("upnp");
    }
    let servers = choice
        .simple
        .iter()
        .map(|&a| HolePunchServerAddr::Simple(a))
        .chain(choice.stun.iter().map(|&a| HolePunchServerAddr::Stun(a)));
    for server in servers {
        if !mc.add_server(server.clone()) {
            return Err(format!("no technique of this build of natt can use {server:?}"));
        }
    }
    Ok(mc)
}

/// Seconds from the command line as a duration; rejects negative, infinite and NaN values.
pub fn seconds(secs: f64) -> Result<Duration, String> {
    Duration::try_from_secs_f64(secs).map_err(|_| format!("invalid number of seconds: {secs}"))
}
