//! `natt serve`: the simple hole-punch protocol on UDP and TCP at each address.

use natt::{SimpleTcpHolePunchServer, SimpleUdpHolePunchServer};

use crate::args::ServeArgs;
use crate::stop;

/// Serves until SIGINT or SIGTERM; prints one line per listener (`udp ADDR`, `tcp ADDR`).
pub fn run(args: &ServeArgs) -> Result<(), String> {
    let mut servers = Vec::new();
    for &addr in &args.listen {
        let udp = SimpleUdpHolePunchServer::bind(addr).map_err(|e| e.to_string())?;
        println!("serving simple udp {}", udp.local_addr());
        let tcp = SimpleTcpHolePunchServer::bind(udp.local_addr()).map_err(|e| e.to_string())?;
        println!("serving simple tcp {}", tcp.local_addr());
        servers.push((udp, tcp));
    }
    stop::wait(false)?;
    let answered: u64 = servers
        .iter()
        .map(|(u, t)| u.answered() + t.answered())
        .sum();
    log::info!("stopping after {answered} answers");
    drop(servers);
    Ok(())
}
