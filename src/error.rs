//! Every way a request can fail, and the one place that turns a failure into an HTTP status.
//!
//! Modules below the handler report *what* went wrong (the object exists, the disk is full, the
//! client went away); only [`Error::status`] decides what the client is told. Bodies are the
//! status text; the detail carried here goes to the log, never to the client.

use hyper::StatusCode;
use std::io;

#[derive(Debug)]
pub(crate) enum Error {
    /// Unknown path, missing object or repository.
    NotFound,
    /// Known path, wrong method; carries the `Allow` header value.
    MethodNotAllowed(&'static str),
    /// The request itself is malformed; the reason is for the debug log.
    BadRequest(&'static str),
    /// Missing or wrong credentials (also: private repo of someone else, as the Go server does).
    Unauthorized,
    /// Credentials not checked: too many wrong passwords lately, from many addresses (see
    /// `auth/flood_budget.rs`; 429 so that restic retries, where a 401 would make it give up).
    LoginFlood,
    /// Refused by policy (append-only, ...). Reason for the debug log.
    Forbidden(&'static str),
    /// Upload of an object or config that already exists (refused in every mode).
    Exists,
    /// Upload body does not hash to its id.
    HashMismatch,
    /// `Range` start beyond the end; carries the object size for `Content-Range: bytes */size`.
    RangeNotSatisfiable(u64),
    /// A quota would be exceeded: `--max-size`, or the access file's limit for the segment.
    QuotaExceeded,
    /// ENOSPC or EDQUOT from the file system.
    StorageFull(io::Error),
    /// The request body could not be read to its end: disconnect, timeout, short body.
    ClientGone(io::Error),
    /// Any other I/O failure on our side.
    Io(io::Error),
}

impl Error {
    /// The one status decision of the server.
    pub(crate) fn status(&self) -> StatusCode {
        match self {
            Error::NotFound => StatusCode::NOT_FOUND,
            Error::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            Error::BadRequest(_) | Error::HashMismatch | Error::ClientGone(_) => {
                StatusCode::BAD_REQUEST
            }
            Error::Unauthorized => StatusCode::UNAUTHORIZED,
            Error::LoginFlood => StatusCode::TOO_MANY_REQUESTS,
            Error::Forbidden(_) | Error::Exists => StatusCode::FORBIDDEN,
            Error::RangeNotSatisfiable(_) => StatusCode::RANGE_NOT_SATISFIABLE,
            Error::QuotaExceeded | Error::StorageFull(_) => StatusCode::INSUFFICIENT_STORAGE,
            Error::Io(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// Errors of our own side that an operator should see at the default log level.
    pub(crate) fn is_server_fault(&self) -> bool {
        matches!(self, Error::Io(_) | Error::StorageFull(_))
    }
}

impl From<io::Error> for Error {
    /// Classifies a file-system error: a full disk or quota is 507, a vanished file 404 (also
    /// a path through a file, e.g. a "repo" named like the htpasswd file or its lock file),
    /// anything else a server fault.
    fn from(e: io::Error) -> Self {
        match e.kind() {
            io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded => Error::StorageFull(e),
            io::ErrorKind::NotFound | io::ErrorKind::NotADirectory => Error::NotFound,
            _ => Error::Io(e),
        }
    }
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Error::MethodNotAllowed(allow) => write!(f, "method not allowed (allow: {allow})"),
            Error::BadRequest(why) | Error::Forbidden(why) => f.write_str(why),
            Error::RangeNotSatisfiable(size) => write!(f, "range not satisfiable (size {size})"),
            Error::StorageFull(e) | Error::ClientGone(e) | Error::Io(e) => e.fmt(f),
            Error::Exists => f.write_str("already exists"),
            other => f.write_str(other.status().canonical_reason().unwrap_or("error")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn disk_full_and_quota_are_507() {
        for kind in [io::ErrorKind::StorageFull, io::ErrorKind::QuotaExceeded] {
            let e = Error::from(io::Error::from(kind));
            assert_eq!(e.status(), StatusCode::INSUFFICIENT_STORAGE);
        }
        assert_eq!(
            Error::from(io::Error::other("x")).status(),
            StatusCode::INTERNAL_SERVER_ERROR
        );
        for kind in [io::ErrorKind::NotFound, io::ErrorKind::NotADirectory] {
            let e = Error::from(io::Error::from(kind));
            assert_eq!(e.status(), StatusCode::NOT_FOUND);
        }
    }
}
