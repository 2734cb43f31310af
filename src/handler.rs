//! The one request pipeline, top to bottom: authenticate -> route -> policy -> operation ->
//! response, then the access-log line. Every request-level failure becomes a response here
//! (async-h1 would drop the connection on an `Err`), and every status comes from `error.rs`.

use crate::access::{Right, Rules};
use crate::accesslog::{AccessLog, Entry};
use crate::auth::{self, Auth, Verdict};
use crate::cli::{Config, LogTarget};
use crate::error::Error;
use crate::http::{Range, parse_basic, parse_range, status_response};
use crate::metrics::{self, BlobOp, Metrics, ProcessStats, Rejected};
use crate::quota::{Quota, SegmentLimit};
use crate::repo::Repos;
use crate::route::{self, File, Kind, Op, RepoPath, Route};
use crate::upload::{self, Stored, TempObject};
use crate::watch::Watched;
use http_types::{Body, Request, Response, StatusCode};
use smol::io::BufReader;
use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Instant;

const V2_MEDIA_TYPE: &str = "application/vnd.x.restic.rest.v2";
const V1_MEDIA_TYPE: &str = "application/vnd.x.restic.rest.v1";

/// Uploads written at once; more wait for a turn. Each has a writer thread and a 128 KiB
/// buffer (`upload.rs`), so a client opening hundreds of slow uploads must not get a thread
/// each: 64 is far above what restic uses (a few connections) and bounds the writers' memory
/// to ~8 MiB of buffers even on a router.
const MAX_UPLOADS: usize = 64;

/// With `--private-repos`, the one user who may read `/metrics` (as in the Go server).
const METRICS_USER: &str = "metrics";

/// Who may do anything at all.
#[derive(Debug)]
pub(crate) enum Authn {
    /// `--no-auth`.
    Anonymous,
    /// `--proxy-auth-username HEADER`: a trusted reverse proxy names the user.
    ProxyHeader(String),
    /// HTTP Basic against the htpasswd file (boxed: users, cache and back-off table make it
    /// ten times the size of the other variants).
    Htpasswd(Box<Auth>),
}

/// Everything a request may need; built once at start-up and shared by reference.
#[derive(Debug)]
pub(crate) struct State {
    pub repos: Repos,
    pub authn: Authn,
    pub append_only: bool,
    pub private_repos: bool,
    /// `--access-file`: rights per user and repo, quotas per first path segment.
    pub access: Option<Watched<Rules>>,
    pub verify_upload: bool,
    /// `--max-size` or `--access-file`: usage is counted.
    pub quota: Option<Arc<Quota>>,
    pub access_log: Option<AccessLog>,
    /// `--prometheus`: counters, and `/metrics` is routed.
    pub metrics: Option<Metrics>,
    /// `--prometheus-no-auth`: `/metrics` needs no credentials.
    pub metrics_no_auth: bool,
    /// Turns for uploads: at most [`MAX_UPLOADS`] write at once.
    pub uploads: smol::lock::Semaphore,
    /// Requests between "head parsed" and "response written"; shutdown waits for zero.
    pub in_flight: AtomicUsize,
    /// Set on SIGINT/SIGTERM: answers carry `Connection: close`.
    pub stopping: AtomicBool,
}

impl State {
    /// Builds the state from a validated config. Errors name the file and the problem.
    pub(crate) fn new(cfg: &Config) -> Result<State, String> {
        let authn = if cfg.no_auth {
            Authn::Anonymous
        } else if let Some(header) = &cfg.proxy_auth_username {
            Authn::ProxyHeader(header.clone())
        } else {
            Authn::Htpasswd(Box::new(Auth::load(&cfg.htpasswd_file)?))
        };
        let access_log = match &cfg.log {
            None => None,
            Some(target) => {
                let path = match target {
                    LogTarget::Stdout => None,
                    LogTarget::File(p) => Some(p.clone()),
                };
                let log = AccessLog::open(path.clone()).map_err(|e| {
                    let name = path.map_or("standard output".into(), |p| p.display().to_string());
                    format!("cannot open access log {name}: {e}")
                })?;
                Some(log)
            }
        };
        let access = cfg.access_file.as_deref().map(Watched::open).transpose()?;
        let quota = (cfg.max_size.is_some() || access.is_some())
            .then(|| Quota::new(cfg.max_size, access.is_some()));
        Ok(State {
            repos: Repos::new(cfg.path.clone(), cfg.group_accessible),
            authn,
            append_only: cfg.append_only,
            private_repos: cfg.private_repos,
            access,
            verify_upload: cfg.verify_upload,
            quota,
            access_log,
            metrics: cfg.prometheus.then(Metrics::new),
            metrics_no_auth: cfg.prometheus_no_auth,
            uploads: smol::lock::Semaphore::new(MAX_UPLOADS),
            in_flight: AtomicUsize::new(0),
            stopping: AtomicBool::new(false),
        })
    }

    /// SIGHUP: re-read what can change under a running server.
    pub(crate) fn reload(&self) {
        if let Authn::Htpasswd(auth) = &self.authn {
            auth.reload();
        }
        if let Some(access) = &self.access {
            access.reload();
        }
        if let Some(log) = &self.access_log {
            log.reopen();
        }
    }
}

/// Handles one request; never fails (a failure is a response).
pub(crate) async fn handle(st: &State, peer: &str, mut req: Request) -> Response {
    let started = Instant::now();
    let has_body = req.len().is_some_and(|n| n > 0) || req.header("Transfer-Encoding").is_some();
    let route = route::parse(
        req.method().as_ref(),
        req.url().path(),
        st.metrics.is_some(),
    );
    // --prometheus-no-auth: /metrics is open to anyone, as in the Go server.
    let open = st.metrics_no_auth && matches!(route, Ok(Route::Metrics));
    let authenticated = if open {
        Ok(None)
    } else {
        authenticate(st, &req, peer).await
    };
    let (user, result) = match authenticated {
        Ok(user) => {
            let result = serve(st, user.as_deref(), route, &mut req).await;
            (user, result)
        }
        Err(e) => (None, Err(e)),
    };
    let mut res = result.unwrap_or_else(|e| {
        let what = format!("{} {}", req.method(), req.url().path());
        if e.is_server_fault() {
            log::error!("{what}: {e}");
        } else {
            log::debug!("{what}: {e}");
        }
        error_response(&e)
    });
    // async-h1 would read and discard an unread request body before the next request; a
    // refused upload must not make us swallow gigabytes, so such connections are closed.
    if (has_body && !res.status().is_success()) || st.stopping.load(Ordering::Relaxed) {
        res.insert_header("Connection", "close");
    }
    // Body bytes sent: a HEAD answer's Content-Length is never sent.
    let bytes = match req.method() {
        http_types::Method::Head => 0,
        _ => res.len().unwrap_or(0) as u64,
    };
    log::debug!(
        "{peer} {} {} {} -> {} ({bytes} bytes, {} ms)",
        user.as_deref().unwrap_or("-"),
        req.method(),
        req.url().path(),
        res.status(),
        started.elapsed().as_millis()
    );
    if let Some(log) = &st.access_log {
        let url = req.url();
        let uri = match url.query() {
            Some(q) => format!("{}?{q}", url.path()),
            None => url.path().to_owned(),
        };
        let header = |name: &str| req.header(name).map_or("", |v| v.as_str());
        log.write(&Entry {
            host: peer,
            user: user.as_deref().unwrap_or(""),
            method: req.method().as_ref(),
            uri: &uri,
            status: res.status().into(),
            bytes,
            referer: header("Referer"),
            user_agent: header("User-Agent"),
        });
    }
    res
}

/// Who is asking: `None` for anonymous (`--no-auth`), else the user name. `peer` is the
/// client address, for the back-off on failed logins.
async fn authenticate(st: &State, req: &Request, peer: &str) -> Result<Option<String>, Error> {
    match &st.authn {
        Authn::Anonymous => Ok(None),
        Authn::ProxyHeader(name) => match req.header(name.as_str()).map(|v| v.as_str()) {
            Some(user) if !user.is_empty() => Ok(Some(user.to_owned())),
            _ => Err(Error::Unauthorized),
        },
        Authn::Htpasswd(auth) => {
            let header = req.header("Authorization").map(|v| v.as_str());
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
                repo.joined(),
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
            let len = res.len().unwrap_or(0) as u64;
            count(st, user, &repo, &file, BlobOp::Read, len);
            Ok(res)
        }
        Op::Save(file) => match save(st, &repo, &file, req).await {
            Ok(len) => {
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
                count(st, user, &repo, &file, BlobOp::Delete, size);
            }
            Ok(ok())
        }
    }
}

/// The right an operation needs under `--access-file`. Locks are part of reading: restic
/// locks a repository even to read it.
fn needed(op: &Op) -> Right {
    match op {
        Op::List(_) | Op::Head(_) | Op::Get(_) => Right::Read,
        Op::Save(File::Object(Kind::Locks, _)) | Op::Delete(File::Object(Kind::Locks, _)) => {
            Right::Read
        }
        Op::Create | Op::Save(_) => Right::Append,
        Op::Delete(_) => Right::Write,
    }
}

/// Counts a blob operation for `--prometheus`. The config is not a blob: never counted, as
/// in the Go server. Anonymous (`--no-auth`) requests count under user `""`, as in Go.
fn count(st: &State, user: Option<&str>, repo: &RepoPath, file: &File, op: BlobOp, bytes: u64) {
    if let (Some(m), File::Object(kind, _)) = (&st.metrics, file) {
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
            report.add_limits(&access.get());
        }
        report
    });
    let mut res = ok();
    res.set_body(m.render(&process, quota.as_ref()));
    res.insert_header("Content-Type", metrics::CONTENT_TYPE);
    Ok(res)
}

fn ok() -> Response {
    Response::new(StatusCode::Ok)
}

fn path_of(st: &State, repo: &RepoPath, file: &File) -> std::path::PathBuf {
    match file {
        File::Config => st.repos.config_path(repo),
        File::Object(kind, id) => st.repos.object_path(repo, *kind, id),
    }
}

async fn create(st: &State, repo: &RepoPath, req: &Request) -> Result<Response, Error> {
    let create = req.url().query_pairs().find(|(k, _)| k == "create");
    if create.is_none_or(|(_, v)| v != "true") {
        return Err(Error::BadRequest(
            "POST on a repository without ?create=true",
        ));
    }
    st.repos.create(repo).await?;
    log::info!("created repository /{}", repo.joined());
    Ok(ok())
}

async fn list(st: &State, repo: &RepoPath, kind: Kind, req: &Request) -> Result<Response, Error> {
    let v2 = req
        .header("Accept")
        .is_some_and(|a| a.as_str().contains(V2_MEDIA_TYPE));
    let listing = st
        .repos
        .list(repo, kind, v2)
        .await?
        .ok_or(Error::NotFound)?;
    let mut res = ok();
    // No length: the JSON is produced while it is sent (chunked), so a 100 000-object
    // listing starts at once and needs no more memory than one chunk.
    res.set_body(Body::from_reader(BufReader::new(listing), None));
    res.insert_header(
        "Content-Type",
        if v2 { V2_MEDIA_TYPE } else { V1_MEDIA_TYPE },
    );
    Ok(res)
}

/// A body length as http-types takes it (`usize`). On 32-bit builds (armv7, armv6) a file of
/// 4 GiB or more does not fit: refused (500) rather than announced with a wrong length.
/// restic never writes such a file.
fn body_len(n: u64) -> Result<usize, Error> {
    usize::try_from(n).map_err(|_| {
        let e = format!("{n} bytes: too large to send on this 32-bit build");
        Error::Io(io::Error::other(e))
    })
}

async fn head(st: &State, repo: &RepoPath, file: &File) -> Result<Response, Error> {
    let size = st
        .repos
        .size(&path_of(st, repo, file))
        .await?
        .ok_or(Error::NotFound)?;
    let mut res = ok();
    // A body that is never sent (HEAD) but gives the Content-Length.
    res.set_body(Body::from_reader(smol::io::empty(), Some(body_len(size)?)));
    res.insert_header("Accept-Ranges", "bytes");
    Ok(res)
}

async fn get(st: &State, repo: &RepoPath, file: &File, req: &Request) -> Result<Response, Error> {
    let (f, size) = st
        .repos
        .open(&path_of(st, repo, file))
        .await?
        .ok_or(Error::NotFound)?;
    let range = parse_range(req.header("Range").map(|v| v.as_str()), size);
    let (mut res, start, len) = match range {
        Range::Full => (ok(), 0, size),
        Range::Partial { start, end } => {
            let mut res = Response::new(StatusCode::PartialContent);
            res.insert_header("Content-Range", format!("bytes {start}-{end}/{size}"));
            (res, start, end - start + 1)
        }
        Range::Unsatisfiable => return Err(Error::RangeNotSatisfiable(size)),
    };
    res.set_body(Body::from_reader(
        Repos::stream(f, start, len),
        Some(body_len(len)?),
    ));
    res.insert_header("Accept-Ranges", "bytes");
    res.insert_header("Content-Type", "application/octet-stream");
    Ok(res)
}

/// Stores an upload; returns the body length.
async fn save(st: &State, repo: &RepoPath, file: &File, req: &mut Request) -> Result<u64, Error> {
    let path = path_of(st, repo, file);
    let declared = req.len().map(|n| n as u64);
    // The config is not content-addressed: it is stored atomically but never hashed.
    let (verify, expected, create_parent) = match file {
        File::Config => (false, None, false),
        File::Object(kind, id) => (st.verify_upload, Some(id.as_str()), *kind == Kind::Data),
    };
    if let Some(size) = st.repos.size(&path).await? {
        // SPEC 5.1: a retry whose first 200 was lost. Same length and the body hashes to the
        // id: answer 200 and leave the stored file alone (restic deletes the object after a 403).
        if verify && declared == Some(size) {
            let got = upload::hash_body(req, declared).await?;
            if got.sha256.as_deref() == expected {
                return Ok(got.len);
            }
        }
        return Err(Error::Exists);
    }
    // A turn first: it is held until the upload is stored or has failed.
    let _turn = st.uploads.acquire().await;
    // The temp file first: it fails for a repository that does not exist, before a quota
    // counter is made for its segment (so made-up names cannot grow the counters' table).
    let mut temp = TempObject::create(&st.repos, path, create_parent, verify).await?;
    // Reserve the declared length before reading a byte of the body: concurrent uploads cannot overshoot.
    let reservation = match &st.quota {
        Some(q) => {
            let rules = st.access.as_ref().map(|a| a.get());
            let segment = segment_limit(rules.as_deref(), repo);
            Some(
                q.reserve(segment, declared.unwrap_or(0))
                    .await
                    .map_err(|_| {
                        log::debug!("quota: /{} is full ({segment:?})", repo.joined());
                        Error::QuotaExceeded
                    })?,
            )
        }
        None => None,
    };
    let (got, reservation) = temp.receive(req.take_body(), declared, reservation).await?;
    if verify && got.sha256.as_deref() != expected {
        return Err(Error::HashMismatch);
    }
    match temp.commit(&st.repos, reservation).await? {
        Stored::New => {}
        // A concurrent upload of the same id won; with verification both bodies hash to the
        // id, so the stored object is exactly ours.
        Stored::AlreadyThere if verify => {}
        Stored::AlreadyThere => return Err(Error::Exists),
    }
    log::debug!("stored {} bytes in /{}", got.len, repo.joined());
    Ok(got.len)
}

/// With an access file, the first path segment of `repo` and its limit (a repository at
/// the root has none: only `--max-size` applies there).
fn segment_limit<'a>(rules: Option<&Rules>, repo: &'a RepoPath) -> SegmentLimit<'a> {
    let rules = rules?;
    let first = repo.segments().first()?;
    Some((first, rules.quota(first).and_then(|q| q.limit)))
}

/// Deletes a file; returns its size if there was one to delete.
async fn delete(st: &State, repo: &RepoPath, file: &File) -> Result<Option<u64>, Error> {
    // --append-only: a client may only remove its own locks.
    if st.append_only && !matches!(file, File::Object(Kind::Locks, _)) {
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
        Error::Unauthorized => res.insert_header("WWW-Authenticate", "Basic realm=\"restic\""),
        Error::LoginFlood => {
            res.insert_header("Retry-After", auth::BUSY_RETRY_AFTER.as_secs().to_string())
        }
        Error::MethodNotAllowed(allow) => res.insert_header("Allow", *allow),
        Error::RangeNotSatisfiable(size) => {
            res.insert_header("Content-Range", format!("bytes */{size}"))
        }
        _ => None,
    };
    res
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn body_len_refuses_only_what_usize_cannot_hold() {
        assert_eq!(body_len(0).unwrap(), 0);
        assert_eq!(body_len(u64::from(u32::MAX)).unwrap(), u32::MAX as usize);
        match (usize::MAX as u64).checked_add(1) {
            // 32-bit builds: 4 GiB is one byte too many.
            Some(too_big) => assert!(matches!(body_len(too_big), Err(Error::Io(_)))),
            // 64-bit builds: every file length fits.
            None => assert_eq!(body_len(u64::MAX).unwrap(), usize::MAX),
        }
    }
}
