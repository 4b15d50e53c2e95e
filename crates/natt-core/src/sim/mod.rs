//! A simulated network for tests: hosts behind NATs or on the Internet, joined by links with
//! delay and loss, and a harness that steps socket-free state machines through it, as
//! quinn-proto's test `Pair` does. Only with the `sim` feature.
//!
//! It is pure: no sockets, no threads, no clock (time is a virtual [`Instant`](std::time::Instant)
//! that the harness moves from one event to the next, starting at one given to it), and every
//! random draw (losses, NAT ports) comes from a generator seeded by the test. The same seed
//! gives the same run.
//!
//! - [`Nat`] ([`nat`]): mapping (endpoint-independent, address-dependent,
//!   address-and-port-dependent), port assignment (preserving or random) and filtering
//!   (endpoint-independent, address-dependent, address-and-port-dependent), with the home
//!   router's firewall: what filtering drops leaves no state.
//! - [`Link`] ([`link`]): a host's access link, its delay and loss.
//! - [`Network`] ([`network`]): hosts, NATs and links, and the datagrams in flight.
//! - [`Sim`] ([`driver`]): runs [`UdpExchange`](crate::UdpExchange)s on sockets of its
//!   hosts, each from its own start time.
//! - [`Schedule`] ([`schedule`]): events in virtual time, deterministic among equals; also for
//!   tests that model something other than datagrams (TCP streams coming up, for example).
//!
//! What is not modelled: mapping timeouts, hairpinning, port forwarding, ICMP, jitter,
//! duplication, bandwidth, TCP.
//!
//! ```
//! use std::time::{Duration, Instant};
//! use natt_core::sim::{Link, Nat, Network};
//!
//! let t0 = Instant::now();
//! let mut net = Network::new(t0, 1);
//! let nat = net.add_nat(Nat::port_restricted("198.51.100.1".parse().unwrap()));
//! let home = net.add_host("192.168.1.2".parse().unwrap(), Some(nat), Link::default());
//! let server = net.add_host("203.0.113.9".parse().unwrap(), None, Link::default());
//! net.send(home, 5000, "203.0.113.9:3478".parse().unwrap(), b"ping".to_vec());
//! let got = net.advance(t0 + Duration::from_millis(20));
//! assert_eq!(got[0].host, server);
//! assert_eq!(got[0].from, "198.51.100.1:5000".parse().unwrap()); // the port is preserved
//! ```

#![deny(clippy::disallowed_methods)] // a protocol core: see clippy.toml

pub mod driver;
pub mod link;
pub mod nat;
pub mod network;
pub mod schedule;

pub use driver::{ExchangeResult, Sim, SocketId};
pub use link::Link;
pub use nat::{Filtering, Mapping, Nat, PortAssignment};
pub use network::{Delivery, HostId, NatId, Network, Stats};
pub use schedule::Schedule;
