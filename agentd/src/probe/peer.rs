//! Peer probe sockets: one UDP socket per running link, bound to the link's inner address,
//! `[health].probe_port` and the link's TUN interface, so that probes leave and arrive only
//! through that link's tunnel (docs/protocol.md). A task per socket receives, authenticates
//! and timestamps datagrams and hands them to the event loop, which feeds the engine and
//! answers requests.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Instant;

use isthmus_config::Link;
use isthmus_core::engine::OwnView;
use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::packet::{self, Key, Kind, Probe, Reject};

/// A datagram that arrived on a link's probe socket.
pub struct ProbeIn {
    pub link: String,
    pub probe: Result<Probe, Reject>,
    pub at: Instant,
}

struct LinkSocket {
    socket: Arc<UdpSocket>,
    peer: SocketAddr,
    key: Arc<Key>,
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
    /// Origin of the `sent_us` timestamps.
    epoch: Instant,
}

impl PeerSockets {
    pub fn new(tx: mpsc::Sender<ProbeIn>) -> PeerSockets {
        PeerSockets {
            sockets: BTreeMap::new(),
            errors: BTreeMap::new(),
            tx,
            epoch: Instant::now(),
        }
    }

    /// Open sockets for running links that have none (or whose settings changed), close those
    /// of links that are gone or stopped. Cheap when nothing changed.
    pub fn sync(&mut self, links: &[Link], running: impl Fn(&str) -> bool, port: u16) {
        self.sockets
            .retain(|name, _| links.iter().any(|l| &l.name == name) && running(name));
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
            self.sockets.remove(&link.name);
            match self.open(link, local, port, built_from) {
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
        let key = Arc::new(Key::derive(
            link.private_key.expose(),
            &link.peer_public_key.0,
        ));
        let peer = SocketAddr::new(link.peer_address, port);
        let task = tokio::spawn(receive(
            link.name.clone(),
            socket.clone(),
            key.clone(),
            peer.ip(),
            self.tx.clone(),
        ));
        Ok(LinkSocket {
            socket,
            peer,
            key,
            built_from,
            task,
        })
    }

    /// Microseconds since this process's probe epoch, for `sent_us`.
    pub fn micros(&self, at: Instant) -> u64 {
        at.saturating_duration_since(self.epoch).as_micros() as u64
    }

    /// Send a probe on `link`. False if the link has no socket or the kernel refused it.
    pub fn send(&self, link: &str, kind: Kind, seq: u32, at: Instant, view: &OwnView) -> bool {
        let Some(s) = self.sockets.get(link) else {
            return false;
        };
        let bytes = packet::encode(&s.key, kind, seq, self.micros(at), view);
        s.socket.try_send_to(&bytes, s.peer).is_ok()
    }
}

async fn receive(
    link: String,
    socket: Arc<UdpSocket>,
    key: Arc<Key>,
    peer: IpAddr,
    tx: mpsc::Sender<ProbeIn>,
) {
    let mut buf = [0u8; 256];
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
        // Only the peer's tunnel address may speak here; anything else is a forgery attempt.
        let probe = if from.ip() != peer {
            Err(Reject::Forged)
        } else {
            packet::decode(&key, &buf[..n])
        };
        if tx
            .send(ProbeIn {
                link: link.clone(),
                probe,
                at,
            })
            .await
            .is_err()
        {
            return;
        }
    }
}
