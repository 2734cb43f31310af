//! One upload, crash-safe: a temp file beside the target (O_EXCL, a name that can never be an
//! id), the body streamed into it while SHA-256 and the quota see every byte once, then fsync,
//! publish under the final name, fsync the directory. Only then is the object visible.
//!
//! The file side of an upload runs on one thread of its own, the writer: it opens the temp
//! file, then reads the body from the connection itself (the socket is async, so the thread
//! drives that read with `block_on`), hashes and writes each chunk, fsyncs, publishes. The
//! bytes never change threads: no hand-over per chunk, and hashing and disk writes never hold
//! up an executor thread that other connections need (BENCHMARKS.md, "Upload body on the
//! writer thread").
//!
//! Any early return drops the [`TempObject`], which removes the temp file; it never touches
//! the final name, so an aborted upload cannot harm a concurrent successful one (SPEC 5.7).
//! Which status a failure gets is decided in `error.rs`, not here.

use crate::error::Error;
use crate::quota::Reservation;
use crate::repo::{Repos, make_dir};
use http_types::Body;
use sha2::{Digest, Sha256};
use smol::channel::{self, Receiver, Sender};
use smol::io::{AsyncRead, AsyncReadExt};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// Marks temp files. It contains a `.`, so a temp name can never be a valid id and is never
/// listed or served.
const TEMP_MARKER: &str = ".rest-server-temp";

/// One chunk of the body: read from the client, hashed and written with one write(2). No byte
/// is copied in user space. One buffer per upload: eight concurrent uploads hold 1 MiB.
const BODY_CHUNK: usize = 128 * 1024;

/// Stack of a writer thread, which reads the body (the async read chain of the connection,
/// TLS decryption included, run by `block_on`), hashes, writes, renames and may log. There
/// is one per upload in flight, so not the 2 MiB default (only touched pages count in RSS,
/// but the whole reservation counts where overcommit is off); the TLS and restic tests run
/// uploads through it.
const WRITER_STACK: usize = 256 * 1024;

/// What was received: the length and, when verifying, the lowercase hex SHA-256.
#[derive(Debug)]
pub(crate) struct Received {
    pub len: u64,
    pub sha256: Option<String>,
}

/// How a committed upload ended.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Stored {
    /// Our bytes are now the object.
    New,
    /// Another upload of the same name was published first; ours was discarded.
    AlreadyThere,
}

/// Reads `body` to its end and hashes it, storing nothing: the check of a retried upload
/// whose object already exists. A body shorter than `declared` is an error. With no file,
/// nothing blocks: fine on an executor thread.
pub(crate) async fn hash_body<R: AsyncRead + Unpin>(
    body: &mut R,
    declared: Option<u64>,
) -> Result<Received, Error> {
    pour(body, None, true, declared, None).await
}

/// Reads until `buf` is full or the body ends: the disk gets few, large writes. Returns how
/// much was read; less than `buf.len()` only at the end of the body.
async fn fill<R: AsyncRead + Unpin>(body: &mut R, buf: &mut [u8]) -> Result<usize, Error> {
    let mut n = 0;
    while n < buf.len() {
        match body.read(&mut buf[n..]).await.map_err(Error::ClientGone)? {
            0 => break,
            got => n += got,
        }
    }
    Ok(n)
}

/// A body shorter than its Content-Length means the client went away.
fn check_complete(len: u64, declared: Option<u64>) -> Result<(), Error> {
    if declared.is_some_and(|d| len < d) {
        return Err(Error::ClientGone(io::ErrorKind::UnexpectedEof.into()));
    }
    Ok(())
}

/// Removes its path on drop unless disarmed: the RAII cleanup of every failed upload.
#[derive(Debug)]
struct TempPath(Option<PathBuf>);

impl Drop for TempPath {
    fn drop(&mut self) {
        if let Some(p) = self.0.take() {
            // The temp name is ours alone (O_EXCL, random): removing it cannot hit anyone else.
            if let Err(e) = fs::remove_file(&p)
                && e.kind() != io::ErrorKind::NotFound
            {
                log::warn!("cannot remove temp file {}: {e}", p.display());
            }
        }
    }
}

/// What the connection asks of its writer, in this order.
enum Job {
    /// Read the body to its end into the file, hashing it (if asked) and counting it against
    /// the reservation. A body shorter than `declared` is an error.
    Receive {
        body: Body,
        declared: Option<u64>,
        quota: Option<Reservation>,
    },
    /// fsync the file.
    Sync,
    /// Link the file in place under the target name and, if it is new, fsync the directory.
    Publish,
}

/// What the writer answers, one report per job (after `Opened`).
enum Report {
    /// The temp file exists. Its name travels as a [`TempPath`], so a report nobody
    /// receives (the request went away meanwhile) still removes the file.
    Opened(io::Result<TempPath>),
    /// How the body went, and the reservation back. After an error the writer has closed
    /// the file and stopped (so once the connection removes the name, the space is free).
    Received(Result<Received, Error>, Option<Reservation>),
    Synced(io::Result<()>),
    /// How publishing went and, if the object is new, the directory fsync.
    Published(io::Result<Stored>, io::Result<()>),
}

/// What a writer needs to open its temp file and, later, publish it.
struct Open {
    target: PathBuf,
    create_parent: bool,
    mode: u32,
    dir_mode: u32,
    hash: bool,
    rename_lock: Arc<Mutex<()>>,
}

/// An upload in progress: a temp file next to the target, owned by the upload's writer.
pub(crate) struct TempObject {
    temp: TempPath,
    target: PathBuf,
    jobs: Sender<Job>,
    reports: Receiver<Report>,
}

impl TempObject {
    /// Starts the writer, which creates the temp file beside `target`. With `create_parent` a
    /// missing parent directory (a `data/xx` directory) is created, but only if its own parent
    /// exists: an upload never conjures up a repository that was not created. With `hash`,
    /// [`TempObject::receive`] returns the body's SHA-256.
    pub(crate) async fn create(
        repos: &Repos,
        target: PathBuf,
        create_parent: bool,
        hash: bool,
    ) -> Result<TempObject, Error> {
        let open = Open {
            target: target.clone(),
            create_parent,
            mode: repos.file_mode(),
            dir_mode: repos.dir_mode(),
            hash,
            rename_lock: repos.rename_lock(),
        };
        // One job and its report are outstanding at a time.
        let (jobs, jobs_in) = channel::bounded(1);
        let (reports_out, reports) = channel::bounded(1);
        std::thread::Builder::new()
            .name("upload".into())
            .stack_size(WRITER_STACK)
            .spawn(move || writer(open, jobs_in, reports_out))?;
        let temp = match reports.recv().await {
            Ok(Report::Opened(opened)) => opened?,
            _ => return Err(stopped().into()),
        };
        Ok(TempObject {
            temp,
            target,
            jobs,
            reports,
        })
    }

    /// Has the writer read `body` to its end into the temp file, counting against `quota` and
    /// hashing (if asked at creation) as it goes; gives the reservation back with the result.
    /// A body shorter than `declared` is an error (the client went away).
    pub(crate) async fn receive(
        &mut self,
        body: Body,
        declared: Option<u64>,
        quota: Option<Reservation>,
    ) -> Result<(Received, Option<Reservation>), Error> {
        self.send(Job::Receive {
            body,
            declared,
            quota,
        })
        .await?;
        match self.report().await? {
            Report::Received(got, quota) => Ok((got?, quota)),
            _ => Err(out_of_step().into()),
        }
    }

    /// Hands a job to the writer.
    async fn send(&mut self, job: Job) -> io::Result<()> {
        self.jobs.send(job).await.map_err(|_| stopped())
    }

    /// The writer's answer to the last job.
    async fn report(&mut self) -> io::Result<Report> {
        self.reports.recv().await.map_err(|_| stopped())
    }

    /// Makes the upload durable and visible: fsync the file, publish it under the target
    /// name, fsync the directory. Returns only when a power cut can no longer lose it.
    /// Once the object is published its bytes are on disk: `quota` is kept from that moment,
    /// even if the directory fsync then fails.
    pub(crate) async fn commit(
        mut self,
        repos: &Repos,
        quota: Option<Reservation>,
    ) -> Result<Stored, Error> {
        // fsync before publishing, or a crash could expose an empty or partial object.
        self.send(Job::Sync).await?;
        let synced = match self.report().await? {
            Report::Synced(r) => r,
            _ => return Err(out_of_step().into()),
        };
        let temp_path = self.temp.0.as_deref().unwrap_or(Path::new(""));
        repos.tolerate_no_fsync(synced, temp_path)?;

        self.send(Job::Publish).await?;
        let (stored, dir_synced) = match self.report().await? {
            Report::Published(stored, dir_synced) => (stored?, dir_synced),
            _ => return Err(out_of_step().into()),
        };
        if stored == Stored::New {
            if let Some(r) = quota {
                r.keep();
            }
            // The temp name is gone (renamed, or linked and unlinked): nothing to clean up.
            self.temp.0 = None;
            // The rename is durable only once the directory entry is.
            let dir = self.target.parent().unwrap_or(Path::new("."));
            repos.tolerate_no_fsync(dir_synced, dir)?;
        }
        Ok(stored)
    }
}

fn stopped() -> io::Error {
    io::Error::other("upload writer stopped")
}

fn out_of_step() -> io::Error {
    io::Error::other("upload writer out of step")
}

/// The writer thread of one upload: opens the temp file, then does the jobs in order until
/// `Publish`, a failed body, or the connection dropping its end (the upload was abandoned;
/// the connection's [`TempPath`] removes the file). While it reads a body it notices a
/// dropped connection task only when the body ends or the 60 s inactivity timeout fires;
/// tasks are dropped only at shutdown, just before the process exits.
fn writer(open: Open, jobs: Receiver<Job>, reports: Sender<Report>) {
    let (mut file, temp) = match create_temp(&open) {
        Ok(created) => created,
        Err(e) => {
            let _ = reports.send_blocking(Report::Opened(Err(e)));
            return;
        }
    };
    let owner = TempPath(Some(temp.clone()));
    if reports.send_blocking(Report::Opened(Ok(owner))).is_err() {
        // The request went away while we opened the file; dropping the unsent report
        // removed it.
        return;
    }
    while let Ok(job) = jobs.recv_blocking() {
        let report = match job {
            Job::Receive {
                mut body,
                declared,
                mut quota,
            } => {
                // The body's socket is async: this thread waits on it like a task would.
                let got = smol::block_on(pour(
                    &mut body,
                    Some(&mut file),
                    open.hash,
                    declared,
                    quota.as_mut(),
                ));
                if got.is_err() {
                    // Closed before reporting: once the client hears 507 and the
                    // connection has removed the name, the space is free again.
                    drop(file);
                    let _ = reports.send_blocking(Report::Received(got, quota));
                    return;
                }
                Report::Received(got, quota)
            }
            Job::Sync => Report::Synced(file.sync_all()),
            Job::Publish => {
                drop(file);
                let stored = publish(&temp, &open.target, &open.rename_lock);
                let dir_synced = match stored {
                    Ok(Stored::New) => {
                        let dir = open.target.parent().unwrap_or(Path::new("."));
                        File::open(dir).and_then(|d| d.sync_all())
                    }
                    _ => Ok(()),
                };
                let _ = reports.send_blocking(Report::Published(stored, dir_synced));
                return;
            }
        };
        if reports.send_blocking(report).is_err() {
            return;
        }
    }
}

/// Reads `body` to its end in whole chunks, counting each against `quota`, hashing it (with
/// `hash`) and writing it to `file` (if any, starting writeback as it goes). A body shorter
/// than `declared` is an error. With a file, blocking writes come between the awaits: for
/// the writer thread only.
async fn pour<R: AsyncRead + Unpin>(
    body: &mut R,
    mut file: Option<&mut File>,
    hash: bool,
    declared: Option<u64>,
    mut quota: Option<&mut Reservation>,
) -> Result<Received, Error> {
    let mut buf = vec![0u8; BODY_CHUNK];
    let mut hasher = hash.then(Sha256::new);
    let mut early = Writeback::default();
    let mut len = 0u64;
    loop {
        let n = fill(body, &mut buf).await?;
        if n == 0 {
            break;
        }
        len += n as u64;
        if let Some(q) = quota.as_deref_mut() {
            q.grow(len).map_err(|_| Error::QuotaExceeded)?;
        }
        if let Some(h) = hasher.as_mut() {
            h.update(&buf[..n]);
        }
        if let Some(f) = file.as_deref_mut() {
            f.write_all(&buf[..n])?;
            early.advise(f, n);
        }
        if n < BODY_CHUNK {
            break;
        }
    }
    check_complete(len, declared)?;
    Ok(Received {
        len,
        sha256: hasher.map(|h| hex(&h.finalize())),
    })
}

/// How much of an upload may sit dirty in the page cache before the writer asks the kernel
/// to start writing it out (BENCHMARKS.md, "Early writeback": 1 MiB measured against 256 KiB
/// and 4 MiB).
const WRITEBACK_WINDOW: u64 = 1024 * 1024;

/// Starts writeback while the body still arrives, so that the disk works while the network
/// does, instead of all at once in the final fsync with the CPUs idle; and drops the pages
/// already written back, so that uploads do not push everything else out of the page cache
/// of a small machine (backups are rarely read back soon).
///
/// `posix_fadvise(POSIX_FADV_DONTNEED)` does both on Linux: it starts asynchronous writeback
/// of the range's dirty pages, then evicts those that are clean. Each window is advised twice:
/// once when it is complete, to start its writeback, and once more with the next window, by
/// when it is written out and can be evicted. It is advice: errors are ignored (tmpfs, some
/// FUSE file systems), and durability still comes from the fsync before publishing.
#[derive(Debug, Default)]
struct Writeback {
    /// Bytes written to the file so far.
    written: u64,
    /// Start of the window advised once already: evicted at the next advice.
    evict_from: u64,
    /// Where the bytes not yet advised begin.
    advised_to: u64,
}

impl Writeback {
    /// Counts `n` more bytes written; returns the range `(offset, len)` to advise now, if any.
    fn wrote(&mut self, n: usize) -> Option<(u64, u64)> {
        self.written += n as u64;
        if self.written - self.advised_to < WRITEBACK_WINDOW {
            return None;
        }
        let range = (self.evict_from, self.written - self.evict_from);
        self.evict_from = self.advised_to;
        self.advised_to = self.written;
        Some(range)
    }

    fn advise(&mut self, file: &File, n: usize) {
        if let Some((offset, len)) = self.wrote(n) {
            let len = std::num::NonZeroU64::new(len);
            let _ = rustix::fs::fadvise(file, offset, len, rustix::fs::Advice::DontNeed);
        }
    }
}

/// Creates the temp file: a random name beside the target, O_EXCL.
fn create_temp(open: &Open) -> io::Result<(File, PathBuf)> {
    let t = &open.target;
    let name = t
        .file_name()
        .unwrap_or_default()
        .to_string_lossy()
        .into_owned();
    let mut made_dir = false;
    loop {
        let temp = t.with_file_name(format!("{name}{TEMP_MARKER}{:016x}", fastrand::u64(..)));
        let opened = OpenOptions::new()
            .write(true)
            .create_new(true) // O_EXCL: never open someone else's file
            .mode(open.mode)
            .open(&temp);
        match opened {
            Ok(f) => {
                if open.mode != 0o600 {
                    // The umask may have removed the group bits of 0660.
                    f.set_permissions(fs::Permissions::from_mode(open.mode))?;
                }
                return Ok((f, temp));
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) if e.kind() == io::ErrorKind::NotFound && open.create_parent && !made_dir => {
                if let Some(parent) = t.parent() {
                    make_dir(parent, open.dir_mode, false)?;
                }
                made_dir = true;
            }
            Err(e) => return Err(e),
        }
    }
}

/// Puts `temp` in place as `target` without ever replacing an existing object.
///
/// A hard link fails with EEXIST if the target appeared meanwhile (two uploads of one id racing),
/// which `rename` would silently overwrite. File systems without hard links (FAT/exFAT USB
/// sticks, some network mounts) fall back to check-then-rename.
fn publish(temp: &Path, target: &Path, rename_lock: &Mutex<()>) -> io::Result<Stored> {
    match fs::hard_link(temp, target) {
        Ok(()) => {
            if let Err(e) = fs::remove_file(temp) {
                // The object is published; the leftover name is only garbage, never listed.
                log::warn!("cannot remove temp file {}: {e}", temp.display());
            }
            Ok(Stored::New)
        }
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(Stored::AlreadyThere),
        Err(e) => {
            log::debug!(
                "hard link not possible ({e}), publishing {} by rename",
                target.display()
            );
            // Held from the check to the rename (a blocking thread, never an executor one).
            let _serial = rename_lock.lock().unwrap_or_else(|e| e.into_inner());
            if fs::symlink_metadata(target).is_ok() {
                return Ok(Stored::AlreadyThere);
            }
            fs::rename(temp, target)?;
            Ok(Stored::New)
        }
    }
}

/// Lowercase hex, the form ids are written in.
fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[usize::from(b >> 4)] as char);
        s.push(DIGITS[usize::from(b & 15)] as char);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sha256_of_known_input() {
        let mut body: &[u8] = b"abc";
        let got = smol::block_on(hash_body(&mut body, Some(3))).unwrap();
        assert_eq!(got.len, 3);
        assert_eq!(
            got.sha256.unwrap(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn short_body_is_an_error() {
        let mut body: &[u8] = b"abc";
        let got = smol::block_on(hash_body(&mut body, Some(4)));
        assert!(matches!(got, Err(Error::ClientGone(_))));
    }

    #[test]
    fn body_of_several_chunks_lands_intact() {
        // Chunks must reach the file whole and in order, and be hashed so.
        let dir = std::env::temp_dir().join(format!("upload-chunks-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let repos = Repos::new(dir.clone(), false);
        for len in [0, 1, BODY_CHUNK, BODY_CHUNK * 5 / 2, BODY_CHUNK * 4] {
            let data: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
            let target = dir.join(format!("object-{len}"));
            smol::block_on(async {
                let mut temp = TempObject::create(&repos, target.clone(), false, true)
                    .await
                    .unwrap();
                let body = Body::from(data.clone());
                let (got, _) = temp.receive(body, Some(len as u64), None).await.unwrap();
                assert_eq!(got.len, len as u64);
                assert_eq!(got.sha256, Some(hex(&Sha256::digest(&data))));
                assert_eq!(temp.commit(&repos, None).await.unwrap(), Stored::New);
            });
            assert!(fs::read(&target).unwrap() == data, "{len} bytes");
        }
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn writeback_advises_each_window_twice_then_leaves_it() {
        const W: u64 = WRITEBACK_WINDOW;
        let mut wb = Writeback::default();
        let chunk = BODY_CHUNK;
        let per_window = (W / chunk as u64) as usize;
        let mut advised = Vec::new();
        for _ in 0..per_window * 3 + 1 {
            advised.extend(wb.wrote(chunk));
        }
        // Window 1 is started; windows 1+2 (1 now written, evicted); windows 2+3.
        assert_eq!(advised, vec![(0, W), (0, 2 * W), (W, 2 * W)]);
        // Short writes add up; nothing is advised before a whole window is.
        let mut wb = Writeback::default();
        assert_eq!(wb.wrote(1), None);
        assert_eq!(wb.wrote(W as usize - 2), None);
        assert_eq!(wb.wrote(1), Some((0, W)));
        assert_eq!(wb.wrote(W as usize + 5), Some((0, 2 * W + 5)));
    }

    #[test]
    fn temp_names_are_never_ids() {
        let name = format!("{}{TEMP_MARKER}{:016x}", "a".repeat(64), u64::MAX);
        assert!(crate::route::ObjectId::parse(&name).is_none());
    }
}
