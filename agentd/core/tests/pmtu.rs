//! Path-MTU search between two engines on the simulated network: padded probes in their own
//! kind and sequence space, confirmed by small acknowledgements, never counted in the links'
//! health; each end measures its own direction and learns the other from the peer's probes.

mod common;

use std::time::Duration;

use common::{config, ms, secs, Net, LINKS};
use isthmus_core::engine::LinkPmtu;
use isthmus_core::pmtu::{PmtuConfig, PmtuReason, PmtuState};
use isthmus_core::{EngineConfig, Event, Health, Timings};

/// Both links search between 1280 and 8920 (a 9000-byte underlay less WireGuard's 80).
fn with_pmtu() -> EngineConfig {
    let mut c = config(Timings::DEFAULT, &LINKS, secs(30));
    for l in &mut c.links {
        l.pmtu = Some(LinkPmtu {
            search: PmtuConfig::new(1280, 8920),
            overhead: 28,
        });
    }
    c
}

/// The interconnect carries 8920 both ways, the internet 1420 (a 1500 path).
fn net() -> Net {
    let c = with_pmtu();
    let mut net = Net::new(c.clone(), c, 7);
    net.mtu = [[Some(8920); 2], [Some(1420); 2]];
    net
}

fn path_mtu_changes(net: &Net, side: usize) -> Vec<(Duration, String, u16, u16, PmtuReason)> {
    net.events[side]
        .iter()
        .filter_map(|e| match e {
            Event::PathMtuChanged {
                link,
                from,
                to,
                reason,
                at,
            } => Some((
                at.saturating_duration_since(net.t0),
                link.clone(),
                *from,
                *to,
                *reason,
            )),
            _ => None,
        })
        .collect()
}

fn health_changes(net: &Net, side: usize) -> Vec<(String, Health)> {
    net.events[side]
        .iter()
        .filter_map(|e| match e {
            Event::HealthChanged { link, to, .. } => Some((link.clone(), *to)),
            _ => None,
        })
        .collect()
}

#[test]
fn both_ends_find_the_jumbo_interconnect_and_the_1500_internet_and_learn_the_other_direction() {
    let mut net = net();
    net.run_until(secs(8));
    for side in 0..2 {
        let ic = net.sides[side].path_mtu("ic").expect("a search on ic");
        assert_eq!(ic.state, PmtuState::Complete);
        assert_eq!((ic.tx, ic.rx), (8920, Some(8920)), "side {side}");
        assert!(ic.tx_confirmed && ic.peer_answers);
        let inet = net.sides[side].path_mtu("inet").expect("a search on inet");
        assert!(
            inet.tx <= 1420 && inet.tx > 1412,
            "side {side}: {}",
            inet.tx
        );
        assert_eq!(inet.rx, net.sides[1 - side].path_mtu("inet").map(|r| r.tx));
        // Found within seconds of the links coming up.
        let changes = path_mtu_changes(&net, side);
        let last_ic = changes.iter().rfind(|c| c.1 == "ic").expect("ic");
        assert_eq!((last_ic.3, last_ic.4), (8920, PmtuReason::Confirmed));
        assert!(last_ic.0 < secs(3), "ic settled at {:?}", last_ic.0);
        let last_inet = changes.iter().rfind(|c| c.1 == "inet").expect("inet");
        assert!(last_inet.0 < secs(6), "inet settled at {:?}", last_inet.0);
        // The lost padded probes never touched the links' health.
        assert!(
            health_changes(&net, side)
                .iter()
                .all(|(_, h)| *h == Health::Up),
            "{:?}",
            health_changes(&net, side)
        );
        let figures = net.sides[side].link_report("inet").expect("inet").figures;
        assert_eq!(figures.loss, 0.0, "side {side}: {figures:?}");
    }
}

#[test]
fn each_direction_is_measured_on_its_own() {
    let mut net = net();
    // The interconnect is jumbo from A to B, 4000 bytes back.
    net.mtu[0] = [Some(8920), Some(4000)];
    net.run_until(secs(8));
    let a = net.sides[0].path_mtu("ic").expect("ic");
    let b = net.sides[1].path_mtu("ic").expect("ic");
    assert_eq!(a.tx, 8920);
    assert!(b.tx <= 4000 && b.tx > 3990, "{}", b.tx);
    assert_eq!(a.rx, Some(b.tx));
    assert_eq!(b.rx, Some(8920));
}

#[test]
fn a_path_that_shrinks_is_a_black_hole_within_two_seconds_and_nothing_fails_over() {
    let mut net = net();
    net.run_until(secs(6));
    let before = net.switches(0).len();
    net.mtu[0] = [Some(1400); 2];
    let shrunk = net.now.saturating_duration_since(net.t0);
    net.run_until(secs(14));
    for side in 0..2 {
        let changes = path_mtu_changes(&net, side);
        let hole = changes
            .iter()
            .find(|c| c.1 == "ic" && c.4 == PmtuReason::BlackHole)
            .expect("a black hole on ic");
        assert_eq!((hole.2, hole.3), (8920, 1280));
        assert!(
            hole.0 - shrunk <= ms(2000),
            "side {side}: noticed after {:?}",
            hole.0 - shrunk
        );
        let ic = net.sides[side].path_mtu("ic").expect("ic");
        assert!(ic.tx <= 1400 && ic.tx > 1392, "side {side}: {}", ic.tx);
        assert_eq!(ic.counts.black_holes, 1);
    }
    // Small probes kept crossing: the link stayed up and carried the group.
    assert_eq!(net.switches(0).len(), before);
    assert_eq!(net.active(0), Some("ic"));
}

#[test]
fn a_cut_link_is_not_a_black_hole() {
    let mut net = net();
    net.run_until(secs(6));
    net.cut("ic", true);
    net.run_until(secs(12));
    net.restore("ic");
    net.run_until(secs(25));
    for side in 0..2 {
        assert!(
            path_mtu_changes(&net, side)
                .iter()
                .all(|c| c.4 != PmtuReason::BlackHole),
            "side {side}: {:?}",
            path_mtu_changes(&net, side)
        );
        assert_eq!(net.sides[side].path_mtu("ic").map(|r| r.tx), Some(8920));
    }
}

#[test]
fn a_link_without_auto_mtu_has_no_search_but_answers_the_peers() {
    let mut b = with_pmtu();
    for l in &mut b.links {
        l.pmtu = None;
    }
    let mut net = Net::new(with_pmtu(), b, 3);
    net.mtu = [[Some(8920); 2], [Some(1420); 2]];
    net.run_until(secs(8));
    assert_eq!(net.sides[1].path_mtu("ic"), None);
    assert_eq!(net.sides[0].path_mtu("ic").map(|r| r.tx), Some(8920));
    assert_eq!(net.sides[0].path_mtu("ic").and_then(|r| r.rx), None);
}
