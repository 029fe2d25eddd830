//! The shell of `netctl drill`: POST the request, poll `GET /v1/drill` and feed each answer to
//! the [`Follower`], stop following (never the drill) on SIGINT or SIGTERM, and write the
//! report files once the drill is over. agentd owns the drill: netctl going away changes
//! nothing there, which is why an interrupt only says how to abort or fetch it later.

use std::path::{Path, PathBuf};
use std::time::Duration;

use isthmus_api::{paths, DrillReport, DrillRequest, ErrorKind};
use tokio::signal::unix::{signal, Signal, SignalKind};

use super::follow::{Follower, Progress};
use super::{files, passed, text};
use crate::client::{Client, ClientError};
use crate::{fail, print_json, warn_on_version_skew, Exit};

/// How often a running drill is polled: its steps appear within a fifth of a second, and five
/// small requests a second are nothing for agentd's control socket.
const POLL: Duration = Duration::from_millis(200);

/// `netctl drill GROUP …`.
#[derive(Debug, Clone)]
pub struct StartArgs {
    pub group: String,
    pub hold: Duration,
    pub rto_target: Duration,
    pub reason: Option<String>,
    pub report_dir: PathBuf,
    /// Global options to repeat in the commands netctl suggests (`--socket PATH`).
    pub again: String,
}

/// Start a drill and follow it to its end; write the report files.
pub async fn start(client: &Client, args: &StartArgs, json: bool) -> Exit {
    // Before the POST, so that an interrupt right after it is not lost.
    let mut signals = match Signals::new() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("netctl drill: cannot watch for Ctrl-C: {e}");
            return Exit::Failed;
        }
    };
    let body = DrillRequest {
        group: args.group.clone(),
        hold_ms: millis(args.hold),
        rto_target_ms: millis(args.rto_target),
        reason: args.reason.clone(),
    };
    let posted = tokio::select! {
        posted = client.post_json::<_, DrillReport>(paths::DRILL, &body) => posted,
        signal = signals.next() => {
            eprintln!(
                "netctl drill: {signal} before agentd answered: the drill may have started; \
                 `netctl{a} drill --last` shows it, `netctl{a} drill --abort` stops it",
                a = args.again
            );
            return Exit::Interrupted;
        }
    };
    let started = match posted {
        Ok(reply) => {
            warn_on_version_skew(&reply);
            reply.value
        }
        Err(e) => {
            let conflict = matches!(&e, ClientError::Api(b) if b.kind == ErrorKind::Conflict);
            let exit = fail(e, json);
            if conflict {
                eprintln!(
                    "  follow it with `netctl{a} drill --last`, or stop it with `netctl{a} drill --abort`",
                    a = args.again
                );
            }
            return exit;
        }
    };
    if !json {
        print!("{}", text::header(&started));
    }
    let mut follower = Follower::new(&started);
    let mut report = started;
    let mut failing_since: Option<tokio::time::Instant> = None;
    loop {
        match follower.handle_report(&report) {
            Progress::Running(out) => {
                if !json {
                    print!("{out}");
                }
            }
            Progress::Over(out) => {
                if !json {
                    print!("{out}");
                }
                break;
            }
            Progress::Replaced { ours, now } => {
                eprintln!(
                    "netctl drill: drill {ours} is over and drill {now} has started since; \
                     agentd keeps only the last report, so ours is gone"
                );
                return Exit::Failed;
            }
        }
        let polled = tokio::select! {
            signal = signals.next() => {
                eprintln!(
                    "netctl drill: {signal}: stopped following; the drill of {} goes on in agentd: \
                     stop it with `netctl{a} drill --abort`, or fetch its report later with \
                     `netctl{a} drill --last --report {}`",
                    args.group,
                    shell_word(&args.report_dir),
                    a = args.again,
                );
                return Exit::Interrupted;
            }
            polled = async {
                tokio::time::sleep(POLL).await;
                client.get::<DrillReport>(paths::DRILL).await
            } => polled,
        };
        match polled {
            Ok(reply) => {
                failing_since = None;
                report = reply.value;
            }
            // agentd restarting, briefly busy or slow: keep trying for as long as one request
            // may take, then give up (the drill, if agentd still runs it, goes on).
            Err(e) => {
                let first = failing_since.is_none();
                let since = *failing_since.get_or_insert_with(tokio::time::Instant::now);
                if since.elapsed() > client.timeout() {
                    let exit = fail(e, json);
                    eprintln!(
                        "  the drill may go on in agentd: `netctl{a} drill --last` shows it",
                        a = args.again
                    );
                    return exit;
                }
                if first {
                    let e = e.to_string();
                    eprintln!(
                        "netctl drill: {}; retrying",
                        e.lines().next().unwrap_or_default()
                    );
                }
            }
        }
    }
    finish(&report, &args.report_dir, json)
}

/// `netctl drill --abort`: stop the running drill; agentd fails back.
pub async fn abort(client: &Client, json: bool, again: &str) -> Exit {
    match client.post::<DrillReport>(paths::DRILL_ABORT).await {
        Ok(reply) => {
            warn_on_version_skew(&reply);
            let r = reply.value;
            if json {
                print_json(&r);
            } else if r.state.is_final() {
                print!("{}", text::summary(&r));
            } else {
                print!("{}", text::live(&r));
                println!(
                    "abort requested: agentd fails back; `netctl{again} drill --last` shows the report when it is over"
                );
            }
            Exit::Ok
        }
        Err(e) => fail(e, json),
    }
}

/// `netctl drill --last`: the running drill's state, or the last one's summary and files.
pub async fn last(client: &Client, json: bool, report_dir: &Path) -> Exit {
    let r = match client.get::<DrillReport>(paths::DRILL).await {
        Ok(reply) => {
            warn_on_version_skew(&reply);
            reply.value
        }
        Err(e) => return fail(e, json),
    };
    if !r.state.is_final() {
        if json {
            print_json(&r);
        } else {
            print!("{}", text::live(&r));
        }
        return Exit::Ok;
    }
    finish(&r, report_dir, json)
}

/// A drill is over: summary (or JSON), the files, and the exit code of its outcome.
fn finish(r: &DrillReport, dir: &Path, json: bool) -> Exit {
    if json {
        print_json(r);
    } else {
        print!("{}", text::summary(r));
    }
    match files::write(dir, r) {
        Ok(paths) => {
            // With --json, stdout is the report alone.
            let say = |line: String| {
                if json {
                    eprintln!("{line}");
                } else {
                    println!("{line}");
                }
            };
            say("report files:".into());
            for p in paths {
                say(format!("  {}", p.display()));
            }
        }
        Err(e) => {
            eprintln!("netctl drill: cannot write the report files: {e}");
            return Exit::Failed;
        }
    }
    if passed(r) {
        Exit::Ok
    } else {
        Exit::Failed
    }
}

/// The global options to repeat in a suggested command: `--socket PATH` unless the default.
pub fn again(socket: &Path) -> String {
    if socket == Path::new(isthmus_api::DEFAULT_SOCKET) {
        String::new()
    } else {
        format!(" --socket {}", shell_word(socket))
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// A path as it can be pasted into a shell.
fn shell_word(p: &Path) -> String {
    let s = p.display().to_string();
    if !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '/' | '.' | '_' | '-' | '+' | ':'))
    {
        s
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

/// SIGINT and SIGTERM, once registered, replace their default (die) for this process.
struct Signals {
    interrupt: Signal,
    terminate: Signal,
}

impl Signals {
    fn new() -> std::io::Result<Self> {
        Ok(Signals {
            interrupt: signal(SignalKind::interrupt())?,
            terminate: signal(SignalKind::terminate())?,
        })
    }

    /// The next signal's name.
    async fn next(&mut self) -> &'static str {
        tokio::select! {
            _ = self.interrupt.recv() => "interrupted",
            _ = self.terminate.recv() => "terminated",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggested_paths_can_be_pasted_into_a_shell() {
        assert_eq!(shell_word(Path::new("reports/q4")), "reports/q4");
        assert_eq!(shell_word(Path::new(".")), ".");
        assert_eq!(shell_word(Path::new("my reports")), "'my reports'");
        assert_eq!(shell_word(Path::new("it's")), r"'it'\''s'");
    }
}
