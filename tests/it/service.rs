//! The server as a system service (packaging/README.md): `rest-server user add/remove` run as root leaves
//! a file the service's user can read; an htpasswd file the server may not read gets a hint
//! that fits (owner, mode, the chown to run); log lines carry their syslog priority when
//! stderr is the journal (JOURNAL_STREAM names it), and only then.
//!
//! The ownership tests need root (as CI runs them): they play a service user with a uid that
//! has no name, and run the server as that uid.

use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;
use testkit::{TempDir, bin, cli_with_stdin, wait_until};

/// The uid and gid of the pretend service user (no entry in /etc/passwd).
const SVC_UID: u32 = 43210;
const SVC_GID: u32 = 43211;

fn is_root() -> bool {
    fs::metadata("/proc/self").map(|m| m.uid()).ok() == Some(0)
}

/// `rest-server user ARGS --path DIR` with `stdin`: (exit code, stdout, stderr).
fn user_cmd(dir: &Path, args: &[&str], stdin: &str) -> (i32, String, String) {
    let dir = dir.to_str().unwrap();
    let all: Vec<&str> = ["user"]
        .iter()
        .chain(args)
        .chain(&["--path", dir])
        .copied()
        .collect();
    cli_with_stdin(&all, stdin)
}

fn owner_and_mode(p: &Path) -> (u32, u32, u32) {
    let m = fs::metadata(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    (m.uid(), m.gid(), m.mode() & 0o7777)
}

/// A data directory owned by the pretend service user, as the .deb's postinst makes it.
fn service_data_dir(name: &str) -> (TempDir, PathBuf) {
    let tmp = TempDir::new(name);
    let data = tmp.path().join("data");
    fs::create_dir(&data).unwrap();
    fs::set_permissions(&data, fs::Permissions::from_mode(0o700)).unwrap();
    std::os::unix::fs::chown(&data, Some(SVC_UID), Some(SVC_GID)).unwrap();
    (tmp, data)
}

/// Starts the server as the pretend service user, stderr collected; returns the child and a
/// receiver of its stderr lines.
fn spawn_as_service(args: &[&str]) -> (Child, mpsc::Receiver<String>) {
    let mut child = Command::new(bin())
        .args(args)
        .uid(SVC_UID)
        .gid(SVC_GID)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start rest-server");
    let (tx, rx) = mpsc::channel();
    let stderr = child.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    (child, rx)
}

#[test]
fn user_add_as_root_gives_a_new_file_the_directory_owner_and_the_service_can_read_it() {
    if !is_root() {
        eprintln!("skipped: needs root (CI runs as root)");
        return;
    }
    let (_tmp, data) = service_data_dir("owner-new");
    let (code, out, err) = user_cmd(&data, &["add", "--password-stdin", "alice"], "pw-a\n");
    assert_eq!(code, 0, "{out}{err}");
    let file = data.join(".htpasswd");
    let lock = data.join(".htpasswd.lock");
    assert_eq!(
        owner_and_mode(&file),
        (SVC_UID, SVC_GID, 0o600),
        "new .htpasswd"
    );
    assert_eq!(
        owner_and_mode(&lock),
        (SVC_UID, SVC_GID, 0o600),
        "new lock file"
    );

    // The server, running as the directory's owner, starts and lets alice in.
    let (child, rx) =
        spawn_as_service(&["--path", data.to_str().unwrap(), "--listen", "127.0.0.1:0"]);
    let _kill = testkit::KillOnDrop(child);
    let mut seen = Vec::new();
    let addr = loop {
        match rx.recv_timeout(Duration::from_secs(20)) {
            Ok(line) => {
                if let Some(rest) = line.split("start server on ").nth(1) {
                    break rest.trim().to_owned();
                }
                seen.push(line);
            }
            Err(_) => panic!("server as uid {SVC_UID} did not start: {seen:?}"),
        }
    };
    let status = |user: &str, pw: &str| {
        let mut s = std::net::TcpStream::connect(&addr).unwrap();
        let auth = testkit::b64(format!("{user}:{pw}").as_bytes());
        write!(
            s,
            "POST /alice/?create=true HTTP/1.1\r\nHost: x\r\nAuthorization: Basic {auth}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        testkit::read_response(&mut BufReader::new(s), "POST").status
    };
    assert_eq!(status("alice", "pw-a"), 200);
    assert_eq!(status("alice", "wrong"), 401);
}

#[test]
fn user_add_and_remove_as_root_keep_the_owner_of_an_existing_file() {
    if !is_root() {
        eprintln!("skipped: needs root (CI runs as root)");
        return;
    }
    let (_tmp, data) = service_data_dir("owner-keep");
    let file = data.join(".htpasswd");
    // Made by someone else, say the old Go server's user, with group read.
    fs::write(&file, "# users\n").unwrap();
    fs::set_permissions(&file, fs::Permissions::from_mode(0o640)).unwrap();
    std::os::unix::fs::chown(&file, Some(SVC_UID + 7), Some(SVC_GID + 7)).unwrap();
    for (args, stdin) in [
        (&["add", "--password-stdin", "alice"][..], "pw-a\n"),
        (&["add", "--password-stdin", "bob"][..], "pw-b\n"),
        (&["remove", "alice"][..], ""),
    ] {
        let (code, out, err) = user_cmd(&data, args, stdin);
        assert_eq!(code, 0, "{args:?}: {out}{err}");
        assert_eq!(
            owner_and_mode(&file),
            (SVC_UID + 7, SVC_GID + 7, 0o640),
            "{args:?}"
        );
        assert_eq!(
            owner_and_mode(&data.join(".htpasswd.lock")).0,
            SVC_UID + 7,
            "{args:?}: lock file"
        );
    }
    let text = fs::read_to_string(&file).unwrap();
    assert!(text.starts_with("# users\nbob:$2"), "{text}");
}

/// Starts the server (as the service user when root, else as ourselves) on `data` and
/// returns its exit code and stderr: it must refuse to start.
fn refused_start(data: &Path) -> (i32, String) {
    let mut cmd = Command::new(bin());
    cmd.arg("--path")
        .arg(data)
        .args(["--listen", "127.0.0.1:0"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    if is_root() {
        cmd.uid(SVC_UID).gid(SVC_GID);
    }
    let out = cmd.output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn an_unreadable_htpasswd_file_gets_a_hint_that_fits() {
    let (tmp, data) = if is_root() {
        service_data_dir("hint")
    } else {
        let tmp = TempDir::new("hint");
        let data = tmp.path().join("data");
        fs::create_dir(&data).unwrap();
        (tmp, data)
    };
    let file = data.join(".htpasswd");
    fs::write(&file, "alice:{SHA}x\n").unwrap();
    let expect: Vec<String> = if is_root() {
        // What `sudo htpasswd -c` leaves: root's, 0600. The server runs as the data's owner.
        fs::set_permissions(&file, fs::Permissions::from_mode(0o600)).unwrap();
        vec![
            "owned by root (uid 0)".into(),
            "mode 0600".into(),
            format!("runs as uid {SVC_UID}"),
            format!("`chown {SVC_UID}: {}`", file.display()),
        ]
    } else {
        fs::set_permissions(&file, fs::Permissions::from_mode(0o000)).unwrap();
        vec![
            "mode 0000".into(),
            format!("`chmod u+r {}`", file.display()),
        ]
    };
    let (code, err) = refused_start(&data);
    assert_eq!(code, 2, "{err}");
    let line = err
        .lines()
        .find(|l| l.contains("cannot load htpasswd file"))
        .unwrap_or_else(|| panic!("no error line: {err}"));
    for e in &expect {
        assert!(line.contains(e.as_str()), "missing {e:?} in: {line}");
    }
    assert!(
        !line.contains("create it"),
        "a file that exists gets no advice to create it: {line}"
    );

    // A data directory the server may not enter: the hint names the directory.
    if is_root() {
        std::os::unix::fs::chown(&data, Some(0), Some(0)).unwrap();
        let (code, err) = refused_start(&data);
        assert_eq!(code, 2, "{err}");
        assert!(
            err.contains(&format!(
                "the directory {} is owned by root (uid 0)",
                data.display()
            )) && err.contains(&format!("`chown {SVC_UID}: {}`", data.display())),
            "{err}"
        );
    }

    // A missing file still gets the advice to create one, the README's way first.
    fs::remove_file(&file).unwrap();
    if is_root() {
        std::os::unix::fs::chown(&data, Some(SVC_UID), Some(SVC_GID)).unwrap();
    }
    let (code, err) = refused_start(&data);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains(&format!(
            "create it with `rest-server user add --path {} USER`",
            data.display()
        )),
        "{err}"
    );
    drop(tmp);
}

/// Runs the server with stderr sent to a file and `journal_stream` as JOURNAL_STREAM (`None`:
/// unset; `Some("")`: the file's own device and inode), `--debug`, until it is up and has
/// answered one request; returns the file's lines.
fn log_lines(journal_stream: Option<&str>, args: &[&str]) -> Vec<String> {
    let tmp = TempDir::new("journal");
    let log = tmp.path().join("stderr");
    let f = fs::File::create(&log).unwrap();
    let m = f.metadata().unwrap();
    let mut cmd = Command::new(bin());
    cmd.arg("--path")
        .arg(tmp.path().join("data"))
        .args(["--listen", "127.0.0.1:0", "--debug"])
        .args(args)
        .stdout(Stdio::null())
        .stderr(f)
        .env_remove("JOURNAL_STREAM");
    match journal_stream {
        Some("") => {
            cmd.env("JOURNAL_STREAM", format!("{}:{}", m.dev(), m.ino()));
        }
        Some(v) => {
            cmd.env("JOURNAL_STREAM", v);
        }
        None => {}
    }
    let child = cmd.spawn().unwrap();
    let mut child = testkit::KillOnDrop(child);
    let text = || fs::read_to_string(&log).unwrap_or_default();
    wait_until(20, "start-up line or exit", || {
        text().contains("start server on") || matches!(child.0.try_wait(), Ok(Some(_)))
    });
    if let Some(addr) = text()
        .split("start server on ")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .map(str::to_owned)
    {
        // A request that fails to log in: a DEBUG line.
        let mut s = std::net::TcpStream::connect(&addr).unwrap();
        let auth = testkit::b64(b"nobody:wrong");
        write!(
            s,
            "GET /config HTTP/1.1\r\nHost: x\r\nAuthorization: Basic {auth}\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        testkit::read_response(&mut BufReader::new(s), "GET");
        wait_until(20, "debug line", || text().contains("DEBUG"));
    }
    let _ = child.0.kill();
    let _ = child.0.wait();
    text().lines().map(str::to_owned).collect()
}

#[test]
fn log_lines_carry_their_priority_when_stderr_is_the_journal() {
    let lines = log_lines(Some(""), &["--no-auth"]);
    let find = |level: &str| {
        lines
            .iter()
            .find(|l| l.contains(level))
            .unwrap_or_else(|| panic!("no {level} line in {lines:?}"))
            .clone()
    };
    assert!(find("INFO").starts_with("<6>INFO "), "{lines:?}");
    // --path under /tmp: a warning.
    assert!(find("WARN").starts_with("<4>WARN "), "{lines:?}");
    assert!(find("DEBUG").starts_with("<7>DEBUG"), "{lines:?}");
    assert!(
        lines.iter().all(|l| l.starts_with('<')),
        "every line has a priority: {lines:?}"
    );

    // A configuration error (no htpasswd file): the line journalctl -p err shows.
    let lines = log_lines(Some(""), &[]);
    let error = lines
        .iter()
        .find(|l| l.contains("cannot load htpasswd file"))
        .unwrap_or_else(|| panic!("{lines:?}"));
    assert!(error.starts_with("<3>ERROR "), "{error}");
}

#[test]
fn log_lines_are_unchanged_when_stderr_is_not_the_journal() {
    // Unset, garbage, or naming another stream than our stderr (inherited from a parent whose
    // stderr was the journal): the usual timestamped lines.
    for js in [None, Some("1:2"), Some("journal"), Some("0:0")] {
        let lines = log_lines(js, &["--no-auth"]);
        assert!(
            lines.iter().any(|l| l.contains("start server on")),
            "{js:?}: {lines:?}"
        );
        for l in &lines {
            assert!(
                !l.starts_with('<') && l.as_bytes()[0].is_ascii_digit() && l.contains('Z'),
                "{js:?}: {l}"
            );
        }
    }
}

/// The unit that the .deb installs stops restarting on a configuration error (exit 2), which
/// the server uses for exactly those.
#[test]
fn the_unit_does_not_restart_on_a_configuration_error() {
    let unit = fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("packaging/debian/rest-server.service"),
    )
    .unwrap();
    assert!(
        unit.lines()
            .any(|l| l.trim() == "RestartPreventExitStatus=2"),
        "{unit}"
    );
    let (code, err) = {
        let out = Command::new(bin()).arg("--bogus-flag").output().unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    assert_eq!(code, 2, "{err}");
}
