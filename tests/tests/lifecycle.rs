//! agentd's life as an operator sees it: start from an example config, answer status, reject a
//! broken reload while running on, reload a good one, stop cleanly on SIGTERM; plus start-up
//! failures (bad config, socket in use) and the systemd notifications around all of it.

use std::fmt::Write as _;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use isthmus_tests::{bin, netctl, Agentd, Fixture, Netns, Output};
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

/// Generous: each of these takes well under a second here. Before the config checks were made
/// linear, the 100,000 keys below took about 20 minutes.
const QUICK: Duration = Duration::from_secs(10);

/// `[agent]` with `n` unknown keys (`k0=1`, ..., `k255r=1`: names in base 36, at most 8 bytes a
/// line, so that 100,000 stay under the size limit), and groups that exist on every host (no
/// warnings).
fn unknown_keys(n: usize) -> String {
    const DIGITS: &[u8] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    let mut text = String::with_capacity(n * 8 + 64);
    text.push_str("[agent]\nname = \"big\"\n");
    for i in 0..n {
        let mut name = Vec::new();
        let mut rest = i;
        loop {
            name.push(DIGITS[rest % 36]);
            rest /= 36;
            if rest == 0 {
                break;
            }
        }
        name.reverse();
        let _ = writeln!(text, "k{}=1", String::from_utf8(name).unwrap());
    }
    text.push_str("[control]\nread_group = 0\nadmin_group = 0\n");
    text
}

/// Runs `program args` with its output in files, killing it (by its PID) if it is not done
/// within [`QUICK`].
fn run_quickly(program: &Path, args: &[&str], dir: &Path) -> (Output, Duration) {
    let (out_path, err_path) = (dir.join("run.stdout"), dir.join("run.stderr"));
    let started = Instant::now();
    let mut child = Command::new(program)
        .args(args)
        .env_remove("CREDENTIALS_DIRECTORY")
        .stdout(Stdio::from(std::fs::File::create(&out_path).unwrap()))
        .stderr(Stdio::from(std::fs::File::create(&err_path).unwrap()))
        .spawn()
        .unwrap();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > QUICK {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "{} {args:?} still running after {QUICK:?}",
                program.display()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let took = started.elapsed();
    let read = |p: &Path| String::from_utf8_lossy(&std::fs::read(p).unwrap()).into_owned();
    let out = Output {
        code: status.code().unwrap_or(-1),
        stdout: read(&out_path),
        stderr: read(&err_path),
    };
    (out, took)
}

/// What a report of the 100,000 unknown keys must say: the first 100 errors, the count of the
/// rest, the total.
fn assert_first_hundred_listed(stderr: &str, file: &Path) {
    let listed = stderr.lines().filter(|l| l.starts_with("error: ")).count();
    assert_eq!(listed, 100, "{}", &stderr[..stderr.len().min(2000)]);
    assert!(
        stderr.contains("error: [agent]: unknown key `k0`\n"),
        "{}",
        &stderr[..stderr.len().min(2000)]
    );
    assert!(
        stderr.contains(
            "\n… and 99900 more errors (not listed: only the first 100 of each kind are)\n"
        ),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!("100000 errors in {}", file.display())),
        "{stderr}"
    );
}

#[test]
fn check_config_is_quick_and_clear_on_huge_oversized_and_binary_files() {
    let fx = Fixture::new("[agent]\nname = \"x\"\n");
    let file = fx.config_path();
    let path = file.to_str().unwrap();
    let socket = fx.socket();
    let socket = socket.to_str().unwrap();
    let netctl = bin("netctl");

    // 100,000 unknown keys: every one found, the first 100 listed, the rest counted.
    fx.write_config(&unknown_keys(100_000));
    let (out, took) = run_quickly(&bin("agentd"), &["--check-config", path], fx.dir());
    assert_eq!(out.code, 64, "{out:?}");
    println!("agentd --check-config: 100000 unknown keys in {took:?}");
    assert_first_hundred_listed(&out.stderr, file);
    let (out, took) = run_quickly(
        &netctl,
        &["--socket", socket, "check-config", path],
        fx.dir(),
    );
    assert_eq!(out.code, 1, "{}", out.stdout);
    println!("netctl check-config: 100000 unknown keys in {took:?}");
    assert_first_hundred_listed(&out.stderr, file);
    let (out, _) = run_quickly(
        &netctl,
        &["--socket", socket, "--json", "check-config", path],
        fx.dir(),
    );
    let json = out.json();
    assert_eq!(json["valid"], false);
    assert_eq!(json["omitted_errors"], 99_900);
    assert_eq!(json["diagnostics"].as_array().unwrap().len(), 100);

    // 10 MiB: refused from its size, with the limit and the size.
    let f = std::fs::File::create(file).unwrap();
    f.set_len(10 * 1024 * 1024).unwrap();
    drop(f);
    let (out, _) = run_quickly(&bin("agentd"), &["--check-config", path], fx.dir());
    assert_eq!(out.code, 64, "{out:?}");
    assert!(
        out.stderr.contains(&format!(
            "config file {path} is larger than the limit of 1 MiB (1048576 bytes) for config \
             files: it is 10 MiB (10485760 bytes)"
        )),
        "{}",
        out.stderr
    );

    // Not UTF-8 (a Latin-1 "é" on line 2): the line and column of the byte, and what to do.
    std::fs::write(file, b"[agent]\nname = \"caf\xe9\"\n").unwrap();
    for (program, args) in [
        (bin("agentd"), vec!["--check-config", path]),
        (
            netctl.clone(),
            vec!["--socket", socket, "check-config", path],
        ),
    ] {
        let (out, _) = run_quickly(&program, &args, fx.dir());
        assert_ne!(out.code, 0, "{out:?}");
        assert!(
            out.stderr.contains(&format!("--> {path}:2:12")),
            "{}",
            out.stderr
        );
        assert!(
            out.stderr
                .contains("byte 0xE9 is not part of a UTF-8 character"),
            "{}",
            out.stderr
        );
        assert!(
            out.stderr.contains("hint: save the file as UTF-8"),
            "{}",
            out.stderr
        );
    }

    // Binary (NUL bytes): one error at the first one, nothing unprintable echoed.
    std::fs::write(
        file,
        b"[agent]\nname = \"x\"\n\x7fELF\x02\x01\x01\x00\x00\x00\x00\n",
    )
    .unwrap();
    let (out, _) = run_quickly(&bin("agentd"), &["--check-config", path], fx.dir());
    assert_eq!(out.code, 64, "{out:?}");
    assert!(
        out.stderr.contains(&format!("--> {path}:3:8")),
        "{}",
        out.stderr
    );
    assert!(out.stderr.contains("contains a NUL byte"), "{}", out.stderr);
    assert!(!out.stderr.contains('\0'), "{:?}", out.stderr);
    assert_eq!(out.stderr.matches("error: ").count(), 1, "{}", out.stderr);
}

#[test]
fn a_reload_of_a_huge_or_oversized_file_is_refused_quickly_and_agentd_runs_on() {
    let ns = Netns::new("rh");
    let fx = Fixture::new("[agent]\nname = \"steady\"\n");
    let mut agentd = Agentd::start(&fx, &ns);
    let sock = fx.socket();
    let fingerprint = netctl(&sock, &["--json", "status"]).json()["config"]["fingerprint"].clone();

    fx.write_config(&unknown_keys(100_000));
    let started = Instant::now();
    let out = netctl(&sock, &["reload"]);
    let took = started.elapsed();
    assert_eq!(out.code, 1, "{}", &out.stderr[..out.stderr.len().min(2000)]);
    assert!(took < QUICK, "reload answered after {took:?}");
    let listed = out
        .stderr
        .lines()
        .filter(|l| l.starts_with("error: "))
        .count();
    assert_eq!(listed, 100);
    assert!(
        out.stderr.contains(
            "\n… and 99900 more errors (not listed: only the first 100 of each kind are)\n"
        ),
        "{}",
        out.stderr
    );
    assert!(out.stderr.contains("has 100000 error(s)"), "{}", out.stderr);
    let json = netctl(&sock, &["--json", "reload"]).json();
    assert_eq!(json["kind"], "config_invalid");
    assert_eq!(json["omitted_errors"], 99_900);
    assert_eq!(json["diagnostics"].as_array().unwrap().len(), 100);

    // 10 MiB: refused without being read.
    let f = std::fs::File::create(fx.config_path()).unwrap();
    f.set_len(10 * 1024 * 1024).unwrap();
    drop(f);
    let started = Instant::now();
    let out = netctl(&sock, &["reload"]);
    assert!(started.elapsed() < QUICK);
    assert_eq!(out.code, 1, "{out:?}");
    assert!(
        out.stderr.contains("is larger than the limit of 1 MiB"),
        "{}",
        out.stderr
    );

    assert!(agentd.is_running());
    let status = netctl(&sock, &["--json", "status"]).json();
    assert_eq!(status["config"]["fingerprint"], fingerprint);
    assert_eq!(status["config"]["reloads_rejected"], 3);
    assert!(status["config"]["last_rejected"]["first_error"]
        .as_str()
        .unwrap()
        .contains("larger than the limit"));
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
