//! TCP transfers between namespaces with `xfer` (tests/src/bin/xfer.rs), checked end to end:
//! both ends print `<bytes> <hash>` (FNV-1a 64 of the stream), the sender its MSS at the start
//! and at the end, the receiver its longest wait for data.

use std::io::{BufRead, BufReader, Lines};
use std::net::SocketAddr;
use std::process::{Child, ChildStdout, Stdio};
use std::time::{Duration, Instant};

use crate::{bin, Netns};

/// A TCP transfer from one namespace to another, running.
pub struct Xfer {
    server: Child,
    lines: Lines<BufReader<ChildStdout>>,
    client: Option<Child>,
}

/// What a transfer reported: both ends' `<bytes> <hash>`, the sender's MSS at the start and
/// at the end, and the receiver's longest wait for data (a stall).
#[derive(Debug)]
pub struct Report {
    pub sent: String,
    pub received: String,
    pub mss: (u32, u32),
    pub stall: Duration,
}

impl Xfer {
    pub fn start(
        from: &Netns,
        to: &Netns,
        to_addr: SocketAddr,
        bytes: u64,
        pace: Option<u64>,
    ) -> Xfer {
        let mut server = to
            .command(bin("xfer"))
            .args(["serve", &to_addr.to_string()])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("xfer serve");
        let mut lines = BufReader::new(server.stdout.take().expect("stdout")).lines();
        assert_eq!(
            lines.next().and_then(Result::ok).as_deref(),
            Some("listening")
        );
        let mut args = vec![
            "send".to_owned(),
            to_addr.to_string(),
            bytes.to_string(),
            "7".into(),
        ];
        if let Some(rate) = pace {
            args.push(rate.to_string());
        }
        let client = from
            .command(bin("xfer"))
            .args(&args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("xfer send");
        Xfer {
            server,
            lines,
            client: Some(client),
        }
    }

    pub fn running(&mut self) -> bool {
        matches!(self.client.as_mut().map(Child::try_wait), Some(Ok(None)))
    }

    /// Wait for the end (at most two minutes: a stalled connection fails the test, it does not
    /// hang it).
    pub fn finish(mut self) -> Report {
        let deadline = Instant::now() + Duration::from_secs(120);
        while self.running() {
            assert!(Instant::now() < deadline, "the transfer stalled");
            std::thread::sleep(Duration::from_millis(20));
        }
        let client = self.client.take().expect("a client");
        let out = client.wait_with_output().expect("xfer send");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "xfer send: {stderr}");
        let received = self.lines.next().and_then(Result::ok).unwrap_or_default();
        let mut server_err = String::new();
        if let Some(mut e) = self.server.stderr.take() {
            use std::io::Read as _;
            let _ = self.server.wait();
            let _ = e.read_to_string(&mut server_err);
        }
        let stall = server_err
            .lines()
            .find_map(|l| l.strip_prefix("gap_ms "))
            .and_then(|n| n.trim().parse().ok())
            .map_or(Duration::ZERO, Duration::from_millis);
        let mss: Vec<u32> = stderr
            .lines()
            .find_map(|l| l.strip_prefix("mss "))
            .map(|l| {
                l.split_whitespace()
                    .filter_map(|n| n.parse().ok())
                    .collect()
            })
            .unwrap_or_default();
        Report {
            sent: String::from_utf8_lossy(&out.stdout).trim().to_owned(),
            received,
            mss: (
                mss.first().copied().unwrap_or(0),
                mss.get(1).copied().unwrap_or(0),
            ),
            stall,
        }
    }
}

impl Drop for Xfer {
    fn drop(&mut self) {
        if let Some(mut c) = self.client.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = self.server.kill();
        let _ = self.server.wait();
    }
}
