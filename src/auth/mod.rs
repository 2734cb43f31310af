//! Who is asking: the htpasswd file, live reload, and the cache that makes slow hashes
//! affordable on a Raspberry Pi. The file format and the hash formats are `auth/htpasswd.rs`; the
//! back-off for password guessing from one address is `auth/per_address.rs`, the budget that bounds
//! a flood of guesses from many addresses is `auth/flood_budget.rs`.
//!
//! One bcrypt check at cost 10 takes 100+ ms on a Pi; restic sends hundreds of requests per
//! minute. A verified user:password pair is therefore remembered for [`PASSWORD_CACHE_TTL`],
//! keyed by a salted SHA-256 of user, password and the stored hash (never the password itself).
//! Wrong passwords are never cached. Slow hashes (bcrypt, SHA-crypt, apr1) run on the blocking
//! pool, at most one per two cores at a time, never on an executor thread.
//!
//! The way of one check: cache hit -> done at once (nothing below ever slows it). Otherwise
//! one of the address's turns (`auth/per_address.rs`: at once unless guessers from that address hold
//! all of them); then, for a slow hash from an address that has not logged in lately, the
//! flood budget (`auth/flood_budget.rs`: at once, paced, or refused unchecked, which the client sees as
//! 429); then a slow-hash slot and the hash. A right password is answered right then; only a
//! failure waits, for its turn in the address's line of delayed 401s. Nothing here tells a
//! right password from a guess before the hash has run, so nothing before the hash may wait
//! on what other clients of the same address do, short of their holding every turn.
//!
//! A request dropped halfway does not cut its check short: the hash already running keeps
//! its slot and pays its bill to the budget (both travel with it to the blocking pool), and
//! its turn is booked as a failure.
//!
//! Invariant: a cache entry can only vouch for the exact stored hash it was made with, and
//! every check first looks the user up in the current users. So a user removed from the file,
//! or whose password changed, is refused from the reload on; the stale entry is unreachable
//! and swept once expired.

mod flood_budget;
pub(crate) mod htpasswd;
mod per_address;

use crate::lock::Lock as _;
use crate::watch::{Load, Watched};
use flood_budget::{Admission, Budget};
use htpasswd::{Hash, Users};
use per_address::Throttle;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::io::Read;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long a verified user:password pair is trusted without running bcrypt again.
const PASSWORD_CACHE_TTL: Duration = Duration::from_secs(60);

/// Cache entries beyond this trigger a sweep of the expired ones (one entry per user and
/// password in use, so it stays tiny unless a password changes often).
const CACHE_SWEEP_AT: usize = 256;

/// What a 429 answer tells the client to wait before trying again (restic ignores it and
/// uses its own back-off; other clients may not).
pub(crate) const BUSY_RETRY_AFTER: Duration = flood_budget::MAX_WAIT;

/// The outcome of a check.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Verdict {
    Ok,
    /// Wrong password or unknown user (401).
    Wrong,
    /// Not checked (429): too many wrong passwords lately (`auth/flood_budget.rs`), or every turn of
    /// the address taken for 5 s (`auth/per_address.rs`).
    Busy,
}

#[derive(Debug)]
pub(crate) struct Auth {
    /// The htpasswd file, re-read when it changes (`watch.rs`).
    users: Watched<Users>,
    /// Verified pairs: salted key -> expiry.
    cache: Mutex<HashMap<[u8; 32], Instant>>,
    salt: [u8; 16],
    /// At most one slow hash per two cores: a flood of wrong passwords cannot starve
    /// everything else.
    slow_slots: Arc<smol::lock::Semaphore>,
    throttle: Throttle,
    /// Shared with the hashes under way, which pay their own bill (see `check`).
    budget: Arc<Mutex<Budget>>,
}

impl Auth {
    /// Loads the htpasswd file at start-up. The error names the file and what to do.
    pub(crate) fn load(path: &Path) -> Result<Auth, String> {
        let users =
            Watched::open(path).map_err(|e| format!("{e}{}", crate::cmd::user::load_hint(path)))?;
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        // Half the cores (at least one): a flood of logins from many addresses, which the
        // per-address back-off cannot stop, still leaves half the CPU to transfers.
        let slow_slots = (cores / 2).max(1);
        Ok(Auth {
            users,
            cache: Mutex::new(HashMap::new()),
            salt: random_salt(),
            slow_slots: Arc::new(smol::lock::Semaphore::new(slow_slots)),
            throttle: Throttle::default(),
            budget: Arc::new(Mutex::new(Budget::new(Instant::now()))),
        })
    }

    pub(crate) fn path(&self) -> &Path {
        self.users.path()
    }

    pub(crate) fn user_count(&self) -> usize {
        self.users.get().len()
    }

    /// Re-reads the file (SIGHUP). A file that cannot be read keeps the users we have, and
    /// says why.
    pub(crate) fn reload(&self) {
        self.users.reload();
    }

    /// Checks a user:password pair from client address `peer`. A pair verified within
    /// [`PASSWORD_CACHE_TTL`] answers at once; anything else costs a hash computation, takes
    /// one of the address's turns (see `auth/per_address.rs`) and, during a flood, waits for the
    /// global budget (see `auth/flood_budget.rs`); a failure is answered after a delay that grows with
    /// the address's failures in a row, one failure's answer after another.
    pub(crate) async fn verify(&self, user: &str, password: &str, peer: &str) -> Verdict {
        self.users.reload_if_changed().await;
        // Hold this version of the users for the whole check: a reload meanwhile does not
        // change which stored hash this answer (and its cache entry) is about.
        let users = self.users.get();
        let hash = users.get(user);
        let key = hash.map(|h| self.cache_key(user, password, h));
        if let Some(key) = &key
            && self
                .cache()
                .get(key)
                .is_some_and(|&expiry| expiry > Instant::now())
        {
            return Verdict::Ok;
        }
        // A turn of this address: at once unless guessers hold all of them (per_address.rs).
        let Some(turn) = self.throttle.turn(peer, user).await else {
            log::debug!(
                "login from {peer} as user {user:?} refused unchecked: {} checks from that \
                 address under way for {} s",
                per_address::MAX_IN_FLIGHT,
                per_address::MAX_DELAY.as_secs()
            );
            return Verdict::Busy;
        };
        let checked = match hash {
            Some(hash) => self.check(hash, password, peer).await,
            // An unknown user costs no hash, but is throttled and answered like a wrong
            // password, and goes the same way through the flood budget.
            None => self.pretend(&users, peer).await,
        };
        // Refused by the flood budget: answered at once, so refusals cannot pile up. It
        // counts as a failure of the address and keeps its turn for a failure's delay: a
        // guesser hammering us gains nothing, and restic's own back-off between retries
        // outgrows ours.
        let Some(ok) = checked else {
            log::debug!("login from {peer} as user {user:?} refused unchecked: login flood");
            turn.failed(Instant::now());
            return Verdict::Busy;
        };
        if let (true, Some(key)) = (ok, key) {
            let now = Instant::now();
            let mut cache = self.cache();
            if cache.len() >= CACHE_SWEEP_AT {
                cache.retain(|_, expiry| *expiry > now);
            }
            cache.insert(key, now + PASSWORD_CACHE_TTL);
            drop(cache);
            turn.succeeded(now);
            Verdict::Ok
        } else {
            // Only the failure waits, for its place in this address's line of answers.
            let answer_at = turn.failed(Instant::now());
            log::debug!("failed login from {peer} as user {user:?}");
            smol::Timer::at(answer_at).await;
            Verdict::Wrong
        }
    }

    /// Runs the hash: `{SHA}` inline, everything slow on the blocking pool, one per two cores,
    /// and within the flood budget unless `peer` logged in lately. `None`: refused unchecked.
    async fn check(&self, hash: &Hash, password: &str, peer: &str) -> Option<bool> {
        if !hash.is_slow() {
            return Some(hash.verify(password.as_bytes()));
        }
        let exempt = self.throttle.trusted(peer, Instant::now());
        let (mut reserved, mut paced) = (Duration::ZERO, false);
        if !exempt {
            let admission = self.budget().admit(Instant::now());
            paced = admission != Admission::Now;
            reserved = wait_for(admission).await?;
        }
        let mut slot = self.slow_slots.acquire_arc().await;
        if !exempt && !paced {
            // Admitted at once, but perhaps behind many others in the slot queue (the first
            // wave of a flood all arrives while the budget is untouched): ask again now that
            // the hash would really run, and give the slot back while waiting.
            let admission = self.budget().admit(Instant::now());
            if admission != Admission::Now {
                drop(slot);
                reserved = wait_for(admission).await?;
                slot = self.slow_slots.acquire_arc().await;
            }
        }
        let (hash, password, budget) = (hash.clone(), password.to_owned(), self.budget.clone());
        // The slot and the bill go with the hash, not with this request: a client that hangs
        // up mid-check cannot free the slot early or leave its wrong password unpaid.
        let ok = smol::unblock(move || {
            let started = Instant::now();
            let ok = hash.verify(password.as_bytes());
            let took = started.elapsed();
            drop(slot);
            budget.locked().finish(Instant::now(), reserved, took, ok);
            ok
        })
        .await;
        Some(ok)
    }

    /// An unknown user during a flood: no hash to run, but the same way through the flood
    /// budget as a known user's slow check (if the file has slow hashes), so a 429 does not
    /// tell which names exist. Always "wrong" when it gets through.
    async fn pretend(&self, users: &Users, peer: &str) -> Option<bool> {
        let now = Instant::now();
        if !users.values().any(Hash::is_slow) || self.throttle.trusted(peer, now) {
            return Some(false);
        }
        let admission = self.budget().admit(now);
        let reserved = wait_for(admission).await?;
        // Nothing was hashed: the reservation goes back and no debt is added.
        self.budget()
            .finish(Instant::now(), reserved, Duration::ZERO, false);
        Some(false)
    }

    fn budget(&self) -> std::sync::MutexGuard<'_, Budget> {
        self.budget.locked()
    }

    fn cache(&self) -> std::sync::MutexGuard<'_, HashMap<[u8; 32], Instant>> {
        self.cache.locked()
    }

    fn cache_key(&self, user: &str, password: &str, hash: &Hash) -> [u8; 32] {
        let mut h = Sha256::new();
        h.update(self.salt);
        for part in [user.as_bytes(), password.as_bytes(), hash.stored()] {
            h.update((part.len() as u64).to_le_bytes());
            h.update(part);
        }
        h.finalize().into()
    }
}

/// Waits as the flood budget said; the reservation made, or `None`: refuse unchecked.
async fn wait_for(admission: Admission) -> Option<Duration> {
    match admission {
        Admission::Now => Some(Duration::ZERO),
        Admission::At(start, reserved) => {
            smol::Timer::at(start).await;
            Some(reserved)
        }
        Admission::Refused => None,
    }
}

impl Load for Users {
    const WHAT: &'static str = "htpasswd file";

    /// Lines the server skips are logged as warnings, naming the file.
    fn load(path: &Path) -> Result<Self, String> {
        // Not UTF-8 throughout (a name in Latin-1): as in the Go server, only the lines that
        // are not valid are skipped, not the whole file (U+FFFD is no letter, nor in a hash).
        let bytes = std::fs::read(path).map_err(|e| e.to_string())?;
        let (users, warnings) = htpasswd::parse(&String::from_utf8_lossy(&bytes));
        for w in warnings {
            log::warn!("{}: {w}", path.display());
        }
        Ok(users)
    }

    fn summary(&self) -> String {
        format!("{} users", self.len())
    }
}

/// A per-process salt for cache keys, from the kernel's CSPRNG.
fn random_salt() -> [u8; 16] {
    let mut salt = [0u8; 16];
    let from_kernel = std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut salt));
    if from_kernel.is_err() {
        salt = (fastrand::u128(..) ^ u128::from(std::process::id())).to_le_bytes();
    }
    salt
}

#[cfg(test)]
mod tests {
    use super::*;

    fn auth_with(text: &str) -> (Auth, std::path::PathBuf) {
        let path = std::env::temp_dir().join(format!(
            "rest-server-auth-unit-{}-{}",
            std::process::id(),
            fastrand::u64(..)
        ));
        std::fs::write(&path, text).unwrap();
        (Auth::load(&path).unwrap(), path)
    }

    // docs/auth.md: the cache must not outlive a removed user or a changed password.
    #[test]
    fn cache_does_not_outlive_a_removed_or_changed_user() {
        let (auth, path) = auth_with("bob:{SHA}W6ph5Mm5Pz8GgiULbPgzG37mj9g=\n");
        smol::block_on(async {
            let ok = Verdict::Ok;
            assert_eq!(auth.verify("bob", "password", "192.0.2.1").await, ok);
            // Changed password ("secret"): the cached pair no longer counts.
            std::fs::write(&path, "bob:{SHA}5en6G6MezRroT3XKqkdPOmY/BfQ=\n").unwrap();
            auth.reload();
            assert_ne!(auth.verify("bob", "password", "192.0.2.2").await, ok);
            assert_eq!(auth.verify("bob", "secret", "192.0.2.2").await, ok);
            std::fs::write(&path, "# nobody\n").unwrap();
            auth.reload();
            assert_ne!(auth.verify("bob", "secret", "192.0.2.3").await, ok);
        });
        let _ = std::fs::remove_file(path);
    }

    // During a flood, an unknown name is refused like a known one (429), so the status
    // cannot be used to find out which users exist.
    #[test]
    fn unknown_and_known_users_look_alike_during_a_flood() {
        let bcrypt = Hash::bcrypt("secret", 4).unwrap();
        let line = format!("bob:{}\n", String::from_utf8_lossy(bcrypt.stored()));
        let (auth, path) = auth_with(&line);
        // 30 s of wrong-password hashing just happened: far beyond what may wait.
        auth.budget().finish(
            Instant::now(),
            Duration::ZERO,
            Duration::from_secs(30),
            false,
        );
        smol::block_on(async {
            assert_eq!(
                auth.verify("bob", "guess", "192.0.2.7").await,
                Verdict::Busy
            );
            assert_eq!(
                auth.verify("nobody", "guess", "192.0.2.8").await,
                Verdict::Busy
            );
        });
        let _ = std::fs::remove_file(path);
    }

    #[test]
    fn failed_reload_keeps_users() {
        let (auth, path) = auth_with("bob:{SHA}W6ph5Mm5Pz8GgiULbPgzG37mj9g=\n");
        std::fs::remove_file(&path).unwrap();
        auth.reload();
        assert_eq!(auth.user_count(), 1);
    }
}
