//! A small client for agentd's control API over its Unix socket.
//!
//! Its errors say what an operator should do: agentd not running, which group is needed,
//! a version mismatch. Each maps to its own exit code (see `main.rs`).

use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Method, Request};
use hyper_util::rt::TokioIo;
use isthmus_api::{ErrorBody, ErrorKind, AGENTD_VERSION_HEADER, CLIENT_VERSION_HEADER};
use serde::de::DeserializeOwned;
use tokio::net::UnixStream;

pub const NETCTL_VERSION: &str = env!("CARGO_PKG_VERSION");

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("agentd is not running: {reason} ({path})\n  start it with `systemctl start isthmus-agentd`, or point --socket at the right file")]
    NotRunning { path: PathBuf, reason: String },
    #[error("permission denied on {path}: you need to be root or in group {group}")]
    CannotConnect { path: PathBuf, group: String },
    #[error("{}", .0.message)]
    Api(ErrorBody),
    #[error("agentd {agentd} does not speak control API {api} that netctl {netctl} uses: use the netctl that came with agentd {agentd}", api = isthmus_api::API_VERSION, netctl = NETCTL_VERSION)]
    ApiMismatch { agentd: String },
    #[error(
        "no answer from agentd within {0:?} (is it stuck? see `journalctl -u isthmus-agentd`)"
    )]
    Timeout(Duration),
    #[error("talking to agentd on {path}: {detail}")]
    Protocol { path: PathBuf, detail: String },
}

pub struct Client {
    socket: PathBuf,
    timeout: Duration,
}

/// A decoded response and the agentd version that sent it.
pub struct Reply<T> {
    pub value: T,
    pub agentd_version: Option<String>,
}

impl Client {
    pub fn new(socket: PathBuf, timeout: Duration) -> Self {
        Client { socket, timeout }
    }

    /// How long one request may take.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<Reply<T>, ClientError> {
        self.request(Method::GET, path, Bytes::new()).await
    }

    pub async fn post<T: DeserializeOwned>(&self, path: &str) -> Result<Reply<T>, ClientError> {
        self.request(Method::POST, path, Bytes::new()).await
    }

    /// POST with a JSON body.
    pub async fn post_json<B: serde::Serialize, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<Reply<T>, ClientError> {
        let body = serde_json::to_vec(body).map_err(|e| ClientError::Protocol {
            path: self.socket.clone(),
            detail: e.to_string(),
        })?;
        self.request(Method::POST, path, Bytes::from(body)).await
    }

    async fn request<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Bytes,
    ) -> Result<Reply<T>, ClientError> {
        match tokio::time::timeout(self.timeout, self.exchange(method, path, body)).await {
            Ok(result) => result,
            Err(_) => Err(ClientError::Timeout(self.timeout)),
        }
    }

    async fn exchange<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Bytes,
    ) -> Result<Reply<T>, ClientError> {
        let stream = UnixStream::connect(&self.socket)
            .await
            .map_err(|e| self.connect_error(e))?;
        let protocol = |detail: String| ClientError::Protocol {
            path: self.socket.clone(),
            detail,
        };
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| protocol(e.to_string()))?;
        tokio::spawn(conn);
        let req = Request::builder()
            .method(method)
            .uri(path)
            .header(hyper::header::HOST, "agentd")
            .header(CLIENT_VERSION_HEADER, NETCTL_VERSION)
            .header(hyper::header::CONTENT_TYPE, "application/json")
            .body(Full::new(body))
            .map_err(|e| protocol(e.to_string()))?;
        let resp = sender
            .send_request(req)
            .await
            .map_err(|e| protocol(e.to_string()))?;
        let status = resp.status();
        let agentd_version = resp
            .headers()
            .get(AGENTD_VERSION_HEADER)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let body = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| protocol(e.to_string()))?
            .to_bytes();
        if status.is_success() {
            return serde_json::from_slice(&body)
                .map(|value| Reply {
                    value,
                    agentd_version,
                })
                .map_err(|e| protocol(format!("unexpected answer to {path}: {e}")));
        }
        match serde_json::from_slice::<ErrorBody>(&body) {
            Ok(err) if err.kind == ErrorKind::UnsupportedApiVersion => {
                Err(ClientError::ApiMismatch {
                    agentd: agentd_version.unwrap_or_else(|| "unknown".into()),
                })
            }
            Ok(err) => Err(ClientError::Api(err)),
            Err(_) if agentd_version.is_none() => Err(protocol(format!(
                "HTTP {status} from something that is not agentd"
            ))),
            // A future agentd whose error kinds this netctl does not know.
            Err(_) if agentd_version.as_deref() != Some(NETCTL_VERSION) => {
                Err(ClientError::ApiMismatch {
                    agentd: agentd_version.unwrap_or_default(),
                })
            }
            Err(_) => Err(protocol(format!(
                "HTTP {status}: {}",
                String::from_utf8_lossy(&body)
            ))),
        }
    }

    fn connect_error(&self, e: io::Error) -> ClientError {
        let path = self.socket.clone();
        match e.kind() {
            io::ErrorKind::NotFound => ClientError::NotRunning {
                path,
                reason: "no control socket".into(),
            },
            io::ErrorKind::ConnectionRefused => ClientError::NotRunning {
                path,
                reason: "the control socket is stale (agentd exited without removing it)".into(),
            },
            io::ErrorKind::PermissionDenied => ClientError::CannotConnect {
                group: socket_group(&self.socket),
                path,
            },
            _ => ClientError::Protocol {
                path,
                detail: format!("cannot connect: {e}"),
            },
        }
    }
}

/// The group that may connect: the socket file's group (agentd sets it to the read group).
fn socket_group(path: &Path) -> String {
    match std::fs::metadata(path) {
        Ok(meta) => {
            let gid = meta.gid();
            match nix::unistd::Group::from_gid(nix::unistd::Gid::from_raw(gid)) {
                Ok(Some(group)) => format!("{} (gid {gid})", group.name),
                _ => format!("gid {gid}"),
            }
        }
        // Cannot even see the socket: the directory is closed to us.
        Err(_) => "isthmus (the control socket's directory is not readable)".into(),
    }
}
