//! # natt-stun
//!
//! STUN Binding (RFC 8489) and NAT behaviour discovery (RFC 5780) for natt.
//!
//! **Not yet implemented**: this crate is filled by its own issue ("STUN: address discovery
//! over UDP and TCP, NAT behaviour discovery, and a STUN server"). It provides no technique
//! yet, and the `natt` facade's `stun` feature registers nothing until it does.
