//! Back-off for password guessing: per client address, failed logins are answered ever more
//! slowly and expensive checks from that address wait their turn.
//!
//! Each failure from an address doubles its delay ([`FIRST_DELAY`] .. [`MAX_DELAY`]); the 401
//! is sent only after it. Checks that need a real hash computation (not a cache hit) from one
//! address run one after another, each counted as a failure in advance and spaced by the
//! delay that failure would earn (a success refunds it), so a burst of parallel guesses gets
//! no further than a sequential one: of 200 at once, 6 are checked. A check that would wait
//! more than [`MAX_DELAY`] is refused unchecked (after that wait), so a guesser cannot park
//! connections on the server for long either. A client with the right password that hits
//! the verified-credential cache never comes here, and other addresses are never affected.
//! IPv6 clients are grouped by /64, since one host usually owns a whole /64. The table is
//! bounded ([`MAX_TRACKED`]), drops addresses back at zero failures, and forgets one after
//! [`FORGET_AFTER`] without activity.
//!
//! Behind a reverse proxy every client has the proxy's address: a guesser then also delays
//! the once-a-minute hash check of honest clients behind the same proxy (never their cached
//! requests).
//!
//! The other way round, an address that logged in with a right password is *trusted* for
//! [`TRUST_FOR`]: its checks skip the global flood budget of `budget.rs` (they still go
//! through the back-off above). This lives in a table of its own, filled only by successful
//! logins ([`MAX_TRUSTED`]), so guessers from many addresses cannot push honest ones out.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Delay after the first failure; each further failure doubles it. Short enough that a typo
/// costs nothing noticeable.
const FIRST_DELAY: Duration = Duration::from_millis(100);

/// The delay stops growing here: long enough to make guessing slow (12 tries a minute per
/// address), short enough that restic does not time out while it waits.
pub(crate) const MAX_DELAY: Duration = Duration::from_secs(5);

/// An address quiet for this long starts over (and a new burst is logged again).
const FORGET_AFTER: Duration = Duration::from_secs(60);

/// Addresses remembered at most (~100 bytes each, so well under 1 MiB); when full, expired
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
    /// Failures in a row. Every admitted check counts as one in advance (so a burst of
    /// parallel guesses is spaced as if each had already failed) and is refunded if it
    /// succeeds.
    failures: u32,
    /// The last admission or failure; an entry quiet for [`FORGET_AFTER`] starts over.
    last_seen: Instant,
    /// The earliest start of the next expensive check from this address.
    next_check: Instant,
    /// Whether this burst has been logged.
    logged: bool,
}

#[derive(Debug, Default)]
pub(crate) struct Throttle {
    clients: Mutex<HashMap<Client, Strikes>>,
    /// Addresses with a successful login, and when it was.
    trusted: Mutex<HashMap<Client, Instant>>,
}

/// The delay after `failures` failures in a row.
fn delay(failures: u32) -> Duration {
    let doublings = failures.saturating_sub(1).min(16);
    (FIRST_DELAY * (1u32 << doublings)).min(MAX_DELAY)
}

impl Throttle {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Client, Strikes>> {
        self.clients.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Reserves the next expensive check for `peer` and says when it may start: at once from
    /// an address without failures or checks under way. `None`: more checks from this
    /// address are queued than fit in [`MAX_DELAY`]; refuse this one without checking.
    pub(crate) fn admit(&self, peer: &str, now: Instant) -> Option<Instant> {
        let mut clients = self.lock();
        let s = strikes_of(&mut clients, Client::of(peer), now, 0);
        if now.duration_since(s.last_seen) >= FORGET_AFTER {
            *s = Strikes::fresh(now, 0);
        }
        let start = s.next_check.max(now);
        if start > now + MAX_DELAY {
            return None;
        }
        s.failures = s.failures.saturating_add(1);
        s.last_seen = now;
        // Checks queued from this address go one after another, a (growing) delay apart.
        s.next_check = start + delay(s.failures);
        Some(start)
    }

    /// An admitted check succeeded at `now`: its advance failure is refunded, an address back
    /// at zero is forgotten (so honest clients do not fill the table), and the address is
    /// trusted from now on.
    pub(crate) fn succeeded(&self, peer: &str, now: Instant) {
        let client = Client::of(peer);
        {
            let mut clients = self.lock();
            if let Some(s) = clients.get_mut(&client) {
                s.failures = s.failures.saturating_sub(1);
                if s.failures == 0 {
                    clients.remove(&client);
                }
            }
        }
        let mut trusted = self.trusted.lock().unwrap_or_else(|e| e.into_inner());
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

    /// Whether `peer` logged in successfully within [`TRUST_FOR`] before `now`.
    pub(crate) fn trusted(&self, peer: &str, now: Instant) -> bool {
        let trusted = self.trusted.lock().unwrap_or_else(|e| e.into_inner());
        trusted
            .get(&Client::of(peer))
            .is_some_and(|last| now.saturating_duration_since(*last) < TRUST_FOR)
    }

    /// An admitted check from `peer` failed at `now`; returns how long to wait before
    /// answering. Logs the burst once it reaches [`LOG_AT_FAILURES`].
    pub(crate) fn failed(&self, peer: &str, user: &str, now: Instant) -> Duration {
        let mut clients = self.lock();
        // Normally there since admit(); if the table dropped it meanwhile, start over.
        let s = strikes_of(&mut clients, Client::of(peer), now, 1);
        s.last_seen = now;
        let d = delay(s.failures);
        s.next_check = s.next_check.max(now + d);
        if s.failures >= LOG_AT_FAILURES && !s.logged {
            s.logged = true;
            log::warn!(
                "{} failed logins in a row from {peer} (last as user {user:?}): \
                 answering its failures with growing delays, up to {} s",
                s.failures,
                MAX_DELAY.as_secs()
            );
        }
        d
    }
}

impl Strikes {
    fn fresh(now: Instant, failures: u32) -> Strikes {
        Strikes {
            failures,
            last_seen: now,
            next_check: now,
            logged: false,
        }
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

    /// A failure of a check admitted at `now`.
    fn fail(t: &Throttle, peer: &str, now: Instant) -> Duration {
        match t.admit(peer, now) {
            Some(start) => t.failed(peer, "x", start),
            None => panic!("refused unchecked"),
        }
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
            let d = fail(&t, "192.0.2.1", now);
            assert_eq!(d, want * MS);
            now += d;
        }
    }

    #[test]
    fn other_addresses_are_never_slowed() {
        let t = Throttle::default();
        let mut now = Instant::now();
        for _ in 0..10 {
            now += fail(&t, "192.0.2.1", now);
        }
        assert_eq!(t.admit("192.0.2.2", now), Some(now));
        assert_eq!(t.admit("2001:db8::1", now), Some(now));
        assert_eq!(t.admit("192.0.2.1", now), Some(now));
        assert_eq!(t.admit("192.0.2.1", now), Some(now + MAX_DELAY));
    }

    // A burst of parallel guesses from a fresh address: spaced as if each had failed, and the
    // queue ends at MAX_DELAY, so only a handful are ever checked.
    #[test]
    fn a_parallel_burst_from_one_address_is_mostly_refused_unchecked() {
        let t = Throttle::default();
        let now = Instant::now();
        let admitted: Vec<_> = (0..200)
            .filter_map(|_| t.admit("192.0.2.1", now))
            .map(|start| start - now)
            .collect();
        assert_eq!(
            admitted,
            [
                Duration::ZERO,
                100 * MS,
                300 * MS,
                700 * MS,
                1500 * MS,
                3100 * MS
            ]
        );
        assert_eq!(t.admit("192.0.2.2", now), Some(now));
    }

    #[test]
    fn successes_are_refunded_and_forgotten() {
        let t = Throttle::default();
        let now = Instant::now();
        for _ in 0..3 {
            assert_eq!(t.admit("192.0.2.1", now), Some(now));
            t.succeeded("192.0.2.1", now);
        }
        assert!(t.lock().is_empty());
        // One failure, then a success: the failure still counts.
        let start = t.admit("192.0.2.1", now).unwrap();
        t.failed("192.0.2.1", "x", start);
        let start = t.admit("192.0.2.1", now).unwrap();
        assert_eq!(start, now + FIRST_DELAY);
        t.succeeded("192.0.2.1", now);
        assert_eq!(t.lock()[&Client::V4(0xC000_0201)].failures, 1);
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
            now += fail(&t, "192.0.2.1", now);
        }
        let later = now + FORGET_AFTER + MS;
        assert_eq!(t.admit("192.0.2.1", later), Some(later));
        t.succeeded("192.0.2.1", later);
        assert_eq!(fail(&t, "192.0.2.1", later), FIRST_DELAY);
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

    #[test]
    fn a_successful_login_trusts_its_address_for_a_while() {
        let t = Throttle::default();
        let now = Instant::now();
        assert!(!t.trusted("192.0.2.1", now));
        // Failures never earn trust.
        fail(&t, "192.0.2.1", now);
        assert!(!t.trusted("192.0.2.1", now));
        let start = t.admit("192.0.2.1", now).unwrap();
        t.succeeded("192.0.2.1", start);
        assert!(t.trusted("192.0.2.1", start));
        assert!(t.trusted("192.0.2.1", start + TRUST_FOR - MS));
        assert!(!t.trusted("192.0.2.1", start + TRUST_FOR));
        assert!(!t.trusted("192.0.2.2", start));
        // IPv6: the whole /64.
        t.succeeded("2001:db8::1", now);
        assert!(t.trusted("2001:db8::2", now));
    }

    // Guessers from many addresses cannot push a trusted address out of its table, and the
    // table is bounded by successful logins alone.
    #[test]
    fn trust_survives_guessers_and_is_bounded() {
        let t = Throttle::default();
        let now = Instant::now();
        t.succeeded("192.0.2.1", now);
        for i in 0..(MAX_TRACKED as u32 + 100) {
            let ip = std::net::Ipv4Addr::from(0x0A00_0000 + i).to_string();
            fail(&t, &ip, now + i * MS);
        }
        assert!(t.trusted("192.0.2.1", now + MS));
        for i in 0..(MAX_TRUSTED as u32 + 10) {
            let ip = std::net::Ipv4Addr::from(0x0B00_0000 + i).to_string();
            t.succeeded(&ip, now + (i + 1) * MS);
        }
        let trusted = t.trusted.lock().unwrap();
        assert_eq!(trusted.len(), MAX_TRUSTED);
        // The oldest login made room.
        assert!(!trusted.contains_key(&Client::V4(0xC000_0201)));
    }
}
