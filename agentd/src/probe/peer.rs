//! Peer probe sockets, the real [`ProbeTransport`]: one UDP socket per running link, bound to the
//! link's inner address, `[health].probe_port` and the link's TUN interface, so that probes leave
//! and arrive only through that link's tunnel (docs/protocol.md). A task per socket receives and
//! timestamps datagrams and hands them to the event loop, which feeds the engine; the loop sends
//! what the engine asks with a non-blocking send that never waits.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use isthmus_config::Link;
use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::failover::ProbeIn;

/// Largest probe datagram (a padded path-MTU probe on a jumbo path fits).
const MAX_DATAGRAM: usize = 65_535;

/// How probe datagrams leave: sockets in agentd, an in-memory network in tests.
pub trait ProbeTransport: Send {
    /// Keep a way to send and receive on every running link (`running`), none on the others.
    /// Returns the links that have one now.
    fn sync(&mut self, links: &[Link], running: &dyn Fn(&str) -> bool, port: u16) -> Vec<String>;
    /// Send without waiting; false if the link has no socket or the kernel refused.
    fn send(&mut self, link: &str, bytes: &[u8]) -> bool;
}

/// What a socket was built from, to notice changes on reload.
#[derive(Debug, Clone, PartialEq, Eq)]
struct BuiltFrom {
    local: IpAddr,
    peer: IpAddr,
    port: u16,
    interface: String,
}

struct LinkSocket {
    socket: Arc<UdpSocket>,
    peer: SocketAddr,
    built_from: BuiltFrom,
    task: JoinHandle<()>,
}

impl Drop for LinkSocket {
    fn drop(&mut self) {
        self.task.abort();
    }
}

pub struct PeerSockets {
    sockets: BTreeMap<String, LinkSocket>,
    errors: BTreeMap<String, String>,
    tx: mpsc::Sender<ProbeIn>,
}

impl PeerSockets {
    pub fn new(tx: mpsc::Sender<ProbeIn>) -> PeerSockets {
        PeerSockets {
            sockets: BTreeMap::new(),
            errors: BTreeMap::new(),
            tx,
        }
    }

    fn open(&self, link: &Link, built_from: BuiltFrom) -> anyhow::Result<LinkSocket> {
        use anyhow::Context as _;
        let addr = SocketAddr::new(built_from.local, built_from.port);
        let s = socket2::Socket::new(
            socket2::Domain::for_address(addr),
            socket2::Type::DGRAM.nonblocking().cloexec(),
            Some(socket2::Protocol::UDP),
        )?;
        s.bind_device(Some(link.interface.as_bytes()))
            .with_context(|| format!("binding the probe socket to {}", link.interface))?;
        // Padded path-MTU probes must cross whole or not at all: never fragmented here, and
        // not held to a path MTU the kernel learnt from ICMP.
        crate::tunnel::udp::set_pmtud(&s, addr.is_ipv6(), crate::tunnel::udp::Pmtud::Probe)
            .context("setting the probe socket's path-MTU discovery")?;
        s.bind(&addr.into())
            .with_context(|| format!("binding the probe socket to {addr}"))?;
        let socket = Arc::new(UdpSocket::from_std(s.into())?);
        let peer = SocketAddr::new(built_from.peer, built_from.port);
        let task = tokio::spawn(receive(
            link.name.clone(),
            socket.clone(),
            peer.ip(),
            self.tx.clone(),
        ));
        Ok(LinkSocket {
            socket,
            peer,
            built_from,
            task,
        })
    }
}

impl ProbeTransport for PeerSockets {
    /// Open sockets for running links that have none (or whose settings changed), close those
    /// of links that are gone or stopped. Cheap when nothing changed.
    fn sync(&mut self, links: &[Link], running: &dyn Fn(&str) -> bool, port: u16) -> Vec<String> {
        self.sockets
            .retain(|name, _| links.iter().any(|l| &l.name == name) && running(name));
        for link in links {
            if !running(&link.name) {
                continue;
            }
            let Some(local) = link.addresses.first().map(|a| a.ip()) else {
                continue;
            };
            let built_from = BuiltFrom {
                local,
                peer: link.peer_address,
                port,
                interface: link.interface.clone(),
            };
            if self
                .sockets
                .get(&link.name)
                .is_some_and(|s| s.built_from == built_from)
            {
                continue;
            }
            self.sockets.remove(&link.name);
            match self.open(link, built_from) {
                Ok(s) => {
                    self.errors.remove(&link.name);
                    self.sockets.insert(link.name.clone(), s);
                }
                Err(e) => {
                    let msg = format!("{e:#}");
                    if self.errors.get(&link.name) != Some(&msg) {
                        tracing::warn!(link = %link.name, error = %msg, "cannot open the peer probe socket; retrying");
                    }
                    self.errors.insert(link.name.clone(), msg);
                }
            }
        }
        self.sockets.keys().cloned().collect()
    }

    fn send(&mut self, link: &str, bytes: &[u8]) -> bool {
        let Some(s) = self.sockets.get(link) else {
            return false;
        };
        s.socket.try_send_to(bytes, s.peer).is_ok()
    }
}

async fn receive(link: String, socket: Arc<UdpSocket>, peer: IpAddr, tx: mpsc::Sender<ProbeIn>) {
    let mut buf = vec![0u8; MAX_DATAGRAM];
    loop {
        let (n, from) = match socket.recv_from(&mut buf).await {
            Ok(x) => x,
            Err(e) => {
                tracing::debug!(%link, error = %e, "probe socket receive failed");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            }
        };
        let at = crate::clock::now();
        let datagram = ProbeIn {
            link: link.clone(),
            bytes: buf[..n].to_vec(),
            at,
            // Only the peer's tunnel address may speak here.
            from_peer: from.ip() == peer,
        };
        if tx.send(datagram).await.is_err() {
            return;
        }
    }
}
