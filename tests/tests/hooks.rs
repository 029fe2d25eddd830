//! Hooks end to end: the AWS gateway of the two-cloud test bed runs a shell script of the
//! test's on every transition of its route group, and the interconnect is cut with nftables.
//!
//! - The script sees the transition in its environment, and the environment configured for it,
//!   but nothing of agentd's own (a fake AWS secret given to agentd stays there).
//! - A script that hangs is killed with its children at its timeout, while agentd goes on
//!   failing over and back in time, its probes healthy.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use isthmus_tests::topology::{now_ms, TwoClouds};
use isthmus_tests::{Agentd, Fixture};

const UP: Duration = Duration::from_secs(20);
/// Generous: a shared 2-core machine.
const SWITCH: Duration = Duration::from_secs(20);
const FAKE_SECRET: &str = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY";

/// Write `body` as an executable shell script `name` in the fixture's directory.
fn script(fx: &Fixture, name: &str, body: &str) -> PathBuf {
    let path = fx.dir().join(name);
    std::fs::write(&path, format!("#!/bin/sh\n{body}")).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

/// Add a `[[hook]]` for group `remote`.
fn add_hook(fx: &Fixture, name: &str, command: &Path, env: &[(&str, &str)], timeout: &str) {
    let mut doc: toml::Table = std::fs::read_to_string(fx.config_path())
        .unwrap()
        .parse()
        .unwrap();
    let mut hook = toml::Table::new();
    hook.insert("name".into(), name.into());
    hook.insert(
        "command".into(),
        toml::Value::Array(vec![command.display().to_string().into()]),
    );
    let environment: toml::Table = env
        .iter()
        .map(|(k, v)| ((*k).to_owned(), toml::Value::from(*v)))
        .collect();
    hook.insert("environment".into(), environment.into());
    hook.insert("groups".into(), toml::Value::Array(vec!["remote".into()]));
    hook.insert("timeout".into(), timeout.into());
    doc.entry("hook")
        .or_insert_with(|| toml::Value::Array(vec![]))
        .as_array_mut()
        .unwrap()
        .push(hook.into());
    fx.write_config(&toml::to_string(&doc).unwrap());
}

/// Start both agents (the AWS one with `env` added to its environment), as
/// `TwoClouds::start_agents` does.
fn start(clouds: &TwoClouds, env: &[(&str, String)]) -> (Agentd, Agentd) {
    let aws = Agentd::start_with_env(&clouds.aws.fx, &clouds.aws.ns, env);
    let oci = Agentd::start(&clouds.oci.fx, &clouds.oci.ns);
    for side in [&clouds.aws, &clouds.oci] {
        side.wait_links_up(&["interconnect", "internet"], UP);
        side.wait_active("remote", "interconnect", UP);
    }
    (aws, oci)
}

/// Parse `env` output (one `NAME=value` a line; our values have no newlines).
fn parse_env(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

/// Wait for a file that the hook writes; its contents.
fn wait_file(path: &Path, timeout: Duration) -> String {
    let deadline = Instant::now() + timeout;
    loop {
        if let Ok(text) = std::fs::read_to_string(path) {
            if text.ends_with('\n') {
                return text;
            }
        }
        assert!(
            Instant::now() < deadline,
            "{} never appeared",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Whether process `pid` still exists (a zombie counts as gone: it runs nothing).
fn alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            s.rsplit_once(')')
                .map(|(_, rest)| rest.trim_start().chars().next())
        })
        .flatten()
        .is_some_and(|state| state != 'Z')
}

#[test]
fn a_hook_sees_the_transition_and_its_own_environment_but_not_agentds() {
    let clouds = TwoClouds::new("hk");
    let fx = &clouds.aws.fx;
    let out = fx.dir().join("hook-out");
    std::fs::create_dir(&out).unwrap();
    // One file per run, named after the link it moved to (write, then rename: never half).
    let hook = script(
        fx,
        "record.sh",
        "env > \"$HOOK_OUT/.$$\"\nmv \"$HOOK_OUT/.$$\" \"$HOOK_OUT/to-$ISTHMUS_TO.env\"\n",
    );
    add_hook(
        fx,
        "record",
        &hook,
        &[("HOOK_OUT", &out.display().to_string()), ("TEAM", "db-ops")],
        "5s",
    );
    let (_aws, _oci) = start(
        &clouds,
        &[
            ("AWS_SECRET_ACCESS_KEY", FAKE_SECRET.to_owned()),
            ("ISTHMUS_TEST_LEAK", "from agentd".to_owned()),
        ],
    );

    // Start-up: the first usable link.
    let first = parse_env(&wait_file(&out.join("to-interconnect.env"), SWITCH));
    assert_eq!(first["ISTHMUS_FROM"], "", "{first:#?}");
    assert_eq!(first["ISTHMUS_REASON"], "first usable link", "{first:#?}");

    clouds.cut_interconnect(true);
    clouds.aws.wait_active("remote", "internet", SWITCH);
    let env = parse_env(&wait_file(&out.join("to-internet.env"), SWITCH));
    let expect = [
        ("ISTHMUS_AGENT", "aws-gw"),
        ("ISTHMUS_HOOK", "record"),
        ("ISTHMUS_KIND", "route_group"),
        ("ISTHMUS_GROUP", "remote"),
        ("ISTHMUS_FROM", "interconnect"),
        ("ISTHMUS_TO", "internet"),
        ("ISTHMUS_REASON", "active link unusable"),
        ("TEAM", "db-ops"),
        ("LANG", "C.UTF-8"),
    ];
    for (k, v) in expect {
        assert_eq!(env.get(k).map(String::as_str), Some(v), "{k}: {env:#?}");
    }
    // Health moved it: the figures of the link it left.
    let loss: f64 = env["ISTHMUS_LOSS"].parse().expect("ISTHMUS_LOSS a number");
    assert!((0.0..=1.0).contains(&loss), "{env:#?}");
    assert!(env.contains_key("ISTHMUS_RTT_P95_MS"), "{env:#?}");
    assert!(env["ISTHMUS_TIME"].ends_with('Z'), "{env:#?}");
    assert!(env.contains_key("PATH"), "{env:#?}");
    // Nothing of agentd's own environment.
    for leaked in [
        "AWS_SECRET_ACCESS_KEY",
        "ISTHMUS_TEST_LEAK",
        "NOTIFY_SOCKET",
        "HOME",
    ] {
        assert!(
            !env.contains_key(leaked),
            "{leaked} reached the hook: {env:#?}"
        );
    }
    let all = std::fs::read_to_string(out.join("to-internet.env")).unwrap();
    assert!(!all.contains(FAKE_SECRET), "{all}");

    // The runs are in the event log.
    let deadline = Instant::now() + SWITCH;
    loop {
        let ran = clouds
            .aws
            .events()
            .into_iter()
            .filter(|e| e["kind"] == "hook_ran" && e["group"] == "hook record")
            .count();
        if ran >= 2 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "hook_ran events: {:#?}",
            clouds.aws.events()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_hanging_hook_is_killed_at_its_timeout_while_failover_goes_on() {
    let clouds = TwoClouds::new("hh");
    let fx = &clouds.aws.fx;
    let out = fx.dir().join("hook-out");
    std::fs::create_dir(&out).unwrap();
    // The first move to the internet link hangs (the shell waits on a child: both must go);
    // every other run returns at once.
    let hook = script(
        fx,
        "hang.sh",
        "if [ \"$ISTHMUS_TO\" = internet ] && mkdir \"$HOOK_OUT/hung\" 2>/dev/null; then\n  \
         sleep 600 &\n  echo \"$$ $!\" > \"$HOOK_OUT/.pids\"\n  \
         mv \"$HOOK_OUT/.pids\" \"$HOOK_OUT/pids\"\n  wait\nfi\n",
    );
    add_hook(
        fx,
        "hang",
        &hook,
        &[("HOOK_OUT", &out.display().to_string())],
        "20s",
    );
    let (_aws, _oci) = start(&clouds, &[]);

    let hang = now_ms();
    clouds.cut_interconnect(true);
    for side in [&clouds.aws, &clouds.oci] {
        side.wait_active("remote", "internet", SWITCH);
    }
    let pids = Pids(
        wait_file(&out.join("pids"), SWITCH)
            .split_whitespace()
            .map(|p| p.parse().unwrap())
            .collect(),
    );
    assert_eq!(pids.0.len(), 2, "{:?}", pids.0);
    assert!(pids.0.iter().all(|p| alive(*p)), "the hook is not hanging");

    // While it hangs: back to the interconnect after failback_after, and away again.
    clouds.restore_interconnect();
    for side in [&clouds.aws, &clouds.oci] {
        side.wait_active("remote", "interconnect", SWITCH);
    }
    assert!(clouds.aws.remote_routes().contains(&clouds.interface(0)));
    clouds.cut_interconnect(true);
    for side in [&clouds.aws, &clouds.oci] {
        side.wait_active("remote", "internet", SWITCH);
    }
    assert!(clouds.aws.remote_routes().contains(&clouds.interface(1)));
    assert!(
        pids.0.iter().all(|p| alive(*p)),
        "the hook no longer hangs: the moves were not made during the hang"
    );

    // Killed at its timeout, with its child.
    let deadline = Instant::now() + Duration::from_secs(40);
    let failed = loop {
        let events = clouds.aws.events();
        if let Some(e) = events
            .iter()
            .find(|e| e["kind"] == "hook_failed" && e["group"] == "hook hang")
        {
            break e.clone();
        }
        assert!(Instant::now() < deadline, "no hook_failed: {events:#?}");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(failed["link"], "remote", "{failed:#}");
    assert!(
        failed["reason"]
            .as_str()
            .unwrap()
            .starts_with("killed at its timeout"),
        "{failed:#}"
    );
    let after = failed["unix_ms"].as_u64().unwrap() - hang;
    assert!(
        after >= 19_000,
        "killed {after} ms after the move: before its timeout"
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    while pids.0.iter().any(|p| alive(*p)) {
        assert!(Instant::now() < deadline, "still running: {:?}", pids.0);
        std::thread::sleep(Duration::from_millis(50));
    }
    // Then the hook's queued runs (the failback, the second failover) go through.
    let deadline = Instant::now() + SWITCH;
    loop {
        let events = clouds.aws.events();
        let ran = events
            .iter()
            .filter(|e| {
                e["kind"] == "hook_ran"
                    && e["group"] == "hook hang"
                    && e["unix_ms"].as_u64() >= failed["unix_ms"].as_u64()
            })
            .count();
        if ran >= 2 {
            break;
        }
        assert!(Instant::now() < deadline, "queued runs: {events:#?}");
        std::thread::sleep(Duration::from_millis(100));
    }
    // The probes never stalled: the internet link stayed up all along, on both sides.
    for side in [&clouds.aws, &clouds.oci] {
        let changes: Vec<_> = side
            .events()
            .into_iter()
            .filter(|e| {
                e["kind"] == "health_changed"
                    && e["link"] == "internet"
                    && e["unix_ms"].as_u64() >= Some(hang)
            })
            .collect();
        assert!(changes.is_empty(), "{}: {changes:#?}", side.name);
        assert_eq!(side.link("internet")["state"], "up", "{}", side.name);
    }
}

/// Processes of a hook that the test kills (by PID) if they outlive it.
struct Pids(Vec<i32>);

impl Drop for Pids {
    fn drop(&mut self) {
        for p in &self.0 {
            if alive(*p) {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(*p),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
        }
    }
}

#[test]
fn a_hook_still_running_when_agentd_stops_goes_with_it() {
    let clouds = TwoClouds::new("hs");
    let fx = &clouds.aws.fx;
    let out = fx.dir().join("hook-out");
    std::fs::create_dir(&out).unwrap();
    let hook = script(
        fx,
        "hang.sh",
        "sleep 600 &\necho \"$$ $!\" > \"$HOOK_OUT/.pids\"\nmv \"$HOOK_OUT/.pids\" \"$HOOK_OUT/pids\"\nwait\n",
    );
    add_hook(
        fx,
        "hang",
        &hook,
        &[("HOOK_OUT", &out.display().to_string())],
        "10m",
    );
    let (aws, _oci) = start(&clouds, &[]);
    // The start-up transition's run hangs.
    let pids = Pids(
        wait_file(&out.join("pids"), SWITCH)
            .split_whitespace()
            .map(|p| p.parse().unwrap())
            .collect(),
    );
    assert!(pids.0.iter().all(|p| alive(*p)), "the hook is not hanging");
    drop(aws);
    let deadline = Instant::now() + Duration::from_secs(5);
    while pids.0.iter().any(|p| alive(*p)) {
        assert!(
            Instant::now() < deadline,
            "the hook outlived agentd: {:?}",
            pids.0
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}
