//! One upload, crash-safe: a temp file beside the target (O_EXCL, a name that can never be an
//! id), the body streamed into it while SHA-256 and the quota see every byte once, then fsync,
//! publish under the final name, fsync the directory. Only then is the object visible.
//!
//! Any early return drops the [`TempObject`], which removes the temp file; it never touches
//! the final name, so an aborted upload cannot harm a concurrent successful one (SPEC 5.7).
//! Which status a failure gets is decided in `error.rs`, not here.

use crate::error::Error;
use crate::quota::Reservation;
use crate::repo::{Repos, make_dir};
use sha2::{Digest, Sha256};
use smol::Task;
use smol::io::{AsyncRead, AsyncReadExt};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// Marks temp files. It contains a `.`, so a temp name can never be a valid id and is never
/// listed or served.
const TEMP_MARKER: &str = ".rest-server-temp";

/// One chunk of the body: filled from the client, hashed, then handed as a whole to a blocking
/// thread for one write(2). Two per upload (one filling, one being written, so hashing overlaps
/// the disk write): eight concurrent uploads hold 2 MiB, and no byte is copied in user space.
const BODY_CHUNK: usize = 128 * 1024;

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

/// Reads `body` to its end, hashing (if `verify`), counting against `quota` and writing to
/// `sink` as it goes. A body shorter than `declared` is an error (the client went away).
pub(crate) async fn receive<R: AsyncRead + Unpin>(
    body: &mut R,
    declared: Option<u64>,
    verify: bool,
    mut sink: Option<&mut TempObject>,
    mut quota: Option<&mut Reservation>,
) -> Result<Received, Error> {
    let mut buf = vec![0u8; BODY_CHUNK];
    let mut hasher = verify.then(Sha256::new);
    let mut len = 0u64;
    loop {
        // Fill the whole chunk (or reach the end): the disk gets few, large writes.
        let mut n = 0;
        while n < buf.len() {
            match body.read(&mut buf[n..]).await.map_err(Error::ClientGone)? {
                0 => break,
                got => n += got,
            }
        }
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
        if let Some(s) = sink.as_deref_mut() {
            buf = s.write(buf, n).await?;
        }
    }
    if declared.is_some_and(|d| len < d) {
        return Err(Error::ClientGone(io::ErrorKind::UnexpectedEof.into()));
    }
    Ok(Received {
        len,
        sha256: hasher.map(|h| hex(&h.finalize())),
    })
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

/// An upload in progress: a temp file next to `target`.
pub(crate) struct TempObject {
    temp: TempPath,
    target: PathBuf,
    /// The file while no write is in flight; else the blocking write hands it back.
    file: Option<File>,
    writing: Option<Writing>,
}

/// A chunk being written on a blocking thread; gives back the file and the buffer.
type Writing = Task<(File, Vec<u8>, io::Result<()>)>;

impl TempObject {
    /// Creates the temp file beside `target`. With `create_parent` a missing parent directory
    /// (a `data/xx` directory) is created, but only if its own parent exists: an upload never
    /// conjures up a repository that was not created.
    pub(crate) async fn create(
        repos: &Repos,
        target: PathBuf,
        create_parent: bool,
    ) -> Result<TempObject, Error> {
        let (mode, dir_mode) = (repos.file_mode(), repos.dir_mode());
        let t = target.clone();
        let (file, temp) = smol::unblock(move || -> io::Result<(File, PathBuf)> {
            let name = t
                .file_name()
                .unwrap_or_default()
                .to_string_lossy()
                .into_owned();
            let mut made_dir = false;
            loop {
                let temp =
                    t.with_file_name(format!("{name}{TEMP_MARKER}{:016x}", fastrand::u64(..)));
                let opened = OpenOptions::new()
                    .write(true)
                    .create_new(true) // O_EXCL: never open someone else's file
                    .mode(mode)
                    .open(&temp);
                match opened {
                    Ok(f) => {
                        if mode != 0o600 {
                            // The umask may have removed the group bits of 0660.
                            f.set_permissions(fs::Permissions::from_mode(mode))?;
                        }
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
        })
        .await?;
        Ok(TempObject {
            temp: TempPath(Some(temp)),
            target,
            file: Some(file),
            writing: None,
        })
    }

    /// Starts writing `buf[..n]` on a blocking thread and returns a buffer to fill next (the
    /// one the previous write is done with), so the caller hashes while the disk writes.
    async fn write(&mut self, buf: Vec<u8>, n: usize) -> io::Result<Vec<u8>> {
        let spare = self.wait_for_write().await?;
        let mut file = self
            .file
            .take()
            .ok_or_else(|| io::Error::other("temp file busy"))?;
        self.writing = Some(smol::unblock(move || {
            let written = file.write_all(&buf[..n]);
            (file, buf, written)
        }));
        Ok(spare.unwrap_or_else(|| vec![0u8; BODY_CHUNK]))
    }

    /// Waits for the write in flight, if any, and returns its buffer. A failed write(2) comes
    /// back as itself (ENOSPC, EDQUOT, EIO), so the status (507 or 500) is decided on it.
    async fn wait_for_write(&mut self) -> io::Result<Option<Vec<u8>>> {
        let Some(task) = self.writing.take() else {
            return Ok(None);
        };
        let (file, buf, written) = task.await;
        self.file = Some(file);
        written.map(|()| Some(buf))
    }

    /// Makes the upload durable and visible: flush, fsync the file, publish it under the
    /// target name, fsync the directory. Returns only when a power cut can no longer lose it.
    /// Once the object is published its bytes are on disk: `quota` is kept from that moment,
    /// even if the directory fsync then fails.
    pub(crate) async fn commit(
        mut self,
        repos: &Repos,
        quota: Option<Reservation>,
    ) -> Result<Stored, Error> {
        self.wait_for_write().await?;
        let TempObject {
            mut temp,
            target,
            file,
            ..
        } = self;
        let file = file.ok_or_else(|| io::Error::other("temp file busy"))?;
        let temp_path = temp.0.clone().unwrap_or_default();

        // fsync before publishing, or a crash could expose an empty or partial object.
        let (file, synced) = smol::unblock(move || {
            let r = file.sync_all();
            (file, r)
        })
        .await;
        repos.tolerate_no_fsync(synced, &temp_path)?;
        drop(file);

        let (t, dst, lock) = (temp_path.clone(), target.clone(), repos.rename_lock());
        let stored = smol::unblock(move || publish(&t, &dst, &lock)).await?;
        if stored == Stored::New {
            if let Some(r) = quota {
                r.keep();
            }
            // The temp name is gone (renamed, or linked and unlinked): nothing to clean up.
            temp.0 = None;
            let dir = target.parent().unwrap_or(Path::new(".")).to_owned();
            let d = dir.clone();
            let synced = smol::unblock(move || File::open(&d)?.sync_all()).await;
            // The rename is durable only once the directory entry is.
            repos.tolerate_no_fsync(synced, &dir)?;
        }
        Ok(stored)
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
        let got = smol::block_on(receive(&mut body, Some(3), true, None, None)).unwrap();
        assert_eq!(got.len, 3);
        assert_eq!(
            got.sha256.unwrap(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn short_body_is_an_error() {
        let mut body: &[u8] = b"abc";
        let got = smol::block_on(receive(&mut body, Some(4), true, None, None));
        assert!(matches!(got, Err(Error::ClientGone(_))));
    }

    #[test]
    fn body_of_several_chunks_lands_intact() {
        // Double-buffered writes: chunks must reach the file whole and in order.
        let dir = std::env::temp_dir().join(format!("upload-chunks-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let repos = Repos::new(dir.clone(), false);
        let data: Vec<u8> = (0..BODY_CHUNK * 5 / 2).map(|i| (i % 251) as u8).collect();
        let target = dir.join("object");
        smol::block_on(async {
            let mut temp = TempObject::create(&repos, target.clone(), false)
                .await
                .unwrap();
            let mut body: &[u8] = &data;
            let got = receive(
                &mut body,
                Some(data.len() as u64),
                true,
                Some(&mut temp),
                None,
            );
            assert_eq!(got.await.unwrap().len, data.len() as u64);
            assert_eq!(temp.commit(&repos, None).await.unwrap(), Stored::New);
        });
        assert!(fs::read(&target).unwrap() == data);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn temp_names_are_never_ids() {
        let name = format!("{}{TEMP_MARKER}{:016x}", "a".repeat(64), u64::MAX);
        assert!(crate::route::ObjectId::parse(&name).is_none());
    }
}
