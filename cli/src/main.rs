//! The `pgstream` command: parse, resolve settings, call backup-core, print, exit codes.

// First: its print!/println!/eprint!/eprintln! shadow std's in every module after it.
#[macro_use]
mod stdout;

mod args;
mod cmd;
mod core_dumps;
mod exit;
mod progress;
mod signals;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    // Before anything that may read a passphrase or unwrap the data key.
    let core_dumps = core_dumps::disable();
    let cli = match args::Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            // --help and --version go to stdout, which may be a closed pipe.
            if let Err(io) = e.print() {
                if !e.use_stderr() && stdout::is_closed_pipe(&io) {
                    return ExitCode::from(stdout::CLOSED_PIPE);
                }
            }
            return if e.use_stderr() {
                exit::Failure::Usage.code()
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    init_logging(&cli.log_level);
    if let Err((step, e)) = core_dumps {
        // Lowering a limit and clearing the flag are always allowed; should either fail, say so.
        tracing::warn!(
            "could not disable core dumps ({step}: {e}); a crash could write key material to disk"
        );
    }
    // Only a binary built with the `failpoints` feature (the test suite's) has any.
    if let Err(e) = backup_core::failpoint::configure_from_env() {
        eprintln!("pgstream: error: {e}");
        return exit::Failure::Usage.code();
    }
    // receive-wal is one stream, one write and fsync per batch: on a single-threaded runtime
    // the thread that waits in epoll is the one that writes, fsyncs and replies, with no
    // wake-up of a second thread per message. In synchronous mode that round trip is what
    // every commit on the server waits for. Everything else uses the worker pool.
    let mut builder = match &cli.command {
        args::Command::ReceiveWal(_) => tokio::runtime::Builder::new_current_thread(),
        _ => tokio::runtime::Builder::new_multi_thread(),
    };
    let runtime = match builder.enable_all().thread_name("pgstream").build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("pgstream: error: starting the async runtime: {e}");
            return exit::Failure::Other.code();
        }
    };
    match runtime.block_on(cmd::run(cli.command)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let failure = exit::classify(&e);
            eprintln!("pgstream: error: {}", exit::message(&e));
            failure.code()
        }
    }
}

/// Logs go to stderr, so stdout carries only results (`--json`).
fn init_logging(level: &str) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_new(level).unwrap_or_else(|_| EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .init();
}
