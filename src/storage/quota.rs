//! Quotas: `--max-size` for everything below `--path`, and with `--access-file` a limit per
//! first path segment (`/alice/...`), each one byte counter kept incrementally.
//!
//! Uploads reserve bytes before they write them ([`Quota::reserve`], [`Reservation::grow`]), so
//! concurrent uploads can never overshoot a limit together; a [`Reservation`] that is dropped
//! without [`Reservation::keep`] gives its bytes back. Deletes give bytes back too. An upload
//! into `/alice/...` is held against both alice's counter and the global one: it must fit
//! under both, and each counter is checked and added in one atomic step.
//!
//! Segment limits come from the access file and may change on reload; the counters do not:
//! usage is tracked for every first segment whenever there is an access file, so a limit added
//! later starts from the true usage. A reservation keeps the limit it was made under.
//!
//! The start-up tally is the one walk of the data directory (`storage/inventory.rs`, `walk`,
//! which counts the repositories' objects on the same pass), on a background thread; serving
//! starts at once. Uploads
//! that some limit applies to wait for the tally (an upload checked against a half-counted
//! total could overshoot); reads, lists and deletes never do. Files created or deleted while
//! the walk runs may be counted twice or not subtracted: the error is small and always on the
//! safe side (too high).

use crate::lock::Lock as _;
use smol::lock::OnceCell;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// Usage of one first path segment.
type Counter = Arc<AtomicU64>;

#[derive(Debug)]
pub(crate) struct Quota {
    /// `--max-size`; `None`: usage is still counted, for the segments' sake.
    limit: Option<u64>,
    /// Bytes on disk plus bytes reserved by uploads in flight.
    used: AtomicU64,
    /// With `--access-file`: usage per first path segment, created on first use.
    segments: Option<Mutex<HashMap<String, Counter>>>,
    /// Set once the start-up walk has added its totals.
    tallied: OnceCell<()>,
}

/// The first path segment an upload goes to, and its limit (`None`: unlimited, but counted).
#[derive(Clone, Copy, Debug)]
pub(crate) struct SegmentLimit<'a> {
    pub name: &'a str,
    pub limit: Option<u64>,
}

/// Bytes held for one upload; returned to the quota on drop unless kept.
#[derive(Debug)]
pub(crate) struct Reservation {
    quota: Arc<Quota>,
    /// The segment's counter and the limit the upload was admitted under.
    segment: Option<(Counter, Option<u64>)>,
    bytes: u64,
}

/// Not enough room left under a limit.
#[derive(Debug)]
pub(crate) struct Exceeded;

/// The quota a repository counts against and how full it is (the status page and
/// `rest-server status` show it).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct QuotaShare {
    /// What the limit is on: `/alice` (a first segment's `[quotas]` limit) or `--max-size`.
    pub of: String,
    pub used: u64,
    pub limit: u64,
}

/// Which quota the repository `repo` (its path joined by `/`) counts against: its first
/// segment's limit (`segment_limit`), else the overall one (`--max-size`). `used_by(segment)`
/// and `total` are bytes as the quota counts them (every file).
pub(crate) fn share_of(
    repo: &str,
    segment_limit: impl Fn(&str) -> Option<u64>,
    used_by: impl Fn(&str) -> u64,
    total: u64,
    overall: Option<u64>,
) -> Option<QuotaShare> {
    let segment = repo.split('/').next().filter(|_| !repo.is_empty());
    if let Some(seg) = segment
        && let Some(limit) = segment_limit(seg)
    {
        return Some(QuotaShare {
            of: format!("/{seg}"),
            used: used_by(seg),
            limit,
        });
    }
    overall.map(|limit| QuotaShare {
        of: "--max-size".into(),
        used: total,
        limit,
    })
}

/// Usage for `/metrics`.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Usage {
    pub used: u64,
    pub limit: Option<u64>,
    /// Every segment counted so far, and every one the access file names: name, bytes
    /// used and limit, sorted by name.
    pub segments: Vec<(String, u64, Option<u64>)>,
}

impl Usage {
    /// Fills in the segments' limits: `named` segments are listed even if nothing was counted
    /// for them yet, and every segment gets `limit_of(name)`.
    pub(crate) fn add_limits<'a>(
        &mut self,
        named: impl IntoIterator<Item = &'a str>,
        limit_of: impl Fn(&str) -> Option<u64>,
    ) {
        for name in named {
            if !self.segments.iter().any(|(n, _, _)| n == name) {
                self.segments.push((name.to_owned(), 0, None));
            }
        }
        for (name, _, limit) in &mut self.segments {
            *limit = limit_of(name);
        }
        self.segments.sort();
    }
}

impl Quota {
    /// A quota whose usage is unknown until [`Quota::add_tally`] has run. `per_segment`: count
    /// every first path segment too (there is an access file).
    pub(crate) fn new(limit: Option<u64>, per_segment: bool) -> Arc<Quota> {
        Arc::new(Quota {
            limit,
            used: AtomicU64::new(0),
            segments: per_segment.then(|| Mutex::new(HashMap::new())),
            tallied: OnceCell::new(),
        })
    }

    pub(crate) fn limit(&self) -> Option<u64> {
        self.limit
    }

    pub(crate) fn used(&self) -> u64 {
        self.used.load(Ordering::Relaxed)
    }

    pub(crate) fn report(&self) -> Usage {
        let mut segments: Vec<(String, u64, Option<u64>)> = match &self.segments {
            None => Vec::new(),
            Some(map) => map
                .locked()
                .iter()
                .map(|(name, c)| (name.clone(), c.load(Ordering::Relaxed), None))
                .collect(),
        };
        segments.sort();
        Usage {
            used: self.used(),
            limit: self.limit,
            segments,
        }
    }

    /// Adds what the start-up walk found (storage/inventory.rs `walk`): `total` bytes, and
    /// per first segment. From now on, uploads that a limit applies to may go ahead.
    pub(crate) fn add_tally(&self, total: u64, segments: impl IntoIterator<Item = (String, u64)>) {
        for (name, bytes) in segments {
            if let Some(c) = self.counter(&name) {
                c.fetch_add(bytes, Ordering::Relaxed);
            }
        }
        self.used.fetch_add(total, Ordering::Relaxed);
        let _ = self.tallied.set_blocking(());
    }

    /// Reserves `bytes` for an upload into `segment` (if any), after waiting for the start-up
    /// tally when a limit applies.
    pub(crate) async fn reserve(
        self: &Arc<Self>,
        segment: Option<SegmentLimit<'_>>,
        bytes: u64,
    ) -> Result<Reservation, Exceeded> {
        let segment_limited = segment.is_some_and(|s| s.limit.is_some());
        if self.limit.is_some() || segment_limited {
            self.tallied.wait().await;
        }
        let mut r = Reservation {
            quota: self.clone(),
            segment: segment.and_then(|s| Some((self.counter(s.name)?, s.limit))),
            bytes: 0,
        };
        r.grow(bytes)?;
        Ok(r)
    }

    /// Gives back the bytes of a deleted file in `segment` (if any).
    pub(crate) fn release(&self, segment: Option<&str>, bytes: u64) {
        give_back(&self.used, bytes);
        if let Some(c) = segment.and_then(|s| self.counter(s)) {
            give_back(&c, bytes);
        }
    }

    /// The counter of a segment, created at zero; `None` without per-segment counting.
    fn counter(&self, segment: &str) -> Option<Counter> {
        let mut map = self.segments.as_ref()?.locked();
        if let Some(c) = map.get(segment) {
            return Some(c.clone());
        }
        Some(map.entry(segment.to_owned()).or_default().clone())
    }
}

impl Reservation {
    /// Makes sure at least `total` bytes are held, taking more from the quota if needed
    /// (a body without `Content-Length`, or one longer than declared).
    pub(crate) fn grow(&mut self, total: u64) -> Result<(), Exceeded> {
        let Some(more) = total.checked_sub(self.bytes).filter(|&m| m > 0) else {
            return Ok(());
        };
        if let Some((c, limit)) = &self.segment {
            take(c, *limit, more)?;
        }
        if let Err(e) = take(&self.quota.used, self.quota.limit, more) {
            if let Some((c, _)) = &self.segment {
                give_back(c, more);
            }
            return Err(e);
        }
        self.bytes = total;
        Ok(())
    }

    /// The upload is stored: its bytes now count as used, for good.
    pub(crate) fn keep(mut self) {
        self.bytes = 0;
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        give_back(&self.quota.used, self.bytes);
        if let Some((c, _)) = &self.segment {
            give_back(c, self.bytes);
        }
    }
}

/// Check and add in one atomic step: two uploads cannot both fit into the last gap.
fn take(counter: &AtomicU64, limit: Option<u64>, bytes: u64) -> Result<(), Exceeded> {
    counter
        .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |u| {
            u.checked_add(bytes)
                .filter(|&n| limit.is_none_or(|l| n <= l))
        })
        .map(drop)
        .map_err(|_| Exceeded)
}

/// Saturating: a file deleted during the tally may never have been counted.
fn give_back(counter: &AtomicU64, bytes: u64) {
    let _ = counter.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |u| {
        Some(u.saturating_sub(bytes))
    });
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_repository_counts_against_its_segment_else_the_overall_limit() {
        let limit = |seg: &str| (seg == "alice").then_some(100);
        let used = |seg: &str| if seg == "alice" { 40 } else { 7 };
        let share = |repo| share_of(repo, limit, used, 500, Some(1000));
        let q = |of: &str, used, limit| {
            Some(QuotaShare {
                of: of.into(),
                used,
                limit,
            })
        };
        assert_eq!(share("alice/laptop"), q("/alice", 40, 100));
        assert_eq!(share("bob/nas"), q("--max-size", 500, 1000));
        // The root repository has no first segment.
        assert_eq!(share(""), q("--max-size", 500, 1000));
        assert_eq!(share_of("bob", limit, used, 500, None), None);
    }

    use super::*;

    fn ready(limit: Option<u64>, per_segment: bool) -> Arc<Quota> {
        let q = Quota::new(limit, per_segment);
        q.tallied.set_blocking(()).unwrap();
        q
    }

    fn reserve(
        q: &Arc<Quota>,
        seg: Option<(&str, Option<u64>)>,
        n: u64,
    ) -> Result<Reservation, Exceeded> {
        let seg = seg.map(|(name, limit)| SegmentLimit { name, limit });
        smol::block_on(q.reserve(seg, n))
    }

    #[test]
    fn reservations_never_overshoot_and_come_back_on_drop() {
        let q = ready(Some(100), false);
        let a = reserve(&q, None, 60).unwrap();
        assert!(reserve(&q, None, 41).is_err());
        let mut b = reserve(&q, None, 40).unwrap();
        assert_eq!(q.used(), 100);
        assert!(b.grow(41).is_err(), "growing past the limit must fail");
        drop(a);
        assert_eq!(q.used(), 40);
        b.grow(50).unwrap();
        b.keep();
        assert_eq!(q.used(), 50);
        q.release(None, 70);
        assert_eq!(q.used(), 0, "release saturates at zero");
    }

    #[test]
    fn concurrent_reservations_fill_exactly_to_the_limit() {
        let q = ready(Some(1000), false);
        let granted = AtomicU64::new(0);
        std::thread::scope(|s| {
            for _ in 0..8 {
                s.spawn(|| {
                    for _ in 0..100 {
                        if let Ok(r) = reserve(&q, None, 7) {
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
    fn an_upload_must_fit_under_its_segment_and_the_global_limit() {
        let q = ready(Some(100), true);
        let alice = Some(("alice", Some(30)));
        let a = reserve(&q, alice, 30).unwrap();
        assert!(reserve(&q, alice, 1).is_err(), "alice is full");
        // The failed segment take left nothing behind anywhere.
        assert_eq!(q.report().segments, [("alice".to_owned(), 30, None)]);
        let mut b = reserve(&q, Some(("bob", None)), 60).unwrap();
        // bob is unlimited, but the global limit holds (and gives alice's part back on failure).
        assert!(b.grow(71).is_err());
        assert!(reserve(&q, Some(("carol", Some(50))), 11).is_err());
        assert_eq!(q.used(), 90);
        let r = q.report();
        assert_eq!(r.segments.len(), 3, "{r:?}");
        assert_eq!(r.segments[2], ("carol".to_owned(), 0, None));
        a.keep();
        drop(b);
        q.release(Some("alice"), 10);
        assert_eq!(q.report().segments[0], ("alice".to_owned(), 20, None));
        assert_eq!(q.used(), 20);
    }

    #[test]
    fn concurrent_uploads_never_overshoot_a_segment() {
        let q = ready(None, true);
        let granted = AtomicU64::new(0);
        std::thread::scope(|s| {
            for _ in 0..8 {
                s.spawn(|| {
                    for _ in 0..100 {
                        if let Ok(r) = reserve(&q, Some(("a", Some(500))), 7) {
                            granted.fetch_add(7, Ordering::Relaxed);
                            r.keep();
                        }
                    }
                });
            }
        });
        assert_eq!(granted.load(Ordering::Relaxed), 497);
        assert_eq!(q.report().segments, [("a".to_owned(), 497, None)]);
    }
}
