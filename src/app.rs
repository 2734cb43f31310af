//! The application, assembled: the shared [`State`] built once from the validated config,
//! the start-up lines that say what is on and where, and the background work started with
//! it (the usage tally, the background scrub). `main.rs` calls these in order; `handler.rs` only reads the state.

use crate::access::Rules;
use crate::accesslog::AccessLog;
use crate::auth::Auth;
use crate::cli::{self, Config, LogTarget};
use crate::metrics::Metrics;
use crate::storage::inventory::Inventory;
use crate::storage::quota::Quota;
use crate::storage::repo::Repos;
use crate::storage::scrub::{self, ScrubStatus};
use crate::storage::upload::{self, Turns};
use crate::watch::Watched;
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// Who may do anything at all.
#[derive(Debug)]
pub(crate) enum AuthMode {
    /// `--no-auth`.
    Anonymous,
    /// `--proxy-auth-username HEADER`: a trusted reverse proxy names the user.
    ProxyHeader(String),
    /// HTTP Basic against the htpasswd file (boxed: users, cache and back-off table make it
    /// ten times the size of the other variants).
    Htpasswd(Box<Auth>),
}

/// Everything a request may need; built once at start-up and shared by reference.
#[derive(Debug)]
pub(crate) struct State {
    pub repos: Repos,
    pub authn: AuthMode,
    pub append_only: bool,
    pub private_repos: bool,
    /// `--access-file`: rights per user and repo, quotas per first path segment.
    pub access: Option<Watched<Rules>>,
    pub verify_upload: bool,
    /// `--max-size` or `--access-file`: usage is counted.
    pub quota: Option<Arc<Quota>>,
    pub access_log: Option<AccessLog>,
    /// `--prometheus`: counters, and `/metrics` is routed.
    pub metrics: Option<Metrics>,
    /// `--prometheus-no-auth`: `/metrics` needs no credentials.
    pub metrics_no_auth: bool,
    /// Turns to write a chunk of an upload (`storage/upload.rs`).
    pub uploads: Turns,
    /// Objects, bytes and snapshot times per repository (`storage/inventory.rs`).
    pub inventory: Arc<Inventory>,
    /// Not `--no-repo-metrics`.
    pub repo_metrics: bool,
    /// Not `--no-status-page`.
    pub status_page: bool,
    /// When the server started, for the status page's uptime.
    pub started: Instant,
    /// The TLS certificate's SHA-256 fingerprint, when TLS is on (shown on the status page);
    /// replaced when SIGHUP loads a new certificate.
    pub tls_fingerprint: Mutex<Option<String>>,
    /// `--scrub-every`: what the background scrub has found, for `/metrics` and status.
    pub scrub: Option<Arc<ScrubStatus>>,
}

impl State {
    /// Builds the state from a validated config. Errors name the file and the problem.
    pub(crate) fn new(cfg: &Config) -> Result<State, String> {
        let authn = if cfg.no_auth {
            AuthMode::Anonymous
        } else if let Some(header) = &cfg.proxy_auth_username {
            AuthMode::ProxyHeader(header.clone())
        } else {
            AuthMode::Htpasswd(Box::new(Auth::load(&cfg.htpasswd_file)?))
        };
        let access_log = match &cfg.log {
            None => None,
            Some(target) => {
                let path = match target {
                    LogTarget::Stdout => None,
                    LogTarget::File(p) => Some(p.clone()),
                };
                let log = AccessLog::open(path.clone()).map_err(|e| {
                    let name = path.map_or("standard output".into(), |p| p.display().to_string());
                    format!("cannot open access log {name}: {e}")
                })?;
                Some(log)
            }
        };
        let access = cfg.access_file.as_deref().map(Watched::open).transpose()?;
        let quota = (cfg.max_size.is_some() || access.is_some())
            .then(|| Quota::new(cfg.max_size, access.is_some()));
        Ok(State {
            repos: Repos::new(cfg.path.clone(), cfg.group_accessible),
            authn,
            append_only: cfg.append_only,
            private_repos: cfg.private_repos,
            access,
            verify_upload: cfg.verify_upload,
            quota,
            access_log,
            metrics: cfg.prometheus.then(Metrics::new),
            metrics_no_auth: cfg.prometheus_no_auth,
            uploads: Turns::new(upload::MAX_WRITERS),
            inventory: Arc::new(Inventory::default()),
            repo_metrics: cfg.repo_metrics,
            status_page: cfg.status_page,
            started: Instant::now(),
            tls_fingerprint: Mutex::new(None),
            scrub: cfg.scrub.map(|_| Arc::default()),
        })
    }

    /// SIGHUP: re-read what can change under a running server.
    pub(crate) fn reload(&self) {
        if let AuthMode::Htpasswd(auth) = &self.authn {
            auth.reload();
        }
        if let Some(access) = &self.access {
            access.reload();
        }
        if let Some(log) = &self.access_log {
            log.reopen();
        }
        // Repositories copied in or removed by hand.
        take_inventory(self);
    }
}

/// TLS as started, and the certificate's fingerprint (for the status page).
pub(crate) type StartedTls = (Option<Arc<crate::http::server::Tls>>, Option<String>);

/// `--tls`: generates the pair if asked, loads it and says what is on.
#[cfg(feature = "tls")]
pub(crate) fn start_tls(cfg: &Config) -> Result<StartedTls, String> {
    let Some(tls_cfg) = &cfg.tls else {
        return Ok((None, None));
    };
    let (tls, loaded) = crate::http::tls::Tls::start(tls_cfg)?;
    for line in tls.describe() {
        log::info!("{line}");
    }
    log::info!("SERVER CERT SHA256: {}", loaded.fingerprint);
    for w in loaded.warnings {
        log::warn!("{w}");
    }
    Ok((Some(Arc::new(tls)), Some(loaded.fingerprint)))
}

#[cfg(not(feature = "tls"))]
pub(crate) fn start_tls(_: &Config) -> Result<StartedTls, String> {
    Ok((None, None))
}

/// One start-up line per fact, as the Go server prints them.
pub(crate) fn announce(cfg: &Config, state: &State, open_files: &OpenFiles) {
    log::info!("{}", cli::VERSION);
    log::info!("Data directory: {}", cfg.path.display());
    match open_files {
        Ok((Some(now), Some(before))) => {
            log::info!("Open files: up to {now} (soft limit raised from {before})")
        }
        Ok((Some(now), None)) => log::info!("Open files: up to {now}"),
        Ok((None, _)) => log::info!("Open files: no limit"),
        Err(e) => log::warn!("cannot raise the limit on open files: {e}"),
    }
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
        use crate::watch::Load as _;
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
        if cfg.repo_metrics && who == "without authentication" {
            log::info!(
                "/metrics names every repository with its size and snapshot times; --no-repo-metrics leaves those series out"
            );
        }
        if cfg.no_auth && cfg.private_repos && !cfg.prometheus_no_auth {
            log::warn!(
                "--private-repos with --no-auth: /metrics answers 401 to everyone, as in the Go server (add --prometheus-no-auth)"
            );
        }
    } else if cfg.prometheus_no_auth {
        log::warn!("--prometheus-no-auth has no effect without --prometheus");
    }
    if cfg.status_page {
        log::info!("Status page at / for browsers (Accept: text/html), readable repositories only");
    }
    if cfg.prometheus && !cfg.repo_metrics {
        log::info!("Per-repository metrics disabled (--no-repo-metrics)");
    }
    if let Some(cli::LogTarget::File(p)) = &cfg.log {
        log::info!("Access log: {}", p.display());
    }
    if let Some(s) = &cfg.scrub {
        log::info!(
            "Scrub: every object re-read once per {} s at most at {} bytes/s, pausing for uploads (state in {})",
            s.every.as_secs(),
            s.max_rate,
            cfg.path.join(scrub::STATE_FILE).display()
        );
    }
    if cfg.cpu_profile_ignored {
        log::warn!("--cpu-profile is specific to the Go server and not supported: ignored");
    }
}

/// The limit on open files in force (`None`: unlimited) and, if it was raised, the one before.
pub(crate) type OpenFiles = std::io::Result<(Option<u64>, Option<u64>)>;

/// Raises the soft limit on open files to the hard limit, as the Go runtime does at the start
/// of the Go server (Go 1.19 and later). systemd starts services with a soft limit of 1024
/// (hard: 524288): about a thousand connections, idle ones included, would use it up, and
/// then every other client is refused and uploads cannot open their temp files.
pub(crate) fn raise_open_files_limit() -> OpenFiles {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let limit = getrlimit(Resource::Nofile);
    // An unlimited hard limit (not possible for open files on Linux, where fs.nr_open caps
    // it) is left alone rather than guessed at.
    let raise = matches!((limit.current, limit.maximum), (Some(soft), Some(hard)) if soft < hard);
    if !raise {
        return Ok((limit.current, None));
    }
    let raised = rustix::process::Rlimit {
        current: limit.maximum,
        maximum: limit.maximum,
    };
    setrlimit(Resource::Nofile, raised)?;
    Ok((limit.maximum, limit.current))
}

/// SIGHUP: walks the data directory again for the per-repository inventory (repositories
/// copied in or removed by hand), in the background. The quota is kept by uploads and deletes
/// and not counted again.
pub(crate) fn take_inventory(state: &State) {
    walk_data_dir(state, false);
}

/// At start-up: one walk of the data directory, in the background, for the per-repository
/// inventory and, with `--max-size` or `--access-file`, the usage (a big tree on a slow disk
/// takes a while; uploads that a limit applies to wait for it, everything else is served
/// meanwhile: storage/quota.rs, storage/inventory.rs).
pub(crate) fn count_usage(state: &State) {
    walk_data_dir(state, true);
}

fn walk_data_dir(state: &State, for_quota: bool) {
    let inv = state.inventory.clone();
    let quota = state.quota.clone().filter(|_| for_quota);
    let root = state.repos.root().to_owned();
    smol::unblock(move || {
        let t = Instant::now();
        let walked = inv.rewalk(&root);
        let ms = t.elapsed().as_millis();
        let n = inv.len();
        log::info!("Inventory: {n} repositories (counted in {ms} ms)");
        if let Some(q) = quota {
            let used = walked.total;
            q.add_tally(walked.total, walked.segments);
            match q.limit() {
                Some(limit) => {
                    log::info!("Quota: {used} of {limit} bytes used (counted in {ms} ms)")
                }
                None => log::info!("Usage: {used} bytes (counted in {ms} ms)"),
            }
        }
    })
    .detach();
}

/// `--scrub-every`: starts the background scrub on a thread of its own. It reads at normal
/// I/O priority: the idle class needs ioprio_set(2), which neither std nor rustix wraps, and
/// we write no unsafe code; the rate limit and the pause for uploads keep it out of the way
/// (README, "Checking for bit rot").
pub(crate) fn start_scrub(cfg: &Config, state: &State) {
    let (Some(schedule), Some(status)) = (cfg.scrub, &state.scrub) else {
        return;
    };
    scrub::spawn_background(
        state.repos.root().to_owned(),
        schedule,
        state.repos.uploads_open_counter(),
        status.clone(),
        state.repos.file_mode(),
    );
}
