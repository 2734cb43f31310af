//! The on-disk layout, identical to the Go server's: `<--path>/<repo...>/{config, keys/<id>,
//! locks/<id>, snapshots/<id>, index/<id>, data/<xx>/<id>}`. Paths, repository creation, stat,
//! streamed reads, listings, deletes and file modes live here; users, HTTP and quota do not.
//!
//! All blocking file-system calls go through `smol::unblock` (or an `Unblock` pipe for
//! listings), so a slow SD card never stalls the executor threads.

use crate::route::{Kind, ObjectId, RepoPath};
use smol::io::{AsyncBufRead, AsyncRead};
use smol::{Task, Unblock};
use std::fs::{self, DirBuilder, File};
use std::future::Future;
use std::io::{self, Read};
use std::os::unix::fs::{DirBuilderExt, FileExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, ready};

/// Modes of what we create: private to the server's user, or shared with its group.
const FILE_MODE: u32 = 0o600;
const DIR_MODE: u32 = 0o700;
const GROUP_FILE_MODE: u32 = 0o660;
const GROUP_DIR_MODE: u32 = 0o770;

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
}

impl Repos {
    pub(crate) fn new(root: PathBuf, group_accessible: bool) -> Repos {
        Repos {
            root,
            group_accessible,
            fsync_warned: AtomicBool::new(false),
            rename_lock: Arc::default(),
        }
    }

    pub(crate) fn rename_lock(&self) -> Arc<Mutex<()>> {
        self.rename_lock.clone()
    }

    pub(crate) fn root(&self) -> &Path {
        &self.root
    }

    pub(crate) fn file_mode(&self) -> u32 {
        if self.group_accessible {
            GROUP_FILE_MODE
        } else {
            FILE_MODE
        }
    }

    pub(crate) fn dir_mode(&self) -> u32 {
        if self.group_accessible {
            GROUP_DIR_MODE
        } else {
            DIR_MODE
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
        make_dir(&self.root, self.dir_mode(), true)
    }

    /// Creates a repository: its directory, the five type directories and `data/00`..`data/ff`.
    /// Idempotent, like the Go server's `createRepo`.
    pub(crate) async fn create(&self, repo: &RepoPath) -> io::Result<()> {
        let dir = self.repo_dir(repo);
        let dir_mode = self.dir_mode();
        smol::unblock(move || {
            let mk = |p: &Path| make_dir(p, dir_mode, true);
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
        let path = path.to_owned();
        smol::unblock(move || match fs::metadata(&path) {
            Ok(m) if m.is_file() => Ok(Some(m.len())),
            Ok(_) => Ok(None),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        })
        .await
    }

    /// Opens a regular file for reading: `(file, size)`, `None` if it does not exist.
    pub(crate) async fn open(&self, path: &Path) -> io::Result<Option<(File, u64)>> {
        let path = path.to_owned();
        smol::unblock(move || {
            let file = match File::open(&path) {
                Ok(f) => f,
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
                Err(e) => return Err(e),
            };
            let meta = file.metadata()?;
            Ok(meta.is_file().then_some((file, meta.len())))
        })
        .await
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

    /// Starts a listing of one type directory as a JSON stream, produced on a blocking thread
    /// while the response is being sent. `None` if the type directory does not exist (the
    /// repository was never created).
    pub(crate) async fn list(
        &self,
        repo: &RepoPath,
        kind: Kind,
        v2: bool,
    ) -> io::Result<Option<Unblock<Listing>>> {
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
            Ok(Some(Unblock::with_capacity(
                LIST_CHUNK,
                Listing::new(dirs, v2),
            )))
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

/// A byte range of a file as a response body. Two owned buffers take turns: the response
/// is sent from one while a blocking task reads the next chunk into the other with one
/// pread(2), and the buffer just sent is what that read fills next.
pub(crate) struct FileBody {
    /// The chunk being sent: `buf[pos..]` is still to go.
    buf: Vec<u8>,
    pos: usize,
    reading: Option<Reading>,
    /// The file while no read is in flight.
    file: Option<File>,
    /// Where the next read starts, and how much of the range is not yet being read.
    offset: u64,
    left: u64,
}

/// A chunk read in flight; it gives back the file and the filled buffer.
type Reading = Task<(File, Vec<u8>, io::Result<()>)>;

impl FileBody {
    fn new(file: File, start: u64, len: u64) -> FileBody {
        let mut body = FileBody {
            buf: Vec::new(),
            pos: 0,
            reading: None,
            file: Some(file),
            offset: start,
            left: len,
        };
        body.read_next(Vec::new());
        body
    }

    /// Starts reading the next chunk, if any, into `spare`.
    fn read_next(&mut self, mut spare: Vec<u8>) {
        if self.left == 0 {
            return;
        }
        let Some(file) = self.file.take() else {
            return;
        };
        let n = self.left.min(READ_CHUNK as u64) as usize;
        // Zeroes only what a buffer has never held: the first chunk, or a longer one.
        spare.resize(n, 0);
        let offset = self.offset;
        self.offset += n as u64;
        self.left -= n as u64;
        self.reading = Some(smol::unblock(move || {
            // The file is shorter than its size said only if someone truncated it under
            // us: an error, so the response is cut off rather than padded or short.
            let read = file.read_exact_at(&mut spare, offset);
            (file, spare, read)
        }));
    }
}

impl AsyncBufRead for FileBody {
    fn poll_fill_buf(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<&[u8]>> {
        let this = self.get_mut();
        if this.pos == this.buf.len()
            && let Some(task) = this.reading.as_mut()
        {
            let (file, filled, read) = ready!(Pin::new(task).poll(cx));
            this.reading = None;
            this.file = Some(file);
            read?;
            let sent = std::mem::replace(&mut this.buf, filled);
            this.pos = 0;
            this.read_next(sent);
        }
        Poll::Ready(Ok(&this.buf[this.pos..]))
    }

    fn consume(mut self: Pin<&mut Self>, amt: usize) {
        self.pos = (self.pos + amt).min(self.buf.len());
    }
}

impl AsyncRead for FileBody {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        out: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        let got = ready!(self.as_mut().poll_fill_buf(cx))?;
        let n = got.len().min(out.len());
        out[..n].copy_from_slice(&got[..n]);
        self.consume(n);
        Poll::Ready(Ok(n))
    }
}

/// Creates `dir` (and with `recursive` its missing parents) with `mode`; an existing
/// directory is fine.
pub(crate) fn make_dir(dir: &Path, mode: u32, recursive: bool) -> io::Result<()> {
    match DirBuilder::new()
        .recursive(recursive)
        .mode(mode)
        .create(dir)
    {
        // The umask may have removed group bits from a 0770 directory: put them back.
        Ok(()) if mode != DIR_MODE => fs::set_permissions(dir, fs::Permissions::from_mode(mode)),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists && dir.is_dir() => Ok(()),
        other => other,
    }
}

/// A blocking `Read` that produces the JSON listing of some directories entry by entry, so a
/// 100 000-object `data/` streams out in constant memory. Only valid ids are listed: temp
/// files of uploads in flight and stray files never appear.
pub(crate) struct Listing {
    dirs: std::vec::IntoIter<PathBuf>,
    current: Option<fs::ReadDir>,
    v2: bool,
    first: bool,
    done: bool,
    buf: Vec<u8>,
    pos: usize,
}

impl Listing {
    fn new(dirs: Vec<PathBuf>, v2: bool) -> Listing {
        Listing {
            dirs: dirs.into_iter(),
            current: None,
            v2,
            first: true,
            done: false,
            buf: b"[".to_vec(),
            pos: 0,
        }
    }

    /// Appends entries to `buf` until it holds about a chunk or everything is listed.
    fn fill(&mut self) -> io::Result<()> {
        self.buf.clear();
        self.pos = 0;
        while self.buf.len() < LIST_CHUNK && !self.done {
            let Some(dir) = self.current.as_mut() else {
                match self.dirs.next() {
                    None => {
                        self.buf.extend_from_slice(b"]\n");
                        self.done = true;
                    }
                    Some(d) => match fs::read_dir(&d) {
                        Ok(rd) => self.current = Some(rd),
                        // A data/xx directory not created yet holds nothing.
                        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                        Err(e) => return Err(e),
                    },
                }
                continue;
            };
            let Some(entry) = dir.next() else {
                self.current = None;
                continue;
            };
            let entry = entry?;
            let name = entry.file_name();
            let Some(id) = name.to_str().and_then(ObjectId::parse) else {
                continue;
            };
            // A listing races deletes; a file gone since readdir is simply not listed.
            let size = match entry.metadata() {
                Ok(m) if m.is_file() => m.len(),
                Ok(_) => continue,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            };
            if !std::mem::take(&mut self.first) {
                self.buf.push(b',');
            }
            if self.v2 {
                self.buf.extend_from_slice(br#"{"name":""#);
                self.buf.extend_from_slice(id.as_str().as_bytes());
                self.buf.extend_from_slice(br#"","size":"#);
                self.buf.extend_from_slice(size.to_string().as_bytes());
                self.buf.push(b'}');
            } else {
                self.buf.push(b'"');
                self.buf.extend_from_slice(id.as_str().as_bytes());
                self.buf.push(b'"');
            }
        }
        Ok(())
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
    fn file_ranges_across_read_chunks_arrive_whole_and_in_order() {
        use smol::io::AsyncReadExt;
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
            let mut got = Vec::new();
            let mut body = Repos::stream(File::open(&path).unwrap(), start, n);
            smol::block_on(body.read_to_end(&mut got)).unwrap();
            let (a, b) = (start as usize, (start + n) as usize);
            assert!(got == data[a..b], "range {start}+{n}");
        }
        // A file cut short under a download fails it; it is not padded or silently short.
        let mut body = Repos::stream(File::open(&path).unwrap(), 0, len + 1);
        let mut got = Vec::new();
        assert!(smol::block_on(body.read_to_end(&mut got)).is_err());
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
}
