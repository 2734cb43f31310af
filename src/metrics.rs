//! `--prometheus`: the blob counters of the Go server (same names and labels, so its Grafana
//! dashboard keeps working after the swap), the standard `process_*` gauges read from /proc,
//! and a few additions for small boxes (quota gauges, rejected uploads). Renders the Prometheus
//! text exposition format 0.0.4. Decides neither routes nor who may read it (`handler.rs` does).
//!
//! # Label values, as the Go server (restic/rest-server) sets them
//!
//! Read from its `metrics.go` (`makeBlobMetricFunc`), `handlers.go` (`ServeHTTP`), `mux.go`
//! (`checkAuth`, `wrapMetricsAuth`) and `repo/repo.go` (`sendMetric` call sites):
//!
//! - `user`: the Basic-auth user name; with `--no-auth` `checkAuth` returns an empty name, so
//!   the label is `""`.
//! - `repo`: the repo path segments joined with `/` (`strings.Join(folderPath, "/")`): `""` for
//!   the root repository, `alice`, `alice/laptop`. (An early version joined with `""`; current
//!   versions use `/`.)
//! - `type`: the object directory: `data`, `index`, `keys`, `locks`, `snapshots`. The config
//!   is never counted: `getConfig`/`saveConfig`/`deleteConfig` call no metric function, so no
//!   `type="config"` series exists.
//! - read: counted once per object GET that was served, with the bytes the response writer
//!   passed on (`datacounter.ResponseWriterCounter` around `http.ServeContent`), so a Range
//!   request counts its range, not the file size. HEAD is not counted.
//! - write: counted once per successful object upload, with the body length.
//! - delete: counted once per object actually removed, with the size `os.Stat` gave before the
//!   remove (a missing object is not counted).
//!
//! Differences, on purpose: we count read bytes as the response's `Content-Length` when the
//! response is built (Go counts after the body is written, so an aborted download counts what
//! was sent; we count what was promised). Go also counts the error text of a 416 answer as a
//! read; we count only 200/206. A 200 for an upload retry whose object is already stored
//! (docs/protocol.md, "Uploads"; a 403 in Go) counts as a write: the client sent and we verified the body.
//!
//! # Cost on the request path
//!
//! One `Mutex` around a two-level map user -> repo path -> fixed array per (operation, type).
//! The lookups borrow the request's `&str` user and `&[String]` repo segments (`Box<str>:
//! Borrow<str>`, `Vec<String>: Borrow<[String]>`), so a request allocates nothing once its label
//! set exists; the first request of a (user, repo) copies the two keys once. The lock is held
//! for two SipHash lookups and two additions, never across I/O: measured at ~190 ns per count
//! (x86-64, release, 50 label sets, uncontended), so a few hundred ns on a Pi 4, against the
//! tens of microseconds of file-system work of the cheapest request. Joining, escaping and
//! formatting happen at scrape time on a copy taken under the lock (~0.4 ms for 50 sets).

use crate::lock::Lock as _;
use crate::storage::inventory::{self, RepoStats};
use crate::storage::names::Kind;
use crate::storage::quota::Usage;
use crate::storage::scrub::ScrubStatus;
use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

/// What Prometheus asks for: text format 0.0.4.
pub(crate) const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// The unit of `utime`, `stime` and `starttime` in /proc/PID/stat: `USER_HZ`, which the kernel
/// fixes at 100 for user space on every architecture we build for (x86, ARM, MIPS, RISC-V).
const USER_HZ: f64 = 100.0;

/// What happened to a blob.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum BlobOp {
    Read,
    Write,
    Delete,
}

/// Why an upload was refused (`rest_server_upload_rejected_total{reason}`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Rejected {
    /// The body did not hash to its id (400).
    HashMismatch,
    /// A quota would be exceeded, `--max-size` or the access file's (507).
    Quota,
    /// The object or config is already there (403).
    Exists,
}

impl Rejected {
    const ALL: [Rejected; 3] = [Rejected::HashMismatch, Rejected::Quota, Rejected::Exists];

    fn label(self) -> &'static str {
        match self {
            Rejected::HashMismatch => "hash_mismatch",
            Rejected::Quota => "quota",
            Rejected::Exists => "exists",
        }
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Tally {
    count: u64,
    bytes: u64,
}

/// The counters of one (user, repo): `[operation][type]`.
type RepoTallies = [[Tally; Kind::ALL.len()]; 3];

/// user -> repo segments -> counters.
type BlobMap = HashMap<Box<str>, HashMap<Vec<String>, RepoTallies>>;

#[derive(Debug, Default)]
pub(crate) struct Metrics {
    blobs: Mutex<BlobMap>,
    rejected: [AtomicU64; 3],
}

fn op_index(op: BlobOp) -> usize {
    match op {
        BlobOp::Read => 0,
        BlobOp::Write => 1,
        BlobOp::Delete => 2,
    }
}

fn kind_index(kind: Kind) -> usize {
    match kind {
        Kind::Data => 0,
        Kind::Index => 1,
        Kind::Keys => 2,
        Kind::Locks => 3,
        Kind::Snapshots => 4,
    }
}

/// The six Go families: (operation, bytes?, name, help).
const BLOB_FAMILIES: [(BlobOp, bool, &str, &str); 6] = [
    (
        BlobOp::Write,
        false,
        "rest_server_blob_write_total",
        "Number of objects written (uploads answered 200).",
    ),
    (
        BlobOp::Write,
        true,
        "rest_server_blob_write_bytes_total",
        "Bytes of objects written.",
    ),
    (
        BlobOp::Read,
        false,
        "rest_server_blob_read_total",
        "Number of objects read (GET answered 200 or 206).",
    ),
    (
        BlobOp::Read,
        true,
        "rest_server_blob_read_bytes_total",
        "Bytes of objects read (the Range length for partial reads).",
    ),
    (
        BlobOp::Delete,
        false,
        "rest_server_blob_delete_total",
        "Number of objects deleted.",
    ),
    (
        BlobOp::Delete,
        true,
        "rest_server_blob_delete_bytes_total",
        "Bytes of objects deleted (their size on disk).",
    ),
];

impl Metrics {
    pub(crate) fn new() -> Metrics {
        Metrics::default()
    }

    /// Counts one blob operation. `user` is `""` for anonymous requests, as in Go.
    pub(crate) fn count_blob(
        &self,
        user: &str,
        repo: &[String],
        kind: Kind,
        op: BlobOp,
        bytes: u64,
    ) {
        // A panic elsewhere while holding the lock cannot leave the counters half-updated
        // (two plain additions), so a poisoned lock is still good to use.
        let mut map = self.blobs.locked();
        // Borrowed lookups first: allocation only for a label set never seen before.
        let repos = match map.get_mut(user) {
            Some(r) => r,
            None => map.entry(user.into()).or_default(),
        };
        let tallies = match repos.get_mut(repo) {
            Some(t) => t,
            None => repos.entry(repo.to_vec()).or_default(),
        };
        let t = &mut tallies[op_index(op)][kind_index(kind)];
        t.count += 1;
        t.bytes += bytes;
    }

    pub(crate) fn count_rejected(&self, why: Rejected) {
        let i = Rejected::ALL.iter().position(|r| *r == why).unwrap_or(0);
        self.rejected[i].fetch_add(1, Ordering::Relaxed);
    }

    /// The whole exposition. `quota`: usage, when `--max-size` or `--access-file` is given.
    /// `repos`: the per-repository inventory, unless `--no-repo-metrics`.
    /// `scrub`: the background scrub's results, with `--scrub-every`.
    pub(crate) fn render(
        &self,
        process: &ProcessStats,
        quota: Option<&Usage>,
        repos: Option<&[(String, RepoStats)]>,
        scrub: Option<&ScrubStatus>,
    ) -> String {
        // Copy under the lock, format without it.
        let mut rows: Vec<(Box<str>, String, RepoTallies)> = {
            let map = self.blobs.locked();
            map.iter()
                .flat_map(|(user, repos)| {
                    repos
                        .iter()
                        .map(|(repo, t)| (user.clone(), repo.join("/"), *t))
                })
                .collect()
        };
        rows.sort_by(|a, b| (&a.0, &a.1).cmp(&(&b.0, &b.1)));

        // Sized up front: growing a string of ~1 MiB (1000 repositories) by doubling would
        // hold two copies at once and raise the peak RSS (BENCHMARKS.md).
        let per_repo = repos.map_or(0, |r| r.iter().map(|(n, _)| 13 * (n.len() + 70)).sum());
        let mut out = String::with_capacity(4096 + rows.len() * 600 + per_repo);
        for (op, bytes, name, help) in BLOB_FAMILIES {
            header(&mut out, name, "counter", help);
            for (user, repo, tallies) in &rows {
                for kind in Kind::ALL {
                    let t = tallies[op_index(op)][kind_index(kind)];
                    // Like Go's CounterVec, a series exists once its operation happened.
                    if t.count == 0 {
                        continue;
                    }
                    out.push_str(name);
                    out.push_str("{repo=\"");
                    escape_label(&mut out, repo);
                    out.push_str("\",type=\"");
                    out.push_str(kind.as_str());
                    out.push_str("\",user=\"");
                    escape_label(&mut out, user);
                    let value = if bytes { t.bytes } else { t.count };
                    let _ = writeln!(out, "\"}} {value}");
                }
            }
        }

        let name = "rest_server_upload_rejected_total";
        header(&mut out, name, "counter", "Uploads refused, by reason.");
        for (why, n) in Rejected::ALL.iter().zip(&self.rejected) {
            let n = n.load(Ordering::Relaxed);
            let _ = writeln!(out, "{name}{{reason=\"{}\"}} {n}", why.label());
        }

        if let Some(q) = quota {
            render_quota(&mut out, q);
        }
        if let Some(repos) = repos {
            render_repos(&mut out, repos);
        }
        if let Some(s) = scrub {
            render_scrub(&mut out, s);
        }
        process.render(&mut out);
        out
    }
}

/// The quota gauges: the global pair with `--max-size`, a pair per first path segment with
/// `--access-file` (the limit only where one applies).
fn render_quota(out: &mut String, q: &Usage) {
    if let Some(limit) = q.limit {
        for (name, help, v) in [
            (
                "rest_server_quota_used_bytes",
                "Bytes used under --max-size, including uploads in flight (counted at start-up in the background).",
                q.used,
            ),
            (
                "rest_server_quota_limit_bytes",
                "The --max-size limit in bytes.",
                limit,
            ),
        ] {
            header(out, name, "gauge", help);
            let _ = writeln!(out, "{name} {v}");
        }
    }
    if q.segments.is_empty() {
        return;
    }
    let name = "rest_server_quota_segment_used_bytes";
    header(
        out,
        name,
        "gauge",
        "Bytes used below each first path segment, including uploads in flight (with --access-file).",
    );
    for (segment, used, _) in &q.segments {
        segment_line(out, name, segment, *used);
    }
    let name = "rest_server_quota_segment_limit_bytes";
    header(
        out,
        name,
        "gauge",
        "The [quotas] limit of each first path segment that has one, in bytes.",
    );
    for (segment, _, limit) in &q.segments {
        if let Some(limit) = limit {
            segment_line(out, name, segment, *limit);
        }
    }
}

/// The per-repository gauges (storage/inventory.rs): kept up to date by uploads and deletes,
/// so a scrape costs no walk. Timestamps are left out for a repository without snapshots
/// (or without objects), rather than reported as 1970.
fn render_repos(out: &mut String, repos: &[(String, RepoStats)]) {
    let repo_line = |out: &mut String, name: &str, repo: &str, kind: Option<Kind>, v: u64| {
        out.push_str(name);
        out.push_str("{repo=\"");
        escape_label(out, repo);
        if let Some(kind) = kind {
            out.push_str("\",type=\"");
            out.push_str(kind.as_str());
        }
        let _ = writeln!(out, "\"}} {v}");
    };
    type Pick = fn(&RepoStats) -> Option<u64>;
    let single: [(&str, &str, Pick); 3] = [
        (
            "rest_server_repo_snapshots",
            "Snapshots in the repository (files under snapshots/).",
            |s| Some(s.snapshots()),
        ),
        (
            "rest_server_repo_last_snapshot_timestamp_seconds",
            "Unix time of the repository's newest snapshot (its file's mtime).",
            |s| s.newest_snapshot,
        ),
        (
            "rest_server_repo_last_upload_timestamp_seconds",
            "Unix time of the newest object (not a lock) stored in the repository.",
            |s| s.newest_upload,
        ),
    ];
    for (name, help, pick) in single {
        header(out, name, "gauge", help);
        for (repo, s) in repos {
            if let Some(v) = pick(s) {
                repo_line(out, name, repo, None, v);
            }
        }
    }
    for (name, help, bytes) in [
        (
            "rest_server_repo_objects",
            "Objects in the repository, by type.",
            false,
        ),
        (
            "rest_server_repo_bytes",
            "Bytes of the repository's objects, by type.",
            true,
        ),
    ] {
        header(out, name, "gauge", help);
        for (repo, s) in repos {
            for kind in Kind::ALL {
                let i = inventory::index(kind);
                let v = if bytes { s.bytes[i] } else { s.objects[i] };
                repo_line(out, name, repo, Some(kind), v);
            }
        }
    }
}

/// The background scrub (docs/metrics.md, "Scrubbing").
fn render_scrub(out: &mut String, s: &ScrubStatus) {
    for (name, kind, help, v) in [
        (
            "rest_server_scrub_objects_checked_total",
            "counter",
            "Objects re-read and checked against their names by the background scrub.",
            s.objects_checked.load(Ordering::Relaxed),
        ),
        (
            "rest_server_scrub_bytes_checked_total",
            "counter",
            "Bytes re-read by the background scrub.",
            s.bytes_checked.load(Ordering::Relaxed),
        ),
        (
            "rest_server_scrub_last_pass_completed_timestamp_seconds",
            "gauge",
            "Unix time the last complete scrub pass ended (0: none yet).",
            s.last_pass_completed.load(Ordering::Relaxed),
        ),
    ] {
        header(out, name, kind, help);
        let _ = writeln!(out, "{name} {v}");
    }
    let name = "rest_server_scrub_damaged_objects";
    header(
        out,
        name,
        "gauge",
        "Damaged objects found the last time the scrub checked each repository.",
    );
    for (repo, n) in s.damaged() {
        out.push_str(name);
        out.push_str("{repo=\"");
        escape_label(out, &repo);
        let _ = writeln!(out, "\"}} {n}");
    }
}

fn segment_line(out: &mut String, name: &str, segment: &str, v: u64) {
    out.push_str(name);
    out.push_str("{segment=\"");
    escape_label(out, segment);
    let _ = writeln!(out, "\"}} {v}");
}

fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// Label value escaping of the text format: backslash, double quote and line feed.
fn escape_label(out: &mut String, v: &str) {
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

/// The standard `process_*` metrics of the Prometheus client libraries, from /proc. A value
/// that cannot be read (not Linux, /proc not mounted) is left out rather than made up.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct ProcessStats {
    pub cpu_seconds: Option<f64>,
    pub resident_bytes: Option<u64>,
    pub virtual_bytes: Option<u64>,
    pub open_fds: Option<u64>,
    pub max_fds: Option<u64>,
    pub start_time_seconds: Option<f64>,
}

impl ProcessStats {
    /// Reads /proc/self (blocking, but only small virtual files: a few syscalls).
    pub(crate) fn read() -> ProcessStats {
        let text = |p: &str| std::fs::read_to_string(p).ok();
        let stat = text("/proc/self/stat").and_then(|s| parse_stat(&s));
        let status = text("/proc/self/status");
        let status_kib = |field: &str| status.as_deref().and_then(|s| status_kib(s, field));
        let btime = text("/proc/stat").and_then(|s| parse_btime(&s));
        ProcessStats {
            cpu_seconds: stat.map(|s| (s.utime + s.stime) as f64 / USER_HZ),
            // VmRSS/VmSize in KiB, not stat's page counts: ARM kernels use 4, 16 or 64 KiB pages.
            resident_bytes: status_kib("VmRSS").map(|k| k * 1024),
            virtual_bytes: status_kib("VmSize").map(|k| k * 1024),
            // The listing's own directory handle is one of the entries, as in the Go client.
            open_fds: std::fs::read_dir("/proc/self/fd")
                .ok()
                .map(|d| d.count() as u64),
            max_fds: text("/proc/self/limits").and_then(|s| parse_max_open_files(&s)),
            start_time_seconds: stat
                .zip(btime)
                .map(|(s, boot)| boot as f64 + s.starttime as f64 / USER_HZ),
        }
    }

    fn render(&self, out: &mut String) {
        let mut one = |name: &str, kind: &str, help: &str, v: Option<String>| {
            if let Some(v) = v {
                header(out, name, kind, help);
                let _ = writeln!(out, "{name} {v}");
            }
        };
        let int = |v: Option<u64>| v.map(|v| v.to_string());
        let float = |v: Option<f64>| v.filter(|v| v.is_finite()).map(|v| v.to_string());
        one(
            "process_cpu_seconds_total",
            "counter",
            "Total user and system CPU time spent in seconds.",
            float(self.cpu_seconds),
        );
        one(
            "process_resident_memory_bytes",
            "gauge",
            "Resident memory size in bytes.",
            int(self.resident_bytes),
        );
        one(
            "process_virtual_memory_bytes",
            "gauge",
            "Virtual memory size in bytes.",
            int(self.virtual_bytes),
        );
        one(
            "process_open_fds",
            "gauge",
            "Number of open file descriptors.",
            int(self.open_fds),
        );
        one(
            "process_max_fds",
            "gauge",
            "Maximum number of open file descriptors.",
            int(self.max_fds),
        );
        one(
            "process_start_time_seconds",
            "gauge",
            "Start time of the process since unix epoch in seconds.",
            float(self.start_time_seconds),
        );
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Stat {
    utime: u64,
    stime: u64,
    starttime: u64,
}

/// /proc/PID/stat: the command name (field 2) is in parentheses and may itself contain spaces
/// and ')', so fields are counted from the last ')'.
fn parse_stat(s: &str) -> Option<Stat> {
    let rest = &s[s.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // `rest` starts at field 3 (state): field n is at index n - 3.
    let field = |n: usize| fields.get(n - 3)?.parse::<u64>().ok();
    Some(Stat {
        utime: field(14)?,
        stime: field(15)?,
        starttime: field(22)?,
    })
}

/// `VmRSS:     1234 kB` -> 1234.
fn status_kib(s: &str, field: &str) -> Option<u64> {
    s.lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
}

/// `btime 1700000000` in /proc/stat: boot time in seconds since the epoch.
fn parse_btime(s: &str) -> Option<u64> {
    s.lines()
        .find_map(|l| l.strip_prefix("btime "))
        .and_then(|v| v.trim().parse().ok())
}

/// The soft limit of `Max open files` in /proc/PID/limits; `None` if unlimited.
fn parse_max_open_files(s: &str) -> Option<u64> {
    s.lines()
        .find_map(|l| l.strip_prefix("Max open files"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn segs(s: &[&str]) -> Vec<String> {
        s.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn counts_per_label_set_and_renders_go_names() {
        let m = Metrics::new();
        m.count_blob(
            "alice",
            &segs(&["alice", "laptop"]),
            Kind::Data,
            BlobOp::Write,
            100,
        );
        m.count_blob(
            "alice",
            &segs(&["alice", "laptop"]),
            Kind::Data,
            BlobOp::Write,
            50,
        );
        m.count_blob("", &[], Kind::Keys, BlobOp::Read, 7);
        m.count_blob("bob", &segs(&["bob"]), Kind::Locks, BlobOp::Delete, 3);
        m.count_rejected(Rejected::Exists);
        let quota = Usage {
            used: 10,
            limit: Some(20),
            segments: vec![("a\"b".into(), 4, Some(8)), ("bob".into(), 6, None)],
        };
        let text = m.render(&ProcessStats::default(), Some(&quota), None, None);
        for line in [
            "rest_server_blob_write_total{repo=\"alice/laptop\",type=\"data\",user=\"alice\"} 2",
            "rest_server_blob_write_bytes_total{repo=\"alice/laptop\",type=\"data\",user=\"alice\"} 150",
            "rest_server_blob_read_total{repo=\"\",type=\"keys\",user=\"\"} 1",
            "rest_server_blob_read_bytes_total{repo=\"\",type=\"keys\",user=\"\"} 7",
            "rest_server_blob_delete_total{repo=\"bob\",type=\"locks\",user=\"bob\"} 1",
            "rest_server_blob_delete_bytes_total{repo=\"bob\",type=\"locks\",user=\"bob\"} 3",
            "rest_server_upload_rejected_total{reason=\"exists\"} 1",
            "rest_server_upload_rejected_total{reason=\"quota\"} 0",
            "rest_server_quota_used_bytes 10",
            "rest_server_quota_limit_bytes 20",
            "rest_server_quota_segment_used_bytes{segment=\"a\\\"b\"} 4",
            "rest_server_quota_segment_used_bytes{segment=\"bob\"} 6",
            "rest_server_quota_segment_limit_bytes{segment=\"a\\\"b\"} 8",
            "# TYPE rest_server_blob_write_total counter",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "missing {line:?} in\n{text}"
            );
        }
        // Only operations that happened have series (as Go's CounterVec children).
        assert!(!text.contains("rest_server_blob_read_total{repo=\"alice/laptop\""));
        assert!(
            !text.contains("segment_limit_bytes{segment=\"bob\"}"),
            "bob has no limit"
        );
    }

    #[test]
    fn label_values_are_escaped() {
        let m = Metrics::new();
        m.count_blob(
            "u\"1",
            &segs(&["a\\b", "x\ny"]),
            Kind::Index,
            BlobOp::Read,
            1,
        );
        let text = m.render(&ProcessStats::default(), None, None, None);
        assert!(
            text.contains(r#"{repo="a\\b/x\ny",type="index",user="u\"1"} 1"#),
            "{text}"
        );
        assert!(
            !text.contains("rest_server_quota_"),
            "no quota gauges without --max-size"
        );
    }

    #[test]
    fn proc_parsers() {
        let stat =
            "26822 (a b) c) R 1 1 1 0 -1 4194304 99 0 0 0 12 34 0 0 20 0 1 0 140468 3133440 359";
        assert_eq!(
            parse_stat(stat),
            Some(Stat {
                utime: 12,
                stime: 34,
                starttime: 140468
            })
        );
        assert_eq!(parse_stat("garbage"), None);
        assert_eq!(
            status_kib("Name:\tx\nVmRSS:\t  1234 kB\n", "VmRSS"),
            Some(1234)
        );
        assert_eq!(status_kib("VmRSSX: 1 kB\n", "VmRSS"), None);
        assert_eq!(parse_btime("cpu 1 2\nbtime 1795438098\n"), Some(1795438098));
        let limits = "Limit  Soft Limit  Hard Limit  Units\nMax open files            20000                20000                files\n";
        assert_eq!(parse_max_open_files(limits), Some(20000));
        assert_eq!(
            parse_max_open_files("Max open files  unlimited  unlimited  files"),
            None
        );
    }

    #[test]
    fn process_stats_on_this_machine() {
        let p = ProcessStats::read();
        assert!(p.resident_bytes.unwrap() > 0);
        assert!(p.virtual_bytes.unwrap() >= p.resident_bytes.unwrap());
        assert!(p.open_fds.unwrap() >= 3);
        assert!(p.max_fds.unwrap() >= p.open_fds.unwrap());
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs_f64();
        let start = p.start_time_seconds.unwrap();
        assert!(
            start <= now + 1.0 && start > now - 3600.0,
            "{start} vs {now}"
        );
    }
}
