//! natt developer tooling behind `cargo xtask ...`: the NAT lab ([`lab`]), the project's
//! test and CI tasks ([`tasks`]), the demo ([`demo`]), fuzzing ([`fuzz`]) and the benchmarks
//! ([`mod@bench`]).
//!
//! The lab is a library too, so Rust tests build their topologies through it:
//! `let lab = xtask::lab::Lab::up("t1", "pair")?;` (root, inside `unshare --net`).

pub mod bench;
pub mod demo;
pub mod fuzz;
pub mod lab;
pub mod tasks;
