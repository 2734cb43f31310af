//! The htpasswd file format and its password hashes, with no I/O: text in, users and warnings
//! out; a password and a stored hash in, yes or no out. Shared by the server (`auth.rs`) and
//! the `user` subcommand (`usercmd.rs`), so both agree on what a valid line is.
//!
//! Formats: bcrypt (`htpasswd -B`, what the Go server accepts), `{SHA}` (`htpasswd -s`), and
//! beyond the Go server Apache MD5 `$apr1$` (`htpasswd -m`, Apache's default and what Kopia's
//! docs show; `$1$` md5crypt is the same algorithm), SHA-256-crypt `$5$` and SHA-512-crypt
//! `$6$` (`htpasswd -2` / `-5`). Plain-text and DES-crypt lines are refused: they are skipped
//! with a warning that names the user, never the hash.

use md5::Md5;
use sha1::Sha1;
use sha2::Digest;
use std::collections::HashMap;

/// A stored password hash: its format and the stored text (mixed into cache keys, never
/// logged: `Debug` shows only the format).
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct Hash {
    kind: Kind,
    stored: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Bcrypt,
    /// The 20 digest bytes of `{SHA}base64(sha1(password))`.
    Sha1([u8; 20]),
    /// `$apr1$` or `$1$`: the magic is part of the stored text.
    Md5Crypt,
    ShaCrypt256,
    ShaCrypt512,
}

impl std::fmt::Debug for Hash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Hash({})", self.format_name())
    }
}

pub(crate) type Users = HashMap<String, Hash>;

/// Characters of the crypt(3) base64 alphabet, in value order.
const CRYPT_B64: &[u8; 64] = b"./0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// glibc clamps SHA-crypt rounds to this range; a stored hash outside it was not written by
/// any tool we know, and verifying it would silently never match.
const SHA_CRYPT_ROUNDS: std::ops::RangeInclusive<u32> = 1_000..=999_999_999;

impl Hash {
    /// The stored text, for cache keys.
    pub(crate) fn stored(&self) -> &[u8] {
        self.stored.as_bytes()
    }

    /// Whether a check costs more than a microsecond or so and belongs on the blocking pool
    /// (everything but `{SHA}`: apr1 runs 1000 MD5s, SHA-crypt 5000+ SHA-2s, bcrypt 2^cost).
    pub(crate) fn is_slow(&self) -> bool {
        !matches!(self.kind, Kind::Sha1(_))
    }

    /// A name for logs and `user list`.
    pub(crate) fn format_name(&self) -> &'static str {
        match self.kind {
            Kind::Bcrypt => "bcrypt",
            Kind::Sha1(_) => "SHA-1",
            Kind::Md5Crypt if self.stored.starts_with("$apr1$") => "apr1-MD5",
            Kind::Md5Crypt => "md5crypt",
            Kind::ShaCrypt256 => "SHA-256-crypt",
            Kind::ShaCrypt512 => "SHA-512-crypt",
        }
    }

    /// Checks a password against the hash; every comparison is constant-time.
    pub(crate) fn verify(&self, password: &[u8]) -> bool {
        match self.kind {
            Kind::Bcrypt => bcrypt::verify(password, &self.stored).unwrap_or(false),
            Kind::Sha1(digest) => ct_eq(&Sha1::digest(password), &digest),
            Kind::Md5Crypt => {
                let Some((magic, salt, digest)) = split_md5_crypt(&self.stored) else {
                    return false;
                };
                ct_eq(&md5_crypt(password, magic, salt), digest.as_bytes())
            }
            Kind::ShaCrypt256 | Kind::ShaCrypt512 => {
                use sha_crypt::PasswordVerifier as _;
                sha_crypt::ShaCrypt::default()
                    .verify_password(password, self.stored.as_str())
                    .is_ok()
            }
        }
    }

    /// A bcrypt hash of a new password (for `user add`).
    pub(crate) fn bcrypt(password: &str, cost: u32) -> Result<Hash, String> {
        let stored = bcrypt::hash(password, cost).map_err(|e| format!("bcrypt failed: {e}"))?;
        parse_hash(&stored).map_err(str::to_owned)
    }
}

/// The user named by an htpasswd line, if it is not blank or a comment (valid or not).
pub(crate) fn line_user(line: &str) -> Option<&str> {
    let line = line.trim();
    if line.is_empty() || line.starts_with('#') {
        return None;
    }
    Some(line.split_once(':').map_or(line, |(u, _)| u))
}

/// Parses htpasswd text into users; lines that cannot be used become warnings (naming the
/// line and user, never the hash). As in the Go server, a later line for the same user wins.
pub(crate) fn parse(text: &str) -> (Users, Vec<String>) {
    let mut users = Users::new();
    let mut warnings = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line_user(line).is_none() {
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
                if users.insert(user.to_owned(), hash).is_some() {
                    warnings.push(format!(
                        "line {n}: user {user:?} appears again; this later line is used"
                    ));
                }
            }
            Err(why) => warnings.push(format!("line {n}: user {user:?}: {why}, skipped")),
        }
    }
    (users, warnings)
}

fn parse_hash(stored: &str) -> Result<Hash, &'static str> {
    use base64::Engine as _;
    let hash = |kind| {
        Ok(Hash {
            kind,
            stored: stored.to_owned(),
        })
    };
    if ["$2a$", "$2b$", "$2y$"]
        .iter()
        .any(|p| stored.starts_with(p))
    {
        return hash(Kind::Bcrypt);
    }
    if let Some(b64) = stored.strip_prefix("{SHA}") {
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(b64)
            .map_err(|_| "malformed {SHA} hash")?;
        let digest = bytes.try_into().map_err(|_| "malformed {SHA} hash")?;
        return hash(Kind::Sha1(digest));
    }
    if stored.starts_with("$apr1$") || stored.starts_with("$1$") {
        split_md5_crypt(stored).ok_or("malformed $apr1$ (MD5) hash")?;
        return hash(Kind::Md5Crypt);
    }
    for (prefix, kind) in [("$5$", Kind::ShaCrypt256), ("$6$", Kind::ShaCrypt512)] {
        if let Some(rest) = stored.strip_prefix(prefix) {
            check_sha_crypt(rest, kind)?;
            return hash(kind);
        }
    }
    if stored.starts_with('$') {
        return Err("unsupported hash format (use bcrypt: htpasswd -B)");
    }
    Err("plain-text or DES-crypt password, which is not accepted (use bcrypt: htpasswd -B)")
}

/// `[rounds=N$]salt$digest` after `$5$`/`$6$`, as glibc writes it.
fn check_sha_crypt(rest: &str, kind: Kind) -> Result<(), &'static str> {
    let malformed = "malformed SHA-crypt hash";
    let fields: Vec<&str> = rest.split('$').collect();
    let (salt, digest) = match fields[..] {
        [salt, digest] => (salt, digest),
        [rounds, salt, digest] => {
            let n: u32 = rounds
                .strip_prefix("rounds=")
                .and_then(|n| n.parse().ok())
                .ok_or(malformed)?;
            if !SHA_CRYPT_ROUNDS.contains(&n) {
                return Err("SHA-crypt rounds outside 1000..=999999999");
            }
            (salt, digest)
        }
        _ => return Err(malformed),
    };
    let digest_len = if kind == Kind::ShaCrypt256 { 43 } else { 86 };
    if salt.is_empty() || salt.len() > 16 || digest.len() != digest_len || !is_crypt_b64(digest) {
        return Err(malformed);
    }
    Ok(())
}

/// `$apr1$salt$digest` or `$1$salt$digest` -> (magic, salt, digest), checked for shape.
fn split_md5_crypt(stored: &str) -> Option<(&str, &str, &str)> {
    let magic = if stored.starts_with("$apr1$") {
        "$apr1$"
    } else {
        "$1$"
    };
    let (salt, digest) = stored.strip_prefix(magic)?.split_once('$')?;
    let ok = !salt.is_empty() && salt.len() <= 8 && digest.len() == 22 && is_crypt_b64(digest);
    ok.then_some((magic, salt, digest))
}

fn is_crypt_b64(s: &str) -> bool {
    s.bytes().all(|b| CRYPT_B64.contains(&b))
}

/// Poul-Henning Kamp's md5crypt, as Apache's `apr_md5_encode` runs it with magic `$apr1$`
/// (and FreeBSD/glibc with `$1$`): returns the 22-character encoded digest.
fn md5_crypt(password: &[u8], magic: &str, salt: &str) -> [u8; 22] {
    let (magic, salt) = (magic.as_bytes(), salt.as_bytes());
    let alternate = Md5::new()
        .chain_update(password)
        .chain_update(salt)
        .chain_update(password)
        .finalize();
    let mut ctx = Md5::new_with_prefix(password);
    ctx.update(magic);
    ctx.update(salt);
    for chunk in password.chunks(16) {
        ctx.update(&alternate[..chunk.len()]);
    }
    // The famous quirk: one byte per bit of the length, a NUL for a 1 bit and the first
    // character of the password for a 0 bit (never reached for an empty password).
    let mut bits = password.len();
    while bits > 0 {
        ctx.update(if bits & 1 == 1 {
            &[0u8][..]
        } else {
            &password[..1]
        });
        bits >>= 1;
    }
    let mut digest: [u8; 16] = ctx.finalize().into();
    for round in 0..1000 {
        let mut ctx = Md5::new();
        if round % 2 == 1 {
            ctx.update(password);
        } else {
            ctx.update(digest);
        }
        if round % 3 != 0 {
            ctx.update(salt);
        }
        if round % 7 != 0 {
            ctx.update(password);
        }
        if round % 2 == 1 {
            ctx.update(digest);
        } else {
            ctx.update(password);
        }
        digest = ctx.finalize().into();
    }
    let mut out = [0u8; 22];
    let groups = [(0, 6, 12), (1, 7, 13), (2, 8, 14), (3, 9, 15), (4, 10, 5)];
    let mut pos = 0;
    let mut push = |mut v: u32, chars: usize| {
        for _ in 0..chars {
            out[pos] = CRYPT_B64[(v & 0x3f) as usize];
            pos += 1;
            v >>= 6;
        }
    };
    for (a, b, c) in groups {
        push(
            u32::from(digest[a]) << 16 | u32::from(digest[b]) << 8 | u32::from(digest[c]),
            4,
        );
    }
    push(u32::from(digest[11]), 2);
    out
}

/// Letters, digits and `@ . _ -`, so that `user@host` works.
pub(crate) fn valid_username(user: &str) -> bool {
    !user.is_empty()
        && user
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"@._-".contains(&b))
}

/// Compares without an early exit, so timing does not reveal how much of a digest matched.
pub(crate) fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len()
        && std::hint::black_box(a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y))) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Lines written by Apache's `htpasswd -nb FLAG alice 'pässwörd:x'` (apache2-utils 2.4)
    /// and `openssl passwd`, so the formats are checked against the real tools.
    const VECTORS: &[(&str, &str, &str)] = &[
        (
            "bcrypt",
            "$2y$05$MQsllIbin1pWeFBiQ5VUR./86elpWZHQgzNFWZEo2fBH8RN.44SlK",
            "pässwörd:x",
        ),
        ("SHA-1", "{SHA}JZAz1BSlEF10vQdmBV23Aw62SJ4=", "pässwörd:x"),
        (
            "apr1-MD5",
            "$apr1$xk6uYQYd$rJEANQaw7pLaK3rI4nxbD/",
            "pässwörd:x",
        ),
        (
            "apr1-MD5",
            "$apr1$abcdefgh$h9FWgUz3n9YxylKLlR5SQ/",
            "secret",
        ),
        ("md5crypt", "$1$abcdefgh$cHJi5PXp/ki/ktXzqlk6I1", "secret"),
        (
            "SHA-256-crypt",
            "$5$d5intYdE0CvuMWVf$UoZMsxsjPTDs1lMdqgkD9fKXWbihsvoT2TpV6CwP219",
            "pässwörd:x",
        ),
        (
            "SHA-256-crypt",
            "$5$rounds=1000$c.siFVEfYckzWIJV$37XuN7eEa/I28DB0yrcD9NKZE0JOWh3L8w4t.nm2Nk9",
            "pässwörd:x",
        ),
        (
            "SHA-256-crypt",
            "$5$saltsalt$0IyaXrmV7.sGNS6tirgqHLqX/G.FBvgkYA.lpPdS5sA",
            "secret",
        ),
        (
            "SHA-512-crypt",
            "$6$jFEGAx/b4Y3icXEd$1SsAVuvewPj6bRbjaPQdKzy/PhR6M/P.RaVCrw7WJd6wYoWOBpKDqpi9ok5CgsTPy9ip.tCmCDHQByqwN9TYG0",
            "pässwörd:x",
        ),
        (
            "SHA-512-crypt",
            "$6$rounds=20000$nzWQ6T8HhhAXRREw$fyBYFNuD1T9zi0U3Mh1y/3QWw3xVPBjwLU8FjsutTzSmA0qezHTtCPC5dzksAehUbINNR73/cGkj8AnQy7Hm60",
            "pässwörd:x",
        ),
    ];

    #[test]
    fn every_format_against_real_tool_output() {
        for (format, stored, password) in VECTORS {
            let hash = parse_hash(stored).unwrap_or_else(|e| panic!("{stored}: {e}"));
            assert_eq!(hash.format_name(), *format);
            assert!(hash.verify(password.as_bytes()), "{stored}");
            assert!(!hash.verify(b"wrong"), "{stored}");
            assert!(!hash.verify(b""), "{stored}");
            // One character off, and the password with a byte more.
            let mut off = password.as_bytes().to_vec();
            off[0] ^= 1;
            assert!(!hash.verify(&off), "{stored}");
            assert!(!hash.verify(format!("{password}x").as_bytes()), "{stored}");
        }
    }

    #[test]
    fn md5_crypt_edge_lengths() {
        // openssl passwd -apr1 -salt s "" and a 40-character password (more than two
        // 16-byte chunks of the alternate digest).
        let empty = parse_hash("$apr1$s$e2aCb9PLCjZ2t55SoAxXn.").unwrap();
        assert!(empty.verify(b""));
        let long = parse_hash("$apr1$12345678$g7mwQfxy1n1W6s22hSC070").unwrap();
        assert!(long.verify(b"0123456789012345678901234567890123456789"));
    }

    #[test]
    fn malformed_hashes_are_refused() {
        for bad in [
            "$apr1$$rJEANQaw7pLaK3rI4nxbD/",
            "$apr1$toolongsalt$rJEANQaw7pLaK3rI4nxbD/",
            "$apr1$xk6uYQYd$short",
            "$apr1$xk6uYQYd",
            "$5$salt$short",
            "$5$rounds=999$c.siFVEfYckzWIJV$37XuN7eEa/I28DB0yrcD9NKZE0JOWh3L8w4t.nm2Nk9",
            "$5$rounds=x$c.siFVEfYckzWIJV$37XuN7eEa/I28DB0yrcD9NKZE0JOWh3L8w4t.nm2Nk9",
            "$5$a$b$c$d",
            "$6$d5intYdE0CvuMWVf$UoZMsxsjPTDs1lMdqgkD9fKXWbihsvoT2TpV6CwP219",
            "$argon2id$v=19$m=65536,t=3,p=4$c2FsdA$aGFzaA",
            "{SHA}short",
            "plaintext",
            "abJnggxhB/yWI",
            "",
        ] {
            assert!(parse_hash(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn parses_formats_and_skips_bad_lines() {
        let text = "\
# comment
alice:$2y$05$MQsllIbin1pWeFBiQ5VUR./86elpWZHQgzNFWZEo2fBH8RN.44SlK
bob:{SHA}W6ph5Mm5Pz8GgiULbPgzG37mj9g=
carol:plaintext
dave:abJnggxhB/yWI
bad user:$apr1$xk6uYQYd$rJEANQaw7pLaK3rI4nxbD/
eve@host.example:$apr1$xk6uYQYd$rJEANQaw7pLaK3rI4nxbD/
nocolon
frank:{SHA}not-base64!
  
bob:$1$abcdefgh$cHJi5PXp/ki/ktXzqlk6I1
";
        let (users, warnings) = parse(text);
        let mut names: Vec<_> = users.keys().cloned().collect();
        names.sort();
        assert_eq!(names, ["alice", "bob", "eve@host.example"]);
        assert_eq!(
            users["bob"].format_name(),
            "md5crypt",
            "a later line wins, as in Go"
        );
        assert_eq!(warnings.len(), 6, "{warnings:#?}");
        assert!(warnings.iter().any(|w| w.contains("\"carol\"")));
        assert!(warnings.iter().any(|w| w.contains("\"dave\"")));
        for w in &warnings {
            for secret in ["plaintext", "abJngg", "rJEANQ", "not-base64", "W6ph5"] {
                assert!(!w.contains(secret), "{w}");
            }
        }
    }

    #[test]
    fn debug_never_shows_the_hash() {
        let hash = parse_hash("{SHA}W6ph5Mm5Pz8GgiULbPgzG37mj9g=").unwrap();
        assert_eq!(format!("{hash:?}"), "Hash(SHA-1)");
    }

    #[test]
    fn new_bcrypt_hashes_verify() {
        let hash = Hash::bcrypt("s3cret", 4).unwrap();
        assert_eq!(hash.format_name(), "bcrypt");
        assert!(hash.verify(b"s3cret") && !hash.verify(b"s3cre"));
    }

    #[test]
    fn line_users() {
        assert_eq!(line_user("alice:$2y$..."), Some("alice"));
        assert_eq!(line_user("  # alice:x"), None);
        assert_eq!(line_user("   "), None);
        assert_eq!(line_user("nocolon"), Some("nocolon"));
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
