//! Encrypted links: one WireGuard tunnel per configured link, in userspace.
//!
//! [`Tunnels`] reconciles the running links with the config: it starts links that are new,
//! stops links that are gone, and changes the rest in place without dropping their session when
//! only keys, allowed IPs or the endpoint changed. Each running link is a [`worker`] thread that
//! owns its TUN device, UDP socket and boringtun `Tunn`; the daemon talks to it through a
//! command queue plus an eventfd, and reads its [`counters::Counters`] without locks.
//!
//! A link that cannot be set up (interface name taken, underlay address missing) is reported as
//! `failed` with the reason and retried by [`Tunnels::maintain`]; the other links run on.

pub mod counters;
mod tun;
pub mod uapi;
mod udp;
mod worker;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{anyhow, Context as _};
use isthmus_api::{LinkState, LinkStatus};
use isthmus_config::{Endpoint, Link};

use crate::netlink::Netlink;
use counters::{Counters, DropReason};
use worker::{Command, Keys, Waker, Worker};

/// WireGuard's REJECT_AFTER_TIME: a session older than this carries no traffic.
const SESSION_LIFETIME: Duration = Duration::from_secs(180);
/// A worker that has not gone round its loop (at least every tick, 100 ms) for this long is
/// stuck.
const WORKER_STALL: Duration = Duration::from_secs(2);
/// How long to wait for a hostname endpoint to resolve.
const RESOLVE_TIMEOUT: Duration = Duration::from_secs(5);

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
    pub fn new(netlink: Netlink, uapi_dir: PathBuf) -> Tunnels {
        Tunnels {
            netlink,
            uapi_dir,
            links: BTreeMap::new(),
        }
    }

    /// Make the running links match `links`. Returns one line per change.
    pub async fn apply(&mut self, links: &[Link]) -> Vec<String> {
        let mut changes = Vec::new();
        let wanted: BTreeMap<&str, &Link> = links.iter().map(|l| (l.name.as_str(), l)).collect();
        let gone: Vec<String> = self
            .links
            .keys()
            .filter(|name| !wanted.contains_key(name.as_str()))
            .cloned()
            .collect();
        for name in gone {
            if let Some(mut entry) = self.links.remove(&name) {
                entry.uapi = None;
                stop(entry.running.take());
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
                    stop(entry.running.take());
                    entry.config = (*new).clone();
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
                            counters: Arc::new(Counters::default()),
                            running: None,
                            uapi: None,
                            error: None,
                            last_attempt: Instant::now(),
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
                            if let Some(addr) = resolve(&new.peer_endpoint).await {
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

    /// Retry links that failed to start, and re-resolve hostname endpoints of links that have
    /// no answer from their peer.
    pub async fn maintain(&mut self) {
        let names: Vec<String> = self.links.keys().cloned().collect();
        for name in names {
            let Some(entry) = self.links.get(&name) else {
                continue;
            };
            if entry.running.is_none() {
                if entry.last_attempt.elapsed() >= Duration::from_secs(10) {
                    self.start_if_stopped(&name).await;
                }
                continue;
            }
            // A hostname endpoint may have moved: while the link has no session, look it up
            // again (the worker ignores an unchanged address).
            let host_endpoint = matches!(entry.config.peer_endpoint, Endpoint::Host { .. });
            if host_endpoint && state_of(entry) != LinkState::Up {
                if let Some(addr) = resolve(&entry.config.peer_endpoint).await {
                    if let Some(running) = &entry.running {
                        send(running, Command::SetEndpoint(addr));
                    }
                }
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
        entry.last_attempt = Instant::now();
        match start(&self.netlink, &entry.config, entry.counters.clone()).await {
            Ok(running) => {
                tracing::info!(link = name, interface = %entry.config.interface, "link started");
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
            }
            Err(e) => {
                let msg = format!("{e:#}");
                if entry.error.as_deref() != Some(&msg) {
                    tracing::error!(link = name, error = %msg, "link cannot start; retrying every 10 s");
                }
                entry.error = Some(msg);
            }
        }
    }

    /// Stop every link and remove its interface.
    pub fn stop_all(&mut self) {
        for (_, mut entry) in std::mem::take(&mut self.links) {
            entry.uapi = None;
            stop(entry.running.take());
        }
    }

    /// The tunnel interface index of a running link.
    /// The traffic counters of a link (present while the link is configured).
    pub fn counters(&self, link: &str) -> Option<&Counters> {
        self.links.get(link).map(|e| &*e.counters)
    }

    /// Each link's data plane: `None` if its worker is running and turning, or what is wrong.
    pub fn data_plane(&self, now: Instant) -> Vec<(String, Option<String>)> {
        self.links
            .iter()
            .map(|(name, e)| {
                let problem = match &e.running {
                    None => Some(format!(
                        "not running: {}",
                        e.error.as_deref().unwrap_or("not started yet")
                    )),
                    Some(r) if r.thread.is_finished() => Some("worker thread ended".to_owned()),
                    Some(_) => {
                        let idle = e.counters.since_beat(now);
                        (idle > WORKER_STALL)
                            .then(|| format!("worker stuck for {:.1} s", idle.as_secs_f64()))
                    }
                };
                (name.clone(), problem)
            })
            .collect()
    }

    pub fn ifindex(&self, link: &str) -> Option<u32> {
        self.links.get(link)?.running.as_ref().map(|r| r.ifindex)
    }

    /// The interface name behind an index, if it is one of ours.
    pub fn interface_of(&self, ifindex: u32) -> Option<String> {
        self.links
            .values()
            .find(|e| e.running.as_ref().is_some_and(|r| r.ifindex == ifindex))
            .map(|e| e.config.interface.clone())
    }

    /// Interfaces of the running links.
    pub fn interfaces(&self) -> Vec<String> {
        self.links
            .values()
            .filter(|e| e.running.is_some())
            .map(|e| e.config.interface.clone())
            .collect()
    }

    pub fn status(&self) -> Vec<LinkStatus> {
        self.links
            .iter()
            .map(|(name, e)| link_status(name, e))
            .collect()
    }
}

impl Drop for Tunnels {
    fn drop(&mut self) {
        self.stop_all();
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
    let endpoint = resolve(&link.peer_endpoint).await;
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

fn stop(running: Option<Running>) {
    if let Some(running) = running {
        send(&running, Command::Stop);
        // The worker answers within one poll wake-up; dropping its TUN fd removes the interface.
        if running.thread.join().is_err() {
            tracing::error!("a link worker panicked");
        }
    }
}

async fn resolve(endpoint: &Endpoint) -> Option<SocketAddr> {
    match endpoint {
        Endpoint::Addr(addr) => Some(*addr),
        Endpoint::Host { host, port } => {
            let lookup = tokio::net::lookup_host((host.as_str(), *port));
            match tokio::time::timeout(RESOLVE_TIMEOUT, lookup).await {
                Ok(Ok(mut addrs)) => addrs.next(),
                Ok(Err(e)) => {
                    tracing::warn!(%host, error = %e, "cannot resolve peer endpoint");
                    None
                }
                Err(_) => {
                    tracing::warn!(%host, "resolving peer endpoint timed out");
                    None
                }
            }
        }
    }
}

fn handshake_age(c: &Counters) -> Option<Duration> {
    c.last_handshake()
        .and_then(|t| SystemTime::now().duration_since(t).ok())
}

fn state_of(e: &LinkEntry) -> LinkState {
    if e.running.is_none() {
        LinkState::Failed
    } else if e.counters.expired.load(Relaxed) == 1 {
        LinkState::Unreachable
    } else if handshake_age(&e.counters).is_some_and(|a| a < SESSION_LIFETIME) {
        LinkState::Up
    } else {
        LinkState::Handshaking
    }
}

fn link_status(name: &str, e: &LinkEntry) -> LinkStatus {
    let c = &e.counters;
    let age = handshake_age(c);
    let state = state_of(e);
    let load = |a: &std::sync::atomic::AtomicU64| a.load(Relaxed);
    LinkStatus {
        name: name.to_owned(),
        interface: e.config.interface.clone(),
        state,
        error: e.error.clone(),
        listen: e.config.listen.to_string(),
        peer_endpoint: e.config.peer_endpoint.to_string(),
        endpoint: c.endpoint().map(|a| a.to_string()),
        allowed_ips: e.config.allowed_ips.iter().map(|n| n.to_string()).collect(),
        last_handshake_seconds_ago: age.map(|a| a.as_secs()),
        tx_bytes: load(&c.tx_bytes),
        tx_packets: load(&c.tx_packets),
        rx_bytes: load(&c.rx_bytes),
        rx_packets: load(&c.rx_packets),
        handshake_attempts: load(&c.handshake_attempts),
        handshake_failures: load(&c.handshake_failures),
        drops: DropReason::ALL
            .iter()
            .map(|r| (r.as_str().to_owned(), c.drops(*r)))
            .collect(),
        // Filled in from the failover engine by the daemon.
        health: "unknown".into(),
        own_health: "unknown".into(),
        peer_health: None,
        drained: false,
        figures: None,
        probe_drops: Default::default(),
    }
}
