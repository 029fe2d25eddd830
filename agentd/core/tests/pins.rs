//! DNS-answer pins and drill notices, on a simulated clock: two gateways, two links (`ic`,
//! `inet`), a route group `g` and a DNS group `app` of two answers (primary, standby). Pins
//! and notices travel in the probes (TLVs 0x06 and 0x04), as between two agentd.
// The simulated clock starts at a real instant; nothing here reads the clock after that.
#![allow(clippy::disallowed_methods)]

mod common;

use std::cell::RefCell;
use std::rc::Rc;
use std::time::Duration;

use common::{ms, secs, Net, LINKS};
use isthmus_core::{
    dns_group_id, CheckState, DnsGroupConfig, EngineConfig, Event, SwitchReason, Timings,
};
use proptest::prelude::*;

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

fn answers(net: &mut Net, side: usize, states: &[CheckState]) {
    let now = net.now;
    net.sides[side].handle_answer_checks("app", states.to_vec(), now);
}

/// Both gateways serve `app`, every answer passes at both, the primary is published.
fn warm(seed: u64) -> Net {
    let mut net = Net::new(with_app(), with_app(), seed);
    answers(&mut net, A, &[Pass, Pass]);
    answers(&mut net, B, &[Pass, Pass]);
    net.run_until(secs(5));
    for side in [A, B] {
        assert_eq!(net.sides[side].answer("app"), Some(0), "side {side}");
    }
    net
}

fn pin(net: &mut Net, side: usize, answer: usize, reason: &str) {
    let now = net.now;
    assert!(net.sides[side].pin_answer("app", answer, reason, now));
}

fn unpin(net: &mut Net, side: usize) {
    let now = net.now;
    assert!(net.sides[side].unpin_answer("app", now));
}

fn since(net: &Net) -> Duration {
    net.now - net.t0
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

/// A side's drill notices of the peer: (time since t0, group).
fn peer_drills(net: &Net, side: usize) -> Vec<(Duration, Option<String>)> {
    net.events[side]
        .iter()
        .filter_map(|e| match e {
            Event::PeerDrill { group, at } => Some((*at - net.t0, group.clone())),
            _ => None,
        })
        .collect()
}

#[test]
fn an_answer_pin_is_published_at_once_and_the_peer_follows_within_a_probe() {
    let mut net = warm(1);
    pin(&mut net, A, 1, "CHG-1: primary database maintenance");
    let pinned = since(&net);
    net.run_for(ms(1));
    assert_eq!(net.sides[A].answer("app"), Some(1));
    assert_eq!(
        answer_changes(&net, A).last(),
        Some(&(
            pinned,
            Some(0),
            1,
            SwitchReason::Manual("CHG-1: primary database maintenance".into())
        ))
    );
    assert_eq!(
        net.sides[A].answer_pin_of("app"),
        Some((1, "CHG-1: primary database maintenance"))
    );

    net.run_for(ms(200));
    assert_eq!(net.sides[B].answer("app"), Some(1));
    let followed = answer_changes(&net, B).pop().expect("a change");
    assert_eq!(
        (followed.1, followed.2, &followed.3),
        (Some(0), 1, &SwitchReason::PeerPin)
    );
    // The next probe on either link carries it: within a probe interval and the latency.
    assert!(followed.0 - pinned <= ms(110), "{:?}", followed.0 - pinned);
    assert_eq!(followed.3.describe_answer(), "pinned by the peer");
    assert_eq!(net.sides[B].answer_pin_of("app"), None);
    assert_eq!(net.sides[B].peer_answer_pin("app"), Some(1));
    assert_eq!(
        net.sides[A].peer_answer_pin("app"),
        None,
        "B does not echo it"
    );
}

#[test]
fn a_pinned_answer_stays_published_while_its_checks_fail_at_one_gateway_or_at_both() {
    let mut net = warm(2);
    pin(&mut net, A, 1, "drill the standby");
    net.run_for(secs(1));
    let settled = [answer_changes(&net, A).len(), answer_changes(&net, B).len()];
    // The standby fails at A only, then at both: the operator's word still holds, everywhere.
    answers(&mut net, A, &[Pass, Fail]);
    net.run_for(secs(10));
    answers(&mut net, B, &[Pass, Fail]);
    net.run_for(secs(60));
    for side in [A, B] {
        assert_eq!(net.sides[side].answer("app"), Some(1), "side {side}");
        assert_eq!(
            answer_changes(&net, side).len(),
            settled[side],
            "side {side}"
        );
    }
    // Released: the checks decide again, at once and at both.
    unpin(&mut net, A);
    net.run_for(secs(1));
    for side in [A, B] {
        assert_eq!(net.sides[side].answer("app"), Some(0), "side {side}");
        let last = answer_changes(&net, side).pop().expect("a change");
        assert_eq!(last.3, SwitchReason::Released, "side {side}");
    }
}

#[test]
fn releasing_an_answer_pin_returns_both_gateways_to_the_automatic_choice_at_once() {
    let mut net = warm(3);
    pin(&mut net, A, 1, "CHG-2");
    net.run_for(secs(60));
    assert_eq!(net.sides[B].answer("app"), Some(1));
    unpin(&mut net, A);
    let released = since(&net);
    assert_eq!(net.sides[A].answer("app"), Some(0), "no failback wait");
    assert_eq!(net.sides[A].answer_pin_of("app"), None);
    net.run_for(ms(200));
    for side in [A, B] {
        let back = answer_changes(&net, side).pop().expect("a change");
        assert_eq!((back.1, back.2), (Some(1), 0), "side {side}");
        assert_eq!(back.3, SwitchReason::Released, "side {side}");
        assert!(back.0 - released <= ms(110), "side {side}: {:?}", back.0);
    }
    assert_eq!(SwitchReason::Released.describe_answer(), "pin released");
    // And they stay there.
    net.run_for(secs(60));
    for side in [A, B] {
        assert_eq!(answer_changes(&net, side).len(), 3, "side {side}");
    }
}

#[test]
fn a_gateways_own_pin_wins_over_the_peers() {
    let mut net = warm(4);
    pin(&mut net, A, 1, "A's change");
    pin(&mut net, B, 0, "B's change");
    net.run_for(secs(5));
    // Each holds its own (two pins against each other: release one).
    assert_eq!(net.sides[A].answer("app"), Some(1));
    assert_eq!(net.sides[B].answer("app"), Some(0));
    assert_eq!(net.sides[A].peer_answer_pin("app"), Some(0));
    assert_eq!(net.sides[B].peer_answer_pin("app"), Some(1));
    unpin(&mut net, B);
    net.run_for(ms(200));
    assert_eq!(net.sides[B].answer("app"), Some(1), "B follows A's pin now");
    assert_eq!(
        answer_changes(&net, B).last().map(|c| c.3.clone()),
        Some(SwitchReason::PeerPin)
    );
    assert_eq!(net.sides[A].answer("app"), Some(1));
}

#[test]
fn a_pin_reaches_the_peer_over_the_link_that_is_left() {
    let mut net = warm(5);
    net.cut("ic", true);
    net.run_for(secs(2));
    pin(&mut net, A, 1, "CHG-3");
    net.run_for(ms(200));
    assert_eq!(net.sides[B].answer("app"), Some(1));
}

#[test]
fn a_peer_pin_ends_when_the_peer_cannot_be_heard_and_returns_with_it() {
    let mut net = warm(6);
    pin(&mut net, A, 1, "CHG-4");
    net.run_for(secs(1));
    assert_eq!(net.sides[B].answer("app"), Some(1));
    let timeout = net.sides[B].peer_timeout();
    assert_eq!(timeout, Timings::DEFAULT.detection_bound());
    net.cut("ic", true);
    net.cut("inet", true);
    let cut = since(&net);
    net.run_for(secs(2));
    // B cannot hear A any more: neither its pin nor its checks; it decides alone.
    assert_eq!(net.sides[B].answer("app"), Some(0));
    assert_eq!(net.sides[B].peer_answer_pin("app"), None);
    let back = answer_changes(&net, B).pop().expect("a change");
    assert_eq!(back.3, SwitchReason::Released);
    // The last probe arrived within a probe interval (and the latency) before the cut.
    assert!(
        back.0 >= cut + timeout - ms(110) && back.0 <= cut + timeout,
        "{:?} after the cut",
        back.0 - cut
    );
    assert_eq!(net.sides[A].answer("app"), Some(1), "A keeps its own pin");

    net.restore("ic");
    net.restore("inet");
    net.run_for(secs(2));
    assert_eq!(net.sides[B].answer("app"), Some(1));
    assert_eq!(
        answer_changes(&net, B).last().map(|c| c.3.clone()),
        Some(SwitchReason::PeerPin)
    );
}

#[test]
fn a_new_key_on_one_link_does_not_interrupt_a_followed_pin() {
    let mut net = warm(12);
    pin(&mut net, A, 1, "CHG-6");
    net.run_for(secs(1));
    let changes = answer_changes(&net, B).len();
    // New keys: B speaks version 1 on `ic` again until it hears A's capability, and A's
    // version-1 replies, which cannot carry the pin, must not read as its end.
    net.sides[B].set_key("ic", Some(Box::new(common::KEY)));
    net.run_for(secs(2));
    assert_eq!(
        net.sides[B].link_report("ic").map(|r| r.peer_version),
        Some(2)
    );
    assert_eq!(net.sides[B].answer("app"), Some(1));
    assert_eq!(
        answer_changes(&net, B).len(),
        changes,
        "{:?}",
        answer_changes(&net, B)
    );
}

#[test]
fn a_pin_is_published_at_once_even_while_the_group_waits_at_start_up() {
    let mut c = with_app();
    c.dns_groups[0].start_wait = secs(3);
    let mut net = Net::new(c, common::config(Timings::DEFAULT, &LINKS, secs(30)), 7);
    answers(&mut net, A, &[Fail, Pass]);
    pin(&mut net, A, 1, "primary not built yet");
    net.run_for(ms(1));
    assert_eq!(net.sides[A].answer("app"), Some(1));
    assert_eq!(
        answer_changes(&net, A),
        [(
            Duration::ZERO,
            None,
            1,
            SwitchReason::Manual("primary not built yet".into())
        )]
    );
}

#[test]
fn pins_of_unknown_groups_or_answers_are_refused_and_a_reload_that_changes_the_answers_releases_them(
) {
    let mut net = warm(8);
    let now = net.now;
    let e = &mut net.sides[A];
    assert!(!e.pin_answer("app", 2, "no third answer", now));
    assert!(!e.pin_answer("other", 0, "no such group", now));
    assert!(!e.unpin_answer("app", now), "no pin to release");
    assert!(!e.unpin_answer("other", now));
    assert_eq!(e.answer_pin_of("app"), None);
    assert!(e.pin_answer("app", 1, "CHG-5", now));
    // A reload that keeps the answers keeps the pin.
    e.update_config(with_app(), now + ms(1));
    assert_eq!(e.answer_pin_of("app"), Some((1, "CHG-5")));
    // Another answer list: index 1 may now be another address.
    let mut other = with_app();
    other.dns_groups[0].id ^= 1;
    e.update_config(other, now + ms(2));
    assert_eq!(e.answer_pin_of("app"), None);
}

#[test]
fn a_drill_notice_reaches_the_peer_and_each_start_change_and_end_is_said_once() {
    let mut net = warm(9);
    net.sides[A].set_drill(Some("g".into()));
    let started = since(&net);
    net.run_for(secs(2));
    assert_eq!(net.sides[B].peer_drill(), Some("g"));
    net.sides[A].set_drill(Some("app".into()));
    let changed = since(&net);
    net.run_for(secs(2));
    assert_eq!(net.sides[B].peer_drill(), Some("app"));
    net.sides[A].set_drill(None);
    let ended = since(&net);
    net.run_for(secs(2));
    assert_eq!(net.sides[B].peer_drill(), None);
    let seen = peer_drills(&net, B);
    let groups: Vec<Option<&str>> = seen.iter().map(|(_, g)| g.as_deref()).collect();
    assert_eq!(groups, [Some("g"), Some("app"), None]);
    for ((at, _), set) in seen.iter().zip([started, changed, ended]) {
        assert!(*at >= set && *at - set <= ms(110), "{:?} after", *at - set);
    }
    assert_eq!(peer_drills(&net, A), [], "A's own drill is no peer's");
    assert_eq!(net.sides[A].peer_drill(), None);
}

#[test]
fn a_drill_notice_ends_when_the_peer_falls_silent_and_returns_with_it() {
    let mut net = warm(10);
    net.sides[A].set_drill(Some("g".into()));
    net.run_for(secs(1));
    net.cut("ic", true);
    // One link left: the notice holds.
    net.run_for(secs(2));
    assert_eq!(net.sides[B].peer_drill(), Some("g"));
    net.cut("inet", true);
    let cut = since(&net);
    net.run_for(secs(2));
    assert_eq!(net.sides[B].peer_drill(), None);
    let timeout = net.sides[B].peer_timeout();
    let (at, group) = peer_drills(&net, B).pop().expect("an end");
    assert_eq!(group, None);
    assert!(
        at >= cut + timeout - ms(110) && at <= cut + timeout,
        "{:?} after the cut",
        at - cut
    );
    net.restore("inet");
    net.run_for(secs(2));
    assert_eq!(net.sides[B].peer_drill(), Some("g"));
    assert_eq!(peer_drills(&net, B).len(), 3);
}

#[test]
fn with_one_link_slower_than_the_other_notices_and_pins_change_once_each_time() {
    let mut net = warm(11);
    // The internet path 60 ms longer than the interconnect: a probe the peer sent on it just
    // before a change arrives after those it sent on the interconnect just after.
    net.extra_latency[1] = ms(60);
    net.run_for(secs(1));
    let drills_before = peer_drills(&net, B).len();
    let answers_before = answer_changes(&net, B).len();
    for i in 0..20u64 {
        // At every phase of the probe interval (100 ms): 37 ms steps.
        net.run_for(ms(500 + 37 * i));
        let on = i % 2 == 0;
        net.sides[A].set_drill(on.then(|| "g".to_owned()));
        if on {
            pin(&mut net, A, 1, "toggle");
        } else {
            unpin(&mut net, A);
        }
    }
    net.run_for(secs(2));
    let drills = peer_drills(&net, B);
    assert_eq!(drills.len() - drills_before, 20, "{drills:?}");
    let changes = answer_changes(&net, B);
    assert_eq!(changes.len() - answers_before, 20, "{changes:?}");
    // A stayed with its last word: no pin, no drill.
    assert_eq!(net.sides[B].peer_drill(), None);
    assert_eq!(net.sides[B].answer("app"), Some(0));
}

#[derive(Debug, Clone)]
enum Step {
    Pin(usize, usize),
    Unpin(usize),
    Drill(usize, bool),
    Checks(usize, [bool; 2]),
    Cut(usize),
    Restore(usize),
    Wait(u64),
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        2 => (0usize..2, 0usize..2).prop_map(|(s, a)| Step::Pin(s, a)),
        2 => (0usize..2).prop_map(Step::Unpin),
        1 => (0usize..2, any::<bool>()).prop_map(|(s, on)| Step::Drill(s, on)),
        2 => (0usize..2, any::<[bool; 2]>()).prop_map(|(s, c)| Step::Checks(s, c)),
        1 => (0usize..2).prop_map(Step::Cut),
        1 => (0usize..2).prop_map(Step::Restore),
        4 => (1u64..3000).prop_map(Step::Wait),
    ]
}

fn states(pass: [bool; 2]) -> [CheckState; 2] {
    pass.map(|p| if p { Pass } else { Fail })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    /// Whatever the operators, checks and links do: a gateway with a pin publishes it at every
    /// moment; once the links are back, a pin at one gateway is published by both, and drill
    /// notices are known to the peer; with no pin left both publish the same answer.
    #[test]
    fn pins_and_notices_converge_and_a_pin_always_holds_where_it_was_set(
        steps in proptest::collection::vec(step(), 1..30),
        slow_link in 0u64..80,
        seed in any::<u64>(),
    ) {
        let mut net = warm(seed);
        net.extra_latency[1] = ms(slow_link);
        let broken: Rc<RefCell<Option<String>>> = Rc::default();
        let b = broken.clone();
        net.check = Some(Box::new(move |net: &Net| {
            for side in [A, B] {
                let e = &net.sides[side];
                if let Some((pinned, _)) = e.answer_pin_of("app") {
                    if e.answer("app") != Some(pinned) && b.borrow().is_none() {
                        *b.borrow_mut() = Some(format!(
                            "side {side} pinned {pinned} publishes {:?}",
                            e.answer("app")
                        ));
                    }
                }
            }
        }));
        let mut drills = [false; 2];
        for s in steps {
            let now = net.now;
            match s {
                Step::Pin(side, answer) => {
                    net.sides[side].pin_answer("app", answer, "test", now);
                }
                Step::Unpin(side) => {
                    net.sides[side].unpin_answer("app", now);
                }
                Step::Drill(side, on) => {
                    drills[side] = on;
                    net.sides[side].set_drill(on.then(|| format!("drill by {side}")));
                }
                Step::Checks(side, pass) => answers(&mut net, side, &states(pass)),
                Step::Cut(link) => net.cut(LINKS[link], true),
                Step::Restore(link) => net.restore(LINKS[link]),
                Step::Wait(n) => net.run_for(ms(n)),
            }
            net.run_for(ms(1));
        }
        prop_assert_eq!(broken.borrow().clone(), None);

        // Quiet: links back, the same checks at both.
        for link in LINKS {
            net.restore(link);
        }
        answers(&mut net, A, &[Pass, Pass]);
        answers(&mut net, B, &[Pass, Pass]);
        net.run_for(secs(2));
        for side in [A, B] {
            let expected = drills[1 - side].then(|| format!("drill by {}", 1 - side));
            prop_assert_eq!(net.sides[side].peer_drill(), expected.as_deref(), "side {}", side);
        }
        let pins = [A, B].map(|s| net.sides[s].answer_pin_of("app").map(|(i, _)| i));
        match pins {
            [Some(a), Some(b)] => {
                prop_assert_eq!(net.sides[A].answer("app"), Some(a));
                prop_assert_eq!(net.sides[B].answer("app"), Some(b));
            }
            [Some(p), None] | [None, Some(p)] => {
                for side in [A, B] {
                    prop_assert_eq!(net.sides[side].answer("app"), Some(p), "side {}", side);
                }
            }
            [None, None] => {
                // Failback and hold-down may still run.
                net.run_for(secs(40));
                let a = net.sides[A].answer("app");
                prop_assert_eq!(a, Some(0));
                prop_assert_eq!(net.sides[B].answer("app"), a);
            }
        }
        prop_assert_eq!(broken.borrow().clone(), None);
    }
}
