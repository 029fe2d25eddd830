//! A real etcd for tests (Debian's `etcd-server`): one member on loopback ports with tight
//! timings, its data in a temporary directory. Not for production use.
#![allow(clippy::disallowed_methods)]

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};

/// One etcd member on loopback ports, with its data in a temporary directory; killed (by
/// PID) and removed on drop.
pub struct Etcd {
    child: Child,
    client_url: String,
    _dir: tempfile::TempDir,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

impl Etcd {
    pub fn start() -> Etcd {
        let dir = tempfile::tempdir().expect("a data dir");
        let (client, peer) = (free_port(), free_port());
        let client_url = format!("http://127.0.0.1:{client}");
        let peer_url = format!("http://127.0.0.1:{peer}");
        let child = Command::new("etcd")
            .args(["--name", "t", "--data-dir"])
            .arg(dir.path())
            .args(["--listen-client-urls", &client_url])
            .args(["--advertise-client-urls", &client_url])
            .args(["--listen-peer-urls", &peer_url])
            .args(["--initial-advertise-peer-urls", &peer_url])
            .args(["--initial-cluster", &format!("t={peer_url}")])
            // Tight timings, as on a VPC: leases of 1 s are allowed.
            .args(["--heartbeat-interval", "50", "--election-timeout", "500"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("etcd runs (tests/install-deps installs etcd-server)");
        Etcd {
            child,
            client_url,
            _dir: dir,
        }
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Etcd {
    /// `http://127.0.0.1:PORT`.
    pub fn client_url(&self) -> &str {
        &self.client_url
    }

    /// The member's PID (to stop or pause it by PID).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}
