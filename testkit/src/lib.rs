//! The test kit shared by the integration tests (`tests/it`) and the benchmarks (`bench/`):
//! starts the real `rest-server` binary on 127.0.0.1:0 in its own temp dir and talks raw
//! HTTP/1.1 to it, so tests can also send what no well-behaved client would (half bodies,
//! odd paths, stalled connections); waits for conditions; runs the binary's subcommands.
//!
//! The binary: `$REST_SERVER_BIN` if set, else `rest-server` next to the running executable
//! or one directory up (cargo puts test executables in `target/<profile>/deps/` and the
//! server and bench binaries in `target/<profile>/`). See [`bin`].

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

/// The `rest-server` binary under test: `$REST_SERVER_BIN`, else `rest-server` next to the
/// running executable or one directory up. cargo builds it before the integration tests.
pub fn bin() -> &'static str {
    static BIN: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    BIN.get_or_init(|| {
        if let Some(b) = std::env::var_os("REST_SERVER_BIN") {
            return b.to_string_lossy().into_owned();
        }
        let exe = std::env::current_exe().expect("current_exe");
        exe.ancestors()
            .skip(1)
            .take(2)
            .map(|dir| dir.join("rest-server"))
            .find(|p| p.is_file())
            .unwrap_or_else(|| {
                panic!(
                    "no rest-server binary next to {} (build it, or set REST_SERVER_BIN)",
                    exe.display()
                )
            })
            .to_string_lossy()
            .into_owned()
    })
}

/// Test-only setting of the server (src/watch.rs): how often, in milliseconds, it looks at
/// the htpasswd and access files for changes (30 s otherwise). Tests of reloads on change set
/// it to [`FAST_POLL_MS`] so they wait well under a second.
pub const POLL_INTERVAL_ENV: &str = "REST_SERVER_POLL_INTERVAL_MS";

/// The check interval the reload tests use.
pub const FAST_POLL_MS: &str = "200";

/// A temp dir removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(name: &str) -> TempDir {
        TempDir::below(&std::env::temp_dir(), name)
    }

    /// A temp dir below cargo's target directory (`target/tmp`, found from the running test
    /// executable in `target/<profile>/deps/`, whatever `$REST_SERVER_BIN` says), for tests
    /// that need a disk rather than whatever `/tmp` is (tmpfs has no writeback). That is
    /// normally the disk of the checkout; [`TempDir::assert_writeback`] says so if it is not.
    pub fn on_disk(name: &str) -> TempDir {
        let exe = std::env::current_exe().expect("the test executable");
        let target = exe
            .ancestors()
            .nth(3)
            .expect("target directory")
            .to_path_buf();
        let dir = TempDir::below(&target.join("tmp"), name);
        dir.assert_writeback();
        dir
    }

    /// Fails with a clear message where the page cache is never written back to a disk.
    pub fn assert_writeback(&self) {
        let out = std::process::Command::new("stat")
            .args(["-f", "-c", "%T"])
            .arg(&self.0)
            .output()
            .expect("stat");
        let fs = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        assert!(
            !matches!(fs.as_str(), "tmpfs" | "ramfs"),
            "{} is on {fs}: this test needs a disk-backed CARGO_TARGET_DIR",
            self.0.display()
        );
    }

    fn below(base: &Path, name: &str) -> TempDir {
        static COUNTER: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = base.join(format!(
            "rest-server-test-{name}-{}-{n}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A running server.
pub struct Server {
    pub child: Child,
    pub addr: String,
    pub dir: TempDir,
    pub data: PathBuf,
    pub log: Arc<Mutex<Vec<String>>>,
}

impl Server {
    /// Starts with `--no-auth` plus `args`.
    pub fn start(args: &[&str]) -> Server {
        let mut all = vec!["--no-auth"];
        all.extend_from_slice(args);
        Server::start_raw(&all)
    }

    /// Starts with exactly `args` (plus --path and --listen unless given).
    pub fn start_raw(args: &[&str]) -> Server {
        let dir = TempDir::new("srv");
        Server::start_in(dir, args)
    }

    pub fn start_in(dir: TempDir, args: &[&str]) -> Server {
        Server::start_in_env(dir, args, &[])
    }

    /// As [`Server::start_in`], with environment variables `env` set for the server, e.g.
    /// [`POLL_INTERVAL_ENV`].
    pub fn start_in_env(dir: TempDir, args: &[&str], env: &[(&str, &str)]) -> Server {
        let data = dir.path().join("data");
        let mut cmd = Command::new(bin());
        cmd.envs(env.iter().copied());
        if !args.iter().any(|a| a.starts_with("--path")) {
            cmd.arg("--path").arg(&data);
        }
        if !args.iter().any(|a| a.starts_with("--listen")) {
            cmd.args(["--listen", "127.0.0.1:0"]);
        }
        cmd.args(args).stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("start rest-server");
        let log = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = mpsc::channel();
        follow_lines(
            child.stderr.take().unwrap(),
            &log,
            usize::MAX,
            &tx,
            listen_address_in,
        );
        follow_lines(
            child.stdout.take().unwrap(),
            &log,
            usize::MAX,
            &tx,
            listen_address_in,
        );
        // Generous: on a loaded 2-core machine, tests that start many servers with bcrypt
        // users at once have seen starts of more than 20 s.
        let addr = rx
            .recv_timeout(Duration::from_secs(60))
            .unwrap_or_else(|_| panic!("server did not start: {:?}", log.lock().unwrap()));
        Server {
            child,
            addr,
            dir,
            data,
            log,
        }
    }

    pub fn log_text(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }

    /// The number of times the server has said it took an idle connection from hyper
    /// (`--debug`), on any of its connections.
    pub fn let_go_count(&self) -> usize {
        self.log_text().matches("hyper let go of it").count()
    }

    /// Waits until the log contains `needle` (or panics after `secs`).
    pub fn wait_log(&self, needle: &str, secs: u64) {
        let t = Instant::now();
        while !self.log_text().contains(needle) {
            assert!(
                t.elapsed() < Duration::from_secs(secs),
                "log never said {needle:?}:\n{}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn connect(&self) -> TcpStream {
        let s = TcpStream::connect(&self.addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        s
    }

    pub fn req(&self, method: &str, path: &str) -> Req<'_> {
        Req {
            server: self,
            method: method.into(),
            path: path.into(),
            headers: vec![],
            body: None,
        }
    }

    pub fn get(&self, path: &str) -> Resp {
        self.req("GET", path).send()
    }

    pub fn post(&self, path: &str, body: &[u8]) -> Resp {
        self.req("POST", path).body(body).send()
    }

    pub fn delete(&self, path: &str) -> Resp {
        self.req("DELETE", path).send()
    }

    pub fn head(&self, path: &str) -> Resp {
        self.req("HEAD", path).send()
    }

    /// Creates repo `name` ("" = root) and asserts 200.
    pub fn create_repo(&self, name: &str) {
        let path = if name.is_empty() {
            "/?create=true".to_owned()
        } else {
            format!("/{name}/?create=true")
        };
        assert_eq!(self.post(&path, b"").status, 200);
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// How many file descriptors the server has open.
    pub fn open_fds(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.pid()))
            .unwrap()
            .count()
    }

    pub fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([&format!("-{sig}"), &self.pid().to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill -{sig}");
    }

    /// Waits for the process to exit (panics after `secs`).
    pub fn wait_exit(&mut self, secs: u64) -> ExitStatus {
        let t = Instant::now();
        loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                return st;
            }
            assert!(
                t.elapsed() < Duration::from_secs(secs),
                "server did not exit"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// A field of /proc/PID/status in KiB (e.g. "VmHWM", "VmRSS").
    pub fn proc_status_kib(&self, field: &str) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{field}:")))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap()
    }

    /// Opens an upload of `len` declared bytes, sends `prefix` of the body and waits until
    /// the server has created the temp file: the upload is then really in progress.
    pub fn start_upload(&self, path: &str, len: usize, prefix: &[u8]) -> TcpStream {
        let mut c = self.connect();
        c.write_all(post_head(path, len).as_bytes()).unwrap();
        c.write_all(prefix).unwrap();
        wait_until(5, "temp file of the upload", || {
            !self.files_named("rest-server-temp").is_empty()
        });
        c
    }

    /// All files below the data dir whose name contains `needle`.
    pub fn files_named(&self, needle: &str) -> Vec<PathBuf> {
        let mut out = vec![];
        walk(&self.data, &mut |p| {
            if p.file_name().unwrap().to_string_lossy().contains(needle) {
                out.push(p.to_owned());
            }
        });
        out
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A child process killed (and reaped) when dropped.
/// The address in rest-server's start-up line `... start server on ADDR`.
pub fn listen_address_in(line: &str) -> Option<String> {
    let rest = line.split("start server on ").nth(1)?;
    rest.split_whitespace().next().map(str::to_owned)
}

/// Drains a server's output `pipe` on a thread of its own, for the server's whole life (a
/// chatty server must never block on a full pipe): each line goes to `lines`, which keeps
/// the last `keep`, and whatever `find` picks out of a line (the address the server says it
/// listens on) goes to `found`.
pub fn follow_lines(
    pipe: impl Read + Send + 'static,
    lines: &Arc<Mutex<Vec<String>>>,
    keep: usize,
    found: &mpsc::Sender<String>,
    find: fn(&str) -> Option<String>,
) {
    let (lines, found) = (lines.clone(), found.clone());
    std::thread::spawn(move || {
        for line in BufReader::new(pipe).lines().map_while(Result::ok) {
            if let Some(addr) = find(&line) {
                let _ = found.send(addr);
            }
            let mut lines = lines.lock().unwrap_or_else(|e| e.into_inner());
            if keep > 0 && lines.len() >= keep {
                lines.remove(0);
            }
            if keep > 0 {
                lines.push(line);
            }
        }
    });
}

pub struct KillOnDrop(pub Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub fn walk(dir: &Path, f: &mut dyn FnMut(&Path)) {
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let p = e.path();
            if e.file_type().unwrap().is_dir() {
                walk(&p, f);
            } else {
                f(&p);
            }
        }
    }
}

pub struct Req<'a> {
    server: &'a Server,
    method: String,
    path: String,
    headers: Vec<(String, String)>,
    body: Option<Vec<u8>>,
}

impl Req<'_> {
    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    pub fn body(mut self, body: &[u8]) -> Self {
        self.body = Some(body.to_vec());
        self
    }

    pub fn basic(self, user: &str, password: &str) -> Self {
        let v = format!("Basic {}", b64(format!("{user}:{password}").as_bytes()));
        self.header("Authorization", &v)
    }

    /// The raw request bytes (head and body).
    pub fn bytes(&self) -> Vec<u8> {
        let mut head = format!("{} {} HTTP/1.1\r\nHost: test\r\n", self.method, self.path);
        for (k, v) in &self.headers {
            head.push_str(&format!("{k}: {v}\r\n"));
        }
        let has_length = self
            .headers
            .iter()
            .any(|(k, _)| k.eq_ignore_ascii_case("content-length"));
        if let Some(b) = self.body.as_ref().filter(|_| !has_length) {
            head.push_str(&format!("Content-Length: {}\r\n", b.len()));
        }
        head.push_str("\r\n");
        let mut out = head.into_bytes();
        if let Some(b) = &self.body {
            out.extend_from_slice(b);
        }
        out
    }

    pub fn send(self) -> Resp {
        let mut s = self.server.connect();
        s.write_all(&self.bytes()).unwrap();
        read_response(&mut BufReader::new(s), &self.method)
    }
}

#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Resp {
    pub fn header(&self, name: &str) -> Option<&str> {
        header_in(&self.headers, name)
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// The value of the first field called `name` (in any case).
fn header_in<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

/// A response's status and header fields, as [`read_response_to`] reads them.
#[derive(Debug)]
pub struct Head {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    /// The body ran to the end of the connection (no length, not chunked): nothing more can
    /// be read from it.
    pub until_eof: bool,
}

impl Head {
    pub fn header(&self, name: &str) -> Option<&str> {
        header_in(&self.headers, name)
    }

    /// Whether the server closes the connection after this response.
    pub fn closes(&self) -> bool {
        self.header("connection")
            .is_some_and(|v| v.eq_ignore_ascii_case("close"))
    }
}

/// Reads one response from a keep-alive or closing connection, handing its body to `sink`
/// piece by piece as it arrives (a benchmark keeps none of it). The body is framed by
/// `Content-Length`, by chunked coding (chunk extensions and trailers are skipped), or, with
/// neither, by the end of the connection; there is none after HEAD, 1xx, 204 and 304. An
/// error: the connection ended early, or the response is not framed as HTTP/1.1 says.
pub fn read_response_to(
    r: &mut impl BufRead,
    method: &str,
    sink: &mut dyn FnMut(&[u8]),
) -> io::Result<Head> {
    let status_line = read_line(r)?;
    let status = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| bad(format!("bad status line {status_line:?}")))?;
    let mut head = Head {
        status,
        headers: Vec::new(),
        until_eof: false,
    };
    loop {
        let line = read_line(r)?;
        if line.is_empty() {
            break;
        }
        let (k, v) = line
            .split_once(':')
            .ok_or_else(|| bad(format!("bad header line {line:?}")))?;
        head.headers
            .push((k.trim().to_owned(), v.trim().to_owned()));
    }
    if method == "HEAD" || status < 200 || status == 204 || status == 304 {
        return Ok(head);
    }
    let chunked = head
        .header("transfer-encoding")
        .is_some_and(|v| v.eq_ignore_ascii_case("chunked"));
    if chunked {
        loop {
            let size_line = read_line(r)?;
            let hex = size_line.split(';').next().unwrap_or("").trim();
            let n = u64::from_str_radix(hex, 16)
                .map_err(|_| bad(format!("bad chunk size {size_line:?}")))?;
            if n == 0 {
                while !read_line(r)?.is_empty() {}
                break;
            }
            read_body(r, Some(n), sink)?;
            if !read_line(r)?.is_empty() {
                return Err(bad("a chunk not followed by CRLF".into()));
            }
        }
    } else if let Some(n) = head.header("content-length") {
        let n = n
            .parse()
            .map_err(|_| bad(format!("bad Content-Length {n:?}")))?;
        read_body(r, Some(n), sink)?;
    } else {
        read_body(r, None, sink)?;
        head.until_eof = true;
    }
    Ok(head)
}

/// Hands `len` bytes (`None`: all up to the end of the connection) to `sink`.
fn read_body(
    r: &mut impl BufRead,
    len: Option<u64>,
    sink: &mut dyn FnMut(&[u8]),
) -> io::Result<()> {
    let mut left = len.unwrap_or(u64::MAX);
    while left > 0 {
        let buf = r.fill_buf()?;
        if buf.is_empty() {
            return match len {
                Some(_) => Err(io::ErrorKind::UnexpectedEof.into()),
                None => Ok(()),
            };
        }
        let take = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
        sink(&buf[..take]);
        r.consume(take);
        left -= take as u64;
    }
    Ok(())
}

/// One line without its CRLF (or bare LF); bytes that are not UTF-8 are replaced.
fn read_line(r: &mut impl BufRead) -> io::Result<String> {
    let mut line = Vec::new();
    if r.read_until(b'\n', &mut line)? == 0 {
        return Err(io::ErrorKind::UnexpectedEof.into());
    }
    let line = String::from_utf8_lossy(&line);
    Ok(line.trim_end_matches(['\r', '\n']).to_owned())
}

fn bad(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg)
}

/// Reads one whole response (see [`read_response_to`]); panics if it cannot.
pub fn read_response(r: &mut impl BufRead, method: &str) -> Resp {
    let mut body = Vec::new();
    let head = read_response_to(r, method, &mut |piece| body.extend_from_slice(piece))
        .unwrap_or_else(|e| panic!("reading the answer to {method}: {e}"));
    Resp {
        status: head.status,
        headers: head.headers,
        body,
    }
}

/// Sends `req` on an existing connection and reads the answer (keep-alive tests).
pub fn exchange(s: &mut BufReader<TcpStream>, req: &[u8], method: &str) -> Resp {
    s.get_mut().write_all(req).unwrap();
    read_response(s, method)
}

/// Polls `cond` until it holds; panics with `what` after `secs`.
pub fn wait_until(secs: u64, what: &str, mut cond: impl FnMut() -> bool) {
    let t = Instant::now();
    while !cond() {
        assert!(
            t.elapsed() < Duration::from_secs(secs),
            "timed out waiting: {what}"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// A complete chunked `POST path` request carrying `body` in chunks of `chunk` bytes.
pub fn chunked_post(path: &str, body: &[u8], chunk: usize) -> Vec<u8> {
    let mut raw = format!("POST {path} HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n")
        .into_bytes();
    for c in body.chunks(chunk) {
        raw.extend_from_slice(format!("{:x}\r\n", c.len()).as_bytes());
        raw.extend_from_slice(c);
        raw.extend_from_slice(b"\r\n");
    }
    raw.extend_from_slice(b"0\r\n\r\n");
    raw
}

/// The head of a `POST path` with a declared length, for tests that send the body by hand.
pub fn post_head(path: &str, len: usize) -> String {
    format!("POST {path} HTTP/1.1\r\nHost: t\r\nContent-Length: {len}\r\n\r\n")
}

pub fn close_write(s: &TcpStream) {
    let _ = s.shutdown(Shutdown::Write);
}

pub fn sha256_hex(data: &[u8]) -> String {
    sha256_repeated(data, 1)
}

/// The SHA-256 (hex) of `piece` repeated `times` times, without building it.
pub fn sha256_repeated(piece: &[u8], times: usize) -> String {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    for _ in 0..times {
        h.update(piece);
    }
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// What [`Rng::mutate`] inserts into requests: line ends and separators, bytes that are
/// not ASCII or not text, signs, numbers too large for any length, and the words and
/// characters that framing and paths hinge on.
pub const MUTATION_PIECES: &[&[u8]] = &[
    b"\r",
    b"\n",
    b"\r\n",
    b":",
    b" ",
    b"\t",
    b"\0",
    b"\xff",
    "\u{e9}".as_bytes(),
    b"-",
    b"+",
    b"=",
    b",",
    b";",
    b"0",
    b"f",
    b"9999999999999999999999999",
    b"%",
    b"%2F",
    b"/..",
    b"chunked",
    b"bytes=",
];

/// A small xorshift generator: the same sequence for the same seed, every run.
pub struct Rng(pub u64);

impl Rng {
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// A number below `n` (0 when `n` is 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n.max(1) as u64) as usize
    }

    /// Changes `raw` at a random place, one of three ways: one of `pieces` inserted, up to
    /// 6 bytes deleted, or a byte replaced by any byte.
    pub fn mutate(&mut self, raw: &mut Vec<u8>, pieces: &[&[u8]]) {
        let at = self.below(raw.len() + 1);
        match self.below(10) {
            0..=3 => {
                let p = pieces[self.below(pieces.len())];
                raw.splice(at..at, p.iter().copied());
            }
            4..=6 => {
                let end = (at + 1 + self.below(6)).min(raw.len());
                raw.drain(at.min(end)..end);
            }
            _ if at < raw.len() => raw[at] = self.below(256) as u8,
            _ => {}
        }
    }
}

/// Deterministic pseudo-random bytes.
pub fn random_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
    (0..len).map(|_| (rng.next_u64() >> 24) as u8).collect()
}

pub fn b64(data: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(data)
}

/// Runs the binary with `args` and returns (exit code, stdout, stderr), with a timeout.
pub fn run_cli(args: &[&str]) -> (i32, String, String) {
    let mut child = Command::new(bin())
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let t = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if t.elapsed() > Duration::from_secs(10) {
            let _ = child.kill();
            panic!("rest-server {args:?} did not exit");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let out = child.wait_with_output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Runs `rest-server ARGS` with `stdin` as standard input: (exit code, stdout, stderr).
pub fn cli_with_stdin(args: &[&str], stdin: &str) -> (i32, String, String) {
    let mut child = Command::new(bin())
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // A child that refuses its arguments exits without reading: a broken pipe is fine.
    let _ = child.stdin.take().unwrap().write_all(stdin.as_bytes());
    let out = child.wait_with_output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

// restic helpers: the end-to-end tests drive the real client.

/// The restic to run: `$TEST_RESTIC` if set (CI also runs these tests with a current restic,
/// see .ci/restic-new.sh), else `restic` from PATH (Debian 12's 0.14).
pub fn restic_bin() -> String {
    std::env::var("TEST_RESTIC")
        .ok()
        .filter(|r| !r.is_empty())
        .unwrap_or_else(|| "restic".into())
}

/// restic's minor version (0.MINOR.x), for commands that were renamed.
pub fn restic_minor() -> u32 {
    let out = Command::new(restic_bin())
        .arg("version")
        .output()
        .expect("restic version");
    let text = String::from_utf8_lossy(&out.stdout);
    // "restic 0.14.0 compiled with go1.19.8 on linux/amd64"
    text.split_whitespace()
        .nth(1)
        .and_then(|v| v.split('.').nth(1))
        .and_then(|m| m.parse().ok())
        .unwrap_or_else(|| panic!("cannot read restic's version from {text:?}"))
}

/// Runs restic against `repo_url`; returns its output.
pub fn restic(dir: &Path, repo_url: &str, args: &[&str]) -> std::process::Output {
    Command::new(restic_bin())
        .args(args)
        .env("RESTIC_REPOSITORY", repo_url)
        .env("RESTIC_PASSWORD", "correct horse battery staple")
        .env("RESTIC_CACHE_DIR", dir.join("cache"))
        .env("TZ", "UTC")
        .env_remove("RESTIC_PASSWORD_FILE")
        .output()
        .expect("restic must be installed (apt-get install restic)")
}

/// [`restic`], which must succeed (its output is in the panic message otherwise).
pub fn restic_ok(dir: &Path, repo_url: &str, args: &[&str]) -> std::process::Output {
    let out = restic(dir, repo_url, args);
    assert!(
        out.status.success(),
        "restic {args:?} failed:\n{}",
        output_text(&out)
    );
    out
}

/// Asserts that a restic run succeeded; returns its stdout and stderr together.
pub fn ok(out: std::process::Output, what: &str) -> String {
    let text = output_text(&out);
    assert!(out.status.success(), "restic {what} failed:\n{text}");
    text
}

/// A finished command's stdout and stderr together (for assertions and their messages).
pub fn output_text(out: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}
