//! An example of a third-party natt technique, written against `natt-core` alone.
//!
//! The "echo" technique asks a server speaking a made-up text protocol which address it sees:
//! the client sends `WHOAMI <nonce>` and the server answers `YOUARE <nonce> <ip:port>`. It
//! talks over the mapped UDP socket itself, through a [`UdpExchange`], so it shares the socket
//! and its receive loop with every other technique; and it maps TCP too. [`serve_one`]
//! answers on a socket, for tests.
//!
//! ```
//! use natt_core::{MappedUdpSocket, MappingContext};
//! use std::sync::Arc;
//!
//! let server = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
//! let addr = server.local_addr().unwrap();
//! std::thread::spawn(move || natt_example_echo::serve_one(&server));
//! let mc = MappingContext::empty();
//! mc.add_technique(Arc::new(natt_example_echo::EchoTechnique::new(addr)));
//! let mapped = MappedUdpSocket::bind("127.0.0.1:0".parse().unwrap(), &mc).unwrap();
//! assert!(mapped.port_mappings.outcomes()[0].result.is_ok());
//! ```

use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use natt_core::{MappedSocketAddr, MappingTechnique, TechniqueError, Transmit, UdpExchange};

/// The technique's name.
pub const NAME: &str = "echo";

/// Asks one echo server which address it sees.
#[derive(Debug)]
pub struct EchoTechnique {
    server: SocketAddr,
}

impl EchoTechnique {
    /// A technique asking `server`.
    pub fn new(server: SocketAddr) -> Self {
        EchoTechnique { server }
    }
}

impl MappingTechnique for EchoTechnique {
    fn name(&self) -> &str {
        NAME
    }

    fn udp_exchange(&self, _local: SocketAddr) -> Result<Option<Box<dyn UdpExchange>>, TechniqueError> {
        Ok(Some(Box::new(EchoExchange {
            server: self.server,
            nonce: format!("{:016x}", rand_nonce()),
            next_send: Instant::now(),
            found: None,
        })))
    }
}

fn rand_nonce() -> u64 {
    // Good enough for an example: mix the clock into a hash.
    use std::hash::{BuildHasher, RandomState};
    RandomState::new().hash_one(Instant::now())
}

/// The echo conversation, without a socket.
struct EchoExchange {
    server: SocketAddr,
    nonce: String,
    next_send: Instant,
    found: Option<SocketAddr>,
}

impl UdpExchange for EchoExchange {
    fn poll_transmit(&mut self, now: Instant) -> Option<Transmit> {
        if self.found.is_some() || now < self.next_send {
            return None;
        }
        self.next_send = now + Duration::from_millis(200);
        Some(Transmit {
            destination: self.server,
            payload: format!("WHOAMI {}", self.nonce).into_bytes(),
        })
    }

    fn poll_timeout(&self) -> Option<Instant> {
        self.found.is_none().then_some(self.next_send)
    }

    fn handle_datagram(&mut self, _now: Instant, _from: SocketAddr, data: &[u8]) -> bool {
        let Ok(text) = std::str::from_utf8(data) else {
            return false;
        };
        let mut words = text.split(' ');
        if words.next() != Some("YOUARE") || words.next() != Some(self.nonce.as_str()) {
            return false;
        }
        match words.next().and_then(|a| a.parse().ok()) {
            Some(addr) => {
                self.found = Some(addr);
                true
            }
            None => false,
        }
    }

    fn poll_result(&mut self, _now: Instant) -> Option<Result<Vec<MappedSocketAddr>, TechniqueError>> {
        self.found.map(|a| Ok(vec![MappedSocketAddr::new(a, true, NAME)]))
    }

    fn finish(&mut self) -> Result<Vec<MappedSocketAddr>, TechniqueError> {
        Err(TechniqueError::TimedOut(format!("{} did not answer", self.server)))
    }
}

/// Answers echo requests on `socket` until a receive fails (for tests).
pub fn serve_one(socket: &UdpSocket) {
    let mut buf = [0u8; 256];
    while let Ok((n, from)) = socket.recv_from(&mut buf) {
        let text = String::from_utf8_lossy(buf.get(..n).unwrap_or(&[])).into_owned();
        if let Some(nonce) = text.strip_prefix("WHOAMI ") {
            let _ = socket.send_to(format!("YOUARE {nonce} {from}").as_bytes(), from);
        }
    }
}
