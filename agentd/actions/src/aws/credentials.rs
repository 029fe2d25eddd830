//! Where AWS credentials come from, in the SDKs' order: the environment, then the shared
//! credentials file, then the instance metadata service (IMDSv2). The first source that has
//! credentials wins; a source that is configured explicitly (a profile, a file) and broken is
//! an error, not a reason to fall through to the next one, so that a typo never silently
//! signs with the instance role.
//!
//! The environment is passed in (the daemon gives its own), so the chain is tested without
//! touching the process's environment. Instance credentials are cached and fetched again
//! [`REFRESH_BEFORE`] their expiry; environment and file are read on every call, which is
//! cheap and picks up a rotated key.

use std::collections::BTreeMap;
use std::fmt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use zeroize::Zeroizing;

use crate::http::{self, HttpRequest};
use crate::{ActionResult, Failure, FailureKind};

/// The instance metadata service, when neither the settings nor the environment name one.
pub const DEFAULT_IMDS_ENDPOINT: &str = "http://169.254.169.254";

/// Lifetime asked for an IMDSv2 session token: the maximum, six hours; a token is used for
/// the two reads that follow it and then forgotten.
pub const IMDS_TOKEN_TTL_SECONDS: u32 = 21_600;

/// Instance credentials are fetched again this long before they expire, as the SDKs do, so
/// that a request signed just before expiry still arrives while the key is valid.
pub const REFRESH_BEFORE: Duration = Duration::from_secs(5 * 60);

/// A key pair and session token. The secret parts are wiped on drop and never printed.
#[derive(Clone)]
pub struct Credentials {
    pub access_key_id: String,
    pub(crate) secret_access_key: Zeroizing<String>,
    pub(crate) session_token: Option<Zeroizing<String>>,
    /// When temporary credentials stop working.
    pub expires: Option<SystemTime>,
    source: CredentialSource,
}

impl Credentials {
    /// Credentials given directly (tests, a caller's own source).
    pub fn new(
        access_key_id: impl Into<String>,
        secret_access_key: impl Into<String>,
        session_token: Option<String>,
    ) -> Credentials {
        Credentials {
            access_key_id: access_key_id.into(),
            secret_access_key: Zeroizing::new(secret_access_key.into()),
            session_token: session_token.map(Zeroizing::new),
            expires: None,
            source: CredentialSource::Given,
        }
    }

    pub fn secret_access_key(&self) -> &str {
        &self.secret_access_key
    }

    pub fn session_token(&self) -> Option<&str> {
        self.session_token.as_ref().map(|t| t.as_str())
    }

    /// Where these credentials came from, for status and logs.
    pub fn source(&self) -> &CredentialSource {
        &self.source
    }
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &"<redacted>")
            .field(
                "session_token",
                &self.session_token.as_ref().map(|_| "<redacted>"),
            )
            .field("expires", &self.expires)
            .field("source", &self.source)
            .finish()
    }
}

/// Which link of the chain gave the credentials.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CredentialSource {
    Given,
    Environment,
    SharedFile { path: PathBuf, profile: String },
    InstanceMetadata { role: String },
}

impl CredentialSource {
    /// A metrics label: `given`, `environment`, `shared_file`, `instance_metadata`.
    pub fn kind(&self) -> &'static str {
        match self {
            CredentialSource::Given => "given",
            CredentialSource::Environment => "environment",
            CredentialSource::SharedFile { .. } => "shared_file",
            CredentialSource::InstanceMetadata { .. } => "instance_metadata",
        }
    }
}

impl fmt::Display for CredentialSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CredentialSource::Given => f.write_str("given"),
            CredentialSource::Environment => f.write_str("environment"),
            CredentialSource::SharedFile { path, profile } => {
                write!(f, "shared file {} (profile {profile})", path.display())
            }
            CredentialSource::InstanceMetadata { role } => {
                write!(f, "instance metadata (role {role})")
            }
        }
    }
}

/// The chain's settings (`[aws]` in the config); `None` means: as the environment says, else
/// the SDKs' default.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CredentialSettings {
    /// Else `AWS_PROFILE`, else `default`.
    pub profile: Option<String>,
    /// Else `AWS_SHARED_CREDENTIALS_FILE`, else `$HOME/.aws/credentials`.
    pub credentials_file: Option<PathBuf>,
    /// Else `AWS_EC2_METADATA_SERVICE_ENDPOINT`, else [`DEFAULT_IMDS_ENDPOINT`].
    pub imds_endpoint: Option<String>,
    /// Bound on each request to the metadata service.
    pub timeout: Duration,
}

impl Default for CredentialSettings {
    fn default() -> Self {
        CredentialSettings {
            profile: None,
            credentials_file: None,
            imds_endpoint: None,
            // The metadata service answers in milliseconds on an instance; off one, the
            // link-local address goes nowhere and we want to say so soon.
            timeout: Duration::from_secs(2),
        }
    }
}

/// Environment → shared credentials file → IMDSv2.
pub struct CredentialChain {
    settings: CredentialSettings,
    env: BTreeMap<String, String>,
    instance: tokio::sync::Mutex<Option<Credentials>>,
    /// The source last used, to log when it changes.
    last_source: std::sync::Mutex<Option<String>>,
}

impl CredentialChain {
    /// `env`: the process environment (`std::env::vars()`), or a test's.
    pub fn new(
        settings: CredentialSettings,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> CredentialChain {
        CredentialChain {
            settings,
            env: env.into_iter().collect(),
            instance: tokio::sync::Mutex::new(None),
            last_source: std::sync::Mutex::new(None),
        }
    }

    /// The credentials to sign with now.
    pub async fn credentials(&self) -> ActionResult<Credentials> {
        self.credentials_at(SystemTime::now()).await
    }

    /// The credentials to sign with at `now` (which decides whether cached instance
    /// credentials are still fresh).
    pub async fn credentials_at(&self, now: SystemTime) -> ActionResult<Credentials> {
        let c = match self.read_env()? {
            Some(c) => c,
            None => match self.read_file()? {
                Some(c) => c,
                None => self.read_instance(now).await?,
            },
        };
        let source = c.source.to_string();
        let mut last = self.last_source.lock().unwrap_or_else(|p| p.into_inner());
        if last.as_deref() != Some(source.as_str()) {
            // Which credentials sign: the one thing to know when AWS refuses them.
            tracing::info!(source = %source, "AWS credentials");
            *last = Some(source);
        }
        Ok(c)
    }

    fn env(&self, name: &str) -> Option<&str> {
        self.env
            .get(name)
            .map(String::as_str)
            .filter(|v| !v.is_empty())
    }

    fn read_env(&self) -> ActionResult<Option<Credentials>> {
        match (
            self.env("AWS_ACCESS_KEY_ID"),
            self.env("AWS_SECRET_ACCESS_KEY"),
        ) {
            (Some(id), Some(secret)) => Ok(Some(Credentials {
                source: CredentialSource::Environment,
                ..Credentials::new(
                    id,
                    secret,
                    self.env("AWS_SESSION_TOKEN").map(str::to_string),
                )
            })),
            (None, None) => Ok(None),
            (Some(_), None) => Err(auth(
                "AWS_ACCESS_KEY_ID is set but AWS_SECRET_ACCESS_KEY is not: set both or neither",
            )),
            (None, Some(_)) => Err(auth(
                "AWS_SECRET_ACCESS_KEY is set but AWS_ACCESS_KEY_ID is not: set both or neither",
            )),
        }
    }

    /// The file and profile to read, and whether either was asked for explicitly.
    fn file_and_profile(&self) -> (Option<PathBuf>, bool, String, bool) {
        let (file, file_explicit) = match (
            &self.settings.credentials_file,
            self.env("AWS_SHARED_CREDENTIALS_FILE"),
        ) {
            (Some(p), _) => (Some(p.clone()), true),
            (None, Some(p)) => (Some(PathBuf::from(p)), true),
            (None, None) => (
                self.env("HOME")
                    .map(|h| Path::new(h).join(".aws").join("credentials")),
                false,
            ),
        };
        let (profile, profile_explicit) = match (&self.settings.profile, self.env("AWS_PROFILE")) {
            (Some(p), _) => (p.clone(), true),
            (None, Some(p)) => (p.to_string(), true),
            (None, None) => ("default".to_string(), false),
        };
        (file, file_explicit, profile, profile_explicit)
    }

    fn read_file(&self) -> ActionResult<Option<Credentials>> {
        let (file, file_explicit, profile, profile_explicit) = self.file_and_profile();
        let explicit = file_explicit || profile_explicit;
        let Some(path) = file else {
            if explicit {
                return Err(auth(format!(
                    "AWS profile {profile:?} asked for, but HOME is not set to find ~/.aws/credentials"
                )));
            }
            return Ok(None);
        };
        let p = path.display();
        let meta = match std::fs::metadata(&path) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !explicit => return Ok(None),
            Err(e) => return Err(auth(format!("AWS credentials file {p}: {e}"))),
        };
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(auth(format!(
                "AWS credentials file {p} is accessible to group or others (mode {mode:04o}): \
                 refusing to use it; chmod 600 {p}"
            )));
        }
        let text = Zeroizing::new(
            std::fs::read_to_string(&path)
                .map_err(|e| auth(format!("AWS credentials file {p}: {e}")))?,
        );
        let Some(section) = profile_section(&text, &profile) else {
            if explicit {
                return Err(auth(format!(
                    "AWS credentials file {p} has no profile [{profile}]"
                )));
            }
            return Ok(None);
        };
        let id = section.get("aws_access_key_id");
        let secret = section.get("aws_secret_access_key");
        let (Some(id), Some(secret)) = (id, secret) else {
            return Err(auth(format!(
                "AWS credentials file {p}, profile [{profile}]: needs both aws_access_key_id \
                 and aws_secret_access_key"
            )));
        };
        let token = section
            .get("aws_session_token")
            .or_else(|| section.get("aws_security_token"));
        Ok(Some(Credentials {
            source: CredentialSource::SharedFile {
                path: path.clone(),
                profile,
            },
            ..Credentials::new(id.as_str(), secret.as_str(), token.map(|t| t.to_string()))
        }))
    }

    fn imds_endpoint(&self) -> String {
        self.settings
            .imds_endpoint
            .clone()
            .or_else(|| {
                self.env("AWS_EC2_METADATA_SERVICE_ENDPOINT")
                    .map(str::to_string)
            })
            .unwrap_or_else(|| DEFAULT_IMDS_ENDPOINT.to_string())
            .trim_end_matches('/')
            .to_string()
    }

    async fn read_instance(&self, now: SystemTime) -> ActionResult<Credentials> {
        let mut cached = self.instance.lock().await;
        if let Some(c) = cached.as_ref() {
            if c.expires.is_none_or(|e| now + REFRESH_BEFORE < e) {
                return Ok(c.clone());
            }
        }
        match self.fetch_instance().await {
            Ok(c) => {
                tracing::debug!(source = %c.source, "fetched AWS instance credentials");
                *cached = Some(c.clone());
                Ok(c)
            }
            // Still valid for a few minutes: use them and try again next time.
            Err(e)
                if cached
                    .as_ref()
                    .is_some_and(|c| c.expires.is_some_and(|x| now < x)) =>
            {
                tracing::warn!(error = %e, "refreshing AWS instance credentials failed; using the cached ones until they expire");
                Ok(cached.as_ref().map(Credentials::clone).ok_or(e)?)
            }
            Err(e) => {
                let (file, _, profile, _) = self.file_and_profile();
                let file = file.map_or("(no HOME)".to_string(), |f| f.display().to_string());
                // Every source was tried: whatever the metadata service said, the operator's
                // problem is that there are no credentials, not that AWS is down.
                Err(Failure::new(
                    FailureKind::Auth,
                    format!(
                        "no AWS credentials: none in the environment, no profile [{profile}] in \
                         {file}, and instance metadata failed: {}",
                        e.message
                    ),
                ))
            }
        }
    }

    async fn fetch_instance(&self) -> ActionResult<Credentials> {
        let base = self.imds_endpoint();
        let timeout = self.settings.timeout;
        let token = imds(
            HttpRequest {
                method: "PUT".into(),
                url: format!("{base}/latest/api/token"),
                headers: vec![(
                    "x-aws-ec2-metadata-token-ttl-seconds".into(),
                    IMDS_TOKEN_TTL_SECONDS.to_string(),
                )],
                body: vec![],
            },
            timeout,
        )
        .await?;
        let token = Zeroizing::new(token.trim().to_string());
        let get = |path: String| HttpRequest {
            method: "GET".into(),
            url: format!("{base}/latest/meta-data/iam/security-credentials/{path}"),
            headers: vec![("x-aws-ec2-metadata-token".into(), token.to_string())],
            body: vec![],
        };
        let roles = imds(get(String::new()), timeout).await?;
        let role = roles
            .lines()
            .map(str::trim)
            .find(|l| !l.is_empty())
            .ok_or_else(|| {
                Failure::new(
                    FailureKind::Auth,
                    format!("{base}: the instance has no IAM role (instance profile)"),
                )
            })?
            .to_string();
        let body = Zeroizing::new(imds(get(role.clone()), timeout).await?);
        let bad = |what: &str| {
            Failure::new(
                FailureKind::Unavailable,
                format!("{base}: credentials of role {role}: {what}"),
            )
        };
        let v: serde_json::Value =
            serde_json::from_str(&body).map_err(|_| bad("not a JSON object"))?;
        if let Some(code) = v.get("Code").and_then(|c| c.as_str()) {
            if code != "Success" {
                return Err(bad(&format!("Code {code}")));
            }
        }
        let field = |k: &str| v.get(k).and_then(|x| x.as_str());
        let (Some(id), Some(secret)) = (field("AccessKeyId"), field("SecretAccessKey")) else {
            return Err(bad("no AccessKeyId/SecretAccessKey"));
        };
        let expires = match field("Expiration") {
            Some(e) => Some(parse_time(e).ok_or_else(|| bad(&format!("Expiration {e:?}")))?),
            None => None,
        };
        Ok(Credentials {
            expires,
            source: CredentialSource::InstanceMetadata { role },
            ..Credentials::new(id, secret, field("Token").map(str::to_string))
        })
    }
}

fn auth(message: impl Into<String>) -> Failure {
    Failure::new(FailureKind::Auth, message)
}

/// One metadata request; its body on 200.
async fn imds(req: HttpRequest, timeout: Duration) -> ActionResult<String> {
    let path = crate::http::Url::parse(&req.url)?.path_and_query;
    let r = http::send(&req, timeout).await?;
    match r.status {
        200 => Ok(r.text()),
        401 | 403 => Err(Failure::new(
            FailureKind::Auth,
            format!("instance metadata {} {path}: HTTP {}", req.method, r.status),
        )),
        404 => Err(Failure::new(
            FailureKind::Auth,
            format!(
                "instance metadata {} {path}: HTTP 404 (no IAM role attached?)",
                req.method
            ),
        )),
        s => Err(Failure::new(
            FailureKind::Unavailable,
            format!("instance metadata {} {path}: HTTP {s}", req.method),
        )),
    }
}

/// The `key = value` lines of `[profile]` in an INI credentials file.
fn profile_section(text: &str, profile: &str) -> Option<BTreeMap<String, Zeroizing<String>>> {
    let mut found = None;
    let mut in_section = false;
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            in_section = name.trim() == profile;
            if in_section {
                found.get_or_insert_with(BTreeMap::new);
            }
            continue;
        }
        if in_section {
            if let (Some(map), Some((k, v))) = (found.as_mut(), line.split_once('=')) {
                map.insert(
                    k.trim().to_ascii_lowercase(),
                    Zeroizing::new(v.trim().to_string()),
                );
            }
        }
    }
    found
}

/// `2026-12-01T12:00:00Z` (fractions of a second ignored) → `SystemTime`.
pub(crate) fn parse_time(s: &str) -> Option<SystemTime> {
    let s = s.trim().strip_suffix('Z')?;
    let (date, time) = s.split_once('T')?;
    let mut d = date.split('-').map(|x| x.parse::<i64>().ok());
    let (y, m, day) = (d.next()??, d.next()??, d.next()??);
    let time = time.split('.').next()?;
    let mut t = time.split(':').map(|x| x.parse::<i64>().ok());
    let (hh, mm, ss) = (t.next()??, t.next()??, t.next()??);
    if !(1..=12).contains(&m) || !(1..=31).contains(&day) || hh > 23 || mm > 59 || ss > 60 {
        return None;
    }
    // Days from 1970-01-01 of a proleptic Gregorian date (H. Hinnant's days_from_civil).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let secs = days * 86_400 + hh * 3600 + mm * 60 + ss;
    Some(SystemTime::UNIX_EPOCH + Duration::from_secs(u64::try_from(secs).ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expiration_times_read_as_utc() {
        let t =
            |s| parse_time(s).map(|t| t.duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs());
        assert_eq!(t("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(t("2015-08-30T12:36:00Z"), Some(1_440_938_160));
        assert_eq!(t("2024-02-29T23:59:59.123Z"), Some(1_709_251_199));
        assert_eq!(t("2024-02-29T23:59:59"), None);
        assert_eq!(t("2024-13-01T00:00:00Z"), None);
    }

    #[test]
    fn debug_output_never_shows_the_secret_or_the_token() {
        let c = Credentials::new("AKIDX", "s3cr3t", Some("t0ken".into()));
        let d = format!("{c:?}");
        assert!(
            d.contains("AKIDX") && !d.contains("s3cr3t") && !d.contains("t0ken"),
            "{d}"
        );
    }

    #[test]
    fn a_profile_section_is_found_by_name_with_comments_and_spaces() {
        let text = "# c\n[default]\naws_access_key_id=A\n\n[ prod ]\n; c\nAWS_Access_Key_Id = B \naws_secret_access_key= S\n";
        let s = profile_section(text, "prod").unwrap();
        assert_eq!(s.get("aws_access_key_id").map(|v| v.as_str()), Some("B"));
        assert_eq!(
            s.get("aws_secret_access_key").map(|v| v.as_str()),
            Some("S")
        );
        assert!(profile_section(text, "dev").is_none());
    }
}
