//! The engine: every link's health and every route group's active link, with pins and drains
//! (local and the peer's). Inputs are `handle_*` with `now`; outputs are probes to send
//! ([`Engine::poll_probe`]), events ([`Engine::poll_event`]), the next deadline
//! ([`Engine::poll_timeout`]) and the active links ([`Engine::active`]). Decision code iterates
//! `BTreeMap`s, so equal inputs give equal outputs.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::{Duration, Instant};

use crate::health::{Damping, Figures, Health, LinkHealth, PeerView, Thresholds};
use crate::policy::{Candidate, Choice, GroupPolicy, GroupState, Why};
use crate::profile::Timings;

#[derive(Debug, Clone, PartialEq)]
pub struct LinkConfig {
    pub name: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct GroupConfig {
    pub name: String,
    pub policy: GroupPolicy,
}

#[derive(Debug, Clone, PartialEq)]
pub struct EngineConfig {
    pub timings: Timings,
    pub thresholds: Thresholds,
    pub damping: Damping,
    pub links: Vec<LinkConfig>,
    pub groups: Vec<GroupConfig>,
}

/// Why an active link changed, for the event log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SwitchReason {
    FirstUsable,
    ActiveDown,
    ActiveDegraded,
    Failback,
    /// `netctl failover` here, with the operator's reason.
    Manual(String),
    /// The peer pinned a group to this link.
    PeerPin,
    /// The pin was released (`netctl failback`): back to automatic choice.
    Released,
    NoUsableLink,
    /// A reload changed the group.
    Config,
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
}

/// What our probes on a link say about it (the fields of docs/protocol.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OwnView {
    pub health: Health,
    pub pinned: bool,
    pub draining: bool,
    pub priority: u8,
    pub fingerprint: u32,
    pub rx_loss_ppm: Option<u32>,
}

struct Pin {
    link: String,
    reason: String,
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
        };
        e.update_config(config, now);
        e
    }

    /// Apply a new config; links and groups that stay keep their state.
    pub fn update_config(&mut self, config: EngineConfig, now: Instant) {
        let names: BTreeSet<&str> = config.links.iter().map(|l| l.name.as_str()).collect();
        self.links.retain(|n, _| names.contains(n.as_str()));
        self.reported.retain(|n, _| names.contains(n.as_str()));
        for l in &config.links {
            let (t, th, d) = (config.timings, config.thresholds, config.damping);
            self.links
                .entry(l.name.clone())
                .and_modify(|h| h.set_parameters(t, th, d))
                .or_insert_with(|| LinkHealth::new(t, th, d, now));
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
        self.fingerprint = fingerprint(&config.groups);
        self.settle = config.timings.detection_bound() + config.timings.interval * 2;
        self.config = config;
        self.decide(now);
    }

    /// The next probe to send, if one is due: (link, seq, what to say). Call until `None`.
    pub fn poll_probe(&mut self, now: Instant) -> Option<(String, u32, OwnView)> {
        let due = self
            .links
            .iter_mut()
            .find_map(|(name, l)| l.poll_probe(now).map(|seq| (name.clone(), seq)))?;
        let view = self.own_view(&due.0)?;
        Some((due.0, due.1, view))
    }

    /// What our probes (requests and replies) on `link` carry.
    pub fn own_view(&self, link: &str) -> Option<OwnView> {
        let l = self.links.get(link)?;
        Some(OwnView {
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

    /// A reply to our probe: its round-trip time, or `None` if it matches no outstanding probe
    /// (dropped).
    pub fn handle_reply(
        &mut self,
        link: &str,
        seq: u32,
        view: PeerView,
        now: Instant,
    ) -> Option<Duration> {
        let l = self.links.get_mut(link)?;
        let rtt = l.handle_reply(seq, now)?;
        l.handle_peer_view(view);
        self.check_ranking(link, view, now);
        self.decide(now);
        Some(rtt)
    }

    /// A request from the peer. Returns false if it is a replay (dropped, not answered).
    pub fn handle_request(&mut self, link: &str, seq: u32, view: PeerView, now: Instant) -> bool {
        let Some(l) = self.links.get_mut(link) else {
            return false;
        };
        if !l.handle_request(seq, view) {
            return false;
        }
        self.check_ranking(link, view, now);
        self.decide(now);
        true
    }

    fn check_ranking(&mut self, link: &str, view: PeerView, now: Instant) {
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

    /// Expire probes, decay damping, run timers.
    pub fn handle_timeout(&mut self, now: Instant) {
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
        for (gname, (policy, state)) in self.groups.iter_mut() {
            let candidates: Vec<Candidate> = policy
                .links
                .iter()
                .map(|n| match self.links.get(n) {
                    Some(l) => Candidate {
                        health: l.effective_undamped(),
                        damped: l.damped(),
                        drained: self.drains.contains(n) || l.peer().is_some_and(|p| p.draining),
                    },
                    None => Candidate {
                        health: Health::Unknown,
                        damped: false,
                        drained: false,
                    },
                })
                .collect();
            let local_pin = self.pins.get(gname);
            // A peer pin: the peer pinned some group to one of our group's links.
            let peer_pin = policy.links.iter().find(|n| {
                self.links
                    .get(*n)
                    .and_then(|l| l.peer())
                    .is_some_and(|p| p.pinned)
            });
            let pin = local_pin
                .map(|p| p.link.as_str())
                .or(peer_pin.map(String::as_str));
            let from = state.active.clone();
            if let Choice::Switch { to, why } = policy.choose(state, &candidates, pin, now) {
                if why == Why::FirstUsable {
                    state.settle_until = Some(now + self.settle);
                }
                let reason = match why {
                    Why::FirstUsable => SwitchReason::FirstUsable,
                    Why::ActiveUnusable => SwitchReason::ActiveDown,
                    Why::ActiveDegraded => SwitchReason::ActiveDegraded,
                    Why::Failback if released == Some(gname.as_str()) => SwitchReason::Released,
                    Why::Failback => SwitchReason::Failback,
                    Why::Pinned => match local_pin {
                        Some(p) => SwitchReason::Manual(p.reason.clone()),
                        None => SwitchReason::PeerPin,
                    },
                    Why::NoUsableLink => SwitchReason::NoUsableLink,
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
        self.events.pop_front()
    }

    /// The earliest time anything needs doing.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let links = self.links.values().map(LinkHealth::poll_timeout);
        let groups = self.groups.values().filter_map(|(p, s)| p.deadline(s));
        links.chain(groups).min()
    }

    pub fn active(&self, group: &str) -> Option<&str> {
        self.groups.get(group)?.1.active.as_deref()
    }

    /// Agreed health of a link (worse of both ends, `suppressed` while damped).
    pub fn health(&self, link: &str) -> Option<Health> {
        self.links.get(link).map(|l| self.effective(l))
    }

    /// (own view, peer's view, figures, damping penalty) of a link.
    pub fn link_report(&self, link: &str) -> Option<(Health, Option<PeerView>, Figures, f64)> {
        let l = self.links.get(link)?;
        Some((l.own(), l.peer(), l.figures(), l.penalty()))
    }
}
