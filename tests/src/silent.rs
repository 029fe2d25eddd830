//! Servers that accept and never answer, inside a test namespace: what a hung DNS server or
//! cloud API looks like from agentd (the connection is made, the request goes out, nothing comes
//! back). Their sockets are opened inside the namespace and served by threads of the test
//! process, which stop on drop (and every held connection is closed with them).
//!
//! - [`SilentDns`]: UDP queries read and dropped, TCP connections accepted and held.
//! - [`Gate`]: a TCP forwarder in front of a real server (the OCI stub, moto): open, it relays
//!   every connection to the server; shut, it accepts connections and holds them without a
//!   byte. Agentd's API requests each open their own connection, so shutting the gate makes
//!   every request from then on hang until agentd's own deadline.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use crate::Netns;

/// A DNS server on `addr` that takes every query and never answers.
pub struct SilentDns {
    stop: Arc<AtomicBool>,
    queries: Arc<AtomicU64>,
    thread: Option<JoinHandle<()>>,
}

impl SilentDns {
    pub fn start(ns: &Netns, addr: SocketAddr) -> SilentDns {
        let (udp, tcp) = ns.run_in(move || {
            let udp = UdpSocket::bind(addr).unwrap_or_else(|e| panic!("silent DNS {addr}: {e}"));
            let tcp = TcpListener::bind(addr).unwrap_or_else(|e| panic!("silent DNS {addr}: {e}"));
            (udp, tcp)
        });
        udp.set_read_timeout(Some(Duration::from_millis(20)))
            .expect("UDP read timeout");
        tcp.set_nonblocking(true).expect("non-blocking listener");
        let (stop, queries) = (
            Arc::new(AtomicBool::new(false)),
            Arc::new(AtomicU64::new(0)),
        );
        let thread = {
            let (stop, queries) = (stop.clone(), queries.clone());
            std::thread::spawn(move || {
                let mut held: Vec<TcpStream> = Vec::new();
                let mut buf = [0u8; 4096];
                while !stop.load(Ordering::Relaxed) {
                    if udp.recv_from(&mut buf).is_ok() {
                        queries.fetch_add(1, Ordering::Relaxed);
                    }
                    while let Ok((s, _)) = tcp.accept() {
                        queries.fetch_add(1, Ordering::Relaxed);
                        held.push(s);
                    }
                }
            })
        };
        SilentDns {
            stop,
            queries,
            thread: Some(thread),
        }
    }

    /// UDP queries and TCP connections taken so far.
    pub fn queries(&self) -> u64 {
        self.queries.load(Ordering::Relaxed)
    }
}

impl Drop for SilentDns {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A TCP forwarder on `listen` (inside `ns`) to `upstream` (reached from inside `ns` too),
/// open or shut.
pub struct Gate {
    stop: Arc<AtomicBool>,
    open: Arc<AtomicBool>,
    held: Arc<AtomicU64>,
    thread: Option<JoinHandle<()>>,
}

impl Gate {
    /// An open gate.
    pub fn start(ns: &Netns, listen: SocketAddr, upstream: SocketAddr) -> Gate {
        let listener = ns.run_in(move || {
            let l = TcpListener::bind(listen).unwrap_or_else(|e| panic!("gate {listen}: {e}"));
            l.set_nonblocking(true).expect("non-blocking listener");
            l
        });
        let ns_path = std::path::Path::new("/run/netns").join(ns.name());
        let stop = Arc::new(AtomicBool::new(false));
        let open = Arc::new(AtomicBool::new(true));
        let held = Arc::new(AtomicU64::new(0));
        let thread = {
            let (stop, open, held) = (stop.clone(), open.clone(), held.clone());
            std::thread::spawn(move || {
                // Upstream connections are made from inside the namespace as well.
                let file = std::fs::File::open(&ns_path).expect("opening the namespace");
                nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
                let mut holding: Vec<TcpStream> = Vec::new();
                let mut relays: Vec<TcpStream> = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    match listener.accept() {
                        Ok((client, _)) if open.load(Ordering::Relaxed) => {
                            let _ = client.set_nonblocking(false);
                            match TcpStream::connect_timeout(&upstream, Duration::from_secs(2)) {
                                Ok(server) => {
                                    relays.push(client.try_clone().expect("clone"));
                                    relay(client, server);
                                }
                                Err(_) => drop(client),
                            }
                        }
                        Ok((client, _)) => {
                            held.fetch_add(1, Ordering::Relaxed);
                            holding.push(client);
                        }
                        Err(_) => std::thread::sleep(Duration::from_millis(5)),
                    }
                }
                for s in holding.iter().chain(&relays) {
                    let _ = s.shutdown(Shutdown::Both);
                }
            })
        };
        Gate {
            stop,
            open,
            held,
            thread: Some(thread),
        }
    }

    /// Shut: new connections are accepted and held without a byte.
    pub fn shut(&self) {
        self.open.store(false, Ordering::Relaxed);
    }

    /// Open again: new connections reach the server.
    pub fn open(&self) {
        self.open.store(true, Ordering::Relaxed);
    }

    /// Connections held while shut.
    pub fn held(&self) -> u64 {
        self.held.load(Ordering::Relaxed)
    }
}

impl Drop for Gate {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Copy both ways between `a` and `b` until either side closes (two threads).
fn relay(a: TcpStream, b: TcpStream) {
    let pump = |mut from: TcpStream, mut to: TcpStream| {
        std::thread::spawn(move || {
            let mut buf = [0u8; 16 * 1024];
            loop {
                match from.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        if to.write_all(&buf[..n]).is_err() {
                            break;
                        }
                    }
                }
            }
            let _ = to.shutdown(Shutdown::Write);
        });
    };
    if let (Ok(a2), Ok(b2)) = (a.try_clone(), b.try_clone()) {
        pump(a, b2);
        pump(b, a2);
    }
}
