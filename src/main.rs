//! rest-server: a drop-in for restic's REST server, for small machines.
//!
//! The process, start to end: parse the command line (exit 2 on a bad one), set up logging,
//! build the shared state, say what is on, serve until SIGINT/SIGTERM. Read on in
//! `http/server.rs` -> `handler.rs` -> `storage/repo.rs` / `storage/upload.rs` to see the whole server.

#![forbid(unsafe_code)]

mod access;
mod accesslog;
mod auth;
mod cli;
mod cmd;
mod error;
mod handler;
mod http;
mod lock;
mod logging;
mod metrics;
mod modes;
mod route;
mod storage;
mod watch;

use cli::{Command, Config, EXIT_USAGE};
use handler::{AuthMode, State};
use std::process::ExitCode;
use std::sync::Arc;

fn main() -> ExitCode {
    let cfg = match cli::parse(std::env::args_os().skip(1)) {
        Ok(Command::Serve(cfg)) => cfg,
        Ok(Command::User(cmd)) => return cmd::user::run(&cmd),
        Ok(Command::AccessCheck { file, user, repo }) => {
            return access::check_command(&file, &user, &repo);
        }
        Ok(Command::Help) => {
            print!("{}", cli::HELP);
            return ExitCode::SUCCESS;
        }
        Ok(Command::Version) => {
            println!("{}", cli::VERSION);
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("rest-server: {e}");
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
        eprintln!("rest-server: cannot set up logging");
        return ExitCode::FAILURE;
    }
    // TLS before the state: a missing, unreadable or mismatched certificate or key is a
    // configuration error (exit 2), found before anything is written (but the pair that
    // --tls-generate-cert was asked to write).
    if let Err(e) = http::server::check_listen(&cfg.listen) {
        eprintln!("rest-server: {e}");
        return ExitCode::from(EXIT_USAGE);
    }
    let tls = match start_tls(&cfg) {
        Ok(tls) => tls,
        Err(e) => {
            eprintln!("rest-server: {e}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    let state = match State::new(&cfg) {
        Ok(s) => Arc::new(s),
        Err(e) => {
            log::error!("{e}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    if let Err(e) = state.repos.create_root() {
        log::error!("cannot create data directory {}: {e}", cfg.path.display());
        return ExitCode::FAILURE;
    }
    announce(&cfg, &state);
    match http::server::run(&cfg, state, tls) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            log::error!("{e}");
            ExitCode::FAILURE
        }
    }
}

/// `--tls`: generates the pair if asked, loads it and says what is on.
#[cfg(feature = "tls")]
fn start_tls(cfg: &Config) -> Result<Option<Arc<http::server::Tls>>, String> {
    let Some(tls_cfg) = &cfg.tls else {
        return Ok(None);
    };
    let (tls, loaded) = http::tls::Tls::start(tls_cfg)?;
    for line in tls.describe() {
        log::info!("{line}");
    }
    log::info!("SERVER CERT SHA256: {}", loaded.fingerprint);
    for w in loaded.warnings {
        log::warn!("{w}");
    }
    Ok(Some(Arc::new(tls)))
}

#[cfg(not(feature = "tls"))]
fn start_tls(_: &Config) -> Result<Option<Arc<http::server::Tls>>, String> {
    Ok(None)
}

/// One start-up line per fact, as the Go server prints them.
fn announce(cfg: &Config, state: &State) {
    log::info!("{}", cli::VERSION);
    log::info!("Data directory: {}", cfg.path.display());
    if cfg.path.starts_with("/tmp") {
        log::warn!(
            "the data directory is under /tmp: backups there may be lost on reboot (use --path)"
        );
    }
    match &state.authn {
        AuthMode::Anonymous => log::info!("Authentication disabled"),
        AuthMode::ProxyHeader(h) => log::info!("Authentication via proxy header {h}"),
        AuthMode::Htpasswd(a) => log::info!(
            "Authentication enabled: {} ({} users)",
            a.path().display(),
            a.user_count()
        ),
    }
    let on_off = |b: bool| if b { "enabled" } else { "disabled" };
    log::info!("Append only mode {}", on_off(cfg.append_only));
    log::info!("Private repositories {}", on_off(cfg.private_repos));
    log::info!("Group accessible repos {}", on_off(cfg.group_accessible));
    if let Some(access) = &state.access {
        use watch::Load as _;
        log::info!(
            "Access file: {} ({})",
            access.path().display(),
            access.get().summary()
        );
        if cfg.no_auth {
            log::warn!("--access-file with --no-auth: only the \"*\" entries apply, to everyone");
        }
    }
    if !cfg.verify_upload {
        log::warn!("Upload verification disabled: corrupted uploads will not be detected");
    }
    let per_segment = if state.access.is_some() {
        "; per first path segment as the access file says"
    } else {
        ""
    };
    match cfg.max_size {
        Some(limit) => log::info!(
            "Quota: {limit} bytes overall{per_segment}; counting current usage in the background"
        ),
        None => log::info!("Quota: none overall{per_segment}"),
    }
    if cfg.prometheus {
        let who = if cfg.prometheus_no_auth || (cfg.no_auth && !cfg.private_repos) {
            "without authentication"
        } else if cfg.private_repos {
            "for the user \"metrics\" only"
        } else {
            "for authenticated users"
        };
        log::info!("Prometheus metrics at /metrics, {who}");
        if cfg.no_auth && cfg.private_repos && !cfg.prometheus_no_auth {
            log::warn!(
                "--private-repos with --no-auth: /metrics answers 401 to everyone, as in the Go server (add --prometheus-no-auth)"
            );
        }
    } else if cfg.prometheus_no_auth {
        log::warn!("--prometheus-no-auth has no effect without --prometheus");
    }
    if let Some(cli::LogTarget::File(p)) = &cfg.log {
        log::info!("Access log: {}", p.display());
    }
    if cfg.cpu_profile_ignored {
        log::warn!("--cpu-profile is specific to the Go server and not supported: ignored");
    }
}
