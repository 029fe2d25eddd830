//! The shell's life stories on tokio's paused time: two gateways' real event loops, failover
//! engines and routes adapters, with the kernel, the links, the probe network, the resolver and
//! the event-log disk faked in memory ([`super::testbed`]). No root, no socket: time jumps
//! straight to the next timer, so a minute of probing takes milliseconds.

use std::sync::Arc;
use std::time::Duration;

use isthmus_api::{EventKind, Health};

use super::testbed::{configs, FakeKernel, Gateway, Net};

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

async fn pair(inet_endpoint: &str) -> (tempfile::TempDir, Arc<Net>, [Gateway; 2]) {
    let dir = tempfile::tempdir().unwrap();
    let [a, b] = configs(dir.path(), inet_endpoint);
    let net = Arc::new(Net::default());
    let gw0 = Gateway::start(0, a, net.clone(), Arc::new(FakeKernel::default())).await;
    let gw1 = Gateway::start(1, b, net.clone(), Arc::new(FakeKernel::default())).await;
    (dir, net, [gw0, gw1])
}

/// The route the kernel has for `dst` through a tunnel, as `ip route` names its device.
fn route_dev(k: &FakeKernel, dst: &str) -> Option<String> {
    k.ip_route()
        .lines()
        .find(|l| l.starts_with(&format!("{dst} dev ")))
        .and_then(|l| l.split_whitespace().nth(2).map(str::to_owned))
}

/// Both gateways route the other side's VPC through `link`.
fn assert_both_route_via(aws: &Gateway, oci: &Gateway, link: &str) {
    assert_eq!(
        route_dev(&aws.kernel, "10.2.0.0/16"),
        Some(format!("fk0-{link}")),
        "aws:\n{}",
        aws.kernel.ip_route()
    );
    assert_eq!(
        route_dev(&oci.kernel, "10.1.0.0/16"),
        Some(format!("fk1-{link}")),
        "oci:\n{}",
        oci.kernel.ip_route()
    );
}

async fn health(gw: &Gateway, link: &str) -> Health {
    gw.view()
        .await
        .links
        .iter()
        .find(|l| l.name == link)
        .map(|l| l.health)
        .expect("link in status")
}

async fn switches(gw: &Gateway) -> usize {
    gw.events()
        .await
        .iter()
        .filter(|e| e.kind == EventKind::ActiveLinkChanged)
        .count()
}

#[tokio::test(start_paused = true)]
async fn a_hard_cut_moves_the_routes_on_both_gateways_and_failback_brings_them_home() {
    let (_dir, net, [aws, oci]) = pair("203.0.113.1:51821").await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(*aws.ready.borrow() && *oci.ready.borrow(), "both ready");
    assert_both_route_via(&aws, &oci, "ic");
    assert!(
        aws.kernel
            .ip_route()
            .contains("unreachable 10.2.0.0/16 proto 73 metric 4294967040"),
        "fail-closed route:\n{}",
        aws.kernel.ip_route()
    );

    net.cut("ic");
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_both_route_via(&aws, &oci, "inet");
    assert_eq!(health(&aws, "ic").await, Health::Down);

    net.restore("ic");
    // failback_after is 3 s in the test config.
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_both_route_via(&aws, &oci, "ic");
    let text = aws.kernel.ip_route();
    assert_eq!(
        text.lines().count(),
        2,
        "one tunnel route and one fail-closed:\n{text}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_flapping_link_is_damped_and_traffic_stays_on_the_steady_one() {
    let (_dir, net, [aws, _oci]) = pair("203.0.113.1:51821").await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let mut suppressed = false;
    for _ in 0..8 {
        net.cut("ic");
        tokio::time::sleep(ms(1500)).await;
        net.restore("ic");
        tokio::time::sleep(ms(1500)).await;
        if health(&aws, "ic").await == Health::Suppressed {
            suppressed = true;
            break;
        }
    }
    assert!(suppressed, "the flapping interconnect was never suppressed");
    // While suppressed, answered probes do not bring traffic back.
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(health(&aws, "ic").await, Health::Suppressed);
    assert_eq!(
        route_dev(&aws.kernel, "10.2.0.0/16").as_deref(),
        Some("fk0-inet")
    );
}

#[tokio::test(start_paused = true)]
async fn a_restart_after_a_crash_adopts_the_routes_and_duplicates_none() {
    let (dir, net, [aws, oci]) = pair("203.0.113.1:51821").await;
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert_eq!(
        route_dev(&aws.kernel, "10.2.0.0/16").as_deref(),
        Some("fk0-ic")
    );
    // The writer thread is real: give it a moment of real time to write the state file.
    wait_for_file(&dir.path().join("state0").join(crate::state::FILE)).await;

    // kill -9: nothing released; the TUNs vanish and the kernel flushes their routes, the
    // fail-closed route stays and keeps the VPC's traffic from leaking.
    let kernel = aws.crash();
    assert_eq!(
        kernel.ip_route(),
        "unreachable 10.2.0.0/16 proto 73 metric 4294967040"
    );
    kernel.writes.lock().unwrap().clear();
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        route_dev(&oci.kernel, "10.1.0.0/16"),
        None,
        "the peer failed closed"
    );

    let [a, _] = configs(dir.path(), "203.0.113.1:51821");
    let restarted = tokio::time::Instant::now();
    let aws = Gateway::start(0, a, net.clone(), kernel).await;
    // Both ends route again within a few round trips (2 ms one way) of the first probe: the
    // saved link is taken at its first answer, and the peer takes it back at once.
    let mut both = None;
    for _ in 0..500 {
        if route_dev(&aws.kernel, "10.2.0.0/16").is_some()
            && route_dev(&oci.kernel, "10.1.0.0/16").is_some()
        {
            both = Some(restarted.elapsed());
            break;
        }
        tokio::time::sleep(ms(1)).await;
    }
    let both = both.expect("routes never came back");
    assert!(both <= ms(50), "both ends route again after {both:?}");
    tokio::time::sleep(Duration::from_secs(3)).await;
    let text = aws.kernel.ip_route();
    assert_eq!(
        text,
        "10.2.0.0/16 dev fk0-ic proto 73 metric 100 mtu 1420\n\
         unreachable 10.2.0.0/16 proto 73 metric 4294967040",
        "adopted, not duplicated"
    );
    // One write: the tunnel route, once. The fail-closed route is adopted, and there is no
    // flip through fail-closed while the peer still reports the links down from the crash.
    let writes = aws.kernel.writes.lock().unwrap().clone();
    assert!(
        matches!(&writes[..], [crate::routes::plan::Change::Add(r)] if r.target != crate::routes::plan::Target::Unreachable),
        "{writes:?}"
    );
    let moves: Vec<_> = aws
        .events()
        .await
        .into_iter()
        .filter(|e| e.kind == EventKind::ActiveLinkChanged)
        .collect();
    assert_eq!(moves.len(), 1, "{moves:#?}");
    assert_eq!(moves[0].to.as_deref(), Some("ic"));
    assert!(moves[0].reason.contains("restart"), "{moves:#?}");
    // The peer takes the restarted gateway's probes (numbered on from the clock, not from 1).
    assert_eq!(health(&aws, "ic").await, Health::Up);
    assert_eq!(health(&oci, "ic").await, Health::Up);
    aws.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_restart_after_a_quarter_hour_without_a_change_is_still_warm() {
    // The state file is a crash's only memory: it must stay fresh while nothing changes, or a
    // gateway steady for more than `RESTORE_WITHIN` restarts cold.
    let (dir, net, [aws, _oci]) = pair("203.0.113.1:51821").await;
    tokio::time::sleep(Duration::from_secs(15 * 60)).await;
    let state = dir.path().join("state0");
    // The writer thread is real: give it real time to write the refreshed state.
    let mut loaded = None;
    for _ in 0..500 {
        if let Ok(Some(l)) = crate::state::load(&state, crate::clock::wall()) {
            loaded = Some(l);
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    let loaded = loaded.expect("the state file went stale while nothing changed");
    assert_eq!(loaded.get("db").map(String::as_str), Some("ic"));

    let kernel = aws.crash();
    let [a, _] = configs(dir.path(), "203.0.113.1:51821");
    let aws = Gateway::start(0, a, net.clone(), kernel).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let moves: Vec<_> = aws
        .events()
        .await
        .into_iter()
        .filter(|e| e.kind == EventKind::ActiveLinkChanged)
        .collect();
    assert!(
        moves.first().is_some_and(|m| m.reason.contains("restart")),
        "a warm restart: {moves:#?}"
    );
    aws.stop().await;
}

/// Wait (in real time: the writer is a thread) until `path` exists.
async fn wait_for_file(path: &std::path::Path) {
    for _ in 0..500 {
        if path.exists() {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    panic!("{} was never written", path.display());
}

#[tokio::test(start_paused = true)]
async fn a_resolver_that_never_answers_costs_the_other_link_nothing() {
    // The backup link's peer is a hostname; its resolver never answers, and its path is down.
    let (_dir, net, [aws, oci]) = pair("inet.peer.example:51821").await;
    net.cut("inet");
    tokio::time::sleep(Duration::from_secs(3)).await;
    let before = (switches(&aws).await, switches(&oci).await);
    for _ in 0..240 {
        tokio::time::sleep(ms(250)).await;
        assert_eq!(
            health(&aws, "ic").await,
            Health::Up,
            "aws sees the interconnect"
        );
        assert_eq!(
            health(&oci, "ic").await,
            Health::Up,
            "oci sees the interconnect"
        );
    }
    assert_eq!(
        (switches(&aws).await, switches(&oci).await),
        before,
        "no failover"
    );
    let lookups = aws.lookups.lock().unwrap().len();
    assert!(lookups >= 1, "the resolver was asked");
    assert!(
        lookups <= 2,
        "one lookup per link at a time, not one per tick: {lookups}"
    );
    assert!(aws.endpoints.lock().unwrap().is_empty());
    let figures = aws.view().await.engine["ic"].figures;
    assert_eq!(figures.loss, 0.0, "no probe lost: {figures:?}");
    assert_eq!(
        route_dev(&aws.kernel, "10.2.0.0/16").as_deref(),
        Some("fk0-ic")
    );
}
