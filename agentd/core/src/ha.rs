//! The HA role of one gateway of a cloud's pair, sans-IO: which of the two gateways is active
//! for a route group, elected on a lease held in a strongly consistent store (etcd), on path
//! health rather than liveness, with priority, a preempt delay and drains, and fenced so that
//! two gateways never write the cloud's route tables at once.
//!
//! The store is the shell's: it holds one *holder* key per role, created only if absent and
//! attached to the creator's lease (etcd: a transaction on `create_revision == 0` with a lease;
//! DynamoDB: a conditional put), and each member's published state under a key of its own.
//! This module decides what to ask of the store ([`HaAction`]) from what the store said
//! (`on_*`), and tells the shell what it may do ([`Ha::role`], [`Ha::may_write`]).
//!
//! - **Election.** A member campaigns when nobody holds the role, it is *ready* (some link to
//!   the remote side carries traffic and the checks pass: the shell decides) and not drained,
//!   and no ready member of better priority (lower number) is there to take it; that one gets
//!   [`HaConfig::yield_for`] to do so first. The store decides between simultaneous
//!   campaigns.
//! - **Giving up.** The holder resigns when it stops being ready or is drained, and, with
//!   `preempt`, when a member of better priority has been ready for `preempt_delay`. A
//!   restarted gateway is standby until it wins the role: nothing of its role is persisted.
//!   Preemption is the better member's setting, published with its state: the holder honours
//!   it after `preempt_delay`.
//! - **Fencing.** The lease fences the role and the writes, not the forwarding. The lease is
//!   valid until the send time of the last acknowledged keepalive plus its TTL (the store
//!   renewed it after that moment, so it expires there later than here). Below
//!   [`HaConfig::margin`] of validity, the holder stops writing and stops announcing itself
//!   (the role is [`Role::Unsure`]) but keeps forwarding what reaches it. Every write has a
//!   deadline ([`Ha::may_write`]) that ends before that point. A new holder waits out the
//!   margin plus the write deadline before its first write, so that a write of the old holder
//!   abandoned at its deadline but still applied by the cloud lands first.
//! - **Store unreachable.** Nobody can win without the store, so nobody takes over: the holder
//!   keeps forwarding and the route tables stay (fail static), and it stops writing once its
//!   lease runs out here. A gateway cannot tell "the store is down" from "I am cut off": both
//!   are safe for the same reason.

use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HaConfig {
    /// Lower is preferred, as for links.
    pub priority: u8,
    /// Take the role back from a member of worse priority once ready for `preempt_delay`
    /// (published, so that the holder hands over; both members should use the same delay).
    pub preempt: bool,
    pub preempt_delay: Duration,
    /// The lease's TTL as granted by the store.
    pub lease_ttl: Duration,
    /// Below this much lease validity, stop writing and announcing.
    pub margin: Duration,
    /// The longest a cloud write may take.
    pub write_deadline: Duration,
    /// How long a ready member of better priority gets to take a free role first.
    pub yield_for: Duration,
}

impl HaConfig {
    /// Keepalives go out every third of the TTL.
    pub fn keepalive_interval(&self) -> Duration {
        self.lease_ttl / 3
    }
}

/// What this member publishes of itself, and reads of the other.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemberState {
    pub priority: u8,
    /// The member takes the role back from a worse one ([`HaConfig::preempt`]): the holder
    /// honours it.
    pub preempt: bool,
    pub ready: bool,
    pub drained: bool,
}

impl MemberState {
    fn eligible(&self) -> bool {
        self.ready && !self.drained
    }
}

/// Who holds the role, as the store says: the member and the revision its holder key was
/// created at (a fencing token, announced to the remote gateways).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holder {
    pub member: String,
    pub revision: i64,
}

/// What this member asks of the store. Each is answered by the matching `on_*`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HaAction {
    /// Create the holder key with our lease, only if absent ([`Ha::on_campaign`]).
    Campaign,
    /// Delete our holder key ([`Ha::on_holder`] follows from the watch).
    Resign,
    /// Renew the lease ([`Ha::on_keepalive_acked`] with the send time).
    KeepAlive,
    /// Write our member state.
    Publish(MemberState),
}

/// This member's role.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Standby,
    /// Holds the role with a valid lease: forwards, announces, writes (after the new
    /// holder's wait).
    Active {
        revision: i64,
    },
    /// Holds the role as far as it knows, but its lease may be running out (no keepalive
    /// acknowledged lately): forwards what reaches it, neither writes nor announces.
    Unsure {
        revision: i64,
    },
}

#[derive(Debug, Clone)]
pub struct Ha {
    me: String,
    config: HaConfig,
    state: MemberState,
    published: Option<MemberState>,
    /// The other member's published state, and since when it is eligible with a better
    /// priority than ours.
    other: Option<(String, MemberState)>,
    /// Whether the other member's state was ever heard (at start, a member waits a while for
    /// it before taking a free role, so that the better one gets it).
    heard_other: bool,
    better_since: Option<Instant>,
    holder: Option<Holder>,
    /// When the role became free (for the yield to a better member).
    free_since: Option<Instant>,
    store_reachable: bool,
    campaigning: bool,
    resigning: bool,
    /// Our lease: valid until this instant as far as this member knows.
    valid_until: Option<Instant>,
    next_keepalive: Instant,
    keepalive_in_flight: bool,
    /// When we last won the role (the first write waits after it).
    won_at: Option<Instant>,
}

impl Ha {
    pub fn new(me: &str, config: HaConfig, now: Instant) -> Ha {
        Ha {
            me: me.to_owned(),
            config,
            state: MemberState {
                priority: config.priority,
                preempt: config.preempt,
                ready: false,
                drained: false,
            },
            published: None,
            other: None,
            heard_other: false,
            better_since: None,
            holder: None,
            free_since: None,
            store_reachable: false,
            campaigning: false,
            resigning: false,
            valid_until: None,
            next_keepalive: now,
            keepalive_in_flight: false,
            won_at: None,
        }
    }

    /// Whether this gateway can carry the role's traffic: some link to the remote side carries
    /// and the service checks pass (the shell decides).
    pub fn set_ready(&mut self, ready: bool) {
        self.state.ready = ready;
    }

    /// `netctl drain --gateway`.
    pub fn set_drained(&mut self, drained: bool) {
        self.state.drained = drained;
    }

    /// The store answered (or failed to): a keepalive, a watch, a campaign.
    pub fn on_store_reachable(&mut self, reachable: bool) {
        self.store_reachable = reachable;
        if !reachable {
            self.campaigning = false;
            self.resigning = false;
            self.keepalive_in_flight = false;
        }
    }

    /// A lease was granted (or re-granted after it expired), valid for the TTL from `sent`,
    /// when the grant was asked for.
    pub fn on_lease_granted(&mut self, sent: Instant) {
        self.valid_until = Some(sent + self.config.lease_ttl);
        self.next_keepalive = sent + self.config.keepalive_interval();
    }

    /// A keepalive sent at `sent` was acknowledged: the lease is valid for a TTL from then.
    pub fn on_keepalive_acked(&mut self, sent: Instant) {
        self.keepalive_in_flight = false;
        let until = sent + self.config.lease_ttl;
        if self.valid_until.is_none_or(|v| until > v) {
            self.valid_until = Some(until);
        }
    }

    /// The store says our lease is gone (expired or revoked): our holder key went with it.
    pub fn on_lease_lost(&mut self) {
        self.valid_until = None;
        // Our published state went with the lease: publish it again on the new one.
        self.published = None;
        self.keepalive_in_flight = false;
        if self.holds() {
            self.holder = None;
        }
        self.won_at = None;
    }

    /// The holder key as the store's watch shows it.
    pub fn on_holder(&mut self, holder: Option<Holder>, now: Instant) {
        if holder.is_none() && self.holder.is_some() {
            self.free_since = Some(now);
        }
        if holder.is_none() && self.free_since.is_none() {
            self.free_since = Some(now);
        }
        let was_ours = self.holds();
        self.holder = holder;
        if self.holder.is_some() {
            self.free_since = None;
        }
        if was_ours && !self.holds() {
            self.won_at = None;
        }
        // A campaign whose answer was lost (its request timed out after the store applied it)
        // is learned here: the win counts from now, so the first write still waits.
        if !was_ours && self.holds() && self.won_at.is_none() {
            self.won_at = Some(now);
        }
        if !self.holds() {
            self.resigning = false;
        }
    }

    /// The answer to [`HaAction::Campaign`]: won at `revision`, or lost to the holder the
    /// store has (its transaction returns it).
    pub fn on_campaign(&mut self, result: Result<i64, Holder>, now: Instant) {
        self.campaigning = false;
        match result {
            Ok(revision) => {
                self.holder = Some(Holder {
                    member: self.me.clone(),
                    revision,
                });
                self.won_at = Some(now);
            }
            Err(holder) => self.holder = Some(holder),
        }
        self.free_since = None;
    }

    /// The other member's published state (`None`: it has none: its lease expired).
    pub fn on_member(&mut self, name: &str, state: Option<MemberState>, now: Instant) {
        self.heard_other = true;
        self.other = state.map(|s| (name.to_owned(), s));
        let better = self
            .other
            .as_ref()
            .is_some_and(|(_, s)| s.eligible() && s.preempt && s.priority < self.config.priority);
        match (better, self.better_since) {
            (true, None) => self.better_since = Some(now),
            (false, _) => self.better_since = None,
            _ => {}
        }
    }

    /// The next request for the store, if one is due. Call until `None`.
    pub fn poll_action(&mut self, now: Instant) -> Option<HaAction> {
        if self.published != Some(self.state) {
            self.published = Some(self.state);
            return Some(HaAction::Publish(self.state));
        }
        if !self.store_reachable {
            return None;
        }
        if self.valid_until.is_some() && !self.keepalive_in_flight && now >= self.next_keepalive {
            self.keepalive_in_flight = true;
            self.next_keepalive = now + self.config.keepalive_interval();
            return Some(HaAction::KeepAlive);
        }
        if self.holds() {
            if !self.resigning && self.should_resign(now) {
                self.resigning = true;
                return Some(HaAction::Resign);
            }
            return None;
        }
        if self.holder.is_none()
            && !self.campaigning
            && self
                .valid_until
                .is_some_and(|v| v > now + self.config.margin)
            && self.state.eligible()
            && !self.yields(now)
        {
            self.campaigning = true;
            return Some(HaAction::Campaign);
        }
        None
    }

    /// When to call [`Self::poll_action`] again (without any other input): the earliest
    /// moment after `now` something is due (what was due by `now` was done by the call at
    /// `now`; an instant in the past would wake the caller at once, again and again).
    pub fn poll_timeout(&self, now: Instant) -> Option<Instant> {
        let keepalive = self.valid_until.map(|_| self.next_keepalive);
        let preempt = self
            .better_since
            .filter(|_| self.holds())
            .map(|t| t + self.config.preempt_delay);
        let yield_end = self
            .free_since
            .filter(|_| self.holder.is_none())
            .map(|t| t + self.config.yield_for);
        // The role turns unsure at the margin, and a new holder may write after its wait.
        let unsure = self
            .valid_until
            .filter(|_| self.holds())
            .and_then(|v| v.checked_sub(self.config.margin));
        let first_write = self.won_at.map(|w| w + self.first_write_wait());
        [keepalive, preempt, yield_end, unsure, first_write]
            .into_iter()
            .flatten()
            .filter(|t| *t > now)
            .min()
    }

    pub fn role(&self, now: Instant) -> Role {
        match &self.holder {
            Some(h) if h.member == self.me => {
                if self.lease_left(now) > self.config.margin {
                    Role::Active {
                        revision: h.revision,
                    }
                } else {
                    Role::Unsure {
                        revision: h.revision,
                    }
                }
            }
            _ => Role::Standby,
        }
    }

    /// Whether a cloud write may start now, and its deadline: only while active, after a new
    /// holder's wait, and ending before the lease's margin.
    pub fn may_write(&self, now: Instant) -> Option<Instant> {
        let Role::Active { .. } = self.role(now) else {
            return None;
        };
        let won = self.won_at?;
        if now < won + self.first_write_wait() {
            return None;
        }
        let end = self.valid_until?.checked_sub(self.config.margin)?;
        let deadline = (now + self.config.write_deadline).min(end);
        (deadline > now).then_some(deadline)
    }

    /// The holder as last seen.
    pub fn holder(&self) -> Option<&Holder> {
        self.holder.as_ref()
    }

    /// Lease validity left here (zero without a lease).
    pub fn lease_left(&self, now: Instant) -> Duration {
        self.valid_until
            .map_or(Duration::ZERO, |v| v.saturating_duration_since(now))
    }

    fn first_write_wait(&self) -> Duration {
        self.config.margin + self.config.write_deadline
    }

    fn holds(&self) -> bool {
        self.holder.as_ref().is_some_and(|h| h.member == self.me)
    }

    fn should_resign(&self, now: Instant) -> bool {
        if !self.state.eligible() {
            return true;
        }
        self.better_since
            .is_some_and(|t| now >= t + self.config.preempt_delay)
    }

    /// A free role: let an eligible member of better priority take it first, for a while (and
    /// at start, before the other member was heard, wait as long for it).
    fn yields(&self, now: Instant) -> bool {
        let better = !self.heard_other
            || self
                .other
                .as_ref()
                .is_some_and(|(_, s)| s.eligible() && s.priority < self.config.priority);
        better
            && self
                .free_since
                .is_none_or(|t| now < t + self.config.yield_for)
    }
}
