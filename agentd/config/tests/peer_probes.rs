//! What the peer probes take from the config: each link's peer address (derived from a
//! point-to-point network or given), the probe port and the loss threshold.

mod common;

use std::net::IpAddr;

use isthmus_config::{parse_str, Config, LoadOptions, DEFAULT_LOSS_DEGRADED, DEFAULT_PROBE_PORT};

/// A config with one link "ic"; `extra` is appended to the link.
fn load(allowed_ips: &str, addresses: &str, extra: &str) -> Config {
    let (dir, _) = common::key_dir();
    let text = format!(
        r#"[agent]
name = "gw"
[[link]]
name = "ic"
interface = "isth-ic"
private_key_file = "good.key"
listen = "192.0.2.1:51820"
peer_public_key = "sTW6GPMPj3UsueeSgjVcAqH7BCh92Kd0K7aReWmVlEA="
peer_endpoint = "192.0.2.2:51820"
allowed_ips = {allowed_ips}
addresses = {addresses}
{extra}"#
    );
    parse_str(
        &text,
        &dir.path().join("agentd.toml"),
        &LoadOptions::default(),
    )
    .unwrap_or_else(|r| panic!("{r}"))
    .config
}

fn ip(text: &str) -> IpAddr {
    text.parse().expect("an IP address")
}

#[test]
fn the_peer_address_is_derived_from_a_point_to_point_network() {
    let cases = [
        // (this end, the peer's /32 or /128 in allowed_ips, the derived peer address)
        ("10.255.0.0/31", "10.255.0.1/32", "10.255.0.1"),
        ("10.255.0.1/31", "10.255.0.0/32", "10.255.0.0"),
        ("10.255.0.1/30", "10.255.0.2/32", "10.255.0.2"),
        ("10.255.0.2/30", "10.255.0.1/32", "10.255.0.1"),
        ("fd00:255::/127", "fd00:255::1/128", "fd00:255::1"),
        ("fd00:255::1/127", "fd00:255::/128", "fd00:255::"),
        ("fd00:255::1/126", "fd00:255::2/128", "fd00:255::2"),
    ];
    for (own, peer_net, peer) in cases {
        let config = load(
            &format!(r#"["10.2.0.0/16", "{peer_net}"]"#),
            &format!(r#"["{own}"]"#),
            "",
        );
        assert_eq!(config.links[0].peer_address, ip(peer), "{own}");
    }
}

#[test]
fn only_the_first_address_is_used_to_derive_the_peer_address() {
    let config = load(
        r#"["10.2.0.0/16", "10.255.0.1/32"]"#,
        r#"["10.255.0.0/31", "fd00:255::/127"]"#,
        "",
    );
    assert_eq!(config.links[0].peer_address, ip("10.255.0.1"));
}

#[test]
fn an_explicit_peer_address_wins() {
    // Derivable (the /31's other address would be 10.255.0.1), but given otherwise.
    let config = load(
        r#"["10.2.0.0/16", "10.255.0.0/24"]"#,
        r#"["10.255.0.0/31", "10.255.0.10/24"]"#,
        "peer_address = \"10.255.0.20\"\n",
    );
    assert_eq!(config.links[0].peer_address, ip("10.255.0.20"));
    // Not derivable: a /24 and a /64.
    let config = load(
        r#"["10.2.0.0/16", "10.255.0.2/32"]"#,
        r#"["10.255.0.1/24"]"#,
        "peer_address = \"10.255.0.2\"\n",
    );
    assert_eq!(config.links[0].peer_address, ip("10.255.0.2"));
    let config = load(
        r#"["10.2.0.0/16", "fd00:255::/64"]"#,
        r#"["fd00:255::1/64"]"#,
        "peer_address = \"fd00:255::2\"\n",
    );
    assert_eq!(config.links[0].peer_address, ip("fd00:255::2"));
}

#[test]
fn probe_port_and_loss_threshold_have_defaults_and_can_be_set() {
    let defaults = load(
        r#"["10.2.0.0/16", "10.255.0.1/32"]"#,
        r#"["10.255.0.0/31"]"#,
        "",
    );
    assert_eq!(defaults.health.probe_port, 51899);
    assert_eq!(DEFAULT_PROBE_PORT, 51899);
    assert_eq!(defaults.health.loss_degraded, 0.2);
    assert_eq!(DEFAULT_LOSS_DEGRADED, 0.2);

    let (dir, _) = common::key_dir();
    let text = "[agent]\nname = \"gw\"\n[health]\nprobe_port = 4789\nloss_degraded = 0.3\n";
    let config = parse_str(
        text,
        &dir.path().join("agentd.toml"),
        &LoadOptions::default(),
    )
    .unwrap_or_else(|r| panic!("{r}"))
    .config;
    assert_eq!(config.health.probe_port, 4789);
    assert_eq!(config.health.loss_degraded, 0.3);
}

/// The default threshold is about round-trip loss: 5% each way must not degrade a link, 30%
/// sustained loss (round trip, or each way) must.
#[test]
fn the_default_loss_threshold_separates_internet_noise_from_a_broken_path() {
    let round_trip = |one_way: f64| 1.0 - (1.0 - one_way) * (1.0 - one_way);
    let noise = round_trip(0.05);
    assert!((noise - 0.0975).abs() < 1e-9, "{noise}");
    assert!(noise < DEFAULT_LOSS_DEGRADED);
    for broken in [0.3, round_trip(0.3)] {
        assert!(broken > DEFAULT_LOSS_DEGRADED, "{broken}");
    }
}
