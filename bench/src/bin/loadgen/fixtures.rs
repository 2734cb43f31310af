//! Fixtures

use super::*;

pub(crate) struct Pack {
    pub(crate) id: String,
    pub(crate) data: Vec<u8>,
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().fold(String::with_capacity(64), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

pub(crate) fn make_packs(count: usize, size: usize) -> Vec<Pack> {
    let mut rng = fastrand::Rng::with_seed(0x5e57_0007);
    (0..count)
        .map(|_| {
            let mut data = vec![0u8; size];
            rng.fill(&mut data);
            Pack {
                id: hex(&Sha256::digest(&data)),
                data,
            }
        })
        .collect()
}

/// A repository with `n` objects under data/xx/, created directly on disk. Files are sparse
/// (sizes 1..4096 via ftruncate) so creating 100 000 of them takes seconds, not minutes.
pub(crate) fn make_big_repo(root: &Path, n: usize) -> io::Result<u64> {
    let repo = root.join(REPO.trim_start_matches('/'));
    for kind in ["keys", "locks", "snapshots", "index"] {
        fs::create_dir_all(repo.join(kind))?;
    }
    for i in 0..=255u8 {
        fs::create_dir_all(repo.join("data").join(format!("{i:02x}")))?;
    }
    fs::write(repo.join("config"), b"loadgen config")?;
    let mut total = 14;
    for i in 0..n {
        let id = hex(&Sha256::digest((i as u64).to_le_bytes()));
        let size = (i % 4096) as u64 + 1;
        let f = File::create(repo.join("data").join(&id[..2]).join(&id))?;
        f.set_len(size)?;
        total += size;
    }
    Ok(total)
}

/// An htpasswd file with one bcrypt cost-10 line, as `htpasswd -B -C 10` writes it (the
/// bcrypt crate is the fallback where apache2-utils is not installed).
pub(crate) fn write_htpasswd(path: &Path) -> Result<(), String> {
    let made = Command::new("htpasswd")
        .args(["-B", "-C", "10", "-b", "-c"])
        .arg(path)
        .args([USER, PASSWORD])
        .stderr(Stdio::null())
        .status();
    if made.is_ok_and(|s| s.success()) {
        return Ok(());
    }
    let hash = bcrypt::hash(PASSWORD, 10).map_err(|e| e.to_string())?;
    fs::write(path, format!("{USER}:{hash}\n")).map_err(|e| e.to_string())
}

pub(crate) struct Dirs {
    pub(crate) base: PathBuf,
    pub(crate) n: usize,
}

impl Dirs {
    pub(crate) fn fresh(&mut self, what: &str) -> Result<PathBuf, String> {
        self.n += 1;
        let d = self.base.join(format!("{}-{what}", self.n));
        fs::create_dir_all(&d).map_err(|e| format!("cannot create {}: {e}", d.display()))?;
        Ok(d)
    }
}
