//! TLS (docs/tls.md), against the real binary: HTTPS round trips, minimum version,
//! handshakes that never finish, generated certificates, reload on SIGHUP, cipher preference,
//! bad TLS set-ups, and restic itself over HTTPS. The client side is the `openssl` crate
//! (so a test can pin versions and cipher orders) and the `openssl`/`restic` commands.

use openssl::hash::MessageDigest;
use openssl::ssl::{SslConnector, SslConnectorBuilder, SslMethod, SslStream, SslVersion};
use std::io::{BufReader, ErrorKind, Read, Write};
use std::net::TcpStream;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};
use testkit::*;

type Tls = BufReader<SslStream<TcpStream>>;

/// Starts a TLS server that generates its own certificate in its data dir.
fn start_tls(extra: &[&str]) -> Server {
    let mut args = vec!["--tls", "--tls-generate-cert"];
    args.extend_from_slice(extra);
    Server::start(&args)
}

fn cert_of(s: &Server) -> PathBuf {
    s.data.join("public_key")
}

/// Connects, verifying the server against `ca` for `name` (a DNS name or IP address).
fn try_connect(
    s: &Server,
    ca: &Path,
    name: &str,
    setup: impl FnOnce(&mut SslConnectorBuilder),
) -> Result<Tls, String> {
    let mut b = SslConnector::builder(SslMethod::tls_client()).unwrap();
    b.set_ca_file(ca).unwrap();
    setup(&mut b);
    let tcp = s.connect();
    b.build()
        .connect(name, tcp)
        .map(BufReader::new)
        .map_err(|e| e.to_string())
}

fn connect(s: &Server) -> Tls {
    try_connect(s, &cert_of(s), "127.0.0.1", |_| {}).unwrap()
}

/// Sends one request on a TLS connection and reads the answer.
fn send(c: &mut Tls, req: Req<'_>, method: &str) -> Resp {
    c.get_mut().write_all(&req.bytes()).unwrap();
    read_response(c, method)
}

fn peer_fingerprint(c: &Tls) -> String {
    let cert = c.get_ref().ssl().peer_certificate().unwrap();
    hex(&cert.digest(MessageDigest::sha256()).unwrap())
}

fn negotiated(c: &Tls) -> (String, String) {
    let ssl = c.get_ref().ssl();
    (
        ssl.version_str().to_owned(),
        ssl.current_cipher().unwrap().name().to_owned(),
    )
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|b| format!("{b:02x}")).collect()
}

/// The fingerprints logged as `SERVER CERT SHA256: <hex>`, in order.
fn logged_fingerprints(s: &Server) -> Vec<String> {
    s.log_text()
        .lines()
        .filter_map(|l| l.split("SERVER CERT SHA256: ").nth(1))
        .map(|f| f.trim().to_owned())
        .collect()
}

/// `openssl <args>`, which must succeed; its stdout.
fn openssl(args: &[&str]) -> String {
    let out = Command::new("openssl").args(args).output().unwrap();
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The fingerprint as `openssl x509 -fingerprint -sha256` prints it, normalised.
fn openssl_fingerprint(cert: &Path) -> String {
    let out = openssl(&[
        "x509",
        "-noout",
        "-fingerprint",
        "-sha256",
        "-in",
        cert.to_str().unwrap(),
    ]);
    out.trim()
        .split('=')
        .nth(1)
        .unwrap()
        .replace(':', "")
        .to_ascii_lowercase()
}

/// A certificate + key made by the openssl command (independent of the server's generator).
fn openssl_pair(dir: &Path, name: &str, key_type: &str) -> (PathBuf, PathBuf) {
    let (cert, key) = (
        dir.join(format!("{name}.crt")),
        dir.join(format!("{name}.key")),
    );
    let key_args: &[&str] = match key_type {
        "ec" => &["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"],
        other => &["-newkey", other],
    };
    let mut args = vec!["req", "-x509"];
    args.extend_from_slice(key_args);
    args.extend_from_slice(&[
        "-nodes",
        "-days",
        "2",
        "-subj",
        "/CN=localhost",
        "-addext",
        "subjectAltName=DNS:localhost,IP:127.0.0.1",
        "-keyout",
        key.to_str().unwrap(),
        "-out",
        cert.to_str().unwrap(),
    ]);
    openssl(&args);
    (cert, key)
}

#[test]
fn https_round_trip_with_a_generated_certificate() {
    let s = start_tls(&[]);
    let mut c = connect(&s);
    // One keep-alive connection for the whole exchange, as restic uses it.
    assert_eq!(
        send(&mut c, s.req("POST", "/r/?create=true"), "POST").status,
        200
    );
    let body = random_bytes(3 << 20, 7);
    let id = sha256_hex(&body);
    let path = format!("/r/data/{id}");
    assert_eq!(
        send(&mut c, s.req("POST", &path).body(&body), "POST").status,
        200
    );
    let got = send(&mut c, s.req("GET", &path), "GET");
    assert_eq!(got.status, 200);
    assert!(got.body == body, "downloaded body differs");
    let part = send(
        &mut c,
        s.req("GET", &path).header("Range", "bytes=10-19"),
        "GET",
    );
    assert_eq!(part.status, 206);
    assert_eq!(part.body, body[10..20]);
    let head = send(&mut c, s.req("HEAD", &path), "HEAD");
    assert_eq!(
        head.header("content-length"),
        Some(&*body.len().to_string())
    );
    let list = send(&mut c, s.req("GET", "/r/data/"), "GET");
    assert_eq!(list.text().trim_end(), format!("[\"{id}\"]"));
    // A wrong hash is still refused over TLS (and the connection stays usable or closes).
    let bad = send(
        &mut c,
        s.req("POST", &format!("/r/keys/{}", "0".repeat(64)))
            .body(b"x"),
        "POST",
    );
    assert_eq!(bad.status, 400);
    // The certificate is valid for "localhost" too (a default SAN).
    let mut c2 = try_connect(&s, &cert_of(&s), "localhost", |_| {}).unwrap();
    assert_eq!(send(&mut c2, s.req("GET", "/r/config"), "GET").status, 404);
    // curl (another OpenSSL client, and a real HTTPS one) agrees.
    let out = Command::new("curl")
        .args(["-sS", "--fail", "--cacert"])
        .arg(cert_of(&s))
        .arg(format!("https://{}/r/data/{id}", s.addr))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.stdout == body);
}

#[test]
fn plain_http_on_the_tls_port_gets_no_answer_and_hurts_no_one() {
    let s = start_tls(&[]);
    let mut plain = s.connect();
    plain
        .write_all(b"GET /r/config HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut buf = Vec::new();
    let _ = plain.read_to_end(&mut buf);
    assert!(!buf.starts_with(b"HTTP/"), "plain HTTP answered: {buf:?}");
    // Garbage that looks like the start of a TLS record, then a close.
    let mut junk = s.connect();
    junk.write_all(&[0x16, 0x03, 0x01, 0xff, 0xff, 1, 2, 3])
        .unwrap();
    drop(junk);
    let mut c = connect(&s);
    assert_eq!(send(&mut c, s.req("GET", "/r/config"), "GET").status, 404);
}

#[test]
fn min_version_1_3_refuses_tls_1_2_clients() {
    let s = start_tls(&["--tls-min-ver", "1.3"]);
    let only_12 = |b: &mut SslConnectorBuilder| {
        b.set_max_proto_version(Some(SslVersion::TLS1_2)).unwrap();
    };
    let e = try_connect(&s, &cert_of(&s), "127.0.0.1", only_12).err();
    assert!(e.is_some(), "a TLS 1.2-only client got in");
    let mut c = try_connect(&s, &cert_of(&s), "127.0.0.1", |b| {
        b.set_min_proto_version(Some(SslVersion::TLS1_3)).unwrap();
    })
    .unwrap();
    assert_eq!(negotiated(&c).0, "TLSv1.3");
    assert_eq!(send(&mut c, s.req("GET", "/x/config"), "GET").status, 404);
    assert!(s.log_text().contains("minimum version 1.3"));

    // The default (1.2) lets a TLS 1.2-only client in.
    let s12 = start_tls(&[]);
    let c = try_connect(&s12, &cert_of(&s12), "127.0.0.1", only_12).unwrap();
    assert_eq!(negotiated(&c).0, "TLSv1.2");
}

#[test]
fn clients_that_never_handshake_block_no_one_and_are_dropped() {
    // The handshake runs in each connection's own task, bounded by a 10 s timeout.
    let s = start_tls(&[]);
    let silent: Vec<TcpStream> = (0..20).map(|_| s.connect()).collect();
    // One that starts a ClientHello record and stops half-way.
    let mut trickle = s.connect();
    trickle
        .write_all(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01])
        .unwrap();
    let t = Instant::now();
    for _ in 0..3 {
        let mut c = connect(&s);
        assert_eq!(send(&mut c, s.req("GET", "/x/config"), "GET").status, 404);
    }
    assert!(
        t.elapsed() < Duration::from_secs(3),
        "blocked for {:?}",
        t.elapsed()
    );
    // The server hangs up on them once the handshake time is over.
    for mut c in silent.into_iter().chain([trickle]) {
        c.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        let mut buf = [0u8; 64];
        let r = c.read(&mut buf);
        let closed = match &r {
            Ok(n) => *n == 0,
            Err(e) => !matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut),
        };
        assert!(closed, "still open: {r:?}");
    }
    let waited = t.elapsed();
    assert!(
        waited >= Duration::from_secs(9),
        "dropped too early: {waited:?}"
    );
    assert!(waited < Duration::from_secs(20), "{waited:?}");
    let mut c = connect(&s);
    assert_eq!(send(&mut c, s.req("GET", "/x/config"), "GET").status, 404);
}

#[test]
fn generated_certificate_matches_the_logged_fingerprint_and_names() {
    let dir = TempDir::new("gen");
    let data = dir.path().join("data");
    let path_flag = format!("--path={}", data.display());
    let s = start_tls(&[
        &path_flag,
        "--tls-hostname",
        "backup.example.org",
        "--tls-hostname=10.1.2.3",
        "--tls-hostname=127.0.0.1",
    ]);
    let (cert, key) = (data.join("public_key"), data.join("private_key"));
    let logged = logged_fingerprints(&s);
    assert_eq!(logged.len(), 1, "{}", s.log_text());
    assert_eq!(logged[0].len(), 64);
    assert_eq!(openssl_fingerprint(&cert), logged[0]);
    assert_eq!(peer_fingerprint(&connect_to(&s, &cert)), logged[0]);
    let sans = openssl(&[
        "x509",
        "-noout",
        "-ext",
        "subjectAltName",
        "-in",
        cert.to_str().unwrap(),
    ]);
    for want in [
        "DNS:backup.example.org",
        "IP Address:10.1.2.3",
        "IP Address:127.0.0.1",
    ] {
        assert!(sans.contains(want), "{want} missing: {sans}");
    }
    // Valid for years (10), ECDSA P-256, key only for its owner.
    openssl(&[
        "x509",
        "-noout",
        "-checkend",
        &(9 * 365 * 86400).to_string(),
        "-in",
        cert.to_str().unwrap(),
    ]);
    let key_text = openssl(&["pkey", "-noout", "-text", "-in", key.to_str().unwrap()]);
    assert!(
        key_text.contains("prime256v1") || key_text.contains("P-256"),
        "{key_text}"
    );
    assert_eq!(
        std::fs::metadata(&key).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let (cert_bytes, key_bytes) = (std::fs::read(&cert).unwrap(), std::fs::read(&key).unwrap());
    drop(s);

    // Started again with the flag: the pair is reused, never overwritten.
    let s = start_tls(&[&path_flag]);
    assert!(s.log_text().contains("not overwriting"), "{}", s.log_text());
    assert_eq!(logged_fingerprints(&s), logged);
    assert!(std::fs::read(&cert).unwrap() == cert_bytes);
    assert!(std::fs::read(&key).unwrap() == key_bytes);
    drop(s);

    // Only one of the two there: refused (exit 2), and the one there is left alone.
    std::fs::remove_file(&cert).unwrap();
    let (code, _, err) = run_cli(&[&path_flag, "--no-auth", "--tls", "--tls-generate-cert"]);
    assert_eq!(code, 2, "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(
        err.contains("refusing to overwrite") && err.contains("private_key"),
        "{err}"
    );
    assert!(!cert.exists());
    assert!(std::fs::read(&key).unwrap() == key_bytes);
}

fn connect_to(s: &Server, ca: &Path) -> Tls {
    try_connect(s, ca, "127.0.0.1", |_| {}).unwrap()
}

#[test]
fn generated_certificate_default_names() {
    let s = start_tls(&[]);
    let sans = openssl(&[
        "x509",
        "-noout",
        "-ext",
        "subjectAltName",
        "-in",
        cert_of(&s).to_str().unwrap(),
    ]);
    for want in [
        "DNS:localhost",
        "IP Address:127.0.0.1",
        "IP Address:0:0:0:0:0:0:0:1",
    ] {
        assert!(sans.contains(want), "{want} missing: {sans}");
    }
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    let host = host.trim();
    if !host.is_empty() && host != "localhost" {
        assert!(
            sans.contains(&format!("DNS:{host}")),
            "hostname {host} missing: {sans}"
        );
    }
}

#[test]
fn sighup_reloads_the_certificate_and_keeps_it_when_the_new_pair_is_bad() {
    let dir = TempDir::new("reload");
    let (cert_a, key_a) = openssl_pair(dir.path(), "a", "rsa:2048");
    let (cert_b, key_b) = openssl_pair(dir.path(), "b", "ec");
    let (cert, key) = (dir.path().join("live.crt"), dir.path().join("live.key"));
    std::fs::copy(&cert_a, &cert).unwrap();
    std::fs::copy(&key_a, &key).unwrap();
    let cert_flag = format!("--tls-cert={}", cert.display());
    let key_flag = format!("--tls-key={}", key.display());
    let s = Server::start(&["--tls", &cert_flag, &key_flag]);
    let fp_a = openssl_fingerprint(&cert_a);
    let fp_b = openssl_fingerprint(&cert_b);
    assert_eq!(logged_fingerprints(&s), std::slice::from_ref(&fp_a));
    let mut old = connect_to(&s, &cert_a);
    assert_eq!(peer_fingerprint(&old), fp_a);
    assert_eq!(send(&mut old, s.req("GET", "/x/config"), "GET").status, 404);

    // Certbot-style replacement: write new files, rename over the old ones.
    std::fs::copy(&cert_b, dir.path().join("new.crt")).unwrap();
    std::fs::copy(&key_b, dir.path().join("new.key")).unwrap();
    std::fs::rename(dir.path().join("new.key"), &key).unwrap();
    std::fs::rename(dir.path().join("new.crt"), &cert).unwrap();
    s.signal("HUP");
    s.wait_log("TLS certificate reloaded", 10);
    assert_eq!(logged_fingerprints(&s), [fp_a.clone(), fp_b.clone()]);
    let mut new = connect_to(&s, &cert_b);
    assert_eq!(peer_fingerprint(&new), fp_b);
    assert_eq!(send(&mut new, s.req("GET", "/x/config"), "GET").status, 404);
    // The status page names the certificate now in service, not the one it started with.
    let page = |c: &mut Tls| {
        let req = s.req("GET", "/").header("Accept", "text/html");
        send(c, req, "GET").text()
    };
    let html = page(&mut new);
    assert!(html.contains(&fp_b) && !html.contains(&fp_a), "{html}");
    // The connection made before the reload lives on.
    assert_eq!(send(&mut old, s.req("GET", "/x/config"), "GET").status, 404);

    // A key that does not match: the old pair (b) stays in service.
    std::fs::copy(&key_a, &key).unwrap();
    s.signal("HUP");
    s.wait_log("TLS reload failed", 10);
    assert!(s.log_text().contains("does not belong"), "{}", s.log_text());
    let c = connect_to(&s, &cert_b);
    assert_eq!(peer_fingerprint(&c), fp_b);
    // Garbage: same.
    std::fs::write(&cert, b"not a certificate").unwrap();
    s.signal("HUP");
    wait_until(10, "second reload failure", || {
        s.log_text().matches("TLS reload failed").count() == 2
    });
    assert_eq!(peer_fingerprint(&connect_to(&s, &cert_b)), fp_b);
    assert!(page(&mut connect_to(&s, &cert_b)).contains(&fp_b));
    assert!(alive(&s));
}

fn alive(s: &Server) -> bool {
    Command::new("kill")
        .args(["-0", &s.pid().to_string()])
        .status()
        .unwrap()
        .success()
}

const TLS12_AES_THEN_CHACHA: &str =
    "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-ECDSA-CHACHA20-POLY1305";
const TLS12_CHACHA_THEN_AES: &str =
    "ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES256-GCM-SHA384";
const TLS13_AES_THEN_CHACHA: &str =
    "TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256";
const TLS13_CHACHA_THEN_AES: &str =
    "TLS_CHACHA20_POLY1305_SHA256:TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384";

/// The cipher the server picks for a client offering suites in the given order.
fn cipher_for(s: &Server, version: SslVersion, client_order: &str) -> String {
    let mut c = try_connect(s, &cert_of(s), "127.0.0.1", |b| {
        b.set_min_proto_version(Some(version)).unwrap();
        b.set_max_proto_version(Some(version)).unwrap();
        if version == SslVersion::TLS1_3 {
            b.set_ciphersuites(client_order).unwrap();
        } else {
            b.set_cipher_list(client_order).unwrap();
        }
    })
    .unwrap();
    assert_eq!(send(&mut c, s.req("GET", "/x/config"), "GET").status, 404);
    negotiated(&c).1
}

#[test]
fn chacha20_preferred_over_a_clients_aes_first_order_when_forced() {
    // docs/tls.md (beyond the Go server): the AES-less CPU path, reached on any CPU through the flag.
    let s = start_tls(&["--tls-prefer-chacha20"]);
    assert!(
        s.log_text().contains("ChaCha20-Poly1305 first"),
        "{}",
        s.log_text()
    );
    assert_eq!(
        cipher_for(&s, SslVersion::TLS1_2, TLS12_AES_THEN_CHACHA),
        "ECDHE-ECDSA-CHACHA20-POLY1305"
    );
    assert_eq!(
        cipher_for(&s, SslVersion::TLS1_3, TLS13_AES_THEN_CHACHA),
        "TLS_CHACHA20_POLY1305_SHA256"
    );
    // A client without ChaCha20 still gets in.
    assert_eq!(
        cipher_for(&s, SslVersion::TLS1_3, "TLS_AES_256_GCM_SHA384"),
        "TLS_AES_256_GCM_SHA384"
    );
}

#[test]
fn cipher_choice_follows_the_cpu_and_honours_clients_that_prefer_chacha20() {
    let s = start_tls(&[]);
    #[cfg(target_arch = "x86_64")]
    let has_aes = std::arch::is_x86_feature_detected!("aes");
    #[cfg(not(target_arch = "x86_64"))]
    let has_aes = s.log_text().contains("AES-GCM first");
    let (want12, want13) = if has_aes {
        ("ECDHE-ECDSA-AES128-GCM-SHA256", "TLS_AES_128_GCM_SHA256")
    } else {
        (
            "ECDHE-ECDSA-CHACHA20-POLY1305",
            "TLS_CHACHA20_POLY1305_SHA256",
        )
    };
    assert_eq!(
        cipher_for(&s, SslVersion::TLS1_2, TLS12_AES_THEN_CHACHA),
        want12
    );
    assert_eq!(
        cipher_for(&s, SslVersion::TLS1_3, TLS13_AES_THEN_CHACHA),
        want13
    );
    // A client that lists ChaCha20 first (it has no AES itself) gets it, as with Go.
    assert_eq!(
        cipher_for(&s, SslVersion::TLS1_2, TLS12_CHACHA_THEN_AES),
        "ECDHE-ECDSA-CHACHA20-POLY1305"
    );
    assert_eq!(
        cipher_for(&s, SslVersion::TLS1_3, TLS13_CHACHA_THEN_AES),
        "TLS_CHACHA20_POLY1305_SHA256"
    );
}

#[test]
fn bad_tls_set_ups_exit_2_with_one_line_naming_the_file() {
    let dir = TempDir::new("badtls");
    let data = dir.path().join("never");
    let path_flag = format!("--path={}", data.display());
    let (cert_a, key_a) = openssl_pair(dir.path(), "a", "ec");
    let (_, key_b) = openssl_pair(dir.path(), "b", "ec");
    let junk = dir.path().join("junk.pem");
    std::fs::write(&junk, b"-----BEGIN NOTHING-----\nxx\n").unwrap();
    let missing = dir.path().join("missing.pem");
    let encrypted = dir.path().join("encrypted.pem");
    openssl(&[
        "pkey",
        "-in",
        key_a.to_str().unwrap(),
        "-aes256",
        "-passout",
        "pass:secret",
        "-out",
        encrypted.to_str().unwrap(),
    ]);
    let d = dir.path().to_str().unwrap();
    let f = |p: &Path| p.to_str().unwrap().to_owned();
    let cases: Vec<(Vec<String>, &str)> = vec![
        (vec!["--tls".into()], "public_key"),
        (
            vec!["--tls-cert".into(), f(&cert_a)],
            "--tls-cert needs --tls",
        ),
        (
            vec!["--tls".into(), "--tls-min-ver=1.1".into()],
            "--tls-min-ver",
        ),
        (
            vec!["--tls".into(), "--tls-hostname=x".into()],
            "--tls-hostname",
        ),
        (
            vec![
                "--tls".into(),
                format!("--tls-cert={}", f(&missing)),
                format!("--tls-key={}", f(&key_a)),
            ],
            "missing.pem",
        ),
        (
            vec![
                "--tls".into(),
                format!("--tls-cert={}", f(&cert_a)),
                format!("--tls-key={}", f(&key_b)),
            ],
            "does not belong",
        ),
        (
            vec![
                "--tls".into(),
                format!("--tls-cert={}", f(&junk)),
                format!("--tls-key={}", f(&key_a)),
            ],
            "no PEM certificate",
        ),
        (
            vec![
                "--tls".into(),
                format!("--tls-cert={}", f(&cert_a)),
                format!("--tls-key={}", f(&junk)),
            ],
            "not a PEM private key",
        ),
        (
            vec![
                "--tls".into(),
                format!("--tls-cert={}", f(&cert_a)),
                format!("--tls-key={}", f(&encrypted)),
            ],
            "protected by a passphrase",
        ),
        (
            vec![
                "--tls".into(),
                format!("--tls-cert={d}"),
                format!("--tls-key={}", f(&key_a)),
            ],
            "cannot read TLS certificate",
        ),
    ];
    for (args, needle) in cases {
        let mut all = vec![path_flag.as_str(), "--no-auth"];
        all.extend(args.iter().map(String::as_str));
        let (code, out, err) = run_cli(&all);
        assert_eq!(code, 2, "{args:?}: {err}");
        assert!(out.is_empty());
        assert_eq!(err.trim().lines().count(), 1, "{args:?}: {err}");
        assert!(err.starts_with("rest-server: "), "{err}");
        assert!(err.contains(needle), "{args:?}: {err}");
        assert!(!data.exists(), "{args:?} touched the disk");
    }
}

#[test]
fn a_fullchain_file_sends_the_intermediate_certificate() {
    // Let's Encrypt's fullchain.pem: leaf then intermediate; clients trust only the root.
    let dir = TempDir::new("chain");
    let p = |n: &str| dir.path().join(n).to_str().unwrap().to_owned();
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
    ];
    std::fs::write(
        p("ca.ext"),
        "basicConstraints=critical,CA:TRUE\nkeyUsage=critical,keyCertSign\n",
    )
    .unwrap();
    std::fs::write(p("leaf.ext"), "subjectAltName=IP:127.0.0.1\n").unwrap();
    let mut root = vec!["req", "-x509", "-days", "2", "-subj", "/CN=test root"];
    root.extend(ec);
    let (root_key, root_crt) = (p("root.key"), p("root.crt"));
    root.extend([
        "-keyout",
        &root_key,
        "-out",
        &root_crt,
        "-addext",
        "basicConstraints=critical,CA:TRUE",
    ]);
    openssl(&root);
    // name, issuer, extensions
    for (name, ca, ext) in [("int", "root", "ca.ext"), ("leaf", "int", "leaf.ext")] {
        let (key, csr, crt) = (
            p(&format!("{name}.key")),
            p(&format!("{name}.csr")),
            p(&format!("{name}.crt")),
        );
        let subj = format!("/CN={name}");
        let mut req = vec!["req", "-subj", &subj, "-keyout", &key, "-out", &csr];
        req.extend(ec);
        openssl(&req);
        let (ca_crt, ca_key, extfile) = (p(&format!("{ca}.crt")), p(&format!("{ca}.key")), p(ext));
        openssl(&[
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            &ca_crt,
            "-CAkey",
            &ca_key,
            "-set_serial",
            "7",
            "-days",
            "2",
            "-extfile",
            &extfile,
            "-out",
            &crt,
        ]);
    }
    let chain = [
        std::fs::read(p("leaf.crt")).unwrap(),
        std::fs::read(p("int.crt")).unwrap(),
    ]
    .concat();
    std::fs::write(p("fullchain.pem"), chain).unwrap();
    let (cert_flag, key_flag) = (
        format!("--tls-cert={}", p("fullchain.pem")),
        format!("--tls-key={}", p("leaf.key")),
    );
    let s = Server::start(&["--tls", &cert_flag, &key_flag]);
    let mut c = connect_to(&s, Path::new(&root_crt));
    assert_eq!(send(&mut c, s.req("GET", "/x/config"), "GET").status, 404);
    // The fingerprint logged is the leaf's.
    assert_eq!(
        logged_fingerprints(&s),
        [openssl_fingerprint(Path::new(&p("leaf.crt")))]
    );
}

#[test]
fn sigterm_lets_a_tls_upload_in_flight_finish_then_exits_0() {
    let mut s = start_tls(&[]);
    let mut c = connect(&s);
    assert_eq!(
        send(&mut c, s.req("POST", "/r/?create=true"), "POST").status,
        200
    );
    let body = random_bytes(1 << 20, 21);
    let id = sha256_hex(&body);
    let head = post_head(&format!("/r/data/{id}"), body.len());
    c.get_mut().write_all(head.as_bytes()).unwrap();
    c.get_mut().write_all(&body[..1000]).unwrap();
    wait_until(5, "temp file of the upload", || {
        !s.files_named("rest-server-temp").is_empty()
    });
    s.signal("TERM");
    s.wait_log("shutting down", 5);
    c.get_mut().write_all(&body[1000..]).unwrap();
    let r = read_response(&mut c, "POST");
    assert_eq!(r.status, 200);
    assert_eq!(r.header("connection"), Some("close"));
    assert_eq!(s.wait_exit(10).code(), Some(0));
    let stored = s.data.join(format!("r/data/{}/{id}", &id[..2]));
    assert!(std::fs::read(stored).unwrap() == body);
}

#[test]
fn restic_over_https_with_a_generated_certificate() {
    // docs/tls.md: restic cannot pin a fingerprint; it trusts the certificate given with --cacert.
    let s = start_tls(&[]);
    let work = TempDir::new("restic-tls");
    let src = work.path().join("src");
    std::fs::create_dir_all(&src).unwrap();
    for i in 0..3u64 {
        std::fs::write(src.join(format!("f{i}.bin")), random_bytes(4 << 20, i)).unwrap();
    }
    let url = format!("rest:https://{}/repo", s.addr);
    let restic = |args: &[&str]| {
        let out = Command::new("restic")
            .arg("--cacert")
            .arg(cert_of(&s))
            .args(args)
            .env("RESTIC_REPOSITORY", &url)
            .env("RESTIC_PASSWORD", "correct horse battery staple")
            .env("RESTIC_CACHE_DIR", work.path().join("cache"))
            .env_remove("RESTIC_PASSWORD_FILE")
            .output()
            .expect("restic must be installed (apt-get install restic)");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "restic {args:?}:\n{text}");
        text
    };
    restic(&["init"]);
    restic(&["backup", "--quiet", src.to_str().unwrap()]);
    let check = restic(&["check", "--read-data"]);
    assert!(check.contains("no errors were found"), "{check}");
    // Without the certificate restic refuses the server.
    let out = Command::new("restic")
        .args(["snapshots"])
        .env("RESTIC_REPOSITORY", &url)
        .env("RESTIC_PASSWORD", "correct horse battery staple")
        .env("RESTIC_CACHE_DIR", work.path().join("cache"))
        .output()
        .unwrap();
    assert!(!out.status.success());
}

#[test]
fn framing_over_tls_is_the_same_as_over_plain_http() {
    // Our TLS adapter sits between the socket and hyper: it must neither lose nor hold back
    // plaintext that openssl has already decrypted. Pipelined requests in one record, a head
    // and body byte by byte (a record each), the audit's body that reads like a request, and
    // pipelined requests after the server took the idle connection from hyper.
    let s = start_tls(&["--debug"]);
    let mut c = connect(&s);
    assert_eq!(
        send(&mut c, s.req("POST", "/r/?create=true"), "POST").status,
        200
    );
    let put = b"the-config";
    let head = format!(
        "POST /r/config HTTP/1.1\r\nHost: t\r\nContent-Length: {}\r\n\r\n",
        put.len()
    );
    for b in head.as_bytes().iter().chain(put) {
        c.get_mut().write_all(&[*b]).unwrap(); // one TLS record per byte
    }
    assert_eq!(read_response(&mut c, "POST").status, 200);
    drop(c); // before it turns idle: only the connection under test below is ever let go
    let four = "GET /r/config HTTP/1.1\r\nHost: t\r\n\r\n\
                GET /r/keys/none HTTP/1.1\r\nHost: t\r\n\r\n\
                GET /r/config HTTP/1.1\r\nHost: t\r\n\r\n\
                HEAD /r/config HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n";
    let mut c = connect(&s);
    c.get_mut().write_all(four.as_bytes()).unwrap();
    let got: Vec<u16> = ["GET", "GET", "GET", "HEAD"]
        .iter()
        .map(|m| read_response(&mut c, m).status)
        .collect();
    assert_eq!(got, [200, 404, 200, 200]);

    // The audit's case, the body after a pause past the let-go time.
    let smuggled = b"DELETE /r/config HTTP/1.1\r\nHost: x\r\n\r\n";
    let id = sha256_hex(smuggled);
    let mut c = connect(&s);
    let upload = format!(
        "GET /r/config HTTP/1.1\r\nHost: t\r\n\r\n\
         POST /r/snapshots/{id} HTTP/1.1\r\nHost: t\r\nContent-Length: 38\r\n\r\n"
    );
    c.get_mut().write_all(upload.as_bytes()).unwrap();
    assert_eq!(read_response(&mut c, "GET").body, put);
    std::thread::sleep(Duration::from_millis(1500));
    // Counted while a request is open, so no let-go can come before the count (each one
    // below is counted at such a moment too).
    let before = s.let_go_count();
    c.get_mut().write_all(smuggled).unwrap();
    assert_eq!(read_response(&mut c, "POST").status, 200);
    // Idle now: once hyper has let go, two requests in one record get two answers, and a
    // head begun in the same record, which hyper has read when it lets go again, is read
    // first by the next hyper.
    wait_until(10, "hyper let go of the idle TLS connection", || {
        s.let_go_count() > before
    });
    let two = format!(
        "GET /r/snapshots/{id} HTTP/1.1\r\nHost: t\r\n\r\nGET /r/config HTTP/1.1\r\nHost: t\r\n\r\nGET /r/con"
    );
    let before = s.let_go_count();
    c.get_mut().write_all(two.as_bytes()).unwrap();
    assert_eq!(read_response(&mut c, "GET").body, smuggled);
    assert_eq!(read_response(&mut c, "GET").body, put);
    wait_until(10, "let go with a head begun", || s.let_go_count() > before);
    c.get_mut()
        .write_all(b"fig HTTP/1.1\r\nHost: t\r\n\r\nHEAD /r/config HTTP/1.1\r\nHost: t\r\n\r\n")
        .unwrap();
    assert_eq!(read_response(&mut c, "GET").body, put);
    assert_eq!(
        read_response(&mut c, "HEAD").header("content-length"),
        Some("10")
    );
    // More pipelined requests than hyper reads at once (64 KiB): what openssl has already
    // decrypted beyond hyper's read is never left waiting for the socket.
    let mut c = connect(&s);
    let many = "HEAD /r/config HTTP/1.1\r\nHost: t\r\n\r\n".repeat(2000);
    assert!(many.len() > 64 * 1024);
    c.get_mut().write_all(many.as_bytes()).unwrap();
    for i in 0..2000 {
        let r = read_response(&mut c, "HEAD");
        assert_eq!(r.header("content-length"), Some("10"), "answer {i}");
    }
    let config = send(&mut c, s.req("GET", "/r/config"), "GET");
    assert_eq!(config.body, put, "the config is intact");
}
