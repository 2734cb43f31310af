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
use std::io::{self, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Barrier, Mutex};
use std::time::{Duration, Instant};

const USAGE: &str = "\
loadgen: benchmark a restic REST server (see BENCHMARKS.md)

usage: cargo run --release -p bench --bin loadgen -- [options]

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

mod fixtures;
mod http;
mod machine;
mod output;
mod results;
mod scenarios;
mod server;
mod workers;

use fixtures::*;
use http::*;
use machine::*;
use output::*;
use results::*;
use scenarios::*;
use server::*;
use workers::*;

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
