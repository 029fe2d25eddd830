//! Encrypted links end to end: two agentd, two links each over two veth paths, real traffic.

use std::process::Command;
use std::time::Duration;

use isthmus_tests::topology::{transfer, TwoClouds, PATHS};
use isthmus_tests::{bin, netctl, Agentd};

const LINKS: [&str; 2] = ["interconnect", "internet"];
const UP: Duration = Duration::from_secs(15);

fn interface_exists(ns: &isthmus_tests::Netns, name: &str) -> bool {
    Command::new("ip")
        .args(["-n", ns.name(), "link", "show", name])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

#[test]
fn both_links_handshake_and_carry_ping_and_50_mb_with_matching_checksums() {
    let clouds = TwoClouds::new("tb");
    let _aws = Agentd::start(&clouds.aws.fx, &clouds.aws.ns);
    let _oci = Agentd::start(&clouds.oci.fx, &clouds.oci.ns);
    clouds.aws.wait_links_up(&LINKS, UP);
    clouds.oci.wait_links_up(&LINKS, UP);

    for (i, path) in PATHS.iter().enumerate() {
        // The interface exists with the configured MTU and address.
        let show = Command::new("ip")
            .args([
                "-n",
                clouds.aws.ns.name(),
                "addr",
                "show",
                &clouds.interface(i),
            ])
            .output()
            .unwrap();
        let show = String::from_utf8_lossy(&show.stdout);
        assert!(show.contains("mtu 1420"), "{show}");
        assert!(show.contains(&format!("{}/31", path.inner[0])), "{show}");

        assert!(
            clouds.aws.ping(path.inner[1], 3),
            "ping over {} failed",
            path.link
        );
        assert!(
            clouds.oci.ping(path.inner[0], 3),
            "ping back over {} failed",
            path.link
        );

        let to = format!("{}:5001", path.inner[1]).parse().unwrap();
        let (sent, received) = transfer(&clouds.aws.ns, &clouds.oci.ns, to, 50 << 20);
        assert_eq!(sent, received, "50 MB over {} arrived changed", path.link);
        assert!(sent.starts_with(&format!("{} ", 50u64 << 20)), "{sent}");

        let link = clouds.oci.link(path.link);
        assert!(link["rx_bytes"].as_u64().unwrap() >= 50 << 20, "{link:#}");
        assert_eq!(
            link["endpoint"],
            format!("{}:{}", path.underlay[0], path.port)
        );
        assert!(
            link["last_handshake_seconds_ago"].as_u64().unwrap() < 60,
            "{link:#}"
        );
    }
    let human = netctl(&clouds.aws.fx.socket(), &["links"]);
    assert_eq!(human.code, 0);
    assert!(
        human.stdout.contains("interconnect") && human.stdout.contains(" up "),
        "{}",
        human.stdout
    );
}

#[test]
fn reload_adds_and_removes_links_keeps_unchanged_sessions_and_rekeys_in_place() {
    let clouds = TwoClouds::new("tr");
    let mut aws = Agentd::start(&clouds.aws.fx, &clouds.aws.ns);
    let _oci = Agentd::start(&clouds.oci.fx, &clouds.oci.ns);
    clouds.aws.wait_links_up(&LINKS, UP);
    let before = clouds.aws.link("interconnect");
    let aws_config = std::fs::read_to_string(clouds.aws.fx.config_path()).unwrap();

    // Remove the internet link: its interface goes, the interconnect keeps its session.
    let mut doc: toml::Table = aws_config.parse().unwrap();
    doc["link"]
        .as_array_mut()
        .unwrap()
        .retain(|l| l["name"].as_str() != Some("internet"));
    // The route group must not name the removed link.
    doc["route_group"][0].as_table_mut().unwrap().insert(
        "links".into(),
        toml::Value::Array(vec!["interconnect".into()]),
    );
    clouds.aws.fx.write_config(&toml::to_string(&doc).unwrap());
    let out = netctl(&clouds.aws.fx.socket(), &["reload"]);
    assert_eq!(out.code, 0, "{out:?}");
    assert!(out.stdout.contains("link internet: stopped"), "{out:?}");
    assert!(!interface_exists(&clouds.aws.ns, &clouds.interface(1)));
    assert!(interface_exists(&clouds.aws.ns, &clouds.interface(0)));
    let after = clouds.aws.link("interconnect");
    assert_eq!(
        after["handshake_attempts"], before["handshake_attempts"],
        "unchanged link re-handshook"
    );
    assert!(clouds.aws.ping(PATHS[0].inner[1], 2));

    // Add it back: it comes up again.
    clouds.aws.fx.write_config(&aws_config);
    let out = netctl(&clouds.aws.fx.socket(), &["reload"]);
    assert!(out.stdout.contains("link internet: added"), "{out:?}");
    clouds.aws.wait_links_up(&LINKS, UP);
    assert!(clouds.aws.ping(PATHS[1].inner[1], 2));

    // Rotate both gateways' keys: both re-handshake in place, same processes.
    let pid = aws.pid();
    let (new_aws, new_oci) = (
        isthmus_tests::topology::keypair(),
        isthmus_tests::topology::keypair(),
    );
    let handshakes_before = clouds.aws.link("interconnect")["handshake_attempts"]
        .as_u64()
        .unwrap();
    clouds
        .aws
        .fx
        .write_key_text("private.key", &new_aws.private);
    clouds
        .oci
        .fx
        .write_key_text("private.key", &new_oci.private);
    let aws_text = aws_config.replace(&clouds.oci.key.public, &new_oci.public);
    let oci_text = std::fs::read_to_string(clouds.oci.fx.config_path())
        .unwrap()
        .replace(&clouds.aws.key.public, &new_aws.public);
    clouds.aws.fx.write_config(&aws_text);
    clouds.oci.fx.write_config(&oci_text);
    for side in [&clouds.aws, &clouds.oci] {
        let out = netctl(&side.fx.socket(), &["reload"]);
        assert!(
            out.stdout.contains("keys changed, re-handshaking"),
            "{out:?}"
        );
    }
    clouds.aws.wait_links_up(&LINKS, UP);
    assert!(
        clouds.aws.ping(PATHS[0].inner[1], 2),
        "no traffic after the key rotation"
    );
    let link = clouds.aws.link("interconnect");
    assert!(
        link["handshake_attempts"].as_u64().unwrap() > handshakes_before,
        "{link:#}"
    );
    assert!(aws.is_running());
    assert_eq!(aws.pid(), pid);

    // Shutdown removes the interfaces.
    aws.signal(nix::sys::signal::Signal::SIGTERM);
    assert_eq!(aws.wait_exit(Duration::from_secs(10)).code(), Some(0));
    assert!(!interface_exists(&clouds.aws.ns, &clouds.interface(0)));
    assert!(!interface_exists(&clouds.aws.ns, &clouds.interface(1)));
}

#[test]
fn tunnel_packets_never_loop_into_the_tunnel_even_when_the_peer_underlay_is_routed_into_it() {
    let clouds = TwoClouds::new("tl");
    let _aws = Agentd::start(&clouds.aws.fx, &clouds.aws.ns);
    let _oci = Agentd::start(&clouds.oci.fx, &clouds.oci.ns);
    clouds.aws.wait_links_up(&LINKS, UP);
    // A more specific route that sends the peer's interconnect address into the tunnel, as a
    // remote CIDR that contains private interconnect addresses would.
    let peer = format!("{}/32", PATHS[0].underlay[1]);
    let status = Command::new("ip")
        .args([
            "-n",
            clouds.aws.ns.name(),
            "route",
            "add",
            &peer,
            "dev",
            &clouds.interface(0),
        ])
        .status()
        .unwrap();
    assert!(status.success());
    let before = clouds.aws.link("interconnect");
    // Traffic still flows, because agentd's UDP socket is bound to the underlay interface.
    let to = format!("{}:5002", PATHS[0].inner[1]).parse().unwrap();
    let (sent, received) = transfer(&clouds.aws.ns, &clouds.oci.ns, to, 5 << 20);
    assert_eq!(sent, received);
    let after = clouds.aws.link("interconnect");
    assert!(after["tx_packets"].as_u64() > before["tx_packets"].as_u64());
    assert_eq!(
        after["drops"]["no_route"], before["drops"]["no_route"],
        "{after:#}"
    );
}

#[test]
fn hostile_datagrams_are_dropped_and_counted_while_a_transfer_completes() {
    let clouds = TwoClouds::new("tf");
    let mut aws = Agentd::start(&clouds.aws.fx, &clouds.aws.ns);
    let _oci = Agentd::start(&clouds.oci.fx, &clouds.oci.ns);
    clouds.aws.wait_links_up(&LINKS, UP);
    let target = format!("{}:{}", PATHS[0].underlay[0], PATHS[0].port);

    // 100k datagrams from the other gateway's namespace at aws's interconnect port, while 20 MB
    // cross that link.
    let fuzzer = clouds
        .oci
        .ns
        .command(bin("xfer"))
        .args(["fuzz", &target, "100000", "42", &clouds.aws.key.public])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let to = format!("{}:5003", PATHS[0].inner[1]).parse().unwrap();
    let start = std::time::Instant::now();
    let (sent, received) = transfer(&clouds.aws.ns, &clouds.oci.ns, to, 20 << 20);
    assert_eq!(sent, received, "the transfer under fire arrived changed");
    // Generous: it takes seconds. A stall until the next rekey (2 minutes) means the fuzzer
    // moved the peer's endpoint.
    assert!(
        start.elapsed() < Duration::from_secs(60),
        "transfer stalled: {:?}",
        start.elapsed()
    );
    let fuzz = fuzzer.wait_with_output().unwrap();
    assert!(fuzz.status.success());
    assert_eq!(String::from_utf8_lossy(&fuzz.stdout).trim(), "100000");

    let link = clouds.aws.link("interconnect");
    let drops = &link["drops"];
    let total: u64 = drops
        .as_object()
        .unwrap()
        .values()
        .map(|v| v.as_u64().unwrap())
        .sum();
    assert!(
        total > 10_000,
        "hostile datagrams were not counted: {link:#}"
    );
    for reason in ["malformed", "unknown_peer", "too_big"] {
        assert!(
            drops[reason].as_u64().unwrap() > 0,
            "no {reason} drops: {link:#}"
        );
    }
    // Forged cookie exchanges and replays did not move the peer's endpoint (a hijacked
    // endpoint would stall the transfer until the next rekey, minutes later).
    assert_eq!(
        link["endpoint"],
        format!("{}:{}", PATHS[0].underlay[1], PATHS[0].port)
    );
    // Still serving, still carrying traffic.
    assert!(aws.is_running());
    assert_eq!(netctl(&clouds.aws.fx.socket(), &["status"]).code, 0);
    assert!(clouds.aws.ping(PATHS[0].inner[1], 2));
}

#[test]
fn wg_show_reads_agentd_interfaces_with_peer_endpoint_handshake_and_transfer() {
    let clouds = TwoClouds::new("tw");
    // `wg` looks in the compiled-in /var/run/wireguard; the interface names are unique.
    clouds
        .aws
        .fx
        .set("agent", "uapi_dir", "/var/run/wireguard".into());
    let mut aws = Agentd::start(&clouds.aws.fx, &clouds.aws.ns);
    let _oci = Agentd::start(&clouds.oci.fx, &clouds.oci.ns);
    clouds.aws.wait_links_up(&LINKS, UP);
    assert!(clouds.aws.ping(PATHS[0].inner[1], 2));
    let iface = clouds.interface(0);
    let sock = format!("/var/run/wireguard/{iface}.sock");
    let mode =
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&sock).unwrap().permissions());
    assert_eq!(
        mode & 0o777,
        0o600,
        "the UAPI socket hands out the private key"
    );

    let out = Command::new("wg")
        .args(["show", &iface])
        .output()
        .expect("wg (wireguard-tools)");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains(&format!("peer: {}", clouds.oci.key.public)),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "endpoint: {}:{}",
            PATHS[0].underlay[1], PATHS[0].port
        )),
        "{text}"
    );
    // `wg` says "Now" under a second, "N seconds ago" after.
    assert!(
        text.contains("latest handshake: Now") || text.contains("second"),
        "{text}"
    );
    assert!(
        !text.contains("years"),
        "handshake reported as an age: {text}"
    );
    assert!(
        text.contains("transfer:") && text.contains("received"),
        "{text}"
    );
    assert!(
        text.contains(&format!("allowed ips: {}/32", PATHS[0].inner[1])),
        "{text}"
    );

    // The handshake time is the same instant agentd reports as an age.
    let stamps = Command::new("wg")
        .args(["show", &iface, "latest-handshakes"])
        .output()
        .unwrap();
    let stamp: u64 = String::from_utf8_lossy(&stamps.stdout)
        .split_whitespace()
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let age = clouds.aws.link("interconnect")["last_handshake_seconds_ago"]
        .as_u64()
        .unwrap();
    assert!(
        now.abs_diff(stamp).abs_diff(age) <= 2,
        "wg says {stamp}, agentd says {age} s ago"
    );

    // Stopping agentd removes its UAPI sockets.
    aws.signal(nix::sys::signal::Signal::SIGTERM);
    aws.wait_exit(Duration::from_secs(10));
    assert!(!std::path::Path::new(&sock).exists());
}

#[test]
fn a_hostname_endpoint_is_resolved_and_looked_up_again_while_the_link_is_down() {
    let clouds = TwoClouds::new("th");
    // The AWS side knows its peer by name; the name first points nowhere.
    clouds
        .aws
        .ns
        .set_hosts("127.0.0.1 localhost\n192.0.2.99 oci-gw.example.test\n");
    let mut doc: toml::Table = std::fs::read_to_string(clouds.aws.fx.config_path())
        .unwrap()
        .parse()
        .unwrap();
    doc.remove("route_group");
    doc["link"]
        .as_array_mut()
        .unwrap()
        .retain(|l| l["name"].as_str() == Some("interconnect"));
    doc["link"][0].as_table_mut().unwrap().insert(
        "peer_endpoint".into(),
        format!("oci-gw.example.test:{}", PATHS[0].port).into(),
    );
    clouds.aws.fx.write_config(&toml::to_string(&doc).unwrap());
    // Only the AWS side may initiate: the OCI side's endpoint for it is a black hole too.
    let mut oci_doc: toml::Table = std::fs::read_to_string(clouds.oci.fx.config_path())
        .unwrap()
        .parse()
        .unwrap();
    oci_doc["link"][0]
        .as_table_mut()
        .unwrap()
        .insert("peer_endpoint".into(), "192.0.2.77:9".into());
    clouds
        .oci
        .fx
        .write_config(&toml::to_string(&oci_doc).unwrap());
    let _aws = Agentd::start(&clouds.aws.fx, &clouds.aws.ns);
    let _oci = Agentd::start(&clouds.oci.fx, &clouds.oci.ns);

    std::thread::sleep(Duration::from_secs(2));
    let link = clouds.aws.link("interconnect");
    assert_eq!(link["state"], "handshaking", "{link:#}");
    assert_eq!(
        link["endpoint"],
        format!("192.0.2.99:{}", PATHS[0].port),
        "{link:#}"
    );

    // The name moves to the real gateway: agentd looks it up again and comes up.
    clouds
        .aws
        .ns
        .set_hosts("127.0.0.1 localhost\n192.0.2.2 oci-gw.example.test\n");
    let link = clouds
        .aws
        .wait_links_up(&["interconnect"], Duration::from_secs(30));
    assert_eq!(
        link[0]["endpoint"],
        format!("{}:{}", PATHS[0].underlay[1], PATHS[0].port)
    );
    assert_eq!(
        link[0]["peer_endpoint"],
        format!("oci-gw.example.test:{}", PATHS[0].port)
    );
    assert!(clouds.aws.ping(PATHS[0].inner[1], 2));
}
