//! AWS Signature Version 4 over our [`HttpRequest`], by the `aws-sigv4` crate (the SDK's own
//! signer, without the SDK). The request is signed as it will be sent: the `Host` header is
//! added first, so that the signed host is the one `http::send` puts on the wire, and headers
//! of an earlier signature are dropped, so that a request can be signed again for a retry.

use std::time::SystemTime;

use aws_sigv4::http_request::{SignableBody, SignableRequest, SigningSettings};
use aws_sigv4::sign::v4::SigningParams;

use super::Credentials;
use crate::http::{HttpRequest, Url};
use crate::{ActionResult, Failure, FailureKind};

/// Headers a signature adds; removed before signing again.
const SIGNATURE_HEADERS: [&str; 4] = [
    "authorization",
    "x-amz-date",
    "x-amz-security-token",
    "x-amz-content-sha256",
];

/// Sign `request` for `service` in `region` at `time`: adds `Host` (unless present),
/// `X-Amz-Date`, `X-Amz-Security-Token` (with a session token) and `Authorization`.
pub fn sign(
    request: &mut HttpRequest,
    creds: &Credentials,
    region: &str,
    service: &str,
    time: SystemTime,
) -> ActionResult<()> {
    let failed = |what: &str, e: &dyn std::fmt::Display| {
        Failure::new(
            FailureKind::Rejected,
            format!("signing {} {}: {what}: {e}", request.method, request.url),
        )
    };
    let url = Url::parse(&request.url)?;
    request
        .headers
        .retain(|(n, _)| !SIGNATURE_HEADERS.iter().any(|s| n.eq_ignore_ascii_case(s)));
    if !request
        .headers
        .iter()
        .any(|(n, _)| n.eq_ignore_ascii_case("host"))
    {
        request
            .headers
            .insert(0, ("host".into(), url.host_header()));
    }
    let identity = aws_credential_types::Credentials::new(
        creds.access_key_id.as_str(),
        creds.secret_access_key.as_str(),
        creds.session_token.as_ref().map(|t| t.to_string()),
        None,
        "isthmus",
    )
    .into();
    let params: aws_sigv4::http_request::SigningParams<'_> = SigningParams::builder()
        .identity(&identity)
        .region(region)
        .name(service)
        .time(time)
        .settings(SigningSettings::default())
        .build()
        .map_err(|e| failed("parameters", &e))?
        .into();
    let signable = SignableRequest::new(
        &request.method,
        request.url.as_str(),
        request
            .headers
            .iter()
            .map(|(n, v)| (n.as_str(), v.as_str())),
        SignableBody::Bytes(&request.body),
    )
    .map_err(|e| failed("request", &e))?;
    let (instructions, _signature) = aws_sigv4::http_request::sign(signable, &params)
        .map_err(|e| failed("signature", &e))?
        .into_parts();
    let added: Vec<(String, String)> = instructions
        .headers()
        .map(|(n, v)| (n.to_string(), v.to_string()))
        .collect();
    request.headers.extend(added);
    Ok(())
}

/// Query strings and form bodies are encoded as SigV4 wants them.
pub use crate::http::percent_encode as encode;

/// `k=v&k=v`, both encoded: a query string or an `x-www-form-urlencoded` body.
pub fn form(pairs: &[(&str, &str)]) -> String {
    pairs
        .iter()
        .map(|(k, v)| format!("{}={}", encode(k), encode(v)))
        .collect::<Vec<_>>()
        .join("&")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn creds(token: Option<&str>) -> Credentials {
        Credentials::new(
            "AKIDEXAMPLE",
            "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
            token.map(str::to_string),
        )
    }

    #[test]
    fn a_signature_adds_host_date_token_and_authorization_and_replaces_an_older_one() {
        let mut req = HttpRequest {
            method: "GET".into(),
            url: "https://route53.amazonaws.com/2013-04-01/change/C1".into(),
            headers: vec![],
            body: vec![],
        };
        // 2015-08-30T12:36:00Z, the date of AWS's own SigV4 examples.
        let t = SystemTime::UNIX_EPOCH + Duration::from_secs(1_440_938_160);
        sign(&mut req, &creds(Some("tok")), "us-east-1", "route53", t).unwrap();
        let names: Vec<String> = req.headers.iter().map(|(n, _)| n.to_lowercase()).collect();
        assert_eq!(
            names,
            [
                "host",
                "x-amz-date",
                "authorization",
                "x-amz-security-token"
            ],
            "{req:?}"
        );
        let get = |req: &HttpRequest, n: &str| {
            req.headers
                .iter()
                .find(|(h, _)| h.eq_ignore_ascii_case(n))
                .map(|(_, v)| v.clone())
                .unwrap()
        };
        assert_eq!(get(&req, "host"), "route53.amazonaws.com");
        assert_eq!(get(&req, "x-amz-date"), "20150830T123600Z");
        let auth = get(&req, "authorization");
        assert!(
            auth.starts_with(
                "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/route53/aws4_request, \
                 SignedHeaders=host;x-amz-date;x-amz-security-token, Signature="
            ),
            "{auth}"
        );
        let first = auth.clone();
        sign(&mut req, &creds(None), "us-east-1", "route53", t).unwrap();
        assert_eq!(req.headers.len(), 3, "{req:?}");
        assert_ne!(get(&req, "authorization"), first);
    }

    #[test]
    fn form_values_are_percent_encoded_except_unreserved_characters() {
        assert_eq!(
            form(&[("DestinationCidrBlock", "10.2.0.0/16"), ("a b", "x~y+z")]),
            "DestinationCidrBlock=10.2.0.0%2F16&a%20b=x~y%2Bz"
        );
    }
}
