//! A global budget for the slow password checks of clients not known to be honest, so that a
//! flood of wrong passwords from many addresses cannot take more than a small, fixed share of
//! one core. The per-address back-off (`auth/per_address.rs`) cannot stop such a flood: each address
//! guesses once, and its first guess is a real bcrypt.
//!
//! Who goes through it: every slow check (a bcrypt or sha-crypt line), and a login as a user
//! the file does not have. That one has no hash to run and adds no debt, but is admitted the
//! same way (`auth/mod.rs` `pretend`), so a 429 does not tell which names exist.
//!
//! What is counted: the time spent hashing passwords that turned out *wrong*, as a debt that
//! is paid back at [`RATE`] (a tenth of one core: 0.1 s of hashing per second). While the debt
//! is at most [`ALLOWANCE`] (less than one bcrypt check), nothing changes: every check runs
//! at once. A dozen clients logging in at the same moment never get near it, since a check
//! that succeeds costs the budget nothing; a typo is paid back within about a second. Once
//! wrong passwords pile up beyond that, a check is *paced*: it reserves the estimated cost of
//! one hash (the measured cost of recent ones) and starts when the debt before it has been
//! paid down to the allowance, so paced checks start about est / RATE apart (~1.2 s for a
//! 120 ms bcrypt); a success gives its reservation back, a failure replaces it with what the
//! hash really took. A check that would have to wait more than [`MAX_WAIT`] is not queued at
//! all but refused at once, unchecked, with 429 Too Many Requests. So a flood cannot pile up
//! waiting requests (at most MAX_WAIT * RATE / est of them, about 8, wait at any time), and
//! its hashing is bounded by ALLOWANCE + one check per slow-hash slot + RATE * its duration.
//!
//! Who is exempt (`auth/mod.rs` decides): a request whose credentials are in the verified cache
//! never gets here (a running restic), nor does a check from an address that logged in
//! successfully within `per_address::TRUST_FOR` (a restic whose cache entry expired after its
//! minute, or the nightly backup of a known host). Those run at once, though a failure among
//! them still counts. A wrong password cannot earn an address that trust.
//!
//! The trade-off: during a flood, the first login of a *new* client (an address that has not
//! logged in lately) competes with the flood for the paced checks: it waits up to MAX_WAIT,
//! or is refused with 429. Why 429 and not 401: recent restic versions treat 401 as permanent
//! and give up at once, but retry other errors with a growing back-off for minutes, so an
//! honest restic keeps trying and gets in as soon as the flood thins out; 429 (RFC 6585) says
//! "not now", not "wrong password", and tells a guesser nothing about the password. The Go
//! rest-server has no such limit: it hashes every guess, so there a flood takes every core.
//! Unknown user names cost no hash and are not counted (as before, they are answered 401
//! after the per-address delay); `{SHA}` lines are checked inline and not counted either.
//!
//! Pure bookkeeping with the time passed in: the unit tests drive it with a fake clock.

use std::time::{Duration, Instant};

/// The share of one core that hashing wrong passwords may use once they pile up, as seconds
/// of hashing paid back per second.
const RATE: f64 = 0.1;

/// Debt of wrong-password hashing tolerated before checks are paced. Less than one bcrypt-10
/// check on purpose: a burst gets one check per slow-hash slot at full speed (one on two
/// cores) and then waits its turn, while cheap hashes (apr1, SHA-crypt: about a millisecond)
/// still get dozens. The price: for about est / RATE (~1 s for bcrypt-10) after a wrong
/// password, the first login of a client not known yet waits out the rest of that time.
const ALLOWANCE: Duration = Duration::from_millis(50);

/// The longest a paced check may wait for its turn; beyond that it is refused at once. Long
/// enough for a new client to get through a short burst; restic does not give up on a request
/// that waits this long.
pub(crate) const MAX_WAIT: Duration = Duration::from_secs(10);

/// The assumed cost of one check until one has been measured.
const FIRST_ESTIMATE: Duration = Duration::from_millis(100);

/// What a slow check should do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Admission {
    /// Run now; nothing reserved.
    Now,
    /// Paced: start at this instant; the reservation goes back to [`Budget::finish`].
    At(Instant, Duration),
    /// Too many wrong passwords lately: refuse without checking.
    Refused,
}

#[derive(Debug)]
pub(crate) struct Budget {
    /// Hashing owed (wrong passwords, plus reservations of paced checks) as of `at`.
    debt: Duration,
    at: Instant,
    /// The cost of one check, for reservations: rises at once to a slower measurement, sinks
    /// slowly (an underestimate would let too many checks be scheduled at once).
    estimate: Duration,
    /// Checks paced and refused since the flood began; `None` when there is none.
    flood: Option<(u64, u64)>,
}

impl Budget {
    pub(crate) fn new(now: Instant) -> Budget {
        Budget {
            debt: Duration::ZERO,
            at: now,
            estimate: FIRST_ESTIMATE,
            flood: None,
        }
    }

    fn debt_at(&self, now: Instant) -> Duration {
        let paid = now.saturating_duration_since(self.at).mul_f64(RATE);
        self.debt.saturating_sub(paid)
    }

    /// Decides about a slow check of a client not exempt, about to run at `now`.
    pub(crate) fn admit(&mut self, now: Instant) -> Admission {
        let debt = self.debt_at(now);
        if debt <= ALLOWANCE {
            if debt.is_zero()
                && let Some((paced, refused)) = self.flood.take()
            {
                log::info!(
                    "failed logins are back to normal: {paced} password checks were paced \
                     and {refused} refused unchecked meanwhile"
                );
            }
            return Admission::Now;
        }
        let wait = (debt - ALLOWANCE).div_f64(RATE);
        let (paced, refused) = self.flood.get_or_insert_with(|| {
            log::warn!(
                "many failed logins (from many addresses?): password checks for clients that \
                 have not logged in lately now share {:.0} % of one core, and those that would \
                 wait more than {} s are refused with 429 Too Many Requests",
                RATE * 100.0,
                MAX_WAIT.as_secs()
            );
            (0, 0)
        });
        if wait > MAX_WAIT {
            *refused += 1;
            return Admission::Refused;
        }
        *paced += 1;
        self.debt = debt + self.estimate;
        self.at = now;
        Admission::At(now + wait, self.estimate)
    }

    /// A slow check finished at `now` after hashing for `took`; `reserved` is what its
    /// admission reserved (zero if it ran at once or was exempt).
    pub(crate) fn finish(&mut self, now: Instant, reserved: Duration, took: Duration, ok: bool) {
        let debt = self.debt_at(now).saturating_sub(reserved);
        self.debt = if ok { debt } else { debt + took };
        self.at = now;
        self.estimate = took.max((self.estimate * 3 + took) / 4);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cmp::Reverse;
    use std::collections::{BinaryHeap, VecDeque};

    const MS: Duration = Duration::from_millis(1);
    const HASH: Duration = Duration::from_millis(120);

    #[test]
    fn successes_never_pace() {
        let mut b = Budget::new(Instant::now());
        let now = Instant::now();
        // A hundred clients at the same instant, all with the right password.
        for _ in 0..100 {
            assert_eq!(b.admit(now), Admission::Now);
            b.finish(now, Duration::ZERO, HASH, true);
        }
        assert_eq!(b.debt_at(now), Duration::ZERO);
    }

    #[test]
    fn typos_a_few_seconds_apart_never_pace() {
        let mut b = Budget::new(Instant::now());
        let mut now = Instant::now();
        for _ in 0..100 {
            assert_eq!(b.admit(now), Admission::Now);
            b.finish(now + HASH, Duration::ZERO, HASH, false);
            // The debt from one typo is paid back in HASH / RATE; the next comes later.
            now += HASH.div_f64(RATE) * 3 / 2;
        }
    }

    #[test]
    fn paced_checks_start_est_over_rate_apart_then_are_refused() {
        let t0 = Instant::now();
        let mut b = Budget::new(t0);
        // One wrong password puts the debt over the allowance.
        let mut now = t0;
        for _ in 0..1 {
            assert_eq!(b.admit(now), Admission::Now);
            now += HASH;
            b.finish(now, Duration::ZERO, HASH, false);
        }
        assert_eq!(b.estimate, HASH);
        let debt = b.debt_at(now);
        assert!(debt > ALLOWANCE);
        let mut starts = vec![];
        loop {
            match b.admit(now) {
                Admission::At(start, reserved) => {
                    assert_eq!(reserved, HASH);
                    starts.push(start - now);
                }
                Admission::Refused => break,
                Admission::Now => panic!("not paced"),
            }
        }
        // The first when the debt is down to the allowance, then one per HASH / RATE.
        let first = (debt - ALLOWANCE).div_f64(RATE);
        assert_eq!(starts[0], first);
        for pair in starts.windows(2) {
            let gap = pair[1] - pair[0];
            assert!(gap.abs_diff(HASH.div_f64(RATE)) < MS, "{gap:?}");
        }
        assert!(*starts.last().unwrap() <= MAX_WAIT);
        assert!((7..=10).contains(&starts.len()), "{}", starts.len());
        // Still refused a moment later: the queue is full.
        assert_eq!(b.admit(now + MS), Admission::Refused);
        assert_eq!(b.flood, Some((starts.len() as u64, 2)));
    }

    #[test]
    fn a_paced_success_gives_its_reservation_back() {
        let t0 = Instant::now();
        let mut b = Budget::new(t0);
        b.finish(t0, Duration::ZERO, 5 * HASH, false);
        let Admission::At(start, reserved) = b.admit(t0) else {
            panic!("not paced")
        };
        let before = b.debt_at(start);
        b.finish(start + HASH, reserved, HASH, true);
        let want = before - HASH.mul_f64(RATE) - reserved;
        assert!(b.debt_at(start + HASH).abs_diff(want) < MS);
    }

    #[test]
    fn the_flood_ends_once_the_debt_is_paid() {
        let t0 = Instant::now();
        let mut b = Budget::new(t0);
        for _ in 0..5 {
            b.finish(t0, Duration::ZERO, HASH, false);
        }
        assert!(matches!(b.admit(t0), Admission::At(..)));
        assert!(b.flood.is_some());
        // 5 failures + 1 reservation, paid back at RATE.
        let paid = (6 * HASH).div_f64(RATE);
        assert_eq!(b.admit(t0 + paid + MS), Admission::Now);
        assert!(b.flood.is_none());
    }

    #[test]
    fn the_estimate_follows_the_slowest_recent_check() {
        let mut b = Budget::new(Instant::now());
        let now = Instant::now();
        b.finish(now, Duration::ZERO, 300 * MS, true);
        assert_eq!(b.estimate, 300 * MS);
        b.finish(now, Duration::ZERO, 100 * MS, true);
        assert_eq!(b.estimate, 250 * MS);
        for _ in 0..50 {
            b.finish(now, Duration::ZERO, MS, true);
        }
        assert!(b.estimate < 2 * MS);
    }

    /// What a simulated flood did: hash time started by each instant, and the answers.
    struct Outcome {
        /// (start, duration) of every hash that ran.
        hashes: Vec<(Duration, Duration)>,
        refused: usize,
        /// Most checks waiting (paced or for the slot) at any time.
        max_waiting: usize,
    }

    #[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
    enum Event {
        /// A check finished; its reservation (in ns).
        Done(u64),
        /// A new check arrives (ask the budget, then queue for the slot).
        Arrive,
        /// A paced check's start time came: it queues for the slot; its reservation.
        Start(u64),
    }

    /// Runs the protocol of `auth/mod.rs` (admit on arrival, admit again once holding the only
    /// slow-hash slot unless paced, hash, finish) for checks arriving at `arrivals` that all
    /// fail after `hash` each, on one slot, in virtual time.
    fn simulate(arrivals: &[Duration], hash: Duration) -> Outcome {
        let t0 = Instant::now();
        let mut b = Budget::new(t0);
        let mut events: BinaryHeap<Reverse<(Duration, Event)>> = arrivals
            .iter()
            .map(|&at| Reverse((at, Event::Arrive)))
            .collect();
        // Checks waiting for the slot: their reservation, None = admitted unpaced.
        let mut slot_queue: VecDeque<Option<Duration>> = VecDeque::new();
        let mut busy = false;
        let mut paced_waiting = 0usize;
        let mut out = Outcome {
            hashes: vec![],
            refused: 0,
            max_waiting: 0,
        };
        while let Some(Reverse((at, event))) = events.pop() {
            let now = t0 + at;
            match event {
                Event::Arrive => match b.admit(now) {
                    Admission::Now => slot_queue.push_back(None),
                    Admission::At(start, r) => {
                        paced_waiting += 1;
                        events.push(Reverse((start - t0, Event::Start(r.as_nanos() as u64))));
                    }
                    Admission::Refused => out.refused += 1,
                },
                Event::Start(r) => {
                    paced_waiting -= 1;
                    slot_queue.push_back(Some(Duration::from_nanos(r)));
                }
                Event::Done(r) => {
                    busy = false;
                    b.finish(now, Duration::from_nanos(r), hash, false);
                }
            }
            // Hand the free slot on, as the semaphore does.
            while !busy && let Some(reserved) = slot_queue.pop_front() {
                let reserved = match reserved {
                    Some(r) => r,
                    None => match b.admit(now) {
                        Admission::Now => Duration::ZERO,
                        Admission::At(start, r) => {
                            paced_waiting += 1;
                            events.push(Reverse((start - t0, Event::Start(r.as_nanos() as u64))));
                            continue;
                        }
                        Admission::Refused => {
                            out.refused += 1;
                            continue;
                        }
                    },
                };
                busy = true;
                out.hashes.push((at, hash));
                events.push(Reverse((
                    at + hash,
                    Event::Done(reserved.as_nanos() as u64),
                )));
            }
            out.max_waiting = out.max_waiting.max(slot_queue.len() + paced_waiting);
        }
        out
    }

    /// Hash time started within the first `t` of the flood.
    fn hashing_within(o: &Outcome, t: Duration) -> Duration {
        o.hashes.iter().filter(|h| h.0 < t).map(|h| h.1).sum()
    }

    // The benchmark's case: 200 wrong passwords from 200 addresses at once.
    #[test]
    fn a_burst_of_200_costs_a_few_hashes_and_then_a_tenth_of_a_core() {
        let o = simulate(&[Duration::ZERO; 200], HASH);
        // One check at full speed (the allowance is less than one); then paced.
        assert_eq!(hashing_within(&o, 4 * HASH), HASH);
        assert!(hashing_within(&o, Duration::from_secs(1)) <= 3 * HASH);
        let all: Duration = o.hashes.iter().map(|h| h.1).sum();
        let last = o.hashes.last().unwrap().0;
        assert!(last <= MAX_WAIT + 3 * HASH, "{last:?}");
        assert!(
            all <= ALLOWANCE + HASH + last.mul_f64(RATE) + HASH,
            "{all:?}"
        );
        assert_eq!(o.refused + o.hashes.len(), 200);
        assert!(o.refused >= 185, "{}", o.refused);
    }

    // A sustained flood, 50 guesses a second for 10 minutes: bcrypt never takes more than a
    // tenth of a core (plus the allowance and one check), and the waiting queue stays short.
    #[test]
    fn a_sustained_flood_stays_within_the_rate() {
        let arrivals: Vec<_> = (0..30_000u32).map(|i| i * 20 * MS).collect();
        let o = simulate(&arrivals, HASH);
        for secs in [1, 10, 60, 600] {
            let t = Duration::from_secs(secs);
            let used = hashing_within(&o, t);
            assert!(
                used <= ALLOWANCE + 2 * HASH + t.mul_f64(RATE),
                "{used:?} of hashing in the first {t:?}"
            );
        }
        let ten_min = hashing_within(&o, Duration::from_secs(600));
        assert!(
            ten_min >= Duration::from_secs(55),
            "{ten_min:?}: the budget went unused"
        );
        assert!(o.max_waiting <= 12, "{} waiting", o.max_waiting);
    }

    // Slower hashes (a loaded Pi): fewer checks, the same share of the core.
    #[test]
    fn the_share_does_not_depend_on_the_hash_cost() {
        for hash in [10 * MS, 400 * MS] {
            let arrivals: Vec<_> = (0..6000u32).map(|i| i * 10 * MS).collect();
            let o = simulate(&arrivals, hash);
            let t = Duration::from_secs(60);
            let used = hashing_within(&o, t);
            assert!(
                used <= ALLOWANCE + 2 * hash + t.mul_f64(RATE),
                "{hash:?}: {used:?}"
            );
            assert!(used >= t.mul_f64(RATE) - 2 * hash, "{hash:?}: {used:?}");
        }
    }
}
