//! Concurrent workers

use super::*;

/// What one connection's worker measured.
#[derive(Default)]
pub(crate) struct WorkerOut {
    pub(crate) latencies_ms: Vec<f64>,
    pub(crate) bytes: u64,
    pub(crate) requests: u64,
    pub(crate) finished: Option<Instant>,
    pub(crate) error: Option<String>,
}

/// Runs `work` on `conns` threads, all released together; returns (elapsed, outputs).
/// Each worker gets its index and the barrier it must wait on once it is ready (connected,
/// warmed up), so set-up is not measured.
pub(crate) fn run_workers<F>(conns: usize, work: F) -> (Duration, Vec<WorkerOut>)
where
    F: Fn(usize, &Barrier) -> WorkerOut + Sync,
{
    let barrier = Barrier::new(conns + 1);
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..conns)
            .map(|i| {
                let (work, barrier) = (&work, &barrier);
                s.spawn(move || {
                    let mut out = work(i, barrier);
                    out.finished.get_or_insert_with(Instant::now);
                    out
                })
            })
            .collect();
        barrier.wait();
        let t0 = Instant::now();
        let outs: Vec<WorkerOut> = handles
            .into_iter()
            .map(|h| h.join().unwrap_or_default())
            .collect();
        let end = outs.iter().filter_map(|o| o.finished).max().unwrap_or(t0);
        (end.saturating_duration_since(t0), outs)
    })
}

pub(crate) struct Totals {
    pub(crate) secs: f64,
    pub(crate) bytes: u64,
    pub(crate) requests: u64,
    pub(crate) latencies_ms: Vec<f64>,
    pub(crate) error: Option<String>,
}

pub(crate) fn totals(elapsed: Duration, outs: Vec<WorkerOut>) -> Totals {
    let mut t = Totals {
        secs: elapsed.as_secs_f64(),
        bytes: 0,
        requests: 0,
        latencies_ms: Vec::new(),
        error: None,
    };
    for o in outs {
        t.bytes += o.bytes;
        t.requests += o.requests;
        t.latencies_ms.extend(o.latencies_ms);
        if t.error.is_none() {
            t.error = o.error;
        }
    }
    t
}
