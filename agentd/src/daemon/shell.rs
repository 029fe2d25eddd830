//! The event loop and the state it owns.
//!
//! One task owns all state and feeds the failover engine. Its only awaits are channel receives
//! and one timer: peer-probe datagrams (served first), adapter reports ([`Input`]), control
//! commands, and the earliest deadline (the engine's, maintenance, the watchdog). Every turn
//! reads the clock once and handles its input to completion with that `now`. Whatever touches
//! the world is a message to an adapter, sent without waiting ([`Adapters`]); steps that must
//! happen in order wait for the adapter's answer as state here (`after_routes`: move routes off
//! a link, then stop it; start a link, then route via its interface; release the routes, then
//! stop the links and exit).
//!
//! An error while handling one input is logged once and the loop goes on. The watchdog is pinged
//! from inside the loop, so a stuck loop stops the pings and systemd restarts agentd.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use isthmus_api::{ErrorBody, RouteGroupStatus};
use isthmus_api::{EventKind, EventRecord, LoopLag, MetricsListener, ReloadOutcome};
use isthmus_config::{Config, Endpoint, Link, Report};
use tokio::sync::{mpsc, watch};

use super::actions::{ActionBook, Transition};
use super::input::{Input, Signal};
use super::reload::Running;
use crate::actions::{ActionReport, ActionsCmd, HookReport};
use crate::control::Command;
use crate::events::{self, EventLog};
use crate::failover::{self, Failover, ProbeIn};
use crate::faults::FaultKind;
use crate::metrics::Metrics;
use crate::probe::job::{Job, JobKey};
use crate::probe::peer::ProbeTransport;
use crate::probe::target::Outcome;
use crate::resolve::{Lookup, Resolved};
use crate::routes::{self, HostCheck, RouteStats, RoutesCmd, RoutesReport};
use crate::tunnel::counters::Counters;
use crate::tunnel::table::LinkTable;
use crate::tunnel::{LinkCmd, LinkReport};
use crate::view::{Rejected, TargetState, View};

/// How often failed links are retried, silent hostname endpoints looked up again and probe
/// sockets re-synced.
pub const MAINTAIN_EVERY: Duration = Duration::from_secs(5);
/// The subject of a `clock_step` fault.
const WALL_CLOCK: &str = "wall_clock";
/// Probe numbers reserved in the state file ahead of those sent: an hour of probes at the
/// fastest rate (one per 25 ms on a link), renewed when half is used, so that the file is
/// written for it at most every half hour. A restart numbers from above the reservation
/// even when the wall clock stepped back since (the peer drops lower numbers as replays).
const SEQ_RESERVE: u32 = 40 * 3600;
/// The state file is stamped again this often while nothing changes: its age is how long ago
/// its state was last known true, and a restart restores only one younger than
/// [`crate::state::RESTORE_WITHIN`] (written only on changes, a gateway steady for ten
/// minutes restarted cold).
const STATE_REFRESH_EVERY: Duration =
    Duration::from_secs(crate::state::RESTORE_WITHIN.as_secs() / 4);
/// How long a shutdown waits for each adapter's answer before going on without it.
pub const SHUTDOWN_STEP: Duration = Duration::from_secs(5);
/// Loop lag samples kept for `netctl status` (a sample per timer: about a minute).
const LAG_SAMPLES: usize = 2048;
/// A loop that serves timers later than this at p99 is reported as lagging.
pub const LAG_BAD: Duration = Duration::from_millis(5);
/// A route group's cloud route tables are left alone until the group has been decided once or
/// this long after start-up: a gateway that starts must not pull the VPC's traffic to the
/// fallback for the few seconds its links need to come up. Long enough for the start-up
/// settling of every probe profile.
pub const TABLES_WAIT: Duration = Duration::from_secs(15);

/// Builds the action providers of a config.
pub type BuildBackends = Box<dyn Fn(&Config) -> Arc<crate::actions::Backends> + Send>;
/// Loads the config file for a reload (on the blocking pool).
pub type Loader = Arc<dyn Fn() -> Result<Running, Report> + Send + Sync>;
/// Side effects of a new config outside the loop's state (socket mode, access policy, log level,
/// metrics listener): `(old, new)`.
pub type OnConfig = Box<dyn FnMut(&Config, &Config) + Send>;

/// The loop's handles to the world. Each is a channel to an adapter task (or, for probe
/// datagrams, a non-blocking send): nothing here ever waits.
pub struct Adapters {
    pub links: mpsc::UnboundedSender<LinkCmd>,
    pub routes: mpsc::UnboundedSender<RoutesCmd>,
    pub actions: mpsc::UnboundedSender<ActionsCmd>,
    /// Builds the providers of a config (the real ones in agentd; fakes in tests).
    pub backends: BuildBackends,
    pub resolver: mpsc::UnboundedSender<Lookup>,
    pub targets: mpsc::UnboundedSender<Vec<Job>>,
    /// The drill's probe stream.
    pub drill: mpsc::UnboundedSender<crate::drill::StreamCmd>,
    pub transport: Box<dyn ProbeTransport>,
    /// The HA pair's lease store (`crate::ha`).
    pub ha: mpsc::UnboundedSender<crate::ha::HaCmd>,
    pub loader: Loader,
    pub on_config: OnConfig,
    /// Whether the metrics listener listens (shown in status).
    pub metrics_listener: watch::Receiver<MetricsListener>,
    /// Called when agentd is ready (sd_notify READY=1 in agentd).
    pub on_ready: Box<dyn FnMut() + Send>,
    /// The watchdog ping interval, if systemd asked for one.
    pub watchdog: Option<Duration>,
    /// Keeps each route group's active link in the state directory, for a warm restart.
    pub state: crate::state::Saver,
}

impl Adapters {
    pub fn send_targets(&self, jobs: Vec<Job>) {
        let _ = self.targets.send(jobs);
    }
}

/// A step that waits for the routes adapter.
#[derive(Debug)]
pub enum Step {
    /// Reconcile the links (after their routes moved away).
    ApplyLinks(Vec<(Link, Arc<Counters>)>),
}

/// A reload waiting for the links adapter before its caller gets the outcome.
pub struct PendingReload {
    pub outcome: ReloadOutcome,
    pub reply: Option<tokio::sync::oneshot::Sender<Result<ReloadOutcome, ErrorBody>>>,
}

/// Where the loop is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Waiting for the first links and routes before READY.
    Starting,
    Running,
    /// Stopping: waiting for the routes adapter to release the routes.
    Releasing {
        until: Instant,
    },
    /// Stopping: waiting for the links adapter to stop every link.
    StoppingLinks {
        until: Instant,
    },
    Done,
}

/// How late the loop served its timers.
#[derive(Default)]
struct LagWindow {
    samples: VecDeque<f64>,
}

impl LagWindow {
    fn push(&mut self, seconds: f64) {
        if self.samples.len() == LAG_SAMPLES {
            self.samples.pop_front();
        }
        self.samples.push_back(seconds);
    }

    fn summary(&self) -> Option<LoopLag> {
        if self.samples.is_empty() {
            return None;
        }
        let mut s: Vec<f64> = self.samples.iter().copied().collect();
        s.sort_by(f64::total_cmp);
        let p99 = s[(s.len() * 99 / 100).min(s.len() - 1)];
        let max = s[s.len() - 1];
        Some(LoopLag {
            p99_ms: (p99 * 1e6).round() / 1e3,
            max_ms: (max * 1e6).round() / 1e3,
            bad: p99 > LAG_BAD.as_secs_f64(),
        })
    }
}

pub struct Shell {
    pub(super) running: Running,
    pub(super) links: LinkTable,
    pub(super) failover: Failover,
    events: EventLog,
    pub(super) targets: BTreeMap<JobKey, TargetState>,
    pub(super) metrics: Metrics,
    route_stats: RouteStats,
    host_warnings: Vec<String>,
    /// The generation of the last desired routes sent, and of the last the adapter applied.
    sent: u64,
    applied: u64,
    /// What was sent last, to send only changes.
    last_desired: Option<(routes::Desired, HostCheck)>,
    /// Steps waiting for the routes of a generation to be applied, oldest first.
    waiting: VecDeque<(u64, Step)>,
    /// Link applies in flight, in order: `None` for the start-up one.
    pub(super) pending_reloads: VecDeque<Option<PendingReload>>,
    started_at: Instant,
    pub(super) reloads_applied: u64,
    pub(super) reloads_rejected: u64,
    pub(super) last_rejected: Option<Rejected>,
    lag: LagWindow,
    next_maintain: Instant,
    next_watchdog: Option<Instant>,
    /// The wall clock against the monotonic one, looked at every maintenance tick.
    wall_watch: crate::clock::WallWatch,
    /// Probe numbers below this are reserved in the state file for this run.
    seq_reserved: u32,
    /// When the state file was last stamped again ([`STATE_REFRESH_EVERY`]).
    state_refreshed: Instant,
    phase: Phase,
    /// Whether the links adapter finished the start-up apply (READY waits for it).
    links_started: bool,
    /// Action targets: desired, reported.
    pub(super) action_book: ActionBook,
    /// Route groups decided at least once (their cloud route tables follow them).
    pub(super) decided_groups: std::collections::BTreeSet<String>,
    /// The running or last drill, and when it needs a look next.
    pub(super) drill: Option<crate::drill::Drill>,
    pub(super) drill_tick: Instant,
    pub(super) adapters: Adapters,
    /// For adapters started from the loop (config loads on the blocking pool).
    pub(super) inputs: mpsc::Sender<Input>,
    /// This gateway's pair (`[ha]`), the settings it runs with, and whether the last desired
    /// actions were sent with writes allowed.
    pub(super) pair: Option<super::ha::Pair>,
    pub(super) ha_settings: Option<isthmus_config::Ha>,
    pub(super) ha_wrote: bool,
}

/// The channels the loop serves.
pub struct Receivers {
    pub probes: mpsc::Receiver<ProbeIn>,
    pub inputs: mpsc::Receiver<Input>,
    pub commands: mpsc::Receiver<Command>,
}

impl Shell {
    /// A shell for `running`, continuing the event log from `history`.
    pub fn new(
        running: Running,
        mut metrics: Metrics,
        history: Vec<EventRecord>,
        event_writer: mpsc::Sender<EventRecord>,
        adapters: Adapters,
        inputs: mpsc::Sender<Input>,
        now: Instant,
    ) -> Shell {
        let config = running.config.clone();
        metrics.follow_config(&config);
        Shell {
            failover: Failover::new(&config, now, crate::clock::wall()),
            events: EventLog::new(history, event_writer),
            links: LinkTable::default(),
            targets: BTreeMap::new(),
            metrics,
            route_stats: RouteStats::default(),
            host_warnings: Vec::new(),
            sent: 0,
            applied: 0,
            last_desired: None,
            waiting: VecDeque::new(),
            pending_reloads: VecDeque::new(),
            started_at: now,
            reloads_applied: 0,
            reloads_rejected: 0,
            last_rejected: None,
            lag: LagWindow::default(),
            next_maintain: now + MAINTAIN_EVERY,
            next_watchdog: adapters.watchdog.map(|d| now + d),
            wall_watch: crate::clock::WallWatch::new(SystemTime::now(), crate::clock::monotonic()),
            seq_reserved: 0,
            state_refreshed: now,
            phase: Phase::Starting,
            links_started: false,
            action_book: ActionBook::default(),
            decided_groups: std::collections::BTreeSet::new(),
            drill: None,
            drill_tick: now,
            running,
            adapters,
            inputs,
            pair: None,
            ha_settings: None,
            ha_wrote: true,
        }
    }

    /// A warm restart: what the state file held at start-up (see [`crate::state`]). Call
    /// before [`Shell::run`]. A file that is not used, or entries that name a group or link no
    /// longer in the config, are said once, as one warning; the rest is restored.
    pub fn restore(
        &mut self,
        loaded: Result<Option<BTreeMap<String, String>>, crate::state::Ignored>,
    ) {
        let saved = match loaded {
            Ok(Some(saved)) => saved,
            Ok(None) => return,
            Err(why) => {
                tracing::warn!(reason = %why, "not restoring the active links: a cold start");
                return;
            }
        };
        let ignored = self.failover.restore(&saved);
        if !ignored.is_empty() {
            let list: Vec<String> = ignored.iter().map(|(g, l)| format!("{g} → {l}")).collect();
            tracing::warn!(
                ignored = %list.join(", "),
                "the state file names route groups or links that are not in the config: those start cold"
            );
        }
        let restored: Vec<String> = saved
            .iter()
            .filter(|(g, l)| !ignored.contains(&((*g).clone(), (*l).clone())))
            .map(|(g, l)| format!("{g} → {l}"))
            .collect();
        if !restored.is_empty() {
            tracing::info!(groups = %restored.join(", "), "warm restart: each group takes its link again as soon as it answers");
        }
        // What the file holds: the first save rewrites it only if entries were ignored.
        self.adapters.state.assume(saved);
    }

    /// Serve until stopped; the routes are released and the links stopped on the way out.
    pub async fn run(mut self, mut rx: Receivers) {
        let now = crate::clock::now();
        self.start();
        let mut last = now;
        while self.phase != Phase::Done {
            // Never spin: at least a millisecond between timer runs.
            let deadline = self.deadline().max(last + Duration::from_millis(1));
            tokio::select! {
                biased;
                Some(p) = rx.probes.recv() => {
                    let now = crate::clock::now();
                    last = now;
                    self.on_probe(&p);
                    // Take what else arrived, then act once.
                    while let Ok(p) = rx.probes.try_recv() {
                        self.on_probe(&p);
                    }
                    self.after_engine(now);
                }
                Some(input) = rx.inputs.recv() => {
                    let now = crate::clock::now();
                    last = now;
                    self.on_input(input, now);
                }
                Some(command) = rx.commands.recv() => {
                    let now = crate::clock::now();
                    last = now;
                    self.on_command(command, now);
                }
                _ = tokio::time::sleep_until(deadline.into()) => {
                    let now = crate::clock::now();
                    last = now;
                    let late = now.saturating_duration_since(deadline);
                    self.lag.push(late.as_secs_f64());
                    self.metrics.loop_lag.observe(late.as_secs_f64());
                    self.on_timers(now);
                }
                else => break,
            }
        }
    }

    fn start(&mut self) {
        let config = self.running.config.clone();
        self.push_event(events::record(
            EventKind::Started,
            format!("agentd {} started", env!("CARGO_PKG_VERSION")),
        ));
        for w in &self.running.warnings {
            tracing::warn!(warning = %w.message, line = w.line.unwrap_or(0), "config warning");
        }
        let links = self.links.follow(&config.links);
        self.pending_reloads.push_back(None);
        let _ = self.adapters.links.send(LinkCmd::Apply(links));
        self.adapters.send_targets(crate::probe::job::jobs(&config));
        // The fail-closed routes go in at once, before any link runs.
        self.reconcile_routes();
        self.configure_ha(crate::clock::now());
        self.configure_actions();
        self.feed_dns_groups(crate::clock::now());
    }

    /// Hand the actions adapter the providers of the running config (start-up, reload); every
    /// target is read again.
    pub(super) fn configure_actions(&mut self) {
        let backends = (self.adapters.backends)(&self.running.config);
        let _ = self.adapters.actions.send(ActionsCmd::Configure(backends));
        self.action_book = ActionBook::default();
        self.reconcile_actions(crate::clock::now());
    }

    /// Send the desired state of every action target if it changed.
    pub(super) fn reconcile_actions(&mut self, now: Instant) {
        let config = &self.running.config;
        let mut wants = super::actions::desired(
            config,
            |g| self.failover.answer(g),
            &self.active_links(),
            &self.decided_groups,
        );
        // A gateway of a pair writes only while it is active with a valid lease: a standby's
        // (or an unsure active's) targets are left to the other gateway, and a write in flight
        // is abandoned (the adapter stops the target's task).
        self.ha_wrote = self.ha_may_write(now);
        if !self.ha_wrote {
            wants.clear();
        }
        if let Some(desired) = self.action_book.follow(wants, now) {
            let _ = self.adapters.actions.send(ActionsCmd::Apply(desired));
        }
    }

    /// The earliest moment something is due (never in the past by more than a millisecond's
    /// floor, so the loop cannot spin).
    fn deadline(&self) -> Instant {
        let mut d = self.next_maintain;
        if let Some(e) = self.failover.deadline() {
            d = d.min(e);
        }
        if let Some(w) = self.next_watchdog {
            d = d.min(w);
        }
        if self.drill.as_ref().is_some_and(|x| !x.is_over()) {
            d = d.min(self.drill_tick);
        }
        if let Some(h) = self.ha_deadline() {
            d = d.min(h);
        }
        match self.phase {
            Phase::Releasing { until } | Phase::StoppingLinks { until } => d = d.min(until),
            _ => {}
        }
        d
    }

    fn on_timers(&mut self, now: Instant) {
        match self.phase {
            Phase::Releasing { until } if now >= until => {
                tracing::warn!("the routes adapter did not release the routes in time; stopping the links anyway");
                self.stop_links(now);
            }
            Phase::StoppingLinks { until } if now >= until => {
                tracing::warn!("the links adapter did not stop the links in time; exiting");
                self.phase = Phase::Done;
            }
            _ => {}
        }
        if self.next_watchdog.is_some_and(|w| now >= w) {
            crate::notify::watchdog();
            self.next_watchdog = self.adapters.watchdog.map(|d| now + d);
        }
        if now >= self.next_maintain {
            self.next_maintain = now + MAINTAIN_EVERY;
            self.maintain(now);
            if now.saturating_duration_since(self.started_at) >= TABLES_WAIT {
                let all = self
                    .running
                    .config
                    .route_groups
                    .iter()
                    .map(|g| g.name.clone());
                self.decided_groups.extend(all);
                self.reconcile_actions(now);
            }
        }
        self.failover.handle_timeout(now);
        self.after_engine(now);
        self.drive_ha(now);
        if now >= self.drill_tick {
            self.drill_tick = now + super::drill::TICK;
            super::drill::tick(self, now);
        }
    }

    /// Every [`MAINTAIN_EVERY`]: retries and lookups that wait on nobody.
    fn maintain(&mut self, now: Instant) {
        let _ = self.adapters.links.send(LinkCmd::Maintain);
        self.sync_transport();
        self.resolve_silent_endpoints();
        self.accumulate_egress();
        self.watch_wall_clock();
        let left = self.seq_reserved.wrapping_sub(self.failover.next_seq());
        if (left as i32) < (SEQ_RESERVE / 2) as i32 {
            self.reserve_seqs();
        }
        if now.saturating_duration_since(self.state_refreshed) >= STATE_REFRESH_EVERY {
            self.state_refreshed = now;
            self.adapters.state.refresh(crate::clock::wall());
        }
    }

    /// Start the probe numbers above `floor` (what the last run reserved, if it said) and
    /// reserve this run's. Call after [`Shell::restore`], before [`Shell::run`].
    pub fn continue_probe_numbers(&mut self, floor: Option<u32>) {
        if let Some(floor) = floor {
            self.failover.start_seqs_above(floor);
        }
        self.reserve_seqs();
    }

    fn reserve_seqs(&mut self) {
        self.seq_reserved = self.failover.next_seq().wrapping_add(SEQ_RESERVE);
        self.adapters
            .state
            .reserve_seqs(self.seq_reserved, crate::clock::wall());
    }

    /// A step of the wall clock is a `clock_step` fault, said once: nothing decides by the
    /// wall clock, but what is stamped with it (events, the state file) jumps. The state file
    /// is written again on the new clock, so that a restart still finds it fresh; the fault
    /// clears at the next tick that sees the clocks agree.
    fn watch_wall_clock(&mut self) {
        let faults = &self.metrics.faults;
        match self
            .wall_watch
            .look(SystemTime::now(), crate::clock::monotonic())
        {
            Some(step) => {
                faults.raise(FaultKind::ClockStep, WALL_CLOCK, &step);
                crate::clock::rebase_wall();
                self.adapters.state.refresh(crate::clock::wall());
            }
            None => {
                faults.clear(FaultKind::ClockStep, WALL_CLOCK);
            }
        }
    }

    /// Ask the resolver again for hostname endpoints of running links without a session (the
    /// peer may have moved), one lookup per link at a time.
    fn resolve_silent_endpoints(&mut self) {
        let names: Vec<String> = self.links.iter().map(|(n, _)| n.clone()).collect();
        for name in names {
            let up = self.links.state(&name) == Some(isthmus_api::LinkState::Up);
            let Some(e) = self.links.get_mut(&name) else {
                continue;
            };
            let Endpoint::Host { host, port } = &e.config.peer_endpoint else {
                continue;
            };
            if e.ifindex.is_none() || e.resolving || up {
                continue;
            }
            e.resolving = true;
            let _ = self.adapters.resolver.send(Lookup {
                link: name.clone(),
                host: host.clone(),
                port: *port,
            });
        }
    }

    fn on_probe(&mut self, p: &ProbeIn) {
        if let Some(rtt) = self.failover.handle_datagram(p) {
            self.metrics.observe_rtt(&p.link, rtt);
        }
    }

    fn on_input(&mut self, input: Input, now: Instant) {
        match input {
            Input::Signal(Signal::Stop) => {
                tracing::info!("stop requested: releasing routes, then stopping the links");
                self.begin_shutdown(now);
            }
            Input::Signal(Signal::Reload) => {
                tracing::info!("SIGHUP: reloading the config");
                self.start_reload(None);
            }
            Input::Link(report) => self.on_link(report),
            Input::Routes(report) => self.on_routes(report, now),
            Input::Resolved(r) => self.on_resolved(r),
            Input::Target((key, outcome, at)) => self.on_target(key, outcome, at.into_std()),
            Input::ConfigLoaded { result, reply } => self.finish_reload(result, reply, now),
            Input::Action(report) => self.on_action(report, now),
            Input::Hook(report) => self.on_hook(&report),
            Input::DryRun(report) => super::drill::on_dry_run(self, report),
            Input::Drill(report) => super::drill::on_stream(self, report),
            Input::Ha(report) => self.on_ha(report, now),
        }
    }

    fn on_link(&mut self, report: LinkReport) {
        let changed = self.links.handle_report(&report);
        match report {
            LinkReport::Started { link, .. } => {
                // A hostname endpoint: look it up now that the link can use it.
                if let Some(e) = self.links.get_mut(&link) {
                    e.resolving = false;
                }
                self.resolve_silent_endpoints();
            }
            LinkReport::Stopped { .. } => {}
            LinkReport::Applied { changes } => {
                self.reload_done(changes);
                self.links_started = true;
            }
            LinkReport::AllStopped => {
                if matches!(self.phase, Phase::StoppingLinks { .. }) {
                    self.phase = Phase::Done;
                }
                return;
            }
        }
        if changed {
            self.sync_transport();
        }
        if changed || (self.phase == Phase::Starting && self.links_started) {
            self.reconcile_routes();
        }
        self.maybe_ready();
    }

    fn on_routes(&mut self, report: RoutesReport, now: Instant) {
        match report {
            RoutesReport::Applied {
                generation,
                stats,
                conflicts,
                host_warnings,
            } => {
                self.applied = self.applied.max(generation);
                self.route_stats = stats;
                self.host_warnings = host_warnings;
                for c in conflicts {
                    self.push_event(events::record(EventKind::RouteConflict, c));
                }
                while self
                    .waiting
                    .front()
                    .is_some_and(|(g, _)| *g <= self.applied)
                {
                    if let Some((_, step)) = self.waiting.pop_front() {
                        self.run_step(step);
                    }
                }
                self.maybe_ready();
            }
            RoutesReport::Released => {
                if matches!(self.phase, Phase::Releasing { .. }) {
                    self.stop_links(now);
                }
            }
        }
    }

    /// READY once the links adapter did the start-up apply and the routes that followed it are
    /// in the kernel (so the host check has seen the tunnel interfaces too).
    fn maybe_ready(&mut self) {
        if self.phase == Phase::Starting && self.links_started && self.applied >= self.sent {
            self.phase = Phase::Running;
            (self.adapters.on_ready)();
            tracing::info!(
                agent = %self.running.config.agent.name,
                config = %self.running.config.path.display(),
                fingerprint = %self.running.fingerprint,
                links = self.running.config.links.len(),
                "agentd ready"
            );
        }
    }

    fn on_resolved(&mut self, r: Resolved) {
        let Some(e) = self.links.get_mut(&r.link) else {
            return;
        };
        e.resolving = false;
        match r.result {
            Ok(addr) => {
                e.resolve_error = None;
                let _ = self
                    .adapters
                    .links
                    .send(LinkCmd::SetEndpoint { link: r.link, addr });
            }
            Err(error) => {
                if e.resolve_error.as_deref() != Some(error.as_str()) {
                    tracing::warn!(link = %r.link, host = %r.host, %error, "cannot resolve the peer endpoint; retrying every 5 s");
                }
                e.resolve_error = Some(error);
            }
        }
    }

    /// The actions adapter reports on a target.
    fn on_action(&mut self, report: ActionReport, now: Instant) {
        self.metrics.observe_action(&report);
        if let Some(rec) = self.action_book.handle(&report, now) {
            match rec.kind {
                EventKind::ActionFailed => {
                    tracing::warn!(target = %report.target, reason = %rec.reason, "action failed")
                }
                _ => {
                    tracing::info!(target = %report.target, kind = %rec.kind, reason = %rec.reason, "action")
                }
            }
            self.push_event(rec);
        }
    }

    fn on_hook(&mut self, report: &HookReport) {
        self.metrics.observe_hook(report);
        let rec = super::actions::hook_record(report);
        if report.success() {
            tracing::info!(hook = %report.hook, group = %report.group, result = %rec.reason, "hook ran");
        } else {
            tracing::warn!(hook = %report.hook, group = %report.group, result = %rec.reason, "hook failed");
        }
        self.push_event(rec);
    }

    /// Hooks of a transition.
    fn run_hooks(&mut self, t: &Transition, at: SystemTime) {
        let time = crate::events::rfc3339_at(at);
        for run in super::actions::hook_runs(&self.running.config, t, &time) {
            let _ = self.adapters.actions.send(ActionsCmd::Hook(run));
        }
    }

    /// A target check finished: keep the result, log a change of state.
    fn on_target(&mut self, key: JobKey, outcome: Outcome, at: Instant) {
        self.metrics.observe_target(
            &key.probe,
            key.link.as_deref().unwrap_or(""),
            outcome.ok,
            outcome.reason.as_str(),
            outcome.duration,
        );
        let before = self.targets.get(&key).map(|t| t.last.ok);
        if before != Some(outcome.ok) {
            let word = |ok: bool| if ok { "ok" } else { "failing" }.to_owned();
            let mut rec = events::record(
                EventKind::ProbeChanged,
                format!(
                    "{} after {:.1} ms",
                    outcome.reason.as_str(),
                    outcome.duration.as_secs_f64() * 1e3
                ),
            );
            rec.group = Some(format!("probe {key}"));
            rec.link = key.link.clone();
            rec.from = before.map(word);
            rec.to = Some(word(outcome.ok));
            tracing::info!(probe = %key, ok = outcome.ok, reason = outcome.reason.as_str(), "target probe changed");
            self.push_event(rec);
        }
        let probe = key.probe.clone();
        let entry = self.targets.entry(key).or_insert(TargetState {
            last: outcome,
            at,
            successes: 0,
            failures: 0,
        });
        if outcome.ok {
            entry.successes += 1;
        } else {
            entry.failures += 1;
        }
        entry.last = outcome;
        entry.at = at;
        if before != Some(outcome.ok) {
            self.feed_checks(&probe, at);
        }
    }

    /// A check changed state: give the engine the verdicts of the route groups and DNS groups
    /// that use it.
    fn feed_checks(&mut self, probe: &str, now: Instant) {
        let config = self.running.config.clone();
        let mut fed = false;
        for g in config
            .route_groups
            .iter()
            .filter(|g| g.checks.iter().any(|c| c == probe))
        {
            for link in &g.links {
                let states = g
                    .checks
                    .iter()
                    .map(|c| super::actions::probe_state(&self.targets, c, Some(link)));
                let verdict = super::actions::all_pass(states);
                self.failover.handle_checks(&g.name, link, verdict, now);
                fed = true;
            }
        }
        for g in config.dns_groups.iter().filter(|g| {
            g.answers
                .iter()
                .any(|a| a.checks.iter().any(|c| c == probe))
        }) {
            let states = self.answer_checks(g);
            self.failover.handle_answer_checks(&g.name, states, now);
            fed = true;
        }
        if fed {
            self.after_engine(now);
        }
    }

    /// Give the engine every DNS group's answer states as they stand (start-up, reload).
    /// Checks feed the engine only when a probe changes state, so without this a group none of
    /// whose answers has checks (each passes) would never be decided, nor would a reloaded
    /// group whose answers changed (its states start over) until one of its probes changed.
    pub(super) fn feed_dns_groups(&mut self, now: Instant) {
        let config = self.running.config.clone();
        for g in &config.dns_groups {
            let states = self.answer_checks(g);
            self.failover.handle_answer_checks(&g.name, states, now);
        }
        self.after_engine(now);
    }

    /// This side's verdict of each answer of `g`, in order (an answer without checks passes).
    fn answer_checks(&self, g: &isthmus_config::DnsGroup) -> Vec<isthmus_core::CheckState> {
        g.answers
            .iter()
            .map(|a| {
                let states = a
                    .checks
                    .iter()
                    .map(|c| super::actions::probe_state(&self.targets, c, None));
                super::actions::all_pass(states)
            })
            .collect()
    }

    /// Send what the engine asks to transmit, log its events, and move routes if an active link
    /// changed.
    pub(super) fn after_engine(&mut self, now: Instant) {
        while let Some(t) = self.failover.poll_transmit(now) {
            // A link whose socket is gone simply gets no answer: lost.
            self.adapters.transport.send(&t.link, &t.bytes);
        }
        let mut moved = false;
        let mut decided = false;
        let wall = SystemTime::now();
        while let Some(e) = self.failover.poll_event() {
            self.metrics.on_event(&e, now);
            failover::log_event(&e);
            if let isthmus_core::Event::ActiveLinkChanged { group, .. } = &e {
                moved = true;
                self.decided_groups.insert(group.clone());
            }
            decided |= failover::decides_actions(&e);
            let (rec, at) =
                failover::to_record(&e, now, wall, |g, i| self.failover.answer_value(g, i));
            if let Some(t) = failover::transition(&e, &rec) {
                self.run_hooks(&t, at);
            }
            self.events.push(rec, at);
        }
        if moved {
            self.reconcile_routes();
        }
        if moved || decided {
            self.reconcile_actions(now);
        }
        self.push_path_limits();
    }

    /// Tell each link's worker the path MTU it holds packets to (two relaxed stores per link:
    /// cheap enough to do after every engine input).
    fn push_path_limits(&self) {
        for link in &self.running.config.links {
            if let Some(c) = self.links.counters(&link.name) {
                let (tx, rx) = self.failover.path_limits(link);
                c.limits.set(tx, rx);
            }
        }
    }

    /// Each route group's active link, as the failover engine chose it (none: fail closed).
    pub(super) fn active_links(&self) -> BTreeMap<String, String> {
        self.running
            .config
            .route_groups
            .iter()
            .filter_map(|g| self.failover.active(&g.name).map(|l| (g.name.clone(), l)))
            .collect()
    }

    /// What a restart should take again: each route group's active link, or the one it still
    /// waits to take again after this start.
    fn persisted_links(&self) -> BTreeMap<String, String> {
        self.running
            .config
            .route_groups
            .iter()
            .filter_map(|g| {
                let link = self
                    .failover
                    .active(&g.name)
                    .or_else(|| self.failover.restoring(&g.name))?;
                Some((g.name.clone(), link))
            })
            .collect()
    }

    /// Send the desired routes if they changed; the generation that covers them. The state
    /// file follows the same active links.
    pub(super) fn reconcile_routes(&mut self) -> u64 {
        let persisted = self.persisted_links();
        self.adapters.state.save(&persisted, crate::clock::wall());
        let config = &self.running.config;
        let desired = routes::desired(config, &self.active_links(), |l| self.links.ifindex(l));
        let host = HostCheck {
            interfaces: self.links.interfaces(),
            v6: config
                .route_groups
                .iter()
                .any(|g| g.destinations.iter().any(|d| d.is_ipv6())),
        };
        if self.last_desired.as_ref() == Some(&(desired.clone(), host.clone())) && self.sent > 0 {
            return self.sent;
        }
        self.sent += 1;
        let _ = self.adapters.routes.send(RoutesCmd::Apply {
            generation: self.sent,
            desired: desired.clone(),
            protocol: config.routes.protocol,
            host: host.clone(),
        });
        self.last_desired = Some((desired, host));
        self.sent
    }

    /// Whether the kernel holds every route asked for so far.
    pub(super) fn routes_applied(&self) -> bool {
        self.applied >= self.sent
    }

    /// Run `step` once the routes of `generation` are applied.
    pub(super) fn after_routes(&mut self, generation: u64, step: Step) {
        if generation <= self.applied && self.waiting.is_empty() {
            self.run_step(step);
        } else {
            self.waiting.push_back((generation, step));
        }
    }

    pub(super) fn run_step(&mut self, step: Step) {
        match step {
            Step::ApplyLinks(links) => {
                let _ = self.adapters.links.send(LinkCmd::Apply(links));
            }
        }
    }

    /// Keep a probe socket on every running link; the engine gets the keys of those that have
    /// one.
    pub(super) fn sync_transport(&mut self) {
        let config = self.running.config.clone();
        let links = &self.links;
        let ready = self.adapters.transport.sync(
            &config.links,
            &|l| links.ifindex(l).is_some(),
            config.health.probe_port,
        );
        let ready: Vec<&Link> = config
            .links
            .iter()
            .filter(|l| ready.contains(&l.name))
            .collect();
        self.failover.set_ready(&ready);
    }

    /// Price what the links sent since the last call (`isthmus_link_egress_cost_total`).
    pub(super) fn accumulate_egress(&mut self) {
        let links = &self.links;
        self.metrics.accumulate_egress(&self.running.config, |l| {
            links.counters(l).map(|c| {
                use std::sync::atomic::Ordering::Relaxed;
                (c.tx_bytes.load(Relaxed), c.tx_packets.load(Relaxed))
            })
        });
    }

    /// Record an operator's or the shell's own event, stamped with the wall clock.
    pub(super) fn push_event(&mut self, rec: EventRecord) {
        self.events.push(rec, SystemTime::now());
    }

    pub(super) fn events(&self) -> &EventLog {
        &self.events
    }

    fn begin_shutdown(&mut self, now: Instant) {
        if matches!(
            self.phase,
            Phase::Releasing { .. } | Phase::StoppingLinks { .. } | Phase::Done
        ) {
            return;
        }
        crate::notify::stopping();
        self.push_event(events::record(EventKind::Stopped, "agentd stopped"));
        // A clean stop hands the HA role over at once rather than when the lease expires.
        self.resign_ha();
        self.phase = Phase::Releasing {
            until: now + SHUTDOWN_STEP,
        };
        let _ = self.adapters.routes.send(RoutesCmd::Release);
    }

    fn stop_links(&mut self, now: Instant) {
        self.phase = Phase::StoppingLinks {
            until: now + SHUTDOWN_STEP,
        };
        let _ = self.adapters.links.send(LinkCmd::StopAll);
    }

    /// One route group's status.
    pub(super) fn group_status(&self, name: &str, now: Instant) -> Option<RouteGroupStatus> {
        let g = self.running.config.route_group(name)?;
        Some(RouteGroupStatus {
            name: g.name.clone(),
            destinations: g.destinations.iter().map(|n| n.to_string()).collect(),
            links: g.links.clone(),
            active_link: self.failover.active(name),
            checks: self.failover.group_checks(name, &g.links),
            checks_failing_everywhere: self.failover.checks_failing_everywhere(name),
            pinned: self.failover.pin_of(name).map(|p| isthmus_api::Pin {
                link: p.link,
                reason: p.reason,
                seconds_ago: now.saturating_duration_since(p.since).as_secs(),
            }),
        })
    }

    /// A snapshot for the readers off the loop.
    pub(super) fn view(&mut self, now: Instant) -> Arc<View> {
        self.accumulate_egress();
        let config = self.running.config.clone();
        let mut links = self.links.status();
        let mut engine = BTreeMap::new();
        for l in &mut links {
            if let Some(v) = self.failover.link_view(&l.name) {
                l.health = failover::api_health(v.health);
                l.own_health = failover::api_health(v.own);
                l.peer_health = v.peer.map(|p| failover::api_health(p.health));
                l.peer_protocol = (v.peer_version > 0).then_some(v.peer_version);
                l.peer_ha = self.failover.peer_ha(&l.name).map(|h| {
                    let role = match h.role {
                        isthmus_core::AnnouncedRole::Active => "active",
                        isthmus_core::AnnouncedRole::Unsure => "unsure",
                        isthmus_core::AnnouncedRole::Standby => "standby",
                    };
                    format!("{role} (revision {})", h.revision)
                });
                l.drained = v.drained;
                if v.figures.samples > 0 {
                    l.figures = Some(failover::api_figures(&v.figures));
                }
                l.probe_drops = v.probe_drops.clone();
                if let Some(m) = &v.path_mtu {
                    failover::fill_path_mtu(&mut l.path_mtu, m);
                }
                engine.insert(l.name.clone(), v);
            }
        }
        let groups: Vec<RouteGroupStatus> = config
            .route_groups
            .iter()
            .filter_map(|g| self.group_status(&g.name, now))
            .collect();
        let peer_pinned = groups
            .iter()
            .map(|g| {
                let pinned = g
                    .active_link
                    .as_ref()
                    .and_then(|l| engine.get(l))
                    .and_then(|v: &failover::LinkView| v.peer)
                    .is_some_and(|p| p.pinned);
                (g.name.clone(), pinned)
            })
            .collect();
        Arc::new(View {
            drill: self
                .drill
                .as_ref()
                .filter(|d| !d.is_over())
                .map(|d| d.brief(now)),
            peer_drill: self.failover.peer_drill(),
            ha: self.ha_status(now),
            now,
            wall: SystemTime::now(),
            config: config.clone(),
            config_path: config.path.clone(),
            fingerprint: self.running.fingerprint.clone(),
            loaded_at: self.running.loaded_at,
            config_warnings: self.running.warnings.clone(),
            started_at: self.started_at,
            reloads_applied: self.reloads_applied,
            reloads_rejected: self.reloads_rejected,
            last_rejected: self.last_rejected.clone(),
            metrics_listener: self.adapters.metrics_listener.borrow().clone(),
            loop_lag: self.lag.summary(),
            event_log_dropped: self.events.dropped(),
            links,
            engine,
            counters: self
                .links
                .iter()
                .map(|(n, e)| (n.clone(), e.counters.clone()))
                .collect(),
            groups,
            dns_groups: self.dns_status(),
            actions: self.action_book.status(now),
            peer_pinned,
            routes: self.route_stats.clone(),
            host_warnings: self.host_warnings.clone(),
            targets: self.targets.clone(),
            data_plane: self.links.data_plane(now),
            metrics: self.metrics.clone(),
        })
    }

    fn dns_status(&self) -> Vec<isthmus_api::DnsGroupStatus> {
        let config = &self.running.config;
        config
            .dns_groups
            .iter()
            .map(|g| {
                let report = self.failover.answer_states(&g.name);
                let chosen = self.failover.answer(&g.name);
                isthmus_api::DnsGroupStatus {
                    name: g.name.clone(),
                    record: g.record.clone(),
                    record_type: g.record_type.as_str().to_string(),
                    ttl: g.ttl,
                    provider: g.provider.clone(),
                    answers: g
                        .answers
                        .iter()
                        .enumerate()
                        .map(|(i, a)| isthmus_api::AnswerStatus {
                            value: a.value.clone(),
                            checks: a.checks.clone(),
                            own: report
                                .own
                                .get(i)
                                .copied()
                                .unwrap_or(isthmus_api::CheckState::Unknown),
                            peer: report.peer.as_ref().and_then(|p| p.get(i).copied()),
                        })
                        .collect(),
                    chosen: chosen
                        .and_then(|i| g.answers.get(i))
                        .map(|a| a.value.clone()),
                    no_answer_passes: report.no_answer_passes,
                }
            })
            .collect()
    }

    fn on_command(&mut self, command: Command, now: Instant) {
        super::commands::handle(self, command, now);
    }
}
