//! Test helpers shared by the probe modules' tests.

use std::future::Future;
use std::io;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use isthmus_config::{Probe, ProbeKind, DEFAULT_EXPECT_STATUS};
use tokio::io::{AsyncRead, AsyncReadExt};

pub(super) fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

pub(super) fn probe(name: &str, kind: ProbeKind, target: &str) -> Probe {
    Probe {
        name: name.to_string(),
        kind,
        target: target.to_string(),
        interval: ms(1000),
        timeout: ms(500),
        expect_status: matches!(kind, ProbeKind::Http | ProbeKind::Https)
            .then_some(DEFAULT_EXPECT_STATUS),
        source: None,
    }
}

pub(super) fn tcp(target: &str) -> Probe {
    probe("db", ProbeKind::Tcp, target)
}

pub(super) fn icmp(target: &str) -> Probe {
    probe("ping", ProbeKind::Icmp, target)
}

/// A network namespace owned by one test: `ip netns del` on drop, panics included.
pub(super) struct Netns {
    name: String,
}

impl Netns {
    pub(super) fn new() -> Self {
        assert!(
            nix::unistd::geteuid().is_root(),
            "this test needs root: it creates a network namespace"
        );
        static N: AtomicU32 = AtomicU32::new(0);
        let name = format!(
            "isth-probe-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        );
        ip(&["netns", "add", &name]);
        let ns = Netns { name };
        ns.ip(&["link", "set", "lo", "up"]);
        ns
    }

    /// Also routes 192.0.2.0/24 into a black hole (a veth neighbour that does not exist, with a
    /// fixed MAC so that not even ARP answers: packets leave and vanish) and makes
    /// 198.51.100.0/24 unreachable.
    pub(super) fn with_black_hole() -> Self {
        let ns = Netns::new();
        ns.ip(&["link", "add", "bh0", "type", "veth", "peer", "name", "bh1"]);
        ns.ip(&["link", "set", "bh0", "up"]);
        ns.ip(&["link", "set", "bh1", "up"]);
        ns.ip(&["addr", "add", "10.99.0.1/24", "dev", "bh0"]);
        ns.ip(&[
            "neigh",
            "add",
            "10.99.0.2",
            "lladdr",
            "02:00:00:00:00:02",
            "dev",
            "bh0",
            "nud",
            "permanent",
        ]);
        ns.ip(&["route", "add", "192.0.2.0/24", "via", "10.99.0.2"]);
        ns.ip(&["route", "add", "unreachable", "198.51.100.0/24"]);
        ns
    }

    pub(super) fn ip(&self, args: &[&str]) {
        ip(&[&["-n", self.name.as_str()], args].concat());
    }

    pub(super) fn sysctl(&self, setting: &str) {
        let status = Command::new("ip")
            .args(["netns", "exec", &self.name, "sysctl", "-qw", setting])
            .status()
            .expect("running sysctl");
        assert!(status.success(), "sysctl {setting}");
    }

    /// Runs `make()`'s future on a thread that has entered the namespace, on a runtime of
    /// that thread (its sockets, and those of its blocking pool, live in the namespace).
    pub(super) fn block_on<F: Future>(&self, make: impl FnOnce() -> F + Send) -> F::Output
    where
        F::Output: Send,
    {
        std::thread::scope(|scope| {
            let thread = scope.spawn(|| {
                let file = std::fs::File::open(format!("/run/netns/{}", self.name))
                    .expect("opening the namespace");
                // SAFETY: setns on a valid namespace fd affects only this thread.
                let rc = unsafe {
                    libc::setns(std::os::fd::AsRawFd::as_raw_fd(&file), libc::CLONE_NEWNET)
                };
                assert_eq!(rc, 0, "setns: {}", io::Error::last_os_error());
                tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("runtime")
                    .block_on(make())
            });
            thread
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
        })
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

pub(super) fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("running ip");
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

pub(super) async fn read_head<S: AsyncRead + Unpin>(conn: &mut S) -> String {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match conn.read(&mut byte).await {
            Ok(1) => head.push(byte[0]),
            _ => break,
        }
    }
    String::from_utf8_lossy(&head).into_owned()
}
