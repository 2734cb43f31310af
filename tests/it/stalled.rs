//! Timeouts (docs/http.md, "Timeouts and closing"): an idle keep-alive connection is closed
//! after the 30 s head timeout; a download whose client stops reading is dropped once less
//! than 64 KiB has moved in 60 s, and one that reads slowly but steadily gets every byte,
//! however long it takes.

use std::io::{Read, Write};
use std::time::{Duration, Instant};
use testkit::*;

/// Stores an object of `len` pseudo-random bytes in `r/data`; returns its id.
fn store(s: &Server, len: usize) -> String {
    let body = random_bytes(len, len as u64);
    let id = sha256_hex(&body);
    assert_eq!(s.post(&format!("/r/data/{id}"), &body).status, 200);
    id
}

#[test]
fn a_download_nobody_reads_is_dropped_after_the_timeout() {
    let s = Server::start(&["--debug"]);
    s.create_repo("r");
    // Far more than the socket buffers of both ends can hold.
    let id = store(&s, 64 << 20);
    let before = s.open_fds();
    let mut c = s.connect();
    c.write_all(format!("GET /r/data/{id} HTTP/1.1\r\nHost: t\r\n\r\n").as_bytes())
        .unwrap();
    let asked = Instant::now();
    wait_until(30, "the download to start", || {
        s.log_text().contains(&format!("GET /r/data/{id} -> 200"))
    });
    // The client never reads. Linux keeps probing its full window and may take a few more
    // bytes now and then; that must not keep the connection open.
    wait_until(150, "the stalled download to be dropped", || {
        s.open_fds() <= before
    });
    let after = asked.elapsed();
    assert!(
        after >= Duration::from_secs(55),
        "dropped after {after:?}: before the 60 s timeout, so not by it"
    );
    // The descriptor goes before the line that says why reaches the log.
    s.wait_log("error writing a body", 10);
    // The server goes on serving.
    assert_eq!(s.head(&format!("/r/data/{id}")).status, 200);
}

#[test]
fn a_slow_but_steady_download_is_never_dropped() {
    let s = Server::start(&[]);
    s.create_repo("r");
    // At 256 KiB/s, what the socket buffers cannot hold takes well over the 60 s timeout to
    // drain, so the server's writes wait on the client all that time.
    let len = 24 << 20;
    let id = store(&s, len);
    let mut c = s.connect();
    c.write_all(format!("GET /r/data/{id} HTTP/1.1\r\nHost: t\r\n\r\n").as_bytes())
        .unwrap();
    let started = Instant::now();
    let mut got = Vec::with_capacity(len + 1024);
    let mut piece = vec![0; 64 * 1024];
    loop {
        // The pace of a slow link, not a wait for a condition.
        std::thread::sleep(Duration::from_millis(250));
        let n = c.read(&mut piece).unwrap();
        got.extend_from_slice(&piece[..n]);
        let Some(head_end) = got.windows(4).position(|w| w == b"\r\n\r\n") else {
            continue;
        };
        if n == 0 || got.len() - (head_end + 4) >= len {
            let body = &got[head_end + 4..];
            assert_eq!(body.len(), len, "the connection ended early");
            assert_eq!(sha256_hex(body), id);
            break;
        }
    }
    let took = started.elapsed();
    assert!(
        took > Duration::from_secs(60),
        "took only {took:?}: the server never had to wait 60 s on this client"
    );
}

#[test]
fn an_idle_keep_alive_connection_is_closed_after_the_head_timeout() {
    let s = Server::start(&[]);
    let mut c = std::io::BufReader::new(s.connect());
    let r = exchange(&mut c, b"GET /r/config HTTP/1.1\r\nHost: t\r\n\r\n", "GET");
    assert_eq!(r.status, 404, "answered, and the connection kept alive");
    assert_eq!(r.header("connection"), None);
    closed_by_the_head_timeout(c.get_mut());
}

/// Waits for the server to close `c`, which the client leaves idle from now on: the read
/// ends with EOF (not with the client's own 60 s timeout), no sooner than the 30 s head
/// timeout.
fn closed_by_the_head_timeout(c: &mut std::net::TcpStream) {
    let idle = Instant::now();
    c.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let mut rest = Vec::new();
    let n = c
        .read_to_end(&mut rest)
        .expect("closed by the server, not timed out");
    let after = idle.elapsed();
    assert_eq!(n, 0, "{}", String::from_utf8_lossy(&rest));
    assert!(
        after >= Duration::from_secs(29),
        "closed after {after:?}: before the 30 s head timeout, so not by it"
    );
}

#[test]
fn a_head_that_never_ends_is_closed_after_the_head_timeout() {
    // Slowloris: a head begun and never finished gets no answer and is closed once the 30 s
    // head timeout is up (docs/http.md, "Timeouts and closing").
    let s = Server::start(&[]);
    let mut c = s.connect();
    c.write_all(b"GET /r/config HTTP/1.1\r\nHost: x\r\n")
        .unwrap();
    closed_by_the_head_timeout(&mut c);
}

#[test]
fn a_connection_that_never_sends_a_byte_is_closed_after_the_head_timeout() {
    // It waits for its first byte without hyper's buffers (docs/http.md), but not forever.
    let s = Server::start(&[]);
    closed_by_the_head_timeout(&mut s.connect());
    // A request that trickles in afterwards on a new connection is served as usual.
    let mut c = std::io::BufReader::new(s.connect());
    for b in b"GET /r/config HTTP/1.1\r\nHost: t\r\n\r\n" {
        c.get_mut().write_all(&[*b]).unwrap();
    }
    assert_eq!(read_response(&mut c, "GET").status, 404);
}

#[test]
fn a_connection_handed_between_hypers_keeps_fresh_timeouts_for_a_minute_and_more() {
    // hyper lets go of a connection idle for 0.5-1 s after an answer and a new one takes
    // it with the next request (docs/http.md, "Idle connections"). A read timer armed in one
    // turn must not carry over: here the requests come 25 s apart, whole, for over a minute,
    // then an upload whose body follows its head after a 3 s pause must still be stored
    // (a carried-over 60 s timer cut it off with 400).
    let s = Server::start(&["--debug"]);
    s.create_repo("r");
    let mut c = std::io::BufReader::new(s.connect());
    let start = Instant::now();
    for _ in 0..3 {
        let r = exchange(
            &mut c,
            b"HEAD /r/config HTTP/1.1\r\nHost: t\r\n\r\n",
            "HEAD",
        );
        assert_eq!(r.status, 404);
        // The client's pause, within the 30 s an idle connection is kept.
        std::thread::sleep(Duration::from_secs(25));
    }
    assert!(start.elapsed() > Duration::from_secs(60));
    let body = random_bytes(1000, 7);
    let id = sha256_hex(&body);
    c.get_mut()
        .write_all(post_head(&format!("/r/data/{id}"), body.len()).as_bytes())
        .unwrap();
    std::thread::sleep(Duration::from_secs(3));
    c.get_mut().write_all(&body).unwrap();
    assert_eq!(read_response(&mut c, "POST").status, 200);
    assert_eq!(s.get(&format!("/r/data/{id}")).body, body);
}

#[test]
fn a_head_begun_after_an_idle_pause_must_be_whole_30_s_after_the_answer() {
    // The head timeout counts from the end of the previous answer, also when hyper let go of
    // the idle connection meanwhile and a new one reads the head: a first byte sent late
    // buys no extra time (it would have bought a new 30 s: closed at ~50 s here).
    let s = Server::start(&["--debug"]);
    s.create_repo("r");
    let mut c = std::io::BufReader::new(s.connect());
    let r = exchange(
        &mut c,
        b"HEAD /r/config HTTP/1.1\r\nHost: t\r\n\r\n",
        "HEAD",
    );
    assert_eq!(r.status, 404);
    let answered = Instant::now();
    s.wait_log("hyper let go of it", 10);
    std::thread::sleep(Duration::from_secs(20));
    c.get_mut().write_all(b"GET /r/con").unwrap();
    c.get_mut()
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    let mut rest = Vec::new();
    c.read_to_end(&mut rest)
        .expect("closed by the server, not timed out");
    let after = answered.elapsed();
    assert!(rest.is_empty(), "{}", String::from_utf8_lossy(&rest));
    assert!(
        after >= Duration::from_secs(29) && after < Duration::from_secs(40),
        "closed {after:?} after the answer, not at the 30 s head timeout"
    );
}
