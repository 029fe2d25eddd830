//! Failover end to end beyond the failure scenarios (those are in `scenarios.rs`): a drain,
//! forged probes, target checks behind the tunnels. Two gateways with apps behind them; the
//! tests run one at a time (timing) and never beside bulk transfers (own test binary).

use std::process::Command;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use isthmus_tests::topology::{TwoClouds, VPCS};
use isthmus_tests::{netctl, Agentd, Pinger};

static SERIAL: Mutex<()> = Mutex::new(());
const UP: Duration = Duration::from_secs(15);

fn start(tag: &str) -> (TwoClouds, Agentd, Agentd) {
    let clouds = TwoClouds::new(tag).with_apps();
    let (aws, oci) = clouds.start_agents();
    (clouds, aws, oci)
}

#[test]
fn a_drain_moves_both_gateways_off_the_link_and_back() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let (clouds, _aws, _oci) = start("fd");
    let pinger = Pinger::start(clouds.aws_app(), VPCS[1].2, 300);
    std::thread::sleep(Duration::from_millis(500));
    let out = netctl(&clouds.aws.fx.socket(), &["drain", "interconnect"]);
    assert_eq!(out.code, 0, "{out:?}");
    clouds
        .aws
        .wait_active("remote", "internet", Duration::from_secs(2));
    clouds
        .oci
        .wait_active("remote", "internet", Duration::from_secs(3));
    let links = netctl(&clouds.aws.fx.socket(), &["links"]);
    assert!(links.stdout.contains("DRAINED"), "{}", links.stdout);
    assert_eq!(
        netctl(&clouds.aws.fx.socket(), &["undrain", "interconnect"]).code,
        0
    );
    clouds
        .aws
        .wait_active("remote", "interconnect", Duration::from_secs(10));
    let ping = pinger.finish();
    let (sent, received) = (ping.sent, ping.received);
    println!(
        "drain and undrain under a 10 ms ping: {} of {sent} lost",
        sent - received
    );
    assert!(
        sent - received <= 5,
        "{} of {sent} pings lost around a drain",
        sent - received
    );
    let _ = Command::new("true").status();
}

#[test]
fn forged_and_malformed_probes_are_dropped_and_counted_and_the_link_stays_up() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let (clouds, _aws, _oci) = start("fp");
    let target = "/dev/udp/10.255.0.0/51899";
    // From the database host behind the peer: inside the tunnel, but not the peer's address.
    let db = clouds
        .oci_app()
        .command("bash")
        .args([
            "-c",
            &format!("for i in 1 2 3 4 5; do echo hello > {target}; done"),
        ])
        .status()
        .unwrap();
    assert!(db.success());
    // From the peer gateway's own tunnel address: garbage, and a well-formed probe with a bad MAC.
    let fake = "ISTH\\x01\\x01\\x00\\x01".to_owned() + &"\\x00".repeat(56);
    let gw = clouds
        .oci
        .ns
        .command("bash")
        .args([
            "-c",
            &format!("for i in 1 2 3; do echo junk > {target}; printf '{fake}' > {target}; done"),
        ])
        .status()
        .unwrap();
    assert!(gw.success());
    std::thread::sleep(Duration::from_millis(300));
    let link = clouds.aws.link("interconnect");
    let drops = &link["probe_drops"];
    assert!(drops["forged"].as_u64().unwrap_or(0) >= 8, "{link:#}");
    assert!(drops["malformed"].as_u64().unwrap_or(0) >= 3, "{link:#}");
    assert_eq!(link["health"], "up");
    assert_eq!(netctl(&clouds.aws.fx.socket(), &["status"]).code, 0);
    let human = netctl(&clouds.aws.fx.socket(), &["links"]);
    assert!(human.stdout.contains("forged="), "{}", human.stdout);
}

#[test]
fn target_probes_check_services_behind_the_tunnel_and_report_changes() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let clouds = TwoClouds::new("ft").with_apps();
    let listener = format!("{}:1522", VPCS[1].2);
    clouds.aws.fx.set_probes(
        &[
            ("db-ping", "icmp", VPCS[1].2),
            ("db-listener", "tcp", &listener),
        ],
        "200ms",
        "150ms",
    );
    let _aws = Agentd::start(&clouds.aws.fx, &clouds.aws.ns);
    let _oci = Agentd::start(&clouds.oci.fx, &clouds.oci.ns);
    clouds.aws.wait_active("remote", "interconnect", UP);
    clouds.oci.wait_active("remote", "interconnect", UP);
    let deadline = Instant::now() + Duration::from_secs(10);
    let probes = loop {
        let p = netctl(&clouds.aws.fx.socket(), &["--json", "probes"]).json();
        let states: Vec<&str> = p
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x["state"].as_str().unwrap())
            .collect();
        if states == ["ok", "failing"] {
            break p;
        }
        assert!(Instant::now() < deadline, "{p:#}");
        std::thread::sleep(Duration::from_millis(100));
    };
    // Nothing listens on the database's 1522: refused through the tunnel, not a timeout.
    assert_eq!(probes[1]["last_reason"], "refused", "{probes:#}");
    let human = netctl(&clouds.aws.fx.socket(), &["probes"]);
    assert!(
        human.stdout.contains("db-ping") && human.stdout.contains("FAILING"),
        "{}",
        human.stdout
    );
    assert!(clouds
        .aws
        .events()
        .iter()
        .any(|e| e["kind"] == "probe_changed"));
}

/// A probe that a route group checks runs over each link of the group, bound to the link's
/// tunnel: `netctl probes` shows a row per link. When the OCI side drops the check's packets
/// arriving over the internet tunnel only (a security list that admits just the interconnect),
/// that row alone turns failing, with an event; the peer probes still choose the link.
#[test]
fn a_checked_probe_runs_over_each_link_and_shows_a_path_that_cannot_reach_the_service() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let clouds = TwoClouds::new("fk").with_apps();
    clouds
        .aws
        .fx
        .set_probes(&[("db-ping", "icmp", VPCS[1].2)], "200ms", "150ms");
    let mut doc: toml::Table = std::fs::read_to_string(clouds.aws.fx.config_path())
        .unwrap()
        .parse()
        .unwrap();
    doc["route_group"].as_array_mut().unwrap()[0]
        .as_table_mut()
        .unwrap()
        .insert("checks".into(), toml::Value::Array(vec!["db-ping".into()]));
    clouds.aws.fx.write_config(&toml::to_string(&doc).unwrap());
    let (_aws, _oci) = clouds.start_agents();

    let rows = || -> Vec<(String, String)> {
        netctl(&clouds.aws.fx.socket(), &["--json", "probes"])
            .json()
            .as_array()
            .unwrap()
            .iter()
            .map(|p| {
                (
                    p["link"].as_str().unwrap_or("routes").to_owned(),
                    p["state"].as_str().unwrap().to_owned(),
                )
            })
            .collect()
    };
    let wait_rows = |want: [(&str, &str); 2]| {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let got = rows();
            if got
                .iter()
                .map(|(l, s)| (l.as_str(), s.as_str()))
                .eq(want.iter().copied())
            {
                return;
            }
            assert!(Instant::now() < deadline, "probes {got:?}, want {want:?}");
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    wait_rows([("interconnect", "ok"), ("internet", "ok")]);

    let internet_tunnel = clouds.interface(1);
    clouds.oci.nft(&format!(
        "table inet chk {{\n  chain forward_icmp {{\n    type filter hook forward priority 0;\n    \
         iifname \"{internet_tunnel}\" meta l4proto icmp drop\n  }}\n}}\n"
    ));
    wait_rows([("interconnect", "ok"), ("internet", "failing")]);
    let events = clouds.aws.events();
    assert!(
        events.iter().any(|e| e["kind"] == "probe_changed"
            && e["link"] == "internet"
            && e["to"] == "failing"),
        "{events:#?}"
    );
    let table = netctl(&clouds.aws.fx.socket(), &["probes"]).stdout;
    assert!(table.contains("VIA"), "{table}");
    // Reported, not acted on: the interconnect still carries the group.
    clouds
        .aws
        .wait_active("remote", "interconnect", Duration::from_secs(1));
}
