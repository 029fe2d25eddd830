//! The daemon: one event loop that owns all state.
//!
//! Inputs are signals (SIGTERM/SIGINT stop, SIGHUP reloads), control commands and the watchdog
//! tick; each is handled to completion before the next, so no state is shared or locked. An
//! error while handling one input is logged once and the loop goes on; only set-up failures end
//! the process. The watchdog is pinged from inside the loop, so a stuck loop stops the pings and
//! systemd restarts agentd.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context as _;
use isthmus_api::{ErrorBody, ErrorKind, ReloadOutcome};
use isthmus_config::LoadOptions;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::{mpsc, watch};

use crate::control::{self, Command, Limits, Policy};
use crate::logging::LogControl;
use crate::netlink::Netlink;
use crate::reload::{self, Running};
use crate::tunnel::Tunnels;
use crate::{notify, status};

/// How often failed links are retried and silent hostname endpoints re-resolved.
const MAINTAIN_EVERY: std::time::Duration = std::time::Duration::from_secs(5);

/// What the loop knows; read by [`status::build`].
pub struct State {
    pub tunnels: Tunnels,
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
    let server = tokio::spawn(control::serve(
        listener,
        Limits::from_config(&control_cfg),
        policy_rx,
        command_tx,
        shutdown_rx,
    ));

    let netlink = Netlink::connect()?;
    let mut tunnels = Tunnels::new(netlink, running.config.agent.uapi_dir.clone());
    for change in tunnels.apply(&running.config.links).await {
        tracing::debug!(change, "start-up");
    }

    let mut watchdog = notify::watchdog_interval().map(tokio::time::interval);
    let mut maintain = tokio::time::interval(MAINTAIN_EVERY);
    let mut state = State {
        tunnels,
        started_at: Instant::now(),
        config_path: running.config.path.clone(),
        running,
        reloads_applied: 0,
        reloads_rejected: 0,
        last_rejected: None,
    };
    for w in &state.running.warnings {
        tracing::warn!(warning = %w.message, line = w.line, "config warning");
    }
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
                    let _ = reply.send(state.tunnels.status());
                }
            },
            _ = maintain.tick() => state.tunnels.maintain().await,
            _ = tick(&mut watchdog) => notify::watchdog(),
        }
    }

    notify::stopping();
    state.tunnels.stop_all();
    let _ = shutdown_tx.send(true);
    if let Err(e) = server.await {
        tracing::error!(error = %e, "control server task failed");
    }
    socket.remove();
    tracing::info!("agentd stopped");
    Ok(())
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
        self.running = new;
        Ok(outcome)
    }
}
