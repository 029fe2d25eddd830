//! A stand-in for systemd's notification socket: agentd gets `NOTIFY_SOCKET` pointing here, the
//! test reads what it announces (READY=1, RELOADING=1, WATCHDOG=1, STOPPING=1).

use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

pub struct NotifySocket {
    socket: UnixDatagram,
    path: PathBuf,
    seen: Vec<String>,
}

impl NotifySocket {
    pub fn bind(path: &Path) -> NotifySocket {
        let socket = UnixDatagram::bind(path).expect("binding the notify socket");
        NotifySocket {
            socket,
            path: path.to_owned(),
            seen: Vec::new(),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Every message received so far (each is one datagram, possibly several lines).
    pub fn seen(&self) -> &[String] {
        &self.seen
    }

    /// Read and keep (in `seen`) every datagram already queued, so that the next
    /// [`Notify::wait_for`] only matches what is sent from now on.
    pub fn drain(&mut self) {
        let mut buf = [0u8; 4096];
        self.socket.set_nonblocking(true).unwrap();
        while let Ok(n) = self.socket.recv(&mut buf) {
            self.seen
                .push(String::from_utf8_lossy(&buf[..n]).into_owned());
        }
        self.socket.set_nonblocking(false).unwrap();
    }

    /// Wait until a datagram containing `line` (a whole line, e.g. "READY=1") arrives.
    pub fn wait_for(&mut self, line: &str, timeout: Duration) -> Result<(), String> {
        let deadline = Instant::now() + timeout;
        let mut buf = [0u8; 4096];
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(format!("no {line} within {timeout:?}; got {:?}", self.seen));
            }
            self.socket.set_read_timeout(Some(left)).unwrap();
            match self.socket.recv(&mut buf) {
                Ok(n) => {
                    let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
                    let hit = msg.lines().any(|l| l == line);
                    self.seen.push(msg);
                    if hit {
                        return Ok(());
                    }
                }
                Err(e)
                    if e.kind() == std::io::ErrorKind::WouldBlock
                        || e.kind() == std::io::ErrorKind::TimedOut => {}
                Err(e) => return Err(format!("notify socket: {e}")),
            }
        }
    }
}
