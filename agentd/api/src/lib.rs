//! The control API between agentd and its clients (netctl, `curl --unix-socket`).
//!
//! HTTP/1.1 + JSON over a Unix socket. Paths carry the API version (`/v1/...`) so that a newer
//! netctl can tell an older agentd apart instead of misreading it. Every response carries the
//! agentd version in [`AGENTD_VERSION_HEADER`] so that clients can warn about a mismatch. Errors
//! are always an [`ErrorBody`] with a machine-readable [`ErrorKind`]; the HTTP status of each kind
//! is decided here, in one place, for both sides.
//!
//! This crate holds types only: no I/O, no runtime, so that netctl stays light.

use isthmus_config::Diagnostic;
use serde::{Deserialize, Serialize};

mod drill;
pub mod utc;
pub use drill::*;

/// The API version in every path. Bump it only for incompatible changes.
pub const API_VERSION: &str = "v1";
/// Response header with the agentd package version.
pub const AGENTD_VERSION_HEADER: &str = "isthmus-agentd-version";
/// Request header with the client's package version (informational, logged by agentd).
pub const CLIENT_VERSION_HEADER: &str = "isthmus-client-version";
/// The default control socket.
pub const DEFAULT_SOCKET: &str = "/run/isthmus/agentd.sock";

/// Paths of the control API.
pub mod paths {
    /// `GET`: [`crate::Status`].
    pub const STATUS: &str = "/v1/status";
    /// `GET`: `Vec<`[`crate::LinkStatus`]`>`.
    pub const LINKS: &str = "/v1/links";
    /// `GET`: [`crate::RoutesStatus`].
    pub const ROUTES: &str = "/v1/routes";
    /// Prefix of `POST /v1/groups/{group}/failover` ([`crate::FailoverRequest`]) and
    /// `POST /v1/groups/{group}/failback`; both answer [`crate::RouteGroupStatus`].
    pub const GROUPS: &str = "/v1/groups/";
    /// `GET ?since=ID&limit=N`: `Vec<`[`crate::EventRecord`]`>` with ids above `since`.
    pub const EVENTS: &str = "/v1/events";
    /// Prefix of `POST /v1/links/{link}/drain` and `/undrain`: `Vec<`[`crate::RouteGroupStatus`]`>`.
    pub const LINK_ACTIONS: &str = "/v1/links/";
    /// `GET`: `Vec<`[`crate::ProbeStatus`]`>`.
    pub const PROBES: &str = "/v1/probes";
    /// `GET`: [`crate::VersionInfo`].
    pub const VERSION: &str = "/v1/version";
    /// `POST`: re-read the config file; [`crate::ReloadOutcome`] or `config_invalid`.
    pub const RELOAD: &str = "/v1/reload";
    /// `GET`: [`crate::ActionsStatus`]: DNS groups and every action target.
    pub const ACTIONS: &str = "/v1/actions";
    /// `GET`: the current or last [`crate::DrillReport`] (`not_found` if none ran);
    /// `POST` ([`crate::DrillRequest`]): start one, answering its report in `prechecks`
    /// (`conflict` while another runs).
    pub const DRILL: &str = "/v1/drill";
    /// `POST`: stop the running drill and fail back; answers its report.
    pub const DRILL_ABORT: &str = "/v1/drill/abort";
    /// `POST`: drain this gateway of its HA pair (it hands the role over and does not take it
    /// while drained); answers [`crate::HaStatus`] (`not_found` without `[ha]`).
    pub const HA_DRAIN: &str = "/v1/ha/drain";
    /// `POST`: end the gateway's drain.
    pub const HA_UNDRAIN: &str = "/v1/ha/undrain";
}

/// What a client may do, decided by agentd from the peer credentials of the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Access {
    /// Status and other reads.
    Read,
    /// Reload, failover and other changes.
    Write,
}

/// The machine-readable cause of an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// The request could not be understood (bad JSON, bad parameters).
    BadRequest,
    /// The caller's credentials do not allow this.
    PermissionDenied,
    /// No such path in this API version.
    NotFound,
    /// The path names an API version this agentd does not speak (`/v2/...` on a v1 agentd).
    UnsupportedApiVersion,
    /// The path exists but not with this method.
    MethodNotAllowed,
    /// The client did not send the request in time.
    RequestTimeout,
    /// The body is larger than agentd accepts.
    PayloadTooLarge,
    /// A new configuration was rejected; the running one stays. See `diagnostics`.
    ConfigInvalid,
    /// Too many clients are connected; retry shortly.
    TooManyClients,
    /// agentd is shutting down.
    ShuttingDown,
    /// The request conflicts with something in progress (a drill already runs).
    Conflict,
    /// A bug or an unexpected failure inside agentd.
    Internal,
}

impl ErrorKind {
    /// The HTTP status code that carries this kind.
    pub fn http_status(self) -> u16 {
        match self {
            ErrorKind::BadRequest => 400,
            ErrorKind::PermissionDenied => 403,
            ErrorKind::NotFound | ErrorKind::UnsupportedApiVersion => 404,
            ErrorKind::MethodNotAllowed => 405,
            ErrorKind::RequestTimeout => 408,
            ErrorKind::PayloadTooLarge => 413,
            ErrorKind::ConfigInvalid => 422,
            ErrorKind::Conflict => 409,
            ErrorKind::TooManyClients => 503,
            ErrorKind::ShuttingDown => 503,
            ErrorKind::Internal => 500,
        }
    }
}

/// The body of every error response.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub kind: ErrorKind,
    pub message: String,
    /// For `config_invalid`: the errors and warnings found in the rejected file (the first
    /// [`isthmus_config::MAX_LISTED`] of each, in file order).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub diagnostics: Vec<Diagnostic>,
    /// For `config_invalid`: errors found beyond those in `diagnostics`.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub omitted_errors: usize,
    /// For `config_invalid`: warnings found beyond those in `diagnostics`.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub omitted_warnings: usize,
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

impl ErrorBody {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        ErrorBody {
            kind,
            message: message.into(),
            diagnostics: Vec::new(),
            omitted_errors: 0,
            omitted_warnings: 0,
        }
    }

    /// A `config_invalid` error carrying `report`.
    pub fn config_invalid(message: impl Into<String>, report: isthmus_config::Report) -> Self {
        ErrorBody {
            kind: ErrorKind::ConfigInvalid,
            message: message.into(),
            diagnostics: report.diagnostics,
            omitted_errors: report.omitted_errors,
            omitted_warnings: report.omitted_warnings,
        }
    }
}

/// `GET /v1/version`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VersionInfo {
    /// agentd's package version.
    pub version: String,
    /// The control API version agentd speaks (`v1`).
    pub api_version: String,
}

/// `GET /v1/status`: what an operator needs first, at a glance.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Status {
    pub agent: AgentStatus,
    pub config: ConfigStatus,
    /// Host problems that break forwarding (ip_forward off, strict rp_filter on a tunnel).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
    pub links: Vec<LinkStatus>,
    pub route_groups: Vec<RouteGroupStatus>,
    /// DNS groups and what the actions carried out (also `GET /v1/actions`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dns_groups: Vec<DnsGroupStatus>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub actions: Vec<ActionStatus>,
    /// A drill running on this gateway (`netctl drill --last` has the rest).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drill: Option<DrillBrief>,
    /// The group a drill on the peer gateway moves, as its probes say.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peer_drill: Option<String>,
    /// Faults agentd is recovering from by itself right now (docs/reliability.md#faults).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub faults: Vec<FaultStatus>,
    /// This gateway's pair, with `[ha]` (docs/ha.md).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ha: Option<HaStatus>,
}

/// One gateway of a cloud's pair: its role, the lease and the other member.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HaStatus {
    pub pair: String,
    /// This gateway's name in the pair (`[agent].name`).
    pub member: String,
    /// `active` (holds the role with a valid lease: writes route tables and announces itself),
    /// `unsure` (holds it but its lease is running out: forwards, neither writes nor announces),
    /// `standby`.
    pub role: String,
    /// Who holds the role as the store last said, and its revision (a fencing token that only
    /// grows).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub holder: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision: Option<i64>,
    /// Lease validity left here, in milliseconds (0: no lease).
    pub lease_left_ms: u64,
    /// Whether this gateway can carry the traffic (every route group has a link) and is not
    /// drained: it may hold or take the role.
    pub ready: bool,
    pub drained: bool,
    pub priority: u8,
    /// The store: `null` when it answered last, else the last error.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub store_error: Option<String>,
    /// The other member, as it last published itself (absent: nothing published, or its lease
    /// expired).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub other: Option<HaMember>,
    /// Times this gateway became active since it started.
    #[serde(default)]
    pub takeovers: u64,
    /// The last time it did: milliseconds from the role becoming free (the holder's key gone,
    /// as the store's watch said) to this gateway holding it; absent when it won a role that
    /// was free from the start.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_takeover_ms: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HaMember {
    pub name: String,
    pub priority: u8,
    pub ready: bool,
    pub drained: bool,
    pub preempt: bool,
}

/// One active fault: a TUN device lost, an underlay gone, route writes refused, ….
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FaultStatus {
    /// The `kind` label of `isthmus_faults_total` (`tun_gone`, `underlay_send`, …).
    pub kind: String,
    /// What it happened to: a link, `routes`, a file, a target.
    pub subject: String,
    /// The error of the first attempt that failed.
    pub error: String,
    pub seconds: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AgentStatus {
    /// `[agent].name` of the running config.
    pub name: String,
    pub version: String,
    pub api_version: String,
    pub pid: u32,
    /// Seconds since agentd started.
    pub uptime_seconds: u64,
    /// What the caller may do on this socket, from its credentials.
    pub caller_access: Access,
    /// The metrics listener (`/metrics`, `/healthz`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics: Option<MetricsListener>,
    /// How late the event loop served its timers recently (absent: no sample yet).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub loop_lag: Option<LoopLag>,
    /// Event-log entries that could not be written to disk (the writer was stuck or failing);
    /// they are kept in memory.
    #[serde(default)]
    pub event_log_dropped: u64,
}

/// The event loop's lag: how late it served a due timer. Probes are sent and answered by the
/// loop, so a lag near the probe interval makes links look lossy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LoopLag {
    /// Over the last samples (about the last minute).
    pub p99_ms: f64,
    pub max_ms: f64,
    /// Above the bound agentd aims for (5 ms at p99): `netctl status` warns.
    pub bad: bool,
}

/// Where the metrics are served, or why they are not.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MetricsListener {
    /// `[metrics].listen`.
    pub listen: String,
    pub listening: bool,
    /// Why it is not listening (bind error; retried every 5 s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConfigStatus {
    /// The file agentd reads on reload.
    pub path: String,
    /// A short hash of the running config file's text, to tell which version runs.
    pub fingerprint: String,
    /// Seconds since the running config was loaded.
    pub loaded_seconds_ago: u64,
    pub reloads_applied: u64,
    pub reloads_rejected: u64,
    /// The last rejected reload, if it came after the last applied one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_rejected: Option<RejectedReload>,
    /// Warnings about the running config (e.g. an unknown group name).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<Diagnostic>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RejectedReload {
    pub seconds_ago: u64,
    pub error_count: usize,
    /// The first error, rendered on one line.
    pub first_error: String,
}

/// A link's health from the peer probes (docs/failover.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Health {
    /// Probes answered within the thresholds.
    Up,
    /// Answered, but loss, RTT or jitter is past its threshold.
    Degraded,
    /// Too many consecutive probes lost (or the peer says so).
    Down,
    /// Flap damping holds the link back: it changed state too often.
    Suppressed,
    /// No probe answered yet.
    Unknown,
}

impl Health {
    pub fn as_str(self) -> &'static str {
        match self {
            Health::Up => "up",
            Health::Degraded => "degraded",
            Health::Down => "down",
            Health::Suppressed => "suppressed",
            Health::Unknown => "unknown",
        }
    }
}

impl std::fmt::Display for Health {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(self.as_str())
    }
}

/// What an [`EventRecord`] records (docs/netctl.md lists them with their fields).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    /// agentd started (`reason` names the version).
    Started,
    /// agentd stopped cleanly.
    Stopped,
    /// A link's agreed health changed (`link`, `from`, `to`, `figures`).
    HealthChanged,
    /// A route group's active link changed (`group`, `from`, `to`, `figures` of the link left).
    ActiveLinkChanged,
    /// The peer ranks a link differently: the two gateways may choose different links.
    RankingMismatch,
    /// A target check turned ok or failing (`group` is `probe NAME`, `link` the link it runs over).
    ProbeChanged,
    /// An operator pinned a group to a link (`netctl failover`).
    Pin,
    /// The pin was released (`netctl failback`).
    Unpin,
    /// A link was drained or undrained (`netctl drain` / `undrain`).
    Drain,
    /// A config reload was applied (`to` is the new fingerprint).
    Reload,
    /// A route agentd does not own competes for a remote CIDR.
    RouteConflict,
    /// A DNS group's chosen answer changed (`group`, `from`, `to` values, `reason`).
    AnswerChanged,
    /// A route group's service checks fail over every link (`group`; `to` is `failing` or
    /// `ok`): the fault is behind the tunnels, the routes stay.
    ChecksFailing,
    /// A DNS group has no answer whose checks pass: the current one is kept.
    NoAnswerPasses,
    /// An action reached its target (`group` names it: `dns group orders-db`, `aws route
    /// table rtb-…`; `from`/`to` what it held and holds; `reason` the provider and duration).
    ActionDone,
    /// An action failed and is retried (`reason`: why, and when the next attempt is).
    ActionFailed,
    /// Somebody else changed an action's target between our read and write: read again.
    ActionConflict,
    /// A hook ran (`group`: `hook NAME`, `link`: the group of the transition; `reason`: how it ended).
    HookRan,
    /// A hook failed, timed out or could not start.
    HookFailed,
    /// A drill started on this gateway (`group`, `from`, `to`; `reason`: who and why), or a
    /// step of it (`reason` says which: switched, verified, failed back, refused, aborted).
    Drill,
    /// The peer gateway says a drill is in progress on it (`to`: `started` with `group`) or is
    /// over (`to`: `ended`).
    PeerDrill,
    /// A link's path MTU towards the peer changed (`link`, `from`, `to` in bytes of inner
    /// packet; `reason`: confirmed by the search, a black hole, or the config).
    PathMtu,
    /// This gateway's role in its pair changed (`from`, `to`: active, unsure, standby;
    /// `reason`: why, with the holder's revision).
    HaRole,
    /// The pair's lease store stopped or started answering (`to`: unreachable or reachable;
    /// `reason`: the error).
    HaStore,
    /// A kind this netctl does not know (written by a newer agentd).
    #[serde(other)]
    Unknown,
}

impl EventKind {
    /// Every kind agentd writes.
    pub const ALL: [EventKind; 24] = [
        EventKind::Started,
        EventKind::Stopped,
        EventKind::HealthChanged,
        EventKind::ActiveLinkChanged,
        EventKind::RankingMismatch,
        EventKind::ProbeChanged,
        EventKind::Pin,
        EventKind::Unpin,
        EventKind::Drain,
        EventKind::Reload,
        EventKind::RouteConflict,
        EventKind::AnswerChanged,
        EventKind::ChecksFailing,
        EventKind::NoAnswerPasses,
        EventKind::ActionDone,
        EventKind::ActionFailed,
        EventKind::ActionConflict,
        EventKind::HookRan,
        EventKind::HookFailed,
        EventKind::Drill,
        EventKind::PeerDrill,
        EventKind::PathMtu,
        EventKind::HaRole,
        EventKind::HaStore,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Started => "started",
            EventKind::Stopped => "stopped",
            EventKind::HealthChanged => "health_changed",
            EventKind::ActiveLinkChanged => "active_link_changed",
            EventKind::RankingMismatch => "ranking_mismatch",
            EventKind::ProbeChanged => "probe_changed",
            EventKind::Pin => "pin",
            EventKind::Unpin => "unpin",
            EventKind::Drain => "drain",
            EventKind::Reload => "reload",
            EventKind::RouteConflict => "route_conflict",
            EventKind::AnswerChanged => "answer_changed",
            EventKind::ChecksFailing => "checks_failing",
            EventKind::NoAnswerPasses => "no_answer_passes",
            EventKind::ActionDone => "action_done",
            EventKind::ActionFailed => "action_failed",
            EventKind::ActionConflict => "action_conflict",
            EventKind::HookRan => "hook_ran",
            EventKind::HookFailed => "hook_failed",
            EventKind::Drill => "drill",
            EventKind::PeerDrill => "peer_drill",
            EventKind::PathMtu => "path_mtu",
            EventKind::HaRole => "ha_role",
            EventKind::HaStore => "ha_store",
            EventKind::Unknown => "unknown",
        }
    }
}

impl std::fmt::Display for EventKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(self.as_str())
    }
}

/// State of a link's tunnel (not yet its health: that comes from probes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LinkState {
    /// A handshake completed less than 180 s ago: the tunnel carries traffic.
    Up,
    /// Running, but no current session yet: handshakes are being sent.
    Handshaking,
    /// No handshake was answered for 90 s; agentd retries every 5 s.
    Unreachable,
    /// The link could not be set up (see `error`); agentd retries every 10 s.
    Failed,
}

impl LinkState {
    pub fn as_str(self) -> &'static str {
        match self {
            LinkState::Up => "up",
            LinkState::Handshaking => "handshaking",
            LinkState::Unreachable => "unreachable",
            LinkState::Failed => "failed",
        }
    }
}

/// `GET /v1/links` (and part of `/v1/status`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LinkStatus {
    pub name: String,
    pub interface: String,
    pub state: LinkState,
    /// Why the link is `failed`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Local underlay address and UDP port.
    pub listen: String,
    /// The peer endpoint as configured (address or hostname).
    pub peer_endpoint: String,
    /// The peer's address in use now (resolved, or learnt from its authenticated packets).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// Remote CIDRs carried by this link.
    pub allowed_ips: Vec<String>,
    /// Age of the last completed handshake in seconds (an age, not a timestamp).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_handshake_seconds_ago: Option<u64>,
    /// Plaintext bytes and packets sent into and received from the tunnel.
    pub tx_bytes: u64,
    pub tx_packets: u64,
    pub rx_bytes: u64,
    pub rx_packets: u64,
    /// Handshake initiations sent.
    pub handshake_attempts: u64,
    /// Handshake messages that failed to verify, and give-ups after 90 s without an answer.
    pub handshake_failures: u64,
    /// Dropped packets by reason (bad_mac, unknown_peer, no_route, too_big, ...).
    pub drops: std::collections::BTreeMap<String, u64>,
    /// Health agreed by both ends from the peer probes (the worse of the two views).
    pub health: Health,
    /// This end's own view and the peer's (from its latest probe).
    pub own_health: Health,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peer_health: Option<Health>,
    /// The probe protocol version the peer speaks (absent until it has been heard).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peer_protocol: Option<u8>,
    /// The peer is one gateway of an HA pair: its role as its probes say (`active`, `unsure`,
    /// `standby`) and the revision it knows. A link to a standby is used only as a last resort.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peer_ha: Option<String>,
    /// Drained by an operator (here or at the peer).
    #[serde(default)]
    pub drained: bool,
    /// Peer-probe measurements.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub figures: Option<Figures>,
    /// Probe datagrams dropped by reason (malformed, version, forged, replayed).
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub probe_drops: std::collections::BTreeMap<String, u64>,
    /// The sizes the link holds packets to, and the path-MTU search (`mtu = "auto"`).
    #[serde(default)]
    pub path_mtu: PathMtuStatus,
}

/// What a link's packets are held to, in inner IP packet bytes (what the TUN carries; the
/// underlay datagram adds 60 bytes over IPv4, 80 over IPv6).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PathMtuStatus {
    /// `fixed` (a configured MTU), `searching`, `complete` or `unsupported` (the peer does not
    /// answer path-MTU probes: the floor is used).
    pub state: String,
    /// The TUN device's MTU: the configured MTU, or the ceiling with `auto`.
    pub tun: u16,
    /// The largest packet sent towards the peer in one piece, and what TCP SYNs from the peer
    /// are clamped to.
    pub tx: u16,
    /// Whether `tx` was measured (a probe of that size was confirmed) rather than assumed.
    pub tx_confirmed: bool,
    /// The peer's measured path towards this side (what TCP SYNs to the peer are clamped to);
    /// absent while the peer has not reported one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rx: Option<u16>,
    /// The search's bounds (`mtu_min`, `mtu_max`), with `auto`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub floor: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ceiling: Option<u16>,
    /// The peer says it answers path-MTU probes.
    #[serde(default)]
    pub peer_answers: bool,
    /// Path-MTU probes sent, confirmed and lost, and black holes seen (probes of the path MTU
    /// itself lost while the link answered).
    #[serde(default)]
    pub probes_sent: u64,
    #[serde(default)]
    pub probes_confirmed: u64,
    #[serde(default)]
    pub probes_lost: u64,
    #[serde(default)]
    pub black_holes: u64,
    /// TCP SYNs whose MSS option was lowered (both directions).
    #[serde(default)]
    pub mss_clamped: u64,
    /// Packets larger than `tx` cut to fit it (TCP re-segmented, IPv4 without DF fragmented).
    #[serde(default)]
    pub resegmented: u64,
    /// ICMP "fragmentation needed" / "packet too big" answers sent for packets larger than
    /// `tx`.
    #[serde(default)]
    pub too_big_sent: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RouteGroupStatus {
    pub name: String,
    pub destinations: Vec<String>,
    /// Links in order of preference.
    pub links: Vec<String>,
    /// The link carrying the routes, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub active_link: Option<String>,
    /// Set while an operator has pinned the group to a link (`netctl failover`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pinned: Option<Pin>,
    /// The group's service checks per link, when it has any.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub checks: Vec<LinkChecks>,
    /// The checks fail over every link: the fault is behind the tunnels; the routes stay.
    #[serde(default)]
    pub checks_failing_everywhere: bool,
}

/// A route group's service checks over one link, as each gateway sees them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LinkChecks {
    pub link: String,
    /// This gateway's verdict: all of the group's checks pass over the link.
    pub own: CheckState,
    /// The peer's verdict over the same link, once it said.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peer: Option<CheckState>,
}

/// A verdict of service checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CheckState {
    Pass,
    Fail,
    /// Not every check has a result yet.
    Unknown,
}

impl CheckState {
    pub fn as_str(self) -> &'static str {
        match self {
            CheckState::Pass => "pass",
            CheckState::Fail => "fail",
            CheckState::Unknown => "unknown",
        }
    }
}

/// A DNS group: its ordered answers, which one agentd chose, and what the provider serves.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DnsGroupStatus {
    pub name: String,
    pub record: String,
    #[serde(rename = "type")]
    pub record_type: String,
    pub ttl: u32,
    pub provider: String,
    pub answers: Vec<AnswerStatus>,
    /// The answer agentd decided to publish.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chosen: Option<String>,
    /// No answer's checks pass: the chosen one is kept rather than publishing nothing.
    #[serde(default)]
    pub no_answer_passes: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AnswerStatus {
    pub value: String,
    pub checks: Vec<String>,
    /// This gateway's checks of the answer.
    pub own: CheckState,
    /// The peer gateway's, when it serves the same group.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peer: Option<CheckState>,
}

/// One target of the actions: a DNS record or a cloud route table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ActionStatus {
    /// `dns`, `aws_route_table`, `oci_route_table`.
    pub kind: String,
    /// The DNS group or the route table id.
    pub target: String,
    /// The provider in words (`rfc2136 10.1.0.53:53 zone example.internal.`).
    pub provider: String,
    pub state: ActionState,
    /// What agentd wants there.
    pub desired: String,
    /// What the target held at the last verified read or write.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed: Option<String>,
    /// Seconds since the target was last verified to hold the desired state.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_success_seconds_ago: Option<u64>,
    /// Decision → verified, of the last change agentd made.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_change_ms: Option<f64>,
    /// Failed attempts since the last success.
    pub failures: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<ActionError>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ActionError {
    /// `conflict`, `auth`, `throttled`, `unavailable`, `rejected`, `not_verified`.
    pub kind: String,
    pub message: String,
    pub seconds_ago: u64,
    /// When the next attempt is due.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_in_seconds: Option<f64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ActionState {
    /// Verified: the target holds the desired state.
    InSync,
    /// A new decision is being carried out.
    Pending,
    /// The last attempt failed; retrying.
    Failing,
}

impl ActionState {
    pub fn as_str(self) -> &'static str {
        match self {
            ActionState::InSync => "in_sync",
            ActionState::Pending => "pending",
            ActionState::Failing => "failing",
        }
    }
}

/// `GET /v1/actions`: the DNS groups and every action target.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ActionsStatus {
    pub dns_groups: Vec<DnsGroupStatus>,
    pub actions: Vec<ActionStatus>,
}

/// A manual pin of a route group to a link.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Pin {
    pub link: String,
    pub reason: String,
    pub seconds_ago: u64,
}

/// Body of `POST /v1/groups/{group}/failover`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FailoverRequest {
    /// The link to move the group to; must be one of the group's links.
    pub to: String,
    /// Why, for the record.
    #[serde(default)]
    pub reason: Option<String>,
}

/// `GET /v1/routes`: desired routes against the kernel's, now.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RoutesStatus {
    /// The route protocol number that marks agentd's routes (`ip route show proto N`).
    pub protocol: u8,
    pub reconciles: u64,
    /// Netlink writes (route and rule adds, replaces, deletes) since start.
    pub writes: u64,
    pub errors: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    pub routes: Vec<RouteStatus>,
    /// Routes agentd owns but does not want (removed by the next reconcile).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub stray: Vec<String>,
    /// Routes agentd does not own that compete for a remote CIDR; left alone.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conflicts: Vec<RouteConflict>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub host_warnings: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RouteStatus {
    pub group: String,
    /// The link this route sends traffic over; none for the fail-closed route.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub link: Option<String>,
    pub destination: String,
    pub table: u32,
    pub metric: u32,
    /// What agentd wants, like `ip route` prints it (`dev isth-ic mtu 1420`, `unreachable`).
    pub desired: String,
    /// What the kernel has for the same table, destination and metric (agentd's protocol).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub actual: Option<String>,
    pub in_sync: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RouteConflict {
    pub destination: String,
    pub table: u32,
    pub foreign: String,
    /// Same table, destination and metric: agentd's route cannot be installed.
    pub blocking: bool,
}

/// One entry of the event log: a failover, a health change, an operator's action.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EventRecord {
    /// Increasing across restarts.
    pub id: u64,
    /// UTC, RFC 3339 with milliseconds.
    pub time: String,
    pub unix_ms: u64,
    pub kind: EventKind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub link: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<String>,
    pub reason: String,
    /// The measurements behind a health decision.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub figures: Option<Figures>,
}

/// Link measurements from the peer probes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Figures {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rtt_p50_ms: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rtt_p95_ms: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jitter_ms: Option<f64>,
    /// Round-trip loss ratio over the probe window.
    pub loss: f64,
    /// Loss of the peer's probes towards us.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub loss_in: Option<f64>,
    /// Loss of our probes towards the peer (as the peer reports it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub loss_out: Option<f64>,
    pub consecutive_lost: u32,
}

/// `GET /v1/probes`: the target checks (`[[probe]]`) and their latest results.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProbeStatus {
    pub name: String,
    /// The link the check runs over (bound to its tunnel interface) when a route group checks
    /// this probe; absent: along the routes, over the active link.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub link: Option<String>,
    pub kind: String,
    pub target: String,
    /// `ok`, `failing`, or `unknown` (not run yet).
    pub state: String,
    /// The last result's reason: ok, timeout, refused, unreachable, bad_status, resolve, tls,
    /// io, bad_response.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_duration_ms: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_run_seconds_ago: Option<u64>,
    pub successes: u64,
    pub failures: u64,
}

/// `POST /v1/reload` success.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReloadOutcome {
    /// Whether anything changed.
    pub changed: bool,
    /// Fingerprint of the config now running.
    pub fingerprint: String,
    /// What changed, one line each (`link internet: changed`, `route_group dbs: added`).
    pub changes: Vec<String>,
    /// Settings that changed but only take effect after a restart.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub needs_restart: Vec<String>,
    /// Warnings about the new config.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<Diagnostic>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_kinds_are_snake_case_on_the_wire() {
        let body = ErrorBody::new(ErrorKind::PermissionDenied, "no");
        let json = serde_json::to_string(&body).unwrap();
        assert_eq!(json, r#"{"kind":"permission_denied","message":"no"}"#);
        let back: ErrorBody = serde_json::from_str(&json).unwrap();
        assert_eq!(back, body);
    }

    #[test]
    fn every_error_kind_maps_to_a_4xx_or_5xx() {
        for kind in [
            ErrorKind::BadRequest,
            ErrorKind::PermissionDenied,
            ErrorKind::NotFound,
            ErrorKind::UnsupportedApiVersion,
            ErrorKind::MethodNotAllowed,
            ErrorKind::RequestTimeout,
            ErrorKind::PayloadTooLarge,
            ErrorKind::ConfigInvalid,
            ErrorKind::TooManyClients,
            ErrorKind::ShuttingDown,
            ErrorKind::Conflict,
            ErrorKind::Internal,
        ] {
            let s = kind.http_status();
            assert!((400..600).contains(&s), "{kind:?} -> {s}");
            let client_fault = !matches!(
                kind,
                ErrorKind::Internal | ErrorKind::TooManyClients | ErrorKind::ShuttingDown
            );
            assert_eq!(client_fault, s < 500, "{kind:?}");
        }
    }
}
