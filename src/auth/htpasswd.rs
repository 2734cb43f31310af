//! The htpasswd file format and its password hashes, with no I/O: text in, users and warnings
//! out; a password and a stored hash in, yes or no out. Shared by the server (`auth/mod.rs`) and
//! the `user` subcommand (`cmd/user.rs`), so both agree on what a valid line is.
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
    kind: Scheme,
    stored: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Scheme {
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
        !matches!(self.kind, Scheme::Sha1(_))
    }

    /// A name for logs and `user list`.
    pub(crate) fn format_name(&self) -> &'static str {
        match self.kind {
            Scheme::Bcrypt => "bcrypt",
            Scheme::Sha1(_) => "SHA-1",
            Scheme::Md5Crypt if self.stored.starts_with("$apr1$") => "apr1-MD5",
            Scheme::Md5Crypt => "md5crypt",
            Scheme::ShaCrypt256 => "SHA-256-crypt",
            Scheme::ShaCrypt512 => "SHA-512-crypt",
        }
    }

    /// Checks a password against the hash; every comparison is constant-time.
    pub(crate) fn verify(&self, password: &[u8]) -> bool {
        match self.kind {
            Scheme::Bcrypt => bcrypt::verify(password, &self.stored).unwrap_or(false),
            Scheme::Sha1(digest) => ct_eq(&Sha1::digest(password), &digest),
            Scheme::Md5Crypt => {
                let Some((magic, salt, digest)) = split_md5_crypt(&self.stored) else {
                    return false;
                };
                ct_eq(&md5_crypt(password, magic, salt), digest.as_bytes())
            }
            Scheme::ShaCrypt256 | Scheme::ShaCrypt512 => {
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
        return hash(Scheme::Bcrypt);
    }
    if let Some(b64) = stored.strip_prefix("{SHA}") {
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(b64)
            .map_err(|_| "malformed {SHA} hash")?;
        let digest = bytes.try_into().map_err(|_| "malformed {SHA} hash")?;
        return hash(Scheme::Sha1(digest));
    }
    if stored.starts_with("$apr1$") || stored.starts_with("$1$") {
        split_md5_crypt(stored).ok_or("malformed $apr1$ (MD5) hash")?;
        return hash(Scheme::Md5Crypt);
    }
    for (prefix, kind) in [("$5$", Scheme::ShaCrypt256), ("$6$", Scheme::ShaCrypt512)] {
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
fn check_sha_crypt(rest: &str, kind: Scheme) -> Result<(), &'static str> {
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
    let digest_len = if kind == Scheme::ShaCrypt256 { 43 } else { 86 };
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

/// The Go server's rule (`^[\p{L}\d@._-]+$`): letters of any script (Unicode general
/// category L, so `jörg` and `дима` work), ASCII digits and `@ . _ -` (so `user@host` works).
/// Nothing else: no space, `:`, `/`, control character, combining mark or other digit.
pub(crate) fn valid_username(user: &str) -> bool {
    !user.is_empty()
        && user.chars().all(|c| {
            c.is_ascii_alphanumeric()
                || "@._-".contains(c)
                || (!c.is_ascii() && letters::is_letter(c))
        })
}

/// Compares without an early exit, so timing does not reveal how much of a digest matched.
pub(crate) fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len()
        && std::hint::black_box(a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y))) == 0
}

/// Unicode general category L (Lu, Ll, Lt, Lm, Lo), as Go's `\p{L}`. Rust's
/// `char::is_alphabetic` is the wider Alphabetic property (it also takes some combining marks,
/// circled letters and Roman numerals, which the Go server refuses), so the table is our own.
mod letters {
    /// Unicode 15.0.0, the version of Go 1.21 and later: every range of category L above
    /// ASCII as `first << 11 | (length - 1)`, ranges longer than 2048 split, sorted. Made
    /// from `UnicodeData.txt` (Debian's `unicode-data`; `<..., First>`/`<..., Last>` pairs are
    /// ranges) by a ten-line script: 708 entries, 2.8 KB.
    const RANGES: &[u32] = &[
        0x00055000, 0x0005A800, 0x0005D000, 0x00060016, 0x0006C01E, 0x0007C1C9, 0x0016300B,
        0x00170004, 0x00176000, 0x00177000, 0x001B8004, 0x001BB001, 0x001BD003, 0x001BF800,
        0x001C3000, 0x001C4002, 0x001C6000, 0x001C7013, 0x001D1852, 0x001FB88A, 0x002450A5,
        0x00298825, 0x002AC800, 0x002B0028, 0x002E801A, 0x002F7803, 0x0031002A, 0x00337001,
        0x00338862, 0x0036A800, 0x00372801, 0x00377001, 0x0037D002, 0x0037F800, 0x00388000,
        0x0038901D, 0x003A6858, 0x003D8800, 0x003E5020, 0x003FA001, 0x003FD000, 0x00400015,
        0x0040D000, 0x00412000, 0x00414000, 0x00420018, 0x0043000A, 0x00438017, 0x00444805,
        0x00450029, 0x00482035, 0x0049E800, 0x004A8000, 0x004AC009, 0x004B880F, 0x004C2807,
        0x004C7801, 0x004C9815, 0x004D5006, 0x004D9000, 0x004DB003, 0x004DE800, 0x004E7000,
        0x004EE001, 0x004EF802, 0x004F8001, 0x004FE000, 0x00502805, 0x00507801, 0x00509815,
        0x00515006, 0x00519001, 0x0051A801, 0x0051C001, 0x0052C803, 0x0052F000, 0x00539002,
        0x00542808, 0x00547802, 0x00549815, 0x00555006, 0x00559001, 0x0055A804, 0x0055E800,
        0x00568000, 0x00570001, 0x0057C800, 0x00582807, 0x00587801, 0x00589815, 0x00595006,
        0x00599001, 0x0059A804, 0x0059E800, 0x005AE001, 0x005AF802, 0x005B8800, 0x005C1800,
        0x005C2805, 0x005C7002, 0x005C9003, 0x005CC801, 0x005CE000, 0x005CF001, 0x005D1801,
        0x005D4002, 0x005D700B, 0x005E8000, 0x00602807, 0x00607002, 0x00609016, 0x0061500F,
        0x0061E800, 0x0062C002, 0x0062E800, 0x00630001, 0x00640000, 0x00642807, 0x00647002,
        0x00649016, 0x00655009, 0x0065A804, 0x0065E800, 0x0066E801, 0x00670001, 0x00678801,
        0x00682008, 0x00687002, 0x00689028, 0x0069E800, 0x006A7000, 0x006AA002, 0x006AF802,
        0x006BD005, 0x006C2811, 0x006CD017, 0x006D9808, 0x006DE800, 0x006E0006, 0x0070082F,
        0x00719001, 0x00720006, 0x00740801, 0x00742000, 0x00743004, 0x00746017, 0x00752800,
        0x00753809, 0x00759001, 0x0075E800, 0x00760004, 0x00763000, 0x0076E003, 0x00780000,
        0x007A0007, 0x007A4823, 0x007C4004, 0x0080002A, 0x0081F800, 0x00828005, 0x0082D003,
        0x00830800, 0x00832801, 0x00837002, 0x0083A80C, 0x00847000, 0x00850025, 0x00863800,
        0x00866800, 0x0086802A, 0x0087E14C, 0x00925003, 0x00928006, 0x0092C000, 0x0092D003,
        0x00930028, 0x00945003, 0x00948020, 0x00959003, 0x0095C006, 0x00960000, 0x00961003,
        0x0096400E, 0x0096C038, 0x00989003, 0x0098C042, 0x009C000F, 0x009D0055, 0x009FC005,
        0x00A00A6B, 0x00B37810, 0x00B40819, 0x00B5004A, 0x00B78807, 0x00B80011, 0x00B8F812,
        0x00BA0011, 0x00BB000C, 0x00BB7002, 0x00BC0033, 0x00BEB800, 0x00BEE000, 0x00C10058,
        0x00C40004, 0x00C43821, 0x00C55000, 0x00C58045, 0x00C8001E, 0x00CA801D, 0x00CB8004,
        0x00CC002B, 0x00CD8019, 0x00D00016, 0x00D10034, 0x00D53800, 0x00D8282E, 0x00DA2807,
        0x00DC181D, 0x00DD7001, 0x00DDD02B, 0x00E00023, 0x00E26802, 0x00E2D023, 0x00E40008,
        0x00E4802A, 0x00E5E802, 0x00E74803, 0x00E77005, 0x00E7A801, 0x00E7D000, 0x00E800BF,
        0x00F00115, 0x00F8C005, 0x00F90025, 0x00FA4005, 0x00FA8007, 0x00FAC800, 0x00FAD800,
        0x00FAE800, 0x00FAF81E, 0x00FC0034, 0x00FDB006, 0x00FDF000, 0x00FE1002, 0x00FE3006,
        0x00FE8003, 0x00FEB005, 0x00FF000C, 0x00FF9002, 0x00FFB006, 0x01038800, 0x0103F800,
        0x0104800C, 0x01081000, 0x01083800, 0x01085009, 0x0108A800, 0x0108C804, 0x01092000,
        0x01093000, 0x01094000, 0x01095003, 0x0109780A, 0x0109E003, 0x010A2804, 0x010A7000,
        0x010C1801, 0x016000E4, 0x01675803, 0x01679001, 0x01680025, 0x01693800, 0x01696800,
        0x01698037, 0x016B7800, 0x016C0016, 0x016D0006, 0x016D4006, 0x016D8006, 0x016DC006,
        0x016E0006, 0x016E4006, 0x016E8006, 0x016EC006, 0x01717800, 0x01802801, 0x01818804,
        0x0181D801, 0x01820855, 0x0184E802, 0x01850859, 0x0187E003, 0x0188282A, 0x0189885D,
        0x018D001F, 0x018F800F, 0x01A007FF, 0x01E007FF, 0x022007FF, 0x026001BF, 0x027007FF,
        0x02B007FF, 0x02F007FF, 0x033007FF, 0x037007FF, 0x03B007FF, 0x03F007FF, 0x043007FF,
        0x047007FF, 0x04B007FF, 0x04F0068C, 0x0526802D, 0x0528010C, 0x0530800F, 0x05315001,
        0x0532002E, 0x0533F81E, 0x05350045, 0x0538B808, 0x05391066, 0x053C583F, 0x053E8001,
        0x053E9800, 0x053EA804, 0x053F900F, 0x05401802, 0x05403803, 0x05406016, 0x05420033,
        0x05441031, 0x05479005, 0x0547D800, 0x0547E801, 0x0548501B, 0x05498016, 0x054B001C,
        0x054C202E, 0x054E7800, 0x054F0004, 0x054F3009, 0x054FD004, 0x05500028, 0x05520002,
        0x05522007, 0x05530016, 0x0553D000, 0x0553F031, 0x05558800, 0x0555A801, 0x0555C804,
        0x05560000, 0x05561000, 0x0556D802, 0x0557000A, 0x05579002, 0x05580805, 0x05584805,
        0x05588805, 0x05590006, 0x05594006, 0x0559802A, 0x055AE00D, 0x055B8072, 0x056007FF,
        0x05A007FF, 0x05E007FF, 0x062007FF, 0x066007FF, 0x06A003A3, 0x06BD8016, 0x06BE5830,
        0x07C8016D, 0x07D38069, 0x07D80006, 0x07D89804, 0x07D8E800, 0x07D8F809, 0x07D9500C,
        0x07D9C004, 0x07D9F000, 0x07DA0001, 0x07DA1801, 0x07DA306B, 0x07DE996A, 0x07EA803F,
        0x07EC9035, 0x07EF800B, 0x07F38004, 0x07F3B086, 0x07F90819, 0x07FA0819, 0x07FB3058,
        0x07FE1005, 0x07FE5005, 0x07FE9005, 0x07FED002, 0x0800000B, 0x08006819, 0x08014012,
        0x0801E001, 0x0801F80E, 0x0802800D, 0x0804007A, 0x0814001C, 0x08150030, 0x0818001F,
        0x08196813, 0x081A1007, 0x081A8025, 0x081C001D, 0x081D0023, 0x081E4007, 0x0820009D,
        0x08258023, 0x0826C023, 0x08280027, 0x08298033, 0x082B800A, 0x082BE00E, 0x082C6006,
        0x082CA001, 0x082CB80A, 0x082D180E, 0x082D9806, 0x082DD801, 0x08300136, 0x083A0015,
        0x083B0007, 0x083C0005, 0x083C3829, 0x083D9008, 0x08400005, 0x08404000, 0x0840502B,
        0x0841B801, 0x0841E000, 0x0841F816, 0x08430016, 0x0844001E, 0x08470012, 0x0847A001,
        0x08480015, 0x08490019, 0x084C0037, 0x084DF001, 0x08500000, 0x08508003, 0x0850A802,
        0x0850C81C, 0x0853001C, 0x0854001C, 0x08560007, 0x0856481B, 0x08580035, 0x085A0015,
        0x085B0012, 0x085C0011, 0x08600048, 0x08640032, 0x08660032, 0x08680023, 0x08740029,
        0x08758001, 0x0878001C, 0x08793800, 0x08798015, 0x087B8011, 0x087D8014, 0x087F0016,
        0x08801834, 0x08838801, 0x0883A800, 0x0884182C, 0x08868018, 0x08881823, 0x088A2000,
        0x088A3800, 0x088A8022, 0x088BB000, 0x088C182F, 0x088E0803, 0x088ED000, 0x088EE000,
        0x08900011, 0x08909818, 0x0891F801, 0x08940006, 0x08944000, 0x08945003, 0x0894780E,
        0x0894F809, 0x0895802E, 0x08982807, 0x08987801, 0x08989815, 0x08995006, 0x08999001,
        0x0899A804, 0x0899E800, 0x089A8000, 0x089AE804, 0x08A00034, 0x08A23803, 0x08A2F802,
        0x08A4002F, 0x08A62001, 0x08A63800, 0x08AC002E, 0x08AEC003, 0x08B0002F, 0x08B22000,
        0x08B4002A, 0x08B5C000, 0x08B8001A, 0x08BA0006, 0x08C0002B, 0x08C5003F, 0x08C7F807,
        0x08C84800, 0x08C86007, 0x08C8A801, 0x08C8C017, 0x08C9F800, 0x08CA0800, 0x08CD0007,
        0x08CD5026, 0x08CF0800, 0x08CF1800, 0x08D00000, 0x08D05827, 0x08D1D000, 0x08D28000,
        0x08D2E02D, 0x08D4E800, 0x08D58048, 0x08E00008, 0x08E05024, 0x08E20000, 0x08E3901D,
        0x08E80006, 0x08E84001, 0x08E85825, 0x08EA3000, 0x08EB0005, 0x08EB3801, 0x08EB501F,
        0x08ECC000, 0x08F70012, 0x08F81000, 0x08F8200C, 0x08F89021, 0x08FD8000, 0x09000399,
        0x092400C3, 0x097C8060, 0x0980042F, 0x09A20805, 0x0A200246, 0x0B400238, 0x0B52001E,
        0x0B53804E, 0x0B56801D, 0x0B58002F, 0x0B5A0003, 0x0B5B1814, 0x0B5BE812, 0x0B72003F,
        0x0B78004A, 0x0B7A8000, 0x0B7C980C, 0x0B7F0001, 0x0B7F1800, 0x0B8007FF, 0x0BC007FF,
        0x0C0007F7, 0x0C4004D5, 0x0C680008, 0x0D7F8003, 0x0D7FA806, 0x0D7FE801, 0x0D800122,
        0x0D899000, 0x0D8A8002, 0x0D8AA800, 0x0D8B2003, 0x0D8B818B, 0x0DE0006A, 0x0DE3800C,
        0x0DE40008, 0x0DE48009, 0x0EA00054, 0x0EA2B046, 0x0EA4F001, 0x0EA51000, 0x0EA52801,
        0x0EA54803, 0x0EA5700B, 0x0EA5D800, 0x0EA5E806, 0x0EA62840, 0x0EA83803, 0x0EA86807,
        0x0EA8B006, 0x0EA8F01B, 0x0EA9D803, 0x0EAA0004, 0x0EAA3000, 0x0EAA5006, 0x0EAA9153,
        0x0EB54018, 0x0EB61018, 0x0EB6E01E, 0x0EB7E018, 0x0EB8B01E, 0x0EB9B018, 0x0EBA801E,
        0x0EBB8018, 0x0EBC501E, 0x0EBD5018, 0x0EBE2007, 0x0EF8001E, 0x0EF92805, 0x0F01803D,
        0x0F08002C, 0x0F09B806, 0x0F0A7000, 0x0F14801D, 0x0F16002B, 0x0F26801B, 0x0F3F0006,
        0x0F3F4003, 0x0F3F6801, 0x0F3F800E, 0x0F4000C4, 0x0F480043, 0x0F4A5800, 0x0F700003,
        0x0F70281A, 0x0F710801, 0x0F712000, 0x0F713800, 0x0F714809, 0x0F71A003, 0x0F71C800,
        0x0F71D800, 0x0F721000, 0x0F723800, 0x0F724800, 0x0F725800, 0x0F726802, 0x0F728801,
        0x0F72A000, 0x0F72B800, 0x0F72C800, 0x0F72D800, 0x0F72E800, 0x0F72F800, 0x0F730801,
        0x0F732000, 0x0F733803, 0x0F736006, 0x0F73A003, 0x0F73C803, 0x0F73F000, 0x0F740009,
        0x0F745810, 0x0F750802, 0x0F752804, 0x0F755810, 0x100007FF, 0x104007FF, 0x108007FF,
        0x10C007FF, 0x110007FF, 0x114007FF, 0x118007FF, 0x11C007FF, 0x120007FF, 0x124007FF,
        0x128007FF, 0x12C007FF, 0x130007FF, 0x134007FF, 0x138007FF, 0x13C007FF, 0x140007FF,
        0x144007FF, 0x148007FF, 0x14C007FF, 0x150006DF, 0x153807FF, 0x157807FF, 0x15B80039,
        0x15BA00DD, 0x15C107FF, 0x160107FF, 0x16410681, 0x167587FF, 0x16B587FF, 0x16F587FF,
        0x17358530, 0x17C0021D, 0x180007FF, 0x184007FF, 0x1880034A, 0x189A87FF, 0x18DA87FF,
        0x191A805F,
    ];

    pub(super) fn is_letter(c: char) -> bool {
        let c = u32::from(c);
        // The last range starting at or below `c`.
        let i = RANGES.partition_point(|&r| r >> 11 <= c);
        i > 0 && c - (RANGES[i - 1] >> 11) <= RANGES[i - 1] & 0x7ff
    }
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
        // What the Go server's ^[\p{L}\d@._-]+$ takes: letters of every script (including
        // ª and º, category Lo; CJK from the start and end of its big ranges; Unicode 15.0
        // CJK extension H), ASCII digits.
        for ok in [
            "alice",
            "user@host",
            "a.b_c-d",
            "X9",
            "jörg",
            "ä",
            "Ærøskøbing",
            "дима",
            "χρήστης",
            "山田",
            "ª",
            "º",
            "\u{4E00}",
            "\u{9FFF}",
            "\u{31350}",
            "\u{323AF}",
            "ǅ",
            "ʰ",
        ] {
            assert!(valid_username(ok), "{ok}");
        }
        // ...and what it refuses: no other digits (Arabic-Indic, superscript), no combining
        // marks (a decomposed ö), no Roman numerals or circled letters (which Rust's
        // is_alphabetic would take), no symbols, spaces, separators or controls.
        for bad in [
            "",
            "a b",
            "a:b",
            "a/b",
            "a\tb",
            "jo\u{308}rg",
            "\u{663}",
            "²",
            "Ⅻ",
            "Ⓐ",
            "€",
            "a\u{a0}b",
            "a\u{200b}b",
            "\u{fffd}",
            "a+b",
            "\u{4DC0}",
            "\u{323B0}",
            "\u{E000}",
        ] {
            assert!(!valid_username(bad), "{bad}");
        }
        // A check of the table against the standard library: every letter is Alphabetic
        // (the converse does not hold, see above), and the count is Unicode 15.0's.
        for c in (0x80..=0x10FFFFu32).filter_map(char::from_u32) {
            if letters::is_letter(c) {
                assert!(c.is_alphabetic(), "{c:?} is L but not Alphabetic");
            }
        }
        let count = (0x80..=0x10FFFFu32)
            .filter_map(char::from_u32)
            .filter(|&c| letters::is_letter(c))
            .count();
        // 136,104 letters in Unicode 15.0, 52 of them ASCII.
        assert_eq!(count, 136_052);
    }

    #[test]
    fn constant_time_compare() {
        assert!(ct_eq(b"abc", b"abc"));
        assert!(!ct_eq(b"abc", b"abd"));
        assert!(!ct_eq(b"abc", b"ab"));
    }
}
