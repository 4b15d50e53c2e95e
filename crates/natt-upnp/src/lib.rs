//! # natt-upnp
//!
//! UPnP IGD port mapping for natt, on `igd-next`.
//!
//! **Not yet implemented**: this crate is filled by its own issue ("UPnP IGD port mapping that
//! routers and users can trust"). It provides no technique yet, and the `natt` facade's `upnp`
//! feature registers nothing until it does.
