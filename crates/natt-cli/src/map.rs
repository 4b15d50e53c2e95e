//! `natt map`: map a UDP or TCP socket with every technique asked for and print its endpoints.

use std::net::SocketAddr;
use std::time::Instant;

use natt::{MappedSocketAddr, MappedTcpSocket, MappedUdpSocket, PortMappings};

use crate::args::MapArgs;
use crate::context;
use crate::output::{self, MapReport};
use crate::stop;

/// Maps, prints, and releases (after holding, with `--hold`).
pub fn run(args: &MapArgs) -> Result<(), String> {
    let mc = context::build_with_turn(&args.techniques, Some(&args.turn), context::seconds(args.timeout)?)?;
    // One dual-stack socket where the host has global IPv6, else IPv4.
    let local = SocketAddr::new(natt::core::family::any_address().ip(), args.port);
    let start = Instant::now();
    // The socket must stay open while the mapping is held.
    let (socket, endpoints, mut port_mappings): (Box<dyn std::any::Any>, Vec<MappedSocketAddr>, PortMappings) =
        if args.udp {
            let m = MappedUdpSocket::bind(local, &mc).map_err(|e| e.to_string())?;
            (Box::new(m.socket), m.endpoints, m.port_mappings)
        } else {
            let m = MappedTcpSocket::bind(local, &mc).map_err(|e| e.to_string())?;
            (Box::new(m.socket), m.endpoints, m.port_mappings)
        };
    let elapsed_ms = start.elapsed().as_millis();
    output::warn_if_no_external(&port_mappings);
    let printed = if args.json {
        output::print_json(&MapReport {
            endpoints: endpoints.iter().map(Into::into).collect(),
            techniques: output::technique_reports(port_mappings.outcomes()),
            elapsed_ms,
        })
    } else {
        output::print_text(&endpoints, port_mappings.outcomes(), elapsed_ms);
        for lease in port_mappings.describe() {
            println!("# holding {lease}");
        }
        Ok(())
    };
    // Nothing reads the socket while the mapping is held: the relay reads its server's
    // answers itself.
    natt::with_relay(&port_mappings, natt::Relay::read_socket_itself);
    let held = match printed {
        Ok(()) if args.hold => stop::wait(true),
        other => other,
    };
    // Deletes the mappings and waits for the routers (each within its technique's own
    // bound), whatever happened above, before the process exits.
    port_mappings.release();
    drop(socket);
    held
}
