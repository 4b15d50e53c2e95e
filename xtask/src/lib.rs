//! natt developer tooling behind `cargo xtask ...`: the NAT lab ([`lab`]), the project's
//! test and CI tasks ([`tasks`]) and the demo ([`demo`]).
//!
//! The lab is a library too, so Rust tests build their topologies through it:
//! `let lab = xtask::lab::Lab::up("t1", "pair")?;` (root, inside `unshare --net`).

pub mod demo;
pub mod lab;
pub mod tasks;
