//! The OCI API signing key: an unencrypted RSA private key in PEM, either PKCS#8
//! (`-----BEGIN PRIVATE KEY-----`, what `openssl genrsa` writes since OpenSSL 3) or PKCS#1
//! (`-----BEGIN RSA PRIVATE KEY-----`, older OpenSSL and the OCI console's download). The DER
//! is checked far enough to know it is an RSA private key of that form (outer structure, version,
//! for PKCS#8 the rsaEncryption algorithm); the signer parses the numbers.
//!
//! Messages never quote the file: only the PEM label (`EC PRIVATE KEY`) is named.

use base64::Engine as _;

use crate::model::{OciKey, OciKeyFormat, SecretBytes};
use crate::values::Invalid;

/// DER of the rsaEncryption OID, 1.2.840.113549.1.1.1.
const RSA_ENCRYPTION: &[u8] = &[
    0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01,
];

fn decrypt_hint(path: &str) -> String {
    let plain = format!(
        "{}-unencrypted.pem",
        path.strip_suffix(".pem").unwrap_or(path)
    );
    format!(
        "agentd cannot ask for a passphrase: write an unencrypted copy with \
         (umask 077; openssl rsa -in {path} -out {plain}) (it asks for the passphrase once) and \
         point key_file at it"
    )
}

/// Reads the key in `text`; `path` is only used in hints.
pub(crate) fn oci_key(text: &str, path: &str) -> Result<OciKey, Invalid> {
    let Some(begin) = text.find("-----BEGIN ") else {
        return Err(Invalid::new(
            "does not hold a PEM key (no -----BEGIN line)",
            "key_file is the API signing key's private PEM file, e.g. from \
             openssl genrsa -out oci_api_key.pem 2048",
        ));
    };
    let after = &text[begin + "-----BEGIN ".len()..];
    let Some(label_end) = after.find("-----") else {
        return Err(Invalid::new(
            "has a broken -----BEGIN line",
            "the first line must read -----BEGIN PRIVATE KEY----- or -----BEGIN RSA PRIVATE KEY-----",
        ));
    };
    let label = &after[..label_end];
    let format = match label {
        "PRIVATE KEY" => OciKeyFormat::Pkcs8,
        "RSA PRIVATE KEY" => OciKeyFormat::Pkcs1,
        "ENCRYPTED PRIVATE KEY" => {
            return Err(Invalid::new(
                "holds an encrypted private key",
                decrypt_hint(path),
            ))
        }
        "PUBLIC KEY" | "RSA PUBLIC KEY" => {
            return Err(Invalid::new(
                "holds a public key, not the private key",
                "key_file is the private key; its public half is what is uploaded to OCI",
            ))
        }
        other if other.len() <= 40 && other.bytes().all(|b| b.is_ascii_uppercase() || b == b' ') => {
            return Err(Invalid::new(
                format!("holds a {other}, not an RSA private key"),
                "OCI API keys are RSA: openssl genrsa -out oci_api_key.pem 2048",
            ))
        }
        _ => {
            return Err(Invalid::new(
                "has a broken -----BEGIN line",
                "the first line must read -----BEGIN PRIVATE KEY----- or -----BEGIN RSA PRIVATE KEY-----",
            ))
        }
    };
    let body_start = label_end + "-----".len();
    let end_marker = format!("-----END {label}-----");
    let Some(body_len) = after[body_start..].find(&end_marker) else {
        return Err(Invalid::new(
            format!("has no {end_marker} line"),
            "the file is cut short: copy the whole key file again",
        ));
    };
    let body = &after[body_start..body_start + body_len];
    // PKCS#1 PEM may carry RFC 1421 headers; Proc-Type 4,ENCRYPTED means a passphrase.
    if body
        .lines()
        .any(|l| l.trim_start().starts_with("Proc-Type:") && l.contains("ENCRYPTED"))
        || body.contains("DEK-Info:")
    {
        return Err(Invalid::new(
            "holds an encrypted private key",
            decrypt_hint(path),
        ));
    }
    let compact: zeroize::Zeroizing<String> = zeroize::Zeroizing::new(
        body.lines()
            .filter(|l| !l.contains(':'))
            .flat_map(|l| l.chars().filter(|c| !c.is_whitespace()))
            .collect(),
    );
    let der = base64::engine::general_purpose::STANDARD
        .decode(compact.as_bytes())
        .map(SecretBytes::new)
        .map_err(|_| {
            Invalid::new(
                "has a PEM body that is not valid base64",
                "the file is damaged: copy the whole key file again",
            )
        })?;
    check_der(der.expose(), format)?;
    Ok(OciKey { der, format })
}

fn check_der(der: &[u8], format: OciKeyFormat) -> Result<(), Invalid> {
    let broken = || {
        Invalid::new(
            "does not hold a well-formed RSA private key",
            "the file is damaged or not a key: copy it again, or create a new key with \
             openssl genrsa -out oci_api_key.pem 2048 and upload its public half",
        )
    };
    let (tag, outer, rest) = tlv(der).ok_or_else(broken)?;
    if tag != 0x30 || !rest.is_empty() {
        return Err(broken());
    }
    let (tag, version, after_version) = tlv(outer).ok_or_else(broken)?;
    if tag != 0x02 || version != [0] {
        return Err(broken());
    }
    match format {
        OciKeyFormat::Pkcs1 => {
            // RSAPrivateKey: version, then the modulus (an INTEGER).
            let (tag, _, _) = tlv(after_version).ok_or_else(broken)?;
            if tag != 0x02 {
                return Err(broken());
            }
        }
        OciKeyFormat::Pkcs8 => {
            let (tag, algorithm, after_algorithm) = tlv(after_version).ok_or_else(broken)?;
            if tag != 0x30 {
                return Err(broken());
            }
            if !algorithm.starts_with(RSA_ENCRYPTION) {
                return Err(Invalid::new(
                    "holds a private key that is not RSA (EC or Ed25519?)",
                    "OCI API keys are RSA: openssl genrsa -out oci_api_key.pem 2048",
                ));
            }
            let (tag, _, _) = tlv(after_algorithm).ok_or_else(broken)?;
            if tag != 0x04 {
                return Err(broken());
            }
        }
    }
    Ok(())
}

/// One DER tag-length-value: (tag, value, what follows).
fn tlv(bytes: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = bytes.split_first()?;
    let (&first, mut rest) = rest.split_first()?;
    let len = if first < 0x80 {
        usize::from(first)
    } else {
        let count = usize::from(first & 0x7f);
        if count == 0 || count > 4 || rest.len() < count {
            return None;
        }
        let (digits, after) = rest.split_at(count);
        rest = after;
        digits
            .iter()
            .fold(0usize, |n, &b| (n << 8) | usize::from(b))
    };
    if rest.len() < len {
        return None;
    }
    let (value, after) = rest.split_at(len);
    Some((tag, value, after))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pem(label: &str, der: &[u8]) -> String {
        let body = base64::engine::general_purpose::STANDARD.encode(der);
        format!("-----BEGIN {label}-----\n{body}\n-----END {label}-----\n")
    }

    /// A PKCS#1 skeleton: SEQUENCE { INTEGER 0, INTEGER 5 }.
    const PKCS1: &[u8] = &[0x30, 0x06, 0x02, 0x01, 0x00, 0x02, 0x01, 0x05];

    #[test]
    fn reads_the_der_of_both_forms() {
        let key = oci_key(&pem("RSA PRIVATE KEY", PKCS1), "k").unwrap();
        assert_eq!(key.format, OciKeyFormat::Pkcs1);
        assert_eq!(key.der.expose(), PKCS1);
        let mut info = vec![0x02, 0x01, 0x00, 0x30, 13];
        info.extend_from_slice(RSA_ENCRYPTION);
        info.extend_from_slice(&[0x05, 0x00, 0x04, PKCS1.len() as u8]);
        info.extend_from_slice(PKCS1);
        let mut pkcs8 = vec![0x30, info.len() as u8];
        pkcs8.extend_from_slice(&info);
        let key = oci_key(&pem("PRIVATE KEY", &pkcs8), "k").unwrap();
        assert_eq!(key.format, OciKeyFormat::Pkcs8);
        assert_eq!(key.der.expose(), pkcs8.as_slice());
    }

    #[test]
    fn refuses_encrypted_public_other_and_broken_keys() {
        let encrypted = "-----BEGIN RSA PRIVATE KEY-----\nProc-Type: 4,ENCRYPTED\n\
                         DEK-Info: AES-128-CBC,00\n\nAAAA\n-----END RSA PRIVATE KEY-----\n";
        for (text, message) in [
            (encrypted.to_string(), "encrypted"),
            (pem("ENCRYPTED PRIVATE KEY", PKCS1), "encrypted"),
            (pem("PUBLIC KEY", PKCS1), "public key"),
            (pem("EC PRIVATE KEY", PKCS1), "EC PRIVATE KEY"),
            (pem("PRIVATE KEY", PKCS1), "well-formed"),
            (pem("RSA PRIVATE KEY", &PKCS1[..5]), "well-formed"),
            ("hello".to_string(), "no -----BEGIN"),
            (
                pem("RSA PRIVATE KEY", PKCS1).replace("-----END RSA PRIVATE KEY-----", ""),
                "no -----END",
            ),
        ] {
            let e = oci_key(&text, "k.pem").unwrap_err();
            assert!(e.message.contains(message), "{message}: {e:?}");
        }
        assert!(oci_key(&pem("ENCRYPTED PRIVATE KEY", PKCS1), "k.pem")
            .unwrap_err()
            .hint
            .contains("openssl rsa -in k.pem -out k-unencrypted.pem"));
    }
}
