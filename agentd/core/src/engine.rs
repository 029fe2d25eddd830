//! The engine: every link's health and every route group's active link, with pins and drains
//! (local and the peer's), and the whole peer probe protocol on each link (docs/protocol.md).
//! Inputs are `handle_*` with `now` (datagrams with their arrival time); outputs are datagrams
//! to send ([`Engine::poll_transmit`]: due requests and replies to the peer's), events
//! ([`Engine::poll_event`]), the next deadline ([`Engine::poll_timeout`]) and the active links
//! ([`Engine::active`]). The shell only moves bytes and owns the keys ([`Authenticator`]).
//! Decision code iterates `BTreeMap`s, so equal inputs give equal outputs.
//!
//! Service checks (docs/failover.md): the shell feeds its own verdicts, per route group and
//! link ([`Engine::handle_checks`]) and per DNS-group answer ([`Engine::handle_answer_checks`]);
//! every version-2 probe carries them to the peer (the `SERVICE_CHECKS` TLV) and brings the
//! peer's. A route group ranks a link whose checks fail at either end like a degraded one
//! (unless they fail over every usable link); a DNS group publishes one of its ordered answers,
//! chosen by the same policy as a route group's link, from both gateways' verdicts
//! ([`crate::checks::answer_health`]), and never publishes nothing. The peer's verdicts over a
//! link are trusted only while this end sees the link carry traffic: when its own view is
//! down (or not yet known) they are forgotten, as they may be old.
//!
//! Answer pins and drill notices (docs/failover.md, docs/protocol.md): an operator can pin a
//! DNS group to one of its answers ([`Engine::pin_answer`]); the pin wins over the checks, at
//! both gateways, until released, because the two gateways write the same record and must
//! never publish different answers. Every version-2 probe carries this side's answer pins
//! (the `ANSWER_PINS` TLV) and the group a drill of this side's moves ([`Engine::set_drill`],
//! the `DRILL` TLV). The peer follows a peer pin unless it holds its own, and reports the
//! peer's drill ([`Event::PeerDrill`]); both end when fresh probes stop carrying them or
//! when no probe of the peer has arrived for [`Engine::peer_timeout`] (see `notice` for how
//! probes on links of different latency are reconciled).
//!
//! Version negotiation: requests go out in version 1, with the capability bit, until the peer
//! is known to speak version 2 (a version-2 packet or the bit); then in version 2. A version-1
//! packet without the bit (a peer rolled back to an older agentd) returns to version 1. Every
//! request is answered in its own version, so an older peer always understands the reply.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::{Duration, Instant};

use crate::checks::{answer_health, CheckState, PeerChecks};
use crate::health::{Damping, Figures, Health, LinkHealth, Thresholds, View};
use crate::notice::Notices;
use crate::pmtu::{PmtuConfig, PmtuCounts, PmtuReason, PmtuSearch, PmtuState};
use crate::policy::{Candidate, Choice, GroupPolicy, GroupState, Why};
use crate::profile::Timings;
use crate::wire::{self, AnswerPin, Authenticator, HaAnnounce, Kind, Packet, ProbeDrop, Tail};

/// A datagram to send to the peer on a link's probe socket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transmit {
    pub link: String,
    pub bytes: Vec<u8>,
}

/// What a received datagram was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Received {
    /// A request of the peer's, accepted; its reply is queued for [`Engine::poll_transmit`].
    Request,
    /// A reply to one of our requests, with its round-trip time.
    Reply { rtt: Duration },
    /// A path-MTU probe of the peer's, accepted; its acknowledgement is queued.
    MtuProbe,
    /// The acknowledgement of one of our path-MTU probes, of `size` bytes (inner packet).
    MtuAck { size: u16 },
    /// Dropped, and counted in [`Engine::probe_drops`].
    Dropped(ProbeDrop),
}

/// A link's path-MTU search ([`crate::pmtu`]), for status and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PathMtuReport {
    pub state: PmtuState,
    /// This side's PLPMTU towards the peer (the floor until a probe is confirmed).
    pub tx: u16,
    /// Whether `tx` was measured (a probe confirmed) rather than assumed.
    pub tx_confirmed: bool,
    /// The peer's confirmed PLPMTU towards this side, as its probes report it.
    pub rx: Option<u16>,
    /// The peer answers path-MTU probes (it says so in every probe).
    pub peer_answers: bool,
    pub counts: PmtuCounts,
}

/// Everything known about one link, for status and metrics.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LinkReport {
    /// This side's own view of the link's health.
    pub own: Health,
    /// The peer's latest view, once a probe of its arrived.
    pub peer: Option<View>,
    pub figures: Figures,
    /// The flap-damping penalty.
    pub penalty: f64,
    /// The highest probe version the peer is known to speak (0: nothing heard yet).
    pub peer_version: u8,
    /// This side's verdict of the route-group service checks over the link, as sent to the
    /// peer (`None`: no check state known for it).
    pub checks: Option<CheckState>,
    /// The peer's latest verdict over the link, while it is trusted (see the module doc).
    pub peer_checks: Option<CheckState>,
}

/// A DNS group's state, for status and metrics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AnswerReport {
    /// The index of the answer published (`None`: none decided yet).
    pub active: Option<usize>,
    /// This side's check state of each answer.
    pub own: Vec<CheckState>,
    /// The peer's, when a fresh probe of its reported the group with as many answers.
    pub peer: Option<Vec<CheckState>>,
    /// No answer passes: the published one is kept (see [`Event::NoAnswerPasses`]).
    pub no_answer_passes: bool,
}

/// The protocol state of a link: its key, what the peer speaks, what was dropped.
#[derive(Default)]
struct Wire {
    key: Option<Box<dyn Authenticator>>,
    /// A key just arrived: probe at once rather than at the next scheduled probe, which (for a
    /// link not yet up) was put off by the fast interval when the unsendable one was due. At
    /// start-up that first probe is the restart's first round trip.
    new_key: bool,
    peer_version: u8,
    /// The peer answers path-MTU probes, and what it measured towards us.
    peer_pmtu: bool,
    peer_path_mtu: Option<u16>,
    drops: BTreeMap<ProbeDrop, u64>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct LinkConfig {
    pub name: String,
    /// Search the link's path MTU (`mtu = "auto"`); `None`: the configured MTU is used.
    pub pmtu: Option<LinkPmtu>,
}

/// How a link searches its path MTU.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LinkPmtu {
    pub search: PmtuConfig,
    /// The inner IP and UDP headers in front of a probe's datagram: 28 bytes when the
    /// tunnel's inner addresses are IPv4, 48 when IPv6. A probe of size `s` is a datagram of
    /// `s - overhead` bytes.
    pub overhead: u16,
}

/// The most path-MTU probes of a link remembered while unanswered.
const MTU_OUTSTANDING: usize = 32;

/// A link's path-MTU search and its probes in flight (seq, inner size, sent).
struct LinkMtu {
    config: LinkPmtu,
    search: PmtuSearch,
    next_seq: u32,
    outstanding: VecDeque<(u32, u16, Instant)>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct GroupConfig {
    pub name: String,
    pub policy: GroupPolicy,
}

/// A DNS record that publishes one of its ordered answers, chosen from the answers' service
/// checks at both gateways, with the hysteresis of a route group.
#[derive(Debug, Clone, PartialEq)]
pub struct DnsGroupConfig {
    pub name: String,
    /// [`crate::dns_group_id`] of the record and its answers: the peer reports the group
    /// under this id, so both gateways must compute it from the same record and answers.
    pub id: u32,
    /// The number of answers, in order of preference.
    pub answers: usize,
    pub preempt: bool,
    pub failback_after: Duration,
    pub hold_down: Duration,
    /// At start-up (nothing chosen yet), how long a group waits for its preferred answer
    /// before it publishes a later one: the checks' first results may come before the paths
    /// to the services are up (the tunnels), and a gateway that restarts must not flip the
    /// record to the DR answer for a moment. The engine's own settling if shorter.
    pub start_wait: Duration,
}

impl DnsGroupConfig {
    /// The route-group policy that chooses the answer: each answer a "link" named by its
    /// index, leaving an answer that passes at one gateway only (degraded).
    fn policy(&self) -> GroupPolicy {
        GroupPolicy {
            links: (0..self.answers).map(|i| i.to_string()).collect(),
            failover_on_degraded: true,
            preempt: self.preempt,
            failback_after: self.failback_after,
            hold_down: self.hold_down,
            // Answers never rank by `checks_failing`: their checks are their health.
            checks_confirm: Duration::ZERO,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct EngineConfig {
    pub timings: Timings,
    pub thresholds: Thresholds,
    pub damping: Damping,
    pub links: Vec<LinkConfig>,
    pub groups: Vec<GroupConfig>,
    pub dns_groups: Vec<DnsGroupConfig>,
}

/// Why an active link changed, for the event log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SwitchReason {
    FirstUsable,
    ActiveDown,
    ActiveDegraded,
    Failback,
    /// `netctl failover` here (or a DNS group's answer pin), with the operator's reason.
    Manual(String),
    /// The peer pinned a group to this link (or a DNS group to this answer).
    PeerPin,
    /// The pin was released (`netctl failback`; for a DNS group, here or at the peer): back to
    /// automatic choice.
    Released,
    NoUsableLink,
    /// A reload changed the group.
    Config,
    /// The service checks fail over the active link (or for the published answer), at this
    /// gateway or at the peer, and pass over another.
    ChecksFailing,
    /// A warm restart: the link that was active before it answers again
    /// ([`Engine::restore`]).
    Restored,
}

impl SwitchReason {
    pub fn describe(&self) -> String {
        match self {
            SwitchReason::FirstUsable => "first usable link".into(),
            SwitchReason::ActiveDown => "active link unusable".into(),
            SwitchReason::ActiveDegraded => "active link degraded".into(),
            SwitchReason::Failback => "preferred link stable again".into(),
            SwitchReason::Manual(r) => format!("manual: {r}"),
            SwitchReason::PeerPin => "pinned by the peer".into(),
            SwitchReason::Released => "pin released".into(),
            SwitchReason::NoUsableLink => "no usable link: failing closed".into(),
            SwitchReason::Config => "configuration changed".into(),
            SwitchReason::ChecksFailing => "service checks fail over the active link".into(),
            SwitchReason::Restored => "active before the restart, usable again".into(),
        }
    }

    /// The wording for a DNS group's answer ([`Event::AnswerChanged`]).
    pub fn describe_answer(&self) -> String {
        match self {
            SwitchReason::FirstUsable => "first answer whose checks pass".into(),
            SwitchReason::ChecksFailing => "service checks fail for the published answer".into(),
            SwitchReason::Failback => "preferred answer passes again".into(),
            other => other.describe(),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    HealthChanged {
        link: String,
        from: Health,
        to: Health,
        figures: Figures,
        at: Instant,
    },
    ActiveLinkChanged {
        group: String,
        from: Option<String>,
        to: Option<String>,
        reason: SwitchReason,
        /// The figures of the link that was left, when health caused the move.
        figures: Option<Figures>,
        at: Instant,
    },
    /// The peer ranks a link differently: the gateways may choose different links.
    RankingMismatch {
        link: String,
        ours: u8,
        theirs: u8,
        at: Instant,
    },
    /// The service checks fail over every usable link of a route group: the fault is behind
    /// the tunnels, so the group ranks its links by health alone (its routes stay).
    ChecksFailingEverywhere { group: String, at: Instant },
    /// The end of [`Event::ChecksFailingEverywhere`].
    ChecksRecovered { group: String, at: Instant },
    /// A DNS group publishes another answer (indices into its answers).
    AnswerChanged {
        group: String,
        from: Option<usize>,
        to: usize,
        reason: SwitchReason,
        at: Instant,
    },
    /// No answer of a DNS group passes its checks: the published answer (if any) is kept, since
    /// publishing nothing helps nobody. Once, until some answer is usable again.
    NoAnswerPasses {
        group: String,
        keeping: Option<usize>,
        at: Instant,
    },
    /// The peer's drill notice started, changed or ended: `group` is the group a failover drill
    /// on the peer moves (`None`: no drill there any more, or the peer cannot be heard).
    PeerDrill { group: Option<String>, at: Instant },
    /// A link's path MTU towards the peer changed (inner packet sizes).
    PathMtuChanged {
        link: String,
        from: u16,
        to: u16,
        reason: PmtuReason,
        at: Instant,
    },
}

struct Pin {
    link: String,
    reason: String,
}

/// An operator's pin of a DNS group to one of its answers.
struct AnswerPinned {
    answer: usize,
    reason: String,
}

struct DnsGroup {
    config: DnsGroupConfig,
    policy: GroupPolicy,
    state: GroupState,
    /// This side's check state of each answer (`answers` long).
    own: Vec<CheckState>,
    no_answer_passes: bool,
    /// This side's pin.
    pin: Option<AnswerPinned>,
    /// A pin (this side's or the peer's) held the group at the last decision: a switch right
    /// after it ends is the pin's release.
    held: bool,
}

impl DnsGroup {
    fn new(config: &DnsGroupConfig, settle_until: Instant) -> DnsGroup {
        let mut state = GroupState::default();
        state.settle_until = Some(settle_until);
        DnsGroup {
            config: config.clone(),
            policy: config.policy(),
            state,
            own: vec![CheckState::Unknown; config.answers],
            no_answer_passes: false,
            pin: None,
            held: false,
        }
    }

    fn active(&self) -> Option<usize> {
        self.state.active.as_deref().and_then(|a| a.parse().ok())
    }
}

/// The answer the peer's `pins` pin DNS group `g` to, if in range.
fn peer_pin_of(pins: &[AnswerPin], g: &DnsGroup) -> Option<usize> {
    let pin = pins.iter().find(|p| p.group == g.config.id)?;
    let answer = usize::from(pin.answer);
    (answer < g.config.answers).then_some(answer)
}

/// The newest trusted report of the peer's for DNS group `id` with `answers` answers.
fn peer_answers(
    peer: &BTreeMap<String, (Instant, PeerChecks)>,
    id: u32,
    answers: usize,
) -> Option<Vec<CheckState>> {
    let (_, newest) = peer.values().max_by_key(|(at, _)| *at)?;
    let (_, states) = newest.dns.iter().find(|(i, _)| *i == id)?;
    (states.len() == answers).then(|| states.clone())
}

pub struct Engine {
    config: EngineConfig,
    links: BTreeMap<String, LinkHealth>,
    /// Last reported effective health, to emit changes.
    reported: BTreeMap<String, Health>,
    groups: BTreeMap<String, (GroupPolicy, GroupState)>,
    pins: BTreeMap<String, Pin>,
    drains: BTreeSet<String>,
    mismatches: BTreeSet<String>,
    events: VecDeque<Event>,
    fingerprint: u32,
    /// How long a group settles after start-up or a first usable link (see `GroupState`).
    settle: std::time::Duration,
    /// Origin of the `sent_us` timestamps: the engine's creation.
    epoch: Instant,
    wires: BTreeMap<String, Wire>,
    /// Replies waiting for [`Engine::poll_transmit`].
    replies: VecDeque<Transmit>,
    /// The path-MTU searches of the links that have one.
    mtus: BTreeMap<String, LinkMtu>,
    /// The first sequence number of new links' probes.
    first_seq: u32,
    /// This side's service-check verdicts: group → link → state.
    checks: BTreeMap<String, BTreeMap<String, CheckState>>,
    /// The peer's latest trusted verdicts per link, with their arrival time.
    peer_checks: BTreeMap<String, (Instant, PeerChecks)>,
    dns: BTreeMap<String, DnsGroup>,
    /// The group a failover drill of this side's moves, for the peer.
    drill: Option<String>,
    /// The peer's drill notice, per link.
    peer_drill: Notices<Option<String>>,
    /// The peer's drill as the last [`Event::PeerDrill`] (or none) said.
    reported_peer_drill: Option<String>,
    /// The peer's answer pins, per link.
    peer_answer_pins: Notices<Vec<AnswerPin>>,
    /// This side's role in its HA pair, said in every version-2 probe.
    ha: Option<HaAnnounce>,
    /// What the gateway at the other end of each link says of its HA role (links of one group
    /// may go to the two gateways of a remote pair).
    peer_ha: BTreeMap<String, HaAnnounce>,
}

/// FNV-1a over the groups' ordered link names: equal configs give equal fingerprints.
fn fingerprint(groups: &[GroupConfig]) -> u32 {
    let mut h = crate::fnv::Fnv1a32::new();
    for g in groups {
        for l in &g.policy.links {
            h.write(l.as_bytes());
            h.write(b"\n");
        }
        h.write(b"|");
    }
    h.finish()
}

impl Engine {
    pub fn new(config: EngineConfig, now: Instant) -> Engine {
        let mut e = Engine {
            config: config.clone(),
            links: BTreeMap::new(),
            reported: BTreeMap::new(),
            groups: BTreeMap::new(),
            pins: BTreeMap::new(),
            drains: BTreeSet::new(),
            mismatches: BTreeSet::new(),
            events: VecDeque::new(),
            fingerprint: 0,
            settle: config.timings.detection_bound() + config.timings.interval * 2,
            epoch: now,
            wires: BTreeMap::new(),
            replies: VecDeque::new(),
            mtus: BTreeMap::new(),
            first_seq: 1,
            checks: BTreeMap::new(),
            peer_checks: BTreeMap::new(),
            dns: BTreeMap::new(),
            drill: None,
            peer_drill: Notices::default(),
            reported_peer_drill: None,
            ha: None,
            peer_ha: BTreeMap::new(),
            peer_answer_pins: Notices::default(),
        };
        e.update_config(config, now);
        e
    }

    /// Number probes from `seq` on, on every link. The peer drops a request whose number is not
    /// above the last it saw (replay protection), so a restarted gateway must not start again
    /// from 1: the shell passes a number that grows with wall-clock time faster than probes are
    /// sent (see `docs/protocol.md`).
    pub fn start_seqs_at(&mut self, seq: u32) {
        self.first_seq = seq.max(1);
        for l in self.links.values_mut() {
            l.start_seq_at(self.first_seq);
        }
    }

    /// Where [`Engine::start_seqs_at`] started the numbers.
    pub fn first_seq(&self) -> u32 {
        self.first_seq
    }

    /// Above every number sent so far on any link (serial-number order): where a restart
    /// must start at the least, whatever the wall clock says.
    pub fn next_seq(&self) -> u32 {
        self.links
            .values()
            .map(LinkHealth::next_seq)
            .fold(
                self.first_seq,
                |a, s| if serial_after(s, a) { s } else { a },
            )
    }

    /// A warm restart: `active` is each route group's active link before the restart (as the
    /// shell kept it). A group takes its link again as soon as the link is usable, without
    /// waiting for the other links' first verdicts (see `policy`), and leaves it as usual if
    /// the probes do not confirm it; a group whose link does not answer while it settles starts
    /// as from cold. Call right after [`Engine::new`]. Returns the entries it ignored: a group
    /// not in the config, or a link not in its group.
    pub fn restore(&mut self, active: &BTreeMap<String, String>) -> Vec<(String, String)> {
        let mut ignored = Vec::new();
        for (group, link) in active {
            match self.groups.get_mut(group) {
                Some((policy, state)) if state.active.is_none() && policy.links.contains(link) => {
                    state.restored = Some(link.clone());
                }
                _ => ignored.push((group.clone(), link.clone())),
            }
        }
        ignored
    }

    /// The link route group `group` waits to take again after a restart, until it has an
    /// active link or gives up (see [`Engine::restore`]).
    pub fn restoring(&self, group: &str) -> Option<&str> {
        let (_, state) = self.groups.get(group)?;
        state.active.is_none().then_some(())?;
        state.restored.as_deref()
    }

    /// Apply a new config; links and groups that stay keep their state.
    pub fn update_config(&mut self, config: EngineConfig, now: Instant) {
        let names: BTreeSet<&str> = config.links.iter().map(|l| l.name.as_str()).collect();
        self.links.retain(|n, _| names.contains(n.as_str()));
        self.reported.retain(|n, _| names.contains(n.as_str()));
        self.wires.retain(|n, _| names.contains(n.as_str()));
        self.replies.retain(|t| names.contains(t.link.as_str()));
        self.mtus.retain(|n, _| names.contains(n.as_str()));
        self.peer_checks.retain(|n, _| names.contains(n.as_str()));
        self.peer_drill.retain_links(|n| names.contains(n));
        self.peer_answer_pins.retain_links(|n| names.contains(n));
        self.peer_ha.retain(|n, _| names.contains(n.as_str()));
        for l in &config.links {
            self.wires.entry(l.name.clone()).or_default();
            self.update_mtu(l, now);
            let (t, th, d) = (config.timings, config.thresholds, config.damping);
            self.links
                .entry(l.name.clone())
                .and_modify(|h| h.set_parameters(t, th, d))
                .or_insert_with(|| {
                    let mut h = LinkHealth::new(t, th, d, now);
                    h.start_seq_at(self.first_seq);
                    h
                });
        }
        let groups: BTreeSet<&str> = config.groups.iter().map(|g| g.name.as_str()).collect();
        self.groups.retain(|n, _| groups.contains(n.as_str()));
        self.pins.retain(|g, _| groups.contains(g.as_str()));
        for g in &config.groups {
            let settle = now + self.settle;
            let entry = self.groups.entry(g.name.clone()).or_insert_with(|| {
                let mut state = GroupState::default();
                state.settle_until = Some(settle);
                (g.policy.clone(), state)
            });
            entry.0 = g.policy.clone();
        }
        self.checks.retain(|g, _| groups.contains(g.as_str()));
        for g in &config.groups {
            if let Some(states) = self.checks.get_mut(&g.name) {
                states.retain(|l, _| g.policy.links.contains(l));
            }
        }
        self.update_dns_groups(&config.dns_groups, now);
        self.fingerprint = fingerprint(&config.groups);
        self.settle = config.timings.detection_bound() + config.timings.interval * 2;
        self.config = config;
        self.decide(now);
    }

    /// DNS groups that stay keep their state; one whose answers changed (another id or count)
    /// keeps publishing the answer at the same index (or the last one) until its new checks
    /// decide, with its check states starting over and its pin released (an index may now
    /// name another answer).
    fn update_dns_groups(&mut self, groups: &[DnsGroupConfig], now: Instant) {
        let names: BTreeSet<&str> = groups.iter().map(|g| g.name.as_str()).collect();
        self.dns.retain(|n, _| names.contains(n.as_str()));
        let settle = now + self.settle;
        for c in groups {
            let Some(g) = self.dns.get_mut(&c.name) else {
                let wait = now + self.settle.max(c.start_wait);
                self.dns.insert(c.name.clone(), DnsGroup::new(c, wait));
                continue;
            };
            let answers_changed = g.config.id != c.id || g.config.answers != c.answers;
            g.policy = c.policy();
            g.config = c.clone();
            if answers_changed {
                let from = g.active();
                let to = from.and_then(|i| c.answers.checked_sub(1).map(|last| i.min(last)));
                let mut fresh = DnsGroup::new(c, settle);
                fresh.state.active = to.map(|i| i.to_string());
                *g = fresh;
                if let (Some(to), true) = (to, to != from) {
                    self.events.push_back(Event::AnswerChanged {
                        group: c.name.clone(),
                        from,
                        to,
                        reason: SwitchReason::Config,
                        at: now,
                    });
                }
            }
        }
    }

    /// The shell's combined verdict of route group `group`'s service checks over `link` (pass
    /// when all pass, fail when any fails, unknown before every check has a result). Ignored
    /// for a group or link not in the config.
    pub fn handle_checks(&mut self, group: &str, link: &str, state: CheckState, now: Instant) {
        let known = self
            .groups
            .get(group)
            .is_some_and(|(p, _)| p.links.iter().any(|l| l == link));
        if known {
            self.checks
                .entry(group.to_owned())
                .or_default()
                .insert(link.to_owned(), state);
            self.decide(now);
        }
    }

    /// This side's check state of each answer of DNS group `group`, in order (an answer
    /// without checks passes; missing ones are unknown, extra ones ignored). Ignored for a
    /// group not in the config.
    pub fn handle_answer_checks(&mut self, group: &str, states: Vec<CheckState>, now: Instant) {
        if let Some(g) = self.dns.get_mut(group) {
            let mut states = states;
            states.resize(g.config.answers, CheckState::Unknown);
            g.own = states;
            self.decide(now);
        }
    }

    /// This side's verdict over `link` for the peer: the combination of every route group's.
    fn own_link_checks(&self, link: &str) -> Option<CheckState> {
        CheckState::combine(self.checks.values().filter_map(|m| m.get(link).copied()))
    }

    /// What our version-2 probes on `link` say about service checks: nothing until some check
    /// state is known or a DNS group is configured.
    fn own_checks(&self, link: &str) -> Option<PeerChecks> {
        if self.dns.is_empty() && self.checks.values().all(BTreeMap::is_empty) {
            return None;
        }
        Some(PeerChecks {
            link: self.own_link_checks(link),
            dns: self
                .dns
                .values()
                .map(|g| (g.config.id, g.own.clone()))
                .collect(),
        })
    }

    /// What our version-2 probes on `link` carry besides the size fields: service checks, the
    /// drill notice, the answer pins.
    fn own_tail(&self, link: &str) -> Tail {
        Tail {
            checks: self.own_checks(link),
            drill: self.drill.clone(),
            answer_pins: self
                .dns
                .values()
                .filter_map(|g| {
                    let pin = g.pin.as_ref()?;
                    // Past the wire format's answers, a pin stays local.
                    let answer = u8::try_from(pin.answer).ok()?;
                    Some(AnswerPin {
                        group: g.config.id,
                        answer,
                    })
                })
                .collect(),
            path_mtu: self
                .mtus
                .get(link)
                .filter(|m| m.search.confirmed())
                .map(|m| m.search.mtu()),
            ha: self.ha,
            ..Tail::default()
        }
    }

    /// The peer's trusted verdict over `link`.
    fn peer_link_checks(&self, link: &str) -> Option<CheckState> {
        self.peer_checks.get(link).and_then(|(_, c)| c.link)
    }

    /// The key of a link's probes; `None` while it has no socket: requests are still
    /// scheduled (and count as lost, unanswered) but nothing is transmitted. A new key is a new
    /// peer as far as versions go: negotiation starts again. Ignored for a link not in the
    /// config (set keys after [`Engine::update_config`]).
    pub fn set_key(&mut self, link: &str, key: Option<Box<dyn Authenticator>>) {
        if let Some(w) = self.wires.get_mut(link) {
            if key.is_some() {
                w.peer_version = 0;
                w.new_key = true;
                self.peer_drill.forget(link);
                self.peer_answer_pins.forget(link);
                self.peer_ha.remove(link);
            }
            w.key = key;
        }
    }

    /// The next datagram to send: queued replies first, then due requests. Call until `None`.
    pub fn poll_transmit(&mut self, now: Instant) -> Option<Transmit> {
        if let Some(t) = self.replies.pop_front() {
            return Some(t);
        }
        self.probe_new_keys(now);
        loop {
            // Each turn takes one due probe, so this ends.
            let due = self
                .links
                .iter_mut()
                .find_map(|(name, l)| l.poll_probe(now).map(|seq| (name.clone(), seq)));
            let Some((link, seq)) = due else {
                return self.poll_mtu_probe(now);
            };
            let (Some(view), Some(w)) = (self.own_view(&link), self.wires.get(&link)) else {
                continue;
            };
            let Some(key) = w.key.as_deref() else {
                continue;
            };
            let v2 = w.peer_version >= wire::V2;
            let packet = Packet {
                version: if v2 { wire::V2 } else { wire::V1 },
                kind: Kind::Request,
                seq,
                sent_us: micros(self.epoch, now),
                view,
                speaks_v2: true,
                speaks_pmtu: true,
                tail: if v2 {
                    self.own_tail(&link)
                } else {
                    Tail::default()
                },
            };
            let bytes = wire::encode(key, &packet);
            return Some(Transmit { link, bytes });
        }
    }

    /// What our probes (requests and replies) on `link` carry.
    fn own_view(&self, link: &str) -> Option<View> {
        let l = self.links.get(link)?;
        Some(View {
            health: l.own(),
            pinned: self.pins.values().any(|p| p.link == link),
            draining: self.drains.contains(link),
            priority: self.priority(link),
            fingerprint: self.fingerprint,
            rx_loss_ppm: l.rx_loss_ppm(),
        })
    }

    fn priority(&self, link: &str) -> u8 {
        self.config
            .groups
            .iter()
            .find_map(|g| g.policy.links.iter().position(|l| l == link))
            .map_or(255, |p| p.min(254) as u8)
    }

    /// A datagram from the peer's address on `link`'s probe socket, with its arrival time
    /// (the end of a round trip: the shell timestamps it as early as it can). A request is
    /// answered through [`Engine::poll_transmit`]. A datagram on a link not in the config is
    /// dropped uncounted.
    pub fn handle_datagram(&mut self, link: &str, bytes: &[u8], at: Instant) -> Received {
        let Some(w) = self.wires.get_mut(link) else {
            return Received::Dropped(ProbeDrop::Malformed);
        };
        let decoded = match w.key.as_deref() {
            Some(key) => wire::decode(key, bytes),
            // No key, no way to tell the peer from anybody else.
            None => Err(ProbeDrop::Forged),
        };
        let p = match decoded {
            Ok(p) => p,
            Err(drop) => return self.dropped(link, drop),
        };
        match p.kind {
            Kind::MtuProbe => return self.handle_mtu_probe(link, &p, bytes.len()),
            Kind::MtuAck => return self.handle_mtu_ack(link, &p, at),
            Kind::Request | Kind::Reply => {}
        }
        let Some(l) = self.links.get_mut(link) else {
            return Received::Dropped(ProbeDrop::Malformed);
        };
        let received = match p.kind {
            Kind::Request => {
                if !l.handle_request(p.seq, p.view, at) {
                    return self.dropped(link, ProbeDrop::Replayed);
                }
                Received::Request
            }
            Kind::Reply => {
                // A version-2 reply echoes our send time, so it must match too. Version-1
                // peers of agentd 0.1.0 put their own arrival time there: seq only.
                let sent = l.sent_at(p.seq);
                let matches = sent.is_some_and(|sent| {
                    p.version < wire::V2 || p.sent_us == micros(self.epoch, sent)
                });
                let rtt = if matches {
                    l.handle_reply(p.seq, at)
                } else {
                    None
                };
                let Some(rtt) = rtt else {
                    return self.dropped(link, ProbeDrop::Replayed);
                };
                l.handle_peer_view(p.view, at);
                if let Some(m) = self.mtus.get_mut(link) {
                    m.search.on_link_alive(at);
                }
                Received::Reply { rtt }
            }
            // Dispatched above.
            Kind::MtuProbe | Kind::MtuAck => return Received::Dropped(ProbeDrop::Malformed),
        };
        // Only accepted packets teach what the peer speaks: a replayed old one must not.
        if let Some(w) = self.wires.get_mut(link) {
            w.peer_version = if p.speaks_v2 { wire::V2 } else { wire::V1 };
            w.peer_pmtu = p.speaks_pmtu;
            if p.version >= wire::V2 || !p.speaks_v2 {
                w.peer_path_mtu = p.tail.path_mtu;
            }
        }
        // Every accepted probe says what the peer's checks are now; none is "nothing to say".
        match &p.tail.checks {
            Some(c) => {
                self.peer_checks.insert(link.to_owned(), (at, c.clone()));
            }
            None => {
                self.peer_checks.remove(link);
            }
        }
        // A version-1 packet of a peer that speaks version 2 (sent before it learnt that we
        // do, or answering our version-1 request) cannot carry notices: it says nothing of
        // them. One of a peer that speaks version 1 only says there are none.
        if p.version >= wire::V2 || !p.speaks_v2 {
            self.peer_drill.handle(link, p.tail.drill.clone(), at);
            self.peer_answer_pins
                .handle(link, p.tail.answer_pins.clone(), at);
            match p.tail.ha {
                Some(ha) => {
                    self.peer_ha.insert(link.to_owned(), ha);
                }
                None => {
                    self.peer_ha.remove(link);
                }
            }
        }
        self.check_ranking(link, p.view, at);
        self.decide(at);
        if p.kind == Kind::Request {
            self.queue_reply(link, &p, bytes.len());
        }
        received
    }

    /// The reply to an accepted request, in the request's version, with the view as it is
    /// after the request, echoing its seq and send time.
    fn queue_reply(&mut self, link: &str, request: &Packet, size: usize) {
        let (Some(view), Some(key)) = (
            self.own_view(link),
            self.wires.get(link).and_then(|w| w.key.as_deref()),
        ) else {
            return;
        };
        let mut tail = if request.version >= wire::V2 {
            self.own_tail(link)
        } else {
            Tail::default()
        };
        // A padded request is a path-MTU probe: say which size arrived.
        tail.confirms_size = request
            .tail
            .pad_to
            .map(|_| u16::try_from(size).unwrap_or(u16::MAX));
        let reply = Packet {
            version: request.version,
            kind: Kind::Reply,
            seq: request.seq,
            sent_us: request.sent_us,
            view,
            speaks_v2: true,
            speaks_pmtu: true,
            tail,
        };
        let bytes = wire::encode(key, &reply);
        self.replies.push_back(Transmit {
            link: link.to_owned(),
            bytes,
        });
    }

    /// The shell saw a datagram on `link`'s probe socket from an address other than the
    /// peer's: counted as forged, not decoded.
    pub fn handle_forged(&mut self, link: &str) {
        self.dropped(link, ProbeDrop::Forged);
    }

    fn dropped(&mut self, link: &str, drop: ProbeDrop) -> Received {
        if let Some(w) = self.wires.get_mut(link) {
            *w.drops.entry(drop).or_default() += 1;
        }
        Received::Dropped(drop)
    }

    /// Datagrams dropped on `link`, by reason, every reason present (from 0).
    pub fn probe_drops(&self, link: &str) -> BTreeMap<ProbeDrop, u64> {
        let drops = self.wires.get(link).map(|w| &w.drops);
        ProbeDrop::ALL
            .iter()
            .map(|d| (*d, drops.and_then(|m| m.get(d)).copied().unwrap_or(0)))
            .collect()
    }

    fn check_ranking(&mut self, link: &str, view: View, now: Instant) {
        let ours = self.priority(link);
        if view.priority != ours || view.fingerprint != self.fingerprint {
            if self.mismatches.insert(link.to_owned()) {
                self.events.push_back(Event::RankingMismatch {
                    link: link.to_owned(),
                    ours,
                    theirs: view.priority,
                    at: now,
                });
            }
        } else {
            self.mismatches.remove(link);
        }
    }

    pub fn ranking_mismatch(&self, link: &str) -> bool {
        self.mismatches.contains(link)
    }

    /// Links that just got a key probe now (see `Wire::new_key`).
    fn probe_new_keys(&mut self, now: Instant) {
        for (name, w) in self.wires.iter_mut() {
            if std::mem::take(&mut w.new_key) {
                if let Some(l) = self.links.get_mut(name) {
                    l.probe_now(now);
                }
            }
        }
    }

    /// Expire probes, decay damping, run timers.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.probe_new_keys(now);
        for l in self.links.values_mut() {
            l.handle_timeout(now);
        }
        self.decide(now);
    }

    /// Pin `group` to `link` (it must be one of the group's links).
    pub fn pin(&mut self, group: &str, link: &str, reason: &str, now: Instant) -> bool {
        let ok = self
            .groups
            .get(group)
            .is_some_and(|(p, _)| p.links.iter().any(|l| l == link));
        if ok {
            self.pins.insert(
                group.to_owned(),
                Pin {
                    link: link.to_owned(),
                    reason: reason.to_owned(),
                },
            );
            self.decide(now);
        }
        ok
    }

    /// Release a pin; the group returns to automatic choice.
    pub fn unpin(&mut self, group: &str, now: Instant) -> bool {
        let had = self.pins.remove(group).is_some();
        if had {
            // The operator asks for the automatic choice now, not after the failback timer.
            if let Some((_, state)) = self.groups.get_mut(group) {
                state.released = true;
            }
            self.decide_with(now, Some(group));
        }
        had
    }

    pub fn pin_of(&self, group: &str) -> Option<(&str, &str)> {
        self.pins
            .get(group)
            .map(|p| (p.link.as_str(), p.reason.as_str()))
    }

    /// Pin DNS group `group` to its answer `answer` (an index into its answers), with the
    /// operator's reason: the answer is published whatever the checks say, here and at the
    /// peer (which follows unless it holds a pin of its own), until released. False for an
    /// unknown group or an index out of range.
    pub fn pin_answer(&mut self, group: &str, answer: usize, reason: &str, now: Instant) -> bool {
        let Some(g) = self.dns.get_mut(group) else {
            return false;
        };
        if answer >= g.config.answers {
            return false;
        }
        g.pin = Some(AnswerPinned {
            answer,
            reason: reason.to_owned(),
        });
        self.decide(now);
        true
    }

    /// Release DNS group `group`'s pin: back to the automatic choice at once (no failback
    /// wait), unless the peer still pins the group. False if it held no pin.
    pub fn unpin_answer(&mut self, group: &str, now: Instant) -> bool {
        let Some(g) = self.dns.get_mut(group) else {
            return false;
        };
        if g.pin.take().is_none() {
            return false;
        }
        g.state.released = true;
        self.decide(now);
        true
    }

    /// This side's pin of DNS group `group`: the answer's index and the reason.
    pub fn answer_pin_of(&self, group: &str) -> Option<(usize, &str)> {
        let pin = self.dns.get(group)?.pin.as_ref()?;
        Some((pin.answer, pin.reason.as_str()))
    }

    /// The answer the peer pins DNS group `group` to, as fresh probes of its say (whether or
    /// not this side follows it: its own pin wins).
    pub fn peer_answer_pin(&self, group: &str) -> Option<usize> {
        let g = self.dns.get(group)?;
        peer_pin_of(&self.peer_answer_pins.current(), g)
    }

    /// Say (or stop saying) in every version-2 probe that a failover drill of this side's
    /// moves group `drill`, so that the peer knows the switch is planned.
    pub fn set_drill(&mut self, drill: Option<String>) {
        self.drill = drill;
    }

    /// Say (or stop saying) in every version-2 probe this side's role in its HA pair, so that
    /// the remote gateways route to the active one.
    pub fn set_ha(&mut self, ha: Option<HaAnnounce>) {
        self.ha = ha;
    }

    /// What the gateway at the other end of `link` last said of its HA role.
    pub fn peer_ha(&self, link: &str) -> Option<HaAnnounce> {
        self.peer_ha.get(link).copied()
    }

    /// Whether `link` of a group goes to a gateway of a remote pair that is not the one to
    /// route to: the best announcement among the group's links wins (active over unsure over
    /// standby, then the larger revision: a former active that has not noticed yet loses), and
    /// a link whose peer announces less ranks as a last resort, like a drained one. With nobody
    /// active, the links stay with the unsure one (fail static); links to gateways that are not
    /// of a pair are never affected.
    fn to_standby(&self, links: &[String], link: &str) -> bool {
        let Some(ha) = self.peer_ha.get(link) else {
            return false;
        };
        let best = links
            .iter()
            .filter_map(|n| self.peer_ha.get(n))
            .map(|o| (o.role.rank(), o.revision))
            .max();
        best.is_some_and(|b| (ha.role.rank(), ha.revision) < b)
    }

    /// The group a failover drill on the peer moves, as fresh probes of its say.
    pub fn peer_drill(&self) -> Option<&str> {
        self.reported_peer_drill.as_deref()
    }

    /// How long what the peer says of itself (drill notice, answer pins) holds without a
    /// probe of its renewing it: the time it takes to declare a link down (0.65 s with the
    /// default profile). The peer repeats it in every probe, several a second on every link,
    /// so silence that long means this side cannot hear the peer, and cannot hear it end
    /// either.
    pub fn peer_timeout(&self) -> Duration {
        self.config.timings.detection_bound()
    }

    /// Drain (or undrain) a link: every group leaves it unless nothing else is usable.
    pub fn set_drain(&mut self, link: &str, on: bool, now: Instant) {
        if on {
            self.drains.insert(link.to_owned());
        } else {
            self.drains.remove(link);
        }
        self.decide(now);
    }

    pub fn drained(&self) -> impl Iterator<Item = &str> {
        self.drains.iter().map(String::as_str)
    }

    fn decide(&mut self, now: Instant) {
        self.decide_with(now, None);
    }

    fn decide_with(&mut self, now: Instant, released: Option<&str>) {
        let fresh_for = self.peer_timeout();
        self.peer_drill.expire(now, fresh_for);
        self.peer_answer_pins.expire(now, fresh_for);
        let drill = self.peer_drill.current();
        if drill != self.reported_peer_drill {
            self.reported_peer_drill = drill.clone();
            self.events.push_back(Event::PeerDrill {
                group: drill,
                at: now,
            });
        }
        // Health changes first, as events.
        for (name, l) in &self.links {
            let h = self.effective(l);
            let before = self.reported.insert(name.clone(), h);
            // A new link starts `unknown` silently; every change after that is an event.
            if before != Some(h) && !(before.is_none() && h == Health::Unknown) {
                self.events.push_back(Event::HealthChanged {
                    link: name.clone(),
                    from: before.unwrap_or(Health::Unknown),
                    to: h,
                    figures: l.figures(),
                    at: now,
                });
            }
        }
        // The peer's verdicts over a link this end does not see carry traffic may be old.
        let links = &self.links;
        self.peer_checks
            .retain(|n, _| links.get(n).is_some_and(|l| l.undamped().carries()));
        let standby: BTreeMap<String, BTreeSet<String>> = self
            .groups
            .iter()
            .map(|(g, (policy, _))| {
                let links = policy
                    .links
                    .iter()
                    .filter(|n| self.to_standby(&policy.links, n))
                    .cloned()
                    .collect();
                (g.clone(), links)
            })
            .collect();
        for (gname, (policy, state)) in self.groups.iter_mut() {
            let own_checks = self.checks.get(gname);
            let candidates: Vec<Candidate> = policy
                .links
                .iter()
                .map(|n| {
                    let checks_failing = own_checks.and_then(|m| m.get(n))
                        == Some(&CheckState::Fail)
                        || self.peer_checks.get(n).and_then(|(_, c)| c.link)
                            == Some(CheckState::Fail);
                    match self.links.get(n) {
                        Some(l) => Candidate {
                            health: l.effective_undamped(),
                            damped: l.damped(),
                            drained: self.drains.contains(n)
                                || l.peer().is_some_and(|p| p.draining)
                                || standby.get(gname).is_some_and(|s| s.contains(n)),
                            checks_failing,
                        },
                        None => Candidate {
                            health: Health::Unknown,
                            damped: false,
                            drained: false,
                            checks_failing,
                        },
                    }
                })
                .collect();
            let local_pin = self.pins.get(gname);
            // A peer pin: the peer pinned some group to one of our group's links. Only as
            // heard over a link this end does not see down: the peer's last word over a dead
            // link is stale (its release cannot cross it), and following it would blackhole
            // the traffic the peer sends back over the other link.
            let peer_pin = policy.links.iter().find(|n| {
                self.links.get(*n).is_some_and(|l| {
                    l.peer().is_some_and(|p| p.pinned)
                        && !matches!(l.undamped(), Health::Down | Health::Unknown)
                })
            });
            let pin = local_pin
                .map(|p| p.link.as_str())
                .or(peer_pin.map(String::as_str));
            let from = state.active.clone();
            let everywhere = state.checks_failing_everywhere;
            let choice = policy.choose(state, &candidates, pin, now);
            if state.checks_failing_everywhere != everywhere {
                let group = gname.clone();
                self.events.push_back(if state.checks_failing_everywhere {
                    Event::ChecksFailingEverywhere { group, at: now }
                } else {
                    Event::ChecksRecovered { group, at: now }
                });
            }
            if let Choice::Switch { to, why } = choice {
                if why == Why::FirstUsable {
                    state.settle_until = Some(now + self.settle);
                }
                let reason = match why {
                    Why::FirstUsable => SwitchReason::FirstUsable,
                    Why::ActiveUnusable => SwitchReason::ActiveDown,
                    Why::ActiveDegraded => SwitchReason::ActiveDegraded,
                    Why::ChecksFailing => SwitchReason::ChecksFailing,
                    Why::Failback if released == Some(gname.as_str()) => SwitchReason::Released,
                    Why::Failback => SwitchReason::Failback,
                    Why::Pinned => match local_pin {
                        Some(p) => SwitchReason::Manual(p.reason.clone()),
                        None => SwitchReason::PeerPin,
                    },
                    Why::NoUsableLink => SwitchReason::NoUsableLink,
                    Why::Restored => SwitchReason::Restored,
                };
                let figures = from
                    .as_ref()
                    .and_then(|f| self.links.get(f))
                    .map(LinkHealth::figures);
                self.events.push_back(Event::ActiveLinkChanged {
                    group: gname.clone(),
                    from,
                    to,
                    reason,
                    figures,
                    at: now,
                });
            }
        }
        self.decide_dns(now);
    }

    /// Each DNS group's answer: both gateways' verdicts per answer as candidates of the
    /// route-group policy; never a switch to no answer.
    fn decide_dns(&mut self, now: Instant) {
        let peer_pins = self.peer_answer_pins.current();
        for (name, g) in self.dns.iter_mut() {
            let peer = peer_answers(&self.peer_checks, g.config.id, g.config.answers);
            let candidates: Vec<Candidate> = g
                .own
                .iter()
                .enumerate()
                .map(|(i, own)| Candidate {
                    health: answer_health(*own, peer.as_ref().map(|p| p[i])),
                    damped: false,
                    drained: false,
                    checks_failing: false,
                })
                .collect();
            let none_passes = candidates.iter().all(|c| !c.health.carries())
                && candidates.iter().any(|c| c.health != Health::Unknown);
            if none_passes && !g.no_answer_passes {
                self.events.push_back(Event::NoAnswerPasses {
                    group: name.clone(),
                    keeping: g.active(),
                    at: now,
                });
            }
            g.no_answer_passes = none_passes;
            let from = g.active();
            // This side's pin wins over the peer's; either wins over the checks.
            let local_pin = g.pin.as_ref();
            let pin = local_pin
                .map(|p| p.answer)
                .or_else(|| peer_pin_of(&peer_pins, g))
                .map(|i| i.to_string());
            let released = std::mem::replace(&mut g.held, pin.is_some()) && pin.is_none();
            // Start-up: only the preferred answer is taken while the group settles (a pin is
            // the operator's word, taken at once).
            let settling = g.state.settle_until.is_some_and(|t| now < t);
            if from.is_none()
                && pin.is_none()
                && settling
                && candidates.first().map(|c| c.health) != Some(Health::Up)
            {
                continue;
            }
            let before = g.state.clone();
            let (to, why) = match g
                .policy
                .choose(&mut g.state, &candidates, pin.as_deref(), now)
            {
                Choice::Stay => continue,
                Choice::Switch { to: None, .. } => {
                    // Keep what is published: no answer is better than a failing one.
                    g.state = before;
                    continue;
                }
                Choice::Switch { to: Some(to), why } => (to, why),
            };
            // The policy's links are the answers' indices.
            let Ok(index) = to.parse::<usize>() else {
                continue;
            };
            if why == Why::FirstUsable {
                g.state.settle_until = Some(now + self.settle);
            }
            let reason = match why {
                Why::Pinned => match local_pin {
                    Some(p) => SwitchReason::Manual(p.reason.clone()),
                    None => SwitchReason::PeerPin,
                },
                // Whatever moved the group back to the automatic choice, the release allowed it.
                _ if released => SwitchReason::Released,
                Why::FirstUsable => SwitchReason::FirstUsable,
                Why::Failback => SwitchReason::Failback,
                // Unusable, degraded (passing at one gateway only): the checks decided. No
                // switch to nothing gets here.
                _ => SwitchReason::ChecksFailing,
            };
            self.events.push_back(Event::AnswerChanged {
                group: name.clone(),
                from,
                to: index,
                reason,
                at: now,
            });
        }
    }

    fn effective(&self, l: &LinkHealth) -> Health {
        let h = l.effective_undamped();
        if h.carries() && l.damped() {
            Health::Suppressed
        } else {
            h
        }
    }

    pub fn poll_event(&mut self) -> Option<Event> {
        for (link, m) in &mut self.mtus {
            while let Some(c) = m.search.poll_change() {
                self.events.push_back(Event::PathMtuChanged {
                    link: link.clone(),
                    from: c.from,
                    to: c.to,
                    reason: c.reason,
                    at: c.at,
                });
            }
        }
        self.events.pop_front()
    }

    /// The earliest time anything needs doing.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let links = self.links.values().map(LinkHealth::poll_timeout);
        let groups = self.groups.values().filter_map(|(p, s)| p.deadline(s));
        let dns = self
            .dns
            .values()
            .filter_map(|g| g.policy.deadline(&g.state));
        // What the peer says ends when it is no longer renewed.
        let fresh_for = self.peer_timeout();
        let notices = [
            self.peer_drill.deadline(fresh_for),
            self.peer_answer_pins.deadline(fresh_for),
        ];
        // A link that just got a key is due now: the epoch is as good as any past instant.
        let keyed = self.wires.values().any(|w| w.new_key).then_some(self.epoch);
        let mtus = self.mtus.values().filter_map(|m| m.search.poll_timeout());
        links
            .chain(mtus)
            .chain(groups)
            .chain(dns)
            .chain(notices.into_iter().flatten())
            .chain(keyed)
            .min()
    }

    pub fn active(&self, group: &str) -> Option<&str> {
        self.groups.get(group)?.1.active.as_deref()
    }

    /// Agreed health of a link (worse of both ends, `suppressed` while damped).
    pub fn health(&self, link: &str) -> Option<Health> {
        self.links.get(link).map(|l| self.effective(l))
    }

    /// Own view, the peer's view and version, figures and damping penalty of a link.
    pub fn link_report(&self, link: &str) -> Option<LinkReport> {
        let l = self.links.get(link)?;
        Some(LinkReport {
            own: l.own(),
            peer: l.peer(),
            figures: l.figures(),
            penalty: l.penalty(),
            peer_version: self.wires.get(link).map_or(0, |w| w.peer_version),
            checks: self.own_link_checks(link),
            peer_checks: self.peer_link_checks(link),
        })
    }

    /// The path-MTU search of `link`, if its config asks for one.
    pub fn path_mtu(&self, link: &str) -> Option<PathMtuReport> {
        let m = self.mtus.get(link)?;
        let w = self.wires.get(link);
        // A peer heard from that does not answer path-MTU probes (agentd 0.1.0, or a v2 peer
        // without them) is never probed: say so rather than "searching" for ever.
        let answers = w.is_some_and(|w| w.peer_pmtu && w.peer_version >= wire::V2);
        let heard = w.is_some_and(|w| w.peer_version != 0);
        Some(PathMtuReport {
            state: if heard && !answers {
                PmtuState::Unsupported
            } else {
                m.search.state()
            },
            tx: m.search.mtu(),
            tx_confirmed: m.search.confirmed(),
            rx: w.and_then(|w| w.peer_path_mtu),
            peer_answers: w.is_some_and(|w| w.peer_pmtu),
            counts: m.search.counts(),
        })
    }

    /// Starts, reconfigures or ends `l`'s path-MTU search.
    fn update_mtu(&mut self, l: &LinkConfig, now: Instant) {
        let Some(config) = l.pmtu else {
            self.mtus.remove(&l.name);
            return;
        };
        match self.mtus.get_mut(&l.name) {
            Some(m) if m.config == config => {}
            Some(m) => {
                m.config = config;
                m.search.reconfigure(config.search, now);
            }
            None => {
                self.mtus.insert(
                    l.name.clone(),
                    LinkMtu {
                        config,
                        search: PmtuSearch::new(config.search, now),
                        next_seq: 1,
                        outstanding: VecDeque::new(),
                    },
                );
            }
        }
    }

    /// The next path-MTU probe due, on a link whose peer answers them and that carries
    /// traffic (a dead link is not a small path).
    fn poll_mtu_probe(&mut self, now: Instant) -> Option<Transmit> {
        let names: Vec<String> = self.mtus.keys().cloned().collect();
        for name in names {
            let ready = self
                .wires
                .get(&name)
                .is_some_and(|w| w.key.is_some() && w.peer_pmtu && w.peer_version >= wire::V2);
            let up = ready && self.links.get(&name).is_some_and(|l| l.own().carries());
            let view = self.own_view(&name);
            let Some(m) = self.mtus.get_mut(&name) else {
                continue;
            };
            m.search.set_link_up(up, now);
            if !up {
                continue;
            }
            let Some(size) = m.search.poll_probe(now) else {
                continue;
            };
            let seq = m.next_seq;
            m.next_seq = m.next_seq.wrapping_add(1);
            if m.outstanding.len() == MTU_OUTSTANDING {
                m.outstanding.pop_front();
            }
            m.outstanding.push_back((seq, size, now));
            let datagram = size.saturating_sub(m.config.overhead);
            let (Some(view), Some(key)) =
                (view, self.wires.get(&name).and_then(|w| w.key.as_deref()))
            else {
                continue;
            };
            let packet = Packet {
                version: wire::V2,
                kind: Kind::MtuProbe,
                seq,
                sent_us: micros(self.epoch, now),
                view,
                speaks_v2: true,
                speaks_pmtu: true,
                tail: Tail {
                    pad_to: Some(datagram),
                    ..Tail::default()
                },
            };
            return Some(Transmit {
                link: name,
                bytes: wire::encode(key, &packet),
            });
        }
        None
    }

    /// A path-MTU probe of the peer's: acknowledged with its size, small. Probes are never
    /// part of the link's health (their loss is the point), and WireGuard already drops
    /// replayed datagrams, so any number of them may be answered.
    fn handle_mtu_probe(&mut self, link: &str, p: &Packet, size: usize) -> Received {
        let (Some(view), Some(w)) = (self.own_view(link), self.wires.get_mut(link)) else {
            return Received::Dropped(ProbeDrop::Malformed);
        };
        w.peer_pmtu = true;
        let Some(key) = w.key.as_deref() else {
            return Received::Dropped(ProbeDrop::Forged);
        };
        let ack = Packet {
            version: wire::V2,
            kind: Kind::MtuAck,
            seq: p.seq,
            sent_us: p.sent_us,
            view,
            speaks_v2: true,
            speaks_pmtu: true,
            tail: Tail {
                confirms_size: Some(u16::try_from(size).unwrap_or(u16::MAX)),
                ..Tail::default()
            },
        };
        let bytes = wire::encode(key, &ack);
        self.replies.push_back(Transmit {
            link: link.to_owned(),
            bytes,
        });
        Received::MtuProbe
    }

    /// The acknowledgement of one of our path-MTU probes: it must match a probe in flight (seq
    /// and send time) and confirm all of its bytes.
    fn handle_mtu_ack(&mut self, link: &str, p: &Packet, at: Instant) -> Received {
        let epoch = self.epoch;
        let Some(m) = self.mtus.get_mut(link) else {
            return self.dropped(link, ProbeDrop::Replayed);
        };
        let overhead = m.config.overhead;
        let found = m.outstanding.iter().position(|&(seq, size, sent)| {
            seq == p.seq
                && micros(epoch, sent) == p.sent_us
                && p.tail.confirms_size == Some(size.saturating_sub(overhead))
        });
        let Some(i) = found else {
            return self.dropped(link, ProbeDrop::Replayed);
        };
        let Some((_, size, _)) = m.outstanding.remove(i) else {
            return Received::Dropped(ProbeDrop::Replayed);
        };
        m.search.on_confirmed(size, at);
        Received::MtuAck { size }
    }

    /// This side's verdicts of route group `group`'s checks, by link.
    pub fn group_checks(&self, group: &str) -> BTreeMap<String, CheckState> {
        self.checks.get(group).cloned().unwrap_or_default()
    }

    /// Whether the service checks of route group `group` fail over every usable link (see
    /// [`Event::ChecksFailingEverywhere`]).
    pub fn checks_failing_everywhere(&self, group: &str) -> bool {
        self.groups
            .get(group)
            .is_some_and(|(_, s)| s.checks_failing_everywhere)
    }

    /// The answer DNS group `group` publishes, by index (`None`: none decided yet).
    pub fn answer(&self, group: &str) -> Option<usize> {
        self.dns.get(group)?.active()
    }

    /// A DNS group's answer and both gateways' check states, for status and metrics.
    pub fn answer_report(&self, group: &str) -> Option<AnswerReport> {
        let g = self.dns.get(group)?;
        Some(AnswerReport {
            active: g.active(),
            own: g.own.clone(),
            peer: peer_answers(&self.peer_checks, g.config.id, g.config.answers),
            no_answer_passes: g.no_answer_passes,
        })
    }
}

/// Microseconds from `epoch` to `at`, for `sent_us`.
fn micros(epoch: Instant, at: Instant) -> u64 {
    u64::try_from(at.saturating_duration_since(epoch).as_micros()).unwrap_or(u64::MAX)
}

/// Whether `a` comes after `b` in serial-number arithmetic (RFC 1982), as the peer compares
/// probe numbers.
pub fn serial_after(a: u32, b: u32) -> bool {
    (a.wrapping_sub(b) as i32) > 0
}
