//! Key files: where a relative path points, and whether the file is safe and holds a key.
//!
//! A relative path is looked up in the systemd credentials directory when agentd runs with
//! `LoadCredential=` (`$CREDENTIALS_DIRECTORY`), else next to the config file, so the same
//! config works in both set-ups. A key file must be a regular file that grants nothing to group
//! or others (innernet and `wg` warn about the same). Then its content is read by kind: a
//! WireGuard key must be base64 of exactly 32 bytes; a TSIG key file is what `tsig-keygen`
//! writes or a bare base64 secret (`tsig`); the OCI API key is an unencrypted RSA PEM (`pem`).
//! Messages name the file (and a place in it), never its content: not even a character of a
//! rejected key may reach a log or the control socket.

use std::io::ErrorKind;
use std::path::{Path, PathBuf};

use crate::files::FileReader;

use crate::model::{decode_key, OciKey, Secret};
use crate::tsig::{self, FileKey};
use crate::values::Invalid;

/// What a key file holds; decides the check of its content and the hints.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum KeyKind {
    /// WireGuard private key (`wg genkey`).
    Private,
    /// WireGuard preshared key (`wg genpsk`).
    Preshared,
    /// TSIG key for RFC 2136 updates (`tsig-keygen`, or a bare base64 secret).
    Tsig,
    /// OCI API signing key (RSA private key PEM).
    OciApi,
}

impl KeyKind {
    fn what(self) -> &'static str {
        match self {
            KeyKind::Private => "private key file",
            KeyKind::Preshared => "preshared key file",
            KeyKind::Tsig => "TSIG key file",
            KeyKind::OciApi => "OCI API key file",
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
                "create it: (umask 077; tsig-keygen -a hmac-sha256 NAME > {p}) and configure the \
                 same key on the DNS server, or write the server's secret for this key into {p} \
                 and chmod 600 {p}"
            ),
            KeyKind::OciApi => format!(
                "create it: (umask 077; openssl genrsa -out {p} 2048), then add its public half \
                 (openssl rsa -pubout -in {p}) as an API key of the OCI user"
            ),
        }
    }
}

/// Resolves and reads key files for one config.
pub(crate) struct KeyFiles<'r> {
    config_dir: PathBuf,
    credentials_dir: Option<PathBuf>,
    reader: &'r dyn FileReader,
}

/// A key file that passed every check, and what it holds.
pub(crate) struct KeyFile<K> {
    pub path: PathBuf,
    pub key: K,
}

impl<'r> KeyFiles<'r> {
    pub(crate) fn new(
        config_path: &Path,
        credentials_dir: Option<&Path>,
        reader: &'r dyn FileReader,
    ) -> Self {
        let config_dir = match config_path.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
            _ => PathBuf::from("."),
        };
        KeyFiles {
            config_dir,
            credentials_dir: credentials_dir.map(Path::to_path_buf),
            reader,
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

    /// A WireGuard key ([`KeyKind::Private`] or [`KeyKind::Preshared`]).
    pub(crate) fn load(&self, written: &str, kind: KeyKind) -> Result<KeyFile<Secret>, Invalid> {
        let (path, bytes) = self.read(written, kind)?;
        let text = std::str::from_utf8(&bytes).unwrap_or_default();
        let key = decode_key(text).ok_or_else(|| {
            Invalid::new(
                format!(
                    "{} does not hold a WireGuard key (base64 of 32 bytes)",
                    path.display()
                ),
                kind.create_hint(&path),
            )
        })?;
        Ok(KeyFile {
            path,
            key: Secret::new(key),
        })
    }

    /// The keys of a TSIG key file (at least one). A problem inside the file is reported with
    /// the file's path, line and column.
    pub(crate) fn tsig(&self, written: &str) -> Result<KeyFile<Vec<FileKey>>, Invalid> {
        let (path, bytes) = self.read(written, KeyKind::Tsig)?;
        let p = path.display();
        let Ok(text) = std::str::from_utf8(&bytes) else {
            return Err(Invalid::new(
                format!("{p} is not text"),
                KeyKind::Tsig.create_hint(&path),
            ));
        };
        let keys = tsig::parse(text).map_err(|e| {
            Invalid::new(
                format!("{p}:{}:{}: {}", e.line, e.column, e.message),
                e.hint,
            )
        })?;
        Ok(KeyFile { path, key: keys })
    }

    /// The OCI API signing key.
    pub(crate) fn oci(&self, written: &str) -> Result<KeyFile<OciKey>, Invalid> {
        let (path, bytes) = self.read(written, KeyKind::OciApi)?;
        let p = path.display().to_string();
        let text = std::str::from_utf8(&bytes).unwrap_or_default();
        let key = crate::pem::oci_key(text, &p)
            .map_err(|e| Invalid::new(format!("{p} {}", e.message), e.hint))?;
        Ok(KeyFile { path, key })
    }

    /// Resolves `written`, checks that it is a private regular file and reads it.
    fn read(
        &self,
        written: &str,
        kind: KeyKind,
    ) -> Result<(PathBuf, zeroize::Zeroizing<Vec<u8>>), Invalid> {
        let what = kind.what();
        if written.is_empty() {
            return Err(Invalid::new(
                format!("the {what} path is empty"),
                "give the path of the file, e.g. \"private.key\"",
            ));
        }
        if crate::redact::looks_like_secret(written) {
            return Err(Invalid::new(
                format!("the {what} path looks like a key itself, not a file name (not shown)"),
                format!(
                    "write the key into a file that only root can read and give its path: {}",
                    kind.create_hint(Path::new("FILE"))
                ),
            ));
        }
        let (path, credential) = self.resolve(written);
        let p = path.display();
        let meta = match self.reader.metadata(&path) {
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
        if !meta.is_file {
            return Err(Invalid::new(
                format!("{p} is not a regular file"),
                "point the key at the file that holds the key itself",
            ));
        }
        let mode = meta.mode & 0o777;
        // systemd's credentials directory is private to the service whatever the file modes
        // inside (systemd >= 256 shows 0440 with an ACL), so only files elsewhere are checked.
        if !credential && mode & 0o077 != 0 {
            return Err(Invalid::new(
                format!("{p} is accessible to group or others (mode {mode:04o})"),
                format!("chmod 600 {p}"),
            ));
        }
        let bytes = zeroize::Zeroizing::new(
            self.reader
                .read(&path)
                .map_err(|e| unreadable(what, &path, &e))?,
        );
        Ok((path, bytes))
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
