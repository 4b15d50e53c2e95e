//! Which port-mapping protocol a gateway answers, without mapping anything: a PCP ANNOUNCE,
//! then NAT-PMP's external address request when the gateway speaks only that.

use std::net::{IpAddr, SocketAddr};
use std::time::Instant;

use crate::driver::{self, Driven};
use crate::error::PcpError;
use crate::gateway;
use crate::transaction::{Outcome, Transaction, Version};

/// What a gateway answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GatewayAnswer {
    /// The gateway.
    pub gateway: SocketAddr,
    /// The protocol it answered in.
    pub version: Version,
    /// Its epoch.
    pub epoch: u32,
    /// Its external address, when NAT-PMP told it (PCP tells it only with a mapping).
    pub external_ip: Option<IpAddr>,
}

/// Asks `gateway` which protocol it speaks (only `only`, if given), by `deadline`.
///
/// ```no_run
/// use std::time::{Duration, Instant};
/// let gateway = natt_pcp::default_gateway().expect("a default route");
/// let answer = natt_pcp::ask_gateway(gateway, None, Instant::now() + Duration::from_secs(2))?;
/// println!("{} answers {}", answer.gateway, answer.version);
/// # Ok::<(), natt_pcp::PcpError>(())
/// ```
pub fn ask_gateway(gateway: SocketAddr, only: Option<Version>, deadline: Instant) -> Result<GatewayAnswer, PcpError> {
    let (socket, client) = gateway::connect(gateway)?;
    let version = only.unwrap_or(Version::Pcp);
    let mut tx = Transaction::announce(
        gateway,
        client,
        version,
        only.is_none(),
        Instant::now(),
        driver::jitter(),
    );
    match driver::drive(&socket, &mut tx, deadline, None) {
        Driven::Done(Ok(Outcome::Announced {
            version,
            epoch,
            external_ip,
        })) => Ok(GatewayAnswer {
            gateway,
            version,
            epoch,
            external_ip,
        }),
        Driven::Done(Ok(other)) => Err(PcpError::Malformed {
            gateway,
            version,
            why: format!("unexpected answer: {other:?}"),
        }),
        Driven::Done(Err(e)) => Err(e),
        Driven::Stopped => Err(tx.timed_out()),
    }
}
