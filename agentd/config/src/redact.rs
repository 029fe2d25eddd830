//! Secrets pasted into the config itself. The config names key files and never holds a key,
//! but an operator may paste one anyway: a key under a key of its own (`private_key = "…"`,
//! `aws_secret_access_key = "…"`), or the key where its file's path belongs
//! (`private_key_file = "<the key>"`). A diagnostic about such a line must not repeat the key:
//! it reaches `netctl`, the control socket and agentd's log (a rejected reload). So the line a
//! diagnostic shows has the value masked ([`mask_line`]), and checks of paths say that a value
//! looks like a key instead of quoting it ([`looks_like_secret`]).

use std::borrow::Cow;

/// Shortest value taken for a pasted key: a 16-byte secret in base64 is 24 characters, a
/// WireGuard key 44, an AWS secret access key 40. Shorter strings are file names.
const MIN_SECRET_CHARS: usize = 24;

/// Whether `value` (given where a path or name belongs) looks like a key rather than a path: a
/// PEM block, or base64-like text of at least [`MIN_SECRET_CHARS`] with no `.`, mixing upper
/// case, lower case and digits, as random keys do and file names rarely do. A value starting
/// with `/` counts only if it also holds `+` or `=` or is one segment (`/` is base64 too).
pub(crate) fn looks_like_secret(value: &str) -> bool {
    if value.contains("-----BEGIN") || value.contains("PRIVATE KEY") {
        return true;
    }
    let value = value.trim();
    let base64ish = value
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '/' | '=' | '-' | '_'));
    let mixed = value.chars().any(|c| c.is_ascii_uppercase())
        && value.chars().any(|c| c.is_ascii_lowercase())
        && value.chars().any(|c| c.is_ascii_digit());
    let path_like =
        value.starts_with('/') && !value.contains(['+', '=']) && value[1..].contains('/');
    value.chars().count() >= MIN_SECRET_CHARS && base64ish && mixed && !path_like
}

/// Whether a config key's name says that its value is a secret (`private_key`, `psk`,
/// `secret`, `aws_session_token`, `password`…), not a file, a name or an id of one, and not a
/// public key.
fn names_a_secret(key: &str) -> bool {
    let key = key.to_ascii_lowercase();
    if ["_file", "_path", "_name", "_id"]
        .iter()
        .any(|s| key.ends_with(s))
        || key.contains("public")
    {
        return false;
    }
    key == "key"
        || key.ends_with("_key")
        || [
            "secret",
            "token",
            "password",
            "passwd",
            "passphrase",
            "private",
            "preshared",
            "psk",
            "credential",
        ]
        .iter()
        .any(|w| key.contains(w))
}

/// `line` with the value masked (each character a `*`, so columns and carets stay right) if it
/// is `key = value` and the key names a secret, or names a file whose value looks like a key.
/// Other lines (a public key among them) are returned as they are.
pub(crate) fn mask_line(line: &str) -> Cow<'_, str> {
    let Some(eq) = line.find('=') else {
        return Cow::Borrowed(line);
    };
    let (key, value) = (&line[..eq], &line[eq + 1..]);
    // The last part of a dotted key (`link.private_key`), without quotes.
    let key = key.trim().rsplit('.').next().unwrap_or("").trim();
    let key = key.trim_matches(|c| c == '"' || c == '\'');
    let inner = value
        .trim()
        .trim_start_matches(['"', '\''])
        .split(['"', '\''])
        .next()
        .unwrap_or("");
    let names_a_file = key.ends_with("_file") || key.ends_with("_path");
    if key.is_empty() || !(names_a_secret(key) || names_a_file && looks_like_secret(inner)) {
        return Cow::Borrowed(line);
    }
    let masked: String = value
        .chars()
        .map(|c| if c.is_whitespace() { c } else { '*' })
        .collect();
    Cow::Owned(format!("{}={masked}", &line[..eq]))
}

#[cfg(test)]
mod tests {
    use super::*;

    const WG: &str = "sGmCGSIGMcfR6vYHcRs3ZWvucxpbDj+gaTjB8d2o8n4=";

    #[test]
    fn keys_look_like_secrets_and_paths_do_not() {
        for secret in [
            WG,
            "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
            "/K7MDENGbPxRfiCYEXAMPLEKEYwJalrXUtnFEMI9",
            "-----BEGIN PRIVATE KEY-----",
            "MIIEvQIBADANBgkqhkiG9w0BAQEFAASC",
        ] {
            assert!(looks_like_secret(secret), "{secret}");
        }
        for path in [
            "private.key",
            "/etc/isthmus/private.key",
            "/etc/isthmus/Keys2024/WireGuardPrivateKeyFile",
            "interconnect-psk",
            "/var/lib/isthmus/credentials",
            "tsig-failover-key-2024-primary-site",
        ] {
            assert!(!looks_like_secret(path), "{path}");
        }
    }

    #[test]
    fn a_line_with_a_secret_is_masked_to_the_same_width() {
        for (line, key) in [
            (format!("private_key = \"{WG}\""), "private_key"),
            (format!("  psk = '{WG}'  # pasted"), "psk"),
            ("aws_secret_access_key = hunter2hunter2".to_string(), "aws"),
            (format!("private_key_file = \"{WG}\""), "private_key_file"),
            (format!("link.preshared_key = {WG}"), "link.preshared_key"),
        ] {
            let masked = mask_line(&line);
            assert!(!masked.contains("hunter2"), "{masked}");
            assert!(!masked.contains(&WG[..8]), "{masked}");
            assert!(masked.contains(key), "the key stays: {masked}");
            assert_eq!(masked.chars().count(), line.chars().count(), "{masked}");
        }
    }

    #[test]
    fn other_lines_are_shown_as_they_are() {
        for line in [
            "private_key_file = \"private.key\"",
            "peer_public_key = \"xTIBA5rboUvnH4htodjb6e697QjLERt1NAB4mZqp8Dg=\"",
            "tsig_key_name = \"failover-key\"",
            "listen = \"192.0.2.1:99999\"",
            "[[link]]",
            "fingerprint = \"20:3a:9f:00:11:22:33:44:55:66:77:88:99:aa:bb:cc\"",
        ] {
            assert_eq!(mask_line(line), line);
        }
    }
}
