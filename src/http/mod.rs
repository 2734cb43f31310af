//! Pure HTTP helpers: `Range` parsing, `Authorization: Basic` decoding, query parameters and
//! the plain-text responses every error gets. Nothing here touches the file system or the
//! network.

//!
//! The folder holds the connection side: listeners, hyper and our limits (`server`), TLS
//! (`tls`) and response bodies (`body`).

pub(crate) mod body;
pub(crate) mod server;
#[cfg(feature = "tls")]
pub(crate) mod tls;

use crate::http::body::{Body, Response};
use base64::Engine as _;
use hyper::StatusCode;
use hyper::header::{CONTENT_TYPE, HeaderValue};

/// What a `Range` header asks of an object of a given size.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Range {
    /// No range, or several ranges (answered with the whole body, which HTTP allows).
    Full,
    /// One satisfiable range, `start..=end`, already clamped to the object.
    Partial { start: u64, end: u64 },
    /// The range starts past the end, or the header is malformed (Go's `ServeContent` answers
    /// both with 416).
    Unsatisfiable,
}

/// Parses a `Range` header the way Go's `http.ServeContent` does for a single range.
pub(crate) fn parse_range(header: Option<&str>, size: u64) -> Range {
    let Some(header) = header else {
        return Range::Full;
    };
    let Some(spec) = header.trim().strip_prefix("bytes=") else {
        return Range::Unsatisfiable;
    };
    if spec.contains(',') {
        return Range::Full;
    }
    let Some((first, last)) = spec.trim().split_once('-') else {
        return Range::Unsatisfiable;
    };
    let number = |s: &str| -> Option<u64> {
        let s = s.trim();
        (!s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
            .then(|| s.parse().ok())
            .flatten()
    };
    match (first.trim().is_empty(), number(first), number(last)) {
        // bytes=-N: the last N bytes.
        (true, _, Some(n)) if n > 0 && size > 0 => Range::Partial {
            start: size - n.min(size),
            end: size - 1,
        },
        (false, Some(start), end) if start < size => match (last.trim().is_empty(), end) {
            (true, _) => Range::Partial {
                start,
                end: size - 1,
            },
            (false, Some(end)) if end >= start => Range::Partial {
                start,
                end: end.min(size - 1),
            },
            _ => Range::Unsatisfiable,
        },
        _ => Range::Unsatisfiable,
    }
}

/// Decodes `Authorization: Basic base64(user:password)`; `None` for anything else.
pub(crate) fn parse_basic(header: &str) -> Option<(String, String)> {
    let (scheme, encoded) = header.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let decoded = String::from_utf8(decoded).ok()?;
    let (user, password) = decoded.split_once(':')?;
    Some((user.to_owned(), password.to_owned()))
}

/// A response whose body is the status text, as the Go server's `http.Error` sends.
pub(crate) fn status_response(status: StatusCode) -> Response {
    let reason = status.canonical_reason().unwrap_or("");
    let mut res = Response::new(Body::text(format!("{reason}\n")));
    *res.status_mut() = status;
    res.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    res
}

/// The value of `key` in a URL query (`a=1&b=2`), percent-decoded and with `+` as a space, as
/// Go's `URL.Query().Get` reads it: the first occurrence; `None` if absent or undecodable.
pub(crate) fn query_value(query: Option<&str>, key: &str) -> Option<String> {
    query?.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (form_decode(k)? == key).then(|| form_decode(v)).flatten()
    })
}

/// Decodes `+` and `%XX` of a query component; `None` for a bad escape or invalid UTF-8.
fn form_decode(s: &str) -> Option<String> {
    let mut out = Vec::with_capacity(s.len());
    let mut bytes = s.bytes();
    while let Some(b) = bytes.next() {
        out.push(match b {
            b'+' => b' ',
            b'%' => {
                let hi = (bytes.next()? as char).to_digit(16)?;
                let lo = (bytes.next()? as char).to_digit(16)?;
                (hi * 16 + lo) as u8
            }
            b => b,
        });
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(start: u64, end: u64) -> Range {
        Range::Partial { start, end }
    }

    #[test]
    fn ranges_restic_sends() {
        assert_eq!(parse_range(None, 10), Range::Full);
        assert_eq!(parse_range(Some("bytes=0-"), 10), p(0, 9));
        assert_eq!(parse_range(Some("bytes=2-5"), 10), p(2, 5));
        assert_eq!(parse_range(Some("bytes=9-9"), 10), p(9, 9));
        // An end past the object is clamped, as Go does.
        assert_eq!(parse_range(Some("bytes=4-100"), 10), p(4, 9));
        assert_eq!(parse_range(Some("bytes=-3"), 10), p(7, 9));
        assert_eq!(parse_range(Some("bytes=-30"), 10), p(0, 9));
    }

    #[test]
    fn unsatisfiable_and_malformed_ranges() {
        assert_eq!(parse_range(Some("bytes=10-"), 10), Range::Unsatisfiable);
        assert_eq!(parse_range(Some("bytes=10-20"), 10), Range::Unsatisfiable);
        assert_eq!(parse_range(Some("bytes=0-"), 0), Range::Unsatisfiable);
        assert_eq!(parse_range(Some("bytes=5-2"), 10), Range::Unsatisfiable);
        assert_eq!(parse_range(Some("bytes=-0"), 10), Range::Unsatisfiable);
        assert_eq!(parse_range(Some("bytes=a-b"), 10), Range::Unsatisfiable);
        assert_eq!(parse_range(Some("bytes=+1-2"), 10), Range::Unsatisfiable);
        assert_eq!(parse_range(Some("items=0-1"), 10), Range::Unsatisfiable);
        assert_eq!(parse_range(Some("bytes=5"), 10), Range::Unsatisfiable);
        assert_eq!(
            parse_range(Some("bytes=99999999999999999999-"), 10),
            Range::Unsatisfiable
        );
    }

    #[test]
    fn multiple_ranges_get_the_whole_body() {
        assert_eq!(parse_range(Some("bytes=0-1,4-5"), 10), Range::Full);
    }

    #[test]
    fn query_values_as_go_reads_them() {
        assert_eq!(
            query_value(Some("create=true"), "create").as_deref(),
            Some("true")
        );
        assert_eq!(
            query_value(Some("a=1&create=tru%65"), "create").as_deref(),
            Some("true")
        );
        assert_eq!(
            query_value(Some("cr%65ate=true"), "create").as_deref(),
            Some("true")
        );
        assert_eq!(
            query_value(Some("create=false&create=true"), "create").as_deref(),
            Some("false")
        );
        assert_eq!(query_value(Some("create"), "create").as_deref(), Some(""));
        assert_eq!(query_value(Some("created=true"), "create"), None);
        assert_eq!(query_value(Some("create=%zz"), "create"), None);
        assert_eq!(query_value(None, "create"), None);
        assert_eq!(query_value(Some("q=a+b"), "q").as_deref(), Some("a b"));
    }

    #[test]
    fn basic_auth_header() {
        // "alice:s3cr:et" — the password may contain colons.
        assert_eq!(
            parse_basic("Basic YWxpY2U6czNjcjpldA=="),
            Some(("alice".into(), "s3cr:et".into()))
        );
        assert_eq!(
            parse_basic("basic   YWxpY2U6czNjcjpldA== "),
            Some(("alice".into(), "s3cr:et".into()))
        );
        assert_eq!(parse_basic("Bearer YWxpY2U6czNjcjpldA=="), None);
        assert_eq!(parse_basic("Basic !!!"), None);
        // "alice" without a colon.
        assert_eq!(parse_basic("Basic YWxpY2U="), None);
        assert_eq!(parse_basic("Basic"), None);
    }
}
