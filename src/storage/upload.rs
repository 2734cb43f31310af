//! One upload, crash-safe: a temp file beside the target (O_EXCL, a name that can never be an
//! id), the body streamed into it while SHA-256 and the quota see every byte once, then fsync,
//! publish under the final name, fsync the directory. Only then is the object visible.
//!
//! hyper reads the body on the connection's task and hands it on in pieces as they arrive.
//! They are gathered into chunks of [`BODY_CHUNK`] (two buffers per upload, taking turns);
//! each chunk is hashed and written with one write(2) on a blocking thread, while the
//! connection gathers the next one. Writing a chunk needs a *turn* ([`Turns`]): at most [`MAX_WRITERS`] chunks are hashed
//! and written at once, whatever the number of uploads. An upload holds a turn only while a
//! chunk of it is being written, never while it waits for the client, so clients that
//! trickle their bodies cannot keep others from writing (docs/architecture.md, "Upload
//! turns").
//!
//! Any early return drops the [`TempObject`], which removes the temp file; it never touches
//! the final name, so an aborted upload cannot harm a concurrent successful one
//! (docs/protocol.md, "Uploads"). Which status a failure gets is decided in `error.rs`, not
//! here.

use crate::counted::Counted;
use crate::error::Error;
use crate::lock::Lock as _;
use crate::modes::{self, make_dir};
use crate::storage::quota::Reservation;
use crate::storage::repo::Repos;
use hyper::body::{Body, Bytes};
use sha2::{Digest, Sha256};
use smol::lock::Semaphore;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Mutex;
use std::time::SystemTime;

/// Marks temp files. It contains a `.`, so a temp name can never be a valid id and is never
/// listed or served.
pub(crate) const TEMP_MARKER: &str = ".rest-server-temp";

/// A chunk of the body: gathered from the pieces hyper hands on, then hashed and written with
/// one write(2), so the disk sees few, large writes (bench-results/2026-11-23/README.md, "Upload writer"). A chunk
/// may end up to one piece (hyper's read, at most 128 KiB) longer.
const BODY_CHUNK: usize = 128 * 1024;

/// Chunks hashed and written at once, across all uploads; more wait for a turn. Each is a
/// blocking-pool thread busy with up to 128 KiB: bounds the threads and the memory that
/// writing takes to 64 and ~8 MiB, even on a router, however many uploads are open.
pub(crate) const MAX_WRITERS: usize = 64;

/// Turns to hash and write a chunk of an upload (see the module doc).
pub(crate) type Turns = Semaphore;

/// A request body as hyper hands it on (tests hand on their own).
pub(crate) trait RequestBody: Body<Data = Bytes, Error: Into<BoxError>> + Unpin {}
impl<B: Body<Data = Bytes, Error: Into<BoxError>> + Unpin> RequestBody for B {}
type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// What was received: the length and, when verifying, the lowercase hex SHA-256.
#[derive(Debug)]
pub(crate) struct Received {
    pub len: u64,
    pub sha256: Option<String>,
}

/// How a committed upload ended.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Stored {
    /// Our bytes are now the object, last modified then (what a walk of the data directory
    /// reads back: the inventory records this, not the moment of the answer).
    New(Option<SystemTime>),
    /// Another upload of the same name was published first; ours was discarded.
    AlreadyThere,
}

/// Reads `body` to its end and hashes it, storing nothing: the check of a retried upload
/// whose object already exists. A body shorter than `declared` is an error.
pub(crate) async fn hash_body(
    body: &mut impl RequestBody,
    declared: Option<u64>,
    turns: &Turns,
) -> Result<Received, Error> {
    let (got, _) = stream_body(body, None, true, declared, None, turns).await?;
    Ok(got)
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

/// An upload in progress: a temp file next to the target.
pub(crate) struct TempObject {
    temp: TempPath,
    /// Counts this upload as being written, from its temp file's creation until it is
    /// committed or dropped (`Repos::uploads_open`): the background scrub pauses while any
    /// is (storage/scrub.rs).
    _open: Counted,
    /// `None` only while a blocking task has it.
    file: Option<File>,
    target: PathBuf,
    hash: bool,
}

/// Replaces `target` with `bytes` crash-safely: a temp file beside it (the same O_EXCL
/// creation as an upload's), write, fsync, rename over the target, fsync the directory. A
/// reader sees the old or the new content, never a mix; for small files of our own (the
/// scrub state, the htpasswd file of `rest-server user`), never objects, which are never
/// replaced. `owner`: (uid, gid) to give the new file, when root edits a file the server
/// reads as its own user (a failure to chown is ignored: only root can, and anyone else
/// owns what they write).
pub(crate) fn replace_file(
    target: &Path,
    bytes: &[u8],
    mode: u32,
    owner: Option<(u32, u32)>,
) -> io::Result<()> {
    let (mut file, temp) = create_temp(target, false, mode, mode)?;
    let temp = TempPath(Some(temp));
    if let Some((uid, gid)) = owner {
        let _ = std::os::unix::fs::fchown(&file, Some(uid), Some(gid));
    }
    file.write_all(bytes)?;
    // fsync before the rename, or a crash could leave an empty file under the target name.
    let synced = file.sync_all();
    if synced.as_ref().is_err_and(|e| !no_fsync(e)) {
        return synced;
    }
    drop(file);
    let from = temp.0.clone().unwrap_or_default();
    fs::rename(&from, target)?;
    let mut temp = temp;
    temp.0 = None;
    let dir = target.parent().unwrap_or(Path::new("."));
    match File::open(dir).and_then(|d| d.sync_all()) {
        Err(e) if !no_fsync(&e) => Err(e),
        _ => Ok(()),
    }
}

/// Where the chunks of a body go: the file (if any) and the state that travels with it to
/// each chunk's blocking task and back.
struct Sink {
    file: Option<File>,
    hasher: Option<Sha256>,
    writeback: Writeback,
}

impl TempObject {
    /// Creates the temp file beside `target`. With `create_parent` a missing parent
    /// directory (a `data/xx` directory) is created, but only if its own parent exists: an
    /// upload never conjures up a repository that was not created. With `hash`,
    /// [`TempObject::receive`] returns the body's SHA-256.
    pub(crate) async fn create(
        repos: &Repos,
        target: PathBuf,
        create_parent: bool,
        hash: bool,
    ) -> Result<TempObject, Error> {
        let (mode, dir_mode) = (repos.file_mode(), repos.dir_mode());
        let t = target.clone();
        let created = smol::unblock(move || {
            let (file, path) = create_temp(&t, create_parent, mode, dir_mode)?;
            // Owned at once, so a request that goes away meanwhile still removes the file.
            Ok::<_, io::Error>((file, TempPath(Some(path))))
        })
        .await?;
        Ok(TempObject {
            _open: Counted::new(repos.uploads_open_counter()),
            temp: created.1,
            file: Some(created.0),
            target,
            hash,
        })
    }

    /// Reads `body` to its end into the temp file, counting against `quota` and hashing (if
    /// asked at creation) as it goes, each chunk written in a turn of `turns`. A body shorter
    /// than `declared` is an error (the client went away).
    pub(crate) async fn receive(
        &mut self,
        body: &mut impl RequestBody,
        declared: Option<u64>,
        quota: Option<&mut Reservation>,
        turns: &Turns,
    ) -> Result<Received, Error> {
        let file = self.file.take();
        let (got, file) = stream_body(body, file, self.hash, declared, quota, turns).await?;
        self.file = file;
        Ok(got)
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
        let file = self.file.take().ok_or_else(stopped)?;
        let temp = self.temp.0.clone().unwrap_or_default();
        let target = self.target.clone();
        let rename_lock = repos.rename_lock();
        let (synced, published) = smol::unblock(move || {
            // fsync before publishing, or a crash could expose an empty or partial object.
            let synced = file.sync_all();
            let mtime = file.metadata().and_then(|m| m.modified()).ok();
            drop(file);
            if synced.as_ref().is_err_and(|e| !no_fsync(e)) {
                return (synced, None);
            }
            let stored = publish(&temp, &target, &rename_lock, mtime);
            let dir_synced = match stored {
                Ok(Stored::New(_)) => {
                    let dir = target.parent().unwrap_or(Path::new("."));
                    File::open(dir).and_then(|d| d.sync_all())
                }
                _ => Ok(()),
            };
            (synced, Some((stored, dir_synced)))
        })
        .await;
        let temp_path = self.temp.0.as_deref().unwrap_or(Path::new(""));
        repos.tolerate_no_fsync(synced, temp_path)?;
        let Some((stored, dir_synced)) = published else {
            return Err(stopped().into());
        };
        let stored = stored?;
        if let Stored::New(_) = stored {
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

/// An fsync error that means "not supported here" (`Repos::tolerate_no_fsync` decides).
fn no_fsync(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::InvalidInput | io::ErrorKind::Unsupported
    )
}

fn stopped() -> io::Error {
    io::Error::other("upload file went away")
}

/// The next piece of the body; `None` at its end. Trailer fields are read and ignored, as
/// the Go server does.
async fn next_piece(body: &mut impl RequestBody) -> Result<Option<Bytes>, Error> {
    loop {
        let frame = std::future::poll_fn(|cx| Pin::new(&mut *body).poll_frame(cx)).await;
        match frame {
            None => return Ok(None),
            Some(Err(e)) => return Err(Error::ClientGone(io::Error::other(e))),
            Some(Ok(frame)) => {
                if let Ok(data) = frame.into_data()
                    && !data.is_empty()
                {
                    return Ok(Some(data));
                }
            }
        }
    }
}

/// Gathers the body into `buf` (emptied first) until it holds at least [`BODY_CHUNK`] bytes
/// or the body ends; returns whether it ended. The pieces are copied, not kept: holding them
/// kept hyper from reusing its read buffer, so it allocated a new one per read (on musl a
/// fresh mapping, zeroed page by page: 1.9x the CPU per GiB; BENCHMARKS.md). `buf` grows as
/// bytes arrive, so an upload that trickles holds only what it has sent.
async fn gather(body: &mut impl RequestBody, buf: &mut Vec<u8>) -> Result<bool, Error> {
    buf.clear();
    while buf.len() < BODY_CHUNK {
        match next_piece(body).await? {
            Some(piece) => buf.extend_from_slice(&piece),
            None => return Ok(true),
        }
    }
    Ok(false)
}

/// Reads `body` to its end in chunks, counting each against `quota`, and has each hashed
/// (with `hash`) and written to `file` (if any, starting writeback as it goes) on a blocking
/// thread in a turn, while the next chunk is gathered into the other of two buffers. A body
/// shorter than `declared` is an error. Gives the file back.
async fn stream_body(
    body: &mut impl RequestBody,
    file: Option<File>,
    hash: bool,
    declared: Option<u64>,
    mut quota: Option<&mut Reservation>,
    turns: &Turns,
) -> Result<(Received, Option<File>), Error> {
    let mut sink = Some(Sink {
        file,
        hasher: hash.then(Sha256::new),
        writeback: Writeback::default(),
    });
    let (mut filling, mut spare) = (Vec::new(), Vec::new());
    // The chunk being written, with the turn it holds.
    let mut writing = None;
    let mut len = 0u64;
    loop {
        let end = gather(body, &mut filling).await?;
        len += filling.len() as u64;
        if let Some(q) = quota.as_deref_mut() {
            q.grow(len).map_err(|_| Error::QuotaExceeded)?;
        }
        if let Some((task, turn)) = writing.take() {
            let (back, buf, written): (Sink, Vec<u8>, io::Result<()>) = task.await;
            drop(turn);
            written?;
            (sink, spare) = (Some(back), buf);
        }
        if !filling.is_empty() {
            let turn = turns.acquire().await;
            let mut s = sink.take().ok_or_else(stopped)?;
            let chunk = std::mem::replace(&mut filling, std::mem::take(&mut spare));
            let task = smol::unblock(move || {
                let written = s.take(&chunk);
                (s, chunk, written)
            });
            writing = Some((task, turn));
        }
        if end {
            break;
        }
    }
    if let Some((task, turn)) = writing.take() {
        let (back, _, written) = task.await;
        drop(turn);
        written?;
        sink = Some(back);
    }
    check_complete(len, declared)?;
    let sink = sink.ok_or_else(stopped)?;
    let got = Received {
        len,
        sha256: sink.hasher.map(|h| hex(&h.finalize())),
    };
    Ok((got, sink.file))
}

impl Sink {
    /// Hashes and writes one chunk (blocking).
    fn take(&mut self, chunk: &[u8]) -> io::Result<()> {
        if let Some(h) = self.hasher.as_mut() {
            h.update(chunk);
        }
        if let Some(file) = self.file.as_mut() {
            file.write_all(chunk)?;
            self.writeback.advise(file, chunk.len());
        }
        Ok(())
    }
}

/// How much of an upload may sit dirty in the page cache before the writer asks the kernel
/// to start writing it out (bench-results/2026-11-23/README.md, "Early writeback": 1 MiB measured against 256 KiB
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

/// Creates the temp file: a random name beside the target `t`, O_EXCL.
fn create_temp(
    t: &Path,
    create_parent: bool,
    mode: u32,
    dir_mode: u32,
) -> io::Result<(File, PathBuf)> {
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
            .mode(mode)
            .open(&temp);
        match opened {
            Ok(f) => {
                modes::restore_mode(&f, mode)?;
                return Ok((f, temp));
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) if e.kind() == io::ErrorKind::NotFound && create_parent && !made_dir => {
                if let Some(parent) = t.parent() {
                    make_dir(parent, dir_mode, false)?;
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
fn publish(
    temp: &Path,
    target: &Path,
    rename_lock: &Mutex<()>,
    mtime: Option<SystemTime>,
) -> io::Result<Stored> {
    match fs::hard_link(temp, target) {
        Ok(()) => {
            if let Err(e) = fs::remove_file(temp) {
                // The object is published; the leftover name is only garbage, never listed.
                log::warn!("cannot remove temp file {}: {e}", temp.display());
            }
            Ok(Stored::New(mtime))
        }
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(Stored::AlreadyThere),
        Err(e) => {
            log::debug!(
                "hard link not possible ({e}), publishing {} by rename",
                target.display()
            );
            // Held from the check to the rename (a blocking thread, never an executor one).
            let _serial = rename_lock.locked();
            if fs::symlink_metadata(target).is_ok() {
                return Ok(Stored::AlreadyThere);
            }
            fs::rename(temp, target)?;
            Ok(Stored::New(mtime))
        }
    }
}

/// Lowercase hex, the form ids are written in.
pub(crate) fn hex(bytes: &[u8]) -> String {
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

    use hyper::body::Frame;
    use std::task::{Context, Poll};

    /// A body handed on in the given pieces.
    struct Pieces(std::collections::VecDeque<Bytes>);

    impl Pieces {
        fn of(data: &[u8], piece: usize) -> Pieces {
            Pieces(
                data.chunks(piece.max(1))
                    .map(Bytes::copy_from_slice)
                    .collect(),
            )
        }
    }

    impl Body for Pieces {
        type Data = Bytes;
        type Error = io::Error;
        fn poll_frame(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Option<io::Result<Frame<Bytes>>>> {
            Poll::Ready(self.0.pop_front().map(|b| Ok(Frame::data(b))))
        }
    }

    #[test]
    fn sha256_of_known_input() {
        let turns = Turns::new(1);
        let got = smol::block_on(hash_body(&mut Pieces::of(b"abc", 1), Some(3), &turns)).unwrap();
        assert_eq!(got.len, 3);
        assert_eq!(
            got.sha256.unwrap(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn short_body_is_an_error() {
        let turns = Turns::new(1);
        let got = smol::block_on(hash_body(&mut Pieces::of(b"abc", 2), Some(4), &turns));
        assert!(matches!(got, Err(Error::ClientGone(_))));
    }

    #[test]
    fn body_of_several_chunks_lands_intact() {
        // Chunks must reach the file whole and in order, and be hashed so.
        let dir = std::env::temp_dir().join(format!("upload-chunks-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let repos = Repos::new(dir.clone(), false);
        let turns = Turns::new(2);
        let sizes = [0, 1, BODY_CHUNK, BODY_CHUNK * 5 / 2, BODY_CHUNK * 4];
        // Pieces as hyper hands them on: whole reads, and a client trickling (many small
        // pieces per chunk).
        for (len, piece) in sizes.into_iter().flat_map(|l| [(l, 16 * 1024), (l, 7)]) {
            let data: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
            let target = dir.join(format!("object-{len}-{piece}"));
            smol::block_on(async {
                let mut temp = TempObject::create(&repos, target.clone(), false, true)
                    .await
                    .unwrap();
                let mut body = Pieces::of(&data, piece);
                let got = temp
                    .receive(&mut body, Some(len as u64), None, &turns)
                    .await
                    .unwrap();
                assert_eq!(got.len, len as u64);
                assert_eq!(got.sha256, Some(hex(&Sha256::digest(&data))));
                assert!(matches!(
                    temp.commit(&repos, None).await.unwrap(),
                    Stored::New(Some(_))
                ));
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
        assert!(crate::storage::names::ObjectId::parse(&name).is_none());
    }
}
