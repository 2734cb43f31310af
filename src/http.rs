//! Pure HTTP helpers: `Range` parsing, `Authorization: Basic` decoding and the plain-text
//! responses every error gets. Nothing here touches the file system or the network.

use base64::Engine as _;
use http_types::{Body, Response, StatusCode};

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
    let mut res = Response::new(status);
    res.set_body(Body::from_string(format!(
        "{}\n",
        status.canonical_reason()
    )));
    res.insert_header("Content-Type", "text/plain; charset=utf-8");
    res
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
