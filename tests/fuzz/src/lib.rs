//! The fuzz targets of isthmus, one plain function per target: bytes in, nothing out, and a
//! panic only where an invariant breaks (a round trip that does not, a secret in a message).
//! Bad input must be refused with an error, never a panic, a hang or unbounded memory.
//!
//! The same functions run under two drivers:
//!
//! - `cargo-fuzz/` (libFuzzer, coverage-guided; `tests/fuzz/run NAME`), one `fuzz_targets/`
//!   file per entry of [`TARGETS`], each calling the function here;
//! - `tests/replay.rs` (`cargo test`), which runs every file of `corpus/NAME/` and
//!   `regressions/NAME/` through its function, so that CI keeps every input the fuzzer found
//!   interesting, and every crash it found, without an instrumented build.
//!
//! No target touches the world: the config target reads its key files from memory
//! ([`isthmus_config::FileReader`]); agentd's targets run its code over in-memory streams and
//! buffers (`isthmus_agentd::fuzzing`); the others are pure already.

pub mod aws;
pub mod config;
pub mod control;
pub mod dns;
pub mod oci;
pub mod offload;
pub mod probe;
pub mod uapi;
pub mod wireguard;

/// A target: any bytes in; a panic is a bug.
pub type Target = fn(&[u8]);

/// Every target by name: the name is its `fuzz_targets/NAME.rs`, `corpus/NAME/` and
/// `regressions/NAME/`.
pub const TARGETS: &[(&str, Target)] = &[
    ("aws", aws::run),
    ("config", config::run),
    ("control", control::run),
    ("dns", dns::run),
    ("oci", oci::run),
    ("offload", offload::run),
    ("probe", probe::run),
    ("uapi", uapi::run),
    ("wireguard", wireguard::run),
];
