//! The actions adapter: failover carried beyond the kernel, as desired state.
//!
//! The event loop decides (the engine's active links and DNS answers) and sends this adapter
//! the complete desired state of every **target** ([`ActionsCmd::Apply`]): a DNS record of a
//! DNS group, a cloud route table. It never waits for an answer. Each target gets its own
//! task ([`worker`]) that reconciles: read what is there, compare, write only on difference
//! and conditionally on what it read, verify that the change is served, and report
//! ([`ActionReport`]) with the time from the decision to the verified change. A failed
//! condition (somebody else wrote) means read again and decide again. Failures are retried
//! with exponential back-off and jitter; writes to one target are at most one per
//! `min_interval`; every target is re-read and re-asserted every `reassert_every`. Targets are
//! independent: a provider that hangs holds only its own tasks, never the loop, the probes, the
//! routes, or another provider. An endpoint that does not answer (every request has the
//! `[actions].timeout` deadline) or cannot be reached raises an `action_timeout` fault for the
//! target, said and counted once until an attempt succeeds ([`crate::faults`]).
//!
//! Hooks ([`hooks`]) are commands run on transitions, in order per hook, with retries and a
//! timeout that kills them.
//!
//! The providers themselves (RFC 2136, Route 53, OCI, EC2, commands) are the
//! `isthmus-actions` crate; [`backends`] builds them from the config.

pub mod backends;
pub mod hooks;
#[cfg(test)]
mod tests;
mod worker;

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use isthmus_actions::{DnsBackend, FailureKind, RRset, RecordRef, RouteTableBackend, TableRoutes};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use crate::daemon::input::Input;
use crate::faults::Faults;
pub use hooks::{HookReport, HookRun};

/// Which cloud a route table is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Cloud {
    Aws,
    Oci,
}

impl Cloud {
    pub fn as_str(self) -> &'static str {
        match self {
            Cloud::Aws => "aws",
            Cloud::Oci => "oci",
        }
    }
}

/// One thing in the world that follows a decision.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum TargetId {
    /// The record of a DNS group.
    Dns(String),
    /// A cloud route table (all our destinations in it, whichever route groups they are of).
    RouteTable { cloud: Cloud, id: String },
}

impl TargetId {
    /// A metrics label: `dns`, `aws_route_table`, `oci_route_table`.
    pub fn kind(&self) -> &'static str {
        match self {
            TargetId::Dns(_) => "dns",
            TargetId::RouteTable {
                cloud: Cloud::Aws, ..
            } => "aws_route_table",
            TargetId::RouteTable {
                cloud: Cloud::Oci, ..
            } => "oci_route_table",
        }
    }

    /// The group name or the table id.
    pub fn name(&self) -> &str {
        match self {
            TargetId::Dns(g) => g,
            TargetId::RouteTable { id, .. } => id,
        }
    }
}

impl fmt::Display for TargetId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TargetId::Dns(g) => write!(f, "dns group {g}"),
            TargetId::RouteTable { cloud, id } => write!(f, "{} route table {id}", cloud.as_str()),
        }
    }
}

/// What a target should hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Want {
    Dns {
        provider: String,
        rec: RecordRef,
        rrset: RRset,
    },
    Table {
        routes: TableRoutes,
    },
}

impl Want {
    /// In words, for events and status: `10.2.2.10`, `10.2.0.0/16 → eni-…`.
    pub fn describe(&self) -> String {
        match self {
            Want::Dns { rrset, .. } => rrset.values.join(" "),
            Want::Table { routes } => describe_routes(routes),
        }
    }
}

pub fn describe_routes(routes: &TableRoutes) -> String {
    routes
        .iter()
        .map(|(d, t)| format!("{d} → {}", t.as_deref().unwrap_or("(none)")))
        .collect::<Vec<_>>()
        .join(", ")
}

/// A target's desired state and when the loop decided it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Desired {
    pub want: Want,
    pub decided: Instant,
}

/// How actions are paced: `[actions]` of the config, as validated there.
pub type Pacing = isthmus_config::Actions;

/// The providers of a config, by the names desired state refers to.
#[derive(Default, Clone)]
pub struct Backends {
    pub dns: BTreeMap<String, Arc<dyn DnsBackend>>,
    /// Per DNS provider: its own `min_interval`, if set.
    pub dns_min_interval: BTreeMap<String, Duration>,
    pub tables: BTreeMap<(Cloud, String), Arc<dyn RouteTableBackend>>,
    /// Providers and tables that could not be built, with the reason (their targets fail
    /// with it).
    pub broken: BTreeMap<String, String>,
    pub pacing: Pacing,
}

/// What the loop tells the adapter.
pub enum ActionsCmd {
    /// New providers (start-up, reload). Every target starts again from a read.
    Configure(Arc<Backends>),
    /// The complete desired state: targets not in it are forgotten.
    Apply(BTreeMap<TargetId, Desired>),
    /// Run a hook.
    Hook(HookRun),
    /// Read a target and say what a write of `want` would change, writing nothing (a drill's
    /// pre-check); answered with [`Input::DryRun`].
    DryRun { tag: u64, id: TargetId, want: Want },
}

/// What a dry run found: `Ok` what a write would do, or why the target cannot be reached.
#[derive(Debug, Clone, PartialEq)]
pub struct DryRunReport {
    pub tag: u64,
    pub target: TargetId,
    pub provider: String,
    pub result: Result<String, String>,
}

/// What happened to a target.
#[derive(Debug, Clone, PartialEq)]
pub enum ActionEvent {
    /// The target holds the desired state, verified. `changed`: we wrote it (else it was there).
    Done {
        changed: bool,
        from: Option<String>,
        to: String,
        /// From the decision to the verified change.
        took: Duration,
        /// A periodic re-assertion, not a new decision.
        reasserted: bool,
    },
    /// Somebody else changed the target between our read and our write: read again.
    Conflict { found: String },
    /// An attempt failed; the next is in `retry_in`.
    Failed {
        kind: FailureKind,
        message: String,
        attempt: u32,
        retry_in: Duration,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub struct ActionReport {
    pub target: TargetId,
    /// The provider, in words (`rfc2136 127.0.0.1:53 zone fo.test.`).
    pub provider: String,
    pub event: ActionEvent,
}

/// The adapter task: owns one worker per target and the hook runners.
pub async fn run(
    mut rx: mpsc::UnboundedReceiver<ActionsCmd>,
    reports: mpsc::Sender<Input>,
    faults: Faults,
) {
    let mut backends = Arc::new(Backends::default());
    let mut workers: BTreeMap<
        TargetId,
        (watch::Sender<Option<Desired>>, tokio::task::JoinHandle<()>),
    > = BTreeMap::new();
    let mut desired: BTreeMap<TargetId, Desired> = BTreeMap::new();
    let mut hooks = hooks::Runners::new(reports.clone());
    while let Some(cmd) = rx.recv().await {
        match cmd {
            ActionsCmd::Configure(b) => {
                backends = b;
                hooks.set_pacing(backends.pacing.clone());
                for (_, (_, task)) in std::mem::take(&mut workers) {
                    task.abort();
                }
            }
            ActionsCmd::Apply(d) => desired = d,
            ActionsCmd::Hook(run) => {
                hooks.run(run);
                continue;
            }
            ActionsCmd::DryRun { tag, id, want } => {
                let (backends, reports) = (backends.clone(), reports.clone());
                tokio::spawn(async move {
                    let report = worker::dry_run(tag, id, &want, &backends).await;
                    let _ = reports.send(Input::DryRun(report)).await;
                });
                continue;
            }
        }
        workers.retain(|id, (_, task)| {
            let keep = desired.contains_key(id);
            if !keep {
                task.abort();
            }
            keep
        });
        for (id, d) in &desired {
            match workers.get(id) {
                Some((tx, _)) => {
                    // The loop keeps the decision time of an unchanged want: only a new
                    // decision wakes the worker.
                    tx.send_if_modified(|cur| {
                        let new = cur.as_ref() != Some(d);
                        if new {
                            *cur = Some(d.clone());
                        }
                        new
                    });
                }
                None => {
                    let (tx, wrx) = watch::channel(Some(d.clone()));
                    let task = tokio::spawn(worker::run(
                        id.clone(),
                        wrx,
                        backends.clone(),
                        reports.clone(),
                        faults.clone(),
                    ));
                    workers.insert(id.clone(), (tx, task));
                }
            }
        }
    }
    for (_, (_, task)) in workers {
        task.abort();
    }
}
