//! The daemon: one event loop that owns all state.
//!
//! Inputs are signals (SIGTERM/SIGINT stop, SIGHUP reloads), control commands and the watchdog
//! tick; each is handled to completion before the next, so no state is shared or locked. An
//! error while handling one input is logged once and the loop goes on; only set-up failures end
//! the process. The watchdog is pinged from inside the loop, so a stuck loop stops the pings and
//! systemd restarts agentd.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use isthmus_api::{ErrorBody, ErrorKind, ReloadOutcome, RouteGroupStatus};
use isthmus_config::LoadOptions;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::{mpsc, watch};

use crate::control::{self, Command, Limits, Policy};
use crate::events::{self, EventLog};
use crate::failover::{self, Failover};
use crate::logging::LogControl;
use crate::metrics::Metrics;
use crate::netlink::Netlink;
use crate::probe::job::{jobs, JobKey};
use crate::probe::peer::ProbeIn;
use crate::probe::target::{Outcome, ProbeResult, TargetProbes};
use crate::reload::{self, Running};
use crate::routes::{self, RouteManager};
use crate::tunnel::Tunnels;
use crate::{host, notify, status};

/// How often failed links are retried, silent hostname endpoints re-resolved, host settings
/// checked and routes fully resynced (netlink events cover the time in between).
const MAINTAIN_EVERY: Duration = Duration::from_secs(5);
/// Kernel route events come in bursts (our own writes among them): wait this long and
/// reconcile once.
const ROUTE_EVENT_DEBOUNCE: Duration = Duration::from_millis(20);

/// The latest result of a target check.
pub struct TargetState {
    pub last: Outcome,
    pub at: Instant,
    pub successes: u64,
    pub failures: u64,
}

/// What the loop knows; read by [`status::build`].
pub struct State {
    pub tunnels: Tunnels,
    pub routes: RouteManager,
    pub failover: Failover,
    pub events: EventLog,
    /// Target checks (`[[probe]]`, per link where route groups check them) and their latest
    /// results.
    targets: TargetProbes,
    pub target_results: BTreeMap<JobKey, TargetState>,
    /// Tables that held agentd's routes at the last reconcile (to clean them when unused).
    route_tables: Vec<u32>,
    pub host_warnings: Vec<String>,
    metrics: Metrics,
    /// The metrics listener follows `[metrics].listen` through this...
    metrics_listen: watch::Sender<std::net::SocketAddr>,
    /// ...and says here whether it listens.
    pub metrics_listener: watch::Receiver<isthmus_api::MetricsListener>,
    pub started_at: Instant,
    pub config_path: PathBuf,
    pub running: Running,
    pub reloads_applied: u64,
    pub reloads_rejected: u64,
    /// When the last rejected reload happened, how many errors, and the first one.
    pub last_rejected: Option<(Instant, usize, String)>,
}

pub async fn run(running: Running, opts: LoadOptions, log: LogControl) -> anyhow::Result<()> {
    let control_cfg = running.config.control.clone();
    let policy = Policy::from_config(&control_cfg);
    let (listener, mut socket) = control::socket::bind(
        &control_cfg.socket,
        control_cfg.socket_mode,
        policy.read_gid(),
    )?;
    let mut sigterm = signal(SignalKind::terminate()).context("installing SIGTERM handler")?;
    let mut sigint = signal(SignalKind::interrupt()).context("installing SIGINT handler")?;
    let mut sighup = signal(SignalKind::hangup()).context("installing SIGHUP handler")?;

    let (policy_tx, policy_rx) = watch::channel(policy);
    let (command_tx, mut commands) = mpsc::channel(64);
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let metrics = Metrics::new();
    let server = tokio::spawn(control::serve(
        listener,
        Limits::from_config(&control_cfg),
        policy_rx,
        command_tx.clone(),
        metrics.control_requests.clone(),
        shutdown_rx.clone(),
    ));
    let (metrics_listen, listen_rx) = watch::channel(running.config.metrics.listen);
    let (listener_tx, metrics_listener) = watch::channel(isthmus_api::MetricsListener {
        listen: running.config.metrics.listen.to_string(),
        listening: false,
        error: None,
    });
    let metrics_server = tokio::spawn(crate::metrics::server::serve(
        listen_rx,
        listener_tx,
        command_tx,
        shutdown_rx,
    ));

    let netlink = Netlink::connect()?;
    let mut tunnels = Tunnels::new(netlink, running.config.agent.uapi_dir.clone());
    for change in tunnels.apply(&running.config.links).await {
        tracing::debug!(change, "start-up");
    }

    let routes = RouteManager::new(
        routes::kernel::Kernel::connect()?,
        running.config.routes.protocol,
    );
    let (route_events_tx, mut route_events) = mpsc::channel(1);
    routes::kernel::watch(route_events_tx);

    let (probe_tx, mut probes) = mpsc::channel::<ProbeIn>(1024);
    let mut failover = Failover::new(&running.config, probe_tx, Instant::now());
    failover.sync_sockets(&running.config, |l| tunnels.ifindex(l).is_some());
    let mut event_log = EventLog::open(&running.config.agent.state_dir);
    event_log.push(
        events::record(
            "started",
            format!("agentd {} started", env!("CARGO_PKG_VERSION")),
        ),
        std::time::SystemTime::now(),
    );

    let (target_tx, mut target_results) = mpsc::channel::<ProbeResult>(256);
    let targets = TargetProbes::start(&jobs(&running.config), target_tx);

    let mut watchdog = notify::watchdog_interval().map(tokio::time::interval);
    let mut maintain = tokio::time::interval(MAINTAIN_EVERY);
    let mut state = State {
        tunnels,
        routes,
        failover,
        events: event_log,
        targets,
        target_results: BTreeMap::new(),
        route_tables: Vec::new(),
        host_warnings: Vec::new(),
        metrics,
        metrics_listen,
        metrics_listener,
        started_at: Instant::now(),
        config_path: running.config.path.clone(),
        running,
        reloads_applied: 0,
        reloads_rejected: 0,
        last_rejected: None,
    };
    state.metrics.follow_config(&state.running.config);
    for w in &state.running.warnings {
        tracing::warn!(warning = %w.message, line = w.line, "config warning");
    }
    state.reconcile_routes().await;
    state.check_host();
    notify::ready();
    tracing::info!(
        agent = %state.running.config.agent.name,
        config = %state.config_path.display(),
        fingerprint = %state.running.fingerprint,
        socket = %socket.path().display(),
        links = state.running.config.links.len(),
        "agentd ready"
    );

    loop {
        tokio::select! {
            _ = sigterm.recv() => { tracing::info!("SIGTERM: shutting down"); break; }
            _ = sigint.recv() => { tracing::info!("SIGINT: shutting down"); break; }
            _ = sighup.recv() => {
                tracing::info!("SIGHUP: reloading the config");
                // The outcome is logged inside; nobody waits for it.
                let _ = state.reload(&opts, &log, &policy_tx, &mut socket).await;
            }
            Some(command) = commands.recv() => match command {
                Command::Status { access, reply } => {
                    let _ = reply.send(status::build(&state, access));
                }
                Command::Reload { reply } => {
                    tracing::info!("reload requested over the control socket");
                    let _ = reply.send(state.reload(&opts, &log, &policy_tx, &mut socket).await);
                }
                Command::Links { reply } => {
                    let _ = reply.send(state.link_statuses());
                }
                Command::Routes { reply } => {
                    let desired = state.desired_routes();
                    let tunnels = &state.tunnels;
                    let report = state
                        .routes
                        .status(&desired, |i| tunnels.interface_of(i), state.host_warnings.clone())
                        .await;
                    let _ = reply.send(report);
                }
                Command::Failover { group, to, reason, reply } => {
                    let _ = reply.send(state.failover(&group, &to, &reason).await);
                }
                Command::Failback { group, reply } => {
                    let _ = reply.send(state.failback(&group).await);
                }
                Command::Drain { link, on, reply } => {
                    let _ = reply.send(state.drain(&link, on).await);
                }
                Command::Events { since, limit, reply } => {
                    let _ = reply.send(state.events.since(since, limit));
                }
                Command::Probes { reply } => {
                    let _ = reply.send(status::probes(&state));
                }
                Command::Metrics { reply } => {
                    state.accumulate_egress();
                    let _ = reply.send(crate::metrics::render(&state.metrics, &state));
                }
                Command::Health { reply } => {
                    let _ = reply.send(state.tunnels.data_plane(Instant::now()));
                }
            },
            Some((name, outcome, at)) = target_results.recv() => {
                state.on_target(name, outcome, at.into_std());
            }
            Some(probe) = probes.recv() => {
                state.on_probe(probe);
                // Drain what else arrived, then act once.
                while let Ok(p) = probes.try_recv() {
                    state.on_probe(p);
                }
                state.after_engine().await;
            }
            _ = sleep_until(state.failover.deadline()) => {
                state.failover.on_timeout(Instant::now());
                state.after_engine().await;
            }
            Some(()) = route_events.recv() => {
                tokio::time::sleep(ROUTE_EVENT_DEBOUNCE).await;
                while route_events.try_recv().is_ok() {}
                state.reconcile_routes().await;
            }
            _ = maintain.tick() => {
                state.tunnels.maintain().await;
                let tunnels = &state.tunnels;
                state.failover.sync_sockets(&state.running.config, |l| tunnels.ifindex(l).is_some());
                state.reconcile_routes().await;
                state.check_host();
                state.accumulate_egress();
            }
            _ = tick(&mut watchdog) => notify::watchdog(),
        }
    }

    notify::stopping();
    state.events.push(
        events::record("stopped", "agentd stopped"),
        std::time::SystemTime::now(),
    );
    let desired = state.desired_routes();
    state.routes.release(&desired).await;
    state.tunnels.stop_all();
    let _ = shutdown_tx.send(true);
    if let Err(e) = server.await {
        tracing::error!(error = %e, "control server task failed");
    }
    if let Err(e) = metrics_server.await {
        tracing::error!(error = %e, "metrics server task failed");
    }
    socket.remove();
    tracing::info!("agentd stopped");
    Ok(())
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        // Never spin: at least a millisecond between engine timer runs.
        Some(d) => {
            let floor = Instant::now() + Duration::from_millis(1);
            tokio::time::sleep_until(d.max(floor).into()).await
        }
        None => std::future::pending().await,
    }
}

async fn tick(interval: &mut Option<tokio::time::Interval>) {
    match interval {
        Some(i) => {
            i.tick().await;
        }
        None => std::future::pending().await,
    }
}

impl State {
    /// Each route group's active link, as the failover engine chose it (none: fail closed).
    pub fn active_links(&self) -> BTreeMap<String, String> {
        self.running
            .config
            .route_groups
            .iter()
            .filter_map(|g| self.failover.active(&g.name).map(|l| (g.name.clone(), l)))
            .collect()
    }

    /// Price what the links sent since the last call (`isthmus_link_egress_cost_total`).
    fn accumulate_egress(&mut self) {
        let tunnels = &self.tunnels;
        self.metrics.accumulate_egress(&self.running.config, |l| {
            tunnels.counters(l).map(|c| {
                use std::sync::atomic::Ordering::Relaxed;
                (c.tx_bytes.load(Relaxed), c.tx_packets.load(Relaxed))
            })
        });
    }

    /// A peer probe arrived (or was refused).
    fn on_probe(&mut self, probe: ProbeIn) {
        if let Some((link, rtt)) = self.failover.on_probe(probe) {
            self.metrics.observe_rtt(&link, rtt);
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
        let before = self.target_results.get(&key).map(|t| t.last.ok);
        if before != Some(outcome.ok) {
            let word = |ok: bool| if ok { "ok" } else { "failing" }.to_owned();
            let mut rec = events::record(
                "probe_changed",
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
            self.events.push(rec, std::time::SystemTime::now());
        }
        let entry = self.target_results.entry(key).or_insert(TargetState {
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
    }

    /// Tunnel state and counters, with the engine's health and measurements.
    pub fn link_statuses(&self) -> Vec<isthmus_api::LinkStatus> {
        let mut links = self.tunnels.status();
        for l in &mut links {
            if let Some(h) = self.failover.health(&l.name) {
                l.health = h.as_str().to_owned();
            }
            if let Some((own, peer, figures)) = self.failover.report(&l.name) {
                l.own_health = own.as_str().to_owned();
                l.peer_health = peer.map(|p| p.health.as_str().to_owned());
                l.drained = self.failover.drained(&l.name) || peer.is_some_and(|p| p.draining);
                if figures.samples > 0 {
                    l.figures = Some(failover::api_figures(&figures));
                }
            }
            l.probe_drops = self.failover.probe_drops(&l.name);
        }
        links
    }

    /// Log what the engine decided and move routes if an active link changed.
    async fn after_engine(&mut self) {
        let now = Instant::now();
        let mut moved = false;
        for e in self.failover.flush(now) {
            self.metrics.on_event(&e, now);
            let (rec, at) = failover::to_record(&e, now);
            match rec.kind.as_str() {
                "active_link_changed" => {
                    moved = true;
                    tracing::warn!(group = ?rec.group, from = ?rec.from, to = ?rec.to, reason = %rec.reason, "active link changed");
                }
                "ranking_mismatch" => {
                    tracing::warn!(link = ?rec.link, reason = %rec.reason, "link ranking differs from the peer's")
                }
                _ => {
                    tracing::info!(link = ?rec.link, from = ?rec.from, to = ?rec.to, reason = %rec.reason, "link health changed")
                }
            }
            self.events.push(rec, at);
        }
        if moved {
            self.reconcile_routes().await;
        }
    }

    fn desired_routes(&self) -> routes::Desired {
        routes::desired(&self.running.config, &self.active_links(), |link| {
            self.tunnels.ifindex(link)
        })
    }

    async fn reconcile_routes(&mut self) {
        let desired = self.desired_routes();
        let previous = std::mem::replace(&mut self.route_tables, desired.tables());
        self.routes.reconcile(&desired, &previous).await;
        for conflict in std::mem::take(&mut self.routes.fresh_conflicts) {
            self.events.push(
                events::record("route_conflict", conflict),
                std::time::SystemTime::now(),
            );
        }
    }

    fn check_host(&mut self) {
        let v6 = self
            .running
            .config
            .route_groups
            .iter()
            .any(|g| g.destinations.iter().any(|d| d.is_ipv6()));
        let warnings = host::forwarding_warnings(&self.tunnels.interfaces(), v6);
        for w in &warnings {
            if !self.host_warnings.contains(w) {
                tracing::warn!(warning = %w, "host setting breaks forwarding");
            }
        }
        self.host_warnings = warnings;
    }

    pub fn group_status(&self, name: &str) -> Option<RouteGroupStatus> {
        let g = self.running.config.route_group(name)?;
        Some(RouteGroupStatus {
            name: g.name.clone(),
            destinations: g.destinations.iter().map(|n| n.to_string()).collect(),
            links: g.links.clone(),
            active_link: self.active_links().get(name).cloned(),
            pinned: self
                .failover
                .pin_of(name)
                .map(|(link, reason, at)| isthmus_api::Pin {
                    link,
                    reason,
                    seconds_ago: at.elapsed().as_secs(),
                }),
        })
    }

    async fn failover(
        &mut self,
        group: &str,
        to: &str,
        reason: &str,
    ) -> Result<RouteGroupStatus, ErrorBody> {
        let Some(g) = self.running.config.route_group(group) else {
            return Err(ErrorBody::new(
                ErrorKind::NotFound,
                format!("no route group {group:?}"),
            ));
        };
        if !g.links.iter().any(|l| l == to) {
            return Err(ErrorBody::new(
                ErrorKind::BadRequest,
                format!(
                    "link {to:?} is not in route group {group:?}; its links are {}",
                    g.links.join(", ")
                ),
            ));
        }
        let mut rec = events::record("pin", reason);
        rec.group = Some(group.to_owned());
        rec.to = Some(to.to_owned());
        self.events.push(rec, std::time::SystemTime::now());
        self.failover.pin(group, to, reason, Instant::now());
        self.after_engine().await;
        self.group_status(group)
            .ok_or_else(|| ErrorBody::new(ErrorKind::Internal, "group vanished"))
    }

    async fn failback(&mut self, group: &str) -> Result<RouteGroupStatus, ErrorBody> {
        if self.running.config.route_group(group).is_none() {
            return Err(ErrorBody::new(
                ErrorKind::NotFound,
                format!("no route group {group:?}"),
            ));
        }
        if self.failover.unpin(group, Instant::now()) {
            let mut rec = events::record("unpin", "returned to automatic choice");
            rec.group = Some(group.to_owned());
            self.events.push(rec, std::time::SystemTime::now());
        }
        self.after_engine().await;
        self.group_status(group)
            .ok_or_else(|| ErrorBody::new(ErrorKind::Internal, "group vanished"))
    }

    async fn drain(&mut self, link: &str, on: bool) -> Result<Vec<RouteGroupStatus>, ErrorBody> {
        if self.running.config.link(link).is_none() {
            return Err(ErrorBody::new(
                ErrorKind::NotFound,
                format!("no link {link:?}"),
            ));
        }
        let mut rec = events::record(
            "drain",
            if on {
                "drained for maintenance"
            } else {
                "drain ended"
            },
        );
        rec.link = Some(link.to_owned());
        self.events.push(rec, std::time::SystemTime::now());
        self.failover.set_drain(link, on, Instant::now());
        self.after_engine().await;
        Ok(self
            .running
            .config
            .route_groups
            .iter()
            .filter(|g| g.links.iter().any(|l| l == link))
            .filter_map(|g| self.group_status(&g.name))
            .collect())
    }

    /// Re-read the config file; apply it if valid, keep the running one if not.
    async fn reload(
        &mut self,
        opts: &LoadOptions,
        log: &LogControl,
        policy: &watch::Sender<Policy>,
        socket: &mut control::socket::BoundSocket,
    ) -> Result<ReloadOutcome, ErrorBody> {
        notify::reloading();
        let result = self.try_reload(opts, log, policy, socket).await;
        notify::ready();
        result
    }

    async fn try_reload(
        &mut self,
        opts: &LoadOptions,
        log: &LogControl,
        policy: &watch::Sender<Policy>,
        socket: &mut control::socket::BoundSocket,
    ) -> Result<ReloadOutcome, ErrorBody> {
        let new = match reload::load(&self.config_path, opts) {
            Ok(new) => new,
            Err(report) => {
                self.reloads_rejected += 1;
                let first = report
                    .errors()
                    .next()
                    .map(|d| match (d.line, d.column) {
                        (Some(l), Some(c)) => format!("{}:{l}:{c}: {}", d.file, d.message),
                        _ => format!("{}: {}", d.file, d.message),
                    })
                    .unwrap_or_default();
                tracing::error!(
                    config = %self.config_path.display(),
                    errors = report.error_count(),
                    first_error = %first,
                    "reload rejected; the running config stays"
                );
                self.last_rejected = Some((Instant::now(), report.error_count(), first));
                return Err(ErrorBody {
                    kind: ErrorKind::ConfigInvalid,
                    message: format!(
                        "{} has {} error(s); agentd keeps running the config loaded before \
                         (fingerprint {})",
                        self.config_path.display(),
                        report.error_count(),
                        self.running.fingerprint
                    ),
                    diagnostics: report.diagnostics,
                });
            }
        };
        let mut changes = reload::diff(&self.running.config, &new.config);
        changes
            .applied
            .extend(self.tunnels.apply(&new.config.links).await);
        self.routes.set_protocol(new.config.routes.protocol);
        let control_old = &self.running.config.control;
        let control_new = &new.config.control;
        if control_old.socket_mode != control_new.socket_mode
            || control_old.read_group != control_new.read_group
        {
            if let Err(e) =
                socket.set_access(control_new.socket_mode, control_new.read_group.resolve())
            {
                // The new policy still applies to credentials; only the file gate lags.
                tracing::warn!(error = %e, "cannot update the control socket's mode or group");
            }
        }
        policy.send_replace(Policy::from_config(control_new));
        log.set_level(new.config.agent.log_level);

        let changed = !changes.applied.is_empty() || !changes.needs_restart.is_empty();
        self.reloads_applied += 1;
        self.last_rejected = None;
        tracing::info!(
            fingerprint = %new.fingerprint,
            changes = ?changes.applied,
            needs_restart = ?changes.needs_restart,
            "config reloaded"
        );
        let outcome = ReloadOutcome {
            changed,
            fingerprint: new.fingerprint.clone(),
            changes: changes.applied,
            needs_restart: changes.needs_restart,
            warnings: new.warnings.clone(),
        };
        // Traffic so far is priced at the old price.
        self.accumulate_egress();
        self.running = new;
        let jobs = jobs(&self.running.config);
        self.targets.replace(&jobs);
        let keys: std::collections::BTreeSet<JobKey> = jobs.iter().map(|j| j.key()).collect();
        self.target_results.retain(|k, _| keys.contains(k));
        self.metrics.follow_config(&self.running.config);
        self.metrics_listen.send_if_modified(|addr| {
            let new = self.running.config.metrics.listen;
            std::mem::replace(addr, new) != new
        });
        self.failover
            .update_config(&self.running.config, Instant::now());
        let tunnels = &self.tunnels;
        self.failover
            .sync_sockets(&self.running.config, |l| tunnels.ifindex(l).is_some());
        let mut rec = events::record("reload", format!("config {} applied", outcome.fingerprint));
        rec.to = Some(outcome.fingerprint.clone());
        self.events.push(rec, std::time::SystemTime::now());
        self.after_engine().await;
        self.reconcile_routes().await;
        Ok(outcome)
    }
}
