//! agentd's life as an operator sees it: start from an example config, answer status, reject a
//! broken reload while running on, reload a good one, stop cleanly on SIGTERM; plus start-up
//! failures (bad config, socket in use) and the systemd notifications around all of it.

use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::time::Duration;

use isthmus_tests::{bin, netctl, Agentd, Fixture, Netns};
use nix::sys::signal::Signal;

/// A config whose 5th line has a type error at column 15.
fn broken_config(socket: &std::path::Path) -> String {
    format!(
        "[agent]\nname = \"broken\"\n[control]\nsocket = \"{}\"\nmax_clients = \"many\"\n",
        socket.display()
    )
}

/// The first diagnostic of severity error in a JSON answer (warnings may come before it).
fn first_error(json: &serde_json::Value) -> &serde_json::Value {
    json["diagnostics"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["severity"] == "error")
        .unwrap_or_else(|| panic!("no error in {json}"))
}

fn example_names() -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(isthmus_tests::repo_root().join("config"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".toml"))
        .collect();
    names.sort();
    assert!(
        names.len() >= 2,
        "expected the AWS and OCI examples, found {names:?}"
    );
    names
}

#[test]
fn every_example_config_validates_with_agentd_and_netctl() {
    for name in example_names() {
        let fx = Fixture::example(&name);
        let agentd = std::process::Command::new(bin("agentd"))
            .arg("--check-config")
            .arg(fx.config_path())
            .env_remove("CREDENTIALS_DIRECTORY")
            .output()
            .unwrap();
        assert!(
            agentd.status.success(),
            "agentd --check-config {name}: {}",
            String::from_utf8_lossy(&agentd.stderr)
        );
        let out = netctl(
            &fx.socket(),
            &["check-config", fx.config_path().to_str().unwrap()],
        );
        assert_eq!(out.code, 0, "netctl check-config {name}: {out:?}");
        assert!(out.stdout.contains(": ok"), "{out:?}");
    }
}

#[test]
fn check_config_reports_errors_with_location_and_fails() {
    let fx = Fixture::new("[agent]\nname = \"x\"\n");
    fx.write_config(&broken_config(&fx.socket()));
    let agentd = std::process::Command::new(bin("agentd"))
        .arg("--check-config")
        .arg(fx.config_path())
        .output()
        .unwrap();
    assert_eq!(agentd.status.code(), Some(64));
    let stderr = String::from_utf8_lossy(&agentd.stderr);
    assert!(stderr.contains("agentd.toml:5:15"), "{stderr}");

    let out = netctl(
        &fx.socket(),
        &["check-config", fx.config_path().to_str().unwrap()],
    );
    assert_eq!(out.code, 1, "{out:?}");
    assert!(out.stderr.contains("agentd.toml:5:15"), "{out:?}");
    let json = netctl(
        &fx.socket(),
        &["--json", "check-config", fx.config_path().to_str().unwrap()],
    )
    .json();
    assert_eq!(json["valid"], false);
    let error = first_error(&json);
    assert_eq!(error["line"], 5);
    assert_eq!(error["column"], 15);
}

#[test]
fn agentd_runs_an_example_survives_a_broken_reload_and_stops_cleanly_on_sigterm() {
    let ns = Netns::new("lc");
    let fx = Fixture::example("aws-gateway.toml");
    let good = std::fs::read_to_string(fx.config_path()).unwrap();
    let doc: toml::Table = good.parse().unwrap();
    let name = doc["agent"]["name"].as_str().unwrap().to_owned();
    let mut agentd = Agentd::start(&fx, &ns);
    let sock = fx.socket();

    // The socket: mode 0660, a socket.
    let meta = std::fs::metadata(&sock).unwrap();
    assert!(meta.file_type().is_socket());
    assert_eq!(meta.permissions().mode() & 0o777, 0o660);

    // Status, human and JSON.
    let human = netctl(&sock, &["status"]);
    assert_eq!(human.code, 0, "{human:?}");
    assert!(human.stdout.contains(&name), "{}", human.stdout);
    assert!(human.stdout.contains("LINK"), "{}", human.stdout);
    assert!(human.stdout.contains("interconnect"), "{}", human.stdout);
    let status = netctl(&sock, &["--json", "status"]).json();
    assert_eq!(status["agent"]["name"], name.as_str());
    assert_eq!(status["agent"]["caller_access"], "write");
    assert_eq!(status["agent"]["pid"], agentd.pid().as_raw());
    let fingerprint = status["config"]["fingerprint"].as_str().unwrap().to_owned();
    let link_names: Vec<&str> = status["links"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["name"].as_str().unwrap())
        .collect();
    assert_eq!(link_names, ["interconnect", "internet"]);

    // A broken file: reload is rejected with line:column, the daemon keeps the old config.
    fx.write_config(&broken_config(&sock));
    let rejected = netctl(&sock, &["reload"]);
    assert_eq!(rejected.code, 1, "{rejected:?}");
    assert!(rejected.stderr.contains("agentd.toml:5:15"), "{rejected:?}");
    assert!(rejected.stderr.contains("keeps running"), "{rejected:?}");
    let rejected_json = netctl(&sock, &["--json", "reload"]).json();
    assert_eq!(rejected_json["kind"], "config_invalid");
    assert_eq!(first_error(&rejected_json)["line"], 5);
    assert!(agentd.is_running());
    let status = netctl(&sock, &["--json", "status"]).json();
    assert_eq!(status["config"]["fingerprint"], fingerprint.as_str());
    assert_eq!(status["agent"]["name"], name.as_str());
    assert_eq!(status["config"]["reloads_rejected"], 2);
    assert!(status["config"]["last_rejected"]["first_error"]
        .as_str()
        .unwrap()
        .contains(":5:15"));
    let human = netctl(&sock, &["status"]);
    assert!(human.stdout.contains("REJECTED"), "{}", human.stdout);

    // SIGHUP with the broken file: same outcome, announced to systemd as RELOADING then READY.
    // (The file is read off the event loop: READY is the moment the outcome is known.)
    agentd
        .notify
        .wait_for("READY=1", Duration::from_secs(5))
        .unwrap();
    agentd.notify.drain();
    agentd.signal(Signal::SIGHUP);
    agentd
        .notify
        .wait_for("RELOADING=1", Duration::from_secs(5))
        .unwrap();
    agentd
        .notify
        .wait_for("READY=1", Duration::from_secs(5))
        .unwrap();
    assert!(agentd.is_running());
    let status = netctl(&sock, &["--json", "status"]).json();
    assert_eq!(status["config"]["reloads_rejected"], 3);
    assert_eq!(status["config"]["fingerprint"], fingerprint.as_str());

    // A good file with a change: applied and described.
    fx.write_config(&good.replace(&format!("name = \"{name}\""), "name = \"renamed-gw\""));
    let applied = netctl(&sock, &["reload"]);
    assert_eq!(applied.code, 0, "{applied:?}");
    assert!(
        applied.stdout.contains("agent.name: changed"),
        "{applied:?}"
    );
    let status = netctl(&sock, &["--json", "status"]).json();
    assert_eq!(status["agent"]["name"], "renamed-gw");
    assert_eq!(status["config"]["reloads_applied"], 1);
    assert!(status["config"].get("last_rejected").is_none());

    // SIGTERM: STOPPING=1, exit 0, socket removed.
    agentd.signal(Signal::SIGTERM);
    let code = agentd.wait_exit(Duration::from_secs(10));
    assert_eq!(code.code(), Some(0), "{}", agentd.log_text());
    agentd
        .notify
        .wait_for("STOPPING=1", Duration::from_secs(1))
        .unwrap();
    assert!(!sock.exists(), "the control socket must be removed on stop");
    let gone = netctl(&sock, &["status"]);
    assert_eq!(gone.code, 3, "{gone:?}");
    assert!(gone.stderr.contains("agentd is not running"), "{gone:?}");
}

#[test]
fn a_bad_config_at_start_up_exits_64_with_its_errors() {
    let ns = Netns::new("bc");
    let fx = Fixture::new("[agent]\nname = \"x\"\n");
    fx.write_config(&broken_config(&fx.socket()));
    let mut agentd = Agentd::spawn(&fx, &ns, &[]);
    let status = agentd.wait_exit(Duration::from_secs(10));
    assert_eq!(status.code(), Some(64));
    let log = agentd.log_text();
    assert!(log.contains("agentd.toml:5:15"), "{log}");
    assert!(!fx.socket().exists());
}

#[test]
fn a_live_socket_is_not_stolen_and_a_stale_one_is_replaced() {
    let ns = Netns::new("so");
    let fx = Fixture::new("[agent]\nname = \"first\"\n");
    let mut first = Agentd::start(&fx, &ns);

    let mut second = Agentd::spawn(&fx, &ns, &[]);
    let status = second.wait_exit(Duration::from_secs(10));
    assert_eq!(status.code(), Some(1));
    assert!(
        second
            .log_text()
            .contains("another agentd is already listening"),
        "{}",
        second.log_text()
    );
    assert!(first.is_running());
    assert_eq!(netctl(&fx.socket(), &["status"]).code, 0);

    // SIGKILL leaves the socket file behind; the next agentd replaces it.
    first.signal(Signal::SIGKILL);
    first.wait_exit(Duration::from_secs(5));
    assert!(fx.socket().exists());
    let stale = netctl(&fx.socket(), &["status"]);
    assert_eq!(stale.code, 3);
    assert!(stale.stderr.contains("stale"), "{stale:?}");
    let _third = Agentd::start(&fx, &ns);
    let status = netctl(&fx.socket(), &["--json", "status"]).json();
    assert_eq!(status["agent"]["name"], "first");
}

#[test]
fn the_watchdog_is_pinged_while_the_loop_runs() {
    let ns = Netns::new("wd");
    let fx = Fixture::new("[agent]\nname = \"wd\"\n");
    // 200 ms watchdog: agentd pings every 100 ms.
    let mut agentd = Agentd::spawn(&fx, &ns, &[("WATCHDOG_USEC", "200000".into())]);
    agentd
        .notify
        .wait_for("READY=1", Duration::from_secs(20))
        .unwrap();
    // Pings keep coming (not just one at start-up): five in a row, each within 2 s.
    for _ in 0..5 {
        agentd
            .notify
            .wait_for("WATCHDOG=1", Duration::from_secs(2))
            .unwrap();
    }
}
