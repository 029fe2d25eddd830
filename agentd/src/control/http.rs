//! One control connection: HTTP parsing by hyper, routing, authorization, and the mapping of
//! every failure to a typed JSON error. Status codes come from [`ErrorKind::http_status`], so
//! there is one table for agentd and netctl.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Body as _, Incoming};
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use isthmus_api::{
    paths, Access, ErrorBody, ErrorKind, FailoverRequest, AGENTD_VERSION_HEADER,
    CLIENT_VERSION_HEADER,
};
use serde::Serialize;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::UnixStream;
use tokio::sync::{mpsc, oneshot, watch};

use super::peer::Peer;
use super::{Command, Policy, MAX_BODY};

/// Larger than hyper's minimum (8 KiB, below which it panics); headers beyond it get a 431.
const MAX_HEADER_BYTES: usize = 16 * 1024;
/// How long a handler waits for the event loop; a reload re-reads and validates a file.
const LOOP_REPLY_TIMEOUT: Duration = Duration::from_secs(30);

pub struct Context {
    pub policy: watch::Receiver<Policy>,
    pub commands: mpsc::Sender<Command>,
    /// From connect to the end of the request head.
    pub head_timeout: Duration,
    /// For the body, after the head.
    pub request_timeout: Duration,
    /// `isthmus_control_requests_total{endpoint, status}`.
    pub requests: prometheus::IntCounterVec,
    /// Serve a request whose client shut its side down after sending it. Off for the socket
    /// (an end of stream ends the connection, as before); on for the control fuzz target,
    /// which sends each request and its end at once.
    pub half_close: bool,
}

/// The endpoints of API v1, with the names they carry.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Endpoint {
    Status,
    Links,
    Routes,
    Version,
    Reload,
    Failover(String),
    Failback(String),
    Drain(String, bool),
    Events,
    Probes,
    Actions,
    DrillGet,
    DrillStart,
    DrillAbort,
    /// Drain (`true`) or undrain this gateway of its HA pair.
    HaDrain(bool),
}

/// One row of the API: method, path pattern (`{name}` is one path segment), who may call it,
/// and the endpoint it is. The pattern is also the metric label: names sent in requests never
/// become labels.
struct Route {
    method: Method,
    pattern: &'static str,
    access: Access,
    endpoint: fn(String) -> Endpoint,
}

/// The API, in one place: adding an endpoint is a row here, a variant of [`Endpoint`] and its
/// arm in [`dispatch`] (and, if the loop must act, a [`Command`] and its handler in
/// `daemon/commands.rs`).
static ROUTES: [Route; 17] = [
    row(Method::GET, paths::STATUS, Access::Read, |_| {
        Endpoint::Status
    }),
    row(Method::GET, paths::LINKS, Access::Read, |_| Endpoint::Links),
    row(Method::GET, paths::ROUTES, Access::Read, |_| {
        Endpoint::Routes
    }),
    row(Method::GET, paths::EVENTS, Access::Read, |_| {
        Endpoint::Events
    }),
    row(Method::GET, paths::PROBES, Access::Read, |_| {
        Endpoint::Probes
    }),
    row(Method::GET, paths::ACTIONS, Access::Read, |_| {
        Endpoint::Actions
    }),
    row(Method::GET, paths::VERSION, Access::Read, |_| {
        Endpoint::Version
    }),
    row(Method::POST, paths::RELOAD, Access::Write, |_| {
        Endpoint::Reload
    }),
    row(Method::GET, paths::DRILL, Access::Read, |_| {
        Endpoint::DrillGet
    }),
    row(Method::POST, paths::DRILL, Access::Write, |_| {
        Endpoint::DrillStart
    }),
    row(Method::POST, paths::DRILL_ABORT, Access::Write, |_| {
        Endpoint::DrillAbort
    }),
    row(Method::POST, paths::HA_DRAIN, Access::Write, |_| {
        Endpoint::HaDrain(true)
    }),
    row(Method::POST, paths::HA_UNDRAIN, Access::Write, |_| {
        Endpoint::HaDrain(false)
    }),
    row(
        Method::POST,
        "/v1/groups/{group}/failover",
        Access::Write,
        Endpoint::Failover,
    ),
    row(
        Method::POST,
        "/v1/groups/{group}/failback",
        Access::Write,
        Endpoint::Failback,
    ),
    row(Method::POST, "/v1/links/{link}/drain", Access::Write, |l| {
        Endpoint::Drain(l, true)
    }),
    row(
        Method::POST,
        "/v1/links/{link}/undrain",
        Access::Write,
        |l| Endpoint::Drain(l, false),
    ),
];

const fn row(
    method: Method,
    pattern: &'static str,
    access: Access,
    endpoint: fn(String) -> Endpoint,
) -> Route {
    Route {
        method,
        pattern,
        access,
        endpoint,
    }
}

/// Whether `path` fits `pattern`; the one `{name}` segment's value, if any.
fn matches(pattern: &str, path: &str) -> Option<String> {
    let (mut ps, mut xs) = (pattern.split('/'), path.split('/'));
    let mut param = String::new();
    loop {
        match (ps.next(), xs.next()) {
            (None, None) => return Some(param),
            (Some(p), Some(x)) if p.starts_with('{') && p.ends_with('}') && !x.is_empty() => {
                param = x.to_owned();
            }
            (Some(p), Some(x)) if p == x => {}
            _ => return None,
        }
    }
}

/// The row for `path`, and its name parameter.
fn find(path: &str) -> Option<(&'static Route, String)> {
    ROUTES
        .iter()
        .find_map(|r| matches(r.pattern, path).map(|p| (r, p)))
}

fn route(method: &Method, path: &str) -> Result<(Endpoint, Access), ErrorBody> {
    let Some((row, param)) = find(path) else {
        if !path.starts_with("/v1/") && path.starts_with("/v") {
            return Err(ErrorBody::new(
                ErrorKind::UnsupportedApiVersion,
                format!(
                    "agentd {} speaks control API {}, not {path}",
                    env!("CARGO_PKG_VERSION"),
                    isthmus_api::API_VERSION
                ),
            ));
        }
        let hint = if path.starts_with(paths::GROUPS) {
            " (try /v1/groups/GROUP/failover)"
        } else if path.starts_with(paths::LINK_ACTIONS) {
            " (try /v1/links/LINK/drain)"
        } else {
            ""
        };
        return Err(ErrorBody::new(
            ErrorKind::NotFound,
            format!("no endpoint {path}{hint}"),
        ));
    };
    // A path may take more than one method (`/v1/drill`: GET and POST).
    let same_path = || ROUTES.iter().filter(|r| r.pattern == row.pattern);
    let Some(row) = same_path().find(|r| r.method == *method) else {
        let methods: Vec<String> = same_path().map(|r| r.method.to_string()).collect();
        return Err(ErrorBody::new(
            ErrorKind::MethodNotAllowed,
            format!("{path} takes {}, not {method}", methods.join(" or ")),
        ));
    };
    Ok(((row.endpoint)(param), row.access))
}

/// The route pattern of a path, for metrics: names from requests never become labels.
fn endpoint_label(path: &str) -> &'static str {
    find(path).map_or("other", |(r, _)| r.pattern)
}

/// Serve one connection; `on_head` is called when its request head has arrived.
pub async fn serve_connection<I>(
    io: I,
    peer: Peer,
    ctx: Arc<Context>,
    on_head: impl Fn() + Send + 'static,
) -> Result<(), hyper::Error>
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let timeout = ctx.head_timeout;
    let half_close = ctx.half_close;
    let service = hyper::service::service_fn(move |req| {
        on_head();
        let ctx = ctx.clone();
        let peer = peer.clone();
        async move { Ok::<_, Infallible>(handle(req, &peer, &ctx).await) }
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(timeout)
        .max_buf_size(MAX_HEADER_BYTES)
        // One request per connection: an idle client cannot hold a slot past the timeout.
        .keep_alive(false)
        .half_close(half_close)
        .serve_connection(TokioIo::new(io), service);
    conn.await
}

async fn handle(req: Request<Incoming>, peer: &Peer, ctx: &Context) -> Response<Full<Bytes>> {
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let client = req
        .headers()
        .get(CLIENT_VERSION_HEADER)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("-")
        .to_owned();
    let result = dispatch(req, peer, ctx).await;
    let status = match &result {
        Ok(r) => r.status().as_u16(),
        Err(e) => e.kind.http_status(),
    };
    tracing::debug!(%method, %path, uid = peer.uid, pid = ?peer.pid, client, status, "control request");
    ctx.requests
        .with_label_values(&[endpoint_label(&path), &status.to_string()])
        .inc();
    result.unwrap_or_else(|e| error_response(&e))
}

async fn dispatch(
    req: Request<Incoming>,
    peer: &Peer,
    ctx: &Context,
) -> Result<Response<Full<Bytes>>, ErrorBody> {
    let (endpoint, needs) = route(req.method(), req.uri().path())?;
    let query = req.uri().query().unwrap_or("").to_owned();
    let (access, group) = {
        let policy = ctx.policy.borrow();
        (policy.access_of(peer), policy.group_for(needs))
    };
    let access = match access {
        Some(a) if a >= needs => a,
        _ => {
            let what = match needs {
                Access::Read => "reading",
                Access::Write => "this change",
            };
            return Err(ErrorBody::new(
                ErrorKind::PermissionDenied,
                format!("permission denied: {what} needs root or group {group}"),
            ));
        }
    };
    // No endpoint takes a body yet, but a client may send one: read it within limits so that a
    // slow or huge body is answered, not left hanging.
    let body = read_body(req.into_body(), ctx.request_timeout).await?;
    match endpoint {
        Endpoint::Version => Ok(json_response(
            StatusCode::OK,
            &isthmus_api::VersionInfo {
                version: env!("CARGO_PKG_VERSION").to_owned(),
                api_version: isthmus_api::API_VERSION.to_owned(),
            },
        )),
        Endpoint::Status => {
            let view = ask(ctx, |reply| Command::View { reply }).await?;
            off_loop(move || crate::status::build(&view, access)).await
        }
        Endpoint::Routes => {
            let routes = ask(ctx, |reply| Command::Routes { reply }).await?;
            Ok(json_response(StatusCode::OK, &routes))
        }
        Endpoint::Failover(group) => {
            let req: FailoverRequest = serde_json::from_slice(&body).map_err(|e| {
                ErrorBody::new(
                    ErrorKind::BadRequest,
                    format!("expected a JSON body {{\"to\": LINK, \"reason\": TEXT}}: {e}"),
                )
            })?;
            let status = ask(ctx, |reply| Command::Failover {
                group,
                to: req.to,
                reason: req.reason.unwrap_or_else(|| "manual".into()),
                reply,
            })
            .await??;
            Ok(json_response(StatusCode::OK, &status))
        }
        Endpoint::Drain(link, on) => {
            let groups = ask(ctx, |reply| Command::Drain { link, on, reply }).await??;
            Ok(json_response(StatusCode::OK, &groups))
        }
        Endpoint::Probes => {
            let view = ask(ctx, |reply| Command::View { reply }).await?;
            off_loop(move || crate::status::probes(&view)).await
        }
        Endpoint::Actions => {
            let view = ask(ctx, |reply| Command::View { reply }).await?;
            off_loop(move || crate::status::actions(&view)).await
        }
        Endpoint::Events => {
            let (since, limit) = events_query(&query)?;
            let events = ask(ctx, |reply| Command::Events {
                since,
                limit,
                reply,
            })
            .await?;
            Ok(json_response(StatusCode::OK, &events))
        }
        Endpoint::Failback(group) => {
            let status = ask(ctx, |reply| Command::Failback { group, reply }).await??;
            Ok(json_response(StatusCode::OK, &status))
        }
        Endpoint::Links => {
            let view = ask(ctx, |reply| Command::View { reply }).await?;
            off_loop(move || view.links.clone()).await
        }
        Endpoint::Reload => {
            let outcome = ask(ctx, |reply| Command::Reload { reply }).await??;
            Ok(json_response(StatusCode::OK, &outcome))
        }
        Endpoint::DrillStart => {
            let request: isthmus_api::DrillRequest =
                serde_json::from_slice(&body).map_err(|e| {
                    ErrorBody::new(
                        ErrorKind::BadRequest,
                        format!(
                            "expected a JSON body {{\"group\": NAME, \"hold_ms\": N, \"rto_target_ms\": N, \"reason\": TEXT}}: {e}"
                        ),
                    )
                })?;
            let report = ask(ctx, |reply| Command::DrillStart { request, reply }).await??;
            Ok(json_response(StatusCode::OK, &report))
        }
        Endpoint::DrillGet => {
            let report = ask(ctx, |reply| Command::DrillGet { reply }).await??;
            Ok(json_response(StatusCode::OK, &report))
        }
        Endpoint::DrillAbort => {
            let report = ask(ctx, |reply| Command::DrillAbort { reply }).await??;
            Ok(json_response(StatusCode::OK, &report))
        }
        Endpoint::HaDrain(on) => {
            let status = ask(ctx, |reply| Command::DrainGateway { on, reply }).await??;
            Ok(json_response(StatusCode::OK, &status))
        }
    }
}

/// Build a response body on the blocking pool: JSON for a thousand probes takes milliseconds,
/// and this runtime also serves the other clients.
async fn off_loop<T: Serialize + Send + 'static>(
    build: impl FnOnce() -> T + Send + 'static,
) -> Result<Response<Full<Bytes>>, ErrorBody> {
    tokio::task::spawn_blocking(move || json_response(StatusCode::OK, &build()))
        .await
        .map_err(|e| ErrorBody::new(ErrorKind::Internal, format!("building the response: {e}")))
}

/// `since=ID&limit=N` (both optional; limit at most 1000).
fn events_query(query: &str) -> Result<(u64, usize), ErrorBody> {
    let (mut since, mut limit) = (0u64, 100usize);
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let bad = || {
            ErrorBody::new(
                ErrorKind::BadRequest,
                format!("bad query parameter {pair:?}: use since=ID&limit=N"),
            )
        };
        match pair.split_once('=') {
            Some(("since", v)) => since = v.parse().map_err(|_| bad())?,
            Some(("limit", v)) => limit = v.parse::<usize>().map_err(|_| bad())?.min(1000),
            _ => return Err(bad()),
        }
    }
    Ok((since, limit))
}

/// The body, at most [`MAX_BODY`] bytes, within `timeout`. A declared length (Content-Length)
/// beyond the limit is refused before a byte of the body is read: a client that announces
/// 100 MB gets its 413 at once instead of holding a connection slot until the timeout. A body
/// without a declared length (chunked) is cut off as soon as it passes the limit.
async fn read_body(body: Incoming, timeout: Duration) -> Result<Bytes, ErrorBody> {
    let declared = body.size_hint().lower();
    if declared > MAX_BODY as u64 {
        return Err(ErrorBody::new(
            ErrorKind::PayloadTooLarge,
            format!(
                "request body of {declared} bytes is larger than the limit of {MAX_BODY} bytes"
            ),
        ));
    }
    match tokio::time::timeout(timeout, Limited::new(body, MAX_BODY).collect()).await {
        Err(_) => Err(ErrorBody::new(
            ErrorKind::RequestTimeout,
            format!("request body not received within {timeout:?}"),
        )),
        Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => Err(ErrorBody::new(
            ErrorKind::PayloadTooLarge,
            format!("request body larger than {MAX_BODY} bytes"),
        )),
        Ok(Err(e)) => Err(ErrorBody::new(
            ErrorKind::BadRequest,
            format!("cannot read request body: {e}"),
        )),
        Ok(Ok(collected)) => Ok(collected.to_bytes()),
    }
}

/// Send a command to the event loop and wait for its reply.
async fn ask<T>(
    ctx: &Context,
    make: impl FnOnce(oneshot::Sender<T>) -> Command,
) -> Result<T, ErrorBody> {
    let (tx, rx) = oneshot::channel();
    let gone = || ErrorBody::new(ErrorKind::ShuttingDown, "agentd is shutting down");
    ctx.commands.send(make(tx)).await.map_err(|_| gone())?;
    match tokio::time::timeout(LOOP_REPLY_TIMEOUT, rx).await {
        Ok(Ok(reply)) => Ok(reply),
        Ok(Err(_)) => Err(gone()),
        Err(_) => Err(ErrorBody::new(
            ErrorKind::Internal,
            "agentd's event loop did not answer in time",
        )),
    }
}

fn json_response<T: Serialize>(status: StatusCode, value: &T) -> Response<Full<Bytes>> {
    match serde_json::to_vec(value) {
        Ok(body) => with_headers(status, body),
        Err(e) => {
            tracing::error!(error = %e, "cannot serialize a control response");
            with_headers(
                StatusCode::INTERNAL_SERVER_ERROR,
                br#"{"kind":"internal","message":"cannot serialize the response"}"#.to_vec(),
            )
        }
    }
}

fn error_response(err: &ErrorBody) -> Response<Full<Bytes>> {
    let status =
        StatusCode::from_u16(err.kind.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    json_response(status, err)
}

fn with_headers(status: StatusCode, body: Vec<u8>) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() = status;
    let headers = resp.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    headers.insert(
        AGENTD_VERSION_HEADER,
        HeaderValue::from_static(env!("CARGO_PKG_VERSION")),
    );
    resp
}

/// Answer a connection beyond the client limits with a 503 (`message` names the limit) and
/// close it, without parsing anything.
pub async fn refuse_busy(mut stream: UnixStream, message: &str) {
    let body = serde_json::to_string(&ErrorBody::new(ErrorKind::TooManyClients, message))
        .unwrap_or_default();
    let resp = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n\
         {AGENTD_VERSION_HEADER}: {}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        env!("CARGO_PKG_VERSION"),
        body.len()
    );
    // Let the client send its request head first: an HTTP client that gets an answer before it
    // has asked treats it as a broken connection instead of reading it.
    let mut head = Vec::new();
    let read_head = async {
        let mut buf = [0u8; 1024];
        while head.len() < 8192 && !head.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = tokio::io::AsyncReadExt::read(&mut stream, &mut buf).await?;
            if n == 0 {
                break;
            }
            head.extend_from_slice(&buf[..n]);
        }
        Ok::<(), std::io::Error>(())
    };
    let _ = tokio::time::timeout(Duration::from_millis(200), read_head).await;
    let write = async {
        stream.write_all(resp.as_bytes()).await?;
        stream.shutdown().await?;
        // Read what the client still sends before closing: closing with unread data resets the
        // connection, and the client would see the reset instead of our answer.
        let mut sink = [0u8; 4096];
        while tokio::io::AsyncReadExt::read(&mut stream, &mut sink).await? > 0 {}
        Ok::<(), std::io::Error>(())
    };
    let _ = tokio::time::timeout(Duration::from_millis(500), write).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_known_paths_and_types_the_rest() {
        assert_eq!(
            route(&Method::GET, "/v1/status"),
            Ok((Endpoint::Status, Access::Read))
        );
        assert_eq!(
            route(&Method::POST, "/v1/links/ic/drain"),
            Ok((Endpoint::Drain("ic".into(), true), Access::Write))
        );
        assert_eq!(
            route(&Method::POST, "/v1/links/ic/undrain"),
            Ok((Endpoint::Drain("ic".into(), false), Access::Write))
        );
        assert_eq!(
            route(&Method::POST, "/v1/groups/db/failover"),
            Ok((Endpoint::Failover("db".into()), Access::Write))
        );
        assert_eq!(
            route(&Method::POST, "/v1/groups//failover")
                .unwrap_err()
                .kind,
            ErrorKind::NotFound
        );
        assert_eq!(
            route(&Method::POST, "/v1/groups/db/failover/x")
                .unwrap_err()
                .kind,
            ErrorKind::NotFound
        );
        assert_eq!(events_query("since=5&limit=20"), Ok((5, 20)));
        assert_eq!(events_query("limit=99999"), Ok((0, 1000)));
        assert_eq!(
            events_query("since=x").unwrap_err().kind,
            ErrorKind::BadRequest
        );
        assert_eq!(
            route(&Method::POST, "/v1/reload"),
            Ok((Endpoint::Reload, Access::Write))
        );
        assert_eq!(
            route(&Method::GET, "/v1/reload").unwrap_err().kind,
            ErrorKind::MethodNotAllowed
        );
        assert_eq!(
            route(&Method::GET, "/v1/nope").unwrap_err().kind,
            ErrorKind::NotFound
        );
        let v2 = route(&Method::GET, "/v2/status").unwrap_err();
        assert_eq!(v2.kind, ErrorKind::UnsupportedApiVersion);
        assert!(
            v2.message.contains("speaks control API v1"),
            "{}",
            v2.message
        );
    }

    #[test]
    fn metric_labels_are_the_route_patterns() {
        assert_eq!(endpoint_label("/v1/status"), "/v1/status");
        assert_eq!(
            endpoint_label("/v1/groups/secret-name/failover"),
            "/v1/groups/{group}/failover"
        );
        assert_eq!(
            endpoint_label("/v1/links/x/undrain"),
            "/v1/links/{link}/undrain"
        );
        assert_eq!(endpoint_label("/etc/passwd"), "other");
        assert!(Access::Write > Access::Read);
    }
}
