//! A DNS server that never answers: it reads every query (UDP and TCP, port 53 on the
//! namespace's loopback) and discards it, so that a resolver pointed at it waits until its own
//! timeout. Unlike an address where nothing listens (which answers with ICMP port unreachable,
//! and glibc gives up at once), this makes `getaddrinfo` hang.
//!
//! The sockets live in the test's namespace, opened by a thread that entered it; [`Drop`] stops
//! the thread and closes them. Point a process at it with [`crate::Netns::set_resolv_conf`].

use std::io::Read;
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use crate::Netns;

/// Where the silent resolver listens, inside the namespace.
pub const SILENT_RESOLVER: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(Ipv4Addr::LOCALHOST), 53);

pub struct SilentResolver {
    stop: Arc<AtomicBool>,
    queries: Arc<AtomicU64>,
    thread: Option<JoinHandle<()>>,
}

impl SilentResolver {
    /// Listen on 127.0.0.1:53 (UDP and TCP) inside `ns` and drop every query.
    pub fn start(ns: &Netns) -> SilentResolver {
        let path = std::path::Path::new("/run/netns").join(ns.name());
        let stop = Arc::new(AtomicBool::new(false));
        let queries = Arc::new(AtomicU64::new(0));
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let (stop2, queries2) = (stop.clone(), queries.clone());
        let thread = std::thread::spawn(move || {
            let bound = (|| -> std::io::Result<(UdpSocket, TcpListener)> {
                let file = std::fs::File::open(&path)?;
                nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET)
                    .map_err(std::io::Error::from)?;
                let udp = UdpSocket::bind(SILENT_RESOLVER)?;
                udp.set_read_timeout(Some(Duration::from_millis(50)))?;
                let tcp = TcpListener::bind(SILENT_RESOLVER)?;
                tcp.set_nonblocking(true)?;
                Ok((udp, tcp))
            })();
            let (udp, tcp) = match bound {
                Ok(s) => {
                    let _ = ready_tx.send(Ok(()));
                    s
                }
                Err(e) => {
                    let _ = ready_tx.send(Err(e));
                    return;
                }
            };
            let mut conns: Vec<TcpStream> = Vec::new();
            let mut buf = [0u8; 4096];
            while !stop2.load(Ordering::Relaxed) {
                // UDP: read and forget (the read timeout paces the loop).
                if udp.recv_from(&mut buf).is_ok() {
                    queries2.fetch_add(1, Ordering::Relaxed);
                }
                // TCP: accept, read and discard, never answer, keep the connection open.
                while let Ok((s, _)) = tcp.accept() {
                    let _ = s.set_nonblocking(true);
                    queries2.fetch_add(1, Ordering::Relaxed);
                    conns.push(s);
                }
                conns.retain_mut(|c| match c.read(&mut buf) {
                    Ok(0) => false,
                    Ok(_) => true,
                    Err(e) => e.kind() == std::io::ErrorKind::WouldBlock,
                });
            }
        });
        match ready_rx.recv() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => panic!("silent resolver on {SILENT_RESOLVER} in {}: {e}", ns.name()),
            Err(_) => panic!("silent resolver thread died"),
        }
        SilentResolver {
            stop,
            queries,
            thread: Some(thread),
        }
    }

    /// Queries received so far (UDP datagrams and TCP connections).
    pub fn queries(&self) -> u64 {
        self.queries.load(Ordering::Relaxed)
    }
}

impl Drop for SilentResolver {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
