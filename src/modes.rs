//! File modes of everything we create, and the one umask fix-up. Backups and password hashes
//! are private to the server's user; `--group-accessible-repos` shares repositories with its
//! group. A umask may take bits away from the mode asked for at creation: those are put back.

use std::fs::{self, DirBuilder, File};
use std::io;
use std::os::unix::fs::{DirBuilderExt as _, PermissionsExt as _};
use std::path::Path;

/// Files and directories only the server's user may read: objects, the htpasswd file, keys,
/// the access log.
pub(crate) const PRIVATE_FILE: u32 = 0o600;
pub(crate) const PRIVATE_DIR: u32 = 0o700;
/// With `--group-accessible-repos`.
pub(crate) const GROUP_FILE: u32 = 0o660;
pub(crate) const GROUP_DIR: u32 = 0o770;

/// Gives a file just created the mode asked for, whatever the umask took away. A no-op for
/// 0600 and narrower (a umask never adds bits).
pub(crate) fn restore_mode(file: &File, mode: u32) -> io::Result<()> {
    if mode & 0o077 == 0 {
        return Ok(());
    }
    file.set_permissions(fs::Permissions::from_mode(mode))
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
        Ok(()) if mode & 0o077 != 0 => fs::set_permissions(dir, fs::Permissions::from_mode(mode)),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists && dir.is_dir() => Ok(()),
        other => other,
    }
}
