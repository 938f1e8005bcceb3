//! `runnel`: the broker. Flags are documented by `runnel --help` (crates/server/src/config.rs).

use clap::Parser;
use std::process::ExitCode;

fn main() -> ExitCode {
    // Before any thread starts (see the module for why).
    runnel_runtime::alloc::keep_freed_memory();
    // clap exits with code 2 and a message on a bad flag.
    let config = runnel_server::Config::parse();
    if let Err(e) = config.validate() {
        use clap::CommandFactory;
        runnel_server::Config::command()
            .error(clap::error::ErrorKind::ArgumentConflict, e)
            .exit();
    }
    let level: tracing::Level = config.log_level.parse().unwrap_or(tracing::Level::INFO);
    tracing_subscriber::fmt()
        .with_max_level(level)
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .init();
    // A panic is a bug (bad input must get an error code or a logged close): stop the whole
    // broker at once, loudly, with where and why, rather than let one shard die and the
    // others serve on with half the partitions. Recovery at the next start is the same as
    // after a crash.
    std::panic::set_hook(Box::new(|info| {
        let thread = std::thread::current();
        let name = thread.name().unwrap_or("unnamed");
        let backtrace = std::backtrace::Backtrace::force_capture();
        tracing::error!("panicked on thread {name}: {info}\n{backtrace}");
        eprintln!("runnel: panicked on thread {name}: {info}; aborting");
        std::process::abort();
    }));
    match runnel_server::run(config) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e}");
            eprintln!("runnel: {e}");
            ExitCode::FAILURE
        }
    }
}
