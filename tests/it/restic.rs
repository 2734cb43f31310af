//! End-to-end with the real `restic` client (Debian package `restic`): what a user does.

use std::path::Path;
use std::process::Command;
use testkit::*;

/// ~50 MiB of files: a few large incompressible ones and many small ones.
fn make_source(root: &Path) {
    std::fs::create_dir_all(root.join("small")).unwrap();
    for i in 0..5u64 {
        std::fs::write(root.join(format!("big{i}.bin")), random_bytes(10 << 20, i)).unwrap();
    }
    for i in 0..200u64 {
        std::fs::write(
            root.join(format!("small/f{i}.txt")),
            random_bytes(500 + i as usize * 37, 1000 + i),
        )
        .unwrap();
    }
}

/// `init`, then two backups of a fresh ~50 MiB source tree (one file changed in between),
/// then `check --read-data`. Returns the source dir.
fn init_and_back_up_twice(dir: &Path, url: &str) -> std::path::PathBuf {
    let src = dir.join("src");
    make_source(&src);
    ok(restic(dir, url, &["init"]), "init");
    let backup = ["backup", "--quiet", src.to_str().unwrap()];
    ok(restic(dir, url, &backup), "backup");
    std::fs::write(src.join("small/f0.txt"), b"changed").unwrap();
    ok(restic(dir, url, &backup), "backup 2");
    ok(
        restic(dir, url, &["check", "--read-data"]),
        "check --read-data",
    );
    src
}

fn same_tree(a: &Path, b: &Path) {
    let mut files = 0;
    walk(a, &mut |p| {
        let rel = p.strip_prefix(a).unwrap();
        assert_eq!(
            std::fs::read(p).unwrap(),
            std::fs::read(b.join(rel)).unwrap(),
            "{rel:?} differs"
        );
        files += 1;
    });
    assert_eq!(files, 205);
}

fn htpasswd(dir: &Path, user: &str, password: &str) {
    let st = Command::new("htpasswd")
        .args(["-B", "-b", "-c"])
        .arg(dir.join(".htpasswd"))
        .args([user, password])
        .output()
        .expect("htpasswd must be installed (apt-get install apache2-utils)");
    assert!(st.status.success());
}

#[test]
fn backup_check_restore_diff_forget_prune() {
    let dir = TempDir::new("restic");
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    htpasswd(&data, "alice", "s3cret");
    let s = Server::start_in(
        TempDir::new("restic-srv"),
        &["--path", data.to_str().unwrap()],
    );
    let url = format!("rest:http://alice:s3cret@{}/alice/laptop", s.addr);
    let src = init_and_back_up_twice(dir.path(), &url);

    let restore = dir.path().join("restore");
    ok(
        restic(
            dir.path(),
            &url,
            &["restore", "latest", "--target", restore.to_str().unwrap()],
        ),
        "restore",
    );
    same_tree(&src, &restore.join(src.strip_prefix("/").unwrap()));

    let snaps = ok(
        restic(dir.path(), &url, &["snapshots", "--json"]),
        "snapshots",
    );
    let ids: Vec<&str> = snaps
        .match_indices("\"short_id\":\"")
        .map(|(i, m)| &snaps[i + m.len()..i + m.len() + 8])
        .collect();
    assert_eq!(ids.len(), 2, "{snaps}");
    let diff = ok(restic(dir.path(), &url, &["diff", ids[0], ids[1]]), "diff");
    assert!(diff.contains("f0.txt"), "{diff}");
    let stats = ok(restic(dir.path(), &url, &["stats"]), "stats");
    assert!(stats.contains("Total File Count"), "{stats}");
    let ls = ok(restic(dir.path(), &url, &["ls", "latest"]), "ls");
    assert!(ls.contains("/small/f199.txt"), "{ls}");
    // Rewrites the index: lists, reads and deletes index files. `repair index` since 0.16.
    let repair: &[&str] = if restic_minor() >= 16 {
        &["repair", "index"]
    } else {
        &["rebuild-index"]
    };
    ok(restic(dir.path(), &url, repair), "repair index");

    ok(
        restic(dir.path(), &url, &["forget", "--keep-last", "1", "--prune"]),
        "forget --prune",
    );
    let snaps = ok(
        restic(dir.path(), &url, &["snapshots", "--json"]),
        "snapshots",
    );
    assert_eq!(snaps.matches("\"short_id\"").count(), 1);
    ok(restic(dir.path(), &url, &["check"]), "check after prune");

    // Wrong password: restic gets 401 and fails.
    let bad = format!("rest:http://alice:wrong@{}/alice/laptop", s.addr);
    assert!(!restic(dir.path(), &bad, &["snapshots"]).status.success());
    assert!(s.files_named("rest-server-temp").is_empty());
}

#[test]
fn append_only_backup_works_and_forget_prune_fails() {
    let dir = TempDir::new("restic-ao");
    let s = Server::start(&["--append-only"]);
    let url = format!("rest:http://{}/ao", s.addr);
    init_and_back_up_twice(dir.path(), &url);
    let out = restic(dir.path(), &url, &["forget", "--keep-last", "1", "--prune"]);
    assert!(
        !out.status.success(),
        "forget --prune must fail in append-only mode"
    );
    // Both snapshots are still there.
    let snaps = ok(
        restic(dir.path(), &url, &["snapshots", "--json"]),
        "snapshots",
    );
    assert_eq!(snaps.matches("\"short_id\"").count(), 2, "{snaps}");
    ok(restic(dir.path(), &url, &["check"]), "check");
}

/// docs/access.md: rights from `--access-file`, as restic experiences them.
#[test]
fn access_file_rights_with_restic() {
    let dir = TempDir::new("restic-access");
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    htpasswd(&data, "alice", "a-pw");
    for (user, pw) in [("monitor", "m-pw"), ("lap1", "l-pw")] {
        let st = Command::new("htpasswd")
            .args(["-B", "-b"])
            .arg(data.join(".htpasswd"))
            .args([user, pw])
            .output()
            .unwrap();
        assert!(st.status.success());
    }
    let rules = dir.path().join("access");
    std::fs::write(
        &rules,
        "[permissions]\nalice/** = alice:w, monitor:r\nlaptops/* = *:a\n",
    )
    .unwrap();
    let s = Server::start_in(
        TempDir::new("restic-access-srv"),
        &[
            "--path",
            data.to_str().unwrap(),
            "--access-file",
            rules.to_str().unwrap(),
        ],
    );
    let src = dir.path().join("src");
    std::fs::create_dir_all(&src).unwrap();
    for i in 0..20u64 {
        std::fs::write(src.join(format!("f{i}")), random_bytes(50_000, i)).unwrap();
    }
    let backup = ["backup", "--quiet", src.to_str().unwrap()];
    let d = dir.path();

    // The laptop user appends: init and backups work, forget --prune does not.
    let laptop = format!("rest:http://lap1:l-pw@{}/laptops/x", s.addr);
    ok(restic(d, &laptop, &["init"]), "init as lap1");
    ok(restic(d, &laptop, &backup), "backup as lap1");
    std::fs::write(src.join("f0"), b"changed").unwrap();
    ok(restic(d, &laptop, &backup), "backup 2 as lap1");
    let out = restic(d, &laptop, &["forget", "--keep-last", "1", "--prune"]);
    assert!(!out.status.success(), "forget --prune needs w");
    let snaps = ok(restic(d, &laptop, &["snapshots", "--json"]), "snapshots");
    assert_eq!(snaps.matches("\"short_id\"").count(), 2, "{snaps}");

    // monitor reads alice's repository (locking it, as restic does) but cannot back up.
    let alice = format!("rest:http://alice:a-pw@{}/alice/main", s.addr);
    ok(restic(d, &alice, &["init"]), "init as alice");
    ok(restic(d, &alice, &backup), "backup as alice");
    let monitor = format!("rest:http://monitor:m-pw@{}/alice/main", s.addr);
    ok(
        restic(d, &monitor, &["check", "--read-data"]),
        "check --read-data as monitor",
    );
    std::fs::write(src.join("f1"), b"changed too").unwrap();
    let out = restic(d, &monitor, &backup);
    assert!(!out.status.success(), "monitor must not back up");
    let snaps = ok(restic(d, &alice, &["snapshots", "--json"]), "snapshots");
    assert_eq!(snaps.matches("\"short_id\"").count(), 1, "{snaps}");
    // Nothing of alice's is open to the laptop user.
    let lap_on_alice = format!("rest:http://lap1:l-pw@{}/alice/main", s.addr);
    assert!(!restic(d, &lap_on_alice, &["snapshots"]).status.success());
}
