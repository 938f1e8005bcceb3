//! `runnel-bench`: see `runnel-bench --help` and crates/bench.

use clap::Parser;
use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = runnel_bench::Cli::parse();
    match runnel_bench::run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("runnel-bench: {e}");
            ExitCode::FAILURE
        }
    }
}
