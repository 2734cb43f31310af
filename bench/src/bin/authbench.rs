//! The "Auth" numbers of BENCHMARKS.md, measured in one run on one machine:
//!
//! 1. keep-alive HEAD requests with a bcrypt cost-10 user against the same requests with
//!    `--no-auth` (the verified-credential cache is what makes these close);
//! 2. one legitimate client's upload throughput alone, and while 200 wrong passwords arrive
//!    at once, from one address (the per-address back-off) and from 200 addresses (the global
//!    flood budget of src/budget.rs: a few hashes at full speed, then a tenth of a core, the
//!    excess refused unchecked with 429).
//!
//! Build the server first: `cargo build --release && cargo run --release -p bench --bin authbench`.
//! Options: `--bin PATH` (default target/release/rest-server), `--dir DIR` (default /dev/shm,
//! so the disk does not blur the CPU effect), `--secs N` per HEAD run, `--rounds N`,
//! `--head-start MS` (how long after the flood the upload starts; default 200).

use sha2::{Digest, Sha256};
use std::io::{BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

const USER: &str = "alice";
const PASSWORD: &str = "correct horse battery staple";
const COST: u32 = 10;
const HEAD_CONNS: usize = 4;
const BLOB: usize = 8 << 20;
const BLOBS: usize = 16;
const ATTACKERS: usize = 200;

struct Server {
    child: Child,
    addr: SocketAddr,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start(bin: &Path, data: &Path, extra: &[&str]) -> Server {
    let mut child = Command::new(bin)
        .arg("--path")
        .arg(data)
        .args(["--listen", "127.0.0.1:0"])
        .args(extra)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start rest-server (cargo build --release first)");
    let (tx, rx) = mpsc::channel();
    let log = Default::default();
    let stderr = child.stderr.take().unwrap();
    testkit::follow_lines(stderr, &log, 0, &tx, testkit::listen_address_in);
    let addr = rx
        .recv_timeout(Duration::from_secs(20))
        .expect("server did not start");
    Server {
        child,
        addr: addr.parse().unwrap(),
    }
}

fn basic(user: &str, password: &str) -> String {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    format!("Authorization: Basic {b64}\r\n")
}

/// Reads one response (the test kit's reader); returns its status.
fn read_status(r: &mut BufReader<TcpStream>, head: bool) -> std::io::Result<u16> {
    let method = if head { "HEAD" } else { "GET" };
    Ok(testkit::read_response_to(r, method, &mut |_| ())?.status)
}

fn connect_from(source: Option<[u8; 4]>, to: SocketAddr) -> TcpStream {
    let s = match source {
        None => TcpStream::connect(to).unwrap(),
        Some(ip) => {
            use socket2::{Domain, SockAddr, Socket, Type};
            let sock = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
            sock.bind(&SockAddr::from(SocketAddr::from((ip, 0))))
                .unwrap();
            sock.connect(&SockAddr::from(to)).unwrap();
            sock.into()
        }
    };
    s.set_nodelay(true).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    s
}

/// Keep-alive HEAD requests per second over `HEAD_CONNS` connections for `secs`.
fn head_rate(addr: SocketAddr, auth: &str, secs: f64) -> f64 {
    let req = format!("HEAD /{USER}/config HTTP/1.1\r\nHost: bench\r\n{auth}\r\n").into_bytes();
    let deadline = Instant::now() + Duration::from_secs_f64(secs);
    let threads: Vec<_> = (0..HEAD_CONNS)
        .map(|_| {
            let req = req.clone();
            thread::spawn(move || {
                let mut s = BufReader::new(connect_from(None, addr));
                let mut n = 0u64;
                while Instant::now() < deadline {
                    s.get_mut().write_all(&req).unwrap();
                    assert_eq!(read_status(&mut s, true).unwrap(), 200);
                    n += 1;
                }
                n
            })
        })
        .collect();
    let total: u64 = threads.into_iter().map(|t| t.join().unwrap()).sum();
    total as f64 / secs
}

/// Deterministic pseudo-random blobs with their ids.
fn blobs(seed: u64) -> Vec<(String, Vec<u8>)> {
    (0..BLOBS as u64)
        .map(|i| {
            let mut x = (seed * 1000 + i).wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
            let data: Vec<u8> = (0..BLOB / 8)
                .flat_map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    x.to_le_bytes()
                })
                .collect();
            let id = Sha256::digest(&data)
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect();
            (id, data)
        })
        .collect()
}

/// Uploads the blobs one after another on one keep-alive connection; MB/s.
fn upload(addr: SocketAddr, repo: &str, blobs: &[(String, Vec<u8>)]) -> f64 {
    let auth = basic(USER, PASSWORD);
    let mut s = BufReader::new(connect_from(None, addr));
    let t = Instant::now();
    for (id, data) in blobs {
        let head = format!(
            "POST /{repo}/data/{id} HTTP/1.1\r\nHost: bench\r\n{auth}Content-Length: {}\r\n\r\n",
            data.len()
        );
        s.get_mut().write_all(head.as_bytes()).unwrap();
        s.get_mut().write_all(data).unwrap();
        assert_eq!(read_status(&mut s, false).unwrap(), 200);
    }
    (blobs.len() * BLOB) as f64 / t.elapsed().as_secs_f64() / 1e6
}

/// Sends `ATTACKERS` wrong-password requests at once, each on its own connection, from one
/// source address or from 127.0.1.1 ... 127.0.1.200. Returns when all are answered:
/// (how many got 401, how many 429, seconds until the last answer).
fn attack(addr: SocketAddr, distinct: bool) -> thread::JoinHandle<(usize, usize, f64)> {
    thread::spawn(move || {
        let t = Instant::now();
        let threads: Vec<_> = (0..ATTACKERS)
            .map(|i| {
                let source = if distinct {
                    [127, 0, 1, (i % 250 + 1) as u8]
                } else {
                    [127, 0, 0, 66]
                };
                thread::spawn(move || {
                    let req = format!(
                        "GET /{USER}/config HTTP/1.1\r\nHost: bench\r\n{}\r\n",
                        basic(USER, &format!("guess-{i}"))
                    );
                    let mut s = BufReader::new(connect_from(Some(source), addr));
                    s.get_mut().write_all(req.as_bytes()).unwrap();
                    read_status(&mut s, false).unwrap_or(0)
                })
            })
            .collect();
        let statuses: Vec<u16> = threads.into_iter().map(|t| t.join().unwrap()).collect();
        let count = |want| statuses.iter().filter(|&&st| st == want).count();
        (count(401), count(429), t.elapsed().as_secs_f64())
    })
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn main() {
    let mut args = std::env::args().skip(1);
    let (mut bin, mut dir, mut secs, mut rounds, mut head_start) = (
        PathBuf::from(testkit::bin()),
        PathBuf::from("/dev/shm"),
        3.0,
        3,
        200,
    );
    while let Some(a) = args.next() {
        let v = args.next().expect("flag needs a value");
        match a.as_str() {
            "--bin" => bin = v.into(),
            "--dir" => dir = v.into(),
            "--secs" => secs = v.parse().unwrap(),
            "--rounds" => rounds = v.parse().unwrap(),
            "--head-start" => head_start = v.parse().unwrap(),
            _ => panic!("unknown flag {a}"),
        }
    }
    let root = dir.join(format!("authbench-{}", std::process::id()));
    let (auth_data, open_data) = (root.join("auth"), root.join("open"));
    for d in [&auth_data, &open_data] {
        std::fs::create_dir_all(d).unwrap();
    }
    let t = Instant::now();
    let hash = bcrypt::hash(PASSWORD, COST).unwrap();
    let bcrypt_ms = t.elapsed().as_secs_f64() * 1000.0;
    std::fs::write(auth_data.join(".htpasswd"), format!("{USER}:{hash}\n")).unwrap();

    let authed = start(&bin, &auth_data, &[]);
    let open = start(&bin, &open_data, &["--no-auth"]);
    let cred = basic(USER, PASSWORD);
    for (srv, auth) in [(&authed, cred.as_str()), (&open, "")] {
        let mut s = BufReader::new(connect_from(None, srv.addr));
        for req in [
            format!(
                "POST /{USER}/?create=true HTTP/1.1\r\nHost: b\r\n{auth}Content-Length: 0\r\n\r\n"
            ),
            format!("POST /{USER}/config HTTP/1.1\r\nHost: b\r\n{auth}Content-Length: 1\r\n\r\nx"),
        ] {
            s.get_mut().write_all(req.as_bytes()).unwrap();
            assert_eq!(read_status(&mut s, false).unwrap(), 200);
        }
    }

    println!("bcrypt cost {COST}, one hash in this process: {bcrypt_ms:.0} ms");
    println!(
        "cores: {}",
        thread::available_parallelism().map_or(1, |n| n.get())
    );
    println!();
    println!(
        "## keep-alive HEAD, {HEAD_CONNS} connections, {secs} s per run, {rounds} rounds alternating"
    );
    let (mut with_auth, mut without) = (vec![], vec![]);
    for _ in 0..rounds {
        without.push(head_rate(open.addr, "", secs));
        with_auth.push(head_rate(authed.addr, &cred, secs));
    }
    let (a, n) = (median(with_auth.clone()), median(without.clone()));
    println!("--no-auth:          {n:>8.0} req/s  (runs: {without:.0?})");
    println!("bcrypt-10 user:     {a:>8.0} req/s  (runs: {with_auth:.0?})");
    println!("ratio:              {:>8.1} %", 100.0 * a / n);

    println!();
    println!(
        "## upload, one client, {BLOBS} x {} MiB on one keep-alive connection, starting {head_start} ms after {ATTACKERS} wrong passwords at once",
        BLOB >> 20
    );
    // Start from a cached login, as a running restic has (the cache is per user, not per
    // connection; a new connection each time, since the server closes one idle for 30 s).
    let req = format!("HEAD /{USER}/config HTTP/1.1\r\nHost: b\r\n{cred}\r\n");
    let scenarios = [
        "alone",
        "200 wrong from one address",
        "200 wrong from 200 addresses",
    ];
    let mut results: Vec<Vec<f64>> = vec![vec![]; scenarios.len()];
    let mut attacks: Vec<Vec<String>> = vec![vec![]; scenarios.len()];
    for round in 0..rounds {
        for (k, name) in scenarios.iter().enumerate() {
            let mut s = BufReader::new(connect_from(None, authed.addr));
            s.get_mut().write_all(req.as_bytes()).unwrap();
            assert_eq!(read_status(&mut s, true).unwrap(), 200);
            let data = blobs((round * 10 + k) as u64);
            let repo = format!("{USER}/r{round}s{k}");
            let mut c = BufReader::new(connect_from(None, authed.addr));
            let create = format!(
                "POST /{repo}/?create=true HTTP/1.1\r\nHost: b\r\n{cred}Content-Length: 0\r\n\r\n"
            );
            c.get_mut().write_all(create.as_bytes()).unwrap();
            assert_eq!(read_status(&mut c, false).unwrap(), 200);
            let attacker = (k > 0).then(|| attack(authed.addr, k == 2));
            if attacker.is_some() {
                // Let the flood arrive and queue before the upload starts.
                thread::sleep(Duration::from_millis(head_start));
            }
            let mbps = upload(authed.addr, &repo, &data);
            results[k].push(mbps);
            if let Some(a) = attacker {
                let (wrong, busy, took) = a.join().unwrap();
                attacks[k].push(format!("{wrong} x 401 + {busy} x 429 in {took:.1} s"));
            }
            let _ = std::fs::remove_dir_all(auth_data.join(&repo));
            eprintln!("round {round} {name}: {mbps:.0} MB/s");
            // The server forgets an address after 60 s without failures; use fresh ones
            // instead of waiting: the one-address attacker is 127.0.0.66 each time, so
            // later rounds meet an address that is already penalised (closer to reality).
        }
    }
    let base = median(results[0].clone());
    for (k, name) in scenarios.iter().enumerate() {
        let m = median(results[k].clone());
        println!(
            "{name:<30} {m:>6.0} MB/s  {:>6.1} %  (runs: {:.0?}) {}",
            100.0 * m / base,
            results[k],
            attacks[k].join("; ")
        );
    }
    drop(authed);
    drop(open);
    let _ = std::fs::remove_dir_all(&root);
}
