//! The path-MTU test bed (tests/tests/mtu.rs, the `mtu-bench` benchmark): the two-cloud bed
//! with the MTUs of real clouds:
//!
//! ```text
//!  aws-app 9000 ── aws-gw ══ interconnect veth 9000 ══ oci-gw ── 9000 oci-db
//!                         ══ internet veth 1500     ══
//! ```
//!
//! ICMP is dropped on both gateways, for forwarded traffic and on the underlay (as security
//! groups, security lists and NATs do), so nothing here works by path-MTU discovery: the
//! probes find each path, the clamp sizes new connections, and re-segmentation carries the
//! large packets of old ones.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::topology::{ip, Side, TwoClouds, VPCS};
use crate::Netns;

pub const JUMBO: u32 = 9000;
pub use crate::transfer::Xfer;

pub const MB50: u64 = 50 << 20;
/// A paced transfer's rate: 50 MB in about 2 s, long enough to change the path under it.
pub const PACE: u64 = 25 << 20;

/// The bed: jumbo interconnect and hosts, a 1500-byte internet path, ICMP dropped on the
/// gateways; `auto` links measure their path, the others keep the default 1420.
pub fn bed(tag: &str, auto: &[&str]) -> TwoClouds {
    let clouds = TwoClouds::new(tag).with_apps();
    for (i, side) in [&clouds.aws, &clouds.oci].into_iter().enumerate() {
        let [interconnect, _internet] = clouds.underlay_interfaces(i);
        set_mtu(&side.ns, &interconnect, JUMBO);
        set_mtu(&side.ns, &format!("{}g{i}", clouds.prefix), JUMBO);
        let app = if i == 0 {
            clouds.aws_app()
        } else {
            clouds.oci_app()
        };
        set_mtu(app, &format!("{}p{i}", clouds.prefix), JUMBO);
        side.nft(SECURITY_GROUP);
        let mut doc: toml::Table = std::fs::read_to_string(side.fx.config_path())
            .unwrap()
            .parse()
            .unwrap();
        for link in doc["link"].as_array_mut().unwrap() {
            let link = link.as_table_mut().unwrap();
            if auto.contains(&link["name"].as_str().unwrap()) {
                link.insert("mtu".into(), "auto".into());
            }
        }
        side.fx.write_config(&toml::to_string(&doc).unwrap());
    }
    clouds
}

/// What security groups do to ICMP: "fragmentation needed" and "packet too big" never reach
/// a host, forwarded or not.
pub const SECURITY_GROUP: &str = "table inet sg {\n\
  chain sg_in { type filter hook input priority 0; meta l4proto icmp drop; icmpv6 type packet-too-big drop; }\n\
  chain sg_forward { type filter hook forward priority 0; meta l4proto icmp drop; icmpv6 type packet-too-big drop; }\n\
  chain sg_out { type filter hook output priority 0; meta l4proto icmp drop; icmpv6 type packet-too-big drop; }\n\
}\n";

pub fn set_mtu(ns: &Netns, dev: &str, mtu: u32) {
    ip(&["-n", ns.name(), "link", "set", dev, "mtu", &mtu.to_string()]);
}

/// Wait until `link`'s `path_mtu` satisfies `ok`; returns it and how long it took.
pub fn wait_mtu(
    side: &Side,
    link: &str,
    timeout: Duration,
    ok: impl Fn(&serde_json::Value) -> bool,
) -> (serde_json::Value, Duration) {
    let start = Instant::now();
    loop {
        let mtu = side.link(link)["path_mtu"].clone();
        if ok(&mtu) {
            return (mtu, start.elapsed());
        }
        assert!(
            start.elapsed() < timeout,
            "{}: path MTU of {link} not as expected after {timeout:?}: {mtu:#}",
            side.name
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

pub fn figure(mtu: &serde_json::Value, key: &str) -> u64 {
    mtu[key].as_u64().unwrap_or(0)
}

/// Both gateways see the jumbo interconnect in both directions.
pub fn wait_jumbo(clouds: &TwoClouds) {
    for side in [&clouds.aws, &clouds.oci] {
        let (mtu, took) = wait_mtu(side, "interconnect", Duration::from_secs(30), |m| {
            m["state"] == "complete" && figure(m, "tx") >= 8900 && figure(m, "rx") >= 8900
        });
        println!(
            "{}: interconnect tx {} rx {} after {took:?} of waiting",
            side.name, mtu["tx"], mtu["rx"]
        );
    }
}

pub fn db(port: u16) -> SocketAddr {
    format!("{}:{port}", VPCS[1].2).parse().unwrap()
}

pub fn app(port: u16) -> SocketAddr {
    format!("{}:{port}", VPCS[0].2).parse().unwrap()
}
