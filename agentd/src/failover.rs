//! The failover engine in the shell: builds the engine's config from agentd's, feeds it peer
//! probe datagrams and timeouts, hands out what it asks to transmit, and turns its events into
//! log lines and event-log entries ([`to_record`], [`log_event`]). Routes follow
//! [`Failover::active`]; the loop reconciles them whenever an active link changes.

use std::collections::BTreeMap;
use std::time::{Duration, Instant, SystemTime};

use isthmus_api::{EventKind, EventRecord, Figures as ApiFigures};
use isthmus_config::{Config, FailoverOn, Link, Profile};
use isthmus_core::engine::{Event, SwitchReason};
use isthmus_core::engine::{LinkPmtu, PathMtuReport};
use isthmus_core::health::{Damping, Thresholds};
use isthmus_core::pmtu::{PmtuConfig, PmtuReason, PmtuState};
use isthmus_core::policy::GroupPolicy;
pub use isthmus_core::Transmit;
use isthmus_core::{
    CheckState, Engine, EngineConfig, Figures, GroupConfig, Health, LinkConfig, ProbeDrop,
    Received, Timings,
};

use crate::events;
use crate::probe::key::Key;
/// The least time a switch for service checks alone waits for confirmation: it covers the
/// peer's checks, whose intervals this gateway does not know, at the default interval (1 s) and
/// timeout (500 ms), plus the peer probe that carries their verdicts.
const CHECKS_CONFIRM_MIN: Duration = Duration::from_secs(2);

/// How long route group `g`'s checks must fail over its active link (and pass over a better
/// one) before it leaves: longer than two links' verdicts can be apart, i.e. one round of
/// its slowest check (interval + timeout) and the probe that tells the peer.
fn checks_confirm(config: &Config, g: &isthmus_config::RouteGroup, timings: &Timings) -> Duration {
    let slowest = config
        .probes
        .iter()
        .filter(|p| g.checks.contains(&p.name))
        .map(|p| p.interval + p.timeout)
        .max()
        .unwrap_or_default();
    CHECKS_CONFIRM_MIN.max(slowest + timings.interval)
}

/// How long DNS group `g` waits at start-up for its preferred answer before it publishes a
/// later one: two rounds of its slowest check, so that a result from before the tunnels were
/// up is followed by one from after.
fn dns_start_wait(config: &Config, g: &isthmus_config::DnsGroup) -> Duration {
    let slowest = config
        .probes
        .iter()
        .filter(|p| g.answers.iter().any(|a| a.checks.contains(&p.name)))
        .map(|p| p.interval + p.timeout)
        .max()
        .unwrap_or_default();
    CHECKS_CONFIRM_MIN.max(slowest * 2)
}

pub fn engine_config(config: &Config) -> EngineConfig {
    let h = &config.health;
    let timings = match h.profile {
        Profile::Default => Timings::DEFAULT,
        Profile::Fast => Timings::FAST,
    };
    EngineConfig {
        timings,
        thresholds: Thresholds {
            loss: h.loss_degraded,
            rtt_p95: h.rtt_degraded,
            jitter: h.jitter_degraded,
        },
        damping: Damping {
            penalty: f64::from(h.damping.penalty),
            half_life: h.damping.half_life,
            suppress_above: f64::from(h.damping.suppress_above),
            reuse_below: f64::from(h.damping.reuse_below),
            max_suppress: h.damping.max_suppress,
        },
        links: config
            .links
            .iter()
            .map(|l| LinkConfig {
                name: l.name.clone(),
                pmtu: l.path_mtu.map(|b| LinkPmtu {
                    search: PmtuConfig::new(b.min, b.max),
                    // Probes travel as UDP inside the tunnel, to the peer's inner address.
                    overhead: if l.peer_address.is_ipv6() { 48 } else { 28 },
                }),
            })
            .collect(),
        groups: config
            .route_groups
            .iter()
            .map(|g| GroupConfig {
                name: g.name.clone(),
                policy: GroupPolicy {
                    links: g.links.clone(),
                    failover_on_degraded: g.failover_on == FailoverOn::Degraded,
                    preempt: g.preempt,
                    failback_after: g.failback_after,
                    hold_down: g.hold_down,
                    checks_confirm: checks_confirm(config, g, &timings),
                },
            })
            .collect(),
        // DNS groups are not configured by agentd yet.
        dns_groups: config
            .dns_groups
            .iter()
            .map(|g| {
                let values: Vec<&str> = g.answers.iter().map(|a| a.value.as_str()).collect();
                isthmus_core::engine::DnsGroupConfig {
                    name: g.name.clone(),
                    id: isthmus_core::checks::dns_group_id(
                        &g.record,
                        g.record_type.as_str(),
                        &values,
                    ),
                    answers: g.answers.len(),
                    preempt: g.preempt,
                    failback_after: g.failback_after,
                    hold_down: g.hold_down,
                    start_wait: dns_start_wait(config, g),
                }
            })
            .collect(),
    }
}

/// A datagram that arrived on a link's probe socket.
#[derive(Debug, Clone)]
pub struct ProbeIn {
    pub link: String,
    pub bytes: Vec<u8>,
    /// When the socket received it: RTTs are measured from this, not from when the loop
    /// got round to it.
    pub at: Instant,
    /// Whether it came from the peer's tunnel address (anything else is a forgery attempt).
    pub from_peer: bool,
}

/// What the engine says about one link, for status and metrics.
#[derive(Debug, Clone)]
pub struct LinkView {
    pub health: Health,
    pub own: Health,
    pub peer: Option<isthmus_core::View>,
    /// The probe protocol version the peer speaks (0: not heard yet).
    pub peer_version: u8,
    pub figures: Figures,
    pub drained: bool,
    pub probe_drops: BTreeMap<String, u64>,
    /// The path-MTU search, with `mtu = "auto"`.
    pub path_mtu: Option<PathMtuReport>,
}

/// A route group's pin, for status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PinView {
    pub link: String,
    pub reason: String,
    pub since: Instant,
}

pub struct Failover {
    engine: Engine,
    /// What each link's key was derived from, to give the engine a new key only on change.
    keyed: BTreeMap<String, ([u8; 32], [u8; 32])>,
    /// When each current pin was set, for status.
    pinned_at: BTreeMap<String, Instant>,
    /// Each DNS group's answer values, to name answers in events.
    answers: BTreeMap<String, Vec<String>>,
}

/// Own and peer check states of a DNS group's answers, for status.
#[derive(Debug, Clone, Default)]
pub struct AnswerStates {
    pub own: Vec<isthmus_api::CheckState>,
    pub peer: Option<Vec<isthmus_api::CheckState>>,
    pub no_answer_passes: bool,
}

fn answer_values(config: &Config) -> BTreeMap<String, Vec<String>> {
    config
        .dns_groups
        .iter()
        .map(|g| {
            let values = g.answers.iter().map(|a| a.value.clone()).collect();
            (g.name.clone(), values)
        })
        .collect()
}

pub fn api_check(c: CheckState) -> isthmus_api::CheckState {
    match c {
        CheckState::Pass => isthmus_api::CheckState::Pass,
        CheckState::Fail => isthmus_api::CheckState::Fail,
        CheckState::Unknown => isthmus_api::CheckState::Unknown,
    }
}

impl Failover {
    pub fn new(config: &Config, now: Instant, wall: SystemTime) -> Failover {
        let mut engine = Engine::new(engine_config(config), now);
        engine.start_seqs_at(first_seq(wall));
        Failover {
            engine,
            keyed: BTreeMap::new(),
            pinned_at: BTreeMap::new(),
            answers: answer_values(config),
        }
    }

    /// A warm restart: each route group's active link before it (see [`Engine::restore`]).
    /// Returns the entries that name a group or link no longer in the config (ignored).
    pub fn restore(&mut self, saved: &BTreeMap<String, String>) -> Vec<(String, String)> {
        self.engine.restore(saved)
    }

    /// The link route group `group` waits to take again after a restart.
    pub fn restoring(&self, group: &str) -> Option<String> {
        self.engine.restoring(group).map(str::to_owned)
    }

    pub fn update_config(&mut self, config: &Config, now: Instant) {
        self.engine.update_config(engine_config(config), now);
        self.answers = answer_values(config);
        self.pinned_at
            .retain(|g, _| self.engine.pin_of(g).is_some());
    }

    /// The links that have a probe socket now: they get a key, the others lose theirs (their
    /// probes are still scheduled, and lost).
    pub fn set_ready(&mut self, links: &[&Link]) {
        let gone: Vec<String> = self
            .keyed
            .keys()
            .filter(|name| !links.iter().any(|l| &l.name == *name))
            .cloned()
            .collect();
        for name in gone {
            self.keyed.remove(&name);
            self.engine.set_key(&name, None);
        }
        for l in links {
            let from = (*l.private_key.expose(), l.peer_public_key.0);
            if self.keyed.get(&l.name) == Some(&from) {
                continue;
            }
            let key = Key::derive(&from.0, &from.1);
            self.engine.set_key(&l.name, Some(Box::new(key)));
            self.keyed.insert(l.name.clone(), from);
        }
    }

    /// Handle a probe datagram; for an answered probe of ours, its round-trip time.
    pub fn handle_datagram(&mut self, p: &ProbeIn) -> Option<Duration> {
        if !p.from_peer {
            self.engine.handle_forged(&p.link);
            return None;
        }
        match self.engine.handle_datagram(&p.link, &p.bytes, p.at) {
            Received::Reply { rtt } => Some(rtt),
            Received::Request | Received::MtuProbe | Received::MtuAck { .. } => None,
            Received::Dropped(reason) => {
                tracing::trace!(link = %p.link, reason = reason.as_str(), "probe dropped");
                None
            }
        }
    }

    pub fn handle_timeout(&mut self, now: Instant) {
        self.engine.handle_timeout(now);
    }

    /// The next datagram to send: replies, then requests that are due. Call until `None`.
    pub fn poll_transmit(&mut self, now: Instant) -> Option<Transmit> {
        self.engine.poll_transmit(now)
    }

    pub fn poll_event(&mut self) -> Option<Event> {
        self.engine.poll_event()
    }

    pub fn deadline(&self) -> Option<Instant> {
        self.engine.poll_timeout()
    }

    pub fn active(&self, group: &str) -> Option<String> {
        self.engine.active(group).map(str::to_owned)
    }

    /// This gateway's verdict of a route group's checks over a link.
    pub fn handle_checks(&mut self, group: &str, link: &str, state: CheckState, now: Instant) {
        self.engine.handle_checks(group, link, state, now);
    }

    /// This gateway's verdict of each answer of a DNS group.
    pub fn handle_answer_checks(&mut self, group: &str, states: Vec<CheckState>, now: Instant) {
        self.engine.handle_answer_checks(group, states, now);
    }

    /// The DNS group's chosen answer (its index).
    pub fn answer(&self, group: &str) -> Option<usize> {
        self.engine.answer(group)
    }

    pub fn answer_states(&self, group: &str) -> AnswerStates {
        match self.engine.answer_report(group) {
            Some(r) => AnswerStates {
                own: r.own.iter().copied().map(api_check).collect(),
                peer: r.peer.map(|p| p.into_iter().map(api_check).collect()),
                no_answer_passes: r.no_answer_passes,
            },
            None => AnswerStates::default(),
        }
    }

    pub fn checks_failing_everywhere(&self, group: &str) -> bool {
        self.engine.checks_failing_everywhere(group)
    }

    /// A route group's checks per link, for status: this gateway's verdict and the peer's
    /// (links whose verdict nobody has are left out).
    pub fn group_checks(&self, group: &str, links: &[String]) -> Vec<isthmus_api::LinkChecks> {
        let own = self.engine.group_checks(group);
        links
            .iter()
            .filter_map(|l| {
                let mine = own.get(l).copied();
                let peer = self.engine.link_report(l).and_then(|r| r.peer_checks);
                if mine.is_none() && peer.is_none() {
                    return None;
                }
                Some(isthmus_api::LinkChecks {
                    link: l.clone(),
                    own: api_check(mine.unwrap_or(CheckState::Unknown)),
                    peer: peer.map(api_check),
                })
            })
            .collect()
    }

    /// The value of a DNS group's answer, for events and hooks.
    pub fn answer_value(&self, group: &str, index: usize) -> String {
        self.answers
            .get(group)
            .and_then(|a| a.get(index))
            .cloned()
            .unwrap_or_else(|| format!("answer {}", index + 1))
    }

    pub fn pin(&mut self, group: &str, link: &str, reason: &str, now: Instant) -> bool {
        let ok = self.engine.pin(group, link, reason, now);
        if ok {
            self.pinned_at.insert(group.to_owned(), now);
        }
        ok
    }

    pub fn unpin(&mut self, group: &str, now: Instant) -> bool {
        self.pinned_at.remove(group);
        self.engine.unpin(group, now)
    }

    pub fn pin_of(&self, group: &str) -> Option<PinView> {
        let (link, reason) = self.engine.pin_of(group)?;
        let since = self.pinned_at.get(group).copied()?;
        Some(PinView {
            link: link.to_owned(),
            reason: reason.to_owned(),
            since,
        })
    }

    /// Pin DNS group `group` to its answer `index` (a drill); the pin reaches the peer.
    pub fn pin_answer(&mut self, group: &str, index: usize, reason: &str, now: Instant) -> bool {
        self.engine.pin_answer(group, index, reason, now)
    }

    pub fn unpin_answer(&mut self, group: &str, now: Instant) -> bool {
        self.engine.unpin_answer(group, now)
    }

    pub fn answer_pin_of(&self, group: &str) -> Option<(usize, String)> {
        self.engine
            .answer_pin_of(group)
            .map(|(i, r)| (i, r.to_owned()))
    }

    /// Tell the peer, in every probe, that a drill of `group` is in progress (`None`: over).
    pub fn set_drill(&mut self, group: Option<String>) {
        self.engine.set_drill(group);
    }

    /// Tell the peers, in every probe, this gateway's role in its pair (`None`: not one of a
    /// pair).
    pub fn set_ha(&mut self, ha: Option<isthmus_core::HaAnnounce>) {
        self.engine.set_ha(ha);
    }

    /// What the gateway at the other end of `link` says of its role in its pair.
    pub fn peer_ha(&self, link: &str) -> Option<isthmus_core::HaAnnounce> {
        self.engine.peer_ha(link)
    }

    /// The group the peer says it is drilling.
    pub fn peer_drill(&self) -> Option<String> {
        self.engine.peer_drill().map(str::to_owned)
    }

    pub fn set_drain(&mut self, link: &str, on: bool, now: Instant) {
        self.engine.set_drain(link, on, now);
    }

    /// What the engine says about `link`.
    pub fn link_view(&self, link: &str) -> Option<LinkView> {
        let health = self.engine.health(link)?;
        let r = self.engine.link_report(link)?;
        let drained =
            self.engine.drained().any(|l| l == link) || r.peer.is_some_and(|p| p.draining);
        // Every reason from 0, so that `increase()` sees the first drop too.
        let probe_drops = self
            .engine
            .probe_drops(link)
            .into_iter()
            .map(|(reason, n): (ProbeDrop, u64)| (reason.as_str().to_owned(), n))
            .collect();
        Some(LinkView {
            health,
            own: r.own,
            peer: r.peer,
            peer_version: r.peer_version,
            figures: r.figures,
            drained,
            probe_drops,
            path_mtu: self.engine.path_mtu(link),
        })
    }

    /// The sizes `link`'s worker holds packets to, towards the peer and from it: the configured
    /// MTU both ways, or with `mtu = "auto"` what the search measured (the floor until a probe
    /// is confirmed, and while the peer does not answer).
    pub fn path_limits(&self, link: &Link) -> (u16, u16) {
        let Some(bounds) = link.path_mtu else {
            return (link.mtu, link.mtu);
        };
        match self.engine.path_mtu(&link.name) {
            Some(r) => (
                r.tx,
                r.rx.unwrap_or(bounds.min).clamp(bounds.min, bounds.max),
            ),
            None => (bounds.min, bounds.min),
        }
    }
}

impl Failover {
    /// Number probes from `floor` on if it is above where the wall clock started them: an
    /// earlier run reserved the numbers below it ([`crate::state`]), and the wall clock may
    /// have stepped back since (the peer would drop lower numbers as replays for as long as
    /// the step). Call before any probe is sent.
    pub fn start_seqs_above(&mut self, floor: u32) {
        if isthmus_core::engine::serial_after(floor, self.engine.first_seq()) {
            self.engine.start_seqs_at(floor);
        }
    }

    /// Above every probe number used so far.
    pub fn next_seq(&self) -> u32 {
        self.engine.next_seq()
    }
}

/// Where a start numbers its probes: hundredths of a second of wall-clock time, modulo 2^32.
/// Probes go out at most every 25 ms, so the numbers of one run never catch up with the clock,
/// and a restarted gateway starts above what its peer last saw (the peer drops requests below
/// that as replays). They wrap every 497 days, which the serial-number comparison takes.
fn first_seq(wall: SystemTime) -> u32 {
    let centis = wall
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis()
        / 10;
    centis as u32
}

/// The API's health for the core's.
pub fn api_health(h: Health) -> isthmus_api::Health {
    match h {
        Health::Up => isthmus_api::Health::Up,
        Health::Degraded => isthmus_api::Health::Degraded,
        Health::Down => isthmus_api::Health::Down,
        Health::Suppressed => isthmus_api::Health::Suppressed,
        Health::Unknown => isthmus_api::Health::Unknown,
    }
}

/// The search's part of a link's path-MTU status (the rest comes from its counters).
pub fn fill_path_mtu(s: &mut isthmus_api::PathMtuStatus, r: &PathMtuReport) {
    s.state = match r.state {
        PmtuState::Searching => "searching",
        PmtuState::Complete => "complete",
        PmtuState::Unsupported => "unsupported",
    }
    .to_owned();
    s.tx = r.tx;
    s.tx_confirmed = r.tx_confirmed;
    s.rx = r.rx;
    s.peer_answers = r.peer_answers;
    s.probes_sent = r.counts.probes_sent;
    s.probes_confirmed = r.counts.probes_confirmed;
    s.probes_lost = r.counts.probes_lost;
    s.black_holes = r.counts.black_holes;
}

pub fn api_figures(f: &Figures) -> ApiFigures {
    let ms = |d: Option<std::time::Duration>| d.map(|d| (d.as_secs_f64() * 1e6).round() / 1e3);
    ApiFigures {
        rtt_p50_ms: ms(f.rtt_p50),
        rtt_p95_ms: ms(f.rtt_p95),
        jitter_ms: ms(f.jitter),
        loss: (f.loss * 1e4).round() / 1e4,
        loss_in: f.loss_in.map(|l| (l * 1e4).round() / 1e4),
        loss_out: f.loss_out.map(|l| (l * 1e4).round() / 1e4),
        consecutive_lost: f.consecutive_lost,
    }
}

/// Log an engine event once, at the level it deserves (fields as values, never `Some(..)`).
pub fn log_event(e: &Event) {
    match e {
        Event::HealthChanged { link, from, to, .. } => {
            tracing::info!(link = %link, from = %from.as_str(), to = %to.as_str(), "link health changed")
        }
        Event::ActiveLinkChanged {
            group,
            from,
            to,
            reason,
            ..
        } => tracing::warn!(
            group = %group,
            from = from.as_deref().unwrap_or("none"),
            to = to.as_deref().unwrap_or("none"),
            reason = %reason.describe(),
            "active link changed"
        ),
        Event::RankingMismatch {
            link, ours, theirs, ..
        } => tracing::warn!(link = %link, ours, theirs, "link ranking differs from the peer's"),
        Event::ChecksFailingEverywhere { group, .. } => tracing::warn!(
            group = %group,
            "service checks fail over every usable link: routes stay, ranked by health"
        ),
        Event::ChecksRecovered { group, .. } => {
            tracing::info!(group = %group, "service checks pass over some link again")
        }
        Event::AnswerChanged {
            group,
            from,
            to,
            reason,
            ..
        } => match from {
            Some(from) => {
                tracing::warn!(group = %group, from, to, reason = %reason.describe_answer(), "dns answer changed")
            }
            None => {
                tracing::warn!(group = %group, to, reason = %reason.describe_answer(), "dns answer changed")
            }
        },
        Event::NoAnswerPasses { group, keeping, .. } => match keeping {
            Some(keeping) => {
                tracing::warn!(group = %group, keeping, "no dns answer passes its checks: keeping the published one")
            }
            None => tracing::warn!(group = %group, "no dns answer passes its checks"),
        },
        Event::PeerDrill { group, .. } => match group {
            Some(group) => tracing::info!(group = %group, "the peer runs a failover drill"),
            None => tracing::info!("the peer's failover drill is over"),
        },
        Event::PathMtuChanged {
            link,
            from,
            to,
            reason,
            ..
        } => match reason {
            PmtuReason::BlackHole => tracing::warn!(
                link = %link, from, to, reason = reason.as_str(),
                "path mtu fell back: probes of the path mtu were lost while the link answered"
            ),
            _ => {
                tracing::info!(link = %link, from, to, reason = reason.as_str(), "path mtu changed")
            }
        },
    }
}

/// An engine event as a log entry, with its wall-clock time (`wall` is the wall clock at `now`).
/// `answer` names a DNS group's answer by its index.
pub fn to_record(
    e: &Event,
    now: Instant,
    wall: SystemTime,
    answer: impl Fn(&str, usize) -> String,
) -> (EventRecord, SystemTime) {
    let wall = |at: &Instant| wall - now.saturating_duration_since(*at);
    match e {
        Event::HealthChanged {
            link,
            from,
            to,
            figures,
            at,
        } => {
            let mut r = events::record(EventKind::HealthChanged, health_reason(*to, figures));
            r.link = Some(link.clone());
            r.from = Some(from.as_str().to_owned());
            r.to = Some(to.as_str().to_owned());
            r.figures = Some(api_figures(figures));
            (r, wall(at))
        }
        Event::ActiveLinkChanged {
            group,
            from,
            to,
            reason,
            figures,
            at,
        } => {
            let mut r = events::record(EventKind::ActiveLinkChanged, reason.describe());
            r.group = Some(group.clone());
            r.from = from.clone();
            r.to = to.clone();
            r.figures = figures.as_ref().map(api_figures);
            if matches!(reason, SwitchReason::Manual(_)) {
                r.link = to.clone();
            }
            (r, wall(at))
        }
        Event::RankingMismatch {
            link,
            ours,
            theirs,
            at,
        } => {
            let mut r = events::record(
                EventKind::RankingMismatch,
                format!(
                    "the peer ranks this link {theirs}, this gateway {ours}: the two may choose \
                     different links; list the links in the same order on both gateways"
                ),
            );
            r.link = Some(link.clone());
            (r, wall(at))
        }
        Event::ChecksFailingEverywhere { group, at } => {
            let mut r = events::record(
                EventKind::ChecksFailing,
                "service checks fail over every usable link: the fault is behind the tunnels; \
                 the routes stay, ranked by health",
            );
            r.group = Some(group.clone());
            r.to = Some("failing".into());
            (r, wall(at))
        }
        Event::ChecksRecovered { group, at } => {
            let mut r = events::record(
                EventKind::ChecksFailing,
                "service checks pass over some link again",
            );
            r.group = Some(group.clone());
            r.to = Some("ok".into());
            (r, wall(at))
        }
        Event::AnswerChanged {
            group,
            from,
            to,
            reason,
            at,
        } => {
            let mut r = events::record(EventKind::AnswerChanged, reason.describe_answer());
            r.group = Some(group.clone());
            r.from = from.map(|i| answer(group, i));
            r.to = Some(answer(group, *to));
            (r, wall(at))
        }
        Event::NoAnswerPasses { group, keeping, at } => {
            let mut r = events::record(
                EventKind::NoAnswerPasses,
                "no answer passes its checks: keeping the published one",
            );
            r.group = Some(group.clone());
            r.to = keeping.map(|i| answer(group, i));
            (r, wall(at))
        }
        Event::PeerDrill { group, at } => {
            let mut r = match group {
                Some(_) => events::record(EventKind::PeerDrill, "the peer runs a failover drill"),
                None => events::record(EventKind::PeerDrill, "the peer's failover drill is over"),
            };
            r.group = group.clone();
            r.to = Some(if group.is_some() { "started" } else { "ended" }.into());
            (r, wall(at))
        }
        Event::PathMtuChanged {
            link,
            from,
            to,
            reason,
            at,
        } => {
            let why = match reason {
                PmtuReason::Confirmed => "path mtu confirmed by padded probes",
                PmtuReason::BlackHole => {
                    "probes of the path mtu lost while the link answered: fell back to the floor"
                }
                PmtuReason::Config => "path mtu bounds changed by a reload",
            };
            let mut r = events::record(EventKind::PathMtu, why);
            r.link = Some(link.clone());
            r.from = Some(from.to_string());
            r.to = Some(to.to_string());
            (r, wall(at))
        }
    }
}

/// Whether an engine event changes what the actions should carry out.
pub fn decides_actions(e: &Event) -> bool {
    matches!(
        e,
        Event::ActiveLinkChanged { .. } | Event::AnswerChanged { .. }
    )
}

/// The transition a hook runs for, if the event is one.
pub fn transition(e: &Event, rec: &EventRecord) -> Option<crate::daemon::actions::Transition> {
    let (kind, group) = match e {
        Event::ActiveLinkChanged { group, .. } => ("route_group", group),
        Event::AnswerChanged { group, .. } => ("dns_group", group),
        _ => return None,
    };
    let mut figures = Vec::new();
    if let Some(f) = &rec.figures {
        if let Some(v) = f.rtt_p95_ms {
            figures.push(("RTT_P95_MS", v.to_string()));
        }
        if let Some(v) = f.jitter_ms {
            figures.push(("JITTER_MS", v.to_string()));
        }
        figures.push(("LOSS", f.loss.to_string()));
    }
    Some(crate::daemon::actions::Transition {
        kind,
        group: group.clone(),
        from: rec.from.clone(),
        to: rec.to.clone(),
        reason: rec.reason.clone(),
        figures,
    })
}

fn health_reason(to: Health, f: &Figures) -> String {
    match to {
        Health::Down if f.consecutive_lost == 0 => "the peer reports the link down".into(),
        Health::Down => format!("{} consecutive probes lost", f.consecutive_lost),
        Health::Degraded => format!(
            "loss {:.1}%, rtt p95 {}, jitter {}",
            f.loss * 100.0,
            f.rtt_p95
                .map_or("-".into(), |d| format!("{:.1} ms", d.as_secs_f64() * 1e3)),
            f.jitter
                .map_or("-".into(), |d| format!("{:.1} ms", d.as_secs_f64() * 1e3)),
        ),
        Health::Suppressed => "flap damping: the link changed state too often".into(),
        Health::Up => "probes answered".into(),
        Health::Unknown => "no probe answered yet".into(),
    }
}
