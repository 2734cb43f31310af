//! The on-disk layout, identical to the Go server's: `<--path>/<repo...>/{config, keys/<id>,
//! locks/<id>, snapshots/<id>, index/<id>, data/<xx>/<id>}`. Paths, repository creation, stat,
//! streamed reads, listings, deletes and file modes live here; users, HTTP and quota do not.
//!
//! All blocking file-system calls go through `smol::unblock`, so a slow SD card never stalls the
//! executor threads. Two kinds of call are made on the executor thread instead when they
//! cannot wait for a disk or a network: reads of what the page cache holds ([`FileBody`]),
//! and the lookups of HEAD and GET when the kernel can answer them from its caches
//! ([`Repos::cached_lookup`]). A hand-off to a blocking thread and back costs more than such a
//! request's whole work (bench-results/2026-12-07/README.md: 2.4x the small-request rate).

use crate::lock::Lock as _;
use crate::modes::{self, GROUP_DIR, GROUP_FILE, PRIVATE_DIR, PRIVATE_FILE};
use crate::storage::mounts::Mounts;
use crate::storage::names::{Kind, ObjectId, RepoPath};
use hyper::body::Bytes;
use rustix::fs::{AtFlags, FileType, Mode, OFlags, RawDir, open, statat};
use rustix::io::Errno;
use smol::Task;
use std::ffi::CStr;
use std::fs::{self, File};
use std::future::Future;
use std::io::{self, Read, Write};
use std::os::fd::OwnedFd;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

/// One read(2) of a download: big enough that the disk sees few, large reads, small enough
/// that 8 concurrent downloads (two chunks each) stay within 2 MiB. A smaller file gets
/// buffers of its own size.
const READ_CHUNK: usize = 128 * 1024;

/// Listing output is handed over in pieces of about this size.
const LIST_CHUNK: usize = 64 * 1024;

#[derive(Debug)]
pub(crate) struct Repos {
    root: PathBuf,
    group_accessible: bool,
    fsync_warned: AtomicBool,
    /// Serialises check-then-rename where hard links are missing, so two uploads of one id
    /// cannot both see "absent" and replace each other.
    rename_lock: Arc<Mutex<()>>,
    /// Uploads being written now (storage/upload.rs `TempObject`).
    uploads_open: Arc<AtomicUsize>,
    /// Which mounts may have their lookups made on an executor thread.
    mounts: Mounts,
    /// The kernel has no cached lookups (before Linux 5.12): every lookup on a blocking
    /// thread.
    no_cached_lookups: AtomicBool,
}

impl Repos {
    pub(crate) fn new(root: PathBuf, group_accessible: bool) -> Repos {
        Repos {
            root,
            group_accessible,
            fsync_warned: AtomicBool::new(false),
            rename_lock: Arc::default(),
            uploads_open: Arc::default(),
            mounts: Mounts::default(),
            no_cached_lookups: AtomicBool::new(false),
        }
    }

    /// The count of uploads being written, shared with whoever must yield to them.
    pub(crate) fn uploads_open_counter(&self) -> Arc<AtomicUsize> {
        self.uploads_open.clone()
    }

    pub(crate) fn rename_lock(&self) -> Arc<Mutex<()>> {
        self.rename_lock.clone()
    }

    pub(crate) fn root(&self) -> &Path {
        &self.root
    }

    pub(crate) fn file_mode(&self) -> u32 {
        if self.group_accessible {
            GROUP_FILE
        } else {
            PRIVATE_FILE
        }
    }

    pub(crate) fn dir_mode(&self) -> u32 {
        if self.group_accessible {
            GROUP_DIR
        } else {
            PRIVATE_DIR
        }
    }

    fn repo_dir(&self, repo: &RepoPath) -> PathBuf {
        // Segments were validated by the router: no `/`, `.`, `..` or NUL, so this stays below root.
        let mut dir = self.root.clone();
        dir.extend(repo.segments());
        dir
    }

    pub(crate) fn config_path(&self, repo: &RepoPath) -> PathBuf {
        self.repo_dir(repo).join("config")
    }

    pub(crate) fn type_dir(&self, repo: &RepoPath, kind: Kind) -> PathBuf {
        self.repo_dir(repo).join(kind.as_str())
    }

    pub(crate) fn object_path(&self, repo: &RepoPath, kind: Kind, id: &ObjectId) -> PathBuf {
        let mut p = self.type_dir(repo, kind);
        if kind == Kind::Data {
            p.push(&id.as_str()[..2]);
        }
        p.push(id.as_str());
        p
    }

    /// Creates the data directory itself at start-up (mode as for repos).
    pub(crate) fn create_root(&self) -> io::Result<()> {
        modes::make_dir(&self.root, self.dir_mode(), true)
    }

    /// Creates a repository: its directory, the five type directories and `data/00`..`data/ff`.
    /// Idempotent, like the Go server's `createRepo`.
    pub(crate) async fn create(&self, repo: &RepoPath) -> io::Result<()> {
        let dir = self.repo_dir(repo);
        let dir_mode = self.dir_mode();
        smol::unblock(move || {
            let mk = |p: &Path| modes::make_dir(p, dir_mode, true);
            mk(&dir)?;
            for kind in Kind::ALL {
                mk(&dir.join(kind.as_str()))?;
            }
            let data = dir.join(Kind::Data.as_str());
            (0..=255u8).try_for_each(|i| mk(&data.join(format!("{i:02x}"))))
        })
        .await
    }

    /// Size of a regular file, `None` if it does not exist.
    pub(crate) async fn size(&self, path: &Path) -> io::Result<Option<u64>> {
        match self.cached_lookup(path, false) {
            Some(Lookup::Absent | Lookup::NotAFile) => return Ok(None),
            Some(Lookup::File(_, len)) => return Ok(Some(len)),
            None => {}
        }
        let path = path.to_owned();
        smol::unblock(move || match fs::metadata(&path) {
            Ok(m) if m.is_file() => Ok(Some(m.len())),
            Ok(_) => Ok(None),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        })
        .await
    }

    /// What occupies the name `path`: `None` if nothing (not even a dangling symlink).
    pub(crate) async fn occupant(&self, path: &Path) -> io::Result<Option<Occupant>> {
        let path = path.to_owned();
        smol::unblock(move || {
            match fs::symlink_metadata(&path) {
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
                Err(e) => return Err(e),
            }
            Ok(Some(match fs::metadata(&path) {
                Ok(m) if m.is_file() => Occupant::File(m.len()),
                _ => Occupant::Other,
            }))
        })
        .await
    }

    /// Opens a regular file for reading: `(file, size)`, `None` if it does not exist.
    pub(crate) async fn open(&self, path: &Path) -> io::Result<Option<(File, u64)>> {
        match self.cached_lookup(path, true) {
            Some(Lookup::Absent | Lookup::NotAFile) => return Ok(None),
            Some(Lookup::File(Some(file), len)) => return Ok(Some((file, len))),
            Some(Lookup::File(None, _)) | None => {}
        }
        let path = path.to_owned();
        smol::unblock(move || {
            // Only a regular file is opened: a FIFO, socket or device someone put in the
            // repository is no object (as the cached lookup answers), and its open could
            // wait or reach a driver.
            match fs::metadata(&path) {
                Ok(m) if m.is_file() => {}
                Ok(_) => return Ok(None),
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
                Err(e) => return Err(e),
            }
            // O_NONBLOCK: should it have been swapped for a FIFO since, its open must not
            // wait forever for a writer on a pool thread; regular files ignore the flag, and
            // anything else is refused just below.
            // O_NOATIME as in the cached lookup (reads of the page cache are made on the
            // executor thread, and an atime update may wait for the journal); a file we do
            // not own refuses it (EPERM) and is opened without.
            let open_with = |flags: OFlags| {
                fs::OpenOptions::new()
                    .read(true)
                    .custom_flags(flags.bits() as i32)
                    .open(&path)
            };
            let opened = match open_with(OFlags::NONBLOCK | OFlags::NOATIME) {
                Err(e) if e.raw_os_error() == Some(Errno::PERM.raw_os_error()) => {
                    open_with(OFlags::NONBLOCK)
                }
                opened => opened,
            };
            let file = match opened {
                Ok(f) => f,
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
                Err(e) => return Err(e),
            };
            let meta = file.metadata()?;
            Ok(meta.is_file().then_some((file, meta.len())))
        })
        .await
    }

    /// Looks `path` up on the calling (executor) thread, and opens it for reading if `open`, if
    /// that cannot wait for a disk or a network; `None`: ask a blocking thread, which answers as
    /// before.
    ///
    /// - `openat2` with `RESOLVE_CACHED` (Linux 5.12) resolves the path from the dentry cache
    ///   alone: a lookup that would need I/O fails with EAGAIN. `O_PATH` does not open the file
    ///   itself, so no file system code runs for it.
    /// - `statx` with `AT_STATX_DONT_SYNC` on that handle gives type, size and mount without
    ///   asking a network file system's server.
    /// - All this only on a local file system ([`Mounts`]: ext4, XFS, btrfs, F2FS, FAT,
    ///   tmpfs, ...), whose open needs no server: NFS, CIFS, FUSE and overlay mounts keep the
    ///   blocking path for their lookups.
    /// - Opened with `O_NOATIME` (the server owns its objects): the first read of a new
    ///   object under `relatime` would otherwise write its inode's atime, which on ext4 or
    ///   XFS joins a journal transaction that may wait.
    ///
    /// Older kernels (ENOSYS, EINVAL: then never tried again) and any error other than "not
    /// there" take the blocking path, so errors are reported exactly as before. What this
    /// cannot rule out: security modules that hook every open (fanotify permission events of
    /// an on-access virus scanner, IMA) and a 9p mount in `cache=none` mode, whose `statx`
    /// asks its server; none of them is found on the machines this server is for.
    fn cached_lookup(&self, path: &Path, open: bool) -> Option<Lookup> {
        use rustix::fs::{CWD, ResolveFlags, StatxFlags, openat2, statx};
        if self.no_cached_lookups.load(Ordering::Relaxed) {
            return None;
        }
        let handle = match openat2(
            CWD,
            path,
            OFlags::PATH | OFlags::CLOEXEC,
            Mode::empty(),
            ResolveFlags::CACHED,
        ) {
            Ok(fd) => fd,
            Err(Errno::NOENT) => return Some(Lookup::Absent),
            Err(Errno::NOSYS | Errno::INVAL) => {
                self.no_cached_lookups.store(true, Ordering::Relaxed);
                return None;
            }
            Err(_) => return None,
        };
        let st = statx(
            &handle,
            "",
            AtFlags::EMPTY_PATH | AtFlags::STATX_DONT_SYNC,
            StatxFlags::TYPE | StatxFlags::SIZE | StatxFlags::MNT_ID,
        )
        .ok()?;
        let mount_known = StatxFlags::from_bits_retain(st.stx_mask).contains(StatxFlags::MNT_ID);
        let mount = (st.stx_mnt_id, st.stx_dev_major, st.stx_dev_minor);
        if !mount_known || !self.mounts.is_local(mount) {
            return None;
        }
        if FileType::from_raw_mode(st.stx_mode.into()) != FileType::RegularFile {
            return Some(Lookup::NotAFile);
        }
        if !open {
            return Some(Lookup::File(None, st.stx_size));
        }
        // O_NONBLOCK as on the blocking path (regular files ignore it); the file may have been
        // replaced in between, so what is opened is checked again. A file we do not own
        // refuses O_NOATIME (EPERM): the blocking path opens it then.
        let opened = openat2(
            CWD,
            path,
            OFlags::RDONLY | OFlags::NONBLOCK | OFlags::NOATIME | OFlags::CLOEXEC,
            Mode::empty(),
            ResolveFlags::CACHED,
        );
        let file = opened.ok().map(File::from);
        match file.as_ref().map(File::metadata) {
            Some(Ok(m)) if m.is_file() => Some(Lookup::File(file, m.len())),
            Some(_) => None,
            None => Some(Lookup::File(None, st.stx_size)),
        }
    }

    /// Streams `len` bytes of `file` from `start`, read on blocking threads in large chunks.
    pub(crate) fn stream(file: File, start: u64, len: u64) -> FileBody {
        FileBody::new(file, start, len)
    }

    /// Deletes a file; returns its size, `None` if it did not exist.
    pub(crate) async fn delete(&self, path: &Path) -> io::Result<Option<u64>> {
        let path = path.to_owned();
        smol::unblock(move || {
            let size = match fs::symlink_metadata(&path) {
                Ok(m) => m.len(),
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
                Err(e) => return Err(e),
            };
            match fs::remove_file(&path) {
                Ok(()) => Ok(Some(size)),
                Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
                Err(e) => Err(e),
            }
        })
        .await
    }

    /// Starts a listing of one type directory as a JSON stream, produced a chunk at a time
    /// (on a blocking thread) while the response is being sent. `None` if the type directory does not exist (the
    /// repository was never created).
    pub(crate) async fn list(
        &self,
        repo: &RepoPath,
        kind: Kind,
        v2: bool,
    ) -> io::Result<Option<Listing>> {
        let dir = self.type_dir(repo, kind);
        smol::unblock(move || {
            match fs::metadata(&dir) {
                Ok(m) if m.is_dir() => {}
                Ok(_) => return Ok(None),
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
                Err(e) => return Err(e),
            }
            let dirs = if kind == Kind::Data {
                (0..=255u8).map(|i| dir.join(format!("{i:02x}"))).collect()
            } else {
                vec![dir]
            };
            Ok(Some(Listing::new(dirs, v2)))
        })
        .await
    }

    /// Accepts the result of an fsync. A file system that cannot fsync (some FUSE and network
    /// mounts answer EINVAL) is warned about once and otherwise tolerated: the data is
    /// written, only its durability on power loss is weaker there.
    pub(crate) fn tolerate_no_fsync(&self, synced: io::Result<()>, what: &Path) -> io::Result<()> {
        match synced {
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::InvalidInput | io::ErrorKind::Unsupported
                ) =>
            {
                if !self.fsync_warned.swap(true, Ordering::Relaxed) {
                    log::warn!(
                        "fsync is not supported on the file system of {}: uploads are not protected against power loss ({e})",
                        what.display()
                    );
                }
                Ok(())
            }
            other => other,
        }
    }
}

/// What sits under an object's name.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Occupant {
    /// A regular file (or a symlink to one) of this size: an object that can be read.
    File(u64),
    /// A directory, FIFO, device or dangling symlink: no object, and no room for one.
    Other,
}

/// What a lookup from the kernel's caches found.
enum Lookup {
    /// Nothing by that name (a cached negative entry; also a dangling symlink).
    Absent,
    /// A directory, FIFO, device: no object.
    NotAFile,
    /// A regular file of that size, opened for reading if asked and that could be done
    /// without waiting.
    File(Option<File>, u64),
}

/// A byte range of a file as a response body, read ahead one chunk: the chunk just read is
/// handed to hyper (no copy) while the next one is read with one pread(2). What the page
/// cache holds is read at once on the executor thread (`preadv2` with `RWF_NOWAIT`, which
/// never waits for the disk); only what must come from the disk goes to a blocking thread,
/// since a hand-off per chunk costs more CPU than the copy.
/// Buffers come back to the body once hyper has sent them ([`Recycled`]), so a download of
/// any length uses two buffers (an allocation per chunk made musl map and unmap 128 KiB each
/// time).
pub(crate) struct FileBody {
    reading: Option<Reading>,
    /// The file while no read is in flight.
    file: Option<File>,
    /// Where the next read starts, how much of the range is not yet being read, and how much
    /// is not yet handed on.
    offset: u64,
    left: u64,
    remaining: u64,
    spare: Arc<Mutex<Vec<Vec<u8>>>>,
}

/// A chunk read: at once from the page cache, or in flight on a blocking thread. Either
/// gives back the file and the filled buffer.
enum Reading {
    Done(File, Vec<u8>, io::Result<()>),
    Waiting(Task<(File, Vec<u8>, io::Result<()>)>),
}

/// A buffer on its way through hyper; dropped (sent), it goes back to its body's spares.
struct Recycled {
    buf: Vec<u8>,
    spare: Arc<Mutex<Vec<Vec<u8>>>>,
}

impl AsRef<[u8]> for Recycled {
    fn as_ref(&self) -> &[u8] {
        &self.buf
    }
}

impl Drop for Recycled {
    fn drop(&mut self) {
        let mut spare = self.spare.locked();
        if spare.len() < 2 {
            spare.push(std::mem::take(&mut self.buf));
        }
    }
}

impl FileBody {
    fn new(file: File, start: u64, len: u64) -> FileBody {
        let mut body = FileBody {
            reading: None,
            file: Some(file),
            offset: start,
            left: len,
            remaining: len,
            spare: Arc::default(),
        };
        body.read_next();
        body
    }

    /// Bytes of the range not yet handed on.
    pub(crate) fn remaining(&self) -> u64 {
        self.remaining
    }

    /// Starts reading the next chunk, if any.
    fn read_next(&mut self) {
        if self.left == 0 {
            return;
        }
        let Some(file) = self.file.take() else {
            return;
        };
        let n = self.left.min(READ_CHUNK as u64) as usize;
        let spare = self.spare.locked().pop();
        let mut buf = match spare {
            // Zeroes only what this buffer has never held (a longer chunk than before).
            Some(mut b) if b.capacity() >= n => {
                b.resize(n, 0);
                b
            }
            // A new buffer: calloc, which skips the memset when the allocator maps fresh
            // (already zero) pages, as it does for this size.
            _ => vec![0u8; n],
        };
        let offset = self.offset;
        self.offset += n as u64;
        self.left -= n as u64;
        // EAGAIN (not all cached) and EOPNOTSUPP (a file system or kernel without
        // RWF_NOWAIT) leave it all to the blocking read; a short read leaves it the rest.
        let cached = rustix::io::preadv2(
            &file,
            &mut [io::IoSliceMut::new(&mut buf)],
            offset,
            rustix::io::ReadWriteFlags::NOWAIT,
        )
        .unwrap_or(0);
        if cached == n {
            self.reading = Some(Reading::Done(file, buf, Ok(())));
            return;
        }
        self.reading = Some(Reading::Waiting(smol::unblock(move || {
            // The file is shorter than its size said only if someone truncated it under
            // us: an error, so the response is cut off rather than padded or short.
            let read = file.read_exact_at(&mut buf[cached..], offset + cached as u64);
            (file, buf, read)
        })));
    }

    /// The next chunk of the range; `None` at its end.
    pub(crate) fn poll_chunk(&mut self, cx: &mut Context<'_>) -> Poll<Option<io::Result<Bytes>>> {
        let (file, filled, read) = match self.reading.take() {
            None => return Poll::Ready(None),
            Some(Reading::Done(file, filled, read)) => (file, filled, read),
            Some(Reading::Waiting(mut task)) => match Pin::new(&mut task).poll(cx) {
                Poll::Ready(done) => done,
                Poll::Pending => {
                    self.reading = Some(Reading::Waiting(task));
                    return Poll::Pending;
                }
            },
        };
        self.file = Some(file);
        if let Err(e) = read {
            return Poll::Ready(Some(Err(e)));
        }
        self.remaining -= filled.len() as u64;
        self.read_next();
        let spare = self.spare.clone();
        Poll::Ready(Some(Ok(Bytes::from_owner(Recycled { buf: filled, spare }))))
    }
}

/// A blocking `Read` that produces the JSON listing of some directories entry by entry, so a
/// 100 000-object `data/` streams out in constant memory. Only valid ids are listed: temp
/// files of uploads in flight and stray files never appear.
///
/// Directories are read with getdents into one reused buffer and each entry is stat'ed
/// relative to its directory, so an entry costs no allocation (musl's allocator made that
/// a fifth of a listing's time; bench-results/2026-11-23/README.md, "Listings without allocations").
pub(crate) struct Listing {
    dirs: std::vec::IntoIter<PathBuf>,
    /// The directory being read. Between calls of `fill` its offset is always right after
    /// the last batch of entries listed, so nothing is skipped or listed twice.
    current: Option<OwnedFd>,
    /// The getdents buffer (its spare capacity: the kernel fills it, nothing is zeroed).
    entries: Vec<u8>,
    v2: bool,
    first: bool,
    done: bool,
    buf: Vec<u8>,
    pos: usize,
}

/// getdents reads about 350 entries of `data/xx` per call into this.
const DIR_BUFFER: usize = 32 * 1024;

impl Listing {
    fn new(dirs: Vec<PathBuf>, v2: bool) -> Listing {
        Listing {
            dirs: dirs.into_iter(),
            current: None,
            entries: Vec::new(),
            v2,
            first: true,
            done: false,
            buf: b"[".to_vec(),
            pos: 0,
        }
    }

    /// Appends entries to `buf` until it holds about a chunk (at most one getdents batch
    /// more) or everything is listed.
    fn fill(&mut self) -> io::Result<()> {
        self.buf.clear();
        self.pos = 0;
        while self.buf.len() < LIST_CHUNK && !self.done {
            let Some(dir) = self.current.as_ref() else {
                match self.dirs.next() {
                    None => {
                        self.buf.extend_from_slice(b"]\n");
                        self.done = true;
                    }
                    // O_DIRECTORY (as opendir does): whatever else sits at data/xx, a FIFO
                    // say, fails at once instead of being opened.
                    Some(d) => match open(
                        &d,
                        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
                        Mode::empty(),
                    ) {
                        Ok(fd) => self.current = Some(fd),
                        // A data/xx directory not created yet holds nothing.
                        Err(Errno::NOENT) => {}
                        // Something else in its place (a file, a FIFO) holds no objects
                        // either: skipped, so the listing stays valid JSON.
                        Err(Errno::NOTDIR) => {
                            log::warn!("listing: {} is not a directory: skipped", d.display());
                        }
                        Err(e) => return Err(e.into()),
                    },
                }
                continue;
            };
            if self.entries.capacity() == 0 {
                self.entries.reserve_exact(DIR_BUFFER);
            }
            // One batch: stop only where the buffer is used up, at the directory's offset.
            let mut batch = RawDir::new(dir, self.entries.spare_capacity_mut());
            let ended = loop {
                match batch.next() {
                    None => break true,
                    Some(Err(e)) => return Err(e.into()),
                    Some(Ok(entry)) => {
                        let out = ListedObject {
                            buf: &mut self.buf,
                            first: &mut self.first,
                            v2: self.v2,
                        };
                        out.add(dir, entry.file_name())?;
                    }
                }
                if batch.is_buffer_empty() {
                    break false;
                }
            };
            if ended {
                self.current = None;
            }
        }
        Ok(())
    }
}

/// Where one directory entry is written, if it is an object.
struct ListedObject<'a> {
    buf: &'a mut Vec<u8>,
    first: &'a mut bool,
    v2: bool,
}

impl ListedObject<'_> {
    fn add(self, dir: &OwnedFd, name: &CStr) -> io::Result<()> {
        let Some(id) = name.to_str().ok().filter(|n| ObjectId::is_valid(n)) else {
            return Ok(());
        };
        // A listing races deletes; a file gone since getdents is simply not listed.
        let size = match statat(dir, name, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) if FileType::from_raw_mode(st.st_mode as _) == FileType::RegularFile => {
                u64::try_from(st.st_size).unwrap_or(0)
            }
            Ok(_) | Err(Errno::NOENT) => return Ok(()),
            Err(e) => return Err(e.into()),
        };
        if !std::mem::take(self.first) {
            self.buf.push(b',');
        }
        if self.v2 {
            self.buf.extend_from_slice(br#"{"name":""#);
            self.buf.extend_from_slice(id.as_bytes());
            self.buf.extend_from_slice(br#"","size":"#);
            write!(self.buf, "{size}")?;
            self.buf.push(b'}');
        } else {
            self.buf.push(b'"');
            self.buf.extend_from_slice(id.as_bytes());
            self.buf.push(b'"');
        }
        Ok(())
    }
}

impl Listing {
    /// The next piece of the JSON text; `None` once all of it was handed out.
    pub(crate) fn next_chunk(&mut self) -> io::Result<Option<Vec<u8>>> {
        if self.pos == self.buf.len() {
            if self.done {
                return Ok(None);
            }
            self.fill()?;
        }
        let mut chunk = std::mem::take(&mut self.buf);
        chunk.drain(..self.pos);
        self.pos = 0;
        Ok(Some(chunk))
    }
}

impl Read for Listing {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if self.pos == self.buf.len() {
            if self.done {
                return Ok(0);
            }
            self.fill()?;
        }
        let n = out.len().min(self.buf.len() - self.pos);
        out[..n].copy_from_slice(&self.buf[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read_all(mut l: Listing) -> String {
        let mut s = String::new();
        l.read_to_string(&mut s).unwrap();
        s
    }

    #[test]
    fn lookups_answer_the_same_from_the_caches_and_from_a_blocking_thread() {
        // size() and open() answer from the kernel's caches when they can (cached_lookup)
        // and on a blocking thread otherwise; each kind of name must get the same answer
        // either way, and the cached answer must be the one the blocking path gives.
        let dir = std::env::temp_dir().join(format!("lookups-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(dir.join("a-dir")).unwrap();
        fs::write(dir.join("file"), b"12345").unwrap();
        std::os::unix::fs::symlink(dir.join("file"), dir.join("link")).unwrap();
        std::os::unix::fs::symlink(dir.join("nowhere"), dir.join("dangling")).unwrap();
        let fifo = std::process::Command::new("mkfifo")
            .arg(dir.join("fifo"))
            .status()
            .unwrap();
        assert!(fifo.success());
        let repos = Repos::new(dir.clone(), false);
        let cases = [
            ("file", Some(5)),
            ("link", Some(5)),
            ("missing", None),
            ("dangling", None),
            ("a-dir", None),
            ("fifo", None),
        ];
        for (name, want) in cases {
            let p = dir.join(name);
            // Twice: the first lookup may fill the caches that the second is answered from.
            for _ in 0..2 {
                assert_eq!(smol::block_on(repos.size(&p)).unwrap(), want, "{name}");
                let opened = smol::block_on(repos.open(&p)).unwrap();
                assert_eq!(opened.as_ref().map(|(_, len)| *len), want, "{name}");
                if let Some((mut f, _)) = opened {
                    let mut got = String::new();
                    f.read_to_string(&mut got).unwrap();
                    assert_eq!(got, "12345");
                }
            }
            let cached = match repos.cached_lookup(&p, true) {
                None => "blocking",
                Some(Lookup::Absent | Lookup::NotAFile) => "none",
                Some(Lookup::File(f, len)) => {
                    assert_eq!((f.is_some(), Some(len)), (true, want), "{name}");
                    "file"
                }
            };
            assert!(
                cached == "blocking" || (cached == "file") == want.is_some(),
                "{name}: {cached}"
            );
        }
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn file_ranges_across_read_chunks_arrive_whole_and_in_order() {
        let read_to_end = |mut body: FileBody| -> io::Result<Vec<u8>> {
            let mut got = Vec::new();
            while let Some(chunk) = smol::block_on(std::future::poll_fn(|cx| body.poll_chunk(cx))) {
                got.extend_from_slice(&chunk?);
            }
            Ok(got)
        };
        let path = std::env::temp_dir().join(format!("filebody-{}", std::process::id()));
        let data: Vec<u8> = (0..READ_CHUNK * 7 / 2).map(|i| (i % 251) as u8).collect();
        fs::write(&path, &data).unwrap();
        let len = data.len() as u64;
        let chunk = READ_CHUNK as u64;
        for (start, n) in [
            (0, len),
            (1, chunk),
            (chunk - 1, chunk + 2),
            (len - 10, 10),
            (5, 0),
        ] {
            let got = read_to_end(Repos::stream(File::open(&path).unwrap(), start, n)).unwrap();
            let (a, b) = (start as usize, (start + n) as usize);
            assert!(got == data[a..b], "range {start}+{n}");
        }
        // A file cut short under a download fails it; it is not padded or silently short.
        assert!(read_to_end(Repos::stream(File::open(&path).unwrap(), 0, len + 1)).is_err());
        fs::remove_file(&path).unwrap();
    }

    #[test]
    fn listing_skips_non_ids_and_streams_valid_json() {
        let dir = std::env::temp_dir().join(format!("listing-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let id_a = "a".repeat(64);
        let id_b = "b".repeat(64);
        fs::write(dir.join(&id_a), b"123").unwrap();
        fs::write(dir.join(&id_b), b"").unwrap();
        fs::write(dir.join(format!("{id_a}.rest-server-temp1234")), b"x").unwrap();
        fs::write(dir.join("README"), b"x").unwrap();
        fs::create_dir(dir.join("c".repeat(64))).unwrap();

        let v1 = read_all(Listing::new(vec![dir.clone(), dir.join("missing")], false));
        assert!(
            v1 == format!("[\"{id_a}\",\"{id_b}\"]\n")
                || v1 == format!("[\"{id_b}\",\"{id_a}\"]\n"),
            "{v1}"
        );
        let v2 = read_all(Listing::new(vec![dir.clone()], true));
        assert!(
            v2.contains(&format!(r#"{{"name":"{id_a}","size":3}}"#)),
            "{v2}"
        );
        assert!(
            v2.contains(&format!(r#"{{"name":"{id_b}","size":0}}"#)),
            "{v2}"
        );
        assert_eq!(read_all(Listing::new(vec![], true)), "[]\n");
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn listing_skips_a_fifo_or_file_where_a_directory_belongs() {
        // Opened without O_DIRECTORY, a FIFO at data/xx would block the listing until some
        // writer appeared, i.e. forever; failing on it cut the JSON off after "[". Both it
        // and a regular file there hold no objects: skipped, the listing stays whole.
        let dir = std::env::temp_dir().join(format!("listing-fifo-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let fifo = dir.join("00");
        let made = std::process::Command::new("mkfifo").arg(&fifo).status();
        assert!(made.unwrap().success());
        let file = dir.join("01");
        fs::write(&file, b"x").unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(read_all(Listing::new(vec![fifo, file], true)));
        });
        let got = rx.recv_timeout(std::time::Duration::from_secs(10));
        assert_eq!(got.expect("the listing hung on the FIFO"), "[]\n");
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn listing_across_many_batches_and_chunks_names_each_object_once() {
        // 3000 entries: about 8 getdents batches and 4 output chunks, read in odd-sized
        // pieces, plus an empty and a missing directory between two full ones.
        let dir = std::env::temp_dir().join(format!("listing-many-{}", std::process::id()));
        let (a, b, empty) = (dir.join("a"), dir.join("b"), dir.join("empty"));
        for d in [&a, &b, &empty] {
            fs::create_dir_all(d).unwrap();
        }
        let mut want = std::collections::BTreeSet::new();
        for i in 0..3000u32 {
            let id = format!("{i:064x}");
            let d = if i % 3 == 0 { &b } else { &a };
            fs::write(d.join(&id), i.to_string()).unwrap();
            want.insert(format!(
                r#"{{"name":"{id}","size":{}}}"#,
                i.to_string().len()
            ));
        }
        let mut l = Listing::new(vec![a, empty, dir.join("missing"), b], true);
        let mut out = Vec::new();
        let mut piece = [0u8; 1000];
        loop {
            match l.read(&mut piece).unwrap() {
                0 => break,
                n => out.extend_from_slice(&piece[..n]),
            }
        }
        let out = String::from_utf8(out).unwrap();
        let inner = out
            .strip_prefix("[{")
            .unwrap()
            .strip_suffix("}]\n")
            .unwrap();
        let got: Vec<String> = inner.split("},{").map(|o| format!("{{{o}}}")).collect();
        assert_eq!(got.len(), 3000);
        let got: std::collections::BTreeSet<String> = got.into_iter().collect();
        assert!(got == want, "{} distinct objects listed", got.len());
        fs::remove_dir_all(&dir).unwrap();
    }
}
