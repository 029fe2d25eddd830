//! Service checks decide, on a simulated clock: two gateways, two links (`ic` preferred,
//! `inet` backup), one route group `g`, and a DNS group `app` of two answers (primary,
//! standby). The verdicts travel in the probes, as between two agentd.
// The simulated clock starts at a real instant; nothing here reads the clock after that.
#![allow(clippy::disallowed_methods)]

mod common;

use std::time::Duration;

use common::{ms, secs, Cond, Net, LINKS};
use isthmus_core::{
    dns_group_id, CheckState, DnsGroupConfig, Engine, EngineConfig, Event, Health, SwitchReason,
    Timings,
};

use CheckState::{Fail, Pass};

const A: usize = 0;
const B: usize = 1;

fn app() -> DnsGroupConfig {
    DnsGroupConfig {
        name: "app".into(),
        id: dns_group_id("app.example.com.", "A", &["192.0.2.10", "198.51.100.10"]),
        answers: 2,
        preempt: true,
        failback_after: secs(30),
        hold_down: secs(5),
        start_wait: Duration::ZERO,
    }
}

fn with_app() -> EngineConfig {
    let mut c = common::config(Timings::DEFAULT, &LINKS, secs(30));
    c.dns_groups = vec![app()];
    c
}

/// Both links up, `ic` active on both ends.
fn warm(a: EngineConfig, b: EngineConfig, seed: u64) -> Net {
    let mut net = Net::new(a, b, seed);
    net.run_until(secs(5));
    assert_eq!(net.active(A), Some("ic"));
    assert_eq!(net.active(B), Some("ic"));
    net
}

fn checks(net: &mut Net, side: usize, link: &str, state: CheckState) {
    let now = net.now;
    net.sides[side].handle_checks("g", link, state, now);
}

fn answers(net: &mut Net, side: usize, states: &[CheckState]) {
    let now = net.now;
    net.sides[side].handle_answer_checks("app", states.to_vec(), now);
}

/// A side's answer changes: (time since t0, from, to, reason).
fn answer_changes(net: &Net, side: usize) -> Vec<(Duration, Option<usize>, usize, SwitchReason)> {
    net.events[side]
        .iter()
        .filter_map(|e| match e {
            Event::AnswerChanged {
                from,
                to,
                reason,
                at,
                ..
            } => Some((*at - net.t0, *from, *to, reason.clone())),
            _ => None,
        })
        .collect()
}

fn count(net: &Net, side: usize, f: impl Fn(&Event) -> bool) -> usize {
    net.events[side].iter().filter(|e| f(e)).count()
}

fn since(net: &Net) -> Duration {
    net.now - net.t0
}

#[test]
fn a_group_leaves_the_link_whose_checks_fail_and_fails_back_after_failback_after() {
    let c = common::config(Timings::DEFAULT, &LINKS, secs(30));
    let mut net = warm(c.clone(), c, 1);
    checks(&mut net, A, "inet", Pass);
    checks(&mut net, A, "ic", Fail);
    let failed = since(&net);
    net.run_for(ms(1));
    let s = net.switches(A);
    let last = s.last().expect("a switch");
    assert_eq!(last.2.as_deref(), Some("inet"));
    assert_eq!(last.3, SwitchReason::ChecksFailing);
    assert_eq!(
        last.0, failed,
        "at once: the probes are fine, the service is not"
    );
    assert_eq!(
        SwitchReason::ChecksFailing.describe(),
        "service checks fail over the active link"
    );
    // The health of the link is not what changed.
    assert_eq!(net.sides[A].health("ic"), Some(Health::Up));

    net.run_for(secs(1));
    assert_eq!(
        net.active(B),
        Some("inet"),
        "the peer's verdict moves it too"
    );

    checks(&mut net, A, "ic", Pass);
    let passed = since(&net);
    net.run_for(secs(29));
    assert_eq!(
        net.active(A),
        Some("inet"),
        "failed back before failback_after"
    );
    assert_eq!(net.active(B), Some("inet"));
    net.run_for(secs(2));
    for side in [A, B] {
        assert_eq!(net.active(side), Some("ic"));
        let back = net.switches(side).pop().expect("a failback");
        assert_eq!(back.3, SwitchReason::Failback);
        assert!(back.0 >= passed + secs(30), "side {side}: {:?}", back.0);
    }
}

#[test]
fn checks_fail_over_a_group_that_fails_over_on_down_only() {
    let mut c = common::config(Timings::DEFAULT, &LINKS, secs(30));
    c.groups[0].policy.failover_on_degraded = false;
    let mut net = warm(c.clone(), c, 2);
    checks(&mut net, A, "ic", Fail);
    net.run_for(secs(1));
    assert_eq!(net.active(A), Some("inet"));
    assert_eq!(net.active(B), Some("inet"));
}

#[test]
fn checks_failing_over_every_link_keep_the_routes_and_say_why() {
    let c = common::config(Timings::DEFAULT, &LINKS, secs(30));
    let mut net = warm(c.clone(), c, 3);
    let before = [net.switches(A).len(), net.switches(B).len()];
    // The backup first: failing checks on a link not in use change nothing.
    checks(&mut net, A, "inet", Fail);
    net.run_for(secs(1));
    checks(&mut net, A, "ic", Fail);
    net.run_for(secs(10));
    for side in [A, B] {
        assert_eq!(
            net.active(side),
            Some("ic"),
            "side {side} left or failed closed"
        );
        assert_eq!(net.switches(side).len(), before[side], "side {side}");
        assert!(net.sides[side].checks_failing_everywhere("g"));
        let everywhere =
            |e: &Event| matches!(e, Event::ChecksFailingEverywhere { group, .. } if group == "g");
        assert_eq!(count(&net, side, everywhere), 1, "side {side}: once");
    }

    // A path whose checks pass again: the group takes it and the fault is no longer everywhere.
    checks(&mut net, A, "inet", Pass);
    net.run_for(secs(1));
    for side in [A, B] {
        assert_eq!(net.active(side), Some("inet"), "side {side}");
        assert_eq!(
            net.switches(side).last().expect("a switch").3,
            SwitchReason::ChecksFailing
        );
        assert!(!net.sides[side].checks_failing_everywhere("g"));
        let recovered =
            |e: &Event| matches!(e, Event::ChecksRecovered { group, .. } if group == "g");
        assert_eq!(count(&net, side, recovered), 1, "side {side}");
    }
}

#[test]
fn when_checks_fail_over_every_link_health_alone_ranks_them() {
    let c = common::config(Timings::DEFAULT, &LINKS, secs(30));
    let mut net = warm(c.clone(), c, 11);
    // One after the other: each verdict reaches the peer over its own link, so two given at
    // once may arrive a probe apart, and the peer would move for that moment.
    checks(&mut net, A, "inet", Fail);
    net.run_for(secs(1));
    checks(&mut net, A, "ic", Fail);
    net.run_for(secs(1));
    assert!(net.sides[A].checks_failing_everywhere("g"));
    // The preferred link turns lossy: both links fail their checks, so the degraded one is
    // left for the clean one as if there were no checks.
    net.set(
        "ic",
        0,
        Cond {
            cut: false,
            loss: 0.3,
        },
    );
    net.run_for(secs(60));
    for side in [A, B] {
        assert_eq!(net.active(side), Some("inet"), "side {side}");
        let moved = net.switches(side).pop().expect("a switch");
        assert_eq!(moved.3, SwitchReason::ActiveDegraded, "side {side}");
    }
}

#[test]
fn the_peer_failing_checks_moves_this_end_too() {
    let c = common::config(Timings::DEFAULT, &LINKS, secs(30));
    let mut net = warm(c.clone(), c, 4);
    // B runs no checks at all: A's verdict over `ic` is all it knows.
    checks(&mut net, A, "ic", Fail);
    net.run_for(secs(1));
    assert_eq!(net.active(B), Some("inet"));
    assert_eq!(
        net.switches(B).last().expect("a switch").3,
        SwitchReason::ChecksFailing
    );
    let report = net.sides[B].link_report("ic").expect("a link");
    assert_eq!((report.checks, report.peer_checks), (None, Some(Fail)));
    assert_eq!(
        net.sides[A].link_report("ic").and_then(|r| r.checks),
        Some(Fail)
    );

    // A verdict that cannot be renewed is not kept: B forgets it once `ic` is down for it.
    net.cut("ic", true);
    net.run_for(secs(3));
    assert_eq!(net.sides[B].health("ic"), Some(Health::Down));
    assert_eq!(
        net.sides[B].link_report("ic").and_then(|r| r.peer_checks),
        None
    );
}

#[test]
fn dns_group_fails_over_and_back_after_failback_after() {
    // Only A serves the record: no peer report, its own checks decide alone.
    let mut net = Net::new(
        with_app(),
        common::config(Timings::DEFAULT, &LINKS, secs(30)),
        5,
    );
    answers(&mut net, A, &[Pass, Pass]);
    net.run_until(secs(5));
    assert_eq!(net.sides[A].answer("app"), Some(0));
    assert_eq!(
        answer_changes(&net, A),
        [(Duration::ZERO, None, 0, SwitchReason::FirstUsable)]
    );

    answers(&mut net, A, &[Fail, Pass]);
    net.run_for(ms(1));
    assert_eq!(
        net.sides[A].answer("app"),
        Some(1),
        "a failing primary is left at once"
    );
    assert_eq!(
        answer_changes(&net, A).last().expect("a change"),
        &(secs(5), Some(0), 1, SwitchReason::ChecksFailing)
    );

    net.run_for(secs(5));
    answers(&mut net, A, &[Pass, Pass]);
    net.run_for(secs(29));
    assert_eq!(
        net.sides[A].answer("app"),
        Some(1),
        "failed back before failback_after"
    );
    net.run_for(secs(2));
    assert_eq!(net.sides[A].answer("app"), Some(0));
    let back = answer_changes(&net, A).pop().expect("a failback");
    assert_eq!(
        (back.1, back.2, back.3),
        (Some(1), 0, SwitchReason::Failback)
    );
    assert_eq!(back.0, secs(10) + ms(1) + secs(30));
    let report = net.sides[A].answer_report("app").expect("a group");
    assert_eq!(report.peer, None, "B does not serve the record");
    assert_eq!(answer_changes(&net, B), []);
}

#[test]
fn both_gateways_leave_the_primary_when_only_one_sees_it_fail() {
    let mut net = Net::new(with_app(), with_app(), 6);
    answers(&mut net, A, &[Pass, Pass]);
    answers(&mut net, B, &[Pass, Pass]);
    net.run_until(secs(5));
    for side in [A, B] {
        assert_eq!(net.sides[side].answer("app"), Some(0));
        let r = net.sides[side].answer_report("app").expect("a group");
        assert_eq!(
            r.peer,
            Some(vec![Pass, Pass]),
            "side {side} hears the other"
        );
    }

    // Only A's checks of the primary fail: the standby passes everywhere, so both move.
    answers(&mut net, A, &[Fail, Pass]);
    net.run_for(secs(1));
    for side in [A, B] {
        assert_eq!(net.sides[side].answer("app"), Some(1), "side {side}");
        let last = answer_changes(&net, side).pop().expect("a change");
        assert_eq!(last.3, SwitchReason::ChecksFailing);
    }

    // And both return once it passes again, after failback_after.
    answers(&mut net, A, &[Pass, Pass]);
    net.run_for(secs(25));
    assert_eq!(net.sides[B].answer("app"), Some(1));
    net.run_for(secs(7));
    for side in [A, B] {
        assert_eq!(net.sides[side].answer("app"), Some(0), "side {side}");
        assert_eq!(answer_changes(&net, side).len(), 3, "side {side}");
    }
}

#[test]
fn gateways_with_opposite_check_results_publish_the_same_answer() {
    let mut net = Net::new(with_app(), with_app(), 7);
    answers(&mut net, A, &[Pass, Pass]);
    answers(&mut net, B, &[Pass, Pass]);
    net.run_until(secs(5));
    // B sees the standby fail: the primary still passes everywhere, nobody moves.
    answers(&mut net, B, &[Pass, Fail]);
    net.run_for(secs(1));
    // Then A sees the primary fail while its standby passes: the opposite of B.
    answers(&mut net, A, &[Fail, Pass]);
    net.run_for(secs(600));
    for side in [A, B] {
        let r = net.sides[side].answer_report("app").expect("a group");
        assert_eq!(r.active, Some(0), "side {side}: the first answer");
        assert_eq!(
            answer_changes(&net, side),
            [(Duration::ZERO, None, 0, SwitchReason::FirstUsable)],
            "side {side} moved"
        );
        assert!(r.peer.is_some(), "side {side} knows the other's results");
        assert!(!r.no_answer_passes);
    }
}

#[test]
fn opposite_results_that_arrive_together_settle_on_the_first_answer_and_stay() {
    let mut net = Net::new(with_app(), with_app(), 8);
    answers(&mut net, A, &[Pass, Pass]);
    answers(&mut net, B, &[Pass, Pass]);
    net.run_until(secs(5));
    answers(&mut net, A, &[Fail, Pass]);
    answers(&mut net, B, &[Pass, Fail]);
    // A leaves the primary on the peer's last report (everything passed), then hears B's
    // results: both answers pass at one gateway only, so the first is preferred again, after
    // failback_after. B, whose primary passes, never moves.
    net.run_for(secs(32));
    for side in [A, B] {
        assert_eq!(net.sides[side].answer("app"), Some(0), "side {side}");
    }
    assert_eq!(
        answer_changes(&net, B).len(),
        1,
        "{:?}",
        answer_changes(&net, B)
    );
    let settled = [answer_changes(&net, A).len(), answer_changes(&net, B).len()];
    assert!(settled[A] <= 3, "{:?}", answer_changes(&net, A));
    net.run_for(secs(3600));
    for side in [A, B] {
        assert_eq!(
            answer_changes(&net, side).len(),
            settled[side],
            "side {side}: they fight"
        );
        assert_eq!(net.sides[side].answer("app"), Some(0));
    }
}

#[test]
fn when_no_answer_passes_the_published_one_is_kept_and_said_once() {
    let mut net = Net::new(
        with_app(),
        common::config(Timings::DEFAULT, &LINKS, secs(30)),
        9,
    );
    answers(&mut net, A, &[Fail, Fail]);
    net.run_until(secs(2));
    assert_eq!(net.sides[A].answer("app"), None, "nothing to keep yet");
    let nothing = |e: &Event| matches!(e, Event::NoAnswerPasses { keeping: None, .. });
    assert_eq!(count(&net, A, nothing), 1);

    answers(&mut net, A, &[Fail, Pass]);
    net.run_for(secs(1));
    assert_eq!(net.sides[A].answer("app"), Some(1));
    answers(&mut net, A, &[Fail, Fail]);
    net.run_for(secs(10));
    answers(&mut net, A, &[Fail, Fail]);
    net.run_for(secs(10));
    assert_eq!(net.sides[A].answer("app"), Some(1), "never publish nothing");
    let keeping = |e: &Event| {
        matches!(
            e,
            Event::NoAnswerPasses {
                keeping: Some(1),
                ..
            }
        )
    };
    assert_eq!(count(&net, A, keeping), 1, "once");
    assert!(
        net.sides[A]
            .answer_report("app")
            .expect("a group")
            .no_answer_passes
    );

    // The primary passes again: taken at once (the kept answer fails).
    answers(&mut net, A, &[Pass, Fail]);
    net.run_for(ms(1));
    assert_eq!(net.sides[A].answer("app"), Some(0));
    assert!(
        !net.sides[A]
            .answer_report("app")
            .expect("a group")
            .no_answer_passes
    );
}

#[test]
fn a_peer_with_other_answers_for_the_same_id_is_not_listened_to() {
    let mut b = with_app();
    b.dns_groups[0].answers = 3;
    let mut net = Net::new(with_app(), b, 10);
    answers(&mut net, A, &[Pass, Pass]);
    answers(&mut net, B, &[Fail, Fail, Fail]);
    net.run_until(secs(5));
    let r = net.sides[A].answer_report("app").expect("a group");
    assert_eq!((r.active, r.peer), (Some(0), None));
    assert_eq!(
        net.sides[B].answer_report("app").map(|r| r.peer),
        Some(None)
    );
}

#[test]
fn a_dns_group_alone_asks_to_be_woken_for_its_failback_and_keeps_its_state_over_a_reload() {
    let t0 = std::time::Instant::now();
    let mut c = common::config(Timings::DEFAULT, &[], secs(30));
    c.links.clear();
    c.groups.clear();
    c.dns_groups = vec![app()];
    let mut e = Engine::new(c.clone(), t0);
    // Nothing known yet: woken when the start-up settling ends.
    let settle = Timings::DEFAULT.detection_bound() + Timings::DEFAULT.interval * 2;
    assert_eq!(e.poll_timeout(), Some(t0 + settle));
    e.handle_answer_checks("app", vec![Pass, Pass], t0);
    assert_eq!(e.answer("app"), Some(0));
    e.handle_answer_checks("app", vec![Fail, Pass], t0 + secs(10));
    assert_eq!(e.answer("app"), Some(1));
    e.handle_answer_checks("app", vec![Pass, Pass], t0 + secs(20));
    assert_eq!(e.poll_timeout(), Some(t0 + secs(50)));

    // A reload that keeps the group keeps its answer and its timer.
    e.update_config(c.clone(), t0 + secs(30));
    assert_eq!(e.answer("app"), Some(1));
    assert_eq!(e.poll_timeout(), Some(t0 + secs(50)));
    e.handle_timeout(t0 + secs(50));
    assert_eq!(e.answer("app"), Some(0));

    // Other answers: the index is kept (within range) until the new checks decide.
    let mut fewer = c.clone();
    fewer.dns_groups[0].answers = 1;
    fewer.dns_groups[0].id ^= 1;
    e.update_config(fewer, t0 + secs(60));
    assert_eq!(e.answer("app"), Some(0));
    assert_eq!(
        e.answer_report("app").map(|r| r.own),
        Some(vec![CheckState::Unknown])
    );

    c.dns_groups.clear();
    e.update_config(c, t0 + secs(70));
    assert_eq!(e.answer("app"), None);
    assert_eq!(e.answer_report("app"), None);
}

/// The config of `a_group_…` with a confirmation time for switches made by the checks alone.
fn confirmed(confirm: Duration) -> EngineConfig {
    let mut c = common::config(Timings::DEFAULT, &LINKS, secs(30));
    c.groups[0].policy.checks_confirm = confirm;
    c
}

#[test]
fn a_fault_behind_the_tunnels_seen_over_one_link_moments_before_the_other_moves_nothing() {
    let c = confirmed(secs(2));
    let mut net = warm(c.clone(), c, 7);
    checks(&mut net, A, "ic", Pass);
    checks(&mut net, A, "inet", Pass);
    net.run_for(secs(1));
    let before = (net.switches(A).len(), net.switches(B).len());
    // The database stops answering: the check over `ic` notices first.
    checks(&mut net, A, "ic", Fail);
    net.run_for(ms(700));
    checks(&mut net, A, "inet", Fail);
    net.run_for(secs(10));
    assert_eq!((net.switches(A).len(), net.switches(B).len()), before);
    assert!(net.sides[A].checks_failing_everywhere("g"));
    // And it comes back the same way, `inet` first.
    checks(&mut net, A, "inet", Pass);
    net.run_for(ms(700));
    checks(&mut net, A, "ic", Pass);
    net.run_for(secs(40));
    assert_eq!((net.switches(A).len(), net.switches(B).len()), before);
    assert_eq!(net.active(A), Some("ic"));
    assert_eq!(net.active(B), Some("ic"));
}

#[test]
fn checks_failing_over_the_active_link_only_move_the_group_after_the_confirmation() {
    let c = confirmed(secs(2));
    let mut net = warm(c.clone(), c, 8);
    checks(&mut net, A, "inet", Pass);
    checks(&mut net, A, "ic", Fail);
    let failed = since(&net);
    net.run_for(secs(5));
    let s = net.switches(A);
    let last = s.last().expect("a switch");
    assert_eq!(last.2.as_deref(), Some("inet"));
    assert_eq!(last.3, SwitchReason::ChecksFailing);
    assert!(
        last.0 >= failed + secs(2) && last.0 < failed + secs(3),
        "at the confirmation, not before: {:?} after",
        last.0 - failed
    );
    assert_eq!(net.active(B), Some("inet"));
}

#[test]
fn at_start_up_a_dns_group_waits_for_its_preferred_answer_rather_than_flip_to_the_dr_one() {
    // The primary's first check fails (its path is not up yet), the DR's passes: nothing is
    // published until the primary passes, and the DR answer never is.
    let mut c = with_app();
    c.dns_groups[0].start_wait = secs(3);
    let mut net = Net::new(
        c.clone(),
        common::config(Timings::DEFAULT, &LINKS, secs(30)),
        7,
    );
    answers(&mut net, A, &[Fail, Pass]);
    net.run_until(ms(1500));
    assert_eq!(
        net.sides[A].answer("app"),
        None,
        "published before the primary could pass"
    );
    answers(&mut net, A, &[Pass, Pass]);
    net.run_for(ms(1));
    assert_eq!(net.sides[A].answer("app"), Some(0));
    assert_eq!(
        answer_changes(&net, A),
        [(ms(1500), None, 0, SwitchReason::FirstUsable)]
    );

    // A primary that keeps failing: the DR answer once the wait is over.
    let mut net = Net::new(c, common::config(Timings::DEFAULT, &LINKS, secs(30)), 7);
    answers(&mut net, A, &[Fail, Pass]);
    net.run_until(ms(2900));
    assert_eq!(net.sides[A].answer("app"), None);
    net.run_until(ms(3100));
    assert_eq!(net.sides[A].answer("app"), Some(1));
}
