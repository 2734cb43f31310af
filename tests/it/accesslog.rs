//! README, Logs: `--log` writes Apache combined log lines, never credentials, and is reopened on
//! SIGHUP (logrotate).

use std::time::{Duration, Instant};
use testkit::*;

fn wait_for(path: &std::path::Path, needle: &str) -> String {
    let t = Instant::now();
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        if text.contains(needle) {
            return text;
        }
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "{needle:?} not in {text}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn combined_log_format_and_reopen_on_sighup() {
    let dir = TempDir::new("alog");
    let log = dir.path().join("access.log");
    let log_flag = format!("--log={}", log.display());
    let s = Server::start(&[&log_flag]);
    s.create_repo("r");
    s.req("GET", "/r/config")
        .header("User-Agent", "restic/0.14.0")
        .header("Referer", "http://x/")
        .send();
    let text = wait_for(&log, "GET /r/config");
    let line = text.lines().find(|l| l.contains("GET /r/config")).unwrap();
    // 127.0.0.1 - - [23/Nov/2026:13:02:07 +0000] "GET /r/config HTTP/1.1" 404 10 "http://x/" "restic/0.14.0"
    assert!(line.starts_with("127.0.0.1 - - ["), "{line}");
    assert!(
        line.contains(" +0000] \"GET /r/config HTTP/1.1\" 404 "),
        "{line}"
    );
    assert!(line.ends_with("\"http://x/\" \"restic/0.14.0\""), "{line}");
    assert!(
        text.contains("\"POST /r/?create=true HTTP/1.1\" 200 0 \"-\" \"-\""),
        "{text}"
    );

    // logrotate: move the file away, SIGHUP, the next line goes to a new file.
    let rotated = dir.path().join("access.log.1");
    std::fs::rename(&log, &rotated).unwrap();
    s.signal("HUP");
    s.wait_log("SIGHUP", 5);
    // Reopening creates the file again.
    wait_until(5, "the access log is reopened", || log.exists());
    s.get("/r/keys/");
    wait_for(&log, "GET /r/keys/");
    assert!(
        !std::fs::read_to_string(&rotated)
            .unwrap()
            .contains("/r/keys/")
    );
}

#[test]
fn log_names_the_user_but_never_the_password() {
    let dir = TempDir::new("alog-auth");
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    // bob / hunter2 as {SHA}: base64(sha1("hunter2")).
    std::fs::write(
        data.join(".htpasswd"),
        "bob:{SHA}87u9ZqY9S/F0eUBXjsPQEDUw4h0=\n",
    )
    .unwrap();
    let log = dir.path().join("access.log");
    let s = Server::start_in(
        TempDir::new("alog-auth-srv"),
        &[
            "--path",
            data.to_str().unwrap(),
            "--log",
            log.to_str().unwrap(),
            "--debug",
        ],
    );
    let r = s
        .req("POST", "/bob/?create=true")
        .basic("bob", "hunter2")
        .send();
    assert_eq!(r.status, 200);
    let r = s.req("GET", "/bob/config").basic("bob", "wrong").send();
    assert_eq!(r.status, 401);
    assert_eq!(r.header("www-authenticate"), Some("Basic realm=\"restic\""));
    let text = wait_for(&log, "GET /bob/config");
    assert!(text.contains(" - bob ["), "{text}");
    let everything = format!("{text}\n{}", s.log_text());
    for secret in [
        "hunter2",
        "87u9ZqY9",
        &b64(b"bob:hunter2"),
        "wrong",
        "Authorization",
    ] {
        assert!(
            !everything.contains(secret),
            "{secret:?} leaked:\n{everything}"
        );
    }
}
