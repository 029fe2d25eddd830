//! Checks of the shipped systemd integration (`systemd/`): the unit's hardening score, the
//! settings agentd's behaviour depends on, and that sysusers.d/tmpfiles.d provide what the unit
//! relies on. Plain file checks plus `systemd-analyze`; no root, no running systemd needed.
//!
//! `systemd-analyze security --offline=yes` needs systemd >= 250 installed (CI installs the
//! `systemd` package); the test fails, rather than skips, when it is missing.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::process::Command;

/// Highest acceptable `systemd-analyze security` exposure (0 = locked down, 10 = unprotected).
const MAX_EXPOSURE: f64 = 2.0;

fn systemd_file(name: &str) -> PathBuf {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../systemd")
        .join(name);
    path.canonicalize()
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn read(name: &str) -> String {
    let path = systemd_file(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// A unit file as section -> key -> values in file order (systemd allows repeated keys).
/// Handles comments, continuation lines (trailing backslash) and surrounding whitespace;
/// an empty assignment resets the list, as in systemd.
type Unit = BTreeMap<String, BTreeMap<String, Vec<String>>>;

fn parse_unit(text: &str) -> Unit {
    let mut unit = Unit::new();
    let mut section = String::new();
    let mut logical = String::new();
    for (n, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if logical.is_empty() && (line.is_empty() || line.starts_with('#') || line.starts_with(';'))
        {
            continue;
        }
        if let Some(cont) = line.strip_suffix('\\') {
            logical.push_str(cont);
            logical.push(' ');
            continue;
        }
        logical.push_str(line);
        let entry = std::mem::take(&mut logical);
        if entry.starts_with('[') {
            assert!(
                entry.ends_with(']'),
                "line {}: bad section header {entry:?}",
                n + 1
            );
            section = entry[1..entry.len() - 1].to_string();
            unit.entry(section.clone()).or_default();
            continue;
        }
        let (key, value) = entry
            .split_once('=')
            .unwrap_or_else(|| panic!("line {}: not key=value: {entry:?}", n + 1));
        assert!(!section.is_empty(), "line {}: key outside a section", n + 1);
        let values = unit
            .entry(section.clone())
            .or_default()
            .entry(key.trim().to_string())
            .or_default();
        let value = value.trim();
        if value.is_empty() {
            values.clear();
        } else {
            values.push(value.to_string());
        }
    }
    assert!(logical.is_empty(), "file ends in a continuation line");
    unit
}

fn values<'a>(unit: &'a Unit, section: &str, key: &str) -> &'a [String] {
    unit.get(section)
        .and_then(|s| s.get(key))
        .map(Vec::as_slice)
        .unwrap_or(&[])
}

/// The effective value of a single-valued setting (the last assignment wins).
fn single<'a>(unit: &'a Unit, key: &str) -> &'a str {
    values(unit, "Service", key)
        .last()
        .unwrap_or_else(|| panic!("[Service] {key}= is not set"))
}

/// All whitespace-separated words of a list-valued setting.
fn words(unit: &Unit, key: &str) -> BTreeSet<String> {
    values(unit, "Service", key)
        .iter()
        .flat_map(|v| v.split_whitespace())
        .map(str::to_string)
        .collect()
}

fn is_true(v: &str) -> bool {
    matches!(v, "yes" | "true" | "on" | "1")
}

/// Strip systemd's command prefixes (`-`, `@`, `:`, `+`, `!`, `!!`) and split into words.
fn command(v: &str) -> Vec<&str> {
    v.trim_start_matches(['-', '@', ':', '+', '!'])
        .split_whitespace()
        .collect()
}

fn unit() -> Unit {
    parse_unit(&read("isthmus-agentd.service"))
}

#[test]
fn security_exposure_is_at_most_2() {
    let path = systemd_file("isthmus-agentd.service");
    let output = match Command::new("systemd-analyze")
        .args(["security", "--offline=yes", "--no-pager"])
        .arg(&path)
        .output()
    {
        Ok(o) => o,
        Err(e) => panic!(
            "cannot run systemd-analyze ({e}): install systemd >= 250 \
             (Debian/Ubuntu: `apt-get install -y systemd`); CI installs it"
        ),
    };
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    let marker = "Overall exposure level for ";
    let line = stdout.lines().find(|l| l.contains(marker)).unwrap_or_else(|| {
        panic!(
            "no exposure line from `systemd-analyze security --offline=yes` \
             (systemd too old? --offline needs >= 250)\nstatus: {}\nstdout:\n{stdout}\nstderr:\n{stderr}",
            output.status
        )
    });
    let after = &line[line.find(marker).expect("marker") + marker.len()..];
    let score: f64 = after
        .split_once(": ")
        .and_then(|(_, rest)| rest.split_whitespace().next())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("cannot parse the score in {line:?}"));
    println!("systemd-analyze security: exposure {score} (limit {MAX_EXPOSURE})");
    // The items still counting against the unit, for whoever has to lower the score.
    for l in stdout.lines().filter(|l| l.starts_with('✗')) {
        println!("  {l}");
    }
    assert!(
        score <= MAX_EXPOSURE,
        "exposure {score} > {MAX_EXPOSURE}: the unit lost hardening\n{stdout}"
    );
}

#[test]
fn unit_keeps_agentd_lifecycle_contract() {
    let unit = unit();
    assert_eq!(
        single(&unit, "Type"),
        "notify",
        "agentd speaks sd_notify (READY=1)"
    );
    assert_eq!(
        single(&unit, "NotifyAccess"),
        "main",
        "hooks must not notify systemd"
    );

    let watchdog = single(&unit, "WatchdogSec");
    assert!(
        !matches!(watchdog, "0" | "0s" | "infinity"),
        "WatchdogSec must be a finite, non-zero time, got {watchdog:?}"
    );

    assert_eq!(single(&unit, "Restart"), "on-failure");
    let prevent = words(&unit, "RestartPreventExitStatus");
    assert!(
        prevent.contains("64"),
        "exit 64 (bad config) must not be restarted: {prevent:?}"
    );

    let start = values(&unit, "Service", "ExecStart");
    assert_eq!(start.len(), 1, "one ExecStart: {start:?}");
    let start = command(&start[0]);
    assert!(
        start[0].ends_with("/agentd"),
        "ExecStart runs agentd: {start:?}"
    );
    assert!(
        start
            .windows(2)
            .any(|w| w == ["--config", "/etc/isthmus/agentd.toml"]),
        "ExecStart passes --config /etc/isthmus/agentd.toml: {start:?}"
    );

    // Reload must be synchronous and report rejection: netctl reload, never a signal.
    let reload = values(&unit, "Service", "ExecReload");
    assert_eq!(reload.len(), 1, "exactly one ExecReload: {reload:?}");
    let cmd = command(&reload[0]);
    assert!(
        cmd[0].ends_with("/netctl"),
        "ExecReload runs netctl: {cmd:?}"
    );
    assert_eq!(
        cmd.last(),
        Some(&"reload"),
        "ExecReload runs `netctl ... reload`: {cmd:?}"
    );
    assert!(
        cmd.windows(2)
            .any(|w| w == ["--socket", "/run/isthmus/agentd.sock"]),
        "ExecReload names the control socket: {cmd:?}"
    );
    assert!(
        !cmd.iter()
            .any(|w| w.ends_with("kill") || w.contains("HUP") || w.contains("MAINPID")),
        "ExecReload must not signal agentd: {cmd:?}"
    );
}

#[test]
fn unit_grants_only_what_agentd_needs() {
    let unit = unit();
    let user = single(&unit, "User");
    assert!(!matches!(user, "root" | "0"), "agentd must not run as root");
    assert_eq!(user, "isthmus");
    assert_eq!(single(&unit, "Group"), "isthmus");
    assert!(
        !values(&unit, "Service", "DynamicUser")
            .iter()
            .any(|v| is_true(v)),
        "static user: the socket's group must be stable"
    );

    let wanted: BTreeSet<String> = ["CAP_NET_ADMIN", "CAP_NET_RAW"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    assert_eq!(
        words(&unit, "CapabilityBoundingSet"),
        wanted,
        "CapabilityBoundingSet"
    );
    assert_eq!(
        words(&unit, "AmbientCapabilities"),
        wanted,
        "AmbientCapabilities"
    );
    assert!(is_true(single(&unit, "NoNewPrivileges")));

    // /dev/net/tun must stay reachable through every device restriction.
    let allow = values(&unit, "Service", "DeviceAllow");
    assert!(
        allow.iter().any(|v| {
            let mut w = v.split_whitespace();
            w.next() == Some("/dev/net/tun")
                && w.next().is_some_and(|m| m.contains('r') && m.contains('w'))
        }),
        "DeviceAllow=/dev/net/tun rw missing: {allow:?}"
    );
    assert_eq!(single(&unit, "DevicePolicy"), "closed");
    if values(&unit, "Service", "PrivateDevices")
        .iter()
        .any(|v| is_true(v))
    {
        assert!(
            words(&unit, "BindPaths").contains("/dev/net/tun"),
            "PrivateDevices=yes hides /dev/net/tun unless BindPaths=/dev/net/tun"
        );
    }
    assert!(
        !values(&unit, "Service", "PrivateNetwork")
            .iter()
            .any(|v| is_true(v)),
        "agentd must see the host's network"
    );
    let families = words(&unit, "RestrictAddressFamilies");
    for af in ["AF_UNIX", "AF_INET", "AF_INET6", "AF_NETLINK"] {
        assert!(
            families.contains(af),
            "RestrictAddressFamilies lacks {af}: {families:?}"
        );
    }

    // Keys come in as credentials: the service user cannot read /etc/isthmus/*.key.
    let creds = values(&unit, "Service", "LoadCredential");
    assert!(
        creds
            .iter()
            .any(|c| c.starts_with("private.key:/etc/isthmus/")),
        "LoadCredential=private.key:/etc/isthmus/... missing: {creds:?}"
    );

    assert_eq!(
        single(&unit, "RuntimeDirectory"),
        "isthmus",
        "socket lives in /run/isthmus"
    );
    let mode = u32::from_str_radix(single(&unit, "RuntimeDirectoryMode"), 8).expect("octal mode");
    assert_eq!(
        mode & 0o010,
        0o010,
        "group isthmus must be able to reach the socket"
    );
    assert_eq!(mode & 0o007, 0, "others must not reach the socket");
    assert_eq!(single(&unit, "StateDirectory"), "isthmus");
    assert!(
        words(&unit, "ReadWritePaths").contains("/run/wireguard"),
        "UAPI sockets go to /run/wireguard"
    );
}

#[test]
fn sysusers_and_tmpfiles_provide_what_the_unit_uses() {
    let unit = unit();
    let user = single(&unit, "User");
    let group = single(&unit, "Group");

    // sysusers.d: `u NAME ...` creates the user and its group; `g NAME` a group.
    let sysusers: Vec<Vec<String>> = read("isthmus.sysusers.conf")
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| l.split_whitespace().map(str::to_string).collect())
        .collect();
    let declares = |kind: &str, name: &str| sysusers.iter().any(|f| f[0] == kind && f[1] == name);
    assert!(declares("u", user), "sysusers.d must create user {user}");
    assert!(
        declares("g", group) || declares("u", group),
        "sysusers.d must create group {group}"
    );
    assert!(
        declares("g", "isthmus-admin"),
        "sysusers.d must create group isthmus-admin"
    );
    let u = sysusers
        .iter()
        .find(|f| f[0] == "u" && f[1] == user)
        .expect("user line");
    // A system user without a login shell: home "-" or "/", shell "-" or nologin.
    if let Some(shell) = u.last().filter(|_| u.len() >= 6) {
        assert!(
            shell == "-" || shell.ends_with("nologin"),
            "no login shell: {u:?}"
        );
    }

    // tmpfiles.d: type path mode user group ...
    let tmpfiles: Vec<Vec<String>> = read("isthmus.tmpfiles.conf")
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| l.split_whitespace().map(str::to_string).collect())
        .collect();
    let find = |kind: &str, path: &str| {
        tmpfiles
            .iter()
            .find(|f| f[0] == kind && f[1] == path)
            .cloned()
    };

    // Every ReadWritePaths= without "-" must exist before start, or the unit fails (226/NAMESPACE).
    for path in words(&unit, "ReadWritePaths") {
        if path.starts_with('-') {
            continue;
        }
        assert!(
            find("d", &path).is_some(),
            "tmpfiles.d must create {path} (ReadWritePaths=)"
        );
    }

    // /run/wireguard: the service user must be able to create sockets in it.
    let wg = find("d", "/run/wireguard").expect("d /run/wireguard");
    let wg_mode = u32::from_str_radix(&wg[2], 8).expect("octal mode");
    let writable = (wg[3] == user && wg_mode & 0o200 != 0)
        || (wg[4] == group && wg_mode & 0o020 != 0)
        || tmpfiles.iter().any(|f| {
            f[0].starts_with('a')
                && f[1] == "/run/wireguard"
                && f.get(6).is_some_and(|acl| {
                    acl.contains(&format!("u:{user}:rwx")) && acl.contains("m::rwx")
                })
        });
    assert!(
        writable,
        "user {user} cannot create sockets in /run/wireguard: {wg:?}"
    );

    // /etc/isthmus: agentd (user/group isthmus) reads agentd.toml from it.
    let etc = find("d", "/etc/isthmus").expect("d /etc/isthmus");
    let etc_mode = u32::from_str_radix(&etc[2], 8).expect("octal mode");
    assert!(
        (etc[3] == user && etc_mode & 0o500 == 0o500)
            || (etc[4] == group && etc_mode & 0o050 == 0o050),
        "agentd must be able to read /etc/isthmus: {etc:?}"
    );
    assert_eq!(
        etc_mode & 0o007,
        0,
        "/etc/isthmus is not for everyone: {etc:?}"
    );
    assert_eq!(
        etc_mode & 0o022,
        0,
        "/etc/isthmus must not be writable by agentd: {etc:?}"
    );

    // Credential sources stay root-only.
    for cred in values(&unit, "Service", "LoadCredential") {
        let source = cred.split_once(':').map(|(_, s)| s).unwrap_or(cred);
        if let Some(line) = find("z", source) {
            assert_eq!(
                &line[2..5],
                ["0600", "root", "root"],
                "{source} must be root-only"
            );
        }
    }

    let state = find("d", "/var/lib/isthmus").expect("d /var/lib/isthmus");
    assert_eq!(
        &state[3..5],
        [user, group],
        "/var/lib/isthmus belongs to the service user"
    );
}

#[test]
fn unit_parser_handles_systemd_syntax() {
    let unit = parse_unit(
        "# c\n[Service]\nA=1\nA=2 \\\n  3\n; c\nB=x\nB=\nB=y\n[Install]\nWantedBy=multi-user.target\n",
    );
    let a: Vec<Vec<&str>> = values(&unit, "Service", "A")
        .iter()
        .map(|v| v.split_whitespace().collect())
        .collect();
    assert_eq!(a, [vec!["1"], vec!["2", "3"]]);
    assert_eq!(values(&unit, "Service", "B"), ["y"]);
    assert_eq!(values(&unit, "Install", "WantedBy"), ["multi-user.target"]);
    assert_eq!(
        command("+/usr/bin/netctl reload"),
        ["/usr/bin/netctl", "reload"]
    );
}
