//! The README's first command on a machine that lacks its programs, and the demo with nothing
//! but its listed programs.
//!
//! CI's machine has the packages already, so a bare machine is made by PATH: `tests/demo` with
//! `PATH` set to an empty directory must stop at the prerequisite check, name every package
//! of `tests/install-deps --list demo` (and cargo) and build nothing. Then the built demo runs
//! with `PATH` holding only symlinks to the programs that list names: a program the demo starts
//! that is not in the list fails it. Afterwards none of its namespaces and none of its
//! processes may be left.
//!
//! The two tests are serialized: the second one adopts orphaned processes (it is a child
//! subreaper) and counts its children, and the first one's shell is a child too.

use std::collections::BTreeSet;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use isthmus_tests::{bin, repo_root, require_root};

static SERIAL: Mutex<()> = Mutex::new(());

/// One requirement of `tests/install-deps --list`: a program (or, starting with `/`, a file
/// that a package ships) and its Debian package.
struct Requirement {
    what: String,
    package: String,
}

impl Requirement {
    fn is_program(&self) -> bool {
        !self.what.starts_with('/')
    }
}

/// `tests/install-deps --list demo`, itself run with an empty PATH: listing needs nothing.
fn demo_requirements(empty: &Path) -> Vec<Requirement> {
    let out = Command::new(repo_root().join("tests/install-deps"))
        .args(["--list", "demo"])
        .env_clear()
        .env("PATH", empty)
        .output()
        .expect("running tests/install-deps --list demo");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "tests/install-deps --list demo: {out:?}"
    );
    let list: Vec<Requirement> = stdout
        .lines()
        .map(|line| {
            let mut words = line.split_whitespace();
            let (Some(what), Some(package), None) = (words.next(), words.next(), words.next())
            else {
                panic!("not a `program package` line: {line:?}");
            };
            Requirement {
                what: what.into(),
                package: package.into(),
            }
        })
        .collect();
    for program in ["ip", "named", "dig", "nft", "ping"] {
        assert!(
            list.iter().any(|r| r.what == program),
            "{program} is not in tests/install-deps --list demo:\n{stdout}"
        );
    }
    list
}

/// The output of a child, waited for at most `within` (then stopped by PID).
struct Finished {
    code: Option<i32>,
    stdout: String,
    stderr: String,
    took: Duration,
}

fn finish(mut child: Child, within: Duration) -> Finished {
    let started = Instant::now();
    let mut out = child.stdout.take().expect("piped stdout");
    let mut err = child.stderr.take().expect("piped stderr");
    let out = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = out.read_to_string(&mut s);
        s
    });
    let err = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = err.read_to_string(&mut s);
        s
    });
    let status = loop {
        if let Some(status) = child.try_wait().expect("waiting") {
            break status;
        }
        if started.elapsed() > within {
            // SIGTERM first: the demo undoes what it made, then exits.
            isthmus_tests::agentd::stop(&mut child);
            break child.wait().expect("waiting");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Finished {
        code: status.code(),
        stdout: out.join().expect("stdout reader"),
        stderr: err.join().expect("stderr reader"),
        took: started.elapsed(),
    }
}

#[test]
fn with_nothing_on_path_the_demo_names_every_missing_package_and_builds_nothing() {
    require_root();
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let empty = tempfile::tempdir().expect("tempdir");
    let requirements = demo_requirements(empty.path());
    // HOME too: with rustup's ~/.cargo/bin there the check would (rightly) say where cargo is.
    let child = Command::new(repo_root().join("tests/demo"))
        .env_clear()
        .env("PATH", empty.path())
        .env("HOME", empty.path())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting tests/demo (by path: its shebang is /bin/bash)");
    let run = finish(child, Duration::from_secs(60));
    let report = format!(
        "exit {:?} after {:?}\n--- stdout ---\n{}\n--- stderr ---\n{}",
        run.code, run.took, run.stdout, run.stderr
    );
    assert_eq!(run.code, Some(1), "{report}");
    assert!(
        run.took < Duration::from_secs(5),
        "the check takes no time: {report}"
    );
    assert!(run.stdout.is_empty(), "{report}");
    assert!(
        !run.stderr.contains("Compiling") && !run.stderr.contains("command not found"),
        "nothing may run after the check: {report}"
    );

    let lines: Vec<&str> = run.stderr.lines().collect();
    // One line per missing program, with its package.
    for r in requirements.iter().filter(|r| r.is_program()) {
        assert!(
            lines.iter().any(|l| {
                let words: Vec<&str> = l.split_whitespace().collect();
                words.first() == Some(&r.what.as_str()) && words.contains(&r.package.as_str())
            }),
            "no line names {} and its package {}: {report}",
            r.what,
            r.package
        );
    }
    // cargo, separately, with where to get it.
    assert!(
        lines
            .iter()
            .any(|l| l.trim_start().starts_with("cargo") && l.contains("https://rustup.rs")),
        "{report}"
    );
    // The exact command, last: nothing happened after it.
    let apt = lines.last().copied().unwrap_or("").trim();
    let packages: Vec<&str> = apt
        .strip_prefix("apt-get install --no-install-recommends ")
        .unwrap_or_else(|| panic!("the last line is not the apt-get command: {report}"))
        .split(' ')
        .collect();
    let mut wanted: Vec<&str> = Vec::new();
    for r in requirements.iter().filter(|r| r.is_program()) {
        if !wanted.contains(&r.package.as_str()) {
            wanted.push(&r.package);
        }
    }
    assert_eq!(packages, wanted, "{report}");
}

/// The `isth-*` namespaces there are now.
fn namespaces() -> BTreeSet<String> {
    let out = Command::new("ip")
        .args(["netns", "list"])
        .output()
        .expect("ip netns list");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|n| n.starts_with("isth-"))
        .map(str::to_owned)
        .collect()
}

/// Processes whose parent is this one (orphans come here: we are a subreaper), not zombies.
fn children() -> Vec<(u32, String)> {
    let me = std::process::id().to_string();
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").expect("/proc") {
        let entry = entry.expect("/proc entry");
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        // pid (comm) state ppid ...: comm may hold spaces, so split after its ')'.
        let (head, tail) = stat.rsplit_once(')').unwrap_or(("", ""));
        let mut fields = tail.split_whitespace();
        let (state, ppid) = (fields.next(), fields.next());
        if ppid == Some(me.as_str()) && state != Some("Z") {
            let comm = head.split_once('(').map_or("", |(_, c)| c).to_owned();
            found.push((pid, comm));
        }
    }
    found
}

fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| {
            !s.rsplit(')')
                .next()
                .unwrap_or("")
                .trim_start()
                .starts_with('Z')
        })
        .unwrap_or(false)
}

/// Find `program` on the PATH this test was started with.
fn resolve(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|d| d.join(program))
        .find(|p| p.is_file())
}

#[test]
fn the_demo_runs_with_only_the_listed_programs_on_path_and_leaves_nothing_behind() {
    require_root();
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let empty = tempfile::tempdir().expect("tempdir");
    let programs = tempfile::tempdir().expect("tempdir");
    for r in demo_requirements(empty.path())
        .iter()
        .filter(|r| r.is_program())
    {
        let found = resolve(&r.what).unwrap_or_else(|| {
            panic!(
                "{} (Debian package {}) is not on PATH: `tests/install-deps demo` installs it",
                r.what, r.package
            )
        });
        std::os::unix::fs::symlink(&found, programs.path().join(&r.what)).expect("symlink");
    }
    // Orphans of the demo (a process it started and did not stop) become our children.
    // SAFETY: prctl with integer arguments only.
    let rc = unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
    assert_eq!(rc, 0, "PR_SET_CHILD_SUBREAPER");
    let before = namespaces();

    let child = Command::new(bin("demo"))
        .env_clear()
        .env("PATH", programs.path())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting the demo");
    let demo_pid = child.id();
    let run = finish(child, Duration::from_secs(120));
    let report = format!(
        "exit {:?} after {:?}\n--- stdout ---\n{}\n--- stderr ---\n{}",
        run.code, run.took, run.stdout, run.stderr
    );
    eprintln!("{report}");

    // What it says it made.
    let made: Vec<String> = run
        .stdout
        .lines()
        .find_map(|l| l.trim().strip_prefix("namespaces: "))
        .map(|l| l.split_whitespace().map(str::to_owned).collect())
        .unwrap_or_default();
    let words: Vec<&str> = run.stdout.split_whitespace().collect();
    let pids: Vec<u32> = words
        .windows(2)
        .filter(|w| w[0] == "pid")
        .filter_map(|w| w[1].trim_end_matches(',').parse().ok())
        .collect();

    // Nothing left, whatever the exit.
    let after = namespaces();
    let left_namespaces: Vec<&String> = made
        .iter()
        .filter(|n| after.contains(*n))
        .chain(after.difference(&before).filter(|n| {
            n.starts_with("isth-demo") && n.contains(&(demo_pid % 100_000).to_string())
        }))
        .collect();
    let left_pids: Vec<u32> = pids.iter().copied().filter(|&p| alive(p)).collect();
    let orphans = children();
    for (pid, _) in &orphans {
        // Ours now: stop them by PID and reap them, so that a failure leaves nothing either.
        let pid = nix::unistd::Pid::from_raw(*pid as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
        let _ = nix::sys::wait::waitpid(pid, None);
    }

    assert_eq!(run.code, Some(0), "the demo failed: {report}");
    assert_eq!(made.len(), 4, "the demo names its 4 namespaces: {report}");
    // named, then agentd on each gateway (agentd's own status prints its pid once more).
    assert!(
        pids.len() >= 3,
        "the demo names the PIDs it starts: {pids:?}"
    );
    assert!(
        left_namespaces.is_empty(),
        "namespaces left: {left_namespaces:?}"
    );
    assert!(left_pids.is_empty(), "processes left: {left_pids:?}");
    assert!(orphans.is_empty(), "orphans of the demo left: {orphans:?}");
}
