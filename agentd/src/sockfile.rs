//! Unix socket files that agentd serves: replacing a stale one at start-up, and removing ours,
//! and only ours, on the way out. The control socket and the UAPI sockets both follow this.
//!
//! A socket file left by a crashed process is replaced, but a live one is never stolen: a
//! connection is tried first, and only a refused one proves the file stale. Anything that is not
//! a socket is left alone. On shutdown the file is removed only if it is still the one bound, as
//! told by its [`Identity`]: someone may have replaced it since (another agentd started over it).

use std::fs;
use std::io;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::os::unix::net::UnixStream;
use std::path::Path;

/// Which file a socket is: device, inode and change time (an inode number alone is reused at once
/// on tmpfs). Take it again after a chmod, chown, link or unlink: they change the ctime.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Identity(u64, u64, i64, i64);

impl Identity {
    pub fn of(meta: &fs::Metadata) -> Identity {
        Identity(meta.dev(), meta.ino(), meta.ctime(), meta.ctime_nsec())
    }
}

/// Why a socket path cannot be bound.
#[derive(Debug)]
pub enum StaleError {
    /// Something other than a socket is there.
    NotASocket,
    /// A process accepts connections on it.
    InUse,
    /// `step` ("checking", "probing", "removing") failed.
    Io {
        step: &'static str,
        source: io::Error,
    },
}

/// Clears `path` for a new socket: nothing there, or a socket that refuses connections (then
/// removed). `what` names the socket in the log ("control", "UAPI").
pub fn remove_if_stale(path: &Path, what: &str) -> Result<(), StaleError> {
    let io = |step| move |source| StaleError::Io { step, source };
    let meta = match fs::symlink_metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(io("checking")(e)),
    };
    if !meta.file_type().is_socket() {
        return Err(StaleError::NotASocket);
    }
    match UnixStream::connect(path) {
        Ok(_) => Err(StaleError::InUse),
        Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
            tracing::info!(socket = %path.display(), "replacing a stale {what} socket");
            match fs::remove_file(path) {
                Ok(()) => Ok(()),
                Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
                Err(e) => Err(io("removing")(e)),
            }
        }
        Err(e) => Err(io("probing")(e)),
    }
}

/// Removes the socket file at `path` if it is still the one with `identity`; logs (as the `what`
/// socket) when it cannot, or when someone else's file is there now.
pub fn remove_if_ours(path: &Path, identity: Identity, what: &str) {
    match fs::symlink_metadata(path) {
        Ok(meta) if Identity::of(&meta) == identity => {
            if let Err(e) = fs::remove_file(path) {
                tracing::warn!(socket = %path.display(), error = %e, "cannot remove the {what} socket");
            }
        }
        Ok(_) => tracing::warn!(
            socket = %path.display(),
            "{what} socket was replaced by someone else; leaving it"
        ),
        Err(_) => {}
    }
}
