//! AWS: Route 53 records ([`Route53`]) and EC2 route tables ([`Ec2RouteTable`]), signed with
//! SigV4 ([`sign`]) by credentials from the SDKs' chain ([`CredentialChain`]).
//!
//! No SDK: both APIs are a few hand-built requests (REST-XML for Route 53, the EC2 Query
//! protocol) over [`crate::http::send`], and the few fields we read are taken from a small
//! XML tree. What each AWS error code means for the caller is decided in [`classify`] (the
//! codes shared by both services) and in each provider (the ones that mean
//! [`FailureKind::Conflict`] there).

pub mod credentials;
pub(crate) mod ec2;
pub(crate) mod route53;
mod sign;
pub(crate) mod xml;

pub use credentials::{CredentialChain, CredentialSettings, CredentialSource, Credentials};
pub use ec2::{Ec2RouteTable, Ec2RouteTableSettings};
pub use route53::{Route53, Route53Settings};
pub use sign::sign;

use std::time::{Duration, SystemTime};

use crate::http::{self, HttpRequest, HttpResponse};
use crate::{ActionResult, Failure, FailureKind};

/// An error answer: its code and message as AWS wrote them (empty when the body had none).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ApiError {
    pub status: u16,
    pub code: String,
    pub message: String,
}

impl ApiError {
    /// Route 53 answers `<ErrorResponse><Error><Code>`, EC2 `<Response><Errors><Error><Code>`,
    /// and Route 53's InvalidChangeBatch has its own root with a list of `<Message>`s.
    pub fn from_response(r: &HttpResponse) -> ApiError {
        let root = xml::parse(&r.text()).ok();
        let (code, message) = match &root {
            Some(root) if root.name == "InvalidChangeBatch" => {
                let messages: Vec<&str> = root
                    .find("Messages")
                    .map(|m| m.children("Message").map(|m| m.text.trim()).collect())
                    .unwrap_or_default();
                ("InvalidChangeBatch".to_string(), messages.join("; "))
            }
            Some(root) => (
                root.find("Code")
                    .map(|c| c.text.trim().to_string())
                    .unwrap_or_default(),
                root.find("Message")
                    .map(|c| c.text.trim().to_string())
                    .unwrap_or_default(),
            ),
            None => (String::new(), String::new()),
        };
        ApiError {
            status: r.status,
            code,
            message,
        }
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (self.code.is_empty(), self.message.is_empty()) {
            (true, _) => write!(f, "HTTP {}", self.status),
            (false, true) => write!(f, "HTTP {} {}", self.status, self.code),
            (false, false) => write!(f, "HTTP {} {}: {}", self.status, self.code, self.message),
        }
    }
}

/// The kind of failure for codes and statuses that mean the same in every AWS API; `None`
/// leaves it to the provider (a conflict there, else [`FailureKind::Rejected`]).
pub(crate) fn classify(e: &ApiError) -> Option<FailureKind> {
    match e.code.as_str() {
        "Throttling"
        | "ThrottlingException"
        | "PriorRequestNotComplete"
        | "RequestLimitExceeded"
        | "TooManyRequestsException"
        | "SlowDown" => return Some(FailureKind::Throttled),
        "SignatureDoesNotMatch"
        | "InvalidClientTokenId"
        | "AuthFailure"
        | "UnauthorizedOperation"
        | "AccessDenied"
        | "AccessDeniedException"
        | "ExpiredToken"
        | "InvalidAccessKeyId"
        | "MissingAuthenticationToken"
        | "RequestExpired" => return Some(FailureKind::Auth),
        _ => {}
    }
    match e.status {
        429 | 503 => Some(FailureKind::Throttled),
        401 | 403 => Some(FailureKind::Auth),
        500..=599 => Some(FailureKind::Unavailable),
        _ => None,
    }
}

/// Sign `req` with the chain's credentials now and send it.
pub(crate) async fn send_signed(
    mut req: HttpRequest,
    chain: &CredentialChain,
    region: &str,
    service: &str,
    timeout: Duration,
) -> ActionResult<HttpResponse> {
    let creds = chain.credentials().await?;
    sign(&mut req, &creds, region, service, SystemTime::now())?;
    http::send(&req, timeout).await
}

/// A failure for an error answer to `what`, with `kind` when the provider knows it.
pub(crate) fn failure(what: &str, e: &ApiError, kind: Option<FailureKind>) -> Failure {
    let kind = kind
        .or_else(|| classify(e))
        .unwrap_or(FailureKind::Rejected);
    Failure::new(kind, format!("{what}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(status: u16, body: &str) -> ApiError {
        ApiError::from_response(&HttpResponse {
            status,
            headers: vec![],
            body: body.as_bytes().to_vec(),
        })
    }

    #[test]
    fn error_codes_are_read_from_each_services_error_shape() {
        let r53 = answer(400, "<?xml version=\"1.0\"?><ErrorResponse xmlns=\"https://route53.amazonaws.com/doc/2013-04-01/\"><Error><Type>Sender</Type><Code>Throttling</Code><Message>Rate exceeded</Message></Error><RequestId>r</RequestId></ErrorResponse>");
        assert_eq!(
            (r53.code.as_str(), r53.message.as_str()),
            ("Throttling", "Rate exceeded")
        );
        assert_eq!(classify(&r53), Some(FailureKind::Throttled));
        let ec2 = answer(400, "<Response><Errors><Error><Code>InvalidRouteTableID.NotFound</Code><Message>The routeTable ID 'rtb-1' does not exist</Message></Error></Errors><RequestID>r</RequestID></Response>");
        assert_eq!(ec2.code, "InvalidRouteTableID.NotFound");
        assert_eq!(classify(&ec2), None);
        let batch = answer(400, "<InvalidChangeBatch xmlns=\"https://route53.amazonaws.com/doc/2013-04-01/\"><Messages><Message>Tried to delete resource record set [name='a.example.', type='A'] but it was not found</Message></Messages></InvalidChangeBatch>");
        assert_eq!(batch.code, "InvalidChangeBatch");
        assert!(batch.message.ends_with("but it was not found"), "{batch}");
        assert_eq!(classify(&answer(403, "")), Some(FailureKind::Auth));
        assert_eq!(
            classify(&answer(503, "not xml")),
            Some(FailureKind::Throttled)
        );
        assert_eq!(classify(&answer(502, "")), Some(FailureKind::Unavailable));
        assert_eq!(answer(500, "").to_string(), "HTTP 500");
    }
}
