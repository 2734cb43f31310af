//! `--log`: one Apache combined-log-format line per request, to a file or stdout.
//!
//! The file is opened in append mode and reopened on SIGHUP, so logrotate can move it away.
//! What goes into a line is decided by the handler; this module only formats and writes.
//! Times are UTC (`+0000`): working out the local offset safely needs a time-zone database.

use crate::utc::Utc;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;
use std::sync::mpsc::{self, Receiver, SyncSender, TryRecvError, TrySendError};
use std::time::SystemTime;

/// The access log file is readable by its owner only: it names users and repositories.
const LOG_FILE_MODE: u32 = crate::modes::PRIVATE_FILE;

/// Lines waiting for the writer thread. A log that cannot keep up (a stalled pipe, a slow SD
/// card) loses lines beyond this instead of stalling requests.
const QUEUE_LINES: usize = 4096;

/// Lines are written by one thread of their own, so a slow or stalled log never blocks an
/// executor thread (and with it every request).
pub(crate) struct AccessLog {
    path: Option<PathBuf>,
    queue: SyncSender<Msg>,
}

enum Msg {
    Line(String),
    Reopen,
}

/// The facts of one request that the log line records.
pub(crate) struct LogLine<'a> {
    pub host: &'a str,
    pub user: &'a str,
    pub method: &'a str,
    pub uri: &'a str,
    pub status: u16,
    pub bytes: u64,
    pub referer: &'a str,
    pub user_agent: &'a str,
}

impl AccessLog {
    /// `None` = standard output. The file is opened here, so a bad path fails at start-up.
    pub(crate) fn open(path: Option<PathBuf>) -> io::Result<AccessLog> {
        let out: Box<dyn Write + Send> = match &path {
            None => Box::new(io::stdout()),
            Some(p) => Box::new(open_append(p)?),
        };
        let (queue, lines) = mpsc::sync_channel(QUEUE_LINES);
        let p = path.clone();
        std::thread::Builder::new()
            .name("access-log".into())
            .spawn(move || write_lines(out, p, lines))?;
        Ok(AccessLog { path, queue })
    }

    /// Reopens the file (after logrotate moved it). On failure the old file stays in use.
    pub(crate) fn reopen(&self) {
        if self.path.is_some() {
            // Blocking send: a reopen must not be lost, and the queue drains on its own.
            let _ = self.queue.send(Msg::Reopen);
        }
    }

    pub(crate) fn write(&self, e: &LogLine<'_>) {
        let line = format_line(e, SystemTime::now());
        if let Err(TrySendError::Full(_)) = self.queue.try_send(Msg::Line(line)) {
            log::debug!("access log cannot keep up: line dropped");
        }
    }
}

/// The writer thread: buffered writes, flushed whenever the queue is empty.
fn write_lines(out: Box<dyn Write + Send>, path: Option<PathBuf>, lines: Receiver<Msg>) {
    let mut out = io::BufWriter::new(out);
    let mut next = lines.recv();
    while let Ok(msg) = next {
        match msg {
            Msg::Line(line) => {
                if let Err(e) = out.write_all(line.as_bytes()) {
                    log::debug!("cannot write access log: {e}");
                }
            }
            Msg::Reopen => match path.as_ref().map(open_append) {
                Some(Ok(f)) => {
                    let _ = out.flush();
                    out = io::BufWriter::new(Box::new(f));
                }
                Some(Err(e)) => log::error!(
                    "cannot reopen access log {}: {e}",
                    path.as_ref()
                        .map_or(String::new(), |p| p.display().to_string())
                ),
                None => {}
            },
        }
        next = match lines.try_recv() {
            Ok(m) => Ok(m),
            Err(TryRecvError::Empty) => {
                if let Err(e) = out.flush() {
                    log::debug!("cannot write access log: {e}");
                }
                lines.recv()
            }
            Err(TryRecvError::Disconnected) => break,
        };
    }
    let _ = out.flush();
}

impl std::fmt::Debug for AccessLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AccessLog")
            .field("path", &self.path)
            .finish()
    }
}

fn open_append(path: &PathBuf) -> io::Result<File> {
    OpenOptions::new()
        .append(true)
        .create(true)
        .mode(LOG_FILE_MODE)
        .open(path)
}

/// `host - user [10/Oct/2000:13:55:36 +0000] "GET /path HTTP/1.1" 200 2326 "referer" "agent"`
fn format_line(e: &LogLine<'_>, now: SystemTime) -> String {
    let dash = |s: &str| {
        if s.is_empty() {
            "-".to_owned()
        } else {
            s.to_owned()
        }
    };
    format!(
        "{} - {} [{}] \"{} {} HTTP/1.1\" {} {} \"{}\" \"{}\"\n",
        dash(e.host),
        dash(&escape(e.user)),
        clf_time(now),
        e.method,
        escape(e.uri),
        e.status,
        e.bytes,
        dash(&escape(e.referer)),
        dash(&escape(e.user_agent)),
    )
}

/// Keeps a line one line: quotes, backslashes and control characters are escaped. For every
/// request-derived field of a log line, here and in the server's own log.
pub(crate) fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c => crate::logging::push_one_line(&mut out, c),
        }
    }
    out
}

/// `10/Oct/2000:13:55:36 +0000`.
fn clf_time(t: SystemTime) -> String {
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let u = Utc::of(t);
    format!(
        "{:02}/{}/{}:{:02}:{:02}:{:02} +0000",
        u.day,
        MONTHS[(u.month as usize).clamp(1, 12) - 1],
        u.year,
        u.hour,
        u.minute,
        u.second
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    #[test]
    fn combined_log_format() {
        let e = LogLine {
            host: "192.0.2.7",
            user: "alice",
            method: "GET",
            uri: "/alice/config",
            status: 200,
            bytes: 155,
            referer: "",
            user_agent: "restic/0.16.4 \"x\"",
        };
        let t = UNIX_EPOCH + Duration::from_secs(971_185_336); // 2000-10-10 13:42:16 UTC
        assert_eq!(
            format_line(&e, t),
            "192.0.2.7 - alice [10/Oct/2000:13:42:16 +0000] \"GET /alice/config HTTP/1.1\" 200 155 \"-\" \"restic/0.16.4 \\\"x\\\"\"\n"
        );
    }

    #[test]
    fn dates_across_leap_years() {
        let at = |s| clf_time(UNIX_EPOCH + Duration::from_secs(s));
        assert_eq!(at(0), "01/Jan/1970:00:00:00 +0000");
        assert_eq!(at(951_782_400), "29/Feb/2000:00:00:00 +0000");
        assert_eq!(at(1_709_251_199), "29/Feb/2024:23:59:59 +0000");
    }
}
