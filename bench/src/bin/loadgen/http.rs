//! A minimal blocking HTTP/1.1 client: keep-alive, Content-Length and chunked bodies.

use super::*;

pub(crate) struct Response {
    pub(crate) status: u16,
    pub(crate) body_len: u64,
}

pub(crate) struct Conn {
    pub(crate) addr: String,
    pub(crate) auth: Option<String>,
    pub(crate) stream: Option<TcpStream>,
    pub(crate) buf: Vec<u8>,
    pub(crate) start: usize,
    pub(crate) end: usize,
}

impl Conn {
    pub(crate) fn new(addr: &str, auth: bool) -> Conn {
        use base64::Engine as _;
        let auth = auth.then(|| {
            let cred =
                base64::engine::general_purpose::STANDARD.encode(format!("{USER}:{PASSWORD}"));
            format!("Basic {cred}")
        });
        Conn {
            addr: addr.to_owned(),
            auth,
            stream: None,
            buf: vec![0; CLIENT_BUF],
            start: 0,
            end: 0,
        }
    }

    pub(crate) fn connect(&mut self) -> io::Result<()> {
        if self.stream.is_none() {
            let s = TcpStream::connect(&self.addr)?;
            s.set_nodelay(true)?;
            s.set_read_timeout(Some(SOCKET_TIMEOUT))?;
            s.set_write_timeout(Some(SOCKET_TIMEOUT))?;
            self.stream = Some(s);
            self.start = 0;
            self.end = 0;
        }
        Ok(())
    }

    /// Sends one request; body bytes of the answer go to `sink`. On any error the
    /// connection is dropped (the next request reconnects).
    pub(crate) fn request(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
        sink: &mut dyn FnMut(&[u8]),
    ) -> io::Result<Response> {
        let r = self.request_inner(method, path, headers, body, sink);
        if r.is_err() {
            self.stream = None;
        }
        r
    }

    pub(crate) fn request_inner(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
        sink: &mut dyn FnMut(&[u8]),
    ) -> io::Result<Response> {
        self.connect()?;
        let mut head = format!("{method} {path} HTTP/1.1\r\nHost: {}\r\n", self.addr);
        if let Some(a) = &self.auth {
            let _ = write!(head, "Authorization: {a}\r\n");
        }
        for (k, v) in headers {
            let _ = write!(head, "{k}: {v}\r\n");
        }
        if method == "POST" || method == "PUT" {
            let _ = write!(head, "Content-Length: {}\r\n", body.len());
        }
        head.push_str("\r\n");
        let stream = self.stream.as_mut().expect("connected");
        if body.len() <= CLIENT_BUF {
            let mut all = head.into_bytes();
            all.extend_from_slice(body);
            stream.write_all(&all)?;
        } else {
            stream.write_all(head.as_bytes())?;
            stream.write_all(body)?;
        }

        let status_line = self.line()?;
        let status = status_line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| bad(format!("bad status line {status_line:?}")))?;
        let (mut length, mut chunked, mut close) = (None, false, false);
        loop {
            let line = self.line()?;
            if line.is_empty() {
                break;
            }
            let Some((k, v)) = line.split_once(':') else {
                continue;
            };
            let (k, v) = (k.trim().to_ascii_lowercase(), v.trim());
            match k.as_str() {
                "content-length" => length = v.parse::<u64>().ok(),
                "transfer-encoding" => chunked = v.eq_ignore_ascii_case("chunked"),
                "connection" => close = v.eq_ignore_ascii_case("close"),
                _ => {}
            }
        }
        let mut body_len = 0;
        if method != "HEAD" && status != 204 && status != 304 {
            if chunked {
                loop {
                    let size_line = self.line()?;
                    let hex = size_line.split(';').next().unwrap_or("").trim();
                    let n = u64::from_str_radix(hex, 16)
                        .map_err(|_| bad(format!("bad chunk size {size_line:?}")))?;
                    if n == 0 {
                        // Trailers, then the empty line.
                        while !self.line()?.is_empty() {}
                        break;
                    }
                    self.body(n, sink)?;
                    body_len += n;
                    if !self.line()?.is_empty() {
                        return Err(bad("chunk not followed by CRLF".into()));
                    }
                }
            } else if let Some(n) = length {
                self.body(n, sink)?;
                body_len = n;
            } else {
                // No length: the body ends with the connection.
                loop {
                    if self.start == self.end && self.fill()? == 0 {
                        break;
                    }
                    sink(&self.buf[self.start..self.end]);
                    body_len += (self.end - self.start) as u64;
                    self.start = self.end;
                }
                close = true;
            }
        }
        if close {
            self.stream = None;
        }
        Ok(Response { status, body_len })
    }

    pub(crate) fn fill(&mut self) -> io::Result<usize> {
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        } else if self.end == self.buf.len() {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        let stream = self
            .stream
            .as_mut()
            .ok_or_else(|| bad("not connected".into()))?;
        let n = stream.read(&mut self.buf[self.end..])?;
        self.end += n;
        Ok(n)
    }

    pub(crate) fn line(&mut self) -> io::Result<String> {
        loop {
            if let Some(i) = self.buf[self.start..self.end]
                .iter()
                .position(|&b| b == b'\n')
            {
                let line = String::from_utf8_lossy(&self.buf[self.start..self.start + i]);
                let line = line.trim_end_matches('\r').to_owned();
                self.start += i + 1;
                return Ok(line);
            }
            if self.end - self.start == self.buf.len() {
                return Err(bad("header line too long".into()));
            }
            if self.fill()? == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
        }
    }

    pub(crate) fn body(&mut self, mut n: u64, sink: &mut dyn FnMut(&[u8])) -> io::Result<()> {
        while n > 0 {
            if self.start == self.end && self.fill()? == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
            let take = (self.end - self.start).min(n as usize);
            sink(&self.buf[self.start..self.start + take]);
            self.start += take;
            n -= take as u64;
        }
        Ok(())
    }
}

pub(crate) fn bad(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg)
}

pub(crate) fn discard(_: &[u8]) {}

/// One request that must answer `want`.
pub(crate) fn expect(
    conn: &mut Conn,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
    want: u16,
) -> Result<(), String> {
    match conn.request(method, path, headers, body, &mut discard) {
        Ok(r) if r.status == want => Ok(()),
        Ok(r) => Err(format!(
            "{method} {path}: status {} (wanted {want})",
            r.status
        )),
        Err(e) => Err(format!("{method} {path}: {e}")),
    }
}
