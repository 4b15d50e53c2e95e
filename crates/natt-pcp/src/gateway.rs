//! Finding the gateway: the router of the default route (on Linux, from `/proc/net/route`),
//! and this host's address on the interface toward it.

use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};

use crate::error::PcpError;
use crate::pcp_wire::SERVER_PORT;

/// The PCP / NAT-PMP server of the default route's router (`ROUTER:5351`), if this system
/// has a default route through a router and we can read it (Linux only).
pub fn default_gateway() -> Option<SocketAddr> {
    default_router().map(|ip| SocketAddr::new(IpAddr::V4(ip), SERVER_PORT))
}

/// The PCP server of the IPv6 default route's router (`[ROUTER]:5351`, a link-local router with
/// its interface's scope), if there is one and we can read it (Linux only): where an IPv6
/// pinhole is asked for.
pub fn default_gateway_v6() -> Option<SocketAddr> {
    natt_core::route::default_router_v6().map(|mut router| {
        router.set_port(SERVER_PORT);
        SocketAddr::V6(router)
    })
}

pub use natt_core::route::{default_router, parse_proc_net_route};

/// A UDP socket connected to `gateway`, and this host's address on the interface toward it
/// (what PCP requests carry as the client's address). Connecting a UDP socket sends nothing.
pub(crate) fn connect(gateway: SocketAddr) -> Result<(UdpSocket, IpAddr), PcpError> {
    let any: SocketAddr = if gateway.is_ipv4() {
        (Ipv4Addr::UNSPECIFIED, 0).into()
    } else {
        (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let socket = UdpSocket::bind(any).map_err(|e| PcpError::io("binding a socket for the gateway", e))?;
    socket
        .connect(gateway)
        .map_err(|e| PcpError::io(format!("no route to the gateway {gateway}"), e))?;
    let local = socket
        .local_addr()
        .map_err(|e| PcpError::io("reading the local address toward the gateway", e))?;
    Ok((socket, local.ip()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connect_learns_the_local_address_without_sending() {
        let (socket, ip) = connect("127.0.0.1:5351".parse().unwrap()).unwrap();
        assert_eq!(ip, IpAddr::V4(Ipv4Addr::LOCALHOST));
        assert_eq!(socket.peer_addr().unwrap().port(), 5351);
    }
}
