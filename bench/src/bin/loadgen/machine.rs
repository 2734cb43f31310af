//! The machine limit

use super::*;

/// One reading of the machine limit, taken right before an upload round: the machine is
/// shared and noisy, so a limit measured minutes apart from the upload means little.
#[derive(Clone, Copy)]
pub(crate) struct LimitSample {
    /// Single-core SHA-256, MiB/s.
    pub(crate) sha: f64,
    /// SHA-256 on all busy cores at once, MiB/s (what the cores really give right now).
    pub(crate) sha_parallel: f64,
    /// One stream of one round's bytes, then fsync, MiB/s.
    pub(crate) write: f64,
    /// The upload's own pattern: C files of one pack each at once, each fsynced, MiB/s.
    pub(crate) write_parallel: f64,
}

pub(crate) struct Machine {
    pub(crate) cores: usize,
    pub(crate) busy: usize,
    pub(crate) sha_backend: &'static str,
    pub(crate) dir: PathBuf,
    pub(crate) samples: Vec<LimitSample>,
}

/// What sha2 0.11 picks at run time on this CPU (it uses the same cpuid / hwcap tests).
pub(crate) fn sha_backend() -> &'static str {
    #[cfg(any(target_arch = "x86", target_arch = "x86_64"))]
    let hw =
        std::arch::is_x86_feature_detected!("sha") && std::arch::is_x86_feature_detected!("sse4.1");
    #[cfg(target_arch = "aarch64")]
    let hw = std::arch::is_aarch64_feature_detected!("sha2");
    #[cfg(not(any(target_arch = "x86", target_arch = "x86_64", target_arch = "aarch64")))]
    let hw = false;
    match (hw, cfg!(any(target_arch = "x86", target_arch = "x86_64"))) {
        (true, true) => "SHA-NI",
        (true, false) => "ARMv8 SHA2",
        (false, _) => "soft",
    }
}

/// SHA-256 over `parts` in 128 KiB updates, as the server hashes bodies; MiB/s.
pub(crate) fn sha_once(parts: &[&[u8]]) -> f64 {
    let t = Instant::now();
    let mut bytes = 0;
    for part in parts {
        let mut h = Sha256::new();
        for chunk in part.chunks(128 * 1024) {
            h.update(chunk);
        }
        std::hint::black_box(h.finalize());
        bytes += part.len();
    }
    bytes as f64 / MIB / t.elapsed().as_secs_f64()
}

/// Writes each file (a list of slices) on its own thread in a new directory below `dir`,
/// 1 MiB writes, fsync each file and the directory; MiB/s. The files are removed at once:
/// readings before every round add up to gigabytes, and on this VM the fourth upload scenario
/// of a run got 2-3x the CPU per GiB whichever server ran there (an A/A run shows it). Only a
/// few inodes are freed, so the no-journal inode scan on create (see BENCHMARKS.md) barely
/// notices.
pub(crate) fn write_once(dir: &Path, files: &[Vec<&[u8]>]) -> io::Result<f64> {
    static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let dir = dir.join(
        N.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            .to_string(),
    );
    fs::create_dir(&dir)?;
    let dir = dir.as_path();
    let t = Instant::now();
    std::thread::scope(|s| -> io::Result<()> {
        let hs: Vec<_> = files
            .iter()
            .enumerate()
            .map(|(i, parts)| {
                let p = dir.join(format!("write-test-{i}"));
                s.spawn(move || -> io::Result<()> {
                    let mut f = File::create(&p)?;
                    for part in parts {
                        for c in part.chunks(1 << 20) {
                            f.write_all(c)?;
                        }
                    }
                    f.sync_all()
                })
            })
            .collect();
        for h in hs {
            h.join()
                .map_err(|_| io::Error::other("writer panicked"))??;
        }
        File::open(dir)?.sync_all()
    })?;
    let bytes: usize = files.iter().flatten().map(|p| p.len()).sum();
    let rate = bytes as f64 / MIB / t.elapsed().as_secs_f64();
    fs::remove_dir_all(dir)?;
    Ok(rate)
}

impl Machine {
    pub(crate) fn new(o: &Opts, base: &Path) -> Result<Machine, String> {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let dir = base.join("write-test");
        fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        Ok(Machine {
            cores,
            busy: cores.min(o.conns),
            sha_backend: sha_backend(),
            dir,
            samples: Vec::new(),
        })
    }

    /// Measures the limit now (about a second), keeps the reading and returns it.
    pub(crate) fn sample(&mut self, packs: &[Pack], conns: usize) -> Result<LimitSample, String> {
        // About 64 MiB per core and reading: long enough to be steady, short enough to be "now".
        let parts: Vec<&[u8]> = packs
            .iter()
            .cycle()
            .take(4)
            .map(|p| p.data.as_slice())
            .collect();
        let sha = (0..2).map(|_| sha_once(&parts)).fold(0.0, f64::max);
        let busy = self.busy;
        let t = Instant::now();
        std::thread::scope(|s| {
            for _ in 0..busy {
                s.spawn(|| sha_once(&parts));
            }
        });
        let hashed: usize = parts.iter().map(|p| p.len()).sum::<usize>() * busy;
        let sha_parallel = hashed as f64 / MIB / t.elapsed().as_secs_f64();
        let err = |e: io::Error| format!("write test in {}: {e}", self.dir.display());
        let all: Vec<&[u8]> = packs.iter().map(|p| p.data.as_slice()).collect();
        let write = write_once(&self.dir, &[all]).map_err(err)?;
        let each: Vec<Vec<&[u8]>> = packs
            .iter()
            .cycle()
            .take(conns)
            .map(|p| vec![p.data.as_slice()])
            .collect();
        let write_parallel = write_once(&self.dir, &each).map_err(err)?;
        let s = LimitSample {
            sha,
            sha_parallel,
            write,
            write_parallel,
        };
        self.samples.push(s);
        Ok(s)
    }

    /// The limit the budget is stated against: min(SHA-256 x busy cores, write speed).
    pub(crate) fn limit(&self, s: &LimitSample) -> f64 {
        (s.sha * self.busy as f64).min(s.write)
    }

    /// The same with the SHA-256 rate the busy cores really gave together.
    pub(crate) fn limit_measured(&self, s: &LimitSample) -> f64 {
        s.sha_parallel.min(s.write)
    }

    pub(crate) fn median_of(&self, f: impl Fn(&LimitSample) -> f64) -> f64 {
        median(self.samples.iter().map(f).collect()).unwrap_or(f64::NAN)
    }
}
