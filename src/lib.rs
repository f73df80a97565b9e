//! nodus: run a Docker dev stack without ever losing data silently.

pub mod adopt;
pub mod build;
pub mod cli;
pub mod commands;
pub mod doctor;
pub mod engine;
pub mod error;
pub mod guard;
pub mod import;
pub mod interrupt;
pub mod labels;
pub mod lifecycle;
pub mod output;
pub mod persistence;
pub mod project;
pub mod session;
pub mod snapshot;
pub mod stack;
pub mod state;
pub mod table;
pub mod templates;
pub mod timing;
pub mod watch;

use std::process::ExitCode;

use clap::Parser;

/// Entry point used by `main.rs`.
pub fn run() -> ExitCode {
    let cli = match cli::Cli::try_parse_from(compose_argv(std::env::args_os().collect())) {
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
    // A command races SIGINT/SIGTERM: when a signal wins, the command's future is dropped (its
    // destructors remove unfinished snapshots) and the user is told what was left. Commands that
    // handle Ctrl-C themselves (`watch` leaves the stack running, `test-persistence
    // --ephemeral` cleans up, `logs -f` ends cleanly, interactive sessions pass it on) are not raced.
    let own_signals = matches!(
        cli.command,
        cli::Command::Watch(_)
            | cli::Command::TestPersistence(_)
            | cli::Command::Logs(_)
            | cli::Command::Exec(_)
            | cli::Command::Run(_)
            | cli::Command::Psql(_)
            | cli::Command::RedisCli(_)
    );
    let outcome = runtime.block_on(async {
        if own_signals {
            return Ok(commands::dispatch(cli, ui.clone()).await);
        }
        let outcome = tokio::select! {
            r = commands::dispatch(cli, ui.clone()) => Ok(r),
            sig = interrupt::wait(ui.clone()) => Err(sig),
        };
        match outcome {
            Ok(r) => Ok(r),
            Err(sig) => Err(interrupt::report(sig, &ui, &interrupt::command_line()).await),
        }
    });
    match outcome {
        Ok(Ok(())) => ExitCode::SUCCESS,
        Ok(Err(e)) => error::report(&e, &ui),
        Err(code) => ExitCode::from(code),
    }
}

/// Global flags that take a value (to find the subcommand in argv).
const GLOBAL_VALUE_FLAGS: &[&str] = &[
    "-f",
    "--stack",
    "-p",
    "--project-name",
    "--state-dir",
    "--lock-timeout",
];

/// compose's `logs -f` means follow while nodus' global `-f` names the stack file: after the
/// `logs` subcommand, `-f` is rewritten to `--follow` (before it, `-f FILE` is the stack file, as
/// with `docker compose -f FILE logs -f`).
pub fn compose_argv(args: Vec<std::ffi::OsString>) -> Vec<std::ffi::OsString> {
    let mut i = 1;
    while i < args.len() {
        let a = args[i].to_string_lossy();
        if a == "--" {
            return args;
        }
        if GLOBAL_VALUE_FLAGS.contains(&a.as_ref()) {
            i += 2;
            continue;
        }
        if a.starts_with('-') {
            i += 1;
            continue;
        }
        if a != "logs" {
            return args;
        }
        break;
    }
    let mut out = Vec::with_capacity(args.len() + 1);
    let mut rewriting = false;
    for (n, arg) in args.into_iter().enumerate() {
        if n == i {
            rewriting = true;
            out.push(arg);
            continue;
        }
        if !rewriting {
            out.push(arg);
            continue;
        }
        if arg == "--" {
            rewriting = false;
            out.push(arg);
            continue;
        }
        match arg.to_str() {
            Some("-f") => out.push("--follow".into()),
            // Combined short flags: -ft, -tf.
            Some("-ft") | Some("-tf") => {
                out.push("--follow".into());
                out.push("-t".into());
            }
            _ => out.push(arg),
        }
    }
    out
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
        // Colour codes only for a terminal (and never with NO_COLOR): logs redirected to a
        // file or read by a program stay plain text.
        .with_ansi(
            std::io::IsTerminal::is_terminal(&std::io::stderr())
                && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty()),
        )
        .without_time()
        .try_init();
}
