//! Command line -> validated [`Config`] (plain data), plus the `--help` and version texts,
//! and the one lexer ([`lex`]) that the server and every subcommand parse with.
//!
//! Go's flag parser (pflag) accepts `--flag value`, `--flag=value` and, for booleans,
//! `--flag=true|false` (any `strconv.ParseBool` form); existing systemd units use all three.
//! Each command describes itself as a [`Grammar`] (its flag table, short forms, whether it
//! takes words); the same tables drive the tests that each `--help` lists every flag.
//! `lexopt` was the alternative: its `optional_value()` handles `--flag=false`, but we would
//! still need the tables (for the help tests and the "takes a value" decision), so the
//! ~100-line lexer below stays smaller than lexopt plus glue, with no dependency.
//!
//! Nothing here opens a file, binds or logs: a bad command line must exit 2 before anything
//! touches the disk.

use std::ffi::OsString;
use std::path::PathBuf;

/// `--path` when not given, as in the Go server (also for `rest-server user`).
pub(crate) const DEFAULT_PATH: &str = "/tmp/restic";

/// Exit status for a command line or configuration that cannot work (as Go's flag package),
/// for the server and every subcommand.
pub(crate) const EXIT_USAGE: u8 = 2;
const DEFAULT_LISTEN: &str = ":8000";

/// `--scrub-rate` when not given. A month-long pass over 1 TB needs 0.39 MiB/s; 1 MiB/s
/// finishes it in ~12 days even if uploads pause it half the time, and is 1-3 % of what a
/// USB hard disk on a Raspberry Pi 4 reads (30-100 MB/s), so a backup never waits for it.
const DEFAULT_SCRUB_RATE: u64 = 1 << 20;

pub(crate) const VERSION: &str = concat!("rest-server ", env!("CARGO_PKG_VERSION"), " (Rust)");

pub(crate) const HELP: &str = "\
Run a REST server for use with restic.

Usage: rest-server [flags]

Storage:
      --path DIR                  data directory (default \"/tmp/restic\")
      --max-size SIZE             maximum total size of all repositories, e.g. 500GiB, 2TB or
                                  plain bytes (K/M/G/T = powers of 1000, Ki/Mi/Gi/Ti = 1024;
                                  default 0 = unlimited)
      --append-only               no deleting or overwriting: only locks may be deleted
      --no-verify-upload          do not check that an upload hashes to its id (only for very
                                  slow CPUs; SHA-256 here runs at disk speed on a Pi 4)
      --group-accessible-repos    create files 0660 and directories 0770 instead of 0600/0700

Network:
      --listen ADDR               listen address: host:port, :port (all interfaces),
                                  [::1]:port, or unix:/path/to.sock (default \":8000\");
                                  with systemd socket activation (LISTEN_FDS) the passed
                                  socket is used instead

Authentication:
      --htpasswd-file FILE        htpasswd file (default \"<path>/.htpasswd\"); bcrypt
                                  (htpasswd -B), $apr1$ (-m), $5$ (-2), $6$ (-5) and {SHA}
                                  (-s) entries; reloaded when it changes (checked every
                                  30 s) and on SIGHUP. Repeated failed logins from one
                                  address are answered with growing delays (up to 5 s)
      --no-auth                   disable authentication: everyone may do everything
      --proxy-auth-username HDR   take the username from request header HDR, set by a
                                  trusted reverse proxy (basic auth is then off)
      --private-repos             users may only access repositories under /<username>/
      --access-file FILE          rights per user and repository (r, a, w) and quotas per
                                  first path segment; reloaded when it changes (checked
                                  every 30 s) and on SIGHUP. See README \"Access rules\"

TLS (HTTPS):
      --tls                       serve HTTPS instead of HTTP
      --tls-cert FILE             certificate in PEM, may be followed by its chain
                                  (default \"<path>/public_key\")
      --tls-key FILE              private key in PEM (default \"<path>/private_key\")
      --tls-min-ver VERSION       oldest TLS version accepted: 1.2 or 1.3 (default \"1.2\")
      --tls-generate-cert         if neither --tls-cert nor --tls-key exists, create a
                                  self-signed certificate (ECDSA P-256, valid 10 years) and
                                  key (mode 0600) there; existing files are never overwritten.
                                  Give the certificate to restic with --cacert
      --tls-hostname NAME         DNS name or IP address the generated certificate is valid
                                  for; repeat for several (default: this machine's hostname,
                                  localhost, 127.0.0.1 and ::1)
      --tls-prefer-chacha20       prefer ChaCha20-Poly1305 over AES-GCM even though this CPU
                                  has AES instructions (automatic on CPUs without them, such
                                  as the Raspberry Pi 4 and older)

Users (no Apache htpasswd needed; see rest-server user --help):
  rest-server user add NAME       add a user or change its password (bcrypt; asks on the
                                  terminal, or --password-stdin; --cost N, default 10)
  rest-server user remove NAME    remove a user
  rest-server user list           list users and their hash formats
  rest-server user check NAME     check a password: exit 0 if right, 1 if not
                                  (all take --path DIR or --htpasswd-file FILE)

Access rules:
  rest-server access check USER REPO --access-file FILE
                                  print the rights USER has on REPO (e.g. alice/laptop, or
                                  / for the root) and the line that grants them; exit 0 if
                                  any, 1 if none, 2 if the file has an error

Scrubbing (re-reading stored objects to find bit rot; see README \"Checking for bit rot\"):
      --scrub-every DURATION      check every object once per DURATION in the background,
                                  e.g. 30d, 12h (default: off); the position survives
                                  restarts, reads pause while an upload is written
      --scrub-rate RATE           read at most RATE per second while scrubbing (with
                                  --scrub-every; default 1MiB/s: 1 TB in ~12 days)
  rest-server scrub [REPO...]     check now and exit: 0 intact, 1 damage, 2 usage error
                                  (see rest-server scrub --help)

Logging:
      --log FILE                  write an access log in combined log format to FILE
                                  (\"-\" = standard output); reopened on SIGHUP
      --debug                     log every request and more detail

Metrics:
      --prometheus                serve Prometheus metrics at /metrics (needs authentication;
                                  with --private-repos only the user \"metrics\" may read it)
      --prometheus-no-auth        serve /metrics without authentication
      --no-repo-metrics           leave the per-repository series (objects, bytes,
                                  snapshots, newest snapshot time) out of /metrics

Status:
      --no-status-page            GET / from a browser answers 404 as usual instead of the
                                  status page of the repositories the user may read
  rest-server status --path DIR   one line per repository: size, objects, snapshots, age of
                                  the newest snapshot, quota used; --json, --stale 26h (exit 1
                                  naming the repositories whose newest snapshot is older),
                                  --access-file FILE, --max-size SIZE (see status --help)

Other:
      --cpu-profile FILE          accepted for compatibility with the Go server; ignored
  -h, --help                      show this help
  -V, --version                   show the version

Flags take their value as --flag VALUE or --flag=VALUE; boolean flags also accept
--flag=true / --flag=false.

Signals: SIGHUP reloads the htpasswd file, the access file and the TLS certificate and key,
reopens the --log file and counts the repositories again (picks up ones copied in or removed
by hand); SIGINT and SIGTERM stop accepting connections, let requests in flight finish and
exit.
";

/// Where to listen.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Listen {
    /// `host:port` (host may be empty: all interfaces).
    Tcp(String),
    Unix(PathBuf),
}

/// Where the access log goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum LogTarget {
    Stdout,
    File(PathBuf),
}

/// Oldest TLS version a client may use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum TlsVersion {
    V1_2,
    V1_3,
}

/// `--tls` and its companions, checked for consistency (the files are read at start-up).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct TlsConfig {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub min_version: TlsVersion,
    /// `--tls-generate-cert`: create a self-signed pair if neither file exists.
    pub generate: bool,
    /// `--tls-hostname`, in order; empty = the default names.
    pub hostnames: Vec<String>,
    /// `--tls-prefer-chacha20`: ChaCha20-Poly1305 first even on a CPU with AES instructions.
    pub prefer_chacha20: bool,
}

/// The validated configuration of one server run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Config {
    pub path: PathBuf,
    pub listen: Listen,
    pub htpasswd_file: PathBuf,
    pub no_auth: bool,
    pub proxy_auth_username: Option<String>,
    pub append_only: bool,
    pub private_repos: bool,
    pub access_file: Option<PathBuf>,
    pub max_size: Option<u64>,
    pub verify_upload: bool,
    pub group_accessible: bool,
    pub log: Option<LogTarget>,
    /// `None`: plain HTTP.
    pub tls: Option<TlsConfig>,
    pub debug: bool,
    pub cpu_profile_ignored: bool,
    pub prometheus: bool,
    pub prometheus_no_auth: bool,
    /// Not `--no-repo-metrics`: per-repository series in `/metrics`.
    pub repo_metrics: bool,
    /// Not `--no-status-page`: `GET /` from a browser answers the status page.
    pub status_page: bool,
    /// `--scrub-every` (with `--scrub-rate`): the background scrub, off when `None`.
    pub scrub: Option<crate::storage::scrub::Schedule>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Command {
    Serve(Box<Config>),
    /// `rest-server user ...`: manage the htpasswd file (parsed in `cmd/user.rs`).
    User(crate::cmd::user::UserCommand),
    /// `rest-server status ...`: per-repository health of a data directory (`cmd/status.rs`).
    Status(crate::cmd::status::StatusCommand),
    /// `rest-server scrub ...` (parsed in `cmd/scrub.rs`).
    Scrub(crate::cmd::scrub::ScrubCommand),
    /// `rest-server access check USER REPO --access-file FILE`.
    AccessCheck {
        file: PathBuf,
        user: String,
        repo: String,
    },
    Help,
    Version,
}

/// Every long flag the server accepts.
const FLAGS: &[(&str, Arity)] = &[
    ("path", Arity::Value),
    ("listen", Arity::Value),
    ("htpasswd-file", Arity::Value),
    ("no-auth", Arity::Bool),
    ("proxy-auth-username", Arity::Value),
    ("append-only", Arity::Bool),
    ("private-repos", Arity::Bool),
    ("access-file", Arity::Value),
    ("max-size", Arity::Value),
    ("no-verify-upload", Arity::Bool),
    ("group-accessible-repos", Arity::Bool),
    ("tls", Arity::Bool),
    ("tls-cert", Arity::Value),
    ("tls-key", Arity::Value),
    ("tls-min-ver", Arity::Value),
    ("tls-generate-cert", Arity::Bool),
    ("tls-hostname", Arity::Value),
    ("tls-prefer-chacha20", Arity::Bool),
    ("log", Arity::Value),
    ("debug", Arity::Bool),
    ("cpu-profile", Arity::Value),
    ("prometheus", Arity::Bool),
    ("prometheus-no-auth", Arity::Bool),
    ("no-repo-metrics", Arity::Bool),
    ("no-status-page", Arity::Bool),
    ("scrub-every", Arity::Value),
    ("scrub-rate", Arity::Value),
    ("help", Arity::Bool),
    ("version", Arity::Bool),
];

/// The server's command line: flags only.
const SERVER: Grammar = Grammar {
    command: "rest-server",
    flags: FLAGS,
    short: &[('h', "help"), ('V', "version")],
    words: false,
};

/// Parses the arguments after the program name. The error is one line naming the problem.
pub(crate) fn parse(args: impl IntoIterator<Item = OsString>) -> Result<Command, String> {
    let mut args = args.into_iter().peekable();
    if args.next_if(|a| a == "user").is_some() {
        return crate::cmd::user::parse(args).map(Command::User);
    }
    if args.next_if(|a| a == "status").is_some() {
        return crate::cmd::status::parse(args).map(Command::Status);
    }
    if args.next_if(|a| a == "access").is_some() {
        return parse_access(args);
    }
    if args.next_if(|a| a == "scrub").is_some() {
        return crate::cmd::scrub::parse(args).map(Command::Scrub);
    }
    let given = lex(args, &SERVER)?;
    let flag = |n: &str| given.flag(n);
    let value = |n: &str| given.value(n);
    if flag("help") {
        return Ok(Command::Help);
    }
    if flag("version") {
        return Ok(Command::Version);
    }

    let path = given.path("path")?.unwrap_or_else(|| DEFAULT_PATH.into());
    let listen = parse_listen(&value("listen").unwrap_or_else(|| DEFAULT_LISTEN.into()))?;
    let htpasswd_file = given
        .path("htpasswd-file")?
        .unwrap_or_else(|| path.join(".htpasswd"));
    let max_size = match value("max-size") {
        None => None,
        Some(s) => match parse_size(&s) {
            Some(0) => None,
            Some(n) => Some(n),
            None => {
                return Err(format!(
                    "invalid value {s:?} for --max-size: expected a size such as 500GiB, 2TB or 1000000"
                ));
            }
        },
    };
    let proxy_auth_username = match value("proxy-auth-username") {
        Some(h) if !is_header_name(&h) => {
            return Err(format!(
                "invalid value {h:?} for --proxy-auth-username: expected an HTTP header name"
            ));
        }
        h => h.filter(|h| !h.is_empty()),
    };
    let tls = parse_tls(&path, &given)?;
    let log = match value("log").as_deref() {
        None | Some("") => None,
        Some("-") => Some(LogTarget::Stdout),
        Some(f) => Some(LogTarget::File(f.into())),
    };
    let scrub_rate = match value("scrub-rate") {
        None => DEFAULT_SCRUB_RATE,
        Some(v) => parse_rate(&v).filter(|r| *r > 0).ok_or_else(|| {
            format!("invalid value {v:?} for --scrub-rate: expected a rate such as 1MiB/s")
        })?,
    };
    let scrub = match value("scrub-every").as_deref() {
        // A rate for a scrub that is off is a mistake to point out, as --tls-cert without --tls.
        None | Some("" | "0") if value("scrub-rate").is_some() => {
            return Err("--scrub-rate needs --scrub-every".into());
        }
        None | Some("" | "0") => None,
        Some(v) => Some(crate::storage::scrub::Schedule {
            every: parse_duration(v).filter(|d| !d.is_zero()).ok_or_else(|| {
                format!("invalid value {v:?} for --scrub-every: expected a duration such as 30d, 12h or 90m")
            })?,
            max_rate: scrub_rate,
        }),
    };
    Ok(Command::Serve(Box::new(Config {
        path,
        listen,
        htpasswd_file,
        no_auth: flag("no-auth"),
        proxy_auth_username,
        append_only: flag("append-only"),
        private_repos: flag("private-repos"),
        access_file: given.path("access-file")?,
        max_size,
        verify_upload: !flag("no-verify-upload"),
        group_accessible: flag("group-accessible-repos"),
        log,
        tls,
        debug: flag("debug"),
        cpu_profile_ignored: value("cpu-profile").is_some(),
        prometheus: flag("prometheus"),
        prometheus_no_auth: flag("prometheus-no-auth"),
        repo_metrics: !flag("no-repo-metrics"),
        status_page: !flag("no-status-page"),
        scrub,
    })))
}

/// `access check USER REPO --access-file FILE` (flags and words in any order).
fn parse_access(args: impl Iterator<Item = OsString>) -> Result<Command, String> {
    const ACCESS: Grammar = Grammar {
        command: "rest-server access",
        flags: &[("access-file", Arity::Value), ("help", Arity::Bool)],
        short: &[('h', "help")],
        words: true,
    };
    let given = lex(args, &ACCESS)?;
    if given.flag("help") {
        return Ok(Command::Help);
    }
    let usage = "usage: rest-server access check USER REPO --access-file FILE";
    let file = given.value("access-file").filter(|f| !f.is_empty());
    let [verb, user, repo] = <[String; 3]>::try_from(given.words).map_err(|_| usage)?;
    if verb != "check" {
        return Err(format!("unknown action {verb:?}: {usage}"));
    }
    let file = file.ok_or(usage)?;
    Ok(Command::AccessCheck {
        file: file.into(),
        user,
        repo,
    })
}

/// The TLS flags: either `--tls` is on and they are consistent, or none but `--tls=false`
/// is given (a certificate flag without `--tls` is a mistake the Go server refuses too).
fn parse_tls(path: &std::path::Path, given: &Lexed) -> Result<Option<TlsConfig>, String> {
    let flag = |n: &str| given.flag(n);
    let hostnames = given.values("tls-hostname");
    let companion = ["tls-cert", "tls-key", "tls-min-ver", "tls-hostname"]
        .into_iter()
        .find(|n| given.has_value(n))
        .or(["tls-generate-cert", "tls-prefer-chacha20"]
            .into_iter()
            .find(|n| flag(n)));
    if !flag("tls") {
        return match companion {
            Some(n) => Err(format!("--{n} needs --tls")),
            None => Ok(None),
        };
    }
    if !cfg!(feature = "tls") {
        return Err(
            "--tls: this rest-server was built without TLS support (cargo feature \"tls\")".into(),
        );
    }
    let file = |n: &str, default: &str| -> Result<PathBuf, String> {
        Ok(given.path(n)?.unwrap_or_else(|| path.join(default)))
    };
    let min_version = match given.value("tls-min-ver").as_deref() {
        None | Some("1.2") => TlsVersion::V1_2,
        Some("1.3") => TlsVersion::V1_3,
        Some(v) => {
            return Err(format!(
                "invalid value {v:?} for --tls-min-ver: expected 1.2 or 1.3"
            ));
        }
    };
    let generate = flag("tls-generate-cert");
    if !hostnames.is_empty() && !generate {
        return Err("--tls-hostname only applies with --tls-generate-cert".into());
    }
    if let Some(h) = hostnames.iter().find(|h| !is_cert_name(h)) {
        return Err(format!(
            "invalid value {h:?} for --tls-hostname: expected a DNS name or an IP address"
        ));
    }
    Ok(Some(TlsConfig {
        cert: file("tls-cert", "public_key")?,
        key: file("tls-key", "private_key")?,
        min_version,
        generate,
        hostnames,
        prefer_chacha20: flag("tls-prefer-chacha20"),
    }))
}

/// A name a certificate can carry: an IP address, or a DNS name (letters, digits, `-`, `.`,
/// a leading `*.` wildcard).
fn is_cert_name(h: &str) -> bool {
    if h.parse::<std::net::IpAddr>().is_ok() {
        return true;
    }
    let name = h.strip_prefix("*.").unwrap_or(h);
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

/// Whether a long flag takes a value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Arity {
    /// `--flag`, `--flag=true`, `--flag=false` (any form Go's `strconv.ParseBool` takes).
    Bool,
    /// `--flag VALUE` or `--flag=VALUE`.
    Value,
}

/// What one command accepts: the server and every subcommand have one of these, and
/// [`lex`] is the only code that walks a command line.
pub(crate) struct Grammar {
    /// How the command is typed (`rest-server user`); error messages point to its `--help`.
    pub command: &'static str,
    /// Every long flag, without the dashes.
    pub flags: &'static [(&'static str, Arity)],
    /// Short forms, e.g. `('h', "help")`.
    pub short: &'static [(char, &'static str)],
    /// Whether plain words may appear (between flags, in any order). The server takes none.
    pub words: bool,
}

/// A command line as given: the flags in order (Go semantics: a repeated flag takes its last
/// value) and the words among them.
#[derive(Debug, Default)]
pub(crate) struct Lexed {
    bools: Vec<(&'static str, bool)>,
    values: Vec<(&'static str, String)>,
    pub words: Vec<String>,
}

impl Lexed {
    /// A boolean flag's last value, false if absent.
    pub(crate) fn flag(&self, name: &str) -> bool {
        self.bools
            .iter()
            .rev()
            .find(|(f, _)| *f == name)
            .is_some_and(|b| b.1)
    }

    /// A value flag's last value.
    pub(crate) fn value(&self, name: &str) -> Option<String> {
        self.values
            .iter()
            .rev()
            .find(|(f, _)| *f == name)
            .map(|v| v.1.clone())
    }

    /// Every value of a flag that may repeat, in order.
    pub(crate) fn values(&self, name: &str) -> Vec<String> {
        self.values
            .iter()
            .filter(|(f, _)| *f == name)
            .map(|(_, v)| v.clone())
            .collect()
    }

    /// Whether a value flag appears at all.
    pub(crate) fn has_value(&self, name: &str) -> bool {
        self.values.iter().any(|(f, _)| *f == name)
    }

    /// A file or directory flag: absent is `None`, empty is an error.
    pub(crate) fn path(&self, name: &str) -> Result<Option<PathBuf>, String> {
        match self.value(name) {
            Some(v) if v.is_empty() => Err(format!("--{name} must not be empty")),
            v => Ok(v.map(PathBuf::from)),
        }
    }
}

/// Splits a command line into flags and words by `grammar`. The error is one line naming
/// the problem.
pub(crate) fn lex(
    args: impl IntoIterator<Item = OsString>,
    grammar: &Grammar,
) -> Result<Lexed, String> {
    let mut lexed = Lexed::default();
    let mut args = args.into_iter();
    let unknown = |a: &str| format!("unknown flag {a:?} (see {} --help)", grammar.command);
    while let Some(arg) = args.next() {
        let arg = utf8(arg)?;
        let (long, inline) = if let Some(long) = arg.strip_prefix("--") {
            match long.split_once('=') {
                Some((n, v)) => (n, Some(v.to_owned())),
                None => (long, None),
            }
        } else if let Some(short) = arg.strip_prefix('-').filter(|s| !s.is_empty()) {
            let mut chars = short.chars();
            let long = match (chars.next(), chars.next()) {
                (Some(c), None) => grammar.short.iter().find(|(s, _)| *s == c).map(|s| s.1),
                _ => None,
            };
            (long.ok_or_else(|| unknown(&arg))?, None)
        } else if grammar.words {
            lexed.words.push(arg);
            continue;
        } else {
            return Err(format!(
                "unexpected argument {arg:?}: {} takes only flags (see --help)",
                grammar.command
            ));
        };
        let &(name, arity) = grammar
            .flags
            .iter()
            .find(|(n, _)| *n == long)
            .ok_or_else(|| unknown(&arg))?;
        match arity {
            Arity::Bool => {
                let on = match inline {
                    None => true,
                    Some(v) => go_bool(&v).ok_or_else(|| {
                        format!("invalid value {v:?} for --{name}: expected true or false")
                    })?,
                };
                lexed.bools.push((name, on));
            }
            Arity::Value => {
                let v = match inline {
                    Some(v) => v,
                    None => utf8(
                        args.next()
                            .ok_or_else(|| format!("flag --{name} needs a value"))?,
                    )?,
                };
                lexed.values.push((name, v));
            }
        }
    }
    Ok(lexed)
}

fn utf8(arg: OsString) -> Result<String, String> {
    arg.into_string()
        .map_err(|a| format!("argument {a:?} is not valid UTF-8"))
}

/// Go's `strconv.ParseBool`.
fn go_bool(v: &str) -> Option<bool> {
    match v {
        "1" | "t" | "T" | "true" | "TRUE" | "True" => Some(true),
        "0" | "f" | "F" | "false" | "FALSE" | "False" => Some(false),
        _ => None,
    }
}

fn is_header_name(h: &str) -> bool {
    h.bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

fn parse_listen(addr: &str) -> Result<Listen, String> {
    if let Some(path) = addr.strip_prefix("unix:") {
        if path.is_empty() {
            return Err("invalid value \"unix:\" for --listen: missing socket path".into());
        }
        return Ok(Listen::Unix(PathBuf::from(path)));
    }
    let bad =
        || format!("invalid value {addr:?} for --listen: expected host:port, :port or unix:/path");
    let (host, port) = addr.rsplit_once(':').ok_or_else(bad)?;
    port.parse::<u16>().map_err(|_| bad())?;
    // An IPv6 literal must be bracketed, or "::1:80" would be ambiguous.
    if host.contains(':') && !(host.starts_with('[') && host.ends_with(']')) {
        return Err(bad());
    }
    Ok(Listen::Tcp(addr.to_owned()))
}

/// A read rate: a size ([`parse_size`]) per second, `/s` optional (`20MiB/s`, `5MB`).
pub(crate) fn parse_rate(s: &str) -> Option<u64> {
    parse_size(s.trim().strip_suffix("/s").unwrap_or(s))
}

/// `30d`, `12h`, `90m`, `45s` (one number, one unit).
pub(crate) fn parse_duration(s: &str) -> Option<std::time::Duration> {
    let s = s.trim();
    let (n, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit())?);
    let n: u64 = n.parse().ok()?;
    let secs = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return None,
    };
    Some(std::time::Duration::from_secs(n.checked_mul(secs)?))
}

/// Parses `123`, `10K`, `10KB`, `10KiB`, ... `2T`, `2TiB` (case-insensitive). K/M/G/T are
/// powers of 1000, Ki/Mi/Gi/Ti powers of 1024. `None` for anything else or on overflow.
pub(crate) fn parse_size(s: &str) -> Option<u64> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (digits, unit) = s.split_at(split);
    if digits.is_empty() {
        return None;
    }
    let n: u64 = digits.parse().ok()?;
    let unit = unit.trim().to_ascii_lowercase();
    let unit = unit.strip_suffix('b').unwrap_or(&unit);
    let (prefix, binary) = match unit.strip_suffix('i') {
        Some(p) if !p.is_empty() => (p, true),
        Some(_) => return None,
        None => (unit, false),
    };
    let power = match prefix {
        "" if !binary => 0,
        "k" => 1,
        "m" => 2,
        "g" => 3,
        "t" => 4,
        _ => return None,
    };
    let base: u64 = if binary { 1024 } else { 1000 };
    n.checked_mul(base.checked_pow(power)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn serve(args: &[&str]) -> Result<Config, String> {
        match parse(args.iter().map(OsString::from))? {
            Command::Serve(c) => Ok(*c),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn defaults_match_the_go_server() {
        let c = serve(&[]).unwrap();
        assert_eq!(c.path, PathBuf::from("/tmp/restic"));
        assert_eq!(c.listen, Listen::Tcp(":8000".into()));
        assert_eq!(c.htpasswd_file, PathBuf::from("/tmp/restic/.htpasswd"));
        assert!(c.verify_upload && !c.no_auth && !c.append_only && !c.private_repos);
        assert_eq!(c.max_size, None);
        assert_eq!(c.log, None);
    }

    #[test]
    fn go_flag_forms() {
        let c = serve(&[
            "--path=/srv/r",
            "--listen",
            "127.0.0.1:9000",
            "--no-auth=true",
            "--append-only",
            "--append-only=false",
            "--max-size=10GiB",
            "--log",
            "-",
            "--no-verify-upload=1",
        ])
        .unwrap();
        assert_eq!(c.path, PathBuf::from("/srv/r"));
        assert_eq!(c.htpasswd_file, PathBuf::from("/srv/r/.htpasswd"));
        assert_eq!(c.listen, Listen::Tcp("127.0.0.1:9000".into()));
        assert!(c.no_auth);
        assert!(!c.append_only, "last value wins, as in Go");
        assert_eq!(c.max_size, Some(10 << 30));
        assert_eq!(c.log, Some(LogTarget::Stdout));
        assert!(!c.verify_upload);
        assert!(!c.prometheus && !c.prometheus_no_auth);
        let c = serve(&["--prometheus", "--prometheus-no-auth=true"]).unwrap();
        assert!(c.prometheus && c.prometheus_no_auth);
        assert!(!serve(&["--prometheus=false"]).unwrap().prometheus);
    }

    #[test]
    fn listen_forms() {
        for ok in [":8000", "0.0.0.0:1", "[::1]:8000", "localhost:80", "[::]:0"] {
            assert_eq!(
                serve(&["--listen", ok]).unwrap().listen,
                Listen::Tcp(ok.into())
            );
        }
        assert_eq!(
            serve(&["--listen=unix:/run/rs.sock"]).unwrap().listen,
            Listen::Unix("/run/rs.sock".into())
        );
        for bad in ["8000", "host:", ":99999", "::1:80", "unix:", "host:x"] {
            assert!(serve(&["--listen", bad]).is_err(), "{bad}");
        }
    }

    #[test]
    fn bad_command_lines_are_one_line_errors() {
        for args in [
            &["--bogus"][..],
            &["-x"],
            &["positional"],
            &["--path"],
            &["--max-size", "-5"],
            &["--max-size", "5X"],
            &["--max-size=1.5G"],
            &["--no-auth=maybe"],
            &["--tls-cert", "c.pem"],
            &["--tls", "--tls-min-ver", "1.1"],
            &["--path="],
            &["--proxy-auth-username", "X User"],
            &["--access-file="],
            &["--access-file"],
        ] {
            let e = serve(args).unwrap_err();
            assert!(!e.contains('\n') && !e.is_empty(), "{args:?}: {e}");
        }
        assert!(serve(&["--bogus"]).unwrap_err().contains("--bogus"));
        assert!(
            serve(&["--max-size", "-5"])
                .unwrap_err()
                .contains("--max-size")
        );
    }

    #[test]
    fn tls_flags() {
        assert_eq!(serve(&[]).unwrap().tls, None);
        assert_eq!(serve(&["--tls=false"]).unwrap().tls, None);
        if !cfg!(feature = "tls") {
            let e = serve(&["--tls"]).unwrap_err();
            assert!(e.contains("built without TLS support"), "{e}");
            return;
        }
        let t = serve(&["--path=/srv", "--tls"]).unwrap().tls.unwrap();
        assert_eq!(t.cert, PathBuf::from("/srv/public_key"));
        assert_eq!(t.key, PathBuf::from("/srv/private_key"));
        assert_eq!(t.min_version, TlsVersion::V1_2);
        assert!(!t.generate && !t.prefer_chacha20 && t.hostnames.is_empty());
        let t = serve(&[
            "--tls=true",
            "--tls-cert=/c.pem",
            "--tls-key",
            "/k.pem",
            "--tls-min-ver=1.3",
            "--tls-generate-cert",
            "--tls-hostname=nas.local",
            "--tls-hostname",
            "192.168.1.2",
            "--tls-hostname=::1",
            "--tls-prefer-chacha20",
        ])
        .unwrap()
        .tls
        .unwrap();
        assert_eq!(
            (t.cert.to_str(), t.key.to_str()),
            (Some("/c.pem"), Some("/k.pem"))
        );
        assert_eq!(t.min_version, TlsVersion::V1_3);
        assert!(t.generate && t.prefer_chacha20);
        assert_eq!(t.hostnames, ["nas.local", "192.168.1.2", "::1"]);
        for (args, needle) in [
            (&["--tls-key=k"][..], "--tls-key needs --tls"),
            (
                &["--tls=false", "--tls-min-ver=1.3"],
                "--tls-min-ver needs --tls",
            ),
            (&["--tls-generate-cert"], "--tls-generate-cert needs --tls"),
            (&["--tls", "--tls-min-ver", "1.1"], "--tls-min-ver"),
            (&["--tls", "--tls-min-ver", "1.0"], "--tls-min-ver"),
            (&["--tls", "--tls-hostname=x"], "--tls-generate-cert"),
            (
                &["--tls", "--tls-generate-cert", "--tls-hostname=a b"],
                "--tls-hostname",
            ),
            (
                &["--tls", "--tls-generate-cert", "--tls-hostname="],
                "--tls-hostname",
            ),
            (&["--tls", "--tls-cert="], "--tls-cert"),
        ] {
            let e = serve(args).unwrap_err();
            assert!(e.contains(needle), "{args:?}: {e}");
        }
        for ok in [
            "localhost",
            "nas",
            "a-b.example.org",
            "*.example.org",
            "10.0.0.1",
            "fe80::1",
        ] {
            assert!(is_cert_name(ok), "{ok}");
        }
        for bad in ["", "-a", "a..b", "a_b", "a/b", "*", "*.", "a b", ".a"] {
            assert!(!is_cert_name(bad), "{bad}");
        }
    }

    /// One lexer: the same flag forms and errors for the server and every subcommand.
    #[test]
    fn one_lexer_for_every_command() {
        const T: Grammar = Grammar {
            command: "rest-server t",
            flags: &[("on", Arity::Bool), ("file", Arity::Value)],
            short: &[('h', "on")],
            words: true,
        };
        let lexed = |a: &[&str]| lex(a.iter().map(OsString::from), &T);
        let l = lexed(&["w1", "--on=F", "--file", "a", "w2", "--file=b", "-h"]).unwrap();
        assert!(l.flag("on"), "last value wins");
        assert_eq!(l.value("file").as_deref(), Some("b"));
        assert_eq!(l.values("file"), ["a", "b"]);
        assert_eq!(l.words, ["w1", "w2"]);
        assert!(!lexed(&["--on=False"]).unwrap().flag("on"));
        assert_eq!(lexed(&["-"]).unwrap().words, ["-"]);
        assert!(lexed(&["--file="]).unwrap().path("file").is_err());
        for (args, needle) in [
            (&["--on=yes"][..], "invalid value \"yes\" for --on"),
            (&["--file"], "flag --file needs a value"),
            (&["-x"], "unknown flag \"-x\" (see rest-server t --help)"),
            (&["-hh"], "unknown flag \"-hh\""),
            (&["--nope=1"], "unknown flag \"--nope=1\""),
        ] {
            let e = lexed(args).unwrap_err();
            assert!(e.contains(needle), "{args:?}: {e}");
        }
        let e = serve(&["word"]).unwrap_err();
        assert!(e.contains("takes only flags"), "{e}");
    }

    #[test]
    fn help_and_version() {
        let cmd = |a: &str| parse([OsString::from(a)]).unwrap();
        assert_eq!(cmd("-h"), Command::Help);
        assert_eq!(cmd("--help"), Command::Help);
        assert_eq!(cmd("-V"), Command::Version);
        assert_eq!(cmd("--version"), Command::Version);
    }

    #[test]
    fn help_lists_every_flag() {
        for (name, _) in FLAGS {
            assert!(
                HELP.contains(&format!("--{name}")),
                "--help misses --{name}"
            );
        }
    }

    #[test]
    fn access_check_command_line() {
        let parse_words = |words: &[&str]| parse(words.iter().map(OsString::from));
        assert_eq!(
            parse_words(&["access", "--access-file=f", "check", "bob", "a/b"]),
            Ok(Command::AccessCheck {
                file: "f".into(),
                user: "bob".into(),
                repo: "a/b".into(),
            })
        );
        for (words, needle) in [
            (
                &["access", "check", "bob", "a"][..],
                "usage: rest-server access check",
            ),
            (&["access", "check", "bob", "--access-file", "f"], "usage:"),
            (
                &["access", "show", "bob", "a", "--access-file", "f"],
                "unknown action \"show\"",
            ),
            (
                &["access", "check", "bob", "a", "--access-file"],
                "needs a value",
            ),
            (
                &["access", "check", "bob", "a", "--file=f"],
                "unknown flag \"--file=f\"",
            ),
            (&["access", "check", "bob", "a", "--access-file="], "usage:"),
        ] {
            let e = parse_words(words).unwrap_err();
            assert!(e.contains(needle) && !e.contains('\n'), "{words:?}: {e}");
        }
    }

    /// README shows `--help` verbatim: it must not go stale.
    #[test]
    fn readme_shows_the_current_help() {
        let readme = include_str!("../README.md");
        assert!(
            readme.contains(HELP),
            "update the --help block in README.md"
        );
    }

    #[test]
    fn rates_and_durations() {
        assert_eq!(parse_rate("20MiB/s"), Some(20 << 20));
        assert_eq!(parse_rate("5MB"), Some(5_000_000));
        assert_eq!(parse_rate("/s"), None);
        assert_eq!(
            parse_duration("30d"),
            Some(std::time::Duration::from_secs(30 * 86_400))
        );
        assert_eq!(
            parse_duration("90m"),
            Some(std::time::Duration::from_secs(5400))
        );
        for bad in ["", "30", "d", "1.5h", "3w"] {
            assert_eq!(parse_duration(bad), None, "{bad}");
        }
        let c = serve(&["--scrub-every", "30d"]).unwrap();
        assert_eq!(c.scrub.unwrap().max_rate, DEFAULT_SCRUB_RATE);
        assert_eq!(
            serve(&["--scrub-rate", "2MiB/s"]).unwrap_err(),
            "--scrub-rate needs --scrub-every"
        );
        assert!(serve(&["--scrub-every", "soon"]).is_err());
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("0"), Some(0));
        assert_eq!(parse_size("1234"), Some(1234));
        assert_eq!(parse_size("10k"), Some(10_000));
        assert_eq!(parse_size("10KB"), Some(10_000));
        assert_eq!(parse_size("10KiB"), Some(10 * 1024));
        assert_eq!(parse_size("3M"), Some(3_000_000));
        assert_eq!(parse_size("3 MiB"), Some(3 << 20));
        assert_eq!(parse_size("2T"), Some(2_000_000_000_000));
        assert_eq!(parse_size("2tib"), Some(2 << 40));
        assert_eq!(parse_size("5B"), Some(5));
        for bad in [
            "",
            "-1",
            "G",
            "1.5G",
            "10X",
            "10iB",
            "99999999999999999999",
            "20000000TiB",
        ] {
            assert_eq!(parse_size(bad), None, "{bad}");
        }
    }
}
