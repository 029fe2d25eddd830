//! The control socket file: who may connect at all is decided here, by its mode and group.
//!
//! At start-up a socket file left by a crashed agentd is replaced, but a live one is not stolen:
//! we try to connect to it first, and only a refused connection proves it stale. The file is
//! created under the process umask (0077) and then widened to the configured mode and group, so
//! that it is never briefly reachable by others. On shutdown it is removed only if it is still
//! the file we created.

use std::fs;
use std::io;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::net::UnixListener as StdListener;
use std::path::{Path, PathBuf};

use tokio::net::UnixListener;

use crate::sockfile::{self, Identity, StaleError};

#[derive(Debug, thiserror::Error)]
pub enum SocketError {
    #[error(
        "another agentd is already listening on {0}: stop it first, or give this one a \
         different [control].socket"
    )]
    InUse(PathBuf),
    #[error("{0} exists and is not a socket: refusing to replace it; move it away or change [control].socket")]
    NotASocket(PathBuf),
    #[error("cannot check the existing socket {path}: {source}")]
    Probe { path: PathBuf, source: io::Error },
    #[error("cannot create the socket directory {path}: {source}")]
    Dir { path: PathBuf, source: io::Error },
    #[error("cannot bind the control socket {path}: {source}")]
    Bind { path: PathBuf, source: io::Error },
    #[error("cannot set mode {mode:o} and group {gid:?} on {path}: {source}")]
    Permissions {
        path: PathBuf,
        mode: u32,
        gid: Option<u32>,
        source: io::Error,
    },
}

/// The socket file we created; remembers its identity so we never delete someone else's file.
#[derive(Debug)]
pub struct BoundSocket {
    path: PathBuf,
    identity: Identity,
}

pub fn bind(
    path: &Path,
    mode: u32,
    gid: Option<u32>,
) -> Result<(UnixListener, BoundSocket), SocketError> {
    if let Some(dir) = path.parent() {
        if !dir.as_os_str().is_empty() && !dir.exists() {
            fs::create_dir_all(dir).map_err(|source| SocketError::Dir {
                path: dir.to_owned(),
                source,
            })?;
            // Members of the read group must be able to traverse to the socket.
            fs::set_permissions(dir, fs::Permissions::from_mode(0o755)).map_err(|source| {
                SocketError::Dir {
                    path: dir.to_owned(),
                    source,
                }
            })?;
        }
    }
    remove_if_stale(path)?;
    let std_listener = StdListener::bind(path).map_err(|source| SocketError::Bind {
        path: path.to_owned(),
        source,
    })?;
    let meta = fs::symlink_metadata(path).map_err(|source| SocketError::Bind {
        path: path.to_owned(),
        source,
    })?;
    let mut bound = BoundSocket {
        path: path.to_owned(),
        identity: Identity::of(&meta),
    };
    bound.set_access(mode, gid)?;
    std_listener
        .set_nonblocking(true)
        .and_then(|()| UnixListener::from_std(std_listener))
        .map(|l| (l, bound))
        .map_err(|source| SocketError::Bind {
            path: path.to_owned(),
            source,
        })
}

fn remove_if_stale(path: &Path) -> Result<(), SocketError> {
    sockfile::remove_if_stale(path, "control").map_err(|e| match e {
        StaleError::NotASocket => SocketError::NotASocket(path.to_owned()),
        StaleError::InUse => SocketError::InUse(path.to_owned()),
        StaleError::Io { source, .. } => SocketError::Probe {
            path: path.to_owned(),
            source,
        },
    })
}

impl BoundSocket {
    /// Apply mode and group (group `None`: leave it as created).
    pub fn set_access(&mut self, mode: u32, gid: Option<u32>) -> Result<(), SocketError> {
        let err = |source| SocketError::Permissions {
            path: self.path.clone(),
            mode,
            gid,
            source,
        };
        if let Some(gid) = gid {
            // Usually the socket already has the group (agentd's own primary group under
            // systemd): skip the chown, which the unit's syscall filter may not allow.
            let current = fs::symlink_metadata(&self.path).map_err(err)?.gid();
            if current != gid {
                nix::unistd::chown(&self.path, None, Some(nix::unistd::Gid::from_raw(gid)))
                    .map_err(|e| err(io::Error::from(e)))?;
            }
        }
        fs::set_permissions(&self.path, fs::Permissions::from_mode(mode)).map_err(err)?;
        // chmod and chown change the ctime that identifies our file.
        self.identity = Identity::of(&fs::symlink_metadata(&self.path).map_err(err)?);
        Ok(())
    }

    /// Remove the socket file if it is still the one we bound.
    pub fn remove(&self) {
        sockfile::remove_if_ours(&self.path, self.identity, "control");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_stale_socket_is_replaced_and_a_live_one_is_not_stolen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("agentd.sock");
        // A socket file whose listener is gone: what a crashed agentd leaves.
        drop(StdListener::bind(&path).unwrap());
        assert!(path.exists());

        let (_live, bound) = bind(&path, 0o660, None).unwrap();
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o660);

        match bind(&path, 0o660, None) {
            Err(SocketError::InUse(p)) => assert_eq!(p, path),
            other => panic!("expected InUse, got {other:?}"),
        }
        bound.remove();
        assert!(!path.exists());
    }

    #[tokio::test]
    async fn refuses_to_replace_a_regular_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("agentd.sock");
        fs::write(&path, "not a socket").unwrap();
        assert!(matches!(
            bind(&path, 0o660, None),
            Err(SocketError::NotASocket(_))
        ));
        assert_eq!(fs::read_to_string(&path).unwrap(), "not a socket");
    }

    #[tokio::test]
    async fn remove_leaves_a_socket_that_someone_else_created() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("agentd.sock");
        let (listener, bound) = bind(&path, 0o660, None).unwrap();
        drop(listener);
        fs::remove_file(&path).unwrap();
        // Past the coarse timestamp granularity, as a real replacement would be.
        std::thread::sleep(std::time::Duration::from_millis(20));
        let _other = StdListener::bind(&path).unwrap();
        bound.remove();
        assert!(path.exists(), "a foreign socket must not be deleted");
    }
}
