//! The server process and what /proc says about it

use super::*;

pub(crate) struct Server {
    /// Every request carries credentials (a server that cannot run without them).
    pub(crate) auth_always: bool,
    pub(crate) child: Child,
    pub(crate) pid: u32,
    pub(crate) addr: String,
    pub(crate) spawned: Instant,
    pub(crate) output: Arc<Mutex<Vec<String>>>,
}

/// Splits a command template on whitespace; single or double quotes group words.
pub(crate) fn split_command(s: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut cur = String::new();
    let (mut quote, mut in_word) = (None, false);
    for c in s.chars() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), c) => cur.push(c),
            (None, '\'' | '"') => {
                quote = Some(c);
                in_word = true;
            }
            (None, c) if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut cur));
                    in_word = false;
                }
            }
            (None, c) => {
                cur.push(c);
                in_word = true;
            }
        }
    }
    if in_word {
        words.push(cur);
    }
    words
}

/// The port in a log line such as `... start server on 127.0.0.1:PORT`.
pub(crate) fn port_in(line: &str) -> Option<u16> {
    line.match_indices("127.0.0.1:").find_map(|(i, m)| {
        let digits: String = line[i + m.len()..]
            .chars()
            .take_while(char::is_ascii_digit)
            .collect();
        digits.parse::<u16>().ok().filter(|&p| p != 0)
    })
}

impl Server {
    pub(crate) fn start(
        spec: &ServerSpec,
        path: &Path,
        flags: &[&str],
        pick_port: bool,
    ) -> Result<Server, String> {
        let picked = if pick_port {
            let l =
                TcpListener::bind("127.0.0.1:0").map_err(|e| format!("cannot pick a port: {e}"))?;
            Some(l.local_addr().map_err(|e| e.to_string())?.to_string())
        } else {
            None
        };
        let listen = picked.clone().unwrap_or_else(|| "127.0.0.1:0".into());
        let subst = |w: &str| {
            w.replace("{path}", &path.to_string_lossy())
                .replace("{listen}", &listen)
        };
        let mut renamed = Vec::new();
        let auth_flags: Vec<&str> = AUTH.to_vec();
        let flags: Vec<&str> = if spec.auth_always {
            // Swap --no-auth for an htpasswd file with the bench user.
            write_htpasswd(&path.join(".htpasswd"))?;
            let rest = flags.iter().copied().filter(|f| *f != "--no-auth");
            if flags.contains(&"--htpasswd-file") {
                rest.collect()
            } else {
                auth_flags.into_iter().chain(rest).collect()
            }
        } else {
            flags.to_vec()
        };
        let flags = flags.as_slice();
        let mut skip_value = false;
        for f in flags {
            if std::mem::take(&mut skip_value) {
                continue;
            }
            match spec.renames.iter().find(|(from, _)| from == f) {
                Some((_, to)) if to.is_empty() => {
                    skip_value = ["--htpasswd-file", "--max-size"].contains(f);
                }
                Some((_, to)) => renamed.push(subst(to)),
                None => renamed.push(subst(f)),
            }
        }
        let flags = renamed;
        let mut argv = Vec::new();
        let mut placed = false;
        for w in split_command(&spec.template) {
            if w == "{flags}" {
                argv.extend(flags.iter().cloned());
                placed = true;
            } else {
                argv.push(subst(&w));
            }
        }
        if !placed {
            argv.extend(flags);
        }
        let (prog, args) = argv.split_first().ok_or("empty server command")?;
        let spawned = Instant::now();
        let mut child = Command::new(prog)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot start {prog}: {e}"))?;
        let pid = child.id();
        let output = Arc::new(Mutex::new(Vec::new()));
        let (addr_tx, addr_rx) = mpsc::channel();
        // Any server's start-up line that names 127.0.0.1:PORT (ours, Go's, rustic's).
        let find = |line: &str| port_in(line).map(|p| format!("127.0.0.1:{p}"));
        testkit::follow_lines(
            child.stdout.take().expect("piped"),
            &output,
            200,
            &addr_tx,
            find,
        );
        testkit::follow_lines(
            child.stderr.take().expect("piped"),
            &output,
            200,
            &addr_tx,
            find,
        );
        let mut server = Server {
            auth_always: spec.auth_always,
            child,
            pid,
            addr: String::new(),
            spawned,
            output,
        };
        let deadline = spawned + START_TIMEOUT;
        server.addr = match picked {
            Some(addr) => loop {
                if TcpStream::connect(&addr).is_ok() {
                    break addr;
                }
                server.fail_if_exited(deadline)?;
                std::thread::sleep(Duration::from_millis(1));
            },
            None => loop {
                if let Ok(addr) = addr_rx.recv_timeout(Duration::from_millis(5)) {
                    break addr;
                }
                server.fail_if_exited(deadline)?;
            },
        };
        Ok(server)
    }

    pub(crate) fn fail_if_exited(&mut self, deadline: Instant) -> Result<(), String> {
        let why = match self.child.try_wait() {
            Ok(Some(status)) => format!("exited ({status})"),
            _ if Instant::now() > deadline => {
                let _ = self.child.kill();
                let _ = self.child.wait();
                "did not say which port it listens on (try --pick-port)".into()
            }
            _ => return Ok(()),
        };
        std::thread::sleep(Duration::from_millis(50));
        let out = self.output.lock().unwrap();
        let tail: Vec<_> = out.iter().rev().take(3).rev().cloned().collect();
        Err(format!("server {why}: {}", tail.join(" | ")))
    }

    /// utime + stime of all the server's threads, in seconds.
    pub(crate) fn cpu(&self) -> f64 {
        proc_cpu(&format!("/proc/{}/stat", self.pid)).unwrap_or(f64::NAN)
    }

    /// A `VmXXX:` line of /proc/PID/status, in MiB.
    pub(crate) fn status_mib(&self, key: &str) -> Option<f64> {
        let s = fs::read_to_string(format!("/proc/{}/status", self.pid)).ok()?;
        let line = s.lines().find(|l| l.starts_with(key))?;
        let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
        Some(kb / 1024.0)
    }

    pub(crate) fn rss(&self) -> Option<f64> {
        self.status_mib("VmRSS:")
    }

    pub(crate) fn hwm(&self) -> Option<f64> {
        self.status_mib("VmHWM:")
    }

    /// Resets VmHWM to the current RSS (Linux `clear_refs` 5), so a peak belongs to one
    /// scenario. Returns false where the kernel does not allow it.
    pub(crate) fn reset_hwm(&self) -> bool {
        fs::write(format!("/proc/{}/clear_refs", self.pid), "5").is_ok()
    }

    /// RSS once the freshly started server has settled, before any request.
    pub(crate) fn idle_rss(&self) -> Option<f64> {
        std::thread::sleep(IDLE_SETTLE);
        self.rss()
    }

    pub(crate) fn conn(&self, auth: bool) -> Conn {
        Conn::new(&self.addr, auth || self.auth_always)
    }

    /// SIGTERM (graceful, as a service manager would), then SIGKILL if it lingers.
    pub(crate) fn stop(mut self) {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.pid.to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// utime + stime from a /proc/.../stat file, in seconds.
pub(crate) fn proc_cpu(stat_path: &str) -> Option<f64> {
    let s = fs::read_to_string(stat_path).ok()?;
    // Fields after the command name, which is in parentheses and may contain spaces.
    let rest = &s[s.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?;
    Some(ticks / clock_ticks())
}

pub(crate) fn clock_ticks() -> f64 {
    static TICKS: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    *TICKS.get_or_init(|| {
        Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(100.0)
    })
}

/// CPU seconds the whole machine spent busy so far (all cores), from /proc/stat.
pub(crate) fn machine_busy() -> f64 {
    let s = fs::read_to_string("/proc/stat").unwrap_or_default();
    let Some(cpu) = s.lines().next().filter(|l| l.starts_with("cpu ")) else {
        return f64::NAN;
    };
    // user nice system idle iowait irq softirq steal ...: everything but idle and iowait.
    let f: Vec<f64> = cpu
        .split_whitespace()
        .skip(1)
        .filter_map(|v| v.parse().ok())
        .collect();
    let busy: f64 = f
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != 3 && *i != 4 && *i < 8)
        .map(|(_, v)| v)
        .sum();
    busy / clock_ticks()
}

pub(crate) fn client_cpu() -> f64 {
    proc_cpu("/proc/self/stat").unwrap_or(f64::NAN)
}
