//! What the subcommands, `--help` and `--version` print: `outln!`/`out!` to stdout and
//! `errln!` to stderr, like `println!`/`print!`/`eprintln!` except when the other end is
//! gone. The std macros panic then, and a panic aborts this program: `rest-server user list
//! | head -1` would end in a panic message and SIGABRT. Here a closed stdout ends the command
//! with status 141 (128 + SIGPIPE, as a shell reports a C tool killed by SIGPIPE) and says
//! nothing; another write error (a full disk behind a redirect) ends it with status 1 and
//! one line on stderr; a closed stderr drops the line.

use std::io::{self, Write as _};

/// `println!` to stdout, ending the command if stdout is gone (see the module doc).
macro_rules! outln {
    () => {
        $crate::output::to_stdout(format_args!("\n"))
    };
    ($($arg:tt)*) => {
        $crate::output::to_stdout(format_args!("{}\n", format_args!($($arg)*)))
    };
}

/// `print!` to stdout, ending the command if stdout is gone (see the module doc).
macro_rules! out {
    ($($arg:tt)*) => {
        $crate::output::to_stdout(format_args!($($arg)*))
    };
}

/// `eprintln!` that drops the line if stderr is gone (see the module doc).
macro_rules! errln {
    ($($arg:tt)*) => {
        $crate::output::to_stderr(format_args!("{}\n", format_args!($($arg)*)))
    };
}

pub(crate) fn to_stdout(args: std::fmt::Arguments<'_>) {
    let mut stdout = io::stdout().lock();
    if let Err(e) = stdout.write_fmt(args).and_then(|()| stdout.flush()) {
        if e.kind() == io::ErrorKind::BrokenPipe {
            std::process::exit(141);
        }
        to_stderr(format_args!("rest-server: cannot write the output: {e}\n"));
        std::process::exit(1);
    }
}

pub(crate) fn to_stderr(args: std::fmt::Arguments<'_>) {
    let _ = io::stderr().lock().write_fmt(args);
}
