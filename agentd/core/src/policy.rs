//! One route group's choice of active link.
//!
//! The active link is the usable link with the best (class, priority), where the class is:
//! 0 up (or degraded, when the group fails over only on `down`), 1 degraded, 2 usable only as a
//! last resort (suppressed by flap damping, or drained), 3 unusable (down, unknown). So the last
//! usable link is never left for damping or a drain: it is taken when nothing better exists.
//!
//! - A pin wins over health until released.
//! - Leaving an unusable active link happens at once, whatever timers run.
//! - Leaving a degraded active link for a better class is elective: at most one elective switch
//!   per `hold_down`.
//! - Moving back to a better-priority link of the same class (failback) needs `preempt`, the
//!   hold-down, and that link being continuously better for `failback_after`.
//! - No usable link: no active link (the routes fail closed).
//! - A warm restart ([`GroupState::restored`]): the link that was active before the restart is
//!   taken as soon as it is usable, without waiting for the other links' first verdicts, unless
//!   a usable link ranks in a better class; from then on the group runs as if it had never
//!   stopped (no start-up settling, so a failback still waits `failback_after`).
//!
//! Service checks: a usable link whose checks fail (at either gateway) ranks at least as
//! degraded (class 1), whatever `failover_on_degraded` says: the probes did not fail, the
//! service did, so the group leaves it for a link whose checks pass, as an elective switch.
//! When the checks fail over every usable link, the fault is behind the tunnels: the checks
//! are ignored for ranking (the group never fails closed because of them) and
//! [`GroupState::checks_failing_everywhere`] says so. The verdicts over different links arrive
//! apart (each link's check runs on its own schedule; the peer's verdicts come in the next
//! probe on each link), so a fault behind the tunnels fails the checks over one link moments
//! before the other, and recovers the same way: a switch for the checks alone waits until the
//! checks have failed over the active link, while passing over the better one, for
//! `checks_confirm`.

use std::time::{Duration, Instant};

use crate::health::Health;

#[derive(Debug, Clone, PartialEq)]
pub struct GroupPolicy {
    /// Links in order of preference.
    pub links: Vec<String>,
    /// Leave a degraded active link (true) or only a down one (false).
    pub failover_on_degraded: bool,
    pub preempt: bool,
    pub failback_after: Duration,
    pub hold_down: Duration,
    /// How long the checks must fail over the active link while passing over a better one
    /// before the group leaves it for them: longer than the verdicts over two links can be
    /// apart (see the module's doc).
    pub checks_confirm: Duration,
}

/// What the policy knows about one link.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Candidate {
    /// The agreed health (worse of both ends), before damping.
    pub health: Health,
    /// Damped by either end.
    pub damped: bool,
    /// Drained by either end.
    pub drained: bool,
    /// The service checks over this link fail (at either end).
    pub checks_failing: bool,
}

/// Why the active link changes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Choice {
    Stay,
    Switch { to: Option<String>, why: Why },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Why {
    /// The first usable link after start-up or after none was.
    FirstUsable,
    /// The active link is down (or unknown, or damped/drained with a better link usable).
    ActiveUnusable,
    /// The active link is degraded and a better one is up.
    ActiveDegraded,
    /// The service checks fail over the active link and pass over a usable one.
    ChecksFailing,
    /// A preferred link has been healthy long enough.
    Failback,
    /// An operator's pin (here or at the peer).
    Pinned,
    /// A warm restart: the link active before it is usable again.
    Restored,
    /// No usable link is left.
    NoUsableLink,
}

#[derive(Debug, Clone, Default)]
pub struct GroupState {
    pub active: Option<String>,
    pub last_elective: Option<Instant>,
    /// The link that is better than the active one, and since when (for failback).
    better: Option<(String, Instant)>,
    /// The link that only the service checks make better than the active one, and since when.
    checks_better: Option<(String, Instant)>,
    /// A pin was just released: the next failback need not wait.
    pub released: bool,
    /// A pin (here or at the peer) held the group at the last decision.
    pinned: bool,
    /// Until then, a group without an active link waits for every link's first verdict, and a
    /// group that just got its first usable link moves to a preferred one without the failback
    /// wait, so that start-up (or the end of a total outage) picks the preferred link rather
    /// than the first to answer.
    pub settle_until: Option<Instant>,
    /// The service checks fail over every usable link, so they were ignored for ranking. While
    /// no link is usable, this keeps its value as long as some link's checks still fail.
    pub checks_failing_everywhere: bool,
    /// After a restart, the link that was active before it: taken as soon as it is usable (see
    /// the module's doc). Forgotten once the group has an active link, or when the start-up
    /// settling ends without it.
    pub restored: Option<String>,
}

impl GroupPolicy {
    /// The class of a candidate, counting its service checks or not.
    fn class(&self, c: &Candidate, checks: bool) -> u8 {
        let base = match c.health {
            Health::Up => 0,
            Health::Degraded if !self.failover_on_degraded => 0,
            Health::Degraded => 1,
            _ => return 3,
        };
        let base = if checks && c.checks_failing {
            base.max(1)
        } else {
            base
        };
        if c.damped || c.drained {
            2
        } else {
            base
        }
    }

    /// Decide for `state` given each link's candidate (by the index in `links`) and a pin.
    pub fn choose(
        &self,
        state: &mut GroupState,
        candidates: &[Candidate],
        pin: Option<&str>,
        now: Instant,
    ) -> Choice {
        let candidates = &candidates[..self.links.len().min(candidates.len())];
        let usable: Vec<&Candidate> = candidates
            .iter()
            .filter(|c| self.class(c, false) < 3)
            .collect();
        state.checks_failing_everywhere = if usable.is_empty() {
            state.checks_failing_everywhere && candidates.iter().any(|c| c.checks_failing)
        } else {
            usable.iter().all(|c| c.checks_failing)
        };
        let checks = !state.checks_failing_everywhere;
        let pin = pin.filter(|p| self.links.iter().any(|l| l == p));
        if pin.is_none() && std::mem::take(&mut state.pinned) {
            // Whoever released the pin asks for the automatic choice now.
            state.released = true;
        }
        if let Some(pin) = pin {
            state.pinned = true;
            state.better = None;
            if state.active.as_deref() != Some(pin) {
                return self.switch(state, Some(pin.to_owned()), Why::Pinned, now, false);
            }
            return Choice::Stay;
        }
        let rank = |i: usize| (self.class(&candidates[i], checks), i);
        let best = (0..candidates.len())
            .filter(|&i| rank(i).0 < 3)
            .min_by_key(|&i| rank(i));
        let active = state
            .active
            .as_ref()
            .and_then(|a| self.links.iter().position(|l| l == a));
        let released = std::mem::take(&mut state.released);
        if state.settle_until.is_some_and(|t| now >= t) {
            state.settle_until = None;
        }
        // Right after start-up (or a total outage) links come back within moments of each
        // other: until the settling ends, the preferred one is taken without a failback wait.
        let settling = state.settle_until.is_some();
        if active.is_none() {
            if let Some(r) = state.restored.take() {
                let ri = self
                    .links
                    .iter()
                    .position(|l| *l == r)
                    .filter(|&i| i < candidates.len());
                match (ri, best) {
                    // `best` ranks lowest: the restored link is in the best usable class.
                    (Some(ri), Some(b)) if rank(ri).0 == rank(b).0 => {
                        state.settle_until = None;
                        return self.switch(state, Some(r), Why::Restored, now, false);
                    }
                    // Not usable yet (or worse than another): it may still answer first.
                    (Some(_), _) if settling => state.restored = Some(r),
                    _ => {}
                }
            }
        }
        match (active, best) {
            (None, None) => Choice::Stay,
            // Start-up: wait for every link's first verdict (or the end of settling).
            (None, Some(_))
                if settling && candidates.iter().any(|c| c.health == Health::Unknown) =>
            {
                Choice::Stay
            }
            (None, Some(b)) => self.switch(
                state,
                Some(self.links[b].clone()),
                Why::FirstUsable,
                now,
                false,
            ),
            (Some(_), None) => self.switch(state, None, Why::NoUsableLink, now, false),
            (Some(a), Some(b)) => {
                let (ca, cb) = (rank(a).0, rank(b).0);
                // Only while the checks alone make `b` better does its confirmation run on.
                let checks_only = cb < ca && self.class(&candidates[a], false) < ca;
                if !checks_only {
                    state.checks_better = None;
                }
                if a == b {
                    state.better = None;
                    return Choice::Stay;
                }
                if ca >= 2 && cb < ca {
                    // Unusable, or damped/drained while a clean link exists: leave at once.
                    return self.switch(
                        state,
                        Some(self.links[b].clone()),
                        Why::ActiveUnusable,
                        now,
                        false,
                    );
                }
                let held = state
                    .last_elective
                    .is_some_and(|t| now.saturating_duration_since(t) < self.hold_down);
                if cb < ca {
                    // A better class: leave the degraded link, one elective switch per hold-down.
                    if held {
                        return Choice::Stay;
                    }
                    // The checks, not the probes, made the active link worse.
                    let why = if self.class(&candidates[a], false) < ca {
                        Why::ChecksFailing
                    } else {
                        Why::ActiveDegraded
                    };
                    if why == Why::ChecksFailing {
                        let since = match &state.checks_better {
                            Some((l, t)) if *l == self.links[b] => *t,
                            _ => {
                                state.checks_better = Some((self.links[b].clone(), now));
                                now
                            }
                        };
                        if now.saturating_duration_since(since) < self.checks_confirm {
                            return Choice::Stay;
                        }
                    }
                    return self.switch(state, Some(self.links[b].clone()), why, now, true);
                }
                // Same class, better priority: failback.
                if (!self.preempt && !released && !settling) || rank(b) >= rank(a) {
                    state.better = None;
                    return Choice::Stay;
                }
                let since = match &state.better {
                    Some((l, t)) if *l == self.links[b] => *t,
                    _ => {
                        state.better = Some((self.links[b].clone(), now));
                        now
                    }
                };
                if released
                    || settling
                    || (now.saturating_duration_since(since) >= self.failback_after && !held)
                {
                    return self.switch(
                        state,
                        Some(self.links[b].clone()),
                        Why::Failback,
                        now,
                        true,
                    );
                }
                Choice::Stay
            }
        }
    }

    fn switch(
        &self,
        state: &mut GroupState,
        to: Option<String>,
        why: Why,
        now: Instant,
        elective: bool,
    ) -> Choice {
        state.active = to.clone();
        state.better = None;
        state.checks_better = None;
        state.restored = None;
        if elective {
            state.last_elective = Some(now);
        }
        Choice::Switch { to, why }
    }

    /// When the failback timer or the start-up settling of `state` expires, if one runs.
    pub fn deadline(&self, state: &GroupState) -> Option<Instant> {
        let fb = state.better.as_ref().map(|(_, t)| *t + self.failback_after);
        let hd = state.last_elective.map(|t| t + self.hold_down);
        let timer = match (fb, hd) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, _) => a,
        };
        // A confirmed switch for the checks still waits for the hold-down.
        let confirm = state.checks_better.as_ref().map(|(_, t)| {
            let c = *t + self.checks_confirm;
            hd.map_or(c, |h| c.max(h))
        });
        let timer = match (timer, confirm) {
            (Some(a), Some(c)) => Some(a.min(c)),
            (a, c) => a.or(c),
        };
        let settle = state.settle_until.filter(|_| state.active.is_none());
        match (timer, settle) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }
}
