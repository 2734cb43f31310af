//! docs/metrics.md: `--prometheus` against the real binary. The counters must say exactly what
//! two users did in two repos (names and label values as the Go server, so its Grafana
//! dashboard keeps working), `/metrics` must follow the Go server's auth rules, and
//! `promtool check metrics` must accept the output.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use testkit::*;

type Labels = BTreeMap<String, String>;

/// Parsed exposition: (metric name, labels) -> value.
struct Exposition {
    text: String,
    samples: BTreeMap<(String, Labels), f64>,
}

impl Exposition {
    fn parse(text: &str) -> Exposition {
        let mut samples = BTreeMap::new();
        for line in text
            .lines()
            .filter(|l| !l.starts_with('#') && !l.is_empty())
        {
            let (series, value) = line.rsplit_once(' ').expect("sample line");
            let value: f64 = value
                .parse()
                .unwrap_or_else(|_| panic!("value in {line:?}"));
            let (name, labels) = match series.split_once('{') {
                None => (series.to_owned(), Labels::new()),
                Some((name, rest)) => (name.to_owned(), parse_labels(rest)),
            };
            assert!(
                samples.insert((name, labels), value).is_none(),
                "duplicate series {line:?}"
            );
        }
        Exposition {
            text: text.to_owned(),
            samples,
        }
    }

    fn get(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let labels = labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        self.samples.get(&(name.to_owned(), labels)).copied()
    }

    /// Every series of `name` as (user, repo, type) -> value.
    fn blob_series(&self, name: &str) -> BTreeMap<(String, String, String), f64> {
        self.samples
            .iter()
            .filter(|((n, _), _)| n == name)
            .map(|((_, l), v)| {
                assert_eq!(l.len(), 3, "{name} labels {l:?}");
                (
                    (l["user"].clone(), l["repo"].clone(), l["type"].clone()),
                    *v,
                )
            })
            .collect()
    }
}

/// `repo="a",type="b"}` -> labels, undoing the text format's escapes.
fn parse_labels(s: &str) -> Labels {
    let mut labels = Labels::new();
    let mut chars = s.chars().peekable();
    loop {
        let name: String = chars.by_ref().take_while(|c| *c != '=').collect();
        if name.is_empty() || name == "}" {
            break;
        }
        assert_eq!(chars.next(), Some('"'));
        let mut value = String::new();
        loop {
            match chars.next().expect("unterminated label value") {
                '\\' => match chars.next() {
                    Some('n') => value.push('\n'),
                    Some(c) => value.push(c),
                    None => panic!("dangling escape"),
                },
                '"' => break,
                c => value.push(c),
            }
        }
        labels.insert(name, value);
        match chars.next() {
            Some(',') => continue,
            Some('}') | None => break,
            Some(c) => panic!("unexpected {c:?} in labels {s:?}"),
        }
    }
    labels
}

/// An htpasswd file with bcrypt entries made by Apache's own tool.
fn htpasswd(dir: &Path, users: &[(&str, &str)]) -> String {
    let file = dir.join("htpasswd");
    for (i, (user, password)) in users.iter().enumerate() {
        let create = if i == 0 { "-cbB" } else { "-bB" };
        let out = Command::new("htpasswd")
            .args([create, "-C", "5"])
            .arg(&file)
            .args([user, password])
            .output()
            .expect("htpasswd (Debian package apache2-utils) must be installed for this test");
        assert!(out.status.success(), "htpasswd: {out:?}");
    }
    file.to_string_lossy().into_owned()
}

/// Fails with a clear message if promtool is missing (CI installs Debian's `prometheus`).
fn promtool_check(text: &str) {
    let mut child = match Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
    {
        Ok(c) => c,
        Err(e) => panic!(
            "promtool not found ({e}): install the Debian package `prometheus` (.ci/run does) to run this test"
        ),
    };
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics failed:\n{}{}\n--- output was:\n{text}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn scrape(s: &Server, creds: Option<(&str, &str)>) -> Exposition {
    let mut req = s.req("GET", "/metrics");
    if let Some((u, p)) = creds {
        req = req.basic(u, p);
    }
    let r = req.send();
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        r.header("content-type"),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    Exposition::parse(&r.text())
}

fn id(data: &[u8]) -> String {
    sha256_hex(data)
}

#[test]
fn counters_report_exactly_what_two_users_did_in_two_repos() {
    let dir = TempDir::new("metrics-two-users");
    let pw = htpasswd(dir.path(), &[("alice", "a-secret"), ("bob", "b-secret")]);
    let s = Server::start_in(dir, &["--prometheus", "--htpasswd-file", &pw]);
    let alice = |r: Req<'_>| r.basic("alice", "a-secret").send();
    let bob = |r: Req<'_>| r.basic("bob", "b-secret").send();

    // alice: repo alice/laptop, plus the root repo.
    assert_eq!(
        alice(s.req("POST", "/alice/laptop/?create=true")).status,
        200
    );
    assert_eq!(alice(s.req("POST", "/?create=true")).status, 200);
    let (a, b, k, i) = (
        random_bytes(1000, 1),
        random_bytes(2000, 2),
        random_bytes(300, 3),
        random_bytes(40, 4),
    );
    let up = |path: String, body: &[u8]| alice(s.req("POST", &path).body(body)).status;
    assert_eq!(up(format!("/alice/laptop/data/{}", id(&a)), &a), 200);
    assert_eq!(up(format!("/alice/laptop/data/{}", id(&b)), &b), 200);
    assert_eq!(up(format!("/alice/laptop/keys/{}", id(&k)), &k), 200);
    assert_eq!(up(format!("/index/{}", id(&i)), &i), 200);
    // The config is not a blob: never counted, as in the Go server.
    assert_eq!(up("/alice/laptop/config".into(), b"config-bytes"), 200);
    assert_eq!(alice(s.req("GET", "/alice/laptop/config")).status, 200);
    assert_eq!(alice(s.req("DELETE", "/alice/laptop/config")).status, 200);
    // Refused uploads: a different body for an existing id (403) and a wrong hash (400).
    assert_eq!(up(format!("/alice/laptop/data/{}", id(&a)), b"other"), 403);
    assert_eq!(up(format!("/alice/laptop/data/{}", id(&k)), b"not k"), 400);

    // Reads: full, and two ranges; bytes are what was sent, not the file size.
    let get = |path: String, range: Option<&str>| {
        let mut r = s.req("GET", &path);
        if let Some(range) = range {
            r = r.header("Range", range);
        }
        alice(r)
    };
    let da = format!("/alice/laptop/data/{}", id(&a));
    let db = format!("/alice/laptop/data/{}", id(&b));
    assert_eq!(get(da.clone(), None).body, a);
    assert_eq!(get(da.clone(), Some("bytes=0-99")).body, &a[..100]);
    assert_eq!(get(db.clone(), Some("bytes=1500-")).body, &b[1500..]);
    // Not reads of a blob: HEAD, a missing object, an unsatisfiable range.
    assert_eq!(alice(s.req("HEAD", &da)).status, 200);
    assert_eq!(
        get(format!("/alice/laptop/data/{}", id(b"none")), None).status,
        404
    );
    assert_eq!(get(da.clone(), Some("bytes=5000-")).status, 416);
    // Delete: counted once with the file's size; deleting it again (200) removes nothing.
    assert_eq!(alice(s.req("DELETE", &db)).status, 200);
    assert_eq!(alice(s.req("DELETE", &db)).status, 200);

    // bob: one-segment repo "bob".
    assert_eq!(bob(s.req("POST", "/bob/?create=true")).status, 200);
    let (l, sn) = (random_bytes(50, 5), random_bytes(70, 6));
    let lp = format!("/bob/locks/{}", id(&l));
    let sp = format!("/bob/snapshots/{}", id(&sn));
    assert_eq!(bob(s.req("POST", &lp).body(&l)).status, 200);
    assert_eq!(bob(s.req("POST", &sp).body(&sn)).status, 200);
    assert_eq!(bob(s.req("GET", &sp).header("Range", "bytes=0-")).body, sn);
    assert_eq!(bob(s.req("DELETE", &lp)).status, 200);

    // Auth on /metrics: none or wrong credentials are 401; any user may read it.
    let r = s.get("/metrics");
    assert_eq!(r.status, 401);
    assert!(r.header("www-authenticate").is_some());
    assert_eq!(
        s.req("GET", "/metrics")
            .basic("alice", "wrong")
            .send()
            .status,
        401
    );
    let m = scrape(&s, Some(("alice", "a-secret")));

    let key = |u: &str, r: &str, t: &str| (u.to_owned(), r.to_owned(), t.to_owned());
    let expect = |name: &str, want: &[((String, String, String), f64)]| {
        let want: BTreeMap<_, _> = want.iter().cloned().collect();
        assert_eq!(m.blob_series(name), want, "{name} in\n{}", m.text);
    };
    expect(
        "rest_server_blob_write_total",
        &[
            (key("alice", "alice/laptop", "data"), 2.0),
            (key("alice", "alice/laptop", "keys"), 1.0),
            (key("alice", "", "index"), 1.0),
            (key("bob", "bob", "locks"), 1.0),
            (key("bob", "bob", "snapshots"), 1.0),
        ],
    );
    expect(
        "rest_server_blob_write_bytes_total",
        &[
            (key("alice", "alice/laptop", "data"), 3000.0),
            (key("alice", "alice/laptop", "keys"), 300.0),
            (key("alice", "", "index"), 40.0),
            (key("bob", "bob", "locks"), 50.0),
            (key("bob", "bob", "snapshots"), 70.0),
        ],
    );
    expect(
        "rest_server_blob_read_total",
        &[
            (key("alice", "alice/laptop", "data"), 3.0),
            (key("bob", "bob", "snapshots"), 1.0),
        ],
    );
    expect(
        "rest_server_blob_read_bytes_total",
        &[
            (key("alice", "alice/laptop", "data"), 1000.0 + 100.0 + 500.0),
            (key("bob", "bob", "snapshots"), 70.0),
        ],
    );
    expect(
        "rest_server_blob_delete_total",
        &[
            (key("alice", "alice/laptop", "data"), 1.0),
            (key("bob", "bob", "locks"), 1.0),
        ],
    );
    expect(
        "rest_server_blob_delete_bytes_total",
        &[
            (key("alice", "alice/laptop", "data"), 2000.0),
            (key("bob", "bob", "locks"), 50.0),
        ],
    );
    let rejected = |reason: &str| m.get("rest_server_upload_rejected_total", &[("reason", reason)]);
    assert_eq!(rejected("exists"), Some(1.0));
    assert_eq!(rejected("hash_mismatch"), Some(1.0));
    assert_eq!(rejected("quota"), Some(0.0));
    assert!(!m.text.contains("config"), "config is never counted");
    assert!(
        !m.text.contains("rest_server_quota_"),
        "no quota gauges without --max-size"
    );
    promtool_check(&m.text);
}

#[test]
fn no_auth_counts_under_an_empty_user_and_process_gauges_are_sane() {
    let s = Server::start(&["--prometheus"]);
    s.create_repo("");
    let d = random_bytes(123, 7);
    assert_eq!(s.post(&format!("/data/{}", id(&d)), &d).status, 200);
    // With --no-auth there is no user to authenticate: /metrics is open.
    let m = scrape(&s, None);
    let labels = [("repo", ""), ("type", "data"), ("user", "")];
    assert_eq!(m.get("rest_server_blob_write_total", &labels), Some(1.0));
    assert_eq!(
        m.get("rest_server_blob_write_bytes_total", &labels),
        Some(123.0)
    );

    let gauge = |name: &str| m.get(name, &[]).unwrap_or_else(|| panic!("{name} missing"));
    assert!(gauge("process_resident_memory_bytes") > 1e5);
    assert!(gauge("process_virtual_memory_bytes") >= gauge("process_resident_memory_bytes"));
    assert!(gauge("process_open_fds") >= 3.0);
    assert!(gauge("process_max_fds") >= gauge("process_open_fds"));
    assert!(gauge("process_cpu_seconds_total") >= 0.0);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    let start = gauge("process_start_time_seconds");
    // /proc/stat's boot time has a resolution of one second.
    assert!(
        start > now - 120.0 && start < now + 2.0,
        "start {start}, now {now}"
    );
    for family in [
        "process_resident_memory_bytes gauge",
        "process_cpu_seconds_total counter",
        "rest_server_blob_write_total counter",
    ] {
        assert!(m.text.contains(&format!("# TYPE {family}")), "{family}");
    }
    promtool_check(&m.text);
}

#[test]
fn prometheus_no_auth_opens_only_metrics() {
    let dir = TempDir::new("metrics-open");
    let pw = htpasswd(dir.path(), &[("alice", "a-secret")]);
    let s = Server::start_in(
        dir,
        &[
            "--prometheus",
            "--prometheus-no-auth",
            "--htpasswd-file",
            &pw,
        ],
    );
    scrape(&s, None);
    assert_eq!(
        s.post("/alice/?create=true", b"").status,
        401,
        "repos still need auth"
    );
}

#[test]
fn private_repos_let_only_the_user_metrics_read_metrics() {
    let dir = TempDir::new("metrics-private");
    let pw = htpasswd(
        dir.path(),
        &[("alice", "a-secret"), ("metrics", "m-secret")],
    );
    let s = Server::start_in(
        dir,
        &["--prometheus", "--private-repos", "--htpasswd-file", &pw],
    );
    assert_eq!(s.get("/metrics").status, 401);
    let r = s.req("GET", "/metrics").basic("alice", "a-secret").send();
    assert_eq!(
        r.status, 401,
        "another user's counters are not alice's business"
    );
    assert!(!r.text().contains("rest_server"));
    // alice's own repo works, and her upload shows up for the metrics user.
    let d = random_bytes(10, 8);
    let alice = |r: Req<'_>| r.basic("alice", "a-secret").send().status;
    assert_eq!(alice(s.req("POST", "/alice/?create=true")), 200);
    assert_eq!(
        alice(s.req("POST", &format!("/alice/data/{}", id(&d))).body(&d)),
        200
    );
    let m = scrape(&s, Some(("metrics", "m-secret")));
    let labels = [("repo", "alice"), ("type", "data"), ("user", "alice")];
    assert_eq!(
        m.get("rest_server_blob_write_bytes_total", &labels),
        Some(10.0)
    );

    // --prometheus-no-auth wins over --private-repos, as in Go.
    let dir = TempDir::new("metrics-private-open");
    let pw = htpasswd(dir.path(), &[("alice", "a-secret")]);
    let s = Server::start_in(
        dir,
        &[
            "--prometheus",
            "--prometheus-no-auth",
            "--private-repos",
            "--htpasswd-file",
            &pw,
        ],
    );
    scrape(&s, None);

    // --no-auth --private-repos: there is no user "metrics", so nobody may read it (as Go).
    let s = Server::start(&["--prometheus", "--private-repos"]);
    assert_eq!(s.get("/metrics").status, 401);
    s.wait_log("/metrics answers 401 to everyone", 5);
}

#[test]
fn without_prometheus_metrics_is_not_served() {
    // /metrics is then an ordinary repo path named "metrics" (as in Go): GET on it is 405.
    let s = Server::start(&[]);
    let r = s.get("/metrics");
    assert_eq!(r.status, 405);
    assert!(!r.text().contains("rest_server"), "{}", r.text());
    // --prometheus-no-auth alone turns nothing on.
    let s = Server::start(&["--prometheus-no-auth"]);
    assert_eq!(s.get("/metrics").status, 405);
    s.wait_log("--prometheus-no-auth has no effect", 5);
}

#[test]
fn quota_gauges_and_quota_rejections() {
    let s = Server::start(&["--prometheus", "--max-size", "1000"]);
    s.wait_log("bytes used (counted in", 10);
    s.create_repo("r");
    let d = random_bytes(600, 9);
    assert_eq!(s.post(&format!("/r/data/{}", id(&d)), &d).status, 200);
    let big = random_bytes(600, 10);
    assert_eq!(s.post(&format!("/r/data/{}", id(&big)), &big).status, 507);
    let m = scrape(&s, None);
    assert_eq!(m.get("rest_server_quota_used_bytes", &[]), Some(600.0));
    assert_eq!(m.get("rest_server_quota_limit_bytes", &[]), Some(1000.0));
    assert_eq!(
        m.get("rest_server_upload_rejected_total", &[("reason", "quota")]),
        Some(1.0)
    );
    promtool_check(&m.text);
}
