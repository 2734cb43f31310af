//! The one way we count things while they exist (uploads being written, connections hyper
//! holds): a guard that adds one to a shared counter and takes it off again when dropped, on
//! every path out.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Counts itself in `count` while it lives.
pub(crate) struct Counted(Arc<AtomicUsize>);

impl Counted {
    pub(crate) fn new(count: Arc<AtomicUsize>) -> Counted {
        count.fetch_add(1, Ordering::Relaxed);
        Counted(count)
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}
