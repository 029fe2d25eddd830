//! Peer probe sockets: one UDP socket per running link, bound to the link's inner address,
//! `[health].probe_port` and the link's TUN interface, so that probes leave and arrive only
//! through that link's tunnel (docs/protocol.md). A task per socket receives and timestamps
//! datagrams and hands the raw bytes to the event loop, which feeds them to the engine; the
//! engine decodes, authenticates and answers (the protocol is the core's). Each socket's key
//! goes to the engine when the socket opens.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Instant;

use isthmus_config::Link;
use isthmus_core::wire::MAX_LEN;
use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::key::Key;

/// A datagram that arrived on a link's probe socket.
pub struct ProbeIn {
    pub link: String,
    pub bytes: Vec<u8>,
    /// When it arrived, as early as the task could tell: the end of a round trip.
    pub at: Instant,
    /// It came from the peer's tunnel address (anything else is a forgery attempt).
    pub from_peer: bool,
}

/// A change of a link's probe socket, for the engine's keys.
pub enum SocketChange {
    /// A socket opened (or reopened with other settings): the key of its probes.
    Opened(String, Key),
    /// The link's socket closed.
    Closed(String),
}

struct LinkSocket {
    socket: Arc<UdpSocket>,
    peer: SocketAddr,
    /// What the socket was built from, to notice changes on reload.
    built_from: (IpAddr, IpAddr, u16, String, [u8; 32], [u8; 32]),
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

    /// Open sockets for running links that have none (or whose settings changed), close those
    /// of links that are gone or stopped. Cheap when nothing changed. Returns what changed, for
    /// the engine's keys.
    pub fn sync(
        &mut self,
        links: &[Link],
        running: impl Fn(&str) -> bool,
        port: u16,
    ) -> Vec<SocketChange> {
        let mut changes = Vec::new();
        self.sockets.retain(|name, _| {
            let keep = links.iter().any(|l| &l.name == name) && running(name);
            if !keep {
                changes.push(SocketChange::Closed(name.clone()));
            }
            keep
        });
        for link in links {
            if !running(&link.name) {
                continue;
            }
            let Some(local) = link.addresses.first().map(|a| a.ip()) else {
                continue;
            };
            let built_from = (
                local,
                link.peer_address,
                port,
                link.interface.clone(),
                *link.private_key.expose(),
                link.peer_public_key.0,
            );
            if self
                .sockets
                .get(&link.name)
                .is_some_and(|s| s.built_from == built_from)
            {
                continue;
            }
            if self.sockets.remove(&link.name).is_some() {
                changes.push(SocketChange::Closed(link.name.clone()));
            }
            match self.open(link, local, port, built_from) {
                Ok(s) => {
                    self.errors.remove(&link.name);
                    self.sockets.insert(link.name.clone(), s);
                    let key = Key::derive(link.private_key.expose(), &link.peer_public_key.0);
                    changes.push(SocketChange::Opened(link.name.clone(), key));
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
        changes
    }

    fn open(
        &self,
        link: &Link,
        local: IpAddr,
        port: u16,
        built_from: (IpAddr, IpAddr, u16, String, [u8; 32], [u8; 32]),
    ) -> anyhow::Result<LinkSocket> {
        use anyhow::Context as _;
        let addr = SocketAddr::new(local, port);
        let s = socket2::Socket::new(
            socket2::Domain::for_address(addr),
            socket2::Type::DGRAM.nonblocking().cloexec(),
            Some(socket2::Protocol::UDP),
        )?;
        s.bind_device(Some(link.interface.as_bytes()))
            .with_context(|| format!("binding the probe socket to {}", link.interface))?;
        s.bind(&addr.into())
            .with_context(|| format!("binding the probe socket to {addr}"))?;
        let socket = Arc::new(UdpSocket::from_std(s.into())?);
        let peer = SocketAddr::new(link.peer_address, port);
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

    /// Send a datagram to the peer on `link`. False if the link has no socket or the kernel
    /// refused it (a probe that is not sent is a probe lost, which is what the engine assumes).
    pub fn send(&self, link: &str, bytes: &[u8]) -> bool {
        let Some(s) = self.sockets.get(link) else {
            return false;
        };
        s.socket.try_send_to(bytes, s.peer).is_ok()
    }
}

async fn receive(link: String, socket: Arc<UdpSocket>, peer: IpAddr, tx: mpsc::Sender<ProbeIn>) {
    // Large enough for any datagram, padded path-MTU probes (9000 bytes and more) included.
    let mut buf = vec![0u8; MAX_LEN];
    loop {
        let (n, from) = match socket.recv_from(&mut buf).await {
            Ok(x) => x,
            Err(e) => {
                tracing::debug!(%link, error = %e, "probe socket receive failed");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            }
        };
        let at = Instant::now();
        // Only the peer's tunnel address may speak here; the engine counts anything else as
        // forged without reading it.
        let from_peer = from.ip() == peer;
        let bytes = if from_peer {
            buf[..n].to_vec()
        } else {
            Vec::new()
        };
        if tx
            .send(ProbeIn {
                link: link.clone(),
                bytes,
                at,
                from_peer,
            })
            .await
            .is_err()
        {
            return;
        }
    }
}
