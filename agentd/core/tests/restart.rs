//! Warm restarts on a simulated clock: a gateway crashes (`kill -9`), starts again with the
//! active links it persisted ([`Engine::restore`]), and both ends route again within a few
//! round trips of its first probe. Two links (`ic` preferred, `inet` backup), one group `g`,
//! 2 ms one way.
// The simulated clock starts at a real instant; nothing here reads the clock after that.
#![allow(clippy::disallowed_methods)]

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::{ms, secs, Net, Switch};
use isthmus_core::health::Health;
use isthmus_core::policy::{Candidate, Choice, GroupPolicy, GroupState, Why};
use isthmus_core::{SwitchReason, Timings};

/// Both links up, `ic` active on both ends.
fn warm() -> Net {
    let mut net = Net::symmetric(Timings::DEFAULT, secs(30), 7);
    net.run_until(secs(5));
    assert_eq!(net.active(0), Some("ic"));
    assert_eq!(net.active(1), Some("ic"));
    net
}

fn restored(link: &str) -> BTreeMap<String, String> {
    BTreeMap::from([("g".to_owned(), link.to_owned())])
}

/// A side's switches from `since` (relative to t0) on.
fn switches_since(net: &Net, side: usize, since: Duration) -> Vec<Switch> {
    net.switches(side)
        .into_iter()
        .filter(|s| s.0 >= since)
        .collect()
}

/// When side `side` first had `link` active at or after `since` (relative to t0).
fn active_at(net: &Net, side: usize, since: Duration, link: &str) -> Option<Duration> {
    switches_since(net, side, since)
        .into_iter()
        .find(|s| s.2.as_deref() == Some(link))
        .map(|s| s.0 - since)
}

#[test]
fn a_restarted_gateway_takes_its_link_at_the_first_answer_and_the_peer_takes_it_back_at_once() {
    let mut net = warm();
    net.crash(0);
    // systemd restarts agentd 2 s later: the peer has seen both links down and failed closed.
    net.run_for(secs(2));
    assert_eq!(net.active(1), None, "{:?}", net.switches(1));
    let restart = net.now - net.t0;
    assert!(net.restart(0, &restored("ic")).is_empty());
    net.run_for(secs(5));

    // The first probe's round trip (2 × 2 ms) brings the link back here; one more and the
    // peer, which forgot the crash's losses when it heard the restarted gateway, has it too.
    // Before, the peer needed `up_after` (5) answers at the fast interval: 250 ms.
    let here = active_at(&net, 0, restart, "ic").expect("never took ic");
    let there = active_at(&net, 1, restart, "ic").expect("the peer never took ic");
    println!("restart → active: here {here:?}, at the peer {there:?}");
    assert!(here <= ms(10), "{here:?}");
    assert!(there <= ms(20), "{there:?}");
    // One route write here: straight to the link, no fail-closed flip in between.
    let s = switches_since(&net, 0, restart);
    assert_eq!(s.len(), 1, "{s:?}");
    assert_eq!(s[0].3, SwitchReason::Restored);
    assert_eq!(net.sides[0].health("ic"), Some(Health::Up));
    assert_eq!(net.sides[1].health("ic"), Some(Health::Up));
    assert_eq!(net.active(1), Some("ic"));
}

#[test]
fn a_restart_while_failed_over_goes_back_to_the_backup_without_waiting_for_the_cut_link() {
    let mut net = warm();
    net.cut("ic", true);
    net.run_for(secs(3));
    assert_eq!((net.active(0), net.active(1)), (Some("inet"), Some("inet")));
    net.crash(0);
    net.run_for(secs(2));
    let restart = net.now - net.t0;
    net.restart(0, &restored("inet"));
    // Longer than failback_after (30 s): the cut lasts, nothing returns to it.
    net.run_for(secs(40));

    // Before, the group waited for the cut link's first verdict (10 lost probes, ~0.6 s).
    let here = active_at(&net, 0, restart, "inet").expect("never took inet");
    let there = active_at(&net, 1, restart, "inet").expect("the peer never took inet");
    println!("restart → active on the backup: here {here:?}, at the peer {there:?}");
    assert!(here <= ms(10), "{here:?}");
    assert!(there <= ms(20), "{there:?}");
    for side in 0..2 {
        let s = switches_since(&net, side, restart);
        assert!(
            s.iter().all(|x| x.2.as_deref() != Some("ic")),
            "side {side} went to the cut link: {s:?}"
        );
    }
    assert_eq!(switches_since(&net, 0, restart).len(), 1);
    assert_eq!(net.sides[0].health("ic"), Some(Health::Down));
}

#[test]
fn a_gateway_back_within_the_detection_time_does_not_make_its_peer_fail_closed() {
    let mut net = warm();
    let crash = net.now - net.t0;
    net.crash(0);
    // Back before the peer could count ten lost probes: its links still carry.
    net.run_for(ms(200));
    net.restart(0, &restored("ic"));
    net.run_for(secs(5));
    // The restarted gateway says `unknown` (no answer yet) for a round trip: no verdict, so
    // the peer stays. Before, `unknown` ranked as unusable: the peer left for the backup,
    // failed closed, and came back (three route writes).
    let s = switches_since(&net, 1, crash);
    assert!(s.is_empty(), "the peer moved: {s:?}");
    assert_eq!(net.active(0), Some("ic"));
    assert_eq!(net.active(1), Some("ic"));
}

#[test]
fn a_restored_link_that_does_not_answer_is_left_as_at_a_cold_start() {
    let mut net = warm();
    net.crash(0);
    net.cut("ic", true);
    net.run_for(secs(2));
    let restart = net.now - net.t0;
    // The file says `ic`, but it is cut now: the backup is taken once `ic` has a verdict.
    net.restart(0, &restored("ic"));
    net.run_for(secs(5));
    let s = switches_since(&net, 0, restart);
    assert_eq!(s.len(), 1, "{s:?}");
    assert_eq!(s[0].2.as_deref(), Some("inet"));
    assert_eq!(s[0].3, SwitchReason::FirstUsable);
    let took = s[0].0 - restart;
    let bound = Timings::DEFAULT.detection_bound() + Timings::DEFAULT.interval * 2;
    assert!(took <= bound, "{took:?} > {bound:?}");
    assert_eq!(net.sides[0].restoring("g"), None, "given up");
}

#[test]
fn restore_ignores_groups_and_links_that_are_not_in_the_config() {
    let mut net = warm();
    net.crash(0);
    net.run_for(secs(1));
    let saved = BTreeMap::from([
        ("g".to_owned(), "gone".to_owned()),
        ("old".to_owned(), "ic".to_owned()),
    ]);
    let ignored = net.restart(0, &saved);
    assert_eq!(
        ignored,
        [
            ("g".to_owned(), "gone".to_owned()),
            ("old".to_owned(), "ic".to_owned())
        ]
    );
    assert_eq!(net.sides[0].restoring("g"), None);
    net.run_for(secs(3));
    assert_eq!(net.active(0), Some("ic"), "a cold start");
}

/// A group just after a restart, settling, waiting for `inet` to answer again.
fn restoring(t0: std::time::Instant) -> GroupState {
    let mut state = GroupState::default();
    state.settle_until = Some(t0 + ms(850));
    state.restored = Some("inet".into());
    state
}

#[test]
fn a_restored_link_waits_while_a_better_class_is_usable() {
    let policy = GroupPolicy {
        links: vec!["ic".into(), "inet".into()],
        failover_on_degraded: true,
        preempt: true,
        failback_after: secs(30),
        hold_down: secs(5),
        checks_confirm: Duration::ZERO,
    };
    let t0 = std::time::Instant::now();
    let c = |health| Candidate {
        health,
        damped: false,
        drained: false,
        checks_failing: false,
    };
    let mut state = restoring(t0);
    // The restored backup answers degraded while the preferred link is up: no restore to a
    // link the group would leave at once; the usual start-up choice.
    let choice = policy.choose(&mut state, &[c(Health::Up), c(Health::Degraded)], None, t0);
    assert_eq!(
        choice,
        Choice::Switch {
            to: Some("ic".into()),
            why: Why::FirstUsable
        }
    );
    assert_eq!(state.restored, None);

    // Up like the preferred link: the restored one is taken, and a failback waits as usual.
    let mut state = restoring(t0);
    let both = [c(Health::Up), c(Health::Up)];
    let choice = policy.choose(&mut state, &both, None, t0);
    assert_eq!(
        choice,
        Choice::Switch {
            to: Some("inet".into()),
            why: Why::Restored
        }
    );
    assert_eq!(
        policy.choose(&mut state, &both, None, t0 + ms(10)),
        Choice::Stay
    );
    assert_eq!(
        policy.choose(&mut state, &both, None, t0 + secs(31)),
        Choice::Switch {
            to: Some("ic".into()),
            why: Why::Failback
        }
    );
}

#[test]
fn a_link_probes_as_soon_as_it_gets_its_key() {
    // At start-up the first probe is due before the link has a socket (no key): it is
    // scheduled, unsent, and the next one put off by the fast interval. The key's arrival
    // (the link is running) sends one at once: the restart's first round trip starts then.
    let c = common::config(Timings::DEFAULT, &common::LINKS, secs(30));
    let t0 = std::time::Instant::now();
    let mut e = isthmus_core::Engine::new(c, t0);
    assert!(e.poll_transmit(t0).is_none(), "no key, nothing sent");
    let t = t0 + ms(10);
    e.set_key("ic", Some(Box::new(common::KEY)));
    assert!(e.poll_timeout().is_some_and(|d| d <= t), "due at once");
    e.handle_timeout(t);
    let sent = e.poll_transmit(t).expect("a probe at once");
    assert_eq!(sent.link, "ic");
    assert!(e.poll_transmit(t).is_none(), "one, on the keyed link only");
}
