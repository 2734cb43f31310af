//! Subcommands that read or manage files beside a server and exit: `rest-server user ...`
//! (the htpasswd file), `rest-server status` (the health of every repository) and
//! `rest-server scrub` (checks stored objects against their names). `rest-server access check`
//! lives with the access file it reads (`access.rs`), and the command line of all of them in
//! `cli.rs`.

pub(crate) mod scrub;
pub(crate) mod status;
pub(crate) mod user;

/// `s` as a JSON string literal, for the subcommands' `--json` output.
pub(crate) fn json_str(s: &str) -> String {
    use std::fmt::Write as _;
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if u32::from(c) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn json_strings_are_escaped() {
        assert_eq!(super::json_str("a\"b\\c\n"), r#""a\"b\\c\u000a""#);
    }
}
