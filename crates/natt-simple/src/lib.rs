//! # natt-simple
//!
//! natt's simple hole-punch protocol: a client asks a server "which address do you see me
//! at?" and the server answers. It is the smallest way for a host behind a NAT to learn its
//! external endpoint, over UDP and over TCP, from a server you run yourself (`natt serve`).
//!
//! - [`wire`]: the versioned wire format, byte by byte, as pure functions.
//! - [`exchange`]: [`SimpleExchange`], the client over UDP without the socket (a protocol core).
//! - [`SimpleTechnique`]: the client, a [`natt_core::MappingTechnique`], the exchange's driver.
//! - [`SimpleUdpHolePunchServer`], [`SimpleTcpHolePunchServer`]: the servers.
//!
//! The original MaidSafe protocol (request `b"ECHO"`, reply with the observed address) had no
//! transaction id, so replies could not be matched to requests; version 1 adds a random
//! 96-bit transaction id and pads requests so that replies are never larger.
//!
//! ```
//! use natt_core::{HolePunchServerAddr, MappedTcpSocket, MappingContext};
//! use natt_simple::{SimpleTcpHolePunchServer, SimpleTechnique};
//! use std::sync::Arc;
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let server = SimpleTcpHolePunchServer::bind("127.0.0.1:0".parse()?)?;
//! let mc = MappingContext::empty();
//! mc.add_technique(Arc::new(SimpleTechnique::with_servers([server.local_addr()])));
//! let mapped = MappedTcpSocket::bind("127.0.0.1:0".parse()?, &mc)?;
//! // On loopback the server sees our own address: no NAT in between.
//! let local = mapped.socket.local_addr()?.as_socket().unwrap();
//! assert!(mapped.endpoints.iter().any(|e| e.addr == local && e.technique == "local"));
//! # Ok(())
//! # }
//! ```
//!
//! Examples of the items that the `natt` facade re-exports are written with `natt::` paths,
//! as its users write them, and are compiled by natt's doc tests (they are in `doc/`).

pub mod client;
pub mod exchange;
pub mod server;
pub mod stream;
pub mod wire;

pub use client::SimpleTechnique;
pub use exchange::SimpleExchange;
pub use server::{ServerError, SimpleTcpHolePunchServer, SimpleUdpHolePunchServer};
