//! `netctl drill` against a fake agentd: a Unix-socket HTTP server in the test answering canned
//! reports (prechecks → baseline → holding → done, a refusal, a conflict), so that the real
//! netctl binary's follow loop, output, exit codes, signal handling and report files are
//! tested without agentd. Nothing leaves the test's temporary directory: no network at all.

// Test code, helpers included: unwrap() is the assertion.
#![allow(clippy::unwrap_used)]

use std::collections::VecDeque;
use std::convert::Infallible;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use isthmus_api::*;
use serde_json::json;

const START: u64 = 1_795_705_458_123;

/// One canned answer: status and JSON body.
type Answer = (u16, serde_json::Value);

#[derive(Default)]
struct Script {
    post: Option<Answer>,
    abort: Option<Answer>,
    /// Answers to `GET /v1/drill` in turn; the last one repeats.
    gets: VecDeque<Answer>,
    /// Every request: method, path, body.
    seen: Vec<(String, String, String)>,
}

impl Script {
    fn answer(&mut self, method: &str, path: &str, body: String) -> Answer {
        self.seen.push((method.into(), path.into(), body));
        let not_found = (
            404,
            json!({"kind": "not_found", "message": "no drill has run on this gateway"}),
        );
        match (method, path) {
            ("POST", paths::DRILL) => self.post.clone().unwrap_or(not_found),
            ("POST", paths::DRILL_ABORT) => self.abort.clone().unwrap_or(not_found),
            ("GET", paths::DRILL) => match self.gets.len() {
                0 => not_found,
                1 => self.gets[0].clone(),
                _ => self.gets.pop_front().unwrap_or(not_found),
            },
            _ => not_found,
        }
    }

    fn gets_seen(&self) -> usize {
        self.seen.iter().filter(|(m, _, _)| m == "GET").count()
    }
}

/// The fake agentd: its socket in a temporary directory, served by a thread of its own until
/// dropped.
struct FakeAgentd {
    dir: tempfile::TempDir,
    socket: PathBuf,
    script: Arc<Mutex<Script>>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl FakeAgentd {
    fn start(script: Script) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("agentd.sock");
        let script = Arc::new(Mutex::new(script));
        let (stop, mut stopped) = tokio::sync::oneshot::channel::<()>();
        let listener = std::os::unix::net::UnixListener::bind(&socket).unwrap();
        listener.set_nonblocking(true).unwrap();
        let shared = script.clone();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let listener = tokio::net::UnixListener::from_std(listener).unwrap();
                loop {
                    let stream = tokio::select! {
                        _ = &mut stopped => return,
                        accepted = listener.accept() => match accepted {
                            Ok((stream, _)) => stream,
                            Err(_) => continue,
                        },
                    };
                    let script = shared.clone();
                    tokio::spawn(async move {
                        let service = hyper::service::service_fn(
                            move |req: Request<hyper::body::Incoming>| {
                                let script = script.clone();
                                async move {
                                    let method = req.method().to_string();
                                    let path = req.uri().path().to_owned();
                                    let body = req.into_body().collect().await.unwrap().to_bytes();
                                    let (status, value) = script.lock().unwrap().answer(
                                        &method,
                                        &path,
                                        String::from_utf8_lossy(&body).into_owned(),
                                    );
                                    Ok::<_, Infallible>(
                                        Response::builder()
                                            .status(status)
                                            .header(
                                                AGENTD_VERSION_HEADER,
                                                env!("CARGO_PKG_VERSION"),
                                            )
                                            .header("content-type", "application/json")
                                            .body(Full::new(Bytes::from(value.to_string())))
                                            .unwrap(),
                                    )
                                }
                            },
                        );
                        let _ = hyper::server::conn::http1::Builder::new()
                            .keep_alive(false)
                            .serve_connection(TokioIo::new(stream), service)
                            .await;
                    });
                }
            });
        });
        FakeAgentd {
            dir,
            socket,
            script,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    /// A command line for netctl against this agentd, run in its temporary directory.
    fn netctl(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_netctl"));
        cmd.arg("--socket")
            .arg(&self.socket)
            .args(args)
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        cmd
    }

    fn run(&self, args: &[&str]) -> Output {
        Running::spawn(self.netctl(args)).wait()
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }
}

impl Drop for FakeAgentd {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A netctl process, killed (by its PID) if the test ends before it does.
struct Running(Option<Child>);

impl Running {
    fn spawn(mut cmd: Command) -> Self {
        Running(Some(cmd.spawn().unwrap()))
    }

    fn pid(&self) -> nix::unistd::Pid {
        nix::unistd::Pid::from_raw(self.0.as_ref().unwrap().id() as i32)
    }

    /// Its output, within 20 s.
    fn wait(mut self) -> Output {
        let deadline = Instant::now() + Duration::from_secs(20);
        let child = self.0.as_mut().unwrap();
        while child.try_wait().unwrap().is_none() {
            assert!(Instant::now() < deadline, "netctl did not finish in 20 s");
            std::thread::sleep(Duration::from_millis(20));
        }
        self.0.take().unwrap().wait_with_output().unwrap()
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(mut child) = self.0.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn code(o: &Output) -> i32 {
    o.status.code().unwrap_or(-1)
}

fn step(at_ms: u64, state: Option<DrillState>, what: &str) -> DrillStep {
    DrillStep {
        unix_ms: START + at_ms,
        at_ms,
        state,
        what: what.into(),
    }
}

fn link(name: &str, rtt: f64, lost_switching: u64) -> DrillLink {
    let phase = |phase, sent, lost| DrillPhaseStats {
        phase,
        sent,
        lost,
        rtt_avg_ms: Some(rtt),
        // Not exact in binary: the report file must still hold what agentd sent, to the bit.
        rtt_p95_ms: Some(rtt * 1.2),
        rtt_max_ms: Some(rtt * 1.5),
    };
    DrillLink {
        name: name.into(),
        target: "10.99.0.2".into(),
        phases: vec![
            phase(DrillState::Baseline, 100, 0),
            phase(DrillState::Switching, 60, lost_switching),
            phase(DrillState::Holding, 250, 0),
            phase(DrillState::FailingBack, 45, 0),
            phase(DrillState::After, 100, 0),
        ],
        series: (0..12)
            .map(|s| DrillPoint {
                at_ms: s * 1000,
                sent: 50,
                lost: 0,
                rtt_avg_ms: Some(rtt),
            })
            .collect(),
    }
}

/// The full time line of a drill that passes.
fn timeline() -> Vec<DrillStep> {
    use DrillState::*;
    vec![
        step(0, Some(Prechecks), "checking"),
        step(300, Some(Baseline), "measuring every link for 2 s"),
        step(2_300, Some(Switching), "moved remote to internet"),
        step(3_500, None, "traffic answered on internet"),
        step(3_500, Some(Holding), "holding for 5 s"),
        step(
            8_500,
            Some(FailingBack),
            "moved remote back to interconnect",
        ),
        step(9_400, Some(After), "measuring every link for 2 s"),
        step(11_400, Some(Done), "drill over"),
    ]
}

/// The drill after `steps` steps of [`timeline`], in the state of the last of them.
fn report(steps: usize) -> DrillReport {
    let timeline: Vec<DrillStep> = timeline().into_iter().take(steps).collect();
    let state = timeline
        .iter()
        .rev()
        .find_map(|s| s.state)
        .unwrap_or(DrillState::Prechecks);
    let done = state == DrillState::Done;
    DrillReport {
        id: START,
        gateway: "aws-gw".into(),
        group: "remote".into(),
        target: DrillTarget::RouteGroup,
        from: "interconnect".into(),
        to: (steps > 2).then(|| "internet".into()),
        reason: "quarterly DR test".into(),
        state,
        started_unix_ms: START,
        finished_unix_ms: done.then_some(START + 11_400),
        hold_ms: 5_000,
        rto_target_ms: 2_000,
        rto_ms: (steps > 3).then_some(1_200),
        failback_ms: (steps > 6).then_some(900),
        lost_switching: 3,
        lost_failing_back: 0,
        interval_ms: 20,
        bucket_ms: 1_000,
        prechecks: vec![DrillCheck {
            name: "backup link internet up".into(),
            ok: true,
            detail: "up, rtt 12.1 ms".into(),
        }],
        timeline,
        links: if steps > 1 {
            vec![link("interconnect", 0.3, 0), link("internet", 12.0, 3)]
        } else {
            vec![]
        },
        problems: vec![],
    }
}

fn ok(r: &DrillReport) -> Answer {
    (200, serde_json::to_value(r).unwrap())
}

/// prechecks → baseline → holding → done, one poll each.
fn passing_drill() -> Script {
    Script {
        post: Some(ok(&report(1))),
        gets: [2, 5, 8].iter().map(|&n| ok(&report(n))).collect(),
        ..Script::default()
    }
}

#[test]
fn a_drill_is_followed_step_by_step_and_its_report_written() {
    let agentd = FakeAgentd::start(passing_drill());
    let out = agentd.run(&[
        "drill",
        "remote",
        "--hold",
        "5s",
        "--rto-target",
        "2s",
        "--reason",
        "quarterly DR test",
        "--report",
        "reports/q4",
    ]);
    let text = stdout(&out);
    assert_eq!(code(&out), 0, "{text}{}", stderr(&out));
    assert!(text.starts_with(
        "drill of route group remote on aws-gw: interconnect → (next healthy link), hold 5 s, RTO target 2 s\n"
    ), "{text}");
    // Every step once, in order, the pre-checks once before the baseline.
    let mut at = 0;
    for s in timeline() {
        let n = text.matches(&s.what).count();
        assert_eq!(
            n,
            if s.what.starts_with("measuring") {
                2
            } else {
                1
            },
            "{}: {text}",
            s.what
        );
        let pos = text[at..]
            .find(&s.what)
            .unwrap_or_else(|| panic!("{} out of order: {text}", s.what));
        at += pos;
    }
    assert!(
        text.contains("  +2.30s  switching     moved remote to internet\n"),
        "{text}"
    );
    assert_eq!(text.matches("pre-checks:").count(), 1, "{text}");
    assert!(text.find("✓ backup link internet up").unwrap() < text.find("baseline").unwrap());
    assert!(
        text.contains("drill of route group remote on aws-gw: passed"),
        "{text}"
    );
    assert!(text.contains("RTO        1.2 s (target 2 s) ✓"), "{text}");
    assert!(text.contains("internet      12.0/14.4 ms"), "{text}");

    // The request as agentd received it.
    let script = agentd.script.lock().unwrap();
    let (_, _, body) = script.seen.iter().find(|(m, _, _)| m == "POST").unwrap();
    let body: DrillRequest = serde_json::from_str(body).unwrap();
    assert_eq!(
        body,
        DrillRequest {
            group: "remote".into(),
            hold_ms: 5_000,
            rto_target_ms: 2_000,
            reason: Some("quarterly DR test".into()),
        }
    );
    drop(script);

    // Three files, named after the group and the UTC start, listed at the end.
    let dir = agentd.path("reports/q4");
    for ext in ["md", "json", "svg"] {
        let name = format!("drill-remote-20261126T150418Z.{ext}");
        assert!(dir.join(&name).is_file(), "{name}");
        assert!(text.contains(&format!("reports/q4/{name}")), "{text}");
    }
    let json: DrillReport = serde_json::from_str(
        &std::fs::read_to_string(dir.join("drill-remote-20261126T150418Z.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(json, report(8));
    let md = std::fs::read_to_string(dir.join("drill-remote-20261126T150418Z.md")).unwrap();
    assert!(md.contains("1.2 s (target: 2 s) ✓"), "{md}");
}

#[test]
fn a_refused_drill_prints_the_failing_precheck_and_its_reason() {
    let mut refused = report(1);
    refused.state = DrillState::Refused;
    refused.finished_unix_ms = Some(START + 200);
    refused.prechecks[0] = DrillCheck {
        name: "backup link internet up".into(),
        ok: false,
        detail: "down for 3m12s".into(),
    };
    refused.timeline.push(step(
        200,
        Some(DrillState::Refused),
        "backup link internet is down",
    ));
    refused.problems = vec!["refused: backup link internet is down".into()];
    let agentd = FakeAgentd::start(Script {
        post: Some(ok(&report(1))),
        gets: [ok(&refused)].into(),
        ..Script::default()
    });
    let out = agentd.run(&["drill", "remote"]);
    let text = stdout(&out);
    assert_eq!(code(&out), 1, "{text}{}", stderr(&out));
    assert!(
        text.contains("REFUSED by a pre-check: nothing was changed"),
        "{text}"
    );
    assert!(
        text.contains("✗ backup link internet up: down for 3m12s"),
        "{text}"
    );
    assert!(
        text.contains("refused: backup link internet is down"),
        "{text}"
    );
    // The refusal is on record too, in the current directory by default.
    assert!(agentd.path("drill-remote-20261126T150418Z.md").is_file());
}

#[test]
fn an_interrupt_stops_following_but_not_the_drill() {
    for sig in [nix::sys::signal::SIGINT, nix::sys::signal::SIGTERM] {
        let agentd = FakeAgentd::start(Script {
            post: Some(ok(&report(1))),
            gets: [ok(&report(5))].into(),
            ..Script::default()
        });
        let child = Running::spawn(agentd.netctl(&["drill", "remote", "--report", "out"]));
        // Interrupt once it follows.
        let deadline = Instant::now() + Duration::from_secs(10);
        while agentd.script.lock().unwrap().gets_seen() < 2 {
            assert!(Instant::now() < deadline, "netctl never polled");
            std::thread::sleep(Duration::from_millis(20));
        }
        nix::sys::signal::kill(child.pid(), sig).unwrap();
        let out = child.wait();
        let err = stderr(&out);
        assert_eq!(code(&out), 130, "{sig}: {}{err}", stdout(&out));
        assert_eq!(err.lines().count(), 1, "{err}");
        let socket = agentd.socket.display();
        assert!(
            err.contains("the drill of remote goes on in agentd"),
            "{err}"
        );
        assert!(
            err.contains(&format!("`netctl --socket {socket} drill --abort`")),
            "{err}"
        );
        assert!(
            err.contains(&format!(
                "`netctl --socket {socket} drill --last --report out`"
            )),
            "{err}"
        );
        // Nothing was aborted, nothing written.
        let script = agentd.script.lock().unwrap();
        assert!(script.seen.iter().all(|(_, p, _)| p != paths::DRILL_ABORT));
        assert!(!agentd.path("out").exists());
    }
}

#[test]
fn a_second_drill_is_refused_with_the_commands_for_the_running_one() {
    let agentd = FakeAgentd::start(Script {
        post: Some((
            409,
            json!({"kind": "conflict", "message": "a drill of group remote is running"}),
        )),
        ..Script::default()
    });
    let out = agentd.run(&["drill", "remote"]);
    let err = stderr(&out);
    assert_eq!(code(&out), 1, "{err}");
    assert!(
        err.contains("netctl: a drill of group remote is running"),
        "{err}"
    );
    assert!(
        err.contains("drill --last") && err.contains("drill --abort"),
        "{err}"
    );
}

#[test]
fn json_prints_only_the_final_report() {
    let agentd = FakeAgentd::start(passing_drill());
    let out = agentd.run(&["--json", "drill", "remote", "--report", "r"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let printed: DrillReport =
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", stdout(&out)));
    assert_eq!(printed, report(8));
    assert!(stderr(&out).contains("r/drill-remote-20261126T150418Z.svg"));
}

#[test]
fn abort_and_last() {
    let mut aborting = report(5);
    aborting.state = DrillState::FailingBack;
    aborting.timeline.push(step(
        4_000,
        Some(DrillState::FailingBack),
        "aborted by operator",
    ));
    let mut failed_rto = report(8);
    failed_rto.rto_ms = Some(2_500);
    failed_rto.problems = vec!["RTO 2.5 s above the target 2 s".into()];
    let agentd = FakeAgentd::start(Script {
        abort: Some(ok(&aborting)),
        gets: [ok(&failed_rto)].into(),
        ..Script::default()
    });
    let out = agentd.run(&["drill", "--abort"]);
    let text = stdout(&out);
    assert_eq!(code(&out), 0, "{text}{}", stderr(&out));
    assert!(text.contains("state: failing_back since +4.00s"), "{text}");
    assert!(text.contains("abort requested"), "{text}");

    let out = agentd.run(&["drill", "--last", "--report", "r"]);
    let text = stdout(&out);
    assert_eq!(code(&out), 1, "a missed RTO fails: {text}");
    assert!(text.contains("2.5 s (target 2 s) ✗"), "{text}");
    assert!(text.contains("! RTO 2.5 s above the target 2 s"), "{text}");
    let md = std::fs::read_to_string(agentd.path("r/drill-remote-20261126T150418Z.md")).unwrap();
    assert!(md.contains("- [ ] Find the cause of and fix: RTO 2.5 s above the target 2 s"));
    // Asking again finds the same files: no error, nothing overwritten.
    let again = agentd.run(&["drill", "--last", "--report", "r"]);
    assert_eq!(code(&again), 1, "{}", stderr(&again));
    assert!(stderr(&again).is_empty(), "{}", stderr(&again));
    // Another report under the same name is left alone.
    std::fs::write(agentd.path("r/drill-remote-20261126T150418Z.svg"), "mine").unwrap();
    let clash = agentd.run(&["drill", "--last", "--report", "r"]);
    assert!(
        stderr(&clash).contains("not overwriting"),
        "{}",
        stderr(&clash)
    );
    assert_eq!(
        std::fs::read_to_string(agentd.path("r/drill-remote-20261126T150418Z.svg")).unwrap(),
        "mine"
    );

    let none = FakeAgentd::start(Script::default());
    let out = none.run(&["drill", "--last"]);
    assert_eq!(code(&out), 1);
    assert!(
        stderr(&out).contains("no drill has run"),
        "{}",
        stderr(&out)
    );
    let out = none.run(&["drill", "--abort"]);
    assert_eq!(code(&out), 1);
}

#[test]
fn bad_arguments_are_usage_errors_with_a_hint() {
    let nowhere = Path::new("/nonexistent/agentd.sock");
    let run = |args: &[&str]| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_netctl"));
        cmd.arg("--socket")
            .arg(nowhere)
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        Running::spawn(cmd).wait()
    };
    let out = run(&["drill", "remote", "--hold", "5"]);
    assert_eq!(code(&out), 2);
    assert!(
        stderr(&out).contains(r#"write "5s" for seconds"#),
        "{}",
        stderr(&out)
    );
    let out = run(&["drill", "remote", "--rto-target", "0s"]);
    assert_eq!(code(&out), 2);
    assert!(stderr(&out).contains("longer than 0"), "{}", stderr(&out));
    for args in [
        &["drill"][..],
        &["drill", "remote", "--abort"],
        &["drill", "--last", "--abort"],
        &["drill", "--abort", "--hold", "5s"],
        &["drill", "--abort", "--report", "x"],
    ] {
        let out = run(args);
        assert_eq!(code(&out), 2, "{args:?}: {}", stderr(&out));
    }
    // A good command line reaches the socket (here: nothing there).
    let out = run(&["drill", "remote", "--hold", "500ms"]);
    assert_eq!(code(&out), 3, "{}", stderr(&out));
    assert!(
        stderr(&out).contains("agentd is not running"),
        "{}",
        stderr(&out)
    );
}
