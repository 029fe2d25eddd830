//! Encrypted links: one WireGuard tunnel per configured link, in userspace.
//!
//! [`Tunnels`] is the links adapter, a task of its own: it reconciles the running links with the
//! config it is sent ([`LinkCmd::Apply`]): it starts links that are new, stops links that are
//! gone, and changes the rest in place without dropping their session when only keys, allowed
//! IPs or the endpoint changed. Each running link is a [`worker`] thread that owns its TUN device,
//! UDP socket and boringtun `Tunn` (the tunnel loop); the adapter talks to it through a command
//! queue plus an eventfd. What happens to a link goes back to the event loop as a [`LinkReport`];
//! the loop keeps its own [`table::LinkTable`] from those reports and reads the workers'
//! [`counters::Counters`] without locks.
//!
//! A link that cannot be set up (interface name taken, underlay address missing) is reported as
//! failed with the reason and retried every [`RETRY_EVERY`]; the other links run on. Hostname
//! endpoints are resolved by the resolver adapter, never here: the loop sends the address with
//! [`LinkCmd::SetEndpoint`].
//!
//! **A TUN device lost while running** (deleted behind agentd's back, moved to another
//! namespace) is [`FaultKind::TunGone`]: the worker notices a deleted device at once and ends
//! (it tells the adapter through the `ended` channel); a device that vanished from agentd's
//! namespace while its fd still works is noticed by [`LinkCmd::Maintain`], which checks that
//! each running link's interface still has its index. The link is reported stopped (its routes
//! fall back to the fail-closed route) and recreated with the same name, MTU and addresses at
//! once, then after [`RECREATE_FIRST`], doubling up to [`RECREATE_MAX`] while it cannot be; the
//! fault is logged once and cleared when the link runs again.

pub mod counters;
pub mod table;
mod tun;
pub mod uapi;
pub(crate) mod udp;
mod underlay;
pub(crate) mod worker;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context as _};
use isthmus_config::{Endpoint, Link};
use tokio::sync::mpsc as tokio_mpsc;

use crate::daemon::input::Input;
use crate::faults::{FaultKind, Faults};
use crate::netlink::Netlink;
use counters::Counters;
use worker::{Command, Exit, Keys, Parts, Waker, Worker};

/// How often a link that failed to start (or whose worker ended) is tried again.
pub const RETRY_EVERY: Duration = Duration::from_secs(10);
/// A link whose TUN device was lost is recreated at once; if that fails, again after this,
/// doubling each time: quick when the name frees up soon, paced when it does not.
pub const RECREATE_FIRST: Duration = Duration::from_millis(100);
/// The longest wait between two attempts to recreate a lost TUN device: recovery comes at most
/// this long after the device can be created again.
pub const RECREATE_MAX: Duration = Duration::from_secs(4);

/// What the event loop asks of the links adapter.
#[derive(Debug)]
pub enum LinkCmd {
    /// Make the running links match these (with the counters the loop reads for each).
    /// Answered with [`LinkReport::Applied`] after the reports of what it started and stopped.
    Apply(Vec<(Link, Arc<Counters>)>),
    /// The peer's address for a link with a hostname endpoint (from the resolver).
    SetEndpoint { link: String, addr: SocketAddr },
    /// Retry links that failed and notice workers that ended.
    Maintain,
    /// Stop every link and remove its interface; answered with [`LinkReport::AllStopped`].
    StopAll,
}

/// What the links adapter tells the event loop.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinkReport {
    /// The link runs on a new TUN interface.
    Started {
        link: String,
        ifindex: u32,
    },
    /// The link does not run (it was stopped, or could not start: `error` says why).
    Stopped {
        link: String,
        error: Option<String>,
    },
    /// An [`LinkCmd::Apply`] is done; one line per change.
    Applied {
        changes: Vec<String>,
    },
    AllStopped,
}

struct Running {
    /// Tells this worker's end (in the `ended` channel) from an earlier one's.
    id: u64,
    /// The TUN interface's index, for routes.
    ifindex: u32,
    commands: mpsc::Sender<Command>,
    waker: Arc<Waker>,
    thread: JoinHandle<Exit>,
}

/// A link being recreated after its TUN device was lost: when to try next, and the wait after.
#[derive(Debug, Clone, Copy)]
struct Recovery {
    next: Instant,
    delay: Duration,
}

struct LinkEntry {
    config: Link,
    /// The config as the UAPI server (`wg show`) sees it; replaced on reload.
    shared: Arc<Mutex<Link>>,
    counters: Arc<Counters>,
    running: Option<Running>,
    uapi: Option<uapi::UapiHandle>,
    error: Option<String>,
    last_attempt: Instant,
    /// Set while the link recreates a lost TUN device ([`FaultKind::TunGone`] is active).
    recovery: Option<Recovery>,
}

pub struct Tunnels {
    netlink: Netlink,
    uapi_dir: PathBuf,
    links: BTreeMap<String, LinkEntry>,
    reports: tokio_mpsc::Sender<Input>,
    faults: Faults,
    /// Workers say here that they ended on their own: (link, worker id).
    ended: tokio_mpsc::UnboundedSender<(String, u64)>,
    ended_rx: Option<tokio_mpsc::UnboundedReceiver<(String, u64)>>,
    next_id: u64,
}

fn keys_of(link: &Link) -> Keys {
    Keys {
        private: *link.private_key.expose(),
        peer_public: link.peer_public_key.0,
        preshared: link.preshared_key.as_ref().map(|k| *k.expose()),
        keepalive: link
            .persistent_keepalive
            .map(|d| d.as_secs().min(u64::from(u16::MAX)) as u16),
    }
}

/// Settings whose change needs a new interface or socket.
fn needs_restart(old: &Link, new: &Link) -> bool {
    old.interface != new.interface
        || old.listen != new.listen
        || old.tun_mtu() != new.tun_mtu()
        || old.addresses != new.addresses
}

impl Tunnels {
    pub fn new(
        netlink: Netlink,
        uapi_dir: PathBuf,
        reports: tokio_mpsc::Sender<Input>,
        faults: Faults,
    ) -> Tunnels {
        let (ended, ended_rx) = tokio_mpsc::unbounded_channel();
        Tunnels {
            netlink,
            uapi_dir,
            links: BTreeMap::new(),
            reports,
            faults,
            ended,
            ended_rx: Some(ended_rx),
            next_id: 0,
        }
    }

    /// The adapter: carry out commands one at a time until the loop goes away; recreate links
    /// whose TUN device was lost.
    pub async fn run(mut self, mut commands: tokio_mpsc::UnboundedReceiver<LinkCmd>) {
        let Some(mut ended) = self.ended_rx.take() else {
            return;
        };
        loop {
            let due = self
                .links
                .values()
                .filter_map(|e| e.recovery)
                .map(|r| r.next)
                .min();
            let cmd = tokio::select! {
                cmd = commands.recv() => match cmd {
                    Some(cmd) => cmd,
                    None => break,
                },
                Some((link, id)) = ended.recv() => {
                    self.worker_ended(&link, Some(id)).await;
                    continue;
                }
                _ = sleep_until(due), if due.is_some() => {
                    self.recover_due().await;
                    continue;
                }
            };
            match cmd {
                LinkCmd::Apply(links) => {
                    let changes = self.apply(links).await;
                    self.report(LinkReport::Applied { changes }).await;
                }
                LinkCmd::SetEndpoint { link, addr } => {
                    if let Some(running) = self.links.get(&link).and_then(|e| e.running.as_ref()) {
                        send(running, Command::SetEndpoint(addr));
                    }
                }
                LinkCmd::Maintain => self.maintain().await,
                LinkCmd::StopAll => {
                    self.stop_all().await;
                    self.report(LinkReport::AllStopped).await;
                }
            }
        }
        self.stop_all().await;
    }

    /// A worker ended on its own (`id`: the one that said so; `None`: noticed by
    /// [`Tunnels::maintain`]). A lost TUN device starts a recovery; anything else is a bug,
    /// logged, and the link restarts like one that failed to start.
    async fn worker_ended(&mut self, name: &str, id: Option<u64>) {
        let Some(entry) = self.links.get_mut(name) else {
            return;
        };
        let Some(running) = entry.running.take_if(|r| id.is_none_or(|id| r.id == id)) else {
            return;
        };
        entry.uapi = None;
        let exit = join(running).await;
        let error = match exit {
            Some(Exit::TunGone(e)) => {
                // The worker raised the fault (the one warning of this episode).
                entry.recovery = Some(Recovery {
                    next: crate::clock::now(),
                    delay: RECREATE_FIRST,
                });
                format!("the TUN device is gone ({e}); recreating it")
            }
            Some(Exit::Stopped) | None => {
                let error = "the link's worker thread ended; restarting it".to_owned();
                tracing::error!(link = %name, "{error}");
                entry.last_attempt = crate::clock::now();
                error
            }
        };
        entry.error = Some(error.clone());
        self.report(LinkReport::Stopped {
            link: name.to_owned(),
            error: Some(error),
        })
        .await;
        self.recover_due().await;
    }

    /// The TUN device of a running link vanished from the namespace while its fd still works
    /// (moved to another namespace): stop the worker and recover as if it had ended.
    async fn tun_vanished(&mut self, name: &str, detail: String) {
        let Some(entry) = self.links.get_mut(name) else {
            return;
        };
        self.faults.raise(FaultKind::TunGone, name, &detail);
        entry.uapi = None;
        stop(entry.running.take()).await;
        entry.recovery = Some(Recovery {
            next: crate::clock::now(),
            delay: RECREATE_FIRST,
        });
        let error = format!("{detail}; recreating it");
        entry.error = Some(error.clone());
        self.report(LinkReport::Stopped {
            link: name.to_owned(),
            error: Some(error),
        })
        .await;
        self.recover_due().await;
    }

    /// Try again every link whose recovery is due.
    async fn recover_due(&mut self) {
        let now = crate::clock::now();
        let due: Vec<String> = self
            .links
            .iter()
            .filter(|(_, e)| e.running.is_none() && e.recovery.is_some_and(|r| r.next <= now))
            .map(|(n, _)| n.clone())
            .collect();
        for name in due {
            self.start_if_stopped(&name).await;
        }
    }

    async fn report(&self, r: LinkReport) {
        let _ = self.reports.send(Input::Link(r)).await;
    }

    /// Make the running links match `links`. Returns one line per change.
    async fn apply(&mut self, links: Vec<(Link, Arc<Counters>)>) -> Vec<String> {
        let mut changes = Vec::new();
        let counters: BTreeMap<String, Arc<Counters>> = links
            .iter()
            .map(|(l, c)| (l.name.clone(), c.clone()))
            .collect();
        let wanted: BTreeMap<&str, &Link> =
            links.iter().map(|(l, _)| (l.name.as_str(), l)).collect();
        let gone: Vec<String> = self
            .links
            .keys()
            .filter(|name| !wanted.contains_key(name.as_str()))
            .cloned()
            .collect();
        for name in gone {
            if let Some(mut entry) = self.links.remove(&name) {
                entry.uapi = None;
                stop(entry.running.take()).await;
                // A link that is gone has no fault left to recover from.
                self.faults.clear(FaultKind::TunGone, &name);
                self.faults.clear(FaultKind::UnderlaySend, &name);
                self.report(LinkReport::Stopped {
                    link: name.clone(),
                    error: None,
                })
                .await;
                changes.push(format!(
                    "link {name}: stopped, interface {} removed",
                    entry.config.interface
                ));
            }
        }
        // Stop links that must restart first, so that a renamed interface or a moved port is
        // free before the new one is set up.
        for (name, new) in &wanted {
            if let Some(entry) = self.links.get_mut(*name) {
                if needs_restart(&entry.config, new) {
                    entry.uapi = None;
                    stop(entry.running.take()).await;
                    entry.config = (*new).clone();
                    self.report(LinkReport::Stopped {
                        link: (*name).to_owned(),
                        error: None,
                    })
                    .await;
                    changes.push(format!(
                        "link {name}: restarted (interface, address, port or MTU changed)"
                    ));
                }
            }
        }
        for (name, new) in wanted {
            match self.links.get_mut(name) {
                None => {
                    self.links.insert(
                        name.to_owned(),
                        LinkEntry {
                            config: new.clone(),
                            shared: Arc::new(Mutex::new(new.clone())),
                            counters: counters.get(name).cloned().unwrap_or_default(),
                            running: None,
                            uapi: None,
                            error: None,
                            last_attempt: crate::clock::now(),
                            recovery: None,
                        },
                    );
                    changes.push(format!("link {name}: added"));
                }
                Some(entry) => {
                    if let Some(running) = &entry.running {
                        let old = &entry.config;
                        if keys_of(old) != keys_of(new) {
                            send(running, Command::SetKeys(Box::new(keys_of(new))));
                            changes.push(format!("link {name}: keys changed, re-handshaking"));
                        }
                        if old.allowed_ips != new.allowed_ips {
                            send(running, Command::SetAllowedIps(new.allowed_ips.clone()));
                            changes.push(format!("link {name}: allowed IPs changed"));
                        }
                        if old.peer_endpoint != new.peer_endpoint {
                            // A hostname is looked up by the loop's resolver and sent later.
                            if let Endpoint::Addr(addr) = new.peer_endpoint {
                                send(running, Command::SetEndpoint(addr));
                            }
                            changes.push(format!("link {name}: endpoint changed"));
                        }
                    }
                    entry.config = new.clone();
                    *entry.shared.lock().unwrap_or_else(|e| e.into_inner()) = new.clone();
                }
            }
        }
        let names: Vec<String> = self.links.keys().cloned().collect();
        for name in names {
            self.start_if_stopped(&name).await;
        }
        changes
    }

    /// Retry links that failed to start, notice workers that ended on their own and TUN
    /// devices that left the namespace.
    async fn maintain(&mut self) {
        let names: Vec<String> = self.links.keys().cloned().collect();
        for name in names {
            let Some(entry) = self.links.get_mut(&name) else {
                continue;
            };
            if let Some(running) = &entry.running {
                if running.thread.is_finished() {
                    self.worker_ended(&name, None).await;
                    continue;
                }
                let (interface, ifindex) = (entry.config.interface.clone(), running.ifindex);
                match self.netlink.index_of(&interface).await {
                    Ok(Some(i)) if i == ifindex => {}
                    Ok(found) => {
                        let now = found.map_or("none".to_owned(), |i| i.to_string());
                        let detail = format!(
                            "interface {interface} (index {ifindex}) is gone from agentd's \
                             namespace (index now: {now})"
                        );
                        self.tun_vanished(&name, detail).await;
                    }
                    // Netlink itself failing is not the device's fault: look again next time.
                    Err(e) => tracing::debug!(link = %name, error = %format!("{e:#}"),
                        "cannot check the link's interface"),
                }
                continue;
            }
            if entry.recovery.is_none()
                && crate::clock::now().saturating_duration_since(entry.last_attempt) >= RETRY_EVERY
            {
                self.start_if_stopped(&name).await;
            }
        }
    }

    async fn start_if_stopped(&mut self, name: &str) {
        let Some(entry) = self.links.get_mut(name) else {
            return;
        };
        if entry.running.is_some() {
            return;
        }
        entry.last_attempt = crate::clock::now();
        self.next_id += 1;
        let ended = Ended {
            tx: self.ended.clone(),
            id: self.next_id,
        };
        let started = start(
            &self.netlink,
            &entry.config,
            entry.counters.clone(),
            self.faults.clone(),
            ended,
        )
        .await;
        match started {
            Ok(running) => {
                let ifindex = running.ifindex;
                tracing::info!(link = name, interface = %entry.config.interface, "link started");
                entry.running = Some(running);
                entry.error = None;
                if entry.recovery.take().is_some() {
                    self.faults.clear(FaultKind::TunGone, name);
                }
                let snapshot = uapi_snapshot(entry.shared.clone(), entry.counters.clone());
                match uapi::serve(&self.uapi_dir, &entry.config.interface, snapshot) {
                    Ok(handle) => entry.uapi = Some(handle),
                    // `wg show` is a convenience: the link runs without it.
                    Err(e) => {
                        tracing::warn!(link = name, dir = %self.uapi_dir.display(), error = %e,
                        "cannot serve the WireGuard UAPI socket; `wg show` will not see this link")
                    }
                }
                self.report(LinkReport::Started {
                    link: name.to_owned(),
                    ifindex,
                })
                .await;
            }
            Err(e) => {
                let msg = format!("{e:#}");
                if let Some(r) = &mut entry.recovery {
                    // Still the TUN fault of this episode: logged when it was raised.
                    self.faults.raise(FaultKind::TunGone, name, &msg);
                    r.next = crate::clock::now() + r.delay;
                    r.delay = (r.delay * 2).min(RECREATE_MAX);
                    tracing::debug!(link = name, error = %msg, retry_in_ms = r.delay.as_millis() as u64,
                        "recreating the link failed");
                } else if entry.error.as_deref() != Some(&msg) {
                    tracing::error!(link = name, error = %msg, "link cannot start; retrying every 10 s");
                }
                entry.error = Some(msg.clone());
                self.report(LinkReport::Stopped {
                    link: name.to_owned(),
                    error: Some(msg),
                })
                .await;
            }
        }
    }

    /// Stop every link and remove its interface.
    async fn stop_all(&mut self) {
        for (_, mut entry) in std::mem::take(&mut self.links) {
            entry.uapi = None;
            stop(entry.running.take()).await;
        }
    }
}

impl Drop for Tunnels {
    fn drop(&mut self) {
        for (_, mut entry) in std::mem::take(&mut self.links) {
            entry.uapi = None;
            if let Some(running) = entry.running.take() {
                send(&running, Command::Stop);
                let _ = running.thread.join();
            }
        }
    }
}

/// Where a worker says that it ended on its own, and under which id.
struct Ended {
    tx: tokio_mpsc::UnboundedSender<(String, u64)>,
    id: u64,
}

/// Set up a link and spawn its worker, which tells `ended` if it ends on its own.
async fn start(
    netlink: &Netlink,
    link: &Link,
    counters: Arc<Counters>,
    faults: Faults,
    ended: Ended,
) -> anyhow::Result<Running> {
    // The underlay first: a link retried while its address is missing then makes no TUN
    // device only to delete it again.
    let device = if link.listen.ip().is_unspecified() {
        None
    } else {
        let (_, dev) = netlink
            .interface_with_address(link.listen.ip())
            .await?
            .ok_or_else(|| {
                anyhow!(
                    "the underlay address {} is not configured on any interface",
                    link.listen.ip()
                )
            })?;
        Some(dev)
    };
    let udp = udp::UdpSocket::bind(link.listen, device.as_deref())
        .with_context(|| format!("binding UDP {}", link.listen))?;
    if link.path_mtu.is_some() {
        // Measured paths: every datagram with DF, never fragmented, never held to what ICMP
        // taught the kernel (probes and data alike; docs/mtu.md).
        udp.probe_path_mtu()
            .with_context(|| format!("setting path-MTU discovery on UDP {}", link.listen))?;
    }
    let tun = tun::TunDevice::create(&link.interface)
        .with_context(|| format!("creating TUN interface {}", link.interface))?;
    let ifindex = netlink
        .configure(&link.interface, u32::from(link.tun_mtu()), &link.addresses)
        .await?;
    // A hostname endpoint arrives later from the resolver (LinkCmd::SetEndpoint).
    let endpoint = match link.peer_endpoint {
        Endpoint::Addr(addr) => Some(addr),
        Endpoint::Host { .. } => None,
    };
    let parts = Parts {
        link: link.name.clone(),
        tun,
        udp,
        allowed: link.allowed_ips.clone(),
        endpoint,
        mtu: link.tun_mtu(),
        peer_inner: Some(link.peer_address),
        counters,
        faults,
    };
    let worker = Worker::new(parts, &keys_of(link));
    let (commands, rx) = mpsc::channel();
    let waker = Arc::new(Waker::new().context("creating an eventfd")?);
    let thread_waker = waker.clone();
    let (name, id) = (link.name.clone(), ended.id);
    let thread = std::thread::Builder::new()
        .name(format!("link-{}", link.name))
        .spawn(move || {
            let exit = worker.run(rx, thread_waker);
            if !matches!(exit, Exit::Stopped) {
                let _ = ended.tx.send((name, ended.id));
            }
            exit
        })
        .context("spawning the link thread")?;
    Ok(Running {
        id,
        ifindex,
        commands,
        waker,
        thread,
    })
}

/// What `wg show` reads: keys and settings from the config, traffic from the counters.
fn uapi_snapshot(
    config: Arc<Mutex<Link>>,
    counters: Arc<Counters>,
) -> Arc<dyn Fn() -> uapi::Snapshot + Send + Sync> {
    Arc::new(move || {
        let link = config.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let keys = keys_of(&link);
        uapi::Snapshot {
            private_key: keys.private,
            listen_port: link.listen.port(),
            fwmark: 0,
            peer_public_key: keys.peer_public,
            preshared_key: keys.preshared,
            endpoint: counters.endpoint(),
            last_handshake: counters.last_handshake(),
            tx_bytes: counters.tx_bytes.load(Relaxed),
            rx_bytes: counters.rx_bytes.load(Relaxed),
            persistent_keepalive: keys.keepalive,
            allowed_ips: link.allowed_ips,
        }
    })
}

fn send(running: &Running, cmd: Command) {
    if running.commands.send(cmd).is_ok() {
        running.waker.wake();
    }
}

async fn stop(running: Option<Running>) {
    if let Some(running) = running {
        send(&running, Command::Stop);
        join(running).await;
    }
}

/// Wait for a worker's thread to end: how it ended, `None` if it panicked.
async fn join(running: Running) -> Option<Exit> {
    // The worker answers within one poll wake-up; dropping its TUN fd removes the interface.
    // The join blocks, so it waits on the blocking pool, not on the runtime's thread.
    let joined = tokio::task::spawn_blocking(move || running.thread.join()).await;
    match joined {
        Ok(Ok(exit)) => Some(exit),
        _ => {
            tracing::error!("a link worker panicked");
            None
        }
    }
}

/// Sleep until `at`; forever if there is nothing to wait for (the select! guard skips it).
async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}
