//! Failover drills: a planned switchover of one group to its next healthy link (or DNS answer),
//! verified, held, failed back and verified again, measured all along by a dense probe stream
//! per link ([`stream`]), with a report ([`isthmus_api::DrillReport`]).
//!
//! [`Drill`] is the drill's state machine, without I/O: the loop gives it what it sees of the
//! group ([`Look`]) and the stream's samples, with `now`; it answers with what to do ([`Do`]:
//! pin, release, stop the stream) and keeps the time line. The loop's side (starting a drill,
//! the pre-checks, carrying out a [`Do`]) is `daemon/drill.rs`.
//!
//! ```text
//! prechecks ─► baseline ─► switching ─► holding ─► failing_back ─► after ─► done
//!     │ a check fails          │ not verified / new path breaks / --abort      │
//!     ▼                        └────────────► failing_back (aborted) ──────────┴─► aborted
//!  refused                             the old path never comes back ─► failed
//! ```

pub mod report;
pub mod stream;

use std::time::{Duration, Instant, SystemTime};

use isthmus_api::{DrillCheck, DrillState, DrillStep, DrillTarget};

pub use stream::{Sample, StreamCmd, StreamLink, StreamReport};

/// The stream's interval per link.
pub const STREAM_INTERVAL: Duration = Duration::from_millis(10);
/// Baseline and after: a quarter of the hold, within these bounds.
const SETTLE_MIN: Duration = Duration::from_secs(2);
const SETTLE_MAX: Duration = Duration::from_secs(10);
/// How long a switch (either way) may take to verify: twice the RTO target, at least this.
const VERIFY_MIN: Duration = Duration::from_secs(30);
/// How long the pre-checks' dry runs may take.
pub const PRECHECK_TIMEOUT: Duration = Duration::from_secs(15);
/// Samples kept (a 10 ms stream on two links: about 40 minutes). The report is built on the
/// loop from them, in about a millisecond per 10 000.
const MAX_SAMPLES: usize = 500_000;

/// What the drill is about to do, fixed at its start.
#[derive(Debug, Clone)]
pub struct Plan {
    pub id: u64,
    pub gateway: String,
    pub group: String,
    pub target: DrillTarget,
    /// Link names (route group) or answer values (DNS group).
    pub from: String,
    pub to: Option<String>,
    pub hold: Duration,
    pub rto_target: Duration,
    pub reason: String,
    /// The stream's links: name and what it probes (for the report).
    pub links: Vec<(String, String)>,
    /// Indices into `links` of the old and the new path (route groups).
    pub from_link: Option<usize>,
    pub to_link: Option<usize>,
    pub interval: Duration,
}

/// What the loop sees of the drilled group now.
#[derive(Debug, Clone, Default)]
pub struct Look {
    /// The group is on the new path at this gateway (route group: active link; DNS group:
    /// chosen answer), or on the old one.
    pub on_to: bool,
    pub on_from: bool,
    /// The kernel holds every route the loop asked for.
    pub routes_applied: bool,
    /// Every action target of the group holds what the current decision wants, verified.
    pub actions_in_sync: bool,
    /// The group's checks pass over the new path (or for the new answer), at both gateways
    /// as far as known; the same for the old one.
    pub to_checks_pass: bool,
    pub from_checks_pass: bool,
    /// Why the new path is broken, if it is (down, checks failing): the drill aborts.
    pub to_broken: Option<String>,
    /// Why the drill cannot go on at all (the group is gone after a reload).
    pub gone: Option<String>,
}

/// What the loop must do for the drill.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Do {
    /// Move the group to the new path (pin it there).
    Switch,
    /// Release the pin: the group returns to the automatic choice, the old path.
    Release,
    /// Stop the probe stream; the drill is over.
    Finish,
    /// Record a step in the event log (the text of the step).
    Record(String),
}

/// When each condition of a verification first held.
#[derive(Debug, Clone, Default)]
struct Verify {
    moved: Option<Instant>,
    routes: Option<Instant>,
    actions: Option<Instant>,
    checks: Option<Instant>,
    traffic: Option<Instant>,
}

impl Verify {
    fn all(&self) -> Option<Instant> {
        [
            self.moved,
            self.routes,
            self.actions,
            self.checks,
            self.traffic,
        ]
        .into_iter()
        .try_fold(None::<Instant>, |acc, t| {
            t.map(|t| Some(acc.map_or(t, |a| a.max(t))))
        })
        .flatten()
    }

    fn missing(&self) -> Vec<&'static str> {
        let mut m = Vec::new();
        if self.moved.is_none() {
            m.push("the group did not move");
        }
        if self.routes.is_none() {
            m.push("the kernel routes were not applied");
        }
        if self.actions.is_none() {
            m.push("the actions (DNS, route tables) were not in sync");
        }
        if self.checks.is_none() {
            m.push("the group's checks did not pass");
        }
        if self.traffic.is_none() {
            m.push("no probe was answered over the new path");
        }
        m
    }
}

pub struct Drill {
    pub plan: Plan,
    state: DrillState,
    started: Instant,
    started_wall: SystemTime,
    /// When the current state began.
    since: Instant,
    /// State changes, for the phases of the samples.
    phases: Vec<(Instant, DrillState)>,
    timeline: Vec<DrillStep>,
    prechecks: Vec<DrillCheck>,
    /// Dry runs still out.
    pending: usize,
    switched_at: Option<Instant>,
    released_at: Option<Instant>,
    verify: Verify,
    rto: Option<Duration>,
    failback: Option<Duration>,
    aborted: Option<String>,
    problems: Vec<String>,
    finished_wall: Option<SystemTime>,
    samples: Vec<Sample>,
}

/// When the first echo on `link` sent at or after `since` came back. Samples arrive in the
/// order their fate is known (a lost one a second late), so the scan from the end stops well
/// before `since`.
fn first_answer(samples: &[Sample], link: usize, since: Instant) -> Option<Instant> {
    let floor = since.checked_sub(stream::LOST_AFTER * 2).unwrap_or(since);
    samples
        .iter()
        .rev()
        .take_while(|s| s.sent >= floor)
        .filter(|s| s.link == link && s.sent >= since)
        .filter_map(|s| s.rtt.map(|r| s.sent + r))
        .min()
}

fn wall_ms(t: SystemTime) -> u64 {
    t.duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis() as u64
}

fn secs(d: Duration) -> String {
    if d < Duration::from_secs(10) {
        format!("{:.0} ms", d.as_secs_f64() * 1e3)
    } else {
        format!("{:.1} s", d.as_secs_f64())
    }
}

impl Drill {
    /// A drill in `prechecks`, with the checks already made (`checks`) and `pending` dry runs
    /// still out ([`Drill::add_check`]).
    pub fn new(
        plan: Plan,
        checks: Vec<DrillCheck>,
        pending: usize,
        now: Instant,
        wall: SystemTime,
    ) -> Drill {
        let mut d = Drill {
            plan,
            state: DrillState::Prechecks,
            started: now,
            started_wall: wall,
            since: now,
            phases: vec![(now, DrillState::Prechecks)],
            timeline: Vec::new(),
            prechecks: checks,
            pending,
            switched_at: None,
            released_at: None,
            verify: Verify::default(),
            rto: None,
            failback: None,
            aborted: None,
            problems: Vec::new(),
            finished_wall: None,
            samples: Vec::new(),
        };
        let what = format!(
            "drill of {} started: {} → {}, hold {}, RTO target {} ({})",
            d.plan.group,
            d.plan.from,
            d.plan.to.as_deref().unwrap_or("(none)"),
            secs(d.plan.hold),
            secs(d.plan.rto_target),
            d.plan.reason
        );
        d.step(now, Some(DrillState::Prechecks), what);
        d
    }

    /// The words of the first step (the start), for the event log.
    pub fn first_step(&self) -> String {
        self.timeline
            .first()
            .map(|s| s.what.clone())
            .unwrap_or_default()
    }

    /// For `netctl status`.
    pub fn brief(&self, now: Instant) -> isthmus_api::DrillBrief {
        isthmus_api::DrillBrief {
            group: self.plan.group.clone(),
            state: self.state,
            from: self.plan.from.clone(),
            to: self.plan.to.clone(),
            seconds: now.saturating_duration_since(self.started).as_secs(),
            hold_ms: self.plan.hold.as_millis() as u64,
        }
    }

    pub fn state(&self) -> DrillState {
        self.state
    }

    pub fn is_over(&self) -> bool {
        self.state.is_final()
    }

    fn settle(&self) -> Duration {
        (self.plan.hold / 4).clamp(SETTLE_MIN, SETTLE_MAX)
    }

    fn verify_within(&self) -> Duration {
        (self.plan.rto_target * 2).max(VERIFY_MIN)
    }

    fn step(&mut self, now: Instant, state: Option<DrillState>, what: String) {
        let at = now.saturating_duration_since(self.started);
        self.timeline.push(DrillStep {
            unix_ms: wall_ms(self.started_wall + at),
            at_ms: at.as_millis() as u64,
            state,
            what,
        });
    }

    fn enter(&mut self, state: DrillState, now: Instant, what: String, out: &mut Vec<Do>) {
        self.enter_at(state, now, now, what, out);
    }

    /// Enter `state` as of `at` (a moment already past: when a verification's last condition
    /// held, which the loop learns a batch of samples later), noticed at `now`.
    fn enter_at(
        &mut self,
        state: DrillState,
        at: Instant,
        now: Instant,
        what: String,
        out: &mut Vec<Do>,
    ) {
        let now = at.min(now);
        self.state = state;
        self.since = now;
        self.phases.push((now, state));
        self.step(now, Some(state), what.clone());
        out.push(Do::Record(what));
        if state.is_final() {
            let at = now.saturating_duration_since(self.started);
            self.finished_wall = Some(self.started_wall + at);
            out.push(Do::Finish);
        }
    }

    /// A dry run's result.
    pub fn add_check(&mut self, check: DrillCheck) {
        self.prechecks.push(check);
        self.pending = self.pending.saturating_sub(1);
    }

    /// The stream's samples.
    pub fn on_samples(&mut self, samples: &[Sample]) {
        let room = MAX_SAMPLES.saturating_sub(self.samples.len());
        self.samples
            .extend(samples.iter().filter(|s| s.sent >= self.started).take(room));
    }

    /// A stream link whose socket could not be opened.
    pub fn stream_error(&mut self, link: usize, error: &str) {
        let name = self.plan.links.get(link).map_or("?", |l| l.0.as_str());
        self.problems.push(format!(
            "the probe stream on {name} could not start: {error}"
        ));
    }

    /// `netctl drill --abort`, or something the loop noticed: fail back now.
    pub fn abort(&mut self, why: &str, now: Instant) -> Vec<Do> {
        let mut out = Vec::new();
        if self.is_over() || self.aborted.is_some() {
            return out;
        }
        self.aborted = Some(why.to_owned());
        self.problems.push(format!("aborted: {why}"));
        match self.state {
            DrillState::Prechecks | DrillState::Baseline => {
                self.enter(
                    DrillState::Aborted,
                    now,
                    format!("aborted: {why}"),
                    &mut out,
                );
            }
            DrillState::Switching | DrillState::Holding => {
                out.push(Do::Release);
                self.released_at = Some(now);
                self.verify = Verify::default();
                self.enter(
                    DrillState::FailingBack,
                    now,
                    format!("aborted: {why}; failing back to {}", self.plan.from),
                    &mut out,
                );
            }
            _ => {
                self.step(
                    now,
                    None,
                    format!("abort asked ({why}): already failing back"),
                );
            }
        }
        out
    }

    /// Note which verification conditions hold now, on the new path (`to`) or the old.
    fn observe(&mut self, look: &Look, to: bool, since: Instant, now: Instant) {
        let (moved, checks, link) = if to {
            (look.on_to, look.to_checks_pass, self.plan.to_link)
        } else {
            (look.on_from, look.from_checks_pass, self.plan.from_link)
        };
        let v = &mut self.verify;
        let set = |slot: &mut Option<Instant>, ok: bool| {
            if !ok {
                *slot = None;
            } else if slot.is_none() {
                *slot = Some(now);
            }
        };
        set(&mut v.moved, moved);
        // Routes and actions count only once the group moved: before that they are in sync
        // with the old decision.
        set(&mut v.routes, moved && look.routes_applied);
        set(&mut v.actions, moved && look.actions_in_sync);
        set(&mut v.checks, checks);
        // Traffic: an echo sent over the path after the switch came back (a DNS group has no
        // path of its own: its record served is the proof, in `actions`).
        let answered = match link {
            Some(i) => first_answer(&self.samples, i, since),
            None => Some(since),
        };
        let v = &mut self.verify;
        if v.traffic.is_none() {
            v.traffic = answered;
        }
    }

    pub fn tick(&mut self, look: &Look, now: Instant) -> Vec<Do> {
        let mut out = Vec::new();
        if let Some(why) = &look.gone {
            if !self.is_over() {
                let why = why.clone();
                self.problems.push(format!("stopped: {why}"));
                self.enter(DrillState::Failed, now, format!("stopped: {why}"), &mut out);
            }
            return out;
        }
        let in_state = now.saturating_duration_since(self.since);
        match self.state {
            DrillState::Prechecks => {
                if self.pending > 0 && in_state < PRECHECK_TIMEOUT {
                    return out;
                }
                if self.pending > 0 {
                    self.prechecks.push(DrillCheck {
                        name: "dry runs answered".into(),
                        ok: false,
                        detail: format!(
                            "{} dry run(s) did not answer within {}",
                            self.pending,
                            secs(PRECHECK_TIMEOUT)
                        ),
                    });
                    self.pending = 0;
                }
                let failed: Vec<String> = self
                    .prechecks
                    .iter()
                    .filter(|c| !c.ok)
                    .map(|c| format!("{}: {}", c.name, c.detail))
                    .collect();
                if failed.is_empty() {
                    let what = format!(
                        "{} pre-checks passed; measuring every link for {}",
                        self.prechecks.len(),
                        secs(self.settle())
                    );
                    self.enter(DrillState::Baseline, now, what, &mut out);
                } else {
                    for f in &failed {
                        self.problems.push(format!("pre-check failed: {f}"));
                    }
                    let what = format!("refused: {}", failed.join("; "));
                    self.enter(DrillState::Refused, now, what, &mut out);
                }
            }
            DrillState::Baseline => {
                if let Some(why) = look.to_broken.clone() {
                    out.extend(self.abort(&why, now));
                } else if in_state >= self.settle() {
                    out.push(Do::Switch);
                    self.switched_at = Some(now);
                    self.verify = Verify::default();
                    let what = format!(
                        "switching {} from {} to {}",
                        self.plan.group,
                        self.plan.from,
                        self.plan.to.as_deref().unwrap_or("?")
                    );
                    self.enter(DrillState::Switching, now, what, &mut out);
                }
            }
            DrillState::Switching => {
                if let Some(why) = look.to_broken.clone() {
                    out.extend(self.abort(&why, now));
                    return out;
                }
                let since = self.switched_at.unwrap_or(self.since);
                self.observe(look, true, since, now);
                if let Some(at) = self.verify.all() {
                    let rto = at.saturating_duration_since(since);
                    self.rto = Some(rto);
                    if rto > self.plan.rto_target {
                        self.problems.push(format!(
                            "RTO {} above the target {}",
                            secs(rto),
                            secs(self.plan.rto_target)
                        ));
                    }
                    let proof = match self.plan.target {
                        DrillTarget::RouteGroup => {
                            "traffic answered, checks pass, routes and actions in place"
                        }
                        DrillTarget::DnsGroup => "the record served, checks pass",
                    };
                    let what = format!(
                        "verified on {} after {} ({proof}); holding {}",
                        self.plan.to.as_deref().unwrap_or("?"),
                        secs(rto),
                        secs(self.plan.hold)
                    );
                    self.enter_at(DrillState::Holding, at, now, what, &mut out);
                } else if in_state >= self.verify_within() {
                    let why = format!(
                        "not verified on {} within {}: {}",
                        self.plan.to.as_deref().unwrap_or("?"),
                        secs(self.verify_within()),
                        self.verify.missing().join(", ")
                    );
                    out.extend(self.abort(&why, now));
                }
            }
            DrillState::Holding => {
                if let Some(why) = look.to_broken.clone() {
                    out.extend(self.abort(&why, now));
                } else if !look.on_to {
                    out.extend(self.abort("the group left the new path during the hold", now));
                } else if in_state >= self.plan.hold {
                    out.push(Do::Release);
                    self.released_at = Some(now);
                    self.verify = Verify::default();
                    let what = format!(
                        "held {}; failing back to {}",
                        secs(in_state),
                        self.plan.from
                    );
                    self.enter(DrillState::FailingBack, now, what, &mut out);
                }
            }
            DrillState::FailingBack => {
                let since = self.released_at.unwrap_or(self.since);
                self.observe(look, false, since, now);
                if let Some(at) = self.verify.all() {
                    let took = at.saturating_duration_since(since);
                    self.failback = Some(took);
                    let what = format!(
                        "back on {} after {}; measuring every link for {}",
                        self.plan.from,
                        secs(took),
                        secs(self.settle())
                    );
                    self.enter_at(DrillState::After, at, now, what, &mut out);
                } else if in_state >= self.verify_within() {
                    let why = format!(
                        "not back on {} within {}: {}; the group is left to the automatic choice",
                        self.plan.from,
                        secs(self.verify_within()),
                        self.verify.missing().join(", ")
                    );
                    self.problems.push(why.clone());
                    self.enter(DrillState::Failed, now, why, &mut out);
                }
            }
            DrillState::After => {
                if in_state >= self.settle() {
                    let (state, what) = match &self.aborted {
                        Some(why) => (DrillState::Aborted, format!("drill aborted ({why})")),
                        None if self.problems.is_empty() => {
                            (DrillState::Done, "drill done, no problems".to_owned())
                        }
                        None => (
                            DrillState::Done,
                            format!("drill done, {} problem(s)", self.problems.len()),
                        ),
                    };
                    self.enter(state, now, what, &mut out);
                }
            }
            DrillState::Done | DrillState::Refused | DrillState::Aborted | DrillState::Failed => {}
        }
        out
    }
}

#[cfg(test)]
mod tests;
