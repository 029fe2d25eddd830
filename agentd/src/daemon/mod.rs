//! The daemon: the event loop ([`shell`]) and its wiring to the real adapters (here).
//!
//! Two runtimes. The loop runs on the main thread's runtime with nothing beside it but the
//! peer-probe sockets (whose receive timestamps must not wait) and the signal handlers. Every
//! adapter that talks to the world runs on a second runtime, `agentd-io`, on a thread of its own:
//! the control and metrics servers, the links adapter (TUN set-up through netlink; the link
//! workers are threads of their own), the routes adapter (netlink), the resolver, the target
//! checks; the event-log writer is a thread. A slow or stuck adapter then delays only itself,
//! never a probe. See `docs/development.md` for where a new adapter, action or endpoint goes.

pub mod actions;
pub mod commands;
pub mod drill;
mod ha;
pub mod input;
pub mod reload;
#[cfg(test)]
mod scenarios;
pub mod shell;
#[cfg(test)]
pub(crate) mod testbed;

use std::sync::Arc;

use anyhow::Context as _;
use isthmus_config::LoadOptions;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::{mpsc, watch};

use crate::control::{self, Limits, Policy};
use crate::logging::LogControl;
use crate::probe::job::Job;
use crate::probe::peer::PeerSockets;
use crate::probe::target::{ProbeResult, TargetProbes};
use crate::routes::{self, RouteManager};
use crate::tunnel::Tunnels;
use crate::{events, netlink, resolve};
use input::{Input, Signal};
pub use reload::Running;
use shell::{Adapters, Receivers, Shell};

/// Room in the loop's queues. Senders are adapters, which wait when a queue is full; the loop
/// never does.
const PROBE_QUEUE: usize = 1024;
const INPUT_QUEUE: usize = 1024;
const COMMAND_QUEUE: usize = 64;

pub async fn run(running: Running, opts: LoadOptions, log: LogControl) -> anyhow::Result<()> {
    let io = IoRuntime::start()?;
    let config = running.config.clone();
    let control_cfg = config.control.clone();
    let policy = Policy::from_config(&control_cfg);
    let (listener, socket) = {
        let _io = io.enter();
        control::socket::bind(
            &control_cfg.socket,
            control_cfg.socket_mode,
            policy.read_gid(),
        )?
    };
    let (inputs_tx, inputs) = mpsc::channel::<Input>(INPUT_QUEUE);
    let (probe_tx, probes) = mpsc::channel(PROBE_QUEUE);
    let (command_tx, commands) = mpsc::channel(COMMAND_QUEUE);
    forward_signals(inputs_tx.clone())?;

    let (policy_tx, policy_rx) = watch::channel(policy);
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let metrics = crate::metrics::Metrics::new();
    metrics.watch_runtimes(tokio::runtime::Handle::current(), io.handle.clone());
    let server = io.spawn(control::serve(
        listener,
        Limits::from_config(&control_cfg),
        policy_rx,
        command_tx.clone(),
        metrics.control_requests.clone(),
        metrics.control_refused.clone(),
        shutdown_rx.clone(),
    ));
    let (metrics_listen, listen_rx) = watch::channel(config.metrics.listen);
    let (listener_tx, metrics_listener) = watch::channel(isthmus_api::MetricsListener {
        listen: config.metrics.listen.to_string(),
        listening: false,
        error: None,
    });
    let metrics_server = io.spawn(crate::metrics::server::serve(
        listen_rx,
        listener_tx,
        command_tx,
        shutdown_rx,
    ));

    // The adapters, each a task on the I/O runtime.
    let (links_tx, links_rx) = mpsc::unbounded_channel();
    let (routes_tx, routes_rx) = mpsc::unbounded_channel();
    let (resolver_tx, resolver_rx) = mpsc::unbounded_channel();
    let (targets_tx, targets_rx) = mpsc::unbounded_channel();
    let (actions_tx, actions_rx) = mpsc::unbounded_channel();
    let (drill_tx, drill_rx) = mpsc::unbounded_channel();
    let (ha_tx, ha_rx) = mpsc::unbounded_channel();
    {
        let _io = io.enter();
        let netlink = netlink::Netlink::connect()?;
        let tunnels = Tunnels::new(
            netlink,
            config.agent.uapi_dir.clone(),
            inputs_tx.clone(),
            metrics.faults.clone(),
        );
        io.spawn(tunnels.run(links_rx));
        let kernel = routes::kernel::Kernel::connect()?;
        let (kernel_events_tx, kernel_events) = mpsc::channel(1);
        routes::kernel::watch(kernel_events_tx);
        io.spawn(routes::run(
            RouteManager::new(kernel, config.routes.protocol).with_faults(metrics.faults.clone()),
            routes_rx,
            kernel_events,
            Box::new(|h: &routes::HostCheck| crate::host::forwarding_warnings(&h.interfaces, h.v6)),
            inputs_tx.clone(),
        ));
        io.spawn(resolve::run(resolver_rx, inputs_tx.clone()));
        io.spawn(targets(targets_rx, inputs_tx.clone()));
        io.spawn(crate::actions::run(
            actions_rx,
            inputs_tx.clone(),
            metrics.faults.clone(),
        ));
        io.spawn(crate::drill::stream::run(drill_rx, inputs_tx.clone()));
        io.spawn(crate::ha::run(ha_rx, inputs_tx.clone()));
    }
    let writer = events::spawn_writer(
        &config.agent.state_dir,
        config.agent.event_log_max_bytes,
        metrics.faults.clone(),
    );
    let state = crate::state::spawn(
        &config.agent.state_dir,
        crate::clock::wall(),
        metrics.faults.clone(),
    );
    // Both files load on their writers' threads at once: a stuck disk costs one wait, not two.
    let (history, loaded) = tokio::join!(
        tokio::time::timeout(events::HISTORY_WAIT, writer.history),
        tokio::time::timeout(events::HISTORY_WAIT, state.loaded),
    );
    let history = match history {
        Ok(Ok(h)) => h,
        _ => {
            tracing::warn!(
                dir = %config.agent.state_dir.display(),
                "the event log file did not load in time; starting without the history"
            );
            Vec::new()
        }
    };
    let (loaded, seq_floor) = match loaded {
        Ok(Ok(loaded)) => (loaded.groups, loaded.seq_floor),
        // The writer thread did not start (said when it failed).
        Ok(Err(_)) => (Ok(None), None),
        Err(_) => (
            Err(crate::state::Ignored::Slow {
                path: config.agent.state_dir.join(crate::state::FILE),
                waited: events::HISTORY_WAIT,
            }),
            None,
        ),
    };

    let path = config.path.clone();
    let socket = Arc::new(std::sync::Mutex::new(socket));
    let socket_for_reload = socket.clone();
    let adapters = Adapters {
        links: links_tx,
        routes: routes_tx,
        actions: actions_tx,
        backends: Box::new(crate::actions::backends::build),
        resolver: resolver_tx,
        targets: targets_tx,
        drill: drill_tx,
        transport: Box::new(PeerSockets::new(probe_tx)),
        ha: ha_tx,
        loader: Arc::new(move || reload::load(&path, &opts)),
        on_config: Box::new(move |old, new| {
            let (co, cn) = (&old.control, &new.control);
            if co.socket_mode != cn.socket_mode || co.read_group != cn.read_group {
                let mut socket = socket_for_reload.lock().unwrap_or_else(|e| e.into_inner());
                if let Err(e) = socket.set_access(cn.socket_mode, cn.read_group.resolve()) {
                    // The new policy still applies to credentials; only the file gate lags.
                    tracing::warn!(error = %e, "cannot update the control socket's mode or group");
                }
            }
            policy_tx.send_replace(Policy::from_config(cn));
            log.set_level(new.agent.log_level);
            metrics_listen.send_if_modified(|addr| {
                std::mem::replace(addr, new.metrics.listen) != new.metrics.listen
            });
        }),
        metrics_listener,
        on_ready: Box::new(crate::notify::ready),
        watchdog: crate::notify::watchdog_interval(),
        state: state.saver,
    };
    let now = crate::clock::now();
    let mut shell = Shell::new(
        running,
        metrics,
        history,
        writer.entries,
        adapters,
        inputs_tx,
        now,
    );
    shell.restore(loaded);
    shell.continue_probe_numbers(seq_floor);
    shell
        .run(Receivers {
            probes,
            inputs,
            commands,
        })
        .await;

    let _ = shutdown_tx.send(true);
    if let Err(e) = server.await {
        tracing::error!(error = %e, "control server task failed");
    }
    if let Err(e) = metrics_server.await {
        tracing::error!(error = %e, "metrics server task failed");
    }
    // The shell is gone with its sender: the writer finishes what is queued (a stuck disk gets
    // a second, then is left behind).
    let _ = tokio::time::timeout(std::time::Duration::from_secs(1), writer.done).await;
    let _ = tokio::time::timeout(std::time::Duration::from_secs(1), state.done).await;
    socket.lock().unwrap_or_else(|e| e.into_inner()).remove();
    io.stop();
    tracing::info!("agentd stopped");
    Ok(())
}

/// The adapters' runtime, driven by a thread of its own.
struct IoRuntime {
    handle: tokio::runtime::Handle,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl IoRuntime {
    fn start() -> anyhow::Result<IoRuntime> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("starting the I/O runtime")?;
        let handle = rt.handle().clone();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("agentd-io".into())
            .spawn(move || {
                let _ = rt.block_on(stopped);
                // Whatever still runs (a hung lookup) is abandoned, not waited for.
                rt.shutdown_background();
            })
            .context("starting the I/O thread")?;
        Ok(IoRuntime {
            handle,
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    fn enter(&self) -> tokio::runtime::EnterGuard<'_> {
        self.handle.enter()
    }

    fn spawn<F>(&self, f: F) -> tokio::task::JoinHandle<F::Output>
    where
        F: std::future::Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.handle.spawn(f)
    }

    fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// SIGTERM and SIGINT stop, SIGHUP reloads: as inputs of the loop.
fn forward_signals(inputs: mpsc::Sender<Input>) -> anyhow::Result<()> {
    let mut term = signal(SignalKind::terminate()).context("installing SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("installing SIGINT handler")?;
    let mut hup = signal(SignalKind::hangup()).context("installing SIGHUP handler")?;
    tokio::spawn(async move {
        loop {
            let s = tokio::select! {
                _ = term.recv() => Signal::Stop,
                _ = int.recv() => Signal::Stop,
                _ = hup.recv() => Signal::Reload,
            };
            if inputs.send(Input::Signal(s)).await.is_err() {
                return;
            }
        }
    });
    Ok(())
}

/// The target checks adapter: runs the jobs it is sent (replacing the previous set) and
/// forwards every result to the loop.
pub async fn targets(mut jobs: mpsc::UnboundedReceiver<Vec<Job>>, inputs: mpsc::Sender<Input>) {
    let (results_tx, mut results) = mpsc::channel::<ProbeResult>(256);
    let forward = tokio::spawn(async move {
        while let Some(r) = results.recv().await {
            if inputs.send(Input::Target(r)).await.is_err() {
                return;
            }
        }
    });
    let mut probes: Option<TargetProbes> = None;
    while let Some(set) = jobs.recv().await {
        match &mut probes {
            Some(p) => p.replace(&set),
            None => probes = Some(TargetProbes::start(&set, results_tx.clone())),
        }
    }
    drop(probes);
    forward.abort();
}
