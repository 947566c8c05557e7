//! The `fleetpulse` binary: parse the command line, load the configuration, run the
//! chosen role(s), report how it ended.

mod app;
mod bridge;
mod cli;
mod config;
mod predict;
mod report;

use std::process::ExitCode;

use clap::Parser;

/// Ingest builds large batches on one thread and frees them on another, which glibc's
/// per-thread arenas hold on to; with mimalloc the peak RSS of the 10 000-connection
/// benchmark went from 487 to 442 MiB (one run each, `docs/benchmarks.md`).
/// Built without the `mimalloc` feature, the system allocator is used (for heap profilers).
#[cfg(feature = "mimalloc")]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    // One crypto provider for the process, before anything builds a TLS configuration.
    // fleetpulse's own configurations name ring explicitly; this covers library code that
    // asks rustls for the process default (which panics when a second provider, e.g.
    // aws-lc-rs, is compiled in and none was installed). An error only means one is
    // installed already.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let cli = cli::Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("fleetpulse: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(app::run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("fleetpulse: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
