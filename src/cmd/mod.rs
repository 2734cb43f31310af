//! Subcommands that read or manage files beside a server and exit: `rest-server user ...`
//! (the htpasswd file), `rest-server status` (the health of every repository) and
//! `rest-server scrub` (checks stored objects against their names). `rest-server access check`
//! lives with the access file it reads (`access.rs`), and the command line of all of them in
//! `cli.rs`.

pub(crate) mod scrub;
pub(crate) mod status;
pub(crate) mod user;
