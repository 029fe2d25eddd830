//! The one seam between validation and the file system: key files (WireGuard keys, PSKs, TSIG
//! keys, the OCI API key) are looked at and read through a [`FileReader`], so that a load can
//! run against files held in memory. agentd and netctl read the disk ([`Disk`]); the fuzzers
//! hand in a reader that never opens the paths they invent.

use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

/// What the checks of a key file need to know about it before reading it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileMeta {
    /// A regular file (symbolic links followed).
    pub is_file: bool,
    /// The permission bits (`0o600`).
    pub mode: u32,
}

/// Looks at and reads the files a config names. Errors are the file system's own
/// ([`io::ErrorKind::NotFound`] for a missing file), so that messages and hints stay the same
/// whatever the reader.
pub trait FileReader {
    /// The file's kind and mode, following symbolic links (as [`std::fs::metadata`]).
    fn metadata(&self, path: &Path) -> io::Result<FileMeta>;
    /// The file's whole content.
    fn read(&self, path: &Path) -> io::Result<Vec<u8>>;
}

/// The real file system.
#[derive(Debug, Clone, Copy, Default)]
pub struct Disk;

impl FileReader for Disk {
    fn metadata(&self, path: &Path) -> io::Result<FileMeta> {
        let meta = std::fs::metadata(path)?;
        Ok(FileMeta {
            is_file: meta.is_file(),
            mode: meta.permissions().mode(),
        })
    }

    fn read(&self, path: &Path) -> io::Result<Vec<u8>> {
        std::fs::read(path)
    }
}
