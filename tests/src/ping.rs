//! A 10 ms ping from an app namespace, run beside a scenario: what it sent and got back, and
//! when the replies came (to find the longest gap and when traffic resumed).

use std::process::{Child, Stdio};
use std::time::Duration;

use crate::Netns;

/// `ping -D -i 0.01 -W 1 -c COUNT ADDR` in a namespace; [`Pinger::finish`] waits for it.
pub struct Pinger(Option<Child>);

/// What a [`Pinger`] saw.
#[derive(Debug, Clone)]
pub struct PingReport {
    pub sent: u32,
    pub received: u32,
    /// The longest time between two consecutive replies.
    pub longest_gap: Duration,
    /// Arrival of every reply, in Unix milliseconds (ping's `-D` stamps), in order.
    pub replies_ms: Vec<u64>,
}

impl PingReport {
    pub fn lost(&self) -> u32 {
        self.sent.saturating_sub(self.received)
    }

    /// The first reply at or after `unix_ms`, if any.
    pub fn first_reply_after(&self, unix_ms: u64) -> Option<u64> {
        self.replies_ms.iter().copied().find(|t| *t >= unix_ms)
    }

    /// The longest time between consecutive replies that ends at or after `unix_ms` (a gap
    /// that started before it counts): the outage a scenario caused at that moment.
    pub fn longest_gap_after(&self, unix_ms: u64) -> Duration {
        self.replies_ms
            .windows(2)
            .filter(|w| w[1] >= unix_ms)
            .map(|w| Duration::from_millis(w[1] - w[0]))
            .max()
            .unwrap_or_default()
    }
}

impl Pinger {
    /// Ping `addr` from `from` every 10 ms, `count` times (so for about `count / 100` s).
    pub fn start(from: &Netns, addr: &str, count: u32) -> Pinger {
        let child = from
            .command("ping")
            .args([
                "-D",
                "-i",
                "0.01",
                "-W",
                "1",
                "-c",
                &count.to_string(),
                addr,
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("ping (iputils-ping)");
        Pinger(Some(child))
    }

    /// Stop the ping now (SIGINT: it prints its summary) and read its output.
    pub fn stop(self) -> PingReport {
        if let Some(child) = &self.0 {
            let pid = nix::unistd::Pid::from_raw(child.id() as i32);
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT);
        }
        self.finish()
    }

    /// Wait for the ping to end and read its output.
    pub fn finish(mut self) -> PingReport {
        let child = self.0.take().expect("a running ping");
        let out = child.wait_with_output().expect("waiting for ping");
        parse(&String::from_utf8_lossy(&out.stdout))
    }
}

impl Drop for Pinger {
    /// A scenario that failed half-way leaves no ping behind.
    fn drop(&mut self) {
        if let Some(mut child) = self.0.take() {
            crate::agentd::stop(&mut child);
        }
    }
}

/// Parse ping's output: `[1700000000.123456] 64 bytes from …` lines and the summary
/// `N packets transmitted, M received`.
fn parse(text: &str) -> PingReport {
    let replies_ms: Vec<u64> = text
        .lines()
        .filter(|l| l.contains("bytes from"))
        .filter_map(|l| l.strip_prefix('[')?.split(']').next()?.parse::<f64>().ok())
        .map(|s| (s * 1000.0).round() as u64)
        .collect();
    let longest_gap = replies_ms
        .windows(2)
        .map(|w| Duration::from_millis(w[1] - w[0]))
        .max()
        .unwrap_or_default();
    let nums: Vec<u32> = text
        .lines()
        .find(|l| l.contains("transmitted"))
        .map(|l| {
            l.split(|c: char| !c.is_ascii_digit())
                .filter_map(|n| n.parse().ok())
                .collect()
        })
        .unwrap_or_default();
    assert!(nums.len() >= 2, "ping printed no summary:\n{text}");
    PingReport {
        sent: nums[0],
        received: nums[1],
        longest_gap,
        replies_ms,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_replies_gaps_and_the_summary() {
        let text = "PING 10.2.0.10 (10.2.0.10) 56(84) bytes of data.\n\
            [1700000000.100000] 64 bytes from 10.2.0.10: icmp_seq=1 ttl=62 time=0.3 ms\n\
            [1700000000.110000] 64 bytes from 10.2.0.10: icmp_seq=2 ttl=62 time=0.3 ms\n\
            [1700000000.900000] 64 bytes from 10.2.0.10: icmp_seq=80 ttl=62 time=0.3 ms\n\
            [1700000000.910000] 64 bytes from 10.2.0.10: icmp_seq=81 ttl=62 time=0.3 ms\n\
            \n--- 10.2.0.10 ping statistics ---\n\
            81 packets transmitted, 4 received, 95.0617% packet loss, time 810ms\n";
        let r = parse(text);
        assert_eq!((r.sent, r.received, r.lost()), (81, 4, 77));
        assert_eq!(r.longest_gap, Duration::from_millis(790));
        assert_eq!(
            r.first_reply_after(1_700_000_000_200),
            Some(1_700_000_000_900)
        );
        assert_eq!(
            r.longest_gap_after(1_700_000_000_905),
            Duration::from_millis(10)
        );
    }
}
