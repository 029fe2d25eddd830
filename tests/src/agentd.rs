//! Running the real binaries: an agentd process guard, and netctl as root or as another user.

use std::fs::File;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::{bin, Fixture, Netns, NotifySocket};

/// An agentd process started by the test. Killed (by PID) on drop; its log is printed if the
/// test is failing.
pub struct Agentd {
    child: Option<Child>,
    log: PathBuf,
    pub notify: NotifySocket,
}

impl Agentd {
    /// Start agentd with the fixture's config in `ns` and wait for READY=1.
    pub fn start(fx: &Fixture, ns: &Netns) -> Agentd {
        let agentd = Agentd::spawn(fx, ns, &[]);
        agentd.wait_ready()
    }

    /// [`Agentd::start`] with environment variables added to agentd's own environment.
    pub fn start_with_env(fx: &Fixture, ns: &Netns, env: &[(&str, String)]) -> Agentd {
        Agentd::spawn(fx, ns, env).wait_ready()
    }

    /// Start agentd without waiting; `env` adds environment variables (e.g. WATCHDOG_USEC).
    pub fn spawn(fx: &Fixture, ns: &Netns, env: &[(&str, String)]) -> Agentd {
        let mut cmd = ns.command(bin("agentd"));
        cmd.arg("--config").arg(fx.config_path());
        Agentd::spawn_command(fx, cmd, env)
    }

    /// Start agentd in a private mount namespace of its own (`unshare --mount`) after running
    /// the shell commands `setup` there (`$STATE` is the fixture's state directory), and wait
    /// for READY=1. What `setup` mounts exists only in that namespace: it goes away with the
    /// process, whatever happens to the test. The chain `unshare` → `sh` → `ip netns exec` →
    /// agentd execs all the way, so the PID is agentd's. A failing `setup` fails the start.
    pub fn start_in_private_mounts(fx: &Fixture, ns: &Netns, setup: &str) -> Agentd {
        let state = fx.dir().join("state");
        let script = format!(
            "set -e\n{setup}\nexec ip netns exec \"$ISTHMUS_TEST_NS\" \"$ISTHMUS_TEST_AGENTD\" --config \"$ISTHMUS_TEST_CONFIG\"\n"
        );
        let mut cmd = Command::new("unshare");
        cmd.args([
            "--mount",
            "--propagation",
            "private",
            "--",
            "sh",
            "-c",
            &script,
        ])
        .env("STATE", &state)
        .env("ISTHMUS_TEST_NS", ns.name())
        .env("ISTHMUS_TEST_AGENTD", bin("agentd"))
        .env("ISTHMUS_TEST_CONFIG", fx.config_path());
        Agentd::spawn_command(fx, cmd, &[]).wait_ready()
    }

    /// Run `cmd` (which execs agentd) with the fixture's notify socket and log.
    fn spawn_command(fx: &Fixture, mut cmd: Command, env: &[(&str, String)]) -> Agentd {
        let log = fx.dir().join(format!("agentd-{}.log", crate::unique("")));
        let notify_path = fx.dir().join(format!("notify-{}.sock", crate::unique("")));
        let notify = NotifySocket::bind(&notify_path);
        cmd.env("NOTIFY_SOCKET", &notify_path)
            .env_remove("RUST_LOG")
            .env_remove("CREDENTIALS_DIRECTORY")
            .stdin(Stdio::null());
        // agentd must not find the cloud credentials of whoever runs the tests: a test that
        // wants some passes them in `env`.
        for var in AWS_ENV {
            cmd.env_remove(var);
        }
        cmd.stdout(File::create(&log).unwrap())
            .stderr(File::create(&log).unwrap());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd.spawn().expect("starting agentd");
        Agentd {
            child: Some(child),
            log,
            notify,
        }
    }

    /// Wait for READY=1 (after [`Agentd::spawn`]); panics with the log if agentd exits first
    /// or takes more than 20 s.
    pub fn wait_ready(mut self) -> Agentd {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if self
                .notify
                .wait_for("READY=1", Duration::from_millis(200))
                .is_ok()
            {
                return self;
            }
            assert!(
                self.is_running(),
                "agentd exited before it was ready\n--- agentd log ---\n{}",
                self.log_text()
            );
            assert!(
                Instant::now() < deadline,
                "agentd did not become ready in 20 s\n--- agentd log ---\n{}",
                self.log_text()
            );
        }
    }

    pub fn pid(&self) -> Pid {
        Pid::from_raw(self.child.as_ref().expect("running").id() as i32)
    }

    pub fn signal(&self, sig: Signal) {
        kill(self.pid(), sig).expect("signalling agentd");
    }

    /// Whether the process is still running (not exited, not a zombie we have reaped).
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.as_mut().map(|c| c.try_wait()), Some(Ok(None)))
    }

    /// Wait for the process to exit and return its status.
    pub fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let deadline = Instant::now() + timeout;
        let child = self.child.as_mut().expect("running");
        loop {
            if let Some(status) = child.try_wait().expect("waiting for agentd") {
                self.child = None;
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "agentd did not exit within {timeout:?}\n--- agentd log ---\n{}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Agentd {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // Gracefully first, so agentd removes what it made (UAPI sockets in the shared
            // /var/run/wireguard among them); then by force.
            stop(&mut child);
        }
        if std::thread::panicking() {
            eprintln!(
                "--- agentd log ({}) ---\n{}",
                self.log.display(),
                self.log_text()
            );
        }
    }
}

/// The environment variables of the AWS credentials chain and its settings.
const AWS_ENV: [&str; 7] = [
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_PROFILE",
    "AWS_SHARED_CREDENTIALS_FILE",
    "AWS_CONFIG_FILE",
    "AWS_EC2_METADATA_SERVICE_ENDPOINT",
];

/// Stop a child we started: SIGTERM by PID, up to 5 s to exit, then SIGKILL; always reaped.
pub fn stop(child: &mut std::process::Child) {
    let _ = kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM);
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// Who runs netctl.
#[derive(Debug, Clone)]
pub enum Identity {
    Root,
    /// An unprivileged user: uid, primary gid, supplementary groups.
    User {
        uid: u32,
        gid: u32,
        groups: Vec<u32>,
    },
}

/// The result of a netctl run.
#[derive(Debug)]
pub struct Output {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Output {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("netctl printed no JSON ({e}): {self:?}"))
    }
}

/// Run netctl as root against `socket`.
pub fn netctl(socket: &Path, args: &[&str]) -> Output {
    netctl_as(&Identity::Root, socket, args)
}

/// Run netctl as `who` against `socket`.
pub fn netctl_as(who: &Identity, socket: &Path, args: &[&str]) -> Output {
    let mut cmd = Command::new(bin("netctl"));
    cmd.arg("--socket")
        .arg(socket)
        .args(args)
        .env_remove("ISTHMUS_SOCKET");
    run_as(&mut cmd, who);
    let out = cmd.output().expect("running netctl");
    Output {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Make `cmd` run as `who` (groups, then gid, then uid are set between fork and exec).
pub fn run_as(cmd: &mut Command, who: &Identity) {
    if let Identity::User { uid, gid, groups } = who.clone() {
        // SAFETY: only async-signal-safe libc calls between fork and exec.
        unsafe {
            cmd.pre_exec(move || {
                if libc::setgroups(groups.len(), groups.as_ptr()) != 0
                    || libc::setgid(gid) != 0
                    || libc::setuid(uid) != 0
                {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
    }
}
