//! A snapshot of what the event loop knows, for the readers that run off the loop: the status
//! and probes reports (`netctl`), `/metrics` and `/healthz`. The loop builds one when asked
//! ([`crate::daemon::Shell::view`], cheap: counters are shared, the rest is copied) and hands it
//! over; rendering text or JSON from it (milliseconds with a thousand targets) then costs the
//! loop nothing. Nothing here imports the daemon.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use isthmus_api::{LinkStatus, LoopLag, MetricsListener, RouteGroupStatus};
use isthmus_config::{Config, Diagnostic};

use crate::failover::LinkView;
use crate::metrics::Metrics;
use crate::probe::job::JobKey;
use crate::probe::target::Outcome;
use crate::routes::RouteStats;
use crate::tunnel::counters::Counters;

/// The latest result of a target check.
#[derive(Debug, Clone)]
pub struct TargetState {
    pub last: Outcome,
    pub at: Instant,
    pub successes: u64,
    pub failures: u64,
}

/// The last rejected reload.
#[derive(Debug, Clone)]
pub struct Rejected {
    pub at: Instant,
    pub error_count: usize,
    pub first_error: String,
}

impl std::fmt::Debug for View {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("View")
            .field("links", &self.links.len())
            .field("targets", &self.targets.len())
            .finish_non_exhaustive()
    }
}

pub struct View {
    /// A drill running here, and the group the peer drills.
    pub drill: Option<isthmus_api::DrillBrief>,
    pub peer_drill: Option<String>,
    /// The HA pair, with `[ha]`.
    pub ha: Option<isthmus_api::HaStatus>,
    /// When the snapshot was taken, on the loop's clock and the wall clock.
    pub now: Instant,
    pub wall: SystemTime,
    pub config: Arc<Config>,
    pub config_path: PathBuf,
    pub fingerprint: String,
    pub loaded_at: Instant,
    pub config_warnings: Vec<Diagnostic>,
    pub started_at: Instant,
    pub reloads_applied: u64,
    pub reloads_rejected: u64,
    pub last_rejected: Option<Rejected>,
    pub metrics_listener: MetricsListener,
    pub loop_lag: Option<LoopLag>,
    pub event_log_dropped: u64,
    /// Every link's status, health and figures filled in.
    pub links: Vec<LinkStatus>,
    /// The engine's own figures per link (for metrics, unrounded).
    pub engine: BTreeMap<String, LinkView>,
    pub counters: BTreeMap<String, Arc<Counters>>,
    pub groups: Vec<RouteGroupStatus>,
    /// DNS groups: answers, their checks, the chosen one.
    pub dns_groups: Vec<isthmus_api::DnsGroupStatus>,
    /// Every action target, as the actions adapter last reported it.
    pub actions: Vec<isthmus_api::ActionStatus>,
    /// Groups whose active link the peer pinned.
    pub peer_pinned: BTreeMap<String, bool>,
    pub routes: RouteStats,
    pub host_warnings: Vec<String>,
    pub targets: BTreeMap<JobKey, TargetState>,
    /// `None` for a link whose worker runs and turns, else what is wrong.
    pub data_plane: Vec<(String, Option<String>)>,
    pub metrics: Metrics,
}
