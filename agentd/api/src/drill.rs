//! Failover drills (`netctl drill`): a planned switchover of one group to its next healthy link
//! (route group) or answer (DNS group), held, then failed back, measured all along by a dense
//! probe stream per link. agentd runs the drill and keeps its [`DrillReport`]; netctl starts and
//! follows it and writes the report files (Markdown, JSON, SVG) where the operator asks.

use serde::{Deserialize, Serialize};

/// Body of `POST /v1/drill`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DrillRequest {
    /// A route group or a DNS group.
    pub group: String,
    /// How long to stay on the new path before failing back.
    pub hold_ms: u64,
    /// The recovery time objective the switchover is judged against.
    pub rto_target_ms: u64,
    /// Who asked and why, for both gateways' event logs.
    #[serde(default)]
    pub reason: Option<String>,
}

/// Where a drill is. The last four are final.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DrillState {
    /// Checking that the switch can be made safely (backup up, checks, providers).
    Prechecks,
    /// Measuring every link before the switch.
    Baseline,
    /// Switched; waiting until traffic, checks and actions are verified on the new path.
    Switching,
    /// On the new path, for `hold_ms`.
    Holding,
    /// Switched back; waiting until the original path is verified again.
    FailingBack,
    /// Measuring every link after the failback.
    After,
    /// Ran to the end (see `problems` for what went wrong, if anything).
    Done,
    /// Refused by a failing pre-check; nothing was changed.
    Refused,
    /// Stopped early (`netctl drill --abort`, or the new path broke) and failed back.
    Aborted,
    /// Could not fail back (the original path was down at the end): the group is left to the
    /// automatic choice, which may not be the original path.
    Failed,
}

impl DrillState {
    pub fn is_final(self) -> bool {
        matches!(
            self,
            DrillState::Done | DrillState::Refused | DrillState::Aborted | DrillState::Failed
        )
    }

    pub fn as_str(self) -> &'static str {
        match self {
            DrillState::Prechecks => "prechecks",
            DrillState::Baseline => "baseline",
            DrillState::Switching => "switching",
            DrillState::Holding => "holding",
            DrillState::FailingBack => "failing_back",
            DrillState::After => "after",
            DrillState::Done => "done",
            DrillState::Refused => "refused",
            DrillState::Aborted => "aborted",
            DrillState::Failed => "failed",
        }
    }
}

impl std::fmt::Display for DrillState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What the drill moves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DrillTarget {
    /// A route group: from its active link to the next healthy one.
    RouteGroup,
    /// A DNS group: from its published answer to the next one whose checks pass.
    DnsGroup,
}

/// One pre-check and its outcome.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DrillCheck {
    /// What was checked (`backup link internet up`, `dry run: aws route table rtb-1`).
    pub name: String,
    pub ok: bool,
    /// What was found (`up, rtt 0.3 ms`, `would change 10.2.0.0/16 to eni-2`, the error).
    pub detail: String,
}

/// One step of the time line.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DrillStep {
    pub unix_ms: u64,
    /// Milliseconds since the drill started.
    pub at_ms: u64,
    /// The state the drill entered, or `None` for a note within a state.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<DrillState>,
    pub what: String,
}

/// The dense stream's figures on one link during one phase.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DrillPhaseStats {
    /// `baseline`, `switching`, `holding`, `failing_back` or `after`.
    pub phase: DrillState,
    pub sent: u64,
    pub lost: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rtt_avg_ms: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rtt_p95_ms: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rtt_max_ms: Option<f64>,
}

/// One bucket of a link's series for the chart: probes sent in `[at_ms, at_ms + bucket_ms)`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DrillPoint {
    pub at_ms: u64,
    pub sent: u32,
    pub lost: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rtt_avg_ms: Option<f64>,
}

/// One link as the drill's own probe stream saw it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DrillLink {
    pub name: String,
    /// What the stream probes (the peer's tunnel address over this link).
    pub target: String,
    pub phases: Vec<DrillPhaseStats>,
    pub series: Vec<DrillPoint>,
}

/// A drill as agentd keeps it: the state while it runs, the report when it is over.
/// `GET /v1/drill` answers the current or last one.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DrillReport {
    /// Unique per gateway (the start time in unix ms).
    pub id: u64,
    /// The gateway that ran it (`[agent].name`).
    pub gateway: String,
    pub group: String,
    pub target: DrillTarget,
    /// The link (or answer value) the group was on, and the one it was moved to.
    pub from: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<String>,
    pub reason: String,
    pub state: DrillState,
    pub started_unix_ms: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_unix_ms: Option<u64>,
    pub hold_ms: u64,
    pub rto_target_ms: u64,
    /// Switch to new path verified at this gateway: the routes in the kernel, a probe of the
    /// stream sent after the switch answered over the new path, the checks passing there, the
    /// actions in sync with the new want (for a DNS group: the record served). The peer
    /// follows the pin within a probe interval; its own event log has the time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rto_ms: Option<u64>,
    /// The same for the way back.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failback_ms: Option<u64>,
    /// Probes of the dense stream lost on the path carrying traffic while switching over
    /// and while failing back.
    pub lost_switching: u64,
    pub lost_failing_back: u64,
    /// The stream's interval per link.
    pub interval_ms: u64,
    /// Width of the buckets in every link's `series`.
    pub bucket_ms: u64,
    pub prechecks: Vec<DrillCheck>,
    pub timeline: Vec<DrillStep>,
    pub links: Vec<DrillLink>,
    /// Anything that went wrong, one line each (a refused pre-check, an abort and why, a
    /// target that never got in sync, an RTO above target, loss at the switch).
    pub problems: Vec<String>,
}

impl DrillReport {
    /// Whether the achieved RTO met the target (`None` while unknown).
    pub fn rto_met(&self) -> Option<bool> {
        self.rto_ms.map(|r| r <= self.rto_target_ms)
    }
}

/// A running drill in `GET /v1/status`, in brief.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DrillBrief {
    pub group: String,
    pub state: DrillState,
    pub from: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<String>,
    /// Seconds since the drill started.
    pub seconds: u64,
    pub hold_ms: u64,
}
