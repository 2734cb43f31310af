//! The one request pipeline, top to bottom: check the head -> authenticate -> route ->
//! policy -> operation -> response, then the access-log line. Every request-level failure
//! becomes a response here, and every status comes from `error.rs`. (What hyper refuses
//! before a request exists, such as a malformed head, hyper answers itself: see server.rs.)

use crate::access::{Right, Rules};
use crate::accesslog::{LogLine, escape};
use crate::app::{AuthMode, State};
use crate::auth::{self, Verdict};
use crate::error::Error;
use crate::http::body::{Body, Response};
use crate::http::{Range, parse_basic, parse_range, query_value, status_response};
use crate::metrics::{self, BlobOp, ProcessStats, Rejected};
use crate::route::{self, Op, Route};
use crate::storage::inventory;
use crate::storage::names::{Kind, RepoFile, RepoPath};
use crate::storage::quota::SegmentLimit;
use crate::storage::repo::{Occupant, Repos};
use crate::storage::upload::{self, Stored, TempObject};
use hyper::body::Body as _;
use hyper::header::{self, HeaderName, HeaderValue};
use hyper::{Method, StatusCode, Version};
use std::time::{Instant, SystemTime};

const V2_MEDIA_TYPE: &str = "application/vnd.x.restic.rest.v2";
const V1_MEDIA_TYPE: &str = "application/vnd.x.restic.rest.v1";

pub(crate) type Request = hyper::Request<crate::http::server::Inbound>;

/// With `--private-repos`, the one user who may read `/metrics` (as in the Go server).
const METRICS_USER: &str = "metrics";

/// Handles one request; never fails (a failure is a response).
pub(crate) async fn handle(st: &State, peer: &str, mut req: Request) -> Response {
    let started = Instant::now();
    let has_body = req.body().size_hint().exact() != Some(0);
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let route = route::parse(method.as_str(), &path, st.metrics.is_some());
    // --prometheus-no-auth: /metrics is open to anyone, as in the Go server.
    let open = st.metrics_no_auth && matches!(route, Ok(Route::Metrics));
    let head = check_head(&req);
    let malformed = head.is_err();
    let authenticated = match head {
        Err(e) => Err(e),
        Ok(()) if open => Ok(None),
        Ok(()) => authenticate(st, &req, peer).await,
    };
    let (user, result) = match authenticated {
        Ok(user) => {
            let result = serve(st, user.as_deref(), route, &mut req).await;
            (user, result)
        }
        Err(e) => (None, Err(e)),
    };
    let mut res = result.unwrap_or_else(|e| {
        // Request-derived text is escaped: a name with an encoded newline forges no line.
        let what = format!("{method} {}", escape(&path));
        if e.is_server_fault() {
            log::error!("{what}: {e}");
        } else {
            log::debug!("{what}: {e}");
        }
        error_response(&e)
    });
    // A refused upload's body is never read: closing (after the answer) is cheaper than
    // swallowing gigabytes to reach the next request.
    if (has_body && !res.status().is_success()) || malformed {
        set(&mut res, header::CONNECTION, "close");
    }
    // Body bytes sent: a HEAD answer's Content-Length is never sent.
    let bytes = match method {
        Method::HEAD => 0,
        _ => res.body().len().unwrap_or(0),
    };
    log::debug!(
        "{peer} {} {method} {} -> {} ({bytes} bytes, {} ms)",
        escape(user.as_deref().unwrap_or("-")),
        escape(&path),
        res.status().as_u16(),
        started.elapsed().as_millis()
    );
    if let Some(log) = &st.access_log {
        let uri = match req.uri().query() {
            Some(q) => format!("{path}?{q}"),
            None => path,
        };
        let header = |name: HeaderName| {
            req.headers().get(name).map_or(String::new(), |v| {
                String::from_utf8_lossy(v.as_bytes()).into_owned()
            })
        };
        log.write(&LogLine {
            host: peer,
            user: user.as_deref().unwrap_or(""),
            method: method.as_str(),
            uri: &uri,
            status: res.status().as_u16(),
            bytes,
            referer: &header(header::REFERER),
            user_agent: &header(header::USER_AGENT),
        });
    }
    res
}

/// What hyper leaves to us of RFC 9112 (each found by a test in tests/it/framing.rs): an HTTP/1.1
/// request names exactly one `Host` (400 otherwise, as the Go server answers; the path never
/// comes from it), and `Transfer-Encoding` appears at most once (hyper takes two `chunked`
/// headers as one; Go refuses them, and a proxy in front may frame them otherwise). The
/// connection is closed after such an answer.
fn check_head(req: &Request) -> Result<(), Error> {
    let count = |name| req.headers().get_all(name).iter().count();
    if count(header::TRANSFER_ENCODING) > 1 {
        return Err(Error::BadRequest("more than one Transfer-Encoding header"));
    }
    match (req.version(), count(header::HOST)) {
        (_, 2..) => Err(Error::BadRequest("more than one Host header")),
        (Version::HTTP_11, 0) => Err(Error::BadRequest("HTTP/1.1 request without Host")),
        _ => Ok(()),
    }
}

/// A header's value as text; `None` if absent or not visible ASCII.
pub(crate) fn header_str(req: &Request, name: impl header::AsHeaderName) -> Option<&str> {
    req.headers().get(name).and_then(|v| v.to_str().ok())
}

/// Sets a response header whose value is known to be valid.
pub(crate) fn set(res: &mut Response, name: HeaderName, value: impl Into<String>) {
    if let Ok(v) = HeaderValue::try_from(value.into()) {
        res.headers_mut().insert(name, v);
    }
}

/// Who is asking: `None` for anonymous (`--no-auth`), else the user name. `peer` is the
/// client address, for the back-off on failed logins.
async fn authenticate(st: &State, req: &Request, peer: &str) -> Result<Option<String>, Error> {
    match &st.authn {
        AuthMode::Anonymous => Ok(None),
        AuthMode::ProxyHeader(name) => match header_str(req, name.as_str()) {
            Some(user) if !user.is_empty() => Ok(Some(user.to_owned())),
            _ => Err(Error::Unauthorized),
        },
        AuthMode::Htpasswd(auth) => {
            let header = header_str(req, header::AUTHORIZATION);
            let (user, password) = header.and_then(parse_basic).ok_or(Error::Unauthorized)?;
            match auth.verify(&user, &password, peer).await {
                Verdict::Ok => Ok(Some(user)),
                Verdict::Wrong => Err(Error::Unauthorized),
                Verdict::Busy => Err(Error::LoginFlood),
            }
        }
    }
}

async fn serve(
    st: &State,
    user: Option<&str>,
    route: Result<Route, Error>,
    req: &mut Request,
) -> Result<Response, Error> {
    if st.status_page && crate::page::wanted(req) {
        return Ok(crate::page::serve(st, user).await);
    }
    let (repo, op) = match route? {
        Route::Metrics => return serve_metrics(st, user).await,
        Route::Repo { repo, op } => (repo, op),
    };
    // --private-repos: the first segment must be the user's name (401 as in the Go server).
    if st.private_repos
        && let Some(user) = user
        && repo.segments().first().map(String::as_str) != Some(user)
    {
        return Err(Error::Unauthorized);
    }
    // --access-file: 403, as the user is known but lacks the right.
    if let Some(access) = &st.access {
        access.reload_if_changed().await;
        let need = needed(&op);
        let decision = access.get().decide(user, repo.segments()).right;
        if decision < need {
            log::debug!(
                "access file: user {:?} has {:?} on /{}, needs {:?}",
                user.unwrap_or("*"),
                decision,
                escape(&repo.joined()),
                need
            );
            return Err(Error::Forbidden("not allowed by the access file"));
        }
    }
    match op {
        Op::Create => create(st, &repo, req).await,
        Op::List(kind) => list(st, &repo, kind, req).await,
        Op::Head(file) => head(st, &repo, &file).await,
        Op::Get(file) => {
            let res = get(st, &repo, &file, req).await?;
            // Bytes read = the body's Content-Length (the Range length for a 206), counted
            // when the response is built, not when its last byte has left: see metrics.rs.
            let len = res.body().len().unwrap_or(0);
            count(st, user, &repo, &file, BlobOp::Read, len);
            Ok(res)
        }
        Op::Save(file) => match save(st, &repo, &file, req).await {
            Ok(saved) => {
                let len = match (&file, saved) {
                    (RepoFile::Object(kind, _), Saved::New(len, mtime)) => {
                        st.inventory.stored(&repo, *kind, len, mtime);
                        len
                    }
                    (RepoFile::Object(..), Saved::There(len)) => len,
                    (RepoFile::Config, Saved::New(len, _) | Saved::There(len)) => {
                        st.inventory.created(&repo);
                        len
                    }
                };
                count(st, user, &repo, &file, BlobOp::Write, len);
                Ok(ok())
            }
            Err(e) => {
                let why = match &e {
                    Error::HashMismatch => Some(Rejected::HashMismatch),
                    Error::QuotaExceeded => Some(Rejected::Quota),
                    Error::Exists => Some(Rejected::Exists),
                    _ => None,
                };
                if let (Some(m), Some(why)) = (&st.metrics, why) {
                    m.count_rejected(why);
                }
                Err(e)
            }
        },
        Op::Delete(file) => {
            if let Some(size) = delete(st, &repo, &file).await? {
                if let RepoFile::Object(kind, _) = &file {
                    forget(st, &repo, *kind, size).await;
                }
                count(st, user, &repo, &file, BlobOp::Delete, size);
            }
            Ok(ok())
        }
    }
}

/// A deleted object leaves the inventory; a deleted snapshot makes the repository's
/// `snapshots/` directory be read again for the next newest one.
async fn forget(st: &State, repo: &RepoPath, kind: Kind, size: u64) {
    let newest = if kind == Kind::Snapshots {
        let dir = st.repos.type_dir(repo, kind);
        let repo_dir = dir.parent().map(std::path::Path::to_path_buf);
        smol::unblock(move || repo_dir.and_then(|d| inventory::newest_snapshot(&d))).await
    } else {
        None
    };
    st.inventory.deleted(repo, kind, size, newest);
}

/// The right an operation needs under `--access-file`. Locks are part of reading: restic
/// locks a repository even to read it.
fn needed(op: &Op) -> Right {
    match op {
        Op::List(_) | Op::Head(_) | Op::Get(_) => Right::Read,
        Op::Save(RepoFile::Object(Kind::Locks, _))
        | Op::Delete(RepoFile::Object(Kind::Locks, _)) => Right::Read,
        Op::Create | Op::Save(_) => Right::Append,
        Op::Delete(_) => Right::Write,
    }
}

/// Counts a blob operation for `--prometheus`. The config is not a blob: never counted, as
/// in the Go server. Anonymous (`--no-auth`) requests count under user `""`, as in Go.
fn count(st: &State, user: Option<&str>, repo: &RepoPath, file: &RepoFile, op: BlobOp, bytes: u64) {
    if let (Some(m), RepoFile::Object(kind, _)) = (&st.metrics, file) {
        m.count_blob(user.unwrap_or(""), repo.segments(), *kind, op, bytes);
    }
}

/// `GET /metrics`. Authentication already happened unless `--prometheus-no-auth`.
async fn serve_metrics(st: &State, user: Option<&str>) -> Result<Response, Error> {
    // Routed only with --prometheus, so always there.
    let m = st.metrics.as_ref().ok_or(Error::NotFound)?;
    // As Go's wrapMetricsAuth: with --private-repos only the user "metrics" may read the
    // counters of every user. With --no-auth there is no such user, so nobody may (Go's
    // behaviour too); --prometheus-no-auth opens it.
    if st.private_repos && !st.metrics_no_auth && user != Some(METRICS_USER) {
        return Err(Error::Unauthorized);
    }
    let process = smol::unblock(ProcessStats::read).await;
    let quota = st.quota.as_ref().map(|q| {
        let mut report = q.report();
        if let Some(access) = &st.access {
            let rules = access.get();
            report.add_limits(rules.named_quotas(), |name| {
                rules.quota(name).and_then(|q| q.limit)
            });
        }
        report
    });
    let repos = st.repo_metrics.then(|| st.inventory.report());
    let mut res = Response::new(Body::text(m.render(
        &process,
        quota.as_ref(),
        repos.as_deref(),
        st.scrub.as_deref(),
    )));
    set(&mut res, header::CONTENT_TYPE, metrics::CONTENT_TYPE);
    Ok(res)
}

fn ok() -> Response {
    Response::new(Body::empty())
}

fn path_of(st: &State, repo: &RepoPath, file: &RepoFile) -> std::path::PathBuf {
    match file {
        RepoFile::Config => st.repos.config_path(repo),
        RepoFile::Object(kind, id) => st.repos.object_path(repo, *kind, id),
    }
}

async fn create(st: &State, repo: &RepoPath, req: &Request) -> Result<Response, Error> {
    if query_value(req.uri().query(), "create").as_deref() != Some("true") {
        return Err(Error::BadRequest(
            "POST on a repository without ?create=true",
        ));
    }
    st.repos.create(repo).await?;
    st.inventory.created(repo);
    log::info!("created repository /{}", escape(&repo.joined()));
    Ok(ok())
}

async fn list(st: &State, repo: &RepoPath, kind: Kind, req: &Request) -> Result<Response, Error> {
    let v2 = header_str(req, header::ACCEPT).is_some_and(|a| a.contains(V2_MEDIA_TYPE));
    let listing = st
        .repos
        .list(repo, kind, v2)
        .await?
        .ok_or(Error::NotFound)?;
    // No length: the JSON is produced while it is sent (chunked), so a 100 000-object
    // listing starts at once and needs no more memory than one chunk.
    let mut res = Response::new(Body::listing(listing));
    let media_type = if v2 { V2_MEDIA_TYPE } else { V1_MEDIA_TYPE };
    set(&mut res, header::CONTENT_TYPE, media_type);
    Ok(res)
}

async fn head(st: &State, repo: &RepoPath, file: &RepoFile) -> Result<Response, Error> {
    let size = st
        .repos
        .size(&path_of(st, repo, file))
        .await?
        .ok_or(Error::NotFound)?;
    // A body that is never sent (HEAD); hyper leaves a HEAD answer's length to us.
    let mut res = Response::new(Body::Length(size));
    set(&mut res, header::CONTENT_LENGTH, size.to_string());
    set(&mut res, header::ACCEPT_RANGES, "bytes");
    Ok(res)
}

async fn get(
    st: &State,
    repo: &RepoPath,
    file: &RepoFile,
    req: &Request,
) -> Result<Response, Error> {
    let (f, size) = st
        .repos
        .open(&path_of(st, repo, file))
        .await?
        .ok_or(Error::NotFound)?;
    let range = parse_range(header_str(req, header::RANGE), size);
    let (status, start, len) = match range {
        Range::Full => (StatusCode::OK, 0, size),
        Range::Partial { start, end } => (StatusCode::PARTIAL_CONTENT, start, end - start + 1),
        Range::Unsatisfiable => return Err(Error::RangeNotSatisfiable(size)),
    };
    let mut res = Response::new(Body::File(Repos::stream(f, start, len)));
    *res.status_mut() = status;
    if let Range::Partial { start, end } = range {
        set(
            &mut res,
            header::CONTENT_RANGE,
            format!("bytes {start}-{end}/{size}"),
        );
    }
    set(&mut res, header::ACCEPT_RANGES, "bytes");
    set(&mut res, header::CONTENT_TYPE, "application/octet-stream");
    Ok(res)
}

/// Stores an upload; returns the body length and whether a new object now exists (not a
/// retry of one that was there already: the inventory counts each object once).
async fn save(
    st: &State,
    repo: &RepoPath,
    file: &RepoFile,
    req: &mut Request,
) -> Result<Saved, Error> {
    let path = path_of(st, repo, file);
    // The Content-Length (hyper has checked it is one plain number); `None` when chunked.
    let declared = req.body().size_hint().exact();
    // The config is not content-addressed: it is stored atomically but never hashed.
    let (verify, expected, create_parent) = match file {
        RepoFile::Config => (false, None, false),
        RepoFile::Object(kind, id) => (st.verify_upload, Some(id.as_str()), *kind == Kind::Data),
    };
    match st.repos.occupant(&path).await? {
        None => {}
        // A retry whose first 200 was lost (docs/protocol.md, "Uploads"). Same length and the
        // body hashes to the id: answer 200 and leave the stored file alone (restic deletes
        // the object after a 403).
        Some(Occupant::File(size)) if verify && declared == Some(size) => {
            let got = upload::hash_body(req.body_mut(), declared, &st.uploads).await?;
            if got.sha256.as_deref() == expected {
                return Ok(Saved::There(got.len));
            }
            return Err(Error::Exists);
        }
        // A directory, FIFO or dangling symlink is no object: 403 as in the Go server, never
        // a 200 for something that cannot be read back.
        Some(_) => return Err(Error::Exists),
    }
    // The temp file first: it fails for a repository that does not exist, before a quota
    // counter is made for its segment (so made-up names cannot grow the counters' table).
    let mut temp = TempObject::create(&st.repos, path.clone(), create_parent, verify).await?;
    // Reserve the declared length before reading a byte of the body: concurrent uploads cannot overshoot.
    let reservation = match &st.quota {
        Some(q) => {
            let rules = st.access.as_ref().map(|a| a.get());
            let segment = segment_limit(rules.as_deref(), repo);
            Some(
                q.reserve(segment, declared.unwrap_or(0))
                    .await
                    .map_err(|_| {
                        log::debug!("quota: /{} is full", escape(&repo.joined()));
                        Error::QuotaExceeded
                    })?,
            )
        }
        None => None,
    };
    let mut reservation = reservation;
    let got = temp
        .receive(req.body_mut(), declared, reservation.as_mut(), &st.uploads)
        .await?;
    if verify && got.sha256.as_deref() != expected {
        return Err(Error::HashMismatch);
    }
    let saved = match temp.commit(&st.repos, reservation).await? {
        Stored::New(mtime) => Saved::New(got.len, mtime),
        // A concurrent upload of the same id won; with verification both bodies hash to the
        // id, so the stored object is exactly ours, if it is a regular file of our length
        // (not something else that appeared under the name meanwhile).
        Stored::AlreadyThere
            if verify && st.repos.occupant(&path).await? == Some(Occupant::File(got.len)) =>
        {
            Saved::There(got.len)
        }
        Stored::AlreadyThere => return Err(Error::Exists),
    };
    log::debug!("stored {} bytes in /{}", got.len, escape(&repo.joined()));
    Ok(saved)
}

/// What an answered upload did.
enum Saved {
    /// Stored `len` bytes as a new object, its file last modified then.
    New(u64, Option<SystemTime>),
    /// The object was there already, holding exactly these `len` bytes (a retry, or a
    /// concurrent upload of the same id that won): nothing new.
    There(u64),
}

/// With an access file, the first path segment of `repo` and its limit (a repository at
/// the root has none: only `--max-size` applies there).
fn segment_limit<'a>(rules: Option<&Rules>, repo: &'a RepoPath) -> Option<SegmentLimit<'a>> {
    let rules = rules?;
    let name = repo.segments().first()?;
    let limit = rules.quota(name).and_then(|q| q.limit);
    Some(SegmentLimit { name, limit })
}

/// Deletes a file; returns its size if there was one to delete.
async fn delete(st: &State, repo: &RepoPath, file: &RepoFile) -> Result<Option<u64>, Error> {
    // --append-only: a client may only remove its own locks.
    if st.append_only && !matches!(file, RepoFile::Object(Kind::Locks, _)) {
        return Err(Error::Forbidden("append-only mode"));
    }
    // Deleting what is not there is still 200, as in the Go server.
    let deleted = st.repos.delete(&path_of(st, repo, file)).await?;
    if let (Some(size), Some(q)) = (deleted, &st.quota) {
        let segment = st.access.as_ref().and(repo.segments().first());
        q.release(segment.map(String::as_str), size);
    }
    Ok(deleted)
}

/// The response for a failure: status text as body, plus the header some statuses need.
fn error_response(e: &Error) -> Response {
    let mut res = status_response(e.status());
    match e {
        Error::Unauthorized => set(&mut res, header::WWW_AUTHENTICATE, "Basic realm=\"restic\""),
        Error::LoginFlood => {
            let secs = auth::BUSY_RETRY_AFTER.as_secs().to_string();
            set(&mut res, header::RETRY_AFTER, secs);
        }
        Error::MethodNotAllowed(allow) => set(&mut res, header::ALLOW, *allow),
        Error::RangeNotSatisfiable(size) => {
            set(&mut res, header::CONTENT_RANGE, format!("bytes */{size}"));
        }
        _ => {}
    }
    res
}
