//! Who is asking: the htpasswd file, its hash formats, live reload, and the cache that makes
//! bcrypt affordable on a Raspberry Pi.
//!
//! One bcrypt check at cost 10 takes 100+ ms on a Pi; restic sends hundreds of requests per
//! minute. A verified user:password pair is therefore remembered for [`PASSWORD_CACHE_TTL`],
//! keyed by a salted SHA-256 of user, password and the stored hash (never the password itself,
//! and a changed htpasswd entry misses the cache at once). Wrong passwords are never cached.
//! bcrypt runs on the blocking pool, at most one per core at a time, never on an executor thread.

use sha1::Sha1;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime};

/// How long a verified user:password pair is trusted without running bcrypt again.
const PASSWORD_CACHE_TTL: Duration = Duration::from_secs(60);

/// How often the htpasswd file's mtime and size are looked at for changes.
const RELOAD_CHECK_INTERVAL: Duration = Duration::from_secs(30);

/// Cache entries beyond this trigger a sweep of the expired ones (one entry per user and
/// password in use, so it stays tiny unless a password changes often).
const CACHE_SWEEP_AT: usize = 256;

/// A stored password hash, by format.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Hash {
    /// `$2a$`, `$2b$`, `$2y$`: the whole modular-crypt string.
    Bcrypt(String),
    /// `{SHA}base64(sha1(password))`: the 20 digest bytes.
    Sha1([u8; 20]),
}

impl Hash {
    /// The stored form, mixed into the cache key.
    fn stored(&self) -> &[u8] {
        match self {
            Hash::Bcrypt(s) => s.as_bytes(),
            Hash::Sha1(d) => d,
        }
    }
}

type Users = HashMap<String, Hash>;

/// What identifies a version of the file on disk.
type Stamp = Option<(SystemTime, u64)>;

#[derive(Debug)]
pub(crate) struct Auth {
    path: PathBuf,
    users: RwLock<Arc<Users>>,
    /// When the file was last looked at, and what it looked like then.
    checked: Mutex<(Instant, Stamp)>,
    /// Verified pairs: salted key -> expiry.
    cache: Mutex<HashMap<[u8; 32], Instant>>,
    salt: [u8; 16],
    /// One bcrypt per core: a flood of wrong passwords cannot starve everything else.
    bcrypt_slots: smol::lock::Semaphore,
}

impl Auth {
    /// Loads the htpasswd file at start-up. The error names the file and what to do.
    pub(crate) fn load(path: &Path) -> Result<Auth, String> {
        let (users, stamp) = read_users(path).map_err(|e| {
            format!(
                "cannot read htpasswd file {}: {e} (create it with `htpasswd -B -c {} USER`, or start with --no-auth)",
                path.display(),
                path.display()
            )
        })?;
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        Ok(Auth {
            path: path.to_owned(),
            users: RwLock::new(Arc::new(users)),
            checked: Mutex::new((Instant::now(), stamp)),
            cache: Mutex::new(HashMap::new()),
            salt: random_salt(),
            bcrypt_slots: smol::lock::Semaphore::new(cores),
        })
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    pub(crate) fn user_count(&self) -> usize {
        self.users().len()
    }

    fn users(&self) -> Arc<Users> {
        self.users.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Re-reads the file (SIGHUP, or a changed mtime/size). A file that cannot be read keeps
    /// the users we have, and says why.
    pub(crate) fn reload(&self) {
        match read_users(&self.path) {
            Ok((users, stamp)) => {
                log::info!("reloaded {}: {} users", self.path.display(), users.len());
                *self.users.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(users);
                *self.checked.lock().unwrap_or_else(|e| e.into_inner()) = (Instant::now(), stamp);
            }
            Err(e) => log::error!(
                "cannot reload htpasswd file {}: {e}; keeping the previous users",
                self.path.display()
            ),
        }
    }

    /// Reloads if the file changed, looking at most every [`RELOAD_CHECK_INTERVAL`].
    async fn reload_if_changed(&self) {
        let known = {
            let mut checked = self.checked.lock().unwrap_or_else(|e| e.into_inner());
            if checked.0.elapsed() < RELOAD_CHECK_INTERVAL {
                return;
            }
            checked.0 = Instant::now();
            checked.1
        };
        let path = self.path.clone();
        let now = smol::unblock(move || stamp(&path)).await;
        if now != known {
            self.reload();
        }
    }

    /// Checks a user:password pair.
    pub(crate) async fn verify(&self, user: &str, password: &str) -> bool {
        self.reload_if_changed().await;
        let Some(hash) = self.users().get(user).cloned() else {
            return false;
        };
        let key = self.cache_key(user, password, &hash);
        let now = Instant::now();
        if self.cache().get(&key).is_some_and(|&expiry| expiry > now) {
            return true;
        }
        let ok = match hash {
            Hash::Sha1(digest) => ct_eq(&Sha1::digest(password.as_bytes()), &digest),
            Hash::Bcrypt(stored) => {
                let _slot = self.bcrypt_slots.acquire().await;
                let password = password.to_owned();
                smol::unblock(move || bcrypt::verify(password, &stored).unwrap_or(false)).await
            }
        };
        if ok {
            let mut cache = self.cache();
            if cache.len() >= CACHE_SWEEP_AT {
                cache.retain(|_, expiry| *expiry > now);
            }
            cache.insert(key, now + PASSWORD_CACHE_TTL);
        }
        ok
    }

    fn cache(&self) -> std::sync::MutexGuard<'_, HashMap<[u8; 32], Instant>> {
        self.cache.lock().unwrap_or_else(|e| e.into_inner())
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

fn stamp(path: &Path) -> Stamp {
    let m = std::fs::metadata(path).ok()?;
    Some((m.modified().ok()?, m.len()))
}

fn read_users(path: &Path) -> std::io::Result<(Users, Stamp)> {
    let stamp = stamp(path);
    let text = std::fs::read_to_string(path)?;
    let (users, warnings) = parse(&text);
    for w in warnings {
        log::warn!("{}: {w}", path.display());
    }
    Ok((users, stamp))
}

/// Parses htpasswd text into users; lines that cannot be used become warnings (naming the
/// line and user, never the hash).
fn parse(text: &str) -> (Users, Vec<String>) {
    let mut users = Users::new();
    let mut warnings = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let n = n + 1;
        let Some((user, stored)) = line.split_once(':') else {
            warnings.push(format!("line {n}: no ':' between user and hash, skipped"));
            continue;
        };
        if !valid_username(user) {
            warnings.push(format!(
                "line {n}: user name {user:?} may only contain letters, digits and @ . _ -, skipped"
            ));
            continue;
        }
        match parse_hash(stored) {
            Ok(hash) => {
                users.insert(user.to_owned(), hash);
            }
            Err(why) => warnings.push(format!("line {n}: user {user:?}: {why}, skipped")),
        }
    }
    (users, warnings)
}

fn parse_hash(stored: &str) -> Result<Hash, &'static str> {
    use base64::Engine as _;
    if ["$2a$", "$2b$", "$2y$"]
        .iter()
        .any(|p| stored.starts_with(p))
    {
        return Ok(Hash::Bcrypt(stored.to_owned()));
    }
    if let Some(b64) = stored.strip_prefix("{SHA}") {
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(b64)
            .map_err(|_| "malformed {SHA} hash")?;
        return bytes
            .try_into()
            .map(Hash::Sha1)
            .map_err(|_| "malformed {SHA} hash");
    }
    if stored.starts_with('$') {
        return Err("unsupported hash format (use bcrypt: htpasswd -B)");
    }
    Err("plain-text or DES-crypt password, which is not accepted (use bcrypt: htpasswd -B)")
}

/// Letters, digits and `@ . _ -`, so that `user@host` works.
pub(crate) fn valid_username(user: &str) -> bool {
    !user.is_empty()
        && user
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"@._-".contains(&b))
}

/// Compares without an early exit, so timing does not reveal how much of a digest matched.
fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len()
        && std::hint::black_box(a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y))) == 0
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

    #[test]
    fn parses_formats_and_skips_bad_lines() {
        // alice: bcrypt of "secret" (cost 4); bob: {SHA} of "password".
        let text = "\
# comment
alice:$2y$04$z5zmjJMeX1Pv2R5HXgfX/Ok96G6Wg3ZD4b.lSJMiwGbGo0ybhiFxO
bob:{SHA}W6ph5Mm5Pz8GgiULbPgzG37mj9g=
carol:plaintext
dave:abJnggxhB/yWI
bad user:$2y$04$z5zmjJMeX1Pv2R5HXgfX/Ok96G6Wg3ZD4b.lSJMiwGbGo0ybhiFxO
eve@host.example:{SHA}W6ph5Mm5Pz8GgiULbPgzG37mj9g=
nocolon
frank:{SHA}not-base64!
";
        let (users, warnings) = parse(text);
        let mut names: Vec<_> = users.keys().cloned().collect();
        names.sort();
        assert_eq!(names, ["alice", "bob", "eve@host.example"]);
        assert_eq!(warnings.len(), 5, "{warnings:#?}");
        assert!(warnings.iter().any(|w| w.contains("\"carol\"")));
        assert!(
            warnings
                .iter()
                .all(|w| !w.contains("plaintext") && !w.contains("abJngg"))
        );
    }

    #[test]
    fn usernames() {
        for ok in ["alice", "user@host", "a.b_c-d", "X9"] {
            assert!(valid_username(ok), "{ok}");
        }
        for bad in ["", "a b", "a:b", "ä", "a/b", "a\tb"] {
            assert!(!valid_username(bad), "{bad}");
        }
    }

    #[test]
    fn constant_time_compare() {
        assert!(ct_eq(b"abc", b"abc"));
        assert!(!ct_eq(b"abc", b"abd"));
        assert!(!ct_eq(b"abc", b"ab"));
    }
}
