//! The loop's side of an HA pair (`[ha]`): the sans-IO [`Ha`] fed with what the store adapter
//! (`crate::ha`) reports and with this gateway's readiness; its requests sent to the adapter;
//! its role gating the writes (a gateway that is not active with a valid lease writes no cloud
//! route table and no DNS record); role changes and store outages as events.

use std::time::Instant;

use isthmus_api::{EventKind, HaMember, HaStatus};
use isthmus_config::Config;
use isthmus_core::ha::{Ha, HaConfig, MemberState, Role};
use isthmus_core::{AnnouncedRole, HaAnnounce};
use isthmus_ha::StoreConfig;

use super::shell::Shell;
use crate::events;
use crate::ha::{HaCmd, HaReport};

/// The pair as the loop holds it.
pub struct Pair {
    pub ha: Ha,
    pub pair: String,
    pub member: String,
    pub priority: u8,
    /// The last role, for its change events.
    role: Role,
    /// `None` while the store answers, else its last error (said once per outage).
    store_error: Option<String>,
    other: Option<(String, MemberState)>,
    /// `netctl drain --gateway`.
    drained: bool,
    /// When another member's hold ended (the watch showed its key gone), for the takeover's
    /// duration.
    free_at: Option<Instant>,
    takeovers: u64,
    last_takeover: Option<std::time::Duration>,
}

/// The store's settings for `config`, if it has `[ha]`.
pub fn store_config(config: &Config) -> Option<StoreConfig> {
    let h = config.ha.as_ref()?;
    Some(StoreConfig {
        endpoints: h.etcd.clone(),
        prefix: format!("/isthmus/ha/{}/", h.pair),
        member: config.agent.name.clone(),
        lease_ttl: h.lease_ttl,
        request_timeout: h.request_timeout,
    })
}

fn core_config(h: &isthmus_config::Ha) -> HaConfig {
    HaConfig {
        priority: h.priority,
        preempt: h.preempt,
        preempt_delay: h.preempt_delay,
        lease_ttl: h.lease_ttl,
        margin: h.margin,
        write_deadline: h.write_deadline,
        // A free role waits this long for a ready gateway of better priority.
        yield_for: h.lease_ttl,
    }
}

fn role_name(r: Role) -> &'static str {
    match r {
        Role::Active { .. } => "active",
        Role::Unsure { .. } => "unsure",
        Role::Standby => "standby",
    }
}

impl Shell {
    /// Starts (or stops, or restarts with new settings) the pair for the running config.
    pub(super) fn configure_ha(&mut self, now: Instant) {
        let config = &self.running.config;
        let wanted = config
            .ha
            .as_ref()
            .map(|h| (h.clone(), config.agent.name.clone()));
        let same = match (&self.pair, &wanted) {
            (Some(p), Some((h, name))) => {
                p.pair == h.pair && p.member == *name && self.ha_settings.as_ref() == Some(h)
            }
            (None, None) => true,
            _ => false,
        };
        if same {
            return;
        }
        let _ = self
            .adapters
            .ha
            .send(HaCmd::Configure(store_config(config)));
        if wanted.is_none() {
            self.failover.set_ha(None);
        }
        self.ha_settings = wanted.as_ref().map(|(h, _)| h.clone());
        self.pair = wanted.map(|(h, member)| Pair {
            ha: Ha::new(&member, core_config(&h), now),
            pair: h.pair.clone(),
            member,
            priority: h.priority,
            role: Role::Standby,
            store_error: None,
            other: None,
            drained: false,
            free_at: None,
            takeovers: 0,
            last_takeover: None,
        });
        self.drive_ha(now);
    }

    pub(super) fn on_ha(&mut self, report: HaReport, now: Instant) {
        let Some(p) = self.pair.as_mut() else {
            return;
        };
        match report {
            HaReport::Reachable(r) => {
                p.ha.on_store_reachable(r.is_ok());
                match (r, p.store_error.is_some()) {
                    (Ok(()), true) => {
                        p.store_error = None;
                        tracing::info!(pair = %p.pair, "the HA lease store answers again");
                        let mut rec = events::record(EventKind::HaStore, "the store answers");
                        rec.to = Some("reachable".into());
                        self.push_event(rec);
                    }
                    (Err(e), false) => {
                        tracing::warn!(pair = %p.pair, error = %e, "the HA lease store does not answer: nobody takes over without it; the active keeps forwarding");
                        let mut rec = events::record(EventKind::HaStore, e.clone());
                        rec.to = Some("unreachable".into());
                        p.store_error = Some(e);
                        self.push_event(rec);
                    }
                    (Err(e), true) => p.store_error = Some(e),
                    (Ok(()), false) => {}
                }
            }
            HaReport::Granted { sent } => p.ha.on_lease_granted(sent),
            HaReport::KeepAliveAcked { sent } => p.ha.on_keepalive_acked(sent),
            HaReport::LeaseLost => p.ha.on_lease_lost(),
            HaReport::Holder(h) => {
                let was_other = p.ha.holder().is_some_and(|o| o.member != p.member);
                if h.is_none() && was_other {
                    p.free_at = Some(now);
                }
                p.ha.on_holder(h, now);
            }
            HaReport::Member(name, state) => {
                p.other = state.map(|s| (name.clone(), s));
                p.ha.on_member(&name, state, now);
            }
            HaReport::Campaign(r) => p.ha.on_campaign(r, now),
            HaReport::ClearedStale => {
                tracing::info!(pair = %p.pair, "cleared the role this gateway held before it restarted: it starts as standby");
            }
        }
        self.drive_ha(now);
    }

    /// `netctl drain --gateway` / `undrain --gateway`: a drained gateway hands the role over
    /// (the other takes it as soon as it is free) and does not take it while drained.
    pub(super) fn drain_gateway(
        &mut self,
        on: bool,
        now: Instant,
    ) -> Result<HaStatus, isthmus_api::ErrorBody> {
        let Some(p) = self.pair.as_mut() else {
            return Err(isthmus_api::ErrorBody::new(
                isthmus_api::ErrorKind::NotFound,
                "this gateway is not one of an HA pair (no [ha] in its config)",
            ));
        };
        p.drained = on;
        p.ha.set_drained(on);
        let mut rec = events::record(
            EventKind::Drain,
            if on {
                "gateway drained: it hands its role over"
            } else {
                "gateway drain ended"
            },
        );
        rec.group = Some(format!("pair {}", p.pair));
        self.push_event(rec);
        self.drive_ha(now);
        Ok(self.ha_status(now).expect("a pair"))
    }

    /// On a clean stop: give the role up (best effort: the adapter has until the links stop)
    /// and write nothing more.
    pub(super) fn resign_ha(&mut self) {
        if let Some(p) = self.pair.as_mut() {
            p.ha.set_drained(true);
            let holds = p.ha.holder().is_some_and(|h| h.member == p.member);
            if holds {
                tracing::info!(pair = %p.pair, "stopping: handing the HA role over");
                let _ = self
                    .adapters
                    .ha
                    .send(HaCmd::Do(isthmus_core::ha::HaAction::Resign));
            }
        }
    }

    /// Readiness in, requests out, and the role's consequences.
    pub(super) fn drive_ha(&mut self, now: Instant) {
        let ready = self.ha_ready();
        let Some(p) = self.pair.as_mut() else {
            return;
        };
        p.ha.set_ready(ready);
        while let Some(a) = p.ha.poll_action(now) {
            let _ = self.adapters.ha.send(HaCmd::Do(a));
        }
        let role = p.ha.role(now);
        let revision = p.ha.holder().map_or(0, |h| h.revision);
        let announced = match role {
            Role::Active { revision } => (AnnouncedRole::Active, revision),
            Role::Unsure { revision } => (AnnouncedRole::Unsure, revision),
            Role::Standby => (AnnouncedRole::Standby, revision),
        };
        self.failover.set_ha(Some(HaAnnounce {
            role: announced.0,
            revision: announced.1,
        }));
        if role != p.role {
            let from = std::mem::replace(&mut p.role, role);
            if matches!(role, Role::Active { .. }) && matches!(from, Role::Standby) {
                p.takeovers += 1;
                p.last_takeover = p.free_at.take().map(|t| now.saturating_duration_since(t));
            }
            let revision = match role {
                Role::Active { revision } | Role::Unsure { revision } => Some(revision),
                Role::Standby => None,
            };
            let why = match (from, role) {
                (_, Role::Active { revision }) => format!("holds the role at revision {revision}"),
                (_, Role::Unsure { .. }) => {
                    "the lease is running out: stopped writing and announcing".to_string()
                }
                (_, Role::Standby) => "does not hold the role".to_string(),
            };
            tracing::info!(pair = %p.pair, from = role_name(from), to = role_name(role), ?revision, "HA role changed");
            let mut rec = events::record(EventKind::HaRole, why);
            rec.group = Some(format!("pair {}", p.pair));
            rec.from = Some(role_name(from).into());
            rec.to = Some(role_name(role).into());
            self.push_event(rec);
            self.reconcile_actions(now);
        } else if self.ha_may_write(now) != self.ha_wrote {
            self.reconcile_actions(now);
        }
    }

    /// This gateway can carry the pair's traffic: every route group has an active link (any
    /// link up, without groups).
    fn ha_ready(&self) -> bool {
        let groups = &self.running.config.route_groups;
        if groups.is_empty() {
            return self.running.config.links.iter().any(|l| {
                self.failover
                    .link_view(&l.name)
                    .is_some_and(|v| v.health == isthmus_core::Health::Up)
            });
        }
        let active = self.active_links();
        groups.iter().all(|g| active.contains_key(&g.name))
    }

    /// Whether cloud route tables and DNS records may be written now: always without `[ha]`.
    pub(super) fn ha_may_write(&self, now: Instant) -> bool {
        self.pair
            .as_ref()
            .is_none_or(|p| p.ha.may_write(now).is_some())
    }

    /// When the pair needs a look without any input.
    pub(super) fn ha_deadline(&self) -> Option<Instant> {
        let now = crate::clock::now();
        self.pair.as_ref().and_then(|p| p.ha.poll_timeout(now))
    }

    pub(super) fn ha_status(&self, now: Instant) -> Option<HaStatus> {
        let p = self.pair.as_ref()?;
        let holder = p.ha.holder();
        Some(HaStatus {
            pair: p.pair.clone(),
            member: p.member.clone(),
            role: role_name(p.ha.role(now)).into(),
            holder: holder.map(|h| h.member.clone()),
            revision: holder.map(|h| h.revision),
            lease_left_ms: p.ha.lease_left(now).as_millis() as u64,
            ready: self.ha_ready(),
            drained: p.drained,
            priority: p.priority,
            store_error: p.store_error.clone(),
            other: p.other.as_ref().map(|(name, s)| HaMember {
                name: name.clone(),
                priority: s.priority,
                ready: s.ready,
                drained: s.drained,
                preempt: s.preempt,
            }),
            takeovers: p.takeovers,
            last_takeover_ms: p.last_takeover.map(|d| d.as_millis() as u64),
        })
    }
}
