//! Hostile clients of the control socket: a `control-flood` process (tests/src/bin) that keeps
//! many connections open as a given user, idle or trickling a request head, and reopens those
//! that agentd closes. Killed (by PID) on drop.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use crate::agentd::{run_as, stop};
use crate::{bin, Identity};

/// How the flood's connections misbehave.
#[derive(Debug, Clone, Copy)]
pub enum FloodMode {
    /// Connect and send nothing.
    Idle,
    /// Send a request head one byte every 100 ms, never finishing it.
    Slow,
}

/// What a flood saw when it stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FloodCounts {
    /// Connections opened (the first round and every reopening).
    pub connects: u64,
    /// Connections that agentd ended.
    pub closed: u64,
    /// Of those, the ones answered with a 503 first.
    pub refused_503: u64,
}

pub struct Flood {
    child: Option<Child>,
    stdin: Option<ChildStdin>,
    lines: mpsc::Receiver<String>,
}

impl Flood {
    /// Open `count` connections to `socket` as `who` and return once all are open.
    pub fn start(who: &Identity, socket: &Path, count: usize, mode: FloodMode) -> Flood {
        let mode_arg = match mode {
            FloodMode::Idle => "idle",
            FloodMode::Slow => "slow",
        };
        let mut cmd = Command::new(bin("control-flood"));
        cmd.arg(socket)
            .arg(count.to_string())
            .arg(mode_arg)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        run_as(&mut cmd, who);
        let mut child = cmd.spawn().expect("starting control-flood");
        let stdin = child.stdin.take();
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut flood = Flood {
            child: Some(child),
            stdin,
            lines,
        };
        let line = flood.next_line(Duration::from_secs(60));
        assert_eq!(
            line.as_deref(),
            Some(format!("connected {count}").as_str()),
            "control-flood ({who:?}, {count} {mode_arg}) did not open its connections"
        );
        flood
    }

    /// Stop the flood (its connections close) and return its counts.
    pub fn stop(mut self) -> FloodCounts {
        drop(self.stdin.take());
        let line = self
            .next_line(Duration::from_secs(10))
            .expect("control-flood printed no counts");
        if let Some(mut child) = self.child.take() {
            let _ = child.wait();
        }
        parse_counts(&line).unwrap_or_else(|| panic!("unexpected control-flood output {line:?}"))
    }

    fn next_line(&mut self, timeout: Duration) -> Option<String> {
        self.lines.recv_timeout(timeout).ok()
    }
}

fn parse_counts(line: &str) -> Option<FloodCounts> {
    let mut counts = FloodCounts {
        connects: 0,
        closed: 0,
        refused_503: 0,
    };
    for field in line.split_whitespace() {
        let (key, value) = field.split_once('=')?;
        let value: u64 = value.parse().ok()?;
        match key {
            "connects" => counts.connects = value,
            "closed" => counts.closed = value,
            "refused_503" => counts.refused_503 = value,
            _ => return None,
        }
    }
    Some(counts)
}

impl Drop for Flood {
    fn drop(&mut self) {
        drop(self.stdin.take());
        if let Some(mut child) = self.child.take() {
            stop(&mut child);
        }
    }
}

/// Raise this process's soft RLIMIT_NOFILE to at least `want` (agentd and the floods started
/// afterwards inherit it); panics if the hard limit is lower.
pub fn raise_open_files(want: u64) {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `lim` is a valid rlimit for the duration of both calls.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim), 0);
        if lim.rlim_cur >= want {
            return;
        }
        assert!(
            lim.rlim_max >= want,
            "RLIMIT_NOFILE hard limit {} is below the {want} this test needs",
            lim.rlim_max
        );
        lim.rlim_cur = want;
        assert_eq!(
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim),
            0,
            "raising RLIMIT_NOFILE: {}",
            std::io::Error::last_os_error()
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_counts_line() {
        assert_eq!(
            parse_counts("connects=5 closed=3 refused_503=1"),
            Some(FloodCounts {
                connects: 5,
                closed: 3,
                refused_503: 1
            })
        );
        assert_eq!(parse_counts("connected 5"), None);
    }
}
