//! Pure request routing: (method, path) -> a [`Route`] with a validated [`RepoPath`] and
//! [`ObjectId`], or the reason there is none. No I/O, so every traversal trick is unit-tested here.
//!
//! The split follows the Go server's `splitURLPath`: up to two repo segments, stopping early at a
//! segment that is a type name or `config`. Unlike Go (which decodes the whole path first), each
//! segment is percent-decoded on its own, and one that decodes to something with a `/`, a NUL,
//! `.`, `..` or a backslash is refused (404), so no segment can ever name anything outside
//! `--path`. hyper hands us the request target as sent: literal dot segments arrive here
//! unresolved and are refused the same way.

use crate::error::Error;
use crate::storage::names::{Kind, MAX_REPO_DEPTH, ObjectId, RepoFile, RepoPath};

/// What a path names inside a repository.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Target {
    /// `/repo/` itself (only `POST ?create=true`).
    Repo,
    List(Kind),
    RepoFile(RepoFile),
}

/// One operation on a repository: the method and the target, already matched.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Op {
    /// `POST /repo/` (the handler checks `?create=true`).
    Create,
    /// `GET /repo/<type>/`.
    List(Kind),
    Head(RepoFile),
    Get(RepoFile),
    Save(RepoFile),
    Delete(RepoFile),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Route {
    Repo { repo: RepoPath, op: Op },
    Metrics,
}

/// Routes one request. `path` is the percent-encoded URL path; `metrics` is whether
/// `/metrics` exists (`--prometheus`).
pub(crate) fn parse(method: &str, path: &str, metrics: bool) -> Result<Route, Error> {
    if metrics && path == "/metrics" {
        return match method {
            "GET" => Ok(Route::Metrics),
            _ => Err(Error::MethodNotAllowed("GET")),
        };
    }
    let rest = path.strip_prefix('/').ok_or(Error::NotFound)?;
    let parts = rest
        .split('/')
        .map(decode_segment)
        .collect::<Option<Vec<String>>>()
        .ok_or(Error::NotFound)?;

    let depth = parts
        .iter()
        .take(MAX_REPO_DEPTH)
        .take_while(|p| !p.is_empty() && p.as_str() != "config" && Kind::parse(p).is_none())
        .count();
    let (repo, remainder) = parts.split_at(depth);
    let repo = RepoPath::new(repo.to_vec()).ok_or(Error::NotFound)?;
    let target = match remainder {
        [] | [_] if remainder.first().is_none_or(|s| s.is_empty()) => Target::Repo,
        [name] if name == "config" => Target::RepoFile(RepoFile::Config),
        [kind, tail] => {
            let kind = Kind::parse(kind).ok_or(Error::NotFound)?;
            if tail.is_empty() {
                Target::List(kind)
            } else {
                let id = ObjectId::parse(tail).ok_or(Error::NotFound)?;
                Target::RepoFile(RepoFile::Object(kind, id))
            }
        }
        _ => return Err(Error::NotFound),
    };
    // The `Allow` lists are the Go server's.
    let op = match (target, method) {
        (Target::Repo, "POST") => Op::Create,
        (Target::Repo, _) => return Err(Error::MethodNotAllowed("POST")),
        (Target::List(kind), "GET") => Op::List(kind),
        (Target::List(_), _) => return Err(Error::MethodNotAllowed("GET")),
        (Target::RepoFile(f), "HEAD") => Op::Head(f),
        (Target::RepoFile(f), "GET") => Op::Get(f),
        (Target::RepoFile(f), "POST") => Op::Save(f),
        (Target::RepoFile(f), "DELETE") => Op::Delete(f),
        (Target::RepoFile(_), _) => return Err(Error::MethodNotAllowed("HEAD, GET, POST, DELETE")),
    };
    Ok(Route::Repo { repo, op })
}

/// Percent-decodes one segment; `None` if the escapes or the UTF-8 are broken.
fn decode_segment(raw: &str) -> Option<String> {
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes.get(i + 1..i + 3)?;
            let hex = std::str::from_utf8(hex).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    fn repo(method: &str, path: &str) -> Result<(Vec<String>, Op), Error> {
        match parse(method, path, true)? {
            Route::Repo { repo, op } => Ok((repo.segments().to_vec(), op)),
            Route::Metrics => panic!("metrics"),
        }
    }

    fn obj(kind: Kind) -> RepoFile {
        RepoFile::Object(kind, ObjectId::parse(ID).unwrap())
    }

    fn not_found(path: &str) {
        assert!(
            matches!(repo("GET", path), Err(Error::NotFound)),
            "{path} should be 404, got {:?}",
            repo("GET", path)
        );
    }

    #[test]
    fn root_repo_targets() {
        assert_eq!(repo("POST", "/").unwrap(), (vec![], Op::Create));
        assert_eq!(repo("GET", "/config").unwrap().1, Op::Get(RepoFile::Config));
        assert_eq!(
            repo("HEAD", "/config").unwrap().1,
            Op::Head(RepoFile::Config)
        );
        assert_eq!(
            repo("POST", "/config").unwrap().1,
            Op::Save(RepoFile::Config)
        );
        assert_eq!(
            repo("DELETE", "/config").unwrap().1,
            Op::Delete(RepoFile::Config)
        );
        assert_eq!(repo("GET", "/data/").unwrap().1, Op::List(Kind::Data));
        assert_eq!(
            repo("DELETE", &format!("/locks/{ID}")).unwrap(),
            (vec![], Op::Delete(obj(Kind::Locks)))
        );
        assert_eq!(
            repo("POST", &format!("/index/{ID}")).unwrap().1,
            Op::Save(obj(Kind::Index))
        );
    }

    #[test]
    fn subrepos_up_to_two_segments() {
        assert_eq!(repo("POST", "/alice/").unwrap().0, vec!["alice"]);
        assert_eq!(repo("POST", "/alice").unwrap().0, vec!["alice"]);
        let (segs, op) = repo("GET", &format!("/alice/laptop/snapshots/{ID}")).unwrap();
        assert_eq!(segs, vec!["alice", "laptop"]);
        assert_eq!(op, Op::Get(obj(Kind::Snapshots)));
        not_found("/a/b/c/config");
        not_found("/a/b/c/");
    }

    #[test]
    fn type_name_or_config_ends_the_repo_path() {
        assert_eq!(repo("GET", "/keys/").unwrap().0, Vec::<String>::new());
        assert_eq!(repo("GET", "/alice/config").unwrap().0, vec!["alice"]);
        // A segment that decodes to a type name is that type, as in Go.
        assert_eq!(
            repo("GET", "/alice/%64ata/").unwrap().1,
            Op::List(Kind::Data)
        );
    }

    #[test]
    fn traversal_attempts_are_404() {
        for p in [
            "/../config",
            "/%2e%2e/config",
            "/%2E%2E/config",
            "/./config",
            "/%2e/config",
            "/a/../config",
            "/a%2fb/config",
            "/a%2Fb/config",
            "/..%2f..%2fetc/config",
            "/a%00/config",
            "/a\\..\\config",
            "/a%5c..%5cconfig",
            "/a/..\\config",
            "/a/locks/../config",
            "//config",
            "/a//config",
            "/%/config",
            "/%zz/config",
            "/%ff/config",
            "relative/config",
            "",
        ] {
            not_found(p);
        }
    }

    #[test]
    fn ids_are_exactly_64_lowercase_hex() {
        not_found(&format!("/data/{}", ID.to_uppercase()));
        not_found(&format!("/data/{}", &ID[1..]));
        not_found(&format!("/data/{ID}0"));
        not_found(&format!("/data/{ID}/"));
        not_found(&format!("/data/{}g", &ID[1..]));
        not_found("/data");
        not_found("/config/");
    }

    #[test]
    fn wrong_methods_are_405_with_allow() {
        let allow = |m: &str, p: &str| match parse(m, p, true) {
            Err(Error::MethodNotAllowed(a)) => a,
            other => panic!("{m} {p}: {other:?}"),
        };
        assert_eq!(allow("GET", "/"), "POST");
        // Anything that is not a type is a repo name, as in Go.
        assert_eq!(allow("GET", "/unknown/"), "POST");
        assert_eq!(allow("DELETE", "/alice/"), "POST");
        assert_eq!(allow("POST", "/data/"), "GET");
        assert_eq!(allow("HEAD", "/data/"), "GET");
        assert_eq!(allow("PUT", "/config"), "HEAD, GET, POST, DELETE");
        assert_eq!(
            allow("PATCH", &format!("/data/{ID}")),
            "HEAD, GET, POST, DELETE"
        );
        assert_eq!(allow("POST", "/metrics"), "GET");
    }

    #[test]
    fn metrics_only_when_enabled() {
        assert_eq!(parse("GET", "/metrics", true).unwrap(), Route::Metrics);
        // Without --prometheus, /metrics is an ordinary repo named "metrics".
        assert!(matches!(
            parse("GET", "/metrics", false),
            Err(Error::MethodNotAllowed("POST"))
        ));
    }
}
