//! Where the server's log lines go: stderr, one line per message,
//! `2026-12-07T01:27:11.969Z INFO  [rest_server::app] message` (UTC, milliseconds, level,
//! module: the format of `simple_logger`, which this replaced). Under systemd, stderr is
//! usually a stream to the journal, which would store every line at the unit's default
//! priority (info): an ERROR that stops the server would not show up in `journalctl -p err`.
//! So when stderr is that stream, each line starts with its syslog priority instead (`<3>`
//! ERROR, `<4>` WARN, `<6>` INFO, `<7>` DEBUG and TRACE, as sd-daemon(3) describes), which
//! journald strips and stores as the line's priority; the journal stamps each line itself,
//! so no timestamp then.
//!
//! systemd tells a service that stderr is the journal with `JOURNAL_STREAM=<dev>:<inode>` of
//! that stream. The variable is inherited by children whose stderr may be something else (a
//! shell started from the service, a redirect to a file), so it counts only if it names what
//! file descriptor 2 really is.
//!
//! A line that cannot be written is dropped: a closed stderr (a pipe whose reader went away)
//! never stops the server. (`simple_logger` writes with `eprintln!`, which panics then, and
//! a panic aborts the process: any request that logged a line would have killed it.)
//!
//! Every line stays one line, whatever it quotes: control characters in a message (a newline
//! in a repository name from a request, in a path, in an error) are written as `\x0a` and so
//! on, here, so that no log call can forget it. Fields that come from requests are also
//! escaped where they are logged (`accesslog::escape`: quotes and backslashes too), which
//! this does not undo. (A message that holds the text `\x0a` itself looks the same as an
//! escaped newline; a request field cannot be one, as its backslash is escaped too.)

use crate::utc::Utc;
use std::io::Write as _;
use std::os::fd::AsFd as _;
use std::os::unix::fs::MetadataExt as _;

/// Whether stderr is systemd's journal stream (a service's, as the module doc says).
pub(crate) fn to_journal() -> bool {
    stderr_is_journal(std::env::var("JOURNAL_STREAM").ok().as_deref())
}

/// Writes `rest-server: {message}` to stderr for a start-up error, before logging is set up
/// or where the line must not look like a log line. Like log lines, it is dropped if stderr
/// is closed (`eprintln!` would panic, and so abort, instead of exiting with the status meant).
pub(crate) fn say(message: &str) {
    crate::output::to_stderr(format_args!("rest-server: {}\n", one_line(message)));
}

/// Sets up logging: `level` for this crate's messages, at most info for the libraries'.
pub(crate) fn init(level: log::LevelFilter) -> Result<(), log::SetLoggerError> {
    log::set_boxed_logger(Box::new(Stderr {
        level,
        libraries: level.min(log::LevelFilter::Info),
        journal: to_journal(),
    }))?;
    log::set_max_level(level);
    Ok(())
}

/// Writes each message as one line to stderr (see the module doc).
struct Stderr {
    level: log::LevelFilter,
    libraries: log::LevelFilter,
    /// Lines start with their syslog priority instead of a timestamp.
    journal: bool,
}

impl log::Log for Stderr {
    fn enabled(&self, metadata: &log::Metadata) -> bool {
        let target = metadata.target();
        let ours = target == "rest_server" || target.starts_with("rest_server::");
        metadata.level() <= if ours { self.level } else { self.libraries }
    }

    fn log(&self, record: &log::Record) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let stamp = match self.journal {
            true => Stamp::Priority,
            false => Stamp::Time(Utc::now()),
        };
        let line = line(record, stamp);
        // One write per line, so lines of different threads never mix; errors dropped.
        let _ = std::io::stderr().lock().write_all(line.as_bytes());
    }

    fn flush(&self) {}
}

/// What a line starts with.
enum Stamp {
    Time(Utc),
    /// The syslog priority, for the journal.
    Priority,
}

/// The whole line for `record`, its message kept to one line.
fn line(record: &log::Record, stamp: Stamp) -> String {
    let message = record.args().to_string();
    let (level, message) = (record.level(), one_line(&message));
    let target = record.target();
    match stamp {
        Stamp::Time(t) => format!("{} {level:<5} [{target}] {message}\n", t.rfc3339_millis()),
        Stamp::Priority => {
            let priority = match level {
                log::Level::Error => 3,
                log::Level::Warn => 4,
                log::Level::Info => 6,
                log::Level::Debug | log::Level::Trace => 7,
            };
            format!("<{priority}>{level:<5} [{target}] {message}\n")
        }
    }
}

/// `message` with each control character written as `\xNN`.
pub(crate) fn one_line(message: &str) -> std::borrow::Cow<'_, str> {
    if !message.chars().any(char::is_control) {
        return message.into();
    }
    let mut out = String::with_capacity(message.len() + 8);
    for c in message.chars() {
        push_one_line(&mut out, c);
    }
    out.into()
}

/// Appends `c`, a control character as `\xNN` (Unicode's Cc all lie below U+00A0: two hex
/// digits). The one place that decides how a line is kept one line.
pub(crate) fn push_one_line(out: &mut String, c: char) {
    use std::fmt::Write as _;
    if c.is_control() {
        let _ = write!(out, "\\x{:02x}", c as u32);
    } else {
        out.push(c);
    }
}

/// Whether `journal_stream` (the value of `JOURNAL_STREAM`) is the device and inode of fd 2.
fn stderr_is_journal(journal_stream: Option<&str>) -> bool {
    let Some((dev, ino)) = journal_stream.and_then(|v| v.split_once(':')) else {
        return false;
    };
    let (Ok(dev), Ok(ino)) = (dev.parse::<u64>(), ino.parse::<u64>()) else {
        return false;
    };
    // fstat(2) of a duplicate of fd 2: std only stats files it owns, and a dup is one.
    let Ok(fd) = std::io::stderr().as_fd().try_clone_to_owned() else {
        return false;
    };
    match std::fs::File::from(fd).metadata() {
        Ok(m) => m.dev() == dev && m.ino() == ino,
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_as_simple_logger_wrote_them_or_with_a_priority_for_the_journal() {
        let at = Utc::from_unix(1_796_606_831, 969);
        let record = |level| {
            log::Record::builder()
                .level(level)
                .target("rest_server::app")
                .args(format_args!("created repository /x\ny"))
                .build()
        };
        assert_eq!(
            line(&record(log::Level::Info), Stamp::Time(at)),
            "2026-12-07T01:27:11.969Z INFO  [rest_server::app] created repository /x\\x0ay\n"
        );
        assert_eq!(
            line(&record(log::Level::Error), Stamp::Priority),
            "<3>ERROR [rest_server::app] created repository /x\\x0ay\n"
        );
        assert_eq!(
            line(&record(log::Level::Debug), Stamp::Priority),
            "<7>DEBUG [rest_server::app] created repository /x\\x0ay\n"
        );
    }

    #[test]
    fn a_message_stays_one_line() {
        assert_eq!(one_line("plain /r \"q\" \\ é"), "plain /r \"q\" \\ é");
        assert_eq!(
            one_line("created repository /x\n2026-12-07T00:00:00Z ERROR forged\r\t\u{1b}[31m"),
            "created repository /x\\x0a2026-12-07T00:00:00Z ERROR forged\\x0d\\x09\\x1b[31m"
        );
        assert_eq!(one_line("a\u{85}b\u{7f}"), "a\\x85b\\x7f");
    }

    #[test]
    fn journal_stream_must_name_stderr() {
        assert!(!stderr_is_journal(None));
        assert!(!stderr_is_journal(Some("")));
        assert!(!stderr_is_journal(Some("12")));
        assert!(!stderr_is_journal(Some("a:b")));
        assert!(!stderr_is_journal(Some("1:1")));
    }
}
