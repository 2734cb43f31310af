//! The black-box tests of the real `rest-server` binary, one module per area, in one test
//! executable (one link instead of a dozen, and the shared kit in `testkit/` built once).
//! cargo builds the binary first; the kit finds it (or `$REST_SERVER_BIN`).
//!
//! One area: `cargo test --release --test it framing::`; one test: add its name.

mod access;
mod accesslog;
mod auth;
mod edges;
mod framing;
mod health;
mod metrics;
mod protocol;
mod restic;
mod robustness;
mod scrub;
mod service;
mod stalled;
#[cfg(feature = "tls")]
mod tls;
