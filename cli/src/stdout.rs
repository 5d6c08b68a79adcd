//! Standard output that a closed reader cannot turn into a panic.
//!
//! std's `print!`/`println!` panic when the write fails, and since Rust ignores SIGPIPE a reader
//! that went away (`pgstream list | head`) is such a failure (EPIPE). Here a closed stdout ends
//! the process quietly with [`CLOSED_PIPE`], the status a shell reports for `ls` killed by
//! SIGPIPE in `ls | head` (under `set -o pipefail`); it is not 0 because a command's outcome
//! (a failed `verify` or `drill`) must not read as success when its report could not be
//! written. Another write error ends it with the local I/O exit code. Failing writes to stderr
//! are ignored: diagnostics are not worth stopping a backup for.
//!
//! The macros below shadow std's `print!`, `println!`, `eprint!` and `eprintln!` in every module
//! of this crate (they are declared before the others in main.rs), so output added later is
//! covered without anyone having to remember.

use std::io::{self, Write};

/// The exit code when stdout's reader has gone away: 128 + SIGPIPE (docs/cli.md).
pub const CLOSED_PIPE: u8 = 141;

/// Writes `args` (and a newline when `newline`) to stdout; see the module documentation.
pub fn print(args: std::fmt::Arguments<'_>, newline: bool) {
    let mut out = io::stdout().lock();
    let written = out.write_fmt(args).and_then(|()| {
        if newline {
            out.write_all(b"\n")
        } else {
            Ok(())
        }
    });
    if let Err(e) = written {
        failed(&e);
    }
}

/// Writes `args` (and a newline when `newline`) to stderr, ignoring failures.
pub fn eprint(args: std::fmt::Arguments<'_>, newline: bool) {
    let mut err = io::stderr().lock();
    let _ = err.write_fmt(args);
    if newline {
        let _ = err.write_all(b"\n");
    }
}

/// Whether a failed write to stdout means its reader has gone away.
pub fn is_closed_pipe(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::BrokenPipe
}

fn failed(e: &io::Error) -> ! {
    if is_closed_pipe(e) {
        std::process::exit(i32::from(CLOSED_PIPE));
    }
    eprint(
        format_args!("pgstream: error: writing to standard output: {e}"),
        true,
    );
    std::process::exit(crate::exit::Failure::LocalIo as i32);
}

macro_rules! print {
    ($($arg:tt)*) => {
        $crate::stdout::print(format_args!($($arg)*), false)
    };
}

macro_rules! println {
    () => {
        $crate::stdout::print(format_args!(""), true)
    };
    ($($arg:tt)*) => {
        $crate::stdout::print(format_args!($($arg)*), true)
    };
}

// No `eprint!` in the crate today; defined so that one added later is covered too.
#[allow(unused_macros)]
macro_rules! eprint {
    ($($arg:tt)*) => {
        $crate::stdout::eprint(format_args!($($arg)*), false)
    };
}

macro_rules! eprintln {
    () => {
        $crate::stdout::eprint(format_args!(""), true)
    };
    ($($arg:tt)*) => {
        $crate::stdout::eprint(format_args!($($arg)*), true)
    };
}
