//! A TCP service inside a test namespace (a database listener, say) for service checks to
//! connect to: it accepts and closes every connection. Its socket is opened inside the
//! namespace and served by a thread of the test process, which stops on drop.

use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::Netns;

pub struct TcpService {
    stop: Arc<AtomicBool>,
    accepted: Arc<AtomicU64>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl TcpService {
    /// Listen on `addr` inside `ns`.
    pub fn start(ns: &Netns, addr: SocketAddr) -> TcpService {
        let listener = ns.run_in(move || {
            let l = TcpListener::bind(addr).unwrap_or_else(|e| panic!("binding {addr}: {e}"));
            l.set_nonblocking(true).expect("non-blocking listener");
            l
        });
        let stop = Arc::new(AtomicBool::new(false));
        let accepted = Arc::new(AtomicU64::new(0));
        let thread = {
            let (stop, accepted) = (stop.clone(), accepted.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    match listener.accept() {
                        Ok(_) => {
                            accepted.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(_) => std::thread::sleep(Duration::from_millis(10)),
                    }
                }
            })
        };
        TcpService {
            stop,
            accepted,
            thread: Some(thread),
        }
    }

    /// Connections accepted so far.
    pub fn accepted(&self) -> u64 {
        self.accepted.load(Ordering::Relaxed)
    }
}

impl Drop for TcpService {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
