//! Edges that are not HTTP framing but as bad (docs/http.md, "Edges"): odd files where
//! objects belong, a listing over a broken tree, forged log lines, a live unix socket.

use std::io::{BufReader, Write};
use std::os::unix::fs::symlink;
use testkit::*;

#[test]
fn a_name_occupied_by_something_that_is_not_a_regular_file_is_refused() {
    // Until hyper, a correct POST to such a name got 200 though the object could not be read
    // back nor was it listed. The Go server answers 403 for a directory or a FIFO.
    let s = Server::start(&[]);
    s.create_repo("r");
    let body = b"snapshot";
    let id = sha256_hex(body);
    let at = s.data.join(format!("r/snapshots/{id}"));
    let make: [(&str, &dyn Fn()); 3] = [
        ("directory", &|| std::fs::create_dir(&at).unwrap()),
        ("dangling symlink", &|| {
            symlink("/nonexistent/x", &at).unwrap()
        }),
        ("FIFO", &|| {
            let ok = std::process::Command::new("mkfifo").arg(&at).status();
            assert!(ok.unwrap().success());
        }),
    ];
    for (what, make) in make {
        make();
        let r = s.post(&format!("/r/snapshots/{id}"), body);
        assert_eq!(r.status, 403, "{what}");
        assert_eq!(s.get(&format!("/r/snapshots/{id}")).status, 404, "{what}");
        assert!(s.files_named("rest-server-temp").is_empty(), "{what}");
        let meta = std::fs::symlink_metadata(&at).unwrap();
        assert!(!meta.is_file(), "{what} was replaced");
        if meta.is_dir() {
            std::fs::remove_dir(&at).unwrap();
        } else {
            std::fs::remove_file(&at).unwrap();
        }
    }
    // And once the name is free, the upload is stored and reads back.
    assert_eq!(s.post(&format!("/r/snapshots/{id}"), body).status, 200);
    assert_eq!(s.get(&format!("/r/snapshots/{id}")).body, body);
}

#[test]
fn a_listing_over_a_file_where_a_data_directory_belongs_stays_valid_json() {
    // `r/data/00` as a regular file once gave 200 with a body cut off after `[`.
    let s = Server::start(&[]);
    s.create_repo("r");
    let body = b"pack";
    let id = sha256_hex(body);
    assert_eq!(s.post(&format!("/r/data/{id}"), body).status, 200);
    let odd = if id.starts_with("00") { "01" } else { "00" };
    let dir = s.data.join(format!("r/data/{odd}"));
    std::fs::remove_dir(&dir).unwrap();
    std::fs::write(&dir, b"not a directory").unwrap();
    // The whole answer, exactly: the one object, in a complete JSON array.
    let v2 = format!("[{{\"name\":\"{id}\",\"size\":{}}}]", body.len());
    let v1 = format!("[\"{id}\"]");
    for (accept, want) in [("application/vnd.x.restic.rest.v2", v2), ("*/*", v1)] {
        let r = s.req("GET", "/r/data/").header("Accept", accept).send();
        assert_eq!(r.status, 200);
        let text: String = r.text().split_whitespace().collect();
        assert_eq!(text, want, "{accept}");
    }
    s.wait_log("is not a directory: skipped", 10);
}

#[test]
fn a_repository_name_cannot_forge_a_log_line() {
    // A name with an encoded newline wrote a line of its own into the log (the Go server too).
    // Every line that names the repository stays one line: the request lines of --debug, the
    // creation, the stored object, and a warning that quotes a path on disk (which once went
    // out unescaped: the logger itself now escapes control characters in every message).
    let s = Server::start(&["--debug"]);
    let forged = "x%0a2026-12-06T00:00:00Z%20ERROR%20[rest_server]%20forged";
    let r = s.post(&format!("/{forged}/?create=true"), b"");
    assert_eq!(r.status, 200);
    let body = b"pack";
    let id = sha256_hex(body);
    assert_eq!(s.post(&format!("/{forged}/data/{id}"), body).status, 200);
    let odd = if id.starts_with("00") { "01" } else { "00" };
    let on_disk = s
        .data
        .join("x\n2026-12-06T00:00:00Z ERROR [rest_server] forged")
        .join(format!("data/{odd}"));
    std::fs::remove_dir(&on_disk).unwrap();
    std::fs::write(&on_disk, b"").unwrap();
    assert_eq!(s.get(&format!("/{forged}/data/")).status, 200);
    s.wait_log("is not a directory: skipped", 10);
    s.wait_log("stored 4 bytes", 10);
    // Request lines quote the target as sent (still percent-encoded); the others the name.
    let log = s.log_text();
    let one_line = |l: &str| l.contains("\\x0a2026-12-06") || l.contains("/x%0a2026-12-06");
    assert!(
        !log.lines().any(|l| l.contains("forged") && !one_line(l)),
        "a line names the repository without escaping it:\n{log}"
    );
    for said in [
        "created repository",
        "stored 4 bytes",
        "is not a directory",
        "POST /x",
        "GET /x",
    ] {
        assert!(
            log.lines().any(|l| l.contains(said) && one_line(l)),
            "no line with {said:?} and the name:\n{log}"
        );
    }
}

#[test]
fn a_live_unix_socket_is_never_taken_over() {
    let dir = TempDir::new("unix-live");
    let sock = dir.path().join("s.sock");
    let listen = format!("--listen=unix:{}", sock.display());
    let path = dir.path().join("data2");
    let first = Server::start_in(dir, &["--no-auth", &listen]);
    // A second server on the same socket refuses to start (exit 2), and takes nothing.
    let (code, _, err) = run_cli(&["--no-auth", &listen, "--path", path.to_str().unwrap()]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("address already in use"), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    let ask = |sock: &std::path::Path| {
        let mut c = std::os::unix::net::UnixStream::connect(sock).unwrap();
        c.write_all(b"GET /config HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .unwrap();
        read_response(&mut BufReader::new(c), "GET").status
    };
    assert_eq!(ask(&sock), 404, "the first server still answers");
    // A socket nothing listens on any more (left by a crash) is replaced, as before: the
    // first server's socket file is removed under it and another server takes the name;
    // when the first one stops, it leaves the other's socket alone.
    std::fs::remove_file(&sock).unwrap();
    let second_dir = TempDir::new("unix-second");
    let second = Server::start_in(second_dir, &["--no-auth", &listen]);
    let mut first = first;
    first.signal("TERM");
    assert!(first.wait_exit(20).success());
    assert!(
        sock.exists(),
        "the first server removed the second's socket"
    );
    assert_eq!(ask(&sock), 404, "the second server still answers");
    drop(second);
}

#[test]
fn a_stale_unix_socket_is_replaced_but_nothing_else_is() {
    // A socket file nothing listens on (a crash left it): the next server takes its name.
    let dir = TempDir::new("unix-stale");
    let sock = dir.path().join("s.sock");
    drop(std::os::unix::net::UnixListener::bind(&sock).unwrap());
    assert!(sock.exists(), "the dead socket stays behind");
    let listen = format!("--listen=unix:{}", sock.display());
    let mut s = Server::start_in(dir, &["--no-auth", &listen]);
    let mut c = std::os::unix::net::UnixStream::connect(&sock).unwrap();
    c.write_all(b"GET /config HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    assert_eq!(read_response(&mut BufReader::new(c), "GET").status, 404);
    s.signal("TERM");
    assert!(s.wait_exit(20).success());
    assert!(
        !sock.exists(),
        "a server removes its own socket when it stops"
    );
    // A file that is not a socket is never removed to make room: a configuration error,
    // told before anything is written.
    let dir = TempDir::new("unix-file");
    let file = dir.path().join("s.sock");
    std::fs::write(&file, b"keep me").unwrap();
    let path = dir.path().join("data");
    let listen = format!("--listen=unix:{}", file.display());
    let (code, _, err) = run_cli(&["--no-auth", &listen, "--path", path.to_str().unwrap()]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("is not a socket"), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert_eq!(std::fs::read(&file).unwrap(), b"keep me");
}
