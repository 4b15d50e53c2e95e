//! Techniques run at the same time: two techniques that can only finish together (each waits
//! for the other to have started) both succeed, which they could not if run one after another.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

use std::net::{SocketAddr, UdpSocket};
use std::sync::mpsc::{Receiver, Sender, channel};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use natt_core::{
    MappedSocketAddr, MappedTcpSocket, MappedUdpSocket, MappingContext, MappingTechnique, TechniqueError,
    TechniqueMapping,
};

/// Signals the other technique, then waits (until the deadline) for its signal.
struct Rendezvous {
    name: &'static str,
    tx: Sender<()>,
    rx: Mutex<Receiver<()>>,
}

impl Rendezvous {
    fn meet(&self, local: SocketAddr, deadline: Instant) -> Result<TechniqueMapping, TechniqueError> {
        let _ = self.tx.send(());
        let left = deadline.saturating_duration_since(Instant::now());
        self.rx
            .lock()
            .unwrap()
            .recv_timeout(left)
            .map_err(|_| TechniqueError::TimedOut("the other technique never ran".into()))?;
        Ok(vec![MappedSocketAddr::new(local, true, self.name)].into())
    }
}

impl MappingTechnique for Rendezvous {
    fn name(&self) -> &str {
        self.name
    }
    fn map_udp(&self, local: SocketAddr, deadline: Instant) -> Result<TechniqueMapping, TechniqueError> {
        self.meet(local, deadline)
    }
    fn map_tcp(&self, local: SocketAddr, deadline: Instant) -> Result<TechniqueMapping, TechniqueError> {
        self.meet(local, deadline)
    }
}

fn pair() -> MappingContext {
    let (a_tx, b_rx) = channel();
    let (b_tx, a_rx) = channel();
    let mc = MappingContext::empty().with_timeout(Duration::from_secs(10));
    mc.add_technique(Arc::new(Rendezvous {
        name: "a",
        tx: a_tx,
        rx: Mutex::new(a_rx),
    }));
    mc.add_technique(Arc::new(Rendezvous {
        name: "b",
        tx: b_tx,
        rx: Mutex::new(b_rx),
    }));
    mc
}

#[test]
fn udp_techniques_run_concurrently() {
    let mc = pair();
    let mapped = MappedUdpSocket::map(UdpSocket::bind("127.0.0.1:0").unwrap(), &mc).unwrap();
    for o in mapped.port_mappings.outcomes() {
        assert!(o.result.is_ok(), "{}: {:?}", o.technique, o.result);
    }
}

#[test]
fn tcp_techniques_run_concurrently() {
    let mc = pair();
    let mapped = MappedTcpSocket::bind("127.0.0.1:0".parse().unwrap(), &mc).unwrap();
    assert_eq!(mapped.port_mappings.outcomes().len(), 2);
    for o in mapped.port_mappings.outcomes() {
        assert!(o.result.is_ok(), "{}: {:?}", o.technique, o.result);
    }
}

#[test]
fn mapping_restores_socket_options() {
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    socket.set_nonblocking(true).unwrap();
    let mc = MappingContext::empty();
    let mapped = MappedUdpSocket::map(socket, &mc).unwrap();
    let mut buf = [0u8; 8];
    // Still non-blocking: returns at once.
    assert_eq!(
        mapped.socket.recv_from(&mut buf).unwrap_err().kind(),
        std::io::ErrorKind::WouldBlock
    );
}

#[test]
fn tcp_socket_is_reusable_for_listen_and_connect() {
    let mc = MappingContext::empty();
    let mapped = MappedTcpSocket::bind("127.0.0.1:0".parse().unwrap(), &mc).unwrap();
    let local = mapped.socket.local_addr().unwrap().as_socket().unwrap();
    assert_eq!(mapped.endpoints[0].addr, local);
    mapped.socket.listen(8).unwrap();
    // Another reusable socket can bind the same port and connect out from it.
    let target = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let stream = natt_core::reuse::tcp_connect_from(
        local,
        target.local_addr().unwrap(),
        Instant::now() + Duration::from_secs(5),
    )
    .unwrap();
    assert_eq!(stream.local_addr().unwrap(), local);
}
