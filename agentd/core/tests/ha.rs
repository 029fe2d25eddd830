//! The HA role of a pair of gateways on a simulated store (the etcd semantics the shell gives
//! it: leases that expire at the store a TTL after their last renewal, a holder key created
//! only if absent and deleted with its lease, watches) with a simulated clock. Every test
//! checks, at every millisecond, that two members never announce themselves active at once
//! and that no write of one member starts before the deadline of the other's last write.
// The simulated clock starts at a real instant; nothing here reads the clock after that.
#![allow(clippy::disallowed_methods)]
// Members are indices into several arrays at once.
#![allow(clippy::needless_range_loop)]

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use isthmus_core::ha::{Ha, HaAction, HaConfig, Holder, MemberState, Role};

const NAMES: [&str; 2] = ["aws-gw-a", "aws-gw-b"];

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn config(priority: u8) -> HaConfig {
    HaConfig {
        priority,
        preempt: true,
        preempt_delay: ms(3000),
        lease_ttl: ms(2000),
        margin: ms(300),
        write_deadline: ms(400),
        yield_for: ms(500),
    }
}

/// What a member asked, in flight to the store: (member, action, sent).
type Request = (usize, HaAction, Instant);

struct Store {
    /// Per member: its lease's expiry at the store (`None`: no lease).
    leases: [Option<Instant>; 2],
    holder: Option<(usize, i64)>,
    revision: i64,
    members: [Option<MemberState>; 2],
}

struct Sim {
    t0: Instant,
    now: Instant,
    ha: [Ha; 2],
    store: Store,
    /// One-way delay between a member and the store.
    delay: Duration,
    /// The member runs (a killed one does nothing at all).
    alive: [bool; 2],
    /// The member reaches the store.
    reaches_store: [bool; 2],
    /// The store runs.
    store_up: bool,
    requests: VecDeque<(Instant, Request)>,
    /// Answers and watch events on their way to members: (at, member, what).
    answers: VecDeque<(Instant, usize, Answer)>,
    /// Per member: the deadline of its last write.
    last_write_deadline: [Option<Instant>; 2],
    writes: [u32; 2],
    next_write: [Instant; 2],
    /// (time since t0, member) at each change of the announced holder.
    active_log: Vec<(Duration, Option<usize>)>,
    /// Per member: the answer to its campaign is lost (the shell's request timed out after
    /// the store applied it), so it learns the outcome from the watch alone.
    lose_campaign_answer: [bool; 2],
}

#[derive(Debug, Clone)]
enum Answer {
    Granted(Instant),
    KeepAliveAcked(Instant),
    LeaseLost,
    Campaign(Result<i64, Holder>),
    Holder(Option<Holder>),
    Member(Option<MemberState>),
}

impl Sim {
    fn new(priorities: [u8; 2]) -> Sim {
        let t0 = Instant::now();
        let mut sim = Sim {
            t0,
            now: t0,
            ha: [
                Ha::new(NAMES[0], config(priorities[0]), t0),
                Ha::new(NAMES[1], config(priorities[1]), t0),
            ],
            store: Store {
                leases: [None; 2],
                holder: None,
                revision: 100,
                members: [None; 2],
            },
            delay: ms(3),
            alive: [true; 2],
            reaches_store: [true; 2],
            store_up: true,
            requests: VecDeque::new(),
            answers: VecDeque::new(),
            last_write_deadline: [None; 2],
            writes: [0; 2],
            next_write: [t0; 2],
            active_log: Vec::new(),
            lose_campaign_answer: [false; 2],
        };
        for m in 0..2 {
            sim.ha[m].set_ready(true);
            sim.ha[m].on_store_reachable(true);
            sim.ha[m].on_holder(None, t0);
            sim.grant(m);
        }
        sim
    }

    /// The shell asks for a lease at start and whenever its lease is lost.
    fn grant(&mut self, m: usize) {
        self.requests
            .push_back((self.now + self.delay, (m, HaAction::KeepAlive, self.now)));
        // A grant is a keepalive of a lease not yet there: see `serve`.
        self.store.leases[m] = self.store.leases[m].or(Some(self.now));
    }

    fn at(&self) -> Duration {
        self.now.saturating_duration_since(self.t0)
    }

    fn watchers(&mut self, what: Answer) {
        for m in 0..2 {
            self.answers
                .push_back((self.now + self.delay, m, what.clone()));
        }
    }

    fn holder_of(&self) -> Option<Holder> {
        self.store.holder.map(|(m, revision)| Holder {
            member: NAMES[m].to_owned(),
            revision,
        })
    }

    /// The store handles a request that reached it.
    fn serve(&mut self, (m, action, sent): Request) {
        if !self.store_up || !self.reaches_store[m] {
            return;
        }
        let ttl = config(0).lease_ttl;
        match action {
            HaAction::KeepAlive => match self.store.leases[m] {
                Some(exp) if exp >= self.now => {
                    self.store.leases[m] = Some(self.now + ttl);
                    self.answers.push_back((
                        self.now + self.delay,
                        m,
                        Answer::KeepAliveAcked(sent),
                    ));
                }
                _ => {
                    // Expired: the shell is told and asks for a new lease, granted at once.
                    self.store.leases[m] = Some(self.now + ttl);
                    self.answers
                        .push_back((self.now + self.delay, m, Answer::LeaseLost));
                    self.answers
                        .push_back((self.now + self.delay, m, Answer::Granted(sent)));
                }
            },
            HaAction::Campaign => {
                let won = match self.holder_of() {
                    None => {
                        self.store.revision += 1;
                        self.store.holder = Some((m, self.store.revision));
                        let h = self.holder_of();
                        self.watchers(Answer::Holder(h));
                        Ok(self.store.revision)
                    }
                    Some(h) => Err(h),
                };
                self.answers
                    .push_back((self.now + self.delay, m, Answer::Campaign(won)));
            }
            HaAction::Resign => {
                if self.store.holder.is_some_and(|(h, _)| h == m) {
                    self.store.holder = None;
                    self.watchers(Answer::Holder(None));
                }
            }
            HaAction::Publish(state) => {
                self.store.members[m] = Some(state);
                self.answers
                    .push_back((self.now + self.delay, 1 - m, Answer::Member(Some(state))));
            }
        }
    }

    /// Leases that ran out at the store take their keys with them.
    fn expire(&mut self) {
        for m in 0..2 {
            if self.store.leases[m].is_some_and(|e| e < self.now) {
                self.store.leases[m] = None;
                if self.store.holder.is_some_and(|(h, _)| h == m) {
                    self.store.holder = None;
                    self.watchers(Answer::Holder(None));
                }
                if self.store.members[m].take().is_some() {
                    self.answers
                        .push_back((self.now + self.delay, 1 - m, Answer::Member(None)));
                }
            }
        }
    }

    fn deliver(&mut self, m: usize, a: Answer) {
        if !self.alive[m] || !self.reaches_store[m] || !self.store_up {
            return;
        }
        let now = self.now;
        let ha = &mut self.ha[m];
        if matches!(a, Answer::Campaign(_)) && self.lose_campaign_answer[m] {
            // The shell's request timed out: the store seemed unreachable for a moment.
            ha.on_store_reachable(false);
            return;
        }
        ha.on_store_reachable(true);
        match a {
            Answer::Granted(sent) => ha.on_lease_granted(sent),
            Answer::KeepAliveAcked(sent) => ha.on_keepalive_acked(sent),
            Answer::LeaseLost => ha.on_lease_lost(),
            Answer::Campaign(won) => ha.on_campaign(won, now),
            Answer::Holder(h) => ha.on_holder(h, now),
            Answer::Member(s) => ha.on_member(NAMES[1 - m], s, now),
        }
    }

    fn step(&mut self) {
        self.now += ms(1);
        self.expire();
        while self.requests.front().is_some_and(|(t, _)| *t <= self.now) {
            if let Some((_, r)) = self.requests.pop_front() {
                self.serve(r);
            }
        }
        while self.answers.front().is_some_and(|(t, _, _)| *t <= self.now) {
            if let Some((_, m, a)) = self.answers.pop_front() {
                self.deliver(m, a);
            }
        }
        for m in 0..2 {
            if !self.alive[m] {
                continue;
            }
            // The shell's connection to the store fails and comes back.
            let reachable = self.reaches_store[m] && self.store_up;
            self.ha[m].on_store_reachable(reachable);
            while let Some(a) = self.ha[m].poll_action(self.now) {
                if reachable {
                    self.requests
                        .push_back((self.now + self.delay, (m, a, self.now)));
                }
            }
            // The shell calls again when asked to, never for an instant already past.
            let wake = self.ha[m].poll_timeout(self.now);
            assert!(
                wake.is_none_or(|t| t > self.now),
                "{:?}: {} asks to be woken in the past",
                self.at(),
                NAMES[m]
            );
            // The shell writes the route table every 100 ms while it may.
            if self.now >= self.next_write[m] {
                if let Some(deadline) = self.ha[m].may_write(self.now) {
                    let other = 1 - m;
                    if let Some(d) = self.last_write_deadline[other] {
                        assert!(
                            self.now >= d,
                            "{:?}: {} writes while {}'s write may still land (until {:?})",
                            self.at(),
                            NAMES[m],
                            NAMES[other],
                            d.saturating_duration_since(self.t0)
                        );
                    }
                    self.last_write_deadline[m] = Some(deadline);
                    self.writes[m] += 1;
                    self.next_write[m] = self.now + ms(100);
                }
            }
        }
        let active: Vec<usize> = (0..2)
            .filter(|&m| self.alive[m] && matches!(self.ha[m].role(self.now), Role::Active { .. }))
            .collect();
        assert!(active.len() <= 1, "{:?}: two actives", self.at());
        let now_active = active.first().copied();
        if self.active_log.last().map(|(_, a)| *a) != Some(now_active) {
            self.active_log.push((self.at(), now_active));
        }
    }

    fn run_for(&mut self, d: Duration) {
        let end = self.now + d;
        while self.now < end {
            self.step();
        }
    }

    fn active(&self) -> Option<usize> {
        self.active_log.last().and_then(|(_, a)| *a)
    }

    /// A member dies (kill -9, power loss): nothing more from it; its lease runs out.
    fn kill(&mut self, m: usize) {
        self.alive[m] = false;
    }

    /// When the announced holder last became `m`, since t0.
    fn became_active(&self, m: usize) -> Option<Duration> {
        self.active_log
            .iter()
            .rev()
            .find(|(_, a)| *a == Some(m))
            .map(|(t, _)| *t)
    }
}

#[test]
fn the_better_priority_takes_the_role_and_the_other_stays_standby() {
    let mut sim = Sim::new([1, 0]);
    sim.run_for(ms(2000));
    assert_eq!(sim.active(), Some(1));
    assert_eq!(sim.ha[0].role(sim.now), Role::Standby);
    assert!(sim.writes[1] > 0 && sim.writes[0] == 0);
    // Once active, it wrote only after the new holder's wait (margin + deadline).
    let became = sim.became_active(1).expect("active");
    assert!(became < ms(700), "active at {became:?}");
}

#[test]
fn a_killed_active_is_replaced_after_its_lease_runs_out_at_the_store() {
    let mut sim = Sim::new([0, 1]);
    sim.run_for(ms(3000));
    assert_eq!(sim.active(), Some(0));
    let killed = sim.at();
    sim.kill(0);
    sim.run_for(ms(5000));
    assert_eq!(sim.active(), Some(1));
    let took = sim.became_active(1).expect("b active") - killed;
    // At most the TTL (the store renewed it just before the kill) plus a round trip.
    assert!(took <= ms(2100), "took over after {took:?}");
    assert!(took >= ms(1200), "too early: {took:?}");
    assert!(sim.writes[1] > 0);
}

#[test]
fn an_active_that_loses_its_paths_hands_over_at_once() {
    let mut sim = Sim::new([0, 1]);
    sim.run_for(ms(3000));
    let lost = sim.at();
    sim.ha[0].set_ready(false);
    sim.run_for(ms(1500));
    assert_eq!(sim.active(), Some(1));
    let took = sim.became_active(1).expect("b") - lost;
    assert!(took <= ms(100), "took {took:?}");
    // Not ready, it does not take the role back even though its priority is better.
    sim.run_for(ms(10_000));
    assert_eq!(sim.active(), Some(1));
}

#[test]
fn an_active_cut_off_from_the_store_steps_down_before_the_standby_takes_over() {
    let mut sim = Sim::new([0, 1]);
    sim.run_for(ms(3000));
    assert_eq!(sim.active(), Some(0));
    sim.reaches_store[0] = false;
    // The invariants (one active, writes fenced) are checked at every step.
    sim.run_for(ms(5000));
    assert_eq!(sim.active(), Some(1));
    assert!(matches!(sim.ha[0].role(sim.now), Role::Unsure { .. }));
    assert!(sim.ha[0].may_write(sim.now).is_none());
    // Back in touch: it learns it lost, stays standby until preempt after its delay.
    sim.reaches_store[0] = true;
    sim.run_for(ms(1000));
    assert_eq!(sim.active(), Some(1));
    sim.run_for(ms(4000));
    assert_eq!(sim.active(), Some(0), "preempted back after the delay");
}

#[test]
fn with_the_store_down_nobody_takes_over_and_the_active_stops_writing() {
    let mut sim = Sim::new([0, 1]);
    sim.run_for(ms(3000));
    sim.store_up = false;
    sim.run_for(ms(6000));
    assert_eq!(sim.active(), None);
    assert!(matches!(sim.ha[0].role(sim.now), Role::Unsure { .. }));
    assert_eq!(sim.ha[1].role(sim.now), Role::Standby);
    let writes = sim.writes;
    sim.run_for(ms(2000));
    assert_eq!(sim.writes, writes, "nobody writes without a lease");
}

#[test]
fn the_old_active_coming_back_preempts_only_after_its_delay() {
    let mut sim = Sim::new([0, 1]);
    sim.run_for(ms(3000));
    sim.ha[0].set_ready(false);
    sim.run_for(ms(2000));
    assert_eq!(sim.active(), Some(1));
    let back = sim.at();
    sim.ha[0].set_ready(true);
    sim.run_for(ms(2500));
    assert_eq!(sim.active(), Some(1), "no flap before the preempt delay");
    sim.run_for(ms(2000));
    assert_eq!(sim.active(), Some(0));
    let took = sim.became_active(0).expect("a") - back;
    assert!(
        took >= ms(3000) && took <= ms(3300),
        "preempted after {took:?}"
    );
    // One handover each way, no flapping.
    let changes = sim.active_log.iter().filter(|(_, a)| a.is_some()).count();
    assert_eq!(changes, 3, "{:?}", sim.active_log);
}

#[test]
fn without_preempt_the_role_stays_where_it_is() {
    let mut sim = Sim::new([0, 1]);
    let mut c = config(0);
    c.preempt = false;
    sim.ha[0] = Ha::new(NAMES[0], c, sim.now);
    sim.ha[0].set_ready(true);
    sim.ha[0].on_store_reachable(true);
    sim.ha[0].on_holder(None, sim.now);
    sim.run_for(ms(3000));
    sim.ha[0].set_drained(true);
    sim.run_for(ms(1000));
    assert_eq!(sim.active(), Some(1));
    sim.ha[0].set_drained(false);
    sim.run_for(ms(10_000));
    assert_eq!(sim.active(), Some(1));
}

#[test]
fn a_drained_active_hands_over_and_a_drained_standby_never_campaigns() {
    let mut sim = Sim::new([0, 1]);
    sim.run_for(ms(3000));
    sim.ha[0].set_drained(true);
    sim.run_for(ms(500));
    assert_eq!(sim.active(), Some(1));
    sim.ha[1].set_drained(true);
    sim.run_for(ms(3000));
    // Both drained: nobody holds the role (the operator asked for it).
    assert_eq!(sim.active(), None);
}

#[test]
fn a_win_learned_from_the_watch_alone_still_writes_after_its_wait() {
    let mut sim = Sim::new([0, 1]);
    sim.lose_campaign_answer = [true, true];
    sim.run_for(ms(3000));
    let m = sim.active().expect("a member holds the role");
    assert!(
        sim.writes[m] > 0,
        "{} holds the role and never wrote",
        NAMES[m]
    );
}
