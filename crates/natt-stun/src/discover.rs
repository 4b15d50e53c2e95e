//! The drivers of NAT behaviour discovery ([`crate::behaviour`]): [`discover_udp`] runs the
//! socket-free probes on fresh sockets, seeding their generators from the operating system;
//! [`discover_tcp_mapping`] makes RFC 5780's mapping tests as TCP connections.

use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use natt_core::fanout;
use natt_core::{TechniqueError, UdpExchange};
use rand::SeedableRng;
use rand::rngs::StdRng;

use crate::exchange::FilterWindow;

use crate::behaviour::{Behaviour, DEFAULT_FILTER_WINDOW, FilteringTest, MappingTest, NatBehaviour, classify_mapping};

/// Discovers the mapping and filtering behaviour of the NAT in front of `bind_ip` over UDP,
/// with fresh sockets (the RFC's tests must not share a socket with other traffic), returning
/// by `deadline`. `servers[0]` is the primary server for the filtering tests, which wait
/// [`FilterWindow::DEFAULT`] (1 round trip + 5 ms, after test I's answer) for the answers a
/// filtering NAT may drop: [`discover_udp_with`] sets another window.
pub fn discover_udp(
    servers: &[SocketAddr],
    bind_ip: IpAddr,
    rto: Duration,
    deadline: Instant,
) -> Result<NatBehaviour, TechniqueError> {
    discover_udp_with(servers, bind_ip, rto, FilterWindow::DEFAULT, deadline)
}

/// [`discover_udp`] with the filtering tests waiting `window` (e.g. [`FilterWindow::PATIENT`]
/// for a surer verdict: every probe behind a filtering NAT then waits that long).
pub fn discover_udp_with(
    servers: &[SocketAddr],
    bind_ip: IpAddr,
    rto: Duration,
    window: FilterWindow,
    deadline: Instant,
) -> Result<NatBehaviour, TechniqueError> {
    let primary = *servers
        .first()
        .ok_or_else(|| TechniqueError::NotApplicable("no STUN server".into()))?;
    let now = Instant::now();
    let mut mapping = MappingTest::new(servers, rto, now, StdRng::from_os_rng())?;
    let mut filtering =
        FilteringTest::new(primary, rto, DEFAULT_FILTER_WINDOW, now, StdRng::from_os_rng())?.following_rtt(window);
    // The mapping tests on a thread of their own, the filtering tests on this one.
    let (m, f) = fanout::scoped_beside(
        "natt-stun-probe",
        now,
        [&mut mapping],
        |probe| run_test(probe, bind_ip, deadline),
        || run_test(&mut filtering, bind_ip, deadline).map(|()| now.elapsed()),
    );
    for m in m {
        m.into_timed("probe").1?;
    }
    let filtering_elapsed = f?;
    let (mapping_v, mapped, mut evidence) = mapping.verdict();
    let (filtering_v, f_evidence) = filtering.verdict();
    evidence.extend(f_evidence);
    Ok(NatBehaviour {
        mapping: mapping_v,
        filtering: filtering_v,
        mapped,
        evidence,
        filtering_elapsed,
    })
}

fn run_test(probe: &mut dyn UdpExchange, bind_ip: IpAddr, deadline: Instant) -> Result<(), TechniqueError> {
    let socket = UdpSocket::bind(SocketAddr::new(bind_ip, 0))?;
    natt_core::udp::drive(&socket, &mut [probe], deadline).map_err(|e| TechniqueError::Other(Box::new(e)))?;
    Ok(())
}

/// The mapping behaviour over TCP, from RFC 5780's tests I–III made as three connections from
/// one local port (`primary` must be an RFC 5780 server, whose OTHER-ADDRESS test I reveals).
/// TCP filtering cannot be tested with STUN, so only the mapping is returned.
pub fn discover_tcp_mapping(
    primary: SocketAddr,
    bind_ip: IpAddr,
    deadline: Instant,
) -> Result<(Behaviour, Vec<SocketAddr>), TechniqueError> {
    let local_socket = natt_core::reuse::reusable_tcp_socket(&primary)?;
    local_socket.bind(&SocketAddr::new(bind_ip, 0).into())?;
    let local = local_socket
        .local_addr()?
        .as_socket()
        .ok_or_else(|| TechniqueError::Protocol("not an IP socket".into()))?;
    let (m1, other) = binding_with_other(local, primary, deadline)?;
    let Some(other) = other else {
        return Ok((Behaviour::Unknown, vec![m1]));
    };
    let m2 = binding_with_other(local, SocketAddr::new(other.ip(), primary.port()), deadline).map(|(m, _)| m);
    let m3 = binding_with_other(local, other, deadline).map(|(m, _)| m);
    let (m2, m3) = (m2.ok(), m3.ok());
    let mapped = [Some(m1), m2, m3].into_iter().flatten().collect();
    Ok((classify_mapping(m1, m2, m3), mapped))
}

fn binding_with_other(
    local: SocketAddr,
    server: SocketAddr,
    deadline: Instant,
) -> Result<(SocketAddr, Option<SocketAddr>), TechniqueError> {
    crate::client::tcp_binding(local, server, deadline).map(|s| (s.mapped, s.other_address))
}
