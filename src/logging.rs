//! Where the server's log lines go: stderr, as `simple_logger` writes them (UTC timestamp,
//! level, module). Under systemd, stderr is usually a stream to the journal, which would store
//! every line at the unit's default priority (info): an ERROR that stops the server would not
//! show up in `journalctl -p err`. So when stderr is that stream, each line starts with its
//! syslog priority instead (`<3>` ERROR, `<4>` WARN, `<6>` INFO, `<7>` DEBUG and TRACE, as
//! sd-daemon(3) describes), which journald strips and stores as the line's priority; the
//! journal stamps each line itself, so no timestamp then.
//!
//! systemd tells a service that stderr is the journal with `JOURNAL_STREAM=<dev>:<inode>` of
//! that stream. The variable is inherited by children whose stderr may be something else (a
//! shell started from the service, a redirect to a file), so it counts only if it names what
//! file descriptor 2 really is.
//!
//! Every line stays one line, whatever it quotes: control characters in a message (a newline
//! in a repository name from a request, in a path, in an error) are written as `\x0a` and so
//! on, by the logger itself, so that no log call can forget it ([`OneLine`]). Fields that come
//! from requests are also escaped where they are logged (`accesslog::escape`: quotes and
//! backslashes too), which this does not undo.

use std::io::Write as _;
use std::os::fd::AsFd as _;
use std::os::unix::fs::MetadataExt as _;

/// Whether stderr is systemd's journal stream (a service's, as the module doc says).
pub(crate) fn to_journal() -> bool {
    stderr_is_journal(std::env::var("JOURNAL_STREAM").ok().as_deref())
}

/// Sets up logging: `level` for this crate's messages, at most info for the libraries'.
pub(crate) fn init(level: log::LevelFilter) -> Result<(), log::SetLoggerError> {
    let libraries = level.min(log::LevelFilter::Info);
    if to_journal() {
        log::set_boxed_logger(Box::new(OneLine(Journal { level, libraries })))?;
    } else {
        let stderr = simple_logger::SimpleLogger::new()
            .with_level(libraries)
            .with_module_level("rest_server", level);
        log::set_boxed_logger(Box::new(OneLine(stderr)))?;
    }
    log::set_max_level(level);
    Ok(())
}

/// Hands `L` each message with its control characters escaped (see the module doc).
struct OneLine<L>(L);

impl<L: log::Log> log::Log for OneLine<L> {
    fn enabled(&self, metadata: &log::Metadata) -> bool {
        self.0.enabled(metadata)
    }

    fn log(&self, record: &log::Record) {
        if !self.0.enabled(record.metadata()) {
            return;
        }
        let message = record.args().to_string();
        let message = one_line(&message);
        self.0.log(
            &log::Record::builder()
                .metadata(record.metadata().clone())
                .args(format_args!("{message}"))
                .module_path(record.module_path())
                .file(record.file())
                .line(record.line())
                .build(),
        );
    }

    fn flush(&self) {
        self.0.flush()
    }
}

/// `message` with each control character written as `\xNN`.
fn one_line(message: &str) -> std::borrow::Cow<'_, str> {
    if !message.chars().any(char::is_control) {
        return message.into();
    }
    let mut out = String::with_capacity(message.len() + 8);
    for c in message.chars() {
        match c {
            // Control characters (Unicode's Cc) all lie below U+00A0: two hex digits.
            c if c.is_control() => out.push_str(&format!("\\x{:02x}", c as u32)),
            c => out.push(c),
        }
    }
    out.into()
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

/// Writes `<priority>LEVEL [module] message` lines to stderr.
struct Journal {
    level: log::LevelFilter,
    libraries: log::LevelFilter,
}

impl log::Log for Journal {
    fn enabled(&self, metadata: &log::Metadata) -> bool {
        let target = metadata.target();
        let ours = target == "rest_server" || target.starts_with("rest_server::");
        metadata.level() <= if ours { self.level } else { self.libraries }
    }

    fn log(&self, record: &log::Record) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let priority = match record.level() {
            log::Level::Error => 3,
            log::Level::Warn => 4,
            log::Level::Info => 6,
            log::Level::Debug | log::Level::Trace => 7,
        };
        // One write per line, so lines of different threads never mix.
        let line = format!(
            "<{priority}>{:<5} [{}] {}\n",
            record.level(),
            record.target(),
            record.args()
        );
        let _ = std::io::stderr().lock().write_all(line.as_bytes());
    }

    fn flush(&self) {}
}

#[cfg(test)]
mod tests {
    use super::*;

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
