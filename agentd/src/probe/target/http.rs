//! HTTP and HTTPS checks: one `GET`, judged by the status of the final response.
//!
//! The probe URL is split by hand into host, port, `Host` authority and request path (whatever
//! would break the request line is percent-encoded; userinfo and fragment are never sent). The
//! request asks for `Connection: close`; the answer is read only up to the status line of its
//! first final response (interim 1xx skipped, at most 16 KiB of head), and the body never. A
//! status other than `expect_status` is `bad_status`; anything that is not HTTP/1.x is
//! `bad_response`. For `https` the TCP stream is wrapped by [`tls`](super::tls) first.

use std::sync::Arc;

use isthmus_config::{Probe, DEFAULT_EXPECT_STATUS};
use rustls::pki_types::ServerName;
use rustls::ClientConfig;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tracing::trace;

use super::tcp::{connect, resolve};
use super::{io_reason, Origin, Reason};

/// What an HTTP server may send before its status line ends (interim 1xx responses included).
/// A status line is a few dozen bytes; the cap keeps a misbehaving server from feeding us forever.
const MAX_RESPONSE_HEAD: usize = 16 * 1024;

/// The parts of a probe URL that the request needs.
#[derive(Debug, PartialEq)]
struct HttpTarget<'a> {
    /// Without brackets: what to resolve and what TLS verifies.
    host: &'a str,
    port: u16,
    /// `host[:port]` as written (brackets kept), for the `Host` header.
    authority: &'a str,
    /// Path and query, percent-encoded where a request line needs it; `/` when empty.
    path: String,
}

impl<'a> HttpTarget<'a> {
    /// `None` unless `url` is `SCHEME://[userinfo@]host[:port][/path][?query][#fragment]`. Any
    /// userinfo is ignored (no credentials are sent); the fragment is never sent.
    fn parse(url: &'a str, https: bool) -> Option<Self> {
        let (scheme, default_port) = if https { ("https", 443) } else { ("http", 80) };
        let rest = url.strip_prefix(scheme)?.strip_prefix("://")?;
        let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
        let (authority, tail) = rest.split_at(end);
        let authority = authority.rsplit('@').next()?;
        let (host, port) = match authority.strip_prefix('[') {
            Some(v6) => {
                let (addr, after) = v6.split_once(']')?;
                let port = match after {
                    "" => None,
                    _ => Some(after.strip_prefix(':')?),
                };
                (addr, port)
            }
            None => match authority.rsplit_once(':') {
                Some((host, port)) => (host, Some(port)),
                None => (authority, None),
            },
        };
        if host.is_empty() {
            return None;
        }
        let port = match port {
            None => default_port,
            Some(p) => p.parse::<u16>().ok().filter(|p| *p != 0)?,
        };
        let tail = tail.split('#').next().unwrap_or_default();
        let mut path = String::with_capacity(tail.len() + 1);
        if !tail.starts_with('/') {
            path.push('/');
        }
        for byte in tail.bytes() {
            // Whatever would break the request line (space, CR, LF, controls, non-ASCII) is
            // percent-encoded; the rest goes as written.
            if byte.is_ascii_graphic() {
                path.push(char::from(byte));
            } else {
                path.push_str(&format!("%{byte:02X}"));
            }
        }
        Some(HttpTarget {
            host,
            port,
            authority,
            path,
        })
    }

    fn request(&self) -> String {
        format!(
            "GET {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: isthmus-agentd/{}\r\nAccept: */*\r\n\
             Connection: close\r\n\r\n",
            self.path,
            self.authority,
            env!("CARGO_PKG_VERSION")
        )
    }
}

/// `tls`: `Some` for https.
pub(super) async fn http(
    probe: &Probe,
    from: Origin<'_>,
    tls: Option<Arc<ClientConfig>>,
) -> Result<(), Reason> {
    let Some(url) = HttpTarget::parse(&probe.target, tls.is_some()) else {
        trace!(probe = %probe.name, "probe URL does not parse");
        return Err(Reason::Resolve);
    };
    let addrs = resolve((url.host, url.port), probe.source).await?;
    let mut tcp = connect(&addrs, from).await?;
    let request = url.request();
    let status = match tls {
        None => exchange(&mut tcp, &request).await?,
        Some(config) => {
            let name = ServerName::try_from(url.host.to_owned()).map_err(|_| Reason::Tls)?;
            let mut stream = tokio_rustls::TlsConnector::from(config)
                .connect(name, tcp)
                .await
                .map_err(|e| {
                    trace!(probe = %probe.name, error = %e, "probe TLS handshake failed");
                    io_reason(&e)
                })?;
            exchange(&mut stream, &request).await?
        }
    };
    let expected = probe.expect_status.unwrap_or(DEFAULT_EXPECT_STATUS);
    if status == expected {
        Ok(())
    } else {
        Err(Reason::BadStatus(status))
    }
}

/// Sends the request and reads up to the final status line; the rest is never read.
async fn exchange<S>(stream: &mut S, request: &str) -> Result<u16, Reason>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let sent = async {
        stream.write_all(request.as_bytes()).await?;
        stream.flush().await
    };
    sent.await.map_err(|e| io_reason(&e))?;
    read_status(stream).await
}

/// The status of the first final response: interim 1xx responses (but 101) are skipped.
async fn read_status<S: AsyncRead + Unpin>(stream: &mut S) -> Result<u16, Reason> {
    let mut buf = Vec::with_capacity(1024);
    let mut start = 0;
    loop {
        let current = buf.get(start..).unwrap_or_default();
        if let Some(line_end) = current.iter().position(|&b| b == b'\n') {
            let code = parse_status_line(&current[..line_end])?;
            if !(100..200).contains(&code) || code == 101 {
                return Ok(code);
            }
            if let Some(end) = head_end(current) {
                start += end;
                continue;
            }
        }
        if buf.len() >= MAX_RESPONSE_HEAD {
            return Err(Reason::BadResponse);
        }
        let mut chunk = [0u8; 2048];
        let room = chunk.len().min(MAX_RESPONSE_HEAD - buf.len());
        let n = stream
            .read(&mut chunk[..room])
            .await
            .map_err(|e| io_reason(&e))?;
        if n == 0 {
            return Err(Reason::BadResponse);
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// `HTTP/1.x NNN[ reason]` (without the line end) → NNN.
fn parse_status_line(line: &[u8]) -> Result<u16, Reason> {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let rest = line.strip_prefix(b"HTTP/1.").ok_or(Reason::BadResponse)?;
    match rest {
        [minor, b' ', a, b, c, tail @ ..]
            if minor.is_ascii_digit()
                && [a, b, c].iter().all(|d| d.is_ascii_digit())
                && (tail.is_empty() || tail.first() == Some(&b' ')) =>
        {
            let code = [a, b, c]
                .iter()
                .fold(0u16, |n, d| n * 10 + u16::from(**d - b'0'));
            if (100..=599).contains(&code) {
                Ok(code)
            } else {
                Err(Reason::BadResponse)
            }
        }
        _ => Err(Reason::BadResponse),
    }
}

/// Where the header block that starts `head` ends (just after its empty line).
fn head_end(head: &[u8]) -> Option<usize> {
    let mut line_start = 0;
    for (i, &b) in head.iter().enumerate() {
        if b == b'\n' {
            let line = &head[line_start..i];
            if line_start > 0 && (line.is_empty() || line == b"\r") {
                return Some(i + 1);
            }
            line_start = i + 1;
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::super::testutil::*;
    use super::super::*;
    use super::*;
    use std::net::SocketAddr;
    use tokio::net::TcpListener;
    use tokio::sync::mpsc;

    /// A local server that answers each connection with `answer` (after reading the request head),
    /// or never answers if `answer` is `None`. Returns its address and the requests it read.
    async fn http_server(answer: Option<&'static [u8]>) -> (SocketAddr, mpsc::Receiver<String>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = mpsc::channel(16);
        tokio::spawn(async move {
            loop {
                let (mut conn, _) = listener.accept().await.unwrap();
                let tx = tx.clone();
                tokio::spawn(async move {
                    let head = read_head(&mut conn).await;
                    let _ = tx.send(head).await;
                    match answer {
                        Some(bytes) => {
                            let _ = conn.write_all(bytes).await;
                        }
                        None => std::future::pending::<()>().await,
                    }
                });
            }
        });
        (addr, rx)
    }

    fn http(addr: SocketAddr, path: &str) -> Probe {
        probe("app", ProbeKind::Http, &format!("http://{addr}{path}"))
    }

    #[tokio::test]
    async fn http_passes_on_200_and_sends_a_proper_request() {
        let (addr, mut requests) = http_server(Some(b"HTTP/1.1 200 OK\r\n\r\nfine")).await;
        let outcome = run_once(&http(addr, "/health?deep=1#frag")).await;
        assert_eq!(outcome.reason, Reason::Ok);
        let request = requests.recv().await.unwrap();
        assert!(
            request.starts_with(&format!(
                "GET /health?deep=1 HTTP/1.1\r\nHost: 127.0.0.1:{}\r\n",
                addr.port()
            )),
            "{request}"
        );
        assert!(request.contains("\r\nConnection: close\r\n"), "{request}");
    }

    #[tokio::test]
    async fn http_fails_with_the_status_the_server_answered() {
        let (addr, _requests) =
            http_server(Some(b"HTTP/1.1 503 Service Unavailable\r\n\r\n")).await;
        let outcome = run_once(&http(addr, "/health")).await;
        assert_eq!(outcome.reason, Reason::BadStatus(503));
        assert_eq!(outcome.reason.as_str(), "bad_status");
        assert!(!outcome.ok);
    }

    #[tokio::test]
    async fn http_passes_when_the_status_is_the_expected_one() {
        let (addr, _requests) = http_server(Some(b"HTTP/1.0 204 No Content\r\n\r\n")).await;
        let mut p = http(addr, "");
        p.expect_status = Some(204);
        assert_eq!(run_once(&p).await.reason, Reason::Ok);
    }

    #[tokio::test]
    async fn http_skips_interim_responses() {
        let (addr, _requests) = http_server(Some(
            b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>\r\n\r\nHTTP/1.1 200 OK\r\n\r\n",
        ))
        .await;
        assert_eq!(run_once(&http(addr, "/")).await.reason, Reason::Ok);
    }

    #[tokio::test]
    async fn http_times_out_when_the_server_never_answers() {
        let (addr, _requests) = http_server(None).await;
        let mut p = http(addr, "/health");
        p.timeout = ms(150);
        let outcome = run_once(&p).await;
        assert_eq!(outcome.reason, Reason::Timeout);
        assert!(outcome.duration >= ms(150));
    }

    #[tokio::test]
    async fn http_garbage_is_a_bad_response() {
        for answer in [
            &b"SSH-2.0-OpenSSH_9.6\r\n"[..],
            b"HTTP/1.1 2000 OK\r\n\r\n",
            b"HTTP/2 200\r\n\r\n",
            b"HTTP/1.1 099 Low\r\n\r\n",
            b"",
        ] {
            let (addr, _requests) = http_server(Some(answer)).await;
            let outcome = run_once(&http(addr, "/")).await;
            assert_eq!(
                outcome.reason,
                Reason::BadResponse,
                "{}",
                String::from_utf8_lossy(answer)
            );
        }
    }

    #[tokio::test]
    async fn http_reads_at_most_16_kib_looking_for_the_status_line() {
        static ENDLESS: [u8; 64 * 1024] = [b'x'; 64 * 1024];
        let (addr, _requests) = http_server(Some(&ENDLESS[..])).await;
        assert_eq!(run_once(&http(addr, "/")).await.reason, Reason::BadResponse);
    }

    #[test]
    fn urls_split_into_host_port_authority_and_path() {
        let t = HttpTarget::parse("http://10.1.20.15:8080/health?x=1#top", false).unwrap();
        assert_eq!(
            t,
            HttpTarget {
                host: "10.1.20.15",
                port: 8080,
                authority: "10.1.20.15:8080",
                path: "/health?x=1".into()
            }
        );
        let t = HttpTarget::parse("https://user:pw@[fd00::1]/a b", true).unwrap();
        assert_eq!((t.host, t.port, t.authority), ("fd00::1", 443, "[fd00::1]"));
        assert_eq!(t.path, "/a%20b");
        let t = HttpTarget::parse("http://app.internal?q", false).unwrap();
        assert_eq!(
            (t.host, t.port, t.path.as_str()),
            ("app.internal", 80, "/?q")
        );
        for bad in [
            "https://a/",
            "http://",
            "http://:80/",
            "http://a:0/",
            "http://a:x/",
            "http://[fd00::1/",
            "http://[fd00::1]x/",
            "ftp://a/",
        ] {
            assert_eq!(HttpTarget::parse(bad, false), None, "{bad}");
        }
    }

    #[test]
    fn status_lines_parse_strictly() {
        assert_eq!(parse_status_line(b"HTTP/1.1 200 OK\r"), Ok(200));
        assert_eq!(parse_status_line(b"HTTP/1.0 503"), Ok(503));
        assert_eq!(parse_status_line(b"HTTP/1.1 404 Not Found"), Ok(404));
        for bad in [
            &b"HTTP/1.1 20 OK"[..],
            b"HTTP/1.1 2000",
            b"HTTP/1.1 600 Weird",
            b"HTTP/1.1  200",
            b"http/1.1 200",
            b"ICY 200 OK",
        ] {
            assert_eq!(parse_status_line(bad), Err(Reason::BadResponse));
        }
    }
}
