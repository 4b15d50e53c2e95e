//! # natt-punch
//!
//! Rendezvous, UDP hole punching and TCP simultaneous open for natt.
//!
//! **Not yet implemented**: this crate is filled by its own issue ("Hole punching: rendezvous,
//! UDP hole punching and TCP simultaneous open through real NATs").
