//! The shell around the decision core: builds the engine's config from agentd's, gives it each
//! link's probe key, feeds it peer probe datagrams and timeouts, sends the datagrams it asks
//! for (its requests and its replies to the peer's), and turns its events into log entries. Routes follow [`Failover::active`]; the daemon reconciles them whenever an
//! active link changes.

use std::collections::BTreeMap;
use std::time::{Instant, SystemTime};

use isthmus_api::{EventRecord, Figures as ApiFigures};
use isthmus_config::{Config, FailoverOn, Profile};
use isthmus_core::engine::{Event, SwitchReason};
use isthmus_core::health::{Damping, Thresholds};
use isthmus_core::policy::GroupPolicy;
use isthmus_core::{
    Engine, EngineConfig, Figures, GroupConfig, Health, LinkConfig, Received, Timings, View,
};
use tokio::sync::mpsc;

use crate::events;
use crate::probe::peer::{PeerSockets, ProbeIn, SocketChange};

pub fn engine_config(config: &Config) -> EngineConfig {
    let h = &config.health;
    EngineConfig {
        timings: match h.profile {
            Profile::Default => Timings::DEFAULT,
            Profile::Fast => Timings::FAST,
        },
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
                },
            })
            .collect(),
    }
}

pub struct Failover {
    engine: Engine,
    sockets: PeerSockets,
    /// When each current pin was set, for status.
    pinned_at: BTreeMap<String, Instant>,
}

impl Failover {
    pub fn new(config: &Config, tx: mpsc::Sender<ProbeIn>, now: Instant) -> Failover {
        Failover {
            engine: Engine::new(engine_config(config), now),
            sockets: PeerSockets::new(tx),
            pinned_at: BTreeMap::new(),
        }
    }

    pub fn update_config(&mut self, config: &Config, now: Instant) {
        self.engine.update_config(engine_config(config), now);
        self.pinned_at
            .retain(|g, _| self.engine.pin_of(g).is_some());
    }

    /// Keep a probe socket on every running link; the engine gets the key of each.
    pub fn sync_sockets(&mut self, config: &Config, running: impl Fn(&str) -> bool) {
        let changes = self
            .sockets
            .sync(&config.links, running, config.health.probe_port);
        for change in changes {
            match change {
                SocketChange::Opened(link, key) => self.engine.set_key(&link, Some(Box::new(key))),
                SocketChange::Closed(link) => self.engine.set_key(&link, None),
            }
        }
    }

    /// Handle a peer probe datagram; for an answered probe of ours, the link and the
    /// round-trip time. The reply to a request leaves at once.
    pub fn on_probe(&mut self, p: ProbeIn) -> Option<(String, std::time::Duration)> {
        if !p.from_peer {
            tracing::trace!(link = %p.link, reason = "forged", "probe dropped");
            self.engine.handle_forged(&p.link);
            return None;
        }
        match self.engine.handle_datagram(&p.link, &p.bytes, p.at) {
            Received::Request => {
                self.transmit(p.at);
                None
            }
            Received::Reply { rtt } => Some((p.link, rtt)),
            Received::Dropped(reason) => {
                tracing::trace!(link = %p.link, reason = reason.as_str(), "probe dropped");
                None
            }
        }
    }

    pub fn on_timeout(&mut self, now: Instant) {
        self.engine.handle_timeout(now);
    }

    /// Send what the engine has to send. A link without a socket (not running yet) has no key
    /// in the engine, which sends nothing on it: its requests go unanswered, lost.
    fn transmit(&mut self, now: Instant) {
        while let Some(t) = self.engine.poll_transmit(now) {
            self.sockets.send(&t.link, &t.bytes);
        }
    }

    /// Send the probes that are due and return the engine's events.
    pub fn flush(&mut self, now: Instant) -> Vec<Event> {
        self.transmit(now);
        let mut out = Vec::new();
        while let Some(e) = self.engine.poll_event() {
            out.push(e);
        }
        out
    }

    pub fn deadline(&self) -> Option<Instant> {
        self.engine.poll_timeout()
    }

    pub fn active(&self, group: &str) -> Option<String> {
        self.engine.active(group).map(str::to_owned)
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

    /// (link, reason, since) of a group's pin.
    pub fn pin_of(&self, group: &str) -> Option<(String, String, Instant)> {
        let (link, reason) = self.engine.pin_of(group)?;
        let at = self.pinned_at.get(group).copied()?;
        Some((link.to_owned(), reason.to_owned(), at))
    }

    pub fn set_drain(&mut self, link: &str, on: bool, now: Instant) {
        self.engine.set_drain(link, on, now);
    }

    pub fn drained(&self, link: &str) -> bool {
        self.engine.drained().any(|l| l == link)
    }

    pub fn health(&self, link: &str) -> Option<Health> {
        self.engine.health(link)
    }

    pub fn report(&self, link: &str) -> Option<(Health, Option<View>, Figures)> {
        self.engine
            .link_report(link)
            .map(|r| (r.own, r.peer, r.figures))
    }

    /// Probe datagrams dropped on a link, by reason (only reasons that happened, as before).
    pub fn probe_drops(&self, link: &str) -> BTreeMap<String, u64> {
        self.engine
            .probe_drops(link)
            .into_iter()
            .filter(|(_, n)| *n > 0)
            .map(|(reason, n)| (reason.as_str().to_owned(), n))
            .collect()
    }
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

/// An engine event as a log entry, with its wall-clock time.
pub fn to_record(e: &Event, now: Instant) -> (EventRecord, SystemTime) {
    let wall = |at: &Instant| SystemTime::now() - now.saturating_duration_since(*at);
    match e {
        Event::HealthChanged {
            link,
            from,
            to,
            figures,
            at,
        } => {
            let mut r = events::record("health_changed", health_reason(*to, figures));
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
            let mut r = events::record("active_link_changed", reason.describe());
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
                "ranking_mismatch",
                format!(
                    "the peer ranks this link {theirs}, this gateway {ours}: the two may choose \
                     different links; list the links in the same order on both gateways"
                ),
            );
            r.link = Some(link.clone());
            (r, wall(at))
        }
    }
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
