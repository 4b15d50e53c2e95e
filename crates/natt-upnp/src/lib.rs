//! # natt-upnp
//!
//! UPnP IGD port mapping for natt: [`UpnpTechnique`] asks the home router (an Internet
//! Gateway Device, IGD:1 or IGD:2) to forward an external port to a socket, so peers on the
//! internet reach it unsolicited. It maps beside the socket (its own requests to the gateway)
//! and returns an [`UpnpLease`] that renews the mapping while it lives and deletes it when
//! dropped. natt speaks UPnP itself, every part of it: the SSDP search ([`ssdp`]), the device
//! description ([`description`]) and the SOAP actions ([`soap`]), all read with natt's own
//! hardened XML reader; it decides what to ask, bounds every call by the caller's deadline and
//! holds the leases.
//!
//! - **IPv6 pinholes**: for a dual-stack socket (`natt_core::family`) on a host with global
//!   IPv6, the gateway's IGD:2 `WANIPv6FirewallControl` service ([`pinhole`]) is asked at the
//!   same time as the IPv4 mapping to let the internet in to the socket's port of the host's
//!   IPv6 address (`AddPinhole`, renewed with `UpdatePinhole`, deleted with `DeletePinhole`);
//!   the request goes out from that address, as gateways require. The pinhole's endpoint is open
//!   and held in the same lease as the mapping.
//! - **Discovery**: an SSDP search, multicast from every IPv4 interface at once and unicast to
//!   the router of the default route (one thread each, the first gateway found wins), whose
//!   answers are taken from that router only ([`UpnpConfig::router_only`]; when there is a
//!   default route, read on Linux only); each answerer's
//!   description is read as a given gateway's is (below); lasting [`UpnpConfig::search_window`]
//!   at most. A gateway given with
//!   [`HolePunchServerAddr::IgdGateway`](natt_core::HolePunchServerAddr::IgdGateway) (a root
//!   description URL, as `upnpc -u` takes) is loaded from that URL instead, without a search:
//!   natt reads the description ([`description`]) and takes the argument lists the
//!   specifications fix instead of reading the service's description (as miniupnpc does). If
//!   nothing answers at
//!   the URL (the gateway restarted on another port), a unicast M-SEARCH goes to that URL's
//!   host, port 1900. One search runs at a time: mappings and leases that need a gateway
//!   meanwhile wait for its result (within their own deadlines). The gateway found is cached
//!   in the technique, forgotten as soon as it fails to answer (the next mapping searches
//!   again); a multicast search that nothing answered is not repeated for
//!   [`UpnpConfig::search_again_after`], nor is any failed search by leases looking for
//!   their gateway again.
//! - **Mapping**: the host's address facing the gateway; `GetExternalIPAddress` asked at the
//!   same time as the mapping; `AddPortMapping` with the socket's own port first; when that port is taken, `AddAnyPortMapping` on IGD:2 (the gateway picks
//!   the port), random ports on IGD:1. A finite lease ([`UpnpConfig::lease`], 1 hour by
//!   default), permanent only if the gateway supports nothing else.
//! - **Deadlines**: a SOAP request waits up to 10 s to connect, then as much for the answer,
//!   whatever the caller's deadline, so
//!   each call runs on a worker thread and the caller stops waiting at its deadline (a few
//!   milliseconds late at most) with [`UpnpError::TimedOut`]. A mapping the gateway grants
//!   after that is deleted by the worker, so nothing is leaked, unless its port is held by
//!   then (a renewal of a lease still held, or a later attempt that got the same port: the
//!   deletion would delete that live mapping); the worker itself ends when its
//!   request does (about 20 s at most). A call whose deadline has passed is not started.
//! - **Leases**: each [`UpnpLease`] has a thread that renews the mapping and deletes it when
//!   the lease is released. Dropping a lease waits for the deletion briefly at most (250 ms,
//!   none while the gateway is silent): the thread deletes with its own deadline
//!   ([`UpnpConfig::call_timeout`]). Before exiting, wait for the deletions with
//!   [`natt_core::PortMappings::release`] (or [`UpnpLease::release`]).
//! - **Untrusted gateways**: whatever a gateway answers ends in an [`UpnpError`], never a
//!   panic, a hang or unbounded memory. Everything natt reads from a gateway goes through
//!   one reader: a size limit (256 KiB for a description,
//!   [`soap::MAX_SOAP_BYTES`], 64 KiB, for a SOAP answer), UTF-8 only, no DTD or other markup
//!   declaration (refused before parsing, so no entity expansion), a depth and text limit.
//!   Only URLs on the gateway's own address are followed (the device that answered the
//!   search, or the host of the URL given).
//! - **Why not `igd-next`**: natt used `igd-next` for the SOAP actions until a security
//!   review (issue #18) found that it parses SOAP answers with xml-rs's default settings,
//!   which expand DTD entities: an answer of about 750 bytes took a process to 1.39 GB.
//!   `igd-next`'s API offers no way to check an answer before it parses it (it sends the HTTP request and
//!   parses the body in one private function), so natt sends the few actions it uses
//!   itself ([`soap`]: `GetExternalIPAddress`, `AddPortMapping`, `AddAnyPortMapping`,
//!   `DeletePortMapping`); the IPv6 pinhole actions will need the same. Its search was
//!   replaced too ([`ssdp`]): it read the description of whatever answered with the same
//!   settings, and a device on the LAN answering with a 527-byte description took the process
//!   to 700 MB (ten times that per extra line). `igd-next` is no longer a dependency.
//! - **HTTP proxies**: natt's requests to the gateway never go through a proxy, whatever
//!   `http_proxy`/`all_proxy` say (the gateway is on the LAN), and never follow redirects.
//! - **Forged SSDP answers**: any host on the LAN can send search answers that claim to come
//!   from the router, naming any port and path on the router's address. They cannot use up
//!   the router's own answer (reads are counted per distinct description URL and run
//!   concurrently; the unicast search to the router has its own quota), and all they can make
//!   natt do is a bounded HTTP GET of that port and path on the router (see
//!   [`UpnpConfig::router_only`] for the exact bounds, and what changes without that filter).
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
//! if let Some(mut lease) = mapping.lease {
//!     // Deletes the mapping from the router (its lease is renewed until then), and waits
//!     // for that: dropping the lease would delete it too, without waiting.
//!     lease.start_release();
//!     lease.wait_released();
//! }
//! # Ok(())
//! # }
//! ```
//!
//! Examples of the items that the `natt` facade re-exports are written with `natt::` paths,
//! as its users write them, and are compiled by natt's doc tests (they are in `doc/`).

mod bounded;
mod cache;
pub mod description;
mod error;
mod gateway;
mod http;
mod lease;
mod load;
pub mod pinhole;
mod port_choice;
mod search;
pub mod soap;
pub mod ssdp;
mod technique;
mod xml_reader;

#[cfg(test)]
mod fake;
#[cfg(test)]
mod tests;

pub use error::UpnpError;
pub use gateway::{GatewayInfo, IgdVersion};
pub use lease::UpnpLease;
pub use technique::{NAME, UpnpConfig, UpnpTechnique};
