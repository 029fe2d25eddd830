//! Test helpers shared by the probe modules' tests.

use std::future::Future;
use std::io;
use std::process::Command;
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

/// Runs `make()`'s future in a network namespace of its own: a new one, with nothing but its
/// loopback (up) and the `sysctls` given (`("net/ipv4/ping_group_range", "0 0")`), entered by
/// a thread of its own with `unshare`. The future runs on a runtime of that thread, so its
/// sockets, and those of its blocking pool (the resolver), live in the namespace, which goes
/// away with the thread. Nothing leaves it: a resolver's queries cannot either.
///
/// Creating a namespace needs root (CAP_SYS_ADMIN): without it, prints that `test` is skipped
/// and returns `None`. The tests that need a routed network run end to end instead
/// (`tests/tests/targets.rs`).
pub(super) fn in_own_netns<F: Future>(
    test: &str,
    sysctls: &[(&str, &str)],
    make: impl FnOnce() -> F + Send,
) -> Option<F::Output>
where
    F::Output: Send,
{
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped {test}: not root, and it needs a network namespace of its own");
        return None;
    }
    std::thread::scope(|scope| {
        let thread = scope.spawn(|| {
            // SAFETY: unshare(CLONE_NEWNET) moves only this thread into a new namespace.
            let rc = unsafe { libc::unshare(libc::CLONE_NEWNET) };
            assert_eq!(rc, 0, "unshare: {}", io::Error::last_os_error());
            // A child forked from this thread starts in its namespace.
            let out = Command::new("ip")
                .args(["link", "set", "lo", "up"])
                .output()
                .expect("running ip");
            assert!(out.status.success(), "ip link set lo up: {out:?}");
            for (key, value) in sysctls {
                // /proc/sys/net shows the namespace of the thread that opens it.
                std::fs::write(format!("/proc/sys/net/{key}"), value)
                    .unwrap_or_else(|e| panic!("sysctl {key}={value}: {e}"));
            }
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime")
                .block_on(make())
        });
        Some(
            thread
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic)),
        )
    })
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
