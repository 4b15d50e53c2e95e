//! Reusable sockets: TCP hole punching listens and connects from one local port at once, and
//! techniques connect to their servers from the port being mapped, so every such socket is
//! bound with `SO_REUSEADDR` (and `SO_REUSEPORT` on unix).

use std::io;
use std::net::{SocketAddr, TcpStream};
use std::time::Instant;

use socket2::{Domain, Protocol as SockProtocol, Socket, Type};

use crate::deadline;
use crate::family;

/// Sets `SO_REUSEADDR` and, on unix, `SO_REUSEPORT`.
pub fn set_reuse(socket: &Socket) -> io::Result<()> {
    socket.set_reuse_address(true)?;
    #[cfg(all(unix, not(any(target_os = "solaris", target_os = "illumos"))))]
    socket.set_reuse_port(true)?;
    Ok(())
}

/// A new, unbound TCP socket of `addr`'s family with the reuse options set; for the IPv6
/// unspecified address, dual-stack (`IPV6_V6ONLY` off, see [`crate::family`]).
pub fn reusable_tcp_socket(addr: &SocketAddr) -> io::Result<Socket> {
    let socket = Socket::new(Domain::for_address(*addr), Type::STREAM, Some(SockProtocol::TCP))?;
    if family::is_dual_stack(*addr) {
        socket.set_only_v6(false)?;
    }
    set_reuse(&socket)?;
    Ok(socket)
}

/// A new TCP socket to reach `remote` from a port bound at `local`, bound there, with the reuse
/// options set, and `remote` in the socket's family ([`family::for_socket`]). Fails when a
/// socket at `local` cannot reach `remote`.
pub fn reusable_tcp_socket_from(local: SocketAddr, remote: SocketAddr) -> io::Result<(Socket, SocketAddr)> {
    if !family::reaches(local, remote) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("cannot reach {remote} from {local}: address families differ"),
        ));
    }
    let socket = reusable_tcp_socket(&local)?;
    socket.bind(&local.into())?;
    Ok((socket, family::for_socket(local, remote)))
}

/// Connects to `remote` from `local` (a port other reusable sockets may share), giving up at
/// `deadline`. The stream's read and write timeouts are set to the time left.
pub fn tcp_connect_from(local: SocketAddr, remote: SocketAddr, deadline: Instant) -> io::Result<TcpStream> {
    let (socket, remote) = reusable_tcp_socket_from(local, remote)?;
    let left = deadline::remaining(deadline).ok_or_else(|| io::Error::from(io::ErrorKind::TimedOut))?;
    socket.connect_timeout(&remote.into(), left)?;
    let stream: TcpStream = socket.into();
    let left = deadline::wait_until(deadline);
    stream.set_read_timeout(Some(left))?;
    stream.set_write_timeout(Some(left))?;
    Ok(stream)
}
