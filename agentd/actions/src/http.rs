//! One HTTP/1.1 request at a time, over `http://` or `https://` (rustls, the system's roots):
//! what the cloud APIs need, no more. Each request opens its own connection, so a slow or dead
//! endpoint holds nothing but the task that asked, and the whole request (connect, TLS, send,
//! the full body) is bounded by one timeout. Bodies are capped: an API answer larger than
//! [`MAX_BODY`] is an error, not a memory problem.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::Request;
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;

use crate::{Failure, FailureKind};

/// The largest response body read.
pub const MAX_BODY: usize = 4 << 20;

/// A request to send: method, absolute URL, headers in order, body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpRequest {
    pub method: String,
    pub url: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

/// What came back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl HttpResponse {
    /// The first header of that name (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// The parts of a URL a request needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Url {
    pub https: bool,
    pub host: String,
    pub port: u16,
    /// Path and query, starting with `/`.
    pub path_and_query: String,
}

impl Url {
    pub fn parse(url: &str) -> Result<Url, Failure> {
        let bad = || Failure::new(FailureKind::Rejected, format!("{url:?} is not a URL"));
        let (https, rest) = if let Some(r) = url.strip_prefix("https://") {
            (true, r)
        } else if let Some(r) = url.strip_prefix("http://") {
            (false, r)
        } else {
            return Err(bad());
        };
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
            let (h, p) = v6.split_once(']').ok_or_else(bad)?;
            (h, p.strip_prefix(':'))
        } else {
            match authority.rsplit_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (authority, None),
            }
        };
        let port = match port {
            Some(p) => p.parse().map_err(|_| bad())?,
            None if https => 443,
            None => 80,
        };
        if host.is_empty() {
            return Err(bad());
        }
        Ok(Url {
            https,
            host: host.to_string(),
            port,
            path_and_query: path.to_string(),
        })
    }

    /// The `Host` header value: the port only when it is not the scheme's default.
    pub fn host_header(&self) -> String {
        let default = if self.https { 443 } else { 80 };
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        if self.port == default {
            host
        } else {
            format!("{host}:{}", self.port)
        }
    }
}

/// RFC 3986 percent-encoding of everything but the unreserved characters: a path segment or a
/// query value, as SigV4 and OCI's signature want them.
pub fn percent_encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for b in value.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Send `req` and read the whole answer within `timeout`. A `Host` header is added unless the
/// request has one. Transport errors and the timeout are [`FailureKind::Unavailable`]; any
/// HTTP status is a response (the caller maps it).
pub async fn send(req: &HttpRequest, timeout: Duration) -> Result<HttpResponse, Failure> {
    let url = Url::parse(&req.url)?;
    match tokio::time::timeout(timeout, exchange(&url, req)).await {
        Ok(r) => r,
        Err(_) => Err(Failure::new(
            FailureKind::Unavailable,
            format!(
                "{} {}:{}: no answer within {:?}",
                req.method, url.host, url.port, timeout
            ),
        )),
    }
}

async fn exchange(url: &Url, req: &HttpRequest) -> Result<HttpResponse, Failure> {
    let unavailable = |what: &str, e: &dyn std::fmt::Display| {
        Failure::new(
            FailureKind::Unavailable,
            format!("{} {}:{}: {what}: {e}", req.method, url.host, url.port),
        )
    };
    let tcp = TcpStream::connect((url.host.as_str(), url.port))
        .await
        .map_err(|e| unavailable("connect", &e))?;
    let _ = tcp.set_nodelay(true);
    let mut builder = Request::builder()
        .method(req.method.as_str())
        .uri(url.path_and_query.as_str());
    if !req
        .headers
        .iter()
        .any(|(n, _)| n.eq_ignore_ascii_case("host"))
    {
        builder = builder.header("host", url.host_header());
    }
    for (n, v) in &req.headers {
        builder = builder.header(n.as_str(), v.as_str());
    }
    let request = builder
        .body(Full::new(Bytes::from(req.body.clone())))
        .map_err(|e| Failure::new(FailureKind::Rejected, format!("bad request: {e}")))?;
    let response = if url.https {
        let name =
            ServerName::try_from(url.host.clone()).map_err(|e| unavailable("server name", &e))?;
        let tls =
            tokio_rustls::TlsConnector::from(tls_config().map_err(|e| unavailable("TLS", &e))?)
                .connect(name, tcp)
                .await
                .map_err(|e| unavailable("TLS handshake", &e))?;
        round_trip(TokioIo::new(tls), request).await
    } else {
        round_trip(TokioIo::new(tcp), request).await
    };
    response.map_err(|e| unavailable("request", &e))
}

async fn round_trip<T>(io: T, request: Request<Full<Bytes>>) -> Result<HttpResponse, String>
where
    T: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(io)
        .await
        .map_err(|e| e.to_string())?;
    let conn = tokio::spawn(conn);
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| e.to_string());
    let out = match response {
        Ok(response) => {
            let status = response.status().as_u16();
            let headers = response
                .headers()
                .iter()
                .map(|(n, v)| {
                    (
                        n.as_str().to_string(),
                        String::from_utf8_lossy(v.as_bytes()).into_owned(),
                    )
                })
                .collect();
            let body = Limited::new(response.into_body(), MAX_BODY)
                .collect()
                .await
                .map_err(|e| format!("reading the body: {e}"))?
                .to_bytes()
                .to_vec();
            Ok(HttpResponse {
                status,
                headers,
                body,
            })
        }
        Err(e) => Err(e),
    };
    conn.abort();
    out
}

/// rustls on `ring` with the system's trusted roots, loaded once.
fn tls_config() -> Result<Arc<rustls::ClientConfig>, String> {
    static CONFIG: Mutex<Option<Arc<rustls::ClientConfig>>> = Mutex::new(None);
    let mut cached = CONFIG.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(c) = cached.as_ref() {
        return Ok(c.clone());
    }
    let mut roots = rustls::RootCertStore::empty();
    let loaded = rustls_native_certs::load_native_certs();
    let (added, _) = roots.add_parsable_certificates(loaded.certs);
    if added == 0 {
        return Err("no trusted root certificates found on this system".into());
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let config = Arc::new(config);
    *cached = Some(config.clone());
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_split_into_scheme_host_port_and_path() {
        let u = Url::parse("https://route53.amazonaws.com/2013-04-01/change/C1").unwrap();
        assert_eq!(
            (u.https, u.host.as_str(), u.port, u.path_and_query.as_str()),
            (true, "route53.amazonaws.com", 443, "/2013-04-01/change/C1")
        );
        assert_eq!(u.host_header(), "route53.amazonaws.com");
        let u = Url::parse("http://127.0.0.1:5055").unwrap();
        assert_eq!((u.port, u.path_and_query.as_str()), (5055, "/"));
        assert_eq!(u.host_header(), "127.0.0.1:5055");
        let u = Url::parse("http://[::1]:8080/x?y=1").unwrap();
        assert_eq!((u.host.as_str(), u.port), ("::1", 8080));
        assert_eq!(u.host_header(), "[::1]:8080");
        assert!(Url::parse("ftp://x").is_err());
        assert!(Url::parse("http://:80/").is_err());
    }

    #[tokio::test]
    async fn a_request_to_a_closed_port_is_unavailable_not_a_hang() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        drop(l);
        let req = HttpRequest {
            method: "GET".into(),
            url: format!("http://127.0.0.1:{port}/"),
            headers: vec![],
            body: vec![],
        };
        let err = send(&req, Duration::from_secs(5)).await.unwrap_err();
        assert_eq!(err.kind, FailureKind::Unavailable, "{err}");
    }

    #[tokio::test]
    async fn a_server_that_never_answers_times_out() {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = l.local_addr().unwrap().port();
        let _hold = tokio::spawn(async move {
            let (_s, _) = l.accept().await.unwrap();
            tokio::time::sleep(Duration::from_secs(60)).await;
        });
        let req = HttpRequest {
            method: "GET".into(),
            url: format!("http://127.0.0.1:{port}/"),
            headers: vec![],
            body: vec![],
        };
        let err = send(&req, Duration::from_millis(200)).await.unwrap_err();
        assert_eq!(err.kind, FailureKind::Unavailable);
        assert!(err.message.contains("no answer"), "{err}");
    }

    #[tokio::test]
    async fn a_response_carries_status_headers_and_body() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = l.local_addr().unwrap().port();
        let server = tokio::spawn(async move {
            let (mut s, _) = l.accept().await.unwrap();
            let mut buf = vec![0u8; 4096];
            let n = s.read(&mut buf).await.unwrap();
            let head = String::from_utf8_lossy(&buf[..n]).into_owned();
            s.write_all(
                b"HTTP/1.1 412 Precondition Failed\r\netag: \"e2\"\r\ncontent-length: 2\r\n\r\nno",
            )
            .await
            .unwrap();
            head
        });
        let req = HttpRequest {
            method: "PUT".into(),
            url: format!("http://127.0.0.1:{port}/a/b?c=d"),
            headers: vec![("if-match".into(), "\"e1\"".into())],
            body: b"{}".to_vec(),
        };
        let r = send(&req, Duration::from_secs(5)).await.unwrap();
        assert_eq!(
            (r.status, r.header("ETag"), r.text().as_str()),
            (412, Some("\"e2\""), "no")
        );
        let head = server.await.unwrap().to_lowercase();
        assert!(head.starts_with("put /a/b?c=d http/1.1"), "{head}");
        assert!(head.contains(&format!("host: 127.0.0.1:{port}")), "{head}");
        assert!(head.contains("if-match: \"e1\""), "{head}");
    }
}
