//! OCI request signatures, version 1: draft-cavage-http-signatures-08 with RSA-SHA256 and
//! Oracle's choice of headers.
//!
//! A request is signed in three steps, kept apart so that each can be checked against Oracle's
//! published test vector on its own: [`prepare`] adds the headers that are signed (`date`,
//! `host`; for a request with a body also `content-length`, `content-type` and
//! `x-content-sha256`, the base64 SHA-256 of the body, empty bodies included) and says which
//! they are; [`signing_string`] lays them out as `name: value` lines; [`authorization`] formats
//! the header that carries the signature. [`OciAuth::sign`] does all three with the user's key.
//!
//! PKCS#1 v1.5 signatures are deterministic: the same key, request and date give the same
//! header byte for byte, which is what the tests compare (against Oracle's vector and against
//! the `oci` Python SDK). Keys are RSA 2048 to 4096 bits, as OCI requires for API keys and as
//! `ring` enforces; the 1024-bit key of Oracle's examples is refused.

use std::fmt;
use std::time::SystemTime;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use ring::rand::SystemRandom;
use ring::signature::{RsaKeyPair, RSA_PKCS1_SHA256};
use zeroize::Zeroizing;

use crate::http::{HttpRequest, Url};
use crate::{Failure, FailureKind};

/// The headers signed on every request, in the order OCI expects them.
pub const GENERIC_HEADERS: &[&str] = &["date", "(request-target)", "host"];

/// The headers signed on a request with a body (POST, PUT, PATCH).
pub const BODY_HEADERS: &[&str] = &[
    "date",
    "(request-target)",
    "host",
    "content-length",
    "content-type",
    "x-content-sha256",
];

/// How the DER bytes of a private key are laid out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyFormat {
    /// `PrivateKeyInfo` (PEM `BEGIN PRIVATE KEY`), what `openssl genpkey` and OpenSSL 3's
    /// `genrsa` write.
    Pkcs8,
    /// `RSAPrivateKey` (PEM `BEGIN RSA PRIVATE KEY`), what `oci setup keys` and the console's
    /// "generate API key pair" write.
    Pkcs1,
}

/// An RSA private key for signing. Its `Debug` shows the size, never the key.
pub struct RsaKey {
    pair: RsaKeyPair,
}

impl RsaKey {
    /// A key from its DER bytes.
    pub fn from_der(der: &[u8], format: KeyFormat) -> Result<RsaKey, Failure> {
        let pair = match format {
            KeyFormat::Pkcs8 => RsaKeyPair::from_pkcs8(der),
            KeyFormat::Pkcs1 => RsaKeyPair::from_der(der),
        }
        .map_err(|e| {
            Failure::new(
                FailureKind::Rejected,
                format!(
                    "the OCI API key is not a usable {format:?} RSA private key ({e}); \
                     OCI API keys are unencrypted RSA keys of 2048 to 4096 bits"
                ),
            )
        })?;
        Ok(RsaKey { pair })
    }

    /// A key from PEM text: `BEGIN RSA PRIVATE KEY` (PKCS#1) or `BEGIN PRIVATE KEY` (PKCS#8).
    /// Encrypted keys are refused: the daemon has nobody to ask for a pass phrase.
    pub fn from_pem(pem: &str) -> Result<RsaKey, Failure> {
        let rejected =
            |why: &str| Failure::new(FailureKind::Rejected, format!("OCI API key: {why}"));
        let (format, label) = if pem.contains("-----BEGIN RSA PRIVATE KEY-----") {
            (KeyFormat::Pkcs1, "RSA PRIVATE KEY")
        } else if pem.contains("-----BEGIN PRIVATE KEY-----") {
            (KeyFormat::Pkcs8, "PRIVATE KEY")
        } else if pem.contains("ENCRYPTED") {
            return Err(rejected(
                "the key is encrypted; decrypt it (openssl rsa -in key.pem -out plain.pem)",
            ));
        } else {
            return Err(rejected(
                "no PEM block `BEGIN RSA PRIVATE KEY` or `BEGIN PRIVATE KEY` found",
            ));
        };
        let begin = format!("-----BEGIN {label}-----");
        let end = format!("-----END {label}-----");
        let start = pem.find(&begin).map(|i| i + begin.len()).unwrap_or(0);
        let stop = pem[start..]
            .find(&end)
            .map(|i| start + i)
            .ok_or_else(|| rejected(&format!("no `{end}` line")))?;
        let body = &pem[start..stop];
        if body.contains("Proc-Type:") {
            return Err(rejected(
                "the key is encrypted; decrypt it (openssl rsa -in key.pem -out plain.pem)",
            ));
        }
        let text: Zeroizing<String> =
            Zeroizing::new(body.chars().filter(|c| !c.is_whitespace()).collect());
        let der = Zeroizing::new(
            B64.decode(text.as_bytes())
                .map_err(|_| rejected("the PEM block is not valid base64"))?,
        );
        RsaKey::from_der(&der, format)
    }

    /// The size of the modulus in bits.
    pub fn bits(&self) -> usize {
        self.pair.public().modulus_len() * 8
    }

    /// The public key as DER `RSAPublicKey` (PKCS#1), e.g. to verify signatures in a test.
    pub fn public_key_der(&self) -> &[u8] {
        self.pair.public().as_ref()
    }

    /// The base64 RSASSA-PKCS1-v1_5 SHA-256 signature of `data`.
    fn sign(&self, data: &[u8]) -> Result<String, Failure> {
        let mut sig = vec![0u8; self.pair.public().modulus_len()];
        self.pair
            .sign(&RSA_PKCS1_SHA256, &SystemRandom::new(), data, &mut sig)
            .map_err(|_| {
                Failure::new(FailureKind::Rejected, "signing with the OCI API key failed")
            })?;
        Ok(B64.encode(sig))
    }
}

impl fmt::Debug for RsaKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RsaKey({} bits)", self.bits())
    }
}

/// The identity an OCI API key signs for: the user in the tenancy, and the key by the
/// fingerprint the console shows for it.
#[derive(Debug)]
pub struct OciAuth {
    /// The tenancy's OCID.
    pub tenancy: String,
    /// The user's OCID.
    pub user: String,
    /// The key's fingerprint, `aa:bb:…` (MD5 of the public key's DER, as the console shows).
    pub fingerprint: String,
    pub key: RsaKey,
}

impl OciAuth {
    /// `<tenancy>/<user>/<fingerprint>`.
    pub fn key_id(&self) -> String {
        format!("{}/{}/{}", self.tenancy, self.user, self.fingerprint)
    }

    /// Sign `req` as sent at `now`: adds `date`, `host`, the body headers where the method
    /// has a body, and `authorization`. Fails only if the URL is not one.
    pub fn sign(&self, req: &mut HttpRequest, now: SystemTime) -> Result<(), Failure> {
        self.sign_dated(req, &http_date(now))
    }

    /// [`OciAuth::sign`] with the `date` header's text given. Oracle's test vector needs this:
    /// its date, `Thu, 05 Jan 2014 21:31:40 GMT`, names the wrong weekday (that day was a
    /// Sunday), so no `SystemTime` formats to it.
    pub fn sign_dated(&self, req: &mut HttpRequest, date: &str) -> Result<(), Failure> {
        let headers = prepare(req, date)?;
        let text = signing_string(req, headers)?;
        let signature = self.key.sign(text.as_bytes())?;
        set_header(
            req,
            "authorization",
            authorization(&self.key_id(), headers, &signature),
        );
        Ok(())
    }
}

/// Whether OCI signs the body of a request with this method.
pub fn signs_body(method: &str) -> bool {
    ["POST", "PUT", "PATCH"]
        .iter()
        .any(|m| m.eq_ignore_ascii_case(method))
}

/// Add the headers that are signed to `req` and return their names in signing order. `date`
/// (RFC 7231 text, see [`http_date`]) is always replaced (a signature is only valid for five minutes around it); `host` and
/// `content-type` (default `application/json`) are kept if the request has them;
/// `content-length` and `x-content-sha256` are computed from the body.
pub fn prepare(req: &mut HttpRequest, date: &str) -> Result<&'static [&'static str], Failure> {
    let url = Url::parse(&req.url)?;
    set_header(req, "date", date.to_string());
    if header(req, "host").is_none() {
        set_header(req, "host", url.host_header());
    }
    if !signs_body(&req.method) {
        return Ok(GENERIC_HEADERS);
    }
    if header(req, "content-type").is_none() {
        set_header(req, "content-type", "application/json".to_string());
    }
    let length = req.body.len().to_string();
    set_header(req, "content-length", length);
    let digest = ring::digest::digest(&ring::digest::SHA256, &req.body);
    set_header(req, "x-content-sha256", B64.encode(digest.as_ref()));
    Ok(BODY_HEADERS)
}

/// The text that is signed: one `name: value` line per header in `headers`, joined by `\n`;
/// `(request-target)` is the lowercase method, a space, and the path with its query as sent.
pub fn signing_string(req: &HttpRequest, headers: &[&str]) -> Result<String, Failure> {
    let url = Url::parse(&req.url)?;
    let mut lines = Vec::with_capacity(headers.len());
    for &name in headers {
        let value = if name == "(request-target)" {
            format!("{} {}", req.method.to_ascii_lowercase(), url.path_and_query)
        } else {
            header(req, name)
                .ok_or_else(|| {
                    Failure::new(
                        FailureKind::Rejected,
                        format!("cannot sign: the request has no {name} header"),
                    )
                })?
                .to_string()
        };
        lines.push(format!("{name}: {value}"));
    }
    Ok(lines.join("\n"))
}

/// The `Authorization` header value. The parameters are in the order of Oracle's published
/// example (and of the Go and Java SDKs); draft-cavage lets the server accept any order, and
/// the Python SDK writes them alphabetically.
pub fn authorization(key_id: &str, headers: &[&str], signature: &str) -> String {
    format!(
        "Signature version=\"1\",headers=\"{}\",keyId=\"{key_id}\",algorithm=\"rsa-sha256\",signature=\"{signature}\"",
        headers.join(" ")
    )
}

/// `now` as an RFC 7231 IMF-fixdate: `Thu, 05 Jan 2014 21:31:40 GMT`.
pub fn http_date(now: SystemTime) -> String {
    httpdate::fmt_http_date(now)
}

fn header<'a>(req: &'a HttpRequest, name: &str) -> Option<&'a str> {
    req.headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

fn set_header(req: &mut HttpRequest, name: &str, value: String) {
    req.headers.retain(|(n, _)| !n.eq_ignore_ascii_case(name));
    req.headers.push((name.to_string(), value));
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    #[test]
    fn dates_are_imf_fixdate_in_gmt() {
        // 2014-01-05T21:31:40Z, the time of Oracle's test vector (which says "Thu").
        let t = UNIX_EPOCH + Duration::from_secs(1_388_957_500);
        assert_eq!(http_date(t), "Sun, 05 Jan 2014 21:31:40 GMT");
    }

    #[test]
    fn a_get_signs_date_target_and_host_and_a_put_also_its_body() {
        let t = "Thu, 05 Jan 2014 21:31:40 GMT";
        let mut get = HttpRequest {
            method: "GET".into(),
            url: "http://127.0.0.1:8080/a?b=c".into(),
            headers: vec![],
            body: vec![],
        };
        let names = prepare(&mut get, t).unwrap();
        assert_eq!(
            signing_string(&get, names).unwrap(),
            "date: Thu, 05 Jan 2014 21:31:40 GMT\n(request-target): get /a?b=c\nhost: 127.0.0.1:8080"
        );
        let mut put = HttpRequest {
            method: "PUT".into(),
            url: "https://x.example/p".into(),
            headers: vec![],
            body: vec![],
        };
        let names = prepare(&mut put, t).unwrap();
        assert_eq!(names, BODY_HEADERS);
        // SHA-256 of nothing: OCI wants the header on empty bodies too.
        assert_eq!(
            header(&put, "x-content-sha256"),
            Some("47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=")
        );
        assert_eq!(header(&put, "content-length"), Some("0"));
        assert_eq!(header(&put, "content-type"), Some("application/json"));
    }

    #[test]
    fn pem_that_is_not_a_private_key_is_refused_without_echoing_it() {
        let err = RsaKey::from_pem("-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----")
            .unwrap_err();
        assert_eq!(err.kind, FailureKind::Rejected);
        assert!(!err.message.contains("AAAA"), "{err}");
        let err = RsaKey::from_pem(
            "-----BEGIN ENCRYPTED PRIVATE KEY-----\nAAAA\n-----END ENCRYPTED PRIVATE KEY-----",
        )
        .unwrap_err();
        assert!(err.message.contains("encrypted"), "{err}");
        let err = RsaKey::from_pem("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----")
            .unwrap_err();
        assert!(err.message.contains("2048"), "{err}");
    }
}
