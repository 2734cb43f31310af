//! A blocking keep-alive HTTP/1.1 client: writes requests, reads answers with the test kit's
//! streaming response reader (Content-Length, chunked, or to the end of the connection).

use super::*;

pub(crate) struct Response {
    pub(crate) status: u16,
    pub(crate) body_len: u64,
}

pub(crate) struct Conn {
    pub(crate) addr: String,
    pub(crate) auth: Option<String>,
    /// Read through a CLIENT_BUF buffer; requests are written to the stream under it.
    pub(crate) stream: Option<BufReader<TcpStream>>,
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
        }
    }

    pub(crate) fn connect(&mut self) -> io::Result<&mut BufReader<TcpStream>> {
        if self.stream.is_none() {
            let s = TcpStream::connect(&self.addr)?;
            s.set_nodelay(true)?;
            s.set_read_timeout(Some(SOCKET_TIMEOUT))?;
            s.set_write_timeout(Some(SOCKET_TIMEOUT))?;
            self.stream = Some(BufReader::with_capacity(CLIENT_BUF, s));
        }
        Ok(self.stream.as_mut().expect("just connected"))
    }

    /// Sends one request; body bytes of the answer go to `sink` (the test kit's response
    /// reader). On any error the connection is dropped (the next request reconnects).
    pub(crate) fn request(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
        sink: &mut dyn FnMut(&[u8]),
    ) -> io::Result<Response> {
        let r = self.request_inner(method, path, headers, body, sink);
        if !matches!(r, Ok((_, true))) {
            self.stream = None;
        }
        r.map(|(response, _)| response)
    }

    /// The response, and whether the connection can carry another request.
    fn request_inner(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
        sink: &mut dyn FnMut(&[u8]),
    ) -> io::Result<(Response, bool)> {
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
        let stream = self.connect()?;
        if body.len() <= CLIENT_BUF {
            let mut all = head.into_bytes();
            all.extend_from_slice(body);
            stream.get_mut().write_all(&all)?;
        } else {
            stream.get_mut().write_all(head.as_bytes())?;
            stream.get_mut().write_all(body)?;
        }
        let mut body_len = 0;
        let answer = testkit::read_response_to(stream, method, &mut |piece| {
            body_len += piece.len() as u64;
            sink(piece);
        })?;
        let response = Response {
            status: answer.status,
            body_len,
        };
        Ok((response, !answer.until_eof && !answer.closes()))
    }
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
