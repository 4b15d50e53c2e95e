//! natt developer tooling behind `cargo xtask ...`: the NAT lab ([`lab`]) and the project's
//! test and CI tasks ([`tasks`]).
//!
//! The lab is a library too, so Rust tests build their topologies through it:
//! `let lab = xtask::lab::Lab::up("t1", "pair")?;` (root, inside `unshare --net`).

pub mod lab;
pub mod tasks;
