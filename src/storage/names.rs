//! The names storage, quota, metrics, routing and the access file share: object types, object
//! ids, repository paths, and the one rule for what a repository path segment may be.

/// Repo path depth the Go server allows (`/user/repo/`).
pub(crate) const MAX_REPO_DEPTH: usize = 2;

/// The background scrub's position file directly under `--path` (storage/scrub.rs); refused
/// as a repository path segment so that no repository can be created over it.
pub(crate) const SCRUB_STATE_FILE: &str = ".rest-server-scrub-state";

/// The five object directories of a restic repository.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    Data,
    Index,
    Keys,
    Locks,
    Snapshots,
}

impl Kind {
    pub(crate) const ALL: [Kind; 5] = [
        Kind::Data,
        Kind::Index,
        Kind::Keys,
        Kind::Locks,
        Kind::Snapshots,
    ];

    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Kind::Data => "data",
            Kind::Index => "index",
            Kind::Keys => "keys",
            Kind::Locks => "locks",
            Kind::Snapshots => "snapshots",
        }
    }

    pub(crate) fn parse(s: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

/// 0 to 2 validated path segments naming a repository below `--path`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct RepoPath(Vec<String>);

impl RepoPath {
    /// The one check of a repository path, for URLs and the access file alike: at most
    /// [`MAX_REPO_DEPTH`] segments, each [`valid_segment`].
    pub(crate) fn new(segments: Vec<String>) -> Option<RepoPath> {
        (segments.len() <= MAX_REPO_DEPTH && segments.iter().all(|s| valid_segment(s)))
            .then_some(RepoPath(segments))
    }

    pub(crate) fn segments(&self) -> &[String] {
        &self.0
    }

    /// The repo path as the Go server names it in metrics: segments joined by `/`.
    pub(crate) fn joined(&self) -> String {
        self.0.join("/")
    }
}

/// A restic object id: exactly 64 lowercase hex characters.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct ObjectId(String);

impl ObjectId {
    pub(crate) fn parse(s: &str) -> Option<ObjectId> {
        ObjectId::is_valid(s).then(|| ObjectId(s.to_owned()))
    }

    /// Whether `s` is an id: 64 lowercase hex digits.
    pub(crate) fn is_valid(s: &str) -> bool {
        s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    }

    pub(crate) fn as_str(&self) -> &str {
        &self.0
    }
}

/// A single file of a repository: its config, or an object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum RepoFile {
    Config,
    Object(Kind, ObjectId),
}

/// A repo segment must name exactly one directory entry below its parent. A backslash is
/// refused too: it separates paths on other systems, and no restic client sends one. The
/// scrub's state file name is reserved.
pub(crate) fn valid_segment(s: &str) -> bool {
    !s.is_empty()
        && s != "."
        && s != ".."
        && s != SCRUB_STATE_FILE
        && !s.contains(['/', '\0', '\\'])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_rule_for_repository_paths() {
        let repo = |s: &[&str]| RepoPath::new(s.iter().map(|s| s.to_string()).collect());
        assert_eq!(repo(&[]).unwrap().joined(), "");
        assert_eq!(repo(&["alice", "laptop"]).unwrap().joined(), "alice/laptop");
        assert!(
            repo(&["a", "b", "c"]).is_none(),
            "deeper than the Go server"
        );
        for bad in ["", ".", "..", "a/b", "a\\b", "a\0b", SCRUB_STATE_FILE] {
            assert!(repo(&[bad]).is_none(), "{bad:?}");
            assert!(!valid_segment(bad), "{bad:?}");
        }
        assert!(valid_segment("a*b") && valid_segment("jörg") && valid_segment("..."));
    }
}
