//! Back-off for password guessing: per client address, failed logins are answered ever more
//! slowly and expensive checks from that address wait their turn.
//!
//! Each failure from an address doubles its delay ([`FIRST_DELAY`] .. [`MAX_DELAY`]); the 401
//! is sent only after it, and the next check that needs a real hash computation (not a cache
//! hit) may not start before the delay has passed, so parallel connections gain nothing. A
//! client with the right password that hits the verified-credential cache never waits, and
//! other addresses are never affected. IPv6 clients are grouped by /64, since one host
//! usually owns a whole /64. The table is bounded ([`MAX_TRACKED`]) and forgets an address
//! after [`FORGET_AFTER`] without failures.
//!
//! Behind a reverse proxy every client has the proxy's address: a guesser then also delays
//! the once-a-minute hash check of honest clients behind the same proxy (never their cached
//! requests).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Delay after the first failure; each further failure doubles it. Short enough that a typo
/// costs nothing noticeable.
const FIRST_DELAY: Duration = Duration::from_millis(100);

/// The delay stops growing here: long enough to make guessing slow (12 tries a minute per
/// address), short enough that restic does not time out while it waits.
const MAX_DELAY: Duration = Duration::from_secs(5);

/// An address without failures for this long starts over (and a new burst is logged again).
const FORGET_AFTER: Duration = Duration::from_secs(60);

/// Addresses remembered at most (~100 bytes each, so well under 1 MiB); when full, expired
/// entries go first, then the one whose last failure is oldest.
const MAX_TRACKED: usize = 4096;

/// Failures in a row from one address before we log the burst (once).
const LOG_AT_FAILURES: u32 = 3;

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
    failures: u32,
    last_failure: Instant,
    /// The earliest start of the next expensive check from this address.
    next_check: Instant,
}

#[derive(Debug, Default)]
pub(crate) struct Throttle {
    clients: Mutex<HashMap<Client, Strikes>>,
}

/// The delay after `failures` failures in a row.
fn delay(failures: u32) -> Duration {
    let doublings = failures.saturating_sub(1).min(16);
    (FIRST_DELAY * (1u32 << doublings)).min(MAX_DELAY)
}

impl Throttle {
    /// Reserves the next expensive check for `peer` and says when it may start: `now` for an
    /// address without recent failures (nothing is recorded for it).
    pub(crate) fn admit(&self, peer: &str, now: Instant) -> Instant {
        let mut clients = self.clients.lock().unwrap_or_else(|e| e.into_inner());
        let client = Client::of(peer);
        let Some(s) = clients.get_mut(&client) else {
            return now;
        };
        if now.duration_since(s.last_failure) >= FORGET_AFTER {
            clients.remove(&client);
            return now;
        }
        let start = s.next_check.max(now);
        // Checks already queued from this address go one after another, a delay apart.
        s.next_check = start + delay(s.failures);
        start
    }

    /// Records a failed login from `peer`; returns how long to wait before answering.
    pub(crate) fn failed(&self, peer: &str, user: &str, now: Instant) -> Duration {
        let mut clients = self.clients.lock().unwrap_or_else(|e| e.into_inner());
        let client = Client::of(peer);
        if !clients.contains_key(&client) && clients.len() >= MAX_TRACKED {
            make_room(&mut clients, now);
        }
        let s = clients.entry(client).or_insert(Strikes {
            failures: 0,
            last_failure: now,
            next_check: now,
        });
        if now.duration_since(s.last_failure) >= FORGET_AFTER {
            s.failures = 0;
        }
        s.failures = s.failures.saturating_add(1);
        s.last_failure = now;
        let d = delay(s.failures);
        s.next_check = s.next_check.max(now + d);
        if s.failures == LOG_AT_FAILURES {
            log::warn!(
                "{LOG_AT_FAILURES} failed logins in a row from {peer} (last as user {user:?}): \
                 answering its failures with growing delays, up to {} s",
                MAX_DELAY.as_secs()
            );
        }
        d
    }
}

fn make_room(clients: &mut HashMap<Client, Strikes>, now: Instant) {
    clients.retain(|_, s| now.duration_since(s.last_failure) < FORGET_AFTER);
    if clients.len() >= MAX_TRACKED
        && let Some(oldest) = clients
            .iter()
            .min_by_key(|(_, s)| s.last_failure)
            .map(|(c, _)| *c)
    {
        clients.remove(&oldest);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

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
    fn other_addresses_are_never_slowed() {
        let t = Throttle::default();
        let now = Instant::now();
        for _ in 0..10 {
            t.failed("192.0.2.1", "x", now);
        }
        assert_eq!(t.admit("192.0.2.2", now), now);
        assert_eq!(t.admit("2001:db8::1", now), now);
        assert!(t.admit("192.0.2.1", now) >= now + MAX_DELAY);
    }

    #[test]
    fn queued_checks_from_one_address_go_one_after_another() {
        let t = Throttle::default();
        let now = Instant::now();
        assert_eq!(t.failed("192.0.2.1", "x", now), 100 * MS);
        assert_eq!(t.failed("192.0.2.1", "x", now), 200 * MS);
        let a = t.admit("192.0.2.1", now);
        let b = t.admit("192.0.2.1", now);
        assert_eq!(a, now + 200 * MS);
        assert_eq!(b, a + 200 * MS);
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
        let now = Instant::now();
        for _ in 0..5 {
            t.failed("192.0.2.1", "x", now);
        }
        let later = now + FORGET_AFTER + MS;
        assert_eq!(t.admit("192.0.2.1", later), later);
        assert_eq!(t.failed("192.0.2.1", "x", later), FIRST_DELAY);
    }

    #[test]
    fn the_table_is_bounded() {
        let t = Throttle::default();
        let now = Instant::now();
        for i in 0..(MAX_TRACKED as u32 + 100) {
            let ip = std::net::Ipv4Addr::from(i).to_string();
            t.failed(&ip, "x", now + i * MS);
        }
        let clients = t.clients.lock().unwrap();
        assert_eq!(clients.len(), MAX_TRACKED);
        // The newest address is tracked; the oldest made room.
        assert!(clients.contains_key(&Client::V4(MAX_TRACKED as u32 + 99)));
        assert!(!clients.contains_key(&Client::V4(0)));
    }
}
