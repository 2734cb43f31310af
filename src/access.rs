//! `--access-file`: who may do what to which repository, and how much each first path segment
//! may hold. A plain text file, parsed by hand, reloaded like the htpasswd file (`watch.rs`):
//!
//! ```text
//! [permissions]
//! # <repo pattern> = <user>:<rights>, ...     the first pattern that matches decides
//! alice/**   = alice:w, monitor:r
//! laptops/*  = *:a, guest:-
//! **         = admin:w
//!
//! [quotas]
//! # <first path segment> = <size>; "*" = every segment not named
//! alice = 50GiB
//! public = unlimited
//! *     = 10GiB
//! ```
//!
//! Rights, each including the ones before it: `-` nothing; `r` read, plus creating and
//! removing lock files (restic locks a repository even to read it, and a lock holds no data);
//! `a` append: also create repositories and upload new objects; `w` write: also delete.
//!
//! Patterns match the repo path (0 to 2 segments): a name matches itself, `*` any one
//! segment, a trailing `**` any rest including none; `/` alone is the repository at the root.
//! In the first pattern that matches, a user's own entry wins over `*`; a user the pattern does
//! not name gets nothing, and a repo no pattern matches is closed to everyone. `*` stands for
//! any authenticated user (and, with `--no-auth`, for everyone).
//!
//! Every mistake is an error with its line number, never a warning: a typo in an access rule
//! must not silently open or close a repository.

use crate::auth::htpasswd::valid_username;
use crate::cli::parse_size;
use crate::storage::names::{MAX_REPO_DEPTH, RepoPath, valid_segment};
use crate::watch::Load;
use std::fmt;
use std::path::Path;

/// What a user may do to a repository; each includes the ones before it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Right {
    None,
    /// Read everything; create and remove lock files.
    Read,
    /// Also create the repository and upload new objects.
    Append,
    /// Also delete anything.
    Write,
}

impl Right {
    fn parse(s: &str) -> Option<Right> {
        match s {
            "-" => Some(Right::None),
            "r" => Some(Right::Read),
            "a" => Some(Right::Append),
            "w" => Some(Right::Write),
            _ => None,
        }
    }

    pub(crate) fn letter(self) -> &'static str {
        match self {
            Right::None => "-",
            Right::Read => "r",
            Right::Append => "a",
            Right::Write => "w",
        }
    }

    /// For people: what the right allows.
    pub(crate) fn describe(self) -> &'static str {
        match self {
            Right::None => "no access",
            Right::Read => "read (and lock)",
            Right::Append => "read, create, upload new objects, remove locks",
            Right::Write => "read, create, upload, delete",
        }
    }
}

/// One segment of a pattern.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Seg {
    Name(String),
    /// `*`: any one segment.
    One,
    /// `**` (last only): any rest, including none.
    Rest,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Who {
    /// `*`: any authenticated user.
    Anyone,
    User(String),
}

/// One line of `[permissions]`.
#[derive(Debug)]
pub(crate) struct Rule {
    pub line: usize,
    /// The line as written (trimmed), for `access check`.
    pub text: String,
    pattern: Vec<Seg>,
    grants: Vec<(Who, Right)>,
}

/// One line of `[quotas]`: a limit, or `None` for `unlimited`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct QuotaRule {
    pub line: usize,
    pub limit: Option<u64>,
}

/// The parsed access file.
#[derive(Debug, Default)]
pub(crate) struct Rules {
    rules: Vec<Rule>,
    /// Named first segments, in file order.
    quotas: Vec<(String, QuotaRule)>,
    /// `* = SIZE`.
    default_quota: Option<QuotaRule>,
}

/// The answer to "what may this user do here", with the rule that gave it.
#[derive(Debug)]
pub(crate) struct Decision<'a> {
    pub right: Right,
    /// `None`: no pattern matches the repo.
    pub rule: Option<&'a Rule>,
}

/// What is wrong with the file, and where.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct ParseError {
    pub line: usize,
    pub why: String,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}: {}", self.line, self.why)
    }
}

enum Section {
    Permissions,
    Quotas,
}

impl Rules {
    pub(crate) fn parse(text: &str) -> Result<Rules, ParseError> {
        let mut rules = Rules::default();
        let mut section = None;
        for (i, raw) in text.lines().enumerate() {
            let line = i + 1;
            let err = |why: String| ParseError { line, why };
            let content = strip_comment(raw).trim();
            if content.is_empty() {
                continue;
            }
            if let Some(name) = content.strip_prefix('[').and_then(|s| s.strip_suffix(']')) {
                section = Some(match name.trim() {
                    "permissions" => Section::Permissions,
                    "quotas" => Section::Quotas,
                    other => {
                        return Err(err(format!(
                            "unknown section [{other}]: expected [permissions] or [quotas]"
                        )));
                    }
                });
                continue;
            }
            let Some((left, right)) = content.split_once('=') else {
                return Err(err(format!(
                    "expected \"<left> = <right>\", got {content:?}"
                )));
            };
            let (left, right) = (left.trim(), right.trim());
            match section {
                None => {
                    return Err(err(
                        "a rule before any section: start with [permissions] or [quotas]".into(),
                    ));
                }
                Some(Section::Permissions) => {
                    let pattern = parse_pattern(left).map_err(err)?;
                    if let Some(earlier) = rules.rules.iter().find(|r| r.pattern == pattern) {
                        return Err(err(format!(
                            "pattern {left:?} is already on line {}, so this line could never apply",
                            earlier.line
                        )));
                    }
                    let grants = parse_grants(right).map_err(err)?;
                    rules.rules.push(Rule {
                        line,
                        text: content.to_owned(),
                        pattern,
                        grants,
                    });
                }
                Some(Section::Quotas) => {
                    let limit = parse_limit(right).map_err(err)?;
                    let rule = QuotaRule { line, limit };
                    let earlier = match left {
                        "*" => rules.default_quota.replace(rule),
                        name if literal_segment(name) => {
                            match rules.quotas.iter().find(|(n, _)| n == name) {
                                Some((_, q)) => Some(*q),
                                None => {
                                    rules.quotas.push((name.to_owned(), rule));
                                    None
                                }
                            }
                        }
                        _ => {
                            return Err(err(format!(
                                "{left:?} is not a first path segment: expected a name such as alice, or *"
                            )));
                        }
                    };
                    if let Some(q) = earlier {
                        return Err(err(format!(
                            "a quota for {left:?} is already on line {}",
                            q.line
                        )));
                    }
                }
            }
        }
        Ok(rules)
    }

    /// What `user` (`None`: anonymous, `--no-auth`) may do to the repo at `repo`.
    pub(crate) fn decide(&self, user: Option<&str>, repo: &[String]) -> Decision<'_> {
        let Some(rule) = self.rules.iter().find(|r| matches(&r.pattern, repo)) else {
            return Decision {
                right: Right::None,
                rule: None,
            };
        };
        let own = user.and_then(|u| {
            rule.grants
                .iter()
                .find(|(w, _)| matches!(w, Who::User(name) if name == u))
        });
        let anyone = rule.grants.iter().find(|(w, _)| *w == Who::Anyone);
        let right = own.or(anyone).map_or(Right::None, |(_, r)| *r);
        Decision {
            right,
            rule: Some(rule),
        }
    }

    /// The quota of a first path segment: its own line, else the `*` line, else none.
    pub(crate) fn quota(&self, segment: &str) -> Option<QuotaRule> {
        self.quotas
            .iter()
            .find(|(n, _)| n == segment)
            .map(|(_, q)| *q)
            .or(self.default_quota)
    }

    /// The segments named in `[quotas]`, for metrics.
    pub(crate) fn named_quotas(&self) -> impl Iterator<Item = &str> {
        self.quotas.iter().map(|(n, _)| n.as_str())
    }
}

impl Load for Rules {
    const WHAT: &'static str = "access file";

    fn load(path: &Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path).map_err(|e| e.to_string())?;
        Rules::parse(&text).map_err(|e| e.to_string())
    }

    fn summary(&self) -> String {
        format!(
            "{} permission rules, {} quotas",
            self.rules.len(),
            self.quotas.len() + usize::from(self.default_quota.is_some())
        )
    }
}

/// `#` starts a comment at the start of a line or after white space (a repo name may
/// contain `#`).
fn strip_comment(line: &str) -> &str {
    let mut prev_space = true;
    for (i, c) in line.char_indices() {
        if c == '#' && prev_space {
            return &line[..i];
        }
        prev_space = c.is_whitespace();
    }
    line
}

/// A literal segment of a pattern or quota name: a repository path segment that is not a
/// wildcard.
fn literal_segment(s: &str) -> bool {
    !s.contains('*') && valid_segment(s)
}

fn parse_pattern(s: &str) -> Result<Vec<Seg>, String> {
    if s.is_empty() {
        return Err("missing repo pattern before \"=\" (use / for the root repository)".into());
    }
    let trimmed = s.trim_matches('/');
    if trimmed.is_empty() {
        return Ok(Vec::new());
    }
    let parts: Vec<&str> = trimmed.split('/').collect();
    let mut pattern = Vec::with_capacity(parts.len());
    for (i, part) in parts.iter().enumerate() {
        let seg = match *part {
            "**" if i + 1 == parts.len() => Seg::Rest,
            "**" => return Err(format!("in pattern {s:?}: ** may only come last")),
            "*" => Seg::One,
            name if literal_segment(name) => Seg::Name(name.to_owned()),
            "" => return Err(format!("in pattern {s:?}: empty segment (//)")),
            name if name.contains('*') => {
                return Err(format!(
                    "in pattern {s:?}: {name:?}: * and ** must be a whole segment"
                ));
            }
            name => return Err(format!("in pattern {s:?}: invalid segment {name:?}")),
        };
        pattern.push(seg);
    }
    let fixed = pattern.iter().filter(|p| **p != Seg::Rest).count();
    if fixed > MAX_REPO_DEPTH {
        return Err(format!(
            "pattern {s:?} has more than {MAX_REPO_DEPTH} segments: repository paths never do"
        ));
    }
    Ok(pattern)
}

fn parse_grants(s: &str) -> Result<Vec<(Who, Right)>, String> {
    let mut grants: Vec<(Who, Right)> = Vec::new();
    for grant in s.split(',').map(str::trim) {
        if grant.is_empty() {
            if s.trim().is_empty() {
                break; // "pattern =": nobody may do anything there.
            }
            return Err("empty entry between commas".into());
        }
        let Some((user, right)) = grant.split_once(':') else {
            return Err(format!(
                "{grant:?}: expected <user>:<rights> such as alice:w or *:r"
            ));
        };
        let (user, right) = (user.trim(), right.trim());
        let who = match user {
            "*" => Who::Anyone,
            u if valid_username(u) => Who::User(u.to_owned()),
            u => {
                return Err(format!(
                    "invalid user {u:?}: use letters, digits and @ . _ - (or * for anyone)"
                ));
            }
        };
        let right = Right::parse(right)
            .ok_or_else(|| format!("unknown rights {right:?} for {user}: expected r, a, w or -"))?;
        if grants.iter().any(|(w, _)| *w == who) {
            return Err(format!("{user} is named twice on this line"));
        }
        grants.push((who, right));
    }
    Ok(grants)
}

fn parse_limit(s: &str) -> Result<Option<u64>, String> {
    match s {
        "unlimited" | "none" => Ok(None),
        _ => match parse_size(s) {
            Some(0) | None => Err(format!(
                "invalid size {s:?}: expected a size such as 50GiB, 2TB or 1000000, or unlimited"
            )),
            Some(n) => Ok(Some(n)),
        },
    }
}

fn matches(pattern: &[Seg], repo: &[String]) -> bool {
    match (pattern.split_first(), repo.split_first()) {
        (None, None) | (Some((Seg::Rest, _)), _) => true,
        (Some((Seg::One, p)), Some((_, r))) => matches(p, r),
        (Some((Seg::Name(n), p)), Some((s, r))) if n == s => matches(p, r),
        _ => false,
    }
}

/// `rest-server access check USER REPO --access-file FILE`: prints the rights and the line
/// that grants them. Exit 0 with some right, 1 with none, 2 for a bad file or argument.
pub(crate) fn check_command(file: &Path, user: &str, repo: &str) -> std::process::ExitCode {
    use std::process::ExitCode;
    let fail = |e: String| {
        errln!("rest-server: {e}");
        ExitCode::from(crate::cli::EXIT_USAGE)
    };
    let rules = match Rules::load(file) {
        Ok(r) => r,
        Err(e) => return fail(format!("access file {}: {e}", file.display())),
    };
    let segments = match split_repo(repo) {
        Ok(s) => s,
        Err(e) => return fail(e),
    };
    if user != "*" && !valid_username(user) {
        return fail(format!(
            "invalid user {user:?}: use letters, digits and @ . _ - (or * for anonymous)"
        ));
    }
    let who = (user != "*").then_some(user);
    let d = rules.decide(who, &segments);
    let path = format!("/{}", segments.join("/"));
    outln!(
        "{user} on {path}: {} = {}",
        d.right.letter(),
        d.right.describe()
    );
    match d.rule {
        None => outln!("  no pattern matches {path}: nobody has access"),
        Some(rule) => {
            outln!("  line {}: {}", rule.line, rule.text);
            let named = rule
                .grants
                .iter()
                .any(|(w, _)| matches!(w, Who::User(n) if Some(n.as_str()) == who));
            let anyone = rule.grants.iter().any(|(w, _)| *w == Who::Anyone);
            if !named && !anyone {
                outln!("  ({user} is not named there, and it has no * entry)");
            }
        }
    }
    if let Some(first) = segments.first() {
        match rules.quota(first) {
            Some(QuotaRule {
                line,
                limit: Some(n),
            }) => outln!("quota of /{first}: {n} bytes (line {line})"),
            Some(QuotaRule { line, limit: None }) => {
                outln!("quota of /{first}: unlimited (line {line})")
            }
            None => outln!("quota of /{first}: none in [quotas]"),
        }
    }
    if d.right == Right::None {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}

/// Splits a repo path as given on the command line (`alice/laptop`, `/alice/laptop/`, `/`).
pub(crate) fn split_repo(s: &str) -> Result<Vec<String>, String> {
    let trimmed = s.trim_matches('/');
    if trimmed.is_empty() {
        return Ok(Vec::new());
    }
    let parts: Vec<String> = trimmed.split('/').map(str::to_owned).collect();
    match RepoPath::new(parts) {
        Some(repo) => Ok(repo.segments().to_vec()),
        None => Err(format!(
            "invalid repository {s:?}: expected up to {MAX_REPO_DEPTH} names such as alice/laptop, or /"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = "\
# the example of the README
[permissions]
alice/**   = alice:w, monitor:r   # alice's own
laptops/*  = *:a, guest:-
/          = admin:w
**         = admin:w

[quotas]
alice = 50GiB
public = unlimited
*     = 10GiB
";

    fn repo(s: &str) -> Vec<String> {
        split_repo(s).unwrap()
    }

    fn right(rules: &Rules, user: Option<&str>, r: &str) -> Right {
        rules.decide(user, &repo(r)).right
    }

    #[test]
    fn example_parses_and_first_match_wins() {
        let rules = Rules::parse(EXAMPLE).unwrap();
        let alice = Some("alice");
        assert_eq!(right(&rules, alice, "alice"), Right::Write);
        assert_eq!(right(&rules, alice, "alice/laptop"), Right::Write);
        assert_eq!(right(&rules, Some("monitor"), "alice/x"), Right::Read);
        // alice/** matched first: admin is not named there, so gets nothing.
        assert_eq!(right(&rules, Some("admin"), "alice/x"), Right::None);
        assert_eq!(right(&rules, Some("bob"), "laptops/x"), Right::Append);
        assert_eq!(
            right(&rules, None, "laptops/x"),
            Right::Append,
            "* covers anonymous"
        );
        assert_eq!(
            right(&rules, Some("guest"), "laptops/x"),
            Right::None,
            "own entry wins"
        );
        // laptops/* needs exactly two segments: laptops itself falls through to **.
        assert_eq!(right(&rules, Some("bob"), "laptops"), Right::None);
        assert_eq!(right(&rules, Some("admin"), "laptops"), Right::Write);
        assert_eq!(right(&rules, Some("admin"), "/"), Right::Write);
        assert_eq!(right(&rules, Some("alice"), "/"), Right::None);
        let d = rules.decide(Some("monitor"), &repo("alice/x"));
        assert_eq!(d.rule.map(|r| r.line), Some(3));
        assert_eq!(
            d.rule.map(|r| r.text.as_str()),
            Some("alice/**   = alice:w, monitor:r")
        );
    }

    #[test]
    fn no_matching_pattern_means_no_access() {
        let rules = Rules::parse("[permissions]\nalice = alice:w\n").unwrap();
        let d = rules.decide(Some("alice"), &repo("alice/x"));
        assert_eq!((d.right, d.rule.is_none()), (Right::None, true));
        assert_eq!(right(&rules, Some("alice"), "alice"), Right::Write);
        let empty = Rules::parse("").unwrap();
        assert_eq!(right(&empty, Some("alice"), "alice"), Right::None);
    }

    #[test]
    fn patterns() {
        let p = |s: &str| parse_pattern(s).unwrap();
        let m = |pat: &str, r: &str| matches(&p(pat), &repo(r));
        assert!(m("**", "/") && m("**", "a") && m("**", "a/b"));
        assert!(m("/", "/") && !m("/", "a"));
        assert!(m("a/**", "a") && m("a/**", "a/b") && !m("a/**", "b/a"));
        assert!(m("*", "a") && !m("*", "/") && !m("*", "a/b"));
        assert!(m("*/b", "a/b") && !m("*/b", "a/c"));
        assert!(m("/a/b/", "a/b") && !m("a/b", "a"));
        assert!(m("a/b/**", "a/b") && !m("a/b/**", "a"));
        assert!(m("*/*/**", "a/b") && !m("*/*/**", "a"));
    }

    #[test]
    fn quotas() {
        let rules = Rules::parse(EXAMPLE).unwrap();
        assert_eq!(rules.quota("alice").and_then(|q| q.limit), Some(50 << 30));
        assert_eq!(rules.quota("laptops").and_then(|q| q.limit), Some(10 << 30));
        assert_eq!(rules.quota("laptops").map(|q| q.line), Some(11));
        assert_eq!(
            rules.quota("public"),
            Some(QuotaRule {
                line: 10,
                limit: None
            })
        );
        let none = Rules::parse("[quotas]\nx = unlimited\n").unwrap();
        assert_eq!(none.quota("y"), None);
        assert_eq!(
            Rules::parse("[quotas]\nx = 5k\n")
                .unwrap()
                .quota("x")
                .unwrap()
                .limit,
            Some(5000)
        );
    }

    #[test]
    fn every_error_names_its_line() {
        let cases: &[(&str, usize, &str)] = &[
            ("alice = alice:w\n", 1, "before any section"),
            ("[permissions]\n\n[rights]\n", 3, "unknown section [rights]"),
            (
                "[permissions]\nalice alice:w\n",
                2,
                "expected \"<left> = <right>\"",
            ),
            ("[permissions]\n = alice:w\n", 2, "missing repo pattern"),
            (
                "[permissions]\n**/a = alice:w\n",
                2,
                "** may only come last",
            ),
            (
                "[permissions]\nal*ce = alice:w\n",
                2,
                "must be a whole segment",
            ),
            ("[permissions]\na//b = alice:w\n", 2, "empty segment"),
            (
                "[permissions]\na/b/c = alice:w\n",
                2,
                "more than 2 segments",
            ),
            ("[permissions]\na/.. = alice:w\n", 2, "invalid segment"),
            ("[permissions]\na = alice\n", 2, "expected <user>:<rights>"),
            ("[permissions]\na = alice:rw\n", 2, "unknown rights \"rw\""),
            (
                "[permissions]\na = al ice:r\n",
                2,
                "invalid user \"al ice\"",
            ),
            ("[permissions]\na = alice:r,\n", 2, "empty entry"),
            ("[permissions]\na = alice:r, alice:w\n", 2, "named twice"),
            (
                "[permissions]\na = x:r\n# c\n/a/ = y:r\n",
                4,
                "already on line 2",
            ),
            ("[quotas]\nalice = lots\n", 2, "invalid size \"lots\""),
            ("[quotas]\nalice = 0\n", 2, "invalid size \"0\""),
            ("[quotas]\nalice/x = 1G\n", 2, "not a first path segment"),
            ("[quotas]\n* = 1G\n* = 2G\n", 3, "already on line 2"),
            ("[quotas]\na = 1G\na = 2G\n", 3, "already on line 2"),
        ];
        for (text, line, why) in cases {
            let e = Rules::parse(text).unwrap_err();
            assert_eq!(e.line, *line, "{text:?}: {e}");
            assert!(e.why.contains(why), "{text:?}: {e} lacks {why:?}");
        }
    }

    #[test]
    fn comments_and_empty_grants() {
        let rules = Rules::parse("[permissions]  # rules\nsecret/** =\nrepo#1 = a:r #x\n").unwrap();
        assert_eq!(right(&rules, Some("a"), "secret/x"), Right::None);
        assert!(rules.decide(Some("a"), &repo("secret/x")).rule.is_some());
        assert_eq!(right(&rules, Some("a"), "repo#1"), Right::Read);
    }

    #[test]
    fn repo_arguments() {
        assert_eq!(split_repo("/").unwrap(), Vec::<String>::new());
        assert_eq!(split_repo("/a/b/").unwrap(), ["a", "b"]);
        assert!(split_repo("a/b/c").is_err());
        assert!(split_repo("a/../b").is_err());
    }
}
