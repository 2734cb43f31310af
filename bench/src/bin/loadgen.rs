//! loadgen: measures a restic REST server against the performance budget (BENCHMARKS.md) and against
//! the machine it runs on, so that "fast on a Pi" is a number, not a hope.
//!
//! It starts the server command it is given (ours by default) on a fresh temp dir on
//! 127.0.0.1, drives it with a small blocking HTTP/1.1 client (one thread per keep-alive
//! connection, no async runtime, so the client costs little CPU), and reads the server's CPU
//! time and memory from /proc. Every loop is bounded by a count and a deadline. With
//! `--compare` a second server runs the same scenarios right after the first, scenario by
//! scenario, so machine noise hits both alike, and the table shows ratios.
//!
//! The machine limit is measured in the same run: single-core SHA-256 with the sha2 crate the
//! server ships (same version and release profile), and the data dir's sequential write speed
//! with fsync. Upload throughput is reported as a fraction of min(SHA-256 x busy cores, write).
//!
//! See BENCHMARKS.md for how to run it and what the numbers mean.

use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::fs::{self, File};
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Barrier, Mutex};
use std::time::{Duration, Instant};

const USAGE: &str = "\
loadgen: benchmark a restic REST server (see BENCHMARKS.md)

usage: cargo run --release --example loadgen -- [options]

  --server 'CMD'       server command; {path} and {listen} are replaced, {flags} (or the end
                       of the command) gets Go-compatible flags per scenario (--no-auth,
                       --no-verify-upload, --htpasswd-file, --max-size)
                       default: target/release/rest-server --path {path} --listen {listen}
  --compare 'CMD'      a second server, run scenario by scenario after the first
  --server-flags MAP   how the server spells our Go-style flags: FROM=TO,... (TO empty: drop
                       the flag and its value), e.g. --no-verify-upload=,--max-size=
  --compare-flags MAP  the same for the --compare server
  --compare-auth       the --compare server always gets an htpasswd file and credentials
                       (for servers that refuse to work without authentication)
  --names A,B          labels of the two servers (default ours,other)
  --json FILE          also write the results as JSON
  --only LIST          scenarios: upload,download,small,list,startup (default all)
  --conns C            concurrent keep-alive connections (default 8)
  --packs N            16 MiB packs per connection and round (default 2)
  --pack-mib M         pack size in MiB (default 16)
  --rounds R           upload rounds; median throughput is reported (default 3)
  --requests K         small requests per connection (default 2000)
  --objects O          objects in the listing / start-up repository (default 100000)
  --listings L         v2 listings of that repository (default 5)
  --dir DIR            where temp dirs go (default $TMPDIR or /tmp); put it on the disk to test
  --pick-port          choose the port ourselves instead of reading it from the server's log
  --max-secs S         deadline per scenario in seconds (default 120)
  --keep               keep the temp dir
  --download-states    after the full download right after the upload (download_full), also
                       download every pack from a warm page cache (download_full_warm: the
                       client reads the files first) and from a cold one (download_full_cold:
                       the client fdatasyncs and evicts the files with POSIX_FADV_DONTNEED)
  --small-get          small requests alternate HEAD and GET of the 3-byte config (body checked)
";

/// Flags added to the server command per scenario, in the Go server's spelling.
const NO_AUTH: &[&str] = &["--no-auth"];
const NO_VERIFY: &[&str] = &["--no-auth", "--no-verify-upload"];
const AUTH: &[&str] = &["--htpasswd-file", "{path}/.htpasswd"];
/// 1 TiB: large enough never to refuse anything, but quota accounting is on.
const MAX_SIZE: &[&str] = &["--no-auth", "--max-size", "1099511627776"];

/// The repository every scenario works in.
const REPO: &str = "/bench";
const USER: &str = "bench";
const PASSWORD: &str = "loadgen-password";
/// Reads from the server's socket land here; also the largest write of a small request.
const CLIENT_BUF: usize = 256 * 1024;
/// How long a server may take to say which port it listens on.
const START_TIMEOUT: Duration = Duration::from_secs(20);
/// No socket read or write may stall longer than this.
const SOCKET_TIMEOUT: Duration = Duration::from_secs(60);
/// Pause before "idle RSS" is read, so start-up threads have settled.
const IDLE_SETTLE: Duration = Duration::from_millis(300);
const MIB: f64 = 1024.0 * 1024.0;
const GIB: f64 = 1024.0 * MIB;

/// A server to measure: its label, command template, and how to spell our flags for it.
#[derive(Clone)]
struct ServerSpec {
    label: String,
    template: String,
    /// Go flag -> this server's flag; an empty target drops the flag (and its value).
    renames: Vec<(String, String)>,
    /// Run with bcrypt credentials even where a scenario says --no-auth.
    auth_always: bool,
}

#[derive(Clone)]
struct Opts {
    servers: Vec<ServerSpec>,
    json: Option<PathBuf>,
    only: Vec<String>,
    conns: usize,
    packs: usize,
    pack_mib: usize,
    rounds: usize,
    requests: usize,
    objects: usize,
    listings: usize,
    dir: PathBuf,
    pick_port: bool,
    max_secs: u64,
    keep: bool,
    download_states: bool,
    small_get: bool,
}

impl Opts {
    fn wants(&self, scenario: &str) -> bool {
        self.only.is_empty() || self.only.iter().any(|s| s == scenario)
    }
    fn deadline(&self) -> Instant {
        Instant::now() + Duration::from_secs(self.max_secs)
    }
}

fn parse_args() -> Result<Opts, String> {
    let default_server = format!("{} --path {{path}} --listen {{listen}}", testkit::bin());
    let mut server = default_server;
    let mut compare = None;
    let (mut server_renames, mut compare_renames) = (None, None);
    let mut compare_auth = false;
    let mut names = ("ours".to_owned(), "other".to_owned());
    let mut o = Opts {
        servers: Vec::new(),
        json: None,
        only: Vec::new(),
        conns: 8,
        packs: 2,
        pack_mib: 16,
        rounds: 3,
        requests: 2000,
        objects: 100_000,
        listings: 5,
        dir: std::env::temp_dir(),
        pick_port: false,
        max_secs: 120,
        keep: false,
        download_states: false,
        small_get: false,
    };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let (flag, inline) = match a.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f.to_owned(), Some(v.to_owned())),
            _ => (a.clone(), None),
        };
        let mut value = || -> Result<String, String> {
            inline
                .clone()
                .or_else(|| args.next())
                .ok_or_else(|| format!("{flag} needs a value"))
        };
        let number = |v: String| -> Result<usize, String> {
            v.parse::<usize>()
                .ok()
                .filter(|&n| n > 0)
                .ok_or_else(|| format!("{flag}: expected a positive number, got {v:?}"))
        };
        match flag.as_str() {
            "--server" => server = value()?,
            "--compare" => compare = Some(value()?),
            "--server-flags" => server_renames = Some(value()?),
            "--compare-flags" => compare_renames = Some(value()?),
            "--names" => {
                let v = value()?;
                let (a, b) = v.split_once(',').ok_or("--names expects A,B")?;
                names = (a.to_owned(), b.to_owned());
            }
            "--json" => o.json = Some(value()?.into()),
            "--only" => o.only = value()?.split(',').map(str::to_owned).collect(),
            "--conns" => o.conns = number(value()?)?,
            "--packs" => o.packs = number(value()?)?,
            "--pack-mib" => o.pack_mib = number(value()?)?,
            "--rounds" => o.rounds = number(value()?)?,
            "--requests" => o.requests = number(value()?)?,
            "--objects" => o.objects = number(value()?)?,
            "--listings" => o.listings = number(value()?)?,
            "--dir" => o.dir = value()?.into(),
            "--max-secs" => o.max_secs = number(value()?)? as u64,
            "--pick-port" => o.pick_port = true,
            "--keep" => o.keep = true,
            "--download-states" => o.download_states = true,
            "--small-get" => o.small_get = true,
            "--compare-auth" => compare_auth = true,
            "-h" | "--help" => return Err(String::new()),
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    for s in &o.only {
        if !["upload", "download", "small", "list", "startup"].contains(&s.as_str()) {
            return Err(format!("--only: unknown scenario {s:?}"));
        }
    }
    let renames = |m: Option<String>| -> Result<Vec<(String, String)>, String> {
        m.iter()
            .flat_map(|m| m.split(','))
            .map(|pair| {
                let (a, b) = pair
                    .split_once('=')
                    .ok_or(format!("rename {pair:?}: expected FROM=TO"))?;
                Ok((a.to_owned(), b.to_owned()))
            })
            .collect()
    };
    o.servers.push(ServerSpec {
        label: names.0,
        template: server,
        renames: renames(server_renames)?,
        auth_always: false,
    });
    if let Some(c) = compare {
        o.servers.push(ServerSpec {
            label: names.1,
            template: c,
            renames: renames(compare_renames)?,
            auth_always: compare_auth,
        });
    }
    Ok(o)
}

// ---------------------------------------------------------------------------------------------
// Results

/// Which direction is good, so the table can say whether a ratio is a win.
#[derive(Clone, Copy, PartialEq)]
enum Better {
    Higher,
    Lower,
    Neither,
}

#[derive(Clone)]
struct Metric {
    scenario: &'static str,
    name: &'static str,
    unit: &'static str,
    better: Better,
    value: Option<f64>,
}

#[derive(Default)]
struct Results {
    /// Per server label: metrics in the order they were measured.
    per_server: Vec<(String, String, Vec<Metric>)>,
    /// Scenario -> why it could not run, per server.
    notes: Vec<String>,
}

impl Results {
    fn push(
        &mut self,
        server: usize,
        scenario: &'static str,
        name: &'static str,
        unit: &'static str,
        better: Better,
        value: Option<f64>,
    ) {
        self.per_server[server].2.push(Metric {
            scenario,
            name,
            unit,
            better,
            value,
        });
    }

    /// Peak RSS of a scenario: since the scenario began when `/proc/PID/clear_refs` could
    /// reset it (`reset`), else over the server's lifetime.
    fn push_peak_rss(
        &mut self,
        server: usize,
        scenario: &'static str,
        reset: bool,
        mib: Option<f64>,
    ) {
        let name = if reset {
            "peak RSS"
        } else {
            "peak RSS (lifetime)"
        };
        self.push(server, scenario, name, "MiB", Better::Lower, mib);
    }

    fn get(&self, server: usize, scenario: &str, name: &str) -> Option<f64> {
        self.per_server[server]
            .2
            .iter()
            .find(|m| m.scenario == scenario && m.name == name)
            .and_then(|m| m.value)
    }
}

/// Nearest-rank percentile of `v` (sorted here).
fn percentile(v: &mut [f64], p: f64) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let rank = ((p / 100.0) * v.len() as f64).ceil() as usize;
    Some(v[rank.clamp(1, v.len()) - 1])
}

fn median(mut v: Vec<f64>) -> Option<f64> {
    percentile(&mut v, 50.0)
}

// ---------------------------------------------------------------------------------------------
// The server process and what /proc says about it

struct Server {
    /// Every request carries credentials (a server that cannot run without them).
    auth_always: bool,
    child: Child,
    pid: u32,
    addr: String,
    spawned: Instant,
    output: Arc<Mutex<Vec<String>>>,
}

/// Splits a command template on whitespace; single or double quotes group words.
fn split_command(s: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut cur = String::new();
    let (mut quote, mut in_word) = (None, false);
    for c in s.chars() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), c) => cur.push(c),
            (None, '\'' | '"') => {
                quote = Some(c);
                in_word = true;
            }
            (None, c) if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut cur));
                    in_word = false;
                }
            }
            (None, c) => {
                cur.push(c);
                in_word = true;
            }
        }
    }
    if in_word {
        words.push(cur);
    }
    words
}

/// The port in a log line such as `... start server on 127.0.0.1:PORT`.
fn port_in(line: &str) -> Option<u16> {
    line.match_indices("127.0.0.1:").find_map(|(i, m)| {
        let digits: String = line[i + m.len()..]
            .chars()
            .take_while(char::is_ascii_digit)
            .collect();
        digits.parse::<u16>().ok().filter(|&p| p != 0)
    })
}

impl Server {
    fn start(
        spec: &ServerSpec,
        path: &Path,
        flags: &[&str],
        pick_port: bool,
    ) -> Result<Server, String> {
        let picked = if pick_port {
            let l =
                TcpListener::bind("127.0.0.1:0").map_err(|e| format!("cannot pick a port: {e}"))?;
            Some(l.local_addr().map_err(|e| e.to_string())?.to_string())
        } else {
            None
        };
        let listen = picked.clone().unwrap_or_else(|| "127.0.0.1:0".into());
        let subst = |w: &str| {
            w.replace("{path}", &path.to_string_lossy())
                .replace("{listen}", &listen)
        };
        let mut renamed = Vec::new();
        let auth_flags: Vec<&str> = AUTH.to_vec();
        let flags: Vec<&str> = if spec.auth_always {
            // Swap --no-auth for an htpasswd file with the bench user.
            write_htpasswd(&path.join(".htpasswd"))?;
            let rest = flags.iter().copied().filter(|f| *f != "--no-auth");
            if flags.contains(&"--htpasswd-file") {
                rest.collect()
            } else {
                auth_flags.into_iter().chain(rest).collect()
            }
        } else {
            flags.to_vec()
        };
        let flags = flags.as_slice();
        let mut skip_value = false;
        for f in flags {
            if std::mem::take(&mut skip_value) {
                continue;
            }
            match spec.renames.iter().find(|(from, _)| from == f) {
                Some((_, to)) if to.is_empty() => {
                    skip_value = ["--htpasswd-file", "--max-size"].contains(f);
                }
                Some((_, to)) => renamed.push(subst(to)),
                None => renamed.push(subst(f)),
            }
        }
        let flags = renamed;
        let mut argv = Vec::new();
        let mut placed = false;
        for w in split_command(&spec.template) {
            if w == "{flags}" {
                argv.extend(flags.iter().cloned());
                placed = true;
            } else {
                argv.push(subst(&w));
            }
        }
        if !placed {
            argv.extend(flags);
        }
        let (prog, args) = argv.split_first().ok_or("empty server command")?;
        let spawned = Instant::now();
        let mut child = Command::new(prog)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot start {prog}: {e}"))?;
        let pid = child.id();
        let output = Arc::new(Mutex::new(Vec::new()));
        let (port_tx, port_rx) = mpsc::channel();
        // Both streams are drained for the server's whole life, or a chatty server blocks.
        let pipes: Vec<Box<dyn Read + Send>> = vec![
            Box::new(child.stdout.take().expect("piped")),
            Box::new(child.stderr.take().expect("piped")),
        ];
        for pipe in pipes {
            let (tx, out) = (port_tx.clone(), output.clone());
            std::thread::spawn(move || {
                for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                    if let Some(p) = port_in(&line) {
                        let _ = tx.send(p);
                    }
                    let mut out = out.lock().unwrap();
                    out.push(line);
                    if out.len() > 200 {
                        out.remove(0);
                    }
                }
            });
        }
        let mut server = Server {
            auth_always: spec.auth_always,
            child,
            pid,
            addr: String::new(),
            spawned,
            output,
        };
        let deadline = spawned + START_TIMEOUT;
        server.addr = match picked {
            Some(addr) => loop {
                if TcpStream::connect(&addr).is_ok() {
                    break addr;
                }
                server.fail_if_exited(deadline)?;
                std::thread::sleep(Duration::from_millis(1));
            },
            None => loop {
                if let Ok(p) = port_rx.recv_timeout(Duration::from_millis(5)) {
                    break format!("127.0.0.1:{p}");
                }
                server.fail_if_exited(deadline)?;
            },
        };
        Ok(server)
    }

    fn fail_if_exited(&mut self, deadline: Instant) -> Result<(), String> {
        let why = match self.child.try_wait() {
            Ok(Some(status)) => format!("exited ({status})"),
            _ if Instant::now() > deadline => {
                let _ = self.child.kill();
                let _ = self.child.wait();
                "did not say which port it listens on (try --pick-port)".into()
            }
            _ => return Ok(()),
        };
        std::thread::sleep(Duration::from_millis(50));
        let out = self.output.lock().unwrap();
        let tail: Vec<_> = out.iter().rev().take(3).rev().cloned().collect();
        Err(format!("server {why}: {}", tail.join(" | ")))
    }

    /// utime + stime of all the server's threads, in seconds.
    fn cpu(&self) -> f64 {
        proc_cpu(&format!("/proc/{}/stat", self.pid)).unwrap_or(f64::NAN)
    }

    /// A `VmXXX:` line of /proc/PID/status, in MiB.
    fn status_mib(&self, key: &str) -> Option<f64> {
        let s = fs::read_to_string(format!("/proc/{}/status", self.pid)).ok()?;
        let line = s.lines().find(|l| l.starts_with(key))?;
        let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
        Some(kb / 1024.0)
    }

    fn rss(&self) -> Option<f64> {
        self.status_mib("VmRSS:")
    }

    fn hwm(&self) -> Option<f64> {
        self.status_mib("VmHWM:")
    }

    /// Resets VmHWM to the current RSS (Linux `clear_refs` 5), so a peak belongs to one
    /// scenario. Returns false where the kernel does not allow it.
    fn reset_hwm(&self) -> bool {
        fs::write(format!("/proc/{}/clear_refs", self.pid), "5").is_ok()
    }

    /// RSS once the freshly started server has settled, before any request.
    fn idle_rss(&self) -> Option<f64> {
        std::thread::sleep(IDLE_SETTLE);
        self.rss()
    }

    fn conn(&self, auth: bool) -> Conn {
        Conn::new(&self.addr, auth || self.auth_always)
    }

    /// SIGTERM (graceful, as a service manager would), then SIGKILL if it lingers.
    fn stop(mut self) {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.pid.to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// utime + stime from a /proc/.../stat file, in seconds.
fn proc_cpu(stat_path: &str) -> Option<f64> {
    let s = fs::read_to_string(stat_path).ok()?;
    // Fields after the command name, which is in parentheses and may contain spaces.
    let rest = &s[s.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?;
    Some(ticks / clock_ticks())
}

fn clock_ticks() -> f64 {
    static TICKS: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    *TICKS.get_or_init(|| {
        Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(100.0)
    })
}

/// CPU seconds the whole machine spent busy so far (all cores), from /proc/stat.
fn machine_busy() -> f64 {
    let s = fs::read_to_string("/proc/stat").unwrap_or_default();
    let Some(cpu) = s.lines().next().filter(|l| l.starts_with("cpu ")) else {
        return f64::NAN;
    };
    // user nice system idle iowait irq softirq steal ...: everything but idle and iowait.
    let f: Vec<f64> = cpu
        .split_whitespace()
        .skip(1)
        .filter_map(|v| v.parse().ok())
        .collect();
    let busy: f64 = f
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != 3 && *i != 4 && *i < 8)
        .map(|(_, v)| v)
        .sum();
    busy / clock_ticks()
}

fn client_cpu() -> f64 {
    proc_cpu("/proc/self/stat").unwrap_or(f64::NAN)
}

// ---------------------------------------------------------------------------------------------
// A minimal blocking HTTP/1.1 client: keep-alive, Content-Length and chunked bodies.

struct Response {
    status: u16,
    body_len: u64,
}

struct Conn {
    addr: String,
    auth: Option<String>,
    stream: Option<TcpStream>,
    buf: Vec<u8>,
    start: usize,
    end: usize,
}

impl Conn {
    fn new(addr: &str, auth: bool) -> Conn {
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

    fn connect(&mut self) -> io::Result<()> {
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
    fn request(
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

    fn request_inner(
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

    fn fill(&mut self) -> io::Result<usize> {
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

    fn line(&mut self) -> io::Result<String> {
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

    fn body(&mut self, mut n: u64, sink: &mut dyn FnMut(&[u8])) -> io::Result<()> {
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

fn bad(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg)
}

fn discard(_: &[u8]) {}

/// One request that must answer `want`.
fn expect(
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

// ---------------------------------------------------------------------------------------------
// Concurrent workers

/// What one connection's worker measured.
#[derive(Default)]
struct WorkerOut {
    latencies_ms: Vec<f64>,
    bytes: u64,
    requests: u64,
    finished: Option<Instant>,
    error: Option<String>,
}

/// Runs `work` on `conns` threads, all released together; returns (elapsed, outputs).
/// Each worker gets its index and the barrier it must wait on once it is ready (connected,
/// warmed up), so set-up is not measured.
fn run_workers<F>(conns: usize, work: F) -> (Duration, Vec<WorkerOut>)
where
    F: Fn(usize, &Barrier) -> WorkerOut + Sync,
{
    let barrier = Barrier::new(conns + 1);
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..conns)
            .map(|i| {
                let (work, barrier) = (&work, &barrier);
                s.spawn(move || {
                    let mut out = work(i, barrier);
                    out.finished.get_or_insert_with(Instant::now);
                    out
                })
            })
            .collect();
        barrier.wait();
        let t0 = Instant::now();
        let outs: Vec<WorkerOut> = handles
            .into_iter()
            .map(|h| h.join().unwrap_or_default())
            .collect();
        let end = outs.iter().filter_map(|o| o.finished).max().unwrap_or(t0);
        (end.saturating_duration_since(t0), outs)
    })
}

struct Totals {
    secs: f64,
    bytes: u64,
    requests: u64,
    latencies_ms: Vec<f64>,
    error: Option<String>,
}

fn totals(elapsed: Duration, outs: Vec<WorkerOut>) -> Totals {
    let mut t = Totals {
        secs: elapsed.as_secs_f64(),
        bytes: 0,
        requests: 0,
        latencies_ms: Vec::new(),
        error: None,
    };
    for o in outs {
        t.bytes += o.bytes;
        t.requests += o.requests;
        t.latencies_ms.extend(o.latencies_ms);
        if t.error.is_none() {
            t.error = o.error;
        }
    }
    t
}

// ---------------------------------------------------------------------------------------------
// The machine limit

/// One reading of the machine limit, taken right before an upload round: the machine is
/// shared and noisy, so a limit measured minutes apart from the upload means little.
#[derive(Clone, Copy)]
struct LimitSample {
    /// Single-core SHA-256, MiB/s.
    sha: f64,
    /// SHA-256 on all busy cores at once, MiB/s (what the cores really give right now).
    sha_parallel: f64,
    /// One stream of one round's bytes, then fsync, MiB/s.
    write: f64,
    /// The upload's own pattern: C files of one pack each at once, each fsynced, MiB/s.
    write_parallel: f64,
}

struct Machine {
    cores: usize,
    busy: usize,
    sha_backend: &'static str,
    dir: PathBuf,
    samples: Vec<LimitSample>,
}

/// What sha2 0.11 picks at run time on this CPU (it uses the same cpuid / hwcap tests).
fn sha_backend() -> &'static str {
    #[cfg(any(target_arch = "x86", target_arch = "x86_64"))]
    let hw =
        std::arch::is_x86_feature_detected!("sha") && std::arch::is_x86_feature_detected!("sse4.1");
    #[cfg(target_arch = "aarch64")]
    let hw = std::arch::is_aarch64_feature_detected!("sha2");
    #[cfg(not(any(target_arch = "x86", target_arch = "x86_64", target_arch = "aarch64")))]
    let hw = false;
    match (hw, cfg!(any(target_arch = "x86", target_arch = "x86_64"))) {
        (true, true) => "SHA-NI",
        (true, false) => "ARMv8 SHA2",
        (false, _) => "soft",
    }
}

/// SHA-256 over `parts` in 128 KiB updates, as the server hashes bodies; MiB/s.
fn sha_once(parts: &[&[u8]]) -> f64 {
    let t = Instant::now();
    let mut bytes = 0;
    for part in parts {
        let mut h = Sha256::new();
        for chunk in part.chunks(128 * 1024) {
            h.update(chunk);
        }
        std::hint::black_box(h.finalize());
        bytes += part.len();
    }
    bytes as f64 / MIB / t.elapsed().as_secs_f64()
}

/// Writes each file (a list of slices) on its own thread in a new directory below `dir`,
/// 1 MiB writes, fsync each file and the directory; MiB/s. The files are removed at once:
/// readings before every round add up to gigabytes, and on this VM the fourth upload scenario
/// of a run got 2-3x the CPU per GiB whichever server ran there (an A/A run shows it). Only a
/// few inodes are freed, so the no-journal inode scan on create (see BENCHMARKS.md) barely
/// notices.
fn write_once(dir: &Path, files: &[Vec<&[u8]>]) -> io::Result<f64> {
    static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let dir = dir.join(
        N.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            .to_string(),
    );
    fs::create_dir(&dir)?;
    let dir = dir.as_path();
    let t = Instant::now();
    std::thread::scope(|s| -> io::Result<()> {
        let hs: Vec<_> = files
            .iter()
            .enumerate()
            .map(|(i, parts)| {
                let p = dir.join(format!("write-test-{i}"));
                s.spawn(move || -> io::Result<()> {
                    let mut f = File::create(&p)?;
                    for part in parts {
                        for c in part.chunks(1 << 20) {
                            f.write_all(c)?;
                        }
                    }
                    f.sync_all()
                })
            })
            .collect();
        for h in hs {
            h.join()
                .map_err(|_| io::Error::other("writer panicked"))??;
        }
        File::open(dir)?.sync_all()
    })?;
    let bytes: usize = files.iter().flatten().map(|p| p.len()).sum();
    let rate = bytes as f64 / MIB / t.elapsed().as_secs_f64();
    fs::remove_dir_all(dir)?;
    Ok(rate)
}

impl Machine {
    fn new(o: &Opts, base: &Path) -> Result<Machine, String> {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let dir = base.join("write-test");
        fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        Ok(Machine {
            cores,
            busy: cores.min(o.conns),
            sha_backend: sha_backend(),
            dir,
            samples: Vec::new(),
        })
    }

    /// Measures the limit now (about a second), keeps the reading and returns it.
    fn sample(&mut self, packs: &[Pack], conns: usize) -> Result<LimitSample, String> {
        // About 64 MiB per core and reading: long enough to be steady, short enough to be "now".
        let parts: Vec<&[u8]> = packs
            .iter()
            .cycle()
            .take(4)
            .map(|p| p.data.as_slice())
            .collect();
        let sha = (0..2).map(|_| sha_once(&parts)).fold(0.0, f64::max);
        let busy = self.busy;
        let t = Instant::now();
        std::thread::scope(|s| {
            for _ in 0..busy {
                s.spawn(|| sha_once(&parts));
            }
        });
        let hashed: usize = parts.iter().map(|p| p.len()).sum::<usize>() * busy;
        let sha_parallel = hashed as f64 / MIB / t.elapsed().as_secs_f64();
        let err = |e: io::Error| format!("write test in {}: {e}", self.dir.display());
        let all: Vec<&[u8]> = packs.iter().map(|p| p.data.as_slice()).collect();
        let write = write_once(&self.dir, &[all]).map_err(err)?;
        let each: Vec<Vec<&[u8]>> = packs
            .iter()
            .cycle()
            .take(conns)
            .map(|p| vec![p.data.as_slice()])
            .collect();
        let write_parallel = write_once(&self.dir, &each).map_err(err)?;
        let s = LimitSample {
            sha,
            sha_parallel,
            write,
            write_parallel,
        };
        self.samples.push(s);
        Ok(s)
    }

    /// The limit the budget is stated against: min(SHA-256 x busy cores, write speed).
    fn limit(&self, s: &LimitSample) -> f64 {
        (s.sha * self.busy as f64).min(s.write)
    }

    /// The same with the SHA-256 rate the busy cores really gave together.
    fn limit_measured(&self, s: &LimitSample) -> f64 {
        s.sha_parallel.min(s.write)
    }

    fn median_of(&self, f: impl Fn(&LimitSample) -> f64) -> f64 {
        median(self.samples.iter().map(f).collect()).unwrap_or(f64::NAN)
    }
}

// ---------------------------------------------------------------------------------------------
// Fixtures

struct Pack {
    id: String,
    data: Vec<u8>,
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().fold(String::with_capacity(64), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

fn make_packs(count: usize, size: usize) -> Vec<Pack> {
    let mut rng = fastrand::Rng::with_seed(0x5e57_0007);
    (0..count)
        .map(|_| {
            let mut data = vec![0u8; size];
            rng.fill(&mut data);
            Pack {
                id: hex(&Sha256::digest(&data)),
                data,
            }
        })
        .collect()
}

/// A repository with `n` objects under data/xx/, created directly on disk. Files are sparse
/// (sizes 1..4096 via ftruncate) so creating 100 000 of them takes seconds, not minutes.
fn make_big_repo(root: &Path, n: usize) -> io::Result<u64> {
    let repo = root.join(REPO.trim_start_matches('/'));
    for kind in ["keys", "locks", "snapshots", "index"] {
        fs::create_dir_all(repo.join(kind))?;
    }
    for i in 0..=255u8 {
        fs::create_dir_all(repo.join("data").join(format!("{i:02x}")))?;
    }
    fs::write(repo.join("config"), b"loadgen config")?;
    let mut total = 14;
    for i in 0..n {
        let id = hex(&Sha256::digest((i as u64).to_le_bytes()));
        let size = (i % 4096) as u64 + 1;
        let f = File::create(repo.join("data").join(&id[..2]).join(&id))?;
        f.set_len(size)?;
        total += size;
    }
    Ok(total)
}

/// An htpasswd file with one bcrypt cost-10 line, as `htpasswd -B -C 10` writes it (the
/// bcrypt crate is the fallback where apache2-utils is not installed).
fn write_htpasswd(path: &Path) -> Result<(), String> {
    let made = Command::new("htpasswd")
        .args(["-B", "-C", "10", "-b", "-c"])
        .arg(path)
        .args([USER, PASSWORD])
        .stderr(Stdio::null())
        .status();
    if made.is_ok_and(|s| s.success()) {
        return Ok(());
    }
    let hash = bcrypt::hash(PASSWORD, 10).map_err(|e| e.to_string())?;
    fs::write(path, format!("{USER}:{hash}\n")).map_err(|e| e.to_string())
}

struct Dirs {
    base: PathBuf,
    n: usize,
}

impl Dirs {
    fn fresh(&mut self, what: &str) -> Result<PathBuf, String> {
        self.n += 1;
        let d = self.base.join(format!("{}-{what}", self.n));
        fs::create_dir_all(&d).map_err(|e| format!("cannot create {}: {e}", d.display()))?;
        Ok(d)
    }
}

// ---------------------------------------------------------------------------------------------
// Scenarios

/// Uploads every pack (connection i sends packs i, i+C, ...) in `rounds` rounds, each round
/// into its own repository (`/bench`, `/bench1`, ...) so no delete runs between rounds. With
/// `machine`, the limit is measured right before each round and each round's throughput is
/// judged against its own reading. Server CPU is counted during the rounds only.
#[allow(clippy::too_many_arguments)]
fn upload(
    o: &Opts,
    r: &mut Results,
    si: usize,
    server: &Server,
    packs: &[Pack],
    scenario: &'static str,
    idle: Option<f64>,
    mut machine: Option<&mut Machine>,
) {
    let label = r.per_server[si].0.clone();
    let repo = |round: usize| match round {
        0 => REPO.to_owned(),
        n => format!("{REPO}{n}"),
    };
    let mut setup = server.conn(false);
    for round in 0..o.rounds {
        let path = format!("{}/?create=true", repo(round));
        if let Err(e) = expect(&mut setup, "POST", &path, &[], b"", 200) {
            r.notes.push(format!("{label}: {scenario}: {e}"));
            return;
        }
    }
    drop(setup);
    let reset = server.reset_hwm();
    let deadline = o.deadline();
    let (mut rates, mut fractions, mut measured_fractions, mut lat) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let (mut bytes, mut cpu, mut ccpu) = (0u64, 0.0, 0.0);
    let mut others = Vec::new();
    let mut error = None;
    for round in 0..o.rounds {
        let limit = match machine
            .as_deref_mut()
            .map(|m| (m.sample(packs, o.conns), m))
        {
            Some((Ok(s), m)) => Some((m.limit(&s), m.limit_measured(&s), s.write)),
            Some((Err(e), _)) => {
                r.notes.push(format!("machine limit: {e}"));
                None
            }
            None => None,
        };
        let repo = repo(round);
        let (cpu0, ccpu0, busy0) = (server.cpu(), client_cpu(), machine_busy());
        let (elapsed, outs) = run_workers(o.conns, |i, barrier| {
            let mut out = WorkerOut::default();
            let mut c = server.conn(false);
            if let Err(e) = c.connect() {
                out.error = Some(e.to_string());
            }
            barrier.wait();
            for p in packs.iter().skip(i).step_by(o.conns) {
                if out.error.is_some() || Instant::now() > deadline {
                    break;
                }
                let t = Instant::now();
                let path = format!("{repo}/data/{}", p.id);
                match expect(&mut c, "POST", &path, &[], &p.data, 200) {
                    Ok(()) => {
                        out.latencies_ms.push(t.elapsed().as_secs_f64() * 1e3);
                        out.bytes += p.data.len() as u64;
                        out.requests += 1;
                    }
                    Err(e) => out.error = Some(e),
                }
            }
            out
        });
        let (dcpu, dccpu) = (server.cpu() - cpu0, client_cpu() - ccpu0);
        (cpu, ccpu) = (cpu + dcpu, ccpu + dccpu);
        others.push((machine_busy() - busy0 - dcpu - dccpu).max(0.0) / elapsed.as_secs_f64());
        let t = totals(elapsed, outs);
        let rate = t.bytes as f64 / MIB / t.secs;
        if t.requests > 0 {
            rates.push(rate);
        }
        if let Some((limit, measured, write)) = limit {
            let verify = scenario == "upload_verify";
            fractions.push(rate / if verify { limit } else { write });
            measured_fractions.push(rate / if verify { measured } else { write });
        }
        bytes += t.bytes;
        lat.extend(t.latencies_ms);
        if let Some(e) = t.error {
            error.get_or_insert(e);
            break;
        }
    }
    if let Some(e) = error {
        r.notes.push(format!("{label}: {scenario}: {e}"));
    }
    let gib = bytes as f64 / GIB;
    let mut put = |name, unit, better, value| r.push(si, scenario, name, unit, better, value);
    put(
        "throughput (median of rounds)",
        "MiB/s",
        Better::Higher,
        median(rates),
    );
    if scenario == "upload_verify" {
        put(
            "fraction of machine limit",
            "x",
            Better::Higher,
            median(fractions),
        );
        put(
            "fraction of limit w/ parallel SHA",
            "x",
            Better::Higher,
            median(measured_fractions),
        );
    } else {
        put(
            "fraction of write speed",
            "x",
            Better::Higher,
            median(fractions),
        );
    }
    put(
        "latency p50 per pack",
        "ms",
        Better::Lower,
        percentile(&mut lat, 50.0),
    );
    put(
        "latency p99 per pack",
        "ms",
        Better::Lower,
        percentile(&mut lat, 99.0),
    );
    put(
        "server CPU per GiB",
        "s",
        Better::Lower,
        (gib > 0.0).then(|| cpu / gib),
    );
    put(
        "client CPU per GiB",
        "s",
        Better::Neither,
        (gib > 0.0).then(|| ccpu / gib),
    );
    // A model, not a measurement: the MiB/s that server plus client CPU per GiB would allow
    // if every core were ours (on a shared box the wall clock cannot show it).
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    put(
        "CPU-bound ceiling if all cores free",
        "MiB/s",
        Better::Higher,
        (cpu + ccpu > 0.0).then(|| cores.min(o.conns) as f64 * 1024.0 * gib / (cpu + ccpu)),
    );
    put(
        "others' CPU on this box meanwhile",
        "cores",
        Better::Neither,
        median(others),
    );
    r.push_peak_rss(si, scenario, reset, server.hwm());
    r.push(
        si,
        scenario,
        "idle RSS after start",
        "MiB",
        Better::Lower,
        idle,
    );
    std::thread::sleep(Duration::from_millis(500));
    let rss = server.rss();
    r.push(
        si,
        scenario,
        "RSS 0.5 s after load",
        "MiB",
        Better::Lower,
        rss,
    );
}

/// Full GETs of every pack (checked byte for byte), then restic-like ranged reads: each pack's
/// tail (where restic finds the pack header) and random 1 MiB blobs.
/// The file a pack was stored in by a server with the restic layout under `dir`.
fn pack_file(dir: &Path, p: &Pack) -> PathBuf {
    dir.join(&REPO[1..])
        .join("data")
        .join(&p.id[..2])
        .join(&p.id)
}

/// Brings the stored packs into the page cache (`warm`) or drops them from it.
fn page_cache(dir: &Path, packs: &[Pack], warm: bool) -> io::Result<()> {
    for p in packs {
        let path = pack_file(dir, p);
        if warm {
            io::copy(&mut fs::File::open(&path)?, &mut io::sink())?;
        } else {
            let f = fs::File::open(&path)?;
            f.sync_data()?;
            rustix::fs::fadvise(&f, 0, None, rustix::fs::Advice::DontNeed)?;
        }
    }
    Ok(())
}

fn download(o: &Opts, r: &mut Results, si: usize, server: &Server, packs: &[Pack], dir: &Path) {
    const RANGES_PER_PACK: usize = 8;
    const BLOB: usize = 1 << 20;
    // (scenario, ranged, page cache before: None = as the upload left it, Some(warm))
    let mut states = vec![
        ("download_full", false, None),
        ("download_range", true, None),
    ];
    if o.download_states {
        states.push(("download_full_warm", false, Some(true)));
        states.push(("download_full_cold", false, Some(false)));
    }
    for (scenario, ranged, cache) in states {
        if let Some(warm) = cache
            && let Err(e) = page_cache(dir, packs, warm)
        {
            let label = &r.per_server[si].0;
            r.notes
                .push(format!("{label}: {scenario}: page cache: {e}"));
            continue;
        }
        let reset = server.reset_hwm();
        let cpu0 = server.cpu();
        let deadline = o.deadline();
        let (elapsed, outs) = run_workers(o.conns, |i, barrier| {
            let mut out = WorkerOut::default();
            let mut c = server.conn(false);
            if let Err(e) = c.connect() {
                out.error = Some(e.to_string());
            }
            let mut rng = fastrand::Rng::with_seed(i as u64);
            barrier.wait();
            for p in packs.iter().skip(i).step_by(o.conns) {
                let len = p.data.len();
                let ranges: Vec<(usize, usize)> = if ranged {
                    let mut v = vec![(len.saturating_sub(64 * 1024), len)];
                    v.extend((1..RANGES_PER_PACK).map(|_| {
                        let start = rng.usize(..len.saturating_sub(BLOB).max(1));
                        (start, (start + BLOB).min(len))
                    }));
                    v
                } else {
                    vec![(0, len)]
                };
                for (start, end) in ranges {
                    if out.error.is_some() || Instant::now() > deadline {
                        break;
                    }
                    let range = format!("bytes={start}-{}", end - 1);
                    let headers: &[(&str, &str)] = if ranged { &[("Range", &range)] } else { &[] };
                    let mut at = start;
                    let mut same = true;
                    let t = Instant::now();
                    let got = c.request(
                        "GET",
                        &format!("{REPO}/data/{}", p.id),
                        headers,
                        b"",
                        &mut |b: &[u8]| {
                            same &= p.data.get(at..at + b.len()) == Some(b);
                            at += b.len();
                        },
                    );
                    let want = if ranged { 206 } else { 200 };
                    match got {
                        Ok(resp)
                            if resp.status == want
                                && resp.body_len == (end - start) as u64
                                && same =>
                        {
                            out.latencies_ms.push(t.elapsed().as_secs_f64() * 1e3);
                            out.bytes += resp.body_len;
                            out.requests += 1;
                        }
                        Ok(resp) => {
                            out.error = Some(format!(
                                "GET {range}: status {} with {} bytes (wanted {want} with {}), content {}",
                                resp.status,
                                resp.body_len,
                                end - start,
                                if same { "ok" } else { "wrong" }
                            ))
                        }
                        Err(e) => out.error = Some(format!("GET: {e}")),
                    }
                }
            }
            out
        });
        let cpu = server.cpu() - cpu0;
        let mut t = totals(elapsed, outs);
        if let Some(e) = &t.error {
            r.notes
                .push(format!("{}: {scenario}: {e}", r.per_server[si].0));
        }
        let gib = t.bytes as f64 / GIB;
        r.push(
            si,
            scenario,
            "throughput",
            "MiB/s",
            Better::Higher,
            (t.requests > 0).then(|| t.bytes as f64 / MIB / t.secs),
        );
        r.push(
            si,
            scenario,
            "requests per second",
            "req/s",
            Better::Higher,
            (t.requests > 0).then(|| t.requests as f64 / t.secs),
        );
        r.push(
            si,
            scenario,
            "latency p50",
            "ms",
            Better::Lower,
            percentile(&mut t.latencies_ms, 50.0),
        );
        r.push(
            si,
            scenario,
            "latency p99",
            "ms",
            Better::Lower,
            percentile(&mut t.latencies_ms, 99.0),
        );
        r.push(
            si,
            scenario,
            "server CPU per GiB",
            "s",
            Better::Lower,
            (gib > 0.0).then(|| cpu / gib),
        );
        r.push_peak_rss(si, scenario, reset, server.hwm());
    }
}

/// Rounds of the small-request scenario; they alternate between the two servers.
const SMALL_ROUNDS: usize = 5;

/// Creates the repository and its config; returns how long the very first request took (a
/// HEAD answered 404, so it costs what authentication costs: one bcrypt with credentials).
fn small_setup(server: &Server, auth: bool) -> Result<f64, String> {
    let mut c = server.conn(auth);
    let t = Instant::now();
    expect(&mut c, "HEAD", &format!("{REPO}/config"), &[], b"", 404)?;
    let first_ms = t.elapsed().as_secs_f64() * 1e3;
    expect(
        &mut c,
        "POST",
        &format!("{REPO}/?create=true"),
        &[],
        b"",
        200,
    )?;
    expect(&mut c, "POST", &format!("{REPO}/config"), &[], b"cfg", 200)?;
    Ok(first_ms)
}

/// Starts a server for the small-request scenario and sets it up: (server, idle RSS, first
/// request ms).
fn start_small(
    o: &Opts,
    spec: &ServerSpec,
    dirs: &mut Dirs,
    auth: bool,
) -> Result<(Server, Option<f64>, f64), String> {
    let dir = dirs.fresh("small")?;
    if auth {
        write_htpasswd(&dir.join(".htpasswd"))?;
    }
    let s = Server::start(spec, &dir, if auth { AUTH } else { NO_AUTH }, o.pick_port)?;
    let idle = s.idle_rss();
    match small_setup(&s, auth) {
        Ok(first) => Ok((s, idle, first)),
        Err(e) => {
            s.stop();
            Err(e)
        }
    }
}

/// Keep-alive `HEAD /bench/config` from C connections: one server with `--no-auth`, one with
/// bcrypt cost-10 credentials on every request, started side by side. Rounds alternate
/// between them so that load from elsewhere on the box hits both alike; the auth/no-auth
/// ratio is the median of the per-round ratios.
fn small(o: &Opts, r: &mut Results, si: usize, spec: &ServerSpec, dirs: &mut Dirs) {
    let label = r.per_server[si].0.clone();
    let mut servers = Vec::new();
    for auth in [false, true] {
        let scenario = if auth {
            "small_head_auth"
        } else {
            "small_head_noauth"
        };
        match start_small(o, spec, dirs, auth) {
            Ok((s, idle, first)) => servers.push((scenario, auth, s, idle, first)),
            Err(e) => {
                r.notes.push(format!("{label}: {scenario}: {e}"));
                for (_, _, s, _, _) in servers {
                    s.stop();
                }
                return;
            }
        }
    }
    let path = format!("{REPO}/config");
    let deadline = o.deadline();
    let per_round = o.requests.div_ceil(SMALL_ROUNDS);
    let mut rates = [Vec::new(), Vec::new()];
    let mut lat = [Vec::new(), Vec::new()];
    let mut cpu = [0.0, 0.0];
    let mut count = [0u64, 0];
    let mut error = None;
    for (_, _, s, _, _) in &servers {
        s.reset_hwm();
    }
    for _ in 0..SMALL_ROUNDS {
        for (i, (_, auth, server, _, _)) in servers.iter().enumerate() {
            let cpu0 = server.cpu();
            let (elapsed, outs) = run_workers(o.conns, |_, barrier| {
                let mut out = WorkerOut::default();
                let mut c = server.conn(*auth);
                if let Err(e) = c.connect() {
                    out.error = Some(e.to_string());
                }
                barrier.wait();
                for _ in 0..per_round {
                    if out.error.is_some() || Instant::now() > deadline {
                        break;
                    }
                    let t = Instant::now();
                    let got = if o.small_get && out.requests % 2 == 1 {
                        let mut body = Vec::new();
                        match c.request("GET", &path, &[], b"", &mut |b: &[u8]| {
                            body.extend_from_slice(b)
                        }) {
                            Ok(resp) if resp.status == 200 && body == b"cfg" => Ok(()),
                            Ok(resp) => Err(format!(
                                "GET {path}: status {} with {:?}",
                                resp.status,
                                String::from_utf8_lossy(&body)
                            )),
                            Err(e) => Err(format!("GET {path}: {e}")),
                        }
                    } else {
                        expect(&mut c, "HEAD", &path, &[], b"", 200)
                    };
                    match got {
                        Ok(()) => {
                            out.latencies_ms.push(t.elapsed().as_secs_f64() * 1e3);
                            out.requests += 1;
                        }
                        Err(e) => out.error = Some(e),
                    }
                }
                out
            });
            cpu[i] += server.cpu() - cpu0;
            let t = totals(elapsed, outs);
            if t.requests > 0 {
                rates[i].push(t.requests as f64 / t.secs);
            }
            count[i] += t.requests;
            lat[i].extend(t.latencies_ms);
            if let Some(e) = t.error {
                error.get_or_insert(e);
            }
        }
    }
    if let Some(e) = error {
        r.notes.push(format!("{label}: small requests: {e}"));
    }
    let ratios: Vec<f64> = rates[1].iter().zip(&rates[0]).map(|(a, n)| a / n).collect();
    for (i, (scenario, auth, server, idle, first)) in servers.into_iter().enumerate() {
        let k = count[i] as f64 / 1000.0;
        let mut put = |name, unit, better, value| r.push(si, scenario, name, unit, better, value);
        put(
            "requests per second (median of rounds)",
            "req/s",
            Better::Higher,
            median(rates[i].clone()),
        );
        put(
            "latency p50",
            "ms",
            Better::Lower,
            percentile(&mut lat[i], 50.0),
        );
        put(
            "latency p99",
            "ms",
            Better::Lower,
            percentile(&mut lat[i], 99.0),
        );
        put(
            "server CPU per 1000 req",
            "s",
            Better::Lower,
            (k > 0.0).then(|| cpu[i] / k),
        );
        put("peak RSS", "MiB", Better::Lower, server.hwm());
        put("idle RSS after start", "MiB", Better::Lower, idle);
        put(
            "very first request (bcrypt if auth)",
            "ms",
            Better::Lower,
            Some(first),
        );
        if auth {
            put(
                "auth / no-auth rate (median of rounds)",
                "x",
                Better::Higher,
                median(ratios.clone()),
            );
        }
        server.stop();
    }
}

/// v2 listings of data/ in the big repository, one after the other on one connection.
fn list(o: &Opts, r: &mut Results, si: usize, server: &Server, objects: usize) {
    let scenario = "list_v2_data";
    let idle = server.idle_rss();
    let reset = server.reset_hwm();
    let before = server.rss();
    let cpu0 = server.cpu();
    let deadline = o.deadline();
    let mut c = server.conn(false);
    let (mut total, mut ttfb) = (Vec::new(), Vec::new());
    let mut json_len = 0;
    for _ in 0..o.listings {
        if Instant::now() > deadline {
            break;
        }
        let mut body = Vec::new();
        let mut first = None;
        let t = Instant::now();
        let got = c.request(
            "GET",
            &format!("{REPO}/data/"),
            &[("Accept", "application/vnd.x.restic.rest.v2")],
            b"",
            &mut |b: &[u8]| {
                first.get_or_insert_with(|| t.elapsed());
                body.extend_from_slice(b);
            },
        );
        let took = t.elapsed();
        let entries = body.windows(8).filter(|w| w == b"{\"name\":").count();
        match got {
            Ok(resp) if resp.status == 200 && entries == objects && body.starts_with(b"[") => {
                total.push(took.as_secs_f64());
                ttfb.push(first.unwrap_or(took).as_secs_f64() * 1e3);
                json_len = body.len();
            }
            Ok(resp) => {
                r.notes.push(format!(
                    "{}: {scenario}: status {}, {entries} entries (wanted {objects})",
                    r.per_server[si].0, resp.status
                ));
                break;
            }
            Err(e) => {
                r.notes
                    .push(format!("{}: {scenario}: {e}", r.per_server[si].0));
                break;
            }
        }
    }
    let n = total.len() as f64;
    let cpu = server.cpu() - cpu0;
    let hwm = server.hwm();
    r.push(
        si,
        scenario,
        "time per listing p50",
        "s",
        Better::Lower,
        percentile(&mut total, 50.0),
    );
    r.push(
        si,
        scenario,
        "time per listing max",
        "s",
        Better::Lower,
        percentile(&mut total, 100.0),
    );
    r.push(
        si,
        scenario,
        "time to first byte p50",
        "ms",
        Better::Lower,
        percentile(&mut ttfb, 50.0),
    );
    r.push(
        si,
        scenario,
        "server CPU per listing",
        "s",
        Better::Lower,
        (n > 0.0).then(|| cpu / n),
    );
    r.push(
        si,
        scenario,
        "JSON size",
        "MiB",
        Better::Neither,
        (json_len > 0).then(|| json_len as f64 / MIB),
    );
    r.push_peak_rss(si, scenario, reset, hwm);
    r.push(
        si,
        scenario,
        "peak RSS growth while listing",
        "MiB",
        Better::Lower,
        hwm.zip(before).map(|(h, b)| h - b),
    );
    r.push(
        si,
        scenario,
        "idle RSS after start",
        "MiB",
        Better::Lower,
        idle,
    );
}

/// Time from spawning the server to its first 200 (`HEAD /bench/config`), polled every ms.
fn time_to_first_200(server: &Server, deadline: Instant) -> Option<Duration> {
    loop {
        let mut c = server.conn(false);
        match c.request("HEAD", &format!("{REPO}/config"), &[], b"", &mut discard) {
            Ok(resp) if resp.status == 200 => return Some(server.spawned.elapsed()),
            // Up, but refusing: waiting longer will not help.
            Ok(_) => return None,
            Err(_) => {}
        }
        if Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Start-up on the big repository: first 200 without and with `--max-size`, and with it the
/// time until an upload is accepted (uploads wait for the usage tally). Median of 3 starts.
fn startup(o: &Opts, r: &mut Results, si: usize, spec: &ServerSpec, root: &Path) {
    let scenario = "startup_100k";
    let tiny = b"loadgen startup probe";
    let tiny_id = hex(&Sha256::digest(tiny));
    let (mut plain, mut quota, mut upload_ok, mut rss) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for _ in 0..3 {
        for with_quota in [false, true] {
            let flags = if with_quota { MAX_SIZE } else { NO_AUTH };
            let server = match Server::start(spec, root, flags, o.pick_port) {
                Ok(s) => s,
                Err(e) => {
                    r.notes
                        .push(format!("{}: {scenario}: {e}", r.per_server[si].0));
                    return;
                }
            };
            let deadline = o.deadline();
            let first = time_to_first_200(&server, deadline);
            if with_quota {
                quota.extend(first.map(|d| d.as_secs_f64() * 1e3));
                let mut c = server.conn(false);
                let path = format!("{REPO}/data/{tiny_id}");
                if expect(&mut c, "POST", &path, &[], tiny, 200).is_ok() {
                    upload_ok.push(server.spawned.elapsed().as_secs_f64() * 1e3);
                }
                let _ = expect(&mut c, "DELETE", &path, &[], b"", 200);
                rss.extend(server.rss());
            } else {
                plain.extend(first.map(|d| d.as_secs_f64() * 1e3));
            }
            server.stop();
        }
    }
    r.push(
        si,
        scenario,
        "first 200, no quota",
        "ms",
        Better::Lower,
        median(plain),
    );
    r.push(
        si,
        scenario,
        "first 200 with --max-size",
        "ms",
        Better::Lower,
        median(quota),
    );
    r.push(
        si,
        scenario,
        "first upload accepted, --max-size",
        "ms",
        Better::Lower,
        median(upload_ok),
    );
    r.push(
        si,
        scenario,
        "RSS after tally",
        "MiB",
        Better::Lower,
        median(rss),
    );
}

// ---------------------------------------------------------------------------------------------
// Output

fn fmt_value(v: Option<f64>) -> String {
    match v {
        None => "-".into(),
        Some(v) if v.is_nan() => "-".into(),
        Some(v) if v.abs() >= 100.0 => format!("{v:.0}"),
        Some(v) if v.abs() >= 10.0 => format!("{v:.1}"),
        Some(v) if v.abs() >= 0.01 => format!("{v:.2}"),
        Some(v) => format!("{v:.4}"),
    }
}

fn ratio(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    match (a, b) {
        (Some(a), Some(b)) if a != 0.0 && a.is_finite() && b.is_finite() => Some(b / a),
        _ => None,
    }
}

fn print_machine(m: &Machine, o: &Opts) {
    let n = m.samples.len();
    println!(
        "\nMachine limit (measured in this run, median of {n} readings, one before each upload round)"
    );
    println!(
        "  cores: {} (busy cores for {} connections: {})",
        m.cores, o.conns, m.busy
    );
    let sha = m.median_of(|s| s.sha);
    let write = m.median_of(|s| s.write);
    println!(
        "  SHA-256 single core, sha2 0.11, {} backend: {sha:.0} MiB/s",
        m.sha_backend
    );
    println!(
        "  SHA-256 on {} cores at once: {:.0} MiB/s (what the shared cores really gave)",
        m.busy,
        m.median_of(|s| s.sha_parallel)
    );
    println!(
        "  sequential write + fsync in {}: {write:.0} MiB/s",
        o.dir.display()
    );
    println!(
        "  {} parallel {} MiB files + fsync: {:.0} MiB/s (not used in the limit)",
        o.conns,
        o.pack_mib,
        m.median_of(|s| s.write_parallel)
    );
    println!(
        "  limit = min(SHA-256 x busy cores, write) = min({sha:.0} x {}, {write:.0}) = {:.0} MiB/s",
        m.busy,
        m.median_of(|s| m.limit(s))
    );
}

fn print_table(r: &Results) {
    let two = r.per_server.len() == 2;
    let mut rows = vec![{
        let mut h = vec![
            "scenario".to_owned(),
            "metric".to_owned(),
            "unit".to_owned(),
        ];
        h.extend(r.per_server.iter().map(|s| s.0.clone()));
        if two {
            h.push(format!("{}/{}", r.per_server[1].0, r.per_server[0].0));
        }
        h
    }];
    for m in &r.per_server[0].2 {
        let mut row = vec![m.scenario.to_owned(), m.name.to_owned(), m.unit.to_owned()];
        let vals: Vec<Option<f64>> = (0..r.per_server.len())
            .map(|i| r.get(i, m.scenario, m.name))
            .collect();
        row.extend(vals.iter().map(|v| fmt_value(*v)));
        if two {
            let q = ratio(vals[0], vals[1]);
            let mark = match (q, m.better) {
                (Some(q), Better::Higher) if q > 1.0 => " (other better)",
                (Some(q), Better::Lower) if q < 1.0 => " (other better)",
                _ => "",
            };
            row.push(q.map_or("-".into(), |q| format!("{q:.2}{mark}")));
        }
        rows.push(row);
    }
    let widths: Vec<usize> = (0..rows[0].len())
        .map(|c| rows.iter().map(|r| r[c].len()).max().unwrap_or(0))
        .collect();
    println!();
    for (i, row) in rows.iter().enumerate() {
        let cells: Vec<String> = row
            .iter()
            .enumerate()
            .map(|(c, s)| {
                if c < 3 {
                    format!("{s:<w$}", w = widths[c])
                } else {
                    format!("{s:>w$}", w = widths[c])
                }
            })
            .collect();
        println!("| {} |", cells.join(" | "));
        if i == 0 {
            let rule: Vec<String> = widths
                .iter()
                .enumerate()
                .map(|(c, w)| {
                    if c < 3 {
                        "-".repeat(w + 2)
                    } else {
                        format!("{}:", "-".repeat(w + 1))
                    }
                })
                .collect();
            println!("|{}|", rule.join("|"));
        }
    }
    for n in &r.notes {
        println!("note: {n}");
    }
}

fn json_str(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn json_num(v: Option<f64>) -> String {
    match v {
        Some(v) if v.is_finite() => format!("{v}"),
        _ => "null".into(),
    }
}

fn to_json(r: &Results, m: Option<&Machine>, o: &Opts) -> String {
    let mut s = String::from("{\n");
    let _ = writeln!(
        s,
        "  \"config\": {{\"conns\": {}, \"packs_per_conn\": {}, \"pack_mib\": {}, \"rounds\": {}, \"requests_per_conn\": {}, \"objects\": {}, \"listings\": {}, \"dir\": {}}},",
        o.conns,
        o.packs,
        o.pack_mib,
        o.rounds,
        o.requests,
        o.objects,
        o.listings,
        json_str(&o.dir.to_string_lossy())
    );
    if let Some(m) = m {
        let _ = writeln!(
            s,
            "  \"machine\": {{\"cores\": {}, \"busy_cores\": {}, \"sha256_backend\": {}, \"readings\": {}, \"sha256_mib_s\": {}, \"sha256_parallel_mib_s\": {}, \"write_fsync_mib_s\": {}, \"write_parallel_fsync_mib_s\": {}, \"limit_mib_s\": {}}},",
            m.cores,
            m.busy,
            json_str(m.sha_backend),
            m.samples.len(),
            json_num(Some(m.median_of(|s| s.sha))),
            json_num(Some(m.median_of(|s| s.sha_parallel))),
            json_num(Some(m.median_of(|s| s.write))),
            json_num(Some(m.median_of(|s| s.write_parallel))),
            json_num(Some(m.median_of(|s| m.limit(s))))
        );
    }
    s.push_str("  \"servers\": [\n");
    for (i, (label, cmd, metrics)) in r.per_server.iter().enumerate() {
        let mut by_scenario: BTreeMap<&str, Vec<&Metric>> = BTreeMap::new();
        for m in metrics {
            by_scenario.entry(m.scenario).or_default().push(m);
        }
        let _ = writeln!(
            s,
            "    {{\"name\": {}, \"command\": {}, \"scenarios\": {{",
            json_str(label),
            json_str(cmd)
        );
        let scen: Vec<String> = by_scenario
            .iter()
            .map(|(name, ms)| {
                let fields: Vec<String> = ms
                    .iter()
                    .map(|m| {
                        format!(
                            "{}: {{\"value\": {}, \"unit\": {}}}",
                            json_str(m.name),
                            json_num(m.value),
                            json_str(m.unit)
                        )
                    })
                    .collect();
                format!("      {}: {{{}}}", json_str(name), fields.join(", "))
            })
            .collect();
        s.push_str(&scen.join(",\n"));
        let _ = write!(
            s,
            "\n    }}}}{}\n",
            if i + 1 < r.per_server.len() { "," } else { "" }
        );
    }
    s.push_str("  ],\n  \"ratios\": {");
    if r.per_server.len() == 2 {
        let rs: Vec<String> = r.per_server[0]
            .2
            .iter()
            .map(|m| {
                let q = ratio(r.get(0, m.scenario, m.name), r.get(1, m.scenario, m.name));
                format!(
                    "\n    {}: {}",
                    json_str(&format!("{}/{}", m.scenario, m.name)),
                    json_num(q)
                )
            })
            .collect();
        s.push_str(&rs.join(","));
        s.push_str("\n  ");
    }
    s.push_str("},\n  \"notes\": [");
    s.push_str(
        &r.notes
            .iter()
            .map(|n| json_str(n))
            .collect::<Vec<_>>()
            .join(", "),
    );
    s.push_str("]\n}\n");
    s
}

// ---------------------------------------------------------------------------------------------

fn run(o: &Opts, base: &Path) -> Result<(), String> {
    let mut dirs = Dirs {
        base: base.to_owned(),
        n: 0,
    };
    let mut r = Results {
        per_server: o
            .servers
            .iter()
            .map(|s| (s.label.clone(), s.template.clone(), Vec::new()))
            .collect(),
        ..Results::default()
    };
    let log = |msg: &str| eprintln!("loadgen: {msg}");
    let need_packs = o.wants("upload") || o.wants("download");
    let packs = if need_packs {
        log(&format!(
            "generating {} random packs of {} MiB",
            o.conns * o.packs,
            o.pack_mib
        ));
        make_packs(o.conns * o.packs, o.pack_mib << 20)
    } else {
        Vec::new()
    };
    let mut machine = if need_packs {
        Some(Machine::new(o, base)?)
    } else {
        None
    };
    let servers = o.servers.clone();

    if need_packs {
        for (si, spec) in servers.iter().enumerate() {
            let label = &spec.label;
            log(&format!("{label}: upload with verification, then download"));
            let dir = dirs.fresh("upload")?;
            match Server::start(spec, &dir, NO_AUTH, o.pick_port) {
                Ok(s) => {
                    let idle = s.idle_rss();
                    let m = machine.as_mut().filter(|_| o.wants("upload"));
                    upload(o, &mut r, si, &s, &packs, "upload_verify", idle, m);
                    if o.wants("download") {
                        download(o, &mut r, si, &s, &packs, &dir);
                    }
                    s.stop();
                }
                Err(e) => r.notes.push(format!("{label}: upload_verify: {e}")),
            }
        }
        if o.wants("upload") {
            for (si, spec) in servers.iter().enumerate() {
                let label = &spec.label;
                log(&format!("{label}: upload without verification"));
                let dir = dirs.fresh("upload-noverify")?;
                match Server::start(spec, &dir, NO_VERIFY, o.pick_port) {
                    Ok(s) => {
                        let idle = s.idle_rss();
                        let m = machine.as_mut();
                        upload(o, &mut r, si, &s, &packs, "upload_noverify", idle, m);
                        s.stop();
                    }
                    Err(e) => r.notes.push(format!(
                        "{label}: upload_noverify (no --no-verify-upload?): {e}"
                    )),
                }
            }
        }
    }
    drop(packs);

    if o.wants("small") {
        for (si, spec) in servers.iter().enumerate() {
            log(&format!(
                "{}: small requests, no auth and bcrypt auth, alternating",
                spec.label
            ));
            small(o, &mut r, si, spec, &mut dirs);
        }
    }

    if o.wants("list") || o.wants("startup") {
        let root = dirs.fresh("big")?;
        log(&format!("creating {} objects on disk", o.objects));
        let t = Instant::now();
        make_big_repo(&root, o.objects)
            .map_err(|e| format!("cannot create the big repository: {e}"))?;
        log(&format!("created in {:.1} s", t.elapsed().as_secs_f64()));
        if o.wants("list") {
            for (si, spec) in servers.iter().enumerate() {
                let label = &spec.label;
                log(&format!("{label}: v2 listing of {} objects", o.objects));
                match Server::start(spec, &root, NO_AUTH, o.pick_port) {
                    Ok(s) => {
                        list(o, &mut r, si, &s, o.objects);
                        s.stop();
                    }
                    Err(e) => r.notes.push(format!("{label}: list: {e}")),
                }
            }
        }
        if o.wants("startup") {
            for (si, spec) in servers.iter().enumerate() {
                let label = &spec.label;
                log(&format!("{label}: start-up on {} objects", o.objects));
                startup(o, &mut r, si, spec, &root);
            }
        }
    }

    if let Some(m) = machine.as_ref().filter(|m| !m.samples.is_empty()) {
        print_machine(m, o);
    }
    print_table(&r);
    if let Some(path) = &o.json {
        fs::write(
            path,
            to_json(&r, machine.as_ref().filter(|m| !m.samples.is_empty()), o),
        )
        .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
        log(&format!("JSON written to {}", path.display()));
    }
    Ok(())
}

fn main() -> ExitCode {
    let o = match parse_args() {
        Ok(o) => o,
        Err(e) => {
            if e.is_empty() {
                print!("{USAGE}");
                return ExitCode::SUCCESS;
            }
            eprintln!("loadgen: {e}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let base = o.dir.join(format!("loadgen-{}", std::process::id()));
    if let Err(e) = fs::create_dir_all(&base) {
        eprintln!("loadgen: cannot create {}: {e}", base.display());
        return ExitCode::FAILURE;
    }
    let result = run(&o, &base);
    if o.keep {
        eprintln!("loadgen: kept {}", base.display());
    } else {
        let _ = fs::remove_dir_all(&base);
    }
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("loadgen: {e}");
            ExitCode::FAILURE
        }
    }
}
