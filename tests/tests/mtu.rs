//! Path MTU end to end (docs/mtu.md), on the bed of `isthmus_tests::mtu_bed`: jumbo hosts and
//! interconnect, a 1500-byte internet path, ICMP dropped on the gateways (as security groups
//! do), so nothing here works by path-MTU discovery: the probes find each path, the clamp sizes
//! new connections, and re-segmentation carries the large packets of old ones. Every transfer
//! is checked end to end (FNV-1a of the stream).

use std::time::{Duration, Instant};

use isthmus_tests::mtu_bed::{app, bed, db, figure, wait_jumbo, wait_mtu, Xfer, MB50, PACE};
use isthmus_tests::topology::{now_ms, switch_at, VPCS};

#[test]
fn auto_links_find_the_jumbo_interconnect_and_the_internet_path_and_tcp_uses_jumbo_segments() {
    let clouds = bed("ma", &["interconnect", "internet"]);
    let started = Instant::now();
    let _agents = clouds.start_agents();
    wait_jumbo(&clouds);
    for side in [&clouds.aws, &clouds.oci] {
        // 1500 less 60 bytes of IPv4, UDP and WireGuard, to the search's 8-byte precision.
        let (mtu, _) = wait_mtu(side, "internet", Duration::from_secs(30), |m| {
            m["state"] == "complete" && (1432..=1440).contains(&figure(m, "rx"))
        });
        assert!((1432..=1440).contains(&figure(&mtu, "tx")), "{mtu:#}");
        assert_eq!(mtu["tx_confirmed"], true, "{mtu:#}");
        assert_eq!(mtu["peer_answers"], true, "{mtu:#}");
        assert_eq!(figure(&mtu, "black_holes"), 0, "{mtu:#}");
        println!("{}: internet tx {} rx {}", side.name, mtu["tx"], mtu["rx"]);
    }
    println!(
        "both paths settled {:?} after agentd started",
        started.elapsed()
    );
    // Each side's rx is what the other measured towards it.
    for (a, b) in [(&clouds.aws, &clouds.oci), (&clouds.oci, &clouds.aws)] {
        for link in ["interconnect", "internet"] {
            let (mine, theirs) = (&a.link(link)["path_mtu"], &b.link(link)["path_mtu"]);
            assert_eq!(mine["rx"], theirs["tx"], "{}: {link}", a.name);
        }
    }

    // Jumbo hosts get jumbo segments over the jumbo interconnect, clamped below 8960.
    let r = Xfer::start(clouds.aws_app(), clouds.oci_app(), db(5201), MB50, None).finish();
    assert_eq!(r.sent, r.received, "transfer over the interconnect");
    assert!(
        (8700..=8880).contains(&r.mss.0),
        "MSS over the interconnect: {r:?}"
    );
    let clamped: u64 = [&clouds.aws, &clouds.oci]
        .iter()
        .map(|s| figure(&s.link("interconnect")["path_mtu"], "mss_clamped"))
        .sum();
    assert!(clamped >= 1, "the SYN-ACK's 8960 was clamped to the tunnel");

    // netctl shows it.
    let out = isthmus_tests::netctl(&clouds.aws.fx.socket(), &["links"]);
    assert!(out.stdout.contains("PATH MTU"), "{}", out.stdout);
    assert!(
        out.stdout.contains("mtu interconnect: auto"),
        "{}",
        out.stdout
    );
}

#[test]
fn fifty_megabytes_cross_the_jumbo_interconnect_a_failover_and_the_1420_link_with_icmp_dropped() {
    let clouds = bed("mb", &["interconnect"]);
    let _agents = clouds.start_agents();
    wait_jumbo(&clouds);
    let internet = clouds.aws.link("internet")["path_mtu"].clone();
    assert_eq!(internet["state"], "fixed", "{internet:#}");
    assert_eq!(internet["tx"], 1420, "{internet:#}");

    // A connection opened over the interconnect; the interconnect dies under it.
    let mut x = Xfer::start(
        clouds.aws_app(),
        clouds.oci_app(),
        db(5202),
        MB50,
        Some(PACE),
    );
    std::thread::sleep(Duration::from_millis(600));
    assert!(x.running(), "the transfer ended before the failover");
    let cut = now_ms();
    clouds.cut_interconnect(true);
    clouds
        .aws
        .wait_active("remote", "internet", Duration::from_secs(10));
    let r = x.finish();
    assert_eq!(r.sent, r.received, "transfer across the failover");
    let switched = switch_at(&clouds.aws.events(), cut, "internet").expect("a failover event");
    println!(
        "failover {} ms after the cut; MSS {:?}",
        switched - cut,
        r.mss
    );
    // The connection kept its jumbo MSS; its packets were cut to the 1420-byte link.
    assert!(r.mss.1 >= 8700, "{r:?}");
    let resegmented = figure(&clouds.aws.link("internet")["path_mtu"], "resegmented");
    assert!(
        resegmented > 0,
        "no packet re-segmented on the internet link"
    );
    println!("re-segmented on the AWS internet link: {resegmented} packets");

    // New connections, both ways, over the 1420-byte link: clamped to 1380.
    clouds
        .oci
        .wait_active("remote", "internet", Duration::from_secs(10));
    let r = Xfer::start(clouds.aws_app(), clouds.oci_app(), db(5203), MB50, None).finish();
    assert_eq!(r.sent, r.received, "transfer over the internet link");
    assert!((1300..=1380).contains(&r.mss.0), "{r:?}");
    let r = Xfer::start(clouds.oci_app(), clouds.aws_app(), app(5204), MB50, None).finish();
    assert_eq!(r.sent, r.received, "transfer back over the internet link");
    assert!((1300..=1380).contains(&r.mss.0), "{r:?}");
    for side in [&clouds.aws, &clouds.oci] {
        let mtu = side.link("internet")["path_mtu"].clone();
        assert!(figure(&mtu, "mss_clamped") >= 2, "{}: {mtu:#}", side.name);
    }

    // Where ICMP does get through: a datagram with DF over the path is answered with the MTU;
    // one without DF is fragmented and answered.
    for side in [&clouds.aws, &clouds.oci] {
        let ok = side
            .ns
            .command("nft")
            .args(["delete", "table", "inet", "sg"])
            .status()
            .unwrap();
        assert!(ok.success());
    }
    let ping = |df: &str| {
        clouds
            .aws_app()
            .command("ping")
            .args([
                "-c", "2", "-i", "0.3", "-W", "2", "-M", df, "-s", "3000", VPCS[1].2,
            ])
            .output()
            .expect("ping")
    };
    let out = ping("do");
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{text}");
    assert!(
        text.contains("mtu = 1420") || text.contains("mtu=1420"),
        "{text}"
    );
    let mtu = clouds.aws.link("internet")["path_mtu"].clone();
    assert!(figure(&mtu, "too_big_sent") >= 1, "{mtu:#}");
    let out = ping("dont");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

#[test]
fn a_path_that_shrinks_under_a_transfer_is_found_and_the_transfer_completes() {
    let mut clouds = bed("mc", &["interconnect"]);
    // The interconnect through a relay, which can shrink it: a jumbo path at first.
    let relay = clouds.relay(0);
    let _agents = clouds.start_agents();
    wait_jumbo(&clouds);
    let mut x = Xfer::start(
        clouds.aws_app(),
        clouds.oci_app(),
        db(5205),
        MB50,
        Some(PACE),
    );
    std::thread::sleep(Duration::from_millis(600));
    assert!(x.running(), "the transfer ended before the path shrank");
    // The interconnect now carries IP packets of at most 1400 bytes, and says nothing.
    let shrunk = now_ms();
    let t0 = Instant::now();
    relay.set_max_datagram(Some(1400 - 28));
    let r = x.finish();
    let took = t0.elapsed();
    assert_eq!(r.sent, r.received, "transfer across the shrink");
    let events = clouds.aws.events();
    let fell = events
        .iter()
        .find(|e| {
            e["kind"] == "path_mtu"
                && e["link"] == "interconnect"
                && e["unix_ms"].as_u64() >= Some(shrunk)
                && e["to"] == "1280"
        })
        .unwrap_or_else(|| panic!("no black-hole event: {events:#?}"));
    println!(
        "black hole found {} ms after the shrink; the transfer ended {took:?} after it, its longest stall {:?}",
        fell["unix_ms"].as_u64().unwrap() - shrunk,
        r.stall
    );
    assert!(
        fell["reason"].as_str().unwrap_or("").contains("fell back"),
        "{fell}"
    );
    // Searched again below the size that failed, on the same link, both ways: no failover.
    for side in [&clouds.aws, &clouds.oci] {
        let (mtu, _) = wait_mtu(side, "interconnect", Duration::from_secs(30), |m| {
            m["state"] == "complete" && (1332..=1340).contains(&figure(m, "tx"))
        });
        assert!(figure(&mtu, "black_holes") >= 1, "{}: {mtu:#}", side.name);
        assert_eq!(side.active("remote").as_deref(), Some("interconnect"));
        assert!(
            switch_at(&side.events(), shrunk, "internet").is_none(),
            "{}: a smaller path is not a dead one",
            side.name
        );
    }
    let (_, dropped) = relay.counts();
    assert!(dropped > 0, "the relay dropped nothing");
}
