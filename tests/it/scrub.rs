//! Scrubbing (README, "Checking for bit rot"): a repository written by the real `restic`,
//! then damaged three ways on disk: one pack with one bit flipped, one index file truncated,
//! one snapshot file replaced by a FIFO (unreadable: an open for reading would wait for a
//! writer forever). `rest-server scrub` and the background pass must find exactly those three
//! and change nothing.

use std::collections::BTreeMap;
use std::os::unix::fs::{FileTypeExt as _, MetadataExt as _};
use std::path::{Path, PathBuf};
use std::process::Command;
use testkit::*;

const REPO: &str = "alice/laptop";
const STATE_FILE: &str = ".rest-server-scrub-state";

/// A data directory holding one repository backed up by restic: ~24 MiB of random files,
/// several packs. Returns (dir holding everything, data directory).
fn backed_up_repo() -> (TempDir, PathBuf) {
    let dir = TempDir::new("scrub");
    let data = dir.path().join("data");
    let src = dir.path().join("src");
    std::fs::create_dir_all(&src).unwrap();
    for i in 0..3u64 {
        std::fs::write(src.join(format!("big{i}.bin")), random_bytes(8 << 20, i)).unwrap();
    }
    for i in 0..20u64 {
        std::fs::write(
            src.join(format!("f{i}.txt")),
            random_bytes(1000 + i as usize, 100 + i),
        )
        .unwrap();
    }
    let s = Server::start(&["--path", data.to_str().unwrap()]);
    let url = format!("rest:http://{}/{REPO}", s.addr);
    ok(restic(dir.path(), &url, &["init"]), "init");
    ok(
        restic(
            dir.path(),
            &url,
            &["backup", "--quiet", src.to_str().unwrap()],
        ),
        "backup",
    );
    drop(s);
    (dir, data)
}

/// Every entry below `root` (but the scrub state, and the temp file it is written through
/// while the scrub saves it): type, size, mtime and, for regular files, the SHA-256 of the
/// content. A FIFO is never opened.
fn tree_state(root: &Path) -> BTreeMap<PathBuf, String> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).unwrap() {
            let p = e.unwrap().path();
            let m = std::fs::symlink_metadata(&p).unwrap();
            let rel = p.strip_prefix(root).unwrap().to_path_buf();
            if rel.to_string_lossy().starts_with(STATE_FILE) {
                continue;
            }
            let what = if m.is_dir() {
                stack.push(p.clone());
                "dir".to_owned()
            } else if m.file_type().is_fifo() {
                "fifo".to_owned()
            } else {
                sha256_hex(&std::fs::read(&p).unwrap())
            };
            out.insert(
                rel,
                format!("{what} {} {} {:o}", m.len(), m.mtime_nsec(), m.mode()),
            );
        }
    }
    out
}

/// The files of one type directory of the repository.
fn objects(data: &Path, kind: &str) -> Vec<PathBuf> {
    let mut files = Vec::new();
    walk(&data.join(REPO).join(kind), &mut |p| {
        files.push(p.to_owned())
    });
    files.sort();
    files
}

fn name(p: &Path) -> String {
    p.file_name().unwrap().to_string_lossy().into_owned()
}

/// Damages the repository; returns the ids of (pack, index, snapshot).
fn damage(data: &Path) -> (String, String, String) {
    let packs = objects(data, "data");
    assert!(packs.len() >= 3, "expected several packs: {packs:?}");
    let pack = packs
        .iter()
        .max_by_key(|p| std::fs::metadata(p).unwrap().len())
        .unwrap();
    let mut bytes = std::fs::read(pack).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x10;
    std::fs::write(pack, &bytes).unwrap();

    let index = &objects(data, "index")[0];
    let len = std::fs::metadata(index).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(index)
        .unwrap()
        .set_len(len / 2)
        .unwrap();

    let snapshot = &objects(data, "snapshots")[0];
    std::fs::remove_file(snapshot).unwrap();
    let st = Command::new("mkfifo").arg(snapshot).status().unwrap();
    assert!(st.success());
    (name(pack), name(index), name(snapshot))
}

fn count_objects(data: &Path) -> usize {
    ["data", "index", "keys", "snapshots"]
        .iter()
        .map(|k| objects(data, k).len())
        .sum()
}

#[test]
fn scrub_finds_exactly_the_damaged_objects_and_changes_nothing() {
    let (_dir, data) = backed_up_repo();
    let path = data.to_str().unwrap();
    let (code, out, err) = run_cli(&["scrub", "--path", path]);
    assert_eq!(code, 0, "an intact repository: {out}{err}");
    assert!(out.contains("0 damaged"), "{out}");

    let (pack, index, snapshot) = damage(&data);
    let before = tree_state(&data);
    let (code, out, err) = run_cli(&["scrub", "--path", path]);
    assert_eq!(code, 1, "{out}{err}");
    let damaged: Vec<&str> = out.lines().filter(|l| l.starts_with("DAMAGED")).collect();
    assert_eq!(damaged.len(), 3, "{out}");
    for (id, kind, what) in [
        (&pack, "data", "hashes to"),
        (&index, "index", "hashes to"),
        (&snapshot, "snapshots", "FIFO"),
    ] {
        assert!(
            damaged
                .iter()
                .any(|l| l.contains(id.as_str()) && l.contains(kind) && l.contains(what)),
            "{kind} {id} not reported as {what:?}:\n{out}"
        );
    }
    assert!(out.contains("check --read-data"), "{out}");
    assert!(out.contains(&format!("repair packs {pack}")), "{out}");
    assert!(out.contains("repair index"), "{out}");
    let total = count_objects(&data);
    assert!(
        out.contains(&format!("checked {total} objects")),
        "{total}: {out}"
    );

    // The same for scripts, and only the repository asked for.
    let (code, json, _) = run_cli(&["scrub", "--path", path, "--json", REPO]);
    assert_eq!(code, 1);
    assert_eq!(json.matches("\"problem\":").count(), 3, "{json}");
    assert!(json.contains("\"problem\":\"not_a_file\""), "{json}");
    assert!(json.contains(&format!("\"objects\":{total}")), "{json}");
    assert_eq!(
        tree_state(&data),
        before,
        "scrub changed the data directory"
    );

    // Usage errors: exit 2, nothing read.
    assert_eq!(run_cli(&["scrub", "--path", path, "no/such"]).0, 2);
    assert_eq!(run_cli(&["scrub", "--path", path, "--rate", "fast"]).0, 2);
    assert_eq!(run_cli(&["scrub", "--path", "/nonexistent/x"]).0, 2);
}

#[test]
fn rate_limit_holds() {
    let (_dir, data) = backed_up_repo();
    // ~24 MiB at 8 MiB/s: ~3 s, hundreds of 128 KiB reads. The pacer sleeps until the bytes
    // read so far are due, so the average can run ahead only by the last read (0.5 % here).
    // Only the upper bound is asserted: a busy machine may read slower than asked, and a test
    // must not fail on a slow machine.
    let rate = 8u64 << 20;
    let (code, json, err) = run_cli(&[
        "scrub",
        "--path",
        data.to_str().unwrap(),
        "--json",
        "--rate",
        "8MiB/s",
    ]);
    assert_eq!(code, 0, "{json}{err}");
    let field = |f: &str| -> f64 {
        let rest = json.split(&format!("\"{f}\":")).nth(1).unwrap();
        rest.split([',', '}']).next().unwrap().parse().unwrap()
    };
    let (bytes, secs) = (field("bytes_read"), field("seconds"));
    assert!(bytes > 20e6, "{json}");
    let measured = bytes / secs;
    let r = rate as f64;
    assert!(
        measured <= r * 1.02,
        "read at {measured:.0} B/s, limit {r} B/s: {json}"
    );
}

/// A server with `--prometheus` and the background scrub of `data` (`--scrub-every every`,
/// `--scrub-rate rate`), in `dir`.
fn scrubbing_server(dir: TempDir, data: &Path, every: &str, rate: &str) -> Server {
    let path = data.to_str().unwrap();
    let args = [
        "--no-auth",
        "--prometheus",
        "--path",
        path,
        "--scrub-every",
        every,
    ];
    Server::start_in(dir, &[&args[..], &["--scrub-rate", rate]].concat())
}

fn metric(text: &str, line_start: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(line_start))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

#[test]
fn background_scrub_reports_damage_through_metrics_and_log_lines() {
    let (dir, data) = backed_up_repo();
    let (pack, index, snapshot) = damage(&data);
    let before = tree_state(&data);
    let total = count_objects(&data);
    // A pass spread over 2 s: ~12 MB/s for this repository; passes then follow
    // one another, which the checks below allow for.
    let s = scrubbing_server(dir, &data, "2s", "100MiB/s");
    s.wait_log("scrub: pass complete", 120);
    let log = s.log_text();
    let errors: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("scrub: damaged object"))
        .collect();
    assert_eq!(errors.len(), 3, "{log}");
    for id in [&pack, &index, &snapshot] {
        assert!(
            errors
                .iter()
                .any(|l| l.contains("ERROR") && l.contains(id.as_str())),
            "{id}: {log}"
        );
    }
    let m = s.get("/metrics").text();
    assert_eq!(
        metric(
            &m,
            &format!("rest_server_scrub_damaged_objects{{repo=\"{REPO}\"}}")
        ),
        Some(3.0),
        "{m}"
    );
    // At least one whole pass (the next may have begun).
    let checked = metric(&m, "rest_server_scrub_objects_checked_total").unwrap();
    assert!(checked >= total as f64, "{total}: {m}");
    assert!(
        metric(&m, "rest_server_scrub_bytes_checked_total").unwrap() > 20e6,
        "{m}"
    );
    assert!(
        metric(
            &m,
            "rest_server_scrub_last_pass_completed_timestamp_seconds"
        )
        .unwrap()
            > 1e9
    );
    assert_eq!(
        tree_state(&data),
        before,
        "the background scrub changed the data directory"
    );
    // The state file is no repository: it cannot be created or listed as one.
    assert!(data.join(STATE_FILE).is_file());
    assert_eq!(
        s.post(&format!("/{STATE_FILE}/?create=true"), b"").status,
        404
    );

    // After a restart the damage is still reported, from the state file, long before a pass
    // could have read the repository again (at 64 KiB/s that takes minutes).
    let mut s = s;
    s.signal("TERM");
    s.wait_exit(30);
    let dir = std::mem::replace(&mut s.dir, TempDir::new("scrub-unused"));
    drop(s);
    let s = scrubbing_server(dir, &data, "30d", "64KiB/s");
    let series = format!("rest_server_scrub_damaged_objects{{repo=\"{REPO}\"}}");
    wait_until(30, "the saved damage in /metrics", || {
        metric(&s.get("/metrics").text(), &series).is_some()
    });
    assert_eq!(metric(&s.get("/metrics").text(), &series), Some(3.0));

    // The same where people look: the status page (once the start-up walk has listed the
    // repository) and `rest-server status`.
    s.wait_log("Inventory:", 60);
    let page = s.req("GET", "/").header("Accept", "text/html").send();
    assert_eq!(page.status, 200);
    assert!(page.text().contains("3 damaged objects"), "{}", page.text());
    assert!(
        page.text().contains("last complete pass"),
        "{}",
        page.text()
    );
    let path = data.to_str().unwrap();
    let (code, out, err) = run_cli(&["status", "--path", path]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("DAMAGED: 3 objects"), "{out}");
    assert!(out.contains("scrub: last complete pass"), "{out}");
    let (_, json, _) = run_cli(&["status", "--path", path, "--json"]);
    assert!(json.contains("\"scrub_damaged\":3"), "{json}");
}

#[test]
fn background_scrub_resumes_from_its_state_file_after_a_crash() {
    let (dir, data) = backed_up_repo();
    let total = count_objects(&data);
    let args = [
        "--no-auth",
        "--path",
        data.to_str().unwrap(),
        // ~24 MB spread over 10 s: a pass of about 10 s, long enough to be cut short.
        "--scrub-every",
        "10s",
        "--scrub-rate",
        "4MiB/s",
    ];
    // Test-only knob: save the position every 100 ms instead of every minute.
    let start = |dir: TempDir| {
        Server::start_in_env(
            dir,
            &args,
            &[("REST_SERVER_SCRUB_STATE_INTERVAL_MS", "100")],
        )
    };
    let mut s = start(dir);
    let state = data.join(STATE_FILE);
    wait_until(60, "a saved position", || {
        std::fs::read_to_string(&state).is_ok_and(|t| t.contains("position "))
    });
    s.child.kill().unwrap(); // a crash: no chance to save anything more
    s.wait_exit(10);
    let saved = std::fs::read_to_string(&state).unwrap();
    let started = saved
        .lines()
        .find_map(|l| l.strip_prefix("pass_started "))
        .unwrap()
        .to_owned();

    let dir = std::mem::replace(&mut s.dir, TempDir::new("scrub-unused"));
    drop(s);
    let s = start(dir);
    s.wait_log(&format!("resuming the pass started at {started}"), 30);
    s.wait_log("scrub: pass complete", 120);
    let log = s.log_text();
    let checked: usize = log
        .split("scrub: pass complete: ")
        .nth(1)
        .and_then(|t| t.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap();
    assert!(
        checked > 0 && checked < total,
        "the resumed pass checked {checked} of {total} objects: it did not resume"
    );
}

#[test]
fn background_scrub_pauses_while_an_upload_is_written() {
    let (dir, data) = backed_up_repo();
    // ~24 MB spread over 20 s: ~1.2 MB/s, reads of 128 KiB.
    let s = scrubbing_server(dir, &data, "20s", "2MiB/s");
    let bytes = || {
        metric(
            &s.get("/metrics").text(),
            "rest_server_scrub_bytes_checked_total",
        )
        .unwrap()
    };
    wait_until(30, "the scrub reading", || bytes() > 0.0);
    let body = random_bytes(1 << 20, 7);
    let id = sha256_hex(&body);
    let upload = s.start_upload(&format!("/{REPO}/data/{id}"), body.len(), &body[..1000]);
    // A read that had started may finish; after it, nothing while the upload is open.
    // Absence can only be shown over a window: 2 s at ~1.2 MB/s would be ~20 reads.
    let at_pause = bytes() + (128 << 10) as f64;
    let t = std::time::Instant::now();
    while t.elapsed() < std::time::Duration::from_secs(2) {
        let now = bytes();
        assert!(
            now <= at_pause,
            "the scrub read {now} > {at_pause} during an upload"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    drop(upload); // the client goes away: the temp file is removed, the scrub goes on
    wait_until(30, "the scrub reading again", || bytes() > at_pause);
}

#[test]
fn damage_of_a_repository_removed_by_hand_is_no_longer_reported() {
    let (dir, data) = backed_up_repo();
    damage(&data);
    let s = scrubbing_server(dir, &data, "2s", "100MiB/s");
    let series = format!("rest_server_scrub_damaged_objects{{repo=\"{REPO}\"}}");
    wait_until(120, "the damage in /metrics", || {
        metric(&s.get("/metrics").text(), &series) == Some(3.0)
    });
    // The admin deletes the repository; the next complete pass drops its series (and the
    // state file its count), or the bit-rot alert would fire forever.
    std::fs::remove_dir_all(data.join(REPO)).unwrap();
    let passes = || s.log_text().matches("scrub: pass complete").count();
    let before = passes();
    wait_until(120, "two more complete passes", || passes() >= before + 2);
    let m = s.get("/metrics").text();
    assert_eq!(metric(&m, &series), None, "{m}");
    let state = std::fs::read_to_string(data.join(STATE_FILE)).unwrap();
    assert!(!state.contains("damaged "), "{state}");
}
