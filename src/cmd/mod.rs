//! Subcommands that manage files beside a server and exit: `rest-server user ...` (the
//! htpasswd file). `rest-server access check` lives with the access file it reads
//! (`access.rs`), and the command line of all of them in `cli.rs`.

pub(crate) mod status;
pub(crate) mod user;
