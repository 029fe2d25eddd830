//! Properties over random sequences of network conditions and operator actions, checked after
//! every input the engines handle:
//! - no route group stays on an unusable link while a usable one exists (pins aside);
//! - a group never fails closed while a link is usable (service checks never make a link
//!   unusable, even when they fail over every link);
//! - at most one elective switch per hold-down (leaving a link whose checks fail is elective);
//! - after a quiet period both ends have chosen the same link.
//!
//! A side may also crash and restart with its active link restored (a warm restart): the rules
//! above hold for its new life from its own start-up on.

mod common;

use std::cell::RefCell;
use std::rc::Rc;
use std::time::Instant;

use common::{ms, secs, Cond, Net, LINKS};
use isthmus_core::{CheckState, Event, Health, SwitchReason, Timings};
use proptest::prelude::*;

#[derive(Debug, Clone)]
enum Step {
    Wait(u64),
    Cut(usize, usize),
    Loss(usize, usize, u8),
    Restore(usize),
    Pin(usize, usize),
    Unpin(usize),
    Drain(usize, usize, bool),
    /// A side's verdict of the group's service checks over a link.
    Checks(usize, usize, u8),
    /// A side crashes and restarts after this many milliseconds, its active link restored.
    Restart(usize, u64),
}

const STATES: [CheckState; 3] = [CheckState::Unknown, CheckState::Pass, CheckState::Fail];

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        4 => (50u64..8000).prop_map(Step::Wait),
        2 => (0usize..2, 0usize..3).prop_map(|(l, d)| Step::Cut(l, d)),
        1 => (0usize..2, 0usize..2, 0u8..60).prop_map(|(l, d, p)| Step::Loss(l, d, p)),
        2 => (0usize..2).prop_map(Step::Restore),
        1 => (0usize..2, 0usize..2).prop_map(|(s, l)| Step::Pin(s, l)),
        1 => (0usize..2).prop_map(Step::Unpin),
        1 => (0usize..2, 0usize..2, any::<bool>()).prop_map(|(s, l, on)| Step::Drain(s, l, on)),
        3 => (0usize..2, 0usize..2, 0u8..3).prop_map(|(s, l, c)| Step::Checks(s, l, c)),
        1 => (0usize..2, 0u64..3000).prop_map(|(s, d)| Step::Restart(s, d)),
    ]
}

fn usable(h: Option<Health>) -> bool {
    matches!(h, Some(Health::Up | Health::Degraded | Health::Suppressed))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn invariants_hold_after_every_step(steps in proptest::collection::vec(step(), 1..40), seed in 1u64..1000) {
        // Short damping times keep the quiet period short; the rules are the same.
        let mut c = common::config(Timings::DEFAULT, &LINKS, secs(10));
        c.damping.half_life = secs(10);
        c.damping.max_suppress = secs(60);
        let mut net = Net::new(c.clone(), c, seed);
        let violations: Rc<RefCell<Vec<String>>> = Rc::default();
        let v = violations.clone();
        let pinned: Rc<RefCell<[bool; 2]>> = Rc::default();
        let p = pinned.clone();
        net.check = Some(Box::new(move |net: &Net| {
            for side in 0..2 {
                if net.dead[side] {
                    continue;
                }
                let e = &net.sides[side];
                let Some(active) = e.active("g") else {
                    let usable_links: Vec<&str> = LINKS.iter().copied().filter(|l| usable(e.health(l))).collect();
                    // Start-up waits for every link's first verdict: not failing closed.
                    if !usable_links.is_empty() && net.now - net.started[side] >= secs(3) {
                        v.borrow_mut().push(format!("side {side} failed closed with {usable_links:?} usable at {:?}", net.now - net.t0));
                    }
                    continue;
                };
                if p.borrow()[side] || LINKS.iter().any(|l| e.link_report(l).and_then(|r| r.peer).is_some_and(|pv| pv.pinned)) {
                    continue;
                }
                let active_ok = usable(e.health(active));
                let other_ok = LINKS.iter().any(|l| *l != active && usable(e.health(l)));
                if !active_ok && other_ok {
                    v.borrow_mut().push(format!("side {side} on unusable {active} at {:?}", net.now - net.t0));
                }
            }
        }));
        net.run_until(secs(3));
        // When each side's lives began: the hold-down is not kept across a restart.
        let mut lives: [Vec<Instant>; 2] = [vec![net.t0], vec![net.t0]];
        for s in &steps {
            match *s {
                Step::Wait(n) => net.run_for(ms(n)),
                Step::Cut(l, d) => {
                    if d == 2 { net.cut(LINKS[l], true) } else { net.set(LINKS[l], d, Cond { cut: true, loss: 0.0 }) }
                }
                Step::Loss(l, d, pct) => net.set(LINKS[l], d, Cond { cut: false, loss: f64::from(pct) / 100.0 }),
                Step::Restore(l) => net.restore(LINKS[l]),
                Step::Pin(side, l) => {
                    let now = net.now;
                    net.sides[side].pin("g", LINKS[l], "test", now);
                    pinned.borrow_mut()[side] = true;
                }
                Step::Unpin(side) => {
                    let now = net.now;
                    net.sides[side].unpin("g", now);
                    pinned.borrow_mut()[side] = false;
                }
                Step::Drain(side, l, on) => {
                    let now = net.now;
                    net.sides[side].set_drain(LINKS[l], on, now);
                }
                Step::Checks(side, l, c) => {
                    let now = net.now;
                    net.sides[side].handle_checks("g", LINKS[l], STATES[usize::from(c)], now);
                }
                Step::Restart(side, dead) => {
                    let saved: std::collections::BTreeMap<String, String> = net.active(side)
                        .map(|l| ("g".to_owned(), l.to_owned()))
                        .into_iter()
                        .collect();
                    net.crash(side);
                    net.run_for(ms(dead));
                    prop_assert!(net.restart(side, &saved).is_empty());
                    // Pins, drains and check verdicts are not kept across a restart.
                    pinned.borrow_mut()[side] = false;
                    lives[side].push(net.now);
                }
            }
        }
        prop_assert!(violations.borrow().is_empty(), "{:?}", violations.borrow());

        // At most one elective switch per hold-down (5 s), per side.
        // The move to the preferred link right after a first usable one (start-up, or the end
        // of a total outage: links come back moments apart) is the settling's, not elective.
        let settle = Timings::DEFAULT.detection_bound() + Timings::DEFAULT.interval * 2;
        for (side, lives) in lives.iter().enumerate() {
            let mut first_usable = None;
            let elective: Vec<Instant> = net.events[side].iter().filter_map(|e| match e {
                Event::ActiveLinkChanged { reason: SwitchReason::FirstUsable, at, .. } => {
                    first_usable = Some(*at);
                    None
                }
                Event::ActiveLinkChanged { reason: SwitchReason::Failback, at, .. }
                    if first_usable.is_some_and(|f| *at - f <= settle) => None,
                Event::ActiveLinkChanged { reason: SwitchReason::ActiveDegraded | SwitchReason::ChecksFailing | SwitchReason::Failback, at, .. } => Some(*at),
                _ => None,
            }).collect();
            let life = |t: Instant| lives.iter().filter(|s| **s <= t).count();
            for w in elective.windows(2) {
                if life(w[0]) == life(w[1]) {
                    prop_assert!(w[1] - w[0] >= secs(5), "elective switches {:?} apart on side {side}", w[1] - w[0]);
                }
            }
        }

        // Quiet: release every pin and drain, heal the network; both ends converge.
        for side in 0..2 {
            let now = net.now;
            net.sides[side].unpin("g", now);
            for l in LINKS {
                net.sides[side].set_drain(l, false, now);
                net.sides[side].handle_checks("g", l, CheckState::Pass, now);
            }
        }
        *pinned.borrow_mut() = [false; 2];
        net.restore("ic");
        net.restore("inet");
        // Damping may hold a link out for up to max_suppress (60 s), then failback (10 s).
        net.run_for(secs(90));
        prop_assert_eq!(net.active(0), net.active(1), "the two ends disagree");
        prop_assert_eq!(net.active(0), Some("ic"));
    }
}
