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

pub mod counters;
pub mod table;
mod tun;
pub mod uapi;
mod udp;
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
use crate::netlink::Netlink;
use counters::Counters;
use worker::{Command, Keys, Waker, Worker};

/// How often a link that failed to start (or whose worker ended) is tried again.
pub const RETRY_EVERY: Duration = Duration::from_secs(10);

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
    /// The TUN interface's index, for routes.
    ifindex: u32,
    commands: mpsc::Sender<Command>,
    waker: Arc<Waker>,
    thread: JoinHandle<()>,
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
}

pub struct Tunnels {
    netlink: Netlink,
    uapi_dir: PathBuf,
    links: BTreeMap<String, LinkEntry>,
    reports: tokio_mpsc::Sender<Input>,
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
        || old.mtu != new.mtu
        || old.addresses != new.addresses
}

impl Tunnels {
    pub fn new(netlink: Netlink, uapi_dir: PathBuf, reports: tokio_mpsc::Sender<Input>) -> Tunnels {
        Tunnels {
            netlink,
            uapi_dir,
            links: BTreeMap::new(),
            reports,
        }
    }

    /// The adapter: carry out commands one at a time until the loop goes away.
    pub async fn run(mut self, mut commands: tokio_mpsc::UnboundedReceiver<LinkCmd>) {
        while let Some(cmd) = commands.recv().await {
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

    /// Retry links that failed to start, and notice workers that ended on their own.
    async fn maintain(&mut self) {
        let names: Vec<String> = self.links.keys().cloned().collect();
        for name in names {
            let Some(entry) = self.links.get_mut(&name) else {
                continue;
            };
            if entry
                .running
                .as_ref()
                .is_some_and(|r| r.thread.is_finished())
            {
                entry.uapi = None;
                stop(entry.running.take()).await;
                let error = "the link's worker thread ended; restarting it".to_owned();
                tracing::error!(link = %name, "{error}");
                entry.error = Some(error.clone());
                entry.last_attempt = crate::clock::now();
                self.report(LinkReport::Stopped {
                    link: name.clone(),
                    error: Some(error),
                })
                .await;
                continue;
            }
            if entry.running.is_none()
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
        match start(&self.netlink, &entry.config, entry.counters.clone()).await {
            Ok(running) => {
                tracing::info!(link = name, interface = %entry.config.interface, "link started");
                let ifindex = running.ifindex;
                entry.running = Some(running);
                entry.error = None;
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
                if entry.error.as_deref() != Some(&msg) {
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

async fn start(netlink: &Netlink, link: &Link, counters: Arc<Counters>) -> anyhow::Result<Running> {
    let tun = tun::TunDevice::create(&link.interface)
        .with_context(|| format!("creating TUN interface {}", link.interface))?;
    let ifindex = netlink
        .configure(&link.interface, u32::from(link.mtu), &link.addresses)
        .await?;
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
    // A hostname endpoint arrives later from the resolver (LinkCmd::SetEndpoint).
    let endpoint = match link.peer_endpoint {
        Endpoint::Addr(addr) => Some(addr),
        Endpoint::Host { .. } => None,
    };
    let worker = Worker::new(
        tun,
        udp,
        &keys_of(link),
        link.allowed_ips.clone(),
        endpoint,
        link.mtu,
        counters,
    );
    let (commands, rx) = mpsc::channel();
    let waker = Arc::new(Waker::new().context("creating an eventfd")?);
    let thread_waker = waker.clone();
    let thread = std::thread::Builder::new()
        .name(format!("link-{}", link.name))
        .spawn(move || worker.run(rx, thread_waker))
        .context("spawning the link thread")?;
    Ok(Running {
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
        // The worker answers within one poll wake-up; dropping its TUN fd removes the interface.
        // The join blocks, so it waits on the blocking pool, not on the runtime's thread.
        let joined = tokio::task::spawn_blocking(move || running.thread.join()).await;
        if !matches!(joined, Ok(Ok(()))) {
            tracing::error!("a link worker panicked");
        }
    }
}
