//! Oracle Cloud Infrastructure natively: DNS record sets ([`OciDns`]) and VCN route tables
//! ([`OciRouteTable`]) over OCI's REST API, signed with an API key ([`OciAuth`]).
//!
//! Both APIs write whole objects (a record set, a table's rule list) conditionally on an
//! `etag`: a provider reads, keeps the etag of what it read, and writes with `if-match`. A
//! `412 Precondition Failed` means that somebody else wrote in between, which is
//! [`FailureKind::Conflict`]: the caller reads again and decides again. How OCI's answers map to
//! failure kinds is decided once, in [`failure`].
//!
//! There is no Rust crate for this that fits (body signing, PKCS#1 keys, no `rsa` crate with
//! its timing advisory): the signer is ~100 lines on `ring`.

pub(crate) mod dns;
pub(crate) mod route_table;
pub mod signer;

use std::sync::Arc;
use std::time::{Duration, SystemTime};

pub use dns::{OciDns, OciDnsConfig};
pub use route_table::{OciRouteTable, OciRouteTableConfig};
pub use signer::{KeyFormat, OciAuth, RsaKey};

use crate::http::{self, HttpRequest, HttpResponse};
use crate::{Failure, FailureKind};

/// Where the date of a request's signature comes from: the system clock, or a test's.
pub type Clock = Arc<dyn Fn() -> SystemTime + Send + Sync>;

fn system_clock() -> Clock {
    Arc::new(SystemTime::now)
}

/// Signs and sends requests for one provider.
struct Client {
    auth: Arc<OciAuth>,
    timeout: Duration,
    clock: Clock,
}

impl Client {
    /// Send one signed request; any status but 2xx is a [`Failure`] made by [`failure`], with
    /// `what` (e.g. `OCI DNS PUT example.com A`) in front of its message.
    async fn call(
        &self,
        what: &str,
        method: &str,
        url: String,
        headers: Vec<(String, String)>,
        body: Option<Vec<u8>>,
    ) -> Result<HttpResponse, Failure> {
        let resp = self.send(what, method, url, headers, body).await?;
        if (200..300).contains(&resp.status) {
            Ok(resp)
        } else {
            Err(failure(what, &resp))
        }
    }

    /// Send one signed request and return whatever status came back.
    async fn send(
        &self,
        what: &str,
        method: &str,
        url: String,
        headers: Vec<(String, String)>,
        body: Option<Vec<u8>>,
    ) -> Result<HttpResponse, Failure> {
        let mut req = HttpRequest {
            method: method.to_string(),
            url,
            headers,
            body: body.unwrap_or_default(),
        };
        req.headers
            .push(("accept".to_string(), "application/json".to_string()));
        self.auth.sign(&mut req, (self.clock)())?;
        http::send(&req, self.timeout).await.map_err(|e| Failure {
            kind: e.kind,
            message: format!("{what}: {}", e.message),
        })
    }
}

/// What an OCI error answer means for the caller. OCI's body is
/// `{"code": "...", "message": "..."}`; both go into the message, with `opc-request-id`,
/// which Oracle support asks for.
pub(crate) fn failure(what: &str, resp: &HttpResponse) -> Failure {
    let body: serde_json::Value = serde_json::from_slice(&resp.body).unwrap_or_default();
    let code = body
        .get("code")
        .and_then(|c| c.as_str())
        .unwrap_or_default();
    let kind = match resp.status {
        // The etag given in if-match is no longer the object's: somebody else wrote.
        412 => FailureKind::Conflict,
        // Another change to the same object is in progress (OCI `Conflict`, `IncorrectState`
        // on a table that is being updated): the same remedy, read again and decide again.
        409 => FailureKind::Conflict,
        401 | 403 => FailureKind::Auth,
        _ if code == "NotAuthenticated" => FailureKind::Auth,
        429 => FailureKind::Throttled,
        s if s >= 500 => FailureKind::Unavailable,
        _ => FailureKind::Rejected,
    };
    let text = body
        .get("message")
        .and_then(|m| m.as_str())
        .map(str::to_string)
        .unwrap_or_else(|| {
            let t = resp.text();
            t.chars().take(200).collect()
        });
    let mut message = format!("{what}: HTTP {}", resp.status);
    if !code.is_empty() {
        message.push_str(&format!(" {code}"));
    }
    if !text.is_empty() {
        message.push_str(&format!(": {text}"));
    }
    if let Some(id) = resp.header("opc-request-id") {
        message.push_str(&format!(" (opc-request-id {id})"));
    }
    Failure::new(kind, message)
}

/// One path segment or query value, percent-encoded.
use crate::http::percent_encode as encode;

/// The endpoint without a trailing `/`, checked to be a URL.
fn endpoint(given: Option<&str>, default: String) -> Result<String, Failure> {
    let e = given.map(str::to_string).unwrap_or(default);
    let e = e.trim_end_matches('/').to_string();
    http::Url::parse(&e)?;
    Ok(e)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resp(status: u16, body: &str) -> HttpResponse {
        HttpResponse {
            status,
            headers: vec![("opc-request-id".into(), "R1".into())],
            body: body.as_bytes().to_vec(),
        }
    }

    #[test]
    fn oci_answers_map_to_failure_kinds_with_code_and_message() {
        let kind = |s, b| failure("x", &resp(s, b)).kind;
        assert_eq!(kind(412, ""), FailureKind::Conflict);
        assert_eq!(kind(401, ""), FailureKind::Auth);
        assert_eq!(kind(403, ""), FailureKind::Auth);
        assert_eq!(
            kind(400, r#"{"code":"NotAuthenticated"}"#),
            FailureKind::Auth
        );
        assert_eq!(kind(429, ""), FailureKind::Throttled);
        assert_eq!(kind(503, ""), FailureKind::Unavailable);
        assert_eq!(kind(404, ""), FailureKind::Rejected);
        let f = failure(
            "OCI DNS PUT a.example.com A",
            &resp(400, r#"{"code":"InvalidParameter","message":"bad rdata"}"#),
        );
        assert_eq!(f.kind, FailureKind::Rejected);
        assert_eq!(
            f.message,
            "OCI DNS PUT a.example.com A: HTTP 400 InvalidParameter: bad rdata (opc-request-id R1)"
        );
    }

    #[test]
    fn path_segments_are_percent_encoded() {
        assert_eq!(encode("ocid1.zone.oc1..aa-b_c~"), "ocid1.zone.oc1..aa-b_c~");
        assert_eq!(encode("a b/c"), "a%20b%2Fc");
    }
}
