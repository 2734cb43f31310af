//! docs/access.md against the real binary: `--access-file` rights for every operation, 403 vs 401,
//! quotas per first path segment under concurrent uploads, reload (mtime and SIGHUP), a broken
//! file refused at start-up and kept out on reload, `rest-server access check`, and the
//! per-segment metrics.

use std::io::{BufReader, Write};
use std::path::PathBuf;
use testkit::*;

/// The example of the issue and README.
const EXAMPLE: &str = "\
[permissions]
# <repo pattern> = <user>:<rights>, ...   first matching pattern wins; no match: no access
alice/**   = alice:w, monitor:r
laptops/*  = *:a
**         = admin:w

[quotas]
alice = 50GiB
*     = 10GiB
";

const USERS: [&str; 5] = ["alice", "monitor", "admin", "lap1", "eve"];

/// Everyone's password is their name with a `!`.
fn password(user: &str) -> String {
    format!("{user}!")
}

/// An htpasswd file with `{SHA}` lines (fast to check) for `USERS`.
fn htpasswd_text() -> String {
    use sha1::{Digest, Sha1};
    USERS
        .iter()
        .map(|u| {
            format!(
                "{u}:{{SHA}}{}\n",
                b64(&Sha1::digest(password(u).as_bytes()))
            )
        })
        .collect()
}

/// A server with `EXAMPLE`-like rules in `<dir>/access` and the users above.
fn start(rules: &str, extra: &[&str]) -> (Server, PathBuf) {
    start_env(rules, extra, &[])
}

/// As `start`, with environment variables for the server.
fn start_env(rules: &str, extra: &[&str], env: &[(&str, &str)]) -> (Server, PathBuf) {
    let dir = TempDir::new("access");
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(data.join(".htpasswd"), htpasswd_text()).unwrap();
    let file = dir.path().join("access");
    std::fs::write(&file, rules).unwrap();
    let mut args = vec!["--access-file", file.to_str().unwrap()];
    args.extend_from_slice(extra);
    let s = Server::start_in_env(dir, &args, env);
    (s, file)
}

fn as_user(s: &Server, user: &str, method: &str, path: &str, body: &[u8]) -> u16 {
    s.req(method, path)
        .basic(user, &password(user))
        .body(body)
        .send()
        .status
}

/// A fresh object body and its path in `repo`.
fn object(repo: &str, kind: &str, seed: u64) -> (Vec<u8>, String) {
    let body = random_bytes(200, seed);
    let path = format!("/{repo}/{kind}/{}", sha256_hex(&body));
    (body, path)
}

/// What `user` can do to `repo`, tried for real: read, lock, upload, delete data, delete
/// config. `owner` is a user with `w` (or at least `a`) to prepare objects.
#[derive(Debug, PartialEq, Eq)]
struct Can {
    read: u16,
    lock: u16,
    unlock: u16,
    upload: u16,
    delete_data: u16,
}

fn try_all(s: &Server, user: &str, owner: &str, repo: &str, seed: u64) -> Can {
    // A data object and a lock the owner put there.
    let (body, data) = object(repo, "data", seed);
    assert_eq!(
        as_user(s, owner, "POST", &data, &body),
        200,
        "{owner} prepares {data}"
    );
    let (lock_body, lock) = object(repo, "locks", seed + 1);
    let read = as_user(s, user, "GET", &format!("/{repo}/config"), b"");
    let lock_status = as_user(s, user, "POST", &lock, &lock_body);
    if lock_status != 200 {
        assert_eq!(as_user(s, owner, "POST", &lock, &lock_body), 200);
    }
    let unlock = as_user(s, user, "DELETE", &lock, b"");
    let (new_body, new) = object(repo, "data", seed + 2);
    let upload = as_user(s, user, "POST", &new, &new_body);
    let delete_data = as_user(s, user, "DELETE", &data, b"");
    Can {
        read,
        lock: lock_status,
        unlock,
        upload,
        delete_data,
    }
}

const W: Can = Can {
    read: 200,
    lock: 200,
    unlock: 200,
    upload: 200,
    delete_data: 200,
};
const A: Can = Can {
    delete_data: 403,
    ..W
};
const R: Can = Can { upload: 403, ..A };
const NONE: Can = Can {
    read: 403,
    lock: 403,
    unlock: 403,
    upload: 403,
    delete_data: 403,
};

#[test]
fn every_right_on_every_operation() {
    let (s, _) = start(EXAMPLE, &[]);
    // Creating a repository needs `a`.
    let create =
        |user: &str, repo: &str| as_user(&s, user, "POST", &format!("/{repo}/?create=true"), b"");
    assert_eq!(create("monitor", "alice/main"), 403);
    assert_eq!(
        create("admin", "alice/main"),
        403,
        "alice/** names no admin"
    );
    assert_eq!(create("alice", "alice/main"), 200);
    assert_eq!(create("lap1", "laptops/lap1"), 200);
    assert_eq!(create("alice", "shared"), 403);
    assert_eq!(create("admin", "shared"), 200);
    for (repo, user) in [
        ("alice/main", "alice"),
        ("laptops/lap1", "lap1"),
        ("shared", "admin"),
    ] {
        let path = format!("/{repo}/config");
        assert_eq!(as_user(&s, user, "POST", &path, b"cfg"), 200, "{path}");
    }

    let mut seed = 0;
    let mut check = |user: &str, owner: &str, repo: &str, want: Can| {
        seed += 10;
        let got = try_all(&s, user, owner, repo, seed);
        assert_eq!(got, want, "{user} on {repo}");
    };
    check("alice", "alice", "alice/main", W);
    check("monitor", "alice", "alice/main", R);
    check("admin", "alice", "alice/main", NONE);
    check("eve", "alice", "alice/main", NONE);
    for user in USERS {
        check(user, "lap1", "laptops/lap1", A);
    }
    check("admin", "admin", "shared", W);
    check("alice", "admin", "shared", NONE);

    // Deleting the config needs `w`.
    let del = |user: &str, repo: &str| as_user(&s, user, "DELETE", &format!("/{repo}/config"), b"");
    assert_eq!(del("monitor", "alice/main"), 403);
    assert_eq!(del("lap1", "laptops/lap1"), 403);
    assert_eq!(del("alice", "alice/main"), 200);

    // 401, never 403, without valid credentials: whatever the rules say.
    for req in [
        s.req("GET", "/alice/main/keys/"),
        s.req("GET", "/shared/config").basic("admin", "wrong"),
        s.req("GET", "/shared/config").basic("nobody", "nobody!"),
    ] {
        let r = req.send();
        assert_eq!(r.status, 401);
        assert!(r.header("WWW-Authenticate").is_some());
    }
    // The repo at the root matches ** only.
    assert_eq!(
        as_user(&s, "admin", "GET", "/keys/", b""),
        404,
        "admin may, nothing there"
    );
    assert_eq!(as_user(&s, "alice", "GET", "/keys/", b""), 403);
}

#[test]
fn append_only_and_private_repos_still_apply_on_top() {
    let (s, _) = start(EXAMPLE, &["--append-only", "--private-repos"]);
    assert_eq!(
        as_user(&s, "alice", "POST", "/alice/r/?create=true", b""),
        200
    );
    let (body, data) = object("alice/r", "data", 1);
    assert_eq!(as_user(&s, "alice", "POST", &data, &body), 200);
    // alice has w, but --append-only forbids deleting data.
    assert_eq!(as_user(&s, "alice", "DELETE", &data, b""), 403);
    let (lock_body, lock) = object("alice/r", "locks", 2);
    assert_eq!(as_user(&s, "alice", "POST", &lock, &lock_body), 200);
    assert_eq!(as_user(&s, "alice", "DELETE", &lock, b""), 200);
    // monitor has r on alice/**, but --private-repos keeps it to /monitor/ (401 as in Go).
    assert_eq!(as_user(&s, "monitor", "GET", "/alice/r/config", b""), 401);
}

#[test]
fn segment_quotas_hold_under_eight_concurrent_uploads() {
    let rules = "[permissions]\n** = *:w\n[quotas]\nalice = 1000000\n* = 500000\n";
    let (s, _) = start(rules, &["--max-size", "1600000", "--prometheus"]);
    for repo in ["alice/r", "bob/r", "carol/r", "dave/r"] {
        assert_eq!(
            as_user(&s, "admin", "POST", &format!("/{repo}/?create=true"), b""),
            200
        );
    }
    s.wait_log("bytes used", 10);
    let burst = |repo: &str, seed: u64| -> Vec<u16> {
        std::thread::scope(|sc| {
            let handles: Vec<_> = (0..8u64)
                .map(|i| {
                    let s = &s;
                    sc.spawn(move || {
                        let body = random_bytes(300_000, seed + i);
                        let path = format!("/{repo}/data/{}", sha256_hex(&body));
                        as_user(s, "admin", "POST", &path, &body)
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        })
    };
    let count = |v: &[u16], code: u16| v.iter().filter(|&&c| c == code).count();
    let alice = burst("alice/r", 100);
    assert_eq!(
        (count(&alice, 200), count(&alice, 507)),
        (3, 5),
        "{alice:?}"
    );
    let bob = burst("bob/r", 200);
    assert_eq!((count(&bob, 200), count(&bob, 507)), (1, 7), "{bob:?}");
    // A chunked upload (no Content-Length) is stopped while streaming.
    let body = random_bytes(300_000, 300);
    let mut raw = chunked_post(&format!("/bob/r/data/{}", sha256_hex(&body)), &body, 65536);
    let auth = format!("Authorization: Basic {}\r\n", b64(b"admin:admin!"));
    let at = raw.windows(2).position(|w| w == b"\r\n").unwrap() + 2;
    raw.splice(at..at, auth.into_bytes());
    let mut c = BufReader::new(s.connect());
    c.get_mut().write_all(&raw).unwrap();
    assert_eq!(read_response(&mut c, "POST").status, 507);
    // carol has room for one more (900k + 300k + 300k = 1.5M); then the global limit holds
    // even though dave's own quota is untouched.
    assert_eq!(count(&burst("carol/r", 400), 200), 1);
    let dave = burst("dave/r", 500);
    assert_eq!(count(&dave, 200), 0, "--max-size 1.6M is full: {dave:?}");

    let on_disk = |seg: &str| {
        let mut total = 0;
        walk(&s.data.join(seg), &mut |p| {
            total += std::fs::metadata(p).unwrap().len()
        });
        total
    };
    assert!(on_disk("alice") <= 1_000_000 && on_disk("bob") <= 500_000);
    let metrics = as_user_text(&s, "admin", "/metrics");
    for line in [
        "rest_server_quota_segment_used_bytes{segment=\"alice\"} 900000",
        "rest_server_quota_segment_used_bytes{segment=\"bob\"} 300000",
        "rest_server_quota_segment_limit_bytes{segment=\"alice\"} 1000000",
        "rest_server_quota_segment_limit_bytes{segment=\"dave\"} 500000",
        // Global usage includes files outside any repository (the htpasswd file).
        &format!(
            "rest_server_quota_used_bytes {}",
            1_500_000 + std::fs::metadata(s.data.join(".htpasswd")).unwrap().len()
        ),
    ] {
        assert!(
            metrics.lines().any(|l| l == line),
            "missing {line:?}:\n{metrics}"
        );
    }
    // An upload into a repository that does not exist makes no counter for its segment.
    let (body, ghost) = object("ghost/r", "data", 7);
    assert_eq!(as_user(&s, "admin", "POST", &ghost, &body), 404);
    assert!(!as_user_text(&s, "admin", "/metrics").contains("segment=\"ghost\""));
    // Deleting gives the segment its room back.
    let mut names = vec![];
    walk(&s.data.join("bob/r/data"), &mut |p| {
        names.push(p.to_owned())
    });
    let name = names[0].file_name().unwrap().to_string_lossy().into_owned();
    assert_eq!(
        as_user(&s, "admin", "DELETE", &format!("/bob/r/data/{name}"), b""),
        200
    );
    assert_eq!(count(&burst("bob/r", 600), 200), 1);
}

fn as_user_text(s: &Server, user: &str, path: &str) -> String {
    let r = s.req("GET", path).basic(user, &password(user)).send();
    assert_eq!(r.status, 200);
    r.text()
}

#[test]
fn segment_usage_on_disk_is_counted_at_start_up() {
    let dir = TempDir::new("access-tally");
    let data = dir.path().join("data");
    std::fs::create_dir_all(data.join("alice/r/data/00")).unwrap();
    std::fs::create_dir_all(data.join("bob/r/data")).unwrap();
    std::fs::write(data.join("alice/r/data/00/old"), vec![0u8; 900]).unwrap();
    std::fs::write(data.join(".htpasswd"), htpasswd_text()).unwrap();
    let file = dir.path().join("access");
    std::fs::write(&file, "[permissions]\n** = *:w\n[quotas]\n* = 1000\n").unwrap();
    let s = Server::start_in(dir, &["--access-file", file.to_str().unwrap()]);
    let up = |repo: &str, seed| {
        let body = random_bytes(200, seed);
        as_user(
            &s,
            "admin",
            "POST",
            &format!("/{repo}/data/{}", sha256_hex(&body)),
            &body,
        )
    };
    assert_eq!(up("alice/r", 1), 507, "900 + 200 > 1000");
    assert_eq!(up("bob/r", 2), 200);
}

#[test]
fn reload_on_mtime_revokes_a_right_within_35_s() {
    // Checked every 30 s; here every 200 ms (the test-only interval), same assertion.
    let (s, file) = start_env(EXAMPLE, &[], &[(POLL_INTERVAL_ENV, FAST_POLL_MS)]);
    assert_eq!(
        as_user(&s, "alice", "POST", "/alice/r/?create=true", b""),
        200
    );
    assert_eq!(as_user(&s, "monitor", "GET", "/alice/r/keys/", b""), 200);
    std::fs::write(&file, EXAMPLE.replace(", monitor:r", "")).unwrap();
    let t = std::time::Instant::now();
    wait_until(35, "monitor loses read on alice/r", || {
        // Not too often: each request is a login.
        std::thread::sleep(std::time::Duration::from_millis(50));
        as_user(&s, "monitor", "GET", "/alice/r/keys/", b"") == 403
    });
    eprintln!("revoked after {:?}", t.elapsed());
    s.wait_log("reloaded access file", 1);
}

#[test]
fn broken_file_is_refused_at_start_up_and_kept_out_on_sighup() {
    let dir = TempDir::new("access-bad");
    let file = dir.path().join("access");
    std::fs::write(&file, "[permissions]\nalice/** = alice:rw\n").unwrap();
    let path = format!("--path={}", dir.path().join("data").display());
    let (code, _, err) = run_cli(&[&path, "--no-auth", "--access-file", file.to_str().unwrap()]);
    assert_eq!(code, 2, "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.contains("line 2") && err.contains("\"rw\""), "{err}");
    assert!(
        !dir.path().join("data").exists(),
        "nothing written before refusing"
    );

    let (s, file) = start(EXAMPLE, &[]);
    assert_eq!(
        as_user(&s, "alice", "POST", "/alice/r/?create=true", b""),
        200
    );
    std::fs::write(&file, "[permissions]\n** = *:w\n[quota]\n").unwrap();
    s.signal("HUP");
    s.wait_log("line 3: unknown section [quota]", 10);
    s.wait_log("keeping the previous version", 1);
    assert_eq!(
        as_user(&s, "eve", "GET", "/alice/r/keys/", b""),
        403,
        "old rules kept"
    );
    // A good file on SIGHUP applies at once.
    std::fs::write(&file, "[permissions]\n** = *:r\n").unwrap();
    s.signal("HUP");
    wait_until(10, "eve gets read", || {
        as_user(&s, "eve", "GET", "/alice/r/keys/", b"") == 200
    });
}

#[test]
fn access_check_says_what_and_which_line() {
    let dir = TempDir::new("access-cli");
    let file = dir.path().join("access");
    std::fs::write(&file, EXAMPLE).unwrap();
    let f = file.to_str().unwrap();
    let (code, out, err) = run_cli(&[
        "access",
        "check",
        "monitor",
        "alice/laptop",
        "--access-file",
        f,
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("monitor on /alice/laptop: r"), "{out}");
    assert!(
        out.contains("line 3: alice/**   = alice:w, monitor:r"),
        "{out}"
    );
    assert!(
        out.contains("quota of /alice: 53687091200 bytes (line 8)"),
        "{out}"
    );
    let (code, out, _) = run_cli(&["access", "check", "--access-file", f, "admin", "alice"]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("admin on /alice: - = no access"), "{out}");
    assert!(out.contains("admin is not named there"), "{out}");
    let (code, out, _) = run_cli(&["access", "check", "bob", "laptops/x", "--access-file", f]);
    assert_eq!(code, 0);
    assert!(
        out.contains(": a = ") && out.contains("line 4") && out.contains("line 9"),
        "{out}"
    );

    std::fs::write(&file, "[permissions]\n**/x = a:r\n").unwrap();
    let (code, _, err) = run_cli(&["access", "check", "a", "x", "--access-file", f]);
    assert_eq!(code, 2);
    assert!(
        err.contains("line 2") && err.contains("** may only come last"),
        "{err}"
    );
    let (code, _, err) = run_cli(&["access", "check", "a", "--access-file", f]);
    assert_eq!(code, 2);
    assert!(err.contains("usage: rest-server access check"), "{err}");
}
