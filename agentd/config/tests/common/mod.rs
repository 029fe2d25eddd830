//! Helpers shared by the integration tests: a directory with key files of every kind (WireGuard,
//! TSIG, the OCI API key from the throwaway keys in `tests/data`).

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

/// A key file as `tsig-keygen -a ALGORITHM NAME` writes it.
pub fn tsig_keygen_text(name: &str, algorithm: &str, secret: &str) -> String {
    format!("key \"{name}\" {{\n\talgorithm {algorithm};\n\tsecret \"{secret}\";\n}};\n")
}

/// The secret of every TSIG key file that [`key_dir`] writes.
pub fn tsig_secret() -> &'static str {
    static SECRET: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    SECRET.get_or_init(|| base64(&random_bytes::<32>()))
}

/// A throwaway test key from `tests/data` (`TEST-ONLY-rsa-pkcs8.pem`, ...).
pub fn test_key(name: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(name);
    fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Writes the throwaway key `data` (a file in `tests/data`) to `dir/name` with `mode`.
pub fn write_test_key(dir: &Path, name: &str, data: &str, mode: u32) -> PathBuf {
    write_file(dir, name, &test_key(data), mode)
}

/// A directory with `good.key` (valid, 0600), `open.key` (valid, 0644) and `short.key`
/// (base64 of 31 bytes, 0600); TSIG keys `tsig.key` (tsig-keygen, "failover-key",
/// hmac-sha256), `bare-tsig.key` (a bare secret) and `broken-tsig.key` (no `;` after the
/// algorithm, line 2), all with [`tsig_secret`]; OCI API keys `oci.pem` (PKCS#8, 0600),
/// `oci-pkcs1.pem` (PKCS#1, 0600), `open-oci.pem` (0644) and `encrypted-oci.pem` (encrypted
/// PKCS#8, 0600). Returns the directory and the content of `short.key`.
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
    let secret = tsig_secret();
    let keygen = tsig_keygen_text("failover-key", "hmac-sha256", secret);
    write_file(dir.path(), "tsig.key", &keygen, 0o600);
    write_file(dir.path(), "bare-tsig.key", &format!("{secret}\n"), 0o600);
    let broken = keygen.replace("hmac-sha256;", "hmac-sha256");
    write_file(dir.path(), "broken-tsig.key", &broken, 0o600);
    write_test_key(dir.path(), "oci.pem", "TEST-ONLY-rsa-pkcs8.pem", 0o600);
    write_test_key(
        dir.path(),
        "oci-pkcs1.pem",
        "TEST-ONLY-rsa-pkcs1.pem",
        0o600,
    );
    write_test_key(dir.path(), "open-oci.pem", "TEST-ONLY-rsa-pkcs8.pem", 0o644);
    write_test_key(
        dir.path(),
        "encrypted-oci.pem",
        "TEST-ONLY-rsa-pkcs8-encrypted.pem",
        0o600,
    );
    (dir, short)
}
