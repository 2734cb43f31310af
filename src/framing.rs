//! What a client sends, checked below async-h1 before async-h1 parses it. Three inputs
//! that async-h1 2.3 (with http-types 2.12) cannot take, found by an audit and reproduced:
//!
//! - a request header value with a byte >= 0x80 that is valid UTF-8 (`User-Agent: café`):
//!   http-types' `HeaderValue` must be ASCII and async-h1 unwraps the conversion, so one
//!   request, before any authentication, panicked the process (abort: panic = "abort");
//! - a chunked body whose trailer section holds such a byte: the same unwrap, in the chunked
//!   decoder;
//! - a trailer section that arrives in two reads: the decoder returns `Pending` without a
//!   waker, so the upload's writer (or async-h1 draining the body of any other request) waits
//!   forever, holding its upload slot, its temp file and the connection.
//!
//! [`Framing`] follows the bytes of a connection as they are read: the request head up to its
//! blank line, then a chunked body (the same grammar as async-h1's decoder) to its end. It
//! refuses a header line with a byte >= 0x80 (the request line may hold one: a raw UTF-8
//! path is percent-encoded by the URL parser) and a second `Transfer-Encoding` header, both
//! answered 400 by the connection; it refuses trailer fields (restic never sends any; the Go
//! server would accept them), which fails the body like a client that went away (400); and
//! it never lets a read end between the CR and the LF that end a chunked body, so the decoder
//! always gets that line whole. Bodies with a Content-Length pass unexamined.

use std::fmt;

/// async-h1 refuses a request head of this many bytes or more; a longer header line cannot
/// be a request it serves, so we keep no more of one.
const MAX_LINE: usize = 8 * 1024;

/// Why a connection's bytes were refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refused {
    /// A header line holds a byte that is not ASCII.
    NonAsciiHeader,
    /// More than one `Transfer-Encoding` header: which one counts is ambiguous.
    TransferEncodingTwice,
    /// A chunked body breaks the chunk syntax (or a chunk size overflows 64 bits).
    ChunkSyntax,
    /// A chunked body ends with trailer fields.
    Trailers,
}

impl Refused {
    /// Whether the request head was refused (the connection answers 400 itself: async-h1
    /// never got a request); otherwise the body was, and the request's reader sees an error.
    pub(crate) fn in_head(self) -> bool {
        matches!(
            self,
            Refused::NonAsciiHeader | Refused::TransferEncodingTwice
        )
    }
}

impl fmt::Display for Refused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Refused::NonAsciiHeader => "a request header holds a byte that is not ASCII",
            Refused::TransferEncodingTwice => "more than one Transfer-Encoding header",
            Refused::ChunkSyntax => "malformed chunked body",
            Refused::Trailers => "trailer fields after a chunked body are not supported",
        })
    }
}

impl std::error::Error for Refused {}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// In a request head.
    Head,
    /// Passing bytes unexamined: a body of known length (or none), or after a chunked body
    /// until the next request head.
    Body,
    /// In a chunk-size line: hex digits so far.
    Size(u64),
    /// After the CR of a chunk-size line.
    SizeLf(u64),
    /// In a chunk's data: this many bytes left.
    Data(u64),
    DataCr,
    DataLf,
    /// After the last chunk: the empty line that ends the body, CR then LF.
    TrailerCr,
    TrailerLf,
    Refused(Refused),
}

/// One connection's position in the request stream; see the module doc.
#[derive(Debug)]
pub(crate) struct Framing {
    state: State,
    /// The head's progress through "\r\n\r\n" (async-h1 ends a head at the first one).
    blank: u8,
    /// Whether the request line is over (leading empty lines do not count).
    past_request_line: bool,
    /// Whether the current line has a byte other than CR.
    line_has_content: bool,
    /// The current header line without CRs, up to `MAX_LINE` bytes.
    line: Vec<u8>,
    transfer_encodings: u32,
    chunked: bool,
    /// The CR that ends a chunked body was held back from the last read; the next read
    /// must deliver it first.
    pub(crate) held_cr: bool,
}

impl Framing {
    /// At the start of a connection: a request head comes first.
    pub(crate) fn new() -> Framing {
        let mut f = Framing {
            state: State::Head,
            blank: 0,
            past_request_line: false,
            line_has_content: false,
            line: Vec::new(),
            transfer_encodings: 0,
            chunked: false,
            held_cr: false,
        };
        f.expect_head();
        f
    }

    /// The next bytes read are a new request head (async-h1 is about to read one). A refusal
    /// stays: the connection is closing.
    pub(crate) fn expect_head(&mut self) {
        if matches!(self.state, State::Refused(_)) {
            return;
        }
        self.state = State::Head;
        self.blank = 0;
        self.past_request_line = false;
        self.line_has_content = false;
        self.line.clear();
        self.transfer_encodings = 0;
        self.chunked = false;
        self.held_cr = false;
    }

    /// What was refused on this connection, if anything.
    pub(crate) fn refused(&self) -> Option<Refused> {
        match self.state {
            State::Refused(r) => Some(r),
            _ => None,
        }
    }

    /// Follows `bytes`, just read from the connection. Returns how many of them may be
    /// handed on: all; all but the last when that is the CR ending a chunked body (then
    /// `held_cr` is set, and the caller hands it on at the start of the next read); or those
    /// before a refused byte, so that async-h1 still gets a good request head (and the
    /// handler a body to fail on) when the bad byte came in the same read. The refusal is
    /// the answer to every later read, and to this one when nothing precedes it.
    pub(crate) fn scan(&mut self, bytes: &[u8]) -> Result<usize, Refused> {
        if bytes.is_empty() {
            return Ok(0); // EOF stays EOF, in any state
        }
        let mut i = 0;
        while i < bytes.len() {
            let b = bytes[i];
            let next = match self.state {
                State::Body => return Ok(bytes.len()),
                State::Refused(r) => return Err(r),
                State::Data(left) => {
                    let take = left.min((bytes.len() - i) as u64);
                    i += take as usize;
                    self.state = match left - take {
                        0 => State::DataCr,
                        left => State::Data(left),
                    };
                    continue;
                }
                State::Head => self.head_byte(b),
                State::Size(n) => match (b as char).to_digit(16) {
                    Some(d) => n
                        .checked_mul(16)
                        .and_then(|n| n.checked_add(d.into()))
                        .map(State::Size)
                        .ok_or(Refused::ChunkSyntax),
                    None if b == b'\r' => Ok(State::SizeLf(n)),
                    None => Err(Refused::ChunkSyntax),
                },
                State::SizeLf(0) if b == b'\n' => Ok(State::TrailerCr),
                State::SizeLf(n) if b == b'\n' => Ok(State::Data(n)),
                State::DataCr if b == b'\r' => Ok(State::DataLf),
                State::DataLf if b == b'\n' => Ok(State::Size(0)),
                State::TrailerCr if b == b'\r' => Ok(State::TrailerLf),
                State::TrailerCr => Err(Refused::Trailers),
                State::TrailerLf if b == b'\n' => Ok(State::Body),
                State::SizeLf(_) | State::DataCr | State::DataLf | State::TrailerLf => {
                    Err(Refused::ChunkSyntax)
                }
            };
            match next {
                Ok(s) => self.state = s,
                Err(r) => {
                    // Refused right after the CR that follows the last chunk: that CR is not
                    // handed on either, or the decoder would wait for its LF forever. (At
                    // i = 0 the CR was held back from the last read: nothing to hand on.)
                    let keep = match self.state {
                        State::TrailerLf => i.saturating_sub(1),
                        _ => i,
                    };
                    self.state = State::Refused(r);
                    return if keep > 0 { Ok(keep) } else { Err(r) };
                }
            }
            i += 1;
        }
        if self.state == State::TrailerLf {
            // The last byte is the CR after the last chunk (TrailerLf lasts one byte).
            self.held_cr = true;
            return Ok(bytes.len() - 1);
        }
        Ok(bytes.len())
    }

    /// One byte of a request head; the state after it.
    fn head_byte(&mut self, b: u8) -> Result<State, Refused> {
        self.blank = match (self.blank, b) {
            (0 | 2, b'\r') | (1 | 3, b'\n') => self.blank + 1,
            (_, b'\r') => 1,
            _ => 0,
        };
        if b == b'\n' {
            if self.past_request_line {
                self.header_line_done();
            } else if self.line_has_content {
                self.past_request_line = true;
            }
            self.line.clear();
            self.line_has_content = false;
        } else if b != b'\r' {
            self.line_has_content = true;
            if self.past_request_line {
                if !b.is_ascii() {
                    return Err(Refused::NonAsciiHeader);
                }
                if self.line.len() < MAX_LINE {
                    self.line.push(b);
                }
            }
        }
        if self.blank < 4 {
            return Ok(State::Head);
        }
        if self.transfer_encodings > 1 {
            return Err(Refused::TransferEncodingTwice);
        }
        Ok(if self.chunked {
            State::Size(0)
        } else {
            State::Body
        })
    }

    /// Notes a `Transfer-Encoding` header the way async-h1 reads it: the body is chunked when
    /// the value, trimmed, is "chunked" in any case.
    fn header_line_done(&mut self) {
        const NAME: &[u8] = b"transfer-encoding:";
        let line = &self.line;
        if line.len() >= NAME.len() && line[..NAME.len()].eq_ignore_ascii_case(NAME) {
            self.transfer_encodings += 1;
            let value = line[NAME.len()..].trim_ascii();
            self.chunked = value.eq_ignore_ascii_case(b"chunked");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `input` in pieces of `step` bytes the way a connection would (a held CR goes in
    /// front of the next piece); returns the bytes handed on, or the refusal.
    fn feed(f: &mut Framing, input: &[u8], step: usize) -> Result<Vec<u8>, Refused> {
        let mut out = Vec::new();
        for piece in input.chunks(step) {
            let mut read = Vec::new();
            let held = std::mem::take(&mut f.held_cr);
            if held {
                read.push(b'\r');
            }
            let start = read.len();
            read.extend_from_slice(piece);
            let keep = f.scan(&read[start..])?;
            out.extend_from_slice(&read[..start + keep]);
            if let Some(r) = f.refused() {
                return Err(r);
            }
        }
        Ok(out)
    }

    fn head(extra: &str) -> String {
        format!("POST /r/data/x HTTP/1.1\r\nHost: h\r\n{extra}\r\n")
    }

    #[test]
    fn a_plain_head_and_its_body_pass_unchanged_in_any_pieces() {
        let mut input = head("Content-Length: 4\r\n").into_bytes();
        input.extend_from_slice(&[0xff, 0x80, b'\r', b'\n']);
        for step in 1..input.len() + 1 {
            let mut f = Framing::new();
            assert_eq!(
                feed(&mut f, &input, step).unwrap(),
                input,
                "pieces of {step}"
            );
            assert_eq!(f.state, State::Body);
        }
    }

    #[test]
    fn a_non_ascii_header_byte_is_refused_but_a_raw_utf8_path_is_not() {
        let bad = "GET /config HTTP/1.1\r\nUser-Agent: café\r\n\r\n";
        let mut f = Framing::new();
        assert_eq!(
            feed(&mut f, bad.as_bytes(), 7),
            Err(Refused::NonAsciiHeader)
        );
        assert_eq!(f.refused(), Some(Refused::NonAsciiHeader));
        assert!(Refused::NonAsciiHeader.in_head());
        // Refused for good, even after expect_head.
        f.expect_head();
        assert_eq!(f.scan(b"GET / HTTP/1.1\r\n"), Err(Refused::NonAsciiHeader));

        let path = "GET /café/config HTTP/1.1\r\nHost: h\r\n\r\n";
        let mut f = Framing::new();
        assert_eq!(feed(&mut f, path.as_bytes(), 3).unwrap(), path.as_bytes());
        // Leading empty lines do not make the request line a header line.
        let mut f = Framing::new();
        let lead = format!("\r\n{path}");
        assert_eq!(feed(&mut f, lead.as_bytes(), 5).unwrap(), lead.as_bytes());
    }

    #[test]
    fn bytes_before_a_refused_byte_are_handed_on_first() {
        let input = "GET /config HTTP/1.1\r\nX: é\r\n\r\n";
        let mut f = Framing::new();
        let at = input.find('é').unwrap();
        assert_eq!(f.scan(input.as_bytes()), Ok(at));
        assert_eq!(f.scan(b"more"), Err(Refused::NonAsciiHeader));
        // EOF stays EOF.
        assert_eq!(f.scan(b""), Ok(0));
    }

    #[test]
    fn a_refusal_after_the_last_cr_does_not_hand_that_cr_on() {
        // Found in review: "0\r\n\rX" in one read handed on "...0\r\n\r", and async-h1's
        // decoder waited forever for the LF.
        let h = head("Transfer-Encoding: chunked\r\n");
        for tail in ["0\r\n\rX", "0\r\n\r\r"] {
            let input = format!("{h}{tail}");
            let mut f = Framing::new();
            let keep = f.scan(input.as_bytes()).unwrap();
            assert_eq!(&input.as_bytes()[..keep], format!("{h}0\r\n").as_bytes());
            assert_eq!(f.refused(), Some(Refused::ChunkSyntax));
        }
        // The same with the CR held back from an earlier read: nothing more is handed on.
        let mut f = Framing::new();
        let first = format!("{h}0\r\n\r");
        assert_eq!(f.scan(first.as_bytes()), Ok(first.len() - 1));
        assert!(f.held_cr);
        f.held_cr = false;
        assert_eq!(f.scan(b"X"), Err(Refused::ChunkSyntax));
        // And an empty read is EOF in any state.
        let mut f = Framing::new();
        f.state = State::TrailerLf;
        assert_eq!(f.scan(b""), Ok(0));
    }

    #[test]
    fn two_transfer_encodings_are_refused() {
        let input = head("Transfer-Encoding: chunked\r\ntransfer-encoding: identity\r\n");
        let mut f = Framing::new();
        assert_eq!(
            feed(&mut f, input.as_bytes(), 100),
            Err(Refused::TransferEncodingTwice)
        );
    }

    fn chunked(trailer: &str) -> Vec<u8> {
        let mut v = head("Transfer-Encoding:  Chunked \r\n").into_bytes();
        v.extend_from_slice(b"5\r\nhe\xffl\r\r\n");
        v.extend_from_slice(b"1A\r\n");
        v.extend_from_slice(&[0x80; 26]);
        v.extend_from_slice(b"\r\n0000\r\n");
        v.extend_from_slice(trailer.as_bytes());
        v
    }

    #[test]
    fn a_chunked_body_passes_whole_and_never_stops_between_its_last_cr_and_lf() {
        let input = chunked("\r\n");
        for step in 1..input.len() + 1 {
            let mut f = Framing::new();
            let mut delivered = Vec::new();
            let mut held_at_end = false;
            for piece in input.chunks(step) {
                let mut read = Vec::new();
                if std::mem::take(&mut f.held_cr) {
                    read.push(b'\r');
                }
                let start = read.len();
                read.extend_from_slice(piece);
                let keep = f.scan(&read[start..]).unwrap();
                delivered.extend_from_slice(&read[..start + keep]);
                // No read ends between the body's last CR and LF.
                assert_ne!(delivered.len(), input.len() - 1, "pieces of {step}");
                held_at_end = f.held_cr;
            }
            assert!(!held_at_end);
            assert_eq!(delivered, input, "pieces of {step}");
            assert_eq!(f.state, State::Body);
        }
    }

    #[test]
    fn the_next_request_head_is_checked_again() {
        let mut input = chunked("\r\n");
        let mut f = Framing::new();
        feed(&mut f, &input, 9).unwrap();
        f.expect_head();
        input = b"GET /config HTTP/1.1\r\nX: \xc3\xa9\r\n\r\n".to_vec();
        assert_eq!(feed(&mut f, &input, 9), Err(Refused::NonAsciiHeader));
    }

    #[test]
    fn trailer_fields_and_broken_chunks_are_refused() {
        for trailer in ["X: y\r\n\r\n", "X: é\r\n\r\n", "\rX"] {
            let mut f = Framing::new();
            let want = if trailer.starts_with('\r') {
                Refused::ChunkSyntax
            } else {
                Refused::Trailers
            };
            assert_eq!(feed(&mut f, &chunked(trailer), 4), Err(want), "{trailer:?}");
            assert!(!want.in_head());
        }
        let h = head("Transfer-Encoding: chunked\r\n");
        for body in [
            "5;ext=1\r\nhello\r\n0\r\n\r\n",
            "5\r\nhelloX\r\n",
            "5\nhello",
            "g\r\n",
            "11111111111111111\r\n",
        ] {
            let mut f = Framing::new();
            let input = format!("{h}{body}");
            assert_eq!(
                feed(&mut f, input.as_bytes(), 3),
                Err(Refused::ChunkSyntax),
                "{body:?}"
            );
        }
        // 16 hex digits still fit in 64 bits.
        let mut f = Framing::new();
        let input = format!("{h}ffffffffffffffff\r\nab");
        assert!(feed(&mut f, input.as_bytes(), 5).is_ok());
        assert_eq!(f.state, State::Data(u64::MAX - 2));
    }

    #[test]
    fn an_empty_size_line_ends_the_body_as_in_async_h1() {
        let input = format!("{}\r\n\r\n", head("Transfer-Encoding: chunked\r\n"));
        let mut f = Framing::new();
        assert_eq!(feed(&mut f, input.as_bytes(), 2).unwrap(), input.as_bytes());
        assert_eq!(f.state, State::Body);
    }
}
