//! The `fleetpulse` binary: parse the command line, load the configuration, run the
//! chosen role(s), report how it ended.

mod app;
mod backtest;
mod bridge;
mod cli;
mod config;
#[cfg(test)]
mod config_fuzz;
mod datalock;
mod demo;
mod fdlimit;
mod predict;
mod report;

use std::process::ExitCode;

use clap::Parser;

/// Ingest builds large batches on one thread and frees them on another, which glibc's
/// per-thread arenas hold on to; with mimalloc the peak RSS of the 10 000-connection
/// benchmark went from 487 to 442 MiB (one run each, `docs/benchmarks.md`). mimalloc 2
/// (libmimalloc-sys' `v2`), not 3: in eight runs on 3 the peak ranged 290–368 MiB (memory
/// freed on one thread sometimes stayed resident to the end), in four on 2, 291–302 MiB.
/// Built without the `mimalloc` feature, the system allocator is used (for heap profilers).
#[cfg(feature = "mimalloc")]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// `mi_option_purge_delay` in mimalloc 2's `mi_option_t` (`include/mimalloc.h` of the
/// sources libmimalloc-sys 0.1.49 builds; its Rust bindings name no constant for it).
#[cfg(feature = "mimalloc")]
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// Hands memory that mimalloc freed back to the OS after 1 ms instead of its default
/// 10 ms. Ingest frees whole batches at once, every few milliseconds, and at 10 000
/// connections the delayed purges held 10–15 MiB of peak RSS on mimalloc 2 (benchmark
/// VmHWM 305–310 → 291–302 MiB) and 50–65 MiB on mimalloc 3, for about 15 % more CPU
/// per reading (the `madvise` calls; `docs/benchmarks.md`). `MIMALLOC_PURGE_DELAY` in
/// the environment still decides (10 gives the CPU back).
#[cfg(feature = "mimalloc")]
#[allow(unsafe_code)]
fn tune_allocator() {
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
        // SAFETY: `mi_option_set` takes an option id and a value and touches only
        // mimalloc's option table. It is not thread safe, so it runs first in `main`,
        // before the runtime or any other thread exists; 15 is the purge delay's id in
        // the bundled mimalloc (see `MI_OPTION_PURGE_DELAY`).
        unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, 1) };
    }
}

fn main() -> ExitCode {
    #[cfg(feature = "mimalloc")]
    tune_allocator();
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
