//! The simple hole-punch protocol served on the STUN server's ports, so one `natt serve`
//! answers both (the two are told apart by their first bytes).

use std::io;
use std::net::{SocketAddr, TcpStream};

use natt_stun::server::{OtherProtocol, STREAM_HEAD_LEN};

/// Answers the simple protocol for a [`natt_stun::StunServer`].
#[derive(Debug, Default)]
pub struct SimpleOnStun;

impl OtherProtocol for SimpleOnStun {
    fn answer_datagram(&self, from: SocketAddr, data: &[u8]) -> Option<Vec<u8>> {
        natt_simple::wire::answer(from, data)
    }

    fn serve_stream(&self, head: [u8; STREAM_HEAD_LEN], stream: &mut TcpStream) -> io::Result<()> {
        natt_simple::server::answer_stream(head, stream, || ())
    }
}
