//! nodus: run a Docker dev stack without ever losing data silently.

pub mod cli;
pub mod commands;
pub mod engine;
pub mod error;
pub mod guard;
pub mod labels;
pub mod lifecycle;
pub mod output;
pub mod persistence;
pub mod project;
pub mod snapshot;
pub mod stack;
pub mod state;
pub mod templates;

use std::process::ExitCode;

use clap::Parser;

/// Entry point used by `main.rs`.
pub fn run() -> ExitCode {
    let cli = match cli::Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let code = if e.use_stderr() {
                error::EXIT_USAGE
            } else {
                error::EXIT_OK
            };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    let g = &cli.global;
    let ui = output::Ui::new(g.json, g.quiet, g.verbose, g.yes);
    init_tracing(g.verbose);
    // One runtime thread: nodus' async work is I/O (engine streams, database connections) and
    // its CPU-heavy work (compression, hashing) runs on blocking threads. A multi-threaded
    // runtime made receiving an archive ~3x more CPU-expensive (its workers woke each other
    // for every socket read), CPU that snapshot compression needs (scripts/bench-snapshot.sh).
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            ui.error(format!("cannot start the async runtime: {e}"));
            return ExitCode::from(error::EXIT_ERROR);
        }
    };
    match runtime.block_on(commands::dispatch(cli, ui.clone())) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => error::report(&e, &ui),
    }
}

fn init_tracing(verbose: u8) {
    let default = match verbose {
        0 | 1 => "warn",
        2 => "nodus=debug",
        _ => "debug",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("NODUS_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .without_time()
        .try_init();
}
