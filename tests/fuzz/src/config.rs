//! Config parse and validation (`isthmus_config::parse_str_with`), with key files served from
//! memory so that the fuzzer never opens the paths it invents.
//!
//! The input is the config text, optionally followed by a NUL and the content that every key
//! file then holds (a config with a NUL is refused as binary, so the split loses nothing).
//! Without it, a key file holds a valid key of the kind its name suggests. A name containing
//! `missing` is not found, one containing `open` is readable by others.
//!
//! Invariant: no message (errors and warnings) contains a character run of the fixed secrets.

use std::io;
use std::path::Path;

use isthmus_config::{FileMeta, FileReader, LoadOptions};

/// WireGuard keys of no one (base64 of 32 bytes).
pub const PRIVATE_KEY: &str = "YEocP0e2o1WT5GlvBvQzVF7EeR6z1aCk7bhV6GRfIUg=";
pub const PRESHARED_KEY: &str = "FIXzxMsSVVSrEjLoHBn8hO1w9+y6rCiR4zNE9UvzmJM=";
/// The secret of [`TSIG_FILE`].
pub const TSIG_SECRET: &str = "q6OmC0Sb8PKGzDSLt4wGsxZEZVhGC1mbhHJmRu5pZ2s=";
pub const TSIG_FILE: &str = "key \"isthmus-fuzz\" {\n\talgorithm hmac-sha256;\n\tsecret \"q6OmC0Sb8PKGzDSLt4wGsxZEZVhGC1mbhHJmRu5pZ2s=\";\n};\n";
/// Oracle's published test key (`tests/data`), an OCI API key of no tenancy.
pub const OCI_KEY: &str = include_str!("../../data/oci-published-test-key.pem");

/// Key files in memory: `content` for every file when given, else a valid key by name.
struct Memory<'a> {
    content: Option<&'a [u8]>,
}

impl FileReader for Memory<'_> {
    fn metadata(&self, path: &Path) -> io::Result<FileMeta> {
        let name = path.to_string_lossy();
        if name.contains("missing") {
            return Err(io::ErrorKind::NotFound.into());
        }
        let mode = if name.contains("open") { 0o644 } else { 0o600 };
        Ok(FileMeta {
            is_file: true,
            mode,
        })
    }

    fn read(&self, path: &Path) -> io::Result<Vec<u8>> {
        if let Some(content) = self.content {
            return Ok(content.to_vec());
        }
        let name = path.to_string_lossy();
        let text = if name.contains("psk") {
            PRESHARED_KEY
        } else if name.contains("tsig") {
            TSIG_FILE
        } else if name.ends_with(".pem") {
            OCI_KEY
        } else {
            PRIVATE_KEY
        };
        Ok(text.as_bytes().to_vec())
    }
}

pub fn run(data: &[u8]) {
    let (text, content) = match data.iter().position(|&b| b == 0) {
        Some(at) => (&data[..at], Some(&data[at + 1..])),
        None => (data, None),
    };
    let Ok(text) = std::str::from_utf8(text) else {
        return;
    };
    let files = Memory { content };
    let loaded = isthmus_config::parse_str_with(
        text,
        Path::new("/fuzz/agentd.toml"),
        &LoadOptions::default(),
        &files,
    );
    let messages = match &loaded {
        Ok(loaded) => loaded.warnings.iter().map(|w| format!("{w}\n")).collect(),
        Err(report) => report.to_string(),
    };
    // The text may hold a secret itself (config errors mask it); only the key files' fixed
    // secrets, which the text does not contain, must never come back.
    for secret in [PRIVATE_KEY, PRESHARED_KEY, TSIG_SECRET] {
        let part = &secret[..24];
        if !text.contains(part) {
            assert!(!messages.contains(part), "a key file's secret in a message");
        }
    }
    for line in OCI_KEY.lines().filter(|l| l.len() > 40) {
        if !text.contains(line) {
            assert!(!messages.contains(line), "the OCI key in a message");
        }
    }
}
