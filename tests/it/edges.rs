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
    for accept in ["application/vnd.x.restic.rest.v2", "*/*"] {
        let r = s.req("GET", "/r/data/").header("Accept", accept).send();
        assert_eq!(r.status, 200);
        let text = r.text();
        assert!(
            text.starts_with('[') && text.trim_end().ends_with(']'),
            "{text}"
        );
        assert!(text.contains(&id), "{text}");
    }
    s.wait_log("is not a directory: skipped", 10);
}

#[test]
fn a_repository_name_cannot_forge_a_log_line() {
    // A name with an encoded newline wrote a line of its own into the log (the Go server too).
    let s = Server::start(&[]);
    let forged = "x%0a2026-12-06T00:00:00Z%20ERROR%20[rest_server]%20forged";
    let r = s.post(&format!("/{forged}/?create=true"), b"");
    assert_eq!(r.status, 200);
    s.wait_log("created repository", 10);
    let log = s.log_text();
    assert!(
        !log.lines().any(|l| l.starts_with("2026-12-06T00:00:00Z")),
        "{log}"
    );
    assert!(log.contains("\\x0a2026-12-06"), "{log}");
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
