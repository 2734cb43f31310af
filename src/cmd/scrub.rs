//! `rest-server scrub --path DIR [REPO...]`: re-reads every stored object once and checks it
//! against its name (engine: `storage/scrub.rs`), prints each damaged object and what the
//! user can do about it, and a summary. Exit 0: all intact; 1: damage found; 2: usage error
//! (or no data directory). It only reads: nothing is modified, moved or deleted.

use super::json_str;
use crate::cli::{self, Arity, DEFAULT_PATH, EXIT_USAGE, Grammar};
use crate::storage::names::{Kind, RepoPath};
use crate::storage::scrub::{self, Object, Outcome, Pacer, Problem};
use std::ffi::OsString;
use std::ops::ControlFlow;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

/// Exit status when damage was found.
const EXIT_DAMAGE: u8 = 1;

pub(crate) const SCRUB_HELP: &str = "\
Check stored objects for bit rot: re-read each one and compare its SHA-256 with its name.

Usage: rest-server scrub [flags] [REPO...]

Flags:
      --path DIR                  data directory (default \"/tmp/restic\", as for the server)
      --rate RATE                 read at most RATE per second, e.g. 20MiB/s or 5MB
                                  (default: as fast as the disk goes)
      --json                      print one JSON object instead of text (for scripts)
  -h, --help                      show this help

REPO: repositories to check, as in URLs (alice/laptop, or / for one at the root);
default: every repository below DIR. Locks and config are not checked. Nothing is
modified, moved or deleted. Exit status: 0 all intact, 1 damage found, 2 usage error.
";

const SCRUB: Grammar = Grammar {
    command: "rest-server scrub",
    flags: &[
        ("path", Arity::Value),
        ("rate", Arity::Value),
        ("json", Arity::Bool),
        ("help", Arity::Bool),
    ],
    short: &[('h', "help")],
    words: true,
};

#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct ScrubCommand {
    pub path: PathBuf,
    /// Bytes per second.
    pub rate: Option<u64>,
    pub json: bool,
    /// Empty: all.
    pub repos: Vec<RepoPath>,
    pub help: bool,
}

/// Parses the arguments after `scrub`. The error is one line naming the problem.
pub(crate) fn parse(args: impl IntoIterator<Item = OsString>) -> Result<ScrubCommand, String> {
    let given = cli::lex(args, &SCRUB)?;
    let rate = match given.value("rate") {
        None => None,
        Some(v) => Some(cli::parse_rate(&v).ok_or_else(|| {
            format!("invalid value {v:?} for --rate: expected a rate such as 20MiB/s")
        })?),
    };
    let repos = given
        .words
        .iter()
        .map(|w| {
            let segments = w.split('/').filter(|s| !s.is_empty()).map(String::from);
            RepoPath::new(segments.collect())
                .ok_or_else(|| format!("invalid repository {w:?}: expected e.g. alice/laptop"))
        })
        .collect::<Result<_, _>>()?;
    Ok(ScrubCommand {
        path: given.path("path")?.unwrap_or_else(|| DEFAULT_PATH.into()),
        rate,
        json: given.flag("json"),
        repos,
        help: given.flag("help"),
    })
}

/// One damaged object, as reported.
struct Found {
    repo: String,
    kind: Kind,
    name: String,
    problem: Problem,
}

/// Runs the command: findings and summary to stdout, usage problems to stderr.
pub(crate) fn run(cmd: &ScrubCommand) -> ExitCode {
    if cmd.help {
        out!("{SCRUB_HELP}");
        return ExitCode::SUCCESS;
    }
    if !cmd.path.is_dir() {
        errln!(
            "rest-server scrub: data directory {} does not exist (see --path)",
            cmd.path.display()
        );
        return ExitCode::from(EXIT_USAGE);
    }
    let repos = if cmd.repos.is_empty() {
        match scrub::find_repos(&cmd.path) {
            Ok(r) => r,
            Err(e) => {
                errln!("rest-server scrub: cannot read {}: {e}", cmd.path.display());
                return ExitCode::from(EXIT_USAGE);
            }
        }
    } else {
        for r in &cmd.repos {
            let mut dir = cmd.path.clone();
            dir.extend(r.segments());
            if !dir.join("config").is_file() {
                errln!(
                    "rest-server scrub: no repository /{} in {} (it has no config)",
                    r.joined(),
                    cmd.path.display()
                );
                return ExitCode::from(EXIT_USAGE);
            }
        }
        cmd.repos.clone()
    };

    // Run by systemd (rest-server-scrub.service): each damaged object is an ERROR line at
    // priority err in the journal, as the server's background pass logs it, so
    // `journalctl -p err` and failed-unit alerts see it. In a terminal: DAMAGED lines.
    let journal = crate::logging::to_journal();
    if journal {
        let _ = crate::logging::init(log::LevelFilter::Info);
    }
    let t = Instant::now();
    let mut pacer = Pacer::new(cmd.rate, None);
    let mut buf = Vec::new();
    let (mut objects, mut bytes) = (0u64, 0u64);
    let mut found = Vec::new();
    let _ = scrub::walk(&cmd.path, &repos, None, &mut |o: Object| {
        match scrub::check(&o, &mut pacer, &mut buf) {
            Outcome::Intact(n) => {
                objects += 1;
                bytes += n;
            }
            Outcome::Damaged(problem) => {
                objects += 1;
                if journal {
                    scrub::log_damage(&o, &problem);
                } else if !cmd.json {
                    outln!(
                        "DAMAGED /{} {} {}: {}",
                        crate::accesslog::escape(&o.repo.joined()),
                        o.kind.as_str(),
                        crate::accesslog::escape(&o.name),
                        problem
                    );
                }
                found.push(Found {
                    repo: o.repo.joined(),
                    kind: o.kind,
                    name: o.name.clone(),
                    problem,
                });
            }
            Outcome::Gone => {}
        }
        ControlFlow::Continue(())
    });
    // Bytes of damaged objects were read too; the rate is of everything read.
    let read = pacer.total;
    let secs = t.elapsed().as_secs_f64();
    let mb_s = read as f64 / 1e6 / secs.max(1e-9);
    if cmd.json {
        outln!("{}", json(&repos, objects, bytes, read, secs, &found));
    } else {
        outln!(
            "checked {objects} objects ({bytes} bytes) in {} repositories in {secs:.1} s ({mb_s:.1} MB/s read); {} damaged",
            repos.len(),
            found.len()
        );
        advise(&found);
    }
    if found.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(EXIT_DAMAGE)
    }
}

/// What the user can do, per repository: restic finds and repairs from its side; the
/// server never "repairs" a backup.
fn advise(found: &[Found]) {
    let mut repos: Vec<&str> = found.iter().map(|f| f.repo.as_str()).collect();
    repos.dedup();
    for repo in repos {
        let here: Vec<&Found> = found.iter().filter(|f| f.repo == repo).collect();
        // Names come from clients' URLs: control characters are escaped, never sent to a terminal.
        let repo = crate::accesslog::escape(repo);
        let packs: Vec<&str> = here
            .iter()
            .filter(|f| f.kind == Kind::Data)
            .filter_map(|f| f.name.rsplit('/').next())
            .filter(|n| crate::storage::names::ObjectId::is_valid(n))
            .collect();
        outln!();
        outln!("What to do for /{repo}:");
        outln!("  1. restic -r rest:<server>/{repo} check --read-data   (confirms the damage)");
        if !packs.is_empty() {
            outln!(
                "  2. restic -r rest:<server>/{repo} repair packs {}",
                packs.join(" ")
            );
            outln!("     (salvages the readable blobs of the damaged packs; then back up again)");
        }
        if here.iter().any(|f| f.kind == Kind::Index) {
            outln!(
                "  {}. restic -r rest:<server>/{repo} repair index   (rebuilds the damaged index files)",
                if packs.is_empty() { 2 } else { 3 }
            );
        }
        if here.iter().any(|f| f.kind == Kind::Snapshots) {
            outln!(
                "  - a damaged snapshot file: `restic forget` it by id, or `restic repair snapshots`"
            );
        }
        if here.iter().any(|f| f.kind == Kind::Keys) {
            outln!("  - a damaged key file: if another key works, `restic key remove` it");
        }
    }
}

/// The `--json` report.
fn json(
    repos: &[RepoPath],
    objects: u64,
    bytes: u64,
    read: u64,
    secs: f64,
    found: &[Found],
) -> String {
    let mut out = format!(
        "{{\"repositories\":{},\"objects\":{objects},\"bytes\":{bytes},\"bytes_read\":{read},\"seconds\":{secs:.3},\"damaged\":[",
        repos.len()
    );
    for (i, f) in found.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(&format!(
            "{{\"repo\":{},\"type\":\"{}\",\"name\":{},\"problem\":\"{}\",\"detail\":{}}}",
            json_str(&f.repo),
            f.kind.as_str(),
            json_str(&f.name),
            f.problem.code(),
            json_str(&f.problem.to_string())
        ));
    }
    out.push_str("]}");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_line() {
        let p = |a: &[&str]| parse(a.iter().map(OsString::from));
        let c = p(&["--path", "/d", "--rate=20MiB/s", "--json", "a/b", "/"]).unwrap();
        assert_eq!(c.rate, Some(20 << 20));
        assert!(c.json);
        assert_eq!(c.repos.len(), 2);
        assert!(p(&["--rate", "fast"]).is_err());
        assert!(p(&["a/b/c"]).is_err());
        assert!(p(&["--bogus"]).is_err());
        for (name, _) in SCRUB.flags {
            assert!(SCRUB_HELP.contains(&format!("--{name}")), "{name}");
        }
    }
}
