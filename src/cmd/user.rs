//! `rest-server user add|remove|list|check`: manages the htpasswd file without Apache's
//! `htpasswd`, which a router or NAS usually lacks.
//!
//! New passwords are bcrypt (what the Go server accepts too). Every other line, comments and
//! lines the server skips included, is kept as it was. The file is replaced atomically (temp
//! file beside it, fsync, rename, directory fsync), so a running server never reads half a
//! file; it notices the new file by itself within 30 s (mtime reload), or at once on SIGHUP.
//!
//! `add` and `remove` read, change and replace the file under an exclusive advisory lock
//! (`flock`) on a sibling file, `<file>.lock`, so two commands at the same time cannot lose
//! one of the two changes. Not on the file itself: the rename gives the file a new inode, and
//! a command that opened the new one would not see the lock held on the old. The lock file is
//! empty, stays in place (deleting it would let a third command lock a fresh inode while a
//! second still waits on the old one) and means nothing to the server, which never reads it.
//! The password is asked and hashed before the lock is taken, so a command waiting at the
//! password prompt holds up no other.

use crate::auth::htpasswd::{self, Hash};
use crate::cli::{self, Arity, DEFAULT_PATH, Grammar};
use crate::storage::upload::replace_file;
use std::ffi::OsString;
use std::fs::{self, File, OpenOptions, TryLockError};
use std::io::{self, BufRead};
use std::os::unix::fs::{DirBuilderExt as _, MetadataExt as _, OpenOptionsExt as _};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// bcrypt cost of new passwords: what `htpasswd -B -C 10` writes; ~100 ms per check on a
/// Raspberry Pi 4, paid once a minute per client thanks to the server's cache.
const DEFAULT_COST: u32 = 10;

/// What the bcrypt crate (and OpenBSD's bcrypt) accept.
const COSTS: std::ops::RangeInclusive<u32> = 4..=31;

/// bcrypt only looks at this many bytes of a password; longer ones are refused rather than
/// silently truncated.
const MAX_PASSWORD_BYTES: usize = 72;

/// Mode of a new htpasswd file: only its owner (the server's user) may read the hashes.
const FILE_MODE: u32 = crate::modes::PRIVATE_FILE;

/// Mode of a data directory created for a first user, as the server creates it.
const DIR_MODE: u32 = crate::modes::PRIVATE_DIR;

/// Exit status when `check` finds a wrong password or the user is missing, or `remove`
/// finds no such user (and on I/O errors).
const EXIT_NO: u8 = 1;

pub(crate) const USER_HELP: &str = "\
Manage the users of the htpasswd file (no Apache htpasswd needed).

Usage:
  rest-server user add NAME      add NAME, or change NAME's password
  rest-server user remove NAME   remove NAME
  rest-server user list          list users and their hash formats
  rest-server user check NAME    check NAME's password: exit 0 if right, 1 if not

Flags:
      --path DIR                  data directory; the file is DIR/.htpasswd
                                  (default \"/tmp/restic\", as for the server)
      --htpasswd-file FILE        the htpasswd file (overrides --path)
      --cost N                    bcrypt cost for new passwords, 4 to 31 (default 10)
      --password-stdin            read the password from the first line of standard input
                                  instead of asking on the terminal
  -h, --help                      show this help

NAME may contain letters, digits and @ . _ -. The password is asked twice on the terminal
(without echo) for `add`. Other lines and comments of the file are kept; the file is
replaced atomically with mode 0600 (group-read kept if the old file had it); run as root,
the file keeps its owner and group, and a new file gets those of its directory (so the
server's user can read it). add and remove lock FILE.lock (created beside the file and left
there) while they change the file, so concurrent commands do not lose changes. A running
server picks up the change within 30 s, or at once on SIGHUP.
";

#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Action {
    Add(String),
    Remove(String),
    List,
    Check(String),
    Help,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct UserCommand {
    pub action: Action,
    pub file: PathBuf,
    pub cost: u32,
    pub password_stdin: bool,
}

/// What `user` accepts (the help test checks each flag is documented).
const USER: Grammar = Grammar {
    command: "rest-server user",
    flags: &[
        ("path", Arity::Value),
        ("htpasswd-file", Arity::Value),
        ("cost", Arity::Value),
        ("password-stdin", Arity::Bool),
        ("help", Arity::Bool),
    ],
    short: &[('h', "help")],
    words: true,
};

/// Parses the arguments after `user`. The error is one line naming the problem.
pub(crate) fn parse(args: impl IntoIterator<Item = OsString>) -> Result<UserCommand, String> {
    let given = cli::lex(args, &USER)?;
    let help = given.flag("help");
    let password_stdin = given.flag("password-stdin");
    let cost = match given.value("cost") {
        None => DEFAULT_COST,
        Some(v) => v
            .parse()
            .ok()
            .filter(|c| COSTS.contains(c))
            .ok_or_else(|| format!("invalid value {v:?} for --cost: expected 4 to 31"))?,
    };
    let path = given.path("path")?;
    let file = given.path("htpasswd-file")?;
    let words = given.words;
    let file = file.unwrap_or_else(|| {
        path.unwrap_or_else(|| DEFAULT_PATH.into())
            .join(".htpasswd")
    });
    let mut words = words.into_iter();
    let action = match (words.next().as_deref(), words.next()) {
        _ if help => Action::Help,
        (Some("add"), Some(name)) => {
            if !htpasswd::valid_username(&name) {
                return Err(format!(
                    "invalid user name {name:?}: use letters, digits and @ . _ - only"
                ));
            }
            Action::Add(name)
        }
        (Some("remove"), Some(name)) => Action::Remove(name),
        (Some("check"), Some(name)) => Action::Check(name),
        (Some("list"), None) => Action::List,
        (Some(verb @ ("add" | "remove" | "check")), None) => {
            return Err(format!("rest-server user {verb} needs a user name"));
        }
        (None, _) => {
            return Err(
                "missing action: add, remove, list or check (see rest-server user --help)".into(),
            );
        }
        (Some(other), _) => {
            return Err(format!(
                "unexpected {other:?}: expected add NAME, remove NAME, list or check NAME"
            ));
        }
    };
    if let Some(extra) = words.next() {
        return Err(format!(
            "unexpected argument {extra:?} (see rest-server user --help)"
        ));
    }
    Ok(UserCommand {
        action,
        file,
        cost,
        password_stdin,
    })
}

/// Runs the command; messages go to stdout, problems to stderr.
pub(crate) fn run(cmd: &UserCommand) -> ExitCode {
    let result = match &cmd.action {
        Action::Help => {
            out!("{USER_HELP}");
            Ok(true)
        }
        Action::Add(name) => add(cmd, name),
        Action::Remove(name) => remove(&cmd.file, name),
        Action::List => list(&cmd.file),
        Action::Check(name) => check(cmd, name),
    };
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(EXIT_NO),
        Err(e) => {
            errln!("rest-server: {e}");
            ExitCode::from(EXIT_NO)
        }
    }
}

fn add(cmd: &UserCommand, name: &str) -> Result<bool, String> {
    let file = &cmd.file;
    // Read first: a file we cannot read must not be replaced by one with a single user, and
    // better said before the password is asked.
    read_or_empty(file)?;
    let password = read_password(cmd, &format!("Password for {name}: "), true)?;
    let hash = Hash::bcrypt(&password, cmd.cost)?;
    let line = format!("{name}:{}", String::from_utf8_lossy(hash.stored()));
    if let Some(dir) = file
        .parent()
        .filter(|d| !d.as_os_str().is_empty() && !d.exists())
    {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(DIR_MODE)
            .create(dir)
            .map_err(|e| format!("cannot create directory {}: {e}", dir.display()))?;
    }
    let _lock = lock(file)?;
    // Again, under the lock: what another command wrote meanwhile is kept.
    let text = read_or_empty(file)?;
    let (text, replaced) = set_user(&text, name, &line);
    write_atomically(file, &text).map_err(|e| format!("cannot write {}: {e}", file.display()))?;
    if replaced {
        outln!("changed the password of {name} in {}", file.display());
    } else {
        outln!("added {name} to {}", file.display());
    }
    outln!("a running rest-server picks this up within 30 s (or at once on SIGHUP)");
    Ok(true)
}

/// The file's text, or nothing if there is no file yet.
fn read_or_empty(file: &Path) -> Result<String, String> {
    match fs::read_to_string(file) {
        Ok(t) => Ok(t),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(String::new()),
        Err(e) => Err(format!("cannot read {}: {e}", file.display())),
    }
}

fn remove(file: &Path, name: &str) -> Result<bool, String> {
    let read =
        || fs::read_to_string(file).map_err(|e| format!("cannot read {}: {e}", file.display()));
    // A missing file is reported as such, not as a lock file that cannot be created.
    read()?;
    let _lock = lock(file)?;
    let Some(text) = remove_user(&read()?, name) else {
        errln!("rest-server: no user {name:?} in {}", file.display());
        return Ok(false);
    };
    write_atomically(file, &text).map_err(|e| format!("cannot write {}: {e}", file.display()))?;
    outln!("removed {name} from {}", file.display());
    outln!("a running rest-server locks {name} out within 30 s (or at once on SIGHUP)");
    Ok(true)
}

fn list(file: &Path) -> Result<bool, String> {
    let text =
        fs::read_to_string(file).map_err(|e| format!("cannot read {}: {e}", file.display()))?;
    let (users, warnings) = htpasswd::parse(&text);
    for w in warnings {
        errln!("warning: {}: {w}", file.display());
    }
    let mut users: Vec<_> = users.into_iter().collect();
    users.sort_by(|a, b| a.0.cmp(&b.0));
    for (name, hash) in users {
        outln!("{name}\t{}", hash.format_name());
    }
    Ok(true)
}

fn check(cmd: &UserCommand, name: &str) -> Result<bool, String> {
    let file = &cmd.file;
    let text =
        fs::read_to_string(file).map_err(|e| format!("cannot read {}: {e}", file.display()))?;
    let (users, _) = htpasswd::parse(&text);
    let Some(hash) = users.get(name) else {
        errln!(
            "rest-server: no usable entry for {name:?} in {}",
            file.display()
        );
        return Ok(false);
    };
    let password = read_password(cmd, &format!("Password for {name}: "), false)?;
    if hash.verify(password.as_bytes()) {
        outln!("password of {name} is correct");
        Ok(true)
    } else {
        errln!("rest-server: wrong password for {name}");
        Ok(false)
    }
}

/// What to do about an htpasswd file the server cannot load, appended to the error: how to
/// create a missing one; for one it may not read, whose it is, its mode and the `chown` (or
/// `chmod`) that lets this process read it; for a directory on the way that it may not enter,
/// the same about that directory.
pub(crate) fn load_hint(file: &Path) -> String {
    let me = process_uid();
    let who = |uid: u32| match name_of(Path::new("/etc/passwd"), uid) {
        Some(n) => format!("{n} (uid {uid})"),
        None => format!("uid {uid}"),
    };
    let fix = |path: &Path, m: &fs::Metadata, need: &str| {
        let mode = m.mode() & 0o7777;
        let group = match name_of(Path::new("/etc/group"), m.gid()) {
            Some(n) => format!("{n} (gid {})", m.gid()),
            None => format!("gid {}", m.gid()),
        };
        let what = if m.is_dir() { "directory" } else { "file" };
        let mut text = format!(
            "; the {what} {} is owned by {}, group {group}, mode {mode:04o}",
            path.display(),
            who(m.uid()),
        );
        match me {
            Some(me) if me == m.uid() => text.push_str(&format!(
                ", which does not let its owner {need} it: `chmod u+{} {}`",
                if m.is_dir() { "rx" } else { "r" },
                path.display()
            )),
            Some(me) => {
                let user = name_of(Path::new("/etc/passwd"), me).unwrap_or_else(|| me.to_string());
                text.push_str(&format!(
                    ", and this server runs as {}, which may not {need} it: give it to that \
                     user with `chown {user}: {}`",
                    who(me),
                    path.display()
                ));
            }
            None => text.push_str(": make it readable for the server's user"),
        }
        text
    };
    match fs::metadata(file) {
        Ok(m) => fix(file, &m, "read"),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            let how = match (file.file_name(), file.parent()) {
                (Some(n), Some(dir)) if n == ".htpasswd" && !dir.as_os_str().is_empty() => {
                    format!("--path {}", dir.display())
                }
                _ => format!("--htpasswd-file {}", file.display()),
            };
            format!(
                " (create it with `rest-server user add {how} USER` or `htpasswd -B -c {} USER`, \
                 or start with --no-auth)",
                file.display()
            )
        }
        Err(e) if e.kind() == io::ErrorKind::PermissionDenied => {
            // The deepest directory on the way that we can see but not enter.
            let blocked = file
                .ancestors()
                .skip(1)
                .filter(|d| !d.as_os_str().is_empty())
                .find_map(|d| fs::metadata(d).ok().map(|m| (d, m)));
            match blocked {
                Some((d, m)) => fix(d, &m, "enter"),
                None => String::new(),
            }
        }
        Err(_) => String::new(),
    }
}

/// The effective uid of this process: the owner of its `/proc/self` (no libc call, so no
/// unsafe code; `ProtectProc=invisible` and `ProcSubset=pid` keep it visible).
fn process_uid() -> Option<u32> {
    fs::metadata("/proc/self").ok().map(|m| m.uid())
}

/// The name of `id` in a passwd or group file (`name:x:id:...`).
fn name_of(db: &Path, id: u32) -> Option<String> {
    let text = fs::read_to_string(db).ok()?;
    text.lines().find_map(|line| {
        let mut fields = line.split(':');
        let name = fields.next()?;
        let num: u32 = fields.nth(1)?.parse().ok()?;
        (num == id).then(|| name.to_owned())
    })
}

/// From stdin's first line (`--password-stdin`) or the terminal without echo; a new password
/// (`confirm`) is asked twice and must fit bcrypt.
fn read_password(cmd: &UserCommand, prompt: &str, confirm: bool) -> Result<String, String> {
    let password = if cmd.password_stdin {
        let mut line = String::new();
        io::stdin()
            .lock()
            .read_line(&mut line)
            .map_err(|e| format!("cannot read the password from standard input: {e}"))?;
        let line = line.strip_suffix('\n').unwrap_or(&line);
        line.strip_suffix('\r').unwrap_or(line).to_owned()
    } else {
        let no_tty = |e: io::Error| {
            format!("cannot read a password from the terminal ({e}): use --password-stdin")
        };
        let first = rpassword::prompt_password(prompt).map_err(no_tty)?;
        if confirm {
            let again = rpassword::prompt_password("Retype password: ").map_err(no_tty)?;
            if again != first {
                return Err("the passwords do not match; nothing changed".into());
            }
        }
        first
    };
    if confirm && password.is_empty() {
        return Err("empty password refused; nothing changed".into());
    }
    if confirm && password.len() > MAX_PASSWORD_BYTES {
        return Err(format!(
            "password longer than {MAX_PASSWORD_BYTES} bytes, of which bcrypt would ignore the rest; nothing changed"
        ));
    }
    Ok(password)
}

/// The file with `name`'s line(s) replaced by `line` (in place of the first, later duplicates
/// dropped) or `line` appended; `true` if the user was there.
fn set_user(text: &str, name: &str, line: &str) -> (String, bool) {
    let mut out = String::with_capacity(text.len() + line.len() + 1);
    let mut replaced = false;
    for old in text.lines() {
        if htpasswd::line_user(old) == Some(name) {
            if !replaced {
                out.push_str(line);
                out.push('\n');
                replaced = true;
            }
        } else {
            out.push_str(old);
            out.push('\n');
        }
    }
    if !replaced {
        out.push_str(line);
        out.push('\n');
    }
    (out, replaced)
}

/// The file without `name`'s lines, or `None` if it has none.
fn remove_user(text: &str, name: &str) -> Option<String> {
    let mut out = String::with_capacity(text.len());
    let mut found = false;
    for old in text.lines() {
        if htpasswd::line_user(old) == Some(name) {
            found = true;
        } else {
            out.push_str(old);
            out.push('\n');
        }
    }
    found.then_some(out)
}

/// The file that `path` names: a symlinked htpasswd file is followed (and stays a link).
fn resolve(path: &Path) -> io::Result<PathBuf> {
    match fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_symlink() => fs::canonicalize(path),
        _ => Ok(path.to_owned()),
    }
}

/// The directory and file name of `target`.
fn dir_and_name(target: &Path) -> (PathBuf, String) {
    let dir = match target.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_owned(),
        _ => PathBuf::from("."),
    };
    let name = target
        .file_name()
        .map_or("htpasswd".into(), |n| n.to_string_lossy().into_owned());
    (dir, name)
}

/// Who should own the htpasswd file (and its lock file) that a command writes: the old file's
/// owner and group, or for a new file those of its directory. `sudo rest-server user add
/// --path /var/lib/rest-server alice` must leave a file that the service user (who owns the
/// data directory) can read, not a root-owned one that stops the service from starting.
fn owner_for(target: &Path, dir: &Path) -> Option<(u32, u32)> {
    let m = fs::metadata(target).or_else(|_| fs::metadata(dir)).ok()?;
    Some((m.uid(), m.gid()))
}

/// Takes the exclusive lock that serialises the read-modify-write of `file` among `user`
/// commands (see the top of this file): `<file>.lock` beside the file a symlink points to, so
/// commands that name it by different paths take the same lock. Held until the returned file
/// is dropped or the process ends (the kernel releases it even after a crash).
fn lock(file: &Path) -> Result<File, String> {
    let target = resolve(file).map_err(|e| format!("cannot resolve {}: {e}", file.display()))?;
    let (dir, name) = dir_and_name(&target);
    let path = dir.join(format!("{name}.lock"));
    let opened = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(FILE_MODE)
        .open(&path)
        .or_else(|e| match e.kind() {
            // flock needs no write access: a lock file made by someone else will do.
            io::ErrorKind::PermissionDenied => File::open(&path),
            _ => Err(e),
        });
    let f = opened.map_err(|e| format!("cannot open lock file {}: {e}", path.display()))?;
    // Root editing the file of a server that runs as its own user: give that user the lock
    // file too, so it can run `rest-server user` later. Others cannot chown: ignored.
    if let Some((uid, gid)) = owner_for(&target, &dir) {
        let _ = std::os::unix::fs::fchown(&f, Some(uid), Some(gid));
    }
    match f.try_lock() {
        Ok(()) => {}
        Err(TryLockError::WouldBlock) => {
            errln!(
                "waiting for another rest-server user command to finish with {}",
                file.display()
            );
            f.lock()
                .map_err(|e| format!("cannot lock {}: {e}", path.display()))?;
        }
        Err(TryLockError::Error(e)) => {
            return Err(format!("cannot lock {}: {e}", path.display()));
        }
    }
    Ok(f)
}

/// Replaces `path` with `text` crash-safely (`storage::upload::replace_file`: temp file, fsync,
/// rename, directory fsync). A symlinked htpasswd file is followed, so the link stays.
fn write_atomically(path: &Path, text: &str) -> io::Result<()> {
    let target = resolve(path)?;
    let (dir, _) = dir_and_name(&target);
    let old = fs::metadata(&target).ok();
    // 0600, keeping group-read if the old file had it (a root:restic 0640 setup stays readable
    // by the server's group).
    let mode = FILE_MODE | old.as_ref().map_or(0, |m| m.mode() & 0o040);
    // Root editing the file of a server that runs as its own user: keep it the owner.
    replace_file(&target, text.as_bytes(), mode, owner_for(&target, &dir))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cmd(args: &[&str]) -> Result<UserCommand, String> {
        parse(args.iter().map(OsString::from))
    }

    #[test]
    fn parses_actions_and_flags() {
        let c = cmd(&[
            "add",
            "alice@nas",
            "--path",
            "/srv/r",
            "--cost=12",
            "--password-stdin",
        ])
        .unwrap();
        assert_eq!(c.action, Action::Add("alice@nas".into()));
        assert_eq!(c.file, PathBuf::from("/srv/r/.htpasswd"));
        assert_eq!((c.cost, c.password_stdin), (12, true));
        let c = cmd(&["--htpasswd-file=/etc/rs", "--path", "/x", "list"]).unwrap();
        assert_eq!((c.action, c.file), (Action::List, PathBuf::from("/etc/rs")));
        let c = cmd(&["check", "bob"]).unwrap();
        assert_eq!(c.file, PathBuf::from("/tmp/restic/.htpasswd"));
        assert_eq!(c.cost, DEFAULT_COST);
        assert_eq!(
            cmd(&["remove", "bob"]).unwrap().action,
            Action::Remove("bob".into())
        );
        assert_eq!(cmd(&["-h"]).unwrap().action, Action::Help);
        assert_eq!(cmd(&["add", "--help"]).unwrap().action, Action::Help);
    }

    #[test]
    fn bad_user_command_lines() {
        for args in [
            &[][..],
            &["add"],
            &["add", "bad name"],
            &["add", "a:b"],
            &["add", "jo\u{308}rg"],
            &["list", "extra"],
            &["frobnicate"],
            &["add", "x", "--cost", "3"],
            &["add", "x", "--cost", "32"],
            &["add", "x", "--cost"],
            &["add", "x", "--bogus"],
            &["add", "x", "y"],
            &["add", "x", "--path="],
        ] {
            let e = cmd(args).unwrap_err();
            assert!(!e.contains('\n') && !e.is_empty(), "{args:?}: {e}");
        }
    }

    #[test]
    fn help_lists_every_flag() {
        for (name, _) in USER.flags {
            assert!(
                USER_HELP.contains(&format!("--{name}")),
                "user --help misses --{name}"
            );
        }
    }

    #[test]
    fn edits_keep_other_lines() {
        let text = "# users\nalice:$2y$old\n\nbob:{SHA}x\nalice:dup\ncarol:plain\n";
        let (out, replaced) = set_user(text, "alice", "alice:$2y$new");
        assert!(replaced);
        assert_eq!(out, "# users\nalice:$2y$new\n\nbob:{SHA}x\ncarol:plain\n");
        let (out, replaced) = set_user("# only a comment", "dave", "dave:h");
        assert!(!replaced);
        assert_eq!(out, "# only a comment\ndave:h\n");
        assert_eq!(
            remove_user(text, "bob").unwrap(),
            "# users\nalice:$2y$old\n\nalice:dup\ncarol:plain\n"
        );
        assert_eq!(remove_user(text, "nobody"), None);
        // A user whose name is a prefix of another is not touched.
        assert_eq!(remove_user("al:x\nalice:y\n", "al").unwrap(), "alice:y\n");
    }
}
