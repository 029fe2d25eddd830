//! Helpers shared by the integration tests: a directory with key files of every kind.

#![allow(dead_code)]

use std::fs;
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use base64::Engine as _;

pub fn random_bytes<const N: usize>() -> [u8; N] {
    let mut bytes = [0u8; N];
    fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .expect("read /dev/urandom");
    bytes
}

pub fn base64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// Writes `content` to `dir/name` with `mode`.
pub fn write_file(dir: &Path, name: &str, content: &str, mode: u32) -> PathBuf {
    let path = dir.join(name);
    fs::write(&path, content).expect("write key file");
    fs::set_permissions(&path, fs::Permissions::from_mode(mode)).expect("chmod key file");
    path
}

/// A fresh random WireGuard key, as `wg genkey` writes it.
pub fn write_key(dir: &Path, name: &str) -> PathBuf {
    write_file(
        dir,
        name,
        &format!("{}\n", base64(&random_bytes::<32>())),
        0o600,
    )
}

/// A directory with `good.key` (valid, 0600), `open.key` (valid, 0644) and `short.key`
/// (base64 of 31 bytes, 0600). Returns the directory and the content of `short.key`.
pub fn key_dir() -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().expect("tempdir");
    write_key(dir.path(), "good.key");
    write_file(
        dir.path(),
        "open.key",
        &base64(&random_bytes::<32>()),
        0o644,
    );
    let short = base64(&random_bytes::<31>());
    write_file(dir.path(), "short.key", &short, 0o600);
    (dir, short)
}
