//! Commands that agentd runs: hooks on transitions, and the `exec` DNS provider.
//!
//! A command runs in its own process group with a clean environment: `PATH`, `LANG`, what the
//! config gives it and the `ISTHMUS_*` variables of the decision; nothing of agentd's own
//! environment (which may hold cloud credentials) reaches it. Its output goes to the log line
//! by line (at most [`MAX_LOGGED_LINES`] per stream), and it is killed with its whole process
//! group at its timeout, so a hook that hangs, forks or floods its output never holds anything
//! but its own task. A run that is dropped before its end (agentd stopping) kills its group too:
//! nothing agentd started outlives it.

use std::collections::BTreeMap;
use std::process::Stdio;
use std::time::Duration;

use tokio::time::Instant;

use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::process::Command;

use crate::{ActionResult, BoxFut, DnsBackend, Failure, FailureKind, RRset, RecordRef, RecordType};

/// Lines of output logged per stream and run; the rest is counted, not logged.
pub const MAX_LOGGED_LINES: usize = 50;
/// The `PATH` commands get.
pub const PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// A command to run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandSpec {
    /// The program (an absolute path) and its arguments.
    pub argv: Vec<String>,
    /// The environment, besides `PATH` and `LANG`.
    pub env: BTreeMap<String, String>,
    pub timeout: Duration,
    /// Names the command in the log (`hook page-oncall`).
    pub label: String,
}

/// How a run ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunResult {
    /// The exit code; `None` if a signal ended it (or we killed it at its timeout).
    pub code: Option<i32>,
    pub timed_out: bool,
    pub duration: Duration,
    /// The last line it wrote to stderr (or stdout), for the event log.
    pub last_line: Option<String>,
}

impl RunResult {
    pub fn success(&self) -> bool {
        self.code == Some(0) && !self.timed_out
    }

    /// In words: `exit 0 after 12 ms`, `killed at its 10s timeout`, `exit 3: no such zone`.
    pub fn describe(&self) -> String {
        let mut s = if self.timed_out {
            "killed at its timeout".to_string()
        } else {
            match self.code {
                Some(c) => format!("exit {c}"),
                None => "ended by a signal".to_string(),
            }
        };
        s.push_str(&format!(
            " after {:.0} ms",
            self.duration.as_secs_f64() * 1e3
        ));
        if let Some(l) = self.last_line.as_ref().filter(|_| !self.success()) {
            s.push_str(": ");
            s.push_str(l);
        }
        s
    }
}

/// Run `spec` to its end or its timeout. An error means it could not be started.
pub async fn run(spec: &CommandSpec) -> Result<RunResult, Failure> {
    let Some((program, args)) = spec.argv.split_first() else {
        return Err(Failure::new(FailureKind::Rejected, "empty command"));
    };
    let started = Instant::now();
    let mut cmd = Command::new(program);
    cmd.args(args)
        .env_clear()
        .env("PATH", PATH)
        .env("LANG", "C.UTF-8")
        .envs(&spec.env)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    let mut child = cmd.spawn().map_err(|e| {
        Failure::new(
            FailureKind::Rejected,
            format!("{}: cannot start {program}: {e}", spec.label),
        )
    })?;
    let pid = child.id();
    let mut group = GroupGuard(pid.and_then(|p| i32::try_from(p).ok()));
    let out = child
        .stdout
        .take()
        .map(|s| log_lines(s, spec.label.clone(), "stdout"));
    let err = child
        .stderr
        .take()
        .map(|s| log_lines(s, spec.label.clone(), "stderr"));
    let (code, timed_out) = match tokio::time::timeout(spec.timeout, child.wait()).await {
        Ok(Ok(status)) => {
            // It ended on its own: what it left running in its group is its business.
            group.0 = None;
            (status.code(), false)
        }
        Ok(Err(e)) => {
            return Err(Failure::new(
                FailureKind::Unavailable,
                format!("{}: waiting for {program}: {e}", spec.label),
            ))
        }
        Err(_) => {
            // The whole group: a shell script's children must not outlive it.
            if let Some(pid) = pid.and_then(|p| i32::try_from(p).ok()) {
                // SAFETY: kill(2) has no memory effects; the group is the one spawned above
                // (a stale id fails with ESRCH).
                unsafe {
                    libc::kill(-pid, libc::SIGKILL);
                }
            }
            let _ = child.kill().await;
            // Reaped: its id may be reused, so the guard must not kill that group again.
            group.0 = None;
            tracing::warn!(command = %spec.label, timeout = ?spec.timeout, "command killed at its timeout");
            (None, true)
        }
    };
    // The pipes close once the group is gone; a grandchild that kept them open is killed too.
    let mut last_line = None;
    for task in [err, out].into_iter().flatten() {
        if let Ok(Ok(Some(l))) = tokio::time::timeout(Duration::from_secs(1), task).await {
            last_line.get_or_insert(l);
        }
    }
    Ok(RunResult {
        code,
        timed_out,
        duration: started.elapsed(),
        last_line,
    })
}

/// Kills a command's process group when dropped while armed: a run dropped before its end
/// (agentd stopping, its runtime dropping the task) must not leave the command's children
/// behind; `kill_on_drop` reaches only the command itself.
struct GroupGuard(Option<i32>);

impl Drop for GroupGuard {
    fn drop(&mut self) {
        if let Some(pid) = self.0.take() {
            // SAFETY: kill(2) has no memory effects; the group is the one spawned in `run` (a
            // group that is gone fails with ESRCH).
            unsafe {
                libc::kill(-pid, libc::SIGKILL);
            }
        }
    }
}

/// Log a stream's lines; the last one is kept for the result.
fn log_lines(
    stream: impl AsyncRead + Unpin + Send + 'static,
    label: String,
    which: &'static str,
) -> tokio::task::JoinHandle<Option<String>> {
    tokio::spawn(async move {
        let mut lines = BufReader::new(stream).lines();
        let (mut n, mut last) = (0usize, None);
        while let Ok(Some(line)) = lines.next_line().await {
            n += 1;
            if n <= MAX_LOGGED_LINES {
                tracing::info!(command = %label, stream = which, "{line}");
            }
            let line: String = line.chars().take(200).collect();
            if !line.trim().is_empty() {
                last = Some(line);
            }
        }
        if n > MAX_LOGGED_LINES {
            tracing::info!(command = %label, stream = which, lines = n, "more output not logged");
        }
        last
    })
}

/// The `exec` DNS provider: a command publishes the answer. It cannot read what is served, so
/// the caller runs it whenever the decision differs from what it last published.
pub struct ExecDns {
    pub provider: String,
    pub argv: Vec<String>,
    pub timeout: Duration,
}

impl DnsBackend for ExecDns {
    fn read<'a>(&'a self, _rec: &'a RecordRef) -> BoxFut<'a, ActionResult<Option<RRset>>> {
        Box::pin(async {
            Err(Failure::new(
                FailureKind::Rejected,
                "an exec provider cannot read records",
            ))
        })
    }

    fn replace<'a>(
        &'a self,
        rec: &'a RecordRef,
        seen: Option<&'a RRset>,
        new: &'a RRset,
    ) -> BoxFut<'a, ActionResult<()>> {
        Box::pin(async move {
            let mut env = BTreeMap::new();
            env.insert("ISTHMUS_PROVIDER".into(), self.provider.clone());
            env.insert("ISTHMUS_RECORD".into(), rec.name.clone());
            env.insert("ISTHMUS_TYPE".into(), record_type(rec.rtype).into());
            env.insert("ISTHMUS_VALUE".into(), new.values.join(" "));
            env.insert("ISTHMUS_TTL".into(), new.ttl.to_string());
            if let Some(old) = seen {
                env.insert("ISTHMUS_OLD_VALUE".into(), old.values.join(" "));
            }
            let spec = CommandSpec {
                argv: self.argv.clone(),
                env,
                timeout: self.timeout,
                label: format!("dns provider {}", self.provider),
            };
            let r = run(&spec).await?;
            if r.success() {
                Ok(())
            } else if r.timed_out {
                Err(Failure::new(FailureKind::Unavailable, r.describe()))
            } else {
                Err(Failure::new(FailureKind::Rejected, r.describe()))
            }
        })
    }

    fn readable(&self) -> bool {
        false
    }

    fn describe(&self) -> String {
        format!(
            "exec {}",
            self.argv.first().map(String::as_str).unwrap_or("")
        )
    }
}

fn record_type(t: RecordType) -> &'static str {
    t.as_str()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sh(script: &str, timeout: Duration) -> CommandSpec {
        CommandSpec {
            argv: vec!["/bin/sh".into(), "-c".into(), script.into()],
            env: BTreeMap::from([("ISTHMUS_GROUP".to_string(), "oci-vcn".to_string())]),
            timeout,
            label: "test".into(),
        }
    }

    #[tokio::test]
    async fn a_command_gets_only_a_clean_environment() {
        std::env::set_var("AWS_SECRET_ACCESS_KEY", "must-not-leak");
        let dir = std::env::temp_dir().join(format!("isthmus-cmd-{}", std::process::id()));
        let out = dir.with_extension("env");
        let r = run(&sh(
            &format!("env > {}", out.display()),
            Duration::from_secs(5),
        ))
        .await
        .unwrap();
        assert!(r.success(), "{}", r.describe());
        let env = std::fs::read_to_string(&out).unwrap();
        let _ = std::fs::remove_file(&out);
        assert!(env.contains("ISTHMUS_GROUP=oci-vcn"), "{env}");
        assert!(env.contains(&format!("PATH={PATH}")), "{env}");
        assert!(!env.contains("must-not-leak"), "{env}");
    }

    #[tokio::test]
    async fn a_run_dropped_before_its_end_kills_its_children() {
        let pidfile =
            std::env::temp_dir().join(format!("isthmus-cmd-drop-{}.pid", std::process::id()));
        let script = format!(
            "sleep 600 & echo $! > {p}.tmp; mv {p}.tmp {p}; wait",
            p = pidfile.display()
        );
        let spec = sh(&script, Duration::from_secs(600));
        // Dropped mid-run, as the runtime drops its tasks when agentd stops.
        let dropped = tokio::time::timeout(Duration::from_secs(2), async {
            let run = run(&spec);
            tokio::pin!(run);
            loop {
                tokio::select! {
                    _ = &mut run => panic!("the command ended"),
                    _ = tokio::time::sleep(Duration::from_millis(20)) => {
                        if pidfile.exists() {
                            return;
                        }
                    }
                }
            }
        })
        .await;
        assert!(dropped.is_ok(), "the command never wrote its child's pid");
        let child: i32 = std::fs::read_to_string(&pidfile)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        let _ = std::fs::remove_file(&pidfile);
        let gone = gone_within_a_second(child);
        if !gone {
            // SAFETY: kill(2); the test's own child, found by its PID.
            unsafe {
                libc::kill(child, libc::SIGKILL);
            }
        }
        assert!(gone, "the backgrounded sleep outlived the dropped run");
    }

    /// Whether process `pid` is gone (or a zombie) within a second.
    fn gone_within_a_second(pid: i32) -> bool {
        for _ in 0..50 {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            if stat.is_empty() || stat.contains(") Z ") {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }

    #[tokio::test]
    async fn a_hanging_command_and_its_children_are_killed_at_the_timeout() {
        let pidfile = std::env::temp_dir().join(format!("isthmus-cmd-{}.pid", std::process::id()));
        let script = format!("sleep 600 & echo $! > {}; wait", pidfile.display());
        let started = Instant::now();
        let r = run(&sh(&script, Duration::from_millis(300))).await.unwrap();
        assert!(r.timed_out && !r.success());
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{:?}",
            started.elapsed()
        );
        assert!(
            r.describe().starts_with("killed at its timeout"),
            "{}",
            r.describe()
        );
        let child: i32 = std::fs::read_to_string(&pidfile)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        let _ = std::fs::remove_file(&pidfile);
        // The backgrounded sleep was in the group: gone (or a zombie reaped by init soon).
        let gone = gone_within_a_second(child);
        assert!(gone, "the hook's child {child} outlived the timeout");
    }

    #[tokio::test]
    async fn a_failing_command_says_its_exit_code_and_last_line() {
        let r = run(&sh(
            "echo working; echo 'no such zone' >&2; exit 3",
            Duration::from_secs(5),
        ))
        .await
        .unwrap();
        assert_eq!(r.code, Some(3));
        let d = r.describe();
        assert!(
            d.starts_with("exit 3 after") && d.ends_with(": no such zone"),
            "{d}"
        );
    }

    #[tokio::test]
    async fn a_missing_program_is_a_clear_error() {
        let spec = CommandSpec {
            argv: vec!["/nonexistent/hook".into()],
            env: BTreeMap::new(),
            timeout: Duration::from_secs(1),
            label: "hook x".into(),
        };
        let e = run(&spec).await.unwrap_err();
        assert!(e.message.contains("cannot start /nonexistent/hook"), "{e}");
    }

    #[tokio::test]
    async fn the_exec_provider_passes_the_decision_in_its_environment() {
        let out = std::env::temp_dir().join(format!("isthmus-exec-{}", std::process::id()));
        let p = ExecDns {
            provider: "custom".into(),
            argv: vec![
                "/bin/sh".into(),
                "-c".into(),
                format!(
                    "echo \"$ISTHMUS_RECORD $ISTHMUS_TYPE $ISTHMUS_VALUE $ISTHMUS_TTL $ISTHMUS_OLD_VALUE\" > {}",
                    out.display()
                ),
            ],
            timeout: Duration::from_secs(5),
        };
        let rec = RecordRef {
            name: "db.example.internal.".into(),
            rtype: RecordType::A,
        };
        let old = RRset::new(30, vec!["10.2.1.10".into()]);
        let new = RRset::new(30, vec!["10.2.2.10".into()]);
        p.replace(&rec, Some(&old), &new).await.unwrap();
        let got = std::fs::read_to_string(&out).unwrap();
        let _ = std::fs::remove_file(&out);
        assert_eq!(got.trim(), "db.example.internal. A 10.2.2.10 30 10.2.1.10");
        assert!(!p.readable());
    }
}
