//! `--max-size`: one byte counter for everything below `--path`, kept incrementally.
//!
//! Uploads reserve bytes before they write them ([`Quota::reserve`], [`Reservation::grow`]), so
//! concurrent uploads can never overshoot the limit together; a [`Reservation`] that is dropped
//! without [`Reservation::keep`] gives its bytes back. Deletes give bytes back too.
//!
//! The start-up tally walks the tree on a background thread; serving starts at once. Uploads
//! wait for the tally (an upload checked against a half-counted total could overshoot); reads,
//! lists and deletes never do. Files created or deleted while the walk runs may be counted
//! twice or not subtracted: the error is small and always on the safe side (too high).

use smol::lock::OnceCell;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

#[derive(Debug)]
pub(crate) struct Quota {
    limit: u64,
    /// Bytes on disk plus bytes reserved by uploads in flight.
    used: AtomicU64,
    /// Set once the start-up walk has added its total to `used`.
    tallied: OnceCell<()>,
}

/// Bytes held for one upload; returned to the quota on drop unless kept.
#[derive(Debug)]
pub(crate) struct Reservation {
    quota: Arc<Quota>,
    bytes: u64,
}

/// Not enough room left under the limit.
#[derive(Debug)]
pub(crate) struct Exceeded;

impl Quota {
    /// A quota whose usage is unknown until [`Quota::tally`] has run.
    pub(crate) fn new(limit: u64) -> Arc<Quota> {
        Arc::new(Quota {
            limit,
            used: AtomicU64::new(0),
            tallied: OnceCell::new(),
        })
    }

    pub(crate) fn limit(&self) -> u64 {
        self.limit
    }

    pub(crate) fn used(&self) -> u64 {
        self.used.load(Ordering::Relaxed)
    }

    /// Walks `root` (blocking; run it on a blocking thread) and adds what it finds.
    /// Returns the bytes counted.
    pub(crate) fn tally(&self, root: &Path) -> u64 {
        let total = dir_size(root);
        self.used.fetch_add(total, Ordering::Relaxed);
        let _ = self.tallied.set_blocking(());
        total
    }

    /// Reserves `bytes` for an upload, after waiting for the start-up tally.
    pub(crate) async fn reserve(self: &Arc<Self>, bytes: u64) -> Result<Reservation, Exceeded> {
        self.tallied.wait().await;
        self.take(bytes)?;
        Ok(Reservation {
            quota: self.clone(),
            bytes,
        })
    }

    /// Gives back the bytes of a deleted file.
    pub(crate) fn release(&self, bytes: u64) {
        // Saturating: a file deleted during the tally may never have been counted.
        let _ = self
            .used
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |u| {
                Some(u.saturating_sub(bytes))
            });
    }

    fn take(&self, bytes: u64) -> Result<(), Exceeded> {
        // Check and add in one atomic step: two uploads cannot both fit into the last gap.
        self.used
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |u| {
                u.checked_add(bytes).filter(|&n| n <= self.limit)
            })
            .map(drop)
            .map_err(|_| Exceeded)
    }
}

impl Reservation {
    /// Makes sure at least `total` bytes are held, taking more from the quota if needed
    /// (a body without `Content-Length`, or one longer than declared).
    pub(crate) fn grow(&mut self, total: u64) -> Result<(), Exceeded> {
        if total > self.bytes {
            self.quota.take(total - self.bytes)?;
            self.bytes = total;
        }
        Ok(())
    }

    /// The upload is stored: its bytes now count as used, for good.
    pub(crate) fn keep(mut self) {
        self.bytes = 0;
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.quota.release(self.bytes);
    }
}

/// Total size of the regular files below `dir`; unreadable parts count as empty.
fn dir_size(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.file_type() {
            Ok(t) if t.is_dir() => dir_size(&e.path()),
            Ok(t) if t.is_file() => e.metadata().map_or(0, |m| m.len()),
            _ => 0,
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ready(limit: u64) -> Arc<Quota> {
        let q = Quota::new(limit);
        q.tallied.set_blocking(()).unwrap();
        q
    }

    #[test]
    fn reservations_never_overshoot_and_come_back_on_drop() {
        let q = ready(100);
        let a = smol::block_on(q.reserve(60)).unwrap();
        assert!(smol::block_on(q.reserve(41)).is_err());
        let mut b = smol::block_on(q.reserve(40)).unwrap();
        assert_eq!(q.used(), 100);
        assert!(b.grow(41).is_err(), "growing past the limit must fail");
        drop(a);
        assert_eq!(q.used(), 40);
        b.grow(50).unwrap();
        b.keep();
        assert_eq!(q.used(), 50);
        q.release(70);
        assert_eq!(q.used(), 0, "release saturates at zero");
    }

    #[test]
    fn concurrent_reservations_fill_exactly_to_the_limit() {
        let q = ready(1000);
        let granted = AtomicU64::new(0);
        std::thread::scope(|s| {
            for _ in 0..8 {
                s.spawn(|| {
                    for _ in 0..100 {
                        if let Ok(r) = smol::block_on(q.reserve(7)) {
                            granted.fetch_add(7, Ordering::Relaxed);
                            r.keep();
                        }
                    }
                });
            }
        });
        assert_eq!(granted.load(Ordering::Relaxed), 994);
        assert_eq!(q.used(), 994);
    }

    #[test]
    fn tally_counts_files_recursively() {
        let dir = std::env::temp_dir().join(format!("quota-tally-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("a/b")).unwrap();
        std::fs::write(dir.join("x"), [0u8; 10]).unwrap();
        std::fs::write(dir.join("a/b/y"), [0u8; 5]).unwrap();
        let q = Quota::new(100);
        assert_eq!(q.tally(&dir), 15);
        assert_eq!(q.used(), 15);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
