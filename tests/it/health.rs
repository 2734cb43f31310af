//! Is every backup fresh? The per-repository inventory as `/metrics`, `rest-server status` and
//! the status page show it, checked against what the real `restic` (Debian package `restic`)
//! says about its own snapshots; the alert rule of docs/metrics.md run by `promtool test rules`.

use std::io::Write as _;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, SystemTime};
use testkit::*;

/// The `"time"` values of `restic snapshots --json`, as Unix seconds.
fn restic_snapshot_times(dir: &Path, url: &str) -> Vec<u64> {
    let out = restic_ok(dir, url, &["snapshots", "--json"]);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.split("\"time\":\"")
        .skip(1)
        .map(|rest| unix_time(&rest[..19]))
        .collect()
}

/// "2026-12-06T17:20:01" (UTC) -> Unix seconds.
fn unix_time(s: &str) -> u64 {
    let n = |a: usize, b: usize| -> i64 { s[a..b].parse().unwrap() };
    let (y, m, d) = (n(0, 4), n(5, 7), n(8, 10));
    // Days from civil (Howard Hinnant's algorithm).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    (days * 86_400 + n(11, 13) * 3600 + n(14, 16) * 60 + n(17, 19)) as u64
}

/// One sample of `/metrics`: `name{labels}` exactly as written.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

fn metrics(s: &Server) -> String {
    let r = s.get("/metrics");
    assert_eq!(r.status, 200, "{}", r.text());
    r.text()
}

fn page(s: &Server, creds: Option<(&str, &str)>) -> Resp {
    let mut req = s.req("GET", "/").header("Accept", "text/html,*/*;q=0.8");
    if let Some((u, p)) = creds {
        req = req.basic(u, p);
    }
    req.send()
}

/// A number field of `rest-server status --json` for `repo`.
fn status_field(json: &str, repo: &str, field: &str) -> Option<u64> {
    let obj = json.split(&format!("{{\"repo\":\"{repo}\"")).nth(1)?;
    let obj = obj.split("\n").next()?;
    let v = obj.split(&format!("\"{field}\":")).nth(1)?;
    v.split([',', '}']).next()?.parse().ok()
}

fn promtool(args: &[&str], stdin: Option<&str>) -> String {
    let mut child = Command::new("promtool")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool (Debian package `prometheus`) must be installed for this test");
    let input = child.stdin.take().unwrap();
    if let Some(text) = stdin {
        let mut input = input;
        input.write_all(text.as_bytes()).unwrap();
    }
    let out = child.wait_with_output().unwrap();
    let text = output_text(&out);
    assert!(out.status.success(), "promtool {args:?} failed:\n{text}");
    text
}

/// Makes a repository by hand (as if copied in): a config and one snapshot `age` old.
fn repo_by_hand(data: &Path, name: &str, age: Duration) {
    let dir = data.join(name);
    for kind in ["data", "index", "keys", "locks", "snapshots"] {
        std::fs::create_dir_all(dir.join(kind)).unwrap();
    }
    std::fs::write(dir.join("config"), b"x").unwrap();
    let body = format!("snapshot of {name}");
    let f = dir.join("snapshots").join(sha256_hex(body.as_bytes()));
    std::fs::write(&f, &body).unwrap();
    let file = std::fs::File::options().write(true).open(&f).unwrap();
    file.set_modified(SystemTime::now() - age).unwrap();
}

#[test]
fn restic_snapshots_match_metrics_status_and_page_then_forget_prune_and_a_copied_repo() {
    let dir = TempDir::new("health");
    let s = Server::start(&["--prometheus"]);
    // Uploads made while the start-up walk runs may be counted once or not at all until the
    // next walk (docs/metrics.md); counts are asserted below, so the walk goes first.
    s.wait_log("Inventory:", 60);
    let url = format!("rest:http://{}/alice/laptop", s.addr);
    let src = dir.path().join("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("a.bin"), random_bytes(300_000, 1)).unwrap();
    restic_ok(dir.path(), &url, &["init"]);
    let backup = ["backup", "--quiet", src.to_str().unwrap()];
    restic_ok(dir.path(), &url, &backup);
    std::fs::write(src.join("b.bin"), random_bytes(200_000, 2)).unwrap();
    restic_ok(dir.path(), &url, &backup);

    let times = restic_snapshot_times(dir.path(), &url);
    assert_eq!(times.len(), 2);
    let newest = *times.iter().max().unwrap();
    // The snapshot file is written when the backup ends; restic's time is when it began.
    let close = |t: f64| (t - newest as f64).abs() <= 120.0;

    let m = metrics(&s);
    let repo = "{repo=\"alice/laptop\"}";
    let snaps = sample(&m, &format!("rest_server_repo_snapshots{repo}"));
    assert_eq!(snaps, Some(2.0), "{m}");
    let last = sample(
        &m,
        &format!("rest_server_repo_last_snapshot_timestamp_seconds{repo}"),
    )
    .unwrap();
    assert!(close(last), "{last} vs restic's {newest}");
    let data_objects = "rest_server_repo_objects{repo=\"alice/laptop\",type=\"data\"}";
    assert!(sample(&m, data_objects).unwrap() >= 1.0, "{m}");
    let data_bytes = "rest_server_repo_bytes{repo=\"alice/laptop\",type=\"data\"}";
    assert!(sample(&m, data_bytes).unwrap() > 100_000.0, "{m}");
    promtool(&["check", "metrics"], Some(&m));

    let data = s.data.to_str().unwrap().to_owned();
    let (code, json, err) = run_cli(&["status", "--path", &data, "--json"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(status_field(&json, "/alice/laptop", "snapshots"), Some(2));
    let t = status_field(&json, "/alice/laptop", "newest_snapshot").unwrap();
    assert!(close(t as f64), "{json}");
    // The offline walk and the server's running counts agree.
    assert_eq!(
        status_field(&json, "/alice/laptop", "newest_snapshot"),
        Some(last as u64),
        "{json}\n{m}"
    );
    let (code, lines, _) = run_cli(&["status", "--path", &data]);
    assert_eq!(code, 0);
    assert!(
        lines.contains("/alice/laptop") && lines.contains("2 snapshots"),
        "{lines}"
    );

    let p = page(&s, None);
    assert_eq!(p.status, 200);
    assert_eq!(p.header("content-type"), Some("text/html; charset=utf-8"));
    let html = p.text();
    assert!(html.len() < 20 * 1024, "{} bytes", html.len());
    assert!(
        html.contains("/alice/laptop") && html.contains("2 snapshots"),
        "{html}"
    );
    assert!(html.contains("class=\"age fresh\""), "{html}");

    restic_ok(dir.path(), &url, &["forget", "--keep-last", "1", "--prune"]);
    assert_eq!(restic_snapshot_times(dir.path(), &url).len(), 1);
    let m = metrics(&s);
    assert_eq!(
        sample(&m, &format!("rest_server_repo_snapshots{repo}")),
        Some(1.0)
    );
    let (_, json, _) = run_cli(&["status", "--path", &data, "--json"]);
    assert_eq!(status_field(&json, "/alice/laptop", "snapshots"), Some(1));
    assert!(page(&s, None).text().contains("1 snapshot "));

    // Copied in by hand: unknown until SIGHUP. Names are escaped on the page.
    repo_by_hand(&s.data, "old", Duration::from_secs(10 * 86_400));
    repo_by_hand(&s.data, "x<b>y", Duration::from_secs(60));
    assert!(!metrics(&s).contains("repo=\"old\""));
    s.signal("HUP");
    wait_until(20, "the copied repository in /metrics", || {
        metrics(&s).contains("rest_server_repo_snapshots{repo=\"old\"} 1")
    });
    let html = page(&s, None).text();
    assert!(
        html.contains("/x&lt;b&gt;y") && !html.contains("x<b>"),
        "{html}"
    );
    assert!(
        html.contains("10 days ago") && html.contains("age stale"),
        "{html}"
    );

    // --stale: exit 1 naming the stale repository only.
    let (code, _, err) = run_cli(&["status", "--path", &data, "--stale", "26h"]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("/old (10 days ago)") && !err.contains("laptop"),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1, "{err}");
    let (code, _, err) = run_cli(&["status", "--path", &data, "--stale", "11d"]);
    assert_eq!(code, 0, "{err}");
}

#[test]
fn the_page_shows_only_repositories_the_user_may_read() {
    let dir = TempDir::new("health-auth");
    let file = dir.path().join("htpasswd");
    for (i, (user, pw)) in [("alice", "a-pw"), ("bob", "b-pw")].iter().enumerate() {
        let create = if i == 0 { "-cbB" } else { "-bB" };
        let out = Command::new("htpasswd")
            .args([create, "-C", "5"])
            .arg(&file)
            .args([user, pw])
            .output()
            .expect("htpasswd (Debian package apache2-utils) must be installed");
        assert!(out.status.success());
    }
    let access = dir.path().join("access");
    std::fs::write(
        &access,
        "[permissions]\nalice/** = alice:w\nbob/** = bob:w\nshared/** = alice:r, bob:w\n",
    )
    .unwrap();
    let htpasswd = file.to_str().unwrap();
    for extra in [
        vec!["--private-repos"],
        vec!["--access-file", access.to_str().unwrap()],
    ] {
        let mut args = vec!["--htpasswd-file", htpasswd];
        args.extend(extra.iter().copied());
        let s = Server::start_raw(&args);
        for (user, pw, repo) in [
            ("alice", "a-pw", "/alice/laptop/"),
            ("bob", "b-pw", "/bob/secret-name/"),
        ] {
            let r = s
                .req("POST", &format!("{repo}?create=true"))
                .basic(user, pw)
                .send();
            assert_eq!(r.status, 200, "{extra:?}");
        }
        repo_by_hand(&s.data, "shared/docs", Duration::from_secs(60));
        s.signal("HUP");
        s.wait_log("Inventory: 3 repositories", 20);
        let alice = page(&s, Some(("alice", "a-pw")));
        assert_eq!(alice.status, 200);
        let html = alice.text();
        assert!(html.contains("/alice/laptop"), "{extra:?}: {html}");
        assert!(!html.contains("secret-name"), "{extra:?}: {html}");
        assert_eq!(html.contains("shared/docs"), extra[0] != "--private-repos");
        // No credentials: a browser is asked for them.
        let anon = page(&s, None);
        assert_eq!(anon.status, 401);
        assert!(anon.header("www-authenticate").is_some());
        assert!(!anon.text().contains("alice"));
    }
}

#[test]
fn no_status_page_and_no_repo_metrics() {
    let plain = Server::start(&["--prometheus"]);
    plain.create_repo("r");
    let before = plain.get("/");
    assert_ne!(page(&plain, None).status, before.status);

    let s = Server::start(&["--prometheus", "--no-status-page", "--no-repo-metrics"]);
    s.create_repo("r");
    let p = page(&s, None);
    let g = s.get("/");
    assert_eq!((p.status, p.text()), (g.status, g.text()));
    assert_eq!(p.status, before.status);
    assert!(!p.text().contains("<html"));
    let m = metrics(&s);
    assert!(!m.contains("rest_server_repo_"), "{m}");
    assert!(metrics(&plain).contains("rest_server_repo_objects{repo=\"r\",type=\"data\"} 0"));
    // A retry of a stored object (its first 200 lost) is answered 200 but counted once; a
    // delete of what is not there counts nothing.
    let body = b"index body";
    let path = format!("/r/index/{}", sha256_hex(body));
    assert_eq!(plain.post(&path, body).status, 200);
    assert_eq!(plain.post(&path, body).status, 200);
    let objects = "rest_server_repo_objects{repo=\"r\",type=\"index\"}";
    let bytes = "rest_server_repo_bytes{repo=\"r\",type=\"index\"}";
    let m = metrics(&plain);
    assert_eq!(
        (sample(&m, objects), sample(&m, bytes)),
        (Some(1.0), Some(10.0)),
        "{m}"
    );
    assert_eq!(plain.delete(&path).status, 200);
    assert_eq!(plain.delete(&path).status, 200);
    let m = metrics(&plain);
    assert_eq!(
        (sample(&m, objects), sample(&m, bytes)),
        (Some(0.0), Some(0.0)),
        "{m}"
    );
}

#[test]
fn status_command_line() {
    let d = TempDir::new("health-cli");
    std::fs::create_dir_all(d.path()).unwrap();
    let path = d.path().to_str().unwrap();
    for bad in [
        vec!["status", "--bogus"],
        vec!["status", "--path", path, "--stale", "soon"],
        vec!["status", "--path", path, "extra"],
        vec!["status", "--max-size", "-5"],
    ] {
        let (code, out, err) = run_cli(&bad);
        assert_eq!(code, 2, "{bad:?}: {err}");
        assert_eq!(err.lines().count(), 1, "{bad:?}: {err}");
        assert!(out.is_empty());
    }
    let (code, out, _) = run_cli(&["status", "--path", path]);
    assert_eq!((code, out.as_str()), (0, "no repositories\n"));
    // A repository without any snapshot is stale too; nothing is written.
    std::fs::create_dir_all(d.path().join("empty/snapshots")).unwrap();
    let mut before = Vec::new();
    walk(d.path(), &mut |p| before.push(p.to_owned()));
    let (code, _, err) = run_cli(&["status", "--path", path, "--stale", "1d", "--json"]);
    assert_eq!(code, 1);
    assert!(err.contains("/empty (no snapshot)"), "{err}");
    let mut after = Vec::new();
    walk(d.path(), &mut |p| after.push(p.to_owned()));
    assert_eq!(before, after);
    // Quota use is counted as the server counts it: every file, the config too (1 + 16 + 4
    // bytes of the repository below, plus the snapshot-less one's nothing), so 21 of 100.
    std::fs::create_dir_all(d.path().join("r/snapshots")).unwrap();
    std::fs::write(d.path().join("r/config"), b"x").unwrap();
    std::fs::write(d.path().join("r/snapshots").join("a".repeat(64)), [0u8; 16]).unwrap();
    std::fs::write(d.path().join("r/notes.txt"), b"abcd").unwrap();
    let (code, out, err) = run_cli(&["status", "--path", path, "--max-size", "100"]);
    assert_eq!(code, 0, "{err}");
    let line = out.lines().find(|l| l.starts_with("/r ")).expect(&out);
    assert!(line.contains("quota 21% of --max-size"), "{out}");
    let (code, out, _) = run_cli(&["status", "--help"]);
    assert_eq!(code, 0);
    assert!(out.contains("--stale AGE"));
}

#[test]
fn the_alert_rule_in_the_docs_fires_on_our_output() {
    let doc =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/metrics.md")).unwrap();
    let rules = doc
        .split("```yaml\ngroups:")
        .nth(1)
        .and_then(|r| r.split("```").next())
        .expect("docs/metrics.md has the alert rules");
    let d = TempDir::new("health-rules");
    std::fs::create_dir_all(d.path()).unwrap();
    std::fs::write(d.path().join("rules.yml"), format!("groups:{rules}")).unwrap();
    promtool(
        &[
            "check",
            "rules",
            d.path().join("rules.yml").to_str().unwrap(),
        ],
        None,
    );

    // Our real series: one repository with a snapshot now.
    let s = Server::start(&["--prometheus"]);
    s.create_repo("alice/laptop");
    let body = b"snapshot";
    let r = s.post(
        &format!("/alice/laptop/snapshots/{}", sha256_hex(body)),
        body,
    );
    assert_eq!(r.status, 200);
    let m = metrics(&s);
    let line = m
        .lines()
        .find(|l| l.starts_with("rest_server_repo_last_snapshot_timestamp_seconds{"))
        .expect("a snapshot time series");
    let (series, value) = line.rsplit_once(' ').unwrap();
    let value: f64 = value.parse().unwrap();
    assert!(value > 1.7e9, "{line}");
    // promtool's clock starts at 0: a snapshot at 0 is 27 h old at 27 h and alerts; the same
    // series one hour before the evaluation does not.
    let test = format!(
        r#"rule_files: [rules.yml]
evaluation_interval: 1m
tests:
  - interval: 1m
    input_series:
      - series: '{series}'
        values: '0x1700'
    alert_rule_test:
      - eval_time: 27h
        alertname: ResticBackupStale
        exp_alerts:
          - exp_labels: {{severity: warning, repo: alice/laptop}}
            exp_annotations:
              summary: "No restic snapshot in 26 h for repository /alice/laptop"
              description: "The newest snapshot of /alice/laptop on  is 1d 3h 0m 0s old."
  - interval: 1m
    input_series:
      - series: '{series}'
        values: '93600x1700'
    alert_rule_test:
      - eval_time: 27h
        alertname: ResticBackupStale
        exp_alerts: []
"#
    );
    std::fs::write(d.path().join("test.yml"), test).unwrap();
    promtool(
        &["test", "rules", d.path().join("test.yml").to_str().unwrap()],
        None,
    );
}
