//! The metrics listener: `/metrics` and `/healthz` over HTTP/1.1 on `[metrics].listen`.
//!
//! Both start from a [`crate::view::View`] the event loop hands over ([`Command::View`]); the
//! text is rendered (and compressed) on the blocking pool, so a large scrape costs the loop only
//! the snapshot. A listen address that cannot be bound (not configured on the host yet, or
//! taken) is logged and retried, since metrics are no reason to keep tunnels down. A reload
//! that changes the address moves the listener.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{HeaderValue, ACCEPT_ENCODING, CONTENT_ENCODING, CONTENT_TYPE, VARY};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use serde::Serialize;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot, watch, OwnedSemaphorePermit};

use crate::accept::Connections;

use crate::control::Command;
use isthmus_api::MetricsListener;

/// The event loop answers a scrape in milliseconds; one that does not within this is stuck.
const LOOP_TIMEOUT: Duration = Duration::from_secs(1);
/// Scrapers and health checkers at once; more get a 503.
const MAX_CONNECTIONS: usize = 8;
const HEADER_TIMEOUT: Duration = Duration::from_secs(5);
const RETRY_BIND: Duration = Duration::from_secs(5);
/// At shutdown, how long a scrape in flight may take to finish (the event loop answers in ms).
const DRAIN_TIMEOUT: Duration = Duration::from_millis(200);

/// What `/healthz` reports.
#[derive(Debug, Serialize)]
pub struct Healthz {
    pub healthy: bool,
    /// How long the event loop took to answer, in ms; absent if it did not answer.
    pub event_loop_ms: Option<f64>,
    /// Each link's data plane: "ok" or what is wrong.
    pub links: std::collections::BTreeMap<String, String>,
}

/// Serve until `shutdown`; follow `listen` changes; report the listener's state in `state`.
pub async fn serve(
    mut listen: watch::Receiver<SocketAddr>,
    state: watch::Sender<MetricsListener>,
    commands: mpsc::Sender<Command>,
    mut shutdown: watch::Receiver<bool>,
) {
    let commands = Arc::new(commands);
    let mut connections = Connections::new(MAX_CONNECTIONS, "metrics");
    'serving: loop {
        let addr = *listen.borrow_and_update();
        let listener = loop {
            match TcpListener::bind(addr).await {
                Ok(l) => break Some(l),
                Err(e) => {
                    tracing::error!(%addr, error = %e, "cannot listen for metrics; retrying every 5 s");
                    state.send_replace(MetricsListener {
                        listen: addr.to_string(),
                        listening: false,
                        error: Some(e.to_string()),
                    });
                    tokio::select! {
                        _ = tokio::time::sleep(RETRY_BIND) => {}
                        // The sender gone: agentd is stopping.
                        r = listen.changed() => if r.is_err() { break 'serving } else { break None },
                        _ = shutdown.wait_for(|s| *s) => break 'serving,
                    }
                }
            }
        };
        let Some(listener) = listener else { continue };
        tracing::info!(%addr, "serving metrics at /metrics and /healthz");
        state.send_replace(MetricsListener {
            listen: addr.to_string(),
            listening: true,
            error: None,
        });
        let mut stopping = false;
        let stop = async {
            tokio::select! {
                // The sender gone (the loop ended): stopping, not a new address. Taken for
                // one, the server rebound the same address in a loop until shutdown came.
                r = listen.changed() => stopping = r.is_err(),
                _ = shutdown.wait_for(|s| *s) => stopping = true,
            }
        };
        // A connection beyond the cap is answered too: with a 503, and closed.
        let connection = |stream, permit: Option<OwnedSemaphorePermit>| {
            let commands = commands.clone();
            async move {
                let busy = permit.is_none();
                let service = hyper::service::service_fn(move |req| {
                    let commands = commands.clone();
                    async move { Ok::<_, Infallible>(handle(req, &commands, busy).await) }
                });
                let conn = hyper::server::conn::http1::Builder::new()
                    .timer(TokioTimer::new())
                    .header_read_timeout(HEADER_TIMEOUT)
                    .keep_alive(!busy)
                    .serve_connection(TokioIo::new(stream), service);
                // Keep-alive connections (Prometheus reuses them) end when the client closes or
                // stays silent past the header timeout.
                if let Err(e) = conn.await {
                    tracing::debug!(error = %e, "metrics connection ended with an error");
                }
                drop(permit);
            }
        };
        connections
            .accept_until(
                &listener,
                stop,
                |stream, permit| Some(connection(stream, Some(permit))),
                |stream| connection(stream, None),
            )
            .await;
        if stopping {
            break;
        }
        tracing::info!("metrics listen address changed");
    }
    // A scrape in flight is answered; idle keep-alive connections are closed.
    connections.drain(DRAIN_TIMEOUT).await;
}

async fn handle(
    req: Request<Incoming>,
    commands: &mpsc::Sender<Command>,
    busy: bool,
) -> Response<Full<Bytes>> {
    if busy {
        return text(
            StatusCode::SERVICE_UNAVAILABLE,
            "too many metrics clients\n",
        );
    }
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return text(StatusCode::METHOD_NOT_ALLOWED, "use GET\n");
    }
    match req.uri().path() {
        "/metrics" => match ask(commands, |reply| Command::View { reply }).await {
            Some(view) => {
                let wants_gzip = accepts_gzip(&req);
                // Off the event loop's thread: rendering and compressing a large scrape take
                // milliseconds.
                let rendered = tokio::task::spawn_blocking(move || {
                    let body = super::render(&view);
                    if wants_gzip && body.len() >= GZIP_ABOVE {
                        compress(body.as_bytes()).map(|b| (b, true))
                    } else {
                        Some((body.into_bytes(), false))
                    }
                })
                .await
                .ok()
                .flatten();
                let Some((body, gzip)) = rendered else {
                    return text(StatusCode::INTERNAL_SERVER_ERROR, "cannot render\n");
                };
                let mut r = Response::new(Full::new(Bytes::from(body)));
                r.headers_mut().insert(
                    CONTENT_TYPE,
                    HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
                );
                r.headers_mut()
                    .insert(VARY, HeaderValue::from_static("Accept-Encoding"));
                if gzip {
                    r.headers_mut()
                        .insert(CONTENT_ENCODING, HeaderValue::from_static("gzip"));
                }
                r
            }
            None => text(
                StatusCode::SERVICE_UNAVAILABLE,
                "agentd's event loop did not answer within 1 s\n",
            ),
        },
        "/healthz" => {
            let started = crate::clock::now();
            let links = ask(commands, |reply| Command::View { reply })
                .await
                .map(|v| v.data_plane.clone());
            let health = match links {
                Some(links) => Healthz {
                    healthy: links.iter().all(|(_, p)| p.is_none()),
                    event_loop_ms: Some(
                        crate::clock::now()
                            .saturating_duration_since(started)
                            .as_secs_f64()
                            * 1e3,
                    ),
                    links: links
                        .into_iter()
                        .map(|(l, p)| (l, p.unwrap_or_else(|| "ok".to_owned())))
                        .collect(),
                },
                None => Healthz {
                    healthy: false,
                    event_loop_ms: None,
                    links: Default::default(),
                },
            };
            let status = if health.healthy {
                StatusCode::OK
            } else {
                StatusCode::SERVICE_UNAVAILABLE
            };
            let body = serde_json::to_vec(&health).unwrap_or_default();
            let mut r = Response::new(Full::new(Bytes::from(body)));
            *r.status_mut() = status;
            r.headers_mut()
                .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
            r
        }
        _ => text(StatusCode::NOT_FOUND, "try /metrics or /healthz\n"),
    }
}

/// Smaller scrapes go as they are: compressing them saves nothing worth the time.
const GZIP_ABOVE: usize = 4096;

/// Whether the client lists gzip in Accept-Encoding (without `q=0`).
fn accepts_gzip<B>(req: &Request<B>) -> bool {
    req.headers()
        .get_all(ACCEPT_ENCODING)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|coding| {
            let mut parts = coding.split(';').map(str::trim);
            let name = parts.next().unwrap_or("");
            let refused = parts.any(|p| p.replace(' ', "") == "q=0");
            (name.eq_ignore_ascii_case("gzip") || name == "*") && !refused
        })
}

fn compress(data: &[u8]) -> Option<Vec<u8>> {
    use std::io::Write as _;
    let mut enc = flate2::write::GzEncoder::new(
        Vec::with_capacity(data.len() / 8),
        flate2::Compression::fast(),
    );
    enc.write_all(data).ok()?;
    enc.finish().ok()
}

async fn ask<T>(
    commands: &mpsc::Sender<Command>,
    make: impl FnOnce(oneshot::Sender<T>) -> Command,
) -> Option<T> {
    let (tx, rx) = oneshot::channel();
    let asked = async {
        commands.send(make(tx)).await.ok()?;
        rx.await.ok()
    };
    tokio::time::timeout(LOOP_TIMEOUT, asked)
        .await
        .ok()
        .flatten()
}

fn text(status: StatusCode, body: &'static str) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *r.status_mut() = status;
    r.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(accept: Option<&str>) -> Request<()> {
        let mut b = Request::builder().uri("/metrics");
        if let Some(a) = accept {
            b = b.header(ACCEPT_ENCODING, a);
        }
        b.body(()).expect("request")
    }

    #[test]
    fn gzip_only_when_the_client_asks_for_it() {
        // What Prometheus sends.
        assert!(accepts_gzip(&request(Some("gzip"))));
        assert!(accepts_gzip(&request(Some("deflate, GZIP;q=0.5"))));
        assert!(accepts_gzip(&request(Some("*"))));
        assert!(!accepts_gzip(&request(None)));
        assert!(!accepts_gzip(&request(Some("identity"))));
        assert!(!accepts_gzip(&request(Some("gzip;q=0"))));
        assert!(!accepts_gzip(&request(Some("gzip; q=0, identity"))));
    }

    #[test]
    fn compressed_scrapes_decompress_to_the_same_text() {
        use std::io::Read as _;
        let text: String = (0..1000)
            .map(|i| format!("isthmus_target_up{{target=\"target-{i:04}\"}} 1\n"))
            .collect();
        let packed = compress(text.as_bytes()).expect("compresses");
        assert!(
            packed.len() * 5 < text.len(),
            "{} -> {}",
            text.len(),
            packed.len()
        );
        let mut back = String::new();
        flate2::read::GzDecoder::new(&packed[..])
            .read_to_string(&mut back)
            .expect("valid gzip");
        assert_eq!(back, text);
    }
}
