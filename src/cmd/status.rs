//! `rest-server status --path DIR`: is every backup fresh? One line per repository (size,
//! objects, snapshots, age of the newest snapshot, quota used of its first path segment), or
//! JSON; `--stale 26h` exits 1 naming the repositories whose newest snapshot is older.
//!
//! It reads the data directory the way the server's start-up walk does (one walk,
//! `storage/inventory.rs`), never writes, and needs no restic password: a snapshot is a
//! file under `snapshots/` and its mtime is the time of the backup. It works on a data
//! directory whether a server runs beside it or not.

use super::json_str;
use crate::access::Rules;
use crate::accesslog::escape;
use crate::cli::{self, Arity, DEFAULT_PATH, EXIT_USAGE, Grammar};
use crate::storage::inventory::{self, Inventory, RepoStats, Walked};
use crate::storage::quota::{self, QuotaShare};
use crate::storage::scrub;
use crate::watch::Load as _;
use std::ffi::OsString;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

/// Exit status when `--stale` finds a repository whose newest snapshot is too old.
const EXIT_STALE: u8 = 1;

pub(crate) const STATUS_HELP: &str = "\
Show the health of every repository in a data directory: is every backup fresh?

Usage: rest-server status [flags]

Flags:
      --path DIR                  data directory (default \"/tmp/restic\", as for the server)
      --access-file FILE          show each first path segment's [quotas] limit
      --max-size SIZE             show the share of the overall limit (as the server's flag)
      --json                      print a JSON array instead of lines
      --stale AGE                 exit 1 if a repository's newest snapshot is older than AGE
                                  (or it has none), naming those repositories on stderr;
                                  AGE is a number with s, m, h or d, e.g. 26h or 7d
  -h, --help                      show this help

Only reads: safe beside a running server. Sizes count the repositories' objects; quota use
counts every file, as the server does. With the server's background scrub (--scrub-every),
also the damage it found per repository and its last complete pass (from its state file).
";

const STATUS: Grammar = Grammar {
    command: "rest-server status",
    flags: &[
        ("path", Arity::Value),
        ("access-file", Arity::Value),
        ("max-size", Arity::Value),
        ("json", Arity::Bool),
        ("stale", Arity::Value),
        ("help", Arity::Bool),
    ],
    short: &[('h', "help")],
    words: false,
};

#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct StatusCommand {
    pub help: bool,
    pub path: PathBuf,
    pub access_file: Option<PathBuf>,
    pub max_size: Option<u64>,
    pub json: bool,
    /// `--stale`, in seconds.
    pub stale: Option<u64>,
}

/// Parses the arguments after `status`. The error is one line naming the problem.
pub(crate) fn parse(args: impl IntoIterator<Item = OsString>) -> Result<StatusCommand, String> {
    let given = cli::lex(args, &STATUS)?;
    let max_size = match given.value("max-size") {
        None => None,
        Some(s) => match cli::parse_size(&s) {
            Some(0) => None,
            Some(n) => Some(n),
            None => {
                return Err(format!(
                    "invalid value {s:?} for --max-size: expected a size such as 500GiB, 2TB or 1000000"
                ));
            }
        },
    };
    let stale = match given.value("stale") {
        None => None,
        Some(s) => Some(
            cli::parse_duration(&s)
                .map(|d| d.as_secs())
                .ok_or_else(|| {
                    format!(
                        "invalid value {s:?} for --stale: expected an age such as 26h, 90m or 7d"
                    )
                })?,
        ),
    };
    Ok(StatusCommand {
        help: given.flag("help"),
        path: given.path("path")?.unwrap_or_else(|| DEFAULT_PATH.into()),
        access_file: given.path("access-file")?,
        max_size,
        json: given.flag("json"),
        stale,
    })
}

/// One repository as shown.
struct Row {
    name: String,
    stats: RepoStats,
    /// The quota the repository counts against, if any.
    quota: Option<QuotaShare>,
    /// Damaged objects the background scrub found the last time it checked the repository
    /// (its state file); `None` if it has not checked it.
    scrub_damaged: Option<u64>,
}

pub(crate) fn run(cmd: &StatusCommand) -> ExitCode {
    if cmd.help {
        out!("{STATUS_HELP}");
        return ExitCode::SUCCESS;
    }
    let fail = |e: String| {
        errln!("rest-server: {e}");
        ExitCode::from(EXIT_USAGE)
    };
    if !cmd.path.is_dir() {
        return fail(format!(
            "data directory {} is not a directory",
            cmd.path.display()
        ));
    }
    let rules = match cmd.access_file.as_deref().map(Rules::load).transpose() {
        Ok(r) => r,
        Err(e) => return fail(format!("access file: {e}")),
    };
    let inv = Inventory::default();
    let usage = inv.rewalk(&cmd.path);
    let repos = inv.report();
    let mut rows = rows(repos, &usage, rules.as_ref(), cmd.max_size);
    let scrub = scrub::saved_results(&cmd.path);
    if let Some((_, damaged)) = &scrub {
        for r in &mut rows {
            r.scrub_damaged = damaged.get(&r.name).copied();
        }
    }
    let now = inventory::now();
    let out = if cmd.json {
        json(&rows, now)
    } else {
        let mut out = lines(&rows, now);
        if let Some((last, _)) = scrub {
            out.push_str(&match last {
                0 => "scrub: no complete pass yet\n".to_owned(),
                t => format!("scrub: last complete pass {}\n", inventory::age(t, now)),
            });
        }
        out
    };
    out!("{out}");
    let Some(limit) = cmd.stale else {
        return ExitCode::SUCCESS;
    };
    let stale: Vec<String> = rows
        .iter()
        .filter_map(|r| match r.stats.newest_snapshot {
            Some(t) if now.saturating_sub(t) <= limit => None,
            Some(t) => Some(format!("/{} ({})", escape(&r.name), inventory::age(t, now))),
            None => Some(format!("/{} (no snapshot)", escape(&r.name))),
        })
        .collect();
    if stale.is_empty() {
        return ExitCode::SUCCESS;
    }
    errln!(
        "rest-server: stale (newest snapshot older than {} s): {}",
        limit,
        stale.join(", ")
    );
    ExitCode::from(EXIT_STALE)
}

/// Attaches to each repository the quota it counts against: its first segment's `[quotas]`
/// limit, else `--max-size` for everything. Usage is counted as the server counts it for
/// its quotas (every file, from the same walk), so the percentages agree with the server's.
fn rows(
    repos: Vec<(String, RepoStats)>,
    usage: &Walked,
    rules: Option<&Rules>,
    max_size: Option<u64>,
) -> Vec<Row> {
    repos
        .iter()
        .map(|(name, stats)| Row {
            name: name.clone(),
            stats: *stats,
            quota: quota::share_of(
                name,
                |seg| rules?.quota(seg)?.limit,
                |seg| usage.segments.get(seg).copied().unwrap_or(0),
                usage.total,
                max_size,
            ),
            scrub_damaged: None,
        })
        .collect()
}

fn lines(rows: &[Row], now: u64) -> String {
    let mut out = String::new();
    if rows.is_empty() {
        out.push_str("no repositories\n");
        return out;
    }
    // Names come from clients' URLs: control characters are escaped, never sent to a terminal.
    let width = rows
        .iter()
        .map(|r| escape(&r.name).len() + 1)
        .max()
        .unwrap_or(1);
    for r in rows {
        let s = &r.stats;
        let newest = match s.newest_snapshot {
            Some(t) => format!("newest {}", inventory::age(t, now)),
            None => "no snapshot".to_owned(),
        };
        let _ = write!(
            out,
            "/{:<w$}  {:>10}  {:>7} objects  {:>4} snapshots  {newest}",
            escape(&r.name),
            inventory::human_bytes(s.total_bytes()),
            s.total_objects(),
            s.snapshots(),
            w = width.saturating_sub(1),
        );
        if let Some(QuotaShare { of, used, limit }) = &r.quota {
            let _ = write!(
                out,
                "  quota {}% of {of} ({})",
                percent(*used, *limit),
                inventory::human_bytes(*limit)
            );
        }
        if let Some(n) = r.scrub_damaged.filter(|n| *n > 0) {
            let _ = write!(out, "  DAMAGED: {n} objects (rest-server scrub names them)");
        }
        out.push('\n');
    }
    out
}

pub(crate) fn percent(used: u64, limit: u64) -> u64 {
    if limit == 0 {
        return 100;
    }
    (u128::from(used) * 100 / u128::from(limit)).min(999) as u64
}

fn json(rows: &[Row], now: u64) -> String {
    let mut out = String::from("[");
    for (i, r) in rows.iter().enumerate() {
        let s = &r.stats;
        if i > 0 {
            out.push(',');
        }
        out.push_str("\n  {\"repo\":");
        out.push_str(&json_str(&format!("/{}", r.name)));
        let _ = write!(
            out,
            ",\"bytes\":{},\"objects\":{},\"snapshots\":{}",
            s.total_bytes(),
            s.total_objects(),
            s.snapshots()
        );
        let opt = |v: Option<u64>| v.map_or("null".to_owned(), |v| v.to_string());
        let _ = write!(
            out,
            ",\"newest_snapshot\":{},\"newest_snapshot_age_seconds\":{},\"newest_upload\":{}",
            opt(s.newest_snapshot),
            opt(s.newest_snapshot.map(|t| now.saturating_sub(t))),
            opt(s.newest_upload)
        );
        out.push_str(",\"types\":{");
        for (j, kind) in crate::storage::names::Kind::ALL.iter().enumerate() {
            let k = inventory::index(*kind);
            let sep = if j > 0 { "," } else { "" };
            let _ = write!(
                out,
                "{sep}\"{}\":{{\"objects\":{},\"bytes\":{}}}",
                kind.as_str(),
                s.objects[k],
                s.bytes[k]
            );
        }
        out.push('}');
        match &r.quota {
            Some(QuotaShare { of, used, limit }) => {
                out.push_str(",\"quota\":{\"of\":");
                out.push_str(&json_str(of));
                let _ = write!(out, ",\"used\":{used},\"limit\":{limit}}}");
            }
            None => out.push_str(",\"quota\":null"),
        }
        let _ = write!(out, ",\"scrub_damaged\":{}", opt(r.scrub_damaged));
        out.push('}');
    }
    out.push_str(if rows.is_empty() { "]\n" } else { "\n]\n" });
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages_and_command_lines() {
        let p = |a: &[&str]| parse(a.iter().map(OsString::from));
        let c = p(&["--path", "/d", "--json", "--stale=26h"]).unwrap();
        assert_eq!((c.json, c.stale), (true, Some(93_600)));
        assert!(p(&["--stale", "soon"]).is_err());
        assert!(p(&["extra"]).is_err());
        assert!(p(&["--bogus"]).is_err());
    }

    #[test]
    fn names_cannot_reach_the_terminal_as_control_characters() {
        let row = Row {
            name: "x\x1b]0;owned\x07".into(),
            stats: RepoStats::default(),
            quota: None,
            scrub_damaged: None,
        };
        let text = lines(&[row], 0);
        assert!(!text.contains('\x1b') && !text.contains('\x07'), "{text:?}");
        assert!(text.starts_with("/x\\x1b]0;owned\\x07 "), "{text:?}");
    }

    #[test]
    fn help_lists_every_flag() {
        for (name, _) in STATUS.flags {
            assert!(
                STATUS_HELP.contains(&format!("--{name}")),
                "misses --{name}"
            );
        }
    }
}
