//! The event loop's view of the links: what the config says, what the links adapter last
//! reported (running on which interface, or why not) and each link's counters, which the worker
//! threads update and the loop only reads. Status, metrics and routes are built from this; nothing
//! here does I/O.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};

use isthmus_api::{Health, LinkState, LinkStatus};
use isthmus_config::Link;

use super::counters::{Counters, DropReason};
use super::LinkReport;

/// WireGuard's REJECT_AFTER_TIME: a session older than this carries no traffic.
const SESSION_LIFETIME: Duration = Duration::from_secs(180);
/// A worker that has not gone round its loop (at least every tick, 100 ms) for this long is
/// stuck.
const WORKER_STALL: Duration = Duration::from_secs(2);

pub struct LinkEntry {
    pub config: Link,
    pub counters: Arc<Counters>,
    /// The TUN interface's index while the link runs.
    pub ifindex: Option<u32>,
    /// Why the link does not run.
    pub error: Option<String>,
    /// When a lookup of its hostname endpoint was sent and not yet answered.
    pub resolving: bool,
    /// The last lookup's failure, to log each new one once.
    pub resolve_error: Option<String>,
}

#[derive(Default)]
pub struct LinkTable {
    links: BTreeMap<String, LinkEntry>,
}

impl LinkTable {
    /// Follow the configured links: new ones get fresh counters, gone ones are forgotten.
    /// Returns what to send the links adapter.
    pub fn follow(&mut self, links: &[Link]) -> Vec<(Link, Arc<Counters>)> {
        self.links
            .retain(|name, _| links.iter().any(|l| &l.name == name));
        links
            .iter()
            .map(|l| {
                let e = self
                    .links
                    .entry(l.name.clone())
                    .or_insert_with(|| LinkEntry {
                        config: l.clone(),
                        counters: Arc::default(),
                        ifindex: None,
                        error: None,
                        resolving: false,
                        resolve_error: None,
                    });
                e.config = l.clone();
                (l.clone(), e.counters.clone())
            })
            .collect()
    }

    /// Take a link out of the routes ahead of its stop (the adapter confirms with `Stopped`).
    pub fn withdraw(&mut self, link: &str) {
        if let Some(e) = self.links.get_mut(link) {
            e.ifindex = None;
        }
    }

    /// A report from the links adapter; true if a link started or stopped (routes follow).
    pub fn handle_report(&mut self, r: &LinkReport) -> bool {
        match r {
            LinkReport::Started { link, ifindex } => match self.links.get_mut(link) {
                Some(e) => {
                    e.ifindex = Some(*ifindex);
                    e.error = None;
                    true
                }
                None => false,
            },
            LinkReport::Stopped { link, error } => match self.links.get_mut(link) {
                Some(e) => {
                    let was = e.ifindex.take().is_some();
                    e.error = error.clone();
                    was
                }
                None => false,
            },
            LinkReport::Applied { .. } | LinkReport::AllStopped => false,
        }
    }

    /// Each link's name and config.
    pub fn configs(&self) -> Vec<(String, Link)> {
        self.links
            .iter()
            .map(|(n, e)| (n.clone(), e.config.clone()))
            .collect()
    }

    pub fn get_mut(&mut self, link: &str) -> Option<&mut LinkEntry> {
        self.links.get_mut(link)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&String, &LinkEntry)> {
        self.links.iter()
    }

    pub fn ifindex(&self, link: &str) -> Option<u32> {
        self.links.get(link)?.ifindex
    }

    pub fn counters(&self, link: &str) -> Option<&Counters> {
        self.links.get(link).map(|e| &*e.counters)
    }

    /// Interfaces of the running links.
    pub fn interfaces(&self) -> Vec<String> {
        self.links
            .values()
            .filter(|e| e.ifindex.is_some())
            .map(|e| e.config.interface.clone())
            .collect()
    }

    /// Each link's data plane: `None` if its worker is running and turning, or what is wrong.
    pub fn data_plane(&self, now: Instant) -> Vec<(String, Option<String>)> {
        self.links
            .iter()
            .map(|(name, e)| {
                let problem = match e.ifindex {
                    None => Some(format!(
                        "not running: {}",
                        e.error.as_deref().unwrap_or("not started yet")
                    )),
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

    pub fn state(&self, link: &str) -> Option<LinkState> {
        self.links.get(link).map(state_of)
    }

    pub fn status(&self) -> Vec<LinkStatus> {
        self.links
            .iter()
            .map(|(name, e)| link_status(name, e))
            .collect()
    }
}

fn handshake_age(c: &Counters) -> Option<Duration> {
    c.handshake_age(crate::clock::now())
}

fn state_of(e: &LinkEntry) -> LinkState {
    if e.ifindex.is_none() {
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
    let load = |a: &std::sync::atomic::AtomicU64| a.load(Relaxed);
    LinkStatus {
        name: name.to_owned(),
        interface: e.config.interface.clone(),
        state: state_of(e),
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
        // Filled in from the failover engine.
        health: Health::Unknown,
        own_health: Health::Unknown,
        peer_health: None,
        peer_protocol: None,
        peer_ha: None,
        drained: false,
        figures: None,
        probe_drops: Default::default(),
        // The search's part is filled in from the failover engine.
        path_mtu: isthmus_api::PathMtuStatus {
            state: "fixed".to_owned(),
            tun: e.config.tun_mtu(),
            tx: c.limits.tx_or(e.config.tun_mtu()),
            rx: Some(c.limits.rx_or(e.config.tun_mtu())),
            floor: e.config.path_mtu.map(|b| b.min),
            ceiling: e.config.path_mtu.map(|b| b.max),
            mss_clamped: load(&c.mss_clamped),
            resegmented: load(&c.resegmented),
            too_big_sent: load(&c.ptb_sent),
            ..Default::default()
        },
    }
}
