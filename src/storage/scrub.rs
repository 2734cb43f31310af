//! Scrubbing: re-reads stored objects and checks each against its name (every object but
//! `config` is named by the SHA-256 of its content), so bit rot is found before a restore
//! needs the damaged pack. Used by `rest-server scrub` (`cmd/scrub.rs`) and by the server's
//! background pass (`--scrub-every`, [`spawn_background`]).
//!
//! Never modifies, moves or deletes a stored file: damage is reported, repairs are restic's
//! (README, "Checking for bit rot"). Locks are skipped (they are short-lived and rewritten by
//! clients). Objects are visited in one fixed order (repository, type, name), so a pass can
//! resume after the last object it checked: the background pass keeps that position in
//! [`STATE_FILE`] directly under `--path`, a name no repository path can take
//! (`storage/names.rs`). An object deleted during a pass is skipped, one added is picked up by
//! the next pass: neither is ever reported as damage.

use crate::lock::Lock as _;
use crate::storage::inventory::is_repo_dir;
use crate::storage::names::{Kind, ObjectId, RepoPath};
use crate::storage::upload::{TEMP_MARKER, hex, replace_file};
use rustix::fs::{Mode, OFlags};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::fmt;
use std::fs::{self, File};
use std::io::{self, Read};
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The background pass's position, directly under `--path`. Its name is refused as a
/// repository path segment, so no repository can collide with it.
pub(crate) const STATE_FILE: &str = crate::storage::names::SCRUB_STATE_FILE;

/// The types that are checked, in pass order (locks are skipped).
const CHECKED: [Kind; 4] = [Kind::Data, Kind::Index, Kind::Keys, Kind::Snapshots];

/// One read(2) of a scrub: large reads for the disk, and at 1 MiB/s eight per second, so the
/// pace stays smooth and an upload that starts waits at most one read for the scrub to yield.
const READ_CHUNK: usize = 128 * 1024;

/// How often a paused pass looks whether the uploads are done.
const PAUSE_POLL: Duration = Duration::from_millis(50);

/// How often the background pass saves its position: at most this much re-reading after a
/// crash or restart, and a few hundred bytes written per interval. Tests shorten it with the
/// test-only `REST_SERVER_SCRUB_STATE_INTERVAL_MS` (README, "Checking for bit rot").
const STATE_INTERVAL: Duration = Duration::from_secs(60);

/// What is wrong with a stored file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Problem {
    /// The content hashes to something other than the name.
    HashMismatch { actual: String },
    /// Opening or reading failed (EIO from a failing disk, EACCES, ...).
    Unreadable(String),
    /// Something other than a regular file stands under an object name.
    NotAFile(&'static str),
    /// The name is not an object id (or a pack is in the wrong `data/xx` directory).
    BadName,
}

impl Problem {
    /// A short machine-readable word for `--json`.
    pub(crate) fn code(&self) -> &'static str {
        match self {
            Problem::HashMismatch { .. } => "hash_mismatch",
            Problem::Unreadable(_) => "unreadable",
            Problem::NotAFile(_) => "not_a_file",
            Problem::BadName => "bad_name",
        }
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Problem::HashMismatch { actual } => {
                write!(f, "content hashes to {actual}, not to its name")
            }
            Problem::Unreadable(e) => write!(f, "cannot be read: {e}"),
            Problem::NotAFile(what) => write!(f, "is {what}, not a regular file"),
            Problem::BadName => write!(f, "name is not an object id of its directory"),
        }
    }
}

/// One stored file of a pass.
#[derive(Debug)]
pub(crate) struct Object {
    pub repo: RepoPath,
    pub kind: Kind,
    /// The file name (for a bad entry of `data/`, `xx/name`).
    pub name: String,
    pub path: PathBuf,
    /// Set when the walk itself found it bad (a directory it cannot read).
    found: Option<Problem>,
    key: Vec<u8>,
}

impl Object {
    /// Its place in the pass order; a resumed pass starts after the saved key.
    pub(crate) fn key(&self) -> &[u8] {
        &self.key
    }
}

/// The key of an object: repository, type, directories and name, joined by NUL (which sorts
/// before every character, so the keys sort as the walk visits them).
fn key_of(repo: &RepoPath, kind: Kind, rel: &[&str]) -> Vec<u8> {
    let mut k = repo.joined().into_bytes();
    k.push(0);
    let i = CHECKED.iter().position(|c| *c == kind).unwrap_or(0);
    k.push(b'0' + i as u8);
    for part in rel {
        k.push(0);
        k.extend_from_slice(part.as_bytes());
    }
    k
}

/// What checking one object found.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// Intact; this many bytes were read.
    Intact(u64),
    Damaged(Problem),
    /// Deleted since the walk saw it: not damage.
    Gone,
}

/// The repositories below `root`, sorted by name, as the inventory finds them
/// ([`is_repo_dir`]): `root` itself and directories down to the deepest repository path,
/// repositories inside repositories too (outside their type directories).
pub(crate) fn find_repos(root: &Path) -> io::Result<Vec<RepoPath>> {
    let mut found = Vec::new();
    let mut stack = vec![RepoPath::default()];
    while let Some(repo) = stack.pop() {
        let dir = repo_dir(root, &repo);
        let is_repo = is_repo_dir(&dir, repo.segments());
        if repo.segments().len() < crate::storage::names::MAX_REPO_DEPTH {
            let entries = match fs::read_dir(&dir) {
                Ok(e) => Some(e),
                Err(e) if repo.segments().is_empty() => return Err(e),
                Err(_) => None,
            };
            for entry in entries.into_iter().flatten().flatten() {
                let Ok(name) = entry.file_name().into_string() else {
                    continue;
                };
                if !entry.file_type().is_ok_and(|t| t.is_dir())
                    || (is_repo && Kind::parse(&name).is_some())
                {
                    continue;
                }
                let mut segments = repo.segments().to_vec();
                segments.push(name);
                if let Some(child) = RepoPath::new(segments) {
                    stack.push(child);
                }
            }
        }
        if is_repo {
            found.push(repo);
        }
    }
    found.sort_by_key(|r| r.joined());
    Ok(found)
}

fn repo_dir(root: &Path, repo: &RepoPath) -> PathBuf {
    let mut dir = root.to_path_buf();
    dir.extend(repo.segments());
    dir
}

/// Sorted entries of a directory: (name, is a directory). `NotFound` is an empty directory
/// (restic creates no `keys/` until ... and a repository may be deleted during a pass).
fn sorted_entries(dir: &Path) -> io::Result<Vec<(String, bool)>> {
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut out = Vec::new();
    for entry in entries {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.contains(TEMP_MARKER) {
            continue; // an upload being written (or its leftover): not an object yet
        }
        let is_dir = entry.file_type().is_ok_and(|t| t.is_dir());
        out.push((name, is_dir));
    }
    out.sort();
    Ok(out)
}

/// Visits every checked file of `repos` in pass order, starting after `after` (a key),
/// until `f` breaks.
pub(crate) fn walk(
    root: &Path,
    repos: &[RepoPath],
    after: Option<&[u8]>,
    f: &mut dyn FnMut(Object) -> ControlFlow<()>,
) -> ControlFlow<()> {
    for repo in repos {
        let dir = repo_dir(root, repo);
        for kind in CHECKED {
            let type_dir = dir.join(kind.as_str());
            let mut emit = |rel: &[&str], path: PathBuf, found: Option<Problem>| {
                let key = key_of(repo, kind, rel);
                if after.is_some_and(|a| key.as_slice() <= a) {
                    return ControlFlow::Continue(());
                }
                f(Object {
                    repo: repo.clone(),
                    kind,
                    name: rel.join("/"),
                    path,
                    found,
                    key,
                })
            };
            let top = match sorted_entries(&type_dir) {
                Ok(t) => t,
                Err(e) => {
                    emit(
                        &[],
                        type_dir.clone(),
                        Some(Problem::Unreadable(e.to_string())),
                    )?;
                    continue;
                }
            };
            for (name, is_dir) in top {
                let path = type_dir.join(&name);
                if kind != Kind::Data || !is_dir {
                    // A file directly in data/ is misplaced: reported as a bad name.
                    let bad = (kind == Kind::Data).then_some(Problem::BadName);
                    emit(&[&name], path, bad)?;
                    continue;
                }
                match sorted_entries(&path) {
                    Ok(files) => {
                        for (file, _) in files {
                            let bad = (!file.starts_with(&name) || name.len() != 2)
                                .then_some(Problem::BadName);
                            emit(&[&name, &file], path.join(&file), bad)?;
                        }
                    }
                    Err(e) => emit(&[&name], path, Some(Problem::Unreadable(e.to_string())))?,
                }
            }
        }
    }
    ControlFlow::Continue(())
}

/// Reads `obj` through `pacer` and checks its content against its name.
pub(crate) fn check(obj: &Object, pacer: &mut Pacer, buf: &mut Vec<u8>) -> Outcome {
    if let Some(p) = &obj.found {
        return Outcome::Damaged(p.clone());
    }
    let meta = match fs::symlink_metadata(&obj.path) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Outcome::Gone,
        Err(e) => return Outcome::Damaged(Problem::Unreadable(e.to_string())),
    };
    if let Some(what) = not_a_file(&meta.file_type()) {
        return Outcome::Damaged(Problem::NotAFile(what));
    }
    if !ObjectId::is_valid(obj.name.rsplit('/').next().unwrap_or_default()) {
        return Outcome::Damaged(Problem::BadName);
    }
    // O_NONBLOCK and O_NOFOLLOW: if a FIFO or a symlink took the name since the stat, the
    // open neither hangs waiting for a writer nor follows the link out of the repository.
    let flags = OFlags::RDONLY | OFlags::NONBLOCK | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    let mut file = match rustix::fs::open(&obj.path, flags, Mode::empty()) {
        Ok(fd) => File::from(fd),
        Err(rustix::io::Errno::NOENT) => return Outcome::Gone,
        Err(e) => return Outcome::Damaged(Problem::Unreadable(io::Error::from(e).to_string())),
    };
    match file.metadata() {
        Ok(m) if m.file_type().is_file() => {}
        Ok(m) => {
            return Outcome::Damaged(Problem::NotAFile(
                not_a_file(&m.file_type()).unwrap_or("special"),
            ));
        }
        Err(e) => return Outcome::Damaged(Problem::Unreadable(e.to_string())),
    }
    let mut hasher = Sha256::new();
    let mut total = 0u64;
    buf.resize(READ_CHUNK, 0);
    loop {
        pacer.before_read();
        let n = match file.read(buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Outcome::Damaged(Problem::Unreadable(e.to_string())),
        };
        pacer.read(n as u64);
        hasher.update(&buf[..n]);
        total += n as u64;
    }
    let actual = hex(&hasher.finalize());
    if obj.name.ends_with(&actual) {
        Outcome::Intact(total)
    } else {
        Outcome::Damaged(Problem::HashMismatch { actual })
    }
}

fn not_a_file(t: &fs::FileType) -> Option<&'static str> {
    use std::os::unix::fs::FileTypeExt as _;
    if t.is_file() {
        None
    } else if t.is_dir() {
        Some("a directory")
    } else if t.is_symlink() {
        Some("a symbolic link")
    } else if t.is_fifo() {
        Some("a FIFO")
    } else if t.is_socket() {
        Some("a socket")
    } else {
        Some("a device")
    }
}

/// Paces reads to a rate and, for the background pass, pauses while uploads are written.
pub(crate) struct Pacer {
    /// Bytes per second; `None`: as fast as the disk goes.
    rate: Option<u64>,
    since: Instant,
    /// Bytes read since `since`.
    bytes: u64,
    /// Uploads being written (`Repos::uploads_open_counter`): the pass waits for zero.
    yield_to: Option<Arc<AtomicUsize>>,
    /// Total bytes read, across pauses.
    pub total: u64,
}

impl Pacer {
    pub(crate) fn new(rate: Option<u64>, yield_to: Option<Arc<AtomicUsize>>) -> Pacer {
        Pacer {
            rate: rate.filter(|r| *r > 0),
            since: Instant::now(),
            bytes: 0,
            yield_to,
            total: 0,
        }
    }

    pub(crate) fn set_rate(&mut self, rate: Option<u64>) {
        self.rate = rate.filter(|r| *r > 0);
        self.since = Instant::now();
        self.bytes = 0;
    }

    /// Waits until reading more keeps the average at the rate, and no upload is written.
    fn before_read(&mut self) {
        if let Some(open) = &self.yield_to
            && open.load(Ordering::Relaxed) > 0
        {
            while open.load(Ordering::Relaxed) > 0 {
                std::thread::sleep(PAUSE_POLL);
            }
            // The pause is not credit: no burst to catch up afterwards.
            self.since = Instant::now();
            self.bytes = 0;
        }
        if let Some(rate) = self.rate {
            // Reads so far are due at bytes/rate after `since`: sleep until then, so the
            // average over any long stretch is the rate (one chunk of burst at most).
            let due = Duration::from_secs_f64(self.bytes as f64 / rate as f64);
            let elapsed = self.since.elapsed();
            if due > elapsed {
                std::thread::sleep(due - elapsed);
            }
        }
    }

    fn read(&mut self, n: u64) {
        self.bytes += n;
        self.total += n;
    }
}

/// What the background pass has done, for `/metrics` and a status page: plain numbers, read
/// without stopping the pass.
#[derive(Debug, Default)]
pub(crate) struct ScrubStatus {
    /// Objects and bytes checked since the server started, in all passes.
    pub objects_checked: AtomicU64,
    pub bytes_checked: AtomicU64,
    /// Unix time the last complete pass ended; 0: none yet (kept across restarts).
    pub last_pass_completed: AtomicU64,
    /// Unix time the pass in progress started (0: waiting for the next one).
    pub pass_started: AtomicU64,
    /// Damaged objects per repository, as found the last time that repository was checked
    /// (kept across restarts in the state file).
    damaged: Mutex<BTreeMap<String, u64>>,
}

impl ScrubStatus {
    /// Damaged objects per repository (joined path), sorted.
    pub(crate) fn damaged(&self) -> Vec<(String, u64)> {
        self.damaged
            .locked()
            .iter()
            .map(|(r, n)| (r.clone(), *n))
            .collect()
    }

    fn set_damaged(&self, repo: &str, n: u64) {
        self.damaged.locked().insert(repo.to_owned(), n);
    }

    fn replace_damaged(&self, all: &BTreeMap<String, u64>) {
        *self.damaged.locked() = all.clone();
    }
}

/// `--scrub-every` and `--scrub-rate`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Schedule {
    pub every: Duration,
    /// The highest read rate, bytes per second.
    pub max_rate: u64,
}

/// The saved position of the background pass.
#[derive(Debug, Default, PartialEq, Eq)]
struct SavedState {
    /// Unix time the latest pass started (0: never).
    pass_started: u64,
    in_progress: bool,
    /// The key of the last object checked in the pass in progress.
    position: Option<Vec<u8>>,
    last_completed: u64,
    /// Damaged objects per repository (joined path) found the last time a pass went through
    /// it, so the damage gauge survives a restart instead of reading 0 until the next pass.
    damaged: BTreeMap<String, u64>,
    /// The repository the pass in progress was in when saved, and the damage it had found
    /// there so far (a resumed pass goes on counting from it).
    current: Option<(String, u64)>,
}

const STATE_MAGIC: &str = "rest-server scrub state 1";

impl SavedState {
    fn render(&self) -> String {
        let mut s = format!(
            "{STATE_MAGIC}\npass_started {}\nin_progress {}\nlast_completed {}\n",
            self.pass_started,
            u8::from(self.in_progress),
            self.last_completed
        );
        // Hex: repository names may hold any character but NUL and `/`.
        if let Some(p) = &self.position {
            s.push_str(&format!("position {}\n", hex(p)));
        }
        for (repo, n) in &self.damaged {
            s.push_str(&format!("damaged {} {n}\n", hex(repo.as_bytes())));
        }
        if let Some((repo, n)) = &self.current {
            s.push_str(&format!("current {} {n}\n", hex(repo.as_bytes())));
        }
        s
    }

    /// A missing or unreadable state starts a fresh pass (never an error: at worst some
    /// objects are read twice).
    fn parse(text: &str) -> SavedState {
        let mut lines = text.lines();
        if lines.next() != Some(STATE_MAGIC) {
            return SavedState::default();
        }
        let mut st = SavedState::default();
        for line in lines {
            match line.split_once(' ') {
                Some(("pass_started", v)) => st.pass_started = v.parse().unwrap_or(0),
                Some(("in_progress", v)) => st.in_progress = v == "1",
                Some(("last_completed", v)) => st.last_completed = v.parse().unwrap_or(0),
                Some(("position", v)) => st.position = unhex(v),
                Some(("damaged", v)) => {
                    if let Some((repo, n)) = repo_count(v) {
                        st.damaged.insert(repo, n);
                    }
                }
                Some(("current", v)) => st.current = repo_count(v),
                _ => {}
            }
        }
        st
    }
}

/// What the background scrub last found, as its state file says (for `rest-server status`,
/// which reads it beside a running server and never writes): Unix time of the last complete
/// pass (0: none) and damaged objects per repository. `None` without a state file.
pub(crate) fn saved_results(root: &Path) -> Option<(u64, BTreeMap<String, u64>)> {
    let text = fs::read_to_string(root.join(STATE_FILE)).ok()?;
    let st = SavedState::parse(&text);
    Some((st.last_completed, st.damaged))
}

/// `<hex name> <count>` of a `damaged` or `current` line.
fn repo_count(v: &str) -> Option<(String, u64)> {
    let (name, n) = v.split_once(' ')?;
    Some((String::from_utf8(unhex(name)?).ok()?, n.parse().ok()?))
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

/// Starts the background pass on a thread of its own (it sleeps and reads; it never runs on
/// the request executor). `mode`: of the state file.
pub(crate) fn spawn_background(
    root: PathBuf,
    schedule: Schedule,
    uploads_open: Arc<AtomicUsize>,
    status: Arc<ScrubStatus>,
    mode: u32,
) {
    let started = std::thread::Builder::new()
        .name("scrub".into())
        .spawn(move || background(&root, schedule, uploads_open, &status, mode));
    if let Err(e) = started {
        log::error!("scrub: cannot start the background thread: {e}");
    }
}

fn state_interval() -> Duration {
    // Test-only: lets a test see the position saved within a second (README).
    std::env::var("REST_SERVER_SCRUB_STATE_INTERVAL_MS")
        .ok()
        .and_then(|v| v.parse().ok())
        .map_or(STATE_INTERVAL, Duration::from_millis)
}

fn background(
    root: &Path,
    schedule: Schedule,
    uploads_open: Arc<AtomicUsize>,
    status: &ScrubStatus,
    mode: u32,
) {
    let state_path = root.join(STATE_FILE);
    let save = |st: &SavedState| {
        if let Err(e) = replace_file(&state_path, st.render().as_bytes(), mode, None) {
            log::warn!("scrub: cannot save {}: {e}", state_path.display());
        }
    };
    let interval = state_interval();
    let mut pacer = Pacer::new(Some(schedule.max_rate), Some(uploads_open));
    let mut buf = Vec::new();
    loop {
        let mut st = SavedState::parse(&fs::read_to_string(&state_path).unwrap_or_default());
        status
            .last_pass_completed
            .store(st.last_completed, Ordering::Relaxed);
        status.replace_damaged(&st.damaged);
        if !st.in_progress {
            // Passes start one interval apart (a pass spread over the interval ends about
            // when the next is due).
            let due = st.pass_started.saturating_add(schedule.every.as_secs());
            let now = crate::storage::inventory::now();
            if st.pass_started != 0 && due > now {
                status.pass_started.store(0, Ordering::Relaxed);
                std::thread::sleep(Duration::from_secs((due - now).min(3600)));
                continue;
            }
            st.pass_started = now;
            st.in_progress = true;
            st.position = None;
            st.current = None;
            save(&st);
            log::info!("scrub: pass started");
        } else {
            log::info!(
                "scrub: resuming the pass started at {} (unix time){}",
                st.pass_started,
                if st.position.is_some() {
                    ", after the saved position"
                } else {
                    ""
                }
            );
        }
        status
            .pass_started
            .store(st.pass_started, Ordering::Relaxed);

        let repos = match find_repos(root) {
            Ok(r) => r,
            Err(e) => {
                log::warn!("scrub: cannot list repositories in {}: {e}", root.display());
                std::thread::sleep(Duration::from_secs(3600).min(schedule.every));
                continue;
            }
        };
        // Spread what is left over what is left of the interval, at most at --scrub-rate.
        let mut left = 0u64;
        let _ = walk(root, &repos, st.position.as_deref(), &mut |o| {
            left += fs::symlink_metadata(&o.path).map_or(0, |m| m.len());
            ControlFlow::Continue(())
        });
        let deadline = st.pass_started.saturating_add(schedule.every.as_secs());
        let secs_left = deadline
            .saturating_sub(crate::storage::inventory::now())
            .max(1);
        let spread = left.div_ceil(secs_left);
        if spread > schedule.max_rate {
            log::warn!(
                "scrub: {left} bytes left to check cannot be read within --scrub-every at --scrub-rate {} bytes/s: the pass will take longer",
                schedule.max_rate
            );
        }
        pacer.set_rate(Some(pass_rate(spread, schedule.max_rate)));

        let t = Instant::now();
        let mut saved_at = Instant::now();
        let mut save_now = |st: &SavedState| {
            if saved_at.elapsed() >= interval {
                save(st);
                saved_at = Instant::now();
            }
        };
        let (objects, damaged) = run_pass(
            root,
            &repos,
            &mut st,
            status,
            &mut pacer,
            &mut buf,
            &mut save_now,
        );
        st.last_completed = crate::storage::inventory::now();
        st.in_progress = false;
        st.position = None;
        save(&st);
        status
            .last_pass_completed
            .store(st.last_completed, Ordering::Relaxed);
        status.pass_started.store(0, Ordering::Relaxed);
        log::info!(
            "scrub: pass complete: {objects} objects checked in {} s, {damaged} damaged",
            t.elapsed().as_secs()
        );
    }
}

/// One pass over `repos`, or the rest of a resumed one (from `st.position`): checks each
/// object, keeps the damage per repository in `st` and `status` (a repository's count when
/// the pass leaves it), and hands `st` to `save` after each object (`save` decides whether to
/// write it). Returns the objects checked and how many were damaged.
fn run_pass(
    root: &Path,
    repos: &[RepoPath],
    st: &mut SavedState,
    status: &ScrubStatus,
    pacer: &mut Pacer,
    buf: &mut Vec<u8>,
    save: &mut dyn FnMut(&SavedState),
) -> (u64, u64) {
    // `st.current` is the repository the pass is in and its count so far, saved with the
    // position; what it held when the pass started is where a resumed pass was.
    let mut resumed = st.current.take();
    // A pass that starts from the beginning visits every repository that has objects.
    let fresh = st.position.is_none();
    let mut visited = std::collections::BTreeSet::new();
    let (mut objects, mut damaged) = (0u64, 0u64);
    let _ = walk(root, repos, st.position.clone().as_deref(), &mut |o| {
        // A repository's damage count is published (and saved) when the pass leaves it;
        // a resumed pass goes on from the count saved for the repository it was in.
        let repo = o.repo.joined();
        if st.current.as_ref().is_none_or(|(r, _)| *r != repo) {
            if let Some((r, n)) = st.current.take() {
                status.set_damaged(&r, n);
                st.damaged.insert(r, n);
            }
            visited.insert(repo.clone());
            let mut so_far = 0;
            if let Some((r, n)) = resumed.take() {
                if r == repo {
                    so_far = n;
                } else {
                    // Saved just before the pass left that repository: it is done.
                    status.set_damaged(&r, n);
                    st.damaged.insert(r, n);
                }
            }
            st.current = Some((repo, so_far));
        }
        let read_before = pacer.total;
        let outcome = check(&o, pacer, buf);
        // Every byte read counts, a damaged object's too.
        let read = pacer.total - read_before;
        status.bytes_checked.fetch_add(read, Ordering::Relaxed);
        match outcome {
            Outcome::Intact(_) => {
                status.objects_checked.fetch_add(1, Ordering::Relaxed);
                objects += 1;
            }
            Outcome::Damaged(p) => {
                status.objects_checked.fetch_add(1, Ordering::Relaxed);
                objects += 1;
                damaged += 1;
                if let Some((_, n)) = &mut st.current {
                    *n += 1;
                }
                log_damage(&o, &p);
            }
            Outcome::Gone => {}
        }
        st.position = Some(o.key().to_vec());
        save(st);
        ControlFlow::Continue(())
    });
    if let Some((r, n)) = st.current.take() {
        status.set_damaged(&r, n);
        st.damaged.insert(r, n);
    }
    // Saved on the last object of the pass, then a crash: nothing was left to walk.
    if let Some((r, n)) = resumed.take() {
        st.damaged.insert(r, n);
    }
    // Repositories that are gone (deleted or renamed by hand) or, after a whole pass,
    // that have no objects left, report no damage any more: their series go away.
    let names: std::collections::BTreeSet<String> = repos.iter().map(|r| r.joined()).collect();
    st.damaged
        .retain(|r, _| names.contains(r) && (!fresh || visited.contains(r)));
    status.replace_damaged(&st.damaged);
    (objects, damaged)
}

/// The rate of a pass: what spreads it over the interval, at least [`MIN_PASS_RATE`] (so a
/// nearly empty data directory does not crawl), never above `--scrub-rate` (which may itself
/// be lower than that floor).
fn pass_rate(spread: u64, max_rate: u64) -> u64 {
    spread.max(MIN_PASS_RATE).min(max_rate)
}

const MIN_PASS_RATE: u64 = 64 * 1024;

/// The ERROR line of a damaged object; names are escaped like every other log line.
pub(crate) fn log_damage(o: &Object, p: &Problem) {
    use crate::accesslog::escape;
    log::error!(
        "scrub: damaged object in /{}: {} {}: {}",
        escape(&o.repo.joined()),
        o.kind.as_str(),
        escape(&o.name),
        escape(&p.to_string())
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_round_trips_and_bad_state_starts_afresh() {
        let st = SavedState {
            pass_started: 17,
            in_progress: true,
            position: Some(b"a\nb\0c".to_vec()),
            last_completed: 5,
            damaged: [("alice/laptop".to_owned(), 2), ("odd name\n".to_owned(), 0)].into(),
            current: Some(("bob".to_owned(), 1)),
        };
        assert_eq!(SavedState::parse(&st.render()), st);
        assert_eq!(SavedState::parse("garbage"), SavedState::default());
        assert_eq!(unhex("zz"), None);
    }

    #[test]
    fn repositories_are_found_as_the_inventory_finds_them() {
        let root = std::env::temp_dir().join(format!("scrub-find-{}", std::process::id()));
        let _ = fs::remove_dir_all(&root);
        for d in [
            "alice/data",
            "alice/laptop/snapshots",
            "bob/nas/x",
            ".git/keys",
            ".foo/data",
        ] {
            fs::create_dir_all(root.join(d)).unwrap();
        }
        fs::write(root.join("bob/nas/config"), b"c").unwrap();
        fs::write(root.join(".foo/config"), b"c").unwrap();
        let found: Vec<String> = find_repos(&root)
            .unwrap()
            .iter()
            .map(|r| r.joined())
            .collect();
        assert_eq!(found, [".foo", "alice", "alice/laptop", "bob/nas"]);
        let mut inventory: Vec<String> = crate::storage::inventory::walk(&root)
            .repos
            .into_keys()
            .collect();
        inventory.sort();
        assert_eq!(found, inventory);
        fs::remove_dir_all(&root).unwrap();
    }

    /// A tree with repository `r` holding two intact snapshots; returns the root and the
    /// key of the last object a pass meets.
    fn two_snapshots(name: &str) -> (PathBuf, Vec<u8>) {
        let root = std::env::temp_dir().join(format!("scrub-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&root);
        fs::create_dir_all(root.join("r/snapshots")).unwrap();
        fs::write(root.join("r/config"), b"c").unwrap();
        for body in [&b"one"[..], b"two"] {
            fs::write(
                root.join("r/snapshots").join(hex(&Sha256::digest(body))),
                body,
            )
            .unwrap();
        }
        let repos = find_repos(&root).unwrap();
        let mut last = Vec::new();
        let _ = walk(&root, &repos, None, &mut |o| {
            last = o.key().to_vec();
            ControlFlow::Continue(())
        });
        (root, last)
    }

    fn pass(root: &Path, st: &mut SavedState, status: &ScrubStatus) -> (u64, u64) {
        let repos = find_repos(root).unwrap();
        let (mut pacer, mut buf) = (Pacer::new(None, None), Vec::new());
        run_pass(root, &repos, st, status, &mut pacer, &mut buf, &mut |_| {})
    }

    #[test]
    fn a_count_saved_on_the_last_object_survives_the_resume() {
        let (root, last) = two_snapshots("resume-last");
        // Saved after the last object, with 2 damaged found in r, then a crash.
        let mut st = SavedState {
            in_progress: true,
            position: Some(last),
            current: Some(("r".into(), 2)),
            ..SavedState::default()
        };
        let status = ScrubStatus::default();
        assert_eq!(pass(&root, &mut st, &status), (0, 0));
        assert_eq!(st.damaged.get("r"), Some(&2));
        assert_eq!(status.damaged(), [("r".to_owned(), 2)]);
        fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn a_whole_pass_forgets_repositories_that_are_gone() {
        let (root, _) = two_snapshots("forget");
        let mut st = SavedState {
            damaged: [("gone".to_owned(), 3), ("r".to_owned(), 1)].into(),
            ..SavedState::default()
        };
        let status = ScrubStatus::default();
        assert_eq!(pass(&root, &mut st, &status), (2, 0));
        assert_eq!(st.damaged, [("r".to_owned(), 0)].into());
        assert_eq!(status.damaged(), [("r".to_owned(), 0)]);
        fs::remove_dir_all(&root).unwrap();
    }

    /// Every kind of entry a pass meets, each with the outcome it must get.
    #[test]
    fn walk_and_check_classify_every_entry() {
        let root = std::env::temp_dir().join(format!("scrub-walk-{}", std::process::id()));
        let _ = fs::remove_dir_all(&root);
        let repo = root.join("r");
        for d in ["data/ab", "data/zz", "index", "keys", "locks", "snapshots"] {
            fs::create_dir_all(repo.join(d)).unwrap();
        }
        fs::write(repo.join("config"), b"not hashed").unwrap();
        let body = b"intact";
        let id = hex(&Sha256::digest(body));
        let good = format!("data/{}/{id}", &id[..2]);
        fs::create_dir_all(repo.join(&good).parent().unwrap()).unwrap();
        fs::write(repo.join(&good), body).unwrap();
        fs::write(repo.join("data/ab/not-an-id"), b"x").unwrap();
        fs::write(repo.join(format!("data/zz/{id}")), body).unwrap(); // wrong directory
        fs::write(repo.join(format!("index/{id}{TEMP_MARKER}0123")), b"x").unwrap(); // skipped
        fs::write(repo.join(format!("locks/{id}")), b"skipped").unwrap();
        fs::write(repo.join(format!("snapshots/{id}")), b"rotten").unwrap();
        std::os::unix::fs::symlink("/etc/passwd", repo.join(format!("keys/{id}"))).unwrap();
        fs::write(root.join(STATE_FILE), b"not a repository").unwrap();

        let repos = find_repos(&root).unwrap();
        assert_eq!(repos.iter().map(|r| r.joined()).collect::<Vec<_>>(), ["r"]);
        let mut seen = Vec::new();
        let mut pacer = Pacer::new(None, None);
        let mut buf = Vec::new();
        let _ = walk(&root, &repos, None, &mut |o| {
            seen.push((o.kind, o.name.clone(), check(&o, &mut pacer, &mut buf)));
            ControlFlow::Continue(())
        });
        let damaged = |p| Outcome::Damaged(p);
        let want = [
            (
                Kind::Data,
                "ab/not-an-id".to_owned(),
                damaged(Problem::BadName),
            ),
            (Kind::Data, format!("{}/{id}", &id[..2]), Outcome::Intact(6)),
            (Kind::Data, format!("zz/{id}"), damaged(Problem::BadName)),
            (
                Kind::Keys,
                id.clone(),
                damaged(Problem::NotAFile("a symbolic link")),
            ),
        ];
        for w in &want {
            assert!(seen.contains(w), "{w:?} not in {seen:?}");
        }
        let snap = seen.iter().find(|s| s.0 == Kind::Snapshots).unwrap();
        assert!(matches!(
            snap.2,
            Outcome::Damaged(Problem::HashMismatch { .. })
        ));
        assert_eq!(
            seen.len(),
            5,
            "locks, config and temp files are skipped: {seen:?}"
        );
        // Resuming after the second object visits only what follows it.
        let mut keys = Vec::new();
        let _ = walk(&root, &repos, None, &mut |o| {
            keys.push(o.key().to_vec());
            ControlFlow::Continue(())
        });
        let mut after = 0;
        let _ = walk(&root, &repos, Some(&keys[1]), &mut |_| {
            after += 1;
            ControlFlow::Continue(())
        });
        assert_eq!(after, keys.len() - 2);
        let _ = fs::remove_dir_all(&root);
    }

    #[test]
    fn pass_rate_never_exceeds_the_limit_even_below_the_floor() {
        assert_eq!(pass_rate(10, 1 << 20), MIN_PASS_RATE);
        assert_eq!(pass_rate(5 << 20, 1 << 20), 1 << 20);
        assert_eq!(pass_rate(0, 1000), 1000);
    }

    #[test]
    fn keys_sort_in_walk_order() {
        let r = |s: &[&str]| RepoPath::new(s.iter().map(|s| s.to_string()).collect()).unwrap();
        let keys = [
            key_of(&r(&["a"]), Kind::Data, &["00", "00ff"]),
            key_of(&r(&["a"]), Kind::Data, &["01", "01aa"]),
            key_of(&r(&["a"]), Kind::Index, &["ff"]),
            key_of(&r(&["a"]), Kind::Snapshots, &["00"]),
            key_of(&r(&["a-b"]), Kind::Data, &["00", "00"]),
            key_of(&r(&["a", "b"]), Kind::Data, &["00", "00"]),
        ];
        let mut sorted = keys.clone();
        sorted.sort();
        assert_eq!(sorted, keys);
    }
}
