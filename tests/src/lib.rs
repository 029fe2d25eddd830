//! Test bed for end-to-end tests: the real `agentd` and `netctl` binaries, run as root in network
//! namespaces that the test creates and removes.
//!
//! Everything a test starts is owned by a guard that cleans up on drop, also when the test
//! panics: [`Netns`] deletes its namespace, [`Agentd`] kills its process by PID (never by name)
//! and prints its log if the test failed, [`Fixture`] owns a temporary directory with the config,
//! keys and sockets. Names are unique per test and process so that tests run in parallel.

pub mod agentd;
pub mod bind;
pub mod dns_bed;
pub mod fault_checks;
pub mod fixture;
pub mod flood;
pub mod ha_bed;
pub mod histogram;
pub mod monitoring;
pub mod moto;
pub mod mtu_bed;
pub mod netns;
pub mod notify;
pub mod oci_stub;
pub mod ping;
pub mod prometheus;
pub mod relay;
pub mod resolver;
pub mod service;
pub mod silent;
pub mod topology;
pub mod transfer;

pub use agentd::{netctl, netctl_as, Agentd, Identity, Output};
pub use bind::{Bind, ZoneRecord};
pub use fixture::Fixture;
pub use flood::{raise_open_files, Flood, FloodCounts, FloodMode};
pub use moto::Moto;
pub use netns::Netns;
pub use notify::NotifySocket;
pub use ping::{PingReport, Pinger};
pub use prometheus::{
    http_get, http_get_gzip, http_get_response, promtool_check_metrics, url_encode, Prometheus,
    Response,
};
pub use relay::Relay;
pub use resolver::SilentResolver;
pub use service::TcpService;
pub use silent::{Gate, SilentDns};

use std::path::PathBuf;

/// The directory with the workspace's built binaries: `target/<profile>`, where test binaries
/// live in `deps/` and the demo binary lives directly.
pub fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("own binary path");
    let dir = exe.parent().expect("binary directory");
    if dir.file_name().is_some_and(|n| n == "deps") {
        dir.parent().expect("target directory").to_path_buf()
    } else {
        dir.to_path_buf()
    }
}

/// Path of a workspace binary; fails with the command to build it.
pub fn bin(name: &str) -> PathBuf {
    let path = bin_dir().join(name);
    assert!(
        path.exists(),
        "{} is missing: build the binaries first (`cargo build --workspace --bins`, as tests/run does)",
        path.display()
    );
    path
}

/// CPU seconds (user + system) a process has used so far, from `/proc/PID/stat`.
pub fn cpu_seconds(pid: nix::unistd::Pid) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("proc stat");
    // Fields after the command name (which may hold spaces) start at field 3.
    let rest = &stat[stat.rfind(')').expect("comm") + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = f[11].parse::<f64>().unwrap() + f[12].parse::<f64>().unwrap();
    // SAFETY: sysconf has no preconditions.
    ticks / unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64
}

/// End-to-end tests need root for namespaces and TUN devices; say so instead of failing oddly.
pub fn require_root() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "end-to-end tests need root (network namespaces): run `tests/run` as root"
    );
}

/// The repository root.
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("repo root")
        .to_path_buf()
}

/// A short name unique to this test in this process: `<tag><pid % 100000>`, e.g. `lc12345`.
/// Interface and namespace names must stay short (15 bytes for interfaces).
pub fn unique(tag: &str) -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    format!("{tag}{}{n}", std::process::id() % 100_000)
}
