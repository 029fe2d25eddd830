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
//! Abuse limits, per caller ([`admission`]): at accept, before a byte is read, a connection is
//! admitted by the credentials of its caller (at most `max_clients_per_user` per uid, root's
//! too; `reserved_clients` of the `max_clients` slots kept for root, agentd's user and the
//! admin group), or refused with a typed 503. A process of a user at its share may take the
//! place of a stalled connection of a process of the same user holding more, so a flooding
//! script cannot lock its own user out. Then: the request head within `head_timeout` of
//! connecting, the body within `request_timeout` after it, a response the client stops reading
//! cut off after `request_timeout` without progress ([`stall`]); one request per connection,
//! headers up to 16 KiB (hyper answers 431 beyond), bodies up to [`MAX_BODY`] (413). Refusals
//! and cut-offs are counted in `isthmus_control_refused_total{reason}`.

pub mod admission;
mod gate;
pub(crate) mod http;
pub mod peer;
pub mod socket;
mod stall;

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::future::Either;
use isthmus_api::{Access, ErrorBody, EventRecord, ReloadOutcome, RouteGroupStatus, RoutesStatus};
use isthmus_config::{Control, GroupRef};
use prometheus::{IntCounter, IntCounterVec, Opts};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{mpsc, oneshot, watch};

use crate::accept::Connections;
use crate::view::View;
use admission::{Caller, Reason, Refusal};
use gate::{Admitted, Gate, Ticket};
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
    /// Drain (`on`) or undrain this gateway of its HA pair.
    DrainGateway {
        on: bool,
        reply: oneshot::Sender<Result<isthmus_api::HaStatus, ErrorBody>>,
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

/// At most one warning about refused clients this often, with the number left unlogged: a
/// flood would otherwise write thousands of lines a second to the journal.
const WARN_EVERY: Duration = Duration::from_secs(10);

/// Settings fixed for the life of the listener.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_clients: usize,
    pub max_clients_per_user: usize,
    pub reserved_clients: usize,
    pub head_timeout: Duration,
    pub request_timeout: Duration,
}

impl Limits {
    pub fn from_config(control: &Control) -> Self {
        Limits {
            max_clients: control.max_clients,
            max_clients_per_user: control.max_clients_per_user,
            reserved_clients: control.reserved_clients,
            head_timeout: control.head_timeout,
            request_timeout: control.request_timeout,
        }
    }

    fn admission(&self) -> admission::Limits {
        admission::Limits {
            max_clients: self.max_clients,
            per_user: self.max_clients_per_user,
            reserved: self.reserved_clients,
        }
    }
}

/// `isthmus_control_refused_total{reason}`, every reason present from the start at 0.
pub fn refused_family() -> IntCounterVec {
    let family = IntCounterVec::new(
        Opts::new(
            "isthmus_control_refused_total",
            "Control connections refused or cut off, by reason: per_user, full, evicted, head_timeout, stalled, credentials.",
        ),
        &["reason"],
    )
    .expect("valid counter");
    for reason in Reason::ALL {
        family.with_label_values(&[reason.label()]);
    }
    family
}

/// The counters of `isthmus_control_refused_total`, looked up once: a flood counts thousands a
/// second, and `with_label_values` hashes and locks each time.
#[derive(Clone)]
struct Refused([IntCounter; Reason::ALL.len()]);

impl Refused {
    fn new(family: &IntCounterVec) -> Refused {
        Refused(Reason::ALL.map(|r| family.with_label_values(&[r.label()])))
    }

    fn count(&self, reason: Reason) {
        self.0[reason as usize].inc();
    }
}

/// Accept connections until `shutdown` turns true, then let the ones in flight finish
/// (bounded by the request timeout).
pub async fn serve(
    listener: UnixListener,
    limits: Limits,
    policy: watch::Receiver<Policy>,
    commands: mpsc::Sender<Command>,
    requests: IntCounterVec,
    refused: IntCounterVec,
    mut shutdown: watch::Receiver<bool>,
) {
    let ctx = Arc::new(http::Context {
        policy,
        commands,
        head_timeout: limits.head_timeout,
        request_timeout: limits.request_timeout,
        requests,
        half_close: false,
    });
    let refused = Refused::new(&refused);
    let gate = Gate::new(limits.admission());
    let mut warnings = Throttle::default();
    let mut connections = Connections::new(limits.max_clients, "control");
    let stop = async {
        let _ = shutdown.wait_for(|stop| *stop).await;
    };
    let admit = |stream: UnixStream| {
        let peer = match peer::peer_of(&stream) {
            Ok(peer) => peer,
            Err(e) => {
                refused.count(Reason::Credentials);
                tracing::warn!(error = %e, "cannot read control client credentials; closing");
                return None;
            }
        };
        let caller = Caller {
            uid: peer.uid,
            pid: peer.pid.and_then(|p| u32::try_from(p).ok()).unwrap_or(0),
            privileged: ctx.policy.borrow().access_of(&peer) == Some(Access::Write),
        };
        match gate.admit(caller) {
            Admitted::Yes {
                ticket,
                evicted,
                replaced,
            } => {
                if replaced {
                    refused.count(Reason::Evicted);
                    tracing::debug!(
                        uid = caller.uid,
                        pid = caller.pid,
                        "control client admitted in place of a stalled connection of its user"
                    );
                }
                let task = connection(stream, peer, ctx.clone(), ticket, evicted, refused.clone());
                Some(Either::Left(task))
            }
            Admitted::No(refusal) => {
                refused.count(refusal.reason());
                warnings.refused(&refusal, caller, gate.open());
                // No room to answer: close without one.
                let answering = gate.answer_refusal(caller.uid)?;
                Some(Either::Right(async move {
                    http::refuse_busy(stream, &refusal.message()).await;
                    drop(answering);
                }))
            }
        }
    };
    connections.accept_each(&listener, stop, admit).await;
    drop(listener);
    connections.drain(limits.request_timeout).await;
}

/// One admitted connection, until it ends or another takes its place; its slot is freed when
/// `ticket` drops.
async fn connection(
    stream: UnixStream,
    peer: Peer,
    ctx: Arc<http::Context>,
    ticket: Ticket,
    evicted: oneshot::Receiver<()>,
    refused: Refused,
) {
    let ticket = Arc::new(ticket);
    let head = Arc::clone(&ticket);
    let io = stall::WriteStall::new(stream, ctx.request_timeout);
    let served = http::serve_connection(io, peer, ctx, move || head.head_received());
    tokio::select! {
        result = served => {
            if let Err(e) = result {
                let reason = if e.is_timeout() {
                    Some(Reason::HeadTimeout)
                } else if stall::is_stall(&e) {
                    Some(Reason::Stalled)
                } else {
                    None
                };
                if let Some(reason) = reason {
                    refused.count(reason);
                }
                tracing::debug!(error = %e, "control connection ended with an error");
            }
        }
        // Dropping `served` closes the connection (already counted when it was evicted).
        Ok(()) = evicted => {}
    }
    drop(ticket);
}

/// Rate-limited warnings about refused clients.
#[derive(Debug, Default)]
struct Throttle {
    last: Option<Instant>,
    unlogged: u64,
}

impl Throttle {
    fn refused(&mut self, refusal: &Refusal, caller: Caller, open: usize) {
        let now = crate::clock::now();
        if self
            .last
            .is_some_and(|at| now.saturating_duration_since(at) < WARN_EVERY)
        {
            self.unlogged += 1;
            tracing::debug!(
                uid = caller.uid,
                pid = caller.pid,
                reason = refusal.reason().label(),
                "control client refused"
            );
            return;
        }
        tracing::warn!(
            uid = caller.uid,
            pid = caller.pid,
            reason = refusal.reason().label(),
            open,
            unlogged_before = self.unlogged,
            "control client refused: {}",
            refusal.message()
        );
        self.last = Some(now);
        self.unlogged = 0;
    }
}
