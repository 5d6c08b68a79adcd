//! The `pgstream` command: parse, resolve settings, call backup-core, print, exit codes.

// First: its print!/println!/eprint!/eprintln! shadow std's in every module after it.
#[macro_use]
mod stdout;

mod args;
mod cmd;
mod config;
mod core_dumps;
mod exit;
mod logging;
mod metrics;
mod progress;
mod signals;
mod suggest;

use std::ffi::OsString;
use std::process::ExitCode;

use clap::{CommandFactory as _, FromArgMatches as _};

fn main() -> ExitCode {
    // Before anything that may read a passphrase or unwrap the data key.
    let core_dumps = core_dumps::disable();
    let argv: Vec<OsString> = std::env::args_os().collect();
    // The configuration file decides the parser's defaults, so it is read first; a bad file
    // stops every command, naming the file, line and key.
    let loaded = match config::load(config::Selection::from_args(&argv)) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("pgstream: error: {e}");
            return exit::Failure::Usage.code();
        }
    };
    let command = match config::apply(args::Cli::command(), &loaded) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("pgstream: error: {e}");
            return exit::Failure::Usage.code();
        }
    };
    let parsed = command
        .try_get_matches_from(&argv)
        .and_then(|m| args::Cli::from_arg_matches(&m).map(|cli| (m, cli)));
    let (matches, cli) = match parsed {
        Ok(p) => p,
        Err(e) => {
            let e = suggest::other_tools(e);
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
    logging::init(&cli.log_level, cli.log_format);
    if let Some(file) = &cli.s3_credentials_file {
        backup_core::store::s3::settings::set_credentials_file(file.clone());
    }
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
    if let args::Command::Config(args::ConfigCommand::Show) = &cli.command {
        print!("{}", config::show::render(&matches, &loaded));
        return ExitCode::SUCCESS;
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
            logging::final_error(&exit::message(&e), exit::hint(&e), failure as u8);
            failure.code()
        }
    }
}
