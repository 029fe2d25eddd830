//! Key files: where a relative path points, and whether the file is safe and holds a key.
//!
//! A relative path is looked up in the systemd credentials directory when agentd runs with
//! `LoadCredential=` (`$CREDENTIALS_DIRECTORY`), else next to the config file, so the same
//! config works in both set-ups. A key file must be a regular file that grants nothing to group
//! or others (innernet and `wg` warn about the same); a WireGuard key must be base64 of exactly
//! 32 bytes. Messages name the file, never its content: not even a character of a rejected key
//! may reach a log or the control socket.

use std::fs;
use std::io::ErrorKind;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use crate::model::{decode_key, Secret};
use crate::values::Invalid;

/// What a key file holds; decides the check of its content and the hints.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum KeyKind {
    /// WireGuard private key (`wg genkey`).
    Private,
    /// WireGuard preshared key (`wg genpsk`).
    Preshared,
    /// TSIG secret for RFC 2136 updates; any non-empty text, not kept in memory.
    Tsig,
}

impl KeyKind {
    fn what(self) -> &'static str {
        match self {
            KeyKind::Private => "private key file",
            KeyKind::Preshared => "preshared key file",
            KeyKind::Tsig => "TSIG key file",
        }
    }

    fn create_hint(self, path: &Path) -> String {
        let p = path.display();
        match self {
            KeyKind::Private => format!(
                "create it: (umask 077; wg genkey > {p}), then give the peer `wg pubkey < {p}`"
            ),
            KeyKind::Preshared => format!(
                "create it: (umask 077; wg genpsk > {p}) and copy it to the peer, \
                 or remove preshared_key_file"
            ),
            KeyKind::Tsig => format!(
                "write the TSIG secret configured on the DNS server into {p}, then chmod 600 {p}"
            ),
        }
    }
}

/// Resolves and reads key files for one config.
pub(crate) struct KeyFiles {
    config_dir: PathBuf,
    credentials_dir: Option<PathBuf>,
}

/// A key file that passed every check.
pub(crate) struct KeyFile {
    pub path: PathBuf,
    /// The key, except for [`KeyKind::Tsig`].
    pub secret: Option<Secret>,
}

impl KeyFiles {
    pub(crate) fn new(config_path: &Path, credentials_dir: Option<&Path>) -> Self {
        let config_dir = match config_path.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
            _ => PathBuf::from("."),
        };
        KeyFiles {
            config_dir,
            credentials_dir: credentials_dir.map(Path::to_path_buf),
        }
    }

    /// The absolute path of `written`, and whether it came from the credentials directory.
    pub(crate) fn resolve(&self, written: &str) -> (PathBuf, bool) {
        let written = Path::new(written);
        let (joined, credential) = if written.is_absolute() {
            (written.to_path_buf(), false)
        } else if let Some(dir) = &self.credentials_dir {
            (dir.join(written), true)
        } else {
            (self.config_dir.join(written), false)
        };
        (std::path::absolute(&joined).unwrap_or(joined), credential)
    }

    pub(crate) fn load(&self, written: &str, kind: KeyKind) -> Result<KeyFile, Invalid> {
        let what = kind.what();
        if written.is_empty() {
            return Err(Invalid::new(
                format!("the {what} path is empty"),
                "give the path of the file, e.g. \"private.key\"",
            ));
        }
        let (path, credential) = self.resolve(written);
        let p = path.display();
        let meta = match fs::metadata(&path) {
            Ok(meta) => meta,
            Err(e) if e.kind() == ErrorKind::NotFound => {
                let hint = if credential {
                    format!(
                        "systemd passed no credential named {written:?}: add \
                         LoadCredential={written}:/etc/isthmus/{written} to the unit, \
                         or give an absolute path"
                    )
                } else {
                    kind.create_hint(&path)
                };
                return Err(Invalid::new(format!("{p} does not exist"), hint));
            }
            Err(e) => return Err(unreadable(what, &path, &e)),
        };
        if !meta.is_file() {
            return Err(Invalid::new(
                format!("{p} is not a regular file"),
                "point the key at the file that holds the key itself",
            ));
        }
        let mode = meta.permissions().mode() & 0o777;
        // systemd's credentials directory is private to the service whatever the file modes
        // inside (systemd >= 256 shows 0440 with an ACL), so only files elsewhere are checked.
        if !credential && mode & 0o077 != 0 {
            return Err(Invalid::new(
                format!("{p} is accessible to group or others (mode {mode:04o})"),
                format!("chmod 600 {p}"),
            ));
        }
        let bytes =
            zeroize::Zeroizing::new(fs::read(&path).map_err(|e| unreadable(what, &path, &e))?);
        let text = std::str::from_utf8(&bytes).unwrap_or_default();
        let secret = match kind {
            KeyKind::Private | KeyKind::Preshared => {
                let key = decode_key(text).ok_or_else(|| {
                    Invalid::new(
                        format!("{p} does not hold a WireGuard key (base64 of 32 bytes)"),
                        kind.create_hint(&path),
                    )
                })?;
                Some(Secret::new(key))
            }
            KeyKind::Tsig => {
                if text.trim().is_empty() {
                    return Err(Invalid::new(
                        format!("{p} is empty or not text"),
                        kind.create_hint(&path),
                    ));
                }
                None
            }
        };
        Ok(KeyFile { path, secret })
    }
}

fn unreadable(what: &str, path: &Path, e: &std::io::Error) -> Invalid {
    let hint = if e.kind() == ErrorKind::PermissionDenied {
        "agentd reads key files as the user it runs as: run it as root, or hand the file over \
         with LoadCredential= in the unit"
    } else {
        "check the path and the file"
    };
    Invalid::new(format!("cannot read {what} {}: {e}", path.display()), hint)
}
