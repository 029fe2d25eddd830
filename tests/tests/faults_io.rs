//! Faults of the disk, of the action endpoints and of the wall clock (issue 13, "Faults"): the
//! state directory full, a DNS server that accepts connections and never answers, the wall
//! clock stepped back an hour (and forward again) for agentd alone. For each, agentd must
//! recover without help, say the fault once in its log (however often it retries), count it
//! once in `isthmus_faults_total{kind}`, say when it clears, and keep probes, failover and its
//! owned routes as they should be meanwhile.
//!
//! - **State directory full**: the AWS gateway's state directory is a 64 KiB tmpfs filled up,
//!   mounted in a private mount namespace of that agentd alone (as `stall.rs` does); a failover
//!   happens while it is full, then the filler is removed through `/proc/<pid>/root`. The event
//!   log and the state file must be written again within seconds, the event log holding every
//!   event of the episode, and a warm restart from those files must take the newest state.
//! - **Silent DNS server**: BIND replaced by a socket that reads every UDP query and holds every
//!   TCP connection without a word, during a DNS failover; then BIND back.
//! - **Wall clock stepped**: the AWS gateway's agentd runs under libfaketime
//!   (`LD_PRELOAD`, an offset read from a file on every call, the monotonic clock left alone);
//!   the host's clock is never touched.
//!
//! Timing-sensitive: one test at a time (`SERIAL`). Recovery times are bounded generously and
//! printed.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use isthmus_tests::bind::require_named;
use isthmus_tests::dns_bed::{
    events_of, record_action, serve_group, wait_event, wait_in_sync, DnsBed, DR, NAMED, PRIMARY,
};
use isthmus_tests::fault_checks;
use isthmus_tests::histogram::buckets;
use isthmus_tests::topology::{now_ms, Side, TwoClouds};
use isthmus_tests::{http_get, require_root, Agentd, SilentDns};

static SERIAL: Mutex<()> = Mutex::new(());

const METRICS: &str = "127.0.0.1:9477";
const LONG: Duration = Duration::from_secs(30);
/// A loop late by half a probe interval (100 ms by default) at p99 would make probes look
/// lost; a healthy one sits under a few milliseconds, and this bound only leaves room for the
/// shared cores of the test machine.
const LAG_BOUND: Duration = Duration::from_millis(50);

fn serial() -> std::sync::MutexGuard<'static, ()> {
    require_root();
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// The side's `/metrics` page.
fn metrics(side: &Side) -> String {
    match http_get(
        &side.ns,
        METRICS.parse().unwrap(),
        "/metrics",
        Duration::from_secs(10),
    ) {
        Ok((200, body)) => body,
        other => panic!("{}: GET /metrics: {other:?}", side.name),
    }
}

fn fault_metric(text: &str, family: &str, kind: &str) -> f64 {
    fault_checks::fault_series(text, family, kind)
}

/// Lines of agentd's log that contain `needle`.
fn log_lines(agentd: &Agentd, needle: &str) -> Vec<String> {
    fault_checks::lines_with(&agentd.log_text(), &[needle])
}

/// Wait until agentd's log has at least `n` lines containing `needle`; how long it took.
fn wait_log(agentd: &Agentd, needle: &str, n: usize, within: Duration) -> Duration {
    let start = Instant::now();
    loop {
        if log_lines(agentd, needle).len() >= n {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < within,
            "no {n} log lines with {needle:?} within {within:?}\n--- log ---\n{}",
            agentd.log_text()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// How late the event loop served its timers since the `before` scrape: the p99 bucket bound
/// of `isthmus_event_loop_lag_seconds`, in seconds, and the samples.
fn lag_since(side: &Side, before: &str) -> (f64, f64) {
    let name = "isthmus_event_loop_lag_seconds";
    let now = buckets(&metrics(side), name, &[]).expect("loop lag histogram");
    let delta = now.since(buckets(before, name, &[]).as_ref());
    let p99 = delta.quantile(0.99).map_or(f64::INFINITY, |q| q.bucket);
    (p99, delta.count())
}

/// The loop served its timers in time (p99 within [`LAG_BOUND`]) since `before`.
fn assert_loop_kept_up(side: &Side, before: &str) -> f64 {
    let (p99, samples) = lag_since(side, before);
    assert!(samples > 0.0, "{}: no loop lag samples", side.name);
    assert!(
        p99 <= LAG_BOUND.as_secs_f64(),
        "{}: loop lag p99 ≤ {p99} s over {samples} samples",
        side.name
    );
    p99
}

/// Owned routes to the remote VPC: one through `via`, beside the fail-closed `unreachable`
/// route of the same destination, none duplicated or stale.
fn assert_one_remote_route(side: &Side, via: &str) {
    let routes = side.remote_routes();
    let lines: Vec<&str> = routes.lines().filter(|l| !l.trim().is_empty()).collect();
    let (closed, open): (Vec<&str>, Vec<&str>) =
        lines.iter().partition(|l| l.starts_with("unreachable"));
    assert!(
        open.len() == 1 && closed.len() <= 1,
        "{}: remote routes: {routes}",
        side.name
    );
    assert!(
        open[0].contains(&format!("dev {via} ")),
        "{}: remote route not via {via}: {routes}",
        side.name
    );
}

fn state_dir(side: &Side) -> PathBuf {
    side.fx.dir().join("state")
}

/// `dir` as the process `pid` sees it (its own mount namespace).
fn seen_by(pid: nix::unistd::Pid, dir: &Path) -> PathBuf {
    PathBuf::from(format!("/proc/{pid}/root")).join(dir.strip_prefix("/").unwrap())
}

#[test]
fn a_full_state_directory_is_one_fault_and_both_files_are_written_again_once_space_is_back() {
    let _serial = serial();
    let clouds = TwoClouds::new("fd");
    let state = state_dir(&clouds.aws);
    std::fs::create_dir_all(&state).unwrap();
    let mut aws = Agentd::start_in_private_mounts(
        &clouds.aws.fx,
        &clouds.aws.ns,
        "mount -t tmpfs -o size=64k,mode=0755 isthmus-test-full \"$STATE\"\n\
         if head -c 4194304 /dev/zero > \"$STATE/filler\" 2>/dev/null; then\n\
         echo 'the tmpfs did not fill up' >&2; exit 1; fi",
    );
    let _oci = Agentd::start(&clouds.oci.fx, &clouds.oci.ns);
    let side = &clouds.aws;
    side.wait_active("remote", "interconnect", LONG);
    let inside = seen_by(aws.pid(), &state);
    let lag_before = metrics(side);

    // A failover while the disk is full: events and a new active link to write.
    let cut_at = Instant::now();
    clouds.cut_interconnect(true);
    side.wait_active("remote", "internet", LONG);
    let failover = cut_at.elapsed();
    clouds.oci.wait_active("remote", "internet", LONG);
    // Retries go on every second meanwhile; none of them may say it again.
    std::thread::sleep(Duration::from_secs(4));
    let raised = log_lines(&aws, "fault: state_write");
    let m = metrics(side);
    let (total, active) = (
        fault_metric(&m, "isthmus_faults_total", "state_write"),
        fault_metric(&m, "isthmus_faults_active", "state_write"),
    );
    println!("while full: {} warning(s): {raised:#?}", raised.len());
    assert_eq!(
        raised.len(),
        2,
        "one warning per file (events.jsonl, active.json), not per retry: {raised:#?}"
    );
    for file in ["events.jsonl", "active.json"] {
        assert_eq!(
            raised.iter().filter(|l| l.contains(file)).count(),
            1,
            "{file}: {raised:#?}"
        );
    }
    assert_eq!(
        (total, active),
        (2.0, 2.0),
        "faults total/active while full"
    );
    let p99 = assert_loop_kept_up(side, &lag_before);
    assert_one_remote_route(side, &clouds.interface(1));
    let in_memory: Vec<u64> = side
        .events()
        .iter()
        .map(|e| e["id"].as_u64().unwrap())
        .collect();

    // Space back.
    std::fs::remove_file(inside.join("filler")).expect("removing the filler");
    let freed = Instant::now();
    wait_log(
        &aws,
        "fault cleared: state_write",
        2,
        Duration::from_secs(10),
    );
    let recovered = freed.elapsed();
    let m = metrics(side);
    assert_eq!(fault_metric(&m, "isthmus_faults_total", "state_write"), 2.0);
    assert_eq!(
        fault_metric(&m, "isthmus_faults_active", "state_write"),
        0.0
    );
    assert_eq!(log_lines(&aws, "fault: state_write").len(), 2);

    // The event log holds every event, the state file the newest active link.
    let on_disk: Vec<u64> = std::fs::read_to_string(inside.join("events.jsonl"))
        .expect("events.jsonl")
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["id"]
                .as_u64()
                .unwrap()
        })
        .collect();
    assert!(
        in_memory.iter().all(|id| on_disk.contains(id)),
        "events missing on disk: in memory {in_memory:?}, on disk {on_disk:?}"
    );
    let mut sorted = on_disk.clone();
    sorted.sort_unstable();
    sorted.dedup();
    assert_eq!(sorted, on_disk, "event ids on disk in order, once each");
    let kept = std::fs::read_to_string(inside.join("active.json")).expect("active.json");
    let kept_json: serde_json::Value = serde_json::from_str(&kept).unwrap();
    assert_eq!(kept_json["route_groups"]["remote"], "internet", "{kept}");
    println!(
        "failover {failover:.1?} after the cut; space freed: both files written again within \
         {recovered:.1?}; {} events on disk; loop lag p99 ≤ {} ms",
        on_disk.len(),
        p99 * 1e3
    );

    // A warm restart from what was written (the tmpfs goes with the process: the files are
    // copied to the same directory outside it first).
    let events_text = std::fs::read_to_string(inside.join("events.jsonl")).unwrap();
    aws.signal(nix::sys::signal::Signal::SIGKILL);
    aws.wait_exit(Duration::from_secs(5));
    std::fs::write(state.join("events.jsonl"), events_text).unwrap();
    std::fs::write(state.join("active.json"), kept).unwrap();
    let restarted = Agentd::start(&side.fx, &side.ns);
    assert!(
        log_lines(&restarted, "not restoring").is_empty(),
        "{}",
        restarted.log_text()
    );
    side.wait_active("remote", "internet", LONG);
    let events = side.events();
    let restored = events
        .iter()
        .find(|e| e["kind"] == "active_link_changed" && e["id"].as_u64() > on_disk.last().copied())
        .expect("an active_link_changed after the restart");
    assert_eq!(restored["to"], "internet", "{restored:#}");
    assert!(
        restored["reason"]
            .as_str()
            .unwrap_or_default()
            .contains("before the restart"),
        "a warm restart: {restored:#}"
    );
    assert!(
        events
            .iter()
            .any(|e| e["id"].as_u64() == in_memory.last().copied()),
        "the history survived the restart"
    );
    assert_one_remote_route(side, &clouds.interface(1));
}

#[test]
fn a_dns_server_that_never_answers_is_one_fault_and_the_record_follows_once_it_is_back() {
    if !require_named() {
        return;
    }
    let _serial = serial();
    let mut bed = DnsBed::new("dq", None);
    serve_group(&bed.clouds.aws, &bed.key.text, Duration::from_secs(3));
    let (aws_agentd, _oci) = bed.clouds.start_agents();
    let (aws, oci) = (&bed.clouds.aws, &bed.clouds.oci);
    bed.wait_served(PRIMARY, LONG);
    wait_in_sync(aws, PRIMARY, LONG);
    aws.wait_active("remote", "interconnect", LONG);
    let lag_before = metrics(aws);
    let before = fault_metric(&lag_before, "isthmus_faults_total", "action_timeout");

    bed.bind.stop();
    let silent = SilentDns::start(&aws.ns, NAMED.parse().unwrap());
    let stopped_at = now_ms();
    bed.primary.stop();
    // Several attempts, each ending at the 1 s timeout (retry_max 2 s).
    std::thread::sleep(Duration::from_secs(8));
    // A failure like the one before is counted, not logged again: events say less than the
    // attempts made.
    let failed = events_of(aws, "action_failed", stopped_at);
    assert!(
        !failed.is_empty()
            && failed.iter().all(|e| e["reason"]
                .as_str()
                .unwrap_or_default()
                .contains("(unavailable)")),
        "{failed:#?}"
    );
    let action = record_action(aws);
    let attempts = action["failures"].as_u64().unwrap_or(0);
    assert!(attempts >= 3, "retried: {action:#}");
    assert!(silent.queries() >= 2, "the silent server was asked");
    let raised = log_lines(&aws_agentd, "fault: action_timeout");
    assert_eq!(raised.len(), 1, "said once, not per retry: {raised:#?}");
    let m = metrics(aws);
    assert_eq!(
        fault_metric(&m, "isthmus_faults_total", "action_timeout") - before,
        1.0
    );
    assert_eq!(
        fault_metric(&m, "isthmus_faults_active", "action_timeout"),
        1.0
    );
    assert_eq!(action["state"], "failing", "{action:#}");
    // Probes, failover and routes carry on.
    for side in [aws, oci] {
        side.wait_links_up(&["interconnect", "internet"], Duration::from_secs(1));
        assert_eq!(side.active("remote").as_deref(), Some("interconnect"));
    }
    let p99 = assert_loop_kept_up(aws, &lag_before);
    assert_one_remote_route(aws, &bed.clouds.interface(0));

    // The real server back.
    let swallowed = silent.queries();
    drop(silent);
    let back = Instant::now();
    let back_at = now_ms();
    bed.bind.start_again();
    wait_event(aws, "action_done", back_at, LONG, |e| e["to"] == DR);
    let in_sync = back.elapsed();
    wait_in_sync(aws, DR, LONG);
    wait_log(
        &aws_agentd,
        "fault cleared: action_timeout",
        1,
        Duration::from_secs(5),
    );
    let m = metrics(aws);
    assert_eq!(
        fault_metric(&m, "isthmus_faults_active", "action_timeout"),
        0.0
    );
    assert_eq!(log_lines(&aws_agentd, "fault: action_timeout").len(), 1);
    println!(
        "silent DNS server: {attempts} attempts failed, {swallowed} queries swallowed, loop lag \
         p99 ≤ {} ms; DR published {in_sync:.1?} after BIND was back",
        p99 * 1e3
    );
}

/// libfaketime's library, if installed (`tests/install-deps`: package faketime).
fn libfaketime() -> Option<PathBuf> {
    let dirs = std::fs::read_dir("/usr/lib").ok()?;
    dirs.filter_map(Result::ok)
        .map(|d| d.path().join("faketime/libfaketimeMT.so.1"))
        .find(|p| p.exists())
}

/// The environment that runs agentd on a wall clock offset by what `rc` holds (`+0`,
/// `-3600`: seconds), read again on every call; the monotonic clock is left alone.
fn faked_clock(lib: &Path, rc: &Path) -> Vec<(&'static str, String)> {
    vec![
        ("LD_PRELOAD", lib.display().to_string()),
        ("FAKETIME_TIMESTAMP_FILE", rc.display().to_string()),
        ("FAKETIME_NO_CACHE", "1".into()),
        ("FAKETIME_DONT_FAKE_MONOTONIC", "1".into()),
        ("DONT_FAKE_MONOTONIC", "1".into()),
    ]
}

/// The wall clock of a process started with [`faked_clock`], as seen from outside: a `date`
/// run under the same library and file.
fn faked_now_ms(env: &[(&str, String)]) -> u64 {
    let out = std::process::Command::new("date")
        .arg("+%s%3N")
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .output()
        .expect("date");
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .expect("date +%s%3N")
}

#[test]
fn the_wall_clock_stepped_back_an_hour_and_forward_again_is_one_fault_each_and_nothing_else_moves()
{
    let _serial = serial();
    let Some(lib) = libfaketime() else {
        eprintln!("skipped: libfaketime is not installed (tests/install-deps test)");
        return;
    };
    let clouds = TwoClouds::new("ck");
    let side = &clouds.aws;
    let rc = side.fx.dir().join("faketime.rc");
    std::fs::write(&rc, "+0\n").unwrap();
    let env = faked_clock(&lib, &rc);
    let mut aws = Agentd::start_with_env(&side.fx, &side.ns, &env);
    let _oci = Agentd::start(&clouds.oci.fx, &clouds.oci.ns);
    for s in [side, &clouds.oci] {
        s.wait_links_up(&["interconnect", "internet"], LONG);
        s.wait_active("remote", "interconnect", LONG);
    }
    assert!(
        faked_now_ms(&env).abs_diff(now_ms()) < 60_000,
        "the faked clock starts on the host's"
    );

    // An hour back, for agentd alone.
    std::fs::write(&rc, "-3600\n").unwrap();
    let stepped = Instant::now();
    assert!(
        now_ms() - faked_now_ms(&env) > 3_500_000,
        "test bed broken: the offset did not take"
    );
    let seen = wait_log(&aws, "fault: clock_step", 1, Duration::from_secs(15));
    let raised = log_lines(&aws, "fault: clock_step");
    assert!(raised[0].contains("stepped back 3"), "{raised:#?}");
    let m = metrics(side);
    assert_eq!(fault_metric(&m, "isthmus_faults_total", "clock_step"), 1.0);
    println!("step back noticed {seen:.1?} after it");

    // Failover and failback on the stepped clock, with probes and routes as always.
    let lag_before = metrics(side);
    let first_id = side.events().last().unwrap()["id"].as_u64().unwrap();
    let cut = Instant::now();
    clouds.cut_interconnect(true);
    side.wait_active("remote", "internet", LONG);
    let failover = cut.elapsed();
    assert_one_remote_route(side, &clouds.interface(1));
    clouds.restore_interconnect();
    let restore = Instant::now();
    side.wait_active("remote", "interconnect", LONG);
    clouds.oci.wait_active("remote", "interconnect", LONG);
    let failback = restore.elapsed();
    assert_one_remote_route(side, &clouds.interface(0));
    let link = side.link("interconnect");
    assert_eq!(
        link["state"], "up",
        "tunnel state on the stepped clock: {link:#}"
    );
    let ids: Vec<u64> = side
        .events()
        .iter()
        .map(|e| e["id"].as_u64().unwrap())
        .filter(|id| *id > first_id)
        .collect();
    assert!(
        ids.len() >= 2 && ids.windows(2).all(|w| w[0] < w[1]),
        "{ids:?}"
    );

    // Its events are stamped on its (stepped) clock, in order of their ids.
    let last = side.events().last().cloned().unwrap();
    let behind = now_ms() - last["unix_ms"].as_u64().unwrap();
    assert!(
        behind > 3_500_000,
        "event {behind} ms behind the host's clock: {last:#}"
    );
    wait_log(
        &aws,
        "fault cleared: clock_step",
        1,
        Duration::from_secs(15),
    );

    // Forward again: another fault, said once.
    std::fs::write(&rc, "+0\n").unwrap();
    wait_log(&aws, "fault: clock_step", 2, Duration::from_secs(15));
    wait_log(
        &aws,
        "fault cleared: clock_step",
        2,
        Duration::from_secs(15),
    );
    let raised = log_lines(&aws, "fault: clock_step");
    assert_eq!(raised.len(), 2, "{raised:#?}");
    assert!(raised[1].contains("stepped forward 3"), "{raised:#?}");
    let m = metrics(side);
    assert_eq!(fault_metric(&m, "isthmus_faults_total", "clock_step"), 2.0);
    assert_eq!(fault_metric(&m, "isthmus_faults_active", "clock_step"), 0.0);
    let link = side.link("interconnect");
    assert_eq!(
        link["state"], "up",
        "tunnel state after the step forward: {link:#}"
    );
    assert_eq!(side.active("remote").as_deref(), Some("interconnect"));
    assert_one_remote_route(side, &clouds.interface(0));
    let p99 = assert_loop_kept_up(side, &lag_before);
    // A clean stop says what it does once (the metrics server took the end of the loop for
    // a new listen address and rebound it in a loop until the shutdown came).
    aws.signal(nix::sys::signal::Signal::SIGTERM);
    aws.wait_exit(Duration::from_secs(15));
    let rebinds = log_lines(&aws, "metrics listen address changed");
    assert!(rebinds.is_empty(), "{} rebinds at the stop", rebinds.len());
    println!(
        "stepped {:.1?} ago; on the stepped clock: failover {failover:.1?}, failback \
         {failback:.1?}; loop lag p99 ≤ {} ms",
        stepped.elapsed(),
        p99 * 1e3
    );
}

#[test]
fn a_restart_on_a_wall_clock_stepped_back_an_hour_reads_its_state_and_its_probes_are_answered() {
    let _serial = serial();
    let Some(lib) = libfaketime() else {
        eprintln!("skipped: libfaketime is not installed (tests/install-deps test)");
        return;
    };
    let clouds = TwoClouds::new("cr");
    let side = &clouds.aws;
    let rc = side.fx.dir().join("faketime.rc");
    std::fs::write(&rc, "+0\n").unwrap();
    let env = faked_clock(&lib, &rc);
    let mut aws = Agentd::start_with_env(&side.fx, &side.ns, &env);
    let _oci = Agentd::start(&clouds.oci.fx, &clouds.oci.ns);
    for s in [side, &clouds.oci] {
        s.wait_links_up(&["interconnect", "internet"], LONG);
        s.wait_active("remote", "interconnect", LONG);
    }
    std::fs::write(&rc, "-3600\n").unwrap();
    wait_log(&aws, "fault: clock_step", 1, Duration::from_secs(15));
    // The state file is written again on the stepped clock (it was stamped an hour ahead).
    let file = state_dir(side).join("active.json");
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let saved = std::fs::read_to_string(&file)
            .ok()
            .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
            .and_then(|v| v["saved_unix_ms"].as_u64());
        if saved.is_some_and(|ms| ms.abs_diff(faked_now_ms(&env)) < 60_000) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "active.json not rewritten on the new clock: {saved:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }

    // A crash now and a restart on the stepped clock.
    aws.signal(nix::sys::signal::Signal::SIGKILL);
    aws.wait_exit(Duration::from_secs(5));
    let restart = Instant::now();
    let aws = Agentd::start_with_env(&side.fx, &side.ns, &env);
    // The state file was written again on the new clock: not taken for one from the future.
    assert!(
        log_lines(&aws, "not restoring").is_empty(),
        "a cold start after the step:\n{}",
        aws.log_text()
    );
    // The peer answers the restarted gateway's probes: numbered from the wall clock alone,
    // they would start an hour below what the peer saw, and be dropped as replays for an hour.
    // (The tunnel takes a while: the peer refuses the handshakes this side starts, whose
    // WireGuard timestamps are an hour older than the last it took, until it starts one
    // itself, 15 s after the old session last answered.)
    let deadline = Instant::now() + Duration::from_secs(60);
    while side.active("remote").as_deref() != Some("interconnect") {
        assert!(
            Instant::now() < deadline,
            "not back on the interconnect 60 s after the restart\naws: {:#}\noci: {:#}",
            side.link("interconnect"),
            clouds.oci.link("interconnect")
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let back = restart.elapsed();
    let restored = side
        .events()
        .into_iter()
        .rev()
        .find(|e| e["kind"] == "active_link_changed")
        .expect("an active_link_changed after the restart");
    // The kept link was tried first; it is forgotten (a cold start) when it does not answer
    // while the group settles, as here, where the tunnel waits for the peer's handshake.
    assert_eq!(
        log_lines(&aws, "warm restart").len(),
        1,
        "{}",
        aws.log_text()
    );
    let behind = now_ms() - restored["unix_ms"].as_u64().unwrap();
    assert!(
        behind > 3_500_000,
        "event {behind} ms behind the host's clock: {restored:#}"
    );
    assert_one_remote_route(side, &clouds.interface(0));
    let replayed = clouds.oci.link("interconnect")["probe_drops"]["replayed"].clone();
    assert_eq!(
        replayed, 0,
        "the peer dropped probes of the restarted gateway as replays"
    );
    println!("restarted on a clock an hour back: on the interconnect {back:.1?} after the start");
}
