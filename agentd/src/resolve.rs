//! The resolver adapter: looks up hostname endpoints of links off the event loop.
//!
//! The loop sends a [`Lookup`] and goes on; the answer comes back as an
//! [`Input::Resolved`](crate::daemon::input::Input::Resolved) when the lookup ends, however long
//! the system resolver takes (each lookup is bounded by [`RESOLVE_TIMEOUT`] and runs in a task of
//! its own, so a resolver that never answers holds up nothing but its own lookup). The loop asks
//! at most once per link at a time.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::sync::mpsc;

use crate::daemon::input::Input;

/// How long one lookup may take before it counts as failed.
pub const RESOLVE_TIMEOUT: Duration = Duration::from_secs(5);

/// Look `host:port` up for `link`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lookup {
    pub link: String,
    pub host: String,
    pub port: u16,
}

/// The outcome of a [`Lookup`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    pub link: String,
    pub host: String,
    pub result: Result<SocketAddr, String>,
}

/// The real resolver: the system's (getaddrinfo through tokio's blocking pool).
pub async fn run(mut lookups: mpsc::UnboundedReceiver<Lookup>, inputs: mpsc::Sender<Input>) {
    while let Some(l) = lookups.recv().await {
        let inputs = inputs.clone();
        tokio::spawn(async move {
            let lookup = tokio::net::lookup_host((l.host.as_str(), l.port));
            let result = match tokio::time::timeout(RESOLVE_TIMEOUT, lookup).await {
                Ok(Ok(mut addrs)) => addrs
                    .next()
                    .ok_or_else(|| "no address for this name".to_owned()),
                Ok(Err(e)) => Err(e.to_string()),
                Err(_) => Err(format!("no answer within {RESOLVE_TIMEOUT:?}")),
            };
            let _ = inputs
                .send(Input::Resolved(Resolved {
                    link: l.link,
                    host: l.host,
                    result,
                }))
                .await;
        });
    }
}
