//! The control API: HTTP/1.1 + JSON on a Unix socket, served with hyper.
//!
//! Two gates. The socket file's mode and group ([`socket`]) decide who can connect at all; the
//! peer credentials read at accept ([`peer`]) decide what a connected client may do
//! ([`Policy::access_of`]): read for root and the read group, write for root and the admin group.
//! Handlers never touch daemon state: they send a [`Command`] to the event loop and wait for its
//! reply, so the loop stays the only owner of state. Reads get a [`crate::view::View`] and build
//! their JSON from it here, off the loop. The endpoints, their access and their metric labels
//! are one table in [`http`]; the loop's side of each command is in `daemon/commands.rs`.
//!
//! Abuse limits: at most `max_clients` connections at once (the next one gets a 503 and is closed),
//! one request per connection, `request_timeout` to send the headers and again to send the body,
//! headers up to 16 KiB (hyper answers 431 beyond), bodies up to [`MAX_BODY`] (413).

mod http;
pub mod peer;
pub mod socket;

use std::sync::Arc;
use std::time::Duration;

use isthmus_api::{Access, ErrorBody, EventRecord, ReloadOutcome, RouteGroupStatus, RoutesStatus};
use isthmus_config::{Control, GroupRef};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{mpsc, oneshot, watch};

use crate::accept::Connections;
use crate::view::View;
use peer::Peer;

/// Largest request body accepted.
pub const MAX_BODY: usize = 64 * 1024;

/// A request for the event loop.
#[derive(Debug)]
pub enum Command {
    /// A snapshot for the readers off the loop: status, links, probes, `/metrics`, `/healthz`.
    View { reply: oneshot::Sender<Arc<View>> },
    Reload {
        reply: oneshot::Sender<Result<ReloadOutcome, ErrorBody>>,
    },
    /// Desired routes against the kernel's (answered by the routes adapter).
    Routes {
        reply: oneshot::Sender<RoutesStatus>,
    },
    /// Pin `group` to link `to` (manual failover).
    Failover {
        group: String,
        to: String,
        reason: String,
        reply: oneshot::Sender<Result<RouteGroupStatus, ErrorBody>>,
    },
    /// Release the pin of `group`.
    Failback {
        group: String,
        reply: oneshot::Sender<Result<RouteGroupStatus, ErrorBody>>,
    },
    /// Drain (`on`) or undrain a link.
    Drain {
        link: String,
        on: bool,
        reply: oneshot::Sender<Result<Vec<RouteGroupStatus>, ErrorBody>>,
    },
    Events {
        since: u64,
        limit: usize,
        reply: oneshot::Sender<Vec<EventRecord>>,
    },
    /// Start a drill.
    DrillStart {
        request: isthmus_api::DrillRequest,
        reply: oneshot::Sender<Result<isthmus_api::DrillReport, ErrorBody>>,
    },
    /// The current or last drill.
    DrillGet {
        reply: oneshot::Sender<Result<isthmus_api::DrillReport, ErrorBody>>,
    },
    /// Stop the running drill and fail back.
    DrillAbort {
        reply: oneshot::Sender<Result<isthmus_api::DrillReport, ErrorBody>>,
    },
}

/// Who may do what; replaced on reload.
#[derive(Debug, Clone, PartialEq)]
pub struct Policy {
    read_group: GroupRef,
    read_gid: Option<u32>,
    admin_group: GroupRef,
    admin_gid: Option<u32>,
    /// The user agentd runs as may always talk to itself.
    own_uid: u32,
}

impl Policy {
    pub fn from_config(control: &Control) -> Self {
        Policy {
            read_gid: control.read_group.resolve(),
            read_group: control.read_group.clone(),
            admin_gid: control.admin_group.resolve(),
            admin_group: control.admin_group.clone(),
            own_uid: nix::unistd::geteuid().as_raw(),
        }
    }

    pub fn read_gid(&self) -> Option<u32> {
        self.read_gid
    }

    /// The highest access the peer has, or `None`.
    pub fn access_of(&self, peer: &Peer) -> Option<Access> {
        if peer.uid == 0 || peer.uid == self.own_uid {
            return Some(Access::Write);
        }
        if self.admin_gid.is_some_and(|g| peer.in_group(g)) {
            return Some(Access::Write);
        }
        if self.read_gid.is_some_and(|g| peer.in_group(g)) {
            return Some(Access::Read);
        }
        None
    }

    /// Which group grants `access`, for the "permission denied" message.
    pub fn group_for(&self, access: Access) -> String {
        let (group, gid) = match access {
            Access::Read => (&self.read_group, self.read_gid),
            Access::Write => (&self.admin_group, self.admin_gid),
        };
        match (group, gid) {
            (GroupRef::Name(name), Some(gid)) => format!("{name} (gid {gid})"),
            (GroupRef::Name(name), None) => format!("{name} (which does not exist on this host)"),
            (GroupRef::Id(gid), _) => format!("gid {gid}"),
        }
    }
}

/// Settings fixed for the life of the listener.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_clients: usize,
    pub request_timeout: Duration,
}

impl Limits {
    pub fn from_config(control: &Control) -> Self {
        Limits {
            max_clients: control.max_clients,
            request_timeout: control.request_timeout,
        }
    }
}

/// Accept connections until `shutdown` turns true, then let the ones in flight finish
/// (bounded by the request timeout).
pub async fn serve(
    listener: UnixListener,
    limits: Limits,
    policy: watch::Receiver<Policy>,
    commands: mpsc::Sender<Command>,
    requests: prometheus::IntCounterVec,
    mut shutdown: watch::Receiver<bool>,
) {
    let ctx = Arc::new(http::Context {
        policy,
        commands,
        request_timeout: limits.request_timeout,
        requests,
    });
    let mut connections = Connections::new(limits.max_clients, "control");
    let stop = async {
        let _ = shutdown.wait_for(|stop| *stop).await;
    };
    let serve = |stream: UnixStream, permit| {
        let peer = match peer::peer_of(&stream) {
            Ok(peer) => peer,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read control client credentials; closing");
                return None;
            }
        };
        let ctx = ctx.clone();
        Some(async move {
            http::serve_connection(stream, peer, ctx).await;
            drop(permit);
        })
    };
    let refuse = |stream| {
        ctx.requests.with_label_values(&["other", "503"]).inc();
        http::refuse_busy(stream)
    };
    connections
        .accept_until(&listener, stop, serve, refuse)
        .await;
    drop(listener);
    connections.drain(limits.request_timeout).await;
}
