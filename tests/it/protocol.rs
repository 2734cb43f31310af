//! docs/protocol.md: every row of the operations table, listings, ranges and upload rules, against
//! the real binary.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use testkit::*;

const V2: &str = "application/vnd.x.restic.rest.v2";

fn obj(data: &[u8]) -> String {
    sha256_hex(data)
}

#[test]
fn create_repo_is_idempotent_and_needs_create_true() {
    let s = Server::start(&[]);
    assert_eq!(s.post("/alice/laptop/?create=true", b"").status, 200);
    assert_eq!(
        s.post("/alice/laptop/?create=true", b"").status,
        200,
        "idempotent"
    );
    let repo = s.data.join("alice/laptop");
    for d in [
        "data",
        "index",
        "keys",
        "locks",
        "snapshots",
        "data/00",
        "data/ff",
        "data/7a",
    ] {
        assert!(repo.join(d).is_dir(), "{d} missing");
    }
    assert_eq!(std::fs::read_dir(repo.join("data")).unwrap().count(), 256);
    assert_eq!(s.post("/bob/", b"").status, 400, "without create=true");
    assert_eq!(s.post("/bob/?create=false", b"").status, 400);
    assert!(!s.data.join("bob").exists());
    let r = s.get("/alice/laptop/");
    assert_eq!(r.status, 405);
    assert_eq!(r.header("allow"), Some("POST"));
    // Root repo.
    assert_eq!(s.post("/?create=true", b"").status, 200);
    assert!(s.data.join("keys").is_dir());
}

#[test]
fn config_operations() {
    let s = Server::start(&[]);
    s.create_repo("r");
    assert_eq!(s.head("/r/config").status, 404);
    assert_eq!(s.get("/r/config").status, 404);
    assert_eq!(s.post("/r/config", b"cfg-v1").status, 200);
    let h = s.head("/r/config");
    assert_eq!(h.status, 200);
    assert_eq!(h.header("content-length"), Some("6"));
    assert!(h.body.is_empty());
    let g = s.get("/r/config");
    assert_eq!((g.status, g.body.as_slice()), (200, &b"cfg-v1"[..]));
    // Config exists: 403, content unchanged.
    assert_eq!(s.post("/r/config", b"other").status, 403);
    assert_eq!(s.get("/r/config").body, b"cfg-v1");
    assert_eq!(s.delete("/r/config").status, 200);
    assert_eq!(s.get("/r/config").status, 404);
    assert_eq!(
        s.delete("/r/config").status,
        200,
        "deleting a missing config is 200"
    );
    let r = s.req("PUT", "/r/config").send();
    assert_eq!(r.status, 405);
    assert_eq!(r.header("allow"), Some("HEAD, GET, POST, DELETE"));
    // No temp files are left beside it.
    assert!(s.files_named("rest-server-temp").is_empty());
}

#[test]
fn config_in_a_repo_that_does_not_exist_is_404() {
    let s = Server::start(&[]);
    assert_eq!(s.post("/nope/config", b"x").status, 404);
    assert!(!s.data.join("nope").exists());
}

#[test]
fn object_operations_for_every_type() {
    let s = Server::start(&[]);
    s.create_repo("a/b");
    for (i, kind) in ["data", "index", "keys", "locks", "snapshots"]
        .iter()
        .enumerate()
    {
        let body = random_bytes(1000 + i, i as u64);
        let id = obj(&body);
        let path = format!("/a/b/{kind}/{id}");
        assert_eq!(s.head(&path).status, 404);
        assert_eq!(s.get(&path).status, 404);
        assert_eq!(s.post(&path, &body).status, 200, "{kind}");
        let on_disk = if *kind == "data" {
            s.data.join(format!("a/b/data/{}/{id}", &id[..2]))
        } else {
            s.data.join(format!("a/b/{kind}/{id}"))
        };
        assert_eq!(std::fs::read(&on_disk).unwrap(), body);
        let h = s.head(&path);
        assert_eq!(h.status, 200);
        assert_eq!(
            h.header("content-length"),
            Some(body.len().to_string().as_str())
        );
        let g = s.get(&path);
        assert_eq!(g.status, 200);
        assert_eq!(g.body, body);
        assert_eq!(g.header("accept-ranges"), Some("bytes"));
        assert_eq!(s.delete(&path).status, 200);
        assert!(!on_disk.exists());
        assert_eq!(s.delete(&path).status, 200, "idempotent delete");
        assert_eq!(s.head(&path).status, 404);
        let r = s.req("PATCH", &path).send();
        assert_eq!(r.status, 405);
        assert_eq!(r.header("allow"), Some("HEAD, GET, POST, DELETE"));
    }
}

#[test]
fn unknown_paths_are_404() {
    let s = Server::start(&[]);
    s.create_repo("r");
    let id = "a".repeat(64);
    for p in [
        format!("/r/data/{}", id.to_uppercase()),
        format!("/r/data/{}", &id[1..]),
        format!("/r/bogus/{id}"),
        "/r/data".into(),
        "/a/b/c/config".into(),
        "/r/%2e%2e/config".into(),
        "/r%2fx/config".into(),
        "/r/config/".into(),
    ] {
        assert_eq!(s.get(&p).status, 404, "{p}");
    }
}

#[test]
fn listings_v1_and_v2() {
    let s = Server::start(&[]);
    s.create_repo("r");
    let empty = s.get("/r/keys/");
    assert_eq!((empty.status, empty.text().trim()), (200, "[]"));
    assert_eq!(
        empty.header("content-type"),
        Some("application/vnd.x.restic.rest.v1")
    );
    let mut ids = vec![];
    for i in 0..5u64 {
        let body = random_bytes(10 + i as usize, i);
        ids.push((obj(&body), body.len()));
        assert_eq!(
            s.post(&format!("/r/data/{}", ids.last().unwrap().0), &body)
                .status,
            200
        );
    }
    // Stray files are never listed: a temp file of an upload in flight, junk, a file directly in data/.
    let sub = s.data.join(format!("r/data/{}", &ids[0].0[..2]));
    std::fs::write(sub.join(format!("{}.rest-server-temp1", ids[0].0)), b"x").unwrap();
    std::fs::write(sub.join("junk"), b"x").unwrap();
    std::fs::write(s.data.join("r/data").join("b".repeat(64)), b"x").unwrap();

    let v1 = s.get("/r/data/");
    assert_eq!(v1.status, 200);
    let mut names: Vec<String> = parse_json_strings(&v1.text());
    names.sort();
    let mut want: Vec<String> = ids.iter().map(|(i, _)| i.clone()).collect();
    want.sort();
    assert_eq!(names, want);

    let v2 = s.req("GET", "/r/data/").header("Accept", V2).send();
    assert_eq!(v2.status, 200);
    assert_eq!(v2.header("content-type"), Some(V2));
    let text = v2.text();
    for (id, len) in &ids {
        assert!(
            text.contains(&format!(r#"{{"name":"{id}","size":{len}}}"#)),
            "{text}"
        );
    }
    assert_eq!(text.matches("\"name\"").count(), 5);
    // Missing type dir (repo never created): 404.
    assert_eq!(s.get("/nothere/data/").status, 404);
    let r = s.req("POST", "/r/data/").send();
    assert_eq!((r.status, r.header("allow")), (405, Some("GET")));
}

/// Pulls the strings out of a JSON array of strings.
fn parse_json_strings(json: &str) -> Vec<String> {
    json.trim()
        .trim_start_matches('[')
        .trim_end_matches(']')
        .split(',')
        .filter(|s| !s.is_empty())
        .map(|s| s.trim_matches('"').to_owned())
        .collect()
}

#[test]
fn ranges_as_restic_sends_them() {
    let s = Server::start(&[]);
    s.create_repo("r");
    let body = random_bytes(10_000, 7);
    let path = format!("/r/data/{}", obj(&body));
    s.post(&path, &body);
    let r = s.req("GET", &path).header("Range", "bytes=0-").send();
    assert_eq!(r.status, 206);
    assert_eq!(r.header("content-range"), Some("bytes 0-9999/10000"));
    assert_eq!(r.header("content-length"), Some("10000"));
    assert_eq!(r.body, body);
    let r = s.req("GET", &path).header("Range", "bytes=100-199").send();
    assert_eq!(r.status, 206);
    assert_eq!(r.header("content-range"), Some("bytes 100-199/10000"));
    assert_eq!(r.body, &body[100..200]);
    let r = s.req("GET", &path).header("Range", "bytes=9990-").send();
    assert_eq!(r.body, &body[9990..]);
    let r = s.req("GET", &path).header("Range", "bytes=10000-").send();
    assert_eq!(r.status, 416);
    assert_eq!(r.header("content-range"), Some("bytes */10000"));
    let r = s.req("GET", &path).header("Range", "bytes=0-1,5-6").send();
    assert_eq!(
        (r.status, r.body.len()),
        (200, 10_000),
        "multi-range: whole body"
    );
}

#[test]
fn upload_of_an_existing_object_is_403_unless_identical_retry() {
    let s = Server::start(&[]);
    s.create_repo("r");
    let body = random_bytes(5000, 1);
    let id = obj(&body);
    let path = format!("/r/data/{id}");
    assert_eq!(s.post(&path, &body).status, 200);
    let file = s.data.join(format!("r/data/{}/{id}", &id[..2]));
    let before = std::fs::metadata(&file).unwrap();
    // A rewrite from now on would get a later mtime: wait until a fresh file does (the
    // kernel's file clock ticks coarsely).
    let probe = s.dir.path().join("mtime-probe");
    wait_until(5, "the file clock moves past the upload's mtime", || {
        std::fs::write(&probe, b"").unwrap();
        let m = std::fs::metadata(&probe).unwrap();
        (m.mtime(), m.mtime_nsec()) > (before.mtime(), before.mtime_nsec())
    });

    // protocol.md, Uploads 1: a retry whose 200 was lost gets 200 and the file is not touched.
    assert_eq!(s.post(&path, &body).status, 200);
    let after = std::fs::metadata(&file).unwrap();
    assert_eq!(before.ino(), after.ino());
    assert_eq!(before.mtime_nsec(), after.mtime_nsec());

    // Same length, other bytes: 403, nothing changes.
    let mut other = body.clone();
    other[0] ^= 1;
    assert_eq!(s.post(&path, &other).status, 403);
    // Other length: 403 before the body is read.
    assert_eq!(s.post(&path, &body[..10]).status, 403);
    assert_eq!(std::fs::read(&file).unwrap(), body);
    assert!(s.files_named("rest-server-temp").is_empty());
}

#[test]
fn existing_object_is_403_when_verification_is_off() {
    let s = Server::start(&["--no-verify-upload"]);
    s.create_repo("r");
    let body = b"hello".to_vec();
    let path = format!("/r/keys/{}", obj(&body));
    assert_eq!(s.post(&path, &body).status, 200);
    assert_eq!(s.post(&path, &body).status, 403);
    // Without verification a body that does not match its id is stored.
    let bad = format!("/r/keys/{}", "c".repeat(64));
    assert_eq!(s.post(&bad, b"whatever").status, 200);
}

#[test]
fn hash_mismatch_is_400_and_leaves_nothing() {
    let s = Server::start(&[]);
    s.create_repo("r");
    let id = "d".repeat(64);
    for kind in ["data", "keys", "snapshots"] {
        assert_eq!(
            s.post(&format!("/r/{kind}/{id}"), b"not the right bytes")
                .status,
            400
        );
    }
    assert!(s.files_named(&id).is_empty(), "{:?}", s.files_named(&id));
}

#[test]
fn upload_to_a_repo_that_does_not_exist_is_404() {
    let s = Server::start(&[]);
    let body = b"x";
    assert_eq!(
        s.post(&format!("/ghost/data/{}", obj(body)), body).status,
        404
    );
    assert!(!s.data.join("ghost").exists());
}

#[test]
fn missing_data_subdir_is_created_on_demand() {
    let s = Server::start(&[]);
    s.create_repo("r");
    let body = b"on demand";
    let id = obj(body);
    std::fs::remove_dir(s.data.join(format!("r/data/{}", &id[..2]))).unwrap();
    assert_eq!(s.post(&format!("/r/data/{id}"), body).status, 200);
    assert!(s.data.join(format!("r/data/{}/{id}", &id[..2])).is_file());
}

#[test]
fn chunked_upload_is_accepted() {
    let s = Server::start(&[]);
    s.create_repo("r");
    let body = random_bytes(70_000, 3);
    let id = obj(&body);
    let raw = chunked_post(&format!("/r/data/{id}"), &body, 30_000);
    let mut c = std::io::BufReader::new(s.connect());
    assert_eq!(exchange(&mut c, &raw, "POST").status, 200);
    assert_eq!(s.get(&format!("/r/data/{id}")).body, body);
}

#[test]
fn keep_alive_serves_many_requests_on_one_connection() {
    let s = Server::start(&[]);
    s.create_repo("r");
    s.post("/r/config", b"c");
    let mut c = std::io::BufReader::new(s.connect());
    for _ in 0..50 {
        let r = exchange(
            &mut c,
            b"HEAD /r/config HTTP/1.1\r\nHost: t\r\n\r\n",
            "HEAD",
        );
        assert_eq!(r.status, 200);
    }
}

/// Uploads a data object (into a `data/xx` dir created on demand) and a config, then checks
/// the modes of every directory and file involved.
fn assert_modes(args: &[&str], dir_mode: u32, file_mode: u32) {
    let s = Server::start(args);
    s.create_repo("r");
    let id = obj(b"m");
    let sub = format!("r/data/{}", &id[..2]);
    std::fs::remove_dir(s.data.join(&sub)).unwrap();
    assert_eq!(s.post(&format!("/r/data/{id}"), b"m").status, 200);
    assert_eq!(s.post("/r/config", b"c").status, 200);
    let mode = |p: &str| {
        std::fs::metadata(s.data.join(p))
            .unwrap()
            .permissions()
            .mode()
            & 0o777
    };
    for dir in ["r", "r/data", "r/keys", "r/data/00", &sub] {
        assert_eq!(mode(dir), dir_mode, "{dir}");
    }
    for file in ["r/config".to_owned(), format!("{sub}/{id}")] {
        assert_eq!(mode(&file), file_mode, "{file}");
    }
}

#[test]
fn file_modes_default_private() {
    assert_modes(&[], 0o700, 0o600);
}

#[test]
fn file_modes_group_accessible() {
    assert_modes(&["--group-accessible-repos"], 0o770, 0o660);
}

#[test]
fn append_only_allows_uploads_and_lock_deletes_only() {
    let s = Server::start(&["--append-only"]);
    s.create_repo("r");
    assert_eq!(s.post("/r/config", b"c").status, 200);
    let body = b"pack";
    let id = obj(body);
    for kind in ["data", "index", "keys", "locks", "snapshots"] {
        assert_eq!(s.post(&format!("/r/{kind}/{id}"), body).status, 200);
    }
    for kind in ["data", "index", "keys", "snapshots"] {
        assert_eq!(s.delete(&format!("/r/{kind}/{id}")).status, 403, "{kind}");
        assert_eq!(
            s.head(&format!("/r/{kind}/{id}")).status,
            200,
            "{kind} still there"
        );
    }
    assert_eq!(s.delete("/r/config").status, 403);
    assert_eq!(s.get("/r/config").body, b"c");
    assert_eq!(s.delete(&format!("/r/locks/{id}")).status, 200);
    assert_eq!(s.head(&format!("/r/locks/{id}")).status, 404);
    // Overwrite is refused in every mode.
    assert_eq!(s.post("/r/config", b"new").status, 403);
}

#[test]
fn error_bodies_are_the_status_text() {
    let s = Server::start(&[]);
    let r = s.get("/r/config");
    assert_eq!((r.status, r.text().trim()), (404, "Not Found"));
}
