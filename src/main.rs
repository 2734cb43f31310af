//! rest-server: a drop-in for restic's REST server, for small machines.
//!
//! The process, start to end: parse the command line (exit 2 on a bad one), set up logging,
//! build the shared state, say what is on, serve until SIGINT/SIGTERM. Read on in
//! `http/server.rs` -> `handler.rs` -> `storage/repo.rs` / `storage/upload.rs` to see the whole server.

#![forbid(unsafe_code)]

// First: its macros (outln!, out!, errln!) are for the modules below.
#[macro_use]
mod output;

mod access;
mod accesslog;
mod app;
mod auth;
mod cli;
mod cmd;
mod counted;
mod error;
mod handler;
mod http;
mod lock;
mod logging;
mod metrics;
mod modes;
mod page;
mod route;
mod storage;
mod utc;
mod watch;

use app::State;
use cli::{Command, EXIT_USAGE};
use std::process::ExitCode;
use std::sync::Arc;

fn main() -> ExitCode {
    let cfg = match cli::parse(std::env::args_os().skip(1)) {
        Ok(Command::Serve(cfg)) => cfg,
        Ok(Command::User(cmd)) => return cmd::user::run(&cmd),
        Ok(Command::Status(cmd)) => return cmd::status::run(&cmd),
        Ok(Command::Scrub(cmd)) => return cmd::scrub::run(&cmd),
        Ok(Command::AccessCheck { file, user, repo }) => {
            return access::check_command(&file, &user, &repo);
        }
        Ok(Command::Help) => {
            out!("{}", cli::HELP);
            return ExitCode::SUCCESS;
        }
        Ok(Command::Version) => {
            outln!("{}", cli::VERSION);
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            logging::say(&e.to_string());
            return ExitCode::from(EXIT_USAGE);
        }
    };
    let level = if cfg.debug {
        log::LevelFilter::Debug
    } else {
        log::LevelFilter::Info
    };
    // Only our own messages at debug level; the libraries' tracing is noise. Lines carry
    // their syslog priority when stderr is the journal (logging.rs).
    if logging::init(level).is_err() {
        logging::say("cannot set up logging");
        return ExitCode::FAILURE;
    }
    // TLS before the state: a missing, unreadable or mismatched certificate or key is a
    // configuration error (exit 2), found before anything is written (but the pair that
    // --tls-generate-cert was asked to write).
    if let Err(e) = http::server::check_listen(&cfg.listen) {
        logging::say(&e.to_string());
        return ExitCode::from(EXIT_USAGE);
    }
    let open_files = app::raise_open_files_limit();
    let (tls, fingerprint) = match app::start_tls(&cfg) {
        Ok(started) => started,
        Err(e) => {
            logging::say(&e.to_string());
            return ExitCode::from(EXIT_USAGE);
        }
    };
    let state = match State::new(&cfg) {
        Ok(mut s) => {
            s.tls_fingerprint = fingerprint.into();
            Arc::new(s)
        }
        Err(e) => {
            log::error!("{e}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    if let Err(e) = state.repos.create_root() {
        log::error!("cannot create data directory {}: {e}", cfg.path.display());
        return ExitCode::FAILURE;
    }
    app::announce(&cfg, &state, &open_files);
    app::count_usage(&state);
    app::start_scrub(&cfg, &state);
    match http::server::run(&cfg, state, tls) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            log::error!("{e}");
            ExitCode::FAILURE
        }
    }
}
