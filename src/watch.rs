//! A configuration file a running server re-reads by itself: on SIGHUP ([`Watched::reload`]),
//! and when its mtime, size or inode change ([`Watched::reload_if_changed`], which looks at
//! most every [`check_interval`]). A version that fails to load never replaces the one in use:
//! the error is logged (once per change, not every interval) and the previous version stays.
//!
//! The htpasswd file (`auth/mod.rs`) and the access file (`access.rs`) both live in one of these.

use crate::lock::{Lock as _, ReadWrite as _};
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime};

/// How often the file's mtime, size and inode are looked at for changes.
const CHECK_INTERVAL: Duration = Duration::from_secs(30);

/// Test-only: `REST_SERVER_POLL_INTERVAL_MS` replaces [`CHECK_INTERVAL`], so the black-box
/// tests of reloads on change wait well under a second instead of 30 s. Not a flag and not in
/// `--help`; docs/architecture.md ("Tests") says so.
pub(crate) const POLL_INTERVAL_ENV: &str = "REST_SERVER_POLL_INTERVAL_MS";

/// [`CHECK_INTERVAL`], or the test-only override in [`POLL_INTERVAL_ENV`] (read once).
pub(crate) fn check_interval() -> Duration {
    static INTERVAL: std::sync::OnceLock<Duration> = std::sync::OnceLock::new();
    *INTERVAL.get_or_init(|| {
        std::env::var(POLL_INTERVAL_ENV)
            .ok()
            .and_then(|ms| ms.parse().ok())
            .map_or(CHECK_INTERVAL, Duration::from_millis)
    })
}

/// What identifies a version of the file on disk: mtime, size and inode (an atomic replace
/// by `rest-server user` or an editor gives a new inode even within one mtime tick).
type Stamp = Option<(SystemTime, u64, u64)>;

/// A file format a [`Watched`] file can hold.
pub(crate) trait Load: Sized + Send + Sync + 'static {
    /// What the file is, for messages: "htpasswd file", "access file".
    const WHAT: &'static str;

    /// Reads and parses the file; the error says what is wrong (and where), not which file.
    fn load(path: &Path) -> Result<Self, String>;

    /// A few words on what was loaded, for the reload log line: "3 users".
    fn summary(&self) -> String;
}

#[derive(Debug)]
pub(crate) struct Watched<T> {
    path: PathBuf,
    current: RwLock<Arc<T>>,
    /// When the file was last looked at, and what it looked like then.
    checked: Mutex<(Instant, Stamp)>,
}

impl<T: Load> Watched<T> {
    /// Loads the file at start-up; the error names the file ("cannot load htpasswd file F: ...").
    pub(crate) fn open(path: &Path) -> Result<Watched<T>, String> {
        let (loaded, stamp) = read::<T>(path)
            .map_err(|e| format!("cannot load {} {}: {e}", T::WHAT, path.display()))?;
        Ok(Watched {
            path: path.to_owned(),
            current: RwLock::new(Arc::new(loaded)),
            checked: Mutex::new((Instant::now(), stamp)),
        })
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// The version in use. Hold on to it for the whole of one decision, so a reload meanwhile
    /// cannot mix two versions.
    pub(crate) fn get(&self) -> Arc<T> {
        self.current.read_locked().clone()
    }

    /// Re-reads the file now (SIGHUP).
    pub(crate) fn reload(&self) {
        self.install(read::<T>(&self.path));
    }

    /// Re-reads the file if it changed, looking at most every [`check_interval`]. A change that
    /// cannot be loaded is reported once, not at every interval (SIGHUP retries).
    pub(crate) async fn reload_if_changed(&self) {
        let known = {
            let mut checked = self.checked.locked();
            if checked.0.elapsed() < check_interval() {
                return;
            }
            checked.0 = Instant::now();
            checked.1
        };
        let path = self.path.clone();
        let now = smol::unblock(move || stamp(&path)).await;
        if now == known {
            return;
        }
        let path = self.path.clone();
        let loaded = smol::unblock(move || read::<T>(&path)).await;
        if loaded.is_err() {
            self.checked.locked().1 = now;
        }
        self.install(loaded);
    }

    fn install(&self, loaded: Result<(T, Stamp), String>) {
        match loaded {
            Ok((new, stamp)) => {
                log::info!(
                    "reloaded {} {}: {}",
                    T::WHAT,
                    self.path.display(),
                    new.summary()
                );
                *self.current.write_locked() = Arc::new(new);
                *self.checked.locked() = (Instant::now(), stamp);
            }
            Err(e) => log::error!(
                "cannot reload {} {}: {e}; keeping the previous version",
                T::WHAT,
                self.path.display()
            ),
        }
    }
}

/// The stamp is taken before the read: a change during the read is seen by the next check.
fn read<T: Load>(path: &Path) -> Result<(T, Stamp), String> {
    let stamp = stamp(path);
    Ok((T::load(path)?, stamp))
}

fn stamp(path: &Path) -> Stamp {
    let m = std::fs::metadata(path).ok()?;
    Some((m.modified().ok()?, m.len(), m.ino()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct Lines(usize);

    impl Load for Lines {
        const WHAT: &'static str = "test file";
        fn load(path: &Path) -> Result<Self, String> {
            let text = std::fs::read_to_string(path).map_err(|e| e.to_string())?;
            if text.contains("bad") {
                return Err("line 1: bad".into());
            }
            Ok(Lines(text.lines().count()))
        }
        fn summary(&self) -> String {
            format!("{} lines", self.0)
        }
    }

    #[test]
    fn reload_replaces_only_with_a_good_version() {
        let path = std::env::temp_dir().join(format!("watch-unit-{}", std::process::id()));
        std::fs::write(&path, "a\n").unwrap();
        let w = Watched::<Lines>::open(&path).unwrap();
        assert_eq!(w.get().0, 1);
        std::fs::write(&path, "a\nb\n").unwrap();
        w.reload();
        assert_eq!(w.get().0, 2);
        std::fs::write(&path, "bad\n").unwrap();
        w.reload();
        assert_eq!(w.get().0, 2, "a broken version keeps the previous one");
        std::fs::remove_file(&path).unwrap();
        w.reload();
        assert_eq!(w.get().0, 2, "a vanished file keeps the previous one");
        let err = Watched::<Lines>::open(&path).unwrap_err();
        assert!(err.starts_with("cannot load test file "), "{err}");
    }
}
