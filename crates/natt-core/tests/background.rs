//! Port-mapping techniques that are still running when another technique has found an
//! external endpoint: after their grace the mapping returns without them, they go on in the
//! background, and what they map later is held with the socket's mappings, or deleted at once
//! when those were released or dropped. Fake techniques gated by the test: no network, no
//! timing assertion (a driver that waited for the gated technique would see it time out, and
//! its outcome would say so).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

use std::net::SocketAddr;
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use natt_core::mapping::GATEWAY_GRACE;
use natt_core::tcp::map_tcp_port;
use natt_core::{
    Lease, MappedSocketAddr, MappedUdpSocket, MappingContext, MappingTechnique, PortMappings, TechniqueError,
    TechniqueMapping,
};

const LONG: Duration = Duration::from_secs(20);

fn a(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

/// A technique that finds `addr` at once (an external endpoint unless it is the socket's own).
struct Found(&'static str, SocketAddr);

impl Found {
    fn mapping(&self) -> Result<TechniqueMapping, TechniqueError> {
        Ok(vec![MappedSocketAddr::new(self.1, true, self.0)].into())
    }
}

impl MappingTechnique for Found {
    fn name(&self) -> &str {
        self.0
    }
    fn map_udp(&self, _: SocketAddr, _: Instant) -> Result<TechniqueMapping, TechniqueError> {
        self.mapping()
    }
    fn map_tcp(&self, _: SocketAddr, _: Instant) -> Result<TechniqueMapping, TechniqueError> {
        self.mapping()
    }
}

/// What was done to a lease, in order.
type LeaseLog = Arc<Mutex<Vec<&'static str>>>;

/// A lease that records what is done to it.
struct Recorded(LeaseLog);

impl Lease for Recorded {
    fn describe(&self) -> String {
        "gateway udp 203.0.113.7:4000".into()
    }
    fn start_release(&mut self) {
        self.0.lock().unwrap().push("start");
    }
    fn wait_released(&mut self) {
        self.0.lock().unwrap().push("wait");
    }
}

impl Drop for Recorded {
    fn drop(&mut self) {
        self.0.lock().unwrap().push("drop");
    }
}

/// A gateway that answers only when the test opens the gate (before the deadline), with a
/// port mapping whose lease records what is done to it.
struct Gated {
    gate: Mutex<Receiver<()>>,
    lease: LeaseLog,
}

const GATED_ADDR: &str = "203.0.113.7:4000";

impl Gated {
    fn new() -> (Arc<Gated>, Sender<()>, LeaseLog) {
        let (tx, rx) = mpsc::channel();
        let lease = Arc::new(Mutex::new(Vec::new()));
        let g = Gated {
            gate: Mutex::new(rx),
            lease: Arc::clone(&lease),
        };
        (Arc::new(g), tx, lease)
    }

    fn mapping(&self, deadline: Instant) -> Result<TechniqueMapping, TechniqueError> {
        let wait = deadline.saturating_duration_since(Instant::now());
        match self.gate.lock().unwrap().recv_timeout(wait) {
            Ok(()) => Ok(TechniqueMapping {
                endpoints: vec![MappedSocketAddr::new(a(GATED_ADDR), false, "gateway")],
                lease: Some(Box::new(Recorded(Arc::clone(&self.lease)))),
            }),
            Err(_) => Err(TechniqueError::TimedOut("the gate stayed shut".into())),
        }
    }
}

impl MappingTechnique for Gated {
    fn name(&self) -> &str {
        "gateway"
    }
    fn map_udp(&self, _: SocketAddr, deadline: Instant) -> Result<TechniqueMapping, TechniqueError> {
        self.mapping(deadline)
    }
    fn map_tcp(&self, _: SocketAddr, deadline: Instant) -> Result<TechniqueMapping, TechniqueError> {
        self.mapping(deadline)
    }
}

fn gateway_outcome(pm: &PortMappings) -> &Result<Vec<MappedSocketAddr>, TechniqueError> {
    &pm.outcomes().iter().find(|o| o.technique == "gateway").unwrap().result
}

/// Waits (bounded) until `log` holds `n` entries.
fn wait_for(log: &LeaseLog, n: usize) -> Vec<&'static str> {
    let t0 = Instant::now();
    while log.lock().unwrap().len() < n && t0.elapsed() < LONG {
        thread::sleep(Duration::from_millis(5));
    }
    log.lock().unwrap().clone()
}

const LOCAL: &str = "127.0.0.1:4000";

#[test]
fn a_gateway_slower_than_the_grace_goes_on_in_the_background_and_its_mapping_is_added() {
    let (gated, gate, lease) = Gated::new();
    let techniques: Vec<Arc<dyn MappingTechnique>> = vec![Arc::new(Found("stun", a("198.51.100.1:4000"))), gated];
    let (endpoints, mut pm) = map_tcp_port(a(LOCAL), &techniques, Instant::now() + LONG);
    assert!(
        matches!(gateway_outcome(&pm), Err(TechniqueError::InBackground(_))),
        "{:?}",
        pm.outcomes()
    );
    assert!(endpoints.iter().any(|e| e.technique == "stun"));
    assert!(!endpoints.iter().any(|e| e.addr == a(GATED_ADDR)));
    assert_eq!(pm.running(), 1);
    assert!(pm.is_empty());

    gate.send(()).unwrap();
    assert!(pm.wait_background_until(Instant::now() + LONG));
    assert_eq!(pm.running(), 0);
    let late = pm.take_late();
    assert_eq!(late.iter().map(|e| e.addr).collect::<Vec<_>>(), [a(GATED_ADDR)]);
    assert!(gateway_outcome(&pm).is_ok(), "{:?}", pm.outcomes());
    assert_eq!(pm.describe(), ["gateway udp 203.0.113.7:4000"]);
    assert!(pm.take_late().is_empty(), "taken twice");
    assert!(lease.lock().unwrap().is_empty(), "the late mapping was not held");

    pm.release();
    assert_eq!(*lease.lock().unwrap(), ["start", "wait", "drop"]);
}

#[test]
fn a_mapping_that_comes_after_the_release_is_deleted_at_once() {
    let (gated, gate, lease) = Gated::new();
    let techniques: Vec<Arc<dyn MappingTechnique>> = vec![Arc::new(Found("stun", a("198.51.100.1:4000"))), gated];
    let (_, mut pm) = map_tcp_port(a(LOCAL), &techniques, Instant::now() + LONG);
    assert_eq!(pm.running(), 1);
    // The gateway answers while release waits for it.
    let opener = thread::spawn(move || {
        thread::sleep(GATEWAY_GRACE);
        gate.send(()).unwrap();
    });
    pm.release();
    opener.join().unwrap();
    assert_eq!(*lease.lock().unwrap(), ["start", "wait", "drop"]);
    assert!(pm.is_empty());
}

#[test]
fn a_mapping_that_comes_after_the_drop_is_deleted_at_once() {
    let (gated, gate, lease) = Gated::new();
    let techniques: Vec<Arc<dyn MappingTechnique>> = vec![Arc::new(Found("stun", a("198.51.100.1:4000"))), gated];
    let (_, pm) = map_tcp_port(a(LOCAL), &techniques, Instant::now() + LONG);
    drop(pm);
    gate.send(()).unwrap();
    assert_eq!(wait_for(&lease, 3), ["start", "wait", "drop"]);
}

#[test]
fn without_an_external_endpoint_mapping_waits_for_every_technique() {
    let (gated, gate, _lease) = Gated::new();
    // The socket's own address is not external: no grace.
    let techniques: Vec<Arc<dyn MappingTechnique>> = vec![Arc::new(Found("simple", a(LOCAL))), gated];
    let opener = thread::spawn(move || {
        thread::sleep(GATEWAY_GRACE * 2);
        gate.send(()).unwrap();
    });
    let (endpoints, mut pm) = map_tcp_port(a(LOCAL), &techniques, Instant::now() + LONG);
    opener.join().unwrap();
    assert!(gateway_outcome(&pm).is_ok(), "{:?}", pm.outcomes());
    assert!(endpoints.iter().any(|e| e.addr == a(GATED_ADDR)));
    assert_eq!(pm.running(), 0);
    pm.release();
}

#[test]
fn udp_a_late_gateway_mapping_joins_the_endpoints_on_refresh() {
    let (gated, gate, lease) = Gated::new();
    let mc = MappingContext::empty().with_timeout(LONG);
    mc.add_technique(Arc::new(Found("stun", a("198.51.100.1:4000"))));
    mc.add_technique(gated);
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let mut mapped = MappedUdpSocket::map(socket, &mc).unwrap();
    assert!(!mapped.endpoints.iter().any(|e| e.addr == a(GATED_ADDR)));
    assert_eq!(mapped.refresh(), 0);
    gate.send(()).unwrap();
    assert!(mapped.port_mappings.wait_background_until(Instant::now() + LONG));
    assert_eq!(mapped.refresh(), 1);
    assert!(mapped.endpoints.iter().any(|e| e.addr == a(GATED_ADDR)));
    mapped.port_mappings.release();
    assert_eq!(*lease.lock().unwrap(), ["start", "wait", "drop"]);
}
