//! Back-off for password guessing, per client address: failed logins are answered ever more
//! slowly, one after another, and an address has a fixed number of checks under way at once.
//! What is slowed is the *answer to a failure*, never a check itself: a right password is
//! checked as soon as it arrives and answered as soon as the hash says so, whatever other
//! clients at the same address (a NAT, a reverse proxy) are doing, as long as they do not
//! hold all of its turns.
//!
//! Each check that needs a hash (not a cache hit) takes one of the address's
//! [`MAX_IN_FLIGHT`] turns, at once if one is free, and counts as a failure in advance (a
//! success refunds it). A success gives the turn back at once. A failure keeps it until its
//! 401 is due: [`FIRST_DELAY`] after the previous failure's answer, doubling with each failure
//! in a row up to [`MAX_DELAY`]. So the answers to one address's failures leave one after
//! another, a growing delay apart, and every new check of a guesser has to wait for one of
//! them: however many connections it opens, an address gets at most [`MAX_IN_FLIGHT`] checks
//! at once and then one per answer, at most one every [`MAX_DELAY`] (12 a minute) once the
//! delay is at its cap. A check that finds no turn free within [`MAX_DELAY`] is refused
//! unchecked (the client sees 429), so a guesser cannot park connections here for long.
//! The bookkeeping lives here, not in the request: a check whose request is dropped halfway
//! counts as a failure and keeps its turn until that failure's answer would have been due.
//!
//! The price: while guessers from one address keep all of its turns (that takes
//! [`MAX_IN_FLIGHT`] connections guessing in parallel from it), an uncached login from that
//! address waits for a turn like any other check, and may be refused with 429 (restic
//! retries). Other addresses are never affected. IPv6 clients are grouped by /64, since one
//! host usually owns a whole /64. The table is bounded ([`MAX_TRACKED`]), drops addresses
//! back at zero failures, and forgets one after [`FORGET_AFTER`] without activity.
//!
//! The other way round, an address that logged in with a right password is *trusted* for
//! [`TRUST_FOR`]: its checks skip the global flood budget of `auth/flood_budget.rs` (they still take
//! turns here). This lives in a table of its own, filled only by successful logins
//! ([`MAX_TRUSTED`]), so guessers from many addresses cannot push honest ones out.

use crate::lock::Lock as _;
use smol::lock::{Semaphore, SemaphoreGuardArc};
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Delay after the first failure; each further failure doubles it. Short enough that a typo
/// costs nothing noticeable.
const FIRST_DELAY: Duration = Duration::from_millis(100);

/// The delay stops growing here: long enough to make guessing slow (12 tries a minute per
/// address), short enough that restic does not time out while it waits. Also the longest a
/// check waits for a turn before it is refused unchecked.
pub(crate) const MAX_DELAY: Duration = Duration::from_secs(5);

/// Checks under way at once per address (hashing, or failed and waiting for their answer).
/// A NAT or proxy address with fewer guessing connections than this never delays a right
/// password; a guesser's opening burst is this many hashes (then one per answer).
pub(crate) const MAX_IN_FLIGHT: usize = 8;

/// An address quiet for this long starts over (and a new burst is logged again).
const FORGET_AFTER: Duration = Duration::from_secs(60);

/// Addresses remembered at most (~200 bytes each, so well under 1 MiB); when full, expired
/// entries go first, then the one whose last failure is oldest.
const MAX_TRACKED: usize = 4096;

/// Failures in a row from one address before we log the burst (once).
const LOG_AT_FAILURES: u32 = 3;

/// How long a successful login makes its address trusted: a day, so that a nightly backup
/// from a known host is never queued behind a flood of guesses from elsewhere.
pub(crate) const TRUST_FOR: Duration = Duration::from_secs(24 * 3600);

/// Trusted addresses remembered at most (~50 bytes each); when full, expired ones go first,
/// then the one whose last login is oldest.
const MAX_TRUSTED: usize = 1024;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Client {
    V4(u32),
    /// The /64 prefix.
    V6(u64),
    /// A unix socket (a local reverse proxy): all share one entry.
    Local,
}

impl Client {
    fn of(peer: &str) -> Client {
        match peer.parse::<IpAddr>() {
            Ok(IpAddr::V4(a)) => Client::V4(a.into()),
            Ok(IpAddr::V6(a)) => match a.to_ipv4_mapped() {
                Some(v4) => Client::V4(v4.into()),
                None => Client::V6((u128::from(a) >> 64) as u64),
            },
            Err(_) => Client::Local,
        }
    }
}

#[derive(Debug)]
struct Strikes {
    /// Failures in a row. Every check counts as one in advance when it takes its turn (so
    /// parallel guesses are answered as if each had already failed) and is refunded if it
    /// succeeds.
    failures: u32,
    /// The last turn taken or failure; an entry quiet for [`FORGET_AFTER`] starts over.
    last_seen: Instant,
    /// When the last failure is answered; the next one is answered a delay after it.
    last_answer: Instant,
    /// Whether this burst has been logged.
    logged: bool,
    /// The address's turns ([`MAX_IN_FLIGHT`] permits).
    turns: Arc<Semaphore>,
    /// Turns of failed checks, each given back once its answer is due.
    held: Vec<(Instant, SemaphoreGuardArc)>,
}

#[derive(Debug, Default)]
pub(crate) struct Throttle {
    clients: Mutex<HashMap<Client, Strikes>>,
    /// Addresses with a successful login, and when it was.
    trusted: Mutex<HashMap<Client, Instant>>,
}

/// One check's turn. Say how it ended with [`Turn::succeeded`] or [`Turn::failed`]; a turn
/// dropped without either (the request went away) counts as failed.
#[derive(Debug)]
pub(crate) struct Turn<'a> {
    throttle: &'a Throttle,
    peer: String,
    user: String,
    permit: Option<SemaphoreGuardArc>,
}

/// The delay after `failures` failures in a row.
fn delay(failures: u32) -> Duration {
    let doublings = failures.saturating_sub(1).min(16);
    (FIRST_DELAY * (1u32 << doublings)).min(MAX_DELAY)
}

impl Throttle {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Client, Strikes>> {
        self.clients.locked()
    }

    /// Waits for one of `peer`'s turns: at once unless [`MAX_IN_FLIGHT`] checks from that
    /// address are under way. `None`: none came free within [`MAX_DELAY`]; refuse this check
    /// without checking.
    pub(crate) async fn turn(&self, peer: &str, user: &str) -> Option<Turn<'_>> {
        let deadline = Instant::now() + MAX_DELAY;
        loop {
            let now = Instant::now();
            let (turns, next_free) = match self.try_turn(peer, user, now) {
                Ok(turn) => return Some(turn),
                Err(waiting) => waiting,
            };
            if now >= deadline {
                return None;
            }
            // A turn comes free when a check under way ends (the semaphore wakes us) or when
            // a held one's answer is due (only a look at the table gives it back).
            let wake = next_free.map_or(deadline, |t| t.min(deadline));
            let permit = smol::future::or(async { Some(turns.acquire_arc().await) }, async {
                smol::Timer::at(wake).await;
                None
            })
            .await;
            if let Some(permit) = permit {
                return Some(self.took(peer, user, permit, Instant::now()));
            }
        }
    }

    /// Takes a turn of `peer` if one is free at `now`. Otherwise the address's turns and when
    /// the first held one comes free (`None`: all are with checks under way).
    #[allow(clippy::type_complexity)]
    fn try_turn(
        &self,
        peer: &str,
        user: &str,
        now: Instant,
    ) -> Result<Turn<'_>, (Arc<Semaphore>, Option<Instant>)> {
        let turns = {
            let mut clients = self.lock();
            let s = strikes_of(&mut clients, Client::of(peer), now, 0);
            s.give_back_due(now);
            if now.duration_since(s.last_seen) >= FORGET_AFTER {
                s.failures = 0;
                s.logged = false;
            }
            match s.turns.try_acquire_arc() {
                Some(permit) => permit,
                None => {
                    let next = s.held.iter().map(|(at, _)| *at).min();
                    return Err((s.turns.clone(), next));
                }
            }
        };
        Ok(self.took(peer, user, turns, now))
    }

    /// Books a turn taken at `now`: one failure in advance.
    fn took(&self, peer: &str, user: &str, permit: SemaphoreGuardArc, now: Instant) -> Turn<'_> {
        let mut clients = self.lock();
        let s = strikes_of(&mut clients, Client::of(peer), now, 0);
        s.failures = s.failures.saturating_add(1);
        s.last_seen = now;
        Turn {
            throttle: self,
            peer: peer.to_owned(),
            user: user.to_owned(),
            permit: Some(permit),
        }
    }

    /// Whether `peer` logged in successfully within [`TRUST_FOR`] before `now`.
    pub(crate) fn trusted(&self, peer: &str, now: Instant) -> bool {
        let trusted = self.trusted.locked();
        trusted
            .get(&Client::of(peer))
            .is_some_and(|last| now.saturating_duration_since(*last) < TRUST_FOR)
    }

    fn trust(&self, client: Client, now: Instant) {
        let mut trusted = self.trusted.locked();
        if !trusted.contains_key(&client) && trusted.len() >= MAX_TRUSTED {
            trusted.retain(|_, last| now.saturating_duration_since(*last) < TRUST_FOR);
            if trusted.len() >= MAX_TRUSTED
                && let Some(oldest) = trusted.iter().min_by_key(|(_, l)| **l).map(|(c, _)| *c)
            {
                trusted.remove(&oldest);
            }
        }
        trusted.insert(client, now);
    }
}

impl Turn<'_> {
    /// The check succeeded at `now`: the turn goes back at once, the advance failure is
    /// refunded, an address back at zero with nothing under way is forgotten (so honest
    /// clients do not fill the table), and the address is trusted from now on.
    pub(crate) fn succeeded(mut self, now: Instant) {
        drop(self.permit.take());
        let client = Client::of(&self.peer);
        {
            let mut clients = self.throttle.lock();
            if let Some(s) = clients.get_mut(&client) {
                s.failures = s.failures.saturating_sub(1);
                if s.failures == 0 && s.held.is_empty() && Arc::strong_count(&s.turns) == 1 {
                    clients.remove(&client);
                }
            }
        }
        self.throttle.trust(client, now);
    }

    /// The check failed (or was not made) at `now`: returns when to answer. The turn stays
    /// taken until then. Logs the burst once it reaches [`LOG_AT_FAILURES`].
    pub(crate) fn failed(mut self, now: Instant) -> Instant {
        self.fail(now)
    }

    fn fail(&mut self, now: Instant) -> Instant {
        let mut clients = self.throttle.lock();
        // Normally there since the turn was taken; if the table dropped it, start over.
        let s = strikes_of(&mut clients, Client::of(&self.peer), now, 1);
        s.last_seen = now;
        let at = s.last_answer.max(now) + delay(s.failures);
        s.last_answer = at;
        if let Some(permit) = self.permit.take() {
            s.held.push((at, permit));
        }
        if s.failures >= LOG_AT_FAILURES && !s.logged {
            s.logged = true;
            log::warn!(
                "{} failed logins in a row from {} (last as user {:?}): answering its \
                 failures one after another with growing delays, up to {} s",
                s.failures,
                self.peer,
                self.user,
                MAX_DELAY.as_secs()
            );
        }
        at
    }
}

impl Drop for Turn<'_> {
    /// A check that never said how it ended (its request was dropped halfway, perhaps while
    /// its hash still runs) counts as failed: a guesser gains nothing by hanging up.
    fn drop(&mut self) {
        if self.permit.is_some() {
            self.fail(Instant::now());
        }
    }
}

impl Strikes {
    fn fresh(now: Instant, failures: u32) -> Strikes {
        Strikes {
            failures,
            last_seen: now,
            last_answer: now,
            logged: false,
            turns: Arc::new(Semaphore::new(MAX_IN_FLIGHT)),
            held: Vec::new(),
        }
    }

    /// Gives back the held turns whose answers are due by `now`.
    fn give_back_due(&mut self, now: Instant) {
        self.held.retain(|(at, _)| *at > now);
    }
}

/// The entry of `client`, made with `failures` if new (making room in a full table first).
fn strikes_of(
    clients: &mut HashMap<Client, Strikes>,
    client: Client,
    now: Instant,
    failures: u32,
) -> &mut Strikes {
    if !clients.contains_key(&client) && clients.len() >= MAX_TRACKED {
        make_room(clients, now);
    }
    clients
        .entry(client)
        .or_insert_with(|| Strikes::fresh(now, failures))
}

fn make_room(clients: &mut HashMap<Client, Strikes>, now: Instant) {
    clients.retain(|_, s| now.duration_since(s.last_seen) < FORGET_AFTER);
    if clients.len() >= MAX_TRACKED
        && let Some(oldest) = clients
            .iter()
            .min_by_key(|(_, s)| s.last_seen)
            .map(|(c, _)| *c)
    {
        clients.remove(&oldest);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    fn take<'a>(t: &'a Throttle, peer: &str, now: Instant) -> Option<Turn<'a>> {
        t.try_turn(peer, "x", now).ok()
    }

    /// A failure of a check that takes its turn at `now`; when it is answered.
    fn fail(t: &Throttle, peer: &str, now: Instant) -> Instant {
        take(t, peer, now).expect("no turn free").failed(now)
    }

    #[test]
    fn delays_double_up_to_the_cap() {
        let got: Vec<_> = (1..=9).map(delay).collect();
        let ms = |n| n * MS;
        assert_eq!(
            got,
            [
                ms(100),
                ms(200),
                ms(400),
                ms(800),
                ms(1600),
                ms(3200),
                ms(5000),
                ms(5000),
                ms(5000)
            ]
        );
        assert_eq!(delay(u32::MAX), MAX_DELAY);
    }

    #[test]
    fn sequential_failures_double_the_answer_delay() {
        let t = Throttle::default();
        let mut now = Instant::now();
        for want in [100, 200, 400, 800, 1600, 3200, 5000, 5000] {
            let at = fail(&t, "192.0.2.1", now);
            assert_eq!(at - now, want * MS);
            now = at;
        }
    }

    // Parallel guesses from one address: all get a turn at once up to MAX_IN_FLIGHT, but their
    // answers leave one after another, and each further check waits for one of them.
    #[test]
    fn parallel_failures_are_answered_one_after_another() {
        let t = Throttle::default();
        let t0 = Instant::now();
        let turns: Vec<_> = (0..MAX_IN_FLIGHT)
            .map(|_| take(&t, "192.0.2.1", t0).unwrap())
            .collect();
        assert!(take(&t, "192.0.2.1", t0).is_none(), "a ninth at once");
        let answers: Vec<_> = turns.into_iter().map(|turn| turn.failed(t0) - t0).collect();
        // Eight failures in advance: the delay is at its cap from the first answer on.
        let want: Vec<_> = (1..=MAX_IN_FLIGHT as u32).map(|i| MAX_DELAY * i).collect();
        assert_eq!(answers, want);
        // One turn comes free per answer, no sooner.
        let Err((_, next)) = t.try_turn("192.0.2.1", "x", t0 + MAX_DELAY - MS) else {
            panic!("a turn before the first answer")
        };
        assert_eq!(next, Some(t0 + MAX_DELAY));
        let at = fail(&t, "192.0.2.1", t0 + MAX_DELAY);
        assert_eq!(at, t0 + MAX_DELAY * (MAX_IN_FLIGHT as u32 + 1));
        assert!(take(&t, "192.0.2.1", t0 + MAX_DELAY).is_none());
    }

    // The lock-out behind one address (docs/auth.md): three guessers hammer one address, and a right password from
    // the same address gets a turn at once (and gives it back at once), again and again.
    #[test]
    fn guessers_never_hold_back_a_right_password_from_their_address() {
        let t = Throttle::default();
        let t0 = Instant::now();
        // When each guesser's last guess is answered: it sends the next one right then.
        let mut answered = [t0; 3];
        let mut guesses = 0;
        let mut now = t0;
        while now < t0 + Duration::from_secs(60) {
            for at in answered.iter_mut().filter(|at| **at <= now) {
                *at = fail(&t, "192.0.2.1", now);
                guesses += 1;
            }
            take(&t, "192.0.2.1", now)
                .unwrap_or_else(|| panic!("no turn at {:?}", now - t0))
                .succeeded(now);
            now += 50 * MS;
        }
        // Three parallel guessers get no more than a sequential one plus two (one guess
        // every MAX_DELAY at the cap, 12 a minute; 17 in the first minute).
        assert!(guesses <= 19, "{guesses} guesses checked in a minute");
    }

    #[test]
    fn a_free_turn_is_never_delayed_and_other_addresses_never_slowed() {
        let t = Throttle::default();
        let now = Instant::now();
        let held: Vec<_> = (0..MAX_IN_FLIGHT)
            .map(|_| take(&t, "192.0.2.1", now).unwrap())
            .collect();
        assert!(take(&t, "192.0.2.2", now).is_some());
        assert!(take(&t, "2001:db8::1", now).is_some());
        drop(held);
    }

    #[test]
    fn successes_are_refunded_and_forgotten() {
        let t = Throttle::default();
        let now = Instant::now();
        for _ in 0..3 {
            take(&t, "192.0.2.1", now).unwrap().succeeded(now);
        }
        assert!(t.lock().is_empty());
        // One failure, then a success: the failure still counts.
        let at = fail(&t, "192.0.2.1", now);
        assert_eq!(at, now + FIRST_DELAY);
        take(&t, "192.0.2.1", now).unwrap().succeeded(now);
        assert_eq!(t.lock()[&Client::V4(0xC000_0201)].failures, 1);
        // The next failure is answered a (doubled) delay after the first one's answer.
        assert_eq!(fail(&t, "192.0.2.1", now), at + 2 * FIRST_DELAY);
    }

    // A request dropped halfway (its client hung up) is booked as a failure and keeps its
    // turn until that answer would have been due: hanging up does not buy a guesser turns.
    #[test]
    fn a_dropped_turn_counts_as_failed() {
        let t = Throttle::default();
        let now = Instant::now();
        drop(take(&t, "192.0.2.1", now).unwrap());
        let s = &t.lock()[&Client::V4(0xC000_0201)];
        assert_eq!(s.failures, 1);
        assert_eq!(s.held.len(), 1);
        assert!(s.held[0].0 > now);
    }

    #[test]
    fn ipv6_is_grouped_by_64_and_mapped_v4_is_v4() {
        assert_eq!(
            Client::of("2001:db8:1:2::1"),
            Client::of("2001:db8:1:2:ffff::9")
        );
        assert_ne!(Client::of("2001:db8:1:2::1"), Client::of("2001:db8:1:3::1"));
        assert_eq!(Client::of("::ffff:192.0.2.1"), Client::of("192.0.2.1"));
        assert_eq!(Client::of("unix"), Client::Local);
    }

    #[test]
    fn forgets_after_a_quiet_minute() {
        let t = Throttle::default();
        let mut now = Instant::now();
        for _ in 0..5 {
            now = fail(&t, "192.0.2.1", now);
        }
        let later = now + FORGET_AFTER + MS;
        assert_eq!(fail(&t, "192.0.2.1", later), later + FIRST_DELAY);
    }

    #[test]
    fn the_table_is_bounded() {
        let t = Throttle::default();
        let now = Instant::now();
        for i in 0..(MAX_TRACKED as u32 + 100) {
            let ip = std::net::Ipv4Addr::from(i).to_string();
            fail(&t, &ip, now + i * MS);
        }
        let clients = t.clients.lock().unwrap();
        assert_eq!(clients.len(), MAX_TRACKED);
        // The newest address is tracked; the oldest made room.
        assert!(clients.contains_key(&Client::V4(MAX_TRACKED as u32 + 99)));
        assert!(!clients.contains_key(&Client::V4(0)));
    }

    // The waiting side, in real time: a check that finds every turn taken gets one as soon as
    // a check under way ends, and gives up after MAX_DELAY otherwise (not tested: 5 s).
    #[test]
    fn a_waiting_check_gets_the_next_turn_that_comes_free() {
        let t = Throttle::default();
        let now = Instant::now();
        let mut turns: Vec<_> = (0..MAX_IN_FLIGHT)
            .map(|_| take(&t, "192.0.2.1", now).unwrap())
            .collect();
        let last = turns.pop().unwrap();
        let started = Instant::now();
        let got = smol::block_on(smol::future::or(
            async { t.turn("192.0.2.1", "x").await.is_some() },
            async {
                smol::Timer::after(20 * MS).await;
                last.succeeded(Instant::now());
                smol::future::pending().await
            },
        ));
        assert!(got);
        assert!(started.elapsed() < MAX_DELAY, "{:?}", started.elapsed());
    }

    #[test]
    fn a_successful_login_trusts_its_address_for_a_while() {
        let t = Throttle::default();
        let now = Instant::now();
        assert!(!t.trusted("192.0.2.1", now));
        // Failures never earn trust.
        fail(&t, "192.0.2.1", now);
        assert!(!t.trusted("192.0.2.1", now));
        take(&t, "192.0.2.1", now).unwrap().succeeded(now);
        assert!(t.trusted("192.0.2.1", now));
        assert!(t.trusted("192.0.2.1", now + TRUST_FOR - MS));
        assert!(!t.trusted("192.0.2.1", now + TRUST_FOR));
        assert!(!t.trusted("192.0.2.2", now));
        // IPv6: the whole /64.
        take(&t, "2001:db8::1", now).unwrap().succeeded(now);
        assert!(t.trusted("2001:db8::2", now));
    }

    // Guessers from many addresses cannot push a trusted address out of its table, and the
    // table is bounded by successful logins alone.
    #[test]
    fn trust_survives_guessers_and_is_bounded() {
        let t = Throttle::default();
        let now = Instant::now();
        take(&t, "192.0.2.1", now).unwrap().succeeded(now);
        for i in 0..(MAX_TRACKED as u32 + 100) {
            let ip = std::net::Ipv4Addr::from(0x0A00_0000 + i).to_string();
            fail(&t, &ip, now + i * MS);
        }
        assert!(t.trusted("192.0.2.1", now + MS));
        for i in 0..(MAX_TRUSTED as u32 + 10) {
            let ip = std::net::Ipv4Addr::from(0x0B00_0000 + i).to_string();
            t.trust(Client::of(&ip), now + (i + 1) * MS);
        }
        let trusted = t.trusted.lock().unwrap();
        assert_eq!(trusted.len(), MAX_TRUSTED);
        // The oldest login made room.
        assert!(!trusted.contains_key(&Client::V4(0xC000_0201)));
    }
}
