//! # natt-upnp
//!
//! UPnP IGD port mapping for natt: [`UpnpTechnique`] asks the home router (an Internet
//! Gateway Device, IGD:1 or IGD:2) to forward an external port to a socket, so peers on the
//! internet reach it unsolicited. It maps beside the socket (its own HTTP requests to the
//! gateway) and returns an [`UpnpLease`] that renews the mapping while it lives and deletes it
//! when dropped.
//!
//! - **Discovery**: gateways given with
//!   [`HolePunchServerAddr::IgdGateway`](natt_core::HolePunchServerAddr::IgdGateway) (their
//!   root description URL), else an SSDP search from every IPv4 interface; always within the
//!   caller's deadline. The gateway found is cached in the technique and searched for again
//!   when it stops answering.
//! - **Mapping**: the host's address facing the gateway, the same external port when free
//!   (IGD:2 `AddAnyPortMapping`, then `AddPortMapping`), else another; a finite lease
//!   ([`UpnpConfig::lease`], 1 hour by default), permanent only if the gateway supports
//!   nothing else.
//! - **Untrusted gateways**: every request has a deadline and a size limit, URLs must point at
//!   the gateway itself, XML is parsed with depth, count and entity limits, and no proxy is
//!   ever used. Whatever a gateway answers ends in an [`UpnpError`], never a panic or a hang.
//!
//! The protocol code is this crate's own (a small HTTP client, SOAP, SSDP; XML by `xml-rs`)
//! rather than `igd-next`'s, whose requests go through `attohttpc`: they honour `http_proxy`
//! from the environment (sending LAN port-mapping requests to a proxy), wait a fixed 10 s
//! whatever the caller's deadline, and `add_any_port` asks for a random port rather than the
//! socket's own.
//!
//! ```no_run
//! use std::time::{Duration, Instant};
//! use natt_core::MappingTechnique;
//! use natt_upnp::UpnpTechnique;
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let upnp = UpnpTechnique::new();
//! let socket = std::net::UdpSocket::bind("0.0.0.0:0")?;
//! let deadline = Instant::now() + Duration::from_secs(3);
//! let mapping = upnp.map_udp(socket.local_addr()?, deadline)?;
//! for endpoint in &mapping.endpoints {
//!     println!("{endpoint}"); // 203.0.113.101:40000 (upnp, open)
//! }
//! drop(mapping); // deletes the mapping from the router (its lease is renewed until then)
//! # Ok(())
//! # }
//! ```

mod error;
mod gateway;
mod http;
mod lease;
mod ssdp;
mod technique;
mod url;
mod xml;

#[cfg(test)]
mod fake;
#[cfg(test)]
mod tests;

pub use error::UpnpError;
pub use gateway::{GatewayInfo, IgdVersion};
pub use lease::UpnpLease;
pub use technique::{NAME, UpnpConfig, UpnpTechnique};
