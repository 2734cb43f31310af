//! Per-repository inventory: objects and bytes per type, the number of snapshots, the newest
//! snapshot's time and the newest upload's time, for `/metrics`, the status page and
//! `rest-server status` (docs/metrics.md, README "Is every backup fresh?").
//!
//! No restic key is needed: a snapshot is one file under `snapshots/`, and its mtime is the
//! time the backup finished. The tree is walked once at start-up on a background thread (the
//! same walk counts the quota's usage, storage/quota.rs) and
//! again on SIGHUP (repositories copied in or removed by hand); between walks every stored
//! upload and every delete updates the counts, so no request ever walks the tree. Deleting a
//! snapshot re-reads that one repository's `snapshots/` directory (a few hundred entries) to
//! find the next newest.
//!
//! Memory grows with the number of repositories only (one small entry each: BENCHMARKS.md
//! has the measured size), never with the number of objects.

use crate::lock::Lock as _;
use crate::storage::names::{Kind, MAX_REPO_DEPTH, ObjectId, RepoPath};
use std::collections::HashMap;
use std::path::Path;
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

/// What one repository holds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct RepoStats {
    /// Objects per type, in [`Kind::ALL`] order.
    pub objects: [u64; 5],
    /// Bytes per type, in [`Kind::ALL`] order.
    pub bytes: [u64; 5],
    /// Unix time of the newest snapshot file (its mtime); `None` without snapshots.
    pub newest_snapshot: Option<u64>,
    /// Unix time of the newest object file other than a lock (mtime, or when it was
    /// stored): every restic command takes a lock, reading ones too.
    pub newest_upload: Option<u64>,
}

impl RepoStats {
    pub(crate) fn snapshots(&self) -> u64 {
        self.objects[index(Kind::Snapshots)]
    }

    pub(crate) fn total_bytes(&self) -> u64 {
        self.bytes.iter().sum()
    }

    pub(crate) fn total_objects(&self) -> u64 {
        self.objects.iter().sum()
    }
}

/// The inventory of every repository below `--path`, keyed by the repo path joined by `/`
/// (`""` for a repository at the root), as metrics name them.
#[derive(Debug, Default)]
pub(crate) struct Inventory {
    known: Mutex<Known>,
    /// Held for the whole of a walk, so walks run one after the other and the one that
    /// finishes last is the one that started last (two SIGHUPs in a row).
    walking: Mutex<()>,
}

#[derive(Debug, Default)]
struct Known {
    repos: HashMap<String, RepoStats>,
    /// While a walk runs: per repository, the newest upload and snapshot times stored since
    /// it started (only those two fields are set), for [`Inventory::replace`].
    since_walk: Option<HashMap<String, RepoStats>>,
}

pub(crate) fn index(kind: Kind) -> usize {
    Kind::ALL.iter().position(|k| *k == kind).unwrap_or(0)
}

/// Now as Unix seconds (0 if the clock is before 1970).
pub(crate) fn now() -> u64 {
    unix_secs(SystemTime::now())
}

impl Inventory {
    /// Walks the data directory at `root` (blocking; one walk at a time) and makes what it
    /// found the inventory. Returns the walk for the quota's tally, its `repos` moved out.
    pub(crate) fn rewalk(&self, root: &Path) -> Walked {
        self.rewalk_with(|| walk(root))
    }

    /// [`Inventory::rewalk`] with the walk given (a test puts uploads inside it).
    fn rewalk_with(&self, walker: impl FnOnce() -> Walked) -> Walked {
        let _one_at_a_time = self.walking.locked();
        self.known.locked().since_walk = Some(HashMap::new());
        let mut walked = walker();
        self.replace(std::mem::take(&mut walked.repos));
        walked
    }

    /// Makes what a walk found the inventory. A walk reads directories one after the other
    /// while uploads go on, so what was stored after it read a directory would be lost: the
    /// times of uploads made during the walk are kept, and so are repositories that got one
    /// but that the walk did not see. (Counts can be off by what was stored or deleted during
    /// the walk, until the next one.)
    fn replace(&self, mut repos: HashMap<String, RepoStats>) {
        let mut known = self.known.locked();
        for (name, t) in known.since_walk.take().unwrap_or_default() {
            let new = repos
                .entry(name)
                .or_insert_with_key(|name| known.repos.get(name).copied().unwrap_or_default());
            new.newest_upload = new.newest_upload.max(t.newest_upload);
            new.newest_snapshot = new.newest_snapshot.max(t.newest_snapshot);
        }
        known.repos = repos;
    }

    /// How many repositories are known.
    pub(crate) fn len(&self) -> usize {
        self.known.locked().repos.len()
    }

    /// Every repository and its stats, sorted by name.
    pub(crate) fn report(&self) -> Vec<(String, RepoStats)> {
        let mut v: Vec<(String, RepoStats)> = self
            .known
            .locked()
            .repos
            .iter()
            .map(|(k, s)| (k.clone(), *s))
            .collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    }

    /// A repository was created (it is listed from now on, even while empty).
    pub(crate) fn created(&self, repo: &RepoPath) {
        let mut known = self.known.locked();
        if let Some(since_walk) = &mut known.since_walk {
            since_walk.entry(repo.joined()).or_default();
        }
        known.repos.entry(repo.joined()).or_default();
    }

    /// An object of `len` bytes was stored, its file last modified at `mtime` (as a walk
    /// would read it; now if unknown).
    pub(crate) fn stored(&self, repo: &RepoPath, kind: Kind, len: u64, mtime: Option<SystemTime>) {
        let t = mtime.map_or_else(now, unix_secs);
        // A lock is taken by every restic command, even `restic snapshots`: it is no upload.
        let t = (kind != Kind::Locks).then_some(t);
        let snapshot = (kind == Kind::Snapshots).then_some(t).flatten();
        let mut known = self.known.locked();
        let name = repo.joined();
        if let Some(since_walk) = &mut known.since_walk {
            let w = since_walk.entry(name.clone()).or_default();
            w.newest_upload = w.newest_upload.max(t);
            w.newest_snapshot = w.newest_snapshot.max(snapshot);
        }
        let s = known.repos.entry(name).or_default();
        s.objects[index(kind)] += 1;
        s.bytes[index(kind)] += len;
        s.newest_upload = s.newest_upload.max(t);
        s.newest_snapshot = s.newest_snapshot.max(snapshot);
    }

    /// An object of `len` bytes was deleted. For a snapshot, `newest_snapshot` is what the
    /// snapshots directory now says ([`newest_snapshot`]).
    pub(crate) fn deleted(
        &self,
        repo: &RepoPath,
        kind: Kind,
        len: u64,
        newest_snapshot: Option<u64>,
    ) {
        let mut known = self.known.locked();
        let Some(s) = known.repos.get_mut(&repo.joined()) else {
            return;
        };
        let i = index(kind);
        s.objects[i] = s.objects[i].saturating_sub(1);
        s.bytes[i] = s.bytes[i].saturating_sub(len);
        if kind == Kind::Snapshots {
            s.newest_snapshot = newest_snapshot;
        }
    }
}

/// The mtime of the newest snapshot in `repo_dir/snapshots` (blocking).
pub(crate) fn newest_snapshot(repo_dir: &Path) -> Option<u64> {
    let mut newest = None;
    each_object(&repo_dir.join(Kind::Snapshots.as_str()), &mut |t| {
        newest = newest.max(t);
    });
    newest
}

/// What one walk of the data directory finds: the repositories, and for the quota the bytes
/// of every regular file below the root, in total and per first path segment.
#[derive(Debug, Default)]
pub(crate) struct Walked {
    pub repos: HashMap<String, RepoStats>,
    pub total: u64,
    /// Bytes below each top-level directory that is not a type directory of a repository at
    /// the root.
    pub segments: HashMap<String, u64>,
}

/// Where a directory is, for the walk.
#[derive(Clone, Copy)]
enum Place {
    /// Not inside a repository (yet).
    Outside,
    /// A repository's own directory.
    Repo,
    /// A type directory (or `data/XX`, `nested`) of a repository.
    Type(Kind, bool),
    /// Anything else inside a repository: counted for the quota only.
    Other,
}

/// The one walk of the data directory (blocking; run it on a blocking thread): every regular
/// file is counted for the quota, and the repositories found on the way (a directory with a
/// `config` file or a type directory, down to the deepest repo path the server serves) get
/// their objects counted. Unreadable parts count as empty.
pub(crate) fn walk(root: &Path) -> Walked {
    let mut w = Walked::default();
    visit(root, &mut Vec::new(), Place::Outside, None, &mut w);
    w
}

/// Whether `dir`, reached from the data directory by the names `path`, is a repository: at
/// most as deep as a repository path may be, and a `config` file or a type directory in it
/// (only a `config` below a hidden name). The one rule for every walk that looks for
/// repositories (this one and the scrub's).
pub(crate) fn is_repo_dir(dir: &Path, path: &[String]) -> bool {
    if path.len() > MAX_REPO_DEPTH {
        return false;
    }
    let has_config = dir.join("config").is_file();
    // A hidden name is allowed in a repository path (`/.foo/`, as the Go server serves it),
    // but only a `config` makes such a directory a repository: `.git`, editor state and file
    // system snapshots may have type-like directories of their own.
    if path.iter().any(|n| n.starts_with('.')) {
        return has_config;
    }
    has_config || Kind::ALL.iter().any(|k| dir.join(k.as_str()).is_dir())
}

/// `path`: the names from the root to `dir`; `repo`: the key of the repository `dir` is in.
fn visit(dir: &Path, path: &mut Vec<String>, place: Place, repo: Option<&str>, w: &mut Walked) {
    let (place, key) = match place {
        Place::Outside if is_repo_dir(dir, path) => match RepoPath::new(path.clone()) {
            Some(r) => (Place::Repo, Some(r.joined())),
            None => (Place::Outside, None),
        },
        p => (p, repo.map(str::to_owned)),
    };
    if let (Place::Repo, Some(k)) = (place, &key) {
        w.repos.entry(k.clone()).or_default();
    }
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let Ok(t) = e.file_type() else { continue };
        let name = e.file_name();
        let name = name.to_string_lossy();
        if t.is_dir() {
            let inner = match place {
                // Not a type directory: maybe a repository of its own (`/alice/` and
                // `/alice/laptop/` can both be one, as in the Go server).
                Place::Repo => Kind::parse(&name).map_or(Place::Outside, |k| Place::Type(k, false)),
                Place::Type(Kind::Data, false) => Place::Type(Kind::Data, true),
                Place::Type(..) | Place::Other => Place::Other,
                Place::Outside => Place::Outside,
            };
            path.push(name.into_owned());
            visit(&e.path(), path, inner, key.as_deref(), w);
            path.pop();
            continue;
        }
        if !t.is_file() {
            continue;
        }
        let Ok(m) = e.metadata() else { continue };
        let len = m.len();
        w.total += len;
        // A top-level directory is a first segment, unless it belongs to a repository at the
        // root (its data/, keys/, ... directories).
        if let Some(first) = path.first()
            && Kind::parse(first).is_none()
        {
            *w.segments.entry(first.clone()).or_default() += len;
        }
        let Place::Type(kind, nested) = place else {
            continue;
        };
        if nested != (kind == Kind::Data) || !ObjectId::is_valid(&name) {
            continue;
        }
        let Some(s) = key.as_ref().and_then(|k| w.repos.get_mut(k)) else {
            continue;
        };
        let mtime = mtime(&m);
        let i = index(kind);
        s.objects[i] += 1;
        s.bytes[i] += len;
        if kind != Kind::Locks {
            s.newest_upload = s.newest_upload.max(mtime);
        }
        if kind == Kind::Snapshots {
            s.newest_snapshot = s.newest_snapshot.max(mtime);
        }
    }
}

/// Calls `f(mtime)` for each object (a regular file named by a valid id) in a type directory
/// other than `data`.
fn each_object(dir: &Path, f: &mut dyn FnMut(Option<u64>)) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let Ok(t) = e.file_type() else { continue };
        if !t.is_file() || !e.file_name().to_str().is_some_and(ObjectId::is_valid) {
            continue;
        }
        if let Ok(m) = e.metadata() {
            f(mtime(&m));
        }
    }
}

fn mtime(m: &std::fs::Metadata) -> Option<u64> {
    m.modified().ok().map(unix_secs)
}

/// `t` as whole Unix seconds, as the inventory keeps times (0 before 1970).
fn unix_secs(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// A size for people: "0 B", "512 B", "1.5 KiB", "12.3 GiB".
pub(crate) fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut v = n as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

/// How long ago `then` (Unix seconds) was, for people: "just now", "5 min ago", "2 h ago",
/// "9 days ago"; a time in the future (clock skew) is "just now".
pub(crate) fn age(then: u64, now: u64) -> String {
    let s = now.saturating_sub(then);
    match s {
        0..60 => "just now".into(),
        60..3600 => format!("{} min ago", s / 60),
        3600..172_800 => format!("{} h ago", s / 3600),
        _ => format!("{} days ago", s / 86_400),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_snapshot_stored_while_a_walk_runs_is_not_lost() {
        let dir = std::env::temp_dir().join(format!("inventory-race-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("alice/snapshots")).unwrap();
        std::fs::write(dir.join("alice/config"), b"c").unwrap();
        let inv = Inventory::default();
        let alice = RepoPath::new(vec!["alice".into()]).unwrap();
        let bob = RepoPath::new(vec!["bob".into()]).unwrap();
        // Uploads after the walk has read the directories, before its result is in.
        inv.rewalk_with(|| {
            let walked = walk(&dir);
            inv.stored(&alice, Kind::Snapshots, 5, None);
            inv.stored(&bob, Kind::Data, 7, None);
            walked
        });
        let r = inv.report();
        assert_eq!(r.len(), 2, "{r:?}");
        assert_eq!(r[0].0, "alice");
        assert!(r[0].1.newest_snapshot.is_some(), "{r:?}");
        assert_eq!(r[1].0, "bob");
        assert_eq!(r[1].1.bytes[index(Kind::Data)], 7);
        // Once the walk is over, uploads are counted as before and nothing is kept aside.
        assert!(inv.known.locked().since_walk.is_none());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn walk_finds_repositories_at_every_depth_and_counts_objects() {
        let dir = std::env::temp_dir().join(format!("inventory-{}", std::process::id()));
        let id = "a".repeat(64);
        for repo in ["", "alice", "bob/laptop"] {
            let r = dir.join(repo);
            std::fs::create_dir_all(r.join("data/aa")).unwrap();
            std::fs::create_dir_all(r.join("snapshots")).unwrap();
            std::fs::write(r.join("config"), b"c").unwrap();
            std::fs::write(r.join("data/aa").join(&id), [0u8; 10]).unwrap();
            std::fs::write(r.join("snapshots").join(&id), [0u8; 3]).unwrap();
            std::fs::write(r.join("snapshots/not-an-id"), [0u8; 3]).unwrap();
        }
        std::fs::create_dir_all(dir.join("carol/x/y/snapshots")).unwrap();
        let inv = Inventory::default();
        // The root is a repository, and so are alice and bob/laptop inside it (outside its
        // type directories); every file counts for the quota, and data/ and snapshots/ are
        // the root repository's, no segments.
        let w = walk(&dir);
        assert_eq!(w.total, 3 * (1 + 10 + 3 + 3));
        let mut segs: Vec<_> = w.segments.into_iter().collect();
        segs.sort();
        assert_eq!(segs, [("alice".into(), 17), ("bob".into(), 17)]);
        inv.rewalk(&dir);
        let r = inv.report();
        let names: Vec<&str> = r.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["", "alice", "bob/laptop"]);
        for (name, s) in &r {
            assert_eq!(s.objects, [1, 0, 0, 0, 1], "{name}: only its own objects");
        }
        std::fs::remove_file(dir.join("config")).unwrap();
        std::fs::remove_dir_all(dir.join("data")).unwrap();
        std::fs::remove_dir_all(dir.join("snapshots")).unwrap();
        inv.rewalk(&dir);
        assert_eq!(inv.len(), 2, "{:?}", inv.report());
        let r = inv.report();
        assert_eq!(r[0].0, "alice");
        assert_eq!(r[1].0, "bob/laptop");
        let s = r[1].1;
        assert_eq!(s.objects, [1, 0, 0, 0, 1]);
        assert_eq!(s.bytes, [10, 0, 0, 0, 3]);
        assert_eq!(s.snapshots(), 1);
        assert!(s.newest_snapshot.is_some());

        let repo = RepoPath::new(vec!["alice".into()]).unwrap();
        inv.stored(&repo, Kind::Snapshots, 5, None);
        assert_eq!(inv.report()[0].1.snapshots(), 2);
        inv.deleted(&repo, Kind::Snapshots, 5, None);
        inv.deleted(&repo, Kind::Snapshots, 3, None);
        inv.deleted(&repo, Kind::Snapshots, 3, None);
        let a = inv.report()[0].1;
        assert_eq!((a.snapshots(), a.bytes[4], a.newest_snapshot), (0, 0, None));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn sizes_and_ages_for_people() {
        assert_eq!(human_bytes(0), "0 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(5 << 30), "5.0 GiB");
        assert_eq!(age(100, 100), "just now");
        assert_eq!(age(0, 7200), "2 h ago");
        assert_eq!(age(0, 9 * 86_400 + 5), "9 days ago");
        assert_eq!(age(50, 10), "just now");
    }
}
