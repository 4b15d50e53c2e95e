//! `natt`: the command-line tool. Maps sockets through NATs, serves the simple hole-punch
//! protocol and STUN, probes the network in front of a host, and punches holes between peers.
//!
//! Exit status 0 on success; on failure, non-zero with one line on stderr. `RUST_LOG` enables
//! logs (for example `RUST_LOG=debug`).

mod args;
mod context;
mod map;
mod output;
mod probe;
mod punch;
mod relay;
mod serve;
mod simple_on_stun;
mod stop;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn"))
        .format_timestamp_millis()
        .init();
    let cli = args::Cli::parse();
    let result = match cli.command {
        args::Command::Serve(a) => serve::run(&a),
        args::Command::Map(a) => map::run(&a),
        args::Command::Probe(a) => probe::run(&a),
        args::Command::Punch(a) => punch::run(&a),
        args::Command::Relay(a) => relay::run(&a),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("natt: {e}");
            ExitCode::FAILURE
        }
    }
}
