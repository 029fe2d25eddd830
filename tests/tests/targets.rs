//! Target probes against a namespace's own network, as an operator sees them through
//! `netctl --json probes`: a black-holed destination times out at the probe's timeout, one
//! without a route is unreachable, an unknown name fails to resolve, and an echo to loopback
//! (from the default and from a chosen source address) passes.
//!
//! The namespace routes 192.0.2.0/24 to a veth neighbour that does not exist, with a fixed MAC so
//! that not even ARP answers (packets leave and vanish), and makes 198.51.100.0/24 unreachable.
//! Nothing leaves it: its resolver's queries cannot either.

use std::time::{Duration, Instant};

use isthmus_tests::{netctl, Agentd, Fixture, Netns};

/// A namespace with the black hole and the unreachable range described above.
fn black_hole_namespace() -> Netns {
    let ns = Netns::new("tg");
    let ip = |args: &[&str]| {
        let out = ns.command("ip").args(args).output().expect("running ip");
        assert!(
            out.status.success(),
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
    };
    ip(&["link", "add", "bh0", "type", "veth", "peer", "name", "bh1"]);
    ip(&["link", "set", "bh0", "up"]);
    ip(&["link", "set", "bh1", "up"]);
    ip(&["addr", "add", "10.99.0.1/24", "dev", "bh0"]);
    ip(&[
        "neigh",
        "add",
        "10.99.0.2",
        "lladdr",
        "02:00:00:00:00:02",
        "dev",
        "bh0",
        "nud",
        "permanent",
    ]);
    ip(&["route", "add", "192.0.2.0/24", "via", "10.99.0.2"]);
    ip(&["route", "add", "unreachable", "198.51.100.0/24"]);
    ns
}

/// Sets `key = value` on the `[[probe]]` named `name`.
fn set_probe_field(fx: &Fixture, name: &str, key: &str, value: toml::Value) {
    let path = fx.config_path();
    let mut doc: toml::Table = std::fs::read_to_string(path).unwrap().parse().unwrap();
    let probe = doc["probe"]
        .as_array_mut()
        .unwrap()
        .iter_mut()
        .map(|p| p.as_table_mut().unwrap())
        .find(|p| p["name"].as_str() == Some(name))
        .unwrap_or_else(|| panic!("no probe {name}"));
    probe.insert(key.into(), value);
    fx.write_config(&toml::to_string(&doc).unwrap());
}

/// `netctl --json probes` once every probe has run at least once, as a map name → entry.
fn probes_after_a_run(fx: &Fixture, names: &[&str]) -> serde_json::Map<String, serde_json::Value> {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let list = netctl(&fx.socket(), &["--json", "probes"]).json();
        let by_name: serde_json::Map<String, serde_json::Value> = list
            .as_array()
            .unwrap()
            .iter()
            .map(|p| (p["name"].as_str().unwrap().to_owned(), p.clone()))
            .collect();
        let ran = names
            .iter()
            .all(|n| by_name.get(*n).is_some_and(|p| !p["last_reason"].is_null()));
        if ran {
            return by_name;
        }
        assert!(Instant::now() < deadline, "not every probe ran: {list:#}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn black_holes_time_out_missing_routes_are_unreachable_unknown_names_do_not_resolve() {
    let ns = black_hole_namespace();
    // No links, no routes: only the target checks.
    let fx = Fixture::new("[agent]\nname = \"targets\"\n");
    let expected = [
        ("tcp-black-hole", "tcp", "192.0.2.1:1522", "timeout"),
        ("tcp-no-route", "tcp", "198.51.100.1:1522", "unreachable"),
        (
            "tcp-unknown-name",
            "tcp",
            "no-such-host.invalid:1522",
            "resolve",
        ),
        ("icmp-black-hole", "icmp", "192.0.2.1", "timeout"),
        ("icmp-no-route", "icmp", "198.51.100.1", "unreachable"),
        ("icmp-loopback", "icmp", "127.0.0.1", "ok"),
        ("icmp-loopback-from", "icmp", "127.0.0.1", "ok"),
    ];
    let probes: Vec<(&str, &str, &str)> = expected
        .iter()
        .map(|(name, kind, target, _)| (*name, *kind, *target))
        .collect();
    fx.set_probes(&probes, "1s", "300ms");
    set_probe_field(&fx, "icmp-loopback-from", "source", "127.0.0.3".into());
    // The resolver gives up on its own; leave it time to say so before the probe's timeout.
    set_probe_field(&fx, "tcp-unknown-name", "timeout", "900ms".into());
    let _agentd = Agentd::start(&fx, &ns);

    let names: Vec<&str> = expected.iter().map(|e| e.0).collect();
    let got = probes_after_a_run(&fx, &names);
    for (name, _, _, reason) in expected {
        assert_eq!(got[name]["last_reason"], reason, "{name}: {:#}", got[name]);
        if reason == "timeout" {
            // At the probe's timeout: not before it, and not much after.
            let ms = got[name]["last_duration_ms"].as_f64().unwrap();
            assert!((300.0..1000.0).contains(&ms), "{name}: {ms} ms");
        }
    }
}
